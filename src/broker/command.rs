//! The broker's commands and replies: what a client may ask, whatever
//! protocol it spoke, and what it is answered, as values. A codec decodes
//! its frames into [`Command`]s and encodes [`Answer`]s and
//! [`BrokerError`]s back into its own frames; nothing here knows a byte
//! layout, except that a produce carries RecordBatch v2 and a fetch answers
//! with it (records on the wire are records on disk).
use std::time::Duration;

use crate::buf::AlignedBuf;
use crate::catalog::{TopicDescription, TopicRetention};
use crate::config::FsyncPolicy;
use crate::core::AppendAck;
use crate::error::StromError;
use crate::metrics::Metrics;
use crate::stats::StageReport;

/// One request of a client, decoded. Borrowed from the frame it came in,
/// which lives until the command is executed.
#[derive(Debug)]
pub enum Command<'a> {
    /// Appends the batches, in order and with nothing between them, to one
    /// partition; answered once all are durable ([`Answer::Produced`]).
    Produce {
        topic: &'a str,
        partition: u32,
        batches: Batches<'a>,
    },
    /// Whole batches from `offset`, about `max_bytes` (at least one batch);
    /// at the partition's end, waits up to `max_wait` for new ones (a long
    /// poll). Answered with [`Answer::Fetched`], whose buffer keeps room
    /// before the batches for the codec's reply header.
    Fetch {
        topic: &'a str,
        partition: u32,
        offset: u64,
        max_bytes: usize,
        max_wait: Duration,
    },
    ListOffsets {
        topic: &'a str,
        partition: u32,
        query: OffsetQuery,
    },
    /// No topics asks for all of them.
    Metadata {
        topics: Vec<&'a str>,
    },
    CreateTopic {
        topic: &'a str,
        partitions: u32,
        retention: TopicRetention,
        /// Named indices, in order (none: a plain topic).
        indices: Vec<&'a str>,
    },
    /// Changes a topic's own retention; None leaves a setting as it is.
    /// Answered with the topic's settings after ([`Answer::TopicAltered`]).
    AlterTopic {
        topic: &'a str,
        ms: Option<Option<u64>>,
        bytes: Option<Option<u64>>,
    },
    /// The topic's settings and partitions now ([`Answer::TopicDescribed`]).
    DescribeTopic {
        topic: &'a str,
    },
    DeleteTopic {
        topic: &'a str,
    },
    CommitOffset {
        group: &'a str,
        topic: &'a str,
        partition: u32,
        offset: u64,
        /// The client's string kept with it (Kafka's; "" for none).
        metadata: &'a str,
    },
    FetchOffset {
        group: &'a str,
        topic: &'a str,
        partition: u32,
    },
    /// The per-stage latency of the requests served so far, across cores
    /// (and per core with `per_core`); `reset` clears it after reading.
    Stats {
        reset: bool,
        per_core: bool,
    },
    /// Every core's metrics registry ([`crate::metrics`]), in core order.
    Metrics,
    /// The broker's shape and limits, and its server's largest frame.
    ServerInfo,
    /// The bounds of a range of a partition's records, its end waited for
    /// ([`Answer::Queried`]; [`crate::core::query`]).
    Query {
        topic: &'a str,
        partition: u32,
        spec: crate::core::query::QuerySpec,
    },
    /// Streaming requests: served by the server's connections
    /// (`server/stream.rs`) over Fetch and ListOffsets, not by the broker.
    /// Pushes of the partition's batches from `start`, within the credit.
    Subscribe {
        topic: &'a str,
        partition: u32,
        credit_bytes: u64,
        start: StreamStart<'a>,
    },
    /// More credit for the subscription of request id `subscription`.
    Grant {
        subscription: u64,
        bytes: u64,
    },
    /// Ends the connection's streaming request of id `request`.
    Cancel {
        request: u64,
    },
    /// Authenticates the connection (served by the server's connections,
    /// which keep who it is: `server/auth.rs`), never by the broker.
    Authenticate {
        credentials: Credentials<'a>,
    },
    /// Several commands run at once and answered together, in order
    /// ([`Answer::Many`]): one request of a protocol that names many
    /// partitions (Kafka's Produce, Fetch, ListOffsets...). Not nested.
    Many {
        commands: Vec<Command<'a>>,
        /// For the Fetches among them: a Fetch at its partition's end waits
        /// (up to its `max_wait`) only until the answers so far hold this
        /// many bytes of batches (Kafka's `min_bytes`). None: each waits
        /// its own wait.
        release_at_bytes: Option<usize>,
    },
    /// A request its protocol serves itself, beside the data path (Kafka's
    /// consumer groups and producer ids): started on the core that decoded
    /// it, answered later with [`Answer::Protocol`].
    Protocol(Box<dyn ProtocolJob>),
}

/// A protocol's own request ([`Command::Protocol`]). `run` must not block
/// (it runs on a core): it hands the work to a thread of the protocol's,
/// which calls `reply` exactly once.
pub trait ProtocolJob: Send {
    /// What it is, for logs and debug output.
    fn name(&self) -> &'static str;
    fn run(self: Box<Self>, reply: Responder);
    /// The topics it touches and the access each needs, for the
    /// permission check made before it runs ([`crate::auth::check`]).
    fn topics(&self) -> Vec<(&str, crate::auth::Access)> {
        Vec::new()
    }
}

/// What a connection authenticates with.
#[derive(Debug, Clone, Copy)]
pub enum Credentials<'a> {
    /// The native protocol's: a token.
    Token(&'a str),
    /// SASL/PLAIN's: a user name and its token as the password.
    Plain { user: &'a str, password: &'a [u8] },
}

impl std::fmt::Debug for dyn ProtocolJob {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ProtocolJob({})", self.name())
    }
}

/// Where a subscription starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StreamStart<'a> {
    Earliest,
    /// The partition's end when the subscription begins.
    Latest,
    Offset(u64),
    /// The first record whose timestamp is at or after this (ms since the epoch).
    Time(i64),
    /// The first record whose value of the named index is at least `value`.
    Index {
        name: &'a str,
        value: i64,
    },
}

/// The RecordBatch v2 batches of a produce, split by their `batchLength`
/// but not yet validated. A split that failed keeps the whole batches
/// before the failure and says why it stopped (nothing after a bad length
/// says where the next batch starts).
#[derive(Debug, Default)]
pub struct Batches<'a> {
    pub whole: Vec<&'a [u8]>,
    pub split_error: Option<String>,
}

impl<'a> Batches<'a> {
    /// Concatenated batches (a Produce body, native or Kafka), split by
    /// their `batchLength` (validated later, by the broker).
    pub fn split(body: &'a [u8]) -> Batches<'a> {
        let mut batches = Batches::default();
        for b in crate::proto::split_batches(body) {
            match b {
                Ok(b) => batches.whole.push(b),
                Err(e) => batches.split_error = Some(e.to_string()),
            }
        }
        batches
    }
}

/// Which offset a ListOffsets asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OffsetQuery {
    Earliest,
    /// The end: the offset the next record will get.
    Latest,
    /// The first offset whose record timestamp is at least this (ms since the epoch).
    AtTime(i64),
    /// The first offset whose value of a named index is at least a value
    /// (or above it).
    AtIndex(crate::read::IndexSeek),
}

/// Bytes of a reply: on the heap, or in one of the asking core's registered
/// reply buffers (sent from it as it is, then given back to that core).
#[derive(Debug)]
pub enum ReplyBuf {
    Heap(Vec<u8>),
    Registered(AlignedBuf),
}

impl ReplyBuf {
    pub fn len(&self) -> usize {
        match self {
            ReplyBuf::Heap(v) => v.len(),
            ReplyBuf::Registered(b) => b.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn as_mut_slice(&mut self) -> &mut [u8] {
        match self {
            ReplyBuf::Heap(v) => v.as_mut_slice(),
            ReplyBuf::Registered(b) => b.as_mut_slice(),
        }
    }
}

/// A fetch's answer: `bytes` holds `headroom` reserved bytes, then whole
/// batches as stored. The codec writes its reply header into the headroom,
/// so the batches are never copied again.
#[derive(Debug)]
pub struct Fetched {
    pub bytes: ReplyBuf,
    pub headroom: usize,
    /// Offsets below this are readable now (durable under the policy).
    pub high_watermark: u64,
    pub start_offset: u64,
    /// The offset after the last record returned (where to read next).
    pub next_offset: u64,
    /// How long the fetch waited parked as a long poll, in ns.
    pub parked_ns: u64,
    /// Reply budget of the asker's core the answer holds (returned there).
    pub budget_bytes: usize,
}

/// Where a partition's core is: partition `i` of `name` is owned by core
/// `partition_cores[i]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicPlacement {
    pub name: String,
    pub partition_cores: Vec<u16>,
}

/// The answer to a command that succeeded; each command has one kind.
#[derive(Debug)]
pub enum Answer {
    Produced(AppendAck),
    Fetched(Fetched),
    /// ListOffsets: None when no record matches (a time past the end).
    Offset(Option<u64>),
    /// ListOffsets by time: the offset and that record's own timestamp
    /// (Kafka answers both); None when no record is stamped that late.
    OffsetAtTime(Option<(u64, i64)>),
    /// `core_addrs[i]` is where core `i` listens directly ("": only through
    /// the shared listener).
    Metadata {
        core_addrs: Vec<String>,
        topics: Vec<TopicPlacement>,
    },
    TopicCreated,
    TopicDeleted,
    TopicAltered(TopicRetention),
    TopicDescribed(TopicDescription),
    OffsetCommitted,
    /// FetchOffset: None when the group committed nothing for the partition.
    CommittedOffset(Option<super::offsets::Committed>),
    Stats(StageReport),
    /// Each core's registry, in core order: its server's sections with its
    /// own. None for a core whose server task has stopped.
    Metrics(Vec<Option<Metrics>>),
    /// ServerInfo: the engine's limits, and `frame_bytes_max` of the
    /// server the command came through.
    ServerInfo {
        limits: Limits,
        frame_bytes_max: usize,
    },
    Queried(crate::core::query::QueryBounds),
    /// Cancel: the streaming request is ended.
    Cancelled,
    /// Authenticate: the connection is now this user's (None: the server
    /// has authentication off, and took the credentials unchecked).
    Authenticated(Option<String>),
    /// [`Command::Many`]: each command's reply, in the commands' order.
    Many(Vec<Result<Answer, BrokerError>>),
    /// [`Command::Protocol`]: the protocol's own value, for its codec.
    Protocol(Box<dyn std::any::Any + Send>),
}

/// What an engine accepts, as a client must know it before sending: the
/// embedded API ([`crate::engine::Engine::limits`]) and the ServerInfo api
/// give the same values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub cores: usize,
    pub fsync: FsyncPolicy,
    /// The largest RecordBatch a produce may carry, header included.
    pub batch_bytes_max: usize,
    pub partitions_per_topic_max: u32,
}

impl Limits {
    /// The limits an engine opened with `cfg` has (a client checking its
    /// requests before the engine exists, as loadgen does, asks this).
    pub fn of(cfg: &crate::config::EngineConfig) -> Limits {
        Limits {
            cores: cfg.cores,
            fsync: cfg.fsync,
            batch_bytes_max: cfg.batch_bytes_max,
            partitions_per_topic_max: cfg.partitions_per_topic_max,
        }
    }
}

/// Why a command failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BrokerError {
    /// The engine refused or failed it.
    Failed(StromError),
    /// A produce whose batches could not be split, or that carried none.
    InvalidBatch(String),
    /// Storage failed in a way the engine's own error would misstate (part
    /// of a produce stored; committed offsets not made durable).
    StorageFailed(String),
    /// A broken promise of the broker itself.
    Internal(&'static str),
    /// A streaming request its client cancelled.
    Cancelled,
}

/// The sentence a client is told (Kafka's error_message, the native error frame's).
impl std::fmt::Display for BrokerError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            BrokerError::Failed(e) => e.fmt(f),
            BrokerError::InvalidBatch(m) | BrokerError::StorageFailed(m) => f.write_str(m),
            BrokerError::Internal(m) => f.write_str(m),
            BrokerError::Cancelled => f.write_str("cancelled"),
        }
    }
}

impl From<StromError> for BrokerError {
    fn from(e: StromError) -> Self {
        BrokerError::Failed(e)
    }
}

/// Where one command's reply goes: called exactly once, on whichever
/// thread answered (a core, or the admin thread).
pub trait Respond: FnOnce(Result<Answer, BrokerError>) + Send + 'static {}

impl<F: FnOnce(Result<Answer, BrokerError>) + Send + 'static> Respond for F {}

/// A [`Respond`] that has to be stored beside others (admin jobs).
pub type Responder = Box<dyn FnOnce(Result<Answer, BrokerError>) + Send>;
