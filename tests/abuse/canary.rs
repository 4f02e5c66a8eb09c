//! The canary: a producer and a consumer per core that must keep working
//! through every abuse case.
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use strom::client::{Client, ClientError};

use crate::CORES;
use crate::harness::serve::HANG;

/// A producer and a consumer per core (each on its core's own port), each
/// producing one record at a time and reading it back, checking every
/// offset and value. Pausable, so that baselines are taken at rest.
pub struct Canary {
    acks: Arc<AtomicU64>,
    reads: Arc<AtomicU64>,
    pause: Arc<AtomicBool>,
    paused: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
    failures: Arc<Mutex<Vec<String>>>,
    threads: Vec<JoinHandle<()>>,
}

impl Canary {
    pub fn start(addr: SocketAddr) -> Canary {
        let mut c = Canary {
            acks: Arc::default(),
            reads: Arc::default(),
            pause: Arc::default(),
            paused: Arc::default(),
            stop: Arc::default(),
            failures: Arc::default(),
            threads: Vec::new(),
        };
        for p in 0..CORES as u32 {
            let (acks, reads, pause, paused, stop, failures) =
                (c.acks.clone(), c.reads.clone(), c.pause.clone(), c.paused.clone(), c.stop.clone(), c.failures.clone());
            c.threads.push(std::thread::spawn(move || {
                if let Err(e) = canary_loop(addr, p, &acks, &reads, &pause, &paused, &stop) {
                    failures.lock().unwrap().push(format!("canary {p}: {e}"));
                }
            }));
        }
        c
    }

    pub fn check(&self) {
        let f = self.failures.lock().unwrap();
        assert!(f.is_empty(), "the canary failed: {f:?}");
    }

    pub fn counts(&self) -> (u64, u64) {
        (self.acks.load(Ordering::Relaxed), self.reads.load(Ordering::Relaxed))
    }

    /// Waits until the canary acknowledged and read `n` more records on
    /// every core than at `from` (its progress, not its speed, is checked).
    pub fn wait_progress(&self, from: (u64, u64), n: u64, what: &str) {
        let deadline = Instant::now() + HANG;
        loop {
            self.check();
            let (a, r) = self.counts();
            if a >= from.0 + n * CORES as u64 && r >= from.1 + n * CORES as u64 {
                return;
            }
            assert!(Instant::now() < deadline, "the canary made no progress {what}: acks {} -> {a}, reads {} -> {r}", from.0, from.1);
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    pub fn pause(&self) {
        self.pause.store(true, Ordering::SeqCst);
        let deadline = Instant::now() + HANG;
        while self.paused.load(Ordering::SeqCst) < CORES {
            self.check();
            assert!(Instant::now() < deadline, "the canary did not pause");
            std::thread::sleep(Duration::from_millis(2));
        }
    }

    pub fn resume(&self) {
        self.pause.store(false, Ordering::SeqCst);
        while self.paused.load(Ordering::SeqCst) > 0 {
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    pub fn finish(mut self) -> (u64, u64) {
        self.stop.store(true, Ordering::SeqCst);
        self.pause.store(false, Ordering::SeqCst);
        for t in std::mem::take(&mut self.threads) {
            t.join().unwrap();
        }
        let f = self.failures.lock().unwrap();
        assert!(f.is_empty(), "the canary failed: {f:?}");
        (self.acks.load(Ordering::Relaxed), self.reads.load(Ordering::Relaxed))
    }
}

impl Drop for Canary {
    /// A case that failed leaves its canary behind: let its threads end
    /// (a paused one waits for the pause to lift) instead of spinning on.
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        self.pause.store(false, Ordering::SeqCst);
    }
}

fn canary_loop(
    addr: SocketAddr,
    p: u32,
    acks: &AtomicU64,
    reads: &AtomicU64,
    pause: &AtomicBool,
    paused: &AtomicUsize,
    stop: &AtomicBool,
) -> Result<(), String> {
    let connect = || -> Result<Client, ClientError> {
        let mut c = Client::connect(addr)?.for_partition("canary", p)?;
        c.set_timeout(Some(HANG))?;
        Ok(c)
    };
    let (mut producer, mut consumer) = (connect().map_err(|e| e.to_string())?, connect().map_err(|e| e.to_string())?);
    let (mut next_ack, mut next_read) = (0u64, 0u64);
    while !stop.load(Ordering::SeqCst) {
        if pause.load(Ordering::SeqCst) {
            paused.fetch_add(1, Ordering::SeqCst);
            while pause.load(Ordering::SeqCst) {
                std::thread::sleep(Duration::from_millis(2));
            }
            paused.fetch_sub(1, Ordering::SeqCst);
            continue;
        }
        let value = format!("canary-{p}-{next_ack}");
        let a = producer.produce_values("canary", p, &[value.as_bytes()]).map_err(|e| format!("produce {next_ack}: {e}"))?;
        if a.base_offset != next_ack {
            return Err(format!("acknowledged at {} instead of {next_ack}", a.base_offset));
        }
        next_ack += 1;
        acks.fetch_add(1, Ordering::Relaxed);
        while next_read < next_ack {
            let f = consumer
                .fetch("canary", p, next_read, 1 << 16, Duration::from_millis(500))
                .map_err(|e| format!("fetch {next_read}: {e}"))?;
            for r in f.records_from(next_read) {
                let (offset, v) = r.map_err(|e| e.to_string())?;
                let want = format!("canary-{p}-{offset}");
                if offset != next_read || v != Some(want.as_bytes()) {
                    return Err(format!("read {offset} {v:?}, wanted {next_read} {want}"));
                }
                next_read += 1;
                reads.fetch_add(1, Ordering::Relaxed);
            }
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    Ok(())
}
