//! A one-line verdict per figure, against the targets docs/LOADGEN.md
//! states (its "Targets" table lists these same constants and why). A
//! figure a run did not measure gets no verdict, never a made-up one.
use crate::report::Report;

/// Closed loop: acknowledged-durable produce MB/s over the disk's own
/// O_DIRECT write + fdatasync loop at the broker's average write size.
/// README's runs measured 0.73x-0.90x.
pub const PRODUCE_TO_DISK_MIN: f64 = 0.8;
/// Consumers at the tail: records each read in the window over records
/// acknowledged in it. Under this a consumer fell behind.
pub const CONSUME_PER_CONSUMER_MIN: f64 = 0.95;
/// Two or more consumers: their MB/s in all over one loopback TCP stream.
/// README's fanout measured 0.54x.
pub const CONSUME_TO_LOOPBACK_MIN: f64 = 0.5;
/// Open loop: the rate achieved over the rate offered.
pub const ACHIEVED_TO_OFFERED_MIN: f64 = 0.99;
/// Open loop: produce acknowledgement p99, in microseconds. README's
/// latency-at-rate measured 7.1 ms at half the maximum; the durable peer
/// (Redis 7, appendfsync always, one client) is about 0.5 ms.
pub const OPEN_LOOP_ACK_P99_US_MAX: u64 = 10_000;

#[derive(Debug, Clone, PartialEq)]
pub struct Verdict {
    pub ok: bool,
    /// What was judged, its value and the target, in one phrase.
    pub text: String,
    /// The figure's name in the JSON (`verdicts[].figure`).
    pub figure: &'static str,
    pub value: f64,
    pub target: f64,
}

fn at_least(figure: &'static str, what: String, value: f64, target: f64) -> Verdict {
    Verdict { ok: value >= target, text: format!("{what} {value:.2}x (target >= {target:.2}x)"), figure, value, target }
}

pub fn verdicts(r: &Report) -> Vec<Verdict> {
    let mut v = Vec::new();
    let produce = r.produce_mb_per_sec();
    match (&r.disk, r.open_loop) {
        (Some(d), false) if d.mb_per_sec() > 0.0 => v.push(at_least(
            "produce_to_disk",
            "durable produce / disk write+fdatasync ceiling".into(),
            produce / d.mb_per_sec(),
            PRODUCE_TO_DISK_MIN,
        )),
        _ => {}
    }
    if let Some(offered) = r.offered_records_per_sec.filter(|&o| o > 0.0) {
        let achieved = r.produced_records as f64 / r.window_secs;
        v.push(at_least("achieved_to_offered", "achieved / offered rate".into(), achieved / offered, ACHIEVED_TO_OFFERED_MIN));
        if !r.lat.ack_us.is_empty() {
            let p99 = r.lat.ack_us.value_at_quantile(0.99);
            v.push(Verdict {
                ok: p99 <= OPEN_LOOP_ACK_P99_US_MAX,
                text: format!(
                    "produce ack p99 at the offered rate {} (target <= {})",
                    crate::report::lat_text(p99),
                    crate::report::lat_text(OPEN_LOOP_ACK_P99_US_MAX)
                ),
                figure: "open_loop_ack_p99_us",
                value: p99 as f64,
                target: OPEN_LOOP_ACK_P99_US_MAX as f64,
            });
        }
    }
    if r.consumers > 0 && r.produced_records > 0 {
        let per = r.consumed_records as f64 / (r.consumers as f64 * r.produced_records as f64);
        v.push(at_least("consume_per_consumer", "each consumer's records / produce (kept up)".into(), per, CONSUME_PER_CONSUMER_MIN));
    }
    if let (Some(t), true) = (&r.tcp, r.consumers >= 2) {
        let ratio = r.consume_mb_per_sec() / t.mb_per_sec();
        v.push(at_least("consume_to_loopback", "consume (all consumers) / loopback TCP ceiling".into(), ratio, CONSUME_TO_LOOPBACK_MIN));
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ceiling::TcpCeiling;

    // Proves figures a run did not measure get no verdict, and those it did
    // are judged against the documented targets in both directions.
    #[test]
    fn only_measured_figures_are_judged() {
        let r = Report { window_secs: 1.0, value_bytes_avg: 1000.0, produced_records: 1000, ..Default::default() };
        assert!(verdicts(&r).is_empty(), "no ceiling, no consumers, closed loop: nothing to judge");
        let tcp = TcpCeiling { bytes: 2_000_000, elapsed: std::time::Duration::from_secs(1) };
        let r = Report { consumers: 2, consumed_records: 1_800, tcp: Some(tcp), ..r };
        let v = verdicts(&r);
        assert_eq!(v.iter().map(|v| v.figure).collect::<Vec<_>>(), ["consume_per_consumer", "consume_to_loopback"]);
        assert!(!v[0].ok && v[0].text.contains("0.90x (target >= 0.95x)"), "{v:?}");
        assert!(v[1].ok, "1.8 MB/s of 2 MB/s is 0.9x: {v:?}");
    }
}
