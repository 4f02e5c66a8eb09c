//! Planning a tick's I/O: deferred requests, commits and fdatasyncs,
//! checkpoints, retention, and the stop sequence.
use std::time::Duration;

use super::Core;
use crate::io::Io;
use crate::log::checkpoint::{self, Checkpoint, PartitionCheckpoint};
use crate::log::journal::Held;
use crate::log::recovery;
use crate::partition::retention::live_segments;

/// How often retention looks for segments to delete (and the longest a
/// core sleeps with nothing else due).
pub(super) const RETENTION_CHECK_NS: u64 = 1_000_000_000;

impl<I: Io> Core<I> {
    /// Plans this tick's I/O: deferred requests, commits and fsyncs,
    /// checkpoints, retention, and the stop sequence.
    pub fn plan(&mut self) {
        let stopping = self.stop.is_some();
        {
            let (reads, mut cx) = self.read_cx();
            reads.expire(&mut cx, stopping);
        }
        self.drive_queries(stopping);
        while let Some(req) = self.deferred.pop_front() {
            let before = self.deferred.len();
            self.handle_now(req);
            if self.deferred.len() > before {
                break;
            }
        }
        {
            let (reads, mut cx) = self.read_cx();
            reads.drive_waiters(&mut cx);
            reads.resume(&mut cx, !stopping);
        }
        if self.cfg.read_only {
            // A follower writes nothing: no checkpoint, retention, spare or
            // clean mark (the writer keeps all of them).
            self.deliver_acks();
            self.maybe_finish_stop();
            return;
        }
        self.maybe_retention();
        for (&log, j) in self.journals.iter_mut() {
            let since = j.bytes_logged - self.checkpoint_bytes[&log];
            if since >= self.cfg.checkpoint_interval_bytes && j.failed().is_none() {
                j.set_barrier(true);
            }
        }
        if stopping && self.deferred.is_empty() {
            for j in self.journals.values_mut() {
                j.stop_retrying_in_place();
                if j.idle() {
                    j.set_barrier(true);
                }
            }
        }
        // Checkpoints first: one lowers its log's barrier, and the log's plan
        // must then seal what was staged under it in this same tick, or that
        // commit would wait for the next request or timeout (found as a 1 s
        // stall in benches/append.rs).
        self.write_due_checkpoints();
        let mut lent = Vec::new();
        for j in self.journals.values_mut() {
            j.plan(&mut self.io);
            // After the commits: a quiet log prepares its spare segment
            // (not while stopping: the stop waits for no spare op).
            if !stopping {
                j.plan_spare(&mut self.io);
            }
            j.take_lent(&mut lent);
        }
        for i in lent {
            self.lent.lend(Some(i));
        }
        self.deliver_acks();
        self.maybe_finish_stop();
        #[cfg(debug_assertions)]
        self.invariants();
    }

    /// Answers the stop once nothing is left in flight.
    fn maybe_finish_stop(&mut self) {
        if self.stop.is_none() || !self.reads.idle() || !self.deferred.is_empty() {
            return;
        }
        if self.journals.values().all(|j| j.failed().is_some() || (j.idle() && !j.has_pending())) {
            if !self.cfg.read_only {
                self.mark_clean_ends();
            }
            let reply = self.stop.take().expect("stop");
            self.stopped = true;
            reply(Ok(()));
        }
    }

    /// At a clean stop, records each log's end where its final checkpoint
    /// ends ([`recovery::CLEAN_FILE`]), so the next open reads nothing past
    /// it (a pre-written or recycled segment has up to a segment of leftover
    /// space there). A log whose checkpoint is behind gets no mark.
    fn mark_clean_ends(&mut self) {
        for (&log, j) in self.journals.iter() {
            let end = j.visible_pos();
            if j.failed().is_some() || self.checkpoint_pos.get(&log) != Some(&end) || j.durable_pos() != end {
                continue;
            }
            if let Err(e) = self.io.write_file_atomic(&j.dir().join(recovery::CLEAN_FILE), &recovery::encode_clean_end(end, j.epoch())) {
                tracing::warn!(log, %e, "clean end not recorded; the next open scans past it");
            }
        }
    }

    /// How the caller should wait after [`Core::plan`]: block for a
    /// completion (true) or only poll, and for how long at most.
    pub fn wait_hint(&self) -> (bool, Option<Duration>) {
        if !self.deferred.is_empty() && self.io.in_flight() == 0 {
            return (false, Some(Duration::ZERO));
        }
        let now = self.io.now_ns();
        let mut timeout_ns = RETENTION_CHECK_NS;
        if let Some(due) = self.reads.due_in_ns(now) {
            timeout_ns = timeout_ns.min(due.max(1));
        }
        if let Some(due) = self.queries.due_in_ns(now) {
            timeout_ns = timeout_ns.min(due.max(1));
        }
        for j in self.journals.values() {
            if let Some(due) = j.fsync_due_in_ns(now) {
                timeout_ns = timeout_ns.min(due.max(1));
            }
            if let Some(due) = j.retry_due_in_ns(now) {
                timeout_ns = timeout_ns.min(due.max(1));
            }
        }
        (true, Some(Duration::from_nanos(timeout_ns)))
    }

    fn write_due_checkpoints(&mut self) {
        let logs: Vec<u32> = self.journals.iter().filter(|(_, j)| j.quiesced()).map(|(&l, _)| l).collect();
        for log in logs {
            let ckpt = self.checkpoint_of(log);
            let j = self.journals.get_mut(&log).expect("log");
            let res = self.io.write_file_atomic(&j.dir().join(checkpoint::FILE_NAME), &checkpoint::encode(&ckpt));
            if let Err(e) = res {
                // A failed checkpoint loses nothing: restart scans further back.
                tracing::warn!(log, %e, "checkpoint not written");
            } else {
                self.metrics.checkpoints += 1;
                self.checkpoint_pos.insert(log, ckpt.covered_pos);
            }
            self.checkpoint_bytes.insert(log, j.bytes_logged);
            // Appends staged under the barrier wait for it to lift; a stop
            // raises it again once the log is idle, for the final checkpoint.
            j.set_barrier(false);
        }
    }

    /// The state of `log`'s partitions at its visible (and durable) position.
    fn checkpoint_of(&self, log: u32) -> Checkpoint {
        let j = &self.journals[&log];
        let covered_pos = j.visible_pos();
        let mut partitions: Vec<PartitionCheckpoint> = self
            .partitions
            .values()
            .filter(|p| p.log == log)
            .map(|p| PartitionCheckpoint {
                pid: p.pid,
                next_offset: p.visible_end,
                start_offset: p.start_offset,
                max_ts_ms: p.visible_max_ts_ms,
                entries: p.index.entries().iter().filter(|e| e.pos < covered_pos && e.offset < p.visible_end).copied().collect(),
                spans: p.durable_spans(covered_pos),
                named: p.named.as_ref().map(|n| (n.names().len() as u8, n.durable(p.visible_end))),
                producers: p.producers.durable(p.visible_end),
            })
            .collect();
        partitions.sort_by_key(|p| p.pid);
        // Versions 3 and 4 only when needed: older binaries read version 2.
        let version = if partitions.iter().any(|p| !p.producers.is_empty()) {
            4
        } else if partitions.iter().any(|p| p.named.is_some()) {
            3
        } else {
            2
        };
        Checkpoint { version, log, epoch: j.epoch(), covered_pos, log_start: j.log_start(), partitions }
    }

    /// Once a second: per log, which segments still hold live data (see
    /// [`crate::partition::retention`]), and deletes the oldest that hold
    /// none. Runs with no limits set too: a deleted topic's data is dead.
    fn maybe_retention(&mut self) {
        let now = self.io.now_ns();
        if now < self.last_retention_ns + RETENTION_CHECK_NS {
            return;
        }
        self.last_retention_ns = now;
        // The wall clock batch timestamps use, through the seam: the
        // simulator's is virtual, so time retention replays by seed.
        let now_ms = self.io.wall_ms();
        for (&log, j) in self.journals.iter_mut() {
            let starts = j.segment_starts();
            let live = live_segments(self.partitions.values().filter(|p| p.log == log), &starts, now_ms);
            let checkpointed_pos = self.checkpoint_pos.get(&log).copied().unwrap_or(0);
            match j.apply_retention(&mut self.io, &live, checkpointed_pos) {
                Ok(pass) => {
                    if let Some(start) = pass.moved {
                        for p in self.partitions.values_mut().filter(|p| p.log == log) {
                            p.forget_before(start);
                        }
                    }
                    j.metrics.retention_deleted_bytes += pass.deleted_bytes;
                    j.metrics.live_bytes = pass.live_bytes;
                    j.metrics.reclaimable_bytes = pass.reclaimable_bytes;
                    if pass.held == Some(Held::Checkpoint) || pass.moved.is_some() {
                        // Checkpoint now: retention waits for one, and restart
                        // should not look for deleted segments' state.
                        self.checkpoint_bytes.insert(log, j.bytes_logged.saturating_sub(self.cfg.checkpoint_interval_bytes));
                    }
                }
                Err(e) => tracing::warn!(log, %e, "retention could not delete a segment"),
            }
        }
    }
}
