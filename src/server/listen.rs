//! Listening sockets: bound at start (one per core on the shared address
//! with `SO_REUSEPORT`, plus a port of each core's own), adopted by each
//! core's ring, and kept accepting with a multishot `ACCEPT`.
use std::net::SocketAddr;

use socket2::{Domain, Protocol, Socket, Type};

use super::codec::{Codec, ConnError, ConnErrorKind};
use super::conn::{ACCEPT_BACKOFF_NS, Conn, Listener, Peer};
use super::task::NetCore;
use crate::core::task::TaskCore;
use crate::error::{IoOp, Result, StromError};
use crate::io::token::{OWNER_MASK, OpKind, Token};
use crate::io::{FileId, Io, Op};

/// Pending connections the kernel queues per listener.
const LISTEN_BACKLOG: i32 = 4096;
/// Descriptors a server needs beside its connections: listeners, segment
/// files, the ring, eventfds, the offsets and catalog files.
const FDS_BESIDE_CONNECTIONS: u64 = 256;

/// Each core's listeners, in core order, and the shared address as bound.
pub(super) struct Bound {
    pub per_core: Vec<Vec<Socket>>,
    pub local_addr: SocketAddr,
    /// Each core's own address ("" when direct ports are off).
    pub core_addrs: Vec<String>,
}

/// A listening socket handed to a core's server task.
pub(crate) enum ListenSock {
    /// A socket of the OS, adopted into the core's ring on the task's first tick.
    Os(std::os::fd::OwnedFd),
    /// A listener already in the ring's file table (the simulator's).
    InRing(crate::io::FileId),
}

/// Binds a socket per core on `addr` (shared by the kernel among them), and
/// with `direct_ports` one more per core on an ephemeral port of the same IP.
pub(super) fn bind(addr: SocketAddr, cores: usize, direct_ports: bool) -> Result<Bound> {
    if addr.port() != 0 {
        // Another process's SO_REUSEPORT listener on this port would
        // silently share our connections: bind once without it first,
        // so that an address in use is refused, loudly. Bind only, never
        // listen: the kernel would complete the handshakes of clients
        // retrying while we start into the probe's queue, and closing
        // it would reset them (ECONNRESET). Unlistened, they are refused.
        drop(bound_socket(addr, false)?);
    }
    let mut per_core = Vec::new();
    let mut local_addr = addr;
    for _ in 0..cores {
        let l = listen(local_addr, true)?;
        local_addr = l.local_addr().ok().and_then(|a| a.as_socket()).unwrap_or(local_addr);
        per_core.push(vec![l]);
    }
    let mut core_addrs = Vec::new();
    for listeners in &mut per_core {
        if direct_ports {
            let l = listen(SocketAddr::new(local_addr.ip(), 0), false)?;
            core_addrs.push(l.local_addr().ok().and_then(|a| a.as_socket()).map(|a| a.to_string()).unwrap_or_default());
            listeners.push(l);
        } else {
            core_addrs.push(String::new());
        }
    }
    Ok(Bound { per_core, local_addr, core_addrs })
}

/// One SO_REUSEPORT listener per core on `addr` (a second protocol's),
/// and the address they share (port 0 resolved).
pub(super) fn bind_shared(addr: SocketAddr, cores: usize) -> Result<(Vec<Socket>, SocketAddr)> {
    if addr.port() != 0 {
        // As in `bind`: an address in use is refused, loudly.
        drop(bound_socket(addr, false)?);
    }
    let mut out = Vec::with_capacity(cores);
    let mut local_addr = addr;
    for _ in 0..cores {
        let l = listen(local_addr, true)?;
        local_addr = l.local_addr().ok().and_then(|a| a.as_socket()).unwrap_or(local_addr);
        out.push(l);
    }
    Ok((out, local_addr))
}

/// A listening TCP socket; `shared` ones use SO_REUSEPORT so that every
/// core can listen on the same address.
fn listen(addr: SocketAddr, shared: bool) -> Result<Socket> {
    let s = bound_socket(addr, shared)?;
    s.listen(LISTEN_BACKLOG).map_err(|e| StromError::io(IoOp::Listen, addr.to_string(), &e))?;
    Ok(s)
}

/// A TCP socket bound to `addr`, as [`listen`] sets it up, not yet listening.
fn bound_socket(addr: SocketAddr, shared: bool) -> Result<Socket> {
    let err = |e: std::io::Error| StromError::io(IoOp::Listen, addr.to_string(), &e);
    let s = Socket::new(Domain::for_address(addr), Type::STREAM.cloexec(), Some(Protocol::TCP)).map_err(err)?;
    s.set_reuse_address(true).map_err(err)?;
    // Accepted sockets inherit TCP_NODELAY from the listener (Linux copies
    // it). Without it, a small pipelined reply waits behind an unacknowledged
    // one for the peer's delayed ACK: tens of milliseconds.
    s.set_tcp_nodelay(true).map_err(err)?;
    if shared {
        s.set_reuse_port(true).map_err(err)?;
    }
    s.bind(&addr.into()).map_err(err)?;
    Ok(s)
}

/// Every connection is a descriptor, and the usual soft limit (1024) is far
/// below `connections_max`: past it accepts fail with EMFILE and accepting
/// pauses, so the configured cap would never be reached. Raises the soft
/// limit to the hard one, and warns when even that is too low.
pub(super) fn raise_open_files_limit(connections_max: usize) {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    let want = connections_max as u64 + FDS_BESIDE_CONNECTIONS;
    let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE) else { return };
    if soft < want.min(hard) && setrlimit(Resource::RLIMIT_NOFILE, want.min(hard), hard).is_err() {
        tracing::warn!(soft, hard, "could not raise RLIMIT_NOFILE");
    }
    if hard < want {
        tracing::warn!(
            hard,
            connections_max,
            "RLIMIT_NOFILE's hard limit is below connections_max plus {FDS_BESIDE_CONNECTIONS}: connections past it wait (raise it with ulimit -Hn)"
        );
    }
}

impl<C: Codec> NetCore<C> {
    /// Takes the sockets handed over at start into the ring (first tick).
    pub(super) fn adopt_listeners<I: Io>(&mut self, core: &mut TaskCore<'_, I>) {
        for (sock, codec) in self.unadopted.drain(..) {
            let adopted = match sock {
                ListenSock::Os(fd) => core.adopt_socket(fd),
                ListenSock::InRing(file) => Ok(file),
            };
            match adopted {
                Ok(file) => self.listeners.push(Listener { file, codec, accepting: false, paused_until_ns: 0, closed: false }),
                Err(e) => tracing::error!(core = self.core_id, %e, "could not adopt a listener"),
            }
        }
    }

    /// Re-arms the accept of every open listener whose accept ended (and
    /// whose pause, if any, is over).
    pub(super) fn arm_accepts<I: Io>(&mut self, core: &mut TaskCore<'_, I>, now_ns: u64) {
        for (i, l) in self.listeners.iter_mut().enumerate() {
            if !l.accepting && !l.closed && now_ns >= l.paused_until_ns {
                match core.push(Op::Accept { listener: l.file }, Token::new(OpKind::Accept, 0, i as u32).pack()) {
                    Ok(()) => l.accepting = true,
                    Err(_) => l.paused_until_ns = now_ns + ACCEPT_BACKOFF_NS,
                }
            }
        }
    }

    pub(super) fn on_accept<I: Io>(
        &mut self,
        core: &mut TaskCore<'_, I>,
        index: usize,
        result: std::result::Result<u32, i32>,
        more: bool,
        now_ns: u64,
    ) {
        let l = &mut self.listeners[index];
        let codec = l.codec;
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
            core.close_socket(sock);
            return;
        }
        let connections_max = self.shared.live.connections_max();
        let counted = self.shared.connections.fetch_add(1, std::sync::atomic::Ordering::Relaxed) < connections_max;
        if !counted {
            self.shared.connections.fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
        }
        self.next_generation = self.next_generation.wrapping_add(1);
        let slot = self.conns.insert(Conn::new(sock, self.next_generation & OWNER_MASK, counted, now_ns));
        self.conns[slot].codec = codec;
        self.conns[slot].peer = Peer(core.peer_addr(sock));
        if counted {
            self.metrics.accepted += 1;
        } else {
            self.metrics.refused_connections += 1;
            let message = format!("more than {connections_max} connections");
            self.fail_conn(slot, ConnError { kind: ConnErrorKind::TooManyConnections, message });
        }
        self.mark(slot);
    }
}
