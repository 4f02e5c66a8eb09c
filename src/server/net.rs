//! One core's connections, run on the core's own ring (a [`CoreTask`]).
//!
//! A connection is a small state machine. Idle, it holds no buffer: only a
//! one-shot `POLL_ADD` is in flight. When the socket is readable a receive
//! buffer comes from the core's pool and one `RECV` fills it; whole frames
//! are decoded in place and dispatched, and an empty buffer goes back to
//! the pool. Replies (from this core or another) arrive in the core's
//! inbox, are queued on their connection and go out by `SEND`, coalesced.
//!
//! Push back: a connection stops being read while it has
//! `inflight_per_conn_max` requests in flight or holds
//! `conn_buffered_bytes_max` bytes (requests being served plus replies not
//! yet sent: a reader that never reads pins at most that). All connections
//! of the core stop being read while the core holds
//! `core_buffered_bytes_max`, while its log is out of write buffers, or
//! while a request waits for room in another core's mailbox.
use std::collections::{BTreeMap, VecDeque};
use std::os::fd::OwnedFd;
use std::sync::atomic::Ordering;
use std::sync::mpsc::{Receiver, SyncSender, TryRecvError};
use std::sync::{Arc, Mutex};

use slab::Slab;

use super::{ConnKey, Control, Done, Replier, ReplyFrame, ReplyTrace, Shared, admin};
use crate::catalog::{TopicMeta, pid_in};
use crate::core::tick::CoreTask;
use crate::core::{AppendAck, Core, Reply, Request, ValidBatch};
use crate::error::{Result, StromError};
use crate::io::token::{OWNER_MASK, OpKind, Token};
use crate::io::uring::UringIo;
use crate::io::{FileId, Io, Op};
use crate::partition::Pid;
use crate::proto::{self, ErrorCode, OffsetSpec, Response, TopicMetadata};
use crate::read::{Fetch, OnceSink, ReadResult, RegisteredBatches};
use crate::stats::{StageHistograms, StageTrace};

const KIND_ACCEPT: OpKind = OpKind::Accept;
const KIND_POLL: OpKind = OpKind::Poll;
const KIND_RECV: OpKind = OpKind::Recv;
const KIND_SEND: OpKind = OpKind::Send;
const KIND_SEND_FIXED: OpKind = OpKind::SendFixed;
/// Generations are kept to the token's owner bits (see `io::token`).
const GENERATION_MASK: u32 = OWNER_MASK;

/// A receive buffer's first size; it grows to hold a frame that is larger.
const RECV_BUF_BYTES: usize = 64 << 10;
/// Receive buffers kept for reuse per core, in bytes: past it they are freed.
const POOL_BYTES_MAX: usize = 32 << 20;
/// A frame's first bytes kept between receives in a buffer of their own
/// when at most this many (the receive buffer goes back to the pool).
const PARTIAL_SMALL_BYTES: usize = 4096;
/// Receive-buffer bytes in flight per core at most. Receives on readable
/// sockets complete at once, so this only bounds a burst (thousands of
/// connections readable in one tick each taking a buffer); the rest wait a
/// tick or two.
const RECV_INFLIGHT_BYTES_MAX: usize = 16 << 20;
/// Replies queued on one connection are sent together up to this size.
const SEND_COALESCE_BYTES: usize = 256 << 10;
/// How often timeouts are checked.
const SWEEP_NS: u64 = 1_000_000_000;
/// How long accepting pauses after the process ran out of descriptors.
const ACCEPT_BACKOFF_NS: u64 = 10_000_000;
/// How soon a request waiting for room in another core's mailbox is retried.
const OUTBOX_RETRY_NS: u64 = 100_000;

fn token(kind: OpKind, generation: u32, slot: usize) -> u64 {
    Token::new(kind, generation & GENERATION_MASK, slot as u32).pack()
}

fn untoken(t: u64) -> (OpKind, u32, usize) {
    let t = Token::unpack(t);
    (t.kind, t.owner, t.slot as usize)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Open,
    /// Send what is queued (an error that ends the connection), then close.
    Closing,
    /// The socket is closed; the slot is freed once its last op completes.
    Closed,
}

struct Conn {
    sock: FileId,
    generation: u32,
    state: State,
    /// Received bytes not yet decoded; no capacity while idle.
    rbuf: Vec<u8>,
    /// A poll or receive is in flight.
    reading: bool,
    /// The last poll or full receive said there is more to read.
    readable: bool,
    sending: bool,
    /// Bytes of the front of `sendq` already sent.
    send_off: usize,
    sendq: VecDeque<ReplyFrame>,
    /// Requests dispatched and not yet answered.
    inflight: usize,
    /// Frame bytes of the requests in flight (released by their replies,
    /// even after the connection closed).
    request_bytes: usize,
    /// Reply bytes queued or being sent (released when sent or at close).
    reply_bytes: usize,
    last_active_ns: u64,
    /// Capacity of `rbuf` counted in the core's `rbuf_bytes`.
    rbuf_charged: usize,
    /// When the incomplete frame at the head of `rbuf` began arriving.
    partial_since_ns: Option<u64>,
    peer_closed: bool,
    /// Counted in `Shared::connections` (a refused one is not).
    counted: bool,
    dirty: bool,
    /// On the `stalled` list.
    stalled: bool,
    /// When the last receive completed (stage clock): the frames it
    /// finished start their `receive` stage then.
    recv_done_ns: u64,
    /// Reply bytes queued, and sent, over the connection's life: stream
    /// positions that say when a reply's last byte has gone.
    queued_pos: u64,
    sent_pos: u64,
    /// Produce replies queued or being sent: where each ends in the stream,
    /// and its stage times.
    traced: VecDeque<(u64, StageTrace)>,
}

struct Listener {
    file: FileId,
    accepting: bool,
    paused_until_ns: u64,
    closed: bool,
}

/// Counters of one core's server, for reports.
#[derive(Debug, Clone, Default)]
pub struct NetStats {
    pub accepted: u64,
    pub refused_connections: u64,
    pub requests: u64,
    pub forwarded: u64,
    pub frame_errors: u64,
    pub timeouts: u64,
    /// Readers closed because their unsent replies held the core's buffer
    /// budget without progress (see `NetCore::evict_stuck_readers`).
    pub stuck_readers_closed: u64,
    /// Replies sent straight from a registered reply buffer (SEND_ZC).
    pub fixed_sends: u64,
    /// The core's registered reply buffers free now (all of them when idle).
    pub reply_bufs_free: usize,
    /// Request and reply bytes held now (the `core_buffered_bytes_max` count).
    pub held_bytes: usize,
    /// Connection slots in use now (closing ones included).
    pub connections: usize,
    /// Receive buffer bytes kept in the pool now.
    pub pooled_bytes: usize,
    /// Ops of this core's ring in flight now (logs and network together):
    /// the op table slots in use. Idle: one accept per listener and one
    /// poll per connection.
    pub ops_in_flight: usize,
    /// The core's registered read buffers free now (all when no read runs).
    pub read_bufs_free: usize,
    /// Reads of this core that went to the disk (`READ_FIXED`), since start.
    pub reads_from_disk: u64,
    /// The core's invariant audits ([`crate::core::CoreStats`]): each must stay 0.
    pub audit_overlapping_writes: u64,
    pub audit_served_beyond_durable: u64,
    pub audit_buffer_reuse: u64,
}

impl std::fmt::Display for NetStats {
    /// One line of `key=value` pairs, what `strom serve` prints on SIGUSR1.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "connections={} ops_in_flight={} reply_bufs_free={} read_bufs_free={} held_bytes={} pooled_bytes={} \
             accepted={} refused_connections={} requests={} forwarded={} frame_errors={} timeouts={} stuck_readers_closed={} fixed_sends={} reads_from_disk={} \
             audit_overlapping_writes={} audit_served_beyond_durable={} audit_buffer_reuse={}",
            self.connections,
            self.ops_in_flight,
            self.reply_bufs_free,
            self.read_bufs_free,
            self.held_bytes,
            self.pooled_bytes,
            self.accepted,
            self.refused_connections,
            self.requests,
            self.forwarded,
            self.frame_errors,
            self.timeouts,
            self.stuck_readers_closed,
            self.fixed_sends,
            self.reads_from_disk,
            self.audit_overlapping_writes,
            self.audit_served_beyond_durable,
            self.audit_buffer_reuse
        )
    }
}

pub(crate) struct NetCore {
    core_id: usize,
    shared: Arc<Shared>,
    inbox: Receiver<Done>,
    control: Receiver<Control>,
    /// Sockets handed over at start, adopted by the ring on the first tick.
    unadopted: Vec<OwnedFd>,
    listeners: Vec<Listener>,
    conns: Slab<Conn>,
    next_generation: u32,
    dirty: Vec<usize>,
    /// Connections that want to read while the whole core is pushed back.
    stalled: Vec<usize>,
    pool: Vec<Vec<u8>>,
    pool_bytes: usize,
    /// Requests for other cores whose mailbox was full, in order.
    outbox: VecDeque<(usize, Request)>,
    held_bytes: usize,
    /// Receive-buffer bytes connections keep between receives (frames
    /// still arriving), also counted against `core_buffered_bytes_max`.
    rbuf_bytes: usize,
    /// Capacity of the receive buffers inside receives in flight.
    recv_inflight_bytes: usize,
    topics_version: u64,
    topics: Arc<BTreeMap<String, TopicMeta>>,
    stopping: Option<(u64, SyncSender<()>)>,
    finished: bool,
    next_sweep_ns: u64,
    pub stats: NetStats,
    /// Per-stage latency of the requests of this core's connections.
    stages: StageHistograms,
}

impl NetCore {
    pub(crate) fn new(
        core_id: usize,
        shared: Arc<Shared>,
        inbox: Receiver<Done>,
        control: Receiver<Control>,
        listeners: Vec<OwnedFd>,
    ) -> Self {
        let topics_version = shared.directory.version();
        let topics = shared.directory.snapshot();
        NetCore {
            core_id,
            shared,
            inbox,
            control,
            unadopted: listeners,
            listeners: Vec::new(),
            conns: Slab::new(),
            next_generation: 0,
            dirty: Vec::new(),
            stalled: Vec::new(),
            pool: Vec::new(),
            pool_bytes: 0,
            outbox: VecDeque::new(),
            held_bytes: 0,
            rbuf_bytes: 0,
            recv_inflight_bytes: 0,
            topics_version,
            topics,
            stopping: None,
            finished: false,
            next_sweep_ns: 0,
            stats: NetStats::default(),
            stages: StageHistograms::new(),
        }
    }

    fn mark(&mut self, slot: usize) {
        if let Some(c) = self.conns.get_mut(slot)
            && !c.dirty
        {
            c.dirty = true;
            self.dirty.push(slot);
        }
    }

    /// Puts a connection on the list retried once the core is not pushed back.
    fn stall(&mut self, slot: usize) {
        let c = &mut self.conns[slot];
        if !c.stalled {
            c.stalled = true;
            self.stalled.push(slot);
        }
    }

    fn blocked(&self, core: &Core<UringIo>) -> bool {
        !self.outbox.is_empty() || core.backpressured() || self.held_bytes + self.rbuf_bytes >= self.shared.cfg.core_buffered_bytes_max
    }

    fn take_buf(&mut self) -> Vec<u8> {
        match self.pool.pop() {
            Some(b) => {
                self.pool_bytes -= b.capacity();
                b
            }
            None => Vec::with_capacity(RECV_BUF_BYTES),
        }
    }

    fn give_buf(&mut self, mut b: Vec<u8>) {
        if b.capacity() >= RECV_BUF_BYTES && self.pool_bytes + b.capacity() <= POOL_BYTES_MAX {
            b.clear();
            self.pool_bytes += b.capacity();
            self.pool.push(b);
        }
    }

    // ---- completions ----

    fn on_completion(&mut self, core: &mut Core<UringIo>, c: crate::io::Completion, now_ns: u64) {
        let (kind, generation, slot) = untoken(c.token);
        if kind == KIND_ACCEPT {
            return self.on_accept(core, slot, c.result, c.more, now_ns);
        }
        let Some(conn) = self.conns.get_mut(slot) else {
            debug_assert!(false, "network completion for a free slot");
            return;
        };
        if conn.generation & GENERATION_MASK != generation {
            debug_assert!(false, "network completion for a reused slot");
            return;
        }
        let open = conn.state != State::Closed;
        match kind {
            KIND_POLL => {
                conn.reading = false;
                match c.result {
                    Ok(_) => conn.readable = true,
                    Err(errno) => return self.on_net_error(core, slot, errno),
                }
            }
            KIND_RECV => {
                conn.reading = false;
                let buf = c.net_buf.expect("recv returns its buffer");
                self.recv_inflight_bytes -= buf.capacity();
                if !open {
                    self.give_buf(buf);
                    self.mark(slot);
                    return;
                }
                match c.result {
                    Ok(0) => {
                        conn.peer_closed = true;
                        self.put_rbuf(slot, buf);
                    }
                    Ok(_) => {
                        // A receive that filled its buffer probably left more behind.
                        conn.readable = buf.len() == buf.capacity();
                        conn.last_active_ns = now_ns;
                        conn.recv_done_ns = now_ns + core.clock_offset_ns();
                        self.put_rbuf(slot, buf);
                        self.parse(core, slot, now_ns);
                    }
                    Err(errno) => {
                        self.put_rbuf(slot, buf);
                        return self.on_net_error(core, slot, errno);
                    }
                }
            }
            KIND_SEND | KIND_SEND_FIXED => {
                // A fixed send completes once, after the kernel's zero-copy
                // notification: its buffer is ours again.
                conn.sending = false;
                let frame = match kind {
                    KIND_SEND => ReplyFrame::Heap(c.net_buf.expect("send returns its buffer")),
                    _ => ReplyFrame::Fixed(c.buf.expect("a fixed send returns its buffer")),
                };
                if !open {
                    // Its bytes were released when the connection closed.
                    release_frame(core, frame);
                    self.mark(slot);
                    return;
                }
                match c.result {
                    Ok(n) => {
                        let n = n as usize;
                        conn.reply_bytes -= n;
                        self.held_bytes -= n;
                        conn.last_active_ns = now_ns;
                        conn.send_off += n;
                        conn.sent_pos += n as u64;
                        while let Some(&(end_pos, trace)) = conn.traced.front()
                            && end_pos <= conn.sent_pos
                        {
                            conn.traced.pop_front();
                            self.stages.record_produce(&trace, now_ns + core.clock_offset_ns());
                        }
                        if conn.send_off < frame.len() {
                            conn.sendq.push_front(frame);
                        } else {
                            conn.send_off = 0;
                            release_frame(core, frame);
                        }
                    }
                    Err(errno) => {
                        conn.sendq.push_front(frame);
                        return self.on_net_error(core, slot, errno);
                    }
                }
            }
            _ => unreachable!("{kind:?} is not a network op"),
        }
        self.mark(slot);
    }

    /// A socket error ends its connection; every errno means the same here
    /// (reset, broken pipe, cancelled by our own close).
    fn on_net_error(&mut self, core: &mut Core<UringIo>, slot: usize, errno: i32) {
        if errno != libc::ECANCELED {
            tracing::debug!(core = self.core_id, slot, errno, "connection error");
        }
        self.close_conn(core, slot);
        self.mark(slot);
    }

    fn on_accept(&mut self, core: &mut Core<UringIo>, index: usize, result: std::result::Result<u32, i32>, more: bool, now_ns: u64) {
        let l = &mut self.listeners[index];
        // The multishot accept stays armed until a completion says otherwise.
        l.accepting = more;
        let sock = match result {
            Ok(file) => FileId(file),
            Err(libc::EMFILE) | Err(libc::ENFILE) | Err(libc::ENOBUFS) | Err(libc::ENOMEM) => {
                tracing::warn!(core = self.core_id, "out of descriptors or memory for connections; accepting pauses");
                l.paused_until_ns = now_ns + ACCEPT_BACKOFF_NS;
                return;
            }
            // ECANCELED: our own stop; ECONNABORTED and the like: that one peer.
            Err(_) => return,
        };
        if self.stopping.is_some() {
            core.io.close_socket(sock);
            return;
        }
        let counted = self.shared.connections.fetch_add(1, Ordering::Relaxed) < self.shared.cfg.connections_max;
        if !counted {
            self.shared.connections.fetch_sub(1, Ordering::Relaxed);
        }
        self.next_generation = self.next_generation.wrapping_add(1);
        let slot = self.conns.insert(Conn {
            sock,
            generation: self.next_generation & GENERATION_MASK,
            state: State::Open,
            rbuf: Vec::new(),
            rbuf_charged: 0,
            reading: false,
            readable: false,
            sending: false,
            send_off: 0,
            sendq: VecDeque::new(),
            inflight: 0,
            request_bytes: 0,
            reply_bytes: 0,
            last_active_ns: now_ns,
            partial_since_ns: None,
            peer_closed: false,
            counted,
            dirty: false,
            stalled: false,
            recv_done_ns: 0,
            queued_pos: 0,
            sent_pos: 0,
            traced: VecDeque::new(),
        });
        if counted {
            self.stats.accepted += 1;
        } else {
            self.stats.refused_connections += 1;
            let msg = format!("more than {} connections", self.shared.cfg.connections_max);
            self.fail_conn(slot, ErrorCode::TooManyConnections, &msg);
        }
        self.mark(slot);
    }

    /// Queues an error frame (request id 0: no request is being answered)
    /// and closes the connection once it is sent.
    fn fail_conn(&mut self, slot: usize, code: ErrorCode, message: &str) {
        let c = &mut self.conns[slot];
        let mut frame = Vec::new();
        proto::encode_error(&mut frame, 0, 0, code, message);
        c.reply_bytes += frame.len();
        c.queued_pos += frame.len() as u64;
        self.held_bytes += frame.len();
        c.sendq.push_back(ReplyFrame::Heap(frame));
        c.state = State::Closing;
        c.last_active_ns = c.last_active_ns.max(1);
    }

    fn close_conn(&mut self, core: &mut Core<UringIo>, slot: usize) {
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
        if c.counted {
            c.counted = false;
            self.shared.connections.fetch_sub(1, Ordering::Relaxed);
        }
        let sock = c.sock;
        core.io.close_socket(sock);
        let rbuf = self.take_rbuf(slot);
        self.give_buf(rbuf);
    }

    /// Forgets a closed connection whose last op completed.
    fn free_slot(&mut self, slot: usize) {
        let c = self.conns.remove(slot);
        debug_assert!(c.state == State::Closed && c.rbuf_charged == 0 && c.reply_bytes == 0, "a freed connection still holds bytes");
    }

    /// Gives a connection its receive buffer back, charging its capacity to
    /// the core: bytes of a frame still arriving count against
    /// `core_buffered_bytes_max` like requests and replies do.
    fn put_rbuf(&mut self, slot: usize, buf: Vec<u8>) {
        let c = &mut self.conns[slot];
        self.rbuf_bytes = self.rbuf_bytes - c.rbuf_charged + buf.capacity();
        c.rbuf_charged = buf.capacity();
        c.rbuf = buf;
    }

    fn take_rbuf(&mut self, slot: usize) -> Vec<u8> {
        let c = &mut self.conns[slot];
        self.rbuf_bytes -= c.rbuf_charged;
        c.rbuf_charged = 0;
        std::mem::take(&mut c.rbuf)
    }

    // ---- decoding and dispatch ----

    /// Dispatches every whole frame in the connection's buffer that its
    /// limits allow; the rest waits there.
    fn parse(&mut self, core: &mut Core<UringIo>, slot: usize, now_ns: u64) {
        let mut rbuf = self.take_rbuf(slot);
        let mut pos = 0;
        let frame_max = self.shared.cfg.frame_bytes_max;
        loop {
            let c = &self.conns[slot];
            if c.state != State::Open
                || c.inflight >= self.shared.cfg.inflight_per_conn_max
                || c.request_bytes + c.reply_bytes >= self.shared.cfg.conn_buffered_bytes_max
                || self.blocked(core)
            {
                break;
            }
            match proto::frame_len(&rbuf[pos..], frame_max) {
                Ok(None) => break,
                Ok(Some(total)) if rbuf.len() - pos < total => {
                    if pos > 0 {
                        rbuf.drain(..pos);
                        pos = 0;
                    }
                    // Grow only a buffer the frame has (nearly) filled, and
                    // at most twofold: memory follows the bytes that
                    // arrived, not the length a peer declared (a trickled
                    // 8 MiB frame costs what it sent).
                    let missing = total - rbuf.len();
                    if rbuf.capacity() - rbuf.len() < missing.min(RECV_BUF_BYTES / 2) {
                        rbuf.reserve(missing.min(rbuf.capacity().max(RECV_BUF_BYTES)));
                    }
                    break;
                }
                Ok(Some(total)) => {
                    self.dispatch(core, slot, &rbuf[pos..pos + total]);
                    pos += total;
                }
                Err(e) => {
                    // Framing is lost: nothing after this can be trusted.
                    self.stats.frame_errors += 1;
                    let code = match e {
                        proto::FrameError::TooLarge { .. } => ErrorCode::FrameTooLarge,
                        proto::FrameError::TooSmall { .. } => ErrorCode::Malformed,
                    };
                    self.fail_conn(slot, code, &e.to_string());
                    rbuf.clear();
                    pos = 0;
                    break;
                }
            }
        }
        let progressed = pos > 0;
        rbuf.drain(..pos);
        let c = &mut self.conns[slot];
        c.partial_since_ns = match (rbuf.is_empty(), progressed) {
            (true, _) => None,
            (false, true) => Some(now_ns),
            (false, false) => Some(c.partial_since_ns.unwrap_or(now_ns)),
        };
        if rbuf.is_empty() {
            self.give_buf(rbuf);
        } else if rbuf.len() <= PARTIAL_SMALL_BYTES && rbuf.capacity() > 2 * PARTIAL_SMALL_BYTES {
            // A few bytes of a frame (a slow or hostile sender): keep just
            // them; the big buffer goes back to the pool until data arrives.
            let small = rbuf.to_vec();
            self.give_buf(rbuf);
            self.put_rbuf(slot, small);
        } else {
            self.put_rbuf(slot, rbuf);
        }
    }

    fn dispatch(&mut self, core: &mut Core<UringIo>, slot: usize, frame: &[u8]) {
        self.stats.requests += 1;
        let decoded = proto::decode_request(frame);
        // A Fetch is charged to its connection, up front, for the largest
        // reply it may get: what one connection (a reader that never reads
        // among them) can make the server hold is then bounded before the
        // replies exist. The core counts only bytes that exist, so parked
        // long polls do not stop it reading producers.
        let reply_reserve = match &decoded {
            Ok((_, proto::Request::Fetch { max_bytes, .. })) => {
                self.fetch_max_bytes(*max_bytes).max(self.shared.batch_bytes_max) + proto::FETCH_REPLY_FRONT_BYTES
            }
            _ => 0,
        };
        let c = &mut self.conns[slot];
        let key = ConnKey { slot: slot as u32, generation: c.generation };
        let received_ns = c.recv_done_ns;
        let held = frame.len() + reply_reserve;
        c.inflight += 1;
        c.request_bytes += held;
        self.held_bytes += frame.len();
        match decoded {
            Ok((h, req)) => {
                let r = self.shared.replier(self.core_id, key, h.api, h.request_id, held, reply_reserve, received_ns);
                if self.stopping.is_some() {
                    // Read and refused with a typed, retriable error: better
                    // for a pipelining client than a reset over unread bytes.
                    return r.fail(&StromError::ShuttingDown);
                }
                self.serve(core, req, r);
            }
            Err((h, e)) => {
                self.stats.frame_errors += 1;
                let (api, id) = h.map_or((0, 0), |h| (h.api, h.request_id));
                self.shared.replier(self.core_id, key, api, id, held, reply_reserve, received_ns).error(e.code(), &e.to_string());
            }
        }
    }

    /// A Fetch's byte budget: at least 1, and small enough that the reply
    /// (header and fields included) fits a frame. A reply holds at most
    /// this, or one batch if the first batch alone is larger.
    fn fetch_max_bytes(&self, asked: u32) -> usize {
        (asked as usize).clamp(1, self.shared.cfg.frame_bytes_max - proto::FETCH_REPLY_FRONT_BYTES)
    }

    fn topics(&mut self) -> &BTreeMap<String, TopicMeta> {
        let v = self.shared.directory.version();
        if v != self.topics_version {
            self.topics = self.shared.directory.snapshot();
            self.topics_version = v;
        }
        &self.topics
    }

    fn pid(&mut self, topic: &str, partition: u32) -> Result<Pid> {
        pid_in(self.topics(), topic, partition)
    }

    fn serve(&mut self, core: &mut Core<UringIo>, req: proto::Request<'_>, r: Replier) {
        match req {
            proto::Request::Produce { topic, partition, batches } => {
                let pid = match self.pid(topic, partition) {
                    Ok(p) => p,
                    Err(e) => return r.fail(&e),
                };
                let mut valid = Vec::new();
                for b in proto::split_batches(batches) {
                    match b.map(|b| ValidBatch::new(b.to_vec(), self.shared.batch_bytes_max)) {
                        Ok(Ok(v)) => valid.push(v),
                        Ok(Err(e)) => return r.fail(&e),
                        Err(e) => return r.error(ErrorCode::InvalidBatch, &e.to_string()),
                    }
                }
                if valid.is_empty() {
                    return r.error(ErrorCode::InvalidBatch, "a produce request must carry at least one batch");
                }
                if valid.len() == 1 {
                    let batch = valid.pop().expect("one batch");
                    let reply: Reply<AppendAck> = Box::new(move |res| match res {
                        Ok(a) => r.produced(a.trace).ok(&Response::Produce { base_offset: a.base_offset, last_offset: a.last_offset }),
                        Err(e) => r.fail(&e),
                    });
                    return self.route(core, pid, Request::Append { pid, batch, reply });
                }
                // Several batches: one group, so no other append can land
                // between them, and one reply once every append is answered.
                let acc = Arc::new(Mutex::new(ProduceAcc {
                    remaining: valid.len(),
                    first: None,
                    last: 0,
                    trace: None,
                    err: None,
                    reply: Some(r),
                }));
                let group = valid
                    .into_iter()
                    .map(|batch| {
                        let acc = acc.clone();
                        let reply: Reply<AppendAck> = Box::new(move |res| acc.lock().expect("produce accumulator").add(res));
                        Request::Append { pid, batch, reply }
                    })
                    .collect();
                self.route(core, pid, Request::Group(group));
            }
            proto::Request::Fetch { topic, partition, offset, max_bytes, max_wait_ms } => {
                let pid = match self.pid(topic, partition) {
                    Ok(p) => p,
                    Err(e) => return r.fail(&e),
                };
                let max_bytes = self.fetch_max_bytes(max_bytes);
                let max_wait_ns =
                    (std::time::Duration::from_millis(max_wait_ms as u64).min(self.shared.cfg.fetch_wait_max)).as_nanos() as u64;
                let reply: Reply<ReadResult> = Box::new(move |res| match res {
                    // The core read the batches after room for the reply's
                    // header: the frame is that buffer, no copy; a
                    // registered one is sent from as it is.
                    Ok(mut rr) => match (rr.registered.take(), r.fetched(rr.parked_ns)) {
                        (Some(RegisteredBatches(mut buf)), r) => {
                            let id = r.request_id;
                            proto::put_fetch_reply_front(buf.as_mut_slice(), id, rr.high_watermark, rr.start_offset, rr.next_offset);
                            r.frame_fixed(buf)
                        }
                        (None, r) => {
                            proto::put_fetch_reply_front(&mut rr.batches, r.request_id, rr.high_watermark, rr.start_offset, rr.next_offset);
                            r.frame(rr.batches)
                        }
                    },
                    Err(e) => r.fail(&e),
                });
                let front = proto::FETCH_REPLY_FRONT_BYTES;
                // Only the connection's own core may send from its buffers.
                let fixed = self.shared.core_of(pid) == self.core_id;
                let sink = Box::new(OnceSink::new(front, fixed, reply));
                self.route(core, pid, Request::Read { pid, fetch: Fetch { offset, max_bytes, max_wait_ns }, sink });
            }
            proto::Request::ListOffsets { topic, partition, spec } => {
                let pid = match self.pid(topic, partition) {
                    Ok(p) => p,
                    Err(e) => return r.fail(&e),
                };
                let req = match spec {
                    OffsetSpec::Earliest | OffsetSpec::Latest => Request::Stat {
                        pid,
                        reply: Box::new(move |res| match res {
                            Ok(s) => r.ok(&Response::ListOffsets {
                                offset: Some(if spec == OffsetSpec::Earliest { s.start_offset } else { s.end_offset }),
                            }),
                            Err(e) => r.fail(&e),
                        }),
                    },
                    OffsetSpec::Timestamp(ts_ms) => Request::OffsetForTime {
                        pid,
                        ts_ms,
                        reply: Box::new(move |res| match res {
                            Ok(offset) => r.ok(&Response::ListOffsets { offset }),
                            Err(e) => r.fail(&e),
                        }),
                    },
                };
                self.route(core, pid, req);
            }
            proto::Request::Metadata { topics } => {
                let cores = self.shared.routes.len();
                let log_count = self.shared.log_count;
                let all = self.topics().clone();
                let mut out = Vec::new();
                let names: Vec<&str> = if topics.is_empty() { all.keys().map(String::as_str).collect() } else { topics };
                for name in names {
                    let Some(t) = all.get(name) else {
                        return r.fail(&StromError::UnknownTopic(name.escape_debug().take(300).collect()));
                    };
                    let partition_cores =
                        (0..t.partitions).map(|i| ((t.first_pid + i) % log_count) as usize % cores).map(|c| c as u16).collect();
                    out.push(TopicMetadata { name: name.to_string(), partition_cores });
                }
                r.ok(&Response::Metadata { core_addrs: self.shared.core_addrs.clone(), topics: out })
            }
            proto::Request::CreateTopic { topic, partitions } => {
                self.admin(admin::Job::CreateTopic { name: topic.to_string(), partitions, reply: r })
            }
            proto::Request::DeleteTopic { topic } => self.admin(admin::Job::DeleteTopic { name: topic.to_string(), reply: r }),
            proto::Request::OffsetCommit { group, topic, partition, offset } => {
                self.admin(admin::Job::Commit { group: group.to_string(), topic: topic.to_string(), partition, offset, reply: r })
            }
            proto::Request::OffsetFetch { group, topic, partition } => {
                self.admin(admin::Job::Fetch { group: group.to_string(), topic: topic.to_string(), partition, reply: r })
            }
            proto::Request::Stats { reset } => {
                // Every core adds its histograms when it next ticks; this
                // core's go in now. The last to add sends the reply.
                let done = move |h: StageHistograms| r.ok(&Response::Stats { stages: h.summary() });
                if let Some(own) = self.shared.gather_stages(reset, Some(self.core_id), done) {
                    own.add(&mut self.stages, reset);
                }
            }
        }
    }

    fn admin(&mut self, job: admin::Job) {
        let sent = self.shared.admin.lock().expect("admin sender").send(job);
        if let Err(std::sync::mpsc::SendError(job)) = sent {
            let (admin::Job::CreateTopic { reply, .. }
            | admin::Job::DeleteTopic { reply, .. }
            | admin::Job::Commit { reply, .. }
            | admin::Job::Fetch { reply, .. }) = job;
            reply.fail(&StromError::ShuttingDown);
        }
    }

    /// Runs a request on the core owning its partition: here at once, or
    /// through that core's mailbox (in order, behind anything waiting).
    fn route(&mut self, core: &mut Core<UringIo>, pid: Pid, req: Request) {
        let target = self.shared.core_of(pid);
        if target == self.core_id {
            return core.handle(req);
        }
        self.stats.forwarded += 1;
        if !self.outbox.is_empty() {
            return self.outbox.push_back((target, req));
        }
        match self.shared.routes[target].try_send(req) {
            Ok(()) => {}
            Err((req, true)) => self.outbox.push_back((target, req)),
            Err((req, false)) => req.refuse(StromError::ShuttingDown),
        }
    }

    fn flush_outbox(&mut self) {
        while let Some((target, req)) = self.outbox.pop_front() {
            match self.shared.routes[target].try_send(req) {
                Ok(()) => {}
                Err((req, true)) => {
                    self.outbox.push_front((target, req));
                    return;
                }
                Err((req, false)) => req.refuse(StromError::ShuttingDown),
            }
        }
    }

    // ---- planning ----

    fn deliver_replies(&mut self, core: &mut Core<UringIo>) {
        let mut now_ns = None;
        loop {
            let done = match self.inbox.try_recv() {
                Ok(d) => d,
                Err(TryRecvError::Empty) | Err(TryRecvError::Disconnected) => return,
            };
            let queued_ns = *now_ns.get_or_insert_with(|| core.clock_ns());
            let slot = done.conn.slot as usize;
            self.held_bytes -= done.held_bytes - done.reserved_bytes;
            match self.conns.get_mut(slot) {
                Some(c) if c.generation == done.conn.generation => {
                    c.inflight -= 1;
                    c.request_bytes -= done.held_bytes;
                    if c.state != State::Closed {
                        c.reply_bytes += done.frame.len();
                        c.queued_pos += done.frame.len() as u64;
                        self.held_bytes += done.frame.len();
                        match done.trace {
                            Some(ReplyTrace::Produce(trace)) => c.traced.push_back((c.queued_pos, StageTrace { queued_ns, ..trace })),
                            Some(ReplyTrace::Fetch { received_ns, parked_ns }) => {
                                self.stages.record_fetch(received_ns, parked_ns, queued_ns)
                            }
                            None => {}
                        }
                        c.sendq.push_back(done.frame);
                    } else {
                        release_frame(core, done.frame);
                    }
                    self.mark(slot);
                }
                // The connection is gone; its request's bytes are released
                // above, and a registered buffer goes back to the core.
                _ => release_frame(core, done.frame),
            }
        }
    }

    /// Moves one connection on: parse what waits, send, close, or read.
    fn drive(&mut self, core: &mut Core<UringIo>, slot: usize, now_ns: u64) {
        let blocked = self.blocked(core);
        let cfg_inflight = self.shared.cfg.inflight_per_conn_max;
        let cfg_held = self.shared.cfg.conn_buffered_bytes_max;
        {
            let c = &self.conns[slot];
            if c.state == State::Open
                && !c.rbuf.is_empty()
                && !blocked
                && c.inflight < cfg_inflight
                && c.request_bytes + c.reply_bytes < cfg_held
            {
                self.parse(core, slot, now_ns);
            }
        }
        let c = &mut self.conns[slot];
        if c.state == State::Closed {
            if !c.reading && !c.sending {
                self.free_slot(slot);
            }
            return;
        }
        if !c.sending && !c.sendq.is_empty() {
            let (op, kind) = match c.sendq.pop_front().expect("non-empty") {
                ReplyFrame::Fixed(buf) => {
                    self.stats.fixed_sends += 1;
                    (Op::SendFixed { sock: c.sock, buf, sent: c.send_off }, KIND_SEND_FIXED)
                }
                ReplyFrame::Heap(mut buf) => {
                    if c.send_off == 0 {
                        // Coalesce small heap replies into one send.
                        while let Some(ReplyFrame::Heap(next)) = c.sendq.front()
                            && buf.len() + next.len() <= SEND_COALESCE_BYTES
                        {
                            buf.extend_from_slice(next);
                            c.sendq.pop_front();
                        }
                    }
                    (Op::Send { sock: c.sock, buf, sent: c.send_off }, KIND_SEND)
                }
            };
            match core.io.push(op, token(kind, c.generation, slot)) {
                Ok(()) => c.sending = true,
                Err(Op::Send { buf, .. }) => {
                    c.sendq.push_front(ReplyFrame::Heap(buf));
                    self.stall(slot);
                }
                Err(Op::SendFixed { buf, .. }) => {
                    c.sendq.push_front(ReplyFrame::Fixed(buf));
                    self.stall(slot);
                }
                Err(_) => unreachable!("push returns its op"),
            }
        }
        let c = &mut self.conns[slot];
        let drained = !c.sending && c.sendq.is_empty();
        if (c.state == State::Closing && drained) || (c.peer_closed && c.inflight == 0 && drained) {
            self.close_conn(core, slot);
            let c = &self.conns[slot];
            if !c.reading && !c.sending {
                self.free_slot(slot);
            }
            return;
        }
        if c.state != State::Open || c.peer_closed || c.reading || c.inflight >= cfg_inflight || c.request_bytes + c.reply_bytes >= cfg_held
        {
            // A reply or a completion will bring it back here.
            return;
        }
        if blocked || (c.readable && self.recv_inflight_bytes >= RECV_INFLIGHT_BYTES_MAX) {
            return self.stall(slot);
        }
        let op = if c.readable {
            let held = self.take_rbuf(slot);
            let buf = if held.capacity() >= RECV_BUF_BYTES && held.len() < held.capacity() {
                held
            } else {
                // Receive into a full-size buffer, after the bytes kept.
                let mut buf = self.take_buf();
                buf.extend_from_slice(&held);
                if buf.len() == buf.capacity() {
                    buf.reserve(RECV_BUF_BYTES);
                }
                buf
            };
            Op::Recv { sock: self.conns[slot].sock, buf }
        } else {
            Op::PollIn { sock: c.sock }
        };
        let c = &mut self.conns[slot];
        let kind = if matches!(op, Op::Recv { .. }) { KIND_RECV } else { KIND_POLL };
        let recv_bytes = if let Op::Recv { buf, .. } = &op { buf.capacity() } else { 0 };
        match core.io.push(op, token(kind, c.generation, slot)) {
            Ok(()) => {
                c.reading = true;
                if kind == KIND_RECV {
                    c.readable = false;
                    self.recv_inflight_bytes += recv_bytes;
                }
            }
            Err(op) => {
                if let Op::Recv { buf, .. } = op {
                    self.put_rbuf(slot, buf);
                }
                self.stall(slot);
            }
        }
    }

    fn sweep(&mut self, core: &mut Core<UringIo>, now_ns: u64) {
        let header_ns = self.shared.cfg.header_timeout.as_nanos() as u64;
        let idle_ns = self.shared.cfg.idle_timeout.as_nanos() as u64;
        let (inflight_max, held_max) = (self.shared.cfg.inflight_per_conn_max, self.shared.cfg.conn_buffered_bytes_max);
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
                // (a reader that stopped reading counts: its sends stall).
                State::Open if c.inflight == 0 && idle_for > idle_ns => late.push((slot, false)),
                State::Open if c.sending && idle_for > idle_ns => late.push((slot, false)),
                State::Closing if idle_for > header_ns => late.push((slot, false)),
                _ => {}
            }
        }
        for (slot, tell) in late {
            self.stats.timeouts += 1;
            if tell {
                self.conns[slot].rbuf.clear();
                let rbuf = self.take_rbuf(slot);
                self.give_buf(rbuf);
                self.conns[slot].partial_since_ns = None;
                self.fail_conn(slot, ErrorCode::Timeout, "a frame took longer than the header timeout to arrive");
            } else {
                self.close_conn(core, slot);
            }
            self.mark(slot);
        }
        self.evict_stuck_readers(core, now_ns);
    }

    /// A core out of buffer memory reads no socket, its other clients'
    /// included, until bytes are released; a reader that stopped reading
    /// never releases its replies (until the idle timeout, minutes). So
    /// then the connections whose unsent replies made no progress for a
    /// header timeout are closed, the largest holders first, until the core
    /// is under its budget (like Redis's client output buffer limits).
    fn evict_stuck_readers(&mut self, core: &mut Core<UringIo>, now_ns: u64) {
        let budget = self.shared.cfg.core_buffered_bytes_max;
        if self.held_bytes + self.rbuf_bytes < budget {
            return;
        }
        let header_ns = self.shared.cfg.header_timeout.as_nanos() as u64;
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
            self.stats.stuck_readers_closed += 1;
            self.close_conn(core, slot);
            self.mark(slot);
        }
    }

    fn on_control(&mut self, core: &mut Core<UringIo>, now_ns: u64) {
        while let Ok(control) = self.control.try_recv() {
            let (drain, done) = match control {
                Control::Stop { drain, done } => (drain, done),
                Control::Stages { share, reset } => {
                    share.add(&mut self.stages, reset);
                    continue;
                }
                Control::Stats { reply } => {
                    let audits = core.stats_now();
                    let stats = NetStats {
                        held_bytes: self.held_bytes + self.rbuf_bytes,
                        connections: self.conns.len(),
                        pooled_bytes: self.pool_bytes,
                        reply_bufs_free: core.reply_bufs_free(),
                        read_bufs_free: core.read_bufs_free(),
                        ops_in_flight: core.io.in_flight(),
                        reads_from_disk: core.stats.reads_from_disk,
                        audit_overlapping_writes: audits.audit_overlapping_writes,
                        audit_served_beyond_durable: audits.audit_served_beyond_durable,
                        audit_buffer_reuse: audits.audit_buffer_reuse,
                        ..self.stats.clone()
                    };
                    let _ = reply.send(stats);
                    continue;
                }
            };
            self.stopping = Some((now_ns + drain.as_nanos() as u64, done));
            // Long polls are answered now (empty), not at the end of their wait.
            core.close_parking();
            for l in &mut self.listeners {
                if !l.closed {
                    l.closed = true;
                    core.io.close_socket(l.file);
                }
            }
            // Idle connections have only a poll in flight: close them now.
            let idle: Vec<usize> =
                self.conns.iter().filter(|(_, c)| c.inflight == 0 && c.sendq.is_empty() && !c.sending).map(|(s, _)| s).collect();
            for slot in idle {
                self.close_conn(core, slot);
                self.mark(slot);
            }
        }
    }

    fn finish_stop(&mut self, core: &mut Core<UringIo>, now_ns: u64) {
        let Some((deadline_ns, _)) = &self.stopping else { return };
        let quiet = self.conns.iter().all(|(_, c)| c.state == State::Closed || (c.inflight == 0 && c.sendq.is_empty() && !c.sending));
        if quiet || now_ns >= *deadline_ns {
            let open: Vec<usize> = self.conns.iter().filter(|(_, c)| c.state != State::Closed).map(|(s, _)| s).collect();
            for slot in open {
                self.close_conn(core, slot);
                self.mark(slot);
            }
        }
        if self.conns.is_empty() && self.listeners.iter().all(|l| !l.accepting) {
            let (_, done) = self.stopping.take().expect("stopping");
            let _ = done.send(());
            self.finished = true;
        }
    }
}

impl CoreTask<UringIo> for NetCore {
    fn on_reaped(&mut self, core: &mut Core<UringIo>) {
        let now_ns = core.io.now_ns();
        let completions = std::mem::take(&mut core.net_completions);
        for c in completions {
            self.on_completion(core, c, now_ns);
        }
    }

    fn plan(&mut self, core: &mut Core<UringIo>) {
        let now_ns = core.io.now_ns();
        for sock in self.unadopted.drain(..) {
            match core.io.adopt_socket(sock) {
                Ok(file) => self.listeners.push(Listener { file, accepting: false, paused_until_ns: 0, closed: false }),
                Err(e) => tracing::error!(core = self.core_id, %e, "could not adopt a listener"),
            }
        }
        self.on_control(core, now_ns);
        self.deliver_replies(core);
        self.flush_outbox();
        if !self.blocked(core) {
            for slot in std::mem::take(&mut self.stalled) {
                if let Some(c) = self.conns.get_mut(slot) {
                    c.stalled = false;
                }
                self.mark(slot);
            }
        }
        if now_ns >= self.next_sweep_ns {
            self.next_sweep_ns = now_ns + SWEEP_NS;
            self.sweep(core, now_ns);
        }
        // Driving may dispatch requests whose replies come back at once
        // (errors, metadata): go round until nothing changes.
        for _ in 0..4 {
            if self.dirty.is_empty() {
                break;
            }
            for slot in std::mem::take(&mut self.dirty) {
                if let Some(c) = self.conns.get_mut(slot) {
                    c.dirty = false;
                    self.drive(core, slot, now_ns);
                }
            }
            self.deliver_replies(core);
        }
        for (i, l) in self.listeners.iter_mut().enumerate() {
            if !l.accepting && !l.closed && now_ns >= l.paused_until_ns {
                match core.io.push(Op::Accept { listener: l.file }, token(KIND_ACCEPT, 0, i)) {
                    Ok(()) => l.accepting = true,
                    Err(_) => l.paused_until_ns = now_ns + ACCEPT_BACKOFF_NS,
                }
            }
        }
        self.finish_stop(core, now_ns);
    }

    fn wait_hint(&self, now_ns: u64) -> (bool, Option<u64>) {
        let mut timer = self.next_sweep_ns.saturating_sub(now_ns);
        if !self.outbox.is_empty() {
            timer = timer.min(OUTBOX_RETRY_NS);
        }
        for l in &self.listeners {
            if !l.accepting && !l.closed {
                timer = timer.min(l.paused_until_ns.saturating_sub(now_ns).max(1));
            }
        }
        if let Some((deadline, _)) = &self.stopping {
            timer = timer.min(deadline.saturating_sub(now_ns).max(1));
        }
        (!self.dirty.is_empty(), Some(timer))
    }

    fn finished(&self) -> bool {
        self.finished
    }
}

/// Drops a reply frame that is sent or will never be: a registered buffer
/// goes back to its core's pool (dropping it would shrink the pool for good).
fn release_frame(core: &mut Core<UringIo>, frame: ReplyFrame) {
    if let ReplyFrame::Fixed(b) = frame {
        core.give_reply_buf(b);
    }
}

/// Gathers the answers to a Produce of several batches into one reply.
struct ProduceAcc {
    remaining: usize,
    first: Option<u64>,
    last: u64,
    /// The request crosses each stage boundary when its last batch does.
    trace: Option<StageTrace>,
    err: Option<StromError>,
    reply: Option<Replier>,
}

impl ProduceAcc {
    fn add(&mut self, res: Result<AppendAck>) {
        match res {
            Ok(a) => {
                self.first.get_or_insert(a.base_offset);
                self.last = self.last.max(a.last_offset);
                self.trace = Some(self.trace.map_or(a.trace, |t| t.join(a.trace)));
            }
            Err(e) => {
                self.err.get_or_insert(e);
            }
        }
        self.remaining -= 1;
        if self.remaining == 0
            && let Some(r) = self.reply.take()
        {
            match (&self.err, self.first) {
                // Some batches were stored, others refused (the disk filled
                // between them, the log rewound over the rest): DiskFull
                // would claim none was, so the answer is indeterminate.
                (Some(e @ StromError::DiskFull { .. }), Some(_)) => {
                    r.error(ErrorCode::StorageFailed, &format!("only part of this produce was stored: {e}"))
                }
                (Some(e), _) => r.fail(e),
                (None, Some(base_offset)) => {
                    r.produced(self.trace.unwrap_or_default()).ok(&Response::Produce { base_offset, last_offset: self.last })
                }
                (None, None) => r.error(ErrorCode::Internal, "no batch answered"),
            }
        }
    }
}
