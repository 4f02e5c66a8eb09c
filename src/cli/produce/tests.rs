//! The stdin reader, the line-to-record split and batching.
use super::*;
use crate::cli::partitioner::partition_for_key;

fn lines_of(input: &[u8], chunk_bytes_max: usize) -> (Vec<Vec<Vec<u8>>>, Option<String>) {
    let (tx, rx) = std::sync::mpsc::sync_channel(1024);
    read_lines(input, chunk_bytes_max, &tx);
    drop(tx);
    let (mut chunks, mut failed) = (Vec::new(), None);
    for input in rx {
        match input {
            Input::Lines(l) => chunks.push(l),
            Input::End => {}
            Input::Failed(e) => failed = Some(e),
        }
    }
    (chunks, failed)
}

fn shape(key_delimiter: Option<&str>, headers: &[(&str, &str)]) -> RecordShape {
    let headers: Vec<(Vec<u8>, Vec<u8>)> = headers.iter().map(|(k, v)| (k.as_bytes().to_vec(), v.as_bytes().to_vec())).collect();
    RecordShape {
        key_delimiter: key_delimiter.map(|d| d.as_bytes().to_vec()),
        overhead_bytes: RECORD_OVERHEAD_BYTES_MAX + headers_bytes_max(&headers),
        headers,
        timestamp_ms: Some(1_700_000_000_000),
        index_names: Vec::new(),
    }
}

fn queue_of(lines: Vec<Vec<u8>>, shape: &RecordShape) -> LineQueue {
    let (tx, rx) = std::sync::mpsc::sync_channel(16);
    tx.send(Input::Lines(lines)).unwrap();
    tx.send(Input::End).unwrap();
    let mut q = LineQueue::new(rx);
    q.refill(shape, usize::MAX, true).unwrap();
    q
}

type Rec = (Option<Vec<u8>>, Vec<u8>, Vec<(Vec<u8>, Vec<u8>)>, i64);

fn records(batch: &[u8]) -> Vec<Rec> {
    let base_ts = strom::wire::batch::parse_header(batch).unwrap().base_timestamp_ms;
    strom::wire::batch::records(batch)
        .map(|r| {
            let r = r.unwrap();
            let headers = r.headers.map(|(k, v)| (k.to_vec(), v.unwrap().to_vec())).collect();
            (r.key.map(<[u8]>::to_vec), r.value.unwrap().to_vec(), headers, base_ts + r.timestamp_delta_ms)
        })
        .collect()
}

// Proves: each line's bytes are kept exactly (a \r, invalid UTF-8, empty
// lines) without its \n, and a last line without \n still counts.
#[test]
fn stdin_lines_keep_their_bytes() {
    let (chunks, failed) = lines_of(b"a\r\n\n\xff\xfe\nlast", 1 << 20);
    assert!(failed.is_none());
    let lines: Vec<Vec<u8>> = chunks.concat();
    assert_eq!(lines, vec![b"a\r".to_vec(), Vec::new(), b"\xff\xfe".to_vec(), b"last".to_vec()]);
    assert!(lines_of(b"", 1 << 20).0.is_empty());
}

// Proves: batches hold lines in order within batch_bytes, a longer line
// goes alone, and every line is sent exactly once.
#[test]
fn batches_respect_batch_bytes_and_order() {
    let s = shape(None, &[]);
    let big = vec![b'x'; 500];
    let mut q = queue_of(vec![b"1".to_vec(), b"2".to_vec(), big.clone(), b"3".to_vec()], &s);
    let batch_bytes = BATCH_HEADER_BYTES + 2 * (1 + RECORD_OVERHEAD_BYTES_MAX);
    let mut route = Route::Fixed(4);
    let mut got = Vec::new();
    loop {
        let batches = q.next_batches(&s, &mut route, batch_bytes).unwrap();
        if batches.is_empty() {
            break;
        }
        for Batch { partition, bytes: batch, count, .. } in batches {
            assert_eq!(partition, 4);
            let values: Vec<Vec<u8>> = records(&batch).into_iter().map(|r| r.1).collect();
            assert_eq!(values.len() as u64, count);
            assert!(batch.len() <= batch_bytes || count == 1, "a batch of {count} records is {} bytes", batch.len());
            got.push(values);
        }
    }
    assert_eq!(got, vec![vec![b"1".to_vec(), b"2".to_vec()], vec![big], vec![b"3".to_vec()]]);
    assert_eq!(q.pending_bytes, 0);
}

// Proves: the key is the text before the first delimiter (the value keeps
// later ones), a line without it has no key, and every record carries the
// headers and the timestamp given.
#[test]
fn keys_headers_and_timestamps_reach_the_batch() {
    let s = shape(Some("::"), &[("trace", "t-1"), ("src", "")]);
    let mut q = queue_of(vec![b"k1::v1::more".to_vec(), b"novalue".to_vec(), b"::empty-key".to_vec()], &s);
    let batches = q.next_batches(&s, &mut Route::Fixed(0), 1 << 20).unwrap();
    assert_eq!(batches.len(), 1);
    let headers = vec![(b"trace".to_vec(), b"t-1".to_vec()), (b"src".to_vec(), Vec::new())];
    let ts = 1_700_000_000_000;
    assert_eq!(
        records(&batches[0].bytes),
        vec![
            (Some(b"k1".to_vec()), b"v1::more".to_vec(), headers.clone(), ts),
            (None, b"novalue".to_vec(), headers.clone(), ts),
            (Some(Vec::new()), b"empty-key".to_vec(), headers, ts),
        ]
    );
}

// Proves: without --partition, keyed records land where Kafka's murmur2
// puts them (order kept per partition) and keyless ones share one
// partition per batch, moving on each batch.
#[test]
fn partitioner_routes_by_key_and_round_robin() {
    let s = shape(Some(":"), &[]);
    let keys: Vec<String> = (0..20).map(|i| format!("user-{i}")).collect();
    let mut lines: Vec<Vec<u8>> = keys.iter().map(|k| format!("{k}:v").into_bytes()).collect();
    lines.push(b"keyless-a".to_vec());
    let mut q = queue_of(lines, &s);
    let mut route = Route::Partitioner(Partitioner::new(3));
    for Batch { partition, bytes: batch, .. } in q.next_batches(&s, &mut route, 1 << 20).unwrap() {
        for (key, value, ..) in records(&batch) {
            match key {
                Some(k) => assert_eq!(partition, partition_for_key(&k, 3), "key {:?}", String::from_utf8_lossy(&k)),
                None => assert_eq!((partition, value), (0, b"keyless-a".to_vec())),
            }
        }
    }
    let mut q = queue_of(vec![b"keyless-b".to_vec()], &s);
    assert_eq!(
        q.next_batches(&s, &mut route, 1 << 20).unwrap()[0].partition,
        1,
        "the second batch's keyless records go to the next partition"
    );
}

// Proves: -H takes NAME=VALUE (the value may hold '=') and refuses the rest.
#[test]
fn header_option_parses() {
    assert_eq!(parse_header("a=b=c"), Ok(("a".into(), "b=c".into())));
    assert_eq!(parse_header("a="), Ok(("a".into(), String::new())));
    assert!(parse_header("=b").unwrap_err().contains("NAME=VALUE"));
    assert!(parse_header("ab").unwrap_err().contains("NAME=VALUE"));
}

// Proves: --batch-bytes offers no more than a default broker accepts.
#[test]
fn batch_bytes_max_is_the_brokers() {
    assert_eq!(PRODUCE_BATCH_BYTES_MAX as usize, strom::config::EngineConfig::default().batch_bytes_max);
}

// Proves: an --indexed line's values become one 8-byte little-endian
// header per index, in declared order, after the -H headers; a line
// without a TAB, with the wrong count or a non-integer, or going below the
// previous line of its partition is named by its number.
#[test]
fn indexed_lines() {
    let mut s = shape(None, &[("h", "x")]);
    s.index_names = vec![b"ts".to_vec(), b"seq".to_vec()];
    let mut q = queue_of(vec![b"10,-1\tone".to_vec(), b"10,2\ttwo\twith tab".to_vec()], &s);
    let batches = q.next_batches(&s, &mut Route::Fixed(0), 1 << 20).unwrap();
    let recs = records(&batches[0].bytes);
    let h = |ts: i64, seq: i64| {
        vec![(b"h".to_vec(), b"x".to_vec()), (b"ts".to_vec(), ts.to_le_bytes().to_vec()), (b"seq".to_vec(), seq.to_le_bytes().to_vec())]
    };
    assert_eq!(recs[0].2, h(10, -1));
    assert_eq!(recs[0].1, b"one".to_vec());
    assert_eq!(recs[1].1, b"two\twith tab".to_vec(), "only the first TAB splits");
    assert_eq!(recs[1].2, h(10, 2));
    let err = |lines: Vec<&[u8]>| {
        let mut q = queue_of(lines.into_iter().map(<[u8]>::to_vec).collect(), &s);
        q.next_batches(&s, &mut Route::Fixed(0), 1 << 20).unwrap_err()
    };
    assert!(err(vec![b"1,1\ta", b"no tab"]).starts_with("line 2: no TAB"), "{}", err(vec![b"1,1\ta", b"no tab"]));
    assert!(err(vec![b"1\ta"]).starts_with("line 1: 1 index values, the topic has 2"));
    assert!(err(vec![b"1,x\ta"]).starts_with("line 1: index value \"x\""));
    let e = err(vec![b"5,5\ta", b"5,4\tb"]);
    assert!(e.starts_with("line 2: index seq value 4 is below the previous line's 5"), "{e}");
}
