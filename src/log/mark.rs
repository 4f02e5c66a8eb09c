//! The durable mark: how a log tells readers in other processes what of it
//! is durable (`log-NNNN/durable`, docs/FORMAT.md).
//!
//! The writer overwrites the file's first 40 bytes with a plain buffered
//! `pwrite` whenever its durable position, its epoch or its start moves:
//! after the fdatasync that made the bytes durable completed, never before.
//! It is never synced: it is a hint, not part of the log. A power cut may
//! take it back to an older value (which names less, never more, than what
//! is durable), and a reader that catches a write halfway sees a CRC
//! mismatch and reads it again at the next change. A read-only follower
//! (`src/follow.rs`) watches the file with inotify and serves the log up to
//! `durable_pos` and nothing past it.
use crate::log::recovery::EpochMark;

pub const FILE_NAME: &str = "durable";
pub const MARK_BYTES: usize = 40;
const CRC_AT: usize = 36;
const MAGIC: &[u8; 4] = b"SDUR";

/// What a writer published: the log is durable up to `durable_pos`, it
/// writes under `epoch` from `epoch_start_pos` on, and its segments before
/// `log_start` are gone (retention).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct DurableMark {
    pub durable_pos: u64,
    pub epoch: u32,
    pub epoch_start_pos: u64,
    pub log_start: u64,
}

impl DurableMark {
    /// 40 bytes, little-endian: magic "SDUR", epoch u32, durable_pos u64,
    /// epoch_start_pos u64, log_start u64, then a CRC-32C u32 over the 36 before it.
    pub fn encode(&self) -> [u8; MARK_BYTES] {
        let mut b = [0u8; MARK_BYTES];
        b[0..4].copy_from_slice(MAGIC);
        b[4..8].copy_from_slice(&self.epoch.to_le_bytes());
        b[8..16].copy_from_slice(&self.durable_pos.to_le_bytes());
        b[16..24].copy_from_slice(&self.epoch_start_pos.to_le_bytes());
        b[24..32].copy_from_slice(&self.log_start.to_le_bytes());
        let crc = crc32c::crc32c(&b[..CRC_AT]);
        b[CRC_AT..].copy_from_slice(&crc.to_le_bytes());
        b
    }

    /// None for anything but a whole, intact mark (a short file, another
    /// magic, a CRC mismatch: a write caught halfway, or damage).
    pub fn decode(b: &[u8]) -> Option<DurableMark> {
        let b: &[u8; MARK_BYTES] = b.get(..MARK_BYTES)?.try_into().ok()?;
        if &b[0..4] != MAGIC || crc32c::crc32c(&b[..CRC_AT]) != u32::from_le_bytes(b[CRC_AT..].try_into().ok()?) {
            return None;
        }
        Some(DurableMark {
            epoch: u32::from_le_bytes(b[4..8].try_into().ok()?),
            durable_pos: u64::from_le_bytes(b[8..16].try_into().ok()?),
            epoch_start_pos: u64::from_le_bytes(b[16..24].try_into().ok()?),
            log_start: u64::from_le_bytes(b[24..32].try_into().ok()?),
        })
    }

    /// The epoch rule frames must follow: the writer's epoch and where it began.
    pub fn epoch_mark(&self) -> EpochMark {
        EpochMark { epoch: self.epoch, start_pos: Some(self.epoch_start_pos) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_mark_round_trips_and_any_damage_is_refused() {
        // Proves: encode/decode agree, and every single-bit flip and every truncation is refused.
        let m = DurableMark { durable_pos: 1 << 33, epoch: 7, epoch_start_pos: 4096 * 9, log_start: 4096 * 1000 };
        let b = m.encode();
        assert_eq!(DurableMark::decode(&b), Some(m));
        for bit in 0..MARK_BYTES * 8 {
            let mut d = b;
            d[bit / 8] ^= 1 << (bit % 8);
            assert_eq!(DurableMark::decode(&d), None, "bit {bit}");
        }
        for len in 0..MARK_BYTES {
            assert_eq!(DurableMark::decode(&b[..len]), None, "{len} bytes");
        }
    }
}
