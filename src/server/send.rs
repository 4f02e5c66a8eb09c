//! Sending: replies arrive in the core's inbox (from this core or another),
//! are queued on their connection and go out by `SEND`, small ones
//! coalesced up to 256 KiB per send, a registered buffer by `SEND_ZC`
//! naming it (by plain `SEND` to a peer on this host: see `Op::SendFixed`);
//! a short send continues from where it stopped. Replies leave
//! in the order they were answered, which may not be request order
//! (clients match request ids); produce replies of one partition are in
//! offset order.
use std::sync::mpsc::TryRecvError;

use super::codec::Codec;
use super::conn::{Peer, State};
use super::reply::{Done, Outcome, ReplyTrace};
use super::task::NetCore;
use crate::broker::ReplyBuf;
use crate::core::task::TaskCore;
use crate::io::token::{OpKind, Token};
use crate::io::{Io, Op};
use crate::stats::StageTrace;

/// Replies queued on one connection are sent together up to this size.
const SEND_COALESCE_BYTES: usize = 256 << 10;

/// Drops a reply frame that is sent or will never be: a registered buffer
/// goes back to its core's pool (dropping it would shrink the pool for good).
pub(super) fn release_frame<I: Io>(core: &mut TaskCore<'_, I>, frame: ReplyBuf) {
    if let ReplyBuf::Registered(b) = frame {
        core.give_reply_buf(b);
    }
}

impl<C: Codec> NetCore<C> {
    /// Queues every reply in the inbox on its connection.
    pub(super) fn deliver_replies<I: Io>(&mut self, core: &mut TaskCore<'_, I>) {
        let mut now_ns = None;
        loop {
            let done = match self.inbox.try_recv() {
                Ok(d) => d,
                Err(TryRecvError::Empty) | Err(TryRecvError::Disconnected) => return,
            };
            let queued_ns = *now_ns.get_or_insert_with(|| core.clock_ns());
            self.deliver(core, done, queued_ns);
        }
    }

    fn deliver<I: Io>(&mut self, core: &mut TaskCore<'_, I>, mut done: Done, queued_ns: u64) {
        let slot = done.conn.slot as usize;
        match done.outcome {
            Some(o) => self.requests.bytes(o.protocol, o.api, true, done.frame.len()),
            None if done.stream.is_some() => {
                let protocol = self.conns.get(slot).filter(|c| c.generation == done.conn.generation).map_or(0, |c| c.codec);
                self.requests.bytes(protocol, crate::metrics::requests::API_SUBSCRIBE, true, done.frame.len());
            }
            None => {}
        }
        if let Some(note) = done.stream.take() {
            return self.on_stream_done(core, done, note);
        }
        if let Some(o) = done.outcome.filter(|o| o.error_code != 0) {
            self.count_error(slot, done.conn.generation, o);
        }
        let live = self.conns.get(slot).is_some_and(|c| c.generation == done.conn.generation && c.state != State::Closed);
        if !live || !self.codec_of(slot).replies_in_order() {
            return self.queue_reply(core, done, queued_ns);
        }
        // In request order: a reply before its turn waits for the earlier
        // ones; the one whose turn it is goes, then those it held up.
        let c = &mut self.conns[slot];
        if done.seq != c.send_seq {
            debug_assert!(done.seq > c.send_seq, "a reply whose turn has passed");
            c.early.insert(done.seq, done);
            return;
        }
        let mut next = Some(done);
        while let Some(done) = next {
            self.conns[slot].send_seq += 1;
            self.queue_reply(core, done, queued_ns);
            let c = &mut self.conns[slot];
            next = c.early.remove(&c.send_seq);
        }
    }

    /// Counts an error reply; logged at debug with the client's address (a
    /// typed error is the client's business, not an operator's).
    fn count_error(&mut self, slot: usize, generation: u32, o: Outcome) {
        self.requests.error(o.protocol, o.api, usize::from(o.error_code));
        if tracing::enabled!(tracing::Level::DEBUG) {
            let peer = self.conns.get(slot).filter(|c| c.generation == generation).map_or(Peer(None), |c| c.peer);
            let api = crate::metrics::requests::APIS[usize::from(o.api).min(crate::metrics::requests::APIS.len() - 1)];
            tracing::debug!(core = self.core_id, slot, %peer, api, code = o.error_code, "error reply");
        }
    }

    /// Queues a request's reply on its connection (in its turn), or
    /// releases it if the connection is gone.
    pub(super) fn queue_reply<I: Io>(&mut self, core: &mut TaskCore<'_, I>, done: Done, queued_ns: u64) {
        let slot = done.conn.slot as usize;
        self.held_bytes -= done.held_bytes - done.reserved_bytes;
        let Some(c) = self.conns.get_mut(slot).filter(|c| c.generation == done.conn.generation) else {
            // The connection is gone; its request's bytes are released
            // above, its budget here, and a registered buffer goes back to the core.
            self.release_budget(done.budget_bytes);
            return release_frame(core, done.frame);
        };
        c.inflight -= 1;
        c.request_bytes -= done.held_bytes;
        if c.state == State::Closed {
            self.release_budget(done.budget_bytes);
            release_frame(core, done.frame);
            return self.mark(slot);
        }
        if done.budget_bytes > 0 {
            self.hold_reply_budget(slot, done.budget_bytes, done.frame.len());
        }
        let c = &mut self.conns[slot];
        c.reply_bytes += done.frame.len();
        c.queued_pos += done.frame.len() as u64;
        self.held_bytes += done.frame.len();
        match done.trace {
            Some(ReplyTrace::Produce(trace)) => c.traced.push_back((c.queued_pos, StageTrace { queued_ns, ..trace })),
            Some(ReplyTrace::Fetch { received_ns, parked_ns }) => self.stages.record_fetch(received_ns, parked_ns, queued_ns),
            None => {}
        }
        // A request answered with nothing (Kafka's acks=0 produce) sends nothing.
        if !done.frame.is_empty() {
            c.sendq.push_back(done.frame);
        }
        if c.close_after_seq == Some(done.seq) {
            c.state = State::Closing;
        }
        self.mark(slot);
    }

    /// Starts the connection's next send, if none is in flight.
    pub(super) fn send_next<I: Io>(&mut self, core: &mut TaskCore<'_, I>, slot: usize) {
        let c = &mut self.conns[slot];
        if c.sending || c.sendq.is_empty() {
            return;
        }
        let (op, kind) = match c.sendq.pop_front().expect("non-empty") {
            ReplyBuf::Registered(buf) => {
                self.metrics.fixed_sends += 1;
                (Op::SendFixed { sock: c.sock, buf, sent: c.send_off }, OpKind::SendFixed)
            }
            ReplyBuf::Heap(mut buf) => {
                if c.send_off == 0 {
                    // Coalesce small heap replies into one send.
                    while let Some(ReplyBuf::Heap(next)) = c.sendq.front()
                        && buf.len() + next.len() <= SEND_COALESCE_BYTES
                    {
                        buf.extend_from_slice(next);
                        c.sendq.pop_front();
                    }
                }
                (Op::Send { sock: c.sock, buf, sent: c.send_off }, OpKind::Send)
            }
        };
        match core.push(op, Token::new(kind, c.generation, slot as u32).pack()) {
            Ok(()) => c.sending = true,
            Err(Op::Send { buf, .. }) => {
                c.sendq.push_front(ReplyBuf::Heap(buf));
                self.stall(slot);
            }
            Err(Op::SendFixed { buf, .. }) => {
                c.sendq.push_front(ReplyBuf::Registered(buf));
                self.stall(slot);
            }
            Err(_) => unreachable!("push returns its op"),
        }
    }

    /// A send completed: its bytes are released, its produce replies' stages
    /// recorded; a short send goes on from where it stopped. A fixed send
    /// completes once, after the kernel's zero-copy notification: its
    /// buffer is ours again.
    pub(super) fn on_send<I: Io>(
        &mut self,
        core: &mut TaskCore<'_, I>,
        slot: usize,
        result: std::result::Result<u32, i32>,
        frame: ReplyBuf,
        now_ns: u64,
    ) {
        let conn = &mut self.conns[slot];
        conn.sending = false;
        if conn.state == State::Closed {
            // Its bytes were released when the connection closed.
            release_frame(core, frame);
            return self.mark(slot);
        }
        let n = match result {
            Ok(n) => n as usize,
            Err(errno) => {
                conn.sendq.push_front(frame);
                return self.on_net_error(core, slot, errno);
            }
        };
        conn.reply_bytes -= n;
        self.held_bytes -= n;
        self.metrics.sent_bytes += n as u64;
        conn.last_active_ns = now_ns;
        conn.send_off += n;
        conn.sent_pos += n as u64;
        while let Some(&(end_pos, trace)) = conn.traced.front()
            && end_pos <= conn.sent_pos
        {
            conn.traced.pop_front();
            self.stages.record_produce(&trace, core.stage_ns(now_ns));
        }
        self.release_sent_budget(slot);
        let conn = &mut self.conns[slot];
        if conn.send_off < frame.len() {
            conn.sendq.push_front(frame);
        } else {
            conn.send_off = 0;
            release_frame(core, frame);
        }
        self.mark(slot);
    }
}
