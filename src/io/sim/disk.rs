//! The simulated disk: per file a live image (the page cache) and a
//! durable image (what survives a power cut), and names that are durable
//! only once their directory is synced.
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// One write not yet covered by a successful fsync.
#[derive(Debug, Clone)]
pub(super) struct Unsynced {
    /// Completion order across the disk; fsyncs cover ids up to a bound.
    pub(super) id: u64,
    pub(super) pos: u64,
    pub(super) data: Vec<u8>,
}

#[derive(Debug, Clone, Default)]
pub(super) struct Inode {
    pub(super) live: Vec<u8>,
    pub(super) durable: Vec<u8>,
    /// Completed writes not yet durable, in completion order.
    pub(super) unsynced: Vec<Unsynced>,
    /// Byte ranges `[start, end)` whose reads fail with EIO (latent media errors).
    pub(super) unreadable: Vec<(u64, u64)>,
}

/// `len` bytes of `image` at `pos`, zeros past its end.
pub(super) fn sector_of(image: &[u8], pos: u64, len: usize) -> Vec<u8> {
    let mut out = vec![0u8; len];
    let start = (pos as usize).min(image.len());
    let end = (pos as usize + len).min(image.len());
    out[..end - start].copy_from_slice(&image[start..end]);
    out
}

pub(super) fn apply(image: &mut Vec<u8>, pos: u64, data: &[u8]) {
    let end = pos as usize + data.len();
    if image.len() < end {
        image.resize(end, 0);
    }
    image[pos as usize..end].copy_from_slice(data);
}

#[derive(Debug, Clone)]
pub(super) enum NameOp {
    Link(PathBuf, u64),
    Unlink(PathBuf),
    /// An atomic rename (from, to, inode): a power cut keeps it whole or not at all.
    Rename(PathBuf, PathBuf, u64),
}

/// The disk that outlives a [`SimIo`]: files, names, and what is durable.
#[derive(Debug, Clone, Default)]
pub struct SimDisk {
    pub(super) inodes: BTreeMap<u64, Inode>,
    pub(super) next_inode: u64,
    pub(super) names_live: BTreeMap<PathBuf, u64>,
    pub(super) names_durable: BTreeMap<PathBuf, u64>,
    /// Name changes not yet made durable by a sync_dir, in order.
    pub(super) names_unsynced: Vec<NameOp>,
    pub(super) next_write_id: u64,
}

impl SimDisk {
    pub fn new() -> SimDisk {
        SimDisk::default()
    }

    pub(super) fn link(&mut self, path: &Path, inode: u64) {
        self.names_live.insert(path.to_path_buf(), inode);
        self.names_unsynced.push(NameOp::Link(path.to_path_buf(), inode));
    }

    pub(super) fn apply_name(names: &mut BTreeMap<PathBuf, u64>, op: &NameOp) {
        match op {
            NameOp::Link(p, i) => {
                names.insert(p.clone(), *i);
            }
            NameOp::Unlink(p) => {
                names.remove(p);
            }
            NameOp::Rename(from, to, i) => {
                names.remove(from);
                names.insert(to.clone(), *i);
            }
        }
    }

    pub(super) fn bytes_used(&self) -> u64 {
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

    /// Writes `data` at `pos` of `path` in both images, growing it as
    /// needed (tests: space left in a file by an earlier use of it).
    pub fn write_at(&mut self, path: &Path, pos: u64, data: &[u8]) {
        let inode = self.inodes.get_mut(&self.names_live[path]).expect("file exists");
        apply(&mut inode.live, pos, data);
        apply(&mut inode.durable, pos, data);
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

impl SimDisk {
    pub(super) fn take_write_id(&mut self) -> u64 {
        self.next_write_id += 1;
        self.next_write_id - 1
    }

    /// Frees inodes no name (live or durable) refers to.
    pub(super) fn gc_inodes(&mut self) {
        let used: std::collections::BTreeSet<u64> = self.names_live.values().chain(self.names_durable.values()).copied().collect();
        self.inodes.retain(|i, _| used.contains(i));
    }
}
