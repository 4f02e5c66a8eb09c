//! Who a connection is: its Authenticate request (or SASL exchange), the
//! gate every other request passes while authentication is on, and the
//! user a reload leaves it (docs/DEPLOY.md, Authentication).
//!
//! The user is kept on the connection, so a request costs one relaxed
//! load of the auth version and, for a topic, a match of the user's
//! permissions ([`crate::auth::check`], run by the broker on the asker's
//! core, before a command is forwarded). A reload bumps the version; each
//! connection then looks its user up again at its next request, and one
//! whose user is gone or whose token changed is unauthenticated from then on.
use std::sync::Arc;
use std::time::Instant;

use super::codec::{Codec, ConnError, ConnErrorKind};
use super::reply::Replier;
use super::task::NetCore;
use crate::auth::User;
use crate::broker::{Answer, Command, Credentials};
use crate::error::StromError;

/// Refusals logged per second per core at most; the rest are counted, and
/// said in the next line logged (a client retrying in a loop must not
/// fill the disk with log lines).
const REFUSAL_LINES_PER_S: u32 = 10;

/// Whether to log one more refusal now.
#[derive(Debug, Default)]
pub(crate) struct LogLimit {
    second: Option<Instant>,
    logged: u32,
    suppressed: u64,
}

impl LogLimit {
    /// `Some(suppressed since the last line)` when a line may be logged.
    pub(crate) fn allow(&mut self) -> Option<u64> {
        let now = Instant::now();
        if self.second.is_none_or(|s| now.duration_since(s).as_secs() >= 1) {
            self.second = Some(now);
            self.logged = 0;
        }
        if self.logged < REFUSAL_LINES_PER_S {
            self.logged += 1;
            Some(std::mem::take(&mut self.suppressed))
        } else {
            self.suppressed += 1;
            None
        }
    }
}

impl<C: Codec> NetCore<C> {
    /// Serves an Authenticate: the connection becomes the user's, or is
    /// answered `AuthFailed` and closed once that is sent.
    pub(super) fn authenticate(&mut self, slot: usize, frame_bytes: usize, ctx: C::Ctx, credentials: Credentials<'_>) {
        let ticket = self.ticket(slot, frame_bytes, 0, self.decoded_api.unwrap_or(crate::metrics::requests::API_OTHER));
        let seq = ticket.seq;
        let replier = Replier { codec: self.codec_of(slot).clone(), ctx, ticket };
        let live = self.shared.auth.clone();
        if !live.enabled() {
            // Taken unchecked: a client configured with a token works
            // against a server without authentication.
            return replier.answer(Ok(Answer::Authenticated(None)));
        }
        let version = live.version();
        let config = live.config();
        let (user, named) = match credentials {
            Credentials::Token(token) => (config.by_token(token.as_bytes()), None),
            Credentials::Plain { user, password } => (config.by_plain(user, password), Some(user)),
        };
        let (core, peer) = (self.core_id, self.conns[slot].peer.to_string());
        let c = &mut self.conns[slot];
        c.auth_version = version;
        c.user = user.clone();
        match user {
            Some(u) => {
                self.metrics.auth_successes += 1;
                tracing::info!(core, peer, user = %u.name, "a connection authenticated");
                replier.answer(Ok(Answer::Authenticated(Some(u.name.clone()))))
            }
            None => {
                c.close_after_seq = Some(seq);
                self.metrics.auth_failures += 1;
                if let Some(suppressed) = self.refusal_log.allow() {
                    // The name a SASL client gave, never the token.
                    tracing::warn!(core, peer, user = ?named.unwrap_or("(by token)"), suppressed, "authentication failed: closing the connection");
                }
                replier.answer(Err(StromError::AuthFailed.into()))
            }
        }
    }

    /// The gate a request passes before it runs: with authentication on,
    /// an unauthenticated connection may send only what its codec answers
    /// alone (Kafka's ApiVersions and SASL handshake); anything else is
    /// answered `AuthRequired` (or, for Kafka, closes the connection).
    /// Passed: the user it runs as (None: authentication is off, or the
    /// request touches nothing), and its context back.
    pub(super) fn gate(&mut self, slot: usize, frame_bytes: usize, ctx: C::Ctx, cmd: &Command<'_>) -> Option<(Option<Arc<User>>, C::Ctx)> {
        if !self.shared.auth.enabled() {
            return Some((None, ctx));
        }
        let user = self.user_of(slot);
        let answered_alone = matches!(cmd, Command::Many { commands, .. } if commands.is_empty());
        if user.is_some() || answered_alone {
            return Some((user, ctx));
        }
        self.metrics.auth_required += 1;
        if self.codec_of(slot).closes_unauthenticated() {
            // `fail_conn` logs the close, with the peer.
            let message = "a request before authenticating (SASL/PLAIN is required)".to_string();
            self.fail_conn(slot, ConnError { kind: ConnErrorKind::Unauthenticated, message });
        } else {
            if let Some(suppressed) = self.refusal_log.allow() {
                let (core, peer) = (self.core_id, self.conns[slot].peer.to_string());
                tracing::info!(core, peer, suppressed, "a request before authenticating refused (AuthRequired)");
            }
            let ticket = self.ticket(slot, frame_bytes, 0, self.decoded_api.unwrap_or(crate::metrics::requests::API_OTHER));
            Replier { codec: self.codec_of(slot).clone(), ctx, ticket }.answer(Err(StromError::AuthRequired.into()));
        }
        None
    }

    /// The connection's user now: looked up again after a reload.
    fn user_of(&mut self, slot: usize) -> Option<Arc<User>> {
        let version = self.shared.auth.version();
        let c = &mut self.conns[slot];
        if c.auth_version != version {
            let config = self.shared.auth.config();
            c.user = c.user.take().and_then(|u| config.still(&u));
            c.auth_version = version;
        }
        c.user.clone()
    }
}
