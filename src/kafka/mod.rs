//! Kafka's wire protocol, beside the native one: `strom serve
//! --kafka-listen ADDR` (docs/KAFKA.md).
//!
//! A Kafka request names many partitions; the codec decodes it with the
//! `kafka-protocol` crate and runs it as one broker
//! [`Command::Many`](crate::broker::Command::Many) of per-partition
//! commands, whose answers come back together and are encoded into the
//! Kafka response. Record batches pass through as the bytes they are:
//! RecordBatch v2 is what Strom stores.
//!
//! - [`apis`]: which APIs and versions are served;
//! - [`codec`]: framing, request headers, the [`KafkaCodec`] itself;
//! - [`data`]: Produce, Fetch, ListOffsets;
//! - [`admin`]: Metadata, topics, configs, the coordinator's address;
//! - [`errors`]: Strom's errors as Kafka error codes.
pub(crate) mod admin;
pub(crate) mod apis;
pub(crate) mod codec;
pub(crate) mod data;
pub(crate) mod errors;

use std::sync::Arc;

pub(crate) use codec::{KafkaCodec, KafkaCtx};

/// What every Kafka connection of a server shares.
pub(crate) struct KafkaShared {
    /// The host and port clients are told to connect to: the one broker
    /// (node 0) that leads every partition and coordinates every group.
    pub advertised_host: String,
    pub advertised_port: i32,
}

impl KafkaShared {
    pub(crate) fn new(advertised_host: String, advertised_port: u16) -> Arc<KafkaShared> {
        Arc::new(KafkaShared { advertised_host, advertised_port: i32::from(advertised_port) })
    }
}

/// `host:port` (an IPv6 host in brackets) as the host and port Kafka
/// clients are told.
pub(crate) fn split_host_port(addr: &str) -> crate::error::Result<(String, u16)> {
    let bad = || crate::error::StromError::InvalidArgument(format!("kafka advertised address {addr:?} is not host:port"));
    let (host, port) = addr.rsplit_once(':').ok_or_else(bad)?;
    let port = port.parse::<u16>().map_err(|_| bad())?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if host.is_empty() {
        return Err(bad());
    }
    Ok((host.to_string(), port))
}

/// The broker id Strom answers as.
pub(crate) const NODE_ID: i32 = 0;
