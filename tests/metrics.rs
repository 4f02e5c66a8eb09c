//! `strom serve --metrics-listen`: `/metrics` read by the Prometheus
//! reference text parser and scraped by a real Prometheus server (Debian's
//! `prometheus`, when installed), and `/health` following the logs' state
//! on a disk that fills up (a loop device: root). Tests that lack what they
//! need report themselves ignored, with the reason (tests/harness/skip.rs).
mod harness;

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use harness::loopfs::LoopFs;
use harness::serve::{HANG, Serve};
use harness::skip::{self, Need};
use harness::test_dir;
use prometheus_parse::{Scrape, Value};
use strom::client::ClientError;
use strom::metrics::{Kind, Metric};
use strom::proto::ErrorCode;

fn main() {
    skip::main(vec![
        skip::trial("families_parse_and_move_under_load", &[], families_parse_and_move_under_load),
        skip::trial("other_paths_methods_and_huge_requests_are_refused", &[], other_paths_methods_and_huge_requests_are_refused),
        skip::trial("prometheus_scrapes_and_queries_it", &[Need::Tools(&["prometheus"], "prometheus")], prometheus_scrapes_and_queries_it),
        skip::trial("health_is_503_while_the_disk_is_full", &[Need::LoopFs], health_is_503_while_the_disk_is_full),
        skip::trial("health_is_503_after_an_fsync_eio_until_restart", &[Need::Failpoints], health_is_503_after_an_fsync_eio_until_restart),
    ]);
}

const METRICS_LINE: &str = "strom: metrics on ";

/// A server on `dir` with a metrics listener on a free port, and that port's address.
fn serve_with_metrics(dir: &Path) -> (Serve, SocketAddr) {
    let serve = Serve::start(dir, &["--metrics-listen", "127.0.0.1:0"]);
    let lines = serve.stderr();
    let at = lines.iter().position(|l| l.starts_with(METRICS_LINE));
    let at = at.unwrap_or_else(|| panic!("no \"{METRICS_LINE}ADDR\" line:\n{}", lines.join("\n")));
    // `start` returned at the "serving on" line, so this one came before it, as the listeners are ready first.
    let addr = lines[at][METRICS_LINE.len()..].parse().unwrap();
    (serve, addr)
}

/// Sends `request` as it is and returns the status code and the body.
fn http_raw(addr: SocketAddr, request: &[u8]) -> (u16, String) {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(10)).unwrap();
    s.set_read_timeout(Some(HANG)).unwrap();
    s.write_all(request).unwrap();
    let mut response = String::new();
    s.read_to_string(&mut response).unwrap();
    let (head, body) = response.split_once("\r\n\r\n").unwrap_or_else(|| panic!("no header end: {response:?}"));
    let status = head.split(' ').nth(1).and_then(|c| c.parse().ok()).unwrap_or_else(|| panic!("bad status line: {head:?}"));
    (status, body.to_string())
}

fn get(addr: SocketAddr, path: &str) -> (u16, String) {
    http_raw(addr, format!("GET {path} HTTP/1.0\r\nHost: strom\r\n\r\n").as_bytes())
}

fn scrape(addr: SocketAddr) -> Scrape {
    let (status, body) = get(addr, "/metrics");
    assert_eq!(status, 200, "{body}");
    Scrape::parse(body.lines().map(|l| Ok(l.to_string()))).unwrap()
}

/// The sum over cores of a counter or gauge family, checking each sample's kind.
fn total(s: &Scrape, name: &str) -> f64 {
    let kind = Metric::from_name(name).map(Metric::kind);
    s.samples
        .iter()
        .filter(|x| x.metric == name)
        .map(|x| match (&x.value, kind) {
            (Value::Counter(v), Some(Kind::Counter)) | (Value::Gauge(v), Some(Kind::Gauge) | None) => *v,
            (v, _) => panic!("{name} parsed as {v:?}, not its kind {kind:?}"),
        })
        .sum()
}

/// A counter's or gauge's value.
fn total_of(v: &Value) -> f64 {
    match v {
        Value::Counter(v) | Value::Gauge(v) | Value::Untyped(v) => *v,
        v => panic!("not a plain value: {v:?}"),
    }
}

/// The `_count` of a stage's latency histogram, summed over cores (the
/// reference parser keeps `_sum` and `_count` as plain samples).
fn stage_count(s: &Scrape, stage: &str) -> f64 {
    s.samples
        .iter()
        .filter(|x| x.metric == "strom_stage_latency_seconds_count" && x.labels.get("stage") == Some(stage))
        .map(|x| match x.value {
            Value::Untyped(v) | Value::Counter(v) | Value::Gauge(v) => v,
            ref v => panic!("a _count parsed as {v:?}"),
        })
        .sum()
}

/// Produces `n` small batches to `topic`, spread over its partitions.
fn produce(serve: &Serve, topic: &str, partitions: u32, n: u32) {
    let mut c = serve.client();
    for i in 0..n {
        c.produce_values(topic, i % partitions, &[format!("value {i}").as_bytes()]).unwrap();
    }
}

// Proves: /metrics parses with the reference parser; every registry metric
// is a family with HELP, its TYPE and a sample per core (requests: one per
// core, protocol and api seen); under a produce load the appends, records,
// network bytes, fsync and stage-latency families move by at least what was
// produced, and the requests by api count the produces and the topic's
// creation; the log sizes and start-up scan gauges are there; the stage
// histograms' buckets are cumulative up to +Inf, which equals their count;
// a Stats reset (what `strom stat` does) leaves them cumulative; partitions
// are counted; /health is 200.
fn families_parse_and_move_under_load() {
    let dir = test_dir("metrics-families");
    let (serve, addr) = serve_with_metrics(&dir);
    let before = scrape(addr);
    for &m in Metric::ALL {
        assert!(before.docs.contains_key(m.name()), "no HELP for {}", m.name());
        if m == Metric::Requests {
            // By api: a sample per api seen (none yet).
            continue;
        }
        let cores: Vec<&str> = before.samples.iter().filter(|x| x.metric == m.name()).filter_map(|x| x.labels.get("core")).collect();
        assert_eq!(cores.len(), 2, "{}: one sample per core: {cores:?}", m.name());
        total(&before, m.name());
    }
    serve.client().create_topic("scraped", 3).unwrap();
    const N: u32 = 200;
    produce(&serve, "scraped", 3, N);
    let after = scrape(addr);
    let moved = |name: &str| total(&after, name) - total(&before, name);
    assert!(moved("strom_appends_total") >= f64::from(N), "appends moved {}", moved("strom_appends_total"));
    assert!(moved("strom_log_fsyncs_total") >= 1.0 && moved("strom_log_bytes_written_total") > 0.0);
    assert!(moved("strom_requests_total") >= f64::from(N));
    let by_api = |s: &Scrape, api: &str| -> f64 {
        let samples = s.samples.iter().filter(|x| x.metric == "strom_requests_total" && x.labels.get("api") == Some(api));
        samples.inspect(|x| assert_eq!(x.labels.get("protocol"), Some("native"))).map(|x| total_of(&x.value)).sum()
    };
    assert_eq!(by_api(&after, "produce") - by_api(&before, "produce"), f64::from(N));
    assert_eq!(by_api(&after, "create_topic"), 1.0);
    // Bytes by api: the produces' request bytes are what the network took in
    // for them, at least their batches; their replies are small but there.
    let bytes = |s: &Scrape, api: &str, direction: &str| -> f64 {
        let of = |x: &&prometheus_parse::Sample| {
            x.metric == "strom_request_bytes_total" && x.labels.get("api") == Some(api) && x.labels.get("direction") == Some(direction)
        };
        s.samples.iter().filter(of).map(|x| total_of(&x.value)).sum()
    };
    let produced_in = bytes(&after, "produce", "in") - bytes(&before, "produce", "in");
    assert!(produced_in >= moved("strom_appended_bytes_total"), "produce requests took {produced_in} bytes");
    assert!(produced_in <= moved("strom_network_received_bytes_total"));
    assert!(bytes(&after, "produce", "out") - bytes(&before, "produce", "out") >= f64::from(N) * 16.0, "a reply of 16+ bytes each");
    assert!(moved("strom_records_appended_total") >= f64::from(N) && moved("strom_appended_bytes_total") > 0.0);
    assert!(moved("strom_network_received_bytes_total") > moved("strom_appended_bytes_total"), "a request is more than its batch");
    assert!(moved("strom_network_sent_bytes_total") > 0.0);
    assert!(total(&after, "strom_log_segments") >= 2.0 && total(&after, "strom_log_bytes") > 0.0, "a segment per core's log");
    assert!(after.samples.iter().any(|x| x.metric == "strom_startup_scan_microseconds"));
    assert_eq!(total(&after, "strom_partitions"), 3.0);
    assert_eq!(total(&after, "strom_logs_failed") + total(&after, "strom_logs_disk_full"), 0.0);
    for stage in ["receive", "fsync", "total"] {
        let grew = stage_count(&after, stage) - stage_count(&before, stage);
        assert!(grew >= f64::from(N), "{stage}: {grew} more samples");
    }
    let hists: Vec<_> = after.samples.iter().filter(|x| x.metric == "strom_stage_latency_seconds").collect();
    assert_eq!(hists.len(), 2 * strom::stats::STAGES.len(), "a histogram per stage and core");
    for h in hists {
        let Value::Histogram(buckets) = &h.value else { panic!("{h:?}") };
        assert!(buckets.windows(2).all(|w| w[0].less_than < w[1].less_than && w[0].count <= w[1].count), "{buckets:?}");
        let inf = buckets.last().unwrap();
        assert!(inf.less_than.is_infinite());
        let (stage, core) = (h.labels.get("stage").unwrap(), h.labels.get("core").unwrap());
        let count = after.samples.iter().find(|x| {
            x.metric == "strom_stage_latency_seconds_count" && x.labels.get("stage") == Some(stage) && x.labels.get("core") == Some(core)
        });
        assert!(matches!(count.unwrap().value, Value::Untyped(c) | Value::Counter(c) if c == inf.count), "{stage} {core}");
    }
    assert_eq!(get(addr, "/health"), (200, "ok: every log accepts writes\n".to_string()));
    serve.client().stage_latency(true).unwrap();
    let reset = scrape(addr);
    for stage in ["receive", "fsync", "total"] {
        assert!(stage_count(&reset, stage) >= stage_count(&after, stage), "{stage}: a Stats reset lowered the exported count");
    }
    let (status, lines) = serve.stop(HANG);
    assert!(status.is_some_and(|s| s.success()), "{lines:?}");
    assert!(TcpStream::connect(addr).is_err(), "the metrics listener stops with the server");
    std::fs::remove_dir_all(&dir).unwrap();
}

// Proves: the listener answers only what it serves: 404 for another path,
// 405 (with Allow) for another method, 431 for a request head over its
// limit, 400 for garbage; HEAD gets the headers without a body; and it
// still answers after each of them.
fn other_paths_methods_and_huge_requests_are_refused() {
    let dir = test_dir("metrics-refused");
    let (serve, addr) = serve_with_metrics(&dir);
    assert_eq!(get(addr, "/nope").0, 404);
    assert_eq!(http_raw(addr, b"POST /metrics HTTP/1.1\r\nContent-Length: 0\r\n\r\n").0, 405);
    let huge = format!("GET /metrics HTTP/1.1\r\nX-Pad: {}\r\n\r\n", "a".repeat(64 << 10));
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(HANG)).unwrap();
    // The server answers after 8 KiB and closes: the rest of the write may fail, which is the point.
    let _ = s.write_all(huge.as_bytes());
    let mut answer = String::new();
    let _ = s.read_to_string(&mut answer);
    assert!(answer.starts_with("HTTP/1.1 431 "), "{answer:?}");
    assert_eq!(http_raw(addr, b"hello\r\n\r\n").0, 400);
    let (status, body) = http_raw(addr, b"HEAD /health HTTP/1.1\r\n\r\n");
    assert_eq!((status, body.as_str()), (200, ""));
    assert_eq!(get(addr, "/metrics?x=1").0, 200);
    drop(serve);
    std::fs::remove_dir_all(&dir).unwrap();
}

/// A free port on 127.0.0.1 (bound, then let go for the child to take).
fn free_addr() -> SocketAddr {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap()
}

/// Kills the Prometheus child however the test ends.
struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The value of a one-series instant query, once Prometheus has one.
fn query(prom: SocketAddr, q: &str) -> Option<f64> {
    let path = format!("/api/v1/query?query={}", q.replace(' ', "%20").replace('{', "%7B").replace('}', "%7D").replace('"', "%22"));
    // HTTP/1.0, so Prometheus answers with a plain body and closes.
    let (status, body) = http_raw(prom, format!("GET {path} HTTP/1.0\r\n\r\n").as_bytes());
    let v: serde_json::Value = serde_json::from_str(&body).unwrap_or_else(|e| panic!("{status} not JSON ({e}): {body}"));
    assert_eq!(v["status"], "success", "{body}");
    v["data"]["result"].get(0).and_then(|r| r["value"][1].as_str()).and_then(|s| s.parse().ok())
}

// Proves: a real Prometheus server scrapes /metrics (its parser, stricter
// than the reference crate's, takes every line) and its query API then has
// the appends counter, the produce requests by api, the fsync latency
// histogram's count and the partitions gauge at the values the load made.
fn prometheus_scrapes_and_queries_it() {
    let dir = test_dir("metrics-prometheus");
    let (serve, addr) = serve_with_metrics(&dir);
    serve.client().create_topic("scraped", 2).unwrap();
    const N: u32 = 50;
    produce(&serve, "scraped", 2, N);
    let prom = free_addr();
    let config = dir.join("prometheus.yml");
    std::fs::write(
        &config,
        format!("global:\n  scrape_interval: 1s\nscrape_configs:\n  - job_name: strom\n    static_configs:\n      - targets: ['{addr}']\n"),
    )
    .unwrap();
    let log = std::fs::File::create(dir.join("prometheus.log")).unwrap();
    let child = Command::new("prometheus")
        .arg(format!("--config.file={}", config.display()))
        .arg(format!("--storage.tsdb.path={}", dir.join("tsdb").display()))
        .arg(format!("--web.listen-address={prom}"))
        .stdin(Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .expect("start prometheus");
    let _prometheus = KillOnDrop(child);
    let deadline = Instant::now() + HANG;
    let want = [
        ("sum(strom_appends_total)", f64::from(N)),
        ("sum(strom_requests_total{api=\"produce\",protocol=\"native\"})", f64::from(N)),
        ("sum(strom_stage_latency_seconds_count{stage=\"fsync\"})", f64::from(N)),
        ("strom_partitions", 2.0),
        ("up{job=\"strom\"}", 1.0),
    ];
    let mut got: HashMap<&str, f64> = HashMap::new();
    while got.len() < want.len() {
        assert!(Instant::now() < deadline, "Prometheus has {got:?} of {want:?}; its log:\n{}", log_of(&dir));
        std::thread::sleep(Duration::from_millis(500));
        // Refused until Prometheus listens; empty until its first scrape.
        if TcpStream::connect(prom).is_err() {
            continue;
        }
        for (q, at_least) in want {
            if let Some(v) = query(prom, q) {
                assert!(v >= at_least, "{q} = {v}, want at least {at_least}");
                got.insert(q, v);
            }
        }
    }
    drop(serve);
    std::fs::remove_dir_all(&dir).unwrap();
}

fn log_of(dir: &Path) -> String {
    std::fs::read_to_string(dir.join("prometheus.log")).unwrap_or_default()
}

// Proves: /health answers 503, naming the full disk, while a log refuses
// writes for it, and 200 again once space is freed and a write went
// through; the gauge behind it moves the same way.
fn health_is_503_while_the_disk_is_full() {
    let fs = LoopFs::new("metrics-health", 48, &["-m", "0"]);
    let dir = fs.mount_point().join("data");
    let (serve, addr) = serve_with_metrics(&dir);
    let mut c = serve.client();
    c.create_topic("full", 1).unwrap();
    // Leaves a few MiB, filled in a moment by 64 KiB records.
    let ballast = fs.mount_point().join("ballast");
    let size = fs.free_bytes().saturating_sub(8 << 20);
    let f = std::fs::File::create(&ballast).unwrap();
    f.set_len(0).unwrap();
    let chunk = vec![0u8; 1 << 20];
    let mut w = std::io::BufWriter::new(f);
    for _ in 0..size >> 20 {
        w.write_all(&chunk).unwrap();
    }
    w.into_inner().unwrap().sync_all().unwrap();
    let value = vec![7u8; 64 << 10];
    let refused = (0..10_000).find_map(|_| match c.produce_values("full", 0, &[&value]) {
        Ok(_) => None,
        Err(ClientError::Server { code: ErrorCode::DiskFull, .. }) => Some(()),
        Err(e) => panic!("{e}"),
    });
    assert!(refused.is_some(), "the disk never filled");
    let (status, body) = get(addr, "/health");
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("the disk is full"), "{body}");
    assert_eq!(total(&scrape(addr), "strom_logs_disk_full"), 1.0);
    std::fs::remove_file(&ballast).unwrap();
    // The log tries its full commits again on its own; a produce that is
    // acknowledged proves it writes again.
    let deadline = Instant::now() + HANG;
    while c.produce_values("full", 0, &[b"after"]).is_err() {
        assert!(Instant::now() < deadline, "no write went through after freeing space");
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(get(addr, "/health").0, 200);
    assert_eq!(total(&scrape(addr), "strom_logs_disk_full"), 0.0);
    drop(serve);
}

// Proves: an EIO on a log's fdatasync (failpoint `journal_fsync_result`,
// action `eio`) fails that log: produces to it are refused, /health answers
// 503 naming the core, and the failed-logs gauge is 1; after a restart
// without the failpoint /health is 200 again and every record acknowledged
// before the failure reads back.
fn health_is_503_after_an_fsync_eio_until_restart() {
    let dir = test_dir("metrics-health-eio");
    // One core: the failing fsync is that core's log, whatever the partition.
    const FAIL_AT: u32 = 6;
    let armed = format!("journal_fsync_result:{FAIL_AT}:eio");
    let serve = Serve::on(&dir).cores(1).args(&["--metrics-listen", "127.0.0.1:0"]).failpoint(Some(&armed)).start();
    let addr = metrics_addr(&serve);
    let mut c = serve.client();
    c.create_topic("eio", 1).unwrap();
    let mut acked = Vec::new();
    let refused = (0..FAIL_AT * 4).find_map(|i| {
        let value = format!("before {i}");
        match c.produce_values("eio", 0, &[value.as_bytes()]) {
            Ok(ack) => {
                acked.push((ack.base_offset, value));
                None
            }
            Err(ClientError::Server { code, .. }) => Some(code),
            Err(e) => panic!("{e}"),
        }
    });
    assert_eq!(refused, Some(ErrorCode::StorageFailed), "a produce is refused once the fsync failed");
    assert!(!acked.is_empty(), "the failpoint fired before any acknowledgement: nothing to check after the restart");
    let (status, body) = get(addr, "/health");
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("core 0: 1 log(s) failed a write or fsync"), "{body}");
    let s = scrape(addr);
    assert_eq!(total(&s, "strom_logs_failed"), 1.0);
    let storage_failed = s.samples.iter().any(|x| {
        x.metric == "strom_request_errors_total" && x.labels.get("api") == Some("produce") && x.labels.get("code") == Some("storage_failed")
    });
    assert!(storage_failed, "the refused produce is counted by api and code");
    drop(c);
    drop(serve);
    let serve = Serve::on(&dir).cores(1).args(&["--metrics-listen", "127.0.0.1:0"]).start();
    let addr = metrics_addr(&serve);
    assert_eq!(get(addr, "/health"), (200, "ok: every log accepts writes\n".to_string()));
    let mut c = serve.client();
    for (offset, value) in &acked {
        let f = c.fetch("eio", 0, *offset, 1 << 20, Duration::ZERO).unwrap();
        let first = f.records_from(*offset).next().unwrap_or_else(|| panic!("offset {offset} is gone")).unwrap();
        assert_eq!((first.0, first.1), (*offset, Some(value.as_bytes())));
    }
    c.produce_values("eio", 0, &[b"after"]).unwrap();
    drop(serve);
    std::fs::remove_dir_all(&dir).unwrap();
}

/// The metrics listener's address, from the line the server printed.
fn metrics_addr(serve: &Serve) -> SocketAddr {
    let lines = serve.stderr();
    let line = lines.iter().find_map(|l| l.strip_prefix(METRICS_LINE));
    line.unwrap_or_else(|| panic!("no \"{METRICS_LINE}ADDR\" line:\n{}", lines.join("\n"))).parse().unwrap()
}
