//! loadgen: drives a Strom engine and reports what it measured beside the
//! machine's own ceiling.
//!
//! This first version drives the embedded engine only (`--embedded`):
//! producers append pipelined RecordBatches durably, then a consumer reads
//! every partition back from offset 0 and verifies every record. The full
//! load generator (network targets, open loop, end-to-end latency, JSON and
//! HDR output) is its own issue.
use std::collections::VecDeque;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use clap::Parser;
use hdrhistogram::Histogram;
use strom::config::{EngineConfig, FsyncPolicy};
use strom::engine::Engine;
use strom::wire::batch::{self, BatchBuilder};

#[derive(Parser, Debug)]
#[command(about = "Strom's load generator")]
struct Args {
    /// Run an in-process broker on a temporary data directory.
    #[arg(long)]
    embedded: bool,
    #[arg(long, default_value_t = 4)]
    producers: usize,
    #[arg(long, default_value_t = 4)]
    partitions: u32,
    #[arg(long, default_value_t = 1024)]
    msg_size: usize,
    #[arg(long, default_value_t = 64 << 10)]
    batch_bytes: usize,
    /// Batches in flight per producer.
    #[arg(long, default_value_t = 16)]
    inflight: usize,
    /// Seconds of producing (then every record is read back and verified).
    #[arg(long, default_value_t = 8.0)]
    duration: f64,
    /// Core threads of the embedded broker (default: all online CPUs).
    #[arg(long)]
    cores: Option<usize>,
    #[arg(long, default_value = "always")]
    fsync: FsyncPolicy,
    /// Data directory (default: a fresh one under the system temp dir, or
    /// ./target when that is tmpfs), removed afterwards unless --keep.
    #[arg(long)]
    data_dir: Option<PathBuf>,
    #[arg(long)]
    keep: bool,
}

fn main() {
    let args = Args::parse();
    if !args.embedded {
        eprintln!("loadgen: only --embedded is supported so far (the network target comes with `strom serve`)");
        std::process::exit(2);
    }
    if let Err(e) = run(&args) {
        eprintln!("loadgen: {e}");
        std::process::exit(1);
    }
}

fn data_dir(args: &Args) -> PathBuf {
    if let Some(d) = &args.data_dir {
        return d.clone();
    }
    let tmp = std::env::temp_dir();
    let base = match strom::platform::fs_type_name(&tmp) {
        Ok(name) if name != "tmpfs" => tmp,
        _ => PathBuf::from("target"),
    };
    base.join(format!("strom-loadgen-{}", std::process::id()))
}

fn run(args: &Args) -> Result<(), Box<dyn std::error::Error>> {
    let dir = data_dir(args);
    let mut cfg = EngineConfig { fsync: args.fsync, ..EngineConfig::default() };
    if let Some(c) = args.cores {
        cfg.cores = c;
        cfg.logs_on_create = c as u32;
    }
    let records_per_batch = (args.batch_bytes / (args.msg_size + 16)).max(1);
    println!(
        "loadgen --embedded: {} producers x {} in flight, {} partitions, {} B records, {} records/batch, fsync={}, {} cores, {} s, data dir {}",
        args.producers,
        args.inflight,
        args.partitions,
        args.msg_size,
        records_per_batch,
        cfg.fsync,
        cfg.cores,
        args.duration,
        dir.display()
    );
    let engine = Engine::open(&dir, cfg.clone())?;
    for r in engine.recovery_reports() {
        println!("recovered log {}: scanned {} bytes, cut {} in {} us", r.log, r.bytes_scanned, r.bytes_cut, r.elapsed_us);
    }
    // A kept data directory may hold the topic from an earlier run.
    match engine.topics().iter().find(|t| t.name == "loadgen") {
        Some(t) if t.partitions == args.partitions => {}
        Some(t) => return Err(format!("topic loadgen exists with {} partitions, not {}", t.partitions, args.partitions).into()),
        None => engine.create_topic("loadgen", args.partitions)?,
    }
    let started = Instant::now();
    let deadline = started + Duration::from_secs_f64(args.duration);
    let results: Vec<Result<Produced, String>> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..args.producers)
            .map(|p| {
                s.spawn({
                    let e = &engine;
                    move || produce(e, args, p, records_per_batch, deadline)
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().expect("producer thread")).collect()
    });
    let elapsed = started.elapsed();
    let mut ack_us = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)?;
    let mut records = 0;
    for r in results {
        let r = r?;
        records += r.records;
        ack_us.add(&r.ack_us)?;
    }
    let stats = engine.stats()?;
    let read_started = Instant::now();
    let verified = verify(&engine, args)?;
    let read_elapsed = read_started.elapsed();
    engine.shutdown()?;
    if !args.keep {
        std::fs::remove_dir_all(&dir)?;
    }
    report(args, records, elapsed, &ack_us, &stats, verified, read_elapsed);
    if verified != records {
        return Err(format!("verification failed: {records} records acknowledged, {verified} read back intact").into());
    }
    Ok(())
}

struct Produced {
    records: u64,
    ack_us: Histogram<u64>,
}

/// Each record's value starts with (producer, sequence) so the reader can
/// verify it; the rest is a pattern derived from them.
fn value(producer: usize, seq: u64, size: usize) -> Vec<u8> {
    let mut v = Vec::with_capacity(size.max(12));
    v.extend_from_slice(&(producer as u32).to_be_bytes());
    v.extend_from_slice(&seq.to_be_bytes());
    let fill = (seq as u8).wrapping_mul(31).wrapping_add(producer as u8);
    v.resize(size.max(12), fill);
    v
}

fn check_value(v: &[u8]) -> bool {
    if v.len() < 12 {
        return false;
    }
    let producer = u32::from_be_bytes(v[0..4].try_into().expect("4 bytes")) as usize;
    let seq = u64::from_be_bytes(v[4..12].try_into().expect("8 bytes"));
    value(producer, seq, v.len()) == v
}

fn produce(engine: &Engine, args: &Args, producer: usize, per_batch: usize, deadline: Instant) -> Result<Produced, String> {
    let mut ack_us = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).map_err(|e| e.to_string())?;
    let mut pending = VecDeque::new();
    let (mut seq, mut records, mut batches) = (0u64, 0u64, 0u64);
    loop {
        if Instant::now() < deadline && pending.len() < args.inflight {
            let mut b = BatchBuilder::new(now_ms()).producer(producer as i64, 0, seq as i32);
            for _ in 0..per_batch {
                b.push(now_ms(), None, Some(&value(producer, seq, args.msg_size)), &[]);
                seq += 1;
            }
            let partition = (producer as u64 + batches) as u32 % args.partitions;
            batches += 1;
            let p = engine.append_async("loadgen", partition, b.finish()).map_err(|e| e.to_string())?;
            pending.push_back((Instant::now(), p));
            continue;
        }
        let Some((sent, p)) = pending.pop_front() else { break };
        let ack = p.wait().map_err(|e| format!("append failed: {e}"))?;
        records += ack.last_offset - ack.base_offset + 1;
        ack_us.saturating_record(sent.elapsed().as_micros().max(1) as u64);
    }
    Ok(Produced { records, ack_us })
}

/// Reads every partition from offset 0 (one thread per partition) and
/// counts intact records: at the right offset, with a value that matches
/// the producer and sequence it carries.
fn verify(engine: &Engine, args: &Args) -> Result<u64, Box<dyn std::error::Error>> {
    let counts: Vec<Result<u64, String>> = std::thread::scope(|s| {
        let handles: Vec<_> =
            (0..args.partitions).map(|p| s.spawn(move || verify_partition(engine, p).map_err(|e| e.to_string()))).collect();
        handles.into_iter().map(|h| h.join().expect("verify thread")).collect()
    });
    let mut intact = 0;
    for c in counts {
        intact += c?;
    }
    Ok(intact)
}

fn verify_partition(engine: &Engine, partition: u32) -> Result<u64, Box<dyn std::error::Error>> {
    let (mut intact, mut offset) = (0, 0);
    loop {
        let r = engine.read("loadgen", partition, offset, 1 << 20)?;
        if r.batches.is_empty() {
            return Ok(intact);
        }
        let mut at = 0;
        while at < r.batches.len() {
            let len = batch::parse_header(&r.batches[at..])?.batch_bytes;
            let one = &r.batches[at..at + len];
            let info = batch::validate(one, usize::MAX)?;
            for rec in batch::records(one) {
                let rec = rec?;
                if info.base_offset as u64 + rec.offset_delta as u64 == offset && rec.value.is_some_and(check_value) {
                    intact += 1;
                }
                offset += 1;
            }
            at += len;
        }
    }
}

fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64)
}

fn report(
    args: &Args,
    records: u64,
    elapsed: Duration,
    ack_us: &Histogram<u64>,
    stats: &[strom::core::CoreStats],
    verified: u64,
    read_elapsed: Duration,
) {
    let secs = elapsed.as_secs_f64();
    let value_mb = records as f64 * args.msg_size as f64 / 1e6;
    let (logged, commits, fsyncs) = stats.iter().fold((0, 0, 0), |(b, c, f), s| (b + s.bytes_logged, c + s.commits, f + s.fsyncs));
    println!();
    println!("produce   {records:>12} records  {:>12.0} records/s  {:>8.1} MB/s (record values)", records as f64 / secs, value_mb / secs);
    println!(
        "ack       p50 {} us  p90 {} us  p99 {} us  p99.9 {} us  max {} us  (pooled over {} batches)",
        ack_us.value_at_quantile(0.5),
        ack_us.value_at_quantile(0.9),
        ack_us.value_at_quantile(0.99),
        ack_us.value_at_quantile(0.999),
        ack_us.max(),
        ack_us.len()
    );
    println!(
        "log       {commits} writes, {fsyncs} fdatasyncs, {:.1} KiB per write on average",
        logged as f64 / commits.max(1) as f64 / 1024.0
    );
    println!(
        "verify    {verified} of {records} records read back intact in {:.2} s ({:.0} records/s)",
        read_elapsed.as_secs_f64(),
        verified as f64 / read_elapsed.as_secs_f64()
    );
}
