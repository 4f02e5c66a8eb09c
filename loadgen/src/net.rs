//! Network mode: producers and consumers drive a server over TCP, either an
//! in-process one on loopback (`--embedded --net`) or a running `strom
//! serve` (`--addr`); then every acknowledged record is read back with the
//! client and checked.
use std::collections::BTreeMap;
use std::net::{SocketAddr, ToSocketAddrs};
use std::sync::Barrier;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use strom::client::{Client, ClientError};
use strom::proto::ErrorCode;
use strom::server::{Server, ServerConfig};

use crate::consumer::{self, Consumed};
use crate::producer::{self, Produced};
use crate::records::{BATCHES_PER_PRODUCER, now_ms, producer_batch, records_per_batch, value_bytes};
use crate::verify::{Ack, PartitionCheck, Tally, walk_batches};
use crate::{Args, new_latency_histogram, report};

/// A server that does not accept within this long is reported as down.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// A server that leaves a request unanswered this long is reported as hung,
/// not waited on forever. Well above the consumers' long poll.
const IO_TIMEOUT: Duration = Duration::from_secs(30);
/// The soft limit on one read-back Fetch.
const VERIFY_FETCH_BYTES: u32 = 1 << 20;

const _: () = assert!(consumer::FETCH_WAIT.as_millis() < IO_TIMEOUT.as_millis());

/// Where one thread connects, and the partitions it works on.
#[derive(Debug, Clone)]
pub struct Route {
    pub addr: SocketAddr,
    pub partitions: Vec<u32>,
}

pub fn connect(addr: SocketAddr) -> Result<Client, String> {
    let mut client = Client::connect_timeout(addr, CONNECT_TIMEOUT).map_err(|e| format!("connect {addr}: {e}"))?;
    client.set_timeout(Some(IO_TIMEOUT)).map_err(|e| format!("connect {addr}: {e}"))?;
    Ok(client)
}

pub fn run(args: &Args) -> Result<(), Box<dyn std::error::Error>> {
    let Some(addr) = &args.addr else { return run_embedded(args) };
    let main_addr = addr
        .to_socket_addrs()
        .map_err(|e| format!("--addr {addr}: {e}"))?
        .next()
        .ok_or_else(|| format!("--addr {addr} resolves to nothing"))?;
    println!("loadgen {}: {}, server {main_addr} (its own cores and fsync policy)", mode(args), shape(args));
    let outcome = drive(args, main_addr)?;
    outcome.report(args);
    outcome.check()
}

/// `--embedded --net`: an in-process server on loopback over a fresh data
/// directory, so that one command measures the whole path.
fn run_embedded(args: &Args) -> Result<(), Box<dyn std::error::Error>> {
    let dir = crate::data_dir(args);
    let cfg = crate::engine_config(args);
    println!("loadgen {}: {}, fsync={}, {} cores, data dir {}", mode(args), shape(args), cfg.fsync, cfg.cores, dir.display());
    let server_cfg = ServerConfig { listen: SocketAddr::from(([127, 0, 0, 1], 0)), ..ServerConfig::default() };
    let server = Server::start(&dir, cfg, server_cfg)?;
    crate::print_recovery(server.engine().recovery_reports());
    println!("server    listening on {}, cores at {}", server.local_addr(), server.core_addrs().join(" "));
    let outcome = drive(args, server.local_addr());
    let stats = server.engine().stats();
    let net = server.net_stats();
    server.shutdown()?;
    if !args.keep {
        std::fs::remove_dir_all(&dir)?;
    }
    let outcome = outcome?;
    outcome.report(args);
    report::log(&stats?);
    let (requests, forwarded) = net.iter().fold((0, 0), |(r, f), n| (r + n.requests, f + n.forwarded));
    // Read-back requests are included: they are spread like the producers'.
    println!(
        "server    {requests} requests (produce, fetch and read-back), {forwarded} forwarded to another core ({:.1}%)",
        100.0 * forwarded as f64 / requests.max(1) as f64
    );
    outcome.check()
}

fn mode(args: &Args) -> String {
    let target = match &args.addr {
        Some(a) => format!("--addr {a}"),
        None => "embedded+net".to_string(),
    };
    let via = if args.direct { "producers direct to owning cores" } else { "producers via the main listener" };
    format!("{target} ({via})")
}

fn shape(args: &Args) -> String {
    format!(
        "{} producers x {} in flight, {} consumers, topic {} with {} partitions, {} B records, {} records/batch, {} s",
        args.producers,
        args.inflight,
        args.consumers,
        args.topic,
        args.partitions,
        value_bytes(args.msg_size),
        records_per_batch(args.batch_bytes, args.msg_size),
        args.duration
    )
}

/// The topic as the server describes it.
struct Layout {
    /// Core `i`'s own address ("" when it has none).
    core_addrs: Vec<String>,
    /// The owning core of each partition we use.
    partition_cores: Vec<u16>,
    /// Whether this run created the topic (so offset 0 is ours).
    created: bool,
}

fn open_topic(main_addr: SocketAddr, args: &Args) -> Result<Layout, String> {
    let mut c = connect(main_addr)?;
    let created = match c.create_topic(&args.topic, args.partitions) {
        Ok(()) => true,
        Err(ClientError::Server { code: ErrorCode::TopicExists, .. }) => false,
        Err(e) => return Err(format!("create topic {}: {e}", args.topic)),
    };
    let md = c.metadata(&[&args.topic]).map_err(|e| format!("metadata of {}: {e}", args.topic))?;
    let topic = md.topics.into_iter().find(|t| t.name == args.topic).ok_or_else(|| format!("metadata lacks topic {}", args.topic))?;
    if topic.partition_cores.len() < args.partitions as usize {
        return Err(format!(
            "topic {} exists with {} partitions, fewer than --partitions {}",
            args.topic,
            topic.partition_cores.len(),
            args.partitions
        ));
    }
    let mut partition_cores = topic.partition_cores;
    partition_cores.truncate(args.partitions as usize);
    Ok(Layout { core_addrs: md.core_addrs, partition_cores, created })
}

/// Core `core`'s own address; an unspecified IP (a server listening on
/// 0.0.0.0) means the IP we reached it at.
fn direct_addr(layout: &Layout, main_addr: SocketAddr, core: u16) -> Result<SocketAddr, String> {
    let named = layout.core_addrs.get(core as usize).filter(|a| !a.is_empty());
    let named = named.ok_or_else(|| format!("the server names no direct address for core {core}: are its direct ports off?"))?;
    let addr: SocketAddr = named.parse().map_err(|e| format!("core {core}'s address {named:?}: {e}"))?;
    Ok(if addr.ip().is_unspecified() { SocketAddr::new(main_addr.ip(), addr.port()) } else { addr })
}

/// Producer `p` writes every partition of one core, the cores taken in
/// turn, so that one connection can reach all of its partitions directly.
/// The assignment is the same with and without `--direct`: only the
/// address differs, which is what a pair of runs compares.
fn producer_routes(args: &Args, layout: &Layout, main_addr: SocketAddr) -> Result<Vec<Route>, String> {
    let mut by_core: BTreeMap<u16, Vec<u32>> = BTreeMap::new();
    for (p, &core) in layout.partition_cores.iter().enumerate() {
        by_core.entry(core).or_default().push(p as u32);
    }
    let groups: Vec<(u16, Vec<u32>)> = by_core.into_iter().collect();
    if args.producers < groups.len() {
        println!("note      {} producers for partitions on {} cores: some cores get no load", args.producers, groups.len());
    }
    let mut routes = Vec::new();
    for p in 0..args.producers {
        let (core, partitions) = &groups[p % groups.len()];
        let addr = if args.direct { direct_addr(layout, main_addr, *core)? } else { main_addr };
        routes.push(Route { addr, partitions: partitions.clone() });
    }
    for (core, partitions) in &groups {
        let producers: Vec<usize> = (0..args.producers).filter(|p| groups[p % groups.len()].0 == *core).collect();
        let via = if args.direct { direct_addr(layout, main_addr, *core)? } else { main_addr };
        println!("route     core {core}: partitions {partitions:?} <- producers {producers:?} via {via}");
    }
    Ok(routes)
}

/// Consumer `c` tails partitions `c, c + N, ...`; with `--direct` it uses
/// their core's own address when they share one.
fn consumer_routes(args: &Args, layout: &Layout, main_addr: SocketAddr) -> Result<Vec<Route>, String> {
    let mut routes = Vec::new();
    for c in 0..args.consumers {
        let partitions: Vec<u32> = (c as u32..args.partitions).step_by(args.consumers).collect();
        let core = layout.partition_cores[partitions[0] as usize];
        let one_core = partitions.iter().all(|&p| layout.partition_cores[p as usize] == core);
        let addr = if args.direct && one_core { direct_addr(layout, main_addr, core)? } else { main_addr };
        println!("route     consumer {c}: partitions {partitions:?} via {addr}");
        routes.push(Route { addr, partitions });
    }
    Ok(routes)
}

/// Everything one networked run measured.
struct Outcome {
    records: u64,
    value_bytes: u64,
    elapsed: Duration,
    ack_us: Histogram<u64>,
    produce_errors: u64,
    first_produce_error: Option<String>,
    consumed: Vec<Result<Consumed, String>>,
    /// `Err` when the read-back could not run (the server went away).
    tally: Result<Tally, String>,
    verify_elapsed: Duration,
}

fn drive(args: &Args, main_addr: SocketAddr) -> Result<Outcome, Box<dyn std::error::Error>> {
    let layout = open_topic(main_addr, args)?;
    let producer_routes = producer_routes(args, &layout, main_addr)?;
    let consumer_routes = consumer_routes(args, &layout, main_addr)?;
    let per_batch = records_per_batch(args.batch_bytes, args.msg_size);
    let timestamp_ms = now_ms();
    let batches: Vec<Vec<Vec<u8>>> = (0..args.producers)
        .map(|p| (0..BATCHES_PER_PRODUCER).map(|i| producer_batch(p, i, per_batch, args.msg_size, timestamp_ms)).collect())
        .collect();
    let plans: Vec<producer::Plan<'_>> = (0..args.producers)
        .map(|p| producer::Plan {
            producer: p,
            topic: &args.topic,
            route: &producer_routes[p],
            batches: &batches[p],
            records_per_batch: per_batch as u64,
            value_bytes: value_bytes(args.msg_size),
            inflight_max: args.inflight,
            duration: Duration::from_secs_f64(args.duration),
        })
        .collect();
    let start = Barrier::new(args.producers + args.consumers + 1);
    let producing = AtomicBool::new(true);
    let (produced, elapsed, consumed) = std::thread::scope(|s| {
        let consumers: Vec<_> =
            consumer_routes.iter().map(|route| s.spawn(|| consumer::run(&args.topic, route, &start, &producing))).collect();
        let producers: Vec<_> = plans.iter().map(|plan| s.spawn(|| producer::run(plan, &start))).collect();
        start.wait();
        let started = Instant::now();
        let produced: Vec<Produced> = producers.into_iter().map(|h| h.join().expect("producer thread")).collect();
        let elapsed = started.elapsed();
        producing.store(false, Ordering::Release);
        let consumed: Vec<_> = consumers.into_iter().map(|h| h.join().expect("consumer thread")).collect();
        (produced, elapsed, consumed)
    });
    let mut outcome = Outcome {
        records: 0,
        value_bytes: 0,
        elapsed,
        ack_us: new_latency_histogram(),
        produce_errors: 0,
        first_produce_error: None,
        consumed,
        tally: Ok(Tally::default()),
        verify_elapsed: Duration::ZERO,
    };
    let mut acks: Vec<Vec<Ack>> = vec![Vec::new(); args.partitions as usize];
    for p in produced {
        outcome.records += p.records;
        outcome.value_bytes += p.value_bytes;
        outcome.ack_us.add(&p.ack_us)?;
        outcome.produce_errors += p.errors;
        if outcome.first_produce_error.is_none() {
            outcome.first_produce_error = p.first_error;
        }
        for a in p.acks {
            acks[a.partition as usize].push(a);
        }
    }
    let verify_started = Instant::now();
    outcome.tally = verify(args, main_addr, &mut acks, layout.created, per_batch);
    outcome.verify_elapsed = verify_started.elapsed();
    Ok(outcome)
}

/// Reads every partition back (one thread and connection each) from offset
/// 0, or from its first acknowledged offset on a topic an earlier run
/// filled, and checks every acknowledged record.
fn verify(args: &Args, main_addr: SocketAddr, acks: &mut [Vec<Ack>], created: bool, per_batch: usize) -> Result<Tally, String> {
    for a in acks.iter_mut() {
        a.sort_by_key(|a| a.base_offset);
    }
    let results: Vec<Result<Tally, String>> = std::thread::scope(|s| {
        let handles: Vec<_> = acks
            .iter()
            .enumerate()
            .map(|(p, acks)| {
                let from = if created { 0 } else { acks.first().map_or(0, |a| a.base_offset) };
                let check = PartitionCheck::new(p as u32, acks, from, per_batch, value_bytes(args.msg_size));
                s.spawn(move || verify_partition(main_addr, &args.topic, p as u32, check))
            })
            .collect();
        handles.into_iter().map(|h| h.join().expect("verify thread")).collect()
    });
    let mut tally = Tally::default();
    for r in results {
        tally.add(&r?);
    }
    Ok(tally)
}

fn verify_partition(addr: SocketAddr, topic: &str, partition: u32, mut check: PartitionCheck<'_>) -> Result<Tally, String> {
    let end = check.end_offset();
    if check.next_offset() >= end {
        return Ok(check.finish());
    }
    let mut client = connect(addr)?;
    while check.next_offset() < end {
        let from = check.next_offset();
        let fetched = match client.fetch(topic, partition, from, VERIFY_FETCH_BYTES, Duration::ZERO) {
            Ok(f) => f,
            // The server answered: what it refused to return is lost, and finish() counts it.
            Err(e @ ClientError::Server { .. }) => {
                check.note(format!("partition {partition}: fetch at offset {from}: {e}"));
                break;
            }
            Err(e) => return Err(format!("verify partition {partition}: fetch at offset {from}: {e}")),
        };
        if let Err(e) = walk_batches(&fetched.batches, from, |offset, value| check.observe(offset, value)) {
            check.note(format!("partition {partition}: {e}"));
            break;
        }
        if check.next_offset() == from {
            // Nothing at or past `from` (the end of the log): the rest is lost.
            break;
        }
    }
    Ok(check.finish())
}

impl Outcome {
    fn report(&self, args: &Args) {
        println!();
        report::produce(self.records, self.value_bytes, self.elapsed);
        report::ack(&self.ack_us, "requests");
        match &self.first_produce_error {
            None => println!("errors    0 failed Produce requests"),
            Some(first) => println!("errors    {} failed Produce requests; first: {first}", self.produce_errors),
        }
        if !self.consumed.is_empty() {
            self.report_consumers(args);
        }
        let t = match &self.tally {
            Ok(t) => t,
            Err(e) => return println!("verify    could not read back: {e}"),
        };
        let secs = self.verify_elapsed.as_secs_f64();
        println!(
            "verify    {} of {} acknowledged records read back intact in {secs:.2} s ({:.0} records/s): {} lost, {} corrupt, {} unacknowledged seen",
            t.intact,
            t.acked,
            (t.intact + t.unacked) as f64 / secs,
            t.lost,
            t.corrupt,
            t.unacked
        );
        if let Some(p) = &t.first_problem {
            println!("verify    first problem: {p}");
        }
    }

    fn report_consumers(&self, args: &Args) {
        let (mut records, mut bytes, mut busy, mut damaged) = (0, 0, Duration::ZERO, 0);
        for c in &self.consumed {
            match c {
                Ok(c) => {
                    records += c.records;
                    bytes += c.value_bytes;
                    busy = busy.max(c.busy);
                    damaged += c.damaged;
                    if let Some(p) = &c.first_problem {
                        println!("consume   problem: {p}");
                    }
                }
                Err(e) => println!("consume   failed: {e}"),
            }
        }
        let secs = busy.as_secs_f64().max(f64::MIN_POSITIVE);
        println!(
            "consume   {} consumers  {records:>12} records  {:>12.0} records/s  {:>8.1} MB/s (record values, over {secs:.2} s to the last record), {damaged} damaged",
            args.consumers,
            records as f64 / secs,
            bytes as f64 / 1e6 / secs
        );
    }

    /// Fails the run on any failed Produce, any acknowledged record not read
    /// back intact, or any consumer that failed or saw damage.
    fn check(&self) -> Result<(), Box<dyn std::error::Error>> {
        let mut failures = Vec::new();
        if self.produce_errors > 0 {
            failures.push(format!("{} Produce requests failed", self.produce_errors));
        }
        match &self.tally {
            Ok(t) if t.intact != t.acked || t.lost > 0 || t.corrupt > 0 => {
                failures.push(format!("{} acknowledged records, {} intact, {} lost, {} corrupt", t.acked, t.intact, t.lost, t.corrupt))
            }
            Ok(_) => {}
            Err(e) => failures.push(format!("no read-back: {e}")),
        }
        for c in &self.consumed {
            match c {
                Ok(c) if c.damaged > 0 || c.first_problem.is_some() => {
                    failures.push(format!("a consumer saw {} damaged records", c.damaged))
                }
                Ok(_) => {}
                Err(e) => failures.push(e.clone()),
            }
        }
        if failures.is_empty() { Ok(()) } else { Err(format!("verification failed: {}", failures.join("; ")).into()) }
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    /// A fresh data directory under the workspace's target dir: a real
    /// filesystem, where O_DIRECT means what it says (never tmpfs).
    fn test_dir(name: &str) -> std::path::PathBuf {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("../target/tmp/loadgen-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        assert_ne!(strom::platform::fs_type_name(&dir).unwrap(), "tmpfs", "{} must not be tmpfs", dir.display());
        dir
    }

    // Proves: a short networked run (direct routes, a consumer) gets every
    // Produce acknowledged and reads every acknowledged record back intact;
    // a second run on the same topic finds it existing and checks only its
    // own records. Small, so that this benchmark path cannot rot.
    #[test]
    fn networked_runs_read_back_every_ack() {
        let dir = test_dir("net");
        let args = Args::parse_from([
            "loadgen",
            "--embedded",
            "--net",
            "--direct",
            "--consumers",
            "1",
            "--producers",
            "2",
            "--partitions",
            "3",
            "--inflight",
            "4",
            "--batch-bytes",
            "4096",
            "--msg-size",
            "100",
            "--duration",
            "0.2",
            "--cores",
            "2",
        ]);
        crate::check_args(&args).unwrap();
        let mut cfg = crate::engine_config(&args);
        cfg.pin_cores = false;
        let server_cfg = ServerConfig { listen: SocketAddr::from(([127, 0, 0, 1], 0)), ..ServerConfig::default() };
        let server = Server::start(&dir, cfg, server_cfg).unwrap();
        for run in 0..2 {
            let outcome = drive(&args, server.local_addr()).unwrap();
            outcome.report(&args);
            assert!(outcome.records > 0, "run {run} acknowledged nothing");
            assert_eq!(outcome.produce_errors, 0, "{:?}", outcome.first_produce_error);
            let tally = outcome.tally.as_ref().unwrap();
            assert_eq!((tally.acked, tally.intact), (outcome.records, outcome.records));
            assert_eq!(tally.unacked, 0, "records outside this run's acks were checked");
            let consumed = outcome.consumed[0].as_ref().unwrap();
            assert_eq!(consumed.records, outcome.records, "the consumer tails from the end, so it reads exactly this run's records");
            outcome.check().unwrap();
        }
        server.shutdown().unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
