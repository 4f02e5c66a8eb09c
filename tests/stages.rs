//! The server's per-stage latency of produce requests (and fetches), read
//! through `Server::stage_latency` and through the `Stats` api with the
//! client. Counts and orderings only: no timing thresholds.
mod harness;

use std::time::{Duration, Instant};

use harness::{batch, test_dir};
use strom::client::{Client, OwnedResponse, StageLatency};
use strom::config::EngineConfig;
use strom::proto::Request;
use strom::server::{Server, ServerConfig};
use strom::stats::{STAGES, format_table};

/// The stages of a produce request, which tile `total`.
const PRODUCE_STAGES: [&str; 6] = ["receive", "append", "write", "fsync", "ack", "send"];

fn start(name: &str) -> Server {
    let dir = test_dir(name);
    // Two cores and four partitions: half the requests are forwarded to the other core and back.
    let cfg = EngineConfig { cores: 2, logs_on_create: 4, pin_cores: false, ..EngineConfig::default() };
    let scfg = ServerConfig { listen: "127.0.0.1:0".parse().unwrap(), ..ServerConfig::default() };
    Server::start(&dir, cfg, scfg).unwrap()
}

fn row<'a>(rows: &'a [StageLatency], stage: &str) -> &'a StageLatency {
    rows.iter().find(|r| r.stage == stage).unwrap_or_else(|| panic!("no stage {stage} in {rows:?}"))
}

/// A produce is recorded when the server reaps its send's completion, which
/// may come just after the client read the reply: polls until `total`
/// counts `produced` requests (30 s at most), and returns the rows.
fn wait_for_produces(server: &Server, produced: u64) -> Vec<StageLatency> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let rows = server.stage_latency(false);
        if row(&rows, "total").count >= produced {
            return rows;
        }
        assert!(Instant::now() < deadline, "never counted {produced} produces: {rows:?}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Checks what must hold of any report: every stage in order, percentiles
/// ordered, and no stage of a request longer than the whole request.
fn check_shape(rows: &[StageLatency]) {
    let names: Vec<&str> = rows.iter().map(|r| r.stage.as_str()).collect();
    assert_eq!(names, STAGES);
    for r in rows {
        assert!(r.p50_us <= r.p90_us && r.p90_us <= r.p99_us && r.p99_us <= r.p999_us && r.p999_us <= r.max_us, "{r:?}");
    }
    let total_max = row(rows, "total").max_us;
    for stage in PRODUCE_STAGES {
        assert!(row(rows, stage).max_us <= total_max, "{stage} is longer than a whole request: {rows:?}");
    }
}

// Proves: every produce request answered is counted once in every stage
// (single- and multi-batch, pipelined, forwarded or not; refused ones not
// at all), fetches are counted apart, the Stats api returns what the
// server reads, reset empties every stage, and one request's stages add
// up to its total.
#[test]
fn every_produce_is_counted_in_every_stage() {
    let server = start("stages");
    let mut c = Client::connect(server.local_addr()).unwrap();
    c.create_topic("t", 4).unwrap();

    // One at a time, then 64 pipelined (they share commits), then two
    // Produces of three batches each (one request each).
    let mut produced = 0u64;
    for i in 0..40 {
        c.produce("t", i % 4, &batch("one", 1, 1_700_000_000_000)).unwrap();
        produced += 1;
    }
    let piped = batch("piped", 10, 1_700_000_000_000);
    let ids: Vec<u64> = (0..64).map(|i| c.send(&Request::Produce { topic: "t", partition: i % 4, batches: &piped }).unwrap()).collect();
    for _ in &ids {
        let reply = c.recv().unwrap();
        assert!(matches!(reply.result, Ok(OwnedResponse::Produce(_))), "{reply:?}");
    }
    produced += ids.len() as u64;
    let three = [batch("a", 2, 1), batch("b", 3, 2), batch("c", 1, 3)].concat();
    for p in [0, 1] {
        let ack = c.produce("t", p, &three).unwrap();
        assert_eq!(ack.last_offset - ack.base_offset, 5);
        produced += 1;
    }
    // Refused before reaching a core: no stage counts it.
    assert!(c.produce("nope", 0, &piped).is_err());
    let fetched = 4;
    for p in 0..fetched {
        c.fetch("t", p, 0, 1 << 20, Duration::ZERO).unwrap();
    }

    let rows = wait_for_produces(&server, produced);
    print!("{produced} produce requests, {fetched} fetches, 2 cores:\n{}", format_table(&rows));
    check_shape(&rows);
    for stage in ["receive", "append", "write", "fsync", "ack", "send", "total"] {
        assert_eq!(row(&rows, stage).count, produced, "{stage}: {rows:?}");
    }
    assert_eq!(row(&rows, "fetch").count, fetched as u64);
    // fsync covers every produce (the default policy acknowledges after it)
    // and happens inside it.
    assert!(row(&rows, "fsync").max_us <= row(&rows, "total").max_us);

    // The Stats api reads the same histograms (no request in between), and resets them after reading.
    let via_client = c.stage_latency(true).unwrap();
    assert_eq!(via_client, rows);
    let after_reset = server.stage_latency(false);
    check_shape(&after_reset);
    assert!(after_reset.iter().all(|r| r.count == 0 && r.max_us == 0), "{after_reset:?}");
    assert_eq!(c.stage_latency(false).unwrap(), after_reset);

    // One request alone: its stages tile its total. Each figure is cut to
    // whole microseconds (so the sum may fall short by up to one per
    // stage) and kept within 0.1% by the histogram.
    c.produce("t", 3, &batch("alone", 1, 1)).unwrap();
    let rows = wait_for_produces(&server, 1);
    print!("one produce request:\n{}", format_table(&rows));
    check_shape(&rows);
    let total = row(&rows, "total").max_us;
    let sum: u64 = PRODUCE_STAGES.iter().map(|s| row(&rows, s).max_us).sum();
    let slack = PRODUCE_STAGES.len() as u64 + total / 500;
    assert!(sum.abs_diff(total) <= slack, "stages add up to {sum} µs, the request took {total} µs: {rows:?}");
    server.shutdown().unwrap();
}
