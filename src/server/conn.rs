//! One connection's state, and its life after it was accepted: failed,
//! closed, freed. A connection lives on the core that accepted it; everything about
//! it runs on that core's ring, in the same tick as the logs. Nothing here
//! knows the protocol: an error that ends a connection is encoded by the
//! listener's [`Codec`].
//!
//! Push back: a connection stops being read while it has
//! `inflight_per_conn_max` requests in flight or holds
//! `conn_buffered_bytes_max` bytes (requests being served plus replies not
//! yet sent: a reader that never reads pins at most that). All connections
//! of the core stop being read while the core holds
//! `core_buffered_bytes_max`, while its log is out of write buffers, or
//! while a request waits for room in another core's mailbox.
use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use super::codec::{Codec, ConnError};
use super::reply::Done;
use super::send::release_frame;
use super::task::NetCore;
use crate::broker::ReplyBuf;
use crate::core::task::TaskCore;
use crate::io::{FileId, Io};
use crate::stats::StageTrace;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum State {
    Open,
    /// Send what is queued (an error that ends the connection), then close.
    Closing,
    /// The socket is closed; the slot is freed once its last op completes.
    Closed,
}

pub(super) struct Conn {
    pub sock: FileId,
    /// The index of the protocol it speaks, in the task's codecs.
    pub codec: u8,
    pub generation: u32,
    pub state: State,
    /// Received bytes not yet decoded; no capacity while idle.
    pub rbuf: Vec<u8>,
    /// A poll or receive is in flight.
    pub reading: bool,
    /// The last poll or full receive said there is more to read.
    pub readable: bool,
    pub sending: bool,
    /// Bytes of the front of `sendq` already sent.
    pub send_off: usize,
    pub sendq: VecDeque<ReplyBuf>,
    /// Requests dispatched and not yet answered.
    pub inflight: usize,
    /// With a codec whose replies go in request order: every request in
    /// flight may be overlapped ([`Codec::pipelines`]); the sequence number
    /// the next request gets and the next reply to queue; and replies that
    /// completed before their turn, by sequence number (at most `inflight`).
    pub overlapping: bool,
    pub next_seq: u64,
    pub send_seq: u64,
    pub early: BTreeMap<u64, Done>,
    /// Frame bytes of the requests in flight (released by their replies,
    /// even after the connection closed).
    pub request_bytes: usize,
    /// Reply bytes queued or being sent (released when sent or at close).
    pub reply_bytes: usize,
    pub last_active_ns: u64,
    /// Capacity of `rbuf` counted in the core's `rbuf_bytes`.
    pub rbuf_charged: usize,
    /// When the incomplete frame at the head of `rbuf` began arriving.
    pub partial_since_ns: Option<u64>,
    pub peer_closed: bool,
    /// Counted in `Shared::connections` (a refused one is not).
    pub counted: bool,
    pub dirty: bool,
    /// On the `stalled` list.
    pub stalled: bool,
    /// When the last receive completed (stage clock): the frames it
    /// finished start their `receive` stage then.
    pub recv_done_ns: u64,
    /// Reply bytes queued, and sent, over the connection's life: stream
    /// positions that say when a reply's last byte has gone.
    pub queued_pos: u64,
    pub sent_pos: u64,
    /// Produce replies queued or being sent: where each ends in the stream,
    /// and its stage times.
    pub traced: VecDeque<(u64, StageTrace)>,
    /// Reply budget held by this connection's queued Fetch replies, and
    /// where each ends in the stream (returned once sent).
    pub budget_bytes: usize,
    pub budgeted: VecDeque<(u64, usize)>,
    /// Set when the connection closes, so that its Fetches not yet built
    /// are not (made at its first Fetch: most connections never fetch).
    pub gone: Option<Arc<AtomicBool>>,
    /// What the codec keeps of the connection between frames.
    pub codec_state: super::codec::ConnState,
    /// The user it authenticated as, and the auth version it was looked
    /// up in (`auth.rs`).
    pub user: Option<Arc<crate::auth::User>>,
    pub auth_version: u64,
    /// The connection closes once the reply to this request is queued (a
    /// failed authentication); nothing more is read from it.
    pub close_after_seq: Option<u64>,
    /// The client's address, for the log lines that name it.
    pub peer: Peer,
}

impl Conn {
    pub fn new(sock: FileId, generation: u32, counted: bool, now_ns: u64) -> Conn {
        Conn {
            sock,
            codec: 0,
            generation,
            state: State::Open,
            rbuf: Vec::new(),
            reading: false,
            readable: false,
            sending: false,
            send_off: 0,
            sendq: VecDeque::new(),
            inflight: 0,
            overlapping: false,
            next_seq: 0,
            send_seq: 0,
            early: BTreeMap::new(),
            request_bytes: 0,
            reply_bytes: 0,
            last_active_ns: now_ns,
            rbuf_charged: 0,
            partial_since_ns: None,
            peer_closed: false,
            counted,
            dirty: false,
            stalled: false,
            recv_done_ns: 0,
            queued_pos: 0,
            sent_pos: 0,
            traced: VecDeque::new(),
            budget_bytes: 0,
            budgeted: VecDeque::new(),
            gone: None,
            codec_state: Default::default(),
            user: None,
            auth_version: 0,
            close_after_seq: None,
            peer: Peer(None),
        }
    }

    /// Nothing is queued to send, and no send is in flight.
    pub fn drained(&self) -> bool {
        !self.sending && self.sendq.is_empty()
    }
}

pub(super) struct Listener {
    pub file: FileId,
    /// The index of the protocol its connections speak, in the task's codecs.
    pub codec: u8,
    pub accepting: bool,
    pub paused_until_ns: u64,
    pub closed: bool,
}

/// How long accepting pauses after the process ran out of descriptors.
pub(super) const ACCEPT_BACKOFF_NS: u64 = 10_000_000;

impl<C: Codec> NetCore<C> {
    /// Puts a connection on the list of those to move on this tick.
    pub(super) fn mark(&mut self, slot: usize) {
        if let Some(c) = self.conns.get_mut(slot)
            && !c.dirty
        {
            c.dirty = true;
            self.dirty.push(slot);
        }
    }

    /// Puts a connection on the list retried once the core is not pushed back.
    pub(super) fn stall(&mut self, slot: usize) {
        let c = &mut self.conns[slot];
        if !c.stalled {
            c.stalled = true;
            self.stalled.push(slot);
        }
    }

    /// True while no connection of this core may be read: requests wait for
    /// another core's mailbox, the core defers requests, or its connections
    /// hold `core_buffered_bytes_max`.
    pub(super) fn blocked<I: Io>(&self, core: &TaskCore<'_, I>) -> bool {
        self.broker.waiting() || core.backpressured() || self.held_bytes + self.rbuf_bytes >= self.shared.live.core_buffered_bytes_max()
    }

    /// True while this connection's own limits allow reading it.
    pub(super) fn under_conn_limits(&self, slot: usize) -> bool {
        let c = &self.conns[slot];
        c.inflight < self.shared.live.inflight_per_conn_max() && c.request_bytes + c.reply_bytes < self.shared.cfg.conn_buffered_bytes_max
    }

    /// A socket error ends its connection; every errno means the same here
    /// (reset, broken pipe, cancelled by our own close).
    pub(super) fn on_net_error<I: Io>(&mut self, core: &mut TaskCore<'_, I>, slot: usize, errno: i32) {
        if errno != libc::ECANCELED {
            tracing::debug!(core = self.core_id, slot, peer = %self.conns[slot].peer, errno, "connection error");
        }
        self.close_conn(core, slot);
        self.mark(slot);
    }

    /// Queues the codec's error frame and closes the connection once it is sent.
    pub(super) fn fail_conn(&mut self, slot: usize, e: ConnError) {
        // A refusal that ends a connection is rare and an operator's business (info); ordinary typed errors are debug.
        let kafka = crate::metrics::requests::PROTOCOLS.get(usize::from(self.conns[slot].codec)) == Some(&"kafka");
        let protocol = if kafka { "Kafka " } else { "" };
        tracing::info!(core = self.core_id, slot, peer = %self.conns[slot].peer, kind = ?e.kind, "closing a {protocol}connection: {}", e.message);
        let frame = self.codec_of(slot).encode_conn_error(&e);
        self.fail_conn_with(slot, frame);
    }

    /// Queues `frame` (if any) and closes the connection once it is sent.
    pub(super) fn fail_conn_with(&mut self, slot: usize, frame: Vec<u8>) {
        let c = &mut self.conns[slot];
        if !frame.is_empty() {
            c.reply_bytes += frame.len();
            c.queued_pos += frame.len() as u64;
            self.held_bytes += frame.len();
            c.sendq.push_back(ReplyBuf::Heap(frame));
        }
        c.state = State::Closing;
        c.last_active_ns = c.last_active_ns.max(1);
    }

    pub(super) fn close_conn<I: Io>(&mut self, core: &mut TaskCore<'_, I>, slot: usize) {
        let c = &mut self.conns[slot];
        if c.state == State::Closed {
            return;
        }
        c.state = State::Closed;
        // Unsent replies go now (a send in flight finds the connection
        // closed and releases nothing); requests in flight release their
        // bytes when their replies arrive.
        self.held_bytes -= c.reply_bytes;
        c.reply_bytes = 0;
        for f in c.sendq.drain(..) {
            release_frame(core, f);
        }
        c.send_off = 0;
        // Replies that will never be sent have no latency to record.
        c.traced.clear();
        if let Some(gone) = &c.gone {
            gone.store(true, Ordering::Relaxed);
        }
        self.release_conn_budget(slot);
        self.drop_streams(slot);
        // Replies that waited for their turn go as a closed connection's do.
        for (_, done) in std::mem::take(&mut self.conns[slot].early) {
            self.queue_reply(core, done, 0);
        }
        let c = &mut self.conns[slot];
        if c.counted {
            c.counted = false;
            self.shared.connections.fetch_sub(1, Ordering::Relaxed);
        }
        let sock = c.sock;
        core.close_socket(sock);
        let rbuf = self.take_rbuf(slot);
        self.pool.give(rbuf);
    }

    /// Closes the connection and frees its slot if no op of it is in flight.
    pub(super) fn close_and_free<I: Io>(&mut self, core: &mut TaskCore<'_, I>, slot: usize) {
        self.close_conn(core, slot);
        self.free_if_done(slot);
    }

    /// Forgets a closed connection whose last op completed.
    pub(super) fn free_if_done(&mut self, slot: usize) {
        let c = &self.conns[slot];
        if c.reading || c.sending {
            return;
        }
        let c = self.conns.remove(slot);
        debug_assert!(c.state == State::Closed && c.rbuf_charged == 0 && c.reply_bytes == 0, "a freed connection still holds bytes");
    }
}

/// A connection's remote address as log lines print it ("unknown" where
/// the ring could not tell).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Peer(pub Option<std::net::SocketAddr>);

impl std::fmt::Display for Peer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0 {
            Some(addr) => addr.fmt(f),
            None => f.write_str("unknown"),
        }
    }
}
