//! Retention: whole old segments deleted once none of their data is live
//! for any partition, never the active one, one a read still uses, or one
//! the durable checkpoint has not passed. The first one dropped while the
//! log has no spare is recycled as the spare instead (`spare.rs`).
use super::*;

/// Why the oldest dead segment left is not deleted yet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Held {
    /// An older segment still holds live data: segments go oldest first,
    /// so that the log stays one run of positions from its start.
    OlderLive,
    /// It is the segment being written.
    Active,
    /// A read uses its file.
    Read,
    /// The durable checkpoint has not passed its end yet (one is due).
    Checkpoint,
}

impl Held {
    pub fn as_str(self) -> &'static str {
        match self {
            Held::OlderLive => "an older segment holds live data",
            Held::Active => "it is the segment being written",
            Held::Read => "a read uses it",
            Held::Checkpoint => "waiting for a checkpoint",
        }
    }
}

/// What one retention pass did and left.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RetentionPass {
    /// The new log start, if segments were deleted.
    pub moved: Option<u64>,
    pub deleted_bytes: u64,
    /// Bytes of the segments left whose data is all dead, and why the
    /// oldest of them stays.
    pub reclaimable_bytes: u64,
    pub held: Option<Held>,
    /// Bytes of the segments left that hold live data.
    pub live_bytes: u64,
}

impl<R> Journal<R> {
    /// The start positions of the segments, oldest first.
    pub fn segment_starts(&self) -> Vec<u64> {
        self.segments.iter().map(|s| s.start_pos).collect()
    }

    /// Deletes the oldest segments while `live[i]` (for segment `i`, in the
    /// order of [`Journal::segment_starts`]) says none of their data is
    /// live; never the active one, one being read, or one that ends after
    /// `checkpointed_pos` (the durable checkpoint must already have moved
    /// past it, or a restart would find partitions' data missing without a
    /// record of why). Removals are made durable with one directory sync.
    pub fn apply_retention<I: Io>(&mut self, io: &mut I, live: &[bool], checkpointed_pos: u64) -> Result<RetentionPass> {
        assert_eq!(live.len(), self.segments.len(), "one liveness flag per segment");
        let mut pass = RetentionPass::default();
        let mut k = 0;
        while self.segments.len() > 1 && !live[k] {
            let oldest = &self.segments[0];
            let next_start = self.segments[1].start_pos;
            if oldest.reads_in_flight > 0 {
                pass.held = Some(Held::Read);
                break;
            }
            if next_start > checkpointed_pos {
                pass.held = Some(Held::Checkpoint);
                break;
            }
            // Recycle (the log's spare: its written space serves the next
            // roll) or remove it first: if that fails, the segment stays
            // known and open.
            let oldest = oldest.clone();
            let recycled = self.recycle(io, &oldest).unwrap_or_else(|e| {
                tracing::warn!(log = self.id, error = %e, "cannot recycle a segment as the spare; removing it");
                false
            });
            if !recycled {
                io.remove(&oldest.path)?;
                io.close(oldest.file);
            }
            crate::log::sidecar::remove(io, &oldest.path);
            let seg = self.segments.pop_front().expect("oldest");
            pass.deleted_bytes += next_start - seg.start_pos;
            tracing::info!(log = self.id, path = %seg.path.display(), bytes = next_start - seg.start_pos, recycled, "retention deleted a segment");
            self.log_start = next_start;
            pass.moved = Some(next_start);
            k += 1;
        }
        let end = self.planned_pos;
        for (i, seg) in self.segments.iter().enumerate() {
            let seg_end = self.segments.get(i + 1).map_or(end, |n| n.start_pos);
            let bytes = seg_end.saturating_sub(seg.start_pos);
            if live[k + i] { pass.live_bytes += bytes } else { pass.reclaimable_bytes += bytes }
        }
        if pass.held.is_none() && pass.reclaimable_bytes > 0 {
            // The loop stopped at a live segment, or at the last (active) one.
            pass.held = Some(if live[k] { Held::OlderLive } else { Held::Active });
        }
        if pass.moved.is_some() {
            io.sync_dir(&self.dir)?;
        }
        Ok(pass)
    }
}
