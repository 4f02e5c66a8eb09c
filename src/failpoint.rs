//! Failpoints: named moments at which a test can make the process die, to
//! prove that a crash exactly there loses nothing acknowledged.
//!
//! Compiled in only with the cargo feature `failpoints`; without it
//! [`failpoint!`](crate::failpoint!) expands to nothing (its arguments are
//! not even evaluated). With it, a failpoint that is not armed costs one
//! relaxed atomic load and a compare.
//!
//! Arming: `STROM_FAILPOINT=NAME` or `STROM_FAILPOINT=NAME:NTH`, read once,
//! by [`init`] (`strom serve` calls it at start) or else at the first
//! failpoint the process passes; an armed process says so on stderr
//! (`strom: failpoint NAME armed for hit NTH`). On the `NTH` hit (default 1)
//! of `NAME` (with its condition true) the process prints
//! `strom: failpoint NAME hit NTH, killing the process` to stderr and sends
//! itself SIGKILL: nothing after that moment runs, as with `kill -9`. With
//! `STROM_FAILPOINT=NAME:NTH:pause` the thread that hit it prints
//! `strom: failpoint NAME hit NTH, pausing` and stops there for good instead
//! (its core does nothing more), so that a test can cut the power at exactly
//! that moment and then kill the process. With `STROM_FAILPOINT=NAME:NTH:panic`
//! the thread panics there instead, as a bug would (`strom serve` must then
//! stop the whole process rather than run on with a dead core).
//!
//! The failpoints (see docs/TESTING.md, "Process crashes and failpoints"):
//! - `write_in_flight`: a commit's write was submitted in an earlier tick and
//!   its completion has not been processed (`Journal::plan`);
//! - `write_done_before_fsync`: a write completed, no fdatasync covers it
//!   yet (`Journal::on_write`);
//! - `fsync_done_before_ack`: an fdatasync completed, the commits it made
//!   durable are not retired or acknowledged yet (`Journal::on_fsync`);
//! - `roll_before_dir_sync`: a new segment file was created, its directory
//!   not yet fsynced (`Journal::roll`);
//! - `checkpoint_before_rename`: a checkpoint's temp file was written and
//!   fsynced, not yet renamed over `checkpoint` (`fs::write_file_atomic`);
//! - `journal_write_result`, `journal_fsync_result`: a log's write or
//!   fdatasync completed (`Journal::on_completion`). With the action `eio`
//!   (`STROM_FAILPOINT=journal_fsync_result:1:eio`) the process lives on and
//!   that completion is taken as failed with EIO, as a dying disk would
//!   fail it: the log fails (stops acknowledging, `/health` says 503).

/// The names a test may arm; arming any other name is refused at the first hit.
pub const NAMES: [&str; 7] = [
    "write_in_flight",
    "write_done_before_fsync",
    "fsync_done_before_ack",
    "roll_before_dir_sync",
    "checkpoint_before_rename",
    "journal_write_result",
    "journal_fsync_result",
];

/// Marks a failpoint: `failpoint!("name")`, or `failpoint!("name", cond)`
/// where `cond` is evaluated only when a failpoint is armed.
#[cfg(feature = "failpoints")]
#[macro_export]
macro_rules! failpoint {
    ($name:literal) => {
        $crate::failpoint!($name, true)
    };
    ($name:literal, $cond:expr) => {
        if $crate::failpoint::armed() && $cond {
            $crate::failpoint::hit($name);
        }
    };
}

/// Without the `failpoints` feature a failpoint is nothing at all.
#[cfg(not(feature = "failpoints"))]
#[macro_export]
macro_rules! failpoint {
    ($name:literal) => {};
    ($name:literal, $cond:expr) => {};
}

/// An I/O result a failpoint may fail: `failpoint_result!("name", result)`
/// is `result`, or `Err(EIO)` on the armed hit of `name` with the action
/// `eio` (any other action acts as [`failpoint!`] does).
#[cfg(feature = "failpoints")]
#[macro_export]
macro_rules! failpoint_result {
    ($name:literal, $result:expr) => {
        if $crate::failpoint::armed() && $crate::failpoint::fails($name) { Err(libc::EIO) } else { $result }
    };
}

/// Without the `failpoints` feature the result as it is.
#[cfg(not(feature = "failpoints"))]
#[macro_export]
macro_rules! failpoint_result {
    ($name:literal, $result:expr) => {
        $result
    };
}

#[cfg(feature = "failpoints")]
mod armed {
    use std::sync::OnceLock;
    use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};

    const UNKNOWN: u8 = 0;
    const DISARMED: u8 = 1;
    const ARMED: u8 = 2;

    static STATE: AtomicU8 = AtomicU8::new(UNKNOWN);
    /// What the armed failpoint does on its hit.
    #[derive(Clone, Copy, PartialEq, Eq)]
    enum Action {
        Kill,
        Pause,
        Panic,
        /// Live on; the I/O result at the failpoint becomes EIO.
        Eio,
    }

    /// The armed name, the hit to act on, and what to do then.
    static TARGET: OnceLock<Option<(String, u64, Action)>> = OnceLock::new();
    static HITS: AtomicU64 = AtomicU64::new(0);

    /// The fast path: one relaxed load once the environment was read.
    #[inline(always)]
    pub fn armed() -> bool {
        match STATE.load(Ordering::Relaxed) {
            DISARMED => false,
            ARMED => true,
            _ => init(),
        }
    }

    #[cold]
    fn init() -> bool {
        let target = TARGET.get_or_init(|| {
            let spec = std::env::var("STROM_FAILPOINT").ok()?;
            let mut parts = spec.split(':');
            let name = parts.next().unwrap_or_default();
            let nth =
                parts.next().map_or(1, |n| n.parse::<u64>().unwrap_or_else(|_| panic!("STROM_FAILPOINT={spec}: NTH is not a number")));
            let action = match parts.next() {
                None | Some("kill") => Action::Kill,
                Some("pause") => Action::Pause,
                Some("panic") => Action::Panic,
                Some("eio") => Action::Eio,
                Some(other) => panic!("STROM_FAILPOINT={spec}: the action {other:?} is not kill, pause, panic or eio"),
            };
            assert!(super::NAMES.contains(&name), "STROM_FAILPOINT={spec}: no failpoint is named {name}; the names: {:?}", super::NAMES);
            eprintln!("strom: failpoint {name} armed for hit {nth}");
            Some((name.to_string(), nth.max(1), action))
        });
        let armed = target.is_some();
        STATE.store(if armed { ARMED } else { DISARMED }, Ordering::Relaxed);
        armed
    }

    /// A failpoint on an I/O result: true on the armed name's nth hit with
    /// the action `eio` (that result is then EIO); any other action is taken
    /// as at [`hit`].
    #[cold]
    pub fn fails(name: &'static str) -> bool {
        match TARGET.get() {
            Some(Some((target, nth, Action::Eio))) if target == name => {
                let n = HITS.fetch_add(1, Ordering::Relaxed) + 1;
                if n == *nth {
                    eprintln!("strom: failpoint {name} hit {n}, failing it with EIO");
                }
                n == *nth
            }
            _ => {
                hit(name);
                false
            }
        }
    }

    /// A failpoint whose condition held: dies on the armed name's nth hit.
    #[cold]
    pub fn hit(name: &'static str) {
        let Some(Some((target, nth, action))) = TARGET.get() else { return };
        if target != name || *action == Action::Eio {
            return;
        }
        let n = HITS.fetch_add(1, Ordering::Relaxed) + 1;
        if n == *nth && *action == Action::Panic {
            panic!("strom: failpoint {name} hit {n}, panicking");
        }
        if n == *nth && *action == Action::Pause {
            eprintln!("strom: failpoint {name} hit {n}, pausing");
            loop {
                std::thread::park();
            }
        }
        if n == *nth {
            eprintln!("strom: failpoint {name} hit {n}, killing the process");
            let _ = nix::sys::signal::kill(nix::unistd::getpid(), nix::sys::signal::Signal::SIGKILL);
            // SIGKILL cannot be caught; should the kill fail, abort still
            // ends the process without running anything else of ours.
            std::process::abort();
        }
    }
}

#[cfg(feature = "failpoints")]
pub use armed::{armed, fails, hit};

/// Reads `STROM_FAILPOINT` now, so that an armed process says so before it
/// serves. Without the feature it warns when the variable is set, since
/// nothing will happen.
pub fn init() {
    #[cfg(feature = "failpoints")]
    armed::armed();
    #[cfg(not(feature = "failpoints"))]
    if let Ok(spec) = std::env::var("STROM_FAILPOINT") {
        eprintln!("strom: STROM_FAILPOINT={spec} is ignored: this binary was built without the failpoints feature");
    }
}
