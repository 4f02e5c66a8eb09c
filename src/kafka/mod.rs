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
//! - [`groups`]: consumer groups, committed offsets, producer ids, served
//!   by the [`coordinator`] thread ([`group`]: its state machine;
//!   [`producer_ids`]: durable ids) and the broker's admin thread;
//! - [`errors`]: Strom's errors as Kafka error codes.
pub(crate) mod admin;
pub(crate) mod apis;
pub(crate) mod codec;
pub(crate) mod coordinator;
pub(crate) mod data;
pub(crate) mod errors;
pub mod fuzz;
pub(crate) mod group;
pub(crate) mod groups;
pub(crate) mod producer_ids;
pub(crate) mod sasl;

use std::sync::Arc;

pub(crate) use codec::{KafkaCodec, KafkaCtx};

use crate::broker::admin::Admin;
use coordinator::Coordinator;

/// What every Kafka connection of a server shares.
pub(crate) struct KafkaShared {
    /// The host and port clients are told to connect to: the one broker
    /// (node 0) that leads every partition and coordinates every group.
    pub advertised_host: String,
    pub advertised_port: i32,
    /// Consumer groups and producer ids.
    pub groups: Coordinator,
    /// Committed offsets go through the broker's admin thread.
    pub admin: Arc<Admin>,
    /// The engine's largest batch (DescribeConfigs' `max.message.bytes`).
    pub batch_bytes_max: usize,
    /// Whether SASL is on, and its users (shared with the native listener).
    pub auth: Arc<crate::auth::LiveAuth>,
}

impl KafkaShared {
    pub(crate) fn new(
        advertised_host: String,
        advertised_port: u16,
        groups: Coordinator,
        admin: Arc<Admin>,
        batch_bytes_max: usize,
        auth: Arc<crate::auth::LiveAuth>,
    ) -> Arc<KafkaShared> {
        Arc::new(KafkaShared { advertised_host, advertised_port: i32::from(advertised_port), groups, admin, batch_bytes_max, auth })
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

/// Consumer groups kept at most (past it a join is told to retry).
pub(crate) const GROUPS_MAX: usize = 10_000;
/// Members of one group at most (Kafka's group.max.size is unbounded by
/// default; a bound is ours).
pub(crate) const MEMBERS_PER_GROUP_MAX: usize = 1_000;
/// Kafka's group.min.session.timeout.ms and group.max.session.timeout.ms.
pub(crate) const SESSION_TIMEOUT_MIN_MS: u32 = 6_000;
pub(crate) const SESSION_TIMEOUT_MAX_MS: u32 = 1_800_000;

/// The broker id Strom answers as.
pub(crate) const NODE_ID: i32 = 0;
