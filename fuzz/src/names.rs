//! Topic and group names, as the client checks them before sending
//! (`client::check_name`) and the server and catalog check them before
//! anything reaches the disk (`catalog::validate_topic_name`), and segment
//! file names as recovery parses them from a directory listing.
//!
//! The input, if it is UTF-8 (the wire refuses other strings before any name
//! check), is tried whole and split at spaces, newlines, slashes and NULs.
//! The first 8 bytes are also a segment start position.

use std::path::{Component, Path};

use strom::catalog::{TOPIC_NAME_BYTES_MAX, validate_topic_name};
use strom::client::{ClientError, check_name};
use strom::log::segment::{log_dir, parse_segment_name, segment_name};

/// The data directory names are checked against.
const DATA_DIR: &str = "/var/lib/strom";
/// An error naming a refused name quotes at most 300 escaped characters of it.
const REFUSAL_BYTES_MAX: usize = 300 * 10 + 200;

pub fn check(data: &[u8]) {
    if let Some(pos) = data.first_chunk::<8>() {
        let pos = u64::from_le_bytes(*pos);
        assert_eq!(parse_segment_name(&segment_name(pos)), Some(pos));
    }
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    for name in std::iter::once(text).chain(text.split([' ', '\n', '/', '\0'])) {
        check_name_rule(name);
        check_segment_name(name);
    }
}

/// The client and the server agree on every name, and a name they accept
/// is one plain file-name component inside the data directory.
fn check_name_rule(name: &str) {
    let server = validate_topic_name(name);
    let client = check_name(name);
    assert_eq!(server.is_ok(), client.is_ok(), "client and server disagree on {name:?}");
    if let (Err(server), Err(client)) = (&server, &client) {
        assert!(matches!(client, ClientError::InvalidName(_)), "{client:?}");
        // The refusal quotes the name, cut: a reply about a bad name stays small.
        assert!(server.to_string().len() <= REFUSAL_BYTES_MAX, "{} bytes", server.to_string().len());
        assert!(client.to_string().len() <= REFUSAL_BYTES_MAX, "{} bytes", client.to_string().len());
        return;
    }
    assert!(!name.is_empty() && name.len() <= TOPIC_NAME_BYTES_MAX, "{} bytes accepted", name.len());
    assert!(!name.contains(['/', '\\', '\0']), "{name:?} accepted");
    // The catalog and offsets files are space- and line-separated text.
    assert!(!name.contains(char::is_whitespace), "{name:?} accepted");
    let components: Vec<Component<'_>> = Path::new(name).components().collect();
    assert!(matches!(components.as_slice(), [Component::Normal(c)] if *c == name), "{name:?} is not one plain component");
    let data_dir = Path::new(DATA_DIR);
    let joined = data_dir.join(name);
    assert_eq!(joined.parent(), Some(data_dir), "{name:?} leaves the data directory");
    assert!(joined.starts_with(data_dir) && joined != data_dir);
}

/// A segment file name parses only if it is exactly what `segment_name` writes.
fn check_segment_name(name: &str) {
    if let Some(pos) = parse_segment_name(name) {
        assert_eq!(segment_name(pos), name, "{name:?} parsed as segment {pos}");
        let dir = log_dir(Path::new(DATA_DIR), 0);
        assert_eq!(dir.join(name).parent(), Some(dir.as_path()));
    }
}
