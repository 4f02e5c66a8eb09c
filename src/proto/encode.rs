//! Values to frames, appended to a caller's buffer. Encoders never panic:
//! what the format cannot say (a string over 65535 bytes, an offset over
//! i64::MAX, more items than a count can hold) is cut to what it can say.

use super::query;
use super::{
    Api, ErrorCode, HEADER_BYTES, LEN_BYTES, MESSAGE_BYTES_MAX, NO_OFFSET, OffsetSpec, Request, Response, SPEC_EARLIEST, SPEC_LATEST,
    STATS_FLAG_PER_CORE, STATS_FLAG_RESET, STRING_BYTES_MAX, stream, topic,
};

/// Appends one whole frame (length included) to `out`.
pub fn encode_request(out: &mut Vec<u8>, request_id: u64, req: &Request<'_>) {
    let start = begin_frame(out, req.api() as u16, req.version(), request_id);
    match req {
        Request::Produce { topic, partition, batches } => {
            put_str(out, topic, STRING_BYTES_MAX);
            out.extend_from_slice(&partition.to_be_bytes());
            out.extend_from_slice(batches);
        }
        Request::Fetch { topic, partition, offset, max_bytes, max_wait_ms } => {
            put_str(out, topic, STRING_BYTES_MAX);
            out.extend_from_slice(&partition.to_be_bytes());
            out.extend_from_slice(&offset.to_be_bytes());
            out.extend_from_slice(&max_bytes.to_be_bytes());
            out.extend_from_slice(&max_wait_ms.to_be_bytes());
        }
        Request::ListOffsets { topic, partition, spec } => {
            put_str(out, topic, STRING_BYTES_MAX);
            out.extend_from_slice(&partition.to_be_bytes());
            out.extend_from_slice(&spec_value(*spec).to_be_bytes());
        }
        Request::Metadata { topics } => {
            let count = put_count_u32(out, topics.len());
            for topic in topics.iter().take(count) {
                put_str(out, topic, STRING_BYTES_MAX);
            }
        }
        Request::CreateTopic { topic, partitions, retention, indices } => {
            put_str(out, topic, STRING_BYTES_MAX);
            out.extend_from_slice(&partitions.to_be_bytes());
            // Version 3 (indices) carries retention too: the default when none.
            if retention.is_some() || !indices.is_empty() {
                topic::put_retention(out, &retention.unwrap_or_default());
            }
            if !indices.is_empty() {
                topic::put_indices(out, indices);
            }
        }
        Request::AlterTopic { topic, ms, bytes } => {
            put_str(out, topic, STRING_BYTES_MAX);
            out.extend_from_slice(&topic::change_value(*ms).to_be_bytes());
            out.extend_from_slice(&topic::change_value(*bytes).to_be_bytes());
        }
        Request::DescribeTopic { topic } => put_str(out, topic, STRING_BYTES_MAX),
        Request::Query { topic, partition, from, to, wait_ms } => {
            put_str(out, topic, STRING_BYTES_MAX);
            out.extend_from_slice(&partition.to_be_bytes());
            query::put_end(out, from);
            query::put_end(out, to);
            out.extend_from_slice(&wait_ms.to_be_bytes());
        }
        Request::DeleteTopic { topic } => put_str(out, topic, STRING_BYTES_MAX),
        Request::OffsetCommit { group, topic, partition, offset } => {
            put_str(out, group, STRING_BYTES_MAX);
            put_str(out, topic, STRING_BYTES_MAX);
            out.extend_from_slice(&partition.to_be_bytes());
            out.extend_from_slice(&offset.to_be_bytes());
        }
        Request::OffsetFetch { group, topic, partition } => {
            put_str(out, group, STRING_BYTES_MAX);
            put_str(out, topic, STRING_BYTES_MAX);
            out.extend_from_slice(&partition.to_be_bytes());
        }
        Request::Stats { reset, per_core } => {
            out.push(if *reset { STATS_FLAG_RESET } else { 0 } | if *per_core { STATS_FLAG_PER_CORE } else { 0 })
        }
        Request::Metrics | Request::ServerInfo => {}
        Request::Subscribe { topic, partition, credit_bytes, start } => {
            stream::encode_subscribe(out, topic, *partition, *credit_bytes, start)
        }
        Request::Grant { subscription, bytes } => {
            out.extend_from_slice(&subscription.to_be_bytes());
            out.extend_from_slice(&bytes.to_be_bytes());
        }
        Request::Cancel { request } => out.extend_from_slice(&request.to_be_bytes()),
        Request::Authenticate { token } => put_str(out, token, STRING_BYTES_MAX),
    }
    end_frame(out, start);
}

/// Appends one whole reply frame to `out`. `api` is the request's; an
/// `Error` reply is written as [`encode_error`] writes it.
pub fn encode_response(out: &mut Vec<u8>, api: Api, request_id: u64, resp: &Response<'_>) {
    if let Response::Error { code, message } = resp {
        return encode_error(out, api as u16, request_id, *code, message);
    }
    let body_api = resp.api().unwrap_or(api);
    // The header always names the layout of the body that follows, so even
    // a caller's mismatch yields a frame that decodes.
    debug_assert_eq!(api, body_api, "a {api:?} request answered with {resp:?}");
    let start = begin_frame(out, body_api as u16, 0, request_id);
    match resp {
        Response::Produce { base_offset, last_offset } => {
            out.extend_from_slice(&base_offset.to_be_bytes());
            out.extend_from_slice(&last_offset.to_be_bytes());
        }
        Response::Fetch { high_watermark, start_offset, next_offset, batches } => {
            out.extend_from_slice(&high_watermark.to_be_bytes());
            out.extend_from_slice(&start_offset.to_be_bytes());
            out.extend_from_slice(&next_offset.to_be_bytes());
            out.extend_from_slice(batches);
        }
        Response::ListOffsets { offset } | Response::OffsetFetch { offset } => {
            out.extend_from_slice(&optional_offset_value(*offset).to_be_bytes());
        }
        Response::Metadata { core_addrs, topics } => {
            let core_count = u16::try_from(core_addrs.len()).unwrap_or(u16::MAX);
            out.extend_from_slice(&core_count.to_be_bytes());
            for addr in core_addrs.iter().take(core_count.into()) {
                put_str(out, addr, STRING_BYTES_MAX);
            }
            let topic_count = put_count_u32(out, topics.len());
            for topic in topics.iter().take(topic_count) {
                put_str(out, &topic.name, STRING_BYTES_MAX);
                let partition_count = put_count_u32(out, topic.partition_cores.len());
                for core in topic.partition_cores.iter().take(partition_count) {
                    out.extend_from_slice(&core.to_be_bytes());
                }
            }
        }
        Response::Stats { stages, cores } => {
            put_stage_rows(out, stages);
            // Only a version 2 request gets cores, and its reply the trailer.
            if !cores.is_empty() {
                let count = u16::try_from(cores.len()).unwrap_or(u16::MAX);
                out.extend_from_slice(&count.to_be_bytes());
                cores.iter().take(count.into()).for_each(|rows| put_stage_rows(out, rows));
            }
        }
        Response::Metrics { cores } => {
            let core_count = u16::try_from(cores.len()).unwrap_or(u16::MAX);
            out.extend_from_slice(&core_count.to_be_bytes());
            for metrics in cores.iter().take(core_count.into()) {
                let count = u16::try_from(metrics.len()).unwrap_or(u16::MAX);
                out.extend_from_slice(&count.to_be_bytes());
                for (name, value) in metrics.iter().take(count.into()) {
                    put_str(out, name, STRING_BYTES_MAX);
                    out.extend_from_slice(&value.to_be_bytes());
                }
            }
        }
        Response::ServerInfo(info) => {
            out.extend_from_slice(&info.protocol_version.to_be_bytes());
            put_str(out, &info.server_version, STRING_BYTES_MAX);
            out.extend_from_slice(&info.cores.to_be_bytes());
            put_str(out, &info.fsync, STRING_BYTES_MAX);
            for v in [info.batch_bytes_max, info.frame_bytes_max, info.partitions_per_topic_max] {
                out.extend_from_slice(&v.to_be_bytes());
            }
        }
        Response::AlterTopic { retention } => topic::put_retention(out, retention),
        Response::DescribeTopic { description } => topic::put_description(out, description),
        Response::Query(b) => query::put_bounds(out, b),
        Response::Subscribe { from_offset, next_offset, high_watermark, batches } => {
            for v in [from_offset, next_offset, high_watermark] {
                out.extend_from_slice(&v.to_be_bytes());
            }
            out.extend_from_slice(batches);
        }
        Response::Authenticate { user } => put_str(out, user, STRING_BYTES_MAX),
        Response::CreateTopic
        | Response::DeleteTopic
        | Response::OffsetCommit
        | Response::Grant
        | Response::Cancel
        | Response::Error { .. } => {}
    }
    end_frame(out, start);
}

/// Appends an error frame (for requests whose api may be unknown: takes the raw u16).
/// The message is cut to 1024 bytes at a char boundary.
pub fn encode_error(out: &mut Vec<u8>, api: u16, request_id: u64, code: ErrorCode, message: &str) {
    // Code 0 is success: an error reply must never read as one.
    let code = if code.code() == 0 { ErrorCode::Internal } else { code };
    let start = begin_frame(out, api, code.code(), request_id);
    put_str(out, message, MESSAGE_BYTES_MAX);
    end_frame(out, start);
}

/// Writes a zero length (patched by [`end_frame`]) and the header; returns where the frame starts.
/// Bytes before the batches in a successful Fetch reply: length, header,
/// high watermark, start offset, next offset.
pub const FETCH_REPLY_FRONT_BYTES: usize = LEN_BYTES + HEADER_BYTES + 24;

/// Turns `frame` (whose first [`FETCH_REPLY_FRONT_BYTES`] are reserved and
/// the rest are the batches) into a whole Fetch reply frame, in place: the
/// same bytes [`encode_response`] writes for `Response::Fetch`, without
/// copying the batches. Panics if `frame` is shorter than the reserved front.
pub fn put_fetch_reply_front(frame: &mut [u8], request_id: u64, high_watermark: u64, start_offset: u64, next_offset: u64) {
    let mut front = Vec::with_capacity(FETCH_REPLY_FRONT_BYTES);
    begin_frame(&mut front, Api::Fetch as u16, 0, request_id);
    front.extend_from_slice(&high_watermark.to_be_bytes());
    front.extend_from_slice(&start_offset.to_be_bytes());
    front.extend_from_slice(&next_offset.to_be_bytes());
    frame[..FETCH_REPLY_FRONT_BYTES].copy_from_slice(&front);
    end_frame(frame, 0);
}

/// A Stats block: a u16 count, then each row's name and six figures.
fn put_stage_rows(out: &mut Vec<u8>, stages: &[crate::stats::StageLatency]) {
    let count = u16::try_from(stages.len()).unwrap_or(u16::MAX);
    out.extend_from_slice(&count.to_be_bytes());
    for s in stages.iter().take(count.into()) {
        put_str(out, &s.stage, STRING_BYTES_MAX);
        for v in [s.count, s.p50_us, s.p90_us, s.p99_us, s.p999_us, s.max_us] {
            out.extend_from_slice(&v.to_be_bytes());
        }
    }
}

fn begin_frame(out: &mut Vec<u8>, api: u16, version_or_error: u16, request_id: u64) -> usize {
    let start = out.len();
    out.extend_from_slice(&[0; LEN_BYTES]);
    out.extend_from_slice(&api.to_be_bytes());
    out.extend_from_slice(&version_or_error.to_be_bytes());
    out.extend_from_slice(&request_id.to_be_bytes());
    debug_assert_eq!(out.len() - start, LEN_BYTES + HEADER_BYTES);
    start
}

fn end_frame(out: &mut [u8], start: usize) {
    // A body past 4 GiB cannot be described; u32::MAX is over every
    // receiver's frame limit, so the peer refuses the frame cleanly.
    let length = u32::try_from(out.len() - start - LEN_BYTES).unwrap_or(u32::MAX);
    out[start..start + LEN_BYTES].copy_from_slice(&length.to_be_bytes());
}

/// Writes `s` cut to `str_bytes_max` bytes at a char boundary, so the cut string stays UTF-8.
pub(super) fn put_str(out: &mut Vec<u8>, s: &str, str_bytes_max: usize) {
    let mut end = s.len().min(str_bytes_max.min(STRING_BYTES_MAX));
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    out.extend_from_slice(&(end as u16).to_be_bytes());
    out.extend_from_slice(&s.as_bytes()[..end]);
}

/// Writes a u32 item count, capped at what a u32 holds; returns how many items to write.
fn put_count_u32(out: &mut Vec<u8>, items: usize) -> usize {
    let count = u32::try_from(items).unwrap_or(u32::MAX);
    out.extend_from_slice(&count.to_be_bytes());
    count as usize
}

fn spec_value(spec: OffsetSpec) -> i64 {
    match spec {
        OffsetSpec::Earliest => SPEC_EARLIEST,
        OffsetSpec::Latest => SPEC_LATEST,
        // Negative values are the named specs on the wire; see OffsetSpec::Timestamp.
        OffsetSpec::Timestamp(ms) => ms.max(0),
    }
}

fn optional_offset_value(offset: Option<u64>) -> i64 {
    // Offsets are Kafka's i64 and count records from 0, so none reaches i64::MAX.
    offset.map_or(NO_OFFSET, |o| i64::try_from(o).unwrap_or(i64::MAX))
}
