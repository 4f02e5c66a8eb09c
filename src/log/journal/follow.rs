//! A journal that follows a log another process writes (`strom serve
//! --read-only`): it never stages, writes or syncs; its positions, epoch,
//! segments and start move only when the writer's durable mark says so
//! (`core/follow.rs` scans what the mark adds before moving them).
use super::*;

impl<R> Journal<R> {
    /// The writer made the log durable up to `end` (block-aligned, past
    /// what was followed so far): every position of a follower is this one.
    pub fn follow_to(&mut self, end: u64) {
        assert!(self.staging.is_none() && self.writing.is_empty(), "a followed log is never written");
        debug_assert_eq!(end % crate::buf::BLOCK_BYTES as u64, 0, "the writer's durable end is a commit's end");
        let end = end.max(self.durable_pos);
        (self.planned_pos, self.written_pos, self.durable_pos, self.visible_pos) = (end, end, end, end);
    }

    /// The writer's epoch and where it began writing (a restart of the
    /// writer takes a newer one): reads check frames against it.
    pub fn follow_epoch(&mut self, epoch: u32, start_pos: u64) {
        self.epoch = epoch;
        self.epoch_start_pos = start_pos;
    }

    /// A segment the writer rolled to (past every one known).
    pub fn follow_segment(&mut self, seg: Segment) {
        debug_assert!(self.segments.back().is_none_or(|s| s.start_pos < seg.start_pos), "segments in position order");
        self.segments.push_back(seg);
    }

    /// The writer's retention moved its start to `start`: forgets (and
    /// closes) the segments that end at or before it, oldest first, except
    /// one a read still uses (its file stays open until the read is done;
    /// the next call takes it). Returns the log's start after.
    pub fn follow_start<I: Io>(&mut self, io: &mut I, start: u64) -> u64 {
        while self.segments.len() > 1 && self.segments[1].start_pos <= start && self.segments[0].reads_in_flight == 0 {
            let seg = self.segments.pop_front().expect("oldest");
            io.close(seg.file);
            self.log_start = self.segments[0].start_pos;
        }
        self.log_start
    }

    /// Keeps `bytes`, the log from `start_pos` on (verified by the scan
    /// that just followed them: whole commits), in the tail cache, so that
    /// subscribers at the end read them from memory, as on the writer; the
    /// oldest cached bytes make room.
    pub fn follow_cache(&mut self, start_pos: u64, bytes: &[u8]) {
        // Whole or not at all: a read takes a frame from one cached buffer,
        // so bytes cut across two could cut a frame. A scan of more than a
        // buffer (a follower catching up) is left to disk reads.
        if bytes.is_empty()
            || bytes.len() > self.limits.write_buf_bytes
            || self.cache.back().is_some_and(|(s, b)| s + b.len() as u64 > start_pos)
        {
            return;
        }
        let Some(mut buf) = self.take_buffer() else { return };
        buf.extend_from_slice(bytes);
        self.cache.push_back((start_pos, buf));
    }

    /// The start of the last segment known (None: none yet).
    pub fn last_segment_start(&self) -> Option<u64> {
        self.segments.back().map(|s| s.start_pos)
    }
}
