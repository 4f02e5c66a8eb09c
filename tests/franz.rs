//! Franz interop (issue 17 item 3) against a real `strom serve`, through
//! the binary: `strom export --franz` writes Franz's stream layout exactly
//! (checked against a layout this file computes on its own), `strom import
//! --franz` reads one this file wrote byte by byte, a round trip export ->
//! import -> export is byte for byte, and every lying input is refused with
//! a message naming the file and byte, no topic created and nothing written.
mod harness;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use harness::serve::Serve;
use harness::{Rng, test_dir};
use strom::client::Client;
use strom::wire::batch::BatchBuilder;

fn strom(addr: SocketAddr, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_strom")).args(args).env("STROM_ADDR", addr.to_string()).output().unwrap()
}

/// `strom ARGS` that must exit 0: its stdout.
fn ok(addr: SocketAddr, args: &[&str]) -> String {
    let out = strom(addr, args);
    assert!(out.status.success(), "strom {args:?} failed: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

/// `strom ARGS` that must fail: its stderr.
fn refused(addr: SocketAddr, args: &[&str]) -> String {
    let out = strom(addr, args);
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(1), "strom {args:?} should have failed; stdout {:?}", String::from_utf8_lossy(&out.stdout));
    err
}

/// Franz's layout, written out here from first principles (not with
/// `strom::franz`): names each with a newline; per item its u64 end then
/// its i64 values, little-endian; payloads back to back.
/// A stream's three files: indices, offsets, payloads.
type Files = (Vec<u8>, Vec<u8>, Vec<u8>);

fn franz_files(names: &[&str], items: &[(Vec<i64>, Vec<u8>)]) -> Files {
    let indices: Vec<u8> = names.iter().flat_map(|n| format!("{n}\n").into_bytes()).collect();
    let (mut offsets, mut payloads) = (Vec::new(), Vec::new());
    for (values, payload) in items {
        payloads.extend_from_slice(payload);
        offsets.extend_from_slice(&(payloads.len() as u64).to_le_bytes());
        for v in values {
            offsets.extend_from_slice(&v.to_le_bytes());
        }
    }
    (indices, offsets, payloads)
}

fn write_stream(dir: &Path, files: &Files) {
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(dir.join("indices"), &files.0).unwrap();
    std::fs::write(dir.join("offsets"), &files.1).unwrap();
    std::fs::write(dir.join("payloads"), &files.2).unwrap();
}

fn read_stream(dir: &Path) -> Files {
    let read = |f: &str| std::fs::read(dir.join(f)).unwrap_or_else(|e| panic!("{}/{f}: {e}", dir.display()));
    (read("indices"), read("offsets"), read("payloads"))
}

fn path(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// 10,000 items over three indices: payloads of random sizes (a tenth
/// empty), ts non-decreasing with repeats, seq increasing, and an index
/// that stays negative (the values are signed).
fn random_items(rng: &mut Rng) -> Vec<(Vec<i64>, Vec<u8>)> {
    let (mut ts, mut seq, mut neg) = (1_764_842_400_000i64, 0i64, i64::MIN);
    (0..10_000)
        .map(|_| {
            let size = if rng.below(10) == 0 { 0 } else { rng.below(1_500) as usize };
            let payload: Vec<u8> = (0..size).map(|_| rng.next() as u8).collect();
            ts += rng.below(3) as i64;
            seq += 1;
            neg += rng.below(1 << 20) as i64;
            (vec![ts, seq, neg], payload)
        })
        .collect()
}

/// Produces `items` to partition 0 of `topic` with keys and an extra header
/// on every record (which export must drop), in batches of 100.
fn produce(client: &mut Client, topic: &str, names: &[&str], items: &[(Vec<i64>, Vec<u8>)]) {
    for chunk in items.chunks(100) {
        let mut b = BatchBuilder::new(1_000);
        for (i, (values, payload)) in chunk.iter().enumerate() {
            let bytes: Vec<[u8; 8]> = values.iter().map(|v| v.to_le_bytes()).collect();
            let mut headers: Vec<(&[u8], Option<&[u8]>)> = names.iter().zip(&bytes).map(|(n, v)| (n.as_bytes(), Some(&v[..]))).collect();
            headers.push((b"extra", Some(b"dropped")));
            let key = format!("key-{i}");
            b.push(1_000 + i as i64, Some(key.as_bytes()), Some(payload), &headers);
        }
        client.produce(topic, 0, &b.finish()).unwrap();
    }
}

// Proves export writes exactly the Franz layout of the partition's records
// (3 indices, 10,000 records of random sizes including 0, keys and other
// headers dropped), and export -> import -> export gives the same bytes.
#[test]
fn round_trip_is_byte_for_byte() {
    let dir = test_dir("franz-round-trip");
    let s = Serve::on(&dir.join("data")).cores(1).start();
    let a = s.addr;
    let names = ["ts", "seq", "neg"];
    ok(a, &["topic", "create", "src", "--index", "ts", "--index", "seq", "--index", "neg"]);
    let items = random_items(&mut Rng(0x5eed_f4a2));
    produce(&mut s.client(), "src", &names, &items);
    let expected = franz_files(&names, &items);
    assert!(items.iter().filter(|(_, p)| p.is_empty()).count() > 500, "empty payloads are covered");

    let (first, second) = (dir.join("first"), dir.join("second"));
    let said = ok(a, &["export", "src", "--partition", "0", "--franz", path(&first)]);
    assert!(said.starts_with("exported 10000 records of src/0"), "{said}");
    let got = read_stream(&first);
    assert_eq!(got.0, expected.0, "indices");
    assert_eq!(got.1.len(), expected.1.len(), "offsets length");
    assert!(got.1 == expected.1, "offsets differ from the independent layout");
    assert!(got.2 == expected.2, "payloads differ from the independent layout");

    let said = ok(a, &["import", "--franz", path(&first), "copy"]);
    assert_eq!(said.trim(), "imported 10000 records into copy/0 (offsets 0..=9999)");
    ok(a, &["export", "copy", "--franz", path(&second)]);
    assert!(read_stream(&second) == got, "export -> import -> export changed the bytes");
    let leftovers: Vec<_> = std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert_eq!(leftovers.len(), 3, "only data, first and second, no temporary directory: {leftovers:?}");
}

// Proves a stream written by hand (not by Strom) is imported item by item:
// every value and index value read back through `strom query --long`, no
// key, only the index headers, and the import time as timestamp; a stream
// with an empty `indices` makes a topic without indices; importing into an
// existing topic with the same indices appends after what is there.
#[test]
fn imports_an_independently_written_stream() {
    let dir = test_dir("franz-import");
    let s = Serve::on(&dir.join("data")).cores(1).start();
    let a = s.addr;
    let items: Vec<(Vec<i64>, Vec<u8>)> = (0..300i64)
        .map(|i| (vec![i / 3 - 50, -1_000_000 + i], if i % 7 == 0 { vec![] } else { format!("item {i}").into_bytes() }))
        .collect();
    let stream = dir.join("hand");
    write_stream(&stream, &franz_files(&["ts", "offset.x"], &items));
    let before_ms = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as i64;
    ok(a, &["import", "--franz", path(&stream), "hand"]);
    let after_ms = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as i64;
    let lines: Vec<String> = ok(a, &["query", "hand", "--long"]).lines().map(str::to_string).collect();
    let expected: Vec<String> =
        items.iter().enumerate().map(|(o, (v, p))| format!("{o}\t{},{}\t{}", v[0], v[1], String::from_utf8_lossy(p))).collect();
    assert_eq!(lines, expected);
    let json = ok(a, &["consume", "hand", "--partition", "0", "--json"]);
    let records: Vec<serde_json::Value> = json.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(records.len(), items.len());
    for r in &records {
        assert!(r["key"].is_null(), "{r}");
        let headers: Vec<&str> = r["headers"].as_array().unwrap().iter().map(|h| h[0].as_str().unwrap()).collect();
        assert_eq!(headers, ["ts", "offset.x"], "{r}");
        let t = r["timestamp_ms"].as_i64().unwrap();
        assert!((before_ms..=after_ms).contains(&t), "timestamp {t} is not the import's time {before_ms}..={after_ms}");
    }

    let more: Vec<(Vec<i64>, Vec<u8>)> = vec![(vec![50, 0], b"later".to_vec())];
    write_stream(&dir.join("more"), &franz_files(&["ts", "offset.x"], &more));
    ok(a, &["import", "--franz", path(&dir.join("more")), "hand"]);
    assert_eq!(ok(a, &["query", "hand", "--from", "-1", "--long"]), "300\t50,0\tlater\n");

    write_stream(&dir.join("plain"), &franz_files(&[], &[(vec![], b"a".to_vec()), (vec![], vec![]), (vec![], b"c".to_vec())]));
    ok(a, &["import", "--franz", path(&dir.join("plain")), "plain", "--partition", "1"]);
    let described = ok(a, &["topic", "describe", "plain", "--json"]);
    let d: serde_json::Value = serde_json::from_str(&described).unwrap();
    assert_eq!(d["indices"].as_array().map(Vec::len), Some(0), "{described}");
    assert_eq!(d["partitions"].as_array().map(Vec::len), Some(2), "partition 1 needs two: {described}");
    assert_eq!(ok(a, &["query", "plain", "--partition", "1"]), "a\n\nc\n");
}

/// A valid stream of 4 items over ts and seq, to spoil.
fn good() -> Files {
    franz_files(
        &["ts", "seq"],
        &[(vec![1, 1], b"ab".to_vec()), (vec![2, 2], vec![]), (vec![2, 3], b"cde".to_vec()), (vec![3, 4], b"f".to_vec())],
    )
}

// Proves every lying input is refused before anything is written, with a
// message naming the file and the byte (or what is wrong): truncated
// offsets, an end beyond payloads, decreasing ends, decreasing index
// values, trailing payload bytes, an invalid topic name, an invalid index
// name, each missing file, and an existing topic with other indices. No
// topic is created, and the existing topic gets no record.
#[test]
fn lying_inputs_are_refused_and_nothing_is_written() {
    let dir = test_dir("franz-lies");
    let s = Serve::on(&dir.join("data")).cores(1).start();
    let a = s.addr;
    let (indices, offsets, payloads) = good();
    let with_offsets = |edit: &dyn Fn(&mut Vec<u8>)| {
        let mut o = offsets.clone();
        edit(&mut o);
        (indices.clone(), o, payloads.clone())
    };
    let set = |at: usize, v: i64| move |o: &mut Vec<u8>| o[at..at + 8].copy_from_slice(&v.to_le_bytes());
    let cases: Vec<(&str, Files, &str)> = vec![
        (
            "truncated",
            with_offsets(&|o| o.truncate(o.len() - 3)),
            "offsets: byte 72: the file is 93 bytes, not a whole number of 24-byte entries",
        ),
        ("beyond", with_offsets(&set(48, 7)), "offsets: byte 48: item 2 ends at payload byte 7, beyond payloads' 6 bytes"),
        ("decreasing", with_offsets(&set(24, 1)), "offsets: byte 24: item 1 ends at payload byte 1, before the previous item's end 2"),
        ("index-down", with_offsets(&set(56, 1)), "offsets: byte 56: item 2: index ts value 1 is below the previous item's 2"),
        (
            "trailing",
            (indices.clone(), offsets.clone(), [&payloads[..], b"zz"].concat()),
            "payloads: byte 6: payloads is 8 bytes but the last item ends at 6",
        ),
        (
            "bad-index",
            (b"ts\nno way\n".to_vec(), offsets.clone(), payloads.clone()),
            "indices: byte 3: line 2: index name \"no way\" is not a valid Strom name",
        ),
        ("empty-index", (b"\n".to_vec(), vec![], vec![]), "indices: byte 0: line 1: index name \"\" is not a valid Strom name"),
    ];
    for (name, files, message) in &cases {
        let stream = dir.join(name);
        write_stream(&stream, files);
        let err = refused(a, &["import", "--franz", path(&stream), name]);
        assert!(err.contains(message) && err.contains("nothing was imported"), "case {name}: {err}");
        assert!(err.contains(&format!("{}/", stream.display())), "case {name} names the stream: {err}");
    }
    let fine = dir.join("fine");
    write_stream(&fine, &good());
    let err = refused(a, &["import", "--franz", path(&fine), "no/slash"]);
    assert!(err.contains("invalid name \"no/slash\""), "{err}");
    for file in ["payloads", "offsets", "indices"] {
        let missing = dir.join(format!("missing-{file}"));
        write_stream(&missing, &good());
        std::fs::remove_file(missing.join(file)).unwrap();
        let err = refused(a, &["import", "--franz", path(&missing), "missing"]);
        assert!(err.contains(&format!("cannot open {}/{file}", missing.display())) && err.contains("No such file"), "{err}");
    }
    ok(a, &["topic", "create", "other", "--index", "seq", "--index", "ts"]);
    let err = refused(a, &["import", "--franz", path(&fine), "other"]);
    assert!(err.contains("topic \"other\" has indices [seq, ts], the stream has [ts, seq]"), "{err}");

    let listed = ok(a, &["topic", "list"]);
    assert_eq!(listed, "other 1\n", "no topic was created by a refused import");
    assert_eq!(ok(a, &["query", "other", "--count"]), "0\n", "nothing was appended to the existing topic");
}

// Proves export refuses a directory that exists (even empty) and an
// unknown topic or partition, leaving nothing behind; an empty partition
// exports as a valid empty stream that imports as nothing.
#[test]
fn export_refusals_leave_nothing() {
    let dir = test_dir("franz-export-refusals");
    let s = Serve::on(&dir.join("data")).cores(1).start();
    let a = s.addr;
    let out = dir.join("out");
    std::fs::create_dir(dir.join("exists")).unwrap();
    ok(a, &["topic", "create", "t", "--index", "ts"]);
    let err = refused(a, &["export", "t", "--franz", path(&dir.join("exists"))]);
    assert!(err.contains("exists; export writes a new directory"), "{err}");
    let err = refused(a, &["export", "nosuch", "--franz", path(&out)]);
    assert!(err.contains("unknown topic"), "{err}");
    let err = refused(a, &["export", "t", "--partition", "3", "--franz", path(&out)]);
    assert!(err.contains("there is no partition 3"), "{err}");
    let mut names: Vec<PathBuf> = std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().path()).collect();
    names.sort();
    assert_eq!(names, [dir.join("data"), dir.join("exists")], "no DIR and no temporary directory left");
    assert_eq!(std::fs::read_dir(dir.join("exists")).unwrap().count(), 0, "the existing DIR is untouched");

    ok(a, &["export", "t", "--franz", path(&out)]);
    assert_eq!(read_stream(&out), (b"ts\n".to_vec(), vec![], vec![]));
    assert_eq!(ok(a, &["import", "--franz", path(&out), "t2"]).trim(), "imported 0 records into t2/0 (the stream is empty)");
}

// Proves the checks that need the server: an item larger than one record
// of the server's largest batch is refused naming its entry (no topic
// created) while a 1,000,000-byte item round trips, and a stream whose
// first index values are below the partition's last record is refused
// with nothing appended.
#[test]
fn server_side_checks() {
    let dir = test_dir("franz-server-checks");
    let s = Serve::on(&dir.join("data")).cores(1).start();
    let a = s.addr;
    let too_big = dir.join("too-big");
    write_stream(&too_big, &franz_files(&["ts"], &[(vec![1], b"small".to_vec()), (vec![2], vec![7; 1_048_576])]));
    let err = refused(a, &["import", "--franz", path(&too_big), "big"]);
    assert!(err.contains("offsets: byte 16: item 1 is 1048576 bytes, more than one record can hold on this server"), "{err}");
    assert_eq!(ok(a, &["topic", "list"]), "", "no topic was created");

    let big = dir.join("big");
    write_stream(&big, &franz_files(&["ts"], &[(vec![1], vec![1; 1_000_000]), (vec![2], vec![]), (vec![2], vec![2; 1_000_000])]));
    ok(a, &["import", "--franz", path(&big), "big"]);
    ok(a, &["export", "big", "--franz", path(&dir.join("big-again"))]);
    assert!(read_stream(&dir.join("big-again")) == read_stream(&big), "1 MB items round trip");

    let low = dir.join("low");
    write_stream(&low, &franz_files(&["ts"], &[(vec![1], b"x".to_vec())]));
    let err = refused(a, &["import", "--franz", path(&low), "big"]);
    assert!(err.contains("partition 0 of \"big\" ends with index ts value 2, above the stream's first item's 1"), "{err}");
    assert_eq!(ok(a, &["query", "big", "--count"]), "3\n", "nothing was appended");
}
