//! The Query api (14): the bounds of a range of a partition's records, by
//! offset or by named index value, waiting for its end (PROTOCOL.md
//! "14 Query").
//!
//! ```text
//! request:  topic string | partition u32 | from REF | to REF | wait_ms u32
//! REF:      kind u8 = 0 (offset) | offset i64   (negative: from the end, -1 the last record)
//!           kind u8 = 1 (index)  | name string | value i64
//! response: from u64 | end u64 | flags u8 (bit 0: open) | high_watermark u64 | start_offset u64
//! ```
use super::DecodeError;
use super::decode::Reader;
use super::encode::put_str;
use crate::core::query::QueryBounds;

const REF_OFFSET: u8 = 0;
const REF_INDEX: u8 = 1;
const FLAG_OPEN: u8 = 1;

/// One end of a queried range, as the wire carries it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QueryEnd<'a> {
    /// An offset; negative ones count from the end (-1: the last record).
    Offset(i64),
    /// A named index's value: as `from` the first record at or above it, as
    /// `to` the last record at or below it.
    Index { name: &'a str, value: i64 },
}

pub(super) fn put_end(out: &mut Vec<u8>, end: &QueryEnd<'_>) {
    match end {
        QueryEnd::Offset(o) => {
            out.push(REF_OFFSET);
            out.extend_from_slice(&o.to_be_bytes());
        }
        QueryEnd::Index { name, value } => {
            out.push(REF_INDEX);
            put_str(out, name, super::STRING_BYTES_MAX);
            out.extend_from_slice(&value.to_be_bytes());
        }
    }
}

pub(super) fn end<'a>(r: &mut Reader<'a>) -> Result<QueryEnd<'a>, DecodeError> {
    match r.u8()? {
        REF_OFFSET => Ok(QueryEnd::Offset(r.i64()?)),
        REF_INDEX => Ok(QueryEnd::Index { name: r.str()?, value: r.i64()? }),
        _ => Err(DecodeError::BadValue("a query end's kind is neither 0 (offset) nor 1 (index)")),
    }
}

pub(super) fn put_bounds(out: &mut Vec<u8>, b: &QueryBounds) {
    out.extend_from_slice(&b.from.to_be_bytes());
    out.extend_from_slice(&b.end.to_be_bytes());
    out.push(if b.open { FLAG_OPEN } else { 0 });
    out.extend_from_slice(&b.high_watermark.to_be_bytes());
    out.extend_from_slice(&b.start_offset.to_be_bytes());
}

pub(super) fn bounds(r: &mut Reader<'_>) -> Result<QueryBounds, DecodeError> {
    let (from, end) = (r.u64()?, r.u64()?);
    let open = match r.u8()? {
        0 => false,
        FLAG_OPEN => true,
        _ => return Err(DecodeError::BadValue("query flags other than bit 0 are set")),
    };
    Ok(QueryBounds { from, end, open, high_watermark: r.u64()?, start_offset: r.u64()? })
}

#[cfg(test)]
mod tests {
    use super::super::{Request, decode_request, encode_request};
    use super::*;

    // Proves the Query example in PROTOCOL.md is what the encoder writes,
    // and that every shorter body of it is refused (never misread).
    #[test]
    fn example_matches_the_doc() {
        let mut f = Vec::new();
        let req = Request::Query {
            topic: "ticks",
            partition: 0,
            from: QueryEnd::Index { name: "ts", value: 1000 },
            to: QueryEnd::Offset(-1),
            wait_ms: 0,
        };
        encode_request(&mut f, 7, &req);
        let doc = "00 00 00 31 00 0e 00 01 00 00 00 00 00 00 00 07 00 05 74 69 63 6b 73 00 00 00 00 \
                   01 00 02 74 73 00 00 00 00 00 00 03 e8 00 ff ff ff ff ff ff ff ff 00 00 00 00";
        let want: Vec<u8> = doc.split_whitespace().map(|b| u8::from_str_radix(b, 16).unwrap()).collect();
        assert_eq!(f, want);
        assert_eq!(decode_request(&f).unwrap().1, req);
        for cut in 16..f.len() {
            let mut short = f[..cut].to_vec();
            short[..4].copy_from_slice(&((cut - 4) as u32).to_be_bytes());
            assert!(decode_request(&short).is_err(), "a body cut at {cut} decoded");
        }
        let mut bad_kind = f.clone();
        bad_kind[0x1b] = 2;
        assert!(decode_request(&bad_kind).is_err(), "kind 2 decoded");
    }
}
