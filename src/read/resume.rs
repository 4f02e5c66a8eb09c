//! Where each partition's last dense fetch stopped.
//!
//! A fetch that follows the runs ([`crate::partition::runs`]) finds the run
//! holding its offset, but not the frame: without a hint it would read the
//! run from its start and skip the batches before its offset, and a
//! catch-up consumer, whose every fetch starts where the last one ended,
//! would read most of each run twice. A hint is only a guess: it is used
//! when it names the asked offset and lies inside the run holding it (all
//! of whose frames are the partition's, contiguous), and the frame found
//! there is still checked to start at that offset.
use std::collections::HashMap;

use crate::partition::index::IndexEntry;
use crate::partition::{Pid, Run};

/// Hints kept at most (24 bytes each and the map's overhead, about 2 MiB);
/// past it they are all dropped and built again by the next fetches.
pub(crate) const RESUME_HINTS_MAX: usize = 64 << 10;

#[derive(Debug, Default)]
pub(crate) struct ResumeHints {
    /// Partition -> (the offset a fetch stopped before, the log position of its batch).
    at: HashMap<Pid, (u64, u64)>,
}

impl ResumeHints {
    /// Notes that a fetch of `pid` stopped before `offset`, at `pos`.
    pub fn note(&mut self, pid: Pid, offset: u64, pos: u64) {
        if self.at.len() >= RESUME_HINTS_MAX && !self.at.contains_key(&pid) {
            self.at.clear();
        }
        self.at.insert(pid, (offset, pos));
    }

    /// Where a fetch of `offset` in run `r` (the run holding it) starts:
    /// the hint when it names this offset inside the run, else the run's start.
    pub fn start_in(&self, pid: Pid, offset: u64, r: &Run) -> IndexEntry {
        match self.at.get(&pid) {
            Some(&(o, pos)) if o == offset && pos >= r.pos && pos < r.end_pos() => IndexEntry { offset, pos, max_ts_ms: i64::MIN },
            _ => IndexEntry { offset: r.first_offset, pos: r.pos, max_ts_ms: i64::MIN },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Proves: a hint is used only for its own offset and inside the run
    // holding it; otherwise a fetch starts at the run's start; the bound
    // drops every hint rather than growing.
    #[test]
    fn hints_are_used_only_where_they_hold() {
        let run = Run { first_offset: 10, end_offset: 20, pos: 1000, bytes: 500 };
        let mut h = ResumeHints::default();
        assert_eq!(h.start_in(1, 15, &run).pos, 1000);
        h.note(1, 15, 1250);
        assert_eq!((h.start_in(1, 15, &run).pos, h.start_in(1, 15, &run).offset), (1250, 15));
        assert_eq!(h.start_in(1, 16, &run).pos, 1000, "another offset");
        h.note(1, 20, 1500);
        assert_eq!(h.start_in(1, 20, &Run { first_offset: 20, end_offset: 30, pos: 4000, bytes: 100 }).pos, 4000, "outside the run");
        for pid in 0..RESUME_HINTS_MAX as u32 + 1 {
            h.note(pid + 2, 0, 0);
        }
        assert!(h.at.len() <= RESUME_HINTS_MAX);
    }
}
