//! Replays every saved fuzz input under stable `cargo test`, through the same
//! checks the fuzz target runs, so that an input `cargo fuzz` once found stays
//! fixed without nightly. Inputs live in `fuzz/corpus/<target>/` (seeds and
//! what fuzzing kept) and `fuzz/regressions/<target>/` (crashes, once fixed).
//!
//! The seed corpora are written by the ignored test `write_seed_corpus`:
//! `cargo test --test fuzz_replay -- --ignored`.

use std::collections::BTreeMap;
use std::fs;
use std::panic;
use std::path::{Path, PathBuf};

use strom::catalog::{self, Catalog};
use strom::config::{self, FsyncPolicy};
use strom::log::checkpoint::{self, Checkpoint, PartitionCheckpoint};
use strom::log::frame::{self, FrameHeader, FrameKind};
use strom::partition::IndexEntry;
use strom::proto::{self, Api, ErrorCode, OffsetSpec, Request, Response, TopicMetadata};
use strom::wire::batch::{self, BatchBuilder};

const INPUT_ROOTS: [&str; 2] = ["fuzz/corpus", "fuzz/regressions"];
const CORPUS_ROOT: &str = "fuzz/corpus";
/// Every fuzz target; each must have at least one saved input.
const TARGETS: [&str; 6] = ["batch_validate", "frame_decode", "checkpoint_decode", "catalog_parse", "fsync_policy_parse", "proto_decode"];

/// The check the fuzz target of this name runs.
fn check_for(target: &str) -> fn(&[u8]) {
    match target {
        "batch_validate" => batch::fuzz_check,
        "frame_decode" => frame::fuzz_check,
        "checkpoint_decode" => checkpoint::fuzz_check,
        "catalog_parse" => catalog::fuzz_check,
        "fsync_policy_parse" => config::fuzz_check,
        "proto_decode" => proto::fuzz_check,
        other => panic!("no replay check for fuzz target {other}: add it to check_for"),
    }
}

/// Whether the target's decoder accepts `data`, for checking seed names;
/// `None` where the decoder is private (the catalog parsers).
fn accepts(target: &str, data: &[u8]) -> Option<bool> {
    match target {
        "batch_validate" => Some(batch::validate(data, data.len()).is_ok()),
        "frame_decode" => Some(frame_verifies(data)),
        "checkpoint_decode" => Some(checkpoint::decode(data).is_ok()),
        "fsync_policy_parse" => Some(std::str::from_utf8(data).is_ok_and(|s| s.parse::<FsyncPolicy>().is_ok())),
        "proto_decode" => Some(proto::decode_request(data).is_ok() || proto::decode_response(data).is_ok()),
        _ => None,
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
    // Proves: every corpus and regression file passes its fuzz target's checks, and each target has at least one.
    let mut replayed: BTreeMap<String, usize> = BTreeMap::new();
    let mut failed = Vec::new();
    for (target, path) in inputs() {
        let data = fs::read(&path).unwrap();
        let check = check_for(&target);
        // Keep going after a failure so the report names every bad input.
        if panic::catch_unwind(|| check(&data)).is_err() {
            failed.push(path);
        }
        *replayed.entry(target).or_default() += 1;
    }
    assert!(failed.is_empty(), "inputs failing their fuzz checks: {failed:#?}");
    for target in TARGETS {
        assert!(replayed.get(target).is_some_and(|&n| n > 0), "no fuzz inputs for {target} under {INPUT_ROOTS:?}");
    }
    println!("replayed fuzz inputs per target: {replayed:?}");
}

#[test]
fn seeds_are_what_their_names_say() {
    // Proves: seeds named valid-* are still accepted and the others still refused, so fuzzing starts on both sides of the line.
    for target in TARGETS {
        let seeds = files_in(&crate_path(CORPUS_ROOT).join(target));
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
    for target in TARGETS {
        let dir = crate_path(CORPUS_ROOT).join(target);
        fs::create_dir_all(&dir).unwrap();
        for (name, bytes) in seeds(target) {
            fs::write(dir.join(format!("seed-{name}")), bytes).unwrap();
        }
    }
}

fn seeds(target: &str) -> Vec<(&'static str, Vec<u8>)> {
    match target {
        "batch_validate" => batch_seeds(),
        "frame_decode" => frame_seeds(),
        "checkpoint_decode" => checkpoint_seeds(),
        "catalog_parse" => catalog_seeds(),
        "fsync_policy_parse" => fsync_policy_seeds(),
        "proto_decode" => proto_seeds(),
        other => panic!("no seeds for fuzz target {other}"),
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
    let partition = |pid, next_offset, start_offset, entries: Vec<IndexEntry>| PartitionCheckpoint {
        pid,
        next_offset,
        start_offset,
        max_ts_ms: entries.last().map_or(-1, |e| e.max_ts_ms),
        entries,
    };
    let empty = Checkpoint { log: 0, epoch: 1, covered_pos: 0, log_start: 0, partitions: vec![] };
    let one = Checkpoint {
        log: 3,
        epoch: 9,
        covered_pos: 1 << 20,
        log_start: 4096,
        partitions: vec![partition(7, 100, 10, vec![entry(10, 4096, 1), entry(50, 65536, 5)])],
    };
    let three = Checkpoint {
        log: 1,
        epoch: 2,
        covered_pos: 1 << 30,
        log_start: 0,
        partitions: vec![
            partition(1, 0, 0, vec![]),
            partition(4, 1000, 0, (0..10).map(|i| entry(i * 100, i * 8192, i as i64)).collect()),
            partition(u32::MAX, u64::MAX, 5, vec![entry(5, 0, i64::MIN), entry(6, (1 << 30) - 1, i64::MAX)]),
        ],
    };
    let mut bad_crc = checkpoint::encode(&one);
    bad_crc[30] ^= 0x01;
    // An index whose entries run backwards, with a valid checksum.
    let backwards = checkpoint::encode(&Checkpoint {
        partitions: vec![partition(7, 100, 10, vec![entry(50, 65536, 5), entry(10, 4096, 1)])],
        ..one.clone()
    });
    let mut trailing = checkpoint::encode(&empty);
    trailing.push(0);
    let crc = crc32c::crc32c(&trailing[12..]);
    trailing[8..12].copy_from_slice(&crc.to_le_bytes());
    vec![
        ("valid-empty", checkpoint::encode(&empty)),
        ("valid-one-partition", checkpoint::encode(&one)),
        ("valid-three-partitions", checkpoint::encode(&three)),
        ("bad-crc", bad_crc),
        ("index-backwards", backwards),
        ("trailing-byte", trailing),
    ]
}

/// The two files a real catalog writes, damaged copies, and topic names.
fn catalog_seeds() -> Vec<(&'static str, Vec<u8>)> {
    let dir = std::env::temp_dir().join(format!("strom-fuzz-seeds-{}", std::process::id()));
    let _ = fs::remove_dir_all(&dir);
    let mut cat = Catalog::open_or_create(&dir, 3).unwrap();
    cat.create_topic("orders.v1", 4, 100).unwrap();
    cat.create_topic("gone", 2, 100).unwrap();
    cat.create_topic("A-b_c", 1, 100).unwrap();
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
    vec![
        ("valid-produce-request", produce),
        ("valid-fetch-request", fetch),
        (
            "valid-list-offsets-request",
            request(3, &Request::ListOffsets { topic: "orders", partition: 0, spec: OffsetSpec::Timestamp(1_700_000_000_000) }),
        ),
        ("valid-metadata-request", request(4, &Request::Metadata { topics: vec!["orders", "audit.v2"] })),
        ("valid-metadata-request-all", request(5, &Request::Metadata { topics: vec![] })),
        ("valid-create-topic-request", request(6, &Request::CreateTopic { topic: "orders", partitions: 4 })),
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
        ("valid-error-response", response(Api::Fetch, 2, &Response::Error { code: ErrorCode::UnknownTopic, message: "no topic orders" })),
        ("truncated-produce", truncated),
        ("trailing-byte-fetch", trailing),
        ("metadata-count-lies", lying_count),
        ("bad-utf8-topic", bad_utf8),
        ("length-under-header", too_small),
        ("newer-version-fetch", newer_version),
        ("unknown-api", unknown_api),
    ]
}
