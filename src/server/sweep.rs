//! Timeouts, checked once a second: frames that take too long to arrive
//! (slowloris), idle connections, sends that make no progress, and readers
//! that stopped reading while their core is out of buffer memory or of
//! reply budget.
use super::codec::{Codec, ConnError, ConnErrorKind};
use super::conn::State;
use super::task::NetCore;
use crate::core::task::TaskCore;
use crate::io::Io;

/// How often timeouts are checked.
pub(super) const SWEEP_NS: u64 = 1_000_000_000;

impl<C: Codec> NetCore<C> {
    pub(super) fn sweep<I: Io>(&mut self, core: &mut TaskCore<'_, I>, now_ns: u64) {
        for (slot, tell) in self.late(core, now_ns) {
            self.metrics.timeouts += 1;
            if tell {
                self.conns[slot].rbuf.clear();
                let rbuf = self.take_rbuf(slot);
                self.pool.give(rbuf);
                self.conns[slot].partial_since_ns = None;
                let message = "a frame took longer than the header timeout to arrive".to_string();
                self.fail_conn(slot, ConnError { kind: ConnErrorKind::Timeout, message });
            } else {
                self.close_conn(core, slot);
            }
            self.mark(slot);
        }
        self.evict_stuck_readers(core, now_ns);
        self.evict_budget_holders(core, now_ns);
    }

    /// The connections past a timeout, each with whether to tell the peer
    /// (a frame too slow to arrive) or just close (idle, stuck sends).
    fn late<I: Io>(&mut self, core: &TaskCore<'_, I>, now_ns: u64) -> Vec<(usize, bool)> {
        let (header_ns, idle_ns) = (self.shared.live.header_timeout_ns(), self.shared.live.idle_timeout_ns());
        let (inflight_max, held_max) = (self.shared.live.inflight_per_conn_max(), self.shared.cfg.conn_buffered_bytes_max);
        let blocked = self.blocked(core);
        let mut late = Vec::new();
        for (slot, c) in self.conns.iter_mut() {
            // The header timeout is for a peer slow to send. While the server
            // itself does not read the connection (its limits, or the core's
            // push back), the frame's clock starts again: a pipelining client
            // whose whole frames wait unread is not a slowloris.
            if c.partial_since_ns.is_some() && (blocked || c.inflight >= inflight_max || c.request_bytes + c.reply_bytes >= held_max) {
                c.partial_since_ns = Some(now_ns);
            }
            let idle_for = now_ns.saturating_sub(c.last_active_ns);
            match c.state {
                State::Open if c.partial_since_ns.is_some_and(|t| now_ns.saturating_sub(t) > header_ns) => late.push((slot, true)),
                // Idle: nothing asked, nothing owed, nothing sent for a while
                // (a reader that stopped reading counts: its sends stall). A
                // subscriber waiting for a quiet partition is not idle.
                State::Open if c.inflight == 0 && !self.streams.has(slot) && idle_for > idle_ns => late.push((slot, false)),
                State::Open if c.sending && idle_for > idle_ns => late.push((slot, false)),
                State::Closing if idle_for > header_ns => late.push((slot, false)),
                _ => {}
            }
        }
        late
    }

    /// A core out of buffer memory reads no socket, its other clients'
    /// included, until bytes are released; a reader that stopped reading
    /// never releases its replies (until the idle timeout, minutes). So
    /// then the connections whose unsent replies made no progress for a
    /// header timeout are closed, the largest holders first, until the core
    /// is under its budget (like Redis's client output buffer limits).
    fn evict_stuck_readers<I: Io>(&mut self, core: &mut TaskCore<'_, I>, now_ns: u64) {
        let budget = self.shared.live.core_buffered_bytes_max();
        if self.held_bytes + self.rbuf_bytes < budget {
            return;
        }
        let header_ns = self.shared.live.header_timeout_ns();
        let mut stuck: Vec<(usize, usize)> = self
            .conns
            .iter()
            .filter(|(_, c)| c.state == State::Open && c.reply_bytes > 0 && now_ns.saturating_sub(c.last_active_ns) > header_ns)
            .map(|(slot, c)| (c.reply_bytes, slot))
            .collect();
        stuck.sort_unstable_by(|a, b| b.cmp(a));
        for (_, slot) in stuck {
            if self.held_bytes + self.rbuf_bytes < budget {
                break;
            }
            self.metrics.stuck_readers_closed += 1;
            self.close_conn(core, slot);
            self.mark(slot);
        }
    }
}
