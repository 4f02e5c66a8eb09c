//! Latency histograms: microsecond HDR histograms, one set per worker
//! thread, pooled by adding counts (never by averaging percentiles).
use hdrhistogram::Histogram;

/// The longest latency recorded exactly; longer ones are clamped to it
/// (`saturating_record`) rather than dropped, so `max` says "at least".
pub const LATENCY_US_MAX: u64 = 60_000_000;

pub fn new_latency_us() -> Histogram<u64> {
    Histogram::new_with_bounds(1, LATENCY_US_MAX, 3).expect("constant bounds are valid")
}

/// The histograms a run measures.
#[derive(Debug, Clone)]
pub struct Latencies {
    /// Produce: from the batch's send (or due) time to its acknowledgement; one entry per batch.
    pub ack_us: Histogram<u64>,
    /// From a record's send (or due) time to a consumer holding it; one entry per record.
    pub e2e_us: Histogram<u64>,
    /// Fetch: from request sent to reply received; one entry per fetch.
    pub fetch_us: Histogram<u64>,
    /// Produce, open loop: from the batch's due time to loadgen queueing its
    /// send; one entry per batch. This part of `ack_us` is loadgen's own
    /// lateness (its thread woke late or was busy), outside the broker.
    pub send_late_us: Histogram<u64>,
}

impl Default for Latencies {
    fn default() -> Self {
        Latencies { ack_us: new_latency_us(), e2e_us: new_latency_us(), fetch_us: new_latency_us(), send_late_us: new_latency_us() }
    }
}

impl Latencies {
    /// Adds `other`'s counts to ours: the pooled distribution of both.
    pub fn pool(&mut self, other: &Latencies) {
        // The bounds are equal (one constructor), so add cannot fail.
        self.ack_us.add(&other.ack_us).expect("same bounds");
        self.e2e_us.add(&other.e2e_us).expect("same bounds");
        self.fetch_us.add(&other.fetch_us).expect("same bounds");
        self.send_late_us.add(&other.send_late_us).expect("same bounds");
    }
}

pub fn ns_to_us(ns: u64) -> u64 {
    (ns / 1_000).max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    // Proves pooling counts every sample of every thread: one fast thread and
    // one slow thread give a p50 from the fast and a p99 from the slow, which
    // averaging per-thread percentiles (iggy-bench's mistake) would not.
    #[test]
    fn pooling_adds_counts_instead_of_averaging() {
        let mut fast = Latencies::default();
        let mut slow = Latencies::default();
        for _ in 0..900 {
            fast.ack_us.record(100).unwrap();
        }
        for _ in 0..100 {
            slow.ack_us.record(10_000).unwrap();
        }
        let mut pooled = Latencies::default();
        pooled.pool(&fast);
        pooled.pool(&slow);
        assert_eq!(pooled.ack_us.len(), 1000);
        assert_eq!(pooled.ack_us.value_at_quantile(0.5), 100);
        let p99 = pooled.ack_us.value_at_quantile(0.99);
        assert!((9_990..=10_010).contains(&p99), "p99 {p99}");
        // The mean of the two p99s would be about 5,050 us: not what any request saw.
        let averaged = (fast.ack_us.value_at_quantile(0.99) + slow.ack_us.value_at_quantile(0.99)) / 2;
        assert!(averaged < p99 * 6 / 10, "averaging would hide the slow thread's tail");
    }

    // Proves values past the top are clamped, not lost.
    #[test]
    fn over_range_values_are_clamped_not_dropped() {
        let mut l = Latencies::default();
        l.e2e_us.saturating_record(LATENCY_US_MAX * 10);
        assert_eq!(l.e2e_us.len(), 1);
        assert!(l.e2e_us.max() >= LATENCY_US_MAX - LATENCY_US_MAX / 1000);
    }
}
