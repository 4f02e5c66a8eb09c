//! loadgen: drives a Strom broker and reports what it measured.
//!
//! Three targets: the embedded engine in-process (`--embedded`), the same
//! engine behind an in-process server driven over loopback TCP
//! (`--embedded --net`, what measurements use: one command measures the
//! whole path), or a running `strom serve` (`--addr`). Producers pipeline
//! RecordBatches for `--duration` seconds; afterwards every acknowledged
//! record is read back and verified, and the run fails if any is missing
//! or damaged. The full load generator (open loop, end-to-end latency,
//! JSON and HDR output) is its own issue.
use std::path::PathBuf;

use clap::Parser;
use hdrhistogram::Histogram;
use strom::config::{EngineConfig, FsyncPolicy};

mod consumer;
mod embedded;
mod net;
mod producer;
mod records;
mod report;
mod verify;

#[derive(Parser, Debug)]
#[command(about = "Strom's load generator")]
pub struct Args {
    /// Run an in-process broker on a temporary data directory.
    #[arg(long, conflicts_with = "addr")]
    embedded: bool,
    /// With --embedded: serve the in-process engine on 127.0.0.1 (a free
    /// port) and drive it over loopback TCP, as a client would.
    #[arg(long, requires = "embedded")]
    net: bool,
    /// Drive a running `strom serve` at this address over TCP.
    #[arg(long, value_name = "HOST:PORT")]
    addr: Option<String>,
    /// Producers connect to the direct address of the core that owns their
    /// partitions (from Metadata) instead of the main listener, where the
    /// kernel picks the core and requests for other cores are forwarded.
    #[arg(long)]
    direct: bool,
    /// Threads that tail the partitions over TCP with long-poll fetches
    /// while the producers run.
    #[arg(long, default_value_t = 0)]
    consumers: usize,
    /// The topic written; created with --partitions if absent.
    #[arg(long, default_value = "loadgen")]
    topic: String,
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
    /// The embedded broker's fsync policy (a server at --addr keeps its own).
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
    if let Err(e) = check_args(&args) {
        eprintln!("loadgen: {e}");
        std::process::exit(2);
    }
    let result = if args.embedded && !args.net { embedded::run(&args) } else { net::run(&args) };
    if let Err(e) = result {
        eprintln!("loadgen: {e}");
        std::process::exit(1);
    }
}

/// Refuses combinations that would measure something other than asked.
fn check_args(args: &Args) -> Result<(), String> {
    let networked = args.net || args.addr.is_some();
    if !args.embedded && args.addr.is_none() {
        return Err("choose a target: --embedded [--net] or --addr HOST:PORT".into());
    }
    if !networked && (args.direct || args.consumers > 0) {
        return Err("--direct and --consumers drive a server over TCP: add --net (or use --addr)".into());
    }
    if args.producers == 0 || args.partitions == 0 || args.inflight == 0 {
        return Err("--producers, --partitions and --inflight must be at least 1".into());
    }
    if networked && args.inflight > strom::client::INFLIGHT_MAX_DEFAULT {
        return Err(format!("--inflight over TCP is at most {}, the server's per-connection limit", strom::client::INFLIGHT_MAX_DEFAULT));
    }
    if args.consumers > args.partitions as usize {
        return Err(format!("--consumers {} is more than the {} partitions to tail", args.consumers, args.partitions));
    }
    if !(args.duration > 0.0 && args.duration.is_finite()) {
        return Err("--duration must be a positive number of seconds".into());
    }
    Ok(())
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

fn engine_config(args: &Args) -> EngineConfig {
    let mut cfg = EngineConfig { fsync: args.fsync, ..EngineConfig::default() };
    if let Some(c) = args.cores {
        cfg.cores = c;
        cfg.logs_on_create = c as u32;
    }
    cfg
}

fn print_recovery(reports: &[strom::log::recovery::RecoveryReport]) {
    for r in reports {
        println!("recovered log {}: scanned {} bytes, cut {} in {} us", r.log, r.bytes_scanned, r.bytes_cut, r.elapsed_us);
    }
}

/// Latencies in microseconds, 1 us to 60 s at 3 significant digits; values
/// past the top are clamped (`saturating_record`), not dropped.
fn new_latency_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 60_000_000, 3).expect("constant bounds are valid")
}
