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
use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

use strom::wire::batch::{self, BatchBuilder};

pub const VALUE_HEADER_BYTES: usize = 28;
const CHECKSUM_AT: usize = 24;

/// The batch header fields loadgen stamps (Kafka RecordBatch v2 layout).
const BASE_TIMESTAMP_AT: usize = 27;
const MAX_TIMESTAMP_AT: usize = 35;
const BASE_SEQUENCE_AT: usize = 53;

/// Bytes a Kafka varint (zigzag, then base 128) of `v` takes.
fn varint_bytes(v: i64) -> usize {
    let zigzag = ((v << 1) ^ (v >> 63)) as u64;
    (64 - (zigzag | 1).leading_zeros() as usize).div_ceil(7)
}

/// Bytes record `i` of a batch takes with a value of `value_bytes`, as
/// [`BatchBuilder`] writes loadgen's records: length (varint), attributes
/// (1), timestamp delta 0 (1), offset delta `i` (varint), key length -1
/// (1, no key), value length (varint), the value, headers count 0 (1).
pub fn record_bytes(i: usize, value_bytes: usize) -> usize {
    let body = 1 + 1 + varint_bytes(i as i64) + 1 + varint_bytes(value_bytes as i64) + value_bytes + 1;
    varint_bytes(body as i64) + body
}

/// The records of every batch a run sends: as many values of `--msg-size`
/// as fit in `--batch-bytes`, and the bytes left over given to the last
/// value (or, where a varint growing by a byte would skip the exact size,
/// one or two to the value before it), so that each batch is exactly
/// `--batch-bytes` on the wire.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BatchShape {
    pub batch_bytes: usize,
    pub msg_size: usize,
    /// Each record's value length, in order.
    pub value_bytes: Vec<usize>,
}

impl BatchShape {
    pub fn exact(batch_bytes: usize, msg_size: usize) -> Result<BatchShape, String> {
        let header = batch::BATCH_HEADER_BYTES;
        let one = header + record_bytes(0, msg_size);
        if batch_bytes < one {
            return Err(format!("--batch-bytes {batch_bytes} cannot hold one record of --msg-size {msg_size}: that batch is {one} bytes"));
        }
        let (mut used, mut n) = (header, 0);
        while used + record_bytes(n, msg_size) <= batch_bytes {
            used += record_bytes(n, msg_size);
            n += 1;
        }
        // The records before the last one or two keep msg_size.
        let fixed = n.saturating_sub(2);
        let base: usize = header + (0..fixed).map(|i| record_bytes(i, msg_size)).sum::<usize>();
        let prev_extras: &[usize] = if n >= 2 { &[0, 1, 2, 3] } else { &[0] };
        for &extra in prev_extras {
            let prev = if n >= 2 { record_bytes(n - 2, msg_size + extra) } else { 0 };
            let Some(want) = batch_bytes.checked_sub(base + prev) else { continue };
            // record_bytes grows with the value, by 1 but for a few steps.
            let mut last = msg_size;
            while record_bytes(n - 1, last) < want {
                last += 1;
            }
            if record_bytes(n - 1, last) == want {
                let mut value_bytes = vec![msg_size; n];
                if n >= 2 {
                    value_bytes[n - 2] += extra;
                }
                value_bytes[n - 1] = last;
                return Ok(BatchShape { batch_bytes, msg_size, value_bytes });
            }
        }
        Err(format!(
            "--batch-bytes {batch_bytes} cannot be filled exactly with --msg-size {msg_size} records (a length varint skips it): try {}",
            batch_bytes + 1
        ))
    }

    pub fn records(&self) -> usize {
        self.value_bytes.len()
    }

    /// `records` values of `msg_size`, whatever the batch's size (for tests).
    #[cfg(test)]
    pub fn uniform(records: usize, msg_size: usize) -> BatchShape {
        BatchShape { batch_bytes: 0, msg_size, value_bytes: vec![msg_size; records] }
    }

    /// Bytes of record values in one batch.
    pub fn values_bytes(&self) -> usize {
        self.value_bytes.iter().sum()
    }

    /// The average value, what MB/s of record values counts per record.
    pub fn value_bytes_avg(&self) -> f64 {
        self.values_bytes() as f64 / self.records() as f64
    }

    /// "63 records: 62 of 1024 bytes and a last one of 1420 bytes to fill it", for the report.
    pub fn describe(&self) -> String {
        let odd: Vec<String> = self.value_bytes.iter().filter(|&&v| v != self.msg_size).map(|v| v.to_string()).collect();
        let plain = self.records() - odd.len();
        match odd.len() {
            0 => format!("{} records of {} bytes", plain, self.msg_size),
            1 => format!("{} records: {} of {} bytes and a last one of {} bytes to fill it", self.records(), plain, self.msg_size, odd[0]),
            _ => format!(
                "{} records: {} of {} bytes and the last ones of {} bytes to fill it",
                self.records(),
                plain,
                self.msg_size,
                odd.join(" and ")
            ),
        }
    }
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
pub struct Shift {
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

    pub fn apply(&self, crc: u32) -> u32 {
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
    /// Each record's entry in `fills`.
    fill_of: Vec<u8>,
    fills: Vec<Fill>,
}

/// The filler of one value length: its CRC and the shift that folds it in.
#[derive(Debug, Clone)]
struct Fill {
    len: usize,
    crc: u32,
    shift: Arc<Shift>,
}

impl BatchTemplate {
    pub fn new(run_id: u32, producer: u32, shape: &BatchShape) -> BatchTemplate {
        // No producer id (-1, as native clients send): a producer id of 0
        // or more makes the batch idempotent, and every send of a template
        // carries the same sequence, so each would be taken for the first's retry.
        let mut b = BatchBuilder::new(0);
        for &value_bytes in &shape.value_bytes {
            assert!(value_bytes >= VALUE_HEADER_BYTES, "msg_size is checked against VALUE_HEADER_BYTES by the caller");
            let mut value = vec![0u8; value_bytes];
            value[0..4].copy_from_slice(&run_id.to_be_bytes());
            value[4..8].copy_from_slice(&producer.to_be_bytes());
            value[VALUE_HEADER_BYTES..].copy_from_slice(&filler(producer, value_bytes - VALUE_HEADER_BYTES));
            b.push(0, None, Some(&value), &[]);
        }
        let bytes = b.finish();
        // Cheap, once per producer: the shape's arithmetic must be BatchBuilder's.
        assert!(
            shape.batch_bytes == 0 || bytes.len() == shape.batch_bytes,
            "a batch of {} bytes for a shape of {}",
            bytes.len(),
            shape.batch_bytes
        );
        let base = bytes.as_ptr() as usize;
        let value_at = batch::records(&bytes)
            .map(|r| {
                let v = r.expect("a batch we just built decodes").value.expect("every record has a value");
                (v.as_ptr() as usize - base) as u32
            })
            .collect();
        // One CRC and shift table per value length (at most three).
        let mut fills: Vec<Fill> = Vec::new();
        let fill_of = shape
            .value_bytes
            .iter()
            .map(|&v| {
                let len = v - VALUE_HEADER_BYTES;
                match fills.iter().position(|f| f.len == len) {
                    Some(i) => i as u8,
                    None => {
                        fills.push(Fill { len, crc: crc32c::crc32c(&filler(producer, len)), shift: shift_of(len) });
                        (fills.len() - 1) as u8
                    }
                }
            })
            .collect();
        BatchTemplate { bytes, value_at, fill_of, fills }
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
            let fill = &self.fills[usize::from(self.fill_of[i])];
            let crc = fill.shift.apply(crc32c::crc32c(&v[..CHECKSUM_AT])) ^ fill.crc;
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
    let crc = crc32c::crc32c_append(crc32c::crc32c(&v[..CHECKSUM_AT]), &v[VALUE_HEADER_BYTES..]);
    value_id(v, crc)
}

/// [`check_value`] for a value whose filler's CRC (of `v[28..]`) is known,
/// with the shift of that filler's length: a consumer that computes it
/// for the batch CRC too reads each byte once for both checksums.
pub fn check_value_folded(v: &[u8], filler_crc: u32, shift: &Shift) -> Option<ValueId> {
    if v.len() < VALUE_HEADER_BYTES {
        return None;
    }
    value_id(v, shift.apply(crc32c::crc32c(&v[..CHECKSUM_AT])) ^ filler_crc)
}

/// The value's identity when `crc` is the checksum it carries.
fn value_id(v: &[u8], crc: u32) -> Option<ValueId> {
    let u32_at = |at: usize| u32::from_be_bytes(v[at..at + 4].try_into().expect("4 bytes"));
    let u64_at = |at: usize| u64::from_be_bytes(v[at..at + 8].try_into().expect("8 bytes"));
    (crc == u32_at(CHECKSUM_AT)).then(|| ValueId { run_id: u32_at(0), producer: u32_at(4), seq: u64_at(8), send_ns: u64_at(16) })
}

/// The shift of `len` bytes, built once per process and length (about a
/// thousand `crc32c_combine` calls each; a run has at most three filler
/// lengths) and shared by every producer that stamps and every consumer
/// that checks records.
pub fn shift_of(len: usize) -> Arc<Shift> {
    static SHIFTS: OnceLock<Mutex<HashMap<usize, Arc<Shift>>>> = OnceLock::new();
    let mut shifts = SHIFTS.get_or_init(Default::default).lock().unwrap_or_else(|e| e.into_inner());
    shifts.entry(len).or_insert_with(|| Arc::new(Shift::new(len))).clone()
}

#[cfg(test)]
mod tests {
    use super::*;

    // Proves a stamped batch is valid Kafka v2 and every record checks out
    // with the identity and time it was stamped with.
    #[test]
    fn stamped_batches_validate_and_carry_their_identity() {
        let t = BatchTemplate::new(7, 3, &BatchShape::exact(4096, 100).unwrap());
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

    // Proves a batch is exactly --batch-bytes on the wire, built by the real
    // BatchBuilder, for a spread of record sizes and counts (varint steps
    // at 64 and 8,192 bytes included), and that every stamped record checks.
    #[test]
    fn batches_are_exactly_the_bytes_asked_for() {
        let mut built = 0;
        for msg_size in [28usize, 63, 64, 100, 1000, 1024, 8191, 8192, 65_536] {
            for batch_bytes in [4096usize, 16_384, 65_536, 65_537, 100_000, 1_048_588] {
                let shape = match BatchShape::exact(batch_bytes, msg_size) {
                    Ok(s) => s,
                    Err(e) => {
                        assert!(batch_bytes < 61 + record_bytes(0, msg_size) + 4, "{batch_bytes}/{msg_size}: {e}");
                        continue;
                    }
                };
                let t = BatchTemplate::new(1, 2, &shape);
                assert_eq!(t.bytes.len(), batch_bytes, "msg_size {msg_size}: {}", shape.describe());
                assert_eq!(t.records(), shape.records());
                assert!(shape.value_bytes.iter().filter(|&&v| v != msg_size).count() <= 2);
                let mut out = t.bytes.clone();
                t.stamp(&mut out, 7, 1, 1);
                batch::validate(&out, usize::MAX).unwrap();
                for r in batch::records(&out) {
                    assert!(check_value(r.unwrap().value.unwrap()).is_some());
                }
                built += 1;
            }
        }
        assert!(built > 40);
        // One byte over every size near a varint step is reachable too.
        for batch_bytes in 61 + 70..61 + 200 {
            let shape = BatchShape::exact(batch_bytes, 28).unwrap();
            assert_eq!(BatchTemplate::new(1, 1, &shape).bytes.len(), batch_bytes);
        }
        assert!(BatchShape::exact(100, 1024).unwrap_err().contains("cannot hold one record"));
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
        let t = BatchTemplate::new(1, 1, &BatchShape::uniform(2, 64));
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
