//! A partition's named indices: the last values staged and durable (what
//! the next batch must not go below), and a sparse lookup from values to
//! offsets.
//!
//! Values never decrease within a partition (the append path refuses a
//! batch that would break that), so an index is sorted by offset and by
//! value at once. The lookup keeps, every `stride_bytes` of the
//! partition's own batches, an entry: a batch's first offset and its first
//! record's values. The first record whose value is at least V lies at or
//! after the last entry whose value is below V, and before the next entry:
//! a lookup scans the partition's batches from there (the read path,
//! [`crate::read`]), at most about `stride_bytes` of them.
//!
//! Memory is bounded per partition: at [`NAMED_ENTRIES_MAX`] entries every
//! other one is dropped and the stride doubles, so a huge partition has
//! sparser entries (longer scans), never more of them. Entries below the
//! partition's start (retention) go; entries of batches a rewind takes
//! back go. Equal values never collapse: entries name offsets, and a
//! lookup answers the first record, whatever how many share its value.
use std::collections::VecDeque;

use crate::catalog::IndexNames;
use crate::wire::batch::values::{BatchValues, INDICES_MAX};

/// Entries a partition keeps at most: (8 + 8 x indices) bytes each, so at
/// most 72 x 16 Ki = 1.1 MiB per partition with 8 indices.
pub const NAMED_ENTRIES_MAX: usize = 16 << 10;
/// The partition bytes between entries to start with: a lookup scans about
/// this much of the partition's own data past its entry.
pub const NAMED_STRIDE_BYTES_INITIAL: u64 = 256 << 10;

/// One index's values at one batch, as the checkpoint keeps them.
pub type Values = [i64; INDICES_MAX];

#[derive(Debug, Clone)]
pub struct NamedIndex {
    names: IndexNames,
    /// Entry i is the batch starting at `offsets[i]`, whose first record
    /// has values `values[i * k .. (i + 1) * k]`.
    offsets: Vec<u64>,
    values: Vec<i64>,
    stride_bytes: u64,
    bytes_since_entry: u64,
    /// The last staged record's values (None: the partition has no record
    /// of its own yet, or none since the index began, e.g. before a topic
    /// of this binary had indices: there is no such topic, but the state is kept honest).
    staged_last: Option<Values>,
    /// The last durable record's values.
    visible_last: Option<Values>,
    /// Per staged batch not yet visible: its end offset and last values,
    /// oldest first (so a rewind can take the staged last values back).
    unvisible: VecDeque<(u64, Values)>,
}

impl NamedIndex {
    pub fn new(names: IndexNames) -> NamedIndex {
        assert!(!names.is_empty() && names.len() <= INDICES_MAX, "{} index names", names.len());
        NamedIndex {
            names,
            offsets: Vec::new(),
            values: Vec::new(),
            stride_bytes: NAMED_STRIDE_BYTES_INITIAL,
            bytes_since_entry: 0,
            staged_last: None,
            visible_last: None,
            unvisible: VecDeque::new(),
        }
    }

    pub fn names(&self) -> &IndexNames {
        &self.names
    }

    fn k(&self) -> usize {
        self.names.len()
    }

    /// The index that is first to go below the staged last values in a
    /// batch whose first values are `first`: Some((index, previous value)).
    pub fn would_decrease(&self, first: &[i64]) -> Option<(usize, i64)> {
        let last = self.staged_last.as_ref()?;
        first.iter().zip(last).position(|(v, l)| v < l).map(|i| (i, last[i]))
    }

    /// Records a batch staged (or recovered) at offsets `base..end`, of
    /// `frame_bytes`, with values `v`.
    pub fn observe(&mut self, base: u64, end: u64, frame_bytes: u64, v: &BatchValues) {
        let k = self.k();
        debug_assert_eq!(v.count as usize, k);
        if self.offsets.is_empty() || self.bytes_since_entry >= self.stride_bytes {
            if self.offsets.len() >= NAMED_ENTRIES_MAX {
                self.thin();
            }
            self.offsets.push(base);
            self.values.extend_from_slice(v.first());
            self.bytes_since_entry = 0;
        }
        self.bytes_since_entry += frame_bytes;
        self.staged_last = Some(v.last);
        self.unvisible.push_back((end, v.last));
    }

    /// Drops every other entry (keeping the first) and doubles the stride.
    fn thin(&mut self) {
        let k = self.k();
        let mut w = 0;
        for r in (0..self.offsets.len()).step_by(2) {
            self.offsets[w] = self.offsets[r];
            self.values.copy_within(r * k..(r + 1) * k, w * k);
            w += 1;
        }
        self.offsets.truncate(w);
        self.values.truncate(w * k);
        self.stride_bytes = self.stride_bytes.saturating_mul(2);
    }

    /// Offsets below `end` are durable.
    pub fn make_visible(&mut self, end: u64) {
        while let Some(&(e, last)) = self.unvisible.front() {
            if e > end {
                break;
            }
            self.visible_last = Some(last);
            self.unvisible.pop_front();
        }
    }

    /// Forgets batches staged at or past offset `next` (a rewind).
    pub fn truncate_to(&mut self, next: u64) {
        while self.unvisible.back().is_some_and(|&(e, _)| e > next) {
            self.unvisible.pop_back();
        }
        self.staged_last = self.unvisible.back().map(|&(_, l)| l).or(self.visible_last);
        let keep = self.offsets.partition_point(|&o| o < next);
        self.offsets.truncate(keep);
        self.values.truncate(keep * self.k());
    }

    /// Forgets entries below `start` (retention dropped their batches).
    pub fn forget_before(&mut self, start: u64) {
        let drop = self.offsets.partition_point(|&o| o < start);
        if drop > 0 {
            self.offsets.drain(..drop);
            self.values.drain(..drop * self.k());
        }
    }

    /// The last durable record's value of index `i`, if any record is durable.
    pub fn visible_last(&self, i: usize) -> Option<i64> {
        self.visible_last.map(|l| l[i])
    }

    /// Where to start scanning for the first record whose value of index
    /// `i` is at least `value` (`strict`: above it): the offset of the last
    /// entry whose value does not qualify; None to scan from the start.
    pub fn scan_from(&self, i: usize, value: i64, strict: bool) -> Option<u64> {
        let k = self.k();
        let qualifies = |e: usize| if strict { self.values[e * k + i] > value } else { self.values[e * k + i] >= value };
        // Entries qualify from some point on (values never decrease).
        let (mut lo, mut hi) = (0, self.offsets.len());
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            if qualifies(mid) { hi = mid } else { lo = mid + 1 }
        }
        lo.checked_sub(1).map(|e| self.offsets[e])
    }

    /// The durable state for a checkpoint whose partition ends at `end`:
    /// the last durable values and the entries below `end`.
    pub fn durable(&self, end: u64) -> NamedCheckpoint {
        let keep = self.offsets.partition_point(|&o| o < end);
        NamedCheckpoint {
            last: self.visible_last.map(|l| l[..self.k()].to_vec()),
            stride_bytes: self.stride_bytes,
            offsets: self.offsets[..keep].to_vec(),
            values: self.values[..keep * self.k()].to_vec(),
        }
    }

    /// Takes the state a checkpoint kept. One whose shape does not fit
    /// this topic's indices (a damaged file passes its checksum only by
    /// accident) is ignored: the index starts empty and the lookups scan
    /// from the partition's start, which is slower, never wrong. The last
    /// values are then unknown until the tail scan or the next batch.
    pub fn restore(&mut self, c: &NamedCheckpoint) {
        let k = self.k();
        let sorted = c.offsets.windows(2).all(|w| w[0] < w[1]);
        if c.values.len() != c.offsets.len() * k || c.last.as_ref().is_some_and(|l| l.len() != k) || !sorted {
            tracing::warn!(indices = k, "a checkpoint's named index does not fit the topic; lookups scan from the start");
            return;
        }
        self.offsets = c.offsets.clone();
        self.values = c.values.clone();
        self.stride_bytes = c.stride_bytes.max(NAMED_STRIDE_BYTES_INITIAL);
        self.visible_last = c.last.as_ref().map(|l| {
            let mut v = [0; INDICES_MAX];
            v[..k].copy_from_slice(l);
            v
        });
        self.staged_last = self.visible_last;
        self.unvisible.clear();
    }

    /// Entries now (for tests and the bound).
    pub fn entries(&self) -> usize {
        self.offsets.len()
    }

    pub fn invariants(&self) {
        assert_eq!(self.values.len(), self.offsets.len() * self.k());
        assert!(self.offsets.len() <= NAMED_ENTRIES_MAX);
        assert!(self.offsets.windows(2).all(|w| w[0] < w[1]), "entries out of order");
    }
}

/// What a checkpoint keeps of a partition's named index.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct NamedCheckpoint {
    /// The last durable record's values, one per index; None if none.
    pub last: Option<Vec<i64>>,
    pub stride_bytes: u64,
    pub offsets: Vec<u64>,
    /// `offsets.len() x indices` values, entry by entry.
    pub values: Vec<i64>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vals(first: &[i64], last: &[i64]) -> BatchValues {
        let mut v = BatchValues { count: first.len() as u8, first: [0; INDICES_MAX], last: [0; INDICES_MAX] };
        v.first[..first.len()].copy_from_slice(first);
        v.last[..last.len()].copy_from_slice(last);
        v
    }

    fn names(n: &[&str]) -> IndexNames {
        n.iter().map(|s| s.to_string()).collect::<Vec<_>>().into()
    }

    // Proves the staged and durable last values, the decrease check, and
    // that a rewind takes the staged values back to the last kept batch.
    #[test]
    fn last_values_and_rewind() {
        let mut x = NamedIndex::new(names(&["ts", "seq"]));
        assert_eq!(x.would_decrease(&[i64::MIN, i64::MIN]), None, "nothing to go below yet");
        x.observe(0, 3, 100, &vals(&[1, 10], &[5, 12]));
        x.make_visible(3);
        x.observe(3, 5, 100, &vals(&[5, 13], &[6, 14]));
        assert_eq!(x.would_decrease(&[6, 14]), None, "equal values are allowed");
        assert_eq!(x.would_decrease(&[6, 13]), Some((1, 14)));
        assert_eq!(x.visible_last(1), Some(12));
        x.truncate_to(3);
        assert_eq!(x.would_decrease(&[5, 12]), None);
        assert_eq!(x.would_decrease(&[4, 12]), Some((0, 5)));
        x.invariants();
    }

    // Proves a lookup starts at the last entry that does not qualify, so
    // the first qualifying record lies at or after it, with equal values
    // across entries (never collapsed) and strict bounds.
    #[test]
    fn scan_from() {
        let mut x = NamedIndex::new(names(&["ts"]));
        x.stride_bytes = 1;
        for (i, v) in [10, 20, 20, 20, 30].into_iter().enumerate() {
            let base = i as u64 * 10;
            x.observe(base, base + 10, 1, &vals(&[v], &[v]));
        }
        assert_eq!(x.entries(), 5);
        assert_eq!(x.scan_from(0, 5, false), None);
        assert_eq!(x.scan_from(0, 10, false), None);
        assert_eq!(x.scan_from(0, 11, false), Some(0));
        assert_eq!(x.scan_from(0, 20, false), Some(0), "the first of the equal values is after entry 0");
        assert_eq!(x.scan_from(0, 20, true), Some(30));
        assert_eq!(x.scan_from(0, 99, false), Some(40));
        x.forget_before(15);
        assert_eq!(x.scan_from(0, 20, false), None, "entries below the start are gone: scan from the start");
        x.invariants();
    }

    // Proves memory is bounded: past the limit entries thin out and the
    // stride doubles, and lookups still start at or before the answer.
    #[test]
    fn bounded() {
        let mut x = NamedIndex::new(names(&["seq"]));
        let n = NAMED_ENTRIES_MAX as u64 * 3;
        for i in 0..n {
            x.observe(i, i + 1, NAMED_STRIDE_BYTES_INITIAL, &vals(&[i as i64], &[i as i64]));
            assert!(x.entries() <= NAMED_ENTRIES_MAX);
        }
        assert!(x.stride_bytes > NAMED_STRIDE_BYTES_INITIAL);
        for v in [0, 1, 777, n as i64 / 2, n as i64 - 1] {
            let from = x.scan_from(0, v, false).unwrap_or(0);
            assert!(from <= v as u64, "a scan for {v} starts past it, at {from}");
        }
        x.invariants();
    }

    // Proves the checkpoint keeps only durable entries and values, and a
    // restore takes them back; one of the wrong shape is ignored.
    #[test]
    fn checkpoint_round_trip() {
        let mut x = NamedIndex::new(names(&["a", "b"]));
        x.stride_bytes = 1;
        x.observe(0, 2, 1, &vals(&[1, 2], &[3, 4]));
        x.make_visible(2);
        x.observe(2, 4, 1, &vals(&[5, 6], &[7, 8]));
        let c = x.durable(2);
        assert_eq!(c.offsets, vec![0]);
        assert_eq!(c.last, Some(vec![3, 4]));
        let mut y = NamedIndex::new(names(&["a", "b"]));
        y.restore(&c);
        assert_eq!(y.would_decrease(&[3, 3]), Some((1, 4)));
        assert_eq!(y.entries(), 1);
        let mut z = NamedIndex::new(names(&["a"]));
        z.restore(&c);
        assert_eq!(z.entries(), 0, "a checkpoint of another shape is ignored");
    }
}
