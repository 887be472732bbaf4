//! Recovery: a vhost's durable policies, exchanges, queues (with their messages) and bindings
//! read back from the store at start-up.

use super::*;
use crate::broker::queue_type::{self, stream, QueueType, Recovered};

impl VHost {
    /// Load this vhost's durable exchanges, queues (with their messages) and bindings.
    pub fn recover(&self) -> Result<(), StoreError> {
        let prefix = format!("{}\0", self.name);
        for (key, value) in self.store.definitions("policy")? {
            if !key.starts_with(&prefix) {
                continue;
            }
            let parsed = serde_json::from_slice::<PolicyRecord>(&value)
                .map_err(|e| e.to_string())
                .and_then(|r| Policy::new(r).map_err(|e| e.to_string()));
            match parsed {
                Ok(p) => self.policies_mut().push(p),
                Err(error) => tracing::error!(%key, %error, "skipping an unreadable policy"),
            }
        }
        let mut t = self.write();
        for (key, record) in self.store.definitions("exchange")? {
            let Some(name) = key.strip_prefix(&prefix) else {
                continue;
            };
            let mut r = RecordReader::new(&record);
            let parsed = (|| {
                let kind = ExchangeKind::parse(r.str()?)?;
                Some((kind, r.u8()?, r.u8()?, r.table()?))
            })();
            let Some((kind, auto_delete, internal, arguments)) = parsed else {
                tracing::error!(
                    exchange = name,
                    "skipping an unreadable exchange definition"
                );
                continue;
            };
            t.exchanges.insert(
                name.to_owned(),
                Exchange::new(
                    name.to_owned(),
                    kind,
                    true,
                    auto_delete == 1,
                    internal == 1,
                    arguments,
                ),
            );
        }
        for (key, record) in self.store.definitions("queue")? {
            let Some(name) = key.strip_prefix(&prefix) else {
                continue;
            };
            let mut r = RecordReader::new(&record);
            let parsed = (|| Some((r.u8()?, r.table()?)))();
            let Some((auto_delete, arguments)) = parsed else {
                tracing::error!(queue = name, "skipping an unreadable queue definition");
                continue;
            };
            let queue_args = args::parse(&arguments, &self.queue_resource(name))
                .unwrap_or_else(|error| {
                    tracing::error!(queue = name, %error, "ignoring invalid stored queue arguments");
                    args::QueueArgs::default()
                });
            let queue_args = self.with_policy(name, &queue_args, &arguments);
            let key = self.key(name);
            let recovered = match queue_args.queue_type {
                QueueType::Stream => {
                    let log = stream::recover(&*self.store, &key, queue_args.max_age)?;
                    tracing::info!(vhost = %self.name, stream = name, messages = log.len(), "recovered stream");
                    Recovered::Stream(Box::new(log))
                }
                QueueType::Classic | QueueType::Quorum => {
                    let backlog = self.recover_backlog(name, &key)?;
                    tracing::info!(vhost = %self.name, queue = name, messages = backlog.len(), "recovered queue");
                    Recovered::Classic(backlog)
                }
            };

            let handle = queue_type::spawn(
                queue::QueueConfig {
                    name: name.to_owned(),
                    vhost_name: self.name.clone(),
                    auto_delete: auto_delete == 1,
                    args: queue_args,
                    storage: self.storage_for(name, true),
                },
                self.me.clone(),
                recovered,
            );
            t.queues.insert(
                name.to_owned(),
                QueueRecord {
                    handle,
                    durable: true,
                    exclusive_owner: None,
                    auto_delete: auto_delete == 1,
                    arguments,
                },
            );
        }
        for (key, record) in self.store.definitions("binding")? {
            if !key.starts_with(&prefix) {
                continue;
            }
            match records::decode_binding(&record) {
                Some((source, binding)) => {
                    if let Some(x) = t.exchanges.get_mut(&source) {
                        x.bind(binding);
                    }
                }
                None => tracing::error!("skipping an unreadable binding definition"),
            }
        }
        drop(t);
        // Exchanges (the built-in ones too) take their policy's alternate exchange.
        self.reapply_policies();
        Ok(())
    }

    /// A classic or quorum queue's messages read back: the head into memory, the rest into the
    /// compact backlog, unreadable records removed.
    fn recover_backlog(&self, name: &str, key: &str) -> Result<Backlog, StoreError> {
        // The head of the queue comes back into memory; the rest stays paged in the store,
        // gathered straight into the queue's compact backlog.
        let mut head: Vec<Entry> = Vec::new();
        let mut rest = Backlog::new();
        let mut head_bytes = 0u64;
        // The highest number stored, readable or not: numbering goes on above it.
        let mut last_stored = None;
        let mut unreadable = Vec::new();
        self.store.recover(key, &mut |stored| {
            last_stored = Some(stored.seq);
            let Some((body_len, meta)) = records::decode_index(&stored.meta) else {
                tracing::error!(
                    queue = name,
                    seq = stored.seq,
                    "skipping an unreadable message"
                );
                unreadable.push(stored.seq);
                return;
            };
            let entry = Entry {
                seq: stored.seq,
                message: Slot::Paged {
                    body_len,
                    scratch: false,
                },
                expires_at: meta.expires_at.unwrap_or(NEVER),
                deliveries: stored.deliveries,
                priority: meta.priority,
                redelivered: stored.deliveries > 0,
            };
            if rest.is_empty()
                && head.len() < queue::RESIDENT_WINDOW as usize
                && head_bytes < queue::RESIDENT_BYTES
            {
                head_bytes += u64::from(body_len);
                head.push(entry);
            } else {
                rest.push(entry);
            }
        })?;
        // Read after the scan: the store is not called back from inside its own visit.
        let mut backlog = Backlog::new();
        for seq in unreadable {
            if let Err(error) = self.store.remove(key, seq) {
                tracing::error!(queue = name, %error, "removing an unreadable message failed");
            }
        }
        for mut entry in head {
            let message = match self.store.read(key, entry.seq) {
                Ok(Some(record)) => records::decode_message(&record),
                Ok(None) | Err(_) => None,
            };
            match message {
                Some(m) => {
                    entry.message = Slot::Resident(Arc::new(m));
                    backlog.push(entry);
                }
                None => {
                    tracing::error!(
                        queue = name,
                        seq = entry.seq,
                        "skipping an unreadable message"
                    );
                    if let Err(error) = self.store.remove(key, entry.seq) {
                        tracing::error!(queue = name, %error, "removing an unreadable message failed");
                    }
                }
            }
        }
        backlog.append(rest);
        if let Some(seq) = last_stored {
            backlog.continue_after(seq);
        }
        Ok(backlog)
    }
}
