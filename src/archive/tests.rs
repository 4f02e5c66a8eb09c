//! The format and the packer on their own: what decodes encodes back, what
//! lies is refused before anything is allocated for it, and the packer
//! refuses what would make an archive lie.
use std::path::Path;

use super::format::{self, FOOTER_BYTES, Header};
use super::writer::{Packer, sample};
use super::{ArchiveError, fuzz_accepts, fuzz_check, fuzz_seeds};
use crate::wire::batch::{self, BatchBuilder};

fn decode(data: &[u8]) -> (format::Footer, Header, format::Index) {
    let tail = data.len() - FOOTER_BYTES;
    let f = format::decode_footer(data[tail..].first_chunk().unwrap(), data.len() as u64).unwrap();
    let (h, ix) = format::decode_meta(&f, &data[..f.header_bytes as usize], &data[f.index_pos as usize..tail]).unwrap();
    (f, h, ix)
}

#[test]
fn a_sample_decodes_to_what_was_packed() {
    // Proves: the sections of a packed archive decode to its partitions' offsets, chunk positions and index values.
    let data = sample(&[3, 0, 1], 4, &["seq"]);
    let (f, h, ix) = decode(&data);
    assert_eq!((h.topic.as_str(), h.partitions, &h.indices[..]), ("t", 3, &["seq".to_string()][..]));
    assert_eq!(f.records, 16);
    assert_eq!(f.total_bytes, data.len() as u64);
    let offsets: Vec<_> = ix.partitions.iter().map(|d| (d.start_offset, d.end_offset)).collect();
    assert_eq!(offsets, [(0, 12), (0, 0), (0, 4)]);
    let first = &ix.entries[0][0];
    assert_eq!((first.first_offset, first.pos, first.values[0]), (0, u64::from(f.header_bytes), 0));
    assert_eq!(first.crc, crc32c::crc32c(&data[first.pos as usize..(first.pos + u64::from(first.bytes)) as usize]));
    fuzz_check(&data);
}

#[test]
fn seeds_are_what_their_names_say() {
    // Proves: the fuzzer starts on both sides of the line: valid-* seeds open, every other seed is refused.
    for (name, data) in fuzz_seeds() {
        assert_eq!(fuzz_accepts(&data), name.starts_with("valid-"), "{name}");
        fuzz_check(&data);
    }
}

#[test]
fn lying_counts_are_refused_before_allocating() {
    // Proves: an index whose CRC is right but whose counts lie (2^32-1 entries) is refused by a check against its length.
    let data = sample(&[2], 3, &[]);
    let (f, _, ix) = decode(&data);
    let mut lying = ix.clone();
    lying.partitions[0].entries = u32::MAX;
    let bytes = format::encode_index(&lying, 0);
    let f = format::Footer { index_crc: crc32c::crc32c(&bytes), ..f };
    let e = format::decode_index(&bytes, &f, 0).unwrap_err();
    assert!(e.what.contains("do not fill"), "{e:?}");
    let f = format::Footer { partitions: u32::MAX, ..f };
    assert!(format::decode_index(&bytes, &f, 0).unwrap_err().what.contains("do not fit"));
}

fn batch_at(base: u64, seq: i64) -> Vec<u8> {
    let mut b = BatchBuilder::new(0);
    b.push(0, None, Some(b"v"), &[(b"seq", Some(&seq.to_le_bytes()[..]))]);
    let mut bytes = b.finish();
    batch::set_base_offset(&mut bytes, base);
    bytes
}

#[test]
fn the_packer_refuses_what_would_make_the_archive_lie() {
    // Proves: a gap in offsets, a decreasing index value, a missing value, and too few partitions are refused.
    let header = Header { created_ms: 0, partitions: 2, topic: "t".into(), indices: vec!["seq".into()], source: String::new() };
    let mut pk = Packer::new(Vec::new(), Path::new("mem"), header).unwrap();
    assert!(pk.push_batch(&batch_at(0, 1)).is_err(), "outside a partition");
    pk.begin_partition(0).unwrap();
    pk.push_batch(&batch_at(5, 1)).unwrap();
    let refused = |r: Result<(), ArchiveError>| r.unwrap_err().to_string();
    assert!(refused(pk.push_batch(&batch_at(7, 1))).contains("does not follow"));
    assert!(refused(pk.push_batch(&batch_at(6, 0))).contains("below the previous"));
    let mut unindexed = BatchBuilder::new(0);
    unindexed.push(0, None, Some(b"v"), &[]);
    let mut unindexed = unindexed.finish();
    batch::set_base_offset(&mut unindexed, 6);
    assert!(pk.push_batch(&unindexed).is_err(), "a record without its index value");
    pk.push_batch(&batch_at(6, 1)).unwrap();
    pk.end_partition().unwrap();
    assert!(pk.finish().unwrap_err().to_string().contains("1 of 2 partitions"));
}
