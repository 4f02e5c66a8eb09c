//! Authentication and permissions (issue 16): `[auth]` in the config file,
//! the native Authenticate request (`--token`, STROM_TOKEN), and SASL/PLAIN
//! on the Kafka listener through kcat, kafka-python and confluent-kafka.
//! A missing token, a wrong one, and one without the permission are each
//! refused with their own error, logged and counted, while an authorised
//! client is served; a reload that removes a user or changes its token ends
//! what the old one opened. Trials needing kcat or the Python clients
//! report themselves ignored without them.
mod harness;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use harness::serve::{HANG, Serve};
use harness::skip::{self, KAFKA_VENV_PYTHON, Need};
use harness::test_dir;
use strom::client::{Client, ClientError};
use strom::proto::ErrorCode;

const KCAT: Need = Need::Tools(&["kcat"], "kcat");
const READER_TOKEN: &str = "reader-token-0123456789";
const OPS_TOKEN: &str = "ops-token-0123456789abcdef";

fn main() {
    skip::main(vec![
        skip::trial("native_refusals_are_typed_logged_and_counted", &[], native_refusals_are_typed_logged_and_counted),
        skip::trial("cli_takes_the_token_from_a_flag_or_the_environment", &[], cli_takes_the_token_from_a_flag_or_the_environment),
        skip::trial("a_reload_ends_what_a_removed_user_opened", &[], a_reload_ends_what_a_removed_user_opened),
        skip::trial("sighup_applies_a_changed_auth_section", &[], sighup_applies_a_changed_auth_section),
        skip::trial("kafka_sasl_handshake_v0_takes_a_bare_token", &[], kafka_sasl_handshake_v0_takes_a_bare_token),
        skip::trial("kcat_over_sasl_plain", &[KCAT], kcat_over_sasl_plain),
        skip::trial("python_clients_over_sasl_plain", &[Need::KafkaVenv], python_clients_over_sasl_plain),
    ]);
}

/// Two users: `reader` may read topics `pub*`; `ops` may do anything.
fn auth_toml() -> String {
    format!(
        "[auth]\nenabled = true\n\
         [[auth.users]]\nname = \"reader\"\ntoken = \"{READER_TOKEN}\"\npermissions = [{{ topic = \"pub*\", allow = [\"read\"] }}]\n\
         [[auth.users]]\nname = \"ops\"\ntoken = \"{OPS_TOKEN}\"\npermissions = [{{ topic = \"*\", allow = [\"read\", \"write\", \"admin\"] }}]\n"
    )
}

fn write_config(dir: &Path, text: &str) -> PathBuf {
    std::fs::create_dir_all(dir).unwrap();
    let path = dir.join("strom.toml");
    std::fs::write(&path, text).unwrap();
    path
}

/// A server with authentication on (and a Kafka listener), logging at info.
fn start(name: &str) -> (Serve, PathBuf) {
    let root = test_dir(name);
    let config = write_config(&root, &auth_toml());
    let serve = Serve::on(&root.join("data")).kafka().args(&["--config", config.to_str().unwrap()]).env("RUST_LOG", "info").start();
    (serve, root)
}

fn client_as(serve: &Serve, token: &str) -> Client {
    let mut c = serve.client();
    c.authenticate(token).unwrap();
    c
}

fn code(e: ClientError) -> ErrorCode {
    match e {
        ClientError::Server { code, .. } => code,
        other => panic!("expected a server error, got {other:?}"),
    }
}

/// The sum over cores of the metric named `name`, read as `ops`.
fn metric(serve: &Serve, name: &str) -> u64 {
    let mut c = client_as(serve, OPS_TOKEN);
    c.metrics().unwrap().iter().flatten().filter(|(n, _)| n == name).map(|(_, v)| v).sum()
}

// Proves: with authentication on, a request before authenticating is
// AuthRequired (and the connection stays usable), a wrong token AuthFailed
// (and the connection is closed), a missing permission NotAuthorized for
// produce, create, fetch, subscribe and a stats reset, while an authorised
// user is served and sees only its topics listed; each refusal is counted
// and logged, and no token ever reaches the log.
fn native_refusals_are_typed_logged_and_counted() {
    let (serve, _root) = start("auth_native");
    let mut ops = client_as(&serve, OPS_TOKEN);
    for t in ["pub1", "private"] {
        ops.create_topic(t, 1).unwrap();
    }
    ops.produce_values("pub1", 0, &[b"one", b"two"]).unwrap();
    ops.produce_values("private", 0, &[b"secret"]).unwrap();

    let mut anon = serve.client();
    assert_eq!(code(anon.metadata(&[]).unwrap_err()), ErrorCode::AuthRequired);
    assert_eq!(code(anon.fetch("pub1", 0, 0, 1 << 20, Duration::ZERO).unwrap_err()), ErrorCode::AuthRequired);
    // The same connection authenticates, and is served from then on.
    assert_eq!(anon.authenticate(READER_TOKEN).unwrap(), "reader");
    assert_eq!(
        harness::values(&anon.fetch("pub1", 0, 0, 1 << 20, Duration::ZERO).unwrap().batches),
        vec![(0, "one".into()), (1, "two".into())]
    );

    let mut wrong = serve.client();
    assert_eq!(code(wrong.authenticate("not-a-token-of-anyone").unwrap_err()), ErrorCode::AuthFailed);
    assert!(matches!(wrong.metadata(&[]), Err(ClientError::Io(_) | ClientError::Protocol(_))), "the connection is closed");

    let mut reader = client_as(&serve, READER_TOKEN);
    let listed: Vec<String> = reader.metadata(&[]).unwrap().topics.into_iter().map(|t| t.name).collect();
    assert_eq!(listed, vec!["pub1".to_string()], "reader sees only what its permissions name");
    assert_eq!(code(reader.produce_values("pub1", 0, &[b"x"]).unwrap_err()), ErrorCode::NotAuthorized);
    assert_eq!(code(reader.create_topic("pub2", 1).unwrap_err()), ErrorCode::NotAuthorized);
    assert_eq!(code(reader.fetch("private", 0, 0, 1 << 20, Duration::ZERO).unwrap_err()), ErrorCode::NotAuthorized);
    assert_eq!(code(reader.stage_latency(true).unwrap_err()), ErrorCode::NotAuthorized);
    reader.stage_latency(false).unwrap();
    let mut subscriber = client_as(&serve, READER_TOKEN);
    let refused =
        subscriber.subscribe("private", 0, strom::proto::SubscribeStart::Earliest, 1 << 20).and_then(|mut s| s.next_push().map(|_| ()));
    assert_eq!(code(refused.unwrap_err()), ErrorCode::NotAuthorized);
    // Nothing the refused requests carried was stored.
    assert_eq!(ops.list_offsets("pub1", 0, strom::proto::OffsetSpec::Latest).unwrap(), Some(2));
    assert_eq!(code(ops.describe_topic("pub2").unwrap_err()), ErrorCode::UnknownTopic);

    assert!(metric(&serve, "strom_auth_required_total") >= 2);
    assert!(metric(&serve, "strom_auth_failures_total") >= 1);
    assert!(metric(&serve, "strom_auth_denied_total") >= 5);
    assert!(metric(&serve, "strom_auth_successes_total") >= 4);
    assert!(serve.wait_line("authentication failed", HANG));
    assert!(serve.wait_line("has no `write` permission on topic \"pub1\"", HANG));
    assert!(serve.wait_line("a request before authenticating refused", HANG));
    let log = serve.stderr_text();
    assert!(
        !log.contains(READER_TOKEN) && !log.contains(OPS_TOKEN) && !log.contains("not-a-token-of-anyone"),
        "a token was logged:\n{log}"
    );
}

fn strom(serve: &Serve, args: &[&str], token_env: Option<&str>) -> std::process::Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_strom"));
    cmd.args(args).args(["--addr", &serve.addr.to_string()]).env_remove("STROM_TOKEN");
    if let Some(t) = token_env {
        cmd.env("STROM_TOKEN", t);
    }
    cmd.output().unwrap()
}

// Proves: the client commands authenticate with --token or STROM_TOKEN,
// and say why when they cannot (no token, a wrong one, no permission).
fn cli_takes_the_token_from_a_flag_or_the_environment() {
    let (serve, _root) = start("auth_cli");
    let out = strom(&serve, &["topic", "create", "pubcli", "--partitions", "1", "--token", OPS_TOKEN], None);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let out = strom(&serve, &["topic", "list"], Some(READER_TOKEN));
    assert!(out.status.success() && String::from_utf8_lossy(&out.stdout).contains("pubcli"), "{out:?}");
    let out = strom(&serve, &["topic", "list"], None);
    assert!(!out.status.success() && String::from_utf8_lossy(&out.stderr).contains("authentication is required"), "{out:?}");
    let out = strom(&serve, &["topic", "list", "--token", "wrong-token-0123456789"], None);
    assert!(!out.status.success() && String::from_utf8_lossy(&out.stderr).contains("authentication failed"), "{out:?}");
    let out = strom(&serve, &["topic", "delete", "pubcli"], Some(READER_TOKEN));
    assert!(!out.status.success() && String::from_utf8_lossy(&out.stderr).contains("no `admin` permission on topic \"pubcli\""), "{out:?}");
}

// Proves: the auth section a server runs with can be replaced while it
// serves (what SIGHUP does): a connection whose user was removed, or
// whose token changed, is unauthenticated at its next request; a user
// whose entry is unchanged keeps its connection; a new user can log in.
fn a_reload_ends_what_a_removed_user_opened() {
    use strom::auth::AuthConfig;
    use strom::config::EngineConfig;
    use strom::server::{Server, ServerConfig};
    let parse = |text: &str| AuthConfig::from_toml(text.parse::<toml::Table>().unwrap().get("auth").unwrap()).unwrap();
    let dir = test_dir("auth_reload");
    let engine = EngineConfig { cores: 1, pin_cores: false, ..EngineConfig::default() };
    let cfg =
        ServerConfig { listen: "127.0.0.1:0".parse().unwrap(), direct_ports: false, auth: parse(&auth_toml()), ..ServerConfig::default() };
    let server = Server::start(&dir, engine, cfg).unwrap();
    let connect = |token: &str| {
        let mut c = Client::connect(server.local_addr()).unwrap();
        c.set_timeout(Some(Duration::from_secs(30))).unwrap();
        c.authenticate(token).map(|_| c)
    };
    let mut ops = connect(OPS_TOKEN).unwrap();
    let mut reader = connect(READER_TOKEN).unwrap();
    reader.metadata(&[]).unwrap();
    // reader removed, ops kept as it was, a new user added.
    let new = auth_toml().replace("name = \"reader\"", "name = \"reader2\"").replace(READER_TOKEN, "reader2-token-0123456789");
    server.set_auth(parse(&new));
    assert_eq!(code(reader.metadata(&[]).unwrap_err()), ErrorCode::AuthRequired);
    ops.metadata(&[]).unwrap();
    assert_eq!(code(connect(READER_TOKEN).err().unwrap()), ErrorCode::AuthFailed);
    connect("reader2-token-0123456789").unwrap().metadata(&[]).unwrap();
    // ops's token changed: its open connection is no longer ops's.
    server.set_auth(parse(&new.replace(OPS_TOKEN, "ops-token-changed-0123456789")));
    assert_eq!(code(ops.metadata(&[]).unwrap_err()), ErrorCode::AuthRequired);
    // Authentication turned off: everyone is served again.
    server.set_auth(AuthConfig::default());
    Client::connect(server.local_addr()).unwrap().metadata(&[]).unwrap();
    server.shutdown().unwrap();
}

// Proves: SIGHUP reads the [auth] section again and puts it in force: a
// removed user's open connection is refused at its next request and its
// token no longer authenticates, a new user's does, and the log says what
// changed by user name, never by token.
fn sighup_applies_a_changed_auth_section() {
    let (serve, root) = start("auth_sighup");
    let mut reader = client_as(&serve, READER_TOKEN);
    reader.metadata(&[]).unwrap();
    let new = auth_toml().replace("name = \"reader\"", "name = \"writer\"").replace(READER_TOKEN, "writer-token-0123456789");
    write_config(&root, &new);
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(serve.pid() as i32), nix::sys::signal::Signal::SIGHUP).unwrap();
    assert!(serve.wait_line("auth on [reader ops] -> on [writer ops]", HANG), "{}", serve.stderr_text());
    assert_eq!(code(reader.metadata(&[]).unwrap_err()), ErrorCode::AuthRequired);
    assert_eq!(code(serve.client().authenticate(READER_TOKEN).unwrap_err()), ErrorCode::AuthFailed);
    assert_eq!(client_as(&serve, "writer-token-0123456789").metadata(&[]).unwrap().topics.len(), 0);
    // A broken section is refused whole: the users stay as they were.
    write_config(&root, "[auth]\nenabled = true\n");
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(serve.pid() as i32), nix::sys::signal::Signal::SIGHUP).unwrap();
    assert!(serve.wait_line("reload refused", HANG), "{}", serve.stderr_text());
    client_as(&serve, "writer-token-0123456789").metadata(&[]).unwrap();
    assert!(!serve.stderr_text().contains("writer-token-0123456789"));
}

/// A Kafka request frame: header version 1 (key, version, correlation id,
/// client id), then `body`.
fn kafka_frame(key: i16, version: i16, correlation_id: i32, body: &[u8]) -> Vec<u8> {
    let mut f = Vec::new();
    f.extend_from_slice(&key.to_be_bytes());
    f.extend_from_slice(&version.to_be_bytes());
    f.extend_from_slice(&correlation_id.to_be_bytes());
    f.extend_from_slice(&4i16.to_be_bytes());
    f.extend_from_slice(b"test");
    f.extend_from_slice(body);
    let mut out = (f.len() as i32).to_be_bytes().to_vec();
    out.extend_from_slice(&f);
    out
}

fn kafka_string(s: &str) -> Vec<u8> {
    let mut out = (s.len() as i16).to_be_bytes().to_vec();
    out.extend_from_slice(s.as_bytes());
    out
}

fn connect_kafka(addr: SocketAddr) -> TcpStream {
    let s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    s
}

/// Sends a SaslHandshake v0 for PLAIN, checks its answer (no error, PLAIN
/// offered), then the bare token `\0user\0password`.
fn handshake_v0(s: &mut TcpStream, user: &str, password: &str) {
    s.write_all(&kafka_frame(17, 0, 1, &kafka_string("PLAIN"))).unwrap();
    let reply = harness::read_frame(s).expect("a SaslHandshake response");
    assert_eq!(&reply[4..8], &1i32.to_be_bytes(), "correlation id");
    assert_eq!(&reply[8..10], &0i16.to_be_bytes(), "error code");
    assert!(reply.windows(5).any(|w| w == b"PLAIN"), "{reply:?}");
    let token = format!("\0{user}\0{password}");
    let mut frame = (token.len() as i32).to_be_bytes().to_vec();
    frame.extend_from_slice(token.as_bytes());
    s.write_all(&frame).unwrap();
}

fn closed(s: &mut TcpStream) -> bool {
    let mut b = [0u8; 1];
    matches!(s.read(&mut b), Ok(0) | Err(_))
}

// Proves: the SASL exchange of clients before Kafka 1.0 (a version 0
// handshake, then the token as a bare frame) authenticates, and the
// connection is then served; a wrong bare token, and a request before any
// authentication, close the connection (as Kafka's broker does).
fn kafka_sasl_handshake_v0_takes_a_bare_token() {
    let (serve, _root) = start("auth_sasl_v0");
    let addr = serve.kafka_addr();
    let mut s = connect_kafka(addr);
    handshake_v0(&mut s, "ops", OPS_TOKEN);
    let reply = harness::read_frame(&mut s).expect("the server's (empty) token");
    assert_eq!(reply, 0u32.to_be_bytes(), "an empty server token");
    // Metadata v0 of every topic (an empty list).
    s.write_all(&kafka_frame(3, 0, 2, &0i32.to_be_bytes())).unwrap();
    let reply = harness::read_frame(&mut s).expect("a Metadata response");
    assert_eq!(&reply[4..8], &2i32.to_be_bytes());

    let mut wrong = connect_kafka(addr);
    handshake_v0(&mut wrong, "ops", "wrong-password-0123456789");
    assert!(closed(&mut wrong), "a wrong token closes the connection");

    let mut early = connect_kafka(addr);
    early.write_all(&kafka_frame(3, 0, 1, &0i32.to_be_bytes())).unwrap();
    assert!(closed(&mut early), "a Metadata before SASL closes the connection");
    assert!(serve.wait_line("a request before authenticating (SASL/PLAIN is required)", HANG));
    assert!(serve.wait_line("authentication failed", HANG));
}

fn kcat(kafka: SocketAddr, user: Option<(&str, &str)>, args: &[&str], stdin: &[u8]) -> std::process::Output {
    let mut cmd = Command::new("kcat");
    cmd.args(["-b", &kafka.to_string(), "-m", "15"]);
    if let Some((u, p)) = user {
        let (u, p) = (format!("sasl.username={u}"), format!("sasl.password={p}"));
        cmd.args(["-X", "security.protocol=SASL_PLAINTEXT", "-X", "sasl.mechanisms=PLAIN", "-X", &u, "-X", &p]);
    }
    let mut child = cmd
        .args(args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(stdin).unwrap();
    child.wait_with_output().unwrap()
}

// Proves: kcat (librdkafka 2.0.2) authenticates with SASL/PLAIN and
// produces and reads back; a wrong password, no SASL at all, and a user
// without the permission are each refused (and nothing is stored).
fn kcat_over_sasl_plain() {
    let (serve, _root) = start("auth_kcat");
    let kafka = serve.kafka_addr();
    client_as(&serve, OPS_TOKEN).create_topic("pubk", 1).unwrap();
    let lines: String = (0..1000).map(|i| format!("line-{i}\n")).collect();
    let out = kcat(kafka, Some(("ops", OPS_TOKEN)), &["-P", "-t", "pubk", "-p", "0"], lines.as_bytes());
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let out = kcat(kafka, Some(("reader", READER_TOKEN)), &["-C", "-t", "pubk", "-p", "0", "-o", "beginning", "-e", "-q"], b"");
    assert_eq!(String::from_utf8_lossy(&out.stdout), lines, "{}", String::from_utf8_lossy(&out.stderr));
    let out = kcat(kafka, Some(("reader", READER_TOKEN)), &["-P", "-t", "pubk", "-p", "0"], b"refused\n");
    assert!(String::from_utf8_lossy(&out.stderr).contains("Topic authorization failed"), "{out:?}");
    let out = kcat(kafka, Some(("ops", "wrong-password-0123456789")), &["-L"], b"");
    assert!(!out.status.success() && String::from_utf8_lossy(&out.stderr).contains("SASL authentication error"), "{out:?}");
    let out = kcat(kafka, None, &["-L"], b"");
    assert!(!out.status.success(), "{out:?}");
    assert_eq!(client_as(&serve, OPS_TOKEN).list_offsets("pubk", 0, strom::proto::OffsetSpec::Latest).unwrap(), Some(1000));
}

fn python(args: &[&str]) -> String {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/kafka/sasl.py");
    let out = Command::new(KAFKA_VENV_PYTHON).arg(script).args(args).output().unwrap();
    assert!(out.status.success(), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

// Proves: kafka-python 3.0 and confluent-kafka (librdkafka 2.16, idempotent)
// authenticate with SASL/PLAIN, produce and consume; a wrong password and a
// missing permission are refused, and only the authorised records are stored.
fn python_clients_over_sasl_plain() {
    let (serve, _root) = start("auth_python");
    let kafka = serve.kafka_addr().to_string();
    client_as(&serve, OPS_TOKEN).create_topic("pubp", 1).unwrap();
    assert_eq!(python(&["kp-produce", &kafka, "ops", OPS_TOKEN, "pubp", "100"]).trim(), "produced 100");
    assert_eq!(python(&["ck-produce", &kafka, "ops", OPS_TOKEN, "pubp", "100"]).trim(), "delivered 100");
    let seen = python(&["kp-consume", &kafka, "reader", READER_TOKEN, "pubp", "200"]);
    assert_eq!(seen.lines().count(), 200, "{seen}");
    assert!(seen.lines().take(100).enumerate().all(|(i, l)| l == format!("value v{i}")), "{seen}");
    assert!(python(&["kp-produce", &kafka, "ops", "wrong-password-0123456789", "pubp", "5"]).starts_with("error "));
    assert_eq!(python(&["kp-produce", &kafka, "reader", READER_TOKEN, "pubp", "5"]).trim(), "error TopicAuthorizationFailedError");
    let ck = python(&["ck-produce", &kafka, "reader", READER_TOKEN, "pubp", "5"]);
    assert!(ck.contains("delivered 0") && ck.contains("error TOPIC_AUTHORIZATION_FAILED"), "{ck}");
    assert_eq!(client_as(&serve, OPS_TOKEN).list_offsets("pubp", 0, strom::proto::OffsetSpec::Latest).unwrap(), Some(200));
    assert!(serve.wait_line("authentication failed", HANG));
}
