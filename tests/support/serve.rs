//! A real `strom serve` child process for tests that cut power, fill the
//! disk or cap memory under it. Its stderr is collected (the server says
//! there why it stops acknowledging); it is killed if the test ends without
//! stopping it.
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, ExitStatus};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use strom::client::Client;

#[path = "../common/child.rs"]
mod child;

pub struct Serve {
    child: Child,
    pub addr: SocketAddr,
    /// Every line the server printed, with when the test read it.
    stderr: Arc<Mutex<Vec<(Instant, String)>>>,
}

impl Serve {
    /// Starts `strom serve` on `dir` with `extra` arguments. With `cgroup_procs`
    /// (paths of `cgroup.procs` files), a shell joins those cgroups first and
    /// then execs the server, so every byte it allocates is charged there.
    pub fn start(dir: &Path, extra: &[&str], cgroup_procs: &[&Path]) -> Serve {
        Serve::start_env(dir, extra, cgroup_procs, &[])
    }

    /// [`Serve::start`] with more environment variables (`RUST_LOG=info`
    /// makes it print what recovery scanned and cut).
    pub fn start_env(dir: &Path, extra: &[&str], cgroup_procs: &[&Path], envs: &[(&str, &str)]) -> Serve {
        let bin = env!("CARGO_BIN_EXE_strom");
        let mut args: Vec<String> =
            ["serve", "--data-dir", dir.to_str().unwrap(), "--listen", "127.0.0.1:0"].iter().map(|s| s.to_string()).collect();
        args.extend(extra.iter().map(|s| s.to_string()));
        let mut cmd = if cgroup_procs.is_empty() {
            let mut c = Command::new(bin);
            c.args(&args);
            c
        } else {
            let joins: String = cgroup_procs.iter().map(|p| format!("echo $$ > {} && ", p.display())).collect();
            let mut c = Command::new("sh");
            c.arg("-c").arg(format!("{joins}exec \"$0\" \"$@\"")).arg(bin).args(&args);
            c
        };
        cmd.envs(envs.iter().copied());
        let (child, addr, stderr) = child::spawn_until_serving(&mut cmd, |line| (Instant::now(), line));
        Serve { child, addr, stderr }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn client(&self) -> Client {
        let mut c = Client::connect_timeout(self.addr, Duration::from_secs(10)).unwrap();
        c.set_timeout(Some(Duration::from_secs(30))).unwrap();
        c
    }

    /// What the server printed so far.
    pub fn stderr(&self) -> Vec<String> {
        self.stderr.lock().unwrap().iter().map(|(_, l)| l.clone()).collect()
    }

    /// When the test read the first line containing `pat`, if it did.
    pub fn first_line_with(&self, pat: &str) -> Option<Instant> {
        self.stderr.lock().unwrap().iter().find(|(_, l)| l.contains(pat)).map(|(t, _)| *t)
    }

    /// The server still runs.
    pub fn alive(&mut self) -> bool {
        self.child.try_wait().unwrap().is_none()
    }

    /// SIGTERM; SIGKILL if it has not exited after `grace`. Returns its exit
    /// status (None when it had to be killed) and everything it printed.
    pub fn stop(mut self, grace: Duration) -> (Option<ExitStatus>, Vec<String>) {
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        let deadline = Instant::now() + grace;
        let status = loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                break Some(s);
            }
            if Instant::now() >= deadline {
                let _ = self.child.kill();
                self.child.wait().unwrap();
                break None;
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        // Let the reader thread collect the last lines.
        std::thread::sleep(Duration::from_millis(50));
        (status, self.stderr())
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
