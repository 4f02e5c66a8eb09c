//! `strom stat`: a live view of a running broker, like `top`. Every
//! interval it asks the server for each core's metrics registry (the
//! `Metrics` api) and the per-stage latency histograms (the `Stats` api),
//! and prints:
//!
//! - per core and in total, rates over the interval from the difference of
//!   two readings of the cores' counters: requests/s, network MB/s in and
//!   out (bytes received from and sent to the core's connections), log
//!   MB/s (bytes the core's logs wrote), served MB/s (batch bytes fetches
//!   served), appends/s, and the connections open now;
//! - per stage, the latency of the produce requests (and fetches) the
//!   interval recorded: count, p50, p99, p99.9, max.
//!
//! The `Stats` api answers percentiles, not histograms, so two readings
//! cannot be subtracted: each reading resets the server's histograms
//! instead (its reset flag), so each interval's rows are that interval's
//! alone. The reset is server-wide (another reader, such as loadgen,
//! loses what it had gathered); `--no-reset` leaves the histograms alone,
//! and the rows then cover everything since the server started or was last
//! reset. The reset leaves the histograms `/metrics` exports alone (they
//! stay cumulative: `stats::CoreStages`). Below the server's stage rows,
//! each core's (Stats version 2, per core), those that recorded requests.
use std::io::{IsTerminal, Write};
use std::time::{Duration, Instant};

use clap::Args;
use strom::client::{Client, ClientError, StageReport};
use strom::metrics::{Metric, Metrics};
use strom::proto::ErrorCode;
use strom::server::StageLatency;

/// Shortest interval: readings closer than this measure the polling more than the broker.
const INTERVAL_MS_MIN: u64 = 100;
/// Longest interval: one hour (a histogram keeps at most a minute per sample, but any count).
const INTERVAL_MS_MAX: u64 = 3_600_000;
/// ANSI: clear the screen, then put the cursor at its top left.
const CLEAR_HOME: &str = "\x1b[2J\x1b[H";
const BYTES_PER_MB: f64 = 1e6;

#[derive(Args)]
pub struct StatArgs {
    /// Milliseconds between readings; the figures cover the last one (100 to 3600000).
    #[arg(long, value_name = "MS", default_value_t = 1000, value_parser = clap::value_parser!(u64).range(INTERVAL_MS_MIN..=INTERVAL_MS_MAX))]
    interval: u64,
    /// Print one snapshot as plain text and exit (what stat does when stdout is not a terminal).
    #[arg(long)]
    once: bool,
    /// Read the stage histograms without resetting them: the stage rows then
    /// cover everything since the server started or was last reset.
    #[arg(long)]
    no_reset: bool,
    #[command(flatten)]
    conn: crate::ConnArgs,
}

/// One reading of the server.
struct Reading {
    at: Instant,
    cores: Vec<Metrics>,
    stages: Vec<StageLatency>,
    /// Each core's stage rows (empty from a server without Stats version 2).
    core_stages: Vec<Vec<StageLatency>>,
}

/// One core's (or the total's) rates between two readings.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Rates {
    pub requests_per_s: f64,
    /// Network bytes received from and sent to the core's connections.
    pub net_in_mb_per_s: f64,
    pub net_out_mb_per_s: f64,
    /// Bytes the core's logs wrote, and batch bytes fetches served.
    pub in_mb_per_s: f64,
    pub out_mb_per_s: f64,
    pub appends_per_s: f64,
    /// A gauge: the level at the later reading.
    pub connections: u64,
}

impl Rates {
    /// The rates from `before` to `after`, `secs` apart. A counter that went
    /// down (the server restarted between them) counts as 0, not as a wrap.
    pub fn between(before: &Metrics, after: &Metrics, secs: f64) -> Rates {
        let per_s = |m: Metric| after[m].saturating_sub(before[m]) as f64 / secs;
        Rates {
            requests_per_s: per_s(Metric::Requests),
            net_in_mb_per_s: per_s(Metric::NetReceivedBytes) / BYTES_PER_MB,
            net_out_mb_per_s: per_s(Metric::NetSentBytes) / BYTES_PER_MB,
            in_mb_per_s: per_s(Metric::LogBytesWritten) / BYTES_PER_MB,
            out_mb_per_s: per_s(Metric::ReadServedBytes) / BYTES_PER_MB,
            appends_per_s: per_s(Metric::Appends),
            connections: after[Metric::ConnectionsOpen],
        }
    }

    fn add(&mut self, other: &Rates) {
        self.requests_per_s += other.requests_per_s;
        self.net_in_mb_per_s += other.net_in_mb_per_s;
        self.net_out_mb_per_s += other.net_out_mb_per_s;
        self.in_mb_per_s += other.in_mb_per_s;
        self.out_mb_per_s += other.out_mb_per_s;
        self.appends_per_s += other.appends_per_s;
        self.connections += other.connections;
    }
}

/// What one screen shows.
pub struct View {
    pub addr: String,
    pub secs: f64,
    pub reset: bool,
    pub cores: Vec<Rates>,
    pub stages: Vec<StageLatency>,
    /// Each core's rows of the stages that recorded requests, in core order.
    pub core_stages: Vec<Vec<StageLatency>>,
}

impl View {
    fn between(addr: &str, before: &Reading, after: &Reading, reset: bool) -> View {
        let secs = after.at.duration_since(before.at).as_secs_f64().max(1e-3);
        // A core missing from the earlier reading (a restart with more cores) starts from 0.
        let zero = Metrics::default();
        let cores = after.cores.iter().enumerate().map(|(i, m)| Rates::between(before.cores.get(i).unwrap_or(&zero), m, secs)).collect();
        View { addr: addr.to_string(), secs, reset, cores, stages: after.stages.clone(), core_stages: after.core_stages.clone() }
    }

    /// The view as plain text: a header, a row per core and a total, then a row per stage.
    pub fn render(&self) -> String {
        let covers = if self.reset { "over the last interval" } else { "since the server started or was last reset" };
        let mut out = format!(
            "strom stat {}: rates over the last {:.2} s (MB/s: network in and out, log written, fetches served), stage latency {covers}\n\n",
            self.addr, self.secs
        );
        out.push_str(&format!(
            "{:<6} {:>10} {:>9} {:>9} {:>9} {:>9} {:>10} {:>6}\n",
            "core", "req/s", "net_in", "net_out", "log_in", "served", "appends/s", "conns"
        ));
        let mut total = Rates::default();
        let row = |name: &str, r: &Rates| {
            format!(
                "{name:<6} {:>10.1} {:>9.2} {:>9.2} {:>9.2} {:>9.2} {:>10.1} {:>6}\n",
                r.requests_per_s, r.net_in_mb_per_s, r.net_out_mb_per_s, r.in_mb_per_s, r.out_mb_per_s, r.appends_per_s, r.connections
            )
        };
        for (i, r) in self.cores.iter().enumerate() {
            out.push_str(&row(&i.to_string(), r));
            total.add(r);
        }
        out.push_str(&row("total", &total));
        out.push_str(&format!("\n{:<8} {:>10} {:>9} {:>9} {:>9} {:>9}\n", "stage", "count", "p50_us", "p99_us", "p999_us", "max_us"));
        for s in &self.stages {
            out.push_str(&format!("{:<8} {:>10} {:>9} {:>9} {:>9} {:>9}\n", s.stage, s.count, s.p50_us, s.p99_us, s.p999_us, s.max_us));
        }
        self.render_core_stages(&mut out);
        out
    }

    /// Each core's stage rows, those that recorded requests only (a core
    /// serving only fetches has no produce stages to show).
    fn render_core_stages(&self, out: &mut String) {
        if self.core_stages.is_empty() {
            return;
        }
        out.push_str(&format!(
            "\n{:<6} {:<8} {:>10} {:>9} {:>9} {:>9} {:>9}\n",
            "core", "stage", "count", "p50_us", "p99_us", "p999_us", "max_us"
        ));
        for (core, rows) in self.core_stages.iter().enumerate() {
            for s in rows.iter().filter(|s| s.count > 0) {
                out.push_str(&format!(
                    "{core:<6} {:<8} {:>10} {:>9} {:>9} {:>9} {:>9}\n",
                    s.stage, s.count, s.p50_us, s.p99_us, s.p999_us, s.max_us
                ));
            }
        }
    }
}

/// Reads every core's registry, then the stage rows (resetting them if `reset`).
fn read(client: &mut Client, reset: bool) -> Result<Reading, String> {
    let cores = client.metrics().map_err(|e| format!("the Metrics request failed: {e}"))?;
    // Per core (Stats version 2); a server older than that refuses the version, and stat shows its totals only.
    let report = match client.stage_latency_by_core(reset) {
        Err(ClientError::Server { code: ErrorCode::UnsupportedVersion, .. }) => {
            client.stage_latency(reset).map(|total| StageReport { total, cores: Vec::new() })
        }
        other => other,
    };
    let report = report.map_err(|e| format!("the Stats request failed: {e}"))?;
    // Names this build does not know (a newer server) are left out of the view, not an error.
    let cores = cores.iter().map(|pairs| Metrics::from_pairs(pairs.iter().map(|(n, v)| (n.as_str(), *v))).0).collect();
    Ok(Reading { at: Instant::now(), cores, stages: report.total, core_stages: report.cores })
}

/// Runs `strom stat`: one snapshot (`--once`, or stdout not a terminal), or
/// a redrawn screen every interval until interrupted.
pub fn stat(args: &StatArgs) -> Result<(), String> {
    let live = !args.once && std::io::stdout().is_terminal();
    let reset = !args.no_reset;
    let interval = Duration::from_millis(args.interval);
    let mut client = super::connect(&args.conn)?;
    // The first reading only starts the interval (and, resetting, empties the histograms).
    let mut before = read(&mut client, reset)?;
    let mut stdout = std::io::stdout().lock();
    if live {
        // The first screen needs a whole interval; say so rather than show nothing.
        let _ = writeln!(stdout, "{CLEAR_HOME}strom stat {}: measuring the first {} ms", args.conn.addr, args.interval);
        let _ = stdout.flush();
    }
    loop {
        std::thread::sleep(interval);
        let after = read(&mut client, reset)?;
        let text = View::between(&args.conn.addr, &before, &after, reset).render();
        let screen = if live { format!("{CLEAR_HOME}{text}") } else { text };
        stdout.write_all(screen.as_bytes()).and_then(|()| stdout.flush()).map_err(|e| format!("writing to stdout: {e}"))?;
        if !live {
            return Ok(());
        }
        before = after;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn registry(requests: u64, written: u64, served: u64, conns: u64) -> Metrics {
        let mut m = Metrics::default();
        m.conn.received_bytes = 3 * written;
        m.conn.sent_bytes = 5 * served;
        m.conn.requests = requests;
        m.log.bytes_written = written;
        m.read.served_bytes = served;
        m.conn.connections = conns;
        m
    }

    #[test]
    fn rates_are_counter_differences_over_the_interval() {
        // Proves: rates are (after - before) / seconds, MB are 10^6 bytes, a gauge is taken as it
        // stands, and a counter that went down (a restart) gives 0, not a wrapped huge rate.
        let r = Rates::between(&registry(100, 1_000_000, 0, 1), &registry(300, 5_000_000, 2_000_000, 4), 2.0);
        let want = Rates {
            requests_per_s: 100.0,
            net_in_mb_per_s: 6.0,
            net_out_mb_per_s: 5.0,
            in_mb_per_s: 2.0,
            out_mb_per_s: 1.0,
            appends_per_s: 0.0,
            connections: 4,
        };
        assert_eq!(r, want);
        let restarted = Rates::between(&registry(300, 5_000_000, 0, 1), &registry(10, 0, 0, 1), 1.0);
        assert_eq!((restarted.requests_per_s, restarted.in_mb_per_s), (0.0, 0.0));
    }

    #[test]
    fn render_lists_every_core_a_total_and_the_stages() {
        // Proves: the text has one row per core in order, a total that sums them, and a row per stage with its figures.
        let stage = StageLatency { stage: "fsync".into(), count: 7, p50_us: 90, p90_us: 150, p99_us: 190, p999_us: 400, max_us: 401 };
        let rates = |requests_per_s, net_in_mb_per_s, in_mb_per_s, out_mb_per_s, appends_per_s, connections| Rates {
            requests_per_s,
            net_in_mb_per_s,
            net_out_mb_per_s: 0.25,
            in_mb_per_s,
            out_mb_per_s,
            appends_per_s,
            connections,
        };
        let cores = vec![rates(10.0, 1.75, 1.5, 0.0, 10.0, 1), rates(30.0, 0.5, 0.5, 2.0, 5.0, 2)];
        let quiet = StageLatency { stage: "append".into(), count: 0, p50_us: 0, p90_us: 0, p99_us: 0, p999_us: 0, max_us: 0 };
        let core_stages = vec![vec![quiet.clone()], vec![StageLatency { count: 3, ..stage.clone() }, quiet]];
        let text = View { addr: "h:1".into(), secs: 1.0, reset: true, cores, stages: vec![stage], core_stages }.render();
        let rows: Vec<Vec<&str>> = text.lines().map(|l| l.split_whitespace().collect()).collect();
        let row =
            |first: &str| rows.iter().find(|r| r.first() == Some(&first)).unwrap_or_else(|| panic!("no {first} row:\n{text}")).clone();
        assert_eq!(row("0"), ["0", "10.0", "1.75", "0.25", "1.50", "0.00", "10.0", "1"]);
        assert_eq!(row("1"), ["1", "30.0", "0.50", "0.25", "0.50", "2.00", "5.0", "2"]);
        assert_eq!(row("total"), ["total", "40.0", "2.25", "0.50", "2.00", "2.00", "15.0", "3"]);
        assert_eq!(row("fsync"), ["fsync", "7", "90", "190", "400", "401"]);
        let per_core: Vec<&Vec<&str>> = rows.iter().filter(|r| r.len() == 7 && r[1] != "stage").collect();
        assert_eq!(per_core, [&vec!["1", "fsync", "3", "90", "190", "400", "401"]], "only rows with requests:\n{text}");
        assert!(text.contains("over the last interval"), "{text}");
    }
}
