//! Strom's errors as Kafka error codes: the code a Kafka client acts on
//! (retry, refresh metadata, reset its offset, give up) for what happened.
use kafka_protocol::ResponseError as K;

use crate::broker::BrokerError;
use crate::error::{BatchError, StromError};

/// The Kafka error code for a broker error.
pub(crate) fn code(e: &BrokerError) -> i16 {
    match e {
        BrokerError::Failed(e) => strom_code(e),
        BrokerError::InvalidBatch(_) => K::InvalidRecord.code(),
        BrokerError::StorageFailed(_) => K::KafkaStorageError.code(),
        BrokerError::Internal(_) => K::UnknownServerError.code(),
        BrokerError::Cancelled => K::RequestTimedOut.code(),
    }
}

fn strom_code(e: &StromError) -> i16 {
    match e {
        StromError::InvalidBatch(b) => batch_code(b),
        StromError::UnknownTopic(_) | StromError::UnknownPartition { .. } => K::UnknownTopicOrPartition.code(),
        StromError::TopicExists(_) => K::TopicAlreadyExists.code(),
        StromError::InvalidTopicName(_) => K::InvalidTopicException.code(),
        // Below the start (retention) or past the end: the client resets
        // its position by its auto.offset.reset.
        StromError::OffsetOutOfRange { .. } => K::OffsetOutOfRange.code(),
        // A failed or full log refuses writes until an operator acts: the
        // storage error makes clients retry, then report.
        StromError::Io { .. } | StromError::LogFailed { .. } | StromError::DiskFull { .. } | StromError::Corrupt { .. } => {
            K::KafkaStorageError.code()
        }
        StromError::BadIndexValue { .. } => K::InvalidRecord.code(),
        // An idempotent producer's gap: librdkafka and the Java client
        // treat it as fatal for the producer (records may be lost).
        StromError::OutOfOrderSequence { .. } => K::OutOfOrderSequenceNumber.code(),
        // A fenced, older instance of the producer.
        StromError::InvalidProducerEpoch { .. } => K::InvalidProducerEpoch.code(),
        // Pushed back: retriable.
        StromError::Overloaded(_) => K::RequestTimedOut.code(),
        StromError::InvalidArgument(_) | StromError::Unsupported(_) => K::InvalidRequest.code(),
        // A stopping broker: the client refreshes its metadata and retries
        // (here, once the server is back).
        StromError::ShuttingDown => K::NotLeaderOrFollower.code(),
        StromError::Cancelled => K::RequestTimedOut.code(),
        StromError::BadDataDir(_) => K::KafkaStorageError.code(),
        StromError::AuthRequired | StromError::AuthFailed => K::SaslAuthenticationFailed.code(),
        StromError::NotAuthorized { topic, .. } if topic == "*" => K::ClusterAuthorizationFailed.code(),
        StromError::NotAuthorized { .. } => K::TopicAuthorizationFailed.code(),
        // Kafka has no read-only broker; a policy refusal is what a client
        // reports without retrying.
        StromError::ReadOnly(_) => K::PolicyViolation.code(),
    }
}

fn batch_code(e: &BatchError) -> i16 {
    match e {
        BatchError::TooLarge { .. } => K::MessageTooLarge.code(),
        BatchError::BadCrc { .. } => K::CorruptMessage.code(),
        BatchError::UnsupportedCompression(_) => K::UnsupportedCompressionType.code(),
        // Magic 0 and 1 (the old message formats) are not stored.
        BatchError::BadMagic(_) => K::UnsupportedForMessageFormat.code(),
        _ => K::CorruptMessage.code(),
    }
}

/// A message for a client (Kafka's error_message fields), bounded.
pub(crate) fn message(e: &BrokerError) -> String {
    e.to_string().chars().take(500).collect()
}
