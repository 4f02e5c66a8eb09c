//! Range queries: the bounds of a range of a partition's records, given by
//! offsets (negative ones count from the end) or by named index values,
//! waiting for the range's end to exist.
//!
//! A query resolves its end first, then its start, and answers the range
//! `[from, end)` of offsets: the records themselves are then read with
//! ordinary fetches (by the client, the CLI or [`crate::engine::Engine::query`]),
//! so no range is ever held in memory. An end that does not exist yet (an
//! offset past the partition's end, or `NAME=V` while no durable record has
//! a value above V) parks the query until the partition grows (woken where
//! commits retire, like long polls) or its wait is over; then it answers
//! what exists and says the range is still open. Negative offsets count from
//! the partition's end when the query arrived.
//!
//! Index lookups go through the read path ([`crate::read::ReadPath::offset_for_index`]);
//! their answers come back through a channel drained at the next drive.
//! Bounded: at most [`QUERIES_PER_CORE_MAX`] queries in progress per core.
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, Sender, channel};

use slab::Slab;

use super::{Core, Reply};
use crate::error::{Result, StromError};
use crate::io::Io;
use crate::partition::Pid;
use crate::read::IndexSeek;

/// Queries in progress on one core, at most (each a few hundred bytes);
/// past it a new one is refused with Overloaded.
pub const QUERIES_PER_CORE_MAX: usize = 4096;
/// How often parked queries are checked for an asker that went away.
const GONE_SWEEP_NS: u64 = 100_000_000;

/// One end of a range.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum QueryRef {
    /// An offset; a negative one counts from the end (-1: the last record).
    Offset(i64),
    /// As `from`: the first record whose value is at least `value`; as `to`:
    /// the last record whose value is at most `value`.
    Index { name: String, value: i64 },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QuerySpec {
    pub from: QueryRef,
    pub to: QueryRef,
    /// How long the end may be waited for (0: answer at once).
    pub wait_ns: u64,
}

/// A query's answer: the offsets `from..end` (empty when `end <= from`),
/// and whether the range's end did not exist yet when it was answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueryBounds {
    pub from: u64,
    pub end: u64,
    pub open: bool,
    pub high_watermark: u64,
    pub start_offset: u64,
}

impl QueryBounds {
    pub fn count(&self) -> u64 {
        self.end.saturating_sub(self.from)
    }
}

enum Stage {
    /// Resolving the end (or parked, waiting for it).
    To,
    /// An index lookup for the end is in flight.
    ToSeek,
    /// The end is `end`; resolving the start.
    From { end: u64, open: bool },
    /// An index lookup for the start is in flight.
    FromSeek { end: u64, open: bool },
}

struct Query {
    pid: Pid,
    spec: QuerySpec,
    /// The partition's end when the query arrived: negative offsets count
    /// from it, however long the query then waits.
    end_at_start: u64,
    stage: Stage,
    deadline_ns: u64,
    parked: bool,
    gone: Option<Arc<AtomicBool>>,
    reply: Reply<QueryBounds>,
}

pub(super) struct Queries {
    live: Slab<Query>,
    /// Parked queries by partition.
    waiting: HashMap<Pid, Vec<usize>>,
    tx: Sender<(usize, Result<Option<u64>>)>,
    rx: Receiver<(usize, Result<Option<u64>>)>,
    next_sweep_ns: u64,
}

impl Default for Queries {
    fn default() -> Self {
        let (tx, rx) = channel();
        Queries { live: Slab::new(), waiting: HashMap::new(), tx, rx, next_sweep_ns: 0 }
    }
}

impl Queries {
    pub fn waits_on(&self, pid: Pid) -> bool {
        self.waiting.contains_key(&pid)
    }

    /// Nanoseconds until the next parked query's wait is over.
    pub fn due_in_ns(&self, now_ns: u64) -> Option<u64> {
        self.waiting.values().flatten().map(|&id| self.live[id].deadline_ns.saturating_sub(now_ns)).min()
    }

    /// Checks the relations between the queries and their parking.
    pub fn invariants(&self) {
        assert!(self.live.len() <= QUERIES_PER_CORE_MAX);
        for (pid, ids) in &self.waiting {
            assert!(!ids.is_empty(), "an empty parking list for pid {pid}");
            assert!(ids.iter().all(|&id| self.live[id].parked && self.live[id].pid == *pid), "a parked query out of place");
        }
    }

    fn unpark(&mut self, id: usize) {
        let q = &mut self.live[id];
        if !q.parked {
            return;
        }
        q.parked = false;
        if let Some(ids) = self.waiting.get_mut(&q.pid) {
            ids.retain(|&x| x != id);
            if ids.is_empty() {
                self.waiting.remove(&q.pid);
            }
        }
    }
}

/// What one step of a query decided.
enum Next {
    Done(Result<QueryBounds>),
    Park,
    Seek(IndexSeek),
    Again,
}

impl<I: Io> Core<I> {
    /// Starts a query of partition `pid`.
    pub(super) fn start_query(&mut self, pid: Pid, spec: QuerySpec, gone: Option<Arc<AtomicBool>>, reply: Reply<QueryBounds>) {
        if self.queries.live.len() >= QUERIES_PER_CORE_MAX {
            return reply(Err(StromError::Overloaded("queries in progress on this core")));
        }
        let Some(end_at_start) = self.partitions.get(&pid).map(|p| p.visible_end) else {
            return reply(Err(StromError::UnknownPartition { topic: String::new(), partition: pid }));
        };
        let deadline_ns = self.io.now_ns().saturating_add(spec.wait_ns);
        let id = self.queries.live.insert(Query { pid, spec, end_at_start, stage: Stage::To, deadline_ns, parked: false, gone, reply });
        self.step_query(id);
        self.drive_queries(false);
    }

    /// Takes the index lookups' answers, expires parked queries whose wait
    /// is over (all of them when `stopping`) and drops those whose asker is gone.
    pub(super) fn drive_queries(&mut self, stopping: bool) {
        while let Ok((id, res)) = self.queries.rx.try_recv() {
            self.seek_answered(id, res);
        }
        let now = self.io.now_ns();
        let sweep = now >= self.queries.next_sweep_ns;
        if sweep {
            self.queries.next_sweep_ns = now + GONE_SWEEP_NS;
        }
        let parked: Vec<usize> = self.queries.waiting.values().flatten().copied().collect();
        for id in parked {
            let q = &self.queries.live[id];
            let gone = sweep && q.gone.as_ref().is_some_and(|g| g.load(Ordering::Relaxed));
            if gone {
                self.queries.unpark(id);
                let q = self.queries.live.remove(id);
                (q.reply)(Err(StromError::Cancelled));
            } else if stopping || now >= q.deadline_ns {
                self.queries.unpark(id);
                self.finish_open(id);
            }
        }
    }

    /// The partition grew: its parked queries look again.
    pub(super) fn wake_queries(&mut self, pid: Pid) {
        for id in self.queries.waiting.remove(&pid).unwrap_or_default() {
            self.queries.live[id].parked = false;
            self.step_query(id);
        }
        self.drive_queries(false);
    }

    /// The end did not come within the wait: the range is what exists.
    fn finish_open(&mut self, id: usize) {
        let q = &mut self.queries.live[id];
        let end = self.partitions.get(&q.pid).map_or(0, |p| p.visible_end);
        q.stage = Stage::From { end, open: true };
        self.step_query(id);
    }

    fn seek_answered(&mut self, id: usize, res: Result<Option<u64>>) {
        let Some(q) = self.queries.live.get_mut(id) else { return };
        let end_now = self.partitions.get(&q.pid).map_or(0, |p| p.visible_end);
        match (&q.stage, res) {
            (_, Err(e)) => return self.answer_query(id, Err(e)),
            // The first record above the end's value: the end is just before it.
            (Stage::ToSeek, Ok(Some(above))) => q.stage = Stage::From { end: above, open: false },
            // Reached by the partition's last values but not found: cannot
            // be (values are durable before they count); wait as if not reached.
            (Stage::ToSeek, Ok(None)) => q.stage = Stage::To,
            (&Stage::FromSeek { end, open }, Ok(found)) => {
                let from = found.unwrap_or(end_now);
                return self.answer_range(id, from, end, open);
            }
            _ => unreachable!("a lookup answered a query that asked none"),
        }
        self.step_query(id);
    }

    /// Runs a query's stages until it waits (a lookup, a park) or is answered.
    fn step_query(&mut self, id: usize) {
        loop {
            match self.query_next(id) {
                Next::Again => continue,
                Next::Done(res) => return self.answer_query(id, res),
                Next::Park => {
                    let q = &mut self.queries.live[id];
                    if self.stop.is_some() || q.spec.wait_ns == 0 || self.io.now_ns() >= q.deadline_ns {
                        return self.finish_open(id);
                    }
                    q.parked = true;
                    self.queries.waiting.entry(q.pid).or_default().push(id);
                    return;
                }
                Next::Seek(seek) => {
                    let q = &mut self.queries.live[id];
                    q.stage = match q.stage {
                        Stage::To => Stage::ToSeek,
                        Stage::From { end, open } => Stage::FromSeek { end, open },
                        _ => unreachable!("a lookup is asked from a resolving stage"),
                    };
                    let (pid, tx) = (q.pid, self.queries.tx.clone());
                    let reply: Reply<Option<u64>> = Box::new(move |r| {
                        // The receiver lives as long as the core.
                        let _ = tx.send((id, r));
                    });
                    let (reads, mut cx) = self.read_cx();
                    reads.offset_for_index(&mut cx, pid, seek, reply);
                    return;
                }
            }
        }
    }

    fn query_next(&mut self, id: usize) -> Next {
        let q = &mut self.queries.live[id];
        let Some(p) = self.partitions.get(&q.pid) else {
            return Next::Done(Err(StromError::UnknownPartition { topic: String::new(), partition: q.pid }));
        };
        let (start, end_now) = (p.start_offset, p.visible_end);
        match (&q.stage, &q.spec.to, &q.spec.from) {
            (Stage::To, QueryRef::Offset(o), _) if *o >= 0 => {
                let o = *o as u64;
                if o < end_now {
                    q.stage = Stage::From { end: o + 1, open: false };
                    Next::Again
                } else {
                    Next::Park
                }
            }
            (Stage::To, QueryRef::Offset(back), _) => {
                q.stage = Stage::From { end: q.end_at_start.saturating_sub(back.unsigned_abs() - 1), open: false };
                Next::Again
            }
            (Stage::To, QueryRef::Index { name, value }, _) => match index_reached(p, name, *value) {
                Err(e) => Next::Done(Err(e)),
                Ok(true) => Next::Seek(IndexSeek { name: name.clone(), value: *value, strict: true }),
                Ok(false) => Next::Park,
            },
            (&Stage::From { end, open }, _, QueryRef::Offset(o)) => {
                let from = if *o >= 0 { *o as u64 } else { q.end_at_start.saturating_sub(o.unsigned_abs()) };
                Next::Done(Ok(bounds(from.max(start), end, open, p)))
            }
            // The lookup answers InvalidArgument for an index the topic lacks.
            (Stage::From { .. }, _, QueryRef::Index { name, value }) => {
                Next::Seek(IndexSeek { name: name.clone(), value: *value, strict: false })
            }
            (Stage::ToSeek | Stage::FromSeek { .. }, ..) => unreachable!("a query steps only between lookups"),
        }
    }

    fn answer_range(&mut self, id: usize, from: u64, end: u64, open: bool) {
        let pid = self.queries.live[id].pid;
        let res = match self.partitions.get(&pid) {
            Some(p) => Ok(bounds(from.max(p.start_offset), end, open, p)),
            None => Err(StromError::UnknownPartition { topic: String::new(), partition: pid }),
        };
        self.answer_query(id, res);
    }

    fn answer_query(&mut self, id: usize, res: Result<QueryBounds>) {
        self.queries.unpark(id);
        let q = self.queries.live.remove(id);
        (q.reply)(res);
    }
}

/// The range `from..end`, never past what is durable, with the partition's ends.
fn bounds(from: u64, end: u64, open: bool, p: &crate::partition::Partition) -> QueryBounds {
    QueryBounds { from, end: end.min(p.visible_end), open, high_watermark: p.visible_end, start_offset: p.start_offset }
}

/// Whether a durable record of partition `p` has a value of index `name`
/// above `value`; an error if the partition has no such index.
fn index_reached(p: &crate::partition::Partition, name: &str, value: i64) -> Result<bool> {
    let (n, i) = p.named_index(name)?;
    Ok(n.visible_last(i).is_some_and(|l| l > value))
}
