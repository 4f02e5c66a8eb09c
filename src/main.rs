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
    }
}
