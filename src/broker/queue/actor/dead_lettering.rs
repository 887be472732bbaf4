//! Dead-lettering from the queue actor: republishing expired, rejected, over-limit and
//! over-delivered messages through the dead-letter exchange, with RabbitMQ's `x-death`.

use super::*;

impl Actor {
    /// Dead-letter (or drop, without a dead-letter exchange) messages leaving the queue.
    pub(super) fn dead_letter(&mut self, entries: &mut Vec<Entry>, reason: DeathReason) {
        for entry in entries.drain(..) {
            if self.config.args.dead_letter_exchange.is_none() {
                self.unstore(std::slice::from_ref(&entry));
                continue;
            }
            let Some(message) = self.materialize(&entry) else {
                self.lost(&entry);
                continue;
            };
            // A stored persistent message stays stored here until its new queues have it.
            let source_record = self.record_key(&entry) == Some(&self.config.storage.key)
                && self.config.storage.durable;
            let keep = source_record.then_some(entry.seq);
            if !self.dead_letter_message(&message, reason, keep) {
                self.unstore(std::slice::from_ref(&entry));
            }
        }
    }

    /// Route a dead-lettered copy of `message` and hand it to its queues without waiting.
    /// With `keep_stored`, the copy's storing queues confirm to this queue, which then drops
    /// its stored record; returns whether that happens (otherwise the caller drops the record).
    pub(super) fn dead_letter_message(
        &self,
        message: &Message,
        reason: DeathReason,
        keep_stored: Option<u64>,
    ) -> bool {
        let args = &self.config.args;
        let (Some(dlx), Some(vhost)) = (args.dead_letter_exchange.as_deref(), self.vhost.upgrade())
        else {
            return false;
        };
        let Some(dead) = dead_letter::make(
            message,
            reason,
            &self.config.name,
            dlx,
            args.dead_letter_routing_key.as_deref(),
            self.clock / 1000,
        ) else {
            tracing::error!(queue = %self.config.name, "a dead-lettered message's properties could not be decoded; dropping it");
            return false;
        };
        let keys: Vec<&str> = dead.routing_keys.iter().map(String::as_str).collect();
        let mut targets = Vec::new();
        // A missing dead-letter exchange drops the message, as RabbitMQ does.
        vhost.route_dead_letter(dlx, &keys, Some(&dead.headers), &mut targets);
        if reason != DeathReason::Rejected {
            targets.retain(|q| !dead_letter::is_cycle(q.name(), &dead.headers));
        }
        let copy = Arc::new(dead.message);
        let storing = targets
            .iter()
            .filter(|q| copy.persistent && q.stores_persistent())
            .count() as u32;
        let ticket = match keep_stored {
            Some(seq) if storing > 0 => {
                Some(DeadLetterTicket::new(self.handle.clone(), seq, storing))
            }
            _ => None,
        };
        for q in &targets {
            let confirm = ticket
                .as_ref()
                .filter(|_| copy.persistent && q.stores_persistent())
                .map(|t| ConfirmTarget::DeadLetter(t.clone()));
            q.publish_nowait(copy.clone(), confirm);
        }
        ticket.is_some()
    }
}
