//! The records loadgen writes, and the batches that carry them.
//!
//! Every value starts with a 28-byte header that names its run, producer
//! and sequence number, carries the (intended) send time for end-to-end
//! latency, and a CRC-32C of the rest of the value, so a consumer can check
//! each record alone:
//!
//! ```text
//! 0      4          8        16       24         28
//! run_id producer   seq      send_ns  checksum   filler (msg_size - 28 bytes)
//! u32 BE u32 BE     u64 BE   u64 BE   u32 BE     fixed per producer
//! ```
//!
//! `checksum` is CRC-32C over bytes 0..24 followed by the filler. A batch
//! is built once per in-flight slot and stamped before each send: sequence,
//! send time and checksum of every record, then the batch CRC; the filler
//! never changes, so the producer folds its CRC in (see [`Shift`]) instead
//! of reading it again (the consumer reads every byte).
use strom::wire::batch::{self, BatchBuilder};

pub const VALUE_HEADER_BYTES: usize = 28;
const CHECKSUM_AT: usize = 24;

/// The batch header fields loadgen stamps (Kafka RecordBatch v2 layout).
const BASE_TIMESTAMP_AT: usize = 27;
const MAX_TIMESTAMP_AT: usize = 35;
const BASE_SEQUENCE_AT: usize = 53;

/// Records per batch, so that a batch of `msg_size` records stays near
/// `batch_bytes` (the record framing is about 8 bytes for small values).
pub fn records_per_batch(batch_bytes: usize, msg_size: usize) -> usize {
    (batch_bytes.saturating_sub(batch::BATCH_HEADER_BYTES) / (msg_size + 8)).max(1)
}

fn filler(producer: u32, len: usize) -> Vec<u8> {
    (0..len).map(|i| (producer as usize).wrapping_mul(31).wrapping_add(i.wrapping_mul(7)) as u8).collect()
}

/// CRC-32C of `A || B` from CRC(A), CRC(B) and len(B): `shift(CRC(A)) ^
/// CRC(B)`, where `shift` (multiplying by x^(8 len(B)) modulo the
/// polynomial) is linear over GF(2), so for one fixed length it is four
/// 256-entry tables, one per byte of its input. `crc32c_combine` computes
/// the same thing by repeated squaring, about a hundred times slower: too
/// slow for millions of records a second.
#[derive(Debug, Clone)]
struct Shift {
    tables: Box<[[u32; 256]; 4]>,
}

impl Shift {
    fn new(len: usize) -> Shift {
        let mut tables = Box::new([[0u32; 256]; 4]);
        for (k, table) in tables.iter_mut().enumerate() {
            for (b, entry) in table.iter_mut().enumerate() {
                // combine(c, 0, len) is shift(c) alone.
                *entry = crc32c::crc32c_combine((b as u32) << (8 * k), 0, len);
            }
        }
        Shift { tables }
    }

    fn apply(&self, crc: u32) -> u32 {
        let t = &self.tables;
        t[0][(crc & 0xff) as usize] ^ t[1][(crc >> 8 & 0xff) as usize] ^ t[2][(crc >> 16 & 0xff) as usize] ^ t[3][(crc >> 24) as usize]
    }
}

/// A batch of `records` records for one producer, built once; [`stamp`]
/// makes each send of it distinct.
///
/// [`stamp`]: BatchTemplate::stamp
#[derive(Debug, Clone)]
pub struct BatchTemplate {
    pub bytes: Vec<u8>,
    /// Byte position of each record's value within the batch.
    value_at: Vec<u32>,
    filler_crc: u32,
    shift: Shift,
}

impl BatchTemplate {
    pub fn new(run_id: u32, producer: u32, records: usize, msg_size: usize) -> BatchTemplate {
        assert!(msg_size >= VALUE_HEADER_BYTES, "msg_size is checked against VALUE_HEADER_BYTES by the caller");
        let fill = filler(producer, msg_size - VALUE_HEADER_BYTES);
        let mut value = vec![0u8; msg_size];
        value[0..4].copy_from_slice(&run_id.to_be_bytes());
        value[4..8].copy_from_slice(&producer.to_be_bytes());
        value[VALUE_HEADER_BYTES..].copy_from_slice(&fill);
        let mut b = BatchBuilder::new(0).producer(i64::from(producer), 0, 0);
        for _ in 0..records {
            b.push(0, None, Some(&value), &[]);
        }
        let bytes = b.finish();
        let base = bytes.as_ptr() as usize;
        let value_at = batch::records(&bytes)
            .map(|r| {
                let v = r.expect("a batch we just built decodes").value.expect("every record has a value");
                (v.as_ptr() as usize - base) as u32
            })
            .collect();
        BatchTemplate { bytes, value_at, filler_crc: crc32c::crc32c(&fill), shift: Shift::new(fill.len()) }
    }

    pub fn records(&self) -> usize {
        self.value_at.len()
    }

    /// Stamps `out` (a copy of [`Self::bytes`]) as records `first_seq..` sent
    /// at `send_ns` (monotonic, see [`crate::clock`]) and wall time
    /// `timestamp_ms`, and recomputes every checksum.
    pub fn stamp(&self, out: &mut [u8], first_seq: u64, send_ns: u64, timestamp_ms: i64) {
        debug_assert_eq!(out.len(), self.bytes.len());
        out[BASE_TIMESTAMP_AT..BASE_TIMESTAMP_AT + 8].copy_from_slice(&timestamp_ms.to_be_bytes());
        out[MAX_TIMESTAMP_AT..MAX_TIMESTAMP_AT + 8].copy_from_slice(&timestamp_ms.to_be_bytes());
        out[BASE_SEQUENCE_AT..BASE_SEQUENCE_AT + 4].copy_from_slice(&(first_seq as u32).to_be_bytes());
        for (i, &at) in self.value_at.iter().enumerate() {
            let v = &mut out[at as usize..at as usize + VALUE_HEADER_BYTES];
            v[8..16].copy_from_slice(&(first_seq + i as u64).to_be_bytes());
            v[16..24].copy_from_slice(&send_ns.to_be_bytes());
            let crc = self.shift.apply(crc32c::crc32c(&v[..CHECKSUM_AT])) ^ self.filler_crc;
            v[CHECKSUM_AT..CHECKSUM_AT + 4].copy_from_slice(&crc.to_be_bytes());
        }
        batch::recompute_crc(out);
    }
}

/// What a record's value says about itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ValueId {
    pub run_id: u32,
    pub producer: u32,
    pub seq: u64,
    pub send_ns: u64,
}

/// Reads a value's header and checks its checksum over every byte. None:
/// too short or the checksum does not match (corrupt).
pub fn check_value(v: &[u8]) -> Option<ValueId> {
    if v.len() < VALUE_HEADER_BYTES {
        return None;
    }
    let u32_at = |at: usize| u32::from_be_bytes(v[at..at + 4].try_into().expect("4 bytes"));
    let u64_at = |at: usize| u64::from_be_bytes(v[at..at + 8].try_into().expect("8 bytes"));
    let crc = crc32c::crc32c_append(crc32c::crc32c(&v[..CHECKSUM_AT]), &v[VALUE_HEADER_BYTES..]);
    (crc == u32_at(CHECKSUM_AT)).then(|| ValueId { run_id: u32_at(0), producer: u32_at(4), seq: u64_at(8), send_ns: u64_at(16) })
}

#[cfg(test)]
mod tests {
    use super::*;

    // Proves a stamped batch is valid Kafka v2 and every record checks out
    // with the identity and time it was stamped with.
    #[test]
    fn stamped_batches_validate_and_carry_their_identity() {
        let t = BatchTemplate::new(7, 3, records_per_batch(4096, 100), 100);
        assert!(t.records() > 30);
        let mut out = t.bytes.clone();
        t.stamp(&mut out, 1000, 123_456_789, 1_700_000_000_000);
        batch::validate(&out, usize::MAX).expect("stamped batch validates");
        for (i, r) in batch::records(&out).enumerate() {
            let id = check_value(r.unwrap().value.unwrap()).expect("checksum matches");
            assert_eq!(id, ValueId { run_id: 7, producer: 3, seq: 1000 + i as u64, send_ns: 123_456_789 });
        }
        // A second stamp changes every record and still validates.
        t.stamp(&mut out, 5000, 9, 1);
        batch::validate(&out, usize::MAX).unwrap();
        let first = batch::records(&out).next().unwrap().unwrap();
        assert_eq!(check_value(first.value.unwrap()).unwrap().seq, 5000);
    }

    // Proves the table shift gives crc32c_combine's result, which is the CRC
    // of the concatenation, for the lengths loadgen uses.
    #[test]
    fn shift_tables_combine_like_the_crate() {
        for len in [0usize, 1, 72, 996, 4068] {
            let b: Vec<u8> = (0..len).map(|i| (i * 13 + 5) as u8).collect();
            let a = b"twenty-four header bytes";
            let shift = Shift::new(len);
            let mut whole = a.to_vec();
            whole.extend_from_slice(&b);
            assert_eq!(shift.apply(crc32c::crc32c(a)) ^ crc32c::crc32c(&b), crc32c::crc32c(&whole), "len {len}");
        }
    }

    // Proves the checksum catches a flipped byte in the filler and in the header.
    #[test]
    fn check_value_refuses_damage() {
        let t = BatchTemplate::new(1, 1, 2, 64);
        let mut out = t.bytes.clone();
        t.stamp(&mut out, 0, 5, 5);
        let at = out.len() - 10; // inside the last value's filler
        let v = batch::records(&out).last().unwrap().unwrap().value.unwrap().to_vec();
        assert!(check_value(&v).is_some());
        let mut bad = v.clone();
        bad[40] ^= 1;
        assert!(check_value(&bad).is_none());
        let mut bad = v.clone();
        bad[9] ^= 0x80;
        assert!(check_value(&bad).is_none());
        assert!(check_value(&v[..20]).is_none());
        out[at] ^= 1;
        assert!(batch::validate(&out, usize::MAX).is_err(), "the batch CRC also sees it");
    }
}
