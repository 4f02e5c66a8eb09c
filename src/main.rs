//! The `strom` binary: the broker, its clients and its offline tools.
mod cli;

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};
use cli::topic::TopicCmd;
use strom::config::EngineConfig;
use strom::io::uring::UringIo;

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
    /// partitions, or every byte of an archive file (read-only; exits
    /// non-zero on corruption, naming the position).
    Inspect {
        /// The data directory, or an archive file (told apart by its magic).
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
    /// cleanly (acknowledging in-flight writes and checkpointing). SIGHUP
    /// reads the --config file again and applies what can change live;
    /// SIGUSR1 prints each core's metrics to stderr (the Metrics api serves
    /// them too).
    // Boxed: its settings make it by far the largest command.
    Serve(Box<cli::serve::ServeArgs>),
    /// Check a `strom serve` config file, or print one with every default.
    Config {
        #[command(subcommand)]
        cmd: cli::config::ConfigCmd,
    },
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
    /// A live view of a running broker, like top: per core and in total,
    /// requests/s, MB/s in and out; per stage, latency percentiles over the
    /// last interval. --once (or stdout not a terminal) prints one snapshot.
    Stat(cli::stat::StatArgs),
    /// Write one partition's records, in offset order, as a Franz stream
    /// directory (payloads, offsets, indices); keys, headers and timestamps are dropped.
    Export(cli::export::ExportArgs),
    /// Append a Franz stream directory to a partition, checked whole first
    /// (creating the topic with the stream's indices if it does not exist).
    Import(cli::import::ImportArgs),
    /// Follow a topic on one server live and keep a downsampled copy on
    /// another (every Nth record, or the last of each time bucket),
    /// resuming exactly where it stopped after any restart.
    Mirror(cli::mirror::MirrorArgs),
    /// Pack a topic's records (every partition, to its end as the archive
    /// starts) into one checksummed archive file, from a running server.
    Archive(cli::archive::ArchiveArgs),
}

#[derive(Args, Clone)]
struct ConnArgs {
    /// The broker's address: HOST[:PORT] (port 7070 if none), such as localhost or 127.0.0.1:7070.
    #[arg(long, env = "STROM_ADDR", default_value = ADDR_DEFAULT, global = true)]
    addr: String,
    /// The token to authenticate with, for a server with authentication on (prefer STROM_TOKEN: a flag shows in `ps`).
    #[arg(long, env = "STROM_TOKEN", hide_env_values = true, global = true)]
    token: Option<String>,
}

fn main() -> ExitCode {
    let cli: Cli = cli::config::parse();
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into());
    let log = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    match &cli.cmd {
        Cmd::Serve(args) if args.log_format == "json" => log.json().init(),
        _ => log.init(),
    }
    let (cmd, result) = match cli.cmd {
        Cmd::Inspect { dir } if strom::archive::is_archive(&dir) => ("inspect", cli::inspect_archive::inspect(&dir)),
        Cmd::Inspect { dir } => ("inspect", inspect(&dir)),
        Cmd::Recover { dir, cores } => ("recover", recover(&dir, cores).map_err(|e| e.to_string())),
        Cmd::Serve(args) => ("serve", cli::serve::serve(&args)),
        Cmd::Config { cmd } => ("config", cli::config::run(&cmd)),
        Cmd::Topic { conn, cmd } => (cmd.name(), cli::topic::run(cmd, || cli::connect(&conn))),
        Cmd::Produce(args) => ("produce", cli::produce::produce(&args)),
        Cmd::Consume(args) => ("consume", cli::consume::consume(&args)),
        Cmd::Group { conn, cmd } => ("group", cli::group::run(&conn, &cmd)),
        Cmd::Stat(args) => ("stat", cli::stat::stat(&args)),
        Cmd::Export(args) => ("export", cli::export::export(&args)),
        Cmd::Import(args) => ("import", cli::import::import(&args)),
        Cmd::Mirror(args) => ("mirror", cli::mirror::mirror(&args)),
        Cmd::Archive(args) => ("archive", cli::archive::archive(&args)),
        // A failed check is a finding, printed with the rest, not an error line.
        Cmd::Doctor(args) => {
            return match cli::doctor::doctor(&args) {
                Ok(failed) => {
                    if failed {
                        ExitCode::FAILURE
                    } else {
                        ExitCode::SUCCESS
                    }
                }
                Err(e) => {
                    eprintln!("strom doctor: {e}");
                    ExitCode::FAILURE
                }
            };
        }
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
