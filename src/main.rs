//! The `strom` binary: the broker, its clients and its offline tools.
use std::collections::VecDeque;
use std::io::{BufRead, BufReader, BufWriter, ErrorKind, Read, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::mpsc::{Receiver, SyncSender, TryRecvError};
use std::time::Duration;

use clap::builder::RangedU64ValueParser;
use clap::{Args, Parser, Subcommand};
use nix::sys::signal::{SigSet, Signal};
use strom::client::{Client, OwnedResponse};
use strom::config::{EngineConfig, FsyncPolicy};
use strom::io::uring::UringIo;
use strom::proto::{self, OffsetSpec, Request};
use strom::server::{Server, ServerConfig};
use strom::wire::batch::{BATCH_HEADER_BYTES, BatchBuilder};
use topic_cmd::TopicCmd;

mod topic_cmd;

const ADDR_DEFAULT: &str = "127.0.0.1:7070";
/// How long a client command waits for the server to accept the connection.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a client command waits for any reply (or to write a request)
/// before giving up on a server that stopped answering.
const REPLY_TIMEOUT: Duration = Duration::from_secs(30);
/// The long poll of `consume --follow`: short enough to notice a closed
/// stdout soon, long enough to cost nothing while the partition is idle.
const FOLLOW_WAIT: Duration = Duration::from_secs(1);
/// Bytes of batches `consume` asks for per fetch.
const CONSUME_FETCH_BYTES_MAX: u32 = 1 << 20;
/// The longest stdin line `produce` takes: a record longer than the largest
/// request frame could never be sent, so reading more of it is pointless.
const LINE_BYTES_MAX: usize = proto::FRAME_BYTES_MAX_DEFAULT;
/// Bytes `produce` reads from stdin at once.
const STDIN_BUF_BYTES: usize = 64 << 10;
/// The most a keyless record adds to its value in a batch: length varint
/// (5), attributes (1), timestamp delta varlong (10), offset delta varint
/// (5), null key (1), value length varint (5), header count (1).
const RECORD_OVERHEAD_BYTES_MAX: usize = 28;
/// `--batch-bytes` at most: one batch must fit one default request frame.
const PRODUCE_BATCH_BYTES_MAX: u64 = 8 << 20;
/// `--inflight` at most: the client's (and the server's default) limit of
/// requests in flight on one connection.
const PRODUCE_INFLIGHT_MAX: u64 = strom::client::INFLIGHT_MAX_DEFAULT as u64;

const _: () = assert!(PRODUCE_BATCH_BYTES_MAX as usize <= proto::FRAME_BYTES_MAX_DEFAULT);

#[derive(Parser)]
#[command(name = "strom", version, about = "A durable log broker and storage engine on io_uring")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Verify every frame of a data directory and summarise its logs and
    /// partitions (read-only; exits non-zero on corruption, naming the position).
    Inspect {
        /// The data directory.
        dir: PathBuf,
    },
    /// Open a data directory as the engine does (recovering every log after
    /// any kind of stop), report the time and bytes scanned, then stop
    /// cleanly (checkpointing, so the next open scans nothing).
    Recover {
        /// The data directory.
        dir: PathBuf,
        /// Core threads (default: all online CPUs).
        #[arg(long)]
        cores: Option<usize>,
    },
    /// Run the broker on a data directory until SIGINT or SIGTERM, then stop
    /// cleanly (acknowledging in-flight writes and checkpointing). SIGUSR1
    /// prints each core's metrics to stderr (the Metrics api serves them too).
    Serve(ServeArgs),
    /// Create, alter, describe, list or delete topics on a running broker.
    Topic {
        #[command(flatten)]
        conn: ConnArgs,
        #[command(subcommand)]
        cmd: TopicCmd,
    },
    /// Append each line of stdin (without its newline) as one record, in
    /// order, and exit once every line is acknowledged.
    Produce(ProduceArgs),
    /// Print the values of a partition's records, one per line, in offset order.
    Consume(ConsumeArgs),
}

#[derive(Args)]
struct ConnArgs {
    /// The broker's address.
    #[arg(long, env = "STROM_ADDR", default_value = ADDR_DEFAULT, global = true)]
    addr: String,
}

#[derive(Args)]
struct ServeArgs {
    /// The data directory (created if new).
    #[arg(long)]
    data_dir: PathBuf,
    /// Address to accept connections on; port 0 picks a free one.
    #[arg(long, default_value_t = ServerConfig::default().listen)]
    listen: SocketAddr,
    /// Core threads (default: all online CPUs); a new data directory gets one log per core.
    #[arg(long)]
    cores: Option<usize>,
    /// When writes are acknowledged: always, interval:MS or never.
    #[arg(long, default_value_t = EngineConfig::default().fsync)]
    fsync: FsyncPolicy,
    /// Largest request frame accepted, in bytes.
    #[arg(long, default_value_t = ServerConfig::default().frame_bytes_max)]
    frame_bytes_max: usize,
    /// Open connections at most.
    #[arg(long, default_value_t = ServerConfig::default().connections_max)]
    connections_max: usize,
    /// Requests in flight per connection at most.
    #[arg(long, default_value_t = ServerConfig::default().inflight_per_conn_max)]
    inflight_per_conn_max: usize,
    /// A connection with no request for this long is closed.
    #[arg(long, default_value_t = duration_ms(ServerConfig::default().idle_timeout))]
    idle_timeout_ms: u64,
    /// A request whose frame is not complete this long after it began is refused.
    #[arg(long, default_value_t = duration_ms(ServerConfig::default().header_timeout))]
    header_timeout_ms: u64,
    /// Request and reply bytes one core may hold for all its connections; past it no socket of the core is read.
    #[arg(long, default_value_t = ServerConfig::default().core_buffered_bytes_max)]
    core_buffered_bytes_max: usize,
    /// Bytes per log segment file (a block multiple of at least two write buffers).
    #[arg(long, default_value_t = EngineConfig::default().segment_bytes)]
    segment_bytes: u64,
    /// Bytes logged between checkpoints (each bounds the scan at the next start).
    #[arg(long, default_value_t = EngineConfig::default().checkpoint_interval_bytes)]
    checkpoint_interval_bytes: u64,
    /// Retention for topics without their own (Kafka's log.retention.ms): keep
    /// records whose batch is younger than this (ms, or 30s, 12h, 7d; -1: no limit).
    #[arg(long, value_parser = topic_cmd::parse_ms_setting, allow_hyphen_values = true)]
    retention_ms: Option<topic_cmd::Setting>,
    /// Retention for topics without their own (Kafka's log.retention.bytes):
    /// keep at most this many bytes per partition (bytes, or 512MiB, 10GiB; -1: no limit).
    #[arg(long, value_parser = topic_cmd::parse_bytes_setting, allow_hyphen_values = true)]
    retention_bytes: Option<topic_cmd::Setting>,
}

#[derive(Args)]
struct ProduceArgs {
    topic: String,
    #[arg(long, default_value_t = 0)]
    partition: u32,
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
    conn: ConnArgs,
}

#[derive(Args)]
struct ConsumeArgs {
    topic: String,
    #[arg(long, default_value_t = 0)]
    partition: u32,
    /// Where to start: earliest, latest, an offset, or @UNIX_MS (the first
    /// record stamped at or after that time).
    #[arg(long, default_value = "earliest")]
    from: StartAt,
    /// Stop after this many records.
    #[arg(long)]
    count: Option<u64>,
    /// At the end of the partition, wait for more records instead of exiting.
    #[arg(long)]
    follow: bool,
    #[command(flatten)]
    conn: ConnArgs,
}

/// Where `consume` starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum StartAt {
    Earliest,
    Latest,
    Offset(u64),
    TimestampMs(i64),
}

impl std::str::FromStr for StartAt {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let bad = || format!("--from must be earliest, latest, an offset or @UNIX_MS, not {s:?}");
        match s {
            "earliest" => Ok(StartAt::Earliest),
            "latest" => Ok(StartAt::Latest),
            // Negative timestamps have no encoding: the wire uses them for earliest and latest.
            _ => match s.strip_prefix('@') {
                Some(ms) => ms.parse::<i64>().ok().filter(|&ms| ms >= 0).map(StartAt::TimestampMs).ok_or_else(bad),
                None => s.parse::<u64>().map(StartAt::Offset).map_err(|_| bad()),
            },
        }
    }
}

fn duration_ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()))
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let (cmd, result) = match cli.cmd {
        Cmd::Inspect { dir } => ("inspect", inspect(&dir)),
        Cmd::Recover { dir, cores } => ("recover", recover(&dir, cores).map_err(|e| e.to_string())),
        Cmd::Serve(args) => ("serve", serve(&args)),
        Cmd::Topic { conn, cmd } => (cmd.name(), topic_cmd::run(cmd, || connect(&conn))),
        Cmd::Produce(args) => ("produce", produce(&args)),
        Cmd::Consume(args) => ("consume", consume(&args)),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("strom {cmd}: {message}");
            ExitCode::FAILURE
        }
    }
}

fn inspect(dir: &Path) -> Result<(), String> {
    let ins =
        UringIo::new(64).and_then(|mut io| strom::inspect::inspect(&mut io, dir, &EngineConfig::default())).map_err(|e| e.to_string())?;
    print!("{}", strom::inspect::render(&ins));
    Ok(())
}

fn recover(dir: &Path, cores: Option<usize>) -> strom::Result<()> {
    let mut cfg = EngineConfig::default();
    if let Some(c) = cores {
        cfg.cores = c;
    }
    let started = std::time::Instant::now();
    let engine = strom::Engine::open(dir, cfg)?;
    let open_ms = started.elapsed().as_secs_f64() * 1e3;
    let (mut scanned, mut cut) = (0, 0);
    for r in engine.recovery_reports() {
        println!(
            "log {:>4}: scanned {} bytes ({} frames) from position {} to {}, cut {} bytes, removed {} segments, {} us",
            r.log, r.bytes_scanned, r.frames_scanned, r.scanned_from, r.end_pos, r.bytes_cut, r.segments_removed, r.elapsed_us
        );
        scanned += r.bytes_scanned;
        cut += r.bytes_cut;
    }
    println!("opened in {open_ms:.1} ms: {scanned} bytes scanned, {cut} bytes cut, {} topics", engine.topics().len());
    engine.shutdown()
}

/// Serves until SIGINT or SIGTERM (SIGUSR1 prints metrics). The signals are blocked before any
/// thread starts, so every thread inherits the mask and the signal stays
/// pending until this thread takes it with sigwait: no handler runs on an
/// arbitrary thread, and the shutdown runs here, in order.
fn serve(args: &ServeArgs) -> Result<(), String> {
    let mut signals = SigSet::empty();
    signals.add(Signal::SIGINT);
    signals.add(Signal::SIGTERM);
    // SIGUSR1 prints each core's metrics, one line each, for an operator at
    // a terminal (programs and tests ask the Metrics api).
    signals.add(Signal::SIGUSR1);
    signals.thread_block().map_err(|e| format!("cannot block SIGINT, SIGTERM and SIGUSR1: {e}"))?;
    let mut engine_cfg = EngineConfig {
        fsync: args.fsync,
        segment_bytes: args.segment_bytes,
        checkpoint_interval_bytes: args.checkpoint_interval_bytes,
        retention_age: server_limit(args.retention_ms).map(Duration::from_millis),
        retention_bytes: server_limit(args.retention_bytes),
        ..EngineConfig::default()
    };
    if let Some(cores) = args.cores {
        engine_cfg.cores = cores;
        // A new directory gets a log per core, so every core has work; an
        // existing one keeps its log count whatever --cores says.
        engine_cfg.logs_on_create = cores as u32;
    }
    let server_cfg = ServerConfig {
        listen: args.listen,
        frame_bytes_max: args.frame_bytes_max,
        connections_max: args.connections_max,
        inflight_per_conn_max: args.inflight_per_conn_max,
        idle_timeout: Duration::from_millis(args.idle_timeout_ms),
        header_timeout: Duration::from_millis(args.header_timeout_ms),
        core_buffered_bytes_max: args.core_buffered_bytes_max,
        ..ServerConfig::default()
    };
    strom::failpoint::init();
    let server = Server::start(&args.data_dir, engine_cfg, server_cfg).map_err(|e| e.to_string())?;
    for r in server.engine().recovery_reports() {
        eprintln!(
            "strom: recovered log {}: scanned {} bytes ({} frames) from position {} to {}, cut {} bytes, removed {} segments, {} us",
            r.log, r.bytes_scanned, r.frames_scanned, r.scanned_from, r.end_pos, r.bytes_cut, r.segments_removed, r.elapsed_us
        );
    }
    eprintln!("strom: serving on {}, data dir {}", server.local_addr(), args.data_dir.display());
    let waited = loop {
        match signals.wait() {
            Ok(Signal::SIGUSR1) => {
                for (core, metrics) in server.metrics().iter().enumerate() {
                    eprintln!("strom: metrics core {core}: {metrics}");
                }
            }
            other => break other,
        }
    };
    match waited {
        Ok(signal) => eprintln!("strom: stopping ({signal})"),
        Err(e) => eprintln!("strom: stopping (waiting for a signal failed: {e})"),
    }
    server.shutdown().map_err(|e| e.to_string())?;
    waited.map(|_| ()).map_err(|e| format!("waiting for SIGINT or SIGTERM: {e}"))
}

/// A server-wide limit: `default`, `-1` and `unlimited` are all no limit.
fn server_limit(setting: Option<topic_cmd::Setting>) -> Option<u64> {
    setting.and_then(|s| s.0).filter(|&v| v != strom::catalog::UNLIMITED)
}

fn connect(conn: &ConnArgs) -> Result<Client, String> {
    let mut client =
        Client::connect_timeout(conn.addr.as_str(), CONNECT_TIMEOUT).map_err(|e| format!("cannot connect to {}: {e}", conn.addr))?;
    client.set_timeout(Some(REPLY_TIMEOUT)).map_err(|e| e.to_string())?;
    Ok(client)
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
                let _ = tx.send(Input::Failed(format!("reading stdin after line {lines_read}: {e}")));
                return;
            }
        }
        lines_read += 1;
        if line.last() == Some(&b'\n') {
            line.pop();
        } else if line.len() > LINE_BYTES_MAX {
            let _ = tx.send(Input::Failed(format!("line {lines_read} is longer than {LINE_BYTES_MAX} bytes")));
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

/// Lines read from stdin and not yet sent, fed by the reader thread.
struct LineQueue {
    rx: Receiver<Input>,
    pending: VecDeque<Vec<u8>>,
    pending_bytes: usize,
    ended: bool,
}

impl LineQueue {
    /// Moves the lines the reader has queued into `pending` until it holds
    /// `bytes_wanted`. With `wait`, blocks until it holds a line or stdin ended.
    fn refill(&mut self, bytes_wanted: usize, wait: bool) -> Result<(), String> {
        while !self.ended && self.pending_bytes < bytes_wanted {
            let input = if wait && self.pending.is_empty() {
                self.rx.recv().map_err(|_| "the stdin reader stopped".to_string())?
            } else {
                match self.rx.try_recv() {
                    Ok(input) => input,
                    Err(TryRecvError::Empty) => return Ok(()),
                    Err(TryRecvError::Disconnected) => return Err("the stdin reader stopped".into()),
                }
            };
            match input {
                Input::Lines(lines) => {
                    self.pending_bytes += lines.iter().map(|l| l.len() + RECORD_OVERHEAD_BYTES_MAX).sum::<usize>();
                    self.pending.extend(lines);
                }
                Input::End => self.ended = true,
                Input::Failed(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// The next batch: pending lines in order while the batch stays within
    /// `batch_bytes` (a longer line goes alone), with its record count.
    fn next_batch(&mut self, batch_bytes: usize) -> Option<(Vec<u8>, u64)> {
        let timestamp_ms = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64);
        let mut builder = BatchBuilder::new(timestamp_ms);
        let mut encoded_bytes = BATCH_HEADER_BYTES;
        while let Some(line) = self.pending.front() {
            let line_bytes = line.len() + RECORD_OVERHEAD_BYTES_MAX;
            if !builder.is_empty() && encoded_bytes + line_bytes > batch_bytes {
                break;
            }
            builder.push(timestamp_ms, None, Some(line), &[]);
            encoded_bytes += line_bytes;
            self.pending_bytes -= line_bytes;
            self.pending.pop_front();
        }
        let count = builder.len() as u64;
        (count > 0).then(|| (builder.finish(), count))
    }
}

/// Sends stdin's lines as batches, up to `--inflight` unacknowledged, all to
/// one partition, whose connection keeps them in order.
fn produce(args: &ProduceArgs) -> Result<(), String> {
    strom::client::check_name(&args.topic).map_err(|e| e.to_string())?;
    // Straight to the partition's core: no forwarding between cores.
    let mut client = connect(&args.conn)?.for_partition(&args.topic, args.partition).map_err(|e| e.to_string())?;
    // One chunk per batch in flight keeps stdin read ahead of the network
    // while bounding what is buffered to about inflight x batch_bytes.
    let (tx, rx) = std::sync::mpsc::sync_channel(args.inflight);
    let batch_bytes = args.batch_bytes;
    std::thread::Builder::new()
        .name("stdin".into())
        .spawn(move || read_lines(std::io::stdin().lock(), batch_bytes, &tx))
        .map_err(|e| format!("cannot start the stdin reader: {e}"))?;
    let mut queue = LineQueue { rx, pending: VecDeque::new(), pending_bytes: 0, ended: false };
    let mut out = std::io::stdout().lock();
    // (request id, records) of each batch sent and not yet acknowledged.
    let mut inflight: Vec<(u64, u64)> = Vec::with_capacity(args.inflight);
    loop {
        while inflight.len() < args.inflight {
            queue.refill(batch_bytes, inflight.is_empty())?;
            let Some((batch, count)) = queue.next_batch(batch_bytes) else { break };
            let req = Request::Produce { topic: &args.topic, partition: args.partition, batches: &batch };
            let request_id = client.send(&req).map_err(|e| e.to_string())?;
            inflight.push((request_id, count));
        }
        if inflight.is_empty() {
            // Nothing left to send (stdin ended) and nothing left unacknowledged.
            return Ok(());
        }
        let reply = client.recv().map_err(|e| e.to_string())?;
        let at = inflight.iter().position(|&(id, _)| id == reply.request_id).ok_or("a reply to no batch in flight")?;
        let (_, count) = inflight.remove(at);
        let ack = match reply.result {
            Ok(OwnedResponse::Produce(ack)) => ack,
            Ok(other) => return Err(format!("a {:?} reply to a produce", other.api())),
            Err(e) => return Err(format!("a batch of {count} records was refused: {e}")),
        };
        if ack.record_count() != count {
            return Err(format!("the server acknowledged {} records for a batch of {count}", ack.record_count()));
        }
        if args.report_acks {
            writeln!(out, "acked {} {} {count}", args.partition, ack.base_offset).map_err(|e| format!("writing to stdout: {e}"))?;
        }
    }
}

/// The offset `--from` names.
fn start_offset(client: &mut Client, args: &ConsumeArgs) -> Result<u64, String> {
    let list = |client: &mut Client, spec| client.list_offsets(&args.topic, args.partition, spec).map_err(|e| e.to_string());
    let offset = match args.from {
        StartAt::Offset(offset) => return Ok(offset),
        StartAt::Earliest => list(client, OffsetSpec::Earliest)?,
        StartAt::Latest => list(client, OffsetSpec::Latest)?,
        // No record that late: start at the end, where the next one will be.
        StartAt::TimestampMs(ms) => match list(client, OffsetSpec::Timestamp(ms))? {
            Some(offset) => Some(offset),
            None => list(client, OffsetSpec::Latest)?,
        },
    };
    offset.ok_or_else(|| "the server has no offset for --from".to_string())
}

/// Prints record values from the start offset. Without `--follow` it stops
/// at the end of the partition as of the last fetch; a closed stdout ends it
/// quietly and successfully (`strom consume | head`).
fn consume(args: &ConsumeArgs) -> Result<(), String> {
    strom::client::check_name(&args.topic).map_err(|e| e.to_string())?;
    let mut client = connect(&args.conn)?.for_partition(&args.topic, args.partition).map_err(|e| e.to_string())?;
    let mut cursor = start_offset(&mut client, args)?;
    let mut out = BufWriter::with_capacity(STDIN_BUF_BYTES, std::io::stdout().lock());
    let count_max = args.count.unwrap_or(u64::MAX);
    let mut printed: u64 = 0;
    let max_wait = if args.follow { FOLLOW_WAIT } else { Duration::ZERO };
    while printed < count_max {
        let fetched = client
            .fetch(&args.topic, args.partition, cursor, CONSUME_FETCH_BYTES_MAX, max_wait)
            .map_err(|e| format!("fetch at offset {cursor}: {e}"))?;
        let cursor_before = cursor;
        for record in fetched.records_from(cursor) {
            if printed == count_max {
                break;
            }
            let (offset, value) = record.map_err(|e| e.to_string())?;
            if offset != cursor {
                return Err(format!("asked for offset {cursor}, the server sent {offset} next"));
            }
            if let Err(e) = out.write_all(value.unwrap_or_default()).and_then(|()| out.write_all(b"\n")) {
                return stdout_closed(e);
            }
            cursor = offset + 1;
            printed += 1;
        }
        if let Err(e) = out.flush() {
            return stdout_closed(e);
        }
        if !args.follow && (cursor >= fetched.high_watermark || cursor == cursor_before) {
            break;
        }
    }
    Ok(())
}

/// A broken pipe means the reader has all it wanted: not an error.
fn stdout_closed(e: std::io::Error) -> Result<(), String> {
    if e.kind() == ErrorKind::BrokenPipe { Ok(()) } else { Err(format!("writing to stdout: {e}")) }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines_of(input: &[u8], chunk_bytes_max: usize) -> (Vec<Vec<Vec<u8>>>, Option<String>) {
        let (tx, rx) = std::sync::mpsc::sync_channel(1024);
        read_lines(input, chunk_bytes_max, &tx);
        drop(tx);
        let (mut chunks, mut failed) = (Vec::new(), None);
        for input in rx {
            match input {
                Input::Lines(l) => chunks.push(l),
                Input::End => {}
                Input::Failed(e) => failed = Some(e),
            }
        }
        (chunks, failed)
    }

    // Proves: each line's bytes are kept exactly (a \r, invalid UTF-8, empty
    // lines) without its \n, and a last line without \n still counts.
    #[test]
    fn stdin_lines_keep_their_bytes() {
        let (chunks, failed) = lines_of(b"a\r\n\n\xff\xfe\nlast", 1 << 20);
        assert!(failed.is_none());
        let lines: Vec<Vec<u8>> = chunks.concat();
        assert_eq!(lines, vec![b"a\r".to_vec(), Vec::new(), b"\xff\xfe".to_vec(), b"last".to_vec()]);
        assert!(lines_of(b"", 1 << 20).0.is_empty());
    }

    // Proves: batches hold lines in order within batch_bytes, a longer line
    // goes alone, and every line is sent exactly once.
    #[test]
    fn batches_respect_batch_bytes_and_order() {
        let (tx, rx) = std::sync::mpsc::sync_channel(16);
        let big = vec![b'x'; 500];
        let lines = vec![b"1".to_vec(), b"2".to_vec(), big.clone(), b"3".to_vec()];
        tx.send(Input::Lines(lines)).unwrap();
        tx.send(Input::End).unwrap();
        let mut q = LineQueue { rx, pending: VecDeque::new(), pending_bytes: 0, ended: false };
        q.refill(usize::MAX, true).unwrap();
        let batch_bytes = BATCH_HEADER_BYTES + 2 * (1 + RECORD_OVERHEAD_BYTES_MAX);
        let mut got = Vec::new();
        while let Some((batch, count)) = q.next_batch(batch_bytes) {
            let values: Vec<Vec<u8>> = strom::wire::batch::records(&batch).map(|r| r.unwrap().value.unwrap().to_vec()).collect();
            assert_eq!(values.len() as u64, count);
            assert!(batch.len() <= batch_bytes || count == 1, "a batch of {count} records is {} bytes", batch.len());
            got.push(values);
        }
        assert_eq!(got, vec![vec![b"1".to_vec(), b"2".to_vec()], vec![big], vec![b"3".to_vec()]]);
        assert_eq!(q.pending_bytes, 0);
    }

    // Proves: --from parses its four forms and refuses negative timestamps.
    #[test]
    fn from_parses() {
        assert_eq!("earliest".parse(), Ok(StartAt::Earliest));
        assert_eq!("latest".parse(), Ok(StartAt::Latest));
        assert_eq!("42".parse(), Ok(StartAt::Offset(42)));
        assert_eq!("@1700000000000".parse(), Ok(StartAt::TimestampMs(1_700_000_000_000)));
        assert!("@-5".parse::<StartAt>().is_err());
        assert!("-1".parse::<StartAt>().is_err());
    }
}
