//! The spare segment: space already written once, kept to become the next
//! segment, so that commits into it overwrite allocated, written blocks and
//! each commit's fdatasync is a pure flush (no allocation or size change to
//! persist; DURABILITY.md, "Pre-written segments", has the measurements).
//!
//! Where a spare comes from: retention *recycles* the oldest segment it
//! drops (renames it to [`SPARE_NAME`] instead of removing it) when the log
//! has no spare. A roll renames the spare to the new segment's name and
//! syncs the directory, as creating one did; without a spare it creates a
//! fresh file as before. Nothing here writes data or allocates space, so a
//! full disk never stops a spare from being made or used.
//!
//! What the bytes of a recycled file are, past the log's end: frames of the
//! segment it used to be, which name other positions (every frame binds its
//! own position into its checksum), so no scan takes them for the log's.
use super::*;
use crate::log::segment::SPARE_NAME;

/// A log's spare segment file, open for writing.
#[derive(Debug)]
pub struct Spare {
    pub path: PathBuf,
    pub file: FileId,
}

impl<R> Journal<R> {
    /// Takes up a spare left in the log's directory by an earlier run (the
    /// open runs this after recovery; its content is never part of the log).
    pub fn adopt_spare<I: Io>(&mut self, io: &mut I) -> Result<()> {
        if self.spare.is_some() {
            return Ok(());
        }
        let path = self.dir.join(SPARE_NAME);
        if !io.list_dir(&self.dir)?.iter().any(|n| n == SPARE_NAME) {
            return Ok(());
        }
        let file = io.open(&path, true)?;
        self.spare = Some(Spare { path, file });
        Ok(())
    }

    /// True when the log holds a spare segment.
    pub fn has_spare(&self) -> bool {
        self.spare.is_some()
    }

    /// Turns segment `seg` (dropped by retention, no read in flight) into
    /// the spare. Returns false, changing nothing, when a spare exists
    /// already (the caller removes the segment instead).
    pub(super) fn recycle<I: Io>(&mut self, io: &mut I, seg: &Segment) -> Result<bool> {
        if self.spare.is_some() {
            return Ok(false);
        }
        let path = self.dir.join(SPARE_NAME);
        io.rename(&seg.path, &path)?;
        self.spare = Some(Spare { path, file: seg.file });
        self.metrics.segments_recycled += 1;
        Ok(true)
    }

    /// The roll's use of the spare: renames it to `path` and returns its file,
    /// or None (the caller creates a fresh file) when there is no spare or the
    /// rename failed (the spare is then given up: closed and forgotten; a
    /// file left under the spare name is taken up again at the next open).
    pub(super) fn take_spare_as<I: Io>(&mut self, io: &mut I, path: &Path) -> Option<FileId> {
        let spare = self.spare.take()?;
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
}
