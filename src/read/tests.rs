//! The read path's sinks under the simulator: a sink that asks for more is
//! pushed each new batch, in order; a cancelled one is dropped unanswered.
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use super::{Fetch, ReadResult, ReadSink, SinkFlow};
use crate::config::EngineConfig;
use crate::core::{Core, CoreSpec, Request, ValidBatch};
use crate::error::Result;
use crate::io::sim::{SimDisk, SimFaults, SimIo};
use crate::wire::batch::BatchBuilder;

type Answers = Arc<Mutex<Vec<Result<ReadResult>>>>;

/// Keeps every answer; asks for more until it has `wanted`.
struct Recorder {
    answers: Answers,
    wanted: usize,
    cancelled: Arc<AtomicBool>,
}

impl ReadSink for Recorder {
    fn deliver(&mut self, answer: Result<ReadResult>) -> SinkFlow {
        let mut a = self.answers.lock().unwrap();
        a.push(answer);
        if a.len() < self.wanted { SinkFlow::More } else { SinkFlow::Done }
    }

    fn cancelled(&self) -> bool {
        self.cancelled.load(Ordering::Relaxed)
    }
}

fn core() -> Core<SimIo> {
    let spec = CoreSpec {
        core_id: 0,
        data_dir: PathBuf::from("/sim/data"),
        log_count: 1,
        logs: vec![0],
        pids: vec![0],
        needs: Default::default(),
    };
    let io = SimIo::new(SimDisk::new(), 7, SimFaults::default());
    Core::open(io, EngineConfig::small_for_tests(), spec).unwrap().0
}

fn append(core: &mut Core<SimIo>, value: &str) {
    let mut b = BatchBuilder::new(1_700_000_000_000);
    b.push(1_700_000_000_000, None, Some(value.as_bytes()), &[]);
    let batch = ValidBatch::new(b.finish(), 1 << 20).unwrap();
    let done = Arc::new(AtomicBool::new(false));
    let d = done.clone();
    core.handle(Request::Append { pid: 0, batch, reply: Box::new(move |r| d.store(r.is_ok(), Ordering::Relaxed)) });
    while !done.load(Ordering::Relaxed) {
        core.tick().unwrap();
    }
}

fn subscribe(core: &mut Core<SimIo>, wanted: usize) -> (Answers, Arc<AtomicBool>) {
    let answers = Arc::new(Mutex::new(Vec::new()));
    let cancelled = Arc::new(AtomicBool::new(false));
    let sink = Box::new(Recorder { answers: answers.clone(), wanted, cancelled: cancelled.clone() });
    let fetch = Fetch { offset: 0, max_bytes: 1 << 20, max_wait_ns: 60_000_000_000 };
    core.handle(Request::Read { pid: 0, fetch, sink });
    (answers, cancelled)
}

// Proves: a sink that answers More gets each new batch pushed once, in offset order, and nothing after it says Done.
#[test]
fn a_sink_that_wants_more_is_pushed_each_batch() {
    let mut core = core();
    let (answers, _) = subscribe(&mut core, 3);
    for i in 0..5 {
        append(&mut core, &format!("v{i}"));
        core.tick().unwrap();
    }
    let answers = answers.lock().unwrap();
    assert_eq!(answers.len(), 3, "three answers were asked for");
    for (i, a) in answers.iter().enumerate() {
        let a = a.as_ref().unwrap();
        assert_eq!(a.next_offset, i as u64 + 1, "answer {i} holds exactly batch {i}");
        assert!(!a.batches.is_empty());
    }
}

// Proves: a parked read whose sink was cancelled is dropped unanswered when data arrives.
#[test]
fn a_cancelled_sink_is_dropped_unanswered() {
    let mut core = core();
    let (answers, cancelled) = subscribe(&mut core, 1);
    core.tick().unwrap();
    cancelled.store(true, Ordering::Relaxed);
    append(&mut core, "late");
    core.tick().unwrap();
    assert!(answers.lock().unwrap().is_empty(), "a cancelled sink was answered");
}
