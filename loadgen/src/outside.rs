//! The part of a produce's latency that no broker stage holds: what
//! loadgen's clock saw beyond the broker's `total` stage (from the receive
//! completion that finished the request to the send completion of its reply).
//!
//! It is made of loadgen's own lateness (an open-loop batch queued after its
//! due time), the two trips over loopback TCP, and the wake-ups on either
//! side: a completion is posted by the kernel, then waits for its thread to
//! be scheduled before anyone's clock reads it. On a shared machine that wait
//! on a run queue is the largest part, and only the scheduler counts it
//! (`/proc/self/task/*/schedstat`), so it is reported as a total per thread
//! group over the window. Percentiles of two distributions do not subtract
//! request by request; the differences shown are of the distributions.
use std::fmt::Write;

use serde_json::{Value, json};

use crate::report::{Report, lat_text};

/// Seconds that threads spent runnable but waiting for a CPU, over the window.
#[derive(Debug, Clone, Copy, Default)]
pub struct RunQueueWait {
    pub loadgen_secs: f64,
    /// Every other thread of the process: the embedded broker's.
    pub broker_secs: f64,
}

fn total_stage(r: &Report) -> Option<&strom::server::StageLatency> {
    r.stages.iter().find(|s| s.stage == "total" && s.count > 0)
}

/// The table's lines, or nothing when there is nothing to compare.
pub fn rows(r: &Report) -> String {
    let mut t = String::new();
    let Some(total) = total_stage(r) else { return t };
    if r.lat.ack_us.is_empty() {
        return t;
    }
    let _ = writeln!(t, "\noutside the broker's stages (loadgen's ack minus the broker's total; distributions, not per request)");
    let ack = |q: f64| r.lat.ack_us.value_at_quantile(q);
    let diff = |a: u64, b: u64| if a >= b { lat_text(a - b) } else { format!("-{}", lat_text(b - a)) };
    let _ = writeln!(
        t,
        "  ack - total    p50 {}, p90 {}, p99 {}, p99.9 {}",
        diff(ack(0.5), total.p50_us),
        diff(ack(0.9), total.p90_us),
        diff(ack(0.99), total.p99_us),
        diff(ack(0.999), total.p999_us)
    );
    let late = &r.lat.send_late_us;
    if !late.is_empty() {
        let q = |p: f64| lat_text(late.value_at_quantile(p));
        let _ = writeln!(
            t,
            "  loadgen late   p50 {}, p90 {}, p99 {}, p99.9 {}   (a batch's due time to its send being queued)",
            q(0.5),
            q(0.9),
            q(0.99),
            q(0.999)
        );
    }
    if let Some(w) = r.run_queue {
        let per_request_us = |secs: f64| secs * 1e6 / r.produced_requests.max(1) as f64;
        let _ = writeln!(
            t,
            "  run queue      broker threads waited {:.3} s for a CPU in the {:.1} s window, loadgen's {:.3} s ({:.0} us and {:.0} us per acked request)",
            w.broker_secs,
            r.window_secs,
            w.loadgen_secs,
            per_request_us(w.broker_secs),
            per_request_us(w.loadgen_secs)
        );
    }
    t
}

/// The same, for the JSON report's `server.outside`.
pub fn json(r: &Report) -> Value {
    let late = &r.lat.send_late_us;
    let late_json = (!late.is_empty()).then(|| {
        json!({"p50": late.value_at_quantile(0.5), "p99": late.value_at_quantile(0.99), "p999": late.value_at_quantile(0.999), "max": late.max()})
    });
    json!({
        "loadgen_late_us": late_json,
        "run_queue_secs": r.run_queue.map(|w| json!({"loadgen": w.loadgen_secs, "broker": w.broker_secs})),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    // Proves the rows subtract the broker's total from loadgen's ack at each
    // percentile, show loadgen's lateness, and share the run-queue wait per request.
    #[test]
    fn rows_account_for_the_gap() {
        let mut r = Report { window_secs: 10.0, produced_requests: 1000, ..Default::default() };
        assert_eq!(rows(&r), "", "no stages, no rows");
        for _ in 0..100 {
            r.lat.ack_us.record(500).unwrap();
            r.lat.send_late_us.record(40).unwrap();
        }
        r.stages = vec![strom::server::StageLatency {
            stage: "total".into(),
            count: 100,
            p50_us: 300,
            p90_us: 300,
            p99_us: 300,
            p999_us: 600,
            max_us: 600,
        }];
        r.run_queue = Some(RunQueueWait { loadgen_secs: 0.02, broker_secs: 0.05 });
        let text = rows(&r);
        assert!(text.contains("ack - total    p50 200 us, p90 200 us, p99 200 us, p99.9 -100 us"), "{text}");
        assert!(text.contains("loadgen late   p50 40 us"), "{text}");
        assert!(text.contains("waited 0.050 s") && text.contains("(50 us and 20 us per acked request)"), "{text}");
        assert_eq!(json(&r)["run_queue_secs"]["broker"], json!(0.05));
    }
}
