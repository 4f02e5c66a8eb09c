//! What the broker accepts, checked before a run: a batch it would refuse
//! makes every Produce of the run fail (`InvalidBatch`), so loadgen refuses
//! the flag instead, naming the broker's limit. The limit is the broker's
//! own, read from it (the ServerInfo api), never assumed.
use strom::broker::Limits;
use strom::config::EngineConfig;
use strom::proto::{self, ServerInfo};

/// What a Produce frame holds around its batch: length, header, the
/// longest topic name (249 bytes) with its u16 length, the partition.
const PRODUCE_FRAME_OVERHEAD_BYTES: usize = proto::LEN_BYTES + proto::HEADER_BYTES + 2 + 249 + 4;

/// The limits an embedded broker with `cfg` will answer in ServerInfo, for
/// the check before it starts (the run asks it again once it is up): the
/// server's own builder of that reply, on the engine's limits for `cfg`.
pub fn embedded(cfg: &EngineConfig) -> ServerInfo {
    strom::server::server_info(Limits::of(cfg), strom::server::ServerConfig::default().frame_bytes_max)
}

/// Refuses a `--batch-bytes` the broker described by `info` would refuse.
pub fn check_batch_bytes(batch_bytes: usize, info: &ServerInfo) -> Result<(), String> {
    let batch_max = info.batch_bytes_max as usize;
    if batch_bytes > batch_max {
        return Err(format!(
            "--batch-bytes {batch_bytes} is over the broker's largest batch, {batch_max} bytes: every Produce would fail (InvalidBatch); use --batch-bytes {batch_max} or less"
        ));
    }
    let frame_max = (info.frame_bytes_max as usize).saturating_sub(PRODUCE_FRAME_OVERHEAD_BYTES);
    if batch_bytes > frame_max {
        return Err(format!(
            "--batch-bytes {batch_bytes} does not fit the broker's largest request frame, {} bytes, with a Produce's header: use --batch-bytes {frame_max} or less",
            info.frame_bytes_max
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    // Proves the default engine's limit is Kafka's message.max.bytes, that
    // the limit itself passes and one byte more is refused with the limit named.
    #[test]
    fn the_default_broker_limit_is_named() {
        let info = embedded(&EngineConfig::default());
        assert_eq!(info.batch_bytes_max, 1_048_588);
        assert_eq!(check_batch_bytes(1_048_588, &info), Ok(()));
        let e = check_batch_bytes(1_048_589, &info).unwrap_err();
        assert!(e.starts_with("--batch-bytes 1048589 is over the broker's largest batch, 1048588 bytes"), "{e}");
        let small_frame = ServerInfo { frame_bytes_max: 70_000, ..info };
        assert!(check_batch_bytes(70_000, &small_frame).unwrap_err().contains("largest request frame, 70000 bytes"));
    }
}
