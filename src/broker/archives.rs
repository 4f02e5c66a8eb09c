//! Archive topics: every archive of `strom serve --archive DIR` served
//! read-only beside the live topics, through the same commands (Fetch with
//! its long poll, ListOffsets, Query, Metadata, DescribeTopic, and the
//! subscriptions the server runs over Fetch).
//!
//! The [`Shelf`] opens every archive in DIR at start (footer, header and
//! index only: `crate::archive::reader`), keyed by topic name. The
//! dispatcher hands it any command naming an archive topic. What needs no
//! read is answered there, on the core (DescribeTopic, earliest and latest
//! offsets, every write refused with [`StromError::ReadOnly`]); what reads
//! the file goes to the `strom-archive` thread through a bounded channel,
//! since `Archive` reads with a blocking `pread` and a core thread must
//! never block. The thread answers through the command's `Respond`, which
//! any thread may call (as the admin thread does).
//!
//! An archive never grows, so a Fetch at a partition's end waits its whole
//! `max_wait` and answers empty: parked on the thread's timer list, not by
//! sleeping, so a subscription or a long poll at the end costs one wake-up
//! per wait, not a spin. A range query whose end lies past an archive's
//! end is answered at once with what exists and `open` set, as a live
//! query whose wait ran out (waiting could never bring its end).
//!
//! Bounds: [`ARCHIVE_JOBS_MAX`] jobs queued (one more is refused with
//! Overloaded), [`ARCHIVE_PARKED_MAX`] parked polls (one more answers
//! empty at once, as a live core at its parked-read limit does), and a
//! Fetch's answer is built under the asker's core's reply budget, reserved
//! before the read as live fetches reserve it, waiting in order while there
//! is no room ([`BUDGET_WAITS_MAX`] at most).
use std::collections::{BTreeMap, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::command::{Answer, BrokerError, Command, Fetched, OffsetQuery, ReplyBuf, Responder};
use crate::archive::{Archive, ArchiveError};
use crate::catalog::{PartitionDescription, TopicDescription, TopicMeta, TopicRetention};
use crate::core::query::{QueryBounds, QueryRef, QuerySpec};
use crate::error::{IoOp, Result, StromError};
use crate::partition::Retention;
use crate::read::{IndexSeek, ReplyBudget};

/// Jobs queued for the archive thread, at most; one more is refused with
/// Overloaded (the client retries), so a flood of reads holds bounded memory.
pub const ARCHIVE_JOBS_MAX: usize = 1024;
/// Fetches parked at an archive partition's end, at most (each a few
/// hundred bytes); one more answers empty at once.
pub const ARCHIVE_PARKED_MAX: usize = 65_536;
/// Fetches waiting for reply budget, at most; one more is refused with Overloaded.
const BUDGET_WAITS_MAX: usize = 4096;
/// How often parked polls are looked at for an asker gone or a release
/// (a Kafka Fetch whose other partitions answered enough), while any are
/// parked: a release is answered within this.
const SWEEP: Duration = Duration::from_millis(50);
/// How soon a fetch waiting for reply budget tries again (only while one
/// waits: the budget rings cores, not this thread, when bytes return).
const BUDGET_RETRY: Duration = Duration::from_millis(1);
/// A parked poll's wait when the one asked cannot be added to now: a year.
const FOREVER: Duration = Duration::from_secs(365 * 24 * 3600);

/// The archive topics of a server, and the thread that reads them.
pub struct Shelf {
    dir: PathBuf,
    archives: BTreeMap<String, Arc<Archive>>,
    /// Taken at stop, so that the thread sees the end of its jobs.
    tx: Mutex<Option<SyncSender<Job>>>,
    thread: Mutex<Option<JoinHandle<()>>>,
    /// Jobs the thread took: fetches (those parked at the end among them),
    /// lookups, queries.
    reads: Arc<AtomicU64>,
}

/// How the asker of a command wants a Fetch's answer: what the dispatcher
/// of its core knows.
pub(crate) struct Asker {
    /// Bytes before the batches for the codec's reply header.
    pub headroom: usize,
    pub budget: Option<Arc<ReplyBudget>>,
    pub gone: Option<Arc<AtomicBool>>,
    pub released: Option<Arc<AtomicBool>>,
    /// The broker's largest batch: a fetch reserves room for at least one.
    pub batch_bytes_max: usize,
    /// Cores of the server: archive partitions are spread over them in
    /// Metadata, so that clients connecting to a partition's core spread too.
    pub cores: usize,
}

struct Job {
    archive: Arc<Archive>,
    partition: u32,
    work: Work,
    reply: Responder,
}

enum Work {
    Fetch { offset: u64, max_bytes: usize, wait: Duration, asker: Asker },
    AtTime(i64),
    AtIndex(IndexSeek),
    Query(QuerySpec),
}

impl Shelf {
    /// Opens every archive in `dir` (names ending in `.tmp`, archives being
    /// written, and subdirectories are skipped) and starts the thread. A
    /// file that is not a sound archive, or a topic in two archives, is
    /// refused, naming the files.
    pub fn open(dir: &Path) -> Result<Arc<Shelf>> {
        let refuse = |why: String| StromError::InvalidArgument(format!("--archive {}: {why}", dir.display()));
        let entries = std::fs::read_dir(dir).map_err(|e| refuse(format!("cannot list the directory: {e}")))?;
        let mut paths = Vec::new();
        for entry in entries {
            let entry = entry.map_err(|e| refuse(format!("cannot list the directory: {e}")))?;
            let path = entry.path();
            let skip = path.extension().is_some_and(|x| x == "tmp") || entry.file_type().is_ok_and(|t| t.is_dir());
            if !skip {
                paths.push(path);
            }
        }
        paths.sort();
        let mut archives: BTreeMap<String, Arc<Archive>> = BTreeMap::new();
        for path in paths {
            let a = Archive::open(&path).map_err(|e| refuse(format!("{} is not a sound archive: {e}", path.display())))?;
            if let Some(other) = archives.get(a.topic()) {
                return Err(refuse(format!(
                    "topic {:?} is in two archives, {} and {}: keep one",
                    a.topic(),
                    other.path().display(),
                    path.display()
                )));
            }
            archives.insert(a.topic().to_string(), Arc::new(a));
        }
        let (tx, rx) = mpsc::sync_channel(ARCHIVE_JOBS_MAX);
        let reads = Arc::new(AtomicU64::new(0));
        let worker =
            Worker { rx, parked: Vec::new(), next_deadline: Instant::now() + FOREVER, budget_waits: VecDeque::new(), reads: reads.clone() };
        let thread = std::thread::Builder::new()
            .name("strom-archive".into())
            .spawn(move || worker.run())
            .map_err(|e| StromError::io(IoOp::Create, "thread", &e))?;
        let shelf = Shelf { dir: dir.to_path_buf(), archives, tx: Mutex::new(Some(tx)), thread: Mutex::new(Some(thread)), reads };
        tracing::info!(dir = %dir.display(), archives = shelf.archives.len(), "archives opened");
        Ok(Arc::new(shelf))
    }

    /// The archive serving `topic`, if one does.
    pub fn get(&self, topic: &str) -> Option<&Arc<Archive>> {
        self.archives.get(topic)
    }

    /// The archive topics, by name.
    pub fn topics(&self) -> impl Iterator<Item = &str> {
        self.archives.keys().map(String::as_str)
    }

    /// Refuses a topic that is both in the data directory's catalog and
    /// among the archives: a name must mean one thing.
    pub fn check_clash(&self, live: &BTreeMap<String, TopicMeta>, data_dir: &Path) -> Result<()> {
        match self.archives.iter().find(|(name, _)| live.contains_key(*name)) {
            Some((name, a)) => Err(StromError::InvalidArgument(format!(
                "topic {name:?} is both in the data directory {} (its catalog) and in the archive {}: remove one, or serve the archive from another server",
                data_dir.display(),
                a.path().display()
            ))),
            None => Ok(()),
        }
    }

    /// Jobs the archive thread took since start (each a fetch, parked or
    /// not, a lookup or a query): a subscription at an archive's end adds
    /// one per long poll, not one per spin.
    pub fn reads(&self) -> u64 {
        self.reads.load(Ordering::Relaxed)
    }

    /// Bytes read from the archive files since they were opened.
    pub fn read_bytes(&self) -> u64 {
        self.archives.values().map(|a| a.bytes_read()).sum()
    }

    /// Whether `cmd` names an archive topic (and is the shelf's to answer).
    pub(crate) fn claims(&self, cmd: &Command<'_>) -> bool {
        topic_of(cmd).is_some_and(|t| self.archives.contains_key(t))
    }

    /// Where Metadata places an archive topic's partitions: spread over the
    /// cores (any core serves them: the shelf is shared).
    pub(crate) fn partition_cores(&self, topic: &str, cores: usize) -> Option<Vec<u16>> {
        let a = self.archives.get(topic)?;
        Some((0..a.partition_count()).map(|p| (p as usize % cores.max(1)) as u16).collect())
    }

    /// Answers a command [`Shelf::claims`]: at once when it needs no read,
    /// else on the archive thread.
    pub(crate) fn execute(&self, cmd: Command<'_>, asker: Asker, reply: Responder) {
        let Some(archive) = topic_of(&cmd).and_then(|t| self.archives.get(t)).cloned() else {
            return reply(Err(BrokerError::Internal("a command without an archive topic reached the shelf")));
        };
        let topic = archive.topic().to_string();
        let refused =
            |what: &str| Err(StromError::ReadOnly(format!("{what} archive topic {topic:?} ({})", archive.path().display())).into());
        let (partition, work) = match cmd {
            Command::Produce { .. } => return reply(refused("producing to")),
            Command::CreateTopic { .. } => return reply(refused("creating a topic named as")),
            Command::AlterTopic { .. } => return reply(refused("altering")),
            Command::DeleteTopic { .. } => return reply(refused("deleting")),
            Command::CommitOffset { .. } => return reply(refused("committing an offset of")),
            Command::DescribeTopic { .. } => return reply(Ok(Answer::TopicDescribed(describe(&archive, asker.cores)))),
            Command::Fetch { partition, offset, max_bytes, max_wait, .. } => {
                (partition, Work::Fetch { offset, max_bytes, wait: max_wait, asker })
            }
            Command::ListOffsets { partition, query, .. } => match query {
                OffsetQuery::Earliest | OffsetQuery::Latest => {
                    let answer = archive
                        .partition(partition)
                        .map_err(|_| unknown(&topic, partition))
                        .map(|d| Answer::Offset(Some(if query == OffsetQuery::Earliest { d.start_offset } else { d.end_offset })));
                    return reply(answer.map_err(Into::into));
                }
                OffsetQuery::AtTime(ts_ms) => (partition, Work::AtTime(ts_ms)),
                OffsetQuery::AtIndex(seek) => (partition, Work::AtIndex(seek)),
            },
            Command::Query { partition, spec, .. } => (partition, Work::Query(spec)),
            _ => return reply(Err(BrokerError::Internal("a command the shelf does not serve reached it"))),
        };
        if partition >= archive.partition_count() {
            return reply(Err(unknown(&topic, partition).into()));
        }
        let job = Job { archive, partition, work, reply };
        let tx = self.tx.lock().expect("shelf sender").clone();
        let Some(tx) = tx else { return (job.reply)(Err(StromError::ShuttingDown.into())) };
        match tx.try_send(job) {
            Ok(()) => {}
            Err(TrySendError::Full(job)) => (job.reply)(Err(StromError::Overloaded("archive reads queued").into())),
            Err(TrySendError::Disconnected(job)) => (job.reply)(Err(StromError::ShuttingDown.into())),
        }
    }

    /// Ends the thread: the jobs queued now are done, parked polls answer
    /// empty at once, and later commands are refused with ShuttingDown.
    pub fn stop(&self) {
        if let Ok(mut tx) = self.tx.lock() {
            tx.take();
        }
        if let Some(t) = self.thread.lock().ok().and_then(|mut t| t.take()) {
            let _ = t.join();
        }
    }

    /// The directory the archives were opened from.
    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

impl Drop for Shelf {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The topic a command the shelf may serve names; None for the others
/// (Metadata is merged by the dispatcher; FetchOffset reads the data
/// directory's committed offsets, whatever the topic).
fn topic_of<'a>(cmd: &Command<'a>) -> Option<&'a str> {
    match *cmd {
        Command::Produce { topic, .. }
        | Command::Fetch { topic, .. }
        | Command::ListOffsets { topic, .. }
        | Command::CreateTopic { topic, .. }
        | Command::AlterTopic { topic, .. }
        | Command::DescribeTopic { topic }
        | Command::DeleteTopic { topic }
        | Command::CommitOffset { topic, .. }
        | Command::Query { topic, .. } => Some(topic),
        _ => None,
    }
}

fn unknown(topic: &str, partition: u32) -> StromError {
    StromError::UnknownPartition { topic: topic.to_string(), partition }
}

/// An archive topic as DescribeTopic tells it: no retention (nothing is
/// ever removed from an archive), each partition's offsets and data bytes.
fn describe(a: &Archive, cores: usize) -> TopicDescription {
    let partitions = (0..a.partition_count())
        .filter_map(|p| a.partition(p).ok().map(|d| (p as usize, d)))
        .map(|(p, d)| PartitionDescription {
            start_offset: d.start_offset,
            end_offset: d.end_offset,
            bytes: d.data_bytes,
            core: (p % cores.max(1)) as u16,
        })
        .collect();
    TopicDescription {
        name: a.topic().to_string(),
        retention: TopicRetention::default(),
        effective: Retention::default(),
        partitions,
        indices: a.indices().to_vec(),
    }
}

/// An archive's error as the broker tells it.
fn failed(a: &Archive, e: ArchiveError) -> StromError {
    match e {
        ArchiveError::Io { path, source, .. } => StromError::io(IoOp::Read, path, &source),
        ArchiveError::Damaged(d) => {
            StromError::Corrupt { path: a.path().to_path_buf(), pos: d.at, reason: format!("archive damaged: {}", d.what) }
        }
        ArchiveError::Refused(why) => StromError::InvalidArgument(why),
        ArchiveError::OffsetOutOfRange { offset, start_offset, end_offset, .. } => {
            StromError::OffsetOutOfRange { offset, earliest: start_offset, end: end_offset }
        }
    }
}

/// A Fetch parked at its partition's end.
struct Parked {
    deadline: Instant,
    since: Instant,
    offset: u64,
    headroom: usize,
    gone: Option<Arc<AtomicBool>>,
    released: Option<Arc<AtomicBool>>,
    end_offset: u64,
    start_offset: u64,
    reply: Responder,
}

/// The archive thread's state.
struct Worker {
    rx: Receiver<Job>,
    parked: Vec<Parked>,
    /// The earliest deadline among `parked` (far ahead when none is).
    next_deadline: Instant,
    /// Fetches waiting for reply budget, in arrival order.
    budget_waits: VecDeque<Job>,
    reads: Arc<AtomicU64>,
}

impl Worker {
    /// Takes jobs until the shelf stops. With nothing parked and no budget
    /// wait it sleeps in `recv`; with polls parked it wakes at the earliest
    /// deadline or the next sweep; a job costs no walk of the parked polls.
    fn run(mut self) {
        let mut next_sweep = Instant::now() + SWEEP;
        loop {
            let now = Instant::now();
            let wake = if !self.budget_waits.is_empty() {
                Some(BUDGET_RETRY)
            } else {
                (!self.parked.is_empty()).then(|| self.next_deadline.min(next_sweep).saturating_duration_since(now))
            };
            let got = match wake {
                Some(t) => self.rx.recv_timeout(t),
                None => self.rx.recv().map_err(|_| RecvTimeoutError::Disconnected),
            };
            match got {
                Ok(job) => self.job(job),
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => return self.finish(),
            }
            self.retry_budget_waits();
            let now = Instant::now();
            let sweep = now >= next_sweep;
            if sweep {
                next_sweep = now + SWEEP;
            }
            if sweep || now >= self.next_deadline {
                self.expire(now, sweep);
            }
        }
    }

    /// The end: parked polls answer empty now; budget waits are refused.
    fn finish(&mut self) {
        for p in std::mem::take(&mut self.parked) {
            answer_empty(p, true);
        }
        for job in std::mem::take(&mut self.budget_waits) {
            (job.reply)(Err(StromError::ShuttingDown.into()));
        }
    }

    /// Answers the parked polls whose wait is over or that were released,
    /// and (on a sweep) drops those whose asker went away.
    fn expire(&mut self, now: Instant, sweep: bool) {
        self.next_deadline = now + FOREVER;
        let mut i = 0;
        while i < self.parked.len() {
            let p = &self.parked[i];
            let flag = |f: &Option<Arc<AtomicBool>>| f.as_ref().is_some_and(|f| f.load(Ordering::Relaxed));
            let gone = sweep && flag(&p.gone);
            if gone || now >= p.deadline || flag(&p.released) {
                let p = self.parked.swap_remove(i);
                if gone {
                    (p.reply)(Err(StromError::Cancelled.into()));
                } else {
                    answer_empty(p, true);
                }
            } else {
                self.next_deadline = self.next_deadline.min(p.deadline);
                i += 1;
            }
        }
    }

    fn job(&mut self, job: Job) {
        self.reads.fetch_add(1, Ordering::Relaxed);
        if matches!(job.work, Work::Fetch { .. }) {
            // Behind those already waiting for room, in order.
            if !self.budget_waits.is_empty() {
                return self.wait_budget(job);
            }
            if let Some(job) = self.fetch(job) {
                self.wait_budget(job);
            }
            return;
        }
        let Job { archive, partition, work, reply } = job;
        let answer = match work {
            Work::Fetch { .. } => unreachable!("fetches are run above"),
            Work::AtTime(ts_ms) => at_time(&archive, partition, ts_ms).map(Answer::OffsetAtTime),
            Work::AtIndex(seek) => at_index(&archive, partition, &seek).map(Answer::Offset),
            Work::Query(spec) => query(&archive, partition, &spec).map(Answer::Queried),
        };
        reply(answer.map_err(|e| failed(&archive, e).into()));
    }

    fn wait_budget(&mut self, job: Job) {
        if self.budget_waits.len() >= BUDGET_WAITS_MAX {
            return (job.reply)(Err(StromError::Overloaded("archive reads waiting for reply budget").into()));
        }
        self.budget_waits.push_back(job);
    }

    fn retry_budget_waits(&mut self) {
        while let Some(job) = self.budget_waits.pop_front() {
            if let Some(job) = self.fetch(job) {
                self.budget_waits.push_front(job);
                return;
            }
        }
    }

    /// Runs a Fetch: answered, parked, or given back when its answer finds
    /// no room in the reply budget now.
    fn fetch(&mut self, job: Job) -> Option<Job> {
        let Job { archive, partition, work: Work::Fetch { offset, max_bytes, wait, asker }, reply } = job else {
            unreachable!("only fetches wait for budget")
        };
        if asker.gone.as_ref().is_some_and(|g| g.load(Ordering::Relaxed)) {
            reply(Err(StromError::Cancelled.into()));
            return None;
        }
        let d = match archive.partition(partition) {
            Ok(d) => *d,
            Err(e) => {
                reply(Err(failed(&archive, e).into()));
                return None;
            }
        };
        if offset == d.end_offset {
            let now = Instant::now();
            let p = Parked {
                // A wait past what an Instant can hold is a wait forever (until stop).
                deadline: now.checked_add(wait).unwrap_or(now + FOREVER),
                since: now,
                offset,
                headroom: asker.headroom,
                gone: asker.gone,
                released: asker.released,
                end_offset: d.end_offset,
                start_offset: d.start_offset,
                reply,
            };
            // Parking refused at the limit: an empty answer at once, as a
            // live core at its parked-read limit gives.
            if wait.is_zero() || self.parked.len() >= ARCHIVE_PARKED_MAX {
                answer_empty(p, false);
            } else {
                self.next_deadline = self.next_deadline.min(p.deadline);
                self.parked.push(p);
            }
            return None;
        }
        // As a live fetch: room for its largest answer, taken before the read.
        let reserved = asker.headroom + max_bytes.max(asker.batch_bytes_max);
        if let Some(budget) = &asker.budget
            && !budget.try_take(reserved)
        {
            return Some(Job { archive, partition, work: Work::Fetch { offset, max_bytes, wait, asker }, reply });
        }
        let res = archive.fetch(partition, offset, max_bytes);
        let budget_bytes = asker.budget.as_ref().map_or(0, |budget| {
            // The room this answer does not fill goes back now; a batch
            // larger than the reservation (an archive made by a server with
            // larger batches) is held at the reservation.
            let used = res.as_ref().map_or(0, |r| asker.headroom + r.batches.len()).min(reserved);
            budget.release(reserved - used);
            used
        });
        let answer = res.map_err(|e| BrokerError::from(failed(&archive, e))).map(|r| {
            let mut bytes = Vec::with_capacity(asker.headroom + r.batches.len());
            bytes.resize(asker.headroom, 0);
            bytes.extend_from_slice(&r.batches);
            Answer::Fetched(Fetched {
                bytes: ReplyBuf::Heap(bytes),
                headroom: asker.headroom,
                high_watermark: r.high_watermark,
                start_offset: r.start_offset,
                next_offset: r.next_offset,
                parked_ns: 0,
                budget_bytes,
            })
        });
        reply(answer);
        None
    }
}

/// A parked poll's answer: no batches, the wait it spent.
/// One never parked (no wait asked, or the parked limit reached) says it
/// waited 0 ns: a subscription counts those, and ends with Overloaded
/// rather than asking again at once forever.
fn answer_empty(p: Parked, parked: bool) {
    let parked_ns = if parked { u64::try_from(p.since.elapsed().as_nanos()).unwrap_or(u64::MAX).max(1) } else { 0 };
    (p.reply)(Ok(Answer::Fetched(Fetched {
        bytes: ReplyBuf::Heap(vec![0; p.headroom]),
        headroom: p.headroom,
        high_watermark: p.end_offset,
        start_offset: p.start_offset,
        next_offset: p.offset,
        parked_ns,
        budget_bytes: 0,
    })))
}

/// ListOffsets by time: the first offset stamped at or after `ts_ms`, and
/// that record's own timestamp (Kafka answers both).
fn at_time(a: &Archive, p: u32, ts_ms: i64) -> std::result::Result<Option<(u64, i64)>, ArchiveError> {
    let Some(offset) = a.offset_at_time(p, ts_ms)? else { return Ok(None) };
    let batch = a.fetch(p, offset, 1)?;
    // A compressed batch's records cannot be read here: its offset is the
    // answer (as `offset_at_time` gives), stamped with the time asked.
    let ts = batch.records_at(offset).next().and_then(|r| r.ok()).map_or(ts_ms, |r| r.timestamp_ms);
    Ok(Some((offset, ts)))
}

/// ListOffsets by a named index value: the first record at or above it
/// (above it, when strict).
fn at_index(a: &Archive, p: u32, seek: &IndexSeek) -> std::result::Result<Option<u64>, ArchiveError> {
    match if seek.strict { seek.value.checked_add(1) } else { Some(seek.value) } {
        Some(v) => a.offset_for_index(p, &seek.name, v),
        // Nothing is above the largest value; the name must still exist.
        None => a.offset_for_index(p, &seek.name, i64::MAX).map(|_| None),
    }
}

/// A range query of an archive partition, as `core/query.rs` answers a
/// live one, except that it never waits: an end past the archive's end
/// can never come, so the range is what exists, and `open` says so.
fn query(a: &Archive, p: u32, spec: &QuerySpec) -> std::result::Result<QueryBounds, ArchiveError> {
    let d = *a.partition(p)?;
    let (start, end_now) = (d.start_offset, d.end_offset);
    let (end, open) = match &spec.to {
        QueryRef::Offset(o) if *o >= 0 => {
            let o = *o as u64;
            if o < end_now { (o + 1, false) } else { (end_now, true) }
        }
        QueryRef::Offset(back) => (end_now.saturating_sub(back.unsigned_abs() - 1), false),
        // The last record at or below the value ends where the first above it starts.
        QueryRef::Index { name, value } => match at_index(a, p, &IndexSeek { name: name.clone(), value: *value, strict: true })? {
            Some(above) => (above, false),
            None => (end_now, true),
        },
    };
    let from = match &spec.from {
        QueryRef::Offset(o) if *o >= 0 => *o as u64,
        QueryRef::Offset(o) => end_now.saturating_sub(o.unsigned_abs()),
        QueryRef::Index { name, value } => a.offset_for_index(p, name, *value)?.unwrap_or(end_now),
    };
    Ok(QueryBounds { from: from.max(start), end: end.min(end_now), open, high_watermark: end_now, start_offset: start })
}

#[cfg(test)]
#[path = "archives_tests.rs"]
mod tests;
