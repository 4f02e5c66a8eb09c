//! Building RecordBatch v2 batches (uncompressed), for producers and tests.
use super::*;

/// Builds an uncompressed batch, one record at a time, for producers and
/// tests. Each [`push`](Self::push) encodes its record at once, so `finish`
/// only writes the header and the CRC.
#[derive(Debug, Clone)]
pub struct BatchBuilder {
    base_timestamp_ms: i64,
    max_timestamp_ms: i64,
    producer_id: i64,
    producer_epoch: i16,
    base_sequence: i32,
    records_count: i32,
    /// The encoded records section.
    records: Vec<u8>,
}

impl BatchBuilder {
    /// Record timestamps are stored as deltas from `base_timestamp_ms`.
    pub fn new(base_timestamp_ms: i64) -> Self {
        BatchBuilder {
            base_timestamp_ms,
            max_timestamp_ms: NO_TIMESTAMP,
            producer_id: -1,
            producer_epoch: -1,
            base_sequence: -1,
            records_count: 0,
            records: Vec::new(),
        }
    }

    /// Sets the idempotent-producer fields; all default to -1 (none).
    pub fn producer(self, producer_id: i64, producer_epoch: i16, base_sequence: i32) -> Self {
        BatchBuilder { producer_id, producer_epoch, base_sequence, ..self }
    }

    /// Appends a record. Panics if a key, value or header is 2 GiB or more,
    /// or the batch already holds `i32::MAX` records: the format cannot say so.
    pub fn push(&mut self, timestamp_ms: i64, key: Option<&[u8]>, value: Option<&[u8]>, headers: &[(&[u8], Option<&[u8]>)]) {
        let offset_delta = self.records_count;
        // Wrapping, so that any two timestamps encode and decode back exactly.
        let timestamp_delta_ms = timestamp_ms.wrapping_sub(self.base_timestamp_ms);
        let headers_count = i32::try_from(headers.len()).expect("at most i32::MAX headers");
        let body_bytes = 1
            + varint_bytes(zigzag64(timestamp_delta_ms))
            + varint_bytes(zigzag32(offset_delta).into())
            + nullable_bytes_len(key)
            + nullable_bytes_len(value)
            + varint_bytes(zigzag32(headers_count).into())
            + headers.iter().map(|&(k, v)| nullable_bytes_len(Some(k)) + nullable_bytes_len(v)).sum::<usize>();
        let length = i32::try_from(body_bytes).expect("a record must be under 2 GiB");
        let out = &mut self.records;
        let start = out.len();
        put_varint(out, length);
        out.push(0); // record attributes: unused by Kafka, always 0
        put_varlong(out, timestamp_delta_ms);
        put_varint(out, offset_delta);
        put_nullable_bytes(out, key);
        put_nullable_bytes(out, value);
        put_varint(out, headers_count);
        for &(k, v) in headers {
            put_nullable_bytes(out, Some(k));
            put_nullable_bytes(out, v);
        }
        debug_assert_eq!(out.len() - start, varint_bytes(zigzag32(length).into()) + body_bytes);
        if self.records_count == 0 || timestamp_ms > self.max_timestamp_ms {
            self.max_timestamp_ms = timestamp_ms;
        }
        self.records_count = offset_delta.checked_add(1).expect("at most i32::MAX records");
    }

    pub fn len(&self) -> usize {
        self.records_count as usize
    }

    pub fn is_empty(&self) -> bool {
        self.records_count == 0
    }

    /// The size of the batch [`finish`](Self::finish) will produce.
    pub fn encoded_bytes(&self) -> usize {
        BATCH_HEADER_BYTES + self.records.len()
    }

    /// The batch with `baseOffset` 0 (the broker assigns it), leader epoch
    /// -1, attributes 0 and its CRC. A builder with no records produces a
    /// batch that [`validate`] refuses as `Empty`.
    pub fn finish(self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.encoded_bytes());
        self.finish_into(&mut out);
        out
    }

    /// Like [`finish`](Self::finish), but appends the batch to `out`.
    /// Panics if the batch would be 2 GiB or more.
    pub fn finish_into(self, out: &mut Vec<u8>) {
        let start = out.len();
        let batch_bytes = self.encoded_bytes();
        let batch_length = i32::try_from(batch_bytes - LENGTH_PREFIX_BYTES).expect("a batch must be under 2 GiB");
        out.reserve(batch_bytes);
        out.extend_from_slice(&0i64.to_be_bytes()); // baseOffset
        out.extend_from_slice(&batch_length.to_be_bytes());
        out.extend_from_slice(&(-1i32).to_be_bytes()); // partitionLeaderEpoch
        out.push(MAGIC_V2 as u8);
        out.extend_from_slice(&[0; 4]); // crc, stored below
        out.extend_from_slice(&0i16.to_be_bytes()); // attributes
        out.extend_from_slice(&(self.records_count - 1).to_be_bytes()); // lastOffsetDelta
        out.extend_from_slice(&self.base_timestamp_ms.to_be_bytes());
        out.extend_from_slice(&self.max_timestamp_ms.to_be_bytes());
        out.extend_from_slice(&self.producer_id.to_be_bytes());
        out.extend_from_slice(&self.producer_epoch.to_be_bytes());
        out.extend_from_slice(&self.base_sequence.to_be_bytes());
        out.extend_from_slice(&self.records_count.to_be_bytes());
        debug_assert_eq!(out.len() - start, BATCH_HEADER_BYTES);
        out.extend_from_slice(&self.records);
        recompute_crc(&mut out[start..]);
    }
}

pub(super) fn zigzag32(v: i32) -> u32 {
    ((v << 1) ^ (v >> 31)) as u32
}

pub(super) fn zigzag64(v: i64) -> u64 {
    ((v << 1) ^ (v >> 63)) as u64
}

/// Bytes a base-128 varint of `n` takes: 7 bits each, at least one.
pub(super) fn varint_bytes(n: u64) -> usize {
    let bits = 64 - (n | 1).leading_zeros() as usize;
    bits.div_ceil(7)
}

pub(super) fn put_uvarint(out: &mut Vec<u8>, mut n: u64) {
    while n >= 0x80 {
        out.push(n as u8 | 0x80);
        n >>= 7;
    }
    out.push(n as u8);
}

pub(super) fn put_varint(out: &mut Vec<u8>, v: i32) {
    put_uvarint(out, zigzag32(v).into());
}

pub(super) fn put_varlong(out: &mut Vec<u8>, v: i64) {
    put_uvarint(out, zigzag64(v));
}

pub(super) fn nullable_bytes_len(b: Option<&[u8]>) -> usize {
    match b {
        None => varint_bytes(zigzag32(-1).into()),
        Some(b) => varint_bytes(zigzag32(i32::try_from(b.len()).unwrap_or(i32::MAX)).into()) + b.len(),
    }
}

pub(super) fn put_nullable_bytes(out: &mut Vec<u8>, b: Option<&[u8]>) {
    match b {
        None => put_varint(out, -1),
        Some(b) => {
            put_varint(out, i32::try_from(b.len()).expect("a field must be under 2 GiB"));
            out.extend_from_slice(b);
        }
    }
}
