//! The node's name and the global runtime parameters (`cluster_name`, `cluster_tags`,
//! `internal_cluster_id` and any an operator sets), as RabbitMQ keeps them.
//!
//! Global parameters are JSON values stored in the metadata store under their name; a write
//! is durable before it is visible. `internal_cluster_id` is made on first boot and kept.

use std::collections::BTreeMap;
use std::sync::{Arc, OnceLock, RwLock};

use serde_json::Value;

use crate::store::{Store, StoreError};

const GLOBAL_PARAMETERS: &str = "global_parameter";

/// The parameter naming the cluster (`/api/cluster-name`, `cluster_name` in
/// `connection.start`); the node's name until one is set.
pub const CLUSTER_NAME: &str = "cluster_name";

static NODE_NAME: OnceLock<String> = OnceLock::new();

/// This node's name, as RabbitMQ forms it: `LEVERET_NODENAME` or `RABBITMQ_NODENAME` when set
/// (`name` alone gets `@host` added), else `rabbit@` and the short host name. Tools address
/// the node by it (`/api/nodes/{name}`, `/api/healthchecks/node/{name}`), computing
/// `rabbit@$(hostname -s)` as they would for RabbitMQ.
pub fn node_name() -> &'static str {
    NODE_NAME.get_or_init(|| {
        let host = short_host_name();
        let named = ["LEVERET_NODENAME", "RABBITMQ_NODENAME"]
            .iter()
            .find_map(|k| std::env::var(k).ok().filter(|v| !v.is_empty()));
        match named {
            Some(name) if name.contains('@') => name,
            Some(name) => format!("{name}@{host}"),
            None => format!("rabbit@{host}"),
        }
    })
}

fn short_host_name() -> String {
    let full = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .or_else(|_| std::fs::read_to_string("/etc/hostname"))
        .unwrap_or_default();
    let short = full.trim().split('.').next().unwrap_or_default();
    if short.is_empty() {
        "localhost".to_owned()
    } else {
        short.to_owned()
    }
}

/// The global parameters, loaded from the store and written through to it.
#[derive(Debug)]
pub struct GlobalParameters {
    values: RwLock<BTreeMap<String, Value>>,
    store: Arc<dyn Store>,
}

impl GlobalParameters {
    /// What the store holds (unreadable records are skipped with a warning), with an
    /// `internal_cluster_id` made and stored on first boot.
    pub fn load(store: Arc<dyn Store>) -> Result<Self, StoreError> {
        let mut values = BTreeMap::new();
        for (name, bytes) in store.definitions(GLOBAL_PARAMETERS)? {
            match serde_json::from_slice::<Value>(&bytes) {
                Ok(value) => {
                    values.insert(name, value);
                }
                Err(error) => {
                    tracing::warn!(%name, %error, "skipping an unreadable global parameter")
                }
            }
        }
        let params = Self {
            values: RwLock::new(values),
            store,
        };
        if params.get("internal_cluster_id").is_none() {
            let id = super::vhost::random_name("rabbitmq-cluster-id-");
            params.set("internal_cluster_id", Value::String(id))?;
        }
        Ok(params)
    }

    /// One parameter.
    pub fn get(&self, name: &str) -> Option<Value> {
        self.read().get(name).cloned()
    }

    /// Every parameter, by name.
    pub fn all(&self) -> Vec<(String, Value)> {
        self.read()
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    }

    /// Set a parameter (stored first); whether it is new.
    pub fn set(&self, name: &str, value: Value) -> Result<bool, StoreError> {
        let bytes = serde_json::to_vec(&value).unwrap_or_default();
        self.store.put_definition(GLOBAL_PARAMETERS, name, &bytes)?;
        let mut values = self
            .values
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        Ok(values.insert(name.to_owned(), value).is_none())
    }

    /// Remove a parameter; whether it existed.
    pub fn clear(&self, name: &str) -> Result<bool, StoreError> {
        if self.get(name).is_none() {
            return Ok(false);
        }
        self.store.remove_definition(GLOBAL_PARAMETERS, name)?;
        let mut values = self
            .values
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        Ok(values.remove(name).is_some())
    }

    /// The cluster's name: the `cluster_name` parameter, or the node's name.
    pub fn cluster_name(&self) -> String {
        match self.get(CLUSTER_NAME) {
            Some(Value::String(name)) => name,
            Some(_) | None => node_name().to_owned(),
        }
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, BTreeMap<String, Value>> {
        self.values
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::MemoryStore;

    #[test]
    fn parameters_persist_and_the_cluster_id_is_made_once() {
        let store: Arc<dyn Store> = Arc::new(MemoryStore::default());
        let params = GlobalParameters::load(store.clone()).unwrap();
        let id = params.get("internal_cluster_id").unwrap();
        assert!(id.as_str().unwrap().starts_with("rabbitmq-cluster-id-"));
        assert_eq!(params.cluster_name(), node_name());
        assert!(params.set(CLUSTER_NAME, Value::from("rusty")).unwrap());
        assert!(!params.set(CLUSTER_NAME, Value::from("rusty")).unwrap());
        let again = GlobalParameters::load(store).unwrap();
        assert_eq!(again.cluster_name(), "rusty");
        assert_eq!(again.get("internal_cluster_id").unwrap(), id);
        assert!(again.clear(CLUSTER_NAME).unwrap());
        assert!(!again.clear(CLUSTER_NAME).unwrap());
        assert_eq!(again.cluster_name(), node_name());
    }
}
