//! `strom export TOPIC --partition P --franz DIR`: one partition's records,
//! in offset order, written as a Franz stream directory ([`strom::franz`]):
//! each record's value into `payloads`, its end and its named index values
//! into `offsets`, the topic's index names into `indices`. Keys, headers
//! other than the indices, timestamps and offsets are not part of Franz's
//! layout and are dropped; a null value is written as an empty payload.
//!
//! The stream is written into a new directory beside DIR, each file
//! fsynced, then renamed to DIR (refusing one that exists, even empty) and
//! the parent fsynced: DIR is whole or absent, never half-written.
use std::fs::File;
use std::io::{BufWriter, Write};
use std::ops::ControlFlow;
use std::path::{Path, PathBuf};

use clap::Args;
use nix::fcntl::{AT_FDCWD, RenameFlags, renameat2};
use strom::catalog::INDICES_MAX;
use strom::client::FetchedRecord;
use strom::core::query::QueryBounds;
use strom::franz::{self, INDICES_FILE, OFFSETS_FILE, PAYLOADS_FILE};
use strom::wire::batch::values::record_value;

/// Bytes fetched at a time.
const FETCH_BYTES: u32 = 1 << 20;
/// Bytes buffered per output file before a write.
const WRITE_BUF_BYTES: usize = 1 << 20;

#[derive(Args)]
pub struct ExportArgs {
    topic: String,
    #[arg(long, default_value_t = 0)]
    partition: u32,
    /// Write a Franz stream (payloads, offsets, indices) into this directory,
    /// which must not exist.
    #[arg(long, value_name = "DIR")]
    franz: PathBuf,
    #[command(flatten)]
    conn: crate::ConnArgs,
}

/// The three files being written, and what has gone into them.
struct Stream {
    payloads: BufWriter<File>,
    offsets: BufWriter<File>,
    names: Vec<String>,
    payload_end: u64,
    records: u64,
    entry: Vec<u8>,
}

impl Stream {
    fn create(dir: &Path, names: Vec<String>) -> Result<Stream, String> {
        std::fs::write(dir.join(INDICES_FILE), franz::encode_indices(&names))
            .map_err(|e| io_failed("writing", &dir.join(INDICES_FILE), &e))?;
        let open = |name: &str| {
            let path = dir.join(name);
            File::create_new(&path).map(|f| BufWriter::with_capacity(WRITE_BUF_BYTES, f)).map_err(|e| io_failed("creating", &path, &e))
        };
        Ok(Stream { payloads: open(PAYLOADS_FILE)?, offsets: open(OFFSETS_FILE)?, names, payload_end: 0, records: 0, entry: Vec::new() })
    }

    fn push(&mut self, r: &FetchedRecord<'_>) -> Result<(), String> {
        let value = r.value.unwrap_or_default();
        let mut values = [0i64; INDICES_MAX];
        for (slot, name) in values.iter_mut().zip(&self.names) {
            // The server refuses a batch of an indexed topic missing a value,
            // so this is a record the server should never have stored.
            *slot = record_value(r.headers.clone(), name.as_bytes())
                .ok_or_else(|| format!("the record at offset {} has no value for index {name}", r.offset))?;
        }
        self.payloads.write_all(value).map_err(|e| format!("writing {PAYLOADS_FILE}: {e}"))?;
        self.payload_end += value.len() as u64;
        self.entry.clear();
        franz::encode_entry(self.payload_end, &values[..self.names.len()], &mut self.entry);
        self.offsets.write_all(&self.entry).map_err(|e| format!("writing {OFFSETS_FILE}: {e}"))?;
        self.records += 1;
        Ok(())
    }

    /// Flushes and fsyncs both files (`indices` was written whole).
    fn finish(self, dir: &Path) -> Result<(u64, u64), String> {
        for (w, name) in [(self.payloads, PAYLOADS_FILE), (self.offsets, OFFSETS_FILE)] {
            let path = dir.join(name);
            let file = w.into_inner().map_err(|e| io_failed("writing", &path, e.error()))?;
            file.sync_all().map_err(|e| io_failed("fsyncing", &path, &e))?;
        }
        let indices = dir.join(INDICES_FILE);
        File::open(&indices).and_then(|f| f.sync_all()).map_err(|e| io_failed("fsyncing", &indices, &e))?;
        Ok((self.records, self.payload_end))
    }
}

fn io_failed(what: &str, path: &Path, e: &std::io::Error) -> String {
    format!("{what} {} failed: {e}", path.display())
}

/// Exports the partition; prints one line saying what was written.
pub fn export(args: &ExportArgs) -> Result<(), String> {
    strom::client::check_name(&args.topic).map_err(|e| e.to_string())?;
    let dir = &args.franz;
    if dir.symlink_metadata().is_ok() {
        return Err(format!("{} exists; export writes a new directory (remove it or name another)", dir.display()));
    }
    let name = dir.file_name().ok_or_else(|| format!("{} names no directory to create", dir.display()))?;
    let parent = match dir.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    // Beside DIR, so that the final rename stays within one file system.
    let tmp = parent.join(format!(".{}.strom-export-{}", name.to_string_lossy(), std::process::id()));
    std::fs::create_dir(&tmp).map_err(|e| io_failed("creating", &tmp, &e))?;
    let written = write_stream(args, &tmp).and_then(|done| {
        renameat2(AT_FDCWD, &tmp, AT_FDCWD, dir, RenameFlags::RENAME_NOREPLACE)
            .map_err(|e| format!("renaming {} to {} failed: {e}", tmp.display(), dir.display()))?;
        File::open(&parent).and_then(|d| d.sync_all()).map_err(|e| io_failed("fsyncing", &parent, &e))?;
        Ok(done)
    });
    let (records, payload_bytes, names, bounds) = match written {
        Ok(done) => done,
        Err(e) => {
            let _ = std::fs::remove_dir_all(&tmp);
            return Err(e);
        }
    };
    println!(
        "exported {records} records of {}/{} (offsets {}..{}) to {}: {payload_bytes} payload bytes, indices [{}]",
        args.topic,
        args.partition,
        bounds.from,
        bounds.end,
        dir.display(),
        names.join(", ")
    );
    Ok(())
}

/// Writes the stream into `tmp`: the partition's records from its start
/// offset to its end as the export began.
fn write_stream(args: &ExportArgs, tmp: &Path) -> Result<(u64, u64, Vec<String>, QueryBounds), String> {
    let mut client = super::connect(&args.conn)?;
    let d = client.describe_topic(&args.topic).map_err(|e| e.to_string())?;
    let p = d
        .partitions
        .get(args.partition as usize)
        .ok_or_else(|| format!("topic {:?} has {} partitions; there is no partition {}", args.topic, d.partitions.len(), args.partition))?;
    let bounds =
        QueryBounds { from: p.start_offset, end: p.end_offset, open: false, high_watermark: p.end_offset, start_offset: p.start_offset };
    let mut client = client.for_partition(&args.topic, args.partition).map_err(|e| e.to_string())?;
    let mut stream = Stream::create(tmp, d.indices.clone())?;
    let mut failed = None;
    client
        .for_each_in_range(&args.topic, args.partition, &bounds, FETCH_BYTES, |r| match stream.push(r) {
            Ok(()) => ControlFlow::Continue(()),
            Err(e) => {
                failed = Some(e);
                ControlFlow::Break(())
            }
        })
        .map_err(|e| e.to_string())?;
    if let Some(e) = failed {
        return Err(e);
    }
    if stream.records != bounds.count() {
        return Err(format!("read {} records of offsets {}..{}, expected {}", stream.records, bounds.from, bounds.end, bounds.count()));
    }
    let (records, payload_bytes) = stream.finish(tmp)?;
    Ok((records, payload_bytes, d.indices, bounds))
}
