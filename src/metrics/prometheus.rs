//! The Prometheus text exposition format (version 0.0.4) of a server's
//! metrics, and its health, rendered from what the cores reported: pure
//! functions, no I/O, so a test checks them on made-up registries.
//!
//! Every registry metric becomes one family with a `core` label (its name,
//! kind and help are the registry's, [`super::Metric`]); each stage's
//! latency one histogram family with `stage` and `core` labels, in
//! seconds, over the fixed bounds [`BUCKET_BOUNDS_US`]; beside them the
//! topics and partitions the server has.
use std::fmt::Write;

use hdrhistogram::Histogram;

use super::requests::{self, RequestCounts};
use super::{Kind, Metric, Metrics};
use crate::proto::ErrorCode;
use crate::stats::StageHistograms;

/// The `Content-Type` of what [`render`] writes.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// The upper bounds of the latency buckets, in microseconds (the `le`
/// labels, in seconds): 1-2.5-5 per decade from 10 µs, where a fsync's
/// 90 µs and a noisy host's 5 ms tails both fall, to the histograms' top
/// (one minute). Fixed, so that every scrape and every core have the same
/// buckets (Prometheus sums them across series).
pub const BUCKET_BOUNDS_US: [u64; 20] = [
    10, 25, 50, 100, 250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 500_000, 1_000_000, 2_500_000, 5_000_000,
    10_000_000, 60_000_000,
];

/// What one scrape gathered: each core's registry and stage histograms, in
/// core order (None for a core that did not answer), and the catalog's size.
pub struct Scrape {
    pub metrics: Vec<Option<Metrics>>,
    pub stages: Vec<Option<StageHistograms>>,
    pub requests: Vec<Option<RequestCounts>>,
    pub topics: u64,
    pub partitions: u64,
}

/// The exposition of `scrape`, every family with its HELP and TYPE lines.
pub fn render(scrape: &Scrape) -> String {
    let mut out = String::new();
    for &m in Metric::ALL {
        if m == Metric::Requests {
            // Rendered by api and protocol instead (its labels sum to it): `render_requests`.
            continue;
        }
        let kind = match m.kind() {
            Kind::Counter => "counter",
            Kind::Gauge => "gauge",
        };
        family_head(&mut out, m.name(), m.help(), kind);
        for (core, reg) in scrape.metrics.iter().enumerate() {
            if let Some(reg) = reg {
                let _ = writeln!(out, "{}{{core=\"{core}\"}} {}", m.name(), reg.get(m));
            }
        }
    }
    family_head(&mut out, "strom_topics", "Topics the server has.", "gauge");
    let _ = writeln!(out, "strom_topics {}", scrape.topics);
    family_head(&mut out, "strom_partitions", "Partitions of all topics together.", "gauge");
    let _ = writeln!(out, "strom_partitions {}", scrape.partitions);
    render_stages(&mut out, &scrape.stages);
    render_requests(&mut out, &scrape.requests);
    out
}

/// Requests by protocol and api, their bytes, and error replies by api and
/// code: only the nonzero cells (the full cross product would be thousands
/// of lines of 0).
fn render_requests(out: &mut String, cores: &[Option<RequestCounts>]) {
    const REQUESTS: &str = "strom_requests_total";
    debug_assert_eq!(Metric::Requests.name(), REQUESTS);
    render_cells(
        out,
        REQUESTS,
        "Requests by protocol and api (the broker command they decoded into), by the core of the connection.",
        cores,
        |c| c.requests_nonzero().map(|(protocol, api, n)| (format!("protocol=\"{protocol}\",api=\"{api}\""), n)).collect(),
    );
    render_cells(
        out,
        "strom_request_bytes_total",
        "Bytes of requests received (direction in) and of their replies queued (out; a subscription's pushes under subscribe), by protocol and api.",
        cores,
        |c| {
            let cells = c.bytes_nonzero();
            cells
                .map(|(protocol, api, direction, n)| (format!("protocol=\"{protocol}\",api=\"{api}\",direction=\"{direction}\""), n))
                .collect()
        },
    );
    render_cells(
        out,
        "strom_request_errors_total",
        "Error replies by protocol, api and error code (the native protocol's, docs/PROTOCOL.md).",
        cores,
        |c| {
            let cells = c.errors_nonzero();
            cells
                .map(|(protocol, api, code, n)| (format!("protocol=\"{protocol}\",api=\"{api}\",code=\"{}\"", code_label(code)), n))
                .collect()
        },
    );
}

/// One counter family of [`RequestCounts`] cells: each core's `cells`
/// (labels after `core`, and the count).
fn render_cells(
    out: &mut String,
    name: &str,
    help: &str,
    cores: &[Option<RequestCounts>],
    cells: impl Fn(&RequestCounts) -> Vec<(String, u64)>,
) {
    family_head(out, name, help, "counter");
    for (core, counts) in cores.iter().enumerate() {
        let Some(counts) = counts else { continue };
        for (labels, n) in cells(counts) {
            let _ = writeln!(out, "{name}{{core=\"{core}\",{labels}}} {n}");
        }
    }
}

/// An error code's label: the native code's name in snake case ("unknown_topic").
fn code_label(code: usize) -> String {
    match code {
        requests::CODE_UNDECODABLE => "undecodable".into(),
        requests::CODE_OTHER => "other".into(),
        c => match ErrorCode::from_code(c as u16) {
            Some(e) => snake(&format!("{e:?}")),
            None => "other".into(),
        },
    }
}

fn snake(camel: &str) -> String {
    let mut out = String::new();
    for (i, ch) in camel.chars().enumerate() {
        if ch.is_ascii_uppercase() && i > 0 {
            out.push('_');
        }
        out.push(ch.to_ascii_lowercase());
    }
    out
}

fn family_head(out: &mut String, name: &str, help: &str, kind: &str) {
    // HELP text escapes only `\` and newlines (the format's rule); ours have neither, but a future one might.
    let help = help.replace('\\', "\\\\").replace('\n', "\\n");
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
}

/// The stage histograms: cumulative buckets, `_sum` and `_count`, per
/// stage and core.
fn render_stages(out: &mut String, stages: &[Option<StageHistograms>]) {
    const NAME: &str = "strom_stage_latency_seconds";
    family_head(
        out,
        NAME,
        "Latency of each stage of produce requests (receive, append, write, fsync, ack, send, total) and of fetches, by the core of the connection.",
        "histogram",
    );
    for (core, hists) in stages.iter().enumerate() {
        let Some(hists) = hists else { continue };
        for (stage, h) in hists.histograms() {
            let labels = format!("stage=\"{stage}\",core=\"{core}\"");
            for (bound_us, count) in BUCKET_BOUNDS_US.iter().zip(cumulative_counts(h)) {
                let _ = writeln!(out, "{NAME}_bucket{{{labels},le=\"{}\"}} {count}", seconds(*bound_us));
            }
            let _ = writeln!(out, "{NAME}_bucket{{{labels},le=\"+Inf\"}} {}", h.len());
            let sum_us: u128 = h.iter_recorded().map(|v| u128::from(v.value_iterated_to()) * u128::from(v.count_at_value())).sum();
            let _ = writeln!(out, "{NAME}_sum{{{labels}}} {}", sum_us as f64 / 1e6);
            let _ = writeln!(out, "{NAME}_count{{{labels}}} {}", h.len());
        }
    }
}

/// Samples at or below each of [`BUCKET_BOUNDS_US`]. A sample counts at its
/// HDR bucket's highest equivalent value, so one is never put below a bound
/// it might exceed (below 2,048 µs HDR's buckets are exact at 3 digits).
fn cumulative_counts(h: &Histogram<u64>) -> [u64; BUCKET_BOUNDS_US.len()] {
    let mut counts = [0; BUCKET_BOUNDS_US.len()];
    for v in h.iter_recorded() {
        let value_us = v.value_iterated_to();
        if let Some(first) = BUCKET_BOUNDS_US.iter().position(|&b| value_us <= b) {
            counts[first] += v.count_at_value();
        }
    }
    for i in 1..counts.len() {
        counts[i] += counts[i - 1];
    }
    counts
}

/// `us` microseconds as a Prometheus float in seconds ("0.00001", "60").
fn seconds(us: u64) -> String {
    let s = format!("{}.{:06}", us / 1_000_000, us % 1_000_000);
    s.trim_end_matches('0').trim_end_matches('.').to_string()
}

/// Whether every log accepts writes: `Ok` if so, else why not, one
/// sentence per core in trouble (what `/health` answers 503 with).
pub fn health(metrics: &[Option<Metrics>]) -> Result<(), String> {
    let mut reasons = Vec::new();
    for (core, reg) in metrics.iter().enumerate() {
        match reg {
            None => reasons.push(format!("core {core} did not report its metrics (its thread is stuck or gone)")),
            Some(reg) => {
                if reg.log.failed > 0 {
                    reasons.push(format!(
                        "core {core}: {} log(s) failed a write or fsync and accept no writes until strom is restarted (see its log lines)",
                        reg.log.failed
                    ));
                }
                if reg.log.disk_full > 0 {
                    reasons.push(format!("core {core}: {} log(s) refuse writes: the disk is full (free space)", reg.log.disk_full));
                }
            }
        }
    }
    if reasons.is_empty() { Ok(()) } else { Err(reasons.join("\n")) }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stats::StageTrace;

    #[test]
    fn families_have_help_type_and_a_core_label() {
        // Proves: every registry metric is exported once with HELP and TYPE and one sample per core that answered;
        // the stage histograms are cumulative, end with +Inf equal to _count, and _sum is in seconds.
        let mut m = Metrics::default();
        m.core.appends = 7;
        let mut h = StageHistograms::new();
        let t = StageTrace { received_ns: 0, arrived_ns: 0, staged_ns: 0, written_ns: 0, durable_ns: Some(90_000), queued_ns: 90_000 };
        h.record_produce(&t, 3_090_000);
        let mut r = RequestCounts::default();
        r.request(1, 0);
        r.error(1, 0, 5);
        let text = render(&Scrape {
            metrics: vec![Some(m), None],
            stages: vec![Some(h), None],
            requests: vec![Some(r), None],
            topics: 2,
            partitions: 5,
        });
        for &metric in Metric::ALL {
            // Every family once: strom_requests_total by api instead of by core only.
            assert_eq!(text.matches(&format!("# TYPE {} ", metric.name())).count(), 1, "{}", metric.name());
        }
        assert!(text.contains("strom_appends_total{core=\"0\"} 7\n"));
        assert!(!text.contains("core=\"1\""), "a core that did not answer has no samples");
        assert!(text.contains("# TYPE strom_appends_total counter\n") && text.contains("# TYPE strom_logs_failed gauge\n"));
        assert!(text.contains("strom_partitions 5\n"));
        assert!(text.contains("strom_requests_total{core=\"0\",protocol=\"kafka\",api=\"produce\"} 1\n"), "{text}");
        assert!(text.contains("strom_request_errors_total{core=\"0\",protocol=\"kafka\",api=\"produce\",code=\"unknown_topic\"} 1\n"));
        let fsync = |suffix: &str| {
            let key = format!("strom_stage_latency_seconds{suffix}");
            text.lines().find(|l| l.starts_with(&key)).unwrap_or_else(|| panic!("{key}")).rsplit(' ').next().unwrap().to_string()
        };
        assert_eq!(fsync("_bucket{stage=\"fsync\",core=\"0\",le=\"0.00005\"}"), "0");
        assert_eq!(fsync("_bucket{stage=\"fsync\",core=\"0\",le=\"0.0001\"}"), "1");
        assert_eq!(fsync("_bucket{stage=\"fsync\",core=\"0\",le=\"+Inf\"}"), "1");
        assert_eq!(fsync("_count{stage=\"fsync\",core=\"0\"}"), "1");
        assert_eq!(fsync("_sum{stage=\"fsync\",core=\"0\"}"), "0.00009");
        assert_eq!(fsync("_bucket{stage=\"send\",core=\"0\",le=\"0.0025\"}"), "0", "3 ms is above 2.5 ms");
        assert_eq!(fsync("_bucket{stage=\"send\",core=\"0\",le=\"0.005\"}"), "1");
    }

    #[test]
    fn bounds_print_as_seconds() {
        // Proves: the le labels are plain decimal seconds without trailing zeros.
        assert_eq!([seconds(10), seconds(2_500), seconds(1_000_000), seconds(60_000_000)], ["0.00001", "0.0025", "1", "60"]);
    }

    #[test]
    fn health_names_each_core_in_trouble() {
        // Proves: healthy registries are healthy; a failed log, a full disk and a silent core each make it unhealthy,
        // and the reason names the core and what to do.
        let ok = Metrics::default();
        assert_eq!(health(&[Some(ok), Some(ok)]), Ok(()));
        let mut failed = ok;
        failed.log.failed = 1;
        let mut full = ok;
        full.log.disk_full = 2;
        let why = health(&[Some(failed), Some(full), None]).unwrap_err();
        assert!(why.contains("core 0: 1 log(s) failed") && why.contains("restarted"), "{why}");
        assert!(why.contains("core 1: 2 log(s) refuse writes: the disk is full"), "{why}");
        assert!(why.contains("core 2 did not report"), "{why}");
    }
}
