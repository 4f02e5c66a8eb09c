//! The machine's own limits, measured in the same run as Strom's figures:
//! the disk as a durable commit uses it (O_DIRECT write + fdatasync, one at
//! a time, at the broker's own write size: `strom::ceiling`), and loopback
//! TCP, one stream, as a consumer or producer connection uses it.
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::time::{Duration, Instant};

pub use strom::ceiling::DiskCeiling;

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

/// The raw O_DIRECT write + fdatasync loop in `dir` at `write_bytes`.
pub fn disk(dir: &Path, write_bytes: usize, duration: Duration) -> Result<DiskCeiling, String> {
    // Fresh files of at most 1 GiB each, as the log appends to fresh space.
    strom::ceiling::disk_write_fsync(dir, write_bytes, duration, 1 << 30).map_err(|e| format!("disk ceiling in {}: {e}", dir.display()))
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
}
