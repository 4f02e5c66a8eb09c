//! The commit policy, on the simulated disk: when a commit is sealed, how
//! large a write in flight may be, and how fdatasync rounds overlap. Every
//! assertion is on sizes, counts and order, never on time.
use std::collections::VecDeque;
use std::path::Path;

use super::*;
use crate::buf::BLOCK_BYTES;
use crate::io::Completion;
use crate::io::sim::{SimDisk, SimFaults, SimIo, SimRng};

const BUF_BYTES: usize = 256 << 10;

fn limits(commit_bytes_max: usize, fsync_depth: usize) -> JournalLimits {
    JournalLimits {
        policy: FsyncPolicy::Always,
        write_buf_bytes: BUF_BYTES,
        write_bufs: 8,
        write_depth: 2,
        commit_bytes_max,
        fsync_depth,
        segment_bytes: 64 << 20,
    }
}

fn journal(l: JournalLimits) -> (SimIo, Journal<u64>) {
    let io = SimIo::new(SimDisk::new(), 11, SimFaults::default());
    let bufs = (0..l.write_bufs).map(|_| AlignedBuf::new(l.write_buf_bytes)).collect();
    let state = OpenState { segments: VecDeque::new(), epoch: 1, end_pos: 0, log_start: 0 };
    let j = Journal::new(0, Path::new("/log"), l, state, bufs, 0);
    (io, j)
}

/// Stages one frame with a payload of `bytes` and attaches an ack carrying
/// `id`; false when every buffer is taken (the core would push back).
fn try_append(io: &mut SimIo, j: &mut Journal<u64>, bytes: usize, id: u64) -> bool {
    match j.stage(io, 0, bytes, |dst| dst.fill(7)) {
        Ok(_) => {
            j.attach(PendingAck { pid: 0, base_offset: id, end_offset: id + 1, max_ts_ms: 0, reply: id });
            true
        }
        Err(StageError::NoBuffer) => false,
        Err(e) => panic!("stage failed: {e:?}"),
    }
}

fn append(io: &mut SimIo, j: &mut Journal<u64>, bytes: usize, id: u64) {
    assert!(try_append(io, j, bytes, id), "a buffer was free");
}

/// Waits for every op in flight and returns their completions, undelivered.
fn reap_all(io: &mut SimIo) -> Vec<Completion> {
    let mut out = Vec::new();
    while io.in_flight() > 0 {
        io.wait(1, None).expect("sim wait");
        io.reap(&mut out);
    }
    out
}

fn deliver(j: &mut Journal<u64>, c: Completion) {
    let t = Token::unpack(c.token);
    j.on_completion(t.kind, t.slot, c.result, c.buf, 0);
    j.invariants();
}

/// Sizes of the writes in flight, oldest first.
fn writes_in_flight(j: &Journal<u64>) -> Vec<u64> {
    j.writing.iter().filter(|c| c.write_in_flight).map(|c| c.end_pos - c.start_pos).collect()
}

fn retired(j: &mut Journal<u64>) -> Vec<u64> {
    let mut acks = Vec::new();
    j.take_retired(&mut acks);
    acks.into_iter().map(|a| a.reply).collect()
}

#[test]
fn a_lone_request_is_sealed_and_written_at_once() {
    // Proves: on an idle log, one small frame is sealed and its write pushed by the very next plan (no timer, no
    // waiting for a second request), and its fdatasync follows its write's completion at once.
    let (mut io, mut j) = journal(limits(BUF_BYTES, 2));
    append(&mut io, &mut j, 100, 1);
    j.plan(&mut io);
    assert_eq!(writes_in_flight(&j), [BLOCK_BYTES as u64], "one block-padded write, sent at once");
    assert!(j.staging.is_none() && j.sealed.is_empty());
    for c in reap_all(&mut io) {
        deliver(&mut j, c);
    }
    j.plan(&mut io);
    assert_eq!(j.fsync_rounds.len(), 1, "the fdatasync is due as soon as the write completed");
    for c in reap_all(&mut io) {
        deliver(&mut j, c);
    }
    assert_eq!(retired(&mut j), [1]);
    assert_eq!((j.metrics.writes, j.metrics.fsyncs), (1, 1));
}

#[test]
fn commits_grow_while_the_disk_is_busy() {
    // Proves: while both write slots are busy, frames join one filling commit (the group commit) instead of
    // queueing one write each; it goes out as one write when a slot frees.
    let (mut io, mut j) = journal(limits(BUF_BYTES, 2));
    for id in 0..2 {
        append(&mut io, &mut j, 100, id);
        j.plan(&mut io);
    }
    assert_eq!(writes_in_flight(&j).len(), 2, "two lone frames, two writes: the slots are full");
    for id in 2..52 {
        append(&mut io, &mut j, 1000, id);
        j.plan(&mut io);
    }
    assert_eq!(writes_in_flight(&j).len(), 2, "no slot: nothing more is written");
    assert!(j.sealed.is_empty(), "the fifty frames fill one commit, not fifty");
    while j.writes_in_flight > 0 || j.has_pending() {
        for c in reap_all(&mut io) {
            deliver(&mut j, c);
        }
        j.plan(&mut io);
    }
    assert_eq!(j.metrics.writes, 3, "two lone writes and one grown commit");
    assert_eq!(retired(&mut j), (0..52).collect::<Vec<_>>(), "acknowledged in order");
}

#[test]
fn no_write_in_flight_exceeds_the_commit_cap() {
    // Proves: under a random load, every write in flight holds at most commit_bytes_max (a commit is sealed at the
    // cap even while the slots are busy and waits in order), except a lone frame larger than the cap, which is
    // written alone; commits still grow past one frame; every ack retires, in order.
    let cap = 64 << 10;
    let (mut io, mut j) = journal(limits(cap, 2));
    let mut rng = SimRng::new(5);
    let (mut next_id, mut grown, mut pending) = (0u64, false, Vec::new());
    for step in 0..400 {
        for _ in 0..rng.below(8) {
            let bytes = if step % 97 == 0 { 100 << 10 } else { 1 + rng.below(20 << 10) as usize };
            if !try_append(&mut io, &mut j, bytes, next_id) {
                break;
            }
            next_id += 1;
        }
        j.plan(&mut io);
        for (w, c) in writes_in_flight(&j).into_iter().zip(j.writing.iter().filter(|c| c.write_in_flight)) {
            assert!(w <= cap as u64 || c.acks.len() == 1, "a write of {w} bytes holds {} frames", c.acks.len());
            grown |= c.acks.len() > 1;
        }
        // Two slots, each at most the cap or one lone oversized frame.
        let largest_write = align_up((HEADER_BYTES + (100 << 10)) as u64).max(cap as u64);
        assert!(j.write_bytes_in_flight() <= 2 * largest_write);
        pending.extend(reap_all(&mut io));
        // Deliver a random part of what completed, so writes and rounds overlap.
        let keep = rng.below(pending.len() as u64 + 1) as usize;
        for c in pending.split_off(keep) {
            deliver(&mut j, c);
        }
    }
    while j.writes_in_flight > 0 || j.fsyncs_in_flight > 0 || j.has_pending() {
        for c in pending.drain(..).chain(reap_all(&mut io)).collect::<Vec<_>>() {
            deliver(&mut j, c);
        }
        j.plan(&mut io);
    }
    assert!(grown, "some write carried more than one frame");
    assert_eq!(retired(&mut j), (0..next_id).collect::<Vec<_>>());
}

/// Two commits written, the first one's round in flight, the second's
/// write completed: what the second plan does depends on `fsync_depth`.
fn second_round_setup(fsync_depth: usize) -> (SimIo, Journal<u64>, Vec<Completion>) {
    let (mut io, mut j) = journal(limits(BUF_BYTES, fsync_depth));
    append(&mut io, &mut j, 100, 0);
    j.plan(&mut io);
    for c in reap_all(&mut io) {
        deliver(&mut j, c);
    }
    j.plan(&mut io);
    assert_eq!(j.fsync_rounds.len(), 1);
    append(&mut io, &mut j, 100, 1);
    j.plan(&mut io);
    let mut held = reap_all(&mut io);
    let at = held.iter().position(|c| Token::unpack(c.token).kind == OpKind::Write).expect("the second write");
    deliver(&mut j, held.remove(at));
    j.plan(&mut io);
    (io, j, held)
}

#[test]
fn fsync_rounds_overlap_but_make_data_durable_in_order() {
    // Proves: with fsync_depth 2, a write that completes while a round is in flight gets its own round at once;
    // a later round that completes first acknowledges nothing until the earlier one completed; then both retire.
    let (mut io, mut j, first_round) = second_round_setup(2);
    assert_eq!(j.fsync_rounds.len(), 2, "the second round did not wait for the first");
    let second_round = reap_all(&mut io);
    for c in second_round {
        deliver(&mut j, c);
    }
    assert_eq!((j.durable_pos(), retired(&mut j).len()), (0, 0), "the later round waits for the earlier");
    for c in first_round {
        deliver(&mut j, c);
    }
    assert_eq!(j.durable_pos(), 2 * BLOCK_BYTES as u64);
    assert_eq!(retired(&mut j), [0, 1]);
    assert_eq!(j.metrics.fsyncs, 2);

    // With one round at a time the second waits, as before.
    let (_io, j, _held) = second_round_setup(1);
    assert_eq!(j.fsync_rounds.len(), 1);
}

#[test]
fn a_failed_earlier_round_acknowledges_nothing_after_it() {
    // Proves: if the earlier of two overlapping rounds fails after the later one succeeded, the log fails and
    // neither commit is acknowledged (the later success is never taken for durability past a failed fsync).
    let (mut io, mut j, first_round) = second_round_setup(2);
    for c in reap_all(&mut io) {
        deliver(&mut j, c);
    }
    for mut c in first_round {
        c.result = Err(libc::EIO);
        deliver(&mut j, c);
    }
    assert!(j.failed().is_some());
    assert_eq!(j.durable_pos(), 0);
    assert!(retired(&mut j).is_empty());
}

#[test]
fn a_follower_caches_whole_scans_only() {
    // Proves: a follower's tail cache takes a scan's bytes whole (each read
    // then finds a frame inside one buffer) or not at all, in position order,
    // the oldest giving way when every buffer holds some.
    let (_io, mut j) = journal(limits(BUF_BYTES, 1));
    let block = vec![5u8; BLOCK_BYTES];
    j.follow_cache(0, &block);
    j.follow_to(BLOCK_BYTES as u64);
    assert_eq!(j.cached_at(100).map(<[u8]>::len), Some(BLOCK_BYTES - 100));
    // More than one buffer: nothing cached, nothing cut.
    let big = vec![6u8; BUF_BYTES + BLOCK_BYTES];
    j.follow_cache(BLOCK_BYTES as u64, &big);
    j.follow_to((2 * BLOCK_BYTES + BUF_BYTES) as u64);
    assert_eq!(j.cached_at(BLOCK_BYTES as u64), None);
    // Going back (a scan already cached) is refused.
    j.follow_cache(0, &block);
    assert_eq!(j.cache.len(), 1);
    // Every buffer holding a scan: the oldest gives way.
    let mut pos = (2 * BLOCK_BYTES + BUF_BYTES) as u64;
    for _ in 0..8 {
        j.follow_cache(pos, &block);
        pos += BLOCK_BYTES as u64;
    }
    j.follow_to(pos);
    assert_eq!(j.cached_at(0), None, "the oldest scan gave its buffer");
    assert_eq!(j.cached_at(pos - 1).map(<[u8]>::len), Some(1));
}
