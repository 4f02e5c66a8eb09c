//! One log's write path: staging, group commit, fdatasync ordering,
//! acknowledgement order, the tail cache and the sticky failure.
//!
//! Positions, all in log bytes and only ever growing:
//! `visible_pos <= durable_pos.max(written_pos)`, `written_pos <= planned_pos`.
//! - `planned_pos`: end of the frames staged so far (the next frame's position);
//! - `written_pos`: every write below it has completed;
//! - `durable_pos`: an fdatasync submitted after those writes completed has completed;
//! - `visible_pos`: end of the retired (acknowledged) commits; readers see below it.
//!
//! A *commit* is one buffer's worth of frames written with one O_DIRECT write,
//! starting and ending on a block boundary (a padding frame fills the end), so
//! no write ever touches a block holding bytes of an earlier commit. Under
//! `always`, a commit retires once `durable_pos` reaches its end and every
//! earlier commit retired; under `interval`/`never`, once `written_pos` does.
use std::collections::VecDeque;
use std::path::{Path, PathBuf};

mod failure;
mod follow;
mod full;
mod retention;
mod spare;
#[cfg(test)]
mod tests;

pub use failure::{clear_failed_mark, fence_failed_tail};
pub use retention::{Held, RetentionPass};
pub use spare::{SPARE_PREP_BYTES_PER_SEC, SPARE_QUIET_NS, SPARE_ZERO_CHUNK_BYTES, Spare};
use spare::{SPARE_SLOT, SpareState, next_commit_seq};

use crate::buf::{AlignedBuf, align_up};
use crate::config::FsyncPolicy;
use crate::error::{Errno, IoOp, Result, StromError, classify_errno};
use crate::io::token::{OpKind, Token};
use crate::io::{FileId, Io, Op};
use crate::log::frame::{self, FrameHeader, FrameKind, HEADER_BYTES, PAD_BYTES_MAX};
use crate::log::segment::{Segment, parse_segment_name, segment_name};
use crate::metrics::LogMetrics;
use crate::partition::Pid;

/// What a log's owner must remember about a staged batch until it is acknowledged.
#[derive(Debug)]
pub struct PendingAck<R> {
    pub pid: Pid,
    pub base_offset: u64,
    /// One past the batch's last offset.
    pub end_offset: u64,
    /// The partition's running max timestamp including this batch.
    pub max_ts_ms: i64,
    pub reply: R,
}

/// Sizes and policy a journal runs with.
#[derive(Debug, Clone)]
pub struct JournalLimits {
    pub policy: FsyncPolicy,
    pub write_buf_bytes: usize,
    pub write_bufs: usize,
    pub write_depth: usize,
    /// A commit that holds this many bytes is sealed even while every write
    /// slot is busy (it then waits in order), so no write in flight is
    /// larger: a small request never waits behind a write bigger than this.
    /// At most `write_buf_bytes` (a larger value acts as it).
    pub commit_bytes_max: usize,
    /// fdatasync rounds in flight at once. Two let the writes that completed
    /// while a round was in flight start their own at once instead of
    /// waiting for it; rounds still make data durable in order.
    pub fsync_depth: usize,
    pub segment_bytes: u64,
}

/// Why a frame could not be staged now.
#[derive(Debug)]
pub enum StageError {
    /// Every write buffer is in flight or sealed: retry next tick (push back).
    NoBuffer,
    /// The log failed or the segment roll failed.
    Failed(StromError),
}

/// One round of fdatasyncs: one per file with completed unsynced writes,
/// submitted together; once all succeeded (and every earlier round did),
/// everything below `target_pos` is durable.
struct FsyncRound {
    id: u32,
    ops_left: usize,
    target_pos: u64,
}

struct Commit<R> {
    seq: u32,
    start_pos: u64,
    end_pos: u64,
    file: FileId,
    /// None while a write owns the buffer.
    buf: Option<AlignedBuf>,
    /// The write was submitted and its completion has not arrived.
    write_in_flight: bool,
    written: bool,
    acks: Vec<PendingAck<R>>,
}

/// The file a log that failed leaves in its directory: the position (u64,
/// little-endian) below which its data is trusted, durable or acknowledged
/// when it failed. The next open cuts the log there ([`fence_failed_tail`]).
pub const FAILED_FILE: &str = "failed";

/// How often a log retries in place the writes that found the disk full.
pub const FULL_RETRY_NS: u64 = 100_000_000;

pub struct Journal<R> {
    pub id: u32,
    dir: PathBuf,
    limits: JournalLimits,
    segments: VecDeque<Segment>,
    epoch: u32,
    staging: Option<Commit<R>>,
    sealed: VecDeque<Commit<R>>,
    /// Submitted commits, in position order, until retired.
    writing: VecDeque<Commit<R>>,
    writes_in_flight: usize,
    planned_pos: u64,
    written_pos: u64,
    durable_pos: u64,
    visible_pos: u64,
    log_start: u64,
    /// fdatasync ops in flight, over every round.
    fsyncs_in_flight: usize,
    /// Submitted rounds, oldest first, until they complete in order.
    fsync_rounds: VecDeque<FsyncRound>,
    next_round_id: u32,
    /// Files with completed writes not yet covered by a submitted fsync.
    unsynced_files: Vec<FileId>,
    last_fsync_ns: u64,
    /// Wait for every write and an fsync, then stay still (checkpoint, stop).
    barrier: bool,
    free: Vec<AlignedBuf>,
    /// Retired commits' buffers, oldest first, for reads at the tail.
    cache: VecDeque<(u64, AlignedBuf)>,
    failed: Option<StromError>,
    /// Start of the earliest commit whose write found the disk full, while
    /// the writes in flight finish before the log rewinds to it (see
    /// [`Journal::rewind_if_settled`]). New appends are refused meanwhile.
    full_from: Option<u64>,
    /// The last write (or segment creation) found the disk full, and no
    /// write has completed since: what `/health` reports, since a rewound
    /// log refuses appends one by one rather than staying in a state.
    full_last: bool,
    /// The lowest position the log rewound to since the owner last asked
    /// ([`Journal::take_rewind`]): partitions must forget what they staged there.
    rewound_to: Option<u64>,
    /// Empty segments past a rewind, to remove at the next stage or plan.
    orphans: Vec<Segment>,
    /// A later write landed past the full one in its segment: the unwritten
    /// commits are written again, unchanged, at their positions, from
    /// `retry_after_ns` on (see [`Journal::rewind_if_settled`]).
    retry_in_place: bool,
    retry_after_ns: u64,
    next_seq: u32,
    retired: Vec<PendingAck<R>>,
    refused: Vec<(PendingAck<R>, StromError)>,
    /// Log bytes written since open: what spaces checkpoints (the same
    /// figure as `metrics.bytes_written`, kept apart because logic reads it).
    pub bytes_logged: u64,
    /// The log's section of its core's metrics.
    pub metrics: LogMetrics,
    /// Where this run's frames begin: every frame at or past it carries `epoch`.
    epoch_start_pos: u64,
    /// Registered-buffer indices handed to writes since the owner last took
    /// them ([`Journal::take_lent`]), for the core's buffer audit.
    lent: Vec<u16>,
    /// Test hook: the next write is aimed this many bytes low (see
    /// [`Journal::misaim_next_write_for_audit`]).
    misaim_bytes: u64,
    /// The failure's trusted end was written to [`FAILED_FILE`] (or tried).
    failure_recorded: bool,
    /// Written space kept to become the next segment, and its preparation (see `spare.rs`).
    spare: SpareState,
}

/// Where a recovered log continues.
pub struct OpenState {
    pub segments: VecDeque<Segment>,
    pub epoch: u32,
    /// Block-aligned position the next commit starts at.
    pub end_pos: u64,
    pub log_start: u64,
}

impl<R> Journal<R> {
    pub fn new(id: u32, dir: &Path, limits: JournalLimits, state: OpenState, bufs: Vec<AlignedBuf>, now_ns: u64) -> Journal<R> {
        assert_eq!(state.end_pos % crate::buf::BLOCK_BYTES as u64, 0, "log must continue on a block boundary");
        assert!(bufs.len() >= limits.write_depth + 2);
        assert!(limits.fsync_depth >= 1 && limits.commit_bytes_max >= crate::buf::BLOCK_BYTES);
        Journal {
            id,
            dir: dir.to_path_buf(),
            limits,
            segments: state.segments,
            epoch: state.epoch,
            staging: None,
            sealed: VecDeque::new(),
            writing: VecDeque::new(),
            writes_in_flight: 0,
            planned_pos: state.end_pos,
            written_pos: state.end_pos,
            durable_pos: state.end_pos,
            visible_pos: state.end_pos,
            log_start: state.log_start,
            fsyncs_in_flight: 0,
            fsync_rounds: VecDeque::new(),
            next_round_id: 0,
            unsynced_files: Vec::new(),
            last_fsync_ns: now_ns,
            barrier: false,
            free: bufs,
            cache: VecDeque::new(),
            failed: None,
            full_from: None,
            full_last: false,
            rewound_to: None,
            orphans: Vec::new(),
            retry_in_place: false,
            retry_after_ns: 0,
            next_seq: 0,
            retired: Vec::new(),
            refused: Vec::new(),
            bytes_logged: 0,
            metrics: LogMetrics::default(),
            epoch_start_pos: state.end_pos,
            lent: Vec::new(),
            misaim_bytes: 0,
            failure_recorded: false,
            spare: SpareState::default(),
        }
    }

    /// The first position written in this run: frames at or past it must
    /// carry the current epoch (an older one is a leftover the new write
    /// should have replaced).
    pub fn epoch_start_pos(&self) -> u64 {
        self.epoch_start_pos
    }

    /// Moves the registered-buffer indices lent to writes since the last call into `out`.
    pub fn take_lent(&mut self, out: &mut Vec<u16>) {
        out.append(&mut self.lent);
    }

    /// Test hook for the overlapping-write audit: the next write is aimed
    /// `bytes` below its commit's position, over acknowledged bytes. The
    /// audit refuses it (the log fails) and counts it.
    #[doc(hidden)]
    pub fn misaim_next_write_for_audit(&mut self, bytes: u64) {
        self.misaim_bytes = bytes;
    }

    pub fn planned_pos(&self) -> u64 {
        self.planned_pos
    }
    pub fn written_pos(&self) -> u64 {
        self.written_pos
    }
    pub fn durable_pos(&self) -> u64 {
        self.durable_pos
    }
    pub fn visible_pos(&self) -> u64 {
        self.visible_pos
    }
    pub fn log_start(&self) -> u64 {
        self.log_start
    }
    pub fn epoch(&self) -> u32 {
        self.epoch
    }
    pub fn failed(&self) -> Option<&StromError> {
        self.failed.as_ref()
    }

    /// Whether the log refuses writes now because its disk is full: it is
    /// rewinding or retrying after a write found it so, or its last write
    /// did and none has completed since.
    pub fn disk_full(&self) -> bool {
        self.full_from.is_some() || self.full_last
    }
    pub fn segments(&self) -> &VecDeque<Segment> {
        &self.segments
    }
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Start position of the segment new frames go into.
    pub fn active_segment_start(&self) -> u64 {
        self.segments.back().map(|s| s.start_pos).unwrap_or(self.log_start)
    }

    /// The segment holding log position `pos`.
    pub fn segment_for(&self, pos: u64) -> Option<&Segment> {
        let i = self.segments.partition_point(|s| s.start_pos <= pos);
        i.checked_sub(1).map(|i| &self.segments[i])
    }

    pub fn segment_for_mut(&mut self, pos: u64) -> Option<&mut Segment> {
        let i = self.segments.partition_point(|s| s.start_pos <= pos);
        i.checked_sub(1).map(move |i| &mut self.segments[i])
    }

    /// True when no write, fsync or staged frame is outstanding (the spare's included).
    pub fn idle(&self) -> bool {
        self.staging.is_none()
            && self.sealed.is_empty()
            && self.writing.is_empty()
            && self.fsyncs_in_flight == 0
            && !self.spare_op_in_flight()
    }

    /// Something to do at the next plan (a staged commit or a due fsync).
    pub fn has_pending(&self) -> bool {
        self.staging.is_some() || !self.sealed.is_empty() || self.written_pos > self.durable_pos
    }

    /// Time until an `interval` fsync falls due, if one is waiting.
    pub fn fsync_due_in_ns(&self, now_ns: u64) -> Option<u64> {
        match self.limits.policy {
            FsyncPolicy::Interval(d) if self.written_pos > self.durable_pos && self.fsyncs_in_flight == 0 => {
                Some((self.last_fsync_ns + d.as_nanos() as u64).saturating_sub(now_ns))
            }
            _ => None,
        }
    }

    /// Stages one frame of `payload_bytes`, letting `fill` write the payload,
    /// and returns its log position. The frame becomes part of the commit
    /// being filled; call [`Journal::attach`] with its acknowledgement.
    pub fn stage<I: Io>(&mut self, io: &mut I, pid: Pid, payload_bytes: usize, fill: impl FnOnce(&mut [u8])) -> Result<u64, StageError> {
        if let Some(e) = &self.failed {
            return Err(StageError::Failed(e.clone()));
        }
        if self.full_from.is_some() {
            return Err(StageError::Failed(StromError::DiskFull { log: self.id }));
        }
        self.drop_orphans(io);
        if let Some(e) = &self.failed {
            return Err(StageError::Failed(e.clone()));
        }
        if !self.orphans.is_empty() {
            // A roll could meet a left-behind file: wait for its removal.
            return Err(StageError::NoBuffer);
        }
        let frame_bytes = HEADER_BYTES + payload_bytes;
        assert!(frame_bytes + PAD_BYTES_MAX <= self.limits.write_buf_bytes, "frame larger than a write buffer");
        if self.staging.as_ref().is_some_and(|c| !self.commit_takes(c, frame_bytes)) {
            self.seal_staging();
        }
        let segment_end = self.active_segment_start() + self.limits.segment_bytes;
        if self.segments.is_empty() || self.planned_pos + (frame_bytes + PAD_BYTES_MAX) as u64 > segment_end {
            self.seal_staging();
            self.roll(io).map_err(StageError::Failed)?;
        }
        if self.staging.is_none() {
            let buf = self.take_buffer().ok_or(StageError::NoBuffer)?;
            let file = self.segments.back().expect("active segment").file;
            let seq = self.next_seq;
            self.next_seq = next_commit_seq(self.next_seq);
            self.staging = Some(Commit {
                seq,
                start_pos: self.planned_pos,
                end_pos: self.planned_pos,
                file,
                buf: Some(buf),
                write_in_flight: false,
                written: false,
                acks: Vec::new(),
            });
        }
        let pos = self.planned_pos;
        let durable_before = self.durable_pos;
        let epoch = self.epoch;
        let commit = self.staging.as_mut().expect("staging");
        let buf = commit.buf.as_mut().expect("staging buf");
        let at = buf.len();
        buf.set_len(at + frame_bytes);
        let dst = &mut buf.as_mut_slice()[at..];
        fill(&mut dst[HEADER_BYTES..]);
        let h = FrameHeader { kind: FrameKind::Batch, payload_bytes: payload_bytes as u32, pos, durable_before, epoch, pid };
        frame::seal(dst, &h);
        self.planned_pos += frame_bytes as u64;
        commit.end_pos = self.planned_pos;
        Ok(pos)
    }

    /// Attaches the acknowledgement of the frame staged last.
    pub fn attach(&mut self, ack: PendingAck<R>) {
        self.staging.as_mut().expect("attach without a staged frame").acks.push(ack);
    }

    /// Attaches `ack` to the commit holding partition `pid`'s append at
    /// `base_offset`, after `adopt` copied what it needs of that append's,
    /// so it is given when that commit retires (or refused with it). Gives
    /// `ack` back when no commit in flight holds that append.
    pub fn attach_beside(
        &mut self,
        pid: Pid,
        base_offset: u64,
        mut ack: PendingAck<R>,
        adopt: impl FnOnce(&PendingAck<R>, &mut PendingAck<R>),
    ) -> Result<(), PendingAck<R>> {
        let commits = self.staging.iter_mut().chain(self.sealed.iter_mut()).chain(self.writing.iter_mut());
        for c in commits {
            if let Some(first) = c.acks.iter().find(|a| a.pid == pid && a.base_offset == base_offset) {
                adopt(first, &mut ack);
                c.acks.push(ack);
                return Ok(());
            }
        }
        Err(ack)
    }

    /// Whether a frame of `frame_bytes` may join the filling commit `c`: it
    /// fits in the buffer (with the largest padding frame) and keeps the
    /// commit within `commit_bytes_max`. An empty commit takes any frame
    /// that fits, so a batch larger than the cap is still written.
    fn commit_takes(&self, c: &Commit<R>, frame_bytes: usize) -> bool {
        let buf = c.buf.as_ref().expect("staging buf");
        let fits = buf.remaining() >= frame_bytes + PAD_BYTES_MAX;
        fits && (buf.is_empty() || buf.len() + frame_bytes + PAD_BYTES_MAX <= self.limits.commit_bytes_max)
    }

    /// Bytes of the writes in flight.
    pub fn write_bytes_in_flight(&self) -> u64 {
        self.writing.iter().filter(|c| c.write_in_flight).map(|c| c.end_pos - c.start_pos).sum()
    }

    fn take_buffer(&mut self) -> Option<AlignedBuf> {
        let mut buf = self.free.pop().or_else(|| self.cache.pop_front().map(|(_, b)| b))?;
        buf.set_len(0);
        Some(buf)
    }

    /// Pads the filling commit to a block boundary and queues it for writing.
    fn seal_staging(&mut self) {
        let Some(mut commit) = self.staging.take() else { return };
        let pad = frame::pad_bytes_for(commit.end_pos);
        if pad > 0 {
            let buf = commit.buf.as_mut().expect("staging buf");
            let at = buf.len();
            buf.set_len(at + pad);
            frame::write_pad(&mut buf.as_mut_slice()[at..], commit.end_pos, self.durable_pos, self.epoch);
            commit.end_pos += pad as u64;
        }
        debug_assert_eq!(commit.end_pos, align_up(commit.end_pos));
        self.planned_pos = commit.end_pos;
        self.sealed.push_back(commit);
    }

    /// Starts a new segment at `planned_pos` (block-aligned: staging was sealed).
    /// The file is the spare renamed into place when the log has one (written
    /// space: commits into it persist no allocation), else a new file. Either
    /// way its directory is synced before any write into it, so a durable
    /// frame never sits in a file whose name is not durable.
    fn roll<I: Io>(&mut self, io: &mut I) -> Result<()> {
        debug_assert!(self.staging.is_none());
        let start = self.planned_pos;
        let path = self.dir.join(segment_name(start));
        let file = match self.take_spare_as(io, &path) {
            Some(file) => file,
            None => match io.create(&path) {
                Ok(file) => file,
                // Nothing was created: this append is refused, the log goes on
                // (the next append tries the roll again).
                Err(StromError::Io { errno, .. }) if classify_errno(errno) == Errno::NoSpace => {
                    tracing::warn!(log = self.id, path = %path.display(), "disk full: cannot create the next segment");
                    self.full_last = true;
                    return Err(StromError::DiskFull { log: self.id });
                }
                Err(e) => {
                    self.fail(e.clone());
                    return Err(e);
                }
            },
        };
        crate::failpoint!("roll_before_dir_sync");
        match io.sync_dir(&self.dir) {
            Ok(()) => {
                tracing::info!(log = self.id, path = %path.display(), start_pos = start, "segment rolled");
                self.segments.push_back(Segment { start_pos: start, path, file, reads_in_flight: 0 });
                Ok(())
            }
            Err(e) => {
                self.fail(e.clone());
                Err(e)
            }
        }
    }

    /// One planning step: seal the filling commit when a write slot is free
    /// (otherwise it keeps growing, up to `commit_bytes_max`: that is the
    /// group commit), submit sealed commits, and submit an fdatasync round
    /// when one is due. An idle log seals a lone frame at once: no timer
    /// and no wait for a second request.
    pub fn plan<I: Io>(&mut self, io: &mut I) {
        if self.failed.is_some() {
            return self.record_failure(io);
        }
        self.drop_orphans(io);
        if self.failed.is_some() {
            return;
        }
        if self.full_from.is_some() {
            // Nothing past the full write may be written before the rewind;
            // earlier written commits still need their fdatasync to retire.
            if self.retry_in_place && self.writes_in_flight == 0 && io.now_ns() >= self.retry_after_ns {
                self.retry_unwritten(io);
            }
            return self.plan_fsync(io);
        }
        crate::failpoint!("write_in_flight", self.writes_in_flight > 0);
        if !self.barrier && self.writes_in_flight + self.sealed.len() < self.limits.write_depth {
            self.seal_staging();
        }
        while self.writes_in_flight < self.limits.write_depth {
            let Some(mut commit) = self.sealed.pop_front() else { break };
            let seg_start = self.segment_start_of(commit.file);
            let misaim_bytes = std::mem::take(&mut self.misaim_bytes);
            let file_pos = commit.start_pos - seg_start - misaim_bytes;
            if seg_start + file_pos < self.visible_pos.max(self.durable_pos) {
                // Audit: a write must never touch acknowledged or durable bytes.
                self.metrics.audit_overlapping_writes += 1;
                debug_assert!(misaim_bytes > 0, "write at {} overlaps acknowledged bytes", seg_start + file_pos);
                let err = StromError::LogFailed {
                    log: self.id,
                    cause: format!("bug: write at {} overlaps acknowledged bytes", seg_start + file_pos),
                };
                self.sealed.push_front(commit);
                return self.fail(err);
            }
            let buf = commit.buf.take().expect("sealed buf");
            let fixed = buf.fixed_index();
            let op = Op::Write { file: commit.file, pos: file_pos, buf };
            match io.push(op, Token::new(OpKind::Write, self.id, commit.seq).pack()) {
                Ok(()) => {
                    self.lent.extend(fixed);
                    self.writes_in_flight += 1;
                    commit.write_in_flight = true;
                    self.writing.push_back(commit);
                }
                Err(Op::Write { buf, .. }) => {
                    commit.buf = Some(buf);
                    self.sealed.push_front(commit);
                    break;
                }
                Err(_) => unreachable!("push returns the op it was given"),
            }
        }
        self.plan_fsync(io);
    }

    fn segment_start_of(&self, file: FileId) -> u64 {
        self.segments.iter().rev().find(|s| s.file == file).expect("commit's segment").start_pos
    }

    fn plan_fsync<I: Io>(&mut self, io: &mut I) {
        // What the rounds in flight will make durable; a new round is worth
        // it only for writes completed past that.
        let covered = self.fsync_rounds.back().map_or(self.durable_pos, |r| r.target_pos.max(self.durable_pos));
        if self.fsync_rounds.len() >= self.limits.fsync_depth || self.written_pos <= covered || self.unsynced_files.is_empty() {
            return;
        }
        let due = match self.limits.policy {
            FsyncPolicy::Always => true,
            FsyncPolicy::Interval(d) => self.barrier || io.now_ns() >= self.last_fsync_ns + d.as_nanos() as u64,
            FsyncPolicy::Never => self.barrier,
        };
        if !due {
            return;
        }
        let files = std::mem::take(&mut self.unsynced_files);
        let id = self.next_round_id;
        let mut pushed = 0;
        for (i, &file) in files.iter().enumerate() {
            if io.push(Op::Fsync { file }, Token::new(OpKind::Fsync, self.id, id).pack()).is_err() {
                // Op table full: retry the rest next tick; what was pushed still counts.
                self.unsynced_files.extend_from_slice(&files[i..]);
                break;
            }
            pushed += 1;
        }
        if pushed == 0 {
            return;
        }
        // A partial set cannot advance durable_pos: its round targets what
        // is durable already, so its completions are only absorbed.
        let target_pos = if pushed == files.len() { self.written_pos } else { self.durable_pos };
        if pushed == files.len() {
            self.last_fsync_ns = io.now_ns();
        }
        self.next_round_id = next_commit_seq(self.next_round_id);
        self.fsyncs_in_flight += pushed;
        self.fsync_rounds.push_back(FsyncRound { id, ops_left: pushed, target_pos });
    }

    /// Handles the completion of one of this log's operations.
    pub fn on_completion(&mut self, kind: OpKind, seq: u32, result: std::result::Result<u32, i32>, buf: Option<AlignedBuf>, now_ns: u64) {
        match kind {
            OpKind::Write | OpKind::Fsync if seq == SPARE_SLOT => self.on_spare_completion(kind, result, buf),
            OpKind::Write => {
                self.on_write(seq, crate::failpoint_result!("journal_write_result", result), buf.expect("write returns its buffer"), now_ns)
            }
            OpKind::Fsync => self.on_fsync(seq, crate::failpoint_result!("journal_fsync_result", result)),
            _ => unreachable!("{kind:?} is not a journal op"),
        }
    }

    fn on_write(&mut self, seq: u32, result: std::result::Result<u32, i32>, buf: AlignedBuf, now_ns: u64) {
        self.writes_in_flight -= 1;
        let i = self.writing.iter().position(|c| c.seq == seq && c.write_in_flight).expect("completion for an unknown commit");
        self.writing[i].write_in_flight = false;
        if self.failed.is_some() {
            // The commit was refused already; only the buffer comes home.
            self.free.push(buf);
            self.writing.remove(i);
            return;
        }
        let expected = buf.len();
        self.writing[i].buf = Some(buf);
        match result {
            Ok(n) if n as usize == expected => {}
            Ok(n) => return self.fail_op(IoOp::Write, libc::EIO, &format!("short write: {n} of {expected} bytes")),
            Err(errno) if classify_errno(errno) == Errno::NoSpace => {
                // Nothing of it was written; decide once no write is in flight.
                let start = self.writing[i].start_pos;
                self.full_last = true;
                self.full_from = Some(self.full_from.map_or(start, |at| at.min(start)));
                self.retry_after_ns = now_ns + FULL_RETRY_NS;
                return self.rewind_if_settled();
            }
            Err(errno) => return self.fail_op(IoOp::Write, errno, "write failed"),
        }
        self.full_last = false;
        let commit = &mut self.writing[i];
        commit.written = true;
        let file = commit.file;
        self.bytes_logged += commit.end_pos - commit.start_pos;
        self.metrics.bytes_written += commit.end_pos - commit.start_pos;
        self.metrics.writes += 1;
        if !self.unsynced_files.contains(&file) {
            self.unsynced_files.push(file);
        }
        // written_pos covers the longest prefix of completed commits.
        for c in self.writing.iter() {
            if !c.written {
                break;
            }
            self.written_pos = self.written_pos.max(c.end_pos);
        }
        crate::failpoint!("write_done_before_fsync");
        self.retire();
        if self.retry_in_place && self.writing.iter().all(|c| c.written) {
            // The rewritten commits landed: the log goes on where it was.
            tracing::warn!(log = self.id, "disk full: the commits written again completed; the log goes on");
            self.retry_in_place = false;
            self.full_from = None;
        }
        self.rewind_if_settled();
    }

    /// The largest running max timestamp among `pid`'s appends still
    /// waiting to retire (what its staged max timestamp is after a rewind).
    pub fn pending_max_ts(&self, pid: Pid) -> Option<i64> {
        self.writing.iter().flat_map(|c| c.acks.iter()).filter(|a| a.pid == pid).map(|a| a.max_ts_ms).max()
    }

    fn on_fsync(&mut self, round_id: u32, result: std::result::Result<u32, i32>) {
        self.fsyncs_in_flight -= 1;
        let round = self.fsync_rounds.iter_mut().find(|r| r.id == round_id).expect("completion for an unknown fsync round");
        round.ops_left -= 1;
        if self.failed.is_some() {
            return;
        }
        if let Err(errno) = result {
            // Never retried: after a failed fsync the kernel may have dropped
            // the dirty pages, so a later "successful" fsync proves nothing.
            return self.fail_op(IoOp::Fsync, errno, "fdatasync failed");
        }
        // Rounds finish in submission order: a later round that completed
        // first waits for the earlier one, so a failed fsync is seen before
        // anything past it is acknowledged.
        let mut advanced = false;
        while self.fsync_rounds.front().is_some_and(|r| r.ops_left == 0) {
            let r = self.fsync_rounds.pop_front().expect("front");
            self.metrics.fsyncs += 1;
            self.durable_pos = self.durable_pos.max(r.target_pos);
            advanced = true;
        }
        if advanced {
            crate::failpoint!("fsync_done_before_ack");
            self.retire();
        }
    }

    /// Retires commits from the front whose data is durable under the policy.
    fn retire(&mut self) {
        let limit = match self.limits.policy {
            FsyncPolicy::Always => self.durable_pos,
            _ => self.written_pos,
        };
        while let Some(c) = self.writing.front() {
            if !c.written || c.end_pos > limit {
                break;
            }
            let mut c = self.writing.pop_front().expect("front");
            self.visible_pos = c.end_pos;
            self.retired.append(&mut c.acks);
            self.cache.push_back((c.start_pos, c.buf.take().expect("written commit has its buffer")));
        }
    }

    /// Acknowledgements whose commits became visible since the last call.
    pub fn take_retired(&mut self, out: &mut Vec<PendingAck<R>>) {
        out.append(&mut self.retired);
    }

    /// Appends refused because the log failed.
    pub fn take_refused(&mut self, out: &mut Vec<(PendingAck<R>, StromError)>) {
        out.append(&mut self.refused);
    }

    /// Bytes of the retired tail at `pos` held in memory (up to `visible_pos`).
    pub fn cached_at(&self, pos: u64) -> Option<&[u8]> {
        let i = self.cache.partition_point(|(start, _)| *start <= pos).checked_sub(1)?;
        let (start, buf) = &self.cache[i];
        let end = start + buf.len() as u64;
        (pos < end && pos < self.visible_pos).then(|| &buf.as_slice()[(pos - start) as usize..])
    }

    /// Asks the log to drain: no new commits are sealed; every write and an
    /// fsync (whatever the policy) complete. See [`Journal::quiesced`].
    pub fn set_barrier(&mut self, on: bool) {
        self.barrier = on;
    }

    /// Under a barrier: true once everything written is durable and retired,
    /// so a checkpoint at `visible_pos` describes exactly what is on disk.
    pub fn quiesced(&self) -> bool {
        self.barrier
            && self.sealed.is_empty()
            && self.writing.is_empty()
            && self.fsyncs_in_flight == 0
            && self.durable_pos == self.written_pos
            && self.visible_pos == self.written_pos
    }

    pub fn invariants(&self) {
        assert!(self.log_start <= self.visible_pos);
        assert!(self.written_pos <= self.planned_pos, "written past planned");
        assert!(self.visible_pos <= self.durable_pos.max(self.written_pos), "visible past written");
        if self.failed.is_none() {
            assert!(self.writes_in_flight <= self.limits.write_depth);
            assert!(self.fsync_rounds.len() <= self.limits.fsync_depth);
            assert_eq!(self.fsyncs_in_flight, self.fsync_rounds.iter().map(|r| r.ops_left).sum::<usize>());
        }
        if matches!(self.limits.policy, FsyncPolicy::Always) {
            assert!(self.visible_pos <= self.durable_pos, "acknowledged before durable");
        }
    }
}
