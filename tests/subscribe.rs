//! Subscriptions (Subscribe, Grant, Cancel) against a real `strom serve`:
//! catch-up then live pushes, credit, cancel, connection close, a deleted
//! topic, limits, a restart, many subscribers.
mod harness;

use std::collections::BTreeMap;
use std::time::Duration;

use harness::serve::{HANG, Serve};
use harness::{batch, test_dir};
use strom::client::{Client, ClientError, OwnedResponse, Push};
use strom::proto::{ErrorCode, Request, SubscribeStart};

/// The records of a push at or past its `from_offset`, as (offset, value).
fn records(p: &Push) -> Vec<(u64, String)> {
    p.fetch
        .records_from(p.from_offset)
        .map(|r| {
            let (o, v) = r.unwrap();
            (o, String::from_utf8_lossy(v.unwrap()).into_owned())
        })
        .collect()
}

/// Produces `batches` batches of `per` records `prefix-b-i` to the partition.
fn produce(c: &mut Client, topic: &str, partition: u32, prefix: &str, batches: usize, per: usize) {
    for b in 0..batches {
        c.produce(topic, partition, &batch(&format!("{prefix}-{b}"), per, 1_700_000_000_000)).unwrap();
    }
}

/// The sum of a metric across the server's cores.
fn metric(c: &mut Client, name: &str) -> u64 {
    c.metrics().unwrap().iter().flatten().filter(|(n, _)| n == name).map(|(_, v)| v).sum()
}

fn server_code(e: &ClientError) -> Option<ErrorCode> {
    match e {
        ClientError::Server { code, .. } => Some(*code),
        _ => None,
    }
}

/// Reads pushes until `want` records were seen; checks they are
/// consecutive from `from` (nothing lost, nothing twice, in order).
fn take_records(sub: &mut strom::client::Subscription<'_>, from: u64, want: usize) -> Vec<(u64, String)> {
    let mut got: Vec<(u64, String)> = Vec::new();
    while got.len() < want {
        let p = sub.next_push().unwrap().expect("the subscription ended early");
        got.extend(records(&p));
    }
    for (i, (o, _)) in got.iter().enumerate() {
        assert_eq!(*o, from + i as u64, "records out of order, lost or doubled");
    }
    got
}

#[test]
fn catch_up_then_live_pushes_on_both_cores_lose_and_double_nothing() {
    // Proves: a subscription from the earliest offset first gets what is
    // stored, then what is produced after, in order, exactly once, for a
    // partition on the connection's core and one on the other core.
    let dir = test_dir("sub-live");
    let s = Serve::start(&dir, &[]);
    let mut admin = s.client();
    admin.create_topic("live", 2).unwrap();
    for partition in 0..2 {
        produce(&mut admin, "live", partition, "old", 5, 10);
    }
    let mut subs: Vec<Client> = (0..2).map(|_| s.client()).collect();
    let mut handles = Vec::new();
    for (partition, mut c) in subs.drain(..).enumerate() {
        handles.push(std::thread::spawn(move || {
            c.set_timeout(None).unwrap();
            let mut sub = c.subscribe("live", partition as u32, SubscribeStart::Earliest, 1 << 20).unwrap();
            take_records(&mut sub, 0, 150)
        }));
    }
    for partition in 0..2 {
        produce(&mut admin, "live", partition, "new", 10, 10);
    }
    for h in handles {
        let got = h.join().unwrap();
        assert_eq!(got[0].1, "old-0-0");
        assert_eq!(got[49].1, "old-4-9");
        assert_eq!(got[50].1, "new-0-0");
        assert_eq!(got[149].1, "new-9-9");
    }
}

#[test]
fn credit_is_never_overrun_and_a_small_credit_gets_one_batch() {
    // Proves: with a credit smaller than a batch, exactly one batch is
    // pushed and nothing more; the bytes pushed stay under the bytes
    // granted plus one batch; a stalled subscription starts again on a Grant.
    let dir = test_dir("sub-credit");
    let s = Serve::start(&dir, &[]);
    let mut c = s.client();
    c.create_topic("cr", 1).unwrap();
    produce(&mut c, "cr", 0, "v", 40, 10);
    let batch_bytes = batch("v-0", 10, 1_700_000_000_000).len() as u64;

    // A credit of 1: one batch (credit below 0), then silence: the Cancel's
    // end frame is the next frame of the subscription.
    let id = c.send(&Request::Subscribe { topic: "cr", partition: 0, credit_bytes: 1, start: SubscribeStart::Earliest }).unwrap();
    let first = c.recv().unwrap();
    assert_eq!(first.request_id, id);
    let Ok(OwnedResponse::Subscribe(p)) = first.result else { panic!("{first:?}") };
    assert_eq!((p.from_offset, p.fetch.next_offset, p.batch_bytes()), (0, 10, batch_bytes), "one whole batch");
    c.send(&Request::Cancel { request: id }).unwrap();
    let end = c.recv().unwrap();
    assert_eq!((end.request_id, end.result.as_ref().err().and_then(server_code)), (id, Some(ErrorCode::Cancelled)), "{end:?}");
    assert!(matches!(c.recv().unwrap().result, Ok(OwnedResponse::Cancel)));

    // A credit of 3.5 batches, granted 2 more each time it runs low: a
    // push starts only while credit is left and holds at most what is left
    // or one whole batch, so the total pushed stays under the total
    // granted plus one batch.
    let batch_max = batch("v-39", 10, 1_700_000_000_000).len() as u64;
    let credit = batch_bytes * 7 / 2;
    let id = c.send(&Request::Subscribe { topic: "cr", partition: 0, credit_bytes: credit, start: SubscribeStart::Earliest }).unwrap();
    let (mut granted, mut pushed, mut next) = (credit, 0, 0);
    while next < 400 {
        let r = c.recv().unwrap();
        let Ok(OwnedResponse::Subscribe(p)) = r.result else { panic!("{r:?}") };
        assert_eq!(p.from_offset, next, "pushes follow on");
        pushed += p.batch_bytes();
        next = p.fetch.next_offset;
        assert!(pushed < granted + batch_max, "pushed {pushed} bytes with {granted} granted");
        if pushed + batch_max > granted {
            c.send(&Request::Grant { subscription: id, bytes: 2 * batch_bytes }).unwrap();
            granted += 2 * batch_bytes;
        }
    }
    assert!(pushed >= 40 * batch_bytes);
}

#[test]
fn a_stalled_subscriber_holds_little_while_another_takes_everything() {
    // Proves: a subscriber that neither grants nor reads holds at most its
    // credit on the server, one that grants without limit but never reads
    // at most its connection's cap, while another on the same partition
    // receives every record; the reply budget's peak stays far under the data.
    let dir = test_dir("sub-stall");
    let s = Serve::start(&dir, &[]);
    let mut admin = s.client();
    admin.create_topic("st", 1).unwrap();
    let mut stalled = s.client();
    stalled.send(&Request::Subscribe { topic: "st", partition: 0, credit_bytes: 64 << 10, start: SubscribeStart::Earliest }).unwrap();
    // One that grants without limit but never reads: pushes stop once its
    // connection holds conn_buffered_bytes_max (32 MiB) unsent.
    let mut unread = s.client();
    unread.send(&Request::Subscribe { topic: "st", partition: 0, credit_bytes: u64::MAX, start: SubscribeStart::Earliest }).unwrap();
    let mut fast = s.client();
    fast.set_timeout(None).unwrap();
    let reader = std::thread::spawn(move || {
        let mut sub = fast.subscribe("st", 0, SubscribeStart::Earliest, 4 << 20).unwrap();
        take_records(&mut sub, 0, 128 * 900).len()
    });
    // 128 batches of 900 records of 1000 bytes: 116 MB, 0.9 MB a batch.
    let value = vec![b'x'; 1000];
    for _ in 0..128 {
        let mut builder = strom::wire::batch::BatchBuilder::new(1_700_000_000_000);
        for _ in 0..900 {
            builder.push(1_700_000_000_000, None, Some(&value), &[]);
        }
        admin.produce("st", 0, &builder.finish()).unwrap();
    }
    assert_eq!(reader.join().unwrap(), 128 * 900);
    // The unread one's 32 MiB, the fast one's pushes in flight, one batch over.
    let peak = metric(&mut admin, "strom_reply_budget_peak_bytes");
    assert!(peak <= 48 << 20, "reply budget peak {peak} bytes");
    assert_eq!(metric(&mut admin, "strom_subscriptions_open"), 3);
    drop((stalled, unread));
}

#[test]
fn cancel_close_and_delete_end_subscriptions() {
    // Proves: Cancel ends a subscription (its end frame, then the Cancel's
    // reply) and frees its slot; a closed connection's subscriptions are
    // freed; a topic deleted under a subscriber ends it with a typed error;
    // an unknown Cancel is refused; an index start and a credit of 0 are
    // refused; a Grant for nothing is dropped.
    let dir = test_dir("sub-end");
    let s = Serve::start(&dir, &[]);
    let mut admin = s.client();
    admin.create_topic("end", 1).unwrap();
    let mut c = s.client();
    let sub = c.subscribe("end", 0, SubscribeStart::Latest, 1 << 20).unwrap();
    sub.cancel().unwrap();
    {
        let mut gone = s.client();
        let mut sub = gone.subscribe("end", 0, SubscribeStart::Latest, 1 << 20).unwrap();
        assert!(sub.next_push().unwrap().unwrap().fetch.batches.is_empty(), "the first push says where it starts");
    }
    // A record wakes the reads the two left parked; then both slots are free.
    produce(&mut admin, "end", 0, "w", 1, 1);
    let mut open = u64::MAX;
    for _ in 0..200 {
        open = metric(&mut admin, "strom_subscriptions_open");
        if open == 0 {
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(open, 0);

    let e = c.send(&Request::Cancel { request: 999 }).and_then(|_| c.recv().unwrap().result).unwrap_err();
    assert_eq!(server_code(&e), Some(ErrorCode::InvalidArgument), "{e}");
    let e = c.subscribe("end", 0, SubscribeStart::Index { name: "ts", value: 0 }, 1).unwrap().next_push().unwrap_err();
    assert_eq!(server_code(&e), Some(ErrorCode::InvalidArgument), "{e}");
    let e = c.subscribe("end", 0, SubscribeStart::Earliest, 0).unwrap().next_push().unwrap_err();
    assert_eq!(server_code(&e), Some(ErrorCode::InvalidArgument), "{e}");
    // A Grant for no open subscription is dropped, unanswered.
    c.send(&Request::Grant { subscription: 12345, bytes: 1 }).unwrap();

    let mut sub = c.subscribe("end", 0, SubscribeStart::Earliest, 1 << 20).unwrap();
    assert_eq!(records(&sub.next_push().unwrap().unwrap()).len(), 1);
    admin.delete_topic("end").unwrap();
    let e = sub.next_push().unwrap_err();
    assert!(matches!(server_code(&e), Some(ErrorCode::UnknownPartition | ErrorCode::UnknownTopic)), "{e}");
}

#[test]
fn subscriptions_over_the_limit_are_refused() {
    // Proves: one connection may hold 1024 subscriptions; the next is
    // refused with Overloaded, a retriable typed error.
    let dir = test_dir("sub-limit");
    let s = Serve::start(&dir, &[]);
    let mut c = s.client();
    // Each open subscription stays in flight on the client.
    c.set_limits(strom::client::ClientLimits { inflight_max: 2048, ..c.limits() });
    c.create_topic("lim", 1).unwrap();
    for _ in 0..1024 {
        c.send(&Request::Subscribe { topic: "lim", partition: 0, credit_bytes: 1, start: SubscribeStart::Latest }).unwrap();
        let r = c.recv().unwrap();
        assert!(matches!(r.result, Ok(OwnedResponse::Subscribe(_))), "{r:?}");
    }
    let e = c.subscribe("lim", 0, SubscribeStart::Latest, 1).unwrap().next_push().unwrap_err();
    assert_eq!(server_code(&e), Some(ErrorCode::Overloaded), "{e}");
}

#[test]
fn subscriptions_over_the_core_limit_are_refused() {
    // Proves: one core's connections may hold 16,384 subscriptions (16
    // connections of 1,024, on a 1-core server); the next is refused with
    // Overloaded, on a connection that holds none.
    let dir = test_dir("sub-core-limit");
    let s = Serve::on(&dir).cores(1).start();
    let mut admin = s.client();
    admin.create_topic("cl", 1).unwrap();
    let mut conns: Vec<Client> = (0..16).map(|_| s.client()).collect();
    for c in &mut conns {
        c.set_limits(strom::client::ClientLimits { inflight_max: 2048, ..c.limits() });
        for _ in 0..1024 {
            c.send(&Request::Subscribe { topic: "cl", partition: 0, credit_bytes: 1, start: SubscribeStart::Latest }).unwrap();
        }
        for _ in 0..1024 {
            let r = c.recv().unwrap();
            assert!(matches!(r.result, Ok(OwnedResponse::Subscribe(_))), "{r:?}");
        }
    }
    assert_eq!(metric(&mut admin, "strom_subscriptions_open"), 16 * 1024);
    let e = admin.subscribe("cl", 0, SubscribeStart::Latest, 1).unwrap().next_push().unwrap_err();
    assert_eq!(server_code(&e), Some(ErrorCode::Overloaded), "{e}");
}

#[test]
fn a_thousand_subscribers_on_one_partition_each_get_every_record() {
    // Proves: 1,000 subscriptions (10 connections of 100) on one partition
    // each receive every record produced after they started, once, in order.
    let dir = test_dir("sub-fanout");
    let s = Serve::start(&dir, &[]);
    let mut admin = s.client();
    admin.create_topic("fan", 1).unwrap();
    let mut conns: Vec<Client> = (0..10).map(|_| s.client()).collect();
    for c in &mut conns {
        for _ in 0..100 {
            c.send(&Request::Subscribe { topic: "fan", partition: 0, credit_bytes: 1 << 20, start: SubscribeStart::Latest }).unwrap();
        }
        for _ in 0..100 {
            assert!(matches!(c.recv().unwrap().result, Ok(OwnedResponse::Subscribe(_))));
        }
    }
    produce(&mut admin, "fan", 0, "f", 20, 5);
    for c in &mut conns {
        let mut seen: BTreeMap<u64, u64> = BTreeMap::new();
        while seen.len() < 100 || seen.values().any(|&n| n < 100) {
            let r = c.recv().unwrap();
            let Ok(OwnedResponse::Subscribe(p)) = r.result else { panic!("{r:?}") };
            let next = seen.entry(r.request_id).or_default();
            for (o, _) in records(&p) {
                assert_eq!(o, *next, "subscription {} lost or doubled a record", r.request_id);
                *next += 1;
            }
        }
    }
}

#[test]
fn a_subscriber_resumes_after_a_restart_from_the_last_offset_it_saw() {
    // Proves: across a server restart, a client that subscribes again from
    // the offset after the last record it saw gets every record once.
    let dir = test_dir("sub-restart");
    let s = Serve::start(&dir, &[]);
    let mut admin = s.client();
    admin.create_topic("rs", 1).unwrap();
    produce(&mut admin, "rs", 0, "a", 10, 10);
    let mut got = {
        let mut c = s.client();
        let mut sub = c.subscribe("rs", 0, SubscribeStart::Earliest, 1 << 20).unwrap();
        take_records(&mut sub, 0, 50)
    };
    let (status, lines) = s.stop(HANG);
    assert!(status.is_some_and(|s| s.success()), "{lines:?}");
    let s = Serve::start(&dir, &[]);
    let mut admin = s.client();
    produce(&mut admin, "rs", 0, "b", 10, 10);
    let mut c = s.client();
    let from = got.last().unwrap().0 + 1;
    let mut sub = c.subscribe("rs", 0, SubscribeStart::Offset(from), 1 << 20).unwrap();
    got.extend(take_records(&mut sub, from, 200 - got.len()));
    let want: Vec<String> =
        ["a", "b"].iter().flat_map(|p| (0..10).flat_map(move |b| (0..10).map(move |i| format!("{p}-{b}-{i}")))).collect();
    assert_eq!(got.into_iter().map(|(_, v)| v).collect::<Vec<_>>(), want);
}

#[test]
fn the_embedded_subscription_catches_up_then_waits_for_new_batches() {
    // Proves: Engine::subscribe reads what is stored, then blocks until new
    // batches are durable and returns them, in order, each once; a read
    // holds at most one batch past its credit; a deleted topic ends it
    // with an error.
    use strom::broker::StreamStart;
    use strom::config::EngineConfig;
    use strom::engine::Engine;
    let dir = test_dir("sub-embedded");
    let cfg = EngineConfig { cores: 2, logs_on_create: 2, pin_cores: false, ..EngineConfig::small_for_tests() };
    let e = Engine::open(&dir, cfg).unwrap();
    e.create_topic("emb", 2).unwrap();
    for b in 0..3 {
        e.append("emb", 1, batch(&format!("old-{b}"), 4, 1_700_000_000_000)).unwrap();
    }
    let mut seen = Vec::new();
    std::thread::scope(|scope| {
        let e = &e;
        let reader = scope.spawn(move || {
            let mut sub = e.subscribe("emb", 1, StreamStart::Earliest, 1).unwrap();
            let mut got = Vec::new();
            while got.len() < 24 {
                let r = sub.next().unwrap().unwrap();
                let records = harness::values(&r.batches[r.headroom_bytes..]);
                assert_eq!(records.len(), 4, "a credit of 1 reads one batch");
                assert_eq!(records[0].0, got.len() as u64, "reads follow on");
                got.extend(records.into_iter().map(|(_, v)| v));
            }
            (got, sub.next_offset())
        });
        for b in 0..3 {
            e.append("emb", 1, batch(&format!("new-{b}"), 4, 1_700_000_000_000)).unwrap();
        }
        let (got, next) = reader.join().unwrap();
        assert_eq!(next, 24);
        seen = got;
    });
    let want: Vec<String> =
        ["old", "new"].iter().flat_map(|p| (0..3).flat_map(move |b| (0..4).map(move |i| format!("{p}-{b}-{i}")))).collect();
    assert_eq!(seen, want);
    let mut sub = e.subscribe("emb", 1, StreamStart::Latest, 1 << 20).unwrap();
    e.delete_topic("emb").unwrap();
    assert!(sub.next().unwrap().is_err());
    assert!(e.subscribe("emb", 0, StreamStart::Index { name: "ts", value: 0 }, 1).is_err());
}

#[test]
fn a_subscriber_of_a_quiet_partition_is_not_closed_as_idle() {
    // Proves: a connection whose only business is an open subscription
    // outlives the idle timeout (300 ms here) and still gets the next record.
    let dir = test_dir("sub-idle");
    let s = Serve::start(&dir, &["--idle-timeout-ms", "300"]);
    let mut admin = s.client();
    admin.create_topic("quiet", 1).unwrap();
    let mut c = s.client();
    let mut sub = c.subscribe("quiet", 0, SubscribeStart::Latest, 1 << 20).unwrap();
    assert!(sub.next_push().unwrap().unwrap().fetch.batches.is_empty());
    std::thread::sleep(Duration::from_millis(1500));
    let mut admin = s.client();
    produce(&mut admin, "quiet", 0, "late", 1, 1);
    assert_eq!(take_records(&mut sub, 0, 1)[0].1, "late-0-0");
}
