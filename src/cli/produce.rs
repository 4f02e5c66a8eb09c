//! `strom produce`: each line of stdin becomes one record, with an optional
//! key (`--key-delimiter`), headers (`-H`) and timestamp; records go to
//! `--partition`, or else to the partition Kafka's default partitioner
//! picks (see [`super::partitioner`]).
use std::collections::{BTreeMap, VecDeque};
use std::io::{BufRead, BufReader, Read, Write};
use std::sync::mpsc::{Receiver, SyncSender, TryRecvError};

use clap::Args;
use clap::builder::RangedU64ValueParser;
use strom::client::{Client, OwnedResponse};
use strom::proto::{self, Request};
use strom::wire::batch::values::INDICES_MAX;
use strom::wire::batch::{BATCH_HEADER_BYTES, BatchBuilder};

use super::partitioner::Partitioner;
use super::{now_ms, partition_count};

/// The longest stdin line `produce` takes: a record longer than the largest
/// request frame could never be sent, so reading more of it is pointless.
const LINE_BYTES_MAX: usize = proto::FRAME_BYTES_MAX_DEFAULT;
/// Bytes `produce` reads from stdin at once.
const STDIN_BUF_BYTES: usize = 64 << 10;
/// The most a record adds to its key and value bytes in a batch: length
/// varint (5), attributes (1), timestamp delta varlong (10), offset delta
/// varint (5), key length varint (5), value length varint (5), header
/// count (1). Its headers add their own (see [`headers_bytes_max`]).
pub const RECORD_OVERHEAD_BYTES_MAX: usize = 32;
/// `--batch-bytes` at most: the largest batch a broker with default
/// settings accepts (`EngineConfig::batch_bytes_max`, Kafka's
/// `message.max.bytes`); a larger one would be refused whole. A unit test
/// keeps the two equal.
pub const PRODUCE_BATCH_BYTES_MAX: u64 = strom::config::KAFKA_MESSAGE_MAX_BYTES as u64;
/// `--inflight` at most: the client's (and the server's default) limit of
/// requests in flight on one connection.
const PRODUCE_INFLIGHT_MAX: u64 = strom::client::INFLIGHT_MAX_DEFAULT as u64;
/// `-H` options at most: headers go on every record, so they are bounded
/// like the record itself.
const HEADERS_MAX: usize = 64;

const _: () = assert!(PRODUCE_BATCH_BYTES_MAX as usize <= proto::FRAME_BYTES_MAX_DEFAULT);

#[derive(Args)]
pub struct ProduceArgs {
    topic: String,
    /// The partition of every record; without it, a keyed record goes where
    /// Kafka's default partitioner puts its key, a keyless one round robin.
    #[arg(long)]
    partition: Option<u32>,
    /// kcat's -K: the text before the first DELIM on a line is the record's
    /// key, the rest its value; a line without DELIM has no key.
    #[arg(short = 'K', long, value_name = "DELIM")]
    key_delimiter: Option<String>,
    /// A header NAME=VALUE on every record (repeatable).
    #[arg(short = 'H', long = "header", value_name = "NAME=VALUE", value_parser = parse_header)]
    headers: Vec<(String, String)>,
    /// Every record's timestamp, in ms since the epoch (default: when its batch is built).
    #[arg(long, value_name = "MS", value_parser = clap::value_parser!(i64).range(0..))]
    timestamp: Option<i64>,
    /// Each line is `V1,V2,...<TAB>VALUE`: the topic's named index values,
    /// in declared order, then the record's value (see `strom topic create --index`).
    #[arg(long)]
    indexed: bool,
    /// Print `acked PARTITION BASE_OFFSET COUNT` for each acknowledged batch.
    #[arg(long)]
    report_acks: bool,
    /// Largest batch to send, in bytes (a single longer line goes alone).
    #[arg(long, default_value_t = 64 << 10, value_parser = RangedU64ValueParser::<usize>::new().range(1..=PRODUCE_BATCH_BYTES_MAX))]
    batch_bytes: usize,
    /// Batches sent and not yet acknowledged, at most.
    #[arg(long, default_value_t = 8, value_parser = RangedU64ValueParser::<usize>::new().range(1..=PRODUCE_INFLIGHT_MAX))]
    inflight: usize,
    #[command(flatten)]
    conn: crate::ConnArgs,
}

fn parse_header(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((name, value)) if !name.is_empty() => Ok((name.to_string(), value.to_string())),
        _ => Err(format!("a header is NAME=VALUE with a non-empty name, not {s:?}")),
    }
}

/// What the stdin reader thread hands to `produce`.
enum Input {
    /// Lines in stdin order, without their newlines.
    Lines(Vec<Vec<u8>>),
    End,
    Failed(String),
}

/// Reads stdin as lines of bytes (not necessarily UTF-8) and sends them in
/// chunks: a chunk goes as soon as stdin has nothing more buffered (the next
/// read may block) or it holds `chunk_bytes_max`, so a slow writer's lines
/// are sent at once and a fast writer's are batched.
fn read_lines<R: Read>(input: R, chunk_bytes_max: usize, tx: &SyncSender<Input>) {
    let mut reader = BufReader::with_capacity(STDIN_BUF_BYTES, input);
    let mut chunk = Vec::new();
    let mut chunk_bytes = 0;
    let mut lines_read: u64 = 0;
    loop {
        let mut line = Vec::new();
        let read = (&mut reader).take(LINE_BYTES_MAX as u64 + 1).read_until(b'\n', &mut line);
        match read {
            Ok(0) => break,
            Ok(_) => {}
            Err(e) => {
                let _ = tx.send(Input::Failed(format!("reading stdin failed after line {lines_read}: {e}")));
                return;
            }
        }
        lines_read += 1;
        if line.last() == Some(&b'\n') {
            line.pop();
        } else if line.len() > LINE_BYTES_MAX {
            let _ =
                tx.send(Input::Failed(format!("line {lines_read} is longer than {LINE_BYTES_MAX} bytes, the most one record can hold")));
            return;
        }
        chunk_bytes += line.len() + RECORD_OVERHEAD_BYTES_MAX;
        chunk.push(line);
        if chunk_bytes >= chunk_bytes_max || reader.buffer().is_empty() {
            if tx.send(Input::Lines(std::mem::take(&mut chunk))).is_err() {
                return;
            }
            chunk_bytes = 0;
        }
    }
    if !chunk.is_empty() && tx.send(Input::Lines(chunk)).is_err() {
        return;
    }
    let _ = tx.send(Input::End);
}

/// How each line becomes a record, from the command's options.
struct RecordShape {
    key_delimiter: Option<Vec<u8>>,
    headers: Vec<(Vec<u8>, Vec<u8>)>,
    timestamp_ms: Option<i64>,
    /// Bytes a record adds to its line, headers included, at most.
    overhead_bytes: usize,
    /// With `--indexed`: the topic's index names, in declared order.
    index_names: Vec<Vec<u8>>,
}

/// An `--indexed` line's index values and the rest of the line, or why it
/// cannot be read.
fn split_indexed(line: &[u8], k: usize) -> Result<([i64; INDICES_MAX], &[u8]), String> {
    let tab = line.iter().position(|&b| b == b'\t').ok_or("no TAB between the index values and the value")?;
    let text = std::str::from_utf8(&line[..tab]).map_err(|_| "the index values are not UTF-8 text".to_string())?;
    let mut values = [0i64; INDICES_MAX];
    let fields: Vec<&str> = text.split(',').collect();
    if fields.len() != k {
        return Err(format!("{} index values, the topic has {k}", fields.len()));
    }
    for (i, f) in fields.iter().enumerate() {
        values[i] = f
            .trim()
            .parse()
            .map_err(|_| format!("index value {:?} is not a 64-bit integer", f.escape_debug().take(40).collect::<String>()))?;
    }
    Ok((values, &line[tab + 1..]))
}

impl RecordShape {
    /// A line's key and value: split at the first delimiter, if one is set.
    fn split<'a>(&self, line: &'a [u8]) -> (Option<&'a [u8]>, &'a [u8]) {
        let Some(d) = self.key_delimiter.as_deref() else { return (None, line) };
        match line.windows(d.len()).position(|w| w == d) {
            Some(at) => (Some(&line[..at]), &line[at + d.len()..]),
            None => (None, line),
        }
    }

    fn record_bytes(&self, line: &[u8]) -> usize {
        line.len() + self.overhead_bytes
    }
}

/// Bytes headers add to a record at most: per header, the name and value
/// with a length varint (5) each.
fn headers_bytes_max(headers: &[(Vec<u8>, Vec<u8>)]) -> usize {
    headers.iter().map(|(k, v)| k.len() + v.len() + 10).sum()
}

/// Lines read from stdin and not yet sent, fed by the reader thread.
struct LineQueue {
    rx: Receiver<Input>,
    pending: VecDeque<Vec<u8>>,
    pending_bytes: usize,
    ended: bool,
    /// The number (from 1) of the next line to become a record.
    next_line: u64,
    /// With `--indexed`: per partition, the last values sent (so a line
    /// that goes backwards is named before anything is sent).
    last_values: BTreeMap<u32, [i64; INDICES_MAX]>,
}

impl LineQueue {
    fn new(rx: Receiver<Input>) -> LineQueue {
        LineQueue { rx, pending: VecDeque::new(), pending_bytes: 0, ended: false, next_line: 1, last_values: BTreeMap::new() }
    }

    /// Moves the lines the reader has queued into `pending` until it holds
    /// `bytes_wanted`. With `wait`, blocks until it holds a line or stdin ended.
    fn refill(&mut self, shape: &RecordShape, bytes_wanted: usize, wait: bool) -> Result<(), String> {
        let stopped = || "the stdin reader stopped unexpectedly".to_string();
        while !self.ended && self.pending_bytes < bytes_wanted {
            let input = if wait && self.pending.is_empty() {
                self.rx.recv().map_err(|_| stopped())?
            } else {
                match self.rx.try_recv() {
                    Ok(input) => input,
                    Err(TryRecvError::Empty) => return Ok(()),
                    Err(TryRecvError::Disconnected) => return Err(stopped()),
                }
            };
            match input {
                Input::Lines(lines) => {
                    self.pending_bytes += lines.iter().map(|l| shape.record_bytes(l)).sum::<usize>();
                    self.pending.extend(lines);
                }
                Input::End => self.ended = true,
                Input::Failed(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// The next batches, one per partition: pending lines in order while
    /// they stay within `batch_bytes` together (a longer line goes alone),
    /// each with its partition and record count. Records of one partition
    /// keep stdin's order.
    fn next_batches(&mut self, shape: &RecordShape, route: &mut Route, batch_bytes: usize) -> Result<Vec<Batch>, String> {
        let timestamp_ms = shape.timestamp_ms.unwrap_or_else(now_ms);
        let headers: Vec<(&[u8], Option<&[u8]>)> = shape.headers.iter().map(|(k, v)| (&k[..], Some(&v[..]))).collect();
        let mut builders: BTreeMap<u32, (BatchBuilder, u64)> = BTreeMap::new();
        let mut encoded_bytes = 0;
        let k = shape.index_names.len();
        while let Some(line) = self.pending.front() {
            let line_no = self.next_line;
            let (values, rest) =
                if k > 0 { split_indexed(line, k).map_err(|e| format!("line {line_no}: {e}"))? } else { ([0; INDICES_MAX], &line[..]) };
            let (key, value) = shape.split(rest);
            let partition = route.partition(key);
            if k > 0
                && let Some(last) = self.last_values.get(&partition)
                && let Some(i) = (0..k).find(|&i| values[i] < last[i])
            {
                let name = String::from_utf8_lossy(&shape.index_names[i]);
                return Err(format!(
                    "line {line_no}: index {name} value {} is below the previous line's {} (partition {partition})",
                    values[i], last[i]
                ));
            }
            let line_bytes = shape.record_bytes(line);
            let opens = if builders.contains_key(&partition) { 0 } else { BATCH_HEADER_BYTES };
            if !builders.is_empty() && encoded_bytes + opens + line_bytes > batch_bytes {
                break;
            }
            let value_bytes: Vec<[u8; 8]> = values[..k].iter().map(|v| v.to_le_bytes()).collect();
            let mut record_headers = headers.clone();
            record_headers.extend(shape.index_names.iter().zip(&value_bytes).map(|(n, v)| (&n[..], Some(&v[..]))));
            let (b, _) = builders.entry(partition).or_insert_with(|| (BatchBuilder::new(timestamp_ms), line_no));
            b.push(timestamp_ms, key, Some(value), &record_headers);
            if k > 0 {
                self.last_values.insert(partition, values);
            }
            encoded_bytes += opens + line_bytes;
            self.pending_bytes -= line_bytes;
            self.pending.pop_front();
            self.next_line += 1;
        }
        route.next_batch();
        Ok(builders
            .into_iter()
            .map(|(partition, (b, first_line))| Batch { partition, count: b.len() as u64, first_line, bytes: b.finish() })
            .collect())
    }
}

/// A batch to send: its partition, records, the line its first record
/// came from, and its bytes.
#[derive(Debug)]
struct Batch {
    partition: u32,
    count: u64,
    first_line: u64,
    bytes: Vec<u8>,
}

/// Where records go: one fixed partition, or the partitioner's pick.
enum Route {
    Fixed(u32),
    Partitioner(Partitioner),
}

impl Route {
    fn partition(&self, key: Option<&[u8]>) -> u32 {
        match self {
            Route::Fixed(p) => *p,
            Route::Partitioner(p) => p.partition(key),
        }
    }

    fn next_batch(&mut self) {
        if let Route::Partitioner(p) = self {
            p.next_batch();
        }
    }
}

/// Sends stdin's lines as batches, up to `--inflight` unacknowledged, on
/// one connection, which keeps each partition's batches in order.
pub fn produce(args: &ProduceArgs) -> Result<(), String> {
    strom::client::check_name(&args.topic).map_err(|e| e.to_string())?;
    if args.headers.len() > HEADERS_MAX {
        return Err(format!("{} headers given; a record takes at most {HEADERS_MAX}", args.headers.len()));
    }
    if args.key_delimiter.as_deref() == Some("") {
        return Err("--key-delimiter is empty; give the text that separates key from value, such as ':'".into());
    }
    let headers: Vec<(Vec<u8>, Vec<u8>)> = args.headers.iter().map(|(k, v)| (k.clone().into_bytes(), v.clone().into_bytes())).collect();
    let mut client = super::connect(&args.conn)?;
    let index_names: Vec<Vec<u8>> = if args.indexed {
        let d = client.describe_topic(&args.topic).map_err(|e| e.to_string())?;
        if d.indices.is_empty() {
            return Err(format!("topic {:?} has no named indices; --indexed needs a topic created with --index", args.topic));
        }
        d.indices.into_iter().map(String::into_bytes).collect()
    } else {
        Vec::new()
    };
    let index_headers: Vec<(Vec<u8>, Vec<u8>)> = index_names.iter().map(|n| (n.clone(), vec![0; 8])).collect();
    let shape = RecordShape {
        key_delimiter: args.key_delimiter.clone().map(String::into_bytes),
        overhead_bytes: RECORD_OVERHEAD_BYTES_MAX + headers_bytes_max(&headers) + headers_bytes_max(&index_headers),
        headers,
        timestamp_ms: args.timestamp,
        index_names,
    };
    let (mut client, mut route) = match args.partition {
        // Straight to the partition's core: no forwarding between cores.
        Some(p) => (client.for_partition(&args.topic, p).map_err(|e| e.to_string())?, Route::Fixed(p)),
        None => {
            let mut client = client;
            let partitions = partition_count(&mut client, &args.topic)?;
            (client, Route::Partitioner(Partitioner::new(partitions)))
        }
    };
    // One chunk per batch in flight keeps stdin read ahead of the network
    // while bounding what is buffered to about inflight x batch_bytes.
    let (tx, rx) = std::sync::mpsc::sync_channel(args.inflight);
    let batch_bytes = args.batch_bytes;
    std::thread::Builder::new()
        .name("stdin".into())
        .spawn(move || read_lines(std::io::stdin().lock(), batch_bytes, &tx))
        .map_err(|e| format!("cannot start the stdin reader thread: {e}"))?;
    send_all(args, &shape, &mut route, &mut client, LineQueue::new(rx))
}

/// The send loop: keeps up to `--inflight` batches unacknowledged until
/// stdin ends and every batch is acknowledged.
fn send_all(args: &ProduceArgs, shape: &RecordShape, route: &mut Route, client: &mut Client, mut queue: LineQueue) -> Result<(), String> {
    let mut out = std::io::stdout().lock();
    // (request id, partition, records, first line) of each batch sent and not yet acknowledged.
    let mut inflight: Vec<(u64, u32, u64, u64)> = Vec::with_capacity(args.inflight);
    let mut ready: VecDeque<Batch> = VecDeque::new();
    loop {
        while inflight.len() < args.inflight {
            if ready.is_empty() {
                queue.refill(shape, args.batch_bytes, inflight.is_empty())?;
                ready.extend(queue.next_batches(shape, route, args.batch_bytes)?);
            }
            let Some(Batch { partition, count, first_line, bytes }) = ready.pop_front() else { break };
            let req = Request::Produce { topic: &args.topic, partition, batches: &bytes };
            let request_id = client.send(&req).map_err(|e| format!("sending a batch to partition {partition} failed: {e}"))?;
            inflight.push((request_id, partition, count, first_line));
        }
        if inflight.is_empty() {
            // Nothing left to send (stdin ended) and nothing left unacknowledged.
            return Ok(());
        }
        let reply = client.recv().map_err(|e| format!("waiting for acknowledgements failed: {e}"))?;
        let at = inflight.iter().position(|&(id, ..)| id == reply.request_id).ok_or("the server answered a batch that was not sent")?;
        let (_, partition, count, first_line) = inflight.remove(at);
        let ack = match reply.result {
            Ok(OwnedResponse::Produce(ack)) => ack,
            Ok(other) => return Err(format!("the server answered a produce with a {:?} reply", other.api())),
            Err(e) => {
                let lines = format!("lines {first_line}-{}", first_line + count - 1);
                return Err(format!("a batch of {count} records ({lines}) to partition {partition} was refused: {e}"));
            }
        };
        if ack.record_count() != count {
            return Err(format!("the server acknowledged {} records for a batch of {count}", ack.record_count()));
        }
        if args.report_acks {
            writeln!(out, "acked {partition} {} {count}", ack.base_offset).map_err(|e| format!("writing to stdout failed: {e}"))?;
        }
    }
}

#[cfg(test)]
mod tests;
