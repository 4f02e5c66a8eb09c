//! The op tokens of the server's network ops: what a completion says about
//! the op it ends. The top byte is the core's mark for "network" (the core
//! hands such completions to its task); then the op's kind, the
//! connection's generation, and its slot (or a listener's index).
use crate::io::TOKEN_KIND_NET;

pub(super) const KIND_ACCEPT: u64 = 1;
pub(super) const KIND_POLL: u64 = 2;
pub(super) const KIND_RECV: u64 = 3;
pub(super) const KIND_SEND: u64 = 4;
pub(super) const KIND_SEND_FIXED: u64 = 5;
/// Generations are kept to 20 bits in a token (kind 4 bits, slot 32 bits).
pub(super) const GENERATION_MASK: u32 = 0xF_FFFF;

pub(super) fn token(kind: u64, generation: u32, slot: usize) -> u64 {
    TOKEN_KIND_NET << 56 | kind << 52 | ((generation & GENERATION_MASK) as u64) << 32 | slot as u64
}

/// The kind, generation and slot a token was made of.
pub(super) fn untoken(t: u64) -> (u64, u32, usize) {
    ((t >> 52) & 0xF, ((t >> 32) as u32) & GENERATION_MASK, (t & u32::MAX as u64) as usize)
}
