//! One consumer group's transitions (Kafka's GroupMetadata and the
//! per-group half of its GroupCoordinator), apart from [`Groups`](super::Groups),
//! which finds the group, bounds the count and forgets empty groups.
use std::collections::HashMap;

use super::{
    CONSUMER_PROTOCOL_TYPE, EMPTY_CONSUMER_ASSIGNMENT, Group, GroupError, GroupLimits, GroupState, Heartbeat, JoinGroup, JoinOutcome,
    JoinResult, JoinedMember, LeavingMember, Member, PendingMember, Replies, Reply, SyncGroup, SyncResult, Ticket, join_error, sync_error,
};

/// Kafka's selectProtocol: among the protocols every member supports, the
/// one most members list first; a tie goes to the first member's order.
pub(super) fn select_protocol(members: &[Member]) -> Option<String> {
    let first = members.first()?;
    let candidates: Vec<&str> = first.protocols.iter().map(|(p, _)| p.as_str()).filter(|p| members.iter().all(|m| m.supports(p))).collect();
    let votes = |c: &str| {
        members.iter().filter(|m| m.protocols.iter().map(|(p, _)| p.as_str()).find(|p| candidates.contains(p)) == Some(c)).count()
    };
    candidates.iter().rev().max_by_key(|c| votes(c)).map(|c| c.to_string())
}

impl Group {
    pub(super) fn new(protocol_type: &str) -> Group {
        Group { protocol_type: protocol_type.to_string(), ..Group::default() }
    }

    /// The member named by id, checked against its group instance id: an
    /// instance id held by another member id means this one was replaced.
    pub(super) fn member_index(&self, member_id: &str, instance_id: Option<&str>) -> Result<usize, GroupError> {
        if let Some(i) = instance_id.and_then(|inst| self.members.iter().position(|m| m.instance_id.as_deref() == Some(inst))) {
            return if self.members[i].member_id == member_id { Ok(i) } else { Err(GroupError::FencedInstanceId) };
        }
        self.members.iter().position(|m| m.member_id == member_id).ok_or(GroupError::UnknownMemberId)
    }

    /// A join without a member id, which gets `id`. MEMBER_ID_REQUIRED
    /// (KIP-394) comes back as an error carrying the id, as on the wire.
    pub(super) fn join_new(
        &mut self,
        ticket: Ticket,
        req: JoinGroup,
        id: String,
        now_ms: u64,
        limits: &GroupLimits,
        out: &mut Replies,
    ) -> JoinOutcome {
        let instance = req.group_instance_id.as_deref();
        if let Some(i) = instance.and_then(|inst| self.members.iter().position(|m| m.instance_id.as_deref() == Some(inst))) {
            // KIP-345: a static member back with a new id replaces its old
            // one, which is fenced from now on.
            let old = std::mem::replace(&mut self.members[i].member_id, id.clone());
            if let Some(t) = self.members[i].awaiting_join.take() {
                out.push((t, join_error(GroupError::FencedInstanceId, old.clone())));
            }
            if let Some(t) = self.members[i].awaiting_sync.take() {
                out.push((t, sync_error(GroupError::FencedInstanceId)));
            }
            if self.leader.as_deref() == Some(&old) {
                self.leader = Some(id);
            }
            return self.join_known_at(i, ticket, req, now_ms, limits, out);
        }
        if self.members.len() + self.pending.len() >= limits.members_per_group_max {
            return Err((GroupError::GroupMaxSizeReached, String::new()));
        }
        if instance.is_none() && req.requires_known_member_id {
            self.pending
                .push(PendingMember { member_id: id.clone(), deadline_ms: now_ms + u64::try_from(req.session_timeout_ms).unwrap_or(0) });
            return Err((GroupError::MemberIdRequired, id));
        }
        self.add_member(ticket, req, id, now_ms, limits, out);
        Ok(())
    }

    pub(super) fn join_known(
        &mut self,
        ticket: Ticket,
        req: JoinGroup,
        now_ms: u64,
        limits: &GroupLimits,
        out: &mut Replies,
    ) -> JoinOutcome {
        if let Some(p) = self.pending.iter().position(|p| p.member_id == req.member_id) {
            let id = self.pending.remove(p).member_id;
            self.add_member(ticket, req, id, now_ms, limits, out);
            return Ok(());
        }
        let i = self.member_index(&req.member_id, req.group_instance_id.as_deref()).map_err(|e| (e, req.member_id.clone()))?;
        self.join_known_at(i, ticket, req, now_ms, limits, out)
    }

    /// A member of the group joins again: answered at once with the
    /// current generation if nothing changed (Kafka does the same), else
    /// its protocols are updated and the group rebalances.
    fn join_known_at(
        &mut self,
        i: usize,
        ticket: Ticket,
        req: JoinGroup,
        now_ms: u64,
        limits: &GroupLimits,
        out: &mut Replies,
    ) -> JoinOutcome {
        let unchanged = self.members[i].protocols == req.protocols;
        let is_leader = self.leader.as_deref() == Some(&self.members[i].member_id);
        let current = match self.state {
            GroupState::CompletingRebalance => unchanged,
            GroupState::Stable => unchanged && !is_leader,
            GroupState::Empty | GroupState::PreparingRebalance => false,
        };
        let m = &mut self.members[i];
        m.renew(now_ms);
        if current {
            out.push((ticket, Reply::Join(self.join_result(i))));
            return Ok(());
        }
        if let Some(old) = m.awaiting_join.replace(ticket) {
            out.push((old, join_error(GroupError::RebalanceInProgress, m.member_id.clone())));
        }
        m.protocols = req.protocols;
        m.session_timeout_ms = u64::try_from(req.session_timeout_ms).unwrap_or(0);
        m.rebalance_timeout_ms = u64::try_from(req.rebalance_timeout_ms).unwrap_or(m.session_timeout_ms);
        m.renew(now_ms);
        self.maybe_prepare_rebalance(now_ms, u64::from(limits.initial_rebalance_delay_ms), out);
        self.try_complete_join(now_ms, out);
        Ok(())
    }

    fn add_member(&mut self, ticket: Ticket, req: JoinGroup, id: String, now_ms: u64, limits: &GroupLimits, out: &mut Replies) {
        if self.members.is_empty() {
            self.protocol_type.clone_from(&req.protocol_type);
        }
        if self.leader.is_none() {
            self.leader = Some(id.clone());
        }
        if self.initial_remaining_ms.is_some() {
            self.new_member_added = true;
        }
        self.members.push(Member::from_join(req, id, ticket, now_ms));
        self.maybe_prepare_rebalance(now_ms, u64::from(limits.initial_rebalance_delay_ms), out);
        self.try_complete_join(now_ms, out);
    }

    /// Starts a rebalance unless one is under way. Syncs waiting for a
    /// leader's assignment are told to rejoin. The first rebalance of an
    /// Empty group waits the initial delay, so members starting together
    /// land in one generation; later ones wait for every member, at most
    /// the longest rebalance timeout.
    fn maybe_prepare_rebalance(&mut self, now_ms: u64, initial_delay_ms: u64, out: &mut Replies) {
        if self.state == GroupState::PreparingRebalance {
            return;
        }
        for m in &mut self.members {
            if let Some(t) = m.awaiting_sync.take() {
                // Its session did not run while it waited: it gets a whole
                // one to rejoin in.
                m.renew(now_ms);
                out.push((t, sync_error(GroupError::RebalanceInProgress)));
            }
        }
        let rebalance_ms = self.members.iter().map(|m| m.rebalance_timeout_ms).max().unwrap_or(0);
        if self.state == GroupState::Empty {
            let delay_ms = rebalance_ms.min(initial_delay_ms);
            self.initial_remaining_ms = Some(rebalance_ms - delay_ms);
            self.new_member_added = false;
            self.rebalance_deadline_ms = now_ms + delay_ms;
        } else {
            self.initial_remaining_ms = None;
            self.rebalance_deadline_ms = now_ms + rebalance_ms;
        }
        self.state = GroupState::PreparingRebalance;
    }

    fn try_complete_join(&mut self, now_ms: u64, out: &mut Replies) {
        let all_joined = self.members.iter().all(|m| m.awaiting_join.is_some()) && self.pending.is_empty();
        if self.state == GroupState::PreparingRebalance && self.initial_remaining_ms.is_none() && all_joined {
            self.complete_join(now_ms, out);
        }
    }

    /// Ends the join phase: members that did not rejoin are removed, the
    /// generation advances, and every join is answered (the leader's with
    /// the members and their metadata for the chosen protocol).
    fn complete_join(&mut self, now_ms: u64, out: &mut Replies) {
        for m in self.members.iter().filter(|m| m.awaiting_join.is_none()) {
            tracing::info!(member = %m.member_id, "kafka group member removed: it did not rejoin within the rebalance timeout");
        }
        self.members.retain(|m| m.awaiting_join.is_some());
        self.initial_remaining_ms = None;
        self.new_member_added = false;
        if !self.leader.as_ref().is_some_and(|l| self.members.iter().any(|m| &m.member_id == l)) {
            self.leader = self.members.first().map(|m| m.member_id.clone());
        }
        self.generation_id = if self.generation_id == i32::MAX { 1 } else { self.generation_id + 1 };
        if self.members.is_empty() {
            self.state = GroupState::Empty;
            self.protocol_name = None;
            return;
        }
        self.protocol_name = select_protocol(&self.members);
        self.state = GroupState::CompletingRebalance;
        // The leader's sync is awaited at most this long (Kafka 3's
        // pending-sync timeout); without it followers could wait forever.
        self.rebalance_deadline_ms = now_ms + self.members.iter().map(|m| m.rebalance_timeout_ms).max().unwrap_or(0);
        for i in 0..self.members.len() {
            let ticket = self.members[i].awaiting_join.take();
            self.members[i].renew(now_ms);
            if let Some(t) = ticket {
                out.push((t, Reply::Join(self.join_result(i))));
            }
        }
    }

    fn join_result(&self, i: usize) -> JoinResult {
        let m = &self.members[i];
        let leader = self.leader.clone().unwrap_or_default();
        let protocol = self.protocol_name.as_deref().unwrap_or_default();
        let members = if leader == m.member_id {
            let metadata = |o: &Member| o.protocols.iter().find(|(p, _)| p == protocol).map(|(_, md)| md.clone()).unwrap_or_default();
            let joined = |o: &Member| JoinedMember {
                member_id: o.member_id.clone(),
                group_instance_id: o.instance_id.clone(),
                metadata: metadata(o),
            };
            self.members.iter().map(joined).collect()
        } else {
            vec![]
        };
        JoinResult {
            error: GroupError::None,
            generation_id: self.generation_id,
            protocol_type: Some(self.protocol_type.clone()),
            protocol_name: self.protocol_name.clone(),
            leader,
            member_id: m.member_id.clone(),
            members,
        }
    }

    pub(super) fn sync(&mut self, ticket: Ticket, req: SyncGroup, now_ms: u64, out: &mut Replies) -> Result<(), GroupError> {
        let i = self.member_index(&req.member_id, req.group_instance_id.as_deref())?;
        if req.generation_id != self.generation_id {
            return Err(GroupError::IllegalGeneration);
        }
        let type_differs = req.protocol_type.as_ref().is_some_and(|t| *t != self.protocol_type);
        if type_differs || (req.protocol_name.is_some() && req.protocol_name != self.protocol_name) {
            return Err(GroupError::InconsistentGroupProtocol);
        }
        match self.state {
            GroupState::Empty => return Err(GroupError::UnknownMemberId),
            GroupState::PreparingRebalance => return Err(GroupError::RebalanceInProgress),
            GroupState::Stable => out.push((ticket, self.sync_result(i))),
            GroupState::CompletingRebalance => {
                self.members[i].renew(now_ms);
                if let Some(old) = self.members[i].awaiting_sync.replace(ticket) {
                    out.push((old, sync_error(GroupError::RebalanceInProgress)));
                }
                if self.leader.as_deref() == Some(req.member_id.as_str()) {
                    self.assign(req.assignments);
                    self.state = GroupState::Stable;
                    for j in 0..self.members.len() {
                        if let Some(t) = self.members[j].awaiting_sync.take() {
                            // Its session did not run while it waited.
                            self.members[j].renew(now_ms);
                            out.push((t, self.sync_result(j)));
                        }
                    }
                }
            }
        }
        self.members[i].renew(now_ms);
        Ok(())
    }

    /// The leader's assignments; a member it gave nothing gets an empty
    /// one, encoded as a consumer can decode it when the type is "consumer".
    fn assign(&mut self, assignments: Vec<(String, Vec<u8>)>) {
        let mut given: HashMap<String, Vec<u8>> = assignments.into_iter().collect();
        let consumer = self.protocol_type == CONSUMER_PROTOCOL_TYPE;
        for m in &mut self.members {
            m.assignment = given.remove(&m.member_id).unwrap_or_default();
            if consumer && m.assignment.is_empty() {
                m.assignment = EMPTY_CONSUMER_ASSIGNMENT.to_vec();
            }
        }
    }

    fn sync_result(&self, i: usize) -> Reply {
        let assignment = self.members[i].assignment.clone();
        Reply::Sync(SyncResult {
            error: GroupError::None,
            protocol_type: Some(self.protocol_type.clone()),
            protocol_name: self.protocol_name.clone(),
            assignment,
        })
    }

    /// A heartbeat renews the session; REBALANCE_IN_PROGRESS tells the
    /// member to rejoin. During CompletingRebalance it is NONE, as in Kafka:
    /// a member may heartbeat between its join and its sync.
    pub(super) fn heartbeat(&mut self, req: &Heartbeat, now_ms: u64) -> GroupError {
        let i = match self.member_index(&req.member_id, req.group_instance_id.as_deref()) {
            Ok(i) => i,
            Err(e) => return e,
        };
        if req.generation_id != self.generation_id {
            return GroupError::IllegalGeneration;
        }
        self.members[i].renew(now_ms);
        match self.state {
            GroupState::PreparingRebalance => GroupError::RebalanceInProgress,
            GroupState::Empty => GroupError::UnknownMemberId,
            GroupState::CompletingRebalance | GroupState::Stable => GroupError::None,
        }
    }

    pub(super) fn leave(&mut self, m: &LeavingMember, now_ms: u64, out: &mut Replies) -> GroupError {
        let pending = if m.group_instance_id.is_none() { self.pending.iter().position(|p| p.member_id == m.member_id) } else { None };
        if let Some(p) = pending {
            self.pending.remove(p);
            self.try_complete_join(now_ms, out);
            return GroupError::None;
        }
        let found = match (m.member_id.as_str(), m.group_instance_id.as_deref()) {
            ("", Some(inst)) => self.members.iter().position(|x| x.instance_id.as_deref() == Some(inst)).ok_or(GroupError::UnknownMemberId),
            (id, inst) => self.member_index(id, inst),
        };
        match found {
            Ok(i) => {
                self.remove_member(i, now_ms, out);
                GroupError::None
            }
            Err(e) => e,
        }
    }

    /// Removes a member (left, or its session or a rebalance ran out);
    /// its waiting join or sync is answered UNKNOWN_MEMBER_ID and the rest
    /// of the group rebalances.
    fn remove_member(&mut self, i: usize, now_ms: u64, out: &mut Replies) {
        let m = self.members.remove(i);
        if let Some(t) = m.awaiting_join {
            out.push((t, join_error(GroupError::UnknownMemberId, m.member_id.clone())));
        }
        if let Some(t) = m.awaiting_sync {
            out.push((t, sync_error(GroupError::UnknownMemberId)));
        }
        if self.leader.as_deref() == Some(m.member_id.as_str()) {
            self.leader = self.members.first().map(|x| x.member_id.clone());
        }
        if self.state != GroupState::Empty {
            // Not Empty, so no initial delay applies.
            self.maybe_prepare_rebalance(now_ms, 0, out);
            self.try_complete_join(now_ms, out);
        }
    }

    pub(super) fn next_deadline_ms(&self) -> Option<u64> {
        let sessions =
            self.members.iter().filter(|m| m.awaiting_join.is_none() && m.awaiting_sync.is_none()).map(|m| m.session_deadline_ms);
        let pending = self.pending.iter().map(|p| p.deadline_ms);
        let rebalancing = matches!(self.state, GroupState::PreparingRebalance | GroupState::CompletingRebalance);
        sessions.chain(pending).chain(rebalancing.then_some(self.rebalance_deadline_ms)).min()
    }

    pub(super) fn expire(&mut self, now_ms: u64, initial_delay_ms: u64, out: &mut Replies) {
        self.pending.retain(|p| p.deadline_ms > now_ms);
        let expired = |m: &Member| m.awaiting_join.is_none() && m.awaiting_sync.is_none() && m.session_deadline_ms <= now_ms;
        while let Some(i) = self.members.iter().position(expired) {
            tracing::info!(member = %self.members[i].member_id, "kafka group member removed: its session timed out");
            self.remove_member(i, now_ms, out);
        }
        if self.rebalance_deadline_ms <= now_ms {
            match (self.state, self.initial_remaining_ms) {
                (GroupState::PreparingRebalance, Some(remaining_ms)) if self.new_member_added && remaining_ms > 0 => {
                    let delay_ms = remaining_ms.min(initial_delay_ms);
                    self.initial_remaining_ms = Some(remaining_ms - delay_ms);
                    self.new_member_added = false;
                    self.rebalance_deadline_ms = now_ms + delay_ms;
                }
                (GroupState::PreparingRebalance, _) => self.complete_join(now_ms, out),
                (GroupState::CompletingRebalance, _) => {
                    // The leader never synced: the members that did not
                    // sync are removed (the leader among them) and the
                    // rest rebalance. Named first: the first removal
                    // answers (and so clears) the others' waiting syncs.
                    let unsynced: Vec<String> =
                        self.members.iter().filter(|m| m.awaiting_sync.is_none()).map(|m| m.member_id.clone()).collect();
                    for id in unsynced {
                        if let Some(i) = self.members.iter().position(|m| m.member_id == id) {
                            self.remove_member(i, now_ms, out);
                        }
                    }
                }
                _ => {}
            }
        }
        self.try_complete_join(now_ms, out);
    }

    /// Cheap checks of the group's shape, on in release builds.
    pub(super) fn invariants(&self, limits: &GroupLimits) {
        assert!(self.members.len() + self.pending.len() <= limits.members_per_group_max, "group over its member bound");
        assert_eq!(self.leader.is_some(), !self.members.is_empty(), "a group has a leader exactly when it has members");
        if let Some(l) = &self.leader {
            assert!(self.members.iter().any(|m| &m.member_id == l), "the leader is a member");
        }
        assert!(self.state != GroupState::Empty || self.members.is_empty(), "an Empty group has no members");
        for m in &self.members {
            assert!(m.awaiting_join.is_none() || self.state == GroupState::PreparingRebalance, "joins wait only while preparing");
            assert!(m.awaiting_sync.is_none() || self.state == GroupState::CompletingRebalance, "syncs wait only while completing");
        }
        let assigned = matches!(self.state, GroupState::CompletingRebalance | GroupState::Stable);
        assert!(!assigned || self.protocol_name.is_some(), "a generation has a protocol");
    }
}
