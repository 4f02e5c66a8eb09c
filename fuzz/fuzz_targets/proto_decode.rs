//! Arbitrary bytes through the native protocol's decoders, as one request
//! frame and as one response frame: neither may panic, and whatever decodes
//! must re-encode to the same bytes. The checks live in
//! `strom::proto::fuzz_check` so that `tests/fuzz_replay.rs` replays every
//! saved input through the same code.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| strom::proto::fuzz_check(data));
