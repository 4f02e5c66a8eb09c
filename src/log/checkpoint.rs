//! A log's checkpoint: each partition's state, sparse index and spans up
//! to a position where everything below is durable, so restart scans only
//! the tail after it. Written atomically (temp file, fsync, rename, dir fsync).
//!
//! ```text
//!  0   8  magic "STRMCKP" then the version digit: "STRMCKP2" (read: 1, 2)
//!  8   4  crc32c of bytes 12..end
//! 12   4  log id            16  4  epoch when written
//! 20   8  covered_pos       28  8  log_start
//! 36   4  partition count, then per partition:
//!         pid u32 | next_offset u64 | start_offset u64 | max_ts_ms i64 | entry count u32
//!         entries: offset u64 | pos u64 | max_ts_ms i64   (24 bytes each)
//!         version 2 only: span count u32, then
//!         spans: first_pos u64 | bytes u64 | max_ts_ms i64  (24 bytes each)
//!         version 3 only: named index count k u8 (0: none), then if k > 0:
//!         has_last u8 (0 or 1) | last values k x i64 if has_last |
//!         stride_bytes u64 | entry count u32 |
//!         entries: offset u64 | k x value i64     (8 + 8k bytes each)
//!         version 4 only: producer count u32, then per producer:
//!         producer_id i64 | epoch i16 | batch count u8 (1 to 5) |
//!         batches: first_seq i32 | last_seq i32 | base_offset u64 | end_offset u64
//!                  (24 bytes each, oldest first)
//! ```
//! Little-endian. Decoding is pure and bounds every count by the bytes left.
//!
//! Version 2 added the spans (a partition's frame bytes and running max
//! timestamp per segment, see [`crate::partition::retention`]): without
//! them a restart counted the data before the checkpoint as 0 bytes. A
//! version 1 file still reads (its spans are then derived from the index,
//! without bytes). Version 3 added each partition's named index
//! ([`crate::partition::named`]); it is written only when a partition of
//! the log has one, so a directory without named indices stays readable by
//! the binaries before them. Version 4 added each partition's idempotent
//! producers ([`crate::partition::producers`]: their last batches below
//! `covered_pos`, least recently used first); it is likewise written only
//! when a partition of the log has one. A version newer than [`VERSION`] is refused by name, so
//! this binary never takes a later layout for damage, nor misreads it.
use crate::partition::named::NamedCheckpoint;
use crate::partition::producers::{BATCHES_KEPT, KeptBatch, PRODUCERS_MAX, ProducerState};
use crate::partition::{IndexEntry, Pid, Span};
use crate::wire::batch::values::INDICES_MAX;

pub const FILE_NAME: &str = "checkpoint";
/// The version this binary writes; it reads this one and every older one.
pub const VERSION: u8 = 4;
/// The magic without its last byte, the version as an ASCII digit.
const MAGIC_PREFIX: &[u8; 7] = b"STRMCKP";
const FIXED_BYTES: usize = 40;
/// A partition's fixed part in version 1; version 2 adds its span count.
const PARTITION_V1_BYTES: usize = 32;
const SPAN_COUNT_BYTES: usize = 4;
const ENTRY_BYTES: usize = 24;
const SPAN_BYTES: usize = 24;
/// A producer's fixed part (id, epoch, batch count) and each kept batch.
const PRODUCER_BYTES: usize = 11;
const KEPT_BATCH_BYTES: usize = 24;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionCheckpoint {
    pub pid: Pid,
    pub next_offset: u64,
    pub start_offset: u64,
    pub max_ts_ms: i64,
    pub entries: Vec<IndexEntry>,
    /// The partition's spans below `covered_pos`, oldest first; always
    /// empty in version 1, which did not store them.
    pub spans: Vec<Span>,
    /// The named index (version 3; None before it, and for a partition
    /// without one).
    pub named: Option<(u8, NamedCheckpoint)>,
    /// The idempotent producers (version 4; empty before it).
    pub producers: Vec<ProducerState>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checkpoint {
    /// The format version: [`VERSION`] when written by this binary, 1 when
    /// read from a file that predates spans.
    pub version: u8,
    pub log: u32,
    pub epoch: u32,
    /// Everything below is durable and described by this checkpoint.
    pub covered_pos: u64,
    pub log_start: u64,
    pub partitions: Vec<PartitionCheckpoint>,
}

impl Checkpoint {
    /// Whether the file stored spans (version 2 on); without them a
    /// partition's spans are derived from its index entries, bytes unknown.
    pub fn has_spans(&self) -> bool {
        self.version >= 2
    }
}

fn partition_bytes(version: u8) -> usize {
    match version {
        1 => PARTITION_V1_BYTES,
        2 => PARTITION_V1_BYTES + SPAN_COUNT_BYTES,
        // The named index count byte.
        3 => PARTITION_V1_BYTES + SPAN_COUNT_BYTES + 1,
        // And the producer count.
        _ => PARTITION_V1_BYTES + SPAN_COUNT_BYTES + 1 + 4,
    }
}

/// Encodes `c` in its own version's layout (`c.version`, 1 or 2).
pub fn encode(c: &Checkpoint) -> Vec<u8> {
    assert!((1..=VERSION).contains(&c.version), "checkpoint version {} cannot be written", c.version);
    let items: usize = c.partitions.iter().map(|p| p.entries.len() + p.spans.len()).sum();
    let mut out = Vec::with_capacity(FIXED_BYTES + c.partitions.len() * partition_bytes(c.version) + items * ENTRY_BYTES);
    out.extend_from_slice(MAGIC_PREFIX);
    out.push(b'0' + c.version);
    out.extend_from_slice(&[0; 4]);
    out.extend_from_slice(&c.log.to_le_bytes());
    out.extend_from_slice(&c.epoch.to_le_bytes());
    out.extend_from_slice(&c.covered_pos.to_le_bytes());
    out.extend_from_slice(&c.log_start.to_le_bytes());
    out.extend_from_slice(&(c.partitions.len() as u32).to_le_bytes());
    for p in &c.partitions {
        out.extend_from_slice(&p.pid.to_le_bytes());
        out.extend_from_slice(&p.next_offset.to_le_bytes());
        out.extend_from_slice(&p.start_offset.to_le_bytes());
        out.extend_from_slice(&p.max_ts_ms.to_le_bytes());
        out.extend_from_slice(&(p.entries.len() as u32).to_le_bytes());
        for e in &p.entries {
            out.extend_from_slice(&e.offset.to_le_bytes());
            out.extend_from_slice(&e.pos.to_le_bytes());
            out.extend_from_slice(&e.max_ts_ms.to_le_bytes());
        }
        if c.has_spans() {
            out.extend_from_slice(&(p.spans.len() as u32).to_le_bytes());
            for s in &p.spans {
                out.extend_from_slice(&s.first_pos.to_le_bytes());
                out.extend_from_slice(&s.bytes.to_le_bytes());
                out.extend_from_slice(&s.max_ts_ms.to_le_bytes());
            }
        } else {
            debug_assert!(p.spans.is_empty(), "version 1 has no spans");
        }
        if c.version >= 3 {
            encode_named(&mut out, p.named.as_ref());
        } else {
            debug_assert!(p.named.is_none(), "versions 1 and 2 have no named index");
        }
        if c.version >= 4 {
            encode_producers(&mut out, &p.producers);
        } else {
            debug_assert!(p.producers.is_empty(), "versions 1 to 3 have no producers");
        }
    }
    let crc = crc32c::crc32c(&out[12..]);
    out[8..12].copy_from_slice(&crc.to_le_bytes());
    out
}

fn encode_named(out: &mut Vec<u8>, named: Option<&(u8, NamedCheckpoint)>) {
    let Some((k, n)) = named.filter(|(k, _)| *k > 0) else {
        out.push(0);
        return;
    };
    out.push(*k);
    match &n.last {
        Some(last) => {
            out.push(1);
            last.iter().for_each(|v| out.extend_from_slice(&v.to_le_bytes()));
        }
        None => out.push(0),
    }
    out.extend_from_slice(&n.stride_bytes.to_le_bytes());
    out.extend_from_slice(&(n.offsets.len() as u32).to_le_bytes());
    for (i, o) in n.offsets.iter().enumerate() {
        out.extend_from_slice(&o.to_le_bytes());
        n.values[i * *k as usize..(i + 1) * *k as usize].iter().for_each(|v| out.extend_from_slice(&v.to_le_bytes()));
    }
}

fn encode_producers(out: &mut Vec<u8>, producers: &[ProducerState]) {
    out.extend_from_slice(&(producers.len() as u32).to_le_bytes());
    for s in producers {
        out.extend_from_slice(&s.producer_id.to_le_bytes());
        out.extend_from_slice(&s.epoch.to_le_bytes());
        out.push(s.batches.len() as u8);
        for k in &s.batches {
            out.extend_from_slice(&k.first_seq.to_le_bytes());
            out.extend_from_slice(&k.last_seq.to_le_bytes());
            out.extend_from_slice(&k.base_offset.to_le_bytes());
            out.extend_from_slice(&k.end_offset.to_le_bytes());
        }
    }
}

fn decode_producers(r: &mut Reader<'_>, pid: Pid, next_offset: u64) -> Result<Vec<ProducerState>, String> {
    let n = r.count(PRODUCER_BYTES + KEPT_BATCH_BYTES)?;
    if n > PRODUCERS_MAX {
        return Err(format!("checkpoint of partition {pid} declares {n} producers, over {PRODUCERS_MAX}"));
    }
    let mut producers = Vec::with_capacity(n);
    let mut ids = std::collections::HashSet::with_capacity(n);
    for _ in 0..n {
        let producer_id = r.i64()?;
        let epoch = i16::from_le_bytes(r.take::<2>()?);
        let m = r.take::<1>()?[0] as usize;
        if !(1..=BATCHES_KEPT).contains(&m) || producer_id < 0 || !ids.insert(producer_id) {
            return Err(format!("checkpoint producer {producer_id} of partition {pid} is inconsistent"));
        }
        let mut batches = std::collections::VecDeque::with_capacity(m);
        for _ in 0..m {
            let first_seq = i32::from_le_bytes(r.take::<4>()?);
            let last_seq = i32::from_le_bytes(r.take::<4>()?);
            batches.push_back(KeptBatch { first_seq, last_seq, base_offset: r.u64()?, end_offset: r.u64()? });
        }
        let each_sound =
            batches.iter().all(|k| k.first_seq >= 0 && k.last_seq >= 0 && k.base_offset < k.end_offset && k.end_offset <= next_offset);
        let in_order = batches.iter().zip(batches.iter().skip(1)).all(|(a, b)| a.end_offset <= b.base_offset);
        if !each_sound || !in_order {
            return Err(format!("checkpoint producer {producer_id} of partition {pid} is inconsistent"));
        }
        producers.push(ProducerState { producer_id, epoch, batches });
    }
    Ok(producers)
}

fn decode_named(r: &mut Reader<'_>, pid: Pid, next_offset: u64) -> Result<Option<(u8, NamedCheckpoint)>, String> {
    let k = r.take::<1>()?[0];
    if k == 0 {
        return Ok(None);
    }
    if k as usize > INDICES_MAX {
        return Err(format!("checkpoint of partition {pid} declares {k} named indices"));
    }
    let last = match r.take::<1>()?[0] {
        0 => None,
        1 => Some((0..k).map(|_| r.i64()).collect::<Result<Vec<_>, _>>()?),
        b => return Err(format!("checkpoint of partition {pid}: has_last {b}")),
    };
    let stride_bytes = r.u64()?;
    let m = r.count(8 + 8 * k as usize)?;
    let (mut offsets, mut values) = (Vec::with_capacity(m), Vec::with_capacity(m * k as usize));
    for _ in 0..m {
        offsets.push(r.u64()?);
        for _ in 0..k {
            values.push(r.i64()?);
        }
    }
    let kk = k as usize;
    let values_in_order = (1..m).all(|e| (0..kk).all(|i| values[(e - 1) * kk + i] <= values[e * kk + i]));
    if !offsets.windows(2).all(|w| w[0] < w[1]) || offsets.last().is_some_and(|&o| o >= next_offset) || !values_in_order {
        return Err(format!("checkpoint named index of partition {pid} is inconsistent"));
    }
    Ok(Some((k, NamedCheckpoint { last, stride_bytes, offsets, values })))
}

/// The version a checkpoint file declares, if it starts like one (any
/// digit, so a newer file is told from a foreign or damaged one).
pub fn version_of(bytes: &[u8]) -> Option<u8> {
    match bytes.get(..8)? {
        [head @ .., v] if head == MAGIC_PREFIX && v.is_ascii_digit() => Some(v - b'0'),
        _ => None,
    }
}

/// A little-endian reader that never reads past its input.
struct Reader<'a> {
    b: &'a [u8],
}

impl Reader<'_> {
    fn take<const N: usize>(&mut self) -> Result<[u8; N], String> {
        if self.b.len() < N {
            return Err("checkpoint truncated".into());
        }
        let (head, rest) = self.b.split_at(N);
        self.b = rest;
        Ok(head.try_into().expect("N bytes"))
    }
    fn u32(&mut self) -> Result<u32, String> {
        self.take::<4>().map(u32::from_le_bytes)
    }
    fn u64(&mut self) -> Result<u64, String> {
        self.take::<8>().map(u64::from_le_bytes)
    }
    fn i64(&mut self) -> Result<i64, String> {
        self.take::<8>().map(i64::from_le_bytes)
    }
    /// A count of items of `item_bytes` each, refused if the rest cannot hold them.
    fn count(&mut self, item_bytes: usize) -> Result<usize, String> {
        let n = self.u32()? as usize;
        if n.saturating_mul(item_bytes) > self.b.len() {
            return Err(format!("checkpoint declares {n} items but holds {} bytes", self.b.len()));
        }
        Ok(n)
    }
}

pub fn decode(bytes: &[u8]) -> Result<Checkpoint, String> {
    let version = match version_of(bytes) {
        Some(v @ 1..=VERSION) => v,
        Some(v) if v > VERSION => {
            return Err(format!("checkpoint format version {v} is newer than this binary reads (1 to {VERSION})"));
        }
        _ => return Err("not a Strom checkpoint".into()),
    };
    if bytes.len() < FIXED_BYTES {
        return Err("not a Strom checkpoint".into());
    }
    let stored = u32::from_le_bytes(bytes[8..12].try_into().expect("4"));
    let computed = crc32c::crc32c(&bytes[12..]);
    if stored != computed {
        return Err(format!("checkpoint crc {stored:#x} != {computed:#x}"));
    }
    let mut r = Reader { b: &bytes[12..] };
    let log = r.u32()?;
    let epoch = r.u32()?;
    let covered_pos = r.u64()?;
    let log_start = r.u64()?;
    let n = r.count(partition_bytes(version))?;
    let mut partitions = Vec::with_capacity(n);
    for _ in 0..n {
        partitions.push(decode_partition(&mut r, version, covered_pos)?);
    }
    if !r.b.is_empty() || log_start > covered_pos {
        return Err("checkpoint has trailing bytes or an impossible log start".into());
    }
    Ok(Checkpoint { version, log, epoch, covered_pos, log_start, partitions })
}

fn decode_partition(r: &mut Reader<'_>, version: u8, covered_pos: u64) -> Result<PartitionCheckpoint, String> {
    let pid = r.u32()?;
    let next_offset = r.u64()?;
    let start_offset = r.u64()?;
    let max_ts_ms = r.i64()?;
    let m = r.count(ENTRY_BYTES)?;
    let mut entries = Vec::with_capacity(m);
    for _ in 0..m {
        entries.push(IndexEntry { offset: r.u64()?, pos: r.u64()?, max_ts_ms: r.i64()? });
    }
    let ordered = entries.windows(2).all(|w| w[0].offset < w[1].offset && w[0].pos < w[1].pos && w[0].max_ts_ms <= w[1].max_ts_ms);
    if !ordered || start_offset > next_offset || entries.last().is_some_and(|e| e.pos >= covered_pos || e.offset >= next_offset) {
        return Err(format!("checkpoint state of partition {pid} is inconsistent"));
    }
    let mut spans = Vec::new();
    if version >= 2 {
        let k = r.count(SPAN_BYTES)?;
        spans.reserve_exact(k);
        for _ in 0..k {
            spans.push(Span { first_pos: r.u64()?, bytes: r.u64()?, max_ts_ms: r.i64()? });
        }
    }
    // A span's frames lie between its first position and the next span's
    // (spans start in different segments), the last one's below covered_pos.
    let ends_in_order = spans.iter().enumerate().all(|(i, s)| {
        let limit = spans.get(i + 1).map_or(covered_pos, |n| n.first_pos);
        s.first_pos < limit && s.bytes <= limit - s.first_pos
    });
    let ts_in_order = spans.windows(2).all(|w| w[0].max_ts_ms <= w[1].max_ts_ms);
    if !ends_in_order || !ts_in_order {
        return Err(format!("checkpoint spans of partition {pid} overlap, run backwards or pass the covered position"));
    }
    let named = if version >= 3 { decode_named(r, pid, next_offset)? } else { None };
    let producers = if version >= 4 { decode_producers(r, pid, next_offset)? } else { Vec::new() };
    Ok(PartitionCheckpoint { pid, next_offset, start_offset, max_ts_ms, entries, spans, named, producers })
}

/// Checks this module's promises on arbitrary bytes and panics if one is
/// broken. The fuzz target and `tests/fuzz_replay.rs` both call it, so a
/// saved input replays under `cargo test` exactly as it was fuzzed.
#[doc(hidden)]
pub fn fuzz_check(data: &[u8]) {
    fuzz_check_one(data);
    // Mutated bytes almost never carry a matching CRC, so a resealed copy is
    // checked too: it lets the fuzzer reach the checks behind the CRC.
    if data.len() >= 12 {
        let mut sealed = data.to_vec();
        let crc = crc32c::crc32c(&sealed[12..]);
        sealed[8..12].copy_from_slice(&crc.to_le_bytes());
        if sealed != data {
            fuzz_check_one(&sealed);
        }
    }
}

fn fuzz_check_one(data: &[u8]) {
    let Ok(c) = decode(data) else {
        return;
    };
    // Every item decoded was present in the input, and nothing else was.
    let entries: usize = c.partitions.iter().map(|p| p.entries.len()).sum();
    let spans: usize = c.partitions.iter().map(|p| p.spans.len()).sum();
    let named: usize = c
        .partitions
        .iter()
        .filter_map(|p| p.named.as_ref())
        .map(|(k, n)| 1 + n.last.as_ref().map_or(0, |l| 8 * l.len()) + 12 + n.offsets.len() * (8 + 8 * *k as usize))
        .sum();
    let producers: usize =
        c.partitions.iter().flat_map(|p| &p.producers).map(|s| PRODUCER_BYTES + s.batches.len() * KEPT_BATCH_BYTES).sum();
    let fixed = FIXED_BYTES + c.partitions.len() * partition_bytes(c.version);
    assert_eq!(fixed + entries * ENTRY_BYTES + spans * SPAN_BYTES + named + producers, data.len());
    assert!(c.has_spans() || spans == 0, "a version 1 checkpoint has no spans");
    let encoded = encode(&c);
    assert_eq!(decode(&encoded).as_ref(), Ok(&c));
    // The format has one encoding per value, so a checkpoint re-encodes to its own bytes.
    assert_eq!(encoded, data);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kept(first_seq: i32, last_seq: i32, base_offset: u64, end_offset: u64) -> KeptBatch {
        KeptBatch { first_seq, last_seq, base_offset, end_offset }
    }

    fn sample() -> Checkpoint {
        Checkpoint {
            version: VERSION,
            log: 3,
            epoch: 9,
            covered_pos: 1 << 20,
            log_start: 4096,
            partitions: vec![PartitionCheckpoint {
                pid: 7,
                next_offset: 100,
                start_offset: 10,
                max_ts_ms: 5,
                entries: vec![IndexEntry { offset: 10, pos: 4096, max_ts_ms: 1 }, IndexEntry { offset: 50, pos: 65536, max_ts_ms: 5 }],
                spans: vec![Span { first_pos: 4096, bytes: 60_000, max_ts_ms: 1 }, Span { first_pos: 65536, bytes: 900_000, max_ts_ms: 5 }],
                named: Some((
                    2,
                    NamedCheckpoint { last: Some(vec![9, -1]), stride_bytes: 1 << 18, offsets: vec![10, 60], values: vec![1, -5, 3, -5] },
                )),
                producers: vec![
                    ProducerState { producer_id: 5, epoch: 2, batches: [kept(0, 1, 10, 12)].into() },
                    ProducerState { producer_id: 1, epoch: 0, batches: [kept(7, 7, 20, 21), kept(8, 9, 30, 32)].into() },
                ],
            }],
        }
    }

    // Proves a checkpoint round-trips and that any corruption or truncation is refused.
    #[test]
    fn round_trip_and_damage() {
        let c = sample();
        let bytes = encode(&c);
        assert_eq!(&bytes[..8], b"STRMCKP4");
        assert_eq!(decode(&bytes).unwrap(), c);
        for n in 0..bytes.len() {
            assert!(decode(&bytes[..n]).is_err(), "prefix {n} accepted");
        }
        for i in 0..bytes.len() {
            let mut b = bytes.clone();
            b[i] ^= 0x10;
            assert!(decode(&b).is_err(), "flip at {i} accepted");
        }
    }

    // Proves a version 1 file (no spans) still reads, with its index, and
    // re-encodes to the same bytes in its own version.
    #[test]
    fn version_1_still_reads() {
        let mut c = sample();
        c.version = 1;
        c.partitions[0].spans.clear();
        c.partitions[0].named = None;
        c.partitions[0].producers.clear();
        let bytes = encode(&c);
        assert_eq!(&bytes[..8], b"STRMCKP1");
        assert_eq!(bytes.len(), FIXED_BYTES + PARTITION_V1_BYTES + 2 * ENTRY_BYTES, "the version 1 layout, byte for byte");
        let read = decode(&bytes).unwrap();
        assert!(!read.has_spans());
        assert_eq!(read, c);
    }

    // Proves a newer version is refused by its number, not read as damage
    // or as this version's layout, and that a foreign file is not one.
    #[test]
    fn newer_version_refused_by_name() {
        let mut bytes = encode(&sample());
        bytes[7] = b'5';
        assert_eq!(version_of(&bytes), Some(5));
        assert_eq!(decode(&bytes).unwrap_err(), "checkpoint format version 5 is newer than this binary reads (1 to 4)");
        assert_eq!(version_of(b"STRMCKPX"), None);
        assert_eq!(decode(b"NOTACKPT").unwrap_err(), "not a Strom checkpoint");
    }

    // Proves spans that overlap, run past the covered position or have a
    // decreasing timestamp are refused even with a valid checksum.
    #[test]
    fn inconsistent_spans_refused() {
        let bad = |edit: &dyn Fn(&mut Vec<Span>)| {
            let mut c = sample();
            edit(&mut c.partitions[0].spans);
            decode(&encode(&c)).unwrap_err()
        };
        assert!(bad(&|s| s[0].bytes = 65536 - 4096 + 1).contains("overlap"));
        assert!(bad(&|s| s[1].first_pos = 1 << 20).contains("overlap"));
        assert!(bad(&|s| s[1].bytes = (1 << 20) - 65536 + 1).contains("overlap"));
        assert!(bad(&|s| s.swap(0, 1)).contains("overlap"));
        assert!(bad(&|s| s[0].max_ts_ms = 6).contains("overlap"));
    }

    // Proves a version 2 file (no named index) still reads and re-encodes
    // to its own bytes, and a named index whose entries or values run
    // backwards, or reach the partition's end, is refused.
    #[test]
    fn named_index_versions_and_checks() {
        let mut c = sample();
        c.version = 2;
        c.partitions[0].named = None;
        c.partitions[0].producers.clear();
        let bytes = encode(&c);
        assert_eq!(&bytes[..8], b"STRMCKP2");
        assert_eq!(decode(&bytes).unwrap(), c);
        let bad = |edit: &dyn Fn(&mut NamedCheckpoint)| {
            let mut c = sample();
            edit(&mut c.partitions[0].named.as_mut().unwrap().1);
            decode(&encode(&c)).unwrap_err()
        };
        assert!(bad(&|n| n.offsets.swap(0, 1)).contains("inconsistent"));
        assert!(bad(&|n| n.values[2] = 0).contains("inconsistent"));
        assert!(bad(&|n| n.offsets[1] = 100).contains("inconsistent"));
    }

    // Proves a version 3 file (no producers) still reads and re-encodes to
    // its own bytes, and producers whose batches run backwards, pass the
    // partition's end, number more than 5, or repeat an id are refused.
    #[test]
    fn producers_versions_and_checks() {
        let mut c = sample();
        c.version = 3;
        c.partitions[0].producers.clear();
        let bytes = encode(&c);
        assert_eq!(&bytes[..8], b"STRMCKP3");
        assert_eq!(decode(&bytes).unwrap(), c);
        let bad = |edit: &dyn Fn(&mut Vec<ProducerState>)| {
            let mut c = sample();
            edit(&mut c.partitions[0].producers);
            decode(&encode(&c)).unwrap_err()
        };
        assert!(bad(&|p| p[1].batches.swap(0, 1)).contains("inconsistent"));
        assert!(bad(&|p| p[1].batches[1].end_offset = 101).contains("inconsistent"));
        assert!(bad(&|p| p[0].batches[0].end_offset = 10).contains("inconsistent"));
        assert!(bad(&|p| p[0].batches = (0..6).map(|i| kept(i, i, i as u64, i as u64 + 1)).collect()).contains("inconsistent"));
        assert!(bad(&|p| p[0].producer_id = 1).contains("inconsistent"));
        assert!(bad(&|p| p[0].producer_id = -1).contains("inconsistent"));
    }
}
