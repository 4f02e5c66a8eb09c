//! Subscriptions on the whole server under the simulator: a subscriber on
//! core 0 follows every partition (those of core 1 through its mailbox)
//! with a random credit, granting it back a random while after each push,
//! while a producer appends batches under a random fsync policy. Every
//! acknowledged record must reach the subscriber once, in offset order, and
//! the pushes must stay within the credit plus one batch; a Cancel then
//! ends each subscription with its end frame before the Cancel's reply.
//!
//! Seeds: `STROM_SIM_SEEDS=N` runs N (default 40); `STROM_SIM_SEED=S` replays one.
mod harness;

use std::collections::BTreeMap;

use strom::catalog::Catalog;
use strom::config::{EngineConfig, FsyncPolicy};
use strom::io::sim::{SimConn, SimDisk, SimRng};
use strom::proto::{self, Api, ErrorCode, Request, Response, SubscribeStart};
use strom::server::ServerConfig;
use strom::server::sim::SimServer;

const TOPIC: &str = "t";
const PARTITIONS: u32 = 3;
/// Ticks the subscriber may take to see everything acknowledged (virtual
/// time: nothing depends on the machine's speed).
const TICKS_MAX: usize = 20_000;

/// A raw connection: bytes to send, bytes received.
struct Conn {
    conn: SimConn,
    unsent: Vec<u8>,
    received: Vec<u8>,
}

impl Conn {
    fn request(&mut self, id: u64, req: &Request<'_>) {
        proto::encode_request(&mut self.unsent, id, req);
    }

    fn pump(&mut self) -> Vec<Vec<u8>> {
        let sent = self.conn.send(&self.unsent);
        self.unsent.drain(..sent);
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

/// One subscription as its client sees it.
#[derive(Default)]
struct Sub {
    /// The records pushed so far, by offset.
    got: BTreeMap<u64, String>,
    granted_bytes: u64,
    pushed_bytes: u64,
    /// Bytes taken and not yet granted back, and the tick to grant them at.
    owed: Option<(u64, usize)>,
}

fn run_seed(seed: u64) {
    let mut rng = SimRng::new(seed);
    let mut cfg = EngineConfig::small_for_tests();
    cfg.cores = 2;
    cfg.logs_on_create = 2;
    cfg.fsync =
        [FsyncPolicy::Always, FsyncPolicy::Never, FsyncPolicy::Interval(std::time::Duration::from_micros(300))][rng.below(3) as usize];
    let dir = harness::test_dir("sim-subscribe");
    Catalog::open_or_create(&dir, cfg.logs_on_create).unwrap().create_topic(TOPIC, PARTITIONS, 1 << 16, Default::default(), &[]).unwrap();
    let scfg = ServerConfig { reply_bufs_per_core: 2, connections_max: 16, ..ServerConfig::default() };
    let (mut server, _) = SimServer::start(&dir, vec![SimDisk::new(); 2], seed, cfg, scfg).unwrap();
    let connect =
        |s: &SimServer, core| Conn { conn: s.net().connect(SimServer::port(core)).unwrap(), unsent: Vec::new(), received: Vec::new() };
    let (mut producer, mut subscriber) = (connect(&server, rng.below(2) as usize), connect(&server, 0));
    let batch_max = harness::batch("p-999-9", 4, 0).len() as u64;
    let credit = [1, 300, 2000, 1 << 20][rng.below(4) as usize];
    let mut subs: Vec<Sub> = (0..PARTITIONS).map(|_| Sub { granted_bytes: credit, ..Sub::default() }).collect();
    for partition in 0..PARTITIONS {
        let start = SubscribeStart::Earliest;
        subscriber.request(100 + u64::from(partition), &Request::Subscribe { topic: TOPIC, partition, credit_bytes: credit, start });
    }
    // Produce ids are 1..; what each acknowledged produce stored, by partition and offset.
    let mut produced: BTreeMap<u64, (u32, Vec<String>)> = BTreeMap::new();
    let mut acked: Vec<BTreeMap<u64, String>> = vec![BTreeMap::new(); PARTITIONS as usize];
    let produce_ticks = 50 + rng.below(200) as usize;
    for tick in 0..TICKS_MAX {
        if tick < produce_ticks && rng.below(3) == 0 && produced.len() < 8 {
            let (id, partition, count) = (tick as u64 + 1, rng.below(u64::from(PARTITIONS)) as u32, 1 + rng.below(4) as usize);
            let prefix = format!("p-{tick}");
            producer.request(id, &Request::Produce { topic: TOPIC, partition, batches: &harness::batch(&prefix, count, 0) });
            produced.insert(id, (partition, (0..count).map(|i| format!("{prefix}-{i}")).collect()));
        }
        server.tick().unwrap();
        for frame in producer.pump() {
            let (h, resp) = proto::decode_response(&frame).unwrap();
            let Response::Produce { base_offset, .. } = resp else { panic!("seed {seed}: produce answered {resp:?}") };
            let (partition, values) = produced.remove(&h.request_id).unwrap();
            for (i, v) in values.into_iter().enumerate() {
                acked[partition as usize].insert(base_offset + i as u64, v);
            }
        }
        for frame in subscriber.pump() {
            take_push(seed, &frame, &mut subs, batch_max, tick, &mut rng);
        }
        for (i, s) in subs.iter_mut().enumerate() {
            if let Some((bytes, at)) = s.owed
                && at <= tick
            {
                subscriber.request(1000 + tick as u64, &Request::Grant { subscription: 100 + i as u64, bytes });
                s.granted_bytes += bytes;
                s.owed = None;
            }
        }
        let caught_up = subs.iter().zip(&acked).all(|(s, a)| s.got.len() == a.len());
        if tick > produce_ticks && produced.is_empty() && caught_up {
            for (s, a) in subs.iter().zip(&acked) {
                assert_eq!(&s.got, a, "seed {seed}: the pushes are not the acknowledged records");
            }
            return cancel_all(seed, &mut server, &mut subscriber);
        }
    }
    panic!("seed {seed}: the subscriber did not catch up in {TICKS_MAX} ticks");
}

/// Takes one push: its records must follow on, its bytes stay within the credit plus one batch.
fn take_push(seed: u64, frame: &[u8], subs: &mut [Sub], batch_max: u64, tick: usize, rng: &mut SimRng) {
    let (h, resp) = proto::decode_response(frame).unwrap();
    let Response::Subscribe { from_offset, next_offset, batches, .. } = resp else { panic!("seed {seed}: a push was {resp:?}") };
    let s = &mut subs[(h.request_id - 100) as usize];
    assert_eq!(from_offset, s.got.len() as u64, "seed {seed}: a push that does not follow on");
    for (offset, value) in harness::values(batches) {
        if offset >= from_offset {
            assert_eq!(offset, s.got.len() as u64, "seed {seed}: a record lost or doubled");
            s.got.insert(offset, value);
        }
    }
    assert_eq!(next_offset, s.got.len() as u64, "seed {seed}");
    s.pushed_bytes += batches.len() as u64;
    assert!(s.pushed_bytes < s.granted_bytes + batch_max, "seed {seed}: pushed {} with {} granted", s.pushed_bytes, s.granted_bytes);
    let owed = s.owed.map_or(0, |(b, _)| b) + batches.len() as u64;
    s.owed = Some((owed, tick + rng.below(20) as usize));
}

/// Cancels every subscription: each ends with Cancelled, then its Cancel is answered.
fn cancel_all(seed: u64, server: &mut SimServer, subscriber: &mut Conn) {
    for p in 0..u64::from(PARTITIONS) {
        subscriber.request(200 + p, &Request::Cancel { request: 100 + p });
    }
    let mut ended = Vec::new();
    for _ in 0..TICKS_MAX {
        server.tick().unwrap();
        for frame in subscriber.pump() {
            let (h, resp) = proto::decode_response(&frame).unwrap();
            match (Api::from_u16(h.api), resp) {
                // A push already on its way when the Cancel arrived.
                (Some(Api::Subscribe), Response::Subscribe { .. }) => {
                    assert!(!ended.contains(&h.request_id), "seed {seed}: a push after the end")
                }
                (Some(Api::Subscribe), Response::Error { code: ErrorCode::Cancelled, .. }) => ended.push(h.request_id),
                (Some(Api::Cancel), Response::Cancel) => {
                    assert!(ended.contains(&(h.request_id - 100)), "seed {seed}: the Cancel answered before the end frame");
                    if ended.len() == PARTITIONS as usize && h.request_id == 200 + u64::from(PARTITIONS) - 1 {
                        return;
                    }
                }
                (_, other) => panic!("seed {seed}: unexpected {other:?}"),
            }
        }
    }
    panic!("seed {seed}: the Cancels were not answered");
}

#[test]
fn subscribers_see_every_acknowledged_record_once_within_their_credit() {
    if let Some(seed) = std::env::var("STROM_SIM_SEED").ok().and_then(|s| s.parse().ok()) {
        return run_seed(seed);
    }
    let seeds: u64 = std::env::var("STROM_SIM_SEEDS").ok().and_then(|s| s.parse().ok()).unwrap_or(40);
    for seed in 0..seeds {
        run_seed(seed);
    }
}
