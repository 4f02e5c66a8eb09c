//! loadgen never offers what the broker refuses, and its report says what
//! it means: a `--batch-bytes` over the broker's limit is refused before
//! the run, with the limit (read from the broker) named; a run at exactly
//! the limit succeeds; a run without consumers reports no consume row,
//! labels its ratios (to the best group commit and to the loop at the
//! broker's write size), announces and times its read-back against the read
//! ceiling, and judges its figures.
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use strom::client::Client;
use strom::config::{EngineConfig, FsyncPolicy};
use strom::server::{Server, ServerConfig};

fn scratch(name: &str) -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    assert_ne!(strom::platform::fs_type_name(&dir).unwrap(), "tmpfs", "the broker needs real O_DIRECT");
    dir
}

fn loadgen(args: &[&str]) -> (std::process::Output, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_loadgen")).args(args).output().expect("loadgen runs");
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout).into_owned(), String::from_utf8_lossy(&out.stderr).into_owned());
    println!("{stdout}");
    eprintln!("{stderr}");
    (out, stdout, stderr)
}

// Proves the embedded broker's limit refuses --batch-bytes 1048589 (one
// over Kafka's message.max.bytes) with exit code 2 before any data directory is made.
#[test]
fn embedded_refuses_an_over_limit_batch_before_starting() {
    let dir = scratch("loadgen-limit-embedded");
    let data = dir.join("data");
    let (out, _, stderr) = loadgen(&["--embedded", "--batch-bytes", "1048589", "--data-dir", data.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr.contains("--batch-bytes 1048589 is over the broker's largest batch, 1048588 bytes"), "{stderr}");
    assert!(!data.exists(), "a refused run made its data directory");
    std::fs::remove_dir_all(&dir).unwrap();
}

// Proves a running server's limit is read from it (ServerInfo): a server
// with a 256 KiB batch limit answers its own limits, and loadgen --addr
// refuses 300,000 naming 262144, before it creates its topic.
#[test]
fn a_running_servers_limit_is_read_from_it() {
    let dir = scratch("loadgen-limit-server");
    let engine_cfg =
        EngineConfig { cores: 1, logs_on_create: 1, batch_bytes_max: 256 << 10, fsync: FsyncPolicy::Never, ..EngineConfig::default() };
    let server_cfg = ServerConfig { listen: "127.0.0.1:0".parse().unwrap(), ..ServerConfig::default() };
    let server = Server::start(&dir.join("data"), engine_cfg, server_cfg.clone()).unwrap();
    let addr = server.local_addr();
    let mut client = Client::connect_timeout(addr, Duration::from_secs(10)).unwrap();
    let info = client.server_info().unwrap();
    let limits = server.engine().limits();
    assert_eq!(info.protocol_version, strom::proto::VERSION);
    assert_eq!(info.server_version, env!("CARGO_PKG_VERSION"), "loadgen and strom share the workspace version");
    assert_eq!((info.cores as usize, info.fsync.as_str()), (limits.cores, "never"));
    assert_eq!((info.batch_bytes_max as usize, info.partitions_per_topic_max), (limits.batch_bytes_max, limits.partitions_per_topic_max));
    assert_eq!((info.batch_bytes_max, info.frame_bytes_max as usize), (256 << 10, server_cfg.frame_bytes_max));

    let (out, _, stderr) = loadgen(&["--addr", &addr.to_string(), "--batch-bytes", "300000", "--no-ceiling"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr.contains("--batch-bytes 300000 is over the broker's largest batch, 262144 bytes"), "{stderr}");
    assert!(client.metadata(&[]).unwrap().topics.is_empty(), "the refused run created its topic");
    drop(client);
    server.shutdown().unwrap();
    std::fs::remove_dir_all(&dir).unwrap();
}

// Proves a run at exactly the broker's largest batch succeeds with no
// error, and that a report without consumers has no consume row and no
// 0.00x, labels every ratio by what it compares, states the window,
// announces the read-back with its time, and gives a verdict per figure.
#[test]
fn a_batch_at_the_limit_runs_and_the_report_says_what_it_means() {
    let dir = scratch("loadgen-limit-exact");
    let json = dir.join("report.json");
    let (out, stdout, stderr) = loadgen(&[
        "--embedded",
        "--batch-bytes",
        "1048588",
        "--consumers",
        "0",
        "--duration",
        "1",
        "--warmup",
        "0.3",
        "--data-dir",
        dir.join("data").to_str().unwrap(),
        "--json",
        json.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "loadgen failed: {:?}", out.status);
    let report: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    assert_eq!(report["errors"]["total"], 0);
    assert_eq!(report["config"]["batch_bytes"], 1_048_588);
    assert!(report["consume"].is_null() && report["e2e_latency_us"].is_null(), "no consumers, no consume figures: {report:#}");
    assert!(report["ceilings"].get("consume_ratio_to_loopback").is_none());
    let verdicts = report["verdicts"].as_array().unwrap();
    // No consumer, 1 MiB records: producing alone, judged at 0.9x of the best group commit.
    assert!(verdicts.iter().any(|v| v["figure"] == "produce_to_disk_best" && v["target"] == 0.9), "{verdicts:?}");
    assert!(verdicts.iter().any(|v| v["figure"] == "read_back_to_disk_read" && v["target"] == 0.8), "{verdicts:?}");
    assert!(!verdicts.iter().any(|v| v["figure"] == "produce_to_disk"), "the loop at the write size is not judged: {verdicts:?}");
    let f = |p: &str| report.pointer(p).and_then(serde_json::Value::as_f64).unwrap_or_else(|| panic!("no {p}: {report:#}"));
    assert!(f("/ceilings/disk_best_write/mb_per_sec") > 0.0 && f("/ceilings/disk_read/mb_per_sec") > 0.0);
    assert!(f("/ceilings/disk_write_fdatasync/mb_per_sec") > 0.0, "the loop at the broker's write size is still reported");
    assert!(f("/ceilings/read_back_ratio_to_disk_read") > 0.0);
    let acked = report["verify"]["acked_run_records"].as_u64().unwrap();
    assert!(acked >= report["produce"]["records"].as_u64().unwrap(), "the run's records include the window's");
    assert_eq!(report["verify"]["readback"]["records"].as_u64(), Some(acked));
    assert_eq!(report["read_back"]["records"].as_u64(), Some(acked));
    let (bytes, secs) = (f("/read_back/bytes"), f("/read_back/secs"));
    assert!(bytes > 0.0 && secs > 0.0 && (f("/read_back/mb_per_sec") - bytes / secs / 1e6).abs() < 1e-6, "{report:#}");

    let lines: Vec<&str> = stdout.lines().collect();
    assert!(!lines.iter().any(|l| l.trim_start().starts_with("consume ")), "a consume row without consumers:\n{stdout}");
    assert!(!stdout.contains("0.00x"), "{stdout}");
    assert!(lines.iter().any(|l| l.contains("window: 1.0 s measured, after 0.3 s of warm-up")), "{stdout}");
    assert!(lines.iter().any(|l| l.contains("-> produce / disk best group commit (1 MiB over pre-written space) ")), "{stdout}");
    assert!(lines.iter().any(|l| l.contains("-> produce / disk loop at the broker's write size ")), "{stdout}");
    assert!(lines.iter().any(|l| l.contains("sequential O_DIRECT read") && l.contains("-> read-back / disk read ")), "{stdout}");
    assert!(lines.iter().any(|l| l.contains("produce / loopback ")), "{stdout}");
    assert!(lines.iter().any(|l| l.contains("every record acknowledged in the run") && l.contains("read back after the run")), "{stdout}");
    let verdict_at = lines.iter().position(|l| l.starts_with("verdict (targets: docs/LOADGEN.md)")).expect("a verdict section");
    let verdict = lines[verdict_at + 1].trim_start();
    assert!(
        (verdict.starts_with("ok ") || verdict.starts_with("below "))
            && verdict.contains("durable produce / disk best group commit (1 MiB over pre-written space)"),
        "{verdict}"
    );
    assert!(stderr.contains("verifying: reading back") && stderr.contains("records read back and checked in"), "{stderr}");
    std::fs::remove_dir_all(&dir).unwrap();
}
