//! Franz's stream layout, encoded and decoded: the three files of a Franz
//! stream directory, exactly as Franz's writer (`Database.Franz.Writer`)
//! lays them out.
//!
//! - `payloads`: the items' payloads, concatenated, nothing between them;
//! - `offsets`: per item, N+1 little-endian 64-bit integers: the byte of
//!   `payloads` where the item's payload ends (unsigned), then its N index
//!   values (signed, Franz's `Int64`), in the order `indices` names them;
//! - `indices`: the N index names, each followed by a newline (the
//!   writer's `unlines`); an empty file means no indices.
//!
//! Item `i`'s payload is `payloads[end(i-1)..end(i)]`, with `end(-1) = 0`,
//! so an empty payload is an entry whose end equals the previous one.
//!
//! Franz checks none of this (a torn write is glued into the next item);
//! here every entry is checked before anything is imported: whole entries,
//! ends that never decrease and never pass the payloads, no payload bytes
//! after the last end, names Strom accepts, and index values that never
//! decrease (Strom's named indices are ordered within a partition; Franz
//! does not promise it). Each error names the file and the byte. Pure:
//! bytes in, items or errors out, no I/O, no panics; [`OffsetsCheck`] takes
//! one entry at a time so that a stream of any size is checked in constant
//! memory.
use std::fmt;

use crate::catalog::{INDICES_MAX, TOPIC_NAME_BYTES_MAX, validate_topic_name};

pub const PAYLOADS_FILE: &str = "payloads";
pub const OFFSETS_FILE: &str = "offsets";
pub const INDICES_FILE: &str = "indices";
/// Bytes of one integer of `offsets`.
pub const INTEGER_BYTES: usize = 8;
/// The longest `indices` a stream Strom can take may have: the most names a
/// topic may declare, each of the longest name and its newline.
pub const INDICES_BYTES_MAX: usize = INDICES_MAX * (TOPIC_NAME_BYTES_MAX + 1);

/// Why a Franz stream was refused. Every variant names its file
/// ([`FranzError::file`]) and the byte of that file where the fault is
/// ([`FranzError::at_byte`]); items count from 0, as Franz's sequence numbers do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FranzError {
    /// `indices` is longer than any list of names Strom takes.
    IndicesTooLong { bytes: u64 },
    /// A line of `indices` is not a name Strom accepts (line from 1).
    IndexName { line: usize, at_byte: u64, name: String },
    /// `indices` names the same index twice.
    IndexDuplicate { line: usize, at_byte: u64, name: String },
    /// More names than a topic may declare.
    TooManyIndices { count: usize, at_byte: u64 },
    /// `offsets` does not hold a whole number of entries: its last entry,
    /// starting at `at_byte`, is cut short.
    OffsetsTruncated { offsets_bytes: u64, entry_bytes: u64, at_byte: u64 },
    /// An item's end is past the end of `payloads`.
    EndBeyondPayloads { item: u64, at_byte: u64, end_byte: u64, payloads_bytes: u64 },
    /// An item's end is before the previous item's.
    EndDecreasing { item: u64, at_byte: u64, end_byte: u64, previous: u64 },
    /// An index value is below the previous item's.
    IndexDecreasing { item: u64, at_byte: u64, index: String, value: i64, previous: i64 },
    /// `payloads` holds bytes past the last item's end: a payload written
    /// without its entry (Franz writes payloads first), or a lie.
    TrailingPayloads { payloads_bytes: u64, last_end: u64 },
}

impl FranzError {
    /// The file the fault is in.
    pub fn file(&self) -> &'static str {
        match self {
            FranzError::IndicesTooLong { .. }
            | FranzError::IndexName { .. }
            | FranzError::IndexDuplicate { .. }
            | FranzError::TooManyIndices { .. } => INDICES_FILE,
            FranzError::OffsetsTruncated { .. }
            | FranzError::EndBeyondPayloads { .. }
            | FranzError::EndDecreasing { .. }
            | FranzError::IndexDecreasing { .. } => OFFSETS_FILE,
            FranzError::TrailingPayloads { .. } => PAYLOADS_FILE,
        }
    }

    /// The byte of [`FranzError::file`] where the fault is.
    pub fn at_byte(&self) -> u64 {
        match *self {
            FranzError::IndicesTooLong { .. } => INDICES_BYTES_MAX as u64,
            FranzError::IndexName { at_byte, .. }
            | FranzError::IndexDuplicate { at_byte, .. }
            | FranzError::TooManyIndices { at_byte, .. }
            | FranzError::OffsetsTruncated { at_byte, .. }
            | FranzError::EndBeyondPayloads { at_byte, .. }
            | FranzError::EndDecreasing { at_byte, .. }
            | FranzError::IndexDecreasing { at_byte, .. } => at_byte,
            FranzError::TrailingPayloads { last_end, .. } => last_end,
        }
    }
}

impl fmt::Display for FranzError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: byte {}: ", self.file(), self.at_byte())?;
        match self {
            FranzError::IndicesTooLong { bytes } => {
                write!(
                    f,
                    "the file is {bytes} bytes; {INDICES_MAX} names of at most {TOPIC_NAME_BYTES_MAX} bytes fit in {INDICES_BYTES_MAX}"
                )
            }
            FranzError::IndexName { line, name, .. } => write!(
                f,
                "line {line}: index name {name:?} is not a valid Strom name (1 to {TOPIC_NAME_BYTES_MAX} bytes of A-Z a-z 0-9 . _ -, not . or ..)"
            ),
            FranzError::IndexDuplicate { line, name, .. } => write!(f, "line {line}: index {name:?} is named twice"),
            FranzError::TooManyIndices { count, .. } => write!(f, "{count} index names; a Strom topic has at most {INDICES_MAX}"),
            FranzError::OffsetsTruncated { offsets_bytes, entry_bytes, .. } => write!(
                f,
                "the file is {offsets_bytes} bytes, not a whole number of {entry_bytes}-byte entries: the last entry is cut short"
            ),
            FranzError::EndBeyondPayloads { item, end_byte, payloads_bytes, .. } => {
                write!(f, "item {item} ends at payload byte {end_byte}, beyond payloads' {payloads_bytes} bytes")
            }
            FranzError::EndDecreasing { item, end_byte, previous, .. } => {
                write!(f, "item {item} ends at payload byte {end_byte}, before the previous item's end {previous}")
            }
            FranzError::IndexDecreasing { item, index, value, previous, .. } => write!(
                f,
                "item {item}: index {index} value {value} is below the previous item's {previous} (Strom's index values never decrease within a partition)"
            ),
            FranzError::TrailingPayloads { payloads_bytes, last_end } => write!(
                f,
                "payloads is {payloads_bytes} bytes but the last item ends at {last_end}: {} bytes belong to no item",
                payloads_bytes - last_end
            ),
        }
    }
}

impl std::error::Error for FranzError {}

/// The `indices` file for `names`: each name followed by a newline.
pub fn encode_indices<N: AsRef<str>>(names: &[N]) -> Vec<u8> {
    let mut out = Vec::new();
    for n in names {
        out.extend_from_slice(n.as_ref().as_bytes());
        out.push(b'\n');
    }
    out
}

/// The index names of an `indices` file, checked by Strom's rules. A last
/// name without its newline is taken too (Franz's reader splits lines the
/// same way), so [`encode_indices`] of the result may be one byte longer.
pub fn decode_indices(bytes: &[u8]) -> Result<Vec<String>, FranzError> {
    if bytes.len() > INDICES_BYTES_MAX {
        return Err(FranzError::IndicesTooLong { bytes: bytes.len() as u64 });
    }
    let body = bytes.strip_suffix(b"\n").unwrap_or(bytes);
    if bytes.is_empty() {
        return Ok(Vec::new());
    }
    let mut names: Vec<String> = Vec::new();
    let mut at_byte = 0u64;
    for (i, line) in body.split(|&b| b == b'\n').enumerate() {
        if names.len() == INDICES_MAX {
            return Err(FranzError::TooManyIndices { count: body.split(|&b| b == b'\n').count(), at_byte });
        }
        // Not UTF-8 is not a valid name either: the lossy text says what is there.
        let name = String::from_utf8_lossy(line).into_owned();
        if std::str::from_utf8(line).is_err() || validate_topic_name(&name).is_err() {
            return Err(FranzError::IndexName { line: i + 1, at_byte, name });
        }
        if names.contains(&name) {
            return Err(FranzError::IndexDuplicate { line: i + 1, at_byte, name });
        }
        names.push(name);
        at_byte += line.len() as u64 + 1;
    }
    Ok(names)
}

/// Appends one `offsets` entry: the item's end in `payloads`, then its index values.
pub fn encode_entry(end_byte: u64, values: &[i64], out: &mut Vec<u8>) {
    out.extend_from_slice(&end_byte.to_le_bytes());
    for v in values {
        out.extend_from_slice(&v.to_le_bytes());
    }
}

/// One item as `offsets` describes it: its payload is
/// `payloads[start_byte..end_byte]`; `values` holds its index values in
/// the first `index_count` slots.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Item {
    pub start_byte: u64,
    pub end_byte: u64,
    pub values: [i64; INDICES_MAX],
}

impl Item {
    pub fn payload_bytes(&self) -> u64 {
        self.end_byte - self.start_byte
    }
}

/// Checks `offsets` one entry at a time, in order, against the length of
/// `payloads`, and yields each item. [`OffsetsCheck::finish`] after the
/// last entry checks that no payload bytes are left over.
#[derive(Debug, Clone)]
pub struct OffsetsCheck {
    names: Vec<String>,
    payloads_bytes: u64,
    item_count: u64,
    /// The item the next entry describes.
    next_item: u64,
    previous: Item,
    /// The largest payload seen and its item, so that a caller can hold
    /// every item against a limit it learns after the check.
    largest: Option<(u64, u64)>,
}

impl OffsetsCheck {
    /// A check of an `offsets` file of `offsets_bytes` for a stream with
    /// index `names` whose `payloads` is `payloads_bytes` long; refuses an
    /// `offsets` that does not hold whole entries.
    pub fn new(names: &[String], offsets_bytes: u64, payloads_bytes: u64) -> Result<OffsetsCheck, FranzError> {
        assert!(names.len() <= INDICES_MAX, "{} index names: decode_indices bounds them", names.len());
        let entry_bytes = entry_bytes(names.len()) as u64;
        let cut = offsets_bytes % entry_bytes;
        if cut != 0 {
            return Err(FranzError::OffsetsTruncated { offsets_bytes, entry_bytes, at_byte: offsets_bytes - cut });
        }
        Ok(OffsetsCheck {
            names: names.to_vec(),
            payloads_bytes,
            item_count: offsets_bytes / entry_bytes,
            next_item: 0,
            previous: Item { start_byte: 0, end_byte: 0, values: [i64::MIN; INDICES_MAX] },
            largest: None,
        })
    }

    /// Bytes of one entry: the end and one value per index.
    pub fn entry_bytes(&self) -> usize {
        entry_bytes(self.names.len())
    }

    /// Items the stream holds.
    pub fn item_count(&self) -> u64 {
        self.item_count
    }

    /// The largest payload checked so far, as (bytes, item).
    pub fn largest(&self) -> Option<(u64, u64)> {
        self.largest
    }

    /// Checks the next entry (exactly [`OffsetsCheck::entry_bytes`] long;
    /// a caller bug otherwise: panics) and returns its item.
    pub fn next(&mut self, entry: &[u8]) -> Result<Item, FranzError> {
        assert_eq!(entry.len(), self.entry_bytes(), "one whole entry");
        assert!(self.next_item < self.item_count, "more entries than the file holds");
        let item = self.next_item;
        let at_byte = item * self.entry_bytes() as u64;
        let mut words = entry.chunks_exact(INTEGER_BYTES).map(|w| <[u8; INTEGER_BYTES]>::try_from(w).expect("chunks of 8"));
        let end_byte = u64::from_le_bytes(words.next().expect("an entry holds its end"));
        let mut values = [0i64; INDICES_MAX];
        for (slot, w) in values.iter_mut().zip(words) {
            *slot = i64::from_le_bytes(w);
        }
        if end_byte > self.payloads_bytes {
            return Err(FranzError::EndBeyondPayloads { item, at_byte, end_byte, payloads_bytes: self.payloads_bytes });
        }
        if end_byte < self.previous.end_byte {
            return Err(FranzError::EndDecreasing { item, at_byte, end_byte, previous: self.previous.end_byte });
        }
        for (i, name) in self.names.iter().enumerate() {
            if values[i] < self.previous.values[i] {
                let (value, previous) = (values[i], self.previous.values[i]);
                let at_byte = at_byte + ((i + 1) * INTEGER_BYTES) as u64;
                return Err(FranzError::IndexDecreasing { item, at_byte, index: name.clone(), value, previous });
            }
        }
        let out = Item { start_byte: self.previous.end_byte, end_byte, values };
        if self.largest.is_none_or(|(bytes, _)| out.payload_bytes() > bytes) {
            self.largest = Some((out.payload_bytes(), item));
        }
        self.previous = out;
        self.next_item += 1;
        Ok(out)
    }

    /// After the last entry: refuses payload bytes that no item covers.
    pub fn finish(&self) -> Result<(), FranzError> {
        assert_eq!(self.next_item, self.item_count, "finish after every entry");
        let last_end = self.previous.end_byte;
        if self.payloads_bytes > last_end {
            return Err(FranzError::TrailingPayloads { payloads_bytes: self.payloads_bytes, last_end });
        }
        Ok(())
    }
}

fn entry_bytes(index_count: usize) -> usize {
    (index_count + 1) * INTEGER_BYTES
}

/// Items in memory: each one's index values and payload.
pub type Items<'a> = Vec<(Vec<i64>, &'a [u8])>;

/// A whole stream decoded from its three files in memory: the index names
/// and each item's values and payload. For tests and the fuzzer; the
/// import streams the files through [`OffsetsCheck`] instead.
pub fn decode<'a>(indices: &[u8], offsets: &[u8], payloads: &'a [u8]) -> Result<(Vec<String>, Items<'a>), FranzError> {
    let names = decode_indices(indices)?;
    let mut check = OffsetsCheck::new(&names, offsets.len() as u64, payloads.len() as u64)?;
    let mut items = Vec::new();
    for entry in offsets.chunks_exact(check.entry_bytes()) {
        let item = check.next(entry)?;
        // Checked against payloads' length above, so both ends are in bounds.
        let payload = &payloads[item.start_byte as usize..item.end_byte as usize];
        items.push((item.values[..names.len()].to_vec(), payload));
    }
    check.finish()?;
    Ok((names, items))
}

/// The three files of a stream, as (indices, offsets, payloads).
pub fn encode<N: AsRef<str>>(names: &[N], items: &[(Vec<i64>, &[u8])]) -> (Vec<u8>, Vec<u8>, Vec<u8>) {
    let mut offsets = Vec::with_capacity(items.len() * entry_bytes(names.len()));
    let mut payloads = Vec::new();
    for (values, payload) in items {
        payloads.extend_from_slice(payload);
        encode_entry(payloads.len() as u64, values, &mut offsets);
    }
    (encode_indices(names), offsets, payloads)
}

/// The fuzz check: arbitrary bytes split into the three files (two
/// little-endian u16 lengths, then indices, offsets, and payloads as the
/// rest). What decodes must encode back to the same offsets and payloads
/// and to indices that decode to the same names; nothing may panic.
pub fn fuzz_check(data: &[u8]) {
    let (indices, offsets, payloads) = fuzz_split(data);
    let Ok((names, items)) = decode(indices, offsets, payloads) else {
        return;
    };
    let (indices_again, offsets_again, payloads_again) = encode(&names, &items);
    assert_eq!(offsets_again, offsets, "offsets re-encode differently");
    assert_eq!(payloads_again, payloads, "payloads re-encode differently");
    assert!(indices_again.len() == indices.len() || indices_again.len() == indices.len() + 1, "indices re-encode differently");
    assert_eq!(decode_indices(&indices_again).as_ref(), Ok(&names), "indices do not decode back");
}

/// A fuzz input's three files: indices, offsets, payloads.
pub fn fuzz_split(data: &[u8]) -> (&[u8], &[u8], &[u8]) {
    let len = |d: &[u8], at: usize| d.get(at..at + 2).map_or(0, |b| u16::from_le_bytes([b[0], b[1]]) as usize);
    let (indices_bytes, offsets_bytes) = (len(data, 0), len(data, 2));
    let rest = data.get(4..).unwrap_or_default();
    let (indices, rest) = rest.split_at(indices_bytes.min(rest.len()));
    let (offsets, payloads) = rest.split_at(offsets_bytes.min(rest.len()));
    (indices, offsets, payloads)
}

/// A fuzz input holding the three files, for seeds.
pub fn fuzz_join(indices: &[u8], offsets: &[u8], payloads: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    out.extend_from_slice(&(indices.len() as u16).to_le_bytes());
    out.extend_from_slice(&(offsets.len() as u16).to_le_bytes());
    for part in [indices, offsets, payloads] {
        out.extend_from_slice(part);
    }
    out
}

/// Seed inputs for the fuzzer: `valid-*` decode, the others are each one lie.
pub fn fuzz_seeds() -> Vec<(&'static str, Vec<u8>)> {
    let names = ["ts", "seq"];
    let items: Vec<(Vec<i64>, &[u8])> = vec![(vec![-5, 1], b"abc"), (vec![-5, 2], b""), (vec![7, 3], b"de")];
    let (indices, offsets, payloads) = encode(&names, &items);
    let mut cut = offsets.clone();
    cut.pop();
    let mut beyond = offsets.clone();
    beyond[48..56].copy_from_slice(&99u64.to_le_bytes());
    let mut back = offsets.clone();
    back[24..32].copy_from_slice(&1u64.to_le_bytes());
    let mut lower = offsets.clone();
    lower[56..64].copy_from_slice(&(-6i64).to_le_bytes());
    let mut longer = payloads.clone();
    longer.push(b'x');
    vec![
        ("valid-empty", fuzz_join(b"", b"", b"")),
        ("valid-two-indices", fuzz_join(&indices, &offsets, &payloads)),
        ("valid-last-name-without-newline", fuzz_join(b"ts\nseq", &offsets, &payloads)),
        ("valid-no-indices", fuzz_join(b"", &[3, 0, 0, 0, 0, 0, 0, 0], b"abc")),
        ("truncated-offsets", fuzz_join(&indices, &cut, &payloads)),
        ("end-beyond-payloads", fuzz_join(&indices, &beyond, &payloads)),
        ("decreasing-end", fuzz_join(&indices, &back, &payloads)),
        ("decreasing-index", fuzz_join(&indices, &lower, &payloads)),
        ("trailing-payloads", fuzz_join(&indices, &offsets, &longer)),
        ("empty-name", fuzz_join(b"\n", b"", b"")),
        ("duplicate-name", fuzz_join(b"a\na\n", b"", b"")),
    ]
}

#[cfg(test)]
mod tests;
