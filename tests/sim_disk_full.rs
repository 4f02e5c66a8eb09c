//! Deterministic simulation of a disk that fills up and then gets space back.
//! Proves, per seed: appends that meet a full disk are refused with
//! `DiskFull` and none of them is ever stored (not before a restart, not
//! after a power cut); acknowledged data stays readable while the disk is
//! full; offsets stay dense (a refused append's offsets are given to the next
//! append); and once space is freed the same log acknowledges appends again,
//! without a restart.
//!
//! `STROM_SIM_SEEDS=N` runs N seeds (default 300); `STROM_SIM_SEED=S` replays one.
mod harness;

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

use harness::{Slot, slot};
use strom::config::EngineConfig;
use strom::core::{AppendAck, Core, CoreSpec, Request, ValidBatch};
use strom::error::StromError;
use strom::io::sim::{SimDisk, SimFaults, SimIo, SimRng};
use strom::read::ReadResult;
use strom::wire::batch::{self, BatchBuilder};

const PIDS: u32 = 2;

/// One batch of `n` records tagged `tag-i`, padded to about `bytes` each.
fn tagged_batch(tag: u64, n: usize, bytes: usize) -> Vec<u8> {
    let mut b = BatchBuilder::new(1_700_000_000_000);
    for i in 0..n {
        let mut v = format!("t{tag}-{i}-").into_bytes();
        v.resize(bytes.max(v.len()), b'x');
        b.push(1_700_000_000_000, None, Some(&v), &[]);
    }
    b.finish()
}

fn tag_of(value: &[u8]) -> String {
    String::from_utf8_lossy(value).split('-').take(2).collect::<Vec<_>>().join("-")
}

/// Every (offset, record tag) of `pid` from offset 0; or the read's error.
fn read_all(core: &mut Core<SimIo>, pid: u32) -> Result<BTreeMap<u64, String>, StromError> {
    let mut out = BTreeMap::new();
    let mut offset = 0;
    loop {
        let (s, reply) = slot::<ReadResult>();
        core.handle(Request::read(pid, offset, 32 << 10, reply));
        while s.lock().unwrap().is_none() {
            core.tick().unwrap();
        }
        let res = s.lock().unwrap().take().unwrap()?;
        if res.batches.is_empty() {
            return Ok(out);
        }
        let mut at = 0;
        while at < res.batches.len() {
            let info = batch::parse_header(&res.batches[at..]).unwrap();
            for r in batch::records(&res.batches[at..at + info.batch_bytes]) {
                let r = r.unwrap();
                let o = info.base_offset as u64 + r.offset_delta as u64;
                if o >= offset {
                    assert!(out.insert(o, tag_of(r.value.unwrap())).is_none(), "offset {o} read twice");
                }
            }
            at += info.batch_bytes;
        }
        offset = *out.keys().last().unwrap() + 1;
    }
}

#[derive(Default)]
struct Model {
    /// (pid, offset) -> record tag, for every acknowledged record.
    acked: BTreeMap<(u32, u64), String>,
    /// Tags of appends refused with DiskFull: they must never be stored.
    refused: BTreeSet<String>,
}

/// Checks what `core` holds against the model: every acknowledged record at
/// its offset, no refused record anywhere, offsets dense from 0.
fn check(seed: u64, when: &str, core: &mut Core<SimIo>, m: &Model) {
    for pid in 0..PIDS {
        let found = read_all(core, pid).unwrap_or_else(|e| panic!("seed {seed} {when}: read of partition {pid}: {e}"));
        for (i, (off, tag)) in found.iter().enumerate() {
            assert_eq!(*off, i as u64, "seed {seed} {when}: partition {pid} has a hole before offset {off}");
            let batch_tag = tag.split('-').next().unwrap();
            assert!(!m.refused.contains(batch_tag), "seed {seed} {when}: refused append {batch_tag} is stored at {pid}/{off}");
        }
        for ((p, off), tag) in m.acked.range((pid, 0)..(pid + 1, 0)) {
            assert_eq!(found.get(off), Some(tag), "seed {seed} {when}: acknowledged record {p}/{off} lost");
        }
    }
}

#[derive(Default)]
struct Outcome {
    acked: u64,
    refused: u64,
    acked_after_free: u64,
    rewinds: u64,
    retries: u64,
    /// Stops that found the log retrying in place and made it give up.
    gave_up: u64,
}

impl Outcome {
    /// Adds one seed's outcome to the totals.
    fn add(&mut self, o: Outcome) {
        self.acked += o.acked;
        self.refused += o.refused;
        self.acked_after_free += o.acked_after_free;
        self.rewinds += o.rewinds;
        self.retries += o.retries;
        self.gave_up += o.gave_up;
    }
}

fn run_filling(seed: u64) -> Outcome {
    run_seed(seed, false)
}

fn run_random_enospc(seed: u64) -> Outcome {
    run_seed(seed, true)
}

/// An append in flight: its tag, partition, record count and reply.
type InFlight = (u64, u32, usize, Slot<AppendAck>);

/// Ticks until every append in flight and the stop (if one was asked) are
/// answered (a retry in place waits 100 ms of virtual time, and an idle
/// tick advances it by microseconds), then adds what was acknowledged and
/// refused to the model.
fn drain(core: &mut Core<SimIo>, inflight: Vec<InFlight>, stop: Option<Slot<()>>, stop_while_full: bool, m: &mut Model, seed: u64) {
    for _ in 0..200_000 {
        if inflight.iter().all(|(_, _, _, s)| s.lock().unwrap().is_some()) && stop.as_ref().is_none_or(|s| s.lock().unwrap().is_some()) {
            break;
        }
        core.tick().unwrap();
    }
    if let Some(s) = &stop {
        let answer = s.lock().unwrap().take();
        assert!(matches!(answer, Some(Ok(()))), "seed {seed}: a stop while writes fail with ENOSPC did not finish: {answer:?}");
    }
    for (tag, pid, n, s) in inflight {
        match s.lock().unwrap().take() {
            Some(Ok(ack)) => {
                for i in 0..n as u64 {
                    m.acked.insert((pid, ack.base_offset + i), format!("t{tag}-{i}"));
                }
            }
            Some(Err(StromError::DiskFull { .. })) => {
                m.refused.insert(format!("t{tag}"));
            }
            // Held by a retry in place the stop gave up: may or may not be stored.
            Some(Err(StromError::LogFailed { .. })) if stop_while_full => {}
            other => panic!("seed {seed}: append {tag} unanswered or failed: {other:?}"),
        }
    }
}

/// Fills the disk and frees it (`random_enospc` false), or fails 5 % of the
/// writes with ENOSPC at random (a later, smaller write may then land past
/// a full one: the retry in place).
fn run_seed(seed: u64, random_enospc: bool) -> Outcome {
    let mut rng = SimRng::new(seed);
    let mut cfg = EngineConfig::small_for_tests();
    // Small segments in some seeds, so the disk also fills at a roll.
    if rng.below(2) == 0 {
        cfg.segment_bytes = (64 << 10) * (2 + rng.below(4));
    }
    let spec = CoreSpec {
        core_id: 0,
        data_dir: PathBuf::from("/sim/full"),
        log_count: 1,
        logs: vec![0],
        pids: (0..PIDS).collect(),
        indexed: Default::default(),
        needs: Default::default(),
        marks: Default::default(),
    };
    let disk_bytes_max = (96 << 10) + rng.below(640 << 10);
    let faults = if random_enospc {
        SimFaults { enospc_ppm: 50_000, ..SimFaults::default() }
    } else {
        SimFaults { disk_bytes_max: Some(disk_bytes_max), ..SimFaults::default() }
    };
    let io = SimIo::new(SimDisk::new(), rng.next_u64(), faults);
    let (mut core, _) = Core::open(io, cfg.clone(), spec.clone()).unwrap();
    let mut m = Model::default();
    let mut inflight: Vec<InFlight> = Vec::new();
    let (mut freed_at, mut first_full, mut acked_after_free) = (None, None, 0u64);
    let steps = 400u64;
    for step in 0..steps {
        for _ in 0..1 + rng.below(3) {
            let tag = step * 8 + inflight.len() as u64 % 8 + rng.below(1 << 20) * 4096;
            let (pid, n) = (rng.below(PIDS as u64) as u32, 1 + rng.below(4) as usize);
            let bytes = tagged_batch(tag, n, 50 + rng.below(3000) as usize);
            let (s, reply) = slot::<AppendAck>();
            core.handle(Request::Append { pid, batch: ValidBatch::new(bytes, cfg.batch_bytes_max).unwrap(), reply });
            inflight.push((tag, pid, n, s));
        }
        core.tick().unwrap();
        inflight.retain(|(tag, pid, n, s)| match s.lock().unwrap().take() {
            None => true,
            Some(Ok(ack)) => {
                assert_eq!(ack.last_offset + 1 - ack.base_offset, *n as u64);
                for i in 0..*n as u64 {
                    m.acked.insert((*pid, ack.base_offset + i), format!("t{tag}-{i}"));
                }
                acked_after_free += u64::from(freed_at.is_some());
                false
            }
            Some(Err(StromError::DiskFull { .. })) => {
                m.refused.insert(format!("t{tag}"));
                first_full.get_or_insert(step);
                false
            }
            Some(Err(e)) => panic!("seed {seed}: unexpected error {e}"),
        });
        // While full, what was acknowledged stays readable.
        if !random_enospc && first_full == Some(step.saturating_sub(20)) && freed_at.is_none() {
            check(seed, "while the disk is full", &mut core, &m);
            // Free space (an operator deletes something): writes must resume.
            core.io.faults_mut().disk_bytes_max = None;
            freed_at = Some(step);
        }
    }
    let stuck = core.journal(0).unwrap().failed().is_some();
    let rewinds = core.journal(0).unwrap().metrics.disk_full_rewinds;
    let retries = core.journal(0).unwrap().metrics.disk_full_retries;
    assert!(!stuck, "seed {seed}: the log failed on ENOSPC: {:?}", core.journal(0).unwrap().failed());
    // A third of the random seeds stop the engine while writes still fail:
    // a log retrying in place must give up (LogFailed, indeterminate) so the
    // stop finishes. The others let the disk heal first.
    let stop_while_full = random_enospc && rng.below(3) == 0;
    if random_enospc && !stop_while_full {
        core.io.faults_mut().enospc_ppm = 0;
    }
    let stop = stop_while_full.then(|| {
        let (s, reply) = slot::<()>();
        core.handle(Request::Stop { reply });
        s
    });
    if freed_at.is_some() {
        assert!(acked_after_free > 0, "seed {seed}: nothing acknowledged after space was freed");
    }
    drain(&mut core, inflight, stop, stop_while_full, &mut m, seed);
    // Then check before and after a restart.
    if !stop_while_full {
        check(seed, "before restart", &mut core, &m);
    }
    let gave_up = u64::from(core.journal(0).unwrap().failed().is_some());
    let disk = if rng.below(2) == 0 { core.into_io().crash(&mut rng) } else { core.into_io().process_exit() };
    let (mut core, _) = Core::open(SimIo::new(disk, rng.next_u64(), SimFaults::default()), cfg, spec)
        .unwrap_or_else(|e| panic!("seed {seed}: reopen: {e}"));
    check(seed, "after restart", &mut core, &m);
    Outcome { acked: m.acked.len() as u64, refused: m.refused.len() as u64, acked_after_free, rewinds, retries, gave_up }
}

// Proves: on a full disk appends are refused with DiskFull and never stored,
// nothing acknowledged is lost or unreadable, offsets stay dense, and the
// log acknowledges again once space is freed (no restart).
#[test]
fn disk_full_refuses_and_resumes() {
    let mut sum = Outcome::default();
    let seeds = harness::for_each_seed("sim_disk_full", 300, |seed| sum.add(run_filling(seed)));
    println!(
        "disk full: {seeds} seeds, {} acknowledged records intact, {} appends refused (none stored), {} rewinds, \
         {} retries in place, {} records acknowledged after space was freed",
        sum.acked, sum.refused, sum.rewinds, sum.retries, sum.acked_after_free,
    );
    assert!(sum.refused > 0, "the disk never filled: the test proves nothing");
    assert!(sum.acked_after_free > 0, "writes never resumed");
}

// Proves: when writes fail with ENOSPC at random (so a later, smaller write
// can land past a full one, and the log writes the full ones again in
// place), refused appends are never stored, acknowledged ones are never
// lost, offsets stay dense, the log never fails, and a stop while a retry
// in place waits still finishes (the log gives up with LogFailed).
#[test]
fn random_enospc_rewinds_or_retries_in_place() {
    let mut sum = Outcome::default();
    let seeds = harness::for_each_seed("sim_disk_full", 300, |seed| sum.add(run_random_enospc(seed)));
    println!(
        "random ENOSPC: {seeds} seeds, {} acknowledged records intact, {} appends refused (none stored), {} rewinds, {} retries in place, \
         {} stops gave a retry up",
        sum.acked, sum.refused, sum.rewinds, sum.retries, sum.gave_up,
    );
    assert!(sum.rewinds > 0, "no rewind happened: the test proves nothing");
    assert!(sum.retries > 0, "no retry in place happened: the test proves nothing");
    assert!(sum.gave_up > 0, "no stop met a retry in place: that path is untested");
}
