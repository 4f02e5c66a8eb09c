//! The per-core sequential log: frames, segments, group commit, checkpoints
//! and recovery.
//!
//! A data directory holds a fixed number of logs (chosen at creation). Each
//! log is a sequence of segment files addressed by a global byte *position*
//! that only grows: segment `NNN.seg` holds positions from NNN on. Every
//! partition lives in exactly one log; a core owns every log `l` with
//! `l % cores == core`.
pub mod checkpoint;
pub mod frame;
pub mod journal;
pub mod mark;
pub mod recovery;
pub mod segment;
pub mod sidecar;
pub mod sidecar_scan;

pub use journal::Journal;
