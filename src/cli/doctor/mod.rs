//! `strom doctor`: checks this machine and a data directory against what
//! `strom serve` needs, and prints, one line per check, what it found and,
//! when something is wrong, what to change. The start-up probes
//! (`strom::platform`) refuse to start with one cause; doctor runs every
//! check, including those that only cost speed (memlock, open files, CPUs)
//! and a measurement of the disk, so an operator fixes everything at once.
//!
//! - [`system`]: kernel, io_uring (sysctls, opcodes), seccomp, memlock,
//!   open files, CPUs;
//! - [`disk`]: the data directory's filesystem, an O_DIRECT + fdatasync
//!   probe, and the disk's durable write ceiling (`strom::ceiling`).
mod disk;
mod system;

use std::path::PathBuf;

use clap::Args;
use serde_json::{Value, json};
use strom::config::EngineConfig;
use strom::server::ServerConfig;

#[derive(Args)]
pub struct DoctorArgs {
    /// The data directory to check (its filesystem, O_DIRECT, the disk's speed);
    /// created for the checks and removed again if it did not exist. Default:
    /// the configuration's `data_dir`, else the current directory.
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// The `strom serve` configuration file whose settings to check against
    /// (memlock: what its cores and buffers register), with the STROM_*
    /// variables over it as serve takes them; without one, the defaults and
    /// the variables.
    #[arg(long, env = "STROM_CONFIG")]
    pub config: Option<PathBuf>,
    /// Seconds of the disk measurement (O_DIRECT 1 MiB writes + fdatasync).
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u64).range(1..=600))]
    pub seconds: u64,
    /// Print one JSON object (every check, with its figures) instead of lines.
    #[arg(long)]
    pub json: bool,
}

/// How a check came out. Only `Fail` makes doctor exit non-zero: a warning
/// costs speed or headroom, a failure stops `strom serve` or its durability.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    Ok,
    Warn,
    Fail,
}

impl Status {
    fn as_str(self) -> &'static str {
        match self {
            Status::Ok => "ok",
            Status::Warn => "warn",
            Status::Fail => "fail",
        }
    }
}

/// One check's outcome: what was found, and for a warning or a failure
/// what to change (a command or a setting).
#[derive(Debug, Clone)]
pub struct Check {
    pub name: &'static str,
    pub status: Status,
    pub found: String,
    pub fix: Option<String>,
    /// Figures for machines (`--json`): bytes, microseconds, counts.
    pub figures: Value,
}

impl Check {
    fn ok(name: &'static str, found: impl Into<String>) -> Check {
        Check { name, status: Status::Ok, found: found.into(), fix: None, figures: Value::Null }
    }

    fn warn(name: &'static str, found: impl Into<String>, fix: impl Into<String>) -> Check {
        Check { name, status: Status::Warn, found: found.into(), fix: Some(fix.into()), figures: Value::Null }
    }

    fn fail(name: &'static str, found: impl Into<String>, fix: impl Into<String>) -> Check {
        Check { name, status: Status::Fail, found: found.into(), fix: Some(fix.into()), figures: Value::Null }
    }

    fn with_figures(mut self, figures: Value) -> Check {
        self.figures = figures;
        self
    }

    /// `status  name  found -- fix: what to change`, one line: newlines in
    /// a probe's message would break a reader that splits on them.
    fn line(&self) -> String {
        let mut line = format!("{:<4}  {:<15}  {}", self.status.as_str(), self.name, self.found);
        if let Some(fix) = &self.fix {
            line.push_str(" -- fix: ");
            line.push_str(fix);
        }
        line.replace('\n', " ")
    }

    fn to_json(&self) -> Value {
        json!({ "name": self.name, "status": self.status.as_str(), "found": self.found, "fix": self.fix, "figures": self.figures })
    }
}

/// The names of every check, in the order they run and print. Tests and
/// scripts may rely on each being present, whatever its outcome.
pub const CHECK_NAMES: [&str; 10] =
    ["kernel", "io_uring_sysctl", "io_uring", "seccomp", "memlock", "open_files", "cpus", "filesystem", "o_direct", "disk"];

/// Runs every check, prints them, and says whether any failed (the exit
/// code). A configuration that does not load is a failure of its own,
/// printed before anything runs.
pub fn doctor(args: &DoctorArgs) -> Result<bool, String> {
    let (config_dir, engine, server) = super::config::serve_configs(args.config.as_deref())?;
    let data_dir = args.data_dir.clone().or(config_dir).unwrap_or_else(|| PathBuf::from("."));
    let checks = run_checks(&data_dir, args.seconds, &engine, &server);
    assert!(checks.iter().map(|c| c.name).eq(CHECK_NAMES), "every check, in order");
    let failed = checks.iter().any(|c| c.status == Status::Fail);
    if args.json {
        let out = json!({ "data_dir": data_dir.display().to_string(), "failed": failed,
            "checks": checks.iter().map(Check::to_json).collect::<Vec<_>>() });
        println!("{out}");
    } else {
        for check in &checks {
            println!("{}", check.line());
        }
    }
    Ok(failed)
}

fn run_checks(data_dir: &std::path::Path, seconds: u64, engine: &EngineConfig, server: &ServerConfig) -> Vec<Check> {
    // io_uring is set up once, and its outcome read by the sysctl and seccomp
    // checks: either may be why it fails.
    let ring = strom::platform::probe_io_uring().map_err(|e| e.to_string());
    let mut checks = vec![
        system::kernel(),
        system::io_uring_sysctl(ring.is_ok()),
        system::io_uring(&ring),
        system::seccomp(ring.is_ok()),
        system::memlock(engine, server),
        system::open_files(),
        system::cpus(),
    ];
    // Last, as the slowest: the disk measurement runs for --seconds.
    checks.extend(disk::data_dir_checks(data_dir, seconds));
    checks
}

#[cfg(test)]
mod tests {
    use super::*;

    // Proves: a line carries status, name and finding, and the fix only for
    // warn and fail, on one line even when a message held a newline.
    #[test]
    fn lines_have_status_name_found_and_fix() {
        assert_eq!(Check::ok("kernel", "Linux 6.8").line(), "ok    kernel           Linux 6.8");
        let warn = Check::warn("memlock", "8 MiB\nof 90", "ulimit -l 92160").line();
        assert_eq!(warn, "warn  memlock          8 MiB of 90 -- fix: ulimit -l 92160");
        let json = Check::fail("disk", "x", "y").with_figures(json!({ "a": 1 })).to_json();
        assert_eq!(json["status"], "fail");
        assert_eq!(json["fix"], "y");
        assert_eq!(json["figures"]["a"], 1);
        assert_eq!(Check::ok("cpus", "2").to_json()["fix"], Value::Null);
    }
}
