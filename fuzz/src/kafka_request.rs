//! Seeds of the `kafka_request` target, whose check is the listener's own
//! (`strom::kafka_fuzz::check`, in src/kafka/fuzz.rs: it needs the
//! crate-private codec). Requests are encoded by the `kafka-protocol`
//! crate's client side, as a Kafka client would send them.
use bytes::{Bytes, BytesMut};
use kafka_protocol::messages::create_topics_request::CreatableTopic;
use kafka_protocol::messages::delete_topics_request::DeleteTopicState;
use kafka_protocol::messages::describe_configs_request::DescribeConfigsResource;
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::join_group_request::JoinGroupRequestProtocol;
use kafka_protocol::messages::leave_group_request::MemberIdentity;
use kafka_protocol::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};
use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
use kafka_protocol::messages::offset_commit_request::{OffsetCommitRequestPartition, OffsetCommitRequestTopic};
use kafka_protocol::messages::offset_fetch_request::{OffsetFetchRequestGroup, OffsetFetchRequestTopic, OffsetFetchRequestTopics};
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::sync_group_request::SyncGroupRequestAssignment;
use kafka_protocol::messages::*;
use kafka_protocol::protocol::{Encodable, StrBytes};
use strom::kafka_fuzz::{self, CORRELATION_ID, RAW_BIT};
use strom::wire::batch::BatchBuilder;

/// The versions seeded of each served api, within what the listener serves.
const SEEDED: &[(ApiKey, &[i16])] = &[
    (ApiKey::Produce, &[3, 7, 9]),
    (ApiKey::Fetch, &[4, 11, 12]),
    (ApiKey::ListOffsets, &[1, 5, 7]),
    (ApiKey::Metadata, &[0, 8, 9]),
    (ApiKey::OffsetCommit, &[2, 7, 8]),
    (ApiKey::OffsetFetch, &[1, 7, 8]),
    (ApiKey::FindCoordinator, &[0, 3]),
    (ApiKey::JoinGroup, &[0, 5, 7]),
    (ApiKey::Heartbeat, &[0, 4]),
    (ApiKey::LeaveGroup, &[0, 3, 4]),
    (ApiKey::SyncGroup, &[0, 4, 5]),
    (ApiKey::ApiVersions, &[0, 3]),
    (ApiKey::CreateTopics, &[2, 5, 7]),
    (ApiKey::DeleteTopics, &[1, 6]),
    (ApiKey::InitProducerId, &[0, 4]),
    (ApiKey::DescribeConfigs, &[1, 4]),
    (ApiKey::SaslHandshake, &[0, 1]),
];

fn s(v: &'static str) -> StrBytes {
    StrBytes::from_static_str(v)
}

fn topic() -> TopicName {
    TopicName(s("orders"))
}

/// The header after its fixed 8 bytes, then the body: what a chosen input
/// carries after its selector and version bytes.
pub fn header_rest_and_body(key: ApiKey, version: i16, body: &impl Encodable) -> Vec<u8> {
    let mut buf = BytesMut::new();
    let header = RequestHeader::default()
        .with_request_api_key(key as i16)
        .with_request_api_version(version)
        .with_correlation_id(CORRELATION_ID)
        .with_client_id(Some(s("fuzz-seed")));
    header.encode(&mut buf, key.request_header_version(version)).expect("a header encodes");
    body.encode(&mut buf, version).unwrap_or_else(|e| panic!("{key:?} v{version}: {e}"));
    buf[8..].to_vec()
}

/// A record batch of two records, as a producer sends it.
pub fn batch() -> Bytes {
    let mut b = BatchBuilder::new(1_700_000_000_000);
    b.push(1_700_000_000_000, Some(b"k"), Some(b"hello"), &[(b"h", Some(b"x"))]);
    b.push(1_700_000_000_001, None, Some(b"world"), &[]);
    Bytes::from(b.finish())
}

/// A request of `key` at `version` as a client sends it (header rest and body).
pub fn request(key: ApiKey, v: i16) -> Vec<u8> {
    match key {
        ApiKey::Produce => header_rest_and_body(key, v, &produce()),
        ApiKey::Fetch => header_rest_and_body(key, v, &fetch()),
        ApiKey::ListOffsets => {
            let p = ListOffsetsPartition::default().with_partition_index(0).with_timestamp(-2);
            let t = ListOffsetsTopic::default().with_name(topic()).with_partitions(vec![p]);
            header_rest_and_body(key, v, &ListOffsetsRequest::default().with_replica_id(BrokerId(-1)).with_topics(vec![t]))
        }
        ApiKey::Metadata => {
            let t = MetadataRequestTopic::default().with_name(Some(topic()));
            header_rest_and_body(key, v, &MetadataRequest::default().with_topics(Some(vec![t])))
        }
        ApiKey::OffsetCommit => header_rest_and_body(key, v, &offset_commit()),
        ApiKey::OffsetFetch => header_rest_and_body(key, v, &offset_fetch(v)),
        ApiKey::FindCoordinator => header_rest_and_body(key, v, &FindCoordinatorRequest::default().with_key(s("billing"))),
        ApiKey::JoinGroup => header_rest_and_body(key, v, &join_group()),
        ApiKey::Heartbeat => {
            let r = HeartbeatRequest::default().with_group_id(GroupId(s("billing"))).with_generation_id(1).with_member_id(s("m-1"));
            header_rest_and_body(key, v, &r)
        }
        ApiKey::LeaveGroup => {
            let r = LeaveGroupRequest::default().with_group_id(GroupId(s("billing")));
            let r =
                if v < 3 { r.with_member_id(s("m-1")) } else { r.with_members(vec![MemberIdentity::default().with_member_id(s("m-1"))]) };
            header_rest_and_body(key, v, &r)
        }
        ApiKey::SyncGroup => {
            let a = SyncGroupRequestAssignment::default().with_member_id(s("m-1")).with_assignment(Bytes::from_static(b"\0\x01"));
            let r = SyncGroupRequest::default().with_group_id(GroupId(s("billing"))).with_generation_id(1).with_member_id(s("m-1"));
            header_rest_and_body(key, v, &r.with_assignments(vec![a]))
        }
        ApiKey::ApiVersions => {
            let r = ApiVersionsRequest::default();
            let r = if v >= 3 { r.with_client_software_name(s("fuzz")).with_client_software_version(s("1.0")) } else { r };
            header_rest_and_body(key, v, &r)
        }
        ApiKey::CreateTopics => {
            let t = CreatableTopic::default().with_name(topic()).with_num_partitions(3).with_replication_factor(1);
            header_rest_and_body(key, v, &CreateTopicsRequest::default().with_topics(vec![t]).with_timeout_ms(5_000))
        }
        ApiKey::DeleteTopics => {
            let r = DeleteTopicsRequest::default().with_timeout_ms(5_000);
            let r = if v < 6 {
                r.with_topic_names(vec![topic()])
            } else {
                r.with_topics(vec![DeleteTopicState::default().with_name(Some(topic()))])
            };
            header_rest_and_body(key, v, &r)
        }
        ApiKey::InitProducerId => header_rest_and_body(key, v, &InitProducerIdRequest::default().with_transaction_timeout_ms(60_000)),
        ApiKey::DescribeConfigs => {
            let r = DescribeConfigsResource::default().with_resource_type(2).with_resource_name(s("orders"));
            header_rest_and_body(key, v, &DescribeConfigsRequest::default().with_resources(vec![r]))
        }
        ApiKey::SaslHandshake => header_rest_and_body(key, v, &SaslHandshakeRequest::default().with_mechanism(s("PLAIN"))),
        ApiKey::SaslAuthenticate => {
            let token = Bytes::from_static(b"\0ops\0ops-token-0123456789");
            header_rest_and_body(key, v, &SaslAuthenticateRequest::default().with_auth_bytes(token))
        }
        other => panic!("{other:?} is not served"),
    }
}

fn produce() -> ProduceRequest {
    let p = PartitionProduceData::default().with_index(0).with_records(Some(batch()));
    let t = TopicProduceData::default().with_name(topic()).with_partition_data(vec![p]);
    ProduceRequest::default().with_acks(-1).with_timeout_ms(5_000).with_topic_data(vec![t])
}

fn fetch() -> FetchRequest {
    let p = FetchPartition::default().with_partition(0).with_fetch_offset(5).with_partition_max_bytes(1 << 20);
    let t = FetchTopic::default().with_topic(topic()).with_partitions(vec![p]);
    FetchRequest::default()
        .with_replica_id(BrokerId(-1))
        .with_max_wait_ms(500)
        .with_min_bytes(1)
        .with_max_bytes(1 << 20)
        .with_topics(vec![t])
}

fn offset_commit() -> OffsetCommitRequest {
    let p = OffsetCommitRequestPartition::default().with_partition_index(0).with_committed_offset(42).with_committed_metadata(Some(s("")));
    let t = OffsetCommitRequestTopic::default().with_name(topic()).with_partitions(vec![p]);
    OffsetCommitRequest::default().with_group_id(GroupId(s("billing"))).with_generation_id_or_member_epoch(-1).with_topics(vec![t])
}

fn offset_fetch(v: i16) -> OffsetFetchRequest {
    if v >= 8 {
        let t = OffsetFetchRequestTopics::default().with_name(topic()).with_partition_indexes(vec![0, 1]);
        let g = OffsetFetchRequestGroup::default().with_group_id(GroupId(s("billing"))).with_topics(Some(vec![t]));
        OffsetFetchRequest::default().with_groups(vec![g])
    } else {
        let t = OffsetFetchRequestTopic::default().with_name(topic()).with_partition_indexes(vec![0, 1]);
        OffsetFetchRequest::default().with_group_id(GroupId(s("billing"))).with_topics(Some(vec![t]))
    }
}

fn join_group() -> JoinGroupRequest {
    let p = JoinGroupRequestProtocol::default().with_name(s("range")).with_metadata(Bytes::from_static(b"\0\x01\0\0\0\x01\0\x06orders"));
    JoinGroupRequest::default()
        .with_group_id(GroupId(s("billing")))
        .with_session_timeout_ms(10_000)
        .with_rebalance_timeout_ms(30_000)
        .with_protocol_type(s("consumer"))
        .with_protocols(vec![p])
}

/// Inputs whose only fault is an array count of `count`, in a chosen
/// Metadata v4 (an i32) and v9 (a compact varint of count + 1), for the
/// allocation test of tests/fuzz_replay.rs.
pub fn lying_counts(count: u32) -> Vec<(&'static str, Vec<u8>)> {
    let mut v4 = request(ApiKey::Metadata, 4)[..11].to_vec();
    v4.extend_from_slice(&count.to_be_bytes());
    v4.push(0);
    let mut v9 = request(ApiKey::Metadata, 9)[..12].to_vec();
    let mut n = u64::from(count) + 1;
    while n >= 0x80 {
        v9.push(n as u8 | 0x80);
        n >>= 7;
    }
    v9.extend_from_slice(&[n as u8, 0]);
    vec![
        ("kafka_request", kafka_fuzz::chosen_input(ApiKey::Metadata, 4, &v4)),
        ("kafka_request", kafka_fuzz::chosen_input(ApiKey::Metadata, 9, &v9)),
    ]
}

/// Every seed: each served api at a few versions (valid), then inputs that
/// must be refused, each for the reason its name says.
pub fn seeds() -> Vec<(&'static str, Vec<u8>)> {
    let mut out = Vec::new();
    for &(key, versions) in SEEDED {
        for &v in versions {
            let name = format!("valid-{}-v{v}", format!("{key:?}").to_lowercase());
            out.push((&*name.leak(), kafka_fuzz::chosen_input(key, v, &request(key, v))));
        }
    }
    let raw = |frame: Vec<u8>| [&[RAW_BIT][..], &frame].concat();
    let metadata = request(ApiKey::Metadata, 4);
    // Metadata v4 after the fixed header: client id (2 + 9 bytes), the
    // topics' count (4), the first topic's name length (2).
    // 2^31 - 1 topics in one byte (a negative count is refused as such,
    // before any lie about sizes).
    let mut lying_count = metadata.clone();
    lying_count[11..15].copy_from_slice(&0x7FFF_FFFFu32.to_be_bytes());
    lying_count.truncate(15 + 1);
    // Metadata v9 (flexible): client id (2 + 9), tagged fields (1), then
    // the topics' compact count, a varint of count + 1: 2^31 - 1 again.
    let mut lying_compact = request(ApiKey::Metadata, 9)[..12].to_vec();
    lying_compact.extend_from_slice(&[0x80, 0x80, 0x80, 0x80, 0x08, 0]);
    let mut huge_string = metadata.clone();
    huge_string[15..17].copy_from_slice(&0x7FFFu16.to_be_bytes());
    let produce = request(ApiKey::Produce, 9);
    out.extend([
        ("lying-array-count", kafka_fuzz::chosen_input(ApiKey::Metadata, 4, &lying_count)),
        ("lying-compact-array-count", kafka_fuzz::chosen_input(ApiKey::Metadata, 9, &lying_compact)),
        ("huge-string-length", kafka_fuzz::chosen_input(ApiKey::Metadata, 4, &huge_string)),
        ("truncated-produce", kafka_fuzz::chosen_input(ApiKey::Produce, 9, &produce[..produce.len() - 7])),
        // Well formed, but a fresh connection has had no handshake: closed.
        (
            "sasl-authenticate-without-handshake",
            kafka_fuzz::chosen_input(ApiKey::SaslAuthenticate, 2, &request(ApiKey::SaslAuthenticate, 2)),
        ),
        ("old-produce-v2", kafka_fuzz::chosen_input(ApiKey::Produce, 2, &request(ApiKey::Produce, 3)[..])),
        ("valid-raw-metadata", raw(kafka_fuzz::frame(ApiKey::Metadata as i16, 4, 7, &metadata))),
        ("raw-unknown-api-key", raw(kafka_fuzz::frame(1000, 0, 7, &metadata))),
        ("raw-unsupported-version", raw(kafka_fuzz::frame(ApiKey::Fetch as i16, 3, 7, &request(ApiKey::Fetch, 4)))),
        ("raw-api-versions-v9", raw(kafka_fuzz::frame(ApiKey::ApiVersions as i16, 9, 7, &request(ApiKey::ApiVersions, 3)))),
        ("raw-length-over-limit", raw([&0x7FFF_FFF0u32.to_be_bytes()[..], &metadata].concat())),
        ("raw-length-negative", raw([&(-1i32).to_be_bytes()[..], &metadata].concat())),
        ("raw-length-short", raw([&4u32.to_be_bytes()[..], &[0, 3, 0, 4]].concat())),
        ("raw-native-metadata", raw([&12u32.to_be_bytes()[..], &[0, 4, 0, 1], &[0; 8]].concat())),
    ]);
    out
}
