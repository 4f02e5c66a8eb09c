//! One namespace for the tokens of every op pushed on a core's ring.
//!
//! A token is what comes back in an op's completion (`user_data`): never a
//! pointer, always the op's kind, its owner and a slot in the owner's table
//! (STYLE.md habit 3). Logs, reads and the server's connections share one
//! ring, so they share this one layout, and the tick hands each completion
//! to its owner by kind alone.
//!
//! ```text
//! bit 63..56  kind   (OpKind)
//! bit 55..32  owner  (a log id, or a connection's generation)
//! bit 31..0   slot   (a commit sequence, a read slot, a connection slot)
//! ```

/// What an op is, and so who owns its completion.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[repr(u8)]
pub enum OpKind {
    /// A log's commit write: owner = log, slot = the commit's sequence.
    Write = 1,
    /// A log's fdatasync: owner = log.
    Fsync = 2,
    /// A read's disk chunk (`READ_FIXED`): owner = log, slot = the read.
    Read = 3,
    /// The block recovery writes to fence a failed log's tail, waited for in place.
    Fence = 4,
    /// A listener's multishot accept: slot = the listener's index.
    Accept = 16,
    /// A connection's one-shot readiness poll: owner = generation, slot = connection.
    Poll = 17,
    /// A receive: owner = generation, slot = connection.
    Recv = 18,
    /// A send from the heap: owner = generation, slot = connection.
    Send = 19,
    /// A send from a registered buffer (`SEND_ZC`): owner = generation, slot = connection.
    SendFixed = 20,
}

impl OpKind {
    /// Network ops belong to the server's task on the core; the rest to the core.
    pub fn is_net(self) -> bool {
        self as u8 >= OpKind::Accept as u8
    }

    fn from_u8(v: u8) -> Option<OpKind> {
        Some(match v {
            1 => OpKind::Write,
            2 => OpKind::Fsync,
            3 => OpKind::Read,
            4 => OpKind::Fence,
            16 => OpKind::Accept,
            17 => OpKind::Poll,
            18 => OpKind::Recv,
            19 => OpKind::Send,
            20 => OpKind::SendFixed,
            _ => return None,
        })
    }
}

/// Bits of [`Token::owner`]: log ids (at most 4096) and generations fit.
pub const OWNER_BITS: u32 = 24;
/// Owners are kept to [`OWNER_BITS`]; a generation wraps within it.
pub const OWNER_MASK: u32 = (1 << OWNER_BITS) - 1;

/// An op's kind, owner and slot, packed into its `user_data`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Token {
    pub kind: OpKind,
    pub owner: u32,
    pub slot: u32,
}

impl Token {
    /// A token; `owner` must fit [`OWNER_BITS`] (log ids do; generations are masked by their owner).
    pub fn new(kind: OpKind, owner: u32, slot: u32) -> Token {
        debug_assert!(owner <= OWNER_MASK, "token owner {owner} over {OWNER_BITS} bits");
        Token { kind, owner: owner & OWNER_MASK, slot }
    }

    pub fn pack(self) -> u64 {
        (self.kind as u64) << 56 | (self.owner as u64) << 32 | self.slot as u64
    }

    /// The token a completion carries. Every token was packed by [`Token::pack`],
    /// so an unknown kind is a bug in the backend, not an input: it panics.
    pub fn unpack(t: u64) -> Token {
        let kind = OpKind::from_u8((t >> 56) as u8).unwrap_or_else(|| panic!("op token {t:#x} of no known kind"));
        Token { kind, owner: ((t >> 32) as u32) & OWNER_MASK, slot: t as u32 }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Proves: every kind round-trips with the extreme owners and slots, and the kinds split into disk and network.
    #[test]
    fn tokens_round_trip() {
        let kinds = [
            OpKind::Write,
            OpKind::Fsync,
            OpKind::Read,
            OpKind::Fence,
            OpKind::Accept,
            OpKind::Poll,
            OpKind::Recv,
            OpKind::Send,
            OpKind::SendFixed,
        ];
        for kind in kinds {
            for (owner, slot) in [(0, 0), (OWNER_MASK, u32::MAX), (4095, 7)] {
                let t = Token::new(kind, owner, slot);
                assert_eq!(Token::unpack(t.pack()), t);
            }
        }
        let net: Vec<_> = kinds.iter().filter(|k| k.is_net()).collect();
        assert_eq!(net, [&OpKind::Accept, &OpKind::Poll, &OpKind::Recv, &OpKind::Send, &OpKind::SendFixed]);
    }

    // Proves: a token no backend could have packed is refused loudly.
    #[test]
    #[should_panic(expected = "of no known kind")]
    fn unknown_kind_panics() {
        Token::unpack(0x7F << 56);
    }
}
