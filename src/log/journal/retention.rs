//! Retention: whole old segments deleted once the log is over its size or
//! age limit, never the active one nor one a read still uses.
use super::*;

impl<R> Journal<R> {
    /// Deletes whole segments older than the retention limits (never the
    /// active one, nor one with reads in flight). Returns the new log start
    /// if it moved. Removals are made durable with one directory sync.
    /// Deletes the oldest whole segments while the log is over `bytes_max`
    /// or they are older than `age_max_ns`, never the active one, one being
    /// read, or one that ends after `checkpointed_pos` (the durable
    /// checkpoint must already have moved past it, or a restart would find
    /// partitions' data missing without a record of why). Returns the new
    /// log start if it moved, and whether a segment waits for a checkpoint.
    pub fn apply_retention<I: Io>(
        &mut self,
        io: &mut I,
        bytes_max: Option<u64>,
        age_max_ns: Option<u64>,
        checkpointed_pos: u64,
    ) -> Result<(Option<u64>, bool)> {
        let now = io.now_ns();
        let (mut moved, mut waits) = (false, false);
        while self.segments.len() > 1 {
            let oldest = &self.segments[0];
            let next_start = self.segments[1].start_pos;
            let too_big = bytes_max.is_some_and(|max| self.planned_pos - next_start >= max);
            let too_old = age_max_ns.is_some_and(|max| now.saturating_sub(oldest.last_write_ns) > max);
            if !(too_big || too_old) || oldest.reads_in_flight > 0 {
                break;
            }
            if next_start > checkpointed_pos {
                waits = true;
                break;
            }
            // Remove first: if that fails, the segment stays known and open.
            io.remove(&oldest.path)?;
            let seg = self.segments.pop_front().expect("oldest");
            io.close(seg.file);
            self.log_start = next_start;
            moved = true;
        }
        if moved {
            io.sync_dir(&self.dir)?;
        }
        Ok((moved.then_some(self.log_start), waits))
    }
}
