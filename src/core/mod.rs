//! One core: its logs, its partitions, its reads, and its tick.
//!
//! A tick is: reap completions and act on them (retire commits, acknowledge,
//! continue reads); take requests (stage appends into the filling commit,
//! start reads); plan (seal and submit writes, fdatasyncs, disk reads,
//! checkpoints); then submit once and wait. Nothing is written or replied in
//! direct reaction to a single request: everything that arrives in a tick
//! goes out together (group commit).
//!
//! The rooms: [`open`] (allocate, register, recover), [`acks`] (completions,
//! retirement, acknowledgements), [`plan`] (commits, checkpoints, retention,
//! the stop sequence), [`tick`] (the one loop production and the simulator
//! both run), [`task`] (what runs beside the core: the server), [`audit`] (ways to break the core on purpose). Reads live in
//! [`crate::read`]. The core is generic over [`Io`], so the simulator
//! drives exactly this code.
mod acks;
pub mod audit;
mod follow;
pub mod mailbox;
mod open;
mod plan;
pub mod query;
pub mod task;
pub mod tick;

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::path::PathBuf;

use crate::buf::AlignedBuf;
use crate::buf::lent::LentTable;
use crate::catalog::IndexNames;
use crate::config::EngineConfig;
use crate::error::{Result, StromError};
use crate::io::{Completion, Io};
use crate::log::journal::{Journal, PendingAck, StageError};
use crate::metrics::{CoreMetrics, Metrics};
use crate::partition::producers::{ProducerBatch, Verdict};
use crate::partition::{ObservedBatch, Partition, Pid, Retention};
use crate::read::{Fetch, ReadCx, ReadPath, ReadResult, ReadSink};
use crate::stats::StageTrace;
use crate::wire::batch::values::{BatchValues, ValueFault, batch_values};
use crate::wire::batch::{self, BatchInfo};

pub use acks::AppendWait;
pub use audit::AuditBreak;

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

/// A partition's offsets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PartitionStat {
    pub start_offset: u64,
    pub end_offset: u64,
    pub max_ts_ms: i64,
    /// Frame bytes of its data in the log, exact across restarts (a
    /// checkpoint of version 1 counted none before it: `Partition::restore`).
    pub bytes: u64,
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
    /// For a topic with named indices: the batch's values, or why they
    /// were refused (the core, which assigns offsets, names the offset).
    /// Boxed: most batches have none, and a Request must stay small.
    values: Option<Box<std::result::Result<BatchValues, ValueFault>>>,
}

impl ValidBatch {
    pub fn new(bytes: Vec<u8>, batch_bytes_max: usize) -> Result<ValidBatch> {
        let info = batch::validate(&bytes, batch_bytes_max)?;
        Ok(ValidBatch { bytes, info, arrived_ns: 0, values: None })
    }

    /// Validates a batch for a topic with the named indices `names` (none:
    /// as [`ValidBatch::new`]) and reads its values, on the caller's thread.
    pub fn for_topic(bytes: Vec<u8>, batch_bytes_max: usize, names: &[String]) -> Result<ValidBatch> {
        let mut b = ValidBatch::new(bytes, batch_bytes_max)?;
        if !names.is_empty() {
            b.values = Some(Box::new(batch_values(&b.bytes, names)));
        }
        Ok(b)
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
    /// Batches from `fetch.offset`; at the partition's end, a long poll of
    /// up to `fetch.max_wait_ns`. Answers go to `sink`, laid out as it asks.
    Read {
        pid: Pid,
        fetch: Fetch,
        sink: Box<dyn ReadSink>,
    },
    /// The first offset whose record timestamp is at least `ts_ms` (None: past the end).
    OffsetForTime {
        pid: Pid,
        ts_ms: i64,
        /// The offset and that record's timestamp.
        reply: Reply<Option<(u64, i64)>>,
    },
    /// The first offset whose value of a named index reaches a value
    /// (None: no durable record does yet).
    OffsetForIndex {
        pid: Pid,
        seek: crate::read::IndexSeek,
        reply: Reply<Option<u64>>,
    },
    /// The bounds of a range of records, waiting for its end ([`query`]).
    /// `gone` is set when the asker went away (its connection closed).
    Query {
        pid: Pid,
        spec: query::QuerySpec,
        gone: Option<std::sync::Arc<std::sync::atomic::AtomicBool>>,
        reply: Reply<query::QueryBounds>,
    },
    Stat {
        pid: Pid,
        reply: Reply<PartitionStat>,
    },
    /// This core's metrics registry: its own section, its logs' summed,
    /// its read path's, with the gauges sampled now.
    Metrics {
        reply: Reply<Metrics>,
    },
    /// New partitions, with their topic's effective retention.
    AddPartitions {
        pids: Vec<Pid>,
        retention: Retention,
        /// The topic's named indices (empty: none).
        indices: IndexNames,
        reply: Reply<()>,
    },
    /// Partitions' effective retention: at start-up, and when a topic's changed.
    SetRetention {
        limits: Vec<(Pid, Retention)>,
    },
    RemovePartitions {
        pids: Vec<Pid>,
    },
    /// Requests taken as one, in order, with nothing between them: the
    /// appends of a multi-batch Produce get consecutive offsets.
    Group(Vec<Request>),
    /// A read-only follower's log: the writer's durable mark moved
    /// (`src/follow.rs` reads it; the core scans what it adds).
    Follow {
        log: u32,
        mark: crate::log::mark::DurableMark,
    },
    /// Drain, fsync, checkpoint every log, answer, and leave the loop.
    Stop {
        reply: Reply<()>,
    },
}

impl Request {
    /// A read answered once, at once (no long poll), on the heap.
    pub fn read(pid: Pid, offset: u64, max_bytes: usize, reply: Reply<ReadResult>) -> Request {
        Request::Read { pid, fetch: Fetch { offset, max_bytes, max_wait_ns: 0 }, sink: crate::read::once(reply) }
    }

    /// Answers the request with `e` without doing it (its core is gone).
    pub fn refuse(self, e: StromError) {
        match self {
            Request::Append { reply, .. } => reply(Err(e)),
            Request::Read { mut sink, .. } => {
                sink.deliver(Err(e));
            }
            Request::OffsetForTime { reply, .. } => reply(Err(e)),
            Request::OffsetForIndex { reply, .. } => reply(Err(e)),
            Request::Stat { reply, .. } => reply(Err(e)),
            Request::Query { reply, .. } => reply(Err(e)),
            Request::Metrics { reply } => reply(Err(e)),
            Request::AddPartitions { reply, .. } | Request::Stop { reply } => reply(Err(e)),
            Request::RemovePartitions { .. } | Request::SetRetention { .. } | Request::Follow { .. } => {}
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
    /// Every partition of this core's logs, from the catalog. They start
    /// with no retention limits until the broker sends their topics' own
    /// ([`Request::SetRetention`], queued before any other request): keeping
    /// data a moment longer is the safe side.
    pub pids: Vec<Pid>,
    /// The named indices of those partitions whose topic declared some.
    pub indexed: HashMap<Pid, IndexNames>,
    /// What the task that will run beside the core needs (a server's).
    pub needs: task::TaskNeeds,
    /// A read-only follower's: the writer's durable mark of each of this
    /// core's logs, read before the catalog (a log without one is served
    /// up to its checkpoint until one comes).
    pub marks: HashMap<u32, crate::log::mark::DurableMark>,
}

pub struct Core<I: Io> {
    pub io: I,
    cfg: EngineConfig,
    spec: CoreSpec,
    journals: BTreeMap<u32, Journal<AppendWait>>,
    /// Per log: when its written and durable positions advanced.
    pos_marks: HashMap<u32, acks::PosMarks>,
    /// Added to `io.now_ns()` to give the stage clock all cores share.
    clock_offset_ns: u64,
    partitions: HashMap<Pid, Partition>,
    reads: ReadPath,
    /// Range queries in progress ([`query`]).
    queries: query::Queries,
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
    /// Registered buffers lent to ops and replies (the buffer-reuse audit).
    lent: LentTable,
    /// Reaped completions, kept to reuse the allocation.
    completions: Vec<Completion>,
    /// Completions of network ops, for the task running on this core's ring
    /// to take after each reap.
    pub net_completions: Vec<Completion>,
    /// The core's own section of its metrics; [`Core::metrics`] adds its
    /// logs' and its read path's.
    metrics: CoreMetrics,
    /// A writer's durable marks, per log ([`crate::log::mark`]).
    published: BTreeMap<u32, follow::Published>,
    /// A read-only follower's logs (`cfg.read_only`).
    following: BTreeMap<u32, follow::Followed>,
}

impl<I: Io> Core<I> {
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

    /// The read path and what it borrows from the core, for one call.
    /// Gives each partition its share of the core's bound on runs
    /// ([`crate::partition::runs::runs_max_for`]), whenever the core's
    /// partitions change: together they never keep more than
    /// `RUNS_PER_CORE_MAX`.
    pub(crate) fn share_runs(&mut self) {
        let runs_max = crate::partition::runs::runs_max_for(self.partitions.len());
        for p in self.partitions.values_mut() {
            p.runs.set_max(runs_max);
        }
    }

    fn read_cx(&mut self) -> (&mut ReadPath, ReadCx<'_, I, Journal<AppendWait>>) {
        let cx = ReadCx { io: &mut self.io, logs: &mut self.journals, partitions: &self.partitions, lent: &mut self.lent };
        (&mut self.reads, cx)
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
        if matches!(req, Request::Read { .. } | Request::OffsetForTime { .. } | Request::OffsetForIndex { .. }) && self.reads.full() {
            // Every read slot is busy: hold this one (and, behind it, the
            // mailbox) until a read finishes, instead of growing.
            self.metrics.deferred += 1;
            self.deferred.push_front(req);
            return;
        }
        match req {
            Request::Append { pid, batch, reply } => self.append(pid, batch, reply),
            Request::Read { pid, fetch, sink } => {
                let may_wait = self.stop.is_none();
                let (reads, mut cx) = self.read_cx();
                reads.fetch(&mut cx, pid, fetch, sink, may_wait);
            }
            Request::OffsetForTime { pid, ts_ms, reply } => {
                let (reads, mut cx) = self.read_cx();
                reads.offset_for_time(&mut cx, pid, ts_ms, reply);
            }
            Request::OffsetForIndex { pid, seek, reply } => {
                let (reads, mut cx) = self.read_cx();
                reads.offset_for_index(&mut cx, pid, seek, reply);
            }
            Request::Query { pid, spec, gone, reply } => self.start_query(pid, spec, gone, reply),
            Request::Stat { pid, reply } => reply(match self.partitions.get(&pid) {
                Some(p) => Ok(PartitionStat {
                    start_offset: p.start_offset,
                    end_offset: p.visible_end,
                    max_ts_ms: p.visible_max_ts_ms,
                    bytes: p.span_bytes,
                }),
                None => Err(StromError::UnknownPartition { topic: String::new(), partition: pid }),
            }),
            Request::Metrics { reply } => reply(Ok(self.metrics())),
            Request::AddPartitions { pids, retention, indices, reply } => {
                for pid in pids {
                    let log = crate::partition::log_of(pid, self.spec.log_count);
                    if self.journals.contains_key(&log) {
                        let p = self.partitions.entry(pid).or_insert_with(|| Partition::new(pid, log));
                        p.retention = retention;
                        if !indices.is_empty() && p.named.is_none() {
                            p.named = Some(crate::partition::NamedIndex::new(indices.clone()));
                        }
                    }
                }
                self.share_runs();
                reply(Ok(()))
            }
            Request::SetRetention { limits } => {
                for (pid, retention) in limits {
                    if let Some(p) = self.partitions.get_mut(&pid) {
                        p.retention = retention;
                    }
                }
            }
            Request::RemovePartitions { pids } => {
                for pid in pids {
                    self.partitions.remove(&pid);
                    // Waiting readers of a deleted topic get a typed error now.
                    let (reads, mut cx) = self.read_cx();
                    reads.unpark(&mut cx, pid);
                }
                self.share_runs();
            }
            Request::Follow { log, mark } => self.follow(log, mark),
            Request::Stop { reply } => {
                self.stop = Some(reply);
            }
            Request::Group(reqs) => self.handle_group(reqs),
        }
    }

    fn handle_group(&mut self, reqs: Vec<Request>) {
        let mut rest = reqs.into_iter();
        while let Some(r) = rest.next() {
            let before = self.deferred.len();
            self.handle_now(r);
            if self.deferred.len() > before {
                // It must wait (no write buffer) and went to the front of
                // the deferred queue: the rest of the group goes right
                // behind it, ahead of anything else.
                for (i, r) in rest.enumerate() {
                    self.deferred.insert(1 + i, r);
                }
                return;
            }
        }
    }

    fn append(&mut self, pid: Pid, batch: ValidBatch, reply: Reply<AppendAck>) {
        if self.stop.is_some() {
            return reply(Err(StromError::ShuttingDown));
        }
        if self.cfg.read_only {
            // The broker refuses first; a follower's log is never staged into.
            return reply(Err(StromError::ReadOnly("append".into())));
        }
        let Some(p) = self.partitions.get_mut(&pid) else {
            return reply(Err(StromError::UnknownPartition { topic: String::new(), partition: pid }));
        };
        let producer = ProducerBatch::of(&batch.info);
        if let Some(b) = &producer {
            match p.producers.check(b) {
                Ok(Verdict::Append) => {}
                Ok(Verdict::Duplicate(first)) => return self.answer_duplicate(pid, first, batch.arrived_ns, reply),
                Err(e) => {
                    // Like a refused index value: nothing is stored, and
                    // the other batches of its request go on as they would.
                    self.metrics.appends_refused += 1;
                    return reply(Err(e));
                }
            }
        }
        let base = p.next_offset;
        let values = match index_values(p, &batch, base) {
            Ok(v) => v,
            Err(e) => {
                self.metrics.appends_refused += 1;
                return reply(Err(e));
            }
        };
        let journal = self.journals.get_mut(&p.log).expect("partition's log is on its core");
        let bytes = &batch.bytes;
        let staged = journal.stage(&mut self.io, pid, bytes.len(), |dst| {
            dst.copy_from_slice(bytes);
            batch::set_base_offset(dst, base);
        });
        match staged {
            Ok(pos) => {
                let records = batch.records();
                let seg_start = journal.active_segment_start();
                let frame_bytes = (crate::log::frame::HEADER_BYTES + bytes.len()) as u64;
                let seen = ObservedBatch { base, records, max_ts_ms: batch.info.max_timestamp_ms, pos, frame_bytes };
                let max_ts_ms = p.observe_batch(seen, seg_start, self.cfg.index_interval_bytes);
                if let (Some(n), Some(v)) = (&mut p.named, values) {
                    n.observe(base, base + records, frame_bytes, &v);
                }
                if let Some(b) = &producer
                    && p.producers.record(b, base, base + records, p.visible_end)
                {
                    self.metrics.producers_forgotten += 1;
                }
                let staged_ns = self.io.now_ns() + self.clock_offset_ns;
                let trace = StageTrace { arrived_ns: batch.arrived_ns, staged_ns, ..StageTrace::default() };
                let wait = AppendWait { reply, trace, pos };
                journal.attach(PendingAck { pid, base_offset: base, end_offset: base + records, max_ts_ms, reply: wait });
                self.metrics.appends += 1;
                self.metrics.records += records;
                self.metrics.appended_bytes += bytes.len() as u64;
            }
            Err(StageError::NoBuffer) => {
                self.metrics.deferred += 1;
                self.deferred.push_front(Request::Append { pid, batch, reply });
            }
            Err(StageError::Failed(e)) => {
                self.metrics.appends_refused += 1;
                reply(Err(e))
            }
        }
    }
}

/// A batch's named index values for partition `p`, whose next offset is
/// `base`: None for a partition without named indices; an error naming the
/// index and the offset for a batch that lacks a value, carries a bad one,
/// or goes below the partition's last values (nothing of it is stored).
fn index_values(p: &Partition, batch: &ValidBatch, base: u64) -> Result<Option<BatchValues>> {
    let Some(n) = &p.named else { return Ok(None) };
    let name = |i: usize| n.names()[i].clone();
    let v = match batch.values.as_deref() {
        Some(Ok(v)) if v.count as usize == n.names().len() => *v,
        Some(Err(f)) => {
            return Err(StromError::BadIndexValue {
                index: f.index().map_or_else(String::new, name),
                offset: base + u64::from(f.record().unwrap_or(0)),
                reason: f.reason(),
            });
        }
        // Validated against other names than the partition's: cannot
        // happen (a topic's indices never change), refused rather than trusted.
        _ => {
            return Err(StromError::BadIndexValue {
                index: String::new(),
                offset: base,
                reason: "the batch was not validated against the topic's indices".into(),
            });
        }
    };
    if let Some((i, previous)) = n.would_decrease(v.first()) {
        return Err(StromError::BadIndexValue {
            index: name(i),
            offset: base,
            reason: format!("value {} is below the partition's last value {previous}", v.first[i]),
        });
    }
    Ok(Some(v))
}

impl<I: Io> Core<I> {
    /// This core's metrics registry: the core's section (with its ring's
    /// ops in flight and the buffer audit sampled now), its logs' sections
    /// summed, and its read path's. The server's sections are left at 0:
    /// the server task fills them ([`crate::server::Server::metrics`]).
    pub fn metrics(&self) -> Metrics {
        let mut m = Metrics { core: self.metrics, read: self.reads.metrics(), ..Metrics::default() };
        m.core.ops_in_flight = self.io.in_flight() as u64;
        m.core.audit_buffer_reuse = self.lent.reuse_violations;
        for j in self.journals.values() {
            m.log.merge(&j.metrics);
            // Sampled here, not counted: a full disk frees and a restart
            // clears a failure, and `/health` reads them as a state.
            m.log.failed += u64::from(j.failed().is_some());
            m.log.disk_full += u64::from(j.disk_full());
            m.log.segments += j.segments().len() as u64;
            m.log.log_bytes += j.written_pos().saturating_sub(j.segments().front().map_or(j.written_pos(), |s| s.start_pos));
        }
        m
    }

    /// Takes back a registered reply buffer once its send completed.
    pub fn give_reply_buf(&mut self, buf: AlignedBuf) {
        self.reads.give_reply_buf(&mut self.lent, buf);
    }

    /// Answers every long poll now and parks no more: a stopping server
    /// must not wait out their waits before it can stop.
    pub fn close_parking(&mut self) {
        let (reads, mut cx) = self.read_cx();
        reads.close_parking(&mut cx);
    }

    /// Checks the relations that must hold between ticks.
    pub fn invariants(&self) {
        for j in self.journals.values() {
            j.invariants();
        }
        for p in self.partitions.values() {
            p.invariants();
        }
        self.reads.invariants();
        self.queries.invariants();
    }
}
