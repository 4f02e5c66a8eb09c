//! `strom archive TOPIC --out FILE`: a topic's records, every partition from
//! its start offset to its end offset as the archive began, packed into one
//! archive file ([`strom::archive`]) through a running server's Fetch
//! (`--addr`), or read from a data directory with the engine opened
//! read-only (`--data-dir`: [`Engine::open_read_only`], which takes no lock
//! and writes nothing, so the directory may be in use by its writer, an
//! application or a server, meanwhile; what it made durable is archived).
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
use strom::engine::Engine;
use strom::wire::batch;

/// Bytes fetched at a time.
const FETCH_BYTES: u32 = 1 << 20;

#[derive(Args)]
pub struct ArchiveArgs {
    topic: String,
    /// The archive file to write; it must not exist.
    #[arg(long, value_name = "FILE")]
    out: PathBuf,
    /// Read the topic from this data directory (read-only, beside its
    /// writer if one runs) instead of a server (--addr, STROM_ADDR: ignored then).
    #[arg(long, value_name = "DIR")]
    data_dir: Option<PathBuf>,
    #[command(flatten)]
    conn: crate::ConnArgs,
}

/// Where the records come from: a server, or a data directory.
enum Source {
    Server(crate::ConnArgs),
    Dir(Box<Engine>),
}

/// Each partition's (start, end) offsets, and the topic's named indices.
type Described = (Vec<(u64, u64)>, Vec<String>);

impl Source {
    /// Each partition's (start, end) offsets now, and the topic's indices.
    fn describe(&self, topic: &str) -> Result<Described, String> {
        match self {
            Source::Server(conn) => {
                let d = super::connect(conn)?.describe_topic(topic).map_err(|e| e.to_string())?;
                Ok((d.partitions.iter().map(|p| (p.start_offset, p.end_offset)).collect(), d.indices))
            }
            Source::Dir(e) => {
                let meta = e.broker().topics().get(topic).cloned().ok_or_else(|| format!("no topic {topic:?} in {}", e.dir().display()))?;
                let mut parts = Vec::new();
                for p in 0..meta.partitions {
                    let s = e.partition_stat(topic, p).map_err(|e| e.to_string())?;
                    parts.push((s.start_offset, s.end_offset));
                }
                Ok((parts, meta.indices.to_vec()))
            }
        }
    }

    /// Whole batches of partition `p` from `offset`, and where they end.
    fn fetcher(&self, topic: &str, p: u32) -> Result<Fetcher<'_>, String> {
        Ok(match self {
            Source::Server(conn) => Fetcher::Server(Box::new(super::connect(conn)?.for_partition(topic, p).map_err(|e| e.to_string())?)),
            Source::Dir(e) => Fetcher::Dir(e),
        })
    }
}

enum Fetcher<'a> {
    Server(Box<Client>),
    Dir(&'a Engine),
}

impl Fetcher<'_> {
    /// The batches' bytes from `offset` (the first may begin before it) and the next offset.
    fn fetch(&mut self, topic: &str, p: u32, offset: u64) -> Result<(Vec<u8>, u64), String> {
        match self {
            Fetcher::Server(c) => {
                let r = c.fetch(topic, p, offset, FETCH_BYTES, Duration::ZERO).map_err(|e| e.to_string())?;
                Ok((r.batches, r.next_offset))
            }
            Fetcher::Dir(e) => {
                let mut r = e.read(topic, p, offset, FETCH_BYTES as usize).map_err(|e| e.to_string())?;
                r.batches.drain(..r.headroom_bytes);
                Ok((r.batches, r.next_offset))
            }
        }
    }
}

/// Writes the archive; prints one line saying what was written and how fast.
pub fn archive(args: &ArchiveArgs) -> Result<(), String> {
    strom::client::check_name(&args.topic).map_err(|e| e.to_string())?;
    let started = Instant::now();
    let (source, from) = match &args.data_dir {
        Some(dir) => {
            let cfg = strom::EngineConfig { cores: 1, pin_cores: false, ..strom::EngineConfig::default() };
            let e = Engine::open_read_only(dir, cfg).map_err(|e| format!("{}: {e}", dir.display()))?;
            (Source::Dir(Box::new(e)), dir.display().to_string())
        }
        None => (Source::Server(args.conn.clone()), args.conn.addr.clone()),
    };
    let (parts, indices) = source.describe(&args.topic)?;
    let header = Header {
        created_ms: super::now_ms(),
        partitions: parts.len() as u32,
        topic: args.topic.clone(),
        indices,
        source: from.chars().take(strom::archive::format::SOURCE_BYTES_MAX).collect(),
    };
    let mut w = ArchiveWriter::create(&args.out, header).map_err(|e| e.to_string())?;
    for (p, &(start, end)) in parts.iter().enumerate() {
        let p = p as u32;
        w.packer().begin_partition(end).map_err(|e| e.to_string())?;
        let mut f = source.fetcher(&args.topic, p)?;
        copy_partition(&mut f, w.packer(), &args.topic, p, start..end)?;
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
    c: &mut Fetcher<'_>,
    packer: &mut Packer<W>,
    topic: &str,
    p: u32,
    range: std::ops::Range<u64>,
) -> Result<(), String> {
    let mut offset = range.start;
    while offset < range.end {
        let (batches, next_offset) = c.fetch(topic, p, offset)?;
        if next_offset <= offset {
            return Err(format!(
                "partition {p}'s records from offset {offset} are no longer stored (retention removed them while archiving)"
            ));
        }
        let mut at = 0;
        while at < batches.len() {
            let bad = |why: String| format!("partition {p}: the fetched batch at byte {at}: {why}");
            let info = batch::parse_header(&batches[at..]).map_err(|e| bad(e.to_string()))?;
            let bytes = batches.get(at..at + info.batch_bytes).ok_or_else(|| bad("cut short".into()))?;
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
