//! The client against canned replies and a scripted server.
use std::net::TcpListener;
use std::thread;

use super::*;
use crate::catalog::TOPIC_NAME_BYTES_MAX;
use crate::proto::ErrorCode;
use crate::wire::batch;

/// A batch of `values` with its base offset set as a server would.
fn stored_batch(base_offset: u64, values: &[&[u8]]) -> Vec<u8> {
    let mut b = values_batch(values, 1_700_000_000_000);
    batch::set_base_offset(&mut b, base_offset);
    b
}

fn fetched(batches: Vec<u8>) -> FetchResult {
    FetchResult { high_watermark: 0, start_offset: 0, next_offset: 0, batches }
}

fn collect(f: &FetchResult, from: u64) -> Vec<(u64, Option<Vec<u8>>)> {
    f.records_from(from).map(|r| r.map(|(o, v)| (o, v.map(<[u8]>::to_vec))).unwrap()).collect()
}

// Proves: records_from yields every record at or past the asked offset,
// across batches, with offsets from each batch's base offset; a batch
// that ends before the offset is skipped whole.
#[test]
fn records_from_starts_mid_batch_and_spans_batches() {
    let mut bytes = stored_batch(10, &[b"a", b"b", b"c"]);
    bytes.extend(stored_batch(13, &[b"d", b"e"]));
    let f = fetched(bytes);
    let all: Vec<u64> = collect(&f, 0).into_iter().map(|(o, _)| o).collect();
    assert_eq!(all, vec![10, 11, 12, 13, 14]);
    assert_eq!(collect(&f, 12), vec![(12, Some(b"c".to_vec())), (13, Some(b"d".to_vec())), (14, Some(b"e".to_vec()))]);
    assert_eq!(collect(&f, 14), vec![(14, Some(b"e".to_vec()))]);
    assert!(collect(&f, 15).is_empty());
    assert!(collect(&fetched(Vec::new()), 0).is_empty());
}

// Proves: a null value comes back as None, an empty one as Some(empty).
#[test]
fn records_from_keeps_null_and_empty_values_apart() {
    let mut b = BatchBuilder::new(0);
    b.push(0, None, None, &[]);
    b.push(0, None, Some(b""), &[]);
    let f = fetched(b.finish());
    assert_eq!(collect(&f, 0), vec![(0, None), (1, Some(Vec::new()))]);
}

// Proves: a batch with a flipped bit, or cut short, yields one Protocol
// error naming where it is, then nothing; a skipped batch is not checked.
#[test]
fn records_from_refuses_damaged_batches() {
    let good = stored_batch(0, &[b"x"]);
    let mut bad = stored_batch(1, &[b"y"]);
    let last = bad.len() - 1;
    bad[last] ^= 1;
    let f = fetched([good.clone(), bad.clone()].concat());
    let got: Vec<_> = f.records_from(0).collect();
    assert_eq!(got.len(), 2, "one record, then one error");
    assert!(matches!(&got[0], Ok((0, Some(b"x")))));
    match &got[1] {
        Err(ClientError::Protocol(m)) => assert!(m.contains(&format!("byte {}", good.len())), "{m}"),
        other => panic!("expected a protocol error, got {other:?}"),
    }
    let f = fetched(good[..good.len() - 1].to_vec());
    let got: Vec<_> = f.records_from(0).collect();
    assert!(matches!(got.as_slice(), [Err(ClientError::Protocol(_))]), "{got:?}");
    // The damaged batch ends before offset 2, so it is skipped unread.
    let f = fetched([bad, stored_batch(2, &[b"z"])].concat());
    assert_eq!(collect(&f, 2), vec![(2, Some(b"z".to_vec()))]);
}

// Proves: batches that leave a gap in the offsets, or overlap, are
// refused rather than read as a log that skips records.
#[test]
fn records_from_refuses_gaps_between_batches() {
    for second_base in [3, 1] {
        let f = fetched([stored_batch(0, &[b"a", b"b"]), stored_batch(second_base, &[b"c"])].concat());
        let got: Vec<_> = f.records_from(0).collect();
        assert!(matches!(got.as_slice(), [Ok(_), Ok(_), Err(ClientError::Protocol(_))]), "base {second_base}: {got:?}");
    }
}

// Proves: names that break the broker's rules are refused before
// sending, in every field of every request that carries one.
#[test]
fn bad_names_are_refused_client_side() {
    assert!(check_name("events.v1_a-b").is_ok());
    let long = "x".repeat(TOPIC_NAME_BYTES_MAX + 1);
    for bad in ["", ".", "..", "a/b", "sp ace", "ü", long.as_str()] {
        assert!(matches!(check_name(bad), Err(ClientError::InvalidName(_))), "{bad:?} accepted");
    }
    let reqs = [
        Request::Produce { topic: "a b", partition: 0, batches: &[] },
        Request::Metadata { topics: vec!["ok", "../etc"] },
        Request::OffsetCommit { group: "", topic: "ok", partition: 0, offset: 0 },
        Request::OffsetFetch { group: "ok", topic: "..", partition: 0 },
    ];
    for req in &reqs {
        assert!(matches!(check_names(req), Err(ClientError::InvalidName(_))), "{req:?} accepted");
    }
    assert!(check_names(&Request::OffsetFetch { group: "g", topic: "t", partition: 0 }).is_ok());
}

// Proves: is_retriable follows the server's code and the kind of
// connection failure, and never retries the client's own refusals.
#[test]
fn retriable_errors_are_classified() {
    let server = |code| ClientError::Server { code, message: String::new() };
    assert!(server(ErrorCode::Overloaded).is_retriable());
    assert!(!server(ErrorCode::UnknownTopic).is_retriable());
    assert!(ClientError::Io(std::io::Error::from(ErrorKind::ConnectionRefused)).is_retriable());
    assert!(!ClientError::Io(std::io::Error::from(ErrorKind::InvalidInput)).is_retriable());
    assert!(!ClientError::Protocol(String::new()).is_retriable());
    assert!(!ClientError::InvalidName(String::new()).is_retriable());
}

/// A one-connection fake server: reads `requests` request frames, then
/// writes `replies` as given, in order. Returns the decoded requests' ids.
fn fake_server(requests: usize, replies: Vec<Vec<u8>>) -> (std::net::SocketAddr, thread::JoinHandle<Vec<u64>>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let handle = thread::spawn(move || {
        let (mut conn, _) = listener.accept().unwrap();
        let mut ids = Vec::new();
        for _ in 0..requests {
            let mut length = [0u8; 4];
            conn.read_exact(&mut length).unwrap();
            let mut frame = length.to_vec();
            frame.resize(4 + u32::from_be_bytes(length) as usize, 0);
            conn.read_exact(&mut frame[4..]).unwrap();
            ids.push(proto::decode_request(&frame).unwrap().0.request_id);
        }
        for r in replies {
            conn.write_all(&r).unwrap();
        }
        ids
    });
    (addr, handle)
}

fn reply(api: Api, request_id: u64, resp: &Response<'_>) -> Vec<u8> {
    let mut out = Vec::new();
    proto::encode_response(&mut out, api, request_id, resp);
    out
}

// Proves: pipelined replies are matched by id whatever their order, a
// typed helper keeps replies to other requests for recv, and a server
// error is the reply's result, not a broken connection.
#[test]
fn pipelined_replies_are_matched_by_id() {
    let replies = vec![
        reply(Api::OffsetFetch, 3, &Response::OffsetFetch { offset: Some(7) }),
        reply(Api::ListOffsets, 2, &Response::Error { code: ErrorCode::UnknownTopic, message: "no t" }),
        reply(Api::CreateTopic, 1, &Response::CreateTopic),
    ];
    let (addr, server) = fake_server(3, replies);
    let mut c = Client::connect(addr).unwrap();
    let first = c.send(&Request::CreateTopic { topic: "t", partitions: 1, retention: None, indices: vec![] }).unwrap();
    let second = c.send(&Request::ListOffsets { topic: "t", partition: 0, spec: OffsetSpec::Earliest }).unwrap();
    assert_eq!(c.fetch_offset("g", "t", 0).unwrap(), Some(7));
    assert_eq!(c.inflight(), 2);
    let r = c.recv().unwrap();
    assert_eq!((r.request_id, r.api), (second, Api::ListOffsets));
    assert!(matches!(r.result, Err(ClientError::Server { code: ErrorCode::UnknownTopic, .. })));
    let r = c.recv().unwrap();
    assert_eq!((r.request_id, r.api), (first, Api::CreateTopic));
    assert!(matches!(r.result, Ok(OwnedResponse::CreateTopic)));
    assert!(matches!(c.recv(), Err(ClientError::InvalidArgument(_))), "recv with nothing in flight must not block");
    assert_eq!(server.join().unwrap(), vec![1, 2, 3]);
}

// Proves: a reply frame over the limit is refused from its length field
// alone, and the connection is unusable afterwards.
#[test]
fn oversized_reply_is_refused_before_reading_it() {
    // Only the length and header are sent: reading the body would block the test.
    let mut huge = ((REPLY_FRAME_BYTES_MAX_DEFAULT + 1) as u32).to_be_bytes().to_vec();
    huge.extend_from_slice(&[0; 12]);
    let (addr, server) = fake_server(1, vec![huge]);
    let mut c = Client::connect(addr).unwrap();
    match c.delete_topic("t") {
        Err(ClientError::Protocol(m)) => assert!(m.contains("over the limit"), "{m}"),
        other => panic!("expected a protocol error, got {other:?}"),
    }
    assert!(c.recv_buf.capacity() < 1024, "the body was allocated");
    assert!(matches!(c.delete_topic("t"), Err(ClientError::Io(e)) if e.kind() == ErrorKind::NotConnected));
    server.join().unwrap();
}

// Proves: a reply to an id that is not in flight is a protocol error.
#[test]
fn reply_to_unknown_id_is_a_protocol_error() {
    let (addr, server) = fake_server(1, vec![reply(Api::DeleteTopic, 99, &Response::DeleteTopic)]);
    let mut c = Client::connect(addr).unwrap();
    assert!(matches!(c.delete_topic("t"), Err(ClientError::Protocol(m)) if m.contains("99")));
    server.join().unwrap();
}

// Proves: requests over the frame limit or past the in-flight limit are
// refused before anything is written, leaving the connection usable.
#[test]
fn client_limits_refuse_before_sending() {
    let (addr, server) = fake_server(1, vec![reply(Api::CreateTopic, 1, &Response::CreateTopic)]);
    let mut c = Client::connect(addr).unwrap();
    c.set_limits(ClientLimits { request_frame_bytes_max: 100, inflight_max: 1, ..ClientLimits::default() });
    let big = vec![0u8; 200];
    assert!(matches!(c.produce("t", 0, &big), Err(ClientError::InvalidArgument(_))));
    assert!(matches!(c.produce_values("t", 0, &[]), Err(ClientError::InvalidArgument(_))));
    let id = c.send(&Request::CreateTopic { topic: "t", partitions: 1, retention: None, indices: vec![] }).unwrap();
    assert!(matches!(c.send(&Request::DeleteTopic { topic: "t" }), Err(ClientError::InvalidArgument(_))));
    assert_eq!(c.recv().unwrap().request_id, id);
    assert_eq!(server.join().unwrap(), vec![1]);
}

// Proves: a peer that answers in text (an HTTP server at --addr) is named
// as not speaking Strom's protocol, quoting its first line, instead of
// reading "HTTP" as a frame length of 1.2 GB.
#[test]
fn a_text_peer_is_named_as_foreign() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let server = thread::spawn(move || {
        let (mut s, _) = listener.accept().unwrap();
        let mut buf = [0u8; 64];
        let _ = s.read(&mut buf);
        s.write_all(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n").unwrap();
    });
    let mut c = Client::connect(addr).unwrap();
    let e = c.delete_topic("t").unwrap_err().to_string();
    assert_eq!(
        e,
        format!(
            "the server at {addr} does not speak Strom's protocol (it answered \"HTTP/1.1 400 Bad Request\"); check --addr names a strom serve listener"
        )
    );
    server.join().unwrap();
}

// Proves: server errors print the server's sentence and what to do, never
// a Debug dump; I/O errors name no errno twice.
#[test]
fn error_texts_are_sentences() {
    let unknown = ClientError::Server { code: ErrorCode::UnknownTopic, message: "unknown topic \"nosuch\"".into() };
    assert_eq!(unknown.to_string(), "unknown topic \"nosuch\" (strom topic list shows the topics)");
    let bare = ClientError::Server { code: ErrorCode::Overloaded, message: String::new() };
    assert_eq!(bare.to_string(), "the server refused the request (Overloaded)");
    let refused = ClientError::Io(std::io::Error::from(ErrorKind::ConnectionRefused));
    assert_eq!(refused.to_string(), "the connection was refused (is `strom serve` running there?)");
    let timed_out = ClientError::Io(std::io::Error::from_raw_os_error(libc::ETIMEDOUT));
    assert_eq!(timed_out.to_string(), "connection timed out");
    let from_strom = crate::StromError::UnknownTopic("nosuch".into()).to_string();
    assert_eq!(from_strom, "unknown topic \"nosuch\"");
}

// Proves: a peer that never answers (a server of another protocol waiting
// for a request it understands) is named, with the time waited.
#[test]
fn a_silent_peer_is_named_with_the_wait() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let (done_tx, done_rx) = std::sync::mpsc::channel::<()>();
    let server = thread::spawn(move || {
        let (_conn, _) = listener.accept().unwrap();
        // Holds the connection open, silent, until the client has given up.
        let _ = done_rx.recv();
    });
    let mut c = Client::connect(addr).unwrap();
    c.set_timeout(Some(Duration::from_millis(100))).unwrap();
    let e = c.delete_topic("t").unwrap_err().to_string();
    done_tx.send(()).unwrap();
    server.join().unwrap();
    assert_eq!(e, format!("the server at {addr} did not answer within 100 ms (is it a strom serve, and is it overloaded or stopped?)"));
}
