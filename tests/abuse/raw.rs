//! Raw frames for the abuse cases: what the client library would never
//! send (lying lengths, bad names, foreign protocols), and reading replies
//! and closes off a plain socket.
use std::io::{ErrorKind, Read};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use strom::proto::{self, ErrorCode, Request, Response};

use crate::harness::batch_of;
use crate::harness::serve::HANG;

pub fn connect_raw(addr: SocketAddr) -> TcpStream {
    let s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(HANG)).unwrap();
    s.set_write_timeout(Some(HANG)).unwrap();
    s
}

pub use crate::harness::read_frame;

/// The error code of a reply, or None for a success.
pub fn reply_code(frame: &[u8]) -> Option<ErrorCode> {
    match proto::decode_response(frame) {
        Ok((_, Response::Error { code, .. })) => Some(code),
        Ok(_) => None,
        Err(e) => panic!("undecodable reply {e:?}"),
    }
}

/// True when the server closed the connection (EOF or reset); false when
/// bytes arrive or the read times out.
pub fn closed(s: &mut TcpStream) -> bool {
    let mut b = [0u8; 1];
    match s.read(&mut b) {
        Ok(n) => n == 0,
        Err(e) => !matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut),
    }
}

/// Resets the connection (RST, not FIN): SO_LINGER 0, then close.
pub fn reset(s: TcpStream) {
    socket2::SockRef::from(&s).set_linger(Some(Duration::ZERO)).unwrap();
    drop(s);
}

pub fn frame(api: u16, version: u16, request_id: u64, body: &[u8]) -> Vec<u8> {
    let mut f = Vec::with_capacity(16 + body.len());
    f.extend_from_slice(&((12 + body.len()) as u32).to_be_bytes());
    f.extend_from_slice(&api.to_be_bytes());
    f.extend_from_slice(&version.to_be_bytes());
    f.extend_from_slice(&request_id.to_be_bytes());
    f.extend_from_slice(body);
    f
}

/// A string field: u16 length, then the bytes (any bytes: names the client
/// library would refuse are the point).
pub fn string(bytes: &[u8]) -> Vec<u8> {
    let mut v = (bytes.len() as u16).to_be_bytes().to_vec();
    v.extend_from_slice(bytes);
    v
}

pub fn cat(parts: &[&[u8]]) -> Vec<u8> {
    parts.concat()
}

pub fn encode(request_id: u64, req: &Request<'_>) -> Vec<u8> {
    let mut f = Vec::new();
    proto::encode_request(&mut f, request_id, req);
    f
}

/// A valid batch with a field changed and its CRC-32C made right again, so
/// that the lie itself is what validation must catch.
pub fn lying_batch(edit: impl FnOnce(&mut Vec<u8>)) -> Vec<u8> {
    let mut b = batch_of(&[b"lie", b"lie"]);
    edit(&mut b);
    let crc = crc32c::crc32c(&b[21..]);
    b[17..21].copy_from_slice(&crc.to_be_bytes());
    b
}

pub fn tls_client_hello() -> Vec<u8> {
    // A TLS 1.2 record header (handshake, 0x0303) and the start of a ClientHello.
    let mut hello = vec![0x16, 0x03, 0x01, 0x00, 0xc8, 0x01, 0x00, 0x00, 0xc4, 0x03, 0x03];
    hello.extend_from_slice(&[0x42; 32]); // random
    hello.extend_from_slice(&[0x00, 0x00, 0x02, 0x13, 0x01, 0x01, 0x00]); // no session, one suite, no compression
    hello
}
