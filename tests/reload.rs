//! `strom serve --config FILE` reloads FILE on SIGHUP: the live settings
//! (connection limits, the default retention) change in place, the others
//! are logged as needing a restart, and a bad file changes nothing.
mod harness;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use harness::serve::{HANG, Serve};
use harness::{child, test_dir};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use strom::client::{Client, ClientError};
use strom::proto::ErrorCode;

fn write(path: &Path, text: &str) {
    std::fs::write(path, text).unwrap();
}

fn sighup(pid: u32) {
    kill(Pid::from_raw(pid as i32), Signal::SIGHUP).unwrap();
}

/// The JSON log lines (`--log-format json`) whose message is `message`.
fn events(lines: &[String], message: &str) -> Vec<serde_json::Value> {
    let parsed = lines.iter().filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok());
    parsed.filter(|v| v["fields"]["message"] == message).collect()
}

/// Sends SIGHUP and waits for the `n`th log line with `message` (counting
/// those before), which it returns.
fn reload(pid: u32, lines: impl Fn() -> Vec<String>, message: &str) -> serde_json::Value {
    let n = events(&lines(), message).len() + 1;
    sighup(pid);
    let deadline = Instant::now() + HANG;
    loop {
        if let Some(v) = events(&lines(), message).into_iter().nth(n - 1) {
            return v;
        }
        assert!(Instant::now() < deadline, "no {message:?} line after SIGHUP:\n{}", lines().join("\n"));
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn connect(addr: std::net::SocketAddr) -> Client {
    let mut c = Client::connect(addr).unwrap();
    c.set_timeout(Some(Duration::from_secs(30))).unwrap();
    c
}

fn refused_as_too_many(addr: std::net::SocketAddr) -> bool {
    match connect(addr).metadata(&[]) {
        Err(ClientError::Server { code, .. }) => code == ErrorCode::TooManyConnections,
        other => panic!("a new connection was not refused: {other:?}"),
    }
}

// Proves: SIGHUP lowering connections_max from 50 to 2 refuses a third new
// connection with TooManyConnections while the two open ones keep working,
// and logs the change with its old and new values; a file with an unknown
// key, a bad value or a limit the server refuses is itself refused, logged
// naming the file and the key, and the limit of 2 stays in force; raising
// it again lets new connections in.
#[test]
fn sighup_changes_connection_limits() {
    let dir = test_dir("reload-limits");
    let conf = dir.join("strom.toml");
    write(&conf, "connections_max = 50\n");
    let serve =
        Serve::on(&dir.join("data")).args(&["--config", conf.to_str().unwrap(), "--log-format", "json"]).env("RUST_LOG", "info").start();
    let lines = || serve.stderr();
    let (mut first, mut second) = (connect(serve.addr), connect(serve.addr));
    first.metadata(&[]).unwrap();
    second.metadata(&[]).unwrap();

    write(&conf, "connections_max = 2\n");
    let applied = reload(serve.pid(), lines, "reload applied");
    assert_eq!(applied["fields"]["applied"], "connections_max 50 -> 2", "{applied}");
    assert_eq!(applied["fields"]["file"], conf.to_str().unwrap(), "{applied}");
    assert!(refused_as_too_many(serve.addr));
    first.metadata(&[]).unwrap();
    second.metadata(&[]).unwrap();

    let broken = [
        ("connections_maxx = 50\n", "connections_maxx"),
        ("connections_max = \"many\"\n", "connections_max"),
        ("connections_max = 0\n", "connections_max"),
        ("connections_max = 20000\n", "connections_max 20000 is over 50"),
    ];
    for (text, key) in broken {
        write(&conf, text);
        let refused = reload(serve.pid(), lines, "reload refused, nothing changed");
        assert_eq!(refused["level"], "ERROR", "{refused}");
        assert_eq!(refused["fields"]["file"], conf.to_str().unwrap(), "{refused}");
        let error = refused["fields"]["error"].as_str().unwrap();
        assert!(error.contains(key) && error.contains(conf.to_str().unwrap()), "{text:?}: {error}");
        assert!(refused_as_too_many(serve.addr), "after {text:?}");
        first.metadata(&[]).unwrap();
    }

    write(&conf, "connections_max = 50\n");
    let applied = reload(serve.pid(), lines, "reload applied");
    assert_eq!(applied["fields"]["applied"], "connections_max 2 -> 50", "{applied}");
    let mut third = connect(serve.addr);
    third.metadata(&[]).unwrap();
    second.metadata(&[]).unwrap();
    let (status, _) = serve.stop(HANG);
    assert!(status.is_some_and(|s| s.success()));
}

// Proves: a changed `listen` is logged at warn as needing a restart, with
// its old and new address, beside a live setting applied from the same
// file, and the server keeps serving on its old address.
#[test]
fn sighup_logs_what_needs_a_restart() {
    let dir = test_dir("reload-listen");
    let free = || std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let (addr, other) = (free(), free());
    let conf = dir.join("strom.toml");
    let base = format!("data_dir = {:?}\ncores = 1\nlog_format = \"json\"\n", dir.join("data").to_str().unwrap());
    write(&conf, &format!("{base}listen = \"{addr}\"\n"));
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_strom"));
    cmd.args(["serve", "--config", conf.to_str().unwrap()]).env("RUST_LOG", "info").env_remove("STROM_FAILPOINT");
    let c = child::spawn_until(&mut cmd, "strom: serving on ").unwrap_or_else(|lines| panic!("serve ended:\n{}", lines.join("\n")));
    let mut server = ServerChild(c.child);
    let lines = || c.lines.lock().unwrap().iter().map(|(_, l)| l.clone()).collect::<Vec<_>>();

    write(&conf, &format!("{base}listen = \"{other}\"\nidle_timeout_ms = 60000\n"));
    let restart = reload(server.0.id(), lines, "reload: these settings changed but need a restart");
    assert_eq!(restart["level"], "WARN", "{restart}");
    assert_eq!(restart["fields"]["needs_restart"], format!("listen {addr} -> {other}"), "{restart}");
    let applied = events(&lines(), "reload applied");
    assert_eq!(applied.len(), 1, "{:?}", lines());
    assert_eq!(applied[0]["fields"]["applied"], "idle_timeout_ms 600000 -> 60000");
    connect(addr).metadata(&[]).expect("the old address still serves");

    kill(Pid::from_raw(server.0.id() as i32), Signal::SIGTERM).unwrap();
    assert!(server.0.wait().unwrap().success(), "serve did not stop cleanly:\n{}", lines().join("\n"));
}

/// Kills the child if the test ends without stopping it.
struct ServerChild(std::process::Child);

impl Drop for ServerChild {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn segments(data: &Path) -> Vec<PathBuf> {
    let log = data.join("log-0000");
    let files = std::fs::read_dir(log).unwrap().map(|e| e.unwrap().path());
    files.filter(|p| p.extension().is_some_and(|x| x == "seg")).collect()
}

// Proves: a topic without its own retention follows a new default
// retention_bytes from SIGHUP: its old segments, kept while the default was
// no limit, are deleted by the next retention passes.
#[test]
fn sighup_changes_the_default_retention() {
    let dir = test_dir("reload-retention");
    let (conf, data) = (dir.join("strom.toml"), dir.join("data"));
    write(&conf, "retention_bytes = -1\n");
    // The smallest segments (two write buffers) and frequent checkpoints: a
    // segment is deleted only once a checkpoint passed it.
    let serve = Serve::on(&data)
        .cores(1)
        .args(&["--config", conf.to_str().unwrap(), "--log-format", "json", "--segment-bytes", "2113536"])
        .args(&["--checkpoint-interval-bytes", "1048576"])
        .env("RUST_LOG", "info")
        .start();
    let mut client = serve.client();
    client.create_topic("events", 1).unwrap();
    let value = vec![b'v'; 60 << 10];
    // 48 batches of 240 KiB: about 11 MiB.
    for _ in 0..48 {
        client.produce_values("events", 0, &[&value, &value, &value, &value]).unwrap();
    }
    let before = segments(&data).len();
    assert!(before >= 5, "{before} segments for 11 MiB of 2 MiB segments");

    write(&conf, "retention_bytes = \"1MiB\"\n");
    let applied = reload(serve.pid(), || serve.stderr(), "reload applied");
    assert_eq!(applied["fields"]["applied"], "retention_bytes -1 -> 1048576", "{applied}");
    let deadline = Instant::now() + HANG;
    // Of about 11 MiB, 1 MiB is kept: all but the newest two segments go
    // (and any made ready ahead of need stay).
    while segments(&data).len() + 3 > before {
        assert!(Instant::now() < deadline, "retention left {} of {before} segments", segments(&data).len());
        std::thread::sleep(Duration::from_millis(100));
        // Appends let the checkpoint that retention waits for be written.
        client.produce_values("events", 0, &[b"tick"]).unwrap();
    }
    let start = client.describe_topic("events").unwrap().partitions[0].start_offset;
    assert!(start > 0, "the partition still starts at offset 0");
    let (status, _) = serve.stop(HANG);
    assert!(status.is_some_and(|s| s.success()));
}
