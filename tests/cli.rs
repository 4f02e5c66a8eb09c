//! The `strom` binary's commands, run as a user would.
mod harness;

use std::process::Command;

use harness::skip::{self, Need};
use harness::{batch, test_dir};
use strom::config::EngineConfig;
use strom::engine::Engine;

fn main() {
    skip::main(vec![
        skip::trial("tmpfs_data_dir_is_refused_with_the_fix", &[Need::Tmpfs], tmpfs_data_dir_is_refused_with_the_fix),
        skip::trial("recover_and_inspect_report_a_directory", &[], recover_and_inspect_report_a_directory),
        skip::trial("help_lists_every_command", &[], help_lists_every_command),
        skip::trial("produce_without_a_server_fails_clearly", &[], produce_without_a_server_fails_clearly),
        skip::trial("serve_refuses_a_held_directory_and_a_taken_port", &[], serve_refuses_a_held_directory_and_a_taken_port),
        skip::trial("bad_addresses_read_as_sentences", &[], bad_addresses_read_as_sentences),
    ]);
}

fn strom(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_strom")).args(args).output().expect("run strom");
    (out.status.success(), String::from_utf8_lossy(&out.stdout).into_owned(), String::from_utf8_lossy(&out.stderr).into_owned())
}

// Proves: a data directory on tmpfs is refused at start-up with one line
// naming the cause and the fix, and a non-zero exit.
fn tmpfs_data_dir_is_refused_with_the_fix() {
    let shm = std::path::Path::new("/dev/shm");
    let dir = shm.join(format!("strom-cli-{}", std::process::id()));
    let (ok, _, err) = strom(&["recover", dir.to_str().unwrap()]);
    let _ = std::fs::remove_dir_all(&dir);
    assert!(!ok, "strom accepted a tmpfs data directory");
    let line = err.lines().find(|l| l.starts_with("strom recover:")).expect("an error line");
    assert!(line.contains("tmpfs") && line.contains("ext4"), "the line does not name cause and fix: {line}");
}

// Proves: `strom recover` opens a directory whose logs must be scanned
// (checkpoints removed), reports what it scanned, and leaves it clean;
// `strom inspect` summarises it.
fn recover_and_inspect_report_a_directory() {
    let dir = test_dir("cli-recover");
    let cfg = EngineConfig { cores: 1, logs_on_create: 1, pin_cores: false, ..EngineConfig::default() };
    let e = Engine::open(&dir, cfg).unwrap();
    e.create_topic("events", 2).unwrap();
    for i in 0..10 {
        e.append("events", i % 2, batch("x", 3, 1_700_000_000_000 + i as i64)).unwrap();
    }
    e.shutdown().unwrap();
    std::fs::remove_file(strom::log::segment::log_dir(&dir, 0).join(strom::log::checkpoint::FILE_NAME)).unwrap();
    let path = dir.to_str().unwrap();
    let (ok, out, err) = strom(&["recover", path, "--cores", "1"]);
    assert!(ok, "recover failed: {err}");
    assert!(out.contains("opened in") && !out.contains(": 0 bytes scanned"), "recover did not scan the log: {out}");
    let (ok, out, _) = strom(&["recover", path]);
    assert!(ok && out.contains(": 0 bytes scanned"), "a clean stop left a tail: {out}");
    let (ok, out, err) = strom(&["inspect", path]);
    assert!(ok, "inspect failed: {err}");
    assert!(out.contains("events"), "inspect does not name the topic: {out}");
}

// Proves: `strom --help` lists every command, offline tools and clients alike.
fn help_lists_every_command() {
    let (ok, out, err) = strom(&["--help"]);
    assert!(ok, "--help failed: {err}");
    let commands = ["inspect", "recover", "serve", "config", "doctor", "stat", "query", "topic", "produce", "consume", "group"];
    for cmd in commands.into_iter().chain(["export", "import", "mirror", "archive"]) {
        assert!(out.lines().any(|l| l.trim_start().starts_with(cmd)), "--help does not list {cmd}: {out}");
    }
}

// Proves: `strom produce` to an address where nothing listens fails with
// one line naming the command and the address, and a non-zero exit.
fn produce_without_a_server_fails_clearly() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    drop(listener);
    let (ok, _, err) = strom(&["produce", "events", "--addr", &addr]);
    assert!(!ok, "produce succeeded with no server");
    let line = err.lines().find(|l| l.starts_with("strom produce:")).expect("an error line");
    assert!(line.contains(&addr) && line.contains("connect"), "the line does not say what failed: {line}");
}

// Proves: `strom serve` refuses, with one line and a non-zero exit, a
// directory another server holds and an address another process listens on.
fn serve_refuses_a_held_directory_and_a_taken_port() {
    let dir = test_dir("cli-serve-held");
    let cfg = EngineConfig { cores: 1, logs_on_create: 1, pin_cores: false, ..EngineConfig::default() };
    let held = Engine::open(&dir, cfg).unwrap();
    let (ok, _, err) = strom(&["serve", "--data-dir", dir.to_str().unwrap(), "--listen", "127.0.0.1:0", "--cores", "1"]);
    assert!(!ok, "a second process served a held directory");
    let line = err.lines().find(|l| l.starts_with("strom serve:")).expect("an error line");
    assert!(line.contains("in use"), "the line does not say why: {line}");
    held.shutdown().unwrap();

    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let (ok, _, err) = strom(&["serve", "--data-dir", dir.to_str().unwrap(), "--listen", &addr, "--cores", "1"]);
    assert!(!ok, "served on a port another socket listens on");
    let line = err.lines().find(|l| l.starts_with("strom serve:")).expect("an error line");
    assert!(line.contains(&addr) && line.contains("in use"), "the line does not name the address and the cause: {line}");
    // One sentence, the errno named once: "listen on ADDR failed: Address already in use (EADDRINUSE); ...".
    assert!(line.contains(&format!("listen on {addr} failed: Address already in use (EADDRINUSE)")), "{line}");
    assert!(!line.contains("os error") && !line.contains("errno"), "{line}");
}

// Proves: an address that cannot be used is refused with a sentence
// naming the part at fault, before anything is sent: a host that does not
// resolve (.invalid never does, RFC 6761) and a port that is not a number.
fn bad_addresses_read_as_sentences() {
    let (ok, _, err) = strom(&["consume", "events", "--addr", "no-such-host.invalid"]);
    assert!(!ok, "consume succeeded with an unresolvable host");
    let line = err.lines().find(|l| l.starts_with("strom consume:")).expect("an error line");
    assert_eq!(
        line,
        "strom consume: cannot find the host \"no-such-host.invalid\" of --addr (check the name, or give an IP address such as 127.0.0.1)"
    );
    let (ok, _, err) = strom(&["topic", "list", "--addr", "127.0.0.1:seventy"]);
    assert!(!ok);
    assert!(err.contains("the port in --addr \"127.0.0.1:seventy\" must be a number from 0 to 65535"), "{err}");
}
