//! Reading the records of a Fetch reply: each batch validated (CRC
//! included) before its records are yielded, offsets checked to follow on.
use super::{ClientError, FetchResult};
use crate::wire::batch::{self, Headers, Records};

impl FetchResult {
    /// The records at or past `from_offset`, in offset order, as
    /// `(offset, value)`. Each batch is validated (CRC included) before its
    /// records are yielded, so a damaged one yields one `Protocol` error
    /// and ends the iteration.
    pub fn records_from(&self, from_offset: u64) -> FetchedRecords<'_> {
        FetchedRecords { inner: self.records_at(from_offset) }
    }

    /// Like [`FetchResult::records_from`], with each record's timestamp,
    /// key and headers too.
    pub fn records_at(&self, from_offset: u64) -> RecordsAt<'_> {
        RecordsAt { rest: &self.batches, at_byte: 0, current: None, next_base_offset: None, from_offset, failed: false }
    }
}

/// One fetched record, borrowing its bytes from the reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FetchedRecord<'a> {
    pub offset: u64,
    /// The batch's base timestamp plus the record's delta, in ms since the epoch.
    pub timestamp_ms: i64,
    pub key: Option<&'a [u8]>,
    pub value: Option<&'a [u8]>,
    pub headers: Headers<'a>,
}

/// The iterator returned by [`FetchResult::records_from`].
#[derive(Debug, Clone)]
pub struct FetchedRecords<'a> {
    inner: RecordsAt<'a>,
}

impl<'a> Iterator for FetchedRecords<'a> {
    type Item = Result<(u64, Option<&'a [u8]>), ClientError>;

    fn next(&mut self) -> Option<Self::Item> {
        Some(self.inner.next()?.map(|r| (r.offset, r.value)))
    }
}

/// The open batch of a [`RecordsAt`].
#[derive(Debug, Clone)]
struct OpenBatch<'a> {
    records: Records<'a>,
    base_offset: u64,
    base_timestamp_ms: i64,
}

/// The iterator returned by [`FetchResult::records_at`].
#[derive(Debug, Clone)]
pub struct RecordsAt<'a> {
    /// Batches not yet opened.
    rest: &'a [u8],
    /// Where `rest` starts in the fetched bytes, for error messages.
    at_byte: usize,
    current: Option<OpenBatch<'a>>,
    /// Where the next batch must start: a partition's offsets have no gaps,
    /// so batches of one fetch follow each other exactly.
    next_base_offset: Option<u64>,
    from_offset: u64,
    /// Set after yielding an error: nothing after it can be trusted.
    failed: bool,
}

impl<'a> RecordsAt<'a> {
    /// Opens the batch at the front of `rest`, skipping it whole if it ends
    /// before `from_offset`.
    fn open_next_batch(&mut self) -> Result<(), ClientError> {
        let bad = |at: usize, why: String| ClientError::Protocol(format!("fetched batch at byte {at}: {why}"));
        let info = batch::parse_header(self.rest).map_err(|e| bad(self.at_byte, e.to_string()))?;
        let Some(bytes) = self.rest.get(..info.batch_bytes) else {
            return Err(bad(self.at_byte, format!("{} bytes long, only {} received", info.batch_bytes, self.rest.len())));
        };
        let base_offset =
            u64::try_from(info.base_offset).map_err(|_| bad(self.at_byte, format!("negative base offset {}", info.base_offset)))?;
        if let Some(expected) = self.next_base_offset.filter(|&o| o != base_offset) {
            return Err(bad(self.at_byte, format!("starts at offset {base_offset}, the batch before it ended at {}", expected - 1)));
        }
        let at_byte = self.at_byte;
        self.rest = &self.rest[info.batch_bytes..];
        self.at_byte += info.batch_bytes;
        // Checked, because the header is not validated yet: a negative
        // delta leaves the batch to fail validation below.
        let last_offset = u64::try_from(info.last_offset_delta).ok().and_then(|d| base_offset.checked_add(d));
        self.next_base_offset = last_offset.and_then(|last| last.checked_add(1));
        if last_offset.is_some_and(|last| last < self.from_offset) {
            return Ok(());
        }
        // The end-to-end check: the CRC the producer computed, verified by the reader.
        batch::validate(bytes, bytes.len()).map_err(|e| bad(at_byte, e.to_string()))?;
        self.current = Some(OpenBatch { records: batch::records(bytes), base_offset, base_timestamp_ms: info.base_timestamp_ms });
        Ok(())
    }
}

impl<'a> Iterator for RecordsAt<'a> {
    type Item = Result<FetchedRecord<'a>, ClientError>;

    fn next(&mut self) -> Option<Self::Item> {
        while !self.failed {
            if let Some(open) = &mut self.current {
                match open.records.next() {
                    Some(Ok(record)) => {
                        // The decoder holds offset_delta to the record's index, so it is >= 0.
                        let offset = open.base_offset + record.offset_delta as u64;
                        if offset >= self.from_offset {
                            return Some(Ok(FetchedRecord {
                                offset,
                                timestamp_ms: open.base_timestamp_ms.saturating_add(record.timestamp_delta_ms),
                                key: record.key,
                                value: record.value,
                                headers: record.headers,
                            }));
                        }
                        continue;
                    }
                    Some(Err(e)) => {
                        self.failed = true;
                        return Some(Err(ClientError::Protocol(format!("fetched record: {e}"))));
                    }
                    None => self.current = None,
                }
            }
            if self.rest.is_empty() {
                return None;
            }
            if let Err(e) = self.open_next_batch() {
                self.failed = true;
                return Some(Err(e));
            }
        }
        None
    }
}
