//! The Kafka APIs and versions the listener serves (docs/KAFKA.md).
//!
//! The ranges are those the common clients need (librdkafka 2.0.2 and
//! 2.16, kafka-python 3): their ApiVersions negotiation picks the highest
//! version both sides know, so a range is only as wide as what Strom
//! answers correctly, and never starts above what an old client needs
//! (librdkafka before 2.11.1 stops compressing when Produce's minimum is
//! above 0, and librdkafka 2.0.2 turns consumer groups off when a group
//! API's minimum is above 0).
use kafka_protocol::messages::ApiKey;

/// One served API: its key and the versions advertised.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Served {
    pub key: ApiKey,
    pub min: i16,
    pub max: i16,
}

const fn served(key: ApiKey, min: i16, max: i16) -> Served {
    Served { key, min, max }
}

/// Every API the listener answers, in api key order.
pub(crate) const SERVED: &[Served] = &[
    // Versions 0-2 are advertised (see the module doc) and answered with
    // UNSUPPORTED_VERSION: the message format they carry (magic 0 and 1)
    // is one Strom does not store.
    served(ApiKey::Produce, 0, 9),
    served(ApiKey::Fetch, 4, 12),
    served(ApiKey::ListOffsets, 1, 7),
    served(ApiKey::Metadata, 0, 9),
    served(ApiKey::OffsetCommit, 2, 8),
    served(ApiKey::OffsetFetch, 1, 8),
    served(ApiKey::FindCoordinator, 0, 3),
    served(ApiKey::JoinGroup, 0, 7),
    served(ApiKey::Heartbeat, 0, 4),
    served(ApiKey::LeaveGroup, 0, 4),
    served(ApiKey::SyncGroup, 0, 5),
    // SASL/PLAIN (`sasl.rs`): version 0's handshake is followed by a bare
    // token, version 1's by SaslAuthenticate.
    served(ApiKey::SaslHandshake, 0, 1),
    served(ApiKey::ApiVersions, 0, 3),
    served(ApiKey::CreateTopics, 2, 7),
    served(ApiKey::DeleteTopics, 1, 6),
    served(ApiKey::InitProducerId, 0, 4),
    served(ApiKey::DescribeConfigs, 1, 4),
    served(ApiKey::SaslAuthenticate, 0, 2),
];

/// Produce versions below this are advertised but refused.
pub(crate) const PRODUCE_MIN_DECODED: i16 = 3;

/// Whether `key` at `version` is served; `None` when the key is not.
pub(crate) fn serves(key: ApiKey, version: i16) -> Option<bool> {
    SERVED.iter().find(|s| s.key == key).map(|s| (s.min..=s.max).contains(&version))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_advertised_version_is_one_the_codec_can_decode_or_refuses_on_purpose() {
        // Proves: the table never advertises a version the crate cannot
        // decode, except Produce 0-2, which are refused by design.
        for s in SERVED {
            let crate_range = s.key.valid_versions();
            let decoded_min = if s.key == ApiKey::Produce { PRODUCE_MIN_DECODED } else { s.min };
            assert!(crate_range.min <= decoded_min && s.max <= crate_range.max, "{:?} {}..={} vs {:?}", s.key, s.min, s.max, crate_range);
        }
        assert_eq!(serves(ApiKey::Fetch, 3), Some(false));
        assert_eq!(serves(ApiKey::Fetch, 12), Some(true));
        assert_eq!(serves(ApiKey::SaslHandshake, 0), Some(true));
        assert_eq!(serves(ApiKey::SaslHandshake, 2), Some(false));
        assert_eq!(serves(ApiKey::DescribeGroups, 0), None);
    }

    #[test]
    fn group_apis_start_at_version_zero() {
        // Proves: librdkafka 2.0.2 keeps consumer groups on (it turns them
        // off when a group API's minimum is above 0).
        for key in [ApiKey::JoinGroup, ApiKey::SyncGroup, ApiKey::Heartbeat, ApiKey::LeaveGroup, ApiKey::FindCoordinator] {
            assert_eq!(SERVED.iter().find(|s| s.key == key).map(|s| s.min), Some(0), "{key:?}");
        }
        assert_eq!(SERVED.iter().find(|s| s.key == ApiKey::Produce).map(|s| s.min), Some(0));
    }
}
