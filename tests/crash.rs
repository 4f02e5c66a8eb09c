//! Process crashes against a real `strom serve`: producers and consumers
//! (tailing with long polls, and catching up from earlier offsets) work over
//! TCP while the server is killed with SIGKILL at random moments, or kills
//! itself at a chosen failpoint (cargo feature `failpoints`), or pauses there
//! while the power is cut under it (a loop-device ext4); it restarts on
//! the same data directory (and port when free), producers resend what was
//! indeterminate, and the shared checker (tests/harness/checker) judges every
//! acknowledged record and every read at the end.
//!
//! `STROM_CRASH_KILLS=N` (default 25) and `STROM_CRASH_RECORDS=M` (default
//! 1,000,000 acknowledged records) size the random-kill test; it goes on
//! killing until both are reached. `STROM_CRASH_SEED=S` replays its random
//! choices (batch sizes, partitions, kill delays); the kill moments are real
//! time, so a replay is close to, not exactly, the run it repeats.
//!
//! The failpoint tests need `--features strom/failpoints`, the power cuts
//! root and loop devices too; without them they are reported as ignored,
//! with the reason (tests/harness/skip.rs).
mod harness;

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use harness::checker::{self, Checker, Outcome, Reader, Send, batch_for, classify};
use harness::loopfs::LoopFs;
use harness::serve::Serve;
use harness::skip::{self, Need};
use harness::test_dir;
use strom::client::{Client, ClientError, OwnedResponse, ProduceAck};
use strom::io::sim::SimRng;
use strom::proto::Request;

const TOPIC: &str = "crash";
const PARTITIONS: u32 = 4;
const PRODUCERS: u32 = 3;
/// Produce requests in flight per producer connection.
const PIPELINE_DEPTH: usize = 8;
const RECORDS_PER_BATCH_MAX: u64 = 200;
/// Filler bytes per record value at most (the value is 24 bytes more).
const EXTRA_BYTES_MAX: u64 = 48;
/// How long a tailing consumer's Fetch waits for new records.
const LONG_POLL: Duration = Duration::from_millis(50);
const CLIENT_TIMEOUT: Duration = Duration::from_secs(20);
/// `--cores` of every server here.
const SERVER_CORES: usize = 2;

// Every test here, with what it needs (tests/harness/skip.rs): without it,
// a test is reported as ignored with the reason, never as a pass.
fn main() {
    skip::main(vec![
        skip::trial("random_kills_under_load", &[], random_kills_under_load),
        skip::trial("failpoint_write_in_flight", &[Need::Failpoints], failpoint_write_in_flight),
        skip::trial("failpoint_write_done_before_fsync", &[Need::Failpoints], failpoint_write_done_before_fsync),
        skip::trial("failpoint_fsync_done_before_ack", &[Need::Failpoints], failpoint_fsync_done_before_ack),
        skip::trial("failpoint_roll_before_dir_sync", &[Need::Failpoints], failpoint_roll_before_dir_sync),
        skip::trial("a_panicking_core_stops_the_process", &[Need::Failpoints], a_panicking_core_stops_the_process),
        skip::trial("failpoint_checkpoint_before_rename", &[Need::Failpoints], failpoint_checkpoint_before_rename),
        skip::trial("power_cut_at_write_done_before_fsync", &[Need::Failpoints, Need::LoopFs], power_cut_at_write_done_before_fsync),
        skip::trial("power_cut_at_fsync_done_before_ack", &[Need::Failpoints, Need::LoopFs], power_cut_at_fsync_done_before_ack),
        skip::trial("power_cut_at_write_in_flight", &[Need::Failpoints, Need::LoopFs], power_cut_at_write_in_flight),
    ]);
}

/// Tests here each run a server on the 2 cores; one at a time.
static ONE_SERVER: Mutex<()> = Mutex::new(());

fn one_server() -> std::sync::MutexGuard<'static, ()> {
    ONE_SERVER.lock().unwrap_or_else(|e| e.into_inner())
}

fn env_u64(var: &str, default: u64) -> u64 {
    std::env::var(var).ok().map(|s| s.parse().unwrap_or_else(|_| panic!("{var}={s} is not a number"))).unwrap_or(default)
}

/// What one start's recovery reported, summed over the logs.
#[derive(Debug, Default, Clone, Copy)]
struct Recovered {
    scanned_bytes: u64,
    cut_bytes: u64,
    recovery_us_max: u64,
}

/// Starts a server on `dir` with `SERVER_CORES`, on `port` if it is free
/// (0: any), with `extra` arguments; with `failpoint`, arms it (`NAME:NTH`).
fn start(dir: &Path, port: u16, extra: &[String], failpoint: Option<&str>) -> Serve {
    let started = Instant::now();
    let cmd = Serve::on(dir).cores(SERVER_CORES).args(extra).failpoint(failpoint);
    match cmd.clone().port(port).try_start() {
        Ok(s) => s,
        // The port can be taken meanwhile, even by a client of ours
        // retrying it (a TCP self-connect). The failed start recovered
        // and then stopped cleanly: its lines carry the recovery report.
        Err(lines) if port != 0 && lines.iter().any(|l| l.contains("in use")) => {
            let mut s = cmd.try_start().unwrap_or_else(|why| panic!("strom serve did not start: {}", why.join("\n")));
            println!("port {port} was in use, the server moved to {}", s.addr);
            s.up = started.elapsed();
            s.prepend_stderr(lines);
            s
        }
        Err(lines) => panic!("strom serve did not start: {}", lines.join("\n")),
    }
}

/// The recovery lines `strom serve` printed before serving.
fn recovered(serve: &Serve) -> Recovered {
    let mut r = Recovered::default();
    let field = |line: &str, before: &str, after: &str| -> u64 {
        let start = line.find(before).map(|i| i + before.len()).unwrap_or_else(|| panic!("no {before:?} in {line:?}"));
        let rest = &line[start..];
        rest[..rest.find(after).unwrap()].parse().unwrap()
    };
    for line in serve.stderr().iter().filter(|l| l.starts_with("strom: recovered log ")) {
        r.scanned_bytes += field(line, "scanned ", " bytes");
        r.cut_bytes += field(line, "cut ", " bytes");
        r.recovery_us_max = r.recovery_us_max.max(field(line, "segments, ", " us"));
    }
    r
}

/// Asks the server for its metrics (the `Metrics` api) and checks every
/// audit among them (`strom_audit_*`), which must be 0 (item 8, invariant
/// audits). Returns how many audit values it saw: none if the server
/// reported none.
fn audit(serve: &Serve) -> usize {
    let mut seen = 0;
    for (core, metrics) in serve.stats().iter().enumerate() {
        for (m, value) in metrics.iter().filter(|(m, _)| m.is_audit()) {
            seen += 1;
            assert_eq!(value, 0, "invariant audit {} is {value} on core {core}: {metrics}", m.name());
        }
    }
    seen
}

/// SIGTERM: the server refuses new requests, answers those in flight,
/// checkpoints and exits 0.
fn stop(serve: Serve) {
    let (status, lines) = serve.stop(Duration::from_secs(30));
    let status = status.unwrap_or_else(|| panic!("the server did not stop within 30 s of SIGTERM; stderr:\n{}", lines.join("\n")));
    assert!(status.success(), "strom serve stopped with {status}; stderr:\n{}", lines.join("\n"));
}

/// What the load threads share with the test.
struct Shared {
    checker: Checker,
    /// Where the server listens now (a restart may move it).
    addr: Mutex<SocketAddr>,
    stop: AtomicBool,
    /// Produce replies that were errors, and sends resent.
    errors: AtomicU64,
    resent_batches: AtomicU64,
}

impl Shared {
    fn connect(&self) -> Option<Client> {
        let addr = *self.addr.lock().unwrap();
        let mut c = Client::connect_timeout(addr, Duration::from_secs(1)).ok()?;
        c.set_timeout(Some(CLIENT_TIMEOUT)).ok()?;
        Some(c)
    }
}

/// Producers and consumers running against the server until stopped.
struct Load {
    shared: Arc<Shared>,
    threads: Vec<JoinHandle<()>>,
}

impl Load {
    fn start(addr: SocketAddr, seed: u64) -> Load {
        let shared = Arc::new(Shared {
            checker: Checker::new(),
            addr: Mutex::new(addr),
            stop: AtomicBool::new(false),
            errors: AtomicU64::new(0),
            resent_batches: AtomicU64::new(0),
        });
        let mut threads = Vec::new();
        for id in 0..PRODUCERS {
            let s = shared.clone();
            threads.push(std::thread::spawn(move || produce(&s, id, seed)));
        }
        // Two tailing consumers, two partitions each, and one catching up.
        for cid in 0..2u32 {
            let s = shared.clone();
            threads.push(std::thread::spawn(move || tail(&s, cid, &[cid * 2, cid * 2 + 1])));
        }
        let s = shared.clone();
        threads.push(std::thread::spawn(move || catch_up(&s, 100, seed)));
        Load { shared, threads }
    }

    fn checker(&self) -> &Checker {
        &self.shared.checker
    }

    fn move_to(&self, addr: SocketAddr) {
        *self.shared.addr.lock().unwrap() = addr;
    }

    /// Stops every thread; producers first wait for the replies in flight.
    fn stop(self) -> Arc<Shared> {
        self.shared.stop.store(true, Ordering::SeqCst);
        for t in self.threads {
            t.join().expect("a load thread panicked");
        }
        self.shared
    }
}

/// One producer: pipelined Produce requests of consecutive sequences to
/// random partitions; anything indeterminate (or refused as retriable) is
/// resent with the same sequences once a connection works again.
fn produce(s: &Shared, id: u32, seed: u64) {
    let mut rng = SimRng::new(seed ^ (u64::from(id) + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15));
    let extra = |seq: u64| ((seq.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 33) % (EXTRA_BYTES_MAX + 1)) as u32;
    let mut next_seq = 0u64;
    let mut redo: VecDeque<(u32, u64, u32)> = VecDeque::new();
    let mut inflight: HashMap<u64, (Send, u32, u64, u32)> = HashMap::new();
    let mut conn: Option<Client> = None;
    let give_up = |inflight: &mut HashMap<u64, (Send, u32, u64, u32)>, redo: &mut VecDeque<(u32, u64, u32)>| {
        for (_, (send, p, first, n)) in inflight.drain() {
            s.checker.record_indeterminate(&send);
            redo.push_back((p, first, n));
        }
    };
    loop {
        let stopping = s.stop.load(Ordering::Relaxed);
        if stopping && inflight.is_empty() {
            return;
        }
        let Some(c) = conn.as_mut() else {
            if stopping {
                return;
            }
            conn = s.connect();
            if conn.is_none() {
                std::thread::sleep(Duration::from_millis(5));
            }
            continue;
        };
        while !stopping && inflight.len() < PIPELINE_DEPTH {
            let (p, first, n) = match redo.pop_front() {
                Some(r) => {
                    s.resent_batches.fetch_add(1, Ordering::Relaxed);
                    r
                }
                None => {
                    let n = 1 + rng.below(RECORDS_PER_BATCH_MAX) as u32;
                    let first = next_seq;
                    next_seq += u64::from(n);
                    (rng.below(u64::from(PARTITIONS)) as u32, first, n)
                }
            };
            let batch = batch_for(id, first, n, extra);
            let send = s.checker.record_send(TOPIC, p, id, first, n);
            match c.send(&Request::Produce { topic: TOPIC, partition: p, batches: &batch }) {
                Ok(rid) => {
                    inflight.insert(rid, (send, p, first, n));
                }
                Err(_) => {
                    s.checker.record_indeterminate(&send);
                    redo.push_back((p, first, n));
                    give_up(&mut inflight, &mut redo);
                    conn = None;
                    break;
                }
            }
        }
        let Some(c) = conn.as_mut() else { continue };
        match c.recv() {
            Ok(reply) => {
                let (send, p, first, n) = inflight.remove(&reply.request_id).expect("a reply to a produce in flight");
                let result: Result<ProduceAck, ClientError> = reply.result.map(|r| match r {
                    OwnedResponse::Produce(ack) => ack,
                    other => panic!("a produce answered with {other:?}"),
                });
                if let Ok(ack) = &result {
                    assert_eq!(ack.record_count(), u64::from(n), "ack {ack:?} for {n} records");
                }
                match s.checker.record_outcome(&send, classify(&result)) {
                    Outcome::Acked { .. } => {}
                    outcome => {
                        s.errors.fetch_add(1, Ordering::Relaxed);
                        let e = result.unwrap_err();
                        assert!(outcome == Outcome::Indeterminate || e.is_retriable(), "producer {id}: produce refused for good: {e}");
                        redo.push_back((p, first, n));
                        std::thread::sleep(Duration::from_millis(1));
                    }
                }
            }
            Err(_) => {
                give_up(&mut inflight, &mut redo);
                conn = None;
            }
        }
    }
}

/// A consumer following `partitions` from offset 0 with long polls,
/// reconnecting (and going on from where it was) after a crash.
fn tail(s: &Shared, cid: u32, partitions: &[u32]) {
    let mut next: Vec<u64> = vec![0; partitions.len()];
    for &p in partitions {
        s.checker.consumer_seek(cid, TOPIC, p, 0);
    }
    let mut conn: Option<Client> = None;
    while !s.stop.load(Ordering::Relaxed) {
        let Some(c) = conn.as_mut() else {
            conn = s.connect();
            if conn.is_none() {
                std::thread::sleep(Duration::from_millis(5));
            }
            continue;
        };
        for (i, &p) in partitions.iter().enumerate() {
            match c.fetch(TOPIC, p, next[i], 1 << 20, LONG_POLL) {
                Ok(f) => next[i] = s.checker.observe_fetch(Reader::Consumer(cid), TOPIC, p, next[i], &f.batches),
                Err(ClientError::Server { .. }) => std::thread::sleep(Duration::from_millis(5)),
                Err(_) => {
                    conn = None;
                    break;
                }
            }
        }
    }
}

/// A consumer that jumps back to a random earlier offset of a random
/// partition and reads forward to the end it saw, again and again.
fn catch_up(s: &Shared, cid: u32, seed: u64) {
    let mut rng = SimRng::new(seed ^ 0xC0FF_EE00);
    let mut high: Vec<u64> = vec![0; PARTITIONS as usize];
    let mut conn: Option<Client> = None;
    while !s.stop.load(Ordering::Relaxed) {
        let Some(c) = conn.as_mut() else {
            conn = s.connect();
            if conn.is_none() {
                std::thread::sleep(Duration::from_millis(5));
            }
            continue;
        };
        let p = rng.below(u64::from(PARTITIONS)) as u32;
        let mut at = rng.below(high[p as usize] + 1);
        s.checker.consumer_seek(cid, TOPIC, p, at);
        for _ in 0..8 {
            match c.fetch(TOPIC, p, at, 256 << 10, Duration::ZERO) {
                Ok(f) => {
                    high[p as usize] = high[p as usize].max(f.high_watermark);
                    at = s.checker.observe_fetch(Reader::Consumer(cid), TOPIC, p, at, &f.batches);
                    if at >= f.high_watermark {
                        break;
                    }
                }
                Err(ClientError::Server { .. }) => break,
                Err(_) => {
                    conn = None;
                    break;
                }
            }
        }
    }
}

fn create_topic(addr: SocketAddr) {
    let mut c = Client::connect(addr).unwrap();
    c.set_timeout(Some(CLIENT_TIMEOUT)).unwrap();
    c.create_topic(TOPIC, PARTITIONS).unwrap();
}

/// Stops the load, reads every partition from 0 and judges; returns the report.
fn finish(load: Load, serve: &Serve) -> checker::CheckReport {
    let shared = load.stop();
    shared.checker.final_read(serve.addr, TOPIC, PARTITIONS).expect("final read");
    let audits = audit(serve);
    println!("server invariant audits: {audits} counters checked, all 0");
    let report = shared.checker.report();
    println!(
        "produce errors {} (indeterminate or retriable), batches resent {}",
        shared.errors.load(Ordering::Relaxed),
        shared.resent_batches.load(Ordering::Relaxed)
    );
    report.assert_clean();
    report
}

fn crash_dir(name: &str) -> PathBuf {
    test_dir(name)
}

// Proves: SIGKILL of `strom serve` at random moments under load (producers
// pipelining, consumers tailing and catching up), restarted each time on
// the same directory, loses no acknowledged record, changes no offset,
// leaves no hole, duplicates nothing that was not resent, never serves a
// record a crash takes back, and never makes a consumer skip or go back.
fn random_kills_under_load() {
    let _one = one_server();
    let seed = checker::seed("STROM_CRASH_SEED");
    let kills_min = env_u64("STROM_CRASH_KILLS", 25);
    let acked_min = env_u64("STROM_CRASH_RECORDS", 1_000_000);
    let mut rng = SimRng::new(seed);
    let dir = crash_dir("crash-kills");
    let mut serve = start(&dir, 0, &[], None);
    create_topic(serve.addr);
    let load = Load::start(serve.addr, seed);
    let started = Instant::now();
    let (mut kills, mut stops, mut start_kills, mut up_ms, mut cut_bytes, mut scanned_bytes) = (0u64, 0u64, 0u64, Vec::new(), 0u64, 0u64);
    let mut audits = 0;
    while kills < kills_min || load.checker().acked_count() < acked_min {
        assert!(kills < kills_min * 4 + 100, "{kills} kills and only {} acknowledged records", load.checker().acked_count());
        std::thread::sleep(Duration::from_millis(30 + rng.below(250)));
        let port = serve.addr.port();
        audits += audit(&serve);
        // One round in eight is a clean stop under load: what it refuses
        // with ShuttingDown must not be stored (the checker's failed_present).
        let how = if rng.below(8) == 0 {
            stop(serve);
            stops += 1;
            "stop"
        } else {
            serve.kill();
            kills += 1;
            "kill"
        };
        // Sometimes the server is down a while, and clients find nobody;
        // sometimes the next start is killed too, while it recovers.
        match rng.below(8) {
            0 | 1 => std::thread::sleep(Duration::from_millis(rng.below(200))),
            2 => {
                Serve::on(&dir).cores(SERVER_CORES).start_and_kill_after(Duration::from_millis(rng.below(60)));
                start_kills += 1;
            }
            _ => {}
        }
        serve = start(&dir, port, &[], None);
        load.move_to(serve.addr);
        let r = recovered(&serve);
        println!(
            "{how} {:>3}: {:>8} acked so far; restarted in {:>6.1} ms (recovery {:>6} us), scanned {} bytes, cut {} bytes",
            kills + stops,
            load.checker().acked_count(),
            serve.up.as_secs_f64() * 1e3,
            r.recovery_us_max,
            r.scanned_bytes,
            r.cut_bytes
        );
        up_ms.push(serve.up.as_secs_f64() * 1e3);
        cut_bytes += r.cut_bytes;
        scanned_bytes += r.scanned_bytes;
    }
    // Load on the last restart a little, so its recovery is read back too.
    std::thread::sleep(Duration::from_millis(200));
    let report = finish(load, &serve);
    up_ms.sort_by(f64::total_cmp);
    println!(
        "random kills: {kills} kills under load, {start_kills} during start-up, {stops} clean stops in {:.1} s, {} acknowledged records checked; start-up median {:.1} ms, max {:.1} ms; {scanned_bytes} bytes scanned, {cut_bytes} bytes cut in all",
        started.elapsed().as_secs_f64(),
        report.acked,
        up_ms[up_ms.len() / 2],
        up_ms[up_ms.len() - 1]
    );
    println!("server invariant audits before each kill or stop: {audits} counters checked, all 0");
    assert!(kills >= kills_min && report.acked >= acked_min);
    // Passed: the data (hundreds of MB) is of no more use.
    drop(serve);
    let _ = std::fs::remove_dir_all(&dir);
}

/// Runs the load against a server armed with `failpoint` (`NAME:NTH`) until
/// the server kills itself there, restarts it unarmed, runs the load a
/// little more and judges.
fn crash_at(failpoint: &str, extra: &[&str]) {
    let _one = one_server();
    let seed = checker::seed("STROM_CRASH_SEED");
    let name = failpoint.split(':').next().unwrap();
    let extra: Vec<String> = extra.iter().map(|s| s.to_string()).collect();
    let dir = crash_dir(&format!("crash-fp-{name}"));
    let mut serve = start(&dir, 0, &extra, Some(failpoint));
    let armed = format!("strom: failpoint {name} armed");
    assert!(
        serve.stderr_text().contains(&armed),
        "no {armed:?} line: is target/release/strom built without the feature?\n{}",
        serve.stderr_text()
    );
    create_topic(serve.addr);
    let load = Load::start(serve.addr, seed);
    let status = serve.wait_exit(Duration::from_secs(60));
    let stderr = serve.stderr_text();
    assert!(status.is_some(), "the server did not reach failpoint {failpoint} within 60 s; stderr:\n{stderr}");
    use std::os::unix::process::ExitStatusExt;
    // A panic there (`:panic`) must stop the process as a kill does: abort.
    let (signal, why) = if failpoint.ends_with(":panic") { (libc::SIGABRT, "SIGABRT") } else { (libc::SIGKILL, "SIGKILL") };
    assert_eq!(status.unwrap().signal(), Some(signal), "the server did not die of {why}; stderr:\n{stderr}");
    if signal == libc::SIGABRT {
        assert!(stderr.contains("a thread panicked; aborting the process"), "no abort line in stderr:\n{stderr}");
    }
    assert!(stderr.contains(&format!("strom: failpoint {name} hit")), "no failpoint line in stderr:\n{stderr}");
    let acked_before = load.checker().acked_count();
    serve = start(&dir, serve.addr.port(), &extra, None);
    load.move_to(serve.addr);
    let r = recovered(&serve);
    std::thread::sleep(Duration::from_millis(300));
    let report = finish(load, &serve);
    println!(
        "failpoint {failpoint}: {acked_before} acknowledged before the crash, {} in all; restarted in {:.1} ms, cut {} bytes",
        report.acked,
        serve.up.as_secs_f64() * 1e3,
        r.cut_bytes
    );
    assert!(acked_before > 0, "the crash came before any acknowledgement: the failpoint fired too early to test anything");
    drop(serve);
    let _ = std::fs::remove_dir_all(&dir);
}

// Proves: a crash while a commit's write is submitted and not completed
// loses nothing acknowledged; the torn or missing commit is cut, or kept
// whole, and nothing after it is served twice or changed.
fn failpoint_write_in_flight() {
    crash_at("write_in_flight:300", &[]);
}

// Proves: a crash after a write completed and before an fdatasync covers it
// (the commit is in the page cache, unacknowledged) loses nothing acknowledged.
fn failpoint_write_done_before_fsync() {
    crash_at("write_done_before_fsync:300", &[]);
}

// Proves: a crash after the fdatasync completed and before the commits it
// covers are acknowledged keeps them (durable, unacknowledged: allowed to
// survive) and loses nothing acknowledged; their resend is the only duplicate.
fn failpoint_fsync_done_before_ack() {
    crash_at("fsync_done_before_ack:300", &[]);
}

// Proves: a core thread that panics (a bug, here at the moment an fdatasync
// completed and its commits are not yet acknowledged) stops the whole
// server (SIGABRT) instead of leaving that core's partitions dead while the
// rest serves on; the restart loses nothing acknowledged, as after a kill.
fn a_panicking_core_stops_the_process() {
    crash_at("fsync_done_before_ack:300:panic", &[]);
}

// Proves: a crash right after a new segment file is created and before its
// directory is synced recovers (the empty segment is removed or reused) and
// loses nothing acknowledged. Segments of 4 MiB make rolls come under load.
fn failpoint_roll_before_dir_sync() {
    crash_at("roll_before_dir_sync:3", &["--segment-bytes", "4194304"]);
}

// Proves: a crash between a checkpoint's temp file and its rename leaves the
// old (or no) checkpoint, recovery scans further back, and nothing
// acknowledged is lost. A 4 MiB checkpoint interval makes them come under load.
fn failpoint_checkpoint_before_rename() {
    crash_at("checkpoint_before_rename:2", &["--checkpoint-interval-bytes", "4194304"]);
}

/// Runs the load against a server on a journaled ext4 in a loop device,
/// armed to pause at `failpoint` (`NAME:NTH`); when a core stops there, cuts
/// the power (the ext4 shutdown ioctl, no journal flush), kills the server,
/// replays the journal as a reboot would, checks the filesystem, restarts
/// the server unarmed and judges.
fn power_cut_at(failpoint: &str) {
    let _one = one_server();
    let seed = checker::seed("STROM_CRASH_SEED");
    let name = failpoint.split(':').next().unwrap();
    let mut fs = LoopFs::new(&format!("cut-{name}"), 512, &[]);
    let dir = fs.mount_point().join("data");
    let mut serve = start(&dir, 0, &[], Some(&format!("{failpoint}:pause")));
    create_topic(serve.addr);
    let load = Load::start(serve.addr, seed);
    let hit = format!("strom: failpoint {name} hit");
    assert!(serve.wait_line(&hit, Duration::from_secs(60)), "no {hit:?} within 60 s; stderr:\n{}", serve.stderr_text());
    let acked_at_pause = load.checker().acked_count();
    fs.power_cut();
    // The other core and the clients go on against the dead filesystem a moment.
    std::thread::sleep(Duration::from_millis(100));
    serve.kill();
    fs.unmount();
    fs.mount();
    fs.unmount();
    if let Err(e) = fs.fsck() {
        panic!("e2fsck -fn after the power cut at {failpoint}: {e}");
    }
    fs.mount();
    serve = start(&dir, serve.addr.port(), &[], None);
    load.move_to(serve.addr);
    let r = recovered(&serve);
    std::thread::sleep(Duration::from_millis(300));
    let report = finish(load, &serve);
    println!(
        "power cut at failpoint {failpoint}: {acked_at_pause} acknowledged at the pause, {} in all; restarted in {:.1} ms, scanned {} bytes, cut {} bytes",
        report.acked,
        serve.up.as_secs_f64() * 1e3,
        r.scanned_bytes,
        r.cut_bytes
    );
    assert!(acked_at_pause > 0, "the failpoint paused before any acknowledgement: too early to test anything");
}

// Proves: a power cut while a core holds a completed write that no
// fdatasync covers yet (the data reached the device, its file size and
// extents are not durable) loses nothing acknowledged, and the recovered log
// holds no offset that differs from what consumers were served.
fn power_cut_at_write_done_before_fsync() {
    power_cut_at("write_done_before_fsync:200");
}

// Proves: a power cut after an fdatasync completed and before its commits
// were acknowledged keeps everything acknowledged (and those durable,
// unacknowledged commits may survive: their resends are allowed duplicates).
fn power_cut_at_fsync_done_before_ack() {
    power_cut_at("fsync_done_before_ack:200");
}

// Proves: a power cut while a commit's write is in flight loses nothing
// acknowledged; what the write left (nothing, part, all) is judged and cut
// or kept by recovery without touching earlier commits.
fn power_cut_at_write_in_flight() {
    power_cut_at("write_in_flight:200");
}
