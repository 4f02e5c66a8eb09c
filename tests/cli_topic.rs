//! `strom topic ...` against a real `strom serve`: create with retention,
//! alter, describe and list (text and JSON), delete, and the errors.
mod harness;

use std::process::Command;

use harness::serve::Serve;
use harness::test_dir;

fn strom(addr: &str, args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_strom")).args(args).env("STROM_ADDR", addr).output().expect("run strom");
    (out.status.success(), String::from_utf8_lossy(&out.stdout).into_owned(), String::from_utf8_lossy(&out.stderr).into_owned())
}

fn ok(addr: &str, args: &[&str]) -> String {
    let (ok, out, err) = strom(addr, args);
    assert!(ok, "strom {args:?} failed: {err}");
    out
}

fn json(addr: &str, args: &[&str]) -> serde_json::Value {
    let out = ok(addr, args);
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("strom {args:?} printed no JSON document ({e}): {out}"))
}

// Proves the topic commands end to end: retention set at create (in a
// person's units and Kafka's -1), changed by alter, shown by describe in
// text and JSON with partitions, offsets and bytes; list --json; delete
// says what it freed; a server default applies to topics without their own.
#[test]
fn topic_commands_against_a_server() {
    let dir = test_dir("cli-topic");
    let serve = Serve::start(&dir, &["--retention-bytes", "1GiB"]);
    let addr = serve.addr.to_string();
    let out = ok(&addr, &["topic", "create", "orders", "--partitions", "3", "--retention-ms", "7d", "--retention-bytes", "-1"]);
    assert!(out.contains("created topic \"orders\" with 3 partitions") && out.contains("time 7d"), "{out}");
    ok(&addr, &["topic", "create", "plain"]);
    let mut c = serve.client();
    c.produce_values("orders", 1, &[b"a".as_slice(), b"b", b"c"]).unwrap();

    let d = json(&addr, &["topic", "describe", "orders", "--json"]);
    assert_eq!(d["name"], "orders");
    assert_eq!(d["retention"]["ms"]["set"], 604_800_000u64);
    assert_eq!(d["retention"]["ms"]["effective"], 604_800_000u64);
    assert_eq!(d["retention"]["bytes"]["set"], "unlimited");
    assert!(d["retention"]["bytes"]["effective"].is_null());
    assert_eq!(d["indices"].as_array().unwrap().len(), 0);
    let parts = d["partitions"].as_array().unwrap();
    assert_eq!(parts.len(), 3);
    assert_eq!((parts[1]["start_offset"].as_u64(), parts[1]["end_offset"].as_u64()), (Some(0), Some(3)));
    assert!(parts[1]["bytes"].as_u64().unwrap() > 0 && parts[0]["bytes"] == 0);

    // The server's default reaches a topic without its own, and alter changes one setting only.
    let plain = json(&addr, &["topic", "describe", "plain", "--json"]);
    assert_eq!(
        (plain["retention"]["bytes"]["set"].as_str(), plain["retention"]["bytes"]["effective"].as_u64()),
        (Some("default"), Some(1 << 30))
    );
    let out = ok(&addr, &["topic", "alter", "plain", "--retention-ms", "1h"]);
    assert!(out.contains("time 1h") && out.contains("bytes per partition the server's default"), "{out}");
    let text = ok(&addr, &["topic", "describe", "plain"]);
    assert!(
        text.contains("retention.ms 1h (set: 1h)") && text.contains("retention.bytes 1.0 GiB per partition (set: the server's default)"),
        "{text}"
    );
    assert!(text.contains("indices none"), "{text}");

    let list = json(&addr, &["topic", "list", "--json"]);
    let names: Vec<(&str, u64)> =
        list["topics"].as_array().unwrap().iter().map(|t| (t["name"].as_str().unwrap(), t["partitions"].as_u64().unwrap())).collect();
    assert_eq!(names, vec![("orders", 3), ("plain", 1)]);
    assert_eq!(ok(&addr, &["topic", "list"]), "orders 3\nplain 1\n");

    let out = ok(&addr, &["topic", "delete", "orders"]);
    assert!(out.contains("deleted topic \"orders\": 3 partitions") && out.contains("now dead"), "{out}");
    let (done, _, err) = strom(&addr, &["topic", "describe", "orders"]);
    assert!(!done && err.contains("orders"), "describe of a deleted topic: {err}");
    let (done, _, err) = strom(&addr, &["topic", "alter", "plain"]);
    assert!(!done && err.contains("nothing to change"), "{err}");
    let (done, _, err) = strom(&addr, &["topic", "create", "x", "--retention-ms", "soon"]);
    assert!(!done && err.contains("-1 for no limit"), "{err}");
}
