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

/// Committed consumer offsets, durable in one file.
pub struct OffsetStore {
    path: PathBuf,
    offsets: BTreeMap<Key, u64>,
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

    pub fn get(&self, group: &str, topic: &str, partition: u32) -> Option<u64> {
        self.offsets.get(&(group.to_string(), topic.to_string(), partition)).copied()
    }

    /// Sets an offset in memory; `persist` makes it durable.
    pub fn set(&mut self, group: &str, topic: &str, partition: u32, offset: u64) -> Result<()> {
        let key = (group.to_string(), topic.to_string(), partition);
        if !self.offsets.contains_key(&key) && self.offsets.len() >= OFFSETS_MAX {
            return Err(StromError::Overloaded("committed offsets store is full"));
        }
        self.offsets.insert(key, offset);
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

/// The file's text for `offsets`, checksum line included.
fn render(offsets: &BTreeMap<Key, u64>) -> String {
    let mut body = String::from("strom-offsets 1\n");
    for ((g, t, p), o) in offsets {
        body.push_str(&format!("{g} {t} {p} {o}\n"));
    }
    with_crc(body)
}

fn parse(body: &str) -> Option<BTreeMap<Key, u64>> {
    let mut lines = body.lines();
    if lines.next()? != "strom-offsets 1" {
        return None;
    }
    let mut out = BTreeMap::new();
    for line in lines {
        let mut f = line.split(' ');
        let (g, t, p, o) = (f.next()?, f.next()?, f.next()?.parse().ok()?, f.next()?.parse().ok()?);
        if f.next().is_some() || validate_topic_name(g).is_err() || validate_topic_name(t).is_err() {
            return None;
        }
        out.insert((g.to_string(), t.to_string(), p), o);
    }
    Some(out)
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
        s.set("g1", "t", 0, 42).unwrap();
        s.set("g1", "u", 3, 7).unwrap();
        s.persist().unwrap();
        let mut s = OffsetStore::open(&dir).unwrap();
        assert_eq!(s.get("g1", "t", 0), Some(42));
        assert_eq!(s.get("g1", "u", 3), Some(7));
        assert_eq!(s.get("g2", "t", 0), None);
        assert!(s.forget_topic("t"));
        s.persist().unwrap();
        assert_eq!(OffsetStore::open(&dir).unwrap().get("g1", "t", 0), None);
        let path = dir.join(OFFSETS_FILE);
        let text = std::fs::read_to_string(&path).unwrap().replace("7", "8");
        std::fs::write(&path, text).unwrap();
        assert!(matches!(OffsetStore::open(&dir), Err(StromError::BadDataDir(_))));
    }
}
