//! `strom stat`: the live view, read as a script reads it (`--once`),
//! against a real `strom serve` under load.
mod harness;

use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use harness::serve::Serve;
use harness::test_dir;

const CORES: usize = 2;
const PARTITIONS: u32 = 4;
/// The stages a server reports, in its order (docs/PROTOCOL.md, Stats).
const STAGES: [&str; 8] = ["receive", "append", "write", "fsync", "ack", "send", "total", "fetch"];

/// Runs the binary: (exit success, stdout, stderr).
fn strom(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_strom")).args(args).output().expect("run strom");
    (out.status.success(), String::from_utf8_lossy(&out.stdout).into_owned(), String::from_utf8_lossy(&out.stderr).into_owned())
}

/// The whitespace-separated fields of the first line whose first field is
/// `first`, in the core table (`stages` false) or in the stage table below
/// its `stage` header (both tables have a `total` row).
fn row<'a>(text: &'a str, stages: bool, first: &str) -> Vec<&'a str> {
    let split = text.find("\nstage ").unwrap_or_else(|| panic!("no stage table in:\n{text}"));
    let table = if stages { &text[split..] } else { &text[..split] };
    let fields = table.lines().map(|l| l.split_whitespace().collect::<Vec<_>>()).find(|f| f.first() == Some(&first));
    fields.unwrap_or_else(|| panic!("no row {first:?} in:\n{text}"))
}

fn num(text: &str, field: &str) -> f64 {
    field.parse().unwrap_or_else(|e| panic!("{field:?} is not a number ({e}) in:\n{text}"))
}

/// Produces to every partition and fetches from the start, round robin,
/// until `stop`: requests, log bytes in and served bytes out on every interval.
fn load(serve: &Serve, stop: Arc<AtomicBool>) -> std::thread::JoinHandle<u64> {
    let mut c = serve.client();
    std::thread::spawn(move || {
        let mut rounds = 0u64;
        let value = [b'v'; 1000];
        while !stop.load(Ordering::Relaxed) {
            let p = (rounds % u64::from(PARTITIONS)) as u32;
            c.produce_values("s", p, &[&value, &value, &value, &value]).expect("produce");
            c.fetch("s", p, 0, 64 << 10, Duration::ZERO).expect("fetch");
            rounds += 1;
        }
        rounds
    })
}

// Proves: `strom stat --once` against a loaded server prints a row for
// every core and a total, with requests/s, network MB/s in and out, log
// MB/s and served MB/s above zero
// in the total while loaded, and every stage row with its numbers in order
// (p50 <= p99 <= p99.9 <= max), produce stages having recorded requests in
// the interval, each core's rows summing to the server's (they were reset at its start, so the counts are the
// interval's: a second snapshot with the load stopped shows none; its own
// Metrics and Stats requests are requests, so req/s is not checked there).
#[test]
fn once_shows_cores_total_and_stages_under_load() {
    let dir = test_dir("stat-once");
    let serve = Serve::on(&dir).cores(CORES).start();
    serve.client().create_topic("s", PARTITIONS).unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let loader = load(&serve, stop.clone());
    let addr = serve.addr.to_string();
    let (ok, text, err) = strom(&["stat", "--once", "--interval", "1000", "--addr", &addr]);
    stop.store(true, Ordering::Relaxed);
    assert!(loader.join().unwrap() > 0, "the load ran");
    assert!(ok, "stat failed: {err}");
    assert!(!text.contains('\x1b'), "plain text, no ANSI, for a script:\n{text}");

    let header = row(&text, false, "core");
    assert_eq!(header, ["core", "req/s", "net_in", "net_out", "log_in", "served", "appends/s", "conns"]);
    for core in 0..CORES {
        let r = row(&text, false, &core.to_string());
        assert_eq!(r.len(), header.len(), "{text}");
        assert!(r[1..].iter().all(|f| num(&text, f) >= 0.0), "{text}");
    }
    let total = row(&text, false, "total");
    for (i, what) in
        [(1, "requests/s"), (2, "network MB/s in"), (3, "network MB/s out"), (4, "log MB/s"), (5, "served MB/s"), (6, "appends/s")]
    {
        assert!(num(&text, total[i]) > 0.0, "{what} should be above zero under load:\n{text}");
    }
    // Each produce carries 4 KB of values and each fetch returns at least that: the network figures are not the log's.
    assert!(num(&text, total[2]) >= num(&text, total[4]) * 0.5, "network in is about the log's bytes:\n{text}");
    assert!(num(&text, total[7]) >= 2.0, "the loader's and stat's connections are open:\n{text}");

    assert_eq!(row(&text, true, "stage"), ["stage", "count", "p50_us", "p99_us", "p999_us", "max_us"]);
    for stage in STAGES {
        let r = row(&text, true, stage);
        let n: Vec<u64> = r[1..].iter().map(|f| f.parse().unwrap_or_else(|e| panic!("{f:?}: {e} in\n{text}"))).collect();
        assert_eq!(n.len(), 5, "{text}");
        assert!(n[1] <= n[2] && n[2] <= n[3] && n[3] <= n[4], "{stage}: p50 <= p99 <= p99.9 <= max:\n{text}");
        if ["receive", "write", "total", "fetch"].contains(&stage) {
            assert!(n[0] > 0, "{stage} recorded requests in the interval:\n{text}");
        }
    }

    // Each core's rows (Stats version 2) add up to the server's: both were read at the same moment on each core.
    let stage_part = &text[text.find("\nstage ").unwrap()..];
    let per_core: Vec<Vec<&str>> =
        stage_part.lines().map(|l| l.split_whitespace().collect::<Vec<_>>()).filter(|f| f.len() == 7 && f[1] != "stage").collect();
    for stage in ["total", "fetch"] {
        let cores: u64 = per_core.iter().filter(|f| f[1] == stage).map(|f| f[2].parse::<u64>().unwrap()).sum();
        assert_eq!(cores, row(&text, true, stage)[1].parse::<u64>().unwrap(), "{stage}: the cores' counts sum to the server's:\n{text}");
    }
    assert!(per_core.iter().all(|f| f[0].parse::<usize>().is_ok_and(|c| c < CORES)), "{text}");

    // Unloaded, the next interval's rows are empty: each reading reset them.
    let (ok, idle, err) = strom(&["stat", "--once", "--interval", "200", "--addr", &addr]);
    assert!(ok, "stat failed: {err}");
    assert_eq!(row(&idle, false, "total")[6], "0.0", "no appends/s unloaded:\n{idle}");
    for stage in ["send", "total"] {
        assert_eq!(row(&idle, true, stage)[1], "0", "{stage}: no produce in the interval:\n{idle}");
    }
    drop(serve);
    std::fs::remove_dir_all(&dir).unwrap();
}

// Proves: --interval outside 100..=3600000 ms, or not a number, is refused
// before any connection, with a message naming the option; and a server
// that is not there is a one-line error naming the command.
#[test]
fn interval_is_validated() {
    for bad in ["0", "99", "3600001", "-5", "soon"] {
        let (ok, _, err) = strom(&["stat", "--once", &format!("--interval={bad}"), "--addr", "127.0.0.1:1"]);
        assert!(!ok, "--interval {bad} was accepted");
        assert!(err.contains("--interval"), "--interval {bad}: {err}");
    }
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    drop(listener);
    let (ok, _, err) = strom(&["stat", "--once", "--interval", "100", "--addr", &addr]);
    assert!(!ok);
    assert!(err.starts_with("strom stat: "), "{err}");
}
