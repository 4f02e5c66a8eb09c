//! The `kafka_request` fuzz check: arbitrary bytes as one Kafka request,
//! through the listener's own framing and decode ([`KafkaCodec`]), held
//! against the `kafka-protocol` crate's decoders for the same api and
//! version. The check lives here because the codec is crate-private;
//! `fuzz/src/lib.rs` registers it and `fuzz/src/kafka_request.rs` writes
//! its seeds.
//!
//! ```text
//! chosen input:  selector | version | rest    selector < 0x80: api = SELECTOR_ORDER[selector % 18];
//!                                             version byte < 0x80: a served version of it
//!                                             (min + byte % span), else the byte as an i8;
//!                                             rest: the header after its fixed 8 bytes
//!                                             (client id, tagged fields), then the body
//! raw input:     selector | frame             selector >= 0x80: a whole frame, length first
//! ```
//!
//! The chosen form spends every input on a served (api, version) pair,
//! where the body decoders are; the raw form covers the length prefix,
//! unknown api keys and any version.
use std::sync::{Arc, OnceLock};

use bytes::Bytes;
use kafka_protocol::messages::*;
use kafka_protocol::protocol::Decodable;

use super::KafkaShared;
use super::apis::{PRODUCE_MIN_DECODED, SERVED, serves};
use super::codec::{KafkaCodec, KafkaCtx};
use super::coordinator::{Coordinator, CoordinatorConfig};
use crate::broker::admin::Admin;
use crate::broker::{Broker, BrokerError, Command, ReplyBuf, Router};
use crate::catalog::Catalog;
use crate::config::EngineConfig;
use crate::server::codec::{Codec, ConnErrorKind, Refusal};

/// The correlation id of every chosen input, so that a reply that lost it shows.
pub const CORRELATION_ID: i32 = 0x0A0B_0C0D;
/// Selector bit of a raw input.
pub const RAW_BIT: u8 = 0x80;
/// The server's default request limit: a raw input declaring more is refused.
const FRAME_BYTES_MAX: usize = crate::proto::FRAME_BYTES_MAX_DEFAULT;
/// Bytes of the length prefix and of the header's fixed start.
const LEN_BYTES: usize = 4;
const HEADER_FIXED_BYTES: usize = 8;
/// UNSUPPORTED_VERSION, in the ApiVersions reply to a version not served.
const UNSUPPORTED_VERSION: i16 = 35;

/// The (api, version) a chosen input's first two bytes pick.
pub fn chosen(selector: u8, version_byte: u8) -> (ApiKey, i16) {
    let s = served(SELECTOR_ORDER[usize::from(selector & !RAW_BIT) % SELECTOR_ORDER.len()]);
    let version = if version_byte & 0x80 == 0 {
        let span = u8::try_from(s.max - s.min + 1).expect("a served range fits a byte");
        s.min + i16::from(version_byte % span)
    } else {
        i16::from(version_byte as i8)
    };
    (s.key, version)
}

/// The served apis in selector order: the order of [`SERVED`] when the
/// corpus was first saved, and each api added since after them, so a
/// saved input below 16 keeps its api (SASL's came with issue 16).
const SELECTOR_ORDER: [ApiKey; 18] = [
    ApiKey::Produce,
    ApiKey::Fetch,
    ApiKey::ListOffsets,
    ApiKey::Metadata,
    ApiKey::OffsetCommit,
    ApiKey::OffsetFetch,
    ApiKey::FindCoordinator,
    ApiKey::JoinGroup,
    ApiKey::Heartbeat,
    ApiKey::LeaveGroup,
    ApiKey::SyncGroup,
    ApiKey::ApiVersions,
    ApiKey::CreateTopics,
    ApiKey::DeleteTopics,
    ApiKey::InitProducerId,
    ApiKey::DescribeConfigs,
    ApiKey::SaslHandshake,
    ApiKey::SaslAuthenticate,
];

fn served(key: ApiKey) -> crate::kafka::apis::Served {
    *SERVED.iter().find(|s| s.key == key).expect("every api of SELECTOR_ORDER is served")
}

/// The chosen input of `key` at `version` (a served one), whose request
/// header ends with `rest`'s first bytes.
pub fn chosen_input(key: ApiKey, version: i16, rest: &[u8]) -> Vec<u8> {
    let at = SELECTOR_ORDER.iter().position(|&k| k == key).expect("a served api");
    let s = served(key);
    assert!((s.min..=s.max).contains(&version), "{key:?} v{version} is not served");
    [&[at as u8, (version - s.min) as u8][..], rest].concat()
}

/// A whole frame (length first) of `key` at `version` around `rest`.
pub fn frame(key: i16, version: i16, correlation_id: i32, rest: &[u8]) -> Vec<u8> {
    let len = i32::try_from(HEADER_FIXED_BYTES + rest.len()).expect("fuzz inputs are small");
    [&len.to_be_bytes()[..], &key.to_be_bytes(), &version.to_be_bytes(), &correlation_id.to_be_bytes(), rest].concat()
}

/// Whether the listener decodes `data` (a chosen or raw input) into a request.
pub fn accepts(data: &[u8]) -> bool {
    framed(data).is_some_and(|f| decode(&f).is_ok())
}

/// The frame an input stands for, once delimited as the server delimits it.
fn framed(data: &[u8]) -> Option<Vec<u8>> {
    let (&selector, rest) = data.split_first()?;
    if selector & RAW_BIT != 0 {
        let total = codec().frame_len(rest, FRAME_BYTES_MAX).ok()??;
        return rest.get(..total).map(<[u8]>::to_vec);
    }
    let (&version_byte, rest) = rest.split_first()?;
    let (key, version) = chosen(selector, version_byte);
    Some(frame(key as i16, version, CORRELATION_ID, rest))
}

/// The check: never panics, and asserts what the listener promises of the
/// input's frame (see [`check_raw`] and [`check_chosen`]).
pub fn check(data: &[u8]) {
    let Some((&selector, rest)) = data.split_first() else { return };
    if selector & RAW_BIT != 0 {
        check_raw(rest);
    } else if let Some((&version_byte, rest)) = rest.split_first() {
        check_chosen(chosen(selector, version_byte), rest);
    }
}

/// A whole frame: framing refuses a length over the limit or too short for
/// a header, and a frame it delimits is decoded or refused in the protocol's terms.
fn check_raw(buf: &[u8]) {
    let declared = buf.get(..LEN_BYTES).map(|b| i32::from_be_bytes(b.try_into().expect("4 bytes")));
    match (codec().frame_len(buf, FRAME_BYTES_MAX), declared) {
        (Ok(None), None) => {}
        (Ok(Some(total)), Some(n)) => {
            assert_eq!(Ok(total), usize::try_from(n).map(|n| n + LEN_BYTES));
            assert!((LEN_BYTES + HEADER_FIXED_BYTES..=FRAME_BYTES_MAX).contains(&total), "{total}");
            if let Some(f) = buf.get(..total) {
                // Refused or not, check_frame asserts what each outcome promises.
                let _ = check_frame(f);
            }
        }
        (Err(e), Some(n)) => {
            let too_large = usize::try_from(n).is_ok_and(|n| n + LEN_BYTES > FRAME_BYTES_MAX);
            assert_eq!(e.kind, if too_large { ConnErrorKind::FrameTooLarge } else { ConnErrorKind::Malformed }, "{n}");
            assert!(!e.message.is_empty());
        }
        (framing, declared) => panic!("{framing:?} for a declared length of {declared:?}"),
    }
}

/// A frame of a served api: decoded by the codec exactly when the crate
/// decodes its header and body, a version outside the served range is
/// refused before its body is read, and a decoded request can be answered.
fn check_chosen((key, version): (ApiKey, i16), rest: &[u8]) {
    let f = frame(key as i16, version, CORRELATION_ID, rest);
    assert_eq!(codec().frame_len(&f, usize::MAX).map_err(|e| e.message), Ok(Some(f.len())));
    let outcome = check_frame(&f);
    let expected = crate_decodes(key, version, &f[LEN_BYTES..]);
    match (serves(key, version), &outcome) {
        (Some(true), _) if key == ApiKey::Produce && version < PRODUCE_MIN_DECODED => {
            assert!(matches!(outcome, Err(Refused::Replied)), "Produce v{version}: {outcome:?}")
        }
        (Some(true), Ok(())) => assert!(expected.is_ok(), "the codec decoded what the crate does not: {expected:?}"),
        // A fresh connection has had no SaslHandshake: a well-formed
        // SaslAuthenticate closes it all the same.
        (Some(true), Err(Refused::Closed(m))) if key == ApiKey::SaslAuthenticate && expected.is_ok() => {
            assert!(m.contains("without a SaslHandshake"), "{m}")
        }
        (Some(true), Err(Refused::Closed(m))) => assert!(expected.is_err() && m.contains("malformed"), "{m}: crate {expected:?}"),
        (Some(false), _) if key == ApiKey::ApiVersions => assert!(matches!(outcome, Err(Refused::Replied)), "{outcome:?}"),
        (Some(false), Err(Refused::Closed(m))) => assert!(m.contains("not served"), "{m}"),
        (served, outcome) => panic!("{key:?} v{version} (served: {served:?}): {outcome:?}"),
    }
    // The body is never read at a version not served: one past the range is refused whatever it holds.
    let s = SERVED.iter().find(|s| s.key == key).expect("a served api");
    match check_frame(&frame(key as i16, s.max + 1, CORRELATION_ID, rest)) {
        Err(Refused::Replied) if key == ApiKey::ApiVersions => {}
        Err(Refused::Closed(m)) if key != ApiKey::ApiVersions => assert!(m.contains("not served"), "{m}"),
        other => panic!("{key:?} v{}: {other:?}", s.max + 1),
    }
}

/// How the codec refused a frame.
#[derive(Debug)]
enum Refused {
    /// With a reply in the protocol's terms; the connection stays.
    Replied,
    /// With a close, and the reason logged.
    Closed(String),
}

/// Decodes a whole frame as the server does, and checks what the codec
/// promises of any frame: one command per request, its context naming the
/// request's api, version and correlation id, an answer that encodes; a
/// refusal is a reply or a close with a reason, never both or neither.
fn check_frame(f: &[u8]) -> Result<(), Refused> {
    let (api, version) = (i16::from_be_bytes([f[4], f[5]]), i16::from_be_bytes([f[6], f[7]]));
    let correlation_id = i32::from_be_bytes([f[8], f[9], f[10], f[11]]);
    match decode(f) {
        Ok(ctxs) => {
            assert_eq!(ctxs.len(), 1, "one command per request");
            let ctx = ctxs.into_iter().next().expect("one");
            assert_eq!((ctx.key as i16, ctx.version, ctx.correlation_id), (api, version, correlation_id));
            check_answer(ctx);
            Ok(())
        }
        Err(Refusal { reply, close: None }) => {
            assert!(reply.len() >= LEN_BYTES + 4, "an empty refusal that keeps the connection");
            let len = i32::from_be_bytes(reply[..LEN_BYTES].try_into().expect("4 bytes"));
            assert_eq!(usize::try_from(len), Ok(reply.len() - LEN_BYTES), "a reply's length prefix");
            assert_eq!(i32::from_be_bytes(reply[4..8].try_into().expect("4 bytes")), correlation_id);
            if api == ApiKey::ApiVersions as i16 {
                assert_eq!(reply.get(8..10), Some(&UNSUPPORTED_VERSION.to_be_bytes()[..]), "ApiVersions v{version}");
            }
            Err(Refused::Replied)
        }
        Err(Refusal { reply, close: Some(e) }) => {
            assert!(reply.is_empty() && e.kind == ConnErrorKind::Malformed && !e.message.is_empty(), "{e:?}");
            if ApiKey::try_from(api).is_err() {
                assert!(e.message.contains("unknown Kafka api key"), "{}", e.message);
            }
            Err(Refused::Closed(e.message))
        }
    }
}

/// The contexts of the commands the codec ran for a frame (the commands
/// are dropped unrun: nothing reaches a broker).
fn decode(f: &[u8]) -> Result<Vec<KafkaCtx>, Refusal> {
    let mut ctxs = Vec::new();
    codec().decode(f, &mut Default::default(), &mut |ctx, cmd: Command<'_>| {
        if let Command::Many { commands, .. } = &cmd {
            // Every command is one partition, topic or member of the request, each at least a byte of it.
            assert!(commands.len() <= f.len(), "{} commands from {} bytes", commands.len(), f.len());
        }
        ctxs.push(ctx);
    })?;
    Ok(ctxs)
}

/// Every request can be answered: with every command failed (the answer a
/// request of any shape can get), the response is a frame of the request's
/// correlation id, except acks=0's, which is nothing.
fn check_answer(ctx: KafkaCtx) {
    let (key, correlation_id) = (ctx.key, ctx.correlation_id);
    let ReplyBuf::Heap(reply) = codec().encode(ctx, Err(BrokerError::Cancelled)) else { panic!("a Kafka reply off the heap") };
    if reply.is_empty() {
        assert_eq!(key, ApiKey::Produce, "an empty {key:?} response");
        return;
    }
    let len = i32::from_be_bytes(reply[..LEN_BYTES].try_into().expect("4 bytes"));
    assert_eq!(usize::try_from(len), Ok(reply.len() - LEN_BYTES));
    assert_eq!(i32::from_be_bytes(reply[4..8].try_into().expect("4 bytes")), correlation_id);
}

/// Whether the crate decodes the header and body of `key` at `version`.
fn crate_decodes(key: ApiKey, version: i16, body: &[u8]) -> Result<(), String> {
    let mut buf = Bytes::copy_from_slice(body);
    let b = &mut buf;
    RequestHeader::decode(b, key.request_header_version(version)).map_err(|e| e.to_string())?;
    match key {
        ApiKey::Produce => ProduceRequest::decode(b, version).map(drop),
        ApiKey::Fetch => FetchRequest::decode(b, version).map(drop),
        ApiKey::ListOffsets => ListOffsetsRequest::decode(b, version).map(drop),
        ApiKey::Metadata => MetadataRequest::decode(b, version).map(drop),
        ApiKey::OffsetCommit => OffsetCommitRequest::decode(b, version).map(drop),
        ApiKey::OffsetFetch => OffsetFetchRequest::decode(b, version).map(drop),
        ApiKey::FindCoordinator => FindCoordinatorRequest::decode(b, version).map(drop),
        ApiKey::JoinGroup => JoinGroupRequest::decode(b, version).map(drop),
        ApiKey::Heartbeat => HeartbeatRequest::decode(b, version).map(drop),
        ApiKey::LeaveGroup => LeaveGroupRequest::decode(b, version).map(drop),
        ApiKey::SyncGroup => SyncGroupRequest::decode(b, version).map(drop),
        ApiKey::ApiVersions => Ok(()),
        ApiKey::CreateTopics => CreateTopicsRequest::decode(b, version).map(drop),
        ApiKey::DeleteTopics => DeleteTopicsRequest::decode(b, version).map(drop),
        ApiKey::InitProducerId => InitProducerIdRequest::decode(b, version).map(drop),
        ApiKey::DescribeConfigs => DescribeConfigsRequest::decode(b, version).map(drop),
        ApiKey::SaslHandshake => SaslHandshakeRequest::decode(b, version).map(drop),
        ApiKey::SaslAuthenticate => SaslAuthenticateRequest::decode(b, version).map(drop),
        other => unreachable!("{other:?} is not in SERVED"),
    }
    .map_err(|e| e.to_string())
}

/// The codec the check decodes with: a listener's, whose coordinator and
/// admin threads start once per process and never get a command (decode
/// only clones their handles into the commands, which are dropped).
fn codec() -> &'static KafkaCodec {
    static CODEC: OnceLock<KafkaCodec> = OnceLock::new();
    CODEC.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("strom-kafka-fuzz-{}", std::process::id()));
        let cfg = EngineConfig::default();
        let catalog = Catalog::open_or_create(&dir, 1).expect("a catalog in the temporary directory");
        let broker = Arc::new(Broker::new(Router::new(catalog.log_count(), 1), catalog, Vec::new(), &cfg));
        let admin = Admin::start(broker, &dir).expect("the admin thread");
        let groups = Coordinator::start(CoordinatorConfig::new(dir.clone())).expect("the coordinator thread");
        // Nothing is written there again: no command runs.
        let _ = std::fs::remove_dir_all(&dir);
        KafkaCodec {
            shared: KafkaShared::new("localhost".into(), 9092, groups, admin, crate::config::KAFKA_MESSAGE_MAX_BYTES, Default::default()),
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    // Proves: the selector order names every served api once, so the
    // chosen form reaches each of them and no other.
    #[test]
    fn selector_order_is_the_served_apis() {
        let mut order: Vec<i16> = SELECTOR_ORDER.iter().map(|&k| k as i16).collect();
        let mut served: Vec<i16> = SERVED.iter().map(|s| s.key as i16).collect();
        order.sort_unstable();
        served.sort_unstable();
        assert_eq!(order, served);
    }
}
