//! Start-up probes: before Strom touches a byte of data it checks that this
//! machine can keep its promises (io_uring with every opcode we submit, a data
//! directory that honours O_DIRECT and fsync) and fails with one line naming
//! the cause and the fix, rather than with an errno from deep inside the
//! first write. It also reads how much memory may be pinned
//! (RLIMIT_MEMLOCK, CAP_IPC_LOCK), which sizes registration but never
//! refuses a start.
//!
//! No `unsafe` here: nix and std wrap every call we need.
use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use io_uring::{IoUring, Probe, opcode};
use nix::errno::Errno;
use nix::sched::{CpuSet, sched_getaffinity, sched_setaffinity};
use nix::sys::resource::{Resource, getrlimit, setrlimit};
use nix::sys::statfs::{self, FsType, statfs};
use nix::unistd::Pid;

use crate::error::{Result, StromError};

/// The oldest kernel with every opcode below (SendZc arrived in 6.0) and the
/// io_uring fixes we rely on.
pub const KERNEL_NEEDED: &str = "Linux >= 6.1";

/// Every opcode Strom submits, by the kernel's name for it. AcceptMulti and
/// RecvMulti are flags on Accept and Recv, so their opcodes cover them.
pub const OPCODES_USED: [(u8, &str); 15] = [
    (opcode::WriteFixed::CODE, "WRITE_FIXED"),
    (opcode::ReadFixed::CODE, "READ_FIXED"),
    (opcode::Fsync::CODE, "FSYNC"),
    (opcode::Read::CODE, "READ"),
    (opcode::Write::CODE, "WRITE"),
    (opcode::Timeout::CODE, "TIMEOUT"),
    (opcode::PollAdd::CODE, "POLL_ADD"),
    (opcode::Accept::CODE, "ACCEPT"),
    (opcode::RecvMsg::CODE, "RECVMSG"),
    (opcode::Recv::CODE, "RECV"),
    (opcode::Send::CODE, "SEND"),
    (opcode::SendZc::CODE, "SEND_ZC"),
    (opcode::MsgRingData::CODE, "MSG_RING"),
    (opcode::ProvideBuffers::CODE, "PROVIDE_BUFFERS"),
    (opcode::AsyncCancel::CODE, "ASYNC_CANCEL"),
];

/// io_uring can be set up (not disabled by sysctl, seccomp or an old kernel)
/// and supports every opcode Strom submits.
pub fn probe_io_uring() -> Result<()> {
    let ring = IoUring::new(8).map_err(|e| io_uring_setup_error(&e))?;
    let mut probe = Probe::new();
    ring.submitter().register_probe(&mut probe).map_err(|e| {
        StromError::Unsupported(format!(
            "this kernel cannot list its io_uring opcodes (IORING_REGISTER_PROBE: {e}): \
             Strom needs {KERNEL_NEEDED}"
        ))
    })?;
    let missing = missing_opcodes(|code| probe.is_supported(code));
    if missing.is_empty() {
        return Ok(());
    }
    Err(StromError::Unsupported(format!("this kernel's io_uring lacks the opcodes {}: upgrade to {KERNEL_NEEDED}", missing.join(", "))))
}

/// The names of the opcodes Strom uses that `supported` rejects.
fn missing_opcodes(supported: impl Fn(u8) -> bool) -> Vec<&'static str> {
    OPCODES_USED.iter().filter(|&&(code, _)| !supported(code)).map(|&(_, name)| name).collect()
}

/// Turns an io_uring_setup failure into its fix. EPERM is the sysctl or a
/// container's seccomp profile; ENOSYS is a kernel built without io_uring or
/// a filter that hides the syscall.
fn io_uring_setup_error(e: &io::Error) -> StromError {
    let msg = match e.raw_os_error() {
        Some(libc::EPERM) | Some(libc::EACCES) => format!(
            "io_uring is disabled for this process (io_uring_setup: {e}): run \
             `sysctl kernel.io_uring_disabled=0`, or allow io_uring in the container's \
             seccomp profile"
        ),
        Some(libc::ENOSYS) => format!(
            "this kernel has no io_uring or a seccomp filter hides it (io_uring_setup: {e}): \
             Strom needs {KERNEL_NEEDED} with io_uring enabled"
        ),
        _ => format!("io_uring_setup failed ({e}): Strom needs {KERNEL_NEEDED} with io_uring enabled"),
    };
    StromError::Unsupported(msg)
}

/// What Strom makes of a filesystem it finds under the data directory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Verdict {
    /// A local block filesystem whose O_DIRECT and fdatasync we rely on.
    Trusted,
    /// Refused; the text says why, to follow "is on <name>, which ".
    Refused(&'static str),
}

const IN_MEMORY: Verdict = Verdict::Refused("keeps files in memory, so nothing written there survives a reboot");
const REMOTE: Verdict = Verdict::Refused("is a network or user-space filesystem whose O_DIRECT and fsync semantics Strom does not trust");
const PSEUDO: Verdict = Verdict::Refused("is a kernel pseudo-filesystem, not storage");

/// Magics the kernel reports that nix does not name.
const RAMFS_MAGIC: FsType = FsType(0x8584_58f6_u32 as _);
const CIFS_MAGIC: FsType = FsType(0xff53_4d42_u32 as _);
const SMB2_MAGIC: FsType = FsType(0xfe53_4d42_u32 as _);

/// The filesystems we know by magic. ext2, ext3 and ext4 share 0xEF53; ext4
/// is by far the likeliest, so that is the name we show.
const KNOWN_FILESYSTEMS: [(FsType, &str, Verdict); 15] = [
    (statfs::EXT4_SUPER_MAGIC, "ext4", Verdict::Trusted),
    (statfs::XFS_SUPER_MAGIC, "xfs", Verdict::Trusted),
    (statfs::BTRFS_SUPER_MAGIC, "btrfs", Verdict::Trusted),
    (statfs::F2FS_SUPER_MAGIC, "f2fs", Verdict::Trusted),
    (statfs::TMPFS_MAGIC, "tmpfs", IN_MEMORY),
    (RAMFS_MAGIC, "ramfs", IN_MEMORY),
    (
        statfs::OVERLAYFS_SUPER_MAGIC,
        "overlayfs",
        Verdict::Refused(
            "is a container's copy-on-write layer whose O_DIRECT and fsync depend on \
             what lies beneath: mount a volume there",
        ),
    ),
    (statfs::NFS_SUPER_MAGIC, "nfs", REMOTE),
    (CIFS_MAGIC, "cifs", REMOTE),
    (SMB2_MAGIC, "smb2", REMOTE),
    (statfs::SMB_SUPER_MAGIC, "smb", REMOTE),
    (statfs::FUSE_SUPER_MAGIC, "fuse", REMOTE),
    (statfs::PROC_SUPER_MAGIC, "proc", PSEUDO),
    (statfs::SYSFS_MAGIC, "sysfs", PSEUDO),
    (statfs::DEVPTS_SUPER_MAGIC, "devpts", PSEUDO),
];

/// The name and verdict for a magic; `None` when we do not know it.
fn classify_fs(magic: FsType) -> Option<(&'static str, Verdict)> {
    KNOWN_FILESYSTEMS.iter().find(|(known, _, _)| *known == magic).map(|&(_, name, verdict)| (name, verdict))
}

fn fs_magic(dir: &Path) -> Result<FsType> {
    let stat = statfs(dir).map_err(|e| {
        StromError::Unsupported(format!("cannot statfs data directory {}: {e}: check that it exists and is readable", dir.display()))
    })?;
    Ok(stat.filesystem_type())
}

fn magic_name(magic: FsType) -> String {
    match classify_fs(magic) {
        Some((name, _)) => name.to_string(),
        None => format!("unknown ({:#x})", magic.0),
    }
}

/// The human name of the filesystem `dir` is on ("ext4", "tmpfs", ... or
/// "unknown (0x...)").
pub fn fs_type_name(dir: &Path) -> Result<String> {
    fs_magic(dir).map(magic_name)
}

/// The data directory (created if missing) is on a filesystem that keeps
/// O_DIRECT writes: a known-bad type is refused by name, then a real aligned
/// write, fdatasync and read-back proves it. The type is checked on the
/// nearest directory that exists before anything is created, and a refused
/// probe removes the directories it created: a refused start leaves nothing.
pub fn probe_data_dir(dir: &Path) -> Result<()> {
    let missing: Vec<&Path> = dir.ancestors().take_while(|d| !d.as_os_str().is_empty() && !d.exists()).collect();
    let existing = dir.ancestors().find(|d| d.exists()).unwrap_or(Path::new("."));
    check_fs_type(existing, dir)?;
    std::fs::create_dir_all(dir).map_err(|e| {
        StromError::Unsupported(format!("cannot create data directory {}: {e}: create it, or make its parent writable", dir.display()))
    })?;
    let probed = probe_o_direct(dir);
    if probed.is_err() {
        // Deepest first; remove_dir only removes what is still empty.
        for d in &missing {
            let _ = std::fs::remove_dir(d);
        }
    }
    probed
}

/// Checks the filesystem `on` (the data directory `dir`, or the nearest
/// directory above it that exists) is one Strom trusts.
pub fn check_fs_type(on: &Path, dir: &Path) -> Result<()> {
    let magic = fs_magic(on)?;
    match classify_fs(magic) {
        Some((_, Verdict::Trusted)) => Ok(()),
        Some((name, Verdict::Refused(why))) => Err(StromError::Unsupported(format!(
            "data directory {} is on {name}, which {why}: put the data directory on ext4 or xfs",
            dir.display()
        ))),
        None => {
            // An unfamiliar filesystem may be fine (zfs, bcachefs, ...); the
            // O_DIRECT probe that follows is the real test.
            tracing::warn!(
                dir = %dir.display(),
                fs = %magic_name(magic),
                "data directory is on a filesystem Strom has not been tested on"
            );
            Ok(())
        }
    }
}

/// The block size of the probe write: 4 KiB covers both 512-byte and 4 KiB
/// logical sectors, and is the alignment of every Strom log write.
const PROBE_BLOCK_BYTES: usize = 4096;

/// Removes the probe file however the probe ends, so a failed start leaves
/// no litter in the data directory.
struct ProbeFile {
    path: PathBuf,
}

impl Drop for ProbeFile {
    fn drop(&mut self) {
        // Nothing useful to do if this fails: the file is empty of meaning
        // and the next probe truncates it.
        let _ = std::fs::remove_file(&self.path);
    }
}

/// The `PROBE_BLOCK_BYTES`-aligned block inside `backing`, which must be
/// twice that long so an aligned block always fits.
fn aligned_block(backing: &mut [u8]) -> &mut [u8] {
    assert!(backing.len() >= 2 * PROBE_BLOCK_BYTES);
    let addr = backing.as_ptr() as usize;
    let start = (PROBE_BLOCK_BYTES - addr % PROBE_BLOCK_BYTES) % PROBE_BLOCK_BYTES;
    let block = &mut backing[start..start + PROBE_BLOCK_BYTES];
    assert_eq!(block.as_ptr() as usize % PROBE_BLOCK_BYTES, 0);
    block
}

fn probe_o_direct(dir: &Path) -> Result<()> {
    let probe = ProbeFile { path: dir.join(format!(".strom-probe-{}", std::process::id())) };
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .custom_flags(libc::O_DIRECT)
        .open(&probe.path)
        .map_err(|e| o_direct_error(&probe.path, "open", &e))?;
    let mut write_backing = vec![0u8; 2 * PROBE_BLOCK_BYTES];
    let written = aligned_block(&mut write_backing);
    // A pattern, not zeros, so a read that returns a hole is caught.
    for (i, byte) in written.iter_mut().enumerate() {
        *byte = (i % 251) as u8;
    }
    write_and_sync(&file, &probe.path, written)?;
    read_and_compare(&file, &probe.path, written)
}

fn write_and_sync(file: &File, path: &Path, block: &[u8]) -> Result<()> {
    let n = file.write_at(block, 0).map_err(|e| o_direct_error(path, "write", &e))?;
    if n != block.len() {
        return Err(StromError::Unsupported(format!(
            "O_DIRECT probe wrote {n} of {} bytes to {}: put the data directory on ext4 or xfs",
            block.len(),
            path.display()
        )));
    }
    file.sync_data().map_err(|e| o_direct_error(path, "fdatasync", &e))
}

fn read_and_compare(file: &File, path: &Path, expected: &[u8]) -> Result<()> {
    let mut read_backing = vec![0u8; 2 * PROBE_BLOCK_BYTES];
    let read = aligned_block(&mut read_backing);
    let n = file.read_at(read, 0).map_err(|e| o_direct_error(path, "read", &e))?;
    if n == expected.len() && read[..] == expected[..] {
        return Ok(());
    }
    Err(StromError::Unsupported(format!(
        "O_DIRECT probe read back {n} bytes from {} that differ from what was written: \
         the filesystem or device loses writes; put the data directory on a healthy ext4 or xfs",
        path.display()
    )))
}

/// EINVAL from an O_DIRECT open or aligned I/O means the filesystem refuses
/// O_DIRECT; anything else (EACCES, EROFS, ENOSPC, EIO) is named as it is.
fn o_direct_error(path: &Path, op: &str, e: &io::Error) -> StromError {
    let msg = if e.raw_os_error() == Some(libc::EINVAL) {
        format!(
            "the filesystem of {} does not support O_DIRECT ({op}: {e}): \
             put the data directory on ext4 or xfs",
            path.display()
        )
    } else {
        format!(
            "O_DIRECT probe {op} of {} failed ({e}): make the data directory writable, \
             with free space, on ext4 or xfs",
            path.display()
        )
    };
    StromError::Unsupported(msg)
}

/// CAP_IPC_LOCK's bit in the capability sets of /proc/self/status.
const CAP_IPC_LOCK_BIT: u32 = 14;

/// How much memory this process may have io_uring pin for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lockable {
    /// CAP_IPC_LOCK in the initial user namespace: nothing is charged.
    Exempt,
    /// RLIMIT_MEMLOCK is unlimited.
    Unlimited,
    /// RLIMIT_MEMLOCK in bytes (after raising the soft limit to the hard one).
    Limit(u64),
}

impl Lockable {
    /// The bytes that may be pinned; None when there is no limit.
    pub fn bytes(self) -> Option<u64> {
        match self {
            Lockable::Limit(bytes) => Some(bytes),
            Lockable::Exempt | Lockable::Unlimited => None,
        }
    }
}

impl std::fmt::Display for Lockable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Lockable::Exempt => f.write_str("CAP_IPC_LOCK, no limit"),
            Lockable::Unlimited => f.write_str("RLIMIT_MEMLOCK unlimited"),
            Lockable::Limit(bytes) => write!(f, "RLIMIT_MEMLOCK {}", human_bytes(*bytes)),
        }
    }
}

/// Registered buffers are pinned, and io_uring charges pinned pages to the
/// user's RLIMIT_MEMLOCK unless the process holds CAP_IPC_LOCK. Says how
/// much may be pinned, raising the soft limit to the hard limit when
/// `wanted_bytes` is over the soft one. Never refuses: what does not fit is
/// left unregistered (`buf::registration`).
pub fn lockable_memory(wanted_bytes: usize) -> Lockable {
    if exempt_from_memlock() {
        return Lockable::Exempt;
    }
    let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_MEMLOCK) else {
        // Unreadable (it never is on Linux): register nothing rather than guess.
        return Lockable::Limit(0);
    };
    if soft == libc::RLIM_INFINITY {
        return Lockable::Unlimited;
    }
    // Pinned pages are counted per user, across every process and ring, so
    // take all the headroom allowed rather than exactly what is wanted.
    let limit =
        if wanted_bytes as u64 > soft && hard > soft && setrlimit(Resource::RLIMIT_MEMLOCK, hard, hard).is_ok() { hard } else { soft };
    if limit == libc::RLIM_INFINITY { Lockable::Unlimited } else { Lockable::Limit(limit) }
}

/// Bytes as people read them: "8 MiB", "180 MiB", "512 KiB", "100 bytes".
pub fn human_bytes(bytes: u64) -> String {
    const MIB: u64 = 1 << 20;
    const KIB: u64 = 1 << 10;
    if bytes >= MIB && (bytes.is_multiple_of(MIB) || bytes >= 16 * MIB) {
        format!("{} MiB", bytes / MIB)
    } else if bytes >= MIB {
        format!("{:.1} MiB", bytes as f64 / MIB as f64)
    } else if bytes >= KIB {
        format!("{} KiB", bytes / KIB)
    } else {
        format!("{bytes} bytes")
    }
}

/// True when the kernel will not charge pinned pages to RLIMIT_MEMLOCK. The
/// kernel asks for CAP_IPC_LOCK in the initial user namespace, so root in a
/// rootless container, or in a Docker container (which drops the
/// capability), is still charged: euid 0 alone is not enough.
fn exempt_from_memlock() -> bool {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let uid_map = std::fs::read_to_string("/proc/self/uid_map").unwrap_or_default();
    has_cap_ipc_lock(&status) && is_initial_user_ns(&uid_map)
}

/// Whether the `CapEff:` line of a /proc/<pid>/status holds CAP_IPC_LOCK.
fn has_cap_ipc_lock(status: &str) -> bool {
    status
        .lines()
        .find_map(|line| line.strip_prefix("CapEff:"))
        .and_then(|hex| u64::from_str_radix(hex.trim(), 16).ok())
        .is_some_and(|caps| caps & (1 << CAP_IPC_LOCK_BIT) != 0)
}

/// The initial user namespace maps every uid to itself: "0 0 4294967295".
fn is_initial_user_ns(uid_map: &str) -> bool {
    let fields: Vec<&str> = uid_map.split_whitespace().collect();
    fields == ["0", "0", "4294967295"]
}

/// The CPUs this process may run on, ascending: its affinity mask, which
/// honours taskset and cgroup cpusets. Never empty.
pub fn allowed_cpus() -> Vec<usize> {
    let allowed: Vec<usize> = sched_getaffinity(Pid::from_raw(0))
        .map(|set| (0..CpuSet::count()).filter(|&cpu| set.is_set(cpu).unwrap_or(false)).collect())
        .unwrap_or_default();
    if !allowed.is_empty() {
        return allowed;
    }
    // The mask can be unreadable (more CPUs than CpuSet holds); std asks
    // the kernel another way, and we assume CPUs 0..n.
    (0..std::thread::available_parallelism().map_or(1, |n| n.get())).collect()
}

/// The number of CPUs this process may run on, at least 1.
pub fn online_cpus() -> usize {
    allowed_cpus().len()
}

/// Pins the calling thread to `cpu` (Pid 0 means this thread, not the whole
/// process). The caller treats failure as a warning: an unpinned core is
/// slower, not wrong.
pub fn pin_current_thread(cpu: usize) -> Result<()> {
    let mut set = CpuSet::new();
    set.set(cpu).map_err(|e| pin_error(cpu, e))?;
    sched_setaffinity(Pid::from_raw(0), &set).map_err(|e| pin_error(cpu, e))
}

fn pin_error(cpu: usize, e: Errno) -> StromError {
    StromError::Unsupported(format!(
        "cannot pin a core thread to CPU {cpu} ({e}): it is offline or outside this \
         process's affinity mask (taskset, cgroup cpuset); run fewer cores or widen the mask"
    ))
}

/// Whether a socket's peer is on this host: loopback, our own address (an
/// IPv4 peer of a dual-stack socket taken as the IPv4 address it is), or a
/// Unix socket. The kernel copies a zero-copy send to such a peer anyway
/// (`skb_copy_ubufs`, at delivery) after pinning its pages and allocating
/// fresh ones, so a plain `SEND`, which copies once, costs less: in the
/// fanout profile of issue 13 that detour took about 14% of the serving core.
pub fn peer_is_local(sock: &impl std::os::fd::AsFd) -> bool {
    let sock = socket2::SockRef::from(sock);
    let ip = |a: io::Result<socket2::SockAddr>| a.ok().and_then(|a| a.as_socket()).map(|a| a.ip().to_canonical());
    match (ip(sock.peer_addr()), ip(sock.local_addr())) {
        (Some(peer), Some(local)) => peer.is_loopback() || peer == local,
        _ => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Proves: a TCP connection over loopback and a Unix socket pair count as
    // local peers (their registered replies go out by plain SEND).
    #[test]
    fn loopback_and_unix_peers_are_local() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let client = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (accepted, _) = listener.accept().unwrap();
        assert!(peer_is_local(&client) && peer_is_local(&accepted));
        let (a, _b) = std::os::unix::net::UnixStream::pair().unwrap();
        assert!(peer_is_local(&a));
        // A dual-stack listener sees an IPv4 loopback peer as ::ffff:127.0.0.1.
        // (Skipped where IPv6 is off or sockets are IPv6-only.)
        if let Ok(v6) = std::net::TcpListener::bind("[::]:0")
            && let Ok(_client) = std::net::TcpStream::connect(("127.0.0.1", v6.local_addr().unwrap().port()))
        {
            let (accepted, _) = v6.accept().unwrap();
            assert!(peer_is_local(&accepted), "{:?}", accepted.peer_addr());
        }
    }

    fn message(e: StromError) -> String {
        match e {
            StromError::Unsupported(msg) => msg,
            other => panic!("expected Unsupported, got {other:?}"),
        }
    }

    // Proves: a directory on the real disk passes the filesystem check and
    // the O_DIRECT write, fdatasync and read-back, and the probe file is gone.
    #[test]
    fn data_dir_on_real_fs_is_accepted() {
        let dir = Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/target/tmp-platform-test"));
        probe_data_dir(dir).unwrap();
        let probe = dir.join(format!(".strom-probe-{}", std::process::id()));
        assert!(!probe.exists());
    }

    // Proves: a data directory on tmpfs is refused, and the message names
    // tmpfs so the operator knows what to change.
    #[test]
    fn data_dir_on_tmpfs_is_refused() {
        let shm = Path::new("/dev/shm");
        if fs_type_name(shm).ok().as_deref() != Some("tmpfs") {
            println!("skipped: /dev/shm is not tmpfs on this machine");
            return;
        }
        let dir = shm.join(format!("strom-platform-test-{}", std::process::id()));
        let err = probe_data_dir(&dir);
        let _ = std::fs::remove_dir(&dir);
        let msg = message(err.unwrap_err());
        assert!(msg.contains("tmpfs"), "{msg}");
        assert!(!msg.contains('\n'), "{msg}");
    }

    // Proves: fs_type_name reads the magic and names a known filesystem.
    #[test]
    fn proc_is_named_proc() {
        assert_eq!(fs_type_name(Path::new("/proc")).unwrap(), "proc");
    }

    // Proves: an unknown magic is shown in hex rather than guessed, and the
    // shared ext2/3/4 magic is named ext4.
    #[test]
    fn magic_names() {
        assert_eq!(magic_name(FsType(0x1234 as _)), "unknown (0x1234)");
        assert_eq!(magic_name(FsType(0xef53 as _)), "ext4");
        assert_eq!(classify_fs(FsType(0x1234 as _)), None);
    }

    // Proves: this machine's io_uring is enabled and has every opcode Strom uses.
    #[test]
    fn io_uring_probe_passes_here() {
        probe_io_uring().unwrap();
    }

    // Proves: missing opcodes are reported by name, and none are reported
    // when all are supported.
    #[test]
    fn missing_opcodes_are_named() {
        assert!(missing_opcodes(|_| true).is_empty());
        let missing = missing_opcodes(|code| code != opcode::SendZc::CODE);
        assert_eq!(missing, ["SEND_ZC"]);
        let none = missing_opcodes(|_| false);
        assert_eq!(none.len(), 15);
        assert!(none.contains(&"RECVMSG") && none.contains(&"MSG_RING"));
    }

    // Proves: the lockable memory is read without failing, and a limit,
    // when there is one, is at least the soft limit the process started with.
    #[test]
    fn lockable_memory_reads_the_limit() {
        let (soft, _) = getrlimit(Resource::RLIMIT_MEMLOCK).unwrap();
        match lockable_memory(1 << 20) {
            Lockable::Limit(bytes) => assert!(bytes >= soft.min(1 << 20)),
            Lockable::Exempt | Lockable::Unlimited => {}
        }
        assert_eq!(Lockable::Limit(8 << 20).to_string(), "RLIMIT_MEMLOCK 8 MiB");
        assert_eq!(Lockable::Limit(8 << 20).bytes(), Some(8 << 20));
        assert_eq!(Lockable::Exempt.bytes(), None);
    }

    // Proves: sizes print in the unit a person reads, without a long tail of digits.
    #[test]
    fn human_bytes_units() {
        assert_eq!(human_bytes(8 << 20), "8 MiB");
        assert_eq!(human_bytes(180_288 << 10), "176 MiB");
        assert_eq!(human_bytes((1 << 20) + (1 << 19)), "1.5 MiB");
        assert_eq!(human_bytes(512 << 10), "512 KiB");
        assert_eq!(human_bytes(100), "100 bytes");
    }

    // Proves: the memlock exemption needs CAP_IPC_LOCK in the initial user
    // namespace; a namespaced root or a capability-less root is charged.
    #[test]
    fn memlock_exemption_parsing() {
        let with_cap = "Uid:\t0\t0\t0\t0\nCapEff:\t000001fffeffffff\n";
        let without_cap = "Uid:\t0\t0\t0\t0\nCapEff:\t00000000a80425fb\n";
        assert!(has_cap_ipc_lock(with_cap));
        assert!(!has_cap_ipc_lock(without_cap));
        assert!(!has_cap_ipc_lock(""));
        assert!(is_initial_user_ns("         0          0 4294967295\n"));
        assert!(!is_initial_user_ns("         0       1000          1\n"));
        assert!(!is_initial_user_ns(""));
    }

    // Proves: the process may run on at least one CPU.
    #[test]
    fn at_least_one_cpu() {
        let cpus = allowed_cpus();
        assert!(!cpus.is_empty() && cpus.windows(2).all(|w| w[0] < w[1]), "{cpus:?}");
        assert_eq!(online_cpus(), cpus.len());
    }

    // Proves: a thread can be pinned to the last CPU it is allowed (what the
    // engine does for its last core), and an impossible CPU gives a typed
    // error instead of a panic.
    #[test]
    fn pin_to_an_allowed_cpu() {
        std::thread::spawn(|| {
            let cpu = *allowed_cpus().last().unwrap();
            pin_current_thread(cpu).unwrap();
            assert_eq!(allowed_cpus(), vec![cpu], "the thread's mask is now that one CPU");
            let msg = message(pin_current_thread(CpuSet::count()).unwrap_err());
            assert!(msg.contains("CPU"), "{msg}");
        })
        .join()
        .unwrap();
    }
}
