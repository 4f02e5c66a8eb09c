//! The shelf on its own, over a sample archive: parked polls answer when
//! released, when their asker goes and at stop (never by sleeping the
//! thread), a fetch waits for reply budget and holds only what it uses,
//! and range queries past an archive's end answer at once, open.
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, channel};
use std::time::Duration;

use super::*;
use crate::archive::writer::sample;

/// Long enough that no answer in these tests can be its wait running out.
const HOUR: Duration = Duration::from_secs(3600);
/// How long a test waits for an answer that must come before calling it a hang.
const HANG: Duration = Duration::from_secs(60);
const HEADROOM: usize = 16;

/// A directory holding one sample archive of topic `t`: partition 0 of 3
/// batches of 4 records (offsets 0..12, `seq` = offset), partition 1 empty.
fn shelf(name: &str) -> (Arc<Shelf>, PathBuf) {
    let dir = std::env::temp_dir().join(format!("strom-shelf-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("t.archive"), sample(&[3, 0], 4, &["seq"])).unwrap();
    (Shelf::open(&dir).unwrap(), dir)
}

fn asker(budget: Option<Arc<ReplyBudget>>, gone: Option<Arc<AtomicBool>>, released: Option<Arc<AtomicBool>>) -> Asker {
    Asker { headroom: HEADROOM, budget, gone, released, batch_bytes_max: 100, cores: 2 }
}

type Answered = Receiver<std::result::Result<Answer, BrokerError>>;

fn ask(shelf: &Shelf, cmd: Command<'_>, asker: Asker) -> Answered {
    let (tx, rx) = channel();
    shelf.execute(cmd, asker, Box::new(move |res| tx.send(res).unwrap()));
    rx
}

fn fetch(offset: u64, max_wait: Duration) -> Command<'static> {
    Command::Fetch { topic: "t", partition: 0, offset, max_bytes: 1 << 20, max_wait }
}

fn fetched(rx: &Answered) -> Fetched {
    match rx.recv_timeout(HANG).expect("an answer") {
        Ok(Answer::Fetched(f)) => f,
        other => panic!("not a fetch answer: {other:?}"),
    }
}

#[test]
fn parked_polls_answer_when_released_gone_or_stopped() {
    // Proves: a fetch at the end with an hour's wait is answered empty once
    // released, Cancelled once its asker is gone, and empty at stop; a
    // fetch from an earlier offset is answered with batches at once.
    let (shelf, _dir) = shelf("parked");
    let f = fetched(&ask(&shelf, fetch(5, HOUR), asker(None, None, None)));
    assert!(f.bytes.len() > f.headroom && f.headroom == HEADROOM && f.next_offset == 12 && f.high_watermark == 12);
    let released = Arc::new(AtomicBool::new(false));
    let rx = ask(&shelf, fetch(12, HOUR), asker(None, None, Some(released.clone())));
    released.store(true, Ordering::Relaxed);
    let f = fetched(&rx);
    assert_eq!((f.bytes.len(), f.next_offset, f.budget_bytes), (HEADROOM, 12, 0), "released: empty");
    assert!(f.parked_ns > 0, "it says it waited");
    let gone = Arc::new(AtomicBool::new(false));
    let rx = ask(&shelf, fetch(12, HOUR), asker(None, Some(gone.clone()), None));
    gone.store(true, Ordering::Relaxed);
    assert_eq!(rx.recv_timeout(HANG).unwrap().unwrap_err(), BrokerError::Failed(StromError::Cancelled));
    let rx = ask(&shelf, fetch(12, HOUR), asker(None, None, None));
    let empty = ask(
        &shelf,
        Command::Fetch { topic: "t", partition: 1, offset: 0, max_bytes: 100, max_wait: Duration::ZERO },
        asker(None, None, None),
    );
    let f = fetched(&empty);
    assert_eq!((f.bytes.len(), f.parked_ns), (HEADROOM, 0), "an empty partition, no wait: empty at once, not waited");
    shelf.stop();
    assert_eq!(fetched(&rx).bytes.len(), HEADROOM, "stopped: empty");
    let after = ask(&shelf, fetch(0, Duration::ZERO), asker(None, None, None));
    assert_eq!(after.recv_timeout(HANG).unwrap().unwrap_err(), BrokerError::Failed(StromError::ShuttingDown));
}

#[test]
fn a_fetch_waits_for_reply_budget_and_keeps_what_it_uses() {
    // Proves: with the asker's reply budget full, a fetch is not answered;
    // once room returns it is, holding only the bytes of its answer.
    let (shelf, _dir) = shelf("budget");
    let budget = Arc::new(ReplyBudget::new(1000, Vec::new()));
    assert!(budget.try_take(1000));
    let rx = ask(&shelf, fetch(0, Duration::ZERO), asker(Some(budget.clone()), None, None));
    assert!(rx.recv_timeout(Duration::from_millis(200)).is_err(), "answered with no room in the budget");
    budget.release(1000);
    let f = fetched(&rx);
    assert_eq!(f.budget_bytes, f.bytes.len(), "it holds its answer's bytes");
    assert_eq!(budget.used_bytes(), f.budget_bytes, "and nothing more");
}

#[test]
fn lookups_and_queries_answer_as_the_records_say() {
    // Proves: offsets by time and index, and range queries: an end inside
    // the archive is closed, one past it is answered at once and open, a
    // missing index or partition is refused, and writes are ReadOnly.
    let (shelf, _dir) = shelf("queries");
    let none = || asker(None, None, None);
    let answer = |cmd| ask(&shelf, cmd, none()).recv_timeout(HANG).unwrap();
    let q = |from, to| Command::Query { topic: "t", partition: 0, spec: QuerySpec { from, to, wait_ns: HOUR.as_nanos() as u64 } };
    let bounds = |res| match res {
        Ok(Answer::Queried(b)) => (b.from, b.end, b.open),
        other => panic!("{other:?}"),
    };
    let seq = |v| QueryRef::Index { name: "seq".into(), value: v };
    assert_eq!(bounds(answer(q(QueryRef::Offset(2), QueryRef::Offset(6)))), (2, 7, false));
    assert_eq!(bounds(answer(q(seq(3), seq(8)))), (3, 9, false));
    assert_eq!(bounds(answer(q(QueryRef::Offset(10), QueryRef::Offset(50)))), (10, 12, true));
    assert_eq!(bounds(answer(q(seq(10), seq(i64::MAX)))), (10, 12, true));
    assert_eq!(bounds(answer(q(QueryRef::Offset(-2), QueryRef::Offset(-1)))), (10, 12, false));
    assert!(matches!(
        answer(q(QueryRef::Index { name: "nope".into(), value: 1 }, QueryRef::Offset(-1))),
        Err(BrokerError::Failed(StromError::InvalidArgument(_)))
    ));
    let at = |query| answer(Command::ListOffsets { topic: "t", partition: 0, query });
    assert!(matches!(at(OffsetQuery::AtTime(1001)), Ok(Answer::OffsetAtTime(Some((4, 1001))))));
    assert!(matches!(at(OffsetQuery::AtTime(5000)), Ok(Answer::OffsetAtTime(None))));
    let seek = |value, strict| OffsetQuery::AtIndex(IndexSeek { name: "seq".into(), value, strict });
    assert!(matches!(at(seek(7, false)), Ok(Answer::Offset(Some(7)))));
    assert!(matches!(at(seek(7, true)), Ok(Answer::Offset(Some(8)))));
    assert!(matches!(at(seek(i64::MAX, true)), Ok(Answer::Offset(None))));
    assert!(matches!(at(OffsetQuery::Latest), Ok(Answer::Offset(Some(12)))));
    let missing = answer(Command::ListOffsets { topic: "t", partition: 2, query: OffsetQuery::Earliest });
    assert!(matches!(missing, Err(BrokerError::Failed(StromError::UnknownPartition { partition: 2, .. }))), "{missing:?}");
    let produce = answer(Command::Produce { topic: "t", partition: 0, batches: Default::default() });
    assert!(matches!(produce, Err(BrokerError::Failed(StromError::ReadOnly(_)))), "{produce:?}");
}

#[test]
fn a_topic_in_two_archives_and_a_broken_file_are_refused() {
    // Proves: open names both archives of one topic, and a file that is not
    // an archive by its name; a .tmp file is skipped.
    let (_, dir) = shelf("refused");
    std::fs::write(dir.join("x.archive.tmp"), b"being written").unwrap();
    assert_eq!(Shelf::open(&dir).unwrap().topics().collect::<Vec<_>>(), ["t"]);
    std::fs::copy(dir.join("t.archive"), dir.join("u.archive")).unwrap();
    let e = Shelf::open(&dir).err().unwrap().to_string();
    assert!(e.contains("t.archive") && e.contains("u.archive") && e.contains("two archives"), "{e}");
    std::fs::remove_file(dir.join("u.archive")).unwrap();
    std::fs::write(dir.join("notes.txt"), b"not an archive").unwrap();
    let e = Shelf::open(&dir).err().unwrap().to_string();
    assert!(e.contains("notes.txt") && e.contains("not a sound archive"), "{e}");
}
