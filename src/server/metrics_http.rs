//! The metrics listener (`metrics_listen`): `/metrics` in Prometheus' text
//! format and `/health`, over plain HTTP/1.1, on one thread of its own.
//!
//! Off the hot path by construction: a blocking `std` listener on its own
//! thread, one connection at a time (a scraper or a probe every few seconds
//! needs no more), every connection closed after one answer. The cores only
//! copy their registries and histograms when a scrape asks them (a message
//! on their control channel, answered at their next tick); rendering and
//! sending happen here. Bounds: a request head of at most
//! [`REQUEST_BYTES_MAX`], read and write timeouts of [`IO_TIMEOUT`], and a
//! scrape waits at most [`GATHER_TIMEOUT`] for the cores (a stuck core makes
//! `/health` answer 503, not hang).
use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::Duration;

use super::Shared;
use crate::error::{Result, StromError};
use crate::metrics::prometheus::{self, Scrape};

/// Largest request head read (request line and headers); a longer one is
/// answered 431 and closed.
const REQUEST_BYTES_MAX: usize = 8 << 10;
/// How long one connection may take to send its request or read the answer.
const IO_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a scrape waits for every core to report.
const GATHER_TIMEOUT: Duration = Duration::from_secs(5);
/// How often the idle listener looks whether the server is stopping.
const STOP_POLL: Duration = Duration::from_millis(100);

/// The running listener; stopped (and its thread joined) by [`MetricsHttp::stop`].
pub(crate) struct MetricsHttp {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl MetricsHttp {
    /// Binds `addr` now (so an address in use refuses the start); serves
    /// once [`MetricsHttp::start`] is given the server's shared state.
    pub fn bind(addr: SocketAddr) -> Result<TcpListener> {
        let listener = TcpListener::bind(addr)
            .map_err(|e| StromError::InvalidArgument(format!("--metrics-listen {addr}: cannot listen there: {e}")))?;
        // Non-blocking accepts, so the thread can notice a stop between them.
        listener.set_nonblocking(true).map_err(|e| StromError::InvalidArgument(format!("--metrics-listen {addr}: {e}")))?;
        Ok(listener)
    }

    pub fn start(listener: TcpListener, shared: Arc<Shared>) -> Result<MetricsHttp> {
        let addr = listener.local_addr().map_err(|e| StromError::InvalidArgument(format!("metrics listener address: {e}")))?;
        let stop = Arc::new(AtomicBool::new(false));
        let stopping = stop.clone();
        let thread = std::thread::Builder::new()
            .name("strom-metrics".into())
            .spawn(move || accept_loop(&listener, &shared, &stopping))
            .map_err(|e| StromError::InvalidArgument(format!("cannot start the metrics thread: {e}")))?;
        Ok(MetricsHttp { addr, stop, thread: Some(thread) })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops accepting and waits for the thread (at most one answer in progress).
    pub fn stop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn accept_loop(listener: &TcpListener, shared: &Shared, stop: &AtomicBool) {
    while !stop.load(Ordering::Relaxed) {
        match listener.accept() {
            Ok((stream, peer)) => {
                if let Err(e) = serve_one(stream, shared) {
                    tracing::debug!(%peer, %e, "metrics connection");
                }
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock => std::thread::sleep(STOP_POLL),
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            // EMFILE and the like: back off rather than spin; the next accept may succeed.
            Err(e) => {
                tracing::warn!(%e, "metrics listener accept failed");
                std::thread::sleep(STOP_POLL);
            }
        }
    }
}

/// Reads one request, answers it, closes.
fn serve_one(mut stream: TcpStream, shared: &Shared) -> std::io::Result<()> {
    stream.set_nonblocking(false)?;
    stream.set_read_timeout(Some(IO_TIMEOUT))?;
    stream.set_write_timeout(Some(IO_TIMEOUT))?;
    let answer = match read_head(&mut stream)? {
        None => Answer::text(431, "Request Header Fields Too Large", "request head too large\n".into()),
        Some(head) => route(&head, shared),
    };
    stream.write_all(&answer.bytes())?;
    stream.flush()
}

/// The request head up to its blank line; None if it is larger than
/// [`REQUEST_BYTES_MAX`]. A body, if any, is never read (GET has none).
fn read_head(stream: &mut TcpStream) -> std::io::Result<Option<String>> {
    let mut head = Vec::with_capacity(1024);
    let mut chunk = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") && !head.windows(2).any(|w| w == b"\n\n") {
        if head.len() >= REQUEST_BYTES_MAX {
            return Ok(None);
        }
        let n = stream.read(&mut chunk)?;
        if n == 0 {
            return Err(ErrorKind::UnexpectedEof.into());
        }
        head.extend_from_slice(&chunk[..n]);
    }
    Ok(Some(String::from_utf8_lossy(&head).into_owned()))
}

/// One response; always `Connection: close`.
struct Answer {
    status: u16,
    reason: &'static str,
    content_type: &'static str,
    body: String,
    /// HEAD: the headers of a GET, no body.
    head_only: bool,
    allow: bool,
}

impl Answer {
    fn text(status: u16, reason: &'static str, body: String) -> Answer {
        Answer { status, reason, content_type: "text/plain; charset=utf-8", body, head_only: false, allow: false }
    }

    fn bytes(&self) -> Vec<u8> {
        let mut out = format!(
            "HTTP/1.1 {} {}\r\nContent-Type: {}\r\nContent-Length: {}\r\nConnection: close\r\n",
            self.status,
            self.reason,
            self.content_type,
            self.body.len()
        );
        if self.allow {
            out.push_str("Allow: GET, HEAD\r\n");
        }
        out.push_str("\r\n");
        if !self.head_only {
            out.push_str(&self.body);
        }
        out.into_bytes()
    }
}

fn route(head: &str, shared: &Shared) -> Answer {
    let mut parts = head.lines().next().unwrap_or("").split(' ');
    let (Some(method), Some(target), Some(version)) = (parts.next(), parts.next(), parts.next()) else {
        return Answer::text(400, "Bad Request", "malformed request line\n".into());
    };
    if !version.starts_with("HTTP/1.") {
        return Answer::text(400, "Bad Request", "HTTP/1.x only\n".into());
    }
    // A query string (`/metrics?x=1`) selects nothing here.
    let path = target.split('?').next().unwrap_or(target);
    if path != "/metrics" && path != "/health" {
        return Answer::text(404, "Not Found", "not found: try /metrics or /health\n".into());
    }
    if method != "GET" && method != "HEAD" {
        return Answer { allow: true, ..Answer::text(405, "Method Not Allowed", "GET or HEAD only\n".into()) };
    }
    let mut answer = if path == "/metrics" { metrics(shared) } else { health(shared) };
    answer.head_only = method == "HEAD";
    answer
}

fn metrics(shared: &Shared) -> Answer {
    let body = prometheus::render(&gather(shared));
    Answer { content_type: prometheus::CONTENT_TYPE, ..Answer::text(200, "OK", body) }
}

fn health(shared: &Shared) -> Answer {
    match prometheus::health(&gather_metrics(shared)) {
        // A follower's logs take no writes by design: it is healthy while it serves.
        Ok(()) if shared.broker.read_only() => Answer::text(200, "OK", "ok: read-only, serving what its writer made durable\n".into()),
        Ok(()) => Answer::text(200, "OK", "ok: every log accepts writes\n".into()),
        Err(why) => Answer::text(503, "Service Unavailable", format!("{why}\n")),
    }
}

/// Each core's registry, None for a core that did not answer in time.
fn gather_metrics(shared: &Shared) -> Vec<Option<crate::metrics::Metrics>> {
    let (tx, rx) = mpsc::sync_channel(1);
    let own = shared.gather_metrics(None, move |cores| drop(tx.send(cores)));
    debug_assert!(own.is_none());
    rx.recv_timeout(GATHER_TIMEOUT).unwrap_or_else(|_| vec![None; shared.controls.len()])
}

fn gather(shared: &Shared) -> Scrape {
    let metrics = gather_metrics(shared);
    let (tx, rx) = mpsc::sync_channel(1);
    shared.gather_stages_by_core(move |cores| drop(tx.send(cores)));
    let by_core = rx.recv_timeout(GATHER_TIMEOUT).unwrap_or_else(|_| vec![None; shared.controls.len()]);
    let (stages, requests) = by_core.into_iter().map(|c| c.map_or((None, None), |(s, r)| (Some(s), Some(*r)))).unzip();
    let topics = shared.broker.topics();
    let partitions = topics.values().map(|t| u64::from(t.partitions)).sum();
    Scrape { metrics, stages, requests, topics: topics.len() as u64, partitions }
}
