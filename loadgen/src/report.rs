//! The report lines every mode shares. Sizes are MB (10^6 bytes) of record
//! values; latencies are percentiles of HDR histograms pooled across
//! threads, never means.
use std::time::Duration;

use hdrhistogram::Histogram;
use strom::core::CoreStats;

pub fn produce(records: u64, value_bytes: u64, elapsed: Duration) {
    let secs = elapsed.as_secs_f64();
    println!(
        "produce   {records:>12} records  {:>12.0} records/s  {:>8.1} MB/s (record values)",
        records as f64 / secs,
        value_bytes as f64 / 1e6 / secs
    );
}

/// `what` names one histogram entry ("batches", "requests").
pub fn ack(ack_us: &Histogram<u64>, what: &str) {
    println!(
        "ack       p50 {} us  p90 {} us  p99 {} us  p99.9 {} us  max {} us  (pooled over {} {what})",
        ack_us.value_at_quantile(0.5),
        ack_us.value_at_quantile(0.9),
        ack_us.value_at_quantile(0.99),
        ack_us.value_at_quantile(0.999),
        ack_us.max(),
        ack_us.len()
    );
}

pub fn log(stats: &[CoreStats]) {
    let (logged, commits, fsyncs) = stats.iter().fold((0, 0, 0), |(b, c, f), s| (b + s.bytes_logged, c + s.commits, f + s.fsyncs));
    println!(
        "log       {commits} writes, {fsyncs} fdatasyncs, {:.1} KiB per write on average",
        logged as f64 / commits.max(1) as f64 / 1024.0
    );
}
