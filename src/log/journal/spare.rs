//! The spare segment: space already written once, kept to become the next
//! segment, so that commits into it overwrite allocated, written blocks and
//! each commit's fdatasync is a pure flush (no allocation, extent conversion
//! or size change to persist; DURABILITY.md, "Pre-written segments", has the
//! measurements that chose this).
//!
//! Where a spare comes from:
//! - retention *recycles* the oldest segment it drops (renames it to
//!   [`SPARE_NAME`] instead of removing it) when the log has no spare, or
//!   one less written than it (that one is removed): its space is written
//!   already, for free;
//! - otherwise the log *pre-writes* one: at quiet moments only (no commit
//!   staged, in flight or awaiting its fdatasync for [`SPARE_QUIET_NS`]),
//!   the core's plan step has the log create the spare and write zeros into
//!   it through the core's own ring, one [`SPARE_ZERO_CHUNK_BYTES`] write at
//!   a time (so a commit that arrives meanwhile waits behind one chunk at
//!   most) and at most [`SPARE_PREP_BYTES_PER_SEC`], then fdatasync it. A log that is never quiet never pays the
//!   second write of every byte that pre-writing costs; it rolls into fresh
//!   space as before.
//!
//! A roll renames the spare to the new segment's name and syncs the
//! directory, as creating one did, unless a spare op is in flight (then it
//! creates a fresh file: a commit never waits for the spare). A spare used
//! before it was wholly prepared is still correct: only its speed differs.
//! A full disk or an I/O error while preparing stops the preparation, never
//! the log: nothing acknowledged lives in a spare.
//!
//! What the bytes of a spare are, past the log's end once it is a segment:
//! zeros, or frames of the segment it used to be, which name other positions
//! (every frame binds its own position into its checksum), so no scan takes
//! them for the log's.
use super::*;
use crate::log::segment::SPARE_NAME;

/// The commit sequence slot the spare's ops carry in their tokens (commit
/// sequences skip it), so they come back to the log like its own writes
/// and fdatasyncs without a token kind of their own.
pub(super) const SPARE_SLOT: u32 = u32::MAX;

/// How long a log's commit path must have been idle before it prepares its
/// spare: the moment is quiet, not a gap between two commits of a burst.
pub const SPARE_QUIET_NS: u64 = 2_000_000;

/// Bytes of each zero write preparing a spare: the most a commit that
/// arrives during preparation waits behind (one such write).
pub const SPARE_ZERO_CHUNK_BYTES: usize = 128 << 10;

/// The most disk bandwidth a log's spare preparation takes, even when the
/// log is quiet: what its reads, other logs and a disk ceiling measured
/// meanwhile lose at most (a 1 GiB spare takes 32 s of quiet to prepare).
pub const SPARE_PREP_BYTES_PER_SEC: u64 = 32 << 20;

/// How long a log waits to try again after the spare could not be created.
const SPARE_RETRY_NS: u64 = 1_000_000_000;

/// How long a log prepares no spare after giving one up to a full disk.
const SPARE_FULL_BACKOFF_NS: u64 = 60_000_000_000;

/// A log's spare segment file, open for writing.
#[derive(Debug)]
pub struct Spare {
    pub path: PathBuf,
    pub file: FileId,
    /// Bytes from the file's start known written (zeros or old frames).
    pub prepared_bytes: u64,
    /// Of those, the bytes an fdatasync made durable (allocation included).
    pub synced_bytes: u64,
    /// Where preparation stops: the segment size, or less after ENOSPC.
    pub target_bytes: u64,
}

/// The journal's spare and its preparation.
#[derive(Debug, Default)]
pub(super) struct SpareState {
    spare: Option<Spare>,
    /// A zero write or fdatasync of the spare is in flight.
    op_in_flight: bool,
    /// Bytes a submitted spare fdatasync covers.
    sync_target_bytes: u64,
    /// Last time the commit path was seen busy.
    busy_ns: u64,
    /// No spare is created before this time (after a failed create).
    retry_at_ns: u64,
    /// No zero write is pushed before this time ([`SPARE_PREP_BYTES_PER_SEC`]).
    next_chunk_ns: u64,
    /// An I/O error while preparing: this run prepares no more spares.
    prep_off: bool,
    /// The zeros the preparation writes, while no write owns them.
    zeros: Option<AlignedBuf>,
}

/// Attempts at a commit sequence never use [`SPARE_SLOT`].
pub(super) fn next_commit_seq(seq: u32) -> u32 {
    match seq.wrapping_add(1) {
        SPARE_SLOT => 0,
        s => s,
    }
}

impl<R> Journal<R> {
    /// Takes up a spare left in the log's directory by an earlier run (the
    /// open runs this after recovery; its content is never part of the log):
    /// its length counts as prepared, not yet as durable.
    pub fn adopt_spare<I: Io>(&mut self, io: &mut I) -> Result<()> {
        if self.spare.spare.is_some() || !io.list_dir(&self.dir)?.iter().any(|n| n == SPARE_NAME) {
            return Ok(());
        }
        let path = self.dir.join(SPARE_NAME);
        let file = io.open(&path, true)?;
        let prepared_bytes = crate::buf::align_down(io.file_len(file)?);
        self.spare.spare = Some(Spare { path, file, prepared_bytes, synced_bytes: 0, target_bytes: self.limits.segment_bytes });
        Ok(())
    }

    /// The log's spare, if it has one.
    pub fn spare(&self) -> Option<&Spare> {
        self.spare.spare.as_ref()
    }

    /// True when the log holds a spare segment.
    pub fn has_spare(&self) -> bool {
        self.spare.spare.is_some()
    }

    /// Turns segment `seg` (dropped by retention, no read in flight) into
    /// the spare. Returns false, changing nothing, when a spare at least as
    /// written exists already, or one of its ops is in flight (the caller
    /// removes the segment instead). A spare only partly prepared (zeros
    /// written at quiet moments: a log busy but for short gaps, as loadgen's
    /// steady state found) is removed for it: the dropped segment's space is
    /// all written, so the commits of the next segment pay no allocation.
    pub(super) fn recycle<I: Io>(&mut self, io: &mut I, seg: &Segment) -> Result<bool> {
        // A sealed segment's bytes were all written and made durable.
        let written = crate::buf::align_down(io.file_len(seg.file).unwrap_or(0));
        if let Some(old) = &self.spare.spare {
            if self.spare.op_in_flight || old.prepared_bytes >= written {
                return Ok(false);
            }
            let old = self.spare.spare.take().expect("a spare");
            io.remove(&old.path)?;
            io.close(old.file);
        }
        let path = self.dir.join(SPARE_NAME);
        io.rename(&seg.path, &path)?;
        let target_bytes = self.limits.segment_bytes;
        self.spare.spare = Some(Spare { path, file: seg.file, prepared_bytes: written, synced_bytes: written, target_bytes });
        self.metrics.segments_recycled += 1;
        Ok(true)
    }

    /// The roll's use of the spare: renames it to `path` and returns its file,
    /// or None (the caller creates a fresh file) when there is no spare, one
    /// of its ops is in flight, or the rename failed (the spare is then given
    /// up: closed and forgotten; a file left under the spare name is taken up
    /// again at the next open).
    pub(super) fn take_spare_as<I: Io>(&mut self, io: &mut I, path: &Path) -> Option<FileId> {
        if self.spare.op_in_flight {
            return None;
        }
        let spare = self.spare.spare.take()?;
        match io.rename(&spare.path, path) {
            Ok(()) => {
                self.metrics.segments_reused += 1;
                Some(spare.file)
            }
            Err(e) => {
                tracing::warn!(log = self.id, error = %e, "cannot reuse the spare segment; creating a fresh one");
                io.close(spare.file);
                None
            }
        }
    }

    /// The core's plan step, after [`Journal::plan`]: at a quiet moment,
    /// one step of preparing the spare (create it, write a chunk of zeros,
    /// or fdatasync what was written). Never while a commit is staged, in
    /// flight or awaiting its fdatasync, under a barrier, or after a failure.
    pub fn plan_spare<I: Io>(&mut self, io: &mut I) {
        let now = io.now_ns();
        let commit_idle = self.staging.is_none() && self.sealed.is_empty() && self.writing.is_empty() && self.fsyncs_in_flight == 0;
        if !commit_idle {
            self.spare.busy_ns = now;
            return;
        }
        if self.full_from.is_some() {
            return self.give_up_spare_for_space(io, now);
        }
        let quiet = now >= self.spare.busy_ns + SPARE_QUIET_NS;
        if !quiet || self.spare.op_in_flight || self.spare.prep_off || self.barrier || self.failed.is_some() || self.full_from.is_some() {
            return;
        }
        let Some(spare) = &self.spare.spare else {
            return self.create_spare(io, now);
        };
        let token = Token::new(if spare.prepared_bytes < spare.target_bytes { OpKind::Write } else { OpKind::Fsync }, self.id, SPARE_SLOT);
        if spare.prepared_bytes < spare.target_bytes {
            if now < self.spare.next_chunk_ns {
                return;
            }
            let chunk_bytes = ((spare.target_bytes - spare.prepared_bytes) as usize).min(SPARE_ZERO_CHUNK_BYTES);
            let mut buf = self.spare.zeros.take().unwrap_or_else(|| {
                let mut b = AlignedBuf::new(SPARE_ZERO_CHUNK_BYTES);
                b.full_mut().fill(0);
                b
            });
            buf.set_len(chunk_bytes);
            match io.push(Op::Write { file: spare.file, pos: spare.prepared_bytes, buf }, token.pack()) {
                Ok(()) => {
                    self.spare.op_in_flight = true;
                    self.spare.next_chunk_ns = now + chunk_bytes as u64 * 1_000_000_000 / SPARE_PREP_BYTES_PER_SEC;
                }
                Err(Op::Write { buf, .. }) => self.spare.zeros = Some(buf),
                Err(_) => unreachable!("push returns the op it was given"),
            }
        } else if spare.synced_bytes < spare.prepared_bytes && io.push(Op::Fsync { file: spare.file }, token.pack()).is_ok() {
            self.spare.op_in_flight = true;
            self.spare.sync_target_bytes = spare.prepared_bytes;
        }
    }

    /// The disk is full under the log's commits: the spare's space serves
    /// them better. Removes it (once no op of it is in flight) and prepares
    /// none for [`SPARE_FULL_BACKOFF_NS`].
    fn give_up_spare_for_space<I: Io>(&mut self, io: &mut I, now: u64) {
        if self.spare.op_in_flight {
            return;
        }
        self.spare.retry_at_ns = now + SPARE_FULL_BACKOFF_NS;
        let Some(spare) = self.spare.spare.take() else { return };
        io.close(spare.file);
        match io.remove(&spare.path) {
            Ok(()) => tracing::warn!(log = self.id, "disk full: the spare segment is removed to free its space"),
            Err(e) => tracing::warn!(log = self.id, error = %e, "disk full: the spare segment could not be removed"),
        }
    }

    /// Creates an empty spare to prepare (its name is made durable by the
    /// roll that renames it: a spare lost to a crash costs only its space).
    fn create_spare<I: Io>(&mut self, io: &mut I, now: u64) {
        if now < self.spare.retry_at_ns {
            return;
        }
        let path = self.dir.join(SPARE_NAME);
        match io.create(&path) {
            Ok(file) => {
                let target_bytes = self.limits.segment_bytes;
                self.spare.spare = Some(Spare { path, file, prepared_bytes: 0, synced_bytes: 0, target_bytes });
            }
            Err(e) => {
                tracing::warn!(log = self.id, error = %e, "cannot create a spare segment; rolls go on into fresh space");
                self.spare.retry_at_ns = now + SPARE_RETRY_NS;
            }
        }
    }

    /// The completion of a spare op (token slot [`SPARE_SLOT`]).
    pub(super) fn on_spare_completion(&mut self, kind: OpKind, result: std::result::Result<u32, i32>, buf: Option<AlignedBuf>) {
        self.spare.op_in_flight = false;
        let expected = buf.as_ref().map_or(0, |b| b.len());
        if let Some(buf) = buf {
            self.spare.zeros = Some(buf);
        }
        let Some(spare) = self.spare.spare.as_mut() else { return };
        match (kind, result) {
            (OpKind::Write, Ok(n)) if n as usize == expected => spare.prepared_bytes += n as u64,
            (OpKind::Fsync, Ok(_)) => spare.synced_bytes = spare.synced_bytes.max(self.spare.sync_target_bytes),
            (OpKind::Write, Err(errno)) if classify_errno(errno) == Errno::NoSpace => {
                // The spare stays as prepared so far; what is written serves.
                tracing::warn!(log = self.id, prepared_bytes = spare.prepared_bytes, "disk full: the spare segment stays partly prepared");
                spare.target_bytes = spare.prepared_bytes;
            }
            (_, result) => {
                // Nothing acknowledged is at stake: stop preparing, keep the log.
                tracing::warn!(log = self.id, ?kind, ?result, "preparing the spare segment failed; no more spares this run");
                spare.target_bytes = spare.prepared_bytes;
                spare.synced_bytes = spare.synced_bytes.min(spare.prepared_bytes);
                self.spare.prep_off = true;
            }
        }
    }

    /// True when a spare op is in flight (the log is not idle for a stop).
    pub(super) fn spare_op_in_flight(&self) -> bool {
        self.spare.op_in_flight
    }
}
