//! Accepting connections on a listener the ring polls (see `Op::Accept`
//! in `sqe_for`): the accepts themselves, without blocking, one completion
//! each. No unsafe code here: the ring's contract is `uring.rs`'s.
use super::{ACCEPTS_PER_POLL_MAX, UringIo};
use crate::io::{Completion, FileId};

impl UringIo {
    /// Accepts the connections waiting on a listener (non-blocking since
    /// its adoption), at most `ACCEPTS_PER_POLL_MAX`, one completion each
    /// (with `more`), each socket adopted into the file table; returns the
    /// errno that stopped it (EAGAIN: none left for now).
    pub(super) fn accept_waiting(&mut self, listener: FileId, token: u64) -> i32 {
        for _ in 0..ACCEPTS_PER_POLL_MAX {
            let f = &self.files[listener.0 as usize];
            if f.closing {
                return libc::ECANCELED;
            }
            // Accepted sockets stay blocking (accept4 does not pass
            // O_NONBLOCK on): io_uring then waits for readiness itself.
            match socket2::SockRef::from(&f.file).accept() {
                Ok((sock, _)) => {
                    let peer_local = crate::platform::peer_is_local(&sock);
                    let file = self.add_socket(sock.into());
                    self.files[file.0 as usize].peer_local = peer_local;
                    self.ready.push(Completion { token, result: Ok(file.0), buf: None, net_buf: None, more: true });
                }
                // That one peer gave up before it was accepted.
                Err(e) if e.raw_os_error() == Some(libc::ECONNABORTED) => {}
                Err(e) => return e.raw_os_error().unwrap_or(libc::EIO),
            }
        }
        libc::EAGAIN
    }
}
