//! Tests that need what a machine may not give (root, loop devices,
//! cgroups, a cargo feature) say so and are reported as ignored, by name and
//! with the reason, never as a pass and never as a failure:
//!
//! ```text
//! test power_cuts_lose_nothing_acknowledged ... ignored (needs root for losetup and mount: run the test command as root)
//! test result: ok. 0 passed; 0 failed; 1 ignored; 0 measured; 0 filtered out
//! ```
//!
//! libtest decides `#[ignore]` at compile time, and whether this process is
//! root or has loop devices is known only when it runs (one target/ may be
//! built by root and run by a user, or the other way round), so a binary
//! with such tests has `harness = false` in Cargo.toml and runs them
//! through [`main`], on libtest-mimic: the same command-line (filters,
//! `--list`, `--nocapture`, `--test-threads`) and the same output as
//! libtest. Each test is a [`trial`] naming what it needs; what is missing
//! is looked up when the binary starts, before any test runs.
use libtest_mimic::{Arguments, Completion, Trial};

/// What a test may need beyond a writable target/ on a real filesystem.
#[derive(Clone, Copy, Debug)]
pub enum Need {
    /// A journaled ext4 in a loop device ([`super::loopfs::LoopFs`]): root,
    /// /dev/loop-control, losetup, mkfs.ext4, e2fsck, mount.
    LoopFs,
    /// A memory and write-throttling cgroup
    /// ([`super::cgroup::Limits::memory_and_io`]): root and the memory and
    /// blkio (v1) or io (v2) controllers.
    IoCgroup,
    /// The server built with failpoints (`--features strom/failpoints`, as
    /// README's test command has it).
    Failpoints,
    /// Programs on PATH (each must run with `--version`), and the package
    /// that has them.
    Tools(&'static [&'static str], &'static str),
    /// A tmpfs at /dev/shm, to show that one is refused as a data directory.
    Tmpfs,
    /// The Python virtual environment .ci/run makes at [`KAFKA_VENV_PYTHON`],
    /// with kafka-python and confluent-kafka.
    KafkaVenv,
}

/// The Python of the Kafka clients' virtual environment (see .ci/run).
pub const KAFKA_VENV_PYTHON: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/target/kafka-venv/bin/python");

impl Need {
    /// Why this need cannot be met here, if it cannot.
    pub fn missing(self) -> Option<String> {
        match self {
            Need::LoopFs => super::loopfs::LoopFs::available().err(),
            // A real probe: make the cgroup and remove it again.
            Need::IoCgroup => {
                super::cgroup::Limits::memory_and_io("strom-probe", 1 << 30).err().map(|e| format!("needs memory and io cgroups: {e}"))
            }
            Need::Failpoints => {
                (!cfg!(feature = "failpoints")).then(|| "needs failpoints: run with `--features strom/failpoints`".to_string())
            }
            Need::Tools(tools, package) => tools
                .iter()
                .find(|t| std::process::Command::new(t).arg("--version").output().is_err())
                .map(|t| format!("needs {t} (package {package})")),
            Need::Tmpfs => (strom::platform::fs_type_name(std::path::Path::new("/dev/shm")).ok().as_deref() != Some("tmpfs"))
                .then(|| "needs a tmpfs at /dev/shm".to_string()),
            Need::KafkaVenv => {
                let probe = std::process::Command::new(KAFKA_VENV_PYTHON).args(["-c", "import kafka, confluent_kafka"]).output();
                (!probe.is_ok_and(|o| o.status.success()))
                    .then(|| "needs target/kafka-venv with kafka-python and confluent-kafka (.ci/run installs them)".to_string())
            }
        }
    }
}

/// Whether this process runs as root (its effective user; /proc/self belongs
/// to it).
pub fn is_root() -> bool {
    std::fs::metadata("/proc/self").map(|m| std::os::unix::fs::MetadataExt::uid(&m) == 0).unwrap_or(false)
}

/// A test named `name` that runs `run` when every one of `needs` is met
/// here, and otherwise is reported as ignored with the first reason.
pub fn trial(name: &str, needs: &[Need], run: fn()) -> Trial {
    match needs.iter().find_map(|n| n.missing()) {
        None => Trial::test(name, move || {
            run();
            Ok(())
        }),
        Some(why) => Trial::ignorable_test(name, move || Ok(Completion::ignored_with(why))),
    }
}

/// Runs `trials` as libtest would (arguments from the command line) and
/// exits with its status: 101 if any failed.
pub fn main(trials: Vec<Trial>) -> ! {
    libtest_mimic::run(&Arguments::from_args(), trials).exit()
}
