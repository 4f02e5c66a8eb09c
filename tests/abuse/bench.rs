//! One abuse case's bench: a `strom serve` child of its own in a memory
//! cgroup of its own, its topics and old data, a running canary, and the
//! baseline its counters must come back to; after the case, the checks
//! every case shares.
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use strom::client::Client;
use strom::metrics::Metric;

use crate::canary::Canary;
use crate::harness::cgroup::Limits;
use crate::harness::serve::{HANG, STATS_CONNECTIONS, STATS_HELD_BYTES, Serve, Stats};
use crate::harness::test_dir;
use crate::{CGROUP_LIMIT_BYTES, CORE_BUFFERED_BYTES_MAX, CORES, HEADER_TIMEOUT_MS, REPLY_BUDGET_BYTES};

/// The counters that must come back to their baseline after every case.
const BASELINE_KEYS: [Metric; 7] = [
    Metric::ConnectionsOpen,
    Metric::RingOpsInFlight,
    Metric::ReplyBufsFree,
    Metric::ReadBufsFree,
    Metric::BufferedBytes,
    Metric::ReplyBudgetUsedBytes,
    Metric::FetchesWaitingBudget,
];

pub fn sum(stats: &[Stats], key: Metric) -> u64 {
    stats.iter().map(|s| s[key]).sum()
}

/// Raises this process's open-file limit to its hard limit; returns it.
pub fn raise_nofile() -> u64 {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    let (_, hard) = getrlimit(Resource::RLIMIT_NOFILE).unwrap();
    let _ = setrlimit(Resource::RLIMIT_NOFILE, hard, hard);
    getrlimit(Resource::RLIMIT_NOFILE).unwrap().0
}

/// The case's row of the summary.
struct Row {
    case: String,
    result: String,
    rss_before: u64,
    rss_peak: u64,
    rss_after: u64,
    canary_acks: u64,
}

/// Fields drop in order: the server before its cgroup (removable once empty).
pub struct Bench {
    pub serve: Serve,
    pub canary: Canary,
    baseline: Vec<Stats>,
    baseline_fds: usize,
    pub dir: PathBuf,
    row: Option<Row>,
    cgroup: Option<Limits>,
}

impl Bench {
    /// A server for case `name` with room for `connections_max`
    /// connections, in a cgroup capped at 512 MiB (without root, uncapped,
    /// and it says so); topics `canary` (a partition per core), `old` (24
    /// batches of ~900 KiB, no longer in the tail cache), `resets` and
    /// `abuse`; a running canary; and the baseline, taken at rest.
    pub fn start(name: &str, connections_max: usize) -> Bench {
        raise_nofile();
        let cgroup = match Limits::memory("strom-abuse", CGROUP_LIMIT_BYTES) {
            Ok(cg) => Some(cg),
            Err(e) => {
                println!("note: running without a memory cgroup: {e}");
                None
            }
        };
        let dir = test_dir(&format!("abuse-{}", name.replace(|c: char| !c.is_ascii_alphanumeric(), "-")));
        let mut cmd = Serve::on(&dir).cores(CORES).args(&[
            "--header-timeout-ms".to_string(),
            HEADER_TIMEOUT_MS.to_string(),
            "--connections-max".to_string(),
            connections_max.to_string(),
            "--core-buffered-bytes-max".to_string(),
            CORE_BUFFERED_BYTES_MAX.to_string(),
            "--reply-budget-bytes".to_string(),
            REPLY_BUDGET_BYTES.to_string(),
        ]);
        if let Some(cg) = &cgroup {
            cmd = cmd.cgroup(cg);
        }
        let serve = cmd.start();
        if let Some(cg) = &cgroup {
            assert!(cg.holds(serve.pid()), "the server is not in {}", cg.memory_dir().display());
            println!("server pid {} in memory cgroup {} (limit {} MiB)", serve.pid(), cg.memory_dir().display(), CGROUP_LIMIT_BYTES >> 20);
        }
        make_topics(serve.addr);
        let canary = Canary::start(serve.addr);
        canary.wait_progress((0, 0), 5, "at start");
        canary.pause();
        let baseline = quiet_baseline(&serve);
        let baseline_fds = serve.fd_count();
        canary.resume();
        println!(
            "baseline: {baseline_fds} fds; per core {:?} = {:?}",
            BASELINE_KEYS.map(Metric::name),
            baseline.iter().map(|s| BASELINE_KEYS.map(|k| s[k])).collect::<Vec<_>>()
        );
        Bench { serve, canary, baseline, baseline_fds, dir, row: None, cgroup }
    }

    /// Runs the case: resets the peak, runs it (the case checks the canary
    /// at its worst moment), checks the canary after it, then waits until
    /// every counter and the descriptor count are back to the baseline.
    pub fn case(&mut self, name: &str, run: impl FnOnce(&mut Bench) -> String) {
        self.serve.reset_peak_rss();
        let rss_before = self.serve.rss_bytes();
        let start = self.canary.counts();
        let result = run(self);
        self.serve.assert_alive();
        self.canary.wait_progress(start, 3, &format!("after {name}"));
        let canary_acks = self.canary.counts().0 - start.0;
        let rss_peak = self.serve.peak_rss_bytes();
        self.settle(name);
        let rss_after = self.serve.rss_bytes();
        println!("case {name}: {result}");
        self.row = Some(Row { case: name.to_string(), result, rss_before, rss_peak, rss_after, canary_acks });
    }

    /// Pauses the canary and waits for the baseline, then resumes it.
    fn settle(&mut self, name: &str) {
        self.canary.pause();
        let deadline = Instant::now() + HANG;
        loop {
            let stats = self.serve.stats();
            let fds = self.serve.fd_count();
            let same = stats.iter().zip(&self.baseline).all(|(s, b)| BASELINE_KEYS.iter().all(|&k| s[k] == b[k]));
            if same && fds == self.baseline_fds {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "after {name}, the server did not come back to its baseline:\nnow      {fds} fds {:?}\nbaseline {} fds {:?}",
                stats.iter().map(|s| BASELINE_KEYS.map(|k| s[k])).collect::<Vec<_>>(),
                self.baseline_fds,
                self.baseline.iter().map(|s| BASELINE_KEYS.map(|k| s[k])).collect::<Vec<_>>()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        self.canary.resume();
    }

    pub fn addr(&self) -> SocketAddr {
        self.serve.addr
    }

    /// Waits until the canary moved on by a few records: the check made
    /// while a case holds the server at its worst.
    pub fn canary_during(&self, what: &str) {
        let now = self.canary.counts();
        self.canary.wait_progress(now, 3, what);
    }

    /// What every case must leave: the server alive, the canary's whole
    /// run acknowledged and read back intact, no OOM kill, the peak RSS
    /// under the cap, and a clean exit on SIGTERM. Prints the case's row.
    pub fn finish(self) {
        let Bench { mut serve, canary, row, dir, cgroup, .. } = self;
        serve.assert_alive();
        let (acks, reads) = canary.finish();
        let row = row.expect("the case ran");
        let mib = |b: u64| format!("{:.1}", b as f64 / (1 << 20) as f64);
        println!("{:<40} {:<92} {:>8} {:>8} {:>8} {:>7}", "case", "result", "RSS MiB", "peak", "after", "canary");
        println!(
            "{:<40} {:<92} {:>8} {:>8} {:>8} {:>7}",
            row.case,
            row.result,
            mib(row.rss_before),
            mib(row.rss_peak),
            mib(row.rss_after),
            row.canary_acks
        );
        println!("canary: {acks} records acknowledged and {reads} read back in order, intact");
        if let Some(cg) = &cgroup {
            println!(
                "cgroup: peak {} MiB of {} MiB (page cache included), limit hit {} times, OOM kills {}",
                mib(cg.peak_bytes().unwrap_or(0)),
                CGROUP_LIMIT_BYTES >> 20,
                cg.limit_hits(),
                cg.oom_kills()
            );
            assert_eq!(cg.oom_kills(), 0, "the server was OOM-killed");
        }
        assert!(row.rss_peak < CGROUP_LIMIT_BYTES, "peak RSS {} over the cgroup limit", row.rss_peak);
        let (status, lines) = serve.stop(HANG);
        assert!(status.is_some_and(|s| s.success()), "strom serve exit {status:?}: {lines:?}");
        drop(cgroup);
        let _ = std::fs::remove_dir_all(&dir);
    }
}

fn make_topics(addr: SocketAddr) {
    let mut admin = Client::connect(addr).unwrap();
    admin.set_timeout(Some(HANG)).unwrap();
    admin.create_topic("canary", CORES as u32).unwrap();
    let md = admin.metadata(&["canary"]).unwrap();
    assert_eq!(md.topics[0].partition_cores, (0..CORES as u16).collect::<Vec<_>>(), "a canary partition per core");
    admin.create_topic("old", 1).unwrap();
    admin.create_topic("resets", 1).unwrap();
    admin.create_topic("abuse", 1).unwrap();
    // Old data: 24 batches of ~900 KiB, read from disk by the cases that
    // fetch it. Then as many small commits to the same log as it has write
    // buffers, one at a time (each sealed commit takes a buffer of its own):
    // the old batches leave the log's tail cache, as on a server that has
    // run a while (in one long run, the canary's records did it).
    let big = vec![b'o'; 900 << 10];
    for i in 0..24u64 {
        assert_eq!(admin.produce_values("old", 0, &[&big[..], format!("old-{i}").as_bytes()]).unwrap().base_offset, 2 * i);
    }
    for i in 0..strom::config::EngineConfig::default().write_bufs_per_log as u64 + 8 {
        assert_eq!(admin.produce_values("old", 0, &[b"newer"]).unwrap().base_offset, 48 + i);
    }
}

/// The metrics with the canary paused: its connections alone, nothing
/// held, and every registered buffer free (a baseline short of them would
/// hide a leak from every later comparison). The connection the metrics
/// are asked on, and its request, are there too.
fn quiet_baseline(serve: &Serve) -> Vec<Stats> {
    let deadline = Instant::now() + HANG;
    let baseline = loop {
        let s = serve.stats();
        if sum(&s, Metric::ConnectionsOpen) == 2 * CORES as u64 + STATS_CONNECTIONS && sum(&s, Metric::BufferedBytes) == STATS_HELD_BYTES {
            break s;
        }
        assert!(Instant::now() < deadline, "no quiet baseline: {s:?}");
        std::thread::sleep(Duration::from_millis(20));
    };
    let (reply_bufs, read_bufs) = (
        strom::server::ServerConfig::default().reply_bufs_per_core as u64,
        strom::config::EngineConfig::default().read_bufs_per_core as u64,
    );
    for s in &baseline {
        assert_eq!(
            (s[Metric::ReplyBufsFree], s[Metric::ReadBufsFree]),
            (reply_bufs, read_bufs),
            "registered buffers missing at rest: {s:?}"
        );
    }
    baseline
}
