//! In-process mode (`--embedded` without `--net`): producers append to the
//! engine directly, then every partition is read back and verified.
use std::collections::VecDeque;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use strom::engine::Engine;
use strom::wire::batch::BatchBuilder;

use crate::records::{check_value, now_ms, records_per_batch, value, value_bytes};
use crate::verify::walk_batches;
use crate::{Args, new_latency_histogram, report};

pub fn run(args: &Args) -> Result<(), Box<dyn std::error::Error>> {
    let dir = crate::data_dir(args);
    let cfg = crate::engine_config(args);
    let per_batch = records_per_batch(args.batch_bytes, args.msg_size);
    println!(
        "loadgen --embedded: {} producers x {} in flight, {} partitions, {} B records, {} records/batch, fsync={}, {} cores, {} s, data dir {}",
        args.producers,
        args.inflight,
        args.partitions,
        args.msg_size,
        per_batch,
        cfg.fsync,
        cfg.cores,
        args.duration,
        dir.display()
    );
    let engine = Engine::open(&dir, cfg)?;
    crate::print_recovery(engine.recovery_reports());
    // A kept data directory may hold the topic from an earlier run.
    match engine.topics().iter().find(|t| t.name == args.topic) {
        Some(t) if t.partitions == args.partitions => {}
        Some(t) => return Err(format!("topic {} exists with {} partitions, not {}", args.topic, t.partitions, args.partitions).into()),
        None => engine.create_topic(&args.topic, args.partitions)?,
    }
    let started = Instant::now();
    let deadline = started + Duration::from_secs_f64(args.duration);
    let results: Vec<Result<Produced, String>> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..args.producers)
            .map(|p| {
                s.spawn({
                    let e = &engine;
                    move || produce(e, args, p, per_batch, deadline)
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().expect("producer thread")).collect()
    });
    let elapsed = started.elapsed();
    let mut ack_us = new_latency_histogram();
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
    println!();
    report::produce(records, records * value_bytes(args.msg_size) as u64, elapsed);
    report::ack(&ack_us, "batches");
    report::log(&stats);
    println!(
        "verify    {verified} of {records} records read back intact in {:.2} s ({:.0} records/s)",
        read_elapsed.as_secs_f64(),
        verified as f64 / read_elapsed.as_secs_f64()
    );
    if verified != records {
        return Err(format!("verification failed: {records} records acknowledged, {verified} read back intact").into());
    }
    Ok(())
}

struct Produced {
    records: u64,
    ack_us: Histogram<u64>,
}

fn produce(engine: &Engine, args: &Args, producer: usize, per_batch: usize, deadline: Instant) -> Result<Produced, String> {
    let mut ack_us = new_latency_histogram();
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
            let p = engine.append_async(&args.topic, partition, b.finish()).map_err(|e| e.to_string())?;
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
        let handles: Vec<_> = (0..args.partitions).map(|p| s.spawn(move || verify_partition(engine, &args.topic, p))).collect();
        handles.into_iter().map(|h| h.join().expect("verify thread")).collect()
    });
    let mut intact = 0;
    for c in counts {
        intact += c?;
    }
    Ok(intact)
}

fn verify_partition(engine: &Engine, topic: &str, partition: u32) -> Result<u64, String> {
    let (mut intact, mut offset) = (0, 0);
    loop {
        let r = engine.read(topic, partition, offset, 1 << 20).map_err(|e| e.to_string())?;
        if r.batches.is_empty() {
            return Ok(intact);
        }
        let expected_from = offset;
        let mut expected = expected_from;
        offset = walk_batches(&r.batches, expected_from, |at, v| {
            if at == expected && v.and_then(check_value).is_some() {
                intact += 1;
            }
            expected = at + 1;
        })
        .map_err(|e| format!("partition {partition}: {e}"))?;
        if offset == expected_from {
            return Err(format!("partition {partition}: a read at offset {offset} returned no record at or past it"));
        }
    }
}
