//! The way into a core from other threads (and other cores): a bounded
//! channel of requests, a channel of tasks to run beside the core, and a
//! doorbell.
//!
//! Every sender, of a request or of anything for the core's task (a reply
//! from another core, a control message), sets `rung` after it sent, then
//! swaps `sleeping` and, if it was true, rings the core's waker (an eventfd
//! the ring polls). The core sets `sleeping` before it blocks in its ring,
//! then looks at `rung` and the mailbox once more. One of the two always
//! sees the other (both sequentially consistent): so a busy core is never
//! sent a wake-up syscall, and mail sent just before the core sleeps is not
//! left waiting for a timeout.
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver, SyncSender, TryRecvError};

use super::Request;
use super::task::CoreTask;
use super::tick::{Mail, Mailbox, Take};
use crate::error::{Result, StromError};
use crate::io::{Io, Waker};

/// A way into one core from any thread: its mailbox and its doorbell.
#[derive(Clone)]
pub struct CoreRoute {
    tx: SyncSender<Request>,
    sleeping: Arc<AtomicBool>,
    rung: Arc<AtomicBool>,
    waker: Arc<dyn Waker>,
}

impl CoreRoute {
    /// Tells the core there is mail (call it after sending); wakes it if it
    /// sleeps in its ring (no syscall when it runs). From the core's own
    /// thread it does nothing: the core delivers what its own tick answered
    /// in that tick, and marking it rung would only cost it an extra tick
    /// (a reply to every request of its own connections).
    pub fn ring(&self) {
        if RUNG_OF_THIS_THREAD.get() == Arc::as_ptr(&self.rung) as usize {
            return;
        }
        self.rung.store(true, Ordering::SeqCst);
        if self.sleeping.swap(false, Ordering::SeqCst) {
            self.waker.wake();
        }
    }

    /// Blocks while the mailbox is full (the push back for callers that may block).
    pub fn send(&self, req: Request) -> Result<()> {
        self.tx.send(req).map_err(|_| StromError::ShuttingDown)?;
        self.ring();
        Ok(())
    }

    /// Never blocks: a full mailbox gives the request back with `true`, a
    /// stopped core with `false` (core threads must not block on each
    /// other, or two could wait for each other).
    // The request comes back as it went in, unboxed: a full mailbox is
    // exactly when allocating to report it would be wrong. (128 bytes, one
    // over the lint's line since an append carries its arrival time.)
    #[allow(clippy::result_large_err)]
    pub fn try_send(&self, req: Request) -> std::result::Result<(), (Request, bool)> {
        match self.tx.try_send(req) {
            Ok(()) => {
                self.ring();
                Ok(())
            }
            Err(mpsc::TrySendError::Full(r)) => Err((r, true)),
            Err(mpsc::TrySendError::Disconnected(r)) => Err((r, false)),
        }
    }
}

/// Hands tasks to a core (the server attaches its connections so).
pub struct TaskSender<I: Io> {
    tx: SyncSender<Box<dyn CoreTask<I>>>,
    route: CoreRoute,
}

impl<I: Io> TaskSender<I> {
    pub fn attach(&self, task: Box<dyn CoreTask<I>>) -> Result<()> {
        self.tx.send(task).map_err(|_| StromError::ShuttingDown)?;
        self.route.ring();
        Ok(())
    }
}

thread_local! {
    /// The address of the `rung` flag of the core this thread runs (0 on
    /// other threads): how a ring knows it comes from the core itself.
    static RUNG_OF_THIS_THREAD: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
}

/// A core's end of its mailbox.
pub struct ChannelMailbox<I: Io> {
    requests: Receiver<Request>,
    tasks: Receiver<Box<dyn CoreTask<I>>>,
    sleeping: Arc<AtomicBool>,
    rung: Arc<AtomicBool>,
}

/// A mailbox of `capacity` requests for a core woken by `waker`: the
/// senders' side, the task sender, and the core's side.
pub fn channel<I: Io>(capacity: usize, waker: Arc<dyn Waker>) -> (CoreRoute, TaskSender<I>, ChannelMailbox<I>) {
    let (tx, requests) = mpsc::sync_channel(capacity);
    let (task_tx, tasks) = mpsc::sync_channel(1);
    let sleeping = Arc::new(AtomicBool::new(false));
    let rung = Arc::new(AtomicBool::new(false));
    let route = CoreRoute { tx, sleeping: sleeping.clone(), rung: rung.clone(), waker };
    (route.clone(), TaskSender { tx: task_tx, route }, ChannelMailbox { requests, tasks, sleeping, rung })
}

impl<I: Io> Mailbox<I> for ChannelMailbox<I> {
    fn take(&mut self) -> Take<I> {
        if let Ok(task) = self.tasks.try_recv() {
            return Take::Mail(Mail::Attach(task));
        }
        match self.requests.try_recv() {
            Ok(req) => Take::Mail(Mail::Req(req)),
            Err(TryRecvError::Empty) => Take::Empty,
            Err(TryRecvError::Disconnected) => Take::Closed,
        }
    }

    fn sleeping(&mut self, asleep: bool) {
        self.sleeping.store(asleep, Ordering::SeqCst);
    }

    fn take_rung(&mut self) -> bool {
        // The core runs on this thread (the simulator runs several in turn
        // on one thread: each marks itself while it ticks).
        RUNG_OF_THIS_THREAD.set(Arc::as_ptr(&self.rung) as usize);
        self.rung.swap(false, Ordering::SeqCst)
    }
}
