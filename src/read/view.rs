//! The narrow view of a log that reads need, and nothing else.
//!
//! A read walks frames from an index entry up to a limit, taking bytes from
//! the log's tail cache when it still holds them and from segment files
//! otherwise. That is all it asks of a log, so anything that can answer
//! these questions can be read by the same code: the live journal of this
//! process today; a read-only follower of another process's log, or an
//! archive file, later.
use std::path::PathBuf;

use crate::io::FileId;
use crate::log::frame::FrameHeader;
use crate::log::journal::Journal;

/// A segment file as a read sees it: where it is, and where its part of the log ends.
#[derive(Debug, Clone, Copy)]
pub struct SegmentRef {
    pub file: FileId,
    /// Log position of the file's first byte.
    pub start_pos: u64,
    /// Log position where the next segment starts (None for the last):
    /// bytes of the file past it are not part of the log (a segment rolled
    /// again after a recovery cut can hold older frames there).
    pub next_start_pos: Option<u64>,
}

pub trait LogView {
    /// Reads never look at or past this: what is retired (acknowledged).
    fn visible_pos(&self) -> u64;
    /// What an fdatasync covered: under `always`, nothing past it is served.
    fn durable_pos(&self) -> u64;
    /// What writes completed (the audit that serves past retirement uses it).
    fn written_pos(&self) -> u64;
    /// Bytes at `pos` still held in memory, up to the visible position.
    fn cached_at(&self, pos: u64) -> Option<&[u8]>;
    /// The segment file holding `pos`.
    fn segment_at(&self, pos: u64) -> Option<SegmentRef>;
    /// Where the segment file holding `pos` lives, for an error to name it
    /// (the log's directory when no segment holds it).
    fn path_at(&self, pos: u64) -> PathBuf;
    /// Counts a disk read of the segment holding `pos` in (`true`) or out:
    /// retention must not delete a segment file a read still uses.
    fn pin_segment(&mut self, pos: u64, pinned: bool);
    /// Whether a frame that verified at its position belongs to this log's
    /// history: an older epoch's frame where this run wrote (its write was
    /// lost or misdirected), or one from an epoch that never existed, is a
    /// leftover. The reason, when it is not.
    fn frame_is_current(&self, h: &FrameHeader) -> Result<(), String>;
}

impl<R> LogView for Journal<R> {
    fn visible_pos(&self) -> u64 {
        Journal::visible_pos(self)
    }

    fn durable_pos(&self) -> u64 {
        Journal::durable_pos(self)
    }

    fn written_pos(&self) -> u64 {
        Journal::written_pos(self)
    }

    fn cached_at(&self, pos: u64) -> Option<&[u8]> {
        Journal::cached_at(self, pos)
    }

    fn segment_at(&self, pos: u64) -> Option<SegmentRef> {
        let seg = self.segment_for(pos)?;
        let next_start_pos = self.segments().iter().map(|s| s.start_pos).find(|&s| s > pos);
        Some(SegmentRef { file: seg.file, start_pos: seg.start_pos, next_start_pos })
    }

    fn path_at(&self, pos: u64) -> PathBuf {
        self.segment_for(pos).map_or_else(|| Journal::dir(self).to_path_buf(), |s| s.path.clone())
    }

    fn pin_segment(&mut self, pos: u64, pinned: bool) {
        if let Some(seg) = self.segment_for_mut(pos) {
            if pinned {
                seg.reads_in_flight += 1;
            } else {
                seg.reads_in_flight -= 1;
            }
        }
    }

    fn frame_is_current(&self, h: &FrameHeader) -> Result<(), String> {
        if h.epoch > self.epoch() || (h.pos >= self.epoch_start_pos() && h.epoch != self.epoch()) {
            return Err(format!("frame of epoch {} where epoch {} wrote from {}", h.epoch, self.epoch(), self.epoch_start_pos()));
        }
        Ok(())
    }
}
