//! What a run measured, and its four renderings: a table on stdout, JSON
//! (`--json`, schema in docs/LOADGEN.md), HdrHistogram percentile
//! distributions (`--hgrm`) and an SVG of the latency percentile spectra
//! (`--svg`). Sizes are MB = 10^6 bytes of record values; latencies are
//! microseconds, percentiles of histograms pooled over every connection.
use std::fmt::Write as _;
use std::path::Path;

use hdrhistogram::Histogram;
use serde_json::{Value, json};

use strom::server::StageLatency;

use crate::ceiling::{DiskCeiling, DiskReadCeiling, TcpCeiling};
use crate::hist::Latencies;
use crate::verdict::verdicts;
use crate::verify::VerifyCounts;

/// Past this share of its threads' time on a CPU, loadgen says it may be the bottleneck.
const LOADGEN_SATURATED: f64 = 0.9;

#[derive(Debug, Default)]
pub struct Report {
    /// The resolved configuration, as JSON (also printed in the header line).
    pub config: Value,
    pub headline: String,
    pub window_secs: f64,
    /// Seconds run before the window (not measured) and after it, while
    /// producers waited for their last acks and consumers read to the end.
    pub warmup_secs: f64,
    pub drain_secs: f64,
    /// Bytes of an average record value (`--msg-size`, but for the last
    /// value of a batch, which fills it to exactly `--batch-bytes`).
    pub value_bytes_avg: f64,
    /// Tail consumers, each reading every partition.
    pub consumers: usize,
    /// Open loop: the records per second offered (0 or None: closed loop).
    pub offered_records_per_sec: Option<f64>,
    /// Records acknowledged in the whole run: every phase, warm-up and drain included.
    pub acked_run_records: u64,
    /// The read-back after the run, when no consumer read at the tail.
    pub readback: Option<ReadBack>,
    /// The broker's reads during the read-back (embedded only): bytes the
    /// disk read, batch bytes served, and those served from disk reads.
    pub readback_disk: Option<(u64, u64, u64)>,
    pub produced_records: u64,
    pub produced_requests: u64,
    pub consumed_records: u64,
    pub consumed_requests: u64,
    pub lat: Latencies,
    pub verify: VerifyCounts,
    pub errors: std::collections::BTreeMap<String, u64>,
    pub indeterminate: u64,
    pub sends: u64,
    pub sends_late: u64,
    pub open_loop: bool,
    /// The disk loop at the broker's average write size, into fresh space.
    pub disk: Option<DiskCeiling>,
    /// The disk's best correct group commit (1 MiB over pre-written space):
    /// the ceiling the produce verdicts use.
    pub disk_best: Option<DiskCeiling>,
    /// Sequential 1 MiB O_DIRECT reads: the ceiling for the read-back.
    pub disk_read: Option<DiskReadCeiling>,
    pub tcp: Option<TcpCeiling>,
    /// The broker's log: O_DIRECT writes, fdatasyncs and bytes, in the window (embedded only).
    pub log_writes: Option<(u64, u64, u64)>,
    /// The broker's own per-stage latency (its Stats api), for the window.
    pub stages: Vec<StageLatency>,
    pub loadgen_cpu_cores: f64,
    pub broker_cpu_cores: Option<f64>,
    /// Time threads spent runnable waiting for a CPU in the window (embedded only).
    pub run_queue: Option<crate::outside::RunQueueWait>,
    pub threads: usize,
    /// With `--retention-bytes`: the fill and the window's segment recycling.
    pub steady: Option<crate::steady::SteadyState>,
    /// Lines about phases before the window (prefill, rate probe).
    pub notes: Vec<String>,
    /// `--kafka`: the same workload produced through the Kafka listener.
    pub kafka: Option<Box<Report>>,
}

/// The read-back: records checked from the broker after the run, and how long it took.
#[derive(Debug, Clone, Copy, Default)]
pub struct ReadBack {
    pub records: u64,
    pub bytes: u64,
    pub secs: f64,
}

impl ReadBack {
    /// Record value bytes read back per second, in MB.
    pub fn mb_per_sec(&self) -> f64 {
        if self.secs > 0.0 { self.bytes as f64 / self.secs / 1e6 } else { 0.0 }
    }
}

impl Report {
    pub fn produce_mb_per_sec(&self) -> f64 {
        self.produced_records as f64 * self.value_bytes_avg / 1e6 / self.window_secs
    }
    pub fn consume_mb_per_sec(&self) -> f64 {
        self.consumed_records as f64 * self.value_bytes_avg / 1e6 / self.window_secs
    }
    pub fn errors_total(&self) -> u64 {
        self.errors.values().sum()
    }
    /// Whether the run is a failure: anything lost, duplicated, reordered or
    /// corrupt, or any error.
    pub fn failed(&self) -> bool {
        self.run_failed() || self.kafka.as_ref().is_some_and(|k| k.failed())
    }
    /// Whether this run alone failed (not `--kafka`'s second run).
    fn run_failed(&self) -> bool {
        !self.verify.is_clean() || self.errors_total() > 0
    }
    /// loadgen's own threads were nearly always on a CPU: the broker may not have been the limit.
    pub fn loadgen_saturated(&self) -> bool {
        self.threads > 0 && self.loadgen_cpu_cores / self.threads as f64 > LOADGEN_SATURATED
    }
    pub fn avg_write_bytes(&self) -> Option<u64> {
        self.log_writes.and_then(|(writes, _, bytes)| (writes > 0).then(|| bytes / writes))
    }
}

fn percentiles(h: &Histogram<u64>) -> Value {
    json!({
        "count": h.len(),
        "p50": h.value_at_quantile(0.5),
        "p90": h.value_at_quantile(0.9),
        "p99": h.value_at_quantile(0.99),
        "p999": h.value_at_quantile(0.999),
        "p9999": h.value_at_quantile(0.9999),
        "max": h.max(),
    })
}

fn disk_json(d: &DiskCeiling) -> Value {
    json!({
        "write_bytes": d.write_bytes, "writes": d.writes, "mb_per_sec": d.mb_per_sec(),
        "prewritten_file_bytes": d.prewritten_file_bytes,
        "latency_us": {"p50": d.latency_us(0.5), "p99": d.latency_us(0.99), "max": d.latency_us(1.0)},
    })
}

fn ceilings_json(r: &Report) -> Value {
    let mut ceilings = json!({});
    if let Some(d) = &r.disk {
        ceilings["disk_write_fdatasync"] = disk_json(d);
        if !r.open_loop {
            ceilings["produce_ratio_to_disk"] = json!(r.produce_mb_per_sec() / d.mb_per_sec());
        }
    }
    if let Some(d) = &r.disk_best {
        ceilings["disk_best_write"] = disk_json(d);
        if !r.open_loop {
            ceilings["produce_ratio_to_disk_best"] = json!(r.produce_mb_per_sec() / d.mb_per_sec());
        }
    }
    if let Some(d) = &r.disk_read {
        ceilings["disk_read"] = json!({
            "read_bytes": d.read_bytes, "reads": d.reads, "mb_per_sec": d.mb_per_sec(), "file_bytes": d.file_bytes,
            "latency_us": {"p50": d.latency_us(0.5), "p99": d.latency_us(0.99), "max": d.latency_us(1.0)},
        });
        if let Some(b) = r.readback {
            ceilings["read_back_ratio_to_disk_read"] = json!(b.mb_per_sec() / d.mb_per_sec());
        }
    }
    if let Some(t) = &r.tcp {
        ceilings["loopback_tcp"] = json!({"mb_per_sec": t.mb_per_sec()});
        if r.consumers > 0 {
            ceilings["consume_ratio_to_loopback"] = json!(r.consume_mb_per_sec() / t.mb_per_sec());
        }
        ceilings["produce_ratio_to_loopback"] = json!(r.produce_mb_per_sec() / t.mb_per_sec());
    }
    ceilings
}

pub fn to_json(r: &Report) -> Value {
    let secs = r.window_secs;
    let mut server = json!({ "stages_us": r.stages.iter().map(|s| json!({
        "stage": s.stage, "count": s.count, "p50": s.p50_us, "p90": s.p90_us, "p99": s.p99_us, "p999": s.p999_us, "max": s.max_us,
    })).collect::<Vec<_>>() });
    if let Some((writes, fsyncs, bytes)) = r.log_writes {
        server["log"] = json!({"writes": writes, "fdatasyncs": fsyncs, "bytes": bytes, "avg_write_bytes": r.avg_write_bytes()});
    }
    if let Some(st) = &r.steady {
        let ((recycled, reused), (recycled_all, reused_all)) = (st.in_window(), st.window_after);
        server["segments"] = json!({"recycled": recycled, "reused": reused, "recycled_total": recycled_all, "reused_total": reused_all});
    }
    server["outside"] = crate::outside::json(r);
    let bytes = |records: u64| (records as f64 * r.value_bytes_avg).round() as u64;
    let consume = (r.consumers > 0).then(|| {
        json!({
            "records": r.consumed_records,
            "bytes": bytes(r.consumed_records),
            "requests": r.consumed_requests,
            "records_per_sec": r.consumed_records as f64 / secs,
            "mb_per_sec": r.consume_mb_per_sec(),
            "fetch_latency_us": percentiles(&r.lat.fetch_us),
        })
    });
    let verdicts: Vec<Value> =
        verdicts(r).iter().map(|v| json!({"figure": v.figure, "value": v.value, "target": v.target, "ok": v.ok, "text": v.text})).collect();
    json!({
        "schema": "strom-loadgen/4",
        "config": r.config,
        "window_secs": secs,
        "warmup_secs": r.warmup_secs,
        "drain_secs": r.drain_secs,
        "produce": {
            "records": r.produced_records,
            "bytes": bytes(r.produced_records),
            "requests": r.produced_requests,
            "records_per_sec": r.produced_records as f64 / secs,
            "mb_per_sec": r.produce_mb_per_sec(),
            "ack_latency_us": percentiles(&r.lat.ack_us),
            "open_loop": r.open_loop,
            "offered_records_per_sec": r.offered_records_per_sec,
            "sends": r.sends,
            "sends_late": r.sends_late,
        },
        "consume": consume,
        "e2e_latency_us": (r.consumers > 0).then(|| percentiles(&r.lat.e2e_us)),
        "errors": { "total": r.errors_total(), "by_kind": r.errors, "indeterminate": r.indeterminate },
        "verify": {
            "checked": r.verify.checked, "lost": r.verify.lost, "duplicated": r.verify.duplicated,
            "reordered": r.verify.reordered, "corrupt": r.verify.corrupt, "foreign": r.verify.foreign, "expired": r.verify.expired,
            "clean": r.verify.is_clean(),
            "acked_run_records": r.acked_run_records,
            "readback": r.readback.map(|b| json!({"records": b.records, "bytes": b.bytes, "secs": b.secs})),
        },
        "read_back": r.readback.map(|b| json!({"records": b.records, "bytes": b.bytes, "secs": b.secs, "mb_per_sec": b.mb_per_sec()})),
        "read_back_disk": r.readback_disk.map(|(disk, served, from_disk)| json!({
            "disk_bytes": disk, "served_bytes": served, "served_from_disk_bytes": from_disk,
            "disk_per_served_from_disk": disk as f64 / from_disk.max(1) as f64,
        })),
        "verdicts": verdicts,
        "ceilings": ceilings_json(r),
        "server": server,
        "loadgen_cpu": { "cores": r.loadgen_cpu_cores, "threads": r.threads, "saturated": r.loadgen_saturated() },
        "broker_cpu": r.broker_cpu_cores.map(|c| json!({"cores": c})),
        "notes": r.notes,
        "steady_state": r.steady.map(|st| json!({
            "retention_bytes": st.retention_bytes, "fill_secs": st.fill_secs, "fill_records": st.fill_records,
        })),
        // --kafka: the run through the Kafka listener, a report of this schema.
        "kafka": r.kafka.as_deref().map(to_json),
    })
}

pub fn group(n: f64) -> String {
    let s = format!("{:.0}", n);
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i) % 3 == 0 && c != '-' {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// A latency as a person reads it in a table: microseconds up to 10 ms,
/// then milliseconds up to a second, then seconds (six-digit microseconds
/// are hard to read).
pub fn lat_text(us: u64) -> String {
    match us {
        0..10_000 => format!("{us} us"),
        10_000..1_000_000 => format!("{:.1} ms", us as f64 / 1e3),
        _ => format!("{:.2} s", us as f64 / 1e6),
    }
}

fn lat_row(name: &str, h: &Histogram<u64>) -> String {
    if h.is_empty() {
        return format!("{name:<14} (none in the window)\n");
    }
    let q = |p: f64| lat_text(h.value_at_quantile(p));
    format!(
        "{name:<14} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9}   ({} samples)\n",
        q(0.5),
        q(0.9),
        q(0.99),
        q(0.999),
        q(0.9999),
        lat_text(h.max()),
        group(h.len() as f64)
    )
}

/// The table: the run's section, and with `--kafka` the Kafka run's
/// section and the two side by side.
pub fn table(r: &Report) -> String {
    let mut t = section(r);
    if let Some(k) = &r.kafka {
        t += &crate::compare::after(r, k);
    }
    t
}

/// One run's figures, ending with its own result.
pub fn section(r: &Report) -> String {
    let mut t = String::new();
    let secs = r.window_secs;
    let _ = writeln!(t, "{}", r.headline);
    for n in &r.notes {
        let _ = writeln!(t, "  {n}");
    }
    let drained = if r.consumers > 0 { "last acks, consumers reading to the end" } else { "last acks" };
    let _ = writeln!(
        t,
        "  window: {secs:.1} s measured, after {:.1} s of warm-up (not counted); then {:.2} s of drain ({drained}; not counted)",
        r.warmup_secs, r.drain_secs
    );
    throughput_rows(&mut t, r);
    let _ = writeln!(t, "\nlatency              p50       p90       p99     p99.9    p99.99       max");
    t += &lat_row("  produce ack", &r.lat.ack_us);
    if r.consumers > 0 {
        t += &lat_row("  end-to-end", &r.lat.e2e_us);
        t += &lat_row("  fetch", &r.lat.fetch_us);
    }
    if r.open_loop {
        let _ = writeln!(
            t,
            "  (open loop: measured from each batch's due time; {} of {} sends went out over 1 ms late)",
            r.sends_late, r.sends
        );
    }
    stage_rows(&mut t, r);
    t += &crate::outside::rows(r);
    ceiling_rows(&mut t, r);
    verify_rows(&mut t, r);
    let broker = r.broker_cpu_cores.map_or(String::new(), |c| format!(", embedded broker {c:.2} cores"));
    let _ = writeln!(t, "cpu      loadgen {:.2} cores over {} threads{broker}", r.loadgen_cpu_cores, r.threads);
    if r.loadgen_saturated() {
        let _ = writeln!(
            t,
            "warning  loadgen's threads were busy {:.0}% of the time: it may be the bottleneck, so these figures are a lower bound (try --threads)",
            100.0 * r.loadgen_cpu_cores / r.threads.max(1) as f64
        );
    }
    let list = verdicts(r);
    if !list.is_empty() {
        let _ = writeln!(t, "\nverdict (targets: docs/LOADGEN.md)");
        for v in &list {
            let _ = writeln!(t, "  {:<6} {}", if v.ok { "ok" } else { "below" }, v.text);
        }
    }
    let _ = writeln!(t, "result   {}", if r.run_failed() { "FAILED" } else { "ok" });
    t
}

fn throughput_rows(t: &mut String, r: &Report) {
    let secs = r.window_secs;
    let _ = writeln!(t, "\nthroughput over {secs:.1} s      records      records/s       MB/s");
    let _ = writeln!(
        t,
        "  produce (acked)  {:>12} {:>14} {:>10.1}",
        group(r.produced_records as f64),
        group(r.produced_records as f64 / secs),
        r.produce_mb_per_sec()
    );
    if r.consumers > 0 {
        let _ = writeln!(
            t,
            "  consume          {:>12} {:>14} {:>10.1}   ({} consumer(s), each reading every record)",
            group(r.consumed_records as f64),
            group(r.consumed_records as f64 / secs),
            r.consume_mb_per_sec(),
            r.consumers
        );
        if r.consumed_records > r.produced_records * r.consumers as u64 {
            let _ = writeln!(
                t,
                "  (consume is over produce x consumers: records produced before the window, in the warm-up, were read inside it)"
            );
        }
    }
    if let Some(offered) = r.offered_records_per_sec.filter(|&o| o > 0.0) {
        let achieved = r.produced_records as f64 / secs;
        let _ = writeln!(
            t,
            "  open loop: offered {} records/s, achieved {} records/s (achieved / offered {:.2}x)",
            group(offered),
            group(achieved),
            achieved / offered
        );
    }
}

fn stage_rows(t: &mut String, r: &Report) {
    if !r.stages.is_empty() {
        let _ = writeln!(t, "\nbroker stages        p50       p90       p99     p99.9       max     count");
        for s in r.stages.iter().filter(|s| s.count > 0) {
            let _ = writeln!(
                t,
                "  {:<12} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9}",
                s.stage,
                lat_text(s.p50_us),
                lat_text(s.p90_us),
                lat_text(s.p99_us),
                lat_text(s.p999_us),
                lat_text(s.max_us),
                group(s.count as f64)
            );
        }
    }
    if let Some((writes, fsyncs, _)) = r.log_writes {
        let avg = r.avg_write_bytes().unwrap_or(0);
        let _ = writeln!(
            t,
            "  log: {} O_DIRECT writes of {:.0} KiB on average, {} fdatasyncs",
            group(writes as f64),
            avg as f64 / 1024.0,
            group(fsyncs as f64)
        );
    }
    if let Some(st) = &r.steady {
        let ((recycled, reused), (recycled_all, reused_all)) = (st.in_window(), st.window_after);
        let _ = writeln!(t, "  segments: {recycled} recycled by retention, {reused} rolls reused one (run: {recycled_all}, {reused_all})");
    }
}

/// The produce ratio's label against a disk ceiling named `what`.
pub fn produce_ratio_label(open_loop: bool, what: &str) -> String {
    // In open loop the rate is set by loadgen, not found: a ratio of it
    // to the disk says how loaded the disk was, not how fast Strom is.
    if open_loop { format!("produce (at the offered rate) / {what}") } else { format!("produce / {what}") }
}

/// What the best group commit is, in the words of its ratio's label.
pub const DISK_BEST_WHAT: &str = "disk best group commit (1 MiB over pre-written space)";
/// What the loop at the broker's write size is, in the words of its ratio's label.
pub const DISK_LOOP_WHAT: &str = "disk loop at the broker's write size";

fn ceiling_rows(t: &mut String, r: &Report) {
    if r.disk.is_some() || r.disk_best.is_some() || r.tcp.is_some() {
        let _ = writeln!(t, "\nmachine ceilings (same run)");
    }
    let disk_rows = [(&r.disk_best, DISK_BEST_WHAT, "over pre-written space"), (&r.disk, DISK_LOOP_WHAT, "appending to fresh space")];
    for (d, what, space) in disk_rows {
        let Some(d) = d else { continue };
        let _ = writeln!(
            t,
            "  disk  O_DIRECT write + fdatasync, {} KiB at a time {space}: {:.1} MB/s (p50 {}, p99 {})  -> {} {:.2}x",
            d.write_bytes / 1024,
            d.mb_per_sec(),
            lat_text(d.latency_us(0.5)),
            lat_text(d.latency_us(0.99)),
            produce_ratio_label(r.open_loop, what),
            r.produce_mb_per_sec() / d.mb_per_sec()
        );
    }
    if let Some((disk, served, from_disk)) = r.readback_disk {
        let _ = writeln!(
            t,
            "  read-back from the broker's disk: {:.1} MB read for {:.1} MB served from disk ({:.1} MB served in all): disk bytes read / served {:.2}",
            disk as f64 / 1e6,
            from_disk as f64 / 1e6,
            served as f64 / 1e6,
            disk as f64 / from_disk.max(1) as f64
        );
    }
    if let Some(d) = &r.disk_read {
        let ratio = r.readback.map_or(String::new(), |b| format!("  -> read-back / disk read {:.2}x", b.mb_per_sec() / d.mb_per_sec()));
        let _ = writeln!(
            t,
            "  disk  sequential O_DIRECT read, {} KiB at a time: {:.1} MB/s (p50 {}, p99 {}){ratio}",
            d.read_bytes / 1024,
            d.mb_per_sec(),
            lat_text(d.latency_us(0.5)),
            lat_text(d.latency_us(0.99)),
        );
    }
    if let Some(c) = &r.tcp {
        let consume =
            if r.consumers > 0 { format!("consume / loopback {:.2}x, ", r.consume_mb_per_sec() / c.mb_per_sec()) } else { String::new() };
        let _ = writeln!(
            t,
            "  loopback TCP, one stream: {:.1} MB/s  -> {consume}produce / loopback {:.2}x",
            c.mb_per_sec(),
            r.produce_mb_per_sec() / c.mb_per_sec()
        );
    }
}

fn verify_rows(t: &mut String, r: &Report) {
    let v = &r.verify;
    let _ = writeln!(
        t,
        "\nverify   {} records checked: {} lost, {} duplicated, {} reordered, {} corrupt{}",
        group(v.checked as f64),
        v.lost,
        v.duplicated,
        v.reordered,
        v.corrupt,
        if v.foreign > 0 { format!(" ({} of other runs skipped)", v.foreign) } else { String::new() }
    );
    if v.expired > 0 {
        let _ = writeln!(
            t,
            "         {} acknowledged records were dropped by retention before the read-back (not checked)",
            group(v.expired as f64)
        );
    }
    let how = match (r.readback, r.consumers) {
        (Some(b), _) => format!(
            "read back after the run from the broker: {} records ({:.1} MB) in {:.1} s, {:.1} MB/s, not in the figures above",
            group(b.records as f64),
            b.bytes as f64 / 1e6,
            b.secs,
            b.mb_per_sec()
        ),
        (None, 1) => "checked by the consumer as it read them".into(),
        (None, n) => format!("checked by each of the {n} consumers: every record counts once per consumer"),
    };
    let _ = writeln!(
        t,
        "         every record acknowledged in the run ({}: warm-up, window and drain, and any prefill or probe), not only the window's {}; {how}",
        group(r.acked_run_records as f64),
        group(r.produced_records as f64)
    );
    if r.errors.is_empty() {
        let _ = writeln!(t, "errors   none");
    } else {
        let list: Vec<String> = r.errors.iter().map(|(k, n)| format!("{k}: {n}")).collect();
        let _ = writeln!(t, "errors   {} ({}; {} batches indeterminate)", r.errors_total(), list.join(", "), r.indeterminate);
    }
}

/// HdrHistogram's percentile distribution text (as `outputPercentileDistribution`
/// prints it, values in microseconds), readable by its plotting tools.
pub fn hgrm(h: &Histogram<u64>) -> String {
    let mut t = String::new();
    let _ = writeln!(t, "{:>12} {:>14} {:>10} {:>14}\n", "Value", "Percentile", "TotalCount", "1/(1-Percentile)");
    if !h.is_empty() {
        for v in h.iter_quantiles(5) {
            let q = v.quantile_iterated_to();
            let inverse = if q < 1.0 { format!("{:>14.2}", 1.0 / (1.0 - q)) } else { format!("{:>14}", "") };
            let _ = writeln!(t, "{:>12.3} {:>2.12} {:>10} {}", v.value_iterated_to() as f64, q, v.count_since_last_iteration(), inverse);
        }
    }
    let _ = writeln!(t, "#[Mean    = {:>12.3}, StdDeviation   = {:>12.3}]", h.mean(), h.stdev());
    let _ = writeln!(t, "#[Max     = {:>12.3}, Total count    = {:>12}]", h.max() as f64, h.len());
    let _ = writeln!(t, "#[Buckets = {:>12}, SubBuckets     = {:>12}]", h.buckets(), h.distinct_values());
    t
}

pub fn write_hgrm(dir: &Path, r: &Report) -> Result<Vec<String>, String> {
    std::fs::create_dir_all(dir).map_err(|e| format!("--hgrm {}: {e}", dir.display()))?;
    let mut written = Vec::new();
    for (name, h) in [("produce_ack", &r.lat.ack_us), ("e2e", &r.lat.e2e_us), ("fetch", &r.lat.fetch_us)] {
        if h.is_empty() {
            continue;
        }
        let path = dir.join(format!("{name}.hgrm"));
        std::fs::write(&path, hgrm(h)).map_err(|e| format!("{}: {e}", path.display()))?;
        written.push(path.display().to_string());
    }
    Ok(written)
}

/// Latency percentile spectra in one SVG: x is the percentile on a log
/// scale of 1/(1-p) (0, 90, 99, 99.9, ... as HdrHistogram plots it), y the
/// latency on a log scale, one line per histogram.
pub fn svg(title: &str, series: &[(&str, &Histogram<u64>)]) -> String {
    const W: f64 = 960.0;
    const H: f64 = 520.0;
    const LEFT: f64 = 80.0;
    const RIGHT: f64 = 230.0;
    const TOP: f64 = 40.0;
    const BOTTOM: f64 = 60.0;
    const COLORS: [&str; 6] = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#17becf"];
    let series: Vec<&(&str, &Histogram<u64>)> = series.iter().filter(|(_, h)| !h.is_empty()).collect();
    let nines_max = series.iter().map(|(_, h)| ((h.len() as f64).log10()).floor().clamp(1.0, 6.0)).fold(2.0f64, f64::max);
    let lo = series.iter().map(|(_, h)| h.min().max(1)).min().unwrap_or(1) as f64;
    let hi = series.iter().map(|(_, h)| h.max().max(2)).max().unwrap_or(10) as f64;
    let (ylo, yhi) = (lo.log10().floor(), hi.log10().ceil().max(lo.log10().floor() + 1.0));
    let x = |q: f64| LEFT + (W - LEFT - RIGHT) * ((-(1.0 - q).max(1e-9).log10()).min(nines_max) / nines_max);
    let y = |v: f64| TOP + (H - TOP - BOTTOM) * (1.0 - (v.max(1.0).log10() - ylo) / (yhi - ylo));
    let mut s = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{W}\" height=\"{H}\" font-family=\"sans-serif\" font-size=\"12\">\n\
         <rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n<text x=\"{LEFT}\" y=\"24\" font-size=\"15\">{}</text>\n",
        escape(title)
    );
    for n in 0..=nines_max as i32 {
        let q = 1.0 - 10f64.powi(-n);
        let label = match n {
            0 => "0%".to_string(),
            _ => format!("{}%", (q * 100.0 * 10f64.powi(n - 2)).round() / 10f64.powi(n - 2)),
        };
        let _ = writeln!(
            s,
            "<line x1=\"{0:.1}\" y1=\"{TOP}\" x2=\"{0:.1}\" y2=\"{1:.1}\" stroke=\"#ddd\"/><text x=\"{0:.1}\" y=\"{2:.1}\" text-anchor=\"middle\">{label}</text>",
            x(q),
            H - BOTTOM,
            H - BOTTOM + 18.0
        );
    }
    for e in ylo as i32..=yhi as i32 {
        let v = 10f64.powi(e);
        let label = if v >= 1e6 {
            format!("{} s", v / 1e6)
        } else if v >= 1e3 {
            format!("{} ms", v / 1e3)
        } else {
            format!("{v} us")
        };
        let _ = writeln!(
            s,
            "<line x1=\"{LEFT}\" y1=\"{0:.1}\" x2=\"{1:.1}\" y2=\"{0:.1}\" stroke=\"#ddd\"/><text x=\"{2:.1}\" y=\"{3:.1}\" text-anchor=\"end\">{label}</text>",
            y(v),
            W - RIGHT,
            LEFT - 6.0,
            y(v) + 4.0
        );
    }
    let _ = writeln!(s, "<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\">percentile</text>", (LEFT + W - RIGHT) / 2.0, H - 16.0);
    for (i, (name, h)) in series.iter().enumerate() {
        let color = COLORS[i % COLORS.len()];
        let points: Vec<String> =
            h.iter_quantiles(5).map(|v| format!("{:.1},{:.1}", x(v.quantile_iterated_to()), y(v.value_iterated_to() as f64))).collect();
        let _ = writeln!(s, "<polyline fill=\"none\" stroke=\"{color}\" stroke-width=\"2\" points=\"{}\"/>", points.join(" "));
        let ly = TOP + 20.0 * i as f64 + 10.0;
        let _ = writeln!(
            s,
            "<line x1=\"{0:.1}\" y1=\"{ly:.1}\" x2=\"{1:.1}\" y2=\"{ly:.1}\" stroke=\"{color}\" stroke-width=\"3\"/><text x=\"{2:.1}\" y=\"{3:.1}\">{4} (max {5})</text>",
            W - RIGHT + 10.0,
            W - RIGHT + 30.0,
            W - RIGHT + 36.0,
            ly + 4.0,
            escape(name),
            human_us(h.max())
        );
    }
    s += "</svg>\n";
    s
}

/// Microseconds as a person reads them: 850 us, 12.3 ms, 1.50 s.
fn human_us(us: u64) -> String {
    match us {
        0..1_000 => format!("{us} us"),
        1_000..1_000_000 => format!("{:.1} ms", us as f64 / 1e3),
        _ => format!("{:.2} s", us as f64 / 1e6),
    }
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hist::new_latency_us;

    fn sample() -> Histogram<u64> {
        let mut h = new_latency_us();
        for v in 1..=10_000u64 {
            h.record(v).unwrap();
        }
        h
    }

    // Proves the hgrm output has HdrHistogram's columns, ends at percentile
    // 1.0 with the total count, and carries the footer its tools parse.
    #[test]
    fn hgrm_has_the_percentile_distribution_format() {
        let text = hgrm(&sample());
        let rows: Vec<&str> = text.lines().filter(|l| !l.starts_with('#') && !l.trim().is_empty()).skip(1).collect();
        assert!(rows.len() > 20);
        let last: Vec<&str> = rows.last().unwrap().split_whitespace().collect();
        assert_eq!(last[1].parse::<f64>().unwrap(), 1.0);
        let cumulative: u64 = rows.iter().map(|r| r.split_whitespace().nth(2).unwrap().parse::<u64>().unwrap()).sum();
        assert_eq!(cumulative, 10_000);
        assert!(text.contains("#[Max     =    10007.000, Total count    =        10000]"), "{text}");
    }

    // Proves the SVG is one document with a line per non-empty series and a legend.
    #[test]
    fn svg_draws_one_line_per_series() {
        let a = sample();
        let empty = new_latency_us();
        let s = svg("t <1>", &[("ack", &a), ("none", &empty), ("e2e", &a)]);
        assert!(s.starts_with("<svg") && s.trim_end().ends_with("</svg>"));
        assert_eq!(s.matches("<polyline").count(), 2);
        assert!(s.contains("ack (max 10.0 ms)") && s.contains("t &lt;1&gt;"), "{s}");
        assert!(s.contains("99.9%"));
    }

    // Proves the JSON carries every field the documented schema promises.
    #[test]
    fn json_has_the_documented_fields() {
        let r = Report { window_secs: 1.0, value_bytes_avg: 100.0, consumers: 1, ..Default::default() };
        let j = to_json(&r);
        for path in [
            "/config",
            "/produce/records",
            "/produce/bytes",
            "/produce/records_per_sec",
            "/produce/mb_per_sec",
            "/produce/ack_latency_us/p50",
            "/produce/ack_latency_us/p90",
            "/produce/ack_latency_us/p99",
            "/produce/ack_latency_us/p999",
            "/produce/ack_latency_us/p9999",
            "/produce/ack_latency_us/max",
            "/consume/records",
            "/consume/bytes",
            "/consume/records_per_sec",
            "/consume/mb_per_sec",
            "/e2e_latency_us/p99",
            "/errors/total",
            "/verify/checked",
            "/verify/lost",
            "/verify/duplicated",
            "/verify/reordered",
            "/verify/corrupt",
            "/ceilings",
            "/loadgen_cpu/cores",
            "/server/stages_us",
        ] {
            assert!(j.pointer(path).is_some(), "missing {path}");
        }
    }

    fn ceiling(write_bytes: usize, writes: u64, prewritten_file_bytes: u64) -> DiskCeiling {
        let elapsed = std::time::Duration::from_secs(1);
        DiskCeiling { write_bytes, writes, elapsed, latencies_us: vec![100, 200, 300], prewritten_file_bytes }
    }

    // Proves a run with the three disk ceilings and a read-back has
    // ceilings.disk_best_write, ceilings.disk_read and read_back {records,
    // bytes, secs, mb_per_sec} in its JSON, and its table labels each ratio
    // by the ceiling it compares with.
    #[test]
    fn disk_ceilings_and_read_back_are_reported_and_labelled() {
        let read = DiskReadCeiling {
            read_bytes: 1 << 20,
            reads: 1000,
            elapsed: std::time::Duration::from_secs(1),
            latencies_us: vec![500],
            file_bytes: 256 << 20,
        };
        let r = Report {
            window_secs: 1.0,
            value_bytes_avg: 1000.0,
            produced_records: 500_000,
            // 400 MB/s at 64 KiB into fresh space; 1000 MB/s at 1 MiB over a 256 MiB pre-written file.
            disk: Some(ceiling(64 << 10, 400_000_000 / (64 << 10), 0)),
            disk_best: Some(ceiling(1_000_000, 1000, 256 << 20)),
            disk_read: Some(read),
            readback: Some(ReadBack { records: 2_000_000, bytes: 2_000_000_000, secs: 4.0 }),
            ..Default::default()
        };
        let j = to_json(&r);
        assert_eq!(j["schema"], "strom-loadgen/4");
        assert_eq!(j["ceilings"]["disk_best_write"]["write_bytes"], 1_000_000);
        assert_eq!(j["ceilings"]["disk_best_write"]["prewritten_file_bytes"], 256 << 20);
        assert_eq!(j["ceilings"]["disk_best_write"]["mb_per_sec"], 1000.0);
        assert_eq!(j["ceilings"]["produce_ratio_to_disk_best"], 0.5);
        assert_eq!(j["ceilings"]["disk_write_fdatasync"]["prewritten_file_bytes"], 0);
        assert_eq!(j["ceilings"]["disk_read"]["read_bytes"], 1 << 20);
        assert!(j["ceilings"]["disk_read"]["mb_per_sec"].as_f64().unwrap() > 1000.0, "1000 MiB in 1 s: {j:#}");
        assert_eq!(j["read_back"], json!({"records": 2_000_000, "bytes": 2_000_000_000u64, "secs": 4.0, "mb_per_sec": 500.0}));
        let ratio = j["ceilings"]["read_back_ratio_to_disk_read"].as_f64().unwrap();
        assert!((ratio - 500.0 / 1048.576).abs() < 1e-9, "{ratio}");
        let t = table(&r);
        assert!(t.contains("976 KiB at a time over pre-written space"), "{t}");
        assert!(t.contains("-> produce / disk best group commit (1 MiB over pre-written space) 0.50x"), "{t}");
        assert!(
            t.contains("64 KiB at a time appending to fresh space") && t.contains("-> produce / disk loop at the broker's write size "),
            "{t}"
        );
        assert!(
            t.contains("sequential O_DIRECT read, 1024 KiB at a time: 1048.6 MB/s") && t.contains("-> read-back / disk read 0.48x"),
            "{t}"
        );
        assert!(t.contains("in 4.0 s, 500.0 MB/s"), "{t}");
        let open = Report { open_loop: true, ..r };
        assert!(table(&open).contains("-> produce (at the offered rate) / disk best group commit"));
        assert!(to_json(&open)["ceilings"].get("produce_ratio_to_disk_best").is_none(), "no ratio of an offered rate");
    }

    // Proves latencies read as a person reads them: us below 10 ms, ms below 1 s, then s.
    #[test]
    fn latencies_change_unit_where_they_get_long() {
        assert_eq!(lat_text(9_999), "9999 us");
        assert_eq!(lat_text(10_000), "10.0 ms");
        assert_eq!(lat_text(374_512), "374.5 ms");
        assert_eq!(lat_text(3_192_800), "3.19 s");
    }

    #[test]
    fn groups_thousands() {
        assert_eq!(group(1234567.0), "1,234,567");
        assert_eq!(group(999.0), "999");
    }
}
