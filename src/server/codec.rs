//! The seam between connections and a wire protocol.
//!
//! The connection code ([`conn`](super::conn) and its neighbours) receives
//! bytes, asks the codec where each frame ends, has it decode whole frames
//! into broker [`Command`]s, and sends the bytes the codec encodes from the
//! broker's replies. It knows nothing else of the protocol, so a second
//! listener speaking another one (Kafka) plugs in here without copying it.
use crate::broker::{Answer, BrokerError, Command, ReplyBuf};

/// A wire protocol, as the connections of a listener use it. Pure: bytes
/// in, values out (and back), no I/O. Cloned into every reply on its way,
/// so it should be small (the native one is empty).
pub(crate) trait Codec: Clone + Send + Sync + 'static {
    /// What a reply needs to know of its request (the native protocol: its
    /// api and request id).
    /// Cloned by a streaming request (a subscription), whose pushes all
    /// repeat it.
    type Ctx: Clone + Send + 'static;

    /// Whether a connection's replies go out in request order: for a
    /// protocol whose clients match replies to requests by order (Kafka's),
    /// while answers may complete out of order (a long poll behind a
    /// produce). A reply that completes before an earlier request's waits
    /// on its connection until that one is queued. The native protocol
    /// matches replies by request id.
    fn replies_in_order(&self) -> bool {
        false
    }

    /// With replies in order: whether the request in `frame` may start
    /// while the connection's earlier requests are still in flight, all of
    /// which could (else it waits for them to be answered). Kafka's broker
    /// takes a connection's requests one at a time; Strom lets a Produce
    /// behind Produces start at once, so that a producer's pipelined
    /// batches share group commits (their order per partition is kept:
    /// they reach each partition's core in order), and keeps every other
    /// request behind what came before it, as Kafka does.
    fn pipelines(&self, _frame: &[u8]) -> bool {
        true
    }

    /// Bytes a Fetch's answer reserves before its batches: the reply's
    /// header and fields, written there in place ([`Codec::encode`]), so
    /// the batches are never copied again.
    fn fetch_headroom(&self) -> usize;

    /// The request id of a request, as its context keeps it: a streaming
    /// request is known by it on its connection.
    fn request_id(&self, ctx: &Self::Ctx) -> u64;

    /// The length of the frame at the start of `buf`, header included,
    /// once enough of it arrived to tell (`None` before). An error means
    /// framing is lost: the connection gets it and is closed.
    fn frame_len(&self, buf: &[u8], frame_bytes_max: usize) -> Result<Option<usize>, ConnError>;

    /// Decodes one whole frame, as [`Codec::frame_len`] delimited it, and
    /// hands its command to `run` (borrowed from what the codec decoded,
    /// which lives only for the call). One that does not decode is
    /// answered with the refusal the codec encoded. `state` is what the
    /// codec keeps of the connection between frames.
    fn decode(&self, frame: &[u8], state: &mut ConnState, run: &mut dyn FnMut(Self::Ctx, Command<'_>)) -> Result<(), Refusal>;

    /// Whether a request before authentication (with authentication on)
    /// closes the connection, as Kafka's broker does, rather than being
    /// answered with `AuthRequired` and the connection kept.
    fn closes_unauthenticated(&self) -> bool {
        false
    }

    /// The reply frame to a request. A [`Answer::Fetched`]'s header goes
    /// into its headroom, so its buffer (registered or not) is the frame.
    fn encode(&self, ctx: Self::Ctx, reply: Result<Answer, BrokerError>) -> ReplyBuf;

    /// One push of a streaming request: a Fetch's answer from `from_offset`
    /// (its header goes into the headroom, as [`Codec::encode`] does), or
    /// the error that ends the stream.
    fn encode_push(&self, ctx: &Self::Ctx, from_offset: u64, reply: Result<Answer, BrokerError>) -> ReplyBuf;

    /// The last frame of a connection the server ends (no request is being
    /// answered).
    fn encode_conn_error(&self, e: &ConnError) -> Vec<u8>;
}

/// What a codec keeps of one connection between its frames: a few bits,
/// protocol-neutral to the connection code (Kafka's: a SaslHandshake v0
/// was answered, so the next frame is a bare SASL token).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ConnState(pub u8);

/// A frame that did not decode: the reply it gets, and whether the
/// connection ends after it (a protocol whose requests cannot be answered
/// with an error once their header is not understood, as Kafka's, closes;
/// the close is logged with the reason).
#[derive(Debug)]
pub(crate) struct Refusal {
    pub reply: Vec<u8>,
    pub close: Option<ConnError>,
}

/// Why the server ends a connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ConnError {
    pub kind: ConnErrorKind,
    pub message: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ConnErrorKind {
    /// One connection over `connections_max`.
    TooManyConnections,
    /// A frame took longer than `header_timeout` to arrive.
    Timeout,
    /// A frame declares a length over `frame_bytes_max`.
    FrameTooLarge,
    /// A frame's length cannot be right (shorter than its header).
    Malformed,
    /// A request before authenticating, on a protocol that closes for it.
    Unauthenticated,
}
