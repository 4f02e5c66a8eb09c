//! The server embedded in-process (`Server::start`), reached through the
//! client library and raw sockets: the tests that need the server's own
//! metrics (`Server::metrics`, and the `Metrics` api beside it).
mod harness;

use std::time::Duration;

use harness::{test_dir, values};
use strom::client::Client;
use strom::config::EngineConfig;
use strom::metrics::{ConnMetrics, Metric, Metrics};
use strom::proto::{ErrorCode, OffsetSpec};
use strom::server::{Server, ServerConfig};

fn start(name: &str, cores: usize) -> (Server, std::path::PathBuf) {
    let dir = test_dir(name);
    let cfg = EngineConfig { cores, logs_on_create: cores as u32 * 2, pin_cores: false, ..EngineConfig::default() };
    let scfg = ServerConfig { listen: "127.0.0.1:0".parse().unwrap(), ..ServerConfig::default() };
    (Server::start(&dir, cfg, scfg).unwrap(), dir)
}

/// Polls every core's metrics until `done` holds for all of them (released
/// resources come back asynchronously, as sockets close), failing with
/// `what` and the metrics after 30 s. Returns the last metrics.
fn wait_for_metrics(server: &Server, what: &str, done: impl Fn(&Metrics) -> bool) -> Vec<Metrics> {
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let stats = server.metrics();
        if stats.iter().all(&done) {
            return stats;
        }
        assert!(std::time::Instant::now() < deadline, "{what}: {stats:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

// Proves: topic admin, produce, fetch, list offsets, committed offsets and
// metadata round-trip through a real socket, on two cores with forwarding.
#[test]
fn round_trip_on_two_cores() {
    let (server, _dir) = start("srv-smoke", 2);
    let mut c = Client::connect(server.local_addr()).unwrap();
    c.create_topic("t", 4).unwrap();
    for p in 0..4 {
        let vals: Vec<Vec<u8>> = (0..10).map(|i| format!("p{p}-{i}").into_bytes()).collect();
        let refs: Vec<&[u8]> = vals.iter().map(|v| v.as_slice()).collect();
        let ack = c.produce_values("t", p, &refs).unwrap();
        assert_eq!((ack.base_offset, ack.last_offset), (0, 9));
        let ack = c.produce_values("t", p, &refs).unwrap();
        assert_eq!((ack.base_offset, ack.last_offset), (10, 19));
    }
    for p in 0..4 {
        let f = c.fetch("t", p, 0, 1 << 20, Duration::ZERO).unwrap();
        let got = values(&f.batches);
        assert_eq!(got.len(), 20);
        assert_eq!(got[13], (13, format!("p{p}-3")));
        assert_eq!(c.list_offsets("t", p, OffsetSpec::Latest).unwrap(), Some(20));
        assert_eq!(c.list_offsets("t", p, OffsetSpec::Earliest).unwrap(), Some(0));
    }
    let md = c.metadata(&[]).unwrap();
    assert_eq!(md.topics.len(), 1);
    assert_eq!(md.topics[0].partition_cores, vec![0, 1, 0, 1]);
    c.commit_offset("g", "t", 1, 7).unwrap();
    assert_eq!(c.fetch_offset("g", "t", 1).unwrap(), Some(7));
    let err = c.produce_values("nope", 0, &[b"x"]).unwrap_err();
    assert!(matches!(err, strom::client::ClientError::Server { code: ErrorCode::UnknownTopic, .. }), "{err:?}");
    // The invariant audits (docs/TESTING.md) stay 0 through all of it.
    for s in server.metrics() {
        assert_eq!(s.audit_violations(), 0, "{s:?}");
    }
    server.shutdown().unwrap();
}

// Proves: connections that vanish mid-reply (the peer resets while a large
// send is in flight), mid-frame or before their ack leave nothing behind:
// every core's connection count and held bytes go back to zero.
#[test]
fn abandoned_connections_release_everything() {
    use std::io::Write;
    use strom::proto::Request;
    let (server, _dir) = start("srv-abandon", 2);
    let mut c = Client::connect(server.local_addr()).unwrap();
    c.create_topic("a", 2).unwrap();
    let big = vec![b'x'; 900 << 10];
    for p in 0..2 {
        for _ in 0..4 {
            c.produce_values("a", p, &[&big[..]]).unwrap();
        }
    }
    for round in 0..30u32 {
        let mut s = std::net::TcpStream::connect(server.local_addr()).unwrap();
        let mut frames = Vec::new();
        for i in 0..8u64 {
            let req = Request::Fetch { topic: "a", partition: round % 2, offset: i % 4, max_bytes: 4 << 20, max_wait_ms: 0 };
            strom::proto::encode_request(&mut frames, i + 1, &req);
        }
        match round % 3 {
            // Big replies in flight, never read: closing with unread data resets.
            0 => s.write_all(&frames).unwrap(),
            // Half a frame.
            1 => s.write_all(&frames[..frames.len() / 2 + 3]).unwrap(),
            // A produce whose ack nobody waits for.
            _ => {
                let mut f = Vec::new();
                let b = harness::batch_of(&[b"bye"]);
                strom::proto::encode_request(&mut f, 1, &Request::Produce { topic: "a", partition: 0, batches: &b });
                s.write_all(&f).unwrap();
            }
        }
        std::thread::sleep(Duration::from_millis(5));
        drop(s);
    }
    drop(c);
    let stats =
        wait_for_metrics(&server, "connections or bytes still held", |s| s[Metric::ConnectionsOpen] == 0 && s[Metric::BufferedBytes] == 0);
    assert_eq!(stats.len(), 2);
    println!("released: {stats:?}");
    assert_eq!(server.connections(), 0);
    server.shutdown().unwrap();
}

// Proves: a consumer that pipelines fetches and never reads their replies
// pins at most its connection's buffer cap in the server (plus the replies
// of the requests already in service), while another client is served; once
// it goes, everything is released.
#[test]
fn a_reader_that_never_reads_is_bounded() {
    use std::io::Write;
    use strom::proto::Request;
    let dir = harness::test_dir("srv-slow-reader");
    let cfg = EngineConfig { cores: 2, logs_on_create: 2, pin_cores: false, ..EngineConfig::default() };
    let conn_cap = 9 << 20;
    let scfg = ServerConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        conn_buffered_bytes_max: conn_cap,
        core_buffered_bytes_max: 64 << 20,
        inflight_per_conn_max: 4,
        ..ServerConfig::default()
    };
    let server = Server::start(&dir, cfg, scfg).unwrap();
    let mut c = Client::connect(server.local_addr()).unwrap();
    c.create_topic("s", 1).unwrap();
    let big = vec![b'y'; 1000 << 10];
    for _ in 0..8 {
        c.produce_values("s", 0, &[&big[..]]).unwrap();
    }
    let mut slow = std::net::TcpStream::connect(server.local_addr()).unwrap();
    slow.set_write_timeout(Some(Duration::from_secs(2))).unwrap();
    let mut frames = Vec::new();
    for i in 0..400u64 {
        let req = Request::Fetch { topic: "s", partition: 0, offset: 0, max_bytes: 8 << 20, max_wait_ms: 0 };
        strom::proto::encode_request(&mut frames, i + 1, &req);
    }
    // The server stops reading, so this write may block once the socket
    // buffers fill: a write timeout is the expected outcome, not a failure.
    let _ = slow.write_all(&frames);
    std::thread::sleep(Duration::from_millis(500));
    let held: u64 = server.metrics().iter().map(|s| s[Metric::BufferedBytes]).sum();
    // Each fetch is charged its largest possible reply when it is read, so
    // the server reads no more once the cap is reached: at most the cap plus
    // one fetch's charge (8 MiB plus its header).
    let bound = conn_cap as u64 + (8 << 20) + 64;
    println!("a reader that never reads: {held} bytes held in the server (bound {bound})");
    assert!(held <= bound, "{held} bytes held for one reader that never reads");
    c.produce_values("s", 0, &[b"canary"]).unwrap();
    drop(slow);
    wait_for_metrics(&server, "bytes still held", |s| s[Metric::BufferedBytes] == 0);
    server.shutdown().unwrap();
}

// Proves: a fetch on a connection to the partition's own core is answered
// from a registered reply buffer (sent by SEND_ZC naming it), byte for byte
// what the heap path sends, long polls included, and every reply buffer is
// back in its core's pool afterwards, also after a consumer reset mid-reply.
#[test]
fn same_core_fetches_are_sent_from_registered_buffers() {
    use std::io::Write;
    let (server, _dir) = start("srv-fixed", 2);
    let mut admin = Client::connect(server.local_addr()).unwrap();
    admin.create_topic("f", 2).unwrap();
    let vals: Vec<Vec<u8>> = (0..50).map(|i| format!("value-{i}-{}", "z".repeat(i * 100)).into_bytes()).collect();
    let refs: Vec<&[u8]> = vals.iter().map(|v| v.as_slice()).collect();
    for p in 0..2 {
        for chunk in refs.chunks(10) {
            admin.produce_values("f", p, chunk).unwrap();
        }
    }
    let before: u64 = server.metrics().iter().map(|s| s[Metric::ZeroCopySends]).sum();
    for p in 0..2 {
        // Through the shared listener: forwarded or not, replies are heap.
        let via_main = values(&admin.fetch("f", p, 0, 1 << 20, Duration::ZERO).unwrap().batches);
        let mut direct = Client::connect(server.local_addr()).unwrap().for_partition("f", p).unwrap();
        let got = values(&direct.fetch("f", p, 0, 1 << 20, Duration::ZERO).unwrap().batches);
        assert_eq!(got, via_main);
        assert_eq!(got.len(), 50);
        // A long poll answered by a new append, also from a registered buffer.
        let poll = direct
            .send(&strom::proto::Request::Fetch { topic: "f", partition: p, offset: 50, max_bytes: 1 << 20, max_wait_ms: 20_000 })
            .unwrap();
        std::thread::sleep(Duration::from_millis(100));
        admin.produce_values("f", p, &[b"late"]).unwrap();
        let r = direct.recv().unwrap();
        assert_eq!(r.request_id, poll);
        match r.result.unwrap() {
            strom::client::OwnedResponse::Fetch(f) => assert_eq!(values(&f.batches), vec![(50, "late".to_string())]),
            other => panic!("{other:?}"),
        }
    }
    let after: u64 = server.metrics().iter().map(|s| s[Metric::ZeroCopySends]).sum();
    assert!(after >= before + 4, "direct fetches were not sent from registered buffers ({before} -> {after})");
    // A consumer that resets while large fixed replies are queued.
    let md = admin.metadata(&["f"]).unwrap();
    let core0_addr = md.core_addrs[md.topics[0].partition_cores[0] as usize].clone();
    for _ in 0..10 {
        let mut s = std::net::TcpStream::connect(core0_addr.as_str()).unwrap();
        let mut frames = Vec::new();
        for i in 0..8u64 {
            let req = strom::proto::Request::Fetch { topic: "f", partition: 0, offset: 0, max_bytes: 1 << 20, max_wait_ms: 0 };
            strom::proto::encode_request(&mut frames, i + 1, &req);
        }
        s.write_all(&frames).unwrap();
        std::thread::sleep(Duration::from_millis(5));
    }
    let all_bufs = ServerConfig::default().reply_bufs_per_core as u64;
    wait_for_metrics(&server, "reply buffers or bytes not returned", |s| {
        s[Metric::ReplyBufsFree] == all_bufs && s[Metric::BufferedBytes] == 0 && s[Metric::ConnectionsOpen] <= 1
    });
    drop(admin);
    server.shutdown().unwrap();
}

/// Every core's registry through the `Metrics` api, each core answering
/// every metric of this build once.
fn metrics_over_the_network(c: &mut Client) -> Vec<Metrics> {
    let cores = c.metrics().unwrap();
    let typed = cores.iter().map(|pairs| {
        assert_eq!(pairs.len(), Metric::ALL.len(), "{pairs:?}");
        let (m, unknown) = Metrics::from_pairs(pairs.iter().map(|(k, v)| (k.as_str(), *v)));
        assert!(unknown.is_empty(), "names this build does not know: {unknown:?}");
        m
    });
    typed.collect()
}

// Proves: the Metrics api answers with every core's registry, every metric
// once, and its counters move with the work: after one produce to each
// core's partition, each core staged exactly one more append and wrote and
// fdatasynced more log bytes, the requests read are counted, the asking
// connection is the one open, and the audits stay 0; the in-process
// registries (`Server::metrics`, and `Engine::metrics` without the
// server's sections) read the same counters.
#[test]
fn metrics_api_answers_every_core_and_counters_move() {
    let (server, _dir) = start("srv-metrics", 2);
    let mut c = Client::connect(server.local_addr()).unwrap();
    c.create_topic("m", 2).unwrap();
    let owner = c.metadata(&["m"]).unwrap().topics[0].partition_cores.clone();
    let before = metrics_over_the_network(&mut c);
    assert_eq!(before.len(), 2);
    for p in 0..2 {
        c.produce_values("m", p, &[b"one", b"two"]).unwrap();
    }
    let after = metrics_over_the_network(&mut c);
    for p in 0..2 {
        let (b, a) = (&before[owner[p] as usize], &after[owner[p] as usize]);
        assert_eq!(a[Metric::Appends], b[Metric::Appends] + 1, "core {}", owner[p]);
        for m in [Metric::LogBytesWritten, Metric::LogWrites, Metric::LogFsyncs] {
            assert!(a[m] > b[m], "{} did not grow on core {}: {} -> {}", m.name(), owner[p], b[m], a[m]);
        }
    }
    let sum = |all: &[Metrics], m: Metric| all.iter().map(|s| s[m]).sum::<u64>();
    // Two produces and the second Metrics request, all on the one connection.
    assert_eq!(sum(&after, Metric::Requests), sum(&before, Metric::Requests) + 3);
    assert_eq!(sum(&after, Metric::ConnectionsOpen), 1);
    assert!(after.iter().all(|s| s.audit_violations() == 0), "{after:?}");
    let in_process = server.metrics();
    let engine = server.engine().metrics().unwrap();
    for core in 0..2 {
        for m in [Metric::Appends, Metric::LogBytesWritten, Metric::LogFsyncs, Metric::Reads] {
            assert_eq!((in_process[core][m], engine[core][m]), (after[core][m], after[core][m]), "{} on core {core}", m.name());
        }
        assert_eq!(engine[core].conn, ConnMetrics::default(), "the engine alone has no connections");
    }
    println!("core 0 after two produces: {}", in_process[0]);
    server.shutdown().unwrap();
}
