//! Opening a core: allocate and register its buffers, recover its logs and
//! rebuild its partitions' state from the checkpoint and the scan after it.
use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::path::Path;

use super::{Core, CoreSpec};
use crate::buf::lent::LentTable;
use crate::buf::registration::{BufferKind, CoreBuffers, RegistrationPlan};
use crate::buf::{AlignedBuf, BLOCK_BYTES};
use crate::config::{EngineConfig, FsyncPolicy};
use crate::error::{Result, StromError};
use crate::io::Io;
use crate::log::checkpoint::{self, Checkpoint};
use crate::log::frame;
use crate::log::journal::{self, Journal, JournalLimits};
use crate::log::recovery::{self, RecoverLimits, RecoveryReport};
use crate::log::segment::log_dir;
use crate::metrics::CoreMetrics;
use crate::partition::producers::ProducerBatch;
use crate::partition::{ObservedBatch, Partition, Pid, log_of};
use crate::read::{ReadLimits, ReadPath};
use crate::wire::batch::BatchInfo;

impl<I: Io> Core<I> {
    /// Allocates and registers this core's buffers, recovers its logs and
    /// rebuilds its partitions' state. Fails on corruption of acknowledged data.
    pub fn open(mut io: I, cfg: EngineConfig, spec: CoreSpec) -> Result<(Core<I>, Vec<RecoveryReport>)> {
        cfg.validate()?;
        let kinds = CoreBuffers::of(&cfg, spec.logs.len(), spec.needs.reply_bufs);
        let plan = RegistrationPlan::for_core(&kinds, cfg.registered_bytes_max, cfg.cores);
        let (mut write_bufs, read_bufs, reply_bufs) = allocate_buffers(&mut io, &kinds, &plan, spec.logs.len())?;
        let limits = ReadLimits {
            batch_bytes_max: cfg.batch_bytes_max,
            index_interval_bytes: cfg.index_interval_bytes,
            reads_inflight_max: cfg.reads_inflight_max,
            durable_only: cfg.fsync == FsyncPolicy::Always,
            answer_bytes_initial: cfg.write_buf_bytes,
            read_only: cfg.read_only,
        };
        let mut core = Core {
            io,
            cfg,
            spec: spec.clone(),
            journals: BTreeMap::new(),
            pos_marks: HashMap::new(),
            clock_offset_ns: 0,
            partitions: HashMap::new(),
            reads: ReadPath::new(limits, read_bufs, reply_bufs),
            queries: Default::default(),
            retired: Vec::new(),
            refused: Vec::new(),
            deferred: VecDeque::new(),
            checkpoint_bytes: BTreeMap::new(),
            checkpoint_pos: BTreeMap::new(),
            last_retention_ns: 0,
            stop: None,
            stopped: false,
            lent: LentTable::default(),
            completions: Vec::new(),
            net_completions: Vec::new(),
            metrics: CoreMetrics::default(),
            published: BTreeMap::new(),
            following: BTreeMap::new(),
        };
        let mut reports = Vec::new();
        for (&log, log_bufs) in spec.logs.iter().zip(write_bufs.drain(..)) {
            reports.push(if core.cfg.read_only { core.open_log_following(log, log_bufs)? } else { core.open_log(log, log_bufs)? });
        }
        // Gauges set once: what this start cost, for an operator sizing checkpoints.
        core.metrics.startup_scan_us = reports.iter().map(|r| r.elapsed_us).sum();
        core.metrics.startup_scan_bytes = reports.iter().map(|r| r.bytes_scanned).sum();
        core.share_runs();
        core.last_retention_ns = core.io.now_ns();
        Ok((core, reports))
    }

    /// The log's checkpoint, if one is there and usable.
    /// What each of this core's journals is built with.
    pub(super) fn journal_limits(&self) -> JournalLimits {
        JournalLimits {
            policy: self.cfg.fsync,
            write_buf_bytes: self.cfg.write_buf_bytes,
            write_bufs: self.cfg.write_bufs_per_log,
            write_depth: self.cfg.write_depth,
            commit_bytes_max: self.cfg.commit_bytes_max,
            fsync_depth: self.cfg.fsync_depth,
            segment_bytes: self.cfg.segment_bytes,
        }
    }

    pub(super) fn read_checkpoint(&mut self, log: u32) -> Result<Option<Checkpoint>> {
        let dir = log_dir(&self.spec.data_dir, log);
        Ok(match self.io.read_file(&dir.join(checkpoint::FILE_NAME))? {
            None => None,
            // A newer format is refused, not skipped: scanning instead would
            // lose what only the checkpoint remembers (the next offset of a
            // partition whose data retention deleted).
            Some(bytes) if checkpoint::version_of(&bytes).is_some_and(|v| v > checkpoint::VERSION) => {
                return Err(StromError::BadDataDir(format!(
                    "{} is checkpoint format version {}, newer than this strom reads (1 to {}): run the strom that wrote it, \
                     or remove the file to rebuild the log's state by scanning it",
                    dir.join(checkpoint::FILE_NAME).display(),
                    checkpoint::version_of(&bytes).unwrap_or_default(),
                    checkpoint::VERSION
                )));
            }
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
        })
    }

    /// The log's partitions as its checkpoint left them (fresh without one).
    pub(super) fn partitions_at(&self, log: u32, ckpt: Option<&Checkpoint>) -> HashMap<Pid, Partition> {
        let log_count = self.spec.log_count;
        let mut parts: HashMap<Pid, Partition> =
            self.spec.pids.iter().filter(|&&p| log_of(p, log_count) == log).map(|&p| (p, Partition::new(p, log))).collect();
        for pc in ckpt.iter().flat_map(|c| &c.partitions) {
            if let Some(p) = parts.get_mut(&pc.pid) {
                p.next_offset = pc.next_offset;
                p.visible_end = pc.next_offset;
                p.start_offset = pc.start_offset;
                p.visible_max_ts_ms = pc.max_ts_ms;
                p.staged_max_ts_ms = pc.max_ts_ms;
                p.restore(pc.entries.clone(), pc.max_ts_ms, ckpt.filter(|c| c.has_spans()).map(|_| pc.spans.as_slice()));
                p.producers.restore(&pc.producers);
            }
        }
        for (pid, names) in &self.spec.indexed {
            if let Some(p) = parts.get_mut(pid) {
                let mut n = crate::partition::NamedIndex::new(names.clone());
                let kept = ckpt.iter().flat_map(|c| &c.partitions).find(|pc| pc.pid == *pid).and_then(|pc| pc.named.as_ref());
                if let Some((_, c)) = kept {
                    n.restore(c);
                }
                p.named = Some(n);
            }
        }
        parts
    }

    fn open_log(&mut self, log: u32, bufs: Vec<AlignedBuf>) -> Result<RecoveryReport> {
        let dir = log_dir(&self.spec.data_dir, log);
        let ckpt = self.read_checkpoint(log)?;
        let full_scan = ckpt.is_none();
        let mut parts = self.partitions_at(log, ckpt.as_ref());
        let limits = RecoverLimits {
            payload_bytes_max: self.cfg.batch_bytes_max as u32,
            tear_window_bytes: self.cfg.tear_window_bytes(),
            read_chunk_bytes: self.cfg.write_buf_bytes + BLOCK_BYTES,
            read_only: false,
            ignore_checkpoint: false,
        };
        let indexed = &self.spec.indexed;
        let wants_payload = |pid: Pid| indexed.contains_key(&pid);
        let mut feed = Feed::new(&mut parts, self.cfg.index_interval_bytes, &dir, full_scan, Strict::Refuse);
        let mut on_batch =
            |h: &frame::FrameHeader, info: &BatchInfo, seg_start: u64, payload: Option<&[u8]>| feed.batch(h, info, seg_start, payload);
        // A log that failed is cut where its trusted data ended (DURABILITY.md).
        // Completions of other ops cannot exist yet: nothing else was pushed.
        let mut stray = Vec::new();
        let fenced = journal::fence_failed_tail(&mut self.io, &dir, &mut stray)?;
        assert!(stray.is_empty(), "an op completed before the core started: {stray:?}");
        let (state, report) = recovery::recover(
            &mut self.io,
            &dir,
            log,
            ckpt.as_ref(),
            &limits,
            &mut recovery::OnBatch { wants_payload: &wants_payload, batch: &mut on_batch },
        )?;
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
        let jl = self.journal_limits();
        let mut journal = Journal::new(log, &dir, jl, state, bufs, self.io.now_ns());
        // A spare an earlier run recycled serves this run's next roll.
        journal.adopt_spare(&mut self.io)?;
        self.checkpoint_bytes.insert(log, 0);
        self.checkpoint_pos.insert(log, ckpt.as_ref().map_or(0, |c| c.covered_pos));
        self.journals.insert(log, journal);
        self.partitions.extend(parts);
        self.open_mark(log);
        Ok(report)
    }
}

/// What a batch that does not follow its partition's last one does to a
/// scan: at an open for writing it is damage, refused with its position;
/// a follower skips it with a warning and goes on serving the rest.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Strict {
    Refuse,
    Skip,
}

/// Feeds the batches a scan finds to their partitions, as appends would
/// have: offsets, indices, runs, named index values, producers, visibility.
pub(super) struct Feed<'a> {
    parts: &'a mut HashMap<Pid, Partition>,
    interval: u64,
    dir: &'a Path,
    /// Partitions seen so far, when a scan of a log without a checkpoint
    /// may meet a partition's first batch past offset 0 (retention).
    first_seen: Option<HashSet<Pid>>,
    strict: Strict,
    /// Partitions that got batches, in the order they first did.
    pub grown: Vec<Pid>,
}

impl<'a> Feed<'a> {
    pub(super) fn new(parts: &'a mut HashMap<Pid, Partition>, interval: u64, dir: &'a Path, full_scan: bool, strict: Strict) -> Feed<'a> {
        Feed { parts, interval, dir, first_seen: full_scan.then(HashSet::new), strict, grown: Vec::new() }
    }

    pub(super) fn batch(&mut self, h: &frame::FrameHeader, info: &BatchInfo, seg_start: u64, payload: Option<&[u8]>) -> Result<()> {
        let Some(p) = self.parts.get_mut(&h.pid) else { return Ok(()) };
        let base = info.base_offset as u64;
        if let Some(seen) = &mut self.first_seen
            && seen.insert(h.pid)
            && base > p.next_offset
        {
            // Without a checkpoint the scan starts at the oldest segment
            // left; retention deleted this partition's earlier batches.
            p.next_offset = base;
            p.visible_end = base;
            p.start_offset = base;
        }
        if base != p.next_offset {
            let reason = format!("partition {} batch at offset {base}, expected {}", h.pid, p.next_offset);
            if self.strict == Strict::Skip {
                tracing::warn!(pid = h.pid, pos = h.pos, "a followed batch skipped: {reason}");
                return Ok(());
            }
            return Err(StromError::Corrupt { path: self.dir.to_path_buf(), pos: h.pos, reason });
        }
        let records = info.last_offset_delta as u64 + 1;
        let seen = ObservedBatch { base, records, max_ts_ms: info.max_timestamp_ms, pos: h.pos, frame_bytes: h.frame_bytes() };
        let ts = p.observe_batch(seen, seg_start, self.interval);
        if let (Some(n), Some(payload)) = (&mut p.named, payload) {
            // Stored batches were checked on the way in; one whose values
            // do not read (or go backwards: a bug) leaves the index as it
            // was, and lookups past it scan further, never wrongly.
            match crate::wire::batch::values::batch_values(payload, n.names()) {
                Ok(v) if n.would_decrease(v.first()).is_none() => n.observe(base, base + records, h.frame_bytes(), &v),
                other => tracing::warn!(pid = h.pid, offset = base, ?other, "a recovered batch's index values are not usable"),
            }
        }
        if let Some(b) = ProducerBatch::of(info) {
            // The log is the truth: its batches are kept unchecked.
            p.producers.record(&b, base, base + records, base + records);
        }
        p.make_visible(base + records, ts);
        if !self.grown.contains(&h.pid) {
            self.grown.push(h.pid);
        }
        Ok(())
    }
}

/// How often, and how many times, a registration the kernel refused for
/// want of lockable memory is tried again whole before it is halved (1 s).
const REGISTER_ENOMEM_RETRY_EVERY: std::time::Duration = std::time::Duration::from_millis(50);
const REGISTER_ENOMEM_RETRIES: u32 = 20;

/// A core's buffers, as (write buffers per log, read buffers, reply buffers).
type CoreBufs = (Vec<Vec<AlignedBuf>>, Vec<AlignedBuf>, Vec<AlignedBuf>);

/// Allocates every buffer of `kinds` and registers those `plan` names (see
/// `buf::registration`). Each pool is a stack that takes from its end, so
/// the registered buffers go last: they are the first used. When the kernel
/// refuses the registration for want of lockable memory (pinned pages are
/// charged per user, so another process of the same user may hold part of
/// the limit), the core registers half as many, and so on, and says so.
fn allocate_buffers<I: Io>(io: &mut I, kinds: &CoreBuffers, plan: &RegistrationPlan, logs: usize) -> Result<CoreBufs> {
    let alloc = |kind: BufferKind, n: usize| -> Vec<AlignedBuf> { (0..n).map(|_| AlignedBuf::new(kind.bytes_each)).collect() };
    let write_planned: Vec<usize> = (0..logs).map(|i| plan.write_for_log(i, logs)).collect();
    let mut chosen = alloc(kinds.reply, plan.reply);
    chosen.extend(alloc(kinds.read, plan.read));
    chosen.extend(alloc(kinds.write, plan.write));
    // Halving on ENOMEM keeps the plan's order: `chosen` is in priority order.
    // The whole plan is first tried again for a moment: the kernel releases
    // a closed ring's pinned pages in deferred work, so a start right after
    // another Strom of the same user stopped finds the limit held briefly.
    let mut registered = chosen.len();
    let mut waits_left = REGISTER_ENOMEM_RETRIES;
    while registered > 0 {
        match io.register_buffers(&mut chosen[..registered]) {
            Ok(()) => break,
            Err(StromError::Io { errno: libc::ENOMEM, .. }) if waits_left > 0 => {
                waits_left -= 1;
                std::thread::sleep(REGISTER_ENOMEM_RETRY_EVERY);
            }
            Err(StromError::Io { errno: libc::ENOMEM, .. }) => registered /= 2,
            Err(e) => return Err(e),
        }
    }
    if registered < chosen.len() {
        tracing::warn!(
            registered,
            planned = chosen.len(),
            "the kernel refused to pin all of this core's planned buffers: RLIMIT_MEMLOCK is shared by every \
             process of this user, and others hold part of it; the rest use unregistered I/O"
        );
    }
    let mut chosen = chosen.into_iter();
    let mut reply = alloc(kinds.reply, kinds.reply.count - plan.reply);
    reply.extend(chosen.by_ref().take(plan.reply));
    let mut read = alloc(kinds.read, kinds.read.count - plan.read);
    read.extend(chosen.by_ref().take(plan.read));
    let per_log = kinds.write.count / logs.max(1);
    let write = write_planned
        .iter()
        .map(|&registered| {
            let mut bufs = alloc(kinds.write, per_log - registered);
            bufs.extend(chosen.by_ref().take(registered));
            bufs
        })
        .collect();
    Ok((write, read, reply))
}
