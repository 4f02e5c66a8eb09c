//! `--addr`: what a user types (`localhost`, `host:port`, `[::1]`, an IP)
//! to the addresses to try, and connecting with messages that say what
//! failed.
use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::time::Duration;

use strom::client::Client;

/// The port `strom serve` listens on by default, used when `--addr` names none.
pub const PORT_DEFAULT: u16 = 7070;
/// How long a client command waits for the server to accept the connection.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a client command waits for any reply (or to write a request)
/// before giving up on a server that stopped answering.
pub const REPLY_TIMEOUT: Duration = Duration::from_secs(30);

/// `addr` as a host and a port: the default port when none is given.
/// Pure (no name lookup), so every form is unit-tested.
pub fn host_port(addr: &str) -> Result<(String, u16), String> {
    let addr = addr.trim();
    if addr.is_empty() {
        return Err("--addr is empty; give HOST[:PORT], such as localhost or 127.0.0.1:7070".into());
    }
    if let Ok(sa) = addr.parse::<SocketAddr>() {
        return Ok((sa.ip().to_string(), sa.port()));
    }
    // A bare IPv6 address has colons of its own: take it whole.
    if let Ok(ip) = addr.trim_start_matches('[').trim_end_matches(']').parse::<IpAddr>() {
        return Ok((ip.to_string(), PORT_DEFAULT));
    }
    let (host, port) = match addr.rsplit_once(':') {
        Some((host, port)) => {
            let port = port.parse::<u16>().map_err(|_| {
                format!("the port in --addr \"{addr}\" must be a number from 0 to 65535 (or leave it out for {PORT_DEFAULT})")
            })?;
            (host, port)
        }
        None => (addr, PORT_DEFAULT),
    };
    if host.is_empty() || host.contains(':') {
        return Err(format!("--addr \"{addr}\" is not HOST[:PORT]; give one such as localhost or 127.0.0.1:7070"));
    }
    Ok((host.trim_start_matches('[').trim_end_matches(']').to_string(), port))
}

/// The addresses `addr` names, looked up.
pub fn resolve(addr: &str) -> Result<Vec<SocketAddr>, String> {
    let (host, port) = host_port(addr)?;
    let found: Vec<SocketAddr> = (host.as_str(), port)
        .to_socket_addrs()
        .map_err(|_| format!("cannot find the host \"{host}\" of --addr (check the name, or give an IP address such as 127.0.0.1)"))?
        .collect();
    if found.is_empty() {
        return Err(format!("the host \"{host}\" of --addr has no address"));
    }
    Ok(found)
}

/// A connection to the server at `addr`, with the CLI's reply timeout.
pub fn connect(addr: &str) -> Result<Client, String> {
    let addrs = resolve(addr)?;
    let shown = if addrs.len() == 1 { addrs[0].to_string() } else { format!("{addr} ({} addresses)", addrs.len()) };
    let mut client = Client::connect_timeout(&addrs[..], CONNECT_TIMEOUT).map_err(|e| format!("cannot connect to {shown}: {e}"))?;
    client.set_timeout(Some(REPLY_TIMEOUT)).map_err(|e| format!("cannot set the reply timeout on the connection to {shown}: {e}"))?;
    Ok(client)
}

#[cfg(test)]
mod tests {
    use super::*;

    // Proves: every form of --addr parses to the host and port meant, the
    // default port filling in a missing one.
    #[test]
    fn addr_forms() {
        let hp = |s: &str| host_port(s).unwrap();
        assert_eq!(hp("localhost"), ("localhost".into(), 7070));
        assert_eq!(hp("localhost:9000"), ("localhost".into(), 9000));
        assert_eq!(hp("127.0.0.1"), ("127.0.0.1".into(), 7070));
        assert_eq!(hp("127.0.0.1:1"), ("127.0.0.1".into(), 1));
        assert_eq!(hp("::1"), ("::1".into(), 7070));
        assert_eq!(hp("[::1]"), ("::1".into(), 7070));
        assert_eq!(hp("[::1]:8080"), ("::1".into(), 8080));
        assert_eq!(hp(" broker.example "), ("broker.example".into(), 7070));
    }

    // Proves: a bad --addr is refused with a sentence naming what is wrong.
    #[test]
    fn bad_addr_sentences() {
        assert!(host_port("").unwrap_err().contains("--addr is empty"));
        assert!(host_port("localhost:http").unwrap_err().contains("must be a number from 0 to 65535"));
        assert!(host_port("localhost:99999").unwrap_err().contains("must be a number"));
        assert!(host_port(":7070").unwrap_err().contains("is not HOST[:PORT]"));
    }

    // Proves: localhost resolves (to a loopback address on the default port).
    #[test]
    fn localhost_resolves() {
        let addrs = resolve("localhost").unwrap();
        assert!(addrs.iter().all(|a| a.ip().is_loopback() && a.port() == PORT_DEFAULT), "{addrs:?}");
    }
}
