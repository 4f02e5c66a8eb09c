//! In-process server smoke: the library client against `Server::start`.
mod common;

use std::time::Duration;

use common::{test_dir, values};
use strom::client::Client;
use strom::config::EngineConfig;
use strom::proto::{ErrorCode, OffsetSpec};
use strom::server::{Server, ServerConfig};

fn start(name: &str, cores: usize) -> (Server, std::path::PathBuf) {
    let dir = test_dir(name);
    let cfg = EngineConfig { cores, logs_on_create: cores as u32 * 2, pin_cores: false, ..EngineConfig::default() };
    let scfg = ServerConfig { listen: "127.0.0.1:0".parse().unwrap(), ..ServerConfig::default() };
    (Server::start(&dir, cfg, scfg).unwrap(), dir)
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
    server.shutdown().unwrap();
}
