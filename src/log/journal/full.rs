//! A full disk: commits that found no space are written again in place
//! (a later, smaller write may fit where a larger did not), or refused and
//! the log rewound to where its stored data ends; see DURABILITY.md.
use super::*;

impl<R> Journal<R> {
    /// At a stop: a log still writing full commits again in place (the
    /// disk is still full) gives up and fails, so the stop can finish; the
    /// appends it held are refused with `LogFailed` (indeterminate: a later
    /// commit of theirs landed), and the next open judges the tail.
    pub fn stop_retrying_in_place(&mut self) {
        if self.retry_in_place && self.writes_in_flight == 0 {
            let cause = "stopped while commits that found the disk full waited to be written again".to_string();
            let err = StromError::LogFailed { log: self.id, cause };
            tracing::error!(log = self.id, %err, "log stops accepting writes");
            self.fail(err);
        }
    }

    /// Time until full commits are written again in place, if they wait.
    pub fn retry_due_in_ns(&self, now_ns: u64) -> Option<u64> {
        (self.retry_in_place && self.writes_in_flight == 0).then(|| self.retry_after_ns.saturating_sub(now_ns))
    }

    /// Submits again, unchanged and at their own positions, the commits whose
    /// writes found the disk full (retry in place).
    pub(super) fn retry_unwritten<I: Io>(&mut self, io: &mut I) {
        let starts: Vec<(FileId, u64)> = self.segments.iter().map(|s| (s.file, s.start_pos)).collect();
        for c in self.writing.iter_mut().filter(|c| !c.written && !c.write_in_flight) {
            let seg_start = starts.iter().rev().find(|(f, _)| *f == c.file).expect("commit's segment").1;
            let buf = c.buf.take().expect("an unwritten commit keeps its buffer");
            let fixed = buf.fixed_index();
            match io.push(Op::Write { file: c.file, pos: c.start_pos - seg_start, buf }, Token::new(OpKind::Write, self.id, c.seq).pack()) {
                Ok(()) => {
                    self.lent.extend(fixed);
                    self.writes_in_flight += 1;
                    c.write_in_flight = true;
                }
                Err(Op::Write { buf, .. }) => {
                    c.buf = Some(buf);
                    break;
                }
                Err(_) => unreachable!("push returns the op it was given"),
            }
        }
    }

    /// After a write found the disk full: once no write is in flight, refuse
    /// every append from the full commit on with `DiskFull` and continue the
    /// log at that commit's start, as if those commits had never been made.
    ///
    /// That is safe because nothing from there on stays in the log: a write
    /// that fails with ENOSPC wrote nothing (ext4 takes back the blocks of
    /// a failed extending direct write), and none of the later commits was
    /// acknowledged (commits retire in position order). A later commit's
    /// write may have completed in a segment rolled after the full one (a
    /// new file whose first blocks still fitted): that segment is removed
    /// whole. The next write starts at the same block-aligned position, so
    /// no acknowledged byte is rewritten.
    ///
    /// If a later commit's write completed in the full commit's own segment
    /// (a smaller write fitted where the full one did not), its frames lie
    /// past a hole, and new frames written from the hole could run into
    /// them. Then nothing is refused or rewound: the unwritten commits are
    /// written again, unchanged, at their own positions, every
    /// `FULL_RETRY_NS`, until they land (retry in place; their appends wait,
    /// new appends are refused with `DiskFull`).
    pub(super) fn rewind_if_settled(&mut self) {
        let Some(at) = self.full_from else { return };
        if self.writes_in_flight > 0 || self.failed.is_some() || self.retry_in_place {
            return;
        }
        let segment_end = self.segments.iter().map(|s| s.start_pos).find(|&s| s > at).unwrap_or(u64::MAX);
        if self.writing.iter().any(|c| c.start_pos >= at && c.start_pos < segment_end && c.written) {
            tracing::warn!(log = self.id, pos = at, "disk full, and a later write landed past the full one: writing the full ones again");
            self.retry_in_place = true;
            self.metrics.disk_full_retries += 1;
            return;
        }
        self.full_from = None;
        let err = StromError::DiskFull { log: self.id };
        let keep = self.writing.iter().take_while(|c| c.start_pos < at).count();
        let dropped: Vec<Commit<R>> = self.writing.drain(keep..).chain(self.sealed.drain(..)).chain(self.staging.take()).collect();
        for mut c in dropped {
            debug_assert!(!c.write_in_flight);
            self.refused.extend(c.acks.drain(..).map(|a| (a, err.clone())));
            if let Some(b) = c.buf.take() {
                self.free.push(b);
            }
        }
        self.planned_pos = at;
        // Segments rolled past `at` hold nothing. They leave the list now and
        // their files go before anything is staged or written again
        // ([`Journal::drop_orphans`]), or the next roll could not create them.
        while self.segments.len() > 1 && self.segments.back().is_some_and(|s| s.start_pos > at) {
            let seg = self.segments.pop_back().expect("segment");
            self.unsynced_files.retain(|&f| f != seg.file);
            self.orphans.push(seg);
        }
        self.rewound_to = Some(self.rewound_to.map_or(at, |r| r.min(at)));
        self.metrics.disk_full_rewinds += 1;
        tracing::warn!(log = self.id, pos = at, "disk full: unwritten appends refused, the log continues at pos");
    }

    /// The lowest position the log rewound to after a full disk since the
    /// last call: the owner must drop what its partitions staged from there
    /// (offsets, index entries), as the refused appends carry no data.
    pub fn take_rewind(&mut self) -> Option<u64> {
        self.rewound_to.take()
    }

    /// Removes the segments a rewind left behind (and syncs the directory)
    /// once no fdatasync is in flight (one may name their file). A removal
    /// that fails makes the log fail.
    pub(super) fn drop_orphans<I: Io>(&mut self, io: &mut I) {
        if self.orphans.is_empty() || self.fsyncs_in_flight > 0 {
            return;
        }
        for seg in std::mem::take(&mut self.orphans) {
            io.close(seg.file);
            if let Err(e) = io.remove(&seg.path) {
                return self.fail(e);
            }
        }
        if let Err(e) = io.sync_dir(&self.dir) {
            self.fail(e);
        }
    }
}
