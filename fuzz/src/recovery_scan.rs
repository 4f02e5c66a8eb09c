//! Log recovery over arbitrary segment files, on the simulated disk: the
//! frame scanner, the torn-tail judgement, the cut and the epoch bump.
//! Recovery must never panic, must hand on only batch frames that verify
//! where they lie, must end on a block boundary after everything it handed
//! on, and must give the same log again when run on what it left.
//!
//! ```text
//!  0  flags: bits 0-1 segments - 1 (max 3), 2 checkpoint, 3 read-only,
//!            4 reseal frames, 5 epoch file, 6 gap before the last segment,
//!            7 ignore the checkpoint
//!  1  epoch file value, u32 LE         5  checkpoint epoch (at most the epoch file's)
//!  6  checkpoint covered_pos - log start, in blocks, u16 LE
//!  8  first segment's length, blocks   9  second segment's length, blocks
//! 10  log start, in blocks, u16 LE    12  tear window, blocks
//! 13  bit 0: a damaged epoch file (its last byte missing);
//!     bit 1: the epoch file's 12-byte form, naming where the epoch began
//! 14  that start - log start, in blocks, u16 LE (else the 4-byte form)
//! 16  the log's bytes from its start, cut into the segments
//! ```
//! With "reseal", each segment's frame chain is walked from its start and
//! every header is given its position and fresh checksums (and each batch
//! its length and CRC), so the fuzzer reaches the checks behind them.

use std::path::{Path, PathBuf};

use strom::StromError;
use strom::buf::BLOCK_BYTES;
use strom::io::Io;
use strom::io::sim::{SimDisk, SimFaults, SimIo};
use strom::log::checkpoint::Checkpoint;
use strom::log::frame::{self, FrameHeader, FrameKind, HEADER_BYTES};
use strom::log::recovery::{self, EPOCH_FILE, EpochMark, RecoverLimits};
use strom::log::segment::segment_name;
use strom::wire::batch::{self, BatchInfo};

pub const HEAD_BYTES: usize = 16;
/// Largest batch payload recovery accepts here: two blocks, so frames span blocks.
pub const PAYLOAD_BYTES_MAX: u32 = 2 * BLOCK_BYTES as u32;
/// A read chunk holds the largest frame from any offset in a block.
const READ_CHUNK_BYTES: usize = 4 * BLOCK_BYTES;
const SEGMENTS_MAX: usize = 3;
const DIR: &str = "/sim/log-0000";

const FLAG_CHECKPOINT: u8 = 1 << 2;
const FLAG_READ_ONLY: u8 = 1 << 3;
const FLAG_RESEAL: u8 = 1 << 4;
const FLAG_EPOCH_FILE: u8 = 1 << 5;
const FLAG_GAP: u8 = 1 << 6;
const FLAG_IGNORE_CHECKPOINT: u8 = 1 << 7;

const BLOCK: u64 = BLOCK_BYTES as u64;

/// What the input describes.
#[derive(Debug)]
struct Scenario {
    segments: Vec<(u64, Vec<u8>)>,
    epoch_file: Option<Vec<u8>>,
    /// What the epoch file says when it is whole (epoch 0 and no start without one).
    prior: EpochMark,
    ckpt: Option<Checkpoint>,
    limits: RecoverLimits,
}

/// One batch frame recovery handed on: header, batch, its segment's start.
type Delivered = (FrameHeader, BatchInfo, u64);

pub fn check(data: &[u8]) {
    let Some(s) = scenario(data) else {
        return;
    };
    let (mut io, dir) = disk_of(&s);
    let Some((end_pos, epoch, first)) = recover_checked(&mut io, &dir, &s) else {
        return;
    };
    check_follower(&mut io, &dir, &s, (end_pos, epoch), &first);
    if s.limits.read_only {
        return;
    }
    // What recovery left is a log like any other: recovering it again
    // (the next restart) finds the same batches and the same end. Unless
    // that recovery took the last epoch there is: every open takes a new one,
    // so the open after it must refuse the log (found by libFuzzer).
    let again = recover_checked(&mut io, &dir, &Scenario { prior: EpochMark { epoch, start_pos: Some(end_pos) }, ..s });
    if epoch == u32::MAX {
        assert!(again.is_none(), "a log opened again after its last epoch");
        return;
    }
    let (end_again, _, second) = again.expect("a recovered log failed to recover again");
    assert_eq!(end_again, end_pos, "a second recovery ends elsewhere");
    assert_eq!(second, first, "a second recovery hands on other batches");
}

fn scenario(data: &[u8]) -> Option<Scenario> {
    let (head, log) = data.split_first_chunk::<HEAD_BYTES>()?;
    let flags = head[0];
    let u16_at = |i: usize| u64::from(u16::from_le_bytes([head[i], head[i + 1]]));
    let prior_epoch = u32::from_le_bytes([head[1], head[2], head[3], head[4]]);
    let log_start = u16_at(10) * BLOCK;
    let start_pos = (head[13] & 2 != 0).then(|| log_start + u16_at(14) * BLOCK);
    let epoch_file = (flags & FLAG_EPOCH_FILE != 0).then(|| {
        let mut e = match start_pos {
            Some(start) => EpochMark::encode(prior_epoch, start).to_vec(),
            None => prior_epoch.to_le_bytes().to_vec(),
        };
        if head[13] & 1 == 1 {
            e.pop();
        }
        e
    });
    // A checkpoint is written under the epoch in the epoch file, never a later one.
    let epoch_floor = if epoch_file.is_some() { prior_epoch } else { 0 };
    let ckpt = (flags & FLAG_CHECKPOINT != 0).then(|| Checkpoint {
        version: strom::log::checkpoint::VERSION,
        log: 0,
        epoch: u32::from(head[5]).min(epoch_floor),
        covered_pos: log_start + u16_at(6) * BLOCK,
        log_start,
        partitions: vec![],
    });
    let count = 1 + usize::from(flags & 3).min(SEGMENTS_MAX - 1);
    let limits = RecoverLimits {
        payload_bytes_max: PAYLOAD_BYTES_MAX,
        tear_window_bytes: u64::from(head[12]) * BLOCK,
        read_chunk_bytes: READ_CHUNK_BYTES,
        read_only: flags & FLAG_READ_ONLY != 0,
        ignore_checkpoint: flags & FLAG_IGNORE_CHECKPOINT != 0,
    };
    let mut segments = split(log, log_start, count, [head[8], head[9]], flags & FLAG_GAP != 0);
    if flags & FLAG_RESEAL != 0 {
        for (start, bytes) in &mut segments {
            reseal_chain(bytes, *start);
        }
    }
    let prior = if flags & FLAG_EPOCH_FILE != 0 { EpochMark { epoch: prior_epoch, start_pos } } else { EpochMark::default() };
    Some(Scenario { segments, epoch_file, prior, ckpt, limits })
}

/// Cuts the log into `count` segments at block multiples; an empty segment
/// is kept only last (another would share the next one's name).
fn split(log: &[u8], log_start: u64, count: usize, blocks: [u8; 2], gap: bool) -> Vec<(u64, Vec<u8>)> {
    let mut segments = Vec::new();
    let (mut start, mut rest) = (log_start, log);
    for k in 0..count {
        let take = match blocks.get(k) {
            Some(&b) if k + 1 < count => rest.len().min(usize::from(b) * BLOCK_BYTES),
            _ => rest.len(),
        };
        if gap && k + 1 == count && k > 0 {
            start += BLOCK;
        }
        let (bytes, tail) = rest.split_at(take);
        if !bytes.is_empty() || k + 1 == count {
            segments.push((start, bytes.to_vec()));
        }
        start += take as u64;
        rest = tail;
    }
    segments
}

/// Gives every frame of the chain from `start` its position, version,
/// magic, batch length and checksums, keeping the other fields.
pub fn reseal_chain(bytes: &mut [u8], start: u64) {
    let mut off = 0usize;
    while let Some(header) = bytes.get(off..off + HEADER_BYTES) {
        let payload_bytes = u32::from_le_bytes(header[8..12].try_into().expect("4 bytes"));
        let (kind, max, min) = match header[12] {
            1 => (FrameKind::Batch, PAYLOAD_BYTES_MAX as usize, batch::BATCH_HEADER_BYTES),
            2 => (FrameKind::Pad, frame::PAD_BYTES_MAX - HEADER_BYTES, 0),
            _ => return,
        };
        let payload = payload_bytes as usize;
        let covered = HEADER_BYTES + if kind == FrameKind::Batch { frame::BATCH_PREFIX_BYTES } else { 0 };
        if !(min..=max).contains(&payload) || off + covered > bytes.len() {
            return;
        }
        let h = FrameHeader {
            kind,
            payload_bytes,
            pos: start + off as u64,
            durable_before: u64::from_le_bytes(header[24..32].try_into().expect("8 bytes")),
            epoch: u32::from_le_bytes(header[32..36].try_into().expect("4 bytes")),
            pid: u32::from_le_bytes(header[36..40].try_into().expect("4 bytes")),
        };
        if kind == FrameKind::Batch {
            let end = (off + HEADER_BYTES + payload).min(bytes.len());
            let body = &mut bytes[off + HEADER_BYTES..end];
            body[8..12].copy_from_slice(&((payload - 12) as i32).to_be_bytes());
            batch::recompute_crc(body);
        }
        frame::seal(&mut bytes[off..], &h);
        off += HEADER_BYTES + payload;
    }
}

/// Runs recovery and checks what it promises; `None` when it refused the log.
fn recover_checked(io: &mut SimIo, dir: &Path, s: &Scenario) -> Option<(u64, u32, Vec<Delivered>)> {
    let mut delivered: Vec<Delivered> = Vec::new();
    let mut on_batch = |h: &FrameHeader, info: &BatchInfo, seg_start: u64, _: Option<&[u8]>| {
        delivered.push((*h, *info, seg_start));
        Ok(())
    };
    let mut on_batch = recovery::OnBatch { wants_payload: &|_| false, batch: &mut on_batch };
    let (state, _report) = match recovery::recover(io, dir, 0, s.ckpt.as_ref(), &s.limits, &mut on_batch) {
        Ok(done) => done,
        Err(e) => {
            // Refusing a log is fine, but only as damage found on disk.
            assert!(matches!(e, StromError::Corrupt { .. }), "recovery failed with {e:?}");
            return None;
        }
    };
    assert_eq!(state.end_pos % BLOCK, 0, "the log continues off a block boundary");
    assert!(state.epoch > s.prior.epoch, "epoch {} is not past the epoch file's {}", state.epoch, s.prior.epoch);
    if !s.limits.read_only {
        // The next open learns where this epoch began writing: where the log now ends.
        let file = io.read_file(&dir.join(EPOCH_FILE)).expect("simulated read");
        assert_eq!(
            file.as_deref(),
            Some(&EpochMark::encode(state.epoch, state.end_pos)[..]),
            "the epoch file does not say where the epoch began"
        );
    }
    let ckpt = s.ckpt.as_ref().filter(|_| !s.limits.ignore_checkpoint);
    if let Some(c) = ckpt {
        assert!(state.end_pos >= c.covered_pos, "the log ends at {} before the checkpoint's {}", state.end_pos, c.covered_pos);
        // The checkpoint vouches for the log below covered_pos without a scan,
        // so those bytes must at least be there: a log that lost them is damaged.
        let held = held_until(&s.segments, state.log_start);
        assert!(held >= c.covered_pos, "accepted a checkpoint covering up to {} of a log holding bytes only up to {held}", c.covered_pos);
    }
    let scan_from = ckpt.map_or(0, |c| c.covered_pos);
    let mut prev: Option<&FrameHeader> = None;
    for (h, info, seg_start) in &delivered {
        check_verifies(&s.segments, h, info, *seg_start);
        assert!(h.pos >= scan_from && h.end_pos() <= state.end_pos, "{h:?} is outside {scan_from}..{}", state.end_pos);
        assert!(h.epoch < state.epoch, "{h:?} is not older than the new epoch {}", state.epoch);
        assert!(!s.prior.is_stale(h), "{h:?} is a leftover past where epoch {} began writing", s.prior.epoch);
        if let Some(p) = prev {
            assert!(p.end_pos() <= h.pos && p.epoch <= h.epoch, "{h:?} after {p:?}");
        }
        prev = Some(h);
    }
    Some((state.end_pos, state.epoch, delivered))
}

/// A read-only follower of the log as recovery left it, told by the
/// writer's mark that it is durable up to where recovery ended it: it hands
/// on exactly the batches recovery did and reaches that end, whether in one
/// scan or in two split at a commit's end (the marks it would be sent).
fn check_follower(io: &mut SimIo, dir: &Path, s: &Scenario, (end_pos, epoch): (u64, u32), first: &[Delivered]) {
    let segments = recovery::open_segments_between(io, dir, None, u64::MAX).expect("simulated listing");
    let ckpt = s.ckpt.as_ref().filter(|_| !s.limits.ignore_checkpoint);
    let log_start = segments.front().map_or(0, |seg| seg.start_pos).max(ckpt.map_or(0, |c| c.log_start));
    let from = ckpt.map_or(log_start, |c| c.covered_pos.max(log_start));
    // The epoch rule the writer publishes: what recovery wrote, or (reading
    // only) what the epoch file said.
    let prior = if s.limits.read_only { s.prior } else { EpochMark { epoch, start_pos: Some(end_pos) } };
    let floor = s.prior.epoch.min(ckpt.map_or(0, |c| c.epoch));
    let commit_ends: Vec<u64> = first.iter().map(|(h, _, _)| h.end_pos()).filter(|e| e % BLOCK == 0 && *e < end_pos).collect();
    let mid = commit_ends.get(commit_ends.len() / 2).copied();
    for steps in [vec![end_pos], mid.into_iter().chain([end_pos]).collect()] {
        let mut scan = recovery::FollowScan::new(READ_CHUNK_BYTES, floor);
        let mut delivered: Vec<Delivered> = Vec::new();
        let mut at = from;
        for until in steps {
            let mut on_batch = |h: &FrameHeader, info: &BatchInfo, seg_start: u64, _: Option<&[u8]>| {
                delivered.push((*h, *info, seg_start));
                Ok(())
            };
            let mut on_batch = recovery::OnBatch { wants_payload: &|_| false, batch: &mut on_batch };
            let (reached, stop) = scan.scan(io, &segments, (at, until), prior, &s.limits, &mut on_batch).expect("simulated reads");
            assert!(
                stop.is_none() && reached == until,
                "a follower stopped at {reached} of a log recovery ended at {end_pos} (to {until})"
            );
            at = reached;
        }
        assert_eq!(delivered, first, "a follower hands on other batches than recovery");
    }
}

/// Where the bytes the segments hold without a hole from `from` end.
fn held_until(segments: &[(u64, Vec<u8>)], from: u64) -> u64 {
    let mut held = from;
    for (k, (start, bytes)) in segments.iter().enumerate() {
        let end = segments.get(k + 1).map_or(start + bytes.len() as u64, |(next, _)| (*next).min(start + bytes.len() as u64));
        if *start <= held && end > held {
            held = end;
        }
    }
    held
}

/// A batch frame recovery handed on verifies where the segment holds it.
fn check_verifies(segments: &[(u64, Vec<u8>)], h: &FrameHeader, info: &BatchInfo, seg_start: u64) {
    let k = segments.iter().position(|(start, _)| *start == seg_start).expect("delivered from a segment that exists");
    let (start, bytes) = &segments[k];
    // A segment's log ends where the next one starts.
    let logical_end = segments.get(k + 1).map_or(start + bytes.len() as u64, |(next, _)| (*next).min(start + bytes.len() as u64));
    assert!(h.pos >= *start && h.end_pos() <= logical_end, "{h:?} is not inside segment {start}..{logical_end}");
    let at = &bytes[(h.pos - start) as usize..];
    assert_eq!(frame::decode_header(at, h.pos, PAYLOAD_BYTES_MAX).as_ref(), Ok(h), "handed on a frame that does not decode");
    assert_eq!(frame::verify_payload(h, at).as_ref(), Ok(info), "handed on a frame that does not verify");
    assert_eq!(h.kind, FrameKind::Batch);
}

/// Builds log inputs from real frames, as the journal lays them out: each
/// commit is batch frames then padding to the next block boundary.
pub struct LogBuilder {
    pub start: u64,
    pub bytes: Vec<u8>,
    durable: u64,
    next_offset: u64,
}

impl LogBuilder {
    pub fn new(start: u64) -> LogBuilder {
        LogBuilder { start, bytes: Vec::new(), durable: start, next_offset: 0 }
    }

    pub fn pos(&self) -> u64 {
        self.start + self.bytes.len() as u64
    }

    /// Appends one commit of `batches` batches of `records` records for
    /// partition `pid` under `epoch`, and pads it to a block boundary.
    pub fn commit(&mut self, epoch: u32, pid: u32, batches: usize, records: usize) -> &mut LogBuilder {
        for _ in 0..batches {
            let mut b = batch::BatchBuilder::new(1_700_000_000_000);
            for i in 0..records {
                b.push(1_700_000_000_000 + i as i64, None, Some(format!("record-{i}").as_bytes()), &[]);
            }
            let mut payload = b.finish();
            batch::set_base_offset(&mut payload, self.next_offset);
            self.next_offset += records as u64;
            let pos = self.pos();
            let mut f = vec![0u8; HEADER_BYTES + payload.len()];
            f[HEADER_BYTES..].copy_from_slice(&payload);
            let h =
                FrameHeader { kind: FrameKind::Batch, payload_bytes: payload.len() as u32, pos, durable_before: self.durable, epoch, pid };
            frame::seal(&mut f, &h);
            self.bytes.extend_from_slice(&f);
        }
        let pos = self.pos();
        let mut pad = vec![0u8; frame::pad_bytes_for(pos)];
        if !pad.is_empty() {
            frame::write_pad(&mut pad, pos, self.durable, epoch);
            self.bytes.extend_from_slice(&pad);
        }
        self.durable = self.pos();
        self
    }

    /// Stamps the next commits' frames with `durable_before = pos`, as if
    /// they were staged while the log was durable only that far.
    pub fn durable_at(&mut self, pos: u64) -> &mut LogBuilder {
        self.durable = pos;
        self
    }

    /// The input for this log: `head` (see the module doc) then the bytes.
    pub fn input(&self, head: [u8; HEAD_BYTES]) -> Vec<u8> {
        [&head[..], &self.bytes].concat()
    }
}

/// A head: flags, epoch file value, segment lengths in blocks, log start
/// in blocks, tear window in blocks; no checkpoint.
pub fn head(flags: u8, epoch: u32, seg_blocks: [u8; 2], start_blocks: u16, tear_blocks: u8) -> [u8; HEAD_BYTES] {
    let mut h = [0u8; HEAD_BYTES];
    h[0] = flags;
    h[1..5].copy_from_slice(&epoch.to_le_bytes());
    h[8] = seg_blocks[0];
    h[9] = seg_blocks[1];
    h[10..12].copy_from_slice(&start_blocks.to_le_bytes());
    h[12] = tear_blocks;
    h
}

/// `head` with a checkpoint of `epoch` covering `covered_blocks` past the log start.
pub fn with_checkpoint(mut h: [u8; HEAD_BYTES], epoch: u8, covered_blocks: u16) -> [u8; HEAD_BYTES] {
    h[0] |= FLAG_CHECKPOINT;
    h[5] = epoch;
    h[6..8].copy_from_slice(&covered_blocks.to_le_bytes());
    h
}

/// `head` with the epoch file's 12-byte form, the epoch having begun
/// `start_blocks` past the log start.
pub fn with_epoch_start(mut h: [u8; HEAD_BYTES], start_blocks: u16) -> [u8; HEAD_BYTES] {
    h[13] |= 2;
    h[14..16].copy_from_slice(&start_blocks.to_le_bytes());
    h
}

pub const FLAGS_EPOCH_FILE: u8 = FLAG_EPOCH_FILE;
pub const FLAGS_READ_ONLY: u8 = FLAG_READ_ONLY;
pub const FLAGS_RESEAL: u8 = FLAG_RESEAL;
pub const FLAGS_GAP: u8 = FLAG_GAP;

/// The simulated disk holding the scenario's files, and the log's directory.
fn disk_of(s: &Scenario) -> (SimIo, PathBuf) {
    let mut io = SimIo::new(SimDisk::new(), 0, SimFaults::default());
    let dir = PathBuf::from(DIR);
    for (start, bytes) in &s.segments {
        io.write_file_atomic(&dir.join(segment_name(*start)), bytes).expect("simulated write");
    }
    if let Some(e) = &s.epoch_file {
        io.write_file_atomic(&dir.join(EPOCH_FILE), e).expect("simulated write");
    }
    (io, dir)
}

/// Whether recovery accepts the log `data` describes (for naming seeds).
pub fn recovers(data: &[u8]) -> bool {
    let Some(s) = scenario(data) else {
        return false;
    };
    let (mut io, dir) = disk_of(&s);
    recover_checked(&mut io, &dir, &s).is_some()
}
