//! The embedded engine end to end on real io_uring and a real filesystem.
mod harness;

use harness::{batch, read_to_end, test_dir, values};
use strom::config::EngineConfig;
use strom::engine::Engine;
use strom::error::StromError;

fn cfg(cores: usize) -> EngineConfig {
    EngineConfig { cores, logs_on_create: 2, pin_cores: false, ..EngineConfig::small_for_tests() }
}

// Proves appends get dense offsets, are read back whole and in order, and survive a clean restart.
#[test]
fn append_read_restart() {
    let dir = test_dir("engine-basic");
    let e = Engine::open(&dir, cfg(2)).unwrap();
    e.create_topic("t", 3).unwrap();
    for i in 0..20 {
        let ack = e.append("t", i % 3, batch(&format!("b{i}"), 5, 1000 + i as i64 * 10)).unwrap();
        assert_eq!(ack.base_offset, (i / 3) as u64 * 5);
        assert_eq!(ack.last_offset, ack.base_offset + 4);
    }
    let r = e.read("t", 1, 0, 1 << 20).unwrap();
    let v = values(&r.batches);
    assert_eq!(v.len(), 7 * 5);
    assert_eq!(v[0], (0, "b1-0".to_string()));
    assert_eq!(v[5], (5, "b4-0".to_string()));
    assert_eq!(r.next_offset, 35);
    assert_eq!(r.high_watermark, 35);
    // Reading from the middle of a batch starts with the batch that holds it.
    let r = e.read("t", 1, 7, 1).unwrap();
    assert_eq!(values(&r.batches)[0].0, 5);
    e.shutdown().unwrap();

    let e = Engine::open(&dir, cfg(1)).unwrap();
    assert!(e.recovery_reports().iter().all(|r| r.bytes_scanned == 0), "clean stop left a tail to scan: {:?}", e.recovery_reports());
    let r = e.read("t", 1, 0, 1 << 20).unwrap();
    assert_eq!(values(&r.batches).len(), 35);
    assert_eq!(e.append("t", 1, batch("after", 1, 5000)).unwrap().base_offset, 35);
    e.shutdown().unwrap();
}

// Proves pipelined appends to one partition are acknowledged in order with consecutive offsets.
#[test]
fn pipelined_appends() {
    let dir = test_dir("engine-pipelined");
    let e = Engine::open(&dir, cfg(1)).unwrap();
    e.create_topic("p", 1).unwrap();
    let pending: Vec<_> = (0..500).map(|i| e.append_async("p", 0, batch(&format!("x{i}"), 2, i)).unwrap()).collect();
    for (i, p) in pending.into_iter().enumerate() {
        assert_eq!(p.wait().unwrap().base_offset, i as u64 * 2);
    }
    assert_eq!(read_to_end(&e, "p", 0, 0, 4096).len(), 1000);
}

// Proves bad input is refused with a typed error and stores nothing.
#[test]
fn bad_input_refused() {
    let dir = test_dir("engine-bad");
    let e = Engine::open(&dir, cfg(1)).unwrap();
    e.create_topic("t", 1).unwrap();
    let mut b = batch("x", 3, 0);
    let last = b.len() - 1;
    b[last] ^= 1;
    assert!(matches!(e.append("t", 0, b), Err(StromError::InvalidBatch(_))));
    assert!(matches!(e.append("t", 0, vec![1, 2, 3]), Err(StromError::InvalidBatch(_))));
    assert!(matches!(e.append("nope", 0, batch("x", 1, 0)), Err(StromError::UnknownTopic(_))));
    assert!(matches!(e.append("t", 9, batch("x", 1, 0)), Err(StromError::UnknownPartition { .. })));
    assert!(matches!(e.create_topic("../etc", 1), Err(StromError::InvalidTopicName(_))));
    assert!(matches!(e.read("t", 0, 5, 100), Err(StromError::OffsetOutOfRange { .. })));
    assert_eq!(e.partition_stat("t", 0).unwrap().end_offset, 0);
    assert_eq!(e.append("t", 0, batch("ok", 1, 0)).unwrap().base_offset, 0);
}

// Proves lookups by time find the first record at or after a timestamp.
#[test]
fn offset_for_time() {
    let dir = test_dir("engine-time");
    let e = Engine::open(&dir, cfg(1)).unwrap();
    e.create_topic("t", 1).unwrap();
    for i in 0..50 {
        e.append("t", 0, batch("r", 4, 10_000 + i * 100)).unwrap();
    }
    // Batch i holds timestamps 10_000 + i*100 + 0..4, offsets 4i..4i+4.
    assert_eq!(e.offset_for_time("t", 0, 0).unwrap(), Some(0));
    assert_eq!(e.offset_for_time("t", 0, 10_502).unwrap(), Some(22));
    assert_eq!(e.offset_for_time("t", 0, 10_504).unwrap(), Some(24));
    assert_eq!(e.offset_for_time("t", 0, 99_999).unwrap(), None);
}

// Proves reads of old data come from disk (the tail cache is small) and verify.
#[test]
fn catch_up_reads_from_disk() {
    let dir = test_dir("engine-disk-reads");
    let e = Engine::open(&dir, cfg(1)).unwrap();
    e.create_topic("a", 2).unwrap();
    // Interleave two partitions over many commits so reads must skip frames.
    for i in 0..300 {
        e.append("a", (i % 2) as u32, batch(&format!("{i:0>200}"), 3, i)).unwrap();
    }
    let got = read_to_end(&e, "a", 0, 0, 8192);
    assert_eq!(got.len(), 150 * 3);
    assert!(got.iter().enumerate().all(|(i, (o, _))| *o == i as u64));
    assert_eq!(got[3].1, format!("{:0>200}-0", 2));
}

// Proves deleting a topic makes its partitions unknown, and its name can be reused with new pids.
#[test]
fn delete_topic() {
    let dir = test_dir("engine-delete");
    let e = Engine::open(&dir, cfg(2)).unwrap();
    e.create_topic("d", 2).unwrap();
    e.append("d", 0, batch("x", 1, 0)).unwrap();
    e.delete_topic("d").unwrap();
    assert!(matches!(e.read("d", 0, 0, 10), Err(StromError::UnknownTopic(_))));
    e.create_topic("d", 1).unwrap();
    assert_eq!(e.read("d", 0, 0, 10).unwrap().high_watermark, 0);
}

// Proves a second engine cannot open a directory in use.
#[test]
fn directory_is_locked() {
    let dir = test_dir("engine-lock");
    let _e = Engine::open(&dir, cfg(1)).unwrap();
    assert!(matches!(Engine::open(&dir, cfg(1)), Err(StromError::Unsupported(_))));
}

// Proves retention deletes whole old segments, moves the partitions' start
// offsets forward, keeps the rest readable, and a restart agrees.
#[test]
fn retention_by_size_survives_restart() {
    let dir = test_dir("engine-retention");
    let mut c = cfg(1);
    c.retention_bytes = Some(c.segment_bytes * 2);
    c.retention_age = None;
    let e = Engine::open(&dir, c.clone()).unwrap();
    e.create_topic("r", 1).unwrap();
    let mut last = 0;
    for i in 0..400 {
        last = e.append("r", 0, batch(&format!("{i:0>900}"), 4, i)).unwrap().last_offset;
    }
    // Retention runs at most once a second on the core's clock.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let mut start = 0;
    while start == 0 && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(100));
        e.append("r", 0, batch("tick", 1, 0)).unwrap();
        start = e.partition_stat("r", 0).unwrap().start_offset;
    }
    assert!(start > 0, "retention deleted nothing");
    assert!(matches!(e.read("r", 0, 0, 1 << 20), Err(StromError::OffsetOutOfRange { .. })));
    let first = values(&e.read("r", 0, start, 1 << 20).unwrap().batches);
    assert_eq!(first[0].0, start, "reads start at the new start offset");
    e.shutdown().unwrap();
    let e = Engine::open(&dir, c).unwrap();
    let stat = e.partition_stat("r", 0).unwrap();
    assert_eq!(stat.start_offset, start);
    assert!(stat.end_offset > last);
    assert_eq!(values(&e.read("r", 0, start, 1 << 20).unwrap().batches)[0].0, start);
    e.shutdown().unwrap();
}

// Proves many concurrent reads beyond the per-core read limit are held back
// and all answered correctly (push back, not failure or growth).
#[test]
fn reads_beyond_the_limit_wait_their_turn() {
    let dir = test_dir("engine-read-limit");
    let mut c = cfg(1);
    c.reads_inflight_max = 1;
    c.read_bufs_per_core = 1;
    let e = Engine::open(&dir, c).unwrap();
    e.create_topic("q", 1).unwrap();
    for i in 0..200 {
        e.append("q", 0, batch(&format!("{i:0>300}"), 2, i)).unwrap();
    }
    std::thread::scope(|s| {
        for t in 0..8u64 {
            let e = &e;
            s.spawn(move || {
                for k in 0..20u64 {
                    let off = (t * 37 + k * 11) % 400;
                    let r = e.read("q", 0, off, 4096).unwrap();
                    let v = values(&r.batches);
                    assert!(v[0].0 <= off && v.iter().any(|(o, _)| *o == off), "read at {off} did not start with its batch");
                }
            });
        }
    });
    e.shutdown().unwrap();
}

// Proves a damaged checkpoint costs only a longer scan: the open warns,
// scans the whole log and serves every record.
#[test]
fn damaged_checkpoint_falls_back_to_full_scan() {
    let dir = test_dir("engine-bad-ckpt");
    let e = Engine::open(&dir, cfg(1)).unwrap();
    e.create_topic("c", 2).unwrap();
    for i in 0..50 {
        e.append("c", i % 2, batch(&format!("c{i}"), 3, i as i64)).unwrap();
    }
    e.shutdown().unwrap();
    let mut damaged = 0;
    for log in 0..2 {
        let path = strom::log::segment::log_dir(&dir, log).join(strom::log::checkpoint::FILE_NAME);
        let mut bytes = std::fs::read(&path).unwrap();
        let mid = bytes.len() / 2;
        bytes[mid] ^= 0x40;
        std::fs::write(&path, bytes).unwrap();
        damaged += 1;
    }
    assert_eq!(damaged, 2);
    let e = Engine::open(&dir, cfg(1)).unwrap();
    assert!(e.recovery_reports().iter().any(|r| r.bytes_scanned > 0), "a damaged checkpoint was trusted");
    for p in 0..2 {
        let v = values(&e.read("c", p, 0, 1 << 20).unwrap().batches);
        assert_eq!(v.len(), 75);
        assert_eq!(v[3], (3, format!("c{}-0", 2 + p)));
    }
    e.shutdown().unwrap();
}

/// One batch of exactly `bytes` bytes: a single record whose value fills it.
fn batch_of_bytes(bytes: usize) -> Vec<u8> {
    let one = |value_len: usize| {
        let mut b = strom::wire::batch::BatchBuilder::new(1_000);
        b.push(1_000, None, Some(&vec![7u8; value_len]), &[]);
        b.finish()
    };
    // The value's length varints grow with it: settle on the exact size.
    let mut value_len = bytes - 80;
    for _ in 0..8 {
        let got = one(value_len).len();
        match got.cmp(&bytes) {
            std::cmp::Ordering::Equal => return one(value_len),
            std::cmp::Ordering::Less => value_len += bytes - got,
            std::cmp::Ordering::Greater => value_len -= got - bytes,
        }
    }
    panic!("no single-record batch of {bytes} bytes");
}

// Proves the default largest batch is Kafka's default message.max.bytes
// (1,048,588): Kafka clients size their batches by it, so one that large is
// stored and read back whole, and one byte more is refused as too large.
#[test]
fn kafka_sized_batches_fit_the_default_limit() {
    let d = EngineConfig::default();
    assert_eq!(d.batch_bytes_max, 1_048_588);
    let dir = test_dir("engine-kafka-sized");
    let sized = EngineConfig { write_buf_bytes: d.write_buf_bytes, batch_bytes_max: d.batch_bytes_max, segment_bytes: 8 << 20, ..cfg(1) };
    let e = Engine::open(&dir, sized).unwrap();
    e.create_topic("t", 1).unwrap();
    let big = batch_of_bytes(d.batch_bytes_max);
    assert_eq!(big.len(), 1_048_588);
    assert_eq!(e.append("t", 0, big.clone()).unwrap().base_offset, 0);
    match e.append("t", 0, batch_of_bytes(d.batch_bytes_max + 1)) {
        Err(StromError::InvalidBatch(strom::error::BatchError::TooLarge { bytes, max_bytes })) => {
            assert_eq!((bytes, max_bytes), (1_048_589, 1_048_588));
        }
        other => panic!("a batch one byte over the limit: {other:?}"),
    }
    let r = e.read("t", 0, 0, 1).unwrap();
    assert_eq!(r.batches, big);
    assert_eq!(r.next_offset, 1);
    e.shutdown().unwrap();
}
