//! The read path's long polls: Fetches parked at their partition's end
//! ([`super::poll::ParkedPolls`]) until new data, their deadline, or their
//! asker's release; and Fetches waiting for reply budget, released the same way.
use super::cursor::ReadMode;
use super::{ReadCx, ReadPath, empty, unknown};
use crate::error::StromError;
use crate::io::Io;
use crate::partition::Pid;
use crate::read::LogView;

impl ReadPath {
    /// Answers every poll parked on `pid` by reading now: its partition
    /// grew, or was removed (the read fails with `UnknownPartition`).
    pub fn unpark<I: Io, V: LogView>(&mut self, cx: &mut ReadCx<'_, I, V>, pid: Pid) {
        if !self.parked.has(pid) {
            return;
        }
        let now_ns = cx.io.now_ns();
        for w in self.parked.take(pid) {
            let offset = w.offset;
            self.start(cx, pid, w.into_read(now_ns), offset);
        }
    }

    /// Whether polls wait on `pid` (its growth must wake them).
    pub fn parked_on(&self, pid: Pid) -> bool {
        self.parked.has(pid)
    }

    /// Answers the polls whose wait is over (all of them when `stopping`)
    /// with what their partition holds now: nothing new.
    pub fn expire<I: Io, V: LogView>(&mut self, cx: &mut ReadCx<'_, I, V>, stopping: bool) {
        let now_ns = cx.io.now_ns();
        self.expire_windows(now_ns, stopping);
        for (pid, offset, mode) in self.budget_waits.take_released() {
            self.answer_nothing(cx, pid, offset, mode);
        }
        for (pid, w) in self.parked.take_due(now_ns, stopping) {
            let offset = w.offset;
            self.start(cx, pid, w.into_read(now_ns), offset);
        }
    }

    /// Answers a fetch with no batches: its partition's bounds now.
    fn answer_nothing<I: Io, V: LogView>(&mut self, cx: &mut ReadCx<'_, I, V>, pid: Pid, offset: u64, mode: ReadMode) {
        match cx.partitions.get(&pid) {
            Some(p) => {
                let bounds = (p.visible_end, p.start_offset);
                self.answer(pid, mode, Ok(()), empty(), offset, bounds)
            }
            None => self.answer(pid, mode, Err(unknown(pid)), empty(), 0, (0, 0)),
        }
    }

    /// Answers every poll now and parks no more: a stopping server must
    /// not wait out their waits before it can stop.
    pub fn close_parking<I: Io, V: LogView>(&mut self, cx: &mut ReadCx<'_, I, V>) {
        self.parked.close();
        self.expire(cx, true);
        // Nor wait for reply budget, which only the stopping server's
        // connections can return.
        for (pid, _, mode) in self.budget_waits.close() {
            self.answer(pid, mode, Err(StromError::ShuttingDown), empty(), 0, (0, 0));
        }
    }

    /// Nanoseconds until the earliest parked poll's deadline.
    pub fn due_in_ns(&self, now_ns: u64) -> Option<u64> {
        self.parked.due_in_ns(now_ns)
    }
}
