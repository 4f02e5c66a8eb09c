//! Kafka producer ids (InitProducerId), handed out durably.
//!
//! An idempotent producer's batches are deduplicated by (producer id,
//! sequence), so an id handed out twice would let one producer's batches be
//! taken for another's retries. Ids come from blocks: `dir/kafka-producer-ids`
//! holds a durable high mark, and before an id at or past the mark is handed
//! out the next mark ([`BLOCK_IDS`] further) is written and fsynced. After a
//! crash the next id starts at the mark, above every id handed out before;
//! at most a block of ids is skipped, which costs nothing. The file is text
//! ending with a CRC-32C line, like the catalog. The Kafka coordinator thread
//! owns the allocator: its disk writes never run on a core thread.
use std::path::{Path, PathBuf};

use crate::catalog::{check_crc, read_text, with_crc};
use crate::error::{Result, StromError};
use crate::io::fs::write_file_atomic;

pub(crate) const FILE_NAME: &str = "kafka-producer-ids";
/// Ids reserved by one durable write: one fsync per thousand producers.
pub(crate) const BLOCK_IDS: i64 = 1000;
const HEADER: &str = "strom-kafka-producer-ids 1\n";
/// Kafka's epochs are i16 and a client never uses `i16::MAX` itself (it
/// means "no epoch" in some requests), so an epoch bump past this hands out
/// a fresh id with epoch 0 instead, as Kafka's transaction coordinator does.
const EPOCH_MAX: i16 = i16::MAX - 1;

/// The producer-id allocator: the next id and the durable high mark.
#[derive(Debug)]
pub(crate) struct ProducerIds {
    path: PathBuf,
    /// The next id to hand out; every id below it may have been handed out.
    next_id: i64,
    /// Every id below this mark is reserved by the file on disk.
    durable_mark: i64,
    /// A write of the mark failed: the allocator refuses from then on
    /// instead of retrying over a file whose state is unknown (fsyncgate).
    failed: bool,
    read_only: bool,
}

impl ProducerIds {
    /// Reads `dir/kafka-producer-ids` (absent: ids start at 0). A damaged
    /// file refuses the open: handing out ids from a guess could repeat one.
    pub(crate) fn open(dir: &Path) -> Result<ProducerIds> {
        let path = dir.join(FILE_NAME);
        let durable_mark = match read_text(&path)? {
            Some(text) => parse(&path, &check_crc(&path, &text)?)?,
            None => 0,
        };
        Ok(ProducerIds { path, next_id: durable_mark, durable_mark, failed: false, read_only: false })
    }

    /// Hands out no id (a read-only server writes nothing; an idempotent
    /// producer's InitProducerId is answered ReadOnly, as its produce would be).
    pub(crate) fn read_only(mut self) -> ProducerIds {
        self.read_only = true;
        self
    }

    /// A fresh id (epoch 0 is the caller's), durable before it is returned.
    pub(crate) fn next_id(&mut self) -> Result<i64> {
        if self.read_only {
            return Err(StromError::ReadOnly("InitProducerId".into()));
        }
        if self.failed {
            return Err(StromError::Unsupported(format!("{}: an earlier write failed; restart the server", self.path.display())));
        }
        if self.next_id >= self.durable_mark {
            let mark = self.next_id.checked_add(BLOCK_IDS).ok_or(StromError::Overloaded("kafka producer ids exhausted"))?;
            if let Err(e) = write_file_atomic(&self.path, with_crc(format!("{HEADER}mark {mark}\n")).as_bytes()) {
                self.failed = true;
                return Err(e);
            }
            self.durable_mark = mark;
        }
        let id = self.next_id;
        self.next_id += 1;
        Ok(id)
    }

    /// InitProducerId v3+ from a producer that already holds (id, epoch):
    /// the same id with the next epoch if this allocator handed the id out
    /// and the epoch can grow, else a fresh id with epoch 0.
    pub(crate) fn bump(&mut self, id: i64, epoch: i16) -> Result<(i64, i16)> {
        if self.read_only {
            return Err(StromError::ReadOnly("InitProducerId".into()));
        }
        if (0..self.next_id).contains(&id) && (0..EPOCH_MAX).contains(&epoch) {
            return Ok((id, epoch + 1));
        }
        Ok((self.next_id()?, 0))
    }
}

fn parse(path: &Path, body: &str) -> Result<i64> {
    let bad = |why: &str| StromError::BadDataDir(format!("{}: {why}", path.display()));
    let rest = body.strip_prefix(HEADER).ok_or_else(|| bad("not a Strom producer-id file (bad first line)"))?;
    let mark = rest.strip_prefix("mark ").and_then(|r| r.strip_suffix('\n')).ok_or_else(|| bad("missing the mark line"))?;
    match mark.parse::<i64>() {
        Ok(m) if m >= 0 => Ok(m),
        _ => Err(bad("the mark is not a non-negative number")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fresh_dir(name: &str) -> PathBuf {
        let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/tmp-unit").join(name);
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    // Proves: ids are unique and increasing, and after a reopen (a restart,
    // or a crash after any id was answered) the next id is above every id
    // handed out before, even mid-block and across a block boundary.
    #[test]
    fn reopen_never_repeats_an_id() {
        let dir = fresh_dir("kafka-pid-reopen");
        let mut ids = ProducerIds::open(&dir).unwrap();
        let first: Vec<i64> = (0..3).map(|_| ids.next_id().unwrap()).collect();
        assert_eq!(first, vec![0, 1, 2]);
        drop(ids);
        let mut ids = ProducerIds::open(&dir).unwrap();
        let mut seen = first.clone();
        for _ in 0..(BLOCK_IDS + 5) {
            let id = ids.next_id().unwrap();
            assert!(id > *seen.last().unwrap(), "id {id} repeats or goes back");
            seen.push(id);
        }
        drop(ids);
        let mut ids = ProducerIds::open(&dir).unwrap();
        let next = ids.next_id().unwrap();
        assert!(seen.iter().all(|&s| s < next), "next {next} after reopen is not above all handed out");
    }

    // Proves: a bump keeps the id and adds one to the epoch, and an id this
    // allocator never handed out, or an epoch at its end, gets a fresh id.
    #[test]
    fn bump_keeps_known_ids_and_replaces_others() {
        let dir = fresh_dir("kafka-pid-bump");
        let mut ids = ProducerIds::open(&dir).unwrap();
        let id = ids.next_id().unwrap();
        assert_eq!(ids.bump(id, 0).unwrap(), (id, 1));
        assert_eq!(ids.bump(id, 41).unwrap(), (id, 42));
        let (fresh, epoch) = ids.bump(id, EPOCH_MAX).unwrap();
        assert!(fresh > id && epoch == 0, "epoch overflow gave ({fresh}, {epoch})");
        let (other, epoch) = ids.bump(1_000_000, 3).unwrap();
        assert!(other > fresh && other < 1_000_000 && epoch == 0, "unknown id gave ({other}, {epoch})");
        assert_eq!(ids.bump(-1, 0).unwrap().1, 0);
    }

    // Proves: a damaged file (flipped byte, missing checksum, wrong header)
    // refuses the open with an error naming the file.
    #[test]
    fn damaged_file_refuses_open() {
        let dir = fresh_dir("kafka-pid-damaged");
        ProducerIds::open(&dir).unwrap().next_id().unwrap();
        let path = dir.join(FILE_NAME);
        let good = std::fs::read_to_string(&path).unwrap();
        let flipped = good.replace("mark 1000", "mark 9000");
        let bodies = [flipped, good.lines().take(2).collect::<Vec<_>>().join("\n") + "\n", with_crc("something else 1\nmark 5\n".into())];
        for body in bodies {
            std::fs::write(&path, &body).unwrap();
            let err = ProducerIds::open(&dir).unwrap_err().to_string();
            assert!(err.contains(FILE_NAME), "{body:?} gave {err}");
        }
    }
}
