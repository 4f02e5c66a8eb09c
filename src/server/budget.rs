//! The reply budget of a core's connections, on the connection's side.
//!
//! Which memory it bounds: the Fetch replies that exist for one core's
//! connections, wherever they are built. A reply is built on its
//! partition's core but held, until its last byte is sent, in its
//! connection's core's send queue; consumers that never read pile replies
//! up there, so the bound that keeps a server alive whatever their number
//! is per connection core (`ServerConfig::reply_budget_bytes`), in a
//! [`ReplyBudget`] shared by every core (atomic).
//!
//! The read path takes a reply's largest size from it only when it starts
//! building the reply, with data to put in it (`read::sink`): a long poll
//! parked at the end of its partition holds nothing, so any number of idle
//! consumers wait at no cost. A fetch that finds no room waits on its
//! partition's core, in order, and is tried again when bytes return. Here,
//! when the reply arrives, the part of the room it did not use is given
//! back at once and the rest held until its last byte is sent or its
//! connection closes. So the budget's peak never exceeds it, except for a
//! single reply larger than the whole budget, let through alone.
//!
//! Replies without batches (errors, empty answers) take none: they are
//! small and bounded by the per-connection caps.
use super::codec::Codec;
use super::conn::State;
use super::task::NetCore;
use crate::core::task::TaskCore;
use crate::io::Io;

impl<C: Codec> NetCore<C> {
    /// Returns reply budget; if reads wait for it, this core polls once
    /// more, so that its own read path tries them.
    pub(super) fn release_budget(&mut self, bytes: usize) {
        if bytes == 0 {
            return;
        }
        self.budget.release(bytes);
        if self.budget.waiting() > 0 {
            self.budget_kick = true;
        }
    }

    /// A delivered Fetch reply, about to be queued: the room it took but
    /// did not use is returned, its real length held until its last byte
    /// is sent.
    pub(super) fn hold_reply_budget(&mut self, slot: usize, reserved_bytes: usize, frame_bytes: usize) {
        // The codec writes the reply in the headroom and batches the read
        // path counted, so it never outgrows its room; were it to, the
        // extra bytes are held all the same, so none goes uncounted.
        let held_bytes = if frame_bytes <= reserved_bytes {
            self.release_budget(reserved_bytes - frame_bytes);
            frame_bytes
        } else {
            debug_assert!(false, "a reply of {frame_bytes} bytes outgrew its room of {reserved_bytes}");
            reserved_bytes
        };
        let c = &mut self.conns[slot];
        c.budget_bytes += held_bytes;
        c.budgeted.push_back((c.queued_pos + frame_bytes as u64, held_bytes));
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

    /// A closing connection gives back its unsent replies' budget.
    pub(super) fn release_conn_budget(&mut self, slot: usize) {
        let c = &mut self.conns[slot];
        let bytes = std::mem::take(&mut c.budget_bytes);
        c.budgeted.clear();
        self.release_budget(bytes);
    }

    /// While fetches wait for this core's reply budget, connections holding
    /// it with replies that made no progress for a header timeout (readers
    /// that stopped reading) are closed, the largest holders first, until a
    /// largest reply fits: otherwise they would hold it until the idle
    /// timeout, minutes, and every consumer of the core would wait.
    pub(super) fn evict_budget_holders<I: Io>(&mut self, core: &mut TaskCore<'_, I>, now_ns: u64) {
        if self.budget.waiting() == 0 {
            return;
        }
        let need_bytes = self.shared.cfg.frame_bytes_max;
        let header_ns = self.shared.live.header_timeout_ns();
        let mut stuck: Vec<(usize, usize)> = self
            .conns
            .iter()
            .filter(|(_, c)| c.state == State::Open && c.budget_bytes > 0 && now_ns.saturating_sub(c.last_active_ns) > header_ns)
            .map(|(slot, c)| (c.budget_bytes, slot))
            .collect();
        stuck.sort_unstable_by(|a, b| b.cmp(a));
        for (_, slot) in stuck {
            if self.budget.used_bytes() + need_bytes <= self.budget.max_bytes() {
                break;
            }
            self.metrics.stuck_readers_closed += 1;
            self.close_conn(core, slot);
            self.mark(slot);
        }
    }
}
