//! Writing an archive: [`Packer`] lays batches out and builds the index as
//! they arrive (into any `Write`), [`ArchiveWriter`] makes the file appear
//! whole or not at all.
//!
//! Each batch is validated (CRC included) before it is written, and must
//! follow the previous one's offsets exactly: an archive holds what the
//! source stored, with no gap the reader would have to explain.
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use super::format::{self, CHUNK_BYTES, Entry, Footer, Header, Index, PartitionDir};
use super::{ArchiveError, Result};
use crate::catalog::INDICES_MAX;
use crate::wire::batch::{self, values::batch_values};

/// Bytes buffered before a write to the file.
const WRITE_BUF_BYTES: usize = 1 << 20;
/// Kafka's "no timestamp": the timestamps of an empty partition.
const NO_TIMESTAMP: i64 = -1;

/// What a finished archive holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Summary {
    pub total_bytes: u64,
    pub records: u64,
    pub batches: u64,
    pub partitions: u32,
}

/// The partition being packed.
struct OpenPartition {
    dir: PartitionDir,
    entries: Vec<Entry>,
    /// The chunk being filled; pushed to `entries` when the next batch starts a new one.
    chunk: Option<Entry>,
    next_offset: Option<u64>,
    last_values: [i64; INDICES_MAX],
}

/// Lays out an archive into `out`: the header at once, then each
/// partition's batches in partition order, then (at [`Packer::finish`])
/// the index and the footer.
pub struct Packer<W: Write> {
    out: W,
    /// For error messages.
    path: PathBuf,
    header: Header,
    header_bytes: u32,
    written_pos: u64,
    file_crc: u32,
    index: Index,
    open: Option<OpenPartition>,
    records: u64,
    batches: u64,
}

impl<W: Write> Packer<W> {
    pub fn new(mut out: W, path: &Path, header: Header) -> Result<Self> {
        if header.partitions > format::PARTITIONS_MAX || header.source.len() > format::SOURCE_BYTES_MAX {
            return Err(ArchiveError::Refused(format!(
                "{} partitions or a {}-byte source is too many",
                header.partitions,
                header.source.len()
            )));
        }
        crate::catalog::validate_topic_name(&header.topic).map_err(|e| ArchiveError::Refused(e.to_string()))?;
        crate::catalog::validate_index_names(&header.indices).map_err(|e| ArchiveError::Refused(e.to_string()))?;
        let bytes = format::encode_header(&header);
        out.write_all(&bytes).map_err(|e| io("writing", path, e))?;
        let index = Index { partitions: Vec::new(), entries: Vec::new() };
        Ok(Packer {
            out,
            path: path.to_path_buf(),
            header,
            header_bytes: bytes.len() as u32,
            written_pos: bytes.len() as u64,
            file_crc: crc32c::crc32c(&bytes),
            index,
            open: None,
            records: 0,
            batches: 0,
        })
    }

    /// Starts the next partition; `empty_at` is the offset it is recorded
    /// at if no batch follows (its end offset at the source).
    pub fn begin_partition(&mut self, empty_at: u64) -> Result<u32> {
        let p = self.index.partitions.len() as u32;
        if self.open.is_some() || p >= self.header.partitions {
            return Err(ArchiveError::Refused(format!("partition {p} begun out of order")));
        }
        let dir = PartitionDir {
            start_offset: empty_at,
            end_offset: empty_at,
            data_pos: self.written_pos,
            data_bytes: 0,
            min_ts: i64::MAX,
            max_ts: i64::MIN,
            entries: 0,
        };
        self.open = Some(OpenPartition { dir, entries: Vec::new(), chunk: None, next_offset: None, last_values: [i64::MIN; INDICES_MAX] });
        Ok(p)
    }

    /// Appends one whole batch, as the source stored it, to the open partition.
    pub fn push_batch(&mut self, bytes: &[u8]) -> Result<()> {
        let p = self.index.partitions.len();
        let Some(open) = self.open.as_mut() else { return Err(ArchiveError::Refused("a batch outside any partition".into())) };
        let refuse = |why: String| ArchiveError::Refused(format!("partition {p}: {why}"));
        let info = batch::validate(bytes, bytes.len()).map_err(|e| refuse(format!("a batch is invalid: {e}")))?;
        // Validated: the base offset is what the source assigned, the delta is records - 1 >= 0.
        let base = u64::try_from(info.base_offset).map_err(|_| refuse(format!("a batch at negative offset {}", info.base_offset)))?;
        if let Some(next) = open.next_offset.filter(|&n| n != base) {
            return Err(refuse(format!("the batch at offset {base} does not follow the previous one, which ended before {next}")));
        }
        let mut first = [0i64; INDICES_MAX];
        if !self.header.indices.is_empty() {
            let v = batch_values(bytes, &self.header.indices).map_err(|e| refuse(format!("the batch at offset {base}: {}", e.reason())))?;
            if v.first().iter().zip(&open.last_values).any(|(now, before)| now < before) {
                return Err(refuse(format!("the batch at offset {base} has an index value below the previous batch's")));
            }
            first = v.first;
            open.last_values = v.last;
        }
        let chunk_full = open.chunk.as_ref().is_none_or(|c| u64::from(c.bytes) >= CHUNK_BYTES);
        if chunk_full {
            open.entries.extend(open.chunk.take());
            let (min_ts, max_ts) = (info.base_timestamp_ms, info.max_timestamp_ms);
            open.chunk = Some(Entry { first_offset: base, pos: self.written_pos, bytes: 0, crc: 0, min_ts, max_ts, values: first });
        }
        let Some(chunk) = open.chunk.as_mut() else { unreachable!("a chunk was opened above") };
        chunk.bytes = u32::try_from(u64::from(chunk.bytes) + bytes.len() as u64).map_err(|_| refuse("a chunk over 4 GiB".into()))?;
        chunk.crc = crc32c::crc32c_append(chunk.crc, bytes);
        chunk.min_ts = chunk.min_ts.min(info.base_timestamp_ms);
        chunk.max_ts = chunk.max_ts.max(info.max_timestamp_ms);
        let dir = &mut open.dir;
        if open.next_offset.is_none() {
            dir.start_offset = base;
        }
        dir.data_bytes += bytes.len() as u64;
        dir.min_ts = dir.min_ts.min(info.base_timestamp_ms);
        dir.max_ts = dir.max_ts.max(info.max_timestamp_ms);
        let end = info.last_offset() as u64 + 1;
        dir.end_offset = end;
        open.next_offset = Some(end);
        self.out.write_all(bytes).map_err(|e| io("writing", &self.path, e))?;
        self.written_pos += bytes.len() as u64;
        self.file_crc = crc32c::crc32c_append(self.file_crc, bytes);
        self.records += u64::from(info.records_count as u32);
        self.batches += 1;
        Ok(())
    }

    /// Closes the open partition.
    pub fn end_partition(&mut self) -> Result<()> {
        let Some(mut open) = self.open.take() else { return Err(ArchiveError::Refused("no partition to end".into())) };
        open.entries.extend(open.chunk.take());
        if open.entries.is_empty() {
            (open.dir.min_ts, open.dir.max_ts) = (NO_TIMESTAMP, NO_TIMESTAMP);
        }
        open.dir.entries = open.entries.len() as u32;
        self.index.partitions.push(open.dir);
        self.index.entries.push(open.entries);
        Ok(())
    }

    /// Writes the index and the footer; returns the output and what it holds.
    pub fn finish(mut self) -> Result<(W, Summary)> {
        if self.open.is_some() || self.index.partitions.len() != self.header.partitions as usize {
            return Err(ArchiveError::Refused(format!(
                "{} of {} partitions packed at the finish",
                self.index.partitions.len(),
                self.header.partitions
            )));
        }
        let index = format::encode_index(&self.index, self.header.indices.len());
        let footer_pos = self.written_pos + index.len() as u64;
        let file_crc = crc32c::crc32c_append(self.file_crc, &index);
        let footer = format::encode_footer(&Footer {
            partitions: self.header.partitions,
            header_bytes: self.header_bytes,
            index_crc: crc32c::crc32c(&index),
            index_pos: self.written_pos,
            index_bytes: index.len() as u64,
            total_bytes: footer_pos + format::FOOTER_BYTES as u64,
            records: self.records,
            file_crc,
        });
        self.out.write_all(&index).and_then(|()| self.out.write_all(&footer)).map_err(|e| io("writing", &self.path, e))?;
        let summary = Summary {
            total_bytes: footer_pos + format::FOOTER_BYTES as u64,
            records: self.records,
            batches: self.batches,
            partitions: self.header.partitions,
        };
        Ok((self.out, summary))
    }
}

fn io(op: &'static str, path: &Path, source: std::io::Error) -> ArchiveError {
    ArchiveError::Io { op, path: path.to_path_buf(), source }
}

/// A new archive file at `path`, written as `path.tmp` and renamed into
/// place by [`ArchiveWriter::finish`] after an fsync (then the directory's
/// fsync), so that `path` never names a partial archive. Dropped unfinished,
/// it removes its `.tmp`.
pub struct ArchiveWriter {
    packer: Option<Packer<BufWriter<File>>>,
    path: PathBuf,
    tmp: PathBuf,
}

impl ArchiveWriter {
    /// Refuses an existing `path`, and an existing `path.tmp` (another
    /// archive being written there, or one interrupted: remove it).
    pub fn create(path: &Path, header: Header) -> Result<ArchiveWriter> {
        if path.symlink_metadata().is_ok() {
            return Err(ArchiveError::Refused(format!(
                "{} exists; an archive is written to a new file (remove it or name another)",
                path.display()
            )));
        }
        let mut tmp = path.as_os_str().to_owned();
        tmp.push(".tmp");
        let tmp = PathBuf::from(tmp);
        let file = File::create_new(&tmp).map_err(|e| match e.kind() {
            std::io::ErrorKind::AlreadyExists => ArchiveError::Refused(format!(
                "{} exists: another archive is being written there, or one was interrupted (remove it)",
                tmp.display()
            )),
            _ => io("creating", &tmp, e),
        })?;
        let mut w = ArchiveWriter { packer: None, path: path.to_path_buf(), tmp };
        // Set after `w` exists, so that a failed header write removes the .tmp on drop.
        w.packer = Some(Packer::new(BufWriter::with_capacity(WRITE_BUF_BYTES, file), &w.tmp, header)?);
        Ok(w)
    }

    pub fn packer(&mut self) -> &mut Packer<BufWriter<File>> {
        self.packer.as_mut().expect("a writer holds its packer until finish")
    }

    /// Writes the index and footer, fsyncs, renames into place (never over
    /// a file that appeared meanwhile) and fsyncs the directory.
    pub fn finish(mut self) -> Result<Summary> {
        let packer = self.packer.take().expect("a writer holds its packer until finish");
        let (out, summary) = packer.finish()?;
        let file = out.into_inner().map_err(|e| io("writing", &self.tmp, e.into_error()))?;
        file.sync_all().map_err(|e| io("fsyncing", &self.tmp, e))?;
        drop(file);
        nix::fcntl::renameat2(nix::fcntl::AT_FDCWD, &self.tmp, nix::fcntl::AT_FDCWD, &self.path, nix::fcntl::RenameFlags::RENAME_NOREPLACE)
            .map_err(|e| io("renaming to", &self.path, e.into()))?;
        let parent = match self.path.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        };
        File::open(&parent).and_then(|d| d.sync_all()).map_err(|e| io("fsyncing", &parent, e))?;
        Ok(summary)
    }
}

impl Drop for ArchiveWriter {
    fn drop(&mut self) {
        // Unfinished (an error, or a finish that failed before its rename):
        // the .tmp is garbage. After the rename it no longer exists.
        let _ = std::fs::remove_file(&self.tmp);
    }
}

/// A small archive in memory for the fuzzer's seeds and unit tests: `parts`
/// batches per partition, each of `records` records, with one named index.
pub fn sample(parts: &[u32], records: u32, indices: &[&str]) -> Vec<u8> {
    let header = Header {
        created_ms: 1_700_000_000_000,
        partitions: parts.len() as u32,
        topic: "t".into(),
        indices: indices.iter().map(|s| s.to_string()).collect(),
        source: "sample".into(),
    };
    let mut pk = Packer::new(Vec::new(), Path::new("sample"), header).expect("a valid header");
    for &batches in parts {
        pk.begin_partition(0).expect("in order");
        for b in 0..batches {
            let mut builder = batch::BatchBuilder::new(1000 + i64::from(b));
            for r in 0..records {
                let v = i64::from(b * records + r).to_le_bytes();
                let headers: Vec<(&[u8], Option<&[u8]>)> = indices.iter().map(|n| (n.as_bytes(), Some(&v[..]))).collect();
                builder.push(1000 + i64::from(b), None, Some(b"value"), &headers);
            }
            let mut bytes = builder.finish();
            batch::set_base_offset(&mut bytes, u64::from(b * records));
            pk.push_batch(&bytes).expect("a valid batch");
        }
        pk.end_partition().expect("open");
    }
    pk.finish().expect("complete").0
}

pub(super) fn fuzz_seeds() -> Vec<(&'static str, Vec<u8>)> {
    let good = sample(&[2, 0, 1], 3, &["seq"]);
    let n = good.len();
    let footer_at = n - format::FOOTER_BYTES;
    let flip = |at: usize| {
        let mut b = good.clone();
        b[at] ^= 0x10;
        b
    };
    // A footer that declares four billion partitions, CRC fixed up so only the count lies.
    let mut lying = good.clone();
    lying[footer_at + 12..footer_at + 16].copy_from_slice(&u32::MAX.to_le_bytes());
    let crc = crc32c::crc32c(&lying[footer_at..n - 4]);
    lying[n - 4..].copy_from_slice(&crc.to_le_bytes());
    vec![
        ("valid-three-partitions", good.clone()),
        ("valid-no-index", sample(&[1], 2, &[])),
        ("valid-empty", sample(&[0], 1, &[])),
        ("truncated", good[..n - 1].to_vec()),
        ("header-bit", flip(20)),
        ("footer-bit", flip(footer_at + 30)),
        ("index-bit", flip(footer_at - 10)),
        ("lying-partition-count", lying),
    ]
}
