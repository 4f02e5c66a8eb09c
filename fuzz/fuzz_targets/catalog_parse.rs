//! Arbitrary bytes through the `strom.meta` and `topics` parsers, their
//! checksum line, and the topic name rule. The checks live in
//! `strom::catalog::fuzz_check` so that `tests/fuzz_replay.rs` replays every
//! saved input through the same code.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| strom::catalog::fuzz_check(data));
