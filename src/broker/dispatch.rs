//! The broker's part on one core: commands in, core requests out.
//!
//! A command for a partition of this core becomes a request the core takes
//! at once ([`Host::handle`]), so it joins this tick's group commit; one for
//! another core's partition goes to that core's mailbox through the
//! [`Outbox`]. Metadata is answered here from the directory snapshot; topic
//! admin and committed offsets go to the [`admin`](super::admin) thread
//! (they wait for every core, and a core must never wait for itself).
use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use super::Broker;
use super::admin::{Admin, Job};
use super::archives::{Asker, Shelf};
use super::command::{Answer, Batches, BrokerError, Command, OffsetQuery, Respond, Responder, TopicPlacement};
use super::forward::{OUTBOX_RETRY_NS, Outbox};
use super::many::Gather;
use super::requests::{self, Layout};
use crate::catalog::{TopicMeta, pid_in};
use crate::core::{Request, ValidBatch};
use crate::error::{Result, StromError};
use crate::metrics::{BrokerMetrics, Metrics};
use crate::partition::Pid;
use crate::read::{Fetch, ReplyBudget};
use crate::stats::StageReport;

/// What the broker needs from the core it runs on.
pub trait Host {
    /// Takes a request on this core now.
    fn handle(&mut self, req: Request);
    /// Gathers the per-stage latency of the requests served on every core
    /// (and resets it if `reset`); `done` gets the merged rows.
    fn gather_stages(&mut self, reset: bool, per_core: bool, done: Box<dyn FnOnce(StageReport) + Send>);
    /// Gathers every core's metrics registry (its server's sections, this
    /// dispatcher's among them, with its core's); `done` gets them in core
    /// order.
    fn gather_metrics(&mut self, done: Box<dyn FnOnce(Vec<Option<Metrics>>) + Send>);
    /// The largest request frame the server this core runs reads.
    fn frame_bytes_max(&self) -> usize;
    /// Set when the asker of the command being executed goes away.
    fn asker_gone(&mut self) -> Option<Arc<AtomicBool>> {
        None
    }
    /// Whether the asker may run `cmd` ([`crate::auth::check`]; each of a
    /// Many's commands is asked alone). Everything, unless authentication
    /// is on.
    fn authorize(&self, _cmd: &Command<'_>) -> std::result::Result<(), BrokerError> {
        Ok(())
    }
    /// Whether a Metadata of every topic lists `topic` to the asker.
    fn sees(&self, _topic: &str) -> bool {
        true
    }
}

/// Turns the commands that arrive on one core into requests.
pub struct Dispatcher {
    core_id: usize,
    broker: Arc<Broker>,
    admin: Arc<Admin>,
    /// Each core's own address, answered in Metadata.
    core_addrs: Arc<[String]>,
    /// Bytes a Fetch's answer reserves before its batches: what the codec
    /// of this core's connections needs for its reply header.
    fetch_headroom: usize,
    /// Room for this core's connections' Fetch answers, if bounded.
    reply_budget: Option<Arc<ReplyBudget>>,
    topics_version: u64,
    topics: Arc<BTreeMap<String, TopicMeta>>,
    outbox: Outbox,
    /// The broker's section of its core's metrics.
    metrics: BrokerMetrics,
    /// Permission refusals logged.
    denied_log: crate::server::LogLimit,
    /// The archive topics served beside the live ones (`--archive DIR`).
    shelf: Option<Arc<Shelf>>,
}

impl Dispatcher {
    pub(crate) fn new(core_id: usize, broker: Arc<Broker>, admin: Arc<Admin>, core_addrs: Arc<[String]>, fetch_headroom: usize) -> Self {
        let topics_version = broker.directory().version();
        let topics = broker.directory().snapshot();
        Dispatcher {
            core_id,
            broker,
            admin,
            core_addrs,
            fetch_headroom,
            reply_budget: None,
            topics_version,
            topics,
            outbox: Outbox::default(),
            metrics: BrokerMetrics::default(),
            denied_log: Default::default(),
            shelf: None,
        }
    }

    /// Commands naming one of `shelf`'s topics are its to answer.
    pub(crate) fn with_shelf(mut self, shelf: Option<Arc<Shelf>>) -> Self {
        self.shelf = shelf;
        self
    }

    /// Fetch answers for this core's connections are built under `budget`.
    pub(crate) fn with_reply_budget(mut self, budget: Arc<ReplyBudget>) -> Self {
        self.reply_budget = Some(budget);
        self
    }

    /// The broker's section of its core's metrics. The shelf's counts are
    /// the whole server's: core 0 carries them, so that the cores' sum
    /// counts them once.
    pub fn metrics(&self) -> BrokerMetrics {
        let mut m = self.metrics;
        if let Some(shelf) = self.shelf.as_ref().filter(|_| self.core_id == 0) {
            m.archive_reads = shelf.reads();
            m.archive_read_bytes = shelf.read_bytes();
        }
        m
    }

    /// True while requests wait for room in another core's mailbox: the
    /// core should read no more requests until they are gone.
    pub fn waiting(&self) -> bool {
        self.outbox.is_waiting()
    }

    /// How soon [`Dispatcher::flush`] should run again, if anything waits.
    pub fn retry_in_ns(&self) -> Option<u64> {
        self.waiting().then_some(OUTBOX_RETRY_NS)
    }

    /// Sends what waits for room in other cores' mailboxes, in order.
    pub fn flush(&mut self) {
        let broker = &self.broker;
        self.outbox.flush(|core| broker.route(core));
    }

    /// Executes one command; `reply` gets its answer, exactly once.
    pub fn execute(&mut self, host: &mut impl Host, cmd: Command<'_>, reply: impl Respond) {
        if let Err(e) = host.authorize(&cmd) {
            self.denied(&e);
            return reply(Err(e));
        }
        if let Some(shelf) = self.shelf.clone().filter(|s| s.claims(&cmd)) {
            let asker = self.asker(host.asker_gone(), None);
            return shelf.execute(cmd, asker, Box::new(reply));
        }
        if let Some(what) = self.broker.read_only().then(|| writes(&cmd)).flatten() {
            return reply(Err(StromError::ReadOnly(what.to_string()).into()));
        }
        match cmd {
            Command::Produce { topic, partition, batches } => {
                if let Some((pid, reply)) = self.resolve(topic, partition, reply) {
                    let names = self.topics().get(topic).map(|t| t.indices.clone()).unwrap_or_else(|| Vec::new().into());
                    self.produce(host, pid, batches, &names, reply)
                }
            }
            Command::Fetch { topic, partition, offset, max_bytes, max_wait } => {
                if let Some((pid, reply)) = self.resolve(topic, partition, reply) {
                    // Only the asker's own core may send from its registered buffers.
                    let registered = self.broker.router().core_of(pid) == self.core_id;
                    let how = FetchHow { registered, gone: host.asker_gone(), released: None };
                    self.fetch(host, pid, Fetch { offset, max_bytes, max_wait_ns: max_wait.as_nanos() as u64 }, how, reply)
                }
            }
            Command::Many { commands, release_at_bytes } => self.many(host, commands, release_at_bytes, Box::new(reply)),
            Command::Protocol(job) => job.run(Box::new(reply)),
            Command::ListOffsets { topic, partition, query } => {
                if let Some((pid, reply)) = self.resolve(topic, partition, reply) {
                    self.list_offsets(host, pid, query, reply)
                }
            }
            Command::Metadata { topics } => reply(self.metadata(&topics, |t| host.sees(t))),
            Command::CreateTopic { topic, partitions, retention, indices } => {
                let indices = indices.iter().map(|s| s.to_string()).collect();
                self.admin(Job::CreateTopic { name: topic.to_string(), partitions, retention, indices, reply: Box::new(reply) })
            }
            Command::AlterTopic { topic, ms, bytes } => {
                self.admin(Job::AlterTopic { name: topic.to_string(), ms, bytes, reply: Box::new(reply) })
            }
            Command::DescribeTopic { topic } => self.admin(Job::DescribeTopic { name: topic.to_string(), reply: Box::new(reply) }),
            Command::DeleteTopic { topic } => self.admin(Job::DeleteTopic { name: topic.to_string(), reply: Box::new(reply) }),
            Command::CommitOffset { group, topic, partition, offset, metadata } => self.admin(Job::Commit {
                group: group.to_string(),
                topic: topic.to_string(),
                partition,
                offset,
                metadata: metadata.to_string(),
                reply: Box::new(reply),
            }),
            Command::FetchOffset { group, topic, partition } => {
                self.admin(Job::Fetch { group: group.to_string(), topic: topic.to_string(), partition, reply: Box::new(reply) })
            }
            // Every core adds its histograms when it next ticks; the last
            // to add sends the reply.
            Command::Stats { reset, per_core } => host.gather_stages(reset, per_core, Box::new(move |rows| reply(Ok(Answer::Stats(rows))))),
            // The same way: every core adds its registry when it next ticks.
            Command::Metrics => host.gather_metrics(Box::new(move |cores| reply(Ok(Answer::Metrics(cores))))),
            Command::Query { topic, partition, spec } => {
                if let Some((pid, reply)) = self.resolve(topic, partition, reply) {
                    let gone = host.asker_gone();
                    let req = requests::query(pid, spec, gone, move |res| reply(res.map(Answer::Queried).map_err(BrokerError::Failed)));
                    self.route(host, pid, req);
                }
            }
            Command::ServerInfo => reply(Ok(Answer::ServerInfo { limits: self.broker.limits(), frame_bytes_max: host.frame_bytes_max() })),
            // The server's connections serve these themselves (`server/stream.rs`).
            Command::Subscribe { .. } | Command::Grant { .. } | Command::Cancel { .. } => {
                reply(Err(BrokerError::Internal("a streaming request reached the broker")))
            }
            Command::Authenticate { .. } => reply(Err(BrokerError::Internal("an Authenticate reached the broker"))),
        }
    }

    /// Counts and logs a request refused for a missing permission (a
    /// Subscribe's is checked by the server, and told here too).
    pub fn denied(&mut self, e: &BrokerError) {
        self.metrics.denied += 1;
        if let Some(suppressed) = self.denied_log.allow() {
            tracing::info!(core = self.core_id, suppressed, "request refused: {e}");
        }
    }

    fn topics(&mut self) -> &BTreeMap<String, TopicMeta> {
        let v = self.broker.directory().version();
        if v != self.topics_version {
            self.topics = self.broker.directory().snapshot();
            self.topics_version = v;
        }
        &self.topics
    }

    /// The partition's id, or None once `reply` was told why there is none.
    fn resolve<R: Respond>(&mut self, topic: &str, partition: u32, reply: R) -> Option<(Pid, R)> {
        match pid_in(self.topics(), topic, partition) {
            Ok(pid) => Some((pid, reply)),
            Err(e) => {
                reply(Err(e.into()));
                None
            }
        }
    }

    fn produce(&mut self, host: &mut impl Host, pid: Pid, batches: Batches<'_>, names: &[String], reply: impl Respond) {
        // Validated (CRC included, and the named index values read) here,
        // on the asker's core, and copied out of the frame once.
        let valid = match validate(batches, self.broker.batch_bytes_max(), names) {
            Ok(v) => v,
            Err(e) => return reply(Err(e)),
        };
        let req = requests::produce(pid, valid, move |res| reply(res.map(Answer::Produced)));
        self.route(host, pid, req);
    }

    fn fetch(&mut self, host: &mut impl Host, pid: Pid, f: Fetch, how: FetchHow, reply: impl Respond) {
        let FetchHow { registered, gone, released } = how;
        let layout = Layout { headroom: self.fetch_headroom, registered, budget: self.reply_budget.clone(), gone, released };
        let done = Box::new(move |res: Result<_>| reply(res.map(|rr| Answer::Fetched(requests::fetched(rr))).map_err(BrokerError::Failed)));
        let req = requests::fetch(pid, f, layout, done);
        self.route(host, pid, req);
    }

    /// Runs the commands of a [`Command::Many`] at once and answers them
    /// together ([`Gather`]). Its Fetches are built on the heap (their
    /// answers are copied into one reply, possibly off this core), and
    /// released together once the answers hold `release_at_bytes`.
    fn many(&mut self, host: &mut impl Host, commands: Vec<Command<'_>>, release_at_bytes: Option<usize>, reply: Responder) {
        if commands.is_empty() {
            // Nothing to gather (a request its codec answers alone).
            return reply(Ok(Answer::Many(Vec::new())));
        }
        let mut fetch_cores: Vec<usize> = Vec::new();
        for c in &commands {
            if let Command::Fetch { topic, partition, .. } = c
                && let Ok(pid) = pid_in(self.topics(), topic, *partition)
            {
                let core = self.broker.router().core_of(pid);
                if !fetch_cores.contains(&core) {
                    fetch_cores.push(core);
                }
            }
        }
        let routes = fetch_cores.into_iter().map(|core| self.broker.route(core).clone()).collect();
        let gather = Gather::new(commands.len(), release_at_bytes, routes, reply);
        let gone = host.asker_gone();
        let released = release_at_bytes.map(|_| gather.released.clone());
        for (i, cmd) in commands.into_iter().enumerate() {
            let g = gather.clone();
            let respond = move |res| g.put(i, res);
            // A Fetch is run here; the others are checked by `execute`.
            let allowed = if matches!(cmd, Command::Fetch { .. }) { host.authorize(&cmd) } else { Ok(()) };
            if let Err(e) = allowed {
                self.denied(&e);
                respond(Err(e));
                continue;
            }
            if let Some(shelf) = self.shelf.clone().filter(|s| matches!(cmd, Command::Fetch { .. }) && s.claims(&cmd)) {
                shelf.execute(cmd, self.asker(gone.clone(), released.clone()), Box::new(respond));
                continue;
            }
            match cmd {
                Command::Fetch { topic, partition, offset, max_bytes, max_wait } => {
                    if let Some((pid, respond)) = self.resolve(topic, partition, respond) {
                        let how = FetchHow { registered: false, gone: gone.clone(), released: released.clone() };
                        self.fetch(host, pid, Fetch { offset, max_bytes, max_wait_ns: max_wait.as_nanos() as u64 }, how, respond)
                    }
                }
                Command::Many { .. } => respond(Err(BrokerError::Internal("a Many inside a Many"))),
                other => self.execute(host, other, respond),
            }
        }
    }

    /// How this core's askers want an archive Fetch's answer.
    fn asker(&self, gone: Option<Arc<AtomicBool>>, released: Option<Arc<AtomicBool>>) -> Asker {
        Asker {
            headroom: self.fetch_headroom,
            budget: self.reply_budget.clone(),
            gone,
            released,
            batch_bytes_max: self.broker.batch_bytes_max(),
            cores: self.core_addrs.len(),
        }
    }

    fn list_offsets(&mut self, host: &mut impl Host, pid: Pid, query: OffsetQuery, reply: impl Respond) {
        let req = match query {
            OffsetQuery::AtTime(ts_ms) => {
                requests::offset_at_time(pid, ts_ms, move |res| reply(res.map(Answer::OffsetAtTime).map_err(BrokerError::Failed)))
            }
            query => requests::offset(pid, query, move |res| reply(res.map(Answer::Offset).map_err(BrokerError::Failed))),
        };
        self.route(host, pid, req);
    }

    /// A Metadata of every topic lists those the asker `sees`, archive
    /// topics among them; one naming topics answers for each.
    fn metadata(&mut self, names: &[&str], sees: impl Fn(&str) -> bool) -> std::result::Result<Answer, BrokerError> {
        let router = self.broker.router();
        let all = self.topics().clone();
        let shelf = self.shelf.clone();
        let names: Vec<&str> = if names.is_empty() {
            let mut every: Vec<&str> = all.keys().map(String::as_str).chain(shelf.iter().flat_map(|s| s.topics())).collect();
            every.sort_unstable();
            every.into_iter().filter(|t| sees(t)).collect()
        } else {
            names.to_vec()
        };
        let mut topics = Vec::new();
        for name in names {
            let partition_cores = match all.get(name) {
                Some(t) => router.partition_cores(t),
                None => shelf
                    .as_ref()
                    .and_then(|s| s.partition_cores(name, self.core_addrs.len()))
                    .ok_or_else(|| StromError::UnknownTopic(name.escape_debug().take(300).collect()))?,
            };
            topics.push(TopicPlacement { name: name.to_string(), partition_cores });
        }
        Ok(Answer::Metadata { core_addrs: self.core_addrs.to_vec(), topics })
    }

    fn admin(&mut self, job: Job) {
        if let Err(job) = self.admin.send(job) {
            job.refuse(StromError::ShuttingDown);
        }
    }

    /// Runs a request on the core owning its partition: here at once, or
    /// through that core's mailbox (in order, behind anything waiting).
    fn route(&mut self, host: &mut impl Host, pid: Pid, req: Request) {
        let target = self.broker.router().core_of(pid);
        if target == self.core_id {
            return host.handle(req);
        }
        self.metrics.forwarded += 1;
        self.outbox.send(self.broker.route(target), target, req);
    }
}

/// What a command writes, if it writes: a read-only broker refuses those.
fn writes(cmd: &Command<'_>) -> Option<&'static str> {
    match cmd {
        Command::Produce { .. } => Some("produce"),
        Command::CreateTopic { .. } => Some("create topic"),
        Command::AlterTopic { .. } => Some("alter topic"),
        Command::DeleteTopic { .. } => Some("delete topic"),
        Command::CommitOffset { .. } => Some("commit offset"),
        _ => None,
    }
}

/// How a Fetch's answer is built and waits.
struct FetchHow {
    /// In one of this core's registered reply buffers, if one is free.
    registered: bool,
    /// Set when the asker goes away.
    gone: Option<Arc<AtomicBool>>,
    /// Set when a parked poll should answer now.
    released: Option<Arc<AtomicBool>>,
}

/// A produce's batches, validated in order: the first failure answers.
fn validate(batches: Batches<'_>, batch_bytes_max: usize, names: &[String]) -> std::result::Result<Vec<ValidBatch>, BrokerError> {
    let mut valid = Vec::with_capacity(batches.whole.len());
    for b in batches.whole {
        valid.push(ValidBatch::for_topic(b.to_vec(), batch_bytes_max, names)?);
    }
    if let Some(why) = batches.split_error {
        return Err(BrokerError::InvalidBatch(why));
    }
    if valid.is_empty() {
        return Err(BrokerError::InvalidBatch("a produce request must carry at least one batch".into()));
    }
    Ok(valid)
}
