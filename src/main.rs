//! The `strom` binary: the broker, its clients and its offline tools.
mod cli;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use cli::topic::TopicCmd;
use nix::sys::signal::{SigSet, Signal};
use strom::config::{EngineConfig, FsyncPolicy};
use strom::io::uring::UringIo;
use strom::server::{Server, ServerConfig};

const ADDR_DEFAULT: &str = "127.0.0.1:7070";

#[derive(Parser)]
#[command(name = "strom", version, about = "A durable log broker and storage engine on io_uring")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Verify every frame of a data directory and summarise its logs and
    /// partitions (read-only; exits non-zero on corruption, naming the position).
    Inspect {
        /// The data directory.
        dir: PathBuf,
    },
    /// Open a data directory as the engine does (recovering every log after
    /// any kind of stop), report the time and bytes scanned, then stop
    /// cleanly (checkpointing, so the next open scans nothing).
    Recover {
        /// The data directory.
        dir: PathBuf,
        /// Core threads (default: all online CPUs).
        #[arg(long)]
        cores: Option<usize>,
    },
    /// Run the broker on a data directory until SIGINT or SIGTERM, then stop
    /// cleanly (acknowledging in-flight writes and checkpointing). SIGUSR1
    /// prints each core's metrics to stderr (the Metrics api serves them too).
    Serve(ServeArgs),
    /// Create, alter, describe, list or delete topics on a running broker.
    Topic {
        #[command(flatten)]
        conn: ConnArgs,
        #[command(subcommand)]
        cmd: TopicCmd,
    },
    /// Append each line of stdin (without its newline) as one record, with
    /// an optional key and headers, and exit once every line is acknowledged.
    Produce(cli::produce::ProduceArgs),
    /// Print a topic's records (all partitions merged by timestamp, or one),
    /// as values, a kcat format or JSON; optionally as a group, or following.
    Consume(cli::consume::ConsumeArgs),
    /// Print a range of one partition's records, by offset or by named
    /// index value, waiting up to --wait for its end (exit 3 if it did not come).
    Query(cli::query::QueryArgs),
    /// Consumer groups' committed positions.
    Group {
        #[command(flatten)]
        conn: ConnArgs,
        #[command(subcommand)]
        cmd: cli::group::GroupCmd,
    },
    /// Check this machine and a data directory for what serve needs (kernel,
    /// io_uring, seccomp, filesystem, O_DIRECT, memlock, open files, CPUs, the
    /// disk's speed): one line per check with what to change; exit 1 if any fails.
    Doctor(cli::doctor::DoctorArgs),
}

#[derive(Args)]
struct ConnArgs {
    /// The broker's address: HOST[:PORT] (port 7070 if none), such as localhost or 127.0.0.1:7070.
    #[arg(long, env = "STROM_ADDR", default_value = ADDR_DEFAULT, global = true)]
    addr: String,
}

#[derive(Args)]
struct ServeArgs {
    /// The data directory (created if new).
    #[arg(long)]
    data_dir: PathBuf,
    /// Address to accept connections on; port 0 picks a free one.
    #[arg(long, default_value_t = ServerConfig::default().listen)]
    listen: SocketAddr,
    /// Also speak Kafka's protocol on this address (docs/KAFKA.md); port 0 picks a free one.
    #[arg(long)]
    kafka_listen: Option<SocketAddr>,
    /// The host:port Kafka clients are told to connect to (default: the Kafka listener's address).
    #[arg(long, requires = "kafka_listen")]
    kafka_advertise: Option<String>,
    /// How long a new Kafka consumer group waits for more members before its first rebalance completes.
    #[arg(long, default_value_t = duration_ms(ServerConfig::default().kafka_initial_rebalance_delay))]
    kafka_initial_rebalance_delay_ms: u64,
    /// Core threads (default: all online CPUs); a new data directory gets one log per core.
    #[arg(long)]
    cores: Option<usize>,
    /// When writes are acknowledged: always, interval:MS or never.
    #[arg(long, default_value_t = EngineConfig::default().fsync)]
    fsync: FsyncPolicy,
    /// Largest request frame accepted, in bytes.
    #[arg(long, default_value_t = ServerConfig::default().frame_bytes_max)]
    frame_bytes_max: usize,
    /// Open connections at most.
    #[arg(long, default_value_t = ServerConfig::default().connections_max)]
    connections_max: usize,
    /// Requests in flight per connection at most.
    #[arg(long, default_value_t = ServerConfig::default().inflight_per_conn_max)]
    inflight_per_conn_max: usize,
    /// A connection with no request for this long is closed.
    #[arg(long, default_value_t = duration_ms(ServerConfig::default().idle_timeout))]
    idle_timeout_ms: u64,
    /// A request whose frame is not complete this long after it began is refused.
    #[arg(long, default_value_t = duration_ms(ServerConfig::default().header_timeout))]
    header_timeout_ms: u64,
    /// Request and reply bytes one core may hold for all its connections; past it no socket of the core is read.
    #[arg(long, default_value_t = ServerConfig::default().core_buffered_bytes_max)]
    core_buffered_bytes_max: usize,
    /// Fetch reply bytes being built or unsent for one core's connections; a Fetch past it waits.
    #[arg(long, default_value_t = ServerConfig::default().reply_budget_bytes)]
    reply_budget_bytes: usize,
    /// Bytes per log segment file (a block multiple of at least two write buffers).
    #[arg(long, default_value_t = EngineConfig::default().segment_bytes)]
    segment_bytes: u64,
    /// Bytes logged between checkpoints (each bounds the scan at the next start).
    #[arg(long, default_value_t = EngineConfig::default().checkpoint_interval_bytes)]
    checkpoint_interval_bytes: u64,
    /// Buffer bytes all cores together register with io_uring, at most
    /// (default: all, or what RLIMIT_MEMLOCK allows); the rest use plain I/O.
    #[arg(long, value_name = "BYTES")]
    registered_bytes_max: Option<usize>,
    /// Retention for topics without their own (Kafka's log.retention.ms): keep
    /// records whose batch is younger than this (ms, or 30s, 12h, 7d; -1: no limit).
    #[arg(long, value_parser = cli::topic::parse_ms_setting, allow_hyphen_values = true)]
    retention_ms: Option<cli::topic::Setting>,
    /// Retention for topics without their own (Kafka's log.retention.bytes):
    /// keep at most this many bytes per partition (bytes, or 512MiB, 10GiB; -1: no limit).
    #[arg(long, value_parser = cli::topic::parse_bytes_setting, allow_hyphen_values = true)]
    retention_bytes: Option<cli::topic::Setting>,
}

fn duration_ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()))
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let (cmd, result) = match cli.cmd {
        Cmd::Inspect { dir } => ("inspect", inspect(&dir)),
        Cmd::Recover { dir, cores } => ("recover", recover(&dir, cores).map_err(|e| e.to_string())),
        Cmd::Serve(args) => ("serve", serve(&args)),
        Cmd::Topic { conn, cmd } => (cmd.name(), cli::topic::run(cmd, || cli::connect(&conn))),
        Cmd::Produce(args) => ("produce", cli::produce::produce(&args)),
        Cmd::Consume(args) => ("consume", cli::consume::consume(&args)),
        Cmd::Group { conn, cmd } => ("group", cli::group::run(&conn, &cmd)),
        // A failed check is a finding, printed with the rest, not an error line.
        Cmd::Doctor(args) => return if cli::doctor::doctor(&args) { ExitCode::FAILURE } else { ExitCode::SUCCESS },
        Cmd::Query(args) => match cli::query::query(&args) {
            Ok(true) => return ExitCode::from(cli::query::EXIT_OPEN),
            Ok(false) => ("query", Ok(())),
            Err(e) => ("query", Err(e)),
        },
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("strom {cmd}: {message}");
            ExitCode::FAILURE
        }
    }
}

fn inspect(dir: &Path) -> Result<(), String> {
    let ins =
        UringIo::new(64).and_then(|mut io| strom::inspect::inspect(&mut io, dir, &EngineConfig::default())).map_err(|e| e.to_string())?;
    print!("{}", strom::inspect::render(&ins));
    Ok(())
}

fn recover(dir: &Path, cores: Option<usize>) -> strom::Result<()> {
    let mut cfg = EngineConfig::default();
    if let Some(c) = cores {
        cfg.cores = c;
    }
    let started = std::time::Instant::now();
    let engine = strom::Engine::open(dir, cfg)?;
    let open_ms = started.elapsed().as_secs_f64() * 1e3;
    let (mut scanned, mut cut) = (0, 0);
    for r in engine.recovery_reports() {
        println!(
            "log {:>4}: scanned {} bytes ({} frames) from position {} to {}, cut {} bytes, removed {} segments, {} us",
            r.log, r.bytes_scanned, r.frames_scanned, r.scanned_from, r.end_pos, r.bytes_cut, r.segments_removed, r.elapsed_us
        );
        scanned += r.bytes_scanned;
        cut += r.bytes_cut;
    }
    println!("opened in {open_ms:.1} ms: {scanned} bytes scanned, {cut} bytes cut, {} topics", engine.topics().len());
    engine.shutdown()
}

/// Serves until SIGINT or SIGTERM (SIGUSR1 prints metrics). The signals are blocked before any
/// thread starts, so every thread inherits the mask and the signal stays
/// pending until this thread takes it with sigwait: no handler runs on an
/// arbitrary thread, and the shutdown runs here, in order.
fn serve(args: &ServeArgs) -> Result<(), String> {
    // A panic is a bug; on a core thread it would leave that core's
    // partitions dead while the rest serves on, their clients waiting. The
    // whole process stops instead, as a `kill -9` would: a restart recovers
    // every acknowledged write (DURABILITY.md).
    let report = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        report(info);
        eprintln!("strom serve: a thread panicked; aborting the process (a restart recovers every acknowledged write)");
        std::process::abort();
    }));
    let mut signals = SigSet::empty();
    signals.add(Signal::SIGINT);
    signals.add(Signal::SIGTERM);
    // SIGUSR1 prints each core's metrics, one line each, for an operator at
    // a terminal (programs and tests ask the Metrics api).
    signals.add(Signal::SIGUSR1);
    signals.thread_block().map_err(|e| format!("cannot block SIGINT, SIGTERM and SIGUSR1: {e}"))?;
    let mut engine_cfg = EngineConfig {
        fsync: args.fsync,
        segment_bytes: args.segment_bytes,
        checkpoint_interval_bytes: args.checkpoint_interval_bytes,
        retention_age: server_limit(args.retention_ms).map(Duration::from_millis),
        retention_bytes: server_limit(args.retention_bytes),
        registered_bytes_max: args.registered_bytes_max,
        ..EngineConfig::default()
    };
    if let Some(cores) = args.cores {
        engine_cfg.cores = cores;
        // A new directory gets a log per core, so every core has work; an
        // existing one keeps its log count whatever --cores says.
        engine_cfg.logs_on_create = cores as u32;
    }
    let server_cfg = ServerConfig {
        listen: args.listen,
        kafka_listen: args.kafka_listen,
        kafka_advertise: args.kafka_advertise.clone(),
        kafka_initial_rebalance_delay: Duration::from_millis(args.kafka_initial_rebalance_delay_ms),
        frame_bytes_max: args.frame_bytes_max,
        connections_max: args.connections_max,
        inflight_per_conn_max: args.inflight_per_conn_max,
        idle_timeout: Duration::from_millis(args.idle_timeout_ms),
        header_timeout: Duration::from_millis(args.header_timeout_ms),
        core_buffered_bytes_max: args.core_buffered_bytes_max,
        reply_budget_bytes: args.reply_budget_bytes,
        ..ServerConfig::default()
    };
    strom::failpoint::init();
    let server = Server::start(&args.data_dir, engine_cfg, server_cfg).map_err(|e| e.to_string())?;
    // One line for a normal start (a new directory, or a clean restart that
    // scans nothing past its checkpoints). A log whose recovery scanned,
    // cut or removed anything gets its own line first: that is news.
    for r in server.engine().recovery_reports().iter().filter(|r| r.bytes_scanned > 0 || r.bytes_cut > 0 || r.segments_removed > 0) {
        eprintln!(
            "strom: recovered log {}: scanned {} bytes ({} frames) from position {} to {}, cut {} bytes, removed {} segments, {} us",
            r.log, r.bytes_scanned, r.frames_scanned, r.scanned_from, r.end_pos, r.bytes_cut, r.segments_removed, r.elapsed_us
        );
    }
    let registration = server.engine().registration();
    // The registration is told only when it was cut short: it then costs something.
    let cut = if registration.is_cut() { format!("; {registration}") } else { String::new() };
    if let Some(addr) = server.kafka_addr() {
        eprintln!("strom: kafka listener on {addr}");
    }
    eprintln!("strom: serving on {}, data dir {}{cut}", server.local_addr(), args.data_dir.display());
    let waited = loop {
        match signals.wait() {
            Ok(Signal::SIGUSR1) => {
                for (core, metrics) in server.metrics().iter().enumerate() {
                    eprintln!("strom: metrics core {core}: {metrics}");
                }
            }
            other => break other,
        }
    };
    match waited {
        Ok(signal) => eprintln!("strom: stopping ({signal})"),
        Err(e) => eprintln!("strom: stopping (waiting for a signal failed: {e})"),
    }
    server.shutdown().map_err(|e| e.to_string())?;
    waited.map(|_| ()).map_err(|e| format!("waiting for SIGINT or SIGTERM: {e}"))
}

/// A server-wide limit: `default`, `-1` and `unlimited` are all no limit.
fn server_limit(setting: Option<cli::topic::Setting>) -> Option<u64> {
    setting.and_then(|s| s.0).filter(|&v| v != strom::catalog::UNLIMITED)
}
