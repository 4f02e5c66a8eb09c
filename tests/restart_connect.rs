//! Clients that connect while `strom serve` is killed and restarted on the
//! same port, as a consumer retrying through a restart does: a connection
//! the kernel completes must be one a live server answers, never one reset
//! moments later (issue 11, item 7).
mod harness;

use std::io::ErrorKind;
use std::net::{SocketAddr, TcpListener};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use harness::serve::Serve;
use strom::client::{Client, ClientError};

/// Kills and restarts. Before the fix a dead server's listeners outlived
/// it after most kills, so five made the test fail nearly every run.
const ROUNDS: u64 = 5;
/// Refusals a consumer takes after the server said it serves, before it
/// gives up (every listener listens before that line is printed).
const REFUSED_AFTER_SERVING_MAX: u32 = 1000;

/// A port free now, below the kernel's ephemeral range: a client retrying a
/// port inside it can be given that very port as its own and connect to
/// itself (a TCP self-connect), which is another story.
fn free_port() -> u16 {
    let range = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range").unwrap();
    let low: u16 = range.split_whitespace().next().unwrap().parse().unwrap();
    let start = low.saturating_sub(1 + (std::process::id() % 4000) as u16);
    (start.saturating_sub(4000).max(1024)..=start).rev().find(|&p| TcpListener::bind(("127.0.0.1", p)).is_ok()).expect("a free port")
}

fn serve(dir: &Path, addr: SocketAddr) -> Serve {
    let server = Serve::on(dir).port(addr.port()).start();
    assert_eq!(server.addr, addr);
    server
}

fn refused(e: &ClientError) -> bool {
    matches!(e, ClientError::Io(e) if e.kind() == ErrorKind::ConnectionRefused)
}

/// Connects in a tight loop, retrying refusals, then reaches partition 0's
/// core as `strom consume` does (Metadata on the shared port, then the
/// core's own port) and fetches once: the partition's high watermark, or
/// what failed.
fn consume_through_restart(addr: SocketAddr, served: &AtomicBool) -> Result<u64, String> {
    let mut refused_after_serving = 0;
    loop {
        let mut c = match Client::connect(addr) {
            Ok(c) => c,
            Err(e) if refused(&e) && refused_after_serving < REFUSED_AFTER_SERVING_MAX => {
                if served.load(Ordering::SeqCst) {
                    refused_after_serving += 1;
                }
                continue;
            }
            Err(e) => return Err(format!("connect: {e}")),
        };
        let fetched = c
            .set_timeout(Some(Duration::from_secs(30)))
            .and_then(|()| c.for_partition("t", 0))
            .and_then(|mut direct| direct.fetch("t", 0, 0, 1 << 20, Duration::ZERO));
        return fetched.map(|f| f.high_watermark).map_err(|e| format!("connected, then: {e}"));
    }
}

// Proves: once a SIGKILLed `strom serve` is reaped its port refuses
// connections, so a client retrying through the restart is never accepted
// by the dead server and then reset (its io_uring accepts held the
// listeners open for milliseconds after the process was gone), and a
// consumer connecting in a tight loop while the server restarts on the same
// port is served, never reset (the start-up probe listened and dropped).
#[test]
fn no_client_is_reset_across_a_kill_and_restart() {
    let dir = harness::test_dir("restart-connect");
    let addr = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let mut server = serve(&dir, addr);
    let mut producer = Client::connect(addr).unwrap();
    producer.create_topic("t", 1).unwrap();
    for round in 1..=ROUNDS {
        // The producer stays connected: the server has ops in flight at the kill.
        producer.produce_values("t", 0, &[format!("r{round}").as_bytes()]).unwrap();
        server.kill();
        match Client::connect(addr) {
            Err(e) if refused(&e) => {}
            Err(e) => panic!("round {round}: a connection after the killed server was reaped failed with {e}, not refused"),
            Ok(mut c) => {
                c.set_timeout(Some(Duration::from_secs(30))).unwrap();
                let answer = c.metadata(&[]).map_or_else(|e| e.to_string(), |_| "an answer".into());
                panic!("round {round}: the killed server's port accepted a connection after it was reaped; its request got: {answer}");
            }
        }
        let served = Arc::new(AtomicBool::new(false));
        let consumer = {
            let served = served.clone();
            std::thread::spawn(move || consume_through_restart(addr, &served))
        };
        server = serve(&dir, addr);
        served.store(true, Ordering::SeqCst);
        let high_watermark =
            consumer.join().unwrap().unwrap_or_else(|e| panic!("round {round}: a consumer retrying through the restart: {e}"));
        assert_eq!(high_watermark, round, "round {round}: every acknowledged record is there after the restart");
        producer = Client::connect(addr).unwrap();
    }
    server.kill();
    let _ = std::fs::remove_dir_all(&dir);
}
