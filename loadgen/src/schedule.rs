//! When each batch is meant to be sent.
//!
//! Open loop (`--rate`): batch `k` of a connection is due at
//! `start + k * interval`, computed from `k` rather than by adding up
//! intervals, so rounding never drifts. A batch that goes out late (the
//! connection had `--inflight` batches outstanding, or loadgen fell behind)
//! still has its latency measured from when it was due: that is the
//! coordinated-omission correction. Without it, a stalled broker would hold
//! back the very sends that would have seen the stall, and the percentiles
//! would report only the lucky ones.
//!
//! Closed loop (no `--rate`): a batch is due as soon as a slot is free, and
//! its latency is measured from when it actually went out.
#[derive(Debug, Clone)]
pub struct Schedule {
    start_ns: u64,
    /// Nanoseconds between batches; 0 for a closed loop.
    interval_ns: f64,
    next: u64,
}

impl Schedule {
    /// A connection sending batches of `records_per_batch` at
    /// `records_per_sec` (0: closed loop), starting at `start_ns`.
    pub fn new(start_ns: u64, records_per_sec: f64, records_per_batch: usize) -> Schedule {
        let interval_ns = if records_per_sec > 0.0 { records_per_batch as f64 * 1e9 / records_per_sec } else { 0.0 };
        Schedule { start_ns, interval_ns, next: 0 }
    }

    pub fn is_open_loop(&self) -> bool {
        self.interval_ns > 0.0
    }

    /// When the next batch is due (closed loop: now, always).
    pub fn next_due_ns(&self) -> u64 {
        self.start_ns + (self.next as f64 * self.interval_ns) as u64
    }

    /// Takes the next batch if it is due at `now_ns`, returning the time
    /// its latency is measured from: its due time (open loop) or now.
    pub fn take(&mut self, now_ns: u64) -> Option<u64> {
        if !self.is_open_loop() {
            return Some(now_ns);
        }
        let due = self.next_due_ns();
        if due > now_ns {
            return None;
        }
        self.next += 1;
        Some(due)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Proves open-loop sends are due at exact multiples of the interval and
    // that a late send keeps its due time (the CO correction), and that the
    // backlog is sent back to back rather than skipped.
    #[test]
    fn open_loop_due_times_and_coordinated_omission() {
        // 1,000 records/s in batches of 10: one batch every 10 ms.
        let mut s = Schedule::new(1_000, 1_000.0, 10);
        assert!(s.is_open_loop());
        assert_eq!(s.take(999), None, "nothing is due before the start");
        assert_eq!(s.take(1_000), Some(1_000));
        assert_eq!(s.take(5_000_000), None, "the second batch is due at 10 ms");
        assert_eq!(s.next_due_ns(), 10_001_000);
        // Stalled for 35 ms: the three overdue batches go out now, each
        // measured from when it was due, not from now.
        let now = 45_000_000;
        assert_eq!(s.take(now), Some(10_001_000));
        assert_eq!(s.take(now), Some(20_001_000));
        assert_eq!(s.take(now), Some(30_001_000));
        assert_eq!(s.take(now), Some(40_001_000));
        assert_eq!(s.take(now), None);
    }

    // Proves 10^6 intervals do not drift (computed from the index, not summed).
    #[test]
    fn open_loop_does_not_drift() {
        let mut s = Schedule::new(0, 3.0, 1); // 333,333,333.3 ns apart
        for _ in 0..1_000_000 {
            s.take(u64::MAX).unwrap();
        }
        assert_eq!(s.next_due_ns(), 333_333_333_333_333);
    }

    // Proves a closed loop is always due and measures from the actual send.
    #[test]
    fn closed_loop_is_always_due() {
        let mut s = Schedule::new(0, 0.0, 64);
        assert!(!s.is_open_loop());
        assert_eq!(s.take(42), Some(42));
        assert_eq!(s.take(43), Some(43));
    }
}
