//! The server as users run it: a real `strom serve` process on a loopback
//! port with its data directory on a real filesystem, reached through the
//! client library, the CLI and raw sockets.
mod harness;

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use harness::serve::{HANG, Serve};
use harness::{read_frame, test_dir};
use strom::client::{Client, ClientError, OwnedResponse};
use strom::proto::{self, ErrorCode, OffsetSpec, Request, Response};

/// SIGTERM, then the exit status and what the server printed (not exiting
/// within HANG is a hang).
fn stop(s: Serve) -> (ExitStatus, Vec<String>) {
    let (status, lines) = s.stop(HANG);
    (status.unwrap_or_else(|| panic!("strom serve did not exit within {HANG:?} of SIGTERM; stderr: {lines:?}")), lines)
}

fn values_of(vals: &[String]) -> Vec<&[u8]> {
    vals.iter().map(|v| v.as_bytes()).collect()
}

/// Every record of a partition from offset 0, through the client.
fn read_all(c: &mut Client, topic: &str, partition: u32) -> Vec<(u64, Vec<u8>)> {
    let mut out = Vec::new();
    let mut offset = 0;
    loop {
        let f = c.fetch(topic, partition, offset, 1 << 20, Duration::ZERO).unwrap();
        let before = out.len();
        for r in f.records_from(offset) {
            let (o, v) = r.unwrap();
            out.push((o, v.map(|v| v.to_vec()).unwrap_or_default()));
        }
        if out.len() == before {
            return out;
        }
        offset = f.next_offset;
    }
}

fn server_code(e: &ClientError) -> Option<ErrorCode> {
    match e {
        ClientError::Server { code, .. } => Some(*code),
        _ => None,
    }
}

fn strom_cli(addr: SocketAddr, args: &[&str], stdin: &[u8]) -> (bool, Vec<u8>, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_strom"))
        .args(args)
        .env("STROM_ADDR", addr.to_string())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // A command that fails before reading stdin closes it: a broken pipe
    // here is that command's answer, which the exit status carries.
    let _ = child.stdin.take().unwrap().write_all(stdin);
    let out = child.wait_with_output().unwrap();
    (out.status.success(), out.stdout, String::from_utf8_lossy(&out.stderr).into_owned())
}

// Proves: the CLI round trip a user does by hand (topic create, produce
// lines, consume them back, topic list, delete), with acks reported.
#[test]
fn cli_round_trip() {
    let dir = test_dir("srv-cli");
    let s = Serve::start(&dir, &[]);
    let (ok, _, err) = strom_cli(s.addr, &["topic", "create", "logs", "--partitions", "3"], b"");
    assert!(ok, "{err}");
    let (ok, out, _) = strom_cli(s.addr, &["topic", "list"], b"");
    assert!(ok);
    assert_eq!(String::from_utf8(out).unwrap().trim(), "logs 3");
    let lines: String = (0..1000).map(|i| format!("line {i}\n")).collect();
    let (ok, out, err) = strom_cli(s.addr, &["produce", "logs", "--partition", "2", "--report-acks"], lines.as_bytes());
    assert!(ok, "{err}");
    let acked: u64 = String::from_utf8(out)
        .unwrap()
        .lines()
        .map(|l| {
            let f: Vec<&str> = l.split(' ').collect();
            assert_eq!((f[0], f[1]), ("acked", "2"), "{l}");
            f[3].parse::<u64>().unwrap()
        })
        .sum();
    assert_eq!(acked, 1000);
    let (ok, out, err) = strom_cli(s.addr, &["consume", "logs", "--partition", "2", "--from", "earliest"], b"");
    assert!(ok, "{err}");
    assert_eq!(String::from_utf8(out).unwrap(), lines);
    let (ok, out, _) = strom_cli(s.addr, &["consume", "logs", "--partition", "2", "--from", "990", "--count", "3"], b"");
    assert!(ok);
    assert_eq!(String::from_utf8(out).unwrap(), "line 990\nline 991\nline 992\n");
    let (ok, _, err) = strom_cli(s.addr, &["topic", "delete", "logs"], b"");
    assert!(ok, "{err}");
    let (ok, _, err) = strom_cli(s.addr, &["produce", "logs"], b"x\n");
    assert!(!ok && err.contains("unknown topic \"logs\" (strom topic list shows the topics)"), "{err}");
    let (status, _) = stop(s);
    assert!(status.success());
}

// Proves: records of one partition come back in the order they were
// produced, with consecutive offsets, across many pipelined requests.
#[test]
fn pipelined_produce_keeps_order() {
    let dir = test_dir("srv-order");
    let s = Serve::start(&dir, &[]);
    let mut c = s.client();
    c.create_topic("o", 1).unwrap();
    let mut batches = Vec::new();
    for b in 0..200 {
        let vals: Vec<String> = (0..10).map(|i| format!("{b}:{i}")).collect();
        batches.push((vals.clone(), harness::batch_of(&values_of(&vals))));
    }
    let mut ids = Vec::new();
    for (_, batch) in &batches {
        ids.push(c.send(&Request::Produce { topic: "o", partition: 0, batches: batch }).unwrap());
        if c.inflight() >= 64 {
            c.recv().unwrap().result.unwrap();
        }
    }
    while c.inflight() > 0 {
        c.recv().unwrap().result.unwrap();
    }
    let got = read_all(&mut c, "o", 0);
    let want: Vec<(u64, Vec<u8>)> =
        batches.iter().flat_map(|(v, _)| v.iter()).enumerate().map(|(i, v)| (i as u64, v.as_bytes().to_vec())).collect();
    assert_eq!(got, want);
}

// Proves: a topic whose partitions live on both cores is served from one
// connection (half the requests forwarded between cores), and Metadata
// names each partition's core and each core's direct address, which also works.
#[test]
fn partitions_on_both_cores_with_forwarding() {
    let dir = test_dir("srv-cores");
    let s = Serve::start(&dir, &[]);
    let mut c = s.client();
    c.create_topic("m", 16).unwrap();
    let md = c.metadata(&["m"]).unwrap();
    let cores = &md.topics[0].partition_cores;
    assert!(cores.contains(&0) && cores.contains(&1), "partitions on one core only: {cores:?}");
    assert_eq!(md.core_addrs.len(), 2);
    for round in 0..5 {
        for p in 0..16 {
            let vals = vec![format!("{p}-{round}")];
            let ack = c.produce_values("m", p, &values_of(&vals)).unwrap();
            assert_eq!(ack.base_offset, round);
        }
    }
    // Straight to each partition's own core.
    for p in 0..16u32 {
        let mut direct = s.client().for_partition("m", p).unwrap();
        assert_eq!(direct.peer_addr().unwrap().to_string(), direct_peer(&md, cores[p as usize]), "partition {p} not on its core's port");
        let got = read_all(&mut direct, "m", p);
        let want: Vec<(u64, Vec<u8>)> = (0..5).map(|r| (r, format!("{p}-{r}").into_bytes())).collect();
        assert_eq!(got, want, "partition {p}");
    }
}

/// The address a direct connection to `core` must use (what Metadata says).
fn direct_peer(md: &strom::client::Metadata, core: u16) -> String {
    let a = &md.core_addrs[core as usize];
    assert!(!a.is_empty() && a.parse::<SocketAddr>().is_ok(), "no direct address for core {core}: {a:?}");
    a.clone()
}

// Proves: 1,000 connections open at once are all served, each with a
// produce and a fetch of its own.
#[test]
fn thousand_concurrent_connections() {
    let dir = test_dir("srv-1000");
    let s = Serve::start(&dir, &[]);
    s.client().create_topic("k", 8).unwrap();
    let mut conns: Vec<Client> = (0..1000).map(|_| s.client()).collect();
    let batches: Vec<Vec<u8>> = (0..1000).map(|i| harness::batch_of(&[format!("conn-{i}").as_bytes()])).collect();
    for (i, c) in conns.iter_mut().enumerate() {
        c.send(&Request::Produce { topic: "k", partition: (i % 8) as u32, batches: &batches[i] }).unwrap();
    }
    let mut per_partition = BTreeMap::<u32, u64>::new();
    for (i, c) in conns.iter_mut().enumerate() {
        match c.recv().unwrap().result.unwrap() {
            OwnedResponse::Produce(a) => assert_eq!(a.record_count(), 1),
            other => panic!("{other:?}"),
        }
        *per_partition.entry((i % 8) as u32).or_default() += 1;
    }
    let mut total = 0;
    for p in 0..8 {
        let got = read_all(&mut conns[0], "k", p);
        assert_eq!(got.len() as u64, per_partition[&p]);
        total += got.len();
    }
    assert_eq!(total, 1000);
}

// Proves: a fetch at the end of a partition waits (long poll) and is
// answered with the new records as soon as they are durable, and a long
// poll whose wait ends gets an empty answer.
#[test]
fn long_poll_wakes_on_new_data() {
    let dir = test_dir("srv-poll");
    let s = Serve::start(&dir, &[]);
    let mut c = s.client();
    c.create_topic("w", 2).unwrap();
    for p in 0..2 {
        let empty = c.fetch("w", p, 0, 1 << 20, Duration::from_millis(200)).unwrap();
        assert!(empty.batches.is_empty() && empty.high_watermark == 0);
    }
    let addr = s.addr;
    for p in 0..2u32 {
        let waiter = std::thread::spawn(move || {
            let mut c = Client::connect(addr).unwrap();
            c.fetch("w", p, 0, 1 << 20, Duration::from_secs(25)).unwrap()
        });
        std::thread::sleep(Duration::from_millis(300));
        c.produce_values("w", p, &[b"wake"]).unwrap();
        let got = waiter.join().unwrap();
        let recs: Vec<_> = got.records_from(0).map(|r| r.unwrap()).collect();
        assert_eq!(recs.len(), 1, "the long poll ended without the new record");
        assert_eq!(recs[0].1, Some(&b"wake"[..]));
    }
}

// Proves: replies come back out of order: a long poll sent first is
// answered after produces sent after it, each matched by its request id.
#[test]
fn pipelined_replies_out_of_order() {
    let dir = test_dir("srv-ooo");
    let s = Serve::start(&dir, &[]);
    let mut c = s.client();
    c.create_topic("x", 2).unwrap();
    let poll = c.send(&Request::Fetch { topic: "x", partition: 1, offset: 0, max_bytes: 1 << 20, max_wait_ms: 20_000 }).unwrap();
    let b = harness::batch_of(&[b"r"]);
    let produces: Vec<u64> = (0..10).map(|_| c.send(&Request::Produce { topic: "x", partition: 0, batches: &b }).unwrap()).collect();
    let mut order = Vec::new();
    for _ in 0..10 {
        let r = c.recv().unwrap();
        r.result.unwrap();
        order.push(r.request_id);
    }
    assert_eq!(order, produces, "produce replies to one partition come in order, before the poll");
    c.produce_values("x", 1, &[b"late"]).unwrap();
    let r = c.recv().unwrap();
    assert_eq!(r.request_id, poll);
    match r.result.unwrap() {
        OwnedResponse::Fetch(f) => assert_eq!(f.records_from(0).count(), 1),
        other => panic!("{other:?}"),
    }
}

// Proves: SIGTERM stops the server cleanly (exit 0, acknowledged data
// kept), and the next start scans nothing.
#[test]
fn graceful_stop_and_restart() {
    let dir = test_dir("srv-stop");
    let s = Serve::start(&dir, &[]);
    let mut c = s.client();
    c.create_topic("g", 2).unwrap();
    let vals: Vec<String> = (0..100).map(|i| format!("v{i}")).collect();
    for p in 0..2 {
        c.produce_values("g", p, &values_of(&vals)).unwrap();
    }
    c.commit_offset("grp", "g", 1, 42).unwrap();
    // A long poll in progress is answered (empty) by the stop, not cut off.
    let mut poller = s.client();
    poller.metadata(&[]).unwrap();
    poller.send(&Request::Fetch { topic: "g", partition: 0, offset: 100, max_bytes: 1 << 20, max_wait_ms: 29_000 }).unwrap();
    std::thread::sleep(Duration::from_millis(300));
    let (status, lines) = stop(s);
    match poller.recv().unwrap().result.expect("the long poll was answered") {
        OwnedResponse::Fetch(f) => assert!(f.batches.is_empty() && f.high_watermark == 100),
        other => panic!("{other:?}"),
    }
    assert!(status.success(), "exit {status:?}; {lines:?}");
    assert!(lines.iter().any(|l| l.contains("stopping")), "{lines:?}");
    let out = Command::new(env!("CARGO_BIN_EXE_strom")).args(["recover", dir.to_str().unwrap()]).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success() && text.contains(": 0 bytes scanned"), "{text}");
    let s = Serve::start(&dir, &[]);
    let mut c = s.client();
    for p in 0..2 {
        assert_eq!(read_all(&mut c, "g", p).len(), 100);
    }
    assert_eq!(c.fetch_offset("grp", "g", 1).unwrap(), Some(42));
}

// Proves: after a SIGKILL under load from several producers, every
// acknowledged record is present at its acknowledged offset after restart.
#[test]
fn sigkill_under_load_keeps_every_ack() {
    let dir = test_dir("srv-kill");
    let mut s = Serve::start(&dir, &[]);
    s.client().create_topic("k", 4).unwrap();
    let addr = s.addr;
    let acks = Arc::new(Mutex::new(Vec::<(u32, u64, String)>::new()));
    let mut producers = Vec::new();
    for t in 0..4u32 {
        let acks = acks.clone();
        producers.push(std::thread::spawn(move || {
            let mut c = Client::connect(addr).unwrap();
            for i in 0.. {
                let vals: Vec<String> = (0..20).map(|j| format!("{t}-{i}-{j}")).collect();
                match c.produce_values("k", t, &values_of(&vals)) {
                    Ok(a) => {
                        let mut g = acks.lock().unwrap();
                        for (j, v) in vals.into_iter().enumerate() {
                            g.push((t, a.base_offset + j as u64, v));
                        }
                    }
                    Err(_) => return,
                }
            }
        }));
    }
    std::thread::sleep(Duration::from_millis(700));
    s.kill();
    for p in producers {
        p.join().unwrap();
    }
    let acks = acks.lock().unwrap().clone();
    assert!(acks.len() > 100, "too little load before the kill: {}", acks.len());
    let s = Serve::start(&dir, &[]);
    let mut c = s.client();
    let mut stored = BTreeMap::new();
    for p in 0..4 {
        for (o, v) in read_all(&mut c, "k", p) {
            stored.insert((p, o), v);
        }
    }
    for (p, o, v) in &acks {
        assert_eq!(stored.get(&(*p, *o)).map(|b| b.as_slice()), Some(v.as_bytes()), "acknowledged record {p}/{o} lost");
    }
    println!("{} acknowledged records all present after SIGKILL ({} stored)", acks.len(), stored.len());
}

/// Writes raw bytes, then reads one reply frame (or None at close).
fn raw_exchange(addr: SocketAddr, bytes: &[u8]) -> (TcpStream, Option<Vec<u8>>) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    s.write_all(bytes).unwrap();
    let reply = read_frame(&mut s);
    (s, reply)
}

fn error_code(frame: &[u8]) -> ErrorCode {
    match proto::decode_response(frame) {
        Ok((_, Response::Error { code, .. })) => code,
        other => panic!("not an error reply: {other:?}"),
    }
}

/// True when the server closed the connection (EOF or reset).
fn closed(s: &mut TcpStream) -> bool {
    let mut b = [0u8; 1];
    matches!(s.read(&mut b), Ok(0) | Err(_))
}

/// Bad topic names, sent raw (the client library refuses them before
/// sending): each gets InvalidName, and no `../x` appears beside `dir`.
fn bad_names_are_refused(addr: SocketAddr, dir: &std::path::Path) {
    let long = "a".repeat(300);
    for name in ["../x", "/etc/x", "a\0b", long.as_str(), ".", ".."] {
        let mut f = Vec::new();
        proto::encode_request(&mut f, 5, &Request::CreateTopic { topic: name, partitions: 1, retention: None, indices: vec![] });
        assert_eq!(error_code(&raw_exchange(addr, &f).1.unwrap()), ErrorCode::InvalidName, "{name:?}");
    }
    let mut f = Vec::new();
    proto::encode_request(&mut f, 5, &Request::CreateTopic { topic: "ab", partitions: 1, retention: None, indices: vec![] });
    // Replace the name with bytes that are not UTF-8 (same length).
    let at = f.windows(2).position(|w| w == b"ab").unwrap();
    f[at] = 0xff;
    f[at + 1] = 0xfe;
    assert_eq!(error_code(&raw_exchange(addr, &f).1.unwrap()), ErrorCode::InvalidName);
    assert!(!dir.join("..").join("x").exists() || dir.join("..").join("x").is_dir());
}

// Proves: malformed frames, an oversized length, random bytes, an HTTP
// request, unknown topics and bad names each get a typed error (or a close
// once framing is lost), and a second client keeps being served throughout.
#[test]
fn bad_input_gets_typed_errors_while_others_are_served() {
    let dir = test_dir("srv-bad");
    let s = Serve::start(&dir, &["--frame-bytes-max", "65536"]);
    let mut canary = s.client();
    canary.create_topic("ok", 1).unwrap();
    let mut canary_count = 0u64;
    let mut check_canary = |c: &mut Client| {
        let a = c.produce_values("ok", 0, &[b"alive"]).unwrap();
        assert_eq!(a.base_offset, canary_count);
        canary_count += 1;
    };

    // An oversized length: refused before the body, then the connection closes.
    for len in [65536u32 + 1, i32::MAX as u32, u32::MAX] {
        let (mut sock, reply) = raw_exchange(s.addr, &len.to_be_bytes());
        assert_eq!(error_code(&reply.expect("an error frame")), ErrorCode::FrameTooLarge, "length {len}");
        assert!(closed(&mut sock));
        check_canary(&mut canary);
    }
    // An HTTP request: its first four bytes read as a huge length.
    let (mut sock, reply) = raw_exchange(s.addr, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_eq!(error_code(&reply.unwrap()), ErrorCode::FrameTooLarge);
    assert!(closed(&mut sock));
    check_canary(&mut canary);
    // A TLS ClientHello.
    let hello = [0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xfc, 0x03, 0x03];
    let (mut sock, reply) = raw_exchange(s.addr, &hello);
    assert!(reply.is_some());
    assert!(closed(&mut sock));
    check_canary(&mut canary);
    // A well-framed request with a garbage body: an error, and the connection lives on.
    let mut frame = Vec::new();
    frame.extend_from_slice(&20u32.to_be_bytes());
    frame.extend_from_slice(&1u16.to_be_bytes());
    frame.extend_from_slice(&1u16.to_be_bytes());
    frame.extend_from_slice(&77u64.to_be_bytes());
    frame.extend_from_slice(&[0xff; 8]);
    let (mut sock, reply) = raw_exchange(s.addr, &frame);
    let reply = reply.unwrap();
    assert_eq!(proto::decode_response(&reply).unwrap().0.request_id, 77);
    assert_eq!(error_code(&reply), ErrorCode::Malformed);
    let mut md = Vec::new();
    proto::encode_request(&mut md, 78, &Request::Metadata { topics: vec![] });
    sock.write_all(&md).unwrap();
    assert!(matches!(proto::decode_response(&read_frame(&mut sock).unwrap()), Ok((_, Response::Metadata { .. }))));
    // An unknown api and an unsupported version.
    let mut bad_api = frame.clone();
    bad_api[4..6].copy_from_slice(&999u16.to_be_bytes());
    assert_eq!(error_code(&raw_exchange(s.addr, &bad_api).1.unwrap()), ErrorCode::UnknownApi);
    let mut bad_version = md.clone();
    bad_version[6..8].copy_from_slice(&9u16.to_be_bytes());
    assert_eq!(error_code(&raw_exchange(s.addr, &bad_version).1.unwrap()), ErrorCode::UnsupportedVersion);
    // Random bytes, many times: never a crash, the canary keeps working.
    let mut rng = 0x9e3779b97f4a7c15u64;
    for _ in 0..50 {
        let n = 1 + (rng % 200) as usize;
        let bytes: Vec<u8> = (0..n)
            .map(|_| {
                rng ^= rng << 13;
                rng ^= rng >> 7;
                rng ^= rng << 17;
                rng as u8
            })
            .collect();
        let mut sock = TcpStream::connect(s.addr).unwrap();
        sock.write_all(&bytes).unwrap();
        drop(sock);
    }
    check_canary(&mut canary);
    // A produce whose batch has a bad CRC: InvalidBatch, nothing stored.
    let mut b = harness::batch_of(&[b"x"]);
    let last = b.len() - 1;
    b[last] ^= 1;
    let e = canary.produce("ok", 0, &b).unwrap_err();
    assert_eq!(server_code(&e), Some(ErrorCode::InvalidBatch), "{e}");
    // Partition counts that cannot be: a typed, non-retriable error.
    for n in [0, 1_000_000_000] {
        let e = canary.create_topic("never", n).unwrap_err();
        assert_eq!(server_code(&e), Some(ErrorCode::InvalidArgument), "{e}");
        assert!(!e.is_retriable());
    }
    // Unknown topics and partitions.
    assert_eq!(server_code(&canary.produce_values("nope", 0, &[b"x"]).unwrap_err()), Some(ErrorCode::UnknownTopic));
    assert_eq!(server_code(&canary.produce_values("ok", 5, &[b"x"]).unwrap_err()), Some(ErrorCode::UnknownPartition));
    bad_names_are_refused(s.addr, &dir);
    check_canary(&mut canary);
    let (status, _) = stop(s);
    assert!(status.success());
}

// Proves: the connection cap refuses one more with a typed error, a frame
// begun and never finished is cut off by the header timeout, and the
// server keeps serving.
#[test]
fn connection_cap_and_header_timeout() {
    let dir = test_dir("srv-limits");
    let s = Serve::start(&dir, &["--connections-max", "4", "--header-timeout-ms", "300"]);
    let mut held: Vec<Client> = (0..3).map(|_| s.client()).collect();
    held[0].create_topic("c", 1).unwrap();
    // The fourth is allowed (three held + this one), the fifth is refused.
    // The fourth's answered request proves it was accepted first.
    let mut md = Vec::new();
    proto::encode_request(&mut md, 1, &Request::Metadata { topics: vec![] });
    let (mut fourth, reply) = raw_exchange(s.addr, &md);
    assert!(matches!(proto::decode_response(&reply.unwrap()), Ok((_, Response::Metadata { .. }))));
    fourth.write_all(&[0, 0]).unwrap();
    let (mut fifth, reply) = raw_exchange(s.addr, b"");
    assert_eq!(error_code(&reply.expect("refusal frame")), ErrorCode::TooManyConnections);
    assert!(closed(&mut fifth));
    // The fourth sent half a length prefix: the header timeout ends it.
    fourth.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    assert_eq!(error_code(&read_frame(&mut fourth).expect("timeout frame")), ErrorCode::Timeout);
    assert!(closed(&mut fourth));
    held[1].produce_values("c", 0, &[b"still"]).unwrap();
    assert_eq!(held[2].list_offsets("c", 0, OffsetSpec::Latest).unwrap(), Some(1));
}

// Proves: an idle connection (one that sent a request, got its reply and
// went quiet) holds no receive buffer: the server's resident memory grows
// by well under 4 KiB per connection. Prints the measured figure.
#[test]
fn idle_connections_cost_little_memory() {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    let (_, hard) = getrlimit(Resource::RLIMIT_NOFILE).unwrap();
    let _ = setrlimit(Resource::RLIMIT_NOFILE, hard, hard);
    // Up to 3 x n connections at once (idle, then two rounds of trickling),
    // within the server's 10,000 and the file limit of both processes.
    let n = 3000.min(hard.saturating_sub(200) as usize / 3);
    assert!(n >= 300, "file descriptor limit {hard} too low for this test");
    let dir = test_dir("srv-idle");
    let s = Serve::start(&dir, &[]);
    let touch = |c: &mut Client| {
        c.metadata(&[]).unwrap();
    };
    // Warm the server's pools and tables the way the measured run will use them.
    let warm: Vec<Client> = (0..200)
        .map(|_| s.client())
        .map(|mut c| {
            touch(&mut c);
            c
        })
        .collect();
    drop(warm);
    std::thread::sleep(Duration::from_millis(200));
    let before = s.rss_bytes();
    let mut conns = Vec::with_capacity(n);
    for _ in 0..n {
        let mut c = s.client();
        touch(&mut c);
        conns.push(c);
    }
    std::thread::sleep(Duration::from_millis(200));
    let after = s.rss_bytes();
    let per_conn = after.saturating_sub(before) / n as u64;
    println!(
        "{n} idle connections: server RSS {before} -> {after} bytes, {per_conn} bytes per idle connection (user space; kernel socket buffers not included)"
    );
    assert!(per_conn < 4096, "{per_conn} bytes per idle connection");
    // They are still served.
    touch(&mut conns[n - 1]);
    drop(conns);
    // Trickling senders: each declares a frame of 8 MiB and sends 5 bytes of
    // it. What they cost is what they sent, not what they declared. A first
    // round warms the per-core receive pools (a fixed cost, up to 48 MiB per
    // core, not a per-connection one), the second is measured.
    let trickle = || {
        (0..n)
            .map(|_| {
                let mut r = TcpStream::connect(s.addr).unwrap();
                r.write_all(&[0x00, 0x80, 0x00, 0x00, 0x00]).unwrap();
                r
            })
            .collect::<Vec<_>>()
    };
    let warm = trickle();
    std::thread::sleep(Duration::from_millis(300));
    let before = s.rss_bytes();
    let measured = trickle();
    std::thread::sleep(Duration::from_millis(300));
    let after = s.rss_bytes();
    let per_conn = after.saturating_sub(before) / n as u64;
    println!("{n} connections each 5 bytes into a declared 8 MiB frame: server RSS {before} -> {after} bytes, {per_conn} bytes each");
    assert!(per_conn < 4096, "{per_conn} bytes per trickling connection");
    let mut c = s.client();
    touch(&mut c);
    drop((warm, measured));
}

// Proves: the client library reports a refused connection as the server's
// typed error, not as a protocol failure.
#[test]
fn client_sees_too_many_connections() {
    let dir = test_dir("srv-cap1");
    let s = Serve::start(&dir, &["--connections-max", "1"]);
    let mut first = s.client();
    first.metadata(&[]).unwrap();
    let mut second = s.client();
    let e = second.metadata(&[]).unwrap_err();
    assert_eq!(server_code(&e), Some(ErrorCode::TooManyConnections), "{e}");
    assert!(e.is_retriable());
    first.metadata(&[]).unwrap();
}

// Proves: deleting a topic while a consumer long-polls it answers the poll
// with a typed error at once, and the name can be created again afresh.
#[test]
fn deleting_a_topic_ends_its_long_polls() {
    let dir = test_dir("srv-delete");
    let s = Serve::start(&dir, &[]);
    let mut admin = s.client();
    admin.create_topic("d", 2).unwrap();
    admin.produce_values("d", 1, &[b"old"]).unwrap();
    let mut pollers = Vec::new();
    for p in 0..2u32 {
        let mut c = s.client();
        c.metadata(&[]).unwrap();
        c.send(&Request::Fetch { topic: "d", partition: p, offset: p as u64, max_bytes: 1 << 20, max_wait_ms: 29_000 }).unwrap();
        pollers.push(c);
    }
    std::thread::sleep(Duration::from_millis(300));
    admin.delete_topic("d").unwrap();
    for mut c in pollers {
        let e = c.recv().unwrap().result.unwrap_err();
        // UnknownPartition: the poll was parked when the topic went (the
        // expected case); UnknownTopic only if this machine was so slow that
        // the poll arrived after the deletion. Either way a typed error, now.
        let code = server_code(&e);
        assert!(matches!(code, Some(ErrorCode::UnknownPartition | ErrorCode::UnknownTopic)), "{e}");
    }
    assert_eq!(server_code(&admin.fetch("d", 0, 0, 1024, Duration::ZERO).unwrap_err()), Some(ErrorCode::UnknownTopic));
    admin.create_topic("d", 1).unwrap();
    assert_eq!(admin.list_offsets("d", 0, OffsetSpec::Latest).unwrap(), Some(0));
}

// Proves: the batches of one multi-batch Produce get consecutive offsets
// even while other connections (on both cores) append to the same partition.
#[test]
fn multi_batch_produce_is_contiguous() {
    let dir = test_dir("srv-multi");
    let s = Serve::start(&dir, &[]);
    s.client().create_topic("mb", 1).unwrap();
    let addr = s.addr;
    let writers: Vec<_> = (0..6u32)
        .map(|w| {
            std::thread::spawn(move || {
                let mut c = Client::connect(addr).unwrap();
                let mut acks = Vec::new();
                for r in 0..150 {
                    let mut batches = Vec::new();
                    for b in 0..3 {
                        let vals: Vec<String> = (0..5).map(|i| format!("{w}/{r}/{b}/{i}")).collect();
                        batches.extend(harness::batch_of(&values_of(&vals)));
                    }
                    c.send(&Request::Produce { topic: "mb", partition: 0, batches: &batches }).unwrap();
                    if c.inflight() >= 8 {
                        acks.push(c.recv().unwrap().result.unwrap());
                    }
                }
                while c.inflight() > 0 {
                    acks.push(c.recv().unwrap().result.unwrap());
                }
                acks
            })
        })
        .collect();
    let acks: Vec<OwnedResponse> = writers.into_iter().flat_map(|w| w.join().unwrap()).collect();
    let stored: BTreeMap<u64, Vec<u8>> = read_all(&mut s.client(), "mb", 0).into_iter().collect();
    for a in &acks {
        let OwnedResponse::Produce(a) = a else { panic!("{a:?}") };
        assert_eq!(a.record_count(), 15, "{a:?}");
        // The request's writer and round, from its first record "w/r/0/0".
        let first = String::from_utf8(stored[&a.base_offset].clone()).unwrap();
        let request: Vec<&str> = first.split('/').take(2).collect();
        for k in 0..15u64 {
            assert_eq!(stored[&(a.base_offset + k)], format!("{}/{}/{}/{}", request[0], request[1], k / 5, k % 5).into_bytes());
        }
    }
    assert_eq!(stored.len(), 6 * 150 * 15);
}

// Proves: SIGTERM under pipelined load acknowledges what was durable,
// refuses what it read afterwards with the typed, retriable ShuttingDown,
// exits 0, and every acknowledged record is there after the restart.
#[test]
fn sigterm_under_load_acks_or_refuses_with_a_typed_error() {
    let dir = test_dir("srv-term-load");
    let s = Serve::start(&dir, &[]);
    s.client().create_topic("t", 2).unwrap();
    let addr = s.addr;
    let producers: Vec<_> = (0..2u32)
        .map(|p| {
            std::thread::spawn(move || {
                let mut c = Client::connect(addr).unwrap().for_partition("t", p).unwrap();
                c.set_timeout(Some(Duration::from_secs(30))).unwrap();
                let batch = harness::batch_of(&[b"a", b"b", b"c", b"d"]);
                let (mut acked, mut refused, mut other) = (Vec::new(), 0u64, Vec::new());
                loop {
                    while c.inflight() < 16 {
                        if c.send(&Request::Produce { topic: "t", partition: p, batches: &batch }).is_err() {
                            return (acked, refused, other);
                        }
                    }
                    match c.recv() {
                        Ok(r) => match r.result {
                            Ok(OwnedResponse::Produce(a)) => acked.push(a.base_offset),
                            Err(e) if server_code(&e) == Some(ErrorCode::ShuttingDown) => refused += 1,
                            Err(e) => other.push(e.to_string()),
                            Ok(x) => other.push(format!("{x:?}")),
                        },
                        // The connection closed: the stop is complete.
                        Err(_) => return (acked, refused, other),
                    }
                }
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(500));
    let (status, lines) = stop(s);
    assert!(status.success(), "{lines:?}");
    let mut acked_total = 0;
    let mut refused_total = 0;
    let results: Vec<_> = producers.into_iter().map(|t| t.join().unwrap()).collect();
    let s = Serve::start(&dir, &[]);
    let mut c = s.client();
    for (p, (acked, refused, other)) in results.into_iter().enumerate() {
        assert!(other.is_empty(), "replies other than an ack or ShuttingDown: {other:?}");
        let stored: std::collections::BTreeSet<u64> = read_all(&mut c, "t", p as u32).into_iter().map(|(o, _)| o).collect();
        for base in &acked {
            assert!((0..4).all(|i| stored.contains(&(base + i))), "acknowledged batch at {base} lost");
        }
        acked_total += acked.len();
        refused_total += refused;
    }
    assert!(acked_total > 0);
    println!("SIGTERM under load: {acked_total} batches acknowledged and kept, {refused_total} refused with ShuttingDown");
}
