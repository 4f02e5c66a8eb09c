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
//! - [`Broker`] (here): what every thread shares: the topic directory and
//!   catalog, the router, the way into each core; the embedded API
//!   (`Engine`) calls its blocking methods from the caller's thread.
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use crate::catalog::{Catalog, TopicMeta, pid_in};
use crate::config::{EngineConfig, FsyncPolicy};
use crate::core::mailbox::CoreRoute;
use crate::core::{AppendAck, PartitionStat, Reply, ValidBatch};
use crate::engine::{Pending, pending};
use crate::error::Result;
use crate::metrics::Metrics;
use crate::partition::Pid;
use crate::read::{Fetch, ReadResult};

pub(crate) mod admin;
pub mod command;
mod dispatch;
mod forward;
pub mod offsets;
mod produce;
mod requests;
pub mod router;

pub use command::{Answer, Batches, BrokerError, Command, Fetched, Limits, OffsetQuery, ReplyBuf, Respond, Responder, TopicPlacement};
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
    batch_bytes_max: usize,
    partitions_per_topic_max: u32,
    fsync: FsyncPolicy,
}

impl Broker {
    pub(crate) fn new(router: Router, catalog: Catalog, routes: Vec<CoreRoute>, cfg: &EngineConfig) -> Broker {
        Broker {
            router,
            directory: Directory::new(catalog.topics()),
            catalog: Mutex::new(catalog),
            routes,
            batch_bytes_max: cfg.batch_bytes_max,
            partitions_per_topic_max: cfg.partitions_per_topic_max,
            fsync: cfg.fsync,
        }
    }

    pub fn router(&self) -> Router {
        self.router
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
        self.batch_bytes_max
    }

    /// What this broker accepts (the ServerInfo api's engine part).
    pub fn limits(&self) -> Limits {
        Limits {
            cores: self.routes.len(),
            fsync: self.fsync,
            batch_bytes_max: self.batch_bytes_max,
            partitions_per_topic_max: self.partitions_per_topic_max,
        }
    }

    // ---- blocking entry points, for threads that are not cores ----

    /// Validates one batch on the caller's thread and appends it; a full
    /// mailbox blocks the caller (the push back).
    pub(crate) fn append(&self, topic: &str, partition: u32, batch: Vec<u8>, reply: Reply<AppendAck>) -> Result<()> {
        let pid = self.pid(topic, partition)?;
        let batch = ValidBatch::new(batch, self.batch_bytes_max)?;
        self.submit(pid, requests::append(pid, batch, reply))
    }

    /// Reads whole batches from `offset` without waiting for new ones, into
    /// a heap buffer with no headroom.
    pub(crate) fn read(&self, topic: &str, partition: u32, offset: u64, max_bytes: usize, reply: Reply<ReadResult>) -> Result<()> {
        let pid = self.pid(topic, partition)?;
        self.submit(pid, requests::fetch(pid, Fetch { offset, max_bytes, max_wait_ns: 0 }, requests::Layout::PLAIN, reply))
    }

    pub(crate) fn offset(&self, topic: &str, partition: u32, query: OffsetQuery, reply: Reply<Option<u64>>) -> Result<()> {
        let pid = self.pid(topic, partition)?;
        self.submit(pid, requests::offset(pid, query, reply))
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
    pub(crate) fn create_topic(&self, name: &str, partitions: u32) -> Result<()> {
        let mut cat = self.catalog.lock().expect("catalog lock");
        let TopicMeta { first_pid, partitions } = cat.create_topic(name, partitions, self.partitions_per_topic_max)?;
        // The cores know the partitions before any request can name them.
        let res = self.broadcast_pids(first_pid..first_pid + partitions, true);
        self.directory.publish(cat.topics());
        res
    }

    /// Deletes a topic. Readers in progress (long polls among them) get
    /// `UnknownPartition`.
    pub(crate) fn delete_topic(&self, name: &str) -> Result<()> {
        let mut cat = self.catalog.lock().expect("catalog lock");
        let TopicMeta { first_pid, partitions } = cat.delete_topic(name)?;
        // No new request finds the topic once this is published.
        self.directory.publish(cat.topics());
        self.broadcast_pids(first_pid..first_pid + partitions, false)
    }

    fn broadcast_pids(&self, pids: std::ops::Range<Pid>, add: bool) -> Result<()> {
        let mut waits = Vec::new();
        for (core, route) in self.routes.iter().enumerate() {
            let mine: Vec<Pid> = pids.clone().filter(|&p| self.router.core_of(p) == core).collect();
            if mine.is_empty() {
                continue;
            }
            if add {
                let (reply, wait) = pending();
                route.send(requests::add_partitions(mine, reply))?;
                waits.push(wait);
            } else {
                route.send(requests::remove_partitions(mine))?;
            }
        }
        waits.into_iter().try_for_each(Pending::wait)
    }
}
