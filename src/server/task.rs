//! One core's server: its listeners and connections, run on the core's own
//! ring as a [`CoreTask`] beside the logs, and the seam where a decoded
//! frame becomes a broker command.
//!
//! Each tick the core calls [`CoreTask::on_reaped`] after reaping (accepts,
//! receives and sends complete; whole frames are decoded and executed, so
//! a produce for this core is staged before the core plans its commits),
//! then [`CoreTask::plan`] after planning its own I/O (replies answered in
//! this tick are queued and sent; receives, polls and accepts are pushed).
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::sync::mpsc::{Receiver, SyncSender};

use slab::Slab;

use super::Shared;
use super::codec::Codec;
use super::conn::{Conn, Listener, State};
use super::control::{Control, MetricsShare};
use super::listen::ListenSock;
use super::metrics::api_of;
use super::recv::RecvPool;
use super::reply::{ConnKey, Done, Replier, Ticket};
use super::stream::Streams;
use super::sweep::SWEEP_NS;
use crate::broker::{Command, Dispatcher, Host, ReplyBuf};
use crate::core::Request;
use crate::core::task::{CoreTask, TaskCore};
use crate::error::StromError;
use crate::io::token::{OpKind, Token};
use crate::io::{Completion, Io};
use crate::metrics::requests::{API_UNDECODABLE, Api, CODE_UNDECODABLE, RequestCounts};
use crate::metrics::{ConnMetrics, Metrics};
use crate::read::ReplyBudget;
use crate::stats::{CoreStages, StageHistograms, StageLatency, StageReport};

/// One core's connections, listeners and their budgets, speaking `C`.
pub(crate) struct NetCore<C: Codec> {
    pub(super) core_id: usize,
    /// The protocols of this core's listeners; a connection speaks its
    /// listener's ([`Conn::codec`]).
    pub(super) codecs: Vec<C>,
    pub(super) shared: Arc<Shared>,
    pub(super) inbox: Receiver<Done>,
    pub(super) control: Receiver<Control>,
    /// The broker's part on this core: where decoded commands go.
    pub(super) broker: Dispatcher,
    /// Sockets handed over at start, with the index of their protocol in
    /// `codecs`, adopted by the ring on the first tick.
    pub(super) unadopted: Vec<(ListenSock, u8)>,
    pub(super) listeners: Vec<Listener>,
    pub(super) conns: Slab<Conn>,
    pub(super) next_generation: u32,
    /// Connections to move on in this tick's plan.
    pub(super) dirty: Vec<usize>,
    /// Connections that want to read while the whole core is pushed back.
    pub(super) stalled: Vec<usize>,
    pub(super) pool: RecvPool,
    /// Request and reply bytes of this core's connections.
    pub(super) held_bytes: usize,
    /// Receive-buffer bytes connections keep between receives (frames
    /// still arriving), also counted against `core_buffered_bytes_max`.
    pub(super) rbuf_bytes: usize,
    /// Capacity of the receive buffers inside receives in flight.
    pub(super) recv_inflight_bytes: usize,
    /// Room for this core's connections' Fetch replies, shared with the
    /// cores that build them (`budget.rs`).
    pub(super) budget: Arc<ReplyBudget>,
    /// Budget returned by this task while reads wait for it: the core polls
    /// once more so its own read path tries them (its own doorbell is
    /// silent on its own thread).
    pub(super) budget_kick: bool,
    pub(super) stopping: Option<(u64, SyncSender<()>)>,
    pub(super) finished: bool,
    pub(super) next_sweep_ns: u64,
    /// This task's section of its core's metrics (the connections), which
    /// the connection code counts into; see `metrics.rs`.
    pub(super) metrics: ConnMetrics,
    /// Per-stage latency of the requests of this core's connections.
    pub(super) stages: CoreStages,
    /// Requests and error replies by protocol, api and code (`metrics.rs`).
    pub(super) requests: RequestCounts,
    /// The api of the frame being dispatched, once it decoded.
    pub(super) decoded_api: Option<Api>,
    /// The connections' subscriptions (`stream.rs`).
    pub(super) streams: Streams<C::Ctx>,
    /// Authentication refusals logged (`auth.rs`).
    pub(super) refusal_log: super::auth::LogLimit,
}

/// What a core's server task is handed at start.
pub(crate) struct TaskParts {
    pub inbox: Receiver<Done>,
    pub control: Receiver<Control>,
    /// Each with the index of its protocol among the task's codecs.
    pub listeners: Vec<(ListenSock, u8)>,
    pub broker: Dispatcher,
    pub budget: Arc<ReplyBudget>,
}

impl<C: Codec> NetCore<C> {
    pub(crate) fn new(core_id: usize, codecs: Vec<C>, shared: Arc<Shared>, parts: TaskParts) -> Self {
        assert!(!codecs.is_empty() && codecs.len() <= usize::from(u8::MAX), "a server task speaks 1 to 255 protocols");
        NetCore {
            core_id,
            codecs,
            shared,
            inbox: parts.inbox,
            control: parts.control,
            broker: parts.broker,
            unadopted: parts.listeners,
            listeners: Vec::new(),
            conns: Slab::new(),
            next_generation: 0,
            dirty: Vec::new(),
            stalled: Vec::new(),
            pool: RecvPool::default(),
            held_bytes: 0,
            rbuf_bytes: 0,
            recv_inflight_bytes: 0,
            budget: parts.budget,
            budget_kick: false,
            stopping: None,
            finished: false,
            next_sweep_ns: 0,
            metrics: ConnMetrics::default(),
            stages: CoreStages::default(),
            requests: RequestCounts::default(),
            decoded_api: None,
            streams: Streams::default(),
            refusal_log: Default::default(),
        }
    }

    /// The protocol the connection in `slot` speaks.
    pub(super) fn codec_of(&self, slot: usize) -> &C {
        &self.codecs[usize::from(self.conns[slot].codec)]
    }

    fn on_completion<I: Io>(&mut self, core: &mut TaskCore<'_, I>, c: Completion, now_ns: u64) {
        let Token { kind, owner: generation, slot } = Token::unpack(c.token);
        let slot = slot as usize;
        if kind == OpKind::Accept {
            return self.on_accept(core, slot, c.result, c.more, now_ns);
        }
        let Some(conn) = self.conns.get(slot) else {
            debug_assert!(false, "network completion for a free slot");
            return;
        };
        if conn.generation != generation {
            debug_assert!(false, "network completion for a reused slot");
            return;
        }
        match kind {
            OpKind::Poll => self.on_poll(core, slot, c.result),
            OpKind::Recv => self.on_recv(core, slot, c.result, c.net_buf.expect("recv returns its buffer"), now_ns),
            OpKind::Send => self.on_send(core, slot, c.result, ReplyBuf::Heap(c.net_buf.expect("send returns its buffer")), now_ns),
            OpKind::SendFixed => {
                self.on_send(core, slot, c.result, ReplyBuf::Registered(c.buf.expect("a fixed send returns its buffer")), now_ns)
            }
            _ => unreachable!("{kind:?} is not a network op"),
        }
    }

    /// Moves one connection on: parse what waits, send, close, or read.
    fn drive<I: Io>(&mut self, core: &mut TaskCore<'_, I>, slot: usize, now_ns: u64) {
        let blocked = self.blocked(core);
        if !blocked && !self.conns[slot].rbuf.is_empty() && self.may_parse(core, slot) {
            self.parse(core, slot, now_ns);
        }
        if self.conns[slot].state == State::Closed {
            return self.free_if_done(slot);
        }
        self.send_next(core, slot);
        self.advance_waiting(core, slot);
        let c = &self.conns[slot];
        if (c.state == State::Closing && c.drained()) || (c.peer_closed && c.inflight == 0 && c.drained()) {
            return self.close_and_free(core, slot);
        }
        self.read_next(core, slot, blocked);
    }

    /// Drives the connections marked this tick. Driving may dispatch
    /// requests whose replies come back at once (errors, metadata): go
    /// round until nothing changes.
    fn drive_dirty<I: Io>(&mut self, core: &mut TaskCore<'_, I>, now_ns: u64) {
        for _ in 0..4 {
            if self.dirty.is_empty() {
                break;
            }
            for slot in std::mem::take(&mut self.dirty) {
                if let Some(c) = self.conns.get_mut(slot) {
                    c.dirty = false;
                    self.drive(core, slot, now_ns);
                }
            }
            self.deliver_replies(core);
        }
    }

    /// Decodes one whole frame and hands its command to the broker, with a
    /// replier that brings the answer back to this connection.
    pub(super) fn dispatch<I: Io>(&mut self, core: &mut TaskCore<'_, I>, slot: usize, frame: &[u8]) {
        self.metrics.requests += 1;
        // A clone (a protocol's codec is small): the command it decodes is
        // run while `self` is borrowed mutably.
        let codec = self.codec_of(slot).clone();
        let mut state = self.conns[slot].codec_state;
        let decoded = codec.decode(frame, &mut state, &mut |ctx, cmd| self.run_decoded(core, slot, frame.len(), ctx, cmd));
        if let Some(c) = self.conns.get_mut(slot) {
            c.codec_state = state;
        }
        // Counted once per frame, as `metrics.requests` is (a refused frame as undecodable).
        let protocol = self.conns.get(slot).map_or(0, |c| c.codec);
        let api = self.decoded_api.take().unwrap_or(API_UNDECODABLE);
        self.requests.request(protocol, api);
        self.requests.bytes(protocol, api, false, frame.len());
        if let Err(refusal) = decoded {
            self.metrics.frame_errors += 1;
            match refusal.close {
                Some(why) => {
                    self.requests.error(protocol, API_UNDECODABLE, CODE_UNDECODABLE);
                    let peer = self.conns[slot].peer;
                    tracing::info!(core = self.core_id, slot, %peer, kind = ?why.kind, "closing a connection: {}", why.message);
                    self.fail_conn_with(slot, refusal.reply);
                }
                None => {
                    tracing::debug!(core = self.core_id, slot, peer = %self.conns[slot].peer, "refused an undecodable frame");
                    self.ticket(slot, frame.len(), 0, API_UNDECODABLE).send(ReplyBuf::Heap(refusal.reply), None, 0, CODE_UNDECODABLE as u16)
                }
            }
        }
    }

    /// Charges the connection in `slot` for a request of `frame_bytes`
    /// whose reply may take `reserved_bytes`, and returns its ticket.
    pub(super) fn ticket(&mut self, slot: usize, frame_bytes: usize, reserved_bytes: usize, api: Api) -> Ticket {
        let c = &mut self.conns[slot];
        let held_bytes = frame_bytes + reserved_bytes;
        let ticket = Ticket {
            route: self.shared.reply_route(self.core_id),
            conn: ConnKey { slot: slot as u32, generation: c.generation },
            held_bytes,
            reserved_bytes,
            received_ns: c.recv_done_ns,
            seq: c.next_seq,
            protocol: c.codec,
            api,
        };
        c.next_seq += 1;
        c.inflight += 1;
        c.request_bytes += held_bytes;
        self.held_bytes += frame_bytes;
        ticket
    }

    /// Runs the command a frame of `frame_bytes` decoded into.
    fn run_decoded<I: Io>(&mut self, core: &mut TaskCore<'_, I>, slot: usize, frame_bytes: usize, ctx: C::Ctx, mut cmd: Command<'_>) {
        let api = api_of(&cmd);
        self.decoded_api = Some(api);
        if let Command::Authenticate { credentials } = cmd {
            return self.authenticate(slot, frame_bytes, ctx, credentials);
        }
        let Some((user, ctx)) = self.gate(slot, frame_bytes, ctx, &cmd) else { return };
        // Streaming requests are served by the connection code itself
        // (`stream.rs`); a Subscribe's permission is checked here, the
        // broker's commands' by the broker (`CoreHost::authorize`).
        if matches!(cmd, Command::Subscribe { .. } | Command::Grant { .. } | Command::Cancel { .. }) {
            if let Some(e) = user.as_ref().and_then(|u| crate::auth::check(u, &cmd).err()) {
                let e = e.into();
                self.broker.denied(&e);
                let ticket = self.ticket(slot, frame_bytes, 0, api);
                return Replier { codec: self.codec_of(slot).clone(), ctx, ticket }.answer(Err(e));
            }
            return self.stream_command(core, slot, ctx, cmd);
        }
        let reserved_bytes = self.bound(slot, &mut cmd);
        let ticket = self.ticket(slot, frame_bytes, reserved_bytes, api);
        let replier = Replier { codec: self.codec_of(slot).clone(), ctx, ticket };
        if self.stopping.is_some() {
            // Read and refused with a typed, retriable error: better for a
            // pipelining client than a reset over unread bytes.
            return replier.answer(Err(StromError::ShuttingDown.into()));
        }
        // A Fetch's sink learns when its connection goes; a range query
        // that may wait, when it goes or a Cancel names it.
        let asker_gone = if matches!(cmd, crate::broker::Command::Query { .. }) {
            Some(self.query_flag(slot, self.codec_of(slot).request_id(&replier.ctx)))
        } else {
            (reserved_bytes > 0).then(|| self.conns[slot].gone.get_or_insert_with(Default::default).clone())
        };
        let mut host =
            CoreHost { core, shared: &self.shared, core_id: self.core_id, stages: &mut self.stages, own_metrics: None, asker_gone, user };
        self.broker.execute(&mut host, cmd, move |reply| replier.answer(reply));
        // This core's registry goes in once the broker is done with the
        // command, since it holds the broker's own section.
        if let Some(share) = host.own_metrics.take() {
            share.add(self.core_id, self.metrics_now(core));
        }
    }

    /// Executes a streaming request's read (`stream.rs`) for the
    /// connection in `slot`, which learns when the connection closes.
    pub(super) fn execute_stream<I: Io>(
        &mut self,
        core: &mut TaskCore<'_, I>,
        slot: usize,
        cmd: Command<'_>,
        respond: impl crate::broker::Respond,
    ) {
        let asker_gone = Some(self.conns[slot].gone.get_or_insert_with(Default::default).clone());
        // Its Subscribe was checked when it came.
        let mut host = CoreHost {
            core,
            shared: &self.shared,
            core_id: self.core_id,
            stages: &mut self.stages,
            own_metrics: None,
            asker_gone,
            user: None,
        };
        self.broker.execute(&mut host, cmd, respond);
    }

    /// Holds a command to this server's limits, and returns the bytes its
    /// reply may take that the connection is charged for now. A Fetch is
    /// charged, up front, for the largest reply it may get: what one
    /// connection (a reader that never reads among them) can make the
    /// server hold is then bounded before the replies exist. The core
    /// counts only bytes that exist, so parked long polls do not stop it
    /// reading producers.
    fn bound(&self, slot: usize, cmd: &mut Command<'_>) -> usize {
        match cmd {
            Command::Fetch { .. } => self.bound_fetch(cmd, self.codec_of(slot).fetch_headroom()),
            // A Many's Fetches are built without headroom: their codec
            // writes one reply around all of them, whose own bytes come
            // from its request (names, numbers) and are not counted here.
            Command::Many { commands, .. } => commands.iter_mut().map(|c| self.bound_fetch(c, 0)).sum(),
            _ => 0,
        }
    }

    fn bound_fetch(&self, cmd: &mut Command<'_>, headroom: usize) -> usize {
        let Command::Fetch { max_bytes, max_wait, .. } = cmd else { return 0 };
        // At least 1, and small enough that the reply (header and fields
        // included) fits a frame. A reply holds at most this, or one batch
        // if the first batch alone is larger.
        *max_bytes = (*max_bytes).clamp(1, self.shared.cfg.frame_bytes_max - headroom);
        *max_wait = (*max_wait).min(self.shared.cfg.fetch_wait_max);
        (*max_bytes).max(self.shared.broker.batch_bytes_max()) + headroom
    }
}

/// The broker's view of the core a server task runs on.
struct CoreHost<'a, 'b, I: Io> {
    core: &'a mut TaskCore<'b, I>,
    shared: &'a Shared,
    core_id: usize,
    stages: &'a mut CoreStages,
    /// This core's part in a metrics report asked for by the command.
    own_metrics: Option<MetricsShare>,
    /// Set when the connection that sent the command closes.
    asker_gone: Option<Arc<AtomicBool>>,
    /// Who sent it, when authentication is on.
    user: Option<Arc<crate::auth::User>>,
}

impl<I: Io> Host for CoreHost<'_, '_, I> {
    fn handle(&mut self, req: Request) {
        self.core.handle(req)
    }

    fn gather_stages(&mut self, reset: bool, per_core: bool, done: Box<dyn FnOnce(StageReport) + Send>) {
        // Every core adds its histograms when it next ticks; this core's go
        // in now. The last to add sends the reply.
        let done = move |(h, cores): (StageHistograms, Vec<Vec<StageLatency>>)| done(StageReport { total: h.summary(), cores });
        if let Some(own) = self.shared.gather_stages(reset, per_core, Some(self.core_id), done) {
            own.add(self.core_id, self.stages, reset);
        }
    }

    fn gather_metrics(&mut self, done: Box<dyn FnOnce(Vec<Option<Metrics>>) + Send>) {
        // Every other core adds its registry when it next ticks; this
        // core's is added by `dispatch`, after the command.
        self.own_metrics = self.shared.gather_metrics(Some(self.core_id), done);
    }

    fn frame_bytes_max(&self) -> usize {
        self.shared.cfg.frame_bytes_max
    }

    fn asker_gone(&mut self) -> Option<Arc<AtomicBool>> {
        self.asker_gone.take()
    }

    fn authorize(&self, cmd: &Command<'_>) -> Result<(), crate::broker::BrokerError> {
        match &self.user {
            Some(u) => crate::auth::check(u, cmd).map_err(Into::into),
            None => Ok(()),
        }
    }

    fn sees(&self, topic: &str) -> bool {
        self.user.as_ref().is_none_or(|u| u.sees(topic))
    }
}

impl<I: Io, C: Codec> CoreTask<I> for NetCore<C> {
    fn on_reaped(&mut self, core: &mut TaskCore<'_, I>) {
        let now_ns = core.now_ns();
        for c in core.take_net_completions() {
            self.on_completion(core, c, now_ns);
        }
    }

    fn plan(&mut self, core: &mut TaskCore<'_, I>) {
        let now_ns = core.now_ns();
        // The core's plan, just run, tried its waiting reads.
        self.budget_kick = false;
        self.adopt_listeners(core);
        self.on_control(core, now_ns);
        self.deliver_replies(core);
        self.broker.flush();
        if !self.blocked(core) {
            for slot in std::mem::take(&mut self.stalled) {
                if let Some(c) = self.conns.get_mut(slot) {
                    c.stalled = false;
                }
                self.mark(slot);
            }
        }
        if now_ns >= self.next_sweep_ns {
            self.next_sweep_ns = now_ns + SWEEP_NS;
            self.sweep(core, now_ns);
        }
        self.drive_dirty(core, now_ns);
        self.arm_accepts(core, now_ns);
        self.finish_stop(core, now_ns);
    }

    fn wait_hint(&self, now_ns: u64) -> (bool, Option<u64>) {
        let mut timer = self.next_sweep_ns.saturating_sub(now_ns);
        if let Some(retry_ns) = self.broker.retry_in_ns() {
            timer = timer.min(retry_ns);
        }
        for l in &self.listeners {
            if !l.accepting && !l.closed {
                timer = timer.min(l.paused_until_ns.saturating_sub(now_ns).max(1));
            }
        }
        if let Some((deadline, _)) = &self.stopping {
            timer = timer.min(deadline.saturating_sub(now_ns).max(1));
        }
        (!self.dirty.is_empty() || self.budget_kick, Some(timer))
    }

    fn finished(&self) -> bool {
        self.finished
    }
}
