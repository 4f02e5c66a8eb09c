//! Sidecars rebuilt by a scan of their segment: after one is lost or
//! damaged, after a crash left the active segment without one, and with
//! retention dropping segments while their rebuild waits or runs.
use super::*;
use crate::io::Io;

/// Ticks until `cond` holds (a bounded number of ticks: the simulator's
/// time moves by each tick's timeout, so a rebuild's reads complete).
fn tick_until(core: &mut Core<SimIo>, what: &str, cond: impl Fn(&Core<SimIo>) -> bool) {
    for _ in 0..10_000 {
        if cond(core) {
            return;
        }
        core.tick().unwrap();
    }
    panic!("never: {what}");
}

fn rebuilt(core: &Core<SimIo>) -> u64 {
    core.metrics().read.sidecars_rebuilt
}

/// The segment files of log 0, oldest first.
fn segment_names(io: &mut SimIo) -> Vec<String> {
    let dir = crate::log::segment::log_dir(std::path::Path::new("/sim/data"), 0);
    let mut names: Vec<String> = io.list_dir(&dir).unwrap().into_iter().filter(|n| n.ends_with(".seg")).collect();
    names.sort();
    names
}

/// Reads every partition on `core`: the (disk bytes, served from disk,
/// reads) it took, each partition's records checked exactly.
fn read_every_partition(core: &mut Core<SimIo>, rounds: usize) -> (u64, u64, u64) {
    let before = read_bytes(core);
    for pid in 0..PARTITIONS {
        assert_eq!(read_all(core, pid, 64 << 10), rounds, "pid {pid}: every record");
    }
    let after = read_bytes(core);
    (after.0 - before.0, after.1 - before.1, after.2 - before.2)
}

// Proves: a sidecar deleted and one corrupted are rebuilt by a scan once a
// read finds them unusable (the read itself walks and returns exactly each
// partition's records), the rebuilt files decode, and the next catch-up
// reads follow them: within the merge slack of what they serve again.
#[test]
fn a_lost_or_damaged_sidecar_is_rebuilt_and_then_used() {
    let mut core = core_of(SimDisk::new(), PARTITIONS);
    interleave(&mut core, 0..ROUNDS);
    let (disk, sidecars) = sidecar_paths(core.into_io().process_exit());
    let original = {
        let mut io = SimIo::new(disk.clone(), 7, SimFaults::default());
        (io.read_file(&sidecars[1]).unwrap().unwrap(), io.read_file(&sidecars[2]).unwrap().unwrap())
    };
    let mut io = SimIo::new(disk, 7, SimFaults::default());
    io.remove(&sidecars[1]).unwrap();
    let mut bytes = original.1.clone();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x40;
    io.write_file_atomic(&sidecars[2], &bytes).unwrap();
    io.sync_dir(sidecars[1].parent().unwrap()).unwrap();

    let mut core = core_of(io.process_exit(), PARTITIONS);
    let walked = read_every_partition(&mut core, ROUNDS);
    tick_until(&mut core, "both sidecars rebuilt", |c| rebuilt(c) == 2);
    let again = read_every_partition(&mut core, ROUNDS);
    assert!(again.1 > (ROUNDS as u64 - 10) * VALUE_BYTES as u64 * PARTITIONS as u64, "most of it from disk: {again:?}");
    assert!(
        within_slack(again),
        "with the rebuilt sidecars: read {} disk bytes to serve {} ({} reads); before: {walked:?}",
        again.0,
        again.1,
        again.2
    );
    assert!(again.0 < walked.0, "the walk read more than the runs: {walked:?} -> {again:?}");
    assert_eq!(rebuilt(&core), 2, "each rebuilt once");

    // A scan lists every partition with a batch there, with the same runs
    // its own runs gave when this process's first run wrote it.
    let mut io = core.into_io();
    for (path, before) in [(&sidecars[1], &original.0), (&sidecars[2], &original.1)] {
        let start_pos: u64 = path.file_stem().unwrap().to_str().unwrap().parse().unwrap();
        let was = crate::log::sidecar::decode(before, start_pos, u64::MAX).unwrap();
        let now = crate::log::sidecar::decode(&io.read_file(path).unwrap().unwrap(), start_pos, u64::MAX).unwrap();
        assert_eq!(now.end_pos, was.end_pos, "{path:?}");
        for (pid, runs) in &now.parts {
            assert_eq!(Some(runs), was.parts.get(pid), "{path:?} pid {pid}: the same runs");
        }
    }
}

// Proves: after a crash (no clean stop, so the active segment has no
// sidecar and the recovery scan's runs may start past its start), the
// segment gets its sidecar by a scan once a roll seals it: it lists every
// partition, and a catch-up read after another restart stays within the
// merge slack, returning exactly each partition's records.
#[test]
fn the_segment_active_at_a_crash_gets_its_sidecar_when_sealed() {
    let mut core = core_of(SimDisk::new(), PARTITIONS);
    interleave(&mut core, 0..ROUNDS);
    let mut io = core.into_io();
    let active = segment_names(&mut io).pop().unwrap();
    let (disk, sidecars) = sidecar_paths(io.process_exit());
    let dir = sidecars[0].parent().unwrap().to_path_buf();
    let active_runs = crate::log::sidecar::path_for(&dir.join(&active));
    assert!(!sidecars.contains(&active_runs), "no sidecar for the active segment after a crash: {sidecars:?}");

    let mut core = core_of(disk, PARTITIONS);
    interleave(&mut core, ROUNDS..ROUNDS + 4);
    tick_until(&mut core, "the crashed segment's sidecar rebuilt", |c| rebuilt(c) >= 1);
    let mut io = core.into_io();
    let start_pos: u64 = active.trim_end_matches(".seg").parse().unwrap();
    let s = crate::log::sidecar::decode(&io.read_file(&active_runs).unwrap().expect("written"), start_pos, u64::MAX).unwrap();
    assert_eq!(s.parts.len(), PARTITIONS as usize, "every partition listed: {s:?}");
    assert!(s.end_pos > start_pos);

    let mut core = core_of(io.process_exit(), PARTITIONS);
    let d = read_every_partition(&mut core, ROUNDS + 4);
    assert!(within_slack(d), "read {} disk bytes to serve {} ({} reads)", d.0, d.1, d.2);
}

// Proves: rebuilds that wait or run while retention drops their segments
// never leave a sidecar behind for a segment that is gone (every `.runs`
// file has its `.seg`).
#[test]
fn retention_racing_rebuilds_leaves_no_sidecar_of_a_deleted_segment() {
    let mut core = core_of(SimDisk::new(), PARTITIONS);
    interleave(&mut core, 0..ROUNDS);
    let (disk, sidecars) = sidecar_paths(core.into_io().process_exit());
    let mut io = SimIo::new(disk, 7, SimFaults::default());
    for path in &sidecars {
        io.remove(path).unwrap();
    }
    io.sync_dir(sidecars[0].parent().unwrap()).unwrap();

    let mut core = core_of(io.process_exit(), PARTITIONS);
    // Fetches at offsets in several segments, newest first, none answered
    // yet: each queues the rebuild of the segment it starts in, in that
    // order, so retention (which drops the oldest first) deletes segments
    // whose rebuild waits.
    let mut answers = Vec::new();
    for offset in [15u64, 10, 5, 0] {
        for pid in 0..PARTITIONS {
            let got: Answers = Arc::new(Mutex::new(Vec::new()));
            let g = got.clone();
            let fetch = Fetch { offset, max_bytes: 1 << 10, max_wait_ns: 0 };
            core.handle(Request::Read { pid, fetch, sink: super::super::once(Box::new(move |r| g.lock().unwrap().push(r))) });
            answers.push(got);
        }
    }
    core.io.advance(std::time::Duration::from_secs(2));
    let retention = crate::partition::Retention { age_ms: None, bytes: Some(64 << 10) };
    core.handle(Request::SetRetention { limits: (0..PARTITIONS).map(|pid| (pid, retention)).collect() });
    core.tick().unwrap();
    let m = core.metrics();
    assert!(m.log.retention_deleted_bytes > 0 && m.read.sidecars_rebuilt == 0, "segments dropped while their rebuilds wait: {m:?}");
    // Retention looks every second of the simulator's time.
    for _ in 0..200 {
        core.io.advance(std::time::Duration::from_millis(100));
        core.tick().unwrap();
    }
    assert!(core.metrics().log.retention_deleted_bytes > 0, "retention dropped segments");
    assert!(answers.iter().all(|a| a.lock().unwrap().len() == 1), "every fetch answered");
    for pid in 0..PARTITIONS {
        assert!(core.partition(pid).unwrap().start_offset > 0, "pid {pid}: retention dropped its start");
    }
    let mut io = core.into_io();
    let segments = segment_names(&mut io);
    let dir = sidecars[0].parent().unwrap();
    for name in io.list_dir(dir).unwrap().into_iter().filter(|n| n.ends_with(crate::log::sidecar::SIDECAR_SUFFIX)) {
        let seg = name.replace(crate::log::sidecar::SIDECAR_SUFFIX, ".seg");
        assert!(segments.contains(&seg), "sidecar {name} of a deleted segment; segments: {segments:?}");
    }
}
