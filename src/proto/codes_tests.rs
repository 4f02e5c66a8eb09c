//! The error codes: their numbers both ways, and which code each failure gets.
use std::path::PathBuf;

use super::*;
use crate::error::{BatchError, IoOp};

/// Every code of this version, in number order (code i + 1 at index i).
pub(super) const ALL_CODES: [ErrorCode; 27] = [
    ErrorCode::Malformed,
    ErrorCode::UnsupportedVersion,
    ErrorCode::UnknownApi,
    ErrorCode::FrameTooLarge,
    ErrorCode::UnknownTopic,
    ErrorCode::UnknownPartition,
    ErrorCode::InvalidName,
    ErrorCode::TopicExists,
    ErrorCode::InvalidBatch,
    ErrorCode::OffsetOutOfRange,
    ErrorCode::DiskFull,
    ErrorCode::StorageFailed,
    ErrorCode::Corrupt,
    ErrorCode::Overloaded,
    ErrorCode::ShuttingDown,
    ErrorCode::TooManyConnections,
    ErrorCode::InvalidArgument,
    ErrorCode::Timeout,
    ErrorCode::Internal,
    ErrorCode::BadIndexValue,
    ErrorCode::Cancelled,
    ErrorCode::OutOfOrderSequence,
    ErrorCode::InvalidProducerEpoch,
    ErrorCode::AuthRequired,
    ErrorCode::AuthFailed,
    ErrorCode::NotAuthorized,
    ErrorCode::ReadOnly,
];

#[test]
fn error_codes_are_numbered_as_specified() {
    // Proves: codes 1..=27 map both ways, 0 is success, every other code decodes as Unknown and keeps its number.
    for (i, code) in ALL_CODES.iter().enumerate() {
        assert_eq!(code.code() as usize, i + 1, "{code:?}");
    }
    assert_eq!(ErrorCode::from_code(0), None);
    for v in 1..=u16::MAX {
        let code = ErrorCode::from_code(v).unwrap();
        assert_eq!(code.code(), v);
        assert_eq!(matches!(code, ErrorCode::Unknown(_)), v > 27, "{v}");
    }
    let retriable: Vec<_> = ALL_CODES.into_iter().filter(|c| c.retriable()).collect();
    let expected = [ErrorCode::DiskFull, ErrorCode::Overloaded, ErrorCode::ShuttingDown, ErrorCode::TooManyConnections];
    assert_eq!(retriable, expected);
    assert!(!ErrorCode::Unknown(500).retriable());
}

#[test]
fn strom_errors_map_to_their_codes() {
    // Proves: every StromError variant gets the error code the spec gives it.
    let path = PathBuf::from("/data/log-0000");
    let cases = [
        (StromError::InvalidBatch(BatchError::Empty), ErrorCode::InvalidBatch),
        (StromError::UnknownTopic("t".into()), ErrorCode::UnknownTopic),
        (StromError::UnknownPartition { topic: "t".into(), partition: 9 }, ErrorCode::UnknownPartition),
        (StromError::TopicExists("t".into()), ErrorCode::TopicExists),
        (StromError::InvalidTopicName("..".into()), ErrorCode::InvalidName),
        (StromError::OffsetOutOfRange { offset: 9, earliest: 0, end: 3 }, ErrorCode::OffsetOutOfRange),
        (StromError::Io { op: IoOp::Write, path: path.clone(), errno: libc::EIO }, ErrorCode::StorageFailed),
        (StromError::LogFailed { log: 0, cause: "fsync".into() }, ErrorCode::StorageFailed),
        (StromError::DiskFull { log: 1 }, ErrorCode::DiskFull),
        (StromError::Corrupt { path, pos: 4096, reason: "crc".into() }, ErrorCode::Corrupt),
        (StromError::Overloaded("mailbox"), ErrorCode::Overloaded),
        (StromError::ShuttingDown, ErrorCode::ShuttingDown),
        (StromError::Unsupported("tmpfs".into()), ErrorCode::Internal),
        (StromError::BadDataDir("meta".into()), ErrorCode::Internal),
        (StromError::BadIndexValue { index: "ts".into(), offset: 3, reason: "missing".into() }, ErrorCode::BadIndexValue),
        (StromError::Cancelled, ErrorCode::Cancelled),
        (StromError::OutOfOrderSequence { producer_id: 4, expected: 2, got: 5 }, ErrorCode::OutOfOrderSequence),
        (StromError::InvalidProducerEpoch { producer_id: 4, epoch: 0, current: 1 }, ErrorCode::InvalidProducerEpoch),
        (StromError::AuthRequired, ErrorCode::AuthRequired),
        (StromError::AuthFailed, ErrorCode::AuthFailed),
        (StromError::NotAuthorized { user: "u".into(), topic: "t".into(), access: crate::auth::Access::Write }, ErrorCode::NotAuthorized),
        (StromError::ReadOnly("produce".into()), ErrorCode::ReadOnly),
    ];
    for (e, code) in &cases {
        assert_eq!(ErrorCode::from(e), *code, "{e:?}");
    }
}

#[test]
fn decode_errors_map_to_reply_codes() {
    // Proves: a bad name is InvalidName, unknown api and version have their own codes, every other failure is Malformed.
    assert_eq!(DecodeError::BadUtf8.code(), ErrorCode::InvalidName);
    assert_eq!(DecodeError::UnknownApi(9).code(), ErrorCode::UnknownApi);
    assert_eq!(DecodeError::UnsupportedVersion(2).code(), ErrorCode::UnsupportedVersion);
    for e in [DecodeError::Short, DecodeError::Trailing, DecodeError::BadValue("x")] {
        assert_eq!(e.code(), ErrorCode::Malformed);
    }
}
