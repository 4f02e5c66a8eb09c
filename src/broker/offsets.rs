//! Committed consumer offsets, durable in one file.
//!
//! They live in `offsets` in the data directory, a text file replaced
//! atomically and durably (write, fsync, rename, fsync the directory) and
//! ending with a CRC-32C line, like the catalog. The store is bounded by
//! [`OFFSETS_MAX`]; the [`admin`](super::admin) thread owns it and
//! acknowledges a commit only once the file holding it is durable.
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::catalog::{check_crc, read_text, validate_topic_name, with_crc};
use crate::error::{Result, StromError};
use crate::io::fs::write_file_atomic;

pub const OFFSETS_FILE: &str = "offsets";
/// Committed (group, topic, partition) entries kept at most: one more new
/// entry is refused with `Overloaded` instead of growing the file forever.
pub const OFFSETS_MAX: usize = 1 << 20;

type Key = (String, String, u32);

/// Bytes of a commit's metadata string at most (Kafka's default
/// `offset.metadata.max.bytes`): the file stays bounded by
/// [`OFFSETS_MAX`] entries of this.
pub const METADATA_BYTES_MAX: usize = 4096;

/// A committed offset and the client's metadata string with it (Kafka
/// clients keep one; the native protocol's commits have none).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Committed {
    pub offset: u64,
    pub metadata: String,
}

/// Committed consumer offsets, durable in one file.
pub struct OffsetStore {
    path: PathBuf,
    offsets: BTreeMap<Key, Committed>,
}

impl OffsetStore {
    /// Loads `dir/offsets` (absent: empty). A damaged file fails the open.
    pub fn open(dir: &Path) -> Result<OffsetStore> {
        let path = dir.join(OFFSETS_FILE);
        let mut offsets = BTreeMap::new();
        if let Some(text) = read_text(&path)? {
            let body = check_crc(&path, &text)?;
            offsets = parse(&body).ok_or_else(|| StromError::BadDataDir(format!("{}: malformed line", path.display())))?;
        }
        Ok(OffsetStore { path, offsets })
    }

    pub fn get(&self, group: &str, topic: &str, partition: u32) -> Option<&Committed> {
        self.offsets.get(&(group.to_string(), topic.to_string(), partition))
    }

    /// Sets an offset (and its metadata) in memory; `persist` makes it durable.
    pub fn set(&mut self, group: &str, topic: &str, partition: u32, offset: u64, metadata: &str) -> Result<()> {
        if metadata.len() > METADATA_BYTES_MAX {
            return Err(StromError::InvalidArgument(format!(
                "a commit's metadata of {} bytes is over the limit of {METADATA_BYTES_MAX}",
                metadata.len()
            )));
        }
        let key = (group.to_string(), topic.to_string(), partition);
        if !self.offsets.contains_key(&key) && self.offsets.len() >= OFFSETS_MAX {
            return Err(StromError::Overloaded("committed offsets store is full"));
        }
        self.offsets.insert(key, Committed { offset, metadata: metadata.to_string() });
        Ok(())
    }

    /// Forgets every group's offsets of a deleted topic.
    pub fn forget_topic(&mut self, topic: &str) -> bool {
        let before = self.offsets.len();
        self.offsets.retain(|(_, t, _), _| t != topic);
        before != self.offsets.len()
    }

    pub fn persist(&self) -> Result<()> {
        write_file_atomic(&self.path, render(&self.offsets).as_bytes())
    }
}

/// The file's text for `offsets`, checksum line included: version 1
/// (`GROUP TOPIC PARTITION OFFSET`) while no commit has metadata, so that
/// the binaries before metadata still read it; version 2 adds the
/// metadata as a fifth field, hex-encoded (`-` for none).
fn render(offsets: &BTreeMap<Key, Committed>) -> String {
    let v2 = offsets.values().any(|c| !c.metadata.is_empty());
    let mut body = String::from(if v2 { "strom-offsets 2\n" } else { "strom-offsets 1\n" });
    for ((g, t, p), c) in offsets {
        let o = c.offset;
        if v2 {
            let meta = if c.metadata.is_empty() { "-".to_string() } else { c.metadata.bytes().map(|b| format!("{b:02x}")).collect() };
            body.push_str(&format!("{g} {t} {p} {o} {meta}\n"));
        } else {
            body.push_str(&format!("{g} {t} {p} {o}\n"));
        }
    }
    with_crc(body)
}

fn parse(body: &str) -> Option<BTreeMap<Key, Committed>> {
    let mut lines = body.lines();
    let v2 = match lines.next()? {
        "strom-offsets 1" => false,
        "strom-offsets 2" => true,
        _ => return None,
    };
    let mut out = BTreeMap::new();
    for line in lines {
        let mut f = line.split(' ');
        let (g, t, p, o) = (f.next()?, f.next()?, f.next()?.parse().ok()?, f.next()?.parse().ok()?);
        let metadata = if v2 { unhex(f.next()?)? } else { String::new() };
        if f.next().is_some() || validate_topic_name(g).is_err() || validate_topic_name(t).is_err() {
            return None;
        }
        out.insert((g.to_string(), t.to_string(), p), Committed { offset: o, metadata });
    }
    Some(out)
}

/// A metadata field: `-`, or UTF-8 in lowercase hex, within the limit.
fn unhex(field: &str) -> Option<String> {
    if field == "-" {
        return Some(String::new());
    }
    if field.is_empty() || !field.len().is_multiple_of(2) || field.len() / 2 > METADATA_BYTES_MAX {
        return None;
    }
    let bytes: Option<Vec<u8>> = (0..field.len())
        .step_by(2)
        .map(|i| {
            field
                .get(i..i + 2)
                .filter(|h| h.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')))
                .and_then(|h| u8::from_str_radix(h, 16).ok())
        })
        .collect();
    String::from_utf8(bytes?).ok().filter(|s| !s.is_empty())
}

/// Runs the offsets file's loader (checksum line, then `parse`) on
/// arbitrary bytes and panics if a promise is broken: what loads holds only
/// valid names and writes back as text that loads to the same offsets. The
/// fuzz target and `tests/fuzz_replay.rs` both call it.
#[doc(hidden)]
pub fn fuzz_check(data: &[u8]) {
    // `read_text` refuses bytes that are not UTF-8 before the parser sees them.
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    // Mutated text almost never carries a matching checksum line, so the
    // parser also runs on the text as it is.
    let checked = check_crc(Path::new("fuzz"), text).ok();
    for body in checked.as_deref().into_iter().chain([text]) {
        let Some(offsets) = parse(body) else {
            continue;
        };
        for (g, t, _) in offsets.keys() {
            assert!(validate_topic_name(g).is_ok() && validate_topic_name(t).is_ok(), "loaded names {g:?} {t:?}");
        }
        let written = render(&offsets);
        let reread = check_crc(Path::new("fuzz"), &written).expect("a written file passes its checksum");
        assert_eq!(parse(&reread).as_ref(), Some(&offsets), "offsets do not survive a rewrite");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Proves: committed offsets survive a reopen, a topic's deletion forgets
    // them, and a damaged file is refused rather than misread.
    #[test]
    fn offsets_round_trip_and_damage_is_refused() {
        let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/tmp-unit").join(format!("offsets-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let mut s = OffsetStore::open(&dir).unwrap();
        s.set("g1", "t", 0, 42, "").unwrap();
        s.set("g1", "u", 3, 7, "").unwrap();
        s.persist().unwrap();
        assert!(std::fs::read_to_string(dir.join(OFFSETS_FILE)).unwrap().starts_with("strom-offsets 1\n"), "no metadata: version 1");
        let mut s = OffsetStore::open(&dir).unwrap();
        assert_eq!(s.get("g1", "t", 0).map(|c| c.offset), Some(42));
        assert_eq!(s.get("g1", "u", 3).map(|c| c.offset), Some(7));
        assert_eq!(s.get("g2", "t", 0), None);
        assert!(s.forget_topic("t"));
        s.persist().unwrap();
        assert_eq!(OffsetStore::open(&dir).unwrap().get("g1", "t", 0), None);
        let path = dir.join(OFFSETS_FILE);
        let text = std::fs::read_to_string(&path).unwrap().replace("7", "8");
        std::fs::write(&path, text).unwrap();
        assert!(matches!(OffsetStore::open(&dir), Err(StromError::BadDataDir(_))));
    }

    // Proves: a commit's metadata (any UTF-8, spaces and newlines
    // included) survives a reopen in version 2, and one over the limit is
    // refused before it is kept.
    #[test]
    fn metadata_survives_a_reopen_and_is_bounded() {
        let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/tmp-unit").join(format!("offsets-meta-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let mut s = OffsetStore::open(&dir).unwrap();
        let meta = "consumer 1\nhost é";
        s.set("g", "t", 1, 9, meta).unwrap();
        s.set("g", "t", 2, 3, "").unwrap();
        assert!(s.set("g", "t", 3, 1, &"x".repeat(METADATA_BYTES_MAX + 1)).is_err());
        s.persist().unwrap();
        assert!(std::fs::read_to_string(dir.join(OFFSETS_FILE)).unwrap().starts_with("strom-offsets 2\n"));
        let s = OffsetStore::open(&dir).unwrap();
        assert_eq!(s.get("g", "t", 1), Some(&Committed { offset: 9, metadata: meta.to_string() }));
        assert_eq!(s.get("g", "t", 2), Some(&Committed { offset: 3, metadata: String::new() }));
        assert_eq!(s.get("g", "t", 3), None);
    }
}
