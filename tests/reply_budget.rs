//! The reply budget per core (`ServerConfig::reply_budget_bytes`): Fetch
//! replies that may exist for one core's connections at once, whatever the
//! number of consumers that never read them; taken when a reply is built,
//! never while a long poll waits for data.
mod harness;

use std::io::Write;
use std::net::TcpStream;
use std::time::{Duration, Instant};

use strom::client::Client;
use strom::config::EngineConfig;
use strom::metrics::{Metric, Metrics};
use strom::proto::{self, Request};
use strom::server::{Server, ServerConfig};

/// A small budget: room for three 4 MiB fetches per core.
const REPLY_BUDGET_BYTES: usize = 16 << 20;
const NON_READERS: usize = 16;
const FETCH_BYTES: u32 = 4 << 20;

/// A consumer that pipelines 16 fetches of old data, 4 MiB each, and never
/// reads the replies.
fn non_reader(server: &Server) -> TcpStream {
    let mut s = TcpStream::connect(server.local_addr()).unwrap();
    s.set_write_timeout(Some(Duration::from_secs(1))).unwrap();
    let mut frames = Vec::new();
    for i in 0..16u64 {
        let req = Request::Fetch { topic: "old", partition: 0, offset: i % 4, max_bytes: FETCH_BYTES, max_wait_ms: 0 };
        proto::encode_request(&mut frames, i + 1, &req);
    }
    // The server stops reading once the budget or the connection's cap is
    // reached, so this may time out: expected.
    let _ = s.write_all(&frames);
    s
}

fn sum(stats: &[Metrics], m: Metric) -> u64 {
    stats.iter().map(|s| s[m]).sum()
}

/// Fails if any core has ever had more than its budget in use.
fn assert_under_budget(stats: &[Metrics], when: &str) {
    assert_under(stats, REPLY_BUDGET_BYTES, when);
}

fn assert_under(stats: &[Metrics], budget_bytes: usize, when: &str) {
    for (core, s) in stats.iter().enumerate() {
        assert!(
            s[Metric::ReplyBudgetPeakBytes] <= budget_bytes as u64,
            "{when}: core {core} had {} reply bytes in use, over its budget {budget_bytes}",
            s[Metric::ReplyBudgetPeakBytes]
        );
    }
}

/// Waits until `done` holds of the server's metrics, for a minute at most.
fn wait_for(server: &Server, what: &str, done: impl Fn(&[Metrics]) -> bool) -> Vec<Metrics> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let stats = server.metrics();
        if done(&stats) {
            return stats;
        }
        assert!(Instant::now() < deadline, "{what}: {stats:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

const POLLERS: usize = 300;
/// Room for about 20 of the pollers' largest replies (1 MiB each).
const POLL_BUDGET_BYTES: usize = 20 << 20;

// Proves: long polls parked at the end of their partition hold no reply
// budget, so 300 idle consumers on one core, with a budget that fits about
// 20 of their largest replies, all wait at once (none waits for budget
// while parked); when one record arrives every one of them gets it (those
// without room wait their turn and are served as replies are sent), and the
// budget's peak stays under it.
#[test]
fn idle_long_polls_hold_no_budget_and_all_are_served() {
    idle_long_polls(1);
}

// Proves: the same on two cores, where the partition's core builds replies
// under the other core's budget too: the bytes that core returns as it
// sends wake the partition's core to build the next.
#[test]
fn idle_long_polls_on_two_cores_are_woken_across_cores() {
    idle_long_polls(2);
}

fn idle_long_polls(cores: usize) {
    let dir = harness::test_dir(&format!("reply-budget-polls-{cores}"));
    let cfg = EngineConfig { cores, logs_on_create: 1, pin_cores: false, ..EngineConfig::default() };
    let scfg = ServerConfig { listen: "127.0.0.1:0".parse().unwrap(), reply_budget_bytes: POLL_BUDGET_BYTES, ..ServerConfig::default() };
    let server = Server::start(&dir, cfg, scfg).unwrap();
    let mut c = Client::connect(server.local_addr()).unwrap();
    c.set_timeout(Some(Duration::from_secs(120))).unwrap();
    c.create_topic("polled", 1).unwrap();
    let base = sum(&server.metrics(), Metric::Requests);
    let addr = server.local_addr();
    let pollers: Vec<_> = (0..POLLERS)
        .map(|_| {
            std::thread::spawn(move || {
                let mut p = Client::connect(addr).unwrap();
                p.set_timeout(Some(Duration::from_secs(120))).unwrap();
                let f = p.fetch("polled", 0, 0, 1 << 20, Duration::from_secs(60)).unwrap();
                harness::values(&f.batches)
            })
        })
        .collect();
    // A fetch read is a fetch parked (there is no data yet) once its
    // partition's core takes it: on its own core at once, from the other
    // core's mailbox in the same tick or the next.
    let stats = wait_for(&server, "the pollers' fetches were not all read", |s| sum(s, Metric::Requests) >= base + POLLERS as u64);
    assert_eq!(sum(&stats, Metric::ReplyBudgetUsedBytes), 0, "parked long polls hold reply budget");
    assert_eq!(sum(&stats, Metric::FetchesWaitingBudget), 0, "parked long polls wait for reply budget");
    c.produce_values("polled", 0, &[b"news"]).unwrap();
    for p in pollers {
        let got = p.join().unwrap();
        assert_eq!(got, vec![(0, "news".to_string())], "a poller got the wrong answer");
    }
    let stats = wait_for(&server, "reply budget not returned", |s| sum(s, Metric::ReplyBudgetUsedBytes) == 0);
    assert_under(&stats, POLL_BUDGET_BYTES, "after every poller was answered");
    let waits = sum(&stats, Metric::FetchBudgetWaits);
    println!(
        "{POLLERS} pollers on {cores} core(s): budget peak {:?} (budget {POLL_BUDGET_BYTES}), {waits} waits for room",
        stats.iter().map(|s| s[Metric::ReplyBudgetPeakBytes]).collect::<Vec<_>>()
    );
    // The budget bit: the answers could not all be built at once.
    assert!(waits > 0, "no poller waited for room: the test does not test the budget");
    drop(c);
    server.shutdown().unwrap();
}

// Proves: 16 consumers that pipeline big fetches and never read keep each
// core's reply bytes (reserved and unsent) under its budget, as the peak
// gauge records it; fetches wait for the budget instead of allocating; a
// normal consumer is still served (stuck holders are closed after the header
// timeout); and once the non-readers go, every byte of budget comes back.
#[test]
fn non_readers_stay_under_the_reply_budget_and_a_consumer_is_served() {
    let dir = harness::test_dir("reply-budget");
    let cfg = EngineConfig { cores: 2, logs_on_create: 2, pin_cores: false, ..EngineConfig::default() };
    let scfg = ServerConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        reply_budget_bytes: REPLY_BUDGET_BYTES,
        header_timeout: Duration::from_secs(1),
        ..ServerConfig::default()
    };
    let server = Server::start(&dir, cfg, scfg).unwrap();
    let mut c = Client::connect(server.local_addr()).unwrap();
    c.set_timeout(Some(Duration::from_secs(120))).unwrap();
    c.create_topic("old", 1).unwrap();
    let big = vec![b'o'; 1000 << 10];
    for _ in 0..8 {
        c.produce_values("old", 0, &[&big[..]]).unwrap();
    }
    let conns: Vec<TcpStream> = (0..NON_READERS).map(|_| non_reader(&server)).collect();
    // The budget bites: some fetch waits for it.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let stats = server.metrics();
        assert_under_budget(&stats, "while non-readers pile up");
        if sum(&stats, Metric::FetchBudgetWaits) > 0 {
            break;
        }
        assert!(Instant::now() < deadline, "no fetch ever waited for reply budget: {stats:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
    // A normal consumer, on whichever core, gets its whole fetch.
    let f = c.fetch("old", 0, 7, 2 << 20, Duration::ZERO).unwrap();
    assert_eq!(harness::values(&f.batches).first().map(|v| v.0), Some(7), "the consumer got the wrong records");
    let stats = server.metrics();
    assert_under_budget(&stats, "after the consumer was served");
    println!(
        "{NON_READERS} non-readers: budget peak per core {:?} (budget {REPLY_BUDGET_BYTES}), {} waits, {} stuck readers closed",
        stats.iter().map(|s| s[Metric::ReplyBudgetPeakBytes]).collect::<Vec<_>>(),
        sum(&stats, Metric::FetchBudgetWaits),
        sum(&stats, Metric::StuckReadersClosed)
    );
    drop(conns);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let stats = server.metrics();
        if sum(&stats, Metric::ReplyBudgetUsedBytes) == 0
            && sum(&stats, Metric::FetchesWaitingBudget) == 0
            && sum(&stats, Metric::BufferedBytes) == 0
        {
            assert_under_budget(&stats, "at the end");
            break;
        }
        assert!(Instant::now() < deadline, "reply budget not returned: {stats:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
    drop(c);
    server.shutdown().unwrap();
}
