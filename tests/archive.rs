//! Archives (issue 17 item 2): `strom archive` of a real server's topic read
//! back record for record through `strom::archive::Archive`; every flipped
//! bit and every truncation refused with its position, by `strom inspect`
//! and by the reader; an existing output refused with nothing left behind;
//! and opening a ~1 GB archive reads its footer and index, not its data.
mod harness;

use std::net::SocketAddr;
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Instant;

use harness::serve::Serve;
use harness::{Rng, test_dir};
use strom::archive::format::{FOOTER_BYTES, Header};
use strom::archive::{Archive, ArchiveError, ArchiveWriter};
use strom::client::{Client, FetchResult};
use strom::proto::OffsetSpec;
use strom::wire::batch::{self, BatchBuilder};

fn strom(addr: SocketAddr, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_strom")).args(args).env("STROM_ADDR", addr.to_string()).output().unwrap()
}

/// One record as both sides yield it: offset, timestamp, key, value, headers.
type Rec = (u64, i64, Option<Vec<u8>>, Option<Vec<u8>>, Vec<(Vec<u8>, Option<Vec<u8>>)>);

fn recs_of(reply: &FetchResult, from: u64) -> Vec<Rec> {
    reply
        .records_at(from)
        .map(|r| {
            let r = r.unwrap();
            let headers = r.headers.map(|(k, v)| (k.to_vec(), v.map(<[u8]>::to_vec))).collect();
            (r.offset, r.timestamp_ms, r.key.map(<[u8]>::to_vec), r.value.map(<[u8]>::to_vec), headers)
        })
        .collect()
}

/// Every record of a partition, from the server.
fn server_records(client: &mut Client, topic: &str, p: u32) -> Vec<Rec> {
    let mut out = Vec::new();
    let mut offset = 0;
    loop {
        let r = client.fetch(topic, p, offset, 1 << 20, std::time::Duration::ZERO).unwrap();
        if r.next_offset <= offset {
            return out;
        }
        out.extend(recs_of(&r, offset));
        offset = r.next_offset;
    }
}

/// The `seq` index value of a record.
fn seq_of(r: &Rec) -> i64 {
    let v = r.4.iter().find(|(k, _)| k == b"seq").and_then(|(_, v)| v.clone()).unwrap();
    i64::from_le_bytes(v.try_into().unwrap())
}

/// Produces `batches` batches of 50 records to partition `p`: keys, a null
/// value now and then, two extra headers (one null), timestamps that go
/// back and forth within a batch, and `seq` values that repeat and never decrease.
fn produce(client: &mut Client, rng: &mut Rng, p: u32, batches: u64) {
    let mut seq = 0i64;
    for b in 0..batches {
        let base_ts = 1_700_000_000_000 + b as i64 * 1_000;
        let mut builder = BatchBuilder::new(base_ts);
        for i in 0..50u64 {
            seq += rng.below(3) as i64;
            let value: Vec<u8> = (0..rng.below(400)).map(|k| (k + i) as u8).collect();
            let key = format!("k-{p}-{b}-{i}");
            let extra = format!("x-{i}");
            let s = seq.to_le_bytes();
            let headers: Vec<(&[u8], Option<&[u8]>)> = vec![(b"seq", Some(&s[..])), (b"h", Some(extra.as_bytes())), (b"null", None)];
            let value = (i % 17 != 3).then_some(&value[..]);
            builder.push(base_ts + rng.below(900) as i64, Some(key.as_bytes()), value, &headers);
        }
        client.produce("arc", p, &builder.finish()).unwrap();
    }
}

// Proves: an archive of a 3-partition topic with a named index, written by
// `strom archive` from a running server, holds every record, key, header,
// timestamp and index value the server holds, and its fetch, time and
// index lookups answer as the records say; `strom inspect` verifies it.
#[test]
fn round_trip_through_a_real_server() {
    let dir = test_dir("archive-round-trip");
    let s = Serve::on(&dir.join("data")).cores(2).start();
    let out = strom(s.addr, &["topic", "create", "arc", "--partitions", "3", "--index", "seq"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let mut client = s.client();
    let mut rng = Rng(0x0a4c_417e);
    for (p, batches) in [(0, 60), (1, 1), (2, 30)] {
        produce(&mut client, &mut rng, p, batches);
    }
    let file = dir.join("arc.archive");
    let out = strom(s.addr, &["archive", "arc", "--out", file.to_str().unwrap()]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let a = Archive::open(&file).unwrap();
    assert_eq!((a.topic(), a.partition_count(), a.indices()), ("arc", 3, &["seq".to_string()][..]));
    assert!(a.entries(0).unwrap().len() > 5, "partition 0 spans several index chunks");
    for p in 0..3 {
        let want = server_records(&mut client, "arc", p);
        let got: Vec<Rec> = a.chunks(p).flat_map(|c| recs_of(&c.unwrap(), 0)).collect();
        assert_eq!(got.len(), want.len(), "partition {p}");
        assert!(got == want, "partition {p}: the archive's records differ from the server's");
        check_lookups(&a, &mut client, p, &want, &mut rng);
    }
    let inspected = strom(s.addr, &["inspect", file.to_str().unwrap()]);
    let text = String::from_utf8_lossy(&inspected.stdout);
    assert!(inspected.status.success(), "{}", String::from_utf8_lossy(&inspected.stderr));
    assert!(text.contains("topic arc, 3 partitions, indices [seq]") && text.contains("4550 records"), "{text}");
    assert!(text.contains("partition 1: offsets 0..50 (50 records)"), "{text}");
}

/// Fetches from random offsets, and time and index lookups, against the records.
fn check_lookups(a: &Archive, client: &mut Client, p: u32, want: &[Rec], rng: &mut Rng) {
    for _ in 0..40 {
        let i = rng.below(want.len() as u64) as usize;
        let reply = a.fetch(p, want[i].0, 10_000).unwrap();
        let got = recs_of(&reply, want[i].0);
        assert!(!got.is_empty() && got[..] == want[i..i + got.len()], "partition {p}: fetch at {}", want[i].0);
        assert_eq!(reply.next_offset, got.last().unwrap().0 + 1);
        let ts = want[i].1;
        let by_time = want.iter().find(|r| r.1 >= ts).map(|r| r.0);
        assert_eq!(a.offset_at_time(p, ts).unwrap(), by_time, "partition {p}: time {ts}");
        assert_eq!(client.list_offsets("arc", p, OffsetSpec::Timestamp(ts)).unwrap(), by_time, "the server agrees");
        let v = seq_of(&want[i]) + rng.below(2) as i64;
        let by_value = want.iter().find(|r| seq_of(r) >= v).map(|r| r.0);
        assert_eq!(a.offset_for_index(p, "seq", v).unwrap(), by_value, "partition {p}: seq {v}");
    }
    let end = want.last().unwrap().0 + 1;
    assert_eq!(a.offset_at_time(p, i64::MAX).unwrap(), None);
    assert_eq!(a.offset_for_index(p, "seq", i64::MAX).unwrap(), None);
    assert_eq!(a.fetch(p, end, 1000).unwrap().batches.len(), 0, "nothing at the end");
    assert!(matches!(a.fetch(p, end + 1, 1000), Err(ArchiveError::OffsetOutOfRange { .. })));
}

/// An archive of two partitions and one index, each partition several index chunks.
fn write_sample(path: &Path, batches: u64) {
    let header = Header { created_ms: 1, partitions: 2, topic: "t".into(), indices: vec!["seq".into()], source: "test".into() };
    let mut w = ArchiveWriter::create(path, header).unwrap();
    for p in 0..2u64 {
        w.packer().begin_partition(0).unwrap();
        for b in 0..batches * (p + 1) {
            let mut builder = BatchBuilder::new(b as i64);
            for r in 0..10 {
                let s = (b as i64).to_le_bytes();
                builder.push(b as i64 + r, Some(b"key"), Some(&[b as u8; 300]), &[(b"seq", Some(&s[..]))]);
            }
            let mut bytes = builder.finish();
            batch::set_base_offset(&mut bytes, b * 10);
            w.packer().push_batch(&bytes).unwrap();
        }
        w.packer().end_partition().unwrap();
    }
    w.finish().unwrap();
}

/// Reads every chunk of every partition: the first error, if any.
fn read_all(a: &Archive) -> Result<(), ArchiveError> {
    for p in 0..a.partition_count() {
        for c in a.chunks(p) {
            c?;
        }
    }
    Ok(())
}

fn damaged_at(e: &ArchiveError) -> (u64, u64) {
    match e {
        ArchiveError::Damaged(d) => (d.at, d.end),
        other => panic!("not a damage error: {other}"),
    }
}

// Proves: one flipped bit anywhere (header, batch prefixes and bodies,
// index, footer) is refused by open or by the first read of its chunk, and
// by verify and `strom inspect`, each naming a byte range holding the bit.
#[test]
fn a_flipped_bit_is_refused_with_its_position() {
    let dir = test_dir("archive-flip");
    let good_path = dir.join("good");
    write_sample(&good_path, 40);
    let good = std::fs::read(&good_path).unwrap();
    let a = Archive::open(&good_path).unwrap();
    let (header_end, index_pos) = (u64::from(a.footer().header_bytes), a.footer().index_pos);
    drop(a);
    let n = good.len();
    // Every byte of the header, the first two batches, the index's start and the footer; a sample of the rest.
    let mut positions: Vec<usize> =
        (0..header_end as usize + 200).chain(index_pos as usize..index_pos as usize + 120).chain(n - FOOTER_BYTES..n).collect();
    positions.extend((0..n).step_by(997));
    let bad_path = dir.join("bad");
    let mut inspected = 0;
    for (k, &pos) in positions.iter().enumerate() {
        let mut bad = good.clone();
        bad[pos] ^= 1 << (k % 8);
        std::fs::write(&bad_path, &bad).unwrap();
        let pos = pos as u64;
        let in_range = |e: &ArchiveError| {
            let (at, end) = damaged_at(e);
            assert!(at <= pos && pos < end, "bit at {pos}: damage named at {at}..{end}: {e}");
        };
        match Archive::open(&bad_path) {
            Err(e) => {
                in_range(&e);
                assert!(pos < header_end || pos >= index_pos, "bit at {pos} in the data: open reads no data, yet refused");
            }
            Ok(a) => {
                assert!(pos >= header_end && pos < index_pos, "bit at {pos} outside the data: open accepted it");
                in_range(&read_all(&a).expect_err("a read of the chunk"));
                in_range(&a.verify().expect_err("verify"));
            }
        }
        if k % 23 == 0 {
            let out = strom("127.0.0.1:1".parse().unwrap(), &["inspect", bad_path.to_str().unwrap()]);
            let err = String::from_utf8_lossy(&out.stderr);
            assert_eq!(out.status.code(), Some(1), "inspect of a bit at {pos}: {err}");
            let at: u64 = err.split("damaged at byte ").nth(1).and_then(|s| s.split(' ').next()).and_then(|s| s.parse().ok()).expect(&err);
            assert!(at <= pos, "inspect named byte {at} for a bit at {pos}");
            inspected += 1;
        }
    }
    assert!(inspected > 20);
    println!("{} flipped bits refused, {inspected} of them by strom inspect", positions.len());
}

// Proves: an archive cut short anywhere is refused by open and by inspect.
#[test]
fn a_truncated_archive_is_refused() {
    let dir = test_dir("archive-truncated");
    let path = dir.join("good");
    write_sample(&path, 10);
    let good = std::fs::read(&path).unwrap();
    let cut = dir.join("cut");
    for len in [good.len() - 1, good.len() - FOOTER_BYTES, good.len() - FOOTER_BYTES - 1, good.len() / 2, 70, 8, 0] {
        std::fs::write(&cut, &good[..len]).unwrap();
        let e = Archive::open(&cut).err().unwrap_or_else(|| panic!("cut to {len} bytes: opened"));
        assert!(matches!(e, ArchiveError::Damaged(_)), "{e}");
        let out = strom("127.0.0.1:1".parse().unwrap(), &["inspect", cut.to_str().unwrap()]);
        assert_ne!(out.status.code(), Some(0), "inspect of {len} bytes");
        if len >= 8 {
            assert!(String::from_utf8_lossy(&out.stderr).contains("damaged at byte"), "{}", String::from_utf8_lossy(&out.stderr));
        }
    }
}

fn tmp_of(path: &Path) -> PathBuf {
    PathBuf::from(format!("{}.tmp", path.display()))
}

// Proves: an existing --out is refused and left as it was, with no FILE.tmp
// behind; a write that fails midway leaves neither FILE nor FILE.tmp.
#[test]
fn an_existing_output_is_refused_and_nothing_is_left_behind() {
    let dir = test_dir("archive-exists");
    let s = Serve::on(&dir.join("data")).cores(1).start();
    assert!(strom(s.addr, &["topic", "create", "t"]).status.success());
    s.client().produce_values("t", 0, &[b"a", b"b"]).unwrap();
    let file = dir.join("t.archive");
    std::fs::write(&file, b"mine").unwrap();
    let out = strom(s.addr, &["archive", "t", "--out", file.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("exists"), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(std::fs::read(&file).unwrap(), b"mine");
    assert!(!tmp_of(&file).exists());

    let other = dir.join("other.archive");
    let header = Header { created_ms: 1, partitions: 1, topic: "t".into(), indices: vec![], source: String::new() };
    let mut w = ArchiveWriter::create(&other, header).unwrap();
    assert!(tmp_of(&other).exists(), "written beside it first");
    w.packer().begin_partition(0).unwrap();
    let mut b = harness::batch_of(&[b"x"]);
    b[30] ^= 1;
    assert!(w.packer().push_batch(&b).is_err(), "a batch with a bad CRC is refused");
    drop(w);
    assert!(!other.exists() && !tmp_of(&other).exists(), "a failed archive leaves nothing");

    let out = strom(s.addr, &["archive", "t", "--out", other.to_str().unwrap()]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(other.exists() && !tmp_of(&other).exists());
}

// Proves: opening a large archive (STROM_ARCHIVE_BIG_MB, 1024 by default)
// reads its footer, header and index only: bytes read far below the file's
// size, and under 0.2% of it. Prints write, open and cold read speeds.
#[test]
fn opening_a_large_archive_reads_only_its_footer_and_index() {
    let mb: u64 = std::env::var("STROM_ARCHIVE_BIG_MB").ok().and_then(|v| v.parse().ok()).unwrap_or(1024);
    let dir = test_dir("archive-big");
    let path = dir.join("big");
    // One 64 KiB batch of 16 records, repeated at each next base offset (outside its CRC).
    let mut builder = BatchBuilder::new(1_700_000_000_000);
    for r in 0..16i64 {
        builder.push(1_700_000_000_000 + r, None, Some(&[r as u8; 4000]), &[(b"seq", Some(&7i64.to_le_bytes()[..]))]);
    }
    let mut batch_bytes = builder.finish();
    let batches = mb * (1 << 20) / batch_bytes.len() as u64;
    let header = Header { created_ms: 1, partitions: 1, topic: "big".into(), indices: vec!["seq".into()], source: "test".into() };
    let started = Instant::now();
    let mut w = ArchiveWriter::create(&path, header).unwrap();
    w.packer().begin_partition(0).unwrap();
    for b in 0..batches {
        batch::set_base_offset(&mut batch_bytes, b * 16);
        w.packer().push_batch(&batch_bytes).unwrap();
    }
    w.packer().end_partition().unwrap();
    let summary = w.finish().unwrap();
    let write_s = started.elapsed().as_secs_f64();
    // Evict the file's pages, so that open and the reads below come from the disk.
    let f = std::fs::File::open(&path).unwrap();
    nix::fcntl::posix_fadvise(f.as_fd(), 0, 0, nix::fcntl::PosixFadviseAdvice::POSIX_FADV_DONTNEED).unwrap();
    let started = Instant::now();
    let a = Archive::open(&path).unwrap();
    let open_ms = started.elapsed().as_secs_f64() * 1e3;
    let opened = a.bytes_read();
    assert!(opened * 500 < summary.total_bytes, "open read {opened} of {} bytes", summary.total_bytes);
    assert!(opened >= a.footer().index_bytes + FOOTER_BYTES as u64, "open read the index and the footer");
    let mid = batches / 2 * 16 + 5;
    let fetched = a.fetch(0, mid, 1).unwrap();
    assert_eq!(recs_of(&fetched, mid)[0].0, mid);
    assert!(a.bytes_read() - opened <= 2 * batch_bytes.len() as u64, "a fetch reads about one chunk");
    let started = Instant::now();
    let verified = a.verify().unwrap();
    let read_s = started.elapsed().as_secs_f64();
    assert_eq!(verified.records, batches * 16);
    let total_mb = summary.total_bytes as f64 / 1e6;
    println!(
        "{total_mb:.0} MB archive: written (validated, fsynced) at {:.0} MB/s; opened in {open_ms:.1} ms reading {opened} bytes ({} index entries); verified cold at {:.0} MB/s",
        total_mb / write_s,
        a.entries(0).unwrap().len(),
        total_mb / read_s
    );
    // A gigabyte is too much to leave behind in target/ on every run.
    std::fs::remove_file(&path).unwrap();
}

// Proves: `strom archive` authenticates with STROM_TOKEN (its per-partition
// connections to each core too): refused without a token and with a wrong
// one, leaving no file, and written whole with a reader's token.
#[test]
fn archive_takes_the_token() {
    let dir = test_dir("archive-token");
    let config = dir.join("strom.toml");
    std::fs::write(
        &config,
        "[auth]\nenabled = true\n\
         [[auth.users]]\nname = \"reader\"\ntoken = \"reader-secret-0123456789\"\npermissions = [{ topic = \"sec*\", allow = [\"read\"] }]\n\
         [[auth.users]]\nname = \"ops\"\ntoken = \"ops-secret-0123456789ab\"\npermissions = [{ topic = \"*\", allow = [\"read\", \"write\", \"admin\"] }]\n",
    )
    .unwrap();
    let s = Serve::on(&dir.join("data")).cores(2).args(&["--config", config.to_str().unwrap()]).start();
    let mut ops = s.client();
    ops.authenticate("ops-secret-0123456789ab").unwrap();
    ops.create_topic("secret", 2).unwrap();
    for p in 0..2 {
        ops.produce_values("secret", p, &[b"a", b"b", b"c"]).unwrap();
    }
    let file = dir.join("secret.archive");
    let run = |token: Option<&str>| {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_strom"));
        cmd.args(["archive", "secret", "--out", file.to_str().unwrap()]).env("STROM_ADDR", s.addr.to_string()).env_remove("STROM_TOKEN");
        if let Some(t) = token {
            cmd.env("STROM_TOKEN", t);
        }
        cmd.output().unwrap()
    };
    for token in [None, Some("wrong")] {
        let out = run(token);
        assert_eq!(out.status.code(), Some(1), "token {token:?}: {}", String::from_utf8_lossy(&out.stdout));
        assert!(!file.exists() && !tmp_of(&file).exists(), "token {token:?} left a file");
    }
    let out = run(Some("reader-secret-0123456789"));
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let a = Archive::open(&file).unwrap();
    assert_eq!(a.footer().records, 6);
    assert_eq!(a.partition(1).unwrap().end_offset, 3);
}
