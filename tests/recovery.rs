//! Recovery against damaged and truncated logs: every prefix of a valid log
//! recovers to a valid prefix of its records, and damage inside
//! acknowledged data is reported with its position, never cut away.
mod harness;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use harness::{batch, slot, test_dir};
use strom::config::{EngineConfig, FsyncPolicy};
use strom::core::{AppendAck, Core, CoreSpec, Request, ValidBatch};
use strom::engine::Engine;
use strom::error::StromError;
use strom::io::Io;
use strom::io::sim::{SimDisk, SimFaults, SimIo};
use strom::log::frame::{self, FrameHeader};
use strom::log::segment::{log_dir, segment_name};

fn sim_cfg() -> EngineConfig {
    // No checkpoint is ever due, so recovery scans the whole log.
    EngineConfig { checkpoint_interval_bytes: 1 << 40, ..EngineConfig::small_for_tests() }
}

fn spec() -> CoreSpec {
    CoreSpec {
        core_id: 0,
        data_dir: PathBuf::from("/r"),
        log_count: 1,
        logs: vec![0],
        pids: vec![0, 1],
        indexed: Default::default(),
        needs: Default::default(),
        marks: Default::default(),
    }
}

/// Every record of a partition: offset -> value.
fn read_partition(core: &mut Core<SimIo>, pid: u32) -> BTreeMap<u64, String> {
    harness::read_sim(core, pid, 0)
}

/// A log of two partitions over several commits and segments, left by a
/// process exit (no clean stop, no checkpoint).
fn build_log() -> (SimDisk, [BTreeMap<u64, String>; 2]) {
    let cfg = sim_cfg();
    let (mut core, _) = Core::open(SimIo::new(SimDisk::new(), 1, SimFaults::default()), cfg.clone(), spec()).unwrap();
    let mut pending = Vec::new();
    for i in 0..120u64 {
        let (s, reply) = slot::<AppendAck>();
        let b = batch(&format!("{i:0>1500}"), 1 + (i % 5) as usize, i as i64);
        core.handle(Request::Append { pid: (i % 2) as u32, batch: ValidBatch::new(b, cfg.batch_bytes_max).unwrap(), reply });
        pending.push(s);
        if i % 7 == 0 {
            while pending.iter().any(|s| s.lock().unwrap().is_none()) {
                core.tick().unwrap();
            }
        }
    }
    while pending.iter().any(|s| s.lock().unwrap().is_none()) {
        core.tick().unwrap();
    }
    let full = [read_partition(&mut core, 0), read_partition(&mut core, 1)];
    (core.into_io().process_exit(), full)
}

fn segments(disk: &SimDisk) -> Vec<(u64, PathBuf)> {
    disk.paths()
        .into_iter()
        .filter_map(|p| Some((strom::log::segment::parse_segment_name(&p.file_name()?.to_string_lossy())?, p)))
        .collect()
}

// Proves: cutting the log at any sector boundary (as a crash can) recovers to
// a prefix of the records: each partition's offsets dense from 0 with the
// original contents, and the log writable again afterwards.
#[test]
fn every_prefix_recovers_to_a_prefix() {
    let (disk, full) = build_log();
    let segs = segments(&disk);
    assert!(segs.len() >= 2, "the log should span segments: {segs:?}");
    let log_end = segs.iter().map(|(start, p)| start + disk.file(p).unwrap().len() as u64).max().unwrap();
    let (mut prefixes, mut recovered_before) = (0, 0);
    for cut in (0..=log_end).step_by(512) {
        let mut d = disk.clone();
        for (start, path) in &segs {
            let len = d.file(path).unwrap().len() as u64;
            if *start > cut || (*start == cut && *start > 0) {
                d.remove_file(path);
            } else if start + len > cut {
                d.truncate_file(path, cut - start);
            }
        }
        let (mut core, _) = Core::open(SimIo::new(d, cut, SimFaults::default()), sim_cfg(), spec())
            .unwrap_or_else(|e| panic!("log cut at {cut} did not recover: {e}"));
        let mut recovered = 0;
        for pid in 0..2u32 {
            let got = read_partition(&mut core, pid);
            recovered += got.len();
            for (off, v) in &got {
                assert_eq!(full[pid as usize].get(off), Some(v), "cut {cut}: pid {pid} offset {off} differs");
            }
            // Appends continue right after the recovered prefix.
            let (s, reply) = slot::<AppendAck>();
            core.handle(Request::Append { pid, batch: ValidBatch::new(batch("after", 1, 0), 1 << 20).unwrap(), reply });
            while s.lock().unwrap().is_none() {
                core.tick().unwrap();
            }
            assert_eq!(s.lock().unwrap().take().unwrap().unwrap().base_offset, got.len() as u64, "cut {cut}: pid {pid}");
        }
        // A longer log never recovers fewer records; the whole log, all of them.
        assert!(recovered >= recovered_before, "cut {cut}: {recovered} records, fewer than a shorter cut's {recovered_before}");
        recovered_before = recovered;
        prefixes += 1;
    }
    assert_eq!(recovered_before, full[0].len() + full[1].len(), "the whole log did not recover every record");
    println!("{prefixes} prefixes of a {log_end}-byte log recovered");
}

// Proves: a flipped bit inside acknowledged data followed by later commits
// fails the open with Corrupt at the damaged frame's position, cuts nothing,
// and `strom inspect` names the same position.
#[test]
fn corruption_before_the_tail_is_reported_not_cut() {
    let dir = test_dir("recovery-corrupt");
    let cfg = EngineConfig { cores: 1, logs_on_create: 1, pin_cores: false, ..EngineConfig::small_for_tests() };
    let e = Engine::open(&dir, cfg.clone()).unwrap();
    e.create_topic("t", 1).unwrap();
    for i in 0..60 {
        e.append("t", 0, batch(&format!("{i:0>500}"), 2, i)).unwrap();
    }
    e.shutdown().unwrap();
    let log_dir = strom::log::segment::log_dir(&dir, 0);
    // The checkpoint would spare the scan; remove it so the damage is met.
    std::fs::remove_file(log_dir.join(strom::log::checkpoint::FILE_NAME)).unwrap();
    let seg = first_segment(&log_dir);
    let mut bytes = std::fs::read(&seg).unwrap();
    let len_before = bytes.len();
    let at = len_before / 3;
    bytes[at] ^= 0x10;
    std::fs::write(&seg, &bytes).unwrap();

    let Err(err) = Engine::open(&dir, cfg.clone()) else { panic!("open must refuse damaged acknowledged data") };
    let StromError::Corrupt { pos, .. } = err else { panic!("expected Corrupt, got {err}") };
    assert!(pos <= at as u64 && at as u64 - pos < 4096, "reported position {pos} is not the damaged frame at byte {at}");
    assert_eq!(std::fs::read(&seg).unwrap().len(), len_before, "the damaged segment was truncated");

    let mut io = strom::io::uring::UringIo::new(16).unwrap();
    let Err(err) = strom::inspect::inspect(&mut io, &dir, &cfg) else { panic!("inspect must report the damage") };
    assert!(matches!(err, StromError::Corrupt { pos: p, .. } if p == pos), "inspect named another position: {err}");
}

fn first_segment(log_dir: &Path) -> PathBuf {
    let mut segs: Vec<PathBuf> =
        std::fs::read_dir(log_dir).unwrap().map(|e| e.unwrap().path()).filter(|p| p.extension().is_some_and(|x| x == "seg")).collect();
    segs.sort();
    segs.remove(0)
}

/// Appends one batch to `pid` and ticks until it is acknowledged; its base offset.
fn append_acked(core: &mut Core<SimIo>, pid: u32, b: Vec<u8>) -> u64 {
    let (s, reply) = slot::<AppendAck>();
    core.handle(Request::Append { pid, batch: ValidBatch::new(b, 1 << 20).unwrap(), reply });
    while s.lock().unwrap().is_none() {
        core.tick().unwrap();
    }
    s.lock().unwrap().take().unwrap().unwrap().base_offset
}

/// The header of the frame at log position `pos` of the first segment.
fn header_at(disk: &SimDisk, seg: &Path, pos: u64) -> FrameHeader {
    frame::decode_header(&disk.file(seg).unwrap()[pos as usize..], pos, 1 << 20).unwrap()
}

// Proves: a whole frame of an older epoch at the position where the newest
// epoch began writing, followed by a frame of the newest epoch, ends the log
// there: the open cuts the tail (none of it was acknowledged) instead of
// taking the old frame into the log and then refusing to open with `Corrupt`
// because the newer frame's offsets do not continue the old one's. The layout
// is what a power cut leaves when it drops every sector of an epoch's first
// commit, written over a torn commit the open before had cut, but keeps the
// commit after it (found by tests/sim_server.rs, seed 1064).
#[test]
fn stale_frame_at_the_epoch_start_ends_the_log() {
    let seg = log_dir(Path::new("/r"), 0).join(segment_name(0));
    const S: u64 = 4096;
    // Epoch 1: offsets 0-1 in the commit at 0, offsets 2-4 in the commit at S.
    let (mut core, _) = Core::open(SimIo::new(SimDisk::new(), 1, SimFaults::default()), sim_cfg(), spec()).unwrap();
    assert_eq!(append_acked(&mut core, 0, batch("kept", 2, 0)), 0);
    assert_eq!(append_acked(&mut core, 0, batch("stale", 3, 0)), 2);
    let mut disk = core.into_io().process_exit();
    let stale = header_at(&disk, &seg, S);
    assert_eq!((stale.epoch, stale.pid, !stale.end_pos().is_multiple_of(4096)), (1, 0, true), "{stale:?}");
    // A power cut tore the commit at S: the file ends inside its padding
    // frame (whose payload is zeros), so the open cuts the log at S.
    let torn_at = (header_at(&disk, &seg, stale.end_pos()).pos + 40).next_multiple_of(512);
    assert!(torn_at < S + 4096);
    let stale_bytes = disk.file(&seg).unwrap()[S as usize..torn_at as usize].to_vec();
    disk.truncate_file(&seg, torn_at);

    // Epoch 2 starts writing at S: offset 2 in the commit at S, offsets 3-6
    // in the commit at S + 4096, staged before the first was durable (no
    // fdatasync under `never`).
    let never = EngineConfig { fsync: FsyncPolicy::Never, ..sim_cfg() };
    let (mut core, reports) = Core::open(SimIo::new(disk, 2, SimFaults::default()), never, spec()).unwrap();
    assert_eq!(reports[0].end_pos, S, "the torn commit was not cut");
    assert_eq!(append_acked(&mut core, 0, batch("lost", 1, 0)), 2);
    assert_eq!(append_acked(&mut core, 0, batch("newer", 4, 0)), 3);
    let disk = core.into_io().process_exit();
    let newer = header_at(&disk, &seg, S + 4096);
    assert_eq!((newer.epoch, newer.pid, newer.durable_before), (2, 0, S), "{newer:?}");
    // The power cut drops the commit at S whole: the medium shows the torn
    // commit of epoch 1 again, and zeros where its file had ended, which
    // completes its padding. Only the commit at S + 4096 survives.
    let mut bytes = disk.file(&seg).unwrap().to_vec();
    bytes[S as usize..(S + 4096) as usize].fill(0);
    bytes[S as usize..torn_at as usize].copy_from_slice(&stale_bytes);
    let mut io = SimIo::new(disk, 3, SimFaults::default());
    io.write_file_atomic(&seg, &bytes).unwrap();
    let disk = io.process_exit();

    let (mut core, reports) = Core::open(SimIo::new(disk.clone(), 4, SimFaults::default()), sim_cfg(), spec())
        .unwrap_or_else(|e| panic!("the open refused a log a power cut left: {e}"));
    let (summary, _) = strom::inspect::inspect_logs(&mut SimIo::new(disk, 5, SimFaults::default()), Path::new("/r"), 1, &sim_cfg())
        .unwrap_or_else(|e| panic!("inspect refused the log: {e}"));
    assert_eq!(summary[0].report.end_pos, S, "inspect does not end the log at the epoch's start");
    assert_eq!(reports[0].end_pos, S, "the log does not end at the epoch's start");
    let got: Vec<String> = read_partition(&mut core, 0).into_values().collect();
    assert_eq!(got, ["kept-0", "kept-1"]);
    assert_eq!(append_acked(&mut core, 0, batch("after", 1, 0)), 2, "appends do not continue at offset 2");
}

// Proves: damage to the last commit of a segment is reported, not cut, when
// the only frame written after it is the first commit of the next segment:
// the judgement of a break looks at every block boundary of later segments,
// their first one included (it skipped it, and cut the acknowledged commit
// with the whole next segment).
#[test]
fn damage_before_a_roll_is_proven_by_the_next_segment() {
    // One-block commits, three to a segment.
    let cfg = EngineConfig { write_buf_bytes: 8192, batch_bytes_max: 2048, segment_bytes: 16384, ..sim_cfg() };
    let (mut core, _) = Core::open(SimIo::new(SimDisk::new(), 1, SimFaults::default()), cfg.clone(), spec()).unwrap();
    for i in 0..4 {
        assert_eq!(append_acked(&mut core, 0, batch("acked", 2, 0)), 2 * i);
    }
    let mut disk = core.into_io().process_exit();
    let dir = log_dir(Path::new("/r"), 0);
    let (first, second) = (dir.join(segment_name(0)), dir.join(segment_name(12288)));
    assert_eq!((disk.file(&first).map(<[u8]>::len), disk.file(&second).map(<[u8]>::len)), (Some(12288), Some(4096)));
    // A bit flips inside the batch of the last commit before the roll.
    disk.flip_bit(&first, 8192 + 100, 0);

    let Err(err) = Core::open(SimIo::new(disk.clone(), 2, SimFaults::default()), cfg.clone(), spec()) else {
        panic!("the open cut a damaged acknowledged commit")
    };
    assert!(matches!(err, StromError::Corrupt { pos: 8192, .. }), "{err}");
    let inspected = strom::inspect::inspect_logs(&mut SimIo::new(disk, 3, SimFaults::default()), Path::new("/r"), 1, &cfg);
    assert!(matches!(inspected, Err(StromError::Corrupt { pos: 8192, .. })), "inspect: {:?}", inspected.err());
}

/// What fills a segment past the log's end when the file was written before
/// it became this segment (DURABILITY.md, "Pre-written segments").
#[derive(Debug, Clone, Copy)]
enum Leftover {
    /// Pre-written space: zeros.
    Zeros,
    /// A recycled segment: the frames it held when it was an older segment,
    /// which name other positions.
    StaleFrames,
}

/// `disk` with the last segment's bytes from `cut` on replaced by `fill`, up
/// to the whole segment size, as if it were a recycled or pre-written file
/// whose last commit was torn at `cut`.
fn with_leftover(disk: &SimDisk, cut: u64, fill: Leftover) -> SimDisk {
    let segs = segments(disk);
    let (start, path) = segs.last().unwrap().clone();
    let seg_bytes = sim_cfg().segment_bytes;
    let len = seg_bytes - (cut - start);
    let bytes = match fill {
        Leftover::Zeros => vec![0u8; len as usize],
        Leftover::StaleFrames => {
            // The first segment's bytes at the same offsets: frames, valid
            // where they were written, as a recycled file keeps them.
            let first = disk.file(&segs[0].1).unwrap();
            let mut b = vec![0u8; len as usize];
            let from = ((cut - start) as usize).min(first.len());
            let n = (first.len() - from).min(b.len());
            b[..n].copy_from_slice(&first[from..from + n]);
            b
        }
    };
    let mut d = disk.clone();
    d.write_at(&path, cut - start, &bytes);
    d
}

// Proves recovery over a segment whose file was written before (recycled by
// retention, or pre-written): with zeros or another segment's stale frames
// past any point of its last segment, the log recovers to a prefix of its
// records (a torn last commit is cut), the whole log when nothing was torn,
// with no byte of the leftover counted as cut, and appends go on right after.
#[test]
fn leftover_space_past_the_end_is_the_end() {
    let (disk, full) = build_log();
    let segs = segments(&disk);
    assert!(segs.len() >= 2, "the log should span segments: {segs:?}");
    let (last_start, last_path) = segs.last().unwrap().clone();
    let log_end = last_start + disk.file(&last_path).unwrap().len() as u64;
    assert!(log_end - last_start < sim_cfg().segment_bytes, "the last segment must have room for leftover space");
    for fill in [Leftover::Zeros, Leftover::StaleFrames] {
        let mut recovered_before = 0;
        let cuts: Vec<u64> = (last_start..log_end).step_by(512).chain([log_end]).collect();
        for &cut in &cuts {
            let d = with_leftover(&disk, cut, fill);
            let (mut core, reports) = Core::open(SimIo::new(d, cut, SimFaults::default()), sim_cfg(), spec())
                .unwrap_or_else(|e| panic!("{fill:?} past {cut}: did not recover: {e}"));
            let report = &reports[0];
            assert!(report.end_pos <= cut.next_multiple_of(4096), "{fill:?} past {cut}: the log ends at {}", report.end_pos);
            // Only what was written for positions past the end counts as cut:
            // up to the cut, and at most the frame that straddles it.
            let straddling_bytes_max = 64 << 10;
            assert!(
                report.bytes_cut <= cut.saturating_sub(report.end_pos) + straddling_bytes_max,
                "{fill:?} past {cut}: {} bytes cut, the log ends at {}",
                report.bytes_cut,
                report.end_pos
            );
            let mut recovered = 0;
            for pid in 0..2u32 {
                let got = read_partition(&mut core, pid);
                recovered += got.len();
                for (off, v) in &got {
                    assert_eq!(full[pid as usize].get(off), Some(v), "{fill:?} past {cut}: pid {pid} offset {off} differs");
                }
                let (s, reply) = slot::<AppendAck>();
                core.handle(Request::Append { pid, batch: ValidBatch::new(batch("after", 1, 0), 1 << 20).unwrap(), reply });
                while s.lock().unwrap().is_none() {
                    core.tick().unwrap();
                }
                assert_eq!(s.lock().unwrap().take().unwrap().unwrap().base_offset, got.len() as u64, "{fill:?} past {cut}: pid {pid}");
            }
            assert!(recovered >= recovered_before, "{fill:?} past {cut}: {recovered} records, fewer than a shorter cut's");
            recovered_before = recovered;
            if cut == log_end {
                assert_eq!(report.bytes_cut, 0, "{fill:?}: leftover space counted as cut");
                // What was appended after the open survives the next one.
                let disk = core.into_io().process_exit();
                let mut reopened = Core::open(SimIo::new(disk, cut, SimFaults::default()), sim_cfg(), spec()).unwrap().0;
                for pid in 0..2u32 {
                    assert_eq!(read_partition(&mut reopened, pid).len(), full[pid as usize].len() + 1, "{fill:?}: pid {pid} after reopen");
                }
            }
        }
        assert_eq!(recovered_before, full[0].len() + full[1].len(), "{fill:?}: the whole log did not recover every record");
    }
}
