//! Idempotent producers (issue 15): a batch sent again by a producer with a
//! producer id is answered with the offsets it was first given and stored
//! once, a gap or an older epoch is refused with nothing stored, and both
//! hold across a clean restart (the checkpoint), a kill (the tail scan)
//! and a power cut.
mod harness;

use std::collections::BTreeMap;
use std::path::PathBuf;

use harness::{Slot, read_to_end, slot, test_dir};
use strom::config::EngineConfig;
use strom::core::{AppendAck, Core, CoreSpec, Request, ValidBatch};
use strom::engine::Engine;
use strom::error::{Result, StromError};
use strom::io::sim::{SimDisk, SimFaults, SimIo, SimRng};
use strom::metrics::Metric;
use strom::wire::batch::BatchBuilder;

/// A batch of `n` records of producer `producer_id`, values `{tag}-{seq}`.
fn pbatch(tag: &str, producer_id: i64, epoch: i16, first_seq: i32, n: i32) -> Vec<u8> {
    let mut b = BatchBuilder::new(1_000).producer(producer_id, epoch, first_seq);
    for i in 0..n {
        b.push(1_000 + i64::from(i), None, Some(format!("{tag}-{}", first_seq + i).as_bytes()), &[]);
    }
    b.finish()
}

fn cfg() -> EngineConfig {
    EngineConfig { cores: 1, logs_on_create: 1, pin_cores: false, ..EngineConfig::small_for_tests() }
}

fn offsets(a: &AppendAck) -> (u64, u64) {
    (a.base_offset, a.last_offset)
}

fn engine_metric(e: &Engine, m: Metric) -> u64 {
    e.metrics().unwrap().iter().map(|x| x.get(m)).sum()
}

// Proves through the embedded engine: a batch sent again gets its first
// offsets and is stored once; a gap and an older epoch are refused with
// their typed errors and store nothing; a batch without a producer id is
// never checked; and after a clean restart (from the checkpoint alone) a
// batch sent again still gets its first offsets.
#[test]
fn duplicates_gaps_and_epochs_through_the_engine() {
    let dir = test_dir("idempotent-engine");
    let e = Engine::open(&dir, cfg()).unwrap();
    e.create_topic("t", 1).unwrap();
    let first = e.append("t", 0, pbatch("a", 7, 0, 0, 3)).unwrap();
    let second = e.append("t", 0, pbatch("a", 7, 0, 3, 2)).unwrap();
    assert_eq!((offsets(&first), offsets(&second)), ((0, 2), (3, 4)));
    assert_eq!(offsets(&e.append("t", 0, pbatch("a", 7, 0, 0, 3)).unwrap()), (0, 2));
    assert_eq!(offsets(&e.append("t", 0, pbatch("a", 7, 0, 3, 2)).unwrap()), (3, 4));
    let gap = e.append("t", 0, pbatch("a", 7, 0, 9, 1)).unwrap_err();
    assert_eq!(gap, StromError::OutOfOrderSequence { producer_id: 7, expected: 5, got: 9 });
    // Native batches (producer id -1) are the same bytes every time and never checked.
    let native = harness::batch("n", 1, 5);
    assert_eq!(e.append("t", 0, native.clone()).unwrap().base_offset, 5);
    assert_eq!(e.append("t", 0, native).unwrap().base_offset, 6);
    // A newer epoch starts at 0; the older one is then fenced.
    assert_eq!(e.append("t", 0, pbatch("b", 7, 1, 0, 1)).unwrap().base_offset, 7);
    let fenced = e.append("t", 0, pbatch("a", 7, 0, 5, 1)).unwrap_err();
    assert_eq!(fenced, StromError::InvalidProducerEpoch { producer_id: 7, epoch: 0, current: 1 });
    let got = read_to_end(&e, "t", 0, 0, 4096);
    let values: Vec<&str> = got.iter().map(|(_, v)| v.as_str()).collect();
    assert_eq!(values, ["a-0", "a-1", "a-2", "a-3", "a-4", "n-0", "n-0", "b-0"], "stored once each, nothing refused");
    assert_eq!(engine_metric(&e, Metric::AppendsDuplicate), 2);
    e.shutdown().unwrap();

    let e = Engine::open(&dir, cfg()).unwrap();
    assert!(e.recovery_reports().iter().all(|r| r.bytes_scanned == 0), "a clean stop left a tail: {:?}", e.recovery_reports());
    assert_eq!(offsets(&e.append("t", 0, pbatch("b", 7, 1, 0, 1)).unwrap()), (7, 7));
    assert!(matches!(e.append("t", 0, pbatch("a", 7, 0, 3, 2)), Err(StromError::InvalidProducerEpoch { .. })));
    assert_eq!(e.append("t", 0, pbatch("b", 7, 1, 1, 1)).unwrap().base_offset, 8);
    assert_eq!(e.partition_stat("t", 0).unwrap().end_offset, 9);
    e.shutdown().unwrap();
}

fn spec() -> CoreSpec {
    CoreSpec {
        core_id: 0,
        data_dir: PathBuf::from("/idem"),
        log_count: 1,
        logs: vec![0],
        pids: vec![0],
        indexed: Default::default(),
        needs: Default::default(),
        marks: Default::default(),
    }
}

fn sim_cfg() -> EngineConfig {
    // No checkpoint is due while running: a kill leaves the tail to scan.
    EngineConfig { checkpoint_interval_bytes: 1 << 40, ..EngineConfig::small_for_tests() }
}

fn open(disk: SimDisk, seed: u64) -> Core<SimIo> {
    Core::open(SimIo::new(disk, seed, SimFaults::default()), sim_cfg(), spec()).unwrap().0
}

fn send(core: &mut Core<SimIo>, b: Vec<u8>) -> Slot<AppendAck> {
    let (s, reply) = slot::<AppendAck>();
    core.handle(Request::Append { pid: 0, batch: ValidBatch::new(b, 1 << 20).unwrap(), reply });
    s
}

fn wait(core: &mut Core<SimIo>, s: &Slot<AppendAck>) -> Result<(u64, u64)> {
    while s.lock().unwrap().is_none() {
        core.tick().unwrap();
    }
    s.lock().unwrap().take().unwrap().map(|a| offsets(&a))
}

/// Sends one batch and waits for its answer.
fn append(core: &mut Core<SimIo>, b: Vec<u8>) -> Result<(u64, u64)> {
    let s = send(core, b);
    wait(core, &s)
}

fn stored(core: &mut Core<SimIo>) -> BTreeMap<u64, String> {
    harness::read_sim(core, 0, 0)
}

fn stop(core: &mut Core<SimIo>) {
    let (stopped, reply) = slot::<()>();
    core.handle(Request::Stop { reply });
    while stopped.lock().unwrap().is_none() {
        core.tick().unwrap();
    }
}

// Proves a batch sent again while its first copy is still in its commit
// (staged, not yet durable) is answered with the first copy's offsets once
// that commit is durable, and is not stored again.
#[test]
fn duplicate_of_a_batch_in_flight_waits_for_the_first() {
    let mut core = open(SimDisk::new(), 1);
    let a = send(&mut core, pbatch("a", 3, 0, 0, 2));
    let again = send(&mut core, pbatch("a", 3, 0, 0, 2));
    let b = send(&mut core, pbatch("a", 3, 0, 2, 1));
    let b_again = send(&mut core, pbatch("a", 3, 0, 2, 1));
    assert!(again.lock().unwrap().is_none(), "answered before its first copy was durable");
    assert_eq!(wait(&mut core, &a).unwrap(), (0, 1));
    assert_eq!(wait(&mut core, &again).unwrap(), (0, 1));
    assert_eq!(wait(&mut core, &b_again).unwrap(), (2, 2));
    assert_eq!(wait(&mut core, &b).unwrap(), (2, 2));
    let got: Vec<String> = stored(&mut core).into_values().collect();
    assert_eq!(got, ["a-0", "a-1", "a-2"]);
    core.invariants();
}

// Proves the producer table survives a kill (rebuilt by the tail scan)
// and a clean stop (from the checkpoint) followed by more appends and a
// kill (checkpoint plus tail): batches from before each are still
// answered with their first offsets, and the next sequence is still known.
#[test]
fn table_survives_kill_checkpoint_and_tail() {
    let mut core = open(SimDisk::new(), 2);
    for seq in 0..8 {
        let s = send(&mut core, pbatch("p", 11, 2, seq * 2, 2));
        assert_eq!(wait(&mut core, &s).unwrap(), (seq as u64 * 3, seq as u64 * 3 + 1));
        let s = send(&mut core, pbatch("q", 12, 0, seq, 1));
        wait(&mut core, &s).unwrap();
    }
    let disk = core.into_io().process_exit();
    assert!(disk.file(&PathBuf::from("/idem/log-0000/checkpoint")).is_none(), "the kill must leave no checkpoint");
    let mut core = open(disk, 3);
    // Only the last 5 batches of each producer are kept: 3..8 of producer 11.
    assert_eq!(append(&mut core, pbatch("p", 11, 2, 14, 2)).unwrap(), (21, 22));
    assert_eq!(append(&mut core, pbatch("p", 11, 2, 6, 2)).unwrap(), (9, 10));
    assert_eq!(append(&mut core, pbatch("q", 12, 0, 9, 1)), Err(StromError::OutOfOrderSequence { producer_id: 12, expected: 8, got: 9 }));
    stop(&mut core);
    let mut core = open(core.into_io().process_exit(), 4);
    assert_eq!(append(&mut core, pbatch("q", 12, 0, 7, 1)).unwrap(), (23, 23));
    assert_eq!(append(&mut core, pbatch("q", 12, 0, 8, 1)).unwrap(), (24, 24));
    assert_eq!(append(&mut core, pbatch("p", 11, 2, 16, 1)).unwrap(), (25, 25));
    let mut core = open(core.into_io().process_exit(), 5);
    assert_eq!(append(&mut core, pbatch("p", 11, 2, 14, 2)).unwrap(), (21, 22));
    assert_eq!(append(&mut core, pbatch("p", 11, 2, 16, 1)).unwrap(), (25, 25));
    assert_eq!(append(&mut core, pbatch("q", 12, 0, 8, 1)).unwrap(), (24, 24));
    assert_eq!(stored(&mut core).len(), 26);
    core.invariants();
}

// Proves, over power cuts at random points of a producer keeping up to 5
// batches in flight (the most an idempotent Kafka client keeps): after the
// restart its last acknowledged batch, sent again, gets the same offsets,
// and sending again every batch it was not told about, in order (Kafka's
// retry after a lost connection), then the rest, stores each record
// exactly once.
#[test]
fn power_cuts_never_store_a_batch_twice() {
    const BATCHES: i32 = 40;
    const IN_FLIGHT_MAX: usize = 5;
    let batch = |i: usize| pbatch("r", 5, 0, i as i32 * 2, 2);
    let mut cut_with_acks = 0;
    for seed in 0..24u64 {
        let mut rng = SimRng::new(seed);
        let mut core = open(SimDisk::new(), seed);
        let (mut sent, mut acked): (Vec<Slot<AppendAck>>, Vec<(u64, u64)>) = (Vec::new(), Vec::new());
        for _ in 0..rng.below(40) {
            while let Some(r) = sent.get(acked.len()).and_then(|s| s.lock().unwrap().take()) {
                acked.push(offsets(&r.unwrap()));
            }
            while sent.len() < BATCHES as usize && sent.len() - acked.len() < IN_FLIGHT_MAX {
                let b = batch(sent.len());
                sent.push(send(&mut core, b));
            }
            core.tick().unwrap();
        }
        while let Some(r) = sent.get(acked.len()).and_then(|s| s.lock().unwrap().take()) {
            acked.push(offsets(&r.unwrap()));
        }
        let mut core = open(core.into_io().crash(&mut rng), seed + 100);
        if let Some(&last) = acked.last().filter(|_| sent.len() - acked.len() < IN_FLIGHT_MAX) {
            cut_with_acks += 1;
            assert_eq!(append(&mut core, batch(acked.len() - 1)).unwrap(), last, "seed {seed}");
        }
        for i in acked.len()..BATCHES as usize {
            append(&mut core, batch(i)).unwrap_or_else(|e| panic!("seed {seed}: batch {i}: {e}"));
        }
        let got: Vec<String> = stored(&mut core).into_values().collect();
        let want: Vec<String> = (0..BATCHES * 2).map(|s| format!("r-{s}")).collect();
        assert_eq!(got, want, "seed {seed}: {} acknowledged before the cut", acked.len());
        core.invariants();
    }
    assert!(cut_with_acks > 0, "no seed cut after an acknowledgement");
}

// Proves a disk that fills under a producer with 5 batches in flight:
// the batches the log refused and rewound are forgotten by the table too,
// so once space is back they are stored when sent again (not answered
// with offsets they never kept), the last acknowledged one sent again gets
// its offsets, and every record is stored exactly once.
#[test]
fn disk_full_rewind_forgets_what_it_refused() {
    const BATCHES: usize = 200;
    const IN_FLIGHT_MAX: usize = 5;
    let batch = |i: usize| pbatch(&format!("{i:0>2000}"), 8, 0, i as i32 * 3, 3);
    for seed in 0..6u64 {
        let disk_bytes_max = (96 << 10) + SimRng::new(seed).below(400 << 10);
        let faults = SimFaults { disk_bytes_max: Some(disk_bytes_max), ..SimFaults::default() };
        let mut core = Core::open(SimIo::new(SimDisk::new(), seed, faults), sim_cfg(), spec()).unwrap().0;
        let (mut sent, mut acked, mut refused): (Vec<Slot<AppendAck>>, Vec<(u64, u64)>, bool) = (Vec::new(), Vec::new(), false);
        while !refused || sent.len() > acked.len() {
            while !refused && sent.len() < BATCHES && sent.len() - acked.len() < IN_FLIGHT_MAX {
                let b = batch(sent.len());
                sent.push(send(&mut core, b));
            }
            core.tick().unwrap();
            while let Some(r) = sent.get(acked.len()).and_then(|s| s.lock().unwrap().take()) {
                match r {
                    Ok(a) if !refused => acked.push(offsets(&a)),
                    Ok(a) => panic!("seed {seed}: batch {} stored after an earlier one was refused: {a:?}", acked.len()),
                    Err(StromError::DiskFull { .. } | StromError::OutOfOrderSequence { .. }) => {
                        refused = true;
                        // What follows the refused batch is refused too (or is a gap).
                        sent.truncate(acked.len());
                    }
                    Err(e) => panic!("seed {seed}: {e}"),
                }
            }
            assert!(refused || sent.len() < BATCHES, "seed {seed}: the disk never filled");
        }
        core.io.faults_mut().disk_bytes_max = None;
        let last = *acked.last().expect("some batch fits");
        assert_eq!(append(&mut core, batch(acked.len() - 1)).unwrap(), last, "seed {seed}");
        for i in acked.len()..acked.len() + 10 {
            append(&mut core, batch(i)).unwrap_or_else(|e| panic!("seed {seed}: batch {i} after space came back: {e}"));
        }
        let got: Vec<String> = stored(&mut core).into_values().collect();
        let want: Vec<String> = (0..acked.len() + 10).flat_map(|i| (0..3).map(move |r| format!("{i:0>2000}-{}", i * 3 + r))).collect();
        assert_eq!(got.len(), want.len(), "seed {seed}");
        assert!(got == want, "seed {seed}: records lost or stored twice");
        core.invariants();
    }
}

// Proves the native protocol answers the same way through a real socket:
// a batch sent again gets its first offsets, a gap the OutOfOrderSequence
// code with the expected and received sequences in its message, and an
// older epoch the InvalidProducerEpoch code.
#[test]
fn native_protocol_answers_duplicates_and_gaps() {
    use strom::client::{Client, ClientError};
    use strom::proto::ErrorCode;
    use strom::server::{Server, ServerConfig};
    let dir = test_dir("idempotent-native");
    let scfg = ServerConfig { listen: "127.0.0.1:0".parse().unwrap(), ..ServerConfig::default() };
    let server = Server::start(&dir, cfg(), scfg).unwrap();
    let mut c = Client::connect(server.local_addr()).unwrap();
    c.create_topic("t", 1).unwrap();
    let ack = c.produce("t", 0, &pbatch("a", 21, 1, 0, 4)).unwrap();
    assert_eq!((ack.base_offset, ack.last_offset), (0, 3));
    let again = c.produce("t", 0, &pbatch("a", 21, 1, 0, 4)).unwrap();
    assert_eq!((again.base_offset, again.last_offset), (0, 3));
    match c.produce("t", 0, &pbatch("a", 21, 1, 6, 1)) {
        Err(ClientError::Server { code: ErrorCode::OutOfOrderSequence, message }) => {
            assert!(message.contains("sequence 6 where 4 was expected"), "{message}");
        }
        other => panic!("expected OutOfOrderSequence, got {other:?}"),
    }
    let fenced = c.produce("t", 0, &pbatch("a", 21, 0, 4, 1));
    assert!(matches!(fenced, Err(ClientError::Server { code: ErrorCode::InvalidProducerEpoch, .. })), "{fenced:?}");
    assert_eq!(c.produce("t", 0, &pbatch("a", 21, 1, 4, 1)).unwrap().base_offset, 4);
    server.shutdown().unwrap();
}
