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

mod builder;
pub mod values;
pub use builder::BatchBuilder;

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

/// The largest compression codec a batch may name (zstd).
pub const COMPRESSION_MAX: u8 = 4;

/// Fully validates exactly one batch, cheapest checks first: size limit,
/// header, length, CRC, attributes and counts, then (uncompressed) a walk
/// of every record.
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
    if info.compression() != 0 {
        // Stored as it came (a Kafka producer's gzip, snappy, lz4 or zstd
        // batch): its bytes are covered by the CRC just checked, its
        // offsets by the header's counts; its records are the consumer's
        // to decompress. Strom reads no record of it (a topic with named
        // indices refuses it: its values cannot be read).
        return Ok(info);
    }
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
    // Kafka's codecs are 1 (gzip) to 4 (zstd); the rest name none.
    if info.compression() > COMPRESSION_MAX {
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
    if info.compression() != 0 {
        // Valid on its header, CRC and counts; its records are not read.
        assert_eq!(walked, vec![Err(BatchError::UnsupportedCompression(info.compression()))]);
        return;
    }
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
mod tests;
