//! Deterministic simulation with injected disk faults: after the first
//! failed write or fdatasync a log acknowledges nothing more, ever; data
//! acknowledged before the failure stays readable; and after a restart every
//! acknowledged record is there.
//!
//! `STROM_SIM_SEEDS=N` runs N seeds (default 500); `STROM_SIM_SEED=S` replays one.
mod common;

use std::collections::BTreeMap;
use std::path::PathBuf;

use common::{Slot, slot};
use strom::config::EngineConfig;
use strom::core::{AppendAck, Core, CoreSpec, ReadResult, Request, ValidBatch};
use strom::error::StromError;
use strom::io::sim::{SimDisk, SimFaults, SimIo, SimRng};
use strom::wire::batch::{self, BatchBuilder};

fn one_batch(tag: u64) -> Vec<u8> {
    let mut b = BatchBuilder::new(1_700_000_000_000);
    b.push(1_700_000_000_000, None, Some(format!("v{tag}").as_bytes()), &[]);
    b.finish()
}

/// Every (offset, value) of partition 0, read from 0; or the read's error.
fn read_all(core: &mut Core<SimIo>) -> Result<BTreeMap<u64, String>, StromError> {
    let mut out = BTreeMap::new();
    let mut offset = 0;
    loop {
        let (s, reply) = slot::<ReadResult>();
        core.handle(Request::Read { pid: 0, offset, max_bytes: 8 << 10, reply });
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
                out.insert(offset, String::from_utf8(r.unwrap().value.unwrap().to_vec()).unwrap());
                offset += 1;
            }
            at += info.batch_bytes;
        }
    }
}

struct Outcome {
    acked: u64,
    refused: u64,
    failed_logs: u64,
}

fn run_seed(seed: u64) -> Outcome {
    let mut rng = SimRng::new(seed);
    let cfg = EngineConfig::small_for_tests();
    let spec = CoreSpec { core_id: 0, data_dir: PathBuf::from("/sim/f"), log_count: 1, logs: vec![0], pids: vec![0] };
    let faults = match rng.below(4) {
        0 => SimFaults { write_eio_ppm: 20_000, ..SimFaults::default() },
        1 => SimFaults { fsync_eio_ppm: 50_000, ..SimFaults::default() },
        2 => SimFaults { short_write_ppm: 20_000, ..SimFaults::default() },
        _ => SimFaults { disk_bytes_max: Some((64 << 10) + rng.below(512 << 10)), ..SimFaults::default() },
    };
    let io = SimIo::new(SimDisk::new(), rng.next_u64(), faults);
    let (mut core, _) = Core::open(io, cfg.clone(), spec.clone()).unwrap();
    let mut acked: BTreeMap<u64, String> = BTreeMap::new();
    let mut inflight: Vec<(u64, Slot<AppendAck>)> = Vec::new();
    let (mut failed_at_step, mut refused) = (None, 0u64);
    for step in 0..400u64 {
        let (s, reply) = slot::<AppendAck>();
        core.handle(Request::Append { pid: 0, batch: ValidBatch::new(one_batch(step), cfg.batch_bytes_max).unwrap(), reply });
        inflight.push((step, s));
        core.tick().unwrap();
        inflight.retain(|(tag, s)| match s.lock().unwrap().take() {
            None => true,
            Some(Ok(ack)) => {
                assert!(failed_at_step.is_none(), "seed {seed}: acknowledged after the log failed at step {failed_at_step:?}");
                acked.insert(ack.base_offset, format!("v{tag}"));
                false
            }
            Some(Err(StromError::LogFailed { .. } | StromError::DiskFull { .. })) => {
                failed_at_step.get_or_insert(step);
                refused += 1;
                false
            }
            Some(Err(e)) => panic!("seed {seed}: unexpected error {e}"),
        });
    }
    // Durable, acknowledged data stays readable on the failed log.
    let found = read_all(&mut core).unwrap_or_else(|e| panic!("seed {seed}: read on the failed log: {e}"));
    for (off, v) in &acked {
        assert_eq!(found.get(off), Some(v), "seed {seed}: acknowledged offset {off} unreadable before restart");
    }
    // Restart on the same disk without faults: everything acknowledged is there.
    let disk = core.into_io().process_exit();
    let (mut core, _) = Core::open(SimIo::new(disk, rng.next_u64(), SimFaults::default()), cfg, spec)
        .unwrap_or_else(|e| panic!("seed {seed}: reopen: {e}"));
    let found = read_all(&mut core).unwrap_or_else(|e| panic!("seed {seed}: read after restart: {e}"));
    for (off, v) in &acked {
        assert_eq!(found.get(off), Some(v), "seed {seed}: acknowledged offset {off} lost across the restart");
    }
    Outcome { acked: acked.len() as u64, refused, failed_logs: u64::from(failed_at_step.is_some()) }
}

// Proves: under EIO, short writes and ENOSPC, no append is acknowledged after
// the first failure, and nothing acknowledged is lost.
#[test]
fn faults_stop_acks_and_lose_nothing() {
    let (mut acked, mut refused, mut failed) = (0, 0, 0);
    for o in common::for_each_seed("sim_faults", 500, run_seed) {
        acked += o.acked;
        refused += o.refused;
        failed += o.failed_logs;
    }
    println!("faults: {acked} acknowledged records intact, {refused} appends refused, {failed} logs failed");
    assert!(failed > 0, "no fault ever fired: the test proves nothing");
    assert!(acked > 0, "nothing was acknowledged");
}
