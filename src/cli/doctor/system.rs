//! The machine's checks: kernel, io_uring, seccomp, memlock, open files, CPUs.
use nix::sys::resource::{Resource, getrlimit};
use serde_json::json;
use strom::buf::registration::{CoreBuffers, RegistrationPlan};
use strom::config::EngineConfig;
use strom::io::uring::UringIo;
use strom::platform::{self, Lockable, human_bytes};
use strom::server::ServerConfig;

use super::Check;

/// The oldest kernel Strom supports, as `platform::KERNEL_NEEDED` says it
/// (a unit test keeps the two equal).
const KERNEL_MIN: (u32, u32) = (6, 1);

/// Lockable memory a server leaves to other rings of its user (a client's,
/// loadgen's, a second server's) once its limit is large: `engine.rs`'s
/// OTHERS_BYTES_MAX. A limit must cover it for every buffer to be registered.
const OTHERS_BYTES: usize = 16 << 20;

/// Descriptors a server needs beside its connections (logs, segments,
/// listeners, rings): `server/listen.rs`'s FDS_BESIDE_CONNECTIONS.
const FDS_BESIDE_CONNECTIONS: u64 = 256;

/// What a failed io_uring set-up asks of the operator, in order of likelihood.
const IO_URING_FIX: &str = "run `sysctl -w kernel.io_uring_disabled=0`; in a container, allow io_uring_setup, \
     io_uring_enter and io_uring_register in its seccomp profile; under systemd, SystemCallFilter=@system-service \
     allows them (~@aio does not); Strom needs Linux >= 6.1";

fn read_trimmed(path: &str) -> Option<String> {
    std::fs::read_to_string(path).ok().map(|s| s.trim().to_string())
}

/// `6.8.0-45-generic` -> (6, 8).
fn kernel_version(release: &str) -> Option<(u32, u32)> {
    let mut parts = release.split(|c: char| !c.is_ascii_digit());
    Some((parts.next()?.parse().ok()?, parts.next()?.parse().ok()?))
}

pub fn kernel() -> Check {
    let release = read_trimmed("/proc/sys/kernel/osrelease").unwrap_or_default();
    match kernel_version(&release) {
        Some(v) if v >= KERNEL_MIN => Check::ok("kernel", format!("Linux {release} (Strom needs {})", platform::KERNEL_NEEDED)),
        Some(_) => Check::warn(
            "kernel",
            format!("Linux {release}, older than Strom needs ({}): io_uring opcodes or fixes may be missing", platform::KERNEL_NEEDED),
            format!("upgrade the kernel to {}", platform::KERNEL_NEEDED),
        ),
        None => Check::warn(
            "kernel",
            format!("cannot read the kernel's version from /proc/sys/kernel/osrelease ({release:?})"),
            "mount /proc, or check `uname -r` by hand: Strom needs Linux >= 6.1",
        ),
    }
}

/// `kernel.io_uring_disabled` (6.6+): 0 all may use io_uring, 1 only
/// CAP_SYS_ADMIN and members of `kernel.io_uring_group`, 2 nobody.
pub fn io_uring_sysctl(ring_ok: bool) -> Check {
    const NAME: &str = "io_uring_sysctl";
    let Some(disabled) = read_trimmed("/proc/sys/kernel/io_uring_disabled") else {
        return Check::ok(NAME, "kernel.io_uring_disabled is absent (a kernel before 6.6): io_uring is enabled for every process");
    };
    let group = read_trimmed("/proc/sys/kernel/io_uring_group").unwrap_or_else(|| "-1".into());
    let figures = json!({ "io_uring_disabled": disabled, "io_uring_group": group });
    let only_group = || {
        let who = if group == "-1" { "CAP_SYS_ADMIN".to_string() } else { format!("CAP_SYS_ADMIN and members of group {group}") };
        format!("kernel.io_uring_disabled = 1, kernel.io_uring_group = {group}: only {who} may use io_uring")
    };
    let group_fix = if group == "-1" {
        "run `sysctl -w kernel.io_uring_disabled=0`, or `sysctl -w kernel.io_uring_group=GID` with strom's user in that group".to_string()
    } else {
        format!("run strom as a user in group {group} (`usermod -aG` it), or `sysctl -w kernel.io_uring_disabled=0`")
    };
    let check = match disabled.as_str() {
        "0" => Check::ok(NAME, format!("kernel.io_uring_disabled = 0, kernel.io_uring_group = {group}: every process may use io_uring")),
        // This process passed, but the service's user may not be this one.
        "1" if ring_ok => Check::warn(NAME, format!("{}; this process may", only_group()), group_fix),
        "1" => Check::fail(NAME, format!("{}; this process may not", only_group()), group_fix),
        other => Check::fail(
            NAME,
            format!("kernel.io_uring_disabled = {other}: io_uring is disabled for every process"),
            "run `sysctl -w kernel.io_uring_disabled=0` and keep it in /etc/sysctl.d/",
        ),
    };
    check.with_figures(figures)
}

/// io_uring set up, and every opcode Strom submits listed by
/// IORING_REGISTER_PROBE (`platform::probe_io_uring`, the start-up probe).
pub fn io_uring(ring: &Result<(), String>) -> Check {
    let names: Vec<&str> = platform::OPCODES_USED.iter().map(|&(_, name)| name).collect();
    match ring {
        Ok(()) => Check::ok(
            "io_uring",
            format!(
                "io_uring_setup and IORING_REGISTER_PROBE pass; all {} opcodes Strom submits are supported: {}",
                names.len(),
                names.join(" ")
            ),
        )
        .with_figures(json!({ "opcodes": names })),
        Err(message) => Check::fail("io_uring", message.clone(), IO_URING_FIX),
    }
}

/// The `Seccomp:` mode and `Seccomp_filters:` count of a /proc/<pid>/status.
fn seccomp_fields(status: &str) -> (Option<u32>, Option<u32>) {
    let field = |name: &str| status.lines().find_map(|l| l.strip_prefix(name)).and_then(|v| v.trim().parse().ok());
    (field("Seccomp:"), field("Seccomp_filters:"))
}

/// A seccomp filter is inherited by every child, so one on doctor (a
/// container's profile, a unit's SystemCallFilter=) is one on serve run the
/// same way. It matters only if it blocks io_uring, which the probe tests.
pub fn seccomp(ring_ok: bool) -> Check {
    const NAME: &str = "seccomp";
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let (mode, filters) = seccomp_fields(&status);
    let figures = json!({ "mode": mode, "filters": filters });
    let count = filters.map_or(String::new(), |n| format!(" ({n} filters)"));
    let check = match (mode, ring_ok) {
        (Some(0), _) => Check::ok(NAME, "no seccomp filter on this process"),
        (None, _) => Check::ok(NAME, "this kernel reports no Seccomp field in /proc/self/status"),
        (Some(2), true) => Check::ok(NAME, format!("a seccomp filter is on this process{count}, and io_uring passes it")),
        (Some(2), false) => {
            Check::fail(NAME, format!("a seccomp filter is on this process{count}, and io_uring fails under it"), IO_URING_FIX)
        }
        (Some(m), _) => Check::fail(
            NAME,
            format!("seccomp mode {m} (strict): only read, write, exit and sigreturn are allowed"),
            "run strom without seccomp strict mode",
        ),
    };
    check.with_figures(figures)
}

/// What a configuration pins on its cores: every buffer of a server core
/// with one log (`buf::registration`) as far as `registered_bytes_max`
/// lets it register them, each core's ring, and the room left to other
/// rings. Returns (buffers, rings, total).
fn registration_bytes(engine: &EngineConfig, server: &ServerConfig) -> (usize, usize, usize) {
    let cores = engine.cores;
    let bufs = CoreBuffers::of(engine, 1, server.reply_bufs_per_core);
    let buffers = RegistrationPlan::for_core(&bufs, engine.registered_bytes_max, cores).registered_bytes(&bufs) * cores;
    // The op slots ServerConfig::task_needs asks of each core's ring.
    let net_ops = 2 * server.connections_max + 4 * cores + 64;
    let rings = UringIo::ring_bytes(engine.ring_entries, engine.ring_entries as usize - 1 + net_ops) * cores;
    (buffers, rings, buffers + rings + OTHERS_BYTES)
}

/// RLIMIT_MEMLOCK (after raising the soft limit to the hard one, as serve
/// does) against what the configuration (`--config`, the STROM_* variables,
/// the defaults) registers. Too low is a warning: what does not fit is
/// served by unregistered I/O, slower but correct.
pub fn memlock(engine: &EngineConfig, server: &ServerConfig) -> Check {
    const NAME: &str = "memlock";
    let cores = engine.cores;
    let (buffers, rings, needed) = registration_bytes(engine, server);
    let lockable = platform::lockable_memory(needed);
    let limit = lockable.bytes();
    let figures = json!({ "needed_bytes": needed, "buffer_bytes": buffers, "ring_bytes": rings, "limit_bytes": limit, "cores": cores });
    let need = format!(
        "{} the configuration pins on {cores} core{} ({} of buffers, {} of rings, {} left to other rings)",
        human_bytes(needed as u64),
        plural(cores),
        human_bytes(buffers as u64),
        human_bytes(rings as u64),
        human_bytes(OTHERS_BYTES as u64)
    );
    let check = match lockable {
        Lockable::Limit(bytes) if bytes < needed as u64 => Check::warn(
            NAME,
            format!("{lockable} is below the {need}: serve registers part and the rest uses slower unregistered I/O"),
            format!(
                "LimitMEMLOCK={}M in the systemd unit, or `ulimit -l {}` before strom serve (memlock in /etc/security/limits.conf)",
                needed.div_ceil(1 << 20),
                needed.div_ceil(1 << 10)
            ),
        ),
        _ => Check::ok(NAME, format!("{lockable}: room for the {need}")),
    };
    check.with_figures(figures)
}

/// RLIMIT_NOFILE against the default `connections_max`. Serve raises the
/// soft limit to the hard one itself, so the hard limit is what counts.
pub fn open_files() -> Check {
    const NAME: &str = "open_files";
    let want = ServerConfig::default().connections_max as u64 + FDS_BESIDE_CONNECTIONS;
    let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE) else {
        return Check::warn(NAME, "cannot read RLIMIT_NOFILE", "check `ulimit -Hn` by hand");
    };
    let figures = json!({ "soft": soft, "hard": hard, "needed": want });
    let found = format!("RLIMIT_NOFILE soft {soft}, hard {hard}; the default connections_max needs {want} (serve raises the soft limit)");
    let check = if hard >= want {
        Check::ok(NAME, found)
    } else {
        let to = want.max(65_536);
        Check::warn(
            NAME,
            format!("{found}: connections past the hard limit wait"),
            format!("LimitNOFILE={to} in the systemd unit, or `ulimit -Hn {to}` (nofile in /etc/security/limits.conf)"),
        )
    };
    check.with_figures(figures)
}

fn plural(n: usize) -> &'static str {
    if n == 1 { "" } else { "s" }
}

/// Counts the CPUs of a kernel CPU list such as "0-3,8,10-11".
fn cpu_list_count(list: &str) -> Option<usize> {
    list.trim().split(',').filter(|r| !r.is_empty()).try_fold(0, |n, range| match range.split_once('-') {
        Some((a, b)) => Some(n + b.parse::<usize>().ok()?.checked_sub(a.parse::<usize>().ok()?)? + 1),
        None => range.parse::<usize>().ok().map(|_| n + 1),
    })
}

/// Sorted CPUs as a kernel CPU list: [0, 1, 2, 5] -> "0-2,5".
fn cpu_list(cpus: &[usize]) -> String {
    let mut ranges: Vec<(usize, usize)> = Vec::new();
    for &cpu in cpus {
        match ranges.last_mut() {
            Some((_, end)) if *end + 1 == cpu => *end = cpu,
            _ => ranges.push((cpu, cpu)),
        }
    }
    let text: Vec<String> = ranges.iter().map(|&(a, b)| if a == b { a.to_string() } else { format!("{a}-{b}") }).collect();
    text.join(",")
}

/// The CPUs serve would run a pinned core thread on: its affinity mask.
pub fn cpus() -> Check {
    const NAME: &str = "cpus";
    let allowed = platform::allowed_cpus();
    let online = read_trimmed("/sys/devices/system/cpu/online").and_then(|l| cpu_list_count(&l));
    let of = online.map_or(String::new(), |n| format!(" of {n} online"));
    let found = format!(
        "{n} CPU{s} allowed ({}){of}: serve runs {n} core{s} by default, one pinned thread each",
        cpu_list(&allowed),
        n = allowed.len(),
        s = plural(allowed.len())
    );
    let figures = json!({ "allowed": allowed, "online": online });
    let check = if allowed.len() > 1 {
        Check::ok(NAME, found)
    } else {
        Check::warn(
            NAME,
            format!("{found}, which it shares with clients and interrupts"),
            "give strom at least 2 CPUs: CPUAffinity= in the systemd unit, or `taskset -c 0-3 strom serve ...`",
        )
    };
    check.with_figures(figures)
}

#[cfg(test)]
mod tests {
    use super::*;

    // Proves: the version is read from the usual release strings, and the
    // minimum doctor compares with is the one the start-up probe names.
    #[test]
    fn kernel_versions() {
        assert_eq!(kernel_version("6.8.0-45-generic"), Some((6, 8)));
        assert_eq!(kernel_version("6.18.44-fc-v1272"), Some((6, 18)));
        assert_eq!(kernel_version("5.15"), Some((5, 15)));
        assert_eq!(kernel_version("garbage"), None);
        assert!((5, 15) < KERNEL_MIN && (6, 18) > KERNEL_MIN && (10, 0) > KERNEL_MIN);
        assert_eq!(platform::KERNEL_NEEDED, format!("Linux >= {}.{}", KERNEL_MIN.0, KERNEL_MIN.1));
    }

    // Proves: the seccomp mode and filter count are parsed, and a status
    // without them gives none.
    #[test]
    fn seccomp_status_fields() {
        assert_eq!(seccomp_fields("Name:\tx\nSeccomp:\t2\nSeccomp_filters:\t3\n"), (Some(2), Some(3)));
        assert_eq!(seccomp_fields("Seccomp:\t0\n"), (Some(0), None));
        assert_eq!(seccomp_fields(""), (None, None));
    }

    // Proves: CPU lists are counted and written as the kernel writes them.
    #[test]
    fn cpu_lists() {
        assert_eq!(cpu_list_count("0-1\n"), Some(2));
        assert_eq!(cpu_list_count("0-3,8,10-11"), Some(7));
        assert_eq!(cpu_list_count("3-1"), None);
        assert_eq!(cpu_list(&[0, 1, 2, 5, 7, 8]), "0-2,5,7-8");
        assert_eq!(cpu_list(&[4]), "4");
    }

    // Proves: the memlock need grows with the cores and covers every
    // buffer of a server core, the rings and the room for other rings; a
    // registered_bytes_max caps the buffers' part.
    #[test]
    fn registration_need_adds_up() {
        let at = |cores| registration_bytes(&EngineConfig { cores, ..EngineConfig::default() }, &ServerConfig::default());
        let (buffers, rings, total) = at(2);
        let (buffers_1, rings_1, _) = at(1);
        assert!(buffers == 2 * buffers_1 && rings >= 2 * rings_1, "{buffers} {rings}");
        assert_eq!(total, buffers + rings + OTHERS_BYTES);
        let engine = EngineConfig::default();
        // 64 write buffers of a log alone are over 64 MiB.
        assert!(buffers_1 > engine.write_bufs_per_log * engine.write_buf_bytes);
        let capped = EngineConfig { cores: 2, registered_bytes_max: Some(8 << 20), ..EngineConfig::default() };
        let (buffers_capped, _, _) = registration_bytes(&capped, &ServerConfig::default());
        assert!(buffers_capped <= 8 << 20 && buffers_capped < buffers, "{buffers_capped}");
    }
}
