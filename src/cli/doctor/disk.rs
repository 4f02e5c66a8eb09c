//! The data directory's checks: its filesystem, an O_DIRECT + fdatasync
//! probe (the start-up probe, `platform::probe_data_dir`), and the disk's
//! durable write ceiling (`ceiling::disk_best_group_commit`, what loadgen
//! reports beside its runs).
use std::path::Path;
use std::time::Duration;

use serde_json::json;
use strom::ceiling::{self, DiskCeiling, PrewrittenFile};
use strom::platform;

use super::Check;

/// The file the measurement overwrites, written once before the timing:
/// loadgen's size, so that the two report the same ceiling (about 0.2 s to
/// pre-write at 1.5 GB/s), and the free space the check needs.
const PREWRITTEN_FILE_BYTES: u64 = 256 << 20;

const FS_FIX: &str = "put the data directory on ext4 or xfs on a local disk (mount a volume there, or pick another --data-dir)";

/// The filesystem, O_DIRECT and disk checks of `dir`, in that order. A
/// directory that did not exist is created for them and removed after
/// (as far as it is still empty), so doctor leaves nothing behind.
pub fn data_dir_checks(dir: &Path, seconds: u64) -> Vec<Check> {
    let created: Vec<&Path> = dir.ancestors().take_while(|d| !d.as_os_str().is_empty() && !d.exists()).collect();
    let filesystem = filesystem(dir);
    let o_direct = o_direct(dir);
    let disk = if o_direct.status == super::Status::Ok {
        disk(dir, seconds)
    } else {
        Check::fail("disk", "not measured: the O_DIRECT probe failed", "fix the o_direct check first")
    };
    // Deepest first; remove_dir removes only what is empty.
    for d in &created {
        let _ = std::fs::remove_dir(d);
    }
    vec![filesystem, o_direct, disk]
}

/// The type of the filesystem `dir` is on (or will be, when it does not
/// exist yet), judged as serve judges it at start-up.
fn filesystem(dir: &Path) -> Check {
    const NAME: &str = "filesystem";
    let on = dir.ancestors().find(|d| d.exists()).unwrap_or(Path::new("."));
    let name = match platform::fs_type_name(on) {
        Ok(name) => name,
        Err(e) => return Check::fail(NAME, e.to_string(), "create the data directory, or make its parent readable"),
    };
    let figures = json!({ "type": name, "checked_on": on.display().to_string() });
    let check = match platform::check_fs_type(on, dir) {
        Err(e) => Check::fail(NAME, e.to_string(), FS_FIX),
        // Unfamiliar is not wrong (zfs, bcachefs): the O_DIRECT probe decides.
        Ok(()) if name.starts_with("unknown") => Check::warn(
            NAME,
            format!("{} is on a filesystem Strom has not been tested on: {name}", dir.display()),
            "prefer ext4 or xfs; keep it only if the o_direct check passes and its fdatasync is trusted",
        ),
        Ok(()) => Check::ok(NAME, format!("{} is on {name}", dir.display())),
    };
    check.with_figures(figures)
}

/// A real aligned O_DIRECT write, fdatasync and read-back in `dir`.
fn o_direct(dir: &Path) -> Check {
    match platform::probe_data_dir(dir) {
        Ok(()) => Check::ok("o_direct", format!("a 4 KiB O_DIRECT write, fdatasync and read-back in {} pass", dir.display())),
        Err(e) => Check::fail("o_direct", e.to_string(), FS_FIX),
    }
}

/// The disk's best durable write: 1 MiB O_DIRECT writes, each followed by
/// fdatasync, over space written once before the timing. It is the ceiling
/// of durable produce; a slow figure here is the disk's, not Strom's.
fn disk(dir: &Path, seconds: u64) -> Check {
    let measured = PrewrittenFile::create(dir, PREWRITTEN_FILE_BYTES)
        .and_then(|file| ceiling::disk_best_group_commit(&file, Duration::from_secs(seconds)));
    match measured {
        Ok(c) => Check::ok("disk", describe(&c)).with_figures(figures(&c)),
        Err(e) => Check::fail(
            "disk",
            format!("the measurement failed: {e}"),
            format!(
                "free {} in the data directory's filesystem, or look for device errors (dmesg)",
                platform::human_bytes(PREWRITTEN_FILE_BYTES)
            ),
        ),
    }
}

fn describe(c: &DiskCeiling) -> String {
    format!(
        "{} O_DIRECT writes + fdatasync over {} written before: {:.0} MB/s, latency p50 {} us, p99 {} us, p99.9 {} us, max {} us \
         ({} writes in {:.1} s): the ceiling of durable produce",
        platform::human_bytes(c.write_bytes as u64),
        platform::human_bytes(c.prewritten_file_bytes),
        c.mb_per_sec(),
        c.latency_us(0.5),
        c.latency_us(0.99),
        c.latency_us(0.999),
        c.latency_us(1.0),
        c.writes,
        c.elapsed.as_secs_f64()
    )
}

fn figures(c: &DiskCeiling) -> serde_json::Value {
    json!({
        "write_bytes": c.write_bytes,
        "writes": c.writes,
        "seconds": c.elapsed.as_secs_f64(),
        "mb_per_sec": c.mb_per_sec(),
        "p50_us": c.latency_us(0.5),
        "p99_us": c.latency_us(0.99),
        "p999_us": c.latency_us(0.999),
        "max_us": c.latency_us(1.0),
        "prewritten_file_bytes": c.prewritten_file_bytes,
    })
}
