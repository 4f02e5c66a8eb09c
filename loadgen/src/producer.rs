//! A network producer: one thread, one connection, up to `--inflight`
//! Produce requests pipelined round-robin over its partitions.
use std::collections::HashMap;
use std::sync::Barrier;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use strom::client::{Client, OwnedResponse};
use strom::proto::Request;

use crate::net::{Route, connect};
use crate::new_latency_histogram;
use crate::verify::Ack;

/// What one producer sends, and how.
pub struct Plan<'a> {
    pub producer: usize,
    pub topic: &'a str,
    pub route: &'a Route,
    /// Its distinct batches (see [`crate::records::BATCHES_PER_PRODUCER`]),
    /// each of `records_per_batch` records of `value_bytes`.
    pub batches: &'a [Vec<u8>],
    pub records_per_batch: u64,
    pub value_bytes: usize,
    pub inflight_max: usize,
    pub duration: Duration,
}

/// What one producer achieved. Requests that failed are counted, not
/// retried: a failed Produce is indeterminate (it may be stored), and a
/// retry would measure something else.
pub struct Produced {
    pub records: u64,
    pub value_bytes: u64,
    /// Send-to-reply time of each acknowledged request, microseconds.
    pub ack_us: Histogram<u64>,
    pub acks: Vec<Ack>,
    /// Requests answered with an error, or left unanswered by a broken connection.
    pub errors: u64,
    pub first_error: Option<String>,
}

impl Produced {
    fn fail(&mut self, count: u64, why: String) {
        self.errors += count;
        if self.first_error.is_none() {
            self.first_error = Some(why);
        }
    }
}

/// A request on the wire, waiting for its reply.
struct Sent {
    at: Instant,
    partition: u32,
    batch: usize,
}

/// Connects, waits at `start` with every other thread, then produces for
/// `plan.duration` and waits for every reply.
pub fn run(plan: &Plan<'_>, start: &Barrier) -> Produced {
    let mut out = Produced { records: 0, value_bytes: 0, ack_us: new_latency_histogram(), acks: Vec::new(), errors: 0, first_error: None };
    let client = connect(plan.route.addr);
    // Everyone waits, even a producer that could not connect: leaving the
    // barrier short would hang the run.
    start.wait();
    match client {
        Ok(mut client) => pipeline(plan, &mut client, &mut out),
        Err(e) => out.fail(1, format!("producer {}: {e}", plan.producer)),
    }
    out
}

fn pipeline(plan: &Plan<'_>, client: &mut Client, out: &mut Produced) {
    let deadline = Instant::now() + plan.duration;
    let partitions = &plan.route.partitions;
    let mut waiting: HashMap<u64, Sent> = HashMap::with_capacity(plan.inflight_max);
    let mut sends = 0usize;
    loop {
        if waiting.len() < plan.inflight_max && Instant::now() < deadline {
            let partition = partitions[sends % partitions.len()];
            let batch = sends % plan.batches.len();
            sends += 1;
            let req = Request::Produce { topic: plan.topic, partition, batches: &plan.batches[batch] };
            // Timed from before the write: a write held up by the server's
            // push-back is part of what the producer waits for.
            let at = Instant::now();
            match client.send(&req) {
                Ok(id) => waiting.insert(id, Sent { at, partition, batch }),
                Err(e) => return out.fail(1 + waiting.len() as u64, format!("producer {}: send: {e}", plan.producer)),
            };
            continue;
        }
        if waiting.is_empty() {
            return;
        }
        let reply = match client.recv() {
            Ok(reply) => reply,
            Err(e) => return out.fail(waiting.len() as u64, format!("producer {}: receive: {e}", plan.producer)),
        };
        let Some(sent) = waiting.remove(&reply.request_id) else {
            // The client matches replies to requests it sent, so this is its bug or ours.
            return out.fail(waiting.len() as u64, format!("producer {}: reply to unknown request {}", plan.producer, reply.request_id));
        };
        let latency_us = sent.at.elapsed().as_micros().max(1) as u64;
        match reply.result {
            Ok(OwnedResponse::Produce(ack)) if ack.last_offset >= ack.base_offset && ack.record_count() == plan.records_per_batch => {
                out.ack_us.saturating_record(latency_us);
                out.records += ack.record_count();
                out.value_bytes += ack.record_count() * plan.value_bytes as u64;
                out.acks.push(Ack {
                    partition: sent.partition,
                    base_offset: ack.base_offset,
                    records: ack.record_count(),
                    producer: plan.producer as u32,
                    batch: sent.batch as u32,
                });
            }
            Ok(other) => out.fail(
                1,
                format!(
                    "producer {}: partition {}: a Produce of {} records was answered {other:?}",
                    plan.producer, sent.partition, plan.records_per_batch
                ),
            ),
            Err(e) => out.fail(1, format!("producer {}: partition {}: {e}", plan.producer, sent.partition)),
        }
    }
}
