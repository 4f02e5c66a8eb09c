//! The whole server on simulated cores: the broker, the connections and
//! the native codec of production, each core a [`Core<SimIo>`] on a
//! simulated disk, all of them on one [`SimNet`], ticked in turn on the
//! caller's thread by the same [`Ticker`] production runs. So framing,
//! routing between cores, acknowledgements and stop run under seeds, and a
//! seed can cut the power in the middle of any request.
//!
//! Core `i` listens on port [`SimServer::port`]`(i)`; a client that
//! connects to one core and names another's partition is forwarded, as in
//! production. Topic administration runs on the admin thread as in
//! production, so seeds create their topics in the catalog before start.
use std::path::Path;
use std::sync::{Arc, mpsc};

use super::codec::Codec;
use super::listen::ListenSock;
use super::native::NativeCodec;
use super::task::{NetCore, TaskParts};
use super::{ServerConfig, Shared};
use crate::broker::admin::Admin;
use crate::broker::{Broker, Dispatcher, Router};
use crate::catalog::Catalog;
use crate::config::EngineConfig;
use crate::core::mailbox::{self, ChannelMailbox};
use crate::core::tick::Ticker;
use crate::core::{Core, CoreSpec, Request};
use crate::error::{Result, StromError};
use crate::io::Waker;
use crate::io::sim::{SimDisk, SimFaults, SimIo, SimNet, SimRng};
use crate::log::recovery::RecoveryReport;

/// How long a stopping server waits for its connections' requests (virtual).
const STOP_DRAIN: std::time::Duration = std::time::Duration::from_secs(10);
/// The first core's port; core `i` listens on `BASE_PORT + i`.
const BASE_PORT: u16 = 7000;

struct NoWake;
impl Waker for NoWake {
    fn wake(&self) {}
}

/// One simulated core: the core, its tick (with the server task), its mailbox.
struct SimCore {
    core: Core<SimIo>,
    ticker: Ticker<SimIo>,
    mailbox: ChannelMailbox<SimIo>,
}

/// A server of `disks.len()` simulated cores.
pub struct SimServer {
    cores: Vec<SimCore>,
    net: SimNet,
    admin: Arc<Admin>,
    shared: Arc<Shared>,
}

/// Ticks a clean stop may take before it is called a hang (virtual time).
const STOP_TICKS_MAX: usize = 1_000_000;

impl SimServer {
    /// Opens the catalog in `catalog_dir` (a real directory: topics and
    /// committed offsets), recovers every core's logs from its disk and
    /// starts serving on a fresh network. One disk per core, in core order.
    pub fn start(
        catalog_dir: &Path,
        disks: Vec<SimDisk>,
        seed: u64,
        engine_cfg: EngineConfig,
        cfg: ServerConfig,
    ) -> Result<(SimServer, Vec<RecoveryReport>)> {
        cfg.validate()?;
        let cores = disks.len();
        let catalog = Catalog::open_or_create(catalog_dir, engine_cfg.logs_on_create)?;
        let router = Router::new(catalog.log_count(), cores);
        let needs = cfg.task_needs(cores);
        let engine_cfg = EngineConfig { cores, ..engine_cfg };
        let net = SimNet::new();
        let pids = catalog.pids();
        let mut opened = Vec::new();
        let mut reports = Vec::new();
        for (core_id, disk) in disks.into_iter().enumerate() {
            let mut io = SimIo::new(disk, seed.wrapping_add(core_id as u64), SimFaults::default()).with_net(net.clone());
            let listener = io.listen(SimServer::port(core_id))?;
            let logs = router.logs_of(core_id);
            let spec = CoreSpec {
                core_id,
                data_dir: "/sim/data".into(),
                log_count: router.log_count(),
                pids: pids.iter().copied().filter(|&p| router.core_of(p) == core_id).collect(),
                logs,
                indexed: Default::default(),
                needs,
                marks: Default::default(),
            };
            let (core, r) = Core::open(io, engine_cfg.clone(), spec)?;
            reports.extend(r);
            opened.push((core, listener));
        }
        let mut routes = Vec::new();
        let mut mailboxes = Vec::new();
        for _ in 0..cores {
            let (route, _tasks, mailbox) = mailbox::channel::<SimIo>(engine_cfg.mailbox_capacity, Arc::new(NoWake));
            routes.push(route);
            mailboxes.push(mailbox);
        }
        let broker = Arc::new(Broker::new(router, catalog, routes, &engine_cfg));
        let admin = Admin::start(broker.clone(), catalog_dir)?;
        let (inboxes, inbox_rxs): (Vec<_>, Vec<_>) = (0..cores).map(|_| mpsc::channel()).unzip();
        let (controls, control_rxs): (Vec<_>, Vec<_>) = (0..cores).map(|_| mpsc::channel()).unzip();
        let shared = Arc::new(Shared::new(cfg, broker.clone(), inboxes, controls));
        let core_addrs: Arc<[String]> = (0..cores).map(|c| format!("sim:{}", SimServer::port(c))).collect::<Vec<_>>().into();
        let mut sim_cores = Vec::new();
        let per_core = opened.into_iter().zip(mailboxes).zip(inbox_rxs.into_iter().zip(control_rxs));
        for (core_id, (((core, listener), mailbox), (inbox, control))) in per_core.enumerate() {
            let codec = NativeCodec;
            let budget = shared.reply_budget();
            let dispatcher = Dispatcher::new(core_id, broker.clone(), admin.clone(), core_addrs.clone(), codec.fetch_headroom())
                .with_reply_budget(budget.clone());
            let parts = TaskParts { inbox, control, listeners: vec![(ListenSock::InRing(listener), 0)], broker: dispatcher, budget };
            let task = NetCore::new(core_id, vec![codec], shared.clone(), parts);
            sim_cores.push(SimCore { core, ticker: Ticker { task: Some(Box::new(task)) }, mailbox });
        }
        Ok((SimServer { cores: sim_cores, net, admin, shared }, reports))
    }

    /// Where core `core` listens on [`SimServer::net`].
    pub fn port(core: usize) -> u16 {
        BASE_PORT + core as u16
    }

    /// The network the server's clients connect through.
    pub fn net(&self) -> &SimNet {
        &self.net
    }

    /// Core 0's virtual clock, in ns.
    pub fn now_ns(&self) -> u64 {
        use crate::io::Io;
        self.cores[0].core.io.now_ns()
    }

    pub fn cores(&self) -> usize {
        self.cores.len()
    }

    /// One tick of every core, in core order.
    pub fn tick(&mut self) -> Result<()> {
        for c in &mut self.cores {
            if c.ticker.tick(&mut c.core, &mut c.mailbox)? {
                return Err(StromError::ShuttingDown);
            }
        }
        Ok(())
    }

    /// The sum of every core's invariant audits (0 unless one was broken).
    pub fn audit_violations(&self) -> u64 {
        self.cores.iter().map(|c| c.core.metrics().audit_violations()).sum()
    }

    /// A clean stop, as `Server::stop` does it: every core's server task
    /// stops accepting, answers what is in flight and closes its
    /// connections; then every core makes its appends durable, checkpoints
    /// its logs and stops. The disks as the next start finds them.
    pub fn stop(mut self) -> Result<Vec<SimDisk>> {
        let waits = self.shared.stop_tasks(STOP_DRAIN);
        let mut ticks = 0;
        let mut stopped = vec![false; waits.len()];
        loop {
            for (w, s) in waits.iter().zip(&mut stopped) {
                // Answered, or the task is gone: either way it stopped.
                *s |= !matches!(w.try_recv(), Err(mpsc::TryRecvError::Empty));
            }
            if stopped.iter().all(|&s| s) {
                break;
            }
            self.tick()?;
            ticks += 1;
            if ticks > STOP_TICKS_MAX {
                return Err(StromError::Unsupported("the simulated server did not stop its connections".into()));
            }
        }
        for (core, c) in self.cores.iter_mut().enumerate() {
            self.shared.broker.route(core).send(Request::Stop { reply: Box::new(|_| ()) })?;
            let mut ticks = 0;
            while !c.ticker.tick(&mut c.core, &mut c.mailbox)? {
                ticks += 1;
                if ticks > STOP_TICKS_MAX {
                    return Err(StromError::Unsupported(format!("simulated core {core} did not stop")));
                }
            }
        }
        Ok(std::mem::take(&mut self.cores).into_iter().map(|c| c.core.into_io().process_exit()).collect())
    }

    /// A power cut: every core's disk as the next boot finds it.
    pub fn crash(mut self, rng: &mut SimRng) -> Vec<SimDisk> {
        std::mem::take(&mut self.cores).into_iter().map(|c| c.core.into_io().crash(rng)).collect()
    }

    /// The process is killed: the page cache survives.
    pub fn kill(mut self) -> Vec<SimDisk> {
        std::mem::take(&mut self.cores).into_iter().map(|c| c.core.into_io().process_exit()).collect()
    }
}

impl Drop for SimServer {
    fn drop(&mut self) {
        self.admin.stop();
    }
}
