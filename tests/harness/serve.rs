//! The one `strom serve` wrapper every end-to-end test starts its server
//! with: `Serve::on(dir)`, options (cores, port, arguments, environment, a
//! failpoint, cgroups), then `start`. Its stderr is collected with when each
//! line was read (the server says there why it stops acknowledging and what
//! recovery scanned and cut); its metrics are asked over the network; it is
//! killed if the test ends without stopping it.
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::Mutex;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use strom::client::{Client, ClientError};
use strom::metrics::Metrics;

use super::cgroup::Limits;
use super::child::{self, Lines};

/// How long a wait on the server may take before the test calls it a hang
/// (not a timing threshold: each wait ends as soon as its condition holds).
pub const HANG: Duration = Duration::from_secs(120);

/// One core's metrics registry, as the server's `Metrics` api answers it.
pub type Stats = Metrics;

/// What [`Serve::stats`] adds to what it reads: its own connection, open
/// for as long as the server runs (it is one of `strom_connections_open`)...
pub const STATS_CONNECTIONS: u64 = 1;
/// ...and its Metrics request, an empty body after the length and header,
/// held while it is answered (in `strom_buffered_bytes` of its core).
pub const STATS_HELD_BYTES: u64 = (strom::proto::LEN_BYTES + strom::proto::HEADER_BYTES) as u64;

const SERVING: &str = "strom: serving on ";
/// What the server prints before [`SERVING`] when it has a Kafka listener.
const KAFKA_LISTENER: &str = "strom: kafka listener on ";

/// How to start a `strom serve`; see [`Serve::on`].
#[derive(Clone)]
pub struct ServeCmd {
    dir: PathBuf,
    cores: usize,
    port: u16,
    args: Vec<String>,
    envs: Vec<(String, String)>,
    cgroup_procs: Vec<PathBuf>,
    failpoint: Option<String>,
    /// `--kafka-listen 127.0.0.1:PORT` when set.
    kafka_port: Option<u16>,
}

impl ServeCmd {
    /// A Kafka listener on 127.0.0.1, any free port ([`Serve::kafka_addr`]).
    pub fn kafka(self) -> ServeCmd {
        self.kafka_port(0)
    }

    /// A Kafka listener on 127.0.0.1:`port` (a restart keeps the clients'
    /// address).
    pub fn kafka_port(mut self, port: u16) -> ServeCmd {
        self.kafka_port = Some(port);
        self
    }

    /// `--cores N` (default 2, the cores of the development and CI machines).
    pub fn cores(mut self, n: usize) -> ServeCmd {
        self.cores = n;
        self
    }

    /// Listens on 127.0.0.1:`port` (default 0: any free port).
    pub fn port(mut self, port: u16) -> ServeCmd {
        self.port = port;
        self
    }

    /// More `strom serve` arguments.
    pub fn args<S: AsRef<str>>(mut self, args: &[S]) -> ServeCmd {
        self.args.extend(args.iter().map(|a| a.as_ref().to_string()));
        self
    }

    /// An environment variable (`RUST_LOG=info` makes the server print what
    /// recovery scanned and cut).
    pub fn env(mut self, key: &str, value: &str) -> ServeCmd {
        self.envs.push((key.into(), value.into()));
        self
    }

    /// Arms a failpoint (`STROM_FAILPOINT=NAME:NTH[:pause]`, cargo feature
    /// `failpoints`). Without one the variable is removed, so that one left
    /// in the test's environment arms nothing.
    pub fn failpoint(mut self, failpoint: Option<&str>) -> ServeCmd {
        self.failpoint = failpoint.map(str::to_string);
        self
    }

    /// Runs the server in `limits`' cgroups: a shell joins them, then execs
    /// the server, so every byte the server allocates is charged there.
    pub fn cgroup(mut self, limits: &Limits) -> ServeCmd {
        self.cgroup_procs = limits.procs_files();
        self
    }

    fn command(&self) -> Command {
        let bin = env!("CARGO_BIN_EXE_strom");
        let (dir, listen, cores) = (self.dir.to_str().unwrap(), format!("127.0.0.1:{}", self.port), self.cores.to_string());
        let mut args: Vec<&str> = vec!["serve", "--data-dir", dir, "--listen", &listen, "--cores", &cores];
        let kafka = self.kafka_port.map(|p| format!("127.0.0.1:{p}"));
        if let Some(k) = &kafka {
            args.extend(["--kafka-listen", k.as_str()]);
        }
        args.extend(self.args.iter().map(String::as_str));
        let mut cmd = if self.cgroup_procs.is_empty() {
            let mut c = Command::new(bin);
            c.args(&args);
            c
        } else {
            let joins: String = self.cgroup_procs.iter().map(|p| format!("echo $$ > {} && ", p.display())).collect();
            let mut c = Command::new("sh");
            c.arg("-c").arg(format!("{joins}exec \"$0\" \"$@\"")).arg(bin).args(&args);
            c
        };
        cmd.envs(self.envs.iter().map(|(k, v)| (k, v)));
        match &self.failpoint {
            Some(f) => cmd.env("STROM_FAILPOINT", f),
            None => cmd.env_remove("STROM_FAILPOINT"),
        };
        cmd
    }

    /// Starts the server and waits until it serves. Panics, with what it
    /// printed, if it ends before that.
    pub fn start(&self) -> Serve {
        self.try_start().unwrap_or_else(|lines| panic!("strom serve ended before serving; stderr:\n{}", lines.join("\n")))
    }

    /// [`ServeCmd::start`], or every line the server printed if it ended
    /// before serving (a port in use, for one).
    pub fn try_start(&self) -> Result<Serve, Vec<String>> {
        let started = Instant::now();
        let c = child::spawn_until(&mut self.command(), SERVING)?;
        let up = started.elapsed();
        let addr = c.ready.split(',').next().unwrap();
        let addr = addr.parse().unwrap_or_else(|e| panic!("bad address in {SERVING}{}: {e}", c.ready));
        Ok(Serve { child: c.child, addr, up, cores: self.cores, lines: c.lines, reader: Some(c.reader), stats_conn: Mutex::new(None) })
    }

    /// Spawns the server and SIGKILLs it `after` later, whatever it is doing
    /// then (recovering, most likely); what it printed is dropped.
    pub fn start_and_kill_after(&self, after: Duration) {
        let mut child = self.command().stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::null()).spawn().expect("spawn strom serve");
        std::thread::sleep(after);
        let _ = child.kill();
        child.wait().unwrap();
    }
}

/// A running `strom serve` child.
pub struct Serve {
    child: Child,
    pub addr: SocketAddr,
    /// From spawn to its "serving on" line (recovery included).
    pub up: Duration,
    cores: usize,
    lines: Lines,
    /// Collects stderr until the server exits; joined then, so that what
    /// it printed last is kept.
    reader: Option<JoinHandle<()>>,
    /// The connection [`Serve::stats`] asks on: opened at its first call and
    /// kept, so that it is there, and the same, in every figure it reads
    /// (and at a connection limit it is already in).
    stats_conn: Mutex<Option<Client>>,
}

impl Serve {
    /// How to start a server on `dir`: options, then `start`.
    pub fn on(dir: &Path) -> ServeCmd {
        ServeCmd {
            dir: dir.to_path_buf(),
            cores: 2,
            port: 0,
            args: Vec::new(),
            envs: Vec::new(),
            cgroup_procs: Vec::new(),
            failpoint: None,
            kafka_port: None,
        }
    }

    /// A server on `dir` with `extra` arguments (and 2 cores), serving.
    pub fn start(dir: &Path, extra: &[&str]) -> Serve {
        Serve::on(dir).args(extra).start()
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends `sig`; a server already gone is found out by the caller.
    fn signal(&self, sig: nix::sys::signal::Signal) {
        let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(self.pid() as i32), sig);
    }

    /// A client with a 30 s request timeout.
    pub fn client(&self) -> Client {
        let mut c = Client::connect_timeout(self.addr, Duration::from_secs(10)).unwrap();
        c.set_timeout(Some(Duration::from_secs(30))).unwrap();
        c
    }

    /// The Kafka listener's address, from the line the server prints
    /// before it serves (see [`ServeCmd::kafka`]).
    pub fn kafka_addr(&self) -> SocketAddr {
        let lines = self.stderr();
        let line = lines.iter().find_map(|l| l.strip_prefix(KAFKA_LISTENER));
        let line = line.unwrap_or_else(|| panic!("no \"{KAFKA_LISTENER}ADDR\" line; stderr:\n{}", lines.join("\n")));
        let addr = line.split([' ', ',']).next().unwrap();
        addr.parse().unwrap_or_else(|e| panic!("bad address in {KAFKA_LISTENER}{line}: {e}"))
    }

    /// What the server printed so far.
    pub fn stderr(&self) -> Vec<String> {
        self.lines.lock().unwrap().iter().map(|(_, l)| l.clone()).collect()
    }

    /// What the server printed so far, one line each.
    pub fn stderr_text(&self) -> String {
        self.stderr().join("\n")
    }

    /// Puts `earlier` (what a failed start on the same directory printed)
    /// before this server's lines, so that one report covers both.
    pub fn prepend_stderr(&self, earlier: Vec<String>) {
        let mut lines = self.lines.lock().unwrap();
        let at = lines.first().map_or_else(Instant::now, |(t, _)| *t);
        let mut all: Vec<(Instant, String)> = earlier.into_iter().map(|l| (at, l)).collect();
        all.append(&mut lines);
        *lines = all;
    }

    /// When the test read the first line containing `pat`, if it did.
    pub fn first_line_with(&self, pat: &str) -> Option<Instant> {
        self.lines.lock().unwrap().iter().find(|(_, l)| l.contains(pat)).map(|(t, _)| *t)
    }

    /// Waits up to `timeout` for a line containing `pat`.
    pub fn wait_line(&self, pat: &str, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if self.first_line_with(pat).is_some() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        false
    }

    /// The server still runs.
    pub fn alive(&mut self) -> bool {
        self.child.try_wait().unwrap().is_none()
    }

    pub fn assert_alive(&mut self) {
        if let Some(status) = self.child.try_wait().unwrap() {
            self.join_reader();
            panic!("strom serve exited ({status}); stderr:\n{}", self.stderr_text());
        }
    }

    /// Every core's metrics registry, now, from the server's `Metrics` api
    /// (`Client::metrics`) on the connection kept for it; see
    /// [`STATS_CONNECTIONS`] and [`STATS_HELD_BYTES`] for what that
    /// connection adds, and a comparison with a baseline read the same way
    /// cancels. A broken connection is opened again once.
    pub fn stats(&self) -> Vec<Stats> {
        let mut conn = self.stats_conn.lock().unwrap();
        let mut failed = None;
        for _ in 0..2 {
            let asked = match conn.as_mut() {
                Some(c) => c.metrics(),
                None => Client::connect_timeout(self.addr, Duration::from_secs(10)).and_then(|mut c| {
                    c.set_timeout(Some(HANG))?;
                    let cores = c.metrics();
                    *conn = Some(c);
                    cores
                }),
            };
            match asked {
                Ok(cores) => return self.typed(cores),
                Err(e) => {
                    *conn = None;
                    failed = Some(e);
                }
            }
        }
        self.no_stats(failed.expect("two attempts failed"))
    }

    /// The registries of a `Metrics` reply, one per core of this server,
    /// each naming every metric this build has and no other.
    fn typed(&self, cores: Vec<Vec<(String, u64)>>) -> Vec<Stats> {
        assert_eq!(cores.len(), self.cores, "metrics of {} cores from a server of {}", cores.len(), self.cores);
        let typed = cores.iter().map(|pairs| {
            let (m, unknown) = Metrics::from_pairs(pairs.iter().map(|(k, v)| (k.as_str(), *v)));
            // An empty registry is a core whose server task is gone: its stderr says why.
            assert!(
                unknown.is_empty() && pairs.len() == strom::metrics::Metric::ALL.len(),
                "metrics of another build: {pairs:?}; server stderr:\n{}",
                self.stderr_text()
            );
            m
        });
        typed.collect()
    }

    fn no_stats(&self, e: ClientError) -> ! {
        // A dead server (an OOM kill among the ways) answers nothing more.
        let state = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).unwrap_or_default();
        let dead = !state.lines().any(|l| l.starts_with("State:") && !l.contains("zombie"));
        let tail: Vec<String> = self.stderr().into_iter().rev().take(6).collect();
        panic!("no metrics from the server: {e} (server dead: {dead}; see dmesg for an OOM kill); last stderr lines: {tail:?}");
    }

    fn status_kib(&self, key: &str) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).unwrap();
        status.lines().find_map(|l| l.strip_prefix(key)).unwrap().trim().trim_end_matches("kB").trim().parse().unwrap()
    }

    /// The server's resident memory now.
    pub fn rss_bytes(&self) -> u64 {
        self.status_kib("VmRSS:") * 1024
    }

    /// Peak resident memory since start or the last [`Serve::reset_peak_rss`].
    pub fn peak_rss_bytes(&self) -> u64 {
        self.status_kib("VmHWM:") * 1024
    }

    /// Resets the peak to the current RSS (`clear_refs` 5), so that a part
    /// of a test has its own. Needs root or the same user: we started it.
    pub fn reset_peak_rss(&self) {
        let _ = std::fs::write(format!("/proc/{}/clear_refs", self.pid()), "5");
    }

    /// Descriptors the server holds open.
    pub fn fd_count(&self) -> usize {
        std::fs::read_dir(format!("/proc/{}/fd", self.pid())).unwrap().count()
    }

    fn join_reader(&mut self) {
        if let Some(r) = self.reader.take() {
            let _ = r.join();
        }
    }

    /// Waits up to `timeout` for the server to exit on its own.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                self.join_reader();
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// SIGKILL, and waits for the exit.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        self.child.wait().unwrap();
        self.join_reader();
    }

    /// SIGTERM (the server refuses new requests, answers those in flight,
    /// checkpoints and exits 0); SIGKILL if it has not exited after `grace`.
    /// Returns its exit status (None when it had to be killed) and
    /// everything it printed.
    pub fn stop(mut self, grace: Duration) -> (Option<ExitStatus>, Vec<String>) {
        self.signal(nix::sys::signal::Signal::SIGTERM);
        let status = self.wait_exit(grace);
        if status.is_none() {
            self.kill();
        }
        (status, self.stderr())
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
