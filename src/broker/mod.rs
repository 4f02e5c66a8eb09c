//! The broker: one set of commands and replies, whatever protocol (or
//! in-process call) they came by, and the one place where they become core
//! requests.
//!
//! - `command`: the commands ([`Command`]) and their replies ([`Answer`],
//!   [`BrokerError`]) as values; codecs decode into and encode from them.
//! - `router`: which core owns a partition ([`Router`]), written once.
//! - `requests` (with `produce`, the multi-batch accumulator): commands to
//!   core `Request`s, the only place those are made for a client.
//! - `dispatch`: the broker's part on one core ([`Dispatcher`]): resolves
//!   topics, runs a request on this core at once or forwards it to the
//!   owning core's mailbox (`forward`), answers metadata, hands topic admin
//!   and committed offsets to the `admin` thread (`offsets`: their store).
//! - `archives`: the archive topics of `--archive DIR` ([`archives::Shelf`]),
//!   served read-only beside the live ones by a thread of their own.
//! - [`Broker`] (here): what every thread shares: the topic directory and
//!   catalog, the router, the way into each core; the embedded API
//!   (`Engine`) calls its blocking methods from the caller's thread.
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use crate::catalog::{Catalog, IndexNames, PartitionDescription, TopicDescription, TopicMeta, TopicRetention, pid_in};
use crate::config::EngineConfig;
use crate::core::mailbox::CoreRoute;
use crate::core::{AppendAck, PartitionStat, Reply, ValidBatch};
use crate::engine::{Pending, pending};
use crate::error::{Result, StromError};
use crate::metrics::Metrics;
use crate::partition::{Pid, Retention};
use crate::read::{Fetch, ReadResult};

pub(crate) mod admin;
pub mod archives;
pub mod command;
mod dispatch;
mod forward;
pub(crate) mod many;
pub mod offsets;
mod produce;
mod requests;
pub mod router;

pub use command::{
    Answer, Batches, BrokerError, Command, Credentials, Fetched, Limits, OffsetQuery, ProtocolJob, ReplyBuf, Respond, Responder,
    StreamStart, TopicPlacement,
};
pub use dispatch::{Dispatcher, Host};
pub use router::Router;

/// The topic map the data path reads: a snapshot replaced whole on every
/// change, so readers (core threads among them) never wait for an admin
/// operation in progress, which itself waits for the cores.
pub(crate) struct Directory {
    version: AtomicU64,
    topics: RwLock<Arc<BTreeMap<String, TopicMeta>>>,
}

impl Directory {
    fn new(topics: &BTreeMap<String, TopicMeta>) -> Directory {
        Directory { version: AtomicU64::new(0), topics: RwLock::new(Arc::new(topics.clone())) }
    }

    pub(crate) fn version(&self) -> u64 {
        self.version.load(Ordering::Acquire)
    }

    pub(crate) fn snapshot(&self) -> Arc<BTreeMap<String, TopicMeta>> {
        self.topics.read().expect("directory lock").clone()
    }

    fn publish(&self, topics: &BTreeMap<String, TopicMeta>) {
        *self.topics.write().expect("directory lock") = Arc::new(topics.clone());
        self.version.fetch_add(1, Ordering::AcqRel);
    }
}

/// What every thread of an engine shares to turn commands into requests.
pub struct Broker {
    router: Router,
    directory: Directory,
    /// Held while topics are created or deleted; never taken on a core thread.
    catalog: Mutex<Catalog>,
    /// Every core's mailbox and doorbell, in core order.
    routes: Vec<CoreRoute>,
    /// What it accepts; `cores` is the cores it routes to.
    limits: Limits,
    /// The server-wide retention, for topics without their own; a reload
    /// changes it ([`Broker::set_default_retention`]).
    default_retention: RwLock<Retention>,
    /// A read-only follower's broker: writes are refused ([`StromError::ReadOnly`]).
    read_only: bool,
    /// Names another source serves (archive topics): a follower's writer
    /// creating one later is not followed, and no offset is committed on one.
    reserved: RwLock<std::collections::BTreeSet<String>>,
}

impl Broker {
    /// Also tells the cores their partitions' retention, before any request
    /// can reach them.
    pub(crate) fn new(router: Router, catalog: Catalog, routes: Vec<CoreRoute>, cfg: &EngineConfig) -> Broker {
        let broker = Broker {
            router,
            directory: Directory::new(catalog.topics()),
            catalog: Mutex::new(catalog),
            limits: Limits { cores: routes.len(), ..Limits::of(cfg) },
            routes,
            default_retention: RwLock::new(cfg.default_retention()),
            read_only: cfg.read_only,
            reserved: RwLock::default(),
        };
        // One request per core, whatever the number of topics: a mailbox
        // send blocks when full, and a simulated core runs only when its
        // test drives it.
        let topics: Vec<TopicMeta> = broker.directory.snapshot().values().cloned().collect();
        // A core that failed to start refuses the request: nothing to tell.
        let _ = broker.send_retention(&topics);
        broker
    }

    pub fn router(&self) -> Router {
        self.router
    }

    /// Whether this broker serves a directory another process writes.
    pub fn read_only(&self) -> bool {
        self.read_only
    }

    /// Refuses `what` on a read-only broker.
    pub(crate) fn writable(&self, what: &str) -> Result<()> {
        if self.read_only {
            return Err(StromError::ReadOnly(what.to_string()));
        }
        Ok(())
    }

    /// The topics now.
    pub fn topics(&self) -> Arc<BTreeMap<String, TopicMeta>> {
        self.directory.snapshot()
    }

    pub fn pid(&self, topic: &str, partition: u32) -> Result<Pid> {
        pid_in(&self.directory.snapshot(), topic, partition)
    }

    pub(crate) fn directory(&self) -> &Directory {
        &self.directory
    }

    pub(crate) fn route(&self, core: usize) -> &CoreRoute {
        &self.routes[core]
    }

    pub(crate) fn batch_bytes_max(&self) -> usize {
        self.limits.batch_bytes_max
    }

    /// What this broker accepts (the ServerInfo api's engine part).
    pub fn limits(&self) -> Limits {
        self.limits
    }

    // ---- blocking entry points, for threads that are not cores ----

    /// Validates one batch on the caller's thread and appends it; a full
    /// mailbox blocks the caller (the push back).
    pub(crate) fn append(&self, topic: &str, partition: u32, batch: Vec<u8>, reply: Reply<AppendAck>) -> Result<()> {
        self.writable("append")?;
        let topics = self.directory.snapshot();
        let pid = pid_in(&topics, topic, partition)?;
        let names = topics.get(topic).map(|t| t.indices.clone()).unwrap_or_else(|| Vec::new().into());
        let batch = ValidBatch::for_topic(batch, self.limits.batch_bytes_max, &names)?;
        self.submit(pid, requests::append(pid, batch, reply))
    }

    /// Reads whole batches from `offset` without waiting for new ones, into
    /// a heap buffer with no headroom.
    pub(crate) fn read(&self, topic: &str, partition: u32, offset: u64, max_bytes: usize, reply: Reply<ReadResult>) -> Result<()> {
        let pid = self.pid(topic, partition)?;
        self.submit(pid, requests::fetch(pid, Fetch { offset, max_bytes, max_wait_ns: 0 }, requests::Layout::PLAIN, reply))
    }

    /// The same, waiting at the partition's end up to `max_wait_ns` for new
    /// batches (a long poll, woken when the partition's core retires them).
    pub(crate) fn read_waiting(&self, topic: &str, partition: u32, f: Fetch, reply: Reply<ReadResult>) -> Result<()> {
        let pid = self.pid(topic, partition)?;
        self.submit(pid, requests::fetch(pid, f, requests::Layout::PLAIN, reply))
    }

    pub(crate) fn offset(&self, topic: &str, partition: u32, query: OffsetQuery, reply: Reply<Option<u64>>) -> Result<()> {
        let pid = self.pid(topic, partition)?;
        self.submit(pid, requests::offset(pid, query, reply))
    }

    pub(crate) fn query(
        &self,
        topic: &str,
        partition: u32,
        spec: crate::core::query::QuerySpec,
        reply: Reply<crate::core::query::QueryBounds>,
    ) -> Result<()> {
        let pid = self.pid(topic, partition)?;
        self.submit(pid, requests::query(pid, spec, None, reply))
    }

    pub(crate) fn partition_stat(&self, topic: &str, partition: u32, reply: Reply<PartitionStat>) -> Result<()> {
        let pid = self.pid(topic, partition)?;
        self.submit(pid, requests::stat(pid, reply))
    }

    /// Every core's metrics registry, in core order.
    pub(crate) fn core_metrics(&self) -> Result<Vec<Metrics>> {
        let mut out = Vec::new();
        for route in &self.routes {
            let (reply, wait) = pending();
            route.send(requests::core_metrics(reply))?;
            out.push(wait.wait()?);
        }
        Ok(out)
    }

    fn submit(&self, pid: Pid, req: crate::core::Request) -> Result<()> {
        self.routes[self.router.core_of(pid)].send(req)
    }

    /// Creates a topic with `partitions` partitions, durably. Must not be
    /// called on a core thread (it waits for every core).
    pub(crate) fn create_topic(&self, name: &str, partitions: u32, retention: TopicRetention, indices: &[String]) -> Result<()> {
        self.writable("create topic")?;
        let mut cat = self.catalog.lock().expect("catalog lock");
        let t = cat.create_topic(name, partitions, self.limits.partitions_per_topic_max, retention, indices)?;
        // The cores know the partitions before any request can name them.
        let add = (t.retention.effective(self.default_retention()), t.indices.clone());
        let res = self.broadcast_pids(t.first_pid..t.first_pid + t.partitions, Some(add));
        self.directory.publish(cat.topics());
        tracing::info!(topic = name, partitions, indices = ?t.indices, "topic created");
        res
    }

    /// Changes a topic's retention durably (None leaves a setting as it is)
    /// and tells the cores; the next retention pass applies it.
    pub(crate) fn alter_topic(&self, name: &str, ms: Option<Option<u64>>, bytes: Option<Option<u64>>) -> Result<TopicMeta> {
        self.writable("alter topic")?;
        let mut cat = self.catalog.lock().expect("catalog lock");
        let t = cat.alter_topic(name, ms, bytes)?;
        self.directory.publish(cat.topics());
        tracing::info!(topic = name, retention_ms = ?t.retention.ms, retention_bytes = ?t.retention.bytes, "topic altered");
        self.send_retention(std::slice::from_ref(&t))?;
        Ok(t)
    }

    /// Tells each core the effective retention of its partitions of
    /// `topics` (partitions start with none), in one request per core.
    fn send_retention(&self, topics: &[TopicMeta]) -> Result<()> {
        let mut per_core: Vec<Vec<(Pid, Retention)>> = vec![Vec::new(); self.routes.len()];
        for t in topics {
            let retention = t.retention.effective(self.default_retention());
            for pid in t.first_pid..t.first_pid + t.partitions {
                // An engine whose cores failed to start has fewer routes (none).
                if let Some(limits) = per_core.get_mut(self.router.core_of(pid)) {
                    limits.push((pid, retention));
                }
            }
        }
        for (route, limits) in self.routes.iter().zip(per_core) {
            if !limits.is_empty() {
                route.send(requests::set_retention(limits))?;
            }
        }
        Ok(())
    }

    /// A topic's settings and each partition's offsets and bytes, asked of
    /// their cores. Blocks: not for a core thread.
    pub(crate) fn describe_topic(&self, name: &str) -> Result<TopicDescription> {
        let t = self
            .directory
            .snapshot()
            .get(name)
            .cloned()
            .ok_or_else(|| crate::error::StromError::UnknownTopic(name.escape_debug().take(300).collect()))?;
        let mut partitions = Vec::with_capacity(t.partitions as usize);
        for i in 0..t.partitions {
            let pid = t.first_pid + i;
            let (reply, wait) = pending();
            self.submit(pid, requests::stat(pid, reply))?;
            let s = wait.wait()?;
            let core = u16::try_from(self.router.core_of(pid)).unwrap_or(u16::MAX);
            partitions.push(PartitionDescription { start_offset: s.start_offset, end_offset: s.end_offset, bytes: s.bytes, core });
        }
        let effective = t.retention.effective(self.default_retention());
        Ok(TopicDescription { name: name.to_string(), retention: t.retention, effective, partitions, indices: t.indices.to_vec() })
    }

    /// The retention of topics without their own, now.
    pub fn default_retention(&self) -> Retention {
        *self.default_retention.read().expect("default retention lock")
    }

    /// Changes the retention of topics without their own and tells every
    /// core its partitions' limits again, in one request per core; the next
    /// retention pass applies them. Under the catalog lock, so that a topic
    /// created or altered meanwhile is told the new default, not the old.
    pub(crate) fn set_default_retention(&self, retention: Retention) -> Result<()> {
        let _catalog = self.catalog.lock().expect("catalog lock");
        *self.default_retention.write().expect("default retention lock") = retention;
        let topics: Vec<TopicMeta> = self.directory.snapshot().values().cloned().collect();
        tracing::debug!(?retention, topics = topics.len(), "default retention changed");
        self.send_retention(&topics)
    }

    /// The limits partitions of a topic with these settings run with.
    pub fn effective_retention(&self, own: TopicRetention) -> Retention {
        own.effective(self.default_retention())
    }

    /// Deletes a topic. Readers in progress (long polls among them) get
    /// `UnknownPartition`. Its data is dead from now on: the next retention
    /// pass deletes the segments no other topic keeps data in.
    pub(crate) fn delete_topic(&self, name: &str) -> Result<TopicMeta> {
        self.writable("delete topic")?;
        let mut cat = self.catalog.lock().expect("catalog lock");
        let t = cat.delete_topic(name)?;
        // No new request finds the topic once this is published.
        self.directory.publish(cat.topics());
        self.broadcast_pids(t.first_pid..t.first_pid + t.partitions, None)?;
        tracing::info!(topic = name, partitions = t.partitions, "topic deleted");
        Ok(t)
    }

    /// Names served by something else (the archives beside a follower):
    /// [`Broker::follow_catalog`] leaves a writer's topic of such a name out.
    pub(crate) fn reserve_names<'a>(&self, names: impl Iterator<Item = &'a str>) {
        self.reserved.write().expect("reserved lock").extend(names.map(str::to_string));
    }

    /// Refuses writing `what` to `topic` on a read-only broker, or when an
    /// archive serves `topic` (its offsets are as immutable as its records).
    pub(crate) fn writable_topic(&self, what: &str, topic: &str) -> Result<()> {
        self.writable(what)?;
        if self.reserved.read().expect("reserved lock").contains(topic) {
            return Err(StromError::ReadOnly(format!("{what} on archive topic {:?}", topic.escape_debug().take(300).collect::<String>())));
        }
        Ok(())
    }

    /// Follower: tells the core owning `log` that the writer's durable mark moved.
    pub(crate) fn follow_mark(&self, log: u32, mark: crate::log::mark::DurableMark) -> Result<()> {
        self.routes[self.router.core_of_log(log)].send(crate::core::Request::Follow { log, mark })
    }

    /// Follower: the writer's catalog as it is now. The cores drop the
    /// partitions of topics gone and add those of topics new (waiting for
    /// them, so that a batch of a new topic is never scanned before its
    /// partition exists), then the directory is published.
    pub(crate) fn follow_catalog(&self, mut now: Catalog) -> Result<()> {
        let mut cat = self.catalog.lock().expect("catalog lock");
        for name in now.forget_names(&self.reserved.read().expect("reserved lock")) {
            tracing::warn!(
                topic = name,
                "the writer created a topic an archive of this server serves: the archive's is served, the writer's is not followed"
            );
        }
        let pids = |c: &Catalog| -> std::collections::BTreeMap<Pid, (String, TopicMeta)> {
            c.topics()
                .iter()
                .flat_map(|(n, t)| (t.first_pid..t.first_pid + t.partitions).map(move |p| (p, (n.clone(), t.clone()))))
                .collect()
        };
        let (before, after) = (pids(&cat), pids(&now));
        let gone: Vec<Pid> = before.keys().filter(|p| !after.contains_key(p)).copied().collect();
        for core in 0..self.routes.len() {
            let mine: Vec<Pid> = gone.iter().copied().filter(|&p| self.router.core_of(p) == core).collect();
            if !mine.is_empty() {
                self.routes[core].send(requests::remove_partitions(mine))?;
            }
        }
        for (name, t) in now.topics() {
            let new: Vec<Pid> = (t.first_pid..t.first_pid + t.partitions).filter(|p| !before.contains_key(p)).collect();
            if let (Some(&first), Some(&last)) = (new.first(), new.last()) {
                let add = (t.retention.effective(self.default_retention()), t.indices.clone());
                self.broadcast_pids(first..last + 1, Some(add))?;
                tracing::info!(topic = name, partitions = new.len(), "the writer created a topic");
            }
        }
        if !gone.is_empty() {
            tracing::info!(partitions = gone.len(), "the writer deleted topics");
        }
        *cat = now;
        self.directory.publish(cat.topics());
        Ok(())
    }

    /// Adds the partitions (with this retention) to their cores, or removes them (None).
    fn broadcast_pids(&self, pids: std::ops::Range<Pid>, add: Option<(Retention, IndexNames)>) -> Result<()> {
        let mut waits = Vec::new();
        for (core, route) in self.routes.iter().enumerate() {
            let mine: Vec<Pid> = pids.clone().filter(|&p| self.router.core_of(p) == core).collect();
            if mine.is_empty() {
                continue;
            }
            if let Some((retention, indices)) = &add {
                let (reply, wait) = pending();
                route.send(requests::add_partitions(mine, *retention, indices.clone(), reply))?;
                waits.push(wait);
            } else {
                route.send(requests::remove_partitions(mine))?;
            }
        }
        waits.into_iter().try_for_each(Pending::wait)
    }
}
