//! The machine's own limits, measured beside Strom in the same run, so that
//! benchmarks and loadgen report Strom's figures as ratios to them.
//!
//! Three disk figures, each a plain loop with no broker around it:
//! - [`disk_write_fsync`]: sequential O_DIRECT `pwrite` of the broker's own
//!   write size + `fdatasync`, one at a time, appending into fresh space. It
//!   says what the broker's choice of write size costs, not what the disk
//!   can do: a broker choosing small writes into new space scores 1.0x.
//! - [`disk_best_group_commit`]: 1 MiB O_DIRECT writes + `fdatasync` over
//!   space written (and synced) once before the timing, so that each
//!   fdatasync is a pure flush with no journal commit. The disk's best
//!   correct group commit: THE ceiling for durable produce.
//! - [`disk_read_sequential`]: 1 MiB sequential O_DIRECT reads of a file
//!   already on disk (O_DIRECT bypasses the page cache), one at a time:
//!   the ceiling for catch-up and read-back.
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::buf::{AlignedBuf, BLOCK_BYTES, align_up};
use crate::error::{IoOp, Result, StromError};
use crate::io::fs;

/// The write (and read) size of the best group commit and the read ceiling:
/// large enough that per-operation costs vanish (fio's sequential figures).
pub const BEST_OP_BYTES: usize = 1 << 20;

/// What a write + fdatasync loop achieved.
#[derive(Debug, Clone, Default)]
pub struct DiskCeiling {
    pub write_bytes: usize,
    pub writes: u64,
    pub elapsed: Duration,
    /// Latency of each write + fdatasync pair, microseconds, sorted.
    pub latencies_us: Vec<u64>,
    /// The pre-written file the loop overwrote, cycling (0: it appended to fresh space).
    pub prewritten_file_bytes: u64,
}

impl DiskCeiling {
    /// Bytes per second, in MB (10^6 bytes).
    pub fn mb_per_sec(&self) -> f64 {
        (self.writes * self.write_bytes as u64) as f64 / self.elapsed.as_secs_f64() / 1e6
    }

    /// The `q` quantile (0..=1) of the pair latency, microseconds.
    pub fn latency_us(&self, q: f64) -> u64 {
        quantile_us(&self.latencies_us, q)
    }
}

/// What a sequential O_DIRECT read loop achieved.
#[derive(Debug, Clone, Default)]
pub struct DiskReadCeiling {
    pub read_bytes: usize,
    pub reads: u64,
    pub elapsed: Duration,
    /// Latency of each read, microseconds, sorted.
    pub latencies_us: Vec<u64>,
    /// The file read, cycling from its start when the loop reaches its end.
    pub file_bytes: u64,
}

impl DiskReadCeiling {
    /// Bytes per second, in MB (10^6 bytes).
    pub fn mb_per_sec(&self) -> f64 {
        (self.reads * self.read_bytes as u64) as f64 / self.elapsed.as_secs_f64() / 1e6
    }

    /// The `q` quantile (0..=1) of the read latency, microseconds.
    pub fn latency_us(&self, q: f64) -> u64 {
        quantile_us(&self.latencies_us, q)
    }
}

fn quantile_us(sorted_us: &[u64], q: f64) -> u64 {
    match sorted_us.len() {
        0 => 0,
        n => sorted_us[((n - 1) as f64 * q).round() as usize],
    }
}

/// A buffer of `bytes` (rounded up to a block) of a non-zero pattern: some
/// devices compress or skip zero blocks.
fn pattern_buf(bytes: usize) -> AlignedBuf {
    let bytes = (align_up(bytes.max(1) as u64) as usize).max(BLOCK_BYTES);
    let mut buf = AlignedBuf::new(bytes);
    let pattern: Vec<u8> = (0..bytes).map(|i| (i * 31 % 251) as u8 + 1).collect();
    buf.extend_from_slice(&pattern);
    buf
}

/// Runs the loop in `dir` (the data directory's filesystem) for about
/// `duration`, with writes of `write_bytes` rounded up to a block. Like a
/// log, it always appends to fresh space: past `file_bytes_max` it starts a
/// new file.
pub fn disk_write_fsync(dir: &Path, write_bytes: usize, duration: Duration, file_bytes_max: u64) -> Result<DiskCeiling> {
    let path = dir.join(format!(".strom-ceiling-{}", std::process::id()));
    let buf = pattern_buf(write_bytes);
    let result = append_loop(&path, &buf, duration, file_bytes_max);
    let _ = std::fs::remove_file(&path);
    let (writes, elapsed, mut latencies_us) = result?;
    latencies_us.sort_unstable();
    Ok(DiskCeiling { write_bytes: buf.len(), writes, elapsed, latencies_us, prewritten_file_bytes: 0 })
}

fn append_loop(path: &Path, buf: &AlignedBuf, duration: Duration, file_bytes_max: u64) -> Result<(u64, Duration, Vec<u64>)> {
    let _ = std::fs::remove_file(path);
    let mut file = fs::open_direct(path, true, true)?;
    let started = Instant::now();
    let (mut pos, mut writes, mut latencies_us) = (0u64, 0u64, Vec::new());
    while started.elapsed() < duration || writes == 0 {
        if pos + buf.len() as u64 > file_bytes_max {
            drop(file);
            fs::remove(path)?;
            file = fs::open_direct(path, true, true)?;
            pos = 0;
        }
        let t = Instant::now();
        file.write_all_at(buf.as_slice(), pos).map_err(|e| StromError::io(IoOp::Write, path, &e))?;
        file.sync_data().map_err(|e| StromError::io(IoOp::Fsync, path, &e))?;
        latencies_us.push(t.elapsed().as_micros() as u64);
        writes += 1;
        pos += buf.len() as u64;
    }
    Ok((writes, started.elapsed(), latencies_us))
}

/// A file of `file_bytes` in `dir`, written once in full with 1 MiB O_DIRECT
/// writes and fdatasynced, so that its blocks are allocated and initialised
/// (no unwritten extents left: overwriting them costs no journal commit).
/// Removed on drop. Both the best group commit and the read ceiling use it.
pub struct PrewrittenFile {
    path: PathBuf,
    file: std::fs::File,
    file_bytes: u64,
}

impl PrewrittenFile {
    pub fn create(dir: &Path, file_bytes: u64) -> Result<PrewrittenFile> {
        let file_bytes = align_up(file_bytes.max(BEST_OP_BYTES as u64)).div_ceil(BEST_OP_BYTES as u64) * BEST_OP_BYTES as u64;
        let path = dir.join(format!(".strom-ceiling-prewritten-{}", std::process::id()));
        let _ = std::fs::remove_file(&path);
        let file = fs::open_direct(&path, true, true)?;
        // From here on, drop removes the file whatever fails.
        let me = PrewrittenFile { path, file, file_bytes };
        let buf = pattern_buf(BEST_OP_BYTES);
        let mut pos = 0;
        while pos < file_bytes {
            me.file.write_all_at(buf.as_slice(), pos).map_err(|e| StromError::io(IoOp::Write, &me.path, &e))?;
            pos += BEST_OP_BYTES as u64;
        }
        me.file.sync_all().map_err(|e| StromError::io(IoOp::Fsync, &me.path, &e))?;
        Ok(me)
    }

    pub fn file_bytes(&self) -> u64 {
        self.file_bytes
    }
}

impl Drop for PrewrittenFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// The disk's best correct group commit: 1 MiB O_DIRECT writes, each
/// followed by fdatasync, one at a time, overwriting `file` from its start
/// and cycling, for about `duration`. Every ack-worthy byte is on stable
/// storage when each pair returns, exactly as a durable commit needs.
pub fn disk_best_group_commit(file: &PrewrittenFile, duration: Duration) -> Result<DiskCeiling> {
    let buf = pattern_buf(BEST_OP_BYTES);
    let started = Instant::now();
    let (mut pos, mut writes, mut latencies_us) = (0u64, 0u64, Vec::new());
    while started.elapsed() < duration || writes == 0 {
        if pos + buf.len() as u64 > file.file_bytes {
            pos = 0;
        }
        let t = Instant::now();
        file.file.write_all_at(buf.as_slice(), pos).map_err(|e| StromError::io(IoOp::Write, &file.path, &e))?;
        file.file.sync_data().map_err(|e| StromError::io(IoOp::Fsync, &file.path, &e))?;
        latencies_us.push(t.elapsed().as_micros() as u64);
        writes += 1;
        pos += buf.len() as u64;
    }
    let elapsed = started.elapsed();
    latencies_us.sort_unstable();
    Ok(DiskCeiling { write_bytes: buf.len(), writes, elapsed, latencies_us, prewritten_file_bytes: file.file_bytes })
}

/// The sequential read ceiling: 1 MiB O_DIRECT reads of `file`, one at a
/// time, from its start and cycling, for about `duration`.
pub fn disk_read_sequential(file: &PrewrittenFile, duration: Duration) -> Result<DiskReadCeiling> {
    let mut buf = AlignedBuf::new(BEST_OP_BYTES);
    let started = Instant::now();
    let (mut pos, mut reads, mut latencies_us) = (0u64, 0u64, Vec::new());
    while started.elapsed() < duration || reads == 0 {
        if pos + BEST_OP_BYTES as u64 > file.file_bytes {
            pos = 0;
        }
        let t = Instant::now();
        let got_bytes = fs::read_at(&file.file, &file.path, pos, BEST_OP_BYTES, &mut buf)?;
        assert_eq!(got_bytes, BEST_OP_BYTES, "short read inside the pre-written file at {pos}");
        latencies_us.push(t.elapsed().as_micros() as u64);
        reads += 1;
        pos += BEST_OP_BYTES as u64;
    }
    let elapsed = started.elapsed();
    latencies_us.sort_unstable();
    Ok(DiskReadCeiling { read_bytes: BEST_OP_BYTES, reads, elapsed, latencies_us, file_bytes: file.file_bytes })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir(name: &str) -> PathBuf {
        let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/tmp-unit").join(name);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    fn no_ceiling_files_left(dir: &Path) -> bool {
        std::fs::read_dir(dir).unwrap().all(|e| !e.unwrap().file_name().to_string_lossy().starts_with(".strom-ceiling"))
    }

    // Proves: the ceiling loop writes, syncs, counts and removes its file.
    #[test]
    fn ceiling_runs_and_cleans_up() {
        let dir = dir("ceiling");
        let c = disk_write_fsync(&dir, 5000, Duration::from_millis(50), 1 << 20).unwrap();
        assert_eq!(c.write_bytes, 8192, "write size is rounded up to a block");
        assert!(c.writes >= 1 && c.latencies_us.len() as u64 == c.writes);
        assert!(c.latency_us(0.0) <= c.latency_us(1.0));
        assert_eq!(c.prewritten_file_bytes, 0, "the loop appends to fresh space");
        assert!(no_ceiling_files_left(&dir));
    }

    // Proves: the pre-written file is whole 1 MiB units, written in full
    // before any timing; the best group commit and the read ceiling both
    // give positive figures in 1 MiB operations over it; drop removes it.
    #[test]
    fn best_group_commit_and_read_ceiling_over_a_prewritten_file() {
        let dir = dir("ceiling-best");
        let file = PrewrittenFile::create(&dir, 3 * BEST_OP_BYTES as u64 - 5).unwrap();
        assert_eq!(file.file_bytes(), 3 * BEST_OP_BYTES as u64, "rounded up to whole 1 MiB writes");
        assert_eq!(std::fs::metadata(&file.path).unwrap().len(), file.file_bytes(), "written in full before timing");
        let w = disk_best_group_commit(&file, Duration::from_millis(50)).unwrap();
        assert_eq!((w.write_bytes, w.prewritten_file_bytes), (BEST_OP_BYTES, file.file_bytes()));
        assert!(w.writes >= 1 && w.latencies_us.len() as u64 == w.writes && w.mb_per_sec() > 0.0, "{w:?}");
        assert_eq!(std::fs::metadata(&file.path).unwrap().len(), file.file_bytes(), "overwrites never grow the file");
        let r = disk_read_sequential(&file, Duration::from_millis(50)).unwrap();
        assert_eq!((r.read_bytes, r.file_bytes), (BEST_OP_BYTES, file.file_bytes()));
        assert!(r.reads >= 1 && r.latencies_us.len() as u64 == r.reads && r.mb_per_sec() > 0.0, "{r:?}");
        assert!(r.latency_us(0.0) <= r.latency_us(1.0));
        drop(file);
        assert!(no_ceiling_files_left(&dir));
    }
}
