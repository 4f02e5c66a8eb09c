//! The admin thread: topic creation, changes, descriptions and deletion, and committed consumer
//! offsets. Creating a topic waits for every core to add its partitions,
//! so it cannot run on a core thread (a core would wait for itself).
//!
//! Jobs that arrive together are handled together: one rewrite of the
//! offsets file covers every commit among them (group commit), and each is
//! acknowledged only after that rewrite is durable.
use std::path::Path;
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use super::Broker;
use super::command::{Answer, BrokerError, Responder};
use super::offsets::OffsetStore;
use crate::catalog::{TopicRetention, pid_in, validate_topic_name};
use crate::error::{IoOp, Result, StromError};

pub(crate) enum Job {
    CreateTopic { name: String, partitions: u32, retention: TopicRetention, indices: Vec<String>, reply: Responder },
    DeleteTopic { name: String, reply: Responder },
    AlterTopic { name: String, ms: Option<Option<u64>>, bytes: Option<Option<u64>>, reply: Responder },
    DescribeTopic { name: String, reply: Responder },
    Commit { group: String, topic: String, partition: u32, offset: u64, metadata: String, reply: Responder },
    Fetch { group: String, topic: String, partition: u32, reply: Responder },
}

impl Job {
    /// Answers the job with `e` without doing it.
    pub(crate) fn refuse(self, e: StromError) {
        let (Job::CreateTopic { reply, .. }
        | Job::DeleteTopic { reply, .. }
        | Job::AlterTopic { reply, .. }
        | Job::DescribeTopic { reply, .. }
        | Job::Commit { reply, .. }
        | Job::Fetch { reply, .. }) = self;
        reply(Err(e.into()))
    }
}

/// The admin thread and the way to it, shared by every core.
pub(crate) struct Admin {
    /// Replaced at stop, so that the thread sees the end of its jobs.
    tx: Mutex<Sender<Job>>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

impl Admin {
    /// Loads the committed offsets of `dir` and starts the thread.
    pub(crate) fn start(broker: Arc<Broker>, dir: &Path) -> Result<Arc<Admin>> {
        let store = OffsetStore::open(dir)?;
        let (tx, rx) = mpsc::channel();
        let thread = std::thread::Builder::new()
            .name("strom-admin".into())
            .spawn(move || run(&broker, store, rx))
            .map_err(|e| StromError::io(IoOp::Create, "thread", &e))?;
        Ok(Arc::new(Admin { tx: Mutex::new(tx), thread: Mutex::new(Some(thread)) }))
    }

    /// Queues a job; gives it back once the thread has stopped.
    pub(crate) fn send(&self, job: Job) -> std::result::Result<(), Job> {
        self.tx.lock().expect("admin sender").send(job).map_err(|mpsc::SendError(job)| job)
    }

    /// Ends the thread once the jobs queued now are done, and waits for it.
    pub(crate) fn stop(&self) {
        if let Ok(mut tx) = self.tx.lock() {
            // Replace the only sender, so the thread sees the end.
            *tx = mpsc::channel().0;
        }
        if let Some(t) = self.thread.lock().ok().and_then(|mut t| t.take()) {
            let _ = t.join();
        }
    }
}

fn run(broker: &Broker, mut store: OffsetStore, rx: Receiver<Job>) {
    while let Ok(first) = rx.recv() {
        // Everything queued now is handled together: one offsets rewrite
        // covers every commit among them.
        let mut jobs = vec![first];
        while let Ok(j) = rx.try_recv() {
            jobs.push(j);
        }
        let mut committed = Vec::new();
        let mut dirty = false;
        for job in jobs {
            dirty |= handle(broker, &mut store, job, &mut committed);
        }
        if dirty {
            match store.persist() {
                Ok(()) => committed.into_iter().for_each(|r| r(Ok(Answer::OffsetCommitted))),
                Err(e) => {
                    tracing::error!(%e, "could not persist committed offsets");
                    // Not durable, so not acknowledged; memory keeps them,
                    // and the next successful rewrite makes them durable.
                    committed.into_iter().for_each(|r| r(Err(BrokerError::StorageFailed(e.to_string()))));
                }
            }
        }
    }
}

/// Does one job; a commit's reply waits in `committed` for the rewrite.
/// True when the offsets changed in memory.
fn handle(broker: &Broker, store: &mut OffsetStore, job: Job, committed: &mut Vec<Responder>) -> bool {
    match job {
        Job::CreateTopic { name, partitions, retention, indices, reply } => {
            reply(broker.create_topic(&name, partitions, retention, &indices).map(|()| Answer::TopicCreated).map_err(Into::into))
        }
        Job::DeleteTopic { name, reply } => match broker.delete_topic(&name) {
            Ok(_) => {
                let forgot = store.forget_topic(&name);
                reply(Ok(Answer::TopicDeleted));
                return forgot;
            }
            Err(e) => reply(Err(e.into())),
        },
        Job::AlterTopic { name, ms, bytes, reply } => {
            reply(broker.alter_topic(&name, ms, bytes).map(|t| Answer::TopicAltered(t.retention)).map_err(Into::into))
        }
        // Waits for each partition's core: the admin thread may block.
        Job::DescribeTopic { name, reply } => reply(broker.describe_topic(&name).map(Answer::TopicDescribed).map_err(Into::into)),
        Job::Commit { group, topic, partition, offset, metadata, reply } => {
            // A read-only server writes no offsets file, and an archive
            // topic takes no commit, whichever protocol (or a Kafka group's
            // coordinator) the commit came by.
            let checked = broker
                .writable_topic("commit offset", &topic)
                .and_then(|()| validate_topic_name(&group))
                .and_then(|()| pid_in(&broker.topics(), &topic, partition))
                .and_then(|_| store.set(&group, &topic, partition, offset, &metadata));
            match checked {
                Ok(()) => {
                    committed.push(reply);
                    return true;
                }
                Err(e) => reply(Err(e.into())),
            }
        }
        Job::Fetch { group, topic, partition, reply } => reply(
            validate_topic_name(&group)
                .map(|()| Answer::CommittedOffset(store.get(&group, &topic, partition).cloned()))
                .map_err(Into::into),
        ),
    }
    false
}
