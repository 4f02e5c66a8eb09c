//! Requests and errors by protocol, api and error code: a core's server
//! task counts each request it dispatches and each error reply it queues
//! into fixed arrays indexed by small numbers (no map, no lock, no
//! allocation on the hot path); a scrape copies the arrays and renders the
//! labels ([`super::prometheus`]).
//!
//! The api is the broker command a request decoded into, whatever protocol
//! it came by (a Kafka Produce naming many partitions counts once, as
//! `produce`); the code is the native protocol's error code (docs/PROTOCOL.md),
//! which Kafka's errors are mapped from as well.

/// The protocols, by the index of their codec in the server's list (the
/// native one first, Kafka's second: `Server::start`).
pub const PROTOCOLS: [&str; 2] = ["native", "kafka"];

/// The apis, by [`Api`] index.
pub const APIS: [&str; 19] = [
    "produce",
    "fetch",
    "list_offsets",
    "metadata",
    "create_topic",
    "alter_topic",
    "describe_topic",
    "delete_topic",
    "commit_offset",
    "fetch_offset",
    "stats",
    "metrics",
    "server_info",
    "query",
    "subscribe",
    "protocol",
    "authenticate",
    "other",
    // A frame that did not decode: its api is not known.
    "undecodable",
];

/// An index into [`APIS`].
pub type Api = u8;
/// The api of a frame that did not decode.
pub const API_UNDECODABLE: Api = (APIS.len() - 1) as Api;
/// The api of a subscription's pushes.
pub const API_SUBSCRIBE: Api = 14;
/// The api of a streaming control request (a Grant, a Cancel) and anything
/// not named above.
pub const API_OTHER: Api = (APIS.len() - 2) as Api;

/// Error codes counted apart: the native protocol's 1 to `CODES - 2`;
/// a larger one (a newer code) counts in the one before last, and the last
/// is a frame refused undecoded (no code known here).
pub const CODES: usize = 30;
/// Where a code past the known ones counts.
pub const CODE_OTHER: usize = CODES - 2;
/// Where an undecodable frame's refusal counts.
pub const CODE_UNDECODABLE: usize = CODES - 1;

/// One core's counts (or several cores' summed).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestCounts {
    pub requests: [[u64; APIS.len()]; PROTOCOLS.len()],
    pub errors: [[[u64; CODES]; APIS.len()]; PROTOCOLS.len()],
    /// Request frame bytes received (`[.][.][0]`) and reply bytes queued
    /// (`[.][.][1]`, a subscription's pushes under `subscribe`).
    pub bytes: [[[u64; 2]; APIS.len()]; PROTOCOLS.len()],
}

impl Default for RequestCounts {
    fn default() -> Self {
        RequestCounts {
            requests: [[0; APIS.len()]; PROTOCOLS.len()],
            errors: [[[0; CODES]; APIS.len()]; PROTOCOLS.len()],
            bytes: [[[0; 2]; APIS.len()]; PROTOCOLS.len()],
        }
    }
}

impl RequestCounts {
    /// A request of `api` read on a connection of protocol `protocol`.
    #[inline]
    pub fn request(&mut self, protocol: u8, api: Api) {
        self.requests[usize::from(protocol).min(PROTOCOLS.len() - 1)][usize::from(api).min(APIS.len() - 1)] += 1;
    }

    /// `n` bytes of a request (`out` false) or of its reply (`out` true).
    #[inline]
    pub fn bytes(&mut self, protocol: u8, api: Api, out: bool, n: usize) {
        self.bytes[usize::from(protocol).min(PROTOCOLS.len() - 1)][usize::from(api).min(APIS.len() - 1)][usize::from(out)] += n as u64;
    }

    /// An error reply with code `code` (the native protocol's numbering,
    /// or [`CODE_UNDECODABLE`]) to a request of `api`.
    #[inline]
    pub fn error(&mut self, protocol: u8, api: Api, code: usize) {
        let code = if code == 0 || code >= CODE_OTHER && code != CODE_UNDECODABLE { CODE_OTHER } else { code };
        self.errors[usize::from(protocol).min(PROTOCOLS.len() - 1)][usize::from(api).min(APIS.len() - 1)][code] += 1;
    }

    /// Adds `other`'s counts to these.
    pub fn merge(&mut self, other: &RequestCounts) {
        for (mine, theirs) in self.requests.iter_mut().flatten().zip(other.requests.iter().flatten()) {
            *mine += theirs;
        }
        for (mine, theirs) in self.errors.iter_mut().flatten().flatten().zip(other.errors.iter().flatten().flatten()) {
            *mine += theirs;
        }
        for (mine, theirs) in self.bytes.iter_mut().flatten().flatten().zip(other.bytes.iter().flatten().flatten()) {
            *mine += theirs;
        }
    }

    /// Every nonzero request count: (protocol, api, count).
    pub fn requests_nonzero(&self) -> impl Iterator<Item = (&'static str, &'static str, u64)> + '_ {
        self.requests
            .iter()
            .enumerate()
            .flat_map(|(p, apis)| apis.iter().enumerate().filter(|(_, n)| **n > 0).map(move |(a, n)| (PROTOCOLS[p], APIS[a], *n)))
    }

    /// Every nonzero byte count: (protocol, api, "in" or "out", bytes).
    pub fn bytes_nonzero(&self) -> impl Iterator<Item = (&'static str, &'static str, &'static str, u64)> + '_ {
        self.bytes.iter().enumerate().flat_map(|(p, apis)| {
            apis.iter().enumerate().flat_map(move |(a, dirs)| {
                dirs.iter().enumerate().filter(|(_, n)| **n > 0).map(move |(d, n)| (PROTOCOLS[p], APIS[a], ["in", "out"][d], *n))
            })
        })
    }

    /// Every nonzero error count: (protocol, api, code index, count).
    pub fn errors_nonzero(&self) -> impl Iterator<Item = (&'static str, &'static str, usize, u64)> + '_ {
        self.errors.iter().enumerate().flat_map(|(p, apis)| {
            apis.iter().enumerate().flat_map(move |(a, codes)| {
                codes.iter().enumerate().filter(|(_, n)| **n > 0).map(move |(c, n)| (PROTOCOLS[p], APIS[a], c, *n))
            })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_land_in_their_cells_and_merge() {
        // Proves: a request and an error count in their protocol, api and code; out-of-range indices count in the
        // last cells rather than panicking; merging adds cell by cell.
        let mut a = RequestCounts::default();
        a.request(0, 0);
        a.request(1, 1);
        a.request(9, 200);
        a.error(0, 0, 5);
        a.error(0, 0, 999);
        a.error(1, API_UNDECODABLE, CODE_UNDECODABLE);
        a.bytes(0, 0, false, 100);
        a.bytes(0, 0, true, 16);
        a.bytes(1, API_SUBSCRIBE, true, 7);
        let mut b = a.clone();
        b.merge(&a);
        let req: Vec<_> = b.requests_nonzero().collect();
        assert_eq!(req, [("native", "produce", 2), ("kafka", "fetch", 2), ("kafka", "undecodable", 2)]);
        let err: Vec<_> = b.errors_nonzero().collect();
        assert_eq!(err, [("native", "produce", 5, 2), ("native", "produce", CODE_OTHER, 2), ("kafka", "undecodable", CODE_UNDECODABLE, 2)]);
        let bytes: Vec<_> = b.bytes_nonzero().collect();
        assert_eq!(bytes, [("native", "produce", "in", 200), ("native", "produce", "out", 32), ("kafka", "subscribe", "out", 14)]);
        assert_eq!(APIS[usize::from(API_SUBSCRIBE)], "subscribe");
    }
}
