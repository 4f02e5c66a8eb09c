//! The read path's side of sidecars ([`crate::log::sidecar`]): it writes
//! the sidecar of each segment sealed (and durable) since this process
//! started, from its partitions' in-memory runs, and a fetch of an offset
//! before a partition's in-memory runs follows the runs a sealed segment's
//! sidecar lists instead of walking every frame from the sparse index.
//!
//! Both are synchronous file operations on the core's thread, between
//! ticks (`ReadPath::resume`), never inside a commit: a sidecar write is
//! one small file (a temporary, an fsync, a rename) once per sealed
//! segment; a load is one small read per segment, kept in a bounded LRU
//! ([`SidecarCache`]). Going through the ring instead would spare the
//! core those waits; it is left for when they show in a profile.
//!
//! A sealed, durable segment whose sidecar a fetch finds missing or refused
//! (lost, damaged, or never written: the segment was active at a crash) is
//! rebuilt by scanning its frames ([`crate::log::sidecar_scan`]), and the
//! fetch walks meanwhile, as before. Unlike the small sidecar files, a scan
//! reads a whole segment, so it goes through the core's ring: one read of
//! [`SCAN_CHUNK_BYTES`] in flight at a time, into a buffer of its own, the
//! next pushed from the previous one's completion; a commit shares the disk
//! with one such read at most, and the core's thread never waits on it. One
//! rebuild runs at a time per core (others wait in a bounded queue); the
//! segment is pinned against retention only while a read of it is in
//! flight, and checked to be still in the log before each read and before
//! the sidecar is written, so a segment retention dropped meanwhile never
//! gets a sidecar back. The segment that was active when this process
//! opened the log, when no sidecar from a clean stop covers it up to where
//! this process began, is rebuilt the same way once it is sealed: the runs
//! the recovery scan fed may start past its start.
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Arc;

use crate::buf::AlignedBuf;
use crate::io::token::{OpKind, Token};
use crate::io::{Completion, Io, Op};
use crate::log::sidecar::{self, SegmentRuns, SidecarCache};
use crate::log::sidecar_scan::{SCAN_CHUNK_BYTES, SegmentScan};
use crate::metrics::ReadMetrics;
use crate::partition::{Partition, Pid, Run};

use super::view::LogView;

/// Segments a fetch looks through for the one whose sidecar holds its
/// offset, at most, from the one its sparse index entry lies in (each may
/// cost a sidecar load): past them it walks.
const SEGMENTS_LOOKED_MAX: usize = 4;

/// The token slot of a sidecar scan's read (owner: its log). Cursor slots
/// are below `reads_inflight_max`, far below the slot this names.
pub(crate) const SCAN_TOKEN_SLOT: u32 = u32::MAX;

/// Segments waiting for their sidecar's rebuild, at most, per core (past
/// it, a fetch that finds one more missing only walks; it asks again later).
const REBUILDS_WAITING_MAX: usize = 16;

/// Segments whose rebuild failed, remembered so as not to scan them again
/// at every fetch (at most; the oldest is forgotten first).
const REBUILDS_FAILED_MAX: usize = 64;

/// Where a log's sidecars are written up to.
#[derive(Debug, Clone, Copy)]
struct Written {
    /// The start of the first segment whose sidecar is not written yet.
    next_start_pos: u64,
    /// The segment active when this process first saw the log, and the
    /// log's durable end then (where this process began): its in-memory
    /// runs are complete there only from that end on.
    first: (u64, u64),
    /// The durable position last looked at, and whether stopping then
    /// (nothing to do until either changes).
    seen: (u64, bool),
}

/// The rebuild running: its log, its scan, and its buffer (None while a
/// read holds it: `in_flight` names that read's position and length).
#[derive(Debug)]
struct Rebuild {
    log: u32,
    scan: SegmentScan,
    buf: Option<AlignedBuf>,
    in_flight: Option<(u64, usize)>,
}

#[derive(Debug, Default)]
pub(crate) struct Sidecars {
    cache: SidecarCache,
    written: HashMap<u32, Written>,
    /// Segments (log, start) waiting for a rebuild, oldest first.
    waiting: VecDeque<(u32, u64)>,
    rebuild: Option<Rebuild>,
    failed: VecDeque<(u32, u64)>,
    /// The core stops: no rebuild starts or reads on.
    stopping: bool,
    /// The largest batch payload, for the scan's frame checks.
    payload_bytes_max: u32,
}

impl Sidecars {
    /// Writes the sidecar of every segment sealed since the last call
    /// whose end is durable; when `stopping`, also that of each log's
    /// active segment up to its durable end once nothing is in flight (so
    /// that a restart after a clean stop, which scans nothing, finds it).
    /// Segments sealed before this process first saw the log keep what an
    /// earlier process wrote (its runs there were complete; these are not).
    fn write_sealed<I: Io, V: LogView>(
        &mut self,
        io: &mut I,
        logs: &BTreeMap<u32, V>,
        partitions: &HashMap<Pid, Partition>,
        stopping: bool,
    ) {
        for (&id, log) in logs {
            let durable = log.durable_pos();
            let active_start = |log: &V| log.segment_at(durable).map_or(durable, |s| s.start_pos);
            let w = self.written.entry(id).or_insert_with(|| {
                let start = active_start(log);
                Written { next_start_pos: start, first: (start, durable), seen: (durable, stopping) }
            });
            if w.seen == (durable, stopping) {
                continue;
            }
            w.seen = (durable, stopping);
            loop {
                let Some(seg) = log.segment_at(w.next_start_pos).filter(|s| s.start_pos == w.next_start_pos) else {
                    // Retention took it first: go on from the active segment.
                    w.next_start_pos = w.next_start_pos.max(active_start(log));
                    break;
                };
                let end = match seg.next_start_pos {
                    Some(end) if end <= durable => end,
                    None if stopping && log.written_pos() == durable && durable > seg.start_pos => durable,
                    None if stopping => {
                        // Writes in flight: look again at the next tick.
                        w.seen.1 = false;
                        break;
                    }
                    _ => break,
                };
                let path = log.path_at(seg.start_pos);
                let prior = self.cache.get(io, id, &path, seg.start_pos, end);
                // The segment this process began in: its runs before where
                // it began are whatever the recovery scan saw (maybe none),
                // unless a sidecar from a clean stop lists them.
                let (first_start, began_pos) = w.first;
                if seg.start_pos == first_start && began_pos > first_start && prior.as_ref().is_none_or(|p| p.end_pos < began_pos) {
                    if seg.next_start_pos.is_none() {
                        // Active at a stop: the scan once it is sealed writes it.
                        break;
                    }
                    want(&mut self.waiting, &self.failed, (id, seg.start_pos));
                    w.next_start_pos = end;
                    continue;
                }
                let parts = sidecar::runs_for(partitions.iter(), id, (seg.start_pos, end), prior.as_deref());
                sidecar::write(io, &path, seg.start_pos, end, &parts);
                self.cache.forget(id, seg.start_pos);
                if seg.next_start_pos.is_none() {
                    // Written again, to its new durable end, if the stop goes on.
                    break;
                }
                w.next_start_pos = end;
            }
        }
    }

    /// The sidecar runs holding `offset` of `pid` in log `id`, and the run
    /// holding it, looking from the segment holding `from_pos` (its sparse
    /// index entry) on. None when a sidecar is missing, refused, or does
    /// not list the partition: the fetch walks frames.
    pub fn find<I: Io, V: LogView>(
        &mut self,
        io: &mut I,
        (id, log): (u32, &V),
        pid: Pid,
        offset: u64,
        from_pos: u64,
    ) -> Option<(Arc<SegmentRuns>, Run)> {
        let mut pos = from_pos;
        for _ in 0..SEGMENTS_LOOKED_MAX {
            let seg = log.segment_at(pos)?;
            // The active segment's sidecar (written at a stop) covers at most its durable part.
            let end = seg.next_start_pos.unwrap_or(log.durable_pos());
            let Some(s) = self.cache.get(io, id, &log.path_at(pos), seg.start_pos, end) else {
                // Missing or refused: a sealed, durable one is rebuilt.
                if seg.next_start_pos.is_some_and(|e| e <= log.durable_pos()) {
                    want(&mut self.waiting, &self.failed, (id, seg.start_pos));
                }
                return None;
            };
            let runs = s.runs_of(pid)?;
            let i = runs.partition_point(|r| r.first_offset <= offset);
            if let Some(&r) = i.checked_sub(1).map(|i| &runs[i]).filter(|r| offset < r.end_offset) {
                return Some((s, r));
            }
            // Its runs here start past the offset: not a place it is in.
            if runs.first().is_some_and(|r| r.first_offset > offset) {
                return None;
            }
            // Past the active segment there is nothing sealed.
            pos = seg.next_start_pos?;
        }
        None
    }
}

/// Queues the rebuild of segment `key` unless it waits already, failed, or
/// the queue is full.
fn want(waiting: &mut VecDeque<(u32, u64)>, failed: &VecDeque<(u32, u64)>, key: (u32, u64)) {
    if waiting.len() < REBUILDS_WAITING_MAX && !waiting.contains(&key) && !failed.contains(&key) {
        waiting.push_back(key);
    }
}

impl Sidecars {
    /// Between ticks: writes the sidecars of segments sealed since the last
    /// call ([`Sidecars::write_sealed`]) and starts or goes on with a
    /// rebuild; a stopping core starts none (one in flight ends at its
    /// completion).
    pub fn tend<I: Io, V: LogView>(
        &mut self,
        io: &mut I,
        logs: &mut BTreeMap<u32, V>,
        partitions: &HashMap<Pid, Partition>,
        (stopping, payload_bytes_max): (bool, u32),
        metrics: &mut ReadMetrics,
    ) {
        self.write_sealed(io, logs, partitions, stopping);
        self.stopping = stopping;
        self.payload_bytes_max = payload_bytes_max;
        self.step(io, logs, metrics);
    }

    /// A rebuild's read is in flight (the core must not stop before it completes).
    pub fn scanning(&self) -> bool {
        self.rebuild.as_ref().is_some_and(|r| r.in_flight.is_some())
    }

    /// Pushes the running rebuild's next read, or finishes it, or starts the
    /// next waiting one; nothing while a read is in flight.
    fn step<I: Io, V: LogView>(&mut self, io: &mut I, logs: &mut BTreeMap<u32, V>, metrics: &mut ReadMetrics) {
        loop {
            if self.stopping && !self.scanning() {
                self.rebuild = None;
                return;
            }
            if self.rebuild.is_none() && !self.start_next(io, logs) {
                return;
            }
            let r = self.rebuild.as_mut().expect("a rebuild runs");
            if r.in_flight.is_some() {
                return;
            }
            let start_pos = r.scan.start_pos();
            let Some((log, seg)) =
                logs.get_mut(&r.log).and_then(|l| l.segment_at(start_pos).filter(|s| s.start_pos == start_pos).map(|s| (l, s)))
            else {
                // Retention dropped it: no sidecar for a segment that is gone.
                self.rebuild = None;
                continue;
            };
            let Some((at, len)) = r.scan.next_read(SCAN_CHUNK_BYTES) else {
                let r = self.rebuild.take().expect("a rebuild runs");
                let path = sidecar::path_for(&log.path_at(start_pos));
                let end_pos = r.scan.end_pos();
                match io.write_file_atomic(&path, &sidecar::encode(start_pos, end_pos, &r.scan.finish())) {
                    Ok(()) => metrics.sidecars_rebuilt += 1,
                    Err(e) => {
                        tracing::warn!(path = %path.display(), error = %e, "cannot write a rebuilt sidecar; reads of its segment walk frames");
                        self.give_up((r.log, start_pos));
                    }
                }
                self.cache.forget(r.log, start_pos);
                continue;
            };
            let buf = match r.buf.take() {
                Some(b) if b.capacity() >= len => b,
                _ => AlignedBuf::new(len.max(SCAN_CHUNK_BYTES)),
            };
            let op = Op::Read { file: seg.file, pos: at - seg.start_pos, len, buf };
            match io.push(op, Token::new(OpKind::Read, r.log, SCAN_TOKEN_SLOT).pack()) {
                Ok(()) => {
                    log.pin_segment(at, true);
                    r.in_flight = Some((at, len));
                }
                // The ring is full: the next tick pushes it.
                Err(Op::Read { buf, .. }) => r.buf = Some(buf),
                Err(_) => unreachable!("push returns the op it was given"),
            }
            return;
        }
    }

    /// Starts the oldest waiting rebuild still wanted: its segment is in the
    /// log, sealed and durable, and has no usable sidecar now. False when
    /// none is left.
    fn start_next<I: Io, V: LogView>(&mut self, io: &mut I, logs: &BTreeMap<u32, V>) -> bool {
        while let Some((id, start_pos)) = self.waiting.pop_front() {
            let Some(log) = logs.get(&id) else { continue };
            let Some(seg) = log.segment_at(start_pos).filter(|s| s.start_pos == start_pos) else { continue };
            let Some(end_pos) = seg.next_start_pos.filter(|&e| e <= log.durable_pos()) else { continue };
            // Written meanwhile (a seal's sidecar, a rebuild before it).
            self.cache.forget(id, start_pos);
            if self.cache.get(io, id, &log.path_at(start_pos), start_pos, end_pos).is_some_and(|s| s.end_pos == end_pos) {
                continue;
            }
            self.cache.forget(id, start_pos);
            let scan = SegmentScan::new(start_pos, end_pos, self.payload_bytes_max);
            self.rebuild = Some(Rebuild { log: id, scan, buf: None, in_flight: None });
            return true;
        }
        false
    }

    /// A rebuild's read completed: its frames are scanned, and the next read
    /// pushed (or the sidecar written).
    pub fn on_scan_complete<I: Io, V: LogView>(
        &mut self,
        io: &mut I,
        logs: &mut BTreeMap<u32, V>,
        metrics: &mut ReadMetrics,
        c: Completion,
    ) {
        let r = self.rebuild.as_mut().expect("a scan read belongs to the running rebuild");
        let (at, asked) = r.in_flight.take().expect("a scan read in flight");
        let buf = c.buf.expect("a read returns its buffer");
        let log = logs.get_mut(&r.log).expect("a rebuild's log");
        log.pin_segment(at, false);
        let fed = match c.result {
            Ok(_) => {
                metrics.disk_bytes += buf.len() as u64;
                r.scan.feed(at, buf.as_slice(), asked, &|h| log.frame_is_current(h))
            }
            Err(errno) => Err(format!("read at {at}: errno {errno}")),
        };
        r.buf = Some(buf);
        if let Err(reason) = fed {
            let key = (r.log, r.scan.start_pos());
            tracing::warn!(log = key.0, segment = key.1, %reason, "sidecar not rebuilt; reads of its segment walk frames");
            self.rebuild = None;
            self.give_up(key);
        }
        self.step(io, logs, metrics);
    }

    fn give_up(&mut self, key: (u32, u64)) {
        if self.failed.len() >= REBUILDS_FAILED_MAX {
            self.failed.pop_front();
        }
        self.failed.push_back(key);
    }
}
