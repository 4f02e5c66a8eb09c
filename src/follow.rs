//! The follow thread of a read-only engine (`strom serve --read-only`,
//! [`crate::Engine::open_read_only`]): how it learns what the writer, an
//! application with the embedded engine in another process, made durable.
//!
//! It watches the data directory and each log directory with inotify and
//! sleeps until the kernel reports a change; nothing polls. At each wake it
//! reads every log's durable mark (`log-NNNN/durable`, [`crate::log::mark`]:
//! the writer rewrites it after each fdatasync that moved the log's durable
//! position, never before), then the topics file if the writer replaced it,
//! and only then tells the cores: the topics first (the broker waits until
//! the cores hold a new topic's partitions), then each mark that moved. The
//! order matters: a batch below a mark was appended after its topic was
//! created, so a catalog read after the mark knows every topic the mark's
//! batches need. The cores scan up to the mark and no further
//! (`core/follow.rs`): a commit written but not yet synced, or torn by a
//! kill, lies past it and is never served.
//!
//! A wake-up once a second with no event re-reads the same files: a safety
//! net for an inotify queue overflow or a log directory created after the
//! follower started (its watch is added then), cheap next to a busy loop.
use std::collections::HashMap;
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::thread::JoinHandle;

use nix::sys::epoll::{Epoll, EpollCreateFlags, EpollEvent, EpollFlags};
use nix::sys::eventfd::{EfdFlags, EventFd};
use nix::sys::inotify::{AddWatchFlags, InitFlags, Inotify};

use crate::broker::Broker;
use crate::catalog::Catalog;
use crate::error::{IoOp, Result, StromError};
use crate::log::mark::{self, DurableMark};
use crate::log::segment::log_dir;

/// The longest the thread sleeps without an event.
const SAFETY_WAKE_MS: u16 = 1000;
const TOKEN_INOTIFY: u64 = 1;
const TOKEN_STOP: u64 = 2;
/// The topics file's name in the data directory (`catalog.rs`).
const TOPICS_FILE: &str = "topics";

/// The running follow thread; stopped (and joined) by [`Follower::stop`].
pub(crate) struct Follower {
    stop: Arc<EventFd>,
    thread: Option<JoinHandle<()>>,
}

impl Follower {
    /// Starts following `dir` for `broker`'s cores, whose logs were opened
    /// up to `opened_at` (the marks read before the catalog): anything
    /// newer is sent on, after the topics are read again.
    pub(crate) fn start(dir: &Path, opened_at: &HashMap<u32, DurableMark>, log_count: u32, broker: Arc<Broker>) -> Result<Follower> {
        let err = |what: &str, e: nix::Error| StromError::Io { op: IoOp::Open, path: PathBuf::from(what), errno: e as i32 };
        let inotify = Inotify::init(InitFlags::IN_NONBLOCK | InitFlags::IN_CLOEXEC).map_err(|e| err("inotify_init1", e))?;
        let stop = Arc::new(EventFd::from_flags(EfdFlags::EFD_NONBLOCK | EfdFlags::EFD_CLOEXEC).map_err(|e| err("eventfd", e))?);
        let epoll = Epoll::new(EpollCreateFlags::EPOLL_CLOEXEC).map_err(|e| err("epoll_create1", e))?;
        epoll.add(inotify.as_fd(), EpollEvent::new(EpollFlags::EPOLLIN, TOKEN_INOTIFY)).map_err(|e| err("epoll_ctl", e))?;
        epoll.add(stop.as_fd(), EpollEvent::new(EpollFlags::EPOLLIN, TOKEN_STOP)).map_err(|e| err("epoll_ctl", e))?;
        let mut watch = Watch { dir: dir.to_path_buf(), inotify, watched: vec![false; log_count as usize], dir_watched: false };
        watch.add_missing();
        // The topics are read again at the first catch-up whatever they
        // are (a topic may have come since the engine read them).
        let state = Followed { sent: (0..log_count).map(|log| (log, opened_at.get(&log).copied())).collect(), topics: None };
        let thread = std::thread::Builder::new()
            .name("strom-follow".into())
            .spawn(move || run(watch, state, epoll, broker))
            .map_err(|e| StromError::io(IoOp::Create, "thread", &e))?;
        Ok(Follower { stop, thread: Some(thread) })
    }

    /// Stops the thread and waits for it.
    pub(crate) fn stop(&mut self) {
        let _ = self.stop.write(1);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Follower {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The watches: the data directory, and each log directory once it exists.
struct Watch {
    dir: PathBuf,
    inotify: Inotify,
    watched: Vec<bool>,
    dir_watched: bool,
}

impl Watch {
    fn add_missing(&mut self) {
        use AddWatchFlags as F;
        if !self.dir_watched {
            // The topics file is replaced by a rename; log directories are created.
            self.dir_watched = self.inotify.add_watch(&self.dir, F::IN_MOVED_TO | F::IN_CLOSE_WRITE | F::IN_CREATE).is_ok();
        }
        for (log, w) in self.watched.iter_mut().enumerate() {
            if !*w {
                // The mark is written in place (IN_MODIFY) or created (IN_CREATE).
                let flags = F::IN_MODIFY | F::IN_CREATE | F::IN_MOVED_TO | F::IN_CLOSE_WRITE;
                *w = self.inotify.add_watch(&log_dir(&self.dir, log as u32), flags).is_ok();
            }
        }
    }

    /// Drains the events; true if one names a file the follower reads (or
    /// the queue overflowed: then anything may have changed).
    fn drain(&mut self) -> bool {
        let mut relevant = false;
        while let Ok(events) = self.inotify.read_events() {
            if events.is_empty() {
                break;
            }
            for e in events {
                let name = e.name.as_ref().and_then(|n| n.to_str());
                relevant |= e.mask.contains(AddWatchFlags::IN_Q_OVERFLOW)
                    || matches!(name, Some(n) if n == mark::FILE_NAME || n == TOPICS_FILE || n.starts_with("log-"));
            }
        }
        relevant
    }
}

/// What the cores were told last.
struct Followed {
    sent: HashMap<u32, Option<DurableMark>>,
    topics: Option<Vec<u8>>,
}

fn run(mut watch: Watch, mut state: Followed, epoll: Epoll, broker: Arc<Broker>) {
    let mut events = [EpollEvent::empty(); 2];
    loop {
        if let Err(e) = catch_up(&watch.dir, &mut state, &broker) {
            // A stopping engine's cores refuse: the stop is on its way.
            tracing::debug!(%e, "follow thread stops");
            return;
        }
        let n = match epoll.wait(&mut events, SAFETY_WAKE_MS) {
            Ok(n) => n,
            Err(nix::Error::EINTR) => continue,
            Err(e) => {
                tracing::error!(%e, "follow thread: epoll_wait failed; the follower no longer sees new data");
                return;
            }
        };
        if events[..n].iter().any(|e| e.data() == TOKEN_STOP) {
            return;
        }
        if n == 0 {
            watch.add_missing();
            continue;
        }
        if !watch.drain() {
            // Only segment writes and the like: nothing the follower reads changed.
            continue;
        }
        watch.add_missing();
    }
}

/// Reads the marks, then the topics, and tells the cores what moved.
fn catch_up(dir: &Path, state: &mut Followed, broker: &Broker) -> Result<()> {
    let marks: Vec<(u32, Option<DurableMark>)> = state.sent.keys().map(|&log| (log, read_mark(dir, log))).collect();
    let topics = std::fs::read(dir.join(TOPICS_FILE)).ok();
    if topics.is_some() && topics != state.topics {
        match Catalog::open_read_only(dir) {
            Ok(cat) => {
                broker.follow_catalog(cat)?;
                state.topics = topics;
            }
            // Caught between the writer's write and its rename (cannot
            // happen with rename, but a damaged file must not stop the
            // follower): tried again at the next event.
            Err(e) => tracing::warn!(%e, "the writer's topics file does not read; kept the topics as they were"),
        }
    }
    for (log, mark) in marks {
        let Some(m) = mark else { continue };
        let last = state.sent.get(&log).copied().flatten();
        if last == Some(m) || last.is_some_and(|l| m.epoch < l.epoch) {
            continue;
        }
        broker.follow_mark(log, m)?;
        state.sent.insert(log, Some(m));
    }
    Ok(())
}

/// The log's durable mark if there is an intact one.
pub(crate) fn read_mark(dir: &Path, log: u32) -> Option<DurableMark> {
    std::fs::read(log_dir(dir, log).join(mark::FILE_NAME)).ok().and_then(|b| DurableMark::decode(&b))
}
