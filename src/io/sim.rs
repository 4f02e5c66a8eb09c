//! A deterministic simulated disk behind the [`Io`] seam, driven by a seed.
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

use super::{Completion, FileId, Io, Op, Waker};
use crate::buf::AlignedBuf;
use crate::error::{IoOp, Result, StromError};

/// The granule of a torn write: the disk's logical sector.
pub const SECTOR_BYTES: usize = 512;
/// Alignment of the position a misdirected write lands at.
const MISDIRECT_ALIGN_BYTES: u64 = 4096;
/// Ops the simulated op table holds, like a ring's entries.
pub const SIM_OPS_MAX: usize = 255;

/// A small deterministic generator (xorshift64*): same seed, same run.
#[derive(Debug, Clone)]
pub struct SimRng(u64);

impl SimRng {
    pub fn new(seed: u64) -> SimRng {
        // Mix the seed so that 0, 1, 2, ... give unrelated streams.
        let mut r = SimRng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ 0xD1B5_4A32_D192_ED03);
        r.next_u64();
        r
    }

    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0.max(1);
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// Uniform in `0..n` (n > 0).
    pub fn below(&mut self, n: u64) -> u64 {
        assert!(n > 0);
        self.next_u64() % n
    }

    /// True with probability `ppm` per million.
    pub fn chance_ppm(&mut self, ppm: u32) -> bool {
        ppm > 0 && self.below(1_000_000) < ppm as u64
    }
}

/// Fault rates in parts per million of operations (0 = never).
#[derive(Debug, Clone, Default)]
pub struct SimFaults {
    /// A write fails with EIO; a random subset of its sectors still lands
    /// in the page cache.
    pub write_eio_ppm: u32,
    /// An fdatasync fails with EIO, and the kernel forgets the dirty pages
    /// it covered (Linux marks them clean): a later fsync will not save them.
    pub fsync_eio_ppm: u32,
    /// A write transfers only a prefix of its bytes.
    pub short_write_ppm: u32,
    /// A read fails with EIO.
    pub read_eio_ppm: u32,
    /// A read returns data with one bit flipped.
    pub read_bitflip_ppm: u32,
    /// Writes fail with ENOSPC once the files hold more than this many bytes.
    pub disk_bytes_max: Option<u64>,
    /// A write fails with ENOSPC and writes nothing, while the next may fit
    /// (as on ext4, where a smaller write can fit where a larger did not).
    pub enospc_ppm: u32,
    /// A write reports success but lands whole at another block-aligned
    /// position of its file (a misdirected write: firmware or driver bug).
    pub misdirected_write_ppm: u32,
}

/// How many faults of each kind a [`SimIo`] injected.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SimFaultCounts {
    pub write_eio: u64,
    pub fsync_eio: u64,
    pub enospc: u64,
    pub short_writes: u64,
    pub read_eio: u64,
    /// Reads refused because they touched a range marked unreadable.
    pub latent_read_eio: u64,
    pub read_bitflips: u64,
    pub misdirected_writes: u64,
}

impl SimFaultCounts {
    pub fn add(&mut self, o: &SimFaultCounts) {
        self.write_eio += o.write_eio;
        self.fsync_eio += o.fsync_eio;
        self.enospc += o.enospc;
        self.short_writes += o.short_writes;
        self.read_eio += o.read_eio;
        self.latent_read_eio += o.latent_read_eio;
        self.read_bitflips += o.read_bitflips;
        self.misdirected_writes += o.misdirected_writes;
    }

    pub fn total(&self) -> u64 {
        self.write_eio
            + self.fsync_eio
            + self.enospc
            + self.short_writes
            + self.read_eio
            + self.latent_read_eio
            + self.read_bitflips
            + self.misdirected_writes
    }
}

impl std::fmt::Display for SimFaultCounts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "write EIO {}, fdatasync EIO {}, ENOSPC {}, short writes {}, read EIO {}, latent read EIO {}, read bit flips {}, misdirected writes {}",
            self.write_eio,
            self.fsync_eio,
            self.enospc,
            self.short_writes,
            self.read_eio,
            self.latent_read_eio,
            self.read_bitflips,
            self.misdirected_writes
        )
    }
}

/// One write not yet covered by a successful fsync.
#[derive(Debug, Clone)]
struct Unsynced {
    /// Completion order across the disk; fsyncs cover ids up to a bound.
    id: u64,
    pos: u64,
    data: Vec<u8>,
}

#[derive(Debug, Clone, Default)]
struct Inode {
    live: Vec<u8>,
    durable: Vec<u8>,
    /// Completed writes not yet durable, in completion order.
    unsynced: Vec<Unsynced>,
    /// Byte ranges `[start, end)` whose reads fail with EIO (latent media errors).
    unreadable: Vec<(u64, u64)>,
}

/// `len` bytes of `image` at `pos`, zeros past its end.
fn sector_of(image: &[u8], pos: u64, len: usize) -> Vec<u8> {
    let mut out = vec![0u8; len];
    let start = (pos as usize).min(image.len());
    let end = (pos as usize + len).min(image.len());
    out[..end - start].copy_from_slice(&image[start..end]);
    out
}

fn apply(image: &mut Vec<u8>, pos: u64, data: &[u8]) {
    let end = pos as usize + data.len();
    if image.len() < end {
        image.resize(end, 0);
    }
    image[pos as usize..end].copy_from_slice(data);
}

#[derive(Debug, Clone)]
enum NameOp {
    Link(PathBuf, u64),
    Unlink(PathBuf),
}

/// The disk that outlives a [`SimIo`]: files, names, and what is durable.
#[derive(Debug, Clone, Default)]
pub struct SimDisk {
    inodes: BTreeMap<u64, Inode>,
    next_inode: u64,
    names_live: BTreeMap<PathBuf, u64>,
    names_durable: BTreeMap<PathBuf, u64>,
    /// Name changes not yet made durable by a sync_dir, in order.
    names_unsynced: Vec<NameOp>,
    next_write_id: u64,
}

impl SimDisk {
    pub fn new() -> SimDisk {
        SimDisk::default()
    }

    fn link(&mut self, path: &Path, inode: u64) {
        self.names_live.insert(path.to_path_buf(), inode);
        self.names_unsynced.push(NameOp::Link(path.to_path_buf(), inode));
    }

    fn apply_name(names: &mut BTreeMap<PathBuf, u64>, op: &NameOp) {
        match op {
            NameOp::Link(p, i) => {
                names.insert(p.clone(), *i);
            }
            NameOp::Unlink(p) => {
                names.remove(p);
            }
        }
    }

    fn bytes_used(&self) -> u64 {
        self.inodes.values().map(|i| i.live.len() as u64).sum()
    }

    /// The live content of `path`, for tests that inspect or damage files.
    pub fn file(&self, path: &Path) -> Option<&[u8]> {
        self.names_live.get(path).map(|i| self.inodes[i].live.as_slice())
    }

    /// Flips one bit of `path` at byte `pos`, in both images: latent media
    /// corruption, for tests of detection.
    pub fn flip_bit(&mut self, path: &Path, pos: u64, bit: u8) {
        let inode = self.inodes.get_mut(&self.names_live[path]).expect("file exists");
        inode.live[pos as usize] ^= 1 << bit;
        if let Some(b) = inode.durable.get_mut(pos as usize) {
            *b ^= 1 << bit;
        }
    }

    /// Makes every read touching `[pos, pos + len)` of `path` fail with EIO
    /// until [`SimDisk::clear_unreadable`]: a latent media error, which
    /// stays across restarts (it belongs to the disk).
    pub fn mark_unreadable(&mut self, path: &Path, pos: u64, len: u64) {
        let inode = self.inodes.get_mut(&self.names_live[path]).expect("file exists");
        inode.unreadable.push((pos, pos + len));
    }

    /// Forgets every latent read error (the sectors were remapped).
    pub fn clear_unreadable(&mut self) {
        for i in self.inodes.values_mut() {
            i.unreadable.clear();
        }
    }

    /// The durable content of `path` (what a power cut now would leave).
    pub fn durable_file(&self, path: &Path) -> Option<&[u8]> {
        self.names_durable.get(path).map(|i| self.inodes[i].durable.as_slice())
    }

    /// Cuts `path` to `len` bytes in both images (tests: a log that ends
    /// anywhere).
    pub fn truncate_file(&mut self, path: &Path, len: u64) {
        let inode = self.inodes.get_mut(&self.names_live[path]).expect("file exists");
        inode.unsynced.clear();
        inode.live.truncate(len as usize);
        inode.durable.truncate(len as usize);
    }

    /// Removes `path` durably (tests).
    pub fn remove_file(&mut self, path: &Path) {
        self.names_live.remove(path);
        self.names_durable.remove(path);
        self.gc_inodes();
    }

    /// Paths of every live file, sorted.
    pub fn paths(&self) -> Vec<PathBuf> {
        self.names_live.keys().cloned().collect()
    }
}

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

/// A simulated ring over a [`SimDisk`]: single-threaded, deterministic.
pub struct SimIo {
    disk: SimDisk,
    rng: SimRng,
    faults: SimFaults,
    now_ns: u64,
    files: BTreeMap<u32, OpenFile>,
    next_file: u32,
    queued: Vec<InFlight>,
    in_flight: Vec<InFlight>,
    ready: Vec<Completion>,
    counts: SimFaultCounts,
}

impl SimIo {
    pub fn new(disk: SimDisk, seed: u64, faults: SimFaults) -> SimIo {
        SimIo {
            disk,
            rng: SimRng::new(seed),
            faults,
            now_ns: 1_000_000_000,
            files: BTreeMap::new(),
            next_file: 0,
            queued: Vec::new(),
            in_flight: Vec::new(),
            ready: Vec::new(),
            counts: SimFaultCounts::default(),
        }
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

    /// Completes every in-flight op due by `now_ns`, in due order.
    fn complete_due(&mut self) {
        self.in_flight.sort_by_key(|f| f.done_ns);
        while self.in_flight.first().is_some_and(|f| f.done_ns <= self.now_ns) {
            let f = self.in_flight.remove(0);
            let c = self.complete(f);
            self.ready.push(c);
        }
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
            // The simulator models a disk, not a network: no socket exists here.
            Op::Recv { buf, .. } | Op::Send { buf, .. } => {
                Completion { token, result: Err(libc::EOPNOTSUPP), buf: None, net_buf: Some(buf), more: false }
            }
            Op::SendFixed { buf, .. } => Completion { token, result: Err(libc::EOPNOTSUPP), buf: Some(buf), net_buf: None, more: false },
            Op::Accept { .. } | Op::PollIn { .. } => {
                Completion { token, result: Err(libc::EOPNOTSUPP), buf: None, net_buf: None, more: false }
            }
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

impl SimDisk {
    fn take_write_id(&mut self) -> u64 {
        self.next_write_id += 1;
        self.next_write_id - 1
    }

    /// Frees inodes no name (live or durable) refers to.
    fn gc_inodes(&mut self) {
        let used: std::collections::BTreeSet<u64> = self.names_live.values().chain(self.names_durable.values()).copied().collect();
        self.inodes.retain(|i, _| used.contains(i));
    }
}

impl Io for SimIo {
    fn now_ns(&self) -> u64 {
        self.now_ns
    }

    fn push(&mut self, op: Op, token: u64) -> std::result::Result<(), Op> {
        if self.in_flight() >= SIM_OPS_MAX {
            return Err(op);
        }
        self.queued.push(InFlight { token, op, done_ns: 0, covers: 0 });
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
            let target = self.in_flight.get(need - 1).or(self.in_flight.last()).map_or(self.now_ns, |f| f.done_ns);
            let deadline = timeout.map_or(u64::MAX, |t| start.saturating_add(t.as_nanos() as u64));
            self.now_ns = self.now_ns.max(target.min(deadline));
            self.complete_due();
        }
        Ok(())
    }

    fn reap(&mut self, out: &mut Vec<Completion>) {
        out.append(&mut self.ready);
    }

    fn in_flight(&self) -> usize {
        self.queued.len() + self.in_flight.len() + self.ready.len()
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

    fn close_socket(&mut self, _sock: FileId) {}

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

    fn sync_dir(&mut self, dir: &Path) -> Result<()> {
        let (mine, others): (Vec<NameOp>, Vec<NameOp>) = self.disk.names_unsynced.drain(..).partition(|op| match op {
            NameOp::Link(p, _) | NameOp::Unlink(p) => p.parent() == Some(dir),
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
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(io: &mut SimIo, f: FileId, pos: u64, byte: u8, token: u64) {
        let mut b = AlignedBuf::new(4096);
        b.extend_from_slice(&[byte; 4096]);
        io.push(Op::Write { file: f, pos, buf: b }, token).unwrap();
    }

    fn drain(io: &mut SimIo) -> Vec<Completion> {
        let mut out = Vec::new();
        while io.in_flight() > 0 {
            io.wait(1, None).unwrap();
            io.reap(&mut out);
        }
        out
    }

    // Proves: an fsync covers only writes completed before it was submitted,
    // and a crash keeps those intact; an unsynced file creation survives some
    // crashes and not others (never assumed either way).
    #[test]
    fn fsync_covers_completed_writes_only() {
        let dir = Path::new("/d");
        let mut lost_b = 0;
        for seed in 0..16 {
            let mut io = SimIo::new(SimDisk::new(), seed, SimFaults::default());
            let f = io.create(&dir.join("a")).unwrap();
            io.sync_dir(dir).unwrap();
            write(&mut io, f, 0, 1, 1);
            drain(&mut io);
            io.push(Op::Fsync { file: f }, 2).unwrap();
            write(&mut io, f, 4096, 2, 3);
            drain(&mut io);
            let _unsynced = io.create(&dir.join("b")).unwrap();
            let disk = io.crash(&mut SimRng::new(seed));
            let a = disk.file(&dir.join("a")).unwrap();
            assert_eq!(&a[..4096], &[1u8; 4096][..]);
            // The second write raced the fsync: it may be torn, never more.
            assert!(a.len() <= 8192);
            lost_b += usize::from(disk.file(&dir.join("b")).is_none());
        }
        assert!(lost_b > 0, "an unsynced creation survived every crash");
        assert!(lost_b < 16, "an unsynced creation never survived: the model is stricter than ext4");
    }

    // Proves: across seeds a crash tears unsynced writes per sector (some
    // seeds keep part of a block), so recovery code faces real torn tails.
    #[test]
    fn crash_tears_unsynced_writes() {
        let mut torn = 0;
        for seed in 0..32 {
            let mut io = SimIo::new(SimDisk::new(), seed, SimFaults::default());
            let f = io.create(Path::new("/d/a")).unwrap();
            io.sync_dir(Path::new("/d")).unwrap();
            write(&mut io, f, 0, 9, 1);
            drain(&mut io);
            let disk = io.crash(&mut SimRng::new(seed));
            let a = disk.file(Path::new("/d/a")).unwrap();
            let kept = a.chunks(SECTOR_BYTES).filter(|s| s.iter().all(|&b| b == 9)).count();
            if kept > 0 && kept < 8 {
                torn += 1;
            }
        }
        assert!(torn > 0, "no seed produced a torn write");
    }

    // Proves: a failed fsync leaves its writes to chance on the medium (per
    // sector: written, unchanged or garbage) and a later successful fsync
    // does not save them (the fsyncgate behaviour the journal must respect);
    // and what reads see afterwards is not trusted either (some sectors
    // already show the medium).
    #[test]
    fn failed_fsync_forgets_dirty_pages() {
        let (mut incomplete, mut garbage, mut evicted) = (0, 0, 0);
        for seed in 0..16 {
            let faults = SimFaults { fsync_eio_ppm: 1_000_000, ..SimFaults::default() };
            let mut io = SimIo::new(SimDisk::new(), seed, faults);
            let f = io.create(Path::new("/d/a")).unwrap();
            io.sync_dir(Path::new("/d")).unwrap();
            write(&mut io, f, 0, 5, 1);
            drain(&mut io);
            io.push(Op::Fsync { file: f }, 2).unwrap();
            assert_eq!(drain(&mut io)[0].result, Err(libc::EIO));
            assert_eq!(io.fault_counts().fsync_eio, 1);
            let live = io.disk().file(Path::new("/d/a")).unwrap().to_vec();
            evicted += usize::from(live.iter().any(|&b| b != 5));
            io.faults_mut().fsync_eio_ppm = 0;
            io.push(Op::Fsync { file: f }, 3).unwrap();
            assert_eq!(drain(&mut io)[0].result, Ok(0));
            let disk = io.crash(&mut SimRng::new(seed));
            let a = disk.file(Path::new("/d/a")).unwrap();
            incomplete += usize::from(a.len() < 4096 || a.iter().any(|&b| b != 5));
            garbage += usize::from(a.chunks(SECTOR_BYTES).any(|s| s.iter().any(|&b| b != 5 && b != 0)));
        }
        assert!(incomplete > 0, "a later fsync always saved the data of a failed one");
        assert!(garbage > 0, "a failed fsync never left garbage on the medium");
        assert!(evicted > 0, "reads after a failed fsync always showed the written bytes");
    }

    // Proves: a misdirected write reports success, leaves its own place
    // untouched and lands whole at another block-aligned position.
    #[test]
    fn misdirected_write_lands_elsewhere() {
        let faults = SimFaults { misdirected_write_ppm: 1_000_000, ..SimFaults::default() };
        let mut io = SimIo::new(SimDisk::new(), 7, faults);
        let f = io.create(Path::new("/d/a")).unwrap();
        write(&mut io, f, 8192, 3, 1);
        assert_eq!(drain(&mut io)[0].result, Ok(4096));
        assert_eq!(io.fault_counts().misdirected_writes, 1);
        let a = io.disk().file(Path::new("/d/a")).unwrap();
        assert!(a.len() < 8192 + 4096 || a[8192..8192 + 4096].iter().all(|&b| b == 0), "the write landed where it was aimed");
        let at = a.chunks(4096).position(|b| b.iter().all(|&x| x == 3)).expect("the write landed whole somewhere");
        assert_ne!(at * 4096, 8192);
    }

    // Proves: a latent media error fails every read touching its range, async
    // and blocking, and only those, until it is cleared.
    #[test]
    fn latent_read_error_covers_its_range() {
        let mut io = SimIo::new(SimDisk::new(), 8, SimFaults::default());
        let f = io.create(Path::new("/d/a")).unwrap();
        write(&mut io, f, 0, 1, 1);
        write(&mut io, f, 4096, 2, 2);
        drain(&mut io);
        io.disk_mut().mark_unreadable(Path::new("/d/a"), 4096, 512);
        let read = |io: &mut SimIo, pos: u64| {
            io.push(Op::Read { file: f, pos, len: 4096, buf: AlignedBuf::new(4096) }, 9).unwrap();
            drain(io)[0].result
        };
        assert_eq!(read(&mut io, 0), Ok(4096));
        assert_eq!(read(&mut io, 4096), Err(libc::EIO));
        let mut b = AlignedBuf::new(8192);
        assert!(matches!(io.read_at(f, 0, 8192, &mut b), Err(StromError::Io { errno: libc::EIO, .. })));
        assert_eq!(io.fault_counts().latent_read_eio, 2);
        io.disk_mut().clear_unreadable();
        assert_eq!(read(&mut io, 4096), Ok(4096));
    }

    // Proves: misaligned O_DIRECT writes fail with EINVAL, as on Linux.
    #[test]
    fn misaligned_write_is_einval() {
        let mut io = SimIo::new(SimDisk::new(), 4, SimFaults::default());
        let f = io.create(Path::new("/d/a")).unwrap();
        let mut b = AlignedBuf::new(4096);
        b.extend_from_slice(&[1; 100]);
        io.push(Op::Write { file: f, pos: 0, buf: b }, 1).unwrap();
        assert_eq!(drain(&mut io)[0].result, Err(libc::EINVAL));
    }
}
