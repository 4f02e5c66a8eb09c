//! Control of each core's server task from outside its core: stop, the
//! counters, and stage reports gathered across cores.
//!
//! Stop: the task closes its listeners and its idle connections, answers
//! parked long polls at once, refuses every request it reads from then on
//! with the typed, retriable `ShuttingDown`, waits (at most the drain time)
//! until every request dispatched before the stop is answered and every
//! reply sent, closes the rest, and reports.
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::Shared;
use super::codec::Codec;
use super::conn::State;
use super::stats::NetStats;
use super::task::NetCore;
use crate::core::task::TaskCore;
use crate::io::Io;
use crate::stats::StageHistograms;

/// Control messages from [`Server`](super::Server) to each core's server task.
pub(crate) enum Control {
    /// Stop accepting and reading, answer what is in flight (waiting at
    /// most `drain`), close every connection, then report.
    Stop { drain: Duration, done: mpsc::SyncSender<()> },
    /// The core's server counters, now.
    Stats { reply: mpsc::SyncSender<NetStats> },
    /// Add the core's stage histograms to a report (then reset them if asked).
    Stages { share: StageShare, reset: bool },
}

impl Shared {
    /// Asks every core's server task for its stage histograms (and to reset
    /// them if `reset`); `done` gets them merged once every core added its
    /// own, on the thread of the last. The share of core `own` is returned
    /// instead of sent, for a caller on that core to add at once.
    pub(crate) fn gather_stages(
        &self,
        reset: bool,
        own: Option<usize>,
        done: impl FnOnce(StageHistograms) + Send + 'static,
    ) -> Option<StageShare> {
        let mut own_share = None;
        for (core, share) in StageShare::split(self.controls.len(), done).into_iter().enumerate() {
            if Some(core) == own {
                own_share = Some(share);
            } else if self.controls[core].send(Control::Stages { share, reset }).is_ok() {
                // A core whose task has gone drops the share unread: it adds nothing.
                self.broker.route(core).ring();
            }
        }
        own_share
    }
}

/// One core's part in a stage report. The report completes when the last
/// share is added or dropped, so a core that stopped cannot hold it up.
pub(crate) struct StageShare {
    gather: Option<Arc<Mutex<Gather>>>,
}

struct Gather {
    merged: StageHistograms,
    done: Option<Box<dyn FnOnce(StageHistograms) + Send>>,
}

impl StageShare {
    fn split(cores: usize, done: impl FnOnce(StageHistograms) + Send + 'static) -> Vec<StageShare> {
        let gather = Arc::new(Mutex::new(Gather { merged: StageHistograms::new(), done: Some(Box::new(done)) }));
        (0..cores).map(|_| StageShare { gather: Some(gather.clone()) }).collect()
    }

    /// Adds a core's histograms to the report, then resets them if asked.
    pub fn add(self, hists: &mut StageHistograms, reset: bool) {
        if let Some(g) = &self.gather {
            g.lock().expect("stage report").merged.merge(hists);
        }
        if reset {
            hists.reset();
        }
    }
}

impl Drop for StageShare {
    fn drop(&mut self) {
        // Exactly one share's drop gets the last reference.
        if let Some(g) = self.gather.take().and_then(Arc::into_inner) {
            let mut g = g.into_inner().expect("stage report");
            if let Some(done) = g.done.take() {
                done(g.merged);
            }
        }
    }
}

impl<C: Codec> NetCore<C> {
    pub(super) fn on_control<I: Io>(&mut self, core: &mut TaskCore<'_, I>, now_ns: u64) {
        while let Ok(control) = self.control.try_recv() {
            match control {
                Control::Stop { drain, done } => self.begin_stop(core, now_ns + drain.as_nanos() as u64, done),
                Control::Stages { share, reset } => share.add(&mut self.stages, reset),
                Control::Stats { reply } => {
                    let _ = reply.send(self.stats_now(core.gauges()));
                }
            }
        }
    }

    fn begin_stop<I: Io>(&mut self, core: &mut TaskCore<'_, I>, deadline_ns: u64, done: mpsc::SyncSender<()>) {
        self.stopping = Some((deadline_ns, done));
        // Long polls are answered now (empty), not at the end of their wait.
        core.close_parking();
        for l in &mut self.listeners {
            if !l.closed {
                l.closed = true;
                core.close_socket(l.file);
            }
        }
        // Idle connections have only a poll in flight: close them now.
        let idle: Vec<usize> = self.conns.iter().filter(|(_, c)| c.inflight == 0 && c.drained()).map(|(s, _)| s).collect();
        for slot in idle {
            self.close_conn(core, slot);
            self.mark(slot);
        }
    }

    /// Once every request is answered and sent (or the drain time is over),
    /// closes what is left; once every connection and listener is gone,
    /// reports and finishes.
    pub(super) fn finish_stop<I: Io>(&mut self, core: &mut TaskCore<'_, I>, now_ns: u64) {
        let Some((deadline_ns, _)) = &self.stopping else { return };
        let quiet = self.conns.iter().all(|(_, c)| c.state == State::Closed || (c.inflight == 0 && c.drained()));
        if quiet || now_ns >= *deadline_ns {
            let open: Vec<usize> = self.conns.iter().filter(|(_, c)| c.state != State::Closed).map(|(s, _)| s).collect();
            for slot in open {
                self.close_conn(core, slot);
                self.mark(slot);
            }
        }
        if self.conns.is_empty() && self.listeners.iter().all(|l| !l.accepting) {
            let (_, done) = self.stopping.take().expect("stopping");
            let _ = done.send(());
            self.finished = true;
        }
    }
}
