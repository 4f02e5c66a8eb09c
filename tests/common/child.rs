//! A `strom serve` child process, spawned and read until it says where it
//! serves; from then on a thread keeps every stderr line it prints (the
//! server says there why it stops acknowledging, and prints its counters).
//! One file for tests/server.rs, tests/abuse.rs and tests/support/serve.rs,
//! each including it with #[path] (not through common: a test that has
//! both common and support would load it twice).
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};

/// Spawns `cmd` (a `strom serve` command line, perhaps wrapped by a shell
/// that joins a cgroup first) with stderr piped, waits for its
/// "strom: serving on ADDR" line, and collects every stderr line as
/// `keep(line)`: the lines before it included. Panics, with the lines seen,
/// if the server ends before serving.
pub fn spawn_until_serving<T: Send + std::fmt::Debug + 'static>(
    cmd: &mut Command,
    keep: fn(String) -> T,
) -> (Child, SocketAddr, Arc<Mutex<Vec<T>>>) {
    let mut child = cmd.stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::piped()).spawn().expect("spawn strom serve");
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let mut seen = Vec::new();
    let addr = loop {
        let line = match lines.next() {
            Some(Ok(l)) => l,
            _ => panic!("strom serve ended before serving; stderr: {seen:?}"),
        };
        if let Some(rest) = line.strip_prefix("strom: serving on ") {
            let addr = rest.split(',').next().unwrap();
            break addr.parse().unwrap_or_else(|e| panic!("bad address in {line:?}: {e}"));
        }
        seen.push(keep(line));
    };
    let kept = Arc::new(Mutex::new(seen));
    let sink = kept.clone();
    std::thread::spawn(move || {
        for l in lines.map_while(|l| l.ok()) {
            sink.lock().unwrap().push(keep(l));
        }
    });
    (child, addr, kept)
}
