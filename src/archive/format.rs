//! The archive file's sections, encoded and decoded: pure, bytes in and
//! values or errors out (docs/ARCHIVE.md draws each byte).
//!
//! Decoding never panics, never reads past the slice it is given, and never
//! allocates from a declared count before checking that the bytes it
//! declares are present: the index's directory and entries are counted
//! against the index section's own length, which the footer bounds by the
//! file's length. That is what lets `fuzz_check` take any bytes.
use std::ops::Range;

use crate::catalog::{INDICES_MAX, validate_index_names, validate_topic_name};

/// The first 8 bytes of every archive; `strom inspect` tells an archive
/// from a data directory by them.
pub const MAGIC: [u8; 8] = *b"STROMARC";
/// The first 8 bytes of the footer.
pub const FOOTER_MAGIC: [u8; 8] = *b"STROMEND";
/// The only format version written and read.
pub const VERSION: u32 = 1;
/// The footer's size: fixed, so a reader finds it at `file length - FOOTER_BYTES`.
pub const FOOTER_BYTES: usize = 64;
/// One partition's row of the index directory.
pub const DIR_ROW_BYTES: usize = 56;
/// An index entry without its named index values.
pub const ENTRY_FIXED_BYTES: usize = 40;
/// The header's fixed part: magic through the index count.
const HEADER_FIXED_BYTES: usize = 29;
/// A header's CRC, at its end.
const CRC_BYTES: usize = 4;
/// A new index entry starts at the first batch after this many bytes of
/// the previous entry's batches: a lookup then reads about this much data.
pub const CHUNK_BYTES: u64 = 64 << 10;
/// The most partitions an archive declares. A bound of its own so that a
/// lying footer cannot make a reader loop over four billion partitions.
pub const PARTITIONS_MAX: u32 = 1 << 16;
/// The longest `source` string kept in the header.
pub const SOURCE_BYTES_MAX: usize = 1024;
/// The longest a header can be: its fixed part, the longest topic name
/// (within a u16 length), every index name at its longest, the source and the CRC.
pub const HEADER_BYTES_MAX: usize = HEADER_FIXED_BYTES + 2 + u16::MAX as usize + INDICES_MAX * (1 + 255) + 2 + SOURCE_BYTES_MAX + CRC_BYTES;

const _: () = assert!(HEADER_FIXED_BYTES == 8 + 4 + 4 + 8 + 4 + 1);
const _: () = assert!(ENTRY_FIXED_BYTES == 8 + 8 + 4 + 4 + 8 + 8);
const _: () = assert!(DIR_ROW_BYTES == 6 * 8 + 4 + 4);

/// Where a decoded section is damaged or inconsistent: `at..end` are file
/// positions (the caller adds the section's start), `what` says why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Damage {
    pub at: u64,
    pub end: u64,
    pub what: String,
}

impl Damage {
    pub fn new(range: Range<u64>, what: impl Into<String>) -> Damage {
        Damage { at: range.start, end: range.end, what: what.into() }
    }
}

/// The fixed-size footer, the first thing a reader reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Footer {
    pub partitions: u32,
    /// Where the data section starts (the header's length).
    pub header_bytes: u32,
    pub index_crc: u32,
    pub index_pos: u64,
    pub index_bytes: u64,
    /// The whole file, footer included.
    pub total_bytes: u64,
    pub records: u64,
    /// CRC-32C of every byte before the footer.
    pub file_crc: u32,
}

/// The header: what the archive holds and where it came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    pub created_ms: i64,
    pub partitions: u32,
    pub topic: String,
    pub indices: Vec<String>,
    /// Where the data was read from (a server's address), for people.
    pub source: String,
}

/// One partition's row of the index directory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PartitionDir {
    /// The first archived offset (the first batch's base offset).
    pub start_offset: u64,
    /// One past the last archived offset; equal to `start_offset` when empty.
    pub end_offset: u64,
    pub data_pos: u64,
    pub data_bytes: u64,
    /// The smallest batch base timestamp and the largest batch max timestamp.
    pub min_ts: i64,
    pub max_ts: i64,
    pub entries: u32,
}

/// One sparse index entry: a run ("chunk") of whole batches about
/// [`CHUNK_BYTES`] long.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Entry {
    pub first_offset: u64,
    pub pos: u64,
    pub bytes: u32,
    /// CRC-32C of the chunk's bytes, so that any read of it is checked whole
    /// (a batch's own CRC leaves its first 21 bytes out).
    pub crc: u32,
    pub min_ts: i64,
    /// The largest timestamp in the chunk: the first entry whose `max_ts`
    /// reaches a time holds the first record at or after it.
    pub max_ts: i64,
    /// The chunk's first record's value of each named index (only the first
    /// `indices` slots mean anything). Values never decrease in a partition.
    pub values: [i64; INDICES_MAX],
}

/// The decoded index section: one directory row and its entries per partition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Index {
    pub partitions: Vec<PartitionDir>,
    pub entries: Vec<Vec<Entry>>,
}

pub fn entry_bytes(indices: usize) -> usize {
    ENTRY_FIXED_BYTES + 8 * indices
}

pub fn encode_footer(f: &Footer) -> [u8; FOOTER_BYTES] {
    let mut out = [0u8; FOOTER_BYTES];
    let mut w = Vec::with_capacity(FOOTER_BYTES);
    w.extend_from_slice(&FOOTER_MAGIC);
    w.extend_from_slice(&VERSION.to_le_bytes());
    w.extend_from_slice(&f.partitions.to_le_bytes());
    w.extend_from_slice(&f.header_bytes.to_le_bytes());
    w.extend_from_slice(&f.index_crc.to_le_bytes());
    for v in [f.index_pos, f.index_bytes, f.total_bytes, f.records] {
        w.extend_from_slice(&v.to_le_bytes());
    }
    w.extend_from_slice(&f.file_crc.to_le_bytes());
    w.extend_from_slice(&crc32c::crc32c(&w).to_le_bytes());
    out.copy_from_slice(&w);
    out
}

/// Decodes the footer of a file `file_bytes` long and checks that the
/// sections it places tile the file: header, data, index, footer.
pub fn decode_footer(bytes: &[u8; FOOTER_BYTES], file_bytes: u64) -> Result<Footer, Damage> {
    let here = file_bytes.saturating_sub(FOOTER_BYTES as u64)..file_bytes;
    let bad = |what: String| Damage::new(here.clone(), what);
    if bytes[..8] != FOOTER_MAGIC {
        return Err(bad("no archive footer here (the file is truncated or is not an archive)".into()));
    }
    let mut r = Reader::new(&bytes[8..]);
    let crc_stored = u32::from_le_bytes(*bytes[60..].first_chunk().unwrap_or(&[0; 4]));
    if crc32c::crc32c(&bytes[..60]) != crc_stored {
        return Err(bad("the footer's CRC does not match".into()));
    }
    let version = r.u32().unwrap_or(0);
    if version != VERSION {
        return Err(bad(format!("format version {version}; this strom reads version {VERSION}")));
    }
    let f = Footer {
        partitions: r.u32().unwrap_or(0),
        header_bytes: r.u32().unwrap_or(0),
        index_crc: r.u32().unwrap_or(0),
        index_pos: r.u64().unwrap_or(0),
        index_bytes: r.u64().unwrap_or(0),
        total_bytes: r.u64().unwrap_or(0),
        records: r.u64().unwrap_or(0),
        file_crc: r.u32().unwrap_or(0),
    };
    if f.total_bytes != file_bytes {
        return Err(bad(format!(
            "the footer says the archive is {} bytes; the file has {file_bytes} (truncated or appended to)",
            f.total_bytes
        )));
    }
    let footer_pos = file_bytes - FOOTER_BYTES as u64;
    let index_end = f.index_pos.checked_add(f.index_bytes);
    if (f.header_bytes as usize) < HEADER_FIXED_BYTES + CRC_BYTES
        || f.header_bytes as usize > HEADER_BYTES_MAX
        || u64::from(f.header_bytes) > f.index_pos
        || index_end != Some(footer_pos)
        || f.partitions > PARTITIONS_MAX
    {
        return Err(bad(format!(
            "the footer places header 0..{}, index {}+{} and footer at {footer_pos}: they do not tile the file",
            f.header_bytes, f.index_pos, f.index_bytes
        )));
    }
    Ok(f)
}

pub fn encode_header(h: &Header) -> Vec<u8> {
    let mut w = Vec::new();
    w.extend_from_slice(&MAGIC);
    w.extend_from_slice(&VERSION.to_le_bytes());
    w.extend_from_slice(&0u32.to_le_bytes()); // header_bytes, patched below
    w.extend_from_slice(&h.created_ms.to_le_bytes());
    w.extend_from_slice(&h.partitions.to_le_bytes());
    w.push(h.indices.len() as u8);
    w.extend_from_slice(&(h.topic.len() as u16).to_le_bytes());
    w.extend_from_slice(h.topic.as_bytes());
    for name in &h.indices {
        w.push(name.len() as u8);
        w.extend_from_slice(name.as_bytes());
    }
    w.extend_from_slice(&(h.source.len() as u16).to_le_bytes());
    w.extend_from_slice(h.source.as_bytes());
    let total = (w.len() + CRC_BYTES) as u32;
    w[12..16].copy_from_slice(&total.to_le_bytes());
    let crc = crc32c::crc32c(&w);
    w.extend_from_slice(&crc.to_le_bytes());
    w
}

/// Decodes the header, which is all of `bytes` (the footer says how long it is).
pub fn decode_header(bytes: &[u8]) -> Result<Header, Damage> {
    let bad = |what: &str| Damage::new(0..bytes.len() as u64, format!("header: {what}"));
    if bytes.get(..8) != Some(&MAGIC[..]) {
        return Err(bad("no archive magic"));
    }
    let Some((body, crc)) = bytes.split_last_chunk::<CRC_BYTES>() else { return Err(bad("too short")) };
    if crc32c::crc32c(body) != u32::from_le_bytes(*crc) {
        return Err(bad("its CRC does not match"));
    }
    let mut r = Reader::new(&body[8..]);
    let truncated = || bad("a field runs past its end");
    let version = r.u32().ok_or_else(truncated)?;
    if version != VERSION {
        return Err(bad(&format!("format version {version}; this strom reads version {VERSION}")));
    }
    let header_bytes = r.u32().ok_or_else(truncated)?;
    if header_bytes as usize != bytes.len() {
        return Err(bad(&format!("says it is {header_bytes} bytes, the footer says {}", bytes.len())));
    }
    let created_ms = r.i64().ok_or_else(truncated)?;
    let partitions = r.u32().ok_or_else(truncated)?;
    let index_count = r.u8().ok_or_else(truncated)?;
    let topic = r.string(usize::from(u16::MAX)).ok_or_else(truncated)?;
    if usize::from(index_count) > INDICES_MAX {
        return Err(bad(&format!("{index_count} indices, at most {INDICES_MAX}")));
    }
    let mut indices = Vec::with_capacity(usize::from(index_count));
    for _ in 0..index_count {
        let len = r.u8().ok_or_else(truncated)?;
        indices.push(r.string_of(usize::from(len)).ok_or_else(truncated)?);
    }
    let source = r.string(SOURCE_BYTES_MAX).ok_or_else(truncated)?;
    if !r.rest().is_empty() {
        return Err(bad("bytes after its last field"));
    }
    validate_topic_name(&topic).map_err(|e| bad(&e.to_string()))?;
    validate_index_names(&indices).map_err(|e| bad(&e.to_string()))?;
    Ok(Header { created_ms, partitions, topic, indices, source })
}

pub fn encode_index(index: &Index, indices: usize) -> Vec<u8> {
    let mut w = Vec::new();
    for d in &index.partitions {
        for v in [d.start_offset, d.end_offset, d.data_pos, d.data_bytes] {
            w.extend_from_slice(&v.to_le_bytes());
        }
        w.extend_from_slice(&d.min_ts.to_le_bytes());
        w.extend_from_slice(&d.max_ts.to_le_bytes());
        w.extend_from_slice(&d.entries.to_le_bytes());
        w.extend_from_slice(&0u32.to_le_bytes());
    }
    for e in index.entries.iter().flatten() {
        w.extend_from_slice(&e.first_offset.to_le_bytes());
        w.extend_from_slice(&e.pos.to_le_bytes());
        w.extend_from_slice(&e.bytes.to_le_bytes());
        w.extend_from_slice(&e.crc.to_le_bytes());
        w.extend_from_slice(&e.min_ts.to_le_bytes());
        w.extend_from_slice(&e.max_ts.to_le_bytes());
        for v in &e.values[..indices] {
            w.extend_from_slice(&v.to_le_bytes());
        }
    }
    w
}

/// Decodes the index section (`bytes`, which starts at file position
/// `f.index_pos`) and checks it against the footer: each partition's
/// entries tile its data exactly, the partitions tile the data section,
/// offsets increase and index values never decrease.
pub fn decode_index(bytes: &[u8], f: &Footer, indices: usize) -> Result<Index, Damage> {
    let whole = f.index_pos..f.index_pos + bytes.len() as u64;
    if crc32c::crc32c(bytes) != f.index_crc {
        return Err(Damage::new(whole, "index: its CRC does not match"));
    }
    let bad = |what: String| Damage::new(whole.clone(), format!("index: {what}"));
    let partitions = f.partitions as usize;
    let dir_bytes = partitions.checked_mul(DIR_ROW_BYTES).filter(|&n| n <= bytes.len());
    let Some(dir_bytes) = dir_bytes else { return Err(bad(format!("{partitions} partitions do not fit in {} bytes", bytes.len()))) };
    let mut r = Reader::new(bytes);
    let mut dirs = Vec::with_capacity(partitions);
    for _ in 0..partitions {
        dirs.push(read_dir_row(&mut r).ok_or_else(|| bad("a directory row runs past the section".into()))?);
    }
    // Every entry's bytes must be present before any is allocated.
    let declared: u64 = dirs.iter().map(|d| u64::from(d.entries)).sum();
    let per_entry = entry_bytes(indices) as u64;
    if declared.checked_mul(per_entry) != Some((bytes.len() - dir_bytes) as u64) {
        return Err(bad(format!(
            "{declared} entries of {per_entry} bytes do not fill the {} bytes after the directory",
            bytes.len() - dir_bytes
        )));
    }
    let mut entries = Vec::with_capacity(partitions);
    let mut data_pos = u64::from(f.header_bytes);
    let mut records = 0u64;
    for (p, d) in dirs.iter().enumerate() {
        let mut list = Vec::with_capacity(d.entries as usize);
        for _ in 0..d.entries {
            list.push(read_entry(&mut r, indices).ok_or_else(|| bad("an entry runs past the section".into()))?);
        }
        check_partition(d, &list, data_pos, indices).map_err(|why| bad(format!("partition {p}: {why}")))?;
        data_pos += d.data_bytes;
        records += d.end_offset - d.start_offset;
        entries.push(list);
    }
    if data_pos != f.index_pos {
        return Err(bad(format!("the partitions' data ends at {data_pos}, the index starts at {}", f.index_pos)));
    }
    if records != f.records {
        return Err(bad(format!("the partitions hold {records} records, the footer says {}", f.records)));
    }
    Ok(Index { partitions: dirs, entries })
}

fn read_dir_row(r: &mut Reader<'_>) -> Option<PartitionDir> {
    let d = PartitionDir {
        start_offset: r.u64()?,
        end_offset: r.u64()?,
        data_pos: r.u64()?,
        data_bytes: r.u64()?,
        min_ts: r.i64()?,
        max_ts: r.i64()?,
        entries: r.u32()?,
    };
    r.u32()?; // reserved
    Some(d)
}

fn read_entry(r: &mut Reader<'_>, indices: usize) -> Option<Entry> {
    let mut e = Entry {
        first_offset: r.u64()?,
        pos: r.u64()?,
        bytes: r.u32()?,
        crc: r.u32()?,
        min_ts: r.i64()?,
        max_ts: r.i64()?,
        values: [0; INDICES_MAX],
    };
    for v in e.values.iter_mut().take(indices) {
        *v = r.i64()?;
    }
    Some(e)
}

/// One partition's directory row against its entries and where its data must start.
fn check_partition(d: &PartitionDir, list: &[Entry], data_pos: u64, indices: usize) -> Result<(), String> {
    if d.data_pos != data_pos {
        return Err(format!("data at {}, expected at {data_pos}", d.data_pos));
    }
    if d.end_offset < d.start_offset || (d.end_offset == d.start_offset) != list.is_empty() || list.is_empty() != (d.data_bytes == 0) {
        return Err(format!("offsets {}..{} in {} bytes and {} entries", d.start_offset, d.end_offset, d.data_bytes, list.len()));
    }
    let mut pos = d.data_pos;
    let mut prev: Option<&Entry> = None;
    for e in list {
        let first_ok = match prev {
            None => e.first_offset == d.start_offset,
            Some(p) => e.first_offset > p.first_offset && e.values[..indices].iter().zip(&p.values).all(|(v, pv)| v >= pv),
        };
        if !first_ok || e.first_offset >= d.end_offset || e.pos != pos || e.bytes == 0 {
            return Err(format!("entry at offset {} (bytes {}+{}) out of order", e.first_offset, e.pos, e.bytes));
        }
        pos += u64::from(e.bytes);
        prev = Some(e);
    }
    if pos != d.data_pos.saturating_add(d.data_bytes) {
        return Err(format!("entries end at {pos}, the data at {}", d.data_pos.saturating_add(d.data_bytes)));
    }
    Ok(())
}

/// A little-endian field reader over a slice: `None` past its end.
struct Reader<'a> {
    rest: &'a [u8],
}

impl<'a> Reader<'a> {
    fn new(rest: &'a [u8]) -> Self {
        Reader { rest }
    }

    fn take<const N: usize>(&mut self) -> Option<[u8; N]> {
        let (head, rest) = self.rest.split_first_chunk::<N>()?;
        self.rest = rest;
        Some(*head)
    }

    fn u8(&mut self) -> Option<u8> {
        self.take::<1>().map(|b| b[0])
    }

    fn u32(&mut self) -> Option<u32> {
        self.take().map(u32::from_le_bytes)
    }

    fn u64(&mut self) -> Option<u64> {
        self.take().map(u64::from_le_bytes)
    }

    fn i64(&mut self) -> Option<i64> {
        self.take().map(i64::from_le_bytes)
    }

    /// A u16-length-prefixed UTF-8 string of at most `max` bytes.
    fn string(&mut self, max: usize) -> Option<String> {
        let len = usize::from(u16::from_le_bytes(self.take()?));
        if len > max {
            return None;
        }
        self.string_of(len)
    }

    fn string_of(&mut self, len: usize) -> Option<String> {
        if len > self.rest.len() {
            return None;
        }
        let (s, rest) = self.rest.split_at(len);
        self.rest = rest;
        String::from_utf8(s.to_vec()).ok()
    }

    fn rest(&self) -> &'a [u8] {
        self.rest
    }
}

/// Decodes the header and the index of an archive whose footer `f` was
/// decoded: what opening one needs, and all it reads.
pub fn decode_meta(f: &Footer, header: &[u8], index: &[u8]) -> Result<(Header, Index), Damage> {
    let h = decode_header(header)?;
    if h.partitions != f.partitions {
        return Err(Damage::new(0..header.len() as u64, format!("header: {} partitions, the footer says {}", h.partitions, f.partitions)));
    }
    let index = decode_index(index, f, h.indices.len())?;
    Ok((h, index))
}
