//! Arbitrary bytes through checkpoint decoding and re-encoding. The checks
//! live in `strom::log::checkpoint::fuzz_check` so that `tests/fuzz_replay.rs`
//! replays every saved input through the same code. Run with
//! `-malloc_limit_mb=16` so that an allocation sized by a declared count,
//! rather than by the input, is reported as a crash.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| strom::log::checkpoint::fuzz_check(data));
