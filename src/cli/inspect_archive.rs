//! `strom inspect FILE` on an archive (told from a data directory by its
//! magic): reads and checks every byte ([`strom::archive::Archive::verify`]:
//! each chunk's CRC, each batch's framing, CRC and offsets, the CRC over the
//! whole file) and summarises it. Damage is an error naming its byte position.
use std::fmt::Write;
use std::path::Path;

use strom::archive::Archive;
use strom::archive::format::FOOTER_BYTES;

pub fn inspect(path: &Path) -> Result<(), String> {
    let fail = |e: strom::archive::ArchiveError| format!("{}: {e}", path.display());
    let a = Archive::open(path).map_err(fail)?;
    let s = a.verify().map_err(fail)?;
    print!("{}", render(&a, s.batches));
    Ok(())
}

fn render(a: &Archive, batches: u64) -> String {
    let (h, f) = (a.header(), a.footer());
    let mut out = String::new();
    let _ =
        writeln!(out, "archive {}: topic {}, {} partitions, indices [{}]", a.path().display(), h.topic, h.partitions, h.indices.join(", "));
    let _ = writeln!(out, "created at {} ms since the epoch, from {}", h.created_ms, h.source);
    let data_bytes = f.index_pos - u64::from(f.header_bytes);
    let _ = writeln!(
        out,
        "{} bytes: header {}, data {data_bytes}, index {}, footer {FOOTER_BYTES}; {} records in {batches} batches",
        f.total_bytes, f.header_bytes, f.index_bytes, f.records
    );
    for p in 0..a.partition_count() {
        let (Ok(d), Ok(entries)) = (a.partition(p), a.entries(p)) else { continue };
        let time = if d.start_offset == d.end_offset { "no records".to_string() } else { format!("time {}..={} ms", d.min_ts, d.max_ts) };
        let _ = write!(
            out,
            "partition {p}: offsets {}..{} ({} records), {} bytes in {} index chunks, {time}",
            d.start_offset,
            d.end_offset,
            d.end_offset - d.start_offset,
            d.data_bytes,
            entries.len()
        );
        if let (Some(first), Some(last)) = (entries.first(), entries.last()) {
            for (k, name) in h.indices.iter().enumerate() {
                let _ = write!(out, ", {name} from {} (last chunk from {})", first.values[k], last.values[k]);
            }
        }
        out.push('\n');
    }
    let _ = writeln!(out, "verified: the footer, header and index CRCs, every chunk's and batch's CRC and offsets, the file's CRC");
    out
}
