//! The record commands (`produce`, `consume`, `group`) against a real
//! `strom serve`, as a user runs them: keys, headers, timestamps, the
//! murmur2 partitioner, the all-partition merge, formats, JSON, relative
//! starts, groups, following through a restart, and each error's text.
mod harness;

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{SystemTime, UNIX_EPOCH};

use harness::serve::{HANG, Serve};
use harness::{skip, test_dir};
use libtest_mimic::{Completion, Failed, Trial};

// The tests; the one that needs the default port free reports itself
// ignored, with the reason, when another process holds it (never a pass).
fn main() {
    skip::main(vec![
        skip::trial("keys_headers_and_the_murmur2_partitioner", &[], keys_headers_and_the_murmur2_partitioner),
        skip::trial("all_partitions_merge_by_timestamp", &[], all_partitions_merge_by_timestamp),
        skip::trial("json_and_format_outputs", &[], json_and_format_outputs),
        skip::trial("relative_and_absolute_starts", &[], relative_and_absolute_starts),
        skip::trial("groups_commit_and_resume", &[], groups_commit_and_resume),
        skip::trial("follow_rides_through_a_restart", &[], follow_rides_through_a_restart),
        skip::trial("error_texts", &[], error_texts),
        Trial::ignorable_test("localhost_without_a_port_uses_7070", localhost_without_a_port_uses_7070),
    ]);
}

/// Runs `strom ARGS` against `addr` with `stdin`: (success, stdout, stderr).
fn strom(addr: SocketAddr, args: &[&str], stdin: &[u8]) -> (bool, String, String) {
    let mut child = spawn(addr, args, Stdio::piped());
    // A command that fails before reading stdin closes it: the exit status says so.
    let _ = child.stdin.take().unwrap().write_all(stdin);
    let out = child.wait_with_output().unwrap();
    (out.status.success(), String::from_utf8_lossy(&out.stdout).into_owned(), String::from_utf8_lossy(&out.stderr).into_owned())
}

fn spawn(addr: SocketAddr, args: &[&str], stdin: Stdio) -> Child {
    Command::new(env!("CARGO_BIN_EXE_strom"))
        .args(args)
        .env("STROM_ADDR", addr.to_string())
        .stdin(stdin)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

/// `strom ARGS` that must succeed: its stdout.
fn ok(addr: SocketAddr, args: &[&str], stdin: &[u8]) -> String {
    let (ok, out, err) = strom(addr, args, stdin);
    assert!(ok, "strom {args:?} failed: {err}");
    out
}

/// `strom ARGS` that must fail: its one `strom CMD: ...` line.
fn fails(addr: SocketAddr, args: &[&str]) -> String {
    let (ok, out, err) = strom(addr, args, b"");
    assert!(!ok, "strom {args:?} succeeded: {out}");
    err.lines().find(|l| l.starts_with("strom ")).unwrap_or_else(|| panic!("no error line: {err}")).to_string()
}

fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_millis() as i64
}

// Proves: keys (-K) and headers (-H) reach every record, and without
// --partition each key lands where Kafka's murmur2 puts it: the hashes
// are Kafka's and librdkafka's test vectors, so this agrees with Kafka
// clients, not only with our own function.
fn keys_headers_and_the_murmur2_partitioner() {
    let dir = test_dir("cli-rec-keys");
    let s = Serve::start(&dir, &[]);
    ok(s.addr, &["topic", "create", "keys", "--partitions", "3"], b"");
    let vectors: [(&str, i32); 8] = [
        ("21", -973_932_308),
        ("foobar", -790_332_482),
        ("abc", 479_470_107),
        ("kafka", 0xd067_cf64_u32 as i32),
        ("1234", 0x9fc9_7b14_u32 as i32),
        ("234", 0xe7c0_09ca_u32 as i32),
        ("34", 0x8739_30da_u32 as i32),
        ("4", 0x5a4b_5ca1),
    ];
    let lines: String = vectors.iter().map(|(k, _)| format!("{k}=>value of {k}\n")).collect();
    ok(s.addr, &["produce", "keys", "-K", "=>", "-H", "trace=t-1", "-H", "app=cli"], lines.as_bytes());
    let out = ok(s.addr, &["consume", "keys", "--format", "%p|%k|%v|%h\n"], b"");
    let mut got: Vec<&str> = out.lines().collect();
    got.sort_unstable();
    let mut want: Vec<String> =
        vectors.iter().map(|(k, hash)| format!("{}|{k}|value of {k}|trace=t-1,app=cli", (hash & 0x7fff_ffff) % 3)).collect();
    want.sort_unstable();
    assert_eq!(got, want);
    // Keyless lines go round robin, one partition per batch: all of one batch share a partition.
    ok(s.addr, &["topic", "create", "rr", "--partitions", "2"], b"");
    ok(s.addr, &["produce", "rr"], b"a\nb\n");
    let out = ok(s.addr, &["consume", "rr", "--format", "%p\n"], b"");
    assert_eq!(out.lines().collect::<std::collections::BTreeSet<_>>().len(), 1, "one batch went to two partitions: {out}");
}

// Proves: consume reads every partition by default, merged by timestamp
// (equal timestamps by partition, then offset); a merge, not a sort: each
// partition keeps its offset order, so partition 2's late-stamped record
// comes after its earlier offset. --partition reads one.
fn all_partitions_merge_by_timestamp() {
    let dir = test_dir("cli-rec-merge");
    let s = Serve::start(&dir, &[]);
    ok(s.addr, &["topic", "create", "m", "--partitions", "3"], b"");
    for (partition, ts, lines) in
        [("0", "1000", "a\n"), ("1", "2000", "b\n"), ("2", "2000", "c\n"), ("0", "3000", "d\n"), ("2", "500", "e\n")]
    {
        ok(s.addr, &["produce", "m", "--partition", partition, "--timestamp", ts], lines.as_bytes());
    }
    let out = ok(s.addr, &["consume", "m", "--format", "%T %p %o %v\n"], b"");
    assert_eq!(out, "1000 0 0 a\n2000 1 0 b\n2000 2 0 c\n500 2 1 e\n3000 0 1 d\n");
    assert_eq!(ok(s.addr, &["consume", "m", "--partition", "2"], b""), "c\ne\n");
    assert_eq!(ok(s.addr, &["consume", "m", "--count", "2"], b""), "a\nb\n");
}

// Proves: --json prints one object per record with every field, a null
// key as null and non-UTF-8 bytes as {"base64":...}; --format's tokens
// print their fields.
fn json_and_format_outputs() {
    let dir = test_dir("cli-rec-json");
    let s = Serve::start(&dir, &[]);
    ok(s.addr, &["topic", "create", "j"], b"");
    ok(s.addr, &["produce", "j", "--timestamp", "1700000000000", "-K", ":", "-H", "h=v"], b"k:caf\xc3\xa9 \"q\"\nraw\xff\n");
    let out = ok(s.addr, &["consume", "j", "--json"], b"");
    assert_eq!(
        out,
        "{\"topic\":\"j\",\"partition\":0,\"offset\":0,\"timestamp_ms\":1700000000000,\"key\":\"k\",\"value\":\"caf\u{e9} \\\"q\\\"\",\"headers\":[[\"h\",\"v\"]]}\n\
         {\"topic\":\"j\",\"partition\":0,\"offset\":1,\"timestamp_ms\":1700000000000,\"key\":null,\"value\":{\"base64\":\"cmF3/w==\"},\"headers\":[[\"h\",\"v\"]]}\n"
    );
    let out = ok(s.addr, &["consume", "j", "--format", "%t:%p:%o:%T:%s:[%k]\\t%h\\n", "--count", "1"], b"");
    assert_eq!(out, "j:0:0:1700000000000:9:[k]\th=v\n");
}

// Proves: --from takes -N (per partition, from its end), a relative time
// (-1h), an RFC 3339 time and a Unix time in ms.
fn relative_and_absolute_starts() {
    let dir = test_dir("cli-rec-from");
    let s = Serve::start(&dir, &[]);
    ok(s.addr, &["topic", "create", "f", "--partitions", "2"], b"");
    let two_hours_ago = (now_ms() - 2 * 3_600_000).to_string();
    ok(s.addr, &["produce", "f", "--partition", "0", "--timestamp", "1796378399000"], b"before\n");
    ok(s.addr, &["produce", "f", "--partition", "0", "--timestamp", "1796378400000"], b"at\n");
    ok(s.addr, &["produce", "f", "--partition", "1", "--timestamp", &two_hours_ago], b"old\n");
    ok(s.addr, &["produce", "f", "--partition", "1"], b"new1\nnew2\n");
    assert_eq!(ok(s.addr, &["consume", "f", "--partition", "1", "--from", "-2"], b""), "new1\nnew2\n");
    assert_eq!(ok(s.addr, &["consume", "f", "--partition", "1", "--from", "-9"], b""), "old\nnew1\nnew2\n");
    assert_eq!(ok(s.addr, &["consume", "f", "--partition", "1", "--from", "-1h"], b""), "new1\nnew2\n");
    assert_eq!(ok(s.addr, &["consume", "f", "--partition", "0", "--from", "@2026-12-04T10:00:00Z"], b""), "at\n");
    assert_eq!(ok(s.addr, &["consume", "f", "--partition", "0", "--from", "@1796378399500"], b""), "at\n");
    // -1 from the end of each partition, merged: partition 1's "new2" and partition 0's "at".
    assert_eq!(ok(s.addr, &["consume", "f", "--from", "-1", "--format", "%p %v\n"], b"").lines().count(), 2);
}

// Proves: consume --group starts where the group committed and commits
// what it printed, so two runs read each record once; group describe shows
// the committed offsets and the lag; group reset moves the position.
fn groups_commit_and_resume() {
    let dir = test_dir("cli-rec-group");
    let s = Serve::start(&dir, &[]);
    ok(s.addr, &["topic", "create", "g", "--partitions", "2"], b"");
    ok(s.addr, &["produce", "g", "--partition", "0"], b"a0\na1\na2\n");
    ok(s.addr, &["produce", "g", "--partition", "1"], b"b0\n");
    let describe = |s: &Serve| ok(s.addr, &["group", "describe", "readers", "--topic", "g", "--json"], b"");
    assert_eq!(
        describe(&s),
        "{\"group\":\"readers\",\"topic\":\"g\",\"partition\":0,\"committed\":null,\"earliest\":0,\"end\":3,\"lag\":3}\n\
         {\"group\":\"readers\",\"topic\":\"g\",\"partition\":1,\"committed\":null,\"earliest\":0,\"end\":1,\"lag\":1}\n"
    );
    let first = ok(s.addr, &["consume", "g", "--group", "readers", "--partition", "0", "--count", "2"], b"");
    assert_eq!(first, "a0\na1\n");
    let rest = ok(s.addr, &["consume", "g", "--group", "readers"], b"");
    let mut rest: Vec<&str> = rest.lines().collect();
    rest.sort_unstable();
    assert_eq!(rest, vec!["a2", "b0"]);
    assert_eq!(ok(s.addr, &["consume", "g", "--group", "readers"], b""), "");
    let table = ok(s.addr, &["group", "describe", "readers", "--topic", "g"], b"");
    let rows: Vec<Vec<&str>> = table.lines().skip(1).map(|l| l.split_whitespace().collect()).collect();
    assert_eq!(rows, vec![vec!["0", "3", "3", "0"], vec!["1", "1", "1", "0"]]);
    // reset moves the group back (-1: one record before the end of partition 0), and consume follows it.
    let reset = ok(s.addr, &["group", "reset", "readers", "--topic", "g", "--partition", "0", "--to", "-1"], b"");
    assert_eq!(reset.lines().nth(1).unwrap().split_whitespace().collect::<Vec<_>>(), vec!["0", "2", "3", "1"]);
    assert_eq!(ok(s.addr, &["consume", "g", "--group", "readers"], b""), "a2\n");
}

/// A free port below the ephemeral range, so a restarted server can take it
/// again (see tests/restart_connect.rs for why below that range).
fn free_port() -> u16 {
    let range = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range").unwrap();
    let low: u16 = range.split_whitespace().next().unwrap().parse().unwrap();
    let start = low.saturating_sub(5000 + (std::process::id() % 4000) as u16);
    (start.saturating_sub(4000).max(1024)..=start).rev().find(|&p| TcpListener::bind(("127.0.0.1", p)).is_ok()).expect("a free port")
}

// Proves: consume --follow rides through a server stop and start on the
// same port: it says once that it reconnects, and prints every record
// exactly once, with no gap, before and after the restart.
fn follow_rides_through_a_restart() {
    let dir = test_dir("cli-rec-follow");
    let port = free_port();
    let s = Serve::on(&dir).port(port).start();
    ok(s.addr, &["topic", "create", "fl", "--partitions", "2"], b"");
    let mut consumer = spawn(s.addr, &["consume", "fl", "--follow", "--format", "%p:%o:%v\n"], Stdio::null());
    let (tx, rx) = mpsc::channel();
    let stdout = consumer.stdout.take().unwrap();
    std::thread::spawn(move || BufReader::new(stdout).lines().map_while(Result::ok).try_for_each(|l| tx.send(l)));
    let mut seen = Vec::new();
    let read = |n: usize, seen: &mut Vec<String>| {
        for _ in 0..n {
            seen.push(rx.recv_timeout(HANG).unwrap_or_else(|_| panic!("consume printed only {seen:?}")));
        }
    };
    ok(s.addr, &["produce", "fl", "--partition", "0"], b"x0\nx1\n");
    ok(s.addr, &["produce", "fl", "--partition", "1"], b"y0\n");
    read(3, &mut seen);
    let (status, lines) = s.stop(HANG);
    assert!(status.is_some_and(|s| s.success()), "the server did not stop cleanly: {lines:?}");
    let s = Serve::on(&dir).port(port).start();
    ok(s.addr, &["produce", "fl", "--partition", "0"], b"x2\n");
    ok(s.addr, &["produce", "fl", "--partition", "1"], b"y1\ny2\n");
    read(3, &mut seen);
    consumer.kill().unwrap();
    let out = consumer.wait_with_output().unwrap();
    seen.sort_unstable();
    assert_eq!(seen, vec!["0:0:x0", "0:1:x1", "0:2:x2", "1:0:y0", "1:1:y1", "1:2:y2"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.matches("reconnecting").count(), 1, "{err}");
}

// Proves: each error a user meets reads as a sentence saying what failed
// and what to do: an unknown topic or partition, a topic that exists, a
// bad --from or --format, a bad or unreachable address, and a peer that
// is not a Strom server.
fn error_texts() {
    let dir = test_dir("cli-rec-errors");
    let s = Serve::start(&dir, &[]);
    ok(s.addr, &["topic", "create", "e", "--partitions", "2"], b"");
    assert_eq!(fails(s.addr, &["consume", "nosuch"]), "strom consume: unknown topic \"nosuch\" (strom topic list shows the topics)");
    assert_eq!(fails(s.addr, &["produce", "nosuch"]), "strom produce: unknown topic \"nosuch\" (strom topic list shows the topics)");
    assert_eq!(
        fails(s.addr, &["consume", "e", "--partition", "5"]),
        "strom consume: topic \"e\" has partitions 0 to 1; there is no partition 5"
    );
    let exists = fails(s.addr, &["topic", "create", "e"]);
    assert!(exists.contains("topic \"e\" already exists (choose another name"), "{exists}");
    let (okay, _, err) = strom(s.addr, &["consume", "e", "--from", "yesterday"], b"");
    assert!(!okay && err.contains("--from must be earliest, latest, an offset, -N"), "{err}");
    let bad_format = fails(s.addr, &["consume", "e", "--format", "%x"]);
    assert!(bad_format.ends_with("--format has an unknown token %x; the tokens are %k %v %o %p %T %h %t %s and %%"), "{bad_format}");
    let host_port = format!("localhost:{}", s.addr.port());
    assert_eq!(ok(s.addr, &["consume", "e", "--addr", &host_port], b""), "", "a hostname with a port did not work");
    let bad_port = fails(s.addr, &["consume", "e", "--addr", "localhost:http"]);
    assert!(bad_port.contains("the port in --addr \"localhost:http\" must be a number from 0 to 65535"), "{bad_port}");

    let closed = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let refused = fails(closed, &["consume", "e"]);
    assert_eq!(refused, format!("strom consume: cannot connect to {closed}: the connection was refused (is `strom serve` running there?)"));

    let http = TcpListener::bind("127.0.0.1:0").unwrap();
    let http_addr = http.local_addr().unwrap();
    let responder = std::thread::spawn(move || {
        let (mut conn, _) = http.accept().unwrap();
        let mut buf = [0u8; 256];
        let _ = std::io::Read::read(&mut conn, &mut buf);
        conn.write_all(b"HTTP/1.1 400 Bad Request\r\nConnection: close\r\n\r\n").unwrap();
    });
    let foreign = fails(http_addr, &["consume", "e"]);
    responder.join().unwrap();
    assert!(
        foreign.contains(&format!("the server at {http_addr} does not speak Strom's protocol (it answered \"HTTP/1.1 400 Bad Request\")")),
        "{foreign}"
    );
    assert!(!foreign.contains("Debug") && !foreign.contains("os error"), "{foreign}");
}

// Proves: `--addr localhost` (no port) reaches a server on the default
// port 7070. Reported ignored, with the reason, when another process holds that port.
fn localhost_without_a_port_uses_7070() -> Result<Completion, Failed> {
    if TcpListener::bind("127.0.0.1:7070").is_err() {
        return Ok(Completion::ignored_with("port 7070, the default, is in use by another process"));
    }
    let dir = test_dir("cli-rec-localhost");
    let s = match Serve::on(&dir).port(7070).try_start() {
        Ok(s) => s,
        Err(lines) if lines.iter().any(|l| l.contains("in use")) => {
            return Ok(Completion::ignored_with("port 7070, the default, was taken by another process meanwhile"));
        }
        Err(lines) => panic!("strom serve ended before serving: {lines:?}"),
    };
    ok(s.addr, &["topic", "create", "lh"], b"");
    let (okay, out, err) = {
        let out = Command::new(env!("CARGO_BIN_EXE_strom"))
            .args(["topic", "list", "--addr", "localhost"])
            .env_remove("STROM_ADDR")
            .output()
            .unwrap();
        (out.status.success(), String::from_utf8_lossy(&out.stdout).into_owned(), String::from_utf8_lossy(&out.stderr).into_owned())
    };
    assert!(okay, "{err}");
    assert!(out.contains("lh"), "{out}");
    Ok(Completion::Completed)
}
