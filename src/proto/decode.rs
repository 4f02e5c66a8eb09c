//! Frames to values. Every read goes through [`Reader`], which checks the
//! bytes are there first, and every count is checked against the bytes left
//! before anything is allocated for it.

use super::{
    Api, DecodeError, ErrorCode, HEADER_BYTES, Header, LEN_BYTES, MESSAGE_BYTES_MAX, NO_OFFSET, OffsetSpec, Request, Response,
    SPEC_EARLIEST, SPEC_LATEST, STATS_FLAG_PER_CORE, STATS_FLAG_RESET, STATS_PER_CORE_VERSION, ServerInfo, TopicMetadata, VERSION,
};
use super::{query, stream, topic};
use crate::catalog::TopicRetention;
use crate::stats::StageLatency;

/// A string's smallest encoding: its u16 length with no bytes.
const STRING_BYTES_MIN: usize = 2;
/// A Metadata topic's smallest encoding: an empty name and a zero partition count.
const TOPIC_BYTES_MIN: usize = STRING_BYTES_MIN + 4;
const CORE_BYTES: usize = 2;
/// A Stats row's smallest encoding: an empty name and six u64 figures.
const STAGE_BYTES_MIN: usize = STRING_BYTES_MIN + 6 * 8;
/// A Metrics reply's core with no metrics: its u16 count.
const METRICS_CORE_BYTES_MIN: usize = 2;
/// A metric's smallest encoding: an empty name and its u64 value.
const METRIC_BYTES_MIN: usize = STRING_BYTES_MIN + 8;

/// A result that names the header once it was read, so an error reply can carry its request id.
type FrameResult<T> = Result<T, (Option<Header>, DecodeError)>;

/// Decodes one whole request frame (including its 4-byte length). The header is returned even when
/// the body fails, so the error reply can carry the request id: Err((Some(header), e)) or Err((None, e)) if
/// even the header is short.
pub fn decode_request(frame: &[u8]) -> Result<(Header, Request<'_>), (Option<Header>, DecodeError)> {
    let (header, body) = split_frame(frame)?;
    let fail = |e| (Some(header), e);
    // The api first: a request for an api this server lacks is answered as
    // such whatever version of it was asked for.
    let api = Api::from_u16(header.api).ok_or(fail(DecodeError::UnknownApi(header.api)))?;
    let version = header.version_or_error;
    let create_topic_later =
        api == Api::CreateTopic && (version == topic::CREATE_TOPIC_RETENTION_VERSION || version == topic::CREATE_TOPIC_INDICES_VERSION);
    let stats_per_core = api == Api::Stats && version == STATS_PER_CORE_VERSION;
    if version != VERSION && !create_topic_later && !stats_per_core {
        return Err(fail(DecodeError::UnsupportedVersion(version)));
    }
    let mut r = Reader { rest: body };
    let req = request_body(api, version, &mut r).map_err(fail)?;
    r.finish().map_err(fail)?;
    Ok((header, req))
}

/// Decodes one whole response frame; needs the api from the header to pick the body layout.
/// An error reply decodes whatever its api, as it may answer a request for an unknown one.
pub fn decode_response(frame: &[u8]) -> Result<(Header, Response<'_>), (Option<Header>, DecodeError)> {
    let (header, body) = split_frame(frame)?;
    let fail = |e| (Some(header), e);
    let mut r = Reader { rest: body };
    let resp = match (ErrorCode::from_code(header.version_or_error), Api::from_u16(header.api)) {
        (Some(code), _) => error_body(code, &mut r),
        (None, Some(api)) => response_body(api, &mut r),
        (None, None) => Err(DecodeError::UnknownApi(header.api)),
    }
    .map_err(fail)?;
    r.finish().map_err(fail)?;
    Ok((header, resp))
}

/// The header and body of a whole frame, whose `length` must match its size exactly.
fn split_frame(frame: &[u8]) -> FrameResult<(Header, &[u8])> {
    let Some((length, after_length)) = frame.split_first_chunk::<LEN_BYTES>() else {
        return Err((None, DecodeError::Short));
    };
    let Some((h, body)) = after_length.split_first_chunk::<HEADER_BYTES>() else {
        return Err((None, DecodeError::Short));
    };
    let length = u32::from_be_bytes(*length) as usize;
    if length < HEADER_BYTES {
        // The frame says it has no header, so the bytes there are not one.
        return Err((None, DecodeError::BadValue("frame length is under the 12-byte header")));
    }
    let [a0, a1, v0, v1, id @ ..] = *h;
    let header =
        Header { api: u16::from_be_bytes([a0, a1]), version_or_error: u16::from_be_bytes([v0, v1]), request_id: u64::from_be_bytes(id) };
    match length.cmp(&after_length.len()) {
        std::cmp::Ordering::Greater => Err((Some(header), DecodeError::Short)),
        std::cmp::Ordering::Less => Err((Some(header), DecodeError::Trailing)),
        std::cmp::Ordering::Equal => Ok((header, body)),
    }
}

/// The body of a request; struct fields are read in the order written, which is their wire order.
fn request_body<'a>(api: Api, version: u16, r: &mut Reader<'a>) -> Result<Request<'a>, DecodeError> {
    Ok(match api {
        Api::Produce => {
            let topic = r.str()?;
            let partition = r.u32()?;
            let batches = r.take_rest();
            // Nothing to append would leave the reply's offsets undefined.
            if batches.is_empty() {
                return Err(DecodeError::BadValue("produce carries no batch"));
            }
            Request::Produce { topic, partition, batches }
        }
        Api::Fetch => Request::Fetch { topic: r.str()?, partition: r.u32()?, offset: r.u64()?, max_bytes: r.u32()?, max_wait_ms: r.u32()? },
        Api::ListOffsets => Request::ListOffsets { topic: r.str()?, partition: r.u32()?, spec: offset_spec(r.i64()?)? },
        Api::Metadata => {
            let declared = r.u32()?;
            let count = r.count(declared.into(), STRING_BYTES_MIN)?;
            let mut topics = Vec::with_capacity(count);
            for _ in 0..count {
                topics.push(r.str()?);
            }
            Request::Metadata { topics }
        }
        Api::CreateTopic => {
            let (topic, partitions) = (r.str()?, r.u32()?);
            let retention = if version == VERSION { None } else { Some(topic::retention(r)?) };
            let indices = if version == topic::CREATE_TOPIC_INDICES_VERSION { topic::indices(r)? } else { Vec::new() };
            // Version 3 always carries retention; the default reads as
            // none given, which encodes back to the same bytes.
            let retention = retention.filter(|r| version != topic::CREATE_TOPIC_INDICES_VERSION || *r != TopicRetention::default());
            Request::CreateTopic { topic, partitions, retention, indices }
        }
        Api::AlterTopic => Request::AlterTopic { topic: r.str()?, ms: topic::change(r.i64()?)?, bytes: topic::change(r.i64()?)? },
        Api::DescribeTopic => Request::DescribeTopic { topic: r.str()? },
        Api::Query => Request::Query { topic: r.str()?, partition: r.u32()?, from: query::end(r)?, to: query::end(r)?, wait_ms: r.u32()? },
        Api::DeleteTopic => Request::DeleteTopic { topic: r.str()? },
        Api::OffsetCommit => Request::OffsetCommit { group: r.str()?, topic: r.str()?, partition: r.u32()?, offset: r.u64()? },
        Api::OffsetFetch => Request::OffsetFetch { group: r.str()?, topic: r.str()?, partition: r.u32()? },
        Api::Stats => {
            let flags = r.u8()?;
            // Version 1 knows bit 0; version 2 bits 0 and 1, and must set bit 1 (else it is version 1).
            let allowed = if version == STATS_PER_CORE_VERSION { STATS_FLAG_RESET | STATS_FLAG_PER_CORE } else { STATS_FLAG_RESET };
            if flags & !allowed != 0 || (version == STATS_PER_CORE_VERSION && flags & STATS_FLAG_PER_CORE == 0) {
                return Err(DecodeError::BadValue("stats flags other than those of its version are set"));
            }
            Request::Stats { reset: flags & STATS_FLAG_RESET != 0, per_core: flags & STATS_FLAG_PER_CORE != 0 }
        }
        Api::Metrics => Request::Metrics,
        Api::ServerInfo => Request::ServerInfo,
        Api::Subscribe => stream::decode_subscribe(r)?,
        Api::Grant => Request::Grant { subscription: r.u64()?, bytes: r.u64()? },
        Api::Cancel => Request::Cancel { request: r.u64()? },
        Api::Authenticate => Request::Authenticate { token: r.str()? },
    })
}

fn offset_spec(spec: i64) -> Result<OffsetSpec, DecodeError> {
    match spec {
        SPEC_EARLIEST => Ok(OffsetSpec::Earliest),
        SPEC_LATEST => Ok(OffsetSpec::Latest),
        ms if ms >= 0 => Ok(OffsetSpec::Timestamp(ms)),
        _ => Err(DecodeError::BadValue("offset spec is negative but neither -2 (earliest) nor -1 (latest)")),
    }
}

/// The body of a successful reply.
fn response_body<'a>(api: Api, r: &mut Reader<'a>) -> Result<Response<'a>, DecodeError> {
    Ok(match api {
        Api::Produce => Response::Produce { base_offset: r.u64()?, last_offset: r.u64()? },
        Api::Fetch => Response::Fetch { high_watermark: r.u64()?, start_offset: r.u64()?, next_offset: r.u64()?, batches: r.take_rest() },
        Api::ListOffsets => Response::ListOffsets { offset: optional_offset(r.i64()?)? },
        Api::Metadata => metadata_body(r)?,
        Api::CreateTopic => Response::CreateTopic,
        Api::DeleteTopic => Response::DeleteTopic,
        Api::AlterTopic => Response::AlterTopic { retention: topic::retention(r)? },
        Api::DescribeTopic => Response::DescribeTopic { description: topic::description(r)? },
        Api::Query => Response::Query(query::bounds(r)?),
        Api::OffsetCommit => Response::OffsetCommit,
        Api::OffsetFetch => Response::OffsetFetch { offset: optional_offset(r.i64()?)? },
        Api::Stats => stats_body(r)?,
        Api::Metrics => metrics_body(r)?,
        Api::ServerInfo => Response::ServerInfo(ServerInfo {
            protocol_version: r.u16()?,
            server_version: r.str()?.to_owned(),
            cores: r.u16()?,
            fsync: r.str()?.to_owned(),
            batch_bytes_max: r.u32()?,
            frame_bytes_max: r.u32()?,
            partitions_per_topic_max: r.u32()?,
        }),
        Api::Subscribe => stream::decode_push(r)?,
        Api::Grant => Response::Grant,
        Api::Cancel => Response::Cancel,
        Api::Authenticate => Response::Authenticate { user: r.str()?.to_owned() },
    })
}

fn metrics_body<'a>(r: &mut Reader<'a>) -> Result<Response<'a>, DecodeError> {
    let declared = r.u16()?;
    let core_count = r.count(declared.into(), METRICS_CORE_BYTES_MIN)?;
    let mut cores = Vec::with_capacity(core_count);
    for _ in 0..core_count {
        let declared = r.u16()?;
        let count = r.count(declared.into(), METRIC_BYTES_MIN)?;
        let mut metrics = Vec::with_capacity(count);
        for _ in 0..count {
            metrics.push((r.str()?, r.u64()?));
        }
        cores.push(metrics);
    }
    Ok(Response::Metrics { cores })
}

fn stats_body<'a>(r: &mut Reader<'a>) -> Result<Response<'a>, DecodeError> {
    let stages = stage_rows(r)?;
    // A reply to version 2 (per core): each core's rows follow, at least one
    // core's (a server never writes an empty trailer: it would be a second
    // encoding of the version 1 reply).
    let mut cores = Vec::new();
    if !r.is_empty() {
        let declared = r.u16()?;
        if declared == 0 {
            return Err(DecodeError::BadValue("a per-core Stats trailer of no cores"));
        }
        let count = r.count(declared.into(), 2)?;
        for _ in 0..count {
            cores.push(stage_rows(r)?);
        }
    }
    Ok(Response::Stats { stages, cores })
}

fn stage_rows(r: &mut Reader<'_>) -> Result<Vec<StageLatency>, DecodeError> {
    let declared = r.u16()?;
    let count = r.count(declared.into(), STAGE_BYTES_MIN)?;
    let mut stages = Vec::with_capacity(count);
    for _ in 0..count {
        stages.push(StageLatency {
            stage: r.str()?.to_owned(),
            count: r.u64()?,
            p50_us: r.u64()?,
            p90_us: r.u64()?,
            p99_us: r.u64()?,
            p999_us: r.u64()?,
            max_us: r.u64()?,
        });
    }
    Ok(stages)
}

fn optional_offset(offset: i64) -> Result<Option<u64>, DecodeError> {
    match offset {
        NO_OFFSET => Ok(None),
        o => u64::try_from(o).map(Some).map_err(|_| DecodeError::BadValue("offset is negative but not -1 (none)")),
    }
}

fn metadata_body<'a>(r: &mut Reader<'a>) -> Result<Response<'a>, DecodeError> {
    let declared = r.u16()?;
    let core_count = r.count(declared.into(), STRING_BYTES_MIN)?;
    let mut core_addrs = Vec::with_capacity(core_count);
    for _ in 0..core_count {
        core_addrs.push(r.str()?.to_owned());
    }
    let declared = r.u32()?;
    let topic_count = r.count(declared.into(), TOPIC_BYTES_MIN)?;
    let mut topics = Vec::with_capacity(topic_count);
    for _ in 0..topic_count {
        let name = r.str()?.to_owned();
        let declared = r.u32()?;
        let partition_count = r.count(declared.into(), CORE_BYTES)?;
        let mut partition_cores = Vec::with_capacity(partition_count);
        for _ in 0..partition_count {
            partition_cores.push(r.u16()?);
        }
        topics.push(TopicMetadata { name, partition_cores });
    }
    Ok(Response::Metadata { core_addrs, topics })
}

fn error_body<'a>(code: ErrorCode, r: &mut Reader<'a>) -> Result<Response<'a>, DecodeError> {
    let message = r.str()?;
    // Encoders cut messages at this size, so a longer one has no encoding.
    if message.len() > MESSAGE_BYTES_MAX {
        return Err(DecodeError::BadValue("error message is over 1024 bytes"));
    }
    Ok(Response::Error { code, message })
}

/// A big-endian reader over a frame body that never reads past it.
pub(super) struct Reader<'a> {
    rest: &'a [u8],
}

impl<'a> Reader<'a> {
    fn array<const N: usize>(&mut self) -> Result<[u8; N], DecodeError> {
        let (head, tail) = self.rest.split_first_chunk::<N>().ok_or(DecodeError::Short)?;
        self.rest = tail;
        Ok(*head)
    }

    /// Nothing is left to read.
    fn is_empty(&self) -> bool {
        self.rest.is_empty()
    }

    pub(super) fn u8(&mut self) -> Result<u8, DecodeError> {
        self.array().map(|[b]: [u8; 1]| b)
    }

    pub(super) fn u16(&mut self) -> Result<u16, DecodeError> {
        self.array().map(u16::from_be_bytes)
    }

    pub(super) fn u32(&mut self) -> Result<u32, DecodeError> {
        self.array().map(u32::from_be_bytes)
    }

    pub(super) fn u64(&mut self) -> Result<u64, DecodeError> {
        self.array().map(u64::from_be_bytes)
    }

    pub(super) fn i64(&mut self) -> Result<i64, DecodeError> {
        self.array().map(i64::from_be_bytes)
    }

    pub(super) fn str(&mut self) -> Result<&'a str, DecodeError> {
        let str_bytes = usize::from(self.u16()?);
        if self.rest.len() < str_bytes {
            return Err(DecodeError::Short);
        }
        let (bytes, tail) = self.rest.split_at(str_bytes);
        self.rest = tail;
        std::str::from_utf8(bytes).map_err(|_| DecodeError::BadUtf8)
    }

    /// A declared count of items at least `item_bytes_min` long each,
    /// refused when the bytes left could not hold that many: so a count is
    /// safe to size an allocation with, and a loop over it ends quickly.
    pub(super) fn count(&self, declared: u64, item_bytes_min: usize) -> Result<usize, DecodeError> {
        usize::try_from(declared).ok().filter(|&n| n <= self.rest.len() / item_bytes_min).ok_or(DecodeError::Short)
    }

    pub(super) fn take_rest(&mut self) -> &'a [u8] {
        std::mem::take(&mut self.rest)
    }

    fn finish(self) -> Result<(), DecodeError> {
        if self.rest.is_empty() { Ok(()) } else { Err(DecodeError::Trailing) }
    }
}
