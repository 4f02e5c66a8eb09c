//! Named index values carried in a batch's records.
//!
//! A topic may declare up to [`INDICES_MAX`] named indices (timestamps,
//! sequence numbers: Franz's indices). Every record of such a topic
//! carries one value per index, as a record header whose key is the
//! index's name and whose value is exactly 8 bytes, a signed 64-bit
//! integer, little-endian (as Franz stores them). Within a partition each
//! index's values never decrease; equal values are allowed.
//!
//! This module reads them out of one batch and checks the batch on its
//! own: every record has every value, once, of the right length, and no
//! value decreases from one record to the next. The partition's side (a
//! batch's first values are not below the previous batch's last ones) is
//! the core's, which alone knows the previous batch. Pure, allocation-free,
//! and fuzzed beside the batch decoder.
use super::records;
use crate::error::BatchError;

/// Named indices a topic may declare at most.
pub const INDICES_MAX: usize = 8;
/// Bytes of one index value in a record header.
pub const INDEX_VALUE_BYTES: usize = 8;

/// A batch's index values: its first and its last record's, per index
/// (only the first `count` slots mean anything). Since values never
/// decrease within a batch, `first` is also each index's smallest value
/// in the batch and `last` its largest.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchValues {
    pub count: u8,
    pub first: [i64; INDICES_MAX],
    pub last: [i64; INDICES_MAX],
}

impl BatchValues {
    pub fn first(&self) -> &[i64] {
        &self.first[..self.count as usize]
    }

    pub fn last(&self) -> &[i64] {
        &self.last[..self.count as usize]
    }
}

/// Why a batch's index values were refused. `index` is the position of the
/// index in the topic's declaration; `record` the record's offset delta
/// (the core turns it into the offset the record would have had).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ValueFault {
    /// The record has no header named after the index.
    Missing { index: usize, record: u32 },
    /// The record has two headers named after the index.
    Duplicate { index: usize, record: u32 },
    /// The header's value is not exactly 8 bytes (or is null).
    BadLength { index: usize, record: u32, bytes: Option<usize> },
    /// The value is below the previous record's.
    Decreasing { index: usize, record: u32, value: i64, previous: i64 },
    /// The records could not be read (a compressed batch, or damage the
    /// batch validation did not see: it checks every record's framing).
    Undecodable(BatchError),
}

impl ValueFault {
    /// The index the fault names, if it names one.
    pub fn index(&self) -> Option<usize> {
        match *self {
            ValueFault::Missing { index, .. }
            | ValueFault::Duplicate { index, .. }
            | ValueFault::BadLength { index, .. }
            | ValueFault::Decreasing { index, .. } => Some(index),
            ValueFault::Undecodable(_) => None,
        }
    }

    /// The offset delta of the record the fault names, if it names one.
    pub fn record(&self) -> Option<u32> {
        match *self {
            ValueFault::Missing { record, .. }
            | ValueFault::Duplicate { record, .. }
            | ValueFault::BadLength { record, .. }
            | ValueFault::Decreasing { record, .. } => Some(record),
            ValueFault::Undecodable(_) => None,
        }
    }

    /// What is wrong, without the index's name or the offset (the caller
    /// adds those).
    pub fn reason(&self) -> String {
        match self {
            ValueFault::Missing { .. } => "the record has no value for it".into(),
            ValueFault::Duplicate { .. } => "the record carries two values for it".into(),
            ValueFault::BadLength { bytes: Some(b), .. } => format!("its value is {b} bytes, not {INDEX_VALUE_BYTES}"),
            ValueFault::BadLength { bytes: None, .. } => "its value is null".into(),
            ValueFault::Decreasing { value, previous, .. } => format!("value {value} is below the previous record's {previous}"),
            ValueFault::Undecodable(e) => format!("the records cannot be read: {e}"),
        }
    }
}

/// Reads the values of the indices `names` (in declared order) from every
/// record of `batch`, a batch that passed [`super::validate`]. `names` must
/// hold 1 to [`INDICES_MAX`] names (a caller bug otherwise: panics).
pub fn batch_values<N: AsRef<[u8]>>(batch: &[u8], names: &[N]) -> Result<BatchValues, ValueFault> {
    assert!(!names.is_empty() && names.len() <= INDICES_MAX, "{} index names", names.len());
    let k = names.len();
    let mut out = BatchValues { count: k as u8, first: [0; INDICES_MAX], last: [0; INDICES_MAX] };
    let mut any = false;
    for rec in records(batch) {
        let rec = rec.map_err(ValueFault::Undecodable)?;
        let record = u32::try_from(rec.offset_delta).unwrap_or(u32::MAX);
        let mut now: [Option<i64>; INDICES_MAX] = [None; INDICES_MAX];
        for (key, value) in rec.headers.clone() {
            let Some(index) = names.iter().position(|n| n.as_ref() == key) else { continue };
            if now[index].is_some() {
                return Err(ValueFault::Duplicate { index, record });
            }
            let bytes: [u8; INDEX_VALUE_BYTES] = match value {
                Some(v) => v.try_into().map_err(|_| ValueFault::BadLength { index, record, bytes: Some(v.len()) })?,
                None => return Err(ValueFault::BadLength { index, record, bytes: None }),
            };
            now[index] = Some(i64::from_le_bytes(bytes));
        }
        for (index, v) in now.iter().take(k).enumerate() {
            let Some(value) = *v else { return Err(ValueFault::Missing { index, record }) };
            if any && value < out.last[index] {
                return Err(ValueFault::Decreasing { index, record, value, previous: out.last[index] });
            }
            if !any {
                out.first[index] = value;
            }
            out.last[index] = value;
        }
        any = true;
    }
    if !any {
        // validate refuses a batch without records; say so rather than
        // answer values no record had.
        return Err(ValueFault::Undecodable(BatchError::Empty));
    }
    Ok(out)
}

/// The value of index `name` in one record's headers, if it carries a
/// well-formed one (for readers: stored batches were checked on the way in).
pub fn record_value<'a>(mut headers: impl Iterator<Item = (&'a [u8], Option<&'a [u8]>)>, name: &[u8]) -> Option<i64> {
    headers.find(|(k, _)| *k == name).and_then(|(_, v)| v?.try_into().ok()).map(i64::from_le_bytes)
}

/// Runs [`batch_values`] on arbitrary bytes with a few name sets and checks
/// its promises: no panic, and an Ok answer's first values never exceed
/// its last ones.
#[doc(hidden)]
pub fn fuzz_check(data: &[u8]) {
    let sets: [&[&[u8]]; 3] = [&[b"ts"], &[b"ts", b"seq"], &[b"a", b"b", b"c", b"d", b"e", b"f", b"g", b"h"]];
    for names in sets {
        if let Ok(v) = batch_values(data, names) {
            assert_eq!(v.count as usize, names.len());
            for i in 0..names.len() {
                assert!(v.first[i] <= v.last[i], "first {} above last {} for index {i}", v.first[i], v.last[i]);
            }
        }
    }
}

/// Seed inputs for the `batch_values` fuzz target (written by
/// `tests/fuzz_replay.rs`'s `write_seed_corpus`): batches with index
/// headers, valid (equal values kept), decreasing, missing a value, and
/// with a short value.
#[doc(hidden)]
pub fn fuzz_seeds() -> Vec<(&'static str, Vec<u8>)> {
    let build = |rows: &[&[(&[u8], &[u8])]]| {
        let mut b = super::BatchBuilder::new(1_700_000_000_000);
        for headers in rows {
            let h: Vec<(&[u8], Option<&[u8]>)> = headers.iter().map(|(k, v)| (*k, Some(*v))).collect();
            b.push(1_700_000_000_000, None, Some(b"v"), &h);
        }
        b.finish()
    };
    let (one, two, five) = (1i64.to_le_bytes(), 2i64.to_le_bytes(), 5i64.to_le_bytes());
    vec![
        ("valid-ts-seq", build(&[&[(b"ts", &one), (b"seq", &one)], &[(b"seq", &two), (b"ts", &one)], &[(b"ts", &five), (b"seq", &five)]])),
        ("decreasing", build(&[&[(b"ts", &five), (b"seq", &one)], &[(b"ts", &two), (b"seq", &two)]])),
        ("missing", build(&[&[(b"ts", &one)]])),
        ("short-value", build(&[&[(b"ts", &one[..3]), (b"seq", &one)]])),
    ]
}

#[cfg(test)]
mod tests {
    use super::super::BatchBuilder;
    use super::*;

    /// One record's headers.
    type Hs<'a> = &'a [(&'a [u8], Option<&'a [u8]>)];

    fn batch(records: &[Hs<'_>]) -> Vec<u8> {
        let mut b = BatchBuilder::new(1_000);
        for headers in records {
            b.push(1_000, None, Some(b"v"), headers);
        }
        b.finish()
    }

    fn le(v: i64) -> [u8; 8] {
        v.to_le_bytes()
    }

    // Proves values are read per index in declared order (whatever the
    // headers' order, other headers ignored), equal values kept, and the
    // first and last records' values answered.
    #[test]
    fn reads_values() {
        let (a1, b1, a2, b2, a3, b3) = (le(-5), le(10), le(-5), le(11), le(7), le(11));
        let recs: [Hs<'_>; 3] = [
            &[(b"seq", Some(&b1)), (b"ts", Some(&a1)), (b"other", None)],
            &[(b"ts", Some(&a2)), (b"seq", Some(&b2))],
            &[(b"ts", Some(&a3)), (b"seq", Some(&b3))],
        ];
        let v = batch_values(&batch(&recs), &["ts", "seq"]).unwrap();
        assert_eq!(v.first(), &[-5, 10]);
        assert_eq!(v.last(), &[7, 11]);
    }

    // Proves each fault is found and names the index and the record.
    #[test]
    fn faults() {
        let (one, two, short) = (le(1), le(2), [0u8; 7]);
        let names = ["ts", "seq"];
        let missing: [Hs<'_>; 2] = [&[(b"ts", Some(&one)), (b"seq", Some(&one))], &[(b"ts", Some(&two))]];
        assert_eq!(batch_values(&batch(&missing), &names), Err(ValueFault::Missing { index: 1, record: 1 }));
        let dup: [Hs<'_>; 1] = [&[(b"ts", Some(&one)), (b"ts", Some(&two)), (b"seq", Some(&one))]];
        assert_eq!(batch_values(&batch(&dup), &names), Err(ValueFault::Duplicate { index: 0, record: 0 }));
        let bad: [Hs<'_>; 1] = [&[(b"ts", Some(&short)), (b"seq", Some(&one))]];
        assert_eq!(batch_values(&batch(&bad), &names), Err(ValueFault::BadLength { index: 0, record: 0, bytes: Some(7) }));
        let null: [Hs<'_>; 1] = [&[(b"ts", Some(&one)), (b"seq", None)]];
        assert_eq!(batch_values(&batch(&null), &names), Err(ValueFault::BadLength { index: 1, record: 0, bytes: None }));
        let down: [Hs<'_>; 3] = [
            &[(b"ts", Some(&one)), (b"seq", Some(&two))],
            &[(b"ts", Some(&two)), (b"seq", Some(&two))],
            &[(b"ts", Some(&two)), (b"seq", Some(&one))],
        ];
        let f = batch_values(&batch(&down), &names).unwrap_err();
        assert_eq!(f, ValueFault::Decreasing { index: 1, record: 2, value: 1, previous: 2 });
        assert_eq!((f.index(), f.record()), (Some(1), Some(2)));
        assert!(f.reason().contains("below"), "{}", f.reason());
    }

    // Proves a reader finds one record's value by name, and nothing for a
    // missing or malformed one.
    #[test]
    fn record_values() {
        let (one, short) = (le(42), [1u8; 3]);
        let h: [(&[u8], Option<&[u8]>); 2] = [(b"ts", Some(&one)), (b"bad", Some(&short))];
        assert_eq!(record_value(h.iter().copied(), b"ts"), Some(42));
        assert_eq!(record_value(h.iter().copied(), b"bad"), None);
        assert_eq!(record_value(h.iter().copied(), b"none"), None);
    }
}
