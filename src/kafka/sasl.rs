//! SASL/PLAIN on the Kafka listener (KIP-43, KIP-152): SaslHandshake names
//! the mechanism, then the client's PLAIN token (`authzid NUL user NUL
//! password`, RFC 4616) comes in a SaslAuthenticate request (handshake
//! version 1) or as a bare length-prefixed frame (version 0, as clients
//! before Kafka 1.0 send it). The user and password are checked by the
//! server's connection code against the `[auth]` users
//! ([`crate::auth::AuthConfig::by_plain`]); the token is the password.
//!
//! With authentication on, nothing but ApiVersions and these two is served
//! before the client authenticated; anything else closes the connection
//! with a log line, as Kafka's broker does. With it off, a SaslHandshake
//! is answered ILLEGAL_SASL_STATE (the listener is plaintext).
use kafka_protocol::ResponseError as K;
use kafka_protocol::messages::{SaslAuthenticateRequest, SaslAuthenticateResponse, SaslHandshakeRequest, SaslHandshakeResponse};
use kafka_protocol::protocol::StrBytes;

use super::codec::{Base, KafkaCtx, Shape, close, frame, nothing};
use crate::broker::{Answer, BrokerError, Command, Credentials};
use crate::server::codec::{ConnState, Refusal};

/// The only mechanism served.
const PLAIN: &str = "PLAIN";
/// [`ConnState`] bits: a PLAIN handshake was answered; and it was version
/// 0, so the next frame is the bare token.
const HANDSHAKEN: u8 = 1;
const RAW_NEXT: u8 = 2;
/// Longest PLAIN token taken (RFC 4616 allows 255 bytes per field).
const TOKEN_BYTES_MAX: usize = 3 * 256;

/// Whether the next frame of the connection is a bare SASL token.
pub(crate) fn raw_next(state: ConnState) -> bool {
    state.0 & RAW_NEXT != 0
}

pub(crate) fn handshake(
    base: Base,
    r: SaslHandshakeRequest,
    auth_on: bool,
    state: &mut ConnState,
    run: &mut dyn FnMut(KafkaCtx, Command<'_>),
) {
    let error = if !auth_on {
        K::IllegalSaslState.code()
    } else if r.mechanism.as_str() != PLAIN {
        K::UnsupportedSaslMechanism.code()
    } else {
        state.0 |= HANDSHAKEN | if base.version == 0 { RAW_NEXT } else { 0 };
        0
    };
    run(base.ctx(Shape::SaslHandshake { error }), nothing());
}

pub(crate) fn handshake_response(ctx: &KafkaCtx, error: i16) -> Vec<u8> {
    let mechanisms = vec![StrBytes::from_static_str(PLAIN)];
    frame(ctx, &SaslHandshakeResponse::default().with_error_code(error).with_mechanisms(mechanisms))
}

pub(crate) fn authenticate(
    base: Base,
    r: SaslAuthenticateRequest,
    state: &mut ConnState,
    run: &mut dyn FnMut(KafkaCtx, Command<'_>),
) -> Result<(), Refusal> {
    if state.0 & HANDSHAKEN == 0 || raw_next(*state) {
        return Err(close("a SaslAuthenticate without a SaslHandshake version 1 naming PLAIN before it".into()));
    }
    let credentials = plain(&r.auth_bytes)?;
    run(base.ctx(Shape::SaslAuthenticate), Command::Authenticate { credentials });
    Ok(())
}

/// A version 0 handshake's bare token: the frame after its length.
pub(crate) fn raw_token(frame: &[u8], state: &mut ConnState, run: &mut dyn FnMut(KafkaCtx, Command<'_>)) -> Result<(), Refusal> {
    state.0 &= !RAW_NEXT;
    let credentials = plain(&frame[4..])?;
    let base = Base { key: kafka_protocol::messages::ApiKey::SaslAuthenticate, version: 0, correlation_id: 0 };
    run(base.ctx(Shape::SaslRaw), Command::Authenticate { credentials });
    Ok(())
}

/// `authzid NUL authcid NUL password`: the user is authcid; an authzid,
/// if given, must be the same user (acting as another is not served).
fn plain(token: &[u8]) -> Result<Credentials<'_>, Refusal> {
    if token.len() > TOKEN_BYTES_MAX {
        return Err(close(format!("a SASL/PLAIN token of {} bytes, over {TOKEN_BYTES_MAX}", token.len())));
    }
    let mut parts = token.splitn(3, |&b| b == 0);
    let (Some(authzid), Some(user), Some(password)) = (parts.next(), parts.next(), parts.next()) else {
        return Err(close("a SASL/PLAIN token that is not authzid NUL user NUL password".into()));
    };
    let user = std::str::from_utf8(user).map_err(|_| close("a SASL/PLAIN user name that is not UTF-8".into()))?;
    if !authzid.is_empty() && authzid != user.as_bytes() {
        return Err(close(format!("a SASL/PLAIN token authorizing as another user than {user:?}, which is not served")));
    }
    Ok(Credentials::Plain { user, password })
}

/// The answer to an authentication: SaslAuthenticate's response, or a
/// version 0 token's (a bare, empty server token on success; nothing on
/// failure: the connection closes, as Kafka's does).
pub(crate) fn authenticate_response(ctx: &KafkaCtx, reply: Result<Answer, BrokerError>) -> Vec<u8> {
    match (&ctx.shape, reply) {
        (Shape::SaslRaw, Ok(_)) => 0u32.to_be_bytes().to_vec(),
        (Shape::SaslRaw, Err(_)) => Vec::new(),
        (_, Ok(_)) => frame(ctx, &SaslAuthenticateResponse::default()),
        (_, Err(e)) => {
            let r = SaslAuthenticateResponse::default()
                .with_error_code(super::errors::code(&e))
                .with_error_message(Some(StrBytes::from_string(super::errors::message(&e))));
            frame(ctx, &r)
        }
    }
}
