//! The `strom` binary: the engine's command line.
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use strom::config::EngineConfig;
use strom::io::uring::UringIo;

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
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()))
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    match cli.cmd {
        Cmd::Inspect { dir } => {
            let result = UringIo::new(64).and_then(|mut io| strom::inspect::inspect(&mut io, &dir, &EngineConfig::default()));
            match result {
                Ok(ins) => {
                    print!("{}", strom::inspect::render(&ins));
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("strom inspect: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        Cmd::Recover { dir, cores } => match recover(&dir, cores) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("strom recover: {e}");
                ExitCode::FAILURE
            }
        },
    }
}

fn recover(dir: &std::path::Path, cores: Option<usize>) -> strom::Result<()> {
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
