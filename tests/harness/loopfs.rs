//! A journaled ext4 filesystem in a file-backed loop device, mounted under
//! cargo's target/tmp, for tests that need what the root filesystem here
//! cannot give: a journal (power cuts), a small size (disk full), or a block
//! device of its own (throttling).
//!
//! Needs root, loop devices, util-linux and e2fsprogs (no xfsprogs: the power
//! cut is an ioctl, [`super::fs_shutdown`]). [`LoopFs::available`] says why
//! not when something is missing, and the tests that use it declare
//! [`super::skip::Need::LoopFs`], so they are reported as ignored with that
//! reason instead of failing. Everything is undone in `Drop` (unmount,
//! detach, remove the image), panics included.
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

/// Runs `cmd args`, returning its stdout, or a message with its stderr.
pub fn run(cmd: &str, args: &[&str]) -> Result<String, String> {
    let out = Command::new(cmd).args(args).output().map_err(|e| format!("cannot run {cmd}: {e}"))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(format!(
            "{cmd} {} failed ({}): {}{}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim(),
            String::from_utf8_lossy(&out.stdout).trim()
        ))
    }
}

/// A mounted ext4 in a loop device. The mount point is [`LoopFs::mount_point`].
pub struct LoopFs {
    image: PathBuf,
    dev: String,
    mount_point: PathBuf,
    mounted: bool,
}

impl LoopFs {
    /// Why loop filesystems cannot be used here, if they cannot.
    pub fn available() -> Result<(), String> {
        if !super::skip::is_root() {
            return Err("needs root for losetup and mount: run the test command as root".into());
        }
        for tool in ["losetup", "mkfs.ext4", "e2fsck", "mount", "umount"] {
            if run("sh", &["-c", &format!("command -v {tool}")]).is_err() {
                return Err(format!("needs {tool} (packages util-linux, e2fsprogs, mount)"));
            }
        }
        if !Path::new("/dev/loop-control").exists() {
            return Err("needs loop devices: /dev/loop-control is missing (this kernel or container has none)".into());
        }
        Ok(())
    }

    /// Creates a `size_mib` image named after `name` in target/tmp, attaches
    /// it, makes a journaled ext4 on it (`mkfs_extra` are more mkfs.ext4
    /// options) and mounts it. Panics with the reason when it cannot.
    pub fn new(name: &str, size_mib: u64, mkfs_extra: &[&str]) -> LoopFs {
        if let Err(why) = LoopFs::available() {
            panic!("loop filesystem unavailable: {why}");
        }
        let base = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("loopfs-{name}-{}", std::process::id()));
        let _ = std::fs::create_dir_all(&base);
        let image = base.join("image");
        let mount_point = base.join("mnt");
        std::fs::create_dir_all(&mount_point).unwrap();
        let f = std::fs::File::create(&image).unwrap();
        f.set_len(size_mib << 20).unwrap();
        drop(f);
        let dev = run("losetup", &["-f", "--show", image.to_str().unwrap()])
            .unwrap_or_else(|e| panic!("cannot attach a loop device (are loop devices available?): {e}"))
            .trim()
            .to_string();
        // From here on Drop undoes what was done, if mkfs or mount fails.
        let mut fs = LoopFs { image, dev, mount_point, mounted: false };
        let mut args = vec!["-q", "-F", "-t", "ext4", "-j"];
        args.extend_from_slice(mkfs_extra);
        args.push(&fs.dev);
        run("mkfs.ext4", &args).unwrap_or_else(|e| panic!("{e}"));
        fs.mount();
        fs
    }

    pub fn mount_point(&self) -> &Path {
        &self.mount_point
    }

    /// The loop device, e.g. `/dev/loop3`.
    pub fn device(&self) -> &str {
        &self.dev
    }

    /// The image file backing the loop device.
    pub fn image(&self) -> &Path {
        &self.image
    }

    /// `major:minor` of the loop device (for cgroup I/O limits).
    pub fn major_minor(&self) -> String {
        let rdev = nix::sys::stat::stat(self.dev.as_str()).unwrap().st_rdev;
        format!("{}:{}", nix::sys::stat::major(rdev), nix::sys::stat::minor(rdev))
    }

    pub fn mount(&mut self) {
        assert!(!self.mounted);
        run("mount", &["-t", "ext4", &self.dev, self.mount_point.to_str().unwrap()]).unwrap_or_else(|e| panic!("{e}"));
        self.mounted = true;
    }

    /// Unmounts, retrying while the filesystem is busy (a child that just
    /// exited may still hold it for a moment).
    pub fn unmount(&mut self) {
        assert!(self.mounted);
        let mp = self.mount_point.to_str().unwrap().to_string();
        let mut last = String::new();
        for _ in 0..50 {
            match run("umount", &[&mp]) {
                Ok(_) => {
                    self.mounted = false;
                    return;
                }
                Err(e) => last = e,
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("cannot unmount {mp}: {last}");
    }

    /// The power cut: the shutdown ioctl without flushing the journal (what
    /// `xfs_io -x -c shutdown` does without `-f`). Every later I/O on the
    /// filesystem fails with EIO; what was not yet committed to the journal
    /// or written through is gone once it is unmounted and mounted again.
    pub fn power_cut(&self) {
        super::fs_shutdown::shutdown_no_log_flush(&self.mount_point)
            .unwrap_or_else(|e| panic!("power cut: FS_IOC_SHUTDOWN on {} failed: {e}", self.mount_point.display()));
    }

    /// `e2fsck -fn` on the unmounted filesystem: Ok(output) when clean.
    pub fn fsck(&self) -> Result<String, String> {
        assert!(!self.mounted, "fsck needs the filesystem unmounted");
        run("e2fsck", &["-f", "-n", &self.dev])
    }

    /// Free bytes for root (statvfs f_bfree).
    pub fn free_bytes(&self) -> u64 {
        let s = nix::sys::statvfs::statvfs(&self.mount_point).unwrap();
        s.blocks_free() * s.fragment_size()
    }
}

impl Drop for LoopFs {
    fn drop(&mut self) {
        if self.mounted {
            let mp = self.mount_point.to_str().unwrap().to_string();
            if run("umount", &[&mp]).is_err() {
                // Busy (a child still dying): detach it lazily so the loop device can go.
                let _ = run("umount", &["-l", &mp]);
            }
        }
        if let Err(e) = run("losetup", &["-d", &self.dev]) {
            eprintln!("loopfs: {e}");
        }
        let _ = std::fs::remove_file(&self.image);
        let _ = std::fs::remove_dir(&self.mount_point);
        if let Some(base) = self.image.parent() {
            let _ = std::fs::remove_dir(base);
        }
    }
}
