//! `strom inspect DIR`: verifies every frame of every log, read-only, and
//! summarises logs and partitions. Ignores checkpoints (it checks what they
//! would let a restart skip) and changes nothing on disk.
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

use crate::buf::BLOCK_BYTES;
use crate::catalog::{self, Catalog};
use crate::config::EngineConfig;
use crate::error::{Result, StromError};
use crate::io::Io;
use crate::log::journal::Held;
use crate::log::recovery::{self, RecoverLimits, RecoveryReport};
use crate::log::segment::log_dir;
use crate::log::{checkpoint, journal};
use crate::partition::retention::live_segments;
use crate::partition::{Partition, Pid, Retention, Span};

/// What inspect found in one partition.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PartitionSummary {
    pub batches: u64,
    pub first_offset: Option<u64>,
    pub next_offset: u64,
    pub bytes: u64,
    pub min_ts_ms: Option<i64>,
    pub max_ts_ms: Option<i64>,
}

#[derive(Debug, Clone)]
pub struct LogSummary {
    pub log: u32,
    pub segments: usize,
    pub report: RecoveryReport,
    pub checkpoint_covered: Option<u64>,
    /// The log failed (a write or fdatasync error) and its data is trusted
    /// only below this position: the next open cuts it there.
    pub failed_at: Option<u64>,
    /// Segment start positions, oldest first, and where each partition's
    /// data lies in them (what the retention pass judges).
    pub segment_starts: Vec<u64>,
    pub spans: BTreeMap<Pid, Vec<Span>>,
    /// Live and reclaimable bytes by the catalog's retention (set by
    /// [`inspect`], which reads the catalog; zero from [`inspect_logs`]).
    pub space: Space,
}

/// A log's bytes by what retention makes of them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Space {
    /// In segments holding data some topic keeps.
    pub live_bytes: u64,
    /// In segments no topic keeps data in, not deleted yet.
    pub reclaimable_bytes: u64,
    /// Of those, in dead segments at the log's start that the server's
    /// next retention pass deletes (once its checkpoint passed them).
    pub due_bytes: u64,
    /// Why the rest waits, if some does.
    pub held: Option<&'static str>,
}

#[derive(Debug, Clone)]
pub struct Inspection {
    pub logs: Vec<LogSummary>,
    pub partitions: BTreeMap<Pid, PartitionSummary>,
    /// pid -> (topic, partition index), for live topics.
    pub names: BTreeMap<Pid, (String, u32)>,
}

/// Scans every log of `dir` through `io`. Errors name the position of any
/// damage to data that must be intact.
pub fn inspect<I: Io>(io: &mut I, dir: &Path, cfg: &EngineConfig) -> Result<Inspection> {
    if !dir.join(catalog::META_FILE).exists() {
        return Err(StromError::BadDataDir(format!("{} is not a Strom data directory (no {})", dir.display(), catalog::META_FILE)));
    }
    let cat = Catalog::open_or_create(dir, 1)?;
    let mut names = BTreeMap::new();
    for (name, t) in cat.topics() {
        for i in 0..t.partitions {
            names.insert(t.first_pid + i, (name.clone(), i));
        }
    }
    let (mut logs, partitions) = inspect_logs(io, dir, cat.log_count(), cfg)?;
    let mut retention = BTreeMap::new();
    for t in cat.topics().values() {
        for pid in t.first_pid..t.first_pid + t.partitions {
            retention.insert(pid, t.retention.effective(cfg.default_retention()));
        }
    }
    let now_ms = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64);
    for l in &mut logs {
        l.space = space_of(l, &retention, now_ms);
    }
    Ok(Inspection { logs, partitions, names })
}

/// What the retention rule makes of a log's segments: the partitions of
/// live topics (with their retention) judged as a core judges them.
fn space_of(l: &LogSummary, retention: &BTreeMap<Pid, Retention>, now_ms: i64) -> Space {
    let parts: Vec<Partition> = l
        .spans
        .iter()
        .filter_map(|(&pid, spans)| {
            let mut p = Partition::new(pid, l.log);
            p.retention = *retention.get(&pid)?;
            p.spans = spans.iter().copied().collect();
            Some(p)
        })
        .collect();
    let live = live_segments(parts.iter(), &l.segment_starts, now_ms);
    let mut space = Space::default();
    let last = l.segment_starts.len().saturating_sub(1);
    let mut prefix = true;
    for (i, &start) in l.segment_starts.iter().enumerate() {
        let end = l.segment_starts.get(i + 1).copied().unwrap_or(l.report.end_pos.max(start));
        if live[i] {
            space.live_bytes += end - start;
            prefix = false;
            continue;
        }
        space.reclaimable_bytes += end - start;
        if prefix && i < last {
            space.due_bytes += end - start;
        } else if space.held.is_none() {
            space.held = Some(if i == last { Held::Active.as_str() } else { Held::OlderLive.as_str() });
        }
    }
    space
}

/// Scans logs `0..log_count` of `dir` through `io` alone (no catalog, no
/// real file system: the simulator runs it too). Fails with `Corrupt` and the
/// position of the first damaged frame where damage is proven (see
/// DURABILITY.md, Recovery), and with the I/O error of an unreadable range.
pub fn inspect_logs<I: Io>(
    io: &mut I,
    dir: &Path,
    log_count: u32,
    cfg: &EngineConfig,
) -> Result<(Vec<LogSummary>, BTreeMap<Pid, PartitionSummary>)> {
    let limits = RecoverLimits {
        payload_bytes_max: cfg.batch_bytes_max as u32,
        tear_window_bytes: cfg.tear_window_bytes(),
        read_chunk_bytes: cfg.write_buf_bytes + BLOCK_BYTES,
        read_only: true,
        ignore_checkpoint: true,
    };
    let mut partitions: BTreeMap<Pid, PartitionSummary> = BTreeMap::new();
    let mut logs = Vec::new();
    let present = io.list_dir(dir)?;
    for log in 0..log_count {
        let ldir = log_dir(dir, log);
        if !ldir.file_name().is_some_and(|n| present.iter().any(|p| p.as_str() == n)) {
            continue;
        }
        let ckpt = io
            .read_file(&ldir.join(checkpoint::FILE_NAME))?
            .map(|b| checkpoint::decode(&b))
            .transpose()
            .map_err(|reason| StromError::Corrupt { path: ldir.join(checkpoint::FILE_NAME), pos: 0, reason })?;
        let mut spans: BTreeMap<Pid, Vec<Span>> = BTreeMap::new();
        let mut on_batch =
            |h: &crate::log::frame::FrameHeader, info: &crate::wire::batch::BatchInfo, seg: u64, _: Option<&[u8]>| -> Result<()> {
                let ps = spans.entry(h.pid).or_default();
                let running_max_ts_ms = ps.last().map_or(info.max_timestamp_ms, |l| l.max_ts_ms.max(info.max_timestamp_ms));
                match ps.last_mut() {
                    Some(l) if l.first_pos >= seg => {
                        l.bytes += h.frame_bytes();
                        l.max_ts_ms = running_max_ts_ms;
                    }
                    _ => ps.push(Span { first_pos: h.pos, bytes: h.frame_bytes(), max_ts_ms: running_max_ts_ms }),
                }
                let s = partitions.entry(h.pid).or_default();
                let base = info.base_offset as u64;
                if s.batches > 0 && base != s.next_offset {
                    return Err(StromError::Corrupt {
                        path: ldir.clone(),
                        pos: h.pos,
                        reason: format!("partition {} jumps from offset {} to {base}", h.pid, s.next_offset),
                    });
                }
                s.batches += 1;
                s.first_offset.get_or_insert(base);
                s.next_offset = info.last_offset() as u64 + 1;
                s.bytes += info.batch_bytes as u64;
                s.min_ts_ms = Some(s.min_ts_ms.map_or(info.base_timestamp_ms, |t| t.min(info.base_timestamp_ms)));
                s.max_ts_ms = Some(s.max_ts_ms.map_or(info.max_timestamp_ms, |t| t.max(info.max_timestamp_ms)));
                Ok(())
            };
        let (state, report) =
            recovery::recover(io, &ldir, log, None, &limits, &mut recovery::OnBatch { wants_payload: &|_| false, batch: &mut on_batch })?;
        if let Some(c) = &ckpt
            && c.covered_pos > report.end_pos
        {
            return Err(StromError::Corrupt {
                path: ldir,
                pos: report.end_pos,
                reason: format!("checkpoint covers up to {} but valid frames end here", c.covered_pos),
            });
        }
        let segment_starts = state.segments.iter().map(|seg| seg.start_pos).collect();
        for seg in &state.segments {
            io.close(seg.file);
        }
        let failed_at = io.read_file(&ldir.join(journal::FAILED_FILE))?.and_then(|b| Some(u64::from_le_bytes(b.try_into().ok()?)));
        let checkpoint_covered = ckpt.map(|c| c.covered_pos);
        let space = Space::default();
        logs.push(LogSummary { log, segments: state.segments.len(), report, checkpoint_covered, failed_at, segment_starts, spans, space });
    }
    Ok((logs, partitions))
}

/// The human report printed by `strom inspect`.
pub fn render(ins: &Inspection) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "{:<5} {:>8} {:>14} {:>14} {:>10} {:>12} {:>14}",
        "log", "segments", "start", "end", "frames", "torn bytes", "checkpoint"
    );
    for l in &ins.logs {
        let ck = l.checkpoint_covered.map_or("-".to_string(), |c| c.to_string());
        let _ = writeln!(
            s,
            "{:<5} {:>8} {:>14} {:>14} {:>10} {:>12} {:>14}",
            l.log, l.segments, l.report.scanned_from, l.report.end_pos, l.report.frames_scanned, l.report.bytes_cut, ck
        );
    }
    let _ = writeln!(s);
    let _ = writeln!(s, "{:<5} {:>14} {:>18} {:>14}  why the rest waits", "log", "live bytes", "reclaimable bytes", "of which due");
    for l in &ins.logs {
        let sp = &l.space;
        let why = sp.held.unwrap_or("-");
        let _ = writeln!(s, "{:<5} {:>14} {:>18} {:>14}  {why}", l.log, sp.live_bytes, sp.reclaimable_bytes, sp.due_bytes);
    }
    for l in &ins.logs {
        if let Some(at) = l.failed_at {
            let _ = writeln!(s, "log {} failed: its data is trusted up to position {at}; the next open cuts it there", l.log);
        }
    }
    let _ = writeln!(s);
    let _ = writeln!(
        s,
        "{:<30} {:>6} {:>12} {:>12} {:>10} {:>14} {:>15} {:>15}",
        "topic", "part", "first", "next", "batches", "bytes", "min ts ms", "max ts ms"
    );
    for (pid, p) in &ins.partitions {
        let (topic, part) = ins.names.get(pid).cloned().unwrap_or_else(|| (format!("(deleted pid {pid})"), 0));
        let ts = |t: Option<i64>| t.map_or("-".to_string(), |t| t.to_string());
        let _ = writeln!(
            s,
            "{:<30} {:>6} {:>12} {:>12} {:>10} {:>14} {:>15} {:>15}",
            topic,
            part,
            p.first_offset.unwrap_or(0),
            p.next_offset,
            p.batches,
            p.bytes,
            ts(p.min_ts_ms),
            ts(p.max_ts_ms)
        );
    }
    s
}
