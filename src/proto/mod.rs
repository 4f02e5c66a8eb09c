//! The native wire protocol, version 1: the frames clients and the server
//! exchange over TCP, as a pure codec. `docs/PROTOCOL.md` is the reference
//! for client writers; this module is the one implementation of it.
//!
//! ```text
//! request:   length u32 | api u16 | version u16 | request_id u64 | body
//! response:  length u32 | api u16 | error u16   | request_id u64 | body
//!            (error != 0: the body is one string, the message)
//! string:    bytes u16 | that many bytes of UTF-8
//! ```
//!
//! All integers are big-endian, like the RecordBatch v2 a Produce carries;
//! `length` counts the bytes after itself. Decoding never does I/O, never
//! panics, never reads past the slice it is given, and never sizes an
//! allocation from a count the rest of the input could not hold. Every value
//! has exactly one encoding, so whatever decodes re-encodes to the same bytes
//! ([`fuzz_check`] holds the codec to that).

#[cfg(test)]
mod codes_tests;
mod decode;
mod encode;
mod query;
mod stream;
#[cfg(test)]
mod tests;
mod topic;

pub use query::QueryEnd;

use std::fmt;

use crate::catalog::{TopicDescription, TopicRetention};
use crate::error::StromError;
use crate::stats::StageLatency;
use crate::wire::batch::BATCH_HEADER_BYTES;

pub use decode::{decode_request, decode_response};
pub use encode::{FETCH_REPLY_FRONT_BYTES, encode_error, encode_request, encode_response, put_fetch_reply_front};
pub use stream::{PUSH_FRONT_BYTES, SubscribeStart, put_push_front};
pub use topic::CREATE_TOPIC_RETENTION_VERSION;

pub const VERSION: u16 = 1;
/// The `length` field that starts every frame.
pub const LEN_BYTES: usize = 4;
/// The header after `length`: api, version or error, request id.
pub const HEADER_BYTES: usize = 12;
/// The default largest `length`: 8 MiB of batches in one Produce, plus room
/// for its header, topic and partition.
pub const FRAME_BYTES_MAX_DEFAULT: usize = (8 << 20) + 1024;
/// The longest string the u16 length prefix can describe.
pub const STRING_BYTES_MAX: usize = u16::MAX as usize;
/// The longest error message: encoders cut longer ones, decoders refuse them,
/// so a reply to a bad request stays small whatever the request held.
pub const MESSAGE_BYTES_MAX: usize = 1024;

/// The wire's "no offset" in ListOffsets and OffsetFetch replies.
const NO_OFFSET: i64 = -1;
/// The Stats request's flags: bit 0 asks for a reset after reading; bit 1
/// (version 2 only) for each core's rows as well; the other bits must be 0
/// (so every request has one encoding).
const STATS_FLAG_RESET: u8 = 1;
const STATS_FLAG_PER_CORE: u8 = 2;
/// The Stats version that may ask for each core's rows.
const STATS_PER_CORE_VERSION: u16 = 2;
/// ListOffsets specs; timestamps are the values >= 0.
const SPEC_EARLIEST: i64 = -2;
const SPEC_LATEST: i64 = -1;
/// `baseOffset` and `batchLength` precede the bytes `batchLength` counts.
const BATCH_PREFIX_BYTES: usize = 12;
/// The smallest `batchLength`: one that ends the batch right after its fixed header.
const BATCH_LENGTH_MIN: usize = BATCH_HEADER_BYTES - BATCH_PREFIX_BYTES;

const _: () = assert!(BATCH_LENGTH_MIN == 49);
const _: () = assert!(MESSAGE_BYTES_MAX <= STRING_BYTES_MAX);
// The 1 KiB over 8 MiB must hold a Produce's header, longest topic name (249 bytes) and partition.
const _: () = assert!(FRAME_BYTES_MAX_DEFAULT >= (8 << 20) + HEADER_BYTES + 2 + 249 + 4);

/// The operation a frame asks for (or answers). Numbered on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u16)]
pub enum Api {
    Produce = 1,
    Fetch = 2,
    ListOffsets = 3,
    Metadata = 4,
    CreateTopic = 5,
    DeleteTopic = 6,
    OffsetCommit = 7,
    OffsetFetch = 8,
    Stats = 9,
    Metrics = 10,
    ServerInfo = 13,
    AlterTopic = 11,
    DescribeTopic = 12,
    Query = 14,
    // The streaming apis (`stream.rs`).
    Subscribe = 15,
    Grant = 16,
    Cancel = 17,
    /// Authenticates the connection with a token (docs/PROTOCOL.md).
    Authenticate = 18,
}

impl Api {
    pub fn from_u16(v: u16) -> Option<Api> {
        Some(match v {
            1 => Api::Produce,
            2 => Api::Fetch,
            3 => Api::ListOffsets,
            4 => Api::Metadata,
            5 => Api::CreateTopic,
            6 => Api::DeleteTopic,
            7 => Api::OffsetCommit,
            8 => Api::OffsetFetch,
            9 => Api::Stats,
            10 => Api::Metrics,
            13 => Api::ServerInfo,
            11 => Api::AlterTopic,
            12 => Api::DescribeTopic,
            14 => Api::Query,
            15 => Api::Subscribe,
            16 => Api::Grant,
            17 => Api::Cancel,
            18 => Api::Authenticate,
            _ => return None,
        })
    }
}

/// Why a request failed, as the `error` field of its reply carries it.
/// Success (code 0) is the absence of an `ErrorCode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorCode {
    Malformed,
    UnsupportedVersion,
    UnknownApi,
    FrameTooLarge,
    UnknownTopic,
    UnknownPartition,
    InvalidName,
    TopicExists,
    InvalidBatch,
    OffsetOutOfRange,
    DiskFull,
    StorageFailed,
    Corrupt,
    Overloaded,
    ShuttingDown,
    TooManyConnections,
    InvalidArgument,
    Timeout,
    Internal,
    /// A batch's named index values are missing, malformed or decreasing.
    BadIndexValue,
    /// A streaming request ended because its client cancelled it.
    Cancelled,
    /// An idempotent producer's batch after a gap in its sequence numbers.
    OutOfOrderSequence,
    /// An idempotent producer's batch from an older (fenced) epoch.
    InvalidProducerEpoch,
    /// Authentication is on and the connection has not authenticated.
    AuthRequired,
    /// The token names no user; the connection is closed after the reply.
    AuthFailed,
    /// The user lacks the permission the request needs.
    NotAuthorized,
    /// A write (produce, topic admin, a committed offset) to a read-only server.
    ReadOnly,
    /// A code this version does not know, kept so that a newer server's
    /// replies still decode.
    Unknown(u16),
}

impl ErrorCode {
    pub fn code(self) -> u16 {
        match self {
            ErrorCode::Malformed => 1,
            ErrorCode::UnsupportedVersion => 2,
            ErrorCode::UnknownApi => 3,
            ErrorCode::FrameTooLarge => 4,
            ErrorCode::UnknownTopic => 5,
            ErrorCode::UnknownPartition => 6,
            ErrorCode::InvalidName => 7,
            ErrorCode::TopicExists => 8,
            ErrorCode::InvalidBatch => 9,
            ErrorCode::OffsetOutOfRange => 10,
            ErrorCode::DiskFull => 11,
            ErrorCode::StorageFailed => 12,
            ErrorCode::Corrupt => 13,
            ErrorCode::Overloaded => 14,
            ErrorCode::ShuttingDown => 15,
            ErrorCode::TooManyConnections => 16,
            ErrorCode::InvalidArgument => 17,
            ErrorCode::Timeout => 18,
            ErrorCode::Internal => 19,
            ErrorCode::BadIndexValue => 20,
            ErrorCode::Cancelled => 21,
            ErrorCode::OutOfOrderSequence => 22,
            ErrorCode::InvalidProducerEpoch => 23,
            ErrorCode::AuthRequired => 24,
            ErrorCode::AuthFailed => 25,
            ErrorCode::NotAuthorized => 26,
            ErrorCode::ReadOnly => 27,
            ErrorCode::Unknown(v) => v,
        }
    }

    /// `None` for 0, which means success; `Unknown` for codes past this version's.
    pub fn from_code(v: u16) -> Option<ErrorCode> {
        Some(match v {
            0 => return None,
            1 => ErrorCode::Malformed,
            2 => ErrorCode::UnsupportedVersion,
            3 => ErrorCode::UnknownApi,
            4 => ErrorCode::FrameTooLarge,
            5 => ErrorCode::UnknownTopic,
            6 => ErrorCode::UnknownPartition,
            7 => ErrorCode::InvalidName,
            8 => ErrorCode::TopicExists,
            9 => ErrorCode::InvalidBatch,
            10 => ErrorCode::OffsetOutOfRange,
            11 => ErrorCode::DiskFull,
            12 => ErrorCode::StorageFailed,
            13 => ErrorCode::Corrupt,
            14 => ErrorCode::Overloaded,
            15 => ErrorCode::ShuttingDown,
            16 => ErrorCode::TooManyConnections,
            17 => ErrorCode::InvalidArgument,
            18 => ErrorCode::Timeout,
            19 => ErrorCode::Internal,
            20 => ErrorCode::BadIndexValue,
            21 => ErrorCode::Cancelled,
            22 => ErrorCode::OutOfOrderSequence,
            23 => ErrorCode::InvalidProducerEpoch,
            24 => ErrorCode::AuthRequired,
            25 => ErrorCode::AuthFailed,
            26 => ErrorCode::NotAuthorized,
            27 => ErrorCode::ReadOnly,
            other => ErrorCode::Unknown(other),
        })
    }

    /// Whether the same request may succeed if sent again later, unchanged.
    pub fn retriable(self) -> bool {
        matches!(self, ErrorCode::DiskFull | ErrorCode::Overloaded | ErrorCode::ShuttingDown | ErrorCode::TooManyConnections)
    }
}

impl From<&StromError> for ErrorCode {
    fn from(e: &StromError) -> Self {
        // No wildcard: a new StromError variant must be given its code here.
        match e {
            StromError::InvalidBatch(_) => ErrorCode::InvalidBatch,
            StromError::UnknownTopic(_) => ErrorCode::UnknownTopic,
            StromError::UnknownPartition { .. } => ErrorCode::UnknownPartition,
            StromError::TopicExists(_) => ErrorCode::TopicExists,
            StromError::InvalidTopicName(_) => ErrorCode::InvalidName,
            StromError::OffsetOutOfRange { .. } => ErrorCode::OffsetOutOfRange,
            StromError::DiskFull { .. } => ErrorCode::DiskFull,
            StromError::LogFailed { .. } | StromError::Io { .. } => ErrorCode::StorageFailed,
            StromError::Corrupt { .. } => ErrorCode::Corrupt,
            StromError::Overloaded(_) => ErrorCode::Overloaded,
            StromError::InvalidArgument(_) => ErrorCode::InvalidArgument,
            StromError::BadIndexValue { .. } => ErrorCode::BadIndexValue,
            StromError::Cancelled => ErrorCode::Cancelled,
            StromError::OutOfOrderSequence { .. } => ErrorCode::OutOfOrderSequence,
            StromError::InvalidProducerEpoch { .. } => ErrorCode::InvalidProducerEpoch,
            StromError::ShuttingDown => ErrorCode::ShuttingDown,
            StromError::AuthRequired => ErrorCode::AuthRequired,
            StromError::AuthFailed => ErrorCode::AuthFailed,
            StromError::NotAuthorized { .. } => ErrorCode::NotAuthorized,
            StromError::ReadOnly(_) => ErrorCode::ReadOnly,
            StromError::Unsupported(_) | StromError::BadDataDir(_) => ErrorCode::Internal,
        }
    }
}

/// Which records a ListOffsets asks for; on the wire an i64: -2, -1, or a
/// timestamp >= 0.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OffsetSpec {
    Earliest,
    Latest,
    /// The first offset whose timestamp is at or after this many ms since
    /// the epoch. The wire has no room for a negative one: it is sent as 0.
    Timestamp(i64),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request<'a> {
    /// `batches` is one or more RecordBatch v2 back to back (see [`split_batches`]).
    Produce {
        topic: &'a str,
        partition: u32,
        batches: &'a [u8],
    },
    Fetch {
        topic: &'a str,
        partition: u32,
        offset: u64,
        max_bytes: u32,
        max_wait_ms: u32,
    },
    ListOffsets {
        topic: &'a str,
        partition: u32,
        spec: OffsetSpec,
    },
    /// No topics asks for all of them.
    Metadata {
        topics: Vec<&'a str>,
    },
    /// With `retention` it is sent as version 2, with `indices` as
    /// version 3 (see [`topic`]).
    CreateTopic {
        topic: &'a str,
        partitions: u32,
        retention: Option<TopicRetention>,
        /// The topic's named indices, in order (version 3; none before).
        indices: Vec<&'a str>,
    },
    DeleteTopic {
        topic: &'a str,
    },
    /// Changes the topic's own retention; None leaves a setting as it is.
    AlterTopic {
        topic: &'a str,
        ms: Option<Option<u64>>,
        bytes: Option<Option<u64>>,
    },
    DescribeTopic {
        topic: &'a str,
    },
    OffsetCommit {
        group: &'a str,
        topic: &'a str,
        partition: u32,
        offset: u64,
    },
    OffsetFetch {
        group: &'a str,
        topic: &'a str,
        partition: u32,
    },
    /// The server's per-stage latency; `reset` clears it after reading;
    /// `per_core` (version 2) asks for each core's rows too.
    Stats {
        reset: bool,
        per_core: bool,
    },
    /// Every core's metrics registry ([`crate::metrics`]); the body is empty.
    Metrics,
    /// The server's version, shape and limits ([`ServerInfo`]); the body is empty.
    ServerInfo,
    /// The bounds of a range of records, waiting up to `wait_ms` for its
    /// end ([`query`]).
    Query {
        topic: &'a str,
        partition: u32,
        from: QueryEnd<'a>,
        to: QueryEnd<'a>,
        wait_ms: u32,
    },
    /// Pushes of the partition's batches from `start`, never past the
    /// credit granted (`credit_bytes`, then [`Request::Grant`]s).
    Subscribe {
        topic: &'a str,
        partition: u32,
        credit_bytes: u64,
        start: SubscribeStart<'a>,
    },
    /// More credit for the subscription whose Subscribe had request id `subscription`.
    Grant {
        subscription: u64,
        bytes: u64,
    },
    /// Ends the streaming request of this connection whose id is `request`.
    Cancel {
        request: u64,
    },
    /// Authenticates the connection as the user whose token this is; with
    /// authentication on, nothing else is served before it.
    Authenticate {
        token: &'a str,
    },
}

impl Request<'_> {
    pub fn api(&self) -> Api {
        match self {
            Request::Produce { .. } => Api::Produce,
            Request::Fetch { .. } => Api::Fetch,
            Request::ListOffsets { .. } => Api::ListOffsets,
            Request::Metadata { .. } => Api::Metadata,
            Request::CreateTopic { .. } => Api::CreateTopic,
            Request::DeleteTopic { .. } => Api::DeleteTopic,
            Request::OffsetCommit { .. } => Api::OffsetCommit,
            Request::OffsetFetch { .. } => Api::OffsetFetch,
            Request::Stats { .. } => Api::Stats,
            Request::Metrics => Api::Metrics,
            Request::ServerInfo => Api::ServerInfo,
            Request::AlterTopic { .. } => Api::AlterTopic,
            Request::Query { .. } => Api::Query,
            Request::DescribeTopic { .. } => Api::DescribeTopic,
            Request::Subscribe { .. } => Api::Subscribe,
            Request::Grant { .. } => Api::Grant,
            Request::Cancel { .. } => Api::Cancel,
            Request::Authenticate { .. } => Api::Authenticate,
        }
    }

    /// The version its header carries: 1, or 2 for a CreateTopic with retention.
    pub fn version(&self) -> u16 {
        match self {
            Request::CreateTopic { indices, .. } if !indices.is_empty() => topic::CREATE_TOPIC_INDICES_VERSION,
            Request::CreateTopic { retention: Some(_), .. } => topic::CREATE_TOPIC_RETENTION_VERSION,
            Request::Stats { per_core: true, .. } => STATS_PER_CORE_VERSION,
            _ => VERSION,
        }
    }
}

/// What a server says of itself (the ServerInfo reply): enough for a
/// client to size its requests before sending one, and to name the server
/// in a report. The strings are short (a version, an fsync policy).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerInfo {
    /// The native protocol version the server speaks ([`VERSION`]).
    pub protocol_version: u16,
    /// The server's own version (its crate version, e.g. "0.1.0").
    pub server_version: String,
    /// Core threads, each with its own partitions and log.
    pub cores: u16,
    /// When an append is acknowledged: "always", "interval:MS", "never".
    pub fsync: String,
    /// The largest RecordBatch a Produce may carry, header included.
    pub batch_bytes_max: u32,
    /// The largest request frame's `length` the server reads.
    pub frame_bytes_max: u32,
    /// Partitions a CreateTopic may ask for, at most.
    pub partitions_per_topic_max: u32,
}

/// One topic in a Metadata reply: partition `i` is owned by core `partition_cores[i]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicMetadata {
    pub name: String,
    pub partition_cores: Vec<u16>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Response<'a> {
    Produce {
        base_offset: u64,
        last_offset: u64,
    },
    /// `batches` is zero or more RecordBatch v2, verbatim as stored.
    Fetch {
        high_watermark: u64,
        start_offset: u64,
        next_offset: u64,
        batches: &'a [u8],
    },
    /// `None` is -1 on the wire: no such offset.
    ListOffsets {
        offset: Option<u64>,
    },
    /// `core_addrs[i]` is where core `i` listens directly; "" means through the main listener.
    Metadata {
        core_addrs: Vec<String>,
        topics: Vec<TopicMetadata>,
    },
    CreateTopic,
    DeleteTopic,
    /// The topic's own settings after the change.
    AlterTopic {
        retention: TopicRetention,
    },
    DescribeTopic {
        description: TopicDescription,
    },
    OffsetCommit,
    /// `None` is -1 on the wire: the group committed nothing for the partition.
    OffsetFetch {
        offset: Option<u64>,
    },
    /// One row per stage, merged across the server's cores, and (to a
    /// version 2 request with `per_core`) each core's rows, in core order.
    Stats {
        stages: Vec<StageLatency>,
        cores: Vec<Vec<StageLatency>>,
    },
    /// Per core, in core order: its metrics as (name, value), in the
    /// server's order. A client must accept names it does not know.
    Metrics {
        cores: Vec<Vec<(&'a str, u64)>>,
    },
    ServerInfo(ServerInfo),
    Query(crate::core::query::QueryBounds),
    /// A push of a subscription: the batches from `from_offset` (whole
    /// batches: the first may begin before it) up to `next_offset`.
    Subscribe {
        from_offset: u64,
        next_offset: u64,
        high_watermark: u64,
        batches: &'a [u8],
    },
    Grant,
    Cancel,
    /// The user the connection is now authenticated as ("" when the
    /// server has authentication off: any token is taken).
    Authenticate {
        user: String,
    },
    /// The reply to a failed request of any api.
    Error {
        code: ErrorCode,
        message: &'a str,
    },
}

impl Response<'_> {
    /// The api whose body layout this reply has; `None` for `Error`, which
    /// answers any api (even one this version does not know).
    pub fn api(&self) -> Option<Api> {
        Some(match self {
            Response::Produce { .. } => Api::Produce,
            Response::Fetch { .. } => Api::Fetch,
            Response::ListOffsets { .. } => Api::ListOffsets,
            Response::Metadata { .. } => Api::Metadata,
            Response::CreateTopic => Api::CreateTopic,
            Response::DeleteTopic => Api::DeleteTopic,
            Response::OffsetCommit => Api::OffsetCommit,
            Response::OffsetFetch { .. } => Api::OffsetFetch,
            Response::Stats { .. } => Api::Stats,
            Response::Metrics { .. } => Api::Metrics,
            Response::ServerInfo(_) => Api::ServerInfo,
            Response::AlterTopic { .. } => Api::AlterTopic,
            Response::DescribeTopic { .. } => Api::DescribeTopic,
            Response::Query(_) => Api::Query,
            Response::Subscribe { .. } => Api::Subscribe,
            Response::Grant => Api::Grant,
            Response::Cancel => Api::Cancel,
            Response::Authenticate { .. } => Api::Authenticate,
            Response::Error { .. } => return None,
        })
    }
}

/// The 12 bytes after `length`, raw: `api` may be unknown, and the second
/// field is the version in a request and the error code in a response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    pub api: u16,
    pub version_or_error: u16,
    pub request_id: u64,
}

/// Why a frame's header or body did not decode.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DecodeError {
    /// The frame ends before a field, or a count promises more than is left.
    Short,
    /// Bytes are left after the last field.
    Trailing,
    /// A string is not UTF-8.
    BadUtf8,
    /// A field holds a value the protocol does not allow; the text names it.
    BadValue(&'static str),
    UnknownApi(u16),
    UnsupportedVersion(u16),
}

impl DecodeError {
    /// The error code of the reply to a request that failed this way.
    pub fn code(&self) -> ErrorCode {
        match self {
            // Strings in requests are names: topics and groups.
            DecodeError::BadUtf8 => ErrorCode::InvalidName,
            DecodeError::UnknownApi(_) => ErrorCode::UnknownApi,
            DecodeError::UnsupportedVersion(_) => ErrorCode::UnsupportedVersion,
            DecodeError::Short | DecodeError::Trailing | DecodeError::BadValue(_) => ErrorCode::Malformed,
        }
    }
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DecodeError::Short => f.write_str("the frame ends before its last field"),
            DecodeError::Trailing => f.write_str("bytes after the last field of the frame"),
            DecodeError::BadUtf8 => f.write_str("a string is not UTF-8"),
            DecodeError::BadValue(what) => f.write_str(what),
            DecodeError::UnknownApi(api) => write!(f, "unknown api {api}"),
            DecodeError::UnsupportedVersion(v) => write!(f, "unsupported version {v} (this side speaks {VERSION})"),
        }
    }
}

impl std::error::Error for DecodeError {}

/// Why a frame's `length` was refused before anything after it was read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FrameError {
    /// `len` is the `length` field; `max` the limit it exceeds.
    TooLarge { len: u64, max: usize },
    /// `length` cannot even hold the header.
    TooSmall { len: u32 },
}

impl fmt::Display for FrameError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FrameError::TooLarge { len, max } => write!(f, "frame length {len} is over the limit of {max} bytes"),
            FrameError::TooSmall { len } => write!(f, "frame length {len} is under the {HEADER_BYTES}-byte header"),
        }
    }
}

impl std::error::Error for FrameError {}

/// Looks at the start of a receive buffer: Ok(None) if fewer than 4 bytes; Ok(Some(total)) with
/// total = 4 + length when the length is in range (the frame may not be complete yet); Err otherwise.
pub fn frame_len(buf: &[u8], max_frame_bytes: usize) -> Result<Option<usize>, FrameError> {
    let Some(len) = buf.first_chunk::<LEN_BYTES>() else {
        return Ok(None);
    };
    let len = u32::from_be_bytes(*len);
    if (len as usize) < HEADER_BYTES {
        return Err(FrameError::TooSmall { len });
    }
    // Where usize is 32 bits, 4 + length can overflow even when length fits.
    usize::try_from(len)
        .ok()
        .filter(|&n| n <= max_frame_bytes)
        .and_then(|n| n.checked_add(LEN_BYTES))
        .map(Some)
        .ok_or(FrameError::TooLarge { len: u64::from(len), max: max_frame_bytes })
}

/// Splits a Produce body's concatenated batches by their batchLength field (no CRC check: the
/// server runs wire::batch::validate on each). Err(BadValue) for a length < 49 or past the end.
/// The walk ends after the first error: past a bad length nothing says where the next batch starts.
pub fn split_batches(bytes: &[u8]) -> impl Iterator<Item = Result<&[u8], DecodeError>> {
    let mut rest = bytes;
    std::iter::from_fn(move || {
        if rest.is_empty() {
            return None;
        }
        let batch = next_batch(rest);
        rest = match batch {
            Ok(b) => &rest[b.len()..],
            Err(_) => &[],
        };
        Some(batch)
    })
}

/// The batch at the start of `rest`, by its `batchLength`.
fn next_batch(rest: &[u8]) -> Result<&[u8], DecodeError> {
    let Some(prefix) = rest.first_chunk::<BATCH_PREFIX_BYTES>() else {
        return Err(DecodeError::BadValue("batch ends inside its length prefix"));
    };
    let [.., l0, l1, l2, l3] = *prefix;
    let batch_length = i32::from_be_bytes([l0, l1, l2, l3]);
    let batch_bytes = usize::try_from(batch_length)
        .ok()
        .filter(|&n| n >= BATCH_LENGTH_MIN)
        .ok_or(DecodeError::BadValue("batchLength is under the 49-byte batch header"))?
        + BATCH_PREFIX_BYTES;
    rest.get(..batch_bytes).ok_or(DecodeError::BadValue("batchLength runs past the end of the body"))
}

/// For the fuzz target: decode_request and decode_response on arbitrary bytes never panic, and
/// anything that decodes re-encodes to the identical bytes. `tests/fuzz_replay.rs` calls it too,
/// so a saved input replays under `cargo test` exactly as it was fuzzed.
#[doc(hidden)]
pub fn fuzz_check(data: &[u8]) {
    fuzz_check_one(data);
    // Mutated bytes rarely carry their own length in the first four, so a
    // copy with the length set right is checked too: it lets the fuzzer
    // reach the bodies instead of stopping at the length check.
    if let Ok(len) = u32::try_from(data.len().wrapping_sub(LEN_BYTES)) {
        let mut fixed = data.to_vec();
        fixed[..LEN_BYTES].copy_from_slice(&len.to_be_bytes());
        if fixed != data {
            fuzz_check_one(&fixed);
        }
    }
}

fn fuzz_check_one(data: &[u8]) {
    let framed = frame_len(data, usize::MAX);
    match decode_request(data) {
        Ok((header, req)) => {
            assert_eq!(framed, Ok(Some(data.len())));
            assert_eq!((header.api, header.version_or_error), (req.api() as u16, req.version()));
            let mut again = Vec::new();
            encode_request(&mut again, header.request_id, &req);
            assert_eq!(again, data, "{req:?} re-encodes to other bytes");
            if let Request::Produce { batches, .. } = req {
                fuzz_check_split(batches);
            }
        }
        Err((Some(header), e)) => fuzz_check_error_reply(header, &e),
        Err((None, _)) => {}
    }
    if let Ok((header, resp)) = decode_response(data) {
        assert_eq!(framed, Ok(Some(data.len())));
        let mut again = Vec::new();
        match (&resp, Api::from_u16(header.api)) {
            (Response::Error { code, message }, _) => encode_error(&mut again, header.api, header.request_id, *code, message),
            (_, Some(api)) => encode_response(&mut again, api, header.request_id, &resp),
            (_, None) => panic!("{resp:?} decoded under unknown api {}", header.api),
        }
        assert_eq!(again, data, "{resp:?} re-encodes to other bytes");
        if let Response::Fetch { batches, .. } | Response::Subscribe { batches, .. } = resp {
            fuzz_check_split(batches);
        }
    }
}

/// A request that fails after its header gets a reply that decodes to what was sent.
fn fuzz_check_error_reply(header: Header, e: &DecodeError) {
    let message = e.to_string();
    let mut reply = Vec::new();
    encode_error(&mut reply, header.api, header.request_id, e.code(), &message);
    let (reply_header, resp) = decode_response(&reply).expect("an error reply decodes");
    assert_eq!((reply_header.api, reply_header.request_id), (header.api, header.request_id));
    assert_eq!(resp, Response::Error { code: e.code(), message: &message });
}

/// `split_batches` yields batches that tile its input from the start, then at most one error.
fn fuzz_check_split(bytes: &[u8]) {
    let pieces: Vec<_> = split_batches(bytes).collect();
    let mut at = 0;
    for (i, piece) in pieces.iter().enumerate() {
        match piece {
            Ok(batch) => {
                assert!(batch.len() >= BATCH_HEADER_BYTES);
                assert_eq!(batch.as_ptr(), bytes[at..].as_ptr(), "batch {i} is not where the previous one ended");
                at += batch.len();
            }
            Err(_) => assert_eq!(i + 1, pieces.len(), "the walk went on after an error"),
        }
    }
    if pieces.last().is_none_or(Result::is_ok) {
        assert_eq!(at, bytes.len(), "the batches do not cover the body");
    }
}
