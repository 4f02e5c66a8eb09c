//! `strom topic ...`: create, alter, describe, list and delete topics on a
//! running broker.
//!
//! Retention flags carry Kafka's names (`retention.ms`, `retention.bytes`
//! as `--retention-ms`, `--retention-bytes`) so that a Kafka user finds
//! them, and take what a person types: `604800000`, `7d`, `12h`, `10GiB`,
//! `-1` or `unlimited` for no limit, `default` for the server's.
use std::fmt::Write as _;
use std::io::Write as _;

use clap::Subcommand;
use strom::catalog::{LIMIT_MAX, TopicDescription, TopicRetention, UNLIMITED};
use strom::client::Client;

/// One retention setting as typed: None is the server's default,
/// [`UNLIMITED`] no limit. (A newtype: clap reads `Option<Option<_>>` as a
/// flag whose value may be left out.)
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Setting(pub Option<u64>);

#[derive(Subcommand)]
pub enum TopicCmd {
    /// Create a topic; without retention flags it follows the server's.
    Create {
        name: String,
        #[arg(long, default_value_t = 1)]
        partitions: u32,
        /// Keep records whose batch is younger than this (ms, or 30s, 12h, 7d; -1: no limit).
        #[arg(long, value_parser = parse_ms_setting, allow_hyphen_values = true)]
        retention_ms: Option<Setting>,
        /// Keep at most this many bytes per partition, its newest (bytes, or 512MiB, 10GiB; -1: no limit).
        #[arg(long, value_parser = parse_bytes_setting, allow_hyphen_values = true)]
        retention_bytes: Option<Setting>,
        /// A named index every record carries (repeatable, at most 8, in
        /// order): a header NAME with an 8-byte little-endian i64, never
        /// decreasing within a partition.
        #[arg(long = "index", value_name = "NAME")]
        indices: Vec<String>,
    },
    /// Change a topic's retention (`default` returns a setting to the server's).
    Alter {
        name: String,
        /// As for create, or `default`.
        #[arg(long, value_parser = parse_ms_setting, allow_hyphen_values = true)]
        retention_ms: Option<Setting>,
        /// As for create, or `default`.
        #[arg(long, value_parser = parse_bytes_setting, allow_hyphen_values = true)]
        retention_bytes: Option<Setting>,
    },
    /// Show a topic's retention, indices and partitions (offsets, bytes, core).
    Describe {
        name: String,
        /// One JSON document instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Print every topic as `NAME PARTITIONS`, one per line.
    List {
        /// One JSON document instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Delete a topic; its records are dead, and their space comes back once
    /// no other topic keeps data in the same segments.
    Delete { name: String },
}

impl TopicCmd {
    /// The command's name, for error messages.
    pub fn name(&self) -> &'static str {
        match self {
            TopicCmd::Create { .. } => "topic create",
            TopicCmd::Alter { .. } => "topic alter",
            TopicCmd::Describe { .. } => "topic describe",
            TopicCmd::List { .. } => "topic list",
            TopicCmd::Delete { .. } => "topic delete",
        }
    }
}

/// Runs `cmd` against the broker `connect` reaches.
pub fn run(cmd: TopicCmd, connect: impl FnOnce() -> Result<Client, String>) -> Result<(), String> {
    let name = match &cmd {
        TopicCmd::Create { name, .. } | TopicCmd::Alter { name, .. } | TopicCmd::Describe { name, .. } | TopicCmd::Delete { name } => {
            Some(name.as_str())
        }
        TopicCmd::List { .. } => None,
    };
    if let Some(name) = name {
        strom::client::check_name(name).map_err(|e| e.to_string())?;
    }
    let mut client = connect()?;
    let text = match cmd {
        TopicCmd::Create { name, partitions, retention_ms, retention_bytes, indices } if !indices.is_empty() => {
            let retention = TopicRetention { ms: retention_ms.and_then(|s| s.0), bytes: retention_bytes.and_then(|s| s.0) };
            client.create_topic_indexed(&name, partitions, retention, &indices).map_err(|e| e.to_string())?;
            format!("created topic {name:?} with {}, indices {}\n", count(partitions, "partition"), indices.join(", "))
        }
        TopicCmd::Create { name, partitions, retention_ms: None, retention_bytes: None, .. } => {
            client.create_topic(&name, partitions).map_err(|e| e.to_string())?;
            format!("created topic {name:?} with {}\n", count(partitions, "partition"))
        }
        TopicCmd::Create { name, partitions, retention_ms, retention_bytes, .. } => {
            let retention = TopicRetention { ms: retention_ms.and_then(|s| s.0), bytes: retention_bytes.and_then(|s| s.0) };
            client.create_topic_with(&name, partitions, retention).map_err(|e| e.to_string())?;
            format!("created topic {name:?} with {}, retention {}\n", count(partitions, "partition"), retention_text(&retention))
        }
        TopicCmd::Alter { name, retention_ms, retention_bytes } => {
            if retention_ms.is_none() && retention_bytes.is_none() {
                return Err("nothing to change: give --retention-ms, --retention-bytes or both".into());
            }
            let after = client.alter_topic(&name, retention_ms.map(|s| s.0), retention_bytes.map(|s| s.0)).map_err(|e| e.to_string())?;
            format!("topic {name:?} retention is now {}\n", retention_text(&after))
        }
        TopicCmd::Describe { name, json } => {
            let d = client.describe_topic(&name).map_err(|e| e.to_string())?;
            if json { format!("{}\n", description_json(&d)) } else { description_text(&d) }
        }
        TopicCmd::List { json } => {
            let metadata = client.metadata(&[]).map_err(|e| e.to_string())?;
            let topics = metadata.topics.iter().map(|t| (t.name.as_str(), t.partition_cores.len()));
            if json {
                let list: Vec<_> = topics.map(|(name, n)| serde_json::json!({ "name": name, "partitions": n })).collect();
                format!("{}\n", serde_json::json!({ "topics": list }))
            } else {
                topics.fold(String::new(), |mut s, (name, n)| {
                    let _ = writeln!(s, "{name} {n}");
                    s
                })
            }
        }
        TopicCmd::Delete { name } => {
            // What it held, asked first: after the delete nothing answers for it.
            let held = client.describe_topic(&name).map_err(|e| e.to_string())?;
            client.delete_topic(&name).map_err(|e| e.to_string())?;
            let bytes: u64 = held.partitions.iter().map(|p| p.bytes).sum();
            format!(
                "deleted topic {name:?}: {}, {} of records, now dead; their segments are removed once no other \
                 topic keeps data in them (`strom inspect` and the strom_log_reclaimable_bytes metric show what waits)\n",
                count(held.partitions.len() as u32, "partition"),
                bytes_text(bytes)
            )
        }
    };
    std::io::stdout().lock().write_all(text.as_bytes()).map_err(|e| format!("writing to stdout: {e}"))
}

/// A time setting: ms, or a number with ms, s, m, h or d; -1/unlimited; default.
pub fn parse_ms_setting(s: &str) -> Result<Setting, String> {
    parse_setting(s, &[("ms", 1), ("s", 1_000), ("m", 60_000), ("h", 3_600_000), ("d", 86_400_000)], "ms")
}

/// A size setting: bytes, or a number with KiB, MiB, GiB, TiB (or KB, MB, GB, TB); -1/unlimited; default.
pub fn parse_bytes_setting(s: &str) -> Result<Setting, String> {
    let units = [
        ("KiB", 1 << 10),
        ("MiB", 1 << 20),
        ("GiB", 1 << 30),
        ("TiB", 1 << 40),
        ("KB", 1_000),
        ("MB", 1_000_000),
        ("GB", 1_000_000_000),
        ("TB", 1_000_000_000_000),
        ("B", 1),
    ];
    parse_setting(s, &units, "bytes")
}

/// None is `default`; [`UNLIMITED`] is `-1` or `unlimited`.
fn parse_setting(s: &str, units: &[(&str, u64)], what: &str) -> Result<Setting, String> {
    match s {
        "default" => return Ok(Setting(None)),
        "-1" | "unlimited" => return Ok(Setting(Some(UNLIMITED))),
        _ => {}
    }
    let (digits, scale) = units.iter().find_map(|&(u, scale)| s.strip_suffix(u).map(|d| (d, scale))).unwrap_or((s, 1));
    let n: u64 = digits.trim().parse().map_err(|_| {
        let names: Vec<&str> = units.iter().map(|u| u.0).collect();
        format!("{s:?} is not a {what} limit: give a number, optionally with one of {}, or -1 for no limit", names.join(", "))
    })?;
    n.checked_mul(scale)
        .filter(|&v| v <= LIMIT_MAX)
        .map(|v| Setting(Some(v)))
        .ok_or_else(|| format!("{s:?} is over the largest limit ({LIMIT_MAX} {what})"))
}

fn setting_text(v: Option<u64>, show: fn(u64) -> String) -> String {
    match v {
        None => "the server's default".into(),
        Some(UNLIMITED) => "no limit".into(),
        Some(v) => show(v),
    }
}

fn retention_text(r: &TopicRetention) -> String {
    format!("time {}, bytes per partition {}", setting_text(r.ms, ms_text), setting_text(r.bytes, bytes_text))
}

/// Milliseconds in the largest unit that divides them.
fn ms_text(ms: u64) -> String {
    let units = [("d", 86_400_000), ("h", 3_600_000), ("m", 60_000), ("s", 1_000)];
    units.iter().find(|&&(_, n)| ms >= n && ms.is_multiple_of(n)).map_or(format!("{ms}ms"), |&(u, n)| format!("{}{u}", ms / n))
}

/// Bytes in binary units, to one decimal.
fn bytes_text(bytes: u64) -> String {
    let units = [("TiB", 1u64 << 40), ("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)];
    units.iter().find(|&&(_, n)| bytes >= n).map_or(format!("{bytes} B"), |&(u, n)| format!("{:.1} {u}", bytes as f64 / n as f64))
}

fn effective_text(v: Option<u64>, show: fn(u64) -> String) -> String {
    v.map_or("no limit".into(), show)
}

fn description_text(d: &TopicDescription) -> String {
    let mut s = format!("topic {}\n", d.name);
    let _ = writeln!(s, "retention.ms {} (set: {})", effective_text(d.effective.age_ms, ms_text), setting_text(d.retention.ms, ms_text));
    let _ = writeln!(
        s,
        "retention.bytes {} per partition (set: {})",
        effective_text(d.effective.bytes, bytes_text),
        setting_text(d.retention.bytes, bytes_text)
    );
    let _ = writeln!(s, "indices {}", if d.indices.is_empty() { "none".to_string() } else { d.indices.join(", ") });
    let _ = writeln!(s, "{:>9} {:>14} {:>14} {:>12} {:>4}", "partition", "start_offset", "end_offset", "bytes", "core");
    for (i, p) in d.partitions.iter().enumerate() {
        let _ = writeln!(s, "{i:>9} {:>14} {:>14} {:>12} {:>4}", p.start_offset, p.end_offset, p.bytes, p.core);
    }
    s
}

/// A setting in JSON: "default", "unlimited" or the number.
fn setting_json(v: Option<u64>) -> serde_json::Value {
    match v {
        None => "default".into(),
        Some(UNLIMITED) => "unlimited".into(),
        Some(v) => v.into(),
    }
}

fn description_json(d: &TopicDescription) -> serde_json::Value {
    let partitions: Vec<_> = d
        .partitions
        .iter()
        .enumerate()
        .map(|(i, p)| {
            serde_json::json!({
                "partition": i, "start_offset": p.start_offset, "end_offset": p.end_offset, "bytes": p.bytes, "core": p.core,
            })
        })
        .collect();
    serde_json::json!({
        "name": d.name,
        "retention": {
            "ms": { "set": setting_json(d.retention.ms), "effective": d.effective.age_ms },
            "bytes": { "set": setting_json(d.retention.bytes), "effective": d.effective.bytes },
        },
        "indices": d.indices,
        "partitions": partitions,
    })
}

/// `1 partition`, `3 partitions`.
fn count(n: u32, noun: &str) -> String {
    if n == 1 { format!("1 {noun}") } else { format!("{n} {noun}s") }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Proves a count reads as English: one partition, not "1 partitions".
    #[test]
    fn counts_agree_with_their_number() {
        assert_eq!(count(1, "partition"), "1 partition");
        assert_eq!(count(0, "partition"), "0 partitions");
        assert_eq!(count(3, "partition"), "3 partitions");
    }

    // Proves the settings a person types parse to one value each, and that
    // what cannot be a limit is refused with the units named.
    #[test]
    fn settings_parse() {
        assert_eq!(parse_ms_setting("604800000"), Ok(Setting(Some(604_800_000))));
        assert_eq!(parse_ms_setting("7d"), Ok(Setting(Some(604_800_000))));
        assert_eq!(parse_ms_setting("90s"), Ok(Setting(Some(90_000))));
        assert_eq!(parse_ms_setting("250ms"), Ok(Setting(Some(250))));
        assert_eq!(parse_ms_setting("-1"), Ok(Setting(Some(UNLIMITED))));
        assert_eq!(parse_ms_setting("default"), Ok(Setting(None)));
        assert_eq!(parse_bytes_setting("10GiB"), Ok(Setting(Some(10 << 30))));
        assert_eq!(parse_bytes_setting("1GB"), Ok(Setting(Some(1_000_000_000))));
        assert_eq!(parse_bytes_setting("unlimited"), Ok(Setting(Some(UNLIMITED))));
        assert!(parse_ms_setting("-2").unwrap_err().contains("-1 for no limit"));
        assert!(parse_bytes_setting("9999999TiB").unwrap_err().contains("largest limit"));
        assert_eq!((ms_text(604_800_000), ms_text(1_500)), ("7d".to_string(), "1500ms".to_string()));
        assert_eq!(bytes_text(3 << 29), "1.5 GiB");
    }
}
