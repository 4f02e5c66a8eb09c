//! What the benches share: their scratch directory and their batches.
use std::path::PathBuf;

use strom::wire::batch::BatchBuilder;

/// A fresh directory for bench `name`: `STROM_BENCH_DIR`, or target/bench-NAME
/// on the repository's own (real) filesystem, since O_DIRECT means nothing on tmpfs.
pub fn bench_dir(name: &str) -> PathBuf {
    let dir = std::env::var_os("STROM_BENCH_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(format!("target/bench-{name}")));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("create bench dir");
    dir
}

/// One producer's batch: `records` values of `record_bytes` bytes, each
/// filled with a letter of its own so producers' data can be told apart.
pub fn make_batch(producer: usize, records: usize, record_bytes: usize) -> Vec<u8> {
    let mut b = BatchBuilder::new(1_700_000_000_000).producer(producer as i64, 0, 0);
    let value = vec![b'a' + producer as u8; record_bytes];
    for i in 0..records {
        b.push(1_700_000_000_000 + i as i64, None, Some(&value), &[]);
    }
    b.finish()
}
