//! Replays every saved fuzz input under stable `cargo test`, through the same
//! checks the fuzz target runs, so that an input `cargo fuzz` once found stays
//! fixed without nightly. Inputs live in `fuzz/corpus/<target>/` (seeds and
//! what fuzzing kept) and `fuzz/regressions/<target>/` (crashes, once fixed).
//!
//! The checks are `fuzz/src/` (included below by path), and every replay is
//! held to the allocation bound of `fuzz/src/alloc_count.rs`. The seed
//! corpora are written by the ignored test `write_seed_corpus`:
//! `cargo test --release --test fuzz_replay -- --ignored write_seed_corpus`.

use std::collections::BTreeMap;
use std::fs;
use std::panic;
use std::path::{Path, PathBuf};

use strom::catalog::{self, Catalog};
use strom::config::FsyncPolicy;
use strom::log::checkpoint::{self, Checkpoint, PartitionCheckpoint};
use strom::log::frame::{self, FrameHeader, FrameKind};
use strom::partition::producers::{KeptBatch, ProducerState};
use strom::partition::{IndexEntry, Span};
use strom::proto::{self, Api, ErrorCode, OffsetSpec, Request, Response, SubscribeStart, TopicMetadata};
use strom::wire::batch::{self, BatchBuilder};

// Shared with cargo-fuzz and the other fuzz test: not every item is used here.
#[allow(dead_code)]
#[path = "../fuzz/src/alloc_count.rs"]
mod alloc_count;
#[allow(dead_code)]
#[path = "../fuzz/src/lib.rs"]
mod fuzz_checks;

use fuzz_checks::proto_body::{request_input, response_input};
use fuzz_checks::recovery_scan::{self as recovery_input, LogBuilder};

#[global_allocator]
static ALLOCATOR: alloc_count::Counting = alloc_count::Counting;

const INPUT_ROOTS: [&str; 2] = ["fuzz/corpus", "fuzz/regressions"]; // [0]: the seeds' corpora

/// Whether the target's decoder accepts `data`, for checking seed names;
/// `None` where no single decoder decides (the catalog, names, the index) or a unit test checks (`franz_decode`).
fn accepts(target: &str, data: &[u8]) -> Option<bool> {
    match target {
        "batch_validate" => Some(batch::validate(data, data.len()).is_ok()),
        "frame_decode" => Some(frame_verifies(data)),
        "checkpoint_decode" => Some(checkpoint::decode(data).is_ok()),
        "fsync_policy_parse" => Some(std::str::from_utf8(data).is_ok_and(|s| s.parse::<FsyncPolicy>().is_ok())),
        "proto_decode" => Some(proto::decode_request(data).is_ok() || proto::decode_response(data).is_ok()),
        "proto_request_body" => Some(data.split_first().is_some_and(|(&selector, body)| {
            let api = fuzz_checks::proto_body::api_of(selector);
            let version = fuzz_checks::proto_body::request_version(api, selector);
            proto::decode_request(&fuzz_checks::proto_body::frame(api as u16, version, body)).is_ok()
        })),
        "recovery_scan" => Some(recovery_input::recovers(data)),
        "kafka_request" => Some(strom::kafka_fuzz::accepts(data)),
        other => fuzz_checks::accepts(other, data),
    }
}

/// A frame_decode input whose frame decodes at its position and, for a batch, verifies.
fn frame_verifies(data: &[u8]) -> bool {
    let Some((pos, bytes)) = data.split_first_chunk::<8>() else {
        return false;
    };
    frame::decode_header(bytes, u64::from_le_bytes(*pos), u32::MAX)
        .is_ok_and(|h| h.kind == FrameKind::Pad || frame::verify_payload(&h, bytes).is_ok())
}

fn crate_path(relative: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(relative)
}

/// Every saved input as (fuzz target, file), skipping dotfiles like `.gitkeep`.
fn inputs() -> Vec<(String, PathBuf)> {
    let mut found = Vec::new();
    for root in INPUT_ROOTS {
        for target_dir in files_in(&crate_path(root)) {
            let target = target_dir.file_name().unwrap().to_string_lossy().into_owned();
            for file in files_in(&target_dir) {
                found.push((target.clone(), file));
            }
        }
    }
    found
}

fn files_in(dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut paths: Vec<PathBuf> =
        entries.map(|e| e.unwrap().path()).filter(|p| !p.file_name().unwrap().to_string_lossy().starts_with('.')).collect();
    paths.sort();
    paths
}

#[test]
fn saved_fuzz_inputs_pass_the_fuzz_checks() {
    // Proves: every corpus and regression file passes its fuzz target's checks within the allocation bound, and each target has inputs.
    let mut replayed: BTreeMap<&str, (usize, usize, usize)> = BTreeMap::new();
    let mut failed = Vec::new();
    for (target, path) in inputs() {
        let data = fs::read(&path).unwrap();
        let t =
            fuzz_checks::TARGETS.iter().find(|t| t.name == target).unwrap_or_else(|| panic!("{} is for no fuzz target", path.display()));
        // Keep going after a failure so the report names every bad input.
        let (outcome, peak_bytes) = alloc_count::peak_bytes_during(|| panic::catch_unwind(|| (t.check)(&data)));
        if outcome.is_err() {
            failed.push(format!("{}: panicked", path.display()));
        } else if peak_bytes > alloc_count::alloc_bound_bytes(data.len()) {
            failed.push(format!("{}: held {peak_bytes} bytes for a {}-byte input", path.display(), data.len()));
        }
        let entry = replayed.entry(t.name).or_default();
        entry.0 += 1;
        if peak_bytes > entry.1 {
            (entry.1, entry.2) = (peak_bytes, data.len());
        }
    }
    assert!(failed.is_empty(), "inputs failing their fuzz checks: {failed:#?}");
    for t in fuzz_checks::TARGETS {
        assert!(replayed.get(t.name).is_some_and(|&(n, _, _)| n > 0), "no fuzz inputs for {} under {INPUT_ROOTS:?}", t.name);
    }
    println!("{:20} {:>8} {:>16} {:>12}", "replayed", "inputs", "most held bytes", "input bytes");
    for (name, (n, peak_bytes, input_bytes)) in &replayed {
        println!("{name:20} {n:>8} {peak_bytes:>16} {input_bytes:>12}");
    }
}

#[test]
fn a_declared_length_cannot_size_an_allocation() {
    // Proves: inputs declaring 2^31 and 2^32-1 items or bytes make no allocation beyond the bound of their own size.
    let mut lying = Vec::new();
    for count in [0x8000_0000u32, u32::MAX, 0x7FFF_FFFF] {
        let c = count.to_be_bytes();
        lying.push(("proto_request_body", [&[3u8][..], &c, &[0, 1, b'a']].concat()));
        lying.push(("proto_response_body", [&[3u8, 0, 2][..], &[0, 0], &c, &[0, 1, b'a']].concat()));
        lying.push(("proto_response_body", [&[3u8, 0, 0][..], &c[2..], &[0, 1, b'a']].concat()));
        lying.push(("proto_decode", [&c[..], &[0, 4, 0, 1], &[0; 8], &c].concat()));
        lying.extend(fuzz_checks::kafka_request::lying_counts(count));
        let mut ckpt = checkpoint::encode(&Checkpoint {
            version: checkpoint::VERSION,
            log: 0,
            epoch: 1,
            covered_pos: 0,
            log_start: 0,
            partitions: vec![],
        });
        ckpt[36..40].copy_from_slice(&count.to_le_bytes());
        lying.push(("checkpoint_decode", ckpt));
        let mut b = BatchBuilder::new(0);
        b.push(0, None, Some(b"v"), &[]);
        let mut b = b.finish();
        b[57..61].copy_from_slice(&count.to_be_bytes());
        lying.push(("batch_validate", b));
        let mut f = vec![0u8; 8 + 64];
        f[8 + 4..8 + 8].copy_from_slice(&frame::MAGIC.to_le_bytes());
        f[8 + 8..8 + 12].copy_from_slice(&count.to_le_bytes());
        f[8 + 12] = 1;
        f[8 + 13] = frame::VERSION;
        lying.push(("frame_decode", f.clone()));
        let mut log = LogBuilder::new(0);
        log.commit(1, 0, 1, 2);
        let mut input = log.input(recovery_input::head(recovery_input::FLAGS_RESEAL, 0, [0, 0], 0, 4));
        input[recovery_input::HEAD_BYTES + 8..][..4].copy_from_slice(&count.to_le_bytes());
        lying.push(("recovery_scan", input));
    }
    let mut worst = 0.0f64;
    for (target, data) in &lying {
        let check = fuzz_checks::check_for(target).unwrap();
        let ((), peak_bytes) = alloc_count::peak_bytes_during(|| check(data));
        assert!(
            peak_bytes <= alloc_count::alloc_bound_bytes(data.len()),
            "{target}: {peak_bytes} bytes held for {} input bytes",
            data.len()
        );
        worst = worst.max(peak_bytes as f64);
    }
    println!("{} inputs with lying counts and lengths: at most {worst} bytes held at once", lying.len());
}

#[test]
fn seeds_are_what_their_names_say() {
    // Proves: seeds named valid-* are still accepted and the others still refused, so fuzzing starts on both sides of the line.
    for target in fuzz_checks::TARGETS.iter().map(|t| t.name) {
        let seeds = files_in(&crate_path(INPUT_ROOTS[0]).join(target));
        let named: Vec<_> = seeds.iter().filter_map(|p| Some((p, p.file_name()?.to_str()?.strip_prefix("seed-")?))).collect();
        assert!(!named.is_empty(), "{target} has no seeds");
        if accepts(target, &[]).is_none() {
            continue;
        }
        assert!(named.iter().any(|(_, n)| n.starts_with("valid-")), "{target} has no valid seed");
        assert!(named.iter().any(|(_, n)| !n.starts_with("valid-")), "{target} has no invalid seed");
        for (path, name) in named {
            let data = fs::read(path).unwrap();
            assert_eq!(accepts(target, &data), Some(name.starts_with("valid-")), "{target}: {name}");
        }
    }
}

#[test]
#[ignore = "writes the seed corpora into fuzz/; run by hand after a format change"]
fn write_seed_corpus() {
    // Proves: nothing; it (re)writes the seed-* files that the two tests above read.
    for target in fuzz_checks::TARGETS.iter().map(|t| t.name) {
        let dir = crate_path(INPUT_ROOTS[0]).join(target);
        fs::create_dir_all(&dir).unwrap();
        for (name, bytes) in seeds(target) {
            fs::write(dir.join(format!("seed-{name}")), bytes).unwrap();
        }
    }
}

fn seeds(target: &str) -> Vec<(&'static str, Vec<u8>)> {
    match target {
        "batch_validate" => batch_seeds(),
        "batch_values" => strom::wire::batch::values::fuzz_seeds(),
        "frame_decode" => frame_seeds(),
        "checkpoint_decode" => checkpoint_seeds(),
        "catalog_parse" => catalog_seeds(),
        "fsync_policy_parse" => fsync_policy_seeds(),
        "proto_decode" => proto_seeds(),
        "proto_request_body" => request_body_seeds(),
        "proto_response_body" => response_body_seeds(),
        "kafka_request" => fuzz_checks::kafka_request::seeds(),
        "recovery_scan" => recovery_seeds(),
        "index_lookup" => index_seeds(),
        "offsets_parse" => offsets_seeds(),
        "names" => names_seeds(),
        "franz_decode" => strom::franz::fuzz_seeds(),
        other => fuzz_checks::seeds_of(other).unwrap_or_else(|| panic!("no seeds for fuzz target {other}")),
    }
}

fn batch_seeds() -> Vec<(&'static str, Vec<u8>)> {
    let mut one = BatchBuilder::new(1_700_000_000_000);
    one.push(1_700_000_000_000, None, Some(b"hello"), &[]);
    let one = one.finish();
    let mut mixed = BatchBuilder::new(1_700_000_000_000).producer(7, 1, 42);
    mixed.push(1_700_000_000_000, Some(b"k"), Some(b"v"), &[(b"h", Some(b"x"))]);
    mixed.push(1_700_000_000_009, None, None, &[(b"", None)]);
    mixed.push(1_699_999_999_000, Some(b""), Some(b""), &[]);
    let mixed = mixed.finish();

    // Values past 64 bytes need two-byte varint lengths; many records give
    // the fuzzer offset deltas to break.
    let mut many = BatchBuilder::new(-5);
    for i in 0..20u8 {
        let value = vec![i; 10 * usize::from(i)];
        many.push(i64::from(i) - 10, Some(&[i]), Some(&value), &[]);
    }
    let many = many.finish();

    let truncated = mixed[..mixed.len() - 3].to_vec();
    let mut bad_crc = mixed.clone();
    bad_crc[40] ^= 0x10;
    let two_batches = [one.as_slice(), mixed.as_slice()].concat();
    vec![
        ("valid-one-record", one),
        ("valid-keys-headers-nulls", mixed),
        ("valid-many-records", many),
        ("truncated", truncated),
        ("bad-crc", bad_crc),
        ("two-batches", two_batches),
    ]
}

/// A sealed batch frame holding `payload`, as the journal writes it.
fn batch_frame(payload: &[u8], pos: u64, epoch: u32, pid: u32) -> Vec<u8> {
    let mut f = vec![0u8; frame::HEADER_BYTES + payload.len()];
    f[frame::HEADER_BYTES..].copy_from_slice(payload);
    let h = FrameHeader { kind: FrameKind::Batch, payload_bytes: payload.len() as u32, pos, durable_before: pos, epoch, pid };
    frame::seal(&mut f, &h);
    f
}

/// A frame_decode input: the expected position, then the bytes found there.
fn at(pos: u64, bytes: &[u8]) -> Vec<u8> {
    [&pos.to_le_bytes()[..], bytes].concat()
}

fn frame_seeds() -> Vec<(&'static str, Vec<u8>)> {
    let mut one = BatchBuilder::new(1_700_000_000_000);
    one.push(1_700_000_000_000, Some(b"k"), Some(b"hello"), &[(b"h", None)]);
    let one = batch_frame(&one.finish(), 8192, 3, 7);
    let mut many = BatchBuilder::new(0).producer(9, 0, 0);
    for i in 0..8u8 {
        many.push(i64::from(i), None, Some(&[i; 40]), &[]);
    }
    let many = batch_frame(&many.finish(), 1 << 40, 1, 0);

    // A commit as the journal ends it: its last batch, then padding to the block boundary.
    let pad_pos = 8192 + one.len() as u64;
    let mut pad = vec![0xAA; frame::pad_bytes_for(pad_pos)];
    frame::write_pad(&mut pad, pad_pos, 8192, 3);
    let commit = [one.as_slice(), pad.as_slice()].concat();

    let mut bad_batch_crc = one.clone();
    *bad_batch_crc.last_mut().unwrap() ^= 0x01;
    let mut other_epoch = one.clone();
    other_epoch[32] ^= 0x01;
    vec![
        ("valid-batch", at(8192, &one)),
        ("valid-batch-many-records", at(1 << 40, &many)),
        ("valid-batch-then-pad", at(8192, &commit)),
        ("valid-pad", at(pad_pos, &pad)),
        ("wrong-position", at(4096, &one)),
        ("truncated", at(8192, &one[..one.len() - 1])),
        ("bad-batch-crc", at(8192, &bad_batch_crc)),
        ("bad-header-crc", at(8192, &other_epoch)),
        ("zeros", at(0, &[0; 64])),
    ]
}

fn checkpoint_seeds() -> Vec<(&'static str, Vec<u8>)> {
    let entry = |offset, pos, max_ts_ms| IndexEntry { offset, pos, max_ts_ms };
    let span = |first_pos, bytes, max_ts_ms| Span { first_pos, bytes, max_ts_ms };
    let partition = |pid, next_offset, start_offset, entries: Vec<IndexEntry>, spans: Vec<Span>| PartitionCheckpoint {
        pid,
        next_offset,
        start_offset,
        max_ts_ms: entries.last().map_or(-1, |e| e.max_ts_ms),
        entries,
        spans,
        named: None,
        producers: vec![],
    };
    let empty = Checkpoint { version: checkpoint::VERSION, log: 0, epoch: 1, covered_pos: 0, log_start: 0, partitions: vec![] };
    let one = Checkpoint {
        version: checkpoint::VERSION,
        log: 3,
        epoch: 9,
        covered_pos: 1 << 20,
        log_start: 4096,
        partitions: vec![partition(
            7,
            100,
            10,
            vec![entry(10, 4096, 1), entry(50, 65536, 5)],
            vec![span(4096, 40_000, 1), span(65536, 500_000, 5)],
        )],
    };
    let three = Checkpoint {
        version: checkpoint::VERSION,
        log: 1,
        epoch: 2,
        covered_pos: 1 << 30,
        log_start: 0,
        partitions: vec![
            partition(1, 0, 0, vec![], vec![]),
            partition(
                4,
                1000,
                0,
                (0..10).map(|i| entry(i * 100, i * 8192, i as i64)).collect(),
                (0..10).map(|i| span(i * 8192, 8192, i as i64)).collect(),
            ),
            partition(
                u32::MAX,
                u64::MAX,
                5,
                vec![entry(5, 0, i64::MIN), entry(6, (1 << 30) - 1, i64::MAX)],
                vec![span(0, 0, i64::MIN), span((1 << 30) - 1, 1, i64::MAX)],
            ),
        ],
    };
    // Version 1, as written before spans: still read.
    let v1 = |c: &Checkpoint| {
        let mut c = c.clone();
        c.version = 1;
        c.partitions.iter_mut().for_each(|p| p.spans.clear());
        checkpoint::encode(&c)
    };
    let mut bad_crc = checkpoint::encode(&one);
    bad_crc[30] ^= 0x01;
    // An index whose entries run backwards, with a valid checksum.
    let backwards = checkpoint::encode(&Checkpoint {
        partitions: vec![partition(7, 100, 10, vec![entry(50, 65536, 5), entry(10, 4096, 1)], vec![])],
        ..one.clone()
    });
    // Spans that overlap, with a valid checksum.
    let overlapping = checkpoint::encode(&Checkpoint {
        partitions: vec![partition(7, 100, 10, vec![], vec![span(4096, 70_000, 1), span(65536, 10, 5)])],
        ..one.clone()
    });
    let mut trailing = checkpoint::encode(&empty);
    trailing.push(0);
    let crc = crc32c::crc32c(&trailing[12..]);
    trailing[8..12].copy_from_slice(&crc.to_le_bytes());
    let mut newer = checkpoint::encode(&one);
    newer[7] = b'5';
    // Version 4: a partition's idempotent producers.
    let kept = |first_seq, last_seq, base_offset, end_offset| KeptBatch { first_seq, last_seq, base_offset, end_offset };
    let mut with_producers = one.clone();
    with_producers.partitions[0].producers = vec![
        ProducerState { producer_id: 3, epoch: 0, batches: [kept(0, 4, 10, 15), kept(5, 5, 40, 41)].into() },
        ProducerState { producer_id: i64::MAX, epoch: i16::MAX, batches: [kept(i32::MAX, 0, 50, 52)].into() },
    ];
    vec![
        ("valid-empty", checkpoint::encode(&empty)),
        ("valid-one-partition", checkpoint::encode(&one)),
        ("valid-three-partitions", checkpoint::encode(&three)),
        ("valid-v1-empty", v1(&empty)),
        ("valid-v1-one-partition", v1(&one)),
        ("valid-v1-three-partitions", v1(&three)),
        ("valid-v3-one-partition", checkpoint::encode(&Checkpoint { version: 3, ..one.clone() })),
        ("valid-v4-producers", checkpoint::encode(&with_producers)),
        ("bad-crc", bad_crc),
        ("index-backwards", backwards),
        ("spans-overlap", overlapping),
        ("trailing-byte", trailing),
        ("newer-version", newer),
    ]
}

/// The two files a real catalog writes, damaged copies, and topic names.
fn catalog_seeds() -> Vec<(&'static str, Vec<u8>)> {
    let dir = std::env::temp_dir().join(format!("strom-fuzz-seeds-{}", std::process::id()));
    let _ = fs::remove_dir_all(&dir);
    let mut cat = Catalog::open_or_create(&dir, 3).unwrap();
    cat.create_topic("orders.v1", 4, 100, Default::default(), &[]).unwrap();
    cat.create_topic("gone", 2, 100, Default::default(), &[]).unwrap();
    cat.create_topic("A-b_c", 1, 100, Default::default(), &[]).unwrap();
    cat.create_topic("indexed", 1, 100, Default::default(), &["ts".to_string(), "seq".to_string()]).unwrap();
    cat.delete_topic("gone").unwrap();
    let meta = fs::read(dir.join(catalog::META_FILE)).unwrap();
    let topics = fs::read(dir.join(catalog::TOPICS_FILE)).unwrap();
    fs::remove_dir_all(&dir).unwrap();

    let mut bad_crc = topics.clone();
    bad_crc[0] ^= 0x20;
    let crc_line_at = meta[..meta.len() - 1].iter().rposition(|&b| b == b'\n').unwrap() + 1;
    let body_only = meta[..crc_line_at].to_vec();
    // Pids near the top of their range, as a catalog that has lived long would hold.
    let high_body = "strom-topics 1\nnext_pid 4294967200\ntopic old 4294967000 200\n";
    let high_pids = format!("{high_body}crc32c {:08x}\n", crc32c::crc32c(high_body.as_bytes()));
    let names = format!("orders.v1 . .. ../x a b é {} {}\n", "x".repeat(249), "y".repeat(250));
    vec![
        ("meta", meta),
        ("topics", topics),
        ("topics-bad-crc", bad_crc),
        ("meta-no-crc-line", body_only),
        ("topics-high-pids", high_pids.into_bytes()),
        ("names", names.into_bytes()),
    ]
}

fn fsync_policy_seeds() -> Vec<(&'static str, Vec<u8>)> {
    let seeds: [(&'static str, &str); 10] = [
        ("valid-always", "always"),
        ("valid-never", "never"),
        ("valid-interval-ms", "interval:5"),
        ("valid-interval-us", "interval:250us"),
        ("valid-interval-us-whole-ms", "interval:3000us"),
        ("valid-interval-max", "interval:18446744073709551615"),
        ("zero-interval", "interval:0"),
        ("empty-interval", "interval:"),
        ("wrong-case", "Always"),
        ("unit-ms", "interval:5ms"),
    ];
    seeds.iter().map(|&(name, text)| (name, text.as_bytes().to_vec())).collect()
}

fn request(request_id: u64, req: &Request<'_>) -> Vec<u8> {
    let mut out = Vec::new();
    proto::encode_request(&mut out, request_id, req);
    out
}

fn response(api: Api, request_id: u64, resp: &Response<'_>) -> Vec<u8> {
    let mut out = Vec::new();
    proto::encode_response(&mut out, api, request_id, resp);
    out
}

/// A frame from a raw header and body, for the ones no encoder writes.
fn raw_frame(api: u16, version_or_error: u16, request_id: u64, body: &[u8]) -> Vec<u8> {
    let length = (proto::HEADER_BYTES + body.len()) as u32;
    [&length.to_be_bytes()[..], &api.to_be_bytes(), &version_or_error.to_be_bytes(), &request_id.to_be_bytes(), body].concat()
}

/// Every api's request and reply, an error reply, and frames broken in the
/// ways a decoder must refuse. Invalid ones must fail as request and as reply.
fn proto_seeds() -> Vec<(&'static str, Vec<u8>)> {
    let mut one = BatchBuilder::new(1_700_000_000_000);
    one.push(1_700_000_000_000, Some(b"k"), Some(b"hello"), &[]);
    let mut three = BatchBuilder::new(1_700_000_000_000).producer(7, 0, 0);
    for i in 0..3u8 {
        three.push(1_700_000_000_000 + i64::from(i), None, Some(&[i; 20]), &[(b"h", Some(b"v"))]);
    }
    let batches = [one.finish(), three.finish()].concat();
    let produce = request(1, &Request::Produce { topic: "orders", partition: 3, batches: &batches });
    let fetch = request(2, &Request::Fetch { topic: "orders", partition: 3, offset: 42, max_bytes: 1 << 20, max_wait_ms: 500 });
    let metadata = Response::Metadata {
        core_addrs: vec![String::new(), "10.0.0.1:9093".into()],
        topics: vec![TopicMetadata { name: "orders".into(), partition_cores: vec![0, 1, 0, 1] }],
    };

    let truncated = produce[..produce.len() - 1].to_vec();
    let mut trailing = [&fetch[..], &[0]].concat();
    trailing[..4].copy_from_slice(&((fetch.len() + 1 - 4) as u32).to_be_bytes());
    let lying_count = raw_frame(Api::Metadata as u16, proto::VERSION, 9, &[0xFF, 0xFF, 0xFF, 0xFF, 0, 1, b'a']);
    let bad_utf8 = raw_frame(Api::CreateTopic as u16, proto::VERSION, 9, &[0, 2, 0xC3, 0x28, 0, 0, 0, 1]);
    let mut too_small = request(9, &Request::DeleteTopic { topic: "orders" });
    too_small[..4].copy_from_slice(&11u32.to_be_bytes());
    let newer_version = raw_frame(Api::Fetch as u16, 2, 9, &fetch[16..]);
    let unknown_api = raw_frame(99, proto::VERSION, 9, &[0, 5, b'a']);
    let metrics = Response::Metrics { cores: vec![vec![("strom_appends_total", 1000), ("strom_connections_open", 3)], vec![]] };
    // Two cores declared, the first with 65535 metrics but room for one.
    let lying_metrics = raw_frame(Api::Metrics as u16, 0, 10, &[&[0, 2, 0xFF, 0xFF, 0, 1, b'a'][..], &[0; 8], &[0, 0]].concat());
    vec![
        ("valid-produce-request", produce),
        ("valid-fetch-request", fetch),
        (
            "valid-list-offsets-request",
            request(3, &Request::ListOffsets { topic: "orders", partition: 0, spec: OffsetSpec::Timestamp(1_700_000_000_000) }),
        ),
        ("valid-metadata-request", request(4, &Request::Metadata { topics: vec!["orders", "audit.v2"] })),
        ("valid-metadata-request-all", request(5, &Request::Metadata { topics: vec![] })),
        (
            "valid-create-topic-request",
            request(6, &Request::CreateTopic { topic: "orders", partitions: 4, retention: None, indices: vec![] }),
        ),
        ("valid-delete-topic-request", request(7, &Request::DeleteTopic { topic: "orders" })),
        ("valid-offset-commit-request", request(8, &Request::OffsetCommit { group: "billing", topic: "orders", partition: 3, offset: 43 })),
        ("valid-offset-fetch-request", request(9, &Request::OffsetFetch { group: "billing", topic: "orders", partition: 3 })),
        ("valid-produce-response", response(Api::Produce, 1, &Response::Produce { base_offset: 40, last_offset: 43 })),
        (
            "valid-fetch-response",
            response(Api::Fetch, 2, &Response::Fetch { high_watermark: 44, start_offset: 0, next_offset: 44, batches: &batches }),
        ),
        ("valid-list-offsets-response", response(Api::ListOffsets, 3, &Response::ListOffsets { offset: None })),
        ("valid-metadata-response", response(Api::Metadata, 4, &metadata)),
        ("valid-create-topic-response", response(Api::CreateTopic, 6, &Response::CreateTopic)),
        ("valid-delete-topic-response", response(Api::DeleteTopic, 7, &Response::DeleteTopic)),
        ("valid-offset-commit-response", response(Api::OffsetCommit, 8, &Response::OffsetCommit)),
        ("valid-offset-fetch-response", response(Api::OffsetFetch, 9, &Response::OffsetFetch { offset: Some(43) })),
        ("valid-metrics-request", request(10, &Request::Metrics)),
        ("valid-metrics-response", response(Api::Metrics, 10, &metrics)),
        ("valid-error-response", response(Api::Fetch, 2, &Response::Error { code: ErrorCode::UnknownTopic, message: "no topic orders" })),
        ("truncated-produce", truncated),
        ("trailing-byte-fetch", trailing),
        ("metadata-count-lies", lying_count),
        ("bad-utf8-topic", bad_utf8),
        ("length-under-header", too_small),
        ("newer-version-fetch", newer_version),
        ("unknown-api", unknown_api),
        ("metrics-count-lies", lying_metrics),
    ]
}

/// Every api's request body as encoded, and bodies a decoder must refuse.
fn request_body_seeds() -> Vec<(&'static str, Vec<u8>)> {
    let mut one = BatchBuilder::new(1_700_000_000_000);
    one.push(1_700_000_000_000, Some(b"k"), Some(b"hello"), &[]);
    let batches = one.finish();
    let fetch = request_input(&Request::Fetch { topic: "orders", partition: 3, offset: 42, max_bytes: 1 << 20, max_wait_ms: 500 });
    let create = request_input(&Request::CreateTopic { topic: "orders", partitions: 4, retention: None, indices: vec![] });
    let commit = request_input(&Request::OffsetCommit { group: "billing", topic: "orders", partition: 3, offset: 43 });
    let retention = Some(strom::catalog::TopicRetention { ms: Some(604_800_000), bytes: None });
    let create_v2 = request_input(&Request::CreateTopic { topic: "orders", partitions: 4, retention, indices: vec![] });
    let metadata = Api::Metadata as u8 - 1;
    let subscribe =
        request_input(&Request::Subscribe { topic: "orders", partition: 3, credit_bytes: 1 << 20, start: SubscribeStart::Offset(42) });
    vec![
        ("valid-produce", request_input(&Request::Produce { topic: "orders", partition: 3, batches: &batches })),
        ("valid-fetch", fetch.clone()),
        ("valid-list-offsets-earliest", request_input(&Request::ListOffsets { topic: "t", partition: 0, spec: OffsetSpec::Earliest })),
        ("valid-list-offsets-time", request_input(&Request::ListOffsets { topic: "t", partition: 1, spec: OffsetSpec::Timestamp(5) })),
        ("valid-metadata", request_input(&Request::Metadata { topics: vec!["orders", "audit.v2"] })),
        ("valid-metadata-all", request_input(&Request::Metadata { topics: vec![] })),
        ("valid-create-topic", create.clone()),
        ("valid-delete-topic", request_input(&Request::DeleteTopic { topic: "orders" })),
        ("valid-offset-commit", commit.clone()),
        ("valid-offset-fetch", request_input(&Request::OffsetFetch { group: "billing", topic: "orders", partition: 3 })),
        ("valid-create-topic-retention", create_v2.clone()),
        ("valid-alter-topic", request_input(&Request::AlterTopic { topic: "orders", ms: None, bytes: Some(Some(1 << 30)) })),
        ("valid-describe-topic", request_input(&Request::DescribeTopic { topic: "orders" })),
        ("valid-server-info", request_input(&Request::ServerInfo)),
        ("create-topic-retention-minus-4", [&create_v2[..create_v2.len() - 8], &(-4i64).to_be_bytes()].concat()),
        ("fetch-short", fetch[..fetch.len() - 1].to_vec()),
        ("create-topic-trailing", [&create[..], &[0]].concat()),
        ("offset-commit-string-past-end", [&commit[..1], &[0xFF, 0xFF], &commit[3..]].concat()),
        ("metadata-count-2-31", vec![metadata, 0x80, 0, 0, 0, 0, 1, b'a']),
        ("metadata-count-max", vec![metadata, 0xFF, 0xFF, 0xFF, 0xFF, 0, 1, b'a']),
        ("produce-no-batch", vec![Api::Produce as u8 - 1, 0, 1, b't', 0, 0, 0, 0]),
        ("list-offsets-spec-minus-3", [&[Api::ListOffsets as u8 - 1][..], &[0, 1, b't', 0, 0, 0, 0], &(-3i64).to_be_bytes()].concat()),
        ("delete-topic-bad-utf8", vec![Api::DeleteTopic as u8 - 1, 0, 2, 0xC3, 0x28]),
        ("valid-subscribe-offset", subscribe.clone()),
        (
            "valid-subscribe-index",
            request_input(&Request::Subscribe {
                topic: "orders",
                partition: 0,
                credit_bytes: 1 << 20,
                start: SubscribeStart::Index { name: "ts", value: -5 },
            }),
        ),
        ("valid-grant", request_input(&Request::Grant { subscription: 7, bytes: 1 << 20 })),
        ("valid-cancel", request_input(&Request::Cancel { request: 7 })),
        ("subscribe-start-kind-5", [&subscribe[..subscribe.len() - 9], &[5]].concat()),
    ]
}

/// Every api's reply body as encoded, error replies, and bodies a decoder must refuse.
fn response_body_seeds() -> Vec<(&'static str, Vec<u8>)> {
    let mut three = BatchBuilder::new(1_700_000_000_000).producer(7, 0, 0);
    for i in 0..3u8 {
        three.push(1_700_000_000_000 + i64::from(i), None, Some(&[i; 20]), &[(b"h", Some(b"v"))]);
    }
    let batches = three.finish();
    let metadata = Response::Metadata {
        core_addrs: vec![String::new(), "10.0.0.1:9093".into()],
        topics: vec![TopicMetadata { name: "orders".into(), partition_cores: vec![0, 1, 0, 1] }],
    };
    let selector = fuzz_checks::proto_body::selector_of;
    let described = strom::catalog::TopicDescription {
        name: "orders".into(),
        retention: strom::catalog::TopicRetention { ms: Some(3_600_000), bytes: None },
        effective: strom::partition::Retention { age_ms: Some(3_600_000), bytes: Some(1 << 30) },
        partitions: vec![strom::catalog::PartitionDescription { start_offset: 5, end_offset: 44, bytes: 4096, core: 1 }],
        indices: vec![],
    };
    let server_info = strom::proto::ServerInfo {
        protocol_version: strom::proto::VERSION,
        server_version: "0.1.0".into(),
        cores: 2,
        fsync: "always".into(),
        batch_bytes_max: (1 << 20) - (8 << 10),
        frame_bytes_max: (8 << 20) + 1024,
        partitions_per_topic_max: 65_536,
    };
    vec![
        ("valid-produce", response_input(Api::Produce, &Response::Produce { base_offset: 40, last_offset: 43 })),
        (
            "valid-fetch",
            response_input(Api::Fetch, &Response::Fetch { high_watermark: 44, start_offset: 0, next_offset: 44, batches: &batches }),
        ),
        (
            "valid-fetch-empty",
            response_input(Api::Fetch, &Response::Fetch { high_watermark: 0, start_offset: 0, next_offset: 0, batches: &[] }),
        ),
        ("valid-list-offsets", response_input(Api::ListOffsets, &Response::ListOffsets { offset: Some(7) })),
        ("valid-list-offsets-none", response_input(Api::ListOffsets, &Response::ListOffsets { offset: None })),
        ("valid-metadata", response_input(Api::Metadata, &metadata)),
        ("valid-create-topic", response_input(Api::CreateTopic, &Response::CreateTopic)),
        ("valid-delete-topic", response_input(Api::DeleteTopic, &Response::DeleteTopic)),
        ("valid-offset-commit", response_input(Api::OffsetCommit, &Response::OffsetCommit)),
        ("valid-offset-fetch", response_input(Api::OffsetFetch, &Response::OffsetFetch { offset: Some(43) })),
        ("valid-alter-topic", response_input(Api::AlterTopic, &Response::AlterTopic { retention: described.retention })),
        ("valid-describe-topic", response_input(Api::DescribeTopic, &Response::DescribeTopic { description: described.clone() })),
        ("valid-server-info", response_input(Api::ServerInfo, &Response::ServerInfo(server_info))),
        ("server-info-short", vec![selector(Api::ServerInfo), 0, 1, 0, 5, b'0', b'.', b'1']),
        ("describe-topic-partitions-max", [&[selector(Api::DescribeTopic), 0, 1, b't'][..], &[0xFF; 32], &[0xFF; 4]].concat()),
        ("valid-error", response_input(Api::Fetch, &Response::Error { code: ErrorCode::UnknownTopic, message: "no topic orders" })),
        ("valid-error-unknown-code", response_input(Api::Produce, &Response::Error { code: ErrorCode::Unknown(200), message: "newer" })),
        ("metadata-cores-lie", vec![selector(Api::Metadata), 0xFF, 0xFF, 0, 0]),
        ("metadata-topics-2-31", vec![selector(Api::Metadata), 0, 0, 0x80, 0, 0, 0, 0, 1, b'a']),
        ("metadata-partitions-max", vec![selector(Api::Metadata), 0, 0, 0, 0, 0, 1, 0, 1, b'a', 0xFF, 0xFF, 0xFF, 0xFF]),
        ("offset-fetch-minus-2", [&[selector(Api::OffsetFetch)][..], &(-2i64).to_be_bytes()].concat()),
        ("error-message-over-limit", [&[0x80 | selector(Api::Fetch), 5][..], &[0x04, 0x01], &[b'x'; 1025]].concat()),
        ("produce-short", vec![selector(Api::Produce), 0, 0, 0]),
        (
            "valid-subscribe-push",
            response_input(
                Api::Subscribe,
                &Response::Subscribe { from_offset: 42, next_offset: 45, high_watermark: 45, batches: &batches },
            ),
        ),
        ("valid-grant", response_input(Api::Grant, &Response::Grant)),
        (
            "valid-subscribe-cancelled",
            response_input(Api::Subscribe, &Response::Error { code: ErrorCode::Cancelled, message: "cancelled" }),
        ),
    ]
}

/// Logs laid out as the journal writes them, whole and damaged in the ways
/// a crash or a disk can damage them.
fn recovery_seeds() -> Vec<(&'static str, Vec<u8>)> {
    use recovery_input::{FLAGS_EPOCH_FILE as EPOCH, FLAGS_GAP as GAP, FLAGS_READ_ONLY as READ_ONLY, FLAGS_RESEAL as RESEAL, head};
    let three_commits = |start: u64, epoch: u32| {
        let mut log = LogBuilder::new(start);
        log.commit(epoch, 0, 2, 3).commit(epoch, 1, 1, 5).commit(epoch, 0, 3, 2);
        log
    };
    let log = three_commits(0, 1);
    let one_seg = head(EPOCH, 1, [0, 0], 0, 8);
    let three_segs = head(EPOCH | 2, 1, [1, 1], 0, 8);

    let mut torn = log.bytes.clone();
    torn.truncate(torn.len() - 100);
    let mut torn_zeros = log.bytes.clone();
    let last_block = torn_zeros.len() - 4096;
    torn_zeros[last_block + 512..].fill(0);
    // A second life (epoch 2) rewrote the first commit; the first life's later commits are left over.
    let mut second = LogBuilder::new(0);
    second.commit(2, 0, 2, 3);
    let stale = [&second.bytes[..], &log.bytes[second.bytes.len()..]].concat();
    // A byte of the first commit changed after later commits were acknowledged.
    let mut damaged = log.bytes.clone();
    damaged[200] ^= 0x40;
    // Epoch 2 began writing at 4096 (the 12-byte epoch file says so) and
    // its first commit was lost; a whole epoch-1 commit from before the cut
    // lies under it, then epoch 2's second commit (sim_server seed 1064).
    let mut stale_at_start = LogBuilder::new(0);
    stale_at_start.commit(1, 0, 1, 2).commit(1, 0, 1, 3).durable_at(4096).commit(2, 0, 1, 4);
    let mut big = LogBuilder::new(16 * 4096);
    big.commit(3, 9, 4, 40).commit(3, 9, 1, 300).commit(4, 2, 2, 1);

    let input = |h: [u8; recovery_input::HEAD_BYTES], bytes: &[u8]| [&h[..], bytes].concat();
    vec![
        ("valid-one-segment", log.input(one_seg)),
        ("valid-three-segments", log.input(three_segs)),
        ("valid-checkpoint", log.input(recovery_input::with_checkpoint(one_seg, 1, 1))),
        ("valid-read-only", log.input(head(EPOCH | READ_ONLY, 1, [0, 0], 0, 8))),
        ("valid-resealed", log.input(head(EPOCH | RESEAL, 1, [0, 0], 0, 8))),
        ("valid-no-epoch-file", log.input(head(0, 0, [0, 0], 0, 8))),
        ("valid-log-start-epochs-3-4", big.input(head(EPOCH | 1, 3, [1, 0], 16, 8))),
        ("segment-cuts-a-frame", big.input(head(EPOCH | 1, 3, [2, 0], 16, 8))),
        ("valid-torn-tail", input(one_seg, &torn)),
        ("valid-torn-tail-zeros", input(one_seg, &torn_zeros)),
        ("valid-stale-epoch-after-cut", input(head(EPOCH, 2, [0, 0], 0, 8), &stale)),
        ("valid-segment-gap", log.input(head(EPOCH | 1 | GAP, 1, [1, 0], 0, 8))),
        ("valid-stale-frame-at-the-epoch-start", stale_at_start.input(recovery_input::with_epoch_start(head(EPOCH, 2, [0, 0], 0, 8), 1))),
        ("damaged-acknowledged-frame", input(one_seg, &damaged)),
        ("checkpoint-past-end", log.input(recovery_input::with_checkpoint(one_seg, 1, 40))),
        ("epoch-file-u32-max", log.input(head(EPOCH, u32::MAX, [0, 0], 0, 8))),
        (
            "epoch-file-3-bytes",
            log.input({
                let mut h = one_seg;
                h[13] = 1;
                h
            }),
        ),
    ]
}

/// Ordered entries with lookups (mode 0), and checkpoints to load (mode 1).
fn index_seeds() -> Vec<(&'static str, Vec<u8>)> {
    let steps: Vec<u8> = (0..12u8).flat_map(|i| [i, i % 3, (i * 7) % 5]).collect();
    let queries: Vec<u8> = [0u16, 1, 5, 17, 40, 400, u16::MAX].iter().flat_map(|q| q.to_le_bytes()).collect();
    let mut with_segments = steps.clone();
    with_segments[3] |= 0x80;
    with_segments[15] |= 0x80;
    let checkpoints = checkpoint_seeds();
    let ckpt = |name: &str| [&[1u8][..], &checkpoints.iter().find(|(n, _)| *n == name).unwrap().1].concat();
    vec![
        ("entries-and-queries", [&[0u8, 12][..], &steps, &queries].concat()),
        ("segment-starts", [&[0u8, 12][..], &with_segments, &[3, 0, 9, 0]].concat()),
        ("one-entry", vec![0, 1, 0, 0, 0, 0, 0]),
        ("empty", vec![0, 0, 1, 0]),
        ("load-three-partitions", ckpt("valid-three-partitions")),
        ("load-backwards", ckpt("index-backwards")),
    ]
}

/// The offsets file as the server writes it, and damaged copies.
fn offsets_seeds() -> Vec<(&'static str, Vec<u8>)> {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("fuzz-offsets-seeds-{}", std::process::id()));
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir).unwrap();
    let mut store = strom::broker::offsets::OffsetStore::open(&dir).unwrap();
    store.set("billing", "orders.v1", 0, 42, "a Kafka client's metadata").unwrap();
    store.set("billing", "orders.v1", 3, u64::MAX, "").unwrap();
    store.set("audit-2", "A-b_c", 7, 0, "").unwrap();
    store.persist().unwrap();
    let file = fs::read(dir.join(strom::broker::offsets::OFFSETS_FILE)).unwrap();
    fs::remove_dir_all(&dir).unwrap();
    let text = String::from_utf8(file.clone()).unwrap();
    let body_at = text.trim_end_matches('\n').rfind('\n').unwrap() + 1;
    let body = &text[..body_at];
    let reseal = |body: &str| format!("{body}crc32c {:08x}\n", crc32c::crc32c(body.as_bytes())).into_bytes();
    vec![
        ("written", file),
        ("bad-crc", text.replace("42", "43").into_bytes()),
        ("no-crc-line", body.as_bytes().to_vec()),
        ("path-in-group", reseal(&body.replace("billing", "../billing"))),
        ("extra-field", reseal(&body.replace(" 42\n", " 42 1\n"))),
        ("partition-over-u32", reseal(&body.replace(" 0 42", " 4294967296 42"))),
        ("wrong-header", reseal(&body.replace("strom-offsets 1", "strom-offsets 2"))),
    ]
}

/// Names the rules must accept and refuse, and segment file names.
fn names_seeds() -> Vec<(&'static str, Vec<u8>)> {
    vec![
        ("topics", b"orders.v1 A-b_c x . .. ../x /etc/x a\\b".to_vec()),
        ("nul", b"a\0b".to_vec()),
        ("long", format!("{} {}", "x".repeat(249), "y".repeat(300)).into_bytes()),
        ("unicode", "é orders\u{2028}x ａ".as_bytes().to_vec()),
        ("not-utf8", vec![b'a', 0xC3, 0x28, b'b']),
        (
            "segments",
            b"00000000000000004096.seg 0000000000000000409.seg 0000000000000000409x.seg 18446744073709551615.seg 99999999999999999999.seg"
                .to_vec(),
        ),
    ]
}
