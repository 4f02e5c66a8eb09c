//! The Kafka clients people already have, against `strom serve
//! --kafka-listen` with their default settings (issue 15): Debian's kcat
//! (librdkafka 2.0.2), kafka-python 3.0 and confluent-kafka (librdkafka
//! 2.16) from the virtual environment .ci/run makes under target/. Each
//! trial starts its own server in a fresh directory, drives the client as a
//! child process (the Python ones through tests/kafka/*.py, which print
//! what they saw) and checks the records through the clients and through
//! Strom's own CLI. A machine without kcat or the environment reports the
//! trials ignored, with the reason.
mod harness;

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use harness::serve::{HANG, Serve};
use harness::skip::{self, KAFKA_VENV_PYTHON, Need};
use harness::test_dir;

const KCAT: Need = Need::Tools(&["kcat"], "kcat");
const VENV: Need = Need::KafkaVenv;

fn main() {
    skip::main(vec![
        skip::trial("kcat_round_trips_100000_lines", &[KCAT], kcat_round_trips_100000_lines),
        skip::trial("kcat_compressed_batches_round_trip", &[KCAT], kcat_compressed_batches_round_trip),
        skip::trial("kcat_seeks_by_time", &[KCAT], kcat_seeks_by_time),
        skip::trial("kcat_lists_metadata", &[KCAT], kcat_lists_metadata),
        skip::trial("kcat_group_commits_and_resumes", &[KCAT], kcat_group_commits_and_resumes),
        skip::trial("native_produce_is_read_by_kcat", &[KCAT], native_produce_is_read_by_kcat),
        skip::trial("kcat_produce_is_read_by_native_consume", &[KCAT], kcat_produce_is_read_by_native_consume),
        skip::trial("kafka_python_default_producer", &[VENV], kafka_python_default_producer),
        skip::trial("kafka_python_group_splits_commits_and_resumes", &[VENV], kafka_python_group_splits_commits_and_resumes),
        skip::trial("kafka_python_offsets_for_times", &[VENV], kafka_python_offsets_for_times),
        skip::trial("kafka_python_admin", &[VENV], kafka_python_admin),
        skip::trial("confluent_idempotent_produce_and_group", &[VENV], confluent_idempotent_produce_and_group),
        skip::trial("kill9_during_confluent_produce", &[VENV], kill9_during_confluent_produce),
        skip::trial("kill9_during_kcat_produce", &[KCAT], kill9_during_kcat_produce),
        skip::trial("a_wildcard_kafka_listener_needs_an_advertised_address", &[], a_wildcard_kafka_listener_needs_an_advertised_address),
    ]);
}

/// A server with a Kafka listener, and both of its addresses.
struct Broker {
    serve: Serve,
    native: SocketAddr,
    kafka: SocketAddr,
}

impl Broker {
    fn start(dir: &Path) -> Broker {
        let serve = Serve::on(dir).kafka().start();
        let (native, kafka) = (serve.addr, serve.kafka_addr());
        Broker { serve, native, kafka }
    }

    /// The same directory and ports again (the clients keep their address).
    fn restart(dir: &Path, native: SocketAddr, kafka: SocketAddr) -> Broker {
        let serve = Serve::on(dir).port(native.port()).kafka_port(kafka.port()).start();
        assert_eq!(serve.kafka_addr(), kafka);
        Broker { serve, native, kafka }
    }

    fn bootstrap(&self) -> String {
        self.kafka.to_string()
    }

    /// `strom topic create NAME --partitions N` on the native listener.
    fn topic(&self, name: &str, partitions: u32) {
        strom_ok(self.native, &["topic", "create", name, "--partitions", &partitions.to_string()], b"");
    }
}

/// A child's output, read by threads so that neither pipe fills; `cmd`
/// is killed if it has not exited after [`HANG`] (the test then fails
/// with what it printed).
fn run(cmd: &mut Command, stdin: &[u8]) -> Output {
    let mut child = cmd.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().expect("spawn a client");
    let mut input = child.stdin.take().unwrap();
    let stdin = stdin.to_vec();
    let writer = std::thread::spawn(move || {
        let _ = input.write_all(&stdin);
    });
    let out = collect(child, HANG, &format!("{cmd:?}"));
    writer.join().unwrap();
    out
}

fn collect(mut child: Child, limit: Duration, what: &str) -> Output {
    let drain = |mut r: Box<dyn Read + Send>| {
        std::thread::spawn(move || {
            let mut v = Vec::new();
            let _ = r.read_to_end(&mut v);
            v
        })
    };
    let out = drain(Box::new(child.stdout.take().unwrap()));
    let err = drain(Box::new(child.stderr.take().unwrap()));
    let deadline = Instant::now() + limit;
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let (o, e) = (out.join().unwrap(), err.join().unwrap());
            let (o, e) = (String::from_utf8_lossy(&o), String::from_utf8_lossy(&e));
            panic!("{what} still ran after {limit:?}: killed; stdout tail:\n{}\nstderr tail:\n{}", tail(&o), tail(&e));
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    Output { status, stdout: out.join().unwrap(), stderr: err.join().unwrap() }
}

/// The last lines of a client's output, for a failure message.
fn tail(s: &str) -> String {
    let lines: Vec<&str> = s.lines().collect();
    lines[lines.len().saturating_sub(30)..].join("\n")
}

/// `out` exited 0, or the test fails with what it printed.
fn ok(out: Output, what: &str) -> String {
    let (o, e) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "{what} failed ({}); stdout tail:\n{}\nstderr tail:\n{}", out.status, tail(&o), tail(&e));
    o.into_owned()
}

fn strom_ok(addr: SocketAddr, args: &[&str], stdin: &[u8]) -> String {
    let out = run(Command::new(env!("CARGO_BIN_EXE_strom")).args(args).env("STROM_ADDR", addr.to_string()), stdin);
    ok(out, &format!("strom {args:?}"))
}

/// kcat against the broker, `-q` (no informational lines on stderr).
fn kcat(b: &Broker, args: &[&str], stdin: &[u8]) -> Output {
    run(Command::new("kcat").arg("-b").arg(b.bootstrap()).arg("-q").args(args), stdin)
}

fn kcat_ok(b: &Broker, args: &[&str], stdin: &[u8]) -> String {
    ok(kcat(b, args, stdin), &format!("kcat {args:?}"))
}

/// tests/kafka/SCRIPT COMMAND BOOTSTRAP ARGS with the environment's Python.
fn py_cmd(script: &str, command: &str, b: &Broker, args: &[&str]) -> Command {
    let mut c = Command::new(KAFKA_VENV_PYTHON);
    c.arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/kafka").join(script)).arg(command).arg(b.bootstrap()).args(args);
    c
}

fn py_ok(script: &str, command: &str, b: &Broker, args: &[&str]) -> String {
    ok(run(&mut py_cmd(script, command, b, args), b""), &format!("{script} {command} {args:?}"))
}

fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_millis() as i64
}

/// `count` distinct lines of varied length (every 997th near 3 KB), none
/// empty (kcat skips empty lines), each ending in a newline.
fn lines(prefix: &str, count: usize) -> String {
    let mut s = String::new();
    for i in 0..count {
        let pad = if i % 997 == 0 { 3000 } else { i % 61 };
        s.push_str(&format!("{prefix}-{i:06} {}\n", "x".repeat(pad)));
    }
    s
}

fn sorted(text: &str) -> Vec<&str> {
    let mut v: Vec<&str> = text.lines().collect();
    v.sort_unstable();
    v
}

/// Writes `text` to a file under `dir` for kcat's `-l`.
fn file(dir: &Path, name: &str, text: &str) -> String {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path.to_str().unwrap().to_string()
}

// Proves kcat's line producer and its consumer round-trip 100,000 lines
// byte for byte through one partition (offset order is line order), and as
// a set through three partitions.
fn kcat_round_trips_100000_lines() {
    let dir = test_dir("kafka-kcat-lines");
    let b = Broker::start(&dir);
    let text = lines("line", 100_000);
    let path = file(&dir, "lines.txt", &text);
    for (topic, partitions) in [("one", 1), ("three", 3)] {
        b.topic(topic, partitions);
        kcat_ok(&b, &["-P", "-t", topic, "-l", &path], b"");
        let got = kcat_ok(&b, &["-C", "-t", topic, "-o", "beginning", "-e"], b"");
        if partitions == 1 {
            assert!(got == text, "topic {topic}: {} bytes read back, {} produced, or they differ", got.len(), text.len());
        } else {
            assert_eq!(sorted(&got), sorted(&text), "topic {topic}: the lines read back are not the lines produced");
        }
    }
    let listed = strom_ok(b.native, &["topic", "list"], b"");
    assert!(listed.contains("one 1") && listed.contains("three 3"), "{listed}");
}

// Proves batches compressed with each codec Kafka has (gzip, snappy, lz4,
// zstd) are accepted, stored as they came and read back byte for byte.
fn kcat_compressed_batches_round_trip() {
    let dir = test_dir("kafka-kcat-compressed");
    let b = Broker::start(&dir);
    let text = lines("zipped", 20_000);
    let path = file(&dir, "lines.txt", &text);
    for codec in ["gzip", "snappy", "lz4", "zstd"] {
        let topic = format!("z-{codec}");
        b.topic(&topic, 1);
        kcat_ok(&b, &["-P", "-t", &topic, "-X", &format!("compression.codec={codec}"), "-l", &path], b"");
        let got = kcat_ok(&b, &["-C", "-t", &topic, "-o", "beginning", "-e"], b"");
        assert!(got == text, "{codec}: {} bytes read back, {} produced, or they differ", got.len(), text.len());
    }
}

// Proves `-o s@MS` starts at the first record stamped at or after MS (the
// producer's CreateTime, set when kcat hands the line over), and kcat's
// query mode answers that offset.
fn kcat_seeks_by_time() {
    let dir = test_dir("kafka-kcat-time");
    let b = Broker::start(&dir);
    b.topic("t", 1);
    let (first, second) = (lines("early", 1000), lines("late", 1000));
    kcat_ok(&b, &["-P", "-t", "t", "-l", &file(&dir, "early.txt", &first)], b"");
    // The pauses only keep both halves off the millisecond of `split_ms`.
    std::thread::sleep(Duration::from_millis(20));
    let split_ms = now_ms();
    std::thread::sleep(Duration::from_millis(20));
    kcat_ok(&b, &["-P", "-t", "t", "-l", &file(&dir, "late.txt", &second)], b"");
    let got = kcat_ok(&b, &["-C", "-t", "t", "-o", &format!("s@{split_ms}"), "-e"], b"");
    assert!(got == second, "s@{split_ms} read {} lines, first {:?}", got.lines().count(), got.lines().next());
    let q = kcat_ok(&b, &["-Q", "-t", &format!("t:0:{split_ms}")], b"");
    let words: Vec<&str> = q.split_whitespace().collect();
    assert!(words.windows(2).any(|w| w == ["offset", "1000"]), "kcat -Q t:0:{split_ms} answered: {q}");
}

// Proves metadata names the Kafka listener as broker 0 and every topic
// with its partitions, each led by broker 0.
fn kcat_lists_metadata() {
    let dir = test_dir("kafka-kcat-meta");
    let b = Broker::start(&dir);
    b.topic("alpha", 1);
    b.topic("beta", 4);
    let listed = kcat_ok(&b, &["-L"], b"");
    assert!(listed.contains(" 1 brokers:"), "{listed}");
    assert!(listed.contains(&format!("broker 0 at {}", b.kafka)), "{listed}");
    assert!(listed.contains("topic \"alpha\" with 1 partitions:"), "{listed}");
    assert!(listed.contains("topic \"beta\" with 4 partitions:"), "{listed}");
    for p in 0..4 {
        assert!(listed.contains(&format!("partition {p}, leader 0,")), "{listed}");
    }
    let one = kcat_ok(&b, &["-L", "-t", "beta"], b"");
    assert!(one.contains("topic \"beta\" with 4 partitions:") && !one.contains("alpha"), "{one}");
}

/// kcat's balanced consumer (`-G`) on `topic`, to the end of every
/// partition, reading from the earliest where the group has no commit.
fn kcat_group(b: &Broker, group: &str, topic: &str) -> String {
    kcat_ok(b, &["-G", group, "-X", "auto.offset.reset=earliest", "-e", topic], b"")
}

// Proves a kcat group reads everything, commits it at exit, and a later
// run of the same group reads only what came after.
fn kcat_group_commits_and_resumes() {
    let dir = test_dir("kafka-kcat-group");
    let b = Broker::start(&dir);
    b.topic("g", 2);
    let old = lines("old", 1000);
    kcat_ok(&b, &["-P", "-t", "g", "-l", &file(&dir, "old.txt", &old)], b"");
    assert_eq!(sorted(&kcat_group(&b, "readers", "g")), sorted(&old), "the first run reads everything");
    assert_eq!(kcat_group(&b, "readers", "g"), "", "a second run of the group resumes at its commits: nothing new");
    // The commits are Strom's own: the native CLI shows them, lag 0.
    let described = strom_ok(b.native, &["group", "describe", "readers", "--topic", "g", "--json"], b"");
    let rows: Vec<serde_json::Value> = described.lines().map(|l| serde_json::from_str(l).expect("a JSON row")).collect();
    assert_eq!(rows.len(), 2, "{described}");
    // kcat's keyless lines may all go to one partition: the other has no
    // record, so nothing to commit.
    assert!(rows.iter().all(|r| r["lag"] == 0), "{described}");
    assert!(rows.iter().filter(|r| r["end"] != 0).all(|r| r["committed"] == r["end"]), "{described}");
    assert_eq!(rows.iter().map(|r| r["end"].as_u64().unwrap()).sum::<u64>(), 1000, "{described}");
    let new = lines("new", 500);
    kcat_ok(&b, &["-P", "-t", "g", "-l", &file(&dir, "new.txt", &new)], b"");
    assert_eq!(sorted(&kcat_group(&b, "readers", "g")), sorted(&new), "a third run reads only the new lines");
    assert_eq!(sorted(&kcat_group(&b, "others", "g")).len(), 1500, "another group starts from the earliest");
}

// Proves records produced by the native CLI (keys, headers, timestamps)
// reach kcat intact: the same text through both consumers' format strings.
fn native_produce_is_read_by_kcat() {
    let dir = test_dir("kafka-native-to-kcat");
    let b = Broker::start(&dir);
    b.topic("n", 1);
    let ts_ms = 1_764_842_400_123_i64;
    let input = "user-1:login\nuser-2:login ok\nnokey\nuser-1:logout\n";
    strom_ok(
        b.native,
        &["produce", "n", "-K", ":", "-H", "source=web", "-H", "zone=eu 1", "--timestamp", &ts_ms.to_string()],
        input.as_bytes(),
    );
    let fmt = "%p %o %T key=%k headers=%h value=%s\n";
    let got = kcat_ok(&b, &["-C", "-t", "n", "-o", "beginning", "-e", "-f", fmt], b"");
    let want = [("user-1", "login"), ("user-2", "login ok"), ("", "nokey"), ("user-1", "logout")];
    let want: Vec<String> =
        want.iter().enumerate().map(|(o, (k, v))| format!("0 {o} {ts_ms} key={k} headers=source=web,zone=eu 1 value={v}")).collect();
    assert_eq!(got.lines().collect::<Vec<_>>(), want);
    let native = strom_ok(b.native, &["consume", "n", "--format", &fmt.replace("%s", "%v")], b"");
    assert_eq!(native, got, "strom consume and kcat print the same records");
}

// Proves records produced by kcat (per-record keys, a fixed key, headers,
// the producer's timestamps) are read by `strom consume` intact, as kcat
// itself reads them.
fn kcat_produce_is_read_by_native_consume() {
    let dir = test_dir("kafka-kcat-to-native");
    let b = Broker::start(&dir);
    b.topic("k", 1);
    let before_ms = now_ms();
    let input = "a:first\nb:second\nno delimiter here\na:third\n";
    kcat_ok(&b, &["-P", "-t", "k", "-K", ":", "-k", "fixed", "-H", "origin=kcat", "-H", "n=1"], input.as_bytes());
    let after_ms = now_ms();
    let fmt = "%p %o %T key=%k headers=%h value=%v\n";
    let native = strom_ok(b.native, &["consume", "k", "--format", fmt], b"");
    let rows: Vec<&str> = native.lines().collect();
    assert_eq!(rows.len(), 4, "{native}");
    let want = [("a", "first"), ("b", "second"), ("fixed", "no delimiter here"), ("a", "third")];
    for (o, ((k, v), row)) in want.iter().zip(&rows).enumerate() {
        let (head, rest) = row.split_once(" key=").unwrap();
        let fields: Vec<&str> = head.split(' ').collect();
        assert_eq!(fields[..2], ["0".to_string(), o.to_string()], "{row}");
        let ts_ms: i64 = fields[2].parse().unwrap();
        assert!((before_ms..=after_ms).contains(&ts_ms), "timestamp {ts_ms} outside the produce run [{before_ms}, {after_ms}]");
        assert_eq!(rest, format!("{k} headers=origin=kcat,n=1 value={v}"));
    }
    let by_kcat = kcat_ok(&b, &["-C", "-t", "k", "-o", "beginning", "-e", "-f", &fmt.replace("%v", "%s")], b"");
    assert_eq!(by_kcat, native, "kcat and strom consume print the same records");
}

/// Every record of `topic` through `strom consume`, as `PARTITION OFFSET
/// KEY VALUE` lines.
fn native_rows(b: &Broker, topic: &str) -> BTreeSet<String> {
    strom_ok(b.native, &["consume", topic, "--format", "%p %o %k %v\n"], b"").lines().map(str::to_string).collect()
}

// Proves kafka-python's default producer (acks=all, idempotence on, API
// version inferred from ApiVersions) is answered with offsets where the
// records are: the same partition, offset, key and value natively.
fn kafka_python_default_producer() {
    let dir = test_dir("kafka-python-produce");
    let b = Broker::start(&dir);
    b.topic("kp", 4);
    let out = py_ok("kp.py", "produce", &b, &["kp", "10000"]);
    let mut lines = out.lines();
    let config = lines.next().unwrap();
    assert!(config.starts_with("config acks=-1 enable_idempotence=True api_version="), "{config}");
    let reported: BTreeSet<String> = lines.map(str::to_string).collect();
    assert_eq!(reported.len(), 10_000);
    assert_eq!(native_rows(&b, "kp"), reported, "what the producer was told is what is stored");
    let partitions: BTreeSet<&str> = reported.iter().map(|r| r.split(' ').next().unwrap()).collect();
    assert_eq!(partitions.len(), 4, "10,000 keys spread over every partition");
}

/// One member of `kp.py group`'s pair: its partitions and what it read.
struct Member {
    partitions: Vec<u32>,
    values: Vec<String>,
}

fn members(json: &str) -> Vec<Member> {
    let v: serde_json::Value = serde_json::from_str(json.trim()).unwrap_or_else(|e| panic!("{e}: {json}"));
    let member = |m: &serde_json::Value| Member {
        partitions: m["partitions"].as_array().unwrap().iter().map(|p| p.as_u64().unwrap() as u32).collect(),
        values: m["values"].as_array().unwrap().iter().map(|v| v.as_str().unwrap().to_string()).collect(),
    };
    v.as_array().unwrap().iter().map(member).collect()
}

// Proves two kafka-python members of one group split a 4-partition topic
// (disjoint assignments, every partition assigned), together read every
// record, and commit: a later member reads only records produced after.
fn kafka_python_group_splits_commits_and_resumes() {
    let dir = test_dir("kafka-python-group");
    let b = Broker::start(&dir);
    b.topic("grp", 4);
    let old: String = (0..4000).map(|i| format!("key{i}:old{i}\n")).collect();
    strom_ok(b.native, &["produce", "grp", "-K", ":"], old.as_bytes());
    let out = py_ok("kp.py", "group", &b, &["grp", "pair", "4000"]);
    let members = members(&out);
    let mut assigned: Vec<u32> = members.iter().flat_map(|m| m.partitions.clone()).collect();
    assigned.sort_unstable();
    assert_eq!(assigned, [0, 1, 2, 3], "the two members split the partitions");
    assert!(
        members.iter().all(|m| m.partitions.len() == 2),
        "two partitions each: {:?}",
        members.iter().map(|m| &m.partitions).collect::<Vec<_>>()
    );
    let seen: BTreeSet<&str> = members.iter().flat_map(|m| m.values.iter().map(String::as_str)).collect();
    let want: BTreeSet<String> = (0..4000).map(|i| format!("old{i}")).collect();
    assert_eq!(seen, want.iter().map(String::as_str).collect(), "together they read every record");
    let new: String = (0..400).map(|i| format!("key{i}:new{i}\n")).collect();
    strom_ok(b.native, &["produce", "grp", "-K", ":"], new.as_bytes());
    let resumed = py_ok("kp.py", "resume", &b, &["grp", "pair", "400"]);
    let got: BTreeSet<&str> = resumed.lines().collect();
    let want: BTreeSet<String> = (0..400).map(|i| format!("new{i}")).collect();
    assert_eq!(got, want.iter().map(String::as_str).collect(), "a later member resumes from the commits");
    assert_eq!(resumed.lines().count(), 400, "and reads each record once");
}

// Proves ListOffsets by timestamp: the first offset stamped at or after
// the instant (exact, between two records, past the end: none).
fn kafka_python_offsets_for_times() {
    let dir = test_dir("kafka-python-times");
    let b = Broker::start(&dir);
    b.topic("ts", 1);
    let base_ms = 1_764_842_400_000_i64;
    let out = py_ok("kp.py", "times", &b, &["ts", &base_ms.to_string()]);
    let want = [
        format!("{} 0 {base_ms}", base_ms - 1),
        format!("{base_ms} 0 {base_ms}"),
        format!("{} 6 {}", base_ms + 55, base_ms + 60),
        format!("{} 99 {}", base_ms + 990, base_ms + 990),
        format!("{} none", base_ms + 10_000),
        "beginning 0 end 100".to_string(),
    ];
    assert_eq!(out.lines().collect::<Vec<_>>(), want);
}

// Proves the admin calls: CreateTopics (a second create is refused as
// existing), Metadata, DescribeConfigs, DeleteTopics, and that a topic
// made by a Kafka client is a Strom topic.
fn kafka_python_admin() {
    let dir = test_dir("kafka-python-admin");
    let b = Broker::start(&dir);
    let out = py_ok("kp.py", "admin", &b, &["made"]);
    let want = ["created", "exists", "listed True", "partitions 3", "configs True", "deleted", "listed False"];
    assert_eq!(out.lines().collect::<Vec<_>>(), want);
    let listed = strom_ok(b.native, &["topic", "list"], b"");
    assert!(!listed.contains("made"), "deleted natively too: {listed}");
}

/// `ck.py produce` output: the sequence numbers delivered, with where.
fn delivered(out: &str) -> BTreeMap<u64, String> {
    let mut acked = BTreeMap::new();
    for line in out.lines() {
        if let Some(rest) = line.strip_prefix("delivered ") {
            let (seq, at) = rest.split_once(' ').unwrap();
            assert!(acked.insert(seq.parse().unwrap(), at.to_string()).is_none(), "{seq} delivered twice");
        }
    }
    acked
}

// Proves confluent-kafka with enable.idempotence: every record delivered
// where its report says, and a group consumer reads each once.
fn confluent_idempotent_produce_and_group() {
    let dir = test_dir("kafka-confluent");
    let b = Broker::start(&dir);
    b.topic("ck", 3);
    let out = py_ok("ck.py", "produce", &b, &["ck", "20000"]);
    assert!(out.lines().last() == Some("done 0 left") && !out.contains("failed "), "{}", tail(&out));
    let acked = delivered(&out);
    assert_eq!(acked.len(), 20_000);
    let stored: BTreeSet<String> = acked.iter().map(|(seq, at)| format!("{at} k{seq} {seq}")).collect();
    assert_eq!(native_rows(&b, "ck"), stored, "each record is where its delivery report says");
    let read = py_ok("ck.py", "consume", &b, &["ck", "readers", "20000"]);
    let values: Vec<u64> = read.lines().map(|v| v.parse().unwrap()).collect();
    assert_eq!(values.len(), 20_000);
    assert_eq!(values.iter().collect::<BTreeSet<_>>(), acked.keys().collect(), "the group reads every record once");
}

/// The sequence numbers stored in `topic` (values), and those stored more
/// than once.
fn stored_seqs(b: &Broker, topic: &str) -> (BTreeSet<u64>, Vec<u64>) {
    let out = strom_ok(b.native, &["consume", topic, "--format", "%v\n"], b"");
    let (mut seqs, mut twice) = (BTreeSet::new(), Vec::new());
    for v in out.lines() {
        let seq: u64 = v.trim_start_matches(|c: char| !c.is_ascii_digit()).split(' ').next().unwrap().parse().unwrap();
        if !seqs.insert(seq) {
            twice.push(seq);
        }
    }
    (seqs, twice)
}

/// Reads `child`'s stdout (or stderr) lines into a shared list as they come.
fn follow(r: impl Read + Send + 'static) -> (Arc<Mutex<Vec<String>>>, std::thread::JoinHandle<()>) {
    let lines = Arc::new(Mutex::new(Vec::new()));
    let sink = lines.clone();
    let t = std::thread::spawn(move || {
        for l in BufReader::new(r).lines().map_while(Result::ok) {
            sink.lock().unwrap().push(l);
        }
    });
    (lines, t)
}

/// Waits until `count(lines)` reaches `at_least` (the server is then
/// killed mid-produce); the producer is held (it waits for more input)
/// until the test lets it go on, so it cannot have finished first.
fn wait_for(lines: &Mutex<Vec<String>>, child: &mut Child, at_least: usize, count: impl Fn(&[String]) -> usize) {
    let deadline = Instant::now() + HANG;
    while count(&lines.lock().unwrap()) < at_least {
        assert!(child.try_wait().unwrap().is_none(), "the producer ended before the kill: {:?}", tail(&lines.lock().unwrap().join("\n")));
        assert!(Instant::now() < deadline, "fewer than {at_least} deliveries after {HANG:?}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Waits for `child` (a producer finishing against the restarted server),
/// up to three [`HANG`]s: its default delivery timeout is 300 s.
fn wait_status(child: &mut Child, what: &str, stderr: &Mutex<Vec<String>>) -> std::process::ExitStatus {
    let deadline = Instant::now() + HANG * 3;
    loop {
        if let Some(s) = child.try_wait().unwrap() {
            return s;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            panic!("{what} still ran after {:?}; stderr tail:\n{}", HANG * 3, tail(&stderr.lock().unwrap().join("\n")));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Kills the server with SIGKILL and starts it again on the same
/// directory and ports.
fn kill_and_restart(dir: &Path, mut b: Broker) -> Broker {
    b.serve.kill();
    Broker::restart(dir, b.native, b.kafka)
}

/// Checks that every sequence number in `acked` is stored in `topic`
/// and none is stored twice; returns how many are stored.
fn nothing_lost_nothing_twice(b: &Broker, topic: &str, acked: impl Iterator<Item = u64>) -> usize {
    let (stored, twice) = stored_seqs(b, topic);
    let lost: Vec<u64> = acked.filter(|s| !stored.contains(s)).take(10).collect();
    assert!(lost.is_empty(), "delivered but not stored (first 10): {lost:?}");
    assert!(twice.is_empty(), "stored twice (first 10): {:?}", &twice[..twice.len().min(10)]);
    stored.len()
}

// Proves a kill -9 of the server in the middle of an idempotent
// confluent-kafka produce loses no record the client was told was
// delivered, and stores none twice: the producer carries on against the
// restarted server (same ports) and finishes.
fn kill9_during_confluent_produce() {
    let dir = test_dir("kafka-kill-confluent");
    let b = Broker::start(&dir);
    b.topic("crash", 2);
    let (total, pause_at) = (200_000, 100_000);
    let mut child = py_cmd("ck.py", "produce", &b, &["crash", &total.to_string(), &pause_at.to_string()])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let (out, reader) = follow(child.stdout.take().unwrap());
    let (err, err_reader) = follow(child.stderr.take().unwrap());
    wait_for(&out, &mut child, 20_000, |l| l.iter().filter(|l| l.starts_with("delivered ")).count());
    let b = kill_and_restart(&dir, b);
    child.stdin.take().unwrap().write_all(b"go\n").unwrap();
    let status = wait_status(&mut child, "ck.py produce after the restart", &err);
    reader.join().unwrap();
    err_reader.join().unwrap();
    let out = out.lock().unwrap().join("\n");
    assert!(status.success() && out.ends_with("done 0 left"), "the producer did not finish: {}", tail(&out));
    let acked = delivered(&out);
    let failed = out.lines().filter(|l| l.starts_with("failed ")).count();
    let stored = nothing_lost_nothing_twice(&b, "crash", acked.keys().copied());
    eprintln!("kill9_during_confluent_produce: {} delivered, {failed} failed, {stored} stored", acked.len());
}

// Proves the same for kcat with `enable.idempotence` (without it a retry
// after a lost ack may store a line twice, as on Kafka): one partition, so
// deliveries are in line order and the first N delivered lines are
// lines 0..N; kcat reports each delivery on stderr at `-vv`, and `-E` keeps
// it from exiting when it finds every broker down. Its stdin is written in
// two halves, the second after the restart.
fn kill9_during_kcat_produce() {
    let dir = test_dir("kafka-kill-kcat");
    let b = Broker::start(&dir);
    b.topic("crash", 1);
    let (total, half) = (300_000_u64, 150_000);
    let text = |r: std::ops::Range<u64>| r.map(|i| format!("{i} line\n")).collect::<String>();
    let mut child = Command::new("kcat")
        .args(["-b", &b.bootstrap(), "-P", "-t", "crash", "-vv", "-E", "-X", "enable.idempotence=true"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Its stderr is read before its stdin is written: at -vv a full stderr
    // pipe would stop it reading.
    let (err, reader) = follow(child.stderr.take().unwrap());
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(text(0..half).as_bytes()).unwrap();
    let is_delivery = |l: &String| l.contains("Message delivered to partition");
    wait_for(&err, &mut child, 20_000, |l| l.iter().filter(|l| is_delivery(l)).count());
    let b = kill_and_restart(&dir, b);
    stdin.write_all(text(half..total).as_bytes()).unwrap();
    drop(stdin);
    let status = wait_status(&mut child, "kcat -P after the restart", &err);
    reader.join().unwrap();
    let err = err.lock().unwrap();
    let acked = err.iter().filter(|l| is_delivery(l)).count() as u64;
    assert!(status.success(), "kcat failed ({status}): {}", tail(&err.join("\n")));
    let stored = nothing_lost_nothing_twice(&b, "crash", 0..acked);
    eprintln!("kill9_during_kcat_produce: {acked} delivered of {total}, {stored} stored");
}

// Proves a Kafka listener on a wildcard address is refused at start unless
// an address to advertise is given (clients connect to what Metadata
// advertises, and 0.0.0.0 is not an address to connect to), saying why.
fn a_wildcard_kafka_listener_needs_an_advertised_address() {
    let dir = test_dir("kafka-wildcard");
    let data = dir.join("data");
    let out = run(
        Command::new(env!("CARGO_BIN_EXE_strom"))
            .args(["serve", "--listen", "127.0.0.1:0", "--kafka-listen", "0.0.0.0:0", "--data-dir"])
            .arg(&data),
        b"",
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "a wildcard Kafka listener without --kafka-advertise started");
    assert!(stderr.contains("wildcard") && stderr.contains("--kafka-advertise"), "{stderr}");
}
