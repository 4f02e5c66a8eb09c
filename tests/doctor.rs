//! `strom doctor` on this machine, and the systemd unit in deploy/.
mod harness;

use std::path::{Path, PathBuf};
use std::process::Command;

use harness::skip::{self, Need};

fn main() {
    skip::main(vec![
        skip::trial("every_check_prints_one_line_with_its_fix", &[], every_check_prints_one_line_with_its_fix),
        skip::trial("json_has_every_check_and_the_disk_figures", &[], json_has_every_check_and_the_disk_figures),
        skip::trial("low_limits_warn_with_the_setting_and_exit_0", &[LIMIT_TOOLS], low_limits_warn_with_the_setting_and_exit_0),
        skip::trial("memlock_follows_the_config_file_and_variables", &[], memlock_follows_the_config_file_and_variables),
        skip::trial("tmpfs_data_dir_fails_o_direct", &[Need::Tmpfs], tmpfs_data_dir_fails_o_direct),
        skip::trial("systemd_unit_verifies", &[Need::Tools(&["systemd-analyze"], "systemd")], systemd_unit_verifies),
    ]);
}

/// What running doctor under low limits as a user without CAP_IPC_LOCK takes
/// (as root: setpriv too), as in tests/any_user.rs.
const LIMIT_TOOLS: Need = Need::Tools(&["prlimit", "setpriv"], "util-linux");

/// Every check, in the order doctor prints them (src/cli/doctor/mod.rs).
const CHECKS: [&str; 10] =
    ["kernel", "io_uring_sysctl", "io_uring", "seccomp", "memlock", "open_files", "cpus", "filesystem", "o_direct", "disk"];

/// A data directory under target/ that does not exist yet: doctor must
/// create it for its probes and remove it again.
fn fresh_dir(name: &str) -> PathBuf {
    let parent = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/tmp-doctor");
    std::fs::create_dir_all(&parent).unwrap();
    let dir = parent.join(format!("{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

/// Runs `strom doctor --seconds 1 --data-dir DIR` with `extra`; returns
/// the exit code and stdout.
fn doctor(dir: &Path, extra: &[&str]) -> (i32, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_strom"))
        .args(["doctor", "--seconds", "1", "--data-dir", dir.to_str().unwrap()])
        .args(extra)
        .output()
        .expect("run strom doctor");
    (out.status.code().expect("doctor exited, not killed"), String::from_utf8(out.stdout).expect("utf-8 output"))
}

/// A line's status, name and the rest, split on the runs of spaces between them.
fn fields(line: &str) -> (&str, &str, &str) {
    let (status, rest) = line.split_once(' ').unwrap_or_else(|| panic!("no status: {line}"));
    let (name, found) = rest.trim_start().split_once(' ').unwrap_or_else(|| panic!("no name: {line}"));
    (status, name, found.trim_start())
}

// Proves: on a real filesystem, doctor prints one line per check, in order,
// each `ok`, `warn` or `fail` with what it found, a fix exactly on warn and
// fail; the O_DIRECT probe and the disk measurement pass here with figures;
// the exit code is 0 exactly when no line fails; the directory doctor had to
// create is gone afterwards.
fn every_check_prints_one_line_with_its_fix() {
    let dir = fresh_dir("lines");
    let (code, stdout) = doctor(&dir, &[]);
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), CHECKS.len(), "{stdout}");
    for (line, expected) in lines.iter().zip(CHECKS) {
        let (status, name, found) = fields(line);
        assert_eq!(name, expected, "{line}");
        assert!(["ok", "warn", "fail"].contains(&status), "{line}");
        assert!(!found.is_empty() && !found.starts_with("-- fix:"), "nothing found: {line}");
        let fix = found.split_once(" -- fix: ").map(|(_, fix)| fix);
        assert_eq!(fix.is_some(), status != "ok", "a fix exactly on warn and fail: {line}");
        assert!(fix.is_none_or(|f| !f.trim().is_empty()), "{line}");
    }
    let status_of = |name: &str| fields(lines[CHECKS.iter().position(|&c| c == name).unwrap()]).0;
    assert_eq!(status_of("o_direct"), "ok", "target/ is on a real filesystem: {stdout}");
    assert_eq!(status_of("disk"), "ok", "{stdout}");
    assert!(lines[CHECKS.len() - 1].contains("MB/s") && lines[CHECKS.len() - 1].contains("p99"), "{stdout}");
    let failed = lines.iter().any(|l| l.starts_with("fail"));
    assert_eq!(code, i32::from(failed), "exit 1 exactly when a check fails: {stdout}");
    assert!(!dir.exists(), "doctor left the directory it created");
}

// Proves: --json prints one object that parses, with every check by name in
// order, a status and a finding each, `failed` agreeing with the statuses
// and the exit code, and the disk measurement's figures consistent.
fn json_has_every_check_and_the_disk_figures() {
    let dir = fresh_dir("json");
    let (code, stdout) = doctor(&dir, &["--json"]);
    let report: serde_json::Value = serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("{e}: {stdout}"));
    let checks = report["checks"].as_array().expect("a checks array");
    let names: Vec<&str> = checks.iter().map(|c| c["name"].as_str().unwrap()).collect();
    assert_eq!(names, CHECKS);
    for c in checks {
        let status = c["status"].as_str().unwrap();
        assert!(["ok", "warn", "fail"].contains(&status), "{c}");
        assert!(!c["found"].as_str().unwrap().is_empty(), "{c}");
        assert_eq!(c["fix"].is_string(), status != "ok", "{c}");
    }
    let failed = checks.iter().any(|c| c["status"] == "fail");
    assert_eq!(report["failed"], failed);
    assert_eq!(code, i32::from(failed));
    let disk = &checks[CHECKS.len() - 1]["figures"];
    assert_eq!(disk["write_bytes"], 1 << 20, "{disk}");
    assert!(disk["writes"].as_u64().unwrap() >= 1 && disk["mb_per_sec"].as_f64().unwrap() > 0.0, "{disk}");
    assert!(disk["p50_us"].as_u64().unwrap() <= disk["max_us"].as_u64().unwrap(), "{disk}");
    let memlock = &checks[CHECKS.iter().position(|&c| c == "memlock").unwrap()]["figures"];
    assert!(memlock["needed_bytes"].as_u64().unwrap() > memlock["buffer_bytes"].as_u64().unwrap(), "{memlock}");
    assert!(!dir.exists(), "doctor left the directory it created");
}

// Proves: under an 8 MiB RLIMIT_MEMLOCK, without CAP_IPC_LOCK, and a hard
// RLIMIT_NOFILE of 4096, the memlock and open_files lines warn and name the
// systemd setting and the ulimit command to change; warnings alone leave
// the exit code 0.
fn low_limits_warn_with_the_setting_and_exit_0() {
    let dir = fresh_dir("limits");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::set_permissions(&dir, std::os::unix::fs::PermissionsExt::from_mode(0o777)).unwrap();
    let mut cmd = Command::new("prlimit");
    cmd.args(["--memlock=8388608:8388608", "--nofile=1024:4096"]);
    if harness::skip::is_root() {
        cmd.args(["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups", "--"]);
    } else {
        cmd.arg("--");
    }
    let out = cmd
        .arg(env!("CARGO_BIN_EXE_strom"))
        .args(["doctor", "--seconds", "1", "--data-dir"])
        .arg(&dir)
        .output()
        .expect("run strom doctor under prlimit");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let _ = std::fs::remove_dir_all(&dir);
    let line = |name: &str| stdout.lines().find(|l| fields(l).1 == name).unwrap_or_else(|| panic!("no {name} line: {stdout}"));
    let memlock = line("memlock");
    assert_eq!(fields(memlock).0, "warn", "{stdout}");
    assert!(
        memlock.contains("RLIMIT_MEMLOCK 8 MiB") && memlock.contains("-- fix: LimitMEMLOCK=") && memlock.contains("ulimit -l "),
        "{memlock}"
    );
    let open_files = line("open_files");
    assert_eq!(fields(open_files).0, "warn", "{stdout}");
    assert!(open_files.contains("hard 4096") && open_files.contains("LimitNOFILE=65536"), "{open_files}");
    if !stdout.lines().any(|l| l.starts_with("fail")) {
        assert_eq!(out.status.code(), Some(0), "warnings alone fail nothing: {stdout}");
    }
}

// Proves: a data directory on tmpfs is reported `fail` for its filesystem
// and for O_DIRECT with the fix, the disk is not measured there, doctor
// exits 1, and it leaves nothing in /dev/shm.
fn tmpfs_data_dir_fails_o_direct() {
    let dir = Path::new("/dev/shm").join(format!("strom-doctor-{}", std::process::id()));
    let (code, stdout) = doctor(&dir, &[]);
    let line = |name: &str| stdout.lines().find(|l| fields(l).1 == name).unwrap_or_else(|| panic!("no {name} line: {stdout}"));
    for name in ["filesystem", "o_direct", "disk"] {
        assert_eq!(fields(line(name)).0, "fail", "{stdout}");
    }
    assert!(line("o_direct").contains("tmpfs") && line("o_direct").contains("-- fix: ") && line("o_direct").contains("ext4"), "{stdout}");
    assert_eq!(code, 1, "{stdout}");
    assert!(!dir.exists(), "doctor left {} behind", dir.display());
}

// Proves: systemd accepts deploy/strom.service: no unknown key, no bad
// value, no missing binary (ExecStart is pointed at the one just built, as
// an install would place it), checked by `systemd-analyze verify`.
fn systemd_unit_verifies() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let unit = std::fs::read_to_string(root.join("deploy/strom.service")).unwrap();
    assert!(unit.contains("ExecStart=/usr/local/bin/strom serve"), "the unit runs the installed strom");
    let dir = root.join("target/tmp-doctor").join(format!("unit-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("strom.service");
    std::fs::write(&path, unit.replace("/usr/local/bin/strom", env!("CARGO_BIN_EXE_strom"))).unwrap();
    let out = Command::new("systemd-analyze").arg("verify").arg(&path).output().expect("run systemd-analyze");
    let stderr = String::from_utf8_lossy(&out.stderr);
    let _ = std::fs::remove_dir_all(&dir);
    // verify exits 0 on unknown keys and bad values, only saying so: each of
    // those lines names the file.
    assert!(out.status.success(), "{stderr}");
    assert!(!stderr.contains("strom.service"), "systemd-analyze objects: {stderr}");
}

/// The memlock check's figures from `strom doctor --json` run with `extra`
/// and the environment `envs` (every other STROM_* variable removed).
fn memlock_figures(dir: &Path, extra: &[&str], envs: &[(&str, &str)]) -> Result<serde_json::Value, String> {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_strom"));
    for (k, _) in std::env::vars().filter(|(k, _)| k.starts_with("STROM_")) {
        cmd.env_remove(k);
    }
    let out = cmd
        .args(["doctor", "--json", "--seconds", "1", "--data-dir", dir.to_str().unwrap()])
        .args(extra)
        .envs(envs.iter().copied())
        .output()
        .expect("run strom doctor");
    let stdout = String::from_utf8(out.stdout).unwrap();
    if stdout.is_empty() {
        return Err(String::from_utf8(out.stderr).unwrap());
    }
    let report: serde_json::Value = serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("{e}: {stdout}"));
    let memlock = report["checks"].as_array().unwrap().iter().find(|c| c["name"] == "memlock").expect("a memlock check");
    Ok(memlock["figures"].clone())
}

// Proves: the memlock check counts what the configuration doctor is given
// registers: `--config FILE` sets its cores and caps its buffers with
// registered_bytes_max; a STROM_* variable overrides the file as it does for
// serve; a file with an unknown key stops doctor with exit 1 naming the key.
fn memlock_follows_the_config_file_and_variables() {
    let dir = fresh_dir("config");
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("strom.toml");
    std::fs::write(&file, "cores = 1\nregistered_bytes_max = 8388608\n").unwrap();
    let config = ["--config", file.to_str().unwrap()];
    let capped = memlock_figures(&dir, &config, &[]).unwrap();
    assert_eq!(capped["cores"], 1, "{capped}");
    assert!(capped["buffer_bytes"].as_u64().unwrap() <= 8 << 20, "{capped}");
    let two = memlock_figures(&dir, &config, &[("STROM_CORES", "2")]).unwrap();
    assert_eq!(two["cores"], 2, "the variable is over the file: {two}");
    assert!(two["ring_bytes"].as_u64().unwrap() > capped["ring_bytes"].as_u64().unwrap(), "{two} {capped}");
    let defaults = memlock_figures(&dir, &[], &[("STROM_CORES", "1")]).unwrap();
    assert!(defaults["buffer_bytes"].as_u64().unwrap() > 8 << 20, "without the cap every buffer registers: {defaults}");
    std::fs::write(&file, "cores = 1\nno_such_key = 3\n").unwrap();
    let err = memlock_figures(&dir, &config, &[]).unwrap_err();
    assert!(err.contains("unknown key `no_such_key`"), "{err}");
    std::fs::remove_dir_all(&dir).unwrap();
}
