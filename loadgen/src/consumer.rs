//! A tailing consumer: one thread, one connection, one long-poll Fetch in
//! flight per partition, counting what arrives while the producers run.
use std::collections::HashMap;
use std::sync::Barrier;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use strom::client::{Client, FetchResult, OwnedResponse};
use strom::proto::{OffsetSpec, Request};

use crate::net::{Route, connect};

/// How long the server may hold a Fetch that finds nothing new.
pub const FETCH_WAIT: Duration = Duration::from_millis(500);
/// The soft limit on the batches one Fetch returns.
pub const FETCH_BYTES_MAX: u32 = 1 << 20;

/// What one consumer read.
#[derive(Debug, Default)]
pub struct Consumed {
    pub records: u64,
    pub value_bytes: u64,
    /// From the start of the run to the arrival of the last record.
    pub busy: Duration,
    /// Records not delivered as they should be: in damaged batches, or
    /// past a gap in the offsets.
    pub damaged: u64,
    pub first_problem: Option<String>,
}

impl Consumed {
    fn problem(&mut self, why: String) {
        if self.first_problem.is_none() {
            self.first_problem = Some(why);
        }
    }
}

/// One tailed partition.
struct Tail {
    partition: u32,
    /// The offset to fetch next.
    offset: u64,
}

/// Finds where each partition ends, waits at `start` with every other
/// thread, then tails until the producers are done (`producing` false) and
/// every partition is read to its end.
pub fn run(topic: &str, route: &Route, start: &Barrier, producing: &AtomicBool) -> Result<Consumed, String> {
    let opened = open(topic, route);
    // Everyone waits, even a consumer that failed: leaving the barrier
    // short would hang the run.
    start.wait();
    let (mut client, mut tails) = opened?;
    let started = Instant::now();
    let mut out = Consumed::default();
    // Each Fetch in flight: its tail, and whether it was sent after the
    // producers were done (only such a reply's high watermark covers every ack).
    let mut waiting: HashMap<u64, (usize, bool)> = HashMap::new();
    for (i, tail) in tails.iter().enumerate() {
        send_fetch(&mut client, topic, tail, i, producing, &mut waiting)?;
    }
    while !waiting.is_empty() {
        let reply = client.recv().map_err(|e| format!("consumer: receive: {e}"))?;
        let (i, after_producing) =
            waiting.remove(&reply.request_id).ok_or_else(|| format!("consumer: reply to unknown request {}", reply.request_id))?;
        let tail = &mut tails[i];
        let fetched = match reply.result {
            Ok(OwnedResponse::Fetch(f)) => f,
            Ok(other) => return Err(format!("consumer: partition {}: a Fetch was answered {other:?}", tail.partition)),
            Err(e) => return Err(format!("consumer: partition {} at offset {}: {e}", tail.partition, tail.offset)),
        };
        if count(&fetched, tail, &mut out) > 0 {
            out.busy = started.elapsed();
        }
        if !(after_producing && tail.offset >= fetched.high_watermark) {
            send_fetch(&mut client, topic, &tails[i], i, producing, &mut waiting)?;
        }
    }
    Ok(out)
}

fn open(topic: &str, route: &Route) -> Result<(Client, Vec<Tail>), String> {
    let mut client = connect(route.addr)?;
    let mut tails = Vec::new();
    for &partition in &route.partitions {
        let end = client.list_offsets(topic, partition, OffsetSpec::Latest).map_err(|e| format!("consumer: partition {partition}: {e}"))?;
        tails.push(Tail { partition, offset: end.unwrap_or(0) });
    }
    Ok((client, tails))
}

fn send_fetch(
    client: &mut Client,
    topic: &str,
    tail: &Tail,
    index: usize,
    producing: &AtomicBool,
    waiting: &mut HashMap<u64, (usize, bool)>,
) -> Result<(), String> {
    let after_producing = !producing.load(Ordering::Acquire);
    let req = Request::Fetch {
        topic,
        partition: tail.partition,
        offset: tail.offset,
        max_bytes: FETCH_BYTES_MAX,
        max_wait_ms: FETCH_WAIT.as_millis() as u32,
    };
    let id = client.send(&req).map_err(|e| format!("consumer: partition {}: send: {e}", tail.partition))?;
    waiting.insert(id, (index, after_producing));
    Ok(())
}

/// Counts the records of one reply and moves the tail past them; returns
/// how many arrived. `records_from` checks each batch's CRC, as a careful
/// consumer would.
fn count(fetched: &FetchResult, tail: &mut Tail, out: &mut Consumed) -> u64 {
    let mut expected = tail.offset;
    let mut records = 0;
    for r in fetched.records_from(tail.offset) {
        match r {
            Ok((offset, value)) => {
                if offset != expected {
                    out.damaged += offset.saturating_sub(expected);
                    out.problem(format!("partition {}: offset {offset} arrived after {}", tail.partition, expected.wrapping_sub(1)));
                }
                expected = offset + 1;
                records += 1;
                out.value_bytes += value.map_or(0, |v| v.len() as u64);
            }
            Err(e) => {
                out.damaged += fetched.next_offset.saturating_sub(expected).max(1);
                out.problem(format!("partition {}: {e}", tail.partition));
                break;
            }
        }
    }
    out.records += records;
    if fetched.next_offset < tail.offset || (records > 0 && fetched.next_offset != expected) {
        out.problem(format!(
            "partition {}: a Fetch from {} read up to {expected} but says next_offset {}",
            tail.partition, tail.offset, fetched.next_offset
        ));
    }
    tail.offset = fetched.next_offset.max(expected);
    records
}
