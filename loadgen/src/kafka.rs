//! The Kafka messages `--kafka`'s producers and tail consumers speak to the
//! broker's Kafka listener: a Produce request (version 7, request header
//! v1) carrying one of loadgen's RecordBatch v2 batches verbatim, and its
//! response; a Fetch (version 11) of a consumer's partitions, and its
//! response, whose batches are checked as a native Fetch's are.
//!
//! Version 7 is the newest non-flexible Produce the listener serves: its
//! fields are fixed-width, the batch is the frame's last field, and the
//! partition index sits just before the batch's length, so a frame is
//! encoded once per in-flight slot and only the correlation id, the
//! partition and the batch's stamped fields change before each send (as
//! for native frames, see [`crate::worker`]). Both are written by hand
//! because they are two fixed layouts; the tests check them against the
//! `kafka-protocol` crate the listener decodes with.
//!
//! ```text
//! request:  len i32 | api_key 0 i16 | version 7 i16 | correlation_id i32 | client_id str16
//!           transactional_id null (-1 i16) | acks -1 i16 | timeout_ms i32
//!           topics 1 i32 | name str16 | partitions 1 i32 | index i32 | records len i32 + batch
//! response: len i32 | correlation_id i32 | topics i32 { name str16 | partitions i32 {
//!           index i32 | error_code i16 | base_offset i64 | log_append_time_ms i64 | log_start_offset i64 } }
//!           | throttle_time_ms i32
//! fetch:    len i32 | api_key 1 i16 | version 11 i16 | correlation_id i32 | client_id str16
//!           replica_id -1 i32 | max_wait_ms i32 | min_bytes 1 i32 | max_bytes i32 | isolation 0 i8
//!           session_id 0 i32 | session_epoch -1 i32 | topics 1 i32 | name str16 | partitions i32 {
//!           partition i32 | leader_epoch -1 i32 | fetch_offset i64 | log_start -1 i64 | max_bytes i32 }
//!           forgotten 0 i32 | rack_id "" str16
//! fetched:  len i32 | correlation_id i32 | throttle_time_ms i32 | error_code i16 | session_id i32
//!           topics i32 { name str16 | partitions i32 { index i32 | error_code i16 | high_watermark i64
//!           | last_stable i64 | log_start i64 | aborted i32 (-1, or that many of 16 bytes)
//!           | preferred_replica i32 | records len i32 (-1: null) + batches } }
//! ```

/// Produce's and Fetch's api keys, and the versions loadgen sends.
const PRODUCE_KEY: i16 = 0;
const PRODUCE_VERSION: i16 = 7;
const FETCH_KEY: i16 = 1;
const FETCH_VERSION: i16 = 11;
/// acks=-1 (all in-sync replicas): the listener answers once the batch is
/// durable, as a native Produce's ack is.
const ACKS_ALL: i16 = -1;
/// How long the broker may take to make a batch durable before it answers
/// with a timeout (Kafka's request.timeout.ms default).
const TIMEOUT_MS: i32 = 30_000;
const CLIENT_ID: &str = "loadgen";

/// The correlation id's place in a frame: after length, api key and version.
pub const CORRELATION_ID_AT: usize = 8;

/// The frame of a Produce of `batch` to `topic`, partition 0, correlation
/// id 0; and where its batch and its partition field are.
pub fn produce_frame(topic: &str, batch: &[u8]) -> (Vec<u8>, usize, usize) {
    let mut f = Vec::with_capacity(64 + topic.len() + batch.len());
    header(&mut f, PRODUCE_KEY, PRODUCE_VERSION, 0);
    f.extend_from_slice(&(-1i16).to_be_bytes());
    f.extend_from_slice(&ACKS_ALL.to_be_bytes());
    f.extend_from_slice(&TIMEOUT_MS.to_be_bytes());
    f.extend_from_slice(&1i32.to_be_bytes());
    put_str16(&mut f, topic);
    f.extend_from_slice(&1i32.to_be_bytes());
    let partition_at = f.len();
    f.extend_from_slice(&0i32.to_be_bytes());
    f.extend_from_slice(&i32::try_from(batch.len()).expect("batches are at most the frame limit").to_be_bytes());
    let batch_at = f.len();
    f.extend_from_slice(batch);
    seal(&mut f, 0);
    (f, batch_at, partition_at)
}

/// Appends a frame's length (patched by [`seal`]) and request header v1;
/// returns where the frame starts in `f`.
fn header(f: &mut Vec<u8>, key: i16, version: i16, correlation_id: i32) -> usize {
    let start = f.len();
    f.extend_from_slice(&0i32.to_be_bytes());
    f.extend_from_slice(&key.to_be_bytes());
    f.extend_from_slice(&version.to_be_bytes());
    f.extend_from_slice(&correlation_id.to_be_bytes());
    put_str16(f, CLIENT_ID);
    start
}

/// Writes the length of the frame that starts at `start` and ends at `f`'s end.
fn seal(f: &mut [u8], start: usize) {
    let len = i32::try_from(f.len() - start - 4).expect("frames are far below 2 GiB");
    f[start..start + 4].copy_from_slice(&len.to_be_bytes());
}

/// Appends a Fetch v11 of `parts` (partition, offset) of `topic`: a long
/// poll of `max_wait_ms` answered once any byte arrived (min_bytes 1),
/// `max_bytes` in all (the listener gives each partition its share).
pub fn fetch_request(f: &mut Vec<u8>, correlation_id: i32, topic: &str, parts: &[(u32, u64)], max_wait_ms: u32, max_bytes: u32) {
    let start = header(f, FETCH_KEY, FETCH_VERSION, correlation_id);
    let max_bytes = i32::try_from(max_bytes).unwrap_or(i32::MAX);
    f.extend_from_slice(&(-1i32).to_be_bytes());
    f.extend_from_slice(&i32::try_from(max_wait_ms).unwrap_or(i32::MAX).to_be_bytes());
    f.extend_from_slice(&1i32.to_be_bytes());
    f.extend_from_slice(&max_bytes.to_be_bytes());
    f.push(0);
    f.extend_from_slice(&0i32.to_be_bytes());
    f.extend_from_slice(&(-1i32).to_be_bytes());
    f.extend_from_slice(&1i32.to_be_bytes());
    put_str16(f, topic);
    f.extend_from_slice(&i32::try_from(parts.len()).expect("a topic's partitions fit an i32").to_be_bytes());
    for &(partition, offset) in parts {
        f.extend_from_slice(&partition.to_be_bytes());
        f.extend_from_slice(&(-1i32).to_be_bytes());
        f.extend_from_slice(&offset.to_be_bytes());
        f.extend_from_slice(&(-1i64).to_be_bytes());
        f.extend_from_slice(&max_bytes.to_be_bytes());
    }
    f.extend_from_slice(&0i32.to_be_bytes());
    put_str16(f, "");
    seal(f, start);
}

/// One partition of a Fetch response: its batches, verbatim.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fetched<'a> {
    pub partition: i32,
    pub error_code: i16,
    pub high_watermark: i64,
    pub batches: &'a [u8],
}

/// Decodes a Fetch v11 response frame (length prefix included) of one
/// topic: its correlation id, top-level error code, and each partition's
/// answer. Pure and bounded by the frame, as [`decode_produce_response`].
pub fn decode_fetch_response(frame: &[u8]) -> Result<(i32, i16, Vec<Fetched<'_>>), String> {
    let mut r = Reader { b: frame.get(4..).ok_or("a frame shorter than its length")? };
    let correlation_id = r.i32()?;
    let _throttle_time_ms = r.i32()?;
    let error_code = r.i16()?;
    let _session_id = r.i32()?;
    let topics = r.i32()?;
    let mut out = Vec::new();
    if topics > 1 {
        return Err(format!("a Fetch response with {topics} topics, not 1"));
    }
    for _ in 0..topics.max(0) {
        r.str16()?;
        for _ in 0..r.i32()?.max(0) {
            let partition = r.i32()?;
            let error_code = r.i16()?;
            let high_watermark = r.i64()?;
            let _last_stable_offset = r.i64()?;
            let _log_start_offset = r.i64()?;
            let aborted = r.i32()?.max(0) as usize;
            r.skip(aborted.checked_mul(16).ok_or("an aborted transaction count past the frame")?)?;
            let _preferred_read_replica = r.i32()?;
            let len = r.i32()?.max(0) as usize;
            let batches = r.skip(len)?;
            out.push(Fetched { partition, error_code, high_watermark, batches });
        }
    }
    if !r.b.is_empty() {
        return Err(format!("{} bytes after a Fetch v11 response", r.b.len()));
    }
    Ok((correlation_id, error_code, out))
}

fn put_str16(f: &mut Vec<u8>, s: &str) {
    f.extend_from_slice(&i16::try_from(s.len()).expect("topic names are short").to_be_bytes());
    f.extend_from_slice(s.as_bytes());
}

/// What a Produce response said of its one partition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProduceAnswer {
    pub correlation_id: i32,
    pub partition: i32,
    pub error_code: i16,
    pub base_offset: i64,
}

/// Decodes a Produce v7 response frame (length prefix included) to a
/// request of one topic and one partition. Pure and bounded by the frame:
/// anything else (more or fewer topics or partitions, a short frame,
/// bytes left over) is an error.
pub fn decode_produce_response(frame: &[u8]) -> Result<ProduceAnswer, String> {
    let mut r = Reader { b: frame.get(4..).ok_or("a frame shorter than its length")? };
    let correlation_id = r.i32()?;
    let topics = r.i32()?;
    if topics != 1 {
        return Err(format!("a Produce response with {topics} topics, not 1"));
    }
    r.str16()?;
    let partitions = r.i32()?;
    if partitions != 1 {
        return Err(format!("a Produce response with {partitions} partitions, not 1"));
    }
    let partition = r.i32()?;
    let error_code = r.i16()?;
    let base_offset = r.i64()?;
    let _log_append_time_ms = r.i64()?;
    let _log_start_offset = r.i64()?;
    let _throttle_time_ms = r.i32()?;
    if !r.b.is_empty() {
        return Err(format!("{} bytes after a Produce v7 response", r.b.len()));
    }
    Ok(ProduceAnswer { correlation_id, partition, error_code, base_offset })
}

struct Reader<'a> {
    b: &'a [u8],
}

impl<'a> Reader<'a> {
    fn take<const N: usize>(&mut self) -> Result<[u8; N], String> {
        if self.b.len() < N {
            return Err("a response cut short".into());
        }
        let (head, rest) = self.b.split_at(N);
        self.b = rest;
        Ok(head.try_into().expect("split at N"))
    }
    fn i16(&mut self) -> Result<i16, String> {
        self.take().map(i16::from_be_bytes)
    }
    fn i32(&mut self) -> Result<i32, String> {
        self.take().map(i32::from_be_bytes)
    }
    fn i64(&mut self) -> Result<i64, String> {
        self.take().map(i64::from_be_bytes)
    }
    fn str16(&mut self) -> Result<(), String> {
        let n = usize::try_from(self.i16()?.max(0)).expect("not negative");
        self.skip(n).map(|_| ())
    }
    fn skip(&mut self, n: usize) -> Result<&'a [u8], String> {
        if self.b.len() < n {
            return Err("a response cut short".into());
        }
        let (head, rest) = self.b.split_at(n);
        self.b = rest;
        Ok(head)
    }
}

#[cfg(test)]
mod tests {
    use bytes::{Bytes, BytesMut};
    use kafka_protocol::messages::fetch_response::{FetchableTopicResponse, PartitionData};
    use kafka_protocol::messages::produce_response::{PartitionProduceResponse, TopicProduceResponse};
    use kafka_protocol::messages::{
        FetchRequest, FetchResponse, ProduceRequest, ProduceResponse, RequestHeader, ResponseHeader, TopicName,
    };
    use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};

    use super::*;

    // Proves the hand-written request is the Produce v7 the listener's crate
    // decodes: header, acks, timeout, topic, the partition patched in place
    // and the batch passed through byte for byte.
    #[test]
    fn produce_frame_decodes_with_the_kafka_protocol_crate() {
        let batch: Vec<u8> = (0..300u32).map(|i| (i * 7) as u8).collect();
        let (mut f, batch_at, partition_at) = produce_frame("loadgen-kafka", &batch);
        f[partition_at..partition_at + 4].copy_from_slice(&3i32.to_be_bytes());
        f[CORRELATION_ID_AT..CORRELATION_ID_AT + 4].copy_from_slice(&77i32.to_be_bytes());
        assert_eq!(&f[batch_at..], &batch[..]);
        assert_eq!(i32::from_be_bytes(f[..4].try_into().unwrap()) as usize, f.len() - 4);
        let mut body = Bytes::copy_from_slice(&f[4..]);
        let header = RequestHeader::decode(&mut body, 1).unwrap();
        assert_eq!((header.request_api_key, header.request_api_version, header.correlation_id), (0, 7, 77));
        assert_eq!(header.client_id.as_deref(), Some("loadgen"));
        let req = ProduceRequest::decode(&mut body, 7).unwrap();
        assert!(body.is_empty(), "the request has no bytes after its body");
        assert_eq!((req.acks, req.timeout_ms, req.transactional_id), (-1, 30_000, None));
        assert_eq!(req.topic_data.len(), 1);
        let t = &req.topic_data[0];
        assert_eq!(t.name.as_str(), "loadgen-kafka");
        assert_eq!(t.partition_data.len(), 1);
        assert_eq!(t.partition_data[0].index, 3);
        assert_eq!(t.partition_data[0].records.as_deref(), Some(&batch[..]));
    }

    fn response(partitions: &[(i32, i16, i64)]) -> Vec<u8> {
        let parts = partitions
            .iter()
            .map(|&(index, code, base)| PartitionProduceResponse::default().with_index(index).with_error_code(code).with_base_offset(base))
            .collect();
        let topic = TopicProduceResponse::default()
            .with_name(TopicName(StrBytes::from_static_str("loadgen-kafka")))
            .with_partition_responses(parts);
        let mut b = BytesMut::new();
        ResponseHeader::default().with_correlation_id(77).encode(&mut b, 0).unwrap();
        ProduceResponse::default().with_responses(vec![topic]).with_throttle_time_ms(5).encode(&mut b, 7).unwrap();
        let mut f = (b.len() as i32).to_be_bytes().to_vec();
        f.extend_from_slice(&b);
        f
    }

    // Proves a Produce v7 response the crate encodes (as the listener does)
    // decodes to its partition, error code and base offset, and that what
    // is not one partition's answer, or is cut short, is refused.
    #[test]
    fn produce_response_from_the_crate_decodes() {
        let ok = decode_produce_response(&response(&[(3, 0, 4096)])).unwrap();
        assert_eq!(ok, ProduceAnswer { correlation_id: 77, partition: 3, error_code: 0, base_offset: 4096 });
        let err = decode_produce_response(&response(&[(1, 6, -1)])).unwrap();
        assert_eq!((err.error_code, err.base_offset), (6, -1));
        assert!(decode_produce_response(&response(&[(1, 0, 0), (2, 0, 0)])).is_err());
        let whole = response(&[(3, 0, 4096)]);
        for cut in 0..whole.len() {
            assert!(decode_produce_response(&whole[..cut]).is_err(), "a frame cut at {cut} is refused");
        }
    }

    // Proves the hand-written Fetch v11 is the one the listener's crate
    // decodes: every partition with its offset, the long poll and the bounds.
    #[test]
    fn fetch_request_decodes_with_the_kafka_protocol_crate() {
        let mut f = vec![9u8; 3]; // appended after whatever the buffer holds
        fetch_request(&mut f, 41, "loadgen-kafka", &[(0, 10), (3, 1 << 40)], 500, 2 << 20);
        let mut body = Bytes::copy_from_slice(&f[3 + 4..]);
        assert_eq!(i32::from_be_bytes(f[3..7].try_into().unwrap()) as usize, f.len() - 7);
        let header = RequestHeader::decode(&mut body, 1).unwrap();
        assert_eq!((header.request_api_key, header.request_api_version, header.correlation_id), (1, 11, 41));
        let req = FetchRequest::decode(&mut body, 11).unwrap();
        assert!(body.is_empty(), "the request has no bytes after its body");
        assert_eq!((req.max_wait_ms, req.min_bytes, req.max_bytes, req.isolation_level), (500, 1, 2 << 20, 0));
        assert_eq!(req.topics.len(), 1);
        assert_eq!(req.topics[0].topic.as_str(), "loadgen-kafka");
        let parts: Vec<(i32, i64)> = req.topics[0].partitions.iter().map(|p| (p.partition, p.fetch_offset)).collect();
        assert_eq!(parts, [(0, 10), (3, 1 << 40)]);
    }

    // Proves a Fetch v11 response the crate encodes (as the listener does)
    // decodes to each partition's error, high watermark and batches, null
    // records included, and that a frame cut short is refused.
    #[test]
    fn fetch_response_from_the_crate_decodes() {
        let batches = Bytes::from_static(b"some batches, verbatim");
        let parts = vec![
            PartitionData::default().with_partition_index(2).with_high_watermark(99).with_records(Some(batches.clone())),
            PartitionData::default().with_partition_index(1).with_error_code(3).with_high_watermark(-1),
        ];
        let topic = FetchableTopicResponse::default().with_topic(TopicName(StrBytes::from_static_str("t"))).with_partitions(parts);
        let mut b = BytesMut::new();
        ResponseHeader::default().with_correlation_id(41).encode(&mut b, 0).unwrap();
        FetchResponse::default().with_responses(vec![topic]).encode(&mut b, 11).unwrap();
        let mut whole = (b.len() as i32).to_be_bytes().to_vec();
        whole.extend_from_slice(&b);
        let (corr, code, got) = decode_fetch_response(&whole).unwrap();
        assert_eq!((corr, code), (41, 0));
        assert_eq!(
            got,
            [
                Fetched { partition: 2, error_code: 0, high_watermark: 99, batches: &batches[..] },
                Fetched { partition: 1, error_code: 3, high_watermark: -1, batches: &[] },
            ]
        );
        for cut in 0..whole.len() {
            assert!(decode_fetch_response(&whole[..cut]).is_err(), "a frame cut at {cut} is refused");
        }
    }
}
