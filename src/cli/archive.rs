//! `strom archive TOPIC --out FILE`: a topic's records, every partition from
//! its start offset to its end offset as the archive began, packed into one
//! archive file ([`strom::archive`]) through a running server's Fetch.
//!
//! Only `--addr` for now: archiving a data directory with no server needs
//! the engine opened read-only (issue 17 item 1), which does not exist yet;
//! the live engine takes the directory's writer lock.
//!
//! FILE appears whole or not at all (written as FILE.tmp, fsynced, renamed,
//! the directory fsynced); an existing FILE is refused. Records appended
//! while the archive is written are left out: each partition stops at the
//! end offset it had at the start. Retention removing records the archive
//! has not read yet fails it (the archive would have a hole).
use std::path::PathBuf;
use std::time::{Duration, Instant};

use clap::Args;
use strom::archive::format::Header;
use strom::archive::{ArchiveWriter, Packer};
use strom::client::Client;
use strom::wire::batch;

/// Bytes fetched at a time.
const FETCH_BYTES: u32 = 1 << 20;

#[derive(Args)]
pub struct ArchiveArgs {
    topic: String,
    /// The archive file to write; it must not exist.
    #[arg(long, value_name = "FILE")]
    out: PathBuf,
    #[command(flatten)]
    conn: crate::ConnArgs,
}

/// Writes the archive; prints one line saying what was written and how fast.
pub fn archive(args: &ArchiveArgs) -> Result<(), String> {
    strom::client::check_name(&args.topic).map_err(|e| e.to_string())?;
    let started = Instant::now();
    let mut client = super::connect(&args.conn)?;
    let d = client.describe_topic(&args.topic).map_err(|e| e.to_string())?;
    let header = Header {
        created_ms: super::now_ms(),
        partitions: d.partitions.len() as u32,
        topic: args.topic.clone(),
        indices: d.indices.clone(),
        source: args.conn.addr.chars().take(strom::archive::format::SOURCE_BYTES_MAX).collect(),
    };
    let mut w = ArchiveWriter::create(&args.out, header).map_err(|e| e.to_string())?;
    for (p, pd) in d.partitions.iter().enumerate() {
        let p = p as u32;
        w.packer().begin_partition(pd.end_offset).map_err(|e| e.to_string())?;
        let mut c = super::connect(&args.conn)?.for_partition(&args.topic, p).map_err(|e| e.to_string())?;
        copy_partition(&mut c, w.packer(), &args.topic, p, pd.start_offset..pd.end_offset)?;
        w.packer().end_partition().map_err(|e| e.to_string())?;
    }
    let s = w.finish().map_err(|e| e.to_string())?;
    let secs = started.elapsed().as_secs_f64();
    println!(
        "archived {} records of {} ({} partitions, {} batches) to {}: {} bytes in {secs:.2} s ({:.0} MB/s)",
        s.records,
        args.topic,
        s.partitions,
        s.batches,
        args.out.display(),
        s.total_bytes,
        s.total_bytes as f64 / secs.max(1e-9) / 1e6
    );
    Ok(())
}

/// Fetches one partition's batches over `range` and packs each, whole.
fn copy_partition<W: std::io::Write>(
    c: &mut Client,
    packer: &mut Packer<W>,
    topic: &str,
    p: u32,
    range: std::ops::Range<u64>,
) -> Result<(), String> {
    let mut offset = range.start;
    while offset < range.end {
        let r = c.fetch(topic, p, offset, FETCH_BYTES, Duration::ZERO).map_err(|e| e.to_string())?;
        if r.next_offset <= offset {
            return Err(format!(
                "partition {p}'s records from offset {offset} are no longer stored (retention removed them while archiving)"
            ));
        }
        let mut at = 0;
        while at < r.batches.len() {
            let bad = |why: String| format!("partition {p}: the fetched batch at byte {at}: {why}");
            let info = batch::parse_header(&r.batches[at..]).map_err(|e| bad(e.to_string()))?;
            let bytes = r.batches.get(at..at + info.batch_bytes).ok_or_else(|| bad("cut short".into()))?;
            at += info.batch_bytes;
            let (base, last) = (info.base_offset as u64, info.last_offset() as u64);
            // The first batch of a fetch may start before the offset asked for.
            if last < offset {
                continue;
            }
            // Appended after the archive began.
            if base >= range.end {
                return Ok(());
            }
            packer.push_batch(bytes).map_err(|e| e.to_string())?;
            offset = last + 1;
        }
    }
    Ok(())
}
