//! Receiving: buffers, framing, and the receive-side op of a connection.
//!
//! Idle, a connection has one one-shot `POLL_ADD` in flight and no buffer.
//! When it fires, a buffer comes from the core's pool and one `RECV` fills
//! it; a receive that filled its buffer is followed directly by another.
//! Whole frames (as the codec delimits them) are dispatched from the
//! buffer in place; a frame still arriving keeps its bytes, and memory
//! follows the bytes that arrived, not the length a peer declared.
use super::codec::Codec;
use super::conn::State;
use super::task::NetCore;
use crate::core::task::TaskCore;
use crate::io::token::{OpKind, Token};
use crate::io::{Io, Op};

/// A receive buffer's first size; it grows to hold a frame that is larger.
pub(super) const RECV_BUF_BYTES: usize = 64 << 10;
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

/// Receive buffers kept for reuse on one core.
#[derive(Default)]
pub(super) struct RecvPool {
    bufs: Vec<Vec<u8>>,
    bytes: usize,
}

impl RecvPool {
    /// Bytes kept now.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    pub fn take(&mut self) -> Vec<u8> {
        match self.bufs.pop() {
            Some(b) => {
                self.bytes -= b.capacity();
                b
            }
            None => Vec::with_capacity(RECV_BUF_BYTES),
        }
    }

    pub fn give(&mut self, mut b: Vec<u8>) {
        if b.capacity() >= RECV_BUF_BYTES && self.bytes + b.capacity() <= POOL_BYTES_MAX {
            b.clear();
            // A buffer that grew for one large frame goes back to the first
            // size: the next connection to take it would be charged its
            // whole capacity (a pipelining client held 34.6 MB against its
            // 32 MiB cap with a 1 MiB buffer another connection had grown).
            b.shrink_to(RECV_BUF_BYTES);
            self.bytes += b.capacity();
            self.bufs.push(b);
        }
    }
}

impl<C: Codec> NetCore<C> {
    /// Gives a connection its receive buffer back, charging its capacity to
    /// the core: bytes of a frame still arriving count against
    /// `core_buffered_bytes_max` like requests and replies do.
    pub(super) fn put_rbuf(&mut self, slot: usize, buf: Vec<u8>) {
        let c = &mut self.conns[slot];
        self.rbuf_bytes = self.rbuf_bytes - c.rbuf_charged + buf.capacity();
        c.rbuf_charged = buf.capacity();
        c.rbuf = buf;
    }

    pub(super) fn take_rbuf(&mut self, slot: usize) -> Vec<u8> {
        let c = &mut self.conns[slot];
        self.rbuf_bytes -= c.rbuf_charged;
        c.rbuf_charged = 0;
        std::mem::take(&mut c.rbuf)
    }

    pub(super) fn on_poll<I: Io>(&mut self, core: &mut TaskCore<'_, I>, slot: usize, result: std::result::Result<u32, i32>) {
        let conn = &mut self.conns[slot];
        conn.reading = false;
        match result {
            Ok(_) => conn.readable = true,
            Err(errno) => return self.on_net_error(core, slot, errno),
        }
        self.mark(slot);
    }

    pub(super) fn on_recv<I: Io>(
        &mut self,
        core: &mut TaskCore<'_, I>,
        slot: usize,
        result: std::result::Result<u32, i32>,
        buf: Vec<u8>,
        now_ns: u64,
    ) {
        let conn = &mut self.conns[slot];
        conn.reading = false;
        self.recv_inflight_bytes -= buf.capacity();
        if conn.state == State::Closed {
            self.pool.give(buf);
            return self.mark(slot);
        }
        match result {
            Ok(0) => {
                conn.peer_closed = true;
                self.put_rbuf(slot, buf);
            }
            Ok(n) => {
                self.metrics.received_bytes += u64::from(n);
                // A receive that filled its buffer probably left more behind.
                conn.readable = buf.len() == buf.capacity();
                conn.last_active_ns = now_ns;
                conn.recv_done_ns = core.stage_ns(now_ns);
                self.put_rbuf(slot, buf);
                self.parse(core, slot, now_ns);
            }
            Err(errno) => {
                self.put_rbuf(slot, buf);
                return self.on_net_error(core, slot, errno);
            }
        }
        self.mark(slot);
    }

    /// True when the connection may parse what it holds now.
    pub(super) fn may_parse<I: Io>(&self, core: &TaskCore<'_, I>, slot: usize) -> bool {
        let c = &self.conns[slot];
        // Where replies go in order, a request that may not overlap those in
        // flight waits for them (checked frame by frame in `parse`).
        let turn = c.inflight == 0 || c.overlapping || !self.codec_of(slot).replies_in_order();
        c.state == State::Open && c.close_after_seq.is_none() && turn && self.under_conn_limits(slot) && !self.blocked(core)
    }

    /// Dispatches every whole frame in the connection's buffer that its
    /// limits allow; the rest waits there.
    pub(super) fn parse<I: Io>(&mut self, core: &mut TaskCore<'_, I>, slot: usize, now_ns: u64) {
        let mut rbuf = self.take_rbuf(slot);
        let mut pos = 0;
        let frame_max = self.shared.cfg.frame_bytes_max;
        while self.may_parse(core, slot) {
            match self.codec_of(slot).frame_len(&rbuf[pos..], frame_max) {
                Ok(None) => break,
                Ok(Some(total)) if rbuf.len() - pos < total => {
                    if pos > 0 {
                        rbuf.drain(..pos);
                        pos = 0;
                    }
                    grow_for_frame(&mut rbuf, total);
                    break;
                }
                Ok(Some(total)) => {
                    let frame = &rbuf[pos..pos + total];
                    if self.codec_of(slot).replies_in_order() {
                        let overlaps = self.codec_of(slot).pipelines(frame);
                        let c = &mut self.conns[slot];
                        if c.inflight > 0 && !overlaps {
                            // Its turn comes when those in flight are answered.
                            c.overlapping = false;
                            break;
                        }
                        c.overlapping = overlaps;
                    }
                    self.dispatch(core, slot, frame);
                    pos += total;
                }
                Err(e) => {
                    // Framing is lost: nothing after this can be trusted.
                    self.metrics.frame_errors += 1;
                    self.fail_conn(slot, e);
                    rbuf.clear();
                    pos = 0;
                    break;
                }
            }
        }
        self.keep_rest(slot, rbuf, pos, now_ns);
    }

    /// Keeps the bytes after `pos` (a frame still arriving) and notes since
    /// when it has been arriving.
    fn keep_rest(&mut self, slot: usize, mut rbuf: Vec<u8>, pos: usize, now_ns: u64) {
        let progressed = pos > 0;
        rbuf.drain(..pos);
        let c = &mut self.conns[slot];
        c.partial_since_ns = match (rbuf.is_empty(), progressed) {
            (true, _) => None,
            (false, true) => Some(now_ns),
            (false, false) => Some(c.partial_since_ns.unwrap_or(now_ns)),
        };
        if rbuf.is_empty() {
            self.pool.give(rbuf);
        } else if rbuf.len() <= PARTIAL_SMALL_BYTES && rbuf.capacity() > 2 * PARTIAL_SMALL_BYTES {
            // A few bytes of a frame (a slow or hostile sender): keep just
            // them; the big buffer goes back to the pool until data arrives.
            let small = rbuf.to_vec();
            self.pool.give(rbuf);
            self.put_rbuf(slot, small);
        } else {
            self.put_rbuf(slot, rbuf);
        }
    }

    /// Starts the connection's next poll or receive, if it may read now.
    pub(super) fn read_next<I: Io>(&mut self, core: &mut TaskCore<'_, I>, slot: usize, blocked: bool) {
        let c = &self.conns[slot];
        if c.state != State::Open || c.peer_closed || c.reading || !self.under_conn_limits(slot) {
            // A reply or a completion will bring it back here.
            return;
        }
        if blocked || (c.readable && self.recv_inflight_bytes >= RECV_INFLIGHT_BYTES_MAX) {
            return self.stall(slot);
        }
        let op = if c.readable {
            let held = self.take_rbuf(slot);
            Op::Recv { sock: self.conns[slot].sock, buf: self.recv_buf(held) }
        } else {
            Op::PollIn { sock: c.sock }
        };
        let c = &mut self.conns[slot];
        let kind = if matches!(op, Op::Recv { .. }) { OpKind::Recv } else { OpKind::Poll };
        let recv_bytes = if let Op::Recv { buf, .. } = &op { buf.capacity() } else { 0 };
        match core.push(op, Token::new(kind, c.generation, slot as u32).pack()) {
            Ok(()) => {
                c.reading = true;
                if kind == OpKind::Recv {
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

    /// The buffer a receive fills: the one holding a frame's first bytes if
    /// it has room, else a full-size one after the bytes kept.
    fn recv_buf(&mut self, held: Vec<u8>) -> Vec<u8> {
        if held.capacity() >= RECV_BUF_BYTES && held.len() < held.capacity() {
            return held;
        }
        let mut buf = self.pool.take();
        buf.extend_from_slice(&held);
        if buf.len() == buf.capacity() {
            buf.reserve(RECV_BUF_BYTES);
        }
        buf
    }
}

/// Grows a buffer that holds the first `rbuf.len()` bytes of a frame of
/// `total` bytes: only a buffer the frame has (nearly) filled, and at most
/// twofold, so memory follows the bytes that arrived, not the length a
/// peer declared (a trickled 8 MiB frame costs what it sent).
fn grow_for_frame(rbuf: &mut Vec<u8>, total: usize) {
    let missing = total - rbuf.len();
    if rbuf.capacity() - rbuf.len() < missing.min(RECV_BUF_BYTES / 2) {
        rbuf.reserve(missing.min(rbuf.capacity().max(RECV_BUF_BYTES)));
    }
}
