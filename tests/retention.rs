//! Retention end to end on the embedded engine: per-topic limits by time
//! and bytes, deleted topics' space coming back, topics of different
//! retention sharing a log, and the per-segment knowledge after a restart.
mod harness;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use harness::{batch, test_dir};
use strom::catalog::{TopicRetention, UNLIMITED};
use strom::config::EngineConfig;
use strom::engine::Engine;
use strom::metrics::Metric;

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
    e.delete_topic("gone").unwrap();
    wait_for(&e, "kept", "free the deleted topic's segments", |_| segment_bytes(&dir) <= 3 * (256 << 10));
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
// checkpoint: a topic deleted after the restart frees its segments, and
// a bytes limit counts the data written since (older data counts as 0
// bytes, so it is kept until that much newer data exists).
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
    e.alter_topic("capped", None, Some(Some(300 << 10))).unwrap();
    std::thread::sleep(Duration::from_millis(2500));
    e.append("capped", 0, batch("tick", 1, now_ms())).unwrap();
    assert_eq!(e.partition_stat("capped", 0).unwrap().start_offset, 0, "data from before the restart counts 0 bytes");
    fill(&e, "capped", 600 << 10, now_ms());
    wait_for(&e, "capped", "apply the bytes limit to newer data", |e| e.partition_stat("capped", 0).unwrap().start_offset > 0);
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
