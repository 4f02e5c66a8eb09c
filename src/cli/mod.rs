//! The commands of the `strom` binary: `serve` (its settings and the
//! serving loop) and `config` (its file: check, default); the clients
//! produce, consume, group and topic, and what they share (the address, the
//! topic's partition count, the clock); and `doctor`, which checks the
//! machine for serve. Each file is one concept: `addr` (--addr to a
//! connection), `partitioner` (Kafka's murmur2), `produce`, `start`
//! (consume --from), `format` (how a record prints), `consume`, `group`,
//! `topic` (create, alter, describe, list, delete, and the retention
//! settings they take), `doctor/` (its checks), `notify` (systemd's
//! readiness protocol, for serve), `stat` (a live view of a running
//! broker's rates and stage latency), `export` and `import` (a partition
//! to and from a Franz stream directory, [`strom::franz`]), `mirror` (a
//! downsampled live copy of a topic on another server), `archive` (a
//! topic into one archive file, [`strom::archive`]) and `inspect_archive`
//! (`strom inspect` of such a file).
pub mod addr;
pub mod archive;
pub mod config;
pub mod consume;
pub mod doctor;
pub mod export;
pub mod format;
pub mod group;
pub mod import;
pub mod inspect_archive;
pub mod mirror;
pub mod notify;
pub mod partitioner;
pub mod produce;
pub mod query;
pub mod serve;
pub mod start;
pub mod stat;
pub mod topic;

use strom::client::Client;

/// A connection to the broker `--addr` names, authenticated with
/// `--token` (STROM_TOKEN) when one is given.
pub fn connect(conn: &crate::ConnArgs) -> Result<Client, String> {
    let mut client = addr::connect(&conn.addr)?;
    if let Some(token) = &conn.token {
        client.authenticate(token).map_err(|e| format!("cannot authenticate to {}: {e}", conn.addr))?;
    }
    Ok(client)
}

/// The number of partitions of `topic`, from the server's metadata.
pub fn partition_count(client: &mut Client, topic: &str) -> Result<u32, String> {
    let md = client.metadata(&[topic]).map_err(|e| e.to_string())?;
    match md.topics.iter().find(|t| t.name == topic) {
        Some(t) if !t.partition_cores.is_empty() => Ok(t.partition_cores.len() as u32),
        _ => Err(format!("unknown topic \"{topic}\" (strom topic list shows the topics)")),
    }
}

/// Milliseconds since the Unix epoch; 0 on a clock set before it.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}
