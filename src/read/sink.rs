//! Where a read's answers go, and how their bytes must be laid out.
//!
//! The read path knows nothing of who asked or in which protocol: the sink
//! says how many bytes to leave free before the batches (a codec writes its
//! reply header there, so the batches are never copied again) and whether
//! the answer may be assembled in one of the core's registered buffers (the
//! asker sends from this core's ring). A sink may take many answers (a
//! subscription is pushed one per batch of new data) and may be cancelled.
//!
//! A sink may also carry a [`ReplyBudget`]: the bytes of answers that may
//! exist at once for the connections of one core. The read path takes room
//! from it ([`ReadSink::reserve`]) only once it has data to answer with,
//! just before the answer's buffer is made, so a long poll parked at the
//! end of its partition holds none; a read that finds no room waits
//! (`poll::BudgetWaits`) and is tried again when bytes return.
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};

use crate::buf::AlignedBuf;
use crate::core::Reply;
use crate::core::mailbox::CoreRoute;
use crate::error::Result;

/// Whole batches, as stored, starting with the one holding the asked offset.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReadResult {
    /// `headroom_bytes` left for the asker, then concatenated RecordBatch v2
    /// bytes (base offsets assigned). Empty when the answer is in
    /// `registered` instead.
    pub batches: Vec<u8>,
    pub headroom_bytes: usize,
    /// The same layout in one of the core's registered buffers (when the
    /// sink allowed it and one was free). Its owner gives it back with
    /// [`crate::core::Core::give_reply_buf`] once sent.
    pub registered: Option<RegisteredBatches>,
    /// The offset after the last record returned (where to read next).
    pub next_offset: u64,
    /// Offsets below this are readable now (durable under the policy).
    pub high_watermark: u64,
    pub start_offset: u64,
    /// How long the read waited parked as a long poll before it ran, in ns.
    pub parked_ns: u64,
    /// Reply budget taken for this answer (0 without a budget): the
    /// asker's core holds it from here on and returns it.
    pub budget_bytes: usize,
}

/// An answer assembled in a registered buffer, so that it can be sent from
/// it. Comparing or cloning it works on its bytes (a clone is an ordinary,
/// unregistered buffer).
#[derive(Debug)]
pub struct RegisteredBatches(pub AlignedBuf);

impl Clone for RegisteredBatches {
    fn clone(&self) -> Self {
        let mut b = AlignedBuf::new(self.0.capacity());
        b.extend_from_slice(self.0.as_slice());
        RegisteredBatches(b)
    }
}

impl PartialEq for RegisteredBatches {
    fn eq(&self, other: &Self) -> bool {
        self.0.as_slice() == other.0.as_slice()
    }
}

impl Eq for RegisteredBatches {}

/// What a sink wants after an answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SinkFlow {
    /// The request is answered.
    Done,
    /// Read on from the answer's `next_offset`, waiting as the request did
    /// (a subscription: each answer pushes what arrived since the last).
    More,
}

/// The asker of a read, as the read path sees it. Called on the core thread.
pub trait ReadSink: Send {
    /// Bytes to leave free before the batches in the answer's buffer.
    fn headroom_bytes(&self) -> usize {
        0
    }
    /// Whether the answer may sit in a registered buffer of this core.
    fn registered_ok(&self) -> bool {
        false
    }
    /// Takes one answer (an error ends the request whatever is returned).
    fn deliver(&mut self, answer: Result<ReadResult>) -> SinkFlow;
    /// The asker went away: a parked read is dropped unanswered when it wakes.
    fn cancelled(&self) -> bool {
        false
    }
    /// Takes room for an answer of up to `bytes` from the asker's reply
    /// budget, just before it is built; false when there is none now (the
    /// read waits, and is tried again as room returns). A sink holding room
    /// already says yes at once.
    fn reserve(&mut self, _bytes: usize) -> bool {
        true
    }
    /// The asker is gone (its connection closed): a read not yet begun is
    /// answered at once with an error its asker will never see, instead of
    /// being built, or waiting for budget, for nobody.
    fn asker_gone(&self) -> bool {
        false
    }
    /// Set when the asker wants the answer now, whatever it holds: a long
    /// poll that is one of several partitions of one request (a Kafka
    /// Fetch) stops waiting once another of them answered with enough.
    fn release_flag(&self) -> Option<&Arc<AtomicBool>> {
        None
    }
}

/// A sink answered once, through a reply closure: the embedded API,
/// tests, and any asker that takes one answer per request.
pub struct OnceSink {
    pub headroom_bytes: usize,
    pub registered_ok: bool,
    reply: Option<Reply<ReadResult>>,
    claim: Option<BudgetClaim>,
    /// Set by the asker's core when the asker goes away.
    gone: Option<Arc<AtomicBool>>,
    /// Set by the asker when waiting is over ([`ReadSink::release_flag`]).
    released: Option<Arc<AtomicBool>>,
}

impl OnceSink {
    pub fn new(headroom_bytes: usize, registered_ok: bool, reply: Reply<ReadResult>) -> OnceSink {
        OnceSink { headroom_bytes, registered_ok, reply: Some(reply), claim: None, gone: None, released: None }
    }

    /// The same, answered under `budget` (the asker's core's), for an
    /// asker that sets `gone` when it goes away.
    pub fn budgeted(mut self, budget: Option<Arc<ReplyBudget>>, gone: Option<Arc<AtomicBool>>) -> OnceSink {
        self.claim = budget.map(|budget| BudgetClaim { budget, reserved_bytes: 0, waiting: false });
        self.gone = gone;
        self
    }

    /// The same, parked only until `released` is set.
    pub fn releasable(mut self, released: Option<Arc<AtomicBool>>) -> OnceSink {
        self.released = released;
        self
    }
}

impl ReadSink for OnceSink {
    fn headroom_bytes(&self) -> usize {
        self.headroom_bytes
    }

    fn registered_ok(&self) -> bool {
        self.registered_ok
    }

    fn deliver(&mut self, mut answer: Result<ReadResult>) -> SinkFlow {
        // An answer hands its room over to the asker's core; a failed read
        // returns it when the claim drops.
        if let (Ok(rr), Some(claim)) = (&mut answer, &mut self.claim) {
            rr.budget_bytes = std::mem::take(&mut claim.reserved_bytes);
        }
        self.claim = None;
        if let Some(reply) = self.reply.take() {
            reply(answer);
        }
        SinkFlow::Done
    }

    fn reserve(&mut self, bytes: usize) -> bool {
        self.claim.as_mut().is_none_or(|c| c.reserve(bytes))
    }

    fn asker_gone(&self) -> bool {
        self.gone.as_ref().is_some_and(|g| g.load(Ordering::Relaxed))
    }

    fn release_flag(&self) -> Option<&Arc<AtomicBool>> {
        self.released.as_ref()
    }
}

/// A one-answer sink with no headroom, answered on the heap.
pub fn once(reply: Reply<ReadResult>) -> Box<dyn ReadSink> {
    Box::new(OnceSink::new(0, false, reply))
}

/// The reply budget of one core's connections: bytes of Fetch answers
/// that exist for them at once, from the moment the read path starts
/// building one (on the partition's core) until its last byte is sent or
/// its connection closes (on the connection's core). Shared by both, so
/// atomic; returned by whichever core frees the bytes, which rings every
/// core while reads wait for room, so that their read paths try again.
pub struct ReplyBudget {
    max_bytes: usize,
    used_bytes: AtomicUsize,
    peak_bytes: AtomicUsize,
    /// Reads waiting for room now, on any core.
    waiting: AtomicUsize,
    waits_total: AtomicU64,
    /// The cores whose read paths may hold waiting reads: all of them.
    wake: Vec<CoreRoute>,
}

impl ReplyBudget {
    pub fn new(max_bytes: usize, wake: Vec<CoreRoute>) -> ReplyBudget {
        ReplyBudget {
            max_bytes,
            used_bytes: AtomicUsize::new(0),
            peak_bytes: AtomicUsize::new(0),
            waiting: AtomicUsize::new(0),
            waits_total: AtomicU64::new(0),
            wake,
        }
    }

    /// Takes `bytes` if they fit; an answer larger than the whole budget
    /// fits only when nothing else is taken (it goes alone).
    pub fn try_take(&self, bytes: usize) -> bool {
        let mut used = self.used_bytes.load(Ordering::SeqCst);
        loop {
            if used != 0 && used + bytes > self.max_bytes {
                return false;
            }
            match self.used_bytes.compare_exchange_weak(used, used + bytes, Ordering::SeqCst, Ordering::SeqCst) {
                Ok(_) => {
                    self.peak_bytes.fetch_max(used + bytes, Ordering::Relaxed);
                    return true;
                }
                Err(now) => used = now,
            }
        }
    }

    /// Returns `bytes`, and rings every core if reads wait for room. A
    /// core's own ring is silent on its own thread: its server task polls
    /// once more instead (`NetCore::wait_hint`).
    pub fn release(&self, bytes: usize) {
        if bytes == 0 {
            return;
        }
        let before = self.used_bytes.fetch_sub(bytes, Ordering::SeqCst);
        assert!(before >= bytes, "reply budget returned {bytes} bytes with {before} taken");
        if self.waiting() > 0 {
            self.wake.iter().for_each(CoreRoute::ring);
        }
    }

    pub fn max_bytes(&self) -> usize {
        self.max_bytes
    }

    pub fn used_bytes(&self) -> usize {
        self.used_bytes.load(Ordering::SeqCst)
    }

    /// The most ever taken at once: at most `max_bytes`, unless a single
    /// answer larger than the whole budget went alone.
    pub fn peak_bytes(&self) -> usize {
        self.peak_bytes.load(Ordering::Relaxed)
    }

    /// Reads waiting for room now.
    pub fn waiting(&self) -> usize {
        self.waiting.load(Ordering::SeqCst)
    }

    /// Times a read found no room and waited.
    pub fn waits_total(&self) -> u64 {
        self.waits_total.load(Ordering::Relaxed)
    }
}

/// One answer's room in a budget: taken, or waited for. Dropped unanswered
/// (a failed read, a refused request), it gives both back.
struct BudgetClaim {
    budget: Arc<ReplyBudget>,
    reserved_bytes: usize,
    waiting: bool,
}

impl BudgetClaim {
    /// Takes room for `bytes`. A fetch goes behind those already waiting
    /// for the same budget (on any core), unless it is one of them, tried
    /// again in its core's order.
    fn reserve(&mut self, bytes: usize) -> bool {
        if self.reserved_bytes > 0 {
            return true;
        }
        let may_take = self.waiting || self.budget.waiting() == 0;
        if may_take && self.budget.try_take(bytes) {
            return self.took(bytes);
        }
        if self.waiting {
            return false;
        }
        self.waiting = true;
        self.budget.waiting.fetch_add(1, Ordering::SeqCst);
        self.budget.waits_total.fetch_add(1, Ordering::Relaxed);
        // Counted as waiting before this second look, so that bytes
        // returned in between either fit now or ring this core; and with
        // nothing taken, nothing would ever ring it.
        if (may_take || self.budget.used_bytes() == 0) && self.budget.try_take(bytes) {
            return self.took(bytes);
        }
        false
    }

    fn took(&mut self, bytes: usize) -> bool {
        self.reserved_bytes = bytes;
        if std::mem::take(&mut self.waiting) {
            self.budget.waiting.fetch_sub(1, Ordering::SeqCst);
        }
        true
    }
}

impl Drop for BudgetClaim {
    fn drop(&mut self) {
        if self.waiting {
            let left = self.budget.waiting.fetch_sub(1, Ordering::SeqCst) - 1;
            // Others waited behind this one: with nothing taken, no return
            // of bytes would ring their cores to try again.
            if left > 0 && self.budget.used_bytes() == 0 {
                self.budget.wake.iter().for_each(CoreRoute::ring);
            }
        }
        self.budget.release(std::mem::take(&mut self.reserved_bytes));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::StromError;

    fn sink(budget: &Arc<ReplyBudget>) -> OnceSink {
        OnceSink::new(0, false, Box::new(|_| {})).budgeted(Some(budget.clone()), None)
    }

    // Proves: room is taken only up to the budget (a single answer larger
    // than all of it goes alone), a fetch goes behind those waiting for the
    // same budget even if it would fit, a waiter takes room once bytes
    // return, an answer hands its room to the asker, and a failed or dropped
    // read gives back both its room and its place in line.
    #[test]
    fn a_budget_gives_room_in_order_and_gets_it_back() {
        let budget = Arc::new(ReplyBudget::new(100, Vec::new()));
        let got = Arc::new(AtomicUsize::new(0));
        let got_by_reply = got.clone();
        let reply: Reply<ReadResult> = Box::new(move |res| got_by_reply.store(res.unwrap().budget_bytes, Ordering::SeqCst));
        let mut a = OnceSink::new(0, false, reply).budgeted(Some(budget.clone()), None);
        let (mut b, mut c) = (sink(&budget), sink(&budget));
        assert!(a.reserve(60));
        assert!(!b.reserve(60), "over the budget");
        assert!(!c.reserve(10), "it fits, but b waits ahead of it");
        assert_eq!((budget.used_bytes(), budget.waiting(), budget.waits_total()), (60, 2, 2));
        assert_eq!(a.deliver(Ok(ReadResult::default())), SinkFlow::Done);
        drop(a);
        let handed = got.load(Ordering::SeqCst);
        assert_eq!((handed, budget.used_bytes()), (60, 60), "an answer's room is the asker's to return");
        budget.release(handed);
        assert!(b.reserve(60) && c.reserve(10), "the waiters take room in turn once it returns");
        assert_eq!((budget.used_bytes(), budget.waiting()), (70, 0));
        drop(c);
        assert_eq!(b.deliver(Err(StromError::ShuttingDown)), SinkFlow::Done);
        assert_eq!(budget.used_bytes(), 0, "a dropped or failed read gives its room back");
        let (mut big, mut next) = (sink(&budget), sink(&budget));
        assert!(big.reserve(150), "an answer larger than the budget goes alone");
        assert!(!next.reserve(1));
        drop((big, next));
        assert_eq!((budget.used_bytes(), budget.waiting(), budget.peak_bytes()), (0, 0, 150));
    }

    // Proves: a sink learns that its asker went away from the flag the
    // asker's core sets when the connection closes.
    #[test]
    fn a_sink_knows_its_asker_is_gone() {
        let gone = Arc::new(AtomicBool::new(false));
        let s = OnceSink::new(0, false, Box::new(|_| {})).budgeted(None, Some(gone.clone()));
        assert!(!s.asker_gone());
        gone.store(true, Ordering::Relaxed);
        assert!(s.asker_gone());
    }
}
