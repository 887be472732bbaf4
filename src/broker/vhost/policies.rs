//! A vhost's policies: set, cleared, and applied to its queues and exchanges (the highest
//! priority matching policy wins; queue arguments take precedence over it).

use super::*;

impl VHost {
    pub(super) fn policies_mut(&self) -> RwLockWriteGuard<'_, Vec<Policy>> {
        self.policies
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    pub(super) fn policies_read(&self) -> RwLockReadGuard<'_, Vec<Policy>> {
        self.policies
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Every policy, by priority then name (as RabbitMQ lists them).
    pub fn policies(&self) -> Vec<PolicyRecord> {
        let mut all: Vec<PolicyRecord> = self
            .policies_read()
            .iter()
            .map(|p| p.record.clone())
            .collect();
        all.sort_by(|a, b| (a.priority, &a.name).cmp(&(b.priority, &b.name)));
        all
    }

    /// The policy that applies to a queue or exchange, if any.
    pub fn policy_for(&self, target: Target, name: &str) -> Option<PolicyRecord> {
        policy::select(&self.policies_read(), target, name).map(|p| p.record.clone())
    }

    pub(super) fn with_policy(
        &self,
        name: &str,
        declared: &args::QueueArgs,
        arguments: &FieldTable,
    ) -> args::QueueArgs {
        policy::effective_queue_args(
            declared,
            arguments,
            policy::select(&self.policies_read(), Target::Queue, name),
        )
    }

    pub(super) fn policy_alternate(&self, exchange: &str) -> Option<String> {
        policy::select(&self.policies_read(), Target::Exchange, exchange)
            .and_then(Policy::alternate_exchange)
    }

    /// Create or replace a policy (durable) and apply it to existing queues and exchanges at
    /// once. Returns whether it is new.
    pub fn set_policy(&self, record: PolicyRecord) -> Result<bool, AdminError> {
        let policy = Policy::new(record)?;
        let value = serde_json::to_vec(&policy.record).unwrap_or_default();
        self.store
            .put_definition("policy", &self.key(&policy.record.name), &value)?;
        let was_new = {
            let mut policies = self.policies_mut();
            let before = policies.len();
            policies.retain(|p| p.record.name != policy.record.name);
            let was_new = policies.len() == before;
            policies.push(policy);
            was_new
        };
        self.reapply_policies();
        Ok(was_new)
    }

    /// Remove a policy; what it set reverts at once.
    pub fn clear_policy(&self, name: &str) -> Result<(), AdminError> {
        if !self.policies_read().iter().any(|p| p.record.name == name) {
            return Err(AdminError::NotFound(format!("no policy '{name}'")));
        }
        self.store.remove_definition("policy", &self.key(name))?;
        self.policies_mut().retain(|p| p.record.name != name);
        self.reapply_policies();
        Ok(())
    }

    /// Recompute every queue's and exchange's settings after a policy change.
    pub(super) fn reapply_policies(&self) {
        let mut t = self.write();
        for (name, record) in &t.queues {
            let declared =
                args::parse(&record.arguments, &self.queue_resource(name)).unwrap_or_default();
            record
                .handle
                .apply_args(self.with_policy(name, &declared, &record.arguments));
        }
        let names: Vec<String> = t.exchanges.keys().cloned().collect();
        for name in names {
            let alternate = self.policy_alternate(&name);
            if let Some(x) = t.exchanges.get_mut(&name) {
                x.policy_alternate = alternate;
            }
        }
    }
}
