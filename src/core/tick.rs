//! The tick loop: the one loop every core runs, in production and under the
//! simulator alike.
//!
//! One tick: reap completions and act on them (the core's own, then the
//! network's, by its task); take requests from the mailbox until it is
//! empty or the core pushes back; plan (the core's commits, fdatasyncs,
//! reads and checkpoints, then the task's receives and sends); submit once
//! and wait. Nothing is written or replied in direct reaction to a single
//! request: everything that arrives in a tick goes out together.
use std::time::Duration;

use super::task::{CoreTask, TaskCore};
use super::{Core, Request};
use crate::error::Result;
use crate::io::Io;

/// What a core's mailbox carries.
pub enum Mail<I: Io> {
    Req(Request),
    /// Runs a task on the core's ring beside its logs (the server's part).
    Attach(Box<dyn CoreTask<I>>),
}

/// What a look into the mailbox found.
pub enum Take<I: Io> {
    Mail(Mail<I>),
    Empty,
    /// Every sender is gone: the core stops.
    Closed,
}

/// Where a core's requests come from: the engine's bounded channel, or
/// nothing (the simulator hands requests to the core directly).
pub trait Mailbox<I: Io> {
    fn take(&mut self) -> Take<I>;
    /// The core is about to block in its ring (`true`), or woke (`false`):
    /// a sender that finds it asleep rings its doorbell.
    fn sleeping(&mut self, _asleep: bool) {}
    /// Whether anyone rang since the last call (and forget it): mail for
    /// the core or its task (a reply from another core, a control
    /// message) that the core has not looked at yet.
    fn take_rung(&mut self) -> bool {
        false
    }
}

/// A mailbox that is always empty.
pub struct NoMail;

impl<I: Io> Mailbox<I> for NoMail {
    fn take(&mut self) -> Take<I> {
        Take::Empty
    }
}

/// A core and the task running beside it on its ring.
pub struct Ticker<I: Io> {
    pub task: Option<Box<dyn CoreTask<I>>>,
}

impl<I: Io> Default for Ticker<I> {
    fn default() -> Self {
        Ticker { task: None }
    }
}

impl<I: Io> Ticker<I> {
    /// Runs ticks until the core stops.
    pub fn run(&mut self, core: &mut Core<I>, mailbox: &mut dyn Mailbox<I>) -> Result<()> {
        while !self.tick(core, mailbox)? {}
        Ok(())
    }

    /// One tick; true once the core has stopped.
    pub fn tick(&mut self, core: &mut Core<I>, mailbox: &mut dyn Mailbox<I>) -> Result<bool> {
        // What was rung before now is looked at in this tick.
        mailbox.take_rung();
        core.process_completions();
        if let Some(t) = self.task.as_mut() {
            t.on_reaped(&mut TaskCore::new(core));
        }
        while !core.backpressured() {
            match mailbox.take() {
                Take::Mail(mail) => self.accept(core, mail),
                Take::Empty => break,
                Take::Closed => {
                    core.handle(Request::Stop { reply: Box::new(|_| ()) });
                    break;
                }
            }
        }
        core.plan();
        if let Some(t) = self.task.as_mut() {
            t.plan(&mut TaskCore::new(core));
            if t.finished() {
                self.task = None;
            }
        }
        if core.stopped() {
            return Ok(true);
        }
        self.wait(core, mailbox)?;
        Ok(false)
    }

    fn accept(&mut self, core: &mut Core<I>, mail: Mail<I>) {
        match mail {
            Mail::Req(req) => core.handle(req),
            Mail::Attach(t) => self.task = Some(t),
        }
    }

    /// Submits what the tick planned and waits for a completion, a timer or
    /// the doorbell; only polls when there is work that must not wait.
    fn wait(&mut self, core: &mut Core<I>, mailbox: &mut dyn Mailbox<I>) -> Result<()> {
        let (mut block, mut timeout) = core.wait_hint();
        if let Some(t) = &self.task {
            let (busy, timer_ns) = t.wait_hint(core.io.now_ns());
            block &= !busy;
            if let Some(ns) = timer_ns {
                let d = Duration::from_nanos(ns);
                timeout = Some(timeout.map_or(d, |t| t.min(d)));
            }
        }
        if !block {
            return core.io.wait(0, Some(Duration::ZERO));
        }
        // Announce the sleep, then look once more, so that mail sent just
        // before the announcement is not left waiting for the timeout: a
        // request in the mailbox, or anything rung for the task (a reply
        // from another core, a control message) since this tick began.
        mailbox.sleeping(true);
        if mailbox.take_rung() {
            mailbox.sleeping(false);
            return core.io.wait(0, Some(Duration::ZERO));
        }
        match mailbox.take() {
            Take::Mail(mail) => {
                mailbox.sleeping(false);
                self.accept(core, mail);
                core.io.wait(0, Some(Duration::ZERO))
            }
            Take::Empty | Take::Closed => {
                let res = core.io.wait(1, timeout);
                mailbox.sleeping(false);
                res
            }
        }
    }
}

impl<I: Io> Core<I> {
    /// One tick with no mailbox and no task, as the simulator drives a core.
    pub fn tick(&mut self) -> Result<()> {
        Ticker::default().tick(self, &mut NoMail).map(|_| ())
    }
}
