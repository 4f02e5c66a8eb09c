//! Long polls parked at the end of their partition, waiting for new data
//! or their deadline, whichever comes first.
use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use crate::partition::Pid;

use super::cursor::ReadMode;

/// Long polls parked on one core at most; past it a poll answers at once
/// (empty), so waiting readers cannot grow a core's memory without bound.
pub const PARKED_READS_MAX: usize = 1 << 16;

/// A long poll at the end of its partition.
pub(crate) struct Parked {
    pub offset: u64,
    parked_at_ns: u64,
    deadline_ns: u64,
    mode: ReadMode,
}

impl Parked {
    /// The read it becomes when its wait ends at `now_ns`.
    pub fn into_read(self, now_ns: u64) -> ReadMode {
        let mut mode = self.mode;
        if let ReadMode::Fetch { parked_ns, .. } = &mut mode {
            *parked_ns = now_ns.saturating_sub(self.parked_at_ns);
        }
        mode
    }
}

/// The long polls of one core, by partition.
#[derive(Default)]
pub(crate) struct ParkedPolls {
    by_pid: HashMap<Pid, Vec<Parked>>,
    count: usize,
    /// When the earliest of them expires.
    next_deadline_ns: u64,
    /// Set when the server stops: no more long polls wait.
    closed: bool,
    /// The release flags of parked polls that have one, by partition
    /// ([`super::sink::ReadSink::release_flag`]): looked at every tick,
    /// forgotten once set (an asker sets its flag when its request is
    /// answered, so none stays here longer than its request).
    releasable: Vec<(Pid, Arc<AtomicBool>)>,
}

impl ParkedPolls {
    pub fn new() -> ParkedPolls {
        ParkedPolls { next_deadline_ns: u64::MAX, ..ParkedPolls::default() }
    }

    /// Whether a poll may wait now (not closed, not at the cap).
    pub fn may_park(&self) -> bool {
        !self.closed && self.count < PARKED_READS_MAX
    }

    pub fn park(&mut self, pid: Pid, offset: u64, mode: ReadMode, now_ns: u64, wait_ns: u64) {
        if let ReadMode::Fetch { sink, .. } = &mode
            && let Some(flag) = sink.release_flag()
        {
            self.releasable.push((pid, flag.clone()));
        }
        let deadline_ns = now_ns.saturating_add(wait_ns);
        self.next_deadline_ns = self.next_deadline_ns.min(deadline_ns);
        self.by_pid.entry(pid).or_default().push(Parked { offset, parked_at_ns: now_ns, deadline_ns, mode });
        self.count += 1;
    }

    pub fn has(&self, pid: Pid) -> bool {
        self.count > 0 && self.by_pid.contains_key(&pid)
    }

    /// Every poll parked on `pid` (its partition grew, or was removed).
    pub fn take(&mut self, pid: Pid) -> Vec<Parked> {
        let waits = self.by_pid.remove(&pid).unwrap_or_default();
        self.count -= waits.len();
        waits
    }

    /// Parks no more, and makes every poll due now.
    pub fn close(&mut self) {
        self.closed = true;
        self.next_deadline_ns = 0;
    }

    /// Nanoseconds until the earliest deadline, if any poll waits.
    pub fn due_in_ns(&self, now_ns: u64) -> Option<u64> {
        (self.count > 0).then(|| self.next_deadline_ns.saturating_sub(now_ns))
    }

    /// The polls whose asker released them (see `releasable`).
    fn take_released(&mut self) -> Vec<(Pid, Parked)> {
        let mut due = Vec::new();
        let mut i = 0;
        while i < self.releasable.len() {
            if !self.releasable[i].1.load(Ordering::Relaxed) {
                i += 1;
                continue;
            }
            let (pid, flag) = self.releasable.swap_remove(i);
            let Some(waits) = self.by_pid.get_mut(&pid) else { continue };
            let mut j = 0;
            while j < waits.len() {
                let mine =
                    matches!(&waits[j].mode, ReadMode::Fetch { sink, .. } if sink.release_flag().is_some_and(|f| Arc::ptr_eq(f, &flag)));
                if mine {
                    due.push((pid, waits.swap_remove(j)));
                } else {
                    j += 1;
                }
            }
            if waits.is_empty() {
                self.by_pid.remove(&pid);
            }
        }
        self.count -= due.len();
        due
    }

    /// The polls whose wait is over at `now_ns` (all of them when `all`),
    /// or whose asker released them.
    pub fn take_due(&mut self, now_ns: u64, all: bool) -> Vec<(Pid, Parked)> {
        let mut released = if self.releasable.is_empty() { Vec::new() } else { self.take_released() };
        let mut due = self.take_expired(now_ns, all);
        if due.is_empty() {
            return released;
        }
        due.append(&mut released);
        due
    }

    fn take_expired(&mut self, now_ns: u64, all: bool) -> Vec<(Pid, Parked)> {
        let all = all || self.closed;
        if self.count == 0 || (now_ns < self.next_deadline_ns && !all) {
            return Vec::new();
        }
        let mut next = u64::MAX;
        let mut due = Vec::new();
        for (&pid, waits) in self.by_pid.iter_mut() {
            let mut i = 0;
            while i < waits.len() {
                if all || waits[i].deadline_ns <= now_ns {
                    due.push((pid, waits.swap_remove(i)));
                } else {
                    next = next.min(waits[i].deadline_ns);
                    i += 1;
                }
            }
        }
        self.by_pid.retain(|_, w| !w.is_empty());
        self.next_deadline_ns = if self.closed { 0 } else { next };
        self.count -= due.len();
        due
    }
}

/// Fetches with data to answer that wait for room in their asker's reply
/// budget ([`super::sink::ReplyBudget`]), oldest first; a fetch whose
/// budget has others waiting goes behind them without trying
/// ([`super::sink::ReadSink::reserve`]). They hold no buffer and no read
/// slot: a fetch's request and its room are charged to its connection
/// when it is read (`conn_buffered_bytes_max`), so their number is bounded
/// by the connections and the bytes each may hold.
#[derive(Default)]
pub(crate) struct BudgetWaits {
    waits: VecDeque<(Pid, u64, ReadMode)>,
    /// Set when the server stops: a fetch that finds no room is refused.
    closed: bool,
}

impl BudgetWaits {
    pub fn is_empty(&self) -> bool {
        self.waits.is_empty()
    }

    pub fn closed(&self) -> bool {
        self.closed
    }

    pub fn push(&mut self, pid: Pid, offset: u64, mode: ReadMode) {
        self.waits.push_back((pid, offset, mode));
    }

    /// Every waiting fetch, in order, to try again; those that still find
    /// no room are pushed back, in the same order.
    pub fn take(&mut self) -> VecDeque<(Pid, u64, ReadMode)> {
        std::mem::take(&mut self.waits)
    }

    /// The fetches not tried (read slots ran out) go back behind those
    /// tried without room, which were ahead of them.
    pub fn untried(&mut self, mut untried: VecDeque<(Pid, u64, ReadMode)>) {
        self.waits.append(&mut untried);
    }

    /// The waiting fetches whose asker released them
    /// ([`super::sink::ReadSink::release_flag`]): they answer now with
    /// nothing rather than wait for room their own request may hold.
    pub fn take_released(&mut self) -> Vec<(Pid, u64, ReadMode)> {
        if self.waits.is_empty() {
            return Vec::new();
        }
        let (released, kept): (VecDeque<_>, VecDeque<_>) = std::mem::take(&mut self.waits).into_iter().partition(
            |(_, _, mode)| matches!(mode, ReadMode::Fetch { sink, .. } if sink.release_flag().is_some_and(|f| f.load(Ordering::Relaxed))),
        );
        self.waits = kept;
        released.into()
    }

    /// Waits no more: every waiting fetch is handed back to be refused.
    pub fn close(&mut self) -> VecDeque<(Pid, u64, ReadMode)> {
        self.closed = true;
        std::mem::take(&mut self.waits)
    }
}
