//! systemd's readiness protocol (sd_notify(3)) for `strom serve` under a
//! `Type=notify` unit: one datagram of `KEY=VALUE` lines to the Unix socket
//! `$NOTIFY_SOCKET` names (a path, or an abstract name written `@NAME`).
//! Written by hand: it is one `sendto`, and the protocol is fixed.
use std::ffi::OsStr;
use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr, UnixDatagram};

/// The environment variable systemd sets for a `Type=notify` service.
const NOTIFY_SOCKET: &str = "NOTIFY_SOCKET";

/// Sends `state` (for example `READY=1`) to systemd; Ok(false) when not
/// run by systemd (no `$NOTIFY_SOCKET`), an error naming the socket when
/// the send fails.
pub fn notify(state: &str) -> Result<bool, String> {
    notify_to(std::env::var_os(NOTIFY_SOCKET).as_deref(), state)
}

/// [`notify`] to the socket `socket` names (`$NOTIFY_SOCKET`'s value).
fn notify_to(socket: Option<&OsStr>, state: &str) -> Result<bool, String> {
    let Some(path) = socket else { return Ok(false) };
    let bytes = path.as_encoded_bytes();
    let addr = match bytes.first() {
        Some(b'@') => SocketAddr::from_abstract_name(&bytes[1..]),
        Some(b'/') => SocketAddr::from_pathname(path),
        _ => return Err(format!("{NOTIFY_SOCKET}={} is neither a path nor an @abstract name", path.to_string_lossy())),
    }
    .map_err(|e| format!("{NOTIFY_SOCKET}={}: {e}", path.to_string_lossy()))?;
    let sock = UnixDatagram::unbound().map_err(|e| format!("a socket for {NOTIFY_SOCKET}: {e}"))?;
    sock.send_to_addr(state.as_bytes(), &addr).map_err(|e| format!("telling systemd {state:?} at {}: {e}", path.to_string_lossy()))?;
    Ok(true)
}

/// Tells systemd, if it runs the server, and says on stderr when that
/// failed: readiness is a convenience, never a reason to stop serving.
pub fn tell(state: &str) {
    if let Err(e) = notify(state) {
        eprintln!("strom: {e}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Proves: a path socket receives exactly the state sent, an abstract
    // one (`@NAME`) does too, a relative name is refused, and without a
    // socket nothing is sent.
    #[test]
    fn notifies_path_and_abstract_sockets() {
        let dir = std::env::temp_dir().join(format!("strom-notify-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("notify.sock");
        let listener = UnixDatagram::bind(&path).unwrap();
        assert_eq!(notify_to(Some(path.as_os_str()), "READY=1\nSTATUS=serving"), Ok(true));
        let mut buf = [0u8; 64];
        let n = listener.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"READY=1\nSTATUS=serving");

        let name = format!("strom-notify-test-{}", std::process::id());
        let abstract_listener = UnixDatagram::bind_addr(&SocketAddr::from_abstract_name(name.as_bytes()).unwrap()).unwrap();
        assert_eq!(notify_to(Some(OsStr::new(&format!("@{name}"))), "STOPPING=1"), Ok(true));
        let n = abstract_listener.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"STOPPING=1");

        assert!(notify_to(Some(OsStr::new("relative/path")), "READY=1").unwrap_err().contains("neither a path"));
        assert_eq!(notify_to(None, "READY=1"), Ok(false));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
