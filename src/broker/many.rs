//! [`Command::Many`](super::Command::Many): several commands of one
//! request run at once, their replies gathered and answered together.
//!
//! Each command's reply lands in its slot, on whichever thread answered
//! it; the last one in sends [`Answer::Many`]. Fetches among them may be
//! parked as long polls: once the answers so far hold `release_at_bytes`
//! of batches (Kafka's `min_bytes`), the gather sets the request's release
//! flag and rings the cores of its Fetches, whose parked polls then answer
//! at once with what they hold ([`crate::read::ReadSink::release_flag`]),
//! so one partition's data is not held back by another's wait.
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use super::command::{Answer, BrokerError, Responder};
use crate::core::mailbox::CoreRoute;

/// The replies of one [`Command::Many`](super::Command::Many) so far.
pub(crate) struct Gather {
    state: Mutex<State>,
    /// Set once the Fetches should stop waiting (and when the last reply
    /// is in, so that no core keeps the flag among its parked polls).
    pub released: Arc<AtomicBool>,
    release_at_bytes: Option<usize>,
    /// The cores of the request's Fetches, rung when they are released.
    fetch_cores: Vec<CoreRoute>,
}

struct State {
    replies: Vec<Option<Result<Answer, BrokerError>>>,
    left: usize,
    batch_bytes: usize,
    reply: Option<Responder>,
}

impl Gather {
    pub(crate) fn new(n: usize, release_at_bytes: Option<usize>, fetch_cores: Vec<CoreRoute>, reply: Responder) -> Arc<Gather> {
        Arc::new(Gather {
            state: Mutex::new(State { replies: (0..n).map(|_| None).collect(), left: n, batch_bytes: 0, reply: Some(reply) }),
            released: Arc::new(AtomicBool::new(false)),
            release_at_bytes,
            fetch_cores,
        })
    }

    /// The reply of command `i`. Called once per command.
    pub(crate) fn put(&self, i: usize, reply: Result<Answer, BrokerError>) {
        let mut release = false;
        let done = {
            let mut s = self.state.lock().expect("gather lock");
            if let Ok(Answer::Fetched(f)) = &reply {
                s.batch_bytes += f.bytes.len() - f.headroom;
                release = self.release_at_bytes.is_some_and(|at| s.batch_bytes >= at.max(1));
            }
            debug_assert!(s.replies[i].is_none(), "a command of a Many answered twice");
            s.replies[i] = Some(reply);
            s.left -= 1;
            (s.left == 0).then(|| (s.reply.take(), std::mem::take(&mut s.replies)))
        };
        if done.is_some() {
            // Nothing waits any more: no core need keep the flag.
            self.released.store(true, Ordering::Relaxed);
        } else if release && !self.released.swap(true, Ordering::Relaxed) {
            for core in &self.fetch_cores {
                core.ring();
            }
        }
        if let Some((Some(reply), replies)) = done {
            reply(Ok(Answer::Many(replies.into_iter().map(|r| r.expect("every command answered")).collect())));
        }
    }
}
