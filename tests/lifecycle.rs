//! `strom serve` as a service manager sees it: systemd's readiness
//! protocol (`Type=notify`) and machine-readable logs (`--log-format json`).
mod harness;

use std::io::Write;
use std::net::TcpStream;
use std::os::unix::net::UnixDatagram;
use std::time::Duration;

use harness::serve::{HANG, Serve};
use harness::test_dir;

/// The datagrams a server sent to the socket, up to `n` of them.
fn received(sock: &UnixDatagram, n: usize) -> Vec<String> {
    sock.set_read_timeout(Some(HANG)).unwrap();
    let mut buf = [0u8; 512];
    (0..n)
        .map(|_| {
            let len = sock.recv(&mut buf).expect("a notification");
            String::from_utf8_lossy(&buf[..len]).into_owned()
        })
        .collect()
}

// Proves: under a notify socket (as systemd's Type=notify gives), serve
// sends READY=1 naming its own pid and address once it serves, and
// STOPPING=1 when SIGTERM stops it (exit 0); with --log-format json and
// RUST_LOG=info, a logged event (a Kafka connection closed for garbage) is
// one JSON object on its own line, with its level, message and the client's
// address, and so are the notable events: the start with its settings,
// ready, a topic created and deleted, the clean stop with what it flushed
// (a checkpoint per log at least, the connection still open closed).
#[test]
fn notifies_systemd_and_logs_json() {
    let dir = test_dir("lifecycle-notify");
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("notify.sock");
    let _ = std::fs::remove_file(&path);
    let sock = UnixDatagram::bind(&path).unwrap();
    let serve = Serve::on(&dir)
        .kafka()
        .args(&["--log-format", "json"])
        .env("NOTIFY_SOCKET", path.to_str().unwrap())
        .env("RUST_LOG", "info")
        .start();
    let ready = received(&sock, 1).remove(0);
    assert!(ready.lines().any(|l| l == "READY=1"), "{ready:?}");
    assert!(ready.lines().any(|l| l == format!("MAINPID={}", serve.pid())), "{ready:?}");
    assert!(ready.contains(&format!("STATUS=serving on {}", serve.addr)), "{ready:?}");

    // The notable events, one JSON line each.
    let event = |serve: &Serve, message: &str| -> serde_json::Value {
        assert!(serve.wait_line(message, HANG), "no {message:?} line:\n{}", serve.stderr_text());
        let line = serve.stderr().into_iter().find(|l| l.contains(message)).unwrap();
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"))
    };
    assert!(event(&serve, "starting with these settings")["fields"]["engine"].as_str().is_some_and(|e| e.contains("fsync")));
    assert_eq!(event(&serve, "\"ready\"")["fields"]["addr"], serve.addr.to_string());
    let mut client = serve.client();
    client.create_topic("events", 3).unwrap();
    let created = event(&serve, "topic created");
    assert_eq!((&created["fields"]["topic"], &created["fields"]["partitions"]), (&serde_json::json!("events"), &serde_json::json!(3)));
    client.delete_topic("events").unwrap();
    assert_eq!(event(&serve, "topic deleted")["fields"]["topic"], "events");

    client.create_topic("kept", 1).unwrap();
    client.produce_values("kept", 0, &[b"flushed at the stop"]).unwrap();
    let mut garbage = TcpStream::connect(serve.kafka_addr()).unwrap();
    garbage.write_all(&[0xff; 16]).unwrap();
    assert!(serve.wait_line("closing a Kafka connection", HANG), "no log line:\n{}", serve.stderr_text());
    let line = serve.stderr().into_iter().find(|l| l.contains("closing a Kafka connection")).unwrap();
    let v: serde_json::Value = serde_json::from_str(&line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
    assert_eq!(v["level"], "INFO", "{line}");
    assert!(v["fields"]["message"].as_str().is_some_and(|m| m.starts_with("closing a Kafka connection")), "{line}");
    assert_eq!(v["fields"]["peer"], garbage.local_addr().unwrap().to_string(), "the client's address: {line}");

    // `client` stays connected: the stop closes it.
    let (status, lines) = serve.stop(Duration::from_secs(30));
    assert!(status.is_some_and(|s| s.success()), "{lines:?}");
    let stopped = lines.iter().find(|l| l.starts_with('{') && l.contains("stopped cleanly")).unwrap_or_else(|| panic!("{lines:?}"));
    let stopped: serde_json::Value = serde_json::from_str(stopped).unwrap();
    let field = |name: &str| stopped["fields"][name].as_u64().unwrap_or_else(|| panic!("no {name} in {stopped}"));
    assert!(field("checkpoints") >= 1, "every log checkpointed: {stopped}");
    assert!(field("connections_closed") >= 1, "{stopped}");
    assert!(field("log_bytes_written") >= field("records"), "{stopped}");
    drop(client);
    assert_eq!(received(&sock, 1), vec!["STOPPING=1".to_string()]);
    std::fs::remove_dir_all(&dir).unwrap();
}
