//! Group commit: publisher confirms for persistent messages go out only after an fsync.
//!
//! Queue actors append persistent messages to the store synchronously, then hand the confirm to
//! the committer. The committer takes every confirm waiting, runs one `sync`, and releases them
//! all: while one sync runs, the next batch gathers, so one fsync covers everything that arrived
//! during the previous one. A failed sync turns the batch into nacks.

use std::sync::Arc;

use tokio::sync::mpsc;

use super::queue::{ClientEvent, ConfirmTarget};
use crate::store::Store;

/// Handle to the store's commit task.
#[derive(Debug, Clone)]
pub struct Committer {
    tx: mpsc::UnboundedSender<ConfirmTarget>,
}

impl Committer {
    /// Start the commit task for a store.
    pub fn spawn(store: Arc<dyn Store>) -> Self {
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(run(store, rx));
        Self { tx }
    }

    /// Confirm this publish once everything appended so far is on disk.
    pub fn confirm_after_sync(&self, target: ConfirmTarget) {
        if let Err(mpsc::error::SendError(target)) = self.tx.send(target) {
            target.reply(false);
        }
    }
}

async fn run(store: Arc<dyn Store>, mut rx: mpsc::UnboundedReceiver<ConfirmTarget>) {
    let mut batch = Vec::with_capacity(1024);
    while rx.recv_many(&mut batch, 65_536).await > 0 {
        let ok = match store.sync().await {
            Ok(()) => true,
            Err(error) => {
                tracing::error!(%error, "store sync failed; nacking {} publishes", batch.len());
                false
            }
        };
        for target in batch.drain(..) {
            target.reply(ok);
        }
    }
}

impl ConfirmTarget {
    /// Report how this publish ended: to the publishing channel, or to the queue a dead-lettered
    /// message came from (which drops its stored copy once every target holds the message).
    pub fn reply(self, ack: bool) {
        match self {
            Self::Publisher { sink, channel, seq } => {
                let _ = sink.send(ClientEvent::Confirm { channel, seq, ack });
            }
            Self::DeadLetter(ticket) => ticket.answer(ack),
            Self::Waiter(tx) => {
                let _ = tx.send(ack);
            }
        }
    }

    /// A queue's length limit refused the publish: the publisher gets a nack, while a queue
    /// dead-lettering into it counts the copy as handled (dropped, as RabbitMQ drops it) and
    /// forgets its own stored copy.
    pub fn refuse(self) {
        match self {
            Self::Publisher { .. } | Self::Waiter(_) => self.reply(false),
            Self::DeadLetter(ticket) => ticket.answer(true),
        }
    }
}
