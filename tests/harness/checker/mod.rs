//! The shared end-to-end checker: what every crash, power-cut, disk-full and
//! abuse test asserts about the records it produced and read back.
//!
//! A test reaches it as `harness::checker` (`mod harness;` declares it).
//!
//! # Records
//! Every record a producer sends is identified by `(producer, seq)` and its
//! value is [`payload`]`(producer, seq, extra_bytes)`: a 24-byte header
//! (`"chk1"`, producer u32, seq u64, extra u32, a u32 hash of those three,
//! little-endian) and `extra` filler bytes derived from the id. A value can be checked alone
//! ([`parse_payload`]): anything else is *corrupt*. [`batch_for`] builds a
//! RecordBatch of consecutive sequences. Producers number from 0 without
//! gaps (the checker keeps one small slot per sequence); producer ids are
//! below 2^23 and sequences below 2^40.
//!
//! # Sends
//! Each send of consecutive records to one partition is logged:
//! `let s = checker.record_send(topic, partition, producer, first_seq, count)`,
//! then exactly one of [`Checker::record_ack`] (the server acknowledged it at
//! `base_offset`), [`Checker::record_fail`] (the server said no: nothing was
//! stored), [`Checker::record_indeterminate`] (timeout, disconnect, server
//! gone, or an error that may follow a write), or [`Checker::record_outcome`],
//! which classifies a `Client::produce` result ([`classify`]). A batch whose
//! outcome was indeterminate may be sent again with the same producer and
//! sequences (after a restart, say); its records may then be stored twice.
//!
//! # Reads
//! Consumers report what they read with [`Checker::observe_fetch`] (the
//! batches of one Fetch) or [`Checker::observe_record`] (one record); a
//! consumer that starts somewhere or jumps on purpose says so first with
//! [`Checker::consumer_seek`]. [`Checker::final_read`] (over TCP) or
//! [`Checker::begin_final`] + `observe_*` with [`Reader::Final`] (any other
//! reader, e.g. an `Engine`) reads each partition from offset 0; it may be
//! run after every restart, and the last one per partition is the one the
//! report judges.
//!
//! # Report
//! [`Checker::report`] returns a [`CheckReport`]; [`CheckReport::assert_clean`]
//! prints it and panics unless every anomaly count is 0:
//! - `lost`: an acknowledged record not at its acknowledged offset in the
//!   final read (missing, or found at another offset);
//! - `corrupt`: a batch whose CRC fails, or a value that is not the payload
//!   its header names;
//! - `changed`: an offset that held different records in two reads (any
//!   reads: consumers', earlier and later final reads, across restarts);
//! - `holes`: offsets below the highest one the final read returned that it
//!   did not return;
//! - `duplicated`: a record present more often than it was sent (an
//!   acknowledged record present twice, unless an indeterminate send of it
//!   was resent);
//! - `vanished`: a record some read returned that the final read no longer
//!   has (served before it was durable);
//! - `skipped`, `went_back`: a consumer's next record was past, or before,
//!   the offset after its previous one (without a seek);
//! - `phantom`: a well-formed record nobody sent to that partition;
//! - `failed_present`: a record whose only sends were refused, yet stored;
//! - `unchecked`: acknowledged records of a partition no final read covered.
//!
//! Allowed and reported: `survived_unacked` (records never acknowledged
//! that are stored) and `resent_duplicates` (extra copies of resent records).
//!
//! Randomized tests get their seed from [`seed`], which prints how to replay it.

use std::collections::HashMap;
use std::fmt;
use std::net::ToSocketAddrs;
use std::sync::Mutex;
use std::time::Duration;

use strom::client::{Client, ClientError, ProduceAck};
use strom::proto::ErrorCode;
use strom::wire::batch::{self, BatchBuilder};

/// Bytes before the filler in every payload.
pub const PAYLOAD_HEADER_BYTES: usize = 24;
const MAGIC: &[u8; 4] = b"chk1";
const PRODUCER_BITS: u32 = 23;
const SEQ_BITS: u32 = 40;
/// Stored in an offset's slot for a record that is not a valid payload.
const CORRUPT: u64 = u64::MAX;
/// Anomaly descriptions kept for the report, per kind.
const EXAMPLES_MAX: usize = 5;

const _: () = assert!(PRODUCER_BITS + SEQ_BITS < 64);

/// One record's identity.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RecordId {
    pub producer: u32,
    pub seq: u64,
}

impl RecordId {
    /// Never 0 (the "not seen" slot) and never `CORRUPT`.
    fn packed(self) -> u64 {
        assert!(self.producer < 1 << PRODUCER_BITS && self.seq < 1 << SEQ_BITS, "{self} is out of the checker's range");
        ((u64::from(self.producer) << SEQ_BITS) | self.seq) + 1
    }

    fn unpack(packed: u64) -> Option<RecordId> {
        if packed == 0 || packed == CORRUPT {
            return None;
        }
        let v = packed - 1;
        Some(RecordId { producer: (v >> SEQ_BITS) as u32, seq: v & ((1 << SEQ_BITS) - 1) })
    }
}

impl fmt::Display for RecordId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "p{}s{}", self.producer, self.seq)
    }
}

fn describe_slot(packed: u64) -> String {
    match packed {
        0 => "nothing".into(),
        CORRUPT => "a corrupt record".into(),
        p => RecordId::unpack(p).unwrap().to_string(),
    }
}

fn splitmix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

fn fill(out: &mut Vec<u8>, id: RecordId, extra_bytes: usize) {
    let mut state = splitmix((u64::from(id.producer) << 44) ^ id.seq);
    let mut left = extra_bytes;
    while left > 0 {
        state = splitmix(state);
        let n = left.min(8);
        out.extend_from_slice(&state.to_le_bytes()[..n]);
        left -= n;
    }
}

/// Binds the header's fields, so that a damaged id is not another valid id.
fn header_check(producer: u32, seq: u64, extra_bytes: u32) -> u32 {
    splitmix(splitmix(seq ^ 0x6368_6b31) ^ (u64::from(producer) << 32 | u64::from(extra_bytes))) as u32
}

/// The value of record `(producer, seq)` with `extra_bytes` of filler.
pub fn payload(producer: u32, seq: u64, extra_bytes: u32) -> Vec<u8> {
    let mut v = Vec::with_capacity(PAYLOAD_HEADER_BYTES + extra_bytes as usize);
    v.extend_from_slice(MAGIC);
    v.extend_from_slice(&producer.to_le_bytes());
    v.extend_from_slice(&seq.to_le_bytes());
    v.extend_from_slice(&extra_bytes.to_le_bytes());
    v.extend_from_slice(&header_check(producer, seq, extra_bytes).to_le_bytes());
    fill(&mut v, RecordId { producer, seq }, extra_bytes as usize);
    v
}

/// The id a value claims, if the value is exactly that id's payload.
pub fn parse_payload(value: &[u8]) -> Option<RecordId> {
    if value.len() < PAYLOAD_HEADER_BYTES || &value[..4] != MAGIC {
        return None;
    }
    let producer = u32::from_le_bytes(value[4..8].try_into().unwrap());
    let seq = u64::from_le_bytes(value[8..16].try_into().unwrap());
    let extra_bytes = u32::from_le_bytes(value[16..20].try_into().unwrap());
    let check = u32::from_le_bytes(value[20..24].try_into().unwrap());
    let extra = extra_bytes as usize;
    if check != header_check(producer, seq, extra_bytes)
        || value.len() != PAYLOAD_HEADER_BYTES + extra
        || producer >= 1 << PRODUCER_BITS
        || seq >= 1 << SEQ_BITS
    {
        return None;
    }
    let id = RecordId { producer, seq };
    let mut expect = Vec::with_capacity(extra);
    fill(&mut expect, id, extra);
    (expect == value[PAYLOAD_HEADER_BYTES..]).then_some(id)
}

/// One RecordBatch holding records `first_seq..first_seq + count` of
/// `producer`; record `seq` gets `extra_bytes(seq)` bytes of filler.
pub fn batch_for(producer: u32, first_seq: u64, count: u32, extra_bytes: impl Fn(u64) -> u32) -> Vec<u8> {
    assert!(count > 0, "a batch needs at least one record");
    let ts_ms = 1_700_000_000_000 + first_seq as i64;
    let mut b = BatchBuilder::new(ts_ms);
    for seq in first_seq..first_seq + u64::from(count) {
        b.push(ts_ms, None, Some(&payload(producer, seq, extra_bytes(seq))), &[]);
    }
    b.finish()
}

/// A seed for a randomized test: `var` if set, else one from the clock.
/// Prints it with the command that replays it.
pub fn seed(var: &str) -> u64 {
    let seed = match std::env::var(var) {
        Ok(s) => s.parse().unwrap_or_else(|_| panic!("{var}={s} is not a number")),
        Err(_) => std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() as u64 % 1_000_000_007,
    };
    println!("seed {seed} (replay with {var}={seed})");
    seed
}

/// What the client learned about one send.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Acked {
        base_offset: u64,
    },
    /// The server refused it before storing anything.
    Failed,
    /// It may or may not be stored.
    Indeterminate,
}

/// How a `Client::produce` result counts. Errors that may follow a write
/// (the log failed while the batch was staged, a timeout, an internal
/// error) and every broken connection are indeterminate; other server
/// errors refuse the request without storing it. `DiskFull` is one of those:
/// the log rewinds over the refused commits (docs/DURABILITY.md, "Disk
/// full"), so a record refused with it must never be stored, and the
/// checker counts one that is as `failed_present`.
pub fn classify(result: &Result<ProduceAck, ClientError>) -> Outcome {
    match result {
        Ok(ack) => Outcome::Acked { base_offset: ack.base_offset },
        Err(ClientError::Server { code, .. }) => match code {
            ErrorCode::StorageFailed | ErrorCode::Corrupt | ErrorCode::Timeout | ErrorCode::Internal | ErrorCode::Unknown(_) => {
                Outcome::Indeterminate
            }
            _ => Outcome::Failed,
        },
        // Refused by the client before a byte was sent.
        Err(ClientError::InvalidName(_) | ClientError::InvalidArgument(_)) => Outcome::Failed,
        Err(ClientError::Io(_) | ClientError::Protocol(_)) => Outcome::Indeterminate,
    }
}

/// Who read a record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Reader {
    /// A consumer, whose reads of each partition must be consecutive.
    Consumer(u32),
    /// The final reader, filling the snapshot [`Checker::begin_final`] opened.
    Final,
}

/// A logged send, to be resolved once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Send {
    part: u32,
    producer: u32,
    first_seq: u64,
    count: u32,
}

impl Send {
    pub fn count(&self) -> u32 {
        self.count
    }
}

const ST_UNSENT: u8 = 0;
const ST_INFLIGHT: u8 = 1;
const ST_FAILED: u8 = 2;
const ST_INDETERMINATE: u8 = 3;
const ST_ACKED: u8 = 4;

/// What the checker knows of one record: 16 bytes.
#[derive(Debug, Clone, Copy, Default)]
struct RecState {
    /// Acknowledged offset (valid when `status == ST_ACKED`).
    offset: u64,
    /// Interned partition of its first send.
    part: u32,
    status: u8,
    /// Sends not refused: how many copies may be stored.
    copies_allowed: u8,
    /// Copies in the final reads (computed by `report`).
    copies_seen: u8,
}

#[derive(Debug, Default)]
struct PartState {
    name: (String, u32),
    /// Per offset, the record every read so far returned there (packed id,
    /// `CORRUPT`, or 0 for never read).
    seen: Vec<u64>,
    /// The current final snapshot, per offset (0: not returned).
    final_snap: Option<Vec<u64>>,
    /// Offsets the final read could not account for (a fetch stalled below
    /// the high watermark), counted as holes.
    final_stalled: u64,
}

#[derive(Debug, Default)]
struct Examples {
    by_kind: HashMap<&'static str, Vec<String>>,
}

impl Examples {
    fn add(&mut self, kind: &'static str, what: impl FnOnce() -> String) {
        let v = self.by_kind.entry(kind).or_default();
        if v.len() < EXAMPLES_MAX {
            v.push(what());
        }
    }
}

#[derive(Debug, Default)]
struct State {
    parts: Vec<PartState>,
    part_ids: HashMap<(String, u32), u32>,
    producers: Vec<Vec<RecState>>,
    /// Per (consumer, part): the offset its next record must have.
    consumers: HashMap<(u32, u32), u64>,
    corrupt: u64,
    changed: u64,
    skipped: u64,
    went_back: u64,
    phantom: u64,
    records_read: u64,
    sends: u64,
    examples: Examples,
}

/// See the module documentation. Shared between threads by reference
/// (`Arc<Checker>` or scoped threads); every method takes `&self`.
#[derive(Debug, Default)]
pub struct Checker {
    state: Mutex<State>,
}

impl State {
    fn part(&mut self, topic: &str, partition: u32) -> u32 {
        if let Some(&i) = self.part_ids.get(&(topic.to_string(), partition)) {
            return i;
        }
        let i = self.parts.len() as u32;
        self.parts.push(PartState { name: (topic.to_string(), partition), ..PartState::default() });
        self.part_ids.insert((topic.to_string(), partition), i);
        i
    }

    fn rec(&mut self, id: RecordId) -> &mut RecState {
        let p = id.producer as usize;
        if self.producers.len() <= p {
            self.producers.resize_with(p + 1, Vec::new);
        }
        let v = &mut self.producers[p];
        let s = id.seq as usize;
        if v.len() <= s {
            v.resize(s + 1, RecState::default());
        }
        &mut v[s]
    }

    fn rec_get(&self, id: RecordId) -> Option<&RecState> {
        self.producers.get(id.producer as usize)?.get(id.seq as usize)
    }

    fn part_name(&self, part: u32) -> String {
        let (t, p) = &self.parts[part as usize].name;
        format!("{t}/{p}")
    }

    /// One record read at `offset` of `part`: `id` is `None` for a corrupt one.
    fn observe(&mut self, reader: Reader, part: u32, offset: u64, id: Option<RecordId>) {
        self.records_read += 1;
        let packed = id.map_or(CORRUPT, RecordId::packed);
        match id {
            None => {
                self.corrupt += 1;
                let name = self.part_name(part);
                self.examples.add("corrupt", || format!("{name} offset {offset}: not a checker payload (or its batch failed)"));
            }
            Some(id) => {
                let known = self.rec_get(id).is_some_and(|r| r.status != ST_UNSENT && r.part == part);
                if !known {
                    self.phantom += 1;
                    let name = self.part_name(part);
                    self.examples.add("phantom", || format!("{name} offset {offset}: {id}, never sent to this partition"));
                }
            }
        }
        let o = offset as usize;
        let ps = &mut self.parts[part as usize];
        if ps.seen.len() <= o {
            ps.seen.resize(o + 1, 0);
        }
        let before = ps.seen[o];
        if before == 0 {
            ps.seen[o] = packed;
        }
        if let Reader::Final = reader {
            let snap = ps.final_snap.get_or_insert_with(Vec::new);
            if snap.len() <= o {
                snap.resize(o + 1, 0);
            }
            snap[o] = packed;
        }
        if before != 0 && before != packed {
            self.changed += 1;
            let name = self.part_name(part);
            self.examples.add("changed", || {
                format!("{name} offset {offset}: read as {} before, now {} ({reader:?})", describe_slot(before), describe_slot(packed))
            });
        }
        if let Reader::Consumer(c) = reader {
            let next = *self.consumers.entry((c, part)).or_insert(offset);
            self.consumers.insert((c, part), offset + 1);
            if offset != next {
                let kind = if offset > next { "skipped" } else { "went_back" };
                if offset > next {
                    self.skipped += 1;
                } else {
                    self.went_back += 1;
                }
                let name = self.part_name(part);
                self.examples.add(kind, || format!("consumer {c} on {name}: read offset {offset} when {next} was next"));
            }
        }
    }
}

impl Checker {
    pub fn new() -> Checker {
        Checker::default()
    }

    fn st(&self) -> std::sync::MutexGuard<'_, State> {
        // A panicking producer thread must not hide the report.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Logs a send of records `first_seq..first_seq + count` of `producer`
    /// to one partition. Resending records (same partition) is allowed only
    /// after an indeterminate outcome.
    pub fn record_send(&self, topic: &str, partition: u32, producer: u32, first_seq: u64, count: u32) -> Send {
        let mut st = self.st();
        let part = st.part(topic, partition);
        st.sends += 1;
        for seq in first_seq..first_seq + u64::from(count) {
            let id = RecordId { producer, seq };
            let r = st.rec(id);
            match r.status {
                ST_UNSENT => r.part = part,
                ST_INDETERMINATE | ST_FAILED => assert_eq!(r.part, part, "{id} resent to another partition"),
                s => panic!("{id} sent again while {} (only an indeterminate send may be resent)", status_name(s)),
            }
            if r.status != ST_INDETERMINATE {
                r.status = ST_INFLIGHT;
            }
            r.copies_allowed = r.copies_allowed.saturating_add(1);
        }
        Send { part, producer, first_seq, count }
    }

    /// The server acknowledged `send`: its records are at `base_offset..`.
    pub fn record_ack(&self, send: &Send, base_offset: u64) {
        let mut st = self.st();
        for i in 0..u64::from(send.count) {
            let r = st.rec(RecordId { producer: send.producer, seq: send.first_seq + i });
            r.status = ST_ACKED;
            r.offset = base_offset + i;
        }
    }

    /// The server refused `send`: none of it was stored.
    pub fn record_fail(&self, send: &Send) {
        let mut st = self.st();
        for i in 0..u64::from(send.count) {
            let r = st.rec(RecordId { producer: send.producer, seq: send.first_seq + i });
            r.copies_allowed = r.copies_allowed.saturating_sub(1);
            if r.status == ST_INFLIGHT {
                r.status = ST_FAILED;
            }
        }
    }

    /// Nobody knows whether `send` was stored.
    pub fn record_indeterminate(&self, send: &Send) {
        let mut st = self.st();
        for i in 0..u64::from(send.count) {
            let r = st.rec(RecordId { producer: send.producer, seq: send.first_seq + i });
            if r.status != ST_ACKED {
                r.status = ST_INDETERMINATE;
            }
        }
    }

    /// Logs `outcome` for `send`; returns it.
    pub fn record_outcome(&self, send: &Send, outcome: Outcome) -> Outcome {
        match outcome {
            Outcome::Acked { base_offset } => self.record_ack(send, base_offset),
            Outcome::Failed => self.record_fail(send),
            Outcome::Indeterminate => self.record_indeterminate(send),
        }
        outcome
    }

    /// Records of the sends logged so far, acknowledged.
    pub fn acked_count(&self) -> u64 {
        let st = self.st();
        st.producers.iter().flatten().filter(|r| r.status == ST_ACKED).count() as u64
    }

    /// Consumer `consumer` will read `topic`/`partition` from `offset` next
    /// (its start, or a jump it makes on purpose).
    pub fn consumer_seek(&self, consumer: u32, topic: &str, partition: u32, offset: u64) {
        let mut st = self.st();
        let part = st.part(topic, partition);
        st.consumers.insert((consumer, part), offset);
    }

    /// One record read at `offset`: its value as the batch held it.
    pub fn observe_record(&self, reader: Reader, topic: &str, partition: u32, offset: u64, value: Option<&[u8]>) {
        let mut st = self.st();
        let part = st.part(topic, partition);
        st.observe(reader, part, offset, value.and_then(parse_payload));
    }

    /// The batches of one Fetch (or engine read) asked from `from_offset`:
    /// every record at or past it is observed. A batch that fails its CRC or
    /// does not decode counts its offsets as corrupt; batches after it are
    /// still checked. Returns the offset after the last record seen
    /// (`from_offset` if none), where the reader continues.
    pub fn observe_fetch(&self, reader: Reader, topic: &str, partition: u32, from_offset: u64, batches: &[u8]) -> u64 {
        let mut st = self.st();
        let part = st.part(topic, partition);
        let mut next = from_offset;
        let mut at = 0;
        while at < batches.len() {
            let info = match batch::parse_header(&batches[at..]) {
                Ok(info) if info.batch_bytes <= batches.len() - at && info.base_offset >= 0 && info.last_offset_delta >= 0 => info,
                _ => {
                    // Nothing after an undecodable header can be located.
                    st.corrupt += 1;
                    let name = st.part_name(part);
                    st.examples.add("corrupt", || format!("{name}: undecodable batch header at byte {at} of a fetch from {from_offset}"));
                    return next;
                }
            };
            let bytes = &batches[at..at + info.batch_bytes];
            at += info.batch_bytes;
            let base = info.base_offset as u64;
            let last = base + info.last_offset_delta as u64;
            if last < next {
                continue;
            }
            if batch::validate(bytes, bytes.len()).is_err() {
                for o in base.max(next)..=last {
                    st.observe(reader, part, o, None);
                }
                let name = st.part_name(part);
                st.examples.add("corrupt", || format!("{name}: batch {base}..={last} fails validation (CRC or layout)"));
                next = last + 1;
                continue;
            }
            for r in batch::records(bytes) {
                let Ok(r) = r else { break };
                let o = base + r.offset_delta as u64;
                if o >= next {
                    st.observe(reader, part, o, r.value.and_then(parse_payload));
                    next = o + 1;
                }
            }
        }
        next
    }

    /// Opens a new final snapshot of `topic`/`partition`; records observed
    /// with [`Reader::Final`] fill it.
    pub fn begin_final(&self, topic: &str, partition: u32) {
        let mut st = self.st();
        let part = st.part(topic, partition);
        let ps = &mut st.parts[part as usize];
        ps.final_snap = Some(Vec::new());
        ps.final_stalled = 0;
    }

    /// A final reader could not read past `offset` although the partition
    /// ends at `high_watermark`: the offsets in between count as holes.
    pub fn final_stalled(&self, topic: &str, partition: u32, offset: u64, high_watermark: u64) {
        let mut st = self.st();
        let part = st.part(topic, partition);
        let n = high_watermark.saturating_sub(offset);
        st.parts[part as usize].final_stalled += n;
        let name = st.part_name(part);
        st.examples.add("holes", || format!("{name}: the final read stalled at offset {offset} below the high watermark {high_watermark}"));
    }

    /// Reads `partitions` partitions of `topic` from offset 0 to their high
    /// watermark over a fresh connection to `addr`, as the final snapshot.
    /// Returns the records read.
    pub fn final_read(&self, addr: impl ToSocketAddrs + Copy, topic: &str, partitions: u32) -> Result<u64, ClientError> {
        let mut c = Client::connect_timeout(addr, Duration::from_secs(10))?;
        c.set_timeout(Some(Duration::from_secs(60)))?;
        let mut total = 0;
        for p in 0..partitions {
            self.begin_final(topic, p);
            let mut offset = 0;
            loop {
                let f = c.fetch(topic, p, offset, 4 << 20, Duration::ZERO)?;
                let next = self.observe_fetch(Reader::Final, topic, p, offset, &f.batches);
                total += next - offset;
                if next >= f.high_watermark {
                    break;
                }
                if next == offset {
                    // Nothing readable at `offset` although the log goes on.
                    self.final_stalled(topic, p, offset, f.high_watermark);
                    break;
                }
                offset = next;
            }
        }
        Ok(total)
    }

    /// Judges everything logged and observed. See the module documentation.
    pub fn report(&self) -> CheckReport {
        let mut guard = self.st();
        let st = &mut *guard;
        let mut rep = CheckReport {
            sends: st.sends,
            records_read: st.records_read,
            corrupt: st.corrupt,
            changed: st.changed,
            skipped: st.skipped,
            went_back: st.went_back,
            phantom: st.phantom,
            ..CheckReport::default()
        };
        for r in st.producers.iter_mut().flatten() {
            r.copies_seen = 0;
        }
        // Final snapshots: holes, vanished records, copies per record.
        for pi in 0..st.parts.len() {
            let name = st.part_name(pi as u32);
            let ps = &st.parts[pi];
            let Some(snap) = &ps.final_snap else { continue };
            rep.final_records += snap.iter().filter(|&&v| v != 0).count() as u64;
            let holes = snap.iter().filter(|&&v| v == 0).count() as u64 + ps.final_stalled;
            if holes > 0 {
                rep.holes += holes;
                let first = snap.iter().position(|&v| v == 0);
                st.examples.add("holes", || format!("{name}: {holes} offsets missing below the final end, first at {first:?}"));
            }
            for (o, &was) in ps.seen.iter().enumerate() {
                if was != 0 && snap.get(o).is_none_or(|&v| v == 0) {
                    rep.vanished += 1;
                    st.examples
                        .add("vanished", || format!("{name} offset {o}: read as {} before, gone in the final read", describe_slot(was)));
                }
            }
            let ids: Vec<RecordId> = snap.iter().filter_map(|&v| RecordId::unpack(v)).collect();
            for id in ids {
                if let Some(p) = st.producers.get_mut(id.producer as usize)
                    && let Some(r) = p.get_mut(id.seq as usize)
                {
                    r.copies_seen = r.copies_seen.saturating_add(1);
                }
            }
        }
        // Every record sent.
        for (producer, recs) in st.producers.iter().enumerate() {
            for (seq, r) in recs.iter().enumerate() {
                if r.status == ST_UNSENT {
                    continue;
                }
                let id = RecordId { producer: producer as u32, seq: seq as u64 };
                let ps = &st.parts[r.part as usize];
                let (t, p) = &ps.name;
                if r.status == ST_ACKED {
                    rep.acked += 1;
                    let Some(snap) = &ps.final_snap else {
                        rep.unchecked += 1;
                        continue;
                    };
                    let at = snap.get(r.offset as usize).copied().unwrap_or(0);
                    if at != id.packed() {
                        rep.lost += 1;
                        let elsewhere = snap.iter().position(|&v| v == id.packed());
                        st.examples.add("lost", || {
                            format!(
                                "{id} acked at {t}/{p} offset {}: final read has {} there (found at {elsewhere:?})",
                                r.offset,
                                describe_slot(at)
                            )
                        });
                    }
                } else if r.copies_seen > 0 {
                    rep.survived_unacked += 1;
                    if r.status == ST_FAILED {
                        rep.failed_present += 1;
                        st.examples.add("failed_present", || format!("{id} on {t}/{p}: refused by the server, yet stored"));
                    }
                }
                let allowed = r.copies_allowed.max(1);
                if r.copies_seen > allowed {
                    rep.duplicated += u64::from(r.copies_seen - allowed);
                    st.examples.add("duplicated", || format!("{id} on {t}/{p}: {} copies, sent {} times", r.copies_seen, r.copies_allowed));
                } else if r.copies_seen > 1 {
                    rep.resent_duplicates += u64::from(r.copies_seen - 1);
                }
            }
        }
        let mut kinds: Vec<_> = st.examples.by_kind.iter().collect();
        kinds.sort();
        rep.examples = kinds.into_iter().flat_map(|(k, v)| v.iter().map(move |e| format!("{k}: {e}"))).collect();
        rep
    }
}

fn status_name(s: u8) -> &'static str {
    match s {
        ST_UNSENT => "unsent",
        ST_INFLIGHT => "in flight",
        ST_FAILED => "refused",
        ST_INDETERMINATE => "indeterminate",
        _ => "acknowledged",
    }
}

/// What [`Checker::report`] found. The anomaly fields must all be 0.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CheckReport {
    pub sends: u64,
    /// Acknowledged records, each checked against the final read.
    pub acked: u64,
    /// Records observed by every reader, final reads included.
    pub records_read: u64,
    /// Records in the last final snapshots.
    pub final_records: u64,
    pub lost: u64,
    pub corrupt: u64,
    pub changed: u64,
    pub holes: u64,
    pub duplicated: u64,
    pub vanished: u64,
    pub skipped: u64,
    pub went_back: u64,
    pub phantom: u64,
    pub failed_present: u64,
    pub unchecked: u64,
    /// Allowed: records never acknowledged that are stored.
    pub survived_unacked: u64,
    /// Allowed: extra copies of records resent after an indeterminate send.
    pub resent_duplicates: u64,
    /// A few descriptions of each anomaly found.
    pub examples: Vec<String>,
}

impl CheckReport {
    /// The anomaly counts by name, in the report's order.
    pub fn anomalies(&self) -> [(&'static str, u64); 11] {
        [
            ("lost", self.lost),
            ("corrupt", self.corrupt),
            ("changed", self.changed),
            ("holes", self.holes),
            ("duplicated", self.duplicated),
            ("vanished", self.vanished),
            ("skipped", self.skipped),
            ("went_back", self.went_back),
            ("phantom", self.phantom),
            ("failed_present", self.failed_present),
            ("unchecked", self.unchecked),
        ]
    }

    pub fn is_clean(&self) -> bool {
        self.anomalies().iter().all(|&(_, n)| n == 0)
    }

    /// Prints the report; panics with it unless every anomaly count is 0.
    pub fn assert_clean(&self) {
        println!("{self}");
        assert!(self.is_clean(), "the checker found anomalies:\n{self}");
    }
}

impl fmt::Display for CheckReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "checker: {} sends, {} acknowledged records checked, {} records read ({} in the final read), {} unacknowledged survived, {} resent duplicates (allowed)",
            self.sends, self.acked, self.records_read, self.final_records, self.survived_unacked, self.resent_duplicates
        )?;
        let counts: Vec<String> = self.anomalies().iter().map(|(k, n)| format!("{k} {n}")).collect();
        write!(f, "checker anomalies: {}", counts.join(", "))?;
        for e in &self.examples {
            write!(f, "\n  {e}")?;
        }
        Ok(())
    }
}
