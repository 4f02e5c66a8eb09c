//! One scan for several readers of the same log bytes.
//!
//! Readers catching up on the same partition from about the same place (a
//! topic's consumer groups after a restart, a fanout that fell behind)
//! would each read the same bytes from disk. Before a read's cursor asks
//! the disk for the frame it stands on, it looks at the other live reads
//! of its log (fetches and read-ahead windows, not reads already answered
//! and only draining their disk reads): a chunk of theirs holding that
//! frame whole is copied into a read buffer of its own (a memory copy
//! instead of a disk read), and a chunk of theirs still being read that
//! will hold it is waited for: the cursor follows that read and looks
//! again when it completes, before its owner goes on (so the chunk is
//! still there). If the read failed, or came back short, the follower
//! reads for itself. A follower holds no buffer while it waits; each
//! cursor follows at most one read, so the followers are bounded by the
//! cursors. Copied bytes count in `strom_read_shared_bytes_total`, not in
//! the disk's bytes.
//!
//! The copy keeps only bytes the follower may see: its own chunk is kept
//! under its own limit (`chunks::Chunk::valid_end`), and the source's
//! bytes are all below the source's limit, where a log position never
//! holds other bytes later. Two readers that end a fetch at the same
//! offset leave one window between them ([`super::ahead`]): the first to
//! ask again takes it, the second follows or copies its reads.
use super::chunks::Chunk;
use super::cursor::ReadMode;
use super::view::LogView;
use super::{ReadCx, ReadPath};
use crate::buf::AlignedBuf;
use crate::io::Io;

/// What a read found among the other reads of its log.
pub(super) enum Shared {
    /// A copy of the bytes it needs is now one of its chunks.
    Copied,
    /// It follows a read in flight that will hold them (its buffer back).
    Following(AlignedBuf),
    /// Nothing to share: it reads for itself (its buffer back).
    No(AlignedBuf),
}

/// Cursors waiting for another cursor's chunk: (source slot, chunk
/// sequence, follower slot).
#[derive(Debug, Default)]
pub(crate) struct Followers {
    waiting: Vec<(usize, u32, usize)>,
}

impl Followers {
    /// `follower` waits for chunk `source.1` of the cursor in `source.0`
    /// (instead of any read it followed before: a cursor follows one).
    fn add(&mut self, source: (usize, u32), follower: usize) {
        self.waiting.retain(|w| w.2 != follower);
        self.waiting.push((source.0, source.1, follower));
    }

    /// Takes out the followers of chunk `seq` of the cursor in `slot`.
    fn take(&mut self, slot: usize, seq: u32) -> Vec<usize> {
        let mut woken = Vec::new();
        self.waiting.retain(|&(s, q, f)| {
            let hit = s == slot && q == seq;
            if hit {
                woken.push(f);
            }
            !hit
        });
        woken
    }

    pub fn len(&self) -> usize {
        self.waiting.len()
    }
}

impl ReadPath {
    /// Looks for the bytes the read in `slot` needs at its position
    /// (`need_bytes` of them, in a read of log position `pos` up to
    /// `end`) among the other live reads of its log.
    pub(super) fn share(&mut self, slot: usize, (pos, end): (u64, u64), need_bytes: usize, mut buf: AlignedBuf) -> Shared {
        let c = &self.cursors[slot];
        if self.unshared || c.reread {
            return Shared::No(buf);
        }
        let (log, at) = (c.log, c.pos);
        let need_end = at + need_bytes as u64;
        let mut found = None;
        for (s, other) in self.cursors.iter() {
            if s == slot || other.log != log || other.spent || matches!(other.mode, ReadMode::Spent) {
                continue;
            }
            if let Some(k) = other.chunks.covering(at).filter(|k| k.end_pos() >= need_end) {
                found = Some((s, k.seq(), k.buf.is_some()));
                if k.buf.is_some() {
                    break;
                }
            }
        }
        let Some((source, seq, done)) = found else { return Shared::No(buf) };
        if !done {
            self.followers.add((source, seq), slot);
            return Shared::Following(buf);
        }
        let k: &Chunk = self.cursors[source].chunks.covering(at).expect("the chunk just found");
        let from = pos.max(k.pos);
        let to = end.min(k.end_pos()).min(from + buf.capacity() as u64);
        let src = k.buf.as_ref().expect("a completed chunk");
        buf.set_len(0);
        buf.extend_from_slice(&src.as_slice()[(from - k.pos) as usize..(to - k.pos) as usize]);
        let copied = buf.len();
        let c = &mut self.cursors[slot];
        let seq = c.chunks.push_in_flight(from, copied, c.limit);
        c.chunks.complete(seq, Some(buf));
        c.chunks.inherit(seq);
        self.metrics.shared_bytes += copied as u64;
        Shared::Copied
    }

    /// Lets the reads that followed chunk `seq` of the cursor in `slot`
    /// look again (it completed, failed, or was dropped).
    pub(super) fn wake_followers<I: Io, V: LogView>(&mut self, cx: &mut ReadCx<'_, I, V>, slot: usize, seq: u32) {
        if self.followers.len() == 0 {
            return;
        }
        for f in self.followers.take(slot, seq) {
            if self
                .cursors
                .get(f)
                .is_some_and(|c| !c.spent && matches!(c.mode, ReadMode::Fetch { .. } | ReadMode::Time { .. } | ReadMode::Index { .. }))
            {
                self.advance(cx, f);
            }
        }
    }
}
