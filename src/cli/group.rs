//! `strom group describe`: where a consumer group stands in a topic;
//! `strom group reset`: moves it (as `consume --from` names positions).
//! (The server keeps committed offsets per group, topic and partition and
//! has no request that lists groups, so there is no `group list`.)
use std::io::Write;

use clap::Subcommand;
use strom::proto::OffsetSpec;

use super::consume::resolve_start;
use super::partition_count;
use super::start::StartAt;

#[derive(Subcommand)]
pub enum GroupCmd {
    /// Print, per partition of TOPIC, the group's committed offset, the end
    /// offset and the lag (records not yet consumed).
    Describe {
        /// The group.
        name: String,
        /// The topic whose partitions to show.
        #[arg(long)]
        topic: String,
        /// One JSON object per partition, one per line.
        #[arg(long)]
        json: bool,
    },
    /// Set the group's committed offset in TOPIC's partitions to the
    /// position --to names, then print them as describe does.
    Reset {
        /// The group.
        name: String,
        /// The topic whose partitions to move.
        #[arg(long)]
        topic: String,
        /// Only this partition (default: all).
        #[arg(long)]
        partition: Option<u32>,
        /// Where: earliest, latest, OFFSET, -N, -DURATION, @UNIX_MS or @RFC3339 (as consume --from).
        #[arg(long, allow_hyphen_values = true)]
        to: StartAt,
    },
}

/// One partition's row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Position {
    pub partition: u32,
    pub committed: Option<u64>,
    pub earliest: u64,
    pub end: u64,
}

impl Position {
    /// Records the group has yet to read: from its committed offset (or,
    /// with none, from the earliest) to the end.
    pub fn lag(&self) -> u64 {
        self.end.saturating_sub(self.committed.unwrap_or(self.earliest).max(self.earliest))
    }
}

pub fn run(conn: &crate::ConnArgs, cmd: &GroupCmd) -> Result<(), String> {
    let (name, topic) = match cmd {
        GroupCmd::Describe { name, topic, .. } | GroupCmd::Reset { name, topic, .. } => (name, topic),
    };
    strom::client::check_name(name).map_err(|e| e.to_string())?;
    strom::client::check_name(topic).map_err(|e| e.to_string())?;
    let mut client = super::connect(conn)?;
    let partitions = partition_count(&mut client, topic)?;
    let (chosen, json) = match cmd {
        GroupCmd::Describe { json, .. } => ((0..partitions).collect(), *json),
        GroupCmd::Reset { partition: Some(p), .. } if *p >= partitions => {
            return Err(format!("topic \"{topic}\" has partitions 0 to {}; there is no partition {p}", partitions - 1));
        }
        GroupCmd::Reset { partition, to, .. } => {
            let chosen: Vec<u32> = partition.map_or_else(|| (0..partitions).collect(), |p| vec![p]);
            for &p in &chosen {
                let failed = |e: strom::client::ClientError| format!("moving partition {p} of topic \"{topic}\" failed: {e}");
                let offset = resolve_start(&mut client, topic, p, *to).map_err(failed)?;
                client.commit_offset(name, topic, p, offset).map_err(failed)?;
            }
            (chosen, false)
        }
    };
    let mut rows = Vec::with_capacity(chosen.len());
    for partition in chosen {
        let failed = |e: strom::client::ClientError| format!("reading partition {partition} of topic \"{topic}\" failed: {e}");
        let committed = client.fetch_offset(name, topic, partition).map_err(failed)?;
        let earliest = client.list_offsets(topic, partition, OffsetSpec::Earliest).map_err(failed)?.unwrap_or(0);
        let end = client.list_offsets(topic, partition, OffsetSpec::Latest).map_err(failed)?.unwrap_or(0);
        rows.push(Position { partition, committed, earliest, end });
    }
    let text = render(name, topic, &rows, json);
    std::io::stdout().lock().write_all(text.as_bytes()).map_err(|e| format!("writing to stdout failed: {e}"))
}

/// The table (a header, then `PARTITION COMMITTED END LAG`, `-` for nothing
/// committed) or JSON lines (`"committed":null` for nothing committed).
pub fn render(group: &str, topic: &str, rows: &[Position], json: bool) -> String {
    let mut s = String::new();
    if json {
        for r in rows {
            let committed = r.committed.map_or("null".to_string(), |c| c.to_string());
            s += &format!(
                "{{\"group\":\"{group}\",\"topic\":\"{topic}\",\"partition\":{},\"committed\":{committed},\"earliest\":{},\"end\":{},\"lag\":{}}}\n",
                r.partition,
                r.earliest,
                r.end,
                r.lag()
            );
        }
        return s;
    }
    s += &format!("{:>9} {:>12} {:>12} {:>12}\n", "PARTITION", "COMMITTED", "END", "LAG");
    for r in rows {
        let committed = r.committed.map_or("-".to_string(), |c| c.to_string());
        s += &format!("{:>9} {committed:>12} {:>12} {:>12}\n", r.partition, r.end, r.lag());
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    // Proves: lag counts from the committed offset, or from the earliest
    // with nothing committed, never below the earliest; both outputs show it.
    #[test]
    fn lag_and_rendering() {
        let rows = [
            Position { partition: 0, committed: Some(7), earliest: 0, end: 10 },
            Position { partition: 1, committed: None, earliest: 2, end: 5 },
            Position { partition: 2, committed: Some(1), earliest: 4, end: 4 },
        ];
        assert_eq!(rows.iter().map(Position::lag).collect::<Vec<_>>(), vec![3, 3, 0]);
        let table = render("g", "t", &rows, false);
        assert_eq!(table.lines().nth(1).unwrap().split_whitespace().collect::<Vec<_>>(), vec!["0", "7", "10", "3"]);
        assert_eq!(table.lines().nth(2).unwrap().split_whitespace().collect::<Vec<_>>(), vec!["1", "-", "5", "3"]);
        let json = render("g", "t", &rows, true);
        assert_eq!(
            json.lines().nth(1).unwrap(),
            "{\"group\":\"g\",\"topic\":\"t\",\"partition\":1,\"committed\":null,\"earliest\":2,\"end\":5,\"lag\":3}"
        );
    }
}
