//! Recycled segments end to end on the simulated disk: retention turns a
//! dropped segment into the log's spare, the next roll renames it into
//! place, and after a process exit or a power cut at any point (a torn
//! commit in a recycled file included) every acknowledged record that
//! retention kept is read back, and the log goes on.
mod harness;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use harness::{Slot, read_sim, slot};
use strom::config::EngineConfig;
use strom::core::{AppendAck, Core, CoreSpec, Request, ValidBatch};
use strom::io::sim::{SimDisk, SimFaults, SimIo, SimRng};
use strom::log::segment::SPARE_NAME;
use strom::metrics::Metric;
use strom::partition::Retention;
use strom::wire::batch::BatchBuilder;

const LOG_DIR: &str = "/sim/recycle/log-0000";

/// One core, one log, one partition: 128 KiB segments, a checkpoint every
/// 16 KiB, so retention can drop a segment as soon as it is passed.
fn cfg() -> EngineConfig {
    EngineConfig { segment_bytes: 128 << 10, checkpoint_interval_bytes: 16 << 10, ..EngineConfig::small_for_tests() }
}

fn spec() -> CoreSpec {
    CoreSpec {
        core_id: 0,
        data_dir: PathBuf::from("/sim/recycle"),
        log_count: 1,
        logs: vec![0],
        pids: vec![0],
        indexed: Default::default(),
        needs: Default::default(),
        marks: Default::default(),
    }
}

fn open(disk: SimDisk, seed: u64) -> Core<SimIo> {
    let (mut core, _) = Core::open(SimIo::new(disk, seed, SimFaults::default()), cfg(), spec()).unwrap();
    // Keep about 200 KiB: older segments are dropped as the log grows.
    core.handle(Request::SetRetention { limits: vec![(0, Retention { age_ms: None, bytes: Some(200 << 10) })] });
    core
}

fn append(core: &mut Core<SimIo>, value: &str) -> Slot<AppendAck> {
    let mut b = BatchBuilder::new(1_700_000_000_000);
    b.push(1_700_000_000_000, None, Some(value.as_bytes()), &[]);
    let (s, reply) = slot::<AppendAck>();
    core.handle(Request::Append { pid: 0, batch: ValidBatch::new(b.finish(), 32 << 10).unwrap(), reply });
    s
}

fn metric(core: &Core<SimIo>, m: Metric) -> u64 {
    core.metrics().get(m)
}

// Proves the spare cycle and its recovery: over many seeds, a log whose
// retention drops segments recycles them (renamed to the spare, then into
// place at a roll, so later commits land in files holding an older
// segment's frames); a process exit or a power cut at a random point, with
// appends in flight, then reopens to every acknowledged record past the
// log's start, unacknowledged ones at most as a prefix, the spare taken up
// again, and appends going on at the next offset.
#[test]
fn recycled_segments_keep_every_acknowledged_record() {
    let (mut power_cuts, mut recycled_total, mut acked_total, mut lost_unacked) = (0, 0, 0, 0);
    let seeds = harness::for_each_seed("recycle", 24, |seed| {
        let mut rng = SimRng::new(seed);
        let mut core = open(SimDisk::new(), rng.next_u64());
        let mut acked: BTreeMap<u64, String> = BTreeMap::new();
        let mut pending: Vec<(String, Slot<AppendAck>)> = Vec::new();
        let rounds = 300 + rng.below(300);
        for i in 0..rounds {
            let value = format!("{seed}-{i}-{}", "x".repeat(rng.below(6000) as usize));
            pending.push((value.clone(), append(&mut core, &value)));
            for _ in 0..rng.below(3) {
                core.tick().unwrap();
            }
            core.io.advance(std::time::Duration::from_millis(rng.below(400)));
            pending.retain(|(v, s)| match s.lock().unwrap().take() {
                Some(Ok(ack)) => {
                    acked.insert(ack.base_offset, v.clone());
                    false
                }
                Some(Err(e)) => panic!("seed {seed}: append failed: {e}"),
                None => true,
            });
        }
        let recycled = metric(&core, Metric::LogSegmentsRecycled);
        let reused = metric(&core, Metric::LogSegmentsReused);
        assert!(recycled >= 2 && reused >= 1, "seed {seed}: {recycled} segments recycled, {reused} reused");
        recycled_total += recycled;
        acked_total += acked.len();
        let power_cut = rng.below(2) == 0;
        let disk = if power_cut {
            power_cuts += 1;
            core.into_io().crash(&mut rng)
        } else {
            core.into_io().process_exit()
        };
        let spare_on_disk = disk.file(&Path::new(LOG_DIR).join(SPARE_NAME)).is_some();
        let mut core = open(disk, seed);
        assert_eq!(core.journal(0).unwrap().has_spare(), spare_on_disk, "seed {seed}: the spare on disk was not taken up");
        let start = core.partition(0).unwrap().start_offset;
        let got = read_sim(&mut core, 0, start);
        for (off, v) in acked.range(start..) {
            assert_eq!(got.get(off), Some(v), "seed {seed}: acknowledged offset {off} lost or changed");
        }
        let next = got.keys().next_back().map_or(start, |o| o + 1);
        lost_unacked += pending.len() as u64 - (next - acked.keys().next_back().map_or(0, |o| o + 1)).min(pending.len() as u64);
        assert!(next >= acked.keys().next_back().map_or(0, |o| o + 1), "seed {seed}: the log ends before an acknowledged record");
        let s = append(&mut core, "after");
        while s.lock().unwrap().is_none() {
            core.tick().unwrap();
        }
        assert_eq!(s.lock().unwrap().take().unwrap().unwrap().base_offset, next, "seed {seed}: appends go on after the log");
    });
    println!(
        "{seeds} seeds: {acked_total} acknowledged appends, {recycled_total} segments recycled, {power_cuts} power cuts, {lost_unacked} unacknowledged appends not recovered"
    );
    assert!(power_cuts > 0, "no seed cut the power");
}

/// Ticks `core` on virtual time until `done`, at most `ticks_max` ticks.
fn tick_until(core: &mut Core<SimIo>, ticks_max: u32, mut done: impl FnMut(&Core<SimIo>) -> bool) -> bool {
    for _ in 0..ticks_max {
        if done(core) {
            return true;
        }
        core.io.advance(std::time::Duration::from_millis(1));
        core.tick().unwrap();
    }
    done(core)
}

// Proves pre-writing: a quiet log prepares a whole spare (zeros written
// through the ring, then fdatasynced), the next roll renames it into place
// so the new segment is a whole segment of written space from its first
// commit, and a power cut then recovers every acknowledged record; with the
// disk full, preparation stops and the log goes on (the spare is given up
// for the commits' sake).
#[test]
fn quiet_log_prewrites_its_spare() {
    harness::for_each_seed("prewrite", 8, |seed| {
        let mut rng = SimRng::new(seed);
        let mut core = open(SimDisk::new(), seed);
        let first = append(&mut core, "first");
        let prepared = tick_until(&mut core, 10_000, |c| {
            c.journal(0).unwrap().spare().is_some_and(|s| s.prepared_bytes == s.target_bytes && s.synced_bytes == s.target_bytes)
        });
        assert!(prepared, "seed {seed}: the spare was not prepared while the log was quiet");
        assert!(first.lock().unwrap().as_ref().is_some_and(|r| r.is_ok()), "seed {seed}: the append was not acknowledged");
        let mut acked = vec![(0, "first".to_string())];
        let mut i = 0;
        while core.metrics().get(Metric::LogSegmentsReused) == 0 {
            let value = format!("{seed}-{i}-{}", "y".repeat(3000));
            let s = append(&mut core, &value);
            while s.lock().unwrap().is_none() {
                core.tick().unwrap();
            }
            acked.push((s.lock().unwrap().take().unwrap().unwrap().base_offset, value));
            i += 1;
            assert!(i < 1000, "seed {seed}: the log never rolled into its spare");
        }
        let segs = core.journal(0).unwrap().segment_starts();
        let active = Path::new(LOG_DIR).join(strom::log::segment::segment_name(*segs.last().unwrap()));
        let disk = core.into_io().crash(&mut rng);
        assert_eq!(
            disk.file(&active).map(|f| f.len() as u64),
            Some(cfg().segment_bytes),
            "seed {seed}: the active segment is not the pre-written spare"
        );
        let mut core = open(disk, seed);
        let got = read_sim(&mut core, 0, 0);
        for (off, v) in &acked {
            assert_eq!(got.get(off), Some(v), "seed {seed}: acknowledged offset {off} lost after the power cut");
        }
    });
}

// Proves a full disk while preparing never fails the log: the zero writes
// stop at ENOSPC, appends that then find the disk full are refused as full
// (not failed), and the spare is removed to give its space to the commits.
#[test]
fn full_disk_while_preparing_keeps_the_log() {
    let faults = SimFaults { disk_bytes_max: Some(300 << 10), ..SimFaults::default() };
    let (mut core, _) = Core::open(SimIo::new(SimDisk::new(), 7, faults), cfg(), spec()).unwrap();
    let s = append(&mut core, "before");
    tick_until(&mut core, 2_000, |c| c.journal(0).unwrap().spare().is_some_and(|s| s.prepared_bytes == s.target_bytes));
    assert!(s.lock().unwrap().as_ref().is_some_and(|r| r.is_ok()));
    let mut ok = 0;
    let mut full = 0;
    for i in 0..200 {
        let s = append(&mut core, &format!("{i}-{}", "z".repeat(2000)));
        while s.lock().unwrap().is_none() {
            core.tick().unwrap();
        }
        match s.lock().unwrap().take().unwrap() {
            Ok(_) => ok += 1,
            Err(strom::error::StromError::DiskFull { .. }) => full += 1,
            Err(e) => panic!("append {i}: the log failed: {e}"),
        }
        core.io.advance(std::time::Duration::from_millis(1));
    }
    assert!(core.journal(0).unwrap().failed().is_none(), "the log failed");
    assert!(!core.journal(0).unwrap().has_spare(), "the spare kept its space from a full log");
    println!("{ok} appends acknowledged, {full} refused for a full disk");
    assert!(ok > 0 && full > 0, "{ok} acknowledged, {full} refused: the disk never filled");
}

// Proves retention recycles a dropped segment over a spare only partly
// pre-written (a log busy but for short gaps, as loadgen's steady state
// found: a roll takes the spare, a short quiet moment begins the next one,
// then retention drops a segment): the partial spare is removed, the
// dropped segment becomes the spare with all its space written, and every
// acknowledged record retention kept reads back. Before, the partial spare
// stayed and the fully written segment was removed.
#[test]
fn a_dropped_segment_replaces_a_partly_prepared_spare() {
    // 1 MiB segments: a spare takes 8 zero writes, so a partial one is seen.
    let cfg = EngineConfig { segment_bytes: 1 << 20, checkpoint_interval_bytes: 16 << 10, ..EngineConfig::small_for_tests() };
    let (mut core, _) = Core::open(SimIo::new(SimDisk::new(), 7, SimFaults::default()), cfg, spec()).unwrap();
    core.handle(Request::SetRetention { limits: vec![(0, Retention { age_ms: None, bytes: Some(200 << 10) })] });
    let mut acked = Vec::new();
    // Busy, with the simulator's clock standing still (no retention pass,
    // no quiet moment): past the first roll and 300 KiB into the next segment.
    let mut i = 0;
    while core.journal(0).unwrap().segment_starts().len() < 2 || core.journal(0).unwrap().written_pos() < (1 << 20) + (300 << 10) {
        let value = format!("{i}-{}", "z".repeat(6000));
        let s = append(&mut core, &value);
        while s.lock().unwrap().is_none() {
            core.tick().unwrap();
        }
        acked.push((s.lock().unwrap().take().unwrap().unwrap().base_offset, value));
        i += 1;
        assert!(i < 1_000, "the log never rolled");
    }
    // A short quiet moment: the log begins a spare.
    let partial = tick_until(&mut core, 10_000, |c| {
        c.journal(0).unwrap().spare().is_some_and(|s| s.prepared_bytes > 0 && s.prepared_bytes < s.target_bytes)
    });
    assert!(partial, "the quiet log began its spare");
    let partial_bytes = core.journal(0).unwrap().spare().unwrap().prepared_bytes;
    // Busy again, a second later: retention's pass (before the spare's
    // step in the tick) drops the first segment.
    core.io.advance(std::time::Duration::from_secs(1));
    let s = append(&mut core, "last");
    while s.lock().unwrap().is_none() {
        core.tick().unwrap();
    }
    acked.push((s.lock().unwrap().take().unwrap().unwrap().base_offset, "last".to_string()));
    assert_eq!(core.metrics().get(Metric::LogSegmentsRecycled), 1, "the dropped segment was recycled, not removed");
    let spare = core.journal(0).unwrap().spare().expect("the recycled spare");
    // A sealed segment ends where its last commit did, near its size.
    assert!(
        spare.prepared_bytes > partial_bytes.max(3 << 18) && spare.synced_bytes == spare.prepared_bytes,
        "the spare is the dropped segment, all written and durable (the partial one had {partial_bytes}): {spare:?}"
    );
    let start = core.partition(0).unwrap().start_offset;
    assert!(start > 0, "retention dropped the first segment's records");
    let got = read_sim(&mut core, 0, start);
    for (off, v) in acked.iter().filter(|(o, _)| *o >= start) {
        assert_eq!(got.get(off), Some(v), "acknowledged offset {off}");
    }
}
