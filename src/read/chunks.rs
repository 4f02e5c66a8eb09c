//! A read's disk chunks: the `READ_FIXED`s it has in flight and the
//! buffers they filled, in log order.
//!
//! A read that follows its partition's runs knows where its next runs lie
//! before it reaches them, so it reads several at once (up to
//! [`READS_AHEAD_MAX`], within what its answer still takes) rather than one
//! after another: a catch-up of one of many partitions, whose runs are
//! small and far apart, waits for one disk latency per handful of runs, not
//! per run. Each chunk owns its buffer from its completion until the read
//! has passed it; while in flight, the op owns it (the cursor keeps only
//! its position and size).
use std::collections::VecDeque;

use crate::buf::AlignedBuf;

/// Disk reads one read keeps in flight at most.
pub(crate) const READS_AHEAD_MAX: usize = 4;

/// Bits of a read op's token slot that name the cursor; the rest name the
/// chunk (its sequence number, wrapping).
pub(crate) const SLOT_BITS: u32 = 20;
const SLOT_MASK: u32 = (1 << SLOT_BITS) - 1;
const SEQ_MASK: u32 = (1 << (32 - SLOT_BITS)) - 1;
// A chunk's sequence must not wrap onto one still held: far more numbers than chunks.
const _: () = assert!(SEQ_MASK as usize > 4 * READS_AHEAD_MAX);

/// The token slot of chunk `seq` of the cursor in `slot`.
pub(crate) fn token_slot(slot: usize, seq: u32) -> u32 {
    assert!(slot as u32 <= SLOT_MASK, "read slot {slot} over {SLOT_BITS} bits");
    (seq & SEQ_MASK) << SLOT_BITS | slot as u32
}

/// The cursor slot and chunk sequence a read op's token slot names.
pub(crate) fn split_token_slot(t: u32) -> (usize, u32) {
    ((t & SLOT_MASK) as usize, t >> SLOT_BITS)
}

#[derive(Debug)]
pub(crate) struct Chunk {
    /// Log position of the chunk's first byte (block-aligned).
    pub pos: u64,
    /// Bytes asked of the disk.
    pub read_len: usize,
    /// The bytes read; None while the read is in flight.
    pub buf: Option<AlignedBuf>,
    /// The disk returned fewer bytes than asked: the segment ends inside.
    pub at_end: bool,
    /// The read's limit when it was pushed: bytes past it may not have been
    /// written yet, so the chunk keeps none of them (a read-ahead window
    /// handed to a later fetch, whose limit is further, must not show them).
    valid_end: u64,
    /// Read for another cursor (a window it took over, or a copy of
    /// another read's chunk): a frame that fails its checks here is read
    /// again before it is judged.
    inherited: bool,
    /// Inherited bytes that failed a check: no read looks at them again.
    distrusted: bool,
    seq: u32,
}

impl Chunk {
    /// Read for another cursor (see the field).
    pub fn inherited(&self) -> bool {
        self.inherited
    }

    /// Its sequence among its read's chunks (what its op's token names).
    pub fn seq(&self) -> u32 {
        self.seq
    }

    /// End of the bytes it holds (or will hold, while in flight).
    pub fn end_pos(&self) -> u64 {
        self.pos + self.buf.as_ref().map_or(self.read_len, |b| b.len()) as u64
    }
}

#[derive(Debug, Default)]
pub(crate) struct Chunks {
    q: VecDeque<Chunk>,
    next_seq: u32,
    in_flight: usize,
}

impl Chunks {
    pub fn in_flight(&self) -> usize {
        self.in_flight
    }

    /// Chunks holding a buffer or an op (each takes one read buffer).
    pub fn holding(&self) -> usize {
        self.q.len()
    }

    /// Bytes the newest completed chunk holds.
    pub fn last_len(&self) -> Option<usize> {
        self.q.iter().rev().find_map(|c| c.buf.as_ref()).map(|b| b.len())
    }

    /// The chunk holding log position `pos` that reaches furthest: where
    /// two overlap (a read-ahead window starts its next chunk at the frame
    /// the last one cut), a frame cut by one is whole in the other.
    pub fn covering(&self, pos: u64) -> Option<&Chunk> {
        self.q.iter().filter(|c| !c.distrusted && c.pos <= pos && pos < c.end_pos()).max_by_key(|c| c.end_pos())
    }

    /// Marks every chunk as read for another cursor (this one takes them over).
    pub fn inherit_all(&mut self) {
        self.q.iter_mut().for_each(|c| c.inherited = true);
    }

    /// Marks chunk `seq` as read for another cursor.
    pub fn inherit(&mut self, seq: u32) {
        self.q.iter_mut().filter(|c| c.seq == seq).for_each(|c| c.inherited = true);
    }

    /// When the chunk holding `pos` was read for another cursor: stops
    /// trusting it (true), so that the bytes are read again.
    pub fn distrust_inherited(&mut self, pos: u64) -> bool {
        let Some(i) = self
            .q
            .iter()
            .enumerate()
            .filter(|(_, c)| !c.distrusted && c.pos <= pos && pos < c.end_pos())
            .max_by_key(|(_, c)| c.end_pos())
            .map(|(i, _)| i)
        else {
            return false;
        };
        let c = &mut self.q[i];
        c.distrusted = c.inherited && c.buf.is_some();
        c.distrusted
    }

    /// The start of the first chunk past `pos`: a read for `pos` need not go further.
    pub fn next_after(&self, pos: u64) -> Option<u64> {
        self.q.iter().map(|c| c.pos).filter(|&p| p > pos).min()
    }

    /// The end of the chunks planned so far.
    pub fn planned_end(&self) -> Option<u64> {
        self.q.iter().map(|c| c.pos + c.read_len as u64).max()
    }

    /// A read of `read_len` bytes at `pos` was pushed, by a read that looks
    /// at nothing at or past `valid_end`: its sequence.
    pub fn push_in_flight(&mut self, pos: u64, read_len: usize, valid_end: u64) -> u32 {
        let seq = self.next_seq & SEQ_MASK;
        self.next_seq = self.next_seq.wrapping_add(1);
        self.q.push_back(Chunk { pos, read_len, buf: None, at_end: false, valid_end, inherited: false, distrusted: false, seq });
        self.in_flight += 1;
        seq
    }

    /// The position of chunk `seq`, in flight, and where the bytes it may
    /// keep end (what it asked of the disk, within its limit).
    pub fn span_of(&self, seq: u32) -> (u64, u64) {
        let c = self.q.iter().find(|c| c.seq == seq).expect("a completion of a chunk in flight");
        (c.pos, (c.pos + c.read_len as u64).min(c.valid_end))
    }

    /// Chunk `seq` completed with `buf` (None: it failed, and is forgotten).
    pub fn complete(&mut self, seq: u32, buf: Option<AlignedBuf>) {
        let i = self.q.iter().position(|c| c.seq == seq).expect("a completion of a chunk in flight");
        self.in_flight -= 1;
        match buf {
            Some(mut b) => {
                let c = &mut self.q[i];
                c.at_end = b.len() < c.read_len;
                b.set_len(b.len().min(c.valid_end.saturating_sub(c.pos) as usize));
                c.buf = Some(b);
            }
            None => {
                self.q.remove(i);
            }
        }
    }

    /// Takes the buffers of completed chunks a read at `pos` needing
    /// `need_bytes` cannot use: those ending by `pos + need_bytes` (passed,
    /// or too short for the frame there).
    pub fn take_spent(&mut self, pos: u64, need_bytes: usize) -> Vec<AlignedBuf> {
        let mut spent = Vec::new();
        self.q.retain_mut(|c| {
            let done = c.buf.is_some() && (c.distrusted || c.end_pos() <= pos + need_bytes as u64);
            if done {
                spent.extend(c.buf.take());
            }
            !done
        });
        spent
    }

    /// Bytes the chunks hold (or are reading) from log position `pos` on.
    pub fn bytes_from(&self, pos: u64) -> u64 {
        self.q.iter().map(|c| c.end_pos().saturating_sub(c.pos.max(pos))).sum()
    }

    /// Bytes of the completed chunks, and of the reads in flight.
    pub fn bytes(&self) -> u64 {
        self.q.iter().map(|c| c.end_pos() - c.pos).sum()
    }

    /// Takes the buffers of every completed chunk (the read is over).
    pub fn take_done(&mut self) -> Vec<AlignedBuf> {
        let mut done = Vec::new();
        self.q.retain_mut(|c| match c.buf.take() {
            Some(b) => {
                done.push(b);
                false
            }
            None => true,
        });
        done
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Proves: token slots round-trip, a chunk covers its bytes (asked while
    // in flight, returned once done), and spent chunks give their buffers
    // back while later ones stay.
    #[test]
    fn chunks_cover_their_bytes_and_give_back_what_is_spent() {
        assert_eq!(split_token_slot(token_slot(63, 5)), (63, 5));
        let mut cs = Chunks::default();
        let a = cs.push_in_flight(0, 8192, u64::MAX);
        let b = cs.push_in_flight(65536, 4096, u64::MAX);
        assert_eq!((cs.in_flight(), cs.holding()), (2, 2));
        assert!(cs.covering(100).is_some_and(|c| c.buf.is_none()));
        assert_eq!(cs.next_after(100), Some(65536));
        let mut buf = AlignedBuf::new(8192);
        buf.set_len(4096);
        cs.complete(a, Some(buf));
        assert!(cs.covering(4096).is_none(), "a short read holds what it returned");
        assert!(cs.covering(100).is_some_and(|c| c.at_end));
        assert_eq!(cs.take_spent(4096, 61).len(), 1);
        cs.complete(b, None);
        assert_eq!((cs.in_flight(), cs.holding(), cs.planned_end()), (0, 0, None));
        let c = cs.push_in_flight(8192, 8192, 10_000);
        let mut buf = AlignedBuf::new(8192);
        buf.set_len(8192);
        cs.complete(c, Some(buf));
        assert!(cs.covering(9_999).is_some() && cs.covering(10_000).is_none(), "nothing past the limit it was read under");
        assert!(!cs.covering(9_999).unwrap().at_end, "the segment goes on past the limit");
    }
}
