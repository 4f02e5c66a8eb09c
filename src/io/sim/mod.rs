//! A deterministic simulated disk (and network, [`net`]) behind the [`Io`]
//! seam, driven by a seed.
//!
//! The model keeps, per file, a *live* image (what reads see: the page
//! cache) and a *durable* image (what survives a power cut), after redb's
//! crash backend and TigerBeetle's VOPR:
//! - a write changes the live image when it completes; completions come in
//!   a seeded random order after a random virtual latency;
//! - `fdatasync` makes durable exactly the writes to its file that had
//!   completed when it was *submitted*: a write still in flight is not
//!   covered, however the completions interleave;
//! - a created or removed name is durable only after `sync_dir` of its
//!   directory; a power cut keeps a random prefix of the unsynced name
//!   changes (ext4 commits metadata in order);
//! - a power cut ([`SimIo::crash`]) keeps the durable image and, for every
//!   write that was not yet covered by an fsync (completed or in flight),
//!   keeps or drops each 512-byte sector independently: torn writes;
//! - a process exit ([`SimIo::process_exit`]) keeps the page cache: every
//!   completed or in-flight write stays in the live image, still not
//!   durable until a later fsync;
//! - O_DIRECT rules: position and length must be 512-byte multiples, else
//!   EINVAL.
//!
//! Directories exist implicitly, and [`Io::write_file_atomic`] is atomic
//! and durable at once (its real counterpart fsyncs the file and the
//! directory before returning, and the simulator only crashes between
//! calls). Faults ([`SimFaults`]) inject, at seeded random moments: EIO on
//! writes, on fdatasync and on reads, ENOSPC, short writes, bit flips on
//! reads and misdirected writes (a whole write landing at another aligned
//! position); [`SimDisk::mark_unreadable`] adds latent media errors (EIO on
//! every read of a range, across restarts). [`SimIo::fault_counts`] says how
//! many of each kind were injected.
//!
//! A failed fdatasync is modelled as on Linux: the kernel may have written
//! some of the covered pages, and marks them all clean whatever happened,
//! so nothing the engine does later makes them durable. Each covered sector
//! independently reaches the durable image, stays as it was, or becomes
//! garbage (a write interrupted on the medium); and what reads see of it (the
//! page cache, not trusted any more) either still shows the written bytes or
//! already shows the durable outcome (the page was evicted and read back).
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use super::{Completion, FileId, Io, Op, OpCounts, Waker};
use crate::buf::AlignedBuf;
use crate::error::{IoOp, Result, StromError};

mod disk;
mod faults;
pub mod net;
mod rng;
#[cfg(test)]
mod tests;

pub use disk::SimDisk;
use disk::{Inode, NameOp, Unsynced, apply, sector_of};
pub use faults::{SimFaultCounts, SimFaults};
use net::End;
pub use net::{SimConn, SimNet};
pub use rng::SimRng;

/// The granule of a torn write: the disk's logical sector.
pub const SECTOR_BYTES: usize = 512;
/// Alignment of the position a misdirected write lands at.
const MISDIRECT_ALIGN_BYTES: u64 = 4096;
/// Ops the simulated op table holds, like a ring's entries.
pub const SIM_OPS_MAX: usize = 255;

struct InFlight {
    token: u64,
    op: Op,
    /// Virtual time at which it completes.
    done_ns: u64,
    /// For an fsync: it covers the file's completed writes with ids below this.
    covers: u64,
}

struct OpenFile {
    inode: u64,
    writable: bool,
}

struct NoopWaker;
impl Waker for NoopWaker {
    fn wake(&self) {}
}

/// The simulator's default wall clock at virtual time 0:
/// 2026-12-04T00:00:00Z, a date like the ones producers stamp.
pub const SIM_WALL_EPOCH_MS: i64 = 1_796_342_400_000;

/// A simulated ring over a [`SimDisk`]: single-threaded, deterministic.
pub struct SimIo {
    disk: SimDisk,
    rng: SimRng,
    faults: SimFaults,
    now_ns: u64,
    /// The wall clock at virtual time 0 (ms since the Unix epoch): fixed,
    /// so a seed replays every comparison with batch timestamps.
    wall_epoch_ms: i64,
    files: BTreeMap<u32, OpenFile>,
    next_file: u32,
    queued: Vec<InFlight>,
    in_flight: Vec<InFlight>,
    ready: Vec<Completion>,
    counts: SimFaultCounts,
    /// The network, when a server runs on this core; its endpoints by file
    /// number, and the network ops waiting to become ready.
    net: Option<SimNet>,
    ends: BTreeMap<u32, End>,
    net_ops: Vec<(u64, End, Op)>,
    /// Buffer ops by fixed or plain opcode, as the real ring counts them.
    op_counts: OpCounts,
}

impl SimIo {
    pub fn new(disk: SimDisk, seed: u64, faults: SimFaults) -> SimIo {
        SimIo {
            disk,
            rng: SimRng::new(seed),
            faults,
            now_ns: 1_000_000_000,
            wall_epoch_ms: SIM_WALL_EPOCH_MS,
            files: BTreeMap::new(),
            next_file: 0,
            queued: Vec::new(),
            in_flight: Vec::new(),
            ready: Vec::new(),
            counts: SimFaultCounts::default(),
            net: None,
            ends: BTreeMap::new(),
            net_ops: Vec::new(),
            op_counts: OpCounts::default(),
        }
    }

    /// Sets the wall clock at virtual time 0, for a test whose timestamps
    /// need a particular date (the default is [`SIM_WALL_EPOCH_MS`]).
    pub fn with_wall_epoch_ms(mut self, wall_epoch_ms: i64) -> SimIo {
        self.wall_epoch_ms = wall_epoch_ms;
        self
    }

    /// Moves virtual time forward by `by`, as a pause with nothing to do
    /// would: ops in flight complete once due, at the next wait. Ticks move
    /// time only by their own cost, so hours pass this way.
    pub fn advance(&mut self, by: Duration) {
        self.now_ns = self.now_ns.saturating_add(by.as_nanos() as u64);
    }

    /// Buffer ops pushed so far, by fixed or plain opcode.
    pub fn op_counts(&self) -> OpCounts {
        self.op_counts
    }

    /// Connects this core to a simulated network (shared with the test's clients and other cores).
    pub fn with_net(mut self, net: SimNet) -> SimIo {
        self.net = Some(net);
        self
    }

    /// Listens on `port` of the simulated network: the listener a server
    /// task accepts on (what `adopt_socket` gives for a real socket).
    pub fn listen(&mut self, port: u16) -> Result<FileId> {
        let net = self.net.as_ref().ok_or_else(|| StromError::Unsupported("this simulated core has no network".into()))?;
        if !net.listen(port) {
            return Err(StromError::Io { op: IoOp::Open, path: format!("listen sim:{port}").into(), errno: libc::EADDRINUSE });
        }
        Ok(self.new_end(End::Listener(port)))
    }

    fn new_end(&mut self, end: End) -> FileId {
        let id = self.next_file;
        self.next_file += 1;
        self.ends.insert(id, end);
        FileId(id)
    }

    /// The network endpoint an op names, if it is a network op.
    fn end_of(&self, op: &Op) -> Option<Option<End>> {
        let file = match op {
            Op::Accept { listener } => listener,
            Op::PollIn { sock } | Op::Recv { sock, .. } | Op::Send { sock, .. } | Op::SendFixed { sock, .. } => sock,
            Op::Write { .. } | Op::Fsync { .. } | Op::Read { .. } => return None,
        };
        Some(self.ends.get(&file.0).copied())
    }

    /// Completes the network ops that are ready, in a seeded order.
    fn complete_net(&mut self) {
        let Some(net) = self.net.clone() else { return };
        let mut waiting = std::mem::take(&mut self.net_ops);
        let mut i = 0;
        while !waiting.is_empty() && i < waiting.len() {
            // Visit the ops from a random start, so no connection is always served first.
            let at = (i + self.rng.below(waiting.len() as u64) as usize) % waiting.len();
            if !net.ready(waiting[at].1, &waiting[at].2) {
                i += 1;
                continue;
            }
            let (token, end, op) = waiting.swap_remove(at);
            let next_file = FileId(self.next_file);
            let (c, again, accepted) = net.complete(end, token, op, &mut self.rng, next_file);
            if let Some(server) = accepted {
                let file = self.new_end(End::Sock(server));
                debug_assert_eq!(file, next_file);
            }
            self.ready.push(c);
            if let Some(op) = again {
                waiting.push((token, end, op));
                i += 1;
            }
        }
        self.net_ops = waiting;
    }

    /// Faults injected so far, by kind.
    pub fn fault_counts(&self) -> SimFaultCounts {
        self.counts
    }

    pub fn disk_mut(&mut self) -> &mut SimDisk {
        &mut self.disk
    }

    pub fn disk(&self) -> &SimDisk {
        &self.disk
    }

    pub fn faults_mut(&mut self) -> &mut SimFaults {
        &mut self.faults
    }

    /// A power cut now: every write not covered by a completed fsync keeps
    /// a random subset of its sectors; unsynced name changes keep a random
    /// prefix. Returns the disk as the next boot finds it.
    pub fn crash(mut self, rng: &mut SimRng) -> SimDisk {
        let in_flight: Vec<InFlight> = self.queued.drain(..).chain(self.in_flight.drain(..)).collect();
        let mut disk = self.disk;
        for f in &in_flight {
            if let Op::Write { file, pos, buf } = &f.op {
                let inode = self.files[&file.0].inode;
                let id = disk.take_write_id();
                disk.inodes.get_mut(&inode).expect("inode").unsynced.push(Unsynced { id, pos: *pos, data: buf.as_slice().to_vec() });
            }
        }
        for inode in disk.inodes.values_mut() {
            let mut image = std::mem::take(&mut inode.durable);
            for w in inode.unsynced.drain(..) {
                for (i, sector) in w.data.chunks(SECTOR_BYTES).enumerate() {
                    if rng.below(2) == 0 {
                        apply(&mut image, w.pos + (i * SECTOR_BYTES) as u64, sector);
                    }
                }
            }
            inode.live = image.clone();
            inode.durable = image;
        }
        let keep = rng.below(disk.names_unsynced.len() as u64 + 1) as usize;
        for op in disk.names_unsynced.drain(..).take(keep).collect::<Vec<_>>() {
            SimDisk::apply_name(&mut disk.names_durable, &op);
        }
        disk.names_live = disk.names_durable.clone();
        disk.gc_inodes();
        disk
    }

    /// The process ends (a clean exit or `kill -9`); the machine stays up,
    /// so in-flight writes complete into the page cache, still unsynced.
    pub fn process_exit(mut self) -> SimDisk {
        let in_flight: Vec<InFlight> = self.queued.drain(..).chain(self.in_flight.drain(..)).collect();
        for f in in_flight {
            if let Op::Write { file, pos, buf } = &f.op {
                let inode = self.files[&file.0].inode;
                let id = self.disk.take_write_id();
                let node = self.disk.inodes.get_mut(&inode).expect("inode");
                apply(&mut node.live, *pos, buf.as_slice());
                node.unsynced.push(Unsynced { id, pos: *pos, data: buf.as_slice().to_vec() });
            }
        }
        self.disk
    }

    fn inode_of(&self, file: FileId) -> u64 {
        self.files.get(&file.0).expect("open file").inode
    }

    fn latency_ns(&mut self, op: &Op) -> u64 {
        match op {
            Op::Fsync { .. } => 50_000 + self.rng.below(500_000),
            _ => 5_000 + self.rng.below(100_000),
        }
    }

    /// Submission: fsyncs take a snapshot of what they cover now.
    fn submit(&mut self) {
        for mut f in std::mem::take(&mut self.queued) {
            f.done_ns = self.now_ns + self.latency_ns(&f.op);
            if let Op::Fsync { .. } = &f.op {
                f.covers = self.disk.next_write_id;
            }
            self.in_flight.push(f);
        }
    }

    /// Completes every in-flight op due by `now_ns`, in due order, and
    /// every network op that is ready.
    fn complete_due(&mut self) {
        self.in_flight.sort_by_key(|f| f.done_ns);
        while self.in_flight.first().is_some_and(|f| f.done_ns <= self.now_ns) {
            let f = self.in_flight.remove(0);
            let c = self.complete(f);
            self.ready.push(c);
        }
        self.complete_net();
    }

    fn complete(&mut self, f: InFlight) -> Completion {
        let InFlight { token, op, covers, .. } = f;
        match op {
            Op::Write { file, pos, buf } => {
                let result = self.complete_write(file, pos, &buf);
                Completion { token, result, buf: Some(buf), net_buf: None, more: false }
            }
            Op::Fsync { file } => Completion { token, result: self.complete_fsync(file, covers), buf: None, net_buf: None, more: false },
            Op::Read { file, pos, len, mut buf } => {
                let result = self.complete_read(file, pos, len, &mut buf);
                Completion { token, result, buf: Some(buf), net_buf: None, more: false }
            }
            op => unreachable!("{op:?} is a network op: see complete_net"),
        }
    }

    fn complete_write(&mut self, file: FileId, pos: u64, buf: &AlignedBuf) -> std::result::Result<u32, i32> {
        let data = buf.as_slice();
        if !(pos as usize).is_multiple_of(SECTOR_BYTES) || !data.len().is_multiple_of(SECTOR_BYTES) || !self.files[&file.0].writable {
            return Err(if self.files[&file.0].writable { libc::EINVAL } else { libc::EBADF });
        }
        let inode = self.inode_of(file);
        let grows = (pos + data.len() as u64).saturating_sub(self.disk.inodes[&inode].live.len() as u64);
        if self.faults.disk_bytes_max.is_some_and(|max| self.disk.bytes_used() + grows > max) || self.rng.chance_ppm(self.faults.enospc_ppm)
        {
            self.counts.enospc += 1;
            return Err(libc::ENOSPC);
        }
        let mut at = pos;
        let (landed, result) = if self.rng.chance_ppm(self.faults.write_eio_ppm) {
            self.counts.write_eio += 1;
            (self.rng.below(data.len() as u64 / SECTOR_BYTES as u64 + 1) as usize * SECTOR_BYTES, Err(libc::EIO))
        } else if self.rng.chance_ppm(self.faults.short_write_ppm) && data.len() > SECTOR_BYTES {
            self.counts.short_writes += 1;
            let n = self.rng.below(data.len() as u64 / SECTOR_BYTES as u64) as usize * SECTOR_BYTES;
            (n, Ok(n as u32))
        } else {
            if self.rng.chance_ppm(self.faults.misdirected_write_ppm) {
                // Anywhere block-aligned in the file or just past its end,
                // except where it was meant to go; the caller is told success.
                let blocks = (self.disk.inodes[&inode].live.len().max(pos as usize) + 2 * data.len()) as u64 / MISDIRECT_ALIGN_BYTES;
                let other = self.rng.below(blocks.max(2) - 1) * MISDIRECT_ALIGN_BYTES;
                at = if other >= pos { other + MISDIRECT_ALIGN_BYTES } else { other };
                self.counts.misdirected_writes += 1;
            }
            (data.len(), Ok(data.len() as u32))
        };
        let id = self.disk.take_write_id();
        let node = self.disk.inodes.get_mut(&inode).expect("inode");
        if landed > 0 {
            apply(&mut node.live, at, &data[..landed]);
            node.unsynced.push(Unsynced { id, pos: at, data: data[..landed].to_vec() });
        }
        result
    }

    fn complete_fsync(&mut self, file: FileId, covers: u64) -> std::result::Result<u32, i32> {
        let eio = self.rng.chance_ppm(self.faults.fsync_eio_ppm);
        let inode = self.inode_of(file);
        let node = self.disk.inodes.get_mut(&inode).expect("inode");
        let (covered, rest): (Vec<Unsynced>, Vec<Unsynced>) = node.unsynced.drain(..).partition(|w| w.id < covers);
        node.unsynced = rest;
        if eio {
            self.counts.fsync_eio += 1;
            self.fail_fsync(inode, covered);
            return Err(libc::EIO);
        }
        for w in covered {
            apply(&mut node.durable, w.pos, &w.data);
        }
        Ok(0)
    }

    /// What a failed fdatasync leaves of the writes it covered: Linux marks
    /// their pages clean whatever reached the medium, so no later fsync
    /// saves them. Per sector: written, unchanged or garbage on the medium;
    /// and the page cache either still shows the write or (evicted) the medium.
    fn fail_fsync(&mut self, inode: u64, covered: Vec<Unsynced>) {
        let node = self.disk.inodes.get_mut(&inode).expect("inode");
        for w in covered {
            for (i, sector) in w.data.chunks(SECTOR_BYTES).enumerate() {
                let at = w.pos + (i * SECTOR_BYTES) as u64;
                match self.rng.below(3) {
                    0 => apply(&mut node.durable, at, sector),
                    1 => {}
                    _ => {
                        let garbage: Vec<u8> = (0..sector.len()).map(|_| self.rng.next_u64() as u8).collect();
                        apply(&mut node.durable, at, &garbage);
                    }
                }
                if self.rng.below(2) == 0 {
                    let medium = sector_of(&node.durable, at, sector.len());
                    apply(&mut node.live, at, &medium);
                }
            }
        }
    }

    fn complete_read(&mut self, file: FileId, pos: u64, len: usize, buf: &mut AlignedBuf) -> std::result::Result<u32, i32> {
        if !(pos as usize).is_multiple_of(SECTOR_BYTES) || !len.is_multiple_of(SECTOR_BYTES) {
            return Err(libc::EINVAL);
        }
        if self.unreadable(file, pos, len) {
            self.counts.latent_read_eio += 1;
            buf.set_len(0);
            return Err(libc::EIO);
        }
        if self.rng.chance_ppm(self.faults.read_eio_ppm) {
            self.counts.read_eio += 1;
            buf.set_len(0);
            return Err(libc::EIO);
        }
        let n = self.read_live(file, pos, len, buf);
        if n > 0 && self.rng.chance_ppm(self.faults.read_bitflip_ppm) {
            self.counts.read_bitflips += 1;
            let at = self.rng.below(n as u64) as usize;
            buf.as_mut_slice()[at] ^= 1 << self.rng.below(8);
        }
        Ok(n as u32)
    }

    /// True when `[pos, pos + len)` of `file` touches a latent media error.
    fn unreadable(&self, file: FileId, pos: u64, len: usize) -> bool {
        self.disk.inodes[&self.inode_of(file)].unreadable.iter().any(|&(s, e)| s < pos + len as u64 && pos < e)
    }

    fn read_live(&self, file: FileId, pos: u64, len: usize, buf: &mut AlignedBuf) -> usize {
        let live = &self.disk.inodes[&self.inode_of(file)].live;
        let start = (pos as usize).min(live.len());
        let end = (pos as usize + len).min(live.len());
        buf.set_len(0);
        buf.extend_from_slice(&live[start..end]);
        end - start
    }

    fn not_found(op: IoOp, path: &Path) -> StromError {
        StromError::Io { op, path: path.to_path_buf(), errno: libc::ENOENT }
    }

    fn children(&self, dir: &Path) -> impl Iterator<Item = &PathBuf> {
        self.disk.names_live.keys().filter(move |p| p.starts_with(dir) && p.as_path() != dir)
    }
}

impl Io for SimIo {
    fn now_ns(&self) -> u64 {
        self.now_ns
    }

    fn wall_ms(&self) -> i64 {
        self.wall_epoch_ms.saturating_add((self.now_ns / 1_000_000) as i64)
    }

    fn push(&mut self, op: Op, token: u64) -> std::result::Result<(), Op> {
        if self.in_flight() >= SIM_OPS_MAX {
            return Err(op);
        }
        self.op_counts.count(&op);
        match self.end_of(&op) {
            None => self.queued.push(InFlight { token, op, done_ns: 0, covers: 0 }),
            Some(Some(end)) if self.net.is_some() => self.net_ops.push((token, end, op)),
            // The simulator without a network: no socket exists here.
            Some(_) => self.ready.push(unsupported(token, op)),
        }
        Ok(())
    }

    /// Every wait costs a little virtual time (ticks are not free); then time
    /// jumps to the `min_complete`-th completion, or to the timeout.
    fn wait(&mut self, min_complete: usize, timeout: Option<Duration>) -> Result<()> {
        self.submit();
        let start = self.now_ns;
        self.now_ns += 1_000 + self.rng.below(20_000);
        self.complete_due();
        if self.ready.len() < min_complete {
            self.in_flight.sort_by_key(|f| f.done_ns);
            let need = min_complete - self.ready.len();
            let deadline = timeout.map_or(u64::MAX, |t| start.saturating_add(t.as_nanos() as u64));
            // With only network ops waiting, time moves by the tick's own
            // cost: the clients act between ticks, so a core waiting for
            // them (or for another core's reply, which rings its doorbell in
            // production) must not sleep its whole timeout. Timers of
            // seconds then take many ticks, as they take many requests.
            let target = self.in_flight.get(need - 1).or(self.in_flight.last()).map_or(self.now_ns, |f| f.done_ns);
            self.now_ns = self.now_ns.max(target.min(deadline));
            self.complete_due();
        }
        Ok(())
    }

    fn reap(&mut self, out: &mut Vec<Completion>) {
        out.append(&mut self.ready);
    }

    fn in_flight(&self) -> usize {
        self.queued.len() + self.in_flight.len() + self.ready.len() + self.net_ops.len()
    }

    fn waker(&self) -> Arc<dyn Waker> {
        Arc::new(NoopWaker)
    }

    fn register_buffers(&mut self, bufs: &mut [AlignedBuf]) -> Result<()> {
        for (i, b) in bufs.iter_mut().enumerate() {
            b.set_fixed_index(Some(u16::try_from(i).expect("buffer index fits u16")));
        }
        Ok(())
    }

    fn create(&mut self, path: &Path) -> Result<FileId> {
        if self.disk.names_live.contains_key(path) {
            return Err(StromError::Io { op: IoOp::Create, path: path.to_path_buf(), errno: libc::EEXIST });
        }
        let inode = self.disk.next_inode;
        self.disk.next_inode += 1;
        self.disk.inodes.insert(inode, Inode::default());
        self.disk.link(path, inode);
        self.open(path, true)
    }

    fn open(&mut self, path: &Path, writable: bool) -> Result<FileId> {
        let inode = *self.disk.names_live.get(path).ok_or_else(|| Self::not_found(IoOp::Open, path))?;
        let id = self.next_file;
        self.next_file += 1;
        self.files.insert(id, OpenFile { inode, writable });
        Ok(FileId(id))
    }

    fn close(&mut self, file: FileId) {
        self.files.remove(&file.0);
    }

    fn adopt_socket(&mut self, _sock: std::os::fd::OwnedFd) -> Result<FileId> {
        Err(StromError::Unsupported("the simulated disk has no network".into()))
    }

    fn close_socket(&mut self, sock: FileId) {
        let Some(end) = self.ends.remove(&sock.0) else { return };
        // Every op on it completes now, cancelled, with its buffer.
        let (mine, rest): (Vec<_>, Vec<_>) = std::mem::take(&mut self.net_ops).into_iter().partition(|(_, e, _)| *e == end);
        self.net_ops = rest;
        for (token, _, op) in mine {
            let mut c = unsupported(token, op);
            c.result = Err(libc::ECANCELED);
            self.ready.push(c);
        }
        let net = self.net.as_ref().expect("a network endpoint implies a network");
        match end {
            End::Listener(port) => net.unlisten(port),
            End::Sock(id) => net.close(id),
        }
    }

    fn file_len(&mut self, file: FileId) -> Result<u64> {
        Ok(self.disk.inodes[&self.inode_of(file)].live.len() as u64)
    }

    fn read_at(&mut self, file: FileId, pos: u64, len: usize, buf: &mut AlignedBuf) -> Result<usize> {
        assert!((pos as usize).is_multiple_of(SECTOR_BYTES) && len.is_multiple_of(SECTOR_BYTES), "misaligned O_DIRECT read");
        if self.unreadable(file, pos, len) {
            self.counts.latent_read_eio += 1;
            let path = self.disk.names_live.iter().find(|&(_, &i)| i == self.inode_of(file)).map(|(p, _)| p.clone()).unwrap_or_default();
            return Err(StromError::Io { op: IoOp::Read, path, errno: libc::EIO });
        }
        Ok(self.read_live(file, pos, len, buf))
    }

    fn sync_file(&mut self, file: FileId) -> Result<()> {
        let node = self.disk.inodes.get_mut(&self.inode_of(file)).expect("inode");
        for w in node.unsynced.drain(..) {
            apply(&mut node.durable, w.pos, &w.data);
        }
        Ok(())
    }

    fn remove(&mut self, path: &Path) -> Result<()> {
        if self.disk.names_live.remove(path).is_none() {
            return Err(Self::not_found(IoOp::Remove, path));
        }
        self.disk.names_unsynced.push(NameOp::Unlink(path.to_path_buf()));
        Ok(())
    }

    fn rename(&mut self, from: &Path, to: &Path) -> Result<()> {
        if self.disk.names_live.contains_key(to) {
            return Err(StromError::Io { op: IoOp::Rename, path: to.to_path_buf(), errno: libc::EEXIST });
        }
        let inode = self.disk.names_live.remove(from).ok_or_else(|| Self::not_found(IoOp::Rename, from))?;
        // One atomic directory change: a power cut before the directory
        // sync leaves the old name or the new one, never both or neither.
        self.disk.names_live.insert(to.to_path_buf(), inode);
        self.disk.names_unsynced.push(NameOp::Rename(from.to_path_buf(), to.to_path_buf(), inode));
        Ok(())
    }

    fn sync_dir(&mut self, dir: &Path) -> Result<()> {
        let (mine, others): (Vec<NameOp>, Vec<NameOp>) = self.disk.names_unsynced.drain(..).partition(|op| match op {
            NameOp::Link(p, _) | NameOp::Unlink(p) | NameOp::Rename(_, p, _) => p.parent() == Some(dir),
        });
        for op in &mine {
            SimDisk::apply_name(&mut self.disk.names_durable, op);
        }
        self.disk.names_unsynced = others;
        Ok(())
    }

    fn create_dir_all(&mut self, _dir: &Path) -> Result<()> {
        Ok(())
    }

    fn list_dir(&mut self, dir: &Path) -> Result<Vec<String>> {
        let mut names: Vec<String> = self
            .children(dir)
            .filter_map(|p| p.strip_prefix(dir).ok()?.components().next())
            .map(|c| c.as_os_str().to_string_lossy().into_owned())
            .collect();
        names.dedup();
        Ok(names)
    }

    fn read_file(&mut self, path: &Path) -> Result<Option<Vec<u8>>> {
        Ok(self.disk.names_live.get(path).map(|i| self.disk.inodes[i].live.clone()))
    }

    fn write_file_atomic(&mut self, path: &Path, data: &[u8]) -> Result<()> {
        let inode = self.disk.next_inode;
        self.disk.next_inode += 1;
        self.disk.inodes.insert(inode, Inode { live: data.to_vec(), durable: data.to_vec(), ..Inode::default() });
        let old = [self.disk.names_live.insert(path.to_path_buf(), inode), self.disk.names_durable.insert(path.to_path_buf(), inode)];
        // Free the replaced content unless a name or an open file still uses it.
        for old in old.into_iter().flatten() {
            let used = self.disk.names_live.values().chain(self.disk.names_durable.values()).any(|&i| i == old)
                || self.files.values().any(|f| f.inode == old);
            if !used {
                self.disk.inodes.remove(&old);
            }
        }
        Ok(())
    }

    fn open_hint(&mut self, path: &Path) -> Result<FileId> {
        if !self.disk.names_live.contains_key(path) {
            // Created as a real file is: the name lasts only once its
            // directory is synced, which a hint's writer never does.
            let inode = self.disk.next_inode;
            self.disk.next_inode += 1;
            self.disk.inodes.insert(inode, Inode::default());
            self.disk.names_live.insert(path.to_path_buf(), inode);
        }
        self.open(path, true)
    }

    fn write_hint(&mut self, file: FileId, data: &[u8]) -> Result<()> {
        let inode = self.files[&file.0].inode;
        // Live only: a crash takes the hint back to what was synced (nothing).
        let live = &mut self.disk.inodes.get_mut(&inode).expect("open file's inode").live;
        if live.len() < data.len() {
            live.resize(data.len(), 0);
        }
        live[..data.len()].copy_from_slice(data);
        Ok(())
    }
}

/// A network op's completion that did nothing, with its buffer back.
fn unsupported(token: u64, op: Op) -> Completion {
    let c = |buf, net_buf| Completion { token, result: Err(libc::EOPNOTSUPP), buf, net_buf, more: false };
    match op {
        Op::Recv { buf, .. } | Op::Send { buf, .. } => c(None, Some(buf)),
        Op::SendFixed { buf, .. } | Op::Write { buf, .. } | Op::Read { buf, .. } => c(Some(buf), None),
        Op::Accept { .. } | Op::PollIn { .. } | Op::Fsync { .. } => c(None, None),
    }
}
