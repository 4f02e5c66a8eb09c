//! Requests on their way from one core to another core's mailbox.
//!
//! A core thread never blocks on another core's mailbox (two cores could
//! then wait for each other): a request that finds the mailbox full waits
//! here, in order, and so does every later one, until there is room. While
//! anything waits, the core's connections stop reading (the push back
//! reaches the clients).
use std::collections::VecDeque;

use crate::core::Request;
use crate::core::mailbox::CoreRoute;
use crate::error::StromError;

/// How soon a request waiting for room in another core's mailbox is retried.
pub const OUTBOX_RETRY_NS: u64 = 100_000;

/// Requests for other cores whose mailbox was full, in order.
#[derive(Default)]
pub(crate) struct Outbox {
    waiting: VecDeque<(usize, Request)>,
}

impl Outbox {
    /// True while requests wait for room.
    pub(crate) fn is_waiting(&self) -> bool {
        !self.waiting.is_empty()
    }

    /// Sends `req` to core `target`, behind anything already waiting.
    pub(crate) fn send(&mut self, route: &CoreRoute, target: usize, req: Request) {
        if self.is_waiting() {
            return self.waiting.push_back((target, req));
        }
        match route.try_send(req) {
            Ok(()) => {}
            Err((req, true)) => self.waiting.push_back((target, req)),
            Err((req, false)) => req.refuse(StromError::ShuttingDown),
        }
    }

    /// Sends what waits, in order, until a mailbox is full again.
    pub(crate) fn flush<'a>(&mut self, route: impl Fn(usize) -> &'a CoreRoute) {
        while let Some((target, req)) = self.waiting.pop_front() {
            match route(target).try_send(req) {
                Ok(()) => {}
                Err((req, true)) => {
                    self.waiting.push_front((target, req));
                    return;
                }
                Err((req, false)) => req.refuse(StromError::ShuttingDown),
            }
        }
    }
}
