use super::*;

fn config(text: &str) -> Result<AuthConfig, String> {
    let table: toml::Table = text.parse().expect("test TOML parses");
    AuthConfig::from_toml(table.get("auth").expect("an [auth] table"))
}

const TWO_USERS: &str = r#"
[auth]
enabled = true
[[auth.users]]
name = "reader"
token = "reader-token-0123456789"
permissions = [{ topic = "pub*", allow = ["read"] }]
[[auth.users]]
name = "ops"
token_sha256 = "d2c1b5ab6b8b3d2a27b1c6a0ccfd1f0b0c6c1bb0f5a9b1d3f0f3f3c5e7a4b8c1"
permissions = [{ topic = "*", allow = ["read", "write", "admin"] }]
"#;

// Proves: `*` matches any run of characters, none included, anywhere in a
// pattern, and nothing else matches more than itself.
#[test]
fn wildcards() {
    for (pattern, name, want) in [
        ("*", "", true),
        ("*", "anything", true),
        ("pub*", "pub", true),
        ("pub*", "public", true),
        ("pub*", "xpub", false),
        ("*.log", "app.log", true),
        ("*.log", "app.logs", false),
        ("a*b*c", "abc", true),
        ("a*b*c", "aXbYc", true),
        ("a*b*c", "aXcYb", false),
        ("a*a", "a", false),
        ("a*a", "aa", true),
        ("exact", "exact", true),
        ("exact", "exactly", false),
        ("**", "x", true),
    ] {
        assert_eq!(matches(pattern, name), want, "{pattern} vs {name}");
    }
}

// Proves: tokens find their user, a wrong token none; PLAIN needs the
// name and its token together; a digest-only user is found by its token.
#[test]
fn who_a_token_is() {
    let c = config(TWO_USERS).unwrap();
    assert!(c.enabled);
    assert_eq!(c.describe(), "on [reader ops]");
    assert_eq!(AuthConfig::default().describe(), "off []");
    assert_eq!(c.by_token(b"reader-token-0123456789").unwrap().name, "reader");
    assert!(c.by_token(b"reader-token-012345678").is_none());
    assert!(c.by_token(b"").is_none());
    assert_eq!(c.by_plain("reader", b"reader-token-0123456789").unwrap().name, "reader");
    assert!(c.by_plain("ops", b"reader-token-0123456789").is_none());
    assert!(c.by_plain("nobody", b"reader-token-0123456789").is_none());
    let hashed = format!("[auth]\n[[auth.users]]\nname = \"h\"\ntoken_sha256 = \"{}\"\n", hex(&sha256(b"a-long-enough-token!")));
    let c = config(&hashed).unwrap();
    assert_eq!(c.by_token(b"a-long-enough-token!").unwrap().name, "h");
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

// Proves: permissions allow exactly what they list, on exactly the topics
// their patterns name; `allows_all` needs a permission on `*` itself.
#[test]
fn permissions() {
    let c = config(TWO_USERS).unwrap();
    let reader = c.by_token(b"reader-token-0123456789").unwrap();
    assert!(reader.allows("public", Access::Read));
    assert!(!reader.allows("public", Access::Write));
    assert!(!reader.allows("private", Access::Read));
    assert!(!reader.allows_all(Access::Read));
    assert!(reader.sees("pub1") && !reader.sees("other"));
    let ops = &c.users[1];
    assert!(ops.allows("anything", Access::Admin) && ops.allows_all(Access::Admin));
}

// Proves: what each command needs, and that check names the user, the
// topic and the access missing.
#[test]
fn commands_need() {
    use crate::broker::{Batches, Command};
    let c = config(TWO_USERS).unwrap();
    let reader = c.by_token(b"reader-token-0123456789").unwrap();
    let produce = Command::Produce { topic: "pub1", partition: 0, batches: Batches::default() };
    let fetch = Command::Fetch { topic: "pub1", partition: 0, offset: 0, max_bytes: 1, max_wait: std::time::Duration::ZERO };
    let create = Command::CreateTopic { topic: "pub2", partitions: 1, retention: Default::default(), indices: vec![] };
    assert_eq!(need(&produce), Need::Topic("pub1", Access::Write));
    assert_eq!(need(&fetch), Need::Topic("pub1", Access::Read));
    assert_eq!(need(&create), Need::Topic("pub2", Access::Admin));
    assert_eq!(need(&Command::Stats { reset: true, per_core: false }), Need::All(Access::Admin));
    assert_eq!(need(&Command::Metadata { topics: vec![] }), Need::Nothing);
    assert!(check(&reader, &fetch).is_ok());
    let e = check(&reader, &produce).unwrap_err();
    assert_eq!(e, crate::error::StromError::NotAuthorized { user: "reader".into(), topic: "pub1".into(), access: Access::Write });
    assert!(check(&reader, &create).is_err());
    assert!(check(&reader, &Command::Stats { reset: true, per_core: false }).is_err());
    assert!(check(&reader, &Command::Stats { reset: false, per_core: true }).is_ok());
}

// Proves: every bad [auth] section is refused with a sentence naming the
// key, and a reload keeps a user only with the same name and token.
#[test]
fn bad_sections_and_reloads() {
    for (text, says) in [
        ("[auth]\nenabled = true\n", "no [[auth.users]]"),
        ("[auth]\nenable = true\n", "unknown key `auth.enable`"),
        ("[auth]\nenabled = 1\n", "true or false"),
        ("[auth]\n[[auth.users]]\nname = \"a\"\ntoken = \"short\"\n", "shorter than 16"),
        ("[auth]\n[[auth.users]]\ntoken = \"0123456789abcdefg\"\n", "needs a `name`"),
        ("[auth]\n[[auth.users]]\nname = \"a\"\n", "needs a `token`"),
        ("[auth]\n[[auth.users]]\nname = \"a b\"\ntoken = \"0123456789abcdefg\"\n", "no spaces"),
        ("[auth]\n[[auth.users]]\nname = \"a\"\ntoken_sha256 = \"xyz\"\n", "64 hex digits"),
        ("[auth]\n[[auth.users]]\nname = \"a\"\ntoken = \"0123456789abcdefg\"\nrole = \"x\"\n", "unknown key `role`"),
        (
            "[auth]\n[[auth.users]]\nname = \"a\"\ntoken = \"0123456789abcdefg\"\npermissions = [{ topic = \"t\", allow = [\"delete\"] }]\n",
            "only \"read\"",
        ),
        (
            "[auth]\n[[auth.users]]\nname = \"a\"\ntoken = \"0123456789abcdefg\"\npermissions = [{ allow = [\"read\"] }]\n",
            "needs a `topic`",
        ),
        (
            "[auth]\n[[auth.users]]\nname = \"a\"\ntoken = \"0123456789abcdefg\"\n[[auth.users]]\nname = \"a\"\ntoken = \"0123456789abcdefgh\"\n",
            "twice",
        ),
        (
            "[auth]\n[[auth.users]]\nname = \"a\"\ntoken = \"0123456789abcdefg\"\n[[auth.users]]\nname = \"b\"\ntoken = \"0123456789abcdefg\"\n",
            "token of another user",
        ),
    ] {
        let e = config(text).unwrap_err();
        assert!(e.contains(says), "{text}: {e}");
    }
    let old = config(TWO_USERS).unwrap();
    let reader = old.by_token(b"reader-token-0123456789").unwrap();
    assert!(old.still(&reader).is_some());
    let changed = config(&TWO_USERS.replace("reader-token-0123456789", "reader-token-9876543210")).unwrap();
    assert!(changed.still(&reader).is_none(), "a changed token ends what the old one opened");
    let removed = config(&TWO_USERS.replace("name = \"reader\"", "name = \"reader2\"")).unwrap();
    assert!(removed.still(&reader).is_none());
}
