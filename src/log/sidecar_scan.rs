//! Rebuilding a sidecar ([`crate::log::sidecar`]) by scanning its segment.
//!
//! A sealed segment can lack a usable sidecar: it was the active segment at
//! a crash (no clean stop wrote one, and the recovery scan that fed this
//! process's runs may have started past its start), or its sidecar was
//! lost or damaged. Its frames still say everything a sidecar holds, so
//! the read path scans them once, in order, and writes the sidecar from
//! what it saw. This is the pure half: bytes of the segment in, runs out,
//! no I/O (the read path's `sidecars` module reads through the core's ring
//! and feeds it).
//!
//! A scan trusts nothing it cannot verify: every frame from the segment's
//! start to its end must verify (header, payload and the log's epoch rule),
//! lie wholly inside the segment, and each partition's batches must follow
//! one another in offsets; anything else gives the rebuild up (the segment's
//! reads keep walking frames, which reports the damage where it is).
use std::collections::BTreeMap;

use crate::buf::{align_down, align_up};
use crate::log::frame::{self, FrameError, FrameHeader, FrameKind};
use crate::log::sidecar::PartRuns;
use crate::partition::runs::RUNS_PER_CORE_MAX;
use crate::partition::{Pid, Run};

/// Bytes each scan read asks for (more when one frame is larger): the
/// most a commit submitted meanwhile shares the disk with, per read.
pub const SCAN_CHUNK_BYTES: usize = 1 << 20;

/// Runs a scan collects, at most, over all partitions (what a core keeps in
/// memory at most, [`RUNS_PER_CORE_MAX`], 32 MiB): a segment of smaller
/// runs than that is given up rather than held whole in memory.
pub const SCAN_RUNS_MAX: usize = RUNS_PER_CORE_MAX;

/// One segment's scan in progress: where its next frame starts and the runs
/// seen before it.
#[derive(Debug)]
pub struct SegmentScan {
    start_pos: u64,
    end_pos: u64,
    /// Log position of the next frame to decode.
    pos: u64,
    /// Bytes from the block holding `pos` that the next read must return
    /// for the frame there to be whole (0: a chunk will do).
    need_bytes: usize,
    payload_bytes_max: u32,
    parts: BTreeMap<Pid, Vec<Run>>,
    runs: usize,
}

impl SegmentScan {
    /// A scan of the segment `start_pos..end_pos` (block-aligned start:
    /// every commit ends on a block boundary), whose batches are at most
    /// `payload_bytes_max`.
    pub fn new(start_pos: u64, end_pos: u64, payload_bytes_max: u32) -> SegmentScan {
        assert_eq!(start_pos, align_down(start_pos), "segments start on a block boundary");
        assert!(start_pos <= end_pos, "a segment ends after it starts");
        SegmentScan { start_pos, end_pos, pos: start_pos, need_bytes: 0, payload_bytes_max, parts: BTreeMap::new(), runs: 0 }
    }

    pub fn start_pos(&self) -> u64 {
        self.start_pos
    }

    pub fn end_pos(&self) -> u64 {
        self.end_pos
    }

    /// The next read: its block-aligned log position and length (at most
    /// the segment's end, rounded up to a block); None once the scan reached
    /// the segment's end.
    pub fn next_read(&self, chunk_bytes: usize) -> Option<(u64, usize)> {
        if self.pos >= self.end_pos {
            return None;
        }
        let at = align_down(self.pos);
        let want = chunk_bytes.max(self.need_bytes) as u64;
        Some((at, align_up(want.min(self.end_pos - at)) as usize))
    }

    /// Takes the bytes a read of `asked_bytes` at `at` returned (those past
    /// the segment's end are ignored): every whole frame in them. An error
    /// says why the segment cannot be indexed by a scan. `is_current` is the
    /// log's rule for a verified frame's epoch.
    pub fn feed(
        &mut self,
        at: u64,
        bytes: &[u8],
        asked_bytes: usize,
        is_current: &dyn Fn(&FrameHeader) -> Result<(), String>,
    ) -> Result<(), String> {
        assert!(at <= self.pos && self.pos < self.end_pos, "a read of where the scan is");
        let bytes = &bytes[..bytes.len().min((self.end_pos - at) as usize)];
        let whole = at + bytes.len() as u64 == self.end_pos;
        self.need_bytes = 0;
        while self.pos < self.end_pos {
            let off = (self.pos - at) as usize;
            let b = bytes.get(off..).unwrap_or(&[]);
            let h = match frame::decode_header(b, self.pos, self.payload_bytes_max) {
                Ok(h) => h,
                Err(FrameError::Truncated { needed }) if !whole => {
                    self.need_bytes = off + needed as usize;
                    break;
                }
                Err(e) => return Err(format!("at {}: {e:?}", self.pos)),
            };
            is_current(&h).map_err(|reason| format!("at {}: {reason}", self.pos))?;
            if h.end_pos() > self.end_pos {
                return Err(format!("frame at {} ends past the segment's end {}", self.pos, self.end_pos));
            }
            if (b.len() as u64) < h.frame_bytes() {
                self.need_bytes = off + h.frame_bytes() as usize;
                break;
            }
            if h.kind == FrameKind::Batch {
                let info = frame::verify_payload(&h, b).map_err(|e| format!("at {}: {e:?}", self.pos))?;
                let base = info.base_offset as u64;
                self.observe(&h, base, base + info.last_offset_delta as u64 + 1)?;
            }
            self.pos = h.end_pos();
        }
        if self.pos < self.end_pos && bytes.len() < asked_bytes.min((self.end_pos - at) as usize) {
            return Err(format!("the segment file ends at log position {} before its end {}", at + bytes.len() as u64, self.end_pos));
        }
        Ok(())
    }

    /// Records a batch of offsets `base..end_offset`: it extends its
    /// partition's last run when it follows it directly, else starts one.
    fn observe(&mut self, h: &FrameHeader, base: u64, end_offset: u64) -> Result<(), String> {
        let runs = self.parts.entry(h.pid).or_default();
        match runs.last_mut() {
            Some(r) if r.end_offset != base => {
                return Err(format!("partition {} batch at offset {base} follows offset {}", h.pid, r.end_offset));
            }
            Some(r) if r.end_pos() == h.pos => {
                r.end_offset = end_offset;
                r.bytes += h.frame_bytes();
                return Ok(());
            }
            _ => {}
        }
        if self.runs >= SCAN_RUNS_MAX {
            return Err(format!("more than {SCAN_RUNS_MAX} runs"));
        }
        runs.push(Run { first_offset: base, end_offset, pos: h.pos, bytes: h.frame_bytes() });
        self.runs += 1;
        Ok(())
    }

    /// Whether every frame up to the segment's end was seen.
    pub fn done(&self) -> bool {
        self.pos >= self.end_pos
    }

    /// The runs of every partition with a batch in the segment (a partition
    /// with none there is not listed: a read of it there walks).
    pub fn finish(self) -> Vec<(Pid, PartRuns)> {
        assert!(self.done(), "a scan is finished once it reached the segment's end");
        let into = |(pid, runs): (Pid, Vec<Run>)| {
            let next_offset = runs.last().expect("a listed partition has a run").end_offset;
            (pid, PartRuns { next_offset, runs })
        };
        self.parts.into_iter().map(into).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::log::frame::{HEADER_BYTES, pad_bytes_for, seal, write_pad};
    use crate::wire::batch::{BatchBuilder, set_base_offset};

    const START: u64 = 8192;

    /// A segment from `START` of batch frames (pid, base offset, records),
    /// each value `value_bytes` long, ending on a block boundary (padding).
    fn segment(batches: &[(Pid, u64, usize)], value_bytes: usize) -> Vec<u8> {
        let mut seg = Vec::new();
        for &(pid, base, records) in batches {
            let mut b = BatchBuilder::new(1000);
            for _ in 0..records {
                b.push(1000, None, Some(&vec![7u8; value_bytes]), &[]);
            }
            let mut payload = b.finish();
            set_base_offset(&mut payload, base);
            let pos = START + seg.len() as u64;
            let mut f = vec![0u8; HEADER_BYTES + payload.len()];
            f[HEADER_BYTES..].copy_from_slice(&payload);
            seal(
                &mut f,
                &FrameHeader { kind: FrameKind::Batch, payload_bytes: payload.len() as u32, pos, durable_before: 0, epoch: 1, pid },
            );
            seg.extend_from_slice(&f);
        }
        let end = START + seg.len() as u64;
        let pad = pad_bytes_for(end);
        if pad > 0 {
            let mut p = vec![0u8; pad];
            write_pad(&mut p, end, 0, 1);
            seg.extend_from_slice(&p);
        }
        seg
    }

    /// Scans `seg` (whose file holds `file_bytes` of it) in reads of `chunk_bytes`.
    fn scan(seg: &[u8], file_bytes: usize, chunk_bytes: usize) -> Result<Vec<(Pid, PartRuns)>, String> {
        let mut s = SegmentScan::new(START, START + seg.len() as u64, 1 << 20);
        while let Some((at, len)) = s.next_read(chunk_bytes) {
            let from = (at - START) as usize;
            let bytes = &seg[from.min(file_bytes)..(from + len).min(file_bytes)];
            s.feed(at, bytes, len, &|_| Ok(()))?;
        }
        Ok(s.finish())
    }

    // Proves: a scan in reads smaller than its frames (each frame crossing
    // reads) finds each partition's runs exactly: consecutive batches of one
    // partition are one run, another partition's frame between them splits
    // it; and what it finds is a sidecar that decodes.
    #[test]
    fn a_scan_finds_each_partitions_runs() {
        let seg = segment(&[(1, 0, 3), (1, 3, 2), (2, 10, 4), (1, 5, 1), (2, 14, 1)], 3000);
        for chunk in [4096, 16384, 1 << 20] {
            let parts = scan(&seg, seg.len(), chunk).unwrap();
            assert_eq!(parts.len(), 2, "chunk {chunk}");
            let (p1, p2) = (&parts[0].1, &parts[1].1);
            let r: Vec<(u64, u64)> = p1.runs.iter().map(|r| (r.first_offset, r.end_offset)).collect();
            assert_eq!(r, vec![(0, 5), (5, 6)], "chunk {chunk}: partition 1");
            assert_eq!(p1.runs[0].pos, START);
            assert_eq!(p1.next_offset, 6);
            let r: Vec<(u64, u64)> = p2.runs.iter().map(|r| (r.first_offset, r.end_offset)).collect();
            assert_eq!(r, vec![(10, 14), (14, 15)], "chunk {chunk}: partition 2");
            let end = START + seg.len() as u64;
            let decoded = crate::log::sidecar::decode(&crate::log::sidecar::encode(START, end, &parts), START, end).unwrap();
            assert_eq!(decoded.parts.len(), 2);
        }
    }

    // Proves: a flipped byte anywhere in a batch frame, a file shorter than
    // the segment, a partition's batches out of offset order, and a frame
    // the log's epoch rule refuses each give the rebuild up.
    #[test]
    fn damage_gives_the_scan_up() {
        let seg = segment(&[(1, 0, 2), (2, 0, 1), (1, 2, 1)], 1000);
        for at in [0, 20, HEADER_BYTES + 30, 2500] {
            let mut bad = seg.clone();
            bad[at] ^= 0x10;
            assert!(scan(&bad, bad.len(), 4096).is_err(), "byte {at} flipped");
        }
        assert!(scan(&seg, seg.len() - 4096, 4096).is_err(), "a short file");
        let gap = segment(&[(1, 0, 2), (1, 5, 1)], 1000);
        assert!(scan(&gap, gap.len(), 4096).is_err(), "offsets 2..5 missing");
        let mut s = SegmentScan::new(START, START + seg.len() as u64, 1 << 20);
        let (at, len) = s.next_read(1 << 20).unwrap();
        assert!(s.feed(at, &seg, len, &|_| Err("stale epoch".into())).is_err());
    }
}
