//! What a run's workers found, put together: acknowledged ranges merged
//! across workers, partitions' end offsets, read-back readers, verifier counts.
use crate::Layout;
use crate::verify;
use crate::worker::{ConsumerSpec, WorkerOutcome};

pub(crate) type Acked = std::collections::HashMap<u32, std::collections::HashMap<u32, verify::Ranges>>;

/// Every acknowledgement, by partition then producer.
pub(crate) fn merged_acked(outcomes: &[WorkerOutcome]) -> Acked {
    let mut acked: Acked = Default::default();
    for o in outcomes {
        for (&(partition, producer), ranges) in &o.acked {
            let into = acked.entry(partition).or_default().entry(producer).or_default();
            for &(s, e) in ranges {
                verify::add_range(into, s, e);
            }
        }
    }
    acked
}

pub(crate) fn merge_into(into: &mut Acked, from: &Acked) {
    for (&partition, producers) in from {
        for (&producer, ranges) in producers {
            let to = into.entry(partition).or_default().entry(producer).or_default();
            for &(s, e) in ranges {
                verify::add_range(to, s, e);
            }
        }
    }
}

/// The end offset of each partition after `outcomes`: at least `from`, and
/// past every record acknowledged.
pub(crate) fn end_offsets(outcomes: &[WorkerOutcome], from: &[u64]) -> Vec<u64> {
    let mut ends = from.to_vec();
    for o in outcomes {
        for (&p, &end) in &o.partition_ends {
            ends[p as usize] = ends[p as usize].max(end);
        }
    }
    ends
}

/// Connections per loadgen thread and broker core that read back a run:
/// reads of old data wait on the disk, so more of them overlap.
const READ_BACK_CONNS_PER_THREAD: usize = 4;

/// Read-back readers: each partition read once, split over
/// [`READ_BACK_CONNS_PER_THREAD`] connections per thread and core.
pub(crate) fn spread_readers(layout: &Layout, from: &[u64], threads: usize) -> Vec<ConsumerSpec> {
    let mut specs: Vec<ConsumerSpec> = Vec::new();
    for (p, &addr) in layout.partition_addr.iter().enumerate() {
        let reader = (p % (threads.max(1) * READ_BACK_CONNS_PER_THREAD)) as u32;
        match specs.iter_mut().find(|c| c.addr == addr && c.id == reader) {
            Some(c) => c.partitions.push((p as u32, from[p])),
            None => specs.push(ConsumerSpec {
                id: reader,
                addr,
                partitions: vec![(p as u32, from[p])],
                measure: false,
                subscribe: false,
                kafka: false,
            }),
        }
    }
    specs
}

/// The broker's read totals (embedded only): disk bytes read, batch bytes
/// served, and those served from disk.
pub(crate) fn read_totals(target: &crate::Target) -> Option<(u64, u64, u64)> {
    let crate::Target::Embedded { server, .. } = target else { return None };
    let cores = server.engine().metrics().ok()?;
    Some(cores.iter().fold((0, 0, 0), |(d, s, f), m| (d + m.read.disk_bytes, s + m.read.served_bytes, f + m.read.served_disk_bytes)))
}

/// Adds up what the verifiers of `outcomes` found of `acked`; with
/// `head_expired`, they read from each partition's earliest offset after
/// retention dropped its head ([`verify::PartitionVerifier::finish_expiring`]).
pub(crate) fn tally_verify(outcomes: &[WorkerOutcome], acked: &Acked, head_expired: bool, into: &mut verify::VerifyCounts) {
    let none = Default::default();
    for o in outcomes {
        for (_, partition, v) in &o.verifiers {
            let mut v = v.clone();
            let acked = acked.get(partition).unwrap_or(&none);
            if head_expired {
                v.finish_expiring(acked)
            } else {
                v.finish(acked)
            }
            into.add(&v.counts);
        }
    }
}

/// The broker's segment recycling so far (embedded only): segments
/// retention recycled into a spare, and rolls that reused one.
pub(crate) fn segment_totals(target: &crate::Target) -> Option<(u64, u64)> {
    let crate::Target::Embedded { server, .. } = target else { return None };
    let cores = server.engine().metrics().ok()?;
    Some(cores.iter().fold((0, 0), |(c, u), m| (c + m.log.segments_recycled, u + m.log.segments_reused)))
}

/// Records acknowledged in `acked`, over every partition and producer.
pub(crate) fn acked_records(acked: &Acked) -> u64 {
    acked.values().flat_map(|producers| producers.values()).flat_map(|ranges| ranges.iter()).map(|&(s, e)| e - s).sum()
}

/// Bytes of its log a read-back reads for each byte of one partition's
/// records: a read fetches whole read buffers of the log, where the other
/// partitions sharing it interleave, so it reads up to one buffer per
/// batch, and at most every partition's bytes.
pub(crate) fn readback_amplification(partitions_per_log: usize, batch_bytes: usize) -> usize {
    /// The broker's read buffer (`EngineConfig::write_buf_bytes`).
    const READ_BUF_BYTES: usize = 1 << 20;
    partitions_per_log.min(READ_BUF_BYTES / batch_bytes.max(1)).max(1)
}
