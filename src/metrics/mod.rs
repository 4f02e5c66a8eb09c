//! One metrics registry per core: a fixed, typed set of counters and
//! gauges that the rooms of a core count into, read in-process
//! ([`crate::Engine::metrics`], [`crate::server::Server::metrics`]) and over
//! the network (the native `Metrics` api, docs/PROTOCOL.md).
//!
//! The registry ([`Metrics`]) is made of sections, one per room that
//! counts, and each room owns its section and counts into it with a plain
//! field increment (no atomics, no allocation: a core's rooms run on its
//! thread only):
//!
//! - [`CoreMetrics`], the core (`src/core/`): appends staged and refused,
//!   requests deferred, checkpoints; the ring's ops in flight and the
//!   buffer audit are sampled when the registry is read;
//! - [`LogMetrics`], each log (`src/log/journal.rs`), summed over the
//!   core's logs: bytes written, writes, fdatasyncs, disk-full rewinds and
//!   retries, the overlapping-write audit;
//! - [`ReadMetrics`], the read path (`src/read/`): reads, disk reads, bytes
//!   read from disk and served (from disk), read-ahead windows, the
//!   served-beyond-durable audit; free read and reply buffers and the
//!   windows open (sampled);
//! - [`BrokerMetrics`], the broker's part on the core
//!   (`src/broker/dispatch.rs`): requests forwarded to another core,
//!   refusals, and the archive thread's reads (`src/broker/archives.rs`);
//! - [`ConnMetrics`], the core's server task (`src/server/`): connections
//!   accepted, refused and timed out, requests, frame errors, zero-copy
//!   sends; connections open and bytes held (sampled).
//!
//! Every metric has a name that says its unit ([`Metric::name`]: these are
//! the names an exporter will use, so they follow Prometheus' conventions:
//! `strom_` first, `_total` for a counter, a unit such as `_bytes` where
//! there is one), a kind and one line of help. Registries merge by summing
//! ([`Metrics::merge`]), iterate in one fixed order ([`Metrics::iter`]), and
//! print as one line of `name=value` pairs (`Display`). [`prometheus`]
//! renders them, with the stage histograms, for a Prometheus scrape.
use std::fmt;
use std::ops::Index;

pub mod prometheus;
pub mod requests;
#[cfg(test)]
mod tests;

/// Whether a metric only grows (from the start of the process) or is a
/// level sampled when the registry is read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Counter,
    Gauge,
}

/// Declares the sections, the [`Metric`] enum and the [`Metrics`] registry
/// from one table, so that a metric's field, name, kind and help are
/// written once. Each entry: `field => Variant, Kind, "name", "help";`.
macro_rules! registry {
    ($(
        $(#[doc = $section_doc:literal])*
        $section:ident: $Section:ident {
            $( $field:ident => $Variant:ident, $kind:ident, $name:literal, $help:literal; )*
        }
    )*) => {
        $(
            $(#[doc = $section_doc])*
            #[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
            pub struct $Section {
                $( #[doc = $help] pub $field: u64, )*
            }

            impl $Section {
                /// Adds `other`'s values to these.
                pub fn merge(&mut self, other: &$Section) {
                    $( self.$field += other.$field; )*
                }
            }
        )*

        /// Every metric of the registry, in its fixed order.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum Metric {
            $( $( $Variant, )* )*
        }

        impl Metric {
            /// Every metric, in the order [`Metrics::iter`] and the wire use.
            pub const ALL: &'static [Metric] = &[ $( $( Metric::$Variant, )* )* ];

            /// The exported name, with its unit.
            pub fn name(self) -> &'static str {
                match self { $( $( Metric::$Variant => $name, )* )* }
            }

            pub fn kind(self) -> Kind {
                match self { $( $( Metric::$Variant => Kind::$kind, )* )* }
            }

            /// One line saying what is counted, and where.
            pub fn help(self) -> &'static str {
                match self { $( $( Metric::$Variant => $help, )* )* }
            }
        }

        /// One core's registry: the section of each room that counts.
        #[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
        pub struct Metrics {
            $( pub $section: $Section, )*
        }

        impl Metrics {
            /// A metric's value.
            pub fn get(&self, m: Metric) -> u64 {
                *self.slot(m)
            }

            fn slot(&self, m: Metric) -> &u64 {
                match m { $( $( Metric::$Variant => &self.$section.$field, )* )* }
            }

            fn slot_mut(&mut self, m: Metric) -> &mut u64 {
                match m { $( $( Metric::$Variant => &mut self.$section.$field, )* )* }
            }

            /// Adds `other`'s values to these (the cores of a server summed).
            pub fn merge(&mut self, other: &Metrics) {
                $( self.$section.merge(&other.$section); )*
            }
        }
    };
}

registry! {
    /// Counted by the core (`src/core/`).
    core: CoreMetrics {
        appends => Appends, Counter, "strom_appends_total",
            "Batches staged into a log's commit buffer (each acknowledged once durable).";
        records => RecordsAppended, Counter, "strom_records_appended_total",
            "Records in the batches staged: over strom_log_fsyncs_total, the records each fdatasync made durable.";
        appended_bytes => AppendedBytes, Counter, "strom_appended_bytes_total",
            "Batch bytes staged (record batches as the producers sent them, frames not counted).";
        appends_refused => AppendsRefused, Counter, "strom_appends_refused_total",
            "Batches refused on their core after routing: a failed log, a full disk, a stop.";
        appends_duplicate => AppendsDuplicate, Counter, "strom_appends_duplicate_total",
            "Batches an idempotent producer sent again, answered with their first offsets and not stored.";
        producers_forgotten => ProducersForgotten, Counter, "strom_producers_forgotten_total",
            "Idempotent producer ids a partition forgot, its least recently used, to stay within 1,024.";
        deferred => RequestsDeferred, Counter, "strom_requests_deferred_total",
            "Requests a core held back until a write buffer or read slot was free.";
        checkpoints => Checkpoints, Counter, "strom_checkpoints_total",
            "Checkpoints written.";
        ops_in_flight => RingOpsInFlight, Gauge, "strom_ring_ops_in_flight",
            "Ops in flight on the core's ring, logs and network together.";
        startup_scan_us => StartupScanMicroseconds, Gauge, "strom_startup_scan_microseconds",
            "Time the core's logs took to recover at start (the scan after their checkpoints), summed over its logs.";
        startup_scan_bytes => StartupScanBytes, Gauge, "strom_startup_scan_bytes",
            "Log bytes read by the core's start-up recovery scans.";
        audit_buffer_reuse => AuditBufferReuse, Counter, "strom_audit_buffer_reuse_total",
            "Audit, must stay 0: registered buffers handed out while an op still owned them.";
    }
    /// Counted by each log (`src/log/journal.rs`), summed over the core's logs.
    log: LogMetrics {
        bytes_written => LogBytesWritten, Counter, "strom_log_bytes_written_total",
            "Log bytes written with O_DIRECT, frames and padding.";
        writes => LogWrites, Counter, "strom_log_writes_total",
            "Commits written, one O_DIRECT write each.";
        fsyncs => LogFsyncs, Counter, "strom_log_fsyncs_total",
            "fdatasync rounds completed (one per segment file holding unsynced writes).";
        disk_full_rewinds => LogDiskFullRewinds, Counter, "strom_log_disk_full_rewinds_total",
            "Times a log refused its unwritten commits for a full disk and rewound.";
        disk_full_retries => LogDiskFullRetries, Counter, "strom_log_disk_full_retries_total",
            "Times a log wrote commits that found the disk full again in place.";
        audit_overlapping_writes => AuditOverlappingWrites, Counter, "strom_audit_overlapping_writes_total",
            "Audit, must stay 0: writes that would have started below the acknowledged or durable position.";
        retention_deleted_bytes => RetentionDeletedBytes, Counter, "strom_retention_deleted_bytes_total",
            "Log bytes of segments retention deleted (no partition had live data in them).";
        segments_recycled => LogSegmentsRecycled, Counter, "strom_log_segments_recycled_total",
            "Segments retention dropped that became the log's spare (renamed, not removed).";
        segments_reused => LogSegmentsReused, Counter, "strom_log_segments_reused_total",
            "Segment rolls that renamed the spare into place instead of creating a file.";
        live_bytes => LogLiveBytes, Gauge, "strom_log_live_bytes",
            "Log bytes in segments holding data some topic keeps (as of the last retention pass).";
        reclaimable_bytes => LogReclaimableBytes, Gauge, "strom_log_reclaimable_bytes",
            "Log bytes in segments whose data no topic keeps, not yet deleted (active, read, checkpoint, older live).";
        segments => LogSegments, Gauge, "strom_log_segments",
            "Segment files the core's logs have now (the spare not counted).";
        log_bytes => LogBytes, Gauge, "strom_log_bytes",
            "Log bytes the core's segments hold now, from the oldest segment's start to the written end.";
        failed => LogsFailed, Gauge, "strom_logs_failed",
            "Logs that stopped accepting writes after a failed write or fsync (until restarted).";
        disk_full => LogsDiskFull, Gauge, "strom_logs_disk_full",
            "Logs whose last write found their disk full, none completed since (appends are refused until space frees).";
        follow_marks => FollowMarks, Counter, "strom_follow_marks_total",
            "A read-only follower's: durable marks of the writer that moved a log forward.";
        follow_bytes => FollowBytes, Counter, "strom_follow_bytes_total",
            "A read-only follower's: log bytes scanned up to the writer's durable marks (and served from then on).";
    }
    /// Counted by the read path (`src/read/`).
    read: ReadMetrics {
        reads => Reads, Counter, "strom_reads_total",
            "Reads started: fetches (a long poll again when it wakes) and time lookups.";
        reads_from_disk => ReadsFromDisk, Counter, "strom_reads_from_disk_total",
            "Disk reads (READ_FIXED into a registered read buffer) of log bytes no longer in the tail cache.";
        reads_ahead => ReadsAhead, Counter, "strom_reads_ahead_total",
            "Disk reads a read pushed for its runs ahead, beside the one its cursor waits on.";
        disk_bytes => ReadDiskBytes, Counter, "strom_read_disk_bytes_total",
            "Log bytes the read path's disk reads returned (what the disk did for readers).";
        served_bytes => ReadServedBytes, Counter, "strom_read_served_bytes_total",
            "Batch bytes fetches answered with, from the tail cache or from disk.";
        served_disk_bytes => ReadServedDiskBytes, Counter, "strom_read_served_from_disk_bytes_total",
            "Batch bytes fetches answered with that came from disk reads: disk bytes over these is the read amplification.";
        sidecars_rebuilt => SidecarsRebuilt, Counter, "strom_sidecars_rebuilt_total",
            "Sidecars of sealed segments rebuilt by scanning their frames (missing after a crash, lost or refused).";
        ahead_windows => ReadAheadWindows, Counter, "strom_read_ahead_windows_total",
            "Read-ahead windows opened: a catch-up fetch stopped by its size left its cursor reading the runs ahead.";
        ahead_hits => ReadAheadHits, Counter, "strom_read_ahead_hits_total",
            "Fetches that took over a read-ahead window at their offset (its disk reads done or in flight).";
        ahead_misses => ReadAheadMisses, Counter, "strom_read_ahead_misses_total",
            "Fetches of a partition with read-ahead windows that could use none (another offset or position).";
        ahead_discarded_bytes => ReadAheadDiscardedBytes, Counter, "strom_read_ahead_discarded_bytes_total",
            "Bytes read (or being read) into read-ahead windows dropped unused: idle, evicted, reclaimed or stale.";
        shared_bytes => ReadSharedBytes, Counter, "strom_read_shared_bytes_total",
            "Bytes a read copied from another read's chunk of the same log (done, or waited for) instead of reading them from disk.";
        ahead_windows_open => ReadAheadWindowsOpen, Gauge, "strom_read_ahead_windows",
            "Read-ahead windows open now.";
        ahead_held_bytes => ReadAheadHeldBytes, Gauge, "strom_read_ahead_held_bytes",
            "Bytes read-ahead windows hold or are reading now, in the core's read buffers.";
        read_bufs_free => ReadBufsFree, Gauge, "strom_read_bufs_free",
            "Registered read buffers free (all of them when no read runs).";
        reply_bufs_free => ReplyBufsFree, Gauge, "strom_reply_bufs_free",
            "Registered reply buffers free (all of them when no reply is being sent).";
        audit_served_beyond_durable => AuditServedBeyondDurable, Counter, "strom_audit_served_beyond_durable_total",
            "Audit, must stay 0: batches a read was about to serve past what is acknowledged.";
    }
    /// Counted by the broker's part on the core (`src/broker/dispatch.rs`).
    broker: BrokerMetrics {
        forwarded => RequestsForwarded, Counter, "strom_requests_forwarded_total",
            "Requests sent to the mailbox of the core owning their partition.";
        denied => AuthDenied, Counter, "strom_auth_denied_total",
            "Requests (or parts of a Kafka request) refused because the user lacks the permission (NotAuthorized).";
        archive_reads => ArchiveReads, Counter, "strom_archive_reads_total",
            "Requests served from archives by the archive thread: fetches (those that waited at an archive's end among them), time and index lookups, range queries.";
        archive_read_bytes => ArchiveReadBytes, Counter, "strom_archive_read_bytes_total",
            "Bytes read from archive files since they were opened (their footers and indices included).";
    }
    /// Counted by the core's server task (`src/server/`): its connections.
    conn: ConnMetrics {
        accepted => ConnectionsAccepted, Counter, "strom_connections_accepted_total",
            "Connections accepted under the connection limit.";
        refused_connections => ConnectionsRefused, Counter, "strom_connections_refused_total",
            "Connections refused at the connection limit (TooManyConnections).";
        timeouts => ConnectionTimeouts, Counter, "strom_connection_timeouts_total",
            "Connections closed by a timeout: a frame slower than the header timeout, idle, a stuck send.";
        stuck_readers_closed => StuckReadersClosed, Counter, "strom_stuck_readers_closed_total",
            "Connections closed because their unsent replies held the core's buffer or reply budget without progress.";
        requests => Requests, Counter, "strom_requests_total",
            "Request frames read and dispatched, the undecodable ones included.";
        frame_errors => FrameErrors, Counter, "strom_frame_errors_total",
            "Frames refused: undecodable, an unknown api or version, a length out of range.";
        received_bytes => NetReceivedBytes, Counter, "strom_network_received_bytes_total",
            "Bytes received from the core's connections.";
        sent_bytes => NetSentBytes, Counter, "strom_network_sent_bytes_total",
            "Bytes sent to the core's connections.";
        fixed_sends => ZeroCopySends, Counter, "strom_zero_copy_sends_total",
            "Replies sent straight from a registered reply buffer (SEND_ZC).";
        connections => ConnectionsOpen, Gauge, "strom_connections_open",
            "Connection slots in use, closing ones included.";
        held_bytes => BufferedBytes, Gauge, "strom_buffered_bytes",
            "Request, reply and partial-frame bytes the core holds (what core_buffered_bytes_max bounds).";
        pooled_bytes => RecvPoolBytes, Gauge, "strom_recv_pool_bytes",
            "Receive-buffer bytes kept in the core's pool.";
        budget_waits => FetchBudgetWaits, Counter, "strom_fetch_budget_waits_total",
            "Times a Fetch of the core's connections, with data to answer, waited for the core's reply budget.";
        reply_budget_used_bytes => ReplyBudgetUsedBytes, Gauge, "strom_reply_budget_used_bytes",
            "Fetch reply bytes being built or unsent for the core's connections (what reply_budget_bytes bounds).";
        reply_budget_peak_bytes => ReplyBudgetPeakBytes, Gauge, "strom_reply_budget_peak_bytes",
            "The most reply budget the core has had in use at once since it started.";
        fetches_waiting_budget => FetchesWaitingBudget, Gauge, "strom_fetches_waiting_budget",
            "Fetches of the core's connections waiting now for its reply budget (parked long polls are not).";
        subscriptions => SubscriptionsOpen, Gauge, "strom_subscriptions_open",
            "Subscriptions of the core's connections, with ended ones whose last read is still out (bounded per core).";
        auth_successes => AuthSuccesses, Counter, "strom_auth_successes_total",
            "Connections that authenticated (a token, or SASL/PLAIN).";
        auth_failures => AuthFailures, Counter, "strom_auth_failures_total",
            "Authentications refused: the token, or SASL user and password, name no user (the connection is closed).";
        auth_required => AuthRequired, Counter, "strom_auth_required_total",
            "Requests refused because their connection had not authenticated (AuthRequired, or a Kafka connection closed).";
    }
}

impl Metric {
    /// The metric exported as `name`, if this build has it.
    pub fn from_name(name: &str) -> Option<Metric> {
        Metric::ALL.iter().copied().find(|m| m.name() == name)
    }

    /// An invariant audit: it must stay 0 in every run (docs/TESTING.md).
    pub fn is_audit(self) -> bool {
        self.name().starts_with("strom_audit_")
    }
}

impl Metrics {
    /// Every metric with its value, in [`Metric::ALL`] order.
    pub fn iter(&self) -> impl Iterator<Item = (Metric, u64)> + '_ {
        Metric::ALL.iter().map(|&m| (m, self.get(m)))
    }

    /// The sum of the audit counters: 0 unless an invariant was broken.
    pub fn audit_violations(&self) -> u64 {
        self.iter().filter(|(m, _)| m.is_audit()).map(|(_, v)| v).sum()
    }

    /// A registry from `(name, value)` pairs, as the `Metrics` api answers;
    /// names this build does not know are returned, not dropped silently.
    pub fn from_pairs<'a>(pairs: impl IntoIterator<Item = (&'a str, u64)>) -> (Metrics, Vec<&'a str>) {
        let mut m = Metrics::default();
        let mut unknown = Vec::new();
        for (name, value) in pairs {
            match Metric::from_name(name) {
                Some(metric) => *m.slot_mut(metric) = value,
                None => unknown.push(name),
            }
        }
        (m, unknown)
    }
}

impl Index<Metric> for Metrics {
    type Output = u64;

    fn index(&self, m: Metric) -> &u64 {
        self.slot(m)
    }
}

impl fmt::Display for Metrics {
    /// One line of `name=value` pairs, in [`Metric::ALL`] order (what
    /// `strom serve` prints on SIGUSR1).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, (m, v)) in self.iter().enumerate() {
            let sep = if i == 0 { "" } else { " " };
            write!(f, "{sep}{}={v}", m.name())?;
        }
        Ok(())
    }
}
