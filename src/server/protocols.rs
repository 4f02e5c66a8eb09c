//! The protocols one server speaks, as one [`Codec`]: each listener's
//! connections use one of them (the native one, and Kafka's when
//! `kafka_listen` is set).
use super::codec::{Codec, ConnError, ConnState, Refusal};
use super::native::{NativeCodec, NativeCtx};
use crate::broker::{Answer, BrokerError, Command, ReplyBuf};
use crate::kafka::{KafkaCodec, KafkaCtx};

#[derive(Clone)]
pub(crate) enum AnyCodec {
    Native(NativeCodec),
    Kafka(KafkaCodec),
}

/// Boxed: a Kafka context carries its request's shape.
#[derive(Clone)]
pub(crate) enum AnyCtx {
    Native(NativeCtx),
    Kafka(Box<KafkaCtx>),
}

impl Codec for AnyCodec {
    type Ctx = AnyCtx;

    fn replies_in_order(&self) -> bool {
        match self {
            AnyCodec::Native(c) => c.replies_in_order(),
            AnyCodec::Kafka(c) => c.replies_in_order(),
        }
    }

    fn pipelines(&self, frame: &[u8]) -> bool {
        match self {
            AnyCodec::Native(c) => c.pipelines(frame),
            AnyCodec::Kafka(c) => c.pipelines(frame),
        }
    }

    fn fetch_headroom(&self) -> usize {
        match self {
            AnyCodec::Native(c) => c.fetch_headroom(),
            AnyCodec::Kafka(c) => c.fetch_headroom(),
        }
    }

    fn request_id(&self, ctx: &AnyCtx) -> u64 {
        match (self, ctx) {
            (AnyCodec::Native(c), AnyCtx::Native(x)) => c.request_id(x),
            (AnyCodec::Kafka(c), AnyCtx::Kafka(x)) => c.request_id(x),
            _ => 0,
        }
    }

    fn frame_len(&self, buf: &[u8], frame_bytes_max: usize) -> Result<Option<usize>, ConnError> {
        match self {
            AnyCodec::Native(c) => c.frame_len(buf, frame_bytes_max),
            AnyCodec::Kafka(c) => c.frame_len(buf, frame_bytes_max),
        }
    }

    fn decode(&self, frame: &[u8], state: &mut ConnState, run: &mut dyn FnMut(AnyCtx, Command<'_>)) -> Result<(), Refusal> {
        match self {
            AnyCodec::Native(c) => c.decode(frame, state, &mut |ctx, cmd| run(AnyCtx::Native(ctx), cmd)),
            AnyCodec::Kafka(c) => c.decode(frame, state, &mut |ctx, cmd| run(AnyCtx::Kafka(Box::new(ctx)), cmd)),
        }
    }

    fn closes_unauthenticated(&self) -> bool {
        match self {
            AnyCodec::Native(c) => c.closes_unauthenticated(),
            AnyCodec::Kafka(c) => c.closes_unauthenticated(),
        }
    }

    fn encode(&self, ctx: AnyCtx, reply: Result<Answer, BrokerError>) -> ReplyBuf {
        match (self, ctx) {
            (AnyCodec::Native(c), AnyCtx::Native(x)) => c.encode(x, reply),
            (AnyCodec::Kafka(c), AnyCtx::Kafka(x)) => c.encode(*x, reply),
            _ => unreachable!("a reply encoded by another protocol than its request's"),
        }
    }

    fn encode_push(&self, ctx: &AnyCtx, from_offset: u64, reply: Result<Answer, BrokerError>) -> ReplyBuf {
        match (self, ctx) {
            (AnyCodec::Native(c), AnyCtx::Native(x)) => c.encode_push(x, from_offset, reply),
            (AnyCodec::Kafka(c), AnyCtx::Kafka(x)) => c.encode_push(x, from_offset, reply),
            _ => unreachable!("a push encoded by another protocol than its request's"),
        }
    }

    fn encode_conn_error(&self, e: &ConnError) -> Vec<u8> {
        match self {
            AnyCodec::Native(c) => c.encode_conn_error(e),
            AnyCodec::Kafka(c) => c.encode_conn_error(e),
        }
    }
}
