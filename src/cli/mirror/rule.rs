//! The pure parts of `strom mirror`: which source records the copy keeps,
//! the header each copy carries, and where a mirror resumes, read from the
//! destination partition's last record. No I/O here, so each rule and the
//! claim that a restart neither repeats nor skips a record are unit-tested.
use strom::partition::producers::seq_add;
use strom::wire::batch::BatchInfo;

/// The header every mirrored record carries: its offset in the source
/// partition, 8 bytes little-endian (as named index values are). The
/// destination's last record thus says where the mirror stopped, and the
/// acknowledged produce that wrote it is the commit of that position.
pub const FROM_HEADER: &str = "strom.mirror.from";
/// Bytes of [`FROM_HEADER`]'s value.
pub const FROM_VALUE_BYTES: usize = 8;
/// The idempotent-producer id of every batch the mirror writes. With the
/// sequence numbers continuing from the destination's last batch, a batch
/// of an earlier run still in flight on the destination when a new run
/// starts is either the new run's duplicate or refused as out of order,
/// never stored beside it. Far above the ids the Kafka listener hands out
/// (counting up from 0), so no Kafka producer shares it.
pub const PRODUCER_ID: i64 = i64::MAX - 0x6d69_7272; // "mirr"

/// What the copy keeps of a partition's records.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rule {
    /// The records whose source offset is N-1 modulo N (every record with N = 1).
    Every(u64),
    /// The last record of each run of consecutive records whose timestamps
    /// fall in the same bucket of this many milliseconds.
    PerMs(u64),
}

/// What the rules look at in a record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Seen {
    pub offset: u64,
    pub timestamp_ms: i64,
}

impl Rule {
    /// Whether `this` is kept, given the record after it in the partition
    /// (`None`: not known yet). `None` when that cannot be told yet: a time
    /// bucket's last record is known only once a record of another bucket
    /// follows it. Depends on nothing but the two records, so a mirror that
    /// starts again after its last written record decides as one that ran on.
    pub fn keeps(self, this: Seen, next: Option<Seen>) -> Option<bool> {
        match self {
            Rule::Every(n) => Some(this.offset % n == n - 1),
            Rule::PerMs(ms) => next.map(|next| bucket(ms, next.timestamp_ms) != bucket(ms, this.timestamp_ms)),
        }
    }

    /// The rule as a phrase, for messages.
    pub fn describe(self) -> String {
        match self {
            Rule::Every(1) => "every record".into(),
            Rule::Every(n) => format!("every {n}th record (source offsets {} modulo {n})", n - 1),
            Rule::PerMs(ms) => format!("the last record of each {ms} ms"),
        }
    }
}

/// The bucket of a timestamp: buckets are `ms` wide and start at the epoch
/// (floored, so a timestamp before it has a bucket of its own too).
pub fn bucket(ms: u64, timestamp_ms: i64) -> i64 {
    // The parser holds --per-ms to 1..=i64::MAX.
    timestamp_ms.div_euclid(i64::try_from(ms).unwrap_or(i64::MAX))
}

/// The header value naming source offset `offset`.
pub fn from_value(offset: u64) -> [u8; FROM_VALUE_BYTES] {
    offset.to_le_bytes()
}

/// Where a mirror of one partition starts, and how it numbers its batches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Resume {
    /// The source offset to subscribe from; `None`: the earliest retained.
    pub source_offset: Option<u64>,
    pub producer_epoch: i16,
    /// The sequence number of the next record written.
    pub next_sequence: i32,
    /// The destination offset the next record written gets.
    pub dest_offset: u64,
}

/// The destination partition's last record, as the resume needs it.
#[derive(Debug, Clone, Copy)]
pub struct LastRecord<'a> {
    pub offset: u64,
    /// The value of its [`FROM_HEADER`]: `None` without one, `Some(None)` null.
    pub from: Option<Option<&'a [u8]>>,
    /// The header of the batch that holds it.
    pub batch: &'a BatchInfo,
}

/// Where to resume, from the destination partition's last record (`None`
/// with the partition empty) and its end offset: after the source offset
/// that record names, with the next sequence number of its batch's
/// producer. Refuses a destination the mirror cannot have written.
pub fn resume(last: Option<LastRecord<'_>>, dest_end: u64) -> Result<Resume, String> {
    let Some(last) = last else {
        if dest_end > 0 {
            return Err(format!(
                "the destination partition is empty but has had {dest_end} records (retention removed them): where the mirror stopped is lost; mirror into a new topic"
            ));
        }
        return Ok(Resume { source_offset: None, producer_epoch: 0, next_sequence: 0, dest_offset: 0 });
    };
    let from = match last.from {
        None => {
            return Err(format!(
                "the destination's last record (offset {}) has no {FROM_HEADER} header: it was not written by strom mirror; mirror into a topic only strom mirror writes",
                last.offset
            ));
        }
        Some(v) => v.and_then(|v| <[u8; FROM_VALUE_BYTES]>::try_from(v).ok()).map(u64::from_le_bytes).ok_or_else(|| {
            format!(
                "the destination's last record (offset {}) has a {FROM_HEADER} header that is not {FROM_VALUE_BYTES} bytes",
                last.offset
            )
        })?,
    };
    let b = last.batch;
    if b.producer_id != PRODUCER_ID || b.base_sequence < 0 {
        return Err(format!(
            "the destination's last record (offset {}) carries {FROM_HEADER} but its batch has producer id {}, not strom mirror's: another writer copied it there",
            last.offset, b.producer_id
        ));
    }
    let source_offset = from.checked_add(1).ok_or("the destination's last record names source offset 2^64 - 1")?;
    // The record's place in its batch: the batch may hold records after the
    // one asked for only if the partition grew meanwhile, and then those
    // records' own sequence numbers follow on from its.
    let delta = i64::try_from(last.offset).ok().and_then(|o| o.checked_sub(b.base_offset)).and_then(|d| i32::try_from(d).ok());
    let delta = delta.filter(|&d| d >= 0 && d <= b.last_offset_delta).ok_or("the destination's last record is not in the batch read")?;
    Ok(Resume {
        source_offset: Some(source_offset),
        producer_epoch: b.producer_epoch,
        next_sequence: seq_add(b.base_sequence, delta.saturating_add(1)),
        dest_offset: last.offset + 1,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seen(offset: u64, timestamp_ms: i64) -> Seen {
        Seen { offset, timestamp_ms }
    }

    /// The source offsets `rule` keeps of `records` when they arrive in
    /// pushes cut at `cuts` (the first record of each push after the first).
    /// A record whose verdict waits for the next push is held, as the
    /// mirror holds it.
    fn run(rule: Rule, records: &[Seen], cuts: &[usize]) -> Vec<u64> {
        let mut kept = Vec::new();
        let mut held: Option<Seen> = None;
        let mut bounds = vec![0];
        bounds.extend(cuts.iter().copied().filter(|&c| c > 0 && c < records.len()));
        bounds.push(records.len());
        for push in bounds.windows(2).map(|w| &records[w[0]..w[1]]) {
            for (i, &r) in push.iter().enumerate() {
                if let Some(h) = held.take()
                    && rule.keeps(h, Some(r)) == Some(true)
                {
                    kept.push(h.offset);
                }
                match rule.keeps(r, push.get(i + 1).copied()) {
                    Some(true) => kept.push(r.offset),
                    Some(false) => {}
                    None => held = Some(r),
                }
            }
        }
        kept
    }

    /// A deterministic generator (xorshift64*), so a failure replays.
    fn next(state: &mut u64) -> u64 {
        *state ^= *state >> 12;
        *state ^= *state << 25;
        *state ^= *state >> 27;
        state.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    // Proves: --every N keeps the source offsets N-1, 2N-1, ... whatever the
    // timestamps, and --every 1 keeps all.
    #[test]
    fn every_keeps_offsets_n_minus_1_modulo_n() {
        let records: Vec<Seen> = (0..10).map(|o| seen(o, 1000 - o as i64)).collect();
        assert_eq!(run(Rule::Every(3), &records, &[]), vec![2, 5, 8]);
        assert_eq!(run(Rule::Every(1), &records, &[4]), (0..10).collect::<Vec<_>>());
        // A partition whose first records were removed keeps the same phase.
        assert_eq!(run(Rule::Every(4), &records[5..], &[]), vec![7]);
    }

    // Proves: --per-ms keeps the last record of each run of one bucket, and
    // holds the partition's last record until a later one shows its bucket
    // has ended; a timestamp going back starts a run of its own; buckets
    // before the epoch are floored.
    #[test]
    fn per_ms_keeps_the_last_record_of_each_bucket() {
        let ts = [0, 5, 9, 10, 19, 20, 35, 36, 12, 40, -1, -10, -11, 50];
        let records: Vec<Seen> = ts.iter().enumerate().map(|(o, &t)| seen(o as u64, t)).collect();
        // Buckets of 10: 0 0 0 1 1 2 3 3 1 4 -1 -1 -2 5.
        assert_eq!(run(Rule::PerMs(10), &records, &[]), vec![2, 4, 5, 7, 8, 9, 11, 12]);
        assert_eq!(bucket(10, -1), -1);
        assert_eq!(bucket(10, -10), -1);
        assert_eq!(bucket(10, -11), -2);
        assert_eq!(Rule::PerMs(10).keeps(records[13], None), None, "the last record waits for the next");
    }

    // Proves: however records are cut into pushes, the same are kept.
    #[test]
    fn push_boundaries_change_nothing() {
        let mut state = 0x9e37_79b9_7f4a_7c15;
        for rule in [Rule::Every(1), Rule::Every(3), Rule::PerMs(7), Rule::PerMs(1)] {
            let mut t = 0i64;
            let records: Vec<Seen> = (0..300)
                .map(|o| {
                    t += (next(&mut state) % 5) as i64;
                    seen(o, t)
                })
                .collect();
            let whole = run(rule, &records, &[]);
            for _ in 0..50 {
                let mut cuts: Vec<usize> = (0..next(&mut state) % 20).map(|_| (next(&mut state) % 300) as usize).collect();
                cuts.sort_unstable();
                cuts.dedup();
                assert_eq!(run(rule, &records, &cuts), whole, "{rule:?} cut at {cuts:?}");
            }
        }
    }

    // Proves the claim a restart rests on: a mirror stopped after any record
    // (having written what it kept up to there, holding the rest) that
    // starts again after the last record it wrote, knowing nothing else,
    // writes exactly what one that never stopped would have: nothing twice,
    // nothing skipped.
    #[test]
    fn resuming_after_the_last_written_record_neither_repeats_nor_skips() {
        let mut state = 42;
        for rule in [Rule::Every(1), Rule::Every(2), Rule::Every(5), Rule::PerMs(3), Rule::PerMs(10)] {
            let mut t = 1_700_000_000_000i64;
            let records: Vec<Seen> = (0..200)
                .map(|o| {
                    // Mostly forward, sometimes back: the rules must not need order.
                    t += (next(&mut state) % 6) as i64 - 1;
                    seen(o, t)
                })
                .collect();
            let whole = run(rule, &records, &[]);
            for stop in 0..records.len() {
                // What the stopped run wrote: the kept records it could decide.
                let written = run(rule, &records[..=stop], &[]);
                let resume_at = written.last().map_or(0, |&o| o as usize + 1);
                let mut after = run(rule, &records[resume_at..], &[]);
                let mut all = written.clone();
                all.append(&mut after);
                assert_eq!(all, whole, "{rule:?} stopped after offset {stop}, resumed at {resume_at}");
            }
        }
    }

    fn batch(base_offset: i64, last_offset_delta: i32, producer_id: i64, base_sequence: i32) -> BatchInfo {
        let mut b = strom::wire::batch::parse_header(&strom::wire::batch::BatchBuilder::new(0).finish()).unwrap();
        b.base_offset = base_offset;
        b.last_offset_delta = last_offset_delta;
        b.producer_id = producer_id;
        b.producer_epoch = 3;
        b.base_sequence = base_sequence;
        b
    }

    // Proves: the resume position is the source offset after the one the
    // destination's last record names, with the sequence after that
    // record's (wrapping as Kafka's do), and an empty destination starts
    // from the source's earliest record.
    #[test]
    fn resume_continues_after_the_last_record() {
        assert_eq!(resume(None, 0), Ok(Resume { source_offset: None, producer_epoch: 0, next_sequence: 0, dest_offset: 0 }));
        let v = from_value(41);
        let b = batch(10, 4, PRODUCER_ID, 100);
        let r = resume(Some(LastRecord { offset: 14, from: Some(Some(&v)), batch: &b }), 15).unwrap();
        assert_eq!(r, Resume { source_offset: Some(42), producer_epoch: 3, next_sequence: 105, dest_offset: 15 });
        let b = batch(10, 4, PRODUCER_ID, i32::MAX - 1);
        let r = resume(Some(LastRecord { offset: 12, from: Some(Some(&v)), batch: &b }), 15).unwrap();
        assert_eq!(r.next_sequence, 1, "sequences wrap from i32::MAX to 0");
    }

    // Proves: a destination the mirror cannot have written, or whose
    // position was lost, is refused with a sentence saying why.
    #[test]
    fn resume_refuses_what_the_mirror_did_not_write() {
        let v = from_value(7);
        let ours = batch(0, 0, PRODUCER_ID, 0);
        let last = |from, batch| Some(LastRecord { offset: 0, from, batch });
        assert!(resume(None, 5).unwrap_err().contains("retention removed them"));
        assert!(resume(last(None, &ours), 1).unwrap_err().contains("not written by strom mirror"));
        assert!(resume(last(Some(None), &ours), 1).unwrap_err().contains("not 8 bytes"));
        assert!(resume(last(Some(Some(&v[..7])), &ours), 1).unwrap_err().contains("not 8 bytes"));
        let theirs = batch(0, 0, -1, -1);
        assert!(resume(last(Some(Some(&v)), &theirs), 1).unwrap_err().contains("another writer"));
        let elsewhere = batch(5, 0, PRODUCER_ID, 0);
        assert!(resume(last(Some(Some(&v)), &elsewhere), 1).unwrap_err().contains("not in the batch"));
    }
}
