//! Serving archives (issue 17 item 2): `strom serve --data-dir X --archive D`
//! serves every archive in D, made by the real `strom archive` from a real
//! server, through the native API as live topics are served (fetch, list
//! offsets, range queries, subscriptions, metadata, describe), refuses
//! writes to them with ReadOnly, still serves its live topics, and refuses
//! at start a topic named twice or a damaged archive, naming the files;
//! and kcat reads an archive topic through the Kafka listener (ignored,
//! with the reason, on a machine without kcat).
mod harness;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use harness::serve::Serve;
use harness::skip::{self, Need};
use harness::{Rng, test_dir};
use strom::archive::Archive;
use strom::client::{Client, ClientError, FetchResult};
use strom::proto::{ErrorCode, OffsetSpec, QueryEnd, SubscribeStart};
use strom::wire::batch::BatchBuilder;

fn main() {
    skip::main(vec![
        skip::trial("archives_served_beside_live_topics", &[], archives_served_beside_live_topics),
        skip::trial("a_subscription_reads_an_archive_once_then_waits", &[], a_subscription_reads_an_archive_once_then_waits),
        skip::trial("clashes_and_damage_are_refused_at_start", &[], clashes_and_damage_are_refused_at_start),
        skip::trial("archive_topics_follow_auth_permissions", &[], archive_topics_follow_auth_permissions),
        skip::trial("kcat_reads_an_archive_topic", &[Need::Tools(&["kcat"], "kcat")], kcat_reads_an_archive_topic),
    ]);
}

fn strom(addr: SocketAddr, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_strom")).args(args).env("STROM_ADDR", addr.to_string()).output().unwrap()
}

fn ok(out: Output) -> Output {
    assert!(out.status.success(), "{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    out
}

/// One record: offset, timestamp, key, value, the `seq` index value.
type Rec = (u64, i64, Option<Vec<u8>>, Option<Vec<u8>>, i64);

fn recs_of(reply: &FetchResult, from: u64) -> Vec<Rec> {
    reply
        .records_at(from)
        .map(|r| {
            let r = r.unwrap();
            let seq =
                r.headers.filter(|(k, _)| *k == b"seq").find_map(|(_, v)| v).map_or(-1, |v| i64::from_le_bytes(v.try_into().unwrap()));
            (r.offset, r.timestamp_ms, r.key.map(<[u8]>::to_vec), r.value.map(<[u8]>::to_vec), seq)
        })
        .collect()
}

/// Every record of a partition, fetched `max_bytes` at a time; checks that
/// each reply holds at most `max_bytes` of batches unless it is one batch.
fn fetch_all(client: &mut Client, topic: &str, p: u32, max_bytes: u32) -> Vec<Rec> {
    let (mut out, mut offset) = (Vec::new(), 0);
    loop {
        let r = client.fetch(topic, p, offset, max_bytes, Duration::ZERO).unwrap();
        if r.next_offset <= offset {
            return out;
        }
        let got = recs_of(&r, offset);
        let batches = got.iter().map(|r| r.0).filter(|&o| o >= offset).count();
        assert!(r.batches.len() <= max_bytes as usize || batches <= 50, "a reply of {} bytes for max_bytes {max_bytes}", r.batches.len());
        out.extend(got);
        offset = r.next_offset;
    }
}

/// `batches` batches of 50 records to partition `p` of `topic`, with `seq`
/// values that repeat and never decrease and timestamps that go back and
/// forth within a batch.
fn produce(client: &mut Client, rng: &mut Rng, topic: &str, p: u32, batches: u64) {
    let mut seq = 0i64;
    for b in 0..batches {
        let base_ts = 1_700_000_000_000 + b as i64 * 1_000;
        let mut builder = BatchBuilder::new(base_ts);
        for i in 0..50u64 {
            seq += rng.below(3) as i64;
            let value: Vec<u8> = (0..rng.below(400)).map(|k| (k + i) as u8).collect();
            let key = format!("k-{p}-{b}-{i}");
            let s = seq.to_le_bytes();
            builder.push(base_ts + rng.below(900) as i64, Some(key.as_bytes()), Some(&value), &[(b"seq", Some(&s[..]))]);
        }
        client.produce(topic, p, &builder.finish()).unwrap();
    }
}

/// A server with topic `arc` (3 partitions, one empty, index `seq`) and
/// topic `ticks`, both archived into `archives/`; returns it and every
/// record of `arc` per partition.
fn archived_source(dir: &Path) -> (Serve, PathBuf, Vec<Vec<Rec>>) {
    let s = Serve::on(&dir.join("source")).cores(2).start();
    ok(strom(s.addr, &["topic", "create", "arc", "--partitions", "3", "--index", "seq"]));
    ok(strom(s.addr, &["topic", "create", "ticks", "--index", "seq"]));
    let mut client = s.client();
    let mut rng = Rng(0x5e7e_a4c1);
    for (p, batches) in [(0, 80), (1, 3), (2, 0)] {
        produce(&mut client, &mut rng, "arc", p, batches);
    }
    produce(&mut client, &mut rng, "ticks", 0, 5);
    let archives = dir.join("archives");
    std::fs::create_dir_all(&archives).unwrap();
    for topic in ["arc", "ticks"] {
        let file = archives.join(format!("{topic}.archive"));
        ok(strom(s.addr, &["archive", topic, "--out", file.to_str().unwrap()]));
    }
    let want = (0..3).map(|p| fetch_all(&mut client, "arc", p, 1 << 20)).collect();
    (s, archives, want)
}

fn server_code(e: &ClientError) -> ErrorCode {
    match e {
        ClientError::Server { code, .. } => *code,
        other => panic!("not a server error: {other}"),
    }
}

// Proves: every record of every archived partition is fetched back equal
// (in small and large replies), list offsets and range queries (by offset
// and by named index) agree with the records, metadata and describe list
// the archive topics beside the live ones, writes to an archive topic are
// refused ReadOnly with nothing changed, a live topic on the same server
// is still written and read, a file being written (.tmp) is skipped, and
// `strom archive` of the archive topic through this server copies it.
fn archives_served_beside_live_topics() {
    let dir = test_dir("archive-serve");
    let (source, archives, want) = archived_source(&dir);
    std::fs::write(archives.join("half.archive.tmp"), b"an archive being written").unwrap();
    let s = Serve::on(&dir.join("data")).cores(2).args(&["--archive", archives.to_str().unwrap()]).start();
    let mut c = s.client();
    for (p, want) in want.iter().enumerate() {
        let p = p as u32;
        assert_eq!(fetch_all(&mut c, "arc", p, 1 << 20), *want, "partition {p}, 1 MiB fetches");
        assert_eq!(fetch_all(&mut c, "arc", p, 3000), *want, "partition {p}, 3 KB fetches");
        let end = want.len() as u64;
        assert_eq!(c.list_offsets("arc", p, OffsetSpec::Earliest).unwrap(), Some(0));
        assert_eq!(c.list_offsets("arc", p, OffsetSpec::Latest).unwrap(), Some(end));
        let mut src = source.client();
        for r in want.iter().step_by(37) {
            let by_time = want.iter().find(|x| x.1 >= r.1).map(|x| x.0);
            assert_eq!(c.list_offsets("arc", p, OffsetSpec::Timestamp(r.1)).unwrap(), by_time, "partition {p}, time {}", r.1);
            assert_eq!(src.list_offsets("arc", p, OffsetSpec::Timestamp(r.1)).unwrap(), by_time, "the source agrees");
        }
        assert_eq!(c.list_offsets("arc", p, OffsetSpec::Timestamp(i64::MAX >> 1)).unwrap(), None);
        let past = c.fetch("arc", p, end + 1, 1000, Duration::ZERO).unwrap_err();
        assert_eq!(server_code(&past), ErrorCode::OffsetOutOfRange);
    }
    check_queries(&mut c, &want[0]);
    check_metadata(&mut c, &want);
    check_writes_refused(&mut c, &archives, &want);
    // An archive of the archive topic, made through this server, holds the same batches.
    let again = dir.join("again.archive");
    ok(strom(s.addr, &["archive", "arc", "--out", again.to_str().unwrap()]));
    let (a, b) = (Archive::open(&archives.join("arc.archive")).unwrap(), Archive::open(&again).unwrap());
    for p in 0..3 {
        let batches = |x: &Archive| x.chunks(p).flat_map(|c| c.unwrap().batches).collect::<Vec<u8>>();
        assert!(batches(&a) == batches(&b), "partition {p}: re-archived batches differ");
    }
    // A live topic on the same server: written and read back.
    c.create_topic("live", 1).unwrap();
    c.produce_values("live", 0, &[b"one", b"two"]).unwrap();
    let live = c.fetch("live", 0, 0, 1 << 20, Duration::ZERO).unwrap();
    let values: Vec<Vec<u8>> = live.records_from(0).map(|r| r.unwrap().1.unwrap().to_vec()).collect();
    assert_eq!(values, [b"one".to_vec(), b"two".to_vec()]);
}

/// Range queries of partition 0 against its records: by offsets, by
/// index values, and past the archive's end (answered at once, open).
fn check_queries(c: &mut Client, want: &[Rec]) {
    let end = want.len() as u64;
    let b = c.query("arc", 0, QueryEnd::Offset(10), QueryEnd::Offset(99), Duration::ZERO).unwrap();
    assert_eq!((b.from, b.end, b.open), (10, 100, false));
    let b = c.query("arc", 0, QueryEnd::Offset(-5), QueryEnd::Offset(-1), Duration::ZERO).unwrap();
    assert_eq!((b.from, b.end, b.open), (end - 5, end, false));
    let (lo, hi) = (want[500].4, want[1500].4);
    let b =
        c.query("arc", 0, QueryEnd::Index { name: "seq", value: lo }, QueryEnd::Index { name: "seq", value: hi }, Duration::ZERO).unwrap();
    let first = want.iter().position(|r| r.4 >= lo).unwrap() as u64;
    let past = want.iter().position(|r| r.4 > hi).unwrap() as u64;
    assert_eq!((b.from, b.end, b.open), (first, past, false), "seq {lo}..={hi}");
    let mut seen = Vec::new();
    c.for_each_in_range("arc", 0, &b, 4096, |r| {
        seen.push(r.offset);
        std::ops::ControlFlow::Continue(())
    })
    .unwrap();
    assert_eq!(seen, (first..past).collect::<Vec<_>>());
    // An end past the archive's: what exists, said open, even with a long
    // wait (an archive never grows; the client's timeout would end a wait).
    c.set_timeout(Some(Duration::from_secs(600))).unwrap();
    let b = c.query("arc", 0, QueryEnd::Offset(end as i64 - 3), QueryEnd::Offset(end as i64 + 100), Duration::from_secs(300)).unwrap();
    assert_eq!((b.from, b.end, b.open, b.high_watermark), (end - 3, end, true, end));
    let top = want.last().unwrap().4;
    let b = c
        .query("arc", 0, QueryEnd::Index { name: "seq", value: top }, QueryEnd::Index { name: "seq", value: top + 1 }, Duration::ZERO)
        .unwrap();
    assert!(b.open && b.end == end, "{b:?}");
    let e = c.query("arc", 0, QueryEnd::Index { name: "nope", value: 1 }, QueryEnd::Offset(-1), Duration::ZERO).unwrap_err();
    assert_eq!(server_code(&e), ErrorCode::InvalidArgument);
}

/// Metadata lists archive and live topics; describe tells an archive's offsets.
fn check_metadata(c: &mut Client, want: &[Vec<Rec>]) {
    c.create_topic("beside", 2).unwrap();
    let m = c.metadata(&[]).unwrap();
    let names: Vec<&str> = m.topics.iter().map(|t| t.name.as_str()).collect();
    assert_eq!(names, ["arc", "beside", "ticks"]);
    assert_eq!(m.topics[0].partition_cores.len(), 3);
    let d = c.describe_topic("arc").unwrap();
    assert_eq!(d.indices, ["seq"]);
    let ends: Vec<(u64, u64)> = d.partitions.iter().map(|p| (p.start_offset, p.end_offset)).collect();
    assert_eq!(ends, want.iter().map(|w| (0, w.len() as u64)).collect::<Vec<_>>());
}

/// Produce, create, delete, alter and commit on an archive topic: each
/// refused ReadOnly, the archive's file and records unchanged.
fn check_writes_refused(c: &mut Client, archives: &Path, want: &[Vec<Rec>]) {
    let file = archives.join("arc.archive");
    let before = std::fs::read(&file).unwrap();
    let refused = [
        ("produce", c.produce_values("arc", 0, &[b"x"]).map(drop)),
        ("create", c.create_topic("arc", 1)),
        ("delete", c.delete_topic("arc")),
        ("alter", c.alter_topic("arc", Some(Some(1000)), None).map(drop)),
        ("commit", c.commit_offset("g", "arc", 0, 5)),
    ];
    for (what, res) in refused {
        let e = res.expect_err(what);
        assert_eq!(server_code(&e), ErrorCode::ReadOnly, "{what}: {e}");
        assert!(e.to_string().contains("arc.archive"), "{what}: {e}");
    }
    assert!(std::fs::read(&file).unwrap() == before, "the archive's file changed");
    assert_eq!(c.list_offsets("arc", 0, OffsetSpec::Latest).unwrap(), Some(want[0].len() as u64));
    assert_eq!(fetch_all(c, "arc", 1, 1 << 20), want[1]);
}

/// The server's CPU time (user and system), from /proc.
fn cpu_time(pid: u32) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let fields: Vec<&str> = stat.rsplit_once(')').unwrap().1.split_whitespace().collect();
    let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
    // /proc counts in clock ticks (USER_HZ), which getconf tells.
    let hz = Command::new("getconf").arg("CLK_TCK").output().unwrap();
    let hz: u64 = String::from_utf8_lossy(&hz.stdout).trim().parse().unwrap();
    Duration::from_millis(ticks * 1000 / hz.max(1))
}

fn archive_reads(s: &Serve) -> u64 {
    s.stats().iter().map(|m| m.broker.archive_reads).sum()
}

// Proves: a subscription from offset 0 of an archive partition receives
// every record once, in order, then stays open at the end without
// spinning: over idle seconds the archive thread takes at most a long poll
// or two (not one request per spin), and the server's CPU time stays a
// small part of the wall time.
fn a_subscription_reads_an_archive_once_then_waits() {
    let dir = test_dir("archive-serve-subscribe");
    let (_source, archives, want) = archived_source(&dir);
    let s = Serve::on(&dir.join("data")).cores(2).args(&["--archive", archives.to_str().unwrap()]).start();
    let mut c = s.client();
    let mut sub = c.subscribe("arc", 0, SubscribeStart::Offset(0), 64 << 10).unwrap();
    let mut got = Vec::new();
    while got.len() < want[0].len() {
        let push = sub.next_push().unwrap().expect("a push");
        got.extend(recs_of(&push.fetch, push.from_offset));
    }
    assert!(got == want[0], "the subscription's records differ from the archive's");
    let (reads, cpu, wall) = (archive_reads(&s), cpu_time(s.pid()), Instant::now());
    std::thread::sleep(Duration::from_secs(3));
    let (reads_idle, cpu_idle, wall_idle) = (archive_reads(&s) - reads, cpu_time(s.pid()) - cpu, wall.elapsed());
    println!("idle at an archive's end for {wall_idle:?}: {reads_idle} archive reads, {cpu_idle:?} of server CPU");
    assert!(reads_idle <= 2, "the subscription asked the archive {reads_idle} times while idle: it spins");
    assert!(cpu_idle < wall_idle / 4, "the server used {cpu_idle:?} of CPU in {wall_idle:?} idle");
    sub.cancel().unwrap();
    // The connection still answers once the subscription is cancelled.
    c.set_timeout(Some(Duration::from_secs(60))).unwrap();
    assert_eq!(c.list_offsets("arc", 0, OffsetSpec::Latest).unwrap(), Some(want[0].len() as u64));
}

/// The lines of a `strom serve` that ended before serving.
fn refused_start(s: harness::serve::ServeCmd) -> String {
    match s.try_start() {
        Ok(_) => panic!("the server started"),
        Err(lines) => lines.join("\n"),
    }
}

// Proves: a topic in two archives, a topic both in the data directory and
// in an archive, and a damaged archive are each refused at start, the
// message naming both places (or the damaged file and its damage).
fn clashes_and_damage_are_refused_at_start() {
    let dir = test_dir("archive-serve-refused");
    let (source, archives, _) = archived_source(&dir);
    let arc = archives.join("arc.archive");
    // Two archives of one topic.
    let twice = dir.join("twice");
    std::fs::create_dir_all(&twice).unwrap();
    std::fs::copy(&arc, twice.join("a.archive")).unwrap();
    std::fs::copy(&arc, twice.join("b.archive")).unwrap();
    // Given by the config file's key, here; by the variable, below.
    let config = dir.join("strom.toml");
    std::fs::write(&config, format!("archive_dir = {:?}\n", twice.to_str().unwrap())).unwrap();
    let err = refused_start(Serve::on(&dir.join("d1")).args(&["--config", config.to_str().unwrap()]));
    assert!(err.contains("in two archives") && err.contains("a.archive") && err.contains("b.archive"), "{err}");
    // The catalog and an archive: the source's own data directory.
    drop(source);
    let err = refused_start(Serve::on(&dir.join("source")).env("STROM_ARCHIVE_DIR", archives.to_str().unwrap()));
    assert!(err.contains("\"arc\"") && err.contains("source") && err.contains("arc.archive"), "{err}");
    // A damaged archive (truncated, and a flipped bit in its index).
    let bytes = std::fs::read(&arc).unwrap();
    let a = Archive::open(&arc).unwrap();
    let index_pos = a.footer().index_pos as usize;
    for (name, bad) in [
        ("cut.archive", bytes[..bytes.len() - 10].to_vec()),
        ("flip.archive", {
            let mut b = bytes.clone();
            b[index_pos + 3] ^= 0x10;
            b
        }),
    ] {
        let damaged = dir.join(format!("damaged-{name}"));
        std::fs::create_dir_all(&damaged).unwrap();
        std::fs::write(damaged.join(name), &bad).unwrap();
        let err = refused_start(Serve::on(&dir.join("d2")).args(&["--archive", damaged.to_str().unwrap()]));
        assert!(err.contains(name) && err.contains("not a sound archive") && err.contains("damaged at byte"), "{err}");
    }
}

/// kcat against the server's Kafka listener; its output.
fn kcat(kafka: SocketAddr, args: &[&str]) -> Output {
    Command::new("kcat").arg("-b").arg(kafka.to_string()).args(args).output().unwrap()
}

// Proves: the Kafka listener serves an archive topic through the same
// commands: kcat lists it, reads every record of a partition (offsets and
// keys as archived) to its end, seeks by time, and its produce is refused.
fn kcat_reads_an_archive_topic() {
    let dir = test_dir("archive-serve-kcat");
    let (_source, archives, want) = archived_source(&dir);
    let s = Serve::on(&dir.join("data")).cores(2).kafka().args(&["--archive", archives.to_str().unwrap()]).start();
    let kafka = s.kafka_addr();
    let listed = ok(kcat(kafka, &["-L"]));
    assert!(String::from_utf8_lossy(&listed.stdout).contains("topic \"arc\" with 3 partitions:"), "{listed:?}");
    let read = ok(kcat(kafka, &["-C", "-t", "arc", "-p", "0", "-o", "beginning", "-e", "-q", "-f", "%o %k\\n"]));
    let got: Vec<String> = String::from_utf8_lossy(&read.stdout).lines().map(str::to_string).collect();
    let expected: Vec<String> = want[0].iter().map(|r| format!("{} {}", r.0, String::from_utf8_lossy(r.2.as_deref().unwrap()))).collect();
    assert!(got == expected, "kcat read {} records, the archive holds {}", got.len(), expected.len());
    let r = &want[0][want[0].len() / 2];
    let by_time = want[0].iter().find(|x| x.1 >= r.1).unwrap().0;
    let seek = ok(kcat(kafka, &["-C", "-t", "arc", "-p", "0", "-o", &format!("s@{}", r.1), "-c", "1", "-q", "-f", "%o\\n"]));
    assert_eq!(String::from_utf8_lossy(&seek.stdout).trim(), by_time.to_string());
    let mut produce = Command::new("kcat")
        .args(["-b", &kafka.to_string(), "-P", "-t", "arc", "-p", "0"])
        .stdin(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::io::Write::write_all(&mut produce.stdin.take().unwrap(), b"refused\n").unwrap();
    let out = produce.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.to_lowercase().contains("policy"), "kcat produce to an archive topic: {err}");
    assert_eq!(s.client().list_offsets("arc", 0, OffsetSpec::Latest).unwrap(), Some(want[0].len() as u64));
}

// Proves: under [auth], an archive topic is read as a live one: a user
// with read on it fetches it, one without is refused NotAuthorized and
// does not see it in Metadata, and a write by a user without write is
// refused NotAuthorized before the archive would refuse it ReadOnly.
fn archive_topics_follow_auth_permissions() {
    let dir = test_dir("archive-serve-auth");
    let (_source, archives, want) = archived_source(&dir);
    let config = dir.join("strom.toml");
    std::fs::write(
        &config,
        format!(
            "archive_dir = {:?}\n[auth]\nenabled = true\n\
             [[auth.users]]\nname = \"reader\"\ntoken = \"reader-secret-0123456789\"\npermissions = [{{ topic = \"arc\", allow = [\"read\"] }}]\n\
             [[auth.users]]\nname = \"ops\"\ntoken = \"ops-secret-0123456789ab\"\npermissions = [{{ topic = \"*\", allow = [\"read\", \"write\", \"admin\"] }}]\n",
            archives.to_str().unwrap()
        ),
    )
    .unwrap();
    let s = Serve::on(&dir.join("data")).cores(2).args(&["--config", config.to_str().unwrap()]).start();
    let mut reader = s.client();
    reader.authenticate("reader-secret-0123456789").unwrap();
    assert_eq!(fetch_all(&mut reader, "arc", 0, 1 << 20), want[0]);
    let names: Vec<String> = reader.metadata(&[]).unwrap().topics.into_iter().map(|t| t.name).collect();
    assert_eq!(names, ["arc"], "the reader sees only what it may read");
    let e = reader.fetch("ticks", 0, 0, 1000, Duration::ZERO).unwrap_err();
    assert_eq!(server_code(&e), ErrorCode::NotAuthorized, "{e}");
    let e = reader.produce_values("arc", 0, &[b"x"]).unwrap_err();
    assert_eq!(server_code(&e), ErrorCode::NotAuthorized, "{e}");
    let mut ops = s.client();
    ops.authenticate("ops-secret-0123456789ab").unwrap();
    let e = ops.produce_values("arc", 0, &[b"x"]).unwrap_err();
    assert_eq!(server_code(&e), ErrorCode::ReadOnly, "{e}");
    assert_eq!(ops.list_offsets("ticks", 0, OffsetSpec::Latest).unwrap(), Some(250));
}
