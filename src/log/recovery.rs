//! Opening a log after any kind of stop: load the checkpoint, scan the tail
//! frame by frame, tell a torn tail (never acknowledged, cut) from damaged
//! acknowledged data (reported with its position, never cut), and bump the
//! epoch durably before anything new is written.
//!
//! How a break at position X is judged. Only commits that were in flight at
//! the crash can be torn, and at most `tear_window_bytes` of them exist
//! (every write buffer of the log holding a commit not yet synced). After X we look at every block
//! boundary for a frame that verifies at its own position with the current
//! epoch or newer. Such a frame proves X is *not* a torn tail when its
//! `durable_before` is past X (X was acknowledged before it was written) or
//! when it lies beyond the tear window. Otherwise X is the torn tail: new
//! writes continue at the next block boundary, and frames left beyond it
//! carry an older epoch, so no later scan can take them for new data.
//!
//! The epoch file says where that new writing began ([`EpochMark`]): a later
//! scan that meets a frame of an older epoch at or past that position meets
//! a leftover, even when the first frames the new epoch wrote there were
//! lost, so no newer frame came before it to show it stale.
use std::collections::VecDeque;
use std::path::Path;

use crate::buf::{AlignedBuf, BLOCK_BYTES, align_down, align_up};
use crate::error::{Result, StromError};
use crate::io::{FileId, Io};
use crate::log::checkpoint::Checkpoint;
use crate::log::frame::{self, FrameError, FrameHeader, FrameKind, HEADER_BYTES};
use crate::log::journal::OpenState;
use crate::log::segment::{Segment, parse_segment_name};
use crate::partition::Pid;
use crate::wire::batch::BatchInfo;

pub const EPOCH_FILE: &str = "epoch";

/// The file a clean stop leaves: the log's end (u64, little-endian), where
/// its final checkpoint ends too, and the epoch that wrote it (u32): an open
/// under a later epoch (an older binary that ignored the mark) voids it. Past that end a recycled or pre-written
/// segment holds zeros or older frames; the mark lets the next open take the
/// end as given instead of reading twice the tear window past it to judge a
/// break that cannot be a torn tail. The open removes it before writing.
pub const CLEAN_FILE: &str = "clean";
/// Size of the epoch file: the epoch (u32) and where it began writing (u64).
pub const EPOCH_FILE_BYTES: usize = 12;

/// What the epoch file says: the epoch the last open for writing took, and
/// the position its log ended at, where that epoch began writing. Every
/// frame of the log reaching past `start_pos` was written by that epoch (or
/// a later one); a frame of an older epoch there was left beyond the cut
/// that open made: never acknowledged, never part of the log.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct EpochMark {
    pub epoch: u32,
    /// `None` without an epoch file, or in its 4-byte form written before
    /// the start was recorded: then no frame is known to be a leftover by
    /// its position.
    pub start_pos: Option<u64>,
}

impl EpochMark {
    /// The epoch file's bytes: `epoch` u32 then `start_pos` u64, little-endian.
    pub fn encode(epoch: u32, start_pos: u64) -> [u8; EPOCH_FILE_BYTES] {
        let mut b = [0u8; EPOCH_FILE_BYTES];
        b[..4].copy_from_slice(&epoch.to_le_bytes());
        b[4..].copy_from_slice(&start_pos.to_le_bytes());
        b
    }

    /// Reads the 12-byte form or the older 4-byte one (the epoch alone); `None` for any other length.
    pub fn decode(b: &[u8]) -> Option<EpochMark> {
        let epoch = u32::from_le_bytes(b.get(..4)?.try_into().ok()?);
        match b.len() {
            4 => Some(EpochMark { epoch, start_pos: None }),
            EPOCH_FILE_BYTES => Some(EpochMark { epoch, start_pos: Some(u64::from_le_bytes(b[4..].try_into().ok()?)) }),
            _ => None,
        }
    }

    /// A frame of an older epoch that reaches past where this epoch began
    /// writing: a leftover from before the cut, whatever came before it.
    pub fn is_stale(&self, h: &FrameHeader) -> bool {
        h.epoch < self.epoch && self.start_pos.is_some_and(|start| h.end_pos() > start)
    }
}

#[derive(Debug, Clone)]
pub struct RecoverLimits {
    pub payload_bytes_max: u32,
    /// Bytes that may have been written but not durable at a crash
    /// ([`crate::config::EngineConfig::tear_window_bytes`]).
    pub tear_window_bytes: u64,
    /// Size of each read while scanning (holds any whole frame).
    pub read_chunk_bytes: usize,
    /// Inspect mode: change nothing on disk (no epoch bump, no cut).
    pub read_only: bool,
    /// Scan from the first segment even when a checkpoint exists.
    pub ignore_checkpoint: bool,
}

#[derive(Debug, Clone, Default)]
pub struct RecoveryReport {
    pub log: u32,
    pub scanned_from: u64,
    pub end_pos: u64,
    pub bytes_scanned: u64,
    pub frames_scanned: u64,
    /// Bytes after the last valid frame (a torn or unfinished tail).
    pub bytes_cut: u64,
    pub segments_removed: usize,
    pub elapsed_us: u64,
}

/// Where a scan of the frame chain stopped.
enum Stop {
    /// The chain ran to the end of the last segment.
    End,
    /// The chain broke at this position for this reason.
    Break(u64, FrameError),
}

/// What a scan found: where it stopped, the newest epoch seen, and the end
/// of the last frame that ends on a block boundary. Every commit ends on
/// one (padding), so only that end can be the end of a whole commit; frames
/// after it belong to a commit that is not all there and never was durable.
struct Scanned {
    stop: Stop,
    last_epoch: u32,
    aligned_end: u64,
}

/// Reads a segment file in aligned chunks and hands out frames.
struct ChunkReader {
    buf: AlignedBuf,
    /// File offset of buf[0], and the bytes valid in it.
    at: u64,
    valid: usize,
    /// The log position of the file's first byte (its segment's start).
    seg_start: u64,
    /// File offset past which nothing is wanted (a follower's bound: the
    /// writer's durable end; reading a whole chunk past it at every mark
    /// would read most bytes many times).
    end_off: u64,
}

impl ChunkReader {
    fn new(chunk_bytes: usize) -> ChunkReader {
        ChunkReader { buf: AlignedBuf::new(align_up(chunk_bytes as u64) as usize), at: 0, valid: 0, seg_start: 0, end_off: u64::MAX }
    }

    /// Bytes of the file from `off` on, at least `want` of them if the file has them.
    fn bytes_at<I: Io>(&mut self, io: &mut I, file: FileId, off: u64, want: usize, scanned: &mut u64) -> Result<&[u8]> {
        let have = off >= self.at && off + want as u64 <= self.at + self.valid as u64;
        if !have {
            let start = align_down(off);
            let cap = self.buf.capacity() as u64;
            let needed = (off + want as u64 - start).max(self.end_off.saturating_sub(start)).min(cap);
            let len = align_up(needed).min(cap) as usize;
            debug_assert!((off - start) as usize + want <= len, "frame larger than a read chunk");
            let n = io.read_at(file, start, len, &mut self.buf)?;
            *scanned += n as u64;
            self.at = start;
            self.valid = n;
        }
        let from = (off - self.at) as usize;
        Ok(&self.buf.as_slice()[from.min(self.valid)..self.valid])
    }
}

/// What recovery tells its caller of each batch: its frame header, its
/// batch header, its segment's start, and its payload (the RecordBatch)
/// when `wants_payload` says so for its partition. A commit's batches are
/// delivered only once the commit is known whole, so the payloads asked
/// for are copied until then: ask only for the partitions that need them
/// (those with named indices, whose values are read from the records).
pub struct OnBatch<'a> {
    pub wants_payload: &'a dyn Fn(Pid) -> bool,
    pub batch: &'a mut BatchVisitor<'a>,
}

/// Called with a batch's frame header, batch header, segment start and (if
/// asked for) payload.
pub type BatchVisitor<'a> = dyn FnMut(&FrameHeader, &BatchInfo, u64, Option<&[u8]>) -> Result<()> + 'a;

/// Recovers log `log` in `dir`. `on_batch` sees every valid batch frame
/// after the checkpoint, in log order, with its segment's start position. Returns where writing continues.
pub fn recover<I: Io>(
    io: &mut I,
    dir: &Path,
    log: u32,
    ckpt: Option<&Checkpoint>,
    limits: &RecoverLimits,
    on_batch: &mut OnBatch<'_>,
) -> Result<(OpenState, RecoveryReport)> {
    let started = std::time::Instant::now();
    if !limits.read_only {
        io.create_dir_all(dir)?;
    }
    let mut segments = open_segments(io, dir, !limits.read_only)?;
    let ckpt = ckpt.filter(|_| !limits.ignore_checkpoint);
    let first_start = segments.front().map(|s| s.start_pos);
    let log_start = match (ckpt, first_start) {
        (Some(c), Some(f)) => c.log_start.max(f),
        (Some(c), None) => c.log_start,
        (None, Some(f)) => f,
        (None, None) => 0,
    };
    let scan_from = ckpt.map(|c| c.covered_pos).unwrap_or(log_start).max(log_start);
    if let Some(c) = ckpt {
        // The checkpoint vouches for the log below covered_pos without a
        // scan, so those bytes must be there. Without this check a log that
        // lost them (a truncated or missing segment) opened as if whole, with
        // a hole where acknowledged data was (found by the recovery_scan fuzz target).
        let held = held_until(io, &segments, log_start)?;
        if held < c.covered_pos {
            return Err(corrupt(
                dir,
                held,
                format!("the checkpoint covers up to {} but the segments hold the log only up to {held}", c.covered_pos),
            ));
        }
    }
    let mut report = RecoveryReport { log, scanned_from: scan_from, ..Default::default() };
    let prior = read_epoch(io, dir)?;
    let mut reader = ChunkReader::new(limits.read_chunk_bytes);

    let floor_epoch = prior.epoch.min(ckpt.map_or(0, |c| c.epoch));
    let clean = take_clean_mark(io, dir, ckpt, scan_from, prior, limits.read_only)?;
    let scan = if clean {
        Scanned { stop: Stop::End, last_epoch: floor_epoch, aligned_end: scan_from }
    } else {
        scan_chain(io, &segments, scan_from, floor_epoch, prior, limits, &mut reader, &mut report, on_batch, u64::MAX)?
    };
    let last_epoch = scan.last_epoch;
    // The new epoch is newer than every frame left past the end too: a later
    // scan that breaks where this epoch begins takes frames of this epoch or
    // newer past it for the log's (see `judge_break`).
    let past = if clean {
        PastEnd { newest_epoch: 0, frames_end: scan.aligned_end }
    } else {
        judge_and_look_past(io, dir, &segments, &scan, prior, limits, &mut reader, &mut report)?
    };
    let newest = prior.epoch.max(last_epoch).max(past.newest_epoch);
    // A frame or epoch file at u32::MAX leaves no newer epoch: wrapping to 0
    // would make every old frame look newer than what comes next (found by
    // the recovery_scan fuzz target), so such a log is refused.
    let epoch = newest
        .checked_add(1)
        .ok_or_else(|| corrupt(dir, scan.aligned_end, format!("epoch {newest} leaves no newer epoch to write under")))?;
    // A commit is whole only up to a block-aligned frame end: the log ends
    // there, and writing continues there (nothing acknowledged lies after).
    let end = scan.aligned_end;
    if let Some(c) = ckpt
        && end < c.covered_pos
    {
        return Err(corrupt(dir, end, format!("the checkpoint covers up to {} but the log ends at {end}", c.covered_pos)));
    }
    report.end_pos = align_up(end);
    // Bytes past the end that were written for these positions: the
    // unfinished commit up to the break (and the frame there) and any frame
    // past it. The rest of a recycled or pre-written segment (its zeros, or
    // frames of what it held before, which name other positions) was never
    // part of the log and is not counted as cut.
    let written_past = match &scan.stop {
        Stop::End if clean => end,
        Stop::End => u64::MAX,
        Stop::Break(x, _) => past.frames_end.max(claimed_end(io, &segments, *x, limits, &mut reader, &mut report)?),
    };
    report.bytes_cut = tail_bytes(io, &segments, end)?.min(written_past.saturating_sub(end));
    if !limits.read_only {
        report.segments_removed = remove_segments_after(io, dir, &mut segments, end, log_start)?;
        sync_scanned(io, &segments, scan_from, end)?;
    }
    if !limits.read_only {
        io.write_file_atomic(&dir.join(EPOCH_FILE), &EpochMark::encode(epoch, align_up(end)))?;
    }
    report.elapsed_us = started.elapsed().as_micros() as u64;
    Ok((OpenState { segments, epoch, end_pos: align_up(end), log_start }, report))
}

fn corrupt(dir: &Path, pos: u64, reason: String) -> StromError {
    StromError::Corrupt { path: dir.to_path_buf(), pos, reason }
}

/// After a process kill, commits that were written but never synced (never
/// acknowledged under `always`) sit in the page cache and pass the scan.
/// Makes them durable before they can be served, so that a reader never sees
/// data a later power cut could take back.
fn sync_scanned<I: Io>(io: &mut I, segments: &VecDeque<Segment>, scan_from: u64, end: u64) -> Result<()> {
    for k in 0..segments.len() {
        let seg = &segments[k];
        if seg.start_pos < end && seg.start_pos + logical_len(io, segments, k)? > scan_from {
            io.sync_file(seg.file)?;
        }
    }
    Ok(())
}

/// True when a clean stop left the log ending where its checkpoint does,
/// under the epoch file's epoch: nothing past it belongs to the log and
/// nothing before it is unknown, so no scan is needed. The mark is removed
/// (durably, before this open writes anything) unless `read_only`.
fn take_clean_mark<I: Io>(
    io: &mut I,
    dir: &Path,
    ckpt: Option<&Checkpoint>,
    scan_from: u64,
    prior: EpochMark,
    read_only: bool,
) -> Result<bool> {
    let clean_end = read_clean_end(io, dir)?;
    let clean = ckpt.is_some_and(|c| Some((c.covered_pos, prior.epoch)) == clean_end && scan_from == c.covered_pos);
    if clean_end.is_some() && !read_only {
        io.remove(&dir.join(CLEAN_FILE))?;
        io.sync_dir(dir)?;
    }
    Ok(clean)
}

/// The bytes of [`CLEAN_FILE`] for a log that ends at `end_pos` under `epoch`.
pub fn encode_clean_end(end_pos: u64, epoch: u32) -> [u8; 12] {
    let mut b = [0u8; 12];
    b[..8].copy_from_slice(&end_pos.to_le_bytes());
    b[8..].copy_from_slice(&epoch.to_le_bytes());
    b
}

/// The (end, epoch) a clean stop recorded ([`CLEAN_FILE`]), if any; a file
/// of another size says nothing (the log is scanned as after a crash).
fn read_clean_end<I: Io>(io: &mut I, dir: &Path) -> Result<Option<(u64, u32)>> {
    Ok(io.read_file(&dir.join(CLEAN_FILE))?.and_then(|b| {
        let b: [u8; 12] = b.as_slice().try_into().ok()?;
        Some((u64::from_le_bytes(b[..8].try_into().ok()?), u32::from_le_bytes(b[8..].try_into().ok()?)))
    }))
}

fn read_epoch<I: Io>(io: &mut I, dir: &Path) -> Result<EpochMark> {
    match io.read_file(&dir.join(EPOCH_FILE))? {
        None => Ok(EpochMark::default()),
        Some(b) => EpochMark::decode(&b).ok_or_else(|| corrupt(dir, 0, format!("epoch file is {} bytes, not 4 or 12", b.len()))),
    }
}

fn open_segments<I: Io>(io: &mut I, dir: &Path, writable: bool) -> Result<VecDeque<Segment>> {
    let mut segments = VecDeque::new();
    for name in io.list_dir(dir)? {
        if let Some(start_pos) = parse_segment_name(&name) {
            let path = dir.join(&name);
            let file = io.open(&path, writable)?;
            segments.push_back(Segment { start_pos, path, file, reads_in_flight: 0 });
        }
    }
    Ok(segments)
}

/// Follows the frame chain from `from` across segments until it ends or breaks.
#[allow(clippy::too_many_arguments)]
fn scan_chain<I: Io>(
    io: &mut I,
    segments: &VecDeque<Segment>,
    from: u64,
    floor_epoch: u32,
    prior: EpochMark,
    limits: &RecoverLimits,
    reader: &mut ChunkReader,
    report: &mut RecoveryReport,
    on_batch: &mut OnBatch<'_>,
    until: u64,
) -> Result<Scanned> {
    let mut scan = Scanned { stop: Stop::End, last_epoch: floor_epoch, aligned_end: from };
    // Batches since the last block-aligned frame end: delivered only once
    // their commit is known whole.
    let mut held: Vec<(FrameHeader, BatchInfo, u64, Option<Vec<u8>>)> = Vec::new();
    scan.stop =
        follow_chain(io, segments, from, limits, reader, report, prior, &mut scan.last_epoch, until, &mut |h, info, seg_start, frame| {
            if h.kind == FrameKind::Batch {
                let payload = (on_batch.wants_payload)(h.pid).then(|| frame[HEADER_BYTES..].to_vec());
                held.push((*h, *info.expect("batch frames carry a batch"), seg_start, payload));
            }
            if h.end_pos() % BLOCK_BYTES as u64 == 0 {
                scan.aligned_end = h.end_pos();
                for (h, info, seg_start, payload) in held.drain(..) {
                    (on_batch.batch)(&h, &info, seg_start, payload.as_deref())?;
                }
            }
            Ok(())
        })?;
    Ok(scan)
}

type FrameVisitor<'a> = dyn FnMut(&FrameHeader, Option<&BatchInfo>, u64, &[u8]) -> Result<()> + 'a;

/// Walks verified frames from `from` and reports where the walk stopped: a
/// frame older than the one before it, or a leftover `prior` marks stale,
/// breaks the chain like damage does.
#[allow(clippy::too_many_arguments)]
fn follow_chain<I: Io>(
    io: &mut I,
    segments: &VecDeque<Segment>,
    from: u64,
    limits: &RecoverLimits,
    reader: &mut ChunkReader,
    report: &mut RecoveryReport,
    prior: EpochMark,
    last_epoch: &mut u32,
    until: u64,
    visit: &mut FrameVisitor<'_>,
) -> Result<Stop> {
    let mut pos = from;
    let Some(first) = segments.iter().rposition(|s| s.start_pos <= pos) else {
        return Ok(Stop::End);
    };
    for (k, seg) in segments.iter().enumerate().skip(first) {
        if seg.start_pos != pos && k != first {
            // The previous segment's data ended before this one begins.
            return Ok(Stop::Break(pos, FrameError::Truncated { needed: seg.start_pos - pos }));
        }
        let file_len = logical_len(io, segments, k)?;
        reader.valid = 0;
        reader.seg_start = seg.start_pos;
        reader.end_off = until.saturating_sub(seg.start_pos);
        loop {
            let off = pos - seg.start_pos;
            if pos >= until {
                return Ok(Stop::End);
            }
            if off >= file_len {
                break;
            }
            let bytes = reader.bytes_at(io, seg.file, off, HEADER_BYTES + frame::BATCH_PREFIX_BYTES, &mut report.bytes_scanned)?;
            let h = match frame::decode_header(bytes, pos, limits.payload_bytes_max) {
                Ok(h) if h.epoch < *last_epoch || prior.is_stale(&h) => {
                    return Ok(Stop::Break(pos, FrameError::StaleEpoch { epoch: h.epoch }));
                }
                Ok(h) => h,
                Err(e) => return Ok(Stop::Break(pos, e)),
            };
            if off + h.frame_bytes() > file_len {
                return Ok(Stop::Break(pos, FrameError::Truncated { needed: h.frame_bytes() }));
            }
            let bytes = reader.bytes_at(io, seg.file, off, h.frame_bytes() as usize, &mut report.bytes_scanned)?;
            let info = match h.kind {
                FrameKind::Batch => match frame::verify_payload(&h, bytes) {
                    Ok(info) => Some(info),
                    Err(e) => return Ok(Stop::Break(pos, e)),
                },
                _ => None,
            };
            visit(&h, info.as_ref(), seg.start_pos, bytes)?;
            *last_epoch = h.epoch;
            report.frames_scanned += 1;
            pos = h.end_pos();
        }
        if k + 1 < segments.len() && segments[k + 1].start_pos != pos {
            return Ok(Stop::Break(pos, FrameError::Truncated { needed: segments[k + 1].start_pos.saturating_sub(pos) }));
        }
    }
    Ok(Stop::End)
}

/// Decides whether a break at `x` is a torn tail (Ok) or damage to data
/// that may have been acknowledged (Err naming the position). Only a frame
/// that could belong to the log proves anything: one at least as new as the
/// last good frame, and not a leftover the epoch file marks stale (those lie
/// past the previous cut, and say nothing of the log before it).
fn judge_break(
    dir: &Path,
    headers: &[(u64, FrameHeader)],
    x: u64,
    why: &FrameError,
    last_epoch: u32,
    prior: EpochMark,
    limits: &RecoverLimits,
) -> Result<()> {
    for (p, h) in headers.iter().filter(|(p, _)| *p > x) {
        if h.epoch < last_epoch || prior.is_stale(h) {
            continue;
        }
        if h.durable_before > x {
            return Err(corrupt(
                dir,
                x,
                format!("{why} where acknowledged data must be (a frame at {p} was written after {x} was durable)"),
            ));
        }
        if p - x > limits.tear_window_bytes {
            return Err(corrupt(
                dir,
                x,
                format!("{why}, with valid frames {} bytes later, beyond any write that could have been in flight", p - x),
            ));
        }
    }
    tracing::info!(log = ?dir, pos = x, reason = %why, "cutting a torn tail that was never acknowledged");
    Ok(())
}

/// One read of the space past the end serves the judgement of a break (an
/// Err if it is damage) and the epochs and ends of the frames left there.
#[allow(clippy::too_many_arguments)]
fn judge_and_look_past<I: Io>(
    io: &mut I,
    dir: &Path,
    segments: &VecDeque<Segment>,
    scan: &Scanned,
    prior: EpochMark,
    limits: &RecoverLimits,
    reader: &mut ChunkReader,
    report: &mut RecoveryReport,
) -> Result<PastEnd> {
    let bound_from = match scan.stop {
        Stop::Break(x, _) => x,
        Stop::End => scan.aligned_end,
    };
    let headers = headers_past(io, segments, scan.aligned_end, bound_from, limits, reader, report)?;
    if let Stop::Break(x, why) = &scan.stop {
        judge_break(dir, &headers, *x, why, scan.last_epoch, prior, limits)?;
    }
    Ok(frames_past(&headers, scan.aligned_end))
}

/// What the frames verifying at their own positions past the log's end say.
struct PastEnd {
    newest_epoch: u32,
    /// The end of the furthest of them, or the log's end when there is none.
    frames_end: u64,
}

/// What the frames `headers` found past `end` say.
fn frames_past(headers: &[(u64, FrameHeader)], end: u64) -> PastEnd {
    let mut past = PastEnd { newest_epoch: 0, frames_end: end };
    for (_, h) in headers {
        past.newest_epoch = past.newest_epoch.max(h.epoch);
        past.frames_end = past.frames_end.max(h.end_pos());
    }
    past
}

/// Where the frame at `x` (where the chain broke) claims to end, when its
/// header verifies there; else `x` (nothing there was written for it as far
/// as can be told: zeros, damage, or a recycled file's older frame).
fn claimed_end<I: Io>(
    io: &mut I,
    segments: &VecDeque<Segment>,
    x: u64,
    limits: &RecoverLimits,
    reader: &mut ChunkReader,
    report: &mut RecoveryReport,
) -> Result<u64> {
    let Some(seg) = segments.iter().rev().find(|s| s.start_pos <= x) else { return Ok(x) };
    let bytes = reader.bytes_at(io, seg.file, x - seg.start_pos, HEADER_BYTES, &mut report.bytes_scanned)?;
    Ok(match frame::decode_header(bytes, x, limits.payload_bytes_max) {
        Ok(h) => h.end_pos(),
        Err(_) => x,
    })
}

/// How far past a break recovery looks for frames: twice the tear window.
/// Frames can legitimately lie past a break only within the tear window
/// (commits in flight at the crash); if the log went on past the window, the
/// first commit that starts past it starts within one more commit (at most
/// one write buffer, no more than the window), so a frame that proves damage
/// is found in this range. Past it lies, in a recycled or pre-written
/// segment, up to a segment of space that never held this log's frames:
/// reading all of it would make every open read up to `segment_bytes` twice.
/// Later segments' first blocks are always checked, wherever they start.
pub fn past_break_scan_bytes(limits: &RecoverLimits) -> u64 {
    limits.tear_window_bytes.saturating_mul(2).max(BLOCK_BYTES as u64)
}

/// Every frame header that verifies at its own position on a block boundary
/// past `after`, up to [`past_break_scan_bytes`] past `bound_from` (the
/// break), in the segment holding `after` and in every later one (whose
/// first block is always looked at), in position order.
fn headers_past<I: Io>(
    io: &mut I,
    segments: &VecDeque<Segment>,
    after: u64,
    bound_from: u64,
    limits: &RecoverLimits,
    reader: &mut ChunkReader,
    report: &mut RecoveryReport,
) -> Result<Vec<(u64, FrameHeader)>> {
    let mut found = Vec::new();
    let first = segments.iter().rposition(|s| s.start_pos <= after).unwrap_or(0);
    let stop_at = bound_from.max(after).saturating_add(past_break_scan_bytes(limits));
    for (k, seg) in segments.iter().enumerate().skip(first) {
        let file_len = logical_len(io, segments, k)?;
        reader.valid = 0;
        // A later segment's first block counts too, however far: it holds
        // the first commit written after the roll.
        let mut p = if seg.start_pos > after { seg.start_pos } else { align_up(after + 1) };
        let seg_stop = stop_at.max(seg.start_pos + BLOCK_BYTES as u64);
        while p - seg.start_pos < file_len && p < seg_stop {
            let off = p - seg.start_pos;
            let bytes = reader.bytes_at(io, seg.file, off, HEADER_BYTES + frame::BATCH_PREFIX_BYTES, &mut report.bytes_scanned)?;
            if let Ok(h) = frame::decode_header(bytes, p, limits.payload_bytes_max) {
                found.push((p, h));
            }
            p += BLOCK_BYTES as u64;
        }
    }
    Ok(found)
}

/// The bytes of segment `k` that belong to the log: up to the next
/// segment's start. A segment rolled again after a recovery cut can hold
/// older frames past that point (written before the crash, beyond the new
/// roll), and they are not part of the log.
fn logical_len<I: Io>(io: &mut I, segments: &VecDeque<Segment>, k: usize) -> Result<u64> {
    let file_len = io.file_len(segments[k].file)?;
    Ok(match segments.get(k + 1) {
        Some(next) => file_len.min(next.start_pos - segments[k].start_pos),
        None => file_len,
    })
}

/// Where the log the segments hold without a hole from `from` ends.
fn held_until<I: Io>(io: &mut I, segments: &VecDeque<Segment>, from: u64) -> Result<u64> {
    let mut held = from;
    for (k, seg) in segments.iter().enumerate() {
        let end = seg.start_pos + logical_len(io, segments, k)?;
        if seg.start_pos <= held && end > held {
            held = end;
        }
    }
    Ok(held)
}

/// Bytes stored past `end` in the segment holding it and every later one.
fn tail_bytes<I: Io>(io: &mut I, segments: &VecDeque<Segment>, end: u64) -> Result<u64> {
    let mut total = 0;
    for (k, seg) in segments.iter().enumerate() {
        let seg_end = seg.start_pos + logical_len(io, segments, k)?;
        if seg_end > end {
            total += seg_end - end.max(seg.start_pos);
        }
    }
    Ok(total)
}

/// Deletes segments that begin at or after the cut (they hold only a torn
/// tail), keeping the first segment so the log always has one.
fn remove_segments_after<I: Io>(io: &mut I, dir: &Path, segments: &mut VecDeque<Segment>, end: u64, log_start: u64) -> Result<usize> {
    let mut removed = 0;
    while let Some(seg) = segments.back() {
        if seg.start_pos < align_up(end) || seg.start_pos <= log_start {
            break;
        }
        let seg = segments.pop_back().expect("back");
        io.close(seg.file);
        io.remove(&seg.path)?;
        removed += 1;
    }
    if removed > 0 {
        io.sync_dir(dir)?;
    }
    Ok(removed)
}

/// A read-only follower's scan of a log another process writes: only the
/// frames below the writer's durable mark ([`crate::log::mark`]), which are
/// whole and final, so there is no tail to judge and nothing to cut.
pub struct FollowScan {
    reader: ChunkReader,
    /// The epoch of the last frame seen: frames never go back to an older one.
    pub last_epoch: u32,
    pub bytes_scanned: u64,
}

/// Where a [`FollowScan`] stopped short of its bound, and why.
pub enum FollowStop {
    /// The chain reached the end of the last segment opened: the next one
    /// may exist by now (the writer rolled).
    SegmentsEnd,
    /// The chain broke: a frame that does not verify where the writer said
    /// the log is durable (retention took the segment meanwhile, or damage).
    Break(String),
}

impl FollowScan {
    pub fn new(read_chunk_bytes: usize, last_epoch: u32) -> FollowScan {
        FollowScan { reader: ChunkReader::new(read_chunk_bytes), last_epoch, bytes_scanned: 0 }
    }

    /// Delivers every batch of `[from, until)` to `on_batch`, a commit at a
    /// time; returns the block-aligned end reached (`until` unless it
    /// stopped short, and then why). `prior` is the writer's epoch rule.
    pub fn scan<I: Io>(
        &mut self,
        io: &mut I,
        segments: &VecDeque<Segment>,
        (from, until): (u64, u64),
        prior: EpochMark,
        limits: &RecoverLimits,
        on_batch: &mut OnBatch<'_>,
    ) -> Result<(u64, Option<FollowStop>)> {
        let mut report = RecoveryReport::default();
        let scan = scan_chain(io, segments, from, self.last_epoch, prior, limits, &mut self.reader, &mut report, on_batch, until)?;
        self.bytes_scanned += report.bytes_scanned;
        self.last_epoch = scan.last_epoch;
        let end = scan.aligned_end;
        let stop = match scan.stop {
            _ if end >= until => None,
            Stop::End => Some(FollowStop::SegmentsEnd),
            Stop::Break(x, why) => Some(FollowStop::Break(format!("at {x}: {why}"))),
        };
        Ok((end, stop))
    }
}

impl FollowScan {
    /// The log's bytes over `[from, to)` if the last read still holds them
    /// all (one segment, one chunk): what a scan just verified, for the
    /// follower's tail cache.
    pub fn held(&self, from: u64, to: u64) -> Option<&[u8]> {
        let r = &self.reader;
        let (lo, hi) = (r.seg_start + r.at, r.seg_start + r.at + r.valid as u64);
        (from >= lo && to <= hi && from <= to).then(|| &r.buf.as_slice()[(from - lo) as usize..(to - lo) as usize])
    }
}

/// Opens, for reading, the segments of `dir` that start after `after` (all
/// when None) and before `below`, in position order.
pub fn open_segments_between<I: Io>(io: &mut I, dir: &Path, after: Option<u64>, below: u64) -> Result<VecDeque<Segment>> {
    let mut segments = VecDeque::new();
    for name in io.list_dir(dir)? {
        if let Some(start_pos) = parse_segment_name(&name)
            && after.is_none_or(|a| start_pos > a)
            && start_pos < below
        {
            let path = dir.join(&name);
            let file = match io.open(&path, false) {
                Ok(f) => f,
                // Retention removed it since the listing: it is below the
                // log's start now, and the writer's next mark says so.
                Err(StromError::Io { errno: libc::ENOENT, .. }) => continue,
                Err(e) => return Err(e),
            };
            segments.push_back(Segment { start_pos, path, file, reads_in_flight: 0 });
        }
    }
    Ok(segments)
}
