//! Produce, Fetch and ListOffsets: one broker command per partition, run
//! together as a [`Command::Many`], their answers mapped back onto the
//! response in the request's order.
use std::time::Duration;

use bytes::{Buf, BufMut, Bytes};
use kafka_protocol::ResponseError as K;
use kafka_protocol::messages::fetch_response::{FetchableTopicResponse, PartitionData};
use kafka_protocol::messages::list_offsets_response::{ListOffsetsPartitionResponse, ListOffsetsTopicResponse};
use kafka_protocol::messages::produce_response::{PartitionProduceResponse, TopicProduceResponse};
use kafka_protocol::messages::{
    FetchRequest, FetchResponse, ListOffsetsRequest, ListOffsetsResponse, ProduceRequest, ProduceResponse, TopicName,
};
use kafka_protocol::protocol::StrBytes;

use super::codec::{Base, KafkaCtx, Shape, Slot, frame, slot_answer};
use crate::broker::{Answer, Batches, BrokerError, Command, OffsetQuery};

type Answers = Result<Vec<Result<Answer, BrokerError>>, BrokerError>;

/// Each topic of a request, in order, with its partitions' slots.
pub(crate) type TopicSlots = Vec<(String, Vec<(i32, Slot)>)>;

#[derive(Clone)]
pub(crate) struct ProduceShape {
    acks: i16,
    topics: TopicSlots,
}

#[derive(Clone)]
pub(crate) struct FetchShape {
    topics: TopicSlots,
}

#[derive(Clone)]
pub(crate) struct ListOffsetsShape {
    /// Per partition: its index and slot.
    topics: Vec<(String, Vec<(i32, Slot)>)>,
}

/// Kafka's ListOffsets timestamps that name a position, not a time.
const LATEST: i64 = -1;
const EARLIEST: i64 = -2;

pub(crate) fn topic_name(name: &str) -> TopicName {
    TopicName(StrBytes::from_string(name.to_string()))
}

pub(crate) fn produce(base: Base, r: ProduceRequest, run: &mut dyn FnMut(KafkaCtx, Command<'_>)) {
    // Transactions are not served (docs/KAFKA.md): a transactional
    // produce is refused whole, as a broker without them would.
    let refused = if r.transactional_id.is_some() {
        Some(K::TransactionalIdAuthorizationFailed.code())
    } else if !matches!(r.acks, -1..=1) {
        Some(K::InvalidRequiredAcks.code())
    } else {
        None
    };
    let mut commands = Vec::new();
    let mut topics = Vec::with_capacity(r.topic_data.len());
    for t in &r.topic_data {
        let mut parts = Vec::with_capacity(t.partition_data.len());
        for p in &t.partition_data {
            let slot = match (refused, u32::try_from(p.index), &p.records) {
                (Some(code), _, _) => Slot::Err(code),
                (None, Err(_), _) => Slot::Err(K::UnknownTopicOrPartition.code()),
                (None, Ok(_), None) => Slot::Err(K::InvalidRecord.code()),
                (None, Ok(partition), Some(records)) => {
                    commands.push(Command::Produce { topic: t.name.as_str(), partition, batches: Batches::split(records) });
                    Slot::Cmd(commands.len() - 1)
                }
            };
            parts.push((p.index, slot));
        }
        topics.push((t.name.to_string(), parts));
    }
    run(base.ctx(Shape::Produce(ProduceShape { acks: r.acks, topics })), Command::Many { commands, release_at_bytes: None });
}

pub(crate) fn produce_response(ctx: &KafkaCtx, s: &ProduceShape, answers: Answers) -> Vec<u8> {
    // acks=0: the client waits for nothing, and gets nothing.
    if s.acks == 0 {
        return Vec::new();
    }
    let mut responses = Vec::with_capacity(s.topics.len());
    for (name, parts) in &s.topics {
        let mut partition_responses = Vec::with_capacity(parts.len());
        for &(index, slot) in parts {
            let mut p = PartitionProduceResponse::default().with_index(index).with_base_offset(-1);
            match slot_answer(slot, &answers) {
                Ok(Answer::Produced(ack)) => p.base_offset = ack.base_offset as i64,
                Ok(_) => p.error_code = K::UnknownServerError.code(),
                Err(code) => p.error_code = code,
            }
            partition_responses.push(p);
        }
        responses.push(TopicProduceResponse::default().with_name(topic_name(name)).with_partition_responses(partition_responses));
    }
    frame(ctx, &ProduceResponse::default().with_responses(responses))
}

/// Produce versions 0-2 (message formats 0 and 1, which Strom does not
/// store): each partition of the request is answered UNSUPPORTED_VERSION
/// in the response layout of its version, which is small enough to write
/// here (the crate encodes Produce from version 3). A request that does
/// not parse gets an empty response.
pub(crate) fn produce_unsupported(frame_bytes: &[u8], version: i16, correlation_id: i32) -> Vec<u8> {
    let topics = old_produce_topics(&frame_bytes[4..]).unwrap_or_default();
    let mut out = Vec::with_capacity(64);
    out.put_i32(0);
    out.put_i32(correlation_id);
    out.put_i32(topics.len() as i32);
    for (name, partitions) in &topics {
        out.put_i16(name.len() as i16);
        out.put_slice(name);
        out.put_i32(partitions.len() as i32);
        for &p in partitions {
            out.put_i32(p);
            out.put_i16(K::UnsupportedVersion.code());
            out.put_i64(-1);
            if version >= 2 {
                out.put_i64(-1);
            }
        }
    }
    if version >= 1 {
        out.put_i32(0);
    }
    let len = (out.len() - 4) as i32;
    out[..4].copy_from_slice(&len.to_be_bytes());
    out
}

/// The topic names and partitions of a Produce request of version 0-2
/// (header v1: key, version, correlation id, client id; body: acks,
/// timeout, then topics of partitions with their record sets), or None
/// where it does not parse. Bounded by the frame: every count is checked
/// against the bytes left.
fn old_produce_topics(mut b: &[u8]) -> Option<Vec<(Vec<u8>, Vec<i32>)>> {
    fn take<'a>(b: &mut &'a [u8], n: usize) -> Option<&'a [u8]> {
        (b.len() >= n).then(|| {
            let (head, rest) = b.split_at(n);
            *b = rest;
            head
        })
    }
    fn string<'a>(b: &mut &'a [u8]) -> Option<&'a [u8]> {
        let n = take(b, 2)?.get_i16();
        if n < 0 { Some(&[]) } else { take(b, n as usize) }
    }
    take(&mut b, 8)?;
    string(&mut b)?;
    take(&mut b, 6)?;
    let topics = take(&mut b, 4)?.get_i32();
    let mut out = Vec::new();
    for _ in 0..usize::try_from(topics).ok().filter(|&n| n <= b.len())? {
        let name = string(&mut b)?.to_vec();
        let count = take(&mut b, 4)?.get_i32();
        let mut partitions = Vec::new();
        for _ in 0..usize::try_from(count).ok().filter(|&n| n <= b.len())? {
            partitions.push(take(&mut b, 4)?.get_i32());
            let len = take(&mut b, 4)?.get_i32();
            take(&mut b, usize::try_from(len).unwrap_or(0))?;
        }
        out.push((name, partitions));
    }
    Some(out)
}

pub(crate) fn fetch(base: Base, r: FetchRequest, run: &mut dyn FnMut(KafkaCtx, Command<'_>)) {
    let max_wait = Duration::from_millis(u64::try_from(r.max_wait_ms).unwrap_or(0));
    let partitions: usize = r.topics.iter().map(|t| t.partitions.len()).sum();
    // The request's total spread over its partitions: they are read at
    // once, not one after another as Kafka's broker fills them, so each
    // gets its share (and at least one batch, as in Kafka).
    let total_bytes = usize::try_from(r.max_bytes).ok().filter(|&n| n > 0).unwrap_or(usize::MAX);
    let share_bytes = (total_bytes / partitions.max(1)).max(1);
    let mut commands = Vec::with_capacity(partitions);
    let mut topics = Vec::with_capacity(r.topics.len());
    for t in &r.topics {
        let mut parts = Vec::with_capacity(t.partitions.len());
        for p in &t.partitions {
            let slot = match (u32::try_from(p.partition), u64::try_from(p.fetch_offset)) {
                (Ok(partition), Ok(offset)) => {
                    let max_bytes = usize::try_from(p.partition_max_bytes).unwrap_or(1).clamp(1, share_bytes);
                    commands.push(Command::Fetch { topic: t.topic.as_str(), partition, offset, max_bytes, max_wait });
                    Slot::Cmd(commands.len() - 1)
                }
                (Err(_), _) => Slot::Err(K::UnknownTopicOrPartition.code()),
                (_, Err(_)) => Slot::Err(K::OffsetOutOfRange.code()),
            };
            parts.push((p.partition, slot));
        }
        topics.push((t.topic.to_string(), parts));
    }
    // Kafka's min_bytes: answer once this much arrived (1 at least: an
    // empty answer waits its max_wait).
    let release_at_bytes = Some(usize::try_from(r.min_bytes).unwrap_or(0).max(1));
    run(base.ctx(Shape::Fetch(FetchShape { topics })), Command::Many { commands, release_at_bytes });
}

pub(crate) fn fetch_response(ctx: &KafkaCtx, s: &FetchShape, answers: Answers) -> Vec<u8> {
    let mut answers = answers;
    let mut responses = Vec::with_capacity(s.topics.len());
    for (name, parts) in &s.topics {
        let mut partitions = Vec::with_capacity(parts.len());
        for &(index, slot) in parts {
            let mut p = PartitionData::default().with_partition_index(index).with_high_watermark(-1).with_last_stable_offset(-1);
            match take_fetched(slot, &mut answers) {
                Ok(f) => {
                    p.high_watermark = f.high_watermark as i64;
                    p.last_stable_offset = f.high_watermark as i64;
                    p.log_start_offset = f.start_offset as i64;
                    p.records = Some(f.batches);
                }
                Err(code) => p.error_code = code,
            }
            partitions.push(p);
        }
        responses.push(FetchableTopicResponse::default().with_topic(topic_name(name)).with_partitions(partitions));
    }
    // Session id 0: no incremental fetch session; the client sends full
    // requests, and the response lists exactly the partitions asked.
    frame(ctx, &FetchResponse::default().with_session_id(0).with_responses(responses))
}

/// A Fetch's batches and bounds, taken out of its answer.
struct FetchedPart {
    batches: Bytes,
    high_watermark: u64,
    start_offset: u64,
}

fn take_fetched(slot: Slot, answers: &mut Answers) -> Result<FetchedPart, i16> {
    let i = match (slot, &*answers) {
        (Slot::Err(code), _) => return Err(code),
        (Slot::Cmd(_), Err(e)) => return Err(super::errors::code(e)),
        (Slot::Cmd(i), Ok(_)) => i,
    };
    let Ok(all) = answers else { unreachable!("matched above") };
    let Some(answer) = all.get_mut(i) else { return Err(K::UnknownServerError.code()) };
    match std::mem::replace(answer, Err(BrokerError::Internal("taken"))) {
        Ok(Answer::Fetched(f)) => {
            let bytes = match f.bytes {
                crate::broker::ReplyBuf::Heap(mut v) => {
                    v.drain(..f.headroom);
                    Bytes::from(v)
                }
                // Never asked for (a Many's Fetches are built on the heap),
                // and copied if it came: its buffer goes back to its core
                // when the reply is dropped there.
                crate::broker::ReplyBuf::Registered(b) => Bytes::copy_from_slice(&b.as_slice()[f.headroom..]),
            };
            Ok(FetchedPart { batches: bytes, high_watermark: f.high_watermark, start_offset: f.start_offset })
        }
        Ok(_) => Err(K::UnknownServerError.code()),
        Err(e) => Err(super::errors::code(&e)),
    }
}

pub(crate) fn list_offsets(base: Base, r: ListOffsetsRequest, run: &mut dyn FnMut(KafkaCtx, Command<'_>)) {
    let mut commands = Vec::new();
    let mut topics = Vec::with_capacity(r.topics.len());
    for t in &r.topics {
        let mut parts = Vec::with_capacity(t.partitions.len());
        for p in &t.partitions {
            let query = match p.timestamp {
                LATEST => Some(OffsetQuery::Latest),
                EARLIEST => Some(OffsetQuery::Earliest),
                ts if ts >= 0 => Some(OffsetQuery::AtTime(ts)),
                // -3 (the largest timestamp, KIP-734) and other negatives.
                _ => None,
            };
            let slot = match (u32::try_from(p.partition_index), query) {
                (Ok(partition), Some(query)) => {
                    commands.push(Command::ListOffsets { topic: t.name.as_str(), partition, query });
                    Slot::Cmd(commands.len() - 1)
                }
                (Err(_), _) => Slot::Err(K::UnknownTopicOrPartition.code()),
                (_, None) => Slot::Err(K::InvalidRequest.code()),
            };
            parts.push((p.partition_index, slot));
        }
        topics.push((t.name.to_string(), parts));
    }
    run(base.ctx(Shape::ListOffsets(ListOffsetsShape { topics })), Command::Many { commands, release_at_bytes: None });
}

pub(crate) fn list_offsets_response(ctx: &KafkaCtx, s: &ListOffsetsShape, answers: Answers) -> Vec<u8> {
    let mut topics = Vec::with_capacity(s.topics.len());
    for (name, parts) in &s.topics {
        let mut partitions = Vec::with_capacity(parts.len());
        for &(index, slot) in parts {
            let mut p = ListOffsetsPartitionResponse::default().with_partition_index(index).with_timestamp(-1).with_offset(-1);
            match slot_answer(slot, &answers) {
                Ok(Answer::Offset(Some(offset))) => p.offset = *offset as i64,
                // By time: the record found and its own timestamp.
                Ok(Answer::OffsetAtTime(Some((offset, ts_ms)))) => {
                    p.offset = *offset as i64;
                    p.timestamp = *ts_ms;
                }
                // No record at or after that time: offset -1, as Kafka.
                Ok(Answer::Offset(None) | Answer::OffsetAtTime(None)) => {}
                Ok(_) => p.error_code = K::UnknownServerError.code(),
                Err(code) => p.error_code = code,
            }
            partitions.push(p);
        }
        topics.push(ListOffsetsTopicResponse::default().with_name(topic_name(name)).with_partitions(partitions));
    }
    frame(ctx, &ListOffsetsResponse::default().with_topics(topics))
}
