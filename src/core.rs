//! One core: its logs, its partitions, and its tick.
//!
//! A tick is: reap completions and act on them (retire commits, acknowledge,
//! continue reads); take requests (stage appends into the filling commit,
//! start reads); plan (seal and submit writes, fdatasyncs, disk reads,
//! checkpoints); then submit once and wait. Nothing is written or replied in
//! direct reaction to a single request: everything that arrives in a tick
//! goes out together (group commit).
//!
//! The core is generic over [`Io`], so the simulator drives exactly this code.
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::path::PathBuf;
use std::time::Duration;

use slab::Slab;

use crate::buf::{AlignedBuf, BLOCK_BYTES, align_down, align_up};
use crate::config::{EngineConfig, FsyncPolicy};
use crate::error::{Result, StromError};
use crate::io::{Completion, Io, Op, TOKEN_KIND_NET};
use crate::log::checkpoint::{self, Checkpoint, PartitionCheckpoint};
use crate::log::frame::{self, FrameKind, HEADER_BYTES};
use crate::log::journal::{self, Journal, JournalLimits, PendingAck, StageError};
use crate::log::recovery::{self, RecoverLimits, RecoveryReport};
use crate::log::segment::log_dir;
use crate::partition::{Partition, Pid, SparseIndex};
use crate::stats::StageTrace;
use crate::wire::batch::{self, BatchInfo};

/// Where a request's answer goes. Called exactly once, on the core thread.
pub type Reply<T> = Box<dyn FnOnce(Result<T>) + Send>;

/// The answer to an append: the offsets the batch was given.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AppendAck {
    pub base_offset: u64,
    pub last_offset: u64,
    /// When the append reached its core, its commit buffer, its write's and
    /// its fdatasync's completions (the server's per-stage latency; see
    /// [`crate::stats`]). Only the fields from `arrived_ns` to `durable_ns` are set.
    pub trace: StageTrace,
}

/// Whole batches, as stored, starting with the one holding the asked offset.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReadResult {
    /// Concatenated RecordBatch v2 bytes (base offsets assigned), after
    /// `front` reserved bytes (0 for [`Request::Read`] and the embedded API).
    /// Empty when the answer is in `fixed` instead.
    pub batches: Vec<u8>,
    pub front: usize,
    /// The same bytes in one of the core's registered reply buffers (a
    /// [`Request::Poll`] with `fixed` set, when one was free). Its owner
    /// gives it back with [`Core::give_reply_buf`].
    pub fixed: Option<FixedBatches>,
    /// The offset after the last record returned (where to read next).
    pub next_offset: u64,
    /// Offsets below this are readable now (durable under the policy).
    pub high_watermark: u64,
    pub start_offset: u64,
    /// How long the read waited parked as a long poll before it ran, in ns.
    pub parked_ns: u64,
}

/// An answer assembled in a registered reply buffer, so that it can be
/// sent from it. Comparing or cloning it works on its bytes (a clone is an
/// ordinary, unregistered buffer).
#[derive(Debug)]
pub struct FixedBatches(pub AlignedBuf);

impl Clone for FixedBatches {
    fn clone(&self) -> Self {
        let mut b = AlignedBuf::new(self.0.capacity());
        b.extend_from_slice(self.0.as_slice());
        FixedBatches(b)
    }
}

impl PartialEq for FixedBatches {
    fn eq(&self, other: &Self) -> bool {
        self.0.as_slice() == other.0.as_slice()
    }
}

impl Eq for FixedBatches {}

/// A partition's offsets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PartitionStat {
    pub start_offset: u64,
    pub end_offset: u64,
    pub max_ts_ms: i64,
}

/// A RecordBatch that passed [`batch::validate`]: only constructible that way.
#[derive(Debug, Clone)]
pub struct ValidBatch {
    bytes: Vec<u8>,
    info: BatchInfo,
    /// When its core first took it ([`Core::handle`]), kept while it waits
    /// for a write buffer: the start of its `append` stage; 0 until then
    /// (not an Option: a Request must stay small enough to move cheaply).
    arrived_ns: u64,
}

impl ValidBatch {
    pub fn new(bytes: Vec<u8>, batch_bytes_max: usize) -> Result<ValidBatch> {
        let info = batch::validate(&bytes, batch_bytes_max)?;
        Ok(ValidBatch { bytes, info, arrived_ns: 0 })
    }
    pub fn info(&self) -> &BatchInfo {
        &self.info
    }
    pub fn records(&self) -> u64 {
        self.info.records_count as u64
    }
}

pub enum Request {
    Append {
        pid: Pid,
        batch: ValidBatch,
        reply: Reply<AppendAck>,
    },
    Read {
        pid: Pid,
        offset: u64,
        max_bytes: usize,
        reply: Reply<ReadResult>,
    },
    /// A read that, at the partition's end, waits up to `max_wait_ns` for
    /// new durable data before answering (a long poll).
    Poll {
        pid: Pid,
        offset: u64,
        max_bytes: usize,
        max_wait_ns: u64,
        /// Bytes to reserve before the batches in the answer's buffer (the
        /// server writes its reply header there: no copy of the batches).
        front: usize,
        /// Assemble the answer in a registered reply buffer if one is free
        /// (the asker is on this core and sends from it).
        fixed: bool,
        reply: Reply<ReadResult>,
    },
    /// The first offset whose record timestamp is at least `ts_ms` (None: past the end).
    OffsetForTime {
        pid: Pid,
        ts_ms: i64,
        reply: Reply<Option<u64>>,
    },
    Stat {
        pid: Pid,
        reply: Reply<PartitionStat>,
    },
    /// This core's counters, with its logs' commit figures summed.
    Stats {
        reply: Reply<CoreStats>,
    },
    AddPartitions {
        pids: Vec<Pid>,
        reply: Reply<()>,
    },
    RemovePartitions {
        pids: Vec<Pid>,
    },
    /// Requests taken as one, in order, with nothing between them: the
    /// appends of a multi-batch Produce get consecutive offsets.
    Group(Vec<Request>),
    /// Drain, fsync, checkpoint every log, answer, and leave the loop.
    Stop {
        reply: Reply<()>,
    },
}

impl Request {
    /// Answers the request with `e` without doing it (its core is gone).
    pub fn refuse(self, e: StromError) {
        match self {
            Request::Append { reply, .. } => reply(Err(e)),
            Request::Read { reply, .. } | Request::Poll { reply, .. } => reply(Err(e)),
            Request::OffsetForTime { reply, .. } => reply(Err(e)),
            Request::Stat { reply, .. } => reply(Err(e)),
            Request::Stats { reply } => reply(Err(e)),
            Request::AddPartitions { reply, .. } | Request::Stop { reply } => reply(Err(e)),
            Request::RemovePartitions { .. } => {}
            Request::Group(reqs) => reqs.into_iter().for_each(|r| r.refuse(e.clone())),
        }
    }
}

/// What this core is, within its engine.
#[derive(Debug, Clone)]
pub struct CoreSpec {
    pub core_id: usize,
    pub data_dir: PathBuf,
    pub log_count: u32,
    /// The logs this core owns.
    pub logs: Vec<u32>,
    /// Every partition of this core's logs, from the catalog.
    pub pids: Vec<Pid>,
}

/// Counters of one core, for reports and audits.
#[derive(Debug, Clone, Default)]
pub struct CoreStats {
    pub appends: u64,
    pub appends_refused: u64,
    pub reads: u64,
    pub reads_from_disk: u64,
    pub checkpoints: u64,
    pub deferred: u64,
    /// Log bytes written (frames and padding), commits (one O_DIRECT write
    /// each) and fdatasyncs, over this core's logs since start.
    pub bytes_logged: u64,
    pub commits: u64,
    pub fsyncs: u64,
    /// Invariant audits: each must stay 0 in every run (docs/TESTING.md).
    /// Writes that would have started below a log's acknowledged or durable
    /// position (refused: the log fails instead).
    pub audit_overlapping_writes: u64,
    /// Batches a read was about to serve past its log's acknowledged (under
    /// `always`: durable) position or its partition's visible end (not served).
    pub audit_served_beyond_durable: u64,
    /// Registered buffers handed to an op or a reply while an op still owned them.
    pub audit_buffer_reuse: u64,
}

impl CoreStats {
    /// The sum of the audit counters: 0 unless an invariant was broken.
    pub fn audit_violations(&self) -> u64 {
        self.audit_overlapping_writes + self.audit_served_beyond_durable + self.audit_buffer_reuse
    }
}

/// Which registered buffers are lent out (to an op in flight, or to a
/// Fetch reply until [`Core::give_reply_buf`]), by index; and the test
/// hooks that break the engine on purpose to prove each audit fires.
#[derive(Default)]
struct Audit {
    lent: Vec<bool>,
    /// Set by [`Core::break_for_audit`]: the next violation is expected
    /// (counted, without the debug assertion).
    expected: bool,
    serve_unretired: bool,
}

/// Ways to break a core on purpose, for tests that prove each audit fires.
#[doc(hidden)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuditBreak {
    /// The next write of `log` is aimed one block low, over acknowledged bytes.
    OverlapNextWrite { log: u32 },
    /// Reads look past the retired position (up to `written_pos`).
    ServeUnretired,
    /// Two read buffers name the same registered index.
    AliasReadBuffers,
}

const TOKEN_READ: u64 = 3;
/// Long polls parked on one core at most; past it a poll answers at once
/// (empty), so waiting readers cannot grow a core's memory without bound.
pub const PARKED_READS_MAX: usize = 1 << 16;

/// A long poll at the end of its partition, waiting for data or its deadline.
struct Parked {
    offset: u64,
    max_bytes: usize,
    front: usize,
    fixed: bool,
    parked_at_ns: u64,
    deadline_ns: u64,
    reply: Reply<ReadResult>,
}

impl Parked {
    /// The read it becomes when its wait ends at `now_ns`.
    fn into_read(self, now_ns: u64) -> ReadMode {
        let parked_ns = now_ns.saturating_sub(self.parked_at_ns);
        ReadMode::Fetch {
            offset: self.offset,
            max_bytes: self.max_bytes,
            front: self.front,
            fixed: self.fixed,
            parked_ns,
            reply: self.reply,
        }
    }
}

/// An append in its commit, until the commit retires: its answer, its
/// stage times so far and its frame's log position.
pub struct AppendWait {
    reply: Reply<AppendAck>,
    trace: StageTrace,
    pos: u64,
}

/// When a log's written and durable positions advanced, oldest first: an
/// append learns from them when its frame was written and made durable
/// (the first mark past its position). A mark is dropped when an append
/// past it is answered, so a log keeps about one per commit in flight.
#[derive(Default)]
struct PosMarks {
    written: VecDeque<(u64, u64)>,
    durable: VecDeque<(u64, u64)>,
}

/// The time of the first mark past `pos`, dropping the marks before it
/// (appends are answered in position order, so no later one needs them).
fn mark_past(marks: &mut VecDeque<(u64, u64)>, pos: u64) -> Option<u64> {
    while marks.front().is_some_and(|&(end_pos, _)| end_pos <= pos) {
        marks.pop_front();
    }
    marks.front().map(|&(_, ns)| ns)
}
/// A time lookup that found no record (the answer is None).
const NOT_FOUND: u64 = u64::MAX;
const RETENTION_CHECK_NS: u64 = 1_000_000_000;

enum ReadMode {
    /// `front`: bytes reserved before the batches (see [`ReadResult`]);
    /// `fixed`: assemble them in a registered reply buffer if one is free.
    Fetch {
        offset: u64,
        max_bytes: usize,
        front: usize,
        fixed: bool,
        /// Time spent parked as a long poll before the read started.
        parked_ns: u64,
        reply: Reply<ReadResult>,
    },
    Time {
        ts_ms: i64,
        reply: Reply<Option<u64>>,
    },
}

/// A read in progress: a cursor over the log, skipping other partitions' frames.
struct ReadState {
    pid: Pid,
    log: u32,
    mode: ReadMode,
    cursor: u64,
    /// Reads never look at or past this (the log's visible position at start).
    limit: u64,
    /// End of the last frame of this partition seen (or the index entry used).
    last_hit: u64,
    /// The base offset the partition's next batch must have: the index
    /// entry's at the start and after a jump, then the last one's end.
    expect_base: u64,
    out: ReadOut,
    next_offset: u64,
    /// The last disk chunk read: its log position and buffer.
    chunk: Option<(u64, AlignedBuf)>,
    /// Bytes of this partition's batches served from `chunk`: how dense the
    /// partition is in its log, which sizes the next disk read.
    chunk_hit_bytes: usize,
    /// Bytes asked of the disk by the last read, and whether it returned
    /// fewer (the segment ends inside `chunk`: nothing more to read there).
    read_len: usize,
    chunk_at_end: bool,
    in_flight: bool,
}

enum Step {
    Continue,
    NeedDisk { len: usize },
    Done(Result<()>),
}

pub struct Core<I: Io> {
    pub io: I,
    cfg: EngineConfig,
    spec: CoreSpec,
    journals: BTreeMap<u32, Journal<AppendWait>>,
    /// Per log: when its written and durable positions advanced.
    pos_marks: HashMap<u32, PosMarks>,
    /// Added to `io.now_ns()` to give the stage clock all cores share.
    clock_offset_ns: u64,
    partitions: HashMap<Pid, Partition>,
    reads: Slab<ReadState>,
    /// Reads waiting for a free read buffer, in arrival order.
    read_waiters: VecDeque<usize>,
    read_bufs: Vec<AlignedBuf>,
    /// Registered buffers Fetch replies are assembled in and sent from,
    /// while free (see [`ReadResult::fixed`]).
    reply_bufs: Vec<AlignedBuf>,
    completions: Vec<Completion>,
    retired: Vec<PendingAck<AppendWait>>,
    refused: Vec<(PendingAck<AppendWait>, StromError)>,
    /// A request that could not be taken this tick (no write buffer).
    deferred: VecDeque<Request>,
    checkpoint_bytes: BTreeMap<u32, u64>,
    /// Log position the last durable checkpoint of each log covers.
    checkpoint_pos: BTreeMap<u32, u64>,
    last_retention_ns: u64,
    stop: Option<Reply<()>>,
    stopped: bool,
    /// Long polls by partition, and when the earliest of them expires.
    parked: HashMap<Pid, Vec<Parked>>,
    parked_count: usize,
    parked_deadline_ns: u64,
    /// Set when the server stops: no more long polls wait.
    parking_closed: bool,
    /// Completions of network ops (token kind [`TOKEN_KIND_NET`]), for the
    /// server running on this core's ring to take after each reap.
    pub net_completions: Vec<Completion>,
    pub stats: CoreStats,
    audit: Audit,
}

impl<I: Io> Core<I> {
    /// Allocates and registers this core's buffers, recovers its logs and
    /// rebuilds its partitions' state. Fails on corruption of acknowledged data.
    pub fn open(mut io: I, cfg: EngineConfig, spec: CoreSpec) -> Result<(Core<I>, Vec<RecoveryReport>)> {
        cfg.validate()?;
        let per_log = cfg.write_bufs_per_log;
        let write_count = spec.logs.len() * per_log;
        let read_end = write_count + cfg.read_bufs_per_core;
        let mut bufs: Vec<AlignedBuf> = (0..read_end + cfg.reply_bufs_per_core)
            .map(|i| {
                AlignedBuf::new(if (write_count..read_end).contains(&i) { cfg.write_buf_bytes + BLOCK_BYTES } else { cfg.write_buf_bytes })
            })
            .collect();
        io.register_buffers(&mut bufs)?;
        let reply_bufs = bufs.split_off(read_end);
        let read_bufs = bufs.split_off(write_count);
        let mut core = Core {
            io,
            cfg,
            spec: spec.clone(),
            journals: BTreeMap::new(),
            pos_marks: HashMap::new(),
            clock_offset_ns: 0,
            partitions: HashMap::new(),
            reads: Slab::new(),
            read_waiters: VecDeque::new(),
            read_bufs,
            reply_bufs,
            completions: Vec::new(),
            retired: Vec::new(),
            refused: Vec::new(),
            deferred: VecDeque::new(),
            checkpoint_bytes: BTreeMap::new(),
            checkpoint_pos: BTreeMap::new(),
            last_retention_ns: 0,
            stop: None,
            stopped: false,
            parked: HashMap::new(),
            parked_count: 0,
            parked_deadline_ns: u64::MAX,
            parking_closed: false,
            net_completions: Vec::new(),
            stats: CoreStats::default(),
            audit: Audit::default(),
        };
        let mut reports = Vec::new();
        for &log in &spec.logs {
            let log_bufs = bufs.split_off(bufs.len() - per_log);
            reports.push(core.open_log(log, log_bufs)?);
        }
        core.last_retention_ns = core.io.now_ns();
        Ok((core, reports))
    }

    fn open_log(&mut self, log: u32, bufs: Vec<AlignedBuf>) -> Result<RecoveryReport> {
        let dir = log_dir(&self.spec.data_dir, log);
        let ckpt = match self.io.read_file(&dir.join(checkpoint::FILE_NAME))? {
            None => None,
            Some(bytes) => match checkpoint::decode(&bytes) {
                Ok(c) if c.log == log => Some(c),
                // A checkpoint only saves scanning: without a usable one the
                // whole log is scanned, which rebuilds the same state.
                Ok(c) => {
                    tracing::warn!(log, found = c.log, "checkpoint belongs to another log; scanning the whole log");
                    None
                }
                Err(reason) => {
                    tracing::warn!(log, %reason, "checkpoint unreadable; scanning the whole log");
                    None
                }
            },
        };
        let full_scan = ckpt.is_none();
        let mut seen: std::collections::HashSet<Pid> = std::collections::HashSet::new();
        let log_count = self.spec.log_count;
        let mut parts: HashMap<Pid, Partition> =
            self.spec.pids.iter().filter(|&&p| p % log_count == log).map(|&p| (p, Partition::new(p, log))).collect();
        if let Some(c) = &ckpt {
            for pc in &c.partitions {
                if let Some(p) = parts.get_mut(&pc.pid) {
                    p.next_offset = pc.next_offset;
                    p.visible_end = pc.next_offset;
                    p.start_offset = pc.start_offset;
                    p.visible_max_ts_ms = pc.max_ts_ms;
                    p.staged_max_ts_ms = pc.max_ts_ms;
                    p.index = SparseIndex::from_entries(pc.entries.clone());
                }
            }
        }
        let limits = RecoverLimits {
            payload_bytes_max: self.cfg.batch_bytes_max as u32,
            tear_window_bytes: self.cfg.tear_window_bytes(),
            read_chunk_bytes: self.cfg.write_buf_bytes + BLOCK_BYTES,
            read_only: false,
            ignore_checkpoint: false,
        };
        let interval = self.cfg.index_interval_bytes;
        let mut on_batch = |h: &frame::FrameHeader, info: &BatchInfo, seg_start: u64| -> Result<()> {
            let Some(p) = parts.get_mut(&h.pid) else { return Ok(()) };
            let base = info.base_offset as u64;
            if full_scan && seen.insert(h.pid) && base > p.next_offset {
                // Without a checkpoint the scan starts at the oldest segment
                // left; retention deleted this partition's earlier batches.
                p.next_offset = base;
                p.visible_end = base;
                p.start_offset = base;
            }
            if base != p.next_offset {
                return Err(StromError::Corrupt {
                    path: dir.clone(),
                    pos: h.pos,
                    reason: format!("partition {} batch at offset {base}, expected {}", h.pid, p.next_offset),
                });
            }
            let records = info.last_offset_delta as u64 + 1;
            let ts = p.observe_batch(base, records, info.max_timestamp_ms, h.pos, seg_start, interval);
            p.make_visible(base + records, ts);
            Ok(())
        };
        // A log that failed is cut where its trusted data ended (DURABILITY.md).
        let fenced = journal::fence_failed_tail(&mut self.io, &dir, &mut self.completions)?;
        let (state, report) = recovery::recover(&mut self.io, &dir, log, ckpt.as_ref(), &limits, &mut on_batch)?;
        if fenced.is_some() {
            journal::clear_failed_mark(&mut self.io, &dir)?;
        }
        for p in parts.values_mut() {
            p.forget_before(state.log_start);
        }
        tracing::info!(
            log,
            scanned_bytes = report.bytes_scanned,
            cut_bytes = report.bytes_cut,
            frames = report.frames_scanned,
            elapsed_us = report.elapsed_us,
            "log recovered"
        );
        let jl = JournalLimits {
            policy: self.cfg.fsync,
            write_buf_bytes: self.cfg.write_buf_bytes,
            write_bufs: self.cfg.write_bufs_per_log,
            write_depth: self.cfg.write_depth,
            segment_bytes: self.cfg.segment_bytes,
        };
        let journal = Journal::new(log, &dir, jl, state, bufs, self.io.now_ns());
        self.checkpoint_bytes.insert(log, 0);
        self.checkpoint_pos.insert(log, ckpt.as_ref().map_or(0, |c| c.covered_pos));
        self.journals.insert(log, journal);
        self.partitions.extend(parts);
        Ok(report)
    }

    /// Gives the I/O backend back (the simulator crashes it to get its disk).
    pub fn into_io(self) -> I {
        self.io
    }

    pub fn spec(&self) -> &CoreSpec {
        &self.spec
    }

    pub fn partition(&self, pid: Pid) -> Option<&Partition> {
        self.partitions.get(&pid)
    }

    pub fn journal(&self, log: u32) -> Option<&Journal<AppendWait>> {
        self.journals.get(&log)
    }

    /// Sets what [`Core::clock_ns`] adds to this core's I/O clock, so that
    /// every core of an engine reads the same stage clock (each ring's clock
    /// starts when the ring does).
    pub fn set_clock_offset_ns(&mut self, offset_ns: u64) {
        self.clock_offset_ns = offset_ns;
    }

    /// Now on the stage clock, in ns: the core's [`Io::now_ns`] shifted to
    /// the engine's common start, so instants taken on two cores compare.
    pub fn clock_ns(&self) -> u64 {
        self.io.now_ns() + self.clock_offset_ns
    }

    /// What [`Core::clock_ns`] adds to `io.now_ns()`: for a caller that read the I/O clock already.
    pub fn clock_offset_ns(&self) -> u64 {
        self.clock_offset_ns
    }

    /// True once a Stop request completed.
    pub fn stopped(&self) -> bool {
        self.stopped
    }

    /// True when requests should wait in the mailbox (push back).
    pub fn backpressured(&self) -> bool {
        !self.deferred.is_empty()
    }

    /// Takes one request. Appends are staged into the filling commit and
    /// answered when it is durable; reads start and may finish at once.
    pub fn handle(&mut self, mut req: Request) {
        self.stamp_arrival(&mut req);
        if !self.deferred.is_empty() {
            self.deferred.push_back(req);
            return;
        }
        self.handle_now(req);
    }

    /// Notes when appends reached their core: their `append` stage starts.
    fn stamp_arrival(&self, req: &mut Request) {
        match req {
            Request::Append { batch, .. } if batch.arrived_ns == 0 => batch.arrived_ns = self.clock_ns(),
            Request::Group(reqs) => reqs.iter_mut().for_each(|r| self.stamp_arrival(r)),
            _ => {}
        }
    }

    fn handle_now(&mut self, req: Request) {
        if matches!(req, Request::Read { .. } | Request::Poll { .. } | Request::OffsetForTime { .. })
            && self.reads.len() >= self.cfg.reads_inflight_max
        {
            // Every read slot is busy: hold this one (and, behind it, the
            // mailbox) until a read finishes, instead of growing.
            self.stats.deferred += 1;
            self.deferred.push_front(req);
            return;
        }
        match req {
            Request::Append { pid, batch, reply } => self.append(pid, batch, reply),
            Request::Read { pid, offset, max_bytes, reply } => {
                self.start_read(pid, ReadMode::Fetch { offset, max_bytes, front: 0, fixed: false, parked_ns: 0, reply }, offset)
            }
            Request::Poll { pid, offset, max_bytes, max_wait_ns, front, fixed, reply } => {
                let at_end = self.partitions.get(&pid).is_some_and(|p| p.visible_end == offset);
                if at_end && max_wait_ns > 0 && self.stop.is_none() && !self.parking_closed && self.parked_count < PARKED_READS_MAX {
                    let deadline_ns = self.io.now_ns().saturating_add(max_wait_ns);
                    self.parked_deadline_ns = self.parked_deadline_ns.min(deadline_ns);
                    let parked_at_ns = self.io.now_ns();
                    self.parked.entry(pid).or_default().push(Parked { offset, max_bytes, front, fixed, parked_at_ns, deadline_ns, reply });
                    self.parked_count += 1;
                } else {
                    self.start_read(pid, ReadMode::Fetch { offset, max_bytes, front, fixed, parked_ns: 0, reply }, offset)
                }
            }
            Request::OffsetForTime { pid, ts_ms, reply } => self.start_read(pid, ReadMode::Time { ts_ms, reply }, 0),
            Request::Stat { pid, reply } => reply(match self.partitions.get(&pid) {
                Some(p) => Ok(PartitionStat { start_offset: p.start_offset, end_offset: p.visible_end, max_ts_ms: p.visible_max_ts_ms }),
                None => Err(unknown(pid)),
            }),
            Request::Stats { reply } => reply(Ok(self.stats_now())),
            Request::AddPartitions { pids, reply } => {
                for pid in pids {
                    let log = pid % self.spec.log_count;
                    if self.journals.contains_key(&log) {
                        self.partitions.entry(pid).or_insert_with(|| Partition::new(pid, log));
                    }
                }
                reply(Ok(()))
            }
            Request::RemovePartitions { pids } => {
                for pid in pids {
                    self.partitions.remove(&pid);
                    // Waiting readers of a deleted topic get a typed error now.
                    self.unpark(pid);
                }
            }
            Request::Stop { reply } => {
                self.stop = Some(reply);
            }
            Request::Group(reqs) => {
                let mut rest = reqs.into_iter();
                while let Some(r) = rest.next() {
                    let before = self.deferred.len();
                    self.handle_now(r);
                    if self.deferred.len() > before {
                        // It must wait (no write buffer) and went to the
                        // front of the deferred queue: the rest of the group
                        // goes right behind it, ahead of anything else.
                        for (i, r) in rest.enumerate() {
                            self.deferred.insert(1 + i, r);
                        }
                        return;
                    }
                }
            }
        }
    }

    fn append(&mut self, pid: Pid, batch: ValidBatch, reply: Reply<AppendAck>) {
        if self.stop.is_some() {
            return reply(Err(StromError::ShuttingDown));
        }
        let Some(p) = self.partitions.get_mut(&pid) else { return reply(Err(unknown(pid))) };
        let journal = self.journals.get_mut(&p.log).expect("partition's log is on its core");
        let base = p.next_offset;
        let bytes = &batch.bytes;
        let staged = journal.stage(&mut self.io, pid, bytes.len(), |dst| {
            dst.copy_from_slice(bytes);
            batch::set_base_offset(dst, base);
        });
        match staged {
            Ok(pos) => {
                let records = batch.records();
                let seg_start = journal.active_segment_start();
                let max_ts_ms = p.observe_batch(base, records, batch.info.max_timestamp_ms, pos, seg_start, self.cfg.index_interval_bytes);
                let staged_ns = self.io.now_ns() + self.clock_offset_ns;
                let trace = StageTrace { arrived_ns: batch.arrived_ns, staged_ns, ..StageTrace::default() };
                let wait = AppendWait { reply, trace, pos };
                journal.attach(PendingAck { pid, base_offset: base, end_offset: base + records, max_ts_ms, reply: wait });
                self.stats.appends += 1;
            }
            Err(StageError::NoBuffer) => {
                self.stats.deferred += 1;
                self.deferred.push_front(Request::Append { pid, batch, reply });
            }
            Err(StageError::Failed(e)) => {
                self.stats.appends_refused += 1;
                reply(Err(e))
            }
        }
    }

    /// Reaps completions and acts on them: retires commits (acknowledging
    /// their appends), continues reads.
    pub fn process_completions(&mut self) {
        let mut completions = std::mem::take(&mut self.completions);
        self.io.reap(&mut completions);
        let now = self.io.now_ns();
        for c in completions.drain(..) {
            let (kind, log, seq) = journal::untoken(c.token);
            if matches!(kind, journal::TOKEN_WRITE | TOKEN_READ) {
                self.home_buf(c.buf.as_ref().and_then(|b| b.fixed_index()));
            }
            match kind {
                journal::TOKEN_WRITE | journal::TOKEN_FSYNC => {
                    let j = self.journals.get_mut(&log).expect("op of an owned log");
                    let (written_pos, durable_pos) = (j.written_pos(), j.durable_pos());
                    j.on_completion(kind, seq, c.result, c.buf, now);
                    let marks = self.pos_marks.entry(log).or_default();
                    if j.written_pos() > written_pos {
                        marks.written.push_back((j.written_pos(), now + self.clock_offset_ns));
                    }
                    if j.durable_pos() > durable_pos {
                        marks.durable.push_back((j.durable_pos(), now + self.clock_offset_ns));
                    }
                }
                TOKEN_READ => self.on_read_complete(seq as usize, c),
                TOKEN_KIND_NET => self.net_completions.push(c),
                _ => unreachable!("unknown op token {:#x}", c.token),
            }
        }
        self.completions = completions;
        self.deliver_acks();
    }

    fn deliver_acks(&mut self) {
        for j in self.journals.values_mut() {
            j.take_retired(&mut self.retired);
            let first_refused = self.refused.len();
            j.take_refused(&mut self.refused);
            if let Some(pos) = j.take_rewind() {
                rewind_partitions(&mut self.partitions, j, pos, &self.refused[first_refused..]);
            }
        }
        let mut grown = Vec::new();
        let now_ns = if self.retired.is_empty() { 0 } else { self.clock_ns() };
        for ack in self.retired.drain(..) {
            if let Some(p) = self.partitions.get_mut(&ack.pid) {
                p.make_visible(ack.end_offset, ack.max_ts_ms);
            }
            if self.parked_count > 0 && self.parked.contains_key(&ack.pid) {
                grown.push(ack.pid);
            }
            let AppendWait { reply, mut trace, pos } = ack.reply;
            let marks = self.pos_marks.entry(ack.pid % self.spec.log_count).or_default();
            // A retired commit was written; it was fsynced unless the policy
            // acknowledges at the write.
            trace.written_ns = mark_past(&mut marks.written, pos).unwrap_or(now_ns);
            trace.durable_ns = mark_past(&mut marks.durable, pos);
            reply(Ok(AppendAck { base_offset: ack.base_offset, last_offset: ack.end_offset - 1, trace }));
        }
        for pid in grown {
            self.unpark(pid);
        }
        for (ack, err) in self.refused.drain(..) {
            self.stats.appends_refused += 1;
            (ack.reply.reply)(Err(err));
        }
    }

    /// Answers every long poll parked on `pid` by reading now (its partition
    /// grew, or was removed and the read fails with `UnknownPartition`).
    fn unpark(&mut self, pid: Pid) {
        let now_ns = self.io.now_ns();
        for w in self.parked.remove(&pid).unwrap_or_default() {
            self.parked_count -= 1;
            let offset = w.offset;
            self.start_read(pid, w.into_read(now_ns), offset);
        }
    }

    /// This core's counters, with its logs' commit figures and audits summed.
    pub fn stats_now(&self) -> CoreStats {
        let mut s = self.stats.clone();
        for j in self.journals.values() {
            s.bytes_logged += j.bytes_logged;
            s.commits += j.commits;
            s.fsyncs += j.fsyncs;
            s.audit_overlapping_writes += j.audit_overlapping_writes;
        }
        s
    }

    /// Breaks the core on purpose so that a test sees an audit fire.
    #[doc(hidden)]
    pub fn break_for_audit(&mut self, what: AuditBreak) {
        self.audit.expected = true;
        match what {
            AuditBreak::OverlapNextWrite { log } => {
                self.journals.get_mut(&log).expect("log").misaim_next_write_for_audit(BLOCK_BYTES as u64)
            }
            AuditBreak::ServeUnretired => self.audit.serve_unretired = true,
            AuditBreak::AliasReadBuffers => {
                let i = self.read_bufs.last().and_then(|b| b.fixed_index()).expect("a free registered read buffer");
                let other = self.read_bufs.len().checked_sub(2).expect("two free read buffers");
                self.read_bufs[other].set_fixed_index(Some(i));
            }
        }
    }

    /// Marks a registered buffer as lent to an op or a reply; counts a
    /// violation if it already was (its earlier owner has not given it back).
    fn lend_buf(&mut self, index: Option<u16>) {
        let Some(i) = index else { return };
        let i = i as usize;
        if self.audit.lent.len() <= i {
            self.audit.lent.resize(i + 1, false);
        }
        if std::mem::replace(&mut self.audit.lent[i], true) {
            self.stats.audit_buffer_reuse += 1;
            debug_assert!(self.audit.expected, "registered buffer {i} reused before its last completion");
        }
    }

    /// Marks a registered buffer as back with its owner.
    fn home_buf(&mut self, index: Option<u16>) {
        if let Some(slot) = index.and_then(|i| self.audit.lent.get_mut(i as usize)) {
            *slot = false;
        }
    }

    /// Takes back a registered reply buffer once its send completed.
    pub fn give_reply_buf(&mut self, mut buf: AlignedBuf) {
        debug_assert!(buf.fixed_index().is_some(), "only registered reply buffers come back");
        self.home_buf(buf.fixed_index());
        buf.set_len(0);
        self.reply_bufs.push(buf);
    }

    /// Registered reply buffers free now.
    pub fn reply_bufs_free(&self) -> usize {
        self.reply_bufs.len()
    }

    /// Registered read buffers free now (all of them when no read is in progress).
    pub fn read_bufs_free(&self) -> usize {
        self.read_bufs.len()
    }

    /// Answers every long poll now and parks no more: a stopping server
    /// must not wait out their waits before it can stop.
    pub fn close_parking(&mut self) {
        self.parking_closed = true;
        self.parked_deadline_ns = 0;
        self.expire_parked();
    }

    /// Answers the long polls whose wait is over (all of them when stopping)
    /// with what their partition holds now: nothing new.
    fn expire_parked(&mut self) {
        let now = self.io.now_ns();
        let stopping = self.stop.is_some() || self.parking_closed;
        if self.parked_count == 0 || (now < self.parked_deadline_ns && !stopping) {
            return;
        }
        let mut next = u64::MAX;
        let mut due = Vec::new();
        for (&pid, waits) in self.parked.iter_mut() {
            let mut i = 0;
            while i < waits.len() {
                if stopping || waits[i].deadline_ns <= now {
                    due.push((pid, waits.swap_remove(i)));
                } else {
                    next = next.min(waits[i].deadline_ns);
                    i += 1;
                }
            }
        }
        self.parked.retain(|_, w| !w.is_empty());
        self.parked_deadline_ns = next;
        for (pid, w) in due {
            self.parked_count -= 1;
            let offset = w.offset;
            self.start_read(pid, w.into_read(now), offset);
        }
    }

    /// Plans this tick's I/O: deferred requests, commits and fsyncs,
    /// checkpoints, retention, and the stop sequence.
    pub fn plan(&mut self) {
        self.expire_parked();
        while let Some(req) = self.deferred.pop_front() {
            let before = self.deferred.len();
            self.handle_now(req);
            if self.deferred.len() > before {
                break;
            }
        }
        self.drive_read_waiters();
        self.maybe_retention();
        for (&log, j) in self.journals.iter_mut() {
            let since = j.bytes_logged - self.checkpoint_bytes[&log];
            if since >= self.cfg.checkpoint_interval_bytes && j.failed().is_none() {
                j.set_barrier(true);
            }
        }
        if self.stop.is_some() && self.deferred.is_empty() {
            for j in self.journals.values_mut() {
                j.stop_retrying_in_place();
                if j.idle() {
                    j.set_barrier(true);
                }
            }
        }
        // Checkpoints first: one lowers its log's barrier, and the log's plan
        // must then seal what was staged under it in this same tick, or that
        // commit would wait for the next request or timeout (found as a 1 s
        // stall in benches/append.rs).
        self.write_due_checkpoints();
        let mut lent = Vec::new();
        for j in self.journals.values_mut() {
            j.plan(&mut self.io);
            j.take_lent(&mut lent);
        }
        for i in lent {
            self.lend_buf(Some(i));
        }
        self.deliver_acks();
        if self.stop.is_some() && self.reads.is_empty() && self.deferred.is_empty() {
            let done = self.journals.values().all(|j| j.failed().is_some() || (j.idle() && !j.has_pending()));
            if done {
                let reply = self.stop.take().expect("stop");
                self.stopped = true;
                reply(Ok(()));
            }
        }
        #[cfg(debug_assertions)]
        self.invariants();
    }

    /// How the caller should wait after [`Core::plan`]: block for a
    /// completion (true) or only poll, and for how long at most.
    pub fn wait_hint(&self) -> (bool, Option<Duration>) {
        if !self.deferred.is_empty() && self.io.in_flight() == 0 {
            return (false, Some(Duration::ZERO));
        }
        let now = self.io.now_ns();
        let mut timeout_ns = RETENTION_CHECK_NS;
        if self.parked_count > 0 {
            timeout_ns = timeout_ns.min(self.parked_deadline_ns.saturating_sub(now).max(1));
        }
        for j in self.journals.values() {
            if let Some(due) = j.fsync_due_in_ns(now) {
                timeout_ns = timeout_ns.min(due.max(1));
            }
            if let Some(due) = j.retry_due_in_ns(now) {
                timeout_ns = timeout_ns.min(due.max(1));
            }
        }
        (true, Some(Duration::from_nanos(timeout_ns)))
    }

    /// One whole tick without a mailbox: plan, submit and wait, then process.
    pub fn tick(&mut self) -> Result<()> {
        self.plan();
        let (block, timeout) = self.wait_hint();
        self.io.wait(usize::from(block && self.io.in_flight() > 0), timeout)?;
        self.process_completions();
        Ok(())
    }

    fn write_due_checkpoints(&mut self) {
        let logs: Vec<u32> = self.journals.iter().filter(|(_, j)| j.quiesced()).map(|(&l, _)| l).collect();
        for log in logs {
            let ckpt = self.checkpoint_of(log);
            let j = self.journals.get_mut(&log).expect("log");
            let res = self.io.write_file_atomic(&j.dir().join(checkpoint::FILE_NAME), &checkpoint::encode(&ckpt));
            if let Err(e) = res {
                // A failed checkpoint loses nothing: restart scans further back.
                tracing::warn!(log, %e, "checkpoint not written");
            } else {
                self.stats.checkpoints += 1;
                self.checkpoint_pos.insert(log, ckpt.covered_pos);
            }
            self.checkpoint_bytes.insert(log, j.bytes_logged);
            // Appends staged under the barrier wait for it to lift; a stop
            // raises it again once the log is idle, for the final checkpoint.
            j.set_barrier(false);
        }
    }

    /// The state of `log`'s partitions at its visible (and durable) position.
    fn checkpoint_of(&self, log: u32) -> Checkpoint {
        let j = &self.journals[&log];
        let covered_pos = j.visible_pos();
        let mut partitions: Vec<PartitionCheckpoint> = self
            .partitions
            .values()
            .filter(|p| p.log == log)
            .map(|p| PartitionCheckpoint {
                pid: p.pid,
                next_offset: p.visible_end,
                start_offset: p.start_offset,
                max_ts_ms: p.visible_max_ts_ms,
                entries: p.index.entries().iter().filter(|e| e.pos < covered_pos && e.offset < p.visible_end).copied().collect(),
            })
            .collect();
        partitions.sort_by_key(|p| p.pid);
        Checkpoint { log, epoch: j.epoch(), covered_pos, log_start: j.log_start(), partitions }
    }

    fn maybe_retention(&mut self) {
        let now = self.io.now_ns();
        if now < self.last_retention_ns + RETENTION_CHECK_NS || (self.cfg.retention_bytes.is_none() && self.cfg.retention_age.is_none()) {
            return;
        }
        self.last_retention_ns = now;
        let age_ns = self.cfg.retention_age.map(|d| d.as_nanos() as u64);
        for (&log, j) in self.journals.iter_mut() {
            let checkpointed_pos = self.checkpoint_pos.get(&log).copied().unwrap_or(0);
            match j.apply_retention(&mut self.io, self.cfg.retention_bytes, age_ns, checkpointed_pos) {
                Ok((moved, waits)) => {
                    if let Some(start) = moved {
                        for p in self.partitions.values_mut().filter(|p| p.log == log) {
                            p.forget_before(start);
                        }
                    }
                    if waits || moved.is_some() {
                        // Checkpoint now: retention waits for one, and restart
                        // should not look for deleted segments' state.
                        self.checkpoint_bytes.insert(log, j.bytes_logged.saturating_sub(self.cfg.checkpoint_interval_bytes));
                    }
                }
                Err(e) => tracing::warn!(log, %e, "retention could not delete a segment"),
            }
        }
    }

    // ---- reads ----

    fn start_read(&mut self, pid: Pid, mut mode: ReadMode, offset: u64) {
        let Some(p) = self.partitions.get(&pid) else { return finish_mode(mode, Err(unknown(pid)), Vec::new(), 0, 0, 0) };
        self.stats.reads += 1;
        let (start, end) = (p.start_offset, p.visible_end);
        let entry = match &mode {
            ReadMode::Fetch { .. } if offset < start || offset > end => {
                return finish_mode(mode, Err(StromError::OffsetOutOfRange { offset, earliest: start, end }), Vec::new(), 0, end, start);
            }
            ReadMode::Fetch { .. } if offset == end => return finish_mode(mode, Ok(()), Vec::new(), end, end, start),
            ReadMode::Fetch { .. } => p.index.floor(offset),
            ReadMode::Time { ts_ms, .. } if *ts_ms > p.visible_max_ts_ms => {
                return finish_mode(mode, Ok(()), Vec::new(), NOT_FOUND, end, start);
            }
            ReadMode::Time { ts_ms, .. } => p.index.scan_start_for_time(*ts_ms),
        };
        let none_yet = if matches!(mode, ReadMode::Time { .. }) { NOT_FOUND } else { offset };
        let Some(entry) = entry else { return finish_mode(mode, Ok(()), Vec::new(), none_yet, end, start) };
        let out = match &mut mode {
            ReadMode::Fetch { max_bytes, front, fixed: true, .. } if !self.reply_bufs.is_empty() => {
                let mut buf = self.reply_bufs.pop().expect("a free reply buffer");
                buf.set_len(*front);
                // The answer must fit the buffer; a batch never exceeds
                // batch_bytes_max, which fits with any front (validate).
                *max_bytes = (*max_bytes).min(buf.capacity() - *front);
                ReadOut::Fixed(buf)
            }
            // Sized for a typical answer at once: growing by doubling would
            // copy a large answer several times.
            ReadMode::Fetch { max_bytes, front, .. } => {
                let mut out = Vec::with_capacity(*front + (*max_bytes).min(self.cfg.write_buf_bytes));
                out.resize(*front, 0);
                ReadOut::Heap(out)
            }
            ReadMode::Time { .. } => ReadOut::Heap(Vec::new()),
        };
        let log = p.log;
        let j = &self.journals[&log];
        let limit = if self.audit.serve_unretired { j.written_pos() } else { j.visible_pos() };
        if let ReadOut::Fixed(b) = &out {
            self.lend_buf(b.fixed_index());
        }
        let slot = self.reads.insert(ReadState {
            pid,
            log,
            mode,
            cursor: entry.pos,
            limit,
            last_hit: entry.pos,
            expect_base: entry.offset,
            out,
            next_offset: none_yet,
            chunk: None,
            chunk_hit_bytes: 0,
            read_len: 0,
            chunk_at_end: false,
            in_flight: false,
        });
        self.advance_read(slot);
    }

    fn on_read_complete(&mut self, slot: usize, c: Completion) {
        let r = self.reads.get_mut(slot).expect("read completion for a live read");
        r.in_flight = false;
        let buf = c.buf.expect("read returns its buffer");
        let j = self.journals.get_mut(&r.log).expect("log");
        let pos = align_down(r.cursor);
        if let Some(seg) = j.segment_for_mut(pos) {
            seg.reads_in_flight -= 1;
        }
        match c.result {
            Ok(_) => {
                let mut buf = buf;
                // Bytes past the segment's logical end (the next segment's
                // start) are not part of the log: a segment rolled again
                // after a recovery cut can hold older frames there.
                if let Some(next_start) = j.segments().iter().map(|s| s.start_pos).find(|&s| s > pos) {
                    buf.set_len(buf.len().min((next_start - pos) as usize));
                }
                // The log holds bytes up to the read's limit: a segment that
                // ends before (lost or misdirected writes, a truncated file)
                // is damage, not a reason to read the same place again.
                r.chunk_at_end = buf.len() < r.read_len;
                if buf.len() as u64 <= r.cursor - pos {
                    self.read_bufs.push(buf);
                    let err = corrupt_read(j, r.cursor, format!("the segment ends before log position {}", r.cursor));
                    return self.finish_read(slot, Err(err));
                }
                r.chunk = Some((pos, buf));
                r.chunk_hit_bytes = 0;
                self.advance_read(slot);
            }
            Err(errno) => {
                let path = j.segment_for(pos).map(|s| s.path.clone()).unwrap_or_default();
                self.read_bufs.push(buf);
                self.finish_read(slot, Err(StromError::Io { op: crate::error::IoOp::Read, path, errno }));
            }
        }
    }

    /// Runs a read forward until it finishes or needs the disk.
    fn advance_read(&mut self, slot: usize) {
        loop {
            match self.read_step(slot) {
                Step::Continue => continue,
                Step::Done(res) => return self.finish_read(slot, res),
                Step::NeedDisk { len } => return self.submit_read(slot, len),
            }
        }
    }

    /// Looks at the frame under a read's cursor.
    fn read_step(&mut self, slot: usize) -> Step {
        let r = &mut self.reads[slot];
        let Some(p) = self.partitions.get(&r.pid) else { return Step::Done(Err(unknown(r.pid))) };
        let j = &self.journals[&r.log];
        if let ReadMode::Fetch { .. } = r.mode
            && r.next_offset >= p.visible_end
            && !self.audit.serve_unretired
        {
            return Step::Done(Ok(()));
        }
        if r.cursor >= r.limit {
            return Step::Done(Ok(()));
        }
        if r.cursor > r.last_hit + self.cfg.index_interval_bytes {
            // No batch of this partition lies within an interval after the
            // last one unless it has an index entry: jump to that entry (the
            // cursor may sit exactly on it).
            match p.index.first_at_or_after(r.cursor) {
                Some(e) if e.pos < r.limit => {
                    r.cursor = e.pos;
                    r.last_hit = e.pos;
                    r.expect_base = e.offset;
                }
                _ => return Step::Done(Ok(())),
            }
        }
        let from_disk;
        let bytes: &[u8] = if let Some(b) = j.cached_at(r.cursor) {
            from_disk = false;
            b
        } else {
            from_disk = true;
            match &r.chunk {
                Some((at, buf)) if r.cursor >= *at && r.cursor < at + buf.len() as u64 => &buf.as_slice()[(r.cursor - at) as usize..],
                _ => return Step::NeedDisk { len: HEADER_BYTES + frame::BATCH_PREFIX_BYTES },
            }
        };
        let h = match frame::decode_header(bytes, r.cursor, self.cfg.batch_bytes_max as u32) {
            Ok(h) => h,
            Err(frame::FrameError::Truncated { needed }) if from_disk && !r.chunk_at_end => return Step::NeedDisk { len: needed as usize },
            Err(e) => return Step::Done(Err(corrupt_read(j, r.cursor, e.to_string()))),
        };
        // A frame that verifies at its position can still be a leftover: an
        // older epoch's frame where this run wrote (its write was lost or
        // misdirected), or one from an epoch that never existed.
        if from_disk && (h.epoch > j.epoch() || (h.pos >= j.epoch_start_pos() && h.epoch != j.epoch())) {
            let reason = format!("frame of epoch {} where epoch {} wrote from {}", h.epoch, j.epoch(), j.epoch_start_pos());
            return Step::Done(Err(corrupt_read(j, h.pos, reason)));
        }
        if (bytes.len() as u64) < h.frame_bytes() {
            if from_disk && !r.chunk_at_end {
                return Step::NeedDisk { len: h.frame_bytes() as usize };
            }
            return Step::Done(Err(corrupt_read(j, r.cursor, "frame runs past its commit".into())));
        }
        let frame_bytes = &bytes[..h.frame_bytes() as usize];
        let hit = h.kind == FrameKind::Batch && h.pid == r.pid;
        r.cursor = h.end_pos();
        if !hit {
            return Step::Continue;
        }
        r.last_hit = h.end_pos();
        let info = if from_disk {
            // Data from disk is verified before it is served: corruption becomes an error, never data.
            match frame::verify_payload(&h, frame_bytes) {
                Ok(info) => info,
                Err(e) => return Step::Done(Err(corrupt_read(j, h.pos, e.to_string()))),
            }
        } else {
            match batch::parse_header(&frame_bytes[HEADER_BYTES..]) {
                Ok(info) => info,
                Err(e) => return Step::Done(Err(corrupt_read(j, h.pos, e.to_string()))),
            }
        };
        // The partition's batches follow each other without a gap: a valid
        // frame with other offsets is not the batch the index promised.
        if info.base_offset as u64 != r.expect_base {
            let reason = format!("partition {} batch at offset {}, expected {}", r.pid, info.base_offset, r.expect_base);
            return Step::Done(Err(corrupt_read(j, h.pos, reason)));
        }
        r.expect_base = info.last_offset() as u64 + 1;
        let payload = &frame_bytes[HEADER_BYTES..];
        match &r.mode {
            ReadMode::Fetch { offset, max_bytes, front, .. } => {
                if (info.last_offset() as u64) < *offset {
                    return Step::Continue;
                }
                let taken = r.out.len() - front;
                if taken > 0 && taken + payload.len() > *max_bytes {
                    return Step::Done(Ok(()));
                }
                // Audit: nothing is served past what is acknowledged (under
                // `always`, durable). A bug here would show readers data a
                // crash can take back; the batch is held back instead.
                let durable_end = if self.cfg.fsync == FsyncPolicy::Always { j.durable_pos() } else { u64::MAX };
                if h.end_pos() > j.visible_pos().min(durable_end) || info.last_offset() as u64 >= p.visible_end {
                    self.stats.audit_served_beyond_durable += 1;
                    debug_assert!(self.audit.expected, "read of pid {} about to serve past the durable position", r.pid);
                    return Step::Done(Ok(()));
                }
                r.out.extend(payload);
                if from_disk {
                    r.chunk_hit_bytes += payload.len();
                }
                r.next_offset = info.last_offset() as u64 + 1;
                if taken + payload.len() >= *max_bytes { Step::Done(Ok(())) } else { Step::Continue }
            }
            ReadMode::Time { ts_ms, .. } => {
                if info.max_timestamp_ms < *ts_ms {
                    return Step::Continue;
                }
                let found = batch::records(payload)
                    .filter_map(|rec| rec.ok())
                    .find(|rec| info.base_timestamp_ms + rec.timestamp_delta_ms >= *ts_ms)
                    .map(|rec| info.base_offset as u64 + rec.offset_delta as u64);
                r.next_offset = found.unwrap_or(info.base_offset as u64);
                Step::Done(Ok(()))
            }
        }
    }

    fn submit_read(&mut self, slot: usize, need_bytes: usize) {
        let r = &mut self.reads[slot];
        // A partition that filled at least half of its last chunk is dense in
        // its log: read a whole buffer. Otherwise (a first read, or a
        // partition sharing its log with many) read two index intervals: its
        // next batch usually starts within one, and the read should hold it
        // whole, or each of its batches costs a full buffer or two reads.
        let dense = r.chunk.as_ref().is_some_and(|(_, b)| r.chunk_hit_bytes * 2 >= b.len());
        let probe_bytes = 2 * self.cfg.index_interval_bytes as usize;
        let mut buf = match r.chunk.take() {
            Some((_, b)) => b,
            None => match self.read_bufs.pop() {
                Some(b) => b,
                None => {
                    self.read_waiters.push_back(slot);
                    return;
                }
            },
        };
        let j = self.journals.get_mut(&r.log).expect("log");
        let pos = align_down(r.cursor);
        let Some(seg) = j.segment_for_mut(pos) else {
            let err = StromError::OffsetOutOfRange { offset: r.next_offset, earliest: 0, end: 0 };
            self.read_bufs.push(buf);
            return self.finish_read(slot, Err(err));
        };
        let wanted = (r.cursor - pos) as usize + need_bytes.max(probe_bytes);
        let len = if dense { buf.capacity() } else { (align_up(wanted as u64) as usize).min(buf.capacity()) };
        debug_assert!((r.cursor - pos) as usize + need_bytes <= len, "a frame must fit a read buffer");
        buf.set_len(0);
        let fixed = buf.fixed_index();
        let op = Op::Read { file: seg.file, pos: pos - seg.start_pos, len, buf };
        match self.io.push(op, journal::token(TOKEN_READ, r.log, slot as u32)) {
            Ok(()) => {
                seg.reads_in_flight += 1;
                r.in_flight = true;
                r.read_len = len;
                self.stats.reads_from_disk += 1;
                self.lend_buf(fixed);
            }
            Err(Op::Read { buf, .. }) => {
                self.read_bufs.push(buf);
                self.read_waiters.push_back(slot);
            }
            Err(_) => unreachable!("push returns the op it was given"),
        }
    }

    fn finish_read(&mut self, slot: usize, res: Result<()>) {
        let r = self.reads.remove(slot);
        debug_assert!(!r.in_flight);
        if let Some((_, b)) = r.chunk {
            self.read_bufs.push(b);
        }
        let (hw, start) = self.partitions.get(&r.pid).map(|p| (p.visible_end, p.start_offset)).unwrap_or((0, 0));
        let out = match (r.out, &res) {
            (ReadOut::Fixed(b), Err(_)) => {
                self.home_buf(b.fixed_index());
                self.reply_bufs.push(b);
                ReadOut::Heap(Vec::new())
            }
            (out, _) => out,
        };
        finish_mode(r.mode, res, out, r.next_offset, hw, start);
        self.drive_read_waiters();
    }

    /// Lets reads that waited for a buffer (or an op slot) go on.
    fn drive_read_waiters(&mut self) {
        while !self.read_bufs.is_empty() {
            let Some(w) = self.read_waiters.pop_front() else { break };
            if self.reads.contains(w) {
                self.advance_read(w);
            }
        }
    }

    /// Checks the relations that must hold between ticks.
    pub fn invariants(&self) {
        for j in self.journals.values() {
            j.invariants();
        }
        for p in self.partitions.values() {
            p.invariants();
        }
        let reads_holding = self.reads.iter().filter(|(_, r)| r.chunk.is_some() || r.in_flight).count();
        assert!(self.read_bufs.len() + reads_holding <= self.cfg.read_bufs_per_core, "read buffer leaked or doubled");
    }
}

fn finish_mode(mode: ReadMode, res: Result<()>, out: impl Into<ReadOut>, next_offset: u64, high_watermark: u64, start_offset: u64) {
    match mode {
        ReadMode::Fetch { reply, front, parked_ns, .. } => reply(res.map(|()| match out.into() {
            ReadOut::Fixed(b) => ReadResult {
                batches: Vec::new(),
                front,
                fixed: Some(FixedBatches(b)),
                next_offset,
                high_watermark,
                start_offset,
                parked_ns,
            },
            ReadOut::Heap(mut batches) => {
                if batches.len() < front {
                    // An answer decided before any buffer was made (nothing to read).
                    batches.resize(front, 0);
                }
                ReadResult { batches, front, fixed: None, next_offset, high_watermark, start_offset, parked_ns }
            }
        })),
        ReadMode::Time { reply, .. } => reply(res.map(|()| (next_offset != NOT_FOUND).then_some(next_offset))),
    }
}

/// Where a read puts what it found.
enum ReadOut {
    Heap(Vec<u8>),
    /// A registered reply buffer from the core's pool.
    Fixed(AlignedBuf),
}

impl ReadOut {
    fn len(&self) -> usize {
        match self {
            ReadOut::Heap(v) => v.len(),
            ReadOut::Fixed(b) => b.len(),
        }
    }

    fn extend(&mut self, bytes: &[u8]) {
        match self {
            ReadOut::Heap(v) => v.extend_from_slice(bytes),
            ReadOut::Fixed(b) => b.extend_from_slice(bytes),
        }
    }
}

impl From<Vec<u8>> for ReadOut {
    fn from(v: Vec<u8>) -> Self {
        ReadOut::Heap(v)
    }
}

/// After `j` rewound to `pos` for a full disk (its appends from there were
/// refused, `refused` among them): each partition of the log takes back the
/// offsets those appends were given and forgets their index entries, so the
/// next append continues exactly where the log's stored data ends.
fn rewind_partitions<R>(partitions: &mut HashMap<Pid, Partition>, j: &Journal<R>, pos: u64, refused: &[(PendingAck<R>, StromError)]) {
    for (ack, _) in refused {
        if let Some(p) = partitions.get_mut(&ack.pid) {
            p.next_offset = p.next_offset.min(ack.base_offset);
        }
    }
    for p in partitions.values_mut().filter(|p| p.log == j.id) {
        p.index.truncate_from(pos);
        p.staged_max_ts_ms = j.pending_max_ts(p.pid).unwrap_or(i64::MIN).max(p.visible_max_ts_ms);
        debug_assert!(p.next_offset >= p.visible_end);
    }
}

fn unknown(pid: Pid) -> StromError {
    StromError::UnknownPartition { topic: String::new(), partition: pid }
}

fn corrupt_read<R>(j: &Journal<R>, pos: u64, reason: String) -> StromError {
    let path = j.segment_for(pos).map(|s| s.path.clone()).unwrap_or_else(|| j.dir().to_path_buf());
    StromError::Corrupt { path, pos, reason }
}
