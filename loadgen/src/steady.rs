//! Steady state: a window that writes over recycled segments.
//!
//! A fresh broker's log only grows during a run, so every commit lands in
//! new space, and the recycling a long-running broker does (retention
//! renames a dropped segment to the log's spare, the next roll reuses it:
//! `src/log/journal/spare.rs`) never shows in the figures. With
//! `--retention-bytes`, the topic keeps that many bytes per partition and
//! a fill phase writes, closed loop with no consumer, in steps of
//! [`FILL_STEP_SECS`], until retention has recycled a segment and a roll
//! has reused a spare after that (the broker's
//! `strom_log_segments_recycled_total`, then `..._reused_total`, moved):
//! from then on a roll finds a recycled spare whenever retention dropped a
//! segment since the last one (a spare is recycled only when the log has
//! none: one pre-written while the broker was idle is used first). The report gives the
//! recycling counters of the window, so it is visible that the window ran
//! over recycled space, and of the whole run.
use crate::specs::producer_specs;
use crate::tally::segment_totals;
use crate::worker::WorkerOutcome;
use crate::{Layout, Phase, Settings, Target, run_phase};

/// Seconds of each fill step (the fill looks at the counters between steps).
pub(crate) const FILL_STEP_SECS: f64 = 2.0;

/// The longest a fill runs before the run gives up: at 1 GB/s, 120 GB.
pub(crate) const FILL_SECS_MAX: f64 = 120.0;

/// What the fill did, and the recycling counters at the window's ends.
#[derive(Debug, Clone, Copy, Default)]
pub struct SteadyState {
    pub retention_bytes: u64,
    pub fill_secs: f64,
    pub fill_records: u64,
    /// (recycled, reused) at the window's start and end.
    pub window_before: (u64, u64),
    pub window_after: (u64, u64),
}

impl SteadyState {
    /// Segments recycled and rolls that reused one, in the window.
    pub fn in_window(&self) -> (u64, u64) {
        (self.window_after.0 - self.window_before.0, self.window_after.1 - self.window_before.1)
    }
}

/// Writes until a roll reused a recycled segment; the outcomes of every
/// step (their records are in the log, maybe dropped since) and what it did.
/// Producer ids from `id_base` on, a fresh set per step (each step's
/// producers count their sequences from 0).
pub(crate) fn fill(
    s: &Settings,
    a: &crate::Args,
    target: &Target,
    layout: &Layout,
    base: (u32, Vec<u64>),
    (threads, cpus): (usize, &[Option<usize>]),
    id_base: u32,
) -> Result<(Vec<WorkerOutcome>, SteadyState), String> {
    let retention_bytes = s.retention_bytes.expect("a fill keeps retention");
    let (recycled_at_start, _) = segment_totals(target).ok_or("--retention-bytes needs the embedded broker")?;
    // Rolls reused by the time retention first recycled: a spare the log
    // pre-wrote while idle counts as reused too, so only a reuse after a
    // recycling shows that the cycle runs.
    let mut reused_at_recycle = None;
    let mut outcomes = Vec::new();
    let mut st = SteadyState { retention_bytes, ..Default::default() };
    for step in 0.. {
        let ids = id_base + step * s.producers as u32;
        let phase = Phase { producers: producer_specs(s, layout, 0.0, ids), consumers: Vec::new(), warmup: 0.0, duration: FILL_STEP_SECS };
        let r = run_phase(s, a, target, layout, base.clone(), phase, threads, cpus, "fill")?;
        st.fill_records += r.outcomes.iter().map(|o| o.produced.records).sum::<u64>();
        st.fill_secs += r.window_secs + r.drain_secs;
        outcomes.extend(r.outcomes);
        let (recycled, reused) = segment_totals(target).ok_or("the broker's metrics are not available")?;
        match reused_at_recycle {
            Some(at) if reused > at => break,
            None if recycled > recycled_at_start => reused_at_recycle = Some(reused),
            _ => {}
        }
        if st.fill_secs >= FILL_SECS_MAX {
            return Err(format!(
                "the fill wrote {} records in {:.0} s and no segment was recycled and reused: keep fewer --retention-bytes \
                 ({retention_bytes} per partition x {} partitions, plus the active segment, must be well under what it writes)",
                st.fill_records, st.fill_secs, s.partitions
            ));
        }
    }
    Ok((outcomes, st))
}

/// Each partition's earliest offset now (where a read-back after retention
/// starts), asked of the broker.
pub(crate) fn earliest_offsets(s: &Settings, layout: &Layout) -> Result<Vec<u64>, String> {
    let ctx = |e: strom::client::ClientError| format!("broker at {}: {e}", layout.main_addr);
    let mut client = strom::client::Client::connect_timeout(layout.main_addr, std::time::Duration::from_secs(10)).map_err(ctx)?;
    (0..s.partitions)
        .map(|p| client.list_offsets(&s.topic, p, strom::proto::OffsetSpec::Earliest).map(|o| o.unwrap_or(0)).map_err(ctx))
        .collect()
}
