//! The server's part of its core's metrics: the connection section the
//! task counts into (`NetCore::stats`, a [`ConnMetrics`]), its gauges
//! sampled when the registry is read, and the registry of the core it
//! runs on ([`crate::metrics`]).
use super::codec::Codec;
use super::task::NetCore;
use crate::core::task::TaskCore;
use crate::io::Io;
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
