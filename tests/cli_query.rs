//! Named indices and range queries through the CLI against a real `strom
//! serve`: `topic create --index`, `produce --indexed` and `query` in every
//! case the issue names (offset and index bounds, negative offsets,
//! first/last/all/count, --long, empty ranges, an end in the future that
//! arrives, a wait that runs out, refused values never stored), and a
//! restart between produce and query.
mod harness;

use std::io::Write;
use std::net::SocketAddr;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use harness::serve::Serve;
use harness::{skip, test_dir};

fn main() {
    skip::main(vec![
        skip::trial("query_cases", &[], query_cases),
        skip::trial("waits_for_the_end", &[], waits_for_the_end),
        skip::trial("refused_values_and_restart", &[], refused_values_and_restart),
        skip::trial("a_waiting_query_is_cancelled", &[], a_waiting_query_is_cancelled),
        skip::trial("a_subscription_starts_at_an_index_value", &[], a_subscription_starts_at_an_index_value),
    ]);
}

fn run(addr: SocketAddr, args: &[&str], stdin: &[u8]) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_strom"))
        .args(args)
        .env("STROM_ADDR", addr.to_string())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let _ = child.stdin.take().unwrap().write_all(stdin);
    child.wait_with_output().unwrap()
}

/// `strom ARGS` that must exit 0: its stdout lines.
fn ok(addr: SocketAddr, args: &[&str], stdin: &[u8]) -> Vec<String> {
    let out = run(addr, args, stdin);
    assert!(out.status.success(), "strom {args:?} failed: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap().lines().map(str::to_string).collect()
}

fn q(addr: SocketAddr, args: &[&str]) -> Vec<String> {
    let mut all = vec!["query", "ix"];
    all.extend_from_slice(args);
    ok(addr, &all, b"")
}

/// ts: 10 20 20 20 30 40; seq 1..=6; values a..f (offsets 0..=5).
fn setup(addr: SocketAddr) {
    ok(addr, &["topic", "create", "ix", "--index", "ts", "--index", "seq"], b"");
    ok(addr, &["produce", "ix", "--partition", "0", "--indexed"], b"10,1\ta\n20,2\tb\n20,3\tc\n");
    ok(addr, &["produce", "ix", "--partition", "0", "--indexed"], b"20,4\td\n30,5\te\n40,6\tf\n");
}

// Proves every bound and output form: offsets (negative from the end),
// index values (from: first at or above; to: last at or below), equal
// values never collapsed, first/last/count/all, --long, an empty range.
fn query_cases() {
    let dir = test_dir("cli-query-cases");
    let s = Serve::start(&dir, &[]);
    let a = s.addr;
    setup(a);
    assert_eq!(q(a, &[]), ["a", "b", "c", "d", "e", "f"], "the default range is the whole partition");
    assert_eq!(q(a, &["--from", "1", "--to", "3"]), ["b", "c", "d"]);
    assert_eq!(q(a, &["--from", "-2"]), ["e", "f"]);
    assert_eq!(q(a, &["--from", "0", "--to", "-3"]), ["a", "b", "c", "d"]);
    assert_eq!(q(a, &["--from", "ts=20", "--to", "ts=20"]), ["b", "c", "d"], "equal values are all kept");
    assert_eq!(q(a, &["--from", "ts=11", "--to", "ts=39"]), ["b", "c", "d", "e"]);
    assert_eq!(q(a, &["--from", "seq=3", "--to", "ts=30", "--count"]), ["3"]);
    assert_eq!(q(a, &["--from", "ts=20", "--to", "ts=30", "--first"]), ["b"]);
    assert_eq!(q(a, &["--from", "ts=20", "--to", "ts=30", "--last"]), ["e"]);
    assert_eq!(q(a, &["--from", "ts=20", "--to", "ts=20", "--long"]), ["1\t20,2\tb", "2\t20,3\tc", "3\t20,4\td"]);
    assert!(q(a, &["--from", "ts=21", "--to", "ts=29"]).is_empty(), "an empty range prints nothing");
    assert_eq!(q(a, &["--from", "ts=21", "--to", "ts=29", "--count"]), ["0"]);
    assert!(q(a, &["--from", "4", "--to", "2"]).is_empty());
    let out = run(a, &["query", "ix", "--from", "nope=1"], b"");
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no index named \"nope\""));
}

// Proves an end that does not exist yet is waited for and answered as soon
// as it arrives (offset and index ends), and a wait that runs out prints
// what exists, says so on stderr and exits 3.
fn waits_for_the_end() {
    let dir = test_dir("cli-query-wait");
    let s = Serve::start(&dir, &[]);
    let a = s.addr;
    setup(a);
    let out = run(a, &["query", "ix", "--from", "4", "--to", "9", "--wait", "200"], b"");
    assert_eq!(out.status.code(), Some(3), "a wait that runs out exits 3");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "e\nf\n");
    assert!(String::from_utf8_lossy(&out.stderr).contains("still open"));
    let out = run(a, &["query", "ix", "--from", "ts=40", "--to", "ts=45"], b"");
    assert_eq!((out.status.code(), String::from_utf8_lossy(&out.stdout).into_owned()), (Some(3), "f\n".into()), "--wait 0 answers at once");
    for (to, line) in [("ts=45", "50,7\tg\n"), ("8", "60,8\th\n60,9\ti\n")] {
        let producer = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(300));
            ok(a, &["produce", "ix", "--partition", "0", "--indexed"], line.as_bytes())
        });
        let got = q(a, &["--from", "-1", "--to", to, "--wait", "60000"]);
        producer.join().unwrap();
        // `q` asserts exit 0: had the wait run out, the query would exit 3.
        assert!(!got.is_empty(), "the range ending at {to} printed nothing");
    }
    assert_eq!(q(a, &["--from", "ts=50", "--to", "ts=55", "--long"]), ["6\t50,7\tg"]);
}

// Proves a line out of order or malformed is refused by line, a batch
// below the stored values is refused by the server naming index and
// offset, nothing refused is stored, and queries by index answer the same
// after a restart.
fn refused_values_and_restart() {
    let dir = test_dir("cli-query-refused");
    let s = Serve::start(&dir, &[]);
    let a = s.addr;
    setup(a);
    let out = run(a, &["produce", "ix", "--partition", "0", "--indexed"], b"50,7\tg\n45,8\th\n");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("line 2: index ts value 45 is below the previous line's 50"), "{err}");
    let out = run(a, &["produce", "ix", "--partition", "0", "--indexed"], b"1,1\tlow\n");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("index ts at offset 6") && err.contains("lines 1-1"), "{err}");
    let out = run(a, &["produce", "ix", "--partition", "0", "--indexed"], b"no tab here\n");
    assert!(String::from_utf8_lossy(&out.stderr).contains("line 1: no TAB"));
    assert_eq!(q(a, &["--count"]), ["6"], "nothing refused was stored");
    drop(s);
    let s = Serve::start(&dir, &[]);
    assert_eq!(q(s.addr, &["--from", "ts=20", "--to", "ts=30"]), ["b", "c", "d", "e"]);
    let out = run(s.addr, &["produce", "ix", "--partition", "0", "--indexed"], b"39,9\tlate\n");
    assert!(String::from_utf8_lossy(&out.stderr).contains("index ts at offset 6"), "the last values survived the restart");
}

// Proves a query waiting for its end is cancelled by its request id (api
// 17): the Cancel is answered, the query ends with Cancelled, and the
// connection goes on serving; a Cancel of an id nothing waits on is refused.
fn a_waiting_query_is_cancelled() {
    use strom::client::{ClientError, OwnedResponse};
    use strom::proto::{ErrorCode, QueryEnd, Request};
    let dir = test_dir("cli-query-cancel");
    let s = Serve::start(&dir, &[]);
    setup(s.addr);
    let mut c = s.client();
    let wait_ms = 25_000;
    let query = Request::Query { topic: "ix", partition: 0, from: QueryEnd::Offset(0), to: QueryEnd::Offset(1_000), wait_ms };
    let q = c.send(&query).unwrap();
    let cancel = c.send(&Request::Cancel { request: q }).unwrap();
    let (mut cancelled, mut answered) = (false, false);
    while !(cancelled && answered) {
        let r = c.recv().unwrap();
        match r.result {
            Ok(OwnedResponse::Cancel) if r.request_id == cancel => answered = true,
            Err(ClientError::Server { code: ErrorCode::Cancelled, .. }) if r.request_id == q => cancelled = true,
            other => panic!("request {}: {other:?}", r.request_id),
        }
    }
    // Had the Cancel not reached it, the query would have answered after
    // its wait with the range open, not with Cancelled.
    let again = c.send(&Request::Cancel { request: q }).unwrap();
    let r = c.recv().unwrap();
    assert_eq!(r.request_id, again);
    assert!(matches!(r.result, Err(ClientError::Server { code: ErrorCode::InvalidArgument, .. })), "{:?}", r.result);
    assert_eq!(c.query("ix", 0, QueryEnd::Offset(0), QueryEnd::Offset(-1), Duration::ZERO).unwrap().count(), 6);
}

// Proves a subscription can start at a named index value: the first push
// starts at the first record whose value reaches it (equal values kept);
// an unknown index ends it with InvalidArgument.
fn a_subscription_starts_at_an_index_value() {
    use strom::proto::SubscribeStart;
    let dir = test_dir("cli-query-subscribe");
    let s = Serve::start(&dir, &[]);
    setup(s.addr);
    let mut c = s.client();
    let mut sub = c.subscribe("ix", 0, SubscribeStart::Index { name: "ts", value: 15 }, 1 << 20).unwrap();
    let mut from = None;
    let mut values = Vec::new();
    while values.len() < 5 {
        let push = sub.next_push().unwrap().expect("pushes until cancelled");
        from.get_or_insert(push.from_offset);
        for r in push.fetch.records_from(push.from_offset) {
            let (_, v) = r.unwrap();
            values.push(String::from_utf8(v.unwrap().to_vec()).unwrap());
        }
    }
    assert_eq!(from, Some(1), "ts=15 starts at the first record of ts 20");
    assert_eq!(values, ["b", "c", "d", "e", "f"]);
    sub.cancel().unwrap();
    let mut bad = c.subscribe("ix", 0, SubscribeStart::Index { name: "nope", value: 0 }, 1 << 20).unwrap();
    let e = bad.next_push().unwrap_err().to_string();
    assert!(e.contains("no index named"), "{e}");
}
