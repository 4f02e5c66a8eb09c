//! Producers and tailing consumers against a `strom serve`, logging every
//! send and read with the shared checker (`tests/harness/checker`). Each producer
//! sends one batch at a time and keeps a timed log of its sends, so a test
//! can ask what was acknowledged when (after a power cut, during a throttle).
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use strom::client::{Client, ClientError};
use strom::proto::ErrorCode;

use super::checker::{self, Checker, Outcome, Reader};

/// What a producer remembers across server restarts.
#[derive(Debug, Clone)]
pub struct ProducerState {
    pub id: u32,
    pub next_seq: u64,
}

/// What a producer sends.
#[derive(Debug, Clone)]
pub struct ProduceCfg {
    pub topic: String,
    pub partition: u32,
    pub records_per_batch: u32,
    /// Batches in one Produce request (consecutive records; the server
    /// stores them as one group, answered once). `spawn_producer` only.
    pub batches_per_request: u32,
    pub extra_bytes: u32,
    /// How long to wait before sending a batch again that was refused with
    /// `DiskFull` (the same records: the refusal means none was stored).
    pub full_backoff: Duration,
    /// Client timeout for one request.
    pub timeout: Duration,
    /// Counts shared by the producers, for a test watching them run.
    pub live: Arc<LiveCounts>,
    /// Sends start at most this often (None: as fast as acks come back).
    pub pace: Option<Duration>,
}

/// What producers did so far, updated as they go.
#[derive(Debug, Default)]
pub struct LiveCounts {
    pub acked_records: AtomicU64,
    pub disk_full: AtomicU64,
    pub other_errors: AtomicU64,
}

/// How one send ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SendEnd {
    Acked,
    DiskFull,
    /// Another server error (its code).
    Error(ErrorCode),
    /// Timeout or broken connection.
    Broken,
}

/// One send: when it started, when its answer came, and what it was.
#[derive(Debug, Clone, Copy)]
pub struct SendRecord {
    pub started: Instant,
    pub answered: Instant,
    pub end: SendEnd,
    pub records: u32,
}

impl SendRecord {
    pub fn latency_us(&self) -> u64 {
        self.answered.duration_since(self.started).as_micros() as u64
    }
}

/// A producer's log, returned when it stops.
#[derive(Debug, Default)]
pub struct ProducerReport {
    pub sends: Vec<SendRecord>,
}

impl ProducerReport {
    pub fn count(&self, end: SendEnd) -> usize {
        self.sends.iter().filter(|s| s.end == end).count()
    }

    pub fn acked_records(&self) -> u64 {
        self.sends.iter().filter(|s| s.end == SendEnd::Acked).map(|s| u64::from(s.records)).sum()
    }
}

fn connect(addr: SocketAddr, timeout: Duration) -> Option<Client> {
    let mut c = Client::connect_timeout(addr, Duration::from_secs(5)).ok()?;
    c.set_timeout(Some(timeout)).ok()?;
    Some(c)
}

/// Starts a producer thread. It runs until `stop` is set, or until its
/// connection breaks and cannot be made again (the server is gone).
/// Returns its state (the next sequence to send) and its log.
pub fn spawn_producer(
    addr: SocketAddr,
    checker: Arc<Checker>,
    mut state: ProducerState,
    cfg: ProduceCfg,
    stop: Arc<AtomicBool>,
) -> JoinHandle<(ProducerState, ProducerReport)> {
    std::thread::spawn(move || {
        let mut report = ProducerReport::default();
        let Some(mut client) = connect(addr, cfg.timeout) else { return (state, report) };
        let extra = cfg.extra_bytes;
        let mut next_send = Instant::now();
        while !stop.load(Ordering::Relaxed) {
            if let Some(pace) = cfg.pace {
                std::thread::sleep(next_send.saturating_duration_since(Instant::now()));
                next_send = Instant::now().max(next_send) + pace;
            }
            let per_batch = cfg.records_per_batch;
            let n = per_batch * cfg.batches_per_request;
            let batch: Vec<u8> = (0..u64::from(cfg.batches_per_request))
                .flat_map(|i| checker::batch_for(state.id, state.next_seq + i * u64::from(per_batch), per_batch, |_| extra))
                .collect();
            let send = checker.record_send(&cfg.topic, cfg.partition, state.id, state.next_seq, n);
            let started = Instant::now();
            let res = client.produce(&cfg.topic, cfg.partition, &batch);
            let answered = Instant::now();
            let end = match &res {
                Ok(ack) => {
                    checker.record_ack(&send, ack.base_offset);
                    state.next_seq += u64::from(n);
                    SendEnd::Acked
                }
                Err(ClientError::Server { code: ErrorCode::DiskFull, .. }) => {
                    // DiskFull promises nothing of the request was stored: the
                    // checker holds the server to it (failed_present).
                    checker.record_fail(&send);
                    SendEnd::DiskFull
                }
                Err(e) => {
                    match checker.record_outcome(&send, checker::classify(&res)) {
                        // Those records may be stored: never send them again.
                        Outcome::Indeterminate => state.next_seq += u64::from(n),
                        Outcome::Failed | Outcome::Acked { .. } => {}
                    }
                    match e {
                        ClientError::Server { code, .. } => SendEnd::Error(*code),
                        _ => SendEnd::Broken,
                    }
                }
            };
            report.sends.push(SendRecord { started, answered, end, records: n });
            let counter = match end {
                SendEnd::Acked => {
                    cfg.live.acked_records.fetch_add(u64::from(n), Ordering::Relaxed);
                    None
                }
                SendEnd::DiskFull => Some(&cfg.live.disk_full),
                SendEnd::Error(_) | SendEnd::Broken => Some(&cfg.live.other_errors),
            };
            if let Some(c) = counter {
                c.fetch_add(1, Ordering::Relaxed);
            }
            match end {
                SendEnd::Acked => {}
                SendEnd::DiskFull => std::thread::sleep(cfg.full_backoff),
                SendEnd::Error(_) => std::thread::sleep(Duration::from_millis(10)),
                SendEnd::Broken => match connect(addr, cfg.timeout) {
                    Some(c) => client = c,
                    None => break,
                },
            }
        }
        (state, report)
    })
}

/// Starts a consumer that tails `topic`/`partition` from `offset` with long
/// polls until `stop` is set or its server is gone; every record it reads
/// goes to the checker as consumer `id`. Returns where it would read next.
pub fn spawn_consumer(
    addr: SocketAddr,
    checker: Arc<Checker>,
    id: u32,
    topic: String,
    partition: u32,
    mut offset: u64,
    stop: Arc<AtomicBool>,
) -> JoinHandle<u64> {
    std::thread::spawn(move || {
        let Some(mut client) = connect(addr, Duration::from_secs(10)) else { return offset };
        while !stop.load(Ordering::Relaxed) {
            match client.fetch(&topic, partition, offset, 1 << 20, Duration::from_millis(200)) {
                Ok(f) => offset = checker.observe_fetch(Reader::Consumer(id), &topic, partition, offset, &f.batches),
                Err(ClientError::Server { .. }) => std::thread::sleep(Duration::from_millis(20)),
                Err(_) => break,
            }
        }
        offset
    })
}

/// The `q`-quantile (0..=1) of `values` (sorted in place); 0 when empty.
pub fn quantile(values: &mut [u64], q: f64) -> u64 {
    if values.is_empty() {
        return 0;
    }
    values.sort_unstable();
    let i = ((values.len() - 1) as f64 * q).round() as usize;
    values[i]
}

/// Starts a producer that keeps up to `window` Produce requests in flight
/// on one connection (the server must push back rather than buffer what a
/// client offers). Every send is logged like [`spawn_producer`]'s; a refused
/// or indeterminate batch is not sent again (its records are given up).
/// Stops when `stop` is set (after the replies in flight) or the connection
/// breaks (what was in flight is then indeterminate).
pub fn spawn_pipelined_producer(
    addr: SocketAddr,
    checker: Arc<Checker>,
    mut state: ProducerState,
    cfg: ProduceCfg,
    window: usize,
    stop: Arc<AtomicBool>,
) -> JoinHandle<(ProducerState, ProducerReport)> {
    use std::collections::HashMap;
    use strom::client::OwnedResponse;
    use strom::proto::Request;
    std::thread::spawn(move || {
        let mut report = ProducerReport::default();
        let Some(mut client) = connect(addr, cfg.timeout) else { return (state, report) };
        let extra = cfg.extra_bytes;
        let mut inflight: HashMap<u64, (checker::Send, Instant)> = HashMap::new();
        loop {
            while !stop.load(Ordering::Relaxed) && inflight.len() < window {
                let n = cfg.records_per_batch;
                let batch = checker::batch_for(state.id, state.next_seq, n, |_| extra);
                let send = checker.record_send(&cfg.topic, cfg.partition, state.id, state.next_seq, n);
                state.next_seq += u64::from(n);
                let started = Instant::now();
                match client.send(&Request::Produce { topic: &cfg.topic, partition: cfg.partition, batches: &batch }) {
                    Ok(id) => {
                        inflight.insert(id, (send, started));
                    }
                    Err(_) => {
                        checker.record_indeterminate(&send);
                        report.sends.push(SendRecord { started, answered: Instant::now(), end: SendEnd::Broken, records: n });
                        break;
                    }
                }
            }
            if inflight.is_empty() {
                break;
            }
            let reply = client.recv();
            let answered = Instant::now();
            let Ok(reply) = reply else {
                // Broken: everything in flight may or may not be stored.
                for (_, (send, started)) in inflight.drain() {
                    checker.record_indeterminate(&send);
                    report.sends.push(SendRecord { started, answered, end: SendEnd::Broken, records: send.count() });
                }
                break;
            };
            let (send, started) = inflight.remove(&reply.request_id).expect("a reply to a request in flight");
            let end = match reply.result {
                Ok(OwnedResponse::Produce(ack)) => {
                    checker.record_ack(&send, ack.base_offset);
                    cfg.live.acked_records.fetch_add(u64::from(send.count()), Ordering::Relaxed);
                    SendEnd::Acked
                }
                Ok(other) => panic!("a Produce answered with {other:?}"),
                Err(ClientError::Server { code: ErrorCode::DiskFull, .. }) => {
                    checker.record_fail(&send);
                    cfg.live.disk_full.fetch_add(1, Ordering::Relaxed);
                    SendEnd::DiskFull
                }
                Err(e) => {
                    let res = Err(e);
                    checker.record_outcome(&send, checker::classify(&res));
                    cfg.live.other_errors.fetch_add(1, Ordering::Relaxed);
                    match res {
                        Err(ClientError::Server { code, .. }) => SendEnd::Error(code),
                        _ => SendEnd::Broken,
                    }
                }
            };
            report.sends.push(SendRecord { started, answered, end, records: send.count() });
        }
        (state, report)
    })
}
