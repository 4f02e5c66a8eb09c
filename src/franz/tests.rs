use super::*;

/// A stream of three items over indices ts and seq, as Franz's writer lays it out.
fn sample() -> (Vec<u8>, Vec<u8>, Vec<u8>) {
    let items: Vec<(Vec<i64>, &[u8])> = vec![(vec![-5, 1], b"abc"), (vec![-5, 2], b""), (vec![7, 3], b"de")];
    encode(&["ts", "seq"], &items)
}

fn le(words: &[i64]) -> Vec<u8> {
    words.iter().flat_map(|w| w.to_le_bytes()).collect()
}

// Proves the encoder writes Franz's layout byte for byte: names each with
// a newline, per item the end offset then the values (signed, two's
// complement), payloads back to back with an empty one taking no bytes.
#[test]
fn encodes_franz_layout() {
    let (indices, offsets, payloads) = sample();
    assert_eq!(indices, b"ts\nseq\n");
    assert_eq!(offsets, le(&[3, -5, 1, 3, -5, 2, 5, 7, 3]));
    assert_eq!(payloads, b"abcde");
    assert_eq!(encode_indices::<&str>(&[]), b"", "no indices is an empty file");
}

// Proves decoding gives back every item's values and payload, empty ones
// included, and an empty stream decodes to nothing.
#[test]
fn decodes_what_it_encodes() {
    let (indices, offsets, payloads) = sample();
    let (names, items) = decode(&indices, &offsets, &payloads).unwrap();
    assert_eq!(names, ["ts", "seq"]);
    let expected: Vec<(Vec<i64>, &[u8])> = vec![(vec![-5, 1], b"abc"), (vec![-5, 2], b""), (vec![7, 3], b"de")];
    assert_eq!(items, expected);
    assert_eq!(decode(b"", b"", b"").unwrap(), (vec![], vec![]));
    let (names, items) = decode(b"", &le(&[0, 0, 2]), b"hi").unwrap();
    assert!(names.is_empty());
    assert_eq!(items, [(vec![], &b""[..]), (vec![], &b""[..]), (vec![], &b"hi"[..])]);
}

// Proves `indices` is read as Franz's reader splits lines: a last name
// without its newline counts, an empty file is no indices, and a name Strom
// refuses (Franz's own `Identity ""`, a space, too many, twice) is named
// with its line and byte.
#[test]
fn index_names() {
    assert_eq!(decode_indices(b"ts\nseq").unwrap(), ["ts", "seq"]);
    assert_eq!(decode_indices(b"").unwrap(), Vec::<String>::new());
    let e = decode_indices(b"\n").unwrap_err();
    assert_eq!(e, FranzError::IndexName { line: 1, at_byte: 0, name: String::new() });
    let e = decode_indices(b"ts\nbad name\n").unwrap_err();
    assert_eq!(e, FranzError::IndexName { line: 2, at_byte: 3, name: "bad name".into() });
    assert!(e.to_string().starts_with("indices: byte 3: line 2: index name \"bad name\" is not a valid Strom name"), "{e}");
    let e = decode_indices(b"a\nb\na\n").unwrap_err();
    assert_eq!(e, FranzError::IndexDuplicate { line: 3, at_byte: 4, name: "a".into() });
    let nine: Vec<String> = (0..9).map(|i| format!("i{i}")).collect();
    let e = decode_indices(&encode_indices(&nine)).unwrap_err();
    assert_eq!(e, FranzError::TooManyIndices { count: 9, at_byte: 24 });
    assert!(matches!(decode_indices(&[b'a'; INDICES_BYTES_MAX + 1]), Err(FranzError::IndicesTooLong { .. })));
    assert!(matches!(decode_indices(b"\xff\n"), Err(FranzError::IndexName { line: 1, .. })));
}

// Proves each lie in `offsets` or `payloads` is refused, naming the file,
// the item and the byte where the lie starts.
#[test]
fn lies_are_refused_where_they_are() {
    let (indices, offsets, payloads) = sample();
    let refused = |offsets: &[u8], payloads: &[u8]| decode(&indices, offsets, payloads).unwrap_err();

    let e = refused(&offsets[..offsets.len() - 1], &payloads);
    assert_eq!(e, FranzError::OffsetsTruncated { offsets_bytes: 71, entry_bytes: 24, at_byte: 48 });
    assert!(e.to_string().starts_with("offsets: byte 48: the file is 71 bytes, not a whole number of 24-byte entries"), "{e}");

    let e = refused(&offsets, &payloads[..4]);
    assert_eq!(e, FranzError::EndBeyondPayloads { item: 2, at_byte: 48, end_byte: 5, payloads_bytes: 4 });
    assert_eq!((e.file(), e.at_byte()), ("offsets", 48));

    let mut back = offsets.clone();
    back[24..32].copy_from_slice(&2u64.to_le_bytes());
    assert_eq!(refused(&back, &payloads), FranzError::EndDecreasing { item: 1, at_byte: 24, end_byte: 2, previous: 3 });

    let mut lower = offsets.clone();
    lower[64..72].copy_from_slice(&1i64.to_le_bytes());
    let e = refused(&lower, &payloads);
    assert_eq!(e, FranzError::IndexDecreasing { item: 2, at_byte: 64, index: "seq".into(), value: 1, previous: 2 });
    assert!(e.to_string().contains("index seq value 1 is below the previous item's 2"), "{e}");

    let mut longer = payloads.clone();
    longer.extend_from_slice(b"xy");
    let e = refused(&offsets, &longer);
    assert_eq!(e, FranzError::TrailingPayloads { payloads_bytes: 7, last_end: 5 });
    assert_eq!(e.to_string(), "payloads: byte 5: payloads is 7 bytes but the last item ends at 5: 2 bytes belong to no item");
    assert_eq!(decode(b"", b"", b"x").unwrap_err(), FranzError::TrailingPayloads { payloads_bytes: 1, last_end: 0 });
}

// Proves the streaming check reports the largest payload (which the import
// holds against the server's batch limit) and the item count up front.
#[test]
fn largest_item_and_count() {
    let (indices, offsets, payloads) = sample();
    let names = decode_indices(&indices).unwrap();
    let mut check = OffsetsCheck::new(&names, offsets.len() as u64, payloads.len() as u64).unwrap();
    assert_eq!(check.item_count(), 3);
    for entry in offsets.chunks_exact(check.entry_bytes()) {
        check.next(entry).unwrap();
    }
    check.finish().unwrap();
    assert_eq!(check.largest(), Some((3, 0)));
}

// Proves the fuzz seeds are what their names say and pass the fuzz check,
// and the split of a fuzz input gives back the three files it joined.
#[test]
fn fuzz_seeds_and_split() {
    for (name, data) in fuzz_seeds() {
        fuzz_check(&data);
        let (i, o, p) = fuzz_split(&data);
        assert_eq!(decode(i, o, p).is_ok(), name.starts_with("valid-"), "seed {name}");
    }
    assert_eq!(fuzz_split(&fuzz_join(b"a\n", b"12345678", b"zz")), (&b"a\n"[..], &b"12345678"[..], &b"zz"[..]));
    for short in [&b""[..], b"\x05", b"\x05\x00\x09"] {
        fuzz_check(short);
    }
}
