//! Authentication and permissions: the `[auth]` section of the config
//! file, who a token (or a SASL/PLAIN user and password) is, and what a
//! user may do. Pure: no I/O, no clock; the server asks it (docs/DEPLOY.md,
//! Authentication).
//!
//! A user is known by a token, kept only as its SHA-256 digest: the config
//! may give the token itself (`token`) or its digest (`token_sha256`, so
//! the file need not hold the secret). A presented token is hashed once and
//! compared with every user's digest in constant time, without stopping at
//! a match, so neither the time taken nor a length says how close a guess
//! was. Tokens are never logged, and never kept past the hash.
//!
//! Permissions name topics by pattern (`*` matches any run of characters)
//! and allow `read` (fetch, list offsets, query, subscribe, describe,
//! committed offsets), `write` (produce) and `admin` (create, alter and
//! delete topics). Requests about no topic (metadata, server info, metrics,
//! consumer-group membership) need only an authenticated user, except
//! resetting the stage statistics, which needs `admin` on `*`.
use std::sync::Arc;

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::broker::Command;

/// What a permission allows on the topics its pattern names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    Read,
    Write,
    Admin,
}

impl Access {
    const ALL: [Access; 3] = [Access::Read, Access::Write, Access::Admin];

    pub fn name(self) -> &'static str {
        match self {
            Access::Read => "read",
            Access::Write => "write",
            Access::Admin => "admin",
        }
    }

    fn bit(self) -> u8 {
        1 << self as u8
    }
}

impl std::fmt::Display for Access {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// A token shorter than this is refused at load: guessable.
pub const TOKEN_CHARS_MIN: usize = 16;
/// Users one config may name (each authentication compares them all).
pub const USERS_MAX: usize = 1024;
/// Permissions one user may have (each request may check them all).
pub const PERMISSIONS_MAX: usize = 256;
/// Longest user name and topic pattern, in bytes.
const NAME_BYTES_MAX: usize = 255;

/// One permission: the topics `pattern` names, and what is allowed on them.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Permission {
    pattern: String,
    /// [`Access::bit`]s.
    allow: u8,
}

/// A configured user.
#[derive(Debug, PartialEq, Eq)]
pub struct User {
    pub name: String,
    token_sha256: [u8; 32],
    permissions: Vec<Permission>,
}

impl User {
    /// Whether the user may do `access` on `topic`.
    pub fn allows(&self, topic: &str, access: Access) -> bool {
        self.permissions.iter().any(|p| p.allow & access.bit() != 0 && matches(&p.pattern, topic))
    }

    /// Whether the user may do `access` on every topic (a permission on `*`).
    pub fn allows_all(&self, access: Access) -> bool {
        self.permissions.iter().any(|p| p.allow & access.bit() != 0 && p.pattern == "*")
    }

    /// Whether any permission names `topic` (so the user may see it listed).
    pub fn sees(&self, topic: &str) -> bool {
        self.permissions.iter().any(|p| matches(&p.pattern, topic))
    }

    /// Whether `digest` is this user's token's, in constant time.
    fn token_is(&self, digest: &[u8; 32]) -> subtle::Choice {
        self.token_sha256.ct_eq(digest)
    }
}

/// The `[auth]` section: off, or on with its users.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct AuthConfig {
    pub enabled: bool,
    pub users: Vec<Arc<User>>,
}

impl AuthConfig {
    /// The user whose token is `token`. Constant time in the token: every
    /// user's digest is compared, and no comparison stops early.
    pub fn by_token(&self, token: &[u8]) -> Option<Arc<User>> {
        let digest = sha256(token);
        let mut found = None;
        for u in &self.users {
            if bool::from(u.token_is(&digest)) {
                found = Some(u.clone());
            }
        }
        found
    }

    /// The user SASL/PLAIN names, if `password` is its token. The name is
    /// not secret; the password is compared in constant time.
    pub fn by_plain(&self, name: &str, password: &[u8]) -> Option<Arc<User>> {
        let digest = sha256(password);
        let user = self.users.iter().find(|u| u.name == name)?;
        bool::from(user.token_is(&digest)).then(|| user.clone())
    }

    /// On or off, and the users by name (never a token): `on [reader ops]`,
    /// as logs and `strom config check` tell it.
    pub fn describe(&self) -> String {
        let users: Vec<&str> = self.users.iter().map(|u| u.name.as_str()).collect();
        format!("{} [{}]", if self.enabled { "on" } else { "off" }, users.join(" "))
    }

    /// The user a connection authenticated as, after a reload: the same
    /// name with the same token, or none (removed, or its token changed).
    pub fn still(&self, user: &User) -> Option<Arc<User>> {
        self.users.iter().find(|u| u.name == user.name && bool::from(u.token_is(&user.token_sha256))).cloned()
    }

    /// Reads the `[auth]` table of a config file. Errors name the key.
    pub fn from_toml(value: &toml::Value) -> Result<AuthConfig, String> {
        let table = value.as_table().ok_or("`auth` must be a table ([auth])")?;
        let mut config = AuthConfig::default();
        for (key, v) in table {
            match key.as_str() {
                "enabled" => config.enabled = v.as_bool().ok_or("`auth.enabled` must be true or false")?,
                "users" => {
                    let users = v.as_array().ok_or("`auth.users` must be an array of tables ([[auth.users]])")?;
                    if users.len() > USERS_MAX {
                        return Err(format!("`auth.users` names {} users; at most {USERS_MAX}", users.len()));
                    }
                    for (i, u) in users.iter().enumerate() {
                        let user = user(u).map_err(|e| format!("`auth.users` entry {}: {e}", i + 1))?;
                        if config.users.iter().any(|o| o.name == user.name) {
                            return Err(format!("`auth.users` names the user {:?} twice", user.name));
                        }
                        if config.by_digest(&user.token_sha256).is_some() {
                            return Err(format!(
                                "`auth.users`: the user {:?} has the token of another user; a token names one user",
                                user.name
                            ));
                        }
                        config.users.push(Arc::new(user));
                    }
                }
                other => return Err(format!("unknown key `auth.{other}` (auth has `enabled` and `users`)")),
            }
        }
        if config.enabled && config.users.is_empty() {
            return Err("`auth.enabled` is true but no [[auth.users]] are configured: nobody could connect".into());
        }
        Ok(config)
    }

    fn by_digest(&self, digest: &[u8; 32]) -> Option<&Arc<User>> {
        self.users.iter().find(|u| bool::from(u.token_is(digest)))
    }
}

/// The configuration in force, replaced whole by a reload (SIGHUP). A
/// connection keeps the user it authenticated as, and looks it up again
/// ([`AuthConfig::still`]) when it sees the version change: one relaxed
/// load per request, the lock only after a reload.
#[derive(Debug, Default)]
pub struct LiveAuth {
    config: std::sync::RwLock<Arc<AuthConfig>>,
    version: std::sync::atomic::AtomicU64,
    /// Whether authentication is on now (read on every request).
    enabled: std::sync::atomic::AtomicBool,
}

impl LiveAuth {
    pub fn new(config: AuthConfig) -> LiveAuth {
        let enabled = config.enabled.into();
        LiveAuth { config: std::sync::RwLock::new(Arc::new(config)), version: 0.into(), enabled }
    }

    pub fn enabled(&self) -> bool {
        self.enabled.load(std::sync::atomic::Ordering::Acquire)
    }

    pub fn version(&self) -> u64 {
        self.version.load(std::sync::atomic::Ordering::Acquire)
    }

    pub fn config(&self) -> Arc<AuthConfig> {
        self.config.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Puts `config` in force; connections see it at their next request.
    pub fn replace(&self, config: AuthConfig) {
        let enabled = config.enabled;
        *self.config.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(config);
        self.enabled.store(enabled, std::sync::atomic::Ordering::Release);
        self.version.fetch_add(1, std::sync::atomic::Ordering::AcqRel);
    }
}

fn user(value: &toml::Value) -> Result<User, String> {
    let table = value.as_table().ok_or("a user must be a table with name, token and permissions")?;
    let mut name = None;
    let mut digest = None;
    let mut permissions = Vec::new();
    for (key, v) in table {
        match key.as_str() {
            "name" => {
                let n = v.as_str().ok_or("`name` must be a string")?;
                if n.is_empty() || n.len() > NAME_BYTES_MAX || n.chars().any(|c| c.is_control() || c.is_whitespace()) {
                    return Err(format!("the name {n:?} must be 1 to {NAME_BYTES_MAX} bytes with no spaces or control characters"));
                }
                name = Some(n.to_string());
            }
            "token" => {
                let t = v.as_str().ok_or("`token` must be a string")?;
                if t.chars().count() < TOKEN_CHARS_MIN {
                    return Err(format!(
                        "the token is shorter than {TOKEN_CHARS_MIN} characters: too easy to guess (`openssl rand -hex 32` makes one)"
                    ));
                }
                digest = Some(set_once(digest, sha256(t.as_bytes()))?);
            }
            "token_sha256" => {
                let hex = v.as_str().ok_or("`token_sha256` must be a string of 64 hex digits")?;
                digest = Some(set_once(digest, from_hex(hex).ok_or("`token_sha256` must be 64 hex digits (`sha256sum` of the token)")?)?);
            }
            "permissions" => {
                let list =
                    v.as_array().ok_or("`permissions` must be an array of tables such as { topic = \"pub*\", allow = [\"read\"] }")?;
                if list.len() > PERMISSIONS_MAX {
                    return Err(format!("{} permissions; at most {PERMISSIONS_MAX}", list.len()));
                }
                permissions = list.iter().map(permission).collect::<Result<_, _>>()?;
            }
            other => return Err(format!("unknown key `{other}` (a user has name, token or token_sha256, and permissions)")),
        }
    }
    let name = name.ok_or("a user needs a `name`")?;
    let token_sha256 = digest.ok_or_else(|| format!("the user {name:?} needs a `token` (or `token_sha256`)"))?;
    Ok(User { name, token_sha256, permissions })
}

fn set_once(old: Option<[u8; 32]>, new: [u8; 32]) -> Result<[u8; 32], String> {
    match old {
        Some(_) => Err("give `token` or `token_sha256`, not both".into()),
        None => Ok(new),
    }
}

fn permission(value: &toml::Value) -> Result<Permission, String> {
    let table = value.as_table().ok_or("a permission must be a table such as { topic = \"pub*\", allow = [\"read\"] }")?;
    let mut pattern = None;
    let mut allow = None;
    for (key, v) in table {
        match key.as_str() {
            "topic" => {
                let p = v.as_str().ok_or("a permission's `topic` must be a string (a topic name, `*` a wildcard)")?;
                if p.is_empty() || p.len() > NAME_BYTES_MAX {
                    return Err(format!("a permission's topic pattern {p:?} must be 1 to {NAME_BYTES_MAX} bytes"));
                }
                pattern = Some(p.to_string());
            }
            "allow" => {
                let list = v.as_array().ok_or("a permission's `allow` must be a list of \"read\", \"write\", \"admin\"")?;
                let mut bits = 0;
                for a in list {
                    let a = a.as_str().and_then(|s| Access::ALL.into_iter().find(|x| x.name() == s));
                    bits |= a.ok_or("a permission's `allow` may hold only \"read\", \"write\" and \"admin\"")?.bit();
                }
                allow = Some(bits);
            }
            other => return Err(format!("unknown key `{other}` in a permission (it has `topic` and `allow`)")),
        }
    }
    Ok(Permission { pattern: pattern.ok_or("a permission needs a `topic`")?, allow: allow.ok_or("a permission needs `allow`")? })
}

fn sha256(bytes: &[u8]) -> [u8; 32] {
    Sha256::digest(bytes).into()
}

fn from_hex(hex: &str) -> Option<[u8; 32]> {
    let bytes = hex.as_bytes();
    if bytes.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, pair) in bytes.chunks(2).enumerate() {
        out[i] = u8::from_str_radix(std::str::from_utf8(pair).ok()?, 16).ok()?;
    }
    Some(out)
}

/// Whether `name` matches `pattern`, where `*` matches any run of
/// characters (none included) and everything else itself. Linear in the
/// two lengths times the stars (patterns are short and configured).
pub fn matches(pattern: &str, name: &str) -> bool {
    let mut parts = pattern.split('*');
    let first = parts.next().unwrap_or("");
    let Some(mut rest) = name.strip_prefix(first) else { return false };
    let middle: Vec<&str> = parts.collect();
    let Some((last, middle)) = middle.split_last() else { return rest.is_empty() };
    for part in middle {
        match rest.find(part) {
            Some(at) => rest = &rest[at + part.len()..],
            None => return false,
        }
    }
    rest.len() >= last.len() && rest.ends_with(last)
}

/// What a command needs of the user who sent it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Need<'a> {
    /// Only to be authenticated.
    Nothing,
    Topic(&'a str, Access),
    /// `access` on every topic.
    All(Access),
}

/// What `cmd` needs. A [`Command::Many`]'s commands are checked one by one
/// (each gets its own refusal); a protocol's own job says its topics.
pub fn need<'a>(cmd: &'a Command<'_>) -> Need<'a> {
    match cmd {
        Command::Produce { topic, .. } => Need::Topic(topic, Access::Write),
        Command::Fetch { topic, .. }
        | Command::ListOffsets { topic, .. }
        | Command::DescribeTopic { topic }
        | Command::CommitOffset { topic, .. }
        | Command::FetchOffset { topic, .. }
        | Command::Query { topic, .. }
        | Command::Subscribe { topic, .. } => Need::Topic(topic, Access::Read),
        Command::CreateTopic { topic, .. } | Command::AlterTopic { topic, .. } | Command::DeleteTopic { topic } => {
            Need::Topic(topic, Access::Admin)
        }
        Command::Stats { reset: true, .. } => Need::All(Access::Admin),
        Command::Stats { reset: false, .. }
        | Command::Metrics
        | Command::ServerInfo
        | Command::Metadata { .. }
        | Command::Grant { .. }
        | Command::Cancel { .. }
        | Command::Many { .. }
        | Command::Protocol(_)
        | Command::Authenticate { .. } => Need::Nothing,
    }
}

/// Whether `user` may run `cmd` (its parts, for a Many or a protocol job,
/// are checked where they run): `Err` names what is missing.
pub fn check(user: &User, cmd: &Command<'_>) -> Result<(), crate::error::StromError> {
    let denied =
        |topic: &str, access| crate::error::StromError::NotAuthorized { user: user.name.clone(), topic: topic.to_string(), access };
    match need(cmd) {
        Need::Nothing => {}
        Need::Topic(topic, access) if !user.allows(topic, access) => return Err(denied(topic, access)),
        Need::All(access) if !user.allows_all(access) => return Err(denied("*", access)),
        Need::Topic(..) | Need::All(_) => {}
    }
    if let Command::Protocol(job) = cmd {
        for (topic, access) in job.topics() {
            if !user.allows(topic, access) {
                return Err(denied(topic, access));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
#[path = "auth_tests.rs"]
mod tests;
