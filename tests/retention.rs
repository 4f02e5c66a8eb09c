//! Retention end to end on the embedded engine: per-topic limits by time
//! and bytes, deleted topics' space coming back, topics of different
//! retention sharing a log, and the per-segment knowledge after a restart.
mod harness;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use harness::{Slot, batch, slot, test_dir};
use strom::catalog::{TopicRetention, UNLIMITED};
use strom::config::EngineConfig;
use strom::core::{AppendAck, Core, CoreSpec, Request, ValidBatch};
use strom::engine::Engine;
use strom::io::Io;
use strom::io::sim::{SimDisk, SimFaults, SimIo, SimRng};
use strom::metrics::Metric;
use strom::partition::{Retention, Span};
use strom::wire::batch::BatchBuilder;

/// One core, one log: every topic shares it. Segments of 256 KiB.
fn cfg() -> EngineConfig {
    EngineConfig { cores: 1, logs_on_create: 1, pin_cores: false, ..EngineConfig::small_for_tests() }
}

fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as i64
}

fn segments(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir.join("log-0000"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "seg"))
        .collect();
    v.sort();
    v
}

/// The sealed segments' sidecars (`NNN.runs`, `src/log/sidecar.rs`).
fn sidecars(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir.join("log-0000"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "runs"))
        .collect();
    v.sort();
    v
}

fn segment_bytes(dir: &Path) -> u64 {
    segments(dir).iter().map(|p| std::fs::metadata(p).unwrap().len()).sum()
}

/// Writes `bytes` of 1 KiB records to a partition, timestamped `ts_ms`.
fn fill(e: &Engine, topic: &str, bytes: usize, ts_ms: i64) {
    for i in 0..bytes / 4096 {
        e.append(topic, 0, batch(&format!("{i:0>1000}"), 4, ts_ms)).unwrap();
    }
}

/// Waits (retention runs once a second on the core's clock, and a segment
/// goes only once a checkpoint passed it) until `done`, appending a small
/// batch to `tick_topic` meanwhile so that checkpoints can be written.
fn wait_for(e: &Engine, tick_topic: &str, what: &str, mut done: impl FnMut(&Engine) -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !done(e) {
        assert!(Instant::now() < deadline, "retention did not {what} within 30 s");
        std::thread::sleep(Duration::from_millis(100));
        e.append(tick_topic, 0, batch("tick", 1, now_ms())).unwrap();
    }
}

fn gauge(e: &Engine, m: Metric) -> u64 {
    e.metrics().unwrap().iter().map(|c| c.get(m)).sum()
}

// Proves a deleted topic's space comes back: the segments only it used are
// removed, the reclaimable gauge says so before, and inspect no longer
// lists its partition once the shared segments went too.
#[test]
fn deleted_topic_space_comes_back() {
    let dir = test_dir("retention-delete");
    let e = Engine::open(&dir, cfg()).unwrap();
    e.create_topic("gone", 1).unwrap();
    // A small bytes limit, so that the segment "gone" shares with it is let go too.
    e.create_topic_with("kept", 1, TopicRetention { ms: None, bytes: Some(64 << 10) }).unwrap();
    fill(&e, "gone", 1500 << 10, now_ms());
    fill(&e, "kept", 600 << 10, now_ms());
    let before = segment_bytes(&dir);
    assert!(segments(&dir).len() >= 8, "{} segments", segments(&dir).len());
    // Written a tick after the segment's end is durable: the newest may lag.
    assert!(sidecars(&dir).len() + 2 >= segments(&dir).len(), "a sidecar per sealed segment: {:?}", sidecars(&dir));
    e.delete_topic("gone").unwrap();
    wait_for(&e, "kept", "free the deleted topic's segments", |_| segment_bytes(&dir) <= 3 * (256 << 10));
    for s in sidecars(&dir) {
        assert!(s.with_extension("seg").exists(), "sidecar {} outlived its segment", s.display());
    }
    let after = segment_bytes(&dir);
    println!("segment bytes: {before} before the delete, {after} after");
    assert!(before - after >= 1500 << 10, "freed only {} bytes", before - after);
    assert!(gauge(&e, Metric::RetentionDeletedBytes) >= 1500 << 10);
    let start = e.partition_stat("kept", 0).unwrap().start_offset;
    assert!(start > 0, "kept's oldest data went with the shared segments");
    e.shutdown().unwrap();
    let found = strom::io::uring::UringIo::new(64).and_then(|mut io| strom::inspect::inspect(&mut io, &dir, &cfg()));
    let found = found.unwrap();
    assert_eq!(found.names.len(), 1, "{:?}", found.names);
    assert!(!found.partitions.contains_key(&0), "inspect still lists the deleted topic's partition: {:?}", found.partitions.get(&0));
}

// Proves retention by time (old timestamps) and by bytes per topic, and
// that a topic without limits sharing the segments keeps them all until
// it is altered to let go.
#[test]
fn two_topics_share_a_log_and_the_longer_retention_wins() {
    let dir = test_dir("retention-shared");
    let e = Engine::open(&dir, cfg()).unwrap();
    let hour_ms = 3_600_000;
    e.create_topic_with("old", 1, TopicRetention { ms: Some(hour_ms), bytes: None }).unwrap();
    e.create_topic("forever", 1).unwrap();
    // Interleaved: every segment holds both.
    for _ in 0..8 {
        fill(&e, "old", 64 << 10, now_ms() - 2 * hour_ms as i64);
        fill(&e, "forever", 64 << 10, now_ms());
    }
    let segs = segments(&dir).len();
    std::thread::sleep(Duration::from_millis(2500));
    e.append("forever", 0, batch("tick", 1, now_ms())).unwrap();
    assert_eq!(segments(&dir).len(), segs, "a segment went while a topic without limits had data in it");
    assert_eq!(e.partition_stat("old", 0).unwrap().start_offset, 0);
    // Now "forever" keeps only its newest 100 KiB: the shared segments go.
    assert_eq!(e.alter_topic("forever", None, Some(Some(100 << 10))).unwrap(), TopicRetention { ms: None, bytes: Some(100 << 10) });
    wait_for(&e, "forever", "delete the shared segments", |e| e.partition_stat("old", 0).unwrap().start_offset > 0);
    wait_for(&e, "forever", "delete down to the bytes limit", |_| segments(&dir).len() <= 3);
    let forever = e.partition_stat("forever", 0).unwrap();
    assert!(forever.bytes < 3 * (256 << 10), "forever keeps {} bytes", forever.bytes);
    // What is left of "old" (all past its time limit) lies in segments "forever" still keeps.
    let old = e.partition_stat("old", 0).unwrap();
    println!("old: {old:?}; forever: {forever:?}; {} segments", segments(&dir).len());
    e.shutdown().unwrap();
    let e = Engine::open(&dir, cfg()).unwrap();
    let reopened = e.partition_stat("old", 0).unwrap();
    assert_eq!((reopened.start_offset, reopened.end_offset), (old.start_offset, old.end_offset));
    // Unlimited again, then back to the default: the settings persist.
    e.alter_topic("forever", Some(Some(UNLIMITED)), Some(None)).unwrap();
    e.shutdown().unwrap();
}

// Proves the per-segment knowledge is rebuilt after a restart from the
// checkpoint: a topic deleted after the restart frees its segments (the
// bytes it counts are `bytes_survive_a_clean_restart`'s).
#[test]
fn restart_rebuilds_what_segments_hold() {
    let dir = test_dir("retention-restart");
    let e = Engine::open(&dir, cfg()).unwrap();
    e.create_topic("gone", 1).unwrap();
    e.create_topic("capped", 1).unwrap();
    fill(&e, "gone", 1000 << 10, now_ms());
    fill(&e, "capped", 600 << 10, now_ms());
    e.shutdown().unwrap();
    let e = Engine::open(&dir, cfg()).unwrap();
    let segs = segments(&dir).len();
    e.delete_topic("gone").unwrap();
    wait_for(&e, "capped", "free the deleted topic's segments after a restart", |_| segments(&dir).len() + 3 <= segs);
    e.shutdown().unwrap();
}

// Proves dead data that cannot go yet is counted as reclaimable, with the
// reason, in the metrics and in `inspect`: a deleted topic's segments
// behind an older segment another topic keeps wait for it.
#[test]
fn reclaimable_bytes_and_why_they_wait() {
    let dir = test_dir("retention-reclaimable");
    let e = Engine::open(&dir, cfg()).unwrap();
    e.create_topic("first", 1).unwrap();
    e.create_topic("gone", 1).unwrap();
    fill(&e, "first", 64 << 10, now_ms());
    fill(&e, "gone", 1000 << 10, now_ms());
    fill(&e, "first", 300 << 10, now_ms());
    e.delete_topic("gone").unwrap();
    wait_for(&e, "first", "count the deleted topic's bytes as reclaimable", |e| gauge(e, Metric::LogReclaimableBytes) >= 1000 << 10);
    assert!(gauge(&e, Metric::LogLiveBytes) > 0);
    assert_eq!(gauge(&e, Metric::RetentionDeletedBytes), 0, "a segment went while an older one was live");
    e.shutdown().unwrap();
    let found = strom::io::uring::UringIo::new(64).and_then(|mut io| strom::inspect::inspect(&mut io, &dir, &cfg())).unwrap();
    let space = &found.logs[0].space;
    println!("{}", strom::inspect::render(&found));
    assert!(space.reclaimable_bytes >= 1000 << 10 && space.due_bytes == 0, "{space:?}");
    assert_eq!(space.held, Some("an older segment holds live data"));
    assert!(strom::inspect::render(&found).contains("reclaimable bytes"));
}

/// What `describe` shows of partition 0 of `topic`: start, end, bytes.
fn described(e: &Engine, topic: &str) -> (u64, u64, u64) {
    let s = e.partition_stat(topic, 0).unwrap();
    (s.start_offset, s.end_offset, s.bytes)
}

/// Writes 600 KiB (over two segments and several checkpoints) to "kept".
fn fill_kept(e: &Engine) {
    e.create_topic("kept", 1).unwrap();
    e.create_topic("tick", 1).unwrap();
    e.alter_topic("tick", None, Some(Some(4 << 10))).unwrap();
    fill(e, "kept", 600 << 10, now_ms());
}

/// Checks a reopened engine shows `before` for "kept", then that a bytes
/// limit of 300 KiB keeps at least that much and less than a segment more:
/// the data from before the restart counts its real bytes.
fn check_after_restart(e: &Engine, before: (u64, u64, u64), how: &str) {
    assert_eq!(described(e, "kept"), before, "describe after a {how} restart");
    let limit_bytes = 300 << 10;
    e.alter_topic("kept", None, Some(Some(limit_bytes))).unwrap();
    wait_for(e, "tick", "apply the bytes limit after a restart", |e| described(e, "kept").0 > 0);
    let (_, _, kept_bytes) = described(e, "kept");
    assert!(
        kept_bytes >= limit_bytes && kept_bytes < limit_bytes + cfg().segment_bytes,
        "{how}: kept {kept_bytes} bytes for a limit of {limit_bytes}"
    );
}

// Proves a partition's bytes (what `topic describe` shows and what bytes
// retention counts) are the same after a clean restart as before it, and
// that a bytes limit set after the restart keeps what it asks, not more.
#[test]
fn bytes_survive_a_clean_restart() {
    let dir = test_dir("retention-bytes-clean");
    let e = Engine::open(&dir, cfg()).unwrap();
    fill_kept(&e);
    let before = described(&e, "kept");
    assert!(before.2 >= 600 << 10, "{before:?}");
    e.shutdown().unwrap();
    let e = Engine::open(&dir, cfg()).unwrap();
    check_after_restart(&e, before, "clean");
    e.shutdown().unwrap();
}

/// The child of `bytes_survive_a_kill`: fills, prints what describe shows, waits to be killed.
#[test]
#[ignore = "run by bytes_survive_a_kill as its child process"]
fn bytes_kill_child() {
    let Ok(dir) = std::env::var("STROM_RETENTION_CHILD_DIR") else { return };
    let e = Engine::open(Path::new(&dir), cfg()).unwrap();
    fill_kept(&e);
    let (start, end, bytes) = described(&e, "kept");
    println!("described {start} {end} {bytes}");
    std::thread::sleep(Duration::from_secs(600));
}

// Proves the same after a SIGKILL: the checkpoint's spans plus the tail
// scanned after it give the bytes counted before the kill.
#[test]
fn bytes_survive_a_kill() {
    let dir = test_dir("retention-bytes-kill");
    let mut child = std::process::Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "bytes_kill_child", "--ignored", "--nocapture", "--test-threads=1"])
        .env("STROM_RETENTION_CHILD_DIR", &dir)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let out = std::io::BufReader::new(child.stdout.take().unwrap());
    let line = std::io::BufRead::lines(out).map_while(Result::ok).find(|l| l.contains("described ")).expect("the child described");
    child.kill().unwrap();
    child.wait().unwrap();
    let n: Vec<u64> = line.rsplit("described ").next().unwrap().split(' ').map(|x| x.parse().unwrap()).collect();
    let before = (n[0], n[1], n[2]);
    assert!(before.2 >= 600 << 10, "{before:?}");
    let e = Engine::open(&dir, cfg()).unwrap();
    check_after_restart(&e, before, "kill");
    e.shutdown().unwrap();
}

/// One simulated core with one log holding `pids` partitions: 128 KiB
/// segments and a checkpoint every 16 KiB, so a run has many of both.
fn sim_core(disk: SimDisk, seed: u64, pids: u32) -> Result<Core<SimIo>, strom::error::StromError> {
    let cfg = EngineConfig { segment_bytes: 128 << 10, checkpoint_interval_bytes: 16 << 10, ..EngineConfig::small_for_tests() };
    let spec = CoreSpec {
        core_id: 0,
        data_dir: PathBuf::from("/sim/retention"),
        log_count: 1,
        logs: vec![0],
        pids: (0..pids).collect(),
        indexed: Default::default(),
        needs: Default::default(),
        marks: Default::default(),
    };
    Core::open(SimIo::new(disk, seed, SimFaults::default()), cfg, spec).map(|(core, _)| core)
}

/// Queues an append of one batch of `values` records of `value_bytes`, stamped `ts_ms`.
fn sim_append(core: &mut Core<SimIo>, pid: u32, values: usize, value_bytes: usize, ts_ms: i64) -> Slot<AppendAck> {
    let mut b = BatchBuilder::new(ts_ms);
    for _ in 0..values {
        b.push(ts_ms, None, Some(&vec![b'v'; value_bytes]), &[]);
    }
    let (s, reply) = slot::<AppendAck>();
    core.handle(Request::Append { pid, batch: ValidBatch::new(b.finish(), 32 << 10).unwrap(), reply });
    s
}

/// Each partition's spans and its byte count as `describe` shows it.
fn sim_spans(core: &Core<SimIo>, pids: u32) -> Vec<(Vec<Span>, u64)> {
    (0..pids)
        .map(|pid| {
            let p = core.partition(pid).unwrap();
            (p.spans.iter().copied().collect(), p.span_bytes)
        })
        .collect()
}

// Proves each partition's spans (first position, bytes and running max
// timestamp per segment, what bytes retention and `describe` count) are
// the same after a restart as before it, and the same as a scan of the
// whole log rebuilds: after a clean stop (all from the checkpoint) and
// after a kill (checkpoint plus tail), with appends pipelined so that
// checkpoints are written while batches are staged and not yet durable.
#[test]
fn sim_spans_survive_restart_exactly() {
    const PIDS: u32 = 3;
    let mut checkpoints_with_data = 0;
    harness::for_each_seed("retention", 40, |seed| {
        let mut rng = SimRng::new(seed);
        let mut core = sim_core(SimDisk::new(), rng.next_u64(), PIDS).unwrap();
        let mut pending = Vec::new();
        for _ in 0..150 + rng.below(150) {
            for _ in 0..1 + rng.below(3) {
                let ts_ms = 1_700_000_000_000 + rng.below(100_000) as i64;
                pending.push(sim_append(
                    &mut core,
                    rng.below(PIDS as u64) as u32,
                    1 + rng.below(4) as usize,
                    1 + rng.below(3000) as usize,
                    ts_ms,
                ));
            }
            core.tick().unwrap();
        }
        while pending.iter().any(|s| s.lock().unwrap().is_none()) {
            core.tick().unwrap();
        }
        assert!(pending.iter().all(|s| matches!(*s.lock().unwrap(), Some(Ok(_)))), "seed {seed}: an append failed");
        let before = sim_spans(&core, PIDS);
        let clean = seed % 2 == 0;
        if clean {
            let (stopped, reply) = slot::<()>();
            core.handle(Request::Stop { reply });
            while stopped.lock().unwrap().is_none() {
                core.tick().unwrap();
            }
        }
        let disk = core.into_io().process_exit();
        let has_checkpoint = disk.file(&PathBuf::from("/sim/retention/log-0000/checkpoint")).is_some();
        checkpoints_with_data += u64::from(has_checkpoint);
        let reopened = sim_core(disk.clone(), seed, PIDS).unwrap();
        assert_eq!(sim_spans(&reopened, PIDS), before, "seed {seed}: spans after a {} restart", if clean { "clean" } else { "kill" });
        let mut io = reopened.into_io();
        let _ = io.remove(Path::new("/sim/retention/log-0000/checkpoint"));
        let scanned = sim_core(io.process_exit(), seed, PIDS).unwrap();
        assert_eq!(sim_spans(&scanned, PIDS), before, "seed {seed}: spans rebuilt by a whole scan");
    });
    assert!(checkpoints_with_data > 0, "no seed restarted from a checkpoint");
}

/// Runs a core with a one-hour time limit on virtual time: an hour of
/// appends stamped with the simulated wall clock, then two idle hours.
/// Returns each retention deletion as (wall clock ms, segments left).
fn sim_time_retention(seed: u64) -> Vec<(i64, Vec<u64>)> {
    const HOUR_MS: i64 = 3_600_000;
    let mut core = sim_core(SimDisk::new(), seed, 1).unwrap();
    core.handle(Request::SetRetention { limits: vec![(0, Retention { age_ms: Some(HOUR_MS as u64), bytes: None })] });
    let mut events = Vec::new();
    let mut starts = core.journal(0).unwrap().segment_starts();
    let mut step = |core: &mut Core<SimIo>, events: &mut Vec<(i64, Vec<u64>)>| {
        let spans: Vec<Span> = core.partition(0).unwrap().spans.iter().copied().collect();
        core.tick().unwrap();
        let now = core.journal(0).unwrap().segment_starts();
        if now != starts {
            let wall_ms = core.io.wall_ms();
            for gone in starts.iter().filter(|s| !now.contains(s)) {
                let next = starts.iter().find(|&&s| s > *gone).copied().unwrap_or(u64::MAX);
                for span in spans.iter().filter(|sp| sp.first_pos >= *gone && sp.first_pos < next) {
                    assert!(
                        span.max_ts_ms < wall_ms - HOUR_MS,
                        "seed {seed}: a segment holding data of {} went at {wall_ms}",
                        span.max_ts_ms
                    );
                }
            }
            events.push((wall_ms, now.clone()));
            starts = now;
        }
    };
    for i in 0..240 {
        let ts_ms = core.io.wall_ms();
        let s = sim_append(&mut core, 0, 4, 1000, ts_ms);
        while s.lock().unwrap().is_none() {
            step(&mut core, &mut events);
        }
        if i % 16 == 15 {
            core.io.advance(Duration::from_secs(240));
        }
    }
    for _ in 0..2 * 3600 * 2 {
        core.io.advance(Duration::from_millis(500));
        step(&mut core, &mut events);
    }
    events
}

// Proves time retention runs on the seam's wall clock: in the simulator a
// segment goes once all its data is an hour older than the virtual wall
// clock, never earlier, all but the segment being written go once every
// batch is that old, and the same seed deletes the same segments at the
// same virtual time twice.
#[test]
fn sim_time_retention_is_deterministic() {
    harness::for_each_seed("retention", 4, |seed| {
        let first = sim_time_retention(seed);
        assert!(first.len() >= 2, "seed {seed}: retention deleted in {} passes: {first:?}", first.len());
        assert_eq!(first.last().unwrap().1.len(), 1, "seed {seed}: only the segment being written is left");
        assert_eq!(sim_time_retention(seed), first, "seed {seed}: the same seed deleted differently");
    });
}

// Proves a checkpoint of a newer format is refused at open with its
// version, the file and what to do, not skipped for a whole scan that
// would forget what only the checkpoint holds.
#[test]
fn sim_newer_checkpoint_refused() {
    let mut core = sim_core(SimDisk::new(), 1, 1).unwrap();
    let s = sim_append(&mut core, 0, 1, 10, 1_700_000_000_000);
    while s.lock().unwrap().is_none() {
        core.tick().unwrap();
    }
    let mut io = core.into_io();
    let path = Path::new("/sim/retention/log-0000/checkpoint");
    let mut newer = strom::log::checkpoint::encode(&strom::log::checkpoint::Checkpoint {
        version: strom::log::checkpoint::VERSION,
        log: 0,
        epoch: 1,
        covered_pos: 0,
        log_start: 0,
        partitions: vec![],
    });
    let version = strom::log::checkpoint::VERSION;
    newer[7] = b'0' + version + 1;
    io.write_file_atomic(path, &newer).unwrap();
    let err = sim_core(io.process_exit(), 1, 1).err().expect("a newer checkpoint was accepted").to_string();
    let said = format!("checkpoint format version {}, newer than this strom reads (1 to {version})", version + 1);
    assert!(err.contains(&said) && err.contains("remove the file"), "{err}");
}
