//! The records loadgen writes: each value names the producer and sequence
//! number that made it, so a reader can check it without any other state.
use strom::wire::batch::BatchBuilder;

/// The identity at the front of every value: producer (u32) and sequence (u64).
pub const VALUE_ID_BYTES: usize = 12;

/// Distinct batches each network producer cycles through. They are built
/// once, so that the send loop only writes bytes: changing a value per send
/// would mean recomputing the batch CRC, client work the server never sees.
/// Eight keeps consecutive sends to one partition from being identical.
pub const BATCHES_PER_PRODUCER: usize = 8;

/// The value bytes of one record of `msg_size` (the identity needs room).
pub fn value_bytes(msg_size: usize) -> usize {
    msg_size.max(VALUE_ID_BYTES)
}

/// Records per batch, so that a batch of `msg_size` records stays near
/// `batch_bytes` (16 bytes is about one record's framing).
pub fn records_per_batch(batch_bytes: usize, msg_size: usize) -> usize {
    (batch_bytes / (msg_size + 16)).max(1)
}

/// The value of record `seq` of `producer`: the identity, then a fill byte
/// derived from it.
pub fn value(producer: usize, seq: u64, size: usize) -> Vec<u8> {
    let mut v = Vec::with_capacity(value_bytes(size));
    v.extend_from_slice(&(producer as u32).to_be_bytes());
    v.extend_from_slice(&seq.to_be_bytes());
    v.resize(value_bytes(size), fill_byte(producer as u32, seq));
    v
}

fn fill_byte(producer: u32, seq: u64) -> u8 {
    (seq as u8).wrapping_mul(31).wrapping_add(producer as u8)
}

/// The (producer, sequence) a value carries, if the whole value is what
/// [`value`] makes for them. Allocates nothing: it runs for every record read back.
pub fn check_value(v: &[u8]) -> Option<(u32, u64)> {
    let producer = u32::from_be_bytes(v.get(0..4)?.try_into().ok()?);
    let seq = u64::from_be_bytes(v.get(4..VALUE_ID_BYTES)?.try_into().ok()?);
    let fill = fill_byte(producer, seq);
    // A fold without an early exit: it vectorizes, and verify spends most
    // of its time here.
    let differs = v[VALUE_ID_BYTES..].iter().fold(0u8, |acc, &b| acc | (b ^ fill));
    (differs == 0).then_some((producer, seq))
}

/// Batch `index` of `producer`: records with sequences
/// `index * per_batch ..`, so every record a producer sends from its batch
/// set has a distinct identity.
pub fn producer_batch(producer: usize, index: usize, per_batch: usize, msg_size: usize, timestamp_ms: i64) -> Vec<u8> {
    let first_seq = (index * per_batch) as u64;
    let mut b = BatchBuilder::new(timestamp_ms);
    for seq in first_seq..first_seq + per_batch as u64 {
        b.push(timestamp_ms, None, Some(&value(producer, seq, msg_size)), &[]);
    }
    b.finish()
}

pub fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64)
}

#[cfg(test)]
mod tests {
    use super::*;

    // Proves: a value checks as the identity it was made with, and any
    // changed byte, a cut, or a too-short value fails the check.
    #[test]
    fn values_check_and_damage_is_seen() {
        let v = value(3, 77, 100);
        assert_eq!(v.len(), 100);
        assert_eq!(check_value(&v), Some((3, 77)));
        for at in [0, 5, 11, 12, 99] {
            let mut bad = v.clone();
            bad[at] ^= 0x40;
            assert_ne!(check_value(&bad), Some((3, 77)), "flip at byte {at} went unseen");
        }
        assert_eq!(check_value(&v[..11]), None);
        assert_eq!(value(1, 2, 4).len(), VALUE_ID_BYTES, "small sizes still carry the identity");
    }
}
