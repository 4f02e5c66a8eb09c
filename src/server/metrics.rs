//! The server's part of its core's metrics: the connection section the
//! task counts into (`NetCore::stats`, a [`ConnMetrics`]), its gauges
//! sampled when the registry is read, and the registry of the core it
//! runs on ([`crate::metrics`]).
use super::codec::Codec;
use super::task::NetCore;
use crate::broker::Command;
use crate::core::task::TaskCore;
use crate::io::Io;
use crate::metrics::requests::{API_OTHER, APIS, Api};
use crate::metrics::{ConnMetrics, Metrics};

impl<C: Codec> NetCore<C> {
    /// The core's registry now: the core's own sections (its logs' and read
    /// path's included), the broker's on this core, and this task's.
    pub(super) fn metrics_now<I: Io>(&self, core: &TaskCore<'_, I>) -> Metrics {
        Metrics { broker: self.broker.metrics(), conn: self.conn_metrics(), ..core.metrics() }
    }

    /// The connection counters, with the connections open and the bytes
    /// held and pooled now.
    fn conn_metrics(&self) -> ConnMetrics {
        ConnMetrics {
            connections: self.conns.len() as u64,
            held_bytes: (self.held_bytes + self.rbuf_bytes) as u64,
            pooled_bytes: self.pool.bytes() as u64,
            // The budget is shared with the cores that build the replies:
            // its gauges and its count of waits are read from it.
            reply_budget_used_bytes: self.budget.used_bytes() as u64,
            reply_budget_peak_bytes: self.budget.peak_bytes() as u64,
            fetches_waiting_budget: self.budget.waiting() as u64,
            budget_waits: self.budget.waits_total(),
            subscriptions: self.streams.slots() as u64,
            ..self.metrics
        }
    }
}

/// The api a command is counted under ([`APIS`]). A Many (one request of a
/// protocol that names many partitions) counts as its first command's.
pub(super) fn api_of(cmd: &Command<'_>) -> Api {
    let name = match cmd {
        Command::Produce { .. } => "produce",
        Command::Fetch { .. } => "fetch",
        Command::ListOffsets { .. } => "list_offsets",
        Command::Metadata { .. } => "metadata",
        Command::CreateTopic { .. } => "create_topic",
        Command::AlterTopic { .. } => "alter_topic",
        Command::DescribeTopic { .. } => "describe_topic",
        Command::DeleteTopic { .. } => "delete_topic",
        Command::CommitOffset { .. } => "commit_offset",
        Command::FetchOffset { .. } => "fetch_offset",
        Command::Stats { .. } => "stats",
        Command::Metrics => "metrics",
        Command::ServerInfo => "server_info",
        Command::Query { .. } => "query",
        Command::Subscribe { .. } => "subscribe",
        Command::Protocol(_) => "protocol",
        Command::Authenticate { .. } => "authenticate",
        Command::Many { commands, .. } => return commands.first().map_or(API_OTHER, api_of),
        Command::Grant { .. } | Command::Cancel { .. } => return API_OTHER,
    };
    // A match on a constant table: the compiler folds it to the index.
    APIS.iter().position(|a| *a == name).map_or(API_OTHER, |i| i as Api)
}
