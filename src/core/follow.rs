//! Both sides of the durable mark ([`crate::log::mark`]).
//!
//! A writer publishes each of its logs' marks whenever the log's durable
//! position, epoch or start moved ([`Core::publish_marks`], once per tick
//! at most per log, after the fdatasync completed: never ahead of it).
//!
//! A read-only follower (`strom serve --read-only`) opens each log up to
//! what the mark says is durable ([`Core::open_log_following`]) and, each
//! time the follow thread (`src/follow.rs`) sees a mark move, scans the
//! frames it adds and feeds their batches to the partitions as appends
//! would have, then wakes the long polls, subscriptions and queries that
//! wait on them ([`Core::follow`]). The scan reads the new bytes with
//! blocking reads on the core's thread, as recovery does: a commit's worth
//! at a time, just written by the writer.
use std::collections::{HashSet, VecDeque};

use super::Core;
use super::open::{Feed, Strict};
use crate::buf::{AlignedBuf, BLOCK_BYTES};
use crate::error::Result;
use crate::io::{FileId, Io};
use crate::log::frame::FrameHeader;
use crate::log::journal::{Journal, OpenState};
use crate::log::mark::{self, DurableMark};
use crate::log::recovery::{self, EpochMark, FollowScan, FollowStop, OnBatch, RecoverLimits, RecoveryReport};
use crate::log::segment::log_dir;
use crate::partition::Pid;
use crate::wire::batch::BatchInfo;

/// A writer's mark file for one log, and what it last said.
pub(super) struct Published {
    file: FileId,
    last: Option<DurableMark>,
    failed: bool,
}

/// A follower's state for one log.
pub(super) struct Followed {
    scan: FollowScan,
    /// The position a break was last warned about (one warning per place).
    warned_at: Option<u64>,
}

impl<I: Io> Core<I> {
    /// Writer: opens `log`'s mark file; the next [`Core::publish_marks`]
    /// writes what the open left. A log whose mark cannot be opened is
    /// only invisible to followers: the writer goes on.
    pub(super) fn open_mark(&mut self, log: u32) {
        let path = log_dir(&self.spec.data_dir, log).join(mark::FILE_NAME);
        match self.io.open_hint(&path) {
            Ok(file) => {
                self.published.insert(log, Published { file, last: None, failed: false });
            }
            Err(e) => tracing::warn!(log, %e, "durable mark not published: read-only followers will not see this log"),
        }
    }

    /// Writer: publishes each log's mark that changed since the last call.
    pub(super) fn publish_marks(&mut self) {
        for (&log, p) in self.published.iter_mut() {
            let j = &self.journals[&log];
            let m = DurableMark {
                durable_pos: j.durable_pos(),
                epoch: j.epoch(),
                epoch_start_pos: j.epoch_start_pos(),
                log_start: j.log_start(),
            };
            if p.last == Some(m) {
                continue;
            }
            p.last = Some(m);
            match self.io.write_hint(p.file, &m.encode()) {
                Ok(()) => p.failed = false,
                // Tried again at the next change; said once per outage.
                Err(e) if !p.failed => {
                    p.failed = true;
                    tracing::warn!(log, %e, "durable mark not published: read-only followers see this log late");
                }
                Err(_) => {}
            }
        }
    }

    /// Follower: opens `log` up to what the writer's mark says is durable
    /// (without a mark: what its checkpoint covers), reading only.
    pub(super) fn open_log_following(&mut self, log: u32, bufs: Vec<AlignedBuf>) -> Result<RecoveryReport> {
        let started = std::time::Instant::now();
        let dir = log_dir(&self.spec.data_dir, log);
        // The mark read before the catalog (`Engine::open_read_only`); the
        // segments listed after it hold all data below it (only retention
        // removes some, and then the start moves past them).
        let mark = self.spec.marks.get(&log).copied();
        let ckpt = self.read_checkpoint(log)?;
        let epoch_file = self.io.read_file(&dir.join(recovery::EPOCH_FILE))?.and_then(|b| EpochMark::decode(&b)).unwrap_or_default();
        let prior = mark.map_or(epoch_file, |m| m.epoch_mark());
        let segments = match self.io.list_dir(&dir) {
            Ok(_) => recovery::open_segments_between(&mut self.io, &dir, None, u64::MAX)?,
            Err(_) => VecDeque::new(),
        };
        let first = segments.front().map_or(0, |s| s.start_pos);
        let log_start = ckpt.as_ref().map_or(first, |c| c.log_start.max(first));
        let covered = ckpt.as_ref().map_or(log_start, |c| c.covered_pos.max(log_start));
        let end = mark.map_or(covered, |m| m.durable_pos.max(covered));
        if mark.is_none() {
            tracing::warn!(log, served_to = end, "no durable mark yet: served up to its checkpoint until its writer publishes one");
        }
        let mut parts = self.partitions_at(log, ckpt.as_ref());
        let floor_epoch = prior.epoch.min(ckpt.as_ref().map_or(0, |c| c.epoch));
        let mut scan = FollowScan::new(self.cfg.write_buf_bytes + BLOCK_BYTES, floor_epoch);
        let named: HashSet<Pid> = parts.iter().filter(|(_, p)| p.named.is_some()).map(|(&pid, _)| pid).collect();
        let mut feed = Feed::new(&mut parts, self.cfg.index_interval_bytes, &dir, ckpt.is_none(), Strict::Skip);
        let mut on_batch =
            |h: &FrameHeader, info: &BatchInfo, seg_start: u64, payload: Option<&[u8]>| feed.batch(h, info, seg_start, payload);
        let wants = |pid: Pid| named.contains(&pid);
        let limits = self.follow_limits();
        let (reached, stop) = scan.scan(
            &mut self.io,
            &segments,
            (covered, end),
            prior,
            &limits,
            &mut OnBatch { wants_payload: &wants, batch: &mut on_batch },
        )?;
        if let Some(stop) = stop {
            tracing::warn!(log, reached, durable = end, "{}", describe(&stop));
        }
        for p in parts.values_mut() {
            p.forget_before(log_start);
        }
        let report = RecoveryReport {
            log,
            scanned_from: covered,
            end_pos: reached,
            bytes_scanned: scan.bytes_scanned,
            elapsed_us: started.elapsed().as_micros() as u64,
            ..Default::default()
        };
        let jl = self.journal_limits();
        let state = OpenState { segments, epoch: prior.epoch, end_pos: reached, log_start };
        let mut journal: Journal<_> = Journal::new(log, &dir, jl, state, bufs, self.io.now_ns());
        journal.follow_epoch(prior.epoch, prior.start_pos.unwrap_or(0));
        self.journals.insert(log, journal);
        self.checkpoint_bytes.insert(log, 0);
        self.checkpoint_pos.insert(log, covered);
        self.following.insert(log, Followed { scan, warned_at: None });
        self.partitions.extend(parts);
        tracing::info!(log, scanned_bytes = report.bytes_scanned, end = reached, elapsed_us = report.elapsed_us, "log followed");
        Ok(report)
    }

    fn follow_limits(&self) -> RecoverLimits {
        RecoverLimits {
            payload_bytes_max: self.cfg.batch_bytes_max as u32,
            tear_window_bytes: self.cfg.tear_window_bytes(),
            read_chunk_bytes: self.cfg.write_buf_bytes + BLOCK_BYTES,
            read_only: true,
            ignore_checkpoint: false,
        }
    }

    /// Follower: the writer's mark of `log` moved. Takes its epoch and its
    /// start, scans what it adds, and wakes whoever waits on what grew.
    pub(super) fn follow(&mut self, log: u32, mark: DurableMark) {
        let Some(j) = self.journals.get_mut(&log) else { return };
        if mark.epoch < j.epoch() {
            // Read before a restart of the writer that this core saw already.
            return;
        }
        j.follow_epoch(mark.epoch, mark.epoch_start_pos);
        if mark.log_start > j.log_start() {
            let start = j.follow_start(&mut self.io, mark.log_start);
            for p in self.partitions.values_mut().filter(|p| p.log == log) {
                p.forget_before(start);
            }
            if j.durable_pos() < start {
                // Retention passed what this core had followed (it was
                // stopped, or stuck at a break): what lay there is gone for
                // the writer's readers too; follow on from the new start.
                j.follow_to(start);
            }
        }
        if mark.durable_pos <= j.durable_pos() {
            return;
        }
        let grown = match self.follow_scan(log, mark) {
            Ok(grown) => grown,
            Err(e) => {
                tracing::warn!(log, %e, "following the log failed here; tried again at the writer's next mark");
                return;
            }
        };
        for pid in grown {
            let (reads, mut cx) = self.read_cx();
            reads.unpark(&mut cx, pid);
            if self.queries.waits_on(pid) {
                self.wake_queries(pid);
            }
        }
    }

    /// Scans `log` from its end to the mark's durable position, opening
    /// the segments the writer rolled to on the way. Returns the partitions
    /// that grew.
    fn follow_scan(&mut self, log: u32, mark: DurableMark) -> Result<Vec<Pid>> {
        let limits = self.follow_limits();
        let dir = log_dir(&self.spec.data_dir, log);
        let named: HashSet<Pid> = self.partitions.iter().filter(|(_, p)| p.log == log && p.named.is_some()).map(|(&pid, _)| pid).collect();
        let wants = |pid: Pid| named.contains(&pid);
        let j = self.journals.get_mut(&log).expect("followed log");
        let f = self.following.get_mut(&log).expect("followed log");
        let mut feed = Feed::new(&mut self.partitions, self.cfg.index_interval_bytes, &dir, false, Strict::Skip);
        j.metrics.follow_marks += 1;
        let mut opened_more = true;
        loop {
            let from = j.durable_pos();
            let mut on_batch =
                |h: &FrameHeader, info: &BatchInfo, seg_start: u64, payload: Option<&[u8]>| feed.batch(h, info, seg_start, payload);
            let segments = j.segments();
            let (reached, stop) = f.scan.scan(
                &mut self.io,
                segments,
                (from, mark.durable_pos),
                mark.epoch_mark(),
                &limits,
                &mut OnBatch { wants_payload: &wants, batch: &mut on_batch },
            )?;
            j.metrics.follow_bytes += reached - from;
            if let Some(bytes) = f.scan.held(from, reached) {
                j.follow_cache(from, bytes);
            }
            j.follow_to(reached);
            match stop {
                None => break,
                // A segment's file can be longer than its chain (a recycled
                // or pre-written one): where the writer rolled, this core
                // reads past the chain's end and finds zeros or older frames
                // until it knows the next segment. So a break, too, first
                // looks for segments rolled to since.
                Some(_) if opened_more => {
                    let more = recovery::open_segments_between(&mut self.io, &dir, j.last_segment_start(), mark.durable_pos)?;
                    opened_more = !more.is_empty();
                    more.into_iter().for_each(|s| j.follow_segment(s));
                }
                Some(stop) => {
                    if f.warned_at != Some(reached) {
                        f.warned_at = Some(reached);
                        tracing::warn!(log, reached, durable = mark.durable_pos, "{}", describe(&stop));
                    }
                    break;
                }
            }
        }
        Ok(feed.grown)
    }
}

fn describe(stop: &FollowStop) -> String {
    match stop {
        FollowStop::SegmentsEnd => "the segments end before the writer's durable mark; served up to where they end".into(),
        FollowStop::Break(why) => format!("the log breaks before the writer's durable mark ({why}); served up to the break"),
    }
}
