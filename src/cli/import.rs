//! `strom import --franz DIR TOPIC [--partition P]`: a Franz stream
//! directory ([`strom::franz`]) appended to one partition, item by item in
//! order: each payload becomes a record's value, each index value the
//! record's named index value. Franz items have no key, headers or time:
//! records get no key, and the time their batch is built as timestamp.
//!
//! Nothing is written until the whole input is checked: the topic's name,
//! `indices`, every entry of `offsets` against `payloads` (a first pass in
//! constant memory), the largest item against the server's batch limit,
//! and the topic (created with the stream's indices if it does not exist;
//! an existing one must have the same indices, and its last record's
//! values must not be above the stream's first). The second pass sends the
//! records in batches, pipelined, each acknowledged as the server's fsync
//! policy says (durable, by default).
use std::fs::File;
use std::io::{BufReader, Read, Seek, SeekFrom};
use std::ops::ControlFlow;
use std::path::{Path, PathBuf};

use clap::Args;
use clap::builder::RangedU64ValueParser;
use strom::catalog::{INDICES_MAX, TopicRetention};
use strom::client::{Client, ClientError, OwnedResponse};
use strom::franz::{self, INDICES_BYTES_MAX, INDICES_FILE, Item, OFFSETS_FILE, OffsetsCheck, PAYLOADS_FILE};
use strom::proto::{ErrorCode, QueryEnd, Request};
use strom::wire::batch::values::record_value;
use strom::wire::batch::{BATCH_HEADER_BYTES, BatchBuilder};

use super::now_ms;
use super::produce::{PRODUCE_BATCH_BYTES_MAX, RECORD_OVERHEAD_BYTES_MAX};

/// Batches sent and not yet acknowledged, at most: enough to keep the
/// server's group commit fed, as `strom produce`'s default.
const INFLIGHT: usize = 8;
/// Bytes read from each input file at once.
const READ_BUF_BYTES: usize = 1 << 20;

#[derive(Args)]
pub struct ImportArgs {
    /// The Franz stream directory to read (payloads, offsets, indices).
    #[arg(long, value_name = "DIR")]
    franz: PathBuf,
    topic: String,
    #[arg(long, default_value_t = 0)]
    partition: u32,
    /// Largest batch to send, in bytes (a single larger item goes alone).
    #[arg(long, default_value_t = 256 << 10, value_parser = RangedU64ValueParser::<usize>::new().range(1..=PRODUCE_BATCH_BYTES_MAX))]
    batch_bytes: usize,
    #[command(flatten)]
    conn: crate::ConnArgs,
}

/// The stream's files, open, with the lengths they had when checked.
struct Input {
    names: Vec<String>,
    offsets: File,
    payloads: File,
    offsets_bytes: u64,
    payloads_bytes: u64,
}

/// What the first pass learned.
struct Checked {
    items: u64,
    /// The largest payload, as (bytes, item).
    largest: Option<(u64, u64)>,
    first_values: Option<[i64; INDICES_MAX]>,
}

fn open(dir: &Path, name: &str) -> Result<(File, u64), String> {
    let path = dir.join(name);
    let file = File::open(&path).map_err(|e| {
        format!("cannot open {}: {e} (a Franz stream holds {PAYLOADS_FILE}, {OFFSETS_FILE} and {INDICES_FILE})", path.display())
    })?;
    let bytes = file.metadata().map_err(|e| format!("cannot stat {}: {e}", path.display()))?.len();
    Ok((file, bytes))
}

/// A refusal of the input, naming the directory.
fn refused(dir: &Path, e: franz::FranzError) -> String {
    format!("{}/{e}; nothing was imported", dir.display())
}

impl Input {
    fn open(dir: &Path) -> Result<Input, String> {
        let (indices, _) = open(dir, INDICES_FILE)?;
        let (offsets, offsets_bytes) = open(dir, OFFSETS_FILE)?;
        let (payloads, payloads_bytes) = open(dir, PAYLOADS_FILE)?;
        // One byte past the longest valid file is enough to refuse it.
        let mut text = Vec::new();
        indices.take(INDICES_BYTES_MAX as u64 + 1).read_to_end(&mut text).map_err(|e| format!("reading {INDICES_FILE}: {e}"))?;
        let names = franz::decode_indices(&text).map_err(|e| refused(dir, e))?;
        Ok(Input { names, offsets, payloads, offsets_bytes, payloads_bytes })
    }

    /// Reads `offsets` from its start, calling `each` with every checked item.
    fn each_item(&mut self, dir: &Path, mut each: impl FnMut(&Item) -> Result<(), String>) -> Result<OffsetsCheck, String> {
        let mut check = OffsetsCheck::new(&self.names, self.offsets_bytes, self.payloads_bytes).map_err(|e| refused(dir, e))?;
        self.offsets.seek(SeekFrom::Start(0)).map_err(|e| format!("reading {OFFSETS_FILE}: {e}"))?;
        let mut reader = BufReader::with_capacity(READ_BUF_BYTES, (&self.offsets).take(self.offsets_bytes));
        let mut entry = vec![0u8; check.entry_bytes()];
        for _ in 0..check.item_count() {
            reader
                .read_exact(&mut entry)
                .map_err(|e| format!("reading {OFFSETS_FILE}: {e} (did the file change while it was imported?)"))?;
            let item = check.next(&entry).map_err(|e| refused(dir, e))?;
            each(&item)?;
        }
        check.finish().map_err(|e| refused(dir, e))?;
        Ok(check)
    }

    /// The first pass: every entry checked, nothing sent.
    fn check(&mut self, dir: &Path) -> Result<Checked, String> {
        let mut first_values = None;
        let check = self.each_item(dir, |item| {
            first_values.get_or_insert(item.values);
            Ok(())
        })?;
        Ok(Checked { items: check.item_count(), largest: check.largest(), first_values })
    }
}

/// Imports the stream; prints one line saying what was appended.
pub fn import(args: &ImportArgs) -> Result<(), String> {
    strom::client::check_name(&args.topic).map_err(|e| format!("{e}; nothing was imported"))?;
    let dir = &args.franz;
    let mut input = Input::open(dir)?;
    let checked = input.check(dir)?;
    let mut client = super::connect(&args.conn)?;
    let info = client.server_info().map_err(|e| e.to_string())?;
    let batch_bytes = args.batch_bytes.min(info.batch_bytes_max as usize);
    let overhead = record_overhead(&input.names);
    if let Some((bytes, item)) =
        checked.largest.filter(|&(b, _)| BATCH_HEADER_BYTES as u64 + b + overhead as u64 > u64::from(info.batch_bytes_max))
    {
        let at = item * ((input.names.len() + 1) * franz::INTEGER_BYTES) as u64;
        return Err(format!(
            "{}/{OFFSETS_FILE}: byte {at}: item {item} is {bytes} bytes, more than one record can hold on this server (its largest batch is {} bytes); nothing was imported",
            dir.display(),
            info.batch_bytes_max
        ));
    }
    if info.fsync != "always" {
        eprintln!("strom import: the server acknowledges before fsync (fsync {}): a power cut may lose imported records", info.fsync);
    }
    prepare_topic(&mut client, args, &input.names, checked.first_values.as_ref())?;
    let mut client = client.for_partition(&args.topic, args.partition).map_err(|e| e.to_string())?;
    let (first, last) = send_all(&mut client, args, &mut input, batch_bytes, overhead)?;
    match first {
        Some(first) => println!("imported {} records into {}/{} (offsets {first}..={last})", checked.items, args.topic, args.partition),
        None => println!("imported 0 records into {}/{} (the stream is empty)", args.topic, args.partition),
    }
    Ok(())
}

/// Bytes a record adds to its payload at most: the record's own overhead,
/// and per index a header (name, 8-byte value, two length varints).
fn record_overhead(names: &[String]) -> usize {
    RECORD_OVERHEAD_BYTES_MAX + names.iter().map(|n| n.len() + franz::INTEGER_BYTES + 10).sum::<usize>()
}

/// Makes sure the partition can take the stream: creates the topic with the
/// stream's indices (and P+1 partitions) if it does not exist; otherwise
/// its indices must be the stream's, and its last record's values must not
/// be above the stream's first.
fn prepare_topic(client: &mut Client, args: &ImportArgs, names: &[String], first: Option<&[i64; INDICES_MAX]>) -> Result<(), String> {
    let topic = &args.topic;
    let d = match client.describe_topic(topic) {
        Ok(d) => d,
        Err(ClientError::Server { code: ErrorCode::UnknownTopic, .. }) => {
            let partitions = args.partition.checked_add(1).ok_or("partition number too large")?;
            let created = if names.is_empty() {
                client.create_topic(topic, partitions)
            } else {
                client.create_topic_indexed(topic, partitions, TopicRetention::default(), names)
            };
            return created.map_err(|e| format!("creating topic {topic:?}: {e}"));
        }
        Err(e) => return Err(e.to_string()),
    };
    if d.indices != names {
        return Err(format!(
            "topic {topic:?} has indices [{}], the stream has [{}]; import into a topic with the same indices in the same order, or a new one; nothing was imported",
            d.indices.join(", "),
            names.join(", ")
        ));
    }
    let p = d.partitions.get(args.partition as usize).ok_or_else(|| {
        format!("topic {topic:?} has {} partitions; there is no partition {}; nothing was imported", d.partitions.len(), args.partition)
    })?;
    let (Some(first), false) = (first, names.is_empty() || p.end_offset == p.start_offset) else { return Ok(()) };
    let last = last_values(client, topic, args.partition, names)?;
    if let Some(i) = (0..names.len()).find(|&i| first[i] < last[i]) {
        return Err(format!(
            "partition {} of {topic:?} ends with index {} value {}, above the stream's first item's {}; index values never decrease within a partition; nothing was imported",
            args.partition, names[i], last[i], first[i]
        ));
    }
    Ok(())
}

/// The index values of the partition's last record.
fn last_values(client: &mut Client, topic: &str, partition: u32, names: &[String]) -> Result<[i64; INDICES_MAX], String> {
    let bounds = client
        .query(topic, partition, QueryEnd::Offset(-1), QueryEnd::Offset(-1), std::time::Duration::ZERO)
        .map_err(|e| format!("reading the partition's last record: {e}"))?;
    let mut values = None;
    client
        .for_each_in_range(topic, partition, &bounds, 1 << 20, |r| {
            let mut v = [0i64; INDICES_MAX];
            for (slot, n) in v.iter_mut().zip(names) {
                *slot = record_value(r.headers.clone(), n.as_bytes()).unwrap_or(i64::MIN);
            }
            values = Some(v);
            ControlFlow::Break(())
        })
        .map_err(|e| format!("reading the partition's last record: {e}"))?;
    values.ok_or_else(|| "the partition's last record could not be read".into())
}

/// The second pass: every item sent in order, in batches of about
/// `batch_bytes`, up to [`INFLIGHT`] unacknowledged; returns the offsets of
/// the first and last record appended.
fn send_all(
    client: &mut Client,
    args: &ImportArgs,
    input: &mut Input,
    batch_bytes: usize,
    overhead: usize,
) -> Result<(Option<u64>, u64), String> {
    input.payloads.seek(SeekFrom::Start(0)).map_err(|e| format!("reading {PAYLOADS_FILE}: {e}"))?;
    let payloads_file = input.payloads.try_clone().map_err(|e| format!("reading {PAYLOADS_FILE}: {e}"))?;
    let mut payloads = BufReader::with_capacity(READ_BUF_BYTES, payloads_file.take(input.payloads_bytes));
    let names: Vec<Vec<u8>> = input.names.iter().map(|n| n.clone().into_bytes()).collect();
    let mut sender = Sender { args, inflight: Vec::new(), first: None, last: 0 };
    let mut builder = BatchBuilder::new(now_ms());
    let mut payload = Vec::new();
    let dir = args.franz.clone();
    input.each_item(&dir, |item| {
        let bytes = item.payload_bytes() as usize;
        if !builder.is_empty() && builder.encoded_bytes() + bytes + overhead > batch_bytes {
            let full = std::mem::replace(&mut builder, BatchBuilder::new(now_ms()));
            sender.send(client, full)?;
        }
        payload.resize(bytes, 0);
        payloads
            .read_exact(&mut payload)
            .map_err(|e| format!("reading {PAYLOADS_FILE}: {e} (did the file change while it was imported?)"))?;
        let values: Vec<[u8; 8]> = item.values[..names.len()].iter().map(|v| v.to_le_bytes()).collect();
        let headers: Vec<(&[u8], Option<&[u8]>)> = names.iter().zip(&values).map(|(n, v)| (&n[..], Some(&v[..]))).collect();
        builder.push(now_ms(), None, Some(&payload), &headers);
        Ok(())
    })?;
    if !builder.is_empty() {
        sender.send(client, builder)?;
    }
    while !sender.inflight.is_empty() {
        sender.reap(client)?;
    }
    Ok((sender.first, sender.last))
}

/// Batches in flight and the offsets acknowledged so far.
struct Sender<'a> {
    args: &'a ImportArgs,
    /// (request id, records) of each batch sent and not yet acknowledged, in order.
    inflight: Vec<(u64, u64)>,
    first: Option<u64>,
    last: u64,
}

impl Sender<'_> {
    fn send(&mut self, client: &mut Client, batch: BatchBuilder) -> Result<(), String> {
        if self.inflight.len() == INFLIGHT {
            self.reap(client)?;
        }
        let count = batch.len() as u64;
        let bytes = batch.finish();
        let req = Request::Produce { topic: &self.args.topic, partition: self.args.partition, batches: &bytes };
        let id = client.send(&req).map_err(|e| format!("sending a batch failed: {e}"))?;
        self.inflight.push((id, count));
        Ok(())
    }

    /// Waits for one acknowledgement.
    fn reap(&mut self, client: &mut Client) -> Result<(), String> {
        let acked_before = self.first.map_or(0, |f| self.last + 1 - f);
        let reply = client.recv().map_err(|e| format!("waiting for acknowledgements failed after {acked_before} records: {e}"))?;
        let at = self.inflight.iter().position(|&(id, _)| id == reply.request_id).ok_or("the server answered a batch that was not sent")?;
        let (_, count) = self.inflight.remove(at);
        let ack = match reply.result {
            Ok(OwnedResponse::Produce(ack)) => ack,
            Ok(other) => return Err(format!("the server answered a produce with a {:?} reply", other.api())),
            Err(e) => return Err(format!("a batch of {count} records was refused after {acked_before} records were imported: {e}")),
        };
        if ack.record_count() != count {
            return Err(format!("the server acknowledged {} records for a batch of {count}", ack.record_count()));
        }
        self.first = Some(self.first.map_or(ack.base_offset, |f| f.min(ack.base_offset)));
        self.last = self.last.max(ack.last_offset);
        Ok(())
    }
}
