//! Durable append throughput and acknowledgement latency of the embedded
//! engine, for 1, 100 and 10,000 partitions, beside the machine's own
//! ceilings measured in the same run (`strom::ceiling`): the disk's best
//! correct group commit (1 MiB O_DIRECT write + fdatasync over pre-written
//! space, THE ceiling: column `best`), a raw write + fdatasync loop at the
//! write size the engine actually issued (column `loop`), and a sequential
//! 1 MiB O_DIRECT read for the catch-up read.
//!
//! `cargo bench --bench append` runs it full size (about 5 s per case);
//! `cargo test` runs it small (a fraction of a second per case) so that it
//! cannot rot. Environment: `STROM_BENCH_SECS`, `STROM_BENCH_DIR`.
mod common;

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use strom::ceiling;
use strom::config::{EngineConfig, FsyncPolicy};
use strom::engine::Engine;

const PRODUCERS: usize = 4;
const INFLIGHT_PER_PRODUCER: usize = 16;
const RECORD_BYTES: usize = 1024;
const RECORDS_PER_BATCH: usize = 64;

struct CaseResult {
    partitions: u32,
    records: u64,
    value_bytes: u64,
    elapsed: Duration,
    ack_us: Histogram<u64>,
    avg_write_bytes: f64,
    commits: u64,
    fsyncs: u64,
    /// Catch-up read of everything just written, after a restart (so from
    /// disk by READ_FIXED, not the tail cache): bytes and seconds.
    catch_up_bytes: u64,
    catch_up: Duration,
}

/// One producer: keeps INFLIGHT_PER_PRODUCER appends outstanding, spread
/// round-robin over its share of the partitions, until `deadline`.
fn produce(engine: &Engine, producer: usize, partitions: u32, deadline: Instant) -> (u64, Histogram<u64>) {
    let batch = common::make_batch(producer, RECORDS_PER_BATCH, RECORD_BYTES);
    let mut hist = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).expect("histogram");
    let mut pending = VecDeque::new();
    let mut batches = 0u64;
    let mut next = producer as u32 % partitions;
    loop {
        let sending = Instant::now() < deadline;
        if sending && pending.len() < INFLIGHT_PER_PRODUCER {
            let p = engine.append_async("bench", next, batch.clone()).expect("append");
            pending.push_back((Instant::now(), p));
            next = (next + PRODUCERS as u32) % partitions.max(1);
            if partitions < PRODUCERS as u32 {
                next = producer as u32 % partitions;
            }
            continue;
        }
        let Some((sent, p)) = pending.pop_front() else { break };
        p.wait().expect("durable append");
        hist.saturating_record(sent.elapsed().as_micros().max(1) as u64);
        batches += 1;
    }
    (batches, hist)
}

fn run_case(dir: &std::path::Path, partitions: u32, secs: f64) -> CaseResult {
    let cfg = EngineConfig { cores: 1, logs_on_create: 1, fsync: FsyncPolicy::Always, ..EngineConfig::default() };
    let data = dir.join(format!("p{partitions}"));
    let engine = Engine::open(&data, cfg).expect("open engine");
    engine.create_topic("bench", partitions).expect("create topic");
    let started = Instant::now();
    let deadline = started + Duration::from_secs_f64(secs);
    let results: Vec<(u64, Histogram<u64>)> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..PRODUCERS)
            .map(|i| {
                s.spawn({
                    let e = &engine;
                    move || produce(e, i, partitions, deadline)
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().expect("producer")).collect()
    });
    let elapsed = started.elapsed();
    let metrics = engine.metrics().expect("metrics");
    engine.shutdown().expect("shutdown");
    let (catch_up_bytes, catch_up) = catch_up_read(&data, partitions, cfg_for_read());
    let _ = std::fs::remove_dir_all(&data);
    // Latencies are pooled across producers, never averaged per producer.
    let mut ack_us = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).expect("histogram");
    let mut batches = 0;
    for (n, h) in &results {
        batches += n;
        ack_us.add(h).expect("same bounds");
    }
    let (bytes_logged, commits, fsyncs) =
        metrics.iter().fold((0, 0, 0), |(b, c, f), m| (b + m.log.bytes_written, c + m.log.writes, f + m.log.fsyncs));
    CaseResult {
        partitions,
        records: batches * RECORDS_PER_BATCH as u64,
        value_bytes: batches * (RECORDS_PER_BATCH * RECORD_BYTES) as u64,
        elapsed,
        ack_us,
        avg_write_bytes: bytes_logged as f64 / commits.max(1) as f64,
        commits,
        fsyncs,
        catch_up_bytes,
        catch_up,
    }
}

fn cfg_for_read() -> EngineConfig {
    EngineConfig { cores: 1, logs_on_create: 1, ..EngineConfig::default() }
}

/// Reopens `data` and reads every partition from offset 0 to its end, one
/// reader thread per producer, 1 MiB per read. Returns batch bytes and time.
fn catch_up_read(data: &std::path::Path, partitions: u32, cfg: EngineConfig) -> (u64, Duration) {
    let engine = Engine::open(data, cfg).expect("reopen");
    let started = Instant::now();
    let bytes: u64 = std::thread::scope(|s| {
        let handles: Vec<_> = (0..PRODUCERS as u32)
            .map(|t| {
                let e = &engine;
                s.spawn(move || {
                    let mut bytes = 0u64;
                    for p in (t..partitions).step_by(PRODUCERS) {
                        let mut offset = 0;
                        loop {
                            let r = e.read("bench", p, offset, 1 << 20).expect("catch-up read");
                            if r.batches.is_empty() {
                                break;
                            }
                            bytes += r.batches.len() as u64;
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
    if std::env::var_os("STROM_BENCH_VERBOSE").is_some() {
        for (core, m) in engine.metrics().expect("metrics").iter().enumerate() {
            println!("catch-up core {core} metrics: {m}");
        }
    }
    engine.shutdown().expect("shutdown");
    (bytes, elapsed)
}

fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    let secs: f64 = std::env::var("STROM_BENCH_SECS").ok().and_then(|s| s.parse().ok()).unwrap_or(if full { 5.0 } else { 0.3 });
    let dir = common::bench_dir("append");
    // Bounded cost: a 256 MiB file (16 MiB when run small), about 1 s of
    // overwrites and 0.5 s of reads at full size.
    let file_bytes: u64 = if full { 256 << 20 } else { 16 << 20 };
    let file = ceiling::PrewrittenFile::create(&dir, file_bytes).expect("pre-written ceiling file");
    let best = ceiling::disk_best_group_commit(&file, Duration::from_secs_f64(secs.min(1.0))).expect("best group commit");
    let read = ceiling::disk_read_sequential(&file, Duration::from_secs_f64(secs.min(0.5))).expect("read ceiling");
    drop(file);
    println!(
        "append bench: {PRODUCERS} producers x {INFLIGHT_PER_PRODUCER} in flight, {RECORDS_PER_BATCH} x {RECORD_BYTES} B records per batch, fsync=always, 1 core, {secs} s per case, dir {}",
        dir.display()
    );
    println!(
        "disk best group commit (1 MiB O_DIRECT write + fdatasync over a pre-written {} MiB file): {:.1} MB/s, p50 {} us, p99 {} us ({} writes)",
        file_bytes >> 20,
        best.mb_per_sec(),
        best.latency_us(0.5),
        best.latency_us(0.99),
        best.writes
    );
    println!(
        "disk sequential read (1 MiB O_DIRECT reads): {:.1} MB/s, p50 {} us, p99 {} us ({} reads)",
        read.mb_per_sec(),
        read.latency_us(0.5),
        read.latency_us(0.99),
        read.reads
    );
    println!(
        "{:>10} {:>12} {:>9} {:>10} {:>9} {:>9} {:>9} {:>9} {:>9} {:>8} {:>8}",
        "partitions", "records/s", "MB/s", "write KiB", "commits", "p50 us", "p99 us", "p999 us", "max us", "best", "loop"
    );
    for partitions in [1u32, 100, 10_000] {
        let r = run_case(&dir, partitions, secs);
        assert!(r.records > 0, "no append was acknowledged");
        assert!(r.fsyncs > 0, "fsync=always acknowledged without any fdatasync");
        // The loop: the same filesystem, the write size the engine used.
        let c = ceiling::disk_write_fsync(&dir, r.avg_write_bytes as usize, Duration::from_secs_f64(secs.min(3.0)), 1 << 30)
            .expect("disk ceiling");
        let mb_s = r.value_bytes as f64 / r.elapsed.as_secs_f64() / 1e6;
        // Strom's log bytes include frame headers and padding; compare value bytes, the honest figure.
        println!(
            "{:>10} {:>12.0} {:>9.1} {:>10.1} {:>9} {:>9} {:>9} {:>9} {:>9} {:>7.2}x {:>7.2}x",
            r.partitions,
            r.records as f64 / r.elapsed.as_secs_f64(),
            mb_s,
            r.avg_write_bytes / 1024.0,
            r.commits,
            r.ack_us.value_at_quantile(0.5),
            r.ack_us.value_at_quantile(0.99),
            r.ack_us.value_at_quantile(0.999),
            r.ack_us.max(),
            mb_s / best.mb_per_sec(),
            mb_s / c.mb_per_sec(),
        );
        println!(
            "{:>10} loop: O_DIRECT write+fdatasync at {} KiB into fresh space: {:.1} MB/s, p50 {} us, p99 {} us ({} writes)",
            "",
            c.write_bytes / 1024,
            c.mb_per_sec(),
            c.latency_us(0.5),
            c.latency_us(0.99),
            c.writes
        );
        println!(
            "{:>10} catch-up read after restart (READ_FIXED, {} readers): {:.1} MB/s of batches, {:.2}x the sequential read ({} MB in {:.2} s)",
            "",
            PRODUCERS,
            r.catch_up_bytes as f64 / r.catch_up.as_secs_f64() / 1e6,
            r.catch_up_bytes as f64 / r.catch_up.as_secs_f64() / 1e6 / read.mb_per_sec(),
            r.catch_up_bytes / 1_000_000,
            r.catch_up.as_secs_f64()
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}
