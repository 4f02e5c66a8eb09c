//! A memory limit and a write-bandwidth throttle for one child process,
//! through cgroups: v1 (`memory` and `blkio` hierarchies, as on the
//! development and CI machines) or, where those are missing, v2 with the
//! `memory` and `io` controllers. The child joins with [`Limits::procs_files`]
//! (see `Serve::start`). Removed in `Drop` once empty.
use std::path::{Path, PathBuf};
use std::time::Duration;

const V1: &str = "/sys/fs/cgroup";
const V2: &str = "/sys/fs/cgroup/unified";

enum Kind {
    V1 { memory: PathBuf, blkio: PathBuf },
    V2 { dir: PathBuf },
}

pub struct Limits {
    kind: Kind,
}

fn write(path: &Path, value: &str) -> Result<(), String> {
    std::fs::write(path, value).map_err(|e| format!("writing {value:?} to {}: {e}", path.display()))
}

fn v2_has(controllers: &[&str]) -> bool {
    let have = std::fs::read_to_string(Path::new(V2).join("cgroup.controllers")).unwrap_or_default();
    controllers.iter().all(|c| have.split_whitespace().any(|h| h == *c))
}

impl Limits {
    /// A new cgroup named `name` (made unique per test process) capping
    /// memory at `memory_bytes`.
    pub fn new(name: &str, memory_bytes: u64) -> Result<Limits, String> {
        let unique = format!("{name}-{}", std::process::id());
        let v1_memory = Path::new(V1).join("memory");
        let v1_blkio = Path::new(V1).join("blkio");
        let kind = if v1_memory.join("memory.limit_in_bytes").exists() && v1_blkio.join("blkio.throttle.write_bps_device").exists() {
            let (memory, blkio) = (v1_memory.join(&unique), v1_blkio.join(&unique));
            for d in [&memory, &blkio] {
                std::fs::create_dir_all(d).map_err(|e| format!("creating cgroup {}: {e}", d.display()))?;
            }
            Kind::V1 { memory, blkio }
        } else if v2_has(&["memory", "io"]) {
            let dir = Path::new(V2).join(&unique);
            std::fs::create_dir_all(&dir).map_err(|e| format!("creating cgroup {}: {e}", dir.display()))?;
            Kind::V2 { dir }
        } else {
            return Err("no cgroup v1 memory+blkio hierarchies and no cgroup v2 memory+io controllers".into());
        };
        let limits = Limits { kind };
        match &limits.kind {
            Kind::V1 { memory, .. } => {
                // No swap here, but cap memory+swap too where it is accounted.
                write(&memory.join("memory.limit_in_bytes"), &memory_bytes.to_string())?;
                let _ = write(&memory.join("memory.memsw.limit_in_bytes"), &memory_bytes.to_string());
            }
            Kind::V2 { dir } => write(&dir.join("memory.max"), &memory_bytes.to_string())?,
        }
        Ok(limits)
    }

    /// The `cgroup.procs` files a process writes its pid to, to join.
    pub fn procs_files(&self) -> Vec<PathBuf> {
        match &self.kind {
            Kind::V1 { memory, blkio } => vec![memory.join("cgroup.procs"), blkio.join("cgroup.procs")],
            Kind::V2 { dir } => vec![dir.join("cgroup.procs")],
        }
    }

    /// Throttles writes to block device `major_minor` to `bytes_per_s`
    /// (0 lifts the throttle).
    pub fn throttle_writes(&self, major_minor: &str, bytes_per_s: u64) -> Result<(), String> {
        match &self.kind {
            Kind::V1 { blkio, .. } => write(&blkio.join("blkio.throttle.write_bps_device"), &format!("{major_minor} {bytes_per_s}")),
            Kind::V2 { dir } => {
                let v = if bytes_per_s == 0 { "max".to_string() } else { bytes_per_s.to_string() };
                write(&dir.join("io.max"), &format!("{major_minor} wbps={v}"))
            }
        }
    }

    /// Times the kernel's OOM killer killed a process of this cgroup.
    pub fn oom_kills(&self) -> u64 {
        let (file, key) = match &self.kind {
            Kind::V1 { memory, .. } => (memory.join("memory.oom_control"), "oom_kill"),
            Kind::V2 { dir } => (dir.join("memory.events"), "oom_kill"),
        };
        let text = std::fs::read_to_string(&file).unwrap_or_default();
        text.lines().find_map(|l| l.strip_prefix(key).and_then(|v| v.trim().parse().ok())).unwrap_or(0)
    }

    /// The highest memory use of the cgroup so far, in bytes, where the
    /// kernel keeps it (v1 `memory.max_usage_in_bytes`, v2 `memory.peak`).
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
            Kind::V1 { memory, .. } => std::fs::read_to_string(memory.join("memory.failcnt")).ok().and_then(|s| s.trim().parse().ok()),
            Kind::V2 { dir } => std::fs::read_to_string(dir.join("memory.events"))
                .ok()
                .and_then(|t| t.lines().find_map(|l| l.strip_prefix("max ").and_then(|v| v.trim().parse().ok()))),
        }
        .unwrap_or(0)
    }
}

impl Drop for Limits {
    fn drop(&mut self) {
        let dirs = match &self.kind {
            Kind::V1 { memory, blkio } => vec![memory.clone(), blkio.clone()],
            Kind::V2 { dir } => vec![dir.clone()],
        };
        for d in dirs {
            // The child may still be exiting: a cgroup is removable once empty.
            for _ in 0..50 {
                if std::fs::remove_dir(&d).is_ok() || !d.exists() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    }
}
