//! Reading back what was acknowledged: a walk over fetched batches and a
//! check of every record against the acknowledgements the producers kept.
use strom::wire::batch;

use crate::records::check_value;

/// One acknowledged Produce: `records` records at `base_offset..`, being
/// batch `batch` of producer `producer` (see [`crate::records::producer_batch`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ack {
    pub partition: u32,
    pub base_offset: u64,
    pub records: u64,
    pub producer: u32,
    pub batch: u32,
}

impl Ack {
    fn end_offset(&self) -> u64 {
        self.base_offset + self.records
    }
}

/// Walks concatenated batches as a read returned them, calling
/// `each(offset, value)` for every record at or past `from_offset`, in
/// order. Every record of a batch that fails validation (CRC included) is
/// passed with `None`, as is a null value. Returns the offset after the last
/// record walked, or why the bytes cannot be walked further (a header that
/// does not parse leaves the next batch's position unknown).
pub fn walk_batches(bytes: &[u8], from_offset: u64, mut each: impl FnMut(u64, Option<&[u8]>)) -> Result<u64, String> {
    let (mut at, mut next_offset) = (0, from_offset);
    while at < bytes.len() {
        let info = batch::parse_header(&bytes[at..]).map_err(|e| format!("batch at byte {at}: {e}"))?;
        let Some(one) = bytes.get(at..at + info.batch_bytes) else {
            return Err(format!("batch at byte {at} is {} bytes, only {} were read", info.batch_bytes, bytes.len() - at));
        };
        let (Ok(base), Ok(delta)) = (u64::try_from(info.base_offset), u64::try_from(info.last_offset_delta)) else {
            return Err(format!("batch at byte {at}: offsets {} + {}", info.base_offset, info.last_offset_delta));
        };
        let last = base + delta;
        at += info.batch_bytes;
        if last < next_offset {
            continue;
        }
        if batch::validate(one, usize::MAX).is_ok() {
            for rec in batch::records(one) {
                // validate decoded every record already; an error here would
                // mean the two disagree, and the offsets left are reported damaged below.
                let Ok(rec) = rec else { break };
                let offset = base + rec.offset_delta as u64;
                if offset >= next_offset {
                    each(offset, rec.value);
                    next_offset = offset + 1;
                }
            }
        }
        for offset in next_offset.max(base)..=last {
            each(offset, None);
        }
        next_offset = next_offset.max(last + 1);
    }
    Ok(next_offset)
}

/// What the read-back found in one partition.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Tally {
    /// Records acknowledged to the producers.
    pub acked: u64,
    /// Acknowledged records read back at their offset with their value.
    pub intact: u64,
    /// Acknowledged offsets that were never read back.
    pub lost: u64,
    /// Acknowledged offsets read back with another value, or damaged.
    pub corrupt: u64,
    /// Records read in the checked span that no acknowledgement covers
    /// (from a failed Produce, or another writer).
    pub unacked: u64,
    /// The first problem seen, for the report.
    pub first_problem: Option<String>,
}

impl Tally {
    pub fn add(&mut self, other: &Tally) {
        self.acked += other.acked;
        self.intact += other.intact;
        self.lost += other.lost;
        self.corrupt += other.corrupt;
        self.unacked += other.unacked;
        if self.first_problem.is_none() {
            self.first_problem.clone_from(&other.first_problem);
        }
    }

    fn problem(&mut self, why: impl FnOnce() -> String) {
        if self.first_problem.is_none() {
            self.first_problem = Some(why());
        }
    }
}

/// Checks the records of one partition, fed in offset order, against its
/// acknowledgements.
pub struct PartitionCheck<'a> {
    partition: u32,
    /// Sorted by base offset, not overlapping (checked by `new`).
    acks: &'a [Ack],
    records_per_batch: u64,
    value_bytes: usize,
    /// The offset the next observed record should have.
    next_offset: u64,
    tally: Tally,
}

impl<'a> PartitionCheck<'a> {
    /// `acks` must be sorted by base offset. Two acknowledgements that
    /// share an offset mean the server gave one offset twice: that is
    /// counted corrupt here, since only one of the records can be there.
    pub fn new(partition: u32, acks: &'a [Ack], from_offset: u64, records_per_batch: usize, value_bytes: usize) -> Self {
        let mut tally = Tally { acked: acks.iter().map(|a| a.records).sum(), ..Tally::default() };
        for pair in acks.windows(2) {
            let overlap = pair[0].end_offset().saturating_sub(pair[1].base_offset).min(pair[1].records);
            if overlap > 0 {
                tally.corrupt += overlap;
                tally.problem(|| format!("partition {partition}: offset {} was acknowledged twice", pair[1].base_offset));
            }
        }
        PartitionCheck { partition, acks, records_per_batch: records_per_batch as u64, value_bytes, next_offset: from_offset, tally }
    }

    /// Where reading should stop: one past the last acknowledged offset.
    pub fn end_offset(&self) -> u64 {
        self.acks.iter().map(Ack::end_offset).max().unwrap_or(0)
    }

    /// The offset the next record should have.
    pub fn next_offset(&self) -> u64 {
        self.next_offset
    }

    /// Records a problem found outside the records themselves (a failed read).
    pub fn note(&mut self, why: String) {
        self.tally.problem(|| why);
    }

    /// One record read back; `None` is a damaged record or a null value.
    pub fn observe(&mut self, offset: u64, value: Option<&[u8]>) {
        if offset < self.next_offset {
            let p = self.partition;
            let expected = self.next_offset;
            self.tally.problem(|| format!("partition {p}: offset {offset} read after {}", expected - 1));
            return;
        }
        self.missing(self.next_offset, offset);
        self.next_offset = offset + 1;
        let Some(ack) = self.covering(offset) else {
            self.tally.unacked += 1;
            return;
        };
        let seq = u64::from(ack.batch) * self.records_per_batch + (offset - ack.base_offset);
        let id = value.filter(|v| v.len() == self.value_bytes).and_then(check_value);
        if id == Some((ack.producer, seq)) {
            self.tally.intact += 1;
        } else {
            self.tally.corrupt += 1;
            let p = self.partition;
            self.tally
                .problem(|| format!("partition {p}: offset {offset} should hold producer {} record {seq}, holds {id:?}", ack.producer));
        }
    }

    /// Ends the check: acknowledged offsets past the last record read are lost.
    pub fn finish(mut self) -> Tally {
        self.missing(self.next_offset, u64::MAX);
        self.tally
    }

    /// Counts the acknowledged offsets in `from..to` as lost: nothing was read there.
    fn missing(&mut self, from: u64, to: u64) {
        if from >= to {
            return;
        }
        let first = self.acks.partition_point(|a| a.end_offset() <= from);
        let lost: u64 =
            self.acks[first..].iter().take_while(|a| a.base_offset < to).map(|a| a.end_offset().min(to) - a.base_offset.max(from)).sum();
        if lost > 0 {
            self.tally.lost += lost;
            let (p, to) = (self.partition, to.min(self.end_offset()));
            self.tally.problem(|| format!("partition {p}: acknowledged offsets in {from}..{to} were not read back"));
        }
    }

    fn covering(&self, offset: u64) -> Option<Ack> {
        let i = self.acks.partition_point(|a| a.end_offset() <= offset);
        self.acks.get(i).filter(|a| a.base_offset <= offset).copied()
    }
}

#[cfg(test)]
mod tests {
    use strom::wire::batch::set_base_offset;

    use super::*;
    use crate::records::{producer_batch, value, value_bytes};

    const PER_BATCH: usize = 3;
    const MSG: usize = 20;

    fn ack(base_offset: u64, producer: u32, batch: u32) -> Ack {
        Ack { partition: 0, base_offset, records: PER_BATCH as u64, producer, batch }
    }

    fn stored(producer: usize, index: usize, base_offset: u64) -> Vec<u8> {
        let mut b = producer_batch(producer, index, PER_BATCH, MSG, 1_700_000_000_000);
        set_base_offset(&mut b, base_offset);
        b
    }

    fn check(acks: &[Ack], bytes: &[u8]) -> Tally {
        let mut c = PartitionCheck::new(0, acks, 0, PER_BATCH, value_bytes(MSG));
        walk_batches(bytes, 0, |o, v| c.observe(o, v)).unwrap();
        c.finish()
    }

    // Proves: records read back as acknowledged are all intact, and a
    // record with no acknowledgement is counted apart, not as a failure.
    #[test]
    fn acknowledged_records_read_back_are_intact() {
        let bytes = [stored(0, 0, 0), stored(1, 5, 3), stored(0, 1, 6)].concat();
        let t = check(&[ack(0, 0, 0), ack(3, 1, 5)], &bytes);
        assert_eq!(t, Tally { acked: 6, intact: 6, unacked: 3, ..Tally::default() });
    }

    // Proves: an acknowledged batch missing from the middle or the end is
    // lost, one with another producer's records is corrupt, and one whose
    // bytes were damaged is corrupt while the batches after it still count.
    #[test]
    fn lost_wrong_and_damaged_records_are_found() {
        let acks = [ack(0, 0, 0), ack(3, 0, 1), ack(6, 0, 2), ack(9, 0, 3), ack(12, 0, 4)];
        let mut damaged = stored(0, 2, 6);
        let last = damaged.len() - 1;
        damaged[last] ^= 1;
        let bytes = [stored(0, 0, 0), stored(7, 1, 3), damaged, stored(0, 4, 12)].concat();
        let t = check(&acks, &bytes);
        assert_eq!((t.acked, t.intact, t.corrupt, t.lost, t.unacked), (15, 6, 6, 3, 0));
        assert!(t.first_problem.unwrap().contains("offset 3 should hold producer 0 record 3"));
        let t = check(&acks, &[stored(0, 0, 0), stored(0, 1, 3)].concat());
        assert_eq!((t.intact, t.lost), (6, 9));
    }

    // Proves: two acknowledgements of one offset are reported, and a read
    // that starts mid-batch yields only the records from there on.
    #[test]
    fn double_acks_and_mid_batch_reads() {
        let t = check(&[ack(0, 0, 0), ack(2, 0, 1)], &stored(0, 0, 0));
        assert!(t.corrupt >= 1, "{t:?}");
        assert!(t.first_problem.unwrap().contains("acknowledged twice"));
        let mut seen = Vec::new();
        let next = walk_batches(&stored(0, 0, 10), 11, |o, v| seen.push((o, v.map(<[u8]>::to_vec)))).unwrap();
        assert_eq!(next, 13);
        assert_eq!(seen, vec![(11, Some(value(0, 1, MSG))), (12, Some(value(0, 2, MSG)))]);
    }
}
