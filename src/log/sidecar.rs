//! Sidecars: the dense run index of a sealed segment, kept beside it.
//!
//! A partition's runs ([`crate::partition::runs`]) live in memory for what
//! this process staged or scanned; after a restart, data before the
//! recovery scan has none, and a read of one of N interleaved partitions
//! there would walk every frame. So once a segment is sealed and its last
//! commit is durable (and, at a clean stop, for the active segment up to
//! its durable end), the read path writes `<start>.runs` beside it
//! (`NNN.seg` -> `NNN.runs`): per partition whose runs cover all of it, its
//! runs there. Format (docs/FORMAT.md, "Sidecars"), all
//! little-endian:
//!
//! ```text
//! magic "STRMRUNS" (8) | version u32 | start_pos u64 | end_pos u64 | partitions u32
//! per partition: pid u32 | runs u32 | next_offset u64 | runs x (first_offset, end_offset, pos, bytes: u64 each)
//! crc32c u32 over every byte before it
//! ```
//!
//! A sidecar is only an index: a missing, short or corrupt one (checksum,
//! version, segment bounds, runs outside the segment or out of order) is
//! ignored with a warning and the read walks frames as before. Its write
//! never touches a commit: it happens between ticks, after durability.
use std::collections::{HashMap, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::io::Io;
use crate::partition::{Partition, Pid, Run};

pub const SIDECAR_SUFFIX: &str = ".runs";
const MAGIC: &[u8; 8] = b"STRMRUNS";
pub const SIDECAR_VERSION: u32 = 1;
const HEADER_BYTES: usize = 8 + 4 + 8 + 8 + 4;
const PART_HEADER_BYTES: usize = 16;
const RUN_RECORD_BYTES: usize = 32;
const CRC_BYTES: usize = 4;

/// A sidecar's size at most (a core keeps at most RUNS_PER_CORE_MAX runs,
/// 32 MiB of records, plus a header per partition): larger ones are refused.
pub const SIDECAR_BYTES_MAX: usize = 64 << 20;

/// Sidecars a core keeps loaded, at most, and their bytes in memory at most
/// (least recently used dropped first; the newest is always kept).
pub const SIDECAR_CACHE_ENTRIES_MAX: usize = 8;
pub const SIDECAR_CACHE_BYTES_MAX: usize = 16 << 20;

/// The sidecar of the segment file at `segment_path`.
pub fn path_for(segment_path: &Path) -> PathBuf {
    segment_path.with_extension(&SIDECAR_SUFFIX[1..])
}

/// One partition's runs in a segment, and the offset its next batch after
/// the sidecar's end has (the last run's end; what a partition with no run
/// there continues from).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartRuns {
    pub next_offset: u64,
    pub runs: Vec<Run>,
}

/// One sealed segment's runs, per partition listed.
#[derive(Debug, PartialEq, Eq)]
pub struct SegmentRuns {
    pub start_pos: u64,
    pub end_pos: u64,
    pub parts: HashMap<Pid, PartRuns>,
}

impl SegmentRuns {
    pub fn runs_of(&self, pid: Pid) -> Option<&[Run]> {
        self.parts.get(&pid).map(|r| &r.runs[..])
    }

    fn mem_bytes(&self) -> usize {
        self.parts.values().map(|r| r.runs.len() * RUN_RECORD_BYTES + PART_HEADER_BYTES).sum()
    }
}

/// The bytes of a sidecar of segment `start_pos..end_pos` listing `parts`.
pub fn encode(start_pos: u64, end_pos: u64, parts: &[(Pid, PartRuns)]) -> Vec<u8> {
    let runs: usize = parts.iter().map(|(_, r)| r.runs.len()).sum();
    let mut out = Vec::with_capacity(HEADER_BYTES + parts.len() * PART_HEADER_BYTES + runs * RUN_RECORD_BYTES + CRC_BYTES);
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&SIDECAR_VERSION.to_le_bytes());
    out.extend_from_slice(&start_pos.to_le_bytes());
    out.extend_from_slice(&end_pos.to_le_bytes());
    out.extend_from_slice(&(parts.len() as u32).to_le_bytes());
    for (pid, part) in parts {
        out.extend_from_slice(&pid.to_le_bytes());
        out.extend_from_slice(&(part.runs.len() as u32).to_le_bytes());
        out.extend_from_slice(&part.next_offset.to_le_bytes());
        for r in &part.runs {
            for v in [r.first_offset, r.end_offset, r.pos, r.bytes] {
                out.extend_from_slice(&v.to_le_bytes());
            }
        }
    }
    let crc = crc32c::crc32c(&out);
    out.extend_from_slice(&crc.to_le_bytes());
    out
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().expect("4 bytes"))
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().expect("8 bytes"))
}

/// Decodes a sidecar of the segment starting at `start_pos` whose part of
/// the log (or of it that is durable, for the active one) ends at
/// `end_max`; why not, when it is not one (pure: bytes in, runs or a
/// reason out). A sidecar may describe the segment up to an earlier end
/// (written at a stop, before the segment was sealed).
pub fn decode(b: &[u8], start_pos: u64, end_max: u64) -> Result<SegmentRuns, String> {
    if b.len() < HEADER_BYTES + CRC_BYTES || b.len() > SIDECAR_BYTES_MAX {
        return Err(format!("{} bytes", b.len()));
    }
    let (body, crc) = b.split_at(b.len() - CRC_BYTES);
    if crc32c::crc32c(body) != u32_at(crc, 0) {
        return Err("checksum mismatch".into());
    }
    if &body[..8] != MAGIC || u32_at(body, 8) != SIDECAR_VERSION {
        return Err(format!("not a version {SIDECAR_VERSION} sidecar"));
    }
    let end_pos = u64_at(body, 20);
    if u64_at(body, 12) != start_pos || end_pos < start_pos || end_pos > end_max {
        return Err(format!("describes {}..{end_pos}, not a part of {start_pos}..{end_max}", u64_at(body, 12)));
    }
    let count = u32_at(body, 28) as usize;
    let mut at = HEADER_BYTES;
    let mut parts = HashMap::with_capacity(count.min(body.len() / PART_HEADER_BYTES));
    for _ in 0..count {
        if body.len() - at < PART_HEADER_BYTES {
            return Err("partition list runs past the end".into());
        }
        let (pid, n, next_offset) = (u32_at(body, at), u32_at(body, at + 4) as usize, u64_at(body, at + 8));
        at += PART_HEADER_BYTES;
        if (body.len() - at) / RUN_RECORD_BYTES < n {
            return Err(format!("partition {pid}: runs past the end"));
        }
        let runs: Vec<Run> = (0..n)
            .map(|i| at + i * RUN_RECORD_BYTES)
            .map(|o| Run {
                first_offset: u64_at(body, o),
                end_offset: u64_at(body, o + 8),
                pos: u64_at(body, o + 16),
                bytes: u64_at(body, o + 24),
            })
            .collect();
        at += n * RUN_RECORD_BYTES;
        check_runs(pid, &runs, start_pos, end_pos)?;
        if runs.last().is_some_and(|r| r.end_offset != next_offset) {
            return Err(format!("partition {pid}: next offset {next_offset} is not where its runs end"));
        }
        if parts.insert(pid, PartRuns { next_offset, runs }).is_some() {
            return Err(format!("partition {pid} listed twice"));
        }
    }
    if at != body.len() {
        return Err(format!("{} bytes after the last partition", body.len() - at));
    }
    Ok(SegmentRuns { start_pos, end_pos, parts })
}

/// Runs inside the segment, non-empty, in order, offsets contiguous.
fn check_runs(pid: Pid, runs: &[Run], start_pos: u64, end_pos: u64) -> Result<(), String> {
    for r in runs {
        if r.first_offset >= r.end_offset || r.bytes == 0 || r.pos < start_pos || r.pos.checked_add(r.bytes).is_none_or(|e| e > end_pos) {
            return Err(format!("partition {pid}: run {r:?} outside {start_pos}..{end_pos} or empty"));
        }
    }
    for (a, b) in runs.iter().zip(runs.iter().skip(1)) {
        if a.end_offset != b.first_offset || a.end_pos() > b.pos {
            return Err(format!("partition {pid}: runs out of order: {a:?} {b:?}"));
        }
    }
    Ok(())
}

/// The runs of segment `start_pos..end_pos` of each of `partitions` (those
/// on log `log`) whose runs cover all of it: its in-memory first run starts
/// at or before the segment or holds its earliest offset (runs are
/// contiguous in offsets from there, so none of its batches in the segment
/// is missed), or `prior` (the segment's sidecar up to an earlier end,
/// written at a stop) lists it and its in-memory runs go on at the very
/// offset where those end. Others are left out, and reads of them there
/// walk frames.
pub fn runs_for<'a>(
    partitions: impl Iterator<Item = (&'a Pid, &'a Partition)>,
    log: u32,
    (start_pos, end_pos): (u64, u64),
    prior: Option<&SegmentRuns>,
) -> Vec<(Pid, PartRuns)> {
    let mut parts: Vec<(Pid, PartRuns)> = Vec::new();
    for (&pid, p) in partitions.filter(|(_, p)| p.log == log) {
        let Some(&first) = p.runs.first() else { continue };
        // Nothing of it lies before its first run when that run starts at or
        // before the segment, or holds its earliest offset.
        let mut runs: Vec<Run> = if first.pos <= start_pos || first.first_offset <= p.start_offset {
            Vec::new()
        } else {
            let Some(before) = prior.and_then(|s| s.parts.get(&pid)) else { continue };
            // Those of the prior before the in-memory ones (it may list
            // them too: this process wrote it at an earlier stop), and the
            // offset they reach: the in-memory runs must go on from it.
            let kept: Vec<Run> = before.runs.iter().filter(|r| r.pos < first.pos).copied().collect();
            let reach = match (kept.last(), before.runs.first()) {
                (Some(r), _) if r.end_pos() > first.pos => continue,
                (Some(r), _) => r.end_offset,
                (None, Some(r)) => r.first_offset,
                (None, None) => before.next_offset,
            };
            if reach != first.first_offset {
                continue;
            }
            kept
        };
        let from = p.runs.at_or_after(start_pos);
        runs.extend(
            from.into_iter().flat_map(|from| (from..p.runs.len()).map_while(|i| p.runs.get(i).copied().filter(|r| r.pos < end_pos))),
        );
        // A run reaching past the end (staged beyond the durable end of an
        // active segment) cannot be cut without its offsets: leave it out.
        if runs.last().is_some_and(|r| r.end_pos() > end_pos) {
            continue;
        }
        // Where its next batch after the end starts: where its runs here
        // end, or its first run past the end, or where all its runs end
        // (every staged batch has a run).
        let after = from.and_then(|i| (i..p.runs.len()).filter_map(|i| p.runs.get(i)).find(|r| r.pos >= end_pos));
        let next_offset = match (runs.last(), after) {
            (Some(r), _) => r.end_offset,
            (None, Some(r)) => r.first_offset,
            (None, None) => p.runs.get(p.runs.len() - 1).map_or(first.end_offset, |r| r.end_offset),
        };
        parts.push((pid, PartRuns { next_offset, runs }));
    }
    parts.sort_by_key(|(pid, _)| *pid);
    parts
}

/// Writes the sidecar of the segment file at `segment_path`; a failure is
/// only a warning (the segment's reads walk frames).
pub fn write<I: Io>(io: &mut I, segment_path: &Path, start_pos: u64, end_pos: u64, parts: &[(Pid, PartRuns)]) {
    let path = path_for(segment_path);
    if let Err(e) = io.write_file_atomic(&path, &encode(start_pos, end_pos, parts)) {
        tracing::warn!(path = %path.display(), error = %e, "cannot write a sidecar; reads of its segment walk frames");
    }
}

/// Removes the sidecar of a segment leaving the log (retention, recycling).
pub fn remove<I: Io>(io: &mut I, segment_path: &Path) {
    // Absent when never written (a crash, a failed write): nothing to do.
    let _ = io.remove(&path_for(segment_path));
}

/// A loaded sidecar (None: missing or refused) by (log, segment start_pos).
type CacheEntry = ((u32, u64), Option<Arc<SegmentRuns>>);

/// A core's loaded sidecars, least recently used first.
#[derive(Debug, Default)]
pub struct SidecarCache {
    loaded: VecDeque<CacheEntry>,
}

impl SidecarCache {
    /// The runs of the segment of `log` at `segment_path` from `start_pos`
    /// (its part of the log ending at `end_max`), loaded when not yet (a
    /// failed load is remembered as None too, so a missing sidecar is not
    /// read again at every fetch).
    pub fn get<I: Io>(&mut self, io: &mut I, log: u32, segment_path: &Path, start_pos: u64, end_max: u64) -> Option<Arc<SegmentRuns>> {
        let key = (log, start_pos);
        if let Some(i) = self.loaded.iter().position(|(k, _)| *k == key) {
            let e = self.loaded.remove(i).expect("present");
            let runs = e.1.clone();
            self.loaded.push_back(e);
            return runs;
        }
        let path = path_for(segment_path);
        let runs = match io.read_file(&path) {
            Ok(Some(b)) => decode(&b, start_pos, end_max)
                .map_err(|reason| tracing::warn!(path = %path.display(), %reason, "sidecar ignored; reads of its segment walk frames"))
                .ok()
                .map(Arc::new),
            Ok(None) => None,
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e, "cannot read a sidecar; reads of its segment walk frames");
                None
            }
        };
        self.loaded.push_back((key, runs.clone()));
        while self.loaded.len() > SIDECAR_CACHE_ENTRIES_MAX || (self.loaded.len() > 1 && self.bytes() > SIDECAR_CACHE_BYTES_MAX) {
            self.loaded.pop_front();
        }
        runs
    }

    /// Forgets what was loaded for a segment (its sidecar was rewritten).
    pub fn forget(&mut self, log: u32, start_pos: u64) {
        self.loaded.retain(|(k, _)| *k != (log, start_pos));
    }

    fn bytes(&self) -> usize {
        self.loaded.iter().filter_map(|(_, r)| r.as_ref()).map(|r| r.mem_bytes()).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn part(next_offset: u64, runs: Vec<Run>) -> PartRuns {
        PartRuns { next_offset, runs }
    }

    fn run(first_offset: u64, end_offset: u64, pos: u64, bytes: u64) -> Run {
        Run { first_offset, end_offset, pos, bytes }
    }

    fn sample() -> Vec<(Pid, PartRuns)> {
        vec![
            (1, part(4, vec![run(0, 3, 4096, 300), run(3, 4, 8192, 100)])),
            (7, part(12, Vec::new())),
            (9, part(11, vec![run(10, 11, 5000, 50)])),
        ]
    }

    // Proves: a sidecar decodes to exactly the runs encoded, and only as
    // the segment it was written for (or one reaching past its end).
    #[test]
    fn round_trip() {
        let b = encode(4096, 16384, &sample());
        let s = decode(&b, 4096, 16384).unwrap();
        for (pid, p) in sample() {
            assert_eq!(s.parts[&pid], p);
        }
        assert_eq!(s.parts.len(), 3);
        assert!(decode(&b, 4096, 16000).is_err(), "past the segment's end");
        assert!(decode(&b, 0, 16384).is_err(), "another segment");
        assert_eq!(decode(&b, 4096, 20000).unwrap().end_pos, 16384, "a sidecar up to an earlier end");
    }

    // Proves: every truncation and every flipped bit is refused.
    #[test]
    fn every_truncation_and_flipped_byte_is_refused() {
        let b = encode(4096, 16384, &sample());
        for n in 0..b.len() {
            assert!(decode(&b[..n], 4096, 16384).is_err(), "truncated to {n}");
        }
        for i in 0..b.len() {
            for bit in 0..8 {
                let mut c = b.clone();
                c[i] ^= 1 << bit;
                assert!(decode(&c, 4096, 16384).is_err(), "byte {i} bit {bit}");
            }
        }
    }

    // Proves: runs outside the segment, out of order, or not ending at the
    // next offset are refused even under a valid checksum (a bug, not
    // damage, but never trusted).
    #[test]
    fn runs_outside_the_segment_are_refused() {
        let outside = vec![(1, part(1, vec![run(0, 1, 16000, 1000)]))];
        assert!(decode(&encode(4096, 16384, &outside), 4096, 16384).is_err());
        let disordered = vec![(1, part(2, vec![run(0, 1, 8192, 10), run(1, 2, 4096, 10)]))];
        assert!(decode(&encode(4096, 16384, &disordered), 4096, 16384).is_err());
        let elsewhere = vec![(1, part(5, vec![run(0, 1, 8192, 10)]))];
        assert!(decode(&encode(4096, 16384, &elsewhere), 4096, 16384).is_err(), "next offset not where its runs end");
    }
}
