//! The streaming apis: Subscribe (15) and the pushes that answer it, Grant
//! (16) and Cancel (17). Kept apart from the one-reply apis so that the
//! range Query (14), which streams too, can join them here.
//!
//! ```text
//! Subscribe: topic str | partition u32 | credit_bytes u64 | start_kind u8 | start
//!            start: 0 earliest, 1 latest (nothing follows); 2 offset u64;
//!                   3 time i64 ms >= 0; 4 index: name str | value i64
//! push:      from_offset u64 | next_offset u64 | high_watermark u64 | batches
//! Grant:     subscription u64 | bytes u64      (no reply on success)
//! Cancel:    request u64                        (reply: empty body)
//! ```
use super::decode::Reader;
use super::encode::put_str;
use super::{Api, DecodeError, FETCH_REPLY_FRONT_BYTES, HEADER_BYTES, LEN_BYTES, STRING_BYTES_MAX};

const START_EARLIEST: u8 = 0;
const START_LATEST: u8 = 1;
const START_OFFSET: u8 = 2;
const START_TIME: u8 = 3;
const START_INDEX: u8 = 4;

/// Bytes before the batches in a push: length, header, three offsets. The
/// same as a Fetch reply's front, so a push is built in a Fetch's headroom.
pub const PUSH_FRONT_BYTES: usize = LEN_BYTES + HEADER_BYTES + 24;
const _: () = assert!(PUSH_FRONT_BYTES == FETCH_REPLY_FRONT_BYTES);

/// Where a subscription starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SubscribeStart<'a> {
    /// The partition's earliest retained offset.
    Earliest,
    /// The partition's end when the subscription begins: only records produced after.
    Latest,
    Offset(u64),
    /// The first record whose timestamp is at or after this many ms since
    /// the epoch (the end, when none is yet).
    Time(i64),
    /// The first record whose value of the named index is >= `value` (the
    /// end, when none is yet).
    Index {
        name: &'a str,
        value: i64,
    },
}

pub(super) fn decode_subscribe<'a>(r: &mut Reader<'a>) -> Result<super::Request<'a>, DecodeError> {
    let topic = r.str()?;
    let partition = r.u32()?;
    let credit_bytes = r.u64()?;
    let start = match r.u8()? {
        START_EARLIEST => SubscribeStart::Earliest,
        START_LATEST => SubscribeStart::Latest,
        START_OFFSET => SubscribeStart::Offset(r.u64()?),
        START_TIME => match r.i64()? {
            ms if ms >= 0 => SubscribeStart::Time(ms),
            _ => return Err(DecodeError::BadValue("subscribe start time is negative")),
        },
        START_INDEX => SubscribeStart::Index { name: r.str()?, value: r.i64()? },
        _ => return Err(DecodeError::BadValue("subscribe start kind is not 0 to 4")),
    };
    Ok(super::Request::Subscribe { topic, partition, credit_bytes, start })
}

pub(super) fn encode_subscribe(out: &mut Vec<u8>, topic: &str, partition: u32, credit_bytes: u64, start: &SubscribeStart<'_>) {
    put_str(out, topic, STRING_BYTES_MAX);
    out.extend_from_slice(&partition.to_be_bytes());
    out.extend_from_slice(&credit_bytes.to_be_bytes());
    match *start {
        SubscribeStart::Earliest => out.push(START_EARLIEST),
        SubscribeStart::Latest => out.push(START_LATEST),
        SubscribeStart::Offset(o) => {
            out.push(START_OFFSET);
            out.extend_from_slice(&o.to_be_bytes());
        }
        SubscribeStart::Time(ms) => {
            out.push(START_TIME);
            // The wire has no negative time: one before the epoch is the epoch.
            out.extend_from_slice(&ms.max(0).to_be_bytes());
        }
        SubscribeStart::Index { name, value } => {
            out.push(START_INDEX);
            put_str(out, name, STRING_BYTES_MAX);
            out.extend_from_slice(&value.to_be_bytes());
        }
    }
}

pub(super) fn decode_push<'a>(r: &mut Reader<'a>) -> Result<super::Response<'a>, DecodeError> {
    Ok(super::Response::Subscribe { from_offset: r.u64()?, next_offset: r.u64()?, high_watermark: r.u64()?, batches: r.take_rest() })
}

/// Turns `frame` (whose first [`PUSH_FRONT_BYTES`] are reserved and the
/// rest are batches) into a whole push frame in place, as
/// [`super::put_fetch_reply_front`] does for a Fetch reply.
pub fn put_push_front(frame: &mut [u8], request_id: u64, from_offset: u64, next_offset: u64, high_watermark: u64) {
    let length = u32::try_from(frame.len() - LEN_BYTES).unwrap_or(u32::MAX);
    let mut front = Vec::with_capacity(PUSH_FRONT_BYTES);
    front.extend_from_slice(&length.to_be_bytes());
    front.extend_from_slice(&(Api::Subscribe as u16).to_be_bytes());
    front.extend_from_slice(&0u16.to_be_bytes());
    front.extend_from_slice(&request_id.to_be_bytes());
    for v in [from_offset, next_offset, high_watermark] {
        front.extend_from_slice(&v.to_be_bytes());
    }
    frame[..PUSH_FRONT_BYTES].copy_from_slice(&front);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::{Request, Response, decode_response, encode_request, encode_response};

    #[test]
    fn the_protocol_doc_example_is_what_the_codec_writes() {
        // Proves: the Subscribe example of docs/PROTOCOL.md, byte for byte,
        // and its first push, built in place as the server builds it.
        let mut req = Vec::new();
        let start = SubscribeStart::Offset(42);
        encode_request(&mut req, 5, &Request::Subscribe { topic: "orders", partition: 0, credit_bytes: 1 << 20, start });
        let mut want = vec![0, 0, 0, 0x29, 0, 15, 0, 1, 0, 0, 0, 0, 0, 0, 0, 5, 0, 6];
        want.extend_from_slice(b"orders");
        want.extend_from_slice(&[0, 0, 0, 0, 0, 0, 0, 0, 0, 0x10, 0, 0, 2, 0, 0, 0, 0, 0, 0, 0, 0x2a]);
        assert_eq!(req, want);

        let mut push = vec![0xEE; PUSH_FRONT_BYTES];
        put_push_front(&mut push, 5, 42, 42, 42);
        let mut want = vec![0, 0, 0, 0x24, 0, 15, 0, 0, 0, 0, 0, 0, 0, 0, 0, 5];
        for _ in 0..3 {
            want.extend_from_slice(&42u64.to_be_bytes());
        }
        assert_eq!(push, want);
        let resp = Response::Subscribe { from_offset: 42, next_offset: 42, high_watermark: 42, batches: &[] };
        let mut encoded = Vec::new();
        encode_response(&mut encoded, Api::Subscribe, 5, &resp);
        assert_eq!(encoded, push, "built in place or encoded, a push is the same bytes");
        assert_eq!(decode_response(&push).unwrap().1, resp);
    }
}
