//! A small deterministic mutation fuzzer on stable, so that every fuzz target
//! is exercised wherever `cargo test` runs, without nightly or libFuzzer.
//! It starts from each target's committed seeds and regressions and applies
//! the mutations that find decoder bugs: bit flips, interesting integers
//! (0, 2^31, 2^32-1, the input's own length...) written over 1, 2, 4 and 8
//! bytes in both byte orders, inserted and deleted ranges, splices of two
//! inputs, cuts. Every input runs through the target's check (the same code
//! cargo-fuzz runs) under the counting allocator, and must hold at most
//! `alloc_count::alloc_bound_bytes(input)` at once.
//!
//! Iteration `i` of target `t` is a function of (seed, t, i) alone, so any
//! failure replays with `STROM_FUZZ_SEED=S STROM_FUZZ_ONLY=t:i`, and its
//! input is written to `target/fuzz-mutate-failures/t/` to be copied into
//! `fuzz/regressions/t/` once fixed.
//!
//! By default each target gets `STROM_FUZZ_MS` = 1000 ms (at most
//! `STROM_FUZZ_ITERS` = 200000 iterations); `fuzz/ci.sh` runs it longer when
//! libFuzzer is not available. A check that makes no progress for
//! `STROM_FUZZ_HANG_SECS` (30) is reported as a hang, with its input.

// Shared with cargo-fuzz and the other fuzz test: not every item is used here.
#[allow(dead_code)]
#[path = "../fuzz/src/alloc_count.rs"]
mod alloc_count;
#[allow(dead_code)]
#[path = "../fuzz/src/lib.rs"]
mod fuzz_checks;

use std::fs;
use std::panic::{self, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

#[global_allocator]
static ALLOCATOR: alloc_count::Counting = alloc_count::Counting;

const SEED_DEFAULT: u64 = 0x5EED_F022;
const MS_PER_TARGET_DEFAULT: u64 = 1000;
const ITERS_MAX_DEFAULT: u64 = 200_000;
const HANG_SECS_DEFAULT: u64 = 30;
/// Mutated inputs are cut to this size, like libFuzzer's -max_len.
const INPUT_BYTES_MAX: usize = 64 << 10;

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().map_or(default, |v| v.parse().unwrap_or_else(|_| panic!("{name}={v:?} is not a number")))
}

/// xorshift64*, seeded through a mixer so that nearby seeds give unrelated streams.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Rng {
        let mut z = seed.wrapping_add(0x9E37_79B9_7F4A_7C15);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        Rng((z ^ (z >> 31)) | 1)
    }

    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

fn name_hash(name: &str) -> u64 {
    name.bytes().fold(0xCBF2_9CE4_8422_2325u64, |h, b| (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01B3))
}

/// The committed inputs of a target: its seeds and its regressions.
fn starting_inputs(target: &str) -> Vec<Vec<u8>> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz");
    let mut paths: Vec<PathBuf> = Vec::new();
    for (dir, prefix) in [("corpus", "seed-"), ("regressions", "")] {
        let Ok(entries) = fs::read_dir(root.join(dir).join(target)) else {
            continue;
        };
        paths.extend(entries.map(|e| e.unwrap().path()).filter(|p| {
            let name = p.file_name().unwrap().to_string_lossy();
            name.starts_with(prefix) && !name.starts_with('.')
        }));
    }
    paths.sort();
    paths.iter().map(|p| fs::read(p).unwrap()).collect()
}

/// Values that sit on the edges decoders get wrong.
fn interesting(len: usize) -> [u64; 12] {
    [0, 1, 0x7F, 0x80, 0xFF, 0x7FFF, 0xFFFF, 0x7FFF_FFFF, 0x8000_0000, 0xFFFF_FFFF, u64::MAX, len as u64]
}

/// One mutation of `input`, with `other` for splices.
fn mutate(rng: &mut Rng, input: &mut Vec<u8>, other: &[u8]) {
    let len = input.len();
    match rng.below(8) {
        0 if len > 0 => {
            let at = rng.below(len);
            input[at] ^= 1 << rng.below(8);
        }
        1 if len > 0 => {
            let at = rng.below(len);
            input[at] = interesting(len)[rng.below(12)] as u8 ^ if rng.below(2) == 0 { 0 } else { 0xFF };
        }
        2 => {
            let width = [2usize, 4, 8][rng.below(3)];
            if len >= width {
                let at = rng.below(len - width + 1);
                let value = interesting(len)[rng.below(12)].wrapping_add(rng.below(3) as u64).wrapping_sub(1);
                let bytes = if rng.below(2) == 0 { value.to_le_bytes() } else { value.to_be_bytes() };
                let bytes = if rng.below(2) == 0 { &bytes[..width] } else { &bytes[8 - width..] };
                input[at..at + width].copy_from_slice(bytes);
            }
        }
        3 => {
            let at = rng.below(len + 1);
            let n = 1 + rng.below(16);
            let fill = if rng.below(2) == 0 { 0 } else { rng.next() as u8 };
            input.splice(at..at, std::iter::repeat_n(fill, n));
        }
        4 if len > 0 => {
            let at = rng.below(len);
            let n = 1 + rng.below((len - at).min(64));
            input.drain(at..at + n);
        }
        5 if !other.is_empty() => {
            // Splice: a prefix of this input, then a piece of another.
            let keep = rng.below(len + 1);
            let from = rng.below(other.len());
            let n = 1 + rng.below(other.len() - from);
            input.truncate(keep);
            input.extend_from_slice(&other[from..from + n]);
        }
        6 if len > 1 => {
            // Copy a piece of the input over another place in it: repeats fields and frames.
            let from = rng.below(len);
            let n = 1 + rng.below((len - from).min(256));
            let to = rng.below(len);
            let piece = input[from..from + n].to_vec();
            let end = (to + n).min(len);
            input[to..end].copy_from_slice(&piece[..end - to]);
        }
        _ => input.truncate(rng.below(len + 1)),
    }
    input.truncate(INPUT_BYTES_MAX);
}

/// The input of iteration `i`: a starting input with 1 to 8 mutations.
fn input_of(seed: u64, target: &str, i: u64, starts: &[Vec<u8>]) -> Vec<u8> {
    let mut rng = Rng::new(seed ^ name_hash(target) ^ i.wrapping_mul(0xA24B_AED4_963E_E407));
    let mut input = starts[rng.below(starts.len())].clone();
    let other = &starts[rng.below(starts.len())];
    for _ in 0..1 + rng.below(8) {
        mutate(&mut rng, &mut input, other);
    }
    input
}

/// What one target's run found.
#[derive(Default)]
struct TargetRun {
    iterations: u64,
    failures: Vec<String>,
    /// The most bytes one check held at once, and the size of its input.
    peak_bytes: usize,
    peak_input_bytes: usize,
}

fn failure_dir(target: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("target/fuzz-mutate-failures").join(target)
}

/// Runs iterations of one target until its time or iteration budget ends.
fn run_target(
    seed: u64,
    target: &fuzz_checks::Target,
    only: Option<u64>,
    budget: Duration,
    iters_max: u64,
    current: &Mutex<Vec<u8>>,
    progress: &AtomicU64,
) -> TargetRun {
    let starts = starting_inputs(target.name);
    assert!(!starts.is_empty(), "{} has no seeds under fuzz/corpus", target.name);
    let started = Instant::now();
    let mut run = TargetRun::default();
    let range = match only {
        Some(i) => i..i + 1,
        None => 0..iters_max,
    };
    for i in range {
        if only.is_none() && started.elapsed() >= budget {
            break;
        }
        let input = input_of(seed, target.name, i, &starts);
        current.lock().unwrap().clone_from(&input);
        let (outcome, peak_bytes) = alloc_count::peak_bytes_during(|| panic::catch_unwind(AssertUnwindSafe(|| (target.check)(&input))));
        progress.fetch_add(1, Ordering::Relaxed);
        run.iterations += 1;
        if peak_bytes > run.peak_bytes {
            (run.peak_bytes, run.peak_input_bytes) = (peak_bytes, input.len());
        }
        let failure = match outcome {
            Err(_) => Some("panicked".to_string()),
            Ok(()) if peak_bytes > alloc_count::alloc_bound_bytes(input.len()) => {
                Some(format!("held {peak_bytes} bytes at once for a {}-byte input", input.len()))
            }
            Ok(()) => None,
        };
        if let Some(why) = failure {
            let dir = failure_dir(target.name);
            fs::create_dir_all(&dir).unwrap();
            let path = dir.join(format!("seed-{seed:x}-iter-{i}"));
            fs::write(&path, &input).unwrap();
            run.failures.push(format!(
                "{}: {why}; replay with STROM_FUZZ_SEED={seed} STROM_FUZZ_ONLY={}:{i} ({})",
                target.name,
                target.name,
                path.display()
            ));
            if run.failures.len() >= 5 {
                break;
            }
        }
    }
    run
}

#[test]
fn mutated_inputs_pass_the_fuzz_checks() {
    // Proves: thousands of mutations of every target's seeds neither panic, hang, nor allocate beyond a small multiple of their size.
    let seed = env_u64("STROM_FUZZ_SEED", SEED_DEFAULT);
    let budget = Duration::from_millis(env_u64("STROM_FUZZ_MS", MS_PER_TARGET_DEFAULT));
    let iters_max = env_u64("STROM_FUZZ_ITERS", ITERS_MAX_DEFAULT);
    let hang = Duration::from_secs(env_u64("STROM_FUZZ_HANG_SECS", HANG_SECS_DEFAULT));
    let only: Option<(String, u64)> = std::env::var("STROM_FUZZ_ONLY").ok().map(|v| {
        let (t, i) = v.split_once(':').expect("STROM_FUZZ_ONLY=target:iteration");
        (t.to_string(), i.parse().expect("iteration number"))
    });
    println!("mutation fuzzing: STROM_FUZZ_SEED={seed}, {} ms and at most {iters_max} iterations per target", budget.as_millis());
    let targets: Vec<&'static fuzz_checks::Target> =
        fuzz_checks::TARGETS.iter().filter(|t| only.as_ref().is_none_or(|(name, _)| name == t.name)).collect();
    assert!(!targets.is_empty(), "no fuzz target called {:?}", only.map(|o| o.0));

    // Two workers (the CI machine has two cores) take targets in turn; this
    // thread watches for a check that stops making progress.
    let next = Arc::new(AtomicU64::new(0));
    let (done_tx, done_rx) = mpsc::channel();
    let mut watched = Vec::new();
    for _ in 0..2 {
        let (next, done_tx, targets, only) = (next.clone(), done_tx.clone(), targets.clone(), only.clone());
        let current = Arc::new(Mutex::new(Vec::new()));
        let progress = Arc::new(AtomicU64::new(0));
        watched.push((current.clone(), progress.clone()));
        std::thread::spawn(move || {
            loop {
                let k = next.fetch_add(1, Ordering::Relaxed) as usize;
                let Some(target) = targets.get(k) else { break };
                let run = run_target(seed, target, only.as_ref().map(|o| o.1), budget, iters_max, &current, &progress);
                done_tx.send((target.name, run)).unwrap();
            }
        });
    }
    drop(done_tx);
    let mut runs = Vec::new();
    let mut last_seen: Vec<(u64, Instant)> = watched.iter().map(|_| (0, Instant::now())).collect();
    while runs.len() < targets.len() {
        match done_rx.recv_timeout(Duration::from_millis(200)) {
            Ok(run) => runs.push(run),
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
        }
        for ((current, progress), (count, at)) in watched.iter().zip(&mut last_seen) {
            let now = progress.load(Ordering::Relaxed);
            if now != *count {
                *count = now;
                *at = Instant::now();
            } else if at.elapsed() > hang && Arc::strong_count(progress) > 1 {
                let input = current.lock().unwrap().clone();
                let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/fuzz-mutate-failures/hang");
                fs::write(&path, &input).unwrap();
                panic!("a check made no progress for {hang:?} on a {}-byte input, saved as {}", input.len(), path.display());
            }
        }
    }
    runs.sort_by_key(|r| r.0);
    println!("{:20} {:>10} {:>16} {:>12}", "target", "executions", "most held bytes", "input bytes");
    let mut failures = Vec::new();
    for (name, run) in &runs {
        println!("{name:20} {:>10} {:>16} {:>12}", run.iterations, run.peak_bytes, run.peak_input_bytes);
        failures.extend(run.failures.iter().cloned());
    }
    assert_eq!(runs.len(), targets.len(), "a worker died");
    assert!(failures.is_empty(), "mutated inputs failing their fuzz checks:\n{}", failures.join("\n"));
    assert!(runs.iter().all(|(_, r)| r.iterations > 0), "a target ran no iteration");
}
