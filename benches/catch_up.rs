//! Catch-up reads of interleaved partitions, beside the disk's sequential
//! O_DIRECT read ceiling measured in the same run (`strom::ceiling`).
//!
//! For N = 1, 8 and 1,000 partitions sharing one log, producers write the
//! same log bytes spread over the N partitions; then readers catch up on
//! every partition from offset 0, each partition one after another (each
//! is a read of 1 of N interleaved partitions), 1 MiB per fetch: once live
//! (the run index the engine kept while writing) and once after a restart
//! (what the checkpoint and recovery left). Each line gives MB/s of batches
//! served, its ratio to the read ceiling, and the read amplification: bytes
//! the disk read over batch bytes served from disk (the engine's
//! `strom_read_disk_bytes_total` over `strom_read_served_from_disk_bytes_total`).
//!
//! `cargo bench --bench catch_up` runs it full size (1 GiB of log per
//! case); `cargo test` runs it small (48 MiB, an 8 MiB tail cache) so that
//! it cannot rot. Environment: `STROM_BENCH_LOG_MIB`, `STROM_BENCH_DIR`,
//! `STROM_BENCH_READ_BUFS` (read buffers per core, default the engine's).
//! Each line also gives the disk reads, the read-ahead windows opened (and
//! taken over by the next fetch) and the bytes windows read unused.
mod common;

use std::collections::VecDeque;
use std::path::Path;
use std::time::{Duration, Instant};

use strom::ceiling;
use strom::config::EngineConfig;
use strom::core::AppendAck;
use strom::engine::{Engine, Pending};
use strom::metrics::{Metrics, ReadMetrics};

const PRODUCERS: usize = 4;
const READERS: u32 = 4;
const INFLIGHT_PER_PRODUCER: usize = 16;
const RECORD_BYTES: usize = 1024;
const RECORDS_PER_BATCH: usize = 64;
const FETCH_BYTES: usize = 1 << 20;

/// One producer: `batches` appends, INFLIGHT_PER_PRODUCER outstanding,
/// round-robin over the partitions from its own first one.
fn produce(engine: &Engine, producer: usize, partitions: u32, batches: u64) {
    let batch = common::make_batch(producer, RECORDS_PER_BATCH, RECORD_BYTES);
    let mut pending: VecDeque<Pending<AppendAck>> = VecDeque::new();
    let mut next = producer as u32 % partitions;
    for _ in 0..batches {
        if pending.len() == INFLIGHT_PER_PRODUCER {
            let p = pending.pop_front().expect("pending");
            p.wait().expect("durable append");
        }
        pending.push_back(engine.append_async("bench", next, batch.clone()).expect("append"));
        next = (next + 1) % partitions;
    }
    for p in pending {
        p.wait().expect("durable append");
    }
}

/// One catch-up: bytes served, seconds, and the read metrics it added.
struct CatchUp {
    bytes: u64,
    elapsed: Duration,
    disk_bytes: u64,
    served_disk_bytes: u64,
    /// Disk reads, and read-ahead windows opened, taken over by the next
    /// fetch, and the bytes they read that nobody used.
    reads_from_disk: u64,
    windows: u64,
    window_hits: u64,
    window_discarded_bytes: u64,
}

impl CatchUp {
    fn mb_per_sec(&self) -> f64 {
        self.bytes as f64 / self.elapsed.as_secs_f64() / 1e6
    }

    /// Disk bytes read per batch byte served from disk.
    fn amplification(&self) -> f64 {
        self.disk_bytes as f64 / self.served_disk_bytes.max(1) as f64
    }
}

/// The engine's read metrics, summed over its cores.
fn read_totals(engine: &Engine) -> ReadMetrics {
    let cores: Vec<Metrics> = engine.metrics().expect("metrics");
    cores.iter().fold(ReadMetrics::default(), |mut sum, m| {
        sum.merge(&m.read);
        sum
    })
}

/// Reads every partition from offset 0 to its end, READERS threads, each
/// reading its share of the partitions one after another.
fn catch_up(engine: &Engine, partitions: u32) -> CatchUp {
    let before = read_totals(engine);
    let started = Instant::now();
    let bytes: u64 = std::thread::scope(|s| {
        let handles: Vec<_> = (0..READERS)
            .map(|t| {
                s.spawn(move || {
                    let mut bytes = 0u64;
                    for p in (t..partitions).step_by(READERS as usize) {
                        let mut offset = 0;
                        loop {
                            let r = engine.read("bench", p, offset, FETCH_BYTES).expect("catch-up read");
                            let served = r.batches.len() - r.headroom_bytes;
                            if served == 0 {
                                break;
                            }
                            bytes += served as u64;
                            offset = r.next_offset;
                        }
                    }
                    bytes
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().expect("reader")).sum()
    });
    let elapsed = started.elapsed();
    let after = read_totals(engine);
    CatchUp {
        bytes,
        elapsed,
        disk_bytes: after.disk_bytes - before.disk_bytes,
        served_disk_bytes: after.served_disk_bytes - before.served_disk_bytes,
        reads_from_disk: after.reads_from_disk - before.reads_from_disk,
        windows: after.ahead_windows - before.ahead_windows,
        window_hits: after.ahead_hits - before.ahead_hits,
        window_discarded_bytes: after.ahead_discarded_bytes - before.ahead_discarded_bytes,
    }
}

fn cfg(full: bool) -> EngineConfig {
    // Small: an 8 MiB tail cache, so that most of 48 MiB is read from disk.
    let write_bufs_per_log = if full { EngineConfig::default().write_bufs_per_log } else { 8 };
    // STROM_BENCH_READ_BUFS: the read buffers per core, to see what their
    // number (the disk reads a core can have in flight) costs.
    let read_bufs_per_core =
        std::env::var("STROM_BENCH_READ_BUFS").ok().and_then(|s| s.parse().ok()).unwrap_or(EngineConfig::default().read_bufs_per_core);
    EngineConfig { cores: 1, logs_on_create: 1, write_bufs_per_log, read_bufs_per_core, ..EngineConfig::default() }
}

fn run_case(dir: &Path, partitions: u32, log_bytes: u64, full: bool) -> (CatchUp, CatchUp) {
    let data = dir.join(format!("p{partitions}"));
    let engine = Engine::open(&data, cfg(full)).expect("open engine");
    engine.create_topic("bench", partitions).expect("create topic");
    let batch_bytes = (RECORDS_PER_BATCH * RECORD_BYTES) as u64;
    let per_producer = log_bytes / batch_bytes / PRODUCERS as u64;
    std::thread::scope(|s| {
        for i in 0..PRODUCERS {
            let e = &engine;
            s.spawn(move || produce(e, i, partitions, per_producer));
        }
    });
    let live = catch_up(&engine, partitions);
    engine.shutdown().expect("shutdown");
    let engine = Engine::open(&data, cfg(full)).expect("reopen");
    let restarted = catch_up(&engine, partitions);
    engine.shutdown().expect("shutdown");
    let _ = std::fs::remove_dir_all(&data);
    (live, restarted)
}

fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    let log_mib: u64 = std::env::var("STROM_BENCH_LOG_MIB").ok().and_then(|s| s.parse().ok()).unwrap_or(if full { 1024 } else { 48 });
    let dir = common::bench_dir("catch-up");
    let file_bytes: u64 = if full { 256 << 20 } else { 16 << 20 };
    let file = ceiling::PrewrittenFile::create(&dir, file_bytes).expect("pre-written ceiling file");
    let read = ceiling::disk_read_sequential(&file, Duration::from_secs_f64(if full { 0.5 } else { 0.1 })).expect("read ceiling");
    drop(file);
    println!(
        "catch-up bench: {log_mib} MiB of log per case, {PRODUCERS} producers of {RECORDS_PER_BATCH} x {RECORD_BYTES} B batches, {READERS} readers of 1 MiB fetches, 1 core, dir {}",
        dir.display()
    );
    println!(
        "disk sequential read (1 MiB O_DIRECT reads): {:.1} MB/s, p50 {} us, p99 {} us",
        read.mb_per_sec(),
        read.latency_us(0.5),
        read.latency_us(0.99)
    );
    println!(
        "{:>10} {:>10} {:>9} {:>8} {:>12} {:>9} {:>11} {:>17} {:>14}",
        "partitions", "when", "MB/s", "x read", "disk/served", "MB", "disk reads", "windows (taken)", "unused MB"
    );
    for partitions in [1u32, 8, 1000] {
        let (live, restarted) = run_case(&dir, partitions, log_mib << 20, full);
        for (when, c) in [("live", &live), ("restarted", &restarted)] {
            assert!(c.bytes > 0, "nothing was read back");
            println!(
                "{:>10} {:>10} {:>9.1} {:>7.2}x {:>12.2} {:>9} {:>11} {:>17} {:>14.1}",
                partitions,
                when,
                c.mb_per_sec(),
                c.mb_per_sec() / read.mb_per_sec(),
                c.amplification(),
                c.bytes / 1_000_000,
                c.reads_from_disk,
                format!("{} ({})", c.windows, c.window_hits),
                c.window_discarded_bytes as f64 / 1e6
            );
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
}
