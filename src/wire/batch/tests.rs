//! RecordBatch v2: validation, parsing, building and patching, against
//! hand-built and hostile batches.
use super::builder::*;
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
fn compressed_batches_are_stored_as_they_came_and_unknown_codecs_refused() {
    // Proves: Kafka's codecs (1-4) pass validation on their header, CRC
    // and counts alone (their records are not walked), records() says it
    // cannot read them, and codecs 5-7 are UnsupportedCompression.
    for codec in 1..=7u8 {
        let mut bytes = sample();
        bytes[ATTRIBUTES_AT + 1] |= codec;
        recompute_crc(&mut bytes);
        let err = BatchError::UnsupportedCompression(codec);
        if codec <= COMPRESSION_MAX {
            assert_eq!(validate(&bytes, 1 << 20).map(|i| i.compression()), Ok(codec));
            // The CRC still covers it.
            bytes[BATCH_HEADER_BYTES] ^= 1;
            assert!(matches!(validate(&bytes, 1 << 20), Err(BatchError::BadCrc { .. })));
            bytes[BATCH_HEADER_BYTES] ^= 1;
        } else {
            assert_eq!(validate(&bytes, 1 << 20), Err(err.clone()));
        }
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
