//! Control of each core's server task from outside its core: stop, and
//! reports gathered across cores (metrics registries, stage histograms).
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
use super::task::NetCore;
use crate::core::task::TaskCore;
use crate::io::Io;
use crate::metrics::Metrics;
use crate::metrics::requests::RequestCounts;
use crate::stats::{CoreStages, StageHistograms, StageLatency};

/// Control messages from [`Server`](super::Server) to each core's server task.
pub(crate) enum Control {
    /// Stop accepting and reading, answer what is in flight (waiting at
    /// most `drain`), close every connection, then report.
    Stop { drain: Duration, done: mpsc::SyncSender<()> },
    /// Add the core's metrics registry to a report.
    Metrics { share: MetricsShare },
    /// Add the core's stage histograms to a report (with its own rows if
    /// the report has room for them), then reset them if asked.
    Stages { share: StageShare, reset: bool },
    /// Put a copy of the core's stage histograms in its place in a report.
    StagesByCore { share: StagesByCoreShare },
}

/// One core's part in a stage report: the histograms merged across cores,
/// and each core's rows in its place when they were asked for.
pub(crate) type StageShare = Share<(StageHistograms, Vec<Vec<StageLatency>>)>;
/// One core's part in a metrics report: each core's registry in its place.
pub(crate) type MetricsShare = Share<Vec<Option<Metrics>>>;
/// One core's part in a report of each core's stage histograms and request
/// counts (a scrape).
pub(crate) type StagesByCoreShare = Share<Vec<Option<(StageHistograms, Box<RequestCounts>)>>>;

impl Shared {
    /// Asks every core's server task for its stage histograms (and to reset
    /// them if `reset`); `done` gets them merged once every core added its
    /// own, on the thread of the last. The share of core `own` is returned
    /// instead of sent, for a caller on that core to add at once.
    pub(crate) fn gather_stages(
        &self,
        reset: bool,
        per_core: bool,
        own: Option<usize>,
        done: impl FnOnce((StageHistograms, Vec<Vec<StageLatency>>)) + Send + 'static,
    ) -> Option<StageShare> {
        let cores = if per_core { vec![Vec::new(); self.controls.len()] } else { Vec::new() };
        self.gather((StageHistograms::new(), cores), own, done, |share| Control::Stages { share, reset })
    }

    /// Asks every core's server task for its core's metrics registry;
    /// `done` gets them in core order (None for a core whose task is gone)
    /// once every core added its own. The share of core `own` is returned
    /// instead of sent, as with [`Shared::gather_stages`].
    pub(crate) fn gather_metrics(
        &self,
        own: Option<usize>,
        done: impl FnOnce(Vec<Option<Metrics>>) + Send + 'static,
    ) -> Option<MetricsShare> {
        self.gather(vec![None; self.controls.len()], own, done, |share| Control::Metrics { share })
    }

    /// Asks every core's server task for a copy of its stage histograms,
    /// unmerged and unreset; `done` gets them in core order (None for a core
    /// whose task is gone) once every core added its own.
    pub(crate) fn gather_stages_by_core(&self, done: impl FnOnce(Vec<Option<(StageHistograms, Box<RequestCounts>)>>) + Send + 'static) {
        let own = self.gather(vec![None; self.controls.len()], None, done, |share| Control::StagesByCore { share });
        debug_assert!(own.is_none());
    }

    fn gather<A: Send + 'static>(
        &self,
        report: A,
        own: Option<usize>,
        done: impl FnOnce(A) + Send + 'static,
        control: impl Fn(Share<A>) -> Control,
    ) -> Option<Share<A>> {
        let mut own_share = None;
        for (core, share) in Share::split(self.controls.len(), report, done).into_iter().enumerate() {
            if Some(core) == own {
                own_share = Some(share);
            } else if self.controls[core].send(control(share)).is_ok() {
                // A core whose task has gone drops the share unread: it adds nothing.
                self.broker.route(core).ring();
            }
        }
        own_share
    }
}

/// One core's part in a report gathered across cores. The report completes
/// when the last share is added or dropped, so a core that stopped cannot
/// hold it up.
pub(crate) struct Share<A> {
    gather: Option<Arc<Mutex<Gather<A>>>>,
}

struct Gather<A> {
    report: A,
    done: Option<Box<dyn FnOnce(A) + Send>>,
}

impl<A: Send + 'static> Share<A> {
    fn split(cores: usize, report: A, done: impl FnOnce(A) + Send + 'static) -> Vec<Share<A>> {
        let gather = Arc::new(Mutex::new(Gather { report, done: Some(Box::new(done)) }));
        (0..cores).map(|_| Share { gather: Some(gather.clone()) }).collect()
    }

    /// Adds this core's part to the report.
    fn contribute(self, add: impl FnOnce(&mut A)) {
        if let Some(g) = &self.gather {
            add(&mut g.lock().expect("report across cores").report);
        }
    }
}

impl StageShare {
    /// Adds core `core`'s histograms since their last reset to the report
    /// (and its own rows where they were asked for), then resets them if
    /// asked (the cumulative ones, exported, never are).
    pub fn add(self, core: usize, hists: &mut CoreStages, reset: bool) {
        self.contribute(|(merged, cores)| {
            merged.merge(&hists.since_reset);
            if let Some(rows) = cores.get_mut(core) {
                *rows = hists.since_reset.summary();
            }
        });
        if reset {
            hists.reset();
        }
    }
}

impl MetricsShare {
    /// Puts core `core`'s registry in its place in the report.
    pub fn add(self, core: usize, metrics: Metrics) {
        self.contribute(|cores| cores[core] = Some(metrics));
    }
}

impl StagesByCoreShare {
    /// Puts core `core`'s cumulative histograms and a copy of its counts in its place in the report.
    pub fn add(self, core: usize, hists: &CoreStages, requests: &RequestCounts) {
        let cumulative = hists.cumulative();
        self.contribute(|cores| cores[core] = Some((cumulative, Box::new(requests.clone()))));
    }
}

impl<A> Drop for Share<A> {
    fn drop(&mut self) {
        // Exactly one share's drop gets the last reference.
        if let Some(g) = self.gather.take().and_then(Arc::into_inner) {
            let g = g.into_inner().expect("report across cores");
            if let Some(done) = g.done {
                done(g.report);
            }
        }
    }
}

impl<C: Codec> NetCore<C> {
    pub(super) fn on_control<I: Io>(&mut self, core: &mut TaskCore<'_, I>, now_ns: u64) {
        while let Ok(control) = self.control.try_recv() {
            match control {
                Control::Stop { drain, done } => self.begin_stop(core, now_ns + drain.as_nanos() as u64, done),
                Control::Stages { share, reset } => share.add(self.core_id, &mut self.stages, reset),
                Control::Metrics { share } => share.add(self.core_id, self.metrics_now(core)),
                Control::StagesByCore { share } => share.add(self.core_id, &self.stages, &self.requests),
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
