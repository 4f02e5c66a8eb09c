//! benches/peers/redis.sh, the Redis Streams peer beside loadgen, checked
//! without Redis: it parses, its help says what it compares, and bad
//! arguments are refused before it installs or starts anything. Running it
//! for real takes Redis, root or an installed Redis, and a minute or more:
//! benches/peers/README.md.

use std::path::PathBuf;
use std::process::{Command, Output};

fn script() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("benches/peers/redis.sh")
}

fn bash(args: &[&str]) -> Output {
    Command::new("bash").arg(script()).args(args).output().expect("run bash")
}

// Proves: the script is valid bash (a syntax error anywhere in it fails
// here, in CI, rather than on the first person who runs the benchmark).
#[test]
fn script_parses() {
    let out = Command::new("bash").arg("-n").arg(script()).output().expect("run bash -n");
    assert!(out.status.success(), "bash -n: {}", String::from_utf8_lossy(&out.stderr));
}

// Proves: --help exits 0 and names the peer's durability setting, both
// shapes and the flag that forbids installing, so a reader knows what a
// run will compare and change before running it.
#[test]
fn help_says_what_it_compares() {
    let out = bash(&["--help"]);
    let help = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "--help failed: {}", String::from_utf8_lossy(&out.stderr));
    for needle in ["appendfsync always", "XADD", "loadgen", "one ", "pipelined", "--no-install", "--duration"] {
        assert!(help.contains(needle), "--help does not mention {needle:?}:\n{help}");
    }
}

// Proves: an unknown shape or a bad duration is refused with exit code 2
// and a sentence naming it, before Redis is looked for or installed.
#[test]
fn bad_arguments_are_refused_first() {
    for (args, says) in [
        (&["--shape", "sideways"][..], "unknown shape 'sideways'"),
        (&["--duration", "0"][..], "--duration must be"),
        (&["--frobnicate"][..], "unknown argument '--frobnicate'"),
    ] {
        let out = bash(args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(stderr.contains(says), "{args:?}: expected {says:?} in {stderr:?}");
        assert!(!stderr.contains("installing"), "{args:?} went on to install Redis: {stderr}");
    }
}
