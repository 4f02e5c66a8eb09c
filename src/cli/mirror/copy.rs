//! One partition of a mirror: a session reads where the destination
//! partition stopped, subscribes to the source partition just after it, and
//! writes each record the rule keeps, with its key, value, timestamp and
//! headers (the named index values among them) and the source offset in
//! [`FROM_HEADER`]. One produce is in flight at a time, and the next is sent
//! only after its acknowledgement: the destination's records are then
//! always a prefix of what the session meant to write, so its last record
//! is the whole of the mirror's state. A lost connection ends the session;
//! the next one starts over from the destination's last record.
use std::convert::Infallible;
use std::time::Duration;

use strom::client::{Client, ClientError, FetchedRecord, OwnedResponse, Push, Subscription};
use strom::partition::producers::seq_add;
use strom::proto::{QueryEnd, Request, SubscribeStart};
use strom::wire::batch::{self, BatchBuilder, BatchInfo};

use super::rule::{self, FROM_HEADER, LastRecord, Resume, Seen};
use super::{Backoff, Mirror, Side, Stop, stop};
use crate::cli::produce::RECORD_OVERHEAD_BYTES_MAX;

/// The largest batch the mirror writes (less if the destination takes
/// less; a single larger record goes alone).
const BATCH_BYTES_MAX: usize = 1 << 20;
/// The subscription's credit: pushes of up to this many bytes of batches
/// (at least the source's largest batch, so credit is never overrun).
const CREDIT_BYTES: u64 = 4 << 20;
/// Bytes read to find the destination's last record: its batch, whole.
const LAST_FETCH_BYTES: u32 = 1 << 20;

/// Follows the partition until an error no retry fixes; returns it.
pub fn follow(m: &Mirror, partition: u32) -> String {
    let mut backoff = Backoff::new();
    loop {
        match session(m, partition, &mut backoff) {
            Ok(never) => match never {},
            Err(Stop::Fatal(why)) => return why,
            Err(Stop::Lost(side, e)) => m.outage(side, &e),
            Err(Stop::Resync(why)) => eprintln!("strom mirror: partition {partition}: {why}; reading the destination's last record again"),
        }
        backoff.wait();
    }
}

/// One connection to each side, from the destination's last record on.
fn session(m: &Mirror, partition: u32, backoff: &mut Backoff) -> Result<Infallible, Stop> {
    let dest_err = |e| stop(Side::Dest, &m.dest, e);
    let src_err = |e| stop(Side::Source, &m.source, e);
    let mut dest = m.dest.connect(Side::Dest)?.for_partition(&m.dest_topic, partition).map_err(dest_err)?;
    let batch_bytes_max = (dest.server_info().map_err(dest_err)?.batch_bytes_max as usize).min(BATCH_BYTES_MAX);
    let resume = read_resume(&mut dest, &m.dest_topic, partition).map_err(|e| match e {
        Ok(why) => Stop::Fatal(format!("{} on {}: {why}", m.dest_topic, m.dest.addr)),
        Err(e) => dest_err(e),
    })?;
    let mut src = m.source.connect(Side::Source)?.for_partition(&m.topic, partition).map_err(src_err)?;
    let credit = CREDIT_BYTES.max(u64::from(src.server_info().map_err(src_err)?.batch_bytes_max));
    // Pushes may not come for as long as the source is idle.
    src.set_timeout(None).map_err(src_err)?;
    let start = resume.source_offset.map_or(SubscribeStart::Earliest, SubscribeStart::Offset);
    let mut sub = src.subscribe(&m.topic, partition, start, credit).map_err(src_err)?;
    let first = next_push(&mut sub).map_err(|e| match e {
        Some(e) => out_of_range(m, resume.source_offset, e),
        None => Stop::Lost(Side::Source, ended()),
    })?;
    if let Some(asked) = resume.source_offset.filter(|&o| o != first.from_offset) {
        return Err(Stop::Fatal(format!("the source subscription asked for offset {asked} started at {}", first.from_offset)));
    }
    m.reached();
    backoff.reset();
    tracing::info!(partition, from = first.from_offset, dest_offset = resume.dest_offset, "mirror session started");
    let mut w = Writer::new(dest, m, partition, resume, batch_bytes_max);
    let mut reader = Reader { rule: m.rule, next_offset: first.from_offset, held: None };
    reader.take(&first, &mut w)?;
    loop {
        let push = next_push(&mut sub).map_err(|e| match e {
            // Retention may remove the next offset while the mirror lags.
            Some(e) => out_of_range(m, Some(reader.next_offset), e),
            None => Stop::Lost(Side::Source, ended()),
        })?;
        reader.take(&push, &mut w)?;
    }
}

fn ended() -> ClientError {
    ClientError::Io(std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "the subscription ended"))
}

/// The next push, `Err(None)` if the subscription ended without an error.
fn next_push(sub: &mut Subscription<'_>) -> Result<Push, Option<ClientError>> {
    sub.next_push().map_err(Some)?.ok_or(None)
}

/// Words an OffsetOutOfRange from the source: it no longer holds the
/// offset after the mirror's last (retention ran ahead of the mirror), or
/// never held it (the source topic was made again, shorter).
fn out_of_range(m: &Mirror, asked: Option<u64>, e: ClientError) -> Stop {
    match (&e, asked) {
        (ClientError::Server { code: strom::proto::ErrorCode::OffsetOutOfRange, message }, Some(asked)) => Stop::Fatal(format!(
            "the source {} no longer holds or never held offset {asked}, where the mirror goes on (retention removed records before they were mirrored, or the topic was made again): {message}; mirror into a new topic",
            m.source.addr
        )),
        _ => stop(Side::Source, &m.source, e),
    }
}

/// Where the destination partition stopped: `Err(Ok(why))` for a
/// destination the mirror cannot go on with, `Err(Err(e))` for a failed call.
fn read_resume(dest: &mut Client, topic: &str, partition: u32) -> Result<Resume, Result<String, ClientError>> {
    let bounds = dest.query(topic, partition, QueryEnd::Offset(-1), QueryEnd::Offset(-1), Duration::ZERO).map_err(Err)?;
    if bounds.count() == 0 {
        return rule::resume(None, bounds.high_watermark).map_err(Ok);
    }
    let last = bounds.from;
    let fetched = dest.fetch(topic, partition, last, LAST_FETCH_BYTES, Duration::ZERO).map_err(Err)?;
    let info = batch_holding(&fetched.batches, last).map_err(Ok)?;
    let record = fetched.records_at(last).next().ok_or_else(|| Ok(format!("the fetch of offset {last} returned no record")))?;
    let record = record.map_err(Err)?;
    let from = record.headers.clone().find(|(k, _)| *k == FROM_HEADER.as_bytes()).map(|(_, v)| v);
    rule::resume(Some(LastRecord { offset: last, from, batch: &info }), bounds.high_watermark).map_err(Ok)
}

/// The header of the batch among `batches` that holds `offset`.
fn batch_holding(mut batches: &[u8], offset: u64) -> Result<BatchInfo, String> {
    loop {
        let info = batch::parse_header(batches).map_err(|e| format!("the batch holding offset {offset}: {e}"))?;
        if info.last_offset() >= offset as i64 {
            return Ok(info);
        }
        batches = batches.get(info.batch_bytes..).unwrap_or_default();
    }
}

/// A record whose verdict waits for the next push (`--per-ms`: the last
/// record of a push may be the last of its bucket), copied out of its push.
struct Held {
    seen: Seen,
    key: Option<Vec<u8>>,
    value: Option<Vec<u8>>,
    headers: Vec<(Vec<u8>, Option<Vec<u8>>)>,
}

/// Reads pushes in order, applying the rule.
struct Reader {
    rule: rule::Rule,
    /// The source offset the next record must have.
    next_offset: u64,
    held: Option<Held>,
}

impl Reader {
    fn take(&mut self, push: &Push, w: &mut Writer<'_>) -> Result<(), Stop> {
        let mut records = push.fetch.records_at(push.from_offset).peekable();
        while let Some(r) = records.next() {
            let r = r.map_err(|e| Stop::Fatal(format!("the source sent a batch that cannot be read: {e}")))?;
            if r.offset != self.next_offset {
                return Err(Stop::Fatal(format!("the source pushed offset {} where {} was due", r.offset, self.next_offset)));
            }
            self.next_offset += 1;
            let seen = Seen { offset: r.offset, timestamp_ms: r.timestamp_ms };
            if let Some(h) = self.held.take()
                && self.rule.keeps(h.seen, Some(seen)) == Some(true)
            {
                let headers = h.headers.iter().map(|(k, v)| (&k[..], v.as_deref()));
                w.add(h.seen, h.key.as_deref(), h.value.as_deref(), headers)?;
            }
            // A damaged next record is reported when it is reached.
            let next = match records.peek() {
                Some(Ok(n)) => Some(Seen { offset: n.offset, timestamp_ms: n.timestamp_ms }),
                _ => None,
            };
            match self.rule.keeps(seen, next) {
                Some(true) => w.add(seen, r.key, r.value, r.headers.clone())?,
                Some(false) => {}
                None => self.held = Some(held(seen, &r)),
            }
        }
        w.flush()
    }
}

fn held(seen: Seen, r: &FetchedRecord<'_>) -> Held {
    Held {
        seen,
        key: r.key.map(<[u8]>::to_vec),
        value: r.value.map(<[u8]>::to_vec),
        headers: r.headers.clone().map(|(k, v)| (k.to_vec(), v.map(<[u8]>::to_vec))).collect(),
    }
}

/// The destination side: builds batches and sends them one at a time.
struct Writer<'a> {
    client: Client,
    m: &'a Mirror,
    partition: u32,
    batch_bytes_max: usize,
    builder: BatchBuilder,
    /// Where the next sealed batch's records go: its first sequence number
    /// and destination offset.
    producer_epoch: i16,
    next_sequence: i32,
    next_dest_offset: u64,
    /// The produce in flight: request id, records, and the offset its
    /// first record must get.
    inflight: Option<(u64, u64, u64)>,
}

impl<'a> Writer<'a> {
    fn new(client: Client, m: &'a Mirror, partition: u32, resume: Resume, batch_bytes_max: usize) -> Writer<'a> {
        Writer {
            client,
            m,
            partition,
            batch_bytes_max,
            builder: BatchBuilder::new(0),
            producer_epoch: resume.producer_epoch,
            next_sequence: resume.next_sequence,
            next_dest_offset: resume.dest_offset,
            inflight: None,
        }
    }

    /// Adds a kept record, sending the batch first if it would grow too large.
    fn add<'h>(
        &mut self,
        seen: Seen,
        key: Option<&[u8]>,
        value: Option<&[u8]>,
        headers: impl Iterator<Item = (&'h [u8], Option<&'h [u8]>)>,
    ) -> Result<(), Stop> {
        let from = rule::from_value(seen.offset);
        // An earlier mirror's header gives way to this one's: the copy names its own source.
        let mut all: Vec<(&[u8], Option<&[u8]>)> = headers.filter(|(k, _)| *k != FROM_HEADER.as_bytes()).collect();
        all.push((FROM_HEADER.as_bytes(), Some(&from)));
        let record_bytes = RECORD_OVERHEAD_BYTES_MAX
            + key.map_or(0, <[u8]>::len)
            + value.map_or(0, <[u8]>::len)
            + all.iter().map(|(k, v)| k.len() + v.map_or(0, <[u8]>::len) + 10).sum::<usize>();
        if !self.builder.is_empty() && self.builder.encoded_bytes() + record_bytes > self.batch_bytes_max {
            self.flush()?;
        }
        if self.builder.is_empty() {
            self.builder = BatchBuilder::new(seen.timestamp_ms);
        }
        self.builder.push(seen.timestamp_ms, key, value, &all);
        Ok(())
    }

    /// Sends the batch being built, after the one in flight is acknowledged.
    fn flush(&mut self) -> Result<(), Stop> {
        if self.builder.is_empty() {
            return Ok(());
        }
        self.wait_ack()?;
        let records = self.builder.len() as u64;
        let built = std::mem::replace(&mut self.builder, BatchBuilder::new(0));
        let bytes = built.producer(rule::PRODUCER_ID, self.producer_epoch, self.next_sequence).finish();
        let req = Request::Produce { topic: &self.m.dest_topic, partition: self.partition, batches: &bytes };
        let id = self.client.send(&req).map_err(|e| stop(Side::Dest, &self.m.dest, e))?;
        self.inflight = Some((id, records, self.next_dest_offset));
        // At most i32::MAX records in a batch, so the count fits.
        self.next_sequence = seq_add(self.next_sequence, records as i32);
        self.next_dest_offset += records;
        Ok(())
    }

    /// Waits for the produce in flight, if any, and checks where it landed.
    fn wait_ack(&mut self) -> Result<(), Stop> {
        let Some((id, records, base)) = self.inflight.take() else { return Ok(()) };
        let reply = self.client.recv().map_err(|e| stop(Side::Dest, &self.m.dest, e))?;
        if reply.request_id != id {
            return Err(Stop::Fatal(format!("the destination answered request {} while {id} was the one in flight", reply.request_id)));
        }
        match reply.result {
            Ok(OwnedResponse::Produce(ack)) if ack.base_offset == base && ack.record_count() == records => Ok(()),
            // A duplicate is answered with where it first went: anything
            // but the offsets this run expects means another writer.
            Ok(OwnedResponse::Produce(ack)) => Err(Stop::Resync(format!(
                "the destination put {} records at offsets {}..={}, where {records} at {base} were expected",
                ack.record_count(),
                ack.base_offset,
                ack.last_offset
            ))),
            Ok(other) => Err(Stop::Fatal(format!("the destination answered a produce with a {:?} reply", other.api()))),
            Err(e) => Err(stop(Side::Dest, &self.m.dest, e)),
        }
    }
}
