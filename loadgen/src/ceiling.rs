//! The machine's own limits, measured in the same run as Strom's figures
//! (`strom::ceiling` says how each disk figure is made): the disk's best
//! correct group commit (1 MiB O_DIRECT write + fdatasync over pre-written
//! space), the loop at the broker's own write size into fresh space, the
//! sequential O_DIRECT read, and loopback TCP, one stream, as a consumer or
//! producer connection uses it.
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::time::{Duration, Instant};

pub use strom::ceiling::{DiskCeiling, DiskReadCeiling};

/// The pre-written file the best group commit overwrites and the read
/// ceiling reads: its size bounds the ceilings' disk space (written once,
/// about 0.2 s at this machine's 1.5 GB/s), removed when they are done.
pub const PREWRITTEN_FILE_BYTES: u64 = 256 << 20;
/// Time bounds of each disk ceiling (each also at most the run's duration):
/// in all about 3 + 1 + 0.5 s after the run, plus the pre-write: the two
/// new ones about 1.7 s. Their bytes written are bounded by time, their
/// space by `PREWRITTEN_FILE_BYTES`.
pub const DISK_LOOP_SECS_MAX: f64 = 3.0;
pub const DISK_BEST_SECS_MAX: f64 = 1.0;
pub const DISK_READ_SECS_MAX: f64 = 0.5;

/// Chunk size of each send and receive, like iperf3's default 128 KiB.
const TCP_CHUNK_BYTES: usize = 128 << 10;

#[derive(Debug, Clone)]
pub struct TcpCeiling {
    pub bytes: u64,
    pub elapsed: Duration,
}

impl TcpCeiling {
    pub fn mb_per_sec(&self) -> f64 {
        self.bytes as f64 / self.elapsed.as_secs_f64() / 1e6
    }
}

/// One TCP stream over 127.0.0.1 for `duration`: a sender thread writing
/// 128 KiB chunks and this thread reading them. What iperf3 -c 127.0.0.1 measures.
pub fn loopback_tcp(duration: Duration) -> Result<TcpCeiling, String> {
    let listener = TcpListener::bind("127.0.0.1:0").map_err(|e| format!("loopback ceiling: bind: {e}"))?;
    let addr = listener.local_addr().map_err(|e| e.to_string())?;
    let sender = std::thread::Builder::new()
        .name("loadgen-tcp-ceiling".into())
        .spawn(move || -> std::io::Result<()> {
            let mut s = TcpStream::connect(addr)?;
            let chunk = vec![0x5au8; TCP_CHUNK_BYTES];
            let end = Instant::now() + duration;
            while Instant::now() < end {
                s.write_all(&chunk)?;
            }
            Ok(())
        })
        .map_err(|e| e.to_string())?;
    let (mut conn, _) = listener.accept().map_err(|e| format!("loopback ceiling: accept: {e}"))?;
    let mut buf = vec![0u8; TCP_CHUNK_BYTES];
    let started = Instant::now();
    let mut bytes = 0u64;
    loop {
        match conn.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => bytes += n as u64,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(format!("loopback ceiling: read: {e}")),
        }
    }
    let elapsed = started.elapsed();
    sender.join().map_err(|_| "loopback ceiling: sender panicked".to_string())?.map_err(|e| format!("loopback ceiling: send: {e}"))?;
    Ok(TcpCeiling { bytes, elapsed })
}

/// The three disk figures, measured one after another on one filesystem.
#[derive(Debug, Clone)]
pub struct DiskCeilings {
    /// At the broker's write size, appending to fresh space.
    pub loop_at_write_size: DiskCeiling,
    /// 1 MiB over pre-written space: THE ceiling for durable produce.
    pub best: DiskCeiling,
    /// 1 MiB sequential O_DIRECT reads: the ceiling for catch-up and read-back.
    pub read: DiskReadCeiling,
}

/// The disk ceilings in `dir` (the data directory's filesystem): the loop at
/// `write_bytes`, then the best group commit and the read ceiling over one
/// pre-written file, each for at most `secs` (and its own bound above).
pub fn disks(dir: &Path, write_bytes: usize, secs: f64) -> Result<DiskCeilings, String> {
    let err = |e: strom::error::StromError| format!("disk ceiling in {}: {e}", dir.display());
    let bound = |max: f64| Duration::from_secs_f64(secs.min(max));
    // Fresh files of at most 1 GiB each, as the log appends to fresh space.
    let loop_at_write_size = strom::ceiling::disk_write_fsync(dir, write_bytes, bound(DISK_LOOP_SECS_MAX), 1 << 30).map_err(err)?;
    let file = strom::ceiling::PrewrittenFile::create(dir, PREWRITTEN_FILE_BYTES).map_err(err)?;
    let best = strom::ceiling::disk_best_group_commit(&file, bound(DISK_BEST_SECS_MAX)).map_err(err)?;
    let read = strom::ceiling::disk_read_sequential(&file, bound(DISK_READ_SECS_MAX)).map_err(err)?;
    Ok(DiskCeilings { loop_at_write_size, best, read })
}

#[cfg(test)]
mod tests {
    use super::*;

    // Proves the loopback measurement moves bytes and reports a rate (no speed asserted).
    #[test]
    fn loopback_moves_bytes() {
        let c = loopback_tcp(Duration::from_millis(200)).unwrap();
        assert!(c.bytes >= TCP_CHUNK_BYTES as u64, "{c:?}");
        assert!(c.mb_per_sec() > 0.0);
    }

    // Proves the three disk ceilings run on target/ (real O_DIRECT) in a
    // small configuration, give positive figures and leave no file behind
    // (no speed asserted).
    #[test]
    fn disk_ceilings_give_positive_figures() {
        let dir = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/tmp-unit/loadgen-ceilings");
        std::fs::create_dir_all(&dir).unwrap();
        let d = disks(&dir, 64 << 10, 0.05).unwrap();
        assert_eq!(d.loop_at_write_size.write_bytes, 64 << 10);
        assert_eq!((d.best.write_bytes, d.best.prewritten_file_bytes), (1 << 20, PREWRITTEN_FILE_BYTES));
        assert_eq!((d.read.read_bytes, d.read.file_bytes), (1 << 20, PREWRITTEN_FILE_BYTES));
        assert!(d.loop_at_write_size.mb_per_sec() > 0.0 && d.best.mb_per_sec() > 0.0 && d.read.mb_per_sec() > 0.0, "{d:?}");
        assert!(std::fs::read_dir(&dir).unwrap().all(|e| !e.unwrap().file_name().to_string_lossy().starts_with(".strom-ceiling")));
    }
}
