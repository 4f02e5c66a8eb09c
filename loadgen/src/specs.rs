//! Who connects where: producers and consumers spread over the cores that
//! own the partitions, each talking to its core's own address.
use std::net::SocketAddr;

use crate::Layout;
use crate::args::Settings;
use crate::worker::{ConsumerSpec, ProducerSpec};

/// Producers spread over the partitions' cores; each producer writes only
/// partitions of one core, so it talks to that core directly. With a Kafka
/// listener (`--kafka`'s run) every producer talks to the listener's one
/// address, whatever core owns its partitions, as Kafka clients do.
pub(crate) fn producer_specs(s: &Settings, layout: &Layout, rate: f64, id_base: u32) -> Vec<ProducerSpec> {
    let mut by_addr: Vec<(SocketAddr, Vec<u32>)> = Vec::new();
    for (p, &addr) in layout.partition_addr.iter().enumerate() {
        let addr = layout.kafka_addr.unwrap_or(addr);
        match by_addr.iter_mut().find(|(a, _)| *a == addr) {
            Some((_, parts)) => parts.push(p as u32),
            None => by_addr.push((addr, vec![p as u32])),
        }
    }
    let records_per_batch = s.shape().records();
    (0..s.producers)
        .map(|i| {
            let (addr, parts) = &by_addr[i % by_addr.len()];
            // Producers on this core: i, i + n, i + 2n, ...; j-th of them.
            let on_core = (s.producers - i % by_addr.len()).div_ceil(by_addr.len());
            let j = i / by_addr.len();
            let partitions = if on_core <= parts.len() {
                parts.iter().copied().skip(j).step_by(on_core).collect()
            } else {
                vec![parts[j % parts.len()]]
            };
            ProducerSpec {
                id: id_base + i as u32,
                addr: *addr,
                partitions,
                inflight: s.inflight,
                records_per_sec: rate / s.producers as f64,
                records_per_batch,
                kafka: layout.kafka_addr.is_some(),
            }
        })
        .collect()
}

/// Consumer `id` reads every partition: one connection per core
/// (`subscribe`: by subscription, else by Fetches). With a Kafka listener,
/// one connection to it, by Kafka Fetches (Kafka has no subscription).
pub(crate) fn subscriber_specs(id: u32, layout: &Layout, from: &[u64], measure: bool, subscribe: bool) -> Vec<ConsumerSpec> {
    let mut specs: Vec<ConsumerSpec> = Vec::new();
    let kafka = layout.kafka_addr.is_some();
    let subscribe = subscribe && !kafka;
    for (p, &addr) in layout.partition_addr.iter().enumerate() {
        let addr = layout.kafka_addr.unwrap_or(addr);
        match specs.iter_mut().find(|c| c.addr == addr) {
            Some(c) => c.partitions.push((p as u32, from[p])),
            None => specs.push(ConsumerSpec { id, addr, partitions: vec![(p as u32, from[p])], measure, subscribe, kafka }),
        }
    }
    specs
}
