//! How `consume` prints a record: the value alone (the default), a kcat
//! format string (`--format`), or one JSON object per line (`--json`).
use std::fmt::Write as _;

use strom::client::FetchedRecord;

/// A fetched record, owned, so that records of several partitions can wait
/// to be merged after their fetch replies are gone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OwnedRecord {
    pub partition: u32,
    pub offset: u64,
    pub timestamp_ms: i64,
    pub key: Option<Vec<u8>>,
    pub value: Option<Vec<u8>>,
    pub headers: Vec<(Vec<u8>, Option<Vec<u8>>)>,
}

impl OwnedRecord {
    pub fn new(partition: u32, r: &FetchedRecord<'_>) -> OwnedRecord {
        OwnedRecord {
            partition,
            offset: r.offset,
            timestamp_ms: r.timestamp_ms,
            key: r.key.map(<[u8]>::to_vec),
            value: r.value.map(<[u8]>::to_vec),
            headers: r.headers.clone().map(|(k, v)| (k.to_vec(), v.map(<[u8]>::to_vec))).collect(),
        }
    }

    /// Bytes held, for the merge's memory bound.
    pub fn held_bytes(&self) -> usize {
        let opt = |b: &Option<Vec<u8>>| b.as_ref().map_or(0, Vec::len);
        opt(&self.key) + opt(&self.value) + self.headers.iter().map(|(k, v)| k.len() + opt(v)).sum::<usize>()
    }
}

/// One piece of a `--format` string.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Token {
    Literal(Vec<u8>),
    Key,
    Value,
    Offset,
    Partition,
    Timestamp,
    Headers,
    Topic,
    Size,
}

/// How records are printed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Output {
    /// kcat's `-f`: the tokens in order, nothing added.
    Format(Vec<Token>),
    /// One JSON object per line.
    Json,
}

impl Output {
    /// The default: each value on a line of its own.
    pub fn values() -> Output {
        Output::Format(vec![Token::Value, Token::Literal(b"\n".to_vec())])
    }

    /// Parses kcat's format tokens (`%k %v %o %p %T %h %t %s %%`) and the
    /// escapes `\n \t \r \\`; anything else is printed as written.
    pub fn parse_format(s: &str) -> Result<Output, String> {
        let mut tokens = Vec::new();
        let mut literal = Vec::new();
        let mut chars = s.chars();
        while let Some(c) = chars.next() {
            let token = match (c, chars.clone().next()) {
                ('%', Some(t)) => match t {
                    'k' => Token::Key,
                    'v' => Token::Value,
                    'o' => Token::Offset,
                    'p' => Token::Partition,
                    'T' => Token::Timestamp,
                    'h' => Token::Headers,
                    't' => Token::Topic,
                    's' => Token::Size,
                    '%' => Token::Literal(b"%".to_vec()),
                    _ => return Err(format!("--format has an unknown token %{t}; the tokens are %k %v %o %p %T %h %t %s and %%")),
                },
                ('\\', Some(e @ ('n' | 't' | 'r' | '\\'))) => Token::Literal(vec![match e {
                    'n' => b'\n',
                    't' => b'\t',
                    'r' => b'\r',
                    _ => b'\\',
                }]),
                ('%', None) => return Err("--format ends with a lone %; write %% for a percent sign".into()),
                _ => {
                    let mut buf = [0u8; 4];
                    literal.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
                    continue;
                }
            };
            chars.next();
            match token {
                Token::Literal(l) => literal.extend(l),
                t => {
                    if !literal.is_empty() {
                        tokens.push(Token::Literal(std::mem::take(&mut literal)));
                    }
                    tokens.push(t);
                }
            }
        }
        if !literal.is_empty() {
            tokens.push(Token::Literal(literal));
        }
        Ok(Output::Format(tokens))
    }

    /// Appends `r` of `topic` to `out`, as this output prints it.
    pub fn write(&self, out: &mut Vec<u8>, topic: &str, r: &OwnedRecord) {
        match self {
            Output::Json => write_json(out, topic, r),
            Output::Format(tokens) => {
                for t in tokens {
                    write_token(out, t, topic, r);
                }
            }
        }
    }
}

fn write_token(out: &mut Vec<u8>, t: &Token, topic: &str, r: &OwnedRecord) {
    // A null key or value prints as nothing, like kcat's.
    let bytes = |out: &mut Vec<u8>, b: &Option<Vec<u8>>| out.extend_from_slice(b.as_deref().unwrap_or_default());
    match t {
        Token::Literal(l) => out.extend_from_slice(l),
        Token::Key => bytes(out, &r.key),
        Token::Value => bytes(out, &r.value),
        Token::Offset => out.extend_from_slice(r.offset.to_string().as_bytes()),
        Token::Partition => out.extend_from_slice(r.partition.to_string().as_bytes()),
        Token::Timestamp => out.extend_from_slice(r.timestamp_ms.to_string().as_bytes()),
        Token::Topic => out.extend_from_slice(topic.as_bytes()),
        Token::Size => out.extend_from_slice(r.value.as_ref().map_or(0, Vec::len).to_string().as_bytes()),
        Token::Headers => {
            // kcat's form: name=value pairs joined by commas.
            for (i, (k, v)) in r.headers.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                out.extend_from_slice(k);
                out.push(b'=');
                bytes(out, v);
            }
        }
    }
}

/// `{"topic":..,"partition":..,"offset":..,"timestamp_ms":..,"key":..,
/// "value":..,"headers":[[name,value],..]}` and a newline. Bytes that are
/// UTF-8 are a JSON string; other bytes are `{"base64":"..."}` (standard
/// alphabet, padded); a null key or value is `null`.
fn write_json(out: &mut Vec<u8>, topic: &str, r: &OwnedRecord) {
    let mut s = String::with_capacity(64 + r.held_bytes());
    s.push_str("{\"topic\":");
    json_str(&mut s, topic);
    let _ = write!(s, ",\"partition\":{},\"offset\":{},\"timestamp_ms\":{},\"key\":", r.partition, r.offset, r.timestamp_ms);
    json_bytes(&mut s, r.key.as_deref());
    s.push_str(",\"value\":");
    json_bytes(&mut s, r.value.as_deref());
    s.push_str(",\"headers\":[");
    for (i, (k, v)) in r.headers.iter().enumerate() {
        s.push_str(if i > 0 { ",[" } else { "[" });
        json_bytes(&mut s, Some(k));
        s.push(',');
        json_bytes(&mut s, v.as_deref());
        s.push(']');
    }
    s.push_str("]}\n");
    out.extend_from_slice(s.as_bytes());
}

fn json_bytes(s: &mut String, b: Option<&[u8]>) {
    match b.map(std::str::from_utf8) {
        None => s.push_str("null"),
        Some(Ok(text)) => json_str(s, text),
        Some(Err(_)) => {
            s.push_str("{\"base64\":\"");
            base64(s, b.unwrap_or_default());
            s.push_str("\"}");
        }
    }
}

/// A JSON string literal (RFC 8259): quote, backslash and control
/// characters escaped, everything else as it is.
fn json_str(s: &mut String, text: &str) {
    s.push('"');
    for c in text.chars() {
        match c {
            '"' => s.push_str("\\\""),
            '\\' => s.push_str("\\\\"),
            '\n' => s.push_str("\\n"),
            '\r' => s.push_str("\\r"),
            '\t' => s.push_str("\\t"),
            c if (c as u32) < 0x20 => {
                let _ = write!(s, "\\u{:04x}", c as u32);
            }
            c => s.push(c),
        }
    }
    s.push('"');
}

/// Standard base64 (RFC 4648, with padding).
fn base64(s: &mut String, bytes: &[u8]) {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    for chunk in bytes.chunks(3) {
        let n = chunk.iter().enumerate().fold(0u32, |n, (i, &b)| n | u32::from(b) << (16 - 8 * i));
        for i in 0..4 {
            if i <= chunk.len() {
                s.push(ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                s.push('=');
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record() -> OwnedRecord {
        OwnedRecord {
            partition: 2,
            offset: 41,
            timestamp_ms: 1_764_842_400_000,
            key: Some(b"user-7".to_vec()),
            value: Some(b"hello".to_vec()),
            headers: vec![(b"trace".to_vec(), Some(b"abc".to_vec())), (b"empty".to_vec(), None)],
        }
    }

    fn render(output: &Output, r: &OwnedRecord) -> String {
        let mut out = Vec::new();
        output.write(&mut out, "events", r);
        String::from_utf8(out).unwrap()
    }

    // Proves: every kcat token and escape prints its field, literals stay as written.
    #[test]
    fn format_tokens_print_their_fields() {
        let f = Output::parse_format(r"%t/%p@%o %T k=%k v=%v (%s bytes) [%h] 100%%\t|\n").unwrap();
        assert_eq!(render(&f, &record()), "events/2@41 1764842400000 k=user-7 v=hello (5 bytes) [trace=abc,empty=] 100%\t|\n");
        assert_eq!(render(&Output::values(), &record()), "hello\n");
        let no_key = OwnedRecord { key: None, value: None, headers: vec![], ..record() };
        assert_eq!(render(&Output::parse_format("<%k><%v><%h><%s>").unwrap(), &no_key), "<><><><0>");
    }

    // Proves: unknown tokens and a trailing % are refused with the list of tokens.
    #[test]
    fn format_refuses_unknown_tokens() {
        assert!(Output::parse_format("%x").unwrap_err().contains("unknown token %x"));
        assert!(Output::parse_format("50%").unwrap_err().contains("lone %"));
    }

    // Proves: JSON has every field, escapes strings, shows nulls as null and
    // non-UTF-8 bytes as {"base64":..}.
    #[test]
    fn json_lines() {
        assert_eq!(
            render(&Output::Json, &record()),
            "{\"topic\":\"events\",\"partition\":2,\"offset\":41,\"timestamp_ms\":1764842400000,\"key\":\"user-7\",\
             \"value\":\"hello\",\"headers\":[[\"trace\",\"abc\"],[\"empty\",null]]}\n"
        );
        let odd = OwnedRecord { key: None, value: Some(b"\xff\x00a".to_vec()), headers: vec![(b"q\"\n".to_vec(), None)], ..record() };
        let line = render(&Output::Json, &odd);
        assert!(line.contains("\"key\":null,\"value\":{\"base64\":\"/wBh\"},\"headers\":[[\"q\\\"\\n\",null]]"), "{line}");
    }

    // Proves: base64 pads as RFC 4648's test vectors show.
    #[test]
    fn base64_rfc4648_vectors() {
        for (raw, enc) in
            [("", ""), ("f", "Zg=="), ("fo", "Zm8="), ("foo", "Zm9v"), ("foob", "Zm9vYg=="), ("fooba", "Zm9vYmE="), ("foobar", "Zm9vYmFy")]
        {
            let mut s = String::new();
            base64(&mut s, raw.as_bytes());
            assert_eq!(s, enc);
        }
    }
}
