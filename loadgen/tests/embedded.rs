//! The whole tool, end to end: `loadgen --embedded` for two seconds writes a
//! report whose JSON has every documented field, checks every record it
//! wrote, and writes the histogram and SVG files. No speed is asserted.
use std::path::PathBuf;
use std::process::Command;

fn scratch(name: &str) -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let fs = strom::platform::fs_type_name(&dir).unwrap();
    assert_ne!(fs, "tmpfs", "{} is on tmpfs: the embedded broker needs real O_DIRECT", dir.display());
    dir
}

fn loadgen(args: &[&str]) -> std::process::Output {
    let out = Command::new(env!("CARGO_BIN_EXE_loadgen")).args(args).output().expect("loadgen runs");
    println!("{}", String::from_utf8_lossy(&out.stdout));
    eprintln!("{}", String::from_utf8_lossy(&out.stderr));
    out
}

// Proves a short default run succeeds, reports every documented JSON field,
// verifies every record it acknowledged, and writes --hgrm and --svg files.
#[test]
fn short_embedded_run_reports_and_verifies() {
    let dir = scratch("loadgen-embedded");
    let json = dir.join("report.json");
    let hgrm = dir.join("hgrm");
    let svg = dir.join("latency.svg");
    let data = dir.join("data");
    let out = loadgen(&[
        "--embedded",
        "--duration",
        "2",
        "--warmup",
        "0.5",
        "--consumers",
        "1",
        "--data-dir",
        data.to_str().unwrap(),
        "--json",
        json.to_str().unwrap(),
        "--hgrm",
        hgrm.to_str().unwrap(),
        "--svg",
        svg.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "loadgen failed: {:?}", out.status);
    let report: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    for path in [
        "/config/producers",
        "/produce/records",
        "/produce/bytes",
        "/produce/records_per_sec",
        "/produce/mb_per_sec",
        "/produce/ack_latency_us/p50",
        "/produce/ack_latency_us/p90",
        "/produce/ack_latency_us/p99",
        "/produce/ack_latency_us/p999",
        "/produce/ack_latency_us/p9999",
        "/produce/ack_latency_us/max",
        "/consume/records",
        "/consume/bytes",
        "/consume/records_per_sec",
        "/consume/mb_per_sec",
        "/e2e_latency_us/p50",
        "/e2e_latency_us/max",
        "/errors/total",
        "/verify/checked",
        "/ceilings/disk_write_fdatasync/mb_per_sec",
        "/ceilings/loopback_tcp/mb_per_sec",
        "/ceilings/produce_ratio_to_disk",
        "/ceilings/disk_best_write/mb_per_sec",
        "/ceilings/disk_best_write/write_bytes",
        "/ceilings/disk_best_write/prewritten_file_bytes",
        "/ceilings/disk_read/mb_per_sec",
        "/ceilings/disk_read/read_bytes",
        "/ceilings/produce_ratio_to_disk_best",
        "/loadgen_cpu/cores",
        "/server/stages_us",
    ] {
        assert!(report.pointer(path).is_some(), "the JSON lacks {path}: {report:#}");
    }
    let n = |p: &str| report.pointer(p).and_then(serde_json::Value::as_u64).unwrap();
    assert!(n("/produce/records") > 0, "nothing was acknowledged in the window");
    assert!(n("/consume/records") > 0, "the consumer read nothing in the window");
    for kind in ["lost", "duplicated", "reordered", "corrupt"] {
        assert_eq!(n(&format!("/verify/{kind}")), 0, "verify/{kind}");
    }
    assert!(n("/verify/checked") >= n("/produce/records"), "every acknowledged record is checked");
    assert_eq!(report["verify"]["clean"], true);
    let figures: Vec<&str> = report["verdicts"].as_array().unwrap().iter().map(|v| v["figure"].as_str().unwrap()).collect();
    assert_eq!(figures, ["produce_to_disk_best", "consume_per_consumer"], "a verdict per figure measured");
    assert_eq!(n("/errors/total"), 0);
    assert_eq!(report["schema"], "strom-loadgen/4");
    assert_eq!((n("/ceilings/disk_best_write/write_bytes"), n("/ceilings/disk_read/read_bytes")), (1 << 20, 1 << 20));
    assert!(report["read_back"].is_null(), "a consumer checked every record: no read-back");
    assert!(std::fs::read_to_string(hgrm.join("produce_ack.hgrm")).unwrap().contains("Total count"));
    assert!(std::fs::read_to_string(hgrm.join("e2e.hgrm")).unwrap().contains("Total count"));
    assert!(std::fs::read_to_string(&svg).unwrap().contains("<polyline"));
    assert!(!data.join("loadgen").exists() || data.exists(), "the data dir given is kept");
    std::fs::remove_dir_all(&dir).unwrap();
}

// Proves bad flags are refused with a message and exit code 2, before any broker starts.
#[test]
fn bad_flags_are_refused() {
    let out = loadgen(&["--embedded", "--msg-size", "8"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--msg-size must be at least 28"));
    let out = loadgen(&["--embedded", "--rate", "-1"]);
    assert_eq!(out.status.code(), Some(2));
    // A running broker's Kafka listener cannot be guessed from --addr.
    let out = loadgen(&["--addr", "127.0.0.1:1", "--kafka"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--kafka with --addr needs --kafka-addr"));
}

// Proves `--kafka` runs the workload twice in one invocation, natively and
// through the Kafka listener, each on its own topic, and that both runs
// appear in the JSON and the table with every acknowledged record verified.
#[test]
fn kafka_run_beside_the_native_one_verifies_every_record() {
    let dir = scratch("loadgen-kafka");
    let json = dir.join("report.json");
    let data = dir.join("data");
    let out = loadgen(&[
        "--embedded",
        "--kafka",
        "--no-ceiling",
        "--duration",
        "1",
        "--warmup",
        "0.3",
        "--consumers",
        "1",
        "--data-dir",
        data.to_str().unwrap(),
        "--json",
        json.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "loadgen --kafka failed: {:?}", out.status);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("native vs Kafka listener"), "the table shows the two runs side by side");
    assert!(stdout.contains("result   both runs: ok"));
    let report: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    let kafka = &report["kafka"];
    assert!(kafka.is_object(), "the JSON has the Kafka run: {report:#}");
    assert!(kafka["kafka"].is_null(), "the Kafka run has no run of its own");
    assert_eq!((report["config"]["protocol"].as_str(), kafka["config"]["protocol"].as_str()), (Some("native"), Some("kafka")));
    assert_eq!((report["config"]["topic"].as_str(), kafka["config"]["topic"].as_str()), (Some("loadgen"), Some("loadgen-kafka")));
    for (name, run) in [("native", &report), ("kafka", kafka)] {
        let n = |p: &str| run.pointer(p).and_then(serde_json::Value::as_u64).unwrap_or_else(|| panic!("{name}: no {p}"));
        assert!(n("/produce/records") > 0, "{name}: nothing was acknowledged in the window");
        assert!(n("/consume/records") > 0, "{name}: the consumer read nothing in the window");
        assert!(n("/produce/ack_latency_us/count") > 0, "{name}: no ack latencies");
        assert!(n("/verify/checked") >= n("/verify/acked_run_records"), "{name}: every acknowledged record is checked");
        for kind in ["lost", "duplicated", "reordered", "corrupt", "foreign"] {
            assert_eq!(n(&format!("/verify/{kind}")), 0, "{name}: verify/{kind}");
        }
        assert_eq!(run["verify"]["clean"], true, "{name}");
        assert_eq!(n("/errors/total"), 0, "{name}: errors {}", run["errors"]);
        assert_eq!(n("/errors/indeterminate"), 0, "{name}");
    }
    std::fs::remove_dir_all(&dir).unwrap();
}
