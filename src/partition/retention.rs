//! Per-partition retention: which of a log's segments still hold data some
//! partition must keep.
//!
//! A partition remembers, per stretch of its data that starts in one segment
//! (a [`Span`]), the bytes of its frames there and the running max batch
//! timestamp at the last of them. Data of a partition is *live* while its
//! topic exists (a deleted topic's partitions are gone from the core, so
//! their data is never live), it is within the topic's time limit (its
//! running max timestamp is at least `now - age`), and within its bytes
//! limit counted from the partition's end (fewer than `bytes` of the
//! partition's data lie after it). A segment may be deleted once no
//! partition has live data in it (see `docs/RETENTION.md`).
//!
//! Time is judged by the batches' max timestamp (the producer's clock, as
//! Kafka's `retention.ms` does by default), not by the write time: it is
//! stored in every frame and every index entry, so it survives a restart,
//! where a write time would restart from the reopening.
use super::Partition;

/// A topic's effective limits; None is no limit.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Retention {
    pub age_ms: Option<u64>,
    pub bytes: Option<u64>,
}

/// A partition's data starting in one segment: its frames' bytes and the
/// running max timestamp at its last batch (an upper bound of its own).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Span {
    /// Log position of the partition's first frame in this stretch.
    pub first_pos: u64,
    /// Frame bytes (header and payload) of the partition's batches here;
    /// 0 when unknown (rebuilt from a checkpoint's index entries).
    pub bytes: u64,
    pub max_ts_ms: i64,
}

/// Which of the segments starting at `segment_starts` (sorted, the log's
/// segments oldest first) hold live data of some partition in `parts`.
///
/// Liveness only grows towards a partition's end (the bytes after a span
/// shrink, its running max timestamp grows), so each partition's spans are
/// walked newest first and the walk stops at the first dead one: the cost
/// is O(live spans x log(segments)), and dead spans go with their segments.
pub fn live_segments<'a>(parts: impl Iterator<Item = &'a Partition>, segment_starts: &[u64], now_ms: i64) -> Vec<bool> {
    let mut live = vec![false; segment_starts.len()];
    for p in parts {
        let mut bytes_after = 0u64;
        for span in p.spans.iter().rev() {
            if !span_is_live(span, bytes_after, p.retention, now_ms) {
                break;
            }
            let i = segment_starts.partition_point(|&s| s <= span.first_pos);
            if let Some(i) = i.checked_sub(1) {
                live[i] = true;
            }
            bytes_after = bytes_after.saturating_add(span.bytes);
        }
    }
    live
}

/// The liveness rule for one span, given the partition's bytes after it.
pub fn span_is_live(span: &Span, bytes_after: u64, limits: Retention, now_ms: i64) -> bool {
    let young = limits.age_ms.is_none_or(|age| span.max_ts_ms >= now_ms.saturating_sub(age.min(i64::MAX as u64) as i64));
    let near_end = limits.bytes.is_none_or(|max| bytes_after < max);
    young && near_end
}

#[cfg(test)]
mod tests {
    use super::*;

    fn part(retention: Retention, spans: &[(u64, u64, i64)]) -> Partition {
        let mut p = Partition::new(0, 0);
        p.retention = retention;
        for &(first_pos, bytes, max_ts_ms) in spans {
            p.spans.push_back(Span { first_pos, bytes, max_ts_ms });
        }
        p
    }

    // Proves the rule: no limit keeps everything; age judges the running max
    // timestamp; bytes count from the partition's end.
    #[test]
    fn span_rule() {
        let s = Span { first_pos: 0, bytes: 100, max_ts_ms: 1_000 };
        assert!(span_is_live(&s, u64::MAX, Retention::default(), i64::MAX));
        let age = Retention { age_ms: Some(500), bytes: None };
        assert!(span_is_live(&s, 0, age, 1_500), "exactly at the limit is kept");
        assert!(!span_is_live(&s, 0, age, 1_501));
        let bytes = Retention { age_ms: None, bytes: Some(300) };
        assert!(span_is_live(&s, 299, bytes, 0));
        assert!(!span_is_live(&s, 300, bytes, 0));
        let both = Retention { age_ms: Some(500), bytes: Some(300) };
        assert!(!span_is_live(&s, 0, both, 2_000), "either limit drops it");
        assert!(!span_is_live(&s, 300, both, 1_000));
    }

    // Proves a segment is live while any partition keeps data in it, and
    // that two partitions of different retention sharing segments keep
    // them for the longer one.
    #[test]
    fn segments_live_for_any_partition() {
        let starts = [0, 1_000, 2_000, 3_000];
        // Short: 200 bytes kept; data in every segment, 100 bytes each.
        let short = part(Retention { age_ms: None, bytes: Some(200) }, &[(10, 100, 1), (1_010, 100, 2), (2_010, 100, 3), (3_010, 100, 4)]);
        assert_eq!(live_segments([&short].into_iter(), &starts, 0), vec![false, false, true, true]);
        // Long: kept for 10 s; its data in segment 0 is 5 s old at now = 6000.
        let long = part(Retention { age_ms: Some(10_000), bytes: None }, &[(20, 50, 1_000)]);
        assert_eq!(live_segments([&short, &long].into_iter(), &starts, 6_000), vec![true, false, true, true]);
        assert_eq!(live_segments([&short, &long].into_iter(), &starts, 11_001), vec![false, false, true, true]);
        // A deleted topic's partition is not among `parts`: nothing is live.
        assert_eq!(live_segments(std::iter::empty(), &starts, 0), vec![false; 4]);
    }

    // Measures one retention pass's liveness judgement at scale: 10,000
    // partitions with data in each of 64 segments (640,000 spans), half of
    // them past a bytes limit. Prints the time; asserts only the outcome.
    #[test]
    fn pass_cost_at_ten_thousand_partitions() {
        let (partitions, segments) = (10_000u64, 64u64);
        let starts: Vec<u64> = (0..segments).map(|s| s << 30).collect();
        let parts: Vec<Partition> = (0..partitions)
            .map(|pid| {
                let spans: Vec<(u64, u64, i64)> = (0..segments).map(|s| ((s << 30) + pid * 4096, 4096, s as i64)).collect();
                let limit = if pid % 2 == 0 { Some(4096 * 8) } else { None };
                part(Retention { age_ms: None, bytes: limit }, &spans)
            })
            .collect();
        let started = std::time::Instant::now();
        let live = live_segments(parts.iter(), &starts, 0);
        let elapsed = started.elapsed();
        println!("retention pass over {partitions} partitions x {segments} segments: {elapsed:?}");
        // The odd partitions have no limit: every segment stays live.
        assert!(live.iter().all(|&l| l));
        let limited = live_segments(parts.iter().step_by(2), &starts, 0);
        assert_eq!(limited.iter().filter(|&&l| l).count(), 8, "the newest 8 segments hold the last 8 x 4 KiB");
    }
}
