//! The topic admin bodies past version 1's: CreateTopic version 2 (with
//! retention), AlterTopic (api 11) and DescribeTopic (api 12).
//!
//! A retention setting travels as an i64: a limit >= 0 (ms, or bytes per
//! partition), -1 for no limit, -2 for the server's default, and in an
//! AlterTopic request -3 for "leave as it is". Every other value is refused,
//! so every setting has one encoding.
use super::DecodeError;
use super::decode::Reader;
use super::encode::put_str;
use crate::catalog::{LIMIT_MAX, PartitionDescription, TopicDescription, TopicRetention, UNLIMITED};
use crate::partition::Retention;

/// The request version that carries CreateTopic's retention.
pub const CREATE_TOPIC_RETENTION_VERSION: u16 = 2;
/// The request version that adds CreateTopic's named indices.
pub const CREATE_TOPIC_INDICES_VERSION: u16 = 3;
/// Index names a CreateTopic may carry (the catalog refuses past
/// [`crate::catalog::INDICES_MAX`]; the codec bounds what it decodes).
const INDEX_NAMES_MAX: usize = 255;

const SETTING_KEEP: i64 = -3;
const SETTING_DEFAULT: i64 = -2;
const SETTING_UNLIMITED: i64 = -1;
/// A partition's smallest encoding: start, end, bytes and core.
const PARTITION_BYTES: usize = 8 + 8 + 8 + 2;
const STRING_BYTES_MIN: usize = 2;

/// A topic's own setting: None follows the server's default.
pub(super) fn setting_value(v: Option<u64>) -> i64 {
    match v {
        None => SETTING_DEFAULT,
        Some(UNLIMITED) => SETTING_UNLIMITED,
        Some(v) => v.min(LIMIT_MAX) as i64,
    }
}

pub(super) fn setting(v: i64) -> Result<Option<u64>, DecodeError> {
    match v {
        SETTING_DEFAULT => Ok(None),
        SETTING_UNLIMITED => Ok(Some(UNLIMITED)),
        v if v >= 0 => Ok(Some(v as u64)),
        _ => Err(DecodeError::BadValue("a retention setting is negative but not -1 (no limit) or -2 (the default)")),
    }
}

/// An AlterTopic setting: None leaves it as it is.
pub(super) fn change_value(v: Option<Option<u64>>) -> i64 {
    v.map_or(SETTING_KEEP, setting_value)
}

pub(super) fn change(v: i64) -> Result<Option<Option<u64>>, DecodeError> {
    if v == SETTING_KEEP { Ok(None) } else { setting(v).map(Some) }
}

/// An effective limit: -1 for none.
fn limit_value(v: Option<u64>) -> i64 {
    v.map_or(SETTING_UNLIMITED, |v| v.min(LIMIT_MAX) as i64)
}

fn limit(v: i64) -> Result<Option<u64>, DecodeError> {
    match v {
        SETTING_UNLIMITED => Ok(None),
        v if v >= 0 => Ok(Some(v as u64)),
        _ => Err(DecodeError::BadValue("an effective limit is negative but not -1 (no limit)")),
    }
}

/// A u8 count, then that many strings.
pub(super) fn put_indices(out: &mut Vec<u8>, names: &[&str]) {
    let n = names.len().min(INDEX_NAMES_MAX);
    out.push(n as u8);
    for name in &names[..n] {
        put_str(out, name, super::STRING_BYTES_MAX);
    }
}

pub(super) fn indices<'a>(r: &mut Reader<'a>) -> Result<Vec<&'a str>, DecodeError> {
    let declared = r.u8()?;
    // Version 3 is the one with indices: with none, it would be the same
    // request as version 2 or 1, and a value has one encoding (found by
    // the proto_decode fuzz target).
    if declared == 0 {
        return Err(DecodeError::BadValue("a CreateTopic of version 3 names at least one index"));
    }
    let n = r.count(declared.into(), STRING_BYTES_MIN)?;
    (0..n).map(|_| r.str()).collect()
}

pub(super) fn put_retention(out: &mut Vec<u8>, r: &TopicRetention) {
    out.extend_from_slice(&setting_value(r.ms).to_be_bytes());
    out.extend_from_slice(&setting_value(r.bytes).to_be_bytes());
}

pub(super) fn retention(r: &mut Reader<'_>) -> Result<TopicRetention, DecodeError> {
    Ok(TopicRetention { ms: setting(r.i64()?)?, bytes: setting(r.i64()?)? })
}

/// ```text
/// name string | retention_ms i64 | retention_bytes i64        (the topic's own)
/// effective_ms i64 | effective_bytes i64                      (-1: no limit)
/// partition count u32, each: start u64 | end u64 | bytes u64 | core u16
/// index count u16, each: name string
/// ```
pub(super) fn put_description(out: &mut Vec<u8>, d: &TopicDescription) {
    put_str(out, &d.name, super::STRING_BYTES_MAX);
    put_retention(out, &d.retention);
    out.extend_from_slice(&limit_value(d.effective.age_ms).to_be_bytes());
    out.extend_from_slice(&limit_value(d.effective.bytes).to_be_bytes());
    let count = u32::try_from(d.partitions.len()).unwrap_or(u32::MAX);
    out.extend_from_slice(&count.to_be_bytes());
    for p in d.partitions.iter().take(count as usize) {
        for v in [p.start_offset, p.end_offset, p.bytes] {
            out.extend_from_slice(&v.to_be_bytes());
        }
        out.extend_from_slice(&p.core.to_be_bytes());
    }
    let count = u16::try_from(d.indices.len()).unwrap_or(u16::MAX);
    out.extend_from_slice(&count.to_be_bytes());
    for name in d.indices.iter().take(count.into()) {
        put_str(out, name, super::STRING_BYTES_MAX);
    }
}

pub(super) fn description(r: &mut Reader<'_>) -> Result<TopicDescription, DecodeError> {
    let name = r.str()?.to_string();
    let retention = retention(r)?;
    let effective = Retention { age_ms: limit(r.i64()?)?, bytes: limit(r.i64()?)? };
    let declared = r.u32()?;
    let count = r.count(declared.into(), PARTITION_BYTES)?;
    let mut partitions = Vec::with_capacity(count);
    for _ in 0..count {
        partitions.push(PartitionDescription { start_offset: r.u64()?, end_offset: r.u64()?, bytes: r.u64()?, core: r.u16()? });
    }
    let declared = r.u16()?;
    let count = r.count(declared.into(), STRING_BYTES_MIN)?;
    let mut indices = Vec::with_capacity(count);
    for _ in 0..count {
        indices.push(r.str()?.to_string());
    }
    Ok(TopicDescription { name, retention, effective, partitions, indices })
}

#[cfg(test)]
mod tests {
    use super::super::{Header, Request, decode_request, encode_request};
    use super::*;

    fn create_v2(ms: i64, bytes: i64) -> Vec<u8> {
        let mut f = Vec::new();
        let retention = Some(TopicRetention { ms: Some(1), bytes: Some(2) });
        encode_request(&mut f, 9, &Request::CreateTopic { topic: "t", partitions: 1, retention, indices: vec![] });
        let n = f.len();
        f[n - 16..n - 8].copy_from_slice(&ms.to_be_bytes());
        f[n - 8..].copy_from_slice(&bytes.to_be_bytes());
        f
    }

    // Proves each setting value has one meaning: -2 default, -1 no limit,
    // >= 0 a limit; -3 ("keep") only in an AlterTopic, and nothing below.
    #[test]
    fn settings_decode_to_one_meaning() {
        let decoded = |f: &[u8]| match decode_request(f) {
            Ok((_, Request::CreateTopic { retention, .. })) => Ok(retention),
            Ok(other) => panic!("{other:?}"),
            Err((_, e)) => Err(e),
        };
        assert_eq!(decoded(&create_v2(-2, -1)), Ok(Some(TopicRetention { ms: None, bytes: Some(UNLIMITED) })));
        assert_eq!(decoded(&create_v2(0, i64::MAX)), Ok(Some(TopicRetention { ms: Some(0), bytes: Some(LIMIT_MAX) })));
        for bad in [-3, -4, i64::MIN] {
            assert!(matches!(decoded(&create_v2(bad, 0)), Err(DecodeError::BadValue(_))), "{bad}");
        }
        assert_eq!(change(-3), Ok(None));
        assert_eq!(change(-2), Ok(Some(None)));
        assert!(change(-4).is_err());
    }

    // Proves version 2 is CreateTopic's alone, and version 1 of it still
    // decodes (with no retention: the server's default).
    #[test]
    fn version_two_is_create_topics_alone() {
        let mut v1 = Vec::new();
        encode_request(&mut v1, 1, &Request::CreateTopic { topic: "t", partitions: 3, retention: None, indices: vec![] });
        assert_eq!(u16::from_be_bytes([v1[6], v1[7]]), 1);
        assert!(matches!(decode_request(&v1), Ok((_, Request::CreateTopic { retention: None, partitions: 3, .. }))));
        let mut describe = Vec::new();
        encode_request(&mut describe, 1, &Request::DescribeTopic { topic: "t" });
        describe[6..8].copy_from_slice(&CREATE_TOPIC_RETENTION_VERSION.to_be_bytes());
        let header = Header { api: 12, version_or_error: 2, request_id: 1 };
        assert_eq!(decode_request(&describe).err(), Some((Some(header), DecodeError::UnsupportedVersion(2))));
    }
}
