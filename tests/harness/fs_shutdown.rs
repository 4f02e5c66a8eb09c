//! The power cut: Linux's `FS_IOC_SHUTDOWN` ioctl issued directly, so the
//! power-cut tests need no tool beyond util-linux and e2fsprogs (it was
//! `xfs_io -x -c shutdown`, package xfsprogs, missing on a fresh machine).
//!
//! The one `unsafe` outside the engine's two files and the fuzz allocator
//! (docs/UNSAFE.md): every ioctl is unsafe in Rust because its argument's
//! meaning depends on the request number, and neither nix nor libc wraps
//! this one safely.
#![allow(unsafe_code)]
use std::os::fd::AsRawFd;
use std::path::Path;

/// `FS_IOC_SHUTDOWN` = `_IOR('X', 125, __u32)` (include/uapi/linux/fs.h; ext4
/// and xfs both answer it).
const FS_IOC_SHUTDOWN: libc::Ioctl = libc::_IOR::<u32>(b'X' as u32, 125);
/// `FS_SHUTDOWN_FLAGS_NOLOGFLUSH`: stop the filesystem without committing
/// its journal, so what was neither committed nor written through is lost,
/// as in a power cut (`xfs_io -x -c shutdown` without `-f`).
const FS_GOING_FLAGS_NOLOGFLUSH: u32 = 2;

/// Shuts down the filesystem holding `mount_point` without flushing its
/// journal: every later I/O on it fails with EIO until it is unmounted.
pub fn shutdown_no_log_flush(mount_point: &Path) -> std::io::Result<()> {
    let dir = std::fs::File::open(mount_point)?;
    let flags: u32 = FS_GOING_FLAGS_NOLOGFLUSH;
    // SAFETY: FS_IOC_SHUTDOWN reads one u32 (the flags) through its pointer
    // argument and writes nothing (the kernel's `get_user(flags, (__u32
    // __user *)arg)`); `flags` is a live, aligned u32 for the whole call, and
    // `dir` keeps the descriptor open until the call returns.
    let rc = unsafe { libc::ioctl(dir.as_raw_fd(), FS_IOC_SHUTDOWN, &flags as *const u32) };
    if rc != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}
