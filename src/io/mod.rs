//! The seam between a core and the outside world: disk I/O, time and wake-ups.
//!
//! A core is generic over [`Io`], so the same code runs on io_uring
//! ([`uring::UringIo`]) and on a deterministic simulated disk
//! ([`sim::SimIo`]) driven by a seed. Asynchronous operations own their
//! buffer from [`Io::push`] until their completion hands it back: that is
//! the whole memory-safety story of the data path, and both backends keep it.
//!
//! Blocking file-system calls (create, rename, sync a directory) are rare:
//! start-up, segment rolls, checkpoints and retention. They go through the
//! seam too, so the simulator can crash between any two of them.
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use crate::buf::AlignedBuf;
use crate::error::Result;

pub mod fs;
pub mod sim;
pub mod token;
pub mod uring;

/// A file opened through the seam: an index in the backend's file table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FileId(pub u32);

/// An asynchronous operation. Each one owns its buffer until it completes.
#[derive(Debug)]
pub enum Op {
    /// Writes `buf.as_slice()` at byte `pos` (both block-aligned), with
    /// `WRITE_FIXED` when the buffer is registered.
    Write { file: FileId, pos: u64, buf: AlignedBuf },
    /// `fdatasync`: makes durable every write to `file` that completed
    /// before this was submitted (and no write still in flight).
    Fsync { file: FileId },
    /// Reads `len` bytes (block multiple) at `pos` (block-aligned) into
    /// `buf` with `READ_FIXED` when registered; on completion `buf.len()` is
    /// the byte count read (short at end of file).
    Read { file: FileId, pos: u64, len: usize, buf: AlignedBuf },
    /// Accepts connections on a listening socket, multishot: one completion
    /// per connection, each with the new socket's [`FileId`] number (the
    /// backend adopts it) and `more` set while the op goes on. It ends with
    /// an errno (EAGAIN once no connection waits) and is pushed again.
    Accept { listener: FileId },
    /// Completes once `sock` is readable (or closed); one-shot, so an idle
    /// connection holds no buffer, only this op.
    PollIn { sock: FileId },
    /// Receives into the spare capacity of `buf` (`buf.len()..capacity`);
    /// on completion `buf.len()` has grown by the bytes received.
    Recv { sock: FileId, buf: Vec<u8> },
    /// Sends `buf[sent..]`; the result is the bytes sent (maybe fewer).
    Send { sock: FileId, buf: Vec<u8>, sent: usize },
    /// Sends `buf.as_slice()[sent..]` from a core's reply buffer: straight
    /// from it when it is registered (`SEND_ZC` naming its index), else by a
    /// plain `SEND`, which copies it (a zero-copy send of an unregistered
    /// buffer would pin its pages against the same RLIMIT_MEMLOCK that left
    /// it unregistered; to a peer on this host, `platform::peer_is_local`,
    /// the kernel would copy it anyway). The buffer comes back, in the op's
    /// one completion, only once the kernel no longer reads it.
    SendFixed { sock: FileId, buf: AlignedBuf, sent: usize },
}

/// Buffer ops (writes, reads, sends of an [`AlignedBuf`]) by the kind of
/// opcode they went out as: fixed (the buffer is registered: `WRITE_FIXED`,
/// `READ_FIXED`, `SEND_ZC` naming it) or plain (`WRITE`, `READ`, `SEND`).
/// Both backends count them, so tests see which path a buffer took. A
/// registered buffer sent to a peer on this host counts as fixed, though it
/// goes by plain `SEND` (see [`Op::SendFixed`]): the count is of buffers.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct OpCounts {
    pub fixed_ops: u64,
    pub plain_ops: u64,
}

impl OpCounts {
    /// Counts `op` if it is a buffer op.
    pub fn count(&mut self, op: &Op) {
        match op {
            Op::Write { buf, .. } | Op::Read { buf, .. } | Op::SendFixed { buf, .. } => match buf.fixed_index() {
                Some(_) => self.fixed_ops += 1,
                None => self.plain_ops += 1,
            },
            _ => {}
        }
    }
}

/// The end of an [`Op`]: its caller token, its result and its buffer back.
#[derive(Debug)]
pub struct Completion {
    pub token: u64,
    /// Bytes transferred (0 for fsync), or a positive errno.
    pub result: std::result::Result<u32, i32>,
    /// The op's buffer, returned to its owner (None for fsync and network ops).
    pub buf: Option<AlignedBuf>,
    /// A network op's buffer (Recv, Send), returned to its owner.
    pub net_buf: Option<Vec<u8>>,
    /// A multishot op goes on after this completion: more will come with
    /// the same token, and the op still counts as in flight.
    pub more: bool,
}

/// Wakes a core blocked in [`Io::wait`] from another thread.
pub trait Waker: Send + Sync {
    fn wake(&self);
}

/// What a core needs from the outside world.
pub trait Io {
    /// Monotonic nanoseconds (virtual time in the simulator).
    fn now_ns(&self) -> u64;

    /// Wall-clock milliseconds since the Unix epoch: the clock producers
    /// stamp batches with, which time retention compares them to. The
    /// simulator derives it from its virtual clock, so a seed replays it.
    fn wall_ms(&self) -> i64;

    /// Queues `op` for submission at the next [`Io::wait`]; `token` comes
    /// back in its completion. Gives the op back when the op table is full
    /// (the caller pushes back on its clients instead of growing).
    fn push(&mut self, op: Op, token: u64) -> std::result::Result<(), Op>;

    /// Submits what is queued, then blocks until at least `min_complete`
    /// completions are ready, `timeout` passes, or a [`Waker`] fires.
    fn wait(&mut self, min_complete: usize, timeout: Option<Duration>) -> Result<()>;

    /// Moves every ready completion into `out`.
    fn reap(&mut self, out: &mut Vec<Completion>);

    /// Operations pushed and not yet reaped.
    fn in_flight(&self) -> usize;

    /// A handle other threads use to end a [`Io::wait`] early.
    fn waker(&self) -> Arc<dyn Waker>;

    /// Registers `bufs` with the kernel for fixed I/O and records each
    /// one's index in it. Called once per core at start-up, with the
    /// buffers its registration plan names (maybe not all, maybe none):
    /// ops on the others go out as plain ops.
    fn register_buffers(&mut self, bufs: &mut [AlignedBuf]) -> Result<()>;

    /// Creates a new file for O_DIRECT read/write (fails if it exists). It is
    /// not durable until [`Io::sync_dir`] on its directory.
    fn create(&mut self, path: &Path) -> Result<FileId>;
    /// Opens an existing file for O_DIRECT reads (and writes if `writable`).
    fn open(&mut self, path: &Path, writable: bool) -> Result<FileId>;
    fn close(&mut self, file: FileId);
    /// Takes a socket (listening or connected) into the file table, so that
    /// network ops can name it and it is closed only after its last op.
    /// The simulator has no network and refuses.
    fn adopt_socket(&mut self, sock: std::os::fd::OwnedFd) -> Result<FileId>;
    /// Cancels every op in flight on a socket (their completions still
    /// arrive, with ECANCELED or what they had done), then closes it once
    /// the last one is reaped.
    fn close_socket(&mut self, sock: FileId);
    /// The remote address of a connected socket (getpeername: the server
    /// asks once, at accept, for log lines naming a client); None where
    /// unknown (the simulator's network has no addresses).
    fn peer_addr(&self, _sock: FileId) -> Option<std::net::SocketAddr> {
        None
    }
    fn file_len(&mut self, file: FileId) -> Result<u64>;
    /// Blocking aligned read, for recovery: like [`Op::Read`].
    fn read_at(&mut self, file: FileId, pos: u64, len: usize, buf: &mut AlignedBuf) -> Result<usize>;
    /// Blocking fdatasync of a whole file, for recovery: what recovery
    /// accepts must be durable before anyone may read it.
    fn sync_file(&mut self, file: FileId) -> Result<()>;
    /// Removes a file; the removal is durable after [`Io::sync_dir`].
    fn remove(&mut self, path: &Path) -> Result<()>;
    /// Renames `from` to `to` in the same directory (replacing nothing: `to`
    /// must not exist); open [`FileId`]s of the file stay valid. Durable
    /// after [`Io::sync_dir`]. Segment rolls and retention use it to reuse
    /// written space instead of allocating new space.
    fn rename(&mut self, from: &Path, to: &Path) -> Result<()>;
    /// fsyncs a directory, making creations and removals in it durable.
    fn sync_dir(&mut self, dir: &Path) -> Result<()>;
    /// Creates a directory and its parents (durable after syncing the parent).
    fn create_dir_all(&mut self, dir: &Path) -> Result<()>;
    /// Names of the entries of `dir`, sorted.
    fn list_dir(&mut self, dir: &Path) -> Result<Vec<String>>;
    /// Reads a whole small metadata file (buffered I/O); None if absent.
    fn read_file(&mut self, path: &Path) -> Result<Option<Vec<u8>>>;
    /// Replaces `path` with `data` atomically and durably: write a temporary
    /// file, fsync it, rename it over `path`, fsync the directory.
    fn write_file_atomic(&mut self, path: &Path, data: &[u8]) -> Result<()>;
    /// Opens (creating if missing) a small file of hints for readers in
    /// other processes: buffered, never O_DIRECT, never synced.
    fn open_hint(&mut self, path: &Path) -> Result<FileId>;
    /// Overwrites the start of a hint file with `data` (a buffered pwrite
    /// of a few bytes, within one page: a crash may lose it, a reader may
    /// catch it halfway, so the data carries its own checksum).
    fn write_hint(&mut self, file: FileId, data: &[u8]) -> Result<()>;
}
