//! The sparse index of one partition: offset -> log position, and running
//! max timestamp -> offset.
//!
//! A batch gets an entry when it is the partition's first in its segment,
//! or when it lies at least `interval_bytes` of *log* past the previous
//! entry. Consequence (what reads rely on): between an entry and the next
//! batch of the same partition there are never more than `interval_bytes`
//! of log unless that next batch has an entry of its own. So a read scans at
//! most about `interval_bytes` of other partitions' frames per batch, however
//! many partitions share the log, and entries are at least `interval_bytes`
//! apart per partition.

/// One entry: the batch starting at `offset` is the frame at log `pos`;
/// `max_ts_ms` is the largest timestamp in the partition up to and including it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IndexEntry {
    pub offset: u64,
    pub pos: u64,
    pub max_ts_ms: i64,
}

#[derive(Debug, Clone, Default)]
pub struct SparseIndex {
    entries: Vec<IndexEntry>,
}

impl SparseIndex {
    pub fn from_entries(entries: Vec<IndexEntry>) -> SparseIndex {
        let idx = SparseIndex { entries };
        idx.invariants();
        idx
    }

    pub fn entries(&self) -> &[IndexEntry] {
        &self.entries
    }

    pub fn first(&self) -> Option<&IndexEntry> {
        self.entries.first()
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Considers a batch for an entry (see the module doc for the rule).
    pub fn observe(&mut self, offset: u64, pos: u64, running_max_ts_ms: i64, segment_start: u64, interval_bytes: u64) {
        let add = match self.entries.last() {
            None => true,
            Some(last) => last.pos < segment_start || pos - last.pos >= interval_bytes,
        };
        if add {
            self.entries.push(IndexEntry { offset, pos, max_ts_ms: running_max_ts_ms });
        }
    }

    /// The last entry at or before `offset`.
    pub fn floor(&self, offset: u64) -> Option<IndexEntry> {
        let i = self.entries.partition_point(|e| e.offset <= offset);
        i.checked_sub(1).map(|i| self.entries[i])
    }

    /// The first entry at or after log position `pos`.
    pub fn first_at_or_after(&self, pos: u64) -> Option<IndexEntry> {
        let i = self.entries.partition_point(|e| e.pos < pos);
        self.entries.get(i).copied()
    }

    /// Where to start scanning for the first batch whose max timestamp is at
    /// least `ts_ms`: the entry before the first entry reaching `ts_ms` (the
    /// batch lies after it), or the first entry. None if no entry reaches it
    /// and the index is empty.
    pub fn scan_start_for_time(&self, ts_ms: i64) -> Option<IndexEntry> {
        let i = self.entries.partition_point(|e| e.max_ts_ms < ts_ms);
        let i = i.saturating_sub(1);
        self.entries.get(i).copied().or(self.entries.last().copied())
    }

    /// Drops entries for data before log position `pos` (deleted segments).
    pub fn drop_before(&mut self, pos: u64) {
        let i = self.entries.partition_point(|e| e.pos < pos);
        self.entries.drain(..i);
    }

    /// Drops entries at or past `pos` (data that never became durable).
    pub fn truncate_from(&mut self, pos: u64) {
        let i = self.entries.partition_point(|e| e.pos < pos);
        self.entries.truncate(i);
    }

    pub fn invariants(&self) {
        for w in self.entries.windows(2) {
            assert!(w[0].offset < w[1].offset && w[0].pos < w[1].pos, "index out of order: {w:?}");
            assert!(w[0].max_ts_ms <= w[1].max_ts_ms, "running max timestamp decreased: {w:?}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Proves entries are added per the interval and segment rules, and lookups find the right one.
    #[test]
    fn sparse_rule_and_lookups() {
        let mut ix = SparseIndex::default();
        // Batches every 1000 log bytes, 10 offsets each, interval 4000, segment at 0.
        for i in 0..20u64 {
            ix.observe(i * 10, i * 1000, i as i64, 0, 4000);
        }
        let offsets: Vec<u64> = ix.entries().iter().map(|e| e.offset).collect();
        assert_eq!(offsets, vec![0, 40, 80, 120, 160]);
        // A new segment at 20_000 forces an entry.
        ix.observe(200, 20_000, 20, 20_000, 4000);
        assert_eq!(ix.entries().last().unwrap().offset, 200);
        assert_eq!(ix.floor(55).unwrap().offset, 40);
        assert_eq!(ix.floor(0).unwrap().offset, 0);
        assert_eq!(ix.first_at_or_after(4000).unwrap().pos, 4000);
        assert_eq!(ix.first_at_or_after(4001).unwrap().pos, 8000);
        // Entry 80 has running max 8 < 9, so a timestamp of 9 lies after it.
        assert_eq!(ix.scan_start_for_time(9).unwrap().offset, 80);
        assert_eq!(ix.scan_start_for_time(8).unwrap().offset, 40);
        ix.drop_before(8000);
        assert_eq!(ix.first().unwrap().offset, 80);
        ix.truncate_from(16_000);
        assert_eq!(ix.entries().last().unwrap().offset, 120);
        ix.invariants();
    }
}
