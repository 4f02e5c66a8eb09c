//! The abuse cases, one function each: what is sent, and what must come
//! back. Each returns its row of the summary; [`Bench`] checks the rest.
use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufReader, ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use strom::client::Client;
use strom::metrics::Metric;
use strom::proto::{self, ErrorCode, OffsetSpec, Request, Response};

use crate::bench::{Bench, sum};
use crate::harness::batch_of;
use crate::harness::serve::{HANG, STATS_HELD_BYTES};
use crate::raw::{cat, closed, connect_raw, encode, frame, lying_batch, read_frame, reply_code, reset, string};
use crate::{CONN_BUFFERED_BYTES_MAX, CORE_BUFFERED_BYTES_MAX, HEADER_TIMEOUT_MS, REPLY_BUDGET_BYTES};

/// A length prefix out of range: FrameTooLarge (or Malformed under 12),
/// then the connection closes; the bytes after it are never buffered.
pub fn bad_length(b: &mut Bench, len: u32, code: ErrorCode) -> String {
    let mut s = connect_raw(b.addr());
    let mut bytes = len.to_be_bytes().to_vec();
    bytes.extend_from_slice(&[0x5a; 60]);
    s.write_all(&bytes).unwrap();
    let reply = read_frame(&mut s).expect("an error frame before the close");
    assert_eq!(reply_code(&reply), Some(code), "length {len}");
    let (h, _) = proto::decode_response(&reply).unwrap();
    assert_eq!((h.api, h.request_id), (0, 0), "a framing error answers no request");
    assert!(closed(&mut s), "length {len}: the connection stays open");
    b.canary_during(&format!("length {len}"));
    format!("{code:?}({}) + close", code.code())
}

/// Foreign protocols on the port: their first bytes read as a huge length.
pub fn foreign(b: &mut Bench, bytes: &[u8]) -> String {
    let mut s = connect_raw(b.addr());
    s.write_all(bytes).unwrap();
    let reply = read_frame(&mut s).expect("an error frame before the close");
    assert_eq!(reply_code(&reply), Some(ErrorCode::FrameTooLarge));
    assert!(closed(&mut s));
    b.canary_during("a foreign protocol");
    "FrameTooLarge(4) + close".into()
}

/// Valid frames whose inner counts and string lengths lie, per api, on one
/// connection: each gets its typed error and the connection stays usable.
pub fn lying_frames(b: &mut Bench) -> String {
    let topic = string(b"abuse");
    let p0 = 0u32.to_be_bytes();
    let good = batch_of(&[b"x"]);
    let short_str = cat(&[&0xffffu16.to_be_bytes(), b"abuse"]);
    use ErrorCode::*;
    let cases: Vec<(&str, u16, Vec<u8>, Option<ErrorCode>)> = vec![
        ("produce: topic length 65535, 5 bytes", 1, cat(&[&short_str, &p0, &good]), Some(Malformed)),
        ("produce: no batch", 1, cat(&[&topic, &p0]), Some(Malformed)),
        ("produce: topic cut short", 1, cat(&[&5u16.to_be_bytes(), b"ab"]), Some(Malformed)),
        (
            "produce: batchLength 2^31-1",
            1,
            cat(&[&topic, &p0, &lying_batch(|b| b[8..12].copy_from_slice(&i32::MAX.to_be_bytes()))]),
            Some(InvalidBatch),
        ),
        (
            "produce: batchLength 10",
            1,
            cat(&[&topic, &p0, &lying_batch(|b| b[8..12].copy_from_slice(&10i32.to_be_bytes()))]),
            Some(InvalidBatch),
        ),
        (
            "produce: batchLength -1",
            1,
            cat(&[&topic, &p0, &lying_batch(|b| b[8..12].copy_from_slice(&(-1i32).to_be_bytes()))]),
            Some(InvalidBatch),
        ),
        (
            "produce: recordsCount 10^6",
            1,
            cat(&[&topic, &p0, &lying_batch(|b| b[57..61].copy_from_slice(&1_000_000u32.to_be_bytes()))]),
            Some(InvalidBatch),
        ),
        (
            "produce: recordsCount 2^32-1",
            1,
            cat(&[&topic, &p0, &lying_batch(|b| b[57..61].copy_from_slice(&u32::MAX.to_be_bytes()))]),
            Some(InvalidBatch),
        ),
        ("produce: record length 63", 1, cat(&[&topic, &p0, &lying_batch(|b| b[61] = 0x7e)]), Some(InvalidBatch)),
        ("produce: batch cut short", 1, cat(&[&topic, &p0, &good[..good.len() - 3]]), Some(InvalidBatch)),
        ("produce: partition 2^32-1", 1, cat(&[&topic, &u32::MAX.to_be_bytes(), &good]), Some(UnknownPartition)),
        ("fetch: topic length 65535", 2, cat(&[&short_str, &p0, &[0; 16]]), Some(Malformed)),
        ("fetch: no max_wait_ms", 2, cat(&[&topic, &p0, &[0; 12]]), Some(Malformed)),
        ("fetch: a byte left over", 2, cat(&[&topic, &p0, &[0; 17]]), Some(Malformed)),
        ("fetch: offset 2^64-1", 2, cat(&[&topic, &p0, &u64::MAX.to_be_bytes(), &[0; 8]]), Some(OffsetOutOfRange)),
        ("fetch: max_bytes 2^32-1 is clamped", 2, cat(&[&topic, &p0, &[0; 8], &u32::MAX.to_be_bytes(), &[0; 4]]), None),
        ("list offsets: spec -3", 3, cat(&[&topic, &p0, &(-3i64).to_be_bytes()]), Some(Malformed)),
        ("list offsets: topic length 65535", 3, cat(&[&short_str, &p0, &[0; 8]]), Some(Malformed)),
        ("metadata: count 2^32-1", 4, cat(&[&u32::MAX.to_be_bytes(), &topic]), Some(Malformed)),
        ("metadata: count 2, one name", 4, cat(&[&2u32.to_be_bytes(), &topic]), Some(Malformed)),
        ("metadata: name length 65535", 4, cat(&[&1u32.to_be_bytes(), &short_str]), Some(Malformed)),
        ("metadata: count 0 and garbage", 4, cat(&[&0u32.to_be_bytes(), &[0xee; 9]]), Some(Malformed)),
        ("create: topic length 65535", 5, cat(&[&short_str, &p0]), Some(Malformed)),
        ("create: 2^32-1 partitions", 5, cat(&[&string(b"huge"), &u32::MAX.to_be_bytes()]), Some(InvalidArgument)),
        ("create: 0 partitions", 5, cat(&[&string(b"none"), &p0]), Some(InvalidArgument)),
        ("delete: topic length 65535", 6, short_str.clone(), Some(Malformed)),
        ("delete: a byte left over", 6, cat(&[&string(b"nothere"), &[1]]), Some(Malformed)),
        ("commit: group length 65535", 7, cat(&[&short_str, &topic, &p0, &[0; 8]]), Some(Malformed)),
        ("commit: topic length 65535", 7, cat(&[&string(b"g"), &short_str, &p0, &[0; 8]]), Some(Malformed)),
        ("commit: no offset", 7, cat(&[&string(b"g"), &topic, &p0]), Some(Malformed)),
        ("offset fetch: group length 65535", 8, cat(&[&short_str, &topic, &p0]), Some(Malformed)),
        ("offset fetch: topic cut short", 8, cat(&[&string(b"g"), &10u16.to_be_bytes(), b"abu"]), Some(Malformed)),
        ("header only", 1, Vec::new(), Some(Malformed)),
    ];
    let mut s = connect_raw(b.addr());
    let mut tally = BTreeMap::<String, usize>::new();
    for (i, (what, api, body, want)) in cases.iter().enumerate() {
        let id = 1000 + i as u64;
        s.write_all(&frame(*api, 1, id, body)).unwrap();
        let reply = read_frame(&mut s).unwrap_or_else(|| panic!("{what}: the connection closed"));
        assert_eq!(proto::decode_response(&reply).unwrap().0.request_id, id, "{what}");
        assert_eq!(reply_code(&reply), *want, "{what}");
        *tally.entry(want.map_or("ok".to_string(), |c| format!("{c:?}({})", c.code()))).or_default() += 1;
    }
    // An unknown api and a version this server does not speak, same connection.
    s.write_all(&frame(99, 1, 1, b"")).unwrap();
    assert_eq!(reply_code(&read_frame(&mut s).unwrap()), Some(UnknownApi));
    s.write_all(&frame(4, 2, 2, &0u32.to_be_bytes())).unwrap();
    assert_eq!(reply_code(&read_frame(&mut s).unwrap()), Some(UnsupportedVersion));
    // Still usable: a valid Metadata is answered.
    s.write_all(&encode(3, &Request::Metadata { topics: vec!["canary"] })).unwrap();
    assert_eq!(reply_code(&read_frame(&mut s).unwrap()), None);
    b.canary_during("lying frames");
    let list: Vec<String> = tally.iter().map(|(k, n)| format!("{k}x{n}")).collect();
    format!("{} frames: {}, UnknownApi(3), UnsupportedVersion(2); connection kept", cases.len() + 2, list.join(" "))
}

/// Topic and group names that are paths, hold NUL, are too long or are not
/// UTF-8, in every api that takes a name: typed errors, and no file appears.
pub fn bad_names(b: &mut Bench) -> String {
    let long = vec![b'a'; 300];
    let names: [(&str, &[u8]); 5] =
        [("../x", b"../x"), ("/etc/x", b"/etc/x"), ("NUL", b"a\0b"), ("300 bytes", &long), ("not UTF-8", &[0xff, 0xfe, b'x'])];
    let outside = [b.dir.join("..").join("x"), PathBuf::from("/etc/x")];
    let existed: Vec<bool> = outside.iter().map(|p| p.exists()).collect();
    let listing = |d: &Path| -> BTreeSet<String> {
        std::fs::read_dir(d).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect()
    };
    let before = listing(&b.dir);
    let good = batch_of(&[b"x"]);
    let p0 = 0u32.to_be_bytes();
    let mut s = connect_raw(b.addr());
    let mut tally = BTreeMap::<String, usize>::new();
    let mut id = 0;
    for (label, name) in names {
        let utf8 = std::str::from_utf8(name).is_ok();
        // A name that is not UTF-8 fails decoding (InvalidName) wherever it is;
        // a UTF-8 one is not a topic that exists.
        let lookup = if utf8 { ErrorCode::UnknownTopic } else { ErrorCode::InvalidName };
        let n = string(name);
        let frames: Vec<(&str, u16, Vec<u8>, ErrorCode)> = vec![
            ("create", 5, cat(&[&n, &1u32.to_be_bytes()]), ErrorCode::InvalidName),
            ("produce", 1, cat(&[&n, &p0, &good]), lookup),
            ("fetch", 2, cat(&[&n, &p0, &[0; 8], &1024u32.to_be_bytes(), &[0; 4]]), lookup),
            ("list offsets", 3, cat(&[&n, &p0, &(-1i64).to_be_bytes()]), lookup),
            ("metadata", 4, cat(&[&1u32.to_be_bytes(), &n]), lookup),
            ("delete", 6, n.clone(), lookup),
            ("commit as group", 7, cat(&[&n, &string(b"canary"), &p0, &[0; 8]]), ErrorCode::InvalidName),
            ("commit as topic", 7, cat(&[&string(b"g"), &n, &p0, &[0; 8]]), lookup),
            ("offset fetch as group", 8, cat(&[&n, &string(b"canary"), &p0]), ErrorCode::InvalidName),
        ];
        for (api_name, api, body, want) in frames {
            id += 1;
            s.write_all(&frame(api, 1, id, &body)).unwrap();
            let reply = read_frame(&mut s).unwrap_or_else(|| panic!("{label} {api_name}: closed"));
            assert_eq!(reply_code(&reply), Some(want), "name {label}, {api_name}");
            *tally.entry(format!("{want:?}({})", want.code())).or_default() += 1;
        }
    }
    s.write_all(&encode(id + 1, &Request::Metadata { topics: vec![] })).unwrap();
    match proto::decode_response(&read_frame(&mut s).unwrap()) {
        Ok((_, Response::Metadata { topics, .. })) => {
            let names: Vec<&str> = topics.iter().map(|t| t.name.as_str()).collect();
            assert!(names.iter().all(|n| ["canary", "old", "resets", "abuse"].contains(n)), "a bad name became a topic: {names:?}");
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(listing(&b.dir), before, "the data directory changed");
    for (p, e) in outside.iter().zip(existed) {
        assert_eq!(p.exists(), e, "{} appeared", p.display());
    }
    b.canary_during("bad names");
    let list: Vec<String> = tally.iter().map(|(k, n)| format!("{k}x{n}")).collect();
    format!("{} requests: {}; no file created", id, list.join(" "))
}

/// Connections that send a frame one byte at a time: each is told Timeout
/// once the header timeout passes, and closed.
pub fn slowloris(b: &mut Bench, n: usize) -> String {
    let frame = encode(1, &Request::Metadata { topics: vec!["canary"] });
    let mut conns: Vec<(TcpStream, usize, Vec<u8>, bool)> = (0..n)
        .map(|_| {
            let s = TcpStream::connect(b.addr()).unwrap();
            s.set_nonblocking(true).unwrap();
            (s, 0, Vec::new(), false)
        })
        .collect();
    let deadline = Instant::now() + HANG;
    let mut checked_canary = false;
    loop {
        let mut open = 0;
        for (s, sent, got, done) in conns.iter_mut().filter(|c| !c.3) {
            let mut buf = [0u8; 256];
            match s.read(&mut buf) {
                Ok(0) => *done = true,
                Ok(k) => got.extend_from_slice(&buf[..k]),
                Err(e) if e.kind() == ErrorKind::WouldBlock => {}
                Err(_) => *done = true,
            }
            if *done {
                continue;
            }
            open += 1;
            // Stop sending once the server answered; else one more byte.
            if got.is_empty() && *sent < frame.len() - 1 && s.write(&frame[*sent..*sent + 1]).is_ok_and(|k| k == 1) {
                *sent += 1;
            }
        }
        if open == 0 {
            break;
        }
        if !checked_canary {
            // Every slowloris connection is open and has begun its frame.
            b.canary_during("5,000 slowloris connections open");
            checked_canary = true;
        }
        assert!(Instant::now() < deadline, "{open} slowloris connections still open");
        std::thread::sleep(Duration::from_millis(500));
    }
    let mut codes = BTreeMap::<String, usize>::new();
    for (_, sent, got, _) in &conns {
        assert!(*sent < frame.len(), "a slowloris frame was completed");
        let code = reply_code(got).expect("an error reply");
        assert_eq!(code, ErrorCode::Timeout);
        *codes.entry(format!("{code:?}({})", code.code())).or_default() += 1;
    }
    let most_bytes = conns.iter().map(|c| c.1).max().unwrap();
    format!("{n} conns, {} + close each (up to {most_bytes} bytes sent)", codes.keys().cloned().collect::<Vec<_>>().join(" "))
}

/// Idle connections up to the cap (what one costs), then more past it:
/// each refused with TooManyConnections and closed.
pub fn idle_past_cap(b: &mut Bench, cap: usize, beyond: usize) -> String {
    let open_now = sum(&b.serve.stats(), Metric::ConnectionsOpen) as usize;
    let fill = cap - open_now;
    let rss_before = b.serve.rss_bytes();
    let idle: Vec<TcpStream> = (0..fill).map(|_| TcpStream::connect(b.addr()).unwrap()).collect();
    let deadline = Instant::now() + HANG;
    while (sum(&b.serve.stats(), Metric::ConnectionsOpen) as usize) < cap {
        assert!(Instant::now() < deadline, "the server did not accept {fill} idle connections");
        std::thread::sleep(Duration::from_millis(20));
    }
    let rss_full = b.serve.rss_bytes();
    let per_idle = rss_full.saturating_sub(rss_before) / fill as u64;
    println!("{fill} idle connections: server RSS {rss_before} -> {rss_full} bytes, {per_idle} bytes per idle connection");
    assert!(per_idle < 4096, "{per_idle} bytes per idle connection");
    let refused_before = sum(&b.serve.stats(), Metric::ConnectionsRefused);
    let mut extra: Vec<TcpStream> = (0..beyond).map(|_| connect_raw(b.addr())).collect();
    b.canary_during("at the connection cap with more knocking");
    for s in &mut extra {
        let reply = read_frame(s).expect("a refusal frame");
        assert_eq!(reply_code(&reply), Some(ErrorCode::TooManyConnections));
        assert!(closed(s));
    }
    let refused = sum(&b.serve.stats(), Metric::ConnectionsRefused) - refused_before;
    assert_eq!(refused, beyond as u64);
    // The idle ones are still served.
    let mut last = idle.into_iter().last().unwrap();
    last.set_read_timeout(Some(HANG)).unwrap();
    last.write_all(&encode(1, &Request::Metadata { topics: vec![] })).unwrap();
    assert_eq!(reply_code(&read_frame(&mut last).unwrap()), None);
    format!("{fill} idle ({per_idle} B each) + {beyond} past the cap: TooManyConnections(16) + close each")
}

/// A consumer that pipelines 64 fetches of old data, up to 8 MiB each, and
/// never reads the replies.
fn non_reader(addr: SocketAddr) -> TcpStream {
    let mut s = connect_raw(addr);
    s.set_write_timeout(Some(Duration::from_secs(1))).unwrap();
    let mut frames = Vec::new();
    for i in 0..64u64 {
        let req = Request::Fetch { topic: "old", partition: 0, offset: (i % 8) * 3, max_bytes: 8 << 20, max_wait_ms: 0 };
        proto::encode_request(&mut frames, i + 1, &req);
    }
    // The server stops reading, so this may time out: expected.
    let _ = s.write_all(&frames);
    s
}

/// Consumers that pipeline big fetches and never read the replies: the
/// server stops reading them at their buffer cap, their fetches wait for
/// their core's reply budget, each core's reply bytes stay under the budget
/// whatever their number, others
/// are served, and each non-reader either gets its replies intact or was
/// closed as a stuck reader (its replies held budget others waited for,
/// without progress for a header timeout); none timed out.
pub fn non_readers(b: &mut Bench, n: usize) -> String {
    let closed_before = sum(&b.serve.stats(), Metric::StuckReadersClosed);
    let mut conns = Vec::new();
    for _ in 0..n {
        conns.push(non_reader(b.addr()));
    }
    // Wait until the bytes the server holds stop growing: it stopped reading.
    let mut held = 0;
    let deadline = Instant::now() + HANG;
    loop {
        std::thread::sleep(Duration::from_millis(300));
        let now = sum(&b.serve.stats(), Metric::BufferedBytes);
        if now == held && now > STATS_HELD_BYTES {
            break;
        }
        held = now;
        assert!(Instant::now() < deadline, "held bytes never settled");
    }
    let bound = n as u64 * (CONN_BUFFERED_BYTES_MAX + (8 << 20) + 64);
    assert!(held <= bound, "{n} non-reading consumers pin {held} bytes (bound {bound})");
    // Wait past the header timeout: a pushed-back connection holding whole
    // frames is not a slow sender and must not be cut off.
    std::thread::sleep(Duration::from_millis(HEADER_TIMEOUT_MS + 1500));
    b.canary_during("consumers that never read");
    let (mut served, mut closed) = (0, 0);
    for s in &mut conns {
        s.set_read_timeout(Some(HANG)).unwrap();
        match read_frame(s) {
            Some(reply) => {
                assert_eq!(reply_code(&reply), None, "a non-reader's fetch failed");
                served += 1;
            }
            None => closed += 1,
        }
    }
    let stats = b.serve.stats();
    let peak = stats.iter().map(|s| s[Metric::ReplyBudgetPeakBytes]).max().unwrap_or(0);
    assert!(peak <= REPLY_BUDGET_BYTES, "a core had {peak} reply bytes in use, over its budget {REPLY_BUDGET_BYTES}");
    let stuck = sum(&stats, Metric::StuckReadersClosed) - closed_before;
    assert!(closed <= stuck, "{closed} non-readers lost their connection, but only {stuck} were closed as stuck");
    for s in conns {
        reset(s);
    }
    format!(
        "{n} conns pinned {} MiB (bound {} MiB), reply budget peak {} MiB/core (budget {}); {served} served, {closed} closed as stuck",
        held >> 20,
        bound >> 20,
        peak >> 20,
        REPLY_BUDGET_BYTES >> 20
    )
}

/// Consumers that never read, all on one core (its own port), until that
/// core holds its whole reply budget (Fetches wait) or buffer budget (it
/// reads no socket): the connections whose replies made no progress for a
/// header timeout are closed, largest first, and the core (its canary with
/// it) is served again.
pub fn stuck_readers_on_one_core(b: &mut Bench, n: usize) -> String {
    let mut admin = Client::connect(b.addr()).unwrap();
    admin.set_timeout(Some(HANG)).unwrap();
    let core1: SocketAddr = admin.metadata(&[]).unwrap().core_addrs[1].parse().unwrap();
    drop(admin);
    let closed_before = sum(&b.serve.stats(), Metric::StuckReadersClosed);
    let mut conns = Vec::new();
    for _ in 0..n {
        conns.push(non_reader(core1));
    }
    let deadline = Instant::now() + HANG;
    let mut held_max = 0;
    let closed = loop {
        let stats = b.serve.stats();
        held_max = held_max.max(stats[1][Metric::BufferedBytes]);
        let closed = sum(&stats, Metric::StuckReadersClosed) - closed_before;
        if closed > 0 {
            break closed;
        }
        assert!(Instant::now() < deadline, "core 1 holds {held_max} bytes and closed no stuck reader");
        std::thread::sleep(Duration::from_millis(200));
    };
    b.canary_during("stuck readers filled core 1's buffer budget");
    for s in conns {
        reset(s);
    }
    format!(
        "{n} conns on core 1 held up to {} MiB (buffer budget {}, reply budget {}): {closed} closed as stuck, core 1 served again",
        held_max >> 20,
        CORE_BUFFERED_BYTES_MAX >> 20,
        REPLY_BUDGET_BYTES >> 20
    )
}

/// One client pipelines a million requests and reads no reply until the
/// server stopped reading it; then every reply arrives, each exactly once.
pub fn pipeline_million(b: &mut Bench, total: u64) -> String {
    let s = connect_raw(b.addr());
    let mut writer_sock = s.try_clone().unwrap();
    let written = Arc::new(AtomicU64::new(0));
    let w2 = written.clone();
    let writer = std::thread::spawn(move || {
        let mut chunk = Vec::new();
        let mut id = 0u64;
        while id < total {
            chunk.clear();
            for _ in 0..4096.min(total - id) {
                id += 1;
                // Odd ids ask for all metadata (a reply of ~100 bytes), even
                // ones for the canary's end offset (forwarded half the time).
                let req = if id % 2 == 1 {
                    Request::Metadata { topics: vec![] }
                } else {
                    Request::ListOffsets { topic: "canary", partition: (id / 2 % 2) as u32, spec: OffsetSpec::Latest }
                };
                proto::encode_request(&mut chunk, id, &req);
            }
            writer_sock.write_all(&chunk).unwrap();
            w2.store(id, Ordering::Relaxed);
        }
    });
    // Not reading: wait until the writer is stuck (the server stopped reading).
    let mut last = u64::MAX;
    loop {
        std::thread::sleep(Duration::from_millis(300));
        let now = written.load(Ordering::Relaxed);
        if now == last || now == total {
            break;
        }
        last = now;
    }
    // Less the request of the metrics asked for, held while it is answered.
    let held = sum(&b.serve.stats(), Metric::BufferedBytes) - STATS_HELD_BYTES;
    println!(
        "pipelining: {} of {total} requests written before the server stopped reading; {held} bytes held",
        written.load(Ordering::Relaxed)
    );
    // Its cap, and a few replies and a partial frame. (Its receive buffer is
    // a pool's, charged at its capacity: the pool shrinks a buffer that
    // grew for a large frame back to its first size before another
    // connection takes it; without that, 34.6 MB were held here in about
    // half the runs.)
    let bound = CONN_BUFFERED_BYTES_MAX + (1 << 20);
    assert!(held <= bound, "{held} bytes held for one pipelining client (bound {bound})");
    std::thread::sleep(Duration::from_millis(HEADER_TIMEOUT_MS + 1500));
    b.canary_during("a client pipelining without reading");
    let mut seen = vec![false; total as usize + 1];
    let mut r = BufReader::with_capacity(1 << 20, s);
    for _ in 0..total {
        let f = read_frame(&mut r).expect("the pipelining client's connection closed");
        let (h, resp) = proto::decode_response(&f).unwrap();
        assert!(h.request_id >= 1 && h.request_id <= total && !seen[h.request_id as usize], "reply id {}", h.request_id);
        seen[h.request_id as usize] = true;
        match resp {
            Response::Metadata { .. } => assert_eq!(h.request_id % 2, 1),
            Response::ListOffsets { offset: Some(_) } => assert_eq!(h.request_id % 2, 0),
            other => panic!("request {}: {other:?}", h.request_id),
        }
    }
    writer.join().unwrap();
    format!("{total} requests, {total} replies each once; {} MiB held at most", held >> 20)
}

/// Connections reset (RST) mid-frame, right after a produce (its write and
/// fdatasync in flight), and right after a fetch of old data (a disk read
/// in flight). Produces are indeterminate: whatever was stored is intact.
pub fn resets(b: &mut Bench, rounds: usize) -> String {
    let disk_before = sum(&b.serve.stats(), Metric::ReadsFromDisk);
    let mut sent = BTreeSet::new();
    for i in 0..rounds {
        // Mid-frame: half of a produce.
        let value = format!("reset-{i}");
        let f = encode(1, &Request::Produce { topic: "resets", partition: 0, batches: &batch_of(&[value.as_bytes()]) });
        let mut s = connect_raw(b.addr());
        s.write_all(&f[..f.len() / 2]).unwrap();
        reset(s);
        // During the fsync: the whole produce, then reset at once.
        let value = format!("reset-{i}-whole");
        sent.insert(value.clone());
        let f = encode(1, &Request::Produce { topic: "resets", partition: 0, batches: &batch_of(&[value.as_bytes()]) });
        let mut s = connect_raw(b.addr());
        s.write_all(&f).unwrap();
        reset(s);
        // During a disk read: a fetch far behind the tail, then reset.
        let f = encode(1, &Request::Fetch { topic: "old", partition: 0, offset: (i % 8) as u64, max_bytes: 1 << 20, max_wait_ms: 0 });
        let mut s = connect_raw(b.addr());
        s.write_all(&f).unwrap();
        reset(s);
    }
    b.canary_during("resets");
    let disk_reads = sum(&b.serve.stats(), Metric::ReadsFromDisk) - disk_before;
    assert!(disk_reads > 0, "no fetch reached the disk before its reset");
    // What the reset produces left: only values sent whole, each once, intact.
    let mut c = Client::connect(b.addr()).unwrap();
    c.set_timeout(Some(HANG)).unwrap();
    let mut stored = Vec::new();
    let mut offset = 0;
    loop {
        let f = c.fetch("resets", 0, offset, 1 << 20, Duration::ZERO).unwrap();
        let before = stored.len();
        for r in f.records_from(offset) {
            let (o, v) = r.unwrap();
            assert_eq!(o, stored.len() as u64, "a hole in the partition");
            stored.push(String::from_utf8(v.unwrap().to_vec()).unwrap());
        }
        if stored.len() == before {
            break;
        }
        offset = f.next_offset;
    }
    let unique: BTreeSet<&String> = stored.iter().collect();
    assert_eq!(unique.len(), stored.len(), "a reset produce stored twice");
    assert!(stored.iter().all(|v| sent.contains(v)), "a half-sent produce was stored: {stored:?}");
    let ack = c.produce_values("resets", 0, &[b"after"]).unwrap();
    assert_eq!(ack.base_offset, stored.len() as u64);
    format!("{} resets; {}/{rounds} reset produces stored, intact; {disk_reads} disk reads hit", rounds * 3, stored.len())
}
