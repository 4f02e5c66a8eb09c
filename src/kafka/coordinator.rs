//! The Kafka group coordinator's thread, "strom-kafka-groups": it runs the
//! pure group state machine ([`Groups`]) and owns the producer-id
//! allocator ([`ProducerIds`]), whose durable writes must never run on a
//! core thread.
//!
//! Requests arrive on a channel with a reply closure each. The thread holds
//! a waiting closure by [`Ticket`] until the state machine answers it
//! (joins and syncs may wait for other members), and sleeps on the channel
//! until the state machine's next deadline, so nothing polls while nothing
//! is due. Reply closures run on this thread and must be quick (hand the
//! result to a core's mailbox). Group state is in memory only: after a
//! restart members get UNKNOWN_MEMBER_ID and rejoin.
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use super::group::{
    GroupError, GroupLimits, Groups, Heartbeat, JoinGroup, JoinResult, LeaveResult, LeavingMember, Replies, Reply, SyncGroup, SyncResult,
    Ticket,
};
use super::producer_ids::ProducerIds;
use crate::error::{IoOp, Result, StromError};

/// The coordinator's settings; see each field.
#[derive(Debug, Clone)]
pub(crate) struct CoordinatorConfig {
    /// Where `kafka-producer-ids` lives (the server's data directory).
    pub data_dir: PathBuf,
    /// Groups kept at most; a join creating one more gets
    /// COORDINATOR_NOT_AVAILABLE (retriable: a group may end meanwhile),
    /// not GROUP_MAX_SIZE_REACHED, which clients treat as fatal and which
    /// Kafka means for one group's members.
    pub groups_max: usize,
    /// Members (with member ids handed out but not yet used) per group; a
    /// join past it gets GROUP_MAX_SIZE_REACHED, as Kafka's group.max.size.
    pub members_per_group_max: usize,
    /// Kafka's group.min.session.timeout.ms (6_000).
    pub session_timeout_min_ms: u32,
    /// Kafka's group.max.session.timeout.ms (1_800_000; 45 s must pass).
    pub session_timeout_max_ms: u32,
    /// Kafka's group.initial.rebalance.delay.ms (3_000).
    pub initial_rebalance_delay_ms: u32,
    /// A read-only server's: no producer id is handed out (none written).
    pub read_only: bool,
}

impl CoordinatorConfig {
    /// The listener's bounds (src/kafka/mod.rs) and Kafka's default
    /// initial rebalance delay. What a member keeps is its JoinGroup's
    /// protocol metadata, bounded by the request size limit the codec
    /// enforces.
    pub(crate) fn new(data_dir: PathBuf) -> CoordinatorConfig {
        CoordinatorConfig {
            data_dir,
            groups_max: crate::kafka::GROUPS_MAX,
            members_per_group_max: crate::kafka::MEMBERS_PER_GROUP_MAX,
            session_timeout_min_ms: crate::kafka::SESSION_TIMEOUT_MIN_MS,
            session_timeout_max_ms: crate::kafka::SESSION_TIMEOUT_MAX_MS,
            initial_rebalance_delay_ms: 3_000,
            read_only: false,
        }
    }
}

type ReplyFn<T> = Box<dyn FnOnce(T) + Send>;

enum Msg {
    Join(JoinGroup, ReplyFn<JoinResult>),
    Sync(SyncGroup, ReplyFn<SyncResult>),
    Heartbeat(Heartbeat, ReplyFn<GroupError>),
    Leave(String, Vec<LeavingMember>, ReplyFn<LeaveResult>),
    CheckCommit(String, i32, String, ReplyFn<GroupError>),
    InitProducerId(Option<(i64, i16)>, ReplyFn<Result<(i64, i16), GroupError>>),
    Stop,
}

/// A handle to the coordinator thread; clones share it. The thread runs
/// until [`Coordinator::stop`] or until the last handle drops.
#[derive(Clone)]
pub(crate) struct Coordinator {
    inner: Arc<Inner>,
}

// Every core thread holds a handle.
const _: fn() = || {
    fn shared<T: Send + Sync>() {}
    shared::<Coordinator>();
};

struct Inner {
    tx: Sender<Msg>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

impl Coordinator {
    /// Opens the producer ids (a damaged file fails the start) and spawns
    /// the thread.
    pub(crate) fn start(cfg: CoordinatorConfig) -> Result<Coordinator> {
        if !cfg.read_only {
            std::fs::create_dir_all(&cfg.data_dir).map_err(|e| StromError::io(IoOp::Create, &cfg.data_dir, &e))?;
        }
        let ids = ProducerIds::open(&cfg.data_dir)?;
        let ids = if cfg.read_only { ids.read_only() } else { ids };
        // Different at each start, so a member id made before a restart is
        // never made again for another member.
        let nonce = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_nanos() as u64).unwrap_or(0);
        let limits = GroupLimits {
            groups_max: cfg.groups_max,
            members_per_group_max: cfg.members_per_group_max,
            session_timeout_min_ms: cfg.session_timeout_min_ms,
            session_timeout_max_ms: cfg.session_timeout_max_ms,
            initial_rebalance_delay_ms: cfg.initial_rebalance_delay_ms,
            member_id_nonce: nonce,
        };
        let (tx, rx) = mpsc::channel();
        let worker = Worker { groups: Groups::new(limits), ids, waiting: HashMap::new(), tickets_issued: 0, started: Instant::now() };
        let thread = std::thread::Builder::new()
            .name("strom-kafka-groups".into())
            .spawn(move || worker.run(rx))
            .map_err(|e| StromError::io(IoOp::Create, "strom-kafka-groups thread", &e))?;
        Ok(Coordinator { inner: Arc::new(Inner { tx, thread: Mutex::new(Some(thread)) }) })
    }

    pub(crate) fn join(&self, req: JoinGroup, reply: ReplyFn<JoinResult>) {
        self.send(Msg::Join(req, reply));
    }

    pub(crate) fn sync(&self, req: SyncGroup, reply: ReplyFn<SyncResult>) {
        self.send(Msg::Sync(req, reply));
    }

    pub(crate) fn heartbeat(&self, req: Heartbeat, reply: ReplyFn<GroupError>) {
        self.send(Msg::Heartbeat(req, reply));
    }

    pub(crate) fn leave(&self, group: String, members: Vec<LeavingMember>, reply: ReplyFn<LeaveResult>) {
        self.send(Msg::Leave(group, members, reply));
    }

    /// Whether an OffsetCommit by (generation_id, member_id) may commit for
    /// the group: a negative generation (a "simple" consumer: manual
    /// assign, kcat without -G) may when the group has no members;
    /// otherwise the member must be in the group's current generation
    /// (ILLEGAL_GENERATION / UNKNOWN_MEMBER_ID / REBALANCE_IN_PROGRESS).
    pub(crate) fn check_commit(&self, group: String, generation_id: i32, member_id: String, reply: ReplyFn<GroupError>) {
        self.send(Msg::CheckCommit(group, generation_id, member_id, reply));
    }

    /// A fresh producer id with epoch 0, durable before it is answered; or,
    /// given an existing (id, epoch) (InitProducerId v3+), the same id with
    /// epoch + 1. UNKNOWN_SERVER_ERROR if the id file cannot be written.
    pub(crate) fn init_producer_id(&self, existing: Option<(i64, i16)>, reply: ReplyFn<Result<(i64, i16), GroupError>>) {
        self.send(Msg::InitProducerId(existing, reply));
    }

    /// Stops the thread: waiting joins and syncs, and requests sent from
    /// now on, are answered COORDINATOR_NOT_AVAILABLE.
    pub(crate) fn stop(&self) {
        self.inner.stop();
    }

    fn send(&self, msg: Msg) {
        if let Err(mpsc::SendError(msg)) = self.inner.tx.send(msg) {
            refuse(msg);
        }
    }
}

impl Inner {
    fn stop(&self) {
        let _ = self.tx.send(Msg::Stop);
        let thread = self.thread.lock().unwrap_or_else(|e| e.into_inner()).take();
        // A reply closure may hold the last handle and drop it on the
        // coordinator thread itself, which must not wait for itself.
        if let Some(t) = thread.filter(|t| t.thread().id() != std::thread::current().id()) {
            let _ = t.join();
        }
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Answers a request the thread will never see.
fn refuse(msg: Msg) {
    let unavailable = GroupError::CoordinatorNotAvailable;
    match msg {
        Msg::Join(req, reply) => reply(JoinResult::error(unavailable, req.member_id)),
        Msg::Sync(_, reply) => reply(SyncResult::error(unavailable)),
        Msg::Heartbeat(_, reply) | Msg::CheckCommit(_, _, _, reply) => reply(unavailable),
        Msg::Leave(_, members, reply) => {
            let members = members.into_iter().map(|m| (m.member_id, m.group_instance_id, unavailable)).collect();
            reply(LeaveResult { error: unavailable, members })
        }
        Msg::InitProducerId(_, reply) => reply(Err(unavailable)),
        Msg::Stop => {}
    }
}

/// A reply closure held until the state machine answers its ticket.
enum Waiting {
    Join(ReplyFn<JoinResult>),
    Sync(ReplyFn<SyncResult>),
    Status(ReplyFn<GroupError>),
    Leave(ReplyFn<LeaveResult>),
}

struct Worker {
    groups: Groups,
    ids: ProducerIds,
    waiting: HashMap<Ticket, Waiting>,
    tickets_issued: u64,
    started: Instant,
}

impl Worker {
    fn run(mut self, rx: Receiver<Msg>) {
        loop {
            let msg = match self.groups.next_deadline_ms() {
                None => rx.recv().map_err(|_| RecvTimeoutError::Disconnected),
                Some(deadline_ms) => rx.recv_timeout(Duration::from_millis(deadline_ms.saturating_sub(self.now_ms()))),
            };
            match msg {
                Ok(Msg::Stop) | Err(RecvTimeoutError::Disconnected) => break,
                Ok(msg) => self.handle(msg),
                Err(RecvTimeoutError::Timeout) => {}
            }
            let replies = self.groups.expire(self.now_ms());
            self.deliver(replies);
        }
        let replies = self.groups.drain();
        self.deliver(replies);
        // Requests queued behind the stop; one sent after this loop and
        // before `rx` drops is dropped unanswered (its connection is going).
        rx.try_iter().for_each(refuse);
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    fn ticket(&mut self, waiting: Waiting) -> Ticket {
        self.tickets_issued += 1;
        self.waiting.insert(self.tickets_issued, waiting);
        self.tickets_issued
    }

    fn handle(&mut self, msg: Msg) {
        let now_ms = self.now_ms();
        let replies = match msg {
            Msg::Join(req, reply) => {
                let t = self.ticket(Waiting::Join(reply));
                self.groups.join(t, req, now_ms)
            }
            Msg::Sync(req, reply) => {
                let t = self.ticket(Waiting::Sync(reply));
                self.groups.sync(t, req, now_ms)
            }
            Msg::Heartbeat(req, reply) => {
                let t = self.ticket(Waiting::Status(reply));
                self.groups.heartbeat(t, req, now_ms)
            }
            Msg::Leave(group, members, reply) => {
                let t = self.ticket(Waiting::Leave(reply));
                self.groups.leave(t, &group, members, now_ms)
            }
            Msg::CheckCommit(group, generation_id, member_id, reply) => {
                let t = self.ticket(Waiting::Status(reply));
                self.groups.check_commit(t, &group, generation_id, &member_id)
            }
            Msg::InitProducerId(existing, reply) => {
                reply(self.producer_id(existing));
                Replies::new()
            }
            Msg::Stop => Replies::new(),
        };
        self.deliver(replies);
    }

    fn producer_id(&mut self, existing: Option<(i64, i16)>) -> Result<(i64, i16), GroupError> {
        let got = match existing {
            None => self.ids.next_id().map(|id| (id, 0)),
            Some((id, epoch)) => self.ids.bump(id, epoch),
        };
        got.map_err(|e| match e {
            StromError::ReadOnly(_) => GroupError::PolicyViolation,
            e => {
                tracing::error!(%e, "kafka InitProducerId refused: no producer id can be handed out durably");
                GroupError::UnknownServerError
            }
        })
    }

    fn deliver(&mut self, replies: Replies) {
        for (t, reply) in replies {
            match (self.waiting.remove(&t), reply) {
                (Some(Waiting::Join(f)), Reply::Join(r)) => f(r),
                (Some(Waiting::Sync(f)), Reply::Sync(r)) => f(r),
                (Some(Waiting::Status(f)), Reply::Heartbeat(e) | Reply::Commit(e)) => f(e),
                (Some(Waiting::Leave(f)), Reply::Leave(r)) => f(r),
                (_, r) => panic!("bug: the group state machine answered ticket {t} with {r:?}, which it does not match"),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn coordinator_dir() -> PathBuf {
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/tmp-unit/kafka-coordinator-two")
    }

    fn config(name: &str) -> CoordinatorConfig {
        let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/tmp-unit").join(name);
        let _ = std::fs::remove_dir_all(&dir);
        CoordinatorConfig { groups_max: 4, members_per_group_max: 4, initial_rebalance_delay_ms: 20, ..CoordinatorConfig::new(dir) }
    }

    fn join_req(client: &str) -> JoinGroup {
        JoinGroup {
            group: "g".into(),
            member_id: String::new(),
            group_instance_id: None,
            client_id: client.into(),
            session_timeout_ms: 45_000,
            rebalance_timeout_ms: 60_000,
            protocol_type: "consumer".into(),
            protocols: vec![("range".into(), client.as_bytes().to_vec())],
            requires_known_member_id: false,
        }
    }

    // Proves: two joins sent from two threads are both answered by the
    // coordinator thread with one generation and one leader (the initial
    // delay gathers them), producer ids are distinct and stay above those
    // handed out after a restart on the same directory, and after stop
    // every request is answered COORDINATOR_NOT_AVAILABLE, not dropped.
    #[test]
    fn joins_from_two_threads_share_a_generation() {
        let coordinator = Coordinator::start(config("kafka-coordinator-two")).unwrap();
        let (tx, rx) = mpsc::channel();
        let threads: Vec<_> = ["a", "b"]
            .into_iter()
            .map(|client| {
                let (c, tx) = (coordinator.clone(), tx.clone());
                std::thread::spawn(move || c.join(join_req(client), Box::new(move |r| tx.send(r).unwrap())))
            })
            .collect();
        threads.into_iter().for_each(|t| t.join().unwrap());
        let results: Vec<JoinResult> = (0..2).map(|_| rx.recv_timeout(Duration::from_secs(60)).unwrap()).collect();
        assert!(results.iter().all(|r| r.error == GroupError::None && r.generation_id == 1), "{results:?}");
        assert_eq!(results[0].leader, results[1].leader);
        assert_eq!(results.iter().map(|r| r.members.len()).sum::<usize>(), 2, "only the leader sees the two members");
        let (ptx, prx) = mpsc::channel();
        for _ in 0..2 {
            let ptx = ptx.clone();
            coordinator.init_producer_id(None, Box::new(move |r| ptx.send(r).unwrap()));
        }
        let (p1, p2) = (prx.recv().unwrap().unwrap(), prx.recv().unwrap().unwrap());
        assert!(p1.0 != p2.0 && p1.1 == 0 && p2.1 == 0, "{p1:?} {p2:?}");
        coordinator.stop();
        let (etx, erx) = mpsc::channel();
        coordinator.join(join_req("c"), Box::new(move |r| etx.send(r.error).unwrap()));
        assert_eq!(erx.recv().unwrap(), GroupError::CoordinatorNotAvailable);
        let (ptx, prx) = mpsc::channel();
        coordinator.init_producer_id(None, Box::new(move |r| ptx.send(r).unwrap()));
        assert_eq!(prx.recv().unwrap(), Err(GroupError::CoordinatorNotAvailable));
        let cfg = CoordinatorConfig { data_dir: coordinator_dir(), ..config("kafka-coordinator-unused") };
        let restarted = Coordinator::start(cfg).unwrap();
        let (ptx, prx) = mpsc::channel();
        restarted.init_producer_id(Some((p2.0, 0)), Box::new(move |r| ptx.send(r).unwrap()));
        assert_eq!(prx.recv().unwrap(), Ok((p2.0, 1)), "an id handed out before the restart is bumped, not replaced");
        let (ptx, prx) = mpsc::channel();
        restarted.init_producer_id(None, Box::new(move |r| ptx.send(r).unwrap()));
        let p3 = prx.recv().unwrap().unwrap();
        assert!(p3.0 > p1.0.max(p2.0), "{p3:?} after a restart repeats or goes below {p1:?} {p2:?}");
    }
}
