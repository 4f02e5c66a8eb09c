//! One monotonic clock for every loadgen thread, in nanoseconds since the
//! process first asked: a producer stamps a record with it and a consumer
//! on another thread subtracts, so both must read the same clock.
use std::sync::OnceLock;
use std::time::Instant;

static BASE: OnceLock<Instant> = OnceLock::new();

pub fn now_ns() -> u64 {
    BASE.get_or_init(Instant::now).elapsed().as_nanos() as u64
}

/// Wall-clock milliseconds since the epoch, for Kafka batch timestamps.
pub fn wall_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64)
}
