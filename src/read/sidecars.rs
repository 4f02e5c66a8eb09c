//! The read path's side of sidecars ([`crate::log::sidecar`]): it writes
//! the sidecar of each segment sealed (and durable) since this process
//! started, from its partitions' in-memory runs, and a fetch of an offset
//! before a partition's in-memory runs follows the runs a sealed segment's
//! sidecar lists instead of walking every frame from the sparse index.
//!
//! Both are synchronous file operations on the core's thread, between
//! ticks (`ReadPath::resume`), never inside a commit: a sidecar write is
//! one small file (a temporary, an fsync, a rename) once per sealed
//! segment; a load is one small read per segment, kept in a bounded LRU
//! ([`SidecarCache`]). Going through the ring instead would spare the
//! core those waits; it is left for when they show in a profile.
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use crate::io::Io;
use crate::log::sidecar::{self, SegmentRuns, SidecarCache};
use crate::partition::{Partition, Pid, Run};

use super::view::LogView;

/// Segments a fetch looks through for the one whose sidecar holds its
/// offset, at most, from the one its sparse index entry lies in (each may
/// cost a sidecar load): past them it walks.
const SEGMENTS_LOOKED_MAX: usize = 4;

/// Where a log's sidecars are written up to.
#[derive(Debug, Clone, Copy)]
struct Written {
    /// The start of the first segment whose sidecar is not written yet.
    next_start_pos: u64,
    /// The durable position last looked at, and whether stopping then
    /// (nothing to do until either changes).
    seen: (u64, bool),
}

#[derive(Debug, Default)]
pub(crate) struct Sidecars {
    cache: SidecarCache,
    written: HashMap<u32, Written>,
}

impl Sidecars {
    /// Writes the sidecar of every segment sealed since the last call
    /// whose end is durable; when `stopping`, also that of each log's
    /// active segment up to its durable end once nothing is in flight (so
    /// that a restart after a clean stop, which scans nothing, finds it).
    /// Segments sealed before this process first saw the log keep what an
    /// earlier process wrote (its runs there were complete; these are not).
    pub fn write_sealed<I: Io, V: LogView>(
        &mut self,
        io: &mut I,
        logs: &BTreeMap<u32, V>,
        partitions: &HashMap<Pid, Partition>,
        stopping: bool,
    ) {
        for (&id, log) in logs {
            let durable = log.durable_pos();
            let active_start = |log: &V| log.segment_at(durable).map_or(durable, |s| s.start_pos);
            let w = self.written.entry(id).or_insert_with(|| Written { next_start_pos: active_start(log), seen: (durable, stopping) });
            if w.seen == (durable, stopping) {
                continue;
            }
            w.seen = (durable, stopping);
            loop {
                let Some(seg) = log.segment_at(w.next_start_pos).filter(|s| s.start_pos == w.next_start_pos) else {
                    // Retention took it first: go on from the active segment.
                    w.next_start_pos = w.next_start_pos.max(active_start(log));
                    break;
                };
                let end = match seg.next_start_pos {
                    Some(end) if end <= durable => end,
                    None if stopping && log.written_pos() == durable && durable > seg.start_pos => durable,
                    None if stopping => {
                        // Writes in flight: look again at the next tick.
                        w.seen.1 = false;
                        break;
                    }
                    _ => break,
                };
                let path = log.path_at(seg.start_pos);
                let prior = self.cache.get(io, id, &path, seg.start_pos, end);
                let parts = sidecar::runs_for(partitions.iter(), id, (seg.start_pos, end), prior.as_deref());
                sidecar::write(io, &path, seg.start_pos, end, &parts);
                self.cache.forget(id, seg.start_pos);
                if seg.next_start_pos.is_none() {
                    // Written again, to its new durable end, if the stop goes on.
                    break;
                }
                w.next_start_pos = end;
            }
        }
    }

    /// The sidecar runs holding `offset` of `pid` in log `id`, and the run
    /// holding it, looking from the segment holding `from_pos` (its sparse
    /// index entry) on. None when a sidecar is missing, refused, or does
    /// not list the partition: the fetch walks frames.
    pub fn find<I: Io, V: LogView>(
        &mut self,
        io: &mut I,
        (id, log): (u32, &V),
        pid: Pid,
        offset: u64,
        from_pos: u64,
    ) -> Option<(Arc<SegmentRuns>, Run)> {
        let mut pos = from_pos;
        for _ in 0..SEGMENTS_LOOKED_MAX {
            let seg = log.segment_at(pos)?;
            // The active segment's sidecar (written at a stop) covers at most its durable part.
            let end = seg.next_start_pos.unwrap_or(log.durable_pos());
            let s = self.cache.get(io, id, &log.path_at(pos), seg.start_pos, end)?;
            let runs = s.runs_of(pid)?;
            let i = runs.partition_point(|r| r.first_offset <= offset);
            if let Some(&r) = i.checked_sub(1).map(|i| &runs[i]).filter(|r| offset < r.end_offset) {
                return Some((s, r));
            }
            // Its runs here start past the offset: not a place it is in.
            if runs.first().is_some_and(|r| r.first_offset > offset) {
                return None;
            }
            // Past the active segment there is nothing sealed.
            pos = seg.next_start_pos?;
        }
        None
    }
}
