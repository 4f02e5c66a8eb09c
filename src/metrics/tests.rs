use std::collections::HashSet;

use super::{Kind, Metric, Metrics};

#[test]
fn names_follow_the_exporters_conventions() {
    // Proves: every metric has one unique name, `strom_` first, `_total` on counters only, snake case, and one line of help.
    let mut seen = HashSet::new();
    for &m in Metric::ALL {
        let name = m.name();
        assert!(seen.insert(name), "{name} twice");
        assert!(name.starts_with("strom_"), "{name}");
        assert!(name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_'), "{name}");
        assert_eq!(m.kind() == Kind::Counter, name.ends_with("_total"), "{name} is a {:?}", m.kind());
        assert!(!m.help().is_empty() && !m.help().contains('\n'), "{name}: {:?}", m.help());
        assert_eq!(Metric::from_name(name), Some(m));
    }
    assert_eq!(Metric::from_name("strom_no_such_metric"), None);
    assert!(Metric::ALL.iter().filter(|m| m.is_audit()).all(|m| m.kind() == Kind::Counter));
    assert_eq!(Metric::ALL.iter().filter(|m| m.is_audit()).count(), 3);
}

#[test]
fn each_field_is_its_own_metric() {
    // Proves: get, iter and Index read the field the table names for each metric, and no two metrics share a field.
    let mut m = Metrics::default();
    m.core.appends = 1;
    m.log.bytes_written = 2;
    m.read.reads_from_disk = 3;
    m.broker.forwarded = 4;
    m.conn.held_bytes = 5;
    let set: Vec<(Metric, u64)> = m.iter().filter(|(_, v)| *v != 0).collect();
    assert_eq!(
        set,
        [
            (Metric::Appends, 1),
            (Metric::LogBytesWritten, 2),
            (Metric::ReadsFromDisk, 3),
            (Metric::RequestsForwarded, 4),
            (Metric::BufferedBytes, 5)
        ]
    );
    assert_eq!((m[Metric::LogBytesWritten], m.get(Metric::BufferedBytes)), (2, 5));
    // Every metric, set alone through the pairs a client gets, reads back alone.
    for &one in Metric::ALL {
        let (m, unknown) = Metrics::from_pairs([(one.name(), 7)]);
        assert!(unknown.is_empty());
        assert_eq!(m.iter().filter(|(_, v)| *v != 0).collect::<Vec<_>>(), [(one, 7)]);
    }
}

#[test]
fn registries_merge_by_summing_and_print_on_one_line() {
    // Proves: merge adds every metric, audits sum to the violations, pairs round-trip, and Display is `name=value` pairs.
    let mut a = Metrics::default();
    a.log.writes = 3;
    a.conn.connections = 2;
    a.read.audit_served_beyond_durable = 1;
    let mut b = a;
    b.log.audit_overlapping_writes = 2;
    a.merge(&b);
    assert_eq!((a[Metric::LogWrites], a[Metric::ConnectionsOpen]), (6, 4));
    assert_eq!(a.audit_violations(), 4);
    let pairs: Vec<(&str, u64)> = a.iter().map(|(m, v)| (m.name(), v)).collect();
    let with_unknown = pairs.iter().copied().chain([("strom_from_a_newer_server", 9)]);
    assert_eq!(Metrics::from_pairs(with_unknown), (a, vec!["strom_from_a_newer_server"]));
    let line = a.to_string();
    assert_eq!(line.split(' ').count(), Metric::ALL.len());
    assert!(line.starts_with("strom_appends_total=0 "), "{line}");
    assert!(line.contains(" strom_log_writes_total=6 "), "{line}");
}
