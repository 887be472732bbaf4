//! Users, passwords, tags and per-vhost permissions, checked the way RabbitMQ checks them.
//!
//! Passwords are kept as RabbitMQ keeps them (`rabbit_password_hashing_sha256`: base64 of a
//! 4-byte salt followed by SHA-256(salt ++ password)), so users exported from RabbitMQ import
//! with their hashes and log in with their old passwords. Permissions are three regexes per
//! (vhost, user), matched unanchored against resource names as Erlang's `re:run` matches; the
//! default exchange is matched and reported as `amq.default`. Every change is written to the
//! store before it is applied, and takes effect on the next check: nothing is cached here. A
//! generation counter, bumped on every change, lets a channel cache its last successful check.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};

use base64::Engine as _;
use regex::Regex;
use serde::{Deserialize, Serialize};

use crate::protocol::AmqpError;
use crate::store::{Store, StoreError};

/// RabbitMQ's default (and Leveret's only writing) password hashing scheme.
pub const SHA256: &str = "rabbit_password_hashing_sha256";
/// Also understood when importing RabbitMQ definitions.
pub const SHA512: &str = "rabbit_password_hashing_sha512";

/// The tags that mean something to the broker and its management API.
pub const ADMINISTRATOR: &str = "administrator";
/// May publish with any `user_id`.
pub const IMPERSONATOR: &str = "impersonator";

/// What an admin operation on users, vhosts or permissions can fail with.
#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    /// The named object does not exist (HTTP 404).
    #[error("{0}")]
    NotFound(String),
    /// The request is malformed or not allowed (HTTP 400).
    #[error("{0}")]
    BadRequest(String),
    /// The store failed (HTTP 500).
    #[error("store failure: {0}")]
    Store(#[from] StoreError),
}

/// The three AMQP permissions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Permission {
    /// Create and delete resources.
    Configure,
    /// Publish to exchanges, bind queues to exchanges.
    Write,
    /// Consume from queues, bind from exchanges.
    Read,
}

/// A resource a permission is checked on.
#[derive(Debug, Clone, Copy)]
pub enum Resource<'a> {
    /// An exchange ("" is the default exchange).
    Exchange(&'a str),
    /// A queue.
    Queue(&'a str),
}

impl Resource<'_> {
    fn kind(&self) -> &'static str {
        match self {
            Self::Exchange(_) => "exchange",
            Self::Queue(_) => "queue",
        }
    }

    /// The name regexes see (and error texts show).
    fn name(&self) -> &str {
        match self {
            Self::Exchange("") => "amq.default",
            Self::Exchange(name) | Self::Queue(name) => name,
        }
    }
}

/// A user as stored and exported (RabbitMQ's definitions shape).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct UserRecord {
    /// Login name.
    pub name: String,
    /// base64(salt ++ hash(salt ++ password)); empty: no password login.
    pub password_hash: String,
    /// The scheme of `password_hash`.
    pub hashing_algorithm: String,
    /// Tags (`administrator`, `monitoring`, `management`, `policymaker`, `impersonator`, ...).
    pub tags: Vec<String>,
    /// `max-connections` and `max-channels` (RabbitMQ's user limits; negative: no limit).
    #[serde(default)]
    pub limits: BTreeMap<String, i64>,
}

impl UserRecord {
    /// A user with `password` hashed under a fresh salt.
    pub fn new(name: &str, password: Option<&str>, tags: Vec<String>) -> Self {
        Self {
            name: name.to_owned(),
            password_hash: password.map(hash_password).unwrap_or_default(),
            hashing_algorithm: SHA256.to_owned(),
            tags,
            limits: BTreeMap::new(),
        }
    }

    /// A limit, if set and not negative.
    pub fn limit(&self, name: &str) -> Option<u64> {
        self.limits.get(name).and_then(|&v| u64::try_from(v).ok())
    }

    /// Whether `password` is this user's. A blank password never is, as in RabbitMQ.
    pub fn verify(&self, password: &str) -> bool {
        if password.is_empty() || self.password_hash.is_empty() {
            return false;
        }
        let Ok(raw) = base64::engine::general_purpose::STANDARD.decode(&self.password_hash) else {
            return false;
        };
        if raw.len() < 4 {
            return false;
        }
        let (salt, expected) = raw.split_at(4);
        let computed = match self.hashing_algorithm.as_str() {
            SHA512 => salted::<sha2::Sha512>(salt, password),
            _ => salted::<sha2::Sha256>(salt, password),
        };
        // Constant time, so the comparison does not tell how much of a guess was right.
        computed.len() == expected.len()
            && computed
                .iter()
                .zip(expected)
                .fold(0u8, |acc, (a, b)| acc | (a ^ b))
                == 0
    }

    /// Whether the user has `tag`.
    pub fn has_tag(&self, tag: &str) -> bool {
        self.tags.iter().any(|t| t == tag)
    }
}

fn salted<D: sha2::Digest>(salt: &[u8], password: &str) -> Vec<u8> {
    let mut hasher = D::new();
    hasher.update(salt);
    hasher.update(password.as_bytes());
    hasher.finalize().to_vec()
}

/// RabbitMQ's SHA-256 password hash with a random 4-byte salt.
pub fn hash_password(password: &str) -> String {
    let salt = random_salt();
    let mut raw = salt.to_vec();
    raw.extend(salted::<sha2::Sha256>(&salt, password));
    base64::engine::general_purpose::STANDARD.encode(raw)
}

fn random_salt() -> [u8; 4] {
    use std::io::Read as _;
    let mut salt = [0u8; 4];
    let from_kernel = std::fs::File::open("/dev/urandom").and_then(|mut f| f.read_exact(&mut salt));
    if from_kernel.is_err() {
        use std::hash::{BuildHasher, Hasher};
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u128(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos()),
        );
        salt = (h.finish() as u32).to_le_bytes();
    }
    salt
}

/// One user's permissions in one vhost, as stored and exported.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct PermissionRecord {
    /// The user.
    pub user: String,
    /// The vhost.
    pub vhost: String,
    /// Regex of resources the user may create and delete.
    pub configure: String,
    /// Regex of resources the user may write to.
    pub write: String,
    /// Regex of resources the user may read from.
    pub read: String,
}

/// A user's topic permissions on one topic exchange of a vhost (routing-key regexes).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct TopicPermissionRecord {
    /// The user.
    pub user: String,
    /// The vhost.
    pub vhost: String,
    /// The topic exchange.
    pub exchange: String,
    /// Regex of routing keys the user may publish with.
    pub write: String,
    /// Regex of binding keys the user may bind with.
    pub read: String,
}

/// An empty regex permits nothing in RabbitMQ (`''` is its "no access").
#[derive(Debug)]
struct Pattern(Option<Regex>);

impl Pattern {
    fn compile(source: &str) -> Result<Self, AdminError> {
        if source.is_empty() {
            return Ok(Self(None));
        }
        Regex::new(source).map(|r| Self(Some(r))).map_err(|e| {
            AdminError::BadRequest(format!("invalid regular expression '{source}': {e}"))
        })
    }

    fn matches(&self, name: &str) -> bool {
        self.0.as_ref().is_some_and(|r| r.is_match(name))
    }
}

#[derive(Debug)]
struct Compiled {
    record: PermissionRecord,
    configure: Pattern,
    write: Pattern,
    read: Pattern,
}

#[derive(Debug)]
struct CompiledTopic {
    record: TopicPermissionRecord,
    write: Pattern,
    read: Pattern,
}

const USERS: &str = "user";
const PERMISSIONS: &str = "permission";
const TOPIC_PERMISSIONS: &str = "topic_permission";

fn permission_key(vhost: &str, user: &str) -> String {
    format!("{vhost}\u{0}{user}")
}

fn topic_key(vhost: &str, user: &str, exchange: &str) -> String {
    format!("{vhost}\u{0}{user}\u{0}{exchange}")
}

fn to_json<T: Serialize>(value: &T) -> Vec<u8> {
    serde_json::to_vec(value).unwrap_or_default()
}

/// Users and permissions, durable in the store.
#[derive(Debug)]
pub struct AccessControl {
    users: RwLock<BTreeMap<String, UserRecord>>,
    /// Keyed by (vhost, user).
    permissions: RwLock<BTreeMap<(String, String), Compiled>>,
    /// Keyed by (vhost, user, exchange).
    topic_permissions: RwLock<BTreeMap<(String, String, String), CompiledTopic>>,
    generation: AtomicU64,
    store: Arc<dyn Store>,
}

fn read<T>(lock: &RwLock<T>) -> RwLockReadGuard<'_, T> {
    lock.read()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn write<T>(lock: &RwLock<T>) -> RwLockWriteGuard<'_, T> {
    lock.write()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl AccessControl {
    /// Load what the store holds. Records that no longer parse are skipped with a warning.
    pub fn load(store: Arc<dyn Store>) -> Result<Self, StoreError> {
        let access = Self {
            users: RwLock::new(BTreeMap::new()),
            permissions: RwLock::new(BTreeMap::new()),
            topic_permissions: RwLock::new(BTreeMap::new()),
            generation: AtomicU64::new(1),
            store,
        };
        for (key, value) in access.store.definitions(USERS)? {
            match serde_json::from_slice::<UserRecord>(&value) {
                Ok(user) => {
                    write(&access.users).insert(user.name.clone(), user);
                }
                Err(error) => tracing::warn!(%key, %error, "skipping an unreadable user record"),
            }
        }
        for (key, value) in access.store.definitions(PERMISSIONS)? {
            let compiled = serde_json::from_slice::<PermissionRecord>(&value)
                .map_err(|e| e.to_string())
                .and_then(|r| compile(r).map_err(|e| e.to_string()));
            match compiled {
                Ok(c) => {
                    let k = (c.record.vhost.clone(), c.record.user.clone());
                    write(&access.permissions).insert(k, c);
                }
                Err(error) => tracing::warn!(%key, %error, "skipping an unreadable permission"),
            }
        }
        for (key, value) in access.store.definitions(TOPIC_PERMISSIONS)? {
            let compiled = serde_json::from_slice::<TopicPermissionRecord>(&value)
                .map_err(|e| e.to_string())
                .and_then(|r| compile_topic(r).map_err(|e| e.to_string()));
            match compiled {
                Ok(c) => {
                    let r = &c.record;
                    let k = (r.vhost.clone(), r.user.clone(), r.exchange.clone());
                    write(&access.topic_permissions).insert(k, c);
                }
                Err(error) => {
                    tracing::warn!(%key, %error, "skipping an unreadable topic permission")
                }
            }
        }
        Ok(access)
    }

    /// Changes with every write; a channel's cached successful check is valid while it holds.
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    fn bump(&self) {
        self.generation.fetch_add(1, Ordering::AcqRel);
    }

    /// Whether any user exists (none: a fresh database, which gets the default user).
    pub fn is_empty(&self) -> bool {
        read(&self.users).is_empty()
    }

    /// The user who logs in with these credentials, if any. `from_loopback` and
    /// `loopback_users` apply RabbitMQ's rule that some users may only connect locally.
    pub fn authenticate(
        &self,
        name: &str,
        password: &str,
        from_loopback: bool,
        loopback_users: &[String],
    ) -> Option<UserRecord> {
        if !from_loopback && loopback_users.iter().any(|u| u == name) {
            return None;
        }
        read(&self.users)
            .get(name)
            .filter(|u| u.verify(password))
            .cloned()
    }

    /// One user.
    pub fn user(&self, name: &str) -> Option<UserRecord> {
        read(&self.users).get(name).cloned()
    }

    /// Every user, by name.
    pub fn users(&self) -> Vec<UserRecord> {
        read(&self.users).values().cloned().collect()
    }

    /// Create or replace a user.
    pub fn put_user(&self, user: UserRecord) -> Result<(), AdminError> {
        if user.name.is_empty() {
            return Err(AdminError::BadRequest("user name must not be empty".into()));
        }
        match user.hashing_algorithm.as_str() {
            SHA256 | SHA512 => {}
            other => {
                return Err(AdminError::BadRequest(format!(
                    "unsupported hashing algorithm '{other}' (Leveret understands {SHA256} and {SHA512})"
                )))
            }
        }
        self.store
            .put_definition(USERS, &user.name, &to_json(&user))?;
        write(&self.users).insert(user.name.clone(), user);
        self.bump();
        Ok(())
    }

    /// Change a user's password (`None`: clear it, so the user cannot log in with one).
    pub fn change_password(&self, name: &str, password: Option<&str>) -> Result<(), AdminError> {
        let mut user = self.existing(name)?;
        user.password_hash = password.map(hash_password).unwrap_or_default();
        user.hashing_algorithm = SHA256.to_owned();
        self.put_user(user)
    }

    /// Change a user's limits.
    pub fn update_limits(
        &self,
        name: &str,
        change: impl FnOnce(&mut BTreeMap<String, i64>),
    ) -> Result<(), AdminError> {
        let mut user = self.existing(name)?;
        change(&mut user.limits);
        self.put_user(user)
    }

    /// Replace a user's tags.
    pub fn set_tags(&self, name: &str, tags: Vec<String>) -> Result<(), AdminError> {
        let mut user = self.existing(name)?;
        user.tags = tags;
        self.put_user(user)
    }

    fn existing(&self, name: &str) -> Result<UserRecord, AdminError> {
        self.user(name)
            .ok_or_else(|| AdminError::NotFound(format!("no such user: '{name}'")))
    }

    /// Delete a user and every permission it had.
    pub fn delete_user(&self, name: &str) -> Result<(), AdminError> {
        self.existing(name)?;
        self.store.remove_definition(USERS, name)?;
        write(&self.users).remove(name);
        let vhosts: Vec<String> = self
            .permissions()
            .into_iter()
            .filter(|p| p.user == name)
            .map(|p| p.vhost)
            .collect();
        for vhost in vhosts {
            self.clear_permissions(&vhost, name)?;
        }
        self.clear_topic_permissions_where(|r| r.user == name)?;
        self.bump();
        Ok(())
    }

    /// Every permission record, by vhost then user.
    pub fn permissions(&self) -> Vec<PermissionRecord> {
        read(&self.permissions)
            .values()
            .map(|c| c.record.clone())
            .collect()
    }

    /// One user's permissions on one vhost.
    pub fn permission(&self, vhost: &str, user: &str) -> Option<PermissionRecord> {
        read(&self.permissions)
            .get(&(vhost.to_owned(), user.to_owned()))
            .map(|c| c.record.clone())
    }

    /// Set a user's permissions on a vhost (the caller checks that the vhost exists).
    pub fn set_permissions(&self, record: PermissionRecord) -> Result<(), AdminError> {
        self.existing(&record.user)?;
        let compiled = compile(record)?;
        let r = &compiled.record;
        self.store
            .put_definition(PERMISSIONS, &permission_key(&r.vhost, &r.user), &to_json(r))?;
        write(&self.permissions).insert((r.vhost.clone(), r.user.clone()), compiled);
        self.bump();
        Ok(())
    }

    /// Remove a user's permissions on a vhost (absent ones are not an error).
    pub fn clear_permissions(&self, vhost: &str, user: &str) -> Result<(), AdminError> {
        self.store
            .remove_definition(PERMISSIONS, &permission_key(vhost, user))?;
        write(&self.permissions).remove(&(vhost.to_owned(), user.to_owned()));
        self.bump();
        Ok(())
    }

    /// Every topic permission.
    pub fn topic_permissions(&self) -> Vec<TopicPermissionRecord> {
        read(&self.topic_permissions)
            .values()
            .map(|c| c.record.clone())
            .collect()
    }

    /// Set a user's topic permissions on one exchange of a vhost.
    pub fn set_topic_permissions(&self, record: TopicPermissionRecord) -> Result<(), AdminError> {
        self.existing(&record.user)?;
        let compiled = compile_topic(record)?;
        let r = &compiled.record;
        let key = topic_key(&r.vhost, &r.user, &r.exchange);
        self.store
            .put_definition(TOPIC_PERMISSIONS, &key, &to_json(r))?;
        let k = (r.vhost.clone(), r.user.clone(), r.exchange.clone());
        write(&self.topic_permissions).insert(k, compiled);
        self.bump();
        Ok(())
    }

    /// Remove the topic permissions matching `pred`.
    pub fn clear_topic_permissions_where(
        &self,
        pred: impl Fn(&TopicPermissionRecord) -> bool,
    ) -> Result<(), AdminError> {
        let doomed: Vec<TopicPermissionRecord> = self
            .topic_permissions()
            .into_iter()
            .filter(|r| pred(r))
            .collect();
        for r in doomed {
            self.store.remove_definition(
                TOPIC_PERMISSIONS,
                &topic_key(&r.vhost, &r.user, &r.exchange),
            )?;
            write(&self.topic_permissions).remove(&(r.vhost, r.user, r.exchange));
        }
        self.bump();
        Ok(())
    }

    /// Forget everything about a deleted vhost.
    pub fn forget_vhost(&self, vhost: &str) -> Result<(), AdminError> {
        let users: Vec<String> = self
            .permissions()
            .into_iter()
            .filter(|p| p.vhost == vhost)
            .map(|p| p.user)
            .collect();
        for user in users {
            self.clear_permissions(vhost, &user)?;
        }
        self.clear_topic_permissions_where(|r| r.vhost == vhost)
    }

    /// Whether `user` may open `vhost`: any permission record grants access, as in RabbitMQ.
    pub fn may_open_vhost(&self, user: &str, vhost: &str) -> bool {
        read(&self.permissions).contains_key(&(vhost.to_owned(), user.to_owned()))
    }

    /// Check `permission` on `resource` for `user` in `vhost`, with RabbitMQ's 403 text.
    pub fn check(
        &self,
        user: &str,
        vhost: &str,
        resource: Resource<'_>,
        permission: Permission,
    ) -> Result<(), AmqpError> {
        let permissions = read(&self.permissions);
        let allowed = permissions
            .get(&(vhost.to_owned(), user.to_owned()))
            .is_some_and(|c| {
                let pattern = match permission {
                    Permission::Configure => &c.configure,
                    Permission::Write => &c.write,
                    Permission::Read => &c.read,
                };
                pattern.matches(resource.name())
            });
        if allowed {
            Ok(())
        } else {
            Err(AmqpError::access_refused(format!(
                "access to {} '{}' in vhost '{vhost}' refused for user '{user}'",
                resource.kind(),
                resource.name()
            )))
        }
    }

    /// Whether any topic permission is set (if none, no routing key needs checking).
    pub fn has_topic_permissions(&self) -> bool {
        !read(&self.topic_permissions).is_empty()
    }

    /// Check a routing key (`Write`, on publish) or binding key (`Read`, on bind) against the
    /// user's topic permissions for a topic exchange. No topic permission: allowed.
    pub fn check_topic(
        &self,
        user: &str,
        vhost: &str,
        exchange: &str,
        key: &str,
        permission: Permission,
    ) -> Result<(), AmqpError> {
        let topics = read(&self.topic_permissions);
        let Some(t) = topics.get(&(vhost.to_owned(), user.to_owned(), exchange.to_owned())) else {
            return Ok(());
        };
        let allowed = match permission {
            Permission::Write => t.write.matches(key),
            Permission::Read | Permission::Configure => t.read.matches(key),
        };
        if allowed {
            Ok(())
        } else {
            Err(AmqpError::access_refused(format!(
                "access to topic '{key}' in exchange '{exchange}' in vhost '{vhost}' refused for user '{user}'"
            )))
        }
    }
}

fn compile(record: PermissionRecord) -> Result<Compiled, AdminError> {
    Ok(Compiled {
        configure: Pattern::compile(&record.configure)?,
        write: Pattern::compile(&record.write)?,
        read: Pattern::compile(&record.read)?,
        record,
    })
}

/// Topic permission regexes may name `{username}` and `{vhost}`, expanded when set.
fn compile_topic(record: TopicPermissionRecord) -> Result<CompiledTopic, AdminError> {
    let expand = |s: &str| {
        s.replace("{username}", &regex::escape(&record.user))
            .replace("{vhost}", &regex::escape(&record.vhost))
    };
    Ok(CompiledTopic {
        write: Pattern::compile(&expand(&record.write))?,
        read: Pattern::compile(&expand(&record.read))?,
        record,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::MemoryStore;

    fn access() -> AccessControl {
        AccessControl::load(Arc::new(MemoryStore::default())).unwrap()
    }

    #[test]
    fn verifies_hashes_made_by_rabbitmq() {
        // Recorded from RabbitMQ 3.10.8's export (interop/rabbitmq-3.10.8-access-control.md).
        let user = UserRecord {
            name: "hashme".into(),
            password_hash: "Vjv7Z5hj9HemysbPQ5untXB5uFjeDx4lJrj63itGaOa7UiYv".into(),
            hashing_algorithm: SHA256.into(),
            tags: vec![],
            limits: BTreeMap::new(),
        };
        assert!(user.verify("secret"));
        assert!(!user.verify("Secret"));
        assert!(!user.verify(""));
    }

    #[test]
    fn fresh_hashes_are_salted_and_verify() {
        let a = UserRecord::new("a", Some("pw"), vec![]);
        let b = UserRecord::new("b", Some("pw"), vec![]);
        assert_eq!(a.password_hash.len(), 48);
        assert!(a.verify("pw") && b.verify("pw"));
        assert!(!a.verify("pw2"));
        assert_ne!(a.password_hash, b.password_hash, "salts differ");
        assert!(!UserRecord::new("c", None, vec![]).verify("anything"));
    }

    fn perms(c: &str, w: &str, r: &str) -> PermissionRecord {
        PermissionRecord {
            user: "u".into(),
            vhost: "v".into(),
            configure: c.into(),
            write: w.into(),
            read: r.into(),
        }
    }

    #[test]
    fn checks_follow_the_regexes_and_rabbitmq_texts() {
        let a = access();
        a.put_user(UserRecord::new("u", Some("pw"), vec![]))
            .unwrap();
        assert!(!a.may_open_vhost("u", "v"));
        a.set_permissions(perms("^c-", "^w-", "")).unwrap();
        assert!(a.may_open_vhost("u", "v"));
        a.check("u", "v", Resource::Queue("c-q"), Permission::Configure)
            .unwrap();
        let e = a
            .check("u", "v", Resource::Exchange(""), Permission::Write)
            .unwrap_err();
        assert_eq!(e.code as u16, 403);
        assert_eq!(
            e.text,
            "ACCESS_REFUSED - access to exchange 'amq.default' in vhost 'v' refused for user 'u'"
        );
        // An empty regex grants nothing.
        assert!(a
            .check("u", "v", Resource::Queue("anything"), Permission::Read)
            .is_err());
        // Unanchored, as Erlang's re:run.
        a.set_permissions(perms("c-", ".*", ".*")).unwrap();
        a.check("u", "v", Resource::Queue("x-c-q"), Permission::Configure)
            .unwrap();
    }

    #[test]
    fn bad_regexes_are_refused_and_changes_bump_the_generation() {
        let a = access();
        a.put_user(UserRecord::new("u", Some("pw"), vec![]))
            .unwrap();
        assert!(matches!(
            a.set_permissions(perms("(", ".*", ".*")),
            Err(AdminError::BadRequest(_))
        ));
        let g = a.generation();
        a.set_permissions(perms(".*", ".*", ".*")).unwrap();
        assert!(a.generation() > g);
        assert!(matches!(
            a.set_permissions(PermissionRecord {
                user: "nobody".into(),
                ..perms(".*", ".*", ".*")
            }),
            Err(AdminError::NotFound(_))
        ));
    }

    #[test]
    fn survives_a_reload_and_deleting_a_user_drops_its_permissions() {
        let store: Arc<dyn Store> = Arc::new(MemoryStore::default());
        let a = AccessControl::load(store.clone()).unwrap();
        a.put_user(UserRecord::new("u", Some("pw"), vec!["monitoring".into()]))
            .unwrap();
        a.set_permissions(perms(".*", ".*", ".*")).unwrap();
        let b = AccessControl::load(store.clone()).unwrap();
        assert!(b.authenticate("u", "pw", true, &[]).is_some());
        assert!(b.authenticate("u", "pw", false, &["u".into()]).is_none());
        assert!(b.may_open_vhost("u", "v"));
        b.delete_user("u").unwrap();
        let c = AccessControl::load(store).unwrap();
        assert!(c.user("u").is_none());
        assert!(c.permissions().is_empty());
    }

    #[test]
    fn topic_permissions_apply_only_where_set() {
        let a = access();
        a.put_user(UserRecord::new("u", Some("pw"), vec![]))
            .unwrap();
        a.set_topic_permissions(TopicPermissionRecord {
            user: "u".into(),
            vhost: "v".into(),
            exchange: "amq.topic".into(),
            write: "^ok\\.".into(),
            read: "^{username}\\.".into(),
        })
        .unwrap();
        a.check_topic("u", "v", "amq.topic", "ok.a", Permission::Write)
            .unwrap();
        let e = a
            .check_topic("u", "v", "amq.topic", "bad.a", Permission::Write)
            .unwrap_err();
        assert_eq!(
            e.text,
            "ACCESS_REFUSED - access to topic 'bad.a' in exchange 'amq.topic' in vhost 'v' refused for user 'u'"
        );
        a.check_topic("u", "v", "amq.topic", "u.x", Permission::Read)
            .unwrap();
        a.check_topic("u", "v", "other", "bad.a", Permission::Write)
            .unwrap();
    }
}
