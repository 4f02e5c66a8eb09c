//! One loadgen thread: many connections on one io_uring, Strom's own
//! reactor (`strom::io::uring::UringIo`) and codec (`strom::proto`).
//!
//! The loop is the broker's: reap completions, process them, plan sends,
//! submit, wait. A connection has at most one receive and one send in
//! flight (two sends on one stream socket could interleave); each op owns
//! its buffer until its completion hands it back.
//!
//! Producers keep up to `--inflight` Produce requests outstanding. Each
//! in-flight slot owns one whole request frame, encoded once; before a send
//! only the request id, the partition and the batch's stamped fields change
//! (see [`crate::records`]), so no batch is copied on the way out.
//! Consumers keep up to [`FETCH_SLOTS`] Fetches outstanding per connection,
//! long-polling at the tail, and check every record they receive.
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::net::{SocketAddr, TcpStream};
use std::os::fd::OwnedFd;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use strom::io::uring::UringIo;
use strom::io::{Completion, FileId, Io, Op};
use strom::proto::{self, Request, Response};

use crate::clock::{now_ns, wall_ms};
use crate::hist::{Latencies, ns_to_us};
use crate::records::{BatchShape, BatchTemplate};
use crate::schedule::Schedule;
use crate::verify::{Check, PartitionVerifier, Ranges};

mod ack;
mod kafka_fetch;
use ack::{Ack, kafka_ack, kafka_rid, native_rid};

/// Fetches outstanding per consumer connection. The server reserves each
/// Fetch's largest reply against the connection's buffer cap (32 MiB by
/// default), so slots x FETCH_BYTES_MAX stays under it.
pub const FETCH_SLOTS: usize = 8;
pub const FETCH_BYTES_MAX: u32 = 2 << 20;
/// A subscription's credit: a push holds at most this plus one batch, so
/// it fits the receive buffer as a Fetch reply does.
const SUBSCRIBE_CREDIT_BYTES: u64 = FETCH_BYTES_MAX as u64 / 2;
/// A long poll at the tail; the server answers as soon as data arrives.
const FETCH_WAIT_MS: u32 = 500;
/// With more partitions than slots a long poll would hold a slot on an idle
/// partition, so fetches do not wait; after a round that found nothing,
/// the consumer pauses this long instead of spinning.
const EMPTY_ROUND_PAUSE_NS: u64 = 1_000_000;
/// How often the loop looks at the shared state when nothing completes.
const TICK: Duration = Duration::from_millis(2);
/// A send counts as late when it goes out this long after it was due.
const LATE_NS: u64 = 1_000_000;
/// Receive buffer headroom: one whole fetch reply plus its framing.
const RECV_BYTES: usize = FETCH_BYTES_MAX as usize + (64 << 10);
const PRODUCER_RECV_BYTES: usize = 64 << 10;
/// A server that answers nothing for this long after the window (while
/// producers drain and consumers read to the end) is reported as hung
/// rather than waited on forever. Any reply resets it: a long read-back
/// that keeps making progress is not a hang.
pub const DRAIN_TIMEOUT_NS: u64 = 30_000_000_000;

/// State every worker reads; the main thread writes the few flags.
pub struct Shared {
    pub run_id: u32,
    pub topic: String,
    /// Every batch's records (exactly `--batch-bytes`).
    pub shape: BatchShape,
    /// Acknowledgements and records received in [start, end) are measured;
    /// producers stop sending at `window_end_ns`.
    pub window_start_ns: u64,
    pub window_end_ns: u64,
    pub abort: AtomicBool,
    pub producers_done: AtomicUsize,
    /// Per partition: the offset consumers read up to; final once
    /// `targets_final` is set (after every producer finished).
    pub targets: Vec<AtomicU64>,
    pub targets_final: AtomicBool,
    /// Live totals for the status line.
    pub live_acked_records: AtomicU64,
    pub live_consumed_records: AtomicU64,
}

impl Shared {
    fn in_window(&self, t_ns: u64) -> bool {
        (self.window_start_ns..self.window_end_ns).contains(&t_ns)
    }
}

#[derive(Debug, Clone)]
pub struct ProducerSpec {
    pub id: u32,
    pub addr: SocketAddr,
    pub partitions: Vec<u32>,
    pub inflight: usize,
    /// 0: closed loop.
    pub records_per_sec: f64,
    pub records_per_batch: usize,
    /// Speak Kafka's Produce (v7, acks=-1) to the Kafka listener at `addr`
    /// instead of the native protocol ([`crate::kafka`]).
    pub kafka: bool,
}

#[derive(Debug, Clone)]
pub struct ConsumerSpec {
    pub id: u32,
    pub addr: SocketAddr,
    /// (partition, first offset to read).
    pub partitions: Vec<(u32, u64)>,
    /// Record latencies and throughput (false for the read-back after a run).
    pub measure: bool,
    /// Follow each partition by subscription (pushed, with credit) instead
    /// of Fetches.
    pub subscribe: bool,
    /// Fetch over Kafka (v11, all its partitions in one request) from the
    /// Kafka listener at `addr` instead ([`crate::kafka`]).
    pub kafka: bool,
}

impl ConsumerSpec {
    /// How deep this consumer checks what it reads: every record's own
    /// checksum for the first tail consumer and the read-back (the only
    /// reader of its partitions); the batch CRC, header and sequences for
    /// the others, which read the same records (`crate::verify`).
    fn check(&self) -> Check {
        if self.id == 0 || !self.measure { Check::EachRecord } else { Check::Batch }
    }
}

#[derive(Debug, Clone, Default)]
pub struct WorkerSpec {
    pub name: String,
    pub cpu: Option<usize>,
    pub producers: Vec<ProducerSpec>,
    pub consumers: Vec<ConsumerSpec>,
}

/// Counts inside the measurement window.
#[derive(Debug, Clone, Copy, Default)]
pub struct Tally {
    pub records: u64,
    pub requests: u64,
}

#[derive(Debug, Default)]
pub struct WorkerOutcome {
    pub lat: Latencies,
    pub produced: Tally,
    pub consumed: Tally,
    /// Every acknowledgement of the run: (partition, producer) -> sequences.
    pub acked: HashMap<(u32, u32), Ranges>,
    /// Per partition: one past the last offset acknowledged.
    pub partition_ends: HashMap<u32, u64>,
    /// (consumer, partition, what it saw).
    pub verifiers: Vec<(u32, u32, PartitionVerifier)>,
    /// Errors by kind: server error codes by name, and loadgen's own.
    pub errors: BTreeMap<String, u64>,
    pub sends_late: u64,
    pub sends: u64,
    /// CPU seconds this thread ran inside the measurement window.
    pub cpu_window_secs: f64,
    /// Seconds this thread waited runnable for a CPU in the window.
    pub run_queue_window_secs: f64,
    /// Batches sent and never answered (connection lost, or the drain timed out).
    pub indeterminate: u64,
}

struct Pending {
    part: usize,
    first_seq: u64,
    from_ns: u64,
}

struct Producer {
    spec: ProducerSpec,
    template: BatchTemplate,
    /// Where the batch starts in a frame, and where the partition field is.
    batch_at: usize,
    partition_at: usize,
    /// Stamps request `rid`'s id into a frame: native or Kafka's place and width.
    stamp_rid: fn(&mut [u8], u64),
    free: Vec<Vec<u8>>,
    next_seq: Vec<u64>,
    rr: usize,
    schedule: Schedule,
    pending: HashMap<u64, Pending>,
    done: bool,
}

struct Part {
    partition: u32,
    next: u64,
    outstanding: bool,
    done: bool,
    v: PartitionVerifier,
}

struct Consumer {
    spec: ConsumerSpec,
    parts: Vec<Part>,
    cursor: usize,
    wait_ms: u32,
    pending: HashMap<u64, (usize, u64)>,
    /// Fetch requests encoded since the last send.
    out: Vec<u8>,
    empty_replies: usize,
    pause_until_ns: u64,
    done: bool,
}

enum Role {
    P(Box<Producer>),
    C(Box<Consumer>),
}

struct Conn {
    sock: FileId,
    /// Some while no receive is in flight.
    rbuf: Option<Vec<u8>>,
    send_q: VecDeque<Vec<u8>>,
    sending: bool,
    /// Bytes of the in-flight send's buffer already sent.
    send_off: usize,
    dead: bool,
    next_rid: u64,
    role: Role,
}

impl Conn {
    fn finished(&self) -> bool {
        self.dead
            || match &self.role {
                Role::P(p) => p.done,
                Role::C(c) => c.done,
            }
    }
}

const KIND_RECV: u64 = 0;
const KIND_SEND: u64 = 1;

fn token(conn: usize, kind: u64) -> u64 {
    (conn as u64) << 1 | kind
}

fn connect(addr: SocketAddr) -> Result<OwnedFd, String> {
    let s = TcpStream::connect_timeout(&addr, Duration::from_secs(10)).map_err(|e| format!("connect {addr}: {e}"))?;
    s.set_nodelay(true).map_err(|e| format!("TCP_NODELAY on {addr}: {e}"))?;
    Ok(OwnedFd::from(s))
}

/// The frame of a Produce of `template` to `topic` (native, or Kafka's),
/// and where its batch and partition field are.
fn produce_frame(topic: &str, template: &BatchTemplate, kafka: bool) -> (Vec<u8>, usize, usize) {
    if kafka {
        return crate::kafka::produce_frame(topic, &template.bytes);
    }
    let mut frame = Vec::with_capacity(64 + topic.len() + template.bytes.len());
    proto::encode_request(&mut frame, 0, &Request::Produce { topic, partition: 0, batches: &template.bytes });
    let batch_at = frame.len() - template.bytes.len();
    (frame, batch_at, batch_at - 4)
}

/// Request ids are bytes 8..16 of a frame (after length, api and version).
const REQUEST_ID_AT: usize = proto::LEN_BYTES + 4;

pub fn run(spec: WorkerSpec, shared: Arc<Shared>) -> Result<WorkerOutcome, String> {
    if let Some(cpu) = spec.cpu
        && let Err(e) = strom::platform::pin_current_thread(cpu)
    {
        eprintln!("loadgen: {} not pinned: {e}", spec.name);
    }
    let conns_total = spec.producers.len() + spec.consumers.len();
    let mut io = UringIo::with_ops_max(256, 2 * conns_total + 16).map_err(|e| format!("io_uring: {e}"))?;
    let mut conns = Vec::with_capacity(conns_total);
    for p in spec.producers {
        let template = BatchTemplate::new(shared.run_id, p.id, &shared.shape);
        let (frame, batch_at, partition_at) = produce_frame(&shared.topic, &template, p.kafka);
        let stamp_rid: fn(&mut [u8], u64) = if p.kafka { kafka_rid } else { native_rid };
        let sock = io.adopt_socket(connect(p.addr)?).map_err(|e| e.to_string())?;
        let schedule = Schedule::new(now_ns(), p.records_per_sec, p.records_per_batch);
        let producer = Producer {
            free: vec![frame; p.inflight + 2],
            next_seq: vec![0; p.partitions.len()],
            template,
            batch_at,
            partition_at,
            stamp_rid,
            rr: p.id as usize % p.partitions.len(),
            schedule,
            pending: HashMap::new(),
            done: false,
            spec: p,
        };
        conns.push(Conn::new(sock, Role::P(Box::new(producer)), PRODUCER_RECV_BYTES));
    }
    for c in spec.consumers {
        let sock = io.adopt_socket(connect(c.addr)?).map_err(|e| e.to_string())?;
        let check = c.check();
        let parts = c
            .partitions
            .iter()
            .map(|&(p, from)| Part {
                partition: p,
                next: from,
                outstanding: false,
                done: false,
                v: PartitionVerifier::new(shared.run_id, check),
            })
            .collect::<Vec<_>>();
        let wait_ms = if parts.len() <= FETCH_SLOTS { FETCH_WAIT_MS } else { 0 };
        let consumer = Consumer {
            parts,
            cursor: 0,
            wait_ms,
            pending: HashMap::new(),
            out: Vec::new(),
            empty_replies: 0,
            pause_until_ns: 0,
            done: false,
            spec: c,
        };
        conns.push(Conn::new(sock, Role::C(Box::new(consumer)), RECV_BYTES));
    }
    let mut w = Worker { io, conns, shared, out: WorkerOutcome::default(), completions: Vec::new(), last_reply_ns: 0 };
    w.run_loop()?;
    Ok(w.finish())
}

impl Conn {
    fn new(sock: FileId, role: Role, recv_bytes: usize) -> Conn {
        Conn {
            sock,
            rbuf: Some(Vec::with_capacity(recv_bytes)),
            send_q: VecDeque::new(),
            sending: false,
            send_off: 0,
            dead: false,
            next_rid: 1,
            role,
        }
    }
}

struct Worker {
    io: UringIo,
    conns: Vec<Conn>,
    shared: Arc<Shared>,
    out: WorkerOutcome,
    completions: Vec<Completion>,
    last_reply_ns: u64,
}

impl Worker {
    fn run_loop(&mut self) -> Result<(), String> {
        let (mut cpu_start, mut cpu_end) = (None, None);
        loop {
            let now = now_ns();
            if cpu_start.is_none() && now >= self.shared.window_start_ns {
                cpu_start = Some(crate::cpu::this_thread());
            }
            if cpu_end.is_none() && now >= self.shared.window_end_ns {
                cpu_end = Some(crate::cpu::this_thread());
            }
            if self.shared.abort.load(Ordering::Relaxed) {
                break;
            }
            if now >= self.shared.window_end_ns && now.saturating_sub(self.last_reply_ns.max(self.shared.window_end_ns)) > DRAIN_TIMEOUT_NS
            {
                *self.out.errors.entry("no reply for 30 s after the window".into()).or_default() += 1;
                break;
            }
            let mut wake_ns = now + TICK.as_nanos() as u64;
            for i in 0..self.conns.len() {
                if let Some(t) = self.plan(i, now) {
                    wake_ns = wake_ns.min(t);
                }
                self.post(i);
            }
            if self.conns.iter().all(Conn::finished) {
                break;
            }
            let timeout = Duration::from_nanos(wake_ns.saturating_sub(now_ns()).max(1_000));
            self.io.wait(1, Some(timeout)).map_err(|e| format!("io_uring wait: {e}"))?;
            let mut done = std::mem::take(&mut self.completions);
            self.io.reap(&mut done);
            for c in done.drain(..) {
                self.complete(c);
            }
            self.completions = done;
        }
        if let Some(start) = cpu_start {
            let end = cpu_end.unwrap_or_else(crate::cpu::this_thread);
            (self.out.cpu_window_secs, self.out.run_queue_window_secs) = (end.0 - start.0, end.1 - start.1);
        }
        self.close_all();
        Ok(())
    }

    /// Queues what connection `i` should send now; returns when it next wants to wake.
    fn plan(&mut self, i: usize, now: u64) -> Option<u64> {
        let shared = self.shared.clone();
        let conn = &mut self.conns[i];
        if conn.dead {
            return None;
        }
        match &mut conn.role {
            Role::P(p) => {
                if p.done {
                    return None;
                }
                if now >= shared.window_end_ns {
                    if p.pending.is_empty() {
                        p.done = true;
                        shared.producers_done.fetch_add(1, Ordering::SeqCst);
                    }
                    return None;
                }
                while p.pending.len() < p.spec.inflight && !p.free.is_empty() {
                    let Some(from_ns) = p.schedule.take(now) else { break };
                    let part = p.rr % p.spec.partitions.len();
                    p.rr = p.rr.wrapping_add(1);
                    let mut frame = p.free.pop().expect("checked non-empty");
                    let rid = conn.next_rid;
                    conn.next_rid += 1;
                    (p.stamp_rid)(&mut frame, rid);
                    frame[p.partition_at..p.partition_at + 4].copy_from_slice(&p.spec.partitions[part].to_be_bytes());
                    let first_seq = p.next_seq[part];
                    p.template.stamp(&mut frame[p.batch_at..], first_seq, from_ns, wall_ms());
                    p.next_seq[part] += p.template.records() as u64;
                    p.pending.insert(rid, Pending { part, first_seq, from_ns });
                    conn.send_q.push_back(frame);
                    self.out.sends += 1;
                    if p.schedule.is_open_loop() && shared.in_window(now) {
                        self.out.lat.send_late_us.saturating_record(now.saturating_sub(from_ns) / 1_000);
                    }
                    if now.saturating_sub(from_ns) > LATE_NS {
                        self.out.sends_late += 1;
                    }
                }
                (p.schedule.is_open_loop() && p.pending.len() < p.spec.inflight).then(|| p.schedule.next_due_ns())
            }
            Role::C(c) => plan_consumer(c, &mut conn.next_rid, &mut conn.send_q, &shared, now),
        }
    }

    /// Keeps one receive and one send in flight on connection `i`.
    fn post(&mut self, i: usize) {
        let conn = &mut self.conns[i];
        if conn.dead {
            return;
        }
        if let Some(mut buf) = conn.rbuf.take() {
            if buf.capacity() - buf.len() < 4096 {
                buf.reserve(64 << 10);
            }
            if let Err(op) = self.io.push(Op::Recv { sock: conn.sock, buf }, token(i, KIND_RECV)) {
                conn.rbuf = Some(take_net_buf(op));
            }
        }
        if !conn.sending
            && let Some(buf) = conn.send_q.pop_front()
        {
            match self.io.push(Op::Send { sock: conn.sock, buf, sent: 0 }, token(i, KIND_SEND)) {
                Ok(()) => conn.sending = true,
                Err(op) => conn.send_q.push_front(take_net_buf(op)),
            }
        }
    }

    fn complete(&mut self, c: Completion) {
        let i = (c.token >> 1) as usize;
        let kind = c.token & 1;
        let buf = c.net_buf.unwrap_or_default();
        if kind == KIND_SEND {
            match c.result {
                Ok(n) => {
                    let conn = &mut self.conns[i];
                    conn.send_off += n as usize;
                    if conn.send_off < buf.len() {
                        // A short send: the rest goes before anything queued after it.
                        let sent = conn.send_off;
                        if let Err(op) = self.io.push(Op::Send { sock: conn.sock, buf, sent }, token(i, KIND_SEND)) {
                            conn.send_q.push_front(take_net_buf(op)[sent..].to_vec());
                            conn.sending = false;
                            conn.send_off = 0;
                        }
                        return;
                    }
                    conn.sending = false;
                    conn.send_off = 0;
                    self.return_send_buf(i, buf);
                }
                Err(e) => {
                    self.conns[i].sending = false;
                    self.lose(i, &format!("send: {}", nix::errno::Errno::from_raw(e)));
                }
            }
            return;
        }
        match c.result {
            Ok(0) => self.lose(i, "connection closed by the server"),
            Ok(_) => {
                let mut buf = buf;
                let consumed = self.frames(i, &buf);
                buf.drain(..consumed);
                // A frame longer than the buffer: make room for all of it.
                if buf.len() >= proto::LEN_BYTES {
                    let need = proto::LEN_BYTES + u32::from_be_bytes(buf[..4].try_into().expect("4 bytes")) as usize;
                    if need > buf.capacity() {
                        buf.reserve(need - buf.len());
                    }
                }
                if !self.conns[i].dead {
                    self.conns[i].rbuf = Some(buf);
                }
            }
            Err(e) if e == libc::ECANCELED => {}
            Err(e) => self.lose(i, &format!("receive: {}", nix::errno::Errno::from_raw(e))),
        }
    }

    /// A producer's whole frame goes back to its free list (the next stamp
    /// rewrites it); a consumer's request buffer is reused for the next ones.
    fn return_send_buf(&mut self, i: usize, mut buf: Vec<u8>) {
        match &mut self.conns[i].role {
            Role::P(p) => {
                if buf.len() == p.batch_at + p.template.bytes.len() {
                    p.free.push(buf);
                }
            }
            Role::C(c) => {
                if c.out.is_empty() {
                    buf.clear();
                    c.out = buf;
                }
            }
        }
    }

    /// Handles every whole frame at the front of `buf`; returns the bytes used.
    fn frames(&mut self, i: usize, buf: &[u8]) -> usize {
        let mut at = 0;
        while buf.len() - at >= proto::LEN_BYTES {
            let len = u32::from_be_bytes(buf[at..at + 4].try_into().expect("4 bytes")) as usize;
            let end = at + proto::LEN_BYTES + len;
            if end > buf.len() {
                break;
            }
            let kafka = match &self.conns[i].role {
                Role::P(p) => p.spec.kafka,
                Role::C(c) => c.spec.kafka,
            };
            if kafka {
                let answered = match &self.conns[i].role {
                    Role::P(_) => {
                        crate::kafka::decode_produce_response(&buf[at..end]).map(|a| self.acked(i, a.correlation_id as u64, kafka_ack(a)))
                    }
                    Role::C(_) => self.kafka_fetched(i, &buf[at..end]),
                };
                if let Err(e) = answered {
                    self.lose(i, &format!("undecodable Kafka reply: {e}"));
                    return buf.len();
                }
            } else {
                match proto::decode_response(&buf[at..end]) {
                    Ok((header, resp)) => self.reply(i, header.request_id, resp),
                    Err((_, e)) => {
                        self.lose(i, &format!("undecodable reply: {e}"));
                        return buf.len();
                    }
                }
            }
            at = end;
        }
        at
    }

    fn reply(&mut self, i: usize, rid: u64, resp: Response<'_>) {
        if matches!(self.conns[i].role, Role::P(_)) {
            let ack = match resp {
                Response::Produce { base_offset, last_offset } => Ok(Ack { partition: None, base_offset, last_offset: Some(last_offset) }),
                Response::Error { code, .. } => Err(format!("{code:?}")),
                _ => Err("produce answered with another api".into()),
            };
            return self.acked(i, rid, ack);
        }
        let now = now_ns();
        self.last_reply_ns = now;
        let shared = self.shared.clone();
        let out = &mut self.out;
        let conn = &mut self.conns[i];
        match &mut conn.role {
            Role::P(_) => unreachable!("answered above"),
            Role::C(c) => {
                // A push keeps its subscription pending; anything else ends it.
                let pushed = matches!(resp, Response::Subscribe { .. });
                let found = if pushed { c.pending.get(&rid).copied() } else { c.pending.remove(&rid) };
                let Some((pi, sent_ns)) = found else {
                    *out.errors.entry("reply to no request".into()).or_default() += 1;
                    return;
                };
                let measure = c.spec.measure && shared.in_window(now);
                let part = &mut c.parts[pi];
                part.outstanding = pushed;
                match resp {
                    Response::Fetch { batches, next_offset, .. } | Response::Subscribe { batches, next_offset, .. } => {
                        if pushed && !batches.is_empty() {
                            let grant = Request::Grant { subscription: rid, bytes: batches.len() as u64 };
                            proto::encode_request(&mut c.out, conn.next_rid, &grant);
                            conn.next_rid += 1;
                        }
                        if measure && !pushed {
                            out.lat.fetch_us.saturating_record(ns_to_us(now.saturating_sub(sent_ns)));
                            out.consumed.requests += 1;
                        }
                        if batches.is_empty() {
                            c.empty_replies += 1;
                            if c.wait_ms == 0 && c.empty_replies >= c.parts.len() {
                                c.pause_until_ns = now + EMPTY_ROUND_PAUSE_NS;
                                c.empty_replies = 0;
                            }
                            return;
                        }
                        c.empty_replies = 0;
                        take_batches(out, &shared, part, batches, next_offset, (measure, now));
                    }
                    Response::Error { code, .. } => {
                        *out.errors.entry(format!("{code:?}")).or_default() += 1;
                        c.pause_until_ns = now + EMPTY_ROUND_PAUSE_NS;
                    }
                    _ => *out.errors.entry("fetch answered with another api".into()).or_default() += 1,
                }
            }
        }
    }

    /// The connection is gone: what it had outstanding is indeterminate.
    fn lose(&mut self, i: usize, why: &str) {
        let conn = &mut self.conns[i];
        if conn.dead {
            return;
        }
        conn.dead = true;
        *self.out.errors.entry(format!("connection lost ({why})")).or_default() += 1;
        match &mut conn.role {
            Role::P(p) => {
                self.out.indeterminate += p.pending.len() as u64;
                p.pending.clear();
                if !p.done {
                    p.done = true;
                    self.shared.producers_done.fetch_add(1, Ordering::SeqCst);
                }
            }
            Role::C(c) => c.done = true,
        }
        self.io.close_socket(conn.sock);
    }

    fn close_all(&mut self) {
        for conn in &mut self.conns {
            if let Role::P(p) = &conn.role {
                self.out.indeterminate += p.pending.len() as u64;
            }
            if !conn.dead {
                conn.dead = true;
                self.io.close_socket(conn.sock);
            }
        }
        // Cancelled ops still complete and hand their buffers back; wait
        // for them so no buffer is freed while the kernel may use it.
        let mut spare = Vec::new();
        while self.io.in_flight() > 0 {
            if self.io.wait(1, Some(Duration::from_millis(100))).is_err() {
                break;
            }
            self.io.reap(&mut spare);
            spare.clear();
        }
    }

    fn finish(mut self) -> WorkerOutcome {
        for conn in self.conns.drain(..) {
            if let Role::C(c) = conn.role {
                for part in c.parts {
                    self.out.verifiers.push((c.spec.id, part.partition, part.v));
                }
            }
        }
        self.out
    }
}

/// Checks the batches a reply brought `part` and moves it past them; on
/// bytes that cannot be walked, to `next_offset` (the server's next).
/// `measure`: inside the window, timed at `now`.
/// Queues a consumer's next Fetches (or subscriptions) on its connection's
/// send queue; returns when it next wants to wake.
fn plan_consumer(c: &mut Consumer, next_rid: &mut u64, send_q: &mut VecDeque<Vec<u8>>, shared: &Shared, now: u64) -> Option<u64> {
    if c.done {
        return None;
    }
    let final_targets = shared.targets_final.load(Ordering::SeqCst);
    let mut all_done = true;
    for part in &mut c.parts {
        if final_targets
            && (c.spec.subscribe || !part.outstanding)
            && part.next >= shared.targets[part.partition as usize].load(Ordering::SeqCst)
        {
            part.done = true;
        }
        all_done &= part.done;
    }
    if all_done {
        c.done = true;
        return None;
    }
    if now < c.pause_until_ns {
        return Some(c.pause_until_ns);
    }
    if c.spec.kafka {
        kafka_fetch::plan(c, next_rid, &shared.topic, now);
        if !c.out.is_empty() {
            send_q.push_back(std::mem::take(&mut c.out));
        }
        return None;
    }
    let n = c.parts.len();
    let mut looked = 0;
    // A subscription stays pending for its life: no slot limit.
    while (c.spec.subscribe || c.pending.len() < FETCH_SLOTS) && looked < n {
        let pi = c.cursor % n;
        c.cursor = c.cursor.wrapping_add(1);
        looked += 1;
        let part = &mut c.parts[pi];
        if part.outstanding || part.done {
            continue;
        }
        let rid = *next_rid;
        *next_rid += 1;
        let (topic, partition) = (&shared.topic, part.partition);
        let req = if c.spec.subscribe {
            let start = proto::SubscribeStart::Offset(part.next);
            Request::Subscribe { topic, partition, credit_bytes: SUBSCRIBE_CREDIT_BYTES, start }
        } else {
            Request::Fetch { topic, partition, offset: part.next, max_bytes: FETCH_BYTES_MAX, max_wait_ms: c.wait_ms }
        };
        proto::encode_request(&mut c.out, rid, &req);
        part.outstanding = true;
        c.pending.insert(rid, (pi, now));
    }
    if !c.out.is_empty() {
        send_q.push_back(std::mem::take(&mut c.out));
    }
    None
}

fn take_batches(out: &mut WorkerOutcome, shared: &Shared, part: &mut Part, batches: &[u8], next_offset: u64, (measure, now): (bool, u64)) {
    let before = part.v.counts.checked;
    let e2e = &mut out.lat.e2e_us;
    let walked = part.v.batches(batches, part.next, |b| {
        if let (true, Some(send_ns)) = (measure, b.send_ns) {
            e2e.saturating_record_n(ns_to_us(now.saturating_sub(send_ns)), b.records);
        }
    });
    let records = part.v.counts.checked - before;
    shared.live_consumed_records.fetch_add(records, Ordering::Relaxed);
    if measure {
        out.consumed.records += records;
    }
    part.next = match walked {
        Ok(next) => next,
        Err(e) => {
            *out.errors.entry(format!("fetch reply: {e}")).or_default() += 1;
            next_offset.max(part.next)
        }
    };
}

fn take_net_buf(op: Op) -> Vec<u8> {
    match op {
        Op::Recv { buf, .. } | Op::Send { buf, .. } => buf,
        _ => unreachable!("only network ops are pushed here"),
    }
}
