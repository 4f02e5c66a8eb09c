use super::codes_tests::ALL_CODES;
use super::*;
use crate::catalog::{LIMIT_MAX, PartitionDescription, TopicDescription, TopicRetention, UNLIMITED};
use crate::core::query::QueryBounds;
use crate::partition::Retention;
use crate::proto::QueryEnd;
use crate::wire::batch::{self, BatchBuilder};

const TS_MS: i64 = 1_700_000_000_000;
/// Where the body starts in a whole frame.
const BODY_AT: usize = LEN_BYTES + HEADER_BYTES;

/// A real, valid batch of `records` records.
fn batch(records: u8) -> Vec<u8> {
    let mut b = BatchBuilder::new(TS_MS);
    for i in 0..records {
        b.push(TS_MS + i64::from(i), Some(&[i]), Some(b"hello"), &[]);
    }
    b.finish()
}

fn two_batches() -> Vec<u8> {
    [batch(1), batch(3)].concat()
}

/// Every api, and the values of each that the layout treats differently.
fn requests(batches: &[u8]) -> Vec<Request<'_>> {
    vec![
        Request::Produce { topic: "orders", partition: 3, batches },
        Request::Fetch { topic: "orders", partition: u32::MAX, offset: u64::MAX, max_bytes: 1 << 20, max_wait_ms: 500 },
        Request::ListOffsets { topic: "t", partition: 0, spec: OffsetSpec::Earliest },
        Request::ListOffsets { topic: "t", partition: 1, spec: OffsetSpec::Latest },
        Request::ListOffsets { topic: "t", partition: 2, spec: OffsetSpec::Timestamp(0) },
        Request::ListOffsets { topic: "t", partition: 2, spec: OffsetSpec::Timestamp(i64::MAX) },
        Request::Query { topic: "q", partition: 1, from: QueryEnd::Offset(-1), to: QueryEnd::Index { name: "ts", value: -5 }, wait_ms: 9 },
        Request::CreateTopic { topic: "ix", partitions: 2, retention: None, indices: vec!["ts", "seq"] },
        Request::Metadata { topics: vec![] },
        Request::Metadata { topics: vec!["a", "", "é-ü"] },
        Request::CreateTopic { topic: "new", partitions: 16, retention: None, indices: vec![] },
        Request::CreateTopic {
            topic: "r",
            partitions: 1,
            retention: Some(TopicRetention { ms: Some(0), bytes: Some(UNLIMITED) }),
            indices: vec![],
        },
        Request::CreateTopic {
            topic: "r",
            partitions: 2,
            retention: Some(TopicRetention { ms: None, bytes: Some(LIMIT_MAX) }),
            indices: vec![],
        },
        Request::AlterTopic { topic: "r", ms: None, bytes: Some(None) },
        Request::AlterTopic { topic: "r", ms: Some(Some(UNLIMITED)), bytes: Some(Some(1 << 30)) },
        Request::DescribeTopic { topic: "r" },
        Request::DeleteTopic { topic: "" },
        Request::OffsetCommit { group: "g", topic: "orders", partition: 1, offset: 12345 },
        Request::OffsetFetch { group: "group-1", topic: "orders", partition: 1 },
        Request::Stats { reset: false, per_core: false },
        Request::Stats { reset: true, per_core: false },
        Request::Stats { reset: false, per_core: true },
        Request::Stats { reset: true, per_core: true },
        Request::Metrics,
        Request::ServerInfo,
        Request::Subscribe { topic: "t", partition: 1, credit_bytes: 0, start: SubscribeStart::Earliest },
        Request::Subscribe { topic: "t", partition: 2, credit_bytes: u64::MAX, start: SubscribeStart::Latest },
        Request::Subscribe { topic: "t", partition: 3, credit_bytes: 1 << 20, start: SubscribeStart::Offset(u64::MAX) },
        Request::Subscribe { topic: "t", partition: 4, credit_bytes: 7, start: SubscribeStart::Time(0) },
        Request::Subscribe { topic: "t", partition: 5, credit_bytes: 8, start: SubscribeStart::Index { name: "ts", value: i64::MIN } },
        Request::Grant { subscription: 3, bytes: u64::MAX },
        Request::Cancel { request: u64::MAX },
        Request::Authenticate { token: "0123456789abcdef" },
        Request::Authenticate { token: "" },
    ]
}

/// A ServerInfo reply with every number distinct, so a swapped field shows.
fn server_info(fsync: &str) -> ServerInfo {
    ServerInfo {
        protocol_version: VERSION,
        server_version: "0.1.0".into(),
        cores: 2,
        fsync: fsync.into(),
        batch_bytes_max: 1_048_588,
        frame_bytes_max: (8 << 20) + 1024,
        partitions_per_topic_max: 65_536,
    }
}

/// A Stats reply's row with every figure distinct, so a swapped field shows.
fn stage_row(stage: &str, base: u64) -> crate::stats::StageLatency {
    crate::stats::StageLatency {
        stage: stage.into(),
        count: base,
        p50_us: base + 1,
        p90_us: base + 2,
        p99_us: base + 3,
        p999_us: base + 4,
        max_us: u64::MAX - base,
    }
}

/// A DescribeTopic reply with every field distinct.
fn description() -> TopicDescription {
    let p = |n: u64| PartitionDescription { start_offset: n, end_offset: n + 1, bytes: n + 2, core: n as u16 };
    TopicDescription {
        name: "described".into(),
        retention: TopicRetention { ms: Some(UNLIMITED), bytes: None },
        effective: Retention { age_ms: None, bytes: Some(4096) },
        partitions: vec![p(0), p(10), p(u64::MAX - 2)],
        indices: vec!["by-key".into(), String::new()],
    }
}

/// Every reply, each with the api of the request it answers.
fn responses(batches: &[u8]) -> Vec<(Api, Response<'_>)> {
    let metadata = Response::Metadata {
        core_addrs: vec![String::new(), "10.0.0.1:9093".into(), "[::1]:9094".into()],
        topics: vec![
            TopicMetadata { name: "orders".into(), partition_cores: vec![0, 1, 2, 0] },
            TopicMetadata { name: "empty".into(), partition_cores: vec![] },
        ],
    };
    let mut all = vec![
        (Api::Produce, Response::Produce { base_offset: 0, last_offset: 3 }),
        (Api::Produce, Response::Produce { base_offset: u64::MAX, last_offset: u64::MAX }),
        (Api::Fetch, Response::Fetch { high_watermark: 10, start_offset: 0, next_offset: 4, batches }),
        (Api::Fetch, Response::Fetch { high_watermark: 10, start_offset: 0, next_offset: 10, batches: &[] }),
        (Api::Query, Response::Query(QueryBounds { from: 3, end: 9, open: true, high_watermark: 10, start_offset: 1 })),
        (Api::ListOffsets, Response::ListOffsets { offset: None }),
        (Api::ListOffsets, Response::ListOffsets { offset: Some(0) }),
        (Api::ListOffsets, Response::ListOffsets { offset: Some(i64::MAX as u64) }),
        (Api::Metadata, Response::Metadata { core_addrs: vec![], topics: vec![] }),
        (Api::Metadata, metadata),
        (Api::CreateTopic, Response::CreateTopic),
        (Api::DeleteTopic, Response::DeleteTopic),
        (Api::AlterTopic, Response::AlterTopic { retention: TopicRetention { ms: Some(7), bytes: None } }),
        (Api::DescribeTopic, Response::DescribeTopic { description: description() }),
        (Api::DescribeTopic, Response::DescribeTopic { description: TopicDescription { partitions: vec![], ..description() } }),
        (Api::OffsetCommit, Response::OffsetCommit),
        (Api::OffsetFetch, Response::OffsetFetch { offset: None }),
        (Api::OffsetFetch, Response::OffsetFetch { offset: Some(7) }),
        (Api::Stats, Response::Stats { stages: vec![], cores: vec![] }),
        (
            Api::Stats,
            Response::Stats { stages: vec![stage_row("receive", 10), stage_row("", 0), stage_row("é-stage", 1 << 40)], cores: vec![] },
        ),
        (
            Api::Stats,
            Response::Stats {
                stages: vec![stage_row("fsync", 3)],
                cores: vec![vec![stage_row("fsync", 1)], vec![], vec![stage_row("fsync", 2)]],
            },
        ),
        (Api::Metrics, Response::Metrics { cores: vec![] }),
        (Api::Metrics, Response::Metrics { cores: vec![vec![("strom_appends_total", 3), ("", 0), ("é", u64::MAX)], vec![]] }),
        (Api::ServerInfo, Response::ServerInfo(server_info("always"))),
        (Api::ServerInfo, Response::ServerInfo(server_info("interval:5"))),
        (Api::ServerInfo, Response::ServerInfo(ServerInfo { server_version: String::new(), fsync: "é".into(), ..server_info("") })),
        (Api::Subscribe, Response::Subscribe { from_offset: 4, next_offset: 10, high_watermark: u64::MAX, batches }),
        (Api::Subscribe, Response::Subscribe { from_offset: 9, next_offset: 9, high_watermark: 9, batches: &[] }),
        (Api::Grant, Response::Grant),
        (Api::Cancel, Response::Cancel),
        (Api::Authenticate, Response::Authenticate { user: "reader".into() }),
        (Api::Authenticate, Response::Authenticate { user: String::new() }),
    ];
    for code in ALL_CODES.into_iter().chain([ErrorCode::Unknown(777)]) {
        all.push((Api::Fetch, Response::Error { code, message: "what went wrong, and é" }));
    }
    all.push((Api::Produce, Response::Error { code: ErrorCode::Overloaded, message: "" }));
    all
}

fn request_frame(request_id: u64, req: &Request<'_>) -> Vec<u8> {
    let mut out = Vec::new();
    encode_request(&mut out, request_id, req);
    out
}

fn response_frame(api: Api, request_id: u64, resp: &Response<'_>) -> Vec<u8> {
    let mut out = Vec::new();
    encode_response(&mut out, api, request_id, resp);
    out
}

/// Every request and reply frame the tests above describe, with whether it
/// is a request and whether its body ends in a batches blob.
fn all_frames(batches: &[u8]) -> Vec<(Vec<u8>, bool, bool)> {
    let reqs = requests(batches).into_iter().map(|r| (request_frame(1, &r), true, r.api() == Api::Produce));
    let resps = responses(batches)
        .into_iter()
        .map(|(api, r)| (response_frame(api, 1, &r), false, matches!(r, Response::Fetch { .. } | Response::Subscribe { .. })));
    reqs.chain(resps).collect()
}

/// Decodes as a request or a response, keeping only what the tests compare.
fn decode_either(frame: &[u8], is_request: bool) -> Result<String, (Option<Header>, DecodeError)> {
    if is_request { decode_request(frame).map(|r| format!("{r:?}")) } else { decode_response(frame).map(|r| format!("{r:?}")) }
}

/// `frame` with its length field set to match its size.
fn with_length_fixed(mut frame: Vec<u8>) -> Vec<u8> {
    let len = (frame.len() - LEN_BYTES) as u32;
    frame[..LEN_BYTES].copy_from_slice(&len.to_be_bytes());
    frame
}

/// A frame from a raw header and body.
fn raw_frame(api: u16, version_or_error: u16, request_id: u64, body: &[u8]) -> Vec<u8> {
    let mut f = Vec::new();
    f.extend_from_slice(&((HEADER_BYTES + body.len()) as u32).to_be_bytes());
    f.extend_from_slice(&api.to_be_bytes());
    f.extend_from_slice(&version_or_error.to_be_bytes());
    f.extend_from_slice(&request_id.to_be_bytes());
    f.extend_from_slice(body);
    f
}

#[test]
fn every_request_round_trips() {
    // Proves: each request of every api decodes to itself with its header, is framed as frame_len reads it, and passes fuzz_check.
    let batches = two_batches();
    let mut apis = Vec::new();
    for (i, req) in requests(&batches).iter().enumerate() {
        let request_id = (i as u64) << 40 | 0xabc;
        let frame = request_frame(request_id, req);
        assert_eq!(frame_len(&frame, FRAME_BYTES_MAX_DEFAULT), Ok(Some(frame.len())));
        let header = Header { api: req.api() as u16, version_or_error: req.version(), request_id };
        assert_eq!(decode_request(&frame), Ok((header, req.clone())));
        fuzz_check(&frame);
        apis.push(req.api() as u16);
    }
    apis.sort();
    apis.dedup();
    assert_eq!(apis, (1..=u16::MAX).filter(|&n| Api::from_u16(n).is_some()).collect::<Vec<u16>>(), "every api is covered");
}

#[test]
fn every_response_round_trips() {
    // Proves: each reply of every api, and an error reply with every code, decodes to itself and passes fuzz_check.
    let batches = two_batches();
    for (i, (api, resp)) in responses(&batches).iter().enumerate() {
        let request_id = u64::MAX - i as u64;
        let frame = response_frame(*api, request_id, resp);
        assert_eq!(frame_len(&frame, FRAME_BYTES_MAX_DEFAULT), Ok(Some(frame.len())));
        let error = match resp {
            Response::Error { code, .. } => code.code(),
            _ => 0,
        };
        let header = Header { api: *api as u16, version_or_error: error, request_id };
        assert_eq!(decode_response(&frame), Ok((header, resp.clone())));
        fuzz_check(&frame);
    }
}

#[test]
fn frames_append_back_to_back() {
    // Proves: encoders append to what the buffer holds, and frame_len walks the frames one after another.
    let batches = batch(2);
    let mut buf = vec![0xEE; 3];
    let reqs = requests(&batches);
    for (i, req) in reqs.iter().enumerate() {
        encode_request(&mut buf, i as u64, req);
    }
    let mut at = 3;
    for (i, req) in reqs.iter().enumerate() {
        let total = frame_len(&buf[at..], FRAME_BYTES_MAX_DEFAULT).unwrap().unwrap();
        let (header, decoded) = decode_request(&buf[at..at + total]).unwrap();
        assert_eq!((header.request_id, &decoded), (i as u64, req));
        at += total;
    }
    assert_eq!(at, buf.len());
}

#[test]
fn frame_len_edges() {
    // Proves: under 4 bytes is "not yet", a length is judged before its frame arrives, and the bounds are 12 and max inclusive.
    let max = FRAME_BYTES_MAX_DEFAULT;
    let len = |n: u32| n.to_be_bytes();
    assert_eq!(frame_len(&[], max), Ok(None));
    assert_eq!(frame_len(&[0, 0, 0], max), Ok(None));
    assert_eq!(frame_len(&len(0), max), Err(FrameError::TooSmall { len: 0 }));
    assert_eq!(frame_len(&len(11), max), Err(FrameError::TooSmall { len: 11 }));
    assert_eq!(frame_len(&len(12), max), Ok(Some(16)));
    assert_eq!(frame_len(&[&len(12)[..], &[0xFF; 40]].concat(), max), Ok(Some(16)));
    assert_eq!(frame_len(&len(max as u32), max), Ok(Some(max + 4)));
    assert_eq!(frame_len(&len(max as u32 + 1), max), Err(FrameError::TooLarge { len: max as u64 + 1, max }));
    assert_eq!(frame_len(&len(12), 11), Err(FrameError::TooLarge { len: 12, max: 11 }));
    for huge in [(1u32 << 31) - 1, u32::MAX] {
        assert_eq!(frame_len(&len(huge), max), Err(FrameError::TooLarge { len: u64::from(huge), max }));
        #[cfg(target_pointer_width = "64")]
        assert_eq!(frame_len(&len(huge), usize::MAX), Ok(Some(huge as usize + 4)));
    }
}

#[test]
fn every_truncation_is_an_error() {
    // Proves: every proper prefix fails without panicking (with the header once it is there), and so does every
    // shortened body whose length was fixed to match, except where a shorter batches blob is still a whole frame.
    let batches = two_batches();
    for (frame, is_request, has_blob) in all_frames(&batches) {
        let header = header_of(&frame);
        for n in 0..frame.len() {
            let expected_header = if n >= BODY_AT { header } else { None };
            assert_eq!(decode_either(&frame[..n], is_request), Err((expected_header, DecodeError::Short)), "cut at {n}");
            fuzz_check(&frame[..n]);
        }
        for n in BODY_AT..frame.len() {
            let cut = with_length_fixed(frame[..n].to_vec());
            fuzz_check(&cut);
            match decode_either(&cut, is_request) {
                // A Stats reply cut after the server's rows is a whole version 1 reply (the cores' rows are a trailer).
                Ok(decoded) => assert!(has_blob || decoded.contains(" Stats {"), "cut at {n} decodes as {decoded}"),
                Err((h, e)) => {
                    assert_eq!(h, header);
                    // An empty Produce is refused as a bad value; everything else ran out of bytes.
                    assert!(e == DecodeError::Short || (has_blob && is_request && n == frame.len() - batches.len()), "cut at {n}: {e:?}");
                }
            }
        }
    }
}

/// The header bytes of a whole frame.
fn header_of(frame: &[u8]) -> Option<Header> {
    let h = frame.get(LEN_BYTES..BODY_AT)?;
    Some(Header {
        api: u16::from_be_bytes([h[0], h[1]]),
        version_or_error: u16::from_be_bytes([h[2], h[3]]),
        request_id: u64::from_be_bytes(h[4..12].try_into().unwrap()),
    })
}

#[test]
fn trailing_bytes_are_refused() {
    // Proves: a byte past the declared length, or past the last field under a matching length, is Trailing
    // (for Produce requests and Fetch replies it is simply one more byte of batches).
    let batches = two_batches();
    for (frame, is_request, has_blob) in all_frames(&batches) {
        let header = header_of(&frame);
        let longer = [&frame[..], &[0]].concat();
        assert_eq!(decode_either(&longer, is_request), Err((header, DecodeError::Trailing)));
        let fixed = with_length_fixed(longer);
        let stats_reply = !is_request && header.is_some_and(|h| h.api == Api::Stats as u16);
        if stats_reply {
            // A byte after a Stats reply's rows starts the per-core trailer (version 2), which it cannot hold.
            assert!(decode_either(&fixed, is_request).is_err());
        } else if has_blob {
            assert!(decode_either(&fixed, is_request).is_ok());
        } else {
            assert_eq!(decode_either(&fixed, is_request), Err((header, DecodeError::Trailing)));
        }
        fuzz_check(&fixed);
    }
}

#[test]
fn short_headers_and_bad_lengths_carry_no_header() {
    // Proves: without 12 header bytes, or with a length that leaves none, no header is claimed.
    for n in 0..BODY_AT {
        assert_eq!(decode_request(&vec![0; n]), Err((None, DecodeError::Short)));
        assert_eq!(decode_response(&vec![0; n]), Err((None, DecodeError::Short)));
    }
    let mut frame = request_frame(5, &Request::DeleteTopic { topic: "t" });
    frame[..LEN_BYTES].copy_from_slice(&11u32.to_be_bytes());
    assert!(matches!(decode_request(&frame), Err((None, DecodeError::BadValue(_)))));
    assert!(matches!(decode_response(&frame), Err((None, DecodeError::BadValue(_)))));
}

#[test]
fn lying_counts_fail_fast() {
    // Proves: a count larger than the rest of the body could hold is refused before anything is sized by it
    // (the fuzz target's 16 MiB malloc limit is what catches an allocation that slips through).
    let mut body = u32::MAX.to_be_bytes().to_vec();
    body.extend_from_slice(&[0, 1, b'a']);
    let frame = raw_frame(Api::Metadata as u16, VERSION, 3, &body);
    assert_eq!(decode_request(&frame), Err((header_of(&frame), DecodeError::Short)));

    // Three empty names hold exactly 6 bytes: a count of 3 fits, 4 does not.
    for (count, ok) in [(3u32, true), (4, false)] {
        let body = [&count.to_be_bytes()[..], &[0; 6]].concat();
        let frame = raw_frame(Api::Metadata as u16, VERSION, 3, &body);
        let decoded = decode_request(&frame);
        assert_eq!(decoded.is_ok(), ok, "count {count}: {decoded:?}");
    }

    let reply = |body: &[u8]| decode_response(&raw_frame(Api::Metadata as u16, 0, 3, body)).map(|_| ()).map_err(|e| e.1);
    // core_count 65535 with one core address.
    assert_eq!(reply(&[0xFF, 0xFF, 0, 0, 0, 0, 0, 0]), Err(DecodeError::Short));
    // No cores, topic_count 2^32-1 with one topic.
    assert_eq!(reply(&[0, 0, 0xFF, 0xFF, 0xFF, 0xFF, 0, 1, b't', 0, 0, 0, 0]), Err(DecodeError::Short));
    // One topic whose partition_count is 2^32-1, with two partitions.
    assert_eq!(reply(&[0, 0, 0, 0, 0, 1, 0, 1, b't', 0xFF, 0xFF, 0xFF, 0xFF, 0, 1, 0, 2]), Err(DecodeError::Short));
    assert_eq!(reply(&[0, 0, 0, 0, 0, 1, 0, 1, b't', 0, 0, 0, 2, 0, 1, 0, 2]), Ok(()));

    let metrics = |body: &[u8]| decode_response(&raw_frame(Api::Metrics as u16, 0, 3, body)).map(|_| ()).map_err(|e| e.1);
    // core_count 65535 with one empty core.
    assert_eq!(metrics(&[0xFF, 0xFF, 0, 0]), Err(DecodeError::Short));
    // One core whose metric count is 65535, with one metric (an empty name and a value).
    let one_metric = [0u8; 10];
    assert_eq!(metrics(&[&[0, 1, 0xFF, 0xFF][..], &one_metric].concat()), Err(DecodeError::Short));
    assert_eq!(metrics(&[&[0, 1, 0, 1][..], &one_metric].concat()), Ok(()));
}

#[test]
fn non_utf8_names_are_bad_utf8() {
    // Proves: a name that is not UTF-8 in any string field is BadUtf8, answered as InvalidName, with the header kept.
    let invalid = [0xC3, 0x28];
    let cases: [(Api, Vec<u8>); 5] = [
        (Api::CreateTopic, [&[0, 2][..], &invalid, &[0, 0, 0, 1]].concat()),
        (Api::Produce, [&[0, 2][..], &invalid, &[0, 0, 0, 0], &batch(1)].concat()),
        (Api::OffsetCommit, [&[0, 2][..], &invalid, &[0, 1, b't'], &[0; 12]].concat()),
        (Api::OffsetFetch, [&[0, 1, b'g'][..], &[0, 2], &invalid, &[0; 4]].concat()),
        (Api::Metadata, [&[0, 0, 0, 2, 0, 1, b'a', 0, 2][..], &invalid].concat()),
    ];
    for (api, body) in cases {
        let frame = raw_frame(api as u16, VERSION, 77, &body);
        let (header, e) = decode_request(&frame).unwrap_err();
        assert_eq!((header.map(|h| h.request_id), &e), (Some(77), &DecodeError::BadUtf8), "{api:?}");
        assert_eq!(e.code(), ErrorCode::InvalidName);
        fuzz_check(&frame);
    }
    let reply = raw_frame(Api::Fetch as u16, ErrorCode::UnknownTopic.code(), 1, &[0, 2, 0xFF, 0xFE]);
    assert_eq!(decode_response(&reply), Err((header_of(&reply), DecodeError::BadUtf8)));
}

#[test]
fn unknown_api_and_version_keep_the_header() {
    // Proves: unknown apis and versions are refused with the header (api checked first), and an error reply decodes whatever its api.
    let body = [0, 1, b't'];
    for (api, version, expected) in [
        (0, VERSION, DecodeError::UnknownApi(0)),
        (99, VERSION, DecodeError::UnknownApi(99)),
        (99, 2, DecodeError::UnknownApi(99)),
        (Api::DeleteTopic as u16, 0, DecodeError::UnsupportedVersion(0)),
        (Api::DeleteTopic as u16, 2, DecodeError::UnsupportedVersion(2)),
    ] {
        let frame = raw_frame(api, version, 42, &body);
        assert_eq!(decode_request(&frame), Err((header_of(&frame), expected)));
    }
    assert!(decode_request(&raw_frame(Api::DeleteTopic as u16, VERSION, 42, &body)).is_ok());

    let unknown_ok = raw_frame(99, 0, 1, &[]);
    assert_eq!(decode_response(&unknown_ok), Err((header_of(&unknown_ok), DecodeError::UnknownApi(99))));
    let mut reply = Vec::new();
    encode_error(&mut reply, 99, 1, ErrorCode::UnknownApi, "unknown api 99");
    let (header, resp) = decode_response(&reply).unwrap();
    assert_eq!((header.api, resp), (99, Response::Error { code: ErrorCode::UnknownApi, message: "unknown api 99" }));
    let newer = raw_frame(Api::Fetch as u16, 300, 1, &[0, 2, b'h', b'i']);
    assert_eq!(decode_response(&newer).unwrap().1, Response::Error { code: ErrorCode::Unknown(300), message: "hi" });
    fuzz_check(&newer);
}

#[test]
fn values_outside_the_protocol_are_refused() {
    // Proves: other negative specs and offsets, an empty Produce and an over-long error message are BadValue.
    let topic = [0, 1, b't', 0, 0, 0, 0];
    for spec in [-3i64, i64::MIN] {
        let frame = raw_frame(Api::ListOffsets as u16, VERSION, 1, &[&topic[..], &spec.to_be_bytes()].concat());
        assert!(matches!(decode_request(&frame), Err((Some(_), DecodeError::BadValue(_)))), "{spec}");
    }
    for api in [Api::ListOffsets, Api::OffsetFetch] {
        let frame = raw_frame(api as u16, 0, 1, &(-2i64).to_be_bytes());
        assert!(matches!(decode_response(&frame), Err((Some(_), DecodeError::BadValue(_)))), "{api:?}");
    }
    let empty_produce = raw_frame(Api::Produce as u16, VERSION, 1, &topic);
    assert!(matches!(decode_request(&empty_produce), Err((Some(_), DecodeError::BadValue(_)))));
    for flags in [2u8, 3, 0x80, 0xFF] {
        let stats = raw_frame(Api::Stats as u16, VERSION, 1, &[flags]);
        assert!(matches!(decode_request(&stats), Err((Some(_), DecodeError::BadValue(_)))), "flags {flags:#x}");
        fuzz_check(&stats);
    }
    // Version 2 must ask for per-core rows (bit 1), and knows no other bit than reset.
    for flags in [0u8, 1, 4, 6, 0x80] {
        let stats = raw_frame(Api::Stats as u16, 2, 1, &[flags]);
        assert!(matches!(decode_request(&stats), Err((Some(_), DecodeError::BadValue(_)))), "v2 flags {flags:#x}");
    }
    assert!(matches!(decode_request(&raw_frame(Api::Stats as u16, 3, 1, &[2])), Err((Some(_), DecodeError::UnsupportedVersion(3)))));
    for (message_bytes, ok) in [(MESSAGE_BYTES_MAX, true), (MESSAGE_BYTES_MAX + 1, false)] {
        let body = [&(message_bytes as u16).to_be_bytes()[..], &vec![b'x'; message_bytes]].concat();
        let frame = raw_frame(1, ErrorCode::Internal.code(), 1, &body);
        let decoded = decode_response(&frame);
        assert_eq!(decoded.is_ok(), ok, "{message_bytes}");
    }
}

#[test]
fn encoders_cut_what_the_format_cannot_say() {
    // Proves: long strings are cut at a char boundary (65535 bytes, 1024 for messages), code 0 is never sent as an
    // error, and negative timestamps and offsets past i64::MAX are clamped, so every encoded frame decodes.
    let topic = "é".repeat(40_000);
    let frame = request_frame(1, &Request::DeleteTopic { topic: &topic });
    let Ok((_, Request::DeleteTopic { topic: sent })) = decode_request(&frame) else { panic!("long topic did not decode") };
    assert_eq!((sent.len(), topic.starts_with(sent)), (65534, true));

    let message = "€".repeat(400);
    let mut reply = Vec::new();
    encode_error(&mut reply, 1, 1, ErrorCode::Unknown(0), &message);
    let Ok((header, Response::Error { code, message: sent })) = decode_response(&reply) else { panic!("long message did not decode") };
    assert_eq!((header.version_or_error, code), (ErrorCode::Internal.code(), ErrorCode::Internal));
    assert_eq!((sent.len(), message.starts_with(sent)), (1023, true));

    let frame = request_frame(1, &Request::ListOffsets { topic: "t", partition: 0, spec: OffsetSpec::Timestamp(-5) });
    assert!(matches!(decode_request(&frame), Ok((_, Request::ListOffsets { spec: OffsetSpec::Timestamp(0), .. }))));
    let frame = response_frame(Api::OffsetFetch, 1, &Response::OffsetFetch { offset: Some(u64::MAX) });
    assert_eq!(decode_response(&frame).unwrap().1, Response::OffsetFetch { offset: Some(i64::MAX as u64) });
}

#[test]
fn split_batches_on_good_short_and_lying_lengths() {
    // Proves: batches are split by batchLength alone, and a short batch, a length under 49 or past the end ends the walk with one error.
    let (one, three) = (batch(1), batch(3));
    let split = |bytes: &[u8]| split_batches(bytes).map(|b| b.map(<[u8]>::len)).collect::<Vec<_>>();
    let both = [&one[..], &three].concat();
    let pieces: Vec<&[u8]> = split_batches(&both).map(Result::unwrap).collect();
    assert_eq!(pieces, [&one[..], &three[..]]);
    for piece in pieces {
        batch::validate(piece, piece.len()).unwrap();
    }
    assert_eq!(split(&[]), []);

    let bad = |r: &Result<usize, DecodeError>| matches!(r, Err(DecodeError::BadValue(_)));
    let short = split(&one[..11]);
    assert!(short.len() == 1 && bad(&short[0]), "{short:?}");
    let short = split(&both[..both.len() - 1]);
    assert!(short.len() == 2 && short[0] == Ok(one.len()) && bad(&short[1]), "{short:?}");
    let tail = split(&[&one[..], &[0; 5]].concat());
    assert!(tail.len() == 2 && bad(&tail[1]), "{tail:?}");

    let with_length = |batch_length: i32| {
        let mut b = [&one[..], &three].concat();
        b[8..12].copy_from_slice(&batch_length.to_be_bytes());
        b
    };
    for lie in [-1, 0, 48, i32::MIN, i32::MAX] {
        let pieces = split(&with_length(lie));
        assert!(pieces.len() == 1 && bad(&pieces[0]), "batchLength {lie}: {pieces:?}");
    }
    // A length of exactly 49 is a header-only batch: split, and left for validate to refuse.
    assert_eq!(split(&with_length(49))[0], Ok(61));
}

/// An annotated hex dump, one field per line, as docs/PROTOCOL.md shows it.
fn annotated(bytes: &[u8], fields: &[(usize, &str)]) -> String {
    assert_eq!(fields.iter().map(|f| f.0).sum::<usize>(), bytes.len(), "the fields cover the bytes");
    let mut out = String::new();
    let mut at = 0;
    for &(field_bytes, meaning) in fields {
        let hex: Vec<String> = bytes[at..at + field_bytes].iter().map(|b| format!("{b:02x}")).collect();
        for (i, line) in hex.chunks(12).enumerate() {
            let note = if i == 0 { meaning } else { "" };
            out += format!("{at:04x}  {:<37}{note}", line.join(" ")).trim_end();
            out += "\n";
            at += line.len();
        }
    }
    out
}

#[test]
fn protocol_doc_example_is_what_the_codec_writes() {
    // Proves: the hex dumps in docs/PROTOCOL.md are exactly what this codec writes and reads.
    let mut b = BatchBuilder::new(TS_MS);
    b.push(TS_MS, Some(b"k"), Some(b"hello"), &[]);
    let batches = b.finish();
    let request = request_frame(7, &Request::Produce { topic: "orders", partition: 0, batches: &batches });
    let request_dump = annotated(
        &request,
        &[
            (4, "length = 98: the bytes after this field"),
            (2, "api = 1 (Produce)"),
            (2, "version = 1"),
            (8, "request_id = 7"),
            (2, "topic: 6 bytes follow"),
            (6, "\"orders\""),
            (4, "partition = 0"),
            (8, "baseOffset: any value, the server assigns offsets"),
            (4, "batchLength = 62: the bytes after this field"),
            (4, "partitionLeaderEpoch = -1"),
            (1, "magic = 2"),
            (4, "crc: CRC-32C of everything from attributes to the end"),
            (2, "attributes = 0: no compression"),
            (4, "lastOffsetDelta = 0: recordsCount - 1"),
            (8, "baseTimestamp = 1700000000000 ms"),
            (8, "maxTimestamp = 1700000000000 ms"),
            (8, "producerId = -1: none"),
            (2, "producerEpoch = -1"),
            (4, "baseSequence = -1"),
            (4, "recordsCount = 1"),
            (1, "record length = 12 (zigzag varint)"),
            (1, "record attributes = 0"),
            (1, "timestampDelta = 0"),
            (1, "offsetDelta = 0"),
            (1, "keyLength = 1"),
            (1, "key = \"k\""),
            (1, "valueLength = 5"),
            (5, "value = \"hello\""),
            (1, "headers count = 0"),
        ],
    );
    let reply = response_frame(Api::Produce, 7, &Response::Produce { base_offset: 42, last_offset: 42 });
    let reply_dump = annotated(
        &reply,
        &[
            (4, "length = 28"),
            (2, "api = 1 (Produce)"),
            (2, "error = 0: success"),
            (8, "request_id = 7"),
            (8, "base_offset = 42"),
            (8, "last_offset = 42"),
        ],
    );
    let mut error = Vec::new();
    encode_error(&mut error, Api::Fetch as u16, 8, ErrorCode::UnknownTopic, "no topic ordrs");
    let error_dump = annotated(
        &error,
        &[
            (4, "length = 28"),
            (2, "api = 2 (Fetch)"),
            (2, "error = 5 (UnknownTopic)"),
            (8, "request_id = 8"),
            (2, "message: 14 bytes follow"),
            (14, "\"no topic ordrs\""),
        ],
    );
    let (stats_request_dump, stats_reply_dump) = stats_dumps();
    let (metrics_request_dump, metrics_reply_dump) = metrics_dumps();
    let doc = include_str!("../../docs/PROTOCOL.md");
    let dumps =
        [&request_dump, &reply_dump, &error_dump, &stats_request_dump, &stats_reply_dump, &metrics_request_dump, &metrics_reply_dump];
    let missing: Vec<&str> = dumps.into_iter().map(String::as_str).filter(|d| !doc.contains(d)).collect();
    assert!(missing.is_empty(), "docs/PROTOCOL.md lacks these dumps, in this order:\n{}", missing.join("\n"));
    assert_eq!(decode_request(&request).unwrap().1, Request::Produce { topic: "orders", partition: 0, batches: &batches });
}

/// The Stats example of docs/PROTOCOL.md: a request that resets, and a reply of one row.
fn stats_dumps() -> (String, String) {
    let request = request_frame(9, &Request::Stats { reset: true, per_core: false });
    let request_dump = annotated(
        &request,
        &[(4, "length = 13"), (2, "api = 9 (Stats)"), (2, "version = 1"), (8, "request_id = 9"), (1, "flags = 1: reset after reading")],
    );
    let row = crate::stats::StageLatency {
        stage: "fsync".into(),
        count: 1000,
        p50_us: 640,
        p90_us: 710,
        p99_us: 905,
        p999_us: 1203,
        max_us: 1340,
    };
    let reply = response_frame(Api::Stats, 9, &Response::Stats { stages: vec![row], cores: vec![] });
    let reply_dump = annotated(
        &reply,
        &[
            (4, "length = 69"),
            (2, "api = 9 (Stats)"),
            (2, "error = 0: success"),
            (8, "request_id = 9"),
            (2, "count = 1 stage follows"),
            (2, "stage: 5 bytes follow"),
            (5, "\"fsync\""),
            (8, "count = 1000 requests"),
            (8, "p50_us = 640"),
            (8, "p90_us = 710"),
            (8, "p99_us = 905"),
            (8, "p999_us = 1203"),
            (8, "max_us = 1340"),
        ],
    );
    assert_eq!(decode_request(&request).unwrap().1, Request::Stats { reset: true, per_core: false });
    (request_dump, reply_dump)
}

/// The Metrics example of docs/PROTOCOL.md: a request, and a reply of two
/// cores with one metric each.
fn metrics_dumps() -> (String, String) {
    let request = request_frame(10, &Request::Metrics);
    let request_dump = annotated(
        &request,
        &[(4, "length = 12: a header, no body"), (2, "api = 10 (Metrics)"), (2, "version = 1"), (8, "request_id = 10")],
    );
    let cores = vec![vec![("strom_appends_total", 1000)], vec![("strom_connections_open", 3)]];
    let reply = response_frame(Api::Metrics, 10, &Response::Metrics { cores: cores.clone() });
    let reply_dump = annotated(
        &reply,
        &[
            (4, "length = 79"),
            (2, "api = 10 (Metrics)"),
            (2, "error = 0: success"),
            (8, "request_id = 10"),
            (2, "core_count = 2"),
            (2, "core 0: count = 1 metric follows"),
            (2, "name: 19 bytes follow"),
            (19, "\"strom_appends_total\""),
            (8, "value = 1000"),
            (2, "core 1: count = 1 metric follows"),
            (2, "name: 22 bytes follow"),
            (22, "\"strom_connections_open\""),
            (8, "value = 3"),
        ],
    );
    assert_eq!(decode_request(&request).unwrap().1, Request::Metrics);
    assert_eq!(decode_response(&reply).unwrap().1, Response::Metrics { cores });
    (request_dump, reply_dump)
}

// Proves: a Fetch reply built in place around the core's batches is byte
// for byte the frame encode_response writes, for empty and real batches.
#[test]
fn fetch_reply_front_in_place_equals_encoder() {
    for batches in [Vec::new(), one_batch_for_front()] {
        let mut in_place = vec![0u8; FETCH_REPLY_FRONT_BYTES];
        in_place.extend_from_slice(&batches);
        put_fetch_reply_front(&mut in_place, 99, 7, 1, 5);
        let mut encoded = Vec::new();
        let resp = Response::Fetch { high_watermark: 7, start_offset: 1, next_offset: 5, batches: &batches };
        encode_response(&mut encoded, Api::Fetch, 99, &resp);
        assert_eq!(in_place, encoded);
    }
}

fn one_batch_for_front() -> Vec<u8> {
    let mut b = crate::wire::batch::BatchBuilder::new(1);
    b.push(1, None, Some(b"v"), &[]);
    b.finish()
}

#[test]
fn server_info_has_its_documented_layout() {
    // Proves: the ServerInfo request is a bare header (api 13) and its reply
    // is laid out field by field as docs/PROTOCOL.md draws it.
    let request = request_frame(4, &Request::ServerInfo);
    assert_eq!(request, raw_frame(13, VERSION, 4, &[]));
    let info = server_info("always");
    let reply = response_frame(Api::ServerInfo, 4, &Response::ServerInfo(info.clone()));
    let body: Vec<u8> = [
        &[0, 1][..], // protocol_version = 1
        &[0, 5],     // server_version: 5 bytes
        b"0.1.0",
        &[0, 2], // cores = 2
        &[0, 6], // fsync: 6 bytes
        b"always",
        &1_048_588u32.to_be_bytes(), // batch_bytes_max
        &8_389_632u32.to_be_bytes(), // frame_bytes_max
        &65_536u32.to_be_bytes(),    // partitions_per_topic_max
    ]
    .concat();
    assert_eq!(reply, raw_frame(13, 0, 4, &body));
    assert_eq!(decode_response(&reply).unwrap().1, Response::ServerInfo(info));
    // Every prefix of the body is short, and a byte more is trailing.
    for cut in 0..body.len() {
        assert_eq!(decode_response(&raw_frame(13, 0, 4, &body[..cut])).err().map(|e| e.1), Some(DecodeError::Short), "cut at {cut}");
    }
    let longer = [&body[..], &[0]].concat();
    assert_eq!(decode_response(&raw_frame(13, 0, 4, &longer)).err().map(|e| e.1), Some(DecodeError::Trailing));
}
