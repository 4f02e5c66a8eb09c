//! The server's limits and addresses, with their reasons (docs/ARCHITECTURE.md, Bounds).
use std::net::SocketAddr;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::atomic::{AtomicU64, AtomicUsize};
use std::time::Duration;

use crate::config::EngineConfig;
use crate::core::task::TaskNeeds;
use crate::error::{Result, StromError};
use crate::partition::Retention;
use crate::proto;

/// Limits and addresses of the server. `Default` gives the production defaults.
/// The fields [`LiveSettings`] names can change on a running server
/// (`Server::apply`): the cores read those from `LiveLimits`, not from here.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    pub listen: SocketAddr,
    /// Also speak Kafka's protocol on this address (docs/KAFKA.md), every
    /// core listening on it as on `listen`.
    pub kafka_listen: Option<SocketAddr>,
    /// The `host:port` Kafka clients are told to connect to (Metadata,
    /// FindCoordinator); None: the Kafka listener's own address.
    pub kafka_advertise: Option<String>,
    /// How long a new Kafka consumer group waits for more members before
    /// its first rebalance completes (Kafka's
    /// group.initial.rebalance.delay.ms), so that members starting
    /// together land in one generation.
    pub kafka_initial_rebalance_delay: Duration,
    /// Serve `/metrics` (Prometheus) and `/health` over HTTP on this
    /// address, from a thread of its own (`metrics_http.rs`).
    pub metrics_listen: Option<SocketAddr>,
    /// Largest frame `length` accepted (the bytes after the 4-byte length
    /// prefix). A longer one is refused before any of its body is read or
    /// allocated, and the connection is closed (framing is lost).
    pub frame_bytes_max: usize,
    /// Open connections across all cores; one more is told
    /// `TooManyConnections` and closed.
    pub connections_max: usize,
    /// Requests of one connection being served at once; past it the server
    /// stops reading that socket until replies go out.
    pub inflight_per_conn_max: usize,
    /// Request and reply bytes one connection may hold in the server (a
    /// slow reader's unsent replies among them), each Fetch counted at its
    /// largest possible reply from the moment it is read; past it, reading
    /// stops. So one connection pins at most this plus one Fetch's reply.
    pub conn_buffered_bytes_max: usize,
    /// Request, reply and partial-frame bytes that exist on one core, all
    /// connections together; past it, no socket of the core is read.
    pub core_buffered_bytes_max: usize,
    /// Fetch reply bytes that may exist for one core's connections at once:
    /// a Fetch takes its largest reply from it when the reply starts being
    /// built (never while parked as a long poll) and waits while there is
    /// no room; the bytes return as the reply is sent.
    /// So readers that never read hold at most this per core, whatever
    /// their number (docs/ARCHITECTURE.md, Bounds).
    pub reply_budget_bytes: usize,
    /// A connection with no request in flight and nothing received for this
    /// long is closed.
    pub idle_timeout: Duration,
    /// A frame begun must be complete within this long (slowloris).
    pub header_timeout: Duration,
    /// Longest long poll a Fetch may ask for.
    pub fetch_wait_max: Duration,
    /// Also listen on a port per core (an ephemeral port on the listen IP),
    /// named in Metadata so clients can skip cross-core forwarding.
    pub direct_ports: bool,
    /// Registered buffers per core that Fetch replies (for connections on
    /// the partition's own core) are assembled in and sent from; each is the
    /// engine's `write_buf_bytes`. 0: every reply is a heap buffer. Only a
    /// server sends from them, so this is the one place they are set: the
    /// engine registers what the server asks for ([`TaskNeeds`]).
    pub reply_bufs_per_core: usize,
    /// Who may connect and what each user may do (`[auth]`; off by
    /// default). A reload replaces it: [`super::Server::set_auth`].
    pub auth: crate::auth::AuthConfig,
    /// Serve every archive in this directory read-only beside the live
    /// topics (`crate::broker::archives`; docs/ARCHIVE.md, Serving).
    pub archive_dir: Option<std::path::PathBuf>,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            listen: "127.0.0.1:7070".parse().expect("literal address"),
            kafka_listen: None,
            kafka_advertise: None,
            kafka_initial_rebalance_delay: Duration::from_secs(3),
            metrics_listen: None,
            frame_bytes_max: proto::FRAME_BYTES_MAX_DEFAULT,
            connections_max: 10_000,
            inflight_per_conn_max: 256,
            conn_buffered_bytes_max: 32 << 20,
            core_buffered_bytes_max: 256 << 20,
            // Eight 8 MiB fetches in flight, or 32 loadgen consumer slots
            // (2 MiB each); per core, so 2 cores hold at most 256 MiB of
            // replies, what one core's `core_buffered_bytes_max` allows.
            reply_budget_bytes: 128 << 20,
            idle_timeout: Duration::from_secs(600),
            header_timeout: Duration::from_secs(10),
            fetch_wait_max: Duration::from_secs(30),
            direct_ports: true,
            reply_bufs_per_core: 16,
            auth: crate::auth::AuthConfig::default(),
            archive_dir: None,
        }
    }
}

impl ServerConfig {
    pub fn validate(&self) -> Result<()> {
        let bad = |s: String| Err(StromError::Unsupported(s));
        if self.frame_bytes_max < proto::LEN_BYTES + proto::HEADER_BYTES + 1024 || self.frame_bytes_max > u32::MAX as usize {
            return bad(format!("frame_bytes_max {} must be between 1 KiB and 4 GiB", self.frame_bytes_max));
        }
        if self.connections_max == 0 || self.inflight_per_conn_max == 0 {
            return bad("connections_max and inflight_per_conn_max must be at least 1".into());
        }
        if self.conn_buffered_bytes_max < self.frame_bytes_max || self.core_buffered_bytes_max < self.conn_buffered_bytes_max {
            return bad("buffer limits must satisfy frame_bytes_max <= conn_buffered_bytes_max <= core_buffered_bytes_max".into());
        }
        if self.reply_budget_bytes < self.frame_bytes_max {
            return bad(format!(
                "reply_budget_bytes {} must hold one largest reply (frame_bytes_max {})",
                self.reply_budget_bytes, self.frame_bytes_max
            ));
        }
        Ok(())
    }

    /// What each core must have for this server's connections: the reply
    /// buffers, and an op-table slot for one receive-side op and one send
    /// per connection plus accepts (the kernel spreads connections
    /// unevenly, so any core may get them all).
    pub(crate) fn task_needs(&self, cores: usize) -> TaskNeeds {
        TaskNeeds { reply_bufs: self.reply_bufs_per_core, net_ops: 2 * self.connections_max + 4 * cores + 64 }
    }
}

/// The settings a running server changes in place ([`Server::apply`](super::Server::apply),
/// which `strom serve` calls on SIGHUP): its connection limits and timeouts,
/// and the engine's retention for topics without their own. Everything
/// else in [`ServerConfig`] and `EngineConfig` is fixed at the start.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LiveSettings {
    pub connections_max: usize,
    pub inflight_per_conn_max: usize,
    pub core_buffered_bytes_max: usize,
    pub idle_timeout: Duration,
    pub header_timeout: Duration,
    /// `EngineConfig::default_retention`.
    pub default_retention: Retention,
}

impl LiveSettings {
    /// The live part of a configuration.
    pub fn of(engine: &EngineConfig, server: &ServerConfig) -> LiveSettings {
        LiveSettings {
            connections_max: server.connections_max,
            inflight_per_conn_max: server.inflight_per_conn_max,
            core_buffered_bytes_max: server.core_buffered_bytes_max,
            idle_timeout: server.idle_timeout,
            header_timeout: server.header_timeout,
            default_retention: engine.default_retention(),
        }
    }

    /// `cfg` with these limits in place of its own, to validate them
    /// together with the settings they must agree with.
    pub(crate) fn over(&self, cfg: &ServerConfig) -> ServerConfig {
        ServerConfig {
            connections_max: self.connections_max,
            inflight_per_conn_max: self.inflight_per_conn_max,
            core_buffered_bytes_max: self.core_buffered_bytes_max,
            idle_timeout: self.idle_timeout,
            header_timeout: self.header_timeout,
            ..cfg.clone()
        }
    }
}

/// The server's live limits where every core reads them on its hot path.
/// Each is loaded `Relaxed` and no two are read as a pair: a core that sees
/// a new limit a tick late, or one before another, does what the old limit
/// allowed for one more tick, which is what it did a moment before. A
/// lowered limit stops new accepts and reads past it; it never closes a
/// connection or drops a request that is already in.
pub(crate) struct LiveLimits {
    connections_max: AtomicUsize,
    inflight_per_conn_max: AtomicUsize,
    core_buffered_bytes_max: AtomicUsize,
    idle_timeout_ns: AtomicU64,
    header_timeout_ns: AtomicU64,
}

impl LiveLimits {
    pub fn new(cfg: &ServerConfig) -> LiveLimits {
        let limits = LiveLimits {
            connections_max: AtomicUsize::new(0),
            inflight_per_conn_max: AtomicUsize::new(0),
            core_buffered_bytes_max: AtomicUsize::new(0),
            idle_timeout_ns: AtomicU64::new(0),
            header_timeout_ns: AtomicU64::new(0),
        };
        limits.store(cfg);
        limits
    }

    /// Takes `cfg`'s live limits (validated by the caller).
    pub fn store(&self, cfg: &ServerConfig) {
        let ns = |d: Duration| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
        self.connections_max.store(cfg.connections_max, Relaxed);
        self.inflight_per_conn_max.store(cfg.inflight_per_conn_max, Relaxed);
        self.core_buffered_bytes_max.store(cfg.core_buffered_bytes_max, Relaxed);
        self.idle_timeout_ns.store(ns(cfg.idle_timeout), Relaxed);
        self.header_timeout_ns.store(ns(cfg.header_timeout), Relaxed);
    }

    pub fn connections_max(&self) -> usize {
        self.connections_max.load(Relaxed)
    }

    pub fn inflight_per_conn_max(&self) -> usize {
        self.inflight_per_conn_max.load(Relaxed)
    }

    pub fn core_buffered_bytes_max(&self) -> usize {
        self.core_buffered_bytes_max.load(Relaxed)
    }

    pub fn idle_timeout_ns(&self) -> u64 {
        self.idle_timeout_ns.load(Relaxed)
    }

    pub fn header_timeout_ns(&self) -> u64 {
        self.header_timeout_ns.load(Relaxed)
    }
}
