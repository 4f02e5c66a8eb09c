//! A partition: a dense sequence of offsets whose batches live in one log.
//!
//! Offsets are assigned when a batch is staged (so pipelined appends get
//! consecutive offsets) but become visible to readers only when the commit
//! holding them is durable under the active policy (`visible_end`).
pub mod index;

pub use index::{IndexEntry, SparseIndex};

/// Partition id: unique in a data directory, never reused.
pub type Pid = u32;

/// The log holding partition `pid`'s batches: the storage half of the
/// routing rule (the broker's `Router` adds which core owns the log). The
/// number of logs is fixed when the data directory is created, so a
/// partition never changes log.
pub fn log_of(pid: Pid, log_count: u32) -> u32 {
    pid % log_count
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
        }
    }

    /// Records a batch staged (or recovered) at log position `pos`, holding
    /// offsets `base..base+records`. Returns the new running max timestamp.
    pub fn observe_batch(&mut self, base: u64, records: u64, max_ts_ms: i64, pos: u64, segment_start: u64, interval_bytes: u64) -> i64 {
        debug_assert_eq!(base, self.next_offset);
        self.next_offset = base + records;
        self.staged_max_ts_ms = self.staged_max_ts_ms.max(max_ts_ms);
        self.index.observe(base, pos, self.staged_max_ts_ms, segment_start, interval_bytes);
        self.staged_max_ts_ms
    }

    /// Makes offsets below `end` visible (their commit is durable).
    pub fn make_visible(&mut self, end: u64, max_ts_ms: i64) {
        debug_assert!(end >= self.visible_end && end <= self.next_offset);
        self.visible_end = end;
        self.visible_max_ts_ms = self.visible_max_ts_ms.max(max_ts_ms);
    }

    /// Drops everything stored before log position `log_start` (retention).
    pub fn forget_before(&mut self, log_start: u64) {
        self.index.drop_before(log_start);
        self.start_offset = match self.index.first() {
            Some(e) => e.offset.max(self.start_offset),
            None => self.visible_end,
        };
    }

    pub fn invariants(&self) {
        assert!(self.start_offset <= self.visible_end, "pid {}: start past visible", self.pid);
        assert!(self.visible_end <= self.next_offset, "pid {}: visible past next", self.pid);
        self.index.invariants();
    }
}
