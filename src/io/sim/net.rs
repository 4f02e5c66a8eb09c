//! The simulated network: listeners and connected sockets in memory, so
//! that the server's connection code (framing, budgets, timeouts, sends,
//! stop) runs under the simulator's seeds like the storage code does.
//!
//! A test holds the client ends ([`SimConn`]); the core's [`super::SimIo`]
//! holds the server ends, named by [`FileId`]s like real sockets. The model
//! keeps what TCP promises and nothing more: bytes arrive in order, in
//! pieces of any size (the seed picks how much a receive takes and how much
//! a send accepts), each direction buffers at most [`SOCK_BUF_BYTES`] (a
//! reader that stops reading stalls its sender), a close is seen as the end
//! of the stream after the last byte, a reset fails the peer's next op.
use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};

use super::SimRng;
use crate::io::{Completion, FileId, Op};

/// Bytes in flight in one direction of a connection at most (the socket
/// buffers of both ends together).
pub const SOCK_BUF_BYTES: usize = 256 << 10;
/// Connections a listener queues before a connect is refused (the backlog).
pub const BACKLOG: usize = 128;

#[derive(Default)]
struct Sock {
    peer: u32,
    /// Bytes sent to this end, not yet received.
    inbound: VecDeque<u8>,
    /// The peer closed: after `inbound`, the stream ends.
    eof: bool,
    /// The peer reset the connection: this end's next op fails.
    reset: bool,
    /// This end is closed.
    closed: bool,
}

#[derive(Default)]
struct NetState {
    /// Per port: server ends of connections not yet accepted.
    listeners: BTreeMap<u16, VecDeque<u32>>,
    sockets: BTreeMap<u32, Sock>,
    next_sock: u32,
}

/// The network several simulated cores and a test share.
#[derive(Clone, Default)]
pub struct SimNet {
    state: Arc<Mutex<NetState>>,
}

impl SimNet {
    pub fn new() -> SimNet {
        SimNet::default()
    }

    fn lock(&self) -> MutexGuard<'_, NetState> {
        self.state.lock().expect("simulated network")
    }

    /// A client connects to `port`; None when nothing listens there or its
    /// backlog is full (ECONNREFUSED).
    pub fn connect(&self, port: u16) -> Option<SimConn> {
        let mut st = self.lock();
        let queued = st.listeners.get(&port)?.len();
        if queued >= BACKLOG {
            return None;
        }
        let (client, server) = (st.next_sock, st.next_sock + 1);
        st.next_sock += 2;
        st.sockets.insert(client, Sock { peer: server, ..Sock::default() });
        st.sockets.insert(server, Sock { peer: client, ..Sock::default() });
        st.listeners.get_mut(&port).expect("listener").push_back(server);
        Some(SimConn { net: self.clone(), id: client })
    }

    pub(super) fn listen(&self, port: u16) -> bool {
        let mut st = self.lock();
        if st.listeners.contains_key(&port) {
            return false;
        }
        st.listeners.insert(port, VecDeque::new());
        true
    }

    /// Stops listening; connections queued and never accepted are reset.
    pub(super) fn unlisten(&self, port: u16) {
        let mut st = self.lock();
        for s in st.listeners.remove(&port).unwrap_or_default() {
            st.close(s, true);
        }
    }

    /// Whether `op` (on a network endpoint) can complete now.
    pub(super) fn ready(&self, end: End, op: &Op) -> bool {
        let st = self.lock();
        match (end, op) {
            (End::Listener(port), Op::Accept { .. }) => st.listeners.get(&port).is_none_or(|q| !q.is_empty()),
            (End::Sock(id), Op::PollIn { .. } | Op::Recv { .. }) => {
                let s = &st.sockets[&id];
                !s.inbound.is_empty() || s.eof || s.reset
            }
            (End::Sock(id), Op::Send { .. } | Op::SendFixed { .. }) => {
                let s = &st.sockets[&id];
                s.reset || st.sockets.get(&s.peer).is_none_or(|p| p.closed || p.inbound.len() < SOCK_BUF_BYTES)
            }
            _ => true,
        }
    }

    /// Completes a ready network op. An accept names its new server end
    /// `next_file` and returns that end's socket, for the caller to record.
    pub(super) fn complete(
        &self,
        end: End,
        token: u64,
        op: Op,
        rng: &mut SimRng,
        next_file: FileId,
    ) -> (Completion, Option<Op>, Option<u32>) {
        let mut st = self.lock();
        let c = |result, buf, net_buf, more| Completion { token, result, buf, net_buf, more };
        match (end, op) {
            (End::Listener(port), op @ Op::Accept { .. }) => match st.listeners.get_mut(&port).and_then(|q| q.pop_front()) {
                Some(server) => (c(Ok(next_file.0), None, None, true), Some(op), Some(server)),
                None => (c(Err(libc::ECANCELED), None, None, false), None, None),
            },
            (End::Sock(_), Op::PollIn { .. }) => (c(Ok(1), None, None, false), None, None),
            (End::Sock(id), Op::Recv { mut buf, .. }) => {
                let s = st.sockets.get_mut(&id).expect("socket");
                if s.reset {
                    return (c(Err(libc::ECONNRESET), None, Some(buf), false), None, None);
                }
                let room = buf.capacity() - buf.len();
                let n = s.inbound.len().min(room);
                // A receive takes any non-empty prefix of what arrived.
                let n = if n > 1 { 1 + rng.below(n as u64) as usize } else { n };
                buf.extend(s.inbound.drain(..n));
                (c(Ok(n as u32), None, Some(buf), false), None, None)
            }
            (End::Sock(id), Op::Send { buf, sent, .. }) => {
                let r = st.send(id, &buf[sent..], rng);
                (c(r, None, Some(buf), false), None, None)
            }
            (End::Sock(id), Op::SendFixed { buf, sent, .. }) => {
                let r = st.send(id, &buf.as_slice()[sent..], rng);
                (c(r, Some(buf), None, false), None, None)
            }
            (_, op) => unreachable!("{op:?} is not a network op"),
        }
    }

    /// Closes a server end: its peer sees the end of the stream.
    pub(super) fn close(&self, id: u32) {
        self.lock().close(id, false);
    }

    /// Server ends of connected sockets open now (for tests of leaks).
    pub fn open_server_sockets(&self) -> usize {
        self.lock().sockets.values().filter(|s| !s.closed).count()
    }
}

impl NetState {
    fn send(&mut self, id: u32, bytes: &[u8], rng: &mut SimRng) -> std::result::Result<u32, i32> {
        let s = &self.sockets[&id];
        if s.reset {
            return Err(libc::ECONNRESET);
        }
        let peer = s.peer;
        let p = self.sockets.get_mut(&peer).expect("peer");
        if p.closed {
            return Err(libc::EPIPE);
        }
        let room = SOCK_BUF_BYTES.saturating_sub(p.inbound.len()).min(bytes.len());
        // A send accepts any non-empty prefix that fits the buffers.
        let n = if room > 1 { 1 + rng.below(room as u64) as usize } else { room };
        p.inbound.extend(&bytes[..n]);
        Ok(n as u32)
    }

    fn close(&mut self, id: u32, reset: bool) {
        let Some(s) = self.sockets.get_mut(&id) else { return };
        s.closed = true;
        s.inbound.clear();
        let peer = s.peer;
        if let Some(p) = self.sockets.get_mut(&peer) {
            p.eof = true;
            p.reset |= reset;
            if p.closed {
                self.sockets.remove(&peer);
                self.sockets.remove(&id);
            }
        }
    }
}

/// A network endpoint of a [`super::SimIo`]: a listener's port or a socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum End {
    Listener(u16),
    Sock(u32),
}

/// A test's end of a simulated connection. Never blocks: the test drives
/// the cores' ticks between its calls.
pub struct SimConn {
    net: SimNet,
    id: u32,
}

impl SimConn {
    /// Queues as many of `bytes` as the buffers take; returns how many.
    pub fn send(&self, bytes: &[u8]) -> usize {
        let mut st = self.net.lock();
        let peer = st.sockets[&self.id].peer;
        match st.sockets.get_mut(&peer) {
            Some(p) if !p.closed => {
                let n = SOCK_BUF_BYTES.saturating_sub(p.inbound.len()).min(bytes.len());
                p.inbound.extend(&bytes[..n]);
                n
            }
            _ => 0,
        }
    }

    /// Moves every byte that arrived into `out`; returns how many.
    pub fn recv(&self, out: &mut Vec<u8>) -> usize {
        let mut st = self.net.lock();
        let s = st.sockets.get_mut(&self.id).expect("socket");
        let n = s.inbound.len();
        out.extend(s.inbound.drain(..));
        n
    }

    /// The server closed (or reset) this connection and every byte it sent was received.
    pub fn ended(&self) -> bool {
        let st = self.net.lock();
        let s = &st.sockets[&self.id];
        (s.eof || s.reset) && s.inbound.is_empty()
    }

    /// Closes the client end (FIN, or RST with `reset`).
    pub fn close(self, reset: bool) {
        self.net.lock().close(self.id, reset);
    }
}
