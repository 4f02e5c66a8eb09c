//! Kafka clients (kafka-python) on a read-only follower: reads work, and
//! the two requests that would write into the writer's directory, a
//! group's OffsetCommit and an idempotent producer's InitProducerId, are
//! refused with POLICY_VIOLATION, nothing written.
use std::process::Command;

use strom::engine::Engine;

use super::harness::serve::{HANG, Serve};
use super::harness::skip::KAFKA_VENV_PYTHON;
use super::harness::{self, test_dir};
use super::{latest, wait_until, writer_cfg};

/// Reads the 20 records, then tries to commit (as a group member with
/// assigned partitions) and to send with an idempotent producer; prints one
/// line per step.
const SCRIPT: &str = r#"
import sys
from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from kafka.structs import OffsetAndMetadata
boot = sys.argv[1]
tp = TopicPartition("k", 0)
c = KafkaConsumer(bootstrap_servers=boot, group_id="g", enable_auto_commit=False)
c.assign([tp])
c.seek_to_beginning(tp)
got = []
while len(got) < 20:
    for recs in c.poll(timeout_ms=1000).values():
        got += [r.value.decode() for r in recs]
print("read", " ".join(got))
try:
    c.commit({tp: OffsetAndMetadata(20, None, -1)})
    print("commit accepted")
except Exception as e:
    print("commit refused", type(e).__name__, e)
c.close()
try:
    p = KafkaProducer(bootstrap_servers=boot, enable_idempotence=True, max_block_ms=10000)
    p.send("k", b"no").get(timeout=10)
    print("produce accepted")
except Exception as e:
    print("produce refused", type(e).__name__, e)
"#;

// Proves: kafka-python reads a follower's records, and a group's
// OffsetCommit and an idempotent producer's InitProducerId are refused
// (POLICY_VIOLATION), with no offsets or producer-id file written into the
// writer's directory and nothing appended.
pub fn kafka_python_on_a_follower_cannot_commit_or_produce() {
    let dir = test_dir("follow-more-kafka-python");
    let writer = Engine::open(&dir, writer_cfg()).unwrap();
    writer.create_topic("k", 1).unwrap();
    let values: Vec<String> = (0..20).map(|i| format!("v{i}")).collect();
    let values: Vec<&[u8]> = values.iter().map(String::as_bytes).collect();
    writer.append("k", 0, harness::batch_of(&values)).unwrap();
    let follower = Serve::on(&dir).kafka().args(&["--read-only"]).start();
    let mut c = follower.client();
    assert!(wait_until(HANG, || latest(&mut c, "k", 0) == Some(20)), "{}", follower.stderr_text());
    let out = Command::new(KAFKA_VENV_PYTHON).args(["-c", SCRIPT, &follower.kafka_addr().to_string()]).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}\n{}", String::from_utf8_lossy(&out.stderr));
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines[0], format!("read {}", (0..20).map(|i| format!("v{i}")).collect::<Vec<_>>().join(" ")));
    for (line, what) in [(lines[1], "commit"), (lines[2], "produce")] {
        assert!(line.starts_with(&format!("{what} refused")) && line.contains("PolicyViolation"), "{what}: {line}");
    }
    for file in ["offsets", "kafka-producer-ids"] {
        assert!(!dir.join(file).exists(), "the follower wrote {file}");
    }
    assert_eq!(writer.partition_stat("k", 0).unwrap().end_offset, 20);
    drop(follower);
    writer.shutdown().unwrap();
}

/// Reads at least one record of partition 0 of `topic` as a member of group
/// "g", commits, and returns the line saying how the commit went.
pub(super) fn python_commit(boot: &str, topic: &str) -> String {
    let script = r#"
import sys
from kafka import KafkaConsumer, TopicPartition
from kafka.structs import OffsetAndMetadata
tp = TopicPartition(sys.argv[2], 0)
c = KafkaConsumer(bootstrap_servers=sys.argv[1], group_id="g", enable_auto_commit=False)
c.assign([tp])
c.seek_to_beginning(tp)
while not any(c.poll(timeout_ms=1000).values()):
    pass
try:
    c.commit({tp: OffsetAndMetadata(1, None, -1)})
    print("commit accepted")
except Exception as e:
    print("commit refused", type(e).__name__, e)
"#;
    let out = Command::new(KAFKA_VENV_PYTHON).args(["-c", script, boot, topic]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}
