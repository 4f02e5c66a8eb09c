//! Range queries (api 14): the bounds from the server, then the records by
//! ordinary fetches, one bounded reply at a time, so no range is ever held
//! in memory whatever its size.
use std::ops::ControlFlow;
use std::time::Duration;

use super::fetch::FetchedRecord;
use super::{Client, ClientError, OwnedResponse, unexpected};
use crate::core::query::QueryBounds;
use crate::proto::{Api, QueryEnd, Request};

impl Client {
    /// The bounds of the range `from..=to` of a partition's records: `to`'s
    /// end is waited for up to `wait` (the answer then says the range is
    /// still `open`). Offsets may be negative (from the end: -1 is the last
    /// record); an index end names the first record at or above its value
    /// (`from`) or the last at or below it (`to`).
    pub fn query(
        &mut self,
        topic: &str,
        partition: u32,
        from: QueryEnd<'_>,
        to: QueryEnd<'_>,
        wait: Duration,
    ) -> Result<QueryBounds, ClientError> {
        if let Some(timeout) = self.timeout.filter(|&t| wait >= t) {
            return Err(ClientError::InvalidArgument(format!(
                "a query waiting {} ms would outlast the client's {} ms timeout",
                wait.as_millis(),
                timeout.as_millis()
            )));
        }
        let wait_ms = u32::try_from(wait.as_millis()).unwrap_or(u32::MAX);
        match self.call(&Request::Query { topic, partition, from, to, wait_ms })? {
            OwnedResponse::Query(b) => Ok(b),
            other => Err(unexpected(Api::Query, &other)),
        }
    }

    /// Calls `each` with every record of `bounds`, in offset order, fetching
    /// at most `fetch_bytes` at a time; `each` may stop early with `Break`.
    pub fn for_each_in_range(
        &mut self,
        topic: &str,
        partition: u32,
        bounds: &QueryBounds,
        fetch_bytes: u32,
        mut each: impl FnMut(&FetchedRecord<'_>) -> ControlFlow<()>,
    ) -> Result<(), ClientError> {
        let mut offset = bounds.from;
        while offset < bounds.end {
            let r = self.fetch(topic, partition, offset, fetch_bytes, Duration::ZERO)?;
            if r.next_offset <= offset {
                // The range was answered durable: nothing left to read means
                // retention took it meanwhile.
                return Err(ClientError::Protocol(format!("the range's records from offset {offset} are no longer stored")));
            }
            for rec in r.records_at(offset) {
                let rec = rec?;
                if rec.offset >= bounds.end {
                    return Ok(());
                }
                if each(&rec).is_break() {
                    return Ok(());
                }
            }
            offset = r.next_offset;
        }
        Ok(())
    }
}
