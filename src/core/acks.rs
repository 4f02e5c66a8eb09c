//! Completions and acknowledgements: writes and fdatasyncs advance their
//! log, commits retire in position order, and each retired append is
//! answered with its offsets and the times it crossed each stage.
use std::collections::{HashMap, VecDeque};

use super::{AppendAck, Core, Reply};
use crate::error::StromError;
use crate::io::token::{OpKind, Token};
use crate::io::{Completion, Io};
use crate::log::journal::{Journal, PendingAck};
use crate::partition::producers::KeptBatch;
use crate::partition::{Partition, Pid};
use crate::stats::StageTrace;

/// An append in its commit, until the commit retires: its answer, its
/// stage times so far and its frame's log position.
pub struct AppendWait {
    pub(super) reply: Reply<AppendAck>,
    pub(super) trace: StageTrace,
    pub(super) pos: u64,
}

/// When a log's written and durable positions advanced, oldest first: an
/// append learns from them when its frame was written and made durable
/// (the first mark past its position). A mark is dropped when an append
/// past it is answered, so a log keeps about one per commit in flight.
#[derive(Default)]
pub(super) struct PosMarks {
    written: VecDeque<(u64, u64)>,
    durable: VecDeque<(u64, u64)>,
}

/// The time of the first mark past `pos`, dropping the marks before it
/// (appends are answered in position order, so no later one needs them).
fn mark_past(marks: &mut VecDeque<(u64, u64)>, pos: u64) -> Option<u64> {
    while marks.front().is_some_and(|&(end_pos, _)| end_pos <= pos) {
        marks.pop_front();
    }
    marks.front().map(|&(_, ns)| ns)
}

impl<I: Io> Core<I> {
    /// Acts on one completion of the core's own ops (disk writes, fdatasyncs
    /// and reads); network completions belong to the core's task.
    pub fn on_completion(&mut self, c: Completion, now_ns: u64) {
        let t = Token::unpack(c.token);
        match t.kind {
            OpKind::Write | OpKind::Fsync => {
                if t.kind == OpKind::Write {
                    self.lent.home(c.buf.as_ref().and_then(|b| b.fixed_index()));
                }
                let log = t.owner;
                let j = self.journals.get_mut(&log).expect("op of an owned log");
                let (written_pos, durable_pos) = (j.written_pos(), j.durable_pos());
                j.on_completion(t.kind, t.slot, c.result, c.buf, now_ns);
                let marks = self.pos_marks.entry(log).or_default();
                if j.written_pos() > written_pos {
                    marks.written.push_back((j.written_pos(), now_ns + self.clock_offset_ns));
                }
                if j.durable_pos() > durable_pos {
                    marks.durable.push_back((j.durable_pos(), now_ns + self.clock_offset_ns));
                }
            }
            OpKind::Read => {
                let (reads, mut cx) = self.read_cx();
                reads.on_complete(&mut cx, t.slot as usize, c);
            }
            kind => unreachable!("{kind:?} is not a core op"),
        }
    }

    /// Reaps completions and acts on them: retires commits (acknowledging
    /// their appends), continues reads. Network completions are set aside
    /// in `net_completions` for the core's task.
    pub fn process_completions(&mut self) {
        let mut reaped = std::mem::take(&mut self.completions);
        self.io.reap(&mut reaped);
        let now = self.io.now_ns();
        for c in reaped.drain(..) {
            if Token::unpack(c.token).kind.is_net() {
                self.net_completions.push(c);
            } else {
                self.on_completion(c, now);
            }
        }
        self.completions = reaped;
        self.deliver_acks();
    }

    pub(super) fn deliver_acks(&mut self) {
        // Before any ack leaves: whatever a client was told is durable, the
        // mark names already, so a kill right after an ack (before a later
        // publish) cannot leave a follower short of an acknowledged record.
        self.publish_marks();
        for j in self.journals.values_mut() {
            j.take_retired(&mut self.retired);
            let first_refused = self.refused.len();
            j.take_refused(&mut self.refused);
            if let Some(pos) = j.take_rewind() {
                rewind_partitions(&mut self.partitions, j, pos, &self.refused[first_refused..]);
            }
        }
        let mut grown = Vec::new();
        let now_ns = if self.retired.is_empty() { 0 } else { self.clock_ns() };
        for ack in self.retired.drain(..) {
            // A duplicate's answer rides behind its first copy's, already
            // made visible (perhaps past it, by a later batch of the commit).
            if let Some(p) = self.partitions.get_mut(&ack.pid).filter(|p| ack.end_offset > p.visible_end) {
                p.make_visible(ack.end_offset, ack.max_ts_ms);
            }
            if self.reads.parked_on(ack.pid) || self.queries.waits_on(ack.pid) {
                grown.push(ack.pid);
            }
            let AppendWait { reply, mut trace, pos } = ack.reply;
            let marks = self.pos_marks.entry(crate::partition::log_of(ack.pid, self.spec.log_count)).or_default();
            // A retired commit was written; it was fsynced unless the policy
            // acknowledges at the write.
            trace.written_ns = mark_past(&mut marks.written, pos).unwrap_or(now_ns);
            trace.durable_ns = mark_past(&mut marks.durable, pos);
            reply(Ok(AppendAck { base_offset: ack.base_offset, last_offset: ack.end_offset - 1, trace }));
        }
        for pid in grown {
            let (reads, mut cx) = self.read_cx();
            reads.unpark(&mut cx, pid);
            if self.queries.waits_on(pid) {
                self.wake_queries(pid);
            }
        }
        for (ack, err) in self.refused.drain(..) {
            self.metrics.appends_refused += 1;
            (ack.reply.reply)(Err(err));
        }
    }
}

impl<I: Io> Core<I> {
    /// Answers a batch an idempotent producer sent again with the offsets
    /// its first copy was given, storing nothing. A first copy already
    /// visible is answered now; one still in a commit in flight is answered
    /// when that commit retires, so this answer too means durable under the
    /// active policy (and if that commit is refused, so is this).
    pub(super) fn answer_duplicate(&mut self, pid: Pid, first: KeptBatch, arrived_ns: u64, reply: Reply<AppendAck>) {
        self.metrics.appends_duplicate += 1;
        let now_ns = self.clock_ns();
        // Nothing is written for it: it is staged, written and durable (as
        // far as this answer goes) when its first copy is.
        let trace = StageTrace { arrived_ns, staged_ns: now_ns, ..StageTrace::default() };
        let p = &self.partitions[&pid];
        if first.end_offset <= p.visible_end {
            let trace = StageTrace { written_ns: now_ns, ..trace };
            return reply(Ok(AppendAck { base_offset: first.base_offset, last_offset: first.end_offset - 1, trace }));
        }
        let j = self.journals.get_mut(&p.log).expect("partition's log is on its core");
        let ack = PendingAck {
            pid,
            base_offset: first.base_offset,
            end_offset: first.end_offset,
            max_ts_ms: p.staged_max_ts_ms,
            reply: AppendWait { reply, trace, pos: 0 },
        };
        let adopt = |a: &PendingAck<AppendWait>, ack: &mut PendingAck<AppendWait>| {
            ack.max_ts_ms = a.max_ts_ms;
            ack.reply.pos = a.reply.pos;
        };
        if let Err(ack) = j.attach_beside(pid, first.base_offset, ack, adopt) {
            // Neither visible nor in a commit in flight: its commit was
            // refused (a failed log) and the refusal is not yet delivered.
            let e = j.failed().cloned().unwrap_or(StromError::Overloaded("the first copy of this batch is still being written"));
            self.metrics.appends_refused += 1;
            (ack.reply.reply)(Err(e));
        }
    }
}

/// After `j` rewound to `pos` for a full disk (its appends from there were
/// refused, `refused` among them): each partition of the log takes back the
/// offsets those appends were given and forgets their index entries, so the
/// next append continues exactly where the log's stored data ends.
fn rewind_partitions<R>(partitions: &mut HashMap<Pid, Partition>, j: &Journal<R>, pos: u64, refused: &[(PendingAck<R>, StromError)]) {
    for (ack, _) in refused {
        if let Some(p) = partitions.get_mut(&ack.pid) {
            p.next_offset = p.next_offset.min(ack.base_offset);
        }
    }
    for p in partitions.values_mut().filter(|p| p.log == j.id) {
        p.truncate_from(pos);
        p.staged_max_ts_ms = j.pending_max_ts(p.pid).unwrap_or(i64::MIN).max(p.visible_max_ts_ms);
        debug_assert!(p.next_offset >= p.visible_end);
    }
}
