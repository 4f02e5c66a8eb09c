//! Per-stage latency of produce requests: where the time of one Produce
//! goes between its last bytes arriving and its reply leaving.
//!
//! A request carries a [`StageTrace`]: the instants (ns on the engine's
//! stage clock, which every core shares; see `Core::clock_ns`) at which it
//! crossed each boundary. The connection's core records the differences,
//! in microseconds, into its own [`StageHistograms`] once the reply is sent:
//! a few subtractions and array increments, no lock, no allocation. A
//! report merges every core's histograms only when asked
//! (`Server::stage_latency`, or the `Stats` api) and turns them into
//! [`StageLatency`] rows.
//!
//! The stages of one Produce, in order (they tile `total`):
//!
//! | stage | from | to |
//! |---|---|---|
//! | `receive` | the receive completion that finished its frame | handed to its partition's core (decode, validation, routing, the mailbox when forwarded) |
//! | `append` | arrival at the owning core | copied into the log's commit buffer (waiting for a free write buffer) |
//! | `write` | in the commit buffer | the O_DIRECT write covering it completed (the group-commit window, waiting for the previous writes, the write) |
//! | `fsync` | write completed | the fdatasync covering it completed |
//! | `ack` | fsync completed | the reply queued on the connection's core (the way back when forwarded) |
//! | `send` | reply queued | the send completion that finished sending it |
//! | `total` | receive completed | send completed |
//!
//! `fetch` is separate: a Fetch from its frame's receive completion to its
//! reply being queued, minus the time it waited parked as a long poll.

use hdrhistogram::Histogram;

/// The stages, in report order.
pub const STAGES: [&str; 8] = ["receive", "append", "write", "fsync", "ack", "send", "total", "fetch"];
const RECEIVE: usize = 0;
const APPEND: usize = 1;
const WRITE: usize = 2;
const FSYNC: usize = 3;
const ACK: usize = 4;
const SEND: usize = 5;
const TOTAL: usize = 6;
const FETCH: usize = 7;

/// Largest latency a histogram tells apart (longer ones count as this): one minute.
const LATENCY_US_MAX: u64 = 60_000_000;
/// Three significant digits: a percentile is within 0.1% of the true value.
const SIGNIFICANT_DIGITS: u8 = 3;

/// One stage's latency distribution, merged across cores, in microseconds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StageLatency {
    pub stage: String,
    /// Requests recorded (since start or the last reset).
    pub count: u64,
    pub p50_us: u64,
    pub p90_us: u64,
    pub p99_us: u64,
    pub p999_us: u64,
    pub max_us: u64,
}

/// A Stats answer: the rows merged across cores, and, when asked for, each
/// core's own rows in core order (empty for a core that did not answer).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StageReport {
    pub total: Vec<StageLatency>,
    pub cores: Vec<Vec<StageLatency>>,
}

/// When a produce request crossed each stage boundary, in ns on the
/// engine's stage clock. The core fills in `arrived_ns` to `durable_ns`; the
/// server the rest.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StageTrace {
    /// The receive completion that finished the request's frame.
    pub received_ns: u64,
    /// Handed to the core owning the partition.
    pub arrived_ns: u64,
    /// Copied into the log's commit buffer.
    pub staged_ns: u64,
    /// The write covering it completed.
    pub written_ns: u64,
    /// The fdatasync covering it completed; `None` when the fsync policy
    /// acknowledged it before one did (`interval`, `never`).
    pub durable_ns: Option<u64>,
    /// The reply was queued on the connection's core.
    pub queued_ns: u64,
}

impl StageTrace {
    /// The trace of a request made of several appends (a Produce of several
    /// batches): it crosses a boundary when its last append does.
    pub fn join(self, other: StageTrace) -> StageTrace {
        StageTrace {
            received_ns: self.received_ns.max(other.received_ns),
            arrived_ns: self.arrived_ns.max(other.arrived_ns),
            staged_ns: self.staged_ns.max(other.staged_ns),
            written_ns: self.written_ns.max(other.written_ns),
            durable_ns: match (self.durable_ns, other.durable_ns) {
                (Some(a), Some(b)) => Some(a.max(b)),
                _ => None,
            },
            queued_ns: self.queued_ns.max(other.queued_ns),
        }
    }
}

/// One core's histograms (or several cores' merged).
#[derive(Debug, Clone)]
pub struct StageHistograms {
    hists: Vec<Histogram<u64>>,
}

impl Default for StageHistograms {
    fn default() -> Self {
        Self::new()
    }
}

/// Microseconds from `from_ns` to `to_ns`; 0 if the clock readings are out
/// of order (two cores' readings can differ by the few ns it takes to read one).
fn us(from_ns: u64, to_ns: u64) -> u64 {
    to_ns.saturating_sub(from_ns) / 1000
}

impl StageHistograms {
    pub fn new() -> StageHistograms {
        let hist = Histogram::new_with_bounds(1, LATENCY_US_MAX, SIGNIFICANT_DIGITS).expect("constant histogram bounds are valid");
        StageHistograms { hists: vec![hist; STAGES.len()] }
    }

    /// Records a produce request whose reply finished sending at `sent_ns`.
    pub fn record_produce(&mut self, t: &StageTrace, sent_ns: u64) {
        let acked_from_ns = t.durable_ns.unwrap_or(t.written_ns);
        self.hists[RECEIVE].saturating_record(us(t.received_ns, t.arrived_ns));
        self.hists[APPEND].saturating_record(us(t.arrived_ns, t.staged_ns));
        self.hists[WRITE].saturating_record(us(t.staged_ns, t.written_ns));
        if let Some(durable_ns) = t.durable_ns {
            self.hists[FSYNC].saturating_record(us(t.written_ns, durable_ns));
        }
        self.hists[ACK].saturating_record(us(acked_from_ns, t.queued_ns));
        self.hists[SEND].saturating_record(us(t.queued_ns, sent_ns));
        self.hists[TOTAL].saturating_record(us(t.received_ns, sent_ns));
    }

    /// Records a fetch received at `received_ns`, answered at `queued_ns`,
    /// that waited `parked_ns` of that as a long poll.
    pub fn record_fetch(&mut self, received_ns: u64, parked_ns: u64, queued_ns: u64) {
        self.hists[FETCH].saturating_record(us(received_ns, queued_ns.saturating_sub(parked_ns)));
    }

    /// Adds `other`'s samples to these.
    pub fn merge(&mut self, other: &StageHistograms) {
        for (h, o) in self.hists.iter_mut().zip(&other.hists) {
            // Same bounds on both sides, and the top saturates: cannot fail.
            h.add(o).expect("histograms of equal bounds add");
        }
    }

    /// Each stage's histogram (microseconds), in [`STAGES`] order, for an
    /// exporter that needs the distribution rather than its percentiles.
    pub fn histograms(&self) -> impl Iterator<Item = (&'static str, &Histogram<u64>)> {
        STAGES.iter().copied().zip(&self.hists)
    }

    pub fn reset(&mut self) {
        self.hists.iter_mut().for_each(Histogram::reset);
    }

    /// One row per stage, in [`STAGES`] order.
    pub fn summary(&self) -> Vec<StageLatency> {
        STAGES
            .iter()
            .zip(&self.hists)
            .map(|(stage, h)| {
                let q = |quantile| if h.is_empty() { 0 } else { h.value_at_quantile(quantile) };
                StageLatency {
                    stage: stage.to_string(),
                    count: h.len(),
                    p50_us: q(0.5),
                    p90_us: q(0.9),
                    p99_us: q(0.99),
                    p999_us: q(0.999),
                    max_us: if h.is_empty() { 0 } else { h.max() },
                }
            })
            .collect()
    }
}

/// A core's stage histograms in two parts: since the last reset (what the
/// `Stats` api reads, and resets), and everything before it. `/metrics`
/// exports their sum, so a `strom stat` reading with its reset never makes
/// Prometheus see a counter go down. A reset folds the first part into the
/// second (a merge of the core's histograms, off the hot path, at most once
/// per Stats request); recording touches the first part only, as before.
#[derive(Debug, Clone, Default)]
pub struct CoreStages {
    pub since_reset: StageHistograms,
    before_reset: StageHistograms,
}

impl CoreStages {
    pub fn record_produce(&mut self, t: &StageTrace, sent_ns: u64) {
        self.since_reset.record_produce(t, sent_ns);
    }

    pub fn record_fetch(&mut self, received_ns: u64, parked_ns: u64, queued_ns: u64) {
        self.since_reset.record_fetch(received_ns, parked_ns, queued_ns);
    }

    /// Starts a new interval for the `Stats` api; the cumulative sum is unchanged.
    pub fn reset(&mut self) {
        self.before_reset.merge(&self.since_reset);
        self.since_reset.reset();
    }

    /// Every sample since the core started (what `/metrics` exports).
    pub fn cumulative(&self) -> StageHistograms {
        let mut all = self.before_reset.clone();
        all.merge(&self.since_reset);
        all
    }
}

/// The rows as a table, one line per stage, for logs and reports.
pub fn format_table(rows: &[StageLatency]) -> String {
    let mut out =
        format!("{:<8} {:>10} {:>9} {:>9} {:>9} {:>9} {:>9}\n", "stage", "count", "p50_us", "p90_us", "p99_us", "p999_us", "max_us");
    for r in rows {
        out.push_str(&format!(
            "{:<8} {:>10} {:>9} {:>9} {:>9} {:>9} {:>9}\n",
            r.stage, r.count, r.p50_us, r.p90_us, r.p99_us, r.p999_us, r.max_us
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn trace(base: u64) -> StageTrace {
        StageTrace {
            received_ns: base,
            arrived_ns: base + 2_000,
            staged_ns: base + 5_000,
            written_ns: base + 105_000,
            durable_ns: Some(base + 1_105_000),
            queued_ns: base + 1_108_000,
        }
    }

    #[test]
    fn stages_tile_the_total_and_merge() {
        // Proves: one request's stages are the differences of its trace and add up to its total; merging two cores
        // adds their counts; a reset empties every stage; an ack before any fsync records no fsync sample.
        let mut a = StageHistograms::new();
        a.record_produce(&trace(1_000_000), 1_000_000 + 1_110_000);
        let rows = a.summary();
        let by = |name: &str| rows.iter().find(|r| r.stage == name).unwrap().clone();
        assert_eq!([by("receive").max_us, by("append").max_us, by("write").max_us], [2, 3, 100]);
        assert_eq!([by("fsync").max_us, by("ack").max_us, by("send").max_us, by("total").max_us], [1000, 3, 2, 1110]);
        assert_eq!(by("fetch").count, 0);
        let mut b = StageHistograms::new();
        b.record_produce(&StageTrace { durable_ns: None, ..trace(0) }, 1_110_000);
        b.record_fetch(0, 400_000, 500_000);
        a.merge(&b);
        let rows = a.summary();
        let counts: Vec<u64> = rows.iter().map(|r| r.count).collect();
        assert_eq!(counts, [2, 2, 2, 1, 2, 2, 2, 1]);
        assert_eq!(rows[FETCH].max_us, 100, "the parked time is left out");
        a.reset();
        assert!(a.summary().iter().all(|r| r.count == 0 && r.max_us == 0 && r.p50_us == 0));
    }

    #[test]
    fn a_reset_leaves_the_cumulative_histograms_whole() {
        // Proves: a core's reset empties what the Stats api reads but not the cumulative sum /metrics exports,
        // which keeps counting across resets.
        let mut c = CoreStages::default();
        c.record_produce(&trace(0), 1_110_000);
        c.reset();
        assert_eq!(c.since_reset.summary()[TOTAL].count, 0);
        c.record_produce(&trace(0), 1_110_000);
        c.record_fetch(0, 0, 5_000);
        assert_eq!(c.since_reset.summary()[TOTAL].count, 1);
        let all = c.cumulative().summary();
        assert_eq!([all[TOTAL].count, all[FSYNC].count, all[FETCH].count], [2, 2, 1]);
        assert_eq!(all[TOTAL].max_us, 1110);
    }

    #[test]
    fn reset_fold_costs_less_than_recording_twice() {
        // Proves nothing by timing (the machine is shared): it prints what a reset's fold costs beside what recording
        // every request into a second, cumulative set would add, the two ways to keep /metrics cumulative
        // (ARCHITECTURE.md, per-stage latency); and checks the fold kept every sample.
        const REQUESTS: u64 = 100_000;
        let mut c = CoreStages::default();
        let started = std::time::Instant::now();
        for i in 0..REQUESTS {
            c.record_produce(&trace(i * 1_000), i * 1_000 + 1_110_000 + (i % 5_000) * 1_000);
        }
        let record_ns = started.elapsed().as_nanos() as f64 / REQUESTS as f64;
        let started = std::time::Instant::now();
        c.reset();
        let fold_us = started.elapsed().as_micros();
        println!(
            "record_produce: {record_ns:.0} ns a request (recording twice adds as much to every request); \
             a reset's fold: {fold_us} us once per Stats request"
        );
        assert_eq!(c.cumulative().summary()[TOTAL].count, REQUESTS);
    }

    #[test]
    fn joined_traces_cross_each_boundary_last() {
        // Proves: a multi-batch request's trace takes the latest instant of each boundary, and is durable only if all are.
        let (x, y) = (trace(0), trace(10));
        let j = x.join(y);
        assert_eq!(j, y);
        assert_eq!(x.join(StageTrace { durable_ns: None, ..y }).durable_ns, None);
    }
}
