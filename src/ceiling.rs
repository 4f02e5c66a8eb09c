//! The machine's own limits, measured the way Strom uses the machine, so
//! that benchmarks and loadgen report Strom's figures as ratios to them.
//!
//! The disk ceiling is a plain loop of sequential O_DIRECT `pwrite` of
//! `write_bytes` followed by `fdatasync`, one at a time: exactly the work a
//! durable commit needs, with no broker around it.
use std::path::Path;
use std::time::{Duration, Instant};

use crate::buf::{AlignedBuf, BLOCK_BYTES, align_up};
use crate::error::{IoOp, Result, StromError};
use crate::io::fs;

/// What the raw write + fdatasync loop achieved.
#[derive(Debug, Clone)]
pub struct DiskCeiling {
    pub write_bytes: usize,
    pub writes: u64,
    pub elapsed: Duration,
    /// Latency of each write + fdatasync pair, microseconds, sorted.
    pub latencies_us: Vec<u64>,
}

impl DiskCeiling {
    /// Bytes per second, in MB (10^6 bytes).
    pub fn mb_per_sec(&self) -> f64 {
        (self.writes * self.write_bytes as u64) as f64 / self.elapsed.as_secs_f64() / 1e6
    }

    /// The `q` quantile (0..=1) of the pair latency, microseconds.
    pub fn latency_us(&self, q: f64) -> u64 {
        let n = self.latencies_us.len();
        if n == 0 {
            return 0;
        }
        self.latencies_us[((n - 1) as f64 * q).round() as usize]
    }
}

/// Runs the loop in `dir` (the data directory's filesystem) for about
/// `duration`, with writes of `write_bytes` rounded up to a block. Like a
/// log, it always appends to fresh space: past `file_bytes_max` it starts a
/// new file (overwriting allocated blocks would let fdatasync skip the
/// metadata commit an append pays for, and flatter the ceiling).
pub fn disk_write_fsync(dir: &Path, write_bytes: usize, duration: Duration, file_bytes_max: u64) -> Result<DiskCeiling> {
    let write_bytes = (align_up(write_bytes.max(1) as u64) as usize).max(BLOCK_BYTES);
    let path = dir.join(format!(".strom-ceiling-{}", std::process::id()));
    let mut buf = AlignedBuf::new(write_bytes);
    // Not zeros: some devices compress or skip zero blocks.
    let pattern: Vec<u8> = (0..write_bytes).map(|i| (i * 31 % 251) as u8 + 1).collect();
    buf.extend_from_slice(&pattern);
    let result = run_loop(&path, &buf, duration, file_bytes_max);
    let _ = std::fs::remove_file(&path);
    let (writes, elapsed, mut latencies_us) = result?;
    latencies_us.sort_unstable();
    Ok(DiskCeiling { write_bytes, writes, elapsed, latencies_us })
}

fn run_loop(path: &Path, buf: &AlignedBuf, duration: Duration, file_bytes_max: u64) -> Result<(u64, Duration, Vec<u64>)> {
    use std::os::unix::fs::FileExt;
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

#[cfg(test)]
mod tests {
    use super::*;

    // Proves: the ceiling loop writes, syncs, counts and removes its file.
    #[test]
    fn ceiling_runs_and_cleans_up() {
        let dir = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/tmp-unit/ceiling");
        std::fs::create_dir_all(&dir).unwrap();
        let c = disk_write_fsync(&dir, 5000, Duration::from_millis(50), 1 << 20).unwrap();
        assert_eq!(c.write_bytes, 8192, "write size is rounded up to a block");
        assert!(c.writes >= 1 && c.latencies_us.len() as u64 == c.writes);
        assert!(c.latency_us(0.0) <= c.latency_us(1.0));
        assert!(std::fs::read_dir(&dir).unwrap().all(|e| !e.unwrap().file_name().to_string_lossy().starts_with(".strom-ceiling")));
    }
}
