//! Power cuts: a kill keeps the page cache, a power cut does not. The data
//! directory is on a journaled ext4 in a loop device; under producer load
//! (and a tailing consumer per partition) the filesystem is shut down with
//! the shutdown ioctl without flushing its journal (tests/harness/fs_shutdown.rs,
//! what `xfs_io -x -c shutdown` does: what was not committed to the journal
//! or written through is lost, and every later I/O fails with EIO). Then the server is stopped, the
//! filesystem unmounted, mounted and unmounted again (the kernel replays its
//! journal, as after a reboot), `e2fsck -fn` must find it clean, and it is
//! mounted for the restarted server; the shared checker reads everything back.
//!
//! Proves, per cut: every record acknowledged before the cut is there at
//! its offset, nothing a consumer read vanished, no ack arrived for a batch
//! sent after the cut (it could not have been made durable), the server said
//! in its log that it stopped acknowledging, and the filesystem is sound.
//! Needs root and loop devices; elsewhere reported as ignored with the reason
//! (tests/harness/skip.rs).
//!
//! `STROM_POWER_CUTS=N` sets the number of cuts (default 10);
//! `STROM_POWERCUT_SEED=S` replays a run's load durations.
mod harness;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use harness::checker::{self, Checker};
use harness::loopfs::LoopFs;
use harness::serve::Serve;
use harness::skip::{self, Need};
use harness::workload::{self, LiveCounts, ProduceCfg, ProducerReport, ProducerState, SendEnd};

const TOPIC: &str = "cut";
const PARTITIONS: u32 = 2;
const PRODUCERS: u32 = 4;
/// The server's log line when a log stops acknowledging (src/log/journal.rs).
const FAILED_LINE: &str = "stops accepting writes";

// The test, and what it needs (tests/harness/skip.rs): without it, it is
// reported as ignored with the reason, never as a pass.
fn main() {
    skip::main(vec![skip::trial("power_cuts_lose_nothing_acknowledged", &[Need::LoopFs], power_cuts_lose_nothing_acknowledged)]);
}

fn cuts() -> u32 {
    std::env::var("STROM_POWER_CUTS").ok().and_then(|s| s.parse().ok()).unwrap_or(10)
}

fn start(dir: &std::path::Path) -> Serve {
    // info: the server prints what recovery scanned and cut at each start.
    Serve::on(dir).env("RUST_LOG", "warn,strom::core=info").start()
}

/// One line of figures per cut.
struct CutFigures {
    acked_records: u64,
    sent_after_cut: usize,
    acked_after_cut: usize,
    cut_to_failure_ms: Option<u128>,
    stop_clean: bool,
    restart_ms: u128,
    recovery: Vec<String>,
}

impl std::fmt::Display for CutFigures {
    fn fmt(&self, out: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            out,
            "{} records acked before the cut; {} sends after it, {} acked; failure logged {} ms after the cut; \
             stopped {}; restart {} ms; recovery: {}",
            self.acked_records,
            self.sent_after_cut,
            self.acked_after_cut,
            self.cut_to_failure_ms.map_or("never".into(), |ms| ms.to_string()),
            if self.stop_clean { "on SIGTERM" } else { "by SIGKILL" },
            self.restart_ms,
            self.recovery.join("; ")
        )
    }
}

/// Runs the producers (from `states`) and a tailing consumer per partition
/// for `load_ms`, cuts the power under them, lets them go on against the
/// failed disk a moment, then stops them. Returns each producer's state and
/// report, and when the cut began and when it returned.
fn load_then_cut(
    serve: &Serve,
    fs: &LoopFs,
    checker: &Arc<Checker>,
    states: &[ProducerState],
    consumer_offsets: &mut [u64],
    load_ms: u64,
) -> (Vec<(ProducerState, ProducerReport)>, Instant, Instant) {
    let stop = Arc::new(AtomicBool::new(false));
    let live = Arc::new(LiveCounts::default());
    let producers: Vec<_> = states
        .iter()
        .cloned()
        .map(|s| {
            let cfg = ProduceCfg {
                topic: TOPIC.into(),
                partition: s.id % PARTITIONS,
                records_per_batch: 1 + (s.id * 7) % 32,
                batches_per_request: 1 + s.id % 2,
                extra_bytes: 100 + 300 * s.id,
                full_backoff: Duration::from_millis(20),
                timeout: Duration::from_secs(10),
                live: live.clone(),
                pace: None,
            };
            workload::spawn_producer(serve.addr, checker.clone(), s, cfg, stop.clone())
        })
        .collect();
    let consumers: Vec<_> = (0..PARTITIONS)
        .map(|p| workload::spawn_consumer(serve.addr, checker.clone(), p, TOPIC.into(), p, consumer_offsets[p as usize], stop.clone()))
        .collect();
    std::thread::sleep(Duration::from_millis(load_ms));
    let cut_started = Instant::now();
    fs.power_cut();
    let cut_done = Instant::now();
    // The load goes on against the failed disk for a moment.
    std::thread::sleep(Duration::from_millis(300));
    stop.store(true, Ordering::Relaxed);
    let outs: Vec<_> = producers.into_iter().map(|h| h.join().unwrap()).collect();
    for (p, h) in consumers.into_iter().enumerate() {
        consumer_offsets[p] = h.join().unwrap();
    }
    (outs, cut_started, cut_done)
}

/// As after a reboot: mounting replays the journal. Only then does the
/// filesystem on the device mean anything to e2fsck, which must find it
/// clean; then it is mounted for the restart.
fn reboot(fs: &mut LoopFs, cut: u32) {
    fs.unmount();
    fs.mount();
    fs.unmount();
    if let Err(e) = fs.fsck() {
        panic!("cut {cut}: e2fsck -fn after the power cut: {e}");
    }
    fs.mount();
}

// Proves: after each power cut nothing acknowledged is lost or changed, no
// batch sent after the cut is acknowledged, the server reports the failure,
// and e2fsck finds the filesystem clean.
fn power_cuts_lose_nothing_acknowledged() {
    let seed = checker::seed("STROM_POWERCUT_SEED");
    let mut rng = seed;
    let mut next_rand = move |n: u64| {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng % n
    };
    // A sparse image: about 40 MB are written per cut.
    let mut fs = LoopFs::new("powercut", 256 + 64 * u64::from(cuts()), &[]);
    let dir = fs.mount_point().join("data");
    let checker = Arc::new(Checker::new());
    let mut serve = start(&dir);
    serve.client().create_topic(TOPIC, PARTITIONS).unwrap();
    let mut states: Vec<ProducerState> = (0..PRODUCERS).map(|id| ProducerState { id, next_seq: 0 }).collect();
    let mut consumer_offsets = vec![0u64; PARTITIONS as usize];
    let mut figures = Vec::new();
    let started = Instant::now();
    for cut in 0..cuts() {
        let (outs, cut_started, cut_done) = load_then_cut(&serve, &fs, &checker, &states, &mut consumer_offsets, 300 + next_rand(1200));
        // No ack for a batch sent after the cut: it cannot have been made durable.
        let mut f = CutFigures {
            acked_records: outs.iter().map(|(_, r)| r.acked_records()).sum(),
            sent_after_cut: 0,
            acked_after_cut: 0,
            cut_to_failure_ms: None,
            stop_clean: false,
            restart_ms: 0,
            recovery: Vec::new(),
        };
        let failure_seen = serve.first_line_with(FAILED_LINE);
        for (_, r) in &outs {
            for s in &r.sends {
                if s.started > cut_done || failure_seen.is_some_and(|t| s.started > t) {
                    f.sent_after_cut += 1;
                    f.acked_after_cut += usize::from(s.end == SendEnd::Acked);
                }
            }
        }
        states = outs.into_iter().map(|(s, _)| s).collect();
        assert_eq!(f.acked_after_cut, 0, "cut {cut}: {} batches sent after the cut were acknowledged", f.acked_after_cut);
        let (status, lines) = serve.stop(Duration::from_secs(20));
        f.stop_clean = status.is_some();
        f.cut_to_failure_ms = failure_seen.map(|t| t.saturating_duration_since(cut_started).as_millis());
        assert!(
            lines.iter().any(|l| l.contains(FAILED_LINE)),
            "cut {cut}: the server never said it stopped acknowledging:\n{}",
            lines.join("\n")
        );
        reboot(&mut fs, cut);
        let t = Instant::now();
        serve = start(&dir);
        f.restart_ms = t.elapsed().as_millis();
        f.recovery = serve.stderr().into_iter().filter(|l| l.contains("log recovered")).map(|l| summarize_recovery(&l)).collect();
        checker.final_read(serve.addr, TOPIC, PARTITIONS).unwrap();
        let rep = checker.report();
        assert!(rep.is_clean(), "cut {cut} (seed {seed}):\n{rep}");
        println!("cut {cut}: {f}");
        figures.push(f);
    }
    let (status, _) = serve.stop(Duration::from_secs(20));
    assert!(status.is_some_and(|s| s.success()), "final stop: {status:?}");
    let rep = checker.report();
    println!(
        "power cuts: {} cuts survived in {:.1} s, {} records acknowledged, 0 acked after a cut ({} sends after cuts refused)",
        figures.len(),
        started.elapsed().as_secs_f64(),
        checker.acked_count(),
        figures.iter().map(|f| f.sent_after_cut).sum::<usize>()
    );
    rep.assert_clean();
}

/// `log=0 scanned_bytes=.. cut_bytes=..` out of a tracing line.
fn summarize_recovery(line: &str) -> String {
    // Without the terminal colour codes tracing may put around field names.
    let mut plain = String::new();
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            chars.by_ref().find(|&c| c == 'm');
        } else {
            plain.push(c);
        }
    }
    plain
        .split_whitespace()
        .filter(|w| w.starts_with("log=") || w.starts_with("scanned_bytes=") || w.starts_with("cut_bytes="))
        .collect::<Vec<_>>()
        .join(" ")
}
