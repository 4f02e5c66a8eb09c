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
use crate::log::recovery::{self, RecoverLimits, RecoveryReport};
use crate::log::segment::log_dir;
use crate::log::{checkpoint, journal};
use crate::partition::Pid;

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
    let (logs, partitions) = inspect_logs(io, dir, cat.log_count(), cfg)?;
    Ok(Inspection { logs, partitions, names })
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
        let mut on_batch = |h: &crate::log::frame::FrameHeader, info: &crate::wire::batch::BatchInfo, _seg: u64| -> Result<()> {
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
        let (state, report) = recovery::recover(io, &ldir, log, None, &limits, &mut on_batch)?;
        if let Some(c) = &ckpt
            && c.covered_pos > report.end_pos
        {
            return Err(StromError::Corrupt {
                path: ldir,
                pos: report.end_pos,
                reason: format!("checkpoint covers up to {} but valid frames end here", c.covered_pos),
            });
        }
        for seg in &state.segments {
            io.close(seg.file);
        }
        let failed_at = io.read_file(&ldir.join(journal::FAILED_FILE))?.and_then(|b| Some(u64::from_le_bytes(b.try_into().ok()?)));
        let checkpoint_covered = ckpt.map(|c| c.covered_pos);
        logs.push(LogSummary { log, segments: state.segments.len(), report, checkpoint_covered, failed_at });
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
