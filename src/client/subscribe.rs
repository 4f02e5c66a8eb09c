//! Subscriptions: the server pushes a partition's batches as they become
//! durable, never past the credit this side granted. A [`Subscription`]
//! is an iterator of pushes that grants the bytes of each push back once
//! the caller asks for the next one, so a caller that stops consuming
//! stops the server sending (docs/PROTOCOL.md, "15 Subscribe").
use super::{Client, ClientError, FetchResult, OwnedResponse};
use crate::proto::{Api, ErrorCode, Request, SubscribeStart};

/// One push of a subscription: whole batches from `from_offset` (the first
/// may begin before it) up to `fetch.next_offset`. `fetch.start_offset`
/// holds `from_offset` (a push does not carry the partition's start), so
/// `fetch.records_from(from_offset)` reads its records.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Push {
    pub from_offset: u64,
    pub fetch: FetchResult,
}

impl Push {
    /// Bytes of batches it carries: what it took of the credit.
    pub fn batch_bytes(&self) -> u64 {
        self.fetch.batches.len() as u64
    }
}

/// A subscription in progress; it borrows its client, whose other replies
/// (none, unless the caller pipelined) are kept for [`Client::recv`].
#[derive(Debug)]
pub struct Subscription<'a> {
    client: &'a mut Client,
    request_id: u64,
    /// Pushed bytes handed to the caller and not yet granted back.
    consumed_bytes: u64,
    /// Granted back once this many are consumed: half the window, so the
    /// server has credit left while the grant travels.
    grant_at_bytes: u64,
    ended: bool,
}

impl Client {
    /// Subscribes to a partition from `start`, granting `credit_bytes` of
    /// pushes at first and then, as they are consumed, what they took. A
    /// credit of at least the server's `batch_bytes_max` (ServerInfo) is
    /// never overrun; a smaller one is, by at most one batch. The first
    /// push answers at once and may be empty: it says where the
    /// subscription starts. Waits without a timeout: set one with
    /// [`Client::set_timeout`] to bound each wait for a push.
    pub fn subscribe(
        &mut self,
        topic: &str,
        partition: u32,
        start: SubscribeStart<'_>,
        credit_bytes: u64,
    ) -> Result<Subscription<'_>, ClientError> {
        let request_id = self.send(&Request::Subscribe { topic, partition, credit_bytes, start })?;
        Ok(Subscription { client: self, request_id, consumed_bytes: 0, grant_at_bytes: (credit_bytes / 2).max(1), ended: false })
    }
}

impl Subscription<'_> {
    /// The Subscribe's request id, which its pushes carry.
    pub fn request_id(&self) -> u64 {
        self.request_id
    }

    /// The next push; `None` once the subscription ended by a cancel. Any
    /// other end (the topic deleted, the server stopping) is an error.
    pub fn next_push(&mut self) -> Result<Option<Push>, ClientError> {
        if self.ended {
            return Ok(None);
        }
        if self.consumed_bytes >= self.grant_at_bytes {
            let bytes = std::mem::take(&mut self.consumed_bytes);
            self.client.send(&Request::Grant { subscription: self.request_id, bytes })?;
        }
        loop {
            let reply = self.client.read_reply()?;
            if reply.request_id != self.request_id {
                self.client.stashed.push_back(reply);
                continue;
            }
            return match reply.result {
                Ok(OwnedResponse::Subscribe(push)) => {
                    self.consumed_bytes += push.batch_bytes();
                    Ok(Some(push))
                }
                Ok(other) => Err(super::unexpected(Api::Subscribe, &other)),
                Err(ClientError::Server { code: ErrorCode::Cancelled, .. }) => {
                    self.ended = true;
                    Ok(None)
                }
                Err(e) => {
                    self.ended = true;
                    Err(e)
                }
            };
        }
    }

    /// Cancels the subscription and waits for its end; pushes that were
    /// already on their way are dropped.
    pub fn cancel(mut self) -> Result<(), ClientError> {
        if self.ended {
            return Ok(());
        }
        let cancel_id = self.client.send(&Request::Cancel { request: self.request_id })?;
        let mut cancelled = false;
        while !(cancelled && self.ended) {
            let reply = self.client.read_reply()?;
            match reply.request_id {
                id if id == cancel_id => {
                    reply.result?;
                    cancelled = true;
                }
                id if id == self.request_id => self.ended = reply.result.is_err(),
                _ => self.client.stashed.push_back(reply),
            }
        }
        Ok(())
    }
}

impl Iterator for Subscription<'_> {
    type Item = Result<Push, ClientError>;

    fn next(&mut self) -> Option<Self::Item> {
        self.next_push().transpose()
    }
}
