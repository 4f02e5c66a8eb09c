//! `--kafka`: the native run and the run through the Kafka listener side by
//! side, in the table's last section. Each run's own section (above it)
//! has every figure; this one puts the ones that compare the two paths on
//! one line each: throughput, its ratio to the disk's ceiling, the produce
//! ack latency percentiles, and with consumers what they read and when.
use std::fmt::Write as _;

use hdrhistogram::Histogram;

use crate::report::{DISK_BEST_WHAT, Report, group, lat_text, section};

/// What the table shows after the native run's section: the Kafka run's
/// section, the two side by side, and the result of both.
pub fn after(native: &Report, kafka: &Report) -> String {
    let mut t = format!("\n=== the same workload, produced through the Kafka listener ===\n{}", section(kafka));
    t += &rows(native, kafka);
    let _ = writeln!(t, "result   both runs: {}", if native.failed() { "FAILED" } else { "ok" });
    t
}

fn rows(native: &Report, kafka: &Report) -> String {
    let mut t = String::new();
    let _ = writeln!(t, "\nnative vs Kafka listener (same workload, same broker, one after the other; each on a topic of its own)");
    let _ = writeln!(t, "                               {:>14} {:>14} {:>14}", "native", "kafka", "kafka/native");
    let per_sec = |r: &Report| r.produced_records as f64 / r.window_secs;
    let mut row = |name: &str, n: String, k: String, ratio: f64| {
        let _ = writeln!(t, "  {name:<28} {n:>14} {k:>14} {:>13.2}x", ratio);
    };
    row("produce records/s", group(per_sec(native)), group(per_sec(kafka)), per_sec(kafka) / per_sec(native));
    let (nm, km) = (native.produce_mb_per_sec(), kafka.produce_mb_per_sec());
    row("produce MB/s", format!("{nm:.1}"), format!("{km:.1}"), km / nm);
    if let Some(d) = &native.disk_best {
        let (nr, kr) = (nm / d.mb_per_sec(), km / d.mb_per_sec());
        row("produce / disk best", format!("{nr:.2}x"), format!("{kr:.2}x"), kr / nr);
    }
    for (name, q) in [("ack p50", 0.5), ("ack p99", 0.99), ("ack p99.9", 0.999), ("ack max", 1.0)] {
        let (n, k) = (at(&native.lat.ack_us, q), at(&kafka.lat.ack_us, q));
        row(name, lat_text(n), lat_text(k), k as f64 / n.max(1) as f64);
    }
    if native.consumers > 0 {
        let (nc, kc) = (native.consume_mb_per_sec(), kafka.consume_mb_per_sec());
        row("consume MB/s", format!("{nc:.1}"), format!("{kc:.1}"), kc / nc);
        for (name, q) in [("end-to-end p50", 0.5), ("end-to-end p99", 0.99)] {
            let (n, k) = (at(&native.lat.e2e_us, q), at(&kafka.lat.e2e_us, q));
            row(name, lat_text(n), lat_text(k), k as f64 / n.max(1) as f64);
        }
    }
    if native.disk_best.is_some() {
        let _ = writeln!(t, "  (disk best: the {DISK_BEST_WHAT}, measured once for both runs)");
    }
    let _ = writeln!(
        t,
        "  (the listener runs a connection's {} in-flight Produces at once and answers them in request order, as Kafka clients expect)",
        native.config["inflight"]
    );
    t
}

/// Quantile `q` of `h` (1.0: its maximum), 0 when it is empty.
fn at(h: &Histogram<u64>, q: f64) -> u64 {
    if h.is_empty() {
        0
    } else if q >= 1.0 {
        h.max()
    } else {
        h.value_at_quantile(q)
    }
}
