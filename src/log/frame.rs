//! Strom's log frame: the envelope around each stored RecordBatch.
//!
//! ```text
//!  0      4      8      12   13   14     16            24            32      36     40
//!  | crc  | magic| len  |kind| ver| rsvd |   position  |durable_before| epoch | pid  | payload (len bytes)
//! ```
//! All fields little-endian. `crc` is CRC-32C over header bytes 4..40 and,
//! for batch frames, the payload's first 21 bytes (the RecordBatch fields up
//! to and including its own CRC-32C). The rest of the payload is covered by
//! that RecordBatch CRC, which append already verified: so a frame is
//! checksummed end to end without a second pass over its bytes on the hot
//! path. Because the checksum covers `position`, `epoch` and `pid`, a frame
//! that is torn, written to the wrong place, or left over from an earlier use
//! of the same file position (a stale epoch) does not verify.
//!
//! Pure: bytes in, headers or errors out; no I/O, no panics.
use crate::wire::batch;

pub const HEADER_BYTES: usize = 40;
pub const MAGIC: u32 = u32::from_le_bytes(*b"STRM");
pub const VERSION: u8 = 1;
/// Bytes of a RecordBatch covered by the frame CRC: baseOffset, batchLength,
/// partitionLeaderEpoch, magic and the batch's own CRC.
/// Exactly the bytes the batch's own CRC-32C does not cover.
pub const BATCH_PREFIX_BYTES: usize = batch::CRC_FROM;
/// The largest padding frame: a gap shorter than a header plus one block.
pub const PAD_BYTES_MAX: usize = HEADER_BYTES - 1 + crate::buf::BLOCK_BYTES;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum FrameKind {
    /// A RecordBatch of partition `pid`.
    Batch = 1,
    /// Zeros that fill a commit up to the next block boundary, so the next
    /// commit never rewrites a block holding acknowledged bytes.
    Pad = 2,
}

/// A decoded frame header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameHeader {
    pub kind: FrameKind,
    pub payload_bytes: u32,
    /// Byte position of this frame in its log.
    pub pos: u64,
    /// The log's durable position when this frame was planned: everything
    /// before it had been acknowledged. Recovery uses it to tell a torn tail
    /// from lost acknowledged data.
    pub durable_before: u64,
    /// Incremented, durably, each time the log is opened for writing.
    pub epoch: u32,
    /// Partition id (0 for padding).
    pub pid: u32,
}

impl FrameHeader {
    pub fn frame_bytes(&self) -> u64 {
        HEADER_BYTES as u64 + self.payload_bytes as u64
    }
    pub fn end_pos(&self) -> u64 {
        self.pos + self.frame_bytes()
    }
}

/// Why bytes at a position are not a valid frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FrameError {
    /// Fewer bytes than the header or the declared frame.
    Truncated {
        needed: u64,
    },
    /// All-zero header: never-written space (or a dropped write).
    Zeros,
    BadMagic(u32),
    BadVersion(u8),
    BadKind(u8),
    TooLong(u32),
    BadCrc {
        stored: u32,
        computed: u32,
    },
    /// Valid checksum but written for another position (misdirected write).
    WrongPosition {
        stored: u64,
    },
    /// The RecordBatch inside failed its own checks (CRC or header).
    BadBatch(String),
    /// The batch's declared length disagrees with the frame's.
    BatchLengthMismatch,
    /// A valid frame from an earlier epoch after a newer one: left over from
    /// before a torn tail was cut, never part of the log.
    StaleEpoch {
        epoch: u32,
    },
}

impl std::fmt::Display for FrameError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Debug::fmt(self, f)
    }
}

fn le_u32(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().expect("4 bytes"))
}
fn le_u64(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().expect("8 bytes"))
}

/// Writes a header (with its checksum) into `dst[..HEADER_BYTES]`; the
/// payload must already be in `dst[HEADER_BYTES..]`.
pub fn seal(dst: &mut [u8], h: &FrameHeader) {
    dst[4..8].copy_from_slice(&MAGIC.to_le_bytes());
    dst[8..12].copy_from_slice(&h.payload_bytes.to_le_bytes());
    dst[12] = h.kind as u8;
    dst[13] = VERSION;
    dst[14..16].copy_from_slice(&[0, 0]);
    dst[16..24].copy_from_slice(&h.pos.to_le_bytes());
    dst[24..32].copy_from_slice(&h.durable_before.to_le_bytes());
    dst[32..36].copy_from_slice(&h.epoch.to_le_bytes());
    dst[36..40].copy_from_slice(&h.pid.to_le_bytes());
    let crc = checksum(dst, h.kind, h.payload_bytes as usize);
    dst[0..4].copy_from_slice(&crc.to_le_bytes());
}

fn checksum(frame: &[u8], kind: FrameKind, payload_bytes: usize) -> u32 {
    let covered = match kind {
        FrameKind::Batch => HEADER_BYTES + BATCH_PREFIX_BYTES.min(payload_bytes),
        FrameKind::Pad => HEADER_BYTES,
    };
    crc32c::crc32c(&frame[4..covered])
}

/// Decodes and checks the header at the start of `bytes`, expected at log
/// position `pos`. Checks the header checksum (which needs the batch prefix
/// too, so `bytes` must hold at least the header plus 21 payload bytes for a
/// batch frame, else `Truncated`). Does not check the batch body's CRC: see
/// [`verify_payload`].
pub fn decode_header(bytes: &[u8], pos: u64, payload_bytes_max: u32) -> Result<FrameHeader, FrameError> {
    if bytes.len() < HEADER_BYTES {
        return Err(FrameError::Truncated { needed: HEADER_BYTES as u64 });
    }
    let hdr = &bytes[..HEADER_BYTES];
    if hdr.iter().all(|&b| b == 0) {
        return Err(FrameError::Zeros);
    }
    let magic = le_u32(hdr, 4);
    if magic != MAGIC {
        return Err(FrameError::BadMagic(magic));
    }
    if hdr[13] != VERSION {
        return Err(FrameError::BadVersion(hdr[13]));
    }
    let kind = match hdr[12] {
        1 => FrameKind::Batch,
        2 => FrameKind::Pad,
        k => return Err(FrameError::BadKind(k)),
    };
    let payload_bytes = le_u32(hdr, 8);
    let limit = match kind {
        FrameKind::Batch => payload_bytes_max,
        FrameKind::Pad => (PAD_BYTES_MAX - HEADER_BYTES) as u32,
    };
    if payload_bytes > limit || (kind == FrameKind::Batch && (payload_bytes as usize) < batch::BATCH_HEADER_BYTES) {
        return Err(FrameError::TooLong(payload_bytes));
    }
    let covered = match kind {
        FrameKind::Batch => HEADER_BYTES + BATCH_PREFIX_BYTES,
        FrameKind::Pad => HEADER_BYTES,
    };
    if bytes.len() < covered {
        return Err(FrameError::Truncated { needed: covered as u64 });
    }
    let stored = le_u32(hdr, 0);
    let computed = checksum(bytes, kind, payload_bytes as usize);
    if stored != computed {
        return Err(FrameError::BadCrc { stored, computed });
    }
    let h = FrameHeader {
        kind,
        payload_bytes,
        pos: le_u64(hdr, 16),
        durable_before: le_u64(hdr, 24),
        epoch: le_u32(hdr, 32),
        pid: le_u32(hdr, 36),
    };
    if h.pos != pos {
        return Err(FrameError::WrongPosition { stored: h.pos });
    }
    // A frame must end inside the u64 position space (found by the
    // frame_decode fuzz target: end_pos() overflowed near u64::MAX).
    if h.pos.checked_add(h.frame_bytes()).is_none() {
        return Err(FrameError::TooLong(payload_bytes));
    }
    Ok(h)
}

/// Checks the payload of a batch frame end to end: the RecordBatch header
/// agrees with the frame length and its CRC-32C verifies. `frame` is the
/// whole frame (header and payload).
pub fn verify_payload(h: &FrameHeader, frame: &[u8]) -> Result<batch::BatchInfo, FrameError> {
    let end = h.frame_bytes() as usize;
    if frame.len() < end {
        return Err(FrameError::Truncated { needed: end as u64 });
    }
    let payload = &frame[HEADER_BYTES..end];
    let info = batch::parse_header(payload).map_err(|e| FrameError::BadBatch(e.to_string()))?;
    if info.batch_bytes != payload.len() {
        return Err(FrameError::BatchLengthMismatch);
    }
    let computed = crc32c::crc32c(&payload[BATCH_PREFIX_BYTES..]);
    if computed != info.crc {
        return Err(FrameError::BadBatch(format!("batch crc {:#x} != {computed:#x}", info.crc)));
    }
    Ok(info)
}

/// Size of the padding frame that takes a commit ending at `end_pos` to a
/// block boundary (0 if already aligned). A gap smaller than a header is
/// padded through the following block as well.
pub fn pad_bytes_for(end_pos: u64) -> usize {
    let gap = (crate::buf::align_up(end_pos) - end_pos) as usize;
    match gap {
        0 => 0,
        g if g < HEADER_BYTES => g + crate::buf::BLOCK_BYTES,
        g => g,
    }
}

/// Writes a padding frame of exactly `frame_bytes` into `dst` (zeroing its payload).
pub fn write_pad(dst: &mut [u8], pos: u64, durable_before: u64, epoch: u32) {
    let frame_bytes = dst.len();
    debug_assert!((HEADER_BYTES..=PAD_BYTES_MAX).contains(&frame_bytes));
    dst[HEADER_BYTES..].fill(0);
    let h = FrameHeader { kind: FrameKind::Pad, payload_bytes: (frame_bytes - HEADER_BYTES) as u32, pos, durable_before, epoch, pid: 0 };
    seal(dst, &h);
}

/// Checks this module's promises on arbitrary bytes and panics if one is
/// broken. The first 8 bytes (little-endian) are the log position the frame
/// is expected at, the rest the bytes found there. The fuzz target and
/// `tests/fuzz_replay.rs` both call it, so a saved input replays under
/// `cargo test` exactly as it was fuzzed.
#[doc(hidden)]
pub fn fuzz_check(data: &[u8]) {
    let Some((pos, bytes)) = data.split_first_chunk::<8>() else {
        return;
    };
    let pos = u64::from_le_bytes(*pos);
    fuzz_check_at(bytes, pos);
    // Mutated bytes almost never carry matching checksums, so a resealed
    // copy is checked too: it lets the fuzzer reach the checks behind them.
    if let Some(sealed) = fuzz_reseal(bytes, pos)
        && sealed != bytes
    {
        fuzz_check_at(&sealed, pos);
    }
}

fn fuzz_check_at(bytes: &[u8], pos: u64) {
    let Ok(h) = decode_header(bytes, pos, u32::MAX) else {
        return;
    };
    assert_eq!(h.pos, pos);
    assert!(h.pos.checked_add(h.frame_bytes()).is_some(), "end_pos() of {h:?} overflows");
    assert_eq!(h.end_pos() - h.pos, h.frame_bytes());
    match h.kind {
        FrameKind::Pad => assert!(h.frame_bytes() <= PAD_BYTES_MAX as u64, "{h:?}"),
        FrameKind::Batch => {
            assert!(h.payload_bytes as usize >= batch::BATCH_HEADER_BYTES, "{h:?}");
            // The limit refuses exactly the batch frames longer than it.
            assert_eq!(decode_header(bytes, pos, h.payload_bytes), Ok(h));
            assert_eq!(decode_header(bytes, pos, h.payload_bytes - 1), Err(FrameError::TooLong(h.payload_bytes)));
        }
    }
    let verified = verify_payload(&h, bytes);
    match &verified {
        Ok(info) => assert_eq!(info.batch_bytes as u64, u64::from(h.payload_bytes)),
        Err(FrameError::Truncated { needed }) => assert!(*needed == h.frame_bytes() && (bytes.len() as u64) < *needed),
        Err(_) => {}
    }
    // Nothing past the declared frame is read: cutting it off changes nothing.
    if bytes.len() as u64 > h.frame_bytes() {
        assert_eq!(verify_payload(&h, &bytes[..h.frame_bytes() as usize]), verified);
    }
}

/// `bytes` with the header as it declares itself but at `pos`, sealed, and
/// the batch CRC of a batch frame recomputed over the payload present; `None`
/// when it is too short for the checksums or declares no known kind.
fn fuzz_reseal(bytes: &[u8], pos: u64) -> Option<Vec<u8>> {
    let header = bytes.get(..HEADER_BYTES)?;
    let kind = match header[12] {
        1 => FrameKind::Batch,
        2 => FrameKind::Pad,
        _ => return None,
    };
    let payload_bytes = le_u32(header, 8);
    let h =
        FrameHeader { kind, payload_bytes, pos, durable_before: le_u64(header, 24), epoch: le_u32(header, 32), pid: le_u32(header, 36) };
    let mut sealed = bytes.to_vec();
    if kind == FrameKind::Batch {
        let end = HEADER_BYTES.saturating_add(payload_bytes as usize).min(sealed.len());
        let payload = &mut sealed[HEADER_BYTES..end];
        if payload.len() < BATCH_PREFIX_BYTES {
            return None;
        }
        batch::recompute_crc(payload);
    }
    seal(&mut sealed, &h);
    Some(sealed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::batch::BatchBuilder;

    fn batch_frame(pos: u64, epoch: u32, pid: u32) -> Vec<u8> {
        let mut b = BatchBuilder::new(1000);
        b.push(1000, None, Some(b"hello"), &[]);
        let payload = b.finish();
        let mut f = vec![0u8; HEADER_BYTES + payload.len()];
        f[HEADER_BYTES..].copy_from_slice(&payload);
        let h = FrameHeader { kind: FrameKind::Batch, payload_bytes: payload.len() as u32, pos, durable_before: 0, epoch, pid };
        seal(&mut f, &h);
        f
    }

    // Proves a sealed frame decodes back to its header and verifies end to end.
    #[test]
    fn round_trip() {
        let f = batch_frame(8192, 3, 7);
        let h = decode_header(&f, 8192, 1 << 20).unwrap();
        assert_eq!((h.pos, h.epoch, h.pid, h.kind), (8192, 3, 7, FrameKind::Batch));
        verify_payload(&h, &f).unwrap();
    }

    // Proves a frame copied to another position is rejected (misdirected write).
    #[test]
    fn other_position_rejected() {
        let f = batch_frame(8192, 3, 7);
        assert_eq!(decode_header(&f, 4096, 1 << 20), Err(FrameError::WrongPosition { stored: 8192 }));
    }

    // Proves every single-bit flip anywhere in a frame is detected by one of the two checks.
    #[test]
    fn every_bit_flip_detected() {
        let f = batch_frame(0, 1, 1);
        for i in 0..f.len() * 8 {
            let mut g = f.clone();
            g[i / 8] ^= 1 << (i % 8);
            let ok = decode_header(&g, 0, 1 << 20).and_then(|h| verify_payload(&h, &g).map(|_| h));
            assert!(ok.is_err(), "flip of bit {i} went unnoticed");
        }
    }

    // Proves any truncation is an error, never a panic.
    #[test]
    fn truncation_is_error() {
        let f = batch_frame(0, 1, 1);
        for n in 0..f.len() {
            let r = decode_header(&f[..n], 0, 1 << 20).and_then(|h| verify_payload(&h, &f[..n]));
            assert!(r.is_err(), "prefix of {n} bytes accepted");
        }
    }

    // Proves zeros are recognised as never-written space and padding fills to the block boundary.
    #[test]
    fn zeros_and_padding() {
        assert_eq!(decode_header(&[0u8; 64], 0, 1 << 20), Err(FrameError::Zeros));
        for end in [1u64, 4000, 4056, 4057, 4095, 4096, 5000] {
            let pad = pad_bytes_for(end);
            assert_eq!((end + pad as u64) % 4096, 0);
            assert!(pad == 0 || pad >= HEADER_BYTES, "pad {pad} at {end}");
            if pad > 0 {
                let mut d = vec![0xAAu8; pad];
                write_pad(&mut d, end, 0, 2);
                let h = decode_header(&d, end, 1 << 20).unwrap();
                assert_eq!(h.end_pos(), end + pad as u64);
            }
        }
    }
}
