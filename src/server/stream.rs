//! Streaming requests of a core's connections: subscriptions, by request
//! id per connection (a Cancel names any of them; the range Query will
//! join the same table).
//!
//! A subscription is served over the broker's own reads, so it takes their
//! routes and bounds: its start is resolved by a ListOffsets, then it runs
//! one Fetch at a time from where the last ended, on the partition's core
//! (forwarded there if that is another core, its answers coming back
//! through this core's inbox like any reply). The first Fetch answers at
//! once, maybe empty: that push tells the client where it starts. The
//! next ones wait at the partition's end as long polls, which the
//! partition's core wakes when it retires new data (`core/acks.rs`), so a
//! push leaves as soon as its batches are servable under the fsync policy;
//! nothing polls. A long poll that lapses (`fetch_wait_max`) is renewed
//! without a push.
//!
//! Credit: a Fetch is started only while the subscription's credit is
//! above 0, for at most that many bytes of batches; a Fetch returns at
//! least one whole batch, so the credit can fall below 0 by less than one
//! batch, and never does while it is at least `batch_bytes_max` when the
//! Fetch starts. A subscription with no credit has no Fetch anywhere: it
//! costs its entry here. Pushes are Fetch answers: built under the reply
//! budget, held in the send queue like replies, and no Fetch starts while
//! the connection's unsent bytes are at `conn_buffered_bytes_max`.
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use super::codec::Codec;
use super::conn::State;
use super::reply::{ConnKey, Done};
use super::send::release_frame;
use super::task::NetCore;
use crate::broker::{Answer, BrokerError, Command, OffsetQuery, ReplyBuf, StreamStart};
use crate::core::task::TaskCore;
use crate::error::StromError;
use crate::io::Io;
use crate::read::PARKED_READS_MAX;

/// Streaming requests one connection may have open.
pub(super) const STREAMS_PER_CONN_MAX: usize = 1024;
/// Streaming requests one core's connections may have open, counting those
/// ended whose last read is still out: each may hold a parked long poll.
pub(super) const STREAMS_PER_CORE_MAX: usize = 16384;
/// Empty answers in a row that did not wait (parking refused: the core is
/// at its parked-read limit) before a subscription ends with Overloaded
/// rather than asking again at once, forever.
const UNPARKED_EMPTY_MAX: u32 = 8;

const _: () = assert!(STREAMS_PER_CORE_MAX <= PARKED_READS_MAX / 2, "plain long polls must keep room to park");
const _: () = assert!(STREAMS_PER_CONN_MAX <= STREAMS_PER_CORE_MAX);
// The Overloaded message names them.
const _: () = assert!(STREAMS_PER_CONN_MAX == 1024 && STREAMS_PER_CORE_MAX == 16384);

/// One subscription.
pub(super) struct Stream<X> {
    /// The Subscribe's codec context: every push repeats it.
    ctx: X,
    /// Tells this subscription's answers from those of an earlier one with
    /// the same request id on the same slot.
    serial: u64,
    topic: String,
    partition: u32,
    /// How to find the start, until it is known.
    start: Option<OffsetQuery>,
    /// Where the next push starts.
    offset: u64,
    /// Bytes of batches it may still be sent; below 0 after a batch larger
    /// than what was left.
    credit_bytes: i64,
    /// A read of it is out (at most one at a time).
    busy: bool,
    /// Its first push, sent even when empty, is yet to come.
    first: bool,
    /// Empty answers in a row that never waited.
    unparked_empty: u32,
}

/// The streaming requests of one connection.
pub(super) struct ConnStreams<X> {
    by_id: HashMap<u64, Stream<X>>,
    /// Some wait for the connection's unsent bytes to go.
    room_wait: bool,
}

impl<X> Default for ConnStreams<X> {
    fn default() -> Self {
        ConnStreams { by_id: HashMap::new(), room_wait: false }
    }
}

/// A connection's range queries that may be waiting: their cancel flags,
/// by request id, pruned of answered ones (the core dropped its clone) once
/// there are this many.
const QUERY_FLAGS_PRUNE_AT: usize = 64;

/// The streaming requests of one core's connections.
pub(super) struct Streams<X> {
    by_conn: HashMap<usize, ConnStreams<X>>,
    /// Per connection, the cancel flags of its range queries (api 14),
    /// which a Cancel of their request id, or the connection's close, sets.
    queries: HashMap<usize, HashMap<u64, Arc<AtomicBool>>>,
    /// Open ones plus ended ones whose read is still out (`STREAMS_PER_CORE_MAX`).
    slots: usize,
    next_serial: u64,
}

impl<X> Default for Streams<X> {
    fn default() -> Self {
        Streams { by_conn: HashMap::new(), queries: HashMap::new(), slots: 0, next_serial: 0 }
    }
}

impl<X> Streams<X> {
    /// Streaming requests of this core's connections, including ended ones
    /// whose last read is out.
    pub fn slots(&self) -> usize {
        self.slots
    }

    /// Whether the connection in `slot` has a streaming request open.
    pub fn has(&self, slot: usize) -> bool {
        self.by_conn.contains_key(&slot)
    }
}

/// What a stream's read brings back with its frame.
#[derive(Debug, Clone, Copy)]
pub(crate) struct StreamNote {
    pub request_id: u64,
    pub serial: u64,
    pub event: StreamEvent,
}

#[derive(Debug, Clone, Copy)]
pub(crate) enum StreamEvent {
    /// The start was found (None: a time past every record).
    Resolved(Option<u64>),
    /// A Fetch answered: the frame is a push.
    Pushed { next_offset: u64, batch_bytes: usize, waited: bool },
    /// The read failed: the frame is the error that ends the stream.
    Ended,
}

impl<C: Codec> NetCore<C> {
    /// Serves a streaming command (Subscribe, Grant, Cancel) of a
    /// connection. Their replies are queued here, at once: they hold no
    /// request bytes and no in-flight slot, so a connection whose
    /// subscriptions wait can always be read for its Grants and Cancels.
    pub(super) fn stream_command<I: Io>(&mut self, core: &mut TaskCore<'_, I>, slot: usize, ctx: C::Ctx, cmd: Command<'_>) {
        match cmd {
            Command::Subscribe { topic, partition, credit_bytes, start } => {
                if let Err(e) = self.subscribe(slot, &ctx, topic, partition, credit_bytes, start) {
                    let frame = self.codec_of(slot).encode(ctx, Err(e));
                    return self.queue_frame(slot, frame, 0);
                }
                self.advance(core, slot, self.codec_of(slot).request_id(&ctx));
            }
            Command::Grant { subscription, bytes } => {
                // A Grant is never answered: one for a subscription that
                // just ended (the client learns that from its last push) is
                // dropped.
                let Some(s) = self.streams.by_conn.get_mut(&slot).and_then(|c| c.by_id.get_mut(&subscription)) else { return };
                s.credit_bytes = s.credit_bytes.saturating_add(i64::try_from(bytes).unwrap_or(i64::MAX));
                self.advance(core, slot, subscription);
            }
            Command::Cancel { request } => {
                // A range query waiting for its end: the core answers it
                // Cancelled at its next sweep (within 100 ms).
                let query = self.streams.queries.get_mut(&slot).and_then(|q| q.remove(&request));
                if let Some(flag) = query.filter(|f| Arc::strong_count(f) > 1) {
                    flag.store(true, Ordering::Relaxed);
                    let frame = self.codec_of(slot).encode(ctx, Ok(Answer::Cancelled));
                    return self.queue_frame(slot, frame, 0);
                }
                let Some(s) = self.remove_stream(slot, request) else {
                    let e = StromError::InvalidArgument(format!("no streaming request {request} is open on this connection"));
                    let frame = self.codec_of(slot).encode(ctx, Err(e.into()));
                    return self.queue_frame(slot, frame, 0);
                };
                let end = self.codec_of(slot).encode_push(&s.ctx, s.offset, Err(BrokerError::Cancelled));
                self.queue_frame(slot, end, 0);
                let frame = self.codec_of(slot).encode(ctx, Ok(Answer::Cancelled));
                self.queue_frame(slot, frame, 0);
            }
            _ => unreachable!("not a streaming command"),
        }
    }

    /// Opens a subscription, or says why not.
    fn subscribe(
        &mut self,
        slot: usize,
        ctx: &C::Ctx,
        topic: &str,
        partition: u32,
        credit_bytes: u64,
        start: StreamStart<'_>,
    ) -> Result<(), BrokerError> {
        let request_id = self.codec_of(slot).request_id(ctx);
        if self.stopping.is_some() {
            return Err(StromError::ShuttingDown.into());
        }
        // The first push is read at once: with no credit it could only overrun it.
        if credit_bytes == 0 {
            return Err(StromError::InvalidArgument("a subscription's first credit must be at least 1 byte".into()).into());
        }
        let (start, offset) = match start {
            StreamStart::Earliest => (Some(OffsetQuery::Earliest), 0),
            StreamStart::Latest => (Some(OffsetQuery::Latest), 0),
            StreamStart::Time(ms) => (Some(OffsetQuery::AtTime(ms)), 0),
            StreamStart::Offset(o) => (None, o),
            // The first record at or above the value; none yet: the end, as for a time.
            StreamStart::Index { name, value } => {
                (Some(OffsetQuery::AtIndex(crate::read::IndexSeek { name: name.to_string(), value, strict: false })), 0)
            }
        };
        let conn = self.streams.by_conn.entry(slot).or_default();
        if conn.by_id.contains_key(&request_id) {
            return Err(StromError::InvalidArgument(format!("request id {request_id} is an open stream of this connection")).into());
        }
        if conn.by_id.len() >= STREAMS_PER_CONN_MAX || self.streams.slots >= STREAMS_PER_CORE_MAX {
            return Err(StromError::Overloaded("subscriptions are at their limit (1024 per connection, 16384 per core)").into());
        }
        self.streams.slots += 1;
        self.streams.next_serial += 1;
        let credit_bytes = i64::try_from(credit_bytes).unwrap_or(i64::MAX);
        let stream = Stream {
            ctx: ctx.clone(),
            serial: self.streams.next_serial,
            topic: topic.to_string(),
            partition,
            start,
            offset,
            credit_bytes,
            busy: false,
            first: true,
            unparked_empty: 0,
        };
        conn.by_id.insert(request_id, stream);
        Ok(())
    }

    /// Takes a stream out of its connection's table; one whose read is
    /// still out keeps its core slot until that read comes back.
    fn remove_stream(&mut self, slot: usize, request_id: u64) -> Option<Stream<C::Ctx>> {
        let conn = self.streams.by_conn.get_mut(&slot)?;
        let s = conn.by_id.remove(&request_id)?;
        if conn.by_id.is_empty() {
            self.streams.by_conn.remove(&slot);
        }
        if !s.busy {
            self.streams.slots -= 1;
        }
        Some(s)
    }

    /// The cancel flag of a range query this connection sent as `request_id`,
    /// registered so that a Cancel of that id (or the close) can set it.
    pub(super) fn query_flag(&mut self, slot: usize, request_id: u64) -> Arc<AtomicBool> {
        let flags = self.streams.queries.entry(slot).or_default();
        if flags.len() >= QUERY_FLAGS_PRUNE_AT {
            flags.retain(|_, f| Arc::strong_count(f) > 1);
        }
        let flag = Arc::new(AtomicBool::new(false));
        flags.insert(request_id, flag.clone());
        flag
    }

    /// A closing connection's streams end with it (nobody is left to tell).
    pub(super) fn drop_streams(&mut self, slot: usize) {
        for flag in self.streams.queries.remove(&slot).into_iter().flat_map(|q| q.into_values()) {
            flag.store(true, Ordering::Relaxed);
        }
        if let Some(conn) = self.streams.by_conn.remove(&slot) {
            self.streams.slots -= conn.by_id.values().filter(|s| !s.busy).count();
        }
    }

    /// Moves on the streams of a connection that waited for its unsent
    /// bytes to go (called as its sends complete).
    pub(super) fn advance_waiting<I: Io>(&mut self, core: &mut TaskCore<'_, I>, slot: usize) {
        let Some(conn) = self.streams.by_conn.get_mut(&slot).filter(|c| c.room_wait) else { return };
        conn.room_wait = false;
        let ids: Vec<u64> = conn.by_id.keys().copied().collect();
        for id in ids {
            self.advance(core, slot, id);
        }
    }

    /// Starts a stream's next read, if it may have one now.
    fn advance<I: Io>(&mut self, core: &mut TaskCore<'_, I>, slot: usize, request_id: u64) {
        let cfg = &self.shared.cfg;
        let Some(c) = self.conns.get(slot).filter(|c| c.state == State::Open) else { return };
        let has_room = c.reply_bytes + c.request_bytes < cfg.conn_buffered_bytes_max;
        let (frame_max, wait_max, headroom) = (cfg.frame_bytes_max, cfg.fetch_wait_max, self.codec_of(slot).fetch_headroom());
        let stopping = self.stopping.is_some();
        let Some(conn) = self.streams.by_conn.get_mut(&slot) else { return };
        let Some(s) = conn.by_id.get_mut(&request_id) else { return };
        if s.busy {
            return;
        }
        if stopping {
            return self.end_stream(slot, request_id, Err(StromError::ShuttingDown.into()));
        }
        let cmd_wait = if s.first { std::time::Duration::ZERO } else { wait_max };
        let max_bytes = usize::try_from(s.credit_bytes.max(1)).unwrap_or(usize::MAX).min(frame_max - headroom);
        let (from, serial, ctx) = (s.offset, s.serial, s.ctx.clone());
        let topic = s.topic.clone();
        let partition = s.partition;
        let cmd = match s.start.clone() {
            Some(query) => Command::ListOffsets { topic: &topic, partition, query },
            None if s.first || (s.credit_bytes > 0 && has_room) => {
                Command::Fetch { topic: &topic, partition, offset: from, max_bytes, max_wait: cmd_wait }
            }
            None => {
                conn.room_wait |= s.credit_bytes > 0;
                return;
            }
        };
        s.busy = true;
        let note = StreamNote { request_id, serial, event: StreamEvent::Ended };
        let conn_key = ConnKey { slot: slot as u32, generation: self.conns[slot].generation };
        let (codec, route) = (self.codec_of(slot).clone(), self.shared.reply_route(self.core_id));
        let respond = move |reply: Result<Answer, BrokerError>| {
            let (event, budget_bytes) = match &reply {
                Ok(Answer::Offset(o)) => (StreamEvent::Resolved(*o), 0),
                Ok(Answer::OffsetAtTime(found)) => (StreamEvent::Resolved(found.map(|(offset, _)| offset)), 0),
                Ok(Answer::Fetched(f)) => {
                    let batch_bytes = f.bytes.len().saturating_sub(f.headroom);
                    (StreamEvent::Pushed { next_offset: f.next_offset, batch_bytes, waited: f.parked_ns > 0 }, f.budget_bytes)
                }
                _ => (StreamEvent::Ended, 0),
            };
            let frame = match event {
                StreamEvent::Resolved(_) => ReplyBuf::Heap(Vec::new()),
                _ => codec.encode_push(&ctx, from, reply),
            };
            let done = Done {
                conn: conn_key,
                frame,
                held_bytes: 0,
                reserved_bytes: 0,
                budget_bytes,
                trace: None,
                stream: Some(StreamNote { event, ..note }),
                // Not a request in flight: it has no turn.
                seq: 0,
                outcome: None,
            };
            if route.inbox.send(done).is_ok() {
                route.core.ring();
            }
        };
        self.execute_stream(core, slot, cmd, respond);
    }

    /// A stream's read came back (delivered from the inbox).
    pub(super) fn on_stream_done<I: Io>(&mut self, core: &mut TaskCore<'_, I>, done: Done, note: StreamNote) {
        let slot = done.conn.slot as usize;
        let live = self.conns.get(slot).is_some_and(|c| c.generation == done.conn.generation && c.state != State::Closed);
        let stream = match self.streams.by_conn.get_mut(&slot).and_then(|c| c.by_id.get_mut(&note.request_id)) {
            Some(s) if live && s.serial == note.serial => s,
            _ => {
                // Its stream ended (cancelled, or its connection closed)
                // while the read was out: the slot it kept is free now.
                self.streams.slots -= 1;
                self.release_budget(done.budget_bytes);
                return release_frame(core, done.frame);
            }
        };
        stream.busy = false;
        match note.event {
            StreamEvent::Resolved(Some(offset)) => {
                stream.start = None;
                stream.offset = offset;
            }
            // A time past every record: start at the end.
            StreamEvent::Resolved(None) => stream.start = Some(OffsetQuery::Latest),
            StreamEvent::Pushed { next_offset, batch_bytes, waited } => {
                stream.offset = next_offset;
                stream.credit_bytes = stream.credit_bytes.saturating_sub(batch_bytes as i64);
                stream.unparked_empty = if batch_bytes == 0 && !waited && !stream.first { stream.unparked_empty + 1 } else { 0 };
                let send = std::mem::take(&mut stream.first) || batch_bytes > 0;
                if stream.unparked_empty >= UNPARKED_EMPTY_MAX {
                    self.release_budget(done.budget_bytes);
                    release_frame(core, done.frame);
                    let e = StromError::Overloaded("the core is at its limit of parked reads");
                    return self.end_stream(slot, note.request_id, Err(e.into()));
                }
                if send {
                    self.queue_frame(slot, done.frame, done.budget_bytes);
                } else {
                    self.release_budget(done.budget_bytes);
                    release_frame(core, done.frame);
                }
            }
            StreamEvent::Ended => {
                self.remove_stream(slot, note.request_id);
                return self.queue_frame(slot, done.frame, done.budget_bytes);
            }
        }
        self.advance(core, slot, note.request_id);
    }

    /// Ends a stream that has no read out with `why`, its last push.
    fn end_stream(&mut self, slot: usize, request_id: u64, why: Result<Answer, BrokerError>) {
        if let Some(s) = self.remove_stream(slot, request_id) {
            let frame = self.codec_of(slot).encode_push(&s.ctx, s.offset, why);
            self.queue_frame(slot, frame, 0);
        }
    }

    /// Queues a frame made on this core (or a push) on its connection, as
    /// a delivered reply is; `budget_bytes` of reply budget come with it.
    fn queue_frame(&mut self, slot: usize, frame: ReplyBuf, budget_bytes: usize) {
        if budget_bytes > 0 {
            self.hold_reply_budget(slot, budget_bytes, frame.len());
        }
        let c = &mut self.conns[slot];
        c.reply_bytes += frame.len();
        c.queued_pos += frame.len() as u64;
        self.held_bytes += frame.len();
        c.sendq.push_back(frame);
        self.mark(slot);
    }
}
