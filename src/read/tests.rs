//! The read path under the simulator: a sink that asks for more is pushed
//! each new batch, in order; a cancelled one is dropped unanswered; a read
//! of one of several interleaved partitions returns exactly its batches and
//! reads from disk only its runs (and the small gaps it merges), across
//! segments and after a restart.
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use super::{Fetch, ReadResult, ReadSink, SinkFlow};
use crate::config::EngineConfig;
use crate::core::{Core, CoreSpec, Request, ValidBatch};
use crate::error::Result;
use crate::io::sim::{SimDisk, SimFaults, SimIo};
use crate::wire::batch::BatchBuilder;

type Answers = Arc<Mutex<Vec<Result<ReadResult>>>>;

/// Keeps every answer; asks for more until it has `wanted`.
struct Recorder {
    answers: Answers,
    wanted: usize,
    cancelled: Arc<AtomicBool>,
}

impl ReadSink for Recorder {
    fn deliver(&mut self, answer: Result<ReadResult>) -> SinkFlow {
        let mut a = self.answers.lock().unwrap();
        a.push(answer);
        if a.len() < self.wanted { SinkFlow::More } else { SinkFlow::Done }
    }

    fn cancelled(&self) -> bool {
        self.cancelled.load(Ordering::Relaxed)
    }
}

fn core() -> Core<SimIo> {
    core_on(SimDisk::new(), 1, EngineConfig::small_for_tests())
}

/// A core of `partitions` on one log, with 8 read buffers, so that a read
/// may keep several disk reads in flight.
fn core_of(disk: SimDisk, partitions: u32) -> Core<SimIo> {
    core_on(disk, partitions, EngineConfig { read_bufs_per_core: 8, ..EngineConfig::small_for_tests() })
}

fn core_on(disk: SimDisk, partitions: u32, cfg: EngineConfig) -> Core<SimIo> {
    let spec = CoreSpec {
        core_id: 0,
        data_dir: PathBuf::from("/sim/data"),
        log_count: 1,
        logs: vec![0],
        pids: (0..partitions).collect(),
        indexed: Default::default(),
        needs: Default::default(),
        marks: Default::default(),
    };
    let io = SimIo::new(disk, 7, SimFaults::default());
    Core::open(io, cfg, spec).unwrap().0
}

fn append(core: &mut Core<SimIo>, value: &str) {
    append_to(core, 0, value.as_bytes());
}

fn append_to(core: &mut Core<SimIo>, pid: u32, value: &[u8]) {
    let mut b = BatchBuilder::new(1_700_000_000_000);
    b.push(1_700_000_000_000, None, Some(value), &[]);
    let batch = ValidBatch::new(b.finish(), 1 << 20).unwrap();
    let done = Arc::new(AtomicBool::new(false));
    let d = done.clone();
    core.handle(Request::Append { pid, batch, reply: Box::new(move |r| d.store(r.is_ok(), Ordering::Relaxed)) });
    while !done.load(Ordering::Relaxed) {
        core.tick().unwrap();
    }
}

fn subscribe(core: &mut Core<SimIo>, wanted: usize) -> (Answers, Arc<AtomicBool>) {
    let answers = Arc::new(Mutex::new(Vec::new()));
    let cancelled = Arc::new(AtomicBool::new(false));
    let sink = Box::new(Recorder { answers: answers.clone(), wanted, cancelled: cancelled.clone() });
    let fetch = Fetch { offset: 0, max_bytes: 1 << 20, max_wait_ns: 60_000_000_000 };
    core.handle(Request::Read { pid: 0, fetch, sink });
    (answers, cancelled)
}

// Proves: a sink that answers More gets each new batch pushed once, in offset order, and nothing after it says Done.
#[test]
fn a_sink_that_wants_more_is_pushed_each_batch() {
    let mut core = core();
    let (answers, _) = subscribe(&mut core, 3);
    for i in 0..5 {
        append(&mut core, &format!("v{i}"));
        core.tick().unwrap();
    }
    let answers = answers.lock().unwrap();
    assert_eq!(answers.len(), 3, "three answers were asked for");
    for (i, a) in answers.iter().enumerate() {
        let a = a.as_ref().unwrap();
        assert_eq!(a.next_offset, i as u64 + 1, "answer {i} holds exactly batch {i}");
        assert!(!a.batches.is_empty());
    }
}

// Proves: a parked read whose sink was cancelled is dropped unanswered when data arrives.
#[test]
fn a_cancelled_sink_is_dropped_unanswered() {
    let mut core = core();
    let (answers, cancelled) = subscribe(&mut core, 1);
    core.tick().unwrap();
    cancelled.store(true, Ordering::Relaxed);
    append(&mut core, "late");
    core.tick().unwrap();
    assert!(answers.lock().unwrap().is_empty(), "a cancelled sink was answered");
}

/// Bytes of each record value in the interleaved tests: a frame of about
/// 30 KiB, nearly a whole 32 KiB commit of `small_for_tests`.
const VALUE_BYTES: usize = 30_000;
const PARTITIONS: u32 = 4;
/// Rounds of one batch per partition: 2.4 MB of log, nine 256 KiB
/// segments, far past the 256 KiB tail cache.
const ROUNDS: usize = 20;

/// A value naming its partition and round, so a batch of another
/// partition (or out of order) is seen.
fn value_of(pid: u32, round: usize) -> Vec<u8> {
    let mut v = format!("p{pid}r{round:04}-").into_bytes();
    v.resize(VALUE_BYTES, b'a' + pid as u8);
    v
}

fn interleave(core: &mut Core<SimIo>, rounds: std::ops::Range<usize>) {
    interleave_over(core, PARTITIONS, rounds);
}

fn interleave_over(core: &mut Core<SimIo>, partitions: u32, rounds: std::ops::Range<usize>) {
    for round in rounds {
        for pid in 0..partitions {
            append_to(core, pid, &value_of(pid, round));
        }
    }
}

/// One fetch of `pid` at `offset`, answered at once.
fn fetch_once(core: &mut Core<SimIo>, pid: u32, offset: u64, max_bytes: usize) -> Result<ReadResult> {
    let got: Answers = Arc::new(Mutex::new(Vec::new()));
    let g = got.clone();
    let fetch = Fetch { offset, max_bytes, max_wait_ns: 0 };
    core.handle(Request::Read { pid, fetch, sink: super::once(Box::new(move |r| g.lock().unwrap().push(r))) });
    while got.lock().unwrap().is_empty() {
        core.tick().unwrap();
    }
    got.lock().unwrap().pop().unwrap()
}

/// Checks that an answer holds exactly `pid`'s records from `round` on,
/// in order; the round after its last record.
fn check_records(pid: u32, mut round: usize, r: &ReadResult) -> usize {
    let mut rest = &r.batches[r.headroom_bytes..];
    while !rest.is_empty() {
        let info = crate::wire::batch::parse_header(rest).unwrap();
        assert_eq!(info.base_offset as u64, round as u64, "pid {pid}: batches in offset order, none missing");
        for rec in crate::wire::batch::records(&rest[..info.batch_bytes]) {
            assert_eq!(rec.unwrap().value, Some(&value_of(pid, round)[..]), "pid {pid} offset {round}: its own record");
            round += 1;
        }
        rest = &rest[info.batch_bytes..];
    }
    assert_eq!(r.next_offset, round as u64, "pid {pid}: the next offset follows the last record");
    round
}

/// Reads `pid` from offset 0 to its end, `max_bytes` at a time, and
/// checks each record is the partition's next one. Returns the records read.
fn read_all(core: &mut Core<SimIo>, pid: u32, max_bytes: usize) -> usize {
    let mut round = 0;
    loop {
        let r = fetch_once(core, pid, round as u64, max_bytes).expect("read");
        if r.batches.len() == r.headroom_bytes {
            return round;
        }
        round = check_records(pid, round, &r);
    }
}

/// Disk bytes read, served from disk, and disk reads, so far.
fn read_bytes(core: &Core<SimIo>) -> (u64, u64, u64) {
    let m = core.metrics().read;
    (m.disk_bytes, m.served_disk_bytes, m.reads_from_disk)
}

/// Whether the disk bytes `d` read to serve `s` from disk in `n` reads stay
/// within the merge slack: 1/16 of gaps, plus the alignment of each read's
/// two ends (4 KiB each at most). A walk of the whole log reads 4x.
fn within_slack((d, s, n): (u64, u64, u64)) -> bool {
    d <= s + s / 16 + n * 8192
}

// Proves: reading one of four interleaved partitions from disk, across
// segment boundaries, returns exactly its batches, and reads from disk only
// its runs (bytes read / served within the merge slack): a read that
// walked the log would read the other three partitions' bytes too.
#[test]
fn a_read_of_one_of_four_partitions_reads_only_its_runs() {
    let mut core = core_of(SimDisk::new(), PARTITIONS);
    interleave(&mut core, 0..ROUNDS);
    for pid in 0..PARTITIONS {
        let before = read_bytes(&core);
        assert_eq!(read_all(&mut core, pid, 64 << 10), ROUNDS, "pid {pid}: every record");
        let after = read_bytes(&core);
        let delta = (after.0 - before.0, after.1 - before.1, after.2 - before.2);
        assert!(delta.1 > (ROUNDS as u64 - 10) * VALUE_BYTES as u64, "pid {pid}: most of it from disk: {delta:?}");
        assert!(within_slack(delta), "pid {pid}: read {} disk bytes to serve {} ({} reads)", delta.0, delta.1, delta.2);
    }
    let m = core.metrics().read;
    assert!(m.reads_ahead > 0, "reads of the runs ahead were in flight beside the cursor's own");
    assert!(m.served_bytes >= m.served_disk_bytes && m.served_bytes >= (PARTITIONS as u64 * ROUNDS as u64) * VALUE_BYTES as u64);
}

// Proves: after a restart the runs the recovery scan rebuilt (from the
// checkpoint on) and the sparse walk before them together return exactly
// each partition's batches, and what is written after the restart is read
// through the runs within the merge slack.
#[test]
fn reads_after_a_restart_return_exactly_each_partitions_batches() {
    let mut core = core_of(SimDisk::new(), PARTITIONS);
    interleave(&mut core, 0..ROUNDS);
    let disk = core.into_io().process_exit();
    let mut core = core_of(disk, PARTITIONS);
    for pid in 0..PARTITIONS {
        assert_eq!(read_all(&mut core, pid, 100 << 10), ROUNDS, "pid {pid}: every record after the restart");
    }
    interleave(&mut core, ROUNDS..2 * ROUNDS);
    let before = read_bytes(&core);
    let mut offset_reads = 0;
    for pid in 0..PARTITIONS {
        offset_reads += read_all(&mut core, pid, 64 << 10);
    }
    assert_eq!(offset_reads, PARTITIONS as usize * 2 * ROUNDS);
    let after = read_bytes(&core);
    assert!(after.1 > before.1, "the reads came from disk");
    // The first half is read by the sparse walk (4x); bound only the whole.
    assert!(after.0 - before.0 <= 3 * (after.1 - before.1), "{before:?} -> {after:?}");
}

/// The sidecar files of log 0 under the simulator, oldest first.
fn sidecar_paths(disk: SimDisk) -> (SimDisk, Vec<PathBuf>) {
    use crate::io::Io;
    let mut io = SimIo::new(disk, 7, SimFaults::default());
    let dir = crate::log::segment::log_dir(std::path::Path::new("/sim/data"), 0);
    let mut names: Vec<String> =
        io.list_dir(&dir).unwrap().into_iter().filter(|n| n.ends_with(crate::log::sidecar::SIDECAR_SUFFIX)).collect();
    names.sort();
    (io.process_exit(), names.into_iter().map(|n| dir.join(n)).collect())
}

/// Reads every partition after a restart on `disk`; the (disk bytes read,
/// served from disk, disk reads) it took.
fn read_all_after_restart(disk: SimDisk) -> (u64, u64, u64) {
    let mut core = core_of(disk, PARTITIONS);
    let before = read_bytes(&core);
    for pid in 0..PARTITIONS {
        assert_eq!(read_all(&mut core, pid, 64 << 10), ROUNDS, "pid {pid}: every record after the restart");
    }
    let after = read_bytes(&core);
    (after.0 - before.0, after.1 - before.1, after.2 - before.2)
}

// Proves: each sealed segment gets a sidecar, and after a restart a
// catch-up read of each of four interleaved partitions follows the runs
// they list (and the runs the recovery scan rebuilt): exactly its records,
// reading within the merge slack of what it serves; with one sidecar
// deleted and one corrupted, the reads of those segments walk frames and
// still return exactly each partition's records.
#[test]
fn after_a_restart_reads_follow_the_sealed_segments_sidecars() {
    let mut core = core_of(SimDisk::new(), PARTITIONS);
    interleave(&mut core, 0..ROUNDS);
    let (disk, sidecars) = sidecar_paths(core.into_io().process_exit());
    assert!(sidecars.len() >= 6, "a sidecar per sealed segment: {sidecars:?}");
    let d = read_all_after_restart(disk.clone());
    let with_all = d;
    assert!(d.1 > (ROUNDS as u64 - 10) * VALUE_BYTES as u64 * PARTITIONS as u64, "most of it from disk: {d:?}");
    assert!(within_slack(d), "read {} disk bytes to serve {} ({} reads)", d.0, d.1, d.2);

    let mut io = SimIo::new(disk, 7, SimFaults::default());
    {
        use crate::io::Io;
        io.remove(&sidecars[1]).unwrap();
        let mut bytes = io.read_file(&sidecars[2]).unwrap().unwrap();
        let mid = bytes.len() / 2;
        bytes[mid] ^= 0x40;
        io.write_file_atomic(&sidecars[2], &bytes).unwrap();
        io.sync_dir(sidecars[1].parent().unwrap()).unwrap();
    }
    let d = read_all_after_restart(io.process_exit());
    assert!(d.1 > 0 && d.0 > with_all.0, "the two segments without a usable sidecar were walked: {with_all:?} -> {d:?}");
}

// Proves: a clean stop writes the active segment's sidecar up to its
// durable end, so that after the restart (which scans nothing, so no
// partition has runs in memory) a catch-up read of each of four
// interleaved partitions, the active segment included, reads within the
// merge slack; and a segment sealed after the restart merges that sidecar
// with the new runs (the second catch-up too stays within the slack).
#[test]
fn a_clean_stop_leaves_the_active_segments_sidecar() {
    fn stop(mut core: Core<SimIo>) -> SimDisk {
        core.handle(Request::Stop { reply: Box::new(|_| ()) });
        while !core.stopped() {
            core.tick().unwrap();
        }
        core.into_io().process_exit()
    }
    // Half a segment: everything is in the active one.
    let rounds = 2;
    let mut core = core_of(SimDisk::new(), PARTITIONS);
    interleave(&mut core, 0..rounds);
    let (disk, sidecars) = sidecar_paths(stop(core));
    assert_eq!(sidecars.len(), 2, "the sealed segment's and the active one's: {sidecars:?}");
    let mut core = core_of(disk, PARTITIONS);
    let before = read_bytes(&core);
    for pid in 0..PARTITIONS {
        assert_eq!(read_all(&mut core, pid, 64 << 10), rounds, "pid {pid}");
    }
    let after = read_bytes(&core);
    let d = (after.0 - before.0, after.1 - before.1, after.2 - before.2);
    assert!(d.1 >= (rounds * VALUE_BYTES) as u64 * PARTITIONS as u64, "all of it from disk: {d:?}");
    assert!(within_slack(d), "read {} disk bytes to serve {} ({} reads)", d.0, d.1, d.2);
    // Seal it (and more) in this process, then restart uncleanly.
    interleave(&mut core, rounds..ROUNDS);
    let (disk, after_seal) = sidecar_paths(core.into_io().process_exit());
    assert_eq!(after_seal[1], sidecars[1], "the segment active at the stop");
    let mut io = SimIo::new(disk, 7, SimFaults::default());
    let merged = {
        use crate::io::Io;
        crate::log::sidecar::decode(&io.read_file(&after_seal[1]).unwrap().unwrap(), 229_376, u64::MAX).unwrap()
    };
    assert_eq!(merged.parts.len(), PARTITIONS as usize, "the stop's sidecar merged with this process's runs: {merged:?}");
    assert!(merged.parts.values().all(|r| !r.runs.is_empty()));
    let d = read_all_after_restart(io.process_exit());
    assert!(within_slack(d), "after sealing: read {} disk bytes to serve {} ({} reads)", d.0, d.1, d.2);
}

mod rebuild;
// ---- read-ahead windows (read/ahead.rs) ----

/// The read path's metrics now.
fn read_metrics(core: &Core<SimIo>) -> crate::metrics::ReadMetrics {
    core.metrics().read
}

// Proves: a catch-up fetch stopped by its size leaves a window, and the
// consumer's next fetch at that offset takes it over (counted as a hit,
// never a miss) and returns exactly its records; the whole catch-up still
// reads within the merge slack of what it serves.
#[test]
fn a_catch_up_fetch_is_served_from_the_window_the_last_one_left() {
    let mut core = core_of(SimDisk::new(), PARTITIONS);
    interleave(&mut core, 0..ROUNDS);
    let before = read_bytes(&core);
    assert_eq!(read_all(&mut core, 0, 64 << 10), ROUNDS, "every record");
    let after = read_bytes(&core);
    let m = read_metrics(&core);
    assert!(m.ahead_windows > 0 && m.ahead_hits > 0, "windows opened and taken over: {m:?}");
    assert_eq!(m.ahead_misses, 0, "one consumer finds its window at each offset");
    let delta = (after.0 - before.0, after.1 - before.1, after.2 - before.2);
    assert!(within_slack(delta), "read {} disk bytes to serve {} ({} reads)", delta.0, delta.1, delta.2);
}

// Proves: a window under which retention deleted segments is never served:
// the fetch at its offset fails with OffsetOutOfRange (no stale bytes),
// no window is taken over, and a catch-up from the new start returns
// exactly the records kept.
#[test]
fn a_window_under_deleted_segments_is_never_served() {
    use crate::io::Io;
    use crate::partition::retention::Retention;
    use std::time::Duration;
    let mut core = core_of(SimDisk::new(), PARTITIONS);
    interleave(&mut core, 0..ROUNDS);
    let keep = Retention { age_ms: None, bytes: Some(6 * VALUE_BYTES as u64) };
    core.handle(Request::SetRetention { limits: (0..PARTITIONS).map(|p| (p, keep)).collect() });
    // Retention runs once a second (of the simulator's time): find when,
    // so that the window below opens just before the next pass.
    let start_of = |core: &Core<SimIo>| core.partition(0).unwrap().start_offset;
    while start_of(&core) == 0 {
        core.io.advance(Duration::from_millis(10));
        core.tick().unwrap();
    }
    let pass_ns = core.io.now_ns();
    interleave(&mut core, ROUNDS..2 * ROUNDS);
    let first = start_of(&core);
    core.io.advance(Duration::from_nanos((pass_ns + 960_000_000).saturating_sub(core.io.now_ns())));
    let r = fetch_once(&mut core, 0, first, 32 << 10).expect("the first fetch");
    let next = check_records(0, first as usize, &r) as u64;
    let m = read_metrics(&core);
    assert_eq!(m.ahead_windows_open, 1, "the fetch left a window at offset {next}: {m:?}");
    for _ in 0..10 {
        core.io.advance(Duration::from_millis(10));
        core.tick().unwrap();
    }
    assert!(start_of(&core) > next, "retention deleted the window's segments: start {}", start_of(&core));
    assert_eq!(read_metrics(&core).ahead_windows_open, 1, "the window is still open");
    let hits = read_metrics(&core).ahead_hits;
    match fetch_once(&mut core, 0, next, 32 << 10) {
        Err(crate::error::StromError::OffsetOutOfRange { .. }) => {}
        other => panic!("a fetch under deleted segments: {:?}", other.map(|r| r.next_offset)),
    }
    let mut round = start_of(&core) as usize;
    loop {
        let r = fetch_once(&mut core, 0, round as u64, 64 << 10).expect("a catch-up from the new start");
        if r.batches.len() == r.headroom_bytes {
            break;
        }
        round = check_records(0, round, &r);
    }
    assert_eq!(round, 2 * ROUNDS, "every record kept");
    let m = read_metrics(&core);
    assert!(m.ahead_misses >= 1, "the catch-up's first fetch found only the stale window, and left it: {m:?}");
    assert!(m.ahead_hits > hits, "the catch-up's later fetches took their own windows: {m:?}");
}

// Proves: two consumers of one partition at different offsets, fetching in
// turn, each keep their own window (both are taken over, none evicts the
// other's) and each gets exactly its records.
#[test]
fn two_readers_of_one_partition_keep_their_own_windows() {
    let mut core = core_of(SimDisk::new(), PARTITIONS);
    interleave(&mut core, 0..ROUNDS);
    let mut rounds = [0usize, ROUNDS / 2];
    let mut done = [false, false];
    while !done.iter().all(|&d| d) {
        for (reader, round) in rounds.iter_mut().enumerate() {
            if done[reader] {
                continue;
            }
            let r = fetch_once(&mut core, 0, *round as u64, 64 << 10).expect("read");
            done[reader] = r.batches.len() == r.headroom_bytes;
            if !done[reader] {
                *round = check_records(0, *round, &r);
            }
        }
    }
    assert_eq!(rounds, [ROUNDS, ROUNDS], "both readers read to the end");
    let m = read_metrics(&core);
    assert!(m.ahead_hits >= 4, "both readers' fetches took their windows over: {m:?}");
    // The one miss: the second reader's first fetch, which found only the first's window.
    assert_eq!(m.ahead_misses, 1, "neither evicted the other's window: {m:?}");
}

// Proves: with more partitions catching up than windows a core keeps, the
// windows open never exceed WINDOWS_MAX nor the bytes the read buffers
// hold, every partition still reads exactly its records, and windows left
// unused are dropped once idle, giving every read buffer back.
#[test]
fn windows_stay_within_their_bound() {
    use super::ahead::{WINDOW_IDLE_NS, WINDOWS_MAX};
    const MANY: u32 = WINDOWS_MAX as u32 + 8;
    let cfg = EngineConfig { read_bufs_per_core: 8, ..EngineConfig::small_for_tests() };
    let pool_bytes = 8 * cfg.write_buf_bytes as u64;
    let mut core = core_on(SimDisk::new(), MANY, cfg);
    interleave_over(&mut core, MANY, 0..3);
    let check = |core: &Core<SimIo>| {
        let m = read_metrics(core);
        assert!(m.ahead_windows_open <= WINDOWS_MAX as u64, "{} windows open", m.ahead_windows_open);
        assert!(m.ahead_held_bytes <= pool_bytes, "windows hold {} bytes", m.ahead_held_bytes);
    };
    for pid in 0..MANY {
        let r = fetch_once(&mut core, pid, 0, 32 << 10).expect("read");
        assert_eq!(check_records(pid, 0, &r), 1, "pid {pid}: one batch");
        check(&core);
    }
    assert!(read_metrics(&core).ahead_windows >= MANY as u64 - 1, "a window per partition, the oldest evicted");
    for pid in 0..MANY {
        assert_eq!(read_all(&mut core, pid, 32 << 10), 3, "pid {pid}: every record");
        check(&core);
    }
    for pid in 0..MANY {
        let r = fetch_once(&mut core, pid, 0, 32 << 10).expect("read");
        assert_eq!(check_records(pid, 0, &r), 1);
    }
    core.io.advance(std::time::Duration::from_nanos(WINDOW_IDLE_NS));
    core.tick().unwrap();
    let m = read_metrics(&core);
    assert_eq!((m.ahead_windows_open, m.read_bufs_free), (0, 8), "idle windows dropped, buffers back: {m:?}");
}

// ---- one scan for several readers (read/share.rs) ----

/// Two fetches of `pid` at `offset` asked together (neither answered
/// before the other starts); their answers.
fn fetch_pair(core: &mut Core<SimIo>, pid: u32, offset: u64, max_bytes: usize) -> [ReadResult; 2] {
    let answers: Vec<Answers> = (0..2).map(|_| Arc::new(Mutex::new(Vec::new()))).collect();
    for got in &answers {
        let g = got.clone();
        let fetch = Fetch { offset, max_bytes, max_wait_ns: 0 };
        core.handle(Request::Read { pid, fetch, sink: super::once(Box::new(move |r| g.lock().unwrap().push(r))) });
    }
    while answers.iter().any(|a| a.lock().unwrap().is_empty()) {
        core.tick().unwrap();
    }
    [0, 1].map(|i| answers[i].lock().unwrap().pop().unwrap().expect("read"))
}

// Proves: two consumers catching up on one partition in lockstep (each
// fetch asked while the other's is in progress) get exactly its records,
// and the disk reads its bytes about once: the second reader copies or
// waits for the first one's chunks (counted as shared bytes), and the two
// share one window between fetches.
#[test]
fn readers_in_lockstep_share_one_scan() {
    let mut core = core_of(SimDisk::new(), PARTITIONS);
    interleave(&mut core, 0..ROUNDS);
    let before = read_bytes(&core);
    let mut round = 0;
    loop {
        let [a, b] = fetch_pair(&mut core, 0, round as u64, 64 << 10);
        assert_eq!(a.batches[a.headroom_bytes..], b.batches[b.headroom_bytes..], "both readers get the same answer");
        if a.batches.len() == a.headroom_bytes {
            break;
        }
        round = check_records(0, round, &a);
    }
    assert_eq!(round, ROUNDS, "every record");
    let after = read_bytes(&core);
    let (disk, served) = (after.0 - before.0, after.1 - before.1);
    let m = read_metrics(&core);
    eprintln!("lockstep: {disk} disk bytes for {served} served from disk; {m:?}");
    assert!(m.shared_bytes > served / 4, "the second reader took the first's bytes: {m:?}");
    assert!(disk < served * 3 / 4, "read {disk} disk bytes to serve {served} to two readers: {m:?}");
    for _ in 0..10 {
        core.tick().unwrap();
    }
    assert_eq!(read_metrics(&core).read_bufs_free, 8, "every read buffer back once the reads drained");
}
