//! Checking every record a consumer receives, and what was acknowledged.
//!
//! Each producer writes one stream per partition: sequences 0, 1, 2, ...
//! A consumer keeps, per (partition, producer), the next sequence it
//! expects and the gaps below it (normally none). A record at the expected
//! sequence advances it; one past it opens a gap; one inside a gap fills it
//! (it arrived out of order: `reordered`); one below and not in a gap was
//! seen before (`duplicated`). A record whose checksum or batch CRC fails
//! is `corrupt`. At the end, every acknowledged sequence the consumer did
//! not see is `lost`. Records of another run (a reused topic) are skipped
//! and counted as `foreign`.
//!
//! Two depths of check, both exact about loss, duplication, reordering and
//! corruption of what the broker stored: [`Check::EachRecord`] validates the
//! batch (its CRC, its header, every record decoded) and then every
//! record's own checksum and identity; [`Check::Batch`] checks the batch CRC
//! (which covers every byte of every record) and its header, and takes the
//! records' identities from the first record, since a producer stamps a
//! batch's records with consecutive sequences before it computes that CRC.
//! What only the first catches is a broker that rebuilt a batch and its CRC
//! around a damaged value; one consumer per partition checks each record,
//! so that a fanout of N readers does not pay N times for it (issue 13).
use std::collections::HashMap;
use std::sync::Arc;

use strom::wire::batch;

use crate::records::{Shift, VALUE_HEADER_BYTES, ValueId, check_value, check_value_folded, shift_of};

/// Half-open sequence ranges `[start, end)`, sorted and disjoint.
pub type Ranges = Vec<(u64, u64)>;

/// Adds `[start, end)` to sorted disjoint `ranges`, merging neighbours.
pub fn add_range(ranges: &mut Ranges, start: u64, end: u64) {
    if start >= end {
        return;
    }
    // Acks arrive in order almost always: appending is the fast path.
    if let Some(last) = ranges.last_mut() {
        if last.1 == start {
            last.1 = end;
            return;
        }
        if last.1 < start {
            ranges.push((start, end));
            return;
        }
    } else {
        ranges.push((start, end));
        return;
    }
    ranges.push((start, end));
    ranges.sort_unstable();
    let mut merged: Ranges = Vec::with_capacity(ranges.len());
    for &(s, e) in ranges.iter() {
        match merged.last_mut() {
            Some(last) if s <= last.1 => last.1 = last.1.max(e),
            _ => merged.push((s, e)),
        }
    }
    *ranges = merged;
}

/// The counts the report and the exit code use; all but `checked` and
/// `foreign` must be 0.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct VerifyCounts {
    pub checked: u64,
    pub lost: u64,
    pub duplicated: u64,
    pub reordered: u64,
    pub corrupt: u64,
    pub foreign: u64,
    /// Acknowledged sequences retention dropped before the read-back
    /// reached them (only with `--retention-bytes`: see [`PartitionVerifier::finish_expiring`]).
    pub expired: u64,
}

impl VerifyCounts {
    pub fn add(&mut self, o: &VerifyCounts) {
        self.checked += o.checked;
        self.lost += o.lost;
        self.duplicated += o.duplicated;
        self.reordered += o.reordered;
        self.corrupt += o.corrupt;
        self.foreign += o.foreign;
        self.expired += o.expired;
    }

    pub fn is_clean(&self) -> bool {
        self.lost == 0 && self.duplicated == 0 && self.reordered == 0 && self.corrupt == 0
    }
}

/// What one consumer saw of one producer's stream in one partition.
#[derive(Debug, Clone, Default)]
struct Seen {
    next: u64,
    /// Ranges below `next` not seen yet.
    gaps: Ranges,
}

impl Seen {
    #[cfg(test)]
    fn contains(&self, seq: u64) -> bool {
        seq < self.next && !self.gaps.iter().any(|&(s, e)| s <= seq && seq < e)
    }

    /// How many sequences of `acked` were not seen.
    fn missing(&self, acked: &Ranges) -> u64 {
        let mut missing = 0;
        for &(s, e) in acked {
            if e > self.next {
                missing += e - s.max(self.next);
            }
            for &(gs, ge) in &self.gaps {
                let (lo, hi) = (s.max(gs), e.min(ge).min(self.next));
                missing += hi.saturating_sub(lo);
            }
        }
        missing
    }
}

/// How deep a consumer checks (see the module's doc).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Check {
    EachRecord,
    Batch,
}

/// `batch::validate`'s checks of a header that need no record walk: no
/// compression, at least one record, and a last offset delta that agrees
/// with the count.
fn header_ok(info: &batch::BatchInfo) -> bool {
    info.compression() == 0 && info.records_count >= 1 && info.last_offset_delta == info.records_count - 1
}

/// One sequence of a stream received: it advances the stream, opens a gap,
/// fills one (`reordered`) or was seen before (`duplicated`).
fn see(s: &mut Seen, seq: u64, counts: &mut VerifyCounts) {
    if seq == s.next {
        s.next += 1;
    } else if seq > s.next {
        add_range(&mut s.gaps, s.next, seq);
        s.next = seq + 1;
    } else if let Some(i) = s.gaps.iter().position(|&(gs, ge)| gs <= seq && seq < ge) {
        counts.reordered += 1;
        let (gs, ge) = s.gaps[i];
        s.gaps.remove(i);
        add_range(&mut s.gaps, gs, seq);
        add_range(&mut s.gaps, seq + 1, ge);
    } else {
        counts.duplicated += 1;
    }
}

/// One consumer's view of one partition.
#[derive(Debug, Clone)]
pub struct PartitionVerifier {
    run_id: u32,
    check: Check,
    streams: HashMap<u32, Seen>,
    /// Each record of the batch being walked: its offset and identity
    /// (kept between batches so that a walk allocates nothing).
    walked: Vec<(u64, Option<ValueId>)>,
    /// The shifts of the filler lengths seen (a run has at most three).
    shifts: Vec<(usize, Arc<Shift>)>,
    pub counts: VerifyCounts,
}

/// What one record's walk learned for latency: the batch's send time.
pub struct BatchSeen {
    pub records: u64,
    pub send_ns: Option<u64>,
}

impl PartitionVerifier {
    pub fn new(run_id: u32, check: Check) -> PartitionVerifier {
        PartitionVerifier {
            run_id,
            check,
            streams: HashMap::new(),
            walked: Vec::new(),
            shifts: Vec::new(),
            counts: VerifyCounts::default(),
        }
    }

    /// Counts one record whose value checked out as `id` (None: corrupt).
    fn record(&mut self, id: Option<ValueId>) -> Option<u64> {
        self.counts.checked += 1;
        let Some(id) = id else {
            self.counts.corrupt += 1;
            return None;
        };
        if id.run_id != self.run_id {
            self.counts.checked -= 1;
            self.counts.foreign += 1;
            return None;
        }
        let s = self.streams.entry(id.producer).or_default();
        see(s, id.seq, &mut self.counts);
        Some(id.send_ns)
    }

    /// Counts sequences `start..end` of `producer` as received, all at once
    /// when they are all new (the usual case), else one at a time.
    fn records_seen(&mut self, producer: u32, start: u64, end: u64) {
        self.counts.checked += end - start;
        let s = self.streams.entry(producer).or_default();
        if start >= s.next {
            add_range(&mut s.gaps, s.next, start);
            s.next = end;
            return;
        }
        for seq in start..end {
            see(s, seq, &mut self.counts);
        }
    }

    /// Walks the batches of one fetch reply that start at `from_offset`,
    /// checking every record. Returns the offset after the last record and
    /// each batch's record count and send time, or an error when the bytes
    /// cannot be walked (a header that does not parse: the next batch's
    /// position is unknown, so the rest of the reply counts as corrupt).
    pub fn batches(&mut self, bytes: &[u8], from_offset: u64, mut each: impl FnMut(BatchSeen)) -> Result<u64, String> {
        let (mut at, mut next) = (0usize, from_offset);
        while at < bytes.len() {
            let info = match batch::parse_header(&bytes[at..]) {
                Ok(i) if at + i.batch_bytes <= bytes.len() => i,
                Ok(_) | Err(_) => {
                    self.counts.corrupt += 1;
                    return Err(format!("unparseable batch at byte {at} of a reply starting at offset {from_offset}"));
                }
            };
            let one = &bytes[at..at + info.batch_bytes];
            at += info.batch_bytes;
            let base = info.base_offset as u64;
            let last = base + info.last_offset_delta as u64;
            if last < next {
                continue; // a batch the reply repeats from before our offset
            }
            let skip = next.saturating_sub(base);
            let seen = match self.check {
                Check::EachRecord => self.each_record(one, &info, &mut next),
                Check::Batch => self.batch_only(one, &info, skip),
            };
            match seen {
                Some(seen) => each(seen),
                None => {
                    let n = last + 1 - next.max(base);
                    self.counts.checked += n;
                    self.counts.corrupt += n;
                }
            }
            next = next.max(last + 1);
        }
        Ok(next)
    }

    /// Validates `one` as `batch::validate` does (CRC, header, every record
    /// decoded, their count) in the same walk that checks each record at or
    /// past `next`; what the walk found counts only once the whole batch
    /// validated. None: the batch is corrupt. The batch CRC is computed along
    /// the walk, each value's filler folded in from its own CRC (see
    /// [`Shift`]), so every byte is read once for both checksums.
    fn each_record(&mut self, one: &[u8], info: &batch::BatchInfo, next: &mut u64) -> Option<BatchSeen> {
        if !header_ok(info) {
            return None;
        }
        let base = info.base_offset as u64;
        let mut walked = std::mem::take(&mut self.walked);
        walked.clear();
        // The CRC of nothing so far is 0; crc32c_append goes on from it.
        let (mut crc, mut crc_at, mut decoded) = (0u32, batch::CRC_FROM, 0usize);
        for rec in batch::records(one) {
            let Ok(rec) = rec else {
                self.walked = walked;
                return None;
            };
            decoded += 1;
            let offset = base + rec.offset_delta as u64;
            let id = match rec.value {
                Some(v) if v.len() >= VALUE_HEADER_BYTES => {
                    let filler_at = v.as_ptr() as usize - one.as_ptr() as usize + VALUE_HEADER_BYTES;
                    let filler = &v[VALUE_HEADER_BYTES..];
                    let filler_crc = crc32c::crc32c(filler);
                    let shift = self.shift(filler.len());
                    // Values follow each other (the decoder walks in order),
                    // so the bytes since the last filler are never negative.
                    let Some(between) = one.get(crc_at..filler_at) else {
                        self.walked = walked;
                        return None;
                    };
                    crc = shift.apply(crc32c::crc32c_append(crc, between)) ^ filler_crc;
                    crc_at = filler_at + filler.len();
                    (offset >= *next).then(|| check_value_folded(v, filler_crc, &shift))
                }
                // Too short to carry an identity: its bytes join the CRC with the next.
                _ => (offset >= *next).then_some(None),
            };
            if let Some(id) = id {
                walked.push((offset, id));
            }
        }
        let whole = decoded == info.records_count as usize && crc32c::crc32c_append(crc, &one[crc_at..]) == info.crc;
        let mut seen = BatchSeen { records: 0, send_ns: None };
        for &(offset, id) in walked.iter().filter(|_| whole) {
            if offset < *next {
                continue; // an offset the batch repeats (only a broken batch does)
            }
            let send_ns = self.record(id);
            seen.records += 1;
            seen.send_ns = seen.send_ns.or(send_ns);
            *next = offset + 1;
        }
        self.walked = walked;
        whole.then_some(seen)
    }

    /// The shift of `len` bytes, from this verifier's few.
    fn shift(&mut self, len: usize) -> Arc<Shift> {
        if let Some((_, s)) = self.shifts.iter().find(|(l, _)| *l == len) {
            return s.clone();
        }
        let s = shift_of(len);
        self.shifts.push((len, s.clone()));
        s
    }

    /// Checks `one`'s CRC and header and its first record's value, and
    /// counts its records but the first `skip` (already seen) by the
    /// sequences they were stamped with. None: the batch is corrupt.
    fn batch_only(&mut self, one: &[u8], info: &batch::BatchInfo, skip: u64) -> Option<BatchSeen> {
        if !header_ok(info) || crc32c::crc32c(&one[batch::CRC_FROM..]) != info.crc {
            return None;
        }
        let first = batch::records(one).next()?.ok()?;
        let id = first.value.and_then(check_value)?;
        let n = info.records_count as u64;
        if id.run_id != self.run_id {
            self.counts.foreign += n - skip.min(n);
            return Some(BatchSeen { records: 0, send_ns: None });
        }
        if skip < n {
            self.records_seen(id.producer, id.seq + skip, id.seq + n);
        }
        Some(BatchSeen { records: n - skip.min(n), send_ns: Some(id.send_ns) })
    }

    /// Counts acknowledged sequences never seen: `acked` maps producer ->
    /// the ranges acknowledged in this partition.
    pub fn finish(&mut self, acked: &HashMap<u32, Ranges>) {
        let empty = Seen::default();
        for (producer, ranges) in acked {
            self.counts.lost += self.streams.get(producer).unwrap_or(&empty).missing(ranges);
        }
    }

    /// As [`PartitionVerifier::finish`], for a read that started at a partition's
    /// earliest offset after retention dropped its head: each producer's
    /// stream in the partition lost a prefix there (its records lie at
    /// rising offsets), so acknowledged sequences before the first one
    /// seen are `expired`, not lost; a gap after it is still lost. (A
    /// stream with nothing seen expired whole: what retention dropped is
    /// not told apart from a loss of a whole stream.)
    pub fn finish_expiring(&mut self, acked: &HashMap<u32, Ranges>) {
        for (producer, ranges) in acked {
            let mut seen = self.streams.get(producer).cloned().unwrap_or_default();
            // The first sequence seen: before it, the dropped head.
            let head = match seen.gaps.first() {
                _ if seen.next == 0 => u64::MAX,
                Some(&(0, end)) => {
                    seen.gaps.remove(0);
                    end
                }
                _ => 0,
            };
            let expired: u64 = ranges.iter().map(|&(s, e)| e.min(head).saturating_sub(s)).sum();
            let later: Ranges = ranges.iter().filter(|r| r.1 > head).map(|&(s, e)| (s.max(head), e)).collect();
            self.counts.expired += expired;
            self.counts.lost += seen.missing(&later);
        }
    }

    #[cfg(test)]
    fn saw(&self, producer: u32, seq: u64) -> bool {
        self.streams.get(&producer).is_some_and(|s| s.contains(seq))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::records::BatchTemplate;

    fn stamped(t: &BatchTemplate, first_seq: u64, base_offset: u64) -> Vec<u8> {
        let mut b = t.bytes.clone();
        t.stamp(&mut b, first_seq, 1, 1);
        batch::set_base_offset(&mut b, base_offset);
        b
    }

    const BOTH: [Check; 2] = [Check::EachRecord, Check::Batch];

    // Proves a clean in-order stream counts every record and nothing else,
    // at either depth of check.
    #[test]
    fn clean_stream_is_clean() {
        let t = BatchTemplate::new(9, 1, &crate::records::BatchShape::uniform(4, 40));
        for check in BOTH {
            let mut v = PartitionVerifier::new(9, check);
            let mut reply = stamped(&t, 0, 0);
            reply.extend(stamped(&t, 4, 4));
            let mut batches = 0;
            assert_eq!(v.batches(&reply, 0, |b| batches += b.records), Ok(8));
            assert_eq!(batches, 8);
            v.finish(&HashMap::from([(1, vec![(0, 8)])]));
            assert_eq!(v.counts, VerifyCounts { checked: 8, ..Default::default() }, "{check:?}");
            assert!(v.counts.is_clean());
        }
    }

    // Proves a read-back after retention counts the dropped head of each
    // stream as expired, not lost, and a gap after what it saw still as lost.
    #[test]
    fn a_dropped_head_expires_and_a_later_gap_is_lost() {
        let t = BatchTemplate::new(9, 1, &crate::records::BatchShape::uniform(4, 40));
        for check in BOTH {
            let mut v = PartitionVerifier::new(9, check);
            v.batches(&stamped(&t, 4, 40), 40, |_| {}).unwrap();
            v.finish_expiring(&HashMap::from([(1, vec![(0, 8)])]));
            assert_eq!((v.counts.expired, v.counts.lost, v.counts.checked), (4, 0, 4), "{check:?}");
            assert!(v.counts.is_clean());

            let mut v = PartitionVerifier::new(9, check);
            v.batches(&stamped(&t, 4, 40), 40, |_| {}).unwrap();
            v.finish_expiring(&HashMap::from([(1, vec![(0, 12)]), (2, vec![(0, 3)])]));
            assert_eq!((v.counts.expired, v.counts.lost), (4 + 3, 4), "{check:?}: 8..12 acknowledged, not seen");
        }
    }

    // Proves loss, duplication, reordering and corruption each trigger, for
    // a consumer that checks each record and for one that checks batches.
    #[test]
    fn each_anomaly_is_detected() {
        let t = BatchTemplate::new(9, 1, &crate::records::BatchShape::uniform(4, 40));
        for check in BOTH {
            // Lost: seqs 4..8 acknowledged, never delivered.
            let mut v = PartitionVerifier::new(9, check);
            v.batches(&stamped(&t, 0, 0), 0, |_| {}).unwrap();
            v.finish(&HashMap::from([(1, vec![(0, 8)])]));
            assert_eq!(v.counts.lost, 4, "{check:?}");
            assert!(!v.counts.is_clean());

            // Duplicated: the same batch twice at different offsets.
            let mut v = PartitionVerifier::new(9, check);
            let mut reply = stamped(&t, 0, 0);
            reply.extend(stamped(&t, 0, 4));
            v.batches(&reply, 0, |_| {}).unwrap();
            assert_eq!(v.counts.duplicated, 4, "{check:?}");

            // Reordered: 4..8 before 0..4; then nothing is lost.
            let mut v = PartitionVerifier::new(9, check);
            let mut reply = stamped(&t, 4, 0);
            reply.extend(stamped(&t, 0, 4));
            v.batches(&reply, 0, |_| {}).unwrap();
            assert_eq!(v.counts.reordered, 4, "{check:?}");
            assert!(v.saw(1, 0) && v.saw(1, 7));
            v.finish(&HashMap::from([(1, vec![(0, 8)])]));
            assert_eq!(v.counts.lost, 0);

            // Corrupt: a flipped byte in a value, in a header field, or in
            // a record's framing fails the batch CRC.
            for at in [t.bytes.len() - 5, 30, batch::BATCH_HEADER_BYTES + 1] {
                let mut v = PartitionVerifier::new(9, check);
                let mut b = stamped(&t, 0, 0);
                b[at] ^= 0x10;
                v.batches(&b, 0, |_| {}).unwrap();
                assert_eq!((v.counts.corrupt, v.counts.checked), (4, 4), "{check:?}, byte {at}");
                v.finish(&HashMap::from([(1, vec![(0, 4)])]));
                assert!(!v.counts.is_clean());
            }
        }
        // A value damaged with its batch CRC recomputed (a broker that
        // rebuilt batches) fails the record checksum: the each-record
        // check's job (one consumer per partition does it).
        let mut v = PartitionVerifier::new(9, Check::EachRecord);
        let mut b = stamped(&t, 0, 0);
        let n = b.len();
        b[n - 5] ^= 0x10;
        batch::recompute_crc(&mut b);
        v.batches(&b, 0, |_| {}).unwrap();
        assert_eq!((v.counts.corrupt, v.counts.checked), (1, 4));
        // A record's framing damaged under a recomputed CRC: the walk
        // fails, so none of the batch counts as seen (as `batch::validate`).
        let mut v = PartitionVerifier::new(9, Check::EachRecord);
        let mut b = stamped(&t, 0, 0);
        b[batch::BATCH_HEADER_BYTES] = 0x7f;
        batch::recompute_crc(&mut b);
        assert!(batch::validate(&b, usize::MAX).is_err());
        v.batches(&b, 0, |_| {}).unwrap();
        assert_eq!((v.counts.corrupt, v.counts.checked), (4, 4));
        assert!(!v.saw(1, 0));
        // Rebuilt around a damaged first value, even the batch check sees it.
        let mut v = PartitionVerifier::new(9, Check::Batch);
        let mut b = stamped(&t, 0, 0);
        b[batch::BATCH_HEADER_BYTES + 10] ^= 0x10;
        batch::recompute_crc(&mut b);
        v.batches(&b, 0, |_| {}).unwrap();
        assert_eq!(v.counts.corrupt, 4);
    }

    // Proves both depths catch every single-byte change in a batch's CRC
    // range (header fields, record framing, value headers, checksums,
    // fillers), with values of mixed lengths, and that a clean batch's
    // CRC computed along the walk is the batch's own.
    #[test]
    fn every_damaged_byte_is_caught() {
        let shape = crate::records::BatchShape::exact(4096, 100).unwrap();
        assert!(shape.value_bytes.iter().any(|&v| v != 100), "mixed lengths: {}", shape.describe());
        let t = BatchTemplate::new(9, 1, &shape);
        let n = t.records() as u64;
        let clean = stamped(&t, 0, 0);
        for check in BOTH {
            let mut v = PartitionVerifier::new(9, check);
            assert_eq!(v.batches(&clean, 0, |_| {}), Ok(n));
            assert_eq!(v.counts, VerifyCounts { checked: n, ..Default::default() }, "{check:?}");
            for at in batch::CRC_FROM..clean.len() {
                let mut b = clean.clone();
                b[at] ^= 0x01;
                let mut v = PartitionVerifier::new(9, check);
                let _ = v.batches(&b, 0, |_| {});
                assert!(v.counts.corrupt > 0, "{check:?}: a flip at byte {at} went unseen: {:?}", v.counts);
            }
        }
    }

    // Proves a batch check counts only the records at or past the offset it
    // asked from, as the each-record check does, and skips other runs'.
    #[test]
    fn batch_check_skips_what_it_saw_and_other_runs() {
        let t = BatchTemplate::new(9, 1, &crate::records::BatchShape::uniform(4, 40));
        for check in BOTH {
            let mut v = PartitionVerifier::new(9, check);
            let mut records = 0;
            assert_eq!(v.batches(&stamped(&t, 0, 10), 12, |b| records += b.records), Ok(14));
            assert_eq!((records, v.counts.checked), (2, 2), "{check:?}");
            assert!(v.saw(1, 2) && v.saw(1, 3) && !v.saw(1, 1));
            v.finish(&HashMap::from([(1, vec![(2, 4)])]));
            assert!(v.counts.is_clean());
            let other = BatchTemplate::new(8, 1, &crate::records::BatchShape::uniform(4, 40));
            let mut v = PartitionVerifier::new(9, check);
            v.batches(&stamped(&other, 0, 0), 0, |_| {}).unwrap();
            assert_eq!((v.counts.foreign, v.counts.checked), (4, 0), "{check:?}");
            assert!(v.counts.is_clean());
        }
    }

    // Proves range bookkeeping merges out-of-order additions.
    #[test]
    fn ranges_merge() {
        let mut r = Ranges::new();
        add_range(&mut r, 10, 20);
        add_range(&mut r, 0, 5);
        add_range(&mut r, 5, 10);
        add_range(&mut r, 30, 40);
        add_range(&mut r, 20, 20);
        assert_eq!(r, vec![(0, 20), (30, 40)]);
        let s = Seen { next: 35, gaps: vec![(12, 14)] };
        assert_eq!(s.missing(&r), 2 + 5);
    }
}
