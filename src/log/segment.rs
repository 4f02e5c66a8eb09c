//! Segment files: naming and the in-memory list of a log's segments.
use std::path::{Path, PathBuf};

use crate::io::FileId;

pub const SEGMENT_SUFFIX: &str = ".seg";

/// The name of a log's spare segment: written space (a segment retention
/// dropped) kept to become the next segment. Not a segment name (it does
/// not end in [`SEGMENT_SUFFIX`]), so recovery never scans it as the log.
pub const SPARE_NAME: &str = "spare.seg.tmp";

/// The directory of log `log` inside a data directory.
pub fn log_dir(data_dir: &Path, log: u32) -> PathBuf {
    data_dir.join(format!("log-{log:04}"))
}

/// A segment's file name: its first log position, zero-padded so that names sort by position.
pub fn segment_name(start_pos: u64) -> String {
    format!("{start_pos:020}{SEGMENT_SUFFIX}")
}

/// Parses a segment file name back to its start position (None for other files).
pub fn parse_segment_name(name: &str) -> Option<u64> {
    let digits = name.strip_suffix(SEGMENT_SUFFIX)?;
    if digits.len() != 20 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

#[derive(Debug, Clone)]
pub struct Segment {
    pub start_pos: u64,
    pub path: PathBuf,
    pub file: FileId,
    /// Reads in flight against this file; it is not closed while non-zero.
    pub reads_in_flight: u32,
}

#[cfg(test)]
mod tests {
    use super::*;

    // Proves segment names round-trip and foreign names are ignored.
    #[test]
    fn names() {
        assert_eq!(parse_segment_name(&segment_name(123_456)), Some(123_456));
        assert_eq!(parse_segment_name("checkpoint"), None);
        assert_eq!(parse_segment_name("0000000000000000000x.seg"), None);
        assert!(segment_name(1) < segment_name(20));
        assert_eq!(parse_segment_name(SPARE_NAME), None, "a spare is never taken for a segment");
    }
}
