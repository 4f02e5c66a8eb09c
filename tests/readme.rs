//! README.md's shell blocks, run as a newcomer would run them, against the
//! strom binary cargo built for this test and a real `strom serve`, so the
//! README cannot promise a command that fails. (Its Rust block is a
//! doc-test: `src/lib.rs`, `ReadmeDoctests`.)
//!
//! Every line of every ```` ```sh ```` block is either run or skipped with a
//! named reason ([`SKIPS`]); a line that is neither fails the test, so a new
//! example in README is picked up without touching this file. A line
//! starting with `# ` is the expected output of the command above it.
//!
//! The rewrite table, applied to each line before it runs under `sh -c`:
//!
//! | README says | runs as | why |
//! |---|---|---|
//! | `target/release/strom`, `cargo run --release --bin strom --` | the binary cargo built for this test | no second build |
//! | `127.0.0.1:7070` (and `STROM_ADDR` for every command) | `127.0.0.1:PORT`, a free port | tests run side by side |
//! | `127.0.0.1:9092` (the Kafka listener) | `127.0.0.1:PORT2`, another free port | the same |
//! | the serve line's `--data-dir` value, `/path/to/data` | a fresh directory under target/tmp | never outside target/, never tmpfs |
//! | a trailing `# comment` | dropped | |
//!
//! How each line runs and what is checked: a `serve` line starts the server
//! in the background and waits for its expected line; it is stopped with
//! SIGTERM (exit 0) before the first command that opens the data directory
//! itself (`inspect`, `recover`) or at the end. A `--follow` line runs in the
//! background until it prints a record this test produces after it started.
//! A `kcat` line runs when kcat is installed (`.ci/run` installs it) and is
//! skipped, saying so, when not. Every other line must exit 0 within [`COMMAND_TIMEOUT`]; `--count N` must
//! print N lines; `topic list` must show every topic created and not yet
//! deleted, and none deleted; expected `# ` lines must be in the output.
mod harness;

use std::io::{BufRead, BufReader, Read};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use harness::child;

/// Lines of README's shell blocks that this test does not run, by how they
/// start, and where what they promise is checked instead.
const SKIPS: &[(&str, &str)] = &[
    ("cargo build", "this test runs the strom binary cargo built for it"),
    ("cargo test", "the test command itself: this test is part of it"),
    ("cargo bench", "benches/append.rs runs small under `cargo test` (test = true in Cargo.toml)"),
    ("cargo run --release -p loadgen", "loadgen/tests/embedded.rs runs `loadgen --embedded` end to end, shortened to 2 s"),
];
/// The strom invocations README may use, each rewritten to the built binary.
const STROM_PREFIXES: [&str; 2] = ["cargo run --release --bin strom --", "target/release/strom"];
/// README's address, and the data directory its inspect/recover examples name.
const README_ADDR: &str = "127.0.0.1:7070";
const README_KAFKA_ADDR: &str = "127.0.0.1:9092";
const README_PLACEHOLDER_DIR: &str = "/path/to/data";
/// Long enough for `seq 1 100000 | strom produce` on a loaded 2-core box; a
/// hang (a consume that never ends) fails instead of stalling the suite.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(120);
/// How long a `--follow` line and the server get to print what is expected.
const WAIT_TIMEOUT: Duration = Duration::from_secs(30);
const FOLLOW_PROBE: &str = "readme-follow-probe";

/// One command line of a shell block, with the `# ` lines under it.
#[derive(Debug, Clone, PartialEq)]
struct ShLine {
    text: String,
    expect: Vec<String>,
}

/// Every command of README's ```sh blocks, in order. Pure: text in, lines out.
fn sh_lines(readme: &str) -> Vec<ShLine> {
    let mut out: Vec<ShLine> = Vec::new();
    let mut in_sh = false;
    let mut continued = String::new();
    for raw in readme.lines() {
        let line = raw.trim();
        if line.starts_with("```") {
            in_sh = !in_sh && line == "```sh";
            continue;
        }
        if !in_sh || line.is_empty() {
            continue;
        }
        if let Some(expected) = line.strip_prefix("# ") {
            if let Some(last) = out.last_mut() {
                last.expect.push(expected.to_string());
            }
            continue;
        }
        // A backslash continues the command on the next line.
        if let Some(head) = line.strip_suffix('\\') {
            continued.push_str(head);
            continue;
        }
        let text = std::mem::take(&mut continued) + line;
        out.push(ShLine { text, expect: Vec::new() });
    }
    out
}

/// What to do with a line.
#[derive(Debug, PartialEq)]
enum Kind {
    /// Run it; the rewritten `strom` arguments are for the checks.
    Strom(Vec<String>),
    /// A kcat line, against the server's Kafka listener.
    Kcat,
    Skip(&'static str),
}

fn classify(text: &str) -> Result<Kind, String> {
    if let Some((_, why)) = SKIPS.iter().find(|(start, _)| text.starts_with(start)) {
        return Ok(Kind::Skip(why));
    }
    for prefix in STROM_PREFIXES {
        if let Some(at) = text.find(prefix) {
            let rest = strip_comment(&text[at + prefix.len()..]);
            return Ok(Kind::Strom(rest.split_whitespace().map(str::to_string).collect()));
        }
    }
    if text.split_whitespace().any(|w| w == "kcat") {
        return Ok(Kind::Kcat);
    }
    Err(format!("README line {text:?} is neither a strom command nor in SKIPS (tests/readme.rs): run it or say why not"))
}

/// The line without a trailing `# comment` (README has no `#` in arguments).
fn strip_comment(text: &str) -> &str {
    text.find(" #").map_or(text, |at| &text[..at]).trim_end()
}

/// The value after `flag` in `args`.
fn flag<'a>(args: &'a [String], flag: &str) -> Option<&'a str> {
    args.iter().position(|a| a == flag).and_then(|i| args.get(i + 1)).map(String::as_str)
}

/// The rewrite table of the module doc, for one line.
struct Rewrite {
    bin: String,
    addr: String,
    kafka_addr: String,
    readme_dirs: Vec<String>,
    dir: PathBuf,
}

impl Rewrite {
    fn apply(&self, text: &str) -> String {
        let mut s = strip_comment(text).to_string();
        // One prefix, once: the binary's own path ends in target/release/strom.
        if let Some((at, prefix)) = STROM_PREFIXES.iter().find_map(|p| s.find(p).map(|at| (at, p))) {
            s.replace_range(at..at + prefix.len(), &self.bin);
        }
        s = s.replace(README_ADDR, &self.addr).replace(README_KAFKA_ADDR, &self.kafka_addr);
        for d in &self.readme_dirs {
            s = s.replace(d.as_str(), self.dir.to_str().unwrap());
        }
        s
    }

    fn expected(&self, line: &str) -> String {
        let mut s = line.replace(README_ADDR, &self.addr).replace(README_KAFKA_ADDR, &self.kafka_addr);
        for d in &self.readme_dirs {
            s = s.replace(d.as_str(), self.dir.to_str().unwrap());
        }
        s
    }
}

/// A shell running `cmd` in a process group of its own (so a pipeline can be
/// stopped whole), talking to the test's server.
fn shell(cmd: &str, addr: &str) -> Command {
    let mut c = Command::new("sh");
    c.arg("-c").arg(cmd).env("STROM_ADDR", addr).env_remove("STROM_FAILPOINT").process_group(0);
    c.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
    c
}

/// Collects a pipe's lines on a thread of its own, so a chatty child never
/// blocks on a full pipe.
fn collect(pipe: impl Read + Send + 'static) -> Arc<Mutex<Vec<String>>> {
    let lines = Arc::new(Mutex::new(Vec::new()));
    let sink = lines.clone();
    std::thread::spawn(move || {
        for l in BufReader::new(pipe).lines().map_while(Result::ok) {
            sink.lock().unwrap().push(l);
        }
    });
    lines
}

fn kill_group(child: &mut Child) {
    let _ = nix::sys::signal::killpg(nix::unistd::Pid::from_raw(child.id() as i32), nix::sys::signal::Signal::SIGKILL);
    let _ = child.wait();
}

/// Waits until `done` holds for `lines`, or `timeout`.
fn wait_for(lines: &Mutex<Vec<String>>, timeout: Duration, done: impl Fn(&[String]) -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if done(&lines.lock().unwrap()) {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    done(&lines.lock().unwrap())
}

/// Runs `cmd` to its end: (exit success, stdout lines, stderr lines).
fn run_to_end(cmd: &str, addr: &str) -> (bool, Vec<String>, Vec<String>) {
    let mut child = shell(cmd, addr).spawn().expect("spawn sh");
    let (out, err) = (collect(child.stdout.take().unwrap()), collect(child.stderr.take().unwrap()));
    let deadline = Instant::now() + COMMAND_TIMEOUT;
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if Instant::now() > deadline {
            kill_group(&mut child);
            panic!("README command {cmd:?} did not end within {COMMAND_TIMEOUT:?}; stderr:\n{}", err.lock().unwrap().join("\n"));
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    // The pipes close at exit; give the reader threads their last lines.
    std::thread::sleep(Duration::from_millis(50));
    let (out, err) = (out.lock().unwrap().clone(), err.lock().unwrap().clone());
    (status.success(), out, err)
}

/// The running server of a README `serve` line.
struct Server {
    collected: child::Collected,
}

impl Server {
    fn start(cmd: &str, addr: &str, ready: &str) -> Server {
        let mut c = shell(&format!("exec {cmd}"), addr);
        let collected = child::spawn_until(&mut c, ready)
            .unwrap_or_else(|lines| panic!("README's serve line {cmd:?} ended before printing {ready:?}:\n{}", lines.join("\n")));
        Server { collected }
    }

    /// SIGTERM, as README says stops it cleanly: exit 0.
    fn stop(mut self) {
        let pid = nix::unistd::Pid::from_raw(self.collected.child.id() as i32);
        nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).unwrap();
        let status = self.collected.child.wait().unwrap();
        let lines: Vec<String> = self.collected.lines.lock().unwrap().iter().map(|(_, l)| l.clone()).collect();
        assert!(status.success(), "strom serve did not stop cleanly on SIGTERM ({status}):\n{}", lines.join("\n"));
        println!("  server stopped on SIGTERM, exit 0");
    }
}

/// Produces [`FOLLOW_PROBE`] to what a `consume --follow` line reads: its
/// `--partition`, or every partition of its topic.
fn produce_probe(addr: &str, args: &[String]) {
    let topic = args.iter().skip_while(|a| *a != "consume").nth(1).expect("consume names a topic").clone();
    let mut client = strom::client::Client::connect(addr).unwrap();
    let partitions: Vec<u32> = match flag(args, "--partition") {
        Some(p) => vec![p.parse().unwrap()],
        None => {
            let m = client.metadata(&[&topic]).unwrap();
            (0..m.topics[0].partition_cores.len() as u32).collect()
        }
    };
    for p in partitions {
        client.produce_values(&topic, p, &[FOLLOW_PROBE.as_bytes()]).unwrap();
    }
}

/// The state of a walk through README's lines.
struct Walk {
    rw: Rewrite,
    server: Option<Server>,
    topics: Vec<String>,
    deleted: Vec<String>,
}

impl Walk {
    fn line(&mut self, line: &ShLine, args: &[String]) {
        let cmd = self.rw.apply(&line.text);
        println!("$ {}\n  runs as: {cmd}", line.text);
        let sub = args.first().map(String::as_str).unwrap_or("");
        if sub == "serve" {
            let ready = line.expect.first().map(|l| self.rw.expected(l)).unwrap_or_else(|| "strom: serving on".into());
            assert!(self.server.is_none(), "README starts a second server: {}", line.text);
            self.server = Some(Server::start(&cmd, &self.rw.addr, &ready));
            println!("  server up: {ready}");
            return;
        }
        if matches!(sub, "inspect" | "recover") {
            // They open the data directory itself: the server must be gone.
            if let Some(s) = self.server.take() {
                s.stop();
            }
        }
        if args.iter().any(|a| a == "--follow") {
            return self.follow(&cmd, args);
        }
        let (ok, out, err) = run_to_end(&cmd, &self.rw.addr);
        assert!(ok, "README command failed: {}\nstdout:\n{}\nstderr:\n{}", line.text, out.join("\n"), err.join("\n"));
        self.check(line, args, &out, &err);
    }

    /// A kcat line: exit 0, and its expected lines printed.
    fn kcat(&mut self, line: &ShLine) {
        let cmd = self.rw.apply(&line.text);
        println!("$ {}\n  runs as: {cmd}", line.text);
        let (ok, out, err) = run_to_end(&cmd, &self.rw.addr);
        assert!(ok, "README command failed: {}\nstdout:\n{}\nstderr:\n{}", line.text, out.join("\n"), err.join("\n"));
        for want in &line.expect {
            let want = self.rw.expected(want);
            assert!(out.iter().any(|l| l.contains(&want)), "{} did not print {want:?}:\n{}", line.text, out.join("\n"));
        }
    }

    /// The shape checks of the module doc.
    fn check(&mut self, line: &ShLine, args: &[String], out: &[String], err: &[String]) {
        let words: Vec<&str> = args.iter().map(String::as_str).collect();
        if let Some(n) = flag(args, "--count") {
            let n: usize = n.parse().unwrap();
            assert_eq!(out.len(), n, "{} printed {} lines, not {n}:\n{}", line.text, out.len(), out.join("\n"));
        }
        match words.as_slice() {
            ["topic", "create", name, ..] => self.topics.push(name.to_string()),
            ["topic", "delete", name, ..] => {
                self.topics.retain(|t| t != name);
                self.deleted.push(name.to_string());
            }
            ["topic", "list", ..] => self.check_list(out),
            ["inspect" | "recover", ..] => assert!(!out.is_empty(), "{} printed nothing", line.text),
            _ => {}
        }
        let all = [out, err].concat().join("\n");
        for e in &line.expect {
            let e = self.rw.expected(e);
            assert!(all.contains(&e), "{} did not print {e:?}:\n{all}", line.text);
        }
        println!("  ok: exit 0, {} lines out", out.len());
    }

    fn check_list(&self, out: &[String]) {
        let text = out.join("\n");
        let listed = |t: &str| text.split(|c: char| !(c.is_alphanumeric() || "-_.".contains(c))).any(|w| w == t);
        for t in &self.topics {
            assert!(listed(t), "topic list does not show {t}, created above:\n{text}");
        }
        for t in &self.deleted {
            assert!(!listed(t), "topic list still shows {t}, deleted above:\n{text}");
        }
    }

    /// A `--follow` line: it must print a record produced after it started.
    fn follow(&mut self, cmd: &str, args: &[String]) {
        let mut child = shell(cmd, &self.rw.addr).spawn().expect("spawn sh");
        let (out, err) = (collect(child.stdout.take().unwrap()), collect(child.stderr.take().unwrap()));
        // Until it reads, `--from latest` may resolve after the probe: produce
        // again until it shows (each probe is a new record at the end).
        let deadline = Instant::now() + WAIT_TIMEOUT;
        let mut seen = false;
        while !seen && Instant::now() < deadline {
            produce_probe(&self.rw.addr, args);
            seen = wait_for(&out, Duration::from_millis(500), |l| l.iter().any(|l| l.contains(FOLLOW_PROBE)));
        }
        let still_running = child.try_wait().unwrap().is_none();
        kill_group(&mut child);
        let (out, err) = (out.lock().unwrap().join("\n"), err.lock().unwrap().join("\n"));
        assert!(seen, "{cmd} did not print a record produced while it followed:\nstdout:\n{out}\nstderr:\n{err}");
        assert!(still_running, "{cmd} ended instead of following:\n{err}");
        println!("  ok: followed, printed the probe record");
    }
}

// Proves: every command in README.md's shell blocks runs as written (after
// the rewrite table) against a real `strom serve`, exits 0 and prints what
// README says; every other line is skipped with a named reason.
#[test]
fn readme_shell_blocks_run() {
    let readme = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md")).unwrap();
    let lines = sh_lines(&readme);
    let kinds: Vec<Kind> = lines.iter().map(|l| classify(&l.text).unwrap_or_else(|e| panic!("{e}"))).collect();
    let free_port = || std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let (port, kafka_port) = (free_port(), free_port());
    let kcat = Command::new("kcat").arg("-V").stdout(Stdio::null()).stderr(Stdio::null()).status().is_ok_and(|s| s.success());
    let serve_dirs = kinds.iter().filter_map(|k| match k {
        Kind::Strom(args) if args.first().is_some_and(|a| a == "serve") => flag(args, "--data-dir").map(str::to_string),
        _ => None,
    });
    let rw = Rewrite {
        bin: env!("CARGO_BIN_EXE_strom").to_string(),
        addr: format!("127.0.0.1:{port}"),
        kafka_addr: format!("127.0.0.1:{kafka_port}"),
        readme_dirs: serve_dirs.chain([README_PLACEHOLDER_DIR.to_string()]).collect(),
        // A fresh, not yet existing directory: serve makes it, as for a newcomer.
        dir: harness::test_dir("readme").join("data"),
    };
    let mut walk = Walk { rw, server: None, topics: Vec::new(), deleted: Vec::new() };
    let (mut ran, mut skipped) = (0, 0);
    for (line, kind) in lines.iter().zip(&kinds) {
        match kind {
            Kind::Skip(why) => {
                println!("$ {}\n  skipped: {why}", line.text);
                skipped += 1;
            }
            Kind::Strom(args) => {
                let args: Vec<String> = args.iter().map(|a| walk.rw.apply(a)).collect();
                walk.line(line, &args);
                ran += 1;
            }
            Kind::Kcat if !kcat => {
                println!("$ {}\n  skipped: kcat is not installed (.ci/run installs it)", line.text);
                skipped += 1;
            }
            Kind::Kcat => {
                walk.kcat(line);
                ran += 1;
            }
        }
    }
    if let Some(s) = walk.server.take() {
        s.stop();
    }
    println!("README: {ran} commands ran, {skipped} lines skipped with their reason");
    assert!(ran >= 1, "no strom command found in README's shell blocks");
    let _ = std::fs::remove_dir_all(walk.rw.dir.parent().unwrap());
}

// Proves: the block reader keeps order, joins continued lines, hangs `# `
// lines on the command above, ignores other languages, and the classifier
// sends every line to a runner, a named skip, or an error.
#[test]
fn readme_lines_are_read_and_classified() {
    let md = "```sh\ncargo build --release\ntarget/release/strom serve --listen 127.0.0.1:7070\n# strom: serving\n```\n\
              ```rust\nlet x = 1;\n```\n```sh\nA=1 \\\n  target/release/strom topic list   # all\nrm -rf /\n```\n";
    let lines = sh_lines(md);
    let texts: Vec<&str> = lines.iter().map(|l| l.text.as_str()).collect();
    assert_eq!(
        texts,
        [
            "cargo build --release",
            "target/release/strom serve --listen 127.0.0.1:7070",
            "A=1 target/release/strom topic list   # all",
            "rm -rf /"
        ]
    );
    assert_eq!(lines[1].expect, ["strom: serving"]);
    assert!(matches!(classify(texts[0]), Ok(Kind::Skip(_))));
    assert_eq!(classify(texts[2]), Ok(Kind::Strom(vec!["topic".into(), "list".into()])));
    assert!(classify(texts[3]).is_err(), "an unknown line must fail, not pass");
}
