//! The whole server under the simulator (issue 11, item 4): native clients
//! on a simulated network produce to the partitions of one or two simulated
//! cores (forwarded between cores when they connect to the other one),
//! sending their frames in pieces of random size, and the power is cut, the
//! process killed, or the server stopped cleanly at a random tick, with
//! requests in the middle of arriving, being written or being answered (a
//! clean stop answers them, and the next start scans nothing). After every restart a client
//! reads every partition back through the server, and the shared checker
//! (tests/harness/checker) judges it: nothing acknowledged lost, corrupt,
//! changed, duplicated or moved, no holes, no phantoms; no invariant audit
//! fires.
//!
//! Seeds: `STROM_SIM_SEEDS=N` runs N (default 200); `STROM_SIM_SEED=S`
//! replays one.
mod harness;

use std::collections::BTreeMap;

use harness::checker::{self, Checker, Reader, Send};
use strom::catalog::Catalog;
use strom::config::{EngineConfig, FsyncPolicy};
use strom::io::sim::{SimConn, SimDisk, SimRng};
use strom::proto::{self, Request, Response};
use strom::server::ServerConfig;
use strom::server::sim::SimServer;

const TOPIC: &str = "t";
/// Ticks a request may take before the test calls it a hang (virtual time:
/// nothing here depends on the machine's speed).
const TICKS_MAX: usize = 20_000;

/// A client: its connection, bytes still to send, bytes received, and its
/// produces awaiting replies by request id.
struct Client {
    conn: SimConn,
    unsent: Vec<u8>,
    received: Vec<u8>,
    produces: BTreeMap<u64, Send>,
    next_id: u64,
    /// The last send was a piece: the next sends the rest.
    split: bool,
}

impl Client {
    fn connect(server: &SimServer, core: usize) -> Client {
        let conn = server.net().connect(SimServer::port(core)).expect("the server listens");
        Client { conn, unsent: Vec::new(), received: Vec::new(), produces: BTreeMap::new(), next_id: 1, split: false }
    }

    fn request(&mut self, req: &Request<'_>) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        proto::encode_request(&mut self.unsent, id, req);
        id
    }

    /// Sends a random piece of what is queued (a frame may arrive in parts),
    /// and the rest at the next call: a frame spans at most two ticks here;
    /// senders slower than the header timeout are the abuse tests' business.
    fn send_some(&mut self, rng: &mut SimRng) {
        if self.unsent.is_empty() {
            return;
        }
        self.split = !self.split && rng.below(2) == 0;
        let n = if self.split { 1 + rng.below(self.unsent.len() as u64) as usize } else { self.unsent.len() };
        let sent = self.conn.send(&self.unsent[..n]);
        self.unsent.drain(..sent);
    }

    /// The whole reply frames received so far.
    fn replies(&mut self) -> Vec<Vec<u8>> {
        self.conn.recv(&mut self.received);
        let mut out = Vec::new();
        while let Ok(Some(total)) = proto::frame_len(&self.received, usize::MAX)
            && self.received.len() >= total
        {
            out.push(self.received.drain(..total).collect());
        }
        out
    }
}

fn config(rng: &mut SimRng, cores: usize) -> EngineConfig {
    let mut cfg = EngineConfig::small_for_tests();
    cfg.cores = cores;
    cfg.logs_on_create = cores as u32 + rng.below(2) as u32;
    cfg.fsync = match rng.below(5) {
        0 => FsyncPolicy::Interval(std::time::Duration::from_micros(300)),
        1 => FsyncPolicy::Never,
        _ => FsyncPolicy::Always,
    };
    cfg.write_depth = 1 + rng.below(2) as usize;
    cfg.checkpoint_interval_bytes = [64 << 10, 256 << 10, 1 << 30][rng.below(3) as usize];
    cfg
}

fn server_config() -> ServerConfig {
    ServerConfig { reply_bufs_per_core: 2, connections_max: 64, ..ServerConfig::default() }
}

/// Queues a produce of 1-4 records of producer `producer` to a random partition.
fn produce(c: &mut Client, rng: &mut SimRng, partitions: u32, producer: u32, seq: &mut u64, checker: &Checker) {
    let partition = rng.below(partitions as u64) as u32;
    let count = 1 + rng.below(4) as u32;
    let pad_max = if rng.below(8) == 0 { 3000 } else { 100 };
    let extra = rng.below(pad_max) as u32;
    let batch = checker::batch_for(producer, *seq, count, |_| extra);
    let send = checker.record_send(TOPIC, partition, producer, *seq, count);
    *seq += count as u64;
    let id = c.request(&Request::Produce { topic: TOPIC, partition, batches: &batch });
    c.produces.insert(id, send);
}

/// Takes the replies that arrived: acknowledged produces go to the checker.
fn take_replies(c: &mut Client, checker: &Checker, seed: u64) {
    for frame in c.replies() {
        let (h, resp) = proto::decode_response(&frame).unwrap_or_else(|e| panic!("seed {seed}: a reply that does not decode: {e:?}"));
        let send = c.produces.remove(&h.request_id).unwrap_or_else(|| panic!("seed {seed}: a reply to no request: {h:?} {resp:?}"));
        match resp {
            Response::Produce { base_offset, last_offset } => {
                assert_eq!(last_offset - base_offset + 1, send.count() as u64, "seed {seed}: offsets of a produce");
                checker.record_ack(&send, base_offset);
            }
            other => panic!("seed {seed}: a produce without faults answered {other:?}"),
        }
    }
}

/// Reads every partition back through the server, as the checker's final read.
fn final_read(server: &mut SimServer, partitions: u32, checker: &Checker, rng: &mut SimRng, seed: u64) {
    let mut c = Client::connect(server, rng.below(server.cores() as u64) as usize);
    for partition in 0..partitions {
        checker.begin_final(TOPIC, partition);
        let mut offset = 0;
        loop {
            let req = Request::Fetch { topic: TOPIC, partition, offset, max_bytes: 16 << 10, max_wait_ms: 0 };
            c.request(&req);
            let mut ticks = 0;
            let frame = loop {
                c.send_some(rng);
                server.tick().unwrap();
                if let Some(f) = c.replies().pop() {
                    break f;
                }
                ticks += 1;
                assert!(ticks < TICKS_MAX, "seed {seed}: a fetch got no reply in {TICKS_MAX} ticks");
            };
            let (_, resp) = proto::decode_response(&frame).unwrap();
            let Response::Fetch { high_watermark, batches, .. } = resp else { panic!("seed {seed}: fetch answered {resp:?}") };
            let next = checker.observe_fetch(Reader::Final, TOPIC, partition, offset, batches);
            if next == offset {
                if offset < high_watermark {
                    checker.final_stalled(TOPIC, partition, offset, high_watermark);
                }
                break;
            }
            offset = next;
        }
    }
}

/// Produces from several clients for a random number of ticks, then cuts
/// them off: what is still unanswered is indeterminate. Producer ids are
/// new each round (`first_producer` up), each numbering from 0.
fn load(server: &mut SimServer, partitions: u32, checker: &Checker, rng: &mut SimRng, first_producer: u32, seed: u64) {
    let mut clients: Vec<Client> =
        (0..1 + rng.below(3)).map(|_| Client::connect(server, rng.below(server.cores() as u64) as usize)).collect();
    let mut seqs = vec![0u64; clients.len()];
    for _ in 0..20 + rng.below(150) {
        for (i, c) in clients.iter_mut().enumerate() {
            if rng.below(3) == 0 && c.produces.len() < 8 {
                produce(c, rng, partitions, first_producer + i as u32, &mut seqs[i], checker);
            }
            c.send_some(rng);
        }
        server.tick().unwrap();
        for c in &mut clients {
            take_replies(c, checker, seed);
        }
    }
    for c in clients {
        for send in c.produces.values() {
            checker.record_indeterminate(send);
        }
    }
}

/// Every block-aligned frame header in every segment: where, which epoch, which partition, which offsets.
fn dump_frames(disks: &[SimDisk]) {
    for d in disks {
        for p in d.paths().into_iter().filter(|p| p.to_string_lossy().ends_with(".seg")) {
            let bytes = d.file(&p).unwrap();
            let start: u64 = p.file_stem().unwrap().to_string_lossy().parse().unwrap();
            let mut at = 0;
            while at + 4096 <= bytes.len() {
                if let Ok(h) = strom::log::frame::decode_header(&bytes[at..], start + at as u64, 1 << 20) {
                    let base = strom::wire::batch::parse_header(&bytes[at + strom::log::frame::HEADER_BYTES..]).map(|i| i.base_offset).ok();
                    eprintln!(
                        "  {} @{} epoch {} kind {:?} pid {} base {:?} durable_before {}",
                        p.display(),
                        h.pos,
                        h.epoch,
                        h.kind,
                        h.pid,
                        base,
                        h.durable_before
                    );
                }
                at += 512;
            }
        }
    }
}

fn run_seed(seed: u64, totals: &mut (u64, u64)) {
    let mut rng = SimRng::new(seed);
    let cores = 1 + rng.below(2) as usize;
    let cfg = config(&mut rng, cores);
    let partitions = 1 + rng.below(4) as u32;
    let dir = harness::test_dir("sim-server");
    Catalog::open_or_create(&dir, cfg.logs_on_create).unwrap().create_topic(TOPIC, partitions, 1 << 16, Default::default(), &[]).unwrap();
    let mut disks = vec![SimDisk::new(); cores];
    let checker = Checker::new();
    let (mut clean, mut crashed) = (false, false);
    for _round in 0..4u32 {
        let (mut server, reports) = SimServer::start(&dir, disks, rng.next_u64(), cfg.clone(), server_config())
            .unwrap_or_else(|e| panic!("seed {seed}: restart failed: {e}"));
        // After a clean stop the next start scans nothing, unless an earlier
        // crash left cut bytes past the end that no write has covered since.
        if clean && !crashed {
            assert!(reports.iter().all(|r| r.bytes_scanned == 0), "seed {seed}: scanned after a clean stop: {reports:?}");
        }
        clean = false;
        if std::env::var_os("STROM_SIM_VERBOSE").is_some() {
            eprintln!("seed {seed} round {_round}: recovered {reports:?}");
        }
        final_read(&mut server, partitions, &checker, &mut rng, seed);
        load(&mut server, partitions, &checker, &mut rng, _round * 16, seed);
        assert_eq!(server.audit_violations(), 0, "seed {seed}: an invariant audit fired");
        let clean_stop = rng.below(5) == 0;
        let power_cut = !clean_stop && cfg.fsync == FsyncPolicy::Always && rng.below(4) != 0;
        if std::env::var_os("STROM_SIM_VERBOSE").is_some() {
            eprintln!(
                "seed {seed} round {_round}: {cores} cores, {partitions} partitions, {cfg:?}; acked {}; power cut: {power_cut}",
                checker.acked_count()
            );
        }
        disks = if clean_stop {
            // A clean stop: in-flight produces are answered before it ends,
            // and the next start must scan nothing.
            let disks = server.stop().unwrap_or_else(|e| panic!("seed {seed}: clean stop: {e}"));
            clean = true;
            disks
        } else if power_cut {
            crashed = true;
            // A power cut: `always` acknowledged only what an fdatasync covered.
            server.crash(&mut rng)
        } else {
            // A kill: the page cache survives, all `interval` and `never` promise.
            crashed = true;
            server.kill()
        };
        totals.1 += 1;
        if std::env::var_os("STROM_SIM_VERBOSE").is_some() {
            dump_frames(&disks);
        }
    }
    let (mut server, _) = SimServer::start(&dir, disks, rng.next_u64(), cfg, server_config()).unwrap();
    final_read(&mut server, partitions, &checker, &mut rng, seed);
    drop(server);
    let report = checker.report();
    if !report.is_clean() {
        eprintln!("seed {seed}:");
        report.assert_clean();
    }
    totals.0 += checker.acked_count();
    let _ = std::fs::remove_dir_all(&dir);
}

// Proves: through the server's whole request path, across seeds, crashes and kills mid-request, nothing acknowledged is lost or changed.
#[test]
fn server_crashes_lose_nothing_acknowledged() {
    let mut totals = (0, 0);
    let seeds = harness::for_each_seed("sim_server", 200, |seed| run_seed(seed, &mut totals));
    println!(
        "simulated server: {seeds} seeds, {} acknowledged records checked across {} restarts (power cuts, kills, clean stops)",
        totals.0, totals.1
    );
    assert!(totals.0 > 0, "the simulation acknowledged nothing");
}
