//! Arbitrary bytes through `FsyncPolicy::from_str` and back through
//! `Display`. The checks live in `strom::config::fuzz_check` so that
//! `tests/fuzz_replay.rs` replays every saved input through the same code.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| strom::config::fuzz_check(data));
