//! A real disk that fills up: `strom serve` with its data directory on a
//! small ext4 in a loop device (no reserved blocks, so root fills it too).
//! Proves that producers get the typed, retriable `DiskFull` error (and
//! that it is true: none of a refused batch is ever stored), that nothing
//! acknowledged is lost, that reads keep working while the disk is full,
//! that the same server acknowledges again once space is freed (no
//! restart), and that all of it survives a restart. Needs root and loop
//! devices; elsewhere reported as ignored with the reason
//! (tests/harness/skip.rs).
//!
//! Space is freed by deleting a ballast file the test laid down first, as an
//! operator would delete something. Deleting a topic would not do it: a
//! topic's batches share their log with other topics, and only retention
//! deletes whole segments.
//!
//! `STROM_DISK_FULL_FILLS=N` fills and frees the disk N times (default 2).
mod harness;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use harness::checker::Checker;
use harness::loopfs::LoopFs;
use harness::serve::Serve;
use harness::skip::{self, Need};
use harness::workload::{self, LiveCounts, ProduceCfg, ProducerReport, ProducerState, SendEnd};
use strom::proto::ErrorCode;

const TOPIC: &str = "full";
const PARTITIONS: u32 = 2;
/// Each fill adds about 24 MiB of log and 2,000+ records after it: the
/// filesystem grows with the number of fills.
const FS_MIB_BASE: u64 = 48;
const FS_MIB_PER_FILL: u64 = 32;
/// Free space left before producing, so the disk fills in a second or two.
const HEADROOM_BYTES: u64 = 24 << 20;
/// The server's line when a log writes full commits again in place.
const RETRY_LINE: &str = "writing the full ones again";

// The test, and what it needs (tests/harness/skip.rs): without it, it is
// reported as ignored with the reason, never as a pass.
fn main() {
    skip::main(vec![skip::trial("disk_full_refuses_then_resumes", &[Need::LoopFs], disk_full_refuses_then_resumes)]);
}

fn fills() -> usize {
    std::env::var("STROM_DISK_FULL_FILLS").ok().and_then(|s| s.parse().ok()).unwrap_or(2)
}

/// Writes a ballast file that leaves about `headroom` bytes free.
fn lay_ballast(fs: &LoopFs, headroom: u64) -> std::path::PathBuf {
    let path = fs.mount_point().join("ballast");
    let size = fs.free_bytes().saturating_sub(headroom);
    let f = std::fs::File::create(&path).unwrap();
    // Real blocks, not a sparse file: write zeros in 1 MiB chunks.
    let chunk = vec![0u8; 1 << 20];
    let mut w = std::io::BufWriter::new(f);
    let mut left = size;
    while left > 0 {
        let n = left.min(chunk.len() as u64) as usize;
        std::io::Write::write_all(&mut w, &chunk[..n]).unwrap();
        left -= n as u64;
    }
    w.into_inner().unwrap().sync_all().unwrap();
    path
}

/// Runs producers and a tailing consumer per partition until `done` says
/// so (checked every 20 ms) or `limit` passes; returns the producers'
/// states and logs.
fn produce_until(
    serve: &Serve,
    checker: &Arc<Checker>,
    states: Vec<ProducerState>,
    consumer_offsets: &mut [u64],
    limit: Duration,
    done: &dyn Fn(&LiveCounts) -> bool,
) -> Vec<(ProducerState, ProducerReport)> {
    let stop = Arc::new(AtomicBool::new(false));
    let live = Arc::new(LiveCounts::default());
    let producers: Vec<_> = states
        .into_iter()
        .map(|s| {
            let cfg = ProduceCfg {
                topic: TOPIC.into(),
                partition: s.id % PARTITIONS,
                records_per_batch: 64,
                batches_per_request: if s.id >= 2 { 4 } else { 1 },
                extra_bytes: 1000,
                full_backoff: Duration::from_millis(20),
                timeout: Duration::from_secs(5),
                live: live.clone(),
                pace: None,
            };
            workload::spawn_producer(serve.addr, checker.clone(), s, cfg, stop.clone())
        })
        .collect();
    let consumers: Vec<_> = (0..PARTITIONS)
        .map(|p| workload::spawn_consumer(serve.addr, checker.clone(), p, TOPIC.into(), p, consumer_offsets[p as usize], stop.clone()))
        .collect();
    let start = Instant::now();
    while !done(&live) && start.elapsed() < limit {
        std::thread::sleep(Duration::from_millis(20));
    }
    stop.store(true, Ordering::Relaxed);
    let out = producers.into_iter().map(|h| h.join().unwrap()).collect();
    for (p, h) in consumers.into_iter().enumerate() {
        consumer_offsets[p] = h.join().unwrap();
    }
    out
}

// Proves: on a full disk producers get DiskFull (retriable) and none of a
// refused batch is stored; reads work while full; writes resume once space
// is freed, without a restart; nothing acknowledged is lost, across a restart.
fn disk_full_refuses_then_resumes() {
    let mut fs = LoopFs::new("disk-full", FS_MIB_BASE + FS_MIB_PER_FILL * fills() as u64, &["-m", "0"]);
    let dir = fs.mount_point().join("data");
    let checker = Arc::new(Checker::new());
    let serve = Serve::start(&dir, &[]);
    serve.client().create_topic(TOPIC, PARTITIONS).unwrap();
    let mut states: Vec<ProducerState> = (0..4).map(|id| ProducerState { id, next_seq: 0 }).collect();
    let mut consumer_offsets = vec![0u64; PARTITIONS as usize];
    let (mut full_refusals, mut acked_after_free, mut partly_stored, mut held_in_place) = (0usize, 0u64, 0usize, 0usize);
    for round in 0..fills() {
        let ballast = lay_ballast(&fs, HEADROOM_BYTES);
        // Fill: until every producer was refused a few times.
        let t0 = Instant::now();
        let acked_before = checker.acked_count();
        // Full for a moment: refused often enough that every producer met it.
        let full = |live: &LiveCounts| live.disk_full.load(Ordering::Relaxed) >= 40;
        let out = produce_until(&serve, &checker, states, &mut consumer_offsets, Duration::from_secs(20), &full);
        let refused: usize = out.iter().map(|(_, r)| r.count(SendEnd::DiskFull)).sum();
        // A multi-batch produce whose batches straddle the full write is
        // partly stored: the server answers StorageFailed (indeterminate),
        // never DiskFull. Anything else is a bug.
        let partial = out.iter().map(|(_, r)| r.count(SendEnd::Error(ErrorCode::StorageFailed))).sum::<usize>();
        // A log that retries in place (a later write landed past the full
        // one) holds the appends of those commits until space is freed:
        // their producers time out (indeterminate).
        let retrying = serve.first_line_with(RETRY_LINE).is_some();
        let held = out.iter().map(|(_, r)| r.count(SendEnd::Broken)).sum::<usize>();
        let other: Vec<SendEnd> = out
            .iter()
            .flat_map(|(_, r)| r.sends.iter().map(|s| s.end))
            .filter(|e| match e {
                SendEnd::Acked | SendEnd::DiskFull | SendEnd::Error(ErrorCode::StorageFailed) => false,
                SendEnd::Broken => !retrying,
                SendEnd::Error(_) => true,
            })
            .collect();
        assert!(other.is_empty(), "round {round}: sends ended otherwise than acked or DiskFull: {other:?}");
        partly_stored += partial;
        held_in_place += held;
        assert!(refused > 0, "round {round}: the disk never filled ({} bytes free)", fs.free_bytes());
        full_refusals += refused;
        println!(
            "round {round}: disk full after {:.1} s, {} records acknowledged, {refused} DiskFull refusals, {} bytes free",
            t0.elapsed().as_secs_f64(),
            checker.acked_count() - acked_before,
            fs.free_bytes()
        );
        states = out.into_iter().map(|(s, _)| s).collect();
        // Reads work on the full disk: everything acknowledged is there.
        checker.final_read(serve.addr, TOPIC, PARTITIONS).unwrap();
        let rep = checker.report();
        assert!(rep.is_clean(), "round {round}, while full:\n{rep}");
        // Free space; the same server must acknowledge again.
        std::fs::remove_file(&ballast).unwrap();
        let before = checker.acked_count();
        let out = produce_until(&serve, &checker, states, &mut consumer_offsets, Duration::from_secs(20), &|live| {
            live.acked_records.load(Ordering::Relaxed) >= 2000
        });
        let resumed = checker.acked_count() - before;
        assert!(resumed >= 2000, "round {round}: only {resumed} records acknowledged after space was freed");
        acked_after_free += resumed;
        states = out.into_iter().map(|(s, _)| s).collect();
    }
    let (status, lines) = serve.stop(Duration::from_secs(20));
    assert!(status.is_some_and(|s| s.success()), "server did not stop cleanly: {status:?}\n{}", lines.join("\n"));
    let rewinds = lines.iter().filter(|l| l.contains("disk full")).count();
    assert!(!lines.iter().any(|l| l.contains("stops accepting writes")), "a log failed:\n{}", lines.join("\n"));
    // Everything again after a restart (and the filesystem is sound).
    fs.unmount();
    fs.fsck().unwrap_or_else(|e| panic!("e2fsck after the run: {e}"));
    fs.mount();
    let serve = Serve::start(&dir, &[]);
    checker.final_read(serve.addr, TOPIC, PARTITIONS).unwrap();
    let rep = checker.report();
    println!(
        "disk full: {} fills, {full_refusals} DiskFull refusals (none stored), {partly_stored} multi-batch produces partly stored \
         (answered StorageFailed), {held_in_place} sends held by a retry in place (timed out), {rewinds} server disk-full log lines, \
         {acked_after_free} records acknowledged after space was freed",
        fills()
    );
    rep.assert_clean();
    drop(serve);
}
