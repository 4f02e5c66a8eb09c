//! `strom mirror --from ADDR --topic T --to ADDR [--as NAME] (--every N |
//! --per-ms MS)`: Franz's downsampling gateway. One thread per partition
//! follows the source partition by subscription and writes what the rule
//! keeps ([`rule`]) to the same partition of the destination topic
//! ([`copy`]), each copy carrying its source offset in a header of its
//! own, so that the destination's last record is the mirror's position and
//! its acknowledged produce the commit: a mirror started again (after its
//! own death or either server's) reads it and goes on after it, with no
//! state of its own. docs/CLI.md ("mirror") says what it keeps and why it
//! neither repeats nor skips a record.
mod copy;
mod rule;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, mpsc};
use std::time::Duration;

use clap::builder::RangedU64ValueParser;
use clap::{ArgGroup, Args};
use strom::catalog::TopicRetention;
use strom::client::{Client, ClientError};
use strom::proto::ErrorCode;

use rule::{FROM_HEADER, Rule};

/// How long a connection attempt to either server may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// The first wait before connecting again after an outage; doubled after
/// each failed attempt up to [`BACKOFF_MAX`].
const BACKOFF_FIRST: Duration = Duration::from_millis(100);
/// The longest wait between attempts: a server back after a restart is
/// found within this.
const BACKOFF_MAX: Duration = Duration::from_secs(5);

#[derive(Args)]
#[command(group(ArgGroup::new("rule").required(true).args(["every", "per_ms"])))]
pub struct MirrorArgs {
    /// The source server: HOST[:PORT] (port 7070 if none).
    #[arg(long, value_name = "ADDR")]
    from: String,
    /// The topic to follow, every partition of it.
    #[arg(long)]
    topic: String,
    /// The destination server: HOST[:PORT] (port 7070 if none).
    #[arg(long, value_name = "ADDR")]
    to: String,
    /// The destination topic (default: the source topic's name).
    #[arg(long = "as", value_name = "NAME")]
    as_name: Option<String>,
    /// Keep every Nth record of each partition: those whose source offset is N-1 modulo N.
    #[arg(long, value_name = "N", value_parser = RangedU64ValueParser::<u64>::new().range(1..))]
    every: Option<u64>,
    /// Keep the last record of each time bucket of MS milliseconds (by record
    /// timestamp), written once a record of a later bucket arrives.
    #[arg(long, value_name = "MS", value_parser = RangedU64ValueParser::<u64>::new().range(1..=i64::MAX as u64))]
    per_ms: Option<u64>,
    /// The token for both servers, unless --from-token or --to-token is given.
    #[arg(long, env = "STROM_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// The token for the source server (default: --token).
    #[arg(long, env = "STROM_FROM_TOKEN", hide_env_values = true)]
    from_token: Option<String>,
    /// The token for the destination server (default: --token).
    #[arg(long, env = "STROM_TO_TOKEN", hide_env_values = true)]
    to_token: Option<String>,
}

/// One of the two servers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    Source,
    Dest,
}

/// Why a partition's mirroring stopped.
#[derive(Debug)]
pub enum Stop {
    /// A server could not be reached, or dropped the connection, or said
    /// to try again: connect again after a backoff.
    Lost(Side, ClientError),
    /// The destination partition is not where this run thought (its batch
    /// was refused as out of sequence, or its end moved): read its last
    /// record again and go on from there.
    Resync(String),
    /// Nothing a retry can fix: the mirror exits with this.
    Fatal(String),
}

/// One server: its addresses (looked up once, at start) and token.
pub struct Server {
    /// As given, for messages.
    pub addr: String,
    resolved: Vec<SocketAddr>,
    token: Option<String>,
    /// Set while an outage of this server is reported, so that one outage
    /// prints one line, whichever thread sees it first.
    down: AtomicBool,
}

impl Server {
    /// A connection to this server, authenticated, timing out any reply
    /// after the CLI's usual wait.
    pub fn connect(&self, side: Side) -> Result<Client, Stop> {
        let mut c = Client::connect_timeout(&self.resolved[..], CONNECT_TIMEOUT).map_err(|e| stop(side, self, e))?;
        c.set_timeout(Some(crate::cli::addr::REPLY_TIMEOUT)).map_err(|e| stop(side, self, e))?;
        if let Some(token) = &self.token {
            c.authenticate(token).map_err(|e| stop(side, self, e))?;
        }
        Ok(c)
    }
}

/// What every partition's thread shares.
pub struct Mirror {
    pub source: Server,
    pub dest: Server,
    pub topic: String,
    pub dest_topic: String,
    pub rule: Rule,
}

impl Mirror {
    pub fn server(&self, side: Side) -> &Server {
        match side {
            Side::Source => &self.source,
            Side::Dest => &self.dest,
        }
    }

    /// Reports an outage of `side` once: the first thread to see it prints.
    fn outage(&self, side: Side, e: &ClientError) {
        let s = self.server(side);
        if !s.down.swap(true, Ordering::Relaxed) {
            let name = if side == Side::Source { "source" } else { "destination" };
            eprintln!("strom mirror: lost the {name} {}: {e}; retrying with backoff (at most {} s apart)", s.addr, BACKOFF_MAX.as_secs());
        }
    }

    /// Both servers answered: a later failure is a new outage.
    pub fn reached(&self) {
        self.source.down.store(false, Ordering::Relaxed);
        self.dest.down.store(false, Ordering::Relaxed);
    }
}

/// Classifies a client error where it happened: what a retry can fix (a
/// broken connection, a server stopping or overloaded) is `Lost`; a batch
/// out of sequence means the destination moved (`Resync`); the rest is fatal.
pub fn stop(side: Side, server: &Server, e: ClientError) -> Stop {
    match &e {
        ClientError::Server { code: ErrorCode::OutOfOrderSequence | ErrorCode::InvalidProducerEpoch, .. } => {
            Stop::Resync(format!("the destination refused a batch: {e}"))
        }
        _ if e.is_retriable() => Stop::Lost(side, e),
        _ => {
            let name = if side == Side::Source { "the source" } else { "the destination" };
            Stop::Fatal(format!("{name} {}: {e}", server.addr))
        }
    }
}

/// Waits between attempts: doubling from [`BACKOFF_FIRST`] to [`BACKOFF_MAX`].
pub struct Backoff {
    next_wait: Duration,
}

impl Backoff {
    fn new() -> Backoff {
        Backoff { next_wait: BACKOFF_FIRST }
    }

    fn wait(&mut self) {
        std::thread::sleep(self.next_wait);
        self.next_wait = (self.next_wait * 2).min(BACKOFF_MAX);
    }

    pub fn reset(&mut self) {
        self.next_wait = BACKOFF_FIRST;
    }
}

/// Runs the mirror until a partition meets an error no retry can fix.
pub fn mirror(args: &MirrorArgs) -> Result<(), String> {
    let rule = match (args.every, args.per_ms) {
        (Some(n), None) => Rule::Every(n),
        (None, Some(ms)) => Rule::PerMs(ms),
        // The argument group holds exactly one.
        _ => return Err("give one of --every N and --per-ms MS".into()),
    };
    let dest_topic = args.as_name.clone().unwrap_or_else(|| args.topic.clone());
    for name in [&args.topic, &dest_topic] {
        strom::client::check_name(name).map_err(|e| e.to_string())?;
    }
    let server = |addr: &str, token: &Option<String>| -> Result<Server, String> {
        let resolved = crate::cli::addr::resolve(addr).map_err(|e| e.replace("--addr", &format!("\"{addr}\"")))?;
        let token = token.clone().or_else(|| args.token.clone());
        Ok(Server { addr: addr.to_string(), resolved, token, down: AtomicBool::new(false) })
    };
    let m = Mirror {
        source: server(&args.from, &args.from_token)?,
        dest: server(&args.to, &args.to_token)?,
        topic: args.topic.clone(),
        dest_topic,
        rule,
    };
    let partitions = with_retries(&m, || prepare(&m))?;
    eprintln!(
        "strom mirror: {} ({partitions} partitions) from {} to {} as {}, keeping {}",
        m.topic,
        m.source.addr,
        m.dest.addr,
        m.dest_topic,
        m.rule.describe()
    );
    let m = Arc::new(m);
    let (failed_tx, failed_rx) = mpsc::channel();
    for partition in 0..partitions {
        let (m, failed) = (m.clone(), failed_tx.clone());
        std::thread::Builder::new()
            .name(format!("mirror-{partition}"))
            .spawn(move || {
                let why = copy::follow(&m, partition);
                let _ = failed.send(format!("partition {partition}: {why}"));
            })
            .map_err(|e| format!("cannot start the thread of partition {partition}: {e}"))?;
    }
    // Threads end only on a fatal error; the first one ends the command, not
    // joining the others: exiting stops them, and whatever they had in
    // flight is either acknowledged or not, which the next run reads.
    Err(failed_rx.recv().unwrap_or_else(|_| "every partition's thread ended".into()))
}

/// Runs `step` until it succeeds or fails for good, waiting between
/// attempts while a server is unreachable.
fn with_retries<T>(m: &Mirror, mut step: impl FnMut() -> Result<T, Stop>) -> Result<T, String> {
    let mut backoff = Backoff::new();
    loop {
        match step() {
            Ok(v) => {
                m.reached();
                return Ok(v);
            }
            Err(Stop::Fatal(why)) => return Err(why),
            Err(Stop::Lost(side, e)) => m.outage(side, &e),
            Err(Stop::Resync(why)) => eprintln!("strom mirror: {why}; trying again"),
        }
        backoff.wait();
    }
}

/// Checks both topics and creates the destination if it does not exist:
/// the same partition count and named indices as the source (a different
/// one is refused). Returns the partition count.
fn prepare(m: &Mirror) -> Result<u32, Stop> {
    let mut src = m.source.connect(Side::Source)?;
    let s = src.describe_topic(&m.topic).map_err(|e| stop(Side::Source, &m.source, e))?;
    if s.indices.iter().any(|i| i == FROM_HEADER) {
        return Err(Stop::Fatal(format!("topic {:?} has an index named {FROM_HEADER}, the header the mirror writes", m.topic)));
    }
    let partitions = s.partitions.len() as u32;
    let mut dst = m.dest.connect(Side::Dest)?;
    let d = match dst.describe_topic(&m.dest_topic) {
        Err(ClientError::Server { code: ErrorCode::UnknownTopic, .. }) => {
            let created = if s.indices.is_empty() {
                dst.create_topic(&m.dest_topic, partitions)
            } else {
                dst.create_topic_indexed(&m.dest_topic, partitions, TopicRetention::default(), &s.indices)
            };
            match created {
                // Another mirror created it meanwhile: check it as any other.
                Ok(()) | Err(ClientError::Server { code: ErrorCode::TopicExists, .. }) => {}
                Err(e) => return Err(stop(Side::Dest, &m.dest, e)),
            }
            dst.describe_topic(&m.dest_topic).map_err(|e| stop(Side::Dest, &m.dest, e))?
        }
        other => other.map_err(|e| stop(Side::Dest, &m.dest, e))?,
    };
    let refuse = |what: String| Stop::Fatal(format!("the destination topic {:?} on {} {what}", m.dest_topic, m.dest.addr));
    if d.partitions.len() != s.partitions.len() {
        return Err(refuse(format!(
            "has {} partitions, the source topic {:?} {}: mirror into a topic with as many (or a new one, which the mirror creates)",
            d.partitions.len(),
            m.topic,
            s.partitions.len()
        )));
    }
    if d.indices != s.indices {
        return Err(refuse(format!(
            "has indices [{}], the source topic {:?} [{}]: mirror into a topic with the same indices in the same order (or a new one)",
            d.indices.join(", "),
            m.topic,
            s.indices.join(", ")
        )));
    }
    Ok(partitions)
}
