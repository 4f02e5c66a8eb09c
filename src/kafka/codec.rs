//! The Kafka protocol as a [`Codec`]: framing, request headers, and the
//! dispatch of each API to its module.
//!
//! A frame is a 4-byte big-endian length, then the request header (api
//! key, version, correlation id, client id, and tagged fields from header
//! version 2), then the body. The length is checked against the server's
//! `frame_bytes_max` before anything is allocated for it; the body is
//! decoded by the `kafka-protocol` crate (patched to refuse array counts
//! past the bytes left: vendor/kafka-protocol/README.strom.md). A frame
//! that cannot be answered in the protocol's own terms (garbage, an
//! unknown API, a version not served) closes the connection, with a log
//! line saying why, as Kafka's broker does; ApiVersions at a version not
//! served gets UNSUPPORTED_VERSION with the table, as KIP-511 asks.
use std::sync::Arc;

use bytes::{BufMut, Bytes, BytesMut};
use kafka_protocol::messages::{ApiKey, RequestHeader, ResponseHeader};
use kafka_protocol::protocol::{Decodable, Encodable};

use super::apis::{self, PRODUCE_MIN_DECODED};
use super::{KafkaShared, admin, data, groups, sasl};
use crate::broker::{Answer, BrokerError, Command, ReplyBuf};
use crate::server::codec::{Codec, ConnError, ConnErrorKind, ConnState, Refusal};

/// Bytes of a frame's length prefix.
const LEN_BYTES: usize = 4;
/// The request header's fixed start: api key, version, correlation id.
const HEADER_FIXED_BYTES: usize = 8;

/// The Kafka protocol, for the connections of a `--kafka-listen` listener.
#[derive(Clone)]
pub(crate) struct KafkaCodec {
    pub(crate) shared: Arc<KafkaShared>,
}

/// What a Kafka response needs of its request.
#[derive(Clone)]
pub(crate) struct KafkaCtx {
    pub key: ApiKey,
    pub version: i16,
    pub correlation_id: i32,
    pub shape: Shape,
}

/// How the answers of a request's commands map back onto its response.
#[derive(Clone)]
pub(crate) enum Shape {
    ApiVersions {
        error: i16,
    },
    FindCoordinator {
        key: String,
    },
    Metadata(admin::MetadataShape),
    CreateTopics(admin::TopicsShape),
    DeleteTopics(admin::TopicsShape),
    DescribeConfigs(admin::ConfigsShape),
    Produce(data::ProduceShape),
    Fetch(data::FetchShape),
    ListOffsets(data::ListOffsetsShape),
    Group(groups::GroupShape),
    SaslHandshake {
        error: i16,
    },
    SaslAuthenticate,
    /// A version 0 handshake's bare token (`sasl.rs`).
    SaslRaw,
}

/// A slot of a response: the answer of command `i` of the request's Many,
/// or an error found while decoding (no command was run for it).
#[derive(Debug, Clone, Copy)]
pub(crate) enum Slot {
    Cmd(usize),
    Err(i16),
}

impl Codec for KafkaCodec {
    type Ctx = KafkaCtx;

    /// Clients pipeline, and expect responses in request order.
    fn replies_in_order(&self) -> bool {
        true
    }

    /// A Produce behind Produces starts at once; anything else waits for
    /// the connection's requests before it (see [`Codec::pipelines`]).
    fn pipelines(&self, frame: &[u8]) -> bool {
        frame.get(LEN_BYTES..LEN_BYTES + 2) == Some(&(ApiKey::Produce as i16).to_be_bytes()[..])
    }

    /// A Kafka Fetch answer is one response around many partitions'
    /// batches: the codec writes it whole ([`Command::Many`]'s Fetches
    /// have no headroom).
    fn fetch_headroom(&self) -> usize {
        0
    }

    fn request_id(&self, ctx: &KafkaCtx) -> u64 {
        ctx.correlation_id as u32 as u64
    }

    fn frame_len(&self, buf: &[u8], frame_bytes_max: usize) -> Result<Option<usize>, ConnError> {
        let Some(len) = buf.get(..LEN_BYTES) else { return Ok(None) };
        let declared = i32::from_be_bytes(len.try_into().expect("4 bytes"));
        let total = usize::try_from(declared).ok().map(|n| n + LEN_BYTES);
        match total {
            Some(total) if total > frame_bytes_max => Err(ConnError {
                kind: ConnErrorKind::FrameTooLarge,
                message: format!("a Kafka request of {total} bytes is over the limit of {frame_bytes_max}"),
            }),
            Some(total) if total >= LEN_BYTES + HEADER_FIXED_BYTES => Ok(Some(total)),
            _ => Err(ConnError {
                kind: ConnErrorKind::Malformed,
                message: format!("a Kafka request length of {declared} bytes cannot hold a request header"),
            }),
        }
    }

    /// Kafka's broker closes a connection that sends anything but
    /// ApiVersions and SASL before authenticating.
    fn closes_unauthenticated(&self) -> bool {
        true
    }

    fn decode(&self, frame: &[u8], state: &mut ConnState, run: &mut dyn FnMut(KafkaCtx, Command<'_>)) -> Result<(), Refusal> {
        if sasl::raw_next(*state) {
            return sasl::raw_token(frame, state, run);
        }
        let body = &frame[LEN_BYTES..];
        let api = i16::from_be_bytes([body[0], body[1]]);
        let version = i16::from_be_bytes([body[2], body[3]]);
        let correlation_id = i32::from_be_bytes([body[4], body[5], body[6], body[7]]);
        let Ok(key) = ApiKey::try_from(api) else { return Err(close(format!("unknown Kafka api key {api}"))) };
        match apis::serves(key, version) {
            None => return Err(close(format!("Kafka api {key:?} (key {api}) is not served"))),
            Some(false) if key == ApiKey::ApiVersions => {
                let unsupported = kafka_protocol::ResponseError::UnsupportedVersion.code();
                let reply =
                    admin::api_versions(&KafkaCtx { key, version: 0, correlation_id, shape: Shape::ApiVersions { error: unsupported } });
                return Err(Refusal { reply, close: None });
            }
            Some(false) => return Err(close(format!("Kafka api {key:?} version {version} is not served"))),
            Some(true) if key == ApiKey::Produce && version < PRODUCE_MIN_DECODED => {
                return Err(Refusal { reply: data::produce_unsupported(frame, version, correlation_id), close: None });
            }
            Some(true) => {}
        }
        // One copy of the frame: the decoded request's strings and record
        // batches are slices of it.
        let mut buf = Bytes::copy_from_slice(body);
        let header = RequestHeader::decode(&mut buf, key.request_header_version(version))
            .map_err(|e| close(format!("a malformed Kafka request header ({key:?} v{version}): {e}")))?;
        let base = Base { key, version, correlation_id: header.correlation_id };
        let malformed = |e: String| close(format!("a malformed Kafka {key:?} v{version} request: {e}"));
        match key {
            ApiKey::ApiVersions => {
                run(base.ctx(Shape::ApiVersions { error: 0 }), nothing());
            }
            ApiKey::Metadata => admin::metadata(base, decode(&mut buf, version).map_err(malformed)?, run),
            ApiKey::FindCoordinator => admin::find_coordinator(base, decode(&mut buf, version).map_err(malformed)?, run),
            ApiKey::CreateTopics => admin::create_topics(base, decode(&mut buf, version).map_err(malformed)?, run),
            ApiKey::DeleteTopics => admin::delete_topics(base, decode(&mut buf, version).map_err(malformed)?, run),
            ApiKey::DescribeConfigs => admin::describe_configs(base, decode(&mut buf, version).map_err(malformed)?, run),
            ApiKey::Produce => data::produce(base, decode(&mut buf, version).map_err(malformed)?, run),
            ApiKey::Fetch => data::fetch(base, decode(&mut buf, version).map_err(malformed)?, run),
            ApiKey::ListOffsets => data::list_offsets(base, decode(&mut buf, version).map_err(malformed)?, run),
            ApiKey::JoinGroup => {
                let client_id = header.client_id.as_ref().map_or("", |c| c.as_str());
                groups::join(base, client_id, decode(&mut buf, version).map_err(malformed)?, &self.shared, run)
            }
            ApiKey::SyncGroup => groups::sync(base, decode(&mut buf, version).map_err(malformed)?, &self.shared, run),
            ApiKey::Heartbeat => groups::heartbeat(base, decode(&mut buf, version).map_err(malformed)?, &self.shared, run),
            ApiKey::LeaveGroup => groups::leave(base, decode(&mut buf, version).map_err(malformed)?, &self.shared, run),
            ApiKey::OffsetCommit => groups::offset_commit(base, decode(&mut buf, version).map_err(malformed)?, &self.shared, run),
            ApiKey::OffsetFetch => groups::offset_fetch(base, decode(&mut buf, version).map_err(malformed)?, run),
            ApiKey::InitProducerId => groups::init_producer_id(base, decode(&mut buf, version).map_err(malformed)?, &self.shared, run),
            ApiKey::SaslHandshake => {
                sasl::handshake(base, decode(&mut buf, version).map_err(malformed)?, self.shared.auth.enabled(), state, run)
            }
            ApiKey::SaslAuthenticate => sasl::authenticate(base, decode(&mut buf, version).map_err(malformed)?, state, run)?,
            _ => return Err(close(format!("Kafka api {key:?} is not served yet"))),
        }
        Ok(())
    }

    fn encode(&self, ctx: KafkaCtx, reply: Result<Answer, BrokerError>) -> ReplyBuf {
        match ctx.shape {
            Shape::SaslHandshake { error } => return ReplyBuf::Heap(sasl::handshake_response(&ctx, error)),
            Shape::SaslAuthenticate | Shape::SaslRaw => return ReplyBuf::Heap(sasl::authenticate_response(&ctx, reply)),
            _ => {}
        }
        let answers = match reply {
            Ok(Answer::Many(answers)) => Ok(answers),
            // A protocol job's answer: its one reply.
            Ok(a @ Answer::Protocol(_)) => Ok(vec![Ok(a)]),
            Ok(_) => Err(BrokerError::Internal("a Kafka request answered without its commands' answers")),
            Err(e) => Err(e),
        };
        let frame = match &ctx.shape {
            Shape::ApiVersions { .. } => admin::api_versions(&ctx),
            Shape::FindCoordinator { key } => admin::coordinator(&ctx, key, &self.shared),
            Shape::Metadata(s) => admin::metadata_response(&ctx, s, answers, &self.shared),
            Shape::CreateTopics(s) => admin::create_topics_response(&ctx, s, answers),
            Shape::DeleteTopics(s) => admin::delete_topics_response(&ctx, s, answers),
            Shape::DescribeConfigs(s) => admin::describe_configs_response(&ctx, s, answers, self.shared.batch_bytes_max),
            Shape::Produce(s) => data::produce_response(&ctx, s, answers),
            Shape::Fetch(s) => data::fetch_response(&ctx, s, answers),
            Shape::ListOffsets(s) => data::list_offsets_response(&ctx, s, answers),
            Shape::Group(s) => groups::response(&ctx, s, answers),
            Shape::SaslHandshake { .. } | Shape::SaslAuthenticate | Shape::SaslRaw => unreachable!("answered above"),
        };
        ReplyBuf::Heap(frame)
    }

    fn encode_push(&self, ctx: &KafkaCtx, _from_offset: u64, _reply: Result<Answer, BrokerError>) -> ReplyBuf {
        // Kafka has no streaming requests: decode never makes one.
        tracing::error!(key = ?ctx.key, "a push on a Kafka connection");
        ReplyBuf::Heap(Vec::new())
    }

    /// Kafka has no error frame outside a response: the connection just
    /// closes (the server logs why, with the client's address).
    fn encode_conn_error(&self, _e: &ConnError) -> Vec<u8> {
        Vec::new()
    }
}

/// What every request's context starts from.
#[derive(Clone, Copy)]
pub(crate) struct Base {
    pub key: ApiKey,
    pub version: i16,
    pub correlation_id: i32,
}

impl Base {
    pub(crate) fn ctx(self, shape: Shape) -> KafkaCtx {
        KafkaCtx { key: self.key, version: self.version, correlation_id: self.correlation_id, shape }
    }
}

/// A request answered by the codec alone: no command runs.
pub(crate) fn nothing() -> Command<'static> {
    Command::Many { commands: Vec::new(), release_at_bytes: None }
}

fn decode<T: Decodable>(buf: &mut Bytes, version: i16) -> Result<T, String> {
    T::decode(buf, version).map_err(|e| e.to_string())
}

pub(crate) fn close(message: String) -> Refusal {
    Refusal { reply: Vec::new(), close: Some(ConnError { kind: ConnErrorKind::Malformed, message }) }
}

/// The response frame: length, header (its version as the api's), body.
/// A body the crate refuses to encode at this version is a bug of ours:
/// logged, and answered with nothing (the client times the request out).
pub(crate) fn frame(ctx: &KafkaCtx, body: &impl Encodable) -> Vec<u8> {
    let mut buf = BytesMut::with_capacity(256);
    buf.put_i32(0);
    let header = ResponseHeader::default().with_correlation_id(ctx.correlation_id);
    // ApiVersions' response header is always version 0 (KIP-511).
    let header_version = if ctx.key == ApiKey::ApiVersions { 0 } else { ctx.key.response_header_version(ctx.version) };
    let encoded = header.encode(&mut buf, header_version).and_then(|()| body.encode(&mut buf, ctx.version));
    if let Err(e) = encoded {
        tracing::error!(key = ?ctx.key, version = ctx.version, %e, "a Kafka response that does not encode");
        return Vec::new();
    }
    let len = (buf.len() - LEN_BYTES) as i32;
    buf[..LEN_BYTES].copy_from_slice(&len.to_be_bytes());
    buf.to_vec()
}

/// The answer in `slot`: its command's, or the error found at decode.
pub(crate) fn slot_answer(slot: Slot, answers: &Result<Vec<Result<Answer, BrokerError>>, BrokerError>) -> Result<&Answer, i16> {
    match (slot, answers) {
        (Slot::Err(code), _) => Err(code),
        (Slot::Cmd(_), Err(e)) => Err(super::errors::code(e)),
        (Slot::Cmd(i), Ok(all)) => match all.get(i) {
            Some(Ok(a)) => Ok(a),
            Some(Err(e)) => Err(super::errors::code(e)),
            None => Err(kafka_protocol::ResponseError::UnknownServerError.code()),
        },
    }
}
