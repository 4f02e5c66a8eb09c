//! The TCP server: listeners and connections on every core, each speaking
//! a wire protocol through a [`codec`] onto the [`broker`](crate::broker).
//!
//! Every core listens on the same address (`SO_REUSEPORT`: the kernel
//! spreads connections over the cores) and on a port of its own (named in
//! Metadata, so a client can reach a partition's core directly). A
//! connection lives on the core that accepted it: its receives, framing,
//! decoding and sends all run on that core's ring, as a
//! [`CoreTask`](crate::engine) beside the logs. The rooms:
//!
//! - [`task`]: one core's server (`NetCore`), the tick hooks, and the seam
//!   where a decoded frame becomes a broker command;
//! - [`conn`], [`recv`], [`send`], [`sweep`], [`listen`]: connections,
//!   receiving and framing, sending, timeouts, listening sockets; none of
//!   them knows the protocol;
//! - [`codec`]: the protocol seam; [`native`]: Strom's protocol on it;
//! - [`reply`]: replies on their way back to their connection's core;
//! - [`control`]: stop, and metrics and stage reports gathered across cores;
//! - [`metrics`]: the task's connection metrics beside its core's;
//! - [`metrics_http`]: `/metrics` and `/health` for Prometheus, on a thread of its own;
//! - [`config`]: the server's settings, [`ServerConfig`].
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::time::Duration;

use crate::broker::admin::Admin;
use crate::broker::archives::Shelf;
use crate::broker::{Broker, Dispatcher};
use crate::config::EngineConfig;
use crate::engine::{Engine, ShutdownReport};
use crate::error::Result;
use crate::metrics::Metrics;
use crate::read::ReplyBudget;
use crate::stats::StageHistograms;

pub use crate::stats::StageLatency;
pub(crate) use auth::LogLimit;
use config::LiveLimits;
pub use config::{LiveSettings, ServerConfig};
pub use native::server_info;

mod auth;
mod budget;
pub(crate) mod codec;
pub mod config;
mod conn;
mod control;
mod listen;
mod metrics;
mod metrics_http;
mod native;
mod protocols;
mod recv;
mod reply;
mod send;
#[doc(hidden)]
pub mod sim;
mod stream;
mod sweep;
mod task;

use codec::Codec;
use control::Control;
use listen::ListenSock;
use native::NativeCodec;
use protocols::AnyCodec;
use reply::{Done, ReplyRoute};
use task::{NetCore, TaskParts};

/// What every core's server task shares.
pub(crate) struct Shared {
    /// The settings the server started with. The live limits among them
    /// are read from `live`, which a reload changes.
    pub cfg: ServerConfig,
    pub live: LiveLimits,
    pub broker: Arc<Broker>,
    pub inboxes: Vec<mpsc::Sender<Done>>,
    /// Connections open across all cores (the `connections_max` cap).
    pub connections: AtomicUsize,
    /// Each core's server task's control channel, in core order.
    pub controls: Vec<mpsc::Sender<Control>>,
    /// Authentication: whether it is on, and the users (`auth.rs`).
    pub auth: Arc<crate::auth::LiveAuth>,
}

impl Shared {
    pub fn new(cfg: ServerConfig, broker: Arc<Broker>, inboxes: Vec<mpsc::Sender<Done>>, controls: Vec<mpsc::Sender<Control>>) -> Shared {
        let live = LiveLimits::new(&cfg);
        let auth = Arc::new(crate::auth::LiveAuth::new(cfg.auth.clone()));
        Shared { cfg, live, broker, inboxes, connections: AtomicUsize::new(0), controls, auth }
    }

    /// The way back to core `core`'s connections.
    pub fn reply_route(&self, core: usize) -> ReplyRoute {
        ReplyRoute { inbox: self.inboxes[core].clone(), core: self.broker.route(core).clone() }
    }

    /// A new reply budget for one core's connections; returned bytes ring
    /// every core, since any may hold fetches waiting for it.
    pub fn reply_budget(&self) -> Arc<ReplyBudget> {
        let wake = (0..self.inboxes.len()).map(|core| self.broker.route(core).clone()).collect();
        Arc::new(ReplyBudget::new(self.cfg.reply_budget_bytes, wake))
    }

    /// Tells every core's task to stop (accept and read no more, answer
    /// what is in flight within `drain`, close every connection); each
    /// receiver hears once its task has (or is gone, if it already was).
    pub fn stop_tasks(&self, drain: Duration) -> Vec<mpsc::Receiver<()>> {
        let mut waits = Vec::new();
        for (core, ctl) in self.controls.iter().enumerate() {
            let (done, wait) = mpsc::sync_channel(1);
            if ctl.send(Control::Stop { drain, done }).is_ok() {
                self.broker.route(core).ring();
                waits.push(wait);
            }
        }
        waits
    }
}

/// A running server: an engine plus listeners on every core.
pub struct Server {
    /// Boxed: a `Server` stays small to move (callers keep it in enums).
    engine: Option<Box<Engine>>,
    local_addr: SocketAddr,
    /// The Kafka listener's address, when there is one.
    kafka_addr: Option<SocketAddr>,
    /// The Kafka listener's group coordinator thread, stopped with the server.
    kafka_groups: Option<crate::kafka::coordinator::Coordinator>,
    /// The metrics listener, when there is one; stopped first. Boxed, as
    /// the engine is, to keep a `Server` small.
    metrics_http: Option<Box<metrics_http::MetricsHttp>>,
    core_addrs: Vec<String>,
    admin: Arc<Admin>,
    shared: Arc<Shared>,
    /// The archive topics (`--archive DIR`), when there are.
    shelf: Option<Arc<Shelf>>,
}

/// How long a stopping server waits for in-flight requests to be answered.
const STOP_DRAIN: Duration = Duration::from_secs(10);

impl Server {
    /// Opens the data directory, starts the cores and accepts on `cfg.listen`
    /// (port 0 picks a free port: see [`Server::local_addr`]).
    pub fn start(dir: &Path, engine_cfg: EngineConfig, cfg: ServerConfig) -> Result<Server> {
        Server::start_on(Some(dir), engine_cfg, cfg)
    }

    /// Serves the archives of `cfg.archive_dir` alone: no data directory,
    /// no live topic (an engine with no logs, read-only: topic admin and
    /// produce are refused ReadOnly).
    pub fn start_archives_only(engine_cfg: EngineConfig, cfg: ServerConfig) -> Result<Server> {
        Server::start_on(None, engine_cfg, cfg)
    }

    fn start_on(dir: Option<&Path>, engine_cfg: EngineConfig, cfg: ServerConfig) -> Result<Server> {
        cfg.validate()?;
        listen::raise_open_files_limit(cfg.connections_max);
        let cores = engine_cfg.cores.max(1);
        // Bound before the engine opens: an address in use must refuse the
        // start before the data directory is created or written.
        let bound = listen::bind(cfg.listen, cores, cfg.direct_ports)?;
        let kafka_bound = cfg.kafka_listen.map(|addr| listen::bind_shared(addr, cores)).transpose()?;
        let metrics_bound = cfg.metrics_listen.map(metrics_http::MetricsHttp::bind).transpose()?;
        // Opened before the engine, so that a bad archive refuses the start
        // before the data directory is touched.
        let shelf = cfg.archive_dir.as_deref().map(Shelf::open).transpose()?;
        let engine = match (dir, &cfg.archive_dir) {
            (Some(dir), _) => Engine::open_for_tasks(dir, engine_cfg, cfg.task_needs(cores))?,
            (None, Some(archives)) => Engine::open_empty_for_tasks(archives, engine_cfg, cfg.task_needs(cores))?,
            (None, None) => {
                return Err(crate::StromError::InvalidArgument("a server needs a data directory or an archive directory".into()));
            }
        };
        let broker = engine.broker().clone();
        if let Some(shelf) = &shelf {
            shelf.check_clash(&broker.topics(), engine.dir())?;
            // A follower's writer may create one of these names later.
            broker.reserve_names(shelf.topics());
        }
        let admin = Admin::start(broker.clone(), engine.dir())?;
        let (inboxes, inbox_rxs): (Vec<_>, Vec<_>) = (0..cores).map(|_| mpsc::channel()).unzip();
        let (controls, control_rxs): (Vec<_>, Vec<_>) = (0..cores).map(|_| mpsc::channel()).unzip();
        let shared = Arc::new(Shared::new(cfg, broker.clone(), inboxes, controls));
        let core_addrs: Arc<[String]> = bound.core_addrs.clone().into();
        let mut codecs = vec![AnyCodec::Native(NativeCodec)];
        let mut kafka_groups = None;
        let (mut kafka_socks, kafka_addr) = match kafka_bound {
            Some((socks, addr)) => {
                // A wildcard address is where the server listens, not an
                // address a client can connect to: clients connect to what
                // Metadata advertises, so one must be given.
                if shared.cfg.kafka_advertise.is_none() && addr.ip().is_unspecified() {
                    return Err(crate::StromError::InvalidArgument(format!(
                        "--kafka-listen {addr} is a wildcard address, which Kafka clients cannot connect to: give --kafka-advertise HOST:PORT, the address clients should use"
                    )));
                }
                let advertised = shared.cfg.kafka_advertise.clone().unwrap_or_else(|| addr.to_string());
                let (host, port) = crate::kafka::split_host_port(&advertised)?;
                let groups = crate::kafka::coordinator::Coordinator::start(crate::kafka::coordinator::CoordinatorConfig {
                    initial_rebalance_delay_ms: u32::try_from(shared.cfg.kafka_initial_rebalance_delay.as_millis()).unwrap_or(u32::MAX),
                    read_only: engine.config().read_only,
                    ..crate::kafka::coordinator::CoordinatorConfig::new(engine.dir().to_path_buf())
                })?;
                let kafka = crate::kafka::KafkaShared::new(
                    host,
                    port,
                    groups.clone(),
                    admin.clone(),
                    engine.config().batch_bytes_max,
                    shared.auth.clone(),
                );
                kafka_groups = Some(groups);
                codecs.push(AnyCodec::Kafka(crate::kafka::KafkaCodec { shared: kafka }));
                (socks.into_iter().map(Some).collect(), Some(addr))
            }
            None => (Vec::new(), None),
        };
        let per_core = inbox_rxs.into_iter().zip(control_rxs).zip(bound.per_core);
        for (core_id, ((inbox, control), listeners)) in per_core.enumerate() {
            let budget = shared.reply_budget();
            let headroom = NativeCodec.fetch_headroom();
            let dispatcher = Dispatcher::new(core_id, broker.clone(), admin.clone(), core_addrs.clone(), headroom)
                .with_reply_budget(budget.clone())
                .with_shelf(shelf.clone());
            let mut listeners: Vec<(ListenSock, u8)> = listeners.into_iter().map(|l| (ListenSock::Os(l.into()), 0)).collect();
            if let Some(sock) = kafka_socks.get_mut(core_id).and_then(Option::take) {
                listeners.push((ListenSock::Os(sock.into()), 1));
            }
            let parts = TaskParts { inbox, control, listeners, broker: dispatcher, budget };
            engine.attach(core_id, Box::new(NetCore::new(core_id, codecs.clone(), shared.clone(), parts)))?;
        }
        // Started last: a scrape asks every core's task, which exist now.
        let metrics_http = metrics_bound.map(|l| metrics_http::MetricsHttp::start(l, shared.clone()).map(Box::new)).transpose()?;
        Ok(Server {
            engine: Some(Box::new(engine)),
            local_addr: bound.local_addr,
            kafka_addr,
            kafka_groups,
            metrics_http,
            core_addrs: bound.core_addrs,
            admin,
            shared,
            shelf,
        })
    }

    /// Puts a new `[auth]` section in force (a reload): connections look
    /// their user up again at their next request.
    pub fn set_auth(&self, auth: crate::auth::AuthConfig) {
        self.shared.auth.replace(auth);
    }

    /// The `[auth]` section in force.
    pub fn auth(&self) -> Arc<crate::auth::AuthConfig> {
        self.shared.auth.config()
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The Kafka listener's address (`kafka_listen`, port 0 resolved).
    pub fn kafka_addr(&self) -> Option<SocketAddr> {
        self.kafka_addr
    }

    /// The metrics listener's address (`metrics_listen`, port 0 resolved).
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics_http.as_ref().map(|m| m.addr())
    }

    /// Each core's own address (empty strings when direct ports are off).
    pub fn core_addrs(&self) -> &[String] {
        &self.core_addrs
    }

    /// The embedded engine, for in-process use beside the network.
    pub fn engine(&self) -> &Engine {
        self.engine.as_ref().expect("engine runs until shutdown")
    }

    /// The archive topics served beside the live ones (`--archive DIR`).
    pub fn shelf(&self) -> Option<&Arc<Shelf>> {
        self.shelf.as_ref()
    }

    /// Connections open now, across all cores.
    pub fn connections(&self) -> usize {
        self.shared.connections.load(Ordering::Relaxed)
    }

    /// The live settings in force now.
    pub fn live_settings(&self) -> LiveSettings {
        let live = &self.shared.live;
        LiveSettings {
            connections_max: live.connections_max(),
            inflight_per_conn_max: live.inflight_per_conn_max(),
            core_buffered_bytes_max: live.core_buffered_bytes_max(),
            idle_timeout: Duration::from_nanos(live.idle_timeout_ns()),
            header_timeout: Duration::from_nanos(live.header_timeout_ns()),
            default_retention: self.shared.broker.default_retention(),
        }
    }

    /// Puts `live` in force (a reload): each core reads its new limits from
    /// its next tick on, and topics without their own retention follow the
    /// new default from their next retention pass. Validated first by the
    /// rules of [`ServerConfig::validate`]; refused, with nothing changed,
    /// when they fail or `connections_max` is over what the server started
    /// with (each core's op table and the open-file limit were sized for
    /// that many). Lowering a limit closes nothing and drops nothing: it
    /// only stops accepting and reading past it.
    pub fn apply(&self, live: &LiveSettings) -> Result<()> {
        let cfg = live.over(&self.shared.cfg);
        cfg.validate()?;
        if live.connections_max > self.shared.cfg.connections_max {
            return Err(crate::StromError::Unsupported(format!(
                "connections_max {} is over {}, what the server started with (its op tables and open-file limit are sized for that): raising it needs a restart",
                live.connections_max, self.shared.cfg.connections_max
            )));
        }
        crate::catalog::TopicRetention { ms: live.default_retention.age_ms, bytes: live.default_retention.bytes }.validate()?;
        self.shared.live.store(&cfg);
        if live.default_retention != self.shared.broker.default_retention() {
            self.shared.broker.set_default_retention(live.default_retention)?;
        }
        Ok(())
    }

    /// Each core's metrics registry, in core order: the core's own (its
    /// logs' and read path's included) with its server task's sections
    /// (connections, the broker's forwarding), all read on the core's own
    /// thread when it next ticks. What audits and tests compare against a
    /// baseline; the `Metrics` api answers the same over the network.
    pub fn metrics(&self) -> Vec<Metrics> {
        let (tx, rx) = mpsc::sync_channel(1);
        let own = self.shared.gather_metrics(None, move |cores| drop(tx.send(cores)));
        debug_assert!(own.is_none());
        // Every core's task runs until the server stops, which takes `self`:
        // each adds its registry.
        rx.recv().unwrap_or_default().into_iter().map(Option::unwrap_or_default).collect()
    }

    /// Per-stage latency of the produce requests (and fetches) served so
    /// far, merged across cores, one row per stage in
    /// [`crate::stats::STAGES`] order. With `reset`, every core clears its
    /// histograms after reading them (a load generator drops its warm-up so).
    pub fn stage_latency(&self, reset: bool) -> Vec<StageLatency> {
        let (tx, rx) = mpsc::sync_channel(1);
        let own = self.shared.gather_stages(reset, false, None, move |(h, _)| drop(tx.send(h.summary())));
        debug_assert!(own.is_none());
        rx.recv().unwrap_or_else(|_| StageHistograms::new().summary())
    }

    /// Stops accepting, answers in-flight requests (durable appends are
    /// acknowledged), closes every connection, checkpoints every log and
    /// stops the cores, so the next start scans nothing.
    /// Returns what the stop flushed and closed, for the log line that says so.
    pub fn shutdown(mut self) -> Result<ShutdownReport> {
        self.stop()
    }

    fn stop(&mut self) -> Result<ShutdownReport> {
        if self.engine.is_some() && tracing::enabled!(tracing::Level::DEBUG) {
            tracing::debug!("per-stage latency of produce requests:\n{}", crate::stats::format_table(&self.stage_latency(false)));
        }
        let Some(engine) = self.engine.take() else { return Ok(ShutdownReport::default()) };
        if let Some(http) = &mut self.metrics_http {
            http.stop();
        }
        // Every connection open now is closed by the stop (new ones are refused from here on).
        let connections_closed = self.metrics().iter().map(|m| m.conn.connections).sum();
        // Parked archive polls answer now, so that the drain below need not
        // wait out their long polls; later archive reads are refused.
        if let Some(shelf) = &self.shelf {
            shelf.stop();
        }
        for w in self.shared.stop_tasks(STOP_DRAIN) {
            // An Err means the core's task is gone already: nothing to wait for.
            let _ = w.recv();
        }
        if let Some(groups) = &self.kafka_groups {
            groups.stop();
        }
        self.admin.stop();
        engine.shutdown_report().map(|r| ShutdownReport { connections_closed, ..r })
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Err(e) = self.stop() {
            tracing::error!(%e, "server stop");
        }
    }
}
