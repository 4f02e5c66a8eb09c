//! The data directory's metadata: its fixed log count and its topics.
//!
//! `strom.meta` is written once at creation and fixes the number of logs, so
//! every partition keeps its log whatever `--cores` a later start uses.
//! `topics` lists each topic with its first partition id; partition `i` of a
//! topic is pid `first_pid + i`, and lives in log `pid % log_count`. Pids are
//! never reused, so frames of a deleted topic can never be taken for a new
//! one's. Both files are text, replaced atomically and durably, and end with
//! a CRC-32C line so that damage is detected rather than misread.
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::error::{IoOp, Result, StromError};
use crate::io::fs::write_file_atomic;
use crate::partition::{Pid, Retention};

pub const META_FILE: &str = "strom.meta";
pub const TOPICS_FILE: &str = "topics";
pub const TOPIC_NAME_BYTES_MAX: usize = 249;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicMeta {
    pub first_pid: Pid,
    pub partitions: u32,
    pub retention: TopicRetention,
    /// The topic's named indices, in declared order (empty: none). Fixed
    /// when the topic is created: every record carries one value per name.
    pub indices: IndexNames,
}

/// A topic's index names: shared, since every batch's validation reads them.
pub type IndexNames = Arc<[String]>;

pub use crate::wire::batch::values::INDICES_MAX;

/// Checks a topic's index names: at most [`INDICES_MAX`], each a valid
/// topic-like name (so it can be written in the `topics` file and on a
/// command line unquoted), no two alike.
pub fn validate_index_names(names: &[String]) -> Result<()> {
    if names.len() > INDICES_MAX {
        return Err(StromError::InvalidArgument(format!("a topic has at most {INDICES_MAX} indices, not {}", names.len())));
    }
    for (i, n) in names.iter().enumerate() {
        validate_topic_name(n).map_err(|_| {
            StromError::InvalidArgument(format!("index name {:?} is not a valid name", n.escape_debug().take(300).collect::<String>()))
        })?;
        if names[..i].contains(n) {
            return Err(StromError::InvalidArgument(format!("index {n} is declared twice")));
        }
    }
    Ok(())
}

/// A setting's value meaning "no limit" (Kafka's -1).
pub const UNLIMITED: u64 = u64::MAX;

/// The largest limit a topic may set: limits travel as i64 on the wire,
/// where -1 is "no limit" and -2 "the server's default".
pub const LIMIT_MAX: u64 = i64::MAX as u64;

/// A topic's own retention: None follows the server's default, [`UNLIMITED`]
/// keeps everything, any other value is the limit (ms of age, bytes per
/// partition).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TopicRetention {
    pub ms: Option<u64>,
    pub bytes: Option<u64>,
}

impl TopicRetention {
    /// The limits a partition of this topic runs with, given the server's.
    pub fn effective(self, default: Retention) -> Retention {
        let pick = |own: Option<u64>, dflt: Option<u64>| match own {
            None => dflt,
            Some(UNLIMITED) => None,
            Some(v) => Some(v),
        };
        Retention { age_ms: pick(self.ms, default.age_ms), bytes: pick(self.bytes, default.bytes) }
    }

    /// Checks each limit is [`UNLIMITED`] or at most [`LIMIT_MAX`].
    pub fn validate(self) -> Result<()> {
        for (what, v) in [("retention ms", self.ms), ("retention bytes", self.bytes)] {
            if let Some(v) = v.filter(|&v| v != UNLIMITED && v > LIMIT_MAX) {
                return Err(StromError::InvalidArgument(format!("{what} {v} is over the largest limit {LIMIT_MAX}")));
            }
        }
        Ok(())
    }
}

/// What `topic describe` shows: the topic's settings and its partitions now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicDescription {
    pub name: String,
    /// The topic's own settings, and the limits they resolve to.
    pub retention: TopicRetention,
    pub effective: Retention,
    pub partitions: Vec<PartitionDescription>,
    /// The topic's named indices, in the order its records carry them
    /// (none: a plain topic).
    pub indices: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PartitionDescription {
    pub start_offset: u64,
    pub end_offset: u64,
    /// Frame bytes in the log (see `PartitionStat::bytes`).
    pub bytes: u64,
    /// The core that owns it.
    pub core: u16,
}

/// One setting in the `topics` file: `default`, `unlimited` or a number.
fn setting_text(v: Option<u64>) -> String {
    match v {
        None => "default".into(),
        Some(UNLIMITED) => "unlimited".into(),
        Some(v) => v.to_string(),
    }
}

fn parse_setting(s: &str) -> Option<Option<u64>> {
    match s {
        "default" => Some(None),
        "unlimited" => Some(Some(UNLIMITED)),
        _ if s.bytes().all(|b| b.is_ascii_digit()) => s.parse().ok().filter(|&v| v <= LIMIT_MAX).map(Some),
        _ => None,
    }
}

#[derive(Debug)]
pub struct Catalog {
    dir: PathBuf,
    log_count: u32,
    next_pid: Pid,
    topics: BTreeMap<String, TopicMeta>,
}

/// Checks a topic name: 1 to 249 bytes of `[A-Za-z0-9._-]`, not `.` or `..`.
/// Names reach the disk only through this check (and never as paths).
pub fn validate_topic_name(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= TOPIC_NAME_BYTES_MAX
        && name != "."
        && name != ".."
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'_' || b == b'-');
    if ok { Ok(()) } else { Err(StromError::InvalidTopicName(name.escape_debug().take(300).collect())) }
}

/// Looks a partition up in a topic map (the catalog's, or a snapshot of it).
pub fn pid_in(topics: &BTreeMap<String, TopicMeta>, topic: &str, partition: u32) -> Result<Pid> {
    let t = topics.get(topic).ok_or_else(|| StromError::UnknownTopic(topic.escape_debug().take(300).collect()))?;
    if partition >= t.partitions {
        return Err(StromError::UnknownPartition { topic: topic.to_string(), partition });
    }
    Ok(t.first_pid + partition)
}

pub(crate) fn with_crc(body: String) -> String {
    let crc = crc32c::crc32c(body.as_bytes());
    format!("{body}crc32c {crc:08x}\n")
}

pub(crate) fn check_crc(path: &Path, text: &str) -> Result<String> {
    let bad = |why: &str| StromError::BadDataDir(format!("{}: {why}", path.display()));
    let cut = text.trim_end_matches('\n').rfind('\n').map(|i| i + 1).unwrap_or(0);
    let (body, last) = text.split_at(cut);
    let stored =
        last.trim().strip_prefix("crc32c ").and_then(|h| u32::from_str_radix(h, 16).ok()).ok_or_else(|| bad("missing checksum line"))?;
    if stored != crc32c::crc32c(body.as_bytes()) {
        return Err(bad("checksum mismatch"));
    }
    Ok(body.to_string())
}

pub(crate) fn read_text(path: &Path) -> Result<Option<String>> {
    match std::fs::read(path) {
        Ok(b) => String::from_utf8(b).map(Some).map_err(|_| StromError::BadDataDir(format!("{} is not text", path.display()))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(StromError::io(IoOp::Open, path, &e)),
    }
}

impl Catalog {
    /// Opens the metadata of `dir`, creating it (with `logs_on_create` logs) if new.
    pub fn open_or_create(dir: &Path, logs_on_create: u32) -> Result<Catalog> {
        std::fs::create_dir_all(dir).map_err(|e| StromError::io(IoOp::Create, dir, &e))?;
        let meta_path = dir.join(META_FILE);
        let log_count = match read_text(&meta_path)? {
            Some(text) => parse_meta(&meta_path, &check_crc(&meta_path, &text)?)?,
            None => {
                if logs_on_create == 0 || logs_on_create > LOGS_MAX {
                    return Err(StromError::Unsupported(format!("log count must be 1..={LOGS_MAX}, not {logs_on_create}")));
                }
                write_file_atomic(&meta_path, with_crc(format!("strom-data 1\nlogs {logs_on_create}\n")).as_bytes())?;
                logs_on_create
            }
        };
        Catalog::read_topics(dir, log_count)
    }

    /// Reads the metadata of `dir`, which another process writes, creating
    /// and writing nothing (a read-only follower's; read again whenever
    /// the writer replaces its topics file).
    pub fn open_read_only(dir: &Path) -> Result<Catalog> {
        let meta_path = dir.join(META_FILE);
        let Some(text) = read_text(&meta_path)? else {
            return Err(StromError::BadDataDir(format!(
                "{} is not a Strom data directory (no {META_FILE}): open it for writing once (with the embedded API or strom serve) first",
                dir.display()
            )));
        };
        let log_count = parse_meta(&meta_path, &check_crc(&meta_path, &text)?)?;
        Catalog::read_topics(dir, log_count)
    }

    /// No topics and no file: the catalog of an engine with no data
    /// directory (a server that serves archives alone).
    pub fn empty(dir: &Path) -> Catalog {
        Catalog { dir: dir.to_path_buf(), log_count: 1, next_pid: 0, topics: BTreeMap::new() }
    }

    fn read_topics(dir: &Path, log_count: u32) -> Result<Catalog> {
        let mut cat = Catalog { dir: dir.to_path_buf(), log_count, next_pid: 0, topics: BTreeMap::new() };
        let topics_path = dir.join(TOPICS_FILE);
        if let Some(text) = read_text(&topics_path)? {
            cat.parse_topics(&topics_path, &check_crc(&topics_path, &text)?)?;
        }
        Ok(cat)
    }

    /// Reads format 1 (`topic NAME FIRST_PID PARTITIONS`) and format 2,
    /// which adds the topic's retention ms and bytes (see docs/FORMAT.md).
    fn parse_topics(&mut self, path: &Path, body: &str) -> Result<()> {
        let bad = |line: &str| StromError::BadDataDir(format!("{}: bad line {line:?}", path.display()));
        let mut lines = body.lines();
        let version = match lines.next() {
            Some("strom-topics 1") => 1,
            Some("strom-topics 2") => 2,
            Some("strom-topics 3") => 3,
            _ => return Err(bad("header")),
        };
        for line in lines {
            let f: Vec<&str> = line.split(' ').collect();
            let (name, first, parts, retention, indices) = match (version, f.as_slice()) {
                (_, ["next_pid", n]) => {
                    self.next_pid = n.parse().map_err(|_| bad(line))?;
                    continue;
                }
                (1, ["topic", name, first, parts]) => (name, first, parts, TopicRetention::default(), "-"),
                (2, ["topic", name, first, parts, ms, bytes]) | (3, ["topic", name, first, parts, ms, bytes, "-"]) => {
                    let (Some(ms), Some(bytes)) = (parse_setting(ms), parse_setting(bytes)) else {
                        return Err(bad(line));
                    };
                    (name, first, parts, TopicRetention { ms, bytes }, "-")
                }
                (3, ["topic", name, first, parts, ms, bytes, indices]) => {
                    let (Some(ms), Some(bytes)) = (parse_setting(ms), parse_setting(bytes)) else {
                        return Err(bad(line));
                    };
                    (name, first, parts, TopicRetention { ms, bytes }, *indices)
                }
                _ => return Err(bad(line)),
            };
            validate_topic_name(name).map_err(|_| bad(line))?;
            let indices: Vec<String> = if indices == "-" { Vec::new() } else { indices.split(',').map(str::to_string).collect() };
            validate_index_names(&indices).map_err(|_| bad(line))?;
            let meta = TopicMeta {
                first_pid: first.parse().map_err(|_| bad(line))?,
                partitions: parts.parse().map_err(|_| bad(line))?,
                retention,
                indices: indices.into(),
            };
            // Pid ranges must be non-empty, fit u32 and lie below
            // next_pid (written first): pid arithmetic relies on it.
            // Found by the catalog_parse fuzz target.
            let end = meta.first_pid.checked_add(meta.partitions).ok_or_else(|| bad(line))?;
            if meta.partitions == 0 || end > self.next_pid {
                return Err(bad(line));
            }
            self.topics.insert(name.to_string(), meta);
        }
        Ok(())
    }

    /// Writes format 2, or format 3 when a topic has named indices (a
    /// Strom that knows only an older format refuses a newer one as
    /// damaged rather than dropping the settings; a directory with no
    /// indices stays readable by the binaries before them).
    fn persist(&self) -> Result<()> {
        let v3 = self.topics.values().any(|t| !t.indices.is_empty());
        let mut body = format!("strom-topics {}\nnext_pid {}\n", if v3 { 3 } else { 2 }, self.next_pid);
        for (name, t) in &self.topics {
            let (ms, bytes) = (setting_text(t.retention.ms), setting_text(t.retention.bytes));
            body.push_str(&format!("topic {name} {} {} {ms} {bytes}", t.first_pid, t.partitions));
            if v3 {
                body.push(' ');
                body.push_str(&if t.indices.is_empty() { "-".to_string() } else { t.indices.join(",") });
            }
            body.push('\n');
        }
        write_file_atomic(&self.dir.join(TOPICS_FILE), with_crc(body).as_bytes())
    }

    /// Forgets the topics named in `names` (in this copy only: nothing is
    /// written) and returns which were there.
    pub fn forget_names(&mut self, names: &std::collections::BTreeSet<String>) -> Vec<String> {
        let gone: Vec<String> = self.topics.keys().filter(|t| names.contains(*t)).cloned().collect();
        for t in &gone {
            self.topics.remove(t);
        }
        gone
    }

    pub fn log_count(&self) -> u32 {
        self.log_count
    }

    pub fn topics(&self) -> &BTreeMap<String, TopicMeta> {
        &self.topics
    }

    pub fn topic(&self, name: &str) -> Result<TopicMeta> {
        self.topics.get(name).cloned().ok_or_else(|| StromError::UnknownTopic(name.escape_debug().take(300).collect()))
    }

    pub fn pid(&self, name: &str, partition: u32) -> Result<Pid> {
        pid_in(&self.topics, name, partition)
    }

    /// The named indices of every live partition whose topic has some.
    pub fn indexed(&self) -> std::collections::HashMap<Pid, IndexNames> {
        let with = self.topics.values().filter(|t| !t.indices.is_empty());
        with.flat_map(|t| (t.first_pid..t.first_pid + t.partitions).map(|p| (p, t.indices.clone()))).collect()
    }

    /// Every live partition id.
    pub fn pids(&self) -> Vec<Pid> {
        self.topics.values().flat_map(|t| t.first_pid..t.first_pid + t.partitions).collect()
    }

    /// Creates a topic durably and returns its partition ids.
    pub fn create_topic(
        &mut self,
        name: &str,
        partitions: u32,
        partitions_max: u32,
        retention: TopicRetention,
        indices: &[String],
    ) -> Result<TopicMeta> {
        validate_topic_name(name)?;
        retention.validate()?;
        validate_index_names(indices)?;
        if self.topics.contains_key(name) {
            return Err(StromError::TopicExists(name.to_string()));
        }
        if partitions == 0 || partitions > partitions_max {
            return Err(StromError::InvalidArgument(format!("a topic has 1 to {partitions_max} partitions, not {partitions}")));
        }
        let first_pid = self.next_pid;
        let next = first_pid.checked_add(partitions).ok_or(StromError::Overloaded("partition ids exhausted"))?;
        let meta = TopicMeta { first_pid, partitions, retention, indices: indices.into() };
        self.topics.insert(name.to_string(), meta.clone());
        self.next_pid = next;
        if let Err(e) = self.persist() {
            self.topics.remove(name);
            self.next_pid = first_pid;
            return Err(e);
        }
        Ok(meta)
    }

    /// Changes a topic's retention durably: each setting given replaces
    /// the topic's own (None leaves it as it is). Returns the topic.
    pub fn alter_topic(&mut self, name: &str, ms: Option<Option<u64>>, bytes: Option<Option<u64>>) -> Result<TopicMeta> {
        let old = self.topic(name)?;
        let mut new = old.clone();
        new.retention.ms = ms.unwrap_or(old.retention.ms);
        new.retention.bytes = bytes.unwrap_or(old.retention.bytes);
        new.retention.validate()?;
        self.topics.insert(name.to_string(), new.clone());
        if let Err(e) = self.persist() {
            self.topics.insert(name.to_string(), old);
            return Err(e);
        }
        Ok(new)
    }

    /// Deletes a topic durably. Its frames stay in the logs until retention
    /// removes their segments; its pids are never reused.
    pub fn delete_topic(&mut self, name: &str) -> Result<TopicMeta> {
        let meta = self.topic(name)?;
        self.topics.remove(name);
        if let Err(e) = self.persist() {
            self.topics.insert(name.to_string(), meta.clone());
            return Err(e);
        }
        Ok(meta)
    }
}

/// Logs a data directory may have: bounds the threads, buffers and files
/// an open allocates from a number read off disk.
pub const LOGS_MAX: u32 = 4096;

fn parse_meta(path: &Path, body: &str) -> Result<u32> {
    let mut lines = body.lines();
    let bad = || StromError::BadDataDir(format!("{} is not a Strom 1 data directory marker", path.display()));
    if lines.next() != Some("strom-data 1") {
        return Err(bad());
    }
    lines.next().and_then(|l| l.strip_prefix("logs ")).and_then(|n| n.parse().ok()).filter(|&n| n > 0 && n <= LOGS_MAX).ok_or_else(bad)
}

/// Runs the `strom.meta` and `topics` parsers and the topic name check on
/// arbitrary bytes and panics if a promise is broken. The fuzz target and
/// `tests/fuzz_replay.rs` both call it, so a saved input replays under
/// `cargo test` exactly as it was fuzzed.
#[doc(hidden)]
pub fn fuzz_check(data: &[u8]) {
    // `read_text` refuses bytes that are not UTF-8 before any parser sees them.
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let path = Path::new("fuzz");
    if let Ok(body) = check_crc(path, text) {
        fuzz_check_parsers(path, &body);
    }
    // Mutated text almost never carries a matching checksum line, so the
    // parsers also run, unchecked, on the body `check_crc` would cut off,
    // and on the whole text.
    let last_line_at = text.trim_end_matches('\n').rfind('\n').map_or(0, |i| i + 1);
    fuzz_check_parsers(path, &text[..last_line_at]);
    fuzz_check_parsers(path, text);
    if text.is_empty() || text.ends_with('\n') {
        assert_eq!(check_crc(path, &with_crc(text.to_string())).ok().as_deref(), Some(text), "checksum line does not round-trip");
    }
    for name in std::iter::once(text).chain(text.split([' ', '\n'])) {
        fuzz_check_topic_name(name);
    }
}

fn fuzz_check_parsers(path: &Path, body: &str) {
    if let Ok(log_count) = parse_meta(path, body) {
        assert!(log_count > 0);
    }
    let mut cat = Catalog { dir: PathBuf::new(), log_count: 1, next_pid: 0, topics: BTreeMap::new() };
    if cat.parse_topics(path, body).is_ok() {
        for (name, t) in &cat.topics {
            assert!(validate_topic_name(name).is_ok(), "parsed topic name {name:?}");
            // `pid` and `pids` add partitions to first_pid.
            assert!(t.first_pid.checked_add(t.partitions).is_some(), "pids of topic {name:?} overflow: {t:?}");
        }
    }
}

/// Compares `validate_topic_name` with the rule stated another way: by
/// characters rather than bytes.
fn fuzz_check_topic_name(name: &str) {
    let allowed = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-');
    let expected = (1..=249).contains(&name.chars().count()) && name.chars().all(allowed) && !matches!(name, "." | "..");
    assert_eq!(validate_topic_name(name).is_ok(), expected, "{name:?}");
}

#[cfg(test)]
mod tests {
    use super::*;

    // Proves the name rule: allowed characters and lengths only, never a path.
    #[test]
    fn topic_names() {
        for ok in ["a", "orders.v1", "A-b_c", &"x".repeat(249)] {
            validate_topic_name(ok).unwrap();
        }
        for bad in ["", ".", "..", "../x", "/etc/x", "a b", "a\0b", "é", &"x".repeat(250)] {
            assert!(validate_topic_name(bad).is_err(), "{bad:?} accepted");
        }
    }

    // Proves topics persist with their pids, pids are never reused, and damage is detected.
    #[test]
    fn persist_and_reopen() {
        let dir = std::env::temp_dir().join(format!("strom-catalog-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let mut c = Catalog::open_or_create(&dir, 3).unwrap();
        let none = TopicRetention::default();
        assert_eq!(
            c.create_topic("a", 2, 10, none, &[]).unwrap(),
            TopicMeta { first_pid: 0, partitions: 2, retention: none, indices: Vec::new().into() }
        );
        assert!(matches!(c.create_topic("a", 1, 10, none, &[]), Err(StromError::TopicExists(_))));
        c.delete_topic("a").unwrap();
        assert_eq!(c.create_topic("b", 1, 10, none, &[]).unwrap().first_pid, 2);
        let c2 = Catalog::open_or_create(&dir, 7).unwrap();
        assert_eq!(c2.log_count(), 3, "the log count is fixed at creation");
        assert_eq!(c2.pid("b", 0).unwrap(), 2);
        assert!(c2.pid("a", 0).is_err());
        let path = dir.join(TOPICS_FILE);
        let mut text = std::fs::read_to_string(&path).unwrap();
        text = text.replacen("topic b 2", "topic b 3", 1);
        std::fs::write(&path, text).unwrap();
        assert!(matches!(Catalog::open_or_create(&dir, 3), Err(StromError::BadDataDir(_))));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    // Proves retention settings persist (default, unlimited, a value), an
    // alter changes only what it names, a format 1 file still reads (its
    // topics follow the default), and the effective limits resolve.
    #[test]
    fn retention_settings_persist() {
        let dir = std::env::temp_dir().join(format!("strom-catalog-ret-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let mut c = Catalog::open_or_create(&dir, 2).unwrap();
        let own = TopicRetention { ms: Some(60_000), bytes: Some(UNLIMITED) };
        c.create_topic("a", 1, 10, own, &[]).unwrap();
        c.create_topic("b", 1, 10, TopicRetention::default(), &[]).unwrap();
        assert!(c.create_topic("c", 1, 10, TopicRetention { ms: Some(LIMIT_MAX + 1), bytes: None }, &[]).is_err());
        c.alter_topic("b", None, Some(Some(4096))).unwrap();
        let c2 = Catalog::open_or_create(&dir, 2).unwrap();
        assert_eq!(c2.topic("a").unwrap().retention, own);
        assert_eq!(c2.topic("b").unwrap().retention, TopicRetention { ms: None, bytes: Some(4096) });
        let server = Retention { age_ms: Some(1_000), bytes: Some(1 << 30) };
        assert_eq!(own.effective(server), Retention { age_ms: Some(60_000), bytes: None });
        assert_eq!(c2.topic("b").unwrap().retention.effective(server), Retention { age_ms: Some(1_000), bytes: Some(4096) });
        std::fs::write(dir.join(TOPICS_FILE), with_crc("strom-topics 1\nnext_pid 3\ntopic old 1 2\n".into())).unwrap();
        let c3 = Catalog::open_or_create(&dir, 2).unwrap();
        assert_eq!(
            c3.topic("old").unwrap(),
            TopicMeta { first_pid: 1, partitions: 2, retention: TopicRetention::default(), indices: Vec::new().into() }
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    // Proves named indices persist in declared order in format 3, a
    // directory without them keeps writing format 2, and bad index
    // declarations are refused: too many, a bad name, a name twice.
    #[test]
    fn indices_persist() {
        let dir = std::env::temp_dir().join(format!("strom-catalog-idx-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let mut c = Catalog::open_or_create(&dir, 1).unwrap();
        let none = TopicRetention::default();
        c.create_topic("plain", 1, 10, none, &[]).unwrap();
        assert!(std::fs::read_to_string(dir.join(TOPICS_FILE)).unwrap().starts_with("strom-topics 2\n"));
        let names = vec!["ts".to_string(), "seq".to_string()];
        c.create_topic("ix", 2, 10, none, &names).unwrap();
        let text = std::fs::read_to_string(dir.join(TOPICS_FILE)).unwrap();
        assert!(text.starts_with("strom-topics 3\n") && text.contains("topic ix 1 2 default default ts,seq\n"), "{text}");
        let c2 = Catalog::open_or_create(&dir, 1).unwrap();
        assert_eq!(&*c2.topic("ix").unwrap().indices, names.as_slice());
        assert!(c2.topic("plain").unwrap().indices.is_empty());
        let nine: Vec<String> = (0..9).map(|i| format!("i{i}")).collect();
        assert!(c.create_topic("x", 1, 10, none, &nine).is_err());
        assert!(c.create_topic("x", 1, 10, none, &["a b".to_string()]).is_err());
        assert!(c.create_topic("x", 1, 10, none, &["a".to_string(), "a".to_string()]).is_err());
        assert!(c.create_topic("x", 1, 10, none, &[String::new()]).is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
