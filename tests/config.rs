//! `strom serve --config FILE`, the STROM_* variables and `strom config
//! check|default`, run as an operator would: the effective configuration
//! `config check` prints is what precedence is checked on, and a server
//! started from a file serves where the file says.
mod harness;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use harness::child;
use harness::test_dir;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use strom::client::Client;

/// `strom ARGS` with `envs` and no STROM_* variable from the test's own
/// environment, so that a developer's settings cannot change the result.
fn strom_cmd(args: &[&str], envs: &[(&str, &str)]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_strom"));
    cmd.args(args);
    for (key, _) in std::env::vars().filter(|(k, _)| k.starts_with("STROM_")) {
        cmd.env_remove(key);
    }
    cmd.envs(envs.iter().copied());
    cmd
}

fn strom(args: &[&str], envs: &[(&str, &str)]) -> (bool, String, String) {
    let out: Output = strom_cmd(args, envs).output().expect("run strom");
    (out.status.success(), String::from_utf8_lossy(&out.stdout).into_owned(), String::from_utf8_lossy(&out.stderr).into_owned())
}

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

/// `config check` output line for `key`: (its TOML value, where it came from).
fn effective<'a>(out: &'a str, key: &str) -> (&'a str, &'a str) {
    let line = out.lines().find(|l| l.starts_with(&format!("{key} = "))).unwrap_or_else(|| panic!("no {key} in:\n{out}"));
    let (value, source) = line[key.len() + 3..].split_once("  # ").unwrap_or_else(|| panic!("no source on {line:?}"));
    (value, source)
}

// Proves: a flag beats its STROM_* variable, which beats the file, which
// beats the default, each setting saying where its value came from.
#[test]
fn precedence_is_flag_then_env_then_file_then_default() {
    let dir = test_dir("config-precedence");
    let file = "connections_max = 11\ninflight_per_conn_max = 12\nidle_timeout_ms = 13000\nfsync = \"interval:7\"\n";
    let path = write(&dir, "strom.toml", file);
    let envs = [("STROM_CONNECTIONS_MAX", "21"), ("STROM_INFLIGHT_PER_CONN_MAX", "22"), ("STROM_CORES", "3")];
    let (ok, out, err) = strom(&["config", "check", path.to_str().unwrap(), "--connections-max", "31"], &envs);
    assert!(ok, "config check failed: {err}");
    assert_eq!(effective(&out, "connections_max"), ("31", "--connections-max"), "flag over env and file");
    assert_eq!(effective(&out, "inflight_per_conn_max"), ("22", "STROM_INFLIGHT_PER_CONN_MAX"), "env over file");
    assert_eq!(effective(&out, "cores"), ("3", "STROM_CORES"), "env over an unset setting");
    assert_eq!(effective(&out, "idle_timeout_ms"), ("13000", "file"), "file over default");
    assert_eq!(effective(&out, "fsync"), ("\"interval:7\"", "file"));
    assert_eq!(effective(&out, "header_timeout_ms"), ("10000", "default"));
    assert!(out.lines().any(|l| l == "# kafka_listen is not set"), "{out}");
    // The output is TOML, and the values in it are the effective ones.
    let table: toml::Table = out.parse().expect("config check prints TOML");
    assert_eq!(table["connections_max"].as_integer(), Some(31));
}

// Proves: an unknown key is refused, by `config check` and by `serve`
// (which then does not start), with the key named.
#[test]
fn unknown_key_is_refused_naming_it() {
    let dir = test_dir("config-unknown");
    let data = dir.join("data");
    let path = write(&dir, "strom.toml", &format!("data_dir = {:?}\nlisten = \"127.0.0.1:0\"\nlisten_adress = \"127.0.0.1:0\"\n", data));
    let (ok, _, err) = strom(&["config", "check", path.to_str().unwrap()], &[]);
    assert!(!ok && err.contains("unknown key `listen_adress`"), "config check: {err}");
    let (ok, _, err) = strom(&["serve", "--config", path.to_str().unwrap()], &[]);
    assert!(!ok && err.contains("unknown key `listen_adress`"), "serve: {err}");
    assert!(!err.contains("serving on") && !data.exists(), "serve started with an unknown key: {err}");
}

// Proves: a value its flag would refuse, a value of the wrong TOML type, a
// limit the server refuses and a TOML syntax error are each refused, naming
// the key (or the line), through the file and through STROM_CONFIG.
#[test]
fn bad_values_are_refused_naming_the_key() {
    let dir = test_dir("config-bad");
    let cases = [
        ("fsync = \"sometimes\"\n", "`fsync`", "always, never or interval"),
        ("frame_bytes_max = \"big\"\n", "`frame_bytes_max`", "invalid digit"),
        ("listen = \"nowhere\"\n", "`listen`", "invalid"),
        ("retention_ms = -2\n", "`retention_ms`", "-1 for no limit"),
        ("cores = [1]\n", "`cores`", "not array"),
        ("frame_bytes_max = 100\n", "frame_bytes_max 100", "between 1 KiB and 4 GiB"),
        ("kafka_advertise = \"a:1\"\n", "kafka_advertise", "needs kafka_listen"),
        ("cores = 2\nfsync = \n", "line 2", "TOML"),
    ];
    for (i, (text, names, why)) in cases.iter().enumerate() {
        let path = write(&dir, &format!("bad{i}.toml"), text);
        let (ok, _, err) = strom(&["config", "check", path.to_str().unwrap()], &[]);
        assert!(!ok && err.contains(names) && err.contains(why), "{text:?} gave: {err}");
        let (ok, _, err) = strom(&["serve", "--data-dir", dir.join("data").to_str().unwrap()], &[("STROM_CONFIG", path.to_str().unwrap())]);
        assert!(!ok && err.contains(names) && err.contains(why), "serve with {text:?} gave: {err}");
    }
}

// Proves: a bad value in a STROM_* variable is refused naming the
// variable, by serve and by config check, and the same value given as the
// flag is refused naming the flag.
#[test]
fn bad_variables_are_refused_naming_them() {
    let dir = test_dir("config-bad-env");
    let data = dir.join("data");
    let path = write(&dir, "strom.toml", "");
    let env = [("STROM_FSYNC", "sometimes")];
    let (ok, _, err) = strom(&["serve", "--data-dir", data.to_str().unwrap()], &env);
    assert!(!ok && err.contains("STROM_FSYNC=\"sometimes\" is invalid") && err.contains("interval:MS"), "serve: {err}");
    let (ok, _, err) = strom(&["config", "check", path.to_str().unwrap()], &env);
    assert!(!ok && err.contains("STROM_FSYNC=\"sometimes\" is invalid"), "config check: {err}");
    let (ok, _, err) = strom(&["serve", "--data-dir", data.to_str().unwrap(), "--fsync", "sometimes"], &[]);
    assert!(!ok && err.contains("--fsync") && !err.contains("STROM_FSYNC"), "serve --fsync: {err}");
    assert!(!data.exists(), "serve started with a bad value");
}

// Proves: what `config default` prints is a file `config check` accepts,
// whose every uncommented value is the effective one; and what `config
// check` prints is itself a file that checks to the same settings.
#[test]
fn default_and_check_round_trip() {
    let dir = test_dir("config-round-trip");
    let (ok, default, err) = strom(&["config", "default"], &[]);
    assert!(ok, "config default failed: {err}");
    let defaults: toml::Table = default.parse().expect("config default prints TOML");
    assert!(defaults.len() >= 10 && defaults.contains_key("listen") && defaults.contains_key("fsync"), "{default}");
    let path = write(&dir, "default.toml", &default);
    let (ok, checked, err) = strom(&["config", "check", path.to_str().unwrap()], &[]);
    assert!(ok, "config check refused config default's output: {err}");
    let effective: toml::Table = checked.parse().expect("config check prints TOML");
    assert_eq!(effective, defaults, "the defaults file does not check to the defaults");
    // Every setting is in both, set or commented out.
    for line in checked.lines().filter(|l| l.starts_with("# ") && l.ends_with(" is not set")) {
        let key = &line[2..line.len() - " is not set".len()];
        assert!(default.contains(&format!("\n#{key} = ")), "{key} is not in config default:\n{default}");
    }
    let again = write(&dir, "effective.toml", &checked);
    let (ok, rechecked, err) = strom(&["config", "check", again.to_str().unwrap()], &[]);
    assert!(ok, "config check refused its own output: {err}");
    assert_eq!(rechecked.parse::<toml::Table>().unwrap(), effective);
}

// Proves: the committed sample config is exactly what `strom config
// default` prints, so the two cannot drift (regenerate it with
// `strom config default > deploy/strom.toml`).
#[test]
fn committed_sample_is_config_default() {
    let (ok, default, err) = strom(&["config", "default"], &[]);
    assert!(ok, "config default failed: {err}");
    let sample = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/strom.toml")).unwrap();
    assert!(sample == default, "deploy/strom.toml differs from `strom config default`; regenerate it");
}

// Proves: `strom --help` lists the config command.
#[test]
fn help_lists_config() {
    let (ok, out, _) = strom(&["--help"], &[]);
    assert!(ok && out.lines().any(|l| l.trim_start().starts_with("config ")), "{out}");
}

// Proves: a server started with only --config takes its data directory,
// address and cores from the file, and serves there.
#[test]
fn serve_with_config_serves_on_the_configured_address() {
    let dir = test_dir("config-serve");
    let data = dir.join("data");
    // A port free now; the file must name it before the server starts.
    let addr = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let text = format!("data_dir = {:?}\nlisten = \"{addr}\"\ncores = 1\nfsync = \"interval:5\"\n", data.to_str().unwrap());
    let path = write(&dir, "strom.toml", &text);
    let mut cmd = strom_cmd(&["serve", "--config", path.to_str().unwrap()], &[]);
    let c = child::spawn_until(&mut cmd, "strom: serving on ").unwrap_or_else(|lines| panic!("serve ended:\n{}", lines.join("\n")));
    let mut child = c.child;
    assert!(c.ready.starts_with(&format!("{addr}, data dir {}", data.display())), "serving on {}", c.ready);
    let mut client = Client::connect(addr).expect("connect to the configured address");
    client.create_topic("events", 2).unwrap();
    let md = client.metadata(&["events"]).unwrap();
    assert_eq!(md.topics[0].partition_cores, vec![0, 0], "one core, as configured");
    drop(client);
    kill(Pid::from_raw(child.id() as i32), Signal::SIGTERM).unwrap();
    assert!(child.wait().unwrap().success(), "serve did not stop cleanly");
}
