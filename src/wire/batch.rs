//! Kafka RecordBatch v2 (magic 2): validation, header parsing, record
//! iteration, and a builder for producers and tests.
//!
//! Strom stores a batch exactly as the producer sent it; the only field it
//! rewrites is `baseOffset`, which sits outside the CRC. So a batch is checked
//! once, here, on the way in, and is then trusted by its CRC alone.
//!
//! ```text
//!  0  baseOffset            i64   assigned by the broker, not covered by the CRC
//!  8  batchLength           i32   bytes after this field
//! 12  partitionLeaderEpoch  i32   not covered by the CRC
//! 16  magic                 i8    = 2
//! 17  crc                   u32   CRC-32C (Castagnoli) of bytes 21..end
//! 21  attributes            i16   bits 0-2: compression (we accept only 0)
//! 23  lastOffsetDelta       i32   = recordsCount - 1
//! 27  baseTimestamp         i64
//! 35  maxTimestamp          i64
//! 43  producerId            i64
//! 51  producerEpoch         i16
//! 53  baseSequence          i32
//! 57  recordsCount          i32
//! 61  records...
//!
//! record: length varint | attributes i8 | timestampDelta varlong |
//!         offsetDelta varint | keyLength varint | key | valueLength varint |
//!         value | headersCount varint | (keyLength varint | key |
//!         valueLength varint | value) * headersCount
//! ```
//!
//! Fixed fields are big-endian; varints are zigzag (protobuf style), at most
//! 5 bytes for a varint and 10 for a varlong; a length of -1 means null.
//!
//! Decoding never reads past the slice it is given, never panics, and never
//! allocates: every length read from the input is checked against the bytes
//! actually present before it is used, so a hostile batch costs one pass over
//! its own bytes at most.

use crate::error::BatchError;

/// Bytes of the fixed header, from `baseOffset` through `recordsCount`.
pub const BATCH_HEADER_BYTES: usize = 61;
pub const MAGIC_V2: i8 = 2;

const BATCH_LENGTH_AT: usize = 8;
const LEADER_EPOCH_AT: usize = 12;
const MAGIC_AT: usize = 16;
const CRC_AT: usize = 17;
const ATTRIBUTES_AT: usize = 21;
const LAST_OFFSET_DELTA_AT: usize = 23;
const BASE_TIMESTAMP_AT: usize = 27;
const MAX_TIMESTAMP_AT: usize = 35;
const PRODUCER_ID_AT: usize = 43;
const PRODUCER_EPOCH_AT: usize = 51;
const BASE_SEQUENCE_AT: usize = 53;
const RECORDS_COUNT_AT: usize = 57;
/// `baseOffset` and `batchLength` precede the bytes `batchLength` counts.
const LENGTH_PREFIX_BYTES: usize = 12;
/// The CRC covers everything from `attributes` to the end of the batch;
/// the bytes before it are what a broker may change (baseOffset) or what the
/// CRC itself is.
pub const CRC_FROM: usize = ATTRIBUTES_AT;
const COMPRESSION_MASK: i16 = 0x07;
/// Kafka's "no timestamp", used as `maxTimestamp` of a batch without records.
const NO_TIMESTAMP: i64 = -1;
const VARINT_BYTES_MAX: u32 = 5;
const VARLONG_BYTES_MAX: u32 = 10;

const _: () = assert!(RECORDS_COUNT_AT + 4 == BATCH_HEADER_BYTES);
const _: () = assert!(CRC_AT + 4 == CRC_FROM);
const _: () = assert!(LEADER_EPOCH_AT == LENGTH_PREFIX_BYTES);
// 7 bits per varint byte must cover the 32 and 64 bits they carry.
const _: () = assert!(7 * VARINT_BYTES_MAX >= 32 && 7 * VARLONG_BYTES_MAX >= 64);

/// The fixed header of one batch, as parsed by [`parse_header`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchInfo {
    pub base_offset: i64,
    /// The whole batch, including the 12-byte `baseOffset` + `batchLength` prefix.
    pub batch_bytes: usize,
    pub partition_leader_epoch: i32,
    pub attributes: i16,
    pub last_offset_delta: i32,
    pub base_timestamp_ms: i64,
    pub max_timestamp_ms: i64,
    pub producer_id: i64,
    pub producer_epoch: i16,
    pub base_sequence: i32,
    pub records_count: i32,
    pub crc: u32,
}

impl BatchInfo {
    /// The offset of the last record. Wrapping, because an unvalidated
    /// header may hold any values and computing this must not panic.
    pub fn last_offset(&self) -> i64 {
        self.base_offset.wrapping_add(i64::from(self.last_offset_delta))
    }

    /// The compression codec: 0 none, 1 gzip, 2 snappy, 3 lz4, 4 zstd.
    pub fn compression(&self) -> u8 {
        (self.attributes & COMPRESSION_MASK) as u8
    }
}

/// Parses the fixed 61-byte header: checks the magic byte and that
/// `batchLength` covers at least the rest of the header. Does not check the
/// CRC and does not need the whole batch, so callers can walk concatenated
/// batches with `&buf[at..at + info.batch_bytes]`.
pub fn parse_header(bytes: &[u8]) -> Result<BatchInfo, BatchError> {
    let Some(h) = bytes.first_chunk::<BATCH_HEADER_BYTES>() else {
        return Err(BatchError::Truncated { needed: BATCH_HEADER_BYTES, got: bytes.len() });
    };
    let magic = h[MAGIC_AT] as i8;
    if magic != MAGIC_V2 {
        return Err(BatchError::BadMagic(magic));
    }
    let batch_length = i32::from_be_bytes(field(h, BATCH_LENGTH_AT));
    // A shorter batchLength would end the batch inside its own header.
    let batch_bytes = usize::try_from(batch_length).map(|n| n + LENGTH_PREFIX_BYTES).ok().filter(|&n| n >= BATCH_HEADER_BYTES).ok_or(
        BatchError::LengthMismatch {
            declared: (i64::from(batch_length) + LENGTH_PREFIX_BYTES as i64).max(0) as u64,
            actual: bytes.len() as u64,
        },
    )?;
    Ok(BatchInfo {
        base_offset: i64::from_be_bytes(field(h, 0)),
        batch_bytes,
        partition_leader_epoch: i32::from_be_bytes(field(h, LEADER_EPOCH_AT)),
        attributes: i16::from_be_bytes(field(h, ATTRIBUTES_AT)),
        last_offset_delta: i32::from_be_bytes(field(h, LAST_OFFSET_DELTA_AT)),
        base_timestamp_ms: i64::from_be_bytes(field(h, BASE_TIMESTAMP_AT)),
        max_timestamp_ms: i64::from_be_bytes(field(h, MAX_TIMESTAMP_AT)),
        producer_id: i64::from_be_bytes(field(h, PRODUCER_ID_AT)),
        producer_epoch: i16::from_be_bytes(field(h, PRODUCER_EPOCH_AT)),
        base_sequence: i32::from_be_bytes(field(h, BASE_SEQUENCE_AT)),
        records_count: i32::from_be_bytes(field(h, RECORDS_COUNT_AT)),
        crc: u32::from_be_bytes(field(h, CRC_AT)),
    })
}

/// A fixed-size field of the header; the array type proves it is in bounds.
fn field<const N: usize>(header: &[u8; BATCH_HEADER_BYTES], at: usize) -> [u8; N] {
    let mut out = [0; N];
    out.copy_from_slice(&header[at..at + N]);
    out
}

/// Fully validates exactly one batch, cheapest checks first: size limit,
/// header, length, CRC, attributes and counts, then a walk of every record.
pub fn validate(bytes: &[u8], max_bytes: usize) -> Result<BatchInfo, BatchError> {
    if bytes.len() > max_bytes {
        return Err(BatchError::TooLarge { bytes: bytes.len(), max_bytes });
    }
    let info = parse_header(bytes)?;
    if bytes.len() != info.batch_bytes {
        return Err(BatchError::LengthMismatch { declared: info.batch_bytes as u64, actual: bytes.len() as u64 });
    }
    let computed = crc32c::crc32c(&bytes[CRC_FROM..]);
    if computed != info.crc {
        return Err(BatchError::BadCrc { stored: info.crc, computed });
    }
    check_counts(&info)?;
    let mut found: u64 = 0;
    for record in Records::over(&bytes[BATCH_HEADER_BYTES..]) {
        record?;
        found += 1;
    }
    // records_count >= 1 was checked, so the cast is exact.
    if found != info.records_count as u64 {
        return Err(BatchError::BadRecordCount { declared: info.records_count, found });
    }
    Ok(info)
}

/// The header checks that need no record walk.
fn check_counts(info: &BatchInfo) -> Result<(), BatchError> {
    // Compressed records cannot be counted or offset-checked without
    // decompressing, and we store nothing we have not checked.
    if info.compression() != 0 {
        return Err(BatchError::UnsupportedCompression(info.compression()));
    }
    // A negative count is as unservable as zero: no offsets to assign.
    if info.records_count < 1 {
        return Err(BatchError::Empty);
    }
    // Offsets are assigned as base..=base+lastOffsetDelta; a delta that
    // disagrees with the count would make the partition skip or reuse offsets.
    if info.last_offset_delta != info.records_count - 1 {
        return Err(BatchError::BadLastOffsetDelta { delta: info.last_offset_delta, records: info.records_count });
    }
    Ok(())
}

/// Overwrites `baseOffset`. It lies outside the CRC, so the batch stays
/// valid. Panics if `bytes` is shorter than 8 bytes (a caller bug).
pub fn set_base_offset(bytes: &mut [u8], base_offset: u64) {
    bytes[..8].copy_from_slice(&base_offset.to_be_bytes());
}

/// Recomputes and stores the CRC of one whole batch, for callers that patch
/// fields inside the CRC range (loadgen rewrites sequences and timestamps).
/// Panics if `bytes` is shorter than 21 bytes (a caller bug).
pub fn recompute_crc(bytes: &mut [u8]) {
    let crc = crc32c::crc32c(&bytes[CRC_FROM..]);
    bytes[CRC_AT..CRC_FROM].copy_from_slice(&crc.to_be_bytes());
}

/// One record, borrowing its key, value and headers from the batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record<'a> {
    pub attributes: i8,
    pub timestamp_delta_ms: i64,
    pub offset_delta: i32,
    pub key: Option<&'a [u8]>,
    pub value: Option<&'a [u8]>,
    pub headers: Headers<'a>,
}

/// A record's headers as `(key, value)` pairs, decoded lazily. They were
/// checked when the record was decoded, so iterating cannot fail.
#[derive(Debug, Clone)]
pub struct Headers<'a> {
    rest: Reader<'a>,
    remaining: u32,
}

impl<'a> Headers<'a> {
    /// Reads `headersCount` from `body`, checks that many headers, and
    /// takes their bytes for later iteration.
    fn decode(body: &mut Reader<'a>) -> Option<Headers<'a>> {
        let remaining = u32::try_from(body.varint()?).ok()?;
        let start = *body;
        // A hostile count cannot make this loop long: every header takes at
        // least two bytes, so it fails once the record's bytes run out.
        for _ in 0..remaining {
            body.header()?;
        }
        let used = start.rest.len() - body.rest.len();
        Some(Headers { rest: Reader { rest: &start.rest[..used] }, remaining })
    }
}

impl<'a> Iterator for Headers<'a> {
    type Item = (&'a [u8], Option<&'a [u8]>);

    fn next(&mut self) -> Option<Self::Item> {
        self.remaining = self.remaining.checked_sub(1)?;
        self.rest.header()
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        (self.remaining as usize, Some(self.remaining as usize))
    }
}

impl ExactSizeIterator for Headers<'_> {}

/// Equal when they hold the same pairs, however the lengths were encoded.
impl PartialEq for Headers<'_> {
    fn eq(&self, other: &Self) -> bool {
        self.clone().eq(other.clone())
    }
}

impl Eq for Headers<'_> {}

/// Iterates the records of one batch, in order. Yields one `Err` and stops
/// on malformed input: a header error, `Truncated` if the slice is shorter
/// than `batchLength` says, or `BadRecord { index }`. Bytes past the batch's
/// end are ignored, like [`parse_header`] does. Does not check the CRC or
/// `recordsCount`; [`validate`] does.
pub fn records(batch: &[u8]) -> Records<'_> {
    match records_section(batch) {
        Ok(section) => Records::over(section),
        Err(e) => Records { rest: &[], index: 0, pending: Some(e) },
    }
}

fn records_section(batch: &[u8]) -> Result<&[u8], BatchError> {
    let info = parse_header(batch)?;
    if info.compression() != 0 {
        return Err(BatchError::UnsupportedCompression(info.compression()));
    }
    batch.get(BATCH_HEADER_BYTES..info.batch_bytes).ok_or(BatchError::Truncated { needed: info.batch_bytes, got: batch.len() })
}

/// The iterator returned by [`records`].
#[derive(Debug, Clone)]
pub struct Records<'a> {
    /// The records not yet decoded; emptied on the first error.
    rest: &'a [u8],
    index: u64,
    /// An error to yield next, after which the iterator is finished.
    pending: Option<BatchError>,
}

impl<'a> Records<'a> {
    fn over(section: &'a [u8]) -> Records<'a> {
        Records { rest: section, index: 0, pending: None }
    }
}

impl<'a> Iterator for Records<'a> {
    type Item = Result<Record<'a>, BatchError>;

    fn next(&mut self) -> Option<Self::Item> {
        if let Some(e) = self.pending.take() {
            return Some(Err(e));
        }
        if self.rest.is_empty() {
            return None;
        }
        let mut reader = Reader { rest: self.rest };
        match decode_record(&mut reader, self.index) {
            Some(record) => {
                self.rest = reader.rest;
                self.index += 1;
                Some(Ok(record))
            }
            None => {
                self.rest = &[];
                Some(Err(BatchError::BadRecord { index: self.index }))
            }
        }
    }
}

/// Decodes the record at the front of `section`; `None` if it is malformed.
fn decode_record<'a>(section: &mut Reader<'a>, index: u64) -> Option<Record<'a>> {
    let length = usize::try_from(section.varint()?).ok()?;
    let mut body = Reader { rest: section.take(length)? };
    let attributes = body.byte()? as i8;
    let timestamp_delta_ms = body.varlong()?;
    let offset_delta = body.varint()?;
    // We serve record i at base_offset + i; a record claiming another delta
    // would be read back under an offset it never had.
    if u64::try_from(offset_delta).ok()? != index {
        return None;
    }
    let key = body.nullable_bytes()?;
    let value = body.nullable_bytes()?;
    let headers = Headers::decode(&mut body)?;
    // `length` must cover the fields exactly: slack would be bytes that are
    // stored and checksummed but belong to no field.
    if !body.rest.is_empty() {
        return None;
    }
    Some(Record { attributes, timestamp_delta_ms, offset_delta, key, value, headers })
}

/// A cursor over untrusted bytes. Every read checks what is left and
/// returns `None` rather than reading past the end.
#[derive(Debug, Clone, Copy)]
struct Reader<'a> {
    rest: &'a [u8],
}

impl<'a> Reader<'a> {
    fn byte(&mut self) -> Option<u8> {
        let (&b, rest) = self.rest.split_first()?;
        self.rest = rest;
        Some(b)
    }

    fn take(&mut self, bytes: usize) -> Option<&'a [u8]> {
        let (taken, rest) = self.rest.split_at_checked(bytes)?;
        self.rest = rest;
        Some(taken)
    }

    /// An unsigned base-128 varint of at most `bytes_max` bytes. Kafka
    /// accepts overlong encodings, so we do; a value wider than the 32 or 64
    /// bits the caller wants is refused by the caller's conversion.
    fn uvarint(&mut self, bytes_max: u32) -> Option<u128> {
        let mut value: u128 = 0;
        for i in 0..bytes_max {
            let b = self.byte()?;
            value |= u128::from(b & 0x7f) << (7 * i);
            if b & 0x80 == 0 {
                return Some(value);
            }
        }
        None
    }

    fn varint(&mut self) -> Option<i32> {
        let raw = u32::try_from(self.uvarint(VARINT_BYTES_MAX)?).ok()?;
        Some((raw >> 1) as i32 ^ -((raw & 1) as i32))
    }

    fn varlong(&mut self) -> Option<i64> {
        let raw = u64::try_from(self.uvarint(VARLONG_BYTES_MAX)?).ok()?;
        Some((raw >> 1) as i64 ^ -((raw & 1) as i64))
    }

    /// A varint length and that many bytes; -1 is null, other negatives are
    /// malformed. The length is checked against the bytes left before use.
    fn nullable_bytes(&mut self) -> Option<Option<&'a [u8]>> {
        match self.varint()? {
            -1 => Some(None),
            length => self.take(usize::try_from(length).ok()?).map(Some),
        }
    }

    /// One header: Kafka requires a non-null key; the value may be null.
    fn header(&mut self) -> Option<(&'a [u8], Option<&'a [u8]>)> {
        let key = self.nullable_bytes()??;
        Some((key, self.nullable_bytes()?))
    }
}

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

fn zigzag32(v: i32) -> u32 {
    ((v << 1) ^ (v >> 31)) as u32
}

fn zigzag64(v: i64) -> u64 {
    ((v << 1) ^ (v >> 63)) as u64
}

/// Bytes a base-128 varint of `n` takes: 7 bits each, at least one.
fn varint_bytes(n: u64) -> usize {
    let bits = 64 - (n | 1).leading_zeros() as usize;
    bits.div_ceil(7)
}

fn put_uvarint(out: &mut Vec<u8>, mut n: u64) {
    while n >= 0x80 {
        out.push(n as u8 | 0x80);
        n >>= 7;
    }
    out.push(n as u8);
}

fn put_varint(out: &mut Vec<u8>, v: i32) {
    put_uvarint(out, zigzag32(v).into());
}

fn put_varlong(out: &mut Vec<u8>, v: i64) {
    put_uvarint(out, zigzag64(v));
}

fn nullable_bytes_len(b: Option<&[u8]>) -> usize {
    match b {
        None => varint_bytes(zigzag32(-1).into()),
        Some(b) => varint_bytes(zigzag32(i32::try_from(b.len()).unwrap_or(i32::MAX)).into()) + b.len(),
    }
}

fn put_nullable_bytes(out: &mut Vec<u8>, b: Option<&[u8]>) {
    match b {
        None => put_varint(out, -1),
        Some(b) => {
            put_varint(out, i32::try_from(b.len()).expect("a field must be under 2 GiB"));
            out.extend_from_slice(b);
        }
    }
}

/// Checks this module's promises on arbitrary bytes and panics if one is
/// broken. The fuzz target and `tests/fuzz_replay.rs` both call it, so a
/// corpus file replays under `cargo test` exactly as it was fuzzed.
#[doc(hidden)]
pub fn fuzz_check(data: &[u8]) {
    fuzz_check_one(data);
    // Mutated bytes almost never carry a matching CRC, so a sealed copy is
    // checked too: it lets the fuzzer reach the checks behind the CRC.
    if data.len() >= CRC_FROM {
        let mut sealed = data.to_vec();
        recompute_crc(&mut sealed);
        if sealed != data {
            fuzz_check_one(&sealed);
        }
    }
}

fn fuzz_check_one(data: &[u8]) {
    let header = parse_header(data);
    if let Ok(info) = &header {
        assert!(info.batch_bytes >= BATCH_HEADER_BYTES, "{info:?}");
        let _ = (info.last_offset(), info.compression());
    }
    let walked: Vec<_> = records(data).collect();
    let errors = walked.iter().filter(|r| r.is_err()).count();
    assert!(errors <= 1, "records() yielded {errors} errors");
    assert!(errors == 0 || walked.last().is_some_and(Result::is_err), "an error must come last");
    for record in walked.iter().flatten() {
        assert_eq!(record.headers.clone().count(), record.headers.len());
    }
    let Ok(info) = validate(data, data.len()) else {
        return;
    };
    assert_eq!(header, Ok(info));
    assert_eq!(info.batch_bytes, data.len());
    assert_eq!(walked.len(), info.records_count as usize);
    let records: Vec<Record<'_>> = walked.into_iter().map(Result::unwrap).collect();
    for (i, record) in records.iter().enumerate() {
        assert_eq!(record.offset_delta as usize, i);
    }
    assert_eq!(validate(data, data.len() - 1), Err(BatchError::TooLarge { bytes: data.len(), max_bytes: data.len() - 1 }));
    fuzz_check_patching(data, info);
    fuzz_check_rebuild(&records, info);
}

/// On a valid batch: moving it keeps it valid; re-sealing it changes nothing.
fn fuzz_check_patching(data: &[u8], info: BatchInfo) {
    let mut moved = data.to_vec();
    let base_offset = !(info.base_offset as u64);
    set_base_offset(&mut moved, base_offset);
    let moved_info = validate(&moved, moved.len()).expect("set_base_offset broke the batch");
    assert_eq!(moved_info, BatchInfo { base_offset: base_offset as i64, ..info });
    recompute_crc(&mut moved);
    assert_eq!(moved[8..], data[8..], "recompute_crc changed a valid batch");
}

/// On a valid batch: the builder re-encodes its records to the same values.
fn fuzz_check_rebuild(records: &[Record<'_>], info: BatchInfo) {
    let base_ts = info.base_timestamp_ms;
    let mut builder = BatchBuilder::new(base_ts).producer(info.producer_id, info.producer_epoch, info.base_sequence);
    for r in records {
        let headers: Vec<_> = r.headers.clone().collect();
        builder.push(base_ts.wrapping_add(r.timestamp_delta_ms), r.key, r.value, &headers);
    }
    let expected_bytes = builder.encoded_bytes();
    let rebuilt = builder.finish();
    assert_eq!(rebuilt.len(), expected_bytes);
    let rebuilt_info = validate(&rebuilt, rebuilt.len()).expect("rebuilt batch is invalid");
    assert_eq!(rebuilt_info.records_count, info.records_count);
    for (original, again) in records.iter().zip(records_of(&rebuilt)) {
        // The builder writes record attributes as 0; Kafka defines none.
        assert_eq!(Record { attributes: 0, ..original.clone() }, again);
    }
}

fn records_of(batch: &[u8]) -> impl Iterator<Item = Record<'_>> {
    records(batch).map(|r| r.expect("record of a validated batch"))
}

#[cfg(test)]
mod tests {
    use super::*;

    type OwnedRecord = (i64, Option<Vec<u8>>, Option<Vec<u8>>, Vec<(Vec<u8>, Option<Vec<u8>>)>);

    fn sample() -> Vec<u8> {
        let mut b = BatchBuilder::new(1_700_000_000_000).producer(7, 1, 42);
        b.push(1_700_000_000_000, Some(b"k0"), Some(b"v0"), &[(b"h", Some(b"x"))]);
        b.push(1_700_000_000_005, None, Some(b""), &[]);
        b.push(1_699_999_999_990, Some(b""), None, &[(b"a", None), (b"", Some(b"z"))]);
        b.finish()
    }

    /// A batch with a valid header and CRC around a hand-made records section.
    fn raw_batch(records_count: i32, section: &[u8]) -> Vec<u8> {
        let mut bytes = BatchBuilder::new(0).finish();
        let batch_length = (BATCH_HEADER_BYTES - LENGTH_PREFIX_BYTES + section.len()) as i32;
        bytes[BATCH_LENGTH_AT..][..4].copy_from_slice(&batch_length.to_be_bytes());
        bytes[LAST_OFFSET_DELTA_AT..][..4].copy_from_slice(&(records_count - 1).to_be_bytes());
        bytes[RECORDS_COUNT_AT..][..4].copy_from_slice(&records_count.to_be_bytes());
        bytes.extend_from_slice(section);
        recompute_crc(&mut bytes);
        bytes
    }

    /// A record from raw fields, with its length prefix computed.
    fn raw_record(fields: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        put_varint(&mut out, fields.len() as i32);
        out.extend_from_slice(fields);
        out
    }

    fn owned(r: &Record<'_>, base_ts: i64) -> OwnedRecord {
        let headers = r.headers.clone().map(|(k, v)| (k.to_vec(), v.map(<[u8]>::to_vec))).collect();
        let ts = base_ts.wrapping_add(r.timestamp_delta_ms);
        (ts, r.key.map(<[u8]>::to_vec), r.value.map(<[u8]>::to_vec), headers)
    }

    #[test]
    fn round_trip_keys_values_headers_and_nulls() {
        // Proves: what the builder encodes, validate accepts and records() decodes back unchanged.
        let bytes = sample();
        let info = validate(&bytes, 1 << 20).unwrap();
        assert_eq!(info.batch_bytes, bytes.len());
        assert_eq!((info.records_count, info.last_offset_delta, info.last_offset()), (3, 2, 2));
        assert_eq!((info.producer_id, info.producer_epoch, info.base_sequence), (7, 1, 42));
        assert_eq!((info.partition_leader_epoch, info.attributes, info.compression()), (-1, 0, 0));
        assert_eq!(info.base_timestamp_ms, 1_700_000_000_000);
        assert_eq!(info.max_timestamp_ms, 1_700_000_000_005);
        let got: Vec<_> = records(&bytes).map(|r| owned(&r.unwrap(), info.base_timestamp_ms)).collect();
        let want: Vec<OwnedRecord> = vec![
            (1_700_000_000_000, Some(b"k0".to_vec()), Some(b"v0".to_vec()), vec![(b"h".to_vec(), Some(b"x".to_vec()))]),
            (1_700_000_000_005, None, Some(Vec::new()), vec![]),
            (1_699_999_999_990, Some(Vec::new()), None, vec![(b"a".to_vec(), None), (Vec::new(), Some(b"z".to_vec()))]),
        ];
        assert_eq!(got, want);
        for (i, r) in records(&bytes).enumerate() {
            assert_eq!(r.unwrap().offset_delta as usize, i);
        }
        fuzz_check(&bytes);
    }

    #[test]
    fn every_byte_flip_inside_the_crc_range_is_detected() {
        // Proves: any single-byte change is refused except in baseOffset and leader epoch, which the CRC does not cover.
        let bytes = sample();
        for at in 0..bytes.len() {
            for mask in [0x01, 0x02, 0x04, 0x08, 0x10, 0x20, 0x40, 0x80, 0xff] {
                let mut flipped = bytes.clone();
                flipped[at] ^= mask;
                let outcome = validate(&flipped, 1 << 20);
                let unprotected = at < 8 || (LEADER_EPOCH_AT..MAGIC_AT).contains(&at);
                assert_eq!(outcome.is_ok(), unprotected, "byte {at} ^ {mask:#x}: {outcome:?}");
                fuzz_check(&flipped);
            }
        }
    }

    #[test]
    fn every_truncation_is_refused_without_panicking() {
        // Proves: every proper prefix of a batch fails validate, and the decoders stay in bounds on it.
        let bytes = sample();
        for len in 0..bytes.len() {
            let cut = &bytes[..len];
            let err = validate(cut, 1 << 20).unwrap_err();
            if len < BATCH_HEADER_BYTES {
                assert_eq!(err, BatchError::Truncated { needed: BATCH_HEADER_BYTES, got: len });
                assert_eq!(parse_header(cut), Err(err));
            } else {
                let declared = bytes.len() as u64;
                assert_eq!(err, BatchError::LengthMismatch { declared, actual: len as u64 });
                assert_eq!(parse_header(cut).unwrap().batch_bytes, bytes.len());
            }
            let last = records(cut).last().expect("a truncated batch yields an error");
            assert!(last.is_err(), "len {len}: {last:?}");
            fuzz_check(cut);
        }
    }

    #[test]
    fn set_base_offset_keeps_the_batch_valid() {
        // Proves: rewriting baseOffset needs no CRC update and changes nothing else.
        let mut bytes = sample();
        let before = validate(&bytes, 1 << 20).unwrap();
        set_base_offset(&mut bytes, 1_000_000);
        let after = validate(&bytes, 1 << 20).unwrap();
        assert_eq!(after, BatchInfo { base_offset: 1_000_000, ..before });
        assert_eq!(after.last_offset(), 1_000_002);
    }

    #[test]
    fn recompute_crc_seals_patched_fields() {
        // Proves: a field patched inside the CRC range is refused until recompute_crc, then accepted.
        let mut bytes = sample();
        bytes[BASE_SEQUENCE_AT..][..4].copy_from_slice(&99i32.to_be_bytes());
        assert!(matches!(validate(&bytes, 1 << 20), Err(BatchError::BadCrc { .. })));
        recompute_crc(&mut bytes);
        assert_eq!(validate(&bytes, 1 << 20).unwrap().base_sequence, 99);
    }

    #[test]
    fn huge_declared_lengths_are_refused_not_allocated() {
        // Proves: lengths claiming up to 2 GiB are checked against the bytes present and give BadRecord at once.
        let huge = i32::MAX;
        let mut key = vec![0, 0, 0];
        put_varint(&mut key, huge);
        let mut value = vec![0, 0, 0, 1];
        put_varint(&mut value, huge);
        let mut header_count = vec![0, 0, 0, 1, 1];
        put_varint(&mut header_count, huge);
        let mut header_key = vec![0, 0, 0, 1, 1, 2];
        put_varint(&mut header_key, huge);
        for fields in [key, value, header_count, header_key] {
            let bytes = raw_batch(1, &raw_record(&fields));
            assert_eq!(validate(&bytes, 1 << 20), Err(BatchError::BadRecord { index: 0 }), "{fields:?}");
            fuzz_check(&bytes);
        }
        // The record's own length prefix claiming 2 GiB.
        let mut section = Vec::new();
        put_varint(&mut section, huge);
        section.extend_from_slice(&[0, 0, 0, 1, 1, 0]);
        let bytes = raw_batch(1, &section);
        assert_eq!(validate(&bytes, 1 << 20), Err(BatchError::BadRecord { index: 0 }));
    }

    #[test]
    fn malformed_records_are_refused() {
        // Proves: bad varints, negative lengths, null header keys, slack and non-dense offset deltas are BadRecord.
        let cases: [&[u8]; 8] = [
            &[0, 0, 2, 1, 1, 0],                                  // offsetDelta 1 for record 0
            &[0, 0, 0, 3, 1, 0],                                  // keyLength -2
            &[0, 0, 0, 1, 1, 1],                                  // headersCount -1
            &[0, 0, 0, 1, 1, 2, 1, 1],                            // header key null
            &[0, 0, 0, 1, 1, 0, 0],                               // a byte of slack after the fields
            &[0, 0, 0, 1, 1],                                     // headersCount missing
            &[0, 0, 0xff, 0xff, 0xff, 0xff, 0xff, 0x0f, 1, 1, 0], // offsetDelta in 6 bytes
            &[0, 0, 0xff, 0xff, 0xff, 0xff, 0x1f, 1, 1, 0],       // varint wider than 32 bits
        ];
        for fields in cases {
            let bytes = raw_batch(1, &raw_record(fields));
            assert_eq!(validate(&bytes, 1 << 20), Err(BatchError::BadRecord { index: 0 }), "{fields:?}");
            assert_eq!(records(&bytes).collect::<Vec<_>>(), vec![Err(BatchError::BadRecord { index: 0 })]);
        }
        // A bad second record is reported by its index, after the good first one.
        let mut section = raw_record(&[0, 0, 0, 1, 1, 0]);
        section.extend(raw_record(&[0, 0, 0, 1, 1, 0]));
        let bytes = raw_batch(2, &section);
        assert_eq!(validate(&bytes, 1 << 20), Err(BatchError::BadRecord { index: 1 }));
        let walked: Vec<_> = records(&bytes).collect();
        assert!(walked[0].is_ok());
        assert_eq!(walked[1], Err(BatchError::BadRecord { index: 1 }));
    }

    #[test]
    fn records_count_mismatch_is_detected() {
        // Proves: a recordsCount above or below the records present is BadRecordCount, and zero is Empty.
        let bytes = sample();
        for declared in [2i32, 4] {
            let mut patched = bytes.clone();
            patched[RECORDS_COUNT_AT..][..4].copy_from_slice(&declared.to_be_bytes());
            patched[LAST_OFFSET_DELTA_AT..][..4].copy_from_slice(&(declared - 1).to_be_bytes());
            recompute_crc(&mut patched);
            assert_eq!(validate(&patched, 1 << 20), Err(BatchError::BadRecordCount { declared, found: 3 }));
        }
        assert_eq!(validate(&BatchBuilder::new(0).finish(), 1 << 20), Err(BatchError::Empty));
        assert_eq!(validate(&raw_batch(-5, &[]), 1 << 20), Err(BatchError::Empty));
        let mut patched = bytes;
        patched[LAST_OFFSET_DELTA_AT..][..4].copy_from_slice(&5i32.to_be_bytes());
        recompute_crc(&mut patched);
        let err = validate(&patched, 1 << 20);
        assert_eq!(err, Err(BatchError::BadLastOffsetDelta { delta: 5, records: 3 }));
    }

    #[test]
    fn compressed_batches_are_refused() {
        // Proves: any compression codec in the attributes is UnsupportedCompression, in validate and in records().
        for codec in 1..=7u8 {
            let mut bytes = sample();
            bytes[ATTRIBUTES_AT + 1] |= codec;
            recompute_crc(&mut bytes);
            let err = BatchError::UnsupportedCompression(codec);
            assert_eq!(validate(&bytes, 1 << 20), Err(err.clone()));
            assert_eq!(records(&bytes).collect::<Vec<_>>(), vec![Err(err)]);
        }
        // Other attribute bits (timestamp type, transactional) are accepted.
        let mut bytes = sample();
        bytes[ATTRIBUTES_AT + 1] |= 0x18;
        recompute_crc(&mut bytes);
        assert!(validate(&bytes, 1 << 20).is_ok());
    }

    #[test]
    fn header_errors_come_in_order() {
        // Proves: TooLarge is checked first, then magic, batchLength and length, each with its own error.
        let bytes = sample();
        let len = bytes.len();
        assert_eq!(validate(&bytes, len - 1), Err(BatchError::TooLarge { bytes: len, max_bytes: len - 1 }));
        let mut bad_magic = bytes.clone();
        bad_magic[MAGIC_AT] = 1;
        assert_eq!(validate(&bad_magic, 1 << 20), Err(BatchError::BadMagic(1)));
        for (batch_length, declared) in [(48, 60), (0, 12), (-1, 11), (i32::MIN, 0)] {
            let mut short = bytes.clone();
            short[BATCH_LENGTH_AT..][..4].copy_from_slice(&i32::to_be_bytes(batch_length));
            let err = BatchError::LengthMismatch { declared, actual: len as u64 };
            assert_eq!(parse_header(&short), Err(err.clone()));
            assert_eq!(validate(&short, 1 << 20), Err(err));
        }
        let mut trailing = bytes.clone();
        trailing.push(0);
        let err = BatchError::LengthMismatch { declared: len as u64, actual: len as u64 + 1 };
        assert_eq!(validate(&trailing, 1 << 20), Err(err));
    }

    #[test]
    fn concatenated_batches_walk_by_header() {
        // Proves: parse_header and records() read one batch from the front of a longer buffer, as callers walk logs.
        let mut buf = Vec::new();
        let mut sizes = Vec::new();
        for n in 1..=3 {
            let mut b = BatchBuilder::new(n);
            for i in 0..n {
                b.push(n + i, None, Some(&[n as u8; 5]), &[]);
            }
            sizes.push(b.encoded_bytes());
            b.finish_into(&mut buf);
        }
        let mut at = 0;
        for (n, size) in (1..=3).zip(sizes) {
            let info = parse_header(&buf[at..]).unwrap();
            assert_eq!(info.batch_bytes, size);
            assert_eq!(records(&buf[at..]).count(), n);
            validate(&buf[at..at + size], 1 << 20).unwrap();
            at += size;
        }
        assert_eq!(at, buf.len());
    }

    #[test]
    fn varints_round_trip_at_their_limits() {
        // Proves: the zigzag encoders and decoders agree at the extremes, and overlong or too-wide encodings are refused.
        for v in [0, 1, -1, 63, -64, 64, i32::MAX, i32::MIN] {
            let mut out = Vec::new();
            put_varint(&mut out, v);
            assert_eq!(out.len(), varint_bytes(zigzag32(v).into()));
            let mut r = Reader { rest: &out };
            assert_eq!((r.varint(), r.rest.len()), (Some(v), 0));
        }
        for v in [0, -1, i64::from(i32::MIN) - 1, i64::MAX, i64::MIN] {
            let mut out = Vec::new();
            put_varlong(&mut out, v);
            assert_eq!(out.len(), varint_bytes(zigzag64(v)));
            let mut r = Reader { rest: &out };
            assert_eq!((r.varlong(), r.rest.len()), (Some(v), 0));
        }
        let too_long = [0xff; 11];
        assert_eq!(Reader { rest: &too_long }.varlong(), None);
        let mut wide = [0xff; 10];
        wide[9] = 0x02; // bit 64
        assert_eq!(Reader { rest: &wide }.varlong(), None);
        // Overlong but in range: Kafka accepts these, so do we.
        assert_eq!(Reader { rest: &[0x82, 0x80, 0x00] }.varint(), Some(1));
    }

    /// xorshift64: enough randomness for property loops, no dependency.
    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }
        fn below(&mut self, n: u64) -> u64 {
            self.next() % n
        }
        /// Null one time in four, else up to `typical` bytes, and one time
        /// in ten up to 30 times that, so some records span many varint sizes.
        fn bytes(&mut self, typical: u64) -> Option<Vec<u8>> {
            if self.below(4) == 0 {
                return None;
            }
            let len_max = if self.below(10) == 0 { 30 * typical } else { typical };
            let len = self.below(len_max + 1);
            Some((0..len).map(|_| self.next() as u8).collect())
        }
    }

    #[test]
    fn random_batches_round_trip() {
        // Proves: for 500 random batches, records decode to exactly what was pushed and every fuzz property holds.
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        for round in 0..500 {
            let base_ts = rng.next() as i64 >> rng.below(64);
            let mut builder = BatchBuilder::new(base_ts);
            let mut pushed: Vec<OwnedRecord> = Vec::new();
            for _ in 0..1 + rng.below(20) {
                let ts = if rng.below(8) == 0 { rng.next() as i64 } else { base_ts.wrapping_add(rng.below(5000) as i64 - 100) };
                let key = rng.bytes(10);
                let value = rng.bytes(100);
                let headers: Vec<(Vec<u8>, Option<Vec<u8>>)> =
                    (0..rng.below(4)).map(|_| (rng.bytes(10).unwrap_or_default(), rng.bytes(30))).collect();
                let header_refs: Vec<(&[u8], Option<&[u8]>)> = headers.iter().map(|(k, v)| (k.as_slice(), v.as_deref())).collect();
                builder.push(ts, key.as_deref(), value.as_deref(), &header_refs);
                pushed.push((ts, key, value, headers));
            }
            assert_eq!(builder.len(), pushed.len());
            let expected_bytes = builder.encoded_bytes();
            let bytes = builder.finish();
            assert_eq!(bytes.len(), expected_bytes);
            let info = validate(&bytes, bytes.len()).unwrap_or_else(|e| panic!("round {round}: {e:?}"));
            assert_eq!(info.max_timestamp_ms, pushed.iter().map(|r| r.0).max().unwrap());
            let got: Vec<_> = records(&bytes).map(|r| owned(&r.unwrap(), base_ts)).collect();
            assert_eq!(got, pushed, "round {round}");
            fuzz_check(&bytes);
            let mut corrupted = bytes.clone();
            let at = CRC_AT + rng.below((bytes.len() - CRC_AT) as u64) as usize;
            corrupted[at] ^= 1 << rng.below(8);
            assert!(validate(&corrupted, corrupted.len()).is_err(), "round {round}: flip at {at}");
            fuzz_check(&corrupted);
        }
    }

    #[test]
    fn builder_appends_and_reports_its_size() {
        // Proves: finish_into appends after existing bytes, and len/is_empty/encoded_bytes match what is written.
        let mut b = BatchBuilder::new(5);
        assert!(b.is_empty());
        assert_eq!(b.encoded_bytes(), BATCH_HEADER_BYTES);
        b.push(6, Some(b"key"), Some(b"value"), &[]);
        assert_eq!((b.len(), b.is_empty()), (1, false));
        let size = b.encoded_bytes();
        let mut out = b"prefix".to_vec();
        b.finish_into(&mut out);
        assert_eq!(&out[..6], b"prefix");
        assert_eq!(out.len(), 6 + size);
        assert_eq!(validate(&out[6..], size).unwrap().max_timestamp_ms, 6);
    }
}
