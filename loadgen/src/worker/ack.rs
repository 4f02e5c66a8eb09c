//! A producer's answers, native or Kafka's, made one [`Ack`] and counted in
//! one place; and where each protocol's frame carries its request id.
use std::sync::atomic::Ordering;

use super::{REQUEST_ID_AT, Role, Worker};
use crate::clock::now_ns;
use crate::hist::ns_to_us;
use crate::verify::add_range;

pub(super) fn native_rid(frame: &mut [u8], rid: u64) {
    frame[REQUEST_ID_AT..REQUEST_ID_AT + 8].copy_from_slice(&rid.to_be_bytes());
}

/// A Kafka correlation id is an i32: a connection's ids count from 1 and a
/// run sends far fewer than 2^31 requests on one.
pub(super) fn kafka_rid(frame: &mut [u8], rid: u64) {
    let at = crate::kafka::CORRELATION_ID_AT;
    frame[at..at + 4].copy_from_slice(&(rid as i32).to_be_bytes());
}

impl Worker {
    /// Producer `i`'s request `rid` was answered: its records are counted
    /// acknowledged if the answer gives them offsets of the partition they
    /// were sent to, else the answer's error is counted.
    pub(super) fn acked(&mut self, i: usize, rid: u64, ack: Result<Ack, String>) {
        let now = now_ns();
        self.last_reply_ns = now;
        let (shared, out) = (&self.shared, &mut self.out);
        let Role::P(p) = &mut self.conns[i].role else { unreachable!("only producers are acknowledged") };
        let Some(pending) = p.pending.remove(&rid) else {
            *out.errors.entry("reply to no request".into()).or_default() += 1;
            return;
        };
        let partition = p.spec.partitions[pending.part];
        let records = p.template.records() as u64;
        let ack = match ack {
            Ok(ack) => ack,
            Err(kind) => {
                *out.errors.entry(kind).or_default() += 1;
                return;
            }
        };
        let last_offset = ack.last_offset.unwrap_or(ack.base_offset + records - 1);
        let wrong = if ack.partition.is_some_and(|named| named != partition) {
            Some("ack for another partition")
        } else if last_offset.checked_add(1).and_then(|end| end.checked_sub(ack.base_offset)) != Some(records) {
            Some("ack with the wrong record count")
        } else {
            None
        };
        if let Some(kind) = wrong {
            *out.errors.entry(kind.into()).or_default() += 1;
            return;
        }
        add_range(out.acked.entry((partition, p.spec.id)).or_default(), pending.first_seq, pending.first_seq + records);
        shared.targets[partition as usize].fetch_max(last_offset + 1, Ordering::SeqCst);
        let end = out.partition_ends.entry(partition).or_default();
        *end = (*end).max(last_offset + 1);
        shared.live_acked_records.fetch_add(records, Ordering::Relaxed);
        if shared.in_window(now) {
            out.lat.ack_us.saturating_record(ns_to_us(now.saturating_sub(pending.from_ns)));
            out.produced.records += records;
            out.produced.requests += 1;
        }
    }
}

/// A Produce's answer, whichever protocol carried it.
pub(super) struct Ack {
    /// The partition the answer names (Kafka's do; a native ack is matched by request id alone).
    pub(super) partition: Option<u32>,
    pub(super) base_offset: u64,
    /// The last record's offset, where the answer says it.
    pub(super) last_offset: Option<u64>,
}

/// A Kafka partition response as an [`Ack`]: a non-zero error code is an
/// error counted by its number, as a native error is by its name; a
/// success must carry an offset.
pub(super) fn kafka_ack(a: crate::kafka::ProduceAnswer) -> Result<Ack, String> {
    match (a.error_code, u64::try_from(a.base_offset), u32::try_from(a.partition)) {
        (0, Ok(base_offset), Ok(partition)) => Ok(Ack { partition: Some(partition), base_offset, last_offset: None }),
        (0, _, _) => Err("Kafka ack without an offset or partition".into()),
        (code, _, _) => Err(format!("Kafka error code {code}")),
    }
}
