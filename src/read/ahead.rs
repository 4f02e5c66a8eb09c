//! Read-ahead windows: what a catch-up fetch's cursor goes on reading after
//! its answer, for the partition's next fetch.
//!
//! A consumer catching up sends its next Fetch only once the last answer
//! reached it: without a window the disk idles from the end of one fetch's
//! reads to the start of the next one's. When a dense fetch (one following
//! its partition's runs, [`super::cursor`]) read from disk and stopped
//! because of its size, behind the partition's visible end, its cursor is
//! not dropped: it becomes a window (mode [`ReadMode::Ahead`]) that keeps
//! the chunks it read past where it stopped and reads the runs ahead, up to
//! twice the fetch's bytes (at least one batch, at most
//! [`WINDOW_BYTES_MAX`]), keyed by the partition and the offset its answer
//! stopped before. The next fetch of that partition at that offset takes
//! the cursor over, chunks and reads in flight included (their tokens name
//! the cursor's slot), so it starts with its bytes read or being read; when
//! it too stops by its size, it leaves the next window.
//!
//! Why a window's bytes are still right when a fetch takes it over: a chunk
//! keeps no byte at or past the limit its read was pushed under (the log's
//! visible position then: `chunks::Chunk::valid_end`), and a log position
//! below the visible position never holds other bytes later (positions
//! only grow; a rewind drops only what was staged, never retired). A fetch
//! takes a window over only after the checks every fetch passes (its
//! offset is in range: retention did not delete it) and after finding its
//! start through the partition's runs as they are now; the window must
//! cover that position, or start exactly there. So a window under which
//! retention dropped segments is never served (the fetch fails its range
//! check, or finds its start elsewhere and drops the window), and a
//! deleted and recreated partition's new runs lie past it in the log.
//!
//! Two readers of one partition at different offsets each leave their own
//! window (at most [`WINDOWS_PER_PARTITION_MAX`]; a third evicts the older):
//! a fetch takes only the window at its own offset and leaves the other.
//!
//! Bounds, per core: at most [`WINDOWS_MAX`] windows (the oldest is evicted
//! for a new one); a window takes a read buffer only while more than
//! `1/`[`FREE_BUFS_SHARE_DIVISOR`] of the pool stays free and no read waits
//! for one, and a read that finds no buffer free (or waits for one)
//! reclaims the oldest window's; a window not taken within
//! [`WINDOW_IDLE_NS`] is dropped (each tick looks), and every window is
//! dropped when the core stops. What a dropped window read counts in
//! `strom_read_ahead_discarded_bytes_total`. A fetch that took a window
//! over reads again from disk any of its bytes that fail a check
//! (`Chunk::inherited`): they were fetched before it asked, maybe damaged
//! on their way in by a fault that has since passed.
use super::chunks::{self, Chunks};
use super::cursor::{Cursor, ReadMode};
use super::view::LogView;
use super::{ReadCx, ReadPath};
use crate::buf::align_up;
use crate::io::Io;
use crate::log::frame::{self, HEADER_BYTES};
use crate::partition::Pid;

/// Windows one core keeps at most (each holds at most
/// [`WINDOW_BYTES_MAX`] and a buffer, within the read buffer pool).
pub(crate) const WINDOWS_MAX: usize = 16;

/// Windows of one partition at most: one per reader for two readers at
/// different offsets.
pub(crate) const WINDOWS_PER_PARTITION_MAX: usize = 2;

/// Log bytes a window reads ahead of where its fetch stopped, at most: a
/// few 1 MiB reads, enough to cover one fetch's round trip at the disk's
/// sequential rate, and a small share of a core's read buffers.
pub(crate) const WINDOW_BYTES_MAX: usize = 4 << 20;

/// A window not taken over within this is dropped (200 ms): a consumer
/// catching up asks again within a round trip; one that stopped reading
/// must not hold the core's read buffers.
pub(crate) const WINDOW_IDLE_NS: u64 = 200_000_000;

/// Windows leave at least this share (1/4) of the read buffers free for
/// fresh reads (and at least one).
pub(crate) const FREE_BUFS_SHARE_DIVISOR: usize = 4;

const _: () = assert!(WINDOWS_PER_PARTITION_MAX >= 1 && WINDOWS_PER_PARTITION_MAX <= WINDOWS_MAX);

#[derive(Debug)]
struct Window {
    pid: Pid,
    /// The offset the fetch that left it stopped before: the next fetch's.
    offset: u64,
    /// The cursor it is.
    slot: usize,
    opened_ns: u64,
    /// A frame's start at or after the cursor, from which the window's
    /// next chunk is planned: the cursor's position before its first
    /// chunk, then where the last ended (it read whole runs) or started...
    frame_pos: u64,
    /// ...in which case the frames its bytes hold whole are walked first.
    walk: bool,
}

/// A core's open windows, oldest first.
#[derive(Debug, Default)]
pub(crate) struct Windows {
    open: Vec<Window>,
    /// The core stops: no window is opened.
    closed: bool,
}

impl Windows {
    pub fn len(&self) -> usize {
        self.open.len()
    }

    /// Adds a window, after taking out what it evicts (returned): the
    /// partition's oldest past its share, the core's oldest past the bound.
    fn open(&mut self, (pid, offset): (Pid, u64), slot: usize, frame_pos: u64, now_ns: u64) -> Vec<usize> {
        let mut evicted = Vec::new();
        if self.open.iter().filter(|w| w.pid == pid).count() >= WINDOWS_PER_PARTITION_MAX {
            let i = self.open.iter().position(|w| w.pid == pid).expect("a window of the partition");
            evicted.push(self.open.remove(i).slot);
        }
        if self.open.len() >= WINDOWS_MAX {
            evicted.push(self.open.remove(0).slot);
        }
        self.open.push(Window { pid, offset, slot, opened_ns: now_ns, frame_pos, walk: true });
        evicted
    }

    fn next_frame(&self, slot: usize) -> Option<(u64, bool)> {
        self.open.iter().find(|w| w.slot == slot).map(|w| (w.frame_pos, w.walk))
    }

    fn set_next_frame(&mut self, slot: usize, (frame_pos, walk): (u64, bool)) {
        if let Some(w) = self.open.iter_mut().find(|w| w.slot == slot) {
            (w.frame_pos, w.walk) = (frame_pos, walk);
        }
    }

    fn has_key(&self, pid: Pid, offset: u64) -> bool {
        self.open.iter().any(|w| w.pid == pid && w.offset == offset)
    }

    fn has(&self, pid: Pid) -> bool {
        self.open.iter().any(|w| w.pid == pid)
    }

    /// Takes the window of `pid` at `offset` out, if there is one.
    fn take(&mut self, pid: Pid, offset: u64) -> Option<usize> {
        let i = self.open.iter().position(|w| w.pid == pid && w.offset == offset)?;
        Some(self.open.remove(i).slot)
    }

    fn forget(&mut self, slot: usize) {
        self.open.retain(|w| w.slot != slot);
    }

    /// Takes out the windows not taken over since `now_ns - WINDOW_IDLE_NS`
    /// (all of them when `all`).
    fn take_idle(&mut self, now_ns: u64, all: bool) -> Vec<usize> {
        let mut idle = Vec::new();
        self.open.retain(|w| {
            let drop = all || now_ns.saturating_sub(w.opened_ns) >= WINDOW_IDLE_NS;
            if drop {
                idle.push(w.slot);
            }
            !drop
        });
        idle
    }

    fn oldest(&self) -> Option<usize> {
        self.open.first().map(|w| w.slot)
    }

    fn slots(&self) -> impl Iterator<Item = (Pid, usize)> + '_ {
        self.open.iter().map(|w| (w.pid, w.slot))
    }
}

impl ReadPath {
    /// Whether the fetch ending in `slot` leaves a window: it follows the
    /// runs, read from disk, stopped by its size behind the partition's
    /// visible end, and runs of the partition lie ahead outside the tail cache.
    pub(super) fn leaves_window<I: Io, V: LogView>(&self, cx: &ReadCx<'_, I, V>, slot: usize) -> bool {
        let c = &self.cursors[slot];
        if self.windows.closed || !c.dense || c.served_disk_bytes == 0 || c.pos >= c.limit || !matches!(c.mode, ReadMode::Fetch { .. }) {
            return false;
        }
        let Some(p) = cx.partitions.get(&c.pid) else { return false };
        // Another reader stopped at the same offset: one window serves
        // both (the second follows the first's reads, `read::share`).
        !self.windows.has_key(c.pid, c.next_offset)
            && c.next_offset < p.visible_end
            && c.runs(p).at_or_after(c.pos).is_some()
            && cx.logs[&c.log].cached_at(c.pos).is_none()
    }

    /// Turns the finished fetch in `slot` (its mode and answer taken) into
    /// a window for the fetch of `pid` at `offset`, and starts its reads.
    pub(super) fn open_window<I: Io, V: LogView>(&mut self, cx: &mut ReadCx<'_, I, V>, slot: usize, offset: u64, served_bytes: usize) {
        let (pid, frame_pos) = (self.cursors[slot].pid, self.cursors[slot].pos);
        for evicted in self.windows.open((pid, offset), slot, frame_pos, cx.io.now_ns()) {
            self.drop_window(evicted);
        }
        let c = &mut self.cursors[slot];
        c.mode = ReadMode::Ahead;
        c.headroom_bytes = 0;
        c.budget_bytes = (2 * served_bytes).clamp(self.limits.batch_bytes_max, WINDOW_BYTES_MAX);
        self.metrics.ahead_windows += 1;
        self.fill_window(cx, slot);
    }

    /// Reads the window's runs ahead, within its bytes, while buffers are
    /// free beyond the share kept for fresh reads and no read waits for
    /// one. A chunk that read whole runs lets the next start at once, at
    /// the next run; one that cut a run lets the next start only once it
    /// completed, at the first frame it does not hold whole (found by
    /// walking its frame headers), so a fetch never waits for a frame cut
    /// between two chunks.
    pub(super) fn fill_window<I: Io, V: LogView>(&mut self, cx: &mut ReadCx<'_, I, V>, slot: usize) {
        let free_min = (self.read_bufs_total / FREE_BUFS_SHARE_DIVISOR).max(1);
        loop {
            // Still a window: what ran since it was asked to fill (the
            // followers of its chunk, a reclaim) may have dropped it.
            let Some(c) = self.cursors.get(slot).filter(|c| matches!(c.mode, ReadMode::Ahead) && !c.spent) else { return };
            if c.chunks.in_flight() >= chunks::READS_AHEAD_MAX || self.read_bufs.len() <= free_min || !self.waiters.is_empty() {
                return;
            }
            let Some(p) = cx.partitions.get(&c.pid) else { return };
            let Some((frame_pos, walk)) = self.windows.next_frame(slot) else { return };
            let from = if walk {
                match first_frame_not_held(&c.chunks, frame_pos, self.limits.batch_bytes_max as u32) {
                    Some(f) => f,
                    None => return,
                }
            } else {
                frame_pos
            };
            let planned = c.chunks.bytes_from(c.pos);
            let runs = c.runs(p);
            let Some(&r) = runs.at_or_after(from).and_then(|i| runs.get(i)) else { return };
            let at = r.pos.max(from);
            if at >= c.limit || planned >= c.budget_bytes as u64 {
                return;
            }
            let bound = |c: &Cursor, pos: u64, cap_bytes: usize, seg_end: Option<u64>| {
                (pos + cap_bytes as u64)
                    .min(seg_end.unwrap_or(u64::MAX))
                    .min(at + (c.budget_bytes as u64 - planned))
                    .min(align_up(c.limit))
                    .max(at + HEADER_BYTES as u64)
            };
            let Some((end, end_max)) = self.push_runs_read(cx, slot, at, bound) else { return };
            // Short of its bound, the read ended at a run's end: the next
            // frame of the partition starts the next run.
            let whole = end < end_max;
            self.windows.set_next_frame(slot, if whole { (end, false) } else { (at, true) });
            self.metrics.reads_ahead += 1;
        }
    }

    /// The window a dense fetch of `pid` at `offset`, starting at log
    /// position `start_pos` of log `log`, takes over: the one keyed there
    /// when it covers that position (or starts exactly there). One that
    /// does not is dropped.
    pub(super) fn take_window(&mut self, pid: Pid, offset: u64, log: u32, start_pos: u64) -> Option<usize> {
        if !self.windows.has(pid) {
            return None;
        }
        let Some(slot) = self.windows.take(pid, offset) else {
            self.metrics.ahead_misses += 1;
            return None;
        };
        let c = &self.cursors[slot];
        if c.log == log && (c.pos == start_pos || c.chunks.covering(start_pos).is_some()) {
            self.metrics.ahead_hits += 1;
            return Some(slot);
        }
        self.metrics.ahead_misses += 1;
        self.drop_window(slot);
        None
    }

    /// The fetch `fresh` takes over the window in `slot`: the window's
    /// chunks (those before the fetch's start given back), the fetch's all else.
    pub(super) fn adopt_window(&mut self, slot: usize, fresh: Cursor) {
        let window = std::mem::replace(&mut self.cursors[slot], fresh);
        let c = &mut self.cursors[slot];
        c.chunks = window.chunks;
        c.chunks.inherit_all();
        let before: Vec<_> = c.chunks.take_spent(c.pos, 0);
        self.metrics.ahead_discarded_bytes += before.iter().map(|b| b.len() as u64).sum::<u64>();
        self.read_bufs.extend(before);
    }

    /// Drops the window in `slot`: its buffers back to the pool (those in
    /// flight when their reads complete).
    pub(super) fn drop_window(&mut self, slot: usize) {
        self.windows.forget(slot);
        let c = &mut self.cursors[slot];
        debug_assert!(matches!(c.mode, ReadMode::Ahead), "slot {slot} is a window");
        self.metrics.ahead_discarded_bytes += c.chunks.bytes();
        c.mode = ReadMode::Spent;
        self.read_bufs.extend(c.chunks.take_done());
        if c.chunks.in_flight() == 0 {
            self.cursors.remove(slot);
        } else {
            c.spent = true;
        }
    }

    /// Drops the windows idle too long (all of them, and opens no more,
    /// when the core stops).
    pub(super) fn expire_windows(&mut self, now_ns: u64, stopping: bool) {
        self.windows.closed |= stopping;
        for slot in self.windows.take_idle(now_ns, stopping) {
            self.drop_window(slot);
        }
    }

    /// Drops the oldest windows until a read buffer is free, for a read
    /// that found none: whether one is (windows still reading give theirs
    /// back when their reads complete).
    pub(super) fn reclaim_windows(&mut self) -> bool {
        while self.read_bufs.is_empty() {
            let Some(slot) = self.windows.oldest() else { return false };
            self.drop_window(slot);
        }
        true
    }

    /// Bytes the open windows hold or are reading.
    pub(super) fn window_bytes(&self) -> u64 {
        self.windows.slots().map(|(_, s)| self.cursors[s].chunks.bytes()).sum()
    }

    /// Every window is a live window cursor; the bounds hold.
    pub(super) fn window_invariants(&self) {
        assert!(self.windows.len() <= WINDOWS_MAX, "{} windows over {WINDOWS_MAX}", self.windows.len());
        for (pid, slot) in self.windows.slots() {
            let c = self.cursors.get(slot).expect("a window's cursor");
            assert!(matches!(c.mode, ReadMode::Ahead) && !c.spent && c.pid == pid, "slot {slot} is not a window of {pid}");
            assert!(self.windows.slots().filter(|w| w.0 == pid).count() <= WINDOWS_PER_PARTITION_MAX);
        }
    }
}

/// The first frame from `pos` (a frame's start) that `chunks` do not hold
/// whole: its start, or where their bytes end; None while the chunk holding
/// it is being read. Frames of every partition are walked (only their
/// headers are read); a header that does not decode ends the walk there,
/// for the fetch to read and judge.
fn first_frame_not_held(chunks: &Chunks, mut pos: u64, payload_bytes_max: u32) -> Option<u64> {
    while let Some(k) = chunks.covering(pos) {
        let buf = k.buf.as_ref()?;
        let bytes = &buf.as_slice()[(pos - k.pos) as usize..];
        match frame::decode_header(bytes, pos, payload_bytes_max) {
            Ok(h) if bytes.len() as u64 >= h.frame_bytes() => pos = h.end_pos(),
            _ => return Some(pos),
        }
    }
    Some(pos)
}

#[cfg(test)]
mod tests {
    use super::*;

    // Proves: a partition keeps at most WINDOWS_PER_PARTITION_MAX windows
    // (a third evicts its oldest), the core at most WINDOWS_MAX (the oldest
    // goes), a window is taken only at its own offset, and idle ones go
    // after WINDOW_IDLE_NS (all of them at a stop).
    #[test]
    fn windows_evict_the_oldest_past_their_bounds() {
        let mut w = Windows::default();
        assert!(w.open((1, 10), 100, 0, 0).is_empty());
        assert!(w.open((1, 20), 101, 0, 1).is_empty());
        assert_eq!(w.open((1, 30), 102, 0, 2), vec![100], "the partition's oldest");
        assert_eq!(w.take(1, 10), None, "evicted");
        assert_eq!(w.take(1, 25), None, "another offset");
        assert_eq!(w.take(1, 20), Some(101));
        for i in 0..WINDOWS_MAX as u64 - 1 {
            assert!(w.open((2 + i as u32, 0), 200 + i as usize, 0, 10).is_empty());
        }
        assert_eq!(w.len(), WINDOWS_MAX);
        assert_eq!(w.open((99, 0), 999, 0, 20), vec![102], "the core's oldest");
        assert_eq!(w.take_idle(10 + WINDOW_IDLE_NS - 1, false), Vec::<usize>::new());
        assert_eq!(w.take_idle(10 + WINDOW_IDLE_NS, false).len(), WINDOWS_MAX - 1, "all but the newest");
        assert_eq!(w.take_idle(20, true), vec![999]);
        assert_eq!(w.len(), 0);
    }
}
