//! The broker core: vhosts, exchanges, queues and users, with no sockets.
//!
//! [`Broker`] is shared (`Arc`) by every connection. Its maps are behind short-held
//! `std::sync::RwLock`s; queue state lives in queue actors, never here.

/// The RabbitMQ release whose behaviour Leveret reproduces. Leveret answers as this version, in
/// `connection.start` and the HTTP API, so that clients and tools that check it enable what
/// they would for RabbitMQ.
pub const COMPATIBLE_VERSION: &str = "3.10.8";

pub mod access;
pub mod alarms;
pub mod commit;
pub mod connections;
pub mod dead_letter;
pub mod exchange;
#[doc(hidden)]
pub mod fault;
pub mod memory;
pub mod message;
pub mod parameters;
pub mod policy;
pub mod queue;
pub mod queue_type;
mod records;
pub mod vhost;

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, RwLock};

use serde::{Deserialize, Serialize};

use crate::store::{Store, StoreError};

use access::{AccessControl, AdminError, PermissionRecord, UserRecord};
use commit::Committer;
use connections::{ConnectionRegistry, LatencyHistogram, MessageCounters};

pub use message::Message;
pub use vhost::VHost;

/// Limits and defaults the broker negotiates with clients.
#[derive(Debug, Clone)]
pub struct BrokerConfig {
    /// Highest channel number offered in `connection.tune`.
    pub channel_max: u16,
    /// Largest frame offered in `connection.tune`.
    pub frame_max: u32,
    /// Heartbeat interval offered, in seconds.
    pub heartbeat: u16,
    /// Largest accepted message body.
    pub max_message_size: u64,
    /// Cap on a channel's unacknowledged deliveries across its consumers (0: none).
    pub max_unacked_per_channel: u32,
    /// Output queued for a connection (bytes) past which its socket is not read until the
    /// client has taken some: a client that never reads cannot grow the broker's memory.
    pub max_pending_output: usize,
    /// Users allowed to log in only from loopback (RabbitMQ's `loopback_users`).
    pub loopback_users: Vec<String>,
    /// The vhost created on first start.
    pub default_vhost: String,
    /// The user created at start, and its password.
    pub default_user: String,
    /// Its password.
    pub default_pass: String,
    /// The fraction of `memory_high_watermark` above which deep queues page transient messages
    /// out to the store (RabbitMQ's `vm_memory_high_watermark_paging_ratio`; 0: always page).
    pub paging_ratio: f64,
    /// Resident memory (bytes) at which the memory alarm blocks publishers (RabbitMQ's
    /// `vm_memory_high_watermark`; default 0.4 of RAM; `u64::MAX`: never).
    pub memory_high_watermark: u64,
    /// Free disk bytes under which the disk alarm blocks publishers (`disk_free_limit`,
    /// default 50 MB; 0: never).
    pub disk_free_limit: u64,
    /// The data directory whose file system the disk alarm watches (none: no disk alarm).
    pub data_dir: Option<std::path::PathBuf>,
    /// How long a delivery may stay unacked before its channel is closed (RabbitMQ's
    /// `consumer_timeout`; a queue's `x-consumer-timeout` overrides it). `None`: never.
    pub consumer_timeout: Option<std::time::Duration>,
    /// How long a client that failed the handshake waits before its socket is closed
    /// (RabbitMQ's silent-close delay, 3 s: a client cannot hammer the broker with retries).
    pub silent_close_delay: std::time::Duration,
}

impl Default for BrokerConfig {
    fn default() -> Self {
        Self {
            channel_max: 2047,
            frame_max: 131_072,
            heartbeat: 60,
            max_message_size: 128 * 1024 * 1024,
            max_unacked_per_channel: 0,
            max_pending_output: 1024 * 1024,
            loopback_users: vec!["guest".to_owned()],
            default_vhost: "/".to_owned(),
            default_user: "guest".to_owned(),
            default_pass: "guest".to_owned(),
            paging_ratio: 0.5,
            consumer_timeout: Some(std::time::Duration::from_secs(30 * 60)),
            memory_high_watermark: memory::total_memory()
                .map_or(u64::MAX, |total| (total as f64 * 0.4) as u64),
            disk_free_limit: 50_000_000,
            data_dir: None,
            silent_close_delay: std::time::Duration::from_secs(3),
        }
    }
}

/// A vhost's description, tags and limits, as RabbitMQ keeps them.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct VhostMeta {
    /// Free text.
    #[serde(default)]
    pub description: String,
    /// Free-form tags.
    #[serde(default)]
    pub tags: Vec<String>,
    /// `max-connections` and `max-queues` (negative: no limit).
    #[serde(default)]
    pub limits: BTreeMap<String, i64>,
}

impl VhostMeta {
    /// A limit, if set and not negative.
    pub fn limit(&self, name: &str) -> Option<u64> {
        self.limits.get(name).and_then(|&v| u64::try_from(v).ok())
    }
}

/// The whole broker.
#[derive(Debug)]
pub struct Broker {
    config: BrokerConfig,
    vhosts: RwLock<HashMap<String, Arc<VHost>>>,
    access: AccessControl,
    connections: ConnectionRegistry,
    counters: MessageCounters,
    confirm_latency: LatencyHistogram,
    store: Arc<dyn Store>,
    committer: Committer,
    pressure: memory::MemoryPressure,
    alarms: Arc<alarms::Alarms>,
    parameters: parameters::GlobalParameters,
}

impl Broker {
    /// A broker with vhost `/` and user `guest`/`guest`, recovering whatever `store` holds.
    /// Must run inside a tokio runtime (queue actors are spawned).
    pub fn open(config: BrokerConfig, store: Arc<dyn Store>) -> Result<Arc<Self>, StoreError> {
        let committer = Committer::spawn(store.clone());
        let alarms = alarms::Alarms::start(
            config.memory_high_watermark,
            config.disk_free_limit,
            config.data_dir.clone(),
        );
        let pressure = memory::MemoryPressure::watch(config.paging_ratio, &alarms);
        let access = AccessControl::load(store.clone())?;
        let parameters = parameters::GlobalParameters::load(store.clone())?;
        let broker = Self {
            config,
            vhosts: RwLock::new(HashMap::new()),
            access,
            connections: ConnectionRegistry::default(),
            counters: MessageCounters::default(),
            confirm_latency: LatencyHistogram::default(),
            store,
            committer,
            pressure,
            alarms,
            parameters,
        };
        // Scratch space of non-durable queues from the last run: nothing there survives.
        for (key, _) in broker.store.definitions(queue::SCRATCH)? {
            broker.store.delete_queue(&key)?;
            broker.store.remove_definition(queue::SCRATCH, &key)?;
        }
        let mut vhosts: Vec<(String, VhostMeta)> = broker
            .store
            .definitions("vhost")?
            .into_iter()
            .map(|(name, value)| (name, serde_json::from_slice(&value).unwrap_or_default()))
            .collect();
        let fresh = vhosts.is_empty();
        if fresh {
            let meta = VhostMeta {
                description: "Default virtual host".to_owned(),
                ..VhostMeta::default()
            };
            vhosts.push((broker.config.default_vhost.clone(), meta));
        }
        for (name, meta) in vhosts {
            broker.put_vhost(&name, meta)?.recover()?;
        }
        // Records of queues that no longer exist (a deletion a crash cut short) go, before a
        // queue declared under the same name could find them.
        broker.store.retain_recovered()?;
        // RabbitMQ creates its default user on first boot only; Leveret also when no user is
        // left, so a database can never lock everyone out.
        if broker.access.is_empty() {
            let config = &broker.config;
            let user = UserRecord::new(
                &config.default_user,
                Some(&config.default_pass),
                vec![access::ADMINISTRATOR.to_owned()],
            );
            let grant = PermissionRecord {
                user: config.default_user.clone(),
                vhost: config.default_vhost.clone(),
                configure: ".*".to_owned(),
                write: ".*".to_owned(),
                read: ".*".to_owned(),
            };
            broker
                .access
                .put_user(user)
                .and_then(|()| broker.access.set_permissions(grant))
                .map_err(|e| match e {
                    AdminError::Store(e) => e,
                    other => StoreError::Unusable(other.to_string()),
                })?;
        }
        // Recovery reads every stored record once; what it freed goes back to the kernel.
        memory::release_freed_memory();
        Ok(Arc::new(broker))
    }

    /// Negotiation limits.
    pub fn config(&self) -> &BrokerConfig {
        &self.config
    }

    /// The storage backend.
    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    /// Create a vhost, or update an existing one's metadata (durable).
    pub fn put_vhost(&self, name: &str, meta: VhostMeta) -> Result<Arc<VHost>, StoreError> {
        let value = serde_json::to_vec(&meta).unwrap_or_default();
        self.store.put_definition("vhost", name, &value)?;
        let mut vhosts = self
            .vhosts
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let vhost = vhosts
            .entry(name.to_owned())
            .or_insert_with(|| {
                VHost::new(
                    name,
                    self.store.clone(),
                    self.committer.clone(),
                    self.pressure.clone(),
                )
            })
            .clone();
        vhost.set_meta(meta);
        Ok(vhost)
    }

    /// Create a vhost with default metadata if it does not exist.
    pub fn add_vhost(&self, name: &str) -> Result<Arc<VHost>, StoreError> {
        match self.vhost(name) {
            Some(vhost) => Ok(vhost),
            None => self.put_vhost(name, VhostMeta::default()),
        }
    }

    /// Delete a vhost and everything in it; its connections are closed first, as RabbitMQ does.
    pub async fn delete_vhost(&self, name: &str) -> Result<(), AdminError> {
        let vhost = self
            .vhosts
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .remove(name)
            .ok_or_else(|| AdminError::NotFound(format!("no such vhost: '{name}'")))?;
        self.connections
            .close_where(|c| c.vhost == name, &format!("vhost '{name}' is deleted"));
        vhost.destroy().await;
        self.store.remove_definition("vhost", name)?;
        self.access.forget_vhost(name)?;
        Ok(())
    }

    /// Every vhost, by name.
    pub fn vhosts(&self) -> Vec<Arc<VHost>> {
        let mut all: Vec<Arc<VHost>> = self
            .vhosts
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .values()
            .cloned()
            .collect();
        all.sort_by(|a, b| a.name().cmp(b.name()));
        all
    }

    /// The global runtime parameters (the cluster's name among them).
    pub fn parameters(&self) -> &parameters::GlobalParameters {
        &self.parameters
    }

    /// Users and permissions.
    pub fn access(&self) -> &AccessControl {
        &self.access
    }

    /// Live connections.
    pub fn connections(&self) -> &ConnectionRegistry {
        &self.connections
    }

    /// Broker-wide message counters.
    pub fn counters(&self) -> &MessageCounters {
        &self.counters
    }

    /// Publisher-confirm latencies of stored publishes.
    pub fn confirm_latency(&self) -> &LatencyHistogram {
        &self.confirm_latency
    }

    /// Set permissions, checking that the vhost exists.
    pub fn set_permissions(&self, record: PermissionRecord) -> Result<(), AdminError> {
        if self.vhost(&record.vhost).is_none() {
            return Err(AdminError::NotFound(format!(
                "no such vhost: '{}'",
                record.vhost
            )));
        }
        self.access.set_permissions(record)
    }

    /// Delete a user; its connections are closed, as RabbitMQ does.
    pub fn delete_user(&self, name: &str) -> Result<(), AdminError> {
        self.access.delete_user(name)?;
        self.connections
            .close_where(|c| c.user == name, &format!("user '{name}' is deleted"));
        Ok(())
    }

    /// Stop every queue actor so the store is released (call after the server has stopped).
    pub fn close(&self) {
        self.stop_queues();
    }

    fn stop_queues(&self) -> Vec<queue::QueueHandle> {
        let vhosts = self
            .vhosts
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        vhosts.values().flat_map(|vhost| vhost.close()).collect()
    }

    /// Stop every queue and wait (up to `limit`) until each has written what it owes the store
    /// (delivery marks) and let go of it, then sync the store.
    pub async fn shutdown(&self, limit: std::time::Duration) {
        let queues = self.stop_queues();
        let stopped = async {
            for q in &queues {
                q.stopped().await;
            }
        };
        if tokio::time::timeout(limit, stopped).await.is_err() {
            tracing::warn!("queues still stopping after {limit:?}; exiting anyway");
        }
        if let Err(error) = self.store.sync().await {
            tracing::error!(%error, "final store sync failed");
        }
    }

    /// The resource alarms (memory and disk).
    pub fn alarms(&self) -> &alarms::Alarms {
        &self.alarms
    }

    /// Look up a vhost.
    pub fn vhost(&self, name: &str) -> Option<Arc<VHost>> {
        self.vhosts
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(name)
            .cloned()
    }

    /// The user a verified TLS client certificate names (its CN), for the EXTERNAL mechanism.
    pub fn authenticate_external(&self, name: &str, from_loopback: bool) -> Option<UserRecord> {
        if !from_loopback && self.config.loopback_users.iter().any(|u| u == name) {
            return None;
        }
        self.access.user(name)
    }

    /// Check credentials; `from_loopback` says whether the client connected over loopback.
    pub fn authenticate(
        &self,
        name: &str,
        password: &str,
        from_loopback: bool,
    ) -> Option<UserRecord> {
        self.access
            .authenticate(name, password, from_loopback, &self.config.loopback_users)
    }
}
