//! Replays every saved fuzz input under stable `cargo test`, through the same
//! checks the fuzz target runs, so that an input `cargo fuzz` once found stays
//! fixed without nightly. Inputs live in `fuzz/corpus/<target>/` (seeds and
//! what fuzzing kept) and `fuzz/regressions/<target>/` (crashes, once fixed).
//!
//! The seed corpus is written by the ignored test `write_seed_corpus`:
//! `cargo test --test fuzz_replay -- --ignored`.

use std::fs;
use std::panic;
use std::path::{Path, PathBuf};

use strom::wire::batch::{self, BatchBuilder};

const INPUT_ROOTS: [&str; 2] = ["fuzz/corpus", "fuzz/regressions"];
const SEED_DIR: &str = "fuzz/corpus/batch_validate";

/// The check the fuzz target of this name runs.
fn check_for(target: &str) -> fn(&[u8]) {
    match target {
        "batch_validate" => batch::fuzz_check,
        other => panic!("no replay check for fuzz target {other}: add it to check_for"),
    }
}

/// Every saved input as (fuzz target, file), skipping dotfiles like `.gitkeep`.
fn inputs() -> Vec<(String, PathBuf)> {
    let mut found = Vec::new();
    for root in INPUT_ROOTS {
        for target_dir in files_in(&Path::new(env!("CARGO_MANIFEST_DIR")).join(root)) {
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
    // Proves: every corpus and regression file passes its fuzz target's checks, and there is at least one.
    let mut replayed = 0;
    let mut failed = Vec::new();
    for (target, path) in inputs() {
        let data = fs::read(&path).unwrap();
        let check = check_for(&target);
        // Keep going after a failure so the report names every bad input.
        if panic::catch_unwind(|| check(&data)).is_err() {
            failed.push(path);
        }
        replayed += 1;
    }
    assert!(failed.is_empty(), "inputs failing their fuzz checks: {failed:#?}");
    assert!(replayed > 0, "no fuzz inputs found under {INPUT_ROOTS:?}");
    println!("replayed {replayed} fuzz inputs");
}

#[test]
fn seeds_are_what_their_names_say() {
    // Proves: seeds named valid-* still validate and the others are still refused, so fuzzing starts on both sides of the line.
    let seeds = files_in(&Path::new(env!("CARGO_MANIFEST_DIR")).join(SEED_DIR));
    let named: Vec<_> = seeds.iter().filter_map(|p| Some((p, p.file_name()?.to_str()?.strip_prefix("seed-")?))).collect();
    assert!(named.iter().any(|(_, n)| n.starts_with("valid-")));
    assert!(named.iter().any(|(_, n)| !n.starts_with("valid-")));
    for (path, name) in named {
        let data = fs::read(path).unwrap();
        let outcome = batch::validate(&data, data.len());
        assert_eq!(outcome.is_ok(), name.starts_with("valid-"), "{name}: {outcome:?}");
    }
}

#[test]
#[ignore = "writes the seed corpus into fuzz/; run by hand after a format change"]
fn write_seed_corpus() {
    // Proves: nothing; it (re)writes the seed-* files that the two tests above read.
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join(SEED_DIR);
    fs::create_dir_all(&dir).unwrap();
    for (name, bytes) in seeds() {
        fs::write(dir.join(format!("seed-{name}")), bytes).unwrap();
    }
}

fn seeds() -> Vec<(&'static str, Vec<u8>)> {
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
