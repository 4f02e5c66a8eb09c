//! A failed write or fdatasync poisons its log: it stops acknowledging,
//! records where its trusted data ends, and the next open cuts it there
//! (the fsyncgate lesson: never retry the fsync).
use super::*;

impl<R> Journal<R> {
    /// Makes a `LogFailed` failure's trusted end durable, once. After a
    /// failed fdatasync the pages it covered are marked clean whether or not
    /// they reached the medium, so a restart after a process kill would find
    /// never-acknowledged commits intact in the page cache, accept them, and
    /// serve them until a power cut takes them back: the next open cuts
    /// there instead. (A kill before this runs, in the same tick, escapes it.)
    pub(super) fn record_failure<I: Io>(&mut self, io: &mut I) {
        if self.failure_recorded || !matches!(self.failed, Some(StromError::LogFailed { .. })) {
            return;
        }
        self.failure_recorded = true;
        let trusted_end = self.visible_pos.max(self.durable_pos);
        if let Err(e) = io.write_file_atomic(&self.dir.join(FAILED_FILE), &trusted_end.to_le_bytes()) {
            tracing::error!(log = self.id, %e, "cannot record where the failed log's trusted data ends");
        }
    }

    pub(super) fn fail_op(&mut self, op: IoOp, errno: i32, what: &str) {
        let path = self.segments.back().map(|s| s.path.clone()).unwrap_or_else(|| self.dir.clone());
        // Never DiskFull here, even for ENOSPC: written commits waiting for
        // their fsync are refused too, and they may be stored (DiskFull
        // promises nothing was). A write's ENOSPC goes to the rewind instead.
        let err = StromError::LogFailed { log: self.id, cause: format!("{what}: {}", StromError::Io { op, path, errno }) };
        tracing::error!(log = self.id, %err, "log stops accepting writes");
        self.fail(err);
    }

    /// Makes the failure sticky: every unacknowledged append is refused, and
    /// no later write or acknowledgement happens on this log.
    pub(super) fn fail(&mut self, err: StromError) {
        if self.failed.is_none() {
            self.failed = Some(err);
        }
        self.full_from = None;
        self.retry_in_place = false;
        self.reclaim_failed();
    }

    pub(super) fn reclaim_failed(&mut self) {
        let err = self.failed.clone().expect("failed");
        let drop_commit = |c: &mut Commit<R>, refused: &mut Vec<(PendingAck<R>, StromError)>, free: &mut Vec<AlignedBuf>| {
            refused.extend(c.acks.drain(..).map(|a| (a, err.clone())));
            if let Some(b) = c.buf.take() {
                free.push(b);
            }
        };
        if let Some(mut c) = self.staging.take() {
            drop_commit(&mut c, &mut self.refused, &mut self.free);
        }
        while let Some(mut c) = self.sealed.pop_front() {
            drop_commit(&mut c, &mut self.refused, &mut self.free);
        }
        for c in self.writing.iter_mut() {
            drop_commit(c, &mut self.refused, &mut self.free);
        }
        // Keep commits whose write is still in flight: its completion returns the buffer.
        self.writing.retain(|c| c.write_in_flight);
    }
}

/// Before recovering a log that failed (it left [`FAILED_FILE`]): writes a
/// block of zeros at the trusted end and fdatasyncs it, so the scan ends
/// there (as at a torn tail) and nothing past it, never acknowledged and
/// maybe only in the page cache, is taken into the log. Returns that position.
pub fn fence_failed_tail<I: Io>(io: &mut I, dir: &Path, completions: &mut Vec<crate::io::Completion>) -> Result<Option<u64>> {
    let path = dir.join(FAILED_FILE);
    let Some(bytes) = io.read_file(&path)? else { return Ok(None) };
    let Ok(raw) = <[u8; 8]>::try_from(bytes.as_slice()) else {
        return Err(StromError::Corrupt { path, pos: 0, reason: "not 8 bytes".into() });
    };
    let at = u64::from_le_bytes(raw);
    let Some(start) = io.list_dir(dir)?.iter().filter_map(|n| parse_segment_name(n)).filter(|&s| s <= at).max() else {
        return Ok(Some(at));
    };
    let seg_path = dir.join(segment_name(start));
    let file = io.open(&seg_path, true)?;
    let res = zero_block(io, file, at - start, completions).and_then(|()| io.sync_file(file));
    io.close(file);
    res.map_err(|e| match e {
        StromError::Io { op, errno, .. } => StromError::Io { op, path: seg_path, errno },
        e => e,
    })?;
    Ok(Some(at))
}

/// Writes one block of zeros at `pos` of `file` (if the file reaches past
/// it) and waits for it; other completions go to `completions`.
fn zero_block<I: Io>(io: &mut I, file: FileId, pos: u64, completions: &mut Vec<crate::io::Completion>) -> Result<()> {
    if io.file_len(file)? <= pos {
        return Ok(());
    }
    let mut zeros = AlignedBuf::new(crate::buf::BLOCK_BYTES);
    zeros.extend_from_slice(&[0; crate::buf::BLOCK_BYTES]);
    let fence = Token::new(OpKind::Fence, 0, 0).pack();
    if io.push(Op::Write { file, pos, buf: zeros }, fence).is_err() {
        return Err(StromError::Overloaded("no op slot for the fence write"));
    }
    loop {
        io.wait(1, None)?;
        let mut done = Vec::new();
        io.reap(&mut done);
        for c in done {
            if c.token != fence {
                completions.push(c);
                continue;
            }
            return match c.result {
                Ok(n) if n as usize == crate::buf::BLOCK_BYTES => Ok(()),
                Ok(_) => Err(StromError::Io { op: IoOp::Write, path: PathBuf::new(), errno: libc::EIO }),
                Err(errno) => Err(StromError::Io { op: IoOp::Write, path: PathBuf::new(), errno }),
            };
        }
    }
}

/// After the open that fenced a failed log wrote its new epoch: the mark
/// has done its work; removes it durably.
pub fn clear_failed_mark<I: Io>(io: &mut I, dir: &Path) -> Result<()> {
    io.remove(&dir.join(FAILED_FILE))?;
    io.sync_dir(dir)
}
