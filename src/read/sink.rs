//! Where a read's answers go, and how their bytes must be laid out.
//!
//! The read path knows nothing of who asked or in which protocol: the sink
//! says how many bytes to leave free before the batches (a codec writes its
//! reply header there, so the batches are never copied again) and whether
//! the answer may be assembled in one of the core's registered buffers (the
//! asker sends from this core's ring). A sink may take many answers (a
//! subscription is pushed one per batch of new data) and may be cancelled.
use crate::buf::AlignedBuf;
use crate::core::Reply;
use crate::error::Result;

/// Whole batches, as stored, starting with the one holding the asked offset.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReadResult {
    /// `headroom_bytes` left for the asker, then concatenated RecordBatch v2
    /// bytes (base offsets assigned). Empty when the answer is in
    /// `registered` instead.
    pub batches: Vec<u8>,
    pub headroom_bytes: usize,
    /// The same layout in one of the core's registered buffers (when the
    /// sink allowed it and one was free). Its owner gives it back with
    /// [`crate::core::Core::give_reply_buf`] once sent.
    pub registered: Option<RegisteredBatches>,
    /// The offset after the last record returned (where to read next).
    pub next_offset: u64,
    /// Offsets below this are readable now (durable under the policy).
    pub high_watermark: u64,
    pub start_offset: u64,
    /// How long the read waited parked as a long poll before it ran, in ns.
    pub parked_ns: u64,
}

/// An answer assembled in a registered buffer, so that it can be sent from
/// it. Comparing or cloning it works on its bytes (a clone is an ordinary,
/// unregistered buffer).
#[derive(Debug)]
pub struct RegisteredBatches(pub AlignedBuf);

impl Clone for RegisteredBatches {
    fn clone(&self) -> Self {
        let mut b = AlignedBuf::new(self.0.capacity());
        b.extend_from_slice(self.0.as_slice());
        RegisteredBatches(b)
    }
}

impl PartialEq for RegisteredBatches {
    fn eq(&self, other: &Self) -> bool {
        self.0.as_slice() == other.0.as_slice()
    }
}

impl Eq for RegisteredBatches {}

/// What a sink wants after an answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SinkFlow {
    /// The request is answered.
    Done,
    /// Read on from the answer's `next_offset`, waiting as the request did
    /// (a subscription: each answer pushes what arrived since the last).
    More,
}

/// The asker of a read, as the read path sees it. Called on the core thread.
pub trait ReadSink: Send {
    /// Bytes to leave free before the batches in the answer's buffer.
    fn headroom_bytes(&self) -> usize {
        0
    }
    /// Whether the answer may sit in a registered buffer of this core.
    fn registered_ok(&self) -> bool {
        false
    }
    /// Takes one answer (an error ends the request whatever is returned).
    fn deliver(&mut self, answer: Result<ReadResult>) -> SinkFlow;
    /// The asker went away: a parked read is dropped unanswered when it wakes.
    fn cancelled(&self) -> bool {
        false
    }
}

/// A sink answered once, through a reply closure: the embedded API,
/// tests, and any asker that takes one answer per request.
pub struct OnceSink {
    pub headroom_bytes: usize,
    pub registered_ok: bool,
    reply: Option<Reply<ReadResult>>,
}

impl OnceSink {
    pub fn new(headroom_bytes: usize, registered_ok: bool, reply: Reply<ReadResult>) -> OnceSink {
        OnceSink { headroom_bytes, registered_ok, reply: Some(reply) }
    }
}

impl ReadSink for OnceSink {
    fn headroom_bytes(&self) -> usize {
        self.headroom_bytes
    }

    fn registered_ok(&self) -> bool {
        self.registered_ok
    }

    fn deliver(&mut self, answer: Result<ReadResult>) -> SinkFlow {
        if let Some(reply) = self.reply.take() {
            reply(answer);
        }
        SinkFlow::Done
    }
}

/// A one-answer sink with no headroom, answered on the heap.
pub fn once(reply: Reply<ReadResult>) -> Box<dyn ReadSink> {
    Box::new(OnceSink::new(0, false, reply))
}
