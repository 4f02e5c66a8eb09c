//! `strom serve`: its settings (each a flag, a `STROM_*` environment
//! variable and a key of the `--config` file: `cli/config.rs`), what they
//! become (`EngineConfig`, `ServerConfig`), and the serving loop.
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::Args;
use nix::sys::signal::{SigSet, Signal};
use strom::config::{EngineConfig, FsyncPolicy};
use strom::server::{LiveSettings, Server, ServerConfig};

use super::topic::{Setting, parse_bytes_setting, parse_ms_setting};

/// The settings of `strom serve`. This struct is the one table of them:
/// each field's id is its key in the `--config` file, its doc comment the
/// comment `strom config default` prints, its default the default there.
/// A setting without a default is unset unless given.
#[derive(Args)]
pub struct ServeArgs {
    /// A TOML file of settings (keys as the flags, with `_`: `strom config
    /// default` prints them all); flags and STROM_* variables override it.
    #[arg(long, env = "STROM_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// The data directory (created if new).
    #[arg(long, env = "STROM_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// Serve a data directory another process writes (an application with
    /// the embedded engine) read-only: follow what it makes durable, take no
    /// lock, write nothing; writes are refused (ReadOnly).
    #[arg(long, env = "STROM_READ_ONLY", default_value_t = false)]
    pub read_only: bool,
    /// Also serve every archive in this directory (made by `strom archive`) read-only, beside the live topics; names ending in .tmp are skipped.
    #[arg(long, visible_alias = "archive", env = "STROM_ARCHIVE_DIR", value_name = "DIR")]
    pub archive_dir: Option<PathBuf>,
    /// How log lines are written to stderr: text, for people, or json, one object a line, for machines (RUST_LOG filters them).
    #[arg(long, env = "STROM_LOG_FORMAT", default_value = "text", value_parser = ["text", "json"])]
    pub log_format: String,
    /// Address to accept connections on; port 0 picks a free one.
    #[arg(long, env = "STROM_LISTEN", default_value_t = ServerConfig::default().listen)]
    pub listen: SocketAddr,
    /// Also speak Kafka's protocol on this address (docs/KAFKA.md); port 0 picks a free one.
    #[arg(long, env = "STROM_KAFKA_LISTEN")]
    pub kafka_listen: Option<SocketAddr>,
    /// The host:port Kafka clients are told to connect to (default: the Kafka listener's address).
    #[arg(long, env = "STROM_KAFKA_ADVERTISE")]
    pub kafka_advertise: Option<String>,
    /// How long a new Kafka consumer group waits for more members before its first rebalance completes.
    #[arg(long, env = "STROM_KAFKA_INITIAL_REBALANCE_DELAY_MS", default_value_t = duration_ms(ServerConfig::default().kafka_initial_rebalance_delay))]
    pub kafka_initial_rebalance_delay_ms: u64,
    /// Serve /metrics (Prometheus text format) and /health over HTTP on this address; port 0 picks a free one.
    #[arg(long, env = "STROM_METRICS_LISTEN")]
    pub metrics_listen: Option<SocketAddr>,
    /// Core threads (default: all online CPUs); a new data directory gets one log per core.
    #[arg(long, env = "STROM_CORES")]
    pub cores: Option<usize>,
    /// When writes are acknowledged: always, interval:MS or never.
    #[arg(long, env = "STROM_FSYNC", default_value_t = EngineConfig::default().fsync)]
    pub fsync: FsyncPolicy,
    /// Largest request frame accepted, in bytes.
    #[arg(long, env = "STROM_FRAME_BYTES_MAX", default_value_t = ServerConfig::default().frame_bytes_max)]
    pub frame_bytes_max: usize,
    /// Open connections at most.
    #[arg(long, env = "STROM_CONNECTIONS_MAX", default_value_t = ServerConfig::default().connections_max)]
    pub connections_max: usize,
    /// Requests in flight per connection at most.
    #[arg(long, env = "STROM_INFLIGHT_PER_CONN_MAX", default_value_t = ServerConfig::default().inflight_per_conn_max)]
    pub inflight_per_conn_max: usize,
    /// A connection with no request for this long is closed.
    #[arg(long, env = "STROM_IDLE_TIMEOUT_MS", default_value_t = duration_ms(ServerConfig::default().idle_timeout))]
    pub idle_timeout_ms: u64,
    /// A request whose frame is not complete this long after it began is refused.
    #[arg(long, env = "STROM_HEADER_TIMEOUT_MS", default_value_t = duration_ms(ServerConfig::default().header_timeout))]
    pub header_timeout_ms: u64,
    /// Request and reply bytes one core may hold for all its connections; past it no socket of the core is read.
    #[arg(long, env = "STROM_CORE_BUFFERED_BYTES_MAX", default_value_t = ServerConfig::default().core_buffered_bytes_max)]
    pub core_buffered_bytes_max: usize,
    /// Fetch reply bytes being built or unsent for one core's connections; a Fetch past it waits.
    #[arg(long, env = "STROM_REPLY_BUDGET_BYTES", default_value_t = ServerConfig::default().reply_budget_bytes)]
    pub reply_budget_bytes: usize,
    /// Bytes per log segment file (a block multiple of at least two write buffers).
    #[arg(long, env = "STROM_SEGMENT_BYTES", default_value_t = EngineConfig::default().segment_bytes)]
    pub segment_bytes: u64,
    /// Bytes logged between checkpoints (each bounds the scan at the next start).
    #[arg(long, env = "STROM_CHECKPOINT_INTERVAL_BYTES", default_value_t = EngineConfig::default().checkpoint_interval_bytes)]
    pub checkpoint_interval_bytes: u64,
    /// Buffer bytes all cores together register with io_uring, at most
    /// (default: all, or what RLIMIT_MEMLOCK allows); the rest use plain I/O.
    #[arg(long, env = "STROM_REGISTERED_BYTES_MAX", value_name = "BYTES")]
    pub registered_bytes_max: Option<usize>,
    /// Retention for topics without their own (Kafka's log.retention.ms): keep
    /// records whose batch is younger than this (ms, or 30s, 12h, 7d; -1: no limit).
    #[arg(long, env = "STROM_RETENTION_MS", value_parser = parse_ms_setting, allow_hyphen_values = true, default_value = "-1")]
    pub retention_ms: Setting,
    /// Retention for topics without their own (Kafka's log.retention.bytes):
    /// keep at most this many bytes per partition (bytes, or 512MiB, 10GiB; -1: no limit).
    #[arg(long, env = "STROM_RETENTION_BYTES", value_parser = parse_bytes_setting, allow_hyphen_values = true, default_value = "-1")]
    pub retention_bytes: Setting,
}

fn duration_ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// What the settings make: the data directory and the two configurations,
/// each validated as the engine and the server will (so `strom config
/// check` refuses what `strom serve` would).
pub fn configs(args: &ServeArgs, auth: strom::auth::AuthConfig) -> Result<(Option<PathBuf>, EngineConfig, ServerConfig), String> {
    let mut engine_cfg = EngineConfig {
        fsync: args.fsync,
        segment_bytes: args.segment_bytes,
        checkpoint_interval_bytes: args.checkpoint_interval_bytes,
        retention_age: server_limit(args.retention_ms).map(Duration::from_millis),
        retention_bytes: server_limit(args.retention_bytes),
        registered_bytes_max: args.registered_bytes_max,
        read_only: args.read_only,
        ..EngineConfig::default()
    };
    if let Some(cores) = args.cores {
        engine_cfg.cores = cores;
        // A new directory gets a log per core, so every core has work; an
        // existing one keeps its log count whatever --cores says.
        engine_cfg.logs_on_create = cores as u32;
    }
    // Checked here rather than by clap's `requires`, which does not see a
    // value that came from the file.
    if args.kafka_advertise.is_some() && args.kafka_listen.is_none() {
        return Err(
            "kafka_advertise (--kafka-advertise) needs kafka_listen (--kafka-listen): it is what Kafka clients are told to connect to"
                .into(),
        );
    }
    let server_cfg = ServerConfig {
        listen: args.listen,
        kafka_listen: args.kafka_listen,
        kafka_advertise: args.kafka_advertise.clone(),
        kafka_initial_rebalance_delay: Duration::from_millis(args.kafka_initial_rebalance_delay_ms),
        metrics_listen: args.metrics_listen,
        frame_bytes_max: args.frame_bytes_max,
        connections_max: args.connections_max,
        inflight_per_conn_max: args.inflight_per_conn_max,
        idle_timeout: Duration::from_millis(args.idle_timeout_ms),
        header_timeout: Duration::from_millis(args.header_timeout_ms),
        core_buffered_bytes_max: args.core_buffered_bytes_max,
        reply_budget_bytes: args.reply_budget_bytes,
        auth,
        archive_dir: args.archive_dir.clone(),
        ..ServerConfig::default()
    };
    engine_cfg.validate().map_err(|e| e.to_string())?;
    server_cfg.validate().map_err(|e| format!("invalid configuration: {e}"))?;
    Ok((args.data_dir.clone(), engine_cfg, server_cfg))
}

/// A server-wide limit: `default`, `-1` and `unlimited` are all no limit.
fn server_limit(setting: Setting) -> Option<u64> {
    setting.0.filter(|&v| v != strom::catalog::UNLIMITED)
}

/// Serves until SIGINT or SIGTERM (SIGUSR1 prints metrics, SIGHUP reloads the config file). The signals are blocked before any
/// thread starts, so every thread inherits the mask and the signal stays
/// pending until this thread takes it with sigwait: no handler runs on an
/// arbitrary thread, and the shutdown and reloads run here, in order.
pub fn serve(args: &ServeArgs) -> Result<(), String> {
    let started = Settings::of(args, super::config::auth_section(args.config.as_deref())?)?;
    // With archives alone, no data directory: no live topics.
    let data_dir = started.data_dir.clone();
    if data_dir.is_none() && started.server.archive_dir.is_none() {
        return Err("no data directory: give --data-dir DIR, STROM_DATA_DIR or data_dir in the --config file (or --archive-dir DIR to serve archives alone)".into());
    }
    // A panic is a bug; on a core thread it would leave that core's
    // partitions dead while the rest serves on, their clients waiting. The
    // whole process stops instead, as a `kill -9` would: a restart recovers
    // every acknowledged write (DURABILITY.md).
    let report = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        report(info);
        eprintln!("strom serve: a thread panicked; aborting the process (a restart recovers every acknowledged write)");
        std::process::abort();
    }));
    let mut signals = SigSet::empty();
    signals.add(Signal::SIGINT);
    signals.add(Signal::SIGTERM);
    // SIGUSR1 prints each core's metrics, one line each, for an operator at
    // a terminal (programs and tests ask the Metrics api).
    signals.add(Signal::SIGUSR1);
    // SIGHUP reads the config file again (`systemctl reload`).
    signals.add(Signal::SIGHUP);
    signals.thread_block().map_err(|e| format!("cannot block SIGINT, SIGTERM, SIGUSR1 and SIGHUP: {e}"))?;
    strom::failpoint::init();
    tracing::info!(data_dir = ?data_dir, engine = ?started.engine, server = ?started.server, "starting with these settings");
    let server = match &data_dir {
        Some(dir) => Server::start(dir, started.engine.clone(), started.server.clone()),
        None => Server::start_archives_only(started.engine.clone(), started.server.clone()),
    }
    .map_err(|e| e.to_string())?;
    announce(&server, data_dir.as_deref());
    tracing::info!(addr = %server.local_addr(), kafka = ?server.kafka_addr(), "ready");
    // Under a systemd `Type=notify` unit: ready once every listener accepts.
    super::notify::tell(&format!("READY=1\nSTATUS=serving on {}\nMAINPID={}", server.local_addr(), std::process::id()));
    let mut running = started.clone();
    let waited = loop {
        match signals.wait() {
            Ok(Signal::SIGUSR1) => {
                for (core, metrics) in server.metrics().iter().enumerate() {
                    eprintln!("strom: metrics core {core}: {metrics}");
                }
            }
            Ok(Signal::SIGHUP) => {
                super::notify::tell("RELOADING=1");
                reload(&server, args.config.as_deref(), &started, &mut running);
                super::notify::tell("READY=1");
            }
            other => break other,
        }
    };
    match waited {
        Ok(signal) => eprintln!("strom: stopping ({signal})"),
        Err(e) => eprintln!("strom: stopping (waiting for a signal failed: {e})"),
    }
    super::notify::tell("STOPPING=1");
    let flushed = server.shutdown().map_err(|e| e.to_string())?;
    tracing::info!(
        log_bytes_written = flushed.log_bytes_written,
        records = flushed.records,
        checkpoints = flushed.checkpoints,
        connections_closed = flushed.connections_closed,
        "stopped cleanly: in-flight writes acknowledged, every log checkpointed"
    );
    waited.map(|_| ()).map_err(|e| format!("waiting for SIGINT or SIGTERM: {e}"))
}

/// A running server's settings: what [`configs`] made of the flags, the
/// variables and the file, kept to compare a reload with.
#[derive(Clone)]
struct Settings {
    data_dir: Option<PathBuf>,
    log_format: String,
    engine: EngineConfig,
    server: ServerConfig,
}

impl Settings {
    fn of(args: &ServeArgs, auth: strom::auth::AuthConfig) -> Result<Settings, String> {
        let (data_dir, engine, server) = configs(args, auth)?;
        Ok(Settings { data_dir, log_format: args.log_format.clone(), engine, server })
    }

    /// Every setting by its key (a test checks that none is missing),
    /// whether a reload applies it live ([`LiveSettings`]), and its value
    /// as the log tells it.
    fn compared(&self) -> [(&'static str, bool, String); 23] {
        let (e, s) = (&self.engine, &self.server);
        let ms = |d: Duration| duration_ms(d).to_string();
        let limit = |v: Option<u64>| v.map_or_else(|| "-1".to_string(), |v| v.to_string());
        [
            ("connections_max", true, s.connections_max.to_string()),
            ("inflight_per_conn_max", true, s.inflight_per_conn_max.to_string()),
            ("core_buffered_bytes_max", true, s.core_buffered_bytes_max.to_string()),
            ("idle_timeout_ms", true, ms(s.idle_timeout)),
            ("header_timeout_ms", true, ms(s.header_timeout)),
            ("retention_ms", true, limit(e.retention_age.map(duration_ms))),
            ("retention_bytes", true, limit(e.retention_bytes)),
            ("data_dir", false, unset_or(self.data_dir.as_ref().map(|d| d.display()))),
            ("read_only", false, e.read_only.to_string()),
            ("archive_dir", false, unset_or(s.archive_dir.as_ref().map(|d| d.display()))),
            ("log_format", false, self.log_format.clone()),
            ("listen", false, s.listen.to_string()),
            ("kafka_listen", false, unset_or(s.kafka_listen)),
            ("kafka_advertise", false, unset_or(s.kafka_advertise.as_ref())),
            ("kafka_initial_rebalance_delay_ms", false, ms(s.kafka_initial_rebalance_delay)),
            ("metrics_listen", false, unset_or(s.metrics_listen)),
            ("cores", false, e.cores.to_string()),
            ("fsync", false, e.fsync.to_string()),
            ("frame_bytes_max", false, s.frame_bytes_max.to_string()),
            ("reply_budget_bytes", false, s.reply_budget_bytes.to_string()),
            ("segment_bytes", false, e.segment_bytes.to_string()),
            ("checkpoint_interval_bytes", false, e.checkpoint_interval_bytes.to_string()),
            ("registered_bytes_max", false, unset_or(e.registered_bytes_max)),
        ]
    }
}

fn unset_or(v: Option<impl std::fmt::Display>) -> String {
    v.map_or_else(|| "unset".to_string(), |v| v.to_string())
}

/// `key old -> new` for each setting, live or not as `live` says, whose
/// value differs between `old` and `new`.
fn changes(old: &Settings, new: &Settings, live: bool) -> Vec<String> {
    let pairs = old.compared().into_iter().zip(new.compared());
    pairs
        .filter(|((_, is_live, a), (_, _, b))| *is_live == live && a != b)
        .map(|((key, _, a), (_, _, b))| format!("{key} {a} -> {b}"))
        .collect()
}

/// SIGHUP: reads the config file again under the same flags and STROM_*
/// variables, and puts the live settings in force (`Server::apply`); the
/// others are logged as needing a restart, compared with what the server
/// started with. A file that does not parse or validate is refused whole,
/// and the server serves on as it was. The one place a reload compares
/// and applies: a new live setting gets its line here.
fn reload(server: &Server, path: Option<&Path>, started: &Settings, running: &mut Settings) {
    let Some(path) = path else {
        tracing::warn!("SIGHUP, but there is no config file (--config, STROM_CONFIG) to read again; nothing changed");
        return;
    };
    let file = path.display();
    // The file's own errors name it; the settings' checks are told with it.
    let new = match super::config::reread(path).and_then(|(args, auth)| Settings::of(&args, auth).map_err(|e| format!("{file}: {e}"))) {
        Ok(new) => new,
        Err(error) => {
            tracing::error!(%file, %error, "reload refused, nothing changed");
            return;
        }
    };
    if let Err(e) = server.apply(&LiveSettings::of(&new.engine, &new.server)) {
        tracing::error!(%file, error = %format!("{file}: {e}"), "reload refused, nothing changed");
        return;
    }
    let mut applied = changes(running, &new, true);
    if new.server.auth != running.server.auth {
        server.set_auth(new.server.auth.clone());
        applied.push(auth_change(&running.server.auth, &new.server.auth));
    }
    let restart = changes(started, &new, false);
    if !applied.is_empty() {
        tracing::info!(%file, applied = %applied.join(", "), "reload applied");
    }
    if !restart.is_empty() {
        tracing::warn!(%file, needs_restart = %restart.join(", "), "reload: these settings changed but need a restart");
    }
    if applied.is_empty() && restart.is_empty() {
        tracing::info!(%file, "reload: nothing changed");
    }
    *running = new;
}

/// How the `[auth]` section changed, as the log tells it: whether it is
/// on and its users, never a token.
fn auth_change(old: &strom::auth::AuthConfig, new: &strom::auth::AuthConfig) -> String {
    let (before, after) = (old.describe(), new.describe());
    if before == after { format!("auth {after}: tokens or permissions changed") } else { format!("auth {before} -> {after}") }
}

/// The start-up lines: what recovery did, where the server listens.
fn announce(server: &Server, data_dir: Option<&std::path::Path>) {
    // One line for a normal start (a new directory, or a clean restart that
    // scans nothing past its checkpoints). A log whose recovery scanned,
    // cut or removed anything gets its own line first: that is news.
    let following = server.engine().config().read_only;
    for r in
        server.engine().recovery_reports().iter().filter(|r| following || r.bytes_scanned > 0 || r.bytes_cut > 0 || r.segments_removed > 0)
    {
        if following {
            eprintln!(
                "strom: following log {} read-only: scanned {} bytes from position {} to {}, what its writer made durable, {} us",
                r.log, r.bytes_scanned, r.scanned_from, r.end_pos, r.elapsed_us
            );
            continue;
        }
        eprintln!(
            "strom: recovered log {}: scanned {} bytes ({} frames) from position {} to {}, cut {} bytes, removed {} segments, {} us",
            r.log, r.bytes_scanned, r.frames_scanned, r.scanned_from, r.end_pos, r.bytes_cut, r.segments_removed, r.elapsed_us
        );
    }
    let registration = server.engine().registration();
    // The registration is told only when it was cut short: it then costs something.
    let cut = if registration.is_cut() { format!("; {registration}") } else { String::new() };
    if let Some(addr) = server.kafka_addr() {
        eprintln!("strom: kafka listener on {addr}");
    }
    if let Some(addr) = server.metrics_addr() {
        eprintln!("strom: metrics on {addr}");
    }
    let archives = match server.shelf() {
        Some(shelf) => {
            let n = shelf.topics().count();
            format!(", {n} archived topic{} from {}", if n == 1 { "" } else { "s" }, shelf.dir().display())
        }
        None => String::new(),
    };
    let dir = match data_dir {
        Some(d) if following => format!("data dir {} (read-only)", d.display()),
        Some(d) => format!("data dir {}", d.display()),
        None => "no data dir".to_string(),
    };
    eprintln!("strom: serving on {}, {dir}{archives}{cut}", server.local_addr());
}

#[cfg(test)]
mod tests {
    use clap::{Args, Command, FromArgMatches};

    use super::*;

    fn settings(argv: &[&str]) -> Settings {
        let serve = ServeArgs::augment_args(Command::new("serve"));
        let matches = serve.try_get_matches_from(std::iter::once("serve").chain(argv.iter().copied())).unwrap();
        Settings::of(&ServeArgs::from_arg_matches(&matches).unwrap(), Default::default()).unwrap()
    }

    // Proves: a reload compares every setting of `strom serve`, each once,
    // so a new setting must say whether it changes live.
    #[test]
    fn reload_compares_every_setting() {
        let serve = ServeArgs::augment_args(Command::new("serve"));
        let mut keys: Vec<&str> =
            serve.get_arguments().map(|a| a.get_id().as_str()).filter(|k| !matches!(*k, "config" | "help" | "version")).collect();
        let mut compared: Vec<&str> = settings(&[]).compared().iter().map(|(k, _, _)| *k).collect();
        keys.sort_unstable();
        compared.sort_unstable();
        assert_eq!(compared, keys);
    }

    // Proves: a changed live setting is told as applied with its old and
    // new values, a changed fixed one as needing a restart, and an
    // unchanged one not at all.
    #[test]
    fn changes_split_live_from_restart() {
        let old = settings(&["--connections-max", "50", "--retention-bytes", "-1"]);
        let new = settings(&["--connections-max", "2", "--retention-bytes", "1MiB", "--listen", "127.0.0.1:7171"]);
        assert_eq!(changes(&old, &new, true), ["connections_max 50 -> 2", "retention_bytes -1 -> 1048576"]);
        assert_eq!(changes(&old, &new, false), ["listen 127.0.0.1:7070 -> 127.0.0.1:7171"]);
        assert!(changes(&old, &old, true).is_empty() && changes(&old, &old, false).is_empty());
    }
}
