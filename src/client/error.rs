//! The client's errors, worded for the person at the terminal: each
//! message says what failed and, where there is one, what to do.
use std::fmt;
use std::io::ErrorKind;

use crate::catalog::TOPIC_NAME_BYTES_MAX;
use crate::proto::ErrorCode;

/// Why a client call failed.
#[derive(Debug)]
pub enum ClientError {
    /// The connection failed (refused, reset, closed, timed out). The client
    /// is unusable afterwards.
    Io(std::io::Error),
    /// The server answered the request with an error.
    Server { code: ErrorCode, message: String },
    /// The server sent something this client cannot take: an undecodable
    /// reply, a reply to no request in flight, a frame over the limit, or
    /// the peer does not speak Strom's protocol at all. The client is
    /// unusable afterwards.
    Protocol(String),
    /// A topic or group name that breaks the naming rules; nothing was sent.
    InvalidName(String),
    /// A call the client refuses before sending: too many requests in flight,
    /// a request over the frame limit, an empty batch. Nothing was sent.
    InvalidArgument(String),
}

impl ClientError {
    /// Whether the same call may succeed if made again later: for a server
    /// error, when its code says so; for a broken connection, on a new one.
    /// A Produce retried after an I/O error may be stored twice.
    pub fn is_retriable(&self) -> bool {
        match self {
            ClientError::Io(e) => matches!(
                e.kind(),
                ErrorKind::ConnectionRefused
                    | ErrorKind::ConnectionReset
                    | ErrorKind::ConnectionAborted
                    | ErrorKind::NotConnected
                    | ErrorKind::BrokenPipe
                    | ErrorKind::TimedOut
                    | ErrorKind::WouldBlock
                    | ErrorKind::UnexpectedEof
                    | ErrorKind::Interrupted
            ),
            ClientError::Server { code, .. } => code.retriable(),
            ClientError::Protocol(_) | ClientError::InvalidName(_) | ClientError::InvalidArgument(_) => false,
        }
    }
}

impl fmt::Display for ClientError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ClientError::Io(e) => f.write_str(&io_text(e)),
            ClientError::Server { code, message } => {
                let message = if message.is_empty() { format!("the server refused the request ({code:?})") } else { message.clone() };
                write!(f, "{message}{}", server_hint(*code))
            }
            ClientError::Protocol(s) => f.write_str(s),
            ClientError::InvalidName(name) => write!(
                f,
                "invalid name \"{name}\": a topic or group name is 1 to {TOPIC_NAME_BYTES_MAX} bytes of A-Z a-z 0-9 . _ -, and not . or .."
            ),
            ClientError::InvalidArgument(s) => f.write_str(s),
        }
    }
}

impl std::error::Error for ClientError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            ClientError::Io(e) => Some(e),
            _ => None,
        }
    }
}

impl From<std::io::Error> for ClientError {
    fn from(e: std::io::Error) -> Self {
        ClientError::Io(e)
    }
}

/// An I/O error as a sentence: the kinds a user meets get words of their
/// own; the rest keep the system's text, which names its errno once.
pub(crate) fn io_text(e: &std::io::Error) -> String {
    match e.kind() {
        ErrorKind::ConnectionRefused => "the connection was refused (is `strom serve` running there?)".into(),
        ErrorKind::ConnectionReset | ErrorKind::ConnectionAborted | ErrorKind::BrokenPipe => {
            "the server dropped the connection (it may have stopped or restarted)".into()
        }
        _ => match e.raw_os_error() {
            // "Connection timed out (os error 110)": the words, without the number.
            Some(errno) => nix::errno::Errno::from_raw(errno).desc().to_lowercase(),
            None => e.to_string(),
        },
    }
}

/// What to do about a server error, as a clause after its message.
fn server_hint(code: ErrorCode) -> &'static str {
    match code {
        ErrorCode::UnknownTopic => " (strom topic list shows the topics)",
        ErrorCode::UnknownPartition => " (strom topic list shows each topic's partition count)",
        ErrorCode::TopicExists => " (choose another name, or delete it first with strom topic delete)",
        ErrorCode::OffsetOutOfRange => " (start from earliest or latest instead)",
        ErrorCode::TooManyConnections => " (close other clients or raise the server's --connections-max)",
        ErrorCode::FrameTooLarge => " (send smaller batches, or raise the server's --frame-bytes-max)",
        ErrorCode::UnsupportedVersion | ErrorCode::UnknownApi => " (the server runs another version of Strom)",
        _ => "",
    }
}
