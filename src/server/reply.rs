//! Replies on their way back to their connection's core.
//!
//! Every request carries a [`Replier`]: its [`Ticket`] (the connection's
//! core, slot and generation, and the bytes the request holds) and the
//! codec context its reply needs. The broker calls it once, on whichever core (or the admin
//! thread) answered; it encodes the reply there with the connection's
//! codec and sends the frame to the connection's core's inbox (an unbounded
//! channel, bounded in practice by the in-flight caps), then rings that
//! core's doorbell (a syscall only when it sleeps).
use std::sync::mpsc;

use super::codec::Codec;
use super::stream::StreamNote;
use crate::broker::{Answer, BrokerError, ReplyBuf};
use crate::core::mailbox::CoreRoute;
use crate::metrics::requests::Api;
use crate::proto::ErrorCode;
use crate::stats::StageTrace;

/// Where a reply goes: a connection (slot and generation) on a core.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ConnKey {
    pub slot: u32,
    pub generation: u32,
}

/// An encoded reply on its way to its connection's core.
pub(crate) struct Done {
    pub conn: ConnKey,
    pub frame: ReplyBuf,
    /// Bytes the connection was charged for this request, released now.
    pub held_bytes: usize,
    /// The part of `held_bytes` that was a reservation for the reply (a
    /// Fetch's largest possible answer), charged to the connection only.
    pub reserved_bytes: usize,
    /// Reply budget of the connection's core the reply holds (0 for
    /// other requests and empty answers), taken when it was built.
    pub budget_bytes: usize,
    /// What the connection's core records once the reply is queued or sent.
    pub trace: Option<ReplyTrace>,
    /// Set for a streaming request's read (`stream.rs`), which is not a
    /// request in flight: the stream takes the frame.
    pub stream: Option<StreamNote>,
    /// The request's sequence number on its connection (its turn, where
    /// replies go in request order).
    pub seq: u64,
    /// What the connection's core counts for the request once its reply is
    /// back (None for a stream's push, which is not a request).
    pub outcome: Option<Outcome>,
}

/// A request's protocol and api, and the error code of its reply (0 for
/// none): counted into the core's [`crate::metrics::requests::RequestCounts`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Outcome {
    pub protocol: u8,
    pub api: Api,
    pub error_code: u16,
}

/// The stage times a reply brings back to its connection's core.
#[derive(Debug, Clone, Copy)]
pub(crate) enum ReplyTrace {
    /// A Produce's, up to its fdatasync's completion.
    Produce(StageTrace),
    /// A Fetch's receive time and how long it was parked as a long poll.
    Fetch { received_ns: u64, parked_ns: u64 },
}

/// The way back to a connection's core: its inbox and its doorbell.
#[derive(Clone)]
pub(crate) struct ReplyRoute {
    pub inbox: mpsc::Sender<Done>,
    pub core: CoreRoute,
}

/// A request's place on its connection: where its reply goes and what the
/// connection was charged for it. Used exactly once.
pub(crate) struct Ticket {
    pub route: ReplyRoute,
    pub conn: ConnKey,
    /// Bytes the connection was charged for the request.
    pub held_bytes: usize,
    pub reserved_bytes: usize,
    /// When the receive that finished the request's frame completed (stage clock).
    pub received_ns: u64,
    /// Its sequence number on the connection.
    pub seq: u64,
    /// The protocol and api it is counted under ([`Outcome`]).
    pub protocol: u8,
    pub api: Api,
}

impl Ticket {
    /// Sends the reply frame to the connection's core.
    pub fn send(self, frame: ReplyBuf, trace: Option<ReplyTrace>, budget_bytes: usize, error_code: u16) {
        let done = Done {
            conn: self.conn,
            frame,
            held_bytes: self.held_bytes,
            reserved_bytes: self.reserved_bytes,
            budget_bytes,
            trace,
            stream: None,
            seq: self.seq,
            outcome: Some(Outcome { protocol: self.protocol, api: self.api, error_code }),
        };
        // The receiver lives as long as its core's server task; once that is
        // gone nobody is left to answer, and dropping the reply is right.
        if self.route.inbox.send(done).is_ok() {
            self.route.core.ring();
        }
    }
}

/// Encodes the broker's reply to one request with the connection's codec,
/// on whichever thread answered, and sends it to the connection's core.
pub(crate) struct Replier<C: Codec> {
    pub codec: C,
    pub ctx: C::Ctx,
    pub ticket: Ticket,
}

impl<C: Codec> Replier<C> {
    /// A Produce's stages are recorded once its reply is sent, a Fetch's
    /// latency once it is queued.
    pub fn answer(self, reply: Result<Answer, BrokerError>) {
        let received_ns = self.ticket.received_ns;
        let budget_bytes = match &reply {
            Ok(Answer::Fetched(f)) => f.budget_bytes,
            // A Many's reply holds its Fetches' room.
            Ok(Answer::Many(all)) => all.iter().map(|r| if let Ok(Answer::Fetched(f)) = r { f.budget_bytes } else { 0 }).sum(),
            _ => 0,
        };
        let trace = match &reply {
            Ok(Answer::Produced(a)) => Some(ReplyTrace::Produce(StageTrace { received_ns, ..a.trace })),
            Ok(Answer::Fetched(f)) => Some(ReplyTrace::Fetch { received_ns, parked_ns: f.parked_ns }),
            // A Many is traced as its first Produce or Fetch: the stages of
            // one request, as the native protocol's are.
            Ok(Answer::Many(all)) => all.iter().find_map(|r| match r {
                Ok(Answer::Produced(a)) => Some(ReplyTrace::Produce(StageTrace { received_ns, ..a.trace })),
                Ok(Answer::Fetched(f)) => Some(ReplyTrace::Fetch { received_ns, parked_ns: f.parked_ns }),
                _ => None,
            }),
            _ => None,
        };
        let error_code = error_code(&reply);
        let frame = self.codec.encode(self.ctx, reply);
        // Nothing is sent for an empty reply, so nothing would record it.
        let trace = trace.filter(|_| !frame.is_empty());
        self.ticket.send(frame, trace, budget_bytes, error_code);
    }
}

/// The error code a reply is counted under: the native protocol's code of
/// its error, or of the first error among a Many's answers; 0 if none.
fn error_code(reply: &Result<Answer, BrokerError>) -> u16 {
    let code = |e: &BrokerError| match e {
        BrokerError::Failed(e) => ErrorCode::from(e),
        BrokerError::InvalidBatch(_) => ErrorCode::InvalidBatch,
        BrokerError::StorageFailed(_) => ErrorCode::StorageFailed,
        BrokerError::Internal(_) => ErrorCode::Internal,
        BrokerError::Cancelled => ErrorCode::Cancelled,
    };
    match reply {
        Err(e) => code(e).code(),
        Ok(Answer::Many(all)) => all.iter().find_map(|r| r.as_ref().err()).map_or(0, |e| code(e).code()),
        Ok(_) => 0,
    }
}
