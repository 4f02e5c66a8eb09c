//! `strom query`: the records of a range of one partition, by offset or by
//! named index value, waiting up to `--wait` for the range's end.
//!
//! The server answers the range's bounds (api 14, waiting for its end);
//! the records are then fetched a bounded reply at a time and printed as
//! they come, so a range of any size runs in constant memory.
use std::io::{BufWriter, ErrorKind, Write};
use std::ops::ControlFlow;
use std::time::Duration;

use clap::Args;
use strom::client::{Client, FetchedRecord};
use strom::proto::QueryEnd;
use strom::wire::batch::values::record_value;

/// Bytes fetched at a time while printing a range.
const FETCH_BYTES: u32 = 1 << 20;
/// How long past `--wait` the reply may take before the query gives up.
const QUERY_REPLY_MARGIN: Duration = Duration::from_secs(30);
/// The exit status of a query whose end did not come within `--wait`.
pub const EXIT_OPEN: u8 = 3;

#[derive(Args)]
pub struct QueryArgs {
    topic: String,
    #[arg(long, default_value_t = 0)]
    partition: u32,
    /// The range's first record: an offset (negative from the end: -1 is the
    /// last record), or NAME=VALUE: the first record whose index NAME is at least VALUE.
    #[arg(long, default_value = "0", allow_hyphen_values = true, value_parser = parse_ref)]
    from: Ref,
    /// The range's last record: an offset (as --from), or NAME=VALUE: the last
    /// record whose index NAME is at most VALUE.
    #[arg(long, default_value = "-1", allow_hyphen_values = true, value_parser = parse_ref)]
    to: Ref,
    /// Print only the range's first record.
    #[arg(long, conflicts_with_all = ["last", "count", "all"])]
    first: bool,
    /// Print only the range's last record.
    #[arg(long, conflicts_with_all = ["first", "count", "all"])]
    last: bool,
    /// Print how many records the range holds.
    #[arg(long, conflicts_with_all = ["first", "last", "all"])]
    count: bool,
    /// Print every record of the range, in offset order (the default).
    #[arg(long)]
    all: bool,
    /// Wait up to this many ms for the range's end to exist.
    #[arg(long, default_value_t = 0, value_name = "MS")]
    wait: u64,
    /// Print `OFFSET<TAB>V1,V2,...<TAB>VALUE` (the topic's index values in declared order).
    #[arg(long)]
    long: bool,
    #[command(flatten)]
    conn: crate::ConnArgs,
}

/// A range end as given on the command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ref {
    Offset(i64),
    Index(String, i64),
}

impl Ref {
    fn wire(&self) -> QueryEnd<'_> {
        match self {
            Ref::Offset(o) => QueryEnd::Offset(*o),
            Ref::Index(name, value) => QueryEnd::Index { name, value: *value },
        }
    }
}

pub fn parse_ref(s: &str) -> Result<Ref, String> {
    if let Some((name, value)) = s.split_once('=') {
        strom::client::check_name(name).map_err(|e| format!("index name: {e}"))?;
        let v = value.parse().map_err(|_| format!("{value:?} is not a 64-bit integer"))?;
        return Ok(Ref::Index(name.to_string(), v));
    }
    s.parse().map(Ref::Offset).map_err(|_| format!("{s:?} is neither an offset nor NAME=VALUE"))
}

/// Runs the query; Ok(true) when the range's end did not come within `--wait`.
pub fn query(args: &QueryArgs) -> Result<bool, String> {
    strom::client::check_name(&args.topic).map_err(|e| e.to_string())?;
    let mut client = super::connect(&args.conn)?.for_partition(&args.topic, args.partition).map_err(|e| e.to_string())?;
    let names: Vec<String> = if args.long { client.describe_topic(&args.topic).map_err(|e| e.to_string())?.indices } else { Vec::new() };
    let wait = Duration::from_millis(args.wait);
    // The reply may come only when the wait ends: the connection waits
    // that long and a margin for the server's answer.
    client.set_timeout(Some(wait + QUERY_REPLY_MARGIN)).map_err(|e| e.to_string())?;
    let bounds = client.query(&args.topic, args.partition, args.from.wire(), args.to.wire(), wait).map_err(|e| e.to_string())?;
    let mut out = BufWriter::new(std::io::stdout().lock());
    let printed = if args.count {
        writeln!(out, "{}", bounds.count()).map_err(write_failed)
    } else {
        let range = match (args.first, args.last) {
            (true, _) => strom::core::query::QueryBounds { end: bounds.end.min(bounds.from + 1), ..bounds },
            (_, true) => strom::core::query::QueryBounds { from: bounds.end.saturating_sub(1).max(bounds.from), ..bounds },
            _ => bounds,
        };
        print_range(&mut client, args, &names, &range, &mut out)
    };
    match printed {
        Err(e) if e.contains("Broken pipe") => return Ok(false),
        other => other?,
    }
    out.flush().map_err(write_failed)?;
    if bounds.open {
        eprintln!("strom query: the range is still open: its end did not exist within --wait {} ms; printed what exists", args.wait);
    }
    Ok(bounds.open)
}

fn print_range(
    client: &mut Client,
    args: &QueryArgs,
    names: &[String],
    range: &strom::core::query::QueryBounds,
    out: &mut impl Write,
) -> Result<(), String> {
    let mut failed = None;
    client
        .for_each_in_range(&args.topic, args.partition, range, FETCH_BYTES, |r| match print_record(out, args.long, names, r) {
            Ok(()) => ControlFlow::Continue(()),
            Err(e) => {
                failed = Some(e);
                ControlFlow::Break(())
            }
        })
        .map_err(|e| e.to_string())?;
    failed.map_or(Ok(()), Err)
}

fn print_record(out: &mut impl Write, long: bool, names: &[String], r: &FetchedRecord<'_>) -> Result<(), String> {
    if long {
        let values: Vec<String> =
            names.iter().map(|n| record_value(r.headers.clone(), n.as_bytes()).map_or_else(String::new, |v| v.to_string())).collect();
        write!(out, "{}\t{}\t", r.offset, values.join(",")).map_err(write_failed)?;
    }
    out.write_all(r.value.unwrap_or_default()).map_err(write_failed)?;
    out.write_all(b"\n").map_err(write_failed)
}

fn write_failed(e: std::io::Error) -> String {
    if e.kind() == ErrorKind::BrokenPipe { "Broken pipe".into() } else { format!("writing to stdout failed: {e}") }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Proves range ends parse as offsets (negative too) or NAME=VALUE, and
    // anything else is refused with a message.
    #[test]
    fn refs() {
        assert_eq!(parse_ref("12").unwrap(), Ref::Offset(12));
        assert_eq!(parse_ref("-1").unwrap(), Ref::Offset(-1));
        assert_eq!(parse_ref("ts=-5").unwrap(), Ref::Index("ts".into(), -5));
        assert!(parse_ref("ts=x").is_err());
        assert!(parse_ref("a b=1").is_err());
        assert!(parse_ref("x").is_err());
    }
}
