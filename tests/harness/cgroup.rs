//! A memory cap, and if asked a write-bandwidth throttle, for one child
//! process, through cgroups: v1 (the `memory` and `blkio` hierarchies, as on
//! the development and CI machines) or, where those are missing, v2 (the
//! `memory` and `io` controllers). The child joins through
//! `ServeCmd::cgroup`: a shell writes its pid to each `cgroup.procs` file,
//! then execs the server, so every byte the server allocates is charged
//! here. Removed in `Drop` once empty. Needs root.
use std::path::{Path, PathBuf};
use std::time::Duration;

const V1: &str = "/sys/fs/cgroup";
const V2_ROOTS: [&str; 2] = ["/sys/fs/cgroup", "/sys/fs/cgroup/unified"];

enum Kind {
    V1 { memory: PathBuf, blkio: Option<PathBuf> },
    V2 { dir: PathBuf },
}

pub struct Limits {
    kind: Kind,
}

fn write(path: &Path, value: &str) -> Result<(), String> {
    std::fs::write(path, value).map_err(|e| format!("writing {value:?} to {}: {e}", path.display()))
}

/// The first number in `file` after `key` at the start of a line ("" for
/// a file that holds only the number); 0 if there is none.
fn read_key(file: &Path, key: &str) -> u64 {
    let text = std::fs::read_to_string(file).unwrap_or_default();
    text.lines().find_map(|l| l.strip_prefix(key).and_then(|v| v.trim().parse().ok())).unwrap_or(0)
}

/// This process's own cgroup in the v1 hierarchy of `controller`.
fn own_v1_path(controller: &str) -> String {
    let own = std::fs::read_to_string("/proc/self/cgroup").unwrap_or_default();
    own.lines()
        .find_map(|l| {
            let mut fields = l.splitn(3, ':');
            let (_, controllers, path) = (fields.next()?, fields.next()?, fields.next()?);
            controllers.split(',').any(|c| c == controller).then(|| path.trim_start_matches('/').to_string())
        })
        .unwrap_or_default()
}

/// Creates `unique` in the v1 hierarchy of `controller`: under this
/// process's own cgroup when it may nest there (so the child also stays
/// within whatever limits the test runs under), else under the root.
fn create_v1(controller: &str, unique: &str) -> Result<PathBuf, String> {
    let root = Path::new(V1).join(controller);
    for parent in [root.join(own_v1_path(controller)), root.clone()] {
        let dir = parent.join(unique);
        match std::fs::create_dir(&dir) {
            Ok(()) => return Ok(dir),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => return Ok(dir),
            Err(_) => {}
        }
    }
    Err(format!("cannot create a {controller} cgroup under {} (not root?)", root.display()))
}

impl Limits {
    /// A new cgroup named after `name` (made unique per test process)
    /// capping memory, swap included, at `memory_bytes`.
    pub fn memory(name: &str, memory_bytes: u64) -> Result<Limits, String> {
        Limits::new(name, memory_bytes, false)
    }

    /// [`Limits::memory`] that can also throttle writes
    /// ([`Limits::throttle_writes`]).
    pub fn memory_and_io(name: &str, memory_bytes: u64) -> Result<Limits, String> {
        Limits::new(name, memory_bytes, true)
    }

    fn new(name: &str, memory_bytes: u64, io: bool) -> Result<Limits, String> {
        let unique = format!("{name}-{}", std::process::id());
        let v1 = Path::new(V1);
        let v1_memory = v1.join("memory/memory.limit_in_bytes").exists();
        let v1_blkio = v1.join("blkio/blkio.throttle.write_bps_device").exists();
        if v1_memory && (v1_blkio || !io) {
            let memory = create_v1("memory", &unique)?;
            // From here on Drop removes what was made, if a later step fails.
            let mut limits = Limits { kind: Kind::V1 { memory: memory.clone(), blkio: None } };
            if io {
                let blkio = create_v1("blkio", &unique)?;
                limits.kind = Kind::V1 { memory: memory.clone(), blkio: Some(blkio) };
            }
            write(&memory.join("memory.limit_in_bytes"), &memory_bytes.to_string())?;
            // No swap here, but cap memory+swap too where it is accounted.
            let _ = write(&memory.join("memory.memsw.limit_in_bytes"), &memory_bytes.to_string());
            return Ok(limits);
        }
        let wanted: &[&str] = if io { &["memory", "io"] } else { &["memory"] };
        for root in V2_ROOTS.map(Path::new) {
            let have = std::fs::read_to_string(root.join("cgroup.controllers")).unwrap_or_default();
            if !wanted.iter().all(|c| have.split_whitespace().any(|h| h == *c)) {
                continue;
            }
            // A root is exempt from "no processes in inner cgroups".
            for c in wanted {
                let _ = std::fs::write(root.join("cgroup.subtree_control"), format!("+{c}"));
            }
            let dir = root.join(&unique);
            std::fs::create_dir_all(&dir).map_err(|e| format!("creating cgroup {}: {e}", dir.display()))?;
            let limits = Limits { kind: Kind::V2 { dir: dir.clone() } };
            write(&dir.join("memory.max"), &memory_bytes.to_string())?;
            let _ = write(&dir.join("memory.swap.max"), "0");
            return Ok(limits);
        }
        Err(format!("no cgroup v1 hierarchies and no cgroup v2 controllers for {wanted:?}"))
    }

    /// The `cgroup.procs` files a process writes its pid to, to join.
    pub fn procs_files(&self) -> Vec<PathBuf> {
        match &self.kind {
            Kind::V1 { memory, blkio } => std::iter::once(memory).chain(blkio).map(|d| d.join("cgroup.procs")).collect(),
            Kind::V2 { dir } => vec![dir.join("cgroup.procs")],
        }
    }

    /// The directory holding the memory controller's files.
    pub fn memory_dir(&self) -> &Path {
        match &self.kind {
            Kind::V1 { memory, .. } => memory,
            Kind::V2 { dir } => dir,
        }
    }

    /// Whether process `pid` is in this cgroup (its memory controller).
    pub fn holds(&self, pid: u32) -> bool {
        let procs = std::fs::read_to_string(self.memory_dir().join("cgroup.procs")).unwrap_or_default();
        procs.lines().any(|l| l.trim() == pid.to_string())
    }

    /// Throttles writes to block device `major_minor` to `bytes_per_s`
    /// (0 lifts the throttle). Needs [`Limits::memory_and_io`].
    pub fn throttle_writes(&self, major_minor: &str, bytes_per_s: u64) -> Result<(), String> {
        match &self.kind {
            Kind::V1 { blkio: Some(blkio), .. } => {
                write(&blkio.join("blkio.throttle.write_bps_device"), &format!("{major_minor} {bytes_per_s}"))
            }
            Kind::V1 { blkio: None, .. } => Err("this cgroup has no blkio controller: make it with Limits::memory_and_io".into()),
            Kind::V2 { dir } => {
                let v = if bytes_per_s == 0 { "max".to_string() } else { bytes_per_s.to_string() };
                write(&dir.join("io.max"), &format!("{major_minor} wbps={v}"))
            }
        }
    }

    /// Times the kernel's OOM killer killed a process of this cgroup.
    pub fn oom_kills(&self) -> u64 {
        match &self.kind {
            Kind::V1 { memory, .. } => read_key(&memory.join("memory.oom_control"), "oom_kill "),
            Kind::V2 { dir } => read_key(&dir.join("memory.events"), "oom_kill "),
        }
    }

    /// The highest memory use of the cgroup so far (page cache and kernel
    /// memory included), where the kernel keeps it (v1
    /// `memory.max_usage_in_bytes`, v2 `memory.peak`).
    pub fn peak_bytes(&self) -> Option<u64> {
        let file = match &self.kind {
            Kind::V1 { memory, .. } => memory.join("memory.max_usage_in_bytes"),
            Kind::V2 { dir } => dir.join("memory.peak"),
        };
        std::fs::read_to_string(file).ok()?.trim().parse().ok()
    }

    /// Times memory use hit the limit (v1 `memory.failcnt`, v2 `max` events).
    pub fn limit_hits(&self) -> u64 {
        match &self.kind {
            Kind::V1 { memory, .. } => read_key(&memory.join("memory.failcnt"), ""),
            Kind::V2 { dir } => read_key(&dir.join("memory.events"), "max "),
        }
    }
}

impl Drop for Limits {
    fn drop(&mut self) {
        let dirs: Vec<PathBuf> = match &self.kind {
            Kind::V1 { memory, blkio } => std::iter::once(memory).chain(blkio).cloned().collect(),
            Kind::V2 { dir } => vec![dir.clone()],
        };
        for d in dirs {
            // The child may still be exiting: a cgroup is removable once empty.
            let removed = (0..50).any(|_| {
                let gone = std::fs::remove_dir(&d).is_ok() || !d.exists();
                if !gone {
                    std::thread::sleep(Duration::from_millis(100));
                }
                gone
            });
            if !removed {
                eprintln!("could not remove cgroup {}", d.display());
            }
        }
    }
}
