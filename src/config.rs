//! Every limit and tunable of the engine, in one place, with its reason.
use std::time::Duration;

use crate::buf::BLOCK_BYTES;
use crate::error::{Result, StromError};

/// When an append is acknowledged and what a crash may lose.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FsyncPolicy {
    /// Acknowledge after the write and an fdatasync covering it completed.
    Always,
    /// Acknowledge after the write completed; fdatasync at most this often.
    /// A machine crash may lose the last interval of acknowledged data.
    Interval(Duration),
    /// Acknowledge after the write completed; no fdatasync for acks (the
    /// kernel and device decide), only at checkpoints and a clean stop.
    /// For benchmarks and disposable data only.
    Never,
}

impl std::str::FromStr for FsyncPolicy {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "always" => Ok(FsyncPolicy::Always),
            "never" => Ok(FsyncPolicy::Never),
            _ => match s.strip_prefix("interval:").map(|v| match v.strip_suffix("us") {
                Some(us) => us.parse::<u64>().map(Duration::from_micros),
                None => v.parse::<u64>().map(Duration::from_millis),
            }) {
                Some(Ok(d)) if !d.is_zero() => Ok(FsyncPolicy::Interval(d)),
                _ => Err(format!("fsync policy must be always, never or interval:MS, not {s:?}")),
            },
        }
    }
}

impl std::fmt::Display for FsyncPolicy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FsyncPolicy::Always => f.write_str("always"),
            FsyncPolicy::Never => f.write_str("never"),
            FsyncPolicy::Interval(d) if d.subsec_nanos() % 1_000_000 == 0 => write!(f, "interval:{}", d.as_millis()),
            // Sub-millisecond intervals (tests, the simulator) print in µs so they parse back.
            FsyncPolicy::Interval(d) => write!(f, "interval:{}us", d.as_micros()),
        }
    }
}

/// Engine configuration. `Default` gives the production defaults.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// Core threads to run; each owns the logs `log % cores == core`.
    pub cores: usize,
    /// Pin core thread i to the i-th CPU of the process's affinity mask
    /// (wrapping when there are more cores than CPUs).
    pub pin_cores: bool,
    /// Number of logs when the data directory is created (fixed afterwards,
    /// so restarting with another core count keeps every partition's log).
    pub logs_on_create: u32,
    pub fsync: FsyncPolicy,
    /// Largest single O_DIRECT write, and size of each log write buffer.
    /// 1 MiB: past this, group-commit throughput stops improving; and 8 KiB
    /// more, so that Kafka's largest default batch (`batch_bytes_max`)
    /// fits with its frame header and the largest padding.
    pub write_buf_bytes: usize,
    /// Write buffers per log: one filling, `write_depth` in flight, and
    /// the rest keep the newest data for tail reads. 64 (64 MiB) keeps
    /// about 50 ms of a log writing 1.3 GB/s: with 8, a tailing consumer
    /// whose fetch round trip took longer than 6 ms fell off the cache
    /// onto disk reads and never caught up (loadgen, 1 consumer: 170 MB/s
    /// read at 670 MB/s written, end-to-end p50 2.5 s; with 32 or more it
    /// kept up, end-to-end p50 5-8 ms).
    pub write_bufs_per_log: usize,
    /// Writes in flight per log. Two lets one commit's fdatasync overlap
    /// the next commit's write.
    pub write_depth: usize,
    /// A commit is sealed at this many bytes even while every write slot is
    /// busy, which bounds each write in flight and so what a small request
    /// can wait behind (at most `write_buf_bytes`; see DURABILITY.md, "When
    /// an ack is sent").
    pub commit_bytes_max: usize,
    /// fdatasync rounds in flight per log. Two: writes that complete while
    /// a round is in flight get their own round at once instead of waiting
    /// for it (durability still advances in round order). Measured against
    /// one (DURABILITY.md, "When an ack is sent"): durable throughput no
    /// lower (higher against the same run's disk ceiling in 5 of 6 pairs),
    /// latency at 150,000 records/s within the noise, 30-50% more fdatasyncs.
    pub fsync_depth: usize,
    /// Registered read buffers per core for READ_FIXED (each write_buf_bytes).
    pub read_bufs_per_core: usize,
    /// Largest RecordBatch accepted. Must fit in a write buffer with a frame header.
    pub batch_bytes_max: usize,
    /// Segment files are rolled past this size.
    pub segment_bytes: u64,
    /// A partition adds an index entry when its batch lies this many log
    /// bytes past its previous entry, which bounds the scan of a read.
    pub index_interval_bytes: u64,
    /// Write a checkpoint after this many bytes were logged since the last.
    pub checkpoint_interval_bytes: u64,
    /// The server-wide retention for topics without their own: a
    /// partition keeps at most this many bytes of its newest data...
    pub retention_bytes: Option<u64>,
    /// ...and data whose batches' max timestamp is at most this old. A
    /// segment is deleted once no partition keeps data in it
    /// (`docs/RETENTION.md`).
    pub retention_age: Option<Duration>,
    /// Requests queued to one core before callers block (push back).
    pub mailbox_capacity: usize,
    /// Reads in progress per core before new reads wait in the mailbox.
    pub reads_inflight_max: usize,
    /// Submission queue entries per ring.
    pub ring_entries: u32,
    /// Partitions per topic, at most.
    pub partitions_per_topic_max: u32,
    /// Buffer bytes registered with the rings of all cores together, at
    /// most (`buf::registration`: what is not registered is served by plain
    /// ops). None: all of them, or as much as `RLIMIT_MEMLOCK` allows; the
    /// engine lowers it to that limit either way.
    pub registered_bytes_max: Option<usize>,
    /// Follow a data directory another process writes, serving what its
    /// durable mark says is durable and writing nothing (`strom serve
    /// --read-only`, [`crate::Engine::open_read_only`]).
    pub read_only: bool,
}

/// Kafka's default `message.max.bytes`, the largest batch its brokers
/// take: Kafka clients size their batches and requests around it, so
/// Strom takes as much by default.
pub const KAFKA_MESSAGE_MAX_BYTES: usize = 1_048_588;

// A batch that large fits a write buffer with its frame header and the
// largest padding frame (what `EngineConfig::validate` checks).
const _: () =
    assert!(KAFKA_MESSAGE_MAX_BYTES + crate::log::frame::HEADER_BYTES + crate::log::frame::PAD_BYTES_MAX <= (1 << 20) + 2 * BLOCK_BYTES);

impl Default for EngineConfig {
    fn default() -> Self {
        let cpus = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
        EngineConfig {
            cores: cpus,
            pin_cores: true,
            logs_on_create: cpus as u32,
            fsync: FsyncPolicy::Always,
            write_buf_bytes: (1 << 20) + 2 * BLOCK_BYTES,
            write_bufs_per_log: 64,
            write_depth: 2,
            commit_bytes_max: 1 << 20,
            fsync_depth: 2,
            read_bufs_per_core: 8,
            batch_bytes_max: KAFKA_MESSAGE_MAX_BYTES,
            segment_bytes: 1 << 30,
            index_interval_bytes: 64 << 10,
            checkpoint_interval_bytes: 256 << 20,
            retention_bytes: None,
            retention_age: None,
            mailbox_capacity: 4096,
            reads_inflight_max: 64,
            ring_entries: 256,
            partitions_per_topic_max: 65_536,
            registered_bytes_max: None,
            read_only: false,
        }
    }
}

impl EngineConfig {
    /// The retention of topics without their own.
    pub fn default_retention(&self) -> crate::partition::Retention {
        crate::partition::Retention {
            age_ms: self.retention_age.map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
            bytes: self.retention_bytes,
        }
    }

    /// Checks the relations between limits; the engine refuses to start otherwise.
    pub fn validate(&self) -> Result<()> {
        let bad = |s: String| Err(StromError::Unsupported(format!("invalid configuration: {s}")));
        if self.cores == 0 {
            return bad("cores must be at least 1".into());
        }
        if self.write_buf_bytes == 0 || !self.write_buf_bytes.is_multiple_of(BLOCK_BYTES) {
            return bad(format!("write_buf_bytes must be a multiple of {BLOCK_BYTES}"));
        }
        // A batch, its frame header and the largest padding frame must fit in one buffer.
        let frame_max = self.batch_bytes_max + crate::log::frame::HEADER_BYTES + crate::log::frame::PAD_BYTES_MAX;
        if frame_max > self.write_buf_bytes {
            return bad(format!(
                "batch_bytes_max {} plus framing must fit in write_buf_bytes {}",
                self.batch_bytes_max, self.write_buf_bytes
            ));
        }
        if self.write_depth == 0 || self.write_bufs_per_log < self.write_depth + 2 {
            return bad("write_bufs_per_log must be at least write_depth + 2".into());
        }
        if self.commit_bytes_max < BLOCK_BYTES || self.fsync_depth == 0 {
            return bad(format!("commit_bytes_max must be at least {BLOCK_BYTES} and fsync_depth at least 1"));
        }
        if self.segment_bytes < self.write_buf_bytes as u64 * 2 || !self.segment_bytes.is_multiple_of(BLOCK_BYTES as u64) {
            return bad("segment_bytes must be a block multiple of at least two write buffers".into());
        }
        if self.read_bufs_per_core == 0 || self.reads_inflight_max == 0 || self.mailbox_capacity == 0 {
            return bad("read_bufs_per_core, reads_inflight_max and mailbox_capacity must be positive".into());
        }
        if self.index_interval_bytes == 0 || self.checkpoint_interval_bytes == 0 {
            return bad("index and checkpoint intervals must be positive".into());
        }
        Ok(())
    }

    /// Log bytes that may be written but not durable at a crash: every
    /// write buffer of a log can hold a commit awaiting its fdatasync. A
    /// break in the log with valid newer frames within this distance may be
    /// a torn tail; further away it is corruption.
    pub fn tear_window_bytes(&self) -> u64 {
        (self.write_bufs_per_log * self.write_buf_bytes) as u64
    }

    /// Small buffers and segments, for tests and the simulator.
    pub fn small_for_tests() -> EngineConfig {
        EngineConfig {
            cores: 1,
            pin_cores: false,
            logs_on_create: 1,
            write_buf_bytes: 64 << 10,
            write_bufs_per_log: 4,
            read_bufs_per_core: 2,
            batch_bytes_max: 32 << 10,
            segment_bytes: 256 << 10,
            index_interval_bytes: 8 << 10,
            checkpoint_interval_bytes: 128 << 10,
            ring_entries: 64,
            ..EngineConfig::default()
        }
    }
}

/// Checks that every fsync policy that parses displays as text that parses
/// back to the same policy, and panics if not. The fuzz target and
/// `tests/fuzz_replay.rs` both call it, so a saved input replays under
/// `cargo test` exactly as it was fuzzed.
#[doc(hidden)]
pub fn fuzz_check(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(policy) = text.parse::<FsyncPolicy>() else {
        return;
    };
    if let FsyncPolicy::Interval(d) = policy {
        assert!(!d.is_zero(), "{text:?} parsed to a zero interval");
    }
    let shown = policy.to_string();
    assert_eq!(shown.parse::<FsyncPolicy>(), Ok(policy), "{text:?} displays as {shown:?}");
}
