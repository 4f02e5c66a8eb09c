//! The TCP server: the native protocol on every core.
//!
//! Every core listens on the same address (`SO_REUSEPORT`: the kernel
//! spreads connections over the cores) and on a port of its own (named in
//! Metadata, so a client can reach a partition's core directly). A
//! connection lives on the core that accepted it: its receives, frame
//! decoding, request dispatch and sends all run on that core's ring, as a
//! [`CoreTask`](crate::engine) beside the logs (see [`net`]). A request for
//! a partition of another core goes to that core's mailbox and its answer
//! comes back to the connection's core through a reply inbox and a doorbell.
//! Topic administration and consumer offsets run on one admin thread (they
//! wait for every core; a core must never wait for itself), see [`admin`].
use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use socket2::{Domain, Protocol, Socket, Type};

use crate::buf::AlignedBuf;
use crate::config::EngineConfig;
use crate::engine::{CoreRoute, Directory, Engine};
use crate::error::{IoOp, Result, StromError};
use crate::proto::{self, Api, ErrorCode};
use crate::stats::{StageHistograms, StageTrace};

pub use crate::stats::StageLatency;

pub mod admin;
pub mod net;

/// Limits and addresses of the server. `Default` gives the production defaults.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    pub listen: SocketAddr,
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
    /// the partition's core) are assembled in and sent from; each is the
    /// engine's `write_buf_bytes`. 0: every reply is a heap buffer.
    pub reply_bufs_per_core: usize,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            listen: "127.0.0.1:7070".parse().expect("literal address"),
            frame_bytes_max: proto::FRAME_BYTES_MAX_DEFAULT,
            connections_max: 10_000,
            inflight_per_conn_max: 256,
            conn_buffered_bytes_max: 32 << 20,
            core_buffered_bytes_max: 256 << 20,
            idle_timeout: Duration::from_secs(600),
            header_timeout: Duration::from_secs(10),
            fetch_wait_max: Duration::from_secs(30),
            direct_ports: true,
            reply_bufs_per_core: 16,
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
        Ok(())
    }
}

/// Where a reply goes: a connection (slot and generation) on a core.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ConnKey {
    pub slot: u32,
    pub generation: u32,
}

/// A reply frame: on the heap, or in one of the connection core's
/// registered reply buffers (sent from it with `SEND_ZC`, then given back).
pub(crate) enum ReplyFrame {
    Heap(Vec<u8>),
    Fixed(AlignedBuf),
}

impl ReplyFrame {
    pub fn len(&self) -> usize {
        match self {
            ReplyFrame::Heap(v) => v.len(),
            ReplyFrame::Fixed(b) => b.len(),
        }
    }
}

/// An encoded reply on its way to its connection's core.
pub(crate) struct Done {
    pub conn: ConnKey,
    pub frame: ReplyFrame,
    /// Bytes the connection was charged for this request, released now.
    pub held_bytes: usize,
    /// The part of `held_bytes` that was a reservation for the reply (a
    /// Fetch's largest possible answer), charged to the connection only.
    pub reserved_bytes: usize,
    /// What the connection's core records once the reply is queued or sent.
    pub trace: Option<ReplyTrace>,
}

/// The stage times a reply brings back to its connection's core.
#[derive(Debug, Clone, Copy)]
pub(crate) enum ReplyTrace {
    /// A Produce's, up to its fdatasync's completion.
    Produce(StageTrace),
    /// A Fetch's receive time and how long it was parked as a long poll.
    Fetch { received_ns: u64, parked_ns: u64 },
}

/// Sends one reply frame to a connection's core, from any thread. Every
/// request holds exactly one, used exactly once.
pub(crate) struct Replier {
    inbox: mpsc::Sender<Done>,
    route: CoreRoute,
    conn: ConnKey,
    api: u16,
    pub request_id: u64,
    held_bytes: usize,
    reserved_bytes: usize,
    /// When the receive that finished the request's frame completed (stage clock).
    received_ns: u64,
    trace: Option<ReplyTrace>,
}

impl Replier {
    /// Marks the reply as a Produce's whose appends carried `trace`: its
    /// stages are recorded once the reply is sent.
    pub fn produced(mut self, trace: StageTrace) -> Self {
        self.trace = Some(ReplyTrace::Produce(StageTrace { received_ns: self.received_ns, ..trace }));
        self
    }

    /// Marks the reply as a Fetch's that waited `parked_ns` as a long poll:
    /// its latency is recorded once the reply is queued.
    pub fn fetched(mut self, parked_ns: u64) -> Self {
        self.trace = Some(ReplyTrace::Fetch { received_ns: self.received_ns, parked_ns });
        self
    }

    /// Encodes the reply with `encode(out, api, request_id)` and sends it.
    pub fn reply_with(self, encode: impl FnOnce(&mut Vec<u8>, u16, u64)) {
        let mut frame = Vec::new();
        encode(&mut frame, self.api, self.request_id);
        self.send(frame)
    }

    pub fn ok(self, resp: &proto::Response<'_>) {
        let api = Api::from_u16(self.api).expect("replies go to known apis");
        self.reply_with(|out, _, id| proto::encode_response(out, api, id, resp))
    }

    /// Sends a reply frame the caller encoded whole.
    pub fn frame(self, frame: Vec<u8>) {
        self.send(frame)
    }

    /// Sends a reply frame encoded whole in a registered reply buffer of
    /// the connection's own core (only that core may send from it).
    pub fn frame_fixed(self, frame: AlignedBuf) {
        self.deliver(ReplyFrame::Fixed(frame))
    }

    pub fn error(self, code: ErrorCode, message: &str) {
        self.reply_with(|out, api, id| proto::encode_error(out, api, id, code, message))
    }

    pub fn fail(self, e: &StromError) {
        self.error(ErrorCode::from(e), &e.to_string())
    }

    fn send(self, frame: Vec<u8>) {
        self.deliver(ReplyFrame::Heap(frame))
    }

    fn deliver(self, frame: ReplyFrame) {
        // The receiver lives as long as its core's server task; once that is
        // gone nobody is left to answer, and dropping the reply is right.
        let done = Done { conn: self.conn, frame, held_bytes: self.held_bytes, reserved_bytes: self.reserved_bytes, trace: self.trace };
        if self.inbox.send(done).is_ok() {
            self.route.ring();
        }
    }
}

/// What every core's server task shares.
pub(crate) struct Shared {
    pub cfg: ServerConfig,
    pub routes: Vec<CoreRoute>,
    pub inboxes: Vec<mpsc::Sender<Done>>,
    pub directory: Arc<Directory>,
    pub log_count: u32,
    pub batch_bytes_max: usize,
    pub admin: Mutex<mpsc::Sender<admin::Job>>,
    /// Each core's own address ("" when direct ports are off).
    pub core_addrs: Vec<String>,
    /// Connections open across all cores (the `connections_max` cap).
    pub connections: AtomicUsize,
    /// Each core's server task's control channel, in core order.
    pub controls: Vec<mpsc::Sender<Control>>,
}

impl Shared {
    pub fn core_of(&self, pid: u32) -> usize {
        (pid % self.log_count) as usize % self.routes.len()
    }

    #[allow(clippy::too_many_arguments)]
    pub fn replier(
        &self,
        core: usize,
        conn: ConnKey,
        api: u16,
        request_id: u64,
        held_bytes: usize,
        reserved_bytes: usize,
        received_ns: u64,
    ) -> Replier {
        let (inbox, route) = (self.inboxes[core].clone(), self.routes[core].clone());
        Replier { inbox, route, conn, api, request_id, held_bytes, reserved_bytes, received_ns, trace: None }
    }

    /// Asks every core's server task for its stage histograms (and to reset
    /// them if `reset`); `done` gets them merged once every core added its
    /// own, on the thread of the last. The share of core `own` is returned
    /// instead of sent, for a caller on that core to add at once.
    pub fn gather_stages(
        &self,
        reset: bool,
        own: Option<usize>,
        done: impl FnOnce(StageHistograms) + Send + 'static,
    ) -> Option<StageShare> {
        let mut own_share = None;
        for (core, share) in StageShare::split(self.controls.len(), done).into_iter().enumerate() {
            if Some(core) == own {
                own_share = Some(share);
            } else if self.controls[core].send(Control::Stages { share, reset }).is_ok() {
                // A core whose task has gone drops the share unread: it adds nothing.
                self.routes[core].ring();
            }
        }
        own_share
    }
}

/// One core's part in a stage report. The report completes when the last
/// share is added or dropped, so a core that stopped cannot hold it up.
pub(crate) struct StageShare {
    gather: Option<Arc<Mutex<Gather>>>,
}

struct Gather {
    merged: StageHistograms,
    done: Option<Box<dyn FnOnce(StageHistograms) + Send>>,
}

impl StageShare {
    fn split(cores: usize, done: impl FnOnce(StageHistograms) + Send + 'static) -> Vec<StageShare> {
        let gather = Arc::new(Mutex::new(Gather { merged: StageHistograms::new(), done: Some(Box::new(done)) }));
        (0..cores).map(|_| StageShare { gather: Some(gather.clone()) }).collect()
    }

    /// Adds a core's histograms to the report, then resets them if asked.
    pub fn add(self, hists: &mut StageHistograms, reset: bool) {
        if let Some(g) = &self.gather {
            g.lock().expect("stage report").merged.merge(hists);
        }
        if reset {
            hists.reset();
        }
    }
}

impl Drop for StageShare {
    fn drop(&mut self) {
        // Exactly one share's drop gets the last reference.
        if let Some(g) = self.gather.take().and_then(Arc::into_inner) {
            let mut g = g.into_inner().expect("stage report");
            if let Some(done) = g.done.take() {
                done(g.merged);
            }
        }
    }
}

/// Control messages from [`Server`] to each core's server task.
pub(crate) enum Control {
    /// Stop accepting and reading, answer what is in flight (waiting at
    /// most `drain`), close every connection, then report.
    Stop { drain: Duration, done: mpsc::SyncSender<()> },
    /// The core's server counters, now.
    Stats { reply: mpsc::SyncSender<net::NetStats> },
    /// Add the core's stage histograms to a report (then reset them if asked).
    Stages { share: StageShare, reset: bool },
}

/// A running server: an engine plus listeners on every core.
pub struct Server {
    engine: Option<Arc<Engine>>,
    local_addr: SocketAddr,
    core_addrs: Vec<String>,
    routes: Vec<CoreRoute>,
    admin_thread: Option<JoinHandle<()>>,
    shared: Arc<Shared>,
}

/// How long a stopping server waits for in-flight requests to be answered.
const STOP_DRAIN: Duration = Duration::from_secs(10);
/// Pending connections the kernel queues per listener.
const LISTEN_BACKLOG: i32 = 4096;

impl Server {
    /// Opens the data directory, starts the cores and accepts on `cfg.listen`
    /// (port 0 picks a free port: see [`Server::local_addr`]).
    pub fn start(dir: &Path, mut engine_cfg: EngineConfig, cfg: ServerConfig) -> Result<Server> {
        cfg.validate()?;
        raise_open_files_limit(cfg.connections_max);
        let cores = engine_cfg.cores.max(1);
        // One receive-side op and one send per connection, plus accepts; the
        // kernel spreads connections unevenly, so any core may get them all.
        engine_cfg.net_ops_per_core = 2 * cfg.connections_max + 4 * cores + 64;
        engine_cfg.reply_bufs_per_core = cfg.reply_bufs_per_core;
        let batch_bytes_max = engine_cfg.batch_bytes_max;
        let engine = Arc::new(Engine::open(dir, engine_cfg)?);
        if cfg.listen.port() != 0 {
            // Another process's SO_REUSEPORT listener on this port would
            // silently share our connections: bind once without it first,
            // so that an address in use is refused, loudly. Bind only, never
            // listen: the kernel would complete the handshakes of clients
            // retrying while we start into the probe's queue, and closing
            // it would reset them (ECONNRESET). Unlistened, they are refused.
            drop(bind(cfg.listen, false)?);
        }
        let mut shared_listeners = Vec::new();
        let mut local_addr = cfg.listen;
        for _ in 0..cores {
            let l = listen(local_addr, true)?;
            local_addr = l.local_addr().ok().and_then(|a| a.as_socket()).unwrap_or(local_addr);
            shared_listeners.push(l);
        }
        let mut direct_listeners = Vec::new();
        let mut core_addrs = Vec::new();
        for _ in 0..cores {
            if cfg.direct_ports {
                let l = listen(SocketAddr::new(local_addr.ip(), 0), false)?;
                core_addrs.push(l.local_addr().ok().and_then(|a| a.as_socket()).map(|a| a.to_string()).unwrap_or_default());
                direct_listeners.push(Some(l));
            } else {
                core_addrs.push(String::new());
                direct_listeners.push(None);
            }
        }
        let routes = engine.routes();
        let (admin_tx, admin_rx) = mpsc::channel();
        let mut inboxes = Vec::new();
        let mut inbox_rxs = Vec::new();
        let mut controls = Vec::new();
        let mut control_rxs = Vec::new();
        for _ in 0..cores {
            let (tx, rx) = mpsc::channel();
            inboxes.push(tx);
            inbox_rxs.push(rx);
            let (tx, rx) = mpsc::channel();
            controls.push(tx);
            control_rxs.push(rx);
        }
        let shared = Arc::new(Shared {
            cfg: cfg.clone(),
            routes: routes.clone(),
            inboxes,
            directory: engine.directory(),
            log_count: engine.log_count(),
            batch_bytes_max,
            admin: Mutex::new(admin_tx),
            core_addrs: core_addrs.clone(),
            connections: AtomicUsize::new(0),
            controls,
        });
        let admin_thread = admin::spawn(engine.clone(), admin_rx)?;
        let per_core = inbox_rxs.into_iter().zip(control_rxs).zip(shared_listeners).zip(direct_listeners);
        for (core_id, (((inbox, ctl_rx), shared_l), direct_l)) in per_core.enumerate() {
            let mut listeners = vec![shared_l];
            listeners.extend(direct_l);
            let task = net::NetCore::new(core_id, shared.clone(), inbox, ctl_rx, listeners.into_iter().map(|s| s.into()).collect());
            routes[core_id].attach(Box::new(task))?;
        }
        Ok(Server { engine: Some(engine), local_addr, core_addrs, routes, admin_thread: Some(admin_thread), shared })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Each core's own address (empty strings when direct ports are off).
    pub fn core_addrs(&self) -> &[String] {
        &self.core_addrs
    }

    /// The embedded engine, for in-process use beside the network.
    pub fn engine(&self) -> &Engine {
        self.engine.as_ref().expect("engine runs until shutdown")
    }

    /// Connections open now, across all cores.
    pub fn connections(&self) -> usize {
        self.shared.connections.load(Ordering::Relaxed)
    }

    /// Each core's server counters (connections, bytes held, requests), in
    /// core order; what audits and tests compare against a baseline.
    pub fn net_stats(&self) -> Vec<net::NetStats> {
        let mut waits = Vec::new();
        for (ctl, route) in self.shared.controls.iter().zip(&self.routes) {
            let (reply, wait) = mpsc::sync_channel(1);
            if ctl.send(Control::Stats { reply }).is_ok() {
                route.ring();
                waits.push(wait);
            }
        }
        waits.into_iter().filter_map(|w| w.recv().ok()).collect()
    }

    /// Per-stage latency of the produce requests (and fetches) served so
    /// far, merged across cores, one row per stage in
    /// [`crate::stats::STAGES`] order. With `reset`, every core clears its
    /// histograms after reading them (a load generator drops its warm-up so).
    pub fn stage_latency(&self, reset: bool) -> Vec<StageLatency> {
        let (tx, rx) = mpsc::sync_channel(1);
        let own = self.shared.gather_stages(reset, None, move |h| drop(tx.send(h.summary())));
        debug_assert!(own.is_none());
        rx.recv().unwrap_or_else(|_| StageHistograms::new().summary())
    }

    /// Stops accepting, answers in-flight requests (durable appends are
    /// acknowledged), closes every connection, checkpoints every log and
    /// stops the cores, so the next start scans nothing.
    pub fn shutdown(mut self) -> Result<()> {
        self.stop()
    }

    fn stop(&mut self) -> Result<()> {
        if self.engine.is_some() && tracing::enabled!(tracing::Level::DEBUG) {
            tracing::debug!("per-stage latency of produce requests:\n{}", crate::stats::format_table(&self.stage_latency(false)));
        }
        let Some(engine) = self.engine.take() else { return Ok(()) };
        let mut waits = Vec::new();
        for (ctl, route) in self.shared.controls.iter().zip(&self.routes) {
            let (done, wait) = mpsc::sync_channel(1);
            if ctl.send(Control::Stop { drain: STOP_DRAIN, done }).is_ok() {
                route.ring();
                waits.push(wait);
            }
        }
        for w in waits {
            // An Err means the core's task is gone already: nothing to wait for.
            let _ = w.recv();
        }
        if let Ok(mut tx) = self.shared.admin.lock() {
            // Replace the only sender, so the admin thread sees the end.
            *tx = mpsc::channel().0;
        }
        if let Some(t) = self.admin_thread.take() {
            let _ = t.join();
        }
        match Arc::try_unwrap(engine) {
            Ok(engine) => engine.shutdown(),
            Err(_) => Err(StromError::Unsupported("engine still referenced at server stop".into())),
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Err(e) = self.stop() {
            tracing::error!(%e, "server stop");
        }
    }
}

/// Descriptors a server needs beside its connections: listeners, segment
/// files, the ring, eventfds, the offsets and catalog files.
const FDS_BESIDE_CONNECTIONS: u64 = 256;

/// Every connection is a descriptor, and the usual soft limit (1024) is far
/// below `connections_max`: past it accepts fail with EMFILE and accepting
/// pauses, so the configured cap would never be reached. Raises the soft
/// limit to the hard one, and warns when even that is too low.
fn raise_open_files_limit(connections_max: usize) {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    let want = connections_max as u64 + FDS_BESIDE_CONNECTIONS;
    let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE) else { return };
    if soft < want.min(hard) && setrlimit(Resource::RLIMIT_NOFILE, want.min(hard), hard).is_err() {
        tracing::warn!(soft, hard, "could not raise RLIMIT_NOFILE");
    }
    if hard < want {
        tracing::warn!(
            hard,
            connections_max,
            "RLIMIT_NOFILE's hard limit is below connections_max plus {FDS_BESIDE_CONNECTIONS}: connections past it wait (raise it with ulimit -Hn)"
        );
    }
}

/// A listening TCP socket; `shared` ones use SO_REUSEPORT so that every
/// core can listen on the same address.
fn listen(addr: SocketAddr, shared: bool) -> Result<Socket> {
    let s = bind(addr, shared)?;
    s.listen(LISTEN_BACKLOG).map_err(|e| StromError::io(IoOp::Open, format!("listen {addr}"), &e))?;
    Ok(s)
}

/// A TCP socket bound to `addr`, as [`listen`] sets it up, not yet listening.
fn bind(addr: SocketAddr, shared: bool) -> Result<Socket> {
    let err = |e: std::io::Error| StromError::io(IoOp::Open, format!("listen {addr}"), &e);
    let s = Socket::new(Domain::for_address(addr), Type::STREAM.cloexec(), Some(Protocol::TCP)).map_err(err)?;
    s.set_reuse_address(true).map_err(err)?;
    // Accepted sockets inherit TCP_NODELAY from the listener (Linux copies
    // it). Without it, a small pipelined reply waits behind an unacknowledged
    // one for the peer's delayed ACK: tens of milliseconds.
    s.set_tcp_nodelay(true).map_err(err)?;
    if shared {
        s.set_reuse_port(true).map_err(err)?;
    }
    s.bind(&addr.into()).map_err(err)?;
    Ok(s)
}
