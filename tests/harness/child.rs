//! A child process read until it says it is ready; from then on a thread
//! keeps every stderr line it prints, each with when the test read it (the
//! server says there why it stops acknowledging, and prints its counters).
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Instant;

/// Every stderr line a child printed so far, with when it was read.
pub type Lines = Arc<Mutex<Vec<(Instant, String)>>>;

/// A running child and the thread collecting its stderr.
pub struct Collected {
    pub child: Child,
    /// The rest of the line that said the child was ready, after `prefix`.
    pub ready: String,
    pub lines: Lines,
    /// Ends when the child's stderr closes: at its exit.
    pub reader: JoinHandle<()>,
}

/// Spawns `cmd` with stderr piped (stdin and stdout null) and reads its
/// stderr until a line starts with `prefix`, keeping the lines before it.
/// Err holds every line it printed if it ended first (it has been reaped).
pub fn spawn_until(cmd: &mut Command, prefix: &str) -> Result<Collected, Vec<String>> {
    let mut child = cmd.stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::piped()).spawn().expect("spawn the child");
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let mut seen = Vec::new();
    let ready = loop {
        let Some(Ok(line)) = lines.next() else {
            let _ = child.wait();
            return Err(seen.into_iter().map(|(_, l)| l).collect());
        };
        if let Some(rest) = line.strip_prefix(prefix) {
            break rest.to_string();
        }
        seen.push((Instant::now(), line));
    };
    let kept: Lines = Arc::new(Mutex::new(seen));
    let sink = kept.clone();
    let reader = std::thread::spawn(move || {
        for l in lines.map_while(|l| l.ok()) {
            sink.lock().unwrap().push((Instant::now(), l));
        }
    });
    Ok(Collected { child, ready, lines: kept, reader })
}
