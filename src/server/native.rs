//! Strom's native protocol as a [`Codec`]: the pure codec in
//! [`crate::proto`] mapped onto broker commands and replies.
use std::time::Duration;

use super::codec::{Codec, ConnError, ConnErrorKind, ConnState, Refusal};
use crate::broker::{Answer, Batches, BrokerError, Command, Credentials, Limits, OffsetQuery, ReplyBuf, StreamStart};
use crate::core::query::{QueryRef, QuerySpec};
use crate::proto::{self, Api, ErrorCode, OffsetSpec, Request, Response, SubscribeStart, TopicMetadata};

/// The native protocol ([`crate::proto`], docs/PROTOCOL.md).
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct NativeCodec;

/// What a native reply repeats of its request.
#[derive(Clone, Copy)]
pub(crate) struct NativeCtx {
    api: Api,
    request_id: u64,
}

impl Codec for NativeCodec {
    type Ctx = NativeCtx;

    fn fetch_headroom(&self) -> usize {
        proto::FETCH_REPLY_FRONT_BYTES
    }

    fn request_id(&self, ctx: &NativeCtx) -> u64 {
        ctx.request_id
    }

    fn frame_len(&self, buf: &[u8], frame_bytes_max: usize) -> Result<Option<usize>, ConnError> {
        proto::frame_len(buf, frame_bytes_max).map_err(|e| {
            let kind = match e {
                proto::FrameError::TooLarge { .. } => ConnErrorKind::FrameTooLarge,
                proto::FrameError::TooSmall { .. } => ConnErrorKind::Malformed,
            };
            ConnError { kind, message: e.to_string() }
        })
    }

    fn decode(&self, frame: &[u8], _state: &mut ConnState, run: &mut dyn FnMut(NativeCtx, Command<'_>)) -> Result<(), Refusal> {
        match proto::decode_request(frame) {
            Ok((h, req)) => {
                run(NativeCtx { api: req.api(), request_id: h.request_id }, command(req));
                Ok(())
            }
            Err((h, e)) => {
                let (api, id) = h.map_or((0, 0), |h| (h.api, h.request_id));
                let mut out = Vec::new();
                proto::encode_error(&mut out, api, id, e.code(), &e.to_string());
                Err(Refusal { reply: out, close: None })
            }
        }
    }

    fn encode(&self, ctx: NativeCtx, reply: Result<Answer, BrokerError>) -> ReplyBuf {
        let mut out = Vec::new();
        match reply {
            // The core read the batches after room for this header: the
            // frame is that buffer, no copy.
            Ok(Answer::Fetched(mut f)) => {
                debug_assert_eq!(f.headroom, proto::FETCH_REPLY_FRONT_BYTES, "a fetch answer without room for its header");
                proto::put_fetch_reply_front(f.bytes.as_mut_slice(), ctx.request_id, f.high_watermark, f.start_offset, f.next_offset);
                return f.bytes;
            }
            // The native protocol sends neither command (decode never makes them).
            Ok(Answer::Many(_) | Answer::Protocol(_)) => proto::encode_error(
                &mut out,
                ctx.api as u16,
                ctx.request_id,
                ErrorCode::Internal,
                "an answer the native protocol has no reply for",
            ),
            Ok(answer) => proto::encode_response(&mut out, ctx.api, ctx.request_id, &response(answer)),
            Err(e) => {
                let (code, message) = error(e);
                proto::encode_error(&mut out, ctx.api as u16, ctx.request_id, code, &message)
            }
        }
        ReplyBuf::Heap(out)
    }

    fn encode_push(&self, ctx: &NativeCtx, from_offset: u64, reply: Result<Answer, BrokerError>) -> ReplyBuf {
        match reply {
            Ok(Answer::Fetched(mut f)) => {
                debug_assert_eq!(f.headroom, proto::PUSH_FRONT_BYTES, "a push without room for its header");
                proto::put_push_front(f.bytes.as_mut_slice(), ctx.request_id, from_offset, f.next_offset, f.high_watermark);
                f.bytes
            }
            other => self.encode(*ctx, other.and(Err(BrokerError::Internal("a push that is not a fetch's answer")))),
        }
    }

    fn encode_conn_error(&self, e: &ConnError) -> Vec<u8> {
        let code = match e.kind {
            ConnErrorKind::TooManyConnections => ErrorCode::TooManyConnections,
            ConnErrorKind::Timeout => ErrorCode::Timeout,
            ConnErrorKind::FrameTooLarge => ErrorCode::FrameTooLarge,
            ConnErrorKind::Malformed => ErrorCode::Malformed,
            ConnErrorKind::Unauthenticated => ErrorCode::AuthRequired,
        };
        let mut out = Vec::new();
        // Request id 0: no request is being answered.
        proto::encode_error(&mut out, 0, 0, code, &e.message);
        out
    }
}

fn command(req: Request<'_>) -> Command<'_> {
    match req {
        Request::Produce { topic, partition, batches } => Command::Produce { topic, partition, batches: Batches::split(batches) },
        Request::Fetch { topic, partition, offset, max_bytes, max_wait_ms } => {
            Command::Fetch { topic, partition, offset, max_bytes: max_bytes as usize, max_wait: Duration::from_millis(max_wait_ms as u64) }
        }
        Request::ListOffsets { topic, partition, spec } => {
            let query = match spec {
                OffsetSpec::Earliest => OffsetQuery::Earliest,
                OffsetSpec::Latest => OffsetQuery::Latest,
                OffsetSpec::Timestamp(ts_ms) => OffsetQuery::AtTime(ts_ms),
            };
            Command::ListOffsets { topic, partition, query }
        }
        Request::Metadata { topics } => Command::Metadata { topics },
        Request::CreateTopic { topic, partitions, retention, indices } => {
            Command::CreateTopic { topic, partitions, retention: retention.unwrap_or_default(), indices }
        }
        Request::AlterTopic { topic, ms, bytes } => Command::AlterTopic { topic, ms, bytes },
        Request::DescribeTopic { topic } => Command::DescribeTopic { topic },
        Request::DeleteTopic { topic } => Command::DeleteTopic { topic },
        Request::OffsetCommit { group, topic, partition, offset } => {
            Command::CommitOffset { group, topic, partition, offset, metadata: "" }
        }
        Request::OffsetFetch { group, topic, partition } => Command::FetchOffset { group, topic, partition },
        Request::Stats { reset, per_core } => Command::Stats { reset, per_core },
        Request::Metrics => Command::Metrics,
        Request::ServerInfo => Command::ServerInfo,
        Request::Subscribe { topic, partition, credit_bytes, start } => {
            let start = match start {
                SubscribeStart::Earliest => StreamStart::Earliest,
                SubscribeStart::Latest => StreamStart::Latest,
                SubscribeStart::Offset(o) => StreamStart::Offset(o),
                SubscribeStart::Time(ms) => StreamStart::Time(ms),
                SubscribeStart::Index { name, value } => StreamStart::Index { name, value },
            };
            Command::Subscribe { topic, partition, credit_bytes, start }
        }
        Request::Grant { subscription, bytes } => Command::Grant { subscription, bytes },
        Request::Cancel { request } => Command::Cancel { request },
        Request::Authenticate { token } => Command::Authenticate { credentials: Credentials::Token(token) },
        Request::Query { topic, partition, from, to, wait_ms } => {
            let spec = QuerySpec { from: query_ref(from), to: query_ref(to), wait_ns: u64::from(wait_ms) * 1_000_000 };
            Command::Query { topic, partition, spec }
        }
    }
}

fn query_ref(end: proto::QueryEnd<'_>) -> QueryRef {
    match end {
        proto::QueryEnd::Offset(o) => QueryRef::Offset(o),
        proto::QueryEnd::Index { name, value } => QueryRef::Index { name: name.to_string(), value },
    }
}

fn response(answer: Answer) -> Response<'static> {
    match answer {
        Answer::Produced(a) => Response::Produce { base_offset: a.base_offset, last_offset: a.last_offset },
        Answer::Offset(offset) => Response::ListOffsets { offset },
        Answer::OffsetAtTime(found) => Response::ListOffsets { offset: found.map(|(offset, _)| offset) },
        Answer::Metadata { core_addrs, topics } => Response::Metadata {
            core_addrs,
            topics: topics.into_iter().map(|t| TopicMetadata { name: t.name, partition_cores: t.partition_cores }).collect(),
        },
        Answer::TopicCreated => Response::CreateTopic,
        Answer::TopicDeleted => Response::DeleteTopic,
        Answer::TopicAltered(retention) => Response::AlterTopic { retention },
        Answer::TopicDescribed(description) => Response::DescribeTopic { description },
        Answer::OffsetCommitted => Response::OffsetCommit,
        Answer::CommittedOffset(committed) => Response::OffsetFetch { offset: committed.map(|c| c.offset) },
        Answer::Stats(r) => Response::Stats { stages: r.total, cores: r.cores },
        // A core whose server task stopped answers with no metrics.
        Answer::Metrics(cores) => Response::Metrics {
            cores: cores.iter().map(|c| c.map_or_else(Vec::new, |m| m.iter().map(|(metric, v)| (metric.name(), v)).collect())).collect(),
        },
        Answer::ServerInfo { limits, frame_bytes_max } => Response::ServerInfo(server_info(limits, frame_bytes_max)),
        Answer::Queried(bounds) => Response::Query(bounds),
        Answer::Cancelled => Response::Cancel,
        Answer::Authenticated(user) => Response::Authenticate { user: user.unwrap_or_default() },
        Answer::Fetched(_) => unreachable!("fetch answers are written into their own buffer"),
        Answer::Many(_) | Answer::Protocol(_) => unreachable!("answered as an error by encode"),
    }
}

/// The ServerInfo reply: the engine's limits with this server's version and
/// largest frame. Limits past the wire's u32 are sent as u32::MAX (no server
/// allows a 4 GiB frame: `ServerConfig::validate` refuses one).
pub fn server_info(limits: Limits, frame_bytes_max: usize) -> proto::ServerInfo {
    let wire_u32 = |n: usize| u32::try_from(n).unwrap_or(u32::MAX);
    proto::ServerInfo {
        protocol_version: proto::VERSION,
        server_version: env!("CARGO_PKG_VERSION").to_string(),
        cores: u16::try_from(limits.cores).unwrap_or(u16::MAX),
        fsync: limits.fsync.to_string(),
        batch_bytes_max: wire_u32(limits.batch_bytes_max),
        frame_bytes_max: wire_u32(frame_bytes_max),
        partitions_per_topic_max: limits.partitions_per_topic_max,
    }
}

fn error(e: BrokerError) -> (ErrorCode, String) {
    match e {
        BrokerError::Failed(e) => (ErrorCode::from(&e), e.to_string()),
        BrokerError::InvalidBatch(message) => (ErrorCode::InvalidBatch, message),
        BrokerError::StorageFailed(message) => (ErrorCode::StorageFailed, message),
        BrokerError::Internal(message) => (ErrorCode::Internal, message.to_string()),
        BrokerError::Cancelled => (ErrorCode::Cancelled, "cancelled by the client".to_string()),
    }
}
