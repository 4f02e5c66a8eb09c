//! loadgen: drives a Strom broker over TCP and reports what it measured,
//! beside the machine's own limits measured in the same run.
//!
//! `loadgen --embedded` starts a broker in this process on a fresh data
//! directory (pinned to the first CPUs; loadgen's threads take the rest)
//! and drives it over loopback TCP like any client; `--addr` drives a
//! running `strom serve`. Producers and consumers run on loadgen's own
//! io_uring threads ([`worker`]); every record is checked ([`verify`]) by
//! the consumers, or, with none, by a read-back after the run. See
//! docs/LOADGEN.md for the scenarios, the measurements and the JSON schema.
#![deny(unsafe_code)]
use std::io::IsTerminal;
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use clap::{Parser, ValueEnum};
use serde_json::json;
use strom::client::{Client, ClientError};
use strom::config::{EngineConfig, FsyncPolicy};
use strom::proto::{ErrorCode, OffsetSpec};
use strom::server::{Server, ServerConfig};

mod args;
mod ceiling;
mod clock;
mod compare;
mod cpu;
mod hist;
mod kafka;
mod limits;
mod outside;
mod records;
mod report;
mod schedule;
mod scratch;
mod specs;
mod steady;
mod tally;
mod verdict;
mod verify;
mod worker;

use args::{Args, Scenario, Settings, check, settings};
use clock::now_ns;
use report::Report;
use specs::{producer_specs, subscriber_specs};
use tally::{acked_records, end_offsets, merge_into, merged_acked, read_totals, readback_amplification, spread_readers, tally_verify};
use worker::{ConsumerSpec, ProducerSpec, Shared, WorkerOutcome, WorkerSpec};

fn main() {
    let args = Args::parse();
    let s = settings(&args);
    if let Err(e) = check(&s, &args) {
        eprintln!("loadgen: {e}");
        std::process::exit(2);
    }
    match run(&args, &s) {
        Ok(report) => {
            if report.failed() {
                eprintln!("loadgen: the run FAILED: records lost, duplicated, reordered or corrupt, or errors (see the report)");
                std::process::exit(1);
            }
        }
        Err(e) => {
            eprintln!("loadgen: {e}");
            std::process::exit(1);
        }
    }
}

/// The broker being driven: one in this process, or a running one.
enum Target {
    Embedded { server: Server, dir: PathBuf, remove: bool },
    Remote,
}

fn default_data_dir() -> PathBuf {
    let tmp = std::env::temp_dir();
    let base = match strom::platform::fs_type_name(&tmp) {
        Ok(name) if name != "tmpfs" => tmp,
        _ => PathBuf::from("target"),
    };
    base.join(format!("strom-loadgen-{}", std::process::id()))
}

fn run(a: &Args, s: &Settings) -> Result<Report, String> {
    let cpus = strom::platform::allowed_cpus();
    let embedded = a.addr.is_none();
    let broker_cores = a.cores.unwrap_or((cpus.len() / 2).max(1));
    let threads = a.threads.unwrap_or(if embedded { cpus.len().saturating_sub(broker_cores).max(1) } else { cpus.len() });
    // With the broker on the first CPUs, loadgen's threads take the next
    // ones; with too few CPUs they share and are left unpinned.
    let loadgen_cpus: Vec<Option<usize>> =
        (0..threads).map(|i| if embedded && broker_cores + threads <= cpus.len() { Some(cpus[broker_cores + i]) } else { None }).collect();
    let ceiling = !a.no_ceiling && (a.ceiling || embedded);
    let fsync = a.fsync.unwrap_or(FsyncPolicy::Always);
    let mut notes = Vec::new();

    // Ceilings take as long as the run measures, up to 2 s (TCP) and the
    // disk's bounds in ceiling.rs (about 5 s, after the run and read-back, with the embedded broker stopped).
    let tcp = if ceiling { Some(ceiling::loopback_tcp(Duration::from_secs_f64(s.duration.min(2.0)))?) } else { None };

    let scratch;
    let (target, addr) = if embedded {
        let remove = a.data_dir.is_none() && !a.keep;
        let dir = a.data_dir.clone().unwrap_or_else(default_data_dir);
        // Removes a fresh directory however the run ends (error, Ctrl-C included).
        scratch = if remove { Some(scratch::Scratch::guard(dir.clone())?) } else { None };
        let engine_cfg = EngineConfig {
            cores: broker_cores,
            logs_on_create: broker_cores as u32,
            fsync,
            registered_bytes_max: a.registered_bytes_max,
            ..EngineConfig::default()
        };
        let loopback = SocketAddr::from(([127, 0, 0, 1], 0));
        let server_cfg = ServerConfig { listen: loopback, kafka_listen: a.kafka.then_some(loopback), ..ServerConfig::default() };
        let server = Server::start(&dir, engine_cfg, server_cfg).map_err(|e| format!("embedded broker in {}: {e}", dir.display()))?;
        if server.engine().registration().is_cut() {
            notes.push(format!("embedded broker {}", server.engine().registration()));
        }
        let addr = server.local_addr();
        (Target::Embedded { server, dir, remove }, addr)
    } else {
        scratch = None;
        (Target::Remote, resolve("--addr", a.addr.as_deref().expect("not embedded"))?)
    };
    let kafka_addr = match (&target, &a.kafka_addr) {
        (_, _) if !a.kafka => None,
        (Target::Embedded { server, .. }, _) => Some(server.kafka_addr().ok_or("the embedded broker has no Kafka listener")?),
        (Target::Remote, Some(text)) => Some(resolve("--kafka-addr", text)?),
        (Target::Remote, None) => unreachable!("check() asks for --kafka-addr"),
    };
    let mut result = drive(a, s, &target, (addr, None), threads, &loadgen_cpus, tcp.clone(), &mut notes);
    if let (Some(kafka_addr), true) = (kafka_addr, result.is_ok()) {
        // The same workload again, its producers speaking Kafka: the two
        // runs share the broker, the ceilings and this process.
        let mut kafka_notes = vec![format!(
            "producers speak Kafka Produce v7 (acks=-1) to the Kafka listener at {kafka_addr}; tail consumers Fetch v11 from it; the read-back (if any) stays native"
        )];
        let kafka = drive(a, &s.kafka_run(), &target, (addr, Some(kafka_addr)), threads, &loadgen_cpus, tcp, &mut kafka_notes);
        result = match (result, kafka) {
            (Ok(mut native), Ok(kafka)) => {
                native.kafka = Some(Box::new(kafka));
                Ok(native)
            }
            (_, Err(e)) => Err(format!("the --kafka run: {e}")),
            (Err(e), _) => Err(e),
        };
    }
    // The disk's ceilings are measured with the embedded broker stopped, so
    // that nothing of its own (a spare segment's preparation) shares the disk.
    let (disk_dir, remove) = match target {
        Target::Embedded { server, dir, remove } => {
            server.shutdown().map_err(|e| format!("embedded broker shutdown: {e}"))?;
            (Some(dir), remove)
        }
        Target::Remote => (a.data_dir.clone(), false),
    };
    if let (Ok(report), true, Some(dir)) = (&mut result, ceiling, &disk_dir) {
        let write_bytes = report.avg_write_bytes().map_or(s.batch_bytes, |b| b as usize).div_ceil(4096) * 4096;
        let d = ceiling::disks(dir, write_bytes, s.duration)?;
        if let Some(k) = report.kafka.as_deref_mut() {
            (k.disk, k.disk_best, k.disk_read) = (Some(d.loop_at_write_size.clone()), Some(d.best.clone()), Some(d.read.clone()));
        }
        (report.disk, report.disk_best, report.disk_read) = (Some(d.loop_at_write_size), Some(d.best), Some(d.read));
    }
    if let Ok(report) = &result {
        output(a, report)?;
    }
    if let (true, Some(dir)) = (remove, &disk_dir) {
        std::fs::remove_dir_all(dir).map_err(|e| format!("removing {}: {e}", dir.display()))?;
    }
    drop(scratch);
    result
}

fn resolve(flag: &str, text: &str) -> Result<SocketAddr, String> {
    text.to_socket_addrs().map_err(|e| format!("{flag} {text}: {e}"))?.next().ok_or(format!("{flag} {text} resolves to nothing"))
}

/// Where each partition lives: its core's direct address.
struct Layout {
    main_addr: SocketAddr,
    /// What the broker said of itself (ServerInfo).
    info: strom::proto::ServerInfo,
    partition_addr: Vec<SocketAddr>,
    start_offsets: Vec<u64>,
    /// `--kafka`'s second run: the Kafka listener every producer talks to.
    kafka_addr: Option<SocketAddr>,
}

fn setup(addr: SocketAddr, s: &Settings) -> Result<Layout, String> {
    let ctx = |e: ClientError| format!("broker at {addr}: {e}");
    let mut client = Client::connect_timeout(addr, Duration::from_secs(10)).map_err(ctx)?;
    client.set_timeout(Some(Duration::from_secs(60))).map_err(ctx)?;
    // Before the topic is made: a batch the broker would refuse is refused here.
    let info = client.server_info().map_err(|e| format!("broker at {addr} did not say its limits (ServerInfo): {e}"))?;
    limits::check_batch_bytes(s.batch_bytes, &info)?;
    let create = match s.retention_bytes {
        Some(bytes) => client.create_topic_with(&s.topic, s.partitions, strom::catalog::TopicRetention { ms: None, bytes: Some(bytes) }),
        None => client.create_topic(&s.topic, s.partitions),
    };
    let created = match create {
        Ok(()) => true,
        Err(ClientError::Server { code: ErrorCode::TopicExists, .. }) => false,
        Err(e) => return Err(ctx(e)),
    };
    let meta = client.metadata(&[&s.topic]).map_err(ctx)?;
    let topic = meta.topics.iter().find(|t| t.name == s.topic).ok_or(format!("topic {} is not in the broker's metadata", s.topic))?;
    if topic.partition_cores.len() != s.partitions as usize {
        return Err(format!(
            "topic {} exists with {} partitions, not {}: choose another --topic or --partitions {}",
            s.topic,
            topic.partition_cores.len(),
            s.partitions,
            topic.partition_cores.len()
        ));
    }
    let core_addr = |core: u16| -> Result<SocketAddr, String> {
        match meta.core_addrs.get(core as usize).map(String::as_str) {
            None | Some("") => Ok(addr),
            Some(text) => text.parse().map_err(|e| format!("core address {text}: {e}")),
        }
    };
    let partition_addr = topic.partition_cores.iter().map(|&c| core_addr(c)).collect::<Result<Vec<_>, _>>()?;
    let mut start_offsets = vec![0; s.partitions as usize];
    if !created {
        for (p, start) in start_offsets.iter_mut().enumerate() {
            *start = client.list_offsets(&s.topic, p as u32, OffsetSpec::Latest).map_err(ctx)?.unwrap_or(0);
        }
    }
    Ok(Layout { main_addr: addr, info, partition_addr, start_offsets, kafka_addr: None })
}

struct Phase {
    producers: Vec<ProducerSpec>,
    consumers: Vec<ConsumerSpec>,
    warmup: f64,
    duration: f64,
}

/// What the main thread saw while a phase ran.
struct PhaseRun {
    outcomes: Vec<WorkerOutcome>,
    window_secs: f64,
    /// From the window's end until every worker finished.
    drain_secs: f64,
    loadgen_cpu: f64,
    other_cpu: f64,
    run_queue: outside::RunQueueWait,
    log_before: Option<(u64, u64, u64)>,
    log_after: Option<(u64, u64, u64)>,
    /// Segments recycled and reused so far, at the window's ends.
    segments_before: Option<(u64, u64)>,
    segments_after: Option<(u64, u64)>,
    stages: Vec<strom::server::StageLatency>,
}

fn log_totals(target: &Target) -> Option<(u64, u64, u64)> {
    let Target::Embedded { server, .. } = target else { return None };
    let cores = server.engine().metrics().ok()?;
    Some(cores.iter().fold((0, 0, 0), |(w, f, b), m| (w + m.log.writes, f + m.log.fsyncs, b + m.log.bytes_written)))
}

#[allow(clippy::too_many_arguments)]
fn run_phase(
    s: &Settings,
    a: &Args,
    target: &Target,
    layout: &Layout,
    shared_base: (u32, Vec<u64>),
    phase: Phase,
    threads: usize,
    cpus: &[Option<usize>],
    label: &str,
) -> Result<PhaseRun, String> {
    let start = now_ns() + 50_000_000; // connections are made before the clock starts
    let window_start_ns = start + (phase.warmup * 1e9) as u64;
    let window_end_ns = window_start_ns + (phase.duration * 1e9) as u64;
    let (run_id, targets) = shared_base;
    let shared = Arc::new(Shared {
        run_id,
        topic: s.topic.clone(),
        shape: s.shape(),
        window_start_ns,
        window_end_ns,
        abort: AtomicBool::new(false),
        producers_done: AtomicUsize::new(0),
        targets: targets.into_iter().map(AtomicU64::new).collect(),
        targets_final: AtomicBool::new(false),
        live_acked_records: AtomicU64::new(0),
        live_consumed_records: AtomicU64::new(0),
    });
    let producers_total = phase.producers.len();
    let mut specs: Vec<WorkerSpec> = (0..threads)
        .map(|i| WorkerSpec { name: format!("loadgen-w{i}"), cpu: cpus.get(i).copied().flatten(), ..Default::default() })
        .collect();
    for (i, p) in phase.producers.into_iter().enumerate() {
        specs[i % threads].producers.push(p);
    }
    for (i, c) in phase.consumers.into_iter().enumerate() {
        specs[i % threads].consumers.push(c);
    }
    let handles = specs
        .into_iter()
        .filter(|w| !w.producers.is_empty() || !w.consumers.is_empty())
        .map(|w| {
            let shared = shared.clone();
            std::thread::Builder::new().name(w.name.clone()).spawn(move || worker::run(w, shared)).map_err(|e| e.to_string())
        })
        .collect::<Result<Vec<_>, _>>()?;
    let live = !a.quiet && std::io::stderr().is_terminal();
    let value_bytes = s.shape().value_bytes_avg();
    let (mut cpu_start, mut cpu_end) = (None, None);
    let (mut log_before, mut log_after) = (None, None);
    let (mut segments_before, mut segments_after) = (None, None);
    let mut stage_list = Vec::new();
    let (mut last_acked, mut last_consumed, mut last_t) = (0, 0, now_ns());
    let mut next_status = now_ns() + 1_000_000_000;
    while !handles.iter().all(|h| h.is_finished()) {
        std::thread::sleep(Duration::from_millis(5));
        let now = now_ns();
        if cpu_start.is_none() && now >= window_start_ns {
            cpu_start = Some(cpu::snapshot());
            log_before = log_totals(target);
            segments_before = tally::segment_totals(target);
            stages(target, layout.main_addr, true);
        }
        if cpu_end.is_none() && now >= window_end_ns {
            cpu_end = Some(cpu::snapshot());
            log_after = log_totals(target);
            segments_after = tally::segment_totals(target);
            stage_list = stages(target, layout.main_addr, false);
        }
        if !shared.targets_final.load(Ordering::SeqCst) && shared.producers_done.load(Ordering::SeqCst) >= producers_total {
            shared.targets_final.store(true, Ordering::SeqCst);
        }
        if live && now >= next_status {
            next_status += 1_000_000_000;
            let (acked, consumed) =
                (shared.live_acked_records.load(Ordering::Relaxed), shared.live_consumed_records.load(Ordering::Relaxed));
            let secs = (now - last_t) as f64 / 1e9;
            let phase_name = if now < window_start_ns {
                "warm-up"
            } else if now < window_end_ns {
                "measuring"
            } else {
                "draining"
            };
            eprint!(
                "\r\x1b[2K{label} {phase_name:>9} {:>5.1} s | produce {:>10.0} rec/s {:>8.1} MB/s | consume {:>10.0} rec/s {:>8.1} MB/s",
                now.saturating_sub(start) as f64 / 1e9,
                (acked - last_acked) as f64 / secs,
                (acked - last_acked) as f64 * value_bytes / 1e6 / secs,
                (consumed - last_consumed) as f64 / secs,
                (consumed - last_consumed) as f64 * value_bytes / 1e6 / secs,
            );
            (last_acked, last_consumed, last_t) = (acked, consumed, now);
        }
    }
    if live {
        eprint!("\r\x1b[2K");
    }
    let drain_secs = now_ns().saturating_sub(window_end_ns) as f64 / 1e9;
    let mut outcomes = Vec::new();
    for h in handles {
        outcomes.push(h.join().map_err(|_| "a loadgen thread panicked".to_string())??);
    }
    let (c0, c1) = (cpu_start.unwrap_or_default(), cpu_end.unwrap_or_else(cpu::snapshot));
    let loadgen_cpu_secs: f64 = outcomes.iter().map(|o| o.cpu_window_secs).sum();
    let loadgen_wait_secs: f64 = outcomes.iter().map(|o| o.run_queue_window_secs).sum();
    let window_secs = phase.duration;
    Ok(PhaseRun {
        outcomes,
        window_secs,
        drain_secs,
        // Workers time themselves (one may exit before the main thread's
        // last look); everything else in the process is the broker.
        loadgen_cpu: loadgen_cpu_secs / window_secs,
        other_cpu: cpu::spent(&c0, &c1, "loadgen-w", true) / window_secs,
        run_queue: outside::RunQueueWait { loadgen_secs: loadgen_wait_secs, broker_secs: cpu::waited(&c0, &c1, "loadgen-w", true) },
        log_before,
        log_after,
        segments_before,
        segments_after,
        stages: stage_list,
    })
}

/// The broker's per-stage latency (its Stats api), reset at the start of
/// the window so the warm-up does not count. Embedded: asked in-process;
/// a running server: over a connection of its own. A broker that cannot
/// say gives an empty list, not a failed run.
fn stages(target: &Target, addr: SocketAddr, reset: bool) -> Vec<strom::server::StageLatency> {
    let list = match target {
        Target::Embedded { server, .. } => Ok(server.stage_latency(reset)),
        Target::Remote => Client::connect_timeout(addr, Duration::from_secs(5)).and_then(|mut c| {
            c.set_timeout(Some(Duration::from_secs(10)))?;
            c.stage_latency(reset)
        }),
    };
    match list {
        Ok(list) => list,
        Err(e) => {
            eprintln!("loadgen: the broker's per-stage latency is not available: {e}");
            Vec::new()
        }
    }
}

#[allow(clippy::too_many_arguments)]
fn drive(
    a: &Args,
    s: &Settings,
    target: &Target,
    (addr, kafka_addr): (SocketAddr, Option<SocketAddr>),
    threads: usize,
    cpus: &[Option<usize>],
    tcp: Option<ceiling::TcpCeiling>,
    notes: &mut Vec<String>,
) -> Result<Report, String> {
    // The topic is made and its layout read natively, whoever produces.
    let mut layout = setup(addr, s)?;
    layout.kafka_addr = kafka_addr;
    let run_id = (now_ns() as u32) ^ std::process::id().rotate_left(16);
    let mut rate = s.rate;
    let base = || (run_id, layout.start_offsets.clone());
    let mut all: Vec<WorkerOutcome> = Vec::new();
    let mut read_from = layout.start_offsets.clone();

    if s.prefill > 0.0 {
        let phase = Phase { producers: producer_specs(s, &layout, 0.0, 0), consumers: Vec::new(), warmup: 0.0, duration: s.prefill };
        let r = run_phase(s, a, target, &layout, base(), phase, threads, cpus, "prefill")?;
        let records: u64 = r.outcomes.iter().map(|o| o.produced.records).sum();
        notes.push(format!(
            "prefill: {} records ({:.0} MB) written for {:.0} s before the consumers start from them",
            records,
            records as f64 * s.shape().value_bytes_avg() / 1e6,
            s.prefill
        ));
        all.extend(r.outcomes);
    }
    if let Some(fraction) = s.rate_fraction {
        let probe_secs = 3.0;
        let phase = Phase {
            producers: producer_specs(s, &layout, 0.0, s.producers as u32),
            consumers: Vec::new(),
            warmup: 1.0,
            duration: probe_secs,
        };
        let r = run_phase(s, a, target, &layout, base(), phase, threads, cpus, "probe")?;
        let records: u64 = r.outcomes.iter().map(|o| o.produced.records).sum();
        let max_rate = records as f64 / probe_secs;
        rate = (max_rate * fraction).max(1.0);
        notes.push(format!(
            "probe: closed loop reached {:.0} records/s; running open loop at {:.2} of it: {:.0} records/s",
            max_rate, fraction, rate
        ));
        all.extend(r.outcomes);
    }
    let mut steady = None;
    if s.retention_bytes.is_some() {
        let (outcomes, st) = steady::fill(s, a, target, &layout, base(), (threads, cpus), 3 * s.producers as u32)?;
        notes.push(format!(
            "fill: {} records ({:.1} GB) written in {:.0} s, until a roll reused a segment retention recycled (keeping {} bytes per partition)",
            st.fill_records,
            st.fill_records as f64 * s.shape().value_bytes_avg() / 1e9,
            st.fill_secs,
            st.retention_bytes
        ));
        all.extend(outcomes);
        steady = Some(st);
    }
    // Prefill and probe records stay in the log: the consumers of the main
    // phase start at them in catch-up, else at the current end. Every phase
    // has its own producer ids, so all of a run's records check together.
    let ends = end_offsets(&all, &layout.start_offsets);
    if s.prefill == 0.0 {
        read_from = ends.clone();
    }
    let consumers: Vec<ConsumerSpec> =
        (0..s.consumers).flat_map(|c| subscriber_specs(c as u32, &layout, &read_from, true, s.scenario == Scenario::Subscribe)).collect();
    let main_ids = 2 * s.producers as u32;
    let phase = Phase { producers: producer_specs(s, &layout, rate, main_ids), consumers, warmup: s.warmup, duration: s.duration };
    let name = s.scenario.to_possible_value().expect("no skipped variants").get_name().to_string();
    let main = run_phase(s, a, target, &layout, (run_id, ends.clone()), phase, threads, cpus, &name)?;

    let mut verify = verify::VerifyCounts::default();
    let final_ends = end_offsets(&main.outcomes, &ends);
    let acked_main = merged_acked(&main.outcomes);
    let mut acked_all = merged_acked(&all);
    merge_into(&mut acked_all, &acked_main);
    let (mut readback, mut readback_disk) = (None, None);
    if s.consumers == 0 {
        // Nobody read at the tail: read back everything this run wrote.
        let before = read_totals(target);
        let (back, outcomes) = read_back(s, a, target, &layout, (run_id, final_ends), threads, cpus, &acked_all, &mut verify)?;
        readback_disk = before.zip(read_totals(target)).map(|(b, e)| (e.0 - b.0, e.1 - b.1, e.2 - b.2));
        readback = Some(back);
        all.extend(outcomes);
    } else if s.prefill > 0.0 {
        tally_verify(&main.outcomes, &acked_all, false, &mut verify);
    } else {
        tally_verify(&main.outcomes, &acked_main, false, &mut verify);
    }
    if let (Some(st), Some(b), Some(e)) = (steady.as_mut(), main.segments_before, main.segments_after) {
        (st.window_before, st.window_after) = (b, e);
    }

    let mut report = Report {
        value_bytes_avg: s.shape().value_bytes_avg(),
        window_secs: main.window_secs,
        warmup_secs: s.warmup,
        drain_secs: main.drain_secs,
        consumers: s.consumers,
        offered_records_per_sec: (rate > 0.0).then_some(rate),
        acked_run_records: acked_records(&acked_all),
        readback,
        readback_disk,
        verify,
        steady,
        tcp,
        notes: notes.clone(),
        threads,
        ..Default::default()
    };
    for o in main.outcomes.iter().chain(all.iter()) {
        for (k, n) in &o.errors {
            *report.errors.entry(k.clone()).or_default() += n;
        }
        report.indeterminate += o.indeterminate;
    }
    for o in &main.outcomes {
        report.lat.pool(&o.lat);
        report.produced_records += o.produced.records;
        report.produced_requests += o.produced.requests;
        report.consumed_records += o.consumed.records;
        report.consumed_requests += o.consumed.requests;
        report.sends += o.sends;
        report.sends_late += o.sends_late;
    }
    report.open_loop = rate > 0.0;
    report.loadgen_cpu_cores = main.loadgen_cpu;
    report.stages = main.stages;
    if let (Some(b), Some(e)) = (main.log_before, main.log_after) {
        report.log_writes = Some((e.0 - b.0, e.1 - b.1, e.2 - b.2));
    }
    let broker_cores = match target {
        Target::Embedded { .. } => {
            report.broker_cpu_cores = Some(main.other_cpu);
            report.run_queue = Some(main.run_queue);
            a.cores.unwrap_or((strom::platform::online_cpus() / 2).max(1))
        }
        Target::Remote => 0,
    };
    let fsync = a.fsync.unwrap_or(FsyncPolicy::Always);
    let target_text = match target {
        Target::Embedded { dir, .. } => format!("embedded broker ({broker_cores} core(s), fsync {fsync}, data dir {})", dir.display()),
        Target::Remote => format!("broker at {addr}"),
    };
    let target_text = match kafka_addr {
        Some(k) => format!("{target_text}, speaking Kafka to its listener at {k}"),
        None => target_text,
    };
    report.headline = format!(
        "loadgen {}: {}; {} producer(s) x {} in flight, {} consumer(s), {} partition(s), batches of exactly {} bytes ({}){}; {} loadgen thread(s)",
        s.scenario.to_possible_value().unwrap().get_name(),
        target_text,
        s.producers,
        s.inflight,
        s.consumers,
        s.partitions,
        s.batch_bytes,
        s.shape().describe(),
        if rate > 0.0 { format!(", open loop at {rate:.0} records/s") } else { ", closed loop".into() },
        threads
    );
    report.config = json!({
        "scenario": s.scenario.to_possible_value().unwrap().get_name(),
        "protocol": if kafka_addr.is_some() { "kafka" } else { "native" },
        "target": if matches!(target, Target::Embedded { .. }) { "embedded".to_string() } else { addr.to_string() },
        "producers": s.producers, "consumers": s.consumers, "topic": s.topic, "partitions": s.partitions,
        "msg_size": s.msg_size, "batch_bytes": s.batch_bytes, "records_per_batch": s.shape().records(), "batch_values": s.shape().describe(),
        "rate": rate, "inflight": s.inflight, "duration_secs": s.duration, "warmup_secs": s.warmup,
        "cores": (broker_cores > 0).then_some(broker_cores), "fsync": matches!(target, Target::Embedded { .. }).then(|| fsync.to_string()),
        "threads": threads, "prefill_secs": s.prefill, "rate_fraction": s.rate_fraction, "retention_bytes": s.retention_bytes,
    });
    Ok(report)
}

/// Reads back and checks every record the run acknowledged, announced on
/// stderr with an estimate and timed, kept out of the window's figures.
#[allow(clippy::too_many_arguments)]
fn read_back(
    s: &Settings,
    a: &Args,
    target: &Target,
    layout: &Layout,
    base: (u32, Vec<u64>),
    threads: usize,
    cpus: &[Option<usize>],
    acked_all: &tally::Acked,
    verify: &mut verify::VerifyCounts,
) -> Result<(report::ReadBack, Vec<WorkerOutcome>), String> {
    let records = acked_records(acked_all);
    let bytes = (records as f64 * s.shape().value_bytes_avg()) as u64;
    let per_log = (s.partitions as usize).div_ceil(usize::from(layout.info.cores.max(1)));
    let log_bytes = bytes as f64 * readback_amplification(per_log, s.batch_bytes) as f64;
    if !a.quiet {
        eprintln!(
            "loadgen: verifying: reading back {records} records ({:.2} GB) from the broker, about {:.0} s (not in the figures) ...",
            bytes as f64 / 1e9,
            (log_bytes / READBACK_LOG_BYTES_PER_SEC).max(1.0)
        );
    }
    // After retention, from where each partition now starts.
    let from = if s.retention_bytes.is_some() { steady::earliest_offsets(s, layout)? } else { layout.start_offsets.clone() };
    let readers: Vec<ConsumerSpec> = spread_readers(layout, &from, threads);
    let phase = Phase { producers: Vec::new(), consumers: readers, warmup: 0.0, duration: 1e-3 };
    let t0 = now_ns();
    let r = run_phase(s, a, target, layout, base, phase, threads, cpus, "read-back")?;
    let expired_before = verify.expired;
    tally_verify(&r.outcomes, acked_all, s.retention_bytes.is_some(), verify);
    // What retention dropped was not read: only the rest counts.
    let records = records - (verify.expired - expired_before);
    let bytes = (records as f64 * s.shape().value_bytes_avg()) as u64;
    let secs = (now_ns() - t0) as f64 / 1e9;
    if !a.quiet {
        eprintln!("loadgen: verifying: {records} records read back and checked in {secs:.1} s");
    }
    Ok((report::ReadBack { records, bytes, secs }, r.outcomes))
}

/// Bytes of log a read-back reads per second, for its announced estimate:
/// 270 k records/s of 1 KiB with 4 partitions on one log, read 4 times,
/// measured on the development machine (docs/LOADGEN.md).
const READBACK_LOG_BYTES_PER_SEC: f64 = 1.1e9;

fn output(a: &Args, report: &Report) -> Result<(), String> {
    if !a.quiet {
        print!("{}", report::table(report));
    }
    if let Some(path) = &a.json {
        let text = serde_json::to_string_pretty(&report::to_json(report)).map_err(|e| e.to_string())?;
        std::fs::write(path, text + "\n").map_err(|e| format!("--json {}: {e}", path.display()))?;
    }
    if let Some(dir) = &a.hgrm {
        report::write_hgrm(dir, report)?;
    }
    if let Some(path) = &a.svg {
        let title = format!("{} - latency by percentile", report.config["scenario"].as_str().unwrap_or("loadgen"));
        let svg = report::svg(
            &title,
            &[("produce ack", &report.lat.ack_us), ("end-to-end", &report.lat.e2e_us), ("fetch", &report.lat.fetch_us)],
        );
        std::fs::write(path, svg).map_err(|e| format!("--svg {}: {e}", path.display()))?;
    }
    Ok(())
}
