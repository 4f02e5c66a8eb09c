//! The `archive_decode` check of `strom_fuzz` under libFuzzer; see `fuzz/src/` for
//! what it feeds and asserts. `tests/fuzz_replay.rs` replays saved inputs
//! through the same check on stable.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| (strom_fuzz::check_for("archive_decode").expect("registered"))(data));
