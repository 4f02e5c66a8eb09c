//! A log's checkpoint: each partition's state and sparse index up to a
//! position where everything below is durable, so restart scans only the
//! tail after it. Written atomically (temp file, fsync, rename, dir fsync).
//!
//! ```text
//!  0   8  magic "STRMCKP1"
//!  8   4  crc32c of bytes 12..end
//! 12   4  log id            16  4  epoch when written
//! 20   8  covered_pos       28  8  log_start
//! 36   4  partition count, then per partition:
//!         pid u32 | next_offset u64 | start_offset u64 | max_ts_ms i64 | entry count u32
//!         entries: offset u64 | pos u64 | max_ts_ms i64   (24 bytes each)
//! ```
//! Little-endian. Decoding is pure and bounds every count by the bytes left.
use crate::partition::{IndexEntry, Pid};

pub const FILE_NAME: &str = "checkpoint";
const MAGIC: &[u8; 8] = b"STRMCKP1";
const FIXED_BYTES: usize = 40;
const PARTITION_BYTES: usize = 32;
const ENTRY_BYTES: usize = 24;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionCheckpoint {
    pub pid: Pid,
    pub next_offset: u64,
    pub start_offset: u64,
    pub max_ts_ms: i64,
    pub entries: Vec<IndexEntry>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checkpoint {
    pub log: u32,
    pub epoch: u32,
    /// Everything below is durable and described by this checkpoint.
    pub covered_pos: u64,
    pub log_start: u64,
    pub partitions: Vec<PartitionCheckpoint>,
}

pub fn encode(c: &Checkpoint) -> Vec<u8> {
    let entries: usize = c.partitions.iter().map(|p| p.entries.len()).sum();
    let mut out = Vec::with_capacity(FIXED_BYTES + c.partitions.len() * PARTITION_BYTES + entries * ENTRY_BYTES);
    out.extend_from_slice(MAGIC);
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
    }
    let crc = crc32c::crc32c(&out[12..]);
    out[8..12].copy_from_slice(&crc.to_le_bytes());
    out
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
    if bytes.len() < FIXED_BYTES || &bytes[..8] != MAGIC {
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
    let n = r.count(PARTITION_BYTES)?;
    let mut partitions = Vec::with_capacity(n);
    for _ in 0..n {
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
        partitions.push(PartitionCheckpoint { pid, next_offset, start_offset, max_ts_ms, entries });
    }
    if !r.b.is_empty() || log_start > covered_pos {
        return Err("checkpoint has trailing bytes or an impossible log start".into());
    }
    Ok(Checkpoint { log, epoch, covered_pos, log_start, partitions })
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
    assert_eq!(FIXED_BYTES + c.partitions.len() * PARTITION_BYTES + entries * ENTRY_BYTES, data.len());
    let encoded = encode(&c);
    assert_eq!(decode(&encoded).as_ref(), Ok(&c));
    // The format has one encoding per value, so a checkpoint re-encodes to its own bytes.
    assert_eq!(encoded, data);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Checkpoint {
        Checkpoint {
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
            }],
        }
    }

    // Proves a checkpoint round-trips and that any corruption or truncation is refused.
    #[test]
    fn round_trip_and_damage() {
        let c = sample();
        let bytes = encode(&c);
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
}
