//! The invariant audits fire: each test breaks one core on purpose through
//! a test-only hook (`Core::break_for_audit`) and sees its counter in the
//! core's metrics registry (`Core::metrics`) go from 0 to 1, while the same
//! run without the hook keeps it at 0. The audits (docs/TESTING.md,
//! "Invariant audits"), exported as `strom_audit_*_total`:
//! - `audit_overlapping_writes`: a data write starting below the log's
//!   acknowledged or durable position (refused: the log fails instead);
//! - `audit_served_beyond_durable`: a read about to serve a batch past the
//!   acknowledged (under `always`, durable) position (held back);
//! - `audit_buffer_reuse`: a registered buffer handed to an op while another
//!   op still owns it.
mod harness;

use std::path::PathBuf;

use harness::{Slot, slot};
use strom::config::EngineConfig;
use strom::core::{AppendAck, AuditBreak, Core, CoreSpec, Request, ValidBatch};
use strom::error::StromError;
use strom::io::Io;
use strom::io::sim::{SimDisk, SimFaults, SimIo};
use strom::read::ReadResult;

fn open() -> (Core<SimIo>, EngineConfig) {
    let cfg = EngineConfig::small_for_tests();
    let spec = CoreSpec {
        core_id: 0,
        data_dir: PathBuf::from("/sim/a"),
        log_count: 1,
        logs: vec![0],
        pids: vec![0],
        indexed: Default::default(),
        needs: Default::default(),
        marks: Default::default(),
    };
    let (core, _) = Core::open(SimIo::new(SimDisk::new(), 11, SimFaults::default()), cfg.clone(), spec).unwrap();
    (core, cfg)
}

fn append(core: &mut Core<SimIo>, cfg: &EngineConfig, i: usize) -> Slot<AppendAck> {
    let (s, reply) = slot::<AppendAck>();
    let batch = ValidBatch::new(harness::batch(&format!("r{i}"), 1 + i % 5, 1_700_000_000_000), cfg.batch_bytes_max).unwrap();
    core.handle(Request::Append { pid: 0, batch, reply });
    s
}

fn wait<T>(core: &mut Core<SimIo>, s: &Slot<T>) -> Result<T, StromError> {
    while s.lock().unwrap().is_none() {
        core.tick().unwrap();
    }
    s.lock().unwrap().take().unwrap()
}

/// Appends `n` batches, one commit each, every one acknowledged.
fn fill(core: &mut Core<SimIo>, cfg: &EngineConfig, n: usize) {
    for i in 0..n {
        let s = append(core, cfg, i);
        wait(core, &s).unwrap();
    }
}

fn read(core: &mut Core<SimIo>, offset: u64) -> Slot<ReadResult> {
    let (s, reply) = slot::<ReadResult>();
    core.handle(Request::read(0, offset, 1 << 20, reply));
    s
}

// Proves: a write aimed below the acknowledged position is counted by
// `audit_overlapping_writes`, never submitted (the log fails; the append is
// refused), and every acknowledged record stays readable.
#[test]
fn overlapping_write_audit_fires() {
    for broken in [false, true] {
        let (mut core, cfg) = open();
        fill(&mut core, &cfg, 5);
        if broken {
            core.break_for_audit(AuditBreak::OverlapNextWrite { log: 0 });
        }
        let s = append(&mut core, &cfg, 5);
        let res = wait(&mut core, &s);
        let audits = core.metrics();
        if broken {
            assert_eq!(audits.log.audit_overlapping_writes, 1, "{audits:?}");
            assert!(matches!(res, Err(StromError::LogFailed { .. })), "the overlapping write's append was not refused: {res:?}");
        } else {
            assert_eq!(audits.audit_violations(), 0, "{audits:?}");
            res.unwrap();
        }
        let r = read(&mut core, 0);
        let all = wait(&mut core, &r).unwrap();
        let records = harness::values(&all.batches).len();
        assert_eq!(records, (1..=5).sum::<usize>() + if broken { 0 } else { 1 }, "acknowledged records lost");
        println!("overlapping write (broken: {broken}): audit_overlapping_writes = {}", audits.log.audit_overlapping_writes);
    }
}

// Proves: a read that looks past the retired position (a commit written but
// not yet fdatasynced) is counted by `audit_served_beyond_durable` and the
// batch is held back; without the hook the same read counts nothing.
#[test]
fn served_beyond_durable_audit_fires() {
    for broken in [false, true] {
        let (mut core, cfg) = open();
        fill(&mut core, &cfg, 1);
        let pending = append(&mut core, &cfg, 1);
        // Write the second commit, but stop before its fdatasync is planned.
        core.plan();
        core.io.wait(1, None).unwrap();
        core.process_completions();
        let j = core.journal(0).unwrap();
        assert!(j.written_pos() > j.durable_pos(), "the second commit is not written-but-not-durable");
        if broken {
            core.break_for_audit(AuditBreak::ServeUnretired);
        }
        let r = read(&mut core, 0);
        while r.lock().unwrap().is_none() {
            core.io.wait(1, None).unwrap();
            core.process_completions();
        }
        let served = r.lock().unwrap().take().unwrap().unwrap();
        let audits = core.metrics();
        assert_eq!(audits.read.audit_served_beyond_durable, u64::from(broken), "{audits:?}");
        assert_eq!(harness::values(&served.batches).len(), 1, "only the durable batch may be served");
        wait(&mut core, &pending).unwrap();
        println!("read past durable (broken: {broken}): audit_served_beyond_durable = {}", audits.read.audit_served_beyond_durable);
    }
}

// Proves: two read buffers naming one registered index, both handed to reads
// in flight at once, are counted by `audit_buffer_reuse`; without the hook
// the same two reads count nothing.
#[test]
fn buffer_reuse_audit_fires() {
    for broken in [false, true] {
        let (mut core, cfg) = open();
        // Enough commits that offset 0 left the tail cache: reads go to disk.
        fill(&mut core, &cfg, 40);
        if broken {
            core.break_for_audit(AuditBreak::AliasReadBuffers);
        }
        let (a, b) = (read(&mut core, 0), read(&mut core, 0));
        let first = core.metrics().core.audit_buffer_reuse;
        let (a, b) = (wait(&mut core, &a).unwrap(), wait(&mut core, &b).unwrap());
        assert_eq!(a, b);
        assert!(core.metrics().read.reads_from_disk >= 2, "the reads did not go to disk");
        assert_eq!(first, u64::from(broken), "{:?}", core.metrics());
        if !broken {
            assert_eq!(core.metrics().audit_violations(), 0);
        }
        println!("aliased read buffers (broken: {broken}): audit_buffer_reuse = {first}");
    }
}
