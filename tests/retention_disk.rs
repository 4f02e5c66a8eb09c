//! Retention on a real small filesystem: deleting a topic gives its space
//! back as `statvfs` (what `df` shows) sees it. Needs root and loop devices
//! (see tests/harness/loopfs.rs).
mod harness;

use std::time::{Duration, Instant};

use harness::batch;
use harness::loopfs::LoopFs;
use harness::skip::{self, Need};
use strom::catalog::TopicRetention;
use strom::config::EngineConfig;
use strom::engine::Engine;

fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as i64
}

fn main() {
    skip::main(vec![skip::trial("deleting_a_topic_frees_filesystem_space", &[Need::LoopFs], deleting_a_topic_frees_filesystem_space)]);
}

// Proves a deleted topic's space comes back on the filesystem: about what
// it wrote is free again once retention ran, with another topic (bytes
// limited) writing beside it in the same log.
fn deleting_a_topic_frees_filesystem_space() {
    let fs = LoopFs::new("retention", 128, &["-m", "0"]);
    let dir = fs.mount_point().join("data");
    // One log, 1 MiB segments: every topic shares every segment it writes in.
    let cfg = EngineConfig { cores: 1, logs_on_create: 1, pin_cores: false, segment_bytes: 1 << 20, ..EngineConfig::small_for_tests() };
    let e = Engine::open(&dir, cfg).unwrap();
    e.create_topic("gone", 2).unwrap();
    e.create_topic_with("kept", 1, TopicRetention { ms: None, bytes: Some(256 << 10) }).unwrap();
    let empty_free = fs.free_bytes();
    // 32 records of 1 KiB per batch: about 32 MiB for "gone".
    let value = "v".repeat(1000);
    for i in 0..1000 {
        e.append("gone", i % 2, batch(&value, 32, now_ms())).unwrap();
    }
    for _ in 0..64 {
        e.append("kept", 0, batch(&value, 16, now_ms())).unwrap();
    }
    let full_free = fs.free_bytes();
    let written = empty_free - full_free;
    assert!(written >= 30 << 20, "the topic took only {written} bytes");
    e.delete_topic("gone").unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut freed = 0;
    while Instant::now() < deadline && freed < written - (4 << 20) {
        std::thread::sleep(Duration::from_millis(200));
        // Appends let the checkpoint retention waits for be written.
        e.append("kept", 0, batch("tick", 1, now_ms())).unwrap();
        freed = fs.free_bytes().saturating_sub(full_free);
    }
    println!("statvfs free: {empty_free} empty, {full_free} after writing ({written} used), {freed} freed by the delete");
    assert!(freed >= written - (4 << 20), "the delete freed {freed} of {written} bytes");
    e.shutdown().unwrap();
}
