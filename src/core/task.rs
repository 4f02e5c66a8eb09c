//! What runs beside a core on its ring (the server's connections), and the
//! narrow view of the core it is given.
use super::{Core, Request};
use crate::buf::AlignedBuf;
use crate::error::Result;
use crate::io::{Completion, FileId, Io, Op};
use crate::metrics::Metrics;

/// What the task that will run beside a core needs the core to have before
/// it starts. A server derives it from its own configuration
/// (`ServerConfig::task_needs`); the embedded engine needs none.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TaskNeeds {
    /// Registered buffers Fetch replies are assembled in and sent from
    /// (`SEND_ZC` naming the buffer), each `write_buf_bytes`; when all are
    /// in use a reply is built on the heap.
    pub reply_bufs: usize,
    /// Op-table slots for the task's network ops, beyond the disk's.
    pub net_ops: usize,
}

/// Work that runs on a core's thread and ring beside its logs: the server's
/// connections. The tick calls it at fixed points, so that requests it
/// takes are staged before the core plans its commits. It reaches its core
/// only through [`TaskCore`].
pub trait CoreTask<I: Io>: Send {
    /// After the core reaped completions (the task's own are in
    /// [`TaskCore::take_net_completions`]).
    fn on_reaped(&mut self, core: &mut TaskCore<'_, I>);
    /// After the core planned its I/O: queue network ops, deliver replies.
    fn plan(&mut self, core: &mut TaskCore<'_, I>);
    /// Nanoseconds (on the core's clock) until the task's next timer, and
    /// whether it has work that must not wait for a completion.
    fn wait_hint(&self, now_ns: u64) -> (bool, Option<u64>);
    /// The task has finished and can be dropped.
    fn finished(&self) -> bool;
}

/// The whole of a core that a [`CoreTask`] may use: take requests, push
/// and cancel its own network ops, give back registered reply buffers,
/// read the clocks and the core's metrics. Kept narrow and in one
/// place, so that the core's surface toward the server is this list.
pub struct TaskCore<'a, I: Io> {
    core: &'a mut Core<I>,
}

impl<'a, I: Io> TaskCore<'a, I> {
    pub fn new(core: &'a mut Core<I>) -> Self {
        TaskCore { core }
    }

    /// Takes a request now: an append joins this tick's group commit.
    pub fn handle(&mut self, req: Request) {
        self.core.handle(req)
    }

    /// True while the core defers requests (out of write buffers or read slots).
    pub fn backpressured(&self) -> bool {
        self.core.backpressured()
    }

    /// The I/O clock, in ns.
    pub fn now_ns(&self) -> u64 {
        self.core.io.now_ns()
    }

    /// An instant of the I/O clock on the engine's stage clock.
    pub fn stage_ns(&self, io_ns: u64) -> u64 {
        io_ns + self.core.clock_offset_ns()
    }

    /// Now on the engine's stage clock.
    pub fn clock_ns(&self) -> u64 {
        self.core.clock_ns()
    }

    /// Queues a network op; gives it back when the op table is full.
    pub fn push(&mut self, op: Op, token: u64) -> std::result::Result<(), Op> {
        self.core.io.push(op, token)
    }

    pub fn adopt_socket(&mut self, sock: std::os::fd::OwnedFd) -> Result<FileId> {
        self.core.io.adopt_socket(sock)
    }

    pub fn close_socket(&mut self, sock: FileId) {
        self.core.io.close_socket(sock)
    }

    /// A connection's remote address, as its accept gave it.
    pub fn peer_addr(&self, sock: FileId) -> Option<std::net::SocketAddr> {
        self.core.io.peer_addr(sock)
    }

    /// The completions of the task's ops reaped this tick.
    pub fn take_net_completions(&mut self) -> Vec<Completion> {
        std::mem::take(&mut self.core.net_completions)
    }

    /// Takes back a registered reply buffer whose send completed.
    pub fn give_reply_buf(&mut self, buf: AlignedBuf) {
        self.core.give_reply_buf(buf)
    }

    /// Answers every long poll now and parks no more (the server stops).
    pub fn close_parking(&mut self) {
        self.core.close_parking()
    }

    /// The core's metrics registry now (its gauges sampled now), for the
    /// task to add its own sections to.
    pub fn metrics(&self) -> Metrics {
        self.core.metrics()
    }
}
