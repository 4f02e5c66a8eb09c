//! JoinGroup, SyncGroup, Heartbeat, LeaveGroup, OffsetCommit, OffsetFetch
//! and InitProducerId: the requests served beside the data path, by the
//! group [`Coordinator`] thread (consumer groups, producer ids) and the
//! broker's admin thread (committed offsets, durable like Strom's own).
//!
//! Each becomes a [`Command::Protocol`] job: it runs on the core that
//! decoded it only long enough to hand its work to those threads, which
//! answer with the job's own result ([`Answer::Protocol`]).
use std::sync::Arc;

use bytes::Bytes;
use kafka_protocol::ResponseError as K;
use kafka_protocol::messages::join_group_response::JoinGroupResponseMember;
use kafka_protocol::messages::leave_group_response::MemberResponse;
use kafka_protocol::messages::offset_commit_response::{OffsetCommitResponsePartition, OffsetCommitResponseTopic};
use kafka_protocol::messages::offset_fetch_response::{
    OffsetFetchResponseGroup, OffsetFetchResponsePartition, OffsetFetchResponsePartitions, OffsetFetchResponseTopic,
    OffsetFetchResponseTopics,
};
use kafka_protocol::messages::{
    GroupId, HeartbeatRequest, HeartbeatResponse, InitProducerIdRequest, InitProducerIdResponse, JoinGroupRequest, JoinGroupResponse,
    LeaveGroupRequest, LeaveGroupResponse, OffsetCommitRequest, OffsetCommitResponse, OffsetFetchRequest, OffsetFetchResponse, ProducerId,
    SyncGroupRequest, SyncGroupResponse,
};
use kafka_protocol::protocol::StrBytes;

use super::codec::{Base, KafkaCtx, Shape, frame};
use super::coordinator::Coordinator;
use super::data::topic_name;
use super::group::{GroupError, Heartbeat, JoinGroup, JoinResult, LeaveResult, LeavingMember, SyncGroup, SyncResult};
use super::{KafkaShared, errors};
use crate::broker::admin::{Admin, Job};
use crate::broker::many::Gather;
use crate::broker::offsets::METADATA_BYTES_MAX;
use crate::broker::{Answer, BrokerError, Command, ProtocolJob, Responder};
use crate::error::StromError;

/// What a group request's response is built from.
#[derive(Clone)]
pub(crate) enum GroupShape {
    Join,
    Sync,
    Heartbeat,
    Leave,
    InitProducerId,
    /// Each topic's partitions: their index and an error found at decode
    /// (0: committed, in the order of the job's entries).
    Commit(Vec<(String, Vec<(i32, i16)>)>),
    /// v8 names groups; before, one group (`None`).
    Fetch(Vec<FetchGroup>),
}

/// An OffsetFetch's group (None before v8) and its topics' partitions.
type FetchGroup = (Option<String>, Vec<(String, Vec<i32>)>);
/// The same, borrowed from the request.
type FetchGroupRef<'r> = (Option<&'r GroupId>, Vec<(&'r str, &'r [i32])>);

/// The coordinator's answer to a group request.
enum Outcome {
    Join(JoinResult),
    Sync(SyncResult),
    Heartbeat(GroupError),
    Leave(LeaveResult),
    ProducerId(Result<(i64, i16), GroupError>),
    /// The generation check, then each entry's commit reply.
    Commit(Result<Vec<Result<Answer, BrokerError>>, GroupError>),
}

enum Op {
    Join(JoinGroup),
    Sync(SyncGroup),
    Heartbeat(Heartbeat),
    Leave(String, Vec<LeavingMember>),
    ProducerId(Option<(i64, i16)>),
    Commit { group: String, generation_id: i32, member_id: String, entries: Vec<CommitEntry>, admin: Arc<Admin> },
}

struct CommitEntry {
    topic: String,
    partition: u32,
    offset: u64,
    metadata: String,
}

struct GroupJob {
    coordinator: Coordinator,
    op: Op,
}

fn answer(reply: Responder, outcome: Outcome) {
    reply(Ok(Answer::Protocol(Box::new(outcome))))
}

impl ProtocolJob for GroupJob {
    fn name(&self) -> &'static str {
        match self.op {
            Op::Join(_) => "JoinGroup",
            Op::Sync(_) => "SyncGroup",
            Op::Heartbeat(_) => "Heartbeat",
            Op::Leave(..) => "LeaveGroup",
            Op::ProducerId(_) => "InitProducerId",
            Op::Commit { .. } => "OffsetCommit",
        }
    }

    /// Committing a partition's offset needs `read` on its topic, as
    /// Kafka's ACLs ask; group membership needs only a user.
    fn topics(&self) -> Vec<(&str, crate::auth::Access)> {
        match &self.op {
            Op::Commit { entries, .. } => entries.iter().map(|e| (e.topic.as_str(), crate::auth::Access::Read)).collect(),
            _ => Vec::new(),
        }
    }

    fn run(self: Box<Self>, reply: Responder) {
        let c = self.coordinator;
        match self.op {
            Op::Join(r) => c.join(r, Box::new(move |res| answer(reply, Outcome::Join(res)))),
            Op::Sync(r) => c.sync(r, Box::new(move |res| answer(reply, Outcome::Sync(res)))),
            Op::Heartbeat(r) => c.heartbeat(r, Box::new(move |res| answer(reply, Outcome::Heartbeat(res)))),
            Op::Leave(group, members) => c.leave(group, members, Box::new(move |res| answer(reply, Outcome::Leave(res)))),
            Op::ProducerId(existing) => c.init_producer_id(existing, Box::new(move |res| answer(reply, Outcome::ProducerId(res)))),
            Op::Commit { group, generation_id, member_id, entries, admin } => {
                let g = group.clone();
                c.check_commit(
                    group,
                    generation_id,
                    member_id,
                    Box::new(move |checked| {
                        if checked != GroupError::None {
                            return answer(reply, Outcome::Commit(Err(checked)));
                        }
                        commit(&admin, g, entries, reply)
                    }),
                );
            }
        }
    }
}

/// Hands each entry to the admin thread (one durable rewrite covers the
/// commits that arrive together) and answers once all are in.
fn commit(admin: &Admin, group: String, entries: Vec<CommitEntry>, reply: Responder) {
    if entries.is_empty() {
        return answer(reply, Outcome::Commit(Ok(Vec::new())));
    }
    let done: Responder = Box::new(move |all| {
        let replies = match all {
            Ok(Answer::Many(replies)) => Ok(replies),
            other => Ok(vec![other]),
        };
        answer(reply, Outcome::Commit(replies))
    });
    let gather = Gather::new(entries.len(), None, Vec::new(), done);
    for (i, e) in entries.into_iter().enumerate() {
        let g = gather.clone();
        let job = Job::Commit {
            group: group.clone(),
            topic: e.topic,
            partition: e.partition,
            offset: e.offset,
            metadata: e.metadata,
            reply: Box::new(move |res| g.put(i, res)),
        };
        if let Err(job) = admin.send(job) {
            job.refuse(StromError::ShuttingDown);
        }
    }
}

fn s(v: &StrBytes) -> String {
    v.as_str().to_string()
}

fn opt(v: &Option<StrBytes>) -> Option<String> {
    v.as_ref().map(s)
}

/// Runs a group request as a protocol job.
pub(crate) fn join(base: Base, client_id: &str, r: JoinGroupRequest, shared: &KafkaShared, run: &mut dyn FnMut(KafkaCtx, Command<'_>)) {
    let op = Op::Join(JoinGroup {
        group: r.group_id.to_string(),
        member_id: s(&r.member_id),
        group_instance_id: opt(&r.group_instance_id),
        client_id: client_id.to_string(),
        session_timeout_ms: r.session_timeout_ms,
        rebalance_timeout_ms: if base.version >= 1 { r.rebalance_timeout_ms } else { -1 },
        protocol_type: s(&r.protocol_type),
        protocols: r.protocols.iter().map(|p| (s(&p.name), p.metadata.to_vec())).collect(),
        requires_known_member_id: base.version >= 4,
    });
    job(base, GroupShape::Join, shared, op, run)
}

pub(crate) fn sync(base: Base, r: SyncGroupRequest, shared: &KafkaShared, run: &mut dyn FnMut(KafkaCtx, Command<'_>)) {
    let op = Op::Sync(SyncGroup {
        group: r.group_id.to_string(),
        generation_id: r.generation_id,
        member_id: s(&r.member_id),
        group_instance_id: opt(&r.group_instance_id),
        protocol_type: opt(&r.protocol_type),
        protocol_name: opt(&r.protocol_name),
        assignments: r.assignments.iter().map(|a| (s(&a.member_id), a.assignment.to_vec())).collect(),
    });
    job(base, GroupShape::Sync, shared, op, run)
}

pub(crate) fn heartbeat(base: Base, r: HeartbeatRequest, shared: &KafkaShared, run: &mut dyn FnMut(KafkaCtx, Command<'_>)) {
    let op = Op::Heartbeat(Heartbeat {
        group: r.group_id.to_string(),
        generation_id: r.generation_id,
        member_id: s(&r.member_id),
        group_instance_id: opt(&r.group_instance_id),
    });
    job(base, GroupShape::Heartbeat, shared, op, run)
}

pub(crate) fn leave(base: Base, r: LeaveGroupRequest, shared: &KafkaShared, run: &mut dyn FnMut(KafkaCtx, Command<'_>)) {
    // v3 names several members; before, the one sending.
    let members = if base.version >= 3 {
        r.members.iter().map(|m| LeavingMember { member_id: s(&m.member_id), group_instance_id: opt(&m.group_instance_id) }).collect()
    } else {
        vec![LeavingMember { member_id: s(&r.member_id), group_instance_id: None }]
    };
    job(base, GroupShape::Leave, shared, Op::Leave(r.group_id.to_string(), members), run)
}

pub(crate) fn init_producer_id(base: Base, r: InitProducerIdRequest, shared: &KafkaShared, run: &mut dyn FnMut(KafkaCtx, Command<'_>)) {
    // Transactions are not served: a transactional producer is refused
    // here, once, rather than at every produce.
    if r.transactional_id.is_some() {
        let outcome = Outcome::ProducerId(Err(GroupError::UnknownServerError));
        let ctx = base.ctx(Shape::Group(GroupShape::InitProducerId));
        let job = Refused { outcome: Some(outcome) };
        return run(ctx, Command::Protocol(Box::new(job)));
    }
    let existing = (r.producer_id.0 >= 0).then_some((r.producer_id.0, r.producer_epoch));
    job(base, GroupShape::InitProducerId, shared, Op::ProducerId(existing), run)
}

/// A job answered at once with a set outcome.
struct Refused {
    outcome: Option<Outcome>,
}

impl ProtocolJob for Refused {
    fn name(&self) -> &'static str {
        "refused"
    }

    fn run(mut self: Box<Self>, reply: Responder) {
        match self.outcome.take() {
            Some(o) => answer(reply, o),
            None => reply(Err(BrokerError::Internal("a refusal answered twice"))),
        }
    }
}

fn job(base: Base, shape: GroupShape, shared: &KafkaShared, op: Op, run: &mut dyn FnMut(KafkaCtx, Command<'_>)) {
    run(base.ctx(Shape::Group(shape)), Command::Protocol(Box::new(GroupJob { coordinator: shared.groups.clone(), op })));
}

pub(crate) fn offset_commit(base: Base, r: OffsetCommitRequest, shared: &KafkaShared, run: &mut dyn FnMut(KafkaCtx, Command<'_>)) {
    let mut entries = Vec::new();
    let mut topics = Vec::with_capacity(r.topics.len());
    for t in &r.topics {
        let mut parts = Vec::with_capacity(t.partitions.len());
        for p in &t.partitions {
            let metadata = p.committed_metadata.as_ref().map(s).unwrap_or_default();
            let code = match (u32::try_from(p.partition_index), u64::try_from(p.committed_offset)) {
                _ if metadata.len() > METADATA_BYTES_MAX => K::OffsetMetadataTooLarge.code(),
                (Ok(partition), Ok(offset)) => {
                    entries.push(CommitEntry { topic: t.name.to_string(), partition, offset, metadata });
                    0
                }
                (Err(_), _) => K::UnknownTopicOrPartition.code(),
                (_, Err(_)) => K::InvalidCommitOffsetSize.code(),
            };
            parts.push((p.partition_index, code));
        }
        topics.push((t.name.to_string(), parts));
    }
    let op = Op::Commit {
        group: r.group_id.to_string(),
        generation_id: r.generation_id_or_member_epoch,
        member_id: s(&r.member_id),
        entries,
        admin: shared.admin.clone(),
    };
    job(base, GroupShape::Commit(topics), shared, op, run)
}

pub(crate) fn offset_fetch(base: Base, r: OffsetFetchRequest, run: &mut dyn FnMut(KafkaCtx, Command<'_>)) {
    // Version 8 names groups, each with its topics; before, one group.
    // A null topic list (every committed partition) is answered empty
    // (docs/KAFKA.md): the clients here always name their partitions.
    let groups: Vec<FetchGroupRef<'_>> = if base.version >= 8 {
        r.groups
            .iter()
            .map(|g| (Some(&g.group_id), g.topics.iter().flatten().map(|t| (t.name.as_str(), t.partition_indexes.as_slice())).collect()))
            .collect()
    } else {
        vec![(None, r.topics.iter().flatten().map(|t| (t.name.as_str(), t.partition_indexes.as_slice())).collect())]
    };
    let mut commands = Vec::new();
    let mut shape = Vec::with_capacity(groups.len());
    for (group, topics) in &groups {
        let group_id: &str = group.map_or(r.group_id.as_str(), |g| g.as_str());
        let mut tshape = Vec::with_capacity(topics.len());
        for (topic, partitions) in topics {
            for &p in *partitions {
                // A negative index names no partition: its command fails
                // as an unknown partition would.
                commands.push(Command::FetchOffset { group: group_id, topic, partition: u32::try_from(p).unwrap_or(u32::MAX) });
            }
            tshape.push((topic.to_string(), partitions.to_vec()));
        }
        shape.push((group.map(|g| g.to_string()), tshape));
    }
    run(base.ctx(Shape::Group(GroupShape::Fetch(shape))), Command::Many { commands, release_at_bytes: None });
}

type Answers = Result<Vec<Result<Answer, BrokerError>>, BrokerError>;

/// The response to a group request.
pub(crate) fn response(ctx: &KafkaCtx, shape: &GroupShape, answers: Answers) -> Vec<u8> {
    if let GroupShape::Fetch(groups) = shape {
        return fetch_response(ctx, groups, answers);
    }
    let outcome = match answers {
        Ok(mut all) if all.len() == 1 => match all.pop() {
            Some(Ok(Answer::Protocol(any))) => any.downcast::<Outcome>().map(|o| *o).map_err(|_| K::UnknownServerError.code()),
            Some(Err(e)) => Err(errors::code(&e)),
            _ => Err(K::UnknownServerError.code()),
        },
        Ok(_) => Err(K::UnknownServerError.code()),
        Err(e) => Err(errors::code(&e)),
    };
    match (shape, outcome) {
        (GroupShape::Join, Ok(Outcome::Join(j))) => join_response(ctx, j),
        (GroupShape::Join, Err(code)) => frame(ctx, &JoinGroupResponse::default().with_error_code(code).with_generation_id(-1)),
        (GroupShape::Sync, Ok(Outcome::Sync(r))) => {
            let mut out = SyncGroupResponse::default().with_error_code(r.error.code()).with_assignment(Bytes::from(r.assignment));
            if ctx.version >= 5 {
                out = out
                    .with_protocol_type(r.protocol_type.map(StrBytes::from_string))
                    .with_protocol_name(r.protocol_name.map(StrBytes::from_string));
            }
            frame(ctx, &out)
        }
        (GroupShape::Sync, Err(code)) => frame(ctx, &SyncGroupResponse::default().with_error_code(code)),
        (GroupShape::Heartbeat, Ok(Outcome::Heartbeat(e))) => frame(ctx, &HeartbeatResponse::default().with_error_code(e.code())),
        (GroupShape::Heartbeat, Err(code)) => frame(ctx, &HeartbeatResponse::default().with_error_code(code)),
        (GroupShape::Leave, Ok(Outcome::Leave(l))) => leave_response(ctx, l),
        (GroupShape::Leave, Err(code)) => frame(ctx, &LeaveGroupResponse::default().with_error_code(code)),
        (GroupShape::InitProducerId, Ok(Outcome::ProducerId(res))) => {
            let out = match res {
                Ok((id, epoch)) => InitProducerIdResponse::default().with_producer_id(ProducerId(id)).with_producer_epoch(epoch),
                // The only refusal without a coordinator error: a
                // transactional id (transactions are not served).
                Err(GroupError::UnknownServerError) => InitProducerIdResponse::default()
                    .with_error_code(K::TransactionalIdAuthorizationFailed.code())
                    .with_producer_id(ProducerId(-1))
                    .with_producer_epoch(-1),
                Err(e) => {
                    InitProducerIdResponse::default().with_error_code(e.code()).with_producer_id(ProducerId(-1)).with_producer_epoch(-1)
                }
            };
            frame(ctx, &out)
        }
        (GroupShape::InitProducerId, Err(code)) => {
            frame(ctx, &InitProducerIdResponse::default().with_error_code(code).with_producer_id(ProducerId(-1)).with_producer_epoch(-1))
        }
        (GroupShape::Commit(topics), Ok(Outcome::Commit(res))) => commit_response(ctx, topics, res.map_err(|e| e.code())),
        (GroupShape::Commit(topics), Err(code)) => commit_response(ctx, topics, Err(code)),
        _ => {
            tracing::error!(key = ?ctx.key, "a group response without its outcome");
            Vec::new()
        }
    }
}

fn join_response(ctx: &KafkaCtx, j: JoinResult) -> Vec<u8> {
    let members = j
        .members
        .into_iter()
        .map(|m| {
            let mut out = JoinGroupResponseMember::default()
                .with_member_id(StrBytes::from_string(m.member_id))
                .with_metadata(Bytes::from(m.metadata));
            if ctx.version >= 5 {
                out.group_instance_id = m.group_instance_id.map(StrBytes::from_string);
            }
            out
        })
        .collect();
    let mut out = JoinGroupResponse::default()
        .with_error_code(j.error.code())
        .with_generation_id(j.generation_id)
        .with_protocol_name(Some(StrBytes::from_string(j.protocol_name.unwrap_or_default())))
        .with_leader(StrBytes::from_string(j.leader))
        .with_member_id(StrBytes::from_string(j.member_id))
        .with_members(members);
    if ctx.version >= 7 {
        out.protocol_type = j.protocol_type.map(StrBytes::from_string);
    }
    frame(ctx, &out)
}

fn leave_response(ctx: &KafkaCtx, l: LeaveResult) -> Vec<u8> {
    let mut out = LeaveGroupResponse::default().with_error_code(l.error.code());
    if ctx.version >= 3 {
        out.members = l
            .members
            .into_iter()
            .map(|(member, instance, e)| {
                MemberResponse::default()
                    .with_member_id(StrBytes::from_string(member))
                    .with_group_instance_id(instance.map(StrBytes::from_string))
                    .with_error_code(e.code())
            })
            .collect();
    }
    frame(ctx, &out)
}

fn commit_response(ctx: &KafkaCtx, topics: &[(String, Vec<(i32, i16)>)], res: Result<Vec<Result<Answer, BrokerError>>, i16>) -> Vec<u8> {
    let mut next = 0;
    let out_topics = topics
        .iter()
        .map(|(name, parts)| {
            let partitions = parts
                .iter()
                .map(|&(index, decoded)| {
                    let code = match (&res, decoded) {
                        (_, code) if code != 0 => code,
                        (Err(code), _) => *code,
                        (Ok(replies), _) => {
                            let code = match replies.get(next) {
                                Some(Ok(_)) => 0,
                                Some(Err(e)) => errors::code(e),
                                None => K::UnknownServerError.code(),
                            };
                            next += 1;
                            code
                        }
                    };
                    OffsetCommitResponsePartition::default().with_partition_index(index).with_error_code(code)
                })
                .collect();
            OffsetCommitResponseTopic::default().with_name(topic_name(name)).with_partitions(partitions)
        })
        .collect();
    frame(ctx, &OffsetCommitResponse::default().with_topics(out_topics))
}

fn fetch_response(ctx: &KafkaCtx, groups: &[FetchGroup], answers: Answers) -> Vec<u8> {
    let mut i = 0;
    let committed = |i: usize| -> (i64, Option<StrBytes>, i16) {
        let a = match &answers {
            Ok(all) => all.get(i),
            Err(e) => return (-1, None, errors::code(e)),
        };
        match a {
            Some(Ok(Answer::CommittedOffset(Some(c)))) => (c.offset as i64, Some(StrBytes::from_string(c.metadata.clone())), 0),
            // Nothing committed: offset -1 and an empty metadata, as Kafka.
            Some(Ok(Answer::CommittedOffset(None))) => (-1, Some(StrBytes::from_static_str("")), 0),
            Some(Err(BrokerError::Failed(StromError::UnknownTopic(_) | StromError::UnknownPartition { .. }))) => {
                (-1, Some(StrBytes::from_static_str("")), K::UnknownTopicOrPartition.code())
            }
            Some(Err(e)) => (-1, None, errors::code(e)),
            _ => (-1, None, K::UnknownServerError.code()),
        }
    };
    if ctx.version >= 8 {
        let out_groups = groups
            .iter()
            .map(|(group, topics)| {
                let topics = topics
                    .iter()
                    .map(|(name, parts)| {
                        let partitions = parts
                            .iter()
                            .map(|&p| {
                                let (offset, metadata, code) = committed(i);
                                i += 1;
                                OffsetFetchResponsePartitions::default()
                                    .with_partition_index(p)
                                    .with_committed_offset(offset)
                                    .with_metadata(metadata)
                                    .with_error_code(code)
                            })
                            .collect();
                        OffsetFetchResponseTopics::default().with_name(topic_name(name)).with_partitions(partitions)
                    })
                    .collect();
                OffsetFetchResponseGroup::default()
                    .with_group_id(GroupId(StrBytes::from_string(group.clone().unwrap_or_default())))
                    .with_topics(topics)
            })
            .collect();
        return frame(ctx, &OffsetFetchResponse::default().with_groups(out_groups));
    }
    let topics = groups
        .iter()
        .flat_map(|(_, topics)| topics.iter())
        .map(|(name, parts)| {
            let partitions = parts
                .iter()
                .map(|&p| {
                    let (offset, metadata, code) = committed(i);
                    i += 1;
                    OffsetFetchResponsePartition::default()
                        .with_partition_index(p)
                        .with_committed_offset(offset)
                        .with_metadata(metadata)
                        .with_error_code(code)
                })
                .collect();
            OffsetFetchResponseTopic::default().with_name(topic_name(name)).with_partitions(partitions)
        })
        .collect();
    frame(ctx, &OffsetFetchResponse::default().with_topics(topics))
}
