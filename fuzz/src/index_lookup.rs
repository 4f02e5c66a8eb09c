//! The sparse index: how a restart loads it (a checkpoint's entries handed
//! to `SparseIndex::from_entries`, which asserts their order) and the
//! lookups reads make in it, against the rules stated as plain loops.
//!
//! ```text
//! input:  0x01 | checkpoint bytes (its CRC is recomputed)       the load path
//!         0x00 | count | count x (offset step, pos step, ts step) | queries...
//! ```

use strom::log::checkpoint;
use strom::partition::{IndexEntry, SparseIndex};

const CKPT_CRC_AT: usize = 8;
const CKPT_CRC_FROM: usize = 12;
/// Log bytes per unit of a position step or query: entries lie blocks apart.
const POS_UNIT: u64 = 4096;

pub fn check(data: &[u8]) {
    match data.split_first() {
        Some((&mode, rest)) if mode & 1 == 1 => check_load(rest),
        Some((_, rest)) => check_lookups(rest),
        None => {}
    }
}

/// Whatever a checkpoint decodes to loads into indexes without tripping
/// their order assertion (a panic there would stop the core at start-up).
fn check_load(bytes: &[u8]) {
    let mut sealed = bytes.to_vec();
    if sealed.len() >= CKPT_CRC_FROM {
        let crc = crc32c::crc32c(&sealed[CKPT_CRC_FROM..]);
        sealed[CKPT_CRC_AT..CKPT_CRC_FROM].copy_from_slice(&crc.to_le_bytes());
    }
    let Ok(c) = checkpoint::decode(&sealed) else {
        return;
    };
    for p in c.partitions {
        let index = SparseIndex::from_entries(p.entries.clone());
        index.invariants();
        check_queries(&index, &[0, 1, u16::MAX]);
        assert!(p.entries.last().is_none_or(|e| e.pos < c.covered_pos && e.offset < p.next_offset));
    }
}

/// Builds an ordered index from steps, checks lookups, then the edits.
fn check_lookups(rest: &[u8]) {
    let Some((&count, rest)) = rest.split_first() else {
        return;
    };
    let steps = rest.len().min(3 * usize::from(count)) / 3;
    let (entry_bytes, query_bytes) = rest.split_at(steps * 3);
    let mut entries = Vec::with_capacity(steps);
    let (mut offset, mut pos, mut ts) = (0u64, 0u64, -1000i64);
    for step in entry_bytes.chunks_exact(3) {
        if !entries.is_empty() {
            offset += 1 + u64::from(step[0]);
            pos += (1 + u64::from(step[1])) * POS_UNIT;
        }
        ts += i64::from(step[2]);
        entries.push(IndexEntry { offset, pos, max_ts_ms: ts });
    }
    let index = SparseIndex::from_entries(entries.clone());
    let queries: Vec<u16> = query_bytes.chunks(2).map(|q| u16::from_le_bytes([q[0], *q.get(1).unwrap_or(&0)])).collect();
    check_queries(&index, &queries);
    check_edits(&entries, &queries);
    check_observe(entry_bytes, query_bytes.first().copied().unwrap_or(1));
}

/// Each lookup against the rule it implements, for offsets, positions and
/// timestamps around every query.
fn check_queries(index: &SparseIndex, queries: &[u16]) {
    let entries = index.entries();
    for &q in queries {
        let q64 = u64::from(q);
        for offset in [q64, q64 * 7, u64::MAX] {
            assert_eq!(index.floor(offset), entries.iter().rev().find(|e| e.offset <= offset).copied(), "floor({offset})");
        }
        for pos in [q64 * POS_UNIT, q64 * POS_UNIT + 1, u64::MAX] {
            assert_eq!(index.first_at_or_after(pos), entries.iter().find(|e| e.pos >= pos).copied(), "first_at_or_after({pos})");
        }
        for ts in [i64::from(q) - 1000, i64::MIN, i64::MAX] {
            check_time_lookup(entries, index.scan_start_for_time(ts), ts);
        }
    }
}

/// A time lookup starts at the latest entry whose batches all lie before
/// `ts_ms` (the first entry if even it reaches it), so a read scanning from
/// there misses no batch that reaches `ts_ms` and scans no further than needed.
fn check_time_lookup(entries: &[IndexEntry], found: Option<IndexEntry>, ts_ms: i64) {
    let Some(start) = found else {
        assert!(entries.is_empty(), "no start for {ts_ms} in a non-empty index");
        return;
    };
    let i = entries.iter().position(|e| *e == start).expect("the start is an entry");
    assert!(i == 0 || start.max_ts_ms < ts_ms, "start {start:?} already reaches {ts_ms}");
    if let Some(next) = entries.get(i + 1) {
        assert!(next.max_ts_ms >= ts_ms, "start {start:?} is before {next:?}, which also lies before {ts_ms}");
    }
}

/// Retention and truncation keep exactly the entries on their side of the cut.
fn check_edits(entries: &[IndexEntry], queries: &[u16]) {
    for &q in queries.iter().take(4) {
        let cut = u64::from(q) * POS_UNIT / 2;
        let mut dropped = SparseIndex::from_entries(entries.to_vec());
        dropped.drop_before(cut);
        dropped.invariants();
        assert_eq!(dropped.entries(), entries.iter().filter(|e| e.pos >= cut).copied().collect::<Vec<_>>(), "drop_before({cut})");
        let mut truncated = SparseIndex::from_entries(entries.to_vec());
        truncated.truncate_from(cut);
        truncated.invariants();
        assert_eq!(truncated.entries(), entries.iter().filter(|e| e.pos < cut).copied().collect::<Vec<_>>(), "truncate_from({cut})");
    }
}

/// Batches observed in log order give an ordered index whose entries obey
/// the sparse rule: a partition's first batch in a segment, or one at least
/// `interval` of log past the previous entry.
fn check_observe(steps: &[u8], interval_units: u8) {
    let interval = u64::from(interval_units.max(1)) * POS_UNIT;
    let mut index = SparseIndex::default();
    let (mut offset, mut pos, mut ts, mut segment_start) = (0u64, 0u64, 0i64, 0u64);
    let mut observed = Vec::new();
    for step in steps.chunks_exact(3) {
        offset += 1 + u64::from(step[0] & 0x0F);
        pos += (1 + u64::from(step[1] & 0x3F)) * POS_UNIT;
        ts += i64::from(step[2] & 0x0F);
        if step[0] & 0x80 != 0 {
            segment_start = pos;
        }
        index.observe(offset, pos, ts, segment_start, interval);
        observed.push((offset, pos, segment_start));
        index.invariants();
    }
    let entries = index.entries();
    assert_eq!(entries.first().map(|e| e.offset), observed.first().map(|o| o.0), "the first batch has no entry");
    for w in entries.windows(2) {
        let seg = observed.iter().find(|o| o.0 == w[1].offset).expect("an entry is an observed batch").2;
        assert!(w[1].pos - w[0].pos >= interval || w[0].pos < seg, "entries {w:?} are closer than {interval} in one segment");
    }
}
