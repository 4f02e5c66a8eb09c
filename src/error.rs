//! Every error Strom returns, typed. Errnos are classified where they enter
//! (see [`Errno`]): transient ones are retried there and never reach here.
use std::fmt;
use std::path::PathBuf;

pub type Result<T, E = StromError> = std::result::Result<T, E>;

/// Why a RecordBatch was refused. Nothing is stored when one is returned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BatchError {
    /// Fewer bytes than the fixed 61-byte header, or than `batchLength` says.
    Truncated {
        needed: usize,
        got: usize,
    },
    /// `batchLength` disagrees with the bytes given (trailing bytes or short).
    LengthMismatch {
        declared: u64,
        actual: u64,
    },
    BadMagic(i8),
    BadCrc {
        stored: u32,
        computed: u32,
    },
    /// The records section does not hold exactly `records_count` records.
    BadRecordCount {
        declared: i32,
        found: u64,
    },
    /// A record's varint fields are malformed or run past the batch.
    BadRecord {
        index: u64,
    },
    /// `lastOffsetDelta` must equal `records_count - 1`.
    BadLastOffsetDelta {
        delta: i32,
        records: i32,
    },
    /// A batch must hold at least one record.
    Empty,
    /// Compressed batches are stored as they are, but their records cannot
    /// be counted without decompressing; we refuse codecs we cannot check.
    UnsupportedCompression(u8),
    TooLarge {
        bytes: usize,
        max_bytes: usize,
    },
}

/// Sentences a producer can act on: what is wrong with the batch, in Kafka's
/// field names, so a client author can find the field in the format.
impl fmt::Display for BatchError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BatchError::Truncated { needed, got } => write!(f, "the batch is truncated: it needs {needed} bytes, {got} arrived"),
            BatchError::LengthMismatch { declared, actual } => {
                write!(f, "the batch's batchLength says {declared} bytes but it has {actual}")
            }
            BatchError::BadMagic(m) => write!(f, "the batch has magic {m}; only RecordBatch v2 (magic 2) is accepted"),
            BatchError::BadCrc { stored, computed } => {
                write!(f, "the batch's CRC-32C is {stored:#010x} but its bytes give {computed:#010x} (damaged in transit or built wrong)")
            }
            BatchError::BadRecordCount { declared, found } => {
                write!(f, "the batch declares {declared} records but holds {found}")
            }
            BatchError::BadRecord { index } => write!(f, "record {index} of the batch is malformed (bad varint or past the batch's end)"),
            BatchError::BadLastOffsetDelta { delta, records } => {
                write!(f, "the batch's lastOffsetDelta is {delta} but it holds {records} records (it must be records - 1)")
            }
            BatchError::Empty => f.write_str("the batch holds no records; a batch needs at least one"),
            BatchError::UnsupportedCompression(c @ 1..=4) => write!(
                f,
                "the batch is compressed ({}); Strom stores it as it came but does not decompress it: read it with a Kafka client, \
                 and send uncompressed batches to a topic with named indices",
                ["gzip", "snappy", "lz4", "zstd"][usize::from(*c) - 1]
            ),
            BatchError::UnsupportedCompression(c) => {
                write!(f, "the batch names compression codec {c}, which does not exist (Kafka's are 1 to 4)")
            }
            BatchError::TooLarge { bytes, max_bytes } => {
                write!(f, "the batch is {bytes} bytes, over the broker's limit of {max_bytes} bytes; send smaller batches")
            }
        }
    }
}

impl std::error::Error for BatchError {}

/// The operation an I/O error came from, for messages that name it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IoOp {
    Open,
    Create,
    Write,
    Fsync,
    Read,
    Remove,
    Rename,
    SyncDir,
    ListDir,
    Submit,
    /// Binding or listening on a socket address (the "path" is the address).
    Listen,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StromError {
    InvalidBatch(BatchError),
    UnknownTopic(String),
    UnknownPartition {
        topic: String,
        partition: u32,
    },
    TopicExists(String),
    InvalidTopicName(String),
    /// Asked for an offset below the partition's earliest or above its end.
    OffsetOutOfRange {
        offset: u64,
        earliest: u64,
        end: u64,
    },
    /// An operating-system error with its context.
    Io {
        op: IoOp,
        path: PathBuf,
        errno: i32,
    },
    /// A write or fsync failed earlier on this log; it accepts no writes
    /// until restarted (we never retry an fsync and then acknowledge).
    LogFailed {
        log: u32,
        cause: String,
    },
    /// The disk is full; the write was not made. Retriable once space frees.
    DiskFull {
        log: u32,
    },
    /// Stored bytes that fail their checksum where acknowledged data must be.
    Corrupt {
        path: PathBuf,
        pos: u64,
        reason: String,
    },
    /// A batch for a topic with named indices lacks a value, carries a
    /// malformed one, or goes below the partition's last value: nothing of
    /// it was stored. `index` is the index's name (empty when the fault
    /// names none), `offset` the offset the record would have had.
    BadIndexValue {
        index: String,
        offset: u64,
        reason: String,
    },
    /// An idempotent producer's batch does not follow the last one the
    /// partition stored for it (a gap: a batch was lost in between), or
    /// starts a newer epoch at another sequence than 0. Nothing was stored.
    OutOfOrderSequence {
        producer_id: i64,
        expected: i32,
        got: i32,
    },
    /// An idempotent producer's batch carries an epoch older than the
    /// partition's for that producer id: a newer instance of the producer
    /// took over (fenced). Nothing was stored.
    InvalidProducerEpoch {
        producer_id: i64,
        epoch: i16,
        current: i16,
    },
    /// A limit was reached; retry later.
    Overloaded(&'static str),
    /// A well-formed request asks for what cannot be (0 partitions, more
    /// than the maximum). Retrying the same request cannot succeed.
    InvalidArgument(String),
    /// The engine is stopping and takes no new work.
    ShuttingDown,
    /// Authentication is on and the connection has not authenticated: it
    /// must authenticate first (the native Authenticate request, or SASL).
    AuthRequired,
    /// The token (or SASL user and password) names no configured user.
    /// The text never holds the token.
    AuthFailed,
    /// The authenticated user has no permission for this (`topic` is `*`
    /// for what concerns every topic).
    NotAuthorized {
        user: String,
        topic: String,
        access: crate::auth::Access,
    },
    /// This server serves what another process writes (`--read-only`) or an
    /// immutable archive: it takes no writes; `what` names what was refused.
    ReadOnly(String),
    /// The request was cancelled by its asker (a Cancel, or its connection closed).
    Cancelled,
    /// The data directory or platform cannot run Strom; the text says why
    /// and how to fix it.
    Unsupported(String),
    /// A data directory made by an incompatible version, or damaged metadata.
    BadDataDir(String),
}

impl StromError {
    pub fn io(op: IoOp, path: impl Into<PathBuf>, err: &std::io::Error) -> StromError {
        StromError::Io { op, path: path.into(), errno: err.raw_os_error().unwrap_or(libc::EIO) }
    }
}

impl From<BatchError> for StromError {
    fn from(e: BatchError) -> Self {
        StromError::InvalidBatch(e)
    }
}

/// Every message is a sentence saying what failed and, where there is one,
/// what to do. The server sends these texts to clients, so they name no
/// server-side internals a client cannot act on.
impl fmt::Display for StromError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StromError::InvalidBatch(e) => write!(f, "invalid batch: {e}"),
            StromError::UnknownTopic(t) => write!(f, "unknown topic \"{t}\""),
            StromError::UnknownPartition { topic, partition } => write!(f, "topic \"{topic}\" has no partition {partition}"),
            StromError::TopicExists(t) => write!(f, "topic \"{t}\" already exists"),
            StromError::InvalidTopicName(t) => write!(
                f,
                "invalid name \"{t}\": a topic or group name is 1 to {} bytes of A-Z a-z 0-9 . _ -, and not . or ..",
                crate::catalog::TOPIC_NAME_BYTES_MAX
            ),
            StromError::OffsetOutOfRange { offset, earliest, end } => {
                write!(f, "offset {offset} is out of range: the partition holds offsets {earliest} up to (not including) {end}")
            }
            StromError::Io { op, path, errno } => {
                let e = nix::errno::Errno::from_raw(*errno);
                // The description and the symbolic name once each: io::Error's
                // own Display would add "(os error N)" to a number we print.
                write!(f, "{} {} failed: {} ({e:?}){}", op.verb(), path.display(), e.desc(), errno_hint(*errno))
            }
            StromError::LogFailed { log, cause } => {
                write!(
                    f,
                    "log {log} stopped accepting writes after an earlier failure ({cause}); restart the server once the cause is fixed"
                )
            }
            StromError::DiskFull { log } => write!(f, "the disk of log {log} is full; the write was not made (retry once space is freed)"),
            StromError::Corrupt { path, pos, reason } => {
                write!(f, "corrupt data in {} at log position {pos}: {reason}", path.display())
            }
            StromError::BadIndexValue { index, offset, reason } if index.is_empty() => {
                write!(f, "batch refused at offset {offset}: {reason}; nothing of it was stored")
            }
            StromError::BadIndexValue { index, offset, reason } => {
                write!(f, "batch refused: index {index} at offset {offset}: {reason}; nothing of it was stored")
            }
            StromError::OutOfOrderSequence { producer_id, expected, got } => write!(
                f,
                "batch refused: producer {producer_id} sent sequence {got} where {expected} was expected (a batch is missing); nothing of it was stored"
            ),
            StromError::InvalidProducerEpoch { producer_id, epoch, current } => write!(
                f,
                "batch refused: producer {producer_id} has epoch {epoch}, older than the partition's {current} (a newer producer took over); nothing of it was stored"
            ),
            StromError::Overloaded(what) => write!(f, "the server is overloaded ({what}); retry later"),
            StromError::InvalidArgument(s) | StromError::Unsupported(s) | StromError::BadDataDir(s) => f.write_str(s),
            StromError::Cancelled => f.write_str("the request was cancelled by its client"),
            StromError::ShuttingDown => f.write_str("the server is shutting down and takes no new work; retry once it is back"),
            StromError::AuthRequired => f.write_str("authentication is required: authenticate with a token first (--token or STROM_TOKEN)"),
            StromError::ReadOnly(what) => {
                write!(f, "{what} refused: this server is read-only (it serves data another process writes, or archives)")
            }
            StromError::AuthFailed => f.write_str("authentication failed: the token names no user of this server"),
            StromError::NotAuthorized { user, topic, access } if topic == "*" => {
                write!(f, "user {user:?} may not do this: it needs `{access}` on every topic (a permission on \"*\")")
            }
            StromError::NotAuthorized { user, topic, access } => {
                write!(f, "user {user:?} has no `{access}` permission on topic {topic:?}")
            }
        }
    }
}

impl IoOp {
    /// The operation as the verb a message names it by.
    fn verb(self) -> &'static str {
        match self {
            IoOp::Open => "open",
            IoOp::Create => "create",
            IoOp::Write => "write to",
            IoOp::Fsync => "fsync of",
            IoOp::Read => "read from",
            IoOp::Remove => "remove",
            IoOp::Rename => "rename",
            IoOp::SyncDir => "fsync of directory",
            IoOp::ListDir => "listing of",
            IoOp::Submit => "io_uring submit for",
            IoOp::Listen => "listen on",
        }
    }
}

/// What to do about the errnos an operator can fix, as a clause.
fn errno_hint(errno: i32) -> &'static str {
    match errno {
        libc::EACCES | libc::EPERM => "; check the owner and permissions",
        libc::EADDRINUSE => "; another process uses that address, so choose another",
        libc::ENOSPC | libc::EDQUOT => "; free space on that filesystem",
        libc::EROFS => "; the filesystem is read-only",
        libc::ENOENT => "; check the path",
        _ => "",
    }
}

impl std::error::Error for StromError {}

/// How an errno that came back from the kernel is treated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Errno {
    /// Try the same call again (EINTR, EAGAIN, EBUSY from a full ring).
    Transient,
    /// Disk full: the write did not happen. Operational.
    NoSpace,
    /// A real I/O failure: the log must stop accepting writes.
    Fatal,
    /// Our bug: bad argument, bad fd, bad address. Panics in debug, poisons in release.
    Bug,
}

/// Classifies a (positive) errno. Every errno the I/O path can see goes
/// through here, so the policy lives in one place.
pub fn classify_errno(errno: i32) -> Errno {
    match errno {
        libc::EINTR | libc::EAGAIN | libc::EBUSY => Errno::Transient,
        libc::ENOSPC | libc::EDQUOT => Errno::NoSpace,
        libc::EINVAL | libc::EBADF | libc::EFAULT | libc::EOPNOTSUPP => Errno::Bug,
        _ => Errno::Fatal,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Proves: each error is a sentence (no Debug dump), an errno is named
    // once (its text and symbol, no "os error N" beside "errno N"), and
    // fixable causes say what to do.
    #[test]
    fn error_texts_are_sentences() {
        let cases: [(StromError, &str); 8] = [
            (StromError::UnknownTopic("nosuch".into()), "unknown topic \"nosuch\""),
            (StromError::UnknownPartition { topic: "t".into(), partition: 3 }, "topic \"t\" has no partition 3"),
            (StromError::TopicExists("t".into()), "topic \"t\" already exists"),
            (
                StromError::Io { op: IoOp::Open, path: "/data/x".into(), errno: libc::EACCES },
                "open /data/x failed: Permission denied (EACCES); check the owner and permissions",
            ),
            (
                StromError::OffsetOutOfRange { offset: 9, earliest: 0, end: 3 },
                "offset 9 is out of range: the partition holds offsets 0 up to (not including) 3",
            ),
            (StromError::DiskFull { log: 1 }, "the disk of log 1 is full; the write was not made (retry once space is freed)"),
            (StromError::Overloaded("mailbox"), "the server is overloaded (mailbox); retry later"),
            (
                StromError::InvalidBatch(BatchError::TooLarge { bytes: 2_000_000, max_bytes: 1_040_384 }),
                "invalid batch: the batch is 2000000 bytes, over the broker's limit of 1040384 bytes; send smaller batches",
            ),
        ];
        for (e, text) in cases {
            assert_eq!(e.to_string(), text);
        }
        let io = StromError::Io { op: IoOp::Write, path: "/d/seg".into(), errno: libc::EIO }.to_string();
        assert_eq!(io.matches("EIO").count() + io.matches("os error").count(), 1, "{io}");
    }
}
