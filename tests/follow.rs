//! A read-only follower (`strom serve --read-only`, `Engine::open_read_only`)
//! of a data directory an embedded writer in another process appends to:
//! the writer rolls segments, is killed with SIGKILL and restarted, and a
//! subscriber on the follower must see every durable record exactly once,
//! in order, and nothing else. Real disk, real io_uring.
//!
//! The writer (this test binary again, `writer_child`) appends to each
//! partition from one thread, in order, so it knows each record's offset
//! before the ack: record `o` of partition `p` holds `p{p}o{o}`, and a
//! record served anywhere else than at its own offset, twice, torn or
//! half-written, cannot pass the subscriber's check.
mod harness;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use harness::serve::Serve;
use harness::{test_dir, wait_until};
use strom::EngineConfig;
use strom::client::Client;
use strom::engine::Engine;
use strom::error::StromError;
use strom::proto::SubscribeStart;
use strom::wire::batch::BatchBuilder;

const PARTITIONS: u32 = 2;
const TOPIC: &str = "f";

/// The writer's settings: small segments, so that it rolls every few
/// hundred records and the follower has to open segments as it goes.
fn writer_cfg() -> EngineConfig {
    EngineConfig { cores: 1, logs_on_create: 2, pin_cores: false, ..EngineConfig::small_for_tests() }
}

fn value(p: u32, offset: u64) -> String {
    format!("p{p}o{offset}")
}

/// The child: opens the directory with the embedded engine and appends to
/// every partition forever, 16 batches in flight, printing each ack.
#[test]
#[ignore = "run by the follow tests as their writer process"]
fn writer_child() {
    let Ok(dir) = std::env::var("STROM_FOLLOW_WRITER_DIR") else { return };
    let mut cfg = writer_cfg();
    if let Ok(bytes) = std::env::var("STROM_FOLLOW_RETENTION_BYTES") {
        cfg.retention_bytes = Some(bytes.parse().unwrap());
    }
    let e = Engine::open(Path::new(&dir), cfg).unwrap();
    if e.topics().is_empty() {
        e.create_topic(TOPIC, PARTITIONS).unwrap();
    }
    let mut next: Vec<u64> = (0..PARTITIONS).map(|p| e.partition_stat(TOPIC, p).unwrap().end_offset).collect();
    let out = std::io::stdout();
    let mut out = out.lock();
    writeln!(out, "ready").unwrap();
    out.flush().unwrap();
    let mut pending = std::collections::VecDeque::new();
    for seq in 0u64.. {
        let p = (seq % PARTITIONS as u64) as u32;
        let n = 1 + (seq % 5);
        let base = next[p as usize];
        let mut b = BatchBuilder::new(seq as i64);
        for o in base..base + n {
            b.push(seq as i64, None, Some(value(p, o).as_bytes()), &[]);
        }
        next[p as usize] += n;
        pending.push_back((p, base, n, e.append_async(TOPIC, p, b.finish()).unwrap()));
        if pending.len() >= 16 {
            let (p, base, n, w) = pending.pop_front().unwrap();
            let ack = w.wait().unwrap();
            assert_eq!(ack.base_offset, base, "appends to one partition from one thread take consecutive offsets");
            writeln!(out, "acked {p} {base} {n}").unwrap();
            out.flush().unwrap();
        }
    }
}

/// A running writer child and the acks it printed.
struct Writer {
    child: Child,
    acked: Arc<Mutex<Vec<u64>>>,
    reader: std::thread::JoinHandle<()>,
}

impl Writer {
    fn start(dir: &Path, envs: &[(&str, String)]) -> Writer {
        let mut cmd = Command::new(std::env::current_exe().unwrap());
        cmd.args(["--exact", "writer_child", "--ignored", "--nocapture", "--test-threads=1"])
            .env("STROM_FOLLOW_WRITER_DIR", dir)
            .stdout(Stdio::piped())
            .stderr(Stdio::null());
        for (k, v) in envs {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().unwrap();
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        loop {
            let line = lines.next().expect("the writer ended before it was ready").unwrap();
            // libtest prints "test writer_child ... " on the same line first.
            if line.ends_with("ready") {
                break;
            }
        }
        let acked = Arc::new(Mutex::new(vec![0u64; PARTITIONS as usize]));
        let seen = acked.clone();
        let reader = std::thread::spawn(move || {
            for line in lines.map_while(Result::ok) {
                let f: Vec<&str> = line.split(' ').collect();
                if let ["acked", p, base, n] = f.as_slice() {
                    let end = base.parse::<u64>().unwrap() + n.parse::<u64>().unwrap();
                    let mut a = seen.lock().unwrap();
                    let slot = &mut a[p.parse::<usize>().unwrap()];
                    *slot = (*slot).max(end);
                }
            }
        });
        Writer { child, acked, reader }
    }

    /// SIGKILL; returns each partition's acknowledged end.
    fn kill(mut self) -> Vec<u64> {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
        self.reader.join().unwrap();
        self.acked.lock().unwrap().clone()
    }
}

/// What one subscriber on the follower received: the next offset it
/// expects, or the first wrong thing it saw.
#[derive(Default)]
struct Received {
    next: u64,
    fault: Option<String>,
}

/// Subscribes to partition `p` from offset 0 on the follower at `addr`
/// and checks every record as it arrives, until the connection ends (an
/// end before `stop` is set is a fault).
fn subscriber(addr: std::net::SocketAddr, p: u32, got: Arc<Mutex<Received>>, stop: Arc<AtomicBool>) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        let mut c = Client::connect(addr).unwrap();
        let mut sub = c.subscribe(TOPIC, p, SubscribeStart::Offset(0), 1 << 20).unwrap();
        loop {
            let push = match sub.next_push() {
                Ok(Some(push)) => push,
                end => {
                    if !stop.load(Ordering::Relaxed) {
                        got.lock().unwrap().fault.get_or_insert_with(|| format!("the subscription ended: {end:?}"));
                    }
                    return;
                }
            };
            let mut g = got.lock().unwrap();
            for r in push.fetch.records_at(push.from_offset) {
                let r = match r {
                    Ok(r) => r,
                    Err(e) => {
                        g.fault.get_or_insert_with(|| format!("a record does not decode: {e}"));
                        return;
                    }
                };
                let want = value(p, g.next);
                let v = String::from_utf8_lossy(r.value.unwrap_or_default()).into_owned();
                if r.offset != g.next || v != want {
                    let next = g.next;
                    g.fault.get_or_insert_with(|| {
                        format!("partition {p}: got offset {} = {v:?}, expected offset {next} = {want:?}", r.offset)
                    });
                    return;
                }
                g.next += 1;
            }
        }
    })
}

fn segments_of(dir: &Path) -> usize {
    (0..2)
        .map(|log| {
            std::fs::read_dir(dir.join(format!("log-{log:04}")))
                .map_or(0, |d| d.flatten().filter(|e| e.file_name().to_string_lossy().ends_with(".seg")).count())
        })
        .sum()
}

// Proves: while an embedded writer in another process appends, rolls
// segments and is killed with SIGKILL and restarted, a subscriber on the
// read-only follower receives every acknowledged record exactly once, in
// order, each at its own offset, and never a record the writer's log does
// not hold as a durable prefix after the last kill.
#[test]
fn a_subscriber_on_the_follower_sees_every_durable_record_once_across_writer_kills() {
    let dir = test_dir("follow_kills");
    let kills: usize = std::env::var("STROM_FOLLOW_KILLS").ok().and_then(|s| s.parse().ok()).unwrap_or(5);
    let mut rng = harness::Rng(std::process::id() as u64 | 1);
    let writer = Writer::start(&dir, &[]);
    let follower = Serve::on(&dir).args(&["--read-only"]).start();
    let stop = Arc::new(AtomicBool::new(false));
    let got: Vec<_> = (0..PARTITIONS).map(|_| Arc::new(Mutex::new(Received::default()))).collect();
    let subs: Vec<_> = (0..PARTITIONS).map(|p| subscriber(follower.addr, p, got[p as usize].clone(), stop.clone())).collect();
    let mut acked = vec![0u64; PARTITIONS as usize];
    let mut writer = Some(writer);
    for round in 0..kills {
        std::thread::sleep(Duration::from_millis(200 + rng.below(800)));
        let ends = writer.take().unwrap().kill();
        for (a, e) in acked.iter_mut().zip(&ends) {
            *a = (*a).max(*e);
        }
        if round + 1 < kills {
            writer = Some(Writer::start(&dir, &[]));
        }
    }
    // Every acknowledged record reaches the subscribers (the writer is gone
    // now; its last durable mark names at least what it acknowledged).
    let all_in = wait_until(Duration::from_secs(60), || {
        (0..PARTITIONS as usize).all(|p| got[p].lock().unwrap().next >= acked[p] || got[p].lock().unwrap().fault.is_some())
    });
    stop.store(true, Ordering::Relaxed);
    let follower_log = follower.stderr_text();
    drop(follower);
    subs.into_iter().for_each(|s| s.join().unwrap());
    for p in 0..PARTITIONS as usize {
        let g = got[p].lock().unwrap();
        assert!(g.fault.is_none(), "{}\nthe follower's log:\n{follower_log}", g.fault.as_ref().unwrap());
        assert!(
            all_in && g.next >= acked[p],
            "partition {p}: the follower served up to {}, the writer acknowledged up to {}\nthe follower's log:\n{follower_log}",
            g.next,
            acked[p]
        );
        assert!(acked[p] > 0, "the writer acknowledged nothing on partition {p}");
    }
    let rolled = segments_of(&dir);
    assert!(rolled >= 4, "the writer rolled too few segments ({rolled}) for the test to mean anything");
    // What was served is a prefix of the log the writer recovers (the
    // follower never served a record the writer's log does not hold).
    let e = Engine::open(&dir, writer_cfg()).unwrap();
    for p in 0..PARTITIONS {
        let served = got[p as usize].lock().unwrap().next;
        let end = e.partition_stat(TOPIC, p).unwrap().end_offset;
        assert!(served <= end, "partition {p}: served up to {served}, the log ends at {end}");
        let stored = harness::read_to_end(&e, TOPIC, p, 0, 1 << 20);
        assert_eq!(stored.len() as u64, end);
        for (o, v) in stored.iter().take(served as usize) {
            assert_eq!(*v, value(p, *o));
        }
    }
    println!("{kills} kills, acknowledged {acked:?}, {rolled} segments left");
}

// Proves: a follower takes no lock (a writer starts while it serves), a
// second writer is refused with a message naming the lock, and writes to
// the follower are refused with ReadOnly whatever way they come.
#[test]
fn the_follower_takes_no_lock_and_refuses_writes() {
    let dir = test_dir("follow_lock");
    {
        let e = Engine::open(&dir, writer_cfg()).unwrap();
        e.create_topic(TOPIC, PARTITIONS).unwrap();
    }
    let follower = Engine::open_read_only(&dir, writer_cfg()).unwrap();
    let writer = Engine::open(&dir, writer_cfg()).expect("a follower must not hold the writer's lock");
    let second = Engine::open(&dir, writer_cfg()).err().expect("a second writer must be refused");
    assert!(second.to_string().contains("in use by another Strom process"), "{second}");
    writer.append(TOPIC, 0, harness::batch("x", 3, 1)).unwrap();
    let read_only = |e: StromError| assert!(matches!(e, StromError::ReadOnly(_)), "{e}");
    read_only(follower.append(TOPIC, 0, harness::batch("y", 1, 1)).unwrap_err());
    read_only(follower.create_topic("other", 1).unwrap_err());
    read_only(follower.delete_topic(TOPIC).unwrap_err());
    // The follower sees the writer's records once its mark moves.
    assert!(wait_until(Duration::from_secs(30), || follower.partition_stat(TOPIC, 0).unwrap().end_offset == 3));
    assert_eq!(harness::read_to_end(&follower, TOPIC, 0, 0, 1 << 20), harness::read_to_end(&writer, TOPIC, 0, 0, 1 << 20));
    let counted = |m| follower.metrics().unwrap().iter().map(|c| c.get(m)).sum::<u64>();
    assert!(counted(strom::metrics::Metric::FollowMarks) >= 1 && counted(strom::metrics::Metric::FollowBytes) >= 4096);
    drop(writer);
    follower.shutdown().unwrap();
}

// Proves: the writer's retention reaches the follower: its earliest
// offsets move up as the writer deletes segments, what it still serves from
// there on is each record at its own offset, and an offset below its start
// is OffsetOutOfRange.
#[test]
fn the_follower_follows_the_writers_retention() {
    let dir = test_dir("follow_retention");
    let writer = Writer::start(&dir, &[("STROM_FOLLOW_RETENTION_BYTES", (96u64 << 10).to_string())]);
    let follower = Serve::on(&dir).args(&["--read-only"]).start();
    let mut c = follower.client();
    let earliest = |c: &mut Client, p| c.list_offsets(TOPIC, p, strom::proto::OffsetSpec::Earliest).unwrap().unwrap_or(0);
    let moved = wait_until(Duration::from_secs(60), || (0..PARTITIONS).all(|p| earliest(&mut c, p) > 0));
    let ends = writer.kill();
    assert!(moved, "the follower's earliest offsets never moved (the writer acknowledged up to {ends:?})\n{}", follower.stderr_text());
    for p in 0..PARTITIONS {
        let start = earliest(&mut c, p);
        let got = c.fetch(TOPIC, p, start, 1 << 20, Duration::ZERO).unwrap();
        let records: Vec<(u64, Option<&[u8]>)> = got.records_from(start).map(Result::unwrap).collect();
        assert!(!records.is_empty());
        for (o, v) in records {
            assert_eq!(v.unwrap(), value(p, o).as_bytes());
        }
        let below = c.fetch(TOPIC, p, start - 1, 1 << 20, Duration::ZERO).unwrap_err();
        assert!(matches!(below, strom::client::ClientError::Server { code: strom::proto::ErrorCode::OffsetOutOfRange, .. }), "{below}");
    }
}

// Proves: `strom archive --data-dir` reads a directory whose writer (a
// server) is running, without its lock, and archives exactly the records the
// writer serves: every partition, every record, at its offset.
#[test]
fn an_archive_from_a_data_directory_while_its_writer_runs() {
    let dir = test_dir("follow_archive");
    let writer = Serve::start(&dir, &[]);
    let mut c = writer.client();
    c.create_topic(TOPIC, PARTITIONS).unwrap();
    for i in 0..300u32 {
        c.produce(TOPIC, i % PARTITIONS, &harness::batch(&format!("a{i}"), 10, i64::from(i))).unwrap();
    }
    let out = dir.with_extension("strar");
    let _ = std::fs::remove_file(&out);
    let run =
        Command::new(env!("CARGO_BIN_EXE_strom")).args(["archive", TOPIC, "--data-dir"]).arg(&dir).arg("--out").arg(&out).output().unwrap();
    assert!(run.status.success(), "{}", String::from_utf8_lossy(&run.stderr));
    let a = strom::archive::Archive::open(&out).unwrap();
    for p in 0..PARTITIONS {
        let live = c.fetch(TOPIC, p, 0, 1 << 24, Duration::ZERO).unwrap();
        let archived = a.fetch(p, 0, 1 << 24).unwrap();
        assert_eq!(archived.next_offset, live.next_offset);
        assert_eq!(harness::values(&archived.batches), harness::values(&live.batches));
        assert_eq!(harness::values(&live.batches).len(), 1500);
    }
}

/// Every file under `dir`: its length, modification time and inode.
fn snapshot(dir: &Path) -> BTreeMap<PathBuf, (u64, std::time::SystemTime, u64)> {
    use std::os::unix::fs::MetadataExt;
    let mut out = BTreeMap::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            let m = e.metadata().unwrap();
            if m.is_dir() {
                todo.push(e.path());
            }
            out.insert(e.path(), (m.len(), m.modified().unwrap(), m.ino()));
        }
    }
    out
}

// Proves: a follower serving fetches, a subscription, queries and refused
// writes over the network, then stopping, changes nothing in the directory
// (no file created, removed, grown, touched or replaced).
#[test]
fn the_follower_writes_nothing_into_the_directory() {
    let dir = test_dir("follow_writes_nothing");
    {
        let e = Engine::open(&dir, writer_cfg()).unwrap();
        e.create_topic(TOPIC, PARTITIONS).unwrap();
        for i in 0..200 {
            e.append(TOPIC, i % PARTITIONS, harness::batch(&format!("b{i}"), 20, i as i64)).unwrap();
        }
    }
    let before = snapshot(&dir);
    let follower = Serve::on(&dir).args(&["--read-only"]).start();
    let mut c = follower.client();
    for p in 0..PARTITIONS {
        let got = c.fetch(TOPIC, p, 0, 1 << 20, Duration::ZERO).unwrap();
        assert!(got.records_from(0).count() > 0);
        let e = c.produce(TOPIC, p, &harness::batch("no", 1, 1)).unwrap_err();
        assert!(e.to_string().contains("read-only"), "{e}");
    }
    assert!(c.create_topic("new", 1).unwrap_err().to_string().contains("read-only"));
    assert!(c.commit_offset("g", TOPIC, 0, 5).unwrap_err().to_string().contains("read-only"));
    let at = c.list_offsets(TOPIC, 0, strom::proto::OffsetSpec::Timestamp(100)).unwrap();
    // Batch i (20 records stamped i, i+1, ...) lands on partition i % 2: on
    // partition 0, batch 82 (offsets 820..840, stamped 82..101) holds the
    // first record stamped 100, its 19th.
    assert_eq!(at, Some(838));
    {
        let mut sub = c.subscribe(TOPIC, 1, SubscribeStart::Offset(0), 1 << 20).unwrap();
        let push = sub.next_push().unwrap().unwrap();
        assert_eq!(push.fetch.records_from(0).next().unwrap().unwrap().0, 0);
    }
    // A clean stop (SIGTERM), where a writer would checkpoint and mark its ends.
    let (status, log) = follower.stop(Duration::from_secs(20));
    assert!(status.is_some_and(|s| s.success()), "{log:?}");
    assert_eq!(snapshot(&dir), before, "the follower changed the directory");
}

// Measures (and checks the delivery of) follower lag: the time from the
// writer's acknowledgement of a batch (durable under `always`) to its
// arrival at a subscriber on a read-only engine following the same
// directory, both in this process (one clock). Prints p50, p99 and max;
// asserts only that every batch arrived, once, in order. Longer runs:
// STROM_FOLLOW_LAG_SECS=30 STROM_FOLLOW_LAG_RATE=2000 cargo test --release
// --test follow follower_lag -- --nocapture.
#[test]
fn follower_lag() {
    let secs: u64 = std::env::var("STROM_FOLLOW_LAG_SECS").ok().and_then(|s| s.parse().ok()).unwrap_or(2);
    let rate: u64 = std::env::var("STROM_FOLLOW_LAG_RATE").ok().and_then(|s| s.parse().ok()).unwrap_or(1000);
    const RECORDS: usize = 100;
    // Each record's value: "b{seq}-{i}" padded with dots to this many bytes.
    let value_bytes: usize = std::env::var("STROM_FOLLOW_LAG_VALUE_BYTES").ok().and_then(|s| s.parse().ok()).unwrap_or(16);
    let lag_batch = |seq: u64| {
        let mut b = BatchBuilder::new(seq as i64);
        for i in 0..RECORDS {
            let v = format!("b{seq}-{i}.");
            let v = format!("{v:.<value_bytes$}");
            b.push(seq as i64, None, Some(v.as_bytes()), &[]);
        }
        b.finish()
    };
    let dir = test_dir("follow_lag");
    let cfg = EngineConfig { cores: 1, logs_on_create: 1, pin_cores: false, ..EngineConfig::default() };
    let writer = Engine::open(&dir, cfg.clone()).unwrap();
    writer.create_topic(TOPIC, 1).unwrap();
    let follower = Engine::open_read_only(&dir, cfg).unwrap();
    assert!(wait_until(Duration::from_secs(30), || follower.topics().len() == 1), "the follower never saw the topic");
    let batches = secs * rate;
    let acked_at: Arc<Mutex<Vec<Option<Instant>>>> = Arc::new(Mutex::new(vec![None; batches as usize]));
    let arrived: Vec<Instant> = std::thread::scope(|s| {
        let sub = s.spawn(|| {
            let mut arrived = Vec::with_capacity(batches as usize);
            let mut sub = follower.subscribe(TOPIC, 0, strom::broker::StreamStart::Offset(0), 1 << 20).unwrap();
            while (arrived.len() as u64) < batches {
                let r = sub.next().unwrap().unwrap();
                let now = Instant::now();
                for (offset, v) in harness::values(&r.batches[r.headroom_bytes..]) {
                    // One arrival per batch: its first record, offset RECORDS * seq.
                    if offset % RECORDS as u64 == 0 {
                        assert!(v.starts_with(&format!("b{}-0.", offset / RECORDS as u64)), "batches arrive once, in order");
                        arrived.push(now);
                    }
                }
            }
            arrived
        });
        // Appends at `rate` batches a second, paced; a thread of its own
        // waits for the acks in order and stamps each as it comes.
        let (tx, rx) = std::sync::mpsc::sync_channel::<(u64, strom::engine::Pending<strom::core::AppendAck>)>(256);
        let acker = s.spawn(|| {
            for (seq, w) in rx {
                w.wait().unwrap();
                acked_at.lock().unwrap()[seq as usize] = Some(Instant::now());
            }
        });
        let start = Instant::now();
        for seq in 0..batches {
            let due = start + Duration::from_nanos(seq * 1_000_000_000 / rate);
            if let Some(wait) = due.checked_duration_since(Instant::now()) {
                std::thread::sleep(wait);
            }
            tx.send((seq, writer.append_async(TOPIC, 0, lag_batch(seq)).unwrap())).unwrap();
        }
        drop(tx);
        acker.join().unwrap();
        sub.join().unwrap()
    });
    let acked = acked_at.lock().unwrap();
    let mut h = hdrhistogram::Histogram::<u64>::new(3).unwrap();
    let mut early = 0;
    for (a, r) in acked.iter().zip(&arrived) {
        // The ack reaches the acker's thread after the core published the
        // mark: a batch can arrive at the follower first (lag 0).
        match r.checked_duration_since(a.expect("every batch acknowledged")) {
            Some(lag) => h.record(lag.as_micros() as u64).unwrap(),
            None => {
                early += 1;
                h.record(0).unwrap();
            }
        }
    }
    let batch_bytes = lag_batch(0).len() as u64;
    println!(
        "follower lag over {batches} batches of {RECORDS} records ({rate} batches/s, {} records/s, {:.1} MB/s): p50 {} us, p99 {} us, max {} us ({early} arrived before the acker saw the ack)",
        rate * RECORDS as u64,
        (rate * batch_bytes) as f64 / 1e6,
        h.value_at_quantile(0.5),
        h.value_at_quantile(0.99),
        h.max()
    );
    assert_eq!(arrived.len() as u64, batches);
    drop(follower);
    writer.shutdown().unwrap();
}
