//! loadgen's command line: its flags ([`Args`]), the scenarios they start
//! from ([`Scenario`]), and the settings a run uses once both are merged
//! and checked ([`Settings`]).
use std::path::PathBuf;

use clap::{Parser, ValueEnum};
use strom::config::{EngineConfig, FsyncPolicy};

use crate::{limits, records};

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum Scenario {
    /// 4 producers, 1 KiB records, 64 KiB batches, fsync always, one tail consumer: durable throughput vs the disk.
    DurableThroughput,
    /// As durable-throughput with 100-byte records: records per second.
    SmallMessages,
    /// One producer, four consumers each reading every partition at the tail.
    Fanout,
    /// As fanout, the consumers following by subscription (pushed, with credit).
    Subscribe,
    /// Producers write for a while first; then consumers read it all from
    /// disk (READ_FIXED) while the producers go on.
    CatchUp,
    /// As durable-throughput over 10,000 partitions.
    ManyPartitions,
    /// A closed-loop probe finds the maximum rate, then an open loop runs
    /// at a fraction of it (default 0.5) and reports latency.
    LatencyAtRate,
}

#[derive(Parser, Debug)]
#[command(about = "Strom's load generator: durable throughput and latency, checked record by record, beside the machine's own limits")]
pub(crate) struct Args {
    /// Start a broker in this process on a temporary data directory (the default target).
    #[arg(long, conflicts_with = "addr")]
    pub(crate) embedded: bool,
    /// Drive a running `strom serve` at HOST:PORT instead.
    #[arg(long, value_name = "HOST:PORT")]
    pub(crate) addr: Option<String>,
    /// Run the workload twice in one invocation: over the native protocol,
    /// then with the producers speaking Kafka's Produce (v7, acks=-1) to the
    /// broker's Kafka listener, on a topic of its own; report both side by side.
    #[arg(long)]
    pub(crate) kafka: bool,
    /// With --addr and --kafka: the running broker's Kafka listener (its --kafka-listen).
    #[arg(long, value_name = "HOST:PORT", requires = "kafka", requires = "addr")]
    pub(crate) kafka_addr: Option<String>,
    /// A preset; flags given explicitly override its values.
    #[arg(long, value_enum)]
    pub(crate) scenario: Option<Scenario>,
    /// Producer connections.
    #[arg(long)]
    pub(crate) producers: Option<usize>,
    /// Consumers; each reads every partition at the tail (0: the records
    /// are checked by a read-back after the run instead).
    #[arg(long)]
    pub(crate) consumers: Option<usize>,
    #[arg(long)]
    pub(crate) topic: Option<String>,
    #[arg(long)]
    pub(crate) partitions: Option<u32>,
    /// Bytes of each record's value (at least 28: the check header).
    #[arg(long, value_name = "BYTES")]
    pub(crate) msg_size: Option<usize>,
    /// Target size of each batch (one Produce request each).
    #[arg(long, value_name = "BYTES")]
    pub(crate) batch_bytes: Option<usize>,
    /// Records per second over all producers, open loop; 0: as fast as acknowledgements allow.
    #[arg(long, value_name = "RECORDS_PER_SEC")]
    pub(crate) rate: Option<f64>,
    /// Batches outstanding per producer connection.
    #[arg(long)]
    pub(crate) inflight: Option<usize>,
    /// Seconds measured (after the warm-up).
    #[arg(long, value_name = "SECS")]
    pub(crate) duration: Option<f64>,
    /// Seconds run before measuring.
    #[arg(long, value_name = "SECS")]
    pub(crate) warmup: Option<f64>,
    /// Write the report as JSON (schema: docs/LOADGEN.md).
    #[arg(long, value_name = "FILE")]
    pub(crate) json: Option<PathBuf>,
    /// Write each latency histogram in HdrHistogram's percentile-distribution format.
    #[arg(long, value_name = "DIR")]
    pub(crate) hgrm: Option<PathBuf>,
    /// Draw the latency percentile spectra into an SVG file.
    #[arg(long, value_name = "FILE")]
    pub(crate) svg: Option<PathBuf>,
    /// No table, no status line: only errors (and the files asked for).
    #[arg(long)]
    pub(crate) quiet: bool,
    /// Embedded broker: core threads (default: half the CPUs, at least 1).
    #[arg(long)]
    pub(crate) cores: Option<usize>,
    /// Embedded broker: fsync policy (always | interval:MS | never).
    #[arg(long)]
    pub(crate) fsync: Option<FsyncPolicy>,
    /// Embedded broker: data directory (default: a fresh one, removed after
    /// unless --keep). With --addr: a directory on the server's data
    /// filesystem, for the disk ceiling.
    #[arg(long, value_name = "DIR")]
    pub(crate) data_dir: Option<PathBuf>,
    #[arg(long)]
    pub(crate) keep: bool,
    /// Embedded broker: buffer bytes registered with io_uring, at most
    /// (default: all, or what RLIMIT_MEMLOCK allows); the rest use plain I/O.
    #[arg(long, value_name = "BYTES")]
    pub(crate) registered_bytes_max: Option<usize>,
    /// loadgen's io_uring threads (default: the CPUs the embedded broker
    /// leaves, at least 1; with --addr, all CPUs).
    #[arg(long)]
    pub(crate) threads: Option<usize>,
    /// Measure the machine's ceilings (loopback TCP; the disk's best group
    /// commit, its loop at the broker's write size, its sequential read) and
    /// report ratios to them. On by default with --embedded.
    #[arg(long, overrides_with = "no_ceiling")]
    pub(crate) ceiling: bool,
    #[arg(long)]
    pub(crate) no_ceiling: bool,
    /// latency-at-rate: the fraction of the probed maximum rate to run at.
    #[arg(long)]
    pub(crate) rate_fraction: Option<f64>,
    /// catch-up: seconds of producing before the consumers start from the beginning.
    #[arg(long, value_name = "SECS")]
    pub(crate) prefill: Option<f64>,
    /// Steady state: the topic keeps this many bytes per partition
    /// (its own retention), and a fill phase writes until retention has
    /// recycled a dropped segment into the spare and a roll has reused it,
    /// so that the window writes over recycled space as a long-running
    /// broker does (embedded only: the fill watches its log counters).
    #[arg(long, value_name = "BYTES")]
    pub(crate) retention_bytes: Option<u64>,
}

/// Everything a run uses, after the scenario and the flags are merged.
#[derive(Debug, Clone)]
pub(crate) struct Settings {
    pub(crate) scenario: Scenario,
    pub(crate) producers: usize,
    pub(crate) consumers: usize,
    pub(crate) topic: String,
    pub(crate) partitions: u32,
    pub(crate) msg_size: usize,
    pub(crate) batch_bytes: usize,
    pub(crate) rate: f64,
    pub(crate) inflight: usize,
    pub(crate) duration: f64,
    pub(crate) warmup: f64,
    pub(crate) rate_fraction: Option<f64>,
    pub(crate) prefill: f64,
    pub(crate) retention_bytes: Option<u64>,
}

pub(crate) fn settings(a: &Args) -> Settings {
    let scenario = a.scenario.unwrap_or(Scenario::DurableThroughput);
    let mut s = Settings {
        scenario,
        producers: 4,
        // One tail consumer checks every record as it arrives, from the
        // broker's memory. With none, a read-back after the run checks
        // them from disk, which reads the log once per partition sharing it.
        consumers: 1,
        topic: "loadgen".into(),
        partitions: 4,
        msg_size: 1024,
        batch_bytes: 64 << 10,
        rate: 0.0,
        inflight: 16,
        duration: 10.0,
        warmup: 2.0,
        rate_fraction: None,
        prefill: 0.0,
        retention_bytes: None,
    };
    match scenario {
        Scenario::DurableThroughput => {}
        // These measure producing alone: a consumer on loadgen's CPU would
        // take from it (millions of small records a second to check; 10,000
        // partitions to poll; latency). Their records are read back after.
        Scenario::SmallMessages => (s.msg_size, s.consumers) = (100, 0),
        Scenario::Fanout | Scenario::Subscribe => (s.producers, s.consumers) = (1, 4),
        Scenario::CatchUp => (s.producers, s.consumers, s.prefill) = (2, 2, 4.0),
        Scenario::ManyPartitions => (s.partitions, s.consumers) = (10_000, 0),
        Scenario::LatencyAtRate => (s.rate_fraction, s.consumers) = (Some(0.5), 0),
    }
    if scenario != Scenario::DurableThroughput {
        s.topic = format!("loadgen-{}", scenario.to_possible_value().expect("no skipped variants").get_name());
    }
    macro_rules! take {
        ($($f:ident),*) => { $( if let Some(v) = a.$f.clone() { s.$f = v; } )* };
    }
    take!(producers, consumers, topic, partitions, msg_size, batch_bytes, rate, inflight, duration, warmup, prefill);
    if a.rate_fraction.is_some() {
        s.rate_fraction = a.rate_fraction;
    }
    s.retention_bytes = a.retention_bytes;
    s
}

pub(crate) fn check(s: &Settings, a: &Args) -> Result<(), String> {
    if s.producers == 0 || s.partitions == 0 || s.inflight == 0 {
        return Err("--producers, --partitions and --inflight must be at least 1".into());
    }
    if s.msg_size < records::VALUE_HEADER_BYTES {
        return Err(format!("--msg-size must be at least {} (the check header every record carries)", records::VALUE_HEADER_BYTES));
    }
    if s.inflight > strom::client::INFLIGHT_MAX_DEFAULT {
        return Err(format!("--inflight is at most {}, the server's default per-connection limit", strom::client::INFLIGHT_MAX_DEFAULT));
    }
    if !(s.duration > 0.0 && s.duration.is_finite() && s.warmup >= 0.0 && s.warmup.is_finite()) {
        return Err("--duration must be positive and --warmup at least 0 (seconds)".into());
    }
    if !(s.rate >= 0.0 && s.rate.is_finite()) {
        return Err("--rate must be 0 (closed loop) or a positive number of records per second".into());
    }
    if s.rate_fraction.is_some_and(|f| !(f > 0.0 && f <= 1.0)) {
        return Err("--rate-fraction must be in (0, 1]".into());
    }
    if s.rate_fraction.is_some() && a.rate.is_some() {
        return Err("--rate and latency-at-rate's --rate-fraction both set the rate: choose one".into());
    }
    if a.kafka && a.addr.is_some() && a.kafka_addr.is_none() {
        return Err("--kafka with --addr needs --kafka-addr HOST:PORT, the broker's Kafka listener".into());
    }
    if let Some(bytes) = s.retention_bytes {
        if a.addr.is_some() {
            return Err("--retention-bytes needs the embedded broker: its fill phase watches the log's recycling counters".into());
        }
        if bytes < s.batch_bytes as u64 {
            return Err("--retention-bytes must keep at least one batch per partition".into());
        }
        if s.prefill > 0.0 {
            return Err("--retention-bytes and --prefill (catch-up) both write before the window: choose one".into());
        }
    }
    records::BatchShape::exact(s.batch_bytes, s.msg_size)?;
    if a.addr.is_none() {
        // The embedded broker's limit is known before it starts: refuse
        // before a data directory is made.
        limits::check_batch_bytes(s.batch_bytes, &limits::embedded(&EngineConfig::default()))?;
    }
    Ok(())
}

impl Settings {
    /// The settings of `--kafka`'s second run: the same workload on a topic
    /// of its own, so that neither run's records mix with the other's.
    pub(crate) fn kafka_run(&self) -> Settings {
        Settings { topic: format!("{}-kafka", self.topic), ..self.clone() }
    }

    /// Every batch's records; `check` refused the sizes it cannot build.
    pub(crate) fn shape(&self) -> records::BatchShape {
        records::BatchShape::exact(self.batch_bytes, self.msg_size).expect("check() refused shapes that cannot be built")
    }
}
