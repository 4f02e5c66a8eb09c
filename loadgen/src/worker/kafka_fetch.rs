//! A tail consumer over Kafka: one Fetch (v11) of every partition it still
//! reads, long-polling, and each partition's batches checked as a native
//! Fetch's are ([`super::take_batches`]).
//!
//! One Fetch at a time per connection, not [`super::FETCH_SLOTS`] of one
//! partition each: the listener answers a connection's requests one at a
//! time, in order, so a second would only queue behind the first's long
//! poll, and a partition with nothing new would hold the others up.
use super::{Consumer, EMPTY_ROUND_PAUSE_NS, FETCH_BYTES_MAX, FETCH_WAIT_MS, Role, Worker, take_batches};
use crate::clock::now_ns;
use crate::hist::ns_to_us;
use crate::kafka;

/// Queues a Fetch of every partition `c` still reads, unless one is
/// outstanding.
pub(super) fn plan(c: &mut Consumer, next_rid: &mut u64, topic: &str, now: u64) {
    if !c.pending.is_empty() {
        return;
    }
    let parts: Vec<(u32, u64)> = c.parts.iter().filter(|p| !p.done).map(|p| (p.partition, p.next)).collect();
    if parts.is_empty() {
        return;
    }
    let rid = *next_rid;
    *next_rid += 1;
    kafka::fetch_request(&mut c.out, rid as i32, topic, &parts, FETCH_WAIT_MS, FETCH_BYTES_MAX);
    for p in c.parts.iter_mut().filter(|p| !p.done) {
        p.outstanding = true;
    }
    // The part index is unused: the response names its partitions.
    c.pending.insert(rid, (usize::MAX, now));
}

impl Worker {
    /// Consumer `i`'s Fetch was answered: every partition it asked for is
    /// free again; each one's batches are checked, each error counted.
    /// An undecodable frame is returned as an error (the caller drops the
    /// connection, as for a native one).
    pub(super) fn kafka_fetched(&mut self, i: usize, frame: &[u8]) -> Result<(), String> {
        let (correlation_id, error_code, answers) = kafka::decode_fetch_response(frame)?;
        let now = now_ns();
        self.last_reply_ns = now;
        let (shared, out) = (&self.shared, &mut self.out);
        let Role::C(c) = &mut self.conns[i].role else { unreachable!("only consumers fetch") };
        let Some((_, sent_ns)) = c.pending.remove(&(correlation_id as u64)) else {
            *out.errors.entry("reply to no request".into()).or_default() += 1;
            return Ok(());
        };
        for p in &mut c.parts {
            p.outstanding = false;
        }
        let measure = c.spec.measure && shared.in_window(now);
        if measure {
            out.lat.fetch_us.saturating_record(ns_to_us(now.saturating_sub(sent_ns)));
            out.consumed.requests += 1;
        }
        let mut failed = error_code != 0;
        if failed {
            *out.errors.entry(format!("Kafka error code {error_code}")).or_default() += 1;
        }
        for a in answers {
            let Some(part) = c.parts.iter_mut().find(|p| i64::from(p.partition) == i64::from(a.partition)) else {
                *out.errors.entry("Kafka fetch answer for a partition not asked".into()).or_default() += 1;
                continue;
            };
            if a.error_code != 0 {
                *out.errors.entry(format!("Kafka error code {}", a.error_code)).or_default() += 1;
                failed = true;
            } else if !a.batches.is_empty() {
                let high_watermark = u64::try_from(a.high_watermark).unwrap_or(0);
                take_batches(out, shared, part, a.batches, high_watermark, (measure, now));
            }
        }
        // After an error, wait a moment rather than ask again at once.
        if failed {
            c.pause_until_ns = now + EMPTY_ROUND_PAUSE_NS;
        }
        Ok(())
    }
}
