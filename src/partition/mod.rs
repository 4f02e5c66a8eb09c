//! A partition: a dense sequence of offsets whose batches live in one log.
//!
//! Offsets are assigned when a batch is staged (so pipelined appends get
//! consecutive offsets) but become visible to readers only when the commit
//! holding them is durable under the active policy (`visible_end`).
use std::collections::VecDeque;

pub mod index;
pub mod named;
pub mod producers;
pub mod retention;
pub mod runs;

pub use index::{IndexEntry, SparseIndex};
pub use named::NamedIndex;
pub use retention::{Retention, Span};
pub use runs::{Run, RunIndex, RunsRef};

/// Partition id: unique in a data directory, never reused.
pub type Pid = u32;

/// The log holding partition `pid`'s batches: the storage half of the
/// routing rule (the broker's `Router` adds which core owns the log). The
/// number of logs is fixed when the data directory is created, so a
/// partition never changes log.
pub fn log_of(pid: Pid, log_count: u32) -> u32 {
    pid % log_count
}

/// A batch as the partition records it: offsets, timestamp and frame.
#[derive(Debug, Clone, Copy)]
pub struct ObservedBatch {
    pub base: u64,
    pub records: u64,
    pub max_ts_ms: i64,
    /// Log position and size (header included) of its frame.
    pub pos: u64,
    pub frame_bytes: u64,
}

#[derive(Debug, Clone)]
pub struct Partition {
    pub pid: Pid,
    /// The log holding this partition's batches (`pid % log_count`).
    pub log: u32,
    /// Next offset to assign (includes staged, not yet durable batches).
    pub next_offset: u64,
    /// Offsets below this are durable and readable.
    pub visible_end: u64,
    /// Earliest retained offset.
    pub start_offset: u64,
    /// Largest batch max-timestamp among visible batches (ms since epoch).
    pub visible_max_ts_ms: i64,
    /// Largest batch max-timestamp among staged batches.
    pub staged_max_ts_ms: i64,
    pub index: SparseIndex,
    /// The dense index: exactly where its batches lie ([`runs`]).
    pub runs: RunIndex,
    /// The topic's effective retention limits (its own, or the server's).
    pub retention: Retention,
    /// Where this partition's data lies, per segment, oldest first (see
    /// [`retention`]); `span_bytes` is the sum of their bytes.
    pub spans: VecDeque<Span>,
    pub span_bytes: u64,
    /// Batches staged and not yet visible, oldest first: a checkpoint,
    /// which describes only what is durable, takes their bytes back out of
    /// the spans ([`Partition::durable_spans`]). At most the batches of
    /// the commits in flight and the one filling.
    pub unvisible: VecDeque<UnvisibleBatch>,
    /// The topic's named indices, if it declared any ([`named`]).
    pub named: Option<NamedIndex>,
    /// Its idempotent producers' last batches ([`producers`]).
    pub producers: producers::Producers,
}

/// A staged batch's end offset and frame, until its commit is visible.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UnvisibleBatch {
    pub end_offset: u64,
    pub pos: u64,
    pub frame_bytes: u64,
}

impl Partition {
    pub fn new(pid: Pid, log: u32) -> Partition {
        Partition {
            pid,
            log,
            next_offset: 0,
            visible_end: 0,
            start_offset: 0,
            visible_max_ts_ms: i64::MIN,
            staged_max_ts_ms: i64::MIN,
            index: SparseIndex::default(),
            runs: RunIndex::default(),
            retention: Retention::default(),
            spans: VecDeque::new(),
            span_bytes: 0,
            unvisible: VecDeque::new(),
            named: None,
            producers: producers::Producers::default(),
        }
    }

    /// Takes the sparse index and spans from a checkpoint. A version 1
    /// checkpoint (`spans` None) stored no spans, so one is derived per
    /// index entry: a partition's first batch in each segment has an entry,
    /// so no span crosses a segment; the bytes count as 0 (bytes retention
    /// then counts only data written after them: it keeps more, never
    /// less) and the timestamp is the next entry's running max, an upper bound.
    pub fn restore(&mut self, entries: Vec<IndexEntry>, max_ts_ms: i64, spans: Option<&[Span]>) {
        self.index = SparseIndex::from_entries(entries);
        // A checkpoint stores no runs: the recovery scan feeds those of the
        // tail, and reads before them walk from the sparse index.
        self.runs = RunIndex::with_max(self.runs.runs_max());
        let e = self.index.entries();
        self.spans = match spans {
            Some(spans) => spans.iter().copied().collect(),
            None => e
                .iter()
                .enumerate()
                .map(|(i, x)| Span { first_pos: x.pos, bytes: 0, max_ts_ms: e.get(i + 1).map_or(max_ts_ms, |n| n.max_ts_ms) })
                .collect(),
        };
        self.span_bytes = self.spans.iter().map(|s| s.bytes).sum();
        self.unvisible.clear();
    }

    /// The spans as of the visible end, for a checkpoint at `covered_pos`
    /// (which every visible frame lies below, and no unvisible one): each
    /// span less the bytes of its batches not yet visible, the newest
    /// visible one with the running max timestamp at the last visible
    /// batch, spans holding only unvisible batches left out.
    pub fn durable_spans(&self, covered_pos: u64) -> Vec<Span> {
        let mut spans: Vec<Span> = self.spans.iter().copied().collect();
        for b in &self.unvisible {
            debug_assert!(b.pos >= covered_pos, "pid {}: an unvisible batch below the checkpoint", self.pid);
            if let Some(i) = spans.partition_point(|s| s.first_pos <= b.pos).checked_sub(1) {
                spans[i].bytes = spans[i].bytes.saturating_sub(b.frame_bytes);
            }
        }
        spans.retain(|s| s.first_pos < covered_pos);
        if !self.unvisible.is_empty()
            && let Some(last) = spans.last_mut()
        {
            last.max_ts_ms = self.visible_max_ts_ms;
        }
        spans
    }

    /// Records a batch staged (or recovered) at log position `pos`, holding
    /// offsets `base..base+records` in a frame of `frame_bytes`. Returns
    /// the new running max timestamp.
    pub fn observe_batch(&mut self, batch: ObservedBatch, segment_start: u64, interval_bytes: u64) -> i64 {
        let ObservedBatch { base, records, max_ts_ms, pos, frame_bytes } = batch;
        debug_assert_eq!(base, self.next_offset);
        self.next_offset = base + records;
        self.staged_max_ts_ms = self.staged_max_ts_ms.max(max_ts_ms);
        self.index.observe(base, pos, self.staged_max_ts_ms, segment_start, interval_bytes);
        self.runs.observe(base, self.next_offset, pos, frame_bytes, segment_start);
        match self.spans.back_mut() {
            Some(s) if s.first_pos >= segment_start => {
                s.bytes += frame_bytes;
                s.max_ts_ms = self.staged_max_ts_ms;
            }
            _ => self.spans.push_back(Span { first_pos: pos, bytes: frame_bytes, max_ts_ms: self.staged_max_ts_ms }),
        }
        self.span_bytes += frame_bytes;
        self.unvisible.push_back(UnvisibleBatch { end_offset: self.next_offset, pos, frame_bytes });
        self.staged_max_ts_ms
    }

    /// Forgets what was staged at or past log position `pos` (a rewind for
    /// a full disk). Every batch there is still unvisible (a rewind takes
    /// back only commits that were never durable), so each one's frame
    /// comes back out of its span exactly, and spans left empty go.
    pub fn truncate_from(&mut self, pos: u64) {
        self.index.truncate_from(pos);
        while let Some(b) = self.unvisible.back().copied().filter(|b| b.pos >= pos) {
            self.unvisible.pop_back();
            if let Some(s) = self.spans.iter_mut().rev().find(|s| s.first_pos <= b.pos) {
                s.bytes -= b.frame_bytes;
                self.span_bytes -= b.frame_bytes;
            }
        }
        let kept_end = self.unvisible.back().map_or(self.visible_end, |b| b.end_offset);
        self.runs.truncate_from(pos, kept_end);
        if let Some(n) = &mut self.named {
            n.truncate_to(kept_end);
        }
        self.producers.truncate_to(kept_end);
        while self.spans.back().is_some_and(|s| s.first_pos >= pos) {
            let s = self.spans.pop_back().expect("span");
            debug_assert_eq!(s.bytes, 0, "pid {}: a span past a rewind held bytes of no unvisible batch", self.pid);
            self.span_bytes -= s.bytes;
        }
    }

    /// Makes offsets below `end` visible (their commit is durable).
    pub fn make_visible(&mut self, end: u64, max_ts_ms: i64) {
        debug_assert!(end >= self.visible_end && end <= self.next_offset);
        self.visible_end = end;
        self.visible_max_ts_ms = self.visible_max_ts_ms.max(max_ts_ms);
        while self.unvisible.front().is_some_and(|b| b.end_offset <= end) {
            self.unvisible.pop_front();
        }
        if let Some(n) = &mut self.named {
            n.make_visible(end);
        }
    }

    /// The partition's named index and the position of index `name` in it;
    /// InvalidArgument if its topic declared no index of that name.
    pub fn named_index(&self, name: &str) -> crate::error::Result<(&NamedIndex, usize)> {
        let found = self.named.as_ref().and_then(|n| n.names().iter().position(|x| x == name).map(|i| (n, i)));
        found.ok_or_else(|| {
            let shown = name.escape_debug().take(300).collect::<String>();
            crate::error::StromError::InvalidArgument(format!("the topic has no index named {shown:?}"))
        })
    }

    /// Drops everything stored before log position `log_start` (retention).
    pub fn forget_before(&mut self, log_start: u64) {
        self.index.drop_before(log_start);
        self.runs.drop_before(log_start);
        while self.spans.front().is_some_and(|s| s.first_pos < log_start) {
            let s = self.spans.pop_front().expect("span");
            self.span_bytes -= s.bytes;
        }
        self.start_offset = match self.index.first() {
            Some(e) => e.offset.max(self.start_offset),
            None => self.visible_end,
        };
        if let Some(n) = &mut self.named {
            n.forget_before(self.start_offset);
        }
    }

    pub fn invariants(&self) {
        assert!(self.start_offset <= self.visible_end, "pid {}: start past visible", self.pid);
        assert!(self.visible_end <= self.next_offset, "pid {}: visible past next", self.pid);
        self.index.invariants();
        self.runs.invariants();
        if let Some(n) = &self.named {
            n.invariants();
        }
        self.producers.invariants();
        assert!(self.runs.first().is_none_or(|r| r.first_offset >= self.start_offset), "pid {}: a run before the start", self.pid);
        assert!(
            self.runs.get(self.runs.len().wrapping_sub(1)).is_none_or(|r| r.end_offset == self.next_offset),
            "pid {}: runs end",
            self.pid
        );
        assert_eq!(self.spans.iter().map(|s| s.bytes).sum::<u64>(), self.span_bytes, "pid {}: span bytes", self.pid);
        assert!(
            self.spans.iter().zip(self.spans.iter().skip(1)).all(|(a, b)| a.first_pos < b.first_pos),
            "pid {}: spans out of order",
            self.pid
        );
        // Unvisible batches are exactly those past the visible end.
        assert_eq!(self.unvisible.front().is_some(), self.visible_end < self.next_offset, "pid {}: unvisible batches", self.pid);
        assert!(self.unvisible.back().is_none_or(|b| b.end_offset == self.next_offset), "pid {}: unvisible end", self.pid);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn staged(p: &mut Partition, pos: u64, frame_bytes: u64, ts_ms: i64, segment_start: u64) -> i64 {
        let base = p.next_offset;
        p.observe_batch(ObservedBatch { base, records: 1, max_ts_ms: ts_ms, pos, frame_bytes }, segment_start, 1 << 20)
    }

    // Proves a checkpoint's spans hold only visible batches: staged bytes
    // come out of the span they share with visible ones, a span holding
    // only staged batches is left out, and its timestamp is the visible one.
    #[test]
    fn durable_spans_leave_out_what_is_staged() {
        let mut p = Partition::new(0, 0);
        let ts = staged(&mut p, 0, 100, 5, 0);
        p.make_visible(1, ts);
        staged(&mut p, 100, 50, 9, 0);
        staged(&mut p, 1000, 70, 7, 1000);
        p.invariants();
        assert_eq!(p.span_bytes, 220);
        assert_eq!(p.durable_spans(100), vec![Span { first_pos: 0, bytes: 100, max_ts_ms: 5 }]);
        // Once visible, the same spans go whole.
        p.make_visible(3, 9);
        p.invariants();
        assert!(p.unvisible.is_empty());
        assert_eq!(p.durable_spans(1070), p.spans.iter().copied().collect::<Vec<_>>());
        // A rewind drops what it takes back from both.
        staged(&mut p, 1070, 30, 10, 1000);
        p.truncate_from(1070);
        p.next_offset = 3;
        p.invariants();
        assert_eq!(p.span_bytes, 220);
    }
}
