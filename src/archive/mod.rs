//! Archives: one immutable, self-describing, checksummed file per topic
//! (docs/ARCHIVE.md draws it byte by byte).
//!
//! [`format`](mod@format) encodes and decodes the sections (pure, fuzzed); [`writer`]
//! packs batches into a new file, atomically (a `.tmp` file, fsynced, then
//! renamed); [`reader`] opens one by reading its footer, header and index
//! only, never its batches, and then answers fetches by offset, lookups by
//! time and by named index value with one read of about one index chunk
//! (64 KiB) each, every read checked by its chunk's CRC. A reader is `Sync`
//! and reads with `pread`, so a server can share one across threads.
use std::fmt;
use std::path::PathBuf;

pub mod format;
pub mod reader;
pub mod writer;

pub use format::Damage;
pub use reader::Archive;
pub use writer::{ArchiveWriter, Packer, Summary};

/// Why an archive could not be written, opened or read.
#[derive(Debug)]
pub enum ArchiveError {
    /// A system call failed: what was being done, and on which path.
    Io { op: &'static str, path: PathBuf, source: std::io::Error },
    /// The file is damaged (or is not an archive) at these bytes.
    Damaged(Damage),
    /// What was asked cannot be done: a batch the writer refuses, an
    /// unknown partition or index, an existing output file.
    Refused(String),
    /// An offset outside what the partition holds.
    OffsetOutOfRange { partition: u32, offset: u64, start_offset: u64, end_offset: u64 },
}

impl fmt::Display for ArchiveError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ArchiveError::Io { op, path, source } => write!(f, "{op} {} failed: {source}", path.display()),
            ArchiveError::Damaged(d) => write!(f, "damaged at byte {} (bytes {}..{}): {}", d.at, d.at, d.end, d.what),
            ArchiveError::Refused(why) => f.write_str(why),
            ArchiveError::OffsetOutOfRange { partition, offset, start_offset, end_offset } => {
                write!(f, "offset {offset} is outside partition {partition}'s archived offsets {start_offset}..{end_offset}")
            }
        }
    }
}

impl std::error::Error for ArchiveError {}

impl From<Damage> for ArchiveError {
    fn from(d: Damage) -> Self {
        ArchiveError::Damaged(d)
    }
}

pub type Result<T> = std::result::Result<T, ArchiveError>;

/// Whether the file at `path` starts with the archive magic or ends with
/// a footer (how `strom inspect` tells an archive from a data directory:
/// either one, so that an archive damaged in one of them is still
/// inspected as an archive, and the damage named).
pub fn is_archive(path: &std::path::Path) -> bool {
    use std::os::unix::fs::FileExt;
    let Ok(file) = std::fs::File::open(path) else { return false };
    let (mut head, mut tail) = ([0u8; 8], [0u8; 8]);
    let len = file.metadata().map_or(0, |m| if m.is_file() { m.len() } else { 0 });
    let head_ok = file.read_exact_at(&mut head, 0).is_ok() && head == format::MAGIC;
    let tail_ok = len >= format::FOOTER_BYTES as u64
        && file.read_exact_at(&mut tail, len - format::FOOTER_BYTES as u64).is_ok()
        && tail == format::FOOTER_MAGIC;
    head_ok || tail_ok
}

/// Decodes any bytes as a whole archive file's footer, header and index:
/// never panics; what decodes encodes back to the same bytes. The
/// `archive_decode` fuzz target.
pub fn fuzz_check(data: &[u8]) {
    let Some((f, h, ix)) = fuzz_decode(data) else { return };
    let tail = data.len() - format::FOOTER_BYTES;
    assert_eq!(&format::encode_footer(&f)[..], &data[tail..], "a footer decoded but does not encode back");
    assert_eq!(format::encode_header(&h), &data[..f.header_bytes as usize], "a header decoded but does not encode back");
    let index = format::encode_index(&ix, h.indices.len());
    assert_eq!(index, &data[f.index_pos as usize..tail], "an index decoded but does not encode back");
}

/// Whether `data` opens as an archive (its footer, header and index decode).
pub fn fuzz_accepts(data: &[u8]) -> bool {
    fuzz_decode(data).is_some()
}

/// What [`Archive::open`] decodes, from bytes in memory.
fn fuzz_decode(data: &[u8]) -> Option<(format::Footer, format::Header, format::Index)> {
    let tail = data.len().checked_sub(format::FOOTER_BYTES)?;
    let footer_bytes = data[tail..].first_chunk::<{ format::FOOTER_BYTES }>()?;
    let f = format::decode_footer(footer_bytes, data.len() as u64).ok()?;
    // The footer checked that the sections lie inside the file, in order.
    let header = &data[..f.header_bytes as usize];
    let index = &data[f.index_pos as usize..tail];
    let (h, ix) = format::decode_meta(&f, header, index).ok()?;
    Some((f, h, ix))
}

/// Seeds for the fuzzer: `valid-*` decode, the others are each one lie.
pub fn fuzz_seeds() -> Vec<(&'static str, Vec<u8>)> {
    writer::fuzz_seeds()
}

/// docs/ARCHIVE.md's Rust block, compiled as a doc-test (`cargo test
/// --doc`), so the example of the reader's API cannot rot.
#[cfg(doctest)]
#[doc = include_str!("../../docs/ARCHIVE.md")]
pub struct ArchiveDoctests;

#[cfg(test)]
mod tests;
