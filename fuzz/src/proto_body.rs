//! Each api's request and reply body on its own. Whole-frame fuzzing
//! (`proto_decode`) spends most inputs on the length and header; here the
//! first byte picks the api (and for a reply, whether it is an error), the
//! harness frames the rest correctly, and every input reaches a body decoder.
//!
//! ```text
//! request input:   selector | body           api = APIS[(selector & 0x7F) % 16]; version 2 when
//!                                            selector >= 0x80 and the api is CreateTopic, else 1
//! response input:  selector | body           api = APIS[(selector & 0x7F) % 16], success
//!                  selector | code | body    when selector >= 0x80: error `code` (0 still means success)
//! ```

use strom::proto::{
    self, Api, CREATE_TOPIC_RETENTION_VERSION, DecodeError, ErrorCode, Header, MESSAGE_BYTES_MAX, Request, Response, VERSION,
};

/// The request id every framed input carries, so a decoder that mixed up
/// fields would show it.
const REQUEST_ID: u64 = 0x0102_0304_0506_0708;
/// Selector bit of a response input whose second byte is an error code.
const ERROR_BIT: u8 = 0x80;
/// The apis of this version, in selector order: 1..=13 at selectors 0..13
/// (so saved inputs keep their apis), then the streaming ones. A new api
/// goes at the end.
const APIS: [Api; 18] = [
    Api::Produce,
    Api::Fetch,
    Api::ListOffsets,
    Api::Metadata,
    Api::CreateTopic,
    Api::DeleteTopic,
    Api::OffsetCommit,
    Api::OffsetFetch,
    Api::Stats,
    Api::Metrics,
    Api::AlterTopic,
    Api::DescribeTopic,
    Api::ServerInfo,
    Api::Subscribe,
    Api::Grant,
    Api::Cancel,
    Api::Query,
    Api::Authenticate,
];
/// A version no api accepts (CreateTopic takes 1 to 3, the rest 1).
const UNSUPPORTED_VERSION: u16 = 4;

/// The api a selector byte picks: every api, none unknown (`proto_decode` covers unknown ones).
pub fn api_of(selector: u8) -> Api {
    // The error bit is masked first, so a selector names the same api in a
    // request and in an error reply (and the seeds keep their apis).
    APIS[usize::from(selector & !ERROR_BIT) % APIS.len()]
}

/// The selector that picks `api` (without the error bit).
pub fn selector_of(api: Api) -> u8 {
    APIS.iter().position(|&a| a == api).expect("every api is in APIS") as u8
}

/// A whole frame (length included) around `body`.
pub fn frame(api: u16, version_or_error: u16, body: &[u8]) -> Vec<u8> {
    let length = u32::try_from(proto::HEADER_BYTES + body.len()).expect("fuzz inputs are small");
    [&length.to_be_bytes()[..], &api.to_be_bytes(), &version_or_error.to_be_bytes(), &REQUEST_ID.to_be_bytes(), body].concat()
}

/// Decodes a request body of the chosen api: the frame checks of
/// `proto::fuzz_check`, then what a body decoder promises on its own.
pub fn check_request(data: &[u8]) {
    let Some((&selector, body)) = data.split_first() else {
        return;
    };
    let api = api_of(selector);
    let version = request_version(api, selector);
    let framed = frame(api as u16, version, body);
    proto::fuzz_check(&framed);
    let header = Header { api: api as u16, version_or_error: version, request_id: REQUEST_ID };
    match proto::decode_request(&framed) {
        Ok((h, req)) => {
            assert_eq!((h, req.api(), req.version()), (header, api, version));
            check_request_edges(api, version, body);
        }
        Err((h, e)) => {
            // The header is whole and the length right, so only the body can fail.
            assert_eq!(h, Some(header), "{e}");
            assert!(matches!(e, DecodeError::Short | DecodeError::Trailing | DecodeError::BadUtf8 | DecodeError::BadValue(_)), "{e:?}");
        }
    }
    // The version is checked before the body: any other version is refused as such.
    let other = frame(api as u16, UNSUPPORTED_VERSION, body);
    assert_eq!(proto::decode_request(&other).err().map(|(_, e)| e), Some(DecodeError::UnsupportedVersion(UNSUPPORTED_VERSION)));
}

/// The request version a selector picks: 2 (with retention) only for a CreateTopic.
pub fn request_version(api: Api, selector: u8) -> u16 {
    if api == Api::CreateTopic && selector & ERROR_BIT != 0 { CREATE_TOPIC_RETENTION_VERSION } else { VERSION }
}

/// On a body that decodes: one byte more is trailing and one byte less is
/// short, except for a Produce, whose batches run to the end of the frame.
fn check_request_edges(api: Api, version: u16, body: &[u8]) {
    if api == Api::Produce {
        return;
    }
    let longer = [body, &[0]].concat();
    assert_eq!(proto::decode_request(&frame(api as u16, version, &longer)).err().map(|(_, e)| e), Some(DecodeError::Trailing));
    if let Some((_, shorter)) = body.split_last() {
        assert!(proto::decode_request(&frame(api as u16, version, shorter)).is_err(), "{api:?} body accepted without its last byte");
    }
}

/// Decodes a reply body of the chosen api, or an error reply.
pub fn check_response(data: &[u8]) {
    let Some((&selector, rest)) = data.split_first() else {
        return;
    };
    let api = api_of(selector);
    let (code, body) = match rest.split_first() {
        Some((&code, body)) if selector & ERROR_BIT != 0 => (u16::from(code), body),
        _ => (0, rest),
    };
    let framed = frame(api as u16, code, body);
    proto::fuzz_check(&framed);
    let header = Header { api: api as u16, version_or_error: code, request_id: REQUEST_ID };
    match proto::decode_response(&framed) {
        Ok((h, resp)) => {
            assert_eq!(h, header);
            match (ErrorCode::from_code(code), &resp) {
                (Some(expected), Response::Error { code, message }) => {
                    assert_eq!(*code, expected);
                    assert_eq!(code.code(), h.version_or_error);
                    assert!(message.len() <= MESSAGE_BYTES_MAX);
                }
                (None, _) => assert_eq!(resp.api(), Some(api), "{resp:?}"),
                (Some(_), _) => panic!("a reply with error {code} decoded as {resp:?}"),
            }
        }
        Err((h, e)) => {
            assert_eq!(h, Some(header), "{e}");
            assert!(matches!(e, DecodeError::Short | DecodeError::Trailing | DecodeError::BadUtf8 | DecodeError::BadValue(_)), "{e:?}");
        }
    }
}

/// A request input: the selector of `req`'s api, then its body as encoded.
pub fn request_input(req: &Request<'_>) -> Vec<u8> {
    let mut out = Vec::new();
    proto::encode_request(&mut out, REQUEST_ID, req);
    let selector = selector_of(req.api()) | if req.version() == VERSION { 0 } else { ERROR_BIT };
    [&[selector][..], &out[proto::LEN_BYTES + proto::HEADER_BYTES..]].concat()
}

/// A response input: the selector of `api`, then the body of `resp` as encoded
/// (with the error code byte for an error reply).
pub fn response_input(api: Api, resp: &Response<'_>) -> Vec<u8> {
    let mut out = Vec::new();
    proto::encode_response(&mut out, api, REQUEST_ID, resp);
    let body = &out[proto::LEN_BYTES + proto::HEADER_BYTES..];
    match resp {
        Response::Error { code, .. } => {
            [&[ERROR_BIT | selector_of(api)][..], &[u8::try_from(code.code()).expect("codes fit a byte")], body].concat()
        }
        _ => [&[selector_of(api)][..], body].concat(),
    }
}
