//! The reply budget of a core: bytes of Fetch replies that may exist for
//! its connections at once, whatever the number of consumers.
//!
//! A Fetch reserves its largest possible reply (`NetCore::bound`) from the
//! budget of its connection's core before it is dispatched, so before any
//! reply buffer is taken or allocated, on this core or another. When the
//! reply arrives the reservation becomes the reply's real length, held
//! until its last byte is sent or the connection closes. A Fetch that finds
//! no room is not decoded into a command: its frame stays in the
//! connection's receive buffer and the connection waits in a queue (one
//! entry per connection, so bounded by `connections_max`), woken in order
//! as budget returns. So consumers that never read hold at most the budget
//! between them; the sweep closes those whose replies made no progress for
//! a header timeout while others wait (`evict_budget_holders`).
use std::collections::VecDeque;

use super::codec::Codec;
use super::conn::State;
use super::task::NetCore;
use crate::core::task::TaskCore;
use crate::io::Io;

/// A core's reply budget: what is taken, the most ever taken, and the
/// connections waiting for room, oldest first.
#[derive(Default)]
pub(super) struct ReplyBudget {
    pub used_bytes: usize,
    pub peak_bytes: usize,
    /// Waiting connections: slot, generation, and the bytes the Fetch at
    /// the head of their receive buffer asks for.
    pub waiters: VecDeque<(usize, u32, usize)>,
}

impl<C: Codec> NetCore<C> {
    /// Takes `bytes` of reply budget for the next Fetch of connection
    /// `slot`, or queues the connection and says no. Waiters are served in
    /// order: a connection behind others waits even if its Fetch would fit.
    /// A Fetch larger than the whole budget is let through alone.
    pub(super) fn try_reserve_reply(&mut self, slot: usize, bytes: usize) -> bool {
        let generation = self.conns[slot].generation;
        let budget_max = self.shared.cfg.reply_budget_bytes;
        let b = &mut self.budget;
        let first = b.waiters.front().is_some_and(|&(s, g, _)| s == slot && g == generation);
        let fits = b.used_bytes + bytes <= budget_max || b.used_bytes == 0;
        if fits && (b.waiters.is_empty() || first) {
            if first {
                b.waiters.pop_front();
                self.conns[slot].budget_waiting = false;
                // The next in line may fit in what is left.
                self.wake_budget_waiter();
            }
            self.take_budget(bytes);
            return true;
        }
        if self.conns[slot].budget_waiting {
            if let Some(w) = self.budget.waiters.iter_mut().find(|w| w.0 == slot && w.1 == generation) {
                w.2 = bytes;
            }
        } else {
            self.conns[slot].budget_waiting = true;
            self.budget.waiters.push_back((slot, generation, bytes));
            self.metrics.budget_waits += 1;
        }
        false
    }

    fn take_budget(&mut self, bytes: usize) {
        let b = &mut self.budget;
        b.used_bytes += bytes;
        b.peak_bytes = b.peak_bytes.max(b.used_bytes);
    }

    /// Returns reply budget, and wakes the first waiter to try again.
    pub(super) fn release_budget(&mut self, bytes: usize) {
        if bytes == 0 {
            return;
        }
        self.budget.used_bytes -= bytes;
        self.wake_budget_waiter();
    }

    fn wake_budget_waiter(&mut self) {
        if let Some(&(slot, generation, _)) = self.budget.waiters.front()
            && self.conns.get(slot).is_some_and(|c| c.generation == generation)
        {
            self.mark(slot);
        }
    }

    /// Wakes every waiter: at a stop, their Fetches are refused without budget.
    pub(super) fn wake_all_budget_waiters(&mut self) {
        for (slot, _, _) in std::mem::take(&mut self.budget.waiters) {
            if let Some(c) = self.conns.get_mut(slot) {
                c.budget_waiting = false;
            }
            self.mark(slot);
        }
    }

    /// A delivered Fetch reply, about to be queued: its reservation is
    /// returned and its real length held until its last byte is sent.
    pub(super) fn hold_reply_budget(&mut self, slot: usize, reserved_bytes: usize, frame_bytes: usize) {
        debug_assert!(frame_bytes <= reserved_bytes, "a reply of {frame_bytes} bytes outgrew its reservation of {reserved_bytes}");
        // Returned before the reply is taken, so the peak never counts both.
        self.release_budget(reserved_bytes);
        self.take_budget(frame_bytes);
        let c = &mut self.conns[slot];
        c.budget_bytes += frame_bytes;
        c.budgeted.push_back((c.queued_pos + frame_bytes as u64, frame_bytes));
    }

    /// Returns the budget of the connection's replies whose last byte is sent.
    pub(super) fn release_sent_budget(&mut self, slot: usize) {
        let c = &mut self.conns[slot];
        let mut done_bytes = 0;
        while let Some(&(end_pos, bytes)) = c.budgeted.front()
            && end_pos <= c.sent_pos
        {
            c.budgeted.pop_front();
            done_bytes += bytes;
        }
        c.budget_bytes -= done_bytes;
        self.release_budget(done_bytes);
    }

    /// A closing connection gives back its replies' budget and its place in line.
    pub(super) fn release_conn_budget(&mut self, slot: usize) {
        let c = &mut self.conns[slot];
        let (bytes, generation, waiting) = (c.budget_bytes, c.generation, c.budget_waiting);
        c.budget_bytes = 0;
        c.budgeted.clear();
        c.budget_waiting = false;
        if waiting {
            self.budget.waiters.retain(|&(s, g, _)| !(s == slot && g == generation));
            self.wake_budget_waiter();
        }
        self.release_budget(bytes);
    }

    /// While Fetches wait for reply budget, connections holding it with
    /// replies that made no progress for a header timeout (readers that
    /// stopped reading) are closed, the largest holders first, until the
    /// first waiter fits: otherwise they would hold it until the idle
    /// timeout, minutes, and every consumer of the core would wait.
    pub(super) fn evict_budget_holders<I: Io>(&mut self, core: &mut TaskCore<'_, I>, now_ns: u64) {
        let Some(&(_, _, need_bytes)) = self.budget.waiters.front() else { return };
        let budget_max = self.shared.cfg.reply_budget_bytes;
        let header_ns = self.shared.cfg.header_timeout.as_nanos() as u64;
        let mut stuck: Vec<(usize, usize)> = self
            .conns
            .iter()
            .filter(|(_, c)| c.state == State::Open && c.budget_bytes > 0 && now_ns.saturating_sub(c.last_active_ns) > header_ns)
            .map(|(slot, c)| (c.budget_bytes, slot))
            .collect();
        stuck.sort_unstable_by(|a, b| b.cmp(a));
        for (_, slot) in stuck {
            if self.budget.used_bytes + need_bytes <= budget_max {
                break;
            }
            self.metrics.stuck_readers_closed += 1;
            self.close_conn(core, slot);
            self.mark(slot);
        }
    }
}
