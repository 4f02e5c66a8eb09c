//! Subscriptions beside long-poll Fetch consumers, in the same run: for 1,
//! 4 and 100 consumers of one partition, each reading every record over
//! its own connection to an embedded server on loopback, either by
//! Subscribe (pushed as records become durable, credit 4 MiB granted back
//! as pushes are taken) or by a loop of Fetches (1 MiB, waiting up to 1 s).
//! 1,000 consumers run as 100 on each of 10 connections (100 subscriptions,
//! or 100 Fetch loops each with one Fetch outstanding). One producer appends batches of 64 records of 1 KiB at a fixed pace
//! (one every `PACE`), each record stamped with its send time; a consumer
//! records, per record, the time from that stamp to its arrival (end to
//! end: produce, fsync, ack path, read, push or fetch reply, decode). Each
//! line gives the per-record latency percentiles over every consumer and
//! the MB/s delivered to all consumers together. The two modes alternate
//! (subscribe, fetch, fetch, subscribe) so that a noisy machine weighs on
//! both alike.
//!
//! `cargo bench --bench subscribe` runs it full size (2,000 batches per
//! case); `cargo test` runs it small (60 batches) so that it cannot rot.
//! Environment: `STROM_BENCH_BATCHES`, `STROM_BENCH_DIR`.
// Only the scratch directory: its batches carry no send time.
#[allow(dead_code)]
mod common;

use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use strom::client::{Client, OwnedResponse};
use strom::config::EngineConfig;
use strom::proto::{Request, SubscribeStart};
use strom::server::{Server, ServerConfig};
use strom::wire::batch::BatchBuilder;

const RECORDS_PER_BATCH: usize = 64;
const RECORD_BYTES: usize = 1024;
/// Time between two batches of the producer: 32 MB/s of records.
const PACE: Duration = Duration::from_millis(2);
const CREDIT_BYTES: u64 = 4 << 20;
const FETCH_BYTES: u32 = 1 << 20;
const FETCH_WAIT: Duration = Duration::from_secs(1);

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Mode {
    Subscribe,
    Fetch,
}

/// One batch whose records all carry `sent_ns` (since the run's epoch) in their first 8 bytes.
fn stamped_batch(sent_ns: u64) -> Vec<u8> {
    let mut value = vec![b's'; RECORD_BYTES];
    value[..8].copy_from_slice(&sent_ns.to_le_bytes());
    let mut b = BatchBuilder::new(1_700_000_000_000);
    for _ in 0..RECORDS_PER_BATCH {
        b.push(1_700_000_000_000, None, Some(&value), &[]);
    }
    b.finish()
}

/// Records the latency of every record of `fetch` from `from` on; returns how many.
fn record(fetch: &strom::client::FetchResult, from: u64, epoch: Instant, hist: &mut Histogram<u64>) -> u64 {
    let now_ns = epoch.elapsed().as_nanos() as u64;
    let mut n = 0;
    for r in fetch.records_from(from) {
        let (_, value) = r.expect("valid record");
        let sent_ns = u64::from_le_bytes(value.expect("a value")[..8].try_into().expect("8 bytes"));
        hist.record(now_ns.saturating_sub(sent_ns) / 1000).expect("in range");
        n += 1;
    }
    n
}

/// One consumer: every record of the run, by `mode`; its latency histogram (µs).
fn consume(addr: std::net::SocketAddr, topic: &str, mode: Mode, want: u64, ready: &Barrier, epoch: Instant) -> Histogram<u64> {
    let mut hist = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).expect("histogram");
    let mut c = Client::connect(addr).expect("connect");
    c.set_timeout(None).expect("timeout");
    let mut got = 0;
    match mode {
        Mode::Subscribe => {
            let mut sub = c.subscribe(topic, 0, SubscribeStart::Earliest, CREDIT_BYTES).expect("subscribe");
            sub.next_push().expect("first push");
            ready.wait();
            while got < want {
                let p = sub.next_push().expect("push").expect("not ended");
                got += record(&p.fetch, p.from_offset, epoch, &mut hist);
            }
        }
        Mode::Fetch => {
            ready.wait();
            let mut offset = 0;
            while got < want {
                let f = c.fetch(topic, 0, offset, FETCH_BYTES, FETCH_WAIT).expect("fetch");
                got += record(&f, offset, epoch, &mut hist);
                offset = f.next_offset;
            }
        }
    }
    hist
}

/// 100 consumers multiplexed on one connection, by `mode`: 100
/// subscriptions, or 100 Fetch loops each with one Fetch outstanding. Its
/// latency histogram (µs).
fn consume_many(addr: std::net::SocketAddr, topic: &str, mode: Mode, want: u64, ready: &Barrier, epoch: Instant) -> Histogram<u64> {
    let mut hist = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).expect("histogram");
    let mut c = Client::connect(addr).expect("connect");
    c.set_timeout(None).expect("timeout");
    c.set_limits(strom::client::ClientLimits { inflight_max: 256, ..c.limits() });
    // Per virtual consumer, by request id: its next offset and records seen.
    let mut at: std::collections::HashMap<u64, (u64, u64)> = std::collections::HashMap::new();
    for _ in 0..100 {
        let req = match mode {
            Mode::Subscribe => Request::Subscribe { topic, partition: 0, credit_bytes: CREDIT_BYTES, start: SubscribeStart::Earliest },
            Mode::Fetch => {
                Request::Fetch { topic, partition: 0, offset: 0, max_bytes: FETCH_BYTES, max_wait_ms: FETCH_WAIT.as_millis() as u32 }
            }
        };
        at.insert(c.send(&req).expect("send"), (0, 0));
    }
    ready.wait();
    let mut done = 0;
    while done < 100 {
        let r = c.recv().expect("reply");
        let (next, got) = at.remove(&r.request_id).expect("a request of this consumer");
        let (fetch, from) = match r.result.expect("served") {
            OwnedResponse::Subscribe(p) => (p.fetch, p.from_offset),
            OwnedResponse::Fetch(f) => (f, next),
            other => panic!("{other:?}"),
        };
        let now_got = got + record(&fetch, from, epoch, &mut hist);
        let next = fetch.next_offset.max(next);
        if now_got >= want {
            // This one has everything: its subscription idles, its Fetches stop.
            done += 1;
            continue;
        }
        let id = match mode {
            Mode::Subscribe => {
                if !fetch.batches.is_empty() {
                    c.send(&Request::Grant { subscription: r.request_id, bytes: fetch.batches.len() as u64 }).expect("grant");
                }
                r.request_id
            }
            Mode::Fetch => {
                let req = Request::Fetch {
                    topic,
                    partition: 0,
                    offset: next,
                    max_bytes: FETCH_BYTES,
                    max_wait_ms: FETCH_WAIT.as_millis() as u32,
                };
                c.send(&req).expect("fetch")
            }
        };
        at.insert(id, (next, now_got));
    }
    hist
}

/// One case: `consumers` of `mode`, `batches` produced at PACE. Returns
/// the merged latency histogram and the MB/s delivered to all consumers.
/// `threads` connections, each one consumer or (`many`) 100 multiplexed.
fn run_case(addr: std::net::SocketAddr, mode: Mode, (threads, many): (usize, bool), batches: u64, case: usize) -> (Histogram<u64>, f64) {
    let topic = format!("sub-{case}");
    let mut admin = Client::connect(addr).expect("connect");
    admin.create_topic(&topic, 1).expect("create");
    let epoch = Instant::now();
    let ready = Arc::new(Barrier::new(threads + 1));
    let want = batches * RECORDS_PER_BATCH as u64;
    let consumers = if many { threads * 100 } else { threads };
    let handles: Vec<_> = (0..threads)
        .map(|_| {
            let (topic, ready) = (topic.clone(), ready.clone());
            std::thread::spawn(move || {
                if many { consume_many(addr, &topic, mode, want, &ready, epoch) } else { consume(addr, &topic, mode, want, &ready, epoch) }
            })
        })
        .collect();
    ready.wait();
    let start = Instant::now();
    for i in 0..batches {
        let due = start + PACE * i as u32;
        if let Some(wait) = due.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
        let batch = stamped_batch(epoch.elapsed().as_nanos() as u64);
        let req = Request::Produce { topic: &topic, partition: 0, batches: &batch };
        admin.send(&req).expect("produce");
        // At most a few produces outstanding: the pace, not the acks, sets the rate.
        while admin.inflight() >= 4 {
            assert!(matches!(admin.recv().expect("ack").result, Ok(OwnedResponse::Produce(_))));
        }
    }
    while admin.inflight() > 0 {
        assert!(matches!(admin.recv().expect("ack").result, Ok(OwnedResponse::Produce(_))));
    }
    let mut merged = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).expect("histogram");
    for h in handles {
        merged.add(h.join().expect("consumer")).expect("same bounds");
    }
    let secs = start.elapsed().as_secs_f64();
    let bytes = (want * RECORD_BYTES as u64 * consumers as u64) as f64;
    (merged, bytes / secs / 1e6)
}

fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    let batches: u64 = std::env::var("STROM_BENCH_BATCHES").ok().and_then(|s| s.parse().ok()).unwrap_or(if full { 2000 } else { 60 });
    let dir = common::bench_dir("subscribe");
    let cfg = EngineConfig { cores: 2, logs_on_create: 2, pin_cores: false, ..EngineConfig::default() };
    let scfg = ServerConfig { listen: "127.0.0.1:0".parse().expect("addr"), ..ServerConfig::default() };
    let server = Server::start(&dir, cfg, scfg).expect("server");
    let addr = server.local_addr();
    println!(
        "subscribe bench: {batches} batches of {RECORDS_PER_BATCH} x {RECORD_BYTES} B, one every {} ms, 1 partition, 2 cores, fsync always, dir {}",
        PACE.as_millis(),
        dir.display()
    );
    println!("{:>10} {:>9} {:>9} {:>9} {:>9} {:>9} {:>10}", "mode", "consumers", "p50_us", "p99_us", "p999_us", "max_us", "MB/s");
    let mut case = 0;
    // 1, 4, 100 consumers on their own connections; 1,000 as 100 on each of 10.
    for (threads, many) in [(1, false), (4, false), (100, false), (10, true)] {
        let consumers = if many { threads * 100 } else { threads };
        for mode in [Mode::Subscribe, Mode::Fetch, Mode::Fetch, Mode::Subscribe] {
            case += 1;
            let (h, mb_s) = run_case(addr, mode, (threads, many), batches, case);
            let q = |p: f64| h.value_at_quantile(p);
            println!(
                "{:>10} {consumers:>9} {:>9} {:>9} {:>9} {:>9} {mb_s:>10.1}",
                format!("{mode:?}").to_lowercase(),
                q(0.5),
                q(0.99),
                q(0.999),
                h.max()
            );
        }
    }
    server.shutdown().expect("shutdown");
}
