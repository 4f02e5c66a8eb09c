//! Commands to core requests: the one place a [`Request`] is made for a
//! client, whichever way it came (a codec through the [`Dispatcher`] or the
//! embedded API through the [`Broker`]).
//!
//! [`Dispatcher`]: super::Dispatcher
//! [`Broker`]: super::Broker
use super::command::{BrokerError, Fetched, OffsetQuery, ReplyBuf};
use super::produce::ProduceAcc;
use crate::core::{AppendAck, PartitionStat, Reply, Request, ValidBatch};
use crate::error::Result;
use crate::metrics::Metrics;
use crate::partition::{Pid, Retention};
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use crate::read::{Fetch, OnceSink, ReadResult, RegisteredBatches, ReplyBudget};

/// One batch appended to partition `pid`.
pub(crate) fn append(pid: Pid, batch: ValidBatch, reply: Reply<AppendAck>) -> Request {
    Request::Append { pid, batch, reply }
}

/// A produce of one or more batches to `pid`. Several are taken as one
/// group, so that no other append lands between them, and answered once,
/// when every one is: their first base offset, their last offset.
pub(crate) fn produce(
    pid: Pid,
    mut batches: Vec<ValidBatch>,
    reply: impl FnOnce(std::result::Result<AppendAck, BrokerError>) + Send + 'static,
) -> Request {
    if batches.len() == 1 {
        let batch = batches.pop().expect("one batch");
        return append(pid, batch, Box::new(move |res| reply(res.map_err(BrokerError::Failed))));
    }
    let acc = ProduceAcc::shared(batches.len(), reply);
    let group = batches
        .into_iter()
        .map(|batch| {
            let acc = acc.clone();
            append(pid, batch, Box::new(move |res| acc.lock().expect("produce accumulator").add(res)))
        })
        .collect();
    Request::Group(group)
}

/// How a read's answer is laid out: after `headroom` reserved bytes (a
/// codec writes its reply header there, so the batches are never copied
/// again), and in one of the core's registered reply buffers when
/// `registered` and one is free (only the core that owns them may send
/// from them); built under the asker's core's reply `budget`, if any, for
/// an asker that sets `gone` when it goes away.
#[derive(Clone)]
pub(crate) struct Layout {
    pub headroom: usize,
    pub registered: bool,
    pub budget: Option<Arc<ReplyBudget>>,
    pub gone: Option<Arc<AtomicBool>>,
    /// Set by the asker when a parked read should answer now
    /// ([`crate::read::ReadSink::release_flag`]).
    pub released: Option<Arc<AtomicBool>>,
}

impl Layout {
    /// A heap buffer holding the batches alone (the embedded API).
    pub(crate) const PLAIN: Layout = Layout { headroom: 0, registered: false, budget: None, gone: None, released: None };
}

/// Whole batches of `pid` from `offset`, up to about `max_bytes`; at the
/// partition's end, parked up to `max_wait_ns` for new ones (0: answer now).
pub(crate) fn fetch(pid: Pid, fetch: Fetch, layout: Layout, reply: Reply<ReadResult>) -> Request {
    Request::Read {
        pid,
        fetch,
        sink: Box::new(
            OnceSink::new(layout.headroom, layout.registered, reply).budgeted(layout.budget, layout.gone).releasable(layout.released),
        ),
    }
}

/// A read's result as the broker answers it: the buffer the core filled
/// (registered or heap), its headroom untouched.
pub(crate) fn fetched(mut rr: ReadResult) -> Fetched {
    let bytes = match rr.registered.take() {
        Some(RegisteredBatches(buf)) => ReplyBuf::Registered(buf),
        None => ReplyBuf::Heap(std::mem::take(&mut rr.batches)),
    };
    debug_assert!(bytes.len() >= rr.headroom_bytes, "a read result shorter than its headroom");
    Fetched {
        bytes,
        headroom: rr.headroom_bytes,
        high_watermark: rr.high_watermark,
        start_offset: rr.start_offset,
        next_offset: rr.next_offset,
        parked_ns: rr.parked_ns,
        budget_bytes: rr.budget_bytes,
    }
}

/// The offset a ListOffsets asks for.
pub(crate) fn offset(pid: Pid, query: OffsetQuery, reply: impl FnOnce(Result<Option<u64>>) + Send + 'static) -> Request {
    match query {
        OffsetQuery::Earliest => stat(pid, Box::new(move |res| reply(res.map(|s| Some(s.start_offset))))),
        OffsetQuery::Latest => stat(pid, Box::new(move |res| reply(res.map(|s| Some(s.end_offset))))),
        OffsetQuery::AtTime(ts_ms) => offset_at_time(pid, ts_ms, move |res| reply(res.map(|found| found.map(|(offset, _)| offset)))),
        OffsetQuery::AtIndex(seek) => Request::OffsetForIndex { pid, seek, reply: Box::new(reply) },
    }
}

/// The first offset whose record is stamped `ts_ms` or later, and that
/// record's timestamp.
pub(crate) fn offset_at_time(pid: Pid, ts_ms: i64, reply: impl FnOnce(Result<Option<(u64, i64)>>) + Send + 'static) -> Request {
    Request::OffsetForTime { pid, ts_ms, reply: Box::new(reply) }
}

/// The bounds of a range of `pid`'s records; `gone` says the asker left.
pub(crate) fn query(
    pid: Pid,
    spec: crate::core::query::QuerySpec,
    gone: Option<std::sync::Arc<std::sync::atomic::AtomicBool>>,
    reply: impl FnOnce(Result<crate::core::query::QueryBounds>) + Send + 'static,
) -> Request {
    Request::Query { pid, spec, gone, reply: Box::new(reply) }
}

/// A partition's earliest and end offsets and newest timestamp.
pub(crate) fn stat(pid: Pid, reply: Reply<PartitionStat>) -> Request {
    Request::Stat { pid, reply }
}

/// One core's metrics registry.
pub(crate) fn core_metrics(reply: Reply<Metrics>) -> Request {
    Request::Metrics { reply }
}

/// A new topic's partitions, to the core that owns them.
pub(crate) fn add_partitions(pids: Vec<Pid>, retention: Retention, indices: crate::catalog::IndexNames, reply: Reply<()>) -> Request {
    Request::AddPartitions { pids, retention, indices, reply }
}

pub(crate) fn set_retention(limits: Vec<(Pid, Retention)>) -> Request {
    Request::SetRetention { limits }
}

/// A deleted topic's partitions, to the core that owns them.
pub(crate) fn remove_partitions(pids: Vec<Pid>) -> Request {
    Request::RemovePartitions { pids }
}
