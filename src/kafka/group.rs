//! Kafka's classic consumer-group protocol (JoinGroup, SyncGroup, Heartbeat,
//! LeaveGroup) as a pure state machine, after Kafka's GroupCoordinator.
//!
//! Pure: every call takes the time (`now_ms`) and a [`Ticket`] naming the
//! request, and returns the replies now due as (ticket, [`Reply`]); a join
//! or a sync may be answered later, by another call or by [`Groups::expire`]
//! once [`Groups::next_deadline_ms`] has passed. The coordinator thread
//! (`coordinator.rs`) holds the reply closures by ticket. Every ticket is
//! answered exactly once, at the latest by [`Groups::drain`] at shutdown.
//!
//! A group is Empty, PreparingRebalance (joins wait until every member has
//! rejoined or the rebalance timeout passes), CompletingRebalance (joins
//! answered; syncs wait for the leader's assignment) or Stable. A group with
//! no members and no pending member is forgotten (Kafka's Dead): committed
//! offsets live in the broker's offset store, not here.
//!
//! Group state is in memory only: after a restart every member gets
//! UNKNOWN_MEMBER_ID and rejoins, and generation ids start again at 1.
use std::collections::{BTreeSet, HashMap};

/// Group ids and group instance ids longer than this are refused with
/// INVALID_GROUP_ID; Kafka sets no limit, but every id is kept in memory.
pub(crate) const GROUP_ID_BYTES_MAX: usize = 255;
/// The client id's share of a member id this coordinator makes: the ids it
/// makes are at most 38 bytes longer, and any longer one is unknown.
const CLIENT_ID_IN_MEMBER_ID_BYTES_MAX: usize = 128;
/// The protocol type of Kafka's consumers, whose assignment has a format.
pub(crate) const CONSUMER_PROTOCOL_TYPE: &str = "consumer";
/// An empty ConsumerProtocolAssignment: version 0, zero topics, null user
/// data. A consumer given no partitions gets this, never zero bytes, which
/// kafka-python fails to decode.
pub(crate) const EMPTY_CONSUMER_ASSIGNMENT: [u8; 10] = [0, 0, 0, 0, 0, 0, 0xff, 0xff, 0xff, 0xff];

#[derive(Debug, Clone)]
pub(crate) struct JoinGroup {
    pub group: String,
    pub member_id: String,
    pub group_instance_id: Option<String>,
    pub client_id: String,
    pub session_timeout_ms: i32,
    /// -1 before JoinGroup v1: the session timeout is used.
    pub rebalance_timeout_ms: i32,
    pub protocol_type: String,
    pub protocols: Vec<(String, Vec<u8>)>,
    /// True for JoinGroup v4+ (KIP-394): a new member first gets an id.
    pub requires_known_member_id: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct JoinResult {
    pub error: GroupError,
    pub generation_id: i32,
    pub protocol_type: Option<String>,
    pub protocol_name: Option<String>,
    pub leader: String,
    pub member_id: String,
    /// Only for the leader.
    pub members: Vec<JoinedMember>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct JoinedMember {
    pub member_id: String,
    pub group_instance_id: Option<String>,
    pub metadata: Vec<u8>,
}

#[derive(Debug, Clone)]
pub(crate) struct SyncGroup {
    pub group: String,
    pub generation_id: i32,
    pub member_id: String,
    pub group_instance_id: Option<String>,
    pub protocol_type: Option<String>,
    pub protocol_name: Option<String>,
    pub assignments: Vec<(String, Vec<u8>)>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SyncResult {
    pub error: GroupError,
    pub protocol_type: Option<String>,
    pub protocol_name: Option<String>,
    pub assignment: Vec<u8>,
}

#[derive(Debug, Clone)]
pub(crate) struct Heartbeat {
    pub group: String,
    pub generation_id: i32,
    pub member_id: String,
    pub group_instance_id: Option<String>,
}

#[derive(Debug, Clone)]
pub(crate) struct LeavingMember {
    pub member_id: String,
    pub group_instance_id: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct LeaveResult {
    pub error: GroupError,
    /// (member id, group instance id, error) per member named (v3+).
    pub members: Vec<(String, Option<String>, GroupError)>,
}

/// The errors the coordinator answers, with Kafka's codes (Errors.java).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum GroupError {
    None,
    UnknownMemberId,
    IllegalGeneration,
    RebalanceInProgress,
    InconsistentGroupProtocol,
    InvalidSessionTimeout,
    MemberIdRequired,
    InvalidGroupId,
    GroupMaxSizeReached,
    FencedInstanceId,
    CoordinatorNotAvailable,
    /// The producer-id file could not be written: not retriable, so that a
    /// client reports it instead of retrying against a broken disk.
    UnknownServerError,
    /// A read-only server (a follower) hands out no producer id: it takes
    /// no produce either (Kafka's POLICY_VIOLATION, as its produce gets).
    PolicyViolation,
}

impl GroupError {
    pub(crate) fn code(self) -> i16 {
        match self {
            GroupError::None => 0,
            GroupError::UnknownServerError => -1,
            GroupError::CoordinatorNotAvailable => 15,
            GroupError::PolicyViolation => 44,
            GroupError::IllegalGeneration => 22,
            GroupError::InconsistentGroupProtocol => 23,
            GroupError::InvalidGroupId => 24,
            GroupError::UnknownMemberId => 25,
            GroupError::InvalidSessionTimeout => 26,
            GroupError::RebalanceInProgress => 27,
            GroupError::MemberIdRequired => 79,
            GroupError::GroupMaxSizeReached => 81,
            GroupError::FencedInstanceId => 82,
        }
    }
}

/// Names a request whose reply is owed; chosen by the caller, unique.
pub(crate) type Ticket = u64;

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Reply {
    Join(JoinResult),
    Sync(SyncResult),
    Heartbeat(GroupError),
    Leave(LeaveResult),
    Commit(GroupError),
}

pub(crate) type Replies = Vec<(Ticket, Reply)>;

/// A join refused (or MEMBER_ID_REQUIRED): the error and the member id to answer with.
type JoinOutcome = Result<(), (GroupError, String)>;

/// The coordinator's bounds and timings (see `CoordinatorConfig`).
#[derive(Debug, Clone)]
pub(crate) struct GroupLimits {
    pub groups_max: usize,
    pub members_per_group_max: usize,
    pub session_timeout_min_ms: u32,
    pub session_timeout_max_ms: u32,
    pub initial_rebalance_delay_ms: u32,
    /// Part of every member id made, different at each start, so that an id
    /// made before a restart is never made again.
    pub member_id_nonce: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) enum GroupState {
    #[default]
    Empty,
    PreparingRebalance,
    CompletingRebalance,
    Stable,
}

#[derive(Debug)]
struct Member {
    member_id: String,
    instance_id: Option<String>,
    session_timeout_ms: u64,
    rebalance_timeout_ms: u64,
    protocols: Vec<(String, Vec<u8>)>,
    awaiting_join: Option<Ticket>,
    awaiting_sync: Option<Ticket>,
    /// The member is removed past this, unless a join or sync of it waits.
    session_deadline_ms: u64,
    assignment: Vec<u8>,
}

/// A member id handed out with MEMBER_ID_REQUIRED, not yet used to rejoin.
#[derive(Debug)]
struct PendingMember {
    member_id: String,
    deadline_ms: u64,
}

#[derive(Debug, Default)]
struct Group {
    state: GroupState,
    generation_id: i32,
    protocol_type: String,
    protocol_name: Option<String>,
    /// The first member to join, kept across rebalances while present.
    leader: Option<String>,
    /// In join order.
    members: Vec<Member>,
    pending: Vec<PendingMember>,
    /// While PreparingRebalance: when the join completes (or the initial
    /// delay is reconsidered).
    rebalance_deadline_ms: u64,
    /// Some while the first rebalance of an Empty group waits for more
    /// members (Kafka's InitialDelayedJoin): the time it may still extend.
    initial_remaining_ms: Option<u64>,
    new_member_added: bool,
}

/// Every group of the coordinator.
#[derive(Debug)]
pub(crate) struct Groups {
    limits: GroupLimits,
    groups: HashMap<String, Group>,
    /// Each group's next deadline, ordered, so that finding the next one
    /// does not scan every member of every group at each request; kept by
    /// [`Groups::after`], which runs after every change to a group.
    deadlines: BTreeSet<(u64, String)>,
    queued_ms: HashMap<String, u64>,
    member_ids_made: u64,
}

fn id_ok(id: &str) -> bool {
    !id.is_empty() && id.len() <= GROUP_ID_BYTES_MAX
}

fn join_error(error: GroupError, member_id: String) -> Reply {
    Reply::Join(JoinResult::error(error, member_id))
}

fn sync_error(error: GroupError) -> Reply {
    Reply::Sync(SyncResult::error(error))
}

impl JoinResult {
    pub(crate) fn error(error: GroupError, member_id: String) -> JoinResult {
        JoinResult { error, generation_id: -1, protocol_type: None, protocol_name: None, leader: String::new(), member_id, members: vec![] }
    }
}

impl SyncResult {
    pub(crate) fn error(error: GroupError) -> SyncResult {
        SyncResult { error, protocol_type: None, protocol_name: None, assignment: vec![] }
    }
}

impl Groups {
    pub(crate) fn new(limits: GroupLimits) -> Groups {
        Groups { limits, groups: HashMap::new(), deadlines: BTreeSet::new(), queued_ms: HashMap::new(), member_ids_made: 0 }
    }

    pub(crate) fn join(&mut self, ticket: Ticket, req: JoinGroup, now_ms: u64) -> Replies {
        let mut out = Vec::new();
        let name = req.group.clone();
        if let Err((error, member_id)) = self.join_checked(ticket, req, now_ms, &mut out) {
            out.push((ticket, join_error(error, member_id)));
        }
        self.after(&name);
        out
    }

    fn join_checked(&mut self, ticket: Ticket, req: JoinGroup, now_ms: u64, out: &mut Replies) -> Result<(), (GroupError, String)> {
        let fail = |e: GroupError| Err((e, req.member_id.clone()));
        if !id_ok(&req.group) || req.group_instance_id.as_deref().is_some_and(|i| !id_ok(i)) {
            return fail(GroupError::InvalidGroupId);
        }
        let session_ms = i64::from(req.session_timeout_ms);
        if session_ms < i64::from(self.limits.session_timeout_min_ms) || session_ms > i64::from(self.limits.session_timeout_max_ms) {
            return fail(GroupError::InvalidSessionTimeout);
        }
        let group = self.groups.get(&req.group);
        if group.is_none() && !req.member_id.is_empty() {
            return fail(GroupError::UnknownMemberId);
        }
        if group.is_none() && self.groups.len() >= self.limits.groups_max {
            tracing::warn!(group = %req.group, groups_max = self.limits.groups_max, "kafka join refused: too many consumer groups");
            return fail(GroupError::CoordinatorNotAvailable);
        }
        if !supports(group, &req.member_id, &req.protocol_type, &req.protocols) {
            return fail(GroupError::InconsistentGroupProtocol);
        }
        let new_id = if req.member_id.is_empty() { Some(self.make_member_id(&req.client_id)) } else { None };
        let limits = self.limits.clone();
        let group = self.groups.entry(req.group.clone()).or_insert_with(|| Group::new(&req.protocol_type));
        match new_id {
            Some(id) => group.join_new(ticket, req, id, now_ms, &limits, out),
            None => group.join_known(ticket, req, now_ms, &limits, out),
        }
    }

    fn make_member_id(&mut self, client_id: &str) -> String {
        let mut cut = client_id.len().min(CLIENT_ID_IN_MEMBER_ID_BYTES_MAX);
        while !client_id.is_char_boundary(cut) {
            cut -= 1;
        }
        self.member_ids_made += 1;
        format!("{}-{:016x}-{}", &client_id[..cut], self.limits.member_id_nonce, self.member_ids_made)
    }

    pub(crate) fn sync(&mut self, ticket: Ticket, req: SyncGroup, now_ms: u64) -> Replies {
        let mut out = Vec::new();
        let req_group = req.group.clone();
        let Some(group) = self.groups.get_mut(&req.group) else {
            return vec![(ticket, sync_error(GroupError::UnknownMemberId))];
        };
        if let Err(error) = group.sync(ticket, req, now_ms, &mut out) {
            out.push((ticket, sync_error(error)));
        }
        self.after(&req_group);
        out
    }

    pub(crate) fn heartbeat(&mut self, ticket: Ticket, req: Heartbeat, now_ms: u64) -> Replies {
        let error = match self.groups.get_mut(&req.group) {
            None => GroupError::UnknownMemberId,
            Some(group) => group.heartbeat(&req, now_ms),
        };
        self.after(&req.group);
        vec![(ticket, Reply::Heartbeat(error))]
    }

    /// LeaveGroup: each member named is removed (by member id, or by group
    /// instance id when the member id is empty) and the rest rebalance.
    /// The top-level error is NONE as in Kafka; before v3 a request names
    /// one member, whose error is the one to answer.
    pub(crate) fn leave(&mut self, ticket: Ticket, group: &str, leaving: Vec<LeavingMember>, now_ms: u64) -> Replies {
        let mut out = Vec::new();
        let mut members = Vec::with_capacity(leaving.len());
        for m in leaving {
            let error = match self.groups.get_mut(group) {
                None => GroupError::UnknownMemberId,
                Some(g) => g.leave(&m, now_ms, &mut out),
            };
            members.push((m.member_id, m.group_instance_id, error));
        }
        self.after(group);
        out.push((ticket, Reply::Leave(LeaveResult { error: GroupError::None, members })));
        out
    }

    /// Whether an OffsetCommit by (generation, member) may commit, as
    /// Kafka's doCommitOffsets: a negative generation commits for a group
    /// without members (a consumer that assigns itself); otherwise the
    /// member must be in the current generation, and not mid-rebalance.
    pub(crate) fn check_commit(&self, ticket: Ticket, group: &str, generation_id: i32, member_id: &str) -> Replies {
        let error = match self.groups.get(group) {
            _ if !id_ok(group) => GroupError::InvalidGroupId,
            None if generation_id < 0 => GroupError::None,
            None => GroupError::IllegalGeneration,
            Some(g) if generation_id < 0 && g.members.is_empty() => GroupError::None,
            Some(g) if !g.members.iter().any(|m| m.member_id == member_id) => GroupError::UnknownMemberId,
            Some(g) if generation_id != g.generation_id => GroupError::IllegalGeneration,
            Some(g) if g.state == GroupState::CompletingRebalance => GroupError::RebalanceInProgress,
            Some(_) => GroupError::None,
        };
        vec![(ticket, Reply::Commit(error))]
    }

    /// The earliest time something is due: a rebalance's end, a session's
    /// end, a pending member id's end. None: nothing until a request.
    pub(crate) fn next_deadline_ms(&self) -> Option<u64> {
        self.deadlines.first().map(|(deadline_ms, _)| *deadline_ms)
    }

    /// Does what is due at `now_ms`: expired sessions and pending ids are
    /// removed, rebalances whose time is up complete.
    pub(crate) fn expire(&mut self, now_ms: u64) -> Replies {
        let mut out = Vec::new();
        let due: Vec<String> = self.deadlines.iter().take_while(|(d, _)| *d <= now_ms).map(|(_, name)| name.clone()).collect();
        for name in due {
            if let Some(g) = self.groups.get_mut(&name) {
                g.expire(now_ms, u64::from(self.limits.initial_rebalance_delay_ms), &mut out);
            }
            self.after(&name);
        }
        out
    }

    /// Answers every waiting join and sync with COORDINATOR_NOT_AVAILABLE
    /// and forgets every group: the coordinator is stopping.
    pub(crate) fn drain(&mut self) -> Replies {
        let mut out = Vec::new();
        for g in self.groups.values_mut() {
            for m in &mut g.members {
                if let Some(t) = m.awaiting_join.take() {
                    out.push((t, join_error(GroupError::CoordinatorNotAvailable, m.member_id.clone())));
                }
                if let Some(t) = m.awaiting_sync.take() {
                    out.push((t, sync_error(GroupError::CoordinatorNotAvailable)));
                }
            }
        }
        self.groups.clear();
        self.deadlines.clear();
        self.queued_ms.clear();
        out
    }

    /// After every change to a group: its invariants are checked, it is
    /// forgotten if nothing is left of it, and its deadline is requeued.
    fn after(&mut self, name: &str) {
        if let Some(g) = self.groups.get(name) {
            g.invariants(&self.limits);
            if g.state == GroupState::Empty && g.members.is_empty() && g.pending.is_empty() {
                self.groups.remove(name);
            }
        }
        if let Some(old_ms) = self.queued_ms.remove(name) {
            self.deadlines.remove(&(old_ms, name.to_string()));
        }
        if let Some(deadline_ms) = self.groups.get(name).and_then(Group::next_deadline_ms) {
            self.deadlines.insert((deadline_ms, name.to_string()));
            self.queued_ms.insert(name.to_string(), deadline_ms);
        }
    }
}

/// Kafka's supportsProtocols: the first member names a type and at least
/// one protocol; a later one must have the group's type and a protocol
/// every other member supports.
fn supports(group: Option<&Group>, member_id: &str, protocol_type: &str, protocols: &[(String, Vec<u8>)]) -> bool {
    if protocol_type.is_empty() || protocols.is_empty() {
        return false;
    }
    let Some(g) = group.filter(|g| g.members.iter().any(|m| m.member_id != member_id)) else {
        return group.is_none_or(|g| g.protocol_type == protocol_type || g.members.is_empty());
    };
    g.protocol_type == protocol_type
        && protocols.iter().any(|(p, _)| g.members.iter().filter(|m| m.member_id != member_id).all(|m| m.supports(p)))
}

impl Member {
    fn supports(&self, protocol: &str) -> bool {
        self.protocols.iter().any(|(p, _)| p == protocol)
    }

    fn renew(&mut self, now_ms: u64) {
        self.session_deadline_ms = now_ms + self.session_timeout_ms;
    }

    fn from_join(req: JoinGroup, member_id: String, ticket: Ticket, now_ms: u64) -> Member {
        let session_timeout_ms = u64::try_from(req.session_timeout_ms).unwrap_or(0);
        let rebalance_timeout_ms = u64::try_from(req.rebalance_timeout_ms).unwrap_or(session_timeout_ms);
        Member {
            member_id,
            instance_id: req.group_instance_id,
            session_timeout_ms,
            rebalance_timeout_ms,
            protocols: req.protocols,
            awaiting_join: Some(ticket),
            awaiting_sync: None,
            session_deadline_ms: now_ms + session_timeout_ms,
            assignment: vec![],
        }
    }
}

#[path = "group_state.rs"]
mod group_state;

#[cfg(test)]
#[path = "group_tests.rs"]
mod tests;
