//! The shared checker (tests/harness/checker/mod.rs) judged on fabricated histories:
//! a clean history passes, and each anomaly kind is counted when, and only
//! when, it is there. No server runs here: reads are fed as batches.
mod harness;

use harness::checker::{Checker, Outcome, Reader, batch_for, classify, parse_payload, payload};
use strom::client::{ClientError, ProduceAck};
use strom::proto::ErrorCode;
use strom::wire::batch;

const T: &str = "t";

fn extra(seq: u64) -> u32 {
    (seq % 50) as u32
}

/// A stored batch of `producer`'s records `first..first + count`, at `base`.
fn stored(producer: u32, first: u64, count: u32, base: u64) -> Vec<u8> {
    let mut b = batch_for(producer, first, count, extra);
    batch::set_base_offset(&mut b, base);
    b
}

/// Sends `count` records of `producer` from `first` to partition 0 and acks them at `base`.
fn acked(c: &Checker, producer: u32, first: u64, count: u32, base: u64) {
    let s = c.record_send(T, 0, producer, first, count);
    c.record_ack(&s, base);
}

/// A final read of partition 0 returning `batches`.
fn final_read(c: &Checker, batches: &[u8]) {
    c.begin_final(T, 0);
    c.observe_fetch(Reader::Final, T, 0, 0, batches);
}

/// The only nonzero anomaly counts of `c`'s report.
fn anomalies(c: &Checker) -> Vec<(&'static str, u64)> {
    let r = c.report();
    println!("{r}");
    r.anomalies().into_iter().filter(|&(_, n)| n > 0).collect()
}

// Proves: payloads verify alone, and any change to one (a flipped byte, a
// cut, a byte more, a different id) makes it not verify.
#[test]
fn payloads_check_alone() {
    for (p, s, e) in [(0, 0, 0), (7, 123_456, 33), ((1 << 23) - 1, (1 << 40) - 1, 1000)] {
        let v = payload(p, s, e);
        assert_eq!(parse_payload(&v).map(|id| (id.producer, id.seq)), Some((p, s)));
        for i in 0..v.len() {
            let mut bad = v.clone();
            bad[i] ^= 0x10;
            // Flipping a byte of the id may give another valid id only if the
            // filler also matched it, which it does not.
            assert_eq!(parse_payload(&bad), None, "flip at byte {i} of {p}/{s}/{e} went unnoticed");
        }
        assert_eq!(parse_payload(&v[..v.len() - 1]), None);
        let mut longer = v.clone();
        longer.push(0);
        assert_eq!(parse_payload(&longer), None);
    }
}

// Proves: a history where everything acknowledged is read back in place,
// consumers read consecutively, and an indeterminate batch was resent and
// stored twice, is clean; the duplicate and the unacknowledged survivor are
// reported as allowed.
#[test]
fn clean_history_is_clean() {
    let c = Checker::new();
    acked(&c, 0, 0, 10, 0);
    let s = c.record_send(T, 0, 1, 0, 5);
    c.record_indeterminate(&s);
    let s = c.record_send(T, 0, 1, 0, 5);
    c.record_ack(&s, 15);
    let refused = c.record_send(T, 0, 2, 0, 3);
    c.record_outcome(&refused, Outcome::Failed);
    let mut log = stored(0, 0, 10, 0);
    log.extend(stored(1, 0, 5, 10));
    log.extend(stored(1, 0, 5, 15));
    c.consumer_seek(9, T, 0, 0);
    c.observe_fetch(Reader::Consumer(9), T, 0, 0, &log);
    c.consumer_seek(8, T, 0, 12);
    assert_eq!(c.observe_fetch(Reader::Consumer(8), T, 0, 12, &log), 20);
    final_read(&c, &log);
    let r = c.report();
    r.assert_clean();
    assert_eq!((r.acked, r.survived_unacked, r.resent_duplicates, r.final_records), (15, 0, 5, 20));
}

// Proves: an acknowledged record missing from the final read, or at another
// offset than acknowledged, counts as lost; a final read that stops short
// of the acknowledged end loses the rest.
#[test]
fn lost_is_detected() {
    let c = Checker::new();
    acked(&c, 0, 0, 4, 0);
    acked(&c, 0, 4, 4, 4);
    final_read(&c, &stored(0, 0, 4, 0));
    assert_eq!(anomalies(&c), [("lost", 4)]);

    let c = Checker::new();
    acked(&c, 0, 0, 4, 0);
    acked(&c, 1, 0, 4, 4);
    // Both batches are there, in the other order.
    let mut log = stored(1, 0, 4, 0);
    log.extend(stored(0, 0, 4, 4));
    final_read(&c, &log);
    assert_eq!(anomalies(&c), [("lost", 8)]);
}

// Proves: a batch whose CRC fails, and a value that is not the payload it
// claims (CRC recomputed, as a buggy writer would), count as corrupt, and
// the records after a corrupt batch are still checked.
#[test]
fn corrupt_is_detected() {
    let c = Checker::new();
    acked(&c, 0, 0, 3, 0);
    acked(&c, 0, 3, 3, 3);
    let mut first = stored(0, 0, 3, 0);
    let n = first.len();
    first[n - 5] ^= 1;
    let mut log = first;
    log.extend(stored(0, 3, 3, 3));
    final_read(&c, &log);
    // Three corrupt records, which are also three lost acknowledged ones.
    assert_eq!(anomalies(&c), [("lost", 3), ("corrupt", 3)]);

    let c = Checker::new();
    acked(&c, 0, 0, 3, 0);
    let mut b = stored(0, 0, 3, 0);
    let n = b.len();
    b[n - 2] ^= 1;
    batch::recompute_crc(&mut b);
    final_read(&c, &b);
    assert_eq!(anomalies(&c), [("lost", 1), ("corrupt", 1)]);
}

// Proves: an offset that returns different records in two reads counts as
// changed, whether both reads were final reads (across a restart) or one
// was a consumer's.
#[test]
fn changed_offset_is_detected() {
    let c = Checker::new();
    let s = c.record_send(T, 0, 0, 0, 2);
    c.record_indeterminate(&s);
    let s = c.record_send(T, 0, 1, 0, 2);
    c.record_indeterminate(&s);
    final_read(&c, &stored(0, 0, 2, 0));
    final_read(&c, &stored(1, 0, 2, 0));
    assert_eq!(anomalies(&c), [("changed", 2)]);

    let c = Checker::new();
    let s = c.record_send(T, 0, 0, 0, 2);
    c.record_indeterminate(&s);
    let s = c.record_send(T, 0, 1, 0, 2);
    c.record_indeterminate(&s);
    c.observe_fetch(Reader::Consumer(0), T, 0, 0, &stored(0, 0, 2, 0));
    final_read(&c, &stored(1, 0, 2, 0));
    assert_eq!(anomalies(&c), [("changed", 2)]);
}

// Proves: offsets missing below the highest offset the final read returned
// count as holes, and so does a final read that stalls below the high
// watermark.
#[test]
fn holes_are_detected() {
    let c = Checker::new();
    acked(&c, 0, 0, 2, 0);
    acked(&c, 0, 2, 2, 5);
    let mut log = stored(0, 0, 2, 0);
    log.extend(stored(0, 2, 2, 5));
    final_read(&c, &log);
    assert_eq!(anomalies(&c), [("holes", 3)]);

    let c = Checker::new();
    acked(&c, 0, 0, 2, 0);
    final_read(&c, &stored(0, 0, 2, 0));
    c.final_stalled(T, 0, 2, 7);
    assert_eq!(anomalies(&c), [("holes", 5)]);
}

// Proves: an acknowledged record stored twice counts as duplicated when it
// was sent once, and is allowed (reported) when an indeterminate send of it
// was resent; a third copy of a record sent twice is a duplicate again.
#[test]
fn duplicates_are_detected() {
    let c = Checker::new();
    acked(&c, 0, 0, 3, 0);
    let mut log = stored(0, 0, 3, 0);
    log.extend(stored(0, 0, 3, 3));
    final_read(&c, &log);
    assert_eq!(anomalies(&c), [("duplicated", 3)]);

    let c = Checker::new();
    let s = c.record_send(T, 0, 0, 0, 3);
    c.record_indeterminate(&s);
    let s = c.record_send(T, 0, 0, 0, 3);
    c.record_ack(&s, 6);
    let mut log = stored(0, 0, 3, 0);
    log.extend(stored(0, 0, 3, 3));
    log.extend(stored(0, 0, 3, 6));
    final_read(&c, &log);
    assert_eq!(anomalies(&c), [("duplicated", 3)]);
    assert_eq!(c.report().resent_duplicates, 0);
}

// Proves: a record a consumer read that the final read no longer has (the
// log after a crash ends before it) counts as vanished: it was served
// before it was durable. The record was never acknowledged, so nothing is lost.
#[test]
fn vanished_is_detected() {
    let c = Checker::new();
    acked(&c, 0, 0, 2, 0);
    let s = c.record_send(T, 0, 0, 2, 2);
    c.record_indeterminate(&s);
    let mut log = stored(0, 0, 2, 0);
    log.extend(stored(0, 2, 2, 2));
    c.observe_fetch(Reader::Consumer(0), T, 0, 0, &log);
    final_read(&c, &stored(0, 0, 2, 0));
    assert_eq!(anomalies(&c), [("vanished", 2)]);
}

// Proves: a consumer whose next record is past, or before, the one after
// its last counts as skipped or went back; a seek makes a jump legal.
#[test]
fn consumer_skips_and_rewinds_are_detected() {
    let c = Checker::new();
    acked(&c, 0, 0, 10, 0);
    let log = stored(0, 0, 10, 0);
    c.consumer_seek(1, T, 0, 0);
    c.observe_fetch(Reader::Consumer(1), T, 0, 0, &log[..]);
    // Reads from 8 again without a seek: went back.
    c.observe_fetch(Reader::Consumer(1), T, 0, 8, &log);
    // Seeks to 3, then reads from 5: skipped.
    c.consumer_seek(1, T, 0, 3);
    c.observe_fetch(Reader::Consumer(1), T, 0, 5, &log);
    // A legal jump.
    c.consumer_seek(1, T, 0, 0);
    c.observe_fetch(Reader::Consumer(1), T, 0, 0, &log);
    final_read(&c, &log);
    assert_eq!(anomalies(&c), [("skipped", 1), ("went_back", 1)]);
}

// Proves: a valid record nobody sent to the partition counts as phantom; a
// record stored although its only send was refused counts as
// failed_present; acknowledged records of a partition no final read
// covered count as unchecked.
#[test]
fn phantom_refused_and_unchecked_are_detected() {
    let c = Checker::new();
    acked(&c, 0, 0, 2, 0);
    let refused = c.record_send(T, 0, 1, 0, 2);
    c.record_fail(&refused);
    let mut log = stored(0, 0, 2, 0);
    log.extend(stored(1, 0, 2, 2));
    log.extend(stored(5, 0, 1, 4));
    final_read(&c, &log);
    assert_eq!(anomalies(&c), [("phantom", 1), ("failed_present", 2)]);

    let c = Checker::new();
    let s = c.record_send(T, 1, 0, 0, 2);
    c.record_ack(&s, 0);
    assert_eq!(anomalies(&c), [("unchecked", 2)]);
}

// Proves: produce results are classified as the checker's contract says:
// errors that may follow a write and broken connections are
// indeterminate, refusals are failures.
#[test]
fn classify_follows_the_error_codes() {
    let server = |code| Err(ClientError::Server { code, message: String::new() });
    assert_eq!(classify(&Ok(ProduceAck { base_offset: 7, last_offset: 9 })), Outcome::Acked { base_offset: 7 });
    for code in [ErrorCode::StorageFailed, ErrorCode::Timeout, ErrorCode::Internal] {
        assert_eq!(classify(&server(code)), Outcome::Indeterminate, "{code:?}");
    }
    for code in [ErrorCode::DiskFull, ErrorCode::Overloaded, ErrorCode::ShuttingDown, ErrorCode::InvalidBatch, ErrorCode::UnknownTopic] {
        assert_eq!(classify(&server(code)), Outcome::Failed, "{code:?}");
    }
    let reset = std::io::Error::from(std::io::ErrorKind::ConnectionReset);
    assert_eq!(classify(&Err(ClientError::Io(reset))), Outcome::Indeterminate);
}

// Proves: resending a record that was acknowledged is a test bug the
// checker refuses loudly (it would make duplicates look allowed).
#[test]
#[should_panic(expected = "sent again")]
fn resending_an_acknowledged_record_panics() {
    let c = Checker::new();
    acked(&c, 0, 0, 1, 0);
    c.record_send(T, 0, 0, 0, 1);
}
