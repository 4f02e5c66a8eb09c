//! Strom starts and works for a user who is not root, under the common
//! 8 MiB RLIMIT_MEMLOCK: the engine, `strom serve` and `loadgen
//! --embedded` register what fits and serve the rest with plain I/O. And a
//! refused start leaves the data directory as it was.
//!
//! As root, the children run as `nobody` with RLIMIT_MEMLOCK 8 MiB (setpriv
//! and prlimit, from util-linux); as another user, with RLIMIT_MEMLOCK
//! lowered to 8 MiB. Without those tools the tests are reported as ignored,
//! with the reason (tests/harness/skip.rs).
mod harness;

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use harness::skip::{self, Need};
use harness::{batch, read_to_end, test_dir, values};
use strom::client::Client;
use strom::config::EngineConfig;
use strom::engine::Engine;
use strom::server::{Server, ServerConfig};

/// The limit most distributions give a user who is not root.
const MEMLOCK_BYTES: u64 = 8 << 20;

/// The kernel charges pinned pages per user, across processes: children
/// running as `nobody` at once would share one 8 MiB, so they run one at a time.
static AS_NOBODY: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// What running a child as a limited user takes (as root: setpriv too).
const LIMIT_TOOLS: Need = Need::Tools(&["prlimit", "setpriv"], "util-linux");

fn main() {
    skip::main(vec![
        skip::trial("engine_with_partial_registration_round_trips", &[], engine_with_partial_registration_round_trips),
        // Run only by engine_as_limited_user, as its child (`--include-ignored`).
        libtest_mimic::Trial::test("engine_child", || {
            engine_child();
            Ok(())
        })
        .with_ignored_flag(true),
        skip::trial("engine_as_limited_user", &[LIMIT_TOOLS], engine_as_limited_user),
        skip::trial("serve_as_limited_user", &[LIMIT_TOOLS], serve_as_limited_user),
        skip::trial("loadgen_embedded_as_limited_user", &[LIMIT_TOOLS], loadgen_embedded_as_limited_user),
        skip::trial("refused_start_leaves_nothing", &[], refused_start_leaves_nothing),
        skip::trial("refused_tmpfs_start_leaves_nothing", &[Need::Tmpfs], refused_tmpfs_start_leaves_nothing),
    ]);
}

/// A command that runs `program` as a user without CAP_IPC_LOCK under an
/// 8 MiB RLIMIT_MEMLOCK (the tests that use it need [`LIMIT_TOOLS`]).
fn limited(program: &Path) -> Command {
    let mut cmd = Command::new("prlimit");
    cmd.arg(format!("--memlock={MEMLOCK_BYTES}:{MEMLOCK_BYTES}"));
    // /proc/self belongs to the process's effective user.
    if std::fs::metadata("/proc/self").unwrap().uid() == 0 {
        cmd.args(["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups", "--"]);
    } else {
        cmd.arg("--");
    }
    cmd.arg(program);
    cmd
}

/// A fresh directory under target/ (ext4) that `nobody` may write.
fn open_dir(name: &str) -> PathBuf {
    let dir = test_dir(name);
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o777)).unwrap();
    dir
}

/// Bytes of buffers a default 2-core engine with one log per core allocates
/// (64 write buffers of 1 MiB + 8 KiB per log, 8 read buffers of 4 KiB more).
const ENGINE_BUFFER_BYTES: usize = 2 * (64 * ((1 << 20) + 8192) + 8 * ((1 << 20) + 8192 + 4096));

// Proves: an engine with nothing registered, and one with part registered,
// write through plain WRITE, read old data from disk through plain READ,
// and every record comes back; the registration says what it chose.
fn engine_with_partial_registration_round_trips() {
    for (name, registered_max) in [("none", 0), ("part", 3 << 16)] {
        let dir = test_dir(&format!("any-user-engine-{name}"));
        let cfg = EngineConfig {
            cores: 1,
            logs_on_create: 1,
            pin_cores: false,
            registered_bytes_max: Some(registered_max),
            ..EngineConfig::small_for_tests()
        };
        let e = Engine::open(&dir, cfg).unwrap();
        let reg = e.registration().clone();
        assert!(reg.is_cut() && reg.registered_bytes <= registered_max, "{reg:?}");
        assert!(reg.to_string().contains("unregistered I/O"), "{reg}");
        e.create_topic("t", 2).unwrap();
        // Far more than the 4 x 64 KiB tail cache: the reads go to disk.
        for i in 0..300 {
            e.append("t", (i % 2) as u32, batch(&format!("{i:0>300}"), 3, i)).unwrap();
        }
        let got = read_to_end(&e, "t", 1, 0, 8192);
        assert_eq!(got.len(), 150 * 3);
        assert!(got.iter().enumerate().all(|(i, (o, _))| *o == i as u64));
        assert_eq!(got[3].1, format!("{:0>300}-0", 3));
        e.shutdown().unwrap();
    }
}

// Proves (run in a child by `engine_as_limited_user`, never alone): the
// default engine, two cores, opens under an 8 MiB memlock limit without
// CAP_IPC_LOCK, registers at most the limit, appends and reads back.
fn engine_child() {
    let dir = PathBuf::from(std::env::var("STROM_ANY_USER_DIR").expect("run by engine_as_limited_user"));
    let e = Engine::open(&dir, EngineConfig { cores: 2, logs_on_create: 2, pin_cores: false, ..EngineConfig::default() }).unwrap();
    let reg = e.registration().clone();
    assert_eq!(reg.buffer_bytes, ENGINE_BUFFER_BYTES, "{reg:?}");
    assert!(reg.is_cut() && reg.registered_bytes <= MEMLOCK_BYTES as usize, "{reg:?}");
    e.create_topic("t", 4).unwrap();
    for i in 0..200 {
        e.append("t", i % 4, batch(&format!("r{i}"), 5, i as i64)).unwrap();
    }
    for p in 0..4 {
        let got = read_to_end(&e, "t", p, 0, 1 << 20);
        assert_eq!(got.len(), 50 * 5);
        assert_eq!(got[5].1, format!("r{}-0", p + 4));
    }
    e.shutdown().unwrap();
    println!("ENGINE CHILD OK: {reg}");
}

// Proves: the engine starts and works as a user without CAP_IPC_LOCK under
// an 8 MiB memlock limit (this test binary, re-run as that user).
fn engine_as_limited_user() {
    let _one_at_a_time = AS_NOBODY.lock().unwrap_or_else(|e| e.into_inner());
    let exe = std::env::current_exe().unwrap();
    let mut cmd = limited(&exe);
    let dir = open_dir("any-user-engine-child");
    let out = cmd.args(["--exact", "engine_child", "--include-ignored", "--nocapture"]).env("STROM_ANY_USER_DIR", &dir).output().unwrap();
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success() && text.contains("ENGINE CHILD OK: registered"), "{text}");
}

// Proves: `strom serve` starts as a user without CAP_IPC_LOCK under an
// 8 MiB memlock limit, says in its one start-up line what it registered,
// and a produce and a fetch through it round-trip.
fn serve_as_limited_user() {
    let _one_at_a_time = AS_NOBODY.lock().unwrap_or_else(|e| e.into_inner());
    let mut cmd = limited(Path::new(env!("CARGO_BIN_EXE_strom")));
    let dir = open_dir("any-user-serve");
    cmd.args(["serve", "--listen", "127.0.0.1:0", "--cores", "2", "--data-dir"]).arg(&dir);
    let c = harness::child::spawn_until(&mut cmd, "strom: serving on ").unwrap_or_else(|lines| panic!("no start: {lines:?}"));
    let mut child = Reaped(c.child);
    assert!(c.lines.lock().unwrap().is_empty(), "more than one start-up line: {:?}", c.lines.lock().unwrap());
    assert!(c.ready.contains("; registered ") && c.ready.contains("RLIMIT_MEMLOCK 8 MiB"), "{}", c.ready);
    let addr: std::net::SocketAddr = c.ready.split(',').next().unwrap().parse().unwrap();
    let mut client = Client::connect_timeout(addr, Duration::from_secs(10)).unwrap();
    client.set_timeout(Some(Duration::from_secs(30))).unwrap();
    client.create_topic("t", 1).unwrap();
    for i in 0..20 {
        let value = format!("value {i}");
        assert_eq!(client.produce_values("t", 0, &[value.as_bytes()]).unwrap().base_offset, i);
    }
    let fetched = client.fetch("t", 0, 0, 1 << 20, Duration::ZERO).unwrap();
    let got = values(&fetched.batches);
    assert_eq!(got.len(), 20);
    assert_eq!(got[7], (7, "value 7".to_string()));
    drop(client);
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(child.0.id() as i32), nix::sys::signal::Signal::SIGTERM).unwrap();
    assert!(child.0.wait().unwrap().success());
}

/// A child killed and reaped however the test ends (a failed assertion
/// must not leave a server running as nobody, holding its memlock share).
struct Reaped(std::process::Child);

impl Drop for Reaped {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The loadgen binary beside this test binary, built if it is not there.
fn loadgen_bin() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let profile_dir = exe.parent().and_then(Path::parent).expect("a test binary lives in target/PROFILE/deps");
    let bin = profile_dir.join("loadgen");
    if !bin.exists() {
        let release = profile_dir.file_name().is_some_and(|n| n == "release");
        let mut build = Command::new(env!("CARGO"));
        build.args(["build", "-p", "loadgen"]).current_dir(env!("CARGO_MANIFEST_DIR"));
        if release {
            build.arg("--release");
        }
        let ok = build.status().expect("run cargo build -p loadgen").success();
        assert!(ok && bin.exists(), "loadgen did not build at {}", bin.display());
    }
    bin
}

/// The loadgen temporary directories left in `tmp`.
fn leftovers(tmp: &Path) -> Vec<String> {
    std::fs::read_dir(tmp)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("strom-loadgen-"))
        .collect()
}

// Proves: `loadgen --embedded --duration 1` runs to a verified report as a
// user without CAP_IPC_LOCK under an 8 MiB memlock limit, notes what the
// broker registered, and removes its temporary directory; a refused start
// and a Ctrl-C (SIGINT) remove it too.
fn loadgen_embedded_as_limited_user() {
    let _one_at_a_time = AS_NOBODY.lock().unwrap_or_else(|e| e.into_inner());
    let bin = loadgen_bin();
    let mut cmd = limited(&bin);
    let tmp = open_dir("any-user-loadgen");
    let out = cmd.args(["--embedded", "--duration", "1", "--warmup", "0.5"]).env("TMPDIR", &tmp).output().unwrap();
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "{text}");
    assert!(text.contains("verify") && text.contains("registered"), "{text}");
    assert_eq!(leftovers(&tmp), Vec::<String>::new(), "a finished run left its directory");

    // A start the broker refuses (cores 0 fails validation).
    let out = limited(&bin).args(["--embedded", "--duration", "1", "--cores", "0"]).env("TMPDIR", &tmp).output().unwrap();
    assert!(!out.status.success());
    assert_eq!(leftovers(&tmp), Vec::<String>::new(), "a refused start left its directory");

    // Ctrl-C once the run has made its directory.
    let mut child = Reaped(limited(&bin).args(["--embedded", "--duration", "60"]).env("TMPDIR", &tmp).spawn().unwrap());
    let made = (0..600).any(|_| {
        std::thread::sleep(Duration::from_millis(50));
        !leftovers(&tmp).is_empty()
    });
    assert!(made, "loadgen never made its directory");
    // prlimit and setpriv exec, so the child's pid is loadgen's.
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(child.0.id() as i32), nix::sys::signal::Signal::SIGINT).unwrap();
    let status = child.0.wait().unwrap();
    assert!(!status.success());
    assert_eq!(leftovers(&tmp), Vec::<String>::new(), "Ctrl-C left the directory");
}

/// Every entry under `dir`, recursively, as paths relative to it.
fn tree(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else { return out };
    for e in entries.map(Result::unwrap) {
        out.push(e.path().strip_prefix(dir).unwrap().to_path_buf());
        if e.file_type().unwrap().is_dir() {
            out.extend(tree(&e.path()).into_iter().map(|p| PathBuf::from(e.file_name()).join(p)));
        }
    }
    out.sort();
    out
}

// Proves: a directory on tmpfs, refused, is not created.
fn refused_tmpfs_start_leaves_nothing() {
    let on_tmpfs = Path::new("/dev/shm").join(format!("strom-any-user-{}/data", std::process::id()));
    assert!(Engine::open(&on_tmpfs, EngineConfig::small_for_tests()).is_err());
    assert!(!on_tmpfs.parent().unwrap().exists(), "a refused tmpfs directory was created");
}

// Proves: a refused start creates and writes nothing: an invalid
// configuration, an address in use and a core that
// cannot start leave a missing directory missing and an empty one empty
// (so strom.meta does not fix the log count of a start that never was).
fn refused_start_leaves_nothing() {
    let base = test_dir("any-user-refused");
    let missing = base.join("new/data");
    let bad = EngineConfig { write_depth: 0, ..EngineConfig::small_for_tests() };
    assert!(Engine::open(&missing, bad).is_err());
    assert!(!base.join("new").exists(), "an invalid configuration created the directory");

    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let server_cfg = ServerConfig { listen: taken.local_addr().unwrap(), ..ServerConfig::default() };
    assert!(Server::start(&missing, EngineConfig { pin_cores: false, ..EngineConfig::small_for_tests() }, server_cfg).is_err());
    assert!(!base.join("new").exists(), "an address in use created the directory");

    // The core's ring cannot be set up with more entries than the kernel allows.
    let empty = base.join("empty");
    std::fs::create_dir_all(&empty).unwrap();
    let no_ring = EngineConfig { ring_entries: 1 << 20, pin_cores: false, ..EngineConfig::small_for_tests() };
    assert!(Engine::open(&empty, no_ring.clone()).is_err());
    assert_eq!(tree(&empty), Vec::<PathBuf>::new(), "a failed core start left files");
    assert!(Engine::open(&missing, no_ring).is_err());
    assert!(!base.join("new").exists(), "a failed core start left the directory");
}
