//! A read in progress: a cursor walking one log's frames from an index
//! entry, skipping other partitions' frames, collecting the asked
//! partition's batches (or finding a timestamp) until its limit.
use crate::buf::AlignedBuf;
use crate::core::Reply;
use crate::error::{Result, StromError};
use crate::log::frame::{self, FrameHeader, FrameKind, HEADER_BYTES};
use std::sync::Arc;

use crate::log::sidecar::SegmentRuns;
use crate::partition::{Partition, Pid, RunsRef};
use crate::wire::batch::{self, BatchInfo};

use super::chunks::{Chunk, Chunks};
use super::sink::ReadSink;
use super::view::LogView;

/// A time lookup that found no record (the answer is None).
pub(crate) const NOT_FOUND: u64 = u64::MAX;

/// What a read is for.
pub(crate) enum ReadMode {
    /// Batches from `offset`, up to about `max_bytes`; at the partition's
    /// end the read waits up to `max_wait_ns` for new data (a long poll).
    Fetch {
        offset: u64,
        max_bytes: usize,
        max_wait_ns: u64,
        /// Time spent parked as a long poll before this read started.
        parked_ns: u64,
        sink: Box<dyn ReadSink>,
    },
    /// The first offset whose record timestamp is at least `ts_ms`, and
    /// that record's timestamp (`found_ts_ms`, once found: Kafka's
    /// ListOffsets answers it).
    Time { ts_ms: i64, found_ts_ms: i64, reply: Reply<Option<(u64, i64)>> },
    /// The first offset whose value of the named index `name` is at least
    /// `value` (`strict`: above it).
    Index { name: String, value: i64, strict: bool, reply: Reply<Option<u64>> },
    /// A read-ahead window ([`super::ahead`]): no asker; its chunks wait
    /// for the partition's next fetch, which takes the cursor over.
    Ahead,
    /// Answered already: the cursor only waits for its reads in flight.
    Spent,
}

/// Where a read puts what it found.
pub(crate) enum ReadOut {
    Heap(Vec<u8>),
    /// A registered reply buffer from the core's pool.
    Registered(AlignedBuf),
}

impl ReadOut {
    pub fn len(&self) -> usize {
        match self {
            ReadOut::Heap(v) => v.len(),
            ReadOut::Registered(b) => b.len(),
        }
    }

    fn extend(&mut self, bytes: &[u8]) {
        match self {
            ReadOut::Heap(v) => v.extend_from_slice(bytes),
            ReadOut::Registered(b) => b.extend_from_slice(bytes),
        }
    }
}

/// How far a read may go and what it must not serve.
#[derive(Debug, Clone, Copy)]
pub(crate) struct CursorLimits {
    pub batch_bytes_max: u32,
    pub index_interval_bytes: u64,
    /// Under `always`, nothing past the durable position is served.
    pub durable_only: bool,
    /// Test hook: reads look past the retired position (the audit must fire).
    pub serve_unretired: bool,
}

pub(crate) struct Cursor {
    pub pid: Pid,
    pub log: u32,
    pub mode: ReadMode,
    pub pos: u64,
    /// Reads never look at or past this (the log's visible position at start).
    pub limit: u64,
    /// End of the last frame of this partition seen (or the index entry used).
    pub last_hit: u64,
    /// The base offset the partition's next batch must have: the index
    /// entry's at the start and after a jump, then the last one's end.
    pub expect_base: u64,
    /// Bytes left free before the batches in `out`.
    pub headroom_bytes: usize,
    /// Batch bytes this read may collect (at least one batch).
    pub budget_bytes: usize,
    pub out: ReadOut,
    pub next_offset: u64,
    /// Its disk reads in flight and the buffers they filled, in log order.
    pub chunks: Chunks,
    /// Bytes of this partition's batches served from its last chunk: how
    /// dense the partition is in its log, which sizes a walk's next read.
    pub chunk_hit_bytes: usize,
    /// Answered while disk reads were still in flight: the cursor waits for
    /// them only to give their buffers back.
    pub spent: bool,
    /// The read follows the partition's runs (its dense index) rather than
    /// walking every frame from a sparse index entry.
    pub dense: bool,
    /// Batch bytes this read served from disk reads (its amplification's denominator).
    pub served_disk_bytes: usize,
    /// Log position just past the last batch served (0: none yet): where
    /// the batch at `next_offset` starts when it is in the same run.
    pub served_end_pos: u64,
    /// A dense read before the partition's in-memory runs follows the runs
    /// of one sealed segment, from its sidecar; it ends at that segment's end.
    pub sidecar: Option<Arc<SegmentRuns>>,
    /// Inherited bytes at its position failed a check: it reads them from
    /// disk itself (shares nothing) until that read is pushed.
    pub reread: bool,
}

pub(crate) enum Step {
    Continue,
    NeedDisk {
        len: usize,
    },
    /// The bytes at the cursor are being read: their completion moves it on.
    Wait,
    Done(Result<()>),
}

/// What one step found that the read path counts.
#[derive(Default)]
pub(crate) struct StepNotes {
    /// A batch was about to be served past the acknowledged position.
    pub beyond_durable: bool,
}

impl Cursor {
    /// Looks at the frame under the cursor.
    pub fn step<V: LogView>(&mut self, p: &Partition, log: &V, lim: &CursorLimits, notes: &mut StepNotes) -> Step {
        if let ReadMode::Fetch { .. } = self.mode
            && self.next_offset >= p.visible_end
            && !lim.serve_unretired
        {
            return Step::Done(Ok(()));
        }
        if self.pos >= self.limit || !self.onto_next_batch(p, lim) {
            return Step::Done(Ok(()));
        }
        let (bytes, Here { from_disk, at_end, inherited }) = match bytes_here(&self.chunks, self.pos, log) {
            Ok(here) => here,
            Err(step) => return step,
        };
        let h = match frame::decode_header(bytes, self.pos, lim.batch_bytes_max) {
            Ok(h) => h,
            Err(frame::FrameError::Truncated { needed }) if from_disk && !at_end => {
                return Step::NeedDisk { len: needed as usize };
            }
            Err(_) if inherited => return self.read_again(self.pos),
            Err(e) => return Step::Done(Err(corrupt(log, self.pos, e.to_string()))),
        };
        if from_disk && let Err(reason) = log.frame_is_current(&h) {
            if inherited {
                return self.read_again(self.pos);
            }
            return Step::Done(Err(corrupt(log, h.pos, reason)));
        }
        if self.over_budget(&h) {
            return Step::Done(Ok(()));
        }
        if (bytes.len() as u64) < h.frame_bytes() {
            if from_disk && !at_end {
                return Step::NeedDisk { len: h.frame_bytes() as usize };
            }
            if inherited {
                return self.read_again(self.pos);
            }
            return Step::Done(Err(corrupt(log, self.pos, "frame runs past its commit".into())));
        }
        let frame_bytes = &bytes[..h.frame_bytes() as usize];
        self.pos = h.end_pos();
        if h.kind != FrameKind::Batch || h.pid != self.pid {
            return Step::Continue;
        }
        self.last_hit = h.end_pos();
        let info = match checked_batch(&h, frame_bytes, from_disk, self.expect_base) {
            Ok(info) => info,
            Err(_) if inherited => return self.read_again(h.pos),
            Err(reason) => return Step::Done(Err(corrupt(log, h.pos, reason))),
        };
        self.expect_base = info.last_offset() as u64 + 1;
        let payload = &frame_bytes[HEADER_BYTES..];
        match &self.mode {
            ReadMode::Fetch { offset, .. } => {
                if (info.last_offset() as u64) < *offset {
                    return Step::Continue;
                }
                let taken = self.out.len() - self.headroom_bytes;
                if taken > 0 && taken + payload.len() > self.budget_bytes {
                    return Step::Done(Ok(()));
                }
                // Audit: nothing is served past what is acknowledged (under
                // `always`, durable). A bug here would show readers data a
                // crash can take back; the batch is held back instead.
                let durable_end = if lim.durable_only { log.durable_pos() } else { u64::MAX };
                if h.end_pos() > log.visible_pos().min(durable_end) || info.last_offset() as u64 >= p.visible_end {
                    notes.beyond_durable = true;
                    return Step::Done(Ok(()));
                }
                self.out.extend(payload);
                self.served_end_pos = h.end_pos();
                if from_disk {
                    self.chunk_hit_bytes += payload.len();
                    self.served_disk_bytes += payload.len();
                }
                self.next_offset = info.last_offset() as u64 + 1;
                if taken + payload.len() >= self.budget_bytes { Step::Done(Ok(())) } else { Step::Continue }
            }
            ReadMode::Spent | ReadMode::Ahead => Step::Done(Ok(())),
            ReadMode::Time { .. } | ReadMode::Index { .. } => match lookup_in(&self.mode, &info, payload) {
                Some((found, ts_ms)) => {
                    self.next_offset = found;
                    if let ReadMode::Time { found_ts_ms, .. } = &mut self.mode {
                        *found_ts_ms = ts_ms;
                    }
                    Step::Done(Ok(()))
                }
                None => Step::Continue,
            },
        }
    }
}

/// A lookup's verdict on one of its partition's batches: the offset it
/// found and that record's timestamp, or None to look on at the next batch.
fn lookup_in(mode: &ReadMode, info: &BatchInfo, payload: &[u8]) -> Option<(u64, i64)> {
    match mode {
        ReadMode::Time { ts_ms, .. } => {
            if info.max_timestamp_ms < *ts_ms {
                return None;
            }
            let found = batch::records(payload)
                .filter_map(|rec| rec.ok())
                .map(|rec| (info.base_offset as u64 + rec.offset_delta as u64, info.base_timestamp_ms + rec.timestamp_delta_ms))
                .find(|&(_, rec_ts_ms)| rec_ts_ms >= *ts_ms);
            // A compressed batch's records are not walked: the answer is
            // the whole batch, from its first offset and time.
            Some(found.unwrap_or((info.base_offset as u64, info.base_timestamp_ms)))
        }
        ReadMode::Index { name, value, strict, .. } => {
            let qualifies = |v: i64| if *strict { v > *value } else { v >= *value };
            // Stored batches were checked on the way in: every record has
            // its value. Only the partition's own frames reach here.
            batch::records(payload)
                .filter_map(|rec| rec.ok())
                .find(|rec| batch::values::record_value(rec.headers.clone(), name.as_bytes()).is_some_and(qualifies))
                .map(|rec| (info.base_offset as u64 + rec.offset_delta as u64, info.base_timestamp_ms + rec.timestamp_delta_ms))
        }
        ReadMode::Fetch { .. } | ReadMode::Spent | ReadMode::Ahead => None,
    }
}

/// The bytes at log position `pos`, from the tail cache or a completed
/// chunk; or the step to take while there are none (wait for a read in
/// flight, or read).
fn bytes_here<'a, V: LogView>(chunks: &'a Chunks, pos: u64, log: &'a V) -> std::result::Result<(&'a [u8], Here), Step> {
    if let Some(b) = log.cached_at(pos) {
        return Ok((b, Here { from_disk: false, at_end: false, inherited: false }));
    }
    match chunks.covering(pos) {
        Some(k @ Chunk { buf: Some(buf), pos: at, at_end, .. }) => {
            Ok((&buf.as_slice()[(pos - at) as usize..], Here { from_disk: true, at_end: *at_end, inherited: k.inherited() }))
        }
        Some(_) => Err(Step::Wait),
        None => Err(Step::NeedDisk { len: HEADER_BYTES + frame::BATCH_PREFIX_BYTES }),
    }
}

/// Where the bytes under a cursor come from.
struct Here {
    /// A chunk read from disk, not the tail cache.
    from_disk: bool,
    /// The chunk ends where its segment ends.
    at_end: bool,
    /// The chunk was read for another cursor ([`Chunk::inherited`]).
    inherited: bool,
}

impl Cursor {
    /// A frame at `pos` failed its checks in bytes another read fetched (a
    /// read-ahead window's, or copied from another read): they may have
    /// been damaged on their way in long before, so the cursor reads them
    /// from disk itself, and judges what it reads.
    fn read_again(&mut self, pos: u64) -> Step {
        let distrusted = self.chunks.distrust_inherited(pos);
        debug_assert!(distrusted, "the chunk at {pos} was inherited");
        self.pos = pos;
        self.reread = true;
        Step::NeedDisk { len: HEADER_BYTES + frame::BATCH_PREFIX_BYTES }
    }

    /// Moves the cursor onto where the partition's next batch may lie:
    /// the next run for a dense read; for a walk, the next index entry when
    /// the cursor is an interval past the last batch found. False when
    /// nothing of the partition is left below the limit.
    fn onto_next_batch(&mut self, p: &Partition, lim: &CursorLimits) -> bool {
        if self.dense {
            return self.onto_next_run(p);
        }
        if self.pos > self.last_hit + lim.index_interval_bytes {
            // No batch of this partition lies within an interval after the
            // last one unless it has an index entry: jump to that entry (the
            // cursor may sit exactly on it).
            match p.index.first_at_or_after(self.pos) {
                Some(e) if e.pos < self.limit => {
                    self.pos = e.pos;
                    self.last_hit = e.pos;
                    self.expect_base = e.offset;
                }
                _ => return false,
            }
        }
        true
    }

    /// Puts a dense read on the run holding its position, or at the start
    /// of the next run. False when no run is left below the limit, or the
    /// runs no longer reach back to the cursor (dropped by their bound or
    /// by retention): the read ends there, and the next one starts afresh.
    fn onto_next_run(&mut self, p: &Partition) -> bool {
        let runs = self.runs(p);
        if runs.first().is_none_or(|r| r.pos > self.pos) {
            return false;
        }
        let Some(&r) = runs.at_or_after(self.pos).and_then(|i| runs.get(i)) else { return false };
        if r.pos >= self.limit {
            return false;
        }
        if r.pos > self.pos {
            self.pos = r.pos;
            self.last_hit = r.pos;
            self.expect_base = r.first_offset;
        }
        true
    }

    /// The runs this dense read follows: its sidecar's, or the partition's.
    pub fn runs<'a>(&'a self, p: &'a Partition) -> RunsRef<'a> {
        match &self.sidecar {
            Some(s) => RunsRef::Sidecar(s.runs_of(self.pid).unwrap_or(&[])),
            None => RunsRef::Mem(&p.runs),
        }
    }

    /// Whether a frame of this fetch's partition would take its answer past
    /// its budget: known from the header alone, so the rest of the frame
    /// need not be read.
    fn over_budget(&self, h: &FrameHeader) -> bool {
        let ReadMode::Fetch { .. } = self.mode else { return false };
        let taken = self.out.len() - self.headroom_bytes;
        h.kind == FrameKind::Batch && h.pid == self.pid && taken > 0 && taken + h.payload_bytes as usize > self.budget_bytes
    }
}

/// Gaps between runs a disk read takes in to read two runs at once, at
/// most: a gap this small costs less than a second read's latency.
pub(crate) const MERGE_GAP_BYTES_MAX: u64 = 64 << 10;

/// Gap bytes a merged read may carry per byte of runs, at most (1/16): with
/// the alignment of each read's ends, what keeps the disk bytes a dense read
/// reads within about 1.1 of the bytes it serves.
const MERGE_GAP_SHARE_DIVISOR: u64 = 16;

/// Where a dense read's next disk read from `pos` should end: at the end of
/// the run holding `pos`, or of a later run it merges (each gap before it at
/// most [`MERGE_GAP_BYTES_MAX`], all of them a small share of the runs'
/// bytes), never past `end_max` (the buffer, the segment, the budget).
pub(crate) fn runs_read_end(runs: RunsRef<'_>, pos: u64, end_max: u64) -> u64 {
    let Some(mut i) = runs.at_or_after(pos) else { return pos };
    let Some(first) = runs.get(i) else { return pos };
    let mut end = first.end_pos().min(end_max);
    let (mut run_bytes, mut gap_bytes) = (end.saturating_sub(pos.max(first.pos)), 0);
    while let Some(next) = runs.get(i + 1) {
        let gap = next.pos.saturating_sub(end);
        if next.pos >= end_max || gap > MERGE_GAP_BYTES_MAX || (gap_bytes + gap) * MERGE_GAP_SHARE_DIVISOR > run_bytes + next.bytes {
            break;
        }
        let next_end = next.end_pos().min(end_max);
        run_bytes += next_end - next.pos;
        gap_bytes += gap;
        end = next_end;
        i += 1;
    }
    end
}

/// The batch in a frame of the read's partition, checked: verified end to
/// end when it came from disk (corruption becomes an error, never data),
/// and continuing the partition's offsets without a gap (a valid frame with
/// other offsets is not the batch the index promised).
fn checked_batch(h: &FrameHeader, frame_bytes: &[u8], from_disk: bool, expect_base: u64) -> std::result::Result<BatchInfo, String> {
    let info = if from_disk {
        frame::verify_payload(h, frame_bytes).map_err(|e| e.to_string())?
    } else {
        batch::parse_header(&frame_bytes[HEADER_BYTES..]).map_err(|e| e.to_string())?
    };
    if info.base_offset as u64 != expect_base {
        return Err(format!("partition {} batch at offset {}, expected {expect_base}", h.pid, info.base_offset));
    }
    Ok(info)
}

/// Damage found at log position `pos`, naming the segment file holding it.
pub(crate) fn corrupt<V: LogView>(log: &V, pos: u64, reason: String) -> StromError {
    StromError::Corrupt { path: log.path_at(pos), pos, reason }
}
