//! The counters of one core's server, for reports and tests.
use super::codec::Codec;
use super::task::NetCore;
use crate::core::task::CoreGauges;

/// Counters of one core's server, for reports.
#[derive(Debug, Clone, Default)]
pub struct NetStats {
    pub accepted: u64,
    pub refused_connections: u64,
    pub requests: u64,
    pub forwarded: u64,
    pub frame_errors: u64,
    pub timeouts: u64,
    /// Readers closed because their unsent replies held the core's buffer
    /// budget without progress (see `NetCore::evict_stuck_readers`).
    pub stuck_readers_closed: u64,
    /// Replies sent straight from a registered reply buffer (SEND_ZC).
    pub fixed_sends: u64,
    /// The core's registered reply buffers free now (all of them when idle).
    pub reply_bufs_free: usize,
    /// Request and reply bytes held now (the `core_buffered_bytes_max` count).
    pub held_bytes: usize,
    /// Connection slots in use now (closing ones included).
    pub connections: usize,
    /// Receive buffer bytes kept in the pool now.
    pub pooled_bytes: usize,
    /// Ops of this core's ring in flight now (logs and network together):
    /// the op table slots in use. Idle: one accept per listener and one
    /// poll per connection.
    pub ops_in_flight: usize,
    /// The core's registered read buffers free now (all when no read runs).
    pub read_bufs_free: usize,
    /// Reads of this core that went to the disk (`READ_FIXED`), since start.
    pub reads_from_disk: u64,
    /// The core's invariant audits ([`crate::core::CoreStats`]): each must stay 0.
    pub audit_overlapping_writes: u64,
    pub audit_served_beyond_durable: u64,
    pub audit_buffer_reuse: u64,
}

impl<C: Codec> NetCore<C> {
    /// The counters now, with the gauges of the core the task runs on.
    pub(super) fn stats_now(&self, core: CoreGauges) -> NetStats {
        NetStats {
            held_bytes: self.held_bytes + self.rbuf_bytes,
            connections: self.conns.len(),
            pooled_bytes: self.pool.bytes(),
            forwarded: self.broker.forwarded(),
            reply_bufs_free: core.reply_bufs_free,
            read_bufs_free: core.read_bufs_free,
            ops_in_flight: core.ops_in_flight,
            reads_from_disk: core.stats.reads_from_disk,
            audit_overlapping_writes: core.stats.audit_overlapping_writes,
            audit_served_beyond_durable: core.stats.audit_served_beyond_durable,
            audit_buffer_reuse: core.stats.audit_buffer_reuse,
            ..self.stats.clone()
        }
    }
}

impl std::fmt::Display for NetStats {
    /// One line of `key=value` pairs, what `strom serve` prints on SIGUSR1.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "connections={} ops_in_flight={} reply_bufs_free={} read_bufs_free={} held_bytes={} pooled_bytes={} \
             accepted={} refused_connections={} requests={} forwarded={} frame_errors={} timeouts={} stuck_readers_closed={} fixed_sends={} reads_from_disk={} \
             audit_overlapping_writes={} audit_served_beyond_durable={} audit_buffer_reuse={}",
            self.connections,
            self.ops_in_flight,
            self.reply_bufs_free,
            self.read_bufs_free,
            self.held_bytes,
            self.pooled_bytes,
            self.accepted,
            self.refused_connections,
            self.requests,
            self.forwarded,
            self.frame_errors,
            self.timeouts,
            self.stuck_readers_closed,
            self.fixed_sends,
            self.reads_from_disk,
            self.audit_overlapping_writes,
            self.audit_served_beyond_durable,
            self.audit_buffer_reuse
        )
    }
}
