//! ApiVersions, Metadata, FindCoordinator, CreateTopics, DeleteTopics and
//! DescribeConfigs: the cluster as a Kafka client sees it (one broker,
//! node 0, leading every partition and coordinating every group) and its
//! topics.
use kafka_protocol::ResponseError as K;
use kafka_protocol::messages::api_versions_response::ApiVersion;
use kafka_protocol::messages::create_topics_response::CreatableTopicResult;
use kafka_protocol::messages::delete_topics_response::DeletableTopicResult;
use kafka_protocol::messages::describe_configs_response::{DescribeConfigsResourceResult, DescribeConfigsResult};
use kafka_protocol::messages::metadata_response::{MetadataResponseBroker, MetadataResponsePartition, MetadataResponseTopic};
use kafka_protocol::messages::{
    ApiVersionsResponse, BrokerId, CreateTopicsRequest, CreateTopicsResponse, DeleteTopicsRequest, DeleteTopicsResponse,
    DescribeConfigsRequest, DescribeConfigsResponse, FindCoordinatorRequest, FindCoordinatorResponse, MetadataRequest, MetadataResponse,
};
use kafka_protocol::protocol::StrBytes;

use super::codec::{Base, KafkaCtx, Shape, Slot, frame, nothing, slot_answer};
use super::data::topic_name;
use super::errors;
use super::{KafkaShared, NODE_ID, apis};
use crate::broker::{Answer, BrokerError, Command};
use crate::catalog::TopicRetention;

type Answers = Result<Vec<Result<Answer, BrokerError>>, BrokerError>;

/// Metadata: every topic (one command), or each named one (a command each,
/// so that an unknown name is that topic's error, not the request's).
#[derive(Clone)]
pub(crate) struct MetadataShape {
    all: bool,
    names: Vec<String>,
}

/// CreateTopics and DeleteTopics: each topic's name and slot.
#[derive(Clone)]
pub(crate) struct TopicsShape {
    topics: Vec<(String, Slot)>,
}

/// DescribeConfigs: each resource (type, name) and its slot (topics: a
/// DescribeTopic command; the broker: answered here).
#[derive(Clone)]
pub(crate) struct ConfigsShape {
    resources: Vec<(i8, String, Slot)>,
}

/// Kafka's config resource types.
const RESOURCE_TOPIC: i8 = 2;
const RESOURCE_BROKER: i8 = 4;

pub(crate) fn api_versions(ctx: &KafkaCtx) -> Vec<u8> {
    let Shape::ApiVersions { error } = ctx.shape else { unreachable!("an ApiVersions context") };
    let api_keys = apis::SERVED
        .iter()
        .map(|s| ApiVersion::default().with_api_key(s.key as i16).with_min_version(s.min).with_max_version(s.max))
        .collect();
    frame(ctx, &ApiVersionsResponse::default().with_error_code(error).with_api_keys(api_keys))
}

pub(crate) fn find_coordinator(base: Base, r: FindCoordinatorRequest, run: &mut dyn FnMut(KafkaCtx, Command<'_>)) {
    run(base.ctx(Shape::FindCoordinator { key: r.key.to_string() }), nothing());
}

/// Every group's coordinator is this broker.
pub(crate) fn coordinator(ctx: &KafkaCtx, _key: &str, shared: &KafkaShared) -> Vec<u8> {
    let r = FindCoordinatorResponse::default()
        .with_node_id(BrokerId(NODE_ID))
        .with_host(StrBytes::from_string(shared.advertised_host.clone()))
        .with_port(shared.advertised_port);
    frame(ctx, &r)
}

pub(crate) fn metadata(base: Base, r: MetadataRequest, run: &mut dyn FnMut(KafkaCtx, Command<'_>)) {
    // Version 0 asks for all topics with an empty list; later versions
    // with null (an empty list asks for none).
    let all = match &r.topics {
        None => true,
        Some(t) => t.is_empty() && base.version == 0,
    };
    let named: Vec<&str> = r.topics.iter().flatten().filter_map(|t| t.name.as_ref().map(|n| n.as_str())).collect();
    let names = named.iter().map(|n| n.to_string()).collect();
    let commands = if all {
        vec![Command::Metadata { topics: Vec::new() }]
    } else {
        named.into_iter().map(|n| Command::Metadata { topics: vec![n] }).collect()
    };
    run(base.ctx(Shape::Metadata(MetadataShape { all, names })), Command::Many { commands, release_at_bytes: None });
}

pub(crate) fn metadata_response(ctx: &KafkaCtx, s: &MetadataShape, answers: Answers, shared: &KafkaShared) -> Vec<u8> {
    let mut topics = Vec::new();
    let placed = |t: &crate::broker::TopicPlacement| {
        let partitions = (0..t.partition_cores.len() as i32)
            .map(|i| {
                MetadataResponsePartition::default()
                    .with_partition_index(i)
                    .with_leader_id(BrokerId(NODE_ID))
                    .with_replica_nodes(vec![BrokerId(NODE_ID)])
                    .with_isr_nodes(vec![BrokerId(NODE_ID)])
            })
            .collect();
        MetadataResponseTopic::default().with_name(Some(topic_name(&t.name))).with_partitions(partitions)
    };
    if s.all {
        // On the request's own failure (a stopping server): no topics.
        if let Ok(Answer::Metadata { topics: all, .. }) = slot_answer(Slot::Cmd(0), &answers) {
            topics.extend(all.iter().map(placed));
        }
    } else {
        for (i, name) in s.names.iter().enumerate() {
            match slot_answer(Slot::Cmd(i), &answers) {
                Ok(Answer::Metadata { topics: found, .. }) if found.len() == 1 => topics.push(placed(&found[0])),
                Ok(_) => topics.push(unknown_topic(name, K::UnknownServerError.code())),
                Err(code) => topics.push(unknown_topic(name, code)),
            }
        }
    }
    let broker = MetadataResponseBroker::default()
        .with_node_id(BrokerId(NODE_ID))
        .with_host(StrBytes::from_string(shared.advertised_host.clone()))
        .with_port(shared.advertised_port);
    let r = MetadataResponse::default()
        .with_brokers(vec![broker])
        .with_cluster_id(Some(StrBytes::from_static_str("strom")))
        .with_controller_id(BrokerId(NODE_ID))
        .with_topics(topics);
    frame(ctx, &r)
}

fn unknown_topic(name: &str, code: i16) -> MetadataResponseTopic {
    MetadataResponseTopic::default().with_name(Some(topic_name(name))).with_error_code(code)
}

/// A topic config Strom knows, as a retention setting (None: not a
/// retention key; Err: a value that does not parse).
fn retention_config(key: &str, value: Option<&str>, into: &mut TopicRetention) -> Result<(), String> {
    let parse = |v: Option<&str>| -> Result<Option<u64>, String> {
        match v.map(str::trim) {
            None | Some("-1") => Ok(None),
            Some(v) => v
                .parse::<u64>()
                .map(Some)
                .map_err(|_| format!("{key}={v} is not a number of {}", if key.ends_with("ms") { "ms" } else { "bytes" })),
        }
    };
    match key {
        "retention.ms" => into.ms = parse(value)?,
        "retention.bytes" => into.bytes = parse(value)?,
        // Accepted as the only policy Strom has.
        "cleanup.policy" if value == Some("delete") => {}
        _ => return Err(format!("topic config {key} is not supported (docs/KAFKA.md)")),
    }
    Ok(())
}

pub(crate) fn create_topics(base: Base, r: CreateTopicsRequest, run: &mut dyn FnMut(KafkaCtx, Command<'_>)) {
    let mut commands = Vec::new();
    let mut topics = Vec::with_capacity(r.topics.len());
    for t in &r.topics {
        let mut retention = TopicRetention::default();
        let configs: Result<(), String> =
            t.configs.iter().try_for_each(|c| retention_config(c.name.as_str(), c.value.as_ref().map(|v| v.as_str()), &mut retention));
        let partitions = if t.num_partitions == -1 { Some(1) } else { u32::try_from(t.num_partitions).ok().filter(|&n| n > 0) };
        let slot = if !matches!(t.replication_factor, -1 | 1) {
            Slot::Err(K::InvalidReplicationFactor.code())
        } else if !t.assignments.is_empty() {
            Slot::Err(K::InvalidReplicaAssignment.code())
        } else if configs.is_err() {
            Slot::Err(K::InvalidConfig.code())
        } else if let Some(partitions) = partitions.filter(|_| !r.validate_only) {
            commands.push(Command::CreateTopic { topic: t.name.as_str(), partitions, retention, indices: Vec::new() });
            Slot::Cmd(commands.len() - 1)
        } else if partitions.is_none() {
            Slot::Err(K::InvalidPartitions.code())
        } else {
            // validate_only: checked, not created.
            Slot::Err(0)
        };
        topics.push((t.name.to_string(), slot));
    }
    run(base.ctx(Shape::CreateTopics(TopicsShape { topics })), Command::Many { commands, release_at_bytes: None });
}

pub(crate) fn create_topics_response(ctx: &KafkaCtx, s: &TopicsShape, answers: Answers) -> Vec<u8> {
    let topics = s
        .topics
        .iter()
        .map(|(name, slot)| {
            let mut t = CreatableTopicResult::default().with_name(topic_name(name));
            if let Err(code) = slot_answer(*slot, &answers) {
                t.error_code = code;
                if ctx.version >= 1 {
                    t.error_message = error_message(*slot, &answers);
                }
            }
            t
        })
        .collect();
    frame(ctx, &CreateTopicsResponse::default().with_topics(topics))
}

pub(crate) fn delete_topics(base: Base, r: DeleteTopicsRequest, run: &mut dyn FnMut(KafkaCtx, Command<'_>)) {
    // Version 6 names topics in `topics` (by name; ids are not served),
    // before it in `topic_names`.
    let names: Vec<Option<&str>> = if base.version >= 6 {
        r.topics.iter().map(|t| t.name.as_ref().map(|n| n.as_str())).collect()
    } else {
        r.topic_names.iter().map(|n| Some(n.as_str())).collect()
    };
    let mut commands = Vec::new();
    let mut topics = Vec::with_capacity(names.len());
    for name in names {
        let slot = match name {
            Some(topic) => {
                commands.push(Command::DeleteTopic { topic });
                Slot::Cmd(commands.len() - 1)
            }
            None => Slot::Err(K::UnknownTopicId.code()),
        };
        topics.push((name.unwrap_or("").to_string(), slot));
    }
    run(base.ctx(Shape::DeleteTopics(TopicsShape { topics })), Command::Many { commands, release_at_bytes: None });
}

pub(crate) fn delete_topics_response(ctx: &KafkaCtx, s: &TopicsShape, answers: Answers) -> Vec<u8> {
    let responses = s
        .topics
        .iter()
        .map(|(name, slot)| {
            let mut t = DeletableTopicResult::default().with_name(Some(topic_name(name)));
            if let Err(code) = slot_answer(*slot, &answers) {
                t.error_code = code;
                if ctx.version >= 5 {
                    t.error_message = error_message(*slot, &answers);
                }
            }
            t
        })
        .collect();
    frame(ctx, &DeleteTopicsResponse::default().with_responses(responses))
}

pub(crate) fn describe_configs(base: Base, r: DescribeConfigsRequest, run: &mut dyn FnMut(KafkaCtx, Command<'_>)) {
    let mut commands = Vec::new();
    let mut resources = Vec::with_capacity(r.resources.len());
    for res in &r.resources {
        let slot = match res.resource_type {
            RESOURCE_TOPIC => {
                commands.push(Command::DescribeTopic { topic: res.resource_name.as_str() });
                Slot::Cmd(commands.len() - 1)
            }
            RESOURCE_BROKER => Slot::Err(0),
            _ => Slot::Err(K::InvalidRequest.code()),
        };
        resources.push((res.resource_type, res.resource_name.to_string(), slot));
    }
    run(base.ctx(Shape::DescribeConfigs(ConfigsShape { resources })), Command::Many { commands, release_at_bytes: None });
}

pub(crate) fn describe_configs_response(ctx: &KafkaCtx, s: &ConfigsShape, answers: Answers, batch_bytes_max: usize) -> Vec<u8> {
    // Kafka's ConfigSource: 1 a topic's own setting, 5 the broker's
    // default. The field's default (-1) is not a source kafka-python knows.
    const SOURCE_TOPIC: i8 = 1;
    const SOURCE_DEFAULT: i8 = 5;
    let config = |name: &'static str, value: String, own: bool| {
        DescribeConfigsResourceResult::default()
            .with_name(StrBytes::from_static_str(name))
            .with_value(Some(StrBytes::from_string(value)))
            .with_read_only(false)
            .with_config_source(if own { SOURCE_TOPIC } else { SOURCE_DEFAULT })
    };
    let results = s
        .resources
        .iter()
        .map(|(kind, name, slot)| {
            let mut r = DescribeConfigsResult::default().with_resource_type(*kind).with_resource_name(StrBytes::from_string(name.clone()));
            match slot_answer(*slot, &answers) {
                Ok(Answer::TopicDescribed(d)) => {
                    let ms = d.effective.age_ms.map_or(-1, |v| v as i64);
                    let bytes = d.effective.bytes.map_or(-1, |v| v as i64);
                    r.configs = vec![
                        config("retention.ms", ms.to_string(), d.retention.ms.is_some()),
                        config("retention.bytes", bytes.to_string(), d.retention.bytes.is_some()),
                        config("cleanup.policy", "delete".to_string(), false),
                        config("message.timestamp.type", "CreateTime".to_string(), false),
                        config("max.message.bytes", batch_bytes_max.to_string(), false),
                    ];
                }
                Ok(_) => r.error_code = K::UnknownServerError.code(),
                // The broker resource: none of Kafka's broker configs apply.
                Err(0) => {}
                Err(code) => {
                    r.error_code = code;
                    r.error_message = error_message(*slot, &answers);
                }
            }
            r
        })
        .collect();
    frame(ctx, &DescribeConfigsResponse::default().with_results(results))
}

fn error_message(slot: Slot, answers: &Answers) -> Option<StrBytes> {
    let e = match (slot, answers) {
        (Slot::Cmd(_), Err(e)) => e,
        (Slot::Cmd(i), Ok(all)) => all.get(i)?.as_ref().err()?,
        (Slot::Err(_), _) => return None,
    };
    Some(StrBytes::from_string(errors::message(e)))
}
