//! Named indices end to end in the embedded engine, on real io_uring and a
//! real filesystem: declared with the topic, carried as record headers,
//! checked on the way in, looked up by value, and kept across restarts
//! (from the checkpoint and from the recovery scan).
mod harness;

use harness::{read_to_end, test_dir};
use strom::catalog::TopicRetention;
use strom::config::EngineConfig;
use strom::core::query::{QueryRef, QuerySpec};
use strom::engine::Engine;
use strom::error::StromError;
use strom::wire::batch::BatchBuilder;

fn cfg() -> EngineConfig {
    EngineConfig { cores: 1, logs_on_create: 1, pin_cores: false, ..EngineConfig::small_for_tests() }
}

fn names() -> Vec<String> {
    vec!["ts".to_string(), "seq".to_string()]
}

/// A batch whose records carry (ts, seq) values, and values `prefix-i`.
fn indexed(prefix: &str, rows: &[(i64, i64)]) -> Vec<u8> {
    let mut b = BatchBuilder::new(1_000);
    for (i, (ts, seq)) in rows.iter().enumerate() {
        let (t, s) = (ts.to_le_bytes(), seq.to_le_bytes());
        let headers: [(&[u8], Option<&[u8]>); 2] = [(b"ts", Some(&t)), (b"seq", Some(&s))];
        b.push(1_000, None, Some(format!("{prefix}-{i}").as_bytes()), &headers);
    }
    b.finish()
}

fn lookup(e: &Engine, index: &str, value: i64) -> Option<u64> {
    e.offset_for_index("ix", 0, index, value, false).unwrap()
}

fn refused(r: strom::error::Result<strom::core::AppendAck>) -> (String, u64) {
    match r {
        Err(StromError::BadIndexValue { index, offset, .. }) => (index, offset),
        other => panic!("expected BadIndexValue, got {other:?}"),
    }
}

// Proves lookups by value answer the first record at or above it (equal
// values never collapse: the first of them is found), none past the last
// value, and strict lookups the first above it.
#[test]
fn lookups_by_value() {
    let dir = test_dir("named-lookups");
    let e = Engine::open(&dir, cfg()).unwrap();
    e.create_topic_indexed("ix", 1, TopicRetention::default(), &names()).unwrap();
    // ts: 10, 20, 20, 20, 30 | 30, 40; seq: 0..7
    e.append("ix", 0, indexed("a", &[(10, 0), (20, 1), (20, 2), (20, 3), (30, 4)])).unwrap();
    e.append("ix", 0, indexed("b", &[(30, 5), (40, 6)])).unwrap();
    assert_eq!(lookup(&e, "ts", i64::MIN), Some(0));
    assert_eq!(lookup(&e, "ts", 15), Some(1));
    assert_eq!(lookup(&e, "ts", 20), Some(1), "the first of equal values");
    assert_eq!(e.offset_for_index("ix", 0, "ts", 20, true).unwrap(), Some(4), "strict: the first above");
    assert_eq!(lookup(&e, "ts", 30), Some(4));
    assert_eq!(lookup(&e, "ts", 40), Some(6));
    assert_eq!(lookup(&e, "ts", 41), None, "no record reaches it yet");
    assert_eq!(lookup(&e, "seq", 5), Some(5));
    assert!(matches!(e.offset_for_index("ix", 0, "nope", 0, false), Err(StromError::InvalidArgument(_))));
    e.shutdown().unwrap();
}

// Proves a batch missing a value, with a malformed one, or going below the
// previous values (inside the batch or across batches) is refused with the
// index and the offset named, and nothing of it is stored; equal values
// across batches are accepted.
#[test]
fn bad_values_refused_and_not_stored() {
    let dir = test_dir("named-refused");
    let e = Engine::open(&dir, cfg()).unwrap();
    e.create_topic_indexed("ix", 1, TopicRetention::default(), &names()).unwrap();
    e.append("ix", 0, indexed("a", &[(10, 0), (10, 1)])).unwrap();
    assert_eq!(refused(e.append("ix", 0, indexed("x", &[(9, 2)]))), ("ts".into(), 2), "below the last batch");
    assert_eq!(refused(e.append("ix", 0, indexed("x", &[(10, 2), (11, 1)]))), ("seq".into(), 3), "decreasing inside the batch");
    let mut b = BatchBuilder::new(1_000);
    let t = 11i64.to_le_bytes();
    b.push(1_000, None, Some(b"no-seq"), &[(b"ts", Some(&t))]);
    assert_eq!(refused(e.append("ix", 0, b.finish())), ("seq".into(), 2), "missing");
    let mut b = BatchBuilder::new(1_000);
    b.push(1_000, None, Some(b"short"), &[(b"ts", Some(&t)), (b"seq", Some(&[1, 2, 3]))]);
    assert_eq!(refused(e.append("ix", 0, b.finish())), ("seq".into(), 2), "not 8 bytes");
    // A plain batch (no headers at all) is refused for the first index.
    assert_eq!(refused(e.append("ix", 0, harness::batch("plain", 1, 1_000))), ("ts".into(), 2));
    let ack = e.append("ix", 0, indexed("b", &[(10, 1), (12, 2)])).unwrap();
    assert_eq!(ack.base_offset, 2, "nothing of the refused batches was stored");
    let got: Vec<String> = read_to_end(&e, "ix", 0, 0, 1 << 20).into_iter().map(|(_, v)| v).collect();
    assert_eq!(got, ["a-0", "a-1", "b-0", "b-1"]);
    e.shutdown().unwrap();
}

fn fill(e: &Engine, batches: i64) {
    for b in 0..batches {
        let rows: Vec<(i64, i64)> = (0..50).map(|i| (b * 10 + i / 10, b * 50 + i)).collect();
        e.append("ix", 0, indexed(&format!("r{b}"), &rows)).unwrap();
    }
}

fn check(e: &Engine, batches: i64) {
    for b in (0..batches).step_by(7) {
        assert_eq!(lookup(e, "seq", b * 50 + 13), Some((b * 50 + 13) as u64));
        assert_eq!(lookup(e, "ts", b * 10 + 3), Some((b * 50 + 30) as u64), "the first record of ts {}", b * 10 + 3);
    }
    assert_eq!(lookup(e, "seq", batches * 50), None);
}

// Proves lookups and the decrease check survive a restart: from the
// checkpoint a clean stop writes, and with no checkpoint at all (the
// recovery scan reads the values back from the records).
#[test]
fn restart_keeps_indices() {
    let dir = test_dir("named-restart");
    let n = 400;
    let e = Engine::open(&dir, cfg()).unwrap();
    e.create_topic_indexed("ix", 1, TopicRetention::default(), &names()).unwrap();
    e.create_topic("plain", 1).unwrap();
    fill(&e, n);
    check(&e, n);
    e.shutdown().unwrap();

    let e = Engine::open(&dir, cfg()).unwrap();
    check(&e, n);
    assert_eq!(refused(e.append("ix", 0, indexed("x", &[(0, 0)]))).1, n as u64 * 50, "the last values came back");
    e.shutdown().unwrap();

    // No checkpoint: every value comes from the scan of the records.
    std::fs::remove_file(dir.join("log-0000").join("checkpoint")).unwrap();
    let e = Engine::open(&dir, cfg()).unwrap();
    assert!(e.recovery_reports().iter().any(|r| r.bytes_scanned > 0), "the log was scanned");
    check(&e, n);
    assert_eq!(refused(e.append("ix", 0, indexed("x", &[(n * 10, n * 50 - 2)]))), ("seq".into(), n as u64 * 50));
    e.append("ix", 0, indexed("y", &[(n * 10, n * 50)])).unwrap();
    assert_eq!(lookup(&e, "seq", n * 50), Some(n as u64 * 50));
    e.shutdown().unwrap();
}

fn spec(from: QueryRef, to: QueryRef, wait_ms: u64) -> QuerySpec {
    QuerySpec { from, to, wait_ns: wait_ms * 1_000_000 }
}

fn ix(name: &str, value: i64) -> QueryRef {
    QueryRef::Index { name: name.into(), value }
}

// Proves range bounds in-process: offsets (negative from the end when the
// query arrived), index ends (from: first at or above; to: last at or
// below, equal values all in), empty ranges, an unknown index, an end in
// the future that arrives while the query waits, and one that does not.
#[test]
fn query_bounds() {
    let dir = test_dir("named-query");
    let e = std::sync::Arc::new(Engine::open(&dir, cfg()).unwrap());
    e.create_topic_indexed("ix", 1, TopicRetention::default(), &names()).unwrap();
    e.append("ix", 0, indexed("a", &[(10, 0), (20, 1), (20, 2), (20, 3), (30, 4)])).unwrap();
    let q = |from, to| {
        let b = e.query("ix", 0, spec(from, to, 0)).unwrap();
        (b.from, b.end, b.open)
    };
    assert_eq!(q(QueryRef::Offset(0), QueryRef::Offset(-1)), (0, 5, false));
    assert_eq!(q(QueryRef::Offset(-2), QueryRef::Offset(-1)), (3, 5, false));
    assert_eq!(q(QueryRef::Offset(1), QueryRef::Offset(2)), (1, 3, false));
    assert_eq!(q(ix("ts", 20), ix("ts", 20)), (1, 4, false), "equal values are all in the range");
    assert_eq!(q(ix("ts", 15), ix("seq", 3)), (1, 4, false));
    let (from, end, _) = q(ix("ts", 21), ix("ts", 29));
    assert!(end <= from, "an empty range: {from}..{end}");
    assert_eq!(q(QueryRef::Offset(2), QueryRef::Offset(9)), (2, 5, true), "an offset end past the partition: open");
    assert_eq!(q(ix("ts", 0), ix("ts", 30)), (0, 5, true), "no value above 30 yet: open");
    assert!(matches!(e.query("ix", 0, spec(ix("nope", 0), QueryRef::Offset(-1), 0)), Err(StromError::InvalidArgument(_))));
    // An end that arrives while the query waits answers it, not the wait.
    let e2 = e.clone();
    let writer = std::thread::spawn(move || {
        std::thread::sleep(std::time::Duration::from_millis(200));
        e2.append("ix", 0, indexed("b", &[(31, 5), (40, 6)])).unwrap();
    });
    let b = e.query("ix", 0, spec(ix("ts", 25), ix("ts", 35), 60_000)).unwrap();
    writer.join().unwrap();
    assert_eq!((b.from, b.end, b.open), (4, 6, false));
    let b = e.query("ix", 0, spec(QueryRef::Offset(0), QueryRef::Offset(100), 50)).unwrap();
    assert_eq!((b.end, b.open), (7, true), "a wait that runs out answers what exists");
    std::sync::Arc::try_unwrap(e).ok().expect("one engine").shutdown().unwrap();
}
