//! Reading an archive: [`Archive::open`] reads the footer, the header and
//! the index (never a batch), and keeps the index in memory; every later
//! read is one `pread` of whole index chunks (about 64 KiB each), checked
//! against the chunk's CRC and walked batch by batch before anything in it
//! is returned. `&self` throughout and `Sync`, for a server's threads.
use std::fs::File;
use std::ops::Range;
use std::os::fd::AsFd;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use super::format::{self, Damage, Entry, Footer, Header, Index, PartitionDir};
use super::{ArchiveError, Result, Summary};
use crate::client::FetchResult;
use crate::wire::batch::{self, BatchInfo, values::record_value};

/// The most [`Archive::verify`] reads at once: large sequential reads, so
/// that checking an archive runs near the disk's speed.
const VERIFY_READ_BYTES: u64 = 8 << 20;

// A server shares one open archive between its threads.
const _: fn() = || {
    fn shared<T: Send + Sync>() {}
    shared::<Archive>();
};

/// An open archive.
pub struct Archive {
    file: File,
    path: PathBuf,
    footer: Footer,
    header: Header,
    index: Index,
    /// Per partition, per entry: the largest `max_ts` of it and every entry
    /// before it, so that a time lookup is a binary search.
    reach_ts: Vec<Vec<i64>>,
    /// Every byte read from the file since it was opened (the proof that
    /// opening reads no batch).
    bytes_read: AtomicU64,
}

impl Archive {
    /// Opens an archive: its footer, then its header and index, each
    /// checked by its CRC and against the others. Reads no batch.
    pub fn open(path: &Path) -> Result<Archive> {
        let file = File::open(path).map_err(|e| io("opening", path, e))?;
        let file_bytes = file.metadata().map_err(|e| io("reading the size of", path, e))?.len();
        let mut a = Archive {
            file,
            path: path.to_path_buf(),
            footer: Footer {
                partitions: 0,
                header_bytes: 0,
                index_crc: 0,
                index_pos: 0,
                index_bytes: 0,
                total_bytes: 0,
                records: 0,
                file_crc: 0,
            },
            header: Header { created_ms: 0, partitions: 0, topic: String::new(), indices: Vec::new(), source: String::new() },
            index: Index { partitions: Vec::new(), entries: Vec::new() },
            reach_ts: Vec::new(),
            bytes_read: AtomicU64::new(0),
        };
        let Some(footer_pos) = file_bytes.checked_sub(format::FOOTER_BYTES as u64) else {
            return Err(Damage::new(0..file_bytes, format!("{file_bytes} bytes is shorter than an archive's footer (truncated?)")).into());
        };
        let tail = a.read(footer_pos..file_bytes)?;
        let tail: &[u8; format::FOOTER_BYTES] = tail.as_slice().try_into().expect("read whole");
        a.footer = format::decode_footer(tail, file_bytes)?;
        // The footer checked both ranges against the file's length.
        let header = a.read(0..u64::from(a.footer.header_bytes))?;
        let index = a.read(a.footer.index_pos..footer_pos)?;
        (a.header, a.index) = format::decode_meta(&a.footer, &header, &index)?;
        a.reach_ts = a
            .index
            .entries
            .iter()
            .map(|list| {
                list.iter()
                    .scan(i64::MIN, |reach, e| {
                        *reach = (*reach).max(e.max_ts);
                        Some(*reach)
                    })
                    .collect()
            })
            .collect();
        Ok(a)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn topic(&self) -> &str {
        &self.header.topic
    }

    pub fn header(&self) -> &Header {
        &self.header
    }

    pub fn footer(&self) -> &Footer {
        &self.footer
    }

    /// The named indices, in their declared order.
    pub fn indices(&self) -> &[String] {
        &self.header.indices
    }

    pub fn partition_count(&self) -> u32 {
        self.header.partitions
    }

    /// One partition's offsets, data and time range.
    pub fn partition(&self, p: u32) -> Result<&PartitionDir> {
        self.index.partitions.get(p as usize).ok_or_else(|| self.no_partition(p))
    }

    /// One partition's index entries.
    pub fn entries(&self, p: u32) -> Result<&[Entry]> {
        self.index.entries.get(p as usize).map(Vec::as_slice).ok_or_else(|| self.no_partition(p))
    }

    /// Bytes read from the file since it was opened.
    pub fn bytes_read(&self) -> u64 {
        self.bytes_read.load(Ordering::Relaxed)
    }

    fn no_partition(&self, p: u32) -> ArchiveError {
        ArchiveError::Refused(format!(
            "the archive of {} has {} partitions; there is no partition {p}",
            self.header.topic, self.header.partitions
        ))
    }

    /// The batches from the one holding `offset`, up to about `max_bytes`
    /// (at least one batch, as Kafka's fetch), as a Fetch reply would carry
    /// them. At or past the end: no batches, `next_offset` = `offset`.
    pub fn fetch(&self, p: u32, offset: u64, max_bytes: usize) -> Result<FetchResult> {
        let d = *self.partition(p)?;
        let mut reply =
            FetchResult { high_watermark: d.end_offset, start_offset: d.start_offset, next_offset: offset, batches: Vec::new() };
        if offset < d.start_offset || offset > d.end_offset {
            return Err(ArchiveError::OffsetOutOfRange { partition: p, offset, start_offset: d.start_offset, end_offset: d.end_offset });
        }
        let entries = self.entries(p)?;
        let first = entries.partition_point(|e| e.first_offset <= offset).saturating_sub(1);
        for i in first..entries.len() {
            let chunk = self.read_chunk(p, i)?;
            for (range, info) in spans(&chunk) {
                let last = info.last_offset() as u64;
                if last < offset {
                    continue;
                }
                if !reply.batches.is_empty() && reply.batches.len() + range.len() > max_bytes {
                    return Ok(reply);
                }
                reply.batches.extend_from_slice(&chunk[range]);
                reply.next_offset = last + 1;
            }
            if reply.batches.len() >= max_bytes {
                break;
            }
        }
        Ok(reply)
    }

    /// The first offset whose record's timestamp is at or after `ts_ms`
    /// (Kafka's ListOffsets by time); `None` if no record is that late.
    pub fn offset_at_time(&self, p: u32, ts_ms: i64) -> Result<Option<u64>> {
        let reach = self.reach_ts.get(p as usize).ok_or_else(|| self.no_partition(p))?;
        let first = reach.partition_point(|&r| r < ts_ms);
        for i in first..reach.len() {
            let chunk = self.read_chunk(p, i)?;
            for (range, info) in spans(&chunk) {
                if info.max_timestamp_ms < ts_ms {
                    continue;
                }
                if info.compression() != 0 {
                    // Its records cannot be read here; the batch is the answer, as Kafka's index gives.
                    return Ok(Some(info.base_offset as u64));
                }
                for r in batch::records(&chunk[range]).flatten() {
                    if info.base_timestamp_ms.saturating_add(r.timestamp_delta_ms) >= ts_ms {
                        return Ok(Some(info.base_offset as u64 + r.offset_delta as u64));
                    }
                }
            }
        }
        Ok(None)
    }

    /// The first offset whose value of the named index is at or above
    /// `value` (values never decrease in a partition); `None` if none is.
    pub fn offset_for_index(&self, p: u32, name: &str, value: i64) -> Result<Option<u64>> {
        let k = self.header.indices.iter().position(|n| n == name).ok_or_else(|| {
            ArchiveError::Refused(format!(
                "the archive of {} has no index named {name:?} (it has {:?})",
                self.header.topic, self.header.indices
            ))
        })?;
        let entries = self.entries(p)?;
        // The chunk before the first one starting at or above `value` may
        // hold the first record that reaches it.
        let first = entries.partition_point(|e| e.values[k] < value).saturating_sub(1);
        for i in first..entries.len() {
            let chunk = self.read_chunk(p, i)?;
            for (range, info) in spans(&chunk) {
                for r in batch::records(&chunk[range]).flatten() {
                    if record_value(r.headers, name.as_bytes()).is_some_and(|v| v >= value) {
                        return Ok(Some(info.base_offset as u64 + r.offset_delta as u64));
                    }
                }
            }
        }
        Ok(None)
    }

    /// Every chunk of a partition in order, each as a Fetch reply of its
    /// batches: the way to iterate an archive's records
    /// (`FetchResult::records_at`).
    pub fn chunks(&self, p: u32) -> Chunks<'_> {
        Chunks { archive: self, p, next: 0, failed: false }
    }

    /// Reads and checks everything: every chunk (its CRC, each batch's
    /// framing, CRC and offsets), then the CRC over the whole file before
    /// the footer, in one pass of reads of up to 8 MiB (`VERIFY_READ_BYTES`). What
    /// `strom inspect FILE` runs.
    pub fn verify(&self) -> Result<Summary> {
        let mut crc = crc32c::crc32c(&self.read(0..u64::from(self.footer.header_bytes))?);
        let mut batches = 0;
        for p in 0..self.header.partitions {
            let entries = self.entries(p)?;
            let mut i = 0;
            while i < entries.len() {
                // Whole chunks, as many as fit in one read (at least one).
                let too_far =
                    (i + 1..entries.len()).find(|&j| entries[j].pos - entries[i].pos + u64::from(entries[j].bytes) > VERIFY_READ_BYTES);
                let j = too_far.unwrap_or(entries.len());
                let last = &entries[j - 1];
                let span_end = last.pos + u64::from(last.bytes);
                let span = self.read(entries[i].pos..span_end)?;
                // Ask for the next span now, so the disk reads it while this one is checked.
                let ahead = nix::fcntl::PosixFadviseAdvice::POSIX_FADV_WILLNEED;
                let _ = nix::fcntl::posix_fadvise(self.file.as_fd(), span_end as i64, VERIFY_READ_BYTES as i64, ahead);
                for k in i..j {
                    let at = (entries[k].pos - entries[i].pos) as usize;
                    let chunk = &span[at..at + entries[k].bytes as usize];
                    self.check_chunk(p, k, chunk)?;
                    batches += spans(chunk).count() as u64;
                }
                crc = crc32c::crc32c_append(crc, &span);
                i = j;
            }
        }
        let footer_pos = self.footer.total_bytes - format::FOOTER_BYTES as u64;
        crc = crc32c::crc32c_append(crc, &self.read(self.footer.index_pos..footer_pos)?);
        if crc != self.footer.file_crc {
            // Every section checked out, so no narrower range can be named.
            return Err(Damage::new(0..footer_pos, "the CRC over the whole file does not match").into());
        }
        Ok(Summary { total_bytes: self.footer.total_bytes, records: self.footer.records, batches, partitions: self.header.partitions })
    }

    /// Entry `i` of partition `p`'s bytes, checked.
    fn read_chunk(&self, p: u32, i: usize) -> Result<Vec<u8>> {
        let e = self.entries(p)?[i];
        let bytes = self.read(e.pos..e.pos + u64::from(e.bytes))?;
        self.check_chunk(p, i, &bytes)?;
        Ok(bytes)
    }

    /// Checks entry `i` of partition `p`'s bytes: the chunk's CRC, and that
    /// its batches are whole, valid and hold exactly its offsets.
    fn check_chunk(&self, p: u32, i: usize, bytes: &[u8]) -> Result<()> {
        let entries = self.entries(p)?;
        let e = entries[i];
        let end_offset = entries.get(i + 1).map_or(self.index.partitions[p as usize].end_offset, |n| n.first_offset);
        let walked = check_batches(bytes, &e, end_offset);
        if crc32c::crc32c(bytes) != e.crc {
            // Name the damaged batch if its own checks find it, else the chunk.
            walked?;
            let what = format!("the CRC of partition {p}'s chunk at offset {} does not match", e.first_offset);
            return Err(Damage::new(e.pos..e.pos + u64::from(e.bytes), what).into());
        }
        Ok(walked?)
    }

    fn read(&self, range: Range<u64>) -> Result<Vec<u8>> {
        let mut buf = vec![0u8; (range.end - range.start) as usize];
        self.file.read_exact_at(&mut buf, range.start).map_err(|e| io("reading", &self.path, e))?;
        self.bytes_read.fetch_add(buf.len() as u64, Ordering::Relaxed);
        Ok(buf)
    }
}

/// The iterator of [`Archive::chunks`].
pub struct Chunks<'a> {
    archive: &'a Archive,
    p: u32,
    next: usize,
    failed: bool,
}

impl Iterator for Chunks<'_> {
    type Item = Result<FetchResult>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.failed {
            return None;
        }
        let (d, entries) = match (self.archive.partition(self.p), self.archive.entries(self.p)) {
            (Ok(d), Ok(entries)) => (d, entries),
            (Err(e), _) | (_, Err(e)) => {
                self.failed = true;
                return Some(Err(e));
            }
        };
        entries.get(self.next)?;
        let next_offset = entries.get(self.next + 1).map_or(d.end_offset, |n| n.first_offset);
        let read = self.archive.read_chunk(self.p, self.next);
        self.next += 1;
        self.failed = read.is_err();
        Some(read.map(|batches| FetchResult { high_watermark: d.end_offset, start_offset: d.start_offset, next_offset, batches }))
    }
}

/// The batches of a checked chunk: where each lies and its header.
fn spans(chunk: &[u8]) -> impl Iterator<Item = (Range<usize>, BatchInfo)> + '_ {
    let mut at = 0;
    std::iter::from_fn(move || {
        let info = batch::parse_header(chunk.get(at..)?).ok()?;
        let range = at..at + info.batch_bytes;
        at = range.end;
        Some((range, info))
    })
}

/// A chunk's batches: whole, each valid (CRC included), following each
/// other from the entry's first offset to `end_offset`. The damage named is
/// the first batch that fails, as file positions.
fn check_batches(bytes: &[u8], e: &Entry, end_offset: u64) -> std::result::Result<(), Damage> {
    let mut at = 0usize;
    let mut expected = e.first_offset;
    while at < bytes.len() {
        let pos = e.pos + at as u64;
        let rest = &bytes[at..];
        let batch_range = |n: usize| pos..pos + n.min(rest.len()) as u64;
        let info = batch::parse_header(rest)
            .map_err(|err| Damage::new(batch_range(batch::BATCH_HEADER_BYTES), format!("a batch header: {err}")))?;
        let batch =
            rest.get(..info.batch_bytes).ok_or_else(|| Damage::new(batch_range(info.batch_bytes), "a batch runs past its index chunk"))?;
        batch::validate(batch, batch.len()).map_err(|err| Damage::new(batch_range(info.batch_bytes), format!("a batch: {err}")))?;
        if info.base_offset != expected as i64 {
            return Err(Damage::new(batch_range(info.batch_bytes), format!("a batch at offset {}, expected {expected}", info.base_offset)));
        }
        expected = info.last_offset() as u64 + 1;
        at += info.batch_bytes;
    }
    if expected != end_offset {
        return Err(Damage::new(
            e.pos..e.pos + bytes.len() as u64,
            format!("the chunk's batches end before offset {expected}, the index says {end_offset}"),
        ));
    }
    Ok(())
}

fn io(op: &'static str, path: &Path, source: std::io::Error) -> ArchiveError {
    ArchiveError::Io { op, path: path.to_path_buf(), source }
}
