//! The answers to a produce of several batches, gathered into one reply.
use std::sync::{Arc, Mutex};

use super::command::BrokerError;
use crate::core::AppendAck;
use crate::error::{Result, StromError};
use crate::stats::StageTrace;

/// Gathers the answers to the appends of one produce; the last to arrive
/// sends the one reply.
pub(super) struct ProduceAcc<R> {
    remaining: usize,
    first: Option<u64>,
    last: u64,
    /// The request crosses each stage boundary when its last batch does.
    trace: Option<StageTrace>,
    err: Option<StromError>,
    reply: Option<R>,
}

impl<R: FnOnce(std::result::Result<AppendAck, BrokerError>) + Send + 'static> ProduceAcc<R> {
    pub(super) fn shared(batches: usize, reply: R) -> Arc<Mutex<ProduceAcc<R>>> {
        Arc::new(Mutex::new(ProduceAcc { remaining: batches, first: None, last: 0, trace: None, err: None, reply: Some(reply) }))
    }

    pub(super) fn add(&mut self, res: Result<AppendAck>) {
        match res {
            Ok(a) => {
                self.first.get_or_insert(a.base_offset);
                self.last = self.last.max(a.last_offset);
                self.trace = Some(self.trace.map_or(a.trace, |t| t.join(a.trace)));
            }
            Err(e) => {
                self.err.get_or_insert(e);
            }
        }
        self.remaining -= 1;
        if self.remaining == 0
            && let Some(reply) = self.reply.take()
        {
            reply(self.outcome());
        }
    }

    fn outcome(&mut self) -> std::result::Result<AppendAck, BrokerError> {
        match (self.err.take(), self.first) {
            // Some batches were stored, others refused (the disk filled
            // between them, the log rewound over the rest): DiskFull
            // would claim none was, so the answer is indeterminate.
            (Some(e @ StromError::DiskFull { .. }), Some(_)) => {
                Err(BrokerError::StorageFailed(format!("only part of this produce was stored: {e}")))
            }
            (Some(e), _) => Err(BrokerError::Failed(e)),
            (None, Some(base_offset)) => Ok(AppendAck { base_offset, last_offset: self.last, trace: self.trace.unwrap_or_default() }),
            (None, None) => Err(BrokerError::Internal("no batch answered")),
        }
    }
}
