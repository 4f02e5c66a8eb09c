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

impl fmt::Display for BatchError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
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
    /// A limit was reached; retry later.
    Overloaded(&'static str),
    /// A well-formed request asks for what cannot be (0 partitions, more
    /// than the maximum). Retrying the same request cannot succeed.
    InvalidArgument(String),
    /// The engine is stopping and takes no new work.
    ShuttingDown,
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

impl fmt::Display for StromError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StromError::Io { op, path, errno } => {
                write!(f, "{op:?} {}: {} (errno {errno})", path.display(), std::io::Error::from_raw_os_error(*errno))
            }
            StromError::Corrupt { path, pos, reason } => {
                write!(f, "corrupt data in {} at log position {pos}: {reason}", path.display())
            }
            StromError::Unsupported(s) | StromError::BadDataDir(s) => f.write_str(s),
            other => fmt::Debug::fmt(other, f),
        }
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
