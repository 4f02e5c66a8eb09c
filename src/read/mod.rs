//! The read path: fetches, long polls and time lookups, over a narrow view
//! of a log ([`view::LogView`]).
//!
//! A read starts at the sparse index entry at or before its offset and
//! walks frames ([`cursor::Cursor`]) up to the log's visible position,
//! taking bytes from the tail cache while the log still holds them and
//! from a `READ_FIXED` into one of the core's registered read buffers
//! otherwise. Its answer goes to a [`sink::ReadSink`], assembled after the
//! headroom the sink asked for, in a registered reply buffer when the sink
//! allows it. A Fetch at the partition's end parks as a long poll
//! ([`poll::ParkedPolls`]) until new data is retired or its wait is over.
//! A catch-up Fetch stopped by its size leaves its cursor reading ahead
//! for the next one ([`ahead`]).
//!
//! The read path owns its state (cursors, buffers, parked polls); the core
//! lends it the rest for one call ([`ReadCx`]): its I/O, its logs, its
//! partitions and its table of lent registered buffers.
mod ahead;
mod chunks;
pub mod cursor;
mod longpoll;
pub mod poll;
mod resume;
mod share;
mod sidecars;
pub mod sink;
pub mod view;

use std::collections::{BTreeMap, HashMap, VecDeque};

use slab::Slab;

use crate::buf::lent::LentTable;
use crate::buf::{AlignedBuf, align_down, align_up};
use crate::core::Reply;
use crate::error::{IoOp, Result, StromError};
use crate::io::token::{OpKind, Token};
use crate::io::{Completion, Io, Op};
use crate::metrics::ReadMetrics;
use crate::partition::{Partition, Pid};

use crate::log::frame::HEADER_BYTES;
use ahead::Windows;
use chunks::Chunks;
use cursor::{Cursor, CursorLimits, NOT_FOUND, ReadMode, ReadOut, Step, StepNotes, corrupt};
pub use poll::PARKED_READS_MAX;
use poll::{BudgetWaits, ParkedPolls};
use resume::ResumeHints;
use share::{Followers, Shared};
use sidecars::Sidecars;
pub use sink::{OnceSink, ReadResult, ReadSink, RegisteredBatches, ReplyBudget, SinkFlow, once};
use view::LogView;

/// What the core lends the read path for one call.
pub struct ReadCx<'a, I, V> {
    pub io: &'a mut I,
    pub logs: &'a mut BTreeMap<u32, V>,
    pub partitions: &'a HashMap<Pid, Partition>,
    pub lent: &'a mut LentTable,
}

/// The limits of one core's read path.
#[derive(Debug, Clone, Copy)]
pub struct ReadLimits {
    pub batch_bytes_max: usize,
    pub index_interval_bytes: u64,
    /// Reads in progress at most; past it new reads wait (the core defers them).
    pub reads_inflight_max: usize,
    /// Under `always`, nothing past a log's durable position is served.
    pub durable_only: bool,
    /// A heap answer's first allocation at most (a registered one is a whole buffer).
    pub answer_bytes_initial: usize,
    /// A read-only follower's: sidecars are read, never written or rebuilt.
    pub read_only: bool,
}

/// What an index lookup asks for: the first record whose value of index
/// `name` is at least `value` (`strict`: above it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IndexSeek {
    pub name: String,
    pub value: i64,
    pub strict: bool,
}

/// What a fetch asks for: batches from `offset`, up to about `max_bytes`
/// (at least one batch); at the partition's end, a wait of up to
/// `max_wait_ns` for new data (0: answer at once, maybe empty).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fetch {
    pub offset: u64,
    pub max_bytes: usize,
    pub max_wait_ns: u64,
}

pub struct ReadPath {
    limits: ReadLimits,
    cursors: Slab<Cursor>,
    /// Reads waiting for a free read buffer (or an op slot), in arrival order.
    waiters: VecDeque<usize>,
    read_bufs: Vec<AlignedBuf>,
    read_bufs_total: usize,
    /// Registered buffers answers are assembled in and sent from, while free.
    reply_bufs: Vec<AlignedBuf>,
    parked: ParkedPolls,
    /// Fetches with data that wait for room in their reply budget.
    budget_waits: BudgetWaits,
    /// Subscriptions to read on from where their last answer ended.
    resumed: VecDeque<(Pid, ReadMode)>,
    /// The read path's section of its core's metrics (gauges sampled by
    /// [`ReadPath::metrics`]).
    metrics: ReadMetrics,
    /// Where each partition's last dense fetch stopped, so the next one
    /// starts there rather than at the start of its run.
    resume: ResumeHints,
    /// Sidecars written and loaded: the runs of sealed segments.
    sidecars: Sidecars,
    /// Cursors of finished catch-up fetches reading ahead for the next.
    windows: Windows,
    /// Reads waiting for another read's chunk rather than reading it again.
    followers: Followers,
    /// Test hook: reads look past the retired position.
    serve_unretired: bool,
    /// Test hook: every read reads for itself (none shares another's chunk).
    unshared: bool,
}

impl ReadPath {
    pub fn new(limits: ReadLimits, read_bufs: Vec<AlignedBuf>, reply_bufs: Vec<AlignedBuf>) -> ReadPath {
        ReadPath {
            limits,
            cursors: Slab::new(),
            waiters: VecDeque::new(),
            read_bufs_total: read_bufs.len(),
            read_bufs,
            reply_bufs,
            parked: ParkedPolls::new(),
            budget_waits: BudgetWaits::default(),
            resumed: VecDeque::new(),
            metrics: ReadMetrics::default(),
            resume: ResumeHints::default(),
            sidecars: Sidecars::default(),
            windows: Windows::default(),
            followers: Followers::default(),
            serve_unretired: false,
            unshared: false,
        }
    }

    /// Every read slot is busy: new reads must wait (windows take none).
    pub fn full(&self) -> bool {
        self.cursors.len() - self.windows.len() >= self.limits.reads_inflight_max
    }

    /// No read is in progress.
    pub fn idle(&self) -> bool {
        self.cursors.is_empty() && self.resumed.is_empty() && self.budget_waits.is_empty() && !self.sidecars.scanning()
    }

    /// The read path's metrics, with its free read and reply buffers now.
    pub fn metrics(&self) -> ReadMetrics {
        ReadMetrics {
            read_bufs_free: self.read_bufs.len() as u64,
            reply_bufs_free: self.reply_bufs.len() as u64,
            ahead_windows_open: self.windows.len() as u64,
            ahead_held_bytes: self.window_bytes(),
            ..self.metrics
        }
    }

    /// Takes back a reply buffer of this core's pool once its send
    /// completed (registered or not: `buf::registration`).
    pub fn give_reply_buf(&mut self, lent: &mut LentTable, mut buf: AlignedBuf) {
        lent.home(buf.fixed_index());
        buf.set_len(0);
        self.reply_bufs.push(buf);
    }

    /// Test hook: reads look past the retired position.
    pub fn serve_unretired_for_audit(&mut self) {
        self.serve_unretired = true;
    }

    /// Test hook: two free read buffers name the same registered index.
    /// Reads no longer share chunks (`share.rs`), so that two reads of the
    /// same bytes each take a buffer, as the audit needs to see the alias.
    pub fn alias_read_buffers_for_audit(&mut self) {
        self.unshared = true;
        let i = self.read_bufs.last().and_then(|b| b.fixed_index()).expect("a free registered read buffer");
        let other = self.read_bufs.len().checked_sub(2).expect("two free read buffers");
        self.read_bufs[other].set_fixed_index(Some(i));
    }

    // ---- requests ----

    /// A fetch: answered now, or parked at the partition's end for up to
    /// `max_wait_ns` (0: answered now, maybe empty). `may_wait` is false
    /// while the core stops.
    pub fn fetch<I: Io, V: LogView>(&mut self, cx: &mut ReadCx<'_, I, V>, pid: Pid, f: Fetch, sink: Box<dyn ReadSink>, may_wait: bool) {
        let Fetch { offset, max_bytes, max_wait_ns } = f;
        let released = sink.release_flag().is_some_and(|f| f.load(std::sync::atomic::Ordering::Relaxed));
        let mode = ReadMode::Fetch { offset, max_bytes, max_wait_ns, parked_ns: 0, sink };
        let at_end = cx.partitions.get(&pid).is_some_and(|p| p.visible_end == offset);
        if at_end && max_wait_ns > 0 && may_wait && !released && self.parked.may_park() {
            self.parked.park(pid, offset, mode, cx.io.now_ns(), max_wait_ns);
        } else {
            self.start(cx, pid, mode, offset);
        }
    }

    /// The first offset whose record timestamp is at least `ts_ms`.
    /// Answers the offset and that record's timestamp.
    pub fn offset_for_time<I: Io, V: LogView>(
        &mut self,
        cx: &mut ReadCx<'_, I, V>,
        pid: Pid,
        ts_ms: i64,
        reply: Reply<Option<(u64, i64)>>,
    ) {
        self.start(cx, pid, ReadMode::Time { ts_ms, found_ts_ms: ts_ms, reply }, 0);
    }

    /// The first offset whose value of index `name` is at least `value`
    /// (`strict`: above it); None when no durable record has one yet.
    pub fn offset_for_index<I: Io, V: LogView>(&mut self, cx: &mut ReadCx<'_, I, V>, pid: Pid, seek: IndexSeek, reply: Reply<Option<u64>>) {
        let IndexSeek { name, value, strict } = seek;
        self.start(cx, pid, ReadMode::Index { name, value, strict, reply }, 0);
    }

    // ---- the cursor's life ----

    fn start<I: Io, V: LogView>(&mut self, cx: &mut ReadCx<'_, I, V>, pid: Pid, mode: ReadMode, offset: u64) {
        if let ReadMode::Fetch { sink, .. } = &mode
            && sink.cancelled()
        {
            return;
        }
        let Some(p) = cx.partitions.get(&pid) else { return self.answer(pid, mode, Err(unknown(pid)), empty(), 0, (0, 0)) };
        self.metrics.reads += 1;
        let (start, end) = (p.start_offset, p.visible_end);
        let mut sidecar = None;
        let entry = match &mode {
            ReadMode::Fetch { .. } if offset < start || offset > end => {
                let e = StromError::OffsetOutOfRange { offset, earliest: start, end };
                return self.answer(pid, mode, Err(e), empty(), 0, (end, start));
            }
            ReadMode::Fetch { .. } if offset == end => return self.answer(pid, mode, Ok(()), empty(), end, (end, start)),
            // Exactly the partition's runs when they reach back to the
            // offset, else those of the sealed segment's sidecar holding it.
            ReadMode::Fetch { .. } => match p.runs.find_offset(offset).and_then(|i| p.runs.get(i)) {
                Some(r) => Some(self.resume.start_in(pid, offset, r)),
                None => p.index.floor(offset).map(|e| match self.sidecars.find(cx.io, (p.log, &cx.logs[&p.log]), pid, offset, e.pos) {
                    Some((s, r)) => {
                        sidecar = Some(s);
                        self.resume.start_in(pid, offset, &r)
                    }
                    None => e,
                }),
            },
            ReadMode::Time { ts_ms, .. } if *ts_ms > p.visible_max_ts_ms => {
                return self.answer(pid, mode, Ok(()), empty(), NOT_FOUND, (end, start));
            }
            ReadMode::Time { ts_ms, .. } => p.index.scan_start_for_time(*ts_ms),
            ReadMode::Index { name, value, strict, .. } => match index_scan_start(p, name, *value, *strict) {
                Err(e) => return self.answer(pid, mode, Err(e), empty(), 0, (end, start)),
                Ok(None) => return self.answer(pid, mode, Ok(()), empty(), NOT_FOUND, (end, start)),
                Ok(Some(entry)) => entry,
            },
            ReadMode::Spent | ReadMode::Ahead => unreachable!("a read starts with a request"),
        };
        let none_yet = if matches!(mode, ReadMode::Time { .. } | ReadMode::Index { .. }) { NOT_FOUND } else { offset };
        let Some(entry) = entry else { return self.answer(pid, mode, Ok(()), empty(), none_yet, (end, start)) };
        let dense = matches!(mode, ReadMode::Fetch { .. }) && (sidecar.is_some() || p.runs.find_offset(offset).is_some());
        let mut mode = mode;
        if !self.admit(&mut mode) {
            // Not started after all: it counts when it is.
            self.metrics.reads -= 1;
            let gone = matches!(&mode, ReadMode::Fetch { sink, .. } if sink.asker_gone());
            if self.budget_waits.closed() || gone {
                return self.answer(pid, mode, Err(StromError::ShuttingDown), empty(), 0, (end, start));
            }
            // Released by its asker: answered now, with nothing, rather
            // than wait for room its own request may be holding.
            if matches!(&mode, ReadMode::Fetch { sink, .. } if sink.release_flag().is_some_and(|f| f.load(std::sync::atomic::Ordering::Relaxed)))
            {
                return self.answer(pid, mode, Ok(()), empty(), offset, (end, start));
            }
            return self.budget_waits.push(pid, offset, mode);
        }
        let (out, headroom_bytes, budget_bytes) = self.answer_buffer(&mode);
        if let ReadOut::Registered(b) = &out {
            cx.lent.lend(b.fixed_index());
        }
        let log = p.log;
        let j = &cx.logs[&log];
        let limit = if self.serve_unretired { j.written_pos() } else { j.visible_pos() };
        let fresh = Cursor {
            pid,
            log,
            mode,
            pos: entry.pos,
            limit,
            last_hit: entry.pos,
            expect_base: entry.offset,
            headroom_bytes,
            budget_bytes,
            out,
            next_offset: none_yet,
            chunks: Chunks::default(),
            chunk_hit_bytes: 0,
            spent: false,
            dense,
            served_disk_bytes: 0,
            served_end_pos: 0,
            sidecar,
            reread: false,
        };
        let slot = match dense.then(|| self.take_window(pid, offset, log, entry.pos)).flatten() {
            Some(w) => {
                self.adopt_window(w, fresh);
                w
            }
            None => self.cursors.insert(fresh),
        };
        self.advance(cx, slot);
    }

    /// Whether a fetch may build its answer now: room for its largest
    /// (headroom and `max_bytes`, or one whole batch) is taken from its
    /// asker's reply budget, here, once there is data to answer with.
    fn admit(&mut self, mode: &mut ReadMode) -> bool {
        let ReadMode::Fetch { max_bytes, sink, .. } = mode else { return true };
        !sink.asker_gone() && sink.reserve(sink.headroom_bytes() + (*max_bytes).max(self.limits.batch_bytes_max))
    }

    /// Tries the fetches waiting for reply budget again, oldest first.
    fn retry_budget_waits<I: Io, V: LogView>(&mut self, cx: &mut ReadCx<'_, I, V>) {
        if self.budget_waits.is_empty() {
            return;
        }
        let mut waits = self.budget_waits.take();
        while !self.full() {
            let Some((pid, offset, mode)) = waits.pop_front() else { break };
            self.start(cx, pid, mode, offset);
        }
        self.budget_waits.untried(waits);
    }

    /// The buffer an answer is assembled in, its headroom, and the batch bytes it may take.
    fn answer_buffer(&mut self, mode: &ReadMode) -> (ReadOut, usize, usize) {
        let ReadMode::Fetch { max_bytes, sink, .. } = mode else { return (empty(), 0, 0) };
        let headroom = sink.headroom_bytes();
        if sink.registered_ok()
            && let Some(mut buf) = self.reply_bufs.pop()
        {
            buf.set_len(headroom);
            // The answer must fit the buffer; a batch never exceeds
            // batch_bytes_max, which fits with any headroom (validate).
            let budget = (*max_bytes).min(buf.capacity() - headroom);
            return (ReadOut::Registered(buf), headroom, budget);
        }
        // Sized for a typical answer at once: growing by doubling would
        // copy a large answer several times.
        let mut out = Vec::with_capacity(headroom + (*max_bytes).min(self.limits.answer_bytes_initial));
        out.resize(headroom, 0);
        (ReadOut::Heap(out), headroom, *max_bytes)
    }

    /// Runs a read forward until it finishes or needs the disk.
    fn advance<I: Io, V: LogView>(&mut self, cx: &mut ReadCx<'_, I, V>, slot: usize) {
        let lim = CursorLimits {
            batch_bytes_max: self.limits.batch_bytes_max as u32,
            index_interval_bytes: self.limits.index_interval_bytes,
            durable_only: self.limits.durable_only,
            serve_unretired: self.serve_unretired,
        };
        loop {
            let pid = self.cursors[slot].pid;
            let Some(p) = cx.partitions.get(&pid) else { return self.finish(cx, slot, Err(unknown(pid))) };
            let c = &mut self.cursors[slot];
            let mut notes = StepNotes::default();
            let step = c.step(p, &cx.logs[&c.log], &lim, &mut notes);
            if notes.beyond_durable {
                self.metrics.audit_served_beyond_durable += 1;
                debug_assert!(cx.lent.violation_expected, "read of pid {} about to serve past the durable position", c.pid);
            }
            match step {
                Step::Continue => continue,
                Step::Done(res) => return self.finish(cx, slot, res),
                Step::NeedDisk { len } => {
                    if !self.submit(cx, slot, len) {
                        return;
                    }
                }
                Step::Wait => return,
            }
        }
    }

    /// Gets the bytes a read needs at its position: from another read's
    /// chunk ([`share`]; true: they are here now, go on) or from the disk.
    fn submit<I: Io, V: LogView>(&mut self, cx: &mut ReadCx<'_, I, V>, slot: usize, need_bytes: usize) -> bool {
        let c = &mut self.cursors[slot];
        // A partition that filled at least half of its last chunk is dense in
        // its log: read a whole buffer. Otherwise (a first read, or a
        // partition sharing its log with many) read two index intervals: its
        // next batch usually starts within one, and the read should hold it
        // whole, or each of its batches costs a full buffer or two reads.
        let packed = c.chunks.last_len().is_some_and(|n| c.chunk_hit_bytes * 2 >= n);
        let probe_bytes = 2 * self.limits.index_interval_bytes as usize;
        self.read_bufs.extend(c.chunks.take_spent(c.pos, need_bytes));
        let Some(buf) = self.read_bufs.pop().or_else(|| self.reclaim_windows().then(|| self.read_bufs.pop()).flatten()) else {
            self.waiters.push_back(slot);
            return false;
        };
        let c = &mut self.cursors[slot];
        let log = cx.logs.get_mut(&c.log).expect("a read's log is on its core");
        let pos = align_down(c.pos);
        let Some(seg) = log.segment_at(pos) else {
            let err = StromError::OffsetOutOfRange { offset: c.next_offset, earliest: 0, end: 0 };
            self.read_bufs.push(buf);
            self.finish(cx, slot, Err(err));
            return false;
        };
        let len = if c.dense {
            // Exactly the runs ahead (merged across small gaps), within the
            // buffer, the segment, what the answer's budget still takes, and
            // the next chunk already read or being read.
            let end_max = dense_end_max(c, (pos, c.pos), buf.capacity(), seg.next_start_pos, need_bytes);
            let end = cursor::runs_read_end(c.runs(cx.partitions.get(&c.pid).expect("a read's partition")), c.pos, end_max);
            let wanted = (end - pos).max((c.pos - pos) + need_bytes as u64);
            (align_up(wanted) as usize).min(buf.capacity())
        } else {
            let wanted = (c.pos - pos) as usize + need_bytes.max(probe_bytes);
            if packed { buf.capacity() } else { (align_up(wanted as u64) as usize).min(buf.capacity()) }
        };
        debug_assert!((c.pos - pos) as usize + need_bytes <= len, "a frame must fit a read buffer");
        let buf = match self.share(slot, (pos, pos + len as u64), need_bytes, buf) {
            Shared::Copied => return true,
            Shared::Following(buf) => {
                self.read_bufs.push(buf);
                return false;
            }
            Shared::No(buf) => buf,
        };
        let mut buf = buf;
        buf.set_len(0);
        if let Some(buf) = self.push_read(cx, slot, pos, seg, len, buf) {
            self.read_bufs.push(buf);
            self.waiters.push_back(slot);
            return false;
        }
        self.cursors[slot].reread = false;
        if self.cursors[slot].dense {
            self.read_ahead(cx, slot);
        }
        false
    }

    /// Pushes chunk read of `len` bytes at log position `pos` for the read
    /// in `slot`; the buffer back when the ring is full.
    fn push_read<I: Io, V: LogView>(
        &mut self,
        cx: &mut ReadCx<'_, I, V>,
        slot: usize,
        pos: u64,
        seg: view::SegmentRef,
        len: usize,
        buf: AlignedBuf,
    ) -> Option<AlignedBuf> {
        let c = &mut self.cursors[slot];
        let fixed = buf.fixed_index();
        let op = Op::Read { file: seg.file, pos: pos - seg.start_pos, len, buf };
        // The sequence the chunk will have, known before the push.
        let seq = c.chunks.push_in_flight(pos, len, c.limit);
        match cx.io.push(op, Token::new(OpKind::Read, c.log, chunks::token_slot(slot, seq)).pack()) {
            Ok(()) => {
                cx.logs.get_mut(&c.log).expect("log").pin_segment(pos, true);
                self.metrics.reads_from_disk += 1;
                cx.lent.lend(fixed);
                None
            }
            Err(Op::Read { buf, .. }) => {
                c.chunks.complete(seq, None);
                Some(buf)
            }
            Err(_) => unreachable!("push returns the op it was given"),
        }
    }

    /// Reads the dense read's next runs too, while its answer takes more
    /// and buffers are free (one is left for other reads).
    fn read_ahead<I: Io, V: LogView>(&mut self, cx: &mut ReadCx<'_, I, V>, slot: usize) {
        while self.cursors[slot].chunks.in_flight() < chunks::READS_AHEAD_MAX && self.read_bufs.len() > 1 {
            let c = &self.cursors[slot];
            let Some(p) = cx.partitions.get(&c.pid) else { return };
            let from = c.chunks.planned_end().unwrap_or(c.pos);
            let runs = c.runs(p);
            let Some(&r) = runs.at_or_after(from).and_then(|i| runs.get(i)) else { return };
            // A run the last chunk cut is read on when the cursor gets
            // there: only whole runs ahead start at a known frame.
            let at = r.pos.max(from);
            let taken = c.out.len().saturating_sub(c.headroom_bytes) as u64;
            let planned = from.saturating_sub(c.pos);
            if r.pos < from || at >= c.limit || taken + planned >= c.budget_bytes as u64 {
                return;
            }
            let bound = |c: &Cursor, pos, cap_bytes, seg_end| dense_end_max(c, (pos, at), cap_bytes, seg_end, HEADER_BYTES);
            if self.push_runs_read(cx, slot, at, bound).is_none() {
                return;
            }
            self.metrics.reads_ahead += 1;
        }
    }

    /// Pushes a read of the runs of the cursor in `slot` from log position
    /// `at`, into a free buffer: from the block holding `at` up to the bound
    /// `bound` gives (from the block's position, the buffer's capacity and
    /// where the segment ends), cut at the end of the last run it reaches.
    /// Returns the read's end and its bound; None when nothing was pushed
    /// (no partition or segment there, or the push failed: its buffer is
    /// back in the pool).
    fn push_runs_read<I: Io, V: LogView>(
        &mut self,
        cx: &mut ReadCx<'_, I, V>,
        slot: usize,
        at: u64,
        bound: impl FnOnce(&Cursor, u64, usize, Option<u64>) -> u64,
    ) -> Option<(u64, u64)> {
        let c = &self.cursors[slot];
        let p = cx.partitions.get(&c.pid)?;
        let pos = align_down(at);
        let seg = cx.logs[&c.log].segment_at(pos)?;
        let mut buf = self.read_bufs.pop().expect("a free buffer");
        let end_max = bound(c, pos, buf.capacity(), seg.next_start_pos);
        let end = cursor::runs_read_end(c.runs(p), at, end_max);
        let len = (align_up((end - pos).max((at - pos) + HEADER_BYTES as u64)) as usize).min(buf.capacity());
        buf.set_len(0);
        if let Some(buf) = self.push_read(cx, slot, pos, seg, len, buf) {
            self.read_bufs.push(buf);
            return None;
        }
        Some((end, end_max))
    }

    /// A disk read of a cursor completed.
    pub fn on_complete<I: Io, V: LogView>(&mut self, cx: &mut ReadCx<'_, I, V>, token_slot: usize, c: Completion) {
        if token_slot as u32 == sidecars::SCAN_TOKEN_SLOT {
            return self.sidecars.on_scan_complete(cx.io, cx.logs, &mut self.metrics, c);
        }
        let (slot, seq) = chunks::split_token_slot(token_slot as u32);
        self.complete_chunk(cx, (slot, seq), c);
        // Reads that followed it read for themselves if it is gone.
        self.wake_followers(cx, slot, seq);
    }

    fn complete_chunk<I: Io, V: LogView>(&mut self, cx: &mut ReadCx<'_, I, V>, (slot, seq): (usize, u32), c: Completion) {
        let mut buf = c.buf.expect("read returns its buffer");
        cx.lent.home(buf.fixed_index());
        let r = self.cursors.get_mut(slot).expect("read completion for a live read");
        let log = cx.logs.get_mut(&r.log).expect("log");
        let (pos, expected_end) = r.chunks.span_of(seq);
        log.pin_segment(pos, false);
        if r.spent {
            r.chunks.complete(seq, None);
            self.read_bufs.push(buf);
            if r.chunks.in_flight() == 0 {
                self.cursors.remove(slot);
                self.drive_waiters(cx);
            }
            return;
        }
        let seg = log.segment_at(pos);
        if let Err(errno) = c.result {
            r.chunks.complete(seq, None);
            self.read_bufs.push(buf);
            let path = log.path_at(pos);
            return self.finish(cx, slot, Err(StromError::Io { op: IoOp::Read, path, errno }));
        }
        self.metrics.disk_bytes += buf.len() as u64;
        if let Some(next_start) = seg.and_then(|s| s.next_start_pos) {
            buf.set_len(buf.len().min((next_start - pos) as usize));
        }
        // The log holds bytes up to the read's limit: a segment that ends
        // before (lost or misdirected writes, a truncated file) is damage,
        // not a reason to read the same place again. (A chunk the cursor
        // has passed, or whose limit it has passed, tells nothing.)
        if pos <= r.pos && r.pos < expected_end && buf.len() as u64 <= r.pos - pos {
            r.chunks.complete(seq, None);
            self.read_bufs.push(buf);
            let err = corrupt(&*log, r.pos, format!("the segment ends before log position {}", r.pos));
            return self.finish(cx, slot, Err(err));
        }
        r.chunks.complete(seq, Some(buf));
        if r.chunks.covering(r.pos).is_some_and(|k| k.pos == pos) {
            r.chunk_hit_bytes = 0;
        }
        let window = matches!(r.mode, ReadMode::Ahead);
        // Before the owner goes on (and may pass the chunk and give it back).
        // A follower that goes on may open a window that evicts this one
        // (dropped or spent): the owner goes on only if it is still live.
        self.wake_followers(cx, slot, seq);
        if window {
            return self.fill_window(cx, slot);
        }
        if self.cursors.get(slot).is_some_and(|c| !c.spent) {
            self.advance(cx, slot);
        }
    }

    fn finish<I: Io, V: LogView>(&mut self, cx: &mut ReadCx<'_, I, V>, slot: usize, res: Result<()>) {
        if matches!(self.cursors[slot].mode, ReadMode::Ahead) {
            // A window's read failed: the fetch that would have taken it reads again.
            self.drop_window(slot);
            return self.drive_waiters(cx);
        }
        let window = res.is_ok() && self.leaves_window(cx, slot);
        let c = &mut self.cursors[slot];
        // A window keeps the chunks ahead of where the fetch stopped.
        self.read_bufs.extend(if window { c.chunks.take_spent(c.pos, 0) } else { c.chunks.take_done() });
        let mode = std::mem::replace(&mut c.mode, ReadMode::Spent);
        let out = std::mem::replace(&mut c.out, empty());
        let (pid, next_offset) = (c.pid, c.next_offset);
        if res.is_ok() && c.dense && c.served_end_pos > 0 {
            self.resume.note(pid, next_offset, c.served_end_pos);
        }
        if res.is_ok() && matches!(mode, ReadMode::Fetch { .. }) {
            self.metrics.served_bytes += out.len().saturating_sub(c.headroom_bytes) as u64;
            self.metrics.served_disk_bytes += c.served_disk_bytes as u64;
        }
        let served_bytes = out.len().saturating_sub(c.headroom_bytes);
        // Reads still in flight own their buffers: the cursor keeps its
        // slot (their tokens name it) until they complete.
        if window {
            self.open_window(cx, slot, next_offset, served_bytes);
        } else if c.chunks.in_flight() == 0 {
            self.cursors.remove(slot);
        } else {
            c.spent = true;
        }
        let ends = cx.partitions.get(&pid).map(|p| (p.visible_end, p.start_offset)).unwrap_or((0, 0));
        let out = match (out, &res) {
            (ReadOut::Registered(b), Err(_)) => {
                cx.lent.home(b.fixed_index());
                self.reply_bufs.push(b);
                empty()
            }
            (out, _) => out,
        };
        self.answer(pid, mode, res, out, next_offset, ends);
        self.drive_waiters(cx);
    }

    /// Gives a read's answer to its asker; a subscription that wants more
    /// reads on from where this answer ended (at the next drive).
    fn answer(&mut self, pid: Pid, mode: ReadMode, res: Result<()>, out: ReadOut, next_offset: u64, (hw, start): (u64, u64)) {
        match mode {
            ReadMode::Fetch { mut sink, offset, max_bytes, max_wait_ns, parked_ns } => {
                let headroom_bytes = sink.headroom_bytes();
                let failed = res.is_err();
                let answer = res.map(|()| {
                    let (batches, registered) = match out {
                        ReadOut::Registered(b) => (Vec::new(), Some(RegisteredBatches(b))),
                        ReadOut::Heap(mut batches) => {
                            // An answer decided before any buffer was made (nothing to read).
                            if batches.len() < headroom_bytes {
                                batches.resize(headroom_bytes, 0);
                            }
                            (batches, None)
                        }
                    };
                    ReadResult {
                        batches,
                        headroom_bytes,
                        registered,
                        next_offset,
                        high_watermark: hw,
                        start_offset: start,
                        parked_ns,
                        budget_bytes: 0,
                    }
                });
                if sink.deliver(answer) == SinkFlow::More && !failed {
                    let offset = if next_offset == NOT_FOUND { offset } else { next_offset };
                    let mode = ReadMode::Fetch { offset, max_bytes, max_wait_ns, parked_ns: 0, sink };
                    self.resumed.push_back((pid, mode));
                }
            }
            ReadMode::Time { reply, found_ts_ms, .. } => {
                reply(res.map(|()| (next_offset != NOT_FOUND).then_some((next_offset, found_ts_ms))))
            }
            ReadMode::Index { reply, .. } => reply(res.map(|()| (next_offset != NOT_FOUND).then_some(next_offset))),
            ReadMode::Spent | ReadMode::Ahead => unreachable!("a read is answered once, a window never"),
        }
    }

    /// Lets reads that waited for a buffer (or an op slot) go on, and
    /// subscriptions read on.
    pub fn drive_waiters<I: Io, V: LogView>(&mut self, cx: &mut ReadCx<'_, I, V>) {
        // Windows give their buffers to reads that wait for one.
        while !self.waiters.is_empty() && self.reclaim_windows() {
            let Some(w) = self.waiters.pop_front() else { break };
            if self.cursors.get(w).is_some_and(|c| !c.spent && !matches!(c.mode, ReadMode::Ahead)) {
                self.advance(cx, w);
            }
        }
    }

    /// Subscriptions whose last answer asked for more read on now: they park
    /// at the end of their partition or answer again at once.
    pub fn resume<I: Io, V: LogView>(&mut self, cx: &mut ReadCx<'_, I, V>, may_wait: bool) {
        if !self.limits.read_only {
            self.sidecars.tend(cx.io, cx.logs, cx.partitions, (!may_wait, self.limits.batch_bytes_max as u32), &mut self.metrics);
        }
        self.retry_budget_waits(cx);
        for _ in 0..self.resumed.len() {
            if self.full() {
                return;
            }
            let Some((pid, ReadMode::Fetch { offset, max_bytes, max_wait_ns, sink, .. })) = self.resumed.pop_front() else { continue };
            self.fetch(cx, pid, Fetch { offset, max_bytes, max_wait_ns }, sink, may_wait);
        }
    }

    /// Checks the relations that must hold between ticks.
    pub fn invariants(&self) {
        let holding: usize = self.cursors.iter().map(|(_, r)| r.chunks.holding()).sum();
        assert!(self.read_bufs.len() + holding <= self.read_bufs_total, "read buffer leaked or doubled");
        self.window_invariants();
    }
}

/// The furthest a dense read's disk read from block `pos`, for the frame at
/// `at`, may reach: one buffer, the segment, what its answer still takes
/// (with a sixteenth of slack for frame headers), the next chunk it already
/// has, and the read's limit (runs hold staged batches not yet written); at
/// least the `need_bytes` at `at`.
fn dense_end_max(c: &Cursor, (pos, at): (u64, u64), cap_bytes: usize, seg_end: Option<u64>, need_bytes: usize) -> u64 {
    let taken = c.out.len().saturating_sub(c.headroom_bytes);
    let budget_left = c.budget_bytes.saturating_sub(taken).max(need_bytes) as u64;
    let end_max = (pos + cap_bytes as u64)
        .min(seg_end.unwrap_or(u64::MAX))
        .min(c.pos + budget_left + budget_left / 16 + HEADER_BYTES as u64)
        .min(c.chunks.next_after(at).unwrap_or(u64::MAX))
        .min(align_up(c.limit));
    end_max.max(at + need_bytes as u64)
}

fn empty() -> ReadOut {
    ReadOut::Heap(Vec::new())
}

fn unknown(pid: Pid) -> StromError {
    StromError::UnknownPartition { topic: String::new(), partition: pid }
}

#[cfg(test)]
mod tests;

/// Where an index lookup of partition `p` starts its walk: Ok(None) when no
/// durable record reaches the value yet; an error if the topic has no index
/// named `name`.
fn index_scan_start(p: &Partition, name: &str, value: i64, strict: bool) -> Result<Option<Option<crate::partition::IndexEntry>>> {
    let (n, i) = p.named_index(name)?;
    if !n.visible_last(i).is_some_and(|l| if strict { l > value } else { l >= value }) {
        return Ok(None);
    }
    // From the last entry that does not qualify (the answer lies at or
    // after it), by the sparse index's floor.
    let from = n.scan_from(i, value, strict).unwrap_or(p.start_offset).max(p.start_offset);
    Ok(Some(p.index.floor(from).or(p.index.first().copied())))
}
