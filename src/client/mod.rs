//! A blocking client for the native protocol ([`crate::proto`]) on one TCP
//! connection.
//!
//! Requests may be pipelined: [`Client::send`] writes one request and returns
//! its id, [`Client::recv`] returns the next reply. The typed helpers
//! (`produce`, `fetch`, ...) send one request and wait for its reply; replies
//! to other requests that arrive meanwhile are kept, and later `recv` calls
//! return them first, in the order they arrived.
//!
//! A pipelining caller must keep receiving: the server stops reading
//! requests while it cannot send replies, so a client that only sends can
//! block both ends. A write timeout ([`Client::set_timeout`]) turns that into
//! an error.
//!
//! After an I/O or protocol error the position of the next frame in the byte
//! stream is unknown, so the connection is dropped for good: every later call
//! fails, and the caller connects again. The client retries nothing itself;
//! [`ClientError::is_retriable`] says whether a retry can succeed.
use std::collections::{HashMap, VecDeque};
use std::io::{ErrorKind, Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::catalog::{TopicDescription, TopicRetention, validate_topic_name};
use crate::proto::{self, Api, Header, OffsetSpec, Request, Response, ServerInfo, TopicMetadata};
use crate::wire::batch::BatchBuilder;

mod topic;

pub use crate::stats::{StageLatency, StageReport};
pub use error::ClientError;
pub use fetch::{FetchedRecord, FetchedRecords, RecordsAt};
pub use subscribe::{Push, Subscription};

mod error;
mod fetch;
mod query;
mod subscribe;

/// The default largest reply frame: 64 MiB holds any Fetch a server with
/// default limits sends, with room for servers configured larger.
pub const REPLY_FRAME_BYTES_MAX_DEFAULT: usize = 64 << 20;
/// The default requests in flight per connection: the server's default
/// per-connection limit, so a default client is never pushed back by it.
pub const INFLIGHT_MAX_DEFAULT: usize = 256;
/// How long [`Client::for_partition`] waits for the core's own listener.
const DIRECT_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Bytes of a foreign peer's answer read to quote its first line.
const FOREIGN_QUOTE_BYTES_MAX: usize = 60;
/// How long to wait for more of a foreign peer's answer: it has spoken
/// already, so what it sent with its first bytes has arrived or is close.
const FOREIGN_READ_WAIT: Duration = Duration::from_millis(200);
/// The request id of the server's connection-level errors; requests never use it.
const CONNECTION_ERROR_ID: u64 = 0;

const _: () = assert!(REPLY_FRAME_BYTES_MAX_DEFAULT >= proto::FRAME_BYTES_MAX_DEFAULT);

/// The client's own bounds; `Default` gives the values documented on each.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientLimits {
    /// Largest request `length` sent; a larger request is refused before a
    /// byte of it is written. Default [`proto::FRAME_BYTES_MAX_DEFAULT`],
    /// what a server with default limits accepts.
    pub request_frame_bytes_max: usize,
    /// Largest reply `length` accepted; a longer reply is refused from its
    /// length field, before its body is allocated or read. Default
    /// [`REPLY_FRAME_BYTES_MAX_DEFAULT`].
    pub reply_frame_bytes_max: usize,
    /// Requests sent and not yet returned by `recv` (answered or not);
    /// `send` refuses more. Default [`INFLIGHT_MAX_DEFAULT`].
    pub inflight_max: usize,
}

impl Default for ClientLimits {
    fn default() -> Self {
        ClientLimits {
            request_frame_bytes_max: proto::FRAME_BYTES_MAX_DEFAULT,
            reply_frame_bytes_max: REPLY_FRAME_BYTES_MAX_DEFAULT,
            inflight_max: INFLIGHT_MAX_DEFAULT,
        }
    }
}

/// The answer to a Produce: the offsets the server gave the first record of
/// the first batch and the last record of the last.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProduceAck {
    pub base_offset: u64,
    pub last_offset: u64,
}

impl ProduceAck {
    /// Records acknowledged (offsets are consecutive within one Produce).
    pub fn record_count(&self) -> u64 {
        self.last_offset.saturating_sub(self.base_offset) + 1
    }
}

/// The answer to a Fetch, owning its batches.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FetchResult {
    /// The offset the next appended record will get: the end of the log.
    pub high_watermark: u64,
    /// The earliest offset still stored.
    pub start_offset: u64,
    /// The offset to fetch from next.
    pub next_offset: u64,
    /// Zero or more RecordBatch v2, verbatim as stored; the first may start
    /// before the offset asked for.
    pub batches: Vec<u8>,
}

/// The answer to a Metadata request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Metadata {
    /// Where core `i` listens directly; "" means through the main listener.
    pub core_addrs: Vec<String>,
    pub topics: Vec<TopicMetadata>,
}

/// A successful reply, owning everything it holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OwnedResponse {
    Produce(ProduceAck),
    Fetch(FetchResult),
    /// `None`: no such offset (a timestamp past every record).
    ListOffsets(Option<u64>),
    Metadata(Metadata),
    CreateTopic,
    DeleteTopic,
    /// The topic's own retention settings after the change.
    AlterTopic(TopicRetention),
    DescribeTopic(TopicDescription),
    OffsetCommit,
    /// `None`: the group committed nothing for the partition.
    OffsetFetch(Option<u64>),
    /// The server's per-stage latency, one row per stage (and each core's
    /// rows, when asked for).
    Stats(StageReport),
    /// Per core, its metrics as (name, value).
    Metrics(Vec<Vec<(String, u64)>>),
    ServerInfo(ServerInfo),
    /// The bounds of a queried range.
    Query(crate::core::query::QueryBounds),
    /// A subscription's push ([`subscribe`]).
    Subscribe(Push),
    Grant,
    Cancel,
    /// The user the connection authenticated as ("" with authentication off).
    Authenticate(String),
}

impl OwnedResponse {
    pub fn api(&self) -> Api {
        match self {
            OwnedResponse::Produce(_) => Api::Produce,
            OwnedResponse::Fetch(_) => Api::Fetch,
            OwnedResponse::ListOffsets(_) => Api::ListOffsets,
            OwnedResponse::Metadata(_) => Api::Metadata,
            OwnedResponse::CreateTopic => Api::CreateTopic,
            OwnedResponse::DeleteTopic => Api::DeleteTopic,
            OwnedResponse::AlterTopic(_) => Api::AlterTopic,
            OwnedResponse::DescribeTopic(_) => Api::DescribeTopic,
            OwnedResponse::OffsetCommit => Api::OffsetCommit,
            OwnedResponse::OffsetFetch(_) => Api::OffsetFetch,
            OwnedResponse::Stats(_) => Api::Stats,
            OwnedResponse::Metrics(_) => Api::Metrics,
            OwnedResponse::ServerInfo(_) => Api::ServerInfo,
            OwnedResponse::Query(_) => Api::Query,
            OwnedResponse::Subscribe(_) => Api::Subscribe,
            OwnedResponse::Grant => Api::Grant,
            OwnedResponse::Cancel => Api::Cancel,
            OwnedResponse::Authenticate(_) => Api::Authenticate,
        }
    }
}

/// One reply, as [`Client::recv`] returns it. `result` is `Err` only with
/// [`ClientError::Server`]: the request failed, the connection did not.
#[derive(Debug)]
pub struct Reply {
    pub request_id: u64,
    pub api: Api,
    pub result: Result<OwnedResponse, ClientError>,
}

/// A blocking connection to one server. See the module documentation.
#[derive(Debug)]
pub struct Client {
    stream: TcpStream,
    limits: ClientLimits,
    /// The read and write timeout, for error messages.
    timeout: Option<Duration>,
    next_request_id: u64,
    /// The api of each request sent and not yet answered, by request id.
    inflight: HashMap<u64, Api>,
    /// Replies read while a typed helper waited for its own; `recv` returns
    /// them first. Counted against `inflight_max` with `inflight`.
    stashed: VecDeque<Reply>,
    /// Why the connection was dropped, once an I/O or protocol error broke it.
    broken: Option<String>,
    /// Reused for each request's encoding.
    send_buf: Vec<u8>,
    /// Reused for each reply frame; grows to the largest reply read, which
    /// `reply_frame_bytes_max` bounds.
    recv_buf: Vec<u8>,
    /// The token it authenticated with, for [`Client::for_partition`].
    token: Option<String>,
}

impl Client {
    /// Connects to the first address of `addr` that accepts.
    pub fn connect(addr: impl ToSocketAddrs) -> Result<Client, ClientError> {
        Client::over(TcpStream::connect(addr)?)
    }

    /// Like [`Client::connect`], giving each address at most `timeout` to accept.
    pub fn connect_timeout(addr: impl ToSocketAddrs, timeout: Duration) -> Result<Client, ClientError> {
        let mut last_error = None;
        for a in addr.to_socket_addrs()? {
            match TcpStream::connect_timeout(&a, timeout) {
                Ok(stream) => return Client::over(stream),
                Err(e) => last_error = Some(e),
            }
        }
        Err(ClientError::Io(last_error.unwrap_or_else(|| std::io::Error::new(ErrorKind::InvalidInput, "the address resolved to nothing"))))
    }

    /// A connection straight to the core that owns `topic`'s `partition`,
    /// at the address Metadata names for that core, so its requests are not
    /// forwarded between cores on the server. Keeps this connection (and its
    /// settings) when the server names no direct address. An unspecified IP
    /// (a server listening on 0.0.0.0) is replaced by this connection's peer.
    pub fn for_partition(mut self, topic: &str, partition: u32) -> Result<Client, ClientError> {
        let md = self.metadata(&[topic])?;
        let core = md.topics.first().and_then(|t| t.partition_cores.get(partition as usize)).copied();
        let Some(addr) = core.and_then(|c| md.core_addrs.get(c as usize)).filter(|a| !a.is_empty()) else {
            return Ok(self);
        };
        let mut direct: std::net::SocketAddr =
            addr.parse().map_err(|_| ClientError::Protocol(format!("Metadata named {addr:?} as a core's address")))?;
        if direct.ip().is_unspecified() {
            direct.set_ip(self.stream.peer_addr()?.ip());
        }
        let mut c = Client::over(TcpStream::connect_timeout(&direct, DIRECT_CONNECT_TIMEOUT)?)?;
        c.set_timeout(self.timeout)?;
        c.limits = self.limits;
        if let Some(token) = self.token.take() {
            c.authenticate(&token)?;
        }
        Ok(c)
    }

    fn over(stream: TcpStream) -> Result<Client, ClientError> {
        // Requests are written whole, one write each: Nagle's delay would
        // only hold back the last segment of a request waiting for an ack.
        stream.set_nodelay(true)?;
        Ok(Client {
            stream,
            limits: ClientLimits::default(),
            timeout: None,
            next_request_id: 1,
            inflight: HashMap::new(),
            stashed: VecDeque::new(),
            broken: None,
            send_buf: Vec::new(),
            recv_buf: Vec::new(),
            token: None,
        })
    }

    /// Authenticates the connection with `token` (a server with
    /// authentication on serves nothing before it; one with it off takes
    /// any token). Returns the user the server names ("" with it off); a
    /// wrong token is `AuthFailed`, and the server closes the connection.
    /// Kept, so that [`Client::for_partition`] authenticates its direct
    /// connection too.
    pub fn authenticate(&mut self, token: &str) -> Result<String, ClientError> {
        match self.call(&Request::Authenticate { token })? {
            OwnedResponse::Authenticate(user) => {
                self.token = Some(token.to_string());
                Ok(user)
            }
            other => Err(unexpected(Api::Authenticate, &other)),
        }
    }

    /// The server address this connection reached.
    pub fn peer_addr(&self) -> Result<std::net::SocketAddr, ClientError> {
        Ok(self.stream.peer_addr()?)
    }

    /// Sets the read and write timeout of the socket (`None`: wait forever).
    /// A call that times out breaks the connection. A Fetch's `max_wait` must
    /// stay under it.
    pub fn set_timeout(&mut self, timeout: Option<Duration>) -> Result<(), ClientError> {
        self.stream.set_read_timeout(timeout)?;
        self.stream.set_write_timeout(timeout)?;
        self.timeout = timeout;
        Ok(())
    }

    pub fn limits(&self) -> ClientLimits {
        self.limits
    }

    pub fn set_limits(&mut self, limits: ClientLimits) {
        self.limits = limits;
    }

    /// Requests sent whose replies `recv` has not returned yet.
    pub fn inflight(&self) -> usize {
        self.inflight.len() + self.stashed.len()
    }

    /// Checks the names in `req`, encodes it and writes it whole; returns
    /// its request id, which the reply carries.
    pub fn send(&mut self, req: &Request<'_>) -> Result<u64, ClientError> {
        self.usable()?;
        check_names(req)?;
        // A Grant or Cancel ends or feeds what is in flight: never refused for it.
        if self.inflight() >= self.limits.inflight_max && !matches!(req.api(), Api::Grant | Api::Cancel) {
            return Err(ClientError::InvalidArgument(format!(
                "{} requests are already in flight, the limit: receive replies before sending more",
                self.inflight()
            )));
        }
        let request_id = self.next_request_id;
        self.send_buf.clear();
        proto::encode_request(&mut self.send_buf, request_id, req);
        let length = self.send_buf.len() - proto::LEN_BYTES;
        if length > self.limits.request_frame_bytes_max {
            return Err(ClientError::InvalidArgument(format!(
                "a {:?} request of {length} bytes is over the request frame limit of {} bytes",
                req.api(),
                self.limits.request_frame_bytes_max
            )));
        }
        if let Err(e) = self.stream.write_all(&self.send_buf) {
            return Err(self.break_on(self.io_error(e)));
        }
        self.next_request_id += 1;
        // A Grant is not answered unless it fails (docs/PROTOCOL.md).
        if req.api() != Api::Grant {
            self.inflight.insert(request_id, req.api());
        }
        Ok(request_id)
    }

    /// The next reply: a kept one first, else the next from the socket.
    /// Blocks; refuses when no request is in flight (it would wait forever).
    pub fn recv(&mut self) -> Result<Reply, ClientError> {
        if let Some(reply) = self.stashed.pop_front() {
            return Ok(reply);
        }
        if self.inflight.is_empty() {
            return Err(ClientError::InvalidArgument("recv with no request in flight".into()));
        }
        self.read_reply()
    }

    /// Sends `req` and waits for its reply, keeping other replies for `recv`.
    fn call(&mut self, req: &Request<'_>) -> Result<OwnedResponse, ClientError> {
        let request_id = self.send(req)?;
        loop {
            let reply = self.read_reply()?;
            if reply.request_id == request_id {
                return reply.result;
            }
            self.stashed.push_back(reply);
        }
    }

    fn read_reply(&mut self) -> Result<Reply, ClientError> {
        self.usable()?;
        if let Err(e) = self.read_frame() {
            return Err(self.break_on(e));
        }
        let (header, result) = match decode_reply(&self.recv_buf) {
            Ok(decoded) => decoded,
            Err(e) => return Err(self.break_on(e)),
        };
        if header.request_id == CONNECTION_ERROR_ID
            && let Err(e) = result
        {
            // Request id 0 is never sent: an error with it is about the
            // connection (too many connections, a frame too large, a
            // timeout), and the server closes it next.
            return Err(self.break_on(e));
        }
        let Some(&api) = self.inflight.get(&header.request_id) else {
            let e = ClientError::Protocol(format!("a reply to request {}, which is not in flight", header.request_id));
            return Err(self.break_on(e));
        };
        if Api::from_u16(header.api) != Some(api) {
            let e = ClientError::Protocol(format!("request {} was a {api:?}, its reply says api {}", header.request_id, header.api));
            return Err(self.break_on(e));
        }
        // A subscription's pushes all answer its one request, until one
        // that is an error ends it.
        if api != Api::Subscribe || result.is_err() {
            self.inflight.remove(&header.request_id);
        }
        Ok(Reply { request_id: header.request_id, api, result })
    }

    /// Reads one whole frame into `recv_buf`, checking its length before
    /// reading (or allocating for) anything after it.
    fn read_frame(&mut self) -> Result<(), ClientError> {
        let mut length = [0u8; proto::LEN_BYTES];
        if let Err(e) = self.stream.read_exact(&mut length) {
            return Err(self.io_error(e));
        }
        let frame_bytes = match proto::frame_len(&length, self.limits.reply_frame_bytes_max) {
            Ok(Some(n)) => n,
            Ok(None) => unreachable!("frame_len was given all {} length bytes", proto::LEN_BYTES),
            Err(e) => {
                let peer = self.stream.peer_addr().map_or_else(|_| "the server".to_string(), |a| format!("the server at {a}"));
                let why = format!("{peer} sent a reply whose {e}; check that --addr names a strom serve listener");
                return Err(self.foreign_peer(length).unwrap_or(ClientError::Protocol(why)));
            }
        };
        self.recv_buf.clear();
        self.recv_buf.extend_from_slice(&length);
        self.recv_buf.resize(frame_bytes, 0);
        if let Err(e) = self.stream.read_exact(&mut self.recv_buf[proto::LEN_BYTES..]) {
            return Err(self.io_error(e));
        }
        Ok(())
    }

    /// Names a peer that does not speak Strom's protocol: a reply that
    /// begins with printable text ("HTTP", "SSH-", "-ERR") is another
    /// protocol, not a Strom frame of a billion bytes. Reads what else the
    /// peer sent, briefly, to quote its first line; `None` for binary bytes.
    fn foreign_peer(&mut self, first: [u8; proto::LEN_BYTES]) -> Option<ClientError> {
        if !first.iter().all(|b| b.is_ascii_graphic() || *b == b' ') {
            return None;
        }
        let mut quoted = first.to_vec();
        let mut more = [0u8; FOREIGN_QUOTE_BYTES_MAX];
        // The connection is dropped after this error, so its timeout can change.
        if self.stream.set_read_timeout(Some(FOREIGN_READ_WAIT)).is_ok()
            && let Ok(n) = self.stream.read(&mut more)
        {
            quoted.extend_from_slice(&more[..n]);
        }
        let line = String::from_utf8_lossy(&quoted);
        let line: String = line.lines().next().unwrap_or_default().chars().filter(|c| !c.is_control()).collect();
        let peer = self.stream.peer_addr().map_or_else(|_| "the address".to_string(), |a| a.to_string());
        Some(ClientError::Protocol(format!(
            "the server at {peer} does not speak Strom's protocol (it answered \"{line}\"); check --addr names a strom serve listener"
        )))
    }

    /// Words an I/O error for someone who does not know sockets: a timeout
    /// names the timeout, an end of stream says who closed it.
    fn io_error(&self, e: std::io::Error) -> ClientError {
        ClientError::Io(match e.kind() {
            ErrorKind::WouldBlock | ErrorKind::TimedOut => {
                let within = self.timeout.map(|t| format!(" within {} ms", t.as_millis())).unwrap_or_default();
                let peer = self.stream.peer_addr().map_or_else(|_| "the server".to_string(), |a| format!("the server at {a}"));
                // A peer of another protocol that waits for a request it understands looks like this too.
                let text = format!("{peer} did not answer{within} (is it a strom serve, and is it overloaded or stopped?)");
                std::io::Error::new(ErrorKind::TimedOut, text)
            }
            ErrorKind::UnexpectedEof => std::io::Error::new(ErrorKind::UnexpectedEof, "the server closed the connection"),
            _ => e,
        })
    }

    /// Marks the connection unusable (see the module documentation).
    fn break_on(&mut self, e: ClientError) -> ClientError {
        if self.broken.is_none() {
            self.broken = Some(e.to_string());
        }
        e
    }

    fn usable(&self) -> Result<(), ClientError> {
        match &self.broken {
            None => Ok(()),
            Some(why) => Err(ClientError::Io(std::io::Error::new(
                ErrorKind::NotConnected,
                format!("the connection was dropped after an earlier error: {why}"),
            ))),
        }
    }

    pub fn create_topic(&mut self, name: &str, partitions: u32) -> Result<(), ClientError> {
        match self.call(&Request::CreateTopic { topic: name, partitions, retention: None, indices: vec![] })? {
            OwnedResponse::CreateTopic => Ok(()),
            other => Err(unexpected(Api::CreateTopic, &other)),
        }
    }

    pub fn delete_topic(&mut self, name: &str) -> Result<(), ClientError> {
        match self.call(&Request::DeleteTopic { topic: name })? {
            OwnedResponse::DeleteTopic => Ok(()),
            other => Err(unexpected(Api::DeleteTopic, &other)),
        }
    }

    /// The cores' addresses and the named topics (all topics if `topics` is empty).
    pub fn metadata(&mut self, topics: &[&str]) -> Result<Metadata, ClientError> {
        match self.call(&Request::Metadata { topics: topics.to_vec() })? {
            OwnedResponse::Metadata(m) => Ok(m),
            other => Err(unexpected(Api::Metadata, &other)),
        }
    }

    /// Appends `batches` (one or more RecordBatch v2 back to back) and waits
    /// until the server acknowledges them as its fsync policy defines.
    pub fn produce(&mut self, topic: &str, partition: u32, batches: &[u8]) -> Result<ProduceAck, ClientError> {
        match self.call(&Request::Produce { topic, partition, batches })? {
            OwnedResponse::Produce(ack) => Ok(ack),
            other => Err(unexpected(Api::Produce, &other)),
        }
    }

    /// Appends one batch holding `values` as records without keys, stamped
    /// with the current time.
    pub fn produce_values(&mut self, topic: &str, partition: u32, values: &[&[u8]]) -> Result<ProduceAck, ClientError> {
        if values.is_empty() {
            return Err(ClientError::InvalidArgument("a batch needs at least one record".into()));
        }
        let batch = values_batch(values, now_ms());
        self.produce(topic, partition, &batch)
    }

    /// Reads from `offset`, up to about `max_bytes` of batches; with nothing
    /// to return, the server waits up to `max_wait` for records to arrive.
    pub fn fetch(
        &mut self,
        topic: &str,
        partition: u32,
        offset: u64,
        max_bytes: u32,
        max_wait: Duration,
    ) -> Result<FetchResult, ClientError> {
        if let Some(timeout) = self.timeout.filter(|&t| max_wait >= t) {
            return Err(ClientError::InvalidArgument(format!(
                "a fetch waiting up to {} ms would hit the {} ms read timeout",
                max_wait.as_millis(),
                timeout.as_millis()
            )));
        }
        let max_wait_ms = u32::try_from(max_wait.as_millis()).unwrap_or(u32::MAX);
        match self.call(&Request::Fetch { topic, partition, offset, max_bytes, max_wait_ms })? {
            OwnedResponse::Fetch(f) => Ok(f),
            other => Err(unexpected(Api::Fetch, &other)),
        }
    }

    /// The earliest offset, the end offset, or the first offset with a
    /// timestamp at or after the one given (`None` if there is none).
    pub fn list_offsets(&mut self, topic: &str, partition: u32, spec: OffsetSpec) -> Result<Option<u64>, ClientError> {
        match self.call(&Request::ListOffsets { topic, partition, spec })? {
            OwnedResponse::ListOffsets(offset) => Ok(offset),
            other => Err(unexpected(Api::ListOffsets, &other)),
        }
    }

    pub fn commit_offset(&mut self, group: &str, topic: &str, partition: u32, offset: u64) -> Result<(), ClientError> {
        match self.call(&Request::OffsetCommit { group, topic, partition, offset })? {
            OwnedResponse::OffsetCommit => Ok(()),
            other => Err(unexpected(Api::OffsetCommit, &other)),
        }
    }

    /// The offset `group` last committed for the partition, if any.
    pub fn fetch_offset(&mut self, group: &str, topic: &str, partition: u32) -> Result<Option<u64>, ClientError> {
        match self.call(&Request::OffsetFetch { group, topic, partition })? {
            OwnedResponse::OffsetFetch(offset) => Ok(offset),
            other => Err(unexpected(Api::OffsetFetch, &other)),
        }
    }

    /// The server's per-stage latency of produce requests (and fetches),
    /// merged across its cores; `reset` clears it after reading (to drop a
    /// warm-up). See [`crate::stats`] for what each stage covers.
    pub fn stage_latency(&mut self, reset: bool) -> Result<Vec<StageLatency>, ClientError> {
        match self.call(&Request::Stats { reset, per_core: false })? {
            OwnedResponse::Stats(report) => Ok(report.total),
            other => Err(unexpected(Api::Stats, &other)),
        }
    }

    /// [`Client::stage_latency`] and each core's own rows, in core order
    /// (Stats version 2: a server older than it answers UnsupportedVersion).
    pub fn stage_latency_by_core(&mut self, reset: bool) -> Result<StageReport, ClientError> {
        match self.call(&Request::Stats { reset, per_core: true })? {
            OwnedResponse::Stats(report) => Ok(report),
            other => Err(unexpected(Api::Stats, &other)),
        }
    }

    /// Every core's metrics registry, in core order, as (name, value) pairs
    /// in the server's order; [`crate::metrics::Metrics::from_pairs`] types them.
    pub fn metrics(&mut self) -> Result<Vec<Vec<(String, u64)>>, ClientError> {
        match self.call(&Request::Metrics)? {
            OwnedResponse::Metrics(cores) => Ok(cores),
            other => Err(unexpected(Api::Metrics, &other)),
        }
    }

    /// The server's version, cores, fsync policy and limits (its largest
    /// batch and frame), to size requests before sending any.
    pub fn server_info(&mut self) -> Result<ServerInfo, ClientError> {
        match self.call(&Request::ServerInfo)? {
            OwnedResponse::ServerInfo(info) => Ok(info),
            other => Err(unexpected(Api::ServerInfo, &other)),
        }
    }
}

/// Checks a topic or group name by the broker's rules, so that a bad name
/// is refused here rather than by a round trip.
pub fn check_name(name: &str) -> Result<(), ClientError> {
    validate_topic_name(name).map_err(|_| ClientError::InvalidName(name.escape_debug().take(300).collect()))
}

/// Checks every topic and group name a request carries.
fn check_names(req: &Request<'_>) -> Result<(), ClientError> {
    match req {
        Request::Produce { topic, .. }
        | Request::Fetch { topic, .. }
        | Request::ListOffsets { topic, .. }
        | Request::CreateTopic { topic, .. }
        | Request::DeleteTopic { topic }
        | Request::AlterTopic { topic, .. }
        | Request::DescribeTopic { topic }
        | Request::Query { topic, .. } => check_name(topic),
        Request::Subscribe { topic, .. } => check_name(topic),
        Request::Metadata { topics } => topics.iter().try_for_each(|t| check_name(t)),
        Request::OffsetCommit { group, topic, .. } | Request::OffsetFetch { group, topic, .. } => {
            check_name(group)?;
            check_name(topic)
        }
        Request::Stats { .. }
        | Request::Metrics
        | Request::ServerInfo
        | Request::Grant { .. }
        | Request::Cancel { .. }
        | Request::Authenticate { .. } => Ok(()),
    }
}

/// Decodes one whole reply frame into its header and an owned result.
fn decode_reply(frame: &[u8]) -> Result<(Header, Result<OwnedResponse, ClientError>), ClientError> {
    let (header, response) = proto::decode_response(frame).map_err(|(header, e)| match header {
        Some(h) => ClientError::Protocol(format!("undecodable reply to request {}: {e}", h.request_id)),
        None => ClientError::Protocol(format!("undecodable reply: {e}")),
    })?;
    let result = match response {
        Response::Produce { base_offset, last_offset } => Ok(OwnedResponse::Produce(ProduceAck { base_offset, last_offset })),
        Response::Fetch { high_watermark, start_offset, next_offset, batches } => {
            Ok(OwnedResponse::Fetch(FetchResult { high_watermark, start_offset, next_offset, batches: batches.to_vec() }))
        }
        Response::ListOffsets { offset } => Ok(OwnedResponse::ListOffsets(offset)),
        Response::Query(bounds) => Ok(OwnedResponse::Query(bounds)),
        Response::Metadata { core_addrs, topics } => Ok(OwnedResponse::Metadata(Metadata { core_addrs, topics })),
        Response::CreateTopic => Ok(OwnedResponse::CreateTopic),
        Response::DeleteTopic => Ok(OwnedResponse::DeleteTopic),
        Response::AlterTopic { retention } => Ok(OwnedResponse::AlterTopic(retention)),
        Response::DescribeTopic { description } => Ok(OwnedResponse::DescribeTopic(description)),
        Response::OffsetCommit => Ok(OwnedResponse::OffsetCommit),
        Response::OffsetFetch { offset } => Ok(OwnedResponse::OffsetFetch(offset)),
        Response::Stats { stages, cores } => Ok(OwnedResponse::Stats(StageReport { total: stages, cores })),
        Response::Metrics { cores } => {
            Ok(OwnedResponse::Metrics(cores.into_iter().map(|c| c.into_iter().map(|(k, v)| (k.to_string(), v)).collect()).collect()))
        }
        Response::ServerInfo(info) => Ok(OwnedResponse::ServerInfo(info)),
        Response::Subscribe { from_offset, next_offset, high_watermark, batches } => Ok(OwnedResponse::Subscribe(Push {
            from_offset,
            fetch: FetchResult { high_watermark, start_offset: from_offset, next_offset, batches: batches.to_vec() },
        })),
        Response::Grant => Ok(OwnedResponse::Grant),
        Response::Cancel => Ok(OwnedResponse::Cancel),
        Response::Authenticate { user } => Ok(OwnedResponse::Authenticate(user)),
        Response::Error { code, message } => Err(ClientError::Server { code, message: message.to_string() }),
    };
    Ok((header, result))
}

/// A reply of another api than the request's: `read_reply` checks the
/// header's api, so this means the codec and the header disagree.
pub(crate) fn unexpected(asked: Api, got: &OwnedResponse) -> ClientError {
    ClientError::Protocol(format!("a {:?} reply to a {asked:?} request", got.api()))
}

/// One batch of keyless records holding `values`, all stamped `timestamp_ms`.
fn values_batch(values: &[&[u8]], timestamp_ms: i64) -> Vec<u8> {
    let mut builder = BatchBuilder::new(timestamp_ms);
    for value in values {
        builder.push(timestamp_ms, None, Some(value), &[]);
    }
    builder.finish()
}

/// Milliseconds since the Unix epoch; 0 on a clock set before it.
fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX)).unwrap_or(0)
}

#[cfg(test)]
mod tests;
