//! The group state machine driven with explicit time. The harness checks
//! on every call that each ticket is answered at most once, and at the end
//! of each test that none is left unanswered but those expected to wait.
use std::collections::HashSet;

use super::*;

const SESSION_MS: u64 = 10_000;
const REBALANCE_MS: u64 = 20_000;
const INITIAL_DELAY_MS: u64 = 3_000;

fn limits() -> GroupLimits {
    GroupLimits {
        groups_max: 2,
        members_per_group_max: 3,
        session_timeout_min_ms: 6_000,
        session_timeout_max_ms: 1_800_000,
        initial_rebalance_delay_ms: INITIAL_DELAY_MS as u32,
        member_id_nonce: 7,
    }
}

fn req(client: &str, member_id: &str) -> JoinGroup {
    JoinGroup {
        group: "g".into(),
        member_id: member_id.into(),
        group_instance_id: None,
        client_id: client.into(),
        session_timeout_ms: SESSION_MS as i32,
        rebalance_timeout_ms: REBALANCE_MS as i32,
        protocol_type: "consumer".into(),
        protocols: vec![("range".into(), format!("{client}-range").into_bytes()), ("roundrobin".into(), b"rr".to_vec())],
        requires_known_member_id: false,
    }
}

fn sync_req(member_id: &str, generation_id: i32, assignments: Vec<(String, Vec<u8>)>) -> SyncGroup {
    let member_id = member_id.to_string();
    SyncGroup {
        group: "g".into(),
        generation_id,
        member_id,
        group_instance_id: None,
        protocol_type: None,
        protocol_name: None,
        assignments,
    }
}

fn beat(member_id: &str, generation_id: i32) -> Heartbeat {
    Heartbeat { group: "g".into(), generation_id, member_id: member_id.into(), group_instance_id: None }
}

struct H {
    g: Groups,
    now_ms: u64,
    tickets_issued: Ticket,
    open: HashSet<Ticket>,
}

impl H {
    fn new() -> H {
        H { g: Groups::new(limits()), now_ms: 0, tickets_issued: 0, open: HashSet::new() }
    }

    fn ticket(&mut self) -> Ticket {
        self.tickets_issued += 1;
        self.open.insert(self.tickets_issued);
        self.tickets_issued
    }

    /// Checks each reply's ticket, and that the ordered deadlines agree
    /// with a scan of every group (what they spare the coordinator).
    fn take(&mut self, replies: Replies) -> Replies {
        for (t, _) in &replies {
            assert!(self.open.remove(t), "ticket {t} answered twice or never issued");
        }
        let scanned: Vec<u64> = self.g.groups.values().filter_map(Group::next_deadline_ms).collect();
        assert_eq!(self.g.next_deadline_ms(), scanned.iter().min().copied(), "the ordered deadlines went stale");
        assert_eq!(self.g.deadlines.len(), scanned.len());
        replies
    }

    fn join(&mut self, r: JoinGroup) -> (Ticket, Replies) {
        let t = self.ticket();
        let out = self.g.join(t, r, self.now_ms);
        (t, self.take(out))
    }

    fn sync(&mut self, r: SyncGroup) -> (Ticket, Replies) {
        let t = self.ticket();
        let out = self.g.sync(t, r, self.now_ms);
        (t, self.take(out))
    }

    fn heartbeat(&mut self, member_id: &str, generation_id: i32) -> GroupError {
        let t = self.ticket();
        let out = self.g.heartbeat(t, beat(member_id, generation_id), self.now_ms);
        match self.take(out).as_slice() {
            [(got, Reply::Heartbeat(e))] if *got == t => *e,
            other => panic!("heartbeat answered {other:?}"),
        }
    }

    fn leave(&mut self, members: &[&str]) -> (LeaveResult, Replies) {
        let t = self.ticket();
        let leaving = members.iter().map(|m| LeavingMember { member_id: m.to_string(), group_instance_id: None }).collect();
        let out = self.g.leave(t, "g", leaving, self.now_ms);
        let mut out = self.take(out);
        let Some((_, Reply::Leave(result))) = out.pop() else { panic!("leave not answered last") };
        (result, out)
    }

    fn commit(&mut self, generation_id: i32, member_id: &str) -> GroupError {
        let t = self.ticket();
        let out = self.g.check_commit(t, "g", generation_id, member_id);
        match self.take(out).as_slice() {
            [(_, Reply::Commit(e))] => *e,
            other => panic!("commit check answered {other:?}"),
        }
    }

    fn advance_to(&mut self, now_ms: u64) -> Replies {
        self.now_ms = now_ms;
        let out = self.g.expire(now_ms);
        self.take(out)
    }

    /// Advances to each next deadline until `until` says the replies so
    /// far are enough; bounded, so a machine that never answers fails.
    fn run_until(&mut self, until: impl Fn(&Replies) -> bool) -> Replies {
        let mut all = Vec::new();
        for _ in 0..100 {
            if until(&all) {
                return all;
            }
            let next = self.g.next_deadline_ms().expect("nothing due, yet replies are missing");
            all.extend(self.advance_to(next.max(self.now_ms)));
        }
        panic!("no answer after 100 deadlines: {all:?}");
    }

    fn state(&self) -> Option<GroupState> {
        self.g.groups.get("g").map(|g| g.state)
    }
}

fn join_of(replies: &Replies, t: Ticket) -> JoinResult {
    match replies.iter().find(|(got, _)| *got == t) {
        Some((_, Reply::Join(r))) => r.clone(),
        other => panic!("ticket {t}: no join result in {other:?} of {replies:?}"),
    }
}

fn sync_of(replies: &Replies, t: Ticket) -> SyncResult {
    match replies.iter().find(|(got, _)| *got == t) {
        Some((_, Reply::Sync(r))) => r.clone(),
        other => panic!("ticket {t}: no sync result in {other:?} of {replies:?}"),
    }
}

fn answered(tickets: &[Ticket]) -> impl Fn(&Replies) -> bool + '_ {
    move |r: &Replies| tickets.iter().all(|t| r.iter().any(|(got, _)| got == t))
}

/// Joins `clients` (without KIP-394) at the current time, runs the
/// initial delay out, and syncs with the leader giving each member its own
/// id as assignment. Returns the generation and the member ids, leader first.
fn stable(h: &mut H, clients: &[&str]) -> (i32, Vec<String>) {
    let tickets: Vec<Ticket> = clients.iter().map(|c| h.join(req(c, "")).0).collect();
    let replies = h.run_until(answered(&tickets));
    let results: Vec<JoinResult> = tickets.iter().map(|t| join_of(&replies, *t)).collect();
    let generation = results[0].generation_id;
    let leader = results[0].leader.clone();
    let mut ids: Vec<String> = results.iter().map(|r| r.member_id.clone()).collect();
    ids.sort_by_key(|id| *id != leader);
    for id in ids.iter().skip(1) {
        assert!(h.sync(sync_req(id, generation, vec![])).1.is_empty(), "a follower's sync waits for the leader");
    }
    let assignments = ids.iter().map(|id| (id.clone(), id.as_bytes().to_vec())).collect();
    let (_, replies) = h.sync(sync_req(&ids[0], generation, assignments));
    assert_eq!(replies.len(), ids.len(), "the leader's sync answers every member");
    assert_eq!(h.state(), Some(GroupState::Stable));
    (generation, ids)
}

// Proves: two members joining together (within the initial delay) land in
// one generation with one leader, the first to join; only the leader gets
// the members with their metadata for the chosen protocol (a 1-1 vote tie
// goes to the first member's order); follower syncs wait for the leader's.
#[test]
fn two_members_joining_together_get_one_generation() {
    let mut h = H::new();
    let (ta, r) = h.join(req("a", ""));
    assert!(r.is_empty());
    h.now_ms = 100;
    let mut b = req("b", "");
    b.protocols.reverse();
    let (tb, r) = h.join(b);
    assert!(r.is_empty());
    assert_eq!(h.g.next_deadline_ms(), Some(INITIAL_DELAY_MS));
    assert!(h.advance_to(INITIAL_DELAY_MS).is_empty(), "a member arrived during the delay: it is extended");
    let replies = h.advance_to(h.g.next_deadline_ms().unwrap());
    let (a, b) = (join_of(&replies, ta), join_of(&replies, tb));
    assert_eq!((a.error, a.generation_id, b.generation_id), (GroupError::None, 1, 1));
    assert_eq!((a.leader.as_str(), b.leader.as_str()), (a.member_id.as_str(), a.member_id.as_str()));
    assert_eq!((a.protocol_name.as_deref(), a.protocol_type.as_deref()), (Some("range"), Some("consumer")));
    let metadata: Vec<&[u8]> = a.members.iter().map(|m| m.metadata.as_slice()).collect();
    assert_eq!(metadata, vec![b"a-range".as_slice(), b"b-range".as_slice()]);
    assert!(b.members.is_empty(), "only the leader sees the members");
    let (tsb, r) = h.sync(sync_req(&b.member_id, 1, vec![]));
    assert!(r.is_empty(), "the follower waits for the leader");
    assert_eq!(h.heartbeat(&b.member_id, 1), GroupError::None, "a heartbeat between join and sync is fine");
    let (tsa, r) =
        h.sync(sync_req(&a.member_id, 1, vec![(b.member_id.clone(), b"for-b".to_vec()), (a.member_id.clone(), b"for-a".to_vec())]));
    assert_eq!((sync_of(&r, tsa).assignment, sync_of(&r, tsb).assignment), (b"for-a".to_vec(), b"for-b".to_vec()));
    assert_eq!(h.heartbeat(&a.member_id, 1), GroupError::None);
    assert!(h.open.is_empty());
}

// Proves: a third member joining a Stable group starts a rebalance; the
// others learn it from their heartbeat (REBALANCE_IN_PROGRESS), rejoin,
// and once all three have joined the next generation is answered at once,
// with the same leader.
#[test]
fn a_third_member_rebalances() {
    let mut h = H::new();
    let (generation, ids) = stable(&mut h, &["a", "b"]);
    let (tc, r) = h.join(req("c", ""));
    assert!(r.is_empty());
    assert_eq!(h.state(), Some(GroupState::PreparingRebalance));
    assert_eq!(h.heartbeat(&ids[0], generation), GroupError::RebalanceInProgress);
    let (ta, r) = h.join(req("a", &ids[0]));
    assert!(r.is_empty(), "b has not rejoined yet");
    let (tb, r) = h.join(req("b", &ids[1]));
    let (a, c) = (join_of(&r, ta), join_of(&r, tc));
    assert_eq!((a.generation_id, join_of(&r, tb).generation_id, c.generation_id), (generation + 1, generation + 1, generation + 1));
    assert_eq!((a.leader.as_str(), a.members.len(), c.members.len()), (ids[0].as_str(), 3, 0));
    assert!(h.open.is_empty());
}

// Proves: a member that stops heartbeating is removed once its session
// times out, not before; the rest rebalance without it.
#[test]
fn a_silent_member_is_removed_after_its_session_timeout() {
    let mut h = H::new();
    let (generation, ids) = stable(&mut h, &["a", "b"]);
    let synced_ms = h.now_ms;
    for step in 1..=3 {
        h.now_ms = synced_ms + step * 4_000;
        assert_eq!(h.heartbeat(&ids[0], generation), GroupError::None, "a keeps its session");
    }
    assert_eq!(h.g.next_deadline_ms(), Some(synced_ms + SESSION_MS), "b's session ends first");
    assert!(h.advance_to(synced_ms + SESSION_MS - 1).is_empty());
    assert_eq!(h.state(), Some(GroupState::Stable), "not removed a millisecond early");
    h.advance_to(synced_ms + SESSION_MS);
    assert_eq!(h.heartbeat(&ids[1], generation), GroupError::UnknownMemberId, "b is gone");
    assert_eq!(h.heartbeat(&ids[0], generation), GroupError::RebalanceInProgress);
    let (ta, r) = h.join(req("a", &ids[0]));
    let a = join_of(&r, ta);
    assert_eq!((a.generation_id, a.members.len()), (generation + 1, 1));
    assert!(h.open.is_empty());
}

// Proves: a member that keeps heartbeating but does not rejoin holds the
// rebalance only until the rebalance timeout; then it is removed and the
// members that rejoined get the next generation.
#[test]
fn a_member_that_does_not_rejoin_is_removed_after_the_rebalance_timeout() {
    let mut h = H::new();
    let (generation, ids) = stable(&mut h, &["a", "b"]);
    let (tc, _) = h.join(req("c", ""));
    let (ta, r) = h.join(req("a", &ids[0]));
    assert!(r.is_empty());
    let started_ms = h.now_ms;
    for step in 1..REBALANCE_MS / 4_000 {
        h.now_ms = started_ms + step * 4_000;
        assert_eq!(h.heartbeat(&ids[1], generation), GroupError::RebalanceInProgress);
        assert!(h.advance_to(h.now_ms).is_empty(), "b's heartbeats keep its session; the rebalance waits");
    }
    let r = h.run_until(answered(&[ta, tc]));
    assert_eq!(h.now_ms, started_ms + REBALANCE_MS);
    let a = join_of(&r, ta);
    assert_eq!((a.generation_id, a.members.len(), join_of(&r, tc).generation_id), (generation + 1, 2, generation + 1));
    assert_eq!(h.heartbeat(&ids[1], generation), GroupError::UnknownMemberId);
    assert!(h.open.is_empty());
}

// Proves: LeaveGroup removes the members named (unknown ones answered
// UNKNOWN_MEMBER_ID each), the rest rebalance, and the group is forgotten
// when its last member leaves.
#[test]
fn leave_rebalances_and_the_last_leave_forgets_the_group() {
    let mut h = H::new();
    let (generation, ids) = stable(&mut h, &["a", "b"]);
    let (result, others) = h.leave(&[&ids[1], "nobody"]);
    assert!(others.is_empty());
    let errors: Vec<GroupError> = result.members.iter().map(|m| m.2).collect();
    assert_eq!((result.error, errors), (GroupError::None, vec![GroupError::None, GroupError::UnknownMemberId]));
    assert_eq!(h.heartbeat(&ids[0], generation), GroupError::RebalanceInProgress);
    let (ta, r) = h.join(req("a", &ids[0]));
    assert_eq!(join_of(&r, ta).generation_id, generation + 1);
    h.leave(&[&ids[0]]);
    assert!(h.g.groups.is_empty(), "an empty group is forgotten");
    assert_eq!(h.leave(&[&ids[0]]).0.members[0].2, GroupError::UnknownMemberId);
    assert!(h.open.is_empty());
}

// Proves: KIP-394: a v4+ join without a member id is answered
// MEMBER_ID_REQUIRED with a fresh id (named after the client id) that the
// member rejoins with; an id handed out but never used lapses after the
// session timeout and is unknown from then on.
#[test]
fn member_id_required_then_rejoin() {
    let mut h = H::new();
    let mut first = req("client-a", "");
    first.requires_known_member_id = true;
    let (t, r) = h.join(first);
    let required = join_of(&r, t);
    assert_eq!(required.error, GroupError::MemberIdRequired);
    assert!(required.member_id.starts_with("client-a-"), "{}", required.member_id);
    assert_eq!(h.heartbeat(&required.member_id, 0), GroupError::UnknownMemberId, "a pending id is not a member yet");
    let mut again = req("client-a", &required.member_id);
    again.requires_known_member_id = true;
    let (t, _) = h.join(again);
    let joined = join_of(&h.run_until(answered(&[t])), t);
    assert_eq!((joined.error, joined.member_id.as_str(), joined.generation_id), (GroupError::None, required.member_id.as_str(), 1));
    let mut lapsing = req("client-b", "");
    lapsing.requires_known_member_id = true;
    let (t, r) = h.join(lapsing);
    let lapsed_id = join_of(&r, t).member_id;
    h.advance_to(h.now_ms + SESSION_MS);
    let (t, r) = h.join(req("client-b", &lapsed_id));
    assert_eq!(join_of(&r, t).error, GroupError::UnknownMemberId);
    assert_ne!(lapsed_id, required.member_id);
}

// Proves: a consumer the leader gives nothing gets an empty
// ConsumerProtocolAssignment (version 0, no topics, null user data), not
// zero bytes; another protocol type gets what the leader gave, even zero bytes.
#[test]
fn an_unassigned_consumer_gets_an_encoded_empty_assignment() {
    for (protocol_type, expected) in [("consumer", EMPTY_CONSUMER_ASSIGNMENT.to_vec()), ("connect", vec![])] {
        let mut h = H::new();
        let tickets: Vec<Ticket> = ["a", "b"]
            .into_iter()
            .map(|c| {
                let mut r = req(c, "");
                r.protocol_type = protocol_type.into();
                h.join(r).0
            })
            .collect();
        let replies = h.run_until(answered(&tickets));
        let (a, b) = (join_of(&replies, tickets[0]), join_of(&replies, tickets[1]));
        let (tb, _) = h.sync(sync_req(&b.member_id, 1, vec![]));
        let (_, r) = h.sync(sync_req(&a.member_id, 1, vec![(a.member_id.clone(), b"all".to_vec())]));
        assert_eq!(sync_of(&r, tb).assignment, expected, "{protocol_type}");
    }
    assert_eq!(EMPTY_CONSUMER_ASSIGNMENT, [0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0xff, 0xff, 0xff, 0xff]);
}

// Proves: wrong generations and unknown members are refused as Kafka
// does, in sync, heartbeat and the OffsetCommit check; a sync while the
// group prepares a rebalance is told to rejoin; a commit with generation -1
// is allowed only for a group without members.
#[test]
fn wrong_generation_and_member_are_refused() {
    let mut h = H::new();
    assert_eq!(h.commit(-1, ""), GroupError::None, "a simple consumer on an unknown group");
    assert_eq!(h.commit(3, "x"), GroupError::IllegalGeneration);
    let (generation, ids) = stable(&mut h, &["a", "b"]);
    let error = |r: &Replies| match r.as_slice() {
        [(_, Reply::Sync(s))] => s.error,
        other => panic!("{other:?}"),
    };
    assert_eq!(error(&h.sync(sync_req(&ids[0], generation + 1, vec![])).1), GroupError::IllegalGeneration);
    assert_eq!(error(&h.sync(sync_req("stranger", generation, vec![])).1), GroupError::UnknownMemberId);
    assert_eq!(h.heartbeat(&ids[1], generation - 1), GroupError::IllegalGeneration);
    assert_eq!(h.heartbeat("stranger", generation), GroupError::UnknownMemberId);
    assert_eq!(h.commit(generation, &ids[1]), GroupError::None);
    assert_eq!(h.commit(generation - 1, &ids[1]), GroupError::IllegalGeneration);
    assert_eq!(h.commit(-1, ""), GroupError::UnknownMemberId, "the group has members");
    let (_, r) = h.sync(sync_req(&ids[1], generation, vec![]));
    assert_eq!(sync_of(&r, h.tickets_issued).assignment, ids[1].as_bytes(), "a sync in Stable is answered at once");
    let (tc, _) = h.join(req("c", ""));
    assert_eq!(error(&h.sync(sync_req(&ids[1], generation, vec![])).1), GroupError::RebalanceInProgress);
    let (ta, _) = h.join(req("a", &ids[0]));
    let (tb, r) = h.join(req("b", &ids[1]));
    assert_eq!(join_of(&r, tc).generation_id, generation + 1);
    assert_eq!(h.commit(generation + 1, &ids[1]), GroupError::RebalanceInProgress, "between join and sync");
    assert_eq!((join_of(&r, ta).generation_id, join_of(&r, tb).generation_id), (generation + 1, generation + 1));
    let (tsb, r) = h.sync(sync_req(&ids[1], generation + 1, vec![]));
    assert!(r.is_empty());
    let (_, r) = h.sync(sync_req(&ids[0], generation + 1, vec![]));
    assert_eq!(sync_of(&r, tsb).assignment, EMPTY_CONSUMER_ASSIGNMENT.to_vec());
    assert!(h.open.is_empty());
}

// Proves: the bounds: session timeouts outside [min, max] are refused (45 s
// is accepted), group ids empty or over GROUP_ID_BYTES_MAX are refused, a
// member past members_per_group_max gets GROUP_MAX_SIZE_REACHED, a group
// past groups_max COORDINATOR_NOT_AVAILABLE, and a protocol type or set the
// group cannot share INCONSISTENT_GROUP_PROTOCOL. Refusals leave no group.
#[test]
fn bounds_are_refused_with_kafka_errors() {
    let mut h = H::new();
    let refused = |h: &mut H, r: JoinGroup| {
        let (t, out) = h.join(r);
        join_of(&out, t).error
    };
    for (ms, error) in [
        (5_999, GroupError::InvalidSessionTimeout),
        (1_800_001, GroupError::InvalidSessionTimeout),
        (-1, GroupError::InvalidSessionTimeout),
    ] {
        assert_eq!(refused(&mut h, JoinGroup { session_timeout_ms: ms, ..req("a", "") }), error, "{ms}");
    }
    for group in [String::new(), "g".repeat(GROUP_ID_BYTES_MAX + 1)] {
        assert_eq!(refused(&mut h, JoinGroup { group, ..req("a", "") }), GroupError::InvalidGroupId);
    }
    assert_eq!(refused(&mut h, JoinGroup { protocols: vec![], ..req("a", "") }), GroupError::InconsistentGroupProtocol);
    assert_eq!(refused(&mut h, req("a", "made-up")), GroupError::UnknownMemberId, "a member id for a group that does not exist");
    assert!(h.g.groups.is_empty(), "refusals create no group");
    let (generation, _) = stable(&mut h, &["a", "b", "c"]);
    assert_eq!(generation, 1);
    assert_eq!(refused(&mut h, JoinGroup { session_timeout_ms: 45_000, ..req("d", "") }), GroupError::GroupMaxSizeReached);
    assert_eq!(refused(&mut h, JoinGroup { protocol_type: "connect".into(), ..req("d", "") }), GroupError::InconsistentGroupProtocol);
    let other = |name: &str| JoinGroup { group: name.into(), session_timeout_ms: 45_000, ..req("x", "") };
    assert!(h.join(other("second")).1.is_empty(), "a second group waits for its initial delay");
    assert_eq!(refused(&mut h, other("third")), GroupError::CoordinatorNotAvailable);
    assert_eq!(h.g.groups.len(), 2);
    assert_eq!(h.g.drain().len(), 1, "drain answers the waiting join");
}

// Proves: KIP-345 static membership: a member rejoining with a known group
// instance id and no member id takes a new member id, keeps its place (and
// the leadership) and fences the old id, which gets FENCED_INSTANCE_ID.
#[test]
fn a_static_member_rejoining_fences_its_old_id() {
    let mut h = H::new();
    let stat = |member_id: &str| JoinGroup { group_instance_id: Some("i-1".into()), ..req("s", member_id) };
    let (t, _) = h.join(stat(""));
    let old = join_of(&h.run_until(answered(&[t])), t);
    assert_eq!(old.leader, old.member_id);
    h.sync(sync_req(&old.member_id, 1, vec![]));
    let (t, r) = h.join(stat(""));
    let new = join_of(&r, t);
    assert_ne!(new.member_id, old.member_id);
    assert_eq!((new.error, new.leader.as_str()), (GroupError::None, new.member_id.as_str()));
    let fenced = Heartbeat { group_instance_id: Some("i-1".into()), ..beat(&old.member_id, new.generation_id) };
    let t = h.ticket();
    let out = h.g.heartbeat(t, fenced, h.now_ms);
    assert_eq!(h.take(out), vec![(t, Reply::Heartbeat(GroupError::FencedInstanceId))]);
    let (t, r) = h.join(stat(&old.member_id));
    assert_eq!(join_of(&r, t).error, GroupError::FencedInstanceId);
    assert_eq!(h.g.groups["g"].members.len(), 1);
}

// Proves: a leader that joins and heartbeats but never syncs cannot hold
// the followers forever: after the rebalance timeout it is removed, the
// waiting sync is told to rejoin, and the follower leads the next
// generation alone.
#[test]
fn a_leader_that_never_syncs_is_removed() {
    let mut h = H::new();
    let tickets: Vec<Ticket> = ["a", "b"].into_iter().map(|c| h.join(req(c, "")).0).collect();
    let replies = h.run_until(answered(&tickets));
    let (a, b) = (join_of(&replies, tickets[0]), join_of(&replies, tickets[1]));
    let (tsb, _) = h.sync(sync_req(&b.member_id, 1, vec![]));
    let joined_ms = h.now_ms;
    for step in 1..REBALANCE_MS / 4_000 {
        h.now_ms = joined_ms + step * 4_000;
        assert_eq!(h.heartbeat(&a.member_id, 1), GroupError::None, "the leader keeps its session");
        assert!(h.advance_to(h.now_ms).is_empty());
    }
    let r = h.run_until(answered(&[tsb]));
    assert_eq!(h.now_ms, joined_ms + REBALANCE_MS);
    assert_eq!(sync_of(&r, tsb).error, GroupError::RebalanceInProgress);
    assert_eq!(h.heartbeat(&a.member_id, 1), GroupError::UnknownMemberId);
    let (t, r) = h.join(req("b", &b.member_id));
    let again = join_of(&r, t);
    assert_eq!((again.error, again.generation_id, again.leader.as_str()), (GroupError::None, 2, b.member_id.as_str()));
}

/// A seeded xorshift64 draw in 0..n: the random tests replay exactly.
fn draw(state: &mut u64, n: u64) -> u64 {
    *state ^= *state << 13;
    *state ^= *state >> 7;
    *state ^= *state << 17;
    *state % n
}

/// One random request to group `group` from what has been seen so far.
fn random_request(h: &mut H, rng: &mut u64, group: &str, seen: &mut Vec<(String, i32)>) {
    // A known member mostly; now and then no member id at all.
    let known = if draw(rng, 8) == 0 { None } else { seen.get(draw(rng, seen.len().max(1) as u64) as usize) };
    let (member_id, generation_id) = known.cloned().unwrap_or_default();
    let instance = [None, None, None, None, Some("i-1".to_string()), Some("i-2".to_string())][draw(rng, 6) as usize].clone();
    let t = h.ticket();
    let out = match draw(rng, 6) {
        0 | 1 => {
            let mut r = JoinGroup { group: group.into(), group_instance_id: instance, ..req("r", &member_id) };
            r.requires_known_member_id = draw(rng, 2) == 0;
            if draw(rng, 2) == 0 {
                r.protocols.reverse();
            }
            h.g.join(t, r, h.now_ms)
        }
        2 => {
            let assignments = seen.iter().filter(|_| draw(rng, 2) == 0).map(|(m, _)| (m.clone(), b"x".to_vec())).collect();
            h.g.sync(
                t,
                SyncGroup { group: group.into(), group_instance_id: instance, ..sync_req(&member_id, generation_id, assignments) },
                h.now_ms,
            )
        }
        3 => h.g.heartbeat(t, Heartbeat { group: group.into(), group_instance_id: instance, ..beat(&member_id, generation_id) }, h.now_ms),
        4 => h.g.leave(t, group, vec![LeavingMember { member_id: member_id.clone(), group_instance_id: instance }], h.now_ms),
        _ => h.g.check_commit(t, group, generation_id, &member_id),
    };
    // The few most recent member ids, each with its latest generation, so
    // that most requests come from members the group still knows.
    for (got, reply) in h.take(out) {
        let gone = match &reply {
            Reply::Leave(r) => r.members[0].2 == GroupError::None,
            Reply::Heartbeat(e) | Reply::Commit(e) => *e == GroupError::UnknownMemberId,
            Reply::Sync(r) => r.error == GroupError::UnknownMemberId,
            Reply::Join(r) => r.error == GroupError::UnknownMemberId,
        };
        if got == t && gone {
            seen.retain(|(m, _)| *m != member_id);
        }
        if let Reply::Join(r) = reply {
            seen.retain(|(m, _)| *m != r.member_id);
            if !r.member_id.is_empty() && r.error != GroupError::UnknownMemberId {
                seen.push((r.member_id, r.generation_id));
            }
            if seen.len() > 6 {
                seen.remove(0);
            }
        }
    }
}

// Proves: under seeded random mixes of joins (dynamic, KIP-394 and static),
// syncs, heartbeats, leaves, commit checks and time steps over two groups,
// the invariants (asserted after every transition) hold and no ticket is
// answered twice; and once the clients fall silent, every waiting join and
// sync is answered by the deadlines alone and every group is forgotten.
#[test]
fn random_operations_keep_the_invariants_and_answer_every_ticket() {
    for seed in 1..=100u64 {
        let mut rng = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
        let mut h = H::new();
        let mut seen = [Vec::new(), Vec::new()];
        for _ in 0..400 {
            if draw(&mut rng, 4) == 0 {
                // Mostly steps within a session, now and then past one.
                let step_ms = if draw(&mut rng, 16) == 0 { 15_000 } else { 600 };
                let now_ms = h.now_ms + draw(&mut rng, step_ms);
                h.advance_to(now_ms);
            } else {
                let g = draw(&mut rng, 2) as usize;
                random_request(&mut h, &mut rng, ["g", "h"][g], &mut seen[g]);
            }
        }
        for _ in 0..1_000 {
            let Some(next) = h.g.next_deadline_ms() else { break };
            h.advance_to(next.max(h.now_ms));
        }
        assert!(h.open.is_empty(), "seed {seed}: tickets never answered: {:?}", h.open);
        assert!(h.g.groups.is_empty(), "seed {seed}: groups left with no client: {:?}", h.g.groups.keys());
    }
}
