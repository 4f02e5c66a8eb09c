//! Range queries on one large partition with named indices: the latency of
//! a query's bounds (first, last and count, by offset and by index value)
//! and of reading a range's first record, cold (the first query after a
//! restart: what the checkpoint and the recovery scan left) and warm.
//!
//! One partition of a topic with indices `ts` and `seq` is filled with
//! 1 KiB records, 64 per batch, `ts` rising by 1 per 10 records and `seq`
//! by 1 per record. Then, for each case, QUERIES_PER_CASE queries at
//! spread positions are timed; each line prints p50 and max in µs.
//!
//! `cargo bench --bench query` runs it full size (`STROM_BENCH_LOG_MIB`,
//! default 10,240: the 10 GB partition); `cargo test` runs it small
//! (32 MiB) so that it cannot rot, and checks every answer.
// This bench builds its own indexed batches: only the scratch directory is shared.
#[allow(dead_code)]
mod common;

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use strom::catalog::TopicRetention;
use strom::config::EngineConfig;
use strom::core::AppendAck;
use strom::core::query::{QueryRef, QuerySpec};
use strom::engine::{Engine, Pending};
use strom::wire::batch::BatchBuilder;

const RECORD_BYTES: usize = 1024;
const RECORDS_PER_BATCH: u64 = 64;
const INFLIGHT: usize = 32;
const QUERIES_PER_CASE: u64 = 50;
const RECORDS_PER_TS: u64 = 10;

fn batch(first_seq: u64) -> Vec<u8> {
    let mut b = BatchBuilder::new(1_700_000_000_000);
    let value = vec![b'q'; RECORD_BYTES];
    for i in 0..RECORDS_PER_BATCH {
        let seq = first_seq + i;
        let (ts, s) = (((seq / RECORDS_PER_TS) as i64).to_le_bytes(), (seq as i64).to_le_bytes());
        b.push(1_700_000_000_000, None, Some(&value), &[(b"ts", Some(&ts)), (b"seq", Some(&s))]);
    }
    b.finish()
}

fn fill(engine: &Engine, records: u64) {
    let mut pending: VecDeque<Pending<AppendAck>> = VecDeque::new();
    let mut seq = 0;
    while seq < records {
        if pending.len() == INFLIGHT {
            pending.pop_front().expect("pending").wait().expect("durable append");
        }
        pending.push_back(engine.append_async("q", 0, batch(seq)).expect("append"));
        seq += RECORDS_PER_BATCH;
    }
    pending.into_iter().for_each(|p| {
        p.wait().expect("durable append");
    });
}

fn spec(from: QueryRef, to: QueryRef) -> QuerySpec {
    QuerySpec { from, to, wait_ns: 0 }
}

fn ix(name: &str, value: u64) -> QueryRef {
    QueryRef::Index { name: name.into(), value: value as i64 }
}

/// Times QUERIES_PER_CASE queries made by `make(i)` at spread positions and
/// checks each answer's first offset against `expect(i)`; returns p50 and max.
fn time_case(
    engine: &Engine,
    records: u64,
    make: &dyn Fn(u64) -> QuerySpec,
    expect: &dyn Fn(u64) -> u64,
    read_first: bool,
) -> (Duration, Duration) {
    let mut took = Vec::new();
    for k in 0..QUERIES_PER_CASE {
        let at = (records - 1) * k / (QUERIES_PER_CASE - 1).max(1);
        let started = Instant::now();
        let b = engine.query("q", 0, make(at)).expect("query");
        if read_first && b.end > b.from {
            let r = engine.read("q", 0, b.from, 1).expect("read the first record");
            assert!(!r.batches.is_empty());
        }
        took.push(started.elapsed());
        assert_eq!(b.from, expect(at), "query at {at}");
    }
    took.sort();
    (took[took.len() / 2], *took.last().expect("a query"))
}

/// A case: its name, the query at a position, the first offset it must
/// answer, and whether the range's first record is read too.
type Case = (&'static str, Box<dyn Fn(u64) -> QuerySpec>, Box<dyn Fn(u64) -> u64>, bool);

fn run_cases(engine: &Engine, records: u64, label: &str) {
    let ts_of = |seq: u64| seq / RECORDS_PER_TS;
    let cases: Vec<Case> = vec![
        ("count by offset", Box::new(|at| spec(QueryRef::Offset(at as i64), QueryRef::Offset(-1))), Box::new(|at| at), false),
        ("first by offset + read", Box::new(|at| spec(QueryRef::Offset(at as i64), QueryRef::Offset(-1))), Box::new(|at| at), true),
        ("count by seq", Box::new(move |at| spec(ix("seq", at), ix("seq", records))), Box::new(|at| at), false),
        ("first by seq + read", Box::new(|at| spec(ix("seq", at), QueryRef::Offset(-1))), Box::new(|at| at), true),
        (
            "last by ts (range ts=T..T+100)",
            Box::new(move |at| spec(ix("ts", ts_of(at)), ix("ts", ts_of(at) + 100))),
            Box::new(move |at| ts_of(at) * RECORDS_PER_TS),
            false,
        ),
        (
            "first by ts + read",
            Box::new(move |at| spec(ix("ts", ts_of(at)), QueryRef::Offset(-1))),
            Box::new(move |at| ts_of(at) * RECORDS_PER_TS),
            true,
        ),
    ];
    for (name, make, expect, read_first) in &cases {
        let (p50, max) = time_case(engine, records, make.as_ref(), expect.as_ref(), *read_first);
        println!("{label:<5} {name:<32} p50 {:>8.1} us  max {:>9.1} us", p50.as_secs_f64() * 1e6, max.as_secs_f64() * 1e6);
    }
}

fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    let log_mib: u64 = std::env::var("STROM_BENCH_LOG_MIB").ok().and_then(|v| v.parse().ok()).unwrap_or(if full { 10_240 } else { 32 });
    let records = (log_mib << 20) / (RECORD_BYTES as u64 + 16) / RECORDS_PER_BATCH * RECORDS_PER_BATCH;
    let dir = common::bench_dir("query");
    let cfg = EngineConfig { cores: 1, logs_on_create: 1, pin_cores: false, ..EngineConfig::default() };
    let engine = Engine::open(&dir, cfg.clone()).expect("open");
    engine.create_topic_indexed("q", 1, TopicRetention::default(), &["ts".to_string(), "seq".to_string()]).expect("topic");
    let started = Instant::now();
    fill(&engine, records);
    let secs = started.elapsed().as_secs_f64();
    println!("filled {records} records ({log_mib} MiB of log) in {secs:.1} s");
    run_cases(&engine, records, "warm");
    engine.shutdown().expect("shutdown");
    // Cold: the first queries after a restart, on what the checkpoint and
    // the recovery scan left (each case then warms what it touches).
    let engine = Engine::open(&dir, cfg).expect("reopen");
    run_cases(&engine, records, "cold");
    engine.shutdown().expect("shutdown");
    if std::env::var_os("STROM_BENCH_KEEP").is_none() {
        let _ = std::fs::remove_dir_all(&dir);
    }
}
