//! The checks every fuzz target runs, in one registry. Three drivers share it:
//! cargo-fuzz (`fuzz_targets/*.rs`, nightly, libFuzzer), the stable replay of
//! every saved input (`tests/fuzz_replay.rs`) and the stable mutation fuzzer
//! (`tests/fuzz_mutate.rs`). The two tests include this file by path, so a
//! saved input replays under plain `cargo test` through exactly the code it
//! was fuzzed with.
//!
//! Each check takes arbitrary bytes and panics only if a promise of the code
//! under test is broken: a decoder panicked, accepted what it must refuse, or
//! decoded something that does not encode back to the same bytes. Checks are
//! pure (the recovery check runs on the simulated disk), so a failure
//! replays from its input alone.

#[path = "index_lookup.rs"]
pub mod index_lookup;
#[path = "kafka_request.rs"]
pub mod kafka_request;
#[path = "names.rs"]
pub mod names;
#[path = "proto_body.rs"]
pub mod proto_body;
#[path = "recovery_scan.rs"]
pub mod recovery_scan;

/// One fuzz target: its cargo-fuzz name (also its directory under
/// `fuzz/corpus/` and `fuzz/regressions/`) and the check it runs.
pub struct Target {
    pub name: &'static str,
    pub check: fn(&[u8]),
}

/// Every fuzz target, each a binary in `fuzz/Cargo.toml` of the same name.
pub const TARGETS: &[Target] = &[
    // Native protocol: whole frames, then each api's request and reply body.
    Target { name: "proto_decode", check: strom::proto::fuzz_check },
    Target { name: "proto_request_body", check: proto_body::check_request },
    Target { name: "proto_response_body", check: proto_body::check_response },
    // The Kafka listener's requests: framing, header and every served api's body.
    Target { name: "kafka_request", check: strom::kafka_fuzz::check },
    // Records and the log.
    Target { name: "batch_validate", check: strom::wire::batch::fuzz_check },
    Target { name: "batch_values", check: strom::wire::batch::values::fuzz_check },
    Target { name: "frame_decode", check: strom::log::frame::fuzz_check },
    Target { name: "recovery_scan", check: recovery_scan::check },
    // Files loaded at start-up.
    Target { name: "checkpoint_decode", check: strom::log::checkpoint::fuzz_check },
    Target { name: "index_lookup", check: index_lookup::check },
    Target { name: "catalog_parse", check: strom::catalog::fuzz_check },
    Target { name: "offsets_parse", check: strom::broker::offsets::fuzz_check },
    // Files read from elsewhere: a Franz stream's three files, for `strom import --franz`.
    Target { name: "franz_decode", check: strom::franz::fuzz_check },
    // An archive's footer, header and index: all that opening one reads.
    Target { name: "archive_decode", check: strom::archive::fuzz_check },
    // Configuration and names.
    Target { name: "fsync_policy_parse", check: strom::config::fuzz_check },
    Target { name: "names", check: names::check },
];

/// Seeds of the targets whose seeds are written beside their check, for
/// `tests/fuzz_replay.rs`'s `write_seed_corpus` (new targets go here: that
/// file is at its length limit).
pub fn seeds_of(name: &str) -> Option<Vec<(&'static str, Vec<u8>)>> {
    match name {
        "archive_decode" => Some(strom::archive::fuzz_seeds()),
        _ => None,
    }
}

/// Whether the decoder of a target listed in [`seeds_of`] accepts `data`,
/// for `tests/fuzz_replay.rs`'s check that seeds are what their names say.
pub fn accepts(name: &str, data: &[u8]) -> Option<bool> {
    match name {
        "archive_decode" => Some(strom::archive::fuzz_accepts(data)),
        _ => None,
    }
}

/// The check of the target called `name`.
pub fn check_for(name: &str) -> Option<fn(&[u8])> {
    TARGETS.iter().find(|t| t.name == name).map(|t| t.check)
}
