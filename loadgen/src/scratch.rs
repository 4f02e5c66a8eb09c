//! loadgen's temporary data directory, removed on every way out: a normal
//! end, an error, a refused start, a panic (by `Drop`), and SIGINT or
//! SIGTERM (by a thread that waits for them). Without this a run stopped
//! with Ctrl-C left its gigabytes behind in the temporary directory.
use std::path::{Path, PathBuf};

use nix::sys::signal::{SigSet, Signal};

/// Removes its directory when dropped, or when the process is told to stop.
pub struct Scratch {
    dir: PathBuf,
}

impl Scratch {
    /// Takes charge of `dir`. Blocks SIGINT and SIGTERM in this thread, so
    /// that every thread started after it (the broker's cores, loadgen's
    /// workers) inherits the mask and only the waiting thread receives
    /// them; call it before starting any thread that outlives the call.
    pub fn guard(dir: PathBuf) -> Result<Scratch, String> {
        let mut signals = SigSet::empty();
        signals.add(Signal::SIGINT);
        signals.add(Signal::SIGTERM);
        signals.thread_block().map_err(|e| format!("cannot block SIGINT and SIGTERM: {e}"))?;
        let on_signal = dir.clone();
        std::thread::Builder::new()
            .name("loadgen-signals".into())
            .spawn(move || {
                if let Ok(signal) = signals.wait() {
                    remove(&on_signal);
                    eprintln!("loadgen: stopped by {signal}; removed {}", on_signal.display());
                    // The shell's convention for a death by signal.
                    std::process::exit(128 + signal as i32);
                }
            })
            .map_err(|e| format!("cannot start the signal thread: {e}"))?;
        Ok(Scratch { dir })
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        remove(&self.dir);
    }
}

/// Removes `dir` and everything in it. A core still running may create a
/// file while the tree is walked (on a signal), so a failure is retried a
/// few times; absence is success.
fn remove(dir: &Path) {
    const ATTEMPTS_MAX: usize = 5;
    for attempt in 1..=ATTEMPTS_MAX {
        match std::fs::remove_dir_all(dir) {
            Ok(()) => return,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return,
            Err(e) if attempt == ATTEMPTS_MAX => eprintln!("loadgen: could not remove {}: {e}", dir.display()),
            Err(_) => std::thread::sleep(std::time::Duration::from_millis(20)),
        }
    }
}
