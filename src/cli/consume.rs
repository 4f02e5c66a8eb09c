//! `strom consume`: prints a topic's records, all partitions merged by
//! timestamp (or one with `--partition`), from where `--from` or the
//! group's committed position says; `--follow` waits for more, riding
//! through a server restart.
//!
//! The merge holds, per partition, the decoded records of at most one
//! fetch: its share of [`MERGE_BYTES_MAX`], counting each record's bytes
//! plus [`RECORD_COST_BYTES`] (so small records, which cost more decoded
//! than on the wire, cannot multiply the bound); records past the share are
//! dropped and fetched again later, and the next fetch asks for less. A
//! partition is fetched again only once everything it holds is printed.
//! Without `--follow` a
//! record is printed only once every partition not yet at its end has a
//! record buffered, so the output is in (timestamp, partition, offset)
//! order exactly. With `--follow`, records are printed as they arrive:
//! ordered within what is buffered, and a late partition's record comes
//! after earlier-printed newer ones (as kcat's does).
//!
//! `--follow` reads by subscription (Subscribe, docs/PROTOCOL.md), for up
//! to [`SUBSCRIBED_PARTITIONS_MAX`] partitions (long polls past it): each
//! partition is subscribed from where it stopped with a credit of its share,
//! granted back as its pushes are buffered, so the server pushes records as
//! they become durable and nothing polls. A push whose records overflow the
//! share decoded ends that subscription (Cancel) and a new one starts where
//! the buffered records end. It waits for pushes without a timeout: a closed
//! stdout is noticed at the next record.
use std::collections::{HashSet, VecDeque};
use std::io::{BufWriter, ErrorKind, Write};
use std::time::{Duration, Instant};

use clap::Args;
use strom::client::{Client, ClientError, FetchResult, OwnedResponse};
use strom::proto::{OffsetSpec, Request, SubscribeStart};

use super::format::{Output, OwnedRecord};
use super::start::StartAt;
use super::{now_ms, partition_count};

/// Bytes the merge holds for all partitions together, about (see the module doc).
const MERGE_BYTES_MAX: u32 = 32 << 20;
/// What a decoded record costs beyond its key, value and header bytes: the
/// struct and the allocations behind its vectors, rounded up.
const RECORD_COST_BYTES: usize = 128;
/// Per-partition share of the merge: at most this...
const FETCH_BYTES_MAX: u32 = 1 << 20;
/// ...and at least this, however many partitions share MERGE_BYTES_MAX.
const FETCH_BYTES_MIN: u32 = 64 << 10;
/// The long poll of `--follow` once every partition is caught up: short
/// enough to notice a closed stdout soon, long enough to cost nothing idle.
const FOLLOW_WAIT: Duration = Duration::from_secs(1);
/// The same with several partitions: a reply waits for the slowest poll of
/// its round, so a record is held at most this long.
const FOLLOW_WAIT_MERGED: Duration = Duration::from_millis(200);
/// How often `--group` commits while records flow (and once at exit).
const COMMIT_INTERVAL: Duration = Duration::from_secs(1);
/// First and longest pause between reconnection attempts of `--follow`.
const RECONNECT_BACKOFF_MIN: Duration = Duration::from_millis(100);
const RECONNECT_BACKOFF_MAX: Duration = Duration::from_secs(2);
/// `--follow` gives up when the server stays unreachable this long.
const RECONNECT_GIVE_UP: Duration = Duration::from_secs(600);
/// `--follow` subscribes when it follows at most this many partitions (each
/// subscription stays in flight on the one connection, whose client allows
/// 256 requests in flight by default); past it, it long-polls with Fetches.
const SUBSCRIBED_PARTITIONS_MAX: usize = 128;
/// Bytes of output buffered before a write to stdout.
const STDOUT_BUF_BYTES: usize = 64 << 10;

#[derive(Args)]
pub struct ConsumeArgs {
    topic: String,
    /// Read only this partition (default: all, merged by timestamp).
    #[arg(long)]
    partition: Option<u32>,
    /// Where to start in each partition: earliest, latest, OFFSET, -N (N
    /// records before the end), -DURATION (-10s, -30m, -1h, -2d), @UNIX_MS or
    /// @RFC3339 (@2026-12-04T10:00:00Z). With --group, only for partitions
    /// the group has not committed.
    #[arg(long, default_value = "earliest", allow_hyphen_values = true)]
    from: StartAt,
    /// Stop after this many records.
    #[arg(long)]
    count: Option<u64>,
    /// At the end, wait for more records instead of exiting; reconnects if
    /// the server restarts.
    #[arg(long)]
    follow: bool,
    /// Print each record with kcat's tokens: %k key, %v value, %o offset,
    /// %p partition, %T timestamp (ms), %h headers, %t topic, %s value size;
    /// \n \t \r \\ escapes (default: "%v\n").
    #[arg(long, short = 'f', conflicts_with = "json")]
    format: Option<String>,
    /// Print each record as one JSON object per line (see docs/CLI.md).
    #[arg(long)]
    json: bool,
    /// Consumer group: start from its committed positions and commit as records are printed.
    #[arg(long, short = 'G', value_name = "NAME")]
    group: Option<String>,
    #[command(flatten)]
    conn: crate::ConnArgs,
}

/// One partition's place in the merge.
#[derive(Debug)]
struct Part {
    partition: u32,
    /// The next offset to fetch.
    fetch_at: u64,
    /// The next offset to print, once what was written is flushed: the
    /// position a group commits.
    flushed_next: u64,
    committed_next: Option<u64>,
    buffered: VecDeque<OwnedRecord>,
    /// The last fetch found nothing past `fetch_at`.
    at_end: bool,
    /// What the next fetch asks for: the share, or less after a fetch
    /// whose records did not fit the share decoded.
    fetch_bytes: u32,
    /// With `--follow`: the request id of its subscription on the current
    /// connection, once subscribed.
    subscription: Option<u64>,
}

/// The state that outlives a connection: a restart of the server loses
/// nothing here, so the next fetch resumes exactly after the last record.
struct Consumer<'a> {
    args: &'a ConsumeArgs,
    output: Output,
    parts: Vec<Part>,
    /// Decoded bytes each partition may hold (see the module doc).
    share_bytes: u32,
    printed: u64,
    last_commit: Instant,
    /// When the connection was lost, while it has not served a round since:
    /// one outage is announced once, however many attempts it takes.
    lost_since: Option<Instant>,
    /// Request ids of cancelled subscriptions and of their Cancels, whose
    /// last replies are still to come (and to be dropped).
    cancelled: HashSet<u64>,
}

pub fn consume(args: &ConsumeArgs) -> Result<(), String> {
    strom::client::check_name(&args.topic).map_err(|e| e.to_string())?;
    if let Some(g) = &args.group {
        strom::client::check_name(g).map_err(|e| format!("--group: {e}"))?;
    }
    let output = match (&args.format, args.json) {
        (Some(f), _) => Output::parse_format(f)?,
        (None, true) => Output::Json,
        (None, false) => Output::values(),
    };
    let mut client = super::connect(&args.conn)?;
    let partitions = partition_count(&mut client, &args.topic)?;
    let chosen: Vec<u32> = match args.partition {
        Some(p) if p >= partitions => {
            return Err(format!("topic \"{}\" has partitions 0 to {}; there is no partition {p}", args.topic, partitions - 1));
        }
        Some(p) => vec![p],
        None => (0..partitions).collect(),
    };
    let share_bytes = (MERGE_BYTES_MAX / chosen.len() as u32).clamp(FETCH_BYTES_MIN, FETCH_BYTES_MAX);
    let mut parts = Vec::with_capacity(chosen.len());
    for partition in chosen {
        let (start, committed_next) =
            start_of(&mut client, args, partition).map_err(|e| format!("finding where partition {partition} starts failed: {e}"))?;
        parts.push(Part {
            partition,
            fetch_at: start,
            flushed_next: start,
            committed_next,
            buffered: VecDeque::new(),
            at_end: false,
            fetch_bytes: share_bytes,
            subscription: None,
        });
    }
    let mut consumer =
        Consumer { args, output, parts, share_bytes, printed: 0, last_commit: Instant::now(), lost_since: None, cancelled: HashSet::new() };
    consumer.run(client)
}

/// Where `partition` starts: the group's committed position, else `--from`;
/// with what the group has committed, if anything.
fn start_of(client: &mut Client, args: &ConsumeArgs, partition: u32) -> Result<(u64, Option<u64>), ClientError> {
    if let Some(group) = &args.group
        && let Some(committed) = client.fetch_offset(group, &args.topic, partition)?
    {
        return Ok((committed, Some(committed)));
    }
    Ok((resolve_start(client, &args.topic, partition, args.from)?, None))
}

/// The offset `at` names in one partition (also `group reset`'s target).
pub fn resolve_start(client: &mut Client, topic: &str, partition: u32, at: StartAt) -> Result<u64, ClientError> {
    let mut list = |spec| client.list_offsets(topic, partition, spec);
    let start = match at {
        StartAt::Offset(offset) => Some(offset),
        StartAt::Earliest => list(OffsetSpec::Earliest)?,
        StartAt::Latest => list(OffsetSpec::Latest)?,
        StartAt::FromEnd(n) => {
            let (earliest, end) = (list(OffsetSpec::Earliest)?.unwrap_or(0), list(OffsetSpec::Latest)?.unwrap_or(0));
            Some(end.saturating_sub(n).max(earliest))
        }
        // No record that late: start at the end, where the next one will be.
        StartAt::TimestampMs(_) | StartAt::AgoMs(_) => {
            let ms = match at {
                StartAt::AgoMs(ago) => now_ms().saturating_sub(ago).max(0),
                StartAt::TimestampMs(ms) => ms,
                _ => unreachable!("matched above"),
            };
            match list(OffsetSpec::Timestamp(ms))? {
                Some(offset) => Some(offset),
                None => list(OffsetSpec::Latest)?,
            }
        }
    };
    start.ok_or_else(|| ClientError::Protocol(format!("the server has no offset for that position in partition {partition}")))
}

impl Part {
    /// Buffers the records of `fetched` from `fetch_at` on, within
    /// `share_bytes` decoded (see the module doc), and notes whether the
    /// partition's end was reached.
    fn ingest(&mut self, fetched: &FetchResult, share_bytes: u32) -> Result<(), ClientError> {
        let before = self.fetch_at;
        let (mut held_bytes, mut fits) = (0, true);
        for r in fetched.records_at(self.fetch_at) {
            let r = r?;
            if r.offset != self.fetch_at {
                let why = format!("partition {} skipped from offset {} to {}", self.partition, self.fetch_at, r.offset);
                return Err(ClientError::Protocol(why));
            }
            let record = OwnedRecord::new(self.partition, &r);
            let cost = record.held_bytes() + RECORD_COST_BYTES;
            // At least one record, so that the merge always moves on.
            if !self.buffered.is_empty() && held_bytes + cost > share_bytes as usize {
                fits = false;
                break;
            }
            held_bytes += cost;
            self.buffered.push_back(record);
            self.fetch_at = r.offset + 1;
        }
        // Halve the next fetch while its records overflow the share decoded,
        // grow it back while they fit in half of it.
        if !fits {
            self.fetch_bytes = (self.fetch_bytes / 2).max(FETCH_BYTES_MIN);
        } else if held_bytes < share_bytes as usize / 2 && fetched.batches.len() >= self.fetch_bytes as usize {
            self.fetch_bytes = (self.fetch_bytes.saturating_mul(2)).min(share_bytes);
        }
        self.at_end = fits && (self.fetch_at >= fetched.high_watermark || self.fetch_at == before);
        Ok(())
    }
}

impl Consumer<'_> {
    fn count_max(&self) -> u64 {
        self.args.count.unwrap_or(u64::MAX)
    }

    fn done(&self) -> bool {
        self.printed >= self.count_max() || (!self.args.follow && self.parts.iter().all(|p| p.at_end && p.buffered.is_empty()))
    }

    /// Fetches, prints and commits until done; a closed stdout ends it
    /// quietly and successfully (`strom consume | head`).
    fn run(&mut self, mut client: Client) -> Result<(), String> {
        let mut out = BufWriter::with_capacity(STDOUT_BUF_BYTES, std::io::stdout().lock());
        while !self.done() {
            if let Err(e) = self.fetch_round(&mut client).and_then(|()| self.commit(&mut client, false)) {
                if !(self.args.follow && e.is_retriable()) {
                    return Err(format!("reading topic \"{}\" failed: {e}", self.args.topic));
                }
                if self.lost_since.is_none() {
                    eprintln!("strom consume: lost the connection to {} ({e}); reconnecting", self.args.conn.addr);
                    self.lost_since = Some(Instant::now());
                }
                client = self.reconnect()?;
                // Subscriptions end with their connection.
                self.parts.iter_mut().for_each(|p| p.subscription = None);
                self.cancelled.clear();
                continue;
            }
            if self.lost_since.take().is_some() {
                eprintln!("strom consume: reconnected to {}; resuming", self.args.conn.addr);
            }
            let closed = self.print(&mut out)?;
            if closed {
                break;
            }
        }
        // At exit the group's position is committed whatever the interval.
        self.commit(&mut client, true).map_err(|e| format!("committing group positions failed: {e}"))
    }

    /// One fetch per partition whose buffer is empty, pipelined on one
    /// connection; with `--follow` and every partition caught up, each
    /// waits for records to arrive.
    fn fetch_round(&mut self, client: &mut Client) -> Result<(), ClientError> {
        if self.args.follow && self.parts.len() <= SUBSCRIBED_PARTITIONS_MAX {
            return self.push_round(client);
        }
        let caught_up = self.parts.iter().all(|p| p.at_end && p.buffered.is_empty());
        let wait = match (self.args.follow && caught_up, self.parts.len()) {
            (false, _) => Duration::ZERO,
            (true, 1) => FOLLOW_WAIT,
            (true, _) => FOLLOW_WAIT_MERGED,
        };
        let mut sent: Vec<(u64, usize)> = Vec::new();
        for (i, p) in self.parts.iter().enumerate() {
            if !p.buffered.is_empty() || (p.at_end && !self.args.follow) {
                continue;
            }
            let req = Request::Fetch {
                topic: &self.args.topic,
                partition: p.partition,
                offset: p.fetch_at,
                max_bytes: p.fetch_bytes,
                max_wait_ms: wait.as_millis() as u32,
            };
            sent.push((client.send(&req)?, i));
        }
        for _ in 0..sent.len() {
            let reply = client.recv()?;
            let &(_, i) = sent.iter().find(|(id, _)| *id == reply.request_id).ok_or_else(|| {
                ClientError::Protocol(format!("the server answered request {}, which this consume did not send", reply.request_id))
            })?;
            let p = &mut self.parts[i];
            let fetched = match reply.result? {
                OwnedResponse::Fetch(f) => f,
                other => return Err(ClientError::Protocol(format!("the server answered a fetch with a {:?} reply", other.api()))),
            };
            p.ingest(&fetched, self.share_bytes)?;
        }
        Ok(())
    }

    /// With `--follow`: subscribes each partition not subscribed on this
    /// connection from where it stopped, then buffers the next push.
    fn push_round(&mut self, client: &mut Client) -> Result<(), ClientError> {
        client.set_timeout(None)?;
        for p in self.parts.iter_mut().filter(|p| p.subscription.is_none()) {
            let start = SubscribeStart::Offset(p.fetch_at);
            let req = Request::Subscribe { topic: &self.args.topic, partition: p.partition, credit_bytes: self.share_bytes.into(), start };
            p.subscription = Some(client.send(&req)?);
        }
        loop {
            let reply = client.recv()?;
            if self.cancelled.contains(&reply.request_id) {
                // A cancelled subscription's pushes and end, and the Cancel's reply.
                if reply.api == strom::proto::Api::Cancel || reply.result.is_err() {
                    self.cancelled.remove(&reply.request_id);
                }
                continue;
            }
            let Some(p) = self.parts.iter_mut().find(|p| p.subscription == Some(reply.request_id)) else {
                return Err(ClientError::Protocol(format!(
                    "the server answered request {}, which this consume did not send",
                    reply.request_id
                )));
            };
            let push = match reply.result {
                Ok(OwnedResponse::Subscribe(push)) => push,
                Ok(other) => return Err(ClientError::Protocol(format!("the server pushed a {:?} reply", other.api()))),
                Err(e) => {
                    p.subscription = None;
                    return Err(e);
                }
            };
            p.ingest(&push.fetch, self.share_bytes)?;
            let id = reply.request_id;
            if p.fetch_at < push.fetch.next_offset {
                // Records past the share were dropped: subscribe again from them.
                p.subscription = None;
                self.cancelled.insert(id);
                self.cancelled.insert(client.send(&Request::Cancel { request: id })?);
            } else if push.batch_bytes() > 0 {
                client.send(&Request::Grant { subscription: id, bytes: push.batch_bytes() })?;
            }
            return Ok(());
        }
    }

    /// Prints buffered records in (timestamp, partition, offset) order
    /// while the order is known (see the module doc). Returns whether
    /// stdout was closed.
    fn print(&mut self, out: &mut impl Write) -> Result<bool, String> {
        let mut line = Vec::new();
        let mut written: Vec<(usize, u64)> = Vec::new();
        while self.printed < self.count_max() {
            // Without --follow, a partition that may still have records must show its next one first.
            if !self.args.follow && self.parts.iter().any(|p| p.buffered.is_empty() && !p.at_end) {
                break;
            }
            let next = self
                .parts
                .iter()
                .enumerate()
                .filter_map(|(i, p)| p.buffered.front().map(|r| ((r.timestamp_ms, r.partition, r.offset), i)))
                .min();
            let Some((_, i)) = next else { break };
            let r = self.parts[i].buffered.pop_front().expect("the partition has a front record");
            line.clear();
            self.output.write(&mut line, &self.args.topic, &r);
            if let Err(e) = out.write_all(&line) {
                return stdout_closed(e);
            }
            written.push((i, r.offset + 1));
            self.printed += 1;
        }
        if let Err(e) = out.flush() {
            return stdout_closed(e);
        }
        for (i, next) in written {
            self.parts[i].flushed_next = next;
        }
        Ok(false)
    }

    /// Commits each partition's flushed position to `--group` if it moved,
    /// at most once per COMMIT_INTERVAL unless `now`.
    fn commit(&mut self, client: &mut Client, now: bool) -> Result<(), ClientError> {
        let Some(group) = &self.args.group else { return Ok(()) };
        if !now && self.last_commit.elapsed() < COMMIT_INTERVAL {
            return Ok(());
        }
        for p in &mut self.parts {
            if p.committed_next != Some(p.flushed_next) {
                client.commit_offset(group, &self.args.topic, p.partition, p.flushed_next)?;
                p.committed_next = Some(p.flushed_next);
            }
        }
        self.last_commit = Instant::now();
        Ok(())
    }

    /// A new connection, retried with backoff until the outage has lasted
    /// RECONNECT_GIVE_UP. Fetch positions are kept, so nothing is repeated
    /// or skipped.
    fn reconnect(&self) -> Result<Client, String> {
        let lost_since = self.lost_since.unwrap_or_else(Instant::now);
        let mut backoff = RECONNECT_BACKOFF_MIN;
        loop {
            std::thread::sleep(backoff);
            match super::connect(&self.args.conn) {
                Ok(client) => return Ok(client),
                Err(e) if lost_since.elapsed() >= RECONNECT_GIVE_UP => {
                    return Err(format!("gave up reconnecting after {} s: {e}", RECONNECT_GIVE_UP.as_secs()));
                }
                Err(_) => backoff = (backoff * 2).min(RECONNECT_BACKOFF_MAX),
            }
        }
    }
}

/// A broken pipe means the reader has all it wanted: not an error.
fn stdout_closed(e: std::io::Error) -> Result<bool, String> {
    if e.kind() == ErrorKind::BrokenPipe { Ok(true) } else { Err(format!("writing to stdout failed: {e}")) }
}

#[cfg(test)]
mod tests {
    use super::*;
    use strom::wire::batch::{self, BatchBuilder};

    /// A fetch reply holding `n` one-byte records from offset 0, ending the partition.
    fn fetched(n: u64) -> FetchResult {
        let mut b = BatchBuilder::new(1_700_000_000_000);
        for _ in 0..n {
            b.push(1_700_000_000_000, None, Some(b"x"), &[]);
        }
        let mut batches = b.finish();
        batch::set_base_offset(&mut batches, 0);
        FetchResult { high_watermark: n, start_offset: 0, next_offset: n, batches }
    }

    fn part() -> Part {
        Part {
            partition: 0,
            fetch_at: 0,
            flushed_next: 0,
            committed_next: None,
            buffered: VecDeque::new(),
            at_end: false,
            fetch_bytes: FETCH_BYTES_MIN,
            subscription: None,
        }
    }

    // Proves: small records cannot multiply the merge's memory: a partition
    // buffers only what fits its share decoded, resumes fetching right
    // after the last record kept (not at the end), and asks for less next.
    #[test]
    fn ingest_keeps_to_the_share_decoded() {
        let share_bytes = 10 * (RECORD_COST_BYTES as u32 + 1);
        let mut p = part();
        p.fetch_bytes = 4 * FETCH_BYTES_MIN;
        p.ingest(&fetched(100), share_bytes).unwrap();
        assert_eq!(p.buffered.len(), 10);
        assert_eq!((p.fetch_at, p.at_end, p.fetch_bytes), (10, false, 2 * FETCH_BYTES_MIN));
        let mut whole = part();
        whole.ingest(&fetched(100), 1 << 20).unwrap();
        assert_eq!((whole.buffered.len(), whole.fetch_at, whole.at_end), (100, 100, true));
        assert_eq!(whole.buffered.back().map(|r| r.offset), Some(99));
    }
}
