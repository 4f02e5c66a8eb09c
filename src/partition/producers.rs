//! A partition's idempotent producers: per producer id, its epoch and its
//! last few batches' sequence numbers and offsets, so that a batch sent
//! again (a client's retry after a lost answer) is answered with the
//! offsets it was given the first time and never stored twice, and a batch
//! after a gap is refused. Kafka's broker keeps the same per producer id
//! (its `ProducerStateManager`); the rules here are Kafka's:
//!
//! - same epoch, `(first_seq, last_seq)` equal to one of the kept batches:
//!   a duplicate, answered with that batch's offsets;
//! - same epoch, `first_seq` one past the newest kept batch's `last_seq`
//!   (wrapping from `i32::MAX` to 0): the next batch, stored;
//! - a newer epoch with `first_seq` 0: the producer was reset, its old
//!   batches are forgotten;
//! - an older epoch: refused (a fenced, older instance of the producer);
//! - anything else: a gap, refused as out of order;
//! - a producer id the partition does not know: any sequence is taken. Its
//!   state may have been forgotten (the bound below), or never existed
//!   here (a new producer), and refusing it would stop that producer for good.
//!
//! Bounded: at most [`PRODUCERS_MAX`] producer ids per partition, each with
//! its last [`BATCHES_KEPT`] visible (durable) batches and those after them
//! still in commits in flight (which the log's write buffers bound): a
//! rewind for a full disk takes those back, and the producer must then
//! still know the batches before them. Past the bound the least recently
//! used producer is forgotten (its next batch is then taken whatever its
//! sequence: a retry of its last batch could be stored twice). A batch
//! whose header has producer id -1 (every native client) or a negative
//! base sequence is not idempotent: it is neither checked nor kept.
use std::collections::{HashMap, VecDeque};

use crate::error::{Result, StromError};
use crate::wire::batch::BatchInfo;

/// Producer ids kept per partition; past it the least recently used goes.
pub const PRODUCERS_MAX: usize = 1024;
/// Batches kept per producer id: Kafka's own figure, and the most in-flight
/// requests per connection an idempotent client may have (librdkafka and
/// the Java client cap `max.in.flight` at 5 with idempotence on), so every
/// batch a client may retry is still known.
pub const BATCHES_KEPT: usize = 5;

/// A batch's idempotence fields, from its header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProducerBatch {
    pub producer_id: i64,
    pub epoch: i16,
    pub first_seq: i32,
    pub last_seq: i32,
}

impl ProducerBatch {
    /// The idempotence fields of a batch, None when it is not idempotent
    /// (producer id below 0, or no sequence).
    pub fn of(info: &BatchInfo) -> Option<ProducerBatch> {
        if info.producer_id < 0 || info.base_sequence < 0 || info.last_offset_delta < 0 {
            return None;
        }
        let last_seq = seq_add(info.base_sequence, info.last_offset_delta);
        Some(ProducerBatch { producer_id: info.producer_id, epoch: info.producer_epoch, first_seq: info.base_sequence, last_seq })
    }
}

/// `seq + n` as Kafka counts sequences: from `i32::MAX` on to 0 (both at least 0).
pub fn seq_add(seq: i32, n: i32) -> i32 {
    ((i64::from(seq) + i64::from(n)) % (i64::from(i32::MAX) + 1)) as i32
}

/// A batch kept for a producer: its sequences and the offsets it was given.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeptBatch {
    pub first_seq: i32,
    pub last_seq: i32,
    pub base_offset: u64,
    /// One past its last offset.
    pub end_offset: u64,
}

/// One producer id's state in a partition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProducerState {
    pub producer_id: i64,
    pub epoch: i16,
    /// Its last batches of `epoch`, oldest first: at most [`BATCHES_KEPT`]
    /// visible ones, then those not yet visible.
    pub batches: VecDeque<KeptBatch>,
}

/// What a batch of a producer is to the partition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Store it (and then [`Producers::record`] it).
    Append,
    /// Sent before: answer with this batch's offsets, store nothing.
    Duplicate(KeptBatch),
}

#[derive(Debug, Clone, Default)]
pub struct Producers {
    states: HashMap<i64, (ProducerState, u64)>,
    /// Ticks on every use: the least recently used state has the lowest.
    clock: u64,
    /// Producer ids forgotten for the bound, since the owner last took the count.
    pub forgotten: u64,
}

impl Producers {
    pub fn len(&self) -> usize {
        self.states.len()
    }

    pub fn is_empty(&self) -> bool {
        self.states.is_empty()
    }

    /// Whether `b` is to be stored, a duplicate, or refused (nothing changes).
    pub fn check(&self, b: &ProducerBatch) -> Result<Verdict> {
        let Some((s, _)) = self.states.get(&b.producer_id) else { return Ok(Verdict::Append) };
        if b.epoch < s.epoch {
            return Err(StromError::InvalidProducerEpoch { producer_id: b.producer_id, epoch: b.epoch, current: s.epoch });
        }
        if b.epoch > s.epoch {
            return match b.first_seq {
                0 => Ok(Verdict::Append),
                got => Err(StromError::OutOfOrderSequence { producer_id: b.producer_id, expected: 0, got }),
            };
        }
        if let Some(k) = s.batches.iter().find(|k| k.first_seq == b.first_seq && k.last_seq == b.last_seq) {
            return Ok(Verdict::Duplicate(*k));
        }
        match s.batches.back() {
            Some(last) if seq_add(last.last_seq, 1) != b.first_seq => {
                Err(StromError::OutOfOrderSequence { producer_id: b.producer_id, expected: seq_add(last.last_seq, 1), got: b.first_seq })
            }
            _ => Ok(Verdict::Append),
        }
    }

    /// Keeps `b`, stored at `base_offset..end_offset`, when the partition's
    /// offsets below `visible_end` are visible: after a [`Verdict::Append`],
    /// and for each batch recovery reads back (which the log holds, so it is
    /// not checked). Returns whether a producer was forgotten for the bound.
    pub fn record(&mut self, b: &ProducerBatch, base_offset: u64, end_offset: u64, visible_end: u64) -> bool {
        self.clock += 1;
        let forgot = !self.states.contains_key(&b.producer_id) && self.states.len() >= PRODUCERS_MAX && self.forget_oldest();
        let fresh = ProducerState { producer_id: b.producer_id, epoch: b.epoch, batches: VecDeque::new() };
        let (s, used) = self.states.entry(b.producer_id).or_insert((fresh, 0));
        *used = self.clock;
        if b.epoch != s.epoch {
            // A new epoch starts the producer over (an older one is never
            // recorded live; read back from a log, the newest seen wins).
            s.epoch = b.epoch;
            s.batches.clear();
        }
        s.batches.push_back(KeptBatch { first_seq: b.first_seq, last_seq: b.last_seq, base_offset, end_offset });
        // Offsets only grow, so the visible batches are a prefix.
        let visible = s.batches.iter().take_while(|k| k.end_offset <= visible_end).count();
        s.batches.drain(..visible.saturating_sub(BATCHES_KEPT));
        forgot
    }

    fn forget_oldest(&mut self) -> bool {
        let Some(oldest) = self.states.iter().min_by_key(|(_, (_, used))| *used).map(|(id, _)| *id) else { return false };
        self.states.remove(&oldest);
        self.forgotten += 1;
        true
    }

    /// Forgets the batches given offsets at or past `end` (taken back by a
    /// rewind for a full disk: they were never stored), and the producers
    /// left with none (their next batch is taken whatever its sequence).
    pub fn truncate_to(&mut self, end: u64) {
        self.states.retain(|_, (s, _)| {
            s.batches.retain(|k| k.end_offset <= end);
            !s.batches.is_empty()
        });
    }

    /// The producers as of offset `visible_end` (their last [`BATCHES_KEPT`]
    /// batches below it; producers with none left out), least recently used
    /// first: a checkpoint's.
    pub fn durable(&self, visible_end: u64) -> Vec<ProducerState> {
        let mut by_use: Vec<&(ProducerState, u64)> = self.states.values().collect();
        by_use.sort_by_key(|(_, used)| *used);
        by_use
            .into_iter()
            .filter_map(|(s, _)| {
                let visible = s.batches.iter().take_while(|k| k.end_offset <= visible_end).count();
                let batches: VecDeque<KeptBatch> = s.batches.range(visible.saturating_sub(BATCHES_KEPT)..visible).copied().collect();
                (!batches.is_empty()).then_some(ProducerState { producer_id: s.producer_id, epoch: s.epoch, batches })
            })
            .collect()
    }

    /// Takes a checkpoint's producers, least recently used first.
    pub fn restore(&mut self, states: &[ProducerState]) {
        self.states.clear();
        for s in states.iter().take(PRODUCERS_MAX) {
            self.clock += 1;
            self.states.insert(s.producer_id, (s.clone(), self.clock));
        }
    }

    pub fn invariants(&self) {
        assert!(self.states.len() <= PRODUCERS_MAX, "{} producers", self.states.len());
        for (id, (s, used)) in &self.states {
            assert_eq!(*id, s.producer_id);
            assert!(*used <= self.clock);
            assert!(!s.batches.is_empty(), "producer {id}: no batches");
            assert!(s.batches.iter().zip(s.batches.iter().skip(1)).all(|(a, b)| a.end_offset <= b.base_offset), "producer {id}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pb(producer_id: i64, epoch: i16, first_seq: i32, records: i32) -> ProducerBatch {
        ProducerBatch { producer_id, epoch, first_seq, last_seq: seq_add(first_seq, records - 1) }
    }

    /// Records `b` as if stored at the next offset of `next`, returning its offsets.
    fn store(t: &mut Producers, b: ProducerBatch, next: &mut u64) -> (u64, u64) {
        assert_eq!(t.check(&b), Ok(Verdict::Append), "{b:?}");
        let n = (i64::from(b.last_seq) - i64::from(b.first_seq)).rem_euclid(i64::from(i32::MAX) + 1) as u64 + 1;
        let (base, end) = (*next, *next + n);
        // Visible at once: durable before the next is sent.
        t.record(&b, base, end, end);
        *next = end;
        t.invariants();
        (base, end)
    }

    // Proves each of the last 5 batches is recognised as a duplicate with
    // its own offsets, the sixth back no longer is (it is then a gap), and
    // the next sequence is taken.
    #[test]
    fn duplicates_of_the_last_five() {
        let (mut t, mut next) = (Producers::default(), 100);
        let stored: Vec<_> = (0..6).map(|i| store(&mut t, pb(7, 0, i * 3, 3), &mut next)).collect();
        for (i, &(base, end)) in stored.iter().enumerate().skip(1) {
            let dup = t.check(&pb(7, 0, i as i32 * 3, 3)).unwrap();
            assert_eq!(
                dup,
                Verdict::Duplicate(KeptBatch { first_seq: i as i32 * 3, last_seq: i as i32 * 3 + 2, base_offset: base, end_offset: end })
            );
        }
        assert_eq!(t.check(&pb(7, 0, 0, 3)), Err(StromError::OutOfOrderSequence { producer_id: 7, expected: 18, got: 0 }));
        // Same first sequence, other length: not the same batch.
        assert!(t.check(&pb(7, 0, 15, 2)).is_err());
        assert_eq!(t.check(&pb(7, 0, 18, 1)), Ok(Verdict::Append));
    }

    // Proves a gap is refused as out of order naming both sequences, an
    // older epoch as fenced, and a newer epoch is taken only from sequence 0,
    // after which the old epoch's batches are forgotten.
    #[test]
    fn gaps_and_epochs() {
        let (mut t, mut next) = (Producers::default(), 0);
        store(&mut t, pb(1, 3, 0, 2), &mut next);
        assert_eq!(t.check(&pb(1, 3, 5, 1)), Err(StromError::OutOfOrderSequence { producer_id: 1, expected: 2, got: 5 }));
        assert_eq!(t.check(&pb(1, 2, 2, 1)), Err(StromError::InvalidProducerEpoch { producer_id: 1, epoch: 2, current: 3 }));
        assert_eq!(t.check(&pb(1, 4, 7, 1)), Err(StromError::OutOfOrderSequence { producer_id: 1, expected: 0, got: 7 }));
        store(&mut t, pb(1, 4, 0, 1), &mut next);
        // The old epoch's batch is no duplicate now, and is fenced.
        assert!(matches!(t.check(&pb(1, 3, 0, 2)), Err(StromError::InvalidProducerEpoch { .. })));
        assert_eq!(t.check(&pb(1, 4, 1, 1)), Ok(Verdict::Append));
        // Another producer id knows nothing of these: any sequence is taken.
        assert_eq!(t.check(&pb(2, 0, 1234, 1)), Ok(Verdict::Append));
    }

    // Proves sequences wrap from i32::MAX to 0 as Kafka's do, within a
    // batch and between batches.
    #[test]
    fn sequences_wrap() {
        let (mut t, mut next) = (Producers::default(), 0);
        let b = pb(9, 0, i32::MAX - 1, 4);
        assert_eq!(b.last_seq, 1);
        let (base, end) = store(&mut t, b, &mut next);
        assert_eq!(end - base, 4);
        assert!(matches!(t.check(&b), Ok(Verdict::Duplicate(k)) if k.base_offset == base));
        store(&mut t, pb(9, 0, 2, 1), &mut next);
        let mut t2 = Producers::default();
        store(&mut t2, pb(9, 0, i32::MAX, 1), &mut next);
        assert_eq!(t2.check(&pb(9, 0, 0, 1)), Ok(Verdict::Append));
        assert!(t2.check(&pb(9, 0, 1, 1)).is_err());
    }

    // Proves the bound: the 1,025th producer forgets the least recently
    // used one (counted), not one used since.
    #[test]
    fn bound_forgets_the_least_recently_used() {
        let (mut t, mut next) = (Producers::default(), 0);
        for id in 0..PRODUCERS_MAX as i64 {
            store(&mut t, pb(id, 0, 0, 1), &mut next);
        }
        // Producer 0 is used again: producer 1 is now the oldest.
        store(&mut t, pb(0, 0, 1, 1), &mut next);
        assert_eq!(t.forgotten, 0);
        assert!(t.record(&pb(5000, 0, 0, 1), next, next + 1, next + 1));
        t.invariants();
        assert_eq!((t.len(), t.forgotten), (PRODUCERS_MAX, 1));
        assert!(matches!(t.check(&pb(0, 0, 0, 1)), Ok(Verdict::Duplicate(_))));
        // Producer 1 was forgotten: its duplicate is taken as new.
        assert_eq!(t.check(&pb(1, 0, 0, 1)), Ok(Verdict::Append));
        assert!(matches!(t.check(&pb(2, 0, 0, 1)), Ok(Verdict::Duplicate(_))));
    }

    // Proves a checkpoint holds only batches below the visible end, least
    // recently used first, restores to the same verdicts, and a rewind
    // forgets what it took back.
    #[test]
    fn durable_restore_and_truncate() {
        let (mut t, mut next) = (Producers::default(), 0);
        store(&mut t, pb(1, 0, 0, 2), &mut next);
        store(&mut t, pb(2, 0, 0, 1), &mut next);
        store(&mut t, pb(1, 0, 2, 1), &mut next);
        let kept = t.durable(3);
        assert_eq!(kept.iter().map(|s| (s.producer_id, s.batches.len())).collect::<Vec<_>>(), vec![(2, 1), (1, 1)]);
        let mut r = Producers::default();
        r.restore(&kept);
        r.invariants();
        assert!(matches!(r.check(&pb(1, 0, 0, 2)), Ok(Verdict::Duplicate(k)) if k.base_offset == 0));
        assert_eq!(r.check(&pb(1, 0, 2, 1)), Ok(Verdict::Append));
        t.truncate_to(2);
        t.invariants();
        assert_eq!(t.len(), 1);
        assert_eq!(t.check(&pb(1, 0, 2, 1)), Ok(Verdict::Append));
    }

    // Proves batches not yet visible are kept beyond the last 5, so a
    // rewind that takes all of them back leaves the producer its last 5
    // visible batches (a retry of the last acknowledged one is still a
    // duplicate), and once visible only the last 5 stay.
    #[test]
    fn batches_in_flight_are_kept_until_visible() {
        let mut t = Producers::default();
        for i in 0..6 {
            t.record(&pb(4, 0, i, 1), i as u64, i as u64 + 1, 6);
        }
        for i in 6..12 {
            t.record(&pb(4, 0, i, 1), i as u64, i as u64 + 1, 6);
        }
        t.invariants();
        assert_eq!(t.durable(6)[0].batches.iter().map(|k| k.first_seq).collect::<Vec<_>>(), [1, 2, 3, 4, 5]);
        t.truncate_to(6);
        assert!(matches!(t.check(&pb(4, 0, 5, 1)), Ok(Verdict::Duplicate(k)) if k.base_offset == 5));
        assert_eq!(t.check(&pb(4, 0, 6, 1)), Ok(Verdict::Append));
        t.record(&pb(4, 0, 6, 1), 6, 7, 7);
        assert_eq!(t.durable(7)[0].batches.len(), BATCHES_KEPT);
        assert_eq!(t.check(&pb(4, 0, 1, 1)), Err(StromError::OutOfOrderSequence { producer_id: 4, expected: 7, got: 1 }));
    }
}
