//! Arbitrary bytes through RecordBatch validation, header parsing and record
//! iteration. The checks live in `strom::wire::batch::fuzz_check` so that
//! `tests/fuzz_replay.rs` replays every saved input through the same code.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| strom::wire::batch::fuzz_check(data));
