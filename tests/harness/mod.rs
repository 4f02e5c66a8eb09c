//! What the integration tests share. A test binary says `mod harness;` once;
//! this file declares every submodule, so each is compiled once per binary
//! (a `#[path]` include of one file from two modules would compile it
//! twice, as two unrelated types).
//!
//! - here: test directories, batch builders and readers, reply slots for
//!   the simulator, [`for_each_seed`], and [`Rng`];
//! - [`child`]: a child process whose stderr lines are collected;
//! - [`serve`]: the one `strom serve` wrapper (arguments, environment,
//!   cgroups, failpoints, metrics over the network, stop with grace, kill);
//! - [`cgroup`]: memory caps and write throttles for a child;
//! - [`loopfs`]: ext4 in a loop device (power cuts, full disks, throttling),
//!   and [`fs_shutdown`], the power cut itself;
//! - [`skip`]: tests that need root, loop devices, cgroups or failpoints,
//!   reported as ignored with the reason where those are missing;
//! - [`workload`]: producers and tailing consumers logging to the checker;
//! - [`checker`]: the end-to-end checker every crash and abuse test uses.
//!
//! Each binary uses a subset, hence the `dead_code` allowance.
#![allow(dead_code)]
pub mod cgroup;
pub mod checker;
pub mod child;
pub mod fs_shutdown;
pub mod loopfs;
pub mod serve;
pub mod skip;
pub mod workload;

use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use strom::core::Reply;
use strom::error::StromError;
use strom::wire::batch::BatchBuilder;

/// A fresh directory on a real filesystem (cargo's target/tmp), never tmpfs:
/// O_DIRECT means nothing on tmpfs, so tests of direct I/O must not run there.
/// One whole frame of a 4-byte big-endian length and that many bytes (the
/// native protocol's and Kafka's framing alike), length included; None once
/// the connection is closed.
pub fn read_frame(s: &mut impl std::io::Read) -> Option<Vec<u8>> {
    let mut len = [0u8; 4];
    s.read_exact(&mut len).ok()?;
    let mut frame = len.to_vec();
    frame.resize(4 + u32::from_be_bytes(len) as usize, 0);
    s.read_exact(&mut frame[4..]).ok()?;
    Some(frame)
}

pub fn test_dir(name: &str) -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let fs = nix::sys::statfs::statfs(&dir).unwrap().filesystem_type();
    assert_ne!(fs, nix::sys::statfs::TMPFS_MAGIC, "{} is on tmpfs: direct I/O tests need a real filesystem", dir.display());
    dir
}

/// A batch of `n` records whose values are `prefix-i`, timestamps from `ts_ms`.
pub fn batch(prefix: &str, n: usize, ts_ms: i64) -> Vec<u8> {
    let mut b = BatchBuilder::new(ts_ms);
    for i in 0..n {
        b.push(ts_ms + i as i64, None, Some(format!("{prefix}-{i}").as_bytes()), &[]);
    }
    b.finish()
}

/// One batch holding `values`, timestamps now.
pub fn batch_of(values: &[&[u8]]) -> Vec<u8> {
    let now_ms = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as i64;
    let mut b = BatchBuilder::new(now_ms);
    for v in values {
        b.push(now_ms, None, Some(v), &[]);
    }
    b.finish()
}

/// Every record of `topic`/`partition` from offset `from` to the end,
/// read `max_bytes` at a time, with their offsets.
pub fn read_to_end(e: &strom::engine::Engine, topic: &str, partition: u32, from: u64, max_bytes: usize) -> Vec<(u64, String)> {
    let mut out = Vec::new();
    let mut offset = from;
    loop {
        let r = e.read(topic, partition, offset, max_bytes).unwrap();
        if r.batches.is_empty() {
            return out;
        }
        out.extend(values(&r.batches));
        offset = r.next_offset;
    }
}

/// Every record of partition `pid` on a simulated core, from offset `from`
/// to its end, 16 KiB at a time: offset -> value. Offsets must be dense.
pub fn read_sim(core: &mut strom::core::Core<strom::io::sim::SimIo>, pid: u32, from: u64) -> std::collections::BTreeMap<u64, String> {
    let mut out = std::collections::BTreeMap::new();
    let mut offset = from;
    loop {
        let (s, reply) = slot::<strom::read::ReadResult>();
        core.handle(strom::core::Request::read(pid, offset, 16 << 10, reply));
        while s.lock().unwrap().is_none() {
            core.tick().unwrap();
        }
        let res = s.lock().unwrap().take().unwrap().unwrap();
        if res.batches.is_empty() {
            return out;
        }
        for (o, v) in values(&res.batches) {
            assert_eq!(o, offset, "offsets are dense");
            out.insert(o, v);
            offset += 1;
        }
    }
}

/// Record values of concatenated batches, with their offsets.
pub fn values(batches: &[u8]) -> Vec<(u64, String)> {
    let mut out = Vec::new();
    let mut at = 0;
    while at < batches.len() {
        let info = strom::wire::batch::parse_header(&batches[at..]).unwrap();
        let one = &batches[at..at + info.batch_bytes];
        for r in strom::wire::batch::records(one) {
            let r = r.unwrap();
            out.push((info.base_offset as u64 + r.offset_delta as u64, String::from_utf8(r.value.unwrap().to_vec()).unwrap()));
        }
        at += info.batch_bytes;
    }
    out
}

/// Where a core's reply lands in single-threaded simulation tests.
pub type Slot<T> = Arc<Mutex<Option<Result<T, StromError>>>>;

/// A reply closure and the slot it fills.
pub fn slot<T: Send + 'static>() -> (Slot<T>, Reply<T>) {
    let s: Slot<T> = Arc::new(Mutex::new(None));
    let s2 = s.clone();
    (s, Box::new(move |r| *s2.lock().unwrap() = Some(r)))
}

/// Runs `run` for each seed: `STROM_SIM_SEED=S` replays one, else
/// `STROM_SIM_SEEDS=N` (default `default_count`) runs 0..N; returns how many
/// ran. `run` folds each seed's findings into the caller's totals and keeps
/// nothing else: a seed's model (every record it acknowledged) is dropped
/// before the next seed starts, so memory stays flat in the number of seeds.
/// A failing seed prints how to replay it with `cargo test --test TEST`.
pub fn for_each_seed(test: &str, default_count: u64, mut run: impl FnMut(u64)) -> u64 {
    let seeds = match std::env::var("STROM_SIM_SEED") {
        Ok(s) => {
            let seed: u64 = s.parse().expect("STROM_SIM_SEED is a number");
            seed..seed + 1
        }
        Err(_) => 0..std::env::var("STROM_SIM_SEEDS").ok().and_then(|s| s.parse().ok()).unwrap_or(default_count),
    };
    let count = seeds.end - seeds.start;
    for seed in seeds {
        // The totals `run` updates are only read after a failure is re-raised.
        if let Err(e) = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| run(seed))) {
            eprintln!("FAILED seed {seed}: replay with STROM_SIM_SEED={seed} cargo test --release --test {test}");
            std::panic::resume_unwind(e);
        }
    }
    count
}

/// A small deterministic generator (xorshift64*), so a failure replays
/// from its seed (which must not be 0).
pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// Waits until `cond` holds, or `limit` passes (a bound on a hang, not a
/// speed requirement: the check after says what was missing); true if it held.
pub fn wait_until(limit: std::time::Duration, mut cond: impl FnMut() -> bool) -> bool {
    let start = std::time::Instant::now();
    while start.elapsed() < limit {
        if cond() {
            return true;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    cond()
}
