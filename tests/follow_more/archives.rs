//! `strom serve --archive-dir` with no data directory (archives served
//! alone), and archives beside a follower's data directory.
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use strom::catalog::TopicRetention;
use strom::client::Client;
use strom::engine::Engine;
use strom::proto::ErrorCode;
use strom::wire::batch::BatchBuilder;

use super::harness::serve::{HANG, Serve};
use super::harness::{self, test_dir};
use super::{Server, fetch_each, latest, names, seq, seq_of, server_code, wait_until, writer_cfg};

/// One record as a server serves it: offset, timestamp, key, value, `seq`.
type Rec = (u64, i64, Option<Vec<u8>>, Option<Vec<u8>>, Option<Vec<u8>>);

fn recs_all(c: &mut Client, topic: &str, p: u32) -> Vec<Rec> {
    fetch_each(c, topic, p, |r| (r.offset, r.timestamp_ms, r.key.map(<[u8]>::to_vec), r.value.map(<[u8]>::to_vec), seq_of(r)))
}

fn strom_cli(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_strom")).args(args).env_remove("STROM_ADDR").output().unwrap()
}

/// Every file under `dir`, as paths relative to it, with its length.
fn listing(dir: &Path) -> Vec<(PathBuf, u64)> {
    let mut out: Vec<(PathBuf, u64)> =
        std::fs::read_dir(dir).unwrap().map(|e| e.unwrap()).map(|e| (PathBuf::from(e.file_name()), e.metadata().unwrap().len())).collect();
    out.sort();
    out
}

/// A source server with topic `a` (2 partitions, index `seq`, keys and
/// timestamps) and `b` (1 partition), archived into `archives/`: `a`
/// through the server (`--addr`), `b` from its data directory while it
/// runs (`--data-dir`). Returns the server and the archives' directory.
fn archived(dir: &Path) -> (Serve, PathBuf) {
    let source = Serve::on(&dir.join("source")).start();
    let mut c = source.client();
    c.create_topic_indexed("a", 2, TopicRetention::default(), &["seq".to_string()]).unwrap();
    c.create_topic("b", 1).unwrap();
    for (p, batches) in [(0u32, 60u64), (1, 7)] {
        for b in 0..batches {
            let mut builder = BatchBuilder::new(1_700_000_000_000 + b as i64);
            for i in 0..20u64 {
                let (key, s) = (format!("key-{p}-{b}-{i}"), ((b * 20 + i) as i64 * 3).to_le_bytes());
                builder.push(1_700_000_000_000 + (b * 20 + i) as i64, Some(key.as_bytes()), Some(&[i as u8; 37]), &[(b"seq", Some(&s))]);
            }
            c.produce("a", p, &builder.finish()).unwrap();
        }
    }
    for i in 0..30 {
        c.produce("b", 0, &harness::batch(&format!("b{i}"), 9, i)).unwrap();
    }
    let archives = dir.join("archives");
    std::fs::create_dir_all(&archives).unwrap();
    let (a, b) = (archives.join("a.archive"), archives.join("b.archive"));
    let addr = source.addr.to_string();
    for (args, file) in
        [(["archive", "a", "--addr", &addr], &a), (["archive", "b", "--data-dir", dir.join("source").to_str().unwrap()], &b)]
    {
        let out = strom_cli(&[&args[..], &["--out", file.to_str().unwrap()][..]].concat());
        assert!(out.status.success(), "strom {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    }
    (source, archives)
}

// Proves: `strom serve --archive-dir D` with no data directory serves the
// archives in D alone: Metadata lists exactly their topics, every record of
// every partition comes back equal (offset, timestamp, key, value, index
// value) to what the source served, lookups by time and a range query by
// the named index agree, a subscription receives every record once,
// committed offsets, topic create, delete and produce are refused ReadOnly with the
// topic list unchanged, nothing is written into D, and SIGTERM stops it
// with status 0.
pub fn archives_served_alone() {
    let dir = test_dir("follow-more-archives-alone");
    let (source, archives) = archived(&dir);
    let before = listing(&archives);
    let bin = env!("CARGO_BIN_EXE_strom");
    let mut alone = Server::start(Command::new(bin).args(["serve", "--archive-dir"]).arg(&archives));
    assert!(alone.ready.contains("no data dir") && alone.ready.contains("2 archived topics"), "{}", alone.ready);
    let (mut c, mut src) = (alone.client(), source.client());
    assert_eq!(names(&mut c), ["a", "b"]);
    let m = c.metadata(&[]).unwrap();
    assert_eq!(m.topics.iter().map(|t| t.partition_cores.len()).collect::<Vec<_>>(), [2, 1]);
    for (topic, p) in [("a", 0), ("a", 1), ("b", 0)] {
        let want = recs_all(&mut src, topic, p);
        assert!(!want.is_empty());
        assert!(recs_all(&mut c, topic, p) == want, "{topic}/{p}: the archive-only server's records differ from the source's");
        assert_eq!(latest(&mut c, topic, p), Some(want.len() as u64));
    }
    let (ours, theirs) = (c.query("a", 0, seq(300), seq(2000), Duration::ZERO), src.query("a", 0, seq(300), seq(2000), Duration::ZERO));
    let (ours, theirs) = (ours.unwrap(), theirs.unwrap());
    assert_eq!((ours.from, ours.end, ours.open), (theirs.from, theirs.end, theirs.open));
    assert_eq!((ours.from, ours.end), (100, 667), "seq is 3 per record: 300..=2000 is records 100..=666");
    for r in recs_all(&mut src, "a", 1).iter().step_by(13) {
        let at = |c: &mut Client| c.list_offsets("a", 1, strom::proto::OffsetSpec::Timestamp(r.1)).unwrap();
        assert_eq!(at(&mut c), at(&mut src), "list offsets at time {}", r.1);
    }
    check_subscription(&mut c, &recs_all(&mut src, "b", 0));
    let refused = [
        ("commit", c.commit_offset("g", "a", 0, 5)),
        ("create", c.create_topic("c", 1)),
        ("create an archive topic's name", c.create_topic("a", 1)),
        ("delete", c.delete_topic("a")),
        ("produce", c.produce_values("a", 0, &[b"x"]).map(drop)),
    ];
    for (what, res) in refused {
        let e = res.expect_err(what);
        assert_eq!(server_code(&e), ErrorCode::ReadOnly, "{what}: {e}");
    }
    assert_eq!(names(&mut c), ["a", "b"], "a refused write changed the topics");
    drop(c);
    let status = alone.stop();
    assert!(status.is_some_and(|s| s.success()), "exit {status:?}:\n{}", alone.stderr_text());
    assert_eq!(listing(&archives), before, "the archive-only server wrote into its archive directory");
}

/// A subscription to `b` from offset 0 receives `want`, each record once
/// at its offset, then is cancelled.
fn check_subscription(c: &mut Client, want: &[Rec]) {
    let mut sub = c.subscribe("b", 0, strom::proto::SubscribeStart::Offset(0), 1 << 20).unwrap();
    let mut got = Vec::new();
    while got.len() < want.len() {
        let push = sub.next_push().unwrap().expect("a push");
        got.extend(push.fetch.records_at(push.from_offset).map(|r| {
            let r = r.unwrap();
            (r.offset, r.timestamp_ms, r.key.map(<[u8]>::to_vec), r.value.map(<[u8]>::to_vec), seq_of(&r))
        }));
    }
    assert!(got == want, "the subscription's records differ from the source's");
    sub.cancel().unwrap();
}

/// The Kafka listener's address from a server's start-up lines.
fn kafka_addr(s: &Server) -> std::net::SocketAddr {
    let lines = s.stderr_text();
    let line =
        lines.lines().find_map(|l| l.strip_prefix("strom: kafka listener on ")).unwrap_or_else(|| panic!("no Kafka listener:\n{lines}"));
    line.split([' ', ',']).next().unwrap().parse().unwrap()
}

// Proves: kcat on the Kafka listener of a server with archives alone lists
// exactly the archive topics, reads every record of one (offsets and values
// as the source serves them) to its end, and its produce is refused.
pub fn kcat_reads_archives_served_alone() {
    let dir = test_dir("follow-more-archives-alone-kcat");
    let (source, archives) = archived(&dir);
    let bin = env!("CARGO_BIN_EXE_strom");
    let alone = Server::start(Command::new(bin).args(["serve", "--kafka-listen", "127.0.0.1:0", "--archive-dir"]).arg(&archives));
    let kafka = kafka_addr(&alone).to_string();
    let listed = Command::new("kcat").args(["-b", &kafka, "-L"]).output().unwrap();
    let listed = String::from_utf8_lossy(&listed.stdout);
    let topics: Vec<&str> = listed.lines().filter(|l| l.trim_start().starts_with("topic ")).map(str::trim).collect();
    assert_eq!(topics, ["topic \"a\" with 2 partitions:", "topic \"b\" with 1 partitions:"], "{listed}");
    let read = Command::new("kcat")
        .args(["-b", &kafka, "-q", "-C", "-t", "b", "-p", "0", "-o", "beginning", "-e", "-f", "%o %s\\n"])
        .output()
        .unwrap();
    let got: Vec<String> = String::from_utf8_lossy(&read.stdout).lines().map(str::to_string).collect();
    let want = recs_all(&mut source.client(), "b", 0);
    let want: Vec<String> = want.iter().map(|r| format!("{} {}", r.0, String::from_utf8_lossy(r.3.as_deref().unwrap()))).collect();
    assert!(
        read.status.success() && got == want,
        "kcat read {} records of {}: {}",
        got.len(),
        want.len(),
        String::from_utf8_lossy(&read.stderr)
    );
    let mut produce =
        Command::new("kcat").args(["-b", &kafka, "-P", "-t", "b", "-p", "0"]).stdin(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    produce.stdin.take().unwrap().write_all(b"refused\n").unwrap();
    let out = produce.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.to_lowercase().contains("policy"), "kcat produce ({}): {err}", out.status);
}

// Proves: `strom serve` with neither a data directory nor an archive
// directory exits 1 before it serves, with a message naming both flags.
pub fn serve_with_neither_directory_exits_1() {
    let out = Command::new(env!("CARGO_BIN_EXE_strom"))
        .args(["serve", "--listen", "127.0.0.1:0", "--cores", "1"])
        .env_remove("STROM_DATA_DIR")
        .env_remove("STROM_ARCHIVE_DIR")
        .env_remove("STROM_CONFIG")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("--data-dir") && err.contains("--archive-dir"), "{err}");
    assert!(!err.contains("serving on"), "{err}");
}

// Proves: a follower serving archives beside its data directory keeps one
// topic per name when its writer, after the follower started, creates a
// topic under an archive topic's name: Metadata lists the name once, and
// each partition it gives for it is served (the clash a start refuses does
// not slip in later: the archive's topic is served, the writer's left out).
pub fn a_live_topic_named_as_an_archive_topic_after_start_is_left_out() {
    let dir = test_dir("follow-more-archive-clash");
    let (_source, archives) = archived(&dir);
    let data = dir.join("data");
    let writer = Engine::open(&data, writer_cfg()).unwrap();
    writer.create_topic("before", 1).unwrap();
    let follower = Serve::on(&data).args(&["--read-only", "--archive-dir", archives.to_str().unwrap()]).start();
    let mut c = follower.client();
    assert_eq!(names(&mut c), ["a", "b", "before"]);
    // "a" is an archive topic of 2 partitions; the writer's has 3.
    writer.create_topic("a", 3).unwrap();
    for p in 0..3 {
        writer.append("a", p, harness::batch("live", 5, 1)).unwrap();
    }
    // A topic created after it: once the follower lists it, it has read the catalog holding "a".
    writer.create_topic("marker", 1).unwrap();
    assert!(wait_until(HANG, || names(&mut c).contains(&"marker".to_string())), "{}", follower.stderr_text());
    let listed = names(&mut c);
    let mut unique = listed.clone();
    unique.dedup();
    assert_eq!(listed, unique, "Metadata lists a topic twice");
    let partitions = c.metadata(&["a"]).unwrap().topics[0].partition_cores.len() as u32;
    for p in 0..partitions {
        let served = c.fetch("a", p, 0, 1 << 20, Duration::ZERO);
        assert!(served.is_ok(), "Metadata gives \"a\" {partitions} partitions, partition {p} is not served: {:?}", served.err());
    }
    writer.shutdown().unwrap();
}

// Proves: a Kafka group's OffsetCommit on an archive topic of a writable
// server is refused POLICY_VIOLATION (an archive's offsets are as immutable
// as its records), while a live topic beside it takes commits.
pub fn kafka_commit_on_an_archive_topic_is_refused() {
    let dir = test_dir("follow-more-archive-commit");
    let (_source, archives) = archived(&dir);
    let server = Serve::on(&dir.join("data")).kafka().args(&["--archive-dir", archives.to_str().unwrap()]).start();
    let mut c = server.client();
    c.create_topic("live", 1).unwrap();
    c.produce("live", 0, &harness::batch("l", 3, 1)).unwrap();
    let boot = server.kafka_addr().to_string();
    let refused = super::kafka::python_commit(&boot, "a");
    assert!(refused.starts_with("commit refused") && refused.contains("PolicyViolation"), "{refused}");
    assert_eq!(super::kafka::python_commit(&boot, "live"), "commit accepted");
    assert_eq!(c.fetch_offset("g", "live", 0).unwrap(), Some(1));
}
