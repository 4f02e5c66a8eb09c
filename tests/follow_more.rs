//! More of the read-only follower (`strom serve --read-only`) and of
//! archive-only serving (`strom serve --archive-dir` with no data
//! directory), end to end (issue 17): topics the writer creates, deletes
//! and creates again while a follower runs; followers started before the
//! writer's first append and while it is down; a follower run as `nobody`
//! on a directory it may read but not write; a Kafka client on a follower;
//! a server with archives alone. Real disk, real io_uring, real processes.
//!
//! `tests/follow.rs` has the core of it (kills, rolls, retention, locks,
//! lag); the writer process here is the same pattern: this test binary run
//! again as `writer_child`, appending `p{p}o{o}` at offset `o` of partition
//! `p`, so a record served at any other offset cannot pass a check.
//! Tests that need root or kcat are reported as ignored, with the reason,
//! where those are missing (tests/harness/skip.rs).
//! The archive-only tests are in `follow_more/archives.rs`, a module of
//! this binary. A test showing a known bug is ignored (`--ignored` runs it)
//! and says the bug when it fails.
mod harness;
// The archive-only tests (a module of this binary: tests/follow_more/archives.rs).
#[path = "follow_more/archives.rs"]
mod archives;
#[path = "follow_more/kafka.rs"]
mod kafka;

use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use harness::child::Lines;
use harness::serve::{HANG, Serve};
use harness::skip::{self, Need};
use harness::{test_dir, wait_until};
use libtest_mimic::{Completion, Trial};
use strom::EngineConfig;
use strom::catalog::TopicRetention;
use strom::client::{Client, ClientError, FetchedRecord};
use strom::engine::Engine;
use strom::proto::{ErrorCode, OffsetSpec, QueryEnd};
use strom::wire::batch::BatchBuilder;

const PARTITIONS: u32 = 2;
const TOPIC: &str = "f";
const KCAT: Need = Need::Tools(&["kcat"], "kcat");
/// Running the follower as `nobody` with RLIMIT_MEMLOCK 8 MiB (as tests/any_user.rs does).
const LIMIT_TOOLS: Need = Need::Tools(&["prlimit", "setpriv"], "util-linux");

fn main() {
    skip::main(vec![
        // Run only by the tests below, as their writer process.
        Trial::test("writer_child", || {
            writer_child();
            Ok(())
        })
        .with_ignored_flag(true),
        skip::trial("a_topic_the_writer_creates_appears_on_the_follower", &[], a_topic_the_writer_creates_appears_on_the_follower),
        skip::trial("a_waiting_query_is_answered_by_the_writers_append", &[], a_waiting_query_is_answered_by_the_writers_append),
        skip::trial("a_deleted_topic_disappears_from_the_follower", &[], a_deleted_topic_disappears_from_the_follower),
        skip::trial("a_topic_deleted_and_created_again_is_served_new", &[], a_topic_deleted_and_created_again_is_served_new),
        skip::trial("followers_started_before_the_first_append_and_while_the_writer_is_down", &[], followers_before_and_between_writers),
        skip::trial("a_follower_killed_and_started_again", &[], a_follower_killed_and_started_again),
        root_trial("a_follower_as_nobody_serves_a_directory_it_cannot_write", &[LIMIT_TOOLS], a_follower_as_nobody),
        skip::trial("kcat_consumes_from_a_follower_and_cannot_produce", &[KCAT], kcat_on_a_follower),
        skip::trial(
            "kafka_python_on_a_follower_cannot_commit_or_produce",
            &[Need::KafkaVenv],
            kafka::kafka_python_on_a_follower_cannot_commit_or_produce,
        ),
        skip::trial("archives_served_alone", &[], archives::archives_served_alone),
        skip::trial(
            "kafka_commit_on_an_archive_topic_is_refused",
            &[Need::KafkaVenv],
            archives::kafka_commit_on_an_archive_topic_is_refused,
        ),
        skip::trial("serve_with_neither_directory_exits_1", &[], archives::serve_with_neither_directory_exits_1),
        skip::trial("kcat_reads_archives_served_alone", &[KCAT], archives::kcat_reads_archives_served_alone),
        skip::trial("a_follower_of_a_directory_no_writer_opened_is_refused", &[], a_follower_of_a_directory_no_writer_opened_is_refused),
        skip::trial(
            "a_live_topic_named_as_an_archive_topic_after_start_is_left_out",
            &[],
            archives::a_live_topic_named_as_an_archive_topic_after_start_is_left_out,
        ),
    ]);
}

/// [`skip::trial`] that also needs root (to run a child as `nobody`).
fn root_trial(name: &str, needs: &[Need], run: fn()) -> Trial {
    if skip::is_root() {
        skip::trial(name, needs, run)
    } else {
        Trial::ignorable_test(name, || {
            Ok(Completion::ignored_with("needs root to run the follower as nobody: run the test command as root"))
        })
    }
}

/// The writer's settings: small segments, so that it rolls every few
/// hundred records and a follower opens segments it did not see at start.
fn writer_cfg() -> EngineConfig {
    EngineConfig { cores: 1, logs_on_create: 2, pin_cores: false, ..EngineConfig::small_for_tests() }
}

fn value(p: u32, offset: u64) -> String {
    format!("p{p}o{offset}")
}

/// The child: opens the directory with the embedded engine, creates the
/// topic if it is new, says "ready", and (with STROM_FOLLOW_MORE_HOLD, once
/// a line comes on stdin) appends to every partition until killed,
/// printing each ack.
fn writer_child() {
    let Ok(dir) = std::env::var("STROM_FOLLOW_MORE_WRITER_DIR") else { return };
    let e = Engine::open(Path::new(&dir), writer_cfg()).unwrap();
    if e.topics().is_empty() {
        e.create_topic(TOPIC, PARTITIONS).unwrap();
    }
    let mut next: Vec<u64> = (0..PARTITIONS).map(|p| e.partition_stat(TOPIC, p).unwrap().end_offset).collect();
    let mut out = std::io::stdout().lock();
    writeln!(out, "ready").unwrap();
    out.flush().unwrap();
    if std::env::var_os("STROM_FOLLOW_MORE_HOLD").is_some() {
        std::io::stdin().lines().next();
    }
    let mut pending = std::collections::VecDeque::new();
    for seq in 0u64.. {
        let p = (seq % u64::from(PARTITIONS)) as u32;
        let (n, base) = (1 + seq % 5, next[p as usize]);
        let mut b = BatchBuilder::new(seq as i64);
        for o in base..base + n {
            b.push(seq as i64, None, Some(value(p, o).as_bytes()), &[]);
        }
        next[p as usize] += n;
        pending.push_back((p, base, n, e.append_async(TOPIC, p, b.finish()).unwrap()));
        if pending.len() >= 16 {
            let (p, base, n, w) = pending.pop_front().unwrap();
            assert_eq!(w.wait().unwrap().base_offset, base, "appends to one partition from one thread take consecutive offsets");
            writeln!(out, "acked {p} {base} {n}").unwrap();
            out.flush().unwrap();
        }
    }
}

/// A running writer child and each partition's acknowledged end.
struct Writer {
    child: Child,
    hold: Option<ChildStdin>,
    acked: Arc<Mutex<Vec<u64>>>,
    reader: std::thread::JoinHandle<()>,
}

impl Writer {
    /// Starts a writer on `dir` and waits until it is ready; with `hold`
    /// it appends nothing until [`Writer::go`].
    fn start(dir: &Path, hold: bool) -> Writer {
        let mut cmd = Command::new(std::env::current_exe().unwrap());
        cmd.args(["--exact", "writer_child", "--ignored", "--nocapture", "--test-threads=1"])
            .env("STROM_FOLLOW_MORE_WRITER_DIR", dir)
            .stdin(if hold { Stdio::piped() } else { Stdio::null() })
            .stdout(Stdio::piped())
            .stderr(Stdio::null());
        if hold {
            cmd.env("STROM_FOLLOW_MORE_HOLD", "1");
        }
        let mut child = cmd.spawn().unwrap();
        let hold = child.stdin.take();
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        // The harness may print "test writer_child ... " on the same line first.
        while !lines.next().expect("the writer ended before it was ready").unwrap().ends_with("ready") {}
        let acked = Arc::new(Mutex::new(vec![0u64; PARTITIONS as usize]));
        let seen = acked.clone();
        let reader = std::thread::spawn(move || {
            for line in lines.map_while(Result::ok) {
                if let ["acked", p, base, n] = line.split(' ').collect::<Vec<_>>().as_slice() {
                    let end = base.parse::<u64>().unwrap() + n.parse::<u64>().unwrap();
                    let slot = &mut seen.lock().unwrap()[p.parse::<usize>().unwrap()];
                    *slot = (*slot).max(end);
                }
            }
        });
        Writer { child, hold, acked, reader }
    }

    fn go(&mut self) {
        writeln!(self.hold.take().expect("a writer started holding"), "go").unwrap();
    }

    fn acked(&self) -> Vec<u64> {
        self.acked.lock().unwrap().clone()
    }

    /// SIGKILL; returns each partition's acknowledged end.
    fn kill(mut self) -> Vec<u64> {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
        self.reader.join().unwrap();
        self.acked.lock().unwrap().clone()
    }
}

fn server_code(e: &ClientError) -> ErrorCode {
    match e {
        ClientError::Server { code, .. } => *code,
        other => panic!("not a server error: {other}"),
    }
}

/// A partition's end on a server; None while the server does not know it.
fn latest(c: &mut Client, topic: &str, p: u32) -> Option<u64> {
    c.list_offsets(topic, p, OffsetSpec::Latest).ok().flatten()
}

/// The topics Metadata lists, in its order (by name).
fn names(c: &mut Client) -> Vec<String> {
    c.metadata(&[]).unwrap().topics.into_iter().map(|t| t.name).collect()
}

/// Every record of a partition on a server, as `each` makes it of the
/// record, fetched 64 KiB at a time (several replies for most partitions).
fn fetch_each<T>(c: &mut Client, topic: &str, p: u32, mut each: impl FnMut(&FetchedRecord<'_>) -> T) -> Vec<T> {
    let (mut out, mut offset) = (Vec::new(), 0);
    loop {
        let r = c.fetch(topic, p, offset, 64 << 10, Duration::ZERO).unwrap();
        if r.next_offset <= offset {
            return out;
        }
        out.extend(r.records_at(offset).map(|rec| each(&rec.unwrap())));
        offset = r.next_offset;
    }
}

fn text(v: Option<&[u8]>) -> String {
    String::from_utf8_lossy(v.unwrap_or_default()).into_owned()
}

/// The `seq` header's value of a record.
fn seq_of(r: &FetchedRecord<'_>) -> Option<Vec<u8>> {
    r.headers.clone().filter(|(k, _)| *k == b"seq").find_map(|(_, v)| v).map(<[u8]>::to_vec)
}

/// Every record of a partition on a server: offset, value.
fn fetch_all(c: &mut Client, topic: &str, p: u32) -> Vec<(u64, String)> {
    fetch_each(c, topic, p, |r| (r.offset, text(r.value)))
}

/// One record of an indexed topic: offset, value, its `seq` index value.
type Indexed = (u64, String, i64);

/// Record `i` of partition `p` of an indexed topic: its value and `seq`
/// (10 per record, so a `seq` range maps to offsets by hand).
fn indexed(p: u32, i: u64) -> Indexed {
    (i, format!("p{p}i{i}"), 10 * i as i64)
}

/// Records `from..from + n` of partition `p`, as [`indexed`] makes them.
fn indexed_batch(p: u32, from: u64, n: u64) -> Vec<u8> {
    let mut b = BatchBuilder::new(from as i64);
    for i in from..from + n {
        let (_, v, seq) = indexed(p, i);
        b.push(i as i64, None, Some(v.as_bytes()), &[(b"seq", Some(&seq.to_le_bytes()[..]))]);
    }
    b.finish()
}

/// Every record of an indexed partition on a server, with its `seq`.
fn fetch_indexed(c: &mut Client, topic: &str, p: u32) -> Vec<Indexed> {
    fetch_each(c, topic, p, |r| (r.offset, text(r.value), seq_of(r).map_or(-1, |v| i64::from_le_bytes(v.try_into().unwrap()))))
}

fn seq(value: i64) -> QueryEnd<'static> {
    QueryEnd::Index { name: "seq", value }
}

// Proves: a topic the writer creates while the follower runs, with a named
// index, appears on the follower: Metadata lists it beside the topic that
// was there, describe names its index, a lookup by time finds its record,
// every record is served at its offset with its index value, and a range
// query by the index is answered with the bounds its values give.
fn a_topic_the_writer_creates_appears_on_the_follower() {
    let dir = test_dir("follow-more-create");
    let writer = Engine::open(&dir, writer_cfg()).unwrap();
    writer.create_topic("before", 1).unwrap();
    writer.append("before", 0, harness::batch("b", 3, 1)).unwrap();
    let follower = Serve::on(&dir).args(&["--read-only"]).start();
    let mut c = follower.client();
    assert_eq!(names(&mut c), ["before"]);
    writer.create_topic_indexed("idx", PARTITIONS, TopicRetention::default(), &["seq".to_string()]).unwrap();
    for p in 0..PARTITIONS {
        for from in (0..400).step_by(10) {
            writer.append("idx", p, indexed_batch(p, from, 10)).unwrap();
        }
    }
    let all_in = wait_until(HANG, || (0..PARTITIONS).all(|p| latest(&mut c, "idx", p) == Some(400)));
    assert!(all_in, "the follower never served the new topic's 400 records a partition\n{}", follower.stderr_text());
    assert_eq!(names(&mut c), ["before", "idx"]);
    assert_eq!(c.describe_topic("idx").unwrap().indices, ["seq"]);
    // Record i's timestamp is i ms: the time index was built as the follower scanned.
    assert_eq!(c.list_offsets("idx", 0, OffsetSpec::Timestamp(150)).unwrap(), Some(150));
    assert_eq!(c.list_offsets("idx", 0, OffsetSpec::Timestamp(400)).unwrap(), None);
    for p in 0..PARTITIONS {
        assert_eq!(fetch_indexed(&mut c, "idx", p), (0..400).map(|i| indexed(p, i)).collect::<Vec<_>>(), "partition {p}");
    }
    // seq 95..=3005: the first record at or above 95 is 10 (seq 100), the
    // last at or below 3005 is 300 (seq 3000).
    let b = c.query("idx", 1, seq(95), seq(3005), Duration::ZERO).unwrap();
    assert_eq!((b.from, b.end, b.open), (10, 301, false), "{b:?}");
    let mut seen = Vec::new();
    c.for_each_in_range("idx", 1, &b, 4096, |r| {
        seen.push((r.offset, String::from_utf8_lossy(r.value.unwrap_or_default()).into_owned()));
        std::ops::ControlFlow::Continue(())
    })
    .unwrap();
    assert_eq!(seen, (10..301).map(|i| (i, indexed(1, i).1)).collect::<Vec<_>>());
    assert_eq!(fetch_all(&mut c, "before", 0), harness::read_to_end(&writer, "before", 0, 0, 1 << 20));
    writer.shutdown().unwrap();
}

// Proves: a range query parked on the follower because the writer has not
// written its end yet is answered once the writer appends past that end,
// with the bounds the new records give (closed), not left to its wait.
fn a_waiting_query_is_answered_by_the_writers_append() {
    let dir = test_dir("follow-more-query-wait");
    let writer = Engine::open(&dir, writer_cfg()).unwrap();
    writer.create_topic_indexed("idx", 1, TopicRetention::default(), &["seq".to_string()]).unwrap();
    writer.append("idx", 0, indexed_batch(0, 0, 10)).unwrap();
    let follower = Serve::on(&dir).args(&["--read-only"]).start();
    let mut c = follower.client();
    assert!(wait_until(HANG, || latest(&mut c, "idx", 0) == Some(10)), "{}", follower.stderr_text());
    // seq 150..=250 is records 15..=25: none is written yet, so the range is open.
    let b = c.query("idx", 0, seq(150), seq(250), Duration::ZERO).unwrap();
    assert!(b.open, "a range past the end is open: {b:?}");
    let addr = follower.addr;
    let waiting = std::thread::spawn(move || {
        let mut c = Client::connect_timeout(addr, Duration::from_secs(10)).unwrap();
        c.set_timeout(Some(HANG + Duration::from_secs(60))).unwrap();
        c.query("idx", 0, seq(150), seq(250), HANG).unwrap()
    });
    // Not a timing assertion: a head start so that the query most likely
    // parks before the append (if it came after, the answer is the same).
    std::thread::sleep(Duration::from_millis(300));
    writer.append("idx", 0, indexed_batch(0, 10, 30)).unwrap();
    let b = waiting.join().unwrap();
    assert_eq!((b.from, b.end, b.open), (15, 26, false), "the parked query's answer: {b:?}\n{}", follower.stderr_text());
    writer.shutdown().unwrap();
}

/// A subscriber to `topic`/`p` from offset 0, to run on a thread: says on
/// `caught_up` when it has every record the partition holds now, and
/// returns how many records it received and the error that ended it.
fn subscriber_until_error(addr: SocketAddr, topic: &'static str, p: u32) -> impl FnOnce(std::sync::mpsc::Sender<()>) -> (u64, ClientError) {
    move |caught_up| {
        let mut c = Client::connect_timeout(addr, Duration::from_secs(10)).unwrap();
        let end = latest(&mut c, topic, p).unwrap();
        c.set_timeout(Some(HANG)).unwrap();
        let mut sub = c.subscribe(topic, p, strom::proto::SubscribeStart::Offset(0), 1 << 20).unwrap();
        let mut received = 0;
        loop {
            match sub.next_push() {
                Ok(Some(push)) => received += push.fetch.records_at(push.from_offset).count() as u64,
                Ok(None) => panic!("the subscription ended without an error"),
                Err(e) => return (received, e),
            }
            if received == end {
                let _ = caught_up.send(());
            }
        }
    }
}

// Proves: a topic the writer deletes while the follower runs disappears
// from it: Metadata no longer lists it, fetch and list offsets are refused
// UnknownTopic, a long poll parked on it and a subscription to it end with
// an error (not data, not their full wait), and the topic beside it is
// still followed.
fn a_deleted_topic_disappears_from_the_follower() {
    let dir = test_dir("follow-more-delete");
    let writer = Engine::open(&dir, writer_cfg()).unwrap();
    writer.create_topic("gone", PARTITIONS).unwrap();
    writer.create_topic("kept", 1).unwrap();
    for i in 0..20 {
        writer.append("gone", i % PARTITIONS, harness::batch(&format!("g{i}"), 5, i64::from(i))).unwrap();
        writer.append("kept", 0, harness::batch(&format!("k{i}"), 5, i64::from(i))).unwrap();
    }
    let follower = Serve::on(&dir).args(&["--read-only"]).start();
    let mut c = follower.client();
    assert!(wait_until(HANG, || latest(&mut c, "gone", 0) == Some(50)), "{}", follower.stderr_text());
    assert_eq!(fetch_all(&mut c, "gone", 1), harness::read_to_end(&writer, "gone", 1, 0, 1 << 20));
    let addr = follower.addr;
    let parked = std::thread::spawn(move || {
        let mut c = Client::connect_timeout(addr, Duration::from_secs(10)).unwrap();
        c.set_timeout(Some(HANG + Duration::from_secs(60))).unwrap();
        c.fetch("gone", 0, 50, 1 << 20, HANG)
    });
    let (caught_up, subscribed) = (std::sync::mpsc::channel(), subscriber_until_error(addr, "gone", 1));
    let sub = std::thread::spawn(move || subscribed(caught_up.0));
    assert!(caught_up.1.recv_timeout(HANG).is_ok(), "the subscription never caught up\n{}", follower.stderr_text());
    // A head start for the long poll to park (not a timing assertion).
    std::thread::sleep(Duration::from_millis(300));
    writer.delete_topic("gone").unwrap();
    assert!(wait_until(HANG, || names(&mut c) == ["kept"]), "the follower still lists {:?}\n{}", names(&mut c), follower.stderr_text());
    for p in 0..PARTITIONS {
        let e = c.fetch("gone", p, 0, 1 << 20, Duration::ZERO).unwrap_err();
        assert_eq!(server_code(&e), ErrorCode::UnknownTopic, "fetch: {e}");
        let e = c.list_offsets("gone", p, OffsetSpec::Latest).unwrap_err();
        assert_eq!(server_code(&e), ErrorCode::UnknownTopic, "list offsets: {e}");
    }
    match parked.join().unwrap() {
        Err(e) => assert!(matches!(server_code(&e), ErrorCode::UnknownTopic | ErrorCode::UnknownPartition), "the long poll: {e}"),
        Ok(r) => panic!("a long poll on a deleted topic was answered with data: {r:?}"),
    }
    let (received, end) = sub.join().unwrap();
    assert_eq!(received, 50, "the subscription's records before the deletion");
    assert!(matches!(server_code(&end), ErrorCode::UnknownTopic | ErrorCode::UnknownPartition), "the subscription's end: {end}");
    // The deletion did not stop the following: the topic beside it still grows.
    writer.append("kept", 0, harness::batch("after", 5, 100)).unwrap();
    assert!(wait_until(HANG, || latest(&mut c, "kept", 0) == Some(105)), "{}", follower.stderr_text());
    assert_eq!(fetch_all(&mut c, "kept", 0), harness::read_to_end(&writer, "kept", 0, 0, 1 << 20));
    writer.shutdown().unwrap();
}

// Proves: a topic the writer deletes and creates again under the same name
// (other partitions) while the follower runs is served as the new topic:
// its partition count, and only the new records from offset 0, never one of
// the old topic's.
fn a_topic_deleted_and_created_again_is_served_new() {
    let dir = test_dir("follow-more-recreate");
    let writer = Engine::open(&dir, writer_cfg()).unwrap();
    writer.create_topic("t", PARTITIONS).unwrap();
    for i in 0..10 {
        writer.append("t", i % PARTITIONS, harness::batch(&format!("old{i}"), 4, i64::from(i))).unwrap();
    }
    let follower = Serve::on(&dir).args(&["--read-only"]).start();
    let mut c = follower.client();
    assert!(wait_until(HANG, || latest(&mut c, "t", 0) == Some(20)), "{}", follower.stderr_text());
    writer.delete_topic("t").unwrap();
    writer.create_topic("t", 3).unwrap();
    for p in 0..3 {
        writer.append("t", p, harness::batch(&format!("new{p}"), 3, 1)).unwrap();
    }
    let partitions = |c: &mut Client| c.metadata(&["t"]).ok().map(|m| m.topics[0].partition_cores.len());
    let served = wait_until(HANG, || partitions(&mut c) == Some(3) && (0..3).all(|p| latest(&mut c, "t", p) == Some(3)));
    assert!(served, "the follower serves {:?} partitions\n{}", partitions(&mut c), follower.stderr_text());
    for p in 0..3 {
        let want: Vec<(u64, String)> = (0..3).map(|i| (i, format!("new{p}-{i}"))).collect();
        assert_eq!(fetch_all(&mut c, "t", p), want, "partition {p}");
    }
    writer.shutdown().unwrap();
}

/// Every record of [`TOPIC`] on `follower`, each checked to be
/// `value(p, o)` at its offset `o`; returns each partition's end.
fn check_served(follower: &Serve) -> Vec<u64> {
    let mut c = follower.client();
    (0..PARTITIONS)
        .map(|p| {
            let got = fetch_all(&mut c, TOPIC, p);
            for (i, (o, v)) in got.iter().enumerate() {
                assert!(*o == i as u64 && *v == value(p, *o), "partition {p}: offset {o} holds {v:?}, expected offset {i}");
            }
            got.len() as u64
        })
        .collect()
}

fn ends(follower: &Serve) -> Vec<u64> {
    let mut c = follower.client();
    (0..PARTITIONS).map(|p| latest(&mut c, TOPIC, p).unwrap_or(0)).collect()
}

/// Waits until each partition's end on `follower` is at least `want`.
fn wait_ends(follower: &Serve, want: &[u64]) -> bool {
    wait_until(HANG, || ends(follower).iter().zip(want).all(|(e, w)| e >= w))
}

// Proves: a follower killed (SIGKILL) while the writer appends does not
// disturb the writer (its acknowledgements keep coming), and a follower
// started again serves every record the writer acknowledged, each at its
// offset.
fn a_follower_killed_and_started_again() {
    let dir = test_dir("follow-more-follower-kill");
    let writer = Writer::start(&dir, false);
    let mut first = Serve::on(&dir).args(&["--read-only"]).start();
    assert!(wait_ends(&first, &[500, 500]), "the first follower serves {:?}\n{}", ends(&first), first.stderr_text());
    first.kill();
    let at_kill = writer.acked();
    let more: Vec<u64> = at_kill.iter().map(|a| a + 1000).collect();
    let going = wait_until(HANG, || writer.acked().iter().zip(&more).all(|(a, m)| a >= m));
    assert!(going, "the writer's acknowledgements stopped at {:?} after the follower's kill (at {at_kill:?})", writer.acked());
    let again = Serve::on(&dir).args(&["--read-only"]).start();
    let acked = writer.kill();
    assert!(wait_ends(&again, &acked), "the follower started again serves {:?} of {acked:?}\n{}", ends(&again), again.stderr_text());
    let served = check_served(&again);
    assert!(served.iter().zip(&acked).all(|(s, a)| s >= a), "served {served:?}, acknowledged {acked:?}");
}

// Proves: a follower started after the writer created its topic but before
// its first append, and one started while the writer was killed, both serve
// everything the writer appends afterwards across its restart: each
// record at its offset, up to exactly what the writer's log holds.
fn followers_before_and_between_writers() {
    let dir = test_dir("follow-more-before");
    let mut writer = Writer::start(&dir, true);
    let early = Serve::on(&dir).args(&["--read-only"]).start();
    let mut c = early.client();
    assert_eq!(names(&mut c), [TOPIC]);
    assert_eq!(ends(&early), [0, 0], "the writer has appended nothing yet");
    writer.go();
    // Enough that the writer rolls segments the early follower never saw at start.
    assert!(wait_until(HANG, || writer.acked().iter().all(|&a| a >= 1500)), "the writer acknowledged too little: {:?}", writer.acked());
    let acked = writer.kill();
    assert!(wait_ends(&early, &acked), "the early follower serves {:?}, acknowledged {acked:?}\n{}", ends(&early), early.stderr_text());
    let between = Serve::on(&dir).args(&["--read-only"]).start();
    assert!(wait_ends(&between, &acked), "the follower started while the writer was down serves {:?} of {acked:?}", ends(&between));
    let writer = Writer::start(&dir, false);
    let past: Vec<u64> = acked.iter().map(|a| a + 1500).collect();
    assert!(wait_until(HANG, || writer.acked().iter().zip(&past).all(|(a, p)| a >= p)), "the restarted writer: {:?}", writer.acked());
    let acked = writer.kill();
    // The writer's log as its next open recovers it: every follower ends there.
    let e = Engine::open(&dir, writer_cfg()).unwrap();
    let log_ends: Vec<u64> = (0..PARTITIONS).map(|p| e.partition_stat(TOPIC, p).unwrap().end_offset).collect();
    assert!(log_ends.iter().zip(&acked).all(|(l, a)| l >= a), "the log ends at {log_ends:?}, acknowledged {acked:?}");
    for (name, f) in [("early", &early), ("between", &between)] {
        assert!(wait_until(HANG, || ends(f) == log_ends), "the {name} follower ends at {:?}, the log at {log_ends:?}", ends(f));
        assert_eq!(check_served(f), log_ends, "the {name} follower");
    }
    e.shutdown().unwrap();
    println!("acknowledged {acked:?}, the log ends at {log_ends:?}");
}

/// A `strom serve` started by a command of its own (not [`Serve`], whose
/// command always names a data directory as the test's user), killed and
/// reaped however the test ends.
struct Server {
    child: Child,
    addr: SocketAddr,
    /// The rest of its "serving on" line.
    ready: String,
    lines: Lines,
}

impl Server {
    fn start(cmd: &mut Command) -> Server {
        cmd.args(["--listen", "127.0.0.1:0", "--cores", "2"]).env_remove("STROM_DATA_DIR").env_remove("STROM_CONFIG");
        let c = harness::child::spawn_until(cmd, "strom: serving on ").unwrap_or_else(|lines| panic!("no start:\n{}", lines.join("\n")));
        let addr = c.ready.split(',').next().unwrap().parse().unwrap();
        Server { child: c.child, addr, ready: c.ready, lines: c.lines }
    }

    fn client(&self) -> Client {
        let mut c = Client::connect_timeout(self.addr, Duration::from_secs(10)).unwrap();
        c.set_timeout(Some(Duration::from_secs(30))).unwrap();
        c
    }

    fn stderr_text(&self) -> String {
        self.lines.lock().unwrap().iter().map(|(_, l)| l.as_str()).collect::<Vec<_>>().join("\n")
    }

    /// SIGTERM, and its exit status (None if it did not exit within [`HANG`]).
    fn stop(&mut self) -> Option<ExitStatus> {
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(self.child.id() as i32), nix::sys::signal::Signal::SIGTERM).unwrap();
        let deadline = Instant::now() + HANG;
        while Instant::now() < deadline {
            if let Some(status) = self.child.try_wait().unwrap() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Makes every directory under `dir` (and itself) 0755 and every file 0644:
/// readable by anyone, writable by its owner (root) alone.
fn readable_not_writable(dir: &Path) {
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    for e in std::fs::read_dir(dir).unwrap().map(Result::unwrap) {
        if e.file_type().unwrap().is_dir() {
            readable_not_writable(&e.path());
        } else {
            std::fs::set_permissions(e.path(), std::fs::Permissions::from_mode(0o644)).unwrap();
        }
    }
}

/// `program` as `nobody` (no capabilities, no groups) under an 8 MiB
/// RLIMIT_MEMLOCK, the limit most distributions give a user.
fn as_nobody(program: &str) -> Command {
    let mut cmd = Command::new("prlimit");
    cmd.args(["--memlock=8388608:8388608", "setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups", "--", program]);
    cmd
}

fn segments(dir: &Path) -> usize {
    (0..2)
        .filter_map(|log| std::fs::read_dir(dir.join(format!("log-{log:04}"))).ok())
        .map(|d| d.flatten().filter(|e| e.file_name().to_string_lossy().ends_with(".seg")).count())
        .sum()
}

// Proves: `strom serve --read-only` run as `nobody` under an 8 MiB memlock
// limit, on a directory root writes and `nobody` may read but not write,
// starts, serves every record root appended before and after its start
// (segments created since included), refuses a produce ReadOnly, and
// stops cleanly on SIGTERM.
fn a_follower_as_nobody() {
    // The writer's new segments must be readable by others, as under the
    // common umask (a stricter one would hide them from any other user).
    nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(0o022));
    let dir = test_dir("follow-more-nobody");
    let writer = Engine::open(&dir, writer_cfg()).unwrap();
    writer.create_topic(TOPIC, PARTITIONS).unwrap();
    // Batches of 10 records, `value(p, o)` at offset `o`.
    let append = |from: u64, to: u64| {
        for o in (from..to).step_by(10) {
            for p in 0..PARTITIONS {
                let values: Vec<String> = (o..o + 10).map(|o| value(p, o)).collect();
                let values: Vec<&[u8]> = values.iter().map(String::as_bytes).collect();
                writer.append(TOPIC, p, harness::batch_of(&values)).unwrap();
            }
        }
    };
    append(0, 200);
    readable_not_writable(&dir);
    let probe = dir.join("probe");
    let wrote = as_nobody("sh").arg("-c").arg(format!("echo x > {}", probe.display())).output().unwrap();
    assert!(!wrote.status.success() && !probe.exists(), "nobody can write into the data directory: the test means nothing");
    let bin = env!("CARGO_BIN_EXE_strom");
    let mut follower = Server::start(as_nobody(bin).args(["serve", "--read-only", "--data-dir"]).arg(&dir));
    assert!(follower.ready.contains("(read-only)"), "{}", follower.ready);
    let mut c = follower.client();
    // Appends until the writer has rolled to a segment the follower did not see at start.
    let (before, mut end) = (segments(&dir), 200);
    while segments(&dir) <= before && end < 100_000 {
        append(end, end + 500);
        end += 500;
    }
    assert!(segments(&dir) > before, "the writer rolled no segment ({before}) in {end} records a partition");
    let all_in = wait_until(HANG, || (0..PARTITIONS).all(|p| latest(&mut c, TOPIC, p) == Some(end)));
    assert!(all_in, "the follower as nobody serves up to {:?} of {end}\n{}", latest(&mut c, TOPIC, 0), follower.stderr_text());
    for p in 0..PARTITIONS {
        let want: Vec<(u64, String)> = (0..end).map(|o| (o, value(p, o))).collect();
        assert_eq!(fetch_all(&mut c, TOPIC, p), want, "partition {p}");
    }
    let e = c.produce_values(TOPIC, 0, &[b"refused"]).unwrap_err();
    assert_eq!(server_code(&e), ErrorCode::ReadOnly, "{e}");
    drop(c);
    let status = follower.stop();
    assert!(status.is_some_and(|s| s.success()), "the follower's exit: {status:?}\n{}", follower.stderr_text());
    writer.shutdown().unwrap();
}

/// kcat against a Kafka listener, `-q` (no informational lines).
fn kcat(kafka: SocketAddr) -> Command {
    let mut cmd = Command::new("kcat");
    cmd.arg("-b").arg(kafka.to_string()).arg("-q");
    cmd
}

// Proves: a Kafka client on a follower's Kafka listener consumes a topic
// the writer appends to: kcat, started before the second half is written,
// receives every record at its offset, in order, and ends; a kcat produce
// is refused (a policy violation) and the topic is unchanged on both sides.
fn kcat_on_a_follower() {
    let dir = test_dir("follow-more-kcat");
    let writer = Engine::open(&dir, writer_cfg()).unwrap();
    writer.create_topic("k", 1).unwrap();
    let append = |from: u64, to: u64| {
        for o in (from..to).step_by(10) {
            let values: Vec<String> = (o..o + 10).map(|o| format!("k{o}")).collect();
            let values: Vec<&[u8]> = values.iter().map(String::as_bytes).collect();
            writer.append("k", 0, harness::batch_of(&values)).unwrap();
        }
    };
    append(0, 100);
    let follower = Serve::on(&dir).kafka().args(&["--read-only"]).start();
    let mut c = follower.client();
    assert!(wait_until(HANG, || latest(&mut c, "k", 0) == Some(100)), "{}", follower.stderr_text());
    let kafka = follower.kafka_addr();
    let mut consume = kcat(kafka);
    consume.args(["-C", "-t", "k", "-p", "0", "-o", "beginning", "-c", "300", "-f", "%o %s\\n"]);
    let mut consumer = consume.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    append(100, 300);
    let ended = wait_until(HANG, || consumer.try_wait().unwrap().is_some());
    if !ended {
        let _ = consumer.kill();
    }
    let out = consumer.wait_with_output().unwrap();
    assert!(ended && out.status.success(), "kcat did not end with 300 records: {}", String::from_utf8_lossy(&out.stderr));
    let got: Vec<String> = String::from_utf8_lossy(&out.stdout).lines().map(str::to_string).collect();
    assert_eq!(got, (0..300).map(|o| format!("{o} k{o}")).collect::<Vec<_>>());
    // Not `-q`: the refusal is what kcat prints.
    let mut produce = Command::new("kcat")
        .args(["-b", &kafka.to_string(), "-P", "-t", "k", "-p", "0"])
        .stdin(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    produce.stdin.take().unwrap().write_all(b"refused\n").unwrap();
    let out = produce.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.to_lowercase().contains("policy"), "kcat produce to a follower ({}): {err}", out.status);
    assert_eq!(latest(&mut c, "k", 0), Some(300));
    assert_eq!(writer.partition_stat("k", 0).unwrap().end_offset, 300);
    writer.shutdown().unwrap();
}

// Proves: a follower of a directory no writer has opened (missing, or
// empty) is refused before it serves, with a message saying to open it for
// writing first, and creates nothing there.
fn a_follower_of_a_directory_no_writer_opened_is_refused() {
    let base = test_dir("follow-more-never-opened");
    let empty = base.join("empty");
    std::fs::create_dir(&empty).unwrap();
    for dir in [base.join("missing"), empty.clone()] {
        let refused = Serve::on(&dir).args(&["--read-only"]).try_start().err().expect("a follower of a directory no writer opened started");
        let text = refused.join("\n");
        assert!(text.contains("not a Strom data directory") && text.contains("open it for writing"), "{text}");
    }
    assert!(!base.join("missing").exists(), "the follower created the directory");
    assert_eq!(std::fs::read_dir(&empty).unwrap().count(), 0, "the follower wrote into the empty directory");
}
