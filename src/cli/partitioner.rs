//! Which partition `produce` sends a record to when `--partition` is not
//! given: by key, exactly as Kafka's Java client does, so that the same keys
//! land in the same partitions whichever client wrote them; without a key,
//! round robin, one partition per batch (Kafka's "sticky" idea: whole
//! batches, not single records, spread the load).

/// Kafka's seed for murmur2 (`Utils.murmur2` in the Java client).
const MURMUR2_SEED: u32 = 0x9747_b28c;
/// murmur2's mixing constant.
const MURMUR2_M: u32 = 0x5bd1_e995;
const MURMUR2_R: u32 = 24;

/// Kafka's murmur2 of `data` (org.apache.kafka.common.utils.Utils.murmur2):
/// 32-bit MurmurHash2 with Kafka's seed, little-endian 4-byte words, the
/// tail mixed in the same order as the Java switch falls through.
pub fn murmur2(data: &[u8]) -> i32 {
    let mut h: u32 = MURMUR2_SEED ^ data.len() as u32;
    let mut words = data.chunks_exact(4);
    for w in &mut words {
        let mut k = u32::from_le_bytes([w[0], w[1], w[2], w[3]]);
        k = k.wrapping_mul(MURMUR2_M);
        k ^= k >> MURMUR2_R;
        k = k.wrapping_mul(MURMUR2_M);
        h = h.wrapping_mul(MURMUR2_M);
        h ^= k;
    }
    let tail = words.remainder();
    if tail.len() >= 3 {
        h ^= u32::from(tail[2]) << 16;
    }
    if tail.len() >= 2 {
        h ^= u32::from(tail[1]) << 8;
    }
    if !tail.is_empty() {
        h ^= u32::from(tail[0]);
        h = h.wrapping_mul(MURMUR2_M);
    }
    h ^= h >> 13;
    h = h.wrapping_mul(MURMUR2_M);
    h ^= h >> 15;
    h as i32
}

/// Kafka's `Utils.toPositive`: clears the sign bit (not `abs`, which
/// overflows on i32::MIN and maps two hashes to one).
pub fn to_positive(n: i32) -> u32 {
    (n & 0x7fff_ffff) as u32
}

/// The partition Kafka's default partitioner gives a keyed record.
pub fn partition_for_key(key: &[u8], partitions: u32) -> u32 {
    assert!(partitions > 0, "a topic has at least one partition");
    to_positive(murmur2(key)) % partitions
}

/// Picks partitions for one topic: by key hash, or round robin per batch.
#[derive(Debug)]
pub struct Partitioner {
    partitions: u32,
    /// The partition the next batch's keyless records go to.
    next_keyless: u32,
}

impl Partitioner {
    pub fn new(partitions: u32) -> Partitioner {
        assert!(partitions > 0, "a topic has at least one partition");
        Partitioner { partitions, next_keyless: 0 }
    }

    /// The partition of a record of the current batch.
    pub fn partition(&self, key: Option<&[u8]>) -> u32 {
        key.map_or(self.next_keyless, |k| partition_for_key(k, self.partitions))
    }

    /// Moves keyless records on to the next partition, once per batch.
    pub fn next_batch(&mut self) {
        self.next_keyless = (self.next_keyless + 1) % self.partitions;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Proves: murmur2 matches Kafka's own. The first vectors are Kafka's
    // UtilsTest.testMurmur2 (apache/kafka, clients/src/test/java/org/apache/
    // kafka/common/utils/UtilsTest.java, lines 66-78 at commit 8ab0994, as
    // kafka_ex's test/kafka_ex/support/murmur_test.exs quotes them; the
    // 24-27 byte ones cover every tail length); the rest are librdkafka's
    // unit test in src/rdmurmur2.c (as kafkabr's murmur2 test quotes them),
    // which librdkafka checks against the Java client.
    #[test]
    fn murmur2_matches_kafka_vectors() {
        let vectors: [(&str, i32); 19] = [
            ("21", -973_932_308),
            ("foobar", -790_332_482),
            ("a-little-bit-long-string", -985_981_536),
            ("a-little-bit-longer-string", -1_486_304_829),
            ("lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8", -58_897_971),
            ("abc", 479_470_107),
            ("string-f-24-chars-length", 124_730_809),
            ("string-fo-25-chars-length", 1_269_511_650),
            ("string-foo-26-chars-length", 119_165_628),
            ("string-last-27-chars-length", 1_089_971_754),
            ("kafka", 0xd067_cf64_u32 as i32),
            ("giberish123456789", 0x8f55_2b0c_u32 as i32),
            ("1234", 0x9fc9_7b14_u32 as i32),
            ("234", 0xe7c0_09ca_u32 as i32),
            ("34", 0x8739_30da_u32 as i32),
            ("4", 0x5a4b_5ca1),
            ("PreAmbleWillBeRemoved,ThePrePartThatIs", 0x7842_4f1c),
            ("AmbleWillBeRemoved,ThePrePartThatIs", 0x62b8_b43f),
            ("", 0x106e_08d9),
        ];
        for (key, hash) in vectors {
            assert_eq!(murmur2(key.as_bytes()), hash, "murmur2({key:?})");
        }
    }

    // Proves: toPositive clears the sign bit, so i32::MIN maps to 0 and -1
    // to i32::MAX, as in Java; the partition is that modulo the count.
    #[test]
    fn to_positive_and_partition_follow_java() {
        assert_eq!(to_positive(i32::MIN), 0);
        assert_eq!(to_positive(-1), i32::MAX as u32);
        assert_eq!(to_positive(5), 5);
        // "21" hashes to -973932308: 0x7fffffff & that is 1173551340.
        assert_eq!(partition_for_key(b"21", 1_000_000_007), 1_173_551_340 % 1_000_000_007);
        assert_eq!(partition_for_key(b"21", 7), 1_173_551_340 % 7);
    }

    // Proves: keyless records move on one partition per batch and wrap;
    // keyed ones ignore the round robin.
    #[test]
    fn keyless_round_robin_per_batch() {
        let mut p = Partitioner::new(3);
        let mut seen = Vec::new();
        for _ in 0..4 {
            seen.push(p.partition(None));
            assert_eq!(p.partition(Some(b"21")), partition_for_key(b"21", 3));
            p.next_batch();
        }
        assert_eq!(seen, vec![0, 1, 2, 0]);
    }
}
