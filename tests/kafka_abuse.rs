//! The Kafka listener under bad input (issue 15, item 4): a real `strom
//! serve --kafka-listen`, spoken to over plain TCP with requests built by
//! the `kafka-protocol` crate's client side or by hand. A request over the
//! size limit, a lying count, garbage, an unknown api key, a version not
//! served and a native-protocol client each get a clear refusal (the
//! protocol's own error where it has one, else a close with a log line
//! saying why), the native port refuses Kafka bytes with a native error,
//! and a well-behaved Kafka client on its own connection keeps being
//! served throughout, its records read back byte for byte. Then Produce
//! (acks -1, 1 and 0), Fetch inside a batch and ListOffsets, field by field.
mod harness;

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Instant;

use bytes::{Bytes, BytesMut};
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};
use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::{
    ApiKey, ApiVersionsRequest, ApiVersionsResponse, BrokerId, FetchRequest, FetchResponse, ListOffsetsRequest, ListOffsetsResponse,
    MetadataRequest, MetadataResponse, ProduceRequest, ProduceResponse, RequestHeader, ResponseHeader, TopicName,
};
use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};
use strom::proto::{self, ErrorCode, Response};

use harness::serve::{HANG, Serve};
use harness::{read_frame, test_dir};

const TOPIC: &str = "orders";
/// The server's request limit (`--frame-bytes-max` left at its default).
const FRAME_BYTES_MAX: usize = proto::FRAME_BYTES_MAX_DEFAULT;
/// What the server logs as it closes a connection: "closing a Kafka
/// connection: WHY" (framing lost, from the codec) or "closing a
/// connection: WHY" (a frame refused, from the connection's task).
const CLOSING: &str = "closing a ";
/// Kafka's UNSUPPORTED_VERSION.
const UNSUPPORTED_VERSION: i16 = 35;

/// A server with a Kafka listener whose info lines (the reasons for
/// closes) reach its stderr, and a one-partition topic.
fn start(name: &str) -> (Serve, SocketAddr) {
    let serve = Serve::on(&test_dir(name)).kafka().env("RUST_LOG", "info").start();
    serve.client().create_topic(TOPIC, 1).unwrap();
    let kafka = serve.kafka_addr();
    (serve, kafka)
}

fn connect(addr: SocketAddr) -> TcpStream {
    let s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(HANG)).unwrap();
    s.set_write_timeout(Some(HANG)).unwrap();
    s
}

/// A Kafka connection that encodes requests and decodes responses with
/// the crate, checking each response's correlation id.
struct KafkaConn {
    stream: TcpStream,
    correlation_id: i32,
}

impl KafkaConn {
    fn open(addr: SocketAddr) -> KafkaConn {
        KafkaConn { stream: connect(addr), correlation_id: 0 }
    }

    /// Sends one request and returns its correlation id.
    fn send(&mut self, key: ApiKey, version: i16, body: &impl Encodable) -> i32 {
        self.correlation_id += 1;
        self.stream.write_all(&request_frame(key, version, self.correlation_id, body)).unwrap();
        self.correlation_id
    }

    /// The next response, as `key` at `version` answers, for `correlation_id`.
    fn receive<R: Decodable>(&mut self, key: ApiKey, version: i16, correlation_id: i32) -> R {
        let frame = read_frame(&mut self.stream).unwrap_or_else(|| panic!("no {key:?} v{version} response"));
        let mut buf = Bytes::from(frame[4..].to_vec());
        // ApiVersions answers with header version 0 whatever its own (KIP-511).
        let header_version = if key == ApiKey::ApiVersions { 0 } else { key.response_header_version(version) };
        let header = ResponseHeader::decode(&mut buf, header_version).unwrap();
        assert_eq!(header.correlation_id, correlation_id, "responses come in request order");
        let response = R::decode(&mut buf, version).unwrap_or_else(|e| panic!("{key:?} v{version} response: {e}"));
        assert!(buf.is_empty(), "{} bytes after a {key:?} response", buf.len());
        response
    }

    fn call<R: Decodable>(&mut self, key: ApiKey, version: i16, body: &impl Encodable) -> R {
        let id = self.send(key, version, body);
        self.receive(key, version, id)
    }
}

fn request_frame(key: ApiKey, version: i16, correlation_id: i32, body: &impl Encodable) -> Vec<u8> {
    let mut buf = BytesMut::new();
    buf.extend_from_slice(&[0; 4]);
    let header = RequestHeader::default()
        .with_request_api_key(key as i16)
        .with_request_api_version(version)
        .with_correlation_id(correlation_id)
        .with_client_id(Some(StrBytes::from_static_str("kafka-abuse")));
    header.encode(&mut buf, key.request_header_version(version)).unwrap();
    body.encode(&mut buf, version).unwrap();
    let len = (buf.len() - 4) as u32;
    buf[..4].copy_from_slice(&len.to_be_bytes());
    buf.to_vec()
}

/// `frame` claiming to be of `version`: how to send a version the crate
/// does not encode (the server refuses it before reading the body).
fn relabelled(mut frame: Vec<u8>, version: i16) -> Vec<u8> {
    frame[6..8].copy_from_slice(&version.to_be_bytes());
    frame
}

/// True when the server closed the connection (EOF or reset) rather than
/// answering; a read that times out (after [`HANG`]) is no close.
fn closed(s: &mut TcpStream) -> bool {
    let mut b = [0u8; 1];
    match s.read(&mut b) {
        Ok(n) => n == 0,
        Err(e) => !matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut),
    }
}

fn topic_name() -> TopicName {
    TopicName(StrBytes::from_static_str(TOPIC))
}

fn produce(acks: i16, batch: &[u8]) -> ProduceRequest {
    let p = PartitionProduceData::default().with_index(0).with_records(Some(Bytes::copy_from_slice(batch)));
    let t = TopicProduceData::default().with_name(topic_name()).with_partition_data(vec![p]);
    ProduceRequest::default().with_acks(acks).with_timeout_ms(30_000).with_topic_data(vec![t])
}

fn fetch(offset: i64) -> FetchRequest {
    let p = FetchPartition::default().with_partition(0).with_fetch_offset(offset).with_partition_max_bytes(1 << 20);
    let t = FetchTopic::default().with_topic(topic_name()).with_partitions(vec![p]);
    FetchRequest::default().with_replica_id(BrokerId(-1)).with_max_wait_ms(0).with_min_bytes(0).with_max_bytes(1 << 20).with_topics(vec![t])
}

fn list_offsets(timestamp: i64) -> ListOffsetsRequest {
    let p = ListOffsetsPartition::default().with_partition_index(0).with_timestamp(timestamp);
    let t = ListOffsetsTopic::default().with_name(topic_name()).with_partitions(vec![p]);
    ListOffsetsRequest::default().with_replica_id(BrokerId(-1)).with_topics(vec![t])
}

fn metadata_v4() -> Vec<u8> {
    let t = MetadataRequestTopic::default().with_name(Some(topic_name()));
    request_frame(ApiKey::Metadata, 4, 9, &MetadataRequest::default().with_topics(Some(vec![t])))
}

/// A produce at version 9 of `batch`: its base offset, after checking the
/// response names the topic and partition and no error.
fn produce_ok(conn: &mut KafkaConn, acks: i16, batch: &[u8]) -> i64 {
    let r: ProduceResponse = conn.call(ApiKey::Produce, 9, &produce(acks, batch));
    assert_eq!(r.responses.len(), 1);
    assert_eq!(r.responses[0].name.as_str(), TOPIC);
    let p = &r.responses[0].partition_responses;
    assert_eq!((p.len(), p[0].index, p[0].error_code), (1, 0, 0), "{p:?}");
    p[0].base_offset
}

/// The record batches of partition 0 from `offset` (Fetch v12), with the
/// high watermark and log start offset, after checking there is no error.
fn fetch_ok(conn: &mut KafkaConn, offset: i64) -> (Vec<Vec<u8>>, i64, i64) {
    let r: FetchResponse = conn.call(ApiKey::Fetch, 12, &fetch(offset));
    assert_eq!((r.error_code, r.responses.len()), (0, 1));
    assert_eq!(r.responses[0].topic.as_str(), TOPIC);
    let p = &r.responses[0].partitions[0];
    assert_eq!((p.partition_index, p.error_code), (0, 0), "{p:?}");
    (split_batches(p.records.as_deref().unwrap_or_default()), p.high_watermark, p.log_start_offset)
}

/// Record batches by their batchLength field (bytes 8..12: the length
/// after those 12 bytes).
fn split_batches(mut bytes: &[u8]) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    while bytes.len() >= 12 {
        let total = 12 + u32::from_be_bytes(bytes[8..12].try_into().unwrap()) as usize;
        assert!(total <= bytes.len(), "a Fetch answer ends inside a batch");
        out.push(bytes[..total].to_vec());
        bytes = &bytes[total..];
    }
    assert!(bytes.is_empty(), "{} stray bytes after the batches", bytes.len());
    out
}

fn base_offset(batch: &[u8]) -> i64 {
    i64::from_be_bytes(batch[..8].try_into().unwrap())
}

/// A stored batch is the produced one with its base offset patched (the
/// first 8 bytes, outside the CRC) and nothing else changed.
fn assert_same_batch(stored: &[u8], produced: &[u8], offset: i64) {
    assert_eq!(base_offset(stored), offset);
    assert!(stored[8..] == produced[8..], "the batch at offset {offset} is not the one produced");
}

/// Waits for the server to log `pat` in a line about a closed connection.
fn assert_logged_close(serve: &Serve, pat: &str) {
    let found = serve.wait_line(pat, HANG) && serve.stderr().iter().any(|l| l.contains(CLOSING) && l.contains(pat));
    assert!(found, "no \"{CLOSING}...{pat}\" line; stderr:\n{}", serve.stderr_text());
}

/// Sends `bytes` on a new connection to the Kafka port and checks that the
/// server closes it without a reply, logging `reason`.
fn refused_with_close(serve: &Serve, kafka: SocketAddr, bytes: &[u8], reason: &str) {
    let mut s = connect(kafka);
    s.write_all(bytes).unwrap();
    assert!(closed(&mut s), "the connection stayed open after a request refused for \"{reason}\"");
    assert_logged_close(serve, reason);
}

/// Produces batches on its own connection until told to stop, keeping
/// what it sent, counting them in `acked`, and checks each acknowledged
/// offset follows the last.
fn well_behaved_producer(kafka: SocketAddr, stop: Arc<AtomicBool>, acked: Arc<AtomicUsize>) -> Vec<Vec<u8>> {
    let mut conn = KafkaConn::open(kafka);
    let versions: ApiVersionsResponse = conn.call(ApiKey::ApiVersions, 3, &ApiVersionsRequest::default());
    assert_eq!(versions.error_code, 0);
    let m: MetadataResponse = conn.call(ApiKey::Metadata, 9, &MetadataRequest::default().with_topics(None));
    assert!(m.topics.iter().any(|t| t.name.as_ref().is_some_and(|n| n.as_str() == TOPIC)), "{m:?}");
    let mut sent = Vec::new();
    let mut next_offset = 0;
    while !stop.load(Ordering::Relaxed) {
        let batch = harness::batch(&format!("good-{}", sent.len()), 5, 1_700_000_000_000 + sent.len() as i64);
        assert_eq!(produce_ok(&mut conn, -1, &batch), next_offset);
        next_offset += 5;
        sent.push(batch);
        acked.store(sent.len(), Ordering::Relaxed);
    }
    sent
}

/// Waits until the producer has had more than `n` batches acknowledged.
fn wait_acked_past(acked: &AtomicUsize, n: usize) {
    let deadline = Instant::now() + HANG;
    while acked.load(Ordering::Relaxed) <= n {
        assert!(Instant::now() < deadline, "the well-behaved producer stalled at {n} batches");
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
}

#[test]
fn bad_requests_are_refused_while_a_good_client_is_served() {
    // Proves: each kind of bad input gets its refusal (a close with a logged reason, or the protocol's error) on its own connection, while another client's produces all land and read back byte for byte.
    let (mut serve, kafka) = start("kafka-abuse-refusals");
    let (stop, acked) = (Arc::new(AtomicBool::new(false)), Arc::new(AtomicUsize::new(0)));
    let producer = {
        let (stop, acked) = (stop.clone(), acked.clone());
        std::thread::spawn(move || well_behaved_producer(kafka, stop, acked))
    };
    // Served before, during and after the abuse.
    wait_acked_past(&acked, 0);

    // A declared length over the limit: refused from the 4 bytes of the
    // length, before the rest is read or room made for it.
    let over = (FRAME_BYTES_MAX as u32).to_be_bytes();
    let over_reason = format!("a Kafka request of {} bytes is over the limit of {FRAME_BYTES_MAX}", FRAME_BYTES_MAX + 4);
    refused_with_close(&serve, kafka, &[&over[..], &[0; 8]].concat(), &over_reason);
    refused_with_close(&serve, kafka, &0x7FFF_FFFFu32.to_be_bytes(), &format!("a Kafka request of {} bytes", 0x7FFF_FFFFu64 + 4));
    // Garbage: a text protocol's bytes read as a length (over the limit),
    // and a small frame of 0xFF bytes (api key -1).
    let get_reason = format!("a Kafka request of {} bytes is over", u32::from_be_bytes(*b"GET ") as u64 + 4);
    refused_with_close(&serve, kafka, b"GET / HTTP/1.1\r\nHost: strom\r\n\r\n", &get_reason);
    refused_with_close(&serve, kafka, &[&[0, 0, 0, 16][..], &[0xFF; 16]].concat(), "unknown Kafka api key -1");
    refused_with_close(&serve, kafka, &[0, 0, 0, 3, 1, 2, 3], "cannot hold a request header");
    // A lying count: Metadata v4 declaring 2^31 - 1 topics in 1 byte.
    let mut lying = metadata_v4();
    let count_at = 4 + 8 + 2 + "kafka-abuse".len();
    lying[count_at..count_at + 4].copy_from_slice(&0x7FFF_FFFFu32.to_be_bytes());
    lying.truncate(count_at + 5);
    let len = (lying.len() - 4) as u32;
    lying[..4].copy_from_slice(&len.to_be_bytes());
    refused_with_close(&serve, kafka, &lying, "a malformed Kafka Metadata v4 request: Array length 2147483647 exceeds the 1 bytes left");
    // The same in a flexible version: Metadata v9's compact count is a
    // varint of count + 1, after the header's tagged fields.
    let v9 = request_frame(ApiKey::Metadata, 9, 10, &MetadataRequest::default());
    let mut lying = [&v9[..count_at + 1], &[0x80, 0x80, 0x80, 0x80, 0x08, 0]].concat();
    let len = (lying.len() - 4) as u32;
    lying[..4].copy_from_slice(&len.to_be_bytes());
    refused_with_close(&serve, kafka, &lying, "Metadata v9 request: Compact array length 2147483647 exceeds the 1 bytes left");
    // An api key Kafka does not have, and one it has that Strom does not serve.
    let mut unknown = metadata_v4();
    unknown[4..6].copy_from_slice(&1000i16.to_be_bytes());
    refused_with_close(&serve, kafka, &unknown, "unknown Kafka api key 1000");
    let mut not_served = metadata_v4();
    not_served[4..6].copy_from_slice(&(ApiKey::DescribeGroups as i16).to_be_bytes());
    refused_with_close(&serve, kafka, &not_served, "DescribeGroups (key 15) is not served");
    // A served api at a version it does not serve.
    let fetch_v3 = relabelled(request_frame(ApiKey::Fetch, 4, 5, &fetch(0)), 3);
    refused_with_close(&serve, kafka, &fetch_v3, "Kafka api Fetch version 3 is not served");

    unsupported_api_versions_is_answered(kafka);
    old_produce_is_answered_unsupported(kafka);
    native_client_on_the_kafka_port(&serve, kafka);
    kafka_bytes_on_the_native_port(&serve);

    wait_acked_past(&acked, acked.load(Ordering::Relaxed));
    stop.store(true, Ordering::Relaxed);
    let sent = producer.join().expect("the well-behaved producer failed");
    println!("the well-behaved producer's {} batches were all acknowledged in order", sent.len());
    read_back(kafka, &sent);
    serve.assert_alive();
}

/// ApiVersions at a version not served is answered, in version 0's layout,
/// with UNSUPPORTED_VERSION and the table (KIP-511), and the connection
/// stays: the client asks again at a version it finds there.
fn unsupported_api_versions_is_answered(kafka: SocketAddr) {
    let mut conn = KafkaConn::open(kafka);
    conn.stream.write_all(&relabelled(request_frame(ApiKey::ApiVersions, 3, 41, &ApiVersionsRequest::default()), 9)).unwrap();
    let id = 41;
    let r: ApiVersionsResponse = conn.receive(ApiKey::ApiVersions, 0, id);
    assert_eq!(r.error_code, UNSUPPORTED_VERSION);
    let v = r.api_keys.iter().find(|k| k.api_key == ApiKey::ApiVersions as i16).expect("ApiVersions in its own table");
    assert!(v.max_version < 9 && v.max_version >= 3, "{v:?}");
    let again: ApiVersionsResponse = conn.call(ApiKey::ApiVersions, v.max_version, &ApiVersionsRequest::default());
    assert_eq!(again.error_code, 0);
    assert!(again.api_keys.iter().any(|k| k.api_key == ApiKey::Produce as i16), "{again:?}");
}

/// Produce v2 (advertised for old clients, whose message formats Strom
/// does not store): each partition is answered UNSUPPORTED_VERSION in
/// version 2's layout, nothing is stored, and the connection stays.
fn old_produce_is_answered_unsupported(kafka: SocketAddr) {
    // The crate encodes Produce from version 3: header v1 and body by hand.
    let batch = harness::batch("old", 1, 0);
    let mut f = vec![0u8; 4];
    f.extend_from_slice(&(ApiKey::Produce as i16).to_be_bytes());
    f.extend_from_slice(&2i16.to_be_bytes());
    f.extend_from_slice(&51i32.to_be_bytes());
    f.extend_from_slice(&[&(-1i16).to_be_bytes()[..], &(-1i16).to_be_bytes(), &30_000i32.to_be_bytes(), &1i32.to_be_bytes()].concat());
    f.extend_from_slice(&[&(TOPIC.len() as i16).to_be_bytes()[..], TOPIC.as_bytes(), &1i32.to_be_bytes(), &0i32.to_be_bytes()].concat());
    f.extend_from_slice(&[&(batch.len() as i32).to_be_bytes()[..], &batch].concat());
    let len = (f.len() - 4) as u32;
    f[..4].copy_from_slice(&len.to_be_bytes());
    let mut conn = KafkaConn::open(kafka);
    conn.stream.write_all(&f).unwrap();
    let reply = read_frame(&mut conn.stream).expect("a Produce v2 response");
    // correlation id, 1 topic, its name, 1 partition, partition 0, its error.
    let mut expected = [&51i32.to_be_bytes()[..], &1i32.to_be_bytes(), &(TOPIC.len() as i16).to_be_bytes(), TOPIC.as_bytes()].concat();
    expected.extend_from_slice(&[&1i32.to_be_bytes()[..], &0i32.to_be_bytes(), &UNSUPPORTED_VERSION.to_be_bytes()].concat());
    assert!(reply[4..].starts_with(&expected), "Produce v2 answered {reply:?}");
    let again: ApiVersionsResponse = conn.call(ApiKey::ApiVersions, 3, &ApiVersionsRequest::default());
    assert_eq!(again.error_code, 0);
}

/// Strom's own client pointed at the Kafka port: its Metadata frame reads
/// as Kafka's api key 4 (LeaderAndIsr, gone from Kafka and from the
/// crate), so it is closed.
fn native_client_on_the_kafka_port(serve: &Serve, kafka: SocketAddr) {
    let mut client = strom::client::Client::connect(kafka).unwrap();
    client.set_timeout(Some(HANG)).unwrap();
    let asked = client.metadata(&[TOPIC]);
    assert!(asked.is_err(), "a native Metadata answered on the Kafka port: {asked:?}");
    assert_logged_close(serve, "unknown Kafka api key 4");
}

/// A Kafka ApiVersions v3 frame on the native port reads as native api 18
/// (Authenticate) at version 3, which the native protocol does not speak:
/// answered with the native UnsupportedVersion error, and the connection,
/// whose framing held, still serves native requests.
fn kafka_bytes_on_the_native_port(serve: &Serve) {
    let mut s = connect(serve.addr);
    s.write_all(&request_frame(ApiKey::ApiVersions, 3, 1, &ApiVersionsRequest::default())).unwrap();
    let reply = read_frame(&mut s).expect("a native error reply");
    match proto::decode_response(&reply) {
        Ok((h, Response::Error { code, message })) => {
            assert_eq!((h.api, code), (ApiKey::ApiVersions as u16, ErrorCode::UnsupportedVersion), "{message}");
        }
        other => panic!("Kafka bytes on the native port answered with {other:?}"),
    }
    let mut f = Vec::new();
    proto::encode_request(&mut f, 77, &proto::Request::Metadata { topics: vec![TOPIC] });
    s.write_all(&f).unwrap();
    let reply = read_frame(&mut s).expect("a native Metadata reply");
    match proto::decode_response(&reply) {
        Ok((h, Response::Metadata { topics, .. })) => assert_eq!((h.request_id, topics.len()), (77, 1)),
        other => panic!("a native Metadata after Kafka bytes answered with {other:?}"),
    }
}

/// Every batch the well-behaved producer sent, read back by Fetch in
/// order, each the same bytes but for its base offset.
fn read_back(kafka: SocketAddr, sent: &[Vec<u8>]) {
    let mut conn = KafkaConn::open(kafka);
    let mut stored = Vec::new();
    let end = 5 * sent.len() as i64;
    while stored.len() < sent.len() {
        let (batches, high_watermark, _) = fetch_ok(&mut conn, 5 * stored.len() as i64);
        assert_eq!(high_watermark, end);
        assert!(!batches.is_empty(), "a Fetch below the high watermark answered no batch");
        stored.extend(batches);
    }
    assert_eq!(stored.len(), sent.len());
    for (i, (s, p)) in stored.iter().zip(sent).enumerate() {
        assert_same_batch(s, p, 5 * i as i64);
    }
}

#[test]
fn produce_acks_fetch_inside_a_batch_and_list_offsets() {
    // Proves: Produce with acks -1 and 1 answers each batch's base offset, acks 0 answers nothing yet stores the batch, a Fetch at an offset inside a batch returns that whole batch, and ListOffsets names the start and the end.
    let (mut serve, kafka) = start("kafka-abuse-round-trip");
    let mut conn = KafkaConn::open(kafka);
    let batches: Vec<Vec<u8>> = (0..3).map(|i| harness::batch(&format!("b{i}"), 4, 1_700_000_000_000 + i * 10)).collect();
    assert_eq!(produce_ok(&mut conn, -1, &batches[0]), 0);
    assert_eq!(produce_ok(&mut conn, 1, &batches[1]), 4);
    // acks=0: no response at all; the next response read is the next request's.
    conn.send(ApiKey::Produce, 9, &produce(0, &batches[2]));
    let latest: ListOffsetsResponse = conn.call(ApiKey::ListOffsets, 5, &list_offsets(-1));
    let p = &latest.topics[0].partitions[0];
    assert_eq!((latest.topics[0].name.as_str(), p.partition_index, p.error_code, p.offset), (TOPIC, 0, 0, 12), "{p:?}");
    let earliest: ListOffsetsResponse = conn.call(ApiKey::ListOffsets, 5, &list_offsets(-2));
    let p = &earliest.topics[0].partitions[0];
    assert_eq!((p.error_code, p.offset), (0, 0), "{p:?}");

    // Offset 6 is the third record of the second batch: the answer starts
    // with that whole batch (base offset 4), as Kafka's does.
    let (fetched, high_watermark, log_start) = fetch_ok(&mut conn, 6);
    assert_eq!((high_watermark, log_start), (12, 0));
    assert!(!fetched.is_empty());
    assert_same_batch(&fetched[0], &batches[1], 4);
    if let Some(third) = fetched.get(1) {
        assert_same_batch(third, &batches[2], 8);
    }
    // From the start: all three, as produced.
    let (all, _, _) = fetch_ok(&mut conn, 0);
    assert_eq!(all.len(), 3);
    for (i, (s, p)) in all.iter().zip(&batches).enumerate() {
        assert_same_batch(s, p, 4 * i as i64);
    }
    // At the end: no batch, no error.
    let (none, high_watermark, _) = fetch_ok(&mut conn, 12);
    assert_eq!((none.len(), high_watermark), (0, 12));
    serve.assert_alive();
}

// Proves: a connection's pipelined requests are answered in request order
// whatever order they complete in. Produces overlap (a refused one, answered
// at once, waits behind a durable one still being written; an acks=0 one in
// between sends nothing), a Metadata behind them waits its turn, and the
// Produce after it sees every batch before it stored, in order.
#[test]
fn pipelined_requests_are_answered_in_request_order() {
    let (mut serve, kafka) = start("kafka-abuse-pipelined");
    let mut conn = KafkaConn::open(kafka);
    let batches: Vec<Vec<u8>> = (0..4).map(|i| harness::batch(&format!("p{i}"), 4, 1_700_000_000_000 + i * 10)).collect();
    let unknown = {
        let mut r = produce(-1, &batches[1]);
        r.topic_data[0].name = TopicName(StrBytes::from_static_str("no-such-topic"));
        r
    };
    let first = conn.send(ApiKey::Produce, 9, &produce(-1, &batches[0]));
    let refused = conn.send(ApiKey::Produce, 9, &unknown);
    conn.send(ApiKey::Produce, 9, &produce(0, &batches[1]));
    let third = conn.send(ApiKey::Produce, 9, &produce(1, &batches[2]));
    let t = MetadataRequestTopic::default().with_name(Some(topic_name()));
    let metadata = conn.send(ApiKey::Metadata, 9, &MetadataRequest::default().with_topics(Some(vec![t])));
    let last = conn.send(ApiKey::Produce, 9, &produce(-1, &batches[3]));

    // `receive` asserts each response's correlation id: request order.
    let base = |r: &ProduceResponse| (r.responses[0].partition_responses[0].error_code, r.responses[0].partition_responses[0].base_offset);
    assert_eq!(base(&conn.receive::<ProduceResponse>(ApiKey::Produce, 9, first)), (0, 0));
    let r: ProduceResponse = conn.receive(ApiKey::Produce, 9, refused);
    assert_eq!(r.responses[0].partition_responses[0].error_code, 3, "UNKNOWN_TOPIC_OR_PARTITION: {r:?}");
    assert_eq!(base(&conn.receive::<ProduceResponse>(ApiKey::Produce, 9, third)), (0, 8), "after the acks=0 batch at 4");
    let m: MetadataResponse = conn.receive(ApiKey::Metadata, 9, metadata);
    assert_eq!((m.topics.len(), m.topics[0].error_code), (1, 0));
    assert_eq!(base(&conn.receive::<ProduceResponse>(ApiKey::Produce, 9, last)), (0, 12));
    let (all, high_watermark, _) = fetch_ok(&mut conn, 0);
    assert_eq!((all.len(), high_watermark), (4, 16));
    for (i, (s, p)) in all.iter().zip(&batches).enumerate() {
        assert_same_batch(s, p, 4 * i as i64);
    }
    serve.assert_alive();
}
