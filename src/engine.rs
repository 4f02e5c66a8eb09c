//! The engine: starts one pinned core thread per configured core and offers
//! the embedded API (an application appends and reads in-process, with no
//! server), which maps onto the [`Broker`]'s commands like a codec does.
//!
//! Which core owns a partition is the broker's [`Router`]. Requests reach a
//! core through a bounded mailbox (a full mailbox blocks the caller: that
//! is the push back) and a doorbell: the core sets `sleeping` before it
//! blocks in the ring, and a sender that finds it set rings the core's
//! eventfd. So a busy core is never interrupted by a syscall per request.
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::mpsc::{self, Receiver, SyncSender};
use std::thread::JoinHandle;
use std::time::Instant;

use crate::broker::{Broker, Limits, OffsetQuery, Router, StreamStart};
use crate::buf::registration::{CoreBuffers, RegistrationPlan};
use crate::catalog::{Catalog, IndexNames, TopicRetention};
use crate::config::EngineConfig;
use crate::core::mailbox::{self, CoreRoute, TaskSender};
use crate::core::task::{CoreTask, TaskNeeds};
use crate::core::tick::Ticker;
use crate::core::{AppendAck, Core, CoreSpec, PartitionStat, Reply, Request};
use crate::error::{IoOp, Result, StromError};
use crate::io::Io;
use crate::io::uring::UringIo;
use crate::log::recovery::RecoveryReport;
use crate::metrics::Metrics;
use crate::partition::Pid;
use crate::platform;
use crate::read::{Fetch, ReadResult};

struct CoreHandle {
    route: CoreRoute,
    tasks: TaskSender<UringIo>,
    thread: Option<JoinHandle<Option<Metrics>>>,
}

/// An answer that will arrive later (a pipelined append, for one).
pub struct Pending<T> {
    rx: Receiver<Result<T>>,
}

impl<T> Pending<T> {
    /// Blocks until the answer arrives.
    pub fn wait(self) -> Result<T> {
        self.rx.recv().unwrap_or(Err(StromError::ShuttingDown))
    }
}

pub(crate) fn pending<T: Send + 'static>() -> (Reply<T>, Pending<T>) {
    let (tx, rx) = mpsc::sync_channel(1);
    (Box::new(move |r| drop(tx.send(r))), Pending { rx })
}

/// A topic as listed by [`Engine::topics`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicInfo {
    pub name: String,
    pub partitions: u32,
}

/// An open data directory with its core threads running.
pub struct Engine {
    dir: PathBuf,
    cfg: EngineConfig,
    broker: Arc<Broker>,
    cores: Vec<CoreHandle>,
    reports: Vec<RecoveryReport>,
    registration: Registration,
    /// Held for the engine's lifetime: a second process on the same
    /// directory would corrupt it. A read-only engine takes none.
    _lock: Option<DirLock>,
    /// A read-only engine's follow thread.
    follower: Option<crate::follow::Follower>,
}

type DirLock = nix::fcntl::Flock<std::fs::File>;

impl Engine {
    /// Opens (or creates) `dir`: probes the platform, recovers every log,
    /// and starts the cores. Fails with a one-line cause and fix when the
    /// platform cannot run Strom, or names the position of any corruption.
    pub fn open(dir: &Path, cfg: EngineConfig) -> Result<Engine> {
        Engine::open_for_tasks(dir, cfg, TaskNeeds::default())
    }

    /// Opens `dir` for a server whose per-core tasks need `needs` (registered
    /// reply buffers, op-table slots): settings of the server's own
    /// configuration, never of the engine's.
    pub(crate) fn open_for_tasks(dir: &Path, cfg: EngineConfig, needs: TaskNeeds) -> Result<Engine> {
        if cfg.read_only {
            return Engine::open_following(dir, cfg, needs);
        }
        // Every check that can refuse a start runs before anything is
        // created or written; what a later failure created in a directory
        // that was new is removed (`DirBefore`), so a refused start leaves
        // the directory as it was (and a new one free to get another log count).
        cfg.validate()?;
        platform::probe_io_uring()?;
        let before = DirBefore::look(dir);
        platform::probe_data_dir(dir)?;
        let lock = lock_dir(dir).inspect_err(|_| before.undo_unlocked(dir))?;
        Engine::start(dir, cfg, needs, lock, before)
    }

    /// Opens `dir`, which another process writes with the embedded engine
    /// (or a server), to serve it read-only: every log up to what its
    /// writer made durable, following what it adds (`src/follow.rs`). Takes
    /// no lock and writes nothing (its cores' rings refuse any write); reads
    /// answer as on the writer, writes are refused ([`StromError::ReadOnly`]).
    pub fn open_read_only(dir: &Path, cfg: EngineConfig) -> Result<Engine> {
        Engine::open_following(dir, EngineConfig { read_only: true, ..cfg }, TaskNeeds::default())
    }

    fn open_following(dir: &Path, cfg: EngineConfig, needs: TaskNeeds) -> Result<Engine> {
        // A follower never writes: its logs' buffers only keep the newest
        // bytes it followed for reads at the tail (8 MiB a log by default),
        // not the 64 MiB a writer keeps.
        let cfg = EngineConfig { write_bufs_per_log: cfg.write_depth + 6, ..cfg };
        cfg.validate()?;
        platform::probe_io_uring()?;
        // The marks before the catalog: a batch below a mark was appended
        // after its topic was created, so the catalog read next knows its
        // topic (the first read only learns how many logs there are).
        let log_count = Catalog::open_read_only(dir)?.log_count();
        let marks: HashMap<u32, crate::log::mark::DurableMark> =
            (0..log_count).filter_map(|log| crate::follow::read_mark(dir, log).map(|m| (log, m))).collect();
        let mut engine = Engine::start_read_only(dir, cfg, needs, Catalog::open_read_only(dir)?, Some(&marks))?;
        engine.follower = Some(crate::follow::Follower::start(dir, &marks, log_count, engine.broker.clone())?);
        tracing::info!(dir = %dir.display(), logs = log_count, "following a data directory read-only");
        Ok(engine)
    }

    /// A read-only engine with no data directory: no topics, no logs, no
    /// follow thread; what a server serving archives alone runs on. `dir`
    /// (the archive directory) is only named: nothing is read or written there.
    pub(crate) fn open_empty_for_tasks(dir: &Path, cfg: EngineConfig, needs: TaskNeeds) -> Result<Engine> {
        let cfg = EngineConfig { read_only: true, write_bufs_per_log: cfg.write_depth + 2, ..cfg };
        cfg.validate()?;
        platform::probe_io_uring()?;
        Engine::start_read_only(dir, cfg, needs, Catalog::empty(dir), None)
    }

    /// Starts the cores of a read-only engine: each opens its logs up to
    /// `marks` (None: no logs at all).
    fn start_read_only(
        dir: &Path,
        cfg: EngineConfig,
        needs: TaskNeeds,
        catalog: Catalog,
        marks: Option<&HashMap<u32, crate::log::mark::DurableMark>>,
    ) -> Result<Engine> {
        let mut cfg = cfg;
        let router = Router::new(catalog.log_count(), cfg.cores);
        let registration = Registration::plan(&cfg, router, needs);
        tracing::info!("{registration}");
        // As a writer's: every core registers its share of what the limit allows.
        cfg.registered_bytes_max = registration.registered_bytes_max;
        let (handles, reports, first_err) = start_cores(dir, &cfg, router, needs, (&catalog.pids(), &catalog.indexed()), marks);
        let routes = handles.iter().map(|h| h.route.clone()).collect();
        let broker = Arc::new(Broker::new(router, catalog, routes, &cfg));
        let mut engine = Engine { dir: dir.to_path_buf(), cfg, broker, cores: handles, reports, registration, _lock: None, follower: None };
        if let Some(e) = first_err {
            let _ = engine.stop_cores(&mut Vec::new());
            return Err(e);
        }
        Ok(engine)
    }

    /// Starts the cores of a locked directory; on failure removes what this
    /// start created in a new directory, while still holding the lock.
    fn start(dir: &Path, mut cfg: EngineConfig, needs: TaskNeeds, lock: DirLock, before: DirBefore) -> Result<Engine> {
        let catalog = match Catalog::open_or_create(dir, cfg.logs_on_create) {
            Ok(c) => c,
            Err(e) => {
                before.undo(dir);
                return Err(e);
            }
        };
        let router = Router::new(catalog.log_count(), cfg.cores);
        let registration = Registration::plan(&cfg, router, needs);
        tracing::info!("{registration}");
        // Every core registers its share of what the limit allows.
        cfg.registered_bytes_max = registration.registered_bytes_max;
        let (handles, reports, first_err) =
            start_cores(dir, &cfg, router, needs, (&catalog.pids(), &catalog.indexed()), Some(&HashMap::new()));
        let routes = handles.iter().map(|h| h.route.clone()).collect();
        let broker = Arc::new(Broker::new(router, catalog, routes, &cfg));
        let mut engine =
            Engine { dir: dir.to_path_buf(), cfg, broker, cores: handles, reports, registration, _lock: Some(lock), follower: None };
        if let Some(e) = first_err {
            if let Err(stop) = engine.stop_cores(&mut Vec::new()) {
                tracing::warn!(%stop, "stopping the cores that started");
            }
            before.undo(dir);
            return Err(e);
        }
        Ok(engine)
    }

    /// What the cores registered of their buffers, and why not more.
    pub fn registration(&self) -> &Registration {
        &self.registration
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn config(&self) -> &EngineConfig {
        &self.cfg
    }

    /// What this engine accepts: the same values a server on it answers
    /// in the ServerInfo api (its largest batch, among them).
    pub fn limits(&self) -> Limits {
        self.broker.limits()
    }

    pub fn log_count(&self) -> u32 {
        self.broker.router().log_count()
    }

    /// What recovery did for each log at open.
    pub fn recovery_reports(&self) -> &[RecoveryReport] {
        &self.reports
    }

    /// The broker every request goes through: the server's codecs reach
    /// the cores through it too.
    pub fn broker(&self) -> &Arc<Broker> {
        &self.broker
    }

    /// The core that owns partition `pid`.
    pub fn core_index(&self, pid: Pid) -> usize {
        self.broker.router().core_of(pid)
    }

    /// Creates a topic with `partitions` partitions, durably. Must not be
    /// called on a core thread (it waits for every core).
    pub fn create_topic(&self, name: &str, partitions: u32) -> Result<()> {
        self.broker.create_topic(name, partitions, TopicRetention::default(), &[])
    }

    /// Creates a topic with its own retention (None in a setting follows
    /// the engine's default; see [`TopicRetention`]).
    pub fn create_topic_with(&self, name: &str, partitions: u32, retention: TopicRetention) -> Result<()> {
        self.broker.create_topic(name, partitions, retention, &[])
    }

    /// Creates a topic whose records carry the named indices `indices` (at
    /// most [`crate::catalog::INDICES_MAX`]): every record a header per
    /// index, named after it, holding an 8-byte little-endian i64, values
    /// never decreasing within a partition (docs/FORMAT.md "Named indices").
    pub fn create_topic_indexed(&self, name: &str, partitions: u32, retention: TopicRetention, indices: &[String]) -> Result<()> {
        self.broker.create_topic(name, partitions, retention, indices)
    }

    /// Changes a topic's retention settings (None leaves one as it is); the
    /// next retention pass, within a second, applies them.
    pub fn alter_topic(&self, name: &str, ms: Option<Option<u64>>, bytes: Option<Option<u64>>) -> Result<TopicRetention> {
        self.broker.alter_topic(name, ms, bytes).map(|t| t.retention)
    }

    /// Deletes a topic. Readers in progress (long polls among them) get
    /// `UnknownPartition`.
    pub fn delete_topic(&self, name: &str) -> Result<()> {
        self.broker.delete_topic(name).map(|_| ())
    }

    pub fn topics(&self) -> Vec<TopicInfo> {
        self.broker.topics().iter().map(|(name, t)| TopicInfo { name: name.clone(), partitions: t.partitions }).collect()
    }

    /// Appends one RecordBatch v2 and blocks until it is durable under the
    /// fsync policy. The batch is validated here, on the caller's thread.
    pub fn append(&self, topic: &str, partition: u32, batch: Vec<u8>) -> Result<AppendAck> {
        self.append_async(topic, partition, batch)?.wait()
    }

    /// Appends without waiting: call [`Pending::wait`] later. Appends to one
    /// partition are stored and acknowledged in the order they were made.
    pub fn append_async(&self, topic: &str, partition: u32, batch: Vec<u8>) -> Result<Pending<AppendAck>> {
        let (reply, wait) = pending();
        self.broker.append(topic, partition, batch, reply)?;
        Ok(wait)
    }

    /// Reads whole batches starting with the one holding `offset`, up to
    /// about `max_bytes` (at least one batch). Sees only durable data.
    pub fn read(&self, topic: &str, partition: u32, offset: u64, max_bytes: usize) -> Result<ReadResult> {
        let (reply, wait) = pending();
        self.broker.read(topic, partition, offset, max_bytes, reply)?;
        wait.wait()
    }

    /// Subscribes to a partition from `start`: an iterator of reads that
    /// each wait at the partition's end for new batches (woken when they
    /// are durable, as a long poll is: nothing polls) and hold at most
    /// `credit_bytes` of batches, or one batch if it alone is larger. Its
    /// credit is granted again as the caller takes each read, so nothing is
    /// read ahead of the caller: a caller that stops asking costs nothing.
    /// The same start kinds and credit rule as the Subscribe api; an index
    /// start is refused (no named indices yet).
    pub fn subscribe(&self, topic: &str, partition: u32, start: StreamStart<'_>, credit_bytes: usize) -> Result<Subscription<'_>> {
        let stat = self.partition_stat(topic, partition)?;
        let offset = match start {
            StreamStart::Earliest => stat.start_offset,
            StreamStart::Latest => stat.end_offset,
            StreamStart::Offset(o) => o,
            StreamStart::Time(ms) => self.offset_for_time(topic, partition, ms)?.unwrap_or(stat.end_offset),
            StreamStart::Index { .. } => {
                return Err(StromError::InvalidArgument("a subscription from an index value needs named indices, not served yet".into()));
            }
        };
        Ok(Subscription { engine: self, topic: topic.to_string(), partition, offset, credit_bytes: credit_bytes.max(1) })
    }

    /// The first offset whose record timestamp is at least `ts_ms`.
    pub fn offset_for_time(&self, topic: &str, partition: u32, ts_ms: i64) -> Result<Option<u64>> {
        let (reply, wait) = pending();
        self.broker.offset(topic, partition, OffsetQuery::AtTime(ts_ms), reply)?;
        wait.wait()
    }

    /// The first offset whose value of the named index `index` is at least
    /// `value` (`strict`: above it); None while no durable record has one.
    /// A lookup scans at most about a stride of the partition's batches
    /// past the nearest entry ([`crate::partition::named`]).
    pub fn offset_for_index(&self, topic: &str, partition: u32, index: &str, value: i64, strict: bool) -> Result<Option<u64>> {
        let (reply, wait) = pending();
        let seek = crate::read::IndexSeek { name: index.to_string(), value, strict };
        self.broker.offset(topic, partition, OffsetQuery::AtIndex(seek), reply)?;
        wait.wait()
    }

    /// The bounds of a range of a partition's records (`from..=to`, by
    /// offset or by named index value), waiting up to `spec.wait_ns` for
    /// the range's end to exist (the answer says whether it still is open).
    /// The records are then read with [`Engine::read`] from `from` to `end`.
    pub fn query(&self, topic: &str, partition: u32, spec: crate::core::query::QuerySpec) -> Result<crate::core::query::QueryBounds> {
        let (reply, wait) = pending();
        self.broker.query(topic, partition, spec, reply)?;
        wait.wait()
    }

    /// Earliest and end offsets of a partition.
    pub fn partition_stat(&self, topic: &str, partition: u32) -> Result<PartitionStat> {
        let (reply, wait) = pending();
        self.broker.partition_stat(topic, partition, reply)?;
        wait.wait()
    }

    /// Every core's metrics registry ([`crate::metrics`]), in core order:
    /// what the core, its logs and its read path counted, with its gauges
    /// read now on the core's thread. A server's connection metrics are in
    /// [`crate::server::Server::metrics`].
    pub fn metrics(&self) -> Result<Vec<Metrics>> {
        self.broker.core_metrics()
    }

    /// Runs `task` on core `core`'s ring beside its logs (a server's connections).
    pub(crate) fn attach(&self, core: usize, task: Box<dyn CoreTask<UringIo>>) -> Result<()> {
        self.cores[core].tasks.attach(task)
    }

    /// Stops every core after its in-flight appends are durable and
    /// acknowledged, and checkpoints every log, so the next open scans nothing.
    pub fn shutdown(self) -> Result<()> {
        self.shutdown_report().map(|_| ())
    }

    /// [`Engine::shutdown`], and what the stop flushed: the log bytes
    /// written, records staged and checkpoints written from the moment it
    /// was asked until every core stopped.
    pub fn shutdown_report(mut self) -> Result<ShutdownReport> {
        // Read before the stop: the cores answer no more once stopped.
        let before = self.metrics().unwrap_or_default();
        let mut after = Vec::new();
        self.stop_cores(&mut after)?;
        let sum = |cores: &[Metrics], m: crate::metrics::Metric| cores.iter().map(|c| c.get(m)).sum::<u64>();
        use crate::metrics::Metric::{Checkpoints, LogBytesWritten, RecordsAppended};
        let delta = |m| sum(&after, m).saturating_sub(sum(&before, m));
        let (log_bytes_written, records, checkpoints) = (delta(LogBytesWritten), delta(RecordsAppended), delta(Checkpoints));
        Ok(ShutdownReport { log_bytes_written, records, checkpoints, connections_closed: 0 })
    }

    fn stop_cores(&mut self, stopped: &mut Vec<Metrics>) -> Result<()> {
        // The follow thread first: it sends to the cores.
        if let Some(mut f) = self.follower.take() {
            f.stop();
        }
        let mut result = Ok(());
        let mut waits = Vec::new();
        for core in &self.cores {
            let (reply, wait) = pending();
            if core.route.send(Request::Stop { reply }).is_ok() {
                waits.push(wait);
            }
        }
        for w in waits {
            if let Err(e) = w.wait() {
                result = Err(e);
            }
        }
        for core in &mut self.cores {
            match core.thread.take().map(JoinHandle::join) {
                Some(Ok(metrics)) => stopped.extend(metrics),
                Some(Err(_)) => result = Err(StromError::Unsupported("a core thread panicked".into())),
                None => {}
            }
        }
        result
    }
}

/// What a clean stop flushed ([`Engine::shutdown_report`]), for its log line.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ShutdownReport {
    /// Log bytes written (and made durable) from the stop until the cores stopped.
    pub log_bytes_written: u64,
    /// Records staged in that time (requests that were in flight).
    pub records: u64,
    /// Checkpoints written then (each log's final one).
    pub checkpoints: u64,
    /// Connections a server's stop closed (0 for an engine alone).
    pub connections_closed: u64,
}

impl Drop for Engine {
    fn drop(&mut self) {
        if self.cores.iter().any(|c| c.thread.is_some())
            && let Err(e) = self.stop_cores(&mut Vec::new())
        {
            tracing::error!(%e, "engine stop");
        }
    }
}

/// Lockable memory left for rings other than the cores' (the kernel counts
/// rings against RLIMIT_MEMLOCK too, per user): a load generator's or a
/// client's threads beside the engine. An eighth of the common 8 MiB.
const OTHER_RINGS_BYTES: usize = 1 << 20;
/// Under a limit, the share of it left to other processes of the same
/// user, and the most left. The limit is per user, and a process cannot see
/// what others hold: a second server, a test beside a test, or a restart
/// while the old rings are still being freed must still find room for
/// their rings (run as a user with 8 MiB, tests/server.rs's servers running
/// two at a time failed to set up a ring when the first registered all it
/// could). So a process takes a quarter of a small limit, and everything
/// but 16 MiB of a large one.
const OTHERS_SHARE_NUM: usize = 3;
const OTHERS_SHARE_DEN: usize = 4;
const OTHERS_BYTES_MAX: usize = 16 << 20;

/// What a process under a `limit_bytes` RLIMIT_MEMLOCK leaves to others
/// (see [`OTHERS_SHARE_NUM`]), never less than [`OTHER_RINGS_BYTES`].
fn left_for_others(limit_bytes: usize) -> usize {
    (limit_bytes / OTHERS_SHARE_DEN * OTHERS_SHARE_NUM).clamp(OTHER_RINGS_BYTES, OTHERS_BYTES_MAX)
}

/// What the cores register of their buffers: as much as the process may
/// pin (RLIMIT_MEMLOCK, unless it holds CAP_IPC_LOCK) and the configuration
/// allows, each core an equal share (`buf::registration` says in what
/// order). Pinned memory is charged per user across every ring, so it is
/// the sum over the cores that must fit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Registration {
    /// Every buffer of every core, registered or not.
    pub buffer_bytes: usize,
    /// What the cores register together.
    pub registered_bytes: usize,
    /// The budget the cores share (None: no limit, all registered).
    pub registered_bytes_max: Option<usize>,
    /// What set the budget.
    pub limited_by: String,
}

impl Registration {
    fn plan(cfg: &EngineConfig, router: Router, needs: TaskNeeds) -> Registration {
        let logs_per_core = router.log_count().div_ceil(router.cores() as u32) as usize;
        let per_core = CoreBuffers::of(cfg, logs_per_core, needs.reply_bufs);
        let buffer_bytes = per_core.total_bytes() * cfg.cores;
        let ops_max = cfg.ring_entries as usize - 1 + needs.net_ops;
        let ring_bytes = UringIo::ring_bytes(cfg.ring_entries, ops_max) * cfg.cores;
        let lockable = platform::lockable_memory(buffer_bytes + ring_bytes + OTHER_RINGS_BYTES);
        // The rings are pinned first, and other processes of this user (a
        // client's rings, loadgen's, a second server) need room after the
        // buffers took theirs.
        let limit = lockable.bytes().map(|b| {
            let b = usize::try_from(b).unwrap_or(usize::MAX);
            b.saturating_sub(ring_bytes + left_for_others(b))
        });
        let (registered_bytes_max, limited_by) = match (cfg.registered_bytes_max, limit) {
            (Some(asked), Some(lim)) if lim < asked => (Some(lim), lockable.to_string()),
            (Some(asked), _) => (Some(asked), format!("registered_bytes_max {}", platform::human_bytes(asked as u64))),
            (None, lim) => (lim, lockable.to_string()),
        };
        let plan = RegistrationPlan::for_core(&per_core, registered_bytes_max, cfg.cores);
        let registered_bytes = plan.registered_bytes(&per_core) * cfg.cores;
        Registration { buffer_bytes, registered_bytes, registered_bytes_max, limited_by }
    }

    /// Some buffers go unregistered.
    pub fn is_cut(&self) -> bool {
        self.registered_bytes < self.buffer_bytes
    }
}

impl std::fmt::Display for Registration {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let (registered, total) = (platform::human_bytes(self.registered_bytes as u64), platform::human_bytes(self.buffer_bytes as u64));
        if !self.is_cut() {
            return write!(f, "registered all {total} of buffers ({})", self.limited_by);
        }
        write!(
            f,
            "registered {registered} of {total} of buffers ({}); the rest use unregistered I/O, which pins pages \
             per operation and copies replies (raise the limit to register all: ulimit -l {})",
            self.limited_by,
            self.buffer_bytes.div_ceil(1024)
        )
    }
}

/// Whether the data directory existed, and held anything, before a start,
/// so that a failed start removes only what it created.
#[derive(Debug, Clone)]
struct DirBefore {
    /// The outermost directory of the path that did not exist (the data
    /// directory itself, or a parent of it).
    created: Option<PathBuf>,
    empty: bool,
}

impl DirBefore {
    fn look(dir: &Path) -> DirBefore {
        let created = dir.ancestors().take_while(|d| !d.as_os_str().is_empty() && !d.exists()).last().map(Path::to_path_buf);
        let empty = std::fs::read_dir(dir).map_or(true, |mut entries| entries.next().is_none());
        DirBefore { created, empty }
    }

    /// Removes what a failed start created, under the directory's lock: a
    /// directory that was not there goes (with the parents made for it),
    /// one that was empty is emptied. One that held data is never touched.
    fn undo(&self, dir: &Path) {
        let removed = match &self.created {
            Some(top) => std::fs::remove_dir_all(top),
            None if self.empty => std::fs::read_dir(dir).and_then(|entries| {
                entries.map(|e| e.map(|e| e.path())).try_for_each(|p| {
                    let p = p?;
                    if p.is_dir() { std::fs::remove_dir_all(&p) } else { std::fs::remove_file(&p) }
                })
            }),
            None => Ok(()),
        };
        if let Err(e) = removed {
            tracing::warn!(dir = %dir.display(), %e, "could not remove what the failed start created");
        }
    }

    /// Without the lock (it could not be taken) only directories that were
    /// not there and are still empty are removed: anything else may be
    /// another process's.
    fn undo_unlocked(&self, dir: &Path) {
        let Some(top) = &self.created else { return };
        for d in dir.ancestors().take_while(|d| d.starts_with(top)) {
            let _ = std::fs::remove_dir(d);
        }
    }
}

/// Starts every core at once (restart time is the slowest core's recovery,
/// not the sum) and waits until each serves or failed; the first failure
/// comes back beside the cores that started.
fn start_cores(
    dir: &Path,
    cfg: &EngineConfig,
    router: Router,
    needs: TaskNeeds,
    (pids, indexed): (&[Pid], &HashMap<Pid, IndexNames>),
    marks: Option<&HashMap<u32, crate::log::mark::DurableMark>>,
) -> (Vec<CoreHandle>, Vec<RecoveryReport>, Option<StromError>) {
    let mut handles = Vec::new();
    let mut reports = Vec::new();
    let mut first_err = None;
    let mut starting = Vec::new();
    // Core i runs on the i-th CPU this process may use (so `taskset -c
    // 2,3` puts cores 0 and 1 on CPUs 2 and 3), read before any core pins.
    let cpus = platform::allowed_cpus();
    // The stage clock's zero: every core's clock is shifted to count from
    // here, so that instants taken on different cores compare.
    let clock_epoch = Instant::now();
    for core_id in 0..router.cores() {
        let spec = CoreSpec {
            core_id,
            data_dir: dir.to_path_buf(),
            log_count: router.log_count(),
            pids: pids.iter().copied().filter(|&p| router.core_of(p) == core_id).collect(),
            indexed: indexed.iter().filter(|(p, _)| router.core_of(**p) == core_id).map(|(p, n)| (*p, n.clone())).collect(),
            // An engine with no data directory opens no log.
            logs: if marks.is_some() { router.logs_of(core_id) } else { Vec::new() },
            needs,
            marks: marks.into_iter().flatten().filter(|(l, _)| router.core_of_log(**l) == core_id).map(|(l, m)| (*l, *m)).collect(),
        };
        let cpu = cfg.pin_cores.then(|| cpus[core_id % cpus.len()]);
        match spawn_core(cfg.clone(), spec, cpu, clock_epoch) {
            Ok(s) => starting.push(s),
            Err(e) => {
                first_err = Some(e);
                break;
            }
        }
    }
    for s in starting {
        match s.ready() {
            Ok((h, r)) => {
                handles.push(h);
                reports.extend(r);
            }
            Err(e) => {
                first_err.get_or_insert(e);
            }
        }
    }
    (handles, reports, first_err)
}

fn lock_dir(dir: &Path) -> Result<DirLock> {
    std::fs::create_dir_all(dir).map_err(|e| StromError::io(IoOp::Create, dir, &e))?;
    let path = dir.join("lock");
    let f = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|e| StromError::io(IoOp::Open, &path, &e))?;
    nix::fcntl::Flock::lock(f, nix::fcntl::FlockArg::LockExclusiveNonblock).map_err(|_| {
        StromError::Unsupported(format!("{} is in use by another Strom process (lock held on {})", dir.display(), path.display()))
    })
}

type Ready = Result<(CoreRoute, TaskSender<UringIo>, Vec<RecoveryReport>)>;

/// A core thread that is recovering its logs.
struct StartingCore {
    thread: std::thread::JoinHandle<Option<Metrics>>,
    ready_rx: Receiver<Ready>,
}

impl StartingCore {
    /// Waits until the core has recovered and serves (or failed to start).
    fn ready(self) -> Result<(CoreHandle, Vec<RecoveryReport>)> {
        let (route, tasks, reports) =
            self.ready_rx.recv().unwrap_or_else(|_| Err(StromError::Unsupported("core thread died at start".into())))?;
        Ok((CoreHandle { route, tasks, thread: Some(self.thread) }, reports))
    }
}

fn spawn_core(cfg: EngineConfig, spec: CoreSpec, cpu: Option<usize>, clock_epoch: Instant) -> Result<StartingCore> {
    let (ready_tx, ready_rx) = mpsc::sync_channel::<Ready>(1);
    let name = format!("strom-core-{}", spec.core_id);
    let thread = std::thread::Builder::new()
        .name(name)
        .spawn(move || core_main(cfg, spec, cpu, clock_epoch, ready_tx))
        .map_err(|e| StromError::io(IoOp::Create, "thread", &e))?;
    Ok(StartingCore { thread, ready_rx })
}

/// Runs a core until it stops; returns its registry as it stopped (None if
/// it never opened), from which the shutdown tells what the stop flushed.
fn core_main(cfg: EngineConfig, spec: CoreSpec, cpu: Option<usize>, clock_epoch: Instant, ready: SyncSender<Ready>) -> Option<Metrics> {
    if let Some(cpu) = cpu
        && let Err(e) = platform::pin_current_thread(cpu)
    {
        tracing::warn!(core = spec.core_id, %e, "could not pin core thread");
    }
    let ops_max = cfg.ring_entries as usize - 1 + spec.needs.net_ops;
    let capacity = cfg.mailbox_capacity;
    let opened = UringIo::with_ops_max(cfg.ring_entries, ops_max).and_then(|mut io| {
        if cfg.read_only {
            io.forbid_writes();
        }
        let waker = io.waker();
        Core::open(io, cfg, spec).map(|(core, reports)| (core, waker, reports))
    });
    let (mut core, mut mailbox) = match opened {
        Ok((mut core, waker, reports)) => {
            // The ring's clock started after the epoch; both are CLOCK_MONOTONIC,
            // so the difference read once holds for the engine's life.
            let since_epoch_ns = clock_epoch.elapsed().as_nanos() as u64;
            core.set_clock_offset_ns(since_epoch_ns.saturating_sub(core.io.now_ns()));
            let (route, tasks, mailbox) = mailbox::channel(capacity, waker);
            let _ = ready.send(Ok((route, tasks, reports)));
            (core, mailbox)
        }
        Err(e) => {
            let _ = ready.send(Err(e));
            return None;
        }
    };
    if let Err(e) = Ticker::default().run(&mut core, &mut mailbox) {
        tracing::error!(core = core.spec().core_id, %e, "core stopped on a ring failure");
    }
    Some(core.metrics())
}

/// How long one read of a [`Subscription`] waits at the partition's end
/// before it is asked again (the caller sees nothing of it).
const SUBSCRIBE_WAIT_NS: u64 = 30_000_000_000;

/// An in-process subscription ([`Engine::subscribe`]): each `next` reads
/// the batches after the last read, waiting for them if there are none yet.
pub struct Subscription<'e> {
    engine: &'e Engine,
    topic: String,
    partition: u32,
    /// Where the next read starts.
    offset: u64,
    credit_bytes: usize,
}

impl Subscription<'_> {
    /// Where the next read starts: one past the last record returned.
    pub fn next_offset(&self) -> u64 {
        self.offset
    }
}

impl Iterator for Subscription<'_> {
    /// Whole batches from the subscription's position, as [`Engine::read`]
    /// returns them (the first may begin before it). An error (the topic
    /// deleted, the offset no longer retained) is returned each time.
    type Item = Result<ReadResult>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            let (reply, wait) = pending();
            let f = Fetch { offset: self.offset, max_bytes: self.credit_bytes, max_wait_ns: SUBSCRIBE_WAIT_NS };
            let read = self.engine.broker.read_waiting(&self.topic, self.partition, f, reply).and_then(|()| wait.wait());
            match read {
                Ok(r) if r.batches.len() > r.headroom_bytes => {
                    self.offset = r.next_offset;
                    return Some(Ok(r));
                }
                // The wait lapsed with nothing new: wait again.
                Ok(_) => continue,
                Err(e) => return Some(Err(e)),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    // Proves: under the common 8 MiB limit a process leaves three quarters
    // of it to other processes of its user, under a large one at most
    // 16 MiB, and never less than room for other rings.
    #[test]
    fn a_limited_process_leaves_room_for_others() {
        assert_eq!(super::left_for_others(8 << 20), 6 << 20);
        assert_eq!(super::left_for_others(1 << 30), 16 << 20);
        assert_eq!(super::left_for_others(1 << 20), 1 << 20);
    }
}
