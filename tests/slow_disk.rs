//! A slow disk under a memory cap: `strom serve` runs in a cgroup limited to
//! 512 MiB, its data directory on an ext4 in a loop device, while producers
//! offer far more than the disk takes once its writes are throttled (cgroup
//! blkio `throttle.write_bps_device`, or v2 `io.max`, on the loop device: the
//! server's O_DIRECT writes are submitted from its own threads, so the limit
//! applies to them). After a while the throttle is lifted.
//!
//! Proves: producers are pushed back (their acks slow down; nothing is
//! refused or times out), the server is never OOM-killed and stays under its
//! cap, the backlog drains once the throttle lifts, and the shared checker
//! finds everything acknowledged, once, at its offset. Prints the p99 ack
//! latency before, during and after the throttle, and how long the drain
//! took. Needs root, loop devices and cgroups; elsewhere reported as ignored
//! with the reason (tests/harness/skip.rs).
//!
//! `STROM_SLOW_DISK_SECS=N` throttles for N seconds (default 12).
mod harness;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use harness::cgroup::Limits;
use harness::checker::Checker;
use harness::loopfs::LoopFs;
use harness::serve::Serve;
use harness::skip::{self, Need};
use harness::workload::{self, LiveCounts, ProduceCfg, ProducerReport, ProducerState, SendEnd, SendRecord};

const TOPIC: &str = "slow";
const PARTITIONS: u32 = 4;
const PRODUCERS: u32 = 32;
/// Pipelining producers started with the throttle: each keeps `FLOOD_WINDOW`
/// requests of about 256 KiB in flight, 128 MiB offered at once in all.
const FLOODERS: u32 = 16;
const FLOOD_WINDOW: usize = 32;
const MEMORY_CAP_BYTES: u64 = 512 << 20;
const THROTTLE_BYTES_PER_S: u64 = 2 << 20;
const BASELINE: Duration = Duration::from_secs(3);
const AFTER: Duration = Duration::from_secs(6);

// The test, and what it needs (tests/harness/skip.rs): without it, it is
// reported as ignored with the reason, never as a pass.
fn main() {
    let needs = [Need::LoopFs, Need::IoCgroup];
    skip::main(vec![skip::trial("slow_disk_pushes_back_within_memory_cap", &needs, slow_disk_pushes_back_within_memory_cap)]);
}

fn throttle_time() -> Duration {
    Duration::from_secs(std::env::var("STROM_SLOW_DISK_SECS").ok().and_then(|s| s.parse().ok()).unwrap_or(12))
}

/// p99 ack latency (ms) of the sends that started in `[from, to)`, and how many.
fn p99_ms(sends: &[SendRecord], from: Instant, to: Instant) -> (f64, usize) {
    let mut lat: Vec<u64> = sends.iter().filter(|s| s.started >= from && s.started < to).map(|s| s.latency_us()).collect();
    let n = lat.len();
    (workload::quantile(&mut lat, 0.99) as f64 / 1000.0, n)
}

type Producer = JoinHandle<(ProducerState, ProducerReport)>;

/// 32 producers offering 32 KiB every 20 ms each: about 50 MB/s, 25 times
/// what the throttled disk takes.
fn spawn_paced(addr: SocketAddr, checker: &Arc<Checker>, live: &Arc<LiveCounts>, stop: &Arc<AtomicBool>) -> Vec<Producer> {
    (0..PRODUCERS)
        .map(|id| {
            let cfg = ProduceCfg {
                topic: TOPIC.into(),
                partition: id % PARTITIONS,
                records_per_batch: 8,
                batches_per_request: 1,
                extra_bytes: 4000,
                full_backoff: Duration::from_millis(20),
                timeout: Duration::from_secs(60),
                live: live.clone(),
                pace: Some(Duration::from_millis(20)),
            };
            workload::spawn_producer(addr, checker.clone(), ProducerState { id, next_seq: 0 }, cfg, stop.clone())
        })
        .collect()
}

/// The pipelining producers started with the throttle: `FLOOD_WINDOW`
/// requests of about 256 KiB in flight each.
fn spawn_flooders(addr: SocketAddr, checker: &Arc<Checker>, live: &Arc<LiveCounts>, stop: &Arc<AtomicBool>) -> Vec<Producer> {
    (PRODUCERS..PRODUCERS + FLOODERS)
        .map(|id| {
            let cfg = ProduceCfg {
                topic: TOPIC.into(),
                partition: id % PARTITIONS,
                records_per_batch: 64,
                batches_per_request: 1,
                extra_bytes: 4000,
                full_backoff: Duration::from_millis(20),
                timeout: Duration::from_secs(120),
                live: live.clone(),
                pace: None,
            };
            let state = ProducerState { id, next_seq: 0 };
            workload::spawn_pipelined_producer(addr, checker.clone(), state, cfg, FLOOD_WINDOW, stop.clone())
        })
        .collect()
}

// Proves: with the disk throttled under a memory cap, producers are pushed
// back without errors, the server is never OOM-killed, the backlog drains
// when the throttle lifts, and nothing acknowledged is lost.
fn slow_disk_pushes_back_within_memory_cap() {
    let fs = LoopFs::new("slow-disk", 1024, &[]);
    let limits = Limits::memory_and_io("strom-slow-disk", MEMORY_CAP_BYTES).unwrap_or_else(|e| panic!("cgroups unavailable: {e}"));
    let dir = fs.mount_point().join("data");
    let mut serve = Serve::on(&dir).cgroup(&limits).start();
    serve.client().create_topic(TOPIC, PARTITIONS).unwrap();
    let checker = Arc::new(Checker::new());
    let stop = Arc::new(AtomicBool::new(false));
    let live = Arc::new(LiveCounts::default());
    let producers = spawn_paced(serve.addr, &checker, &live, &stop);
    let consumers: Vec<_> =
        (0..PARTITIONS).map(|p| workload::spawn_consumer(serve.addr, checker.clone(), p, TOPIC.into(), p, 0, stop.clone())).collect();
    let t_start = Instant::now();
    std::thread::sleep(BASELINE);
    let acked_before = live.acked_records.load(Ordering::Relaxed);
    let t_on = Instant::now();
    limits.throttle_writes(&fs.major_minor(), THROTTLE_BYTES_PER_S).unwrap();
    let stop_flood = Arc::new(AtomicBool::new(false));
    let flooders = spawn_flooders(serve.addr, &checker, &live, &stop_flood);
    std::thread::sleep(throttle_time());
    stop_flood.store(true, Ordering::Relaxed);
    let acked_during = live.acked_records.load(Ordering::Relaxed) - acked_before;
    let t_off = Instant::now();
    limits.throttle_writes(&fs.major_minor(), 0).unwrap();
    std::thread::sleep(AFTER);
    stop.store(true, Ordering::Relaxed);
    let t_end = Instant::now();
    let outs: Vec<_> = producers.into_iter().map(|h| h.join().unwrap()).collect();
    let flood_outs: Vec<_> = flooders.into_iter().map(|h| h.join().unwrap()).collect();
    for h in consumers {
        h.join().unwrap();
    }
    assert!(serve.alive(), "the server died under the memory cap:\n{}", serve.stderr().join("\n"));
    let sends: Vec<SendRecord> = outs.iter().flat_map(|(_, r)| r.sends.iter().copied()).collect();
    let flood: Vec<SendRecord> = flood_outs.iter().flat_map(|(_, r)| r.sends.iter().copied()).collect();
    let errors: Vec<SendEnd> = sends.iter().chain(&flood).map(|s| s.end).filter(|e| *e != SendEnd::Acked).collect();
    assert!(
        errors.is_empty(),
        "pushed-back producers must not be refused or time out: {} sends ended {:?}",
        errors.len(),
        &errors[..errors.len().min(10)]
    );
    assert!(acked_during > 0, "nothing was acknowledged while the disk was throttled");
    let (p99_before, n_before) = p99_ms(&sends, t_start, t_on);
    let (p99_during, n_during) = p99_ms(&sends, t_on, t_off);
    let (p99_after, n_after) = p99_ms(&sends, t_off, t_end);
    let (p99_settled, n_settled) = p99_ms(&sends, t_off + AFTER / 2, t_end);
    assert!(n_after > 0, "nothing was sent after the throttle lifted");
    // The backlog at the lift: the sends in flight then (one per paced
    // producer, up to a window per flooder). It has drained when the last
    // of them is answered.
    let backlog: Vec<&SendRecord> = sends.iter().chain(&flood).filter(|s| s.started < t_off && s.answered > t_off).collect();
    let mut flood_lat: Vec<u64> = flood.iter().map(|s| s.latency_us()).collect();
    let flood_p99_ms = workload::quantile(&mut flood_lat, 0.99) as f64 / 1000.0;
    let flood_acked_mb = flood.iter().map(|s| u64::from(s.records)).sum::<u64>() as f64 * 4020.0 / 1e6;
    let drain_ms = backlog.iter().map(|s| s.answered.duration_since(t_off).as_millis()).max().unwrap_or(0);
    let oom_kills = limits.oom_kills();
    let peak = limits.peak_bytes();
    let acked_mb_s = |records: u64, d: Duration| records as f64 * 4020.0 / d.as_secs_f64() / 1e6;
    println!(
        "slow disk: memory cap {} MiB, peak {} MiB, limit hits {}, OOM kills {oom_kills}; throttle {} MiB/s for {} s",
        MEMORY_CAP_BYTES >> 20,
        peak.map_or("?".into(), |b| (b >> 20).to_string()),
        limits.limit_hits(),
        THROTTLE_BYTES_PER_S >> 20,
        throttle_time().as_secs()
    );
    println!(
        "slow disk: p99 ack latency before {p99_before:.1} ms ({n_before} sends), during {p99_during:.1} ms ({n_during} sends, \
         {:.1} MB/s acked), after {p99_after:.1} ms ({n_after} sends), last {} s {p99_settled:.1} ms ({n_settled} sends); \
         backlog of {} sends drained {drain_ms} ms after the lift",
        acked_mb_s(acked_during, t_off - t_on),
        (AFTER / 2).as_secs(),
        backlog.len()
    );
    println!(
        "slow disk: {FLOODERS} pipelining producers ({FLOOD_WINDOW} requests of 256 KiB in flight each) during the throttle: \
         {} sends, {flood_acked_mb:.0} MB acknowledged, p99 {flood_p99_ms:.0} ms",
        flood.len()
    );
    assert_eq!(oom_kills, 0, "the server's cgroup saw OOM kills");
    if let Some(peak) = peak {
        assert!(peak < MEMORY_CAP_BYTES, "peak memory {peak} reached the cap");
    }
    checker.final_read(serve.addr, TOPIC, PARTITIONS).unwrap();
    let rep = checker.report();
    let (status, lines) = serve.stop(Duration::from_secs(30));
    assert!(status.is_some_and(|s| s.success()), "server did not stop cleanly: {status:?}\n{}", lines.join("\n"));
    rep.assert_clean();
    drop(fs);
}
