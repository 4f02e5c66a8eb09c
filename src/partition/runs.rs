//! The dense index of one partition: where each run of its batches lies.
//!
//! A run is a stretch of the log holding only this partition's frames, one
//! after another: its consecutive batches within one commit (and across
//! commits when nothing lies between them), never across a segment. The
//! sparse index ([`super::index`]) tells a read where to start walking
//! frames, and the walk reads other partitions' frames on the way; the runs
//! tell it exactly which bytes to read, so a read of one of N interleaved
//! partitions reads its own bytes and the gaps it chose to merge, not the
//! whole log.
//!
//! Runs are fed where batches are staged and where recovery scans the tail
//! ([`super::Partition::observe_batch`]), so they cover what this process
//! staged or scanned: the active segment and the tail, and older segments
//! written since the start. A read of an offset before the first run
//! follows the runs of the sealed segment's sidecar ([`crate::log::sidecar`])
//! when it has a usable one, else walks frames from the sparse index.
//!
//! Bound: at most [`RUNS_PER_PARTITION_MAX`] runs per partition, and a
//! core's partitions share [`RUNS_PER_CORE_MAX`] between them
//! ([`runs_max_for`]; [`RUN_BYTES`] each in memory); past it a partition's
//! oldest are dropped (reads there fall back to the sparse walk), and
//! retention drops those of deleted segments.
use std::collections::VecDeque;

/// Runs kept per partition, at most: 64 Ki runs of 32 bytes, 2 MiB. A
/// partition writing 64 KiB batches each in its own run keeps the runs of
/// its newest 4 GiB; one whose batches are contiguous keeps far more. (With
/// 16 Ki, loadgen's default run, 1.75 GB per partition in 64 KiB runs,
/// read its oldest 40% by the walk: 1.91 disk bytes per byte served.)
pub const RUNS_PER_PARTITION_MAX: usize = 64 << 10;

/// Runs one core keeps over all its partitions, at most: 1 Mi runs of 32
/// bytes, 32 MiB, whatever the number of partitions (10,000 partitions on a
/// core keep 104 runs each; a few keep [`RUNS_PER_PARTITION_MAX`]).
pub const RUNS_PER_CORE_MAX: usize = 1 << 20;

/// The runs each partition of a core with `partitions` partitions keeps:
/// an equal share of [`RUNS_PER_CORE_MAX`], at most [`RUNS_PER_PARTITION_MAX`].
pub fn runs_max_for(partitions: usize) -> usize {
    (RUNS_PER_CORE_MAX / partitions.max(1)).clamp(1, RUNS_PER_PARTITION_MAX)
}

/// Bytes of memory one run takes.
pub const RUN_BYTES: usize = std::mem::size_of::<Run>();

/// One run: offsets `first_offset..end_offset` in `bytes` of log (frames,
/// headers included) from log position `pos`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Run {
    pub first_offset: u64,
    pub end_offset: u64,
    pub pos: u64,
    pub bytes: u64,
}

impl Run {
    pub fn end_pos(&self) -> u64 {
        self.pos + self.bytes
    }
}

#[derive(Debug, Clone)]
pub struct RunIndex {
    runs: VecDeque<Run>,
    runs_max: usize,
}

impl Default for RunIndex {
    fn default() -> Self {
        RunIndex::with_max(RUNS_PER_PARTITION_MAX)
    }
}

impl RunIndex {
    pub fn with_max(runs_max: usize) -> RunIndex {
        assert!(runs_max > 0, "a run index must hold a run");
        RunIndex { runs: VecDeque::new(), runs_max }
    }

    pub fn len(&self) -> usize {
        self.runs.len()
    }

    pub fn runs_max(&self) -> usize {
        self.runs_max
    }

    /// Changes the bound (the core's share changed), dropping the oldest
    /// runs past it.
    pub fn set_max(&mut self, runs_max: usize) {
        assert!(runs_max > 0, "a run index must hold a run");
        self.runs_max = runs_max;
        while self.runs.len() > runs_max {
            self.runs.pop_front();
        }
    }

    pub fn is_empty(&self) -> bool {
        self.runs.is_empty()
    }

    pub fn first(&self) -> Option<&Run> {
        self.runs.front()
    }

    pub fn get(&self, i: usize) -> Option<&Run> {
        self.runs.get(i)
    }

    /// Records a batch of offsets `base..end_offset` in a frame of
    /// `frame_bytes` at `pos`: it extends the last run when it follows it
    /// directly in the same segment, else it starts a run.
    pub fn observe(&mut self, base: u64, end_offset: u64, pos: u64, frame_bytes: u64, segment_start: u64) {
        if let Some(last) = self.runs.back_mut()
            && last.end_pos() == pos
            && last.end_offset == base
            && pos != segment_start
        {
            last.end_offset = end_offset;
            last.bytes += frame_bytes;
            return;
        }
        // A gap in offsets (a rewind, a restore) means the runs no longer
        // describe every offset after the first: start over from this one.
        if self.runs.back().is_some_and(|l| l.end_offset != base || l.end_pos() > pos) {
            self.runs.clear();
        }
        if self.runs.len() == self.runs_max {
            self.runs.pop_front();
        }
        self.runs.push_back(Run { first_offset: base, end_offset, pos, bytes: frame_bytes });
    }

    /// The index of the run holding `offset`: the last one starting at or
    /// before it, if the runs reach back that far.
    pub fn find_offset(&self, offset: u64) -> Option<usize> {
        let i = self.runs.partition_point(|r| r.first_offset <= offset);
        let i = i.checked_sub(1)?;
        (offset < self.runs[i].end_offset).then_some(i)
    }

    /// The index of the first run ending past log position `pos`: the run
    /// holding `pos`, or the next one after it.
    pub fn at_or_after(&self, pos: u64) -> Option<usize> {
        let i = self.runs.partition_point(|r| r.end_pos() <= pos);
        (i < self.runs.len()).then_some(i)
    }

    /// Drops runs of data before log position `pos` (deleted segments).
    pub fn drop_before(&mut self, pos: u64) {
        while self.runs.front().is_some_and(|r| r.pos < pos) {
            self.runs.pop_front();
        }
    }

    /// Drops what was staged at or past `pos` (a rewind): a run holding
    /// `pos` is cut there, and ends at the offset of the batch at `pos`
    /// (`end_offset`, the partition's next offset after the rewind).
    pub fn truncate_from(&mut self, pos: u64, end_offset: u64) {
        while self.runs.back().is_some_and(|r| r.pos >= pos) {
            self.runs.pop_back();
        }
        if let Some(last) = self.runs.back_mut()
            && last.end_pos() > pos
        {
            last.bytes = pos - last.pos;
            last.end_offset = end_offset;
        }
    }

    pub fn invariants(&self) {
        assert!(self.runs.len() <= self.runs_max, "run index over its bound");
        for r in &self.runs {
            assert!(r.first_offset < r.end_offset && r.bytes > 0, "empty run: {r:?}");
        }
        for (a, b) in self.runs.iter().zip(self.runs.iter().skip(1)) {
            assert!(a.end_offset == b.first_offset && a.end_pos() <= b.pos, "runs out of order: {a:?} {b:?}");
        }
    }
}

/// The runs a dense read follows: a partition's in memory, or its runs in
/// one sealed segment loaded from that segment's sidecar.
#[derive(Debug, Clone, Copy)]
pub enum RunsRef<'a> {
    Mem(&'a RunIndex),
    Sidecar(&'a [Run]),
}

impl RunsRef<'_> {
    pub fn first(&self) -> Option<&Run> {
        self.get(0)
    }

    pub fn get(&self, i: usize) -> Option<&Run> {
        match self {
            RunsRef::Mem(r) => r.get(i),
            RunsRef::Sidecar(r) => r.get(i),
        }
    }

    /// The index of the first run ending past log position `pos`.
    pub fn at_or_after(&self, pos: u64) -> Option<usize> {
        match self {
            RunsRef::Mem(r) => r.at_or_after(pos),
            RunsRef::Sidecar(r) => {
                let i = r.partition_point(|r| r.end_pos() <= pos);
                (i < r.len()).then_some(i)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Proves: contiguous batches of a partition make one run, a gap or a
    // new segment starts another, and lookups by offset and position find
    // the run holding them.
    #[test]
    fn runs_merge_contiguous_batches_and_split_at_gaps_and_segments() {
        let mut r = RunIndex::default();
        r.observe(0, 10, 0, 100, 0);
        r.observe(10, 20, 100, 100, 0);
        r.observe(20, 25, 500, 50, 0);
        r.observe(25, 30, 550, 50, 0);
        r.observe(30, 31, 600, 10, 600);
        r.invariants();
        let runs: Vec<(u64, u64, u64, u64)> =
            (0..r.len()).map(|i| r.get(i).unwrap()).map(|x| (x.first_offset, x.end_offset, x.pos, x.bytes)).collect();
        assert_eq!(runs, vec![(0, 20, 0, 200), (20, 30, 500, 100), (30, 31, 600, 10)]);
        assert_eq!(r.find_offset(19), Some(0));
        assert_eq!(r.find_offset(20), Some(1));
        assert_eq!(r.find_offset(31), None);
        assert_eq!(r.at_or_after(199), Some(0));
        assert_eq!(r.at_or_after(200), Some(1));
        assert_eq!(r.at_or_after(610), None);
    }

    // Proves: the bound drops the oldest runs (lookups before them find
    // nothing), retention drops the runs of deleted segments, and a rewind
    // cuts the run it lands in.
    #[test]
    fn bound_retention_and_rewind_drop_runs() {
        let mut r = RunIndex::with_max(3);
        for i in 0..5u64 {
            r.observe(i, i + 1, i * 1000, 100, 0);
        }
        r.invariants();
        assert_eq!((r.len(), r.first().unwrap().first_offset), (3, 2));
        assert_eq!(r.find_offset(1), None, "dropped by the bound");
        r.drop_before(3000);
        assert_eq!(r.first().unwrap().first_offset, 3);
        r.observe(5, 6, 4100, 100, 0);
        r.truncate_from(4100, 5);
        r.invariants();
        assert_eq!(*r.get(1).unwrap(), Run { first_offset: 4, end_offset: 5, pos: 4000, bytes: 100 });
        r.truncate_from(3000, 3);
        assert!(r.is_empty());
    }

    // Proves: a core's partitions share RUNS_PER_CORE_MAX (so their runs
    // never exceed it together), a few partitions keep the per-partition
    // bound, and a lowered bound drops a partition's oldest runs at once.
    #[test]
    fn partitions_share_the_core_bound() {
        for n in [1, 4, 16, 17, 1000, 10_000, 3_000_000] {
            let per = runs_max_for(n);
            assert!((1..=RUNS_PER_PARTITION_MAX).contains(&per));
            assert!(n * per <= RUNS_PER_CORE_MAX || per == 1, "{n} partitions x {per}");
        }
        assert_eq!(runs_max_for(4), RUNS_PER_PARTITION_MAX);
        let mut r = RunIndex::default();
        for i in 0..10u64 {
            r.observe(i, i + 1, i * 1000, 100, 0);
        }
        r.set_max(4);
        r.invariants();
        assert_eq!((r.len(), r.first().unwrap().first_offset, r.runs_max()), (4, 6, 4));
        r.observe(10, 11, 10_000, 100, 0);
        assert_eq!((r.len(), r.first().unwrap().first_offset), (4, 7));
    }
}
