//! Arbitrary bytes through log frame decoding: the first 8 bytes are the
//! position the frame is expected at, the rest go through `decode_header` and
//! `verify_payload`. The checks live in `strom::log::frame::fuzz_check` so
//! that `tests/fuzz_replay.rs` replays every saved input through the same code.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| strom::log::frame::fuzz_check(data));
