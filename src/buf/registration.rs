//! Which of a core's buffers are registered with its ring, when the process
//! may not pin them all.
//!
//! Registration (`IORING_REGISTER_BUFFERS`) pins a buffer's pages once, so
//! a fixed op (`WRITE_FIXED`, `READ_FIXED`, `SEND_ZC` naming the buffer)
//! skips pinning and unpinning them on every operation, and a registered
//! reply is sent without copying it into the socket. The kernel charges
//! pinned pages to the user's `RLIMIT_MEMLOCK` (8 MiB by default for a
//! user that is not root) unless the process holds `CAP_IPC_LOCK`, and a
//! core asks for about 88 MiB in a server. So a core registers what fits
//! its share of the limit and keeps the rest as ordinary aligned buffers:
//! same sizes, same counts, same total memory; the io layer picks the plain
//! op (`WRITE`, `READ`, `SEND`) for a buffer with no registered index.
//!
//! The order, best value per registered byte first:
//! 1. **Reply buffers** (a server's): registered, a Fetch reply goes out by
//!    zero-copy `SEND_ZC`; unregistered, by `SEND`, which copies every byte
//!    sent to a consumer into the socket. (A zero-copy send from an
//!    unregistered buffer would pin its pages per send and charge them to
//!    the same limit, so it is not an option.) The pool is a stack, so the
//!    registered ones, taken first, carry most replies when few are in use.
//! 2. **Read buffers**: each disk read of a catching-up consumer pins its
//!    buffer's pages when unregistered. Also a stack, taken registered first.
//! 3. **Write buffers** last: the tail cache rotates through all of a log's
//!    buffers evenly, so registering k of 64 makes only k/64 of the writes
//!    fixed, the smallest gain per registered byte. They are spread evenly
//!    over the core's logs.
//!
//! The plan is pure arithmetic, so a unit test checks it against a budget.
use super::BLOCK_BYTES;
use crate::config::EngineConfig;

/// How many buffers of one kind a core has, and the size of each.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct BufferKind {
    pub count: usize,
    pub bytes_each: usize,
}

impl BufferKind {
    pub fn total_bytes(&self) -> usize {
        self.count * self.bytes_each
    }

    /// How many of these fit in `budget_bytes`, at most all of them.
    fn fitting(&self, budget_bytes: usize) -> usize {
        budget_bytes.checked_div(self.bytes_each).map_or(self.count, |n| self.count.min(n))
    }
}

/// The buffers one core allocates.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct CoreBuffers {
    /// Every write buffer of every log of the core.
    pub write: BufferKind,
    pub read: BufferKind,
    pub reply: BufferKind,
}

impl CoreBuffers {
    /// What a core with `logs` logs and `reply_bufs` reply buffers (its
    /// server's, 0 in the embedded engine) allocates under `cfg`. A read
    /// buffer has a block more than a write buffer: an unaligned range of a
    /// write buffer's length still fits in one aligned read.
    pub fn of(cfg: &EngineConfig, logs: usize, reply_bufs: usize) -> CoreBuffers {
        CoreBuffers {
            write: BufferKind { count: logs * cfg.write_bufs_per_log, bytes_each: cfg.write_buf_bytes },
            read: BufferKind { count: cfg.read_bufs_per_core, bytes_each: cfg.write_buf_bytes + BLOCK_BYTES },
            reply: BufferKind { count: reply_bufs, bytes_each: cfg.write_buf_bytes },
        }
    }

    pub fn total_bytes(&self) -> usize {
        self.write.total_bytes() + self.read.total_bytes() + self.reply.total_bytes()
    }
}

/// How many buffers of each kind a core registers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RegistrationPlan {
    pub write: usize,
    pub read: usize,
    pub reply: usize,
}

impl RegistrationPlan {
    /// The plan of one of `cores` cores when all of them together may
    /// register `registered_bytes_max` (None: no limit). Every core gets
    /// the same share: the kernel charges the sum, whichever core pins.
    pub fn for_core(bufs: &CoreBuffers, registered_bytes_max: Option<usize>, cores: usize) -> RegistrationPlan {
        match registered_bytes_max {
            None => RegistrationPlan::all(bufs),
            Some(total_bytes) => RegistrationPlan::within(bufs, total_bytes / cores.max(1)),
        }
    }

    /// Registers everything: no limit applies.
    pub fn all(bufs: &CoreBuffers) -> RegistrationPlan {
        RegistrationPlan { write: bufs.write.count, read: bufs.read.count, reply: bufs.reply.count }
    }

    /// The most of `bufs` that fits in `budget_bytes`, in the order of the
    /// module's comment: reply buffers, then read buffers, then write buffers.
    pub fn within(bufs: &CoreBuffers, budget_bytes: usize) -> RegistrationPlan {
        let reply = bufs.reply.fitting(budget_bytes);
        let left_bytes = budget_bytes - reply * bufs.reply.bytes_each;
        let read = bufs.read.fitting(left_bytes);
        let left_bytes = left_bytes - read * bufs.read.bytes_each;
        let write = bufs.write.fitting(left_bytes);
        let plan = RegistrationPlan { write, read, reply };
        assert!(plan.registered_bytes(bufs) <= budget_bytes, "a plan never exceeds its budget");
        plan
    }

    pub fn registered_bytes(&self, bufs: &CoreBuffers) -> usize {
        self.write * bufs.write.bytes_each + self.read * bufs.read.bytes_each + self.reply * bufs.reply.bytes_each
    }

    /// Every buffer is registered.
    pub fn is_all(&self, bufs: &CoreBuffers) -> bool {
        *self == RegistrationPlan::all(bufs)
    }

    /// How many of log number `i` (of `logs`) write buffers are registered:
    /// the plan's write buffers dealt out evenly, the first logs getting
    /// one more when they do not divide.
    pub fn write_for_log(&self, i: usize, logs: usize) -> usize {
        self.write / logs + usize::from(i < self.write % logs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: usize = 1 << 20;

    /// A server core's buffers with the defaults: one log of 64 write
    /// buffers, 8 read buffers, 16 reply buffers.
    fn server_core() -> CoreBuffers {
        CoreBuffers {
            write: BufferKind { count: 64, bytes_each: MIB },
            read: BufferKind { count: 8, bytes_each: MIB + 4096 },
            reply: BufferKind { count: 16, bytes_each: MIB },
        }
    }

    // Proves: the plan never exceeds its budget, and fills it in the stated
    // order: replies, then reads, then writes.
    #[test]
    fn plan_fits_budget_and_prefers_replies_then_reads() {
        let bufs = server_core();
        // 4 MiB: one core's half of an 8 MiB limit on two cores.
        let plan = RegistrationPlan::within(&bufs, 4 * MIB);
        assert_eq!(plan, RegistrationPlan { write: 0, read: 0, reply: 4 });
        let plan = RegistrationPlan::within(&bufs, 20 * MIB);
        assert_eq!(plan, RegistrationPlan { write: 0, read: 3, reply: 16 });
        assert!(plan.registered_bytes(&bufs) <= 20 * MIB);
        let plan = RegistrationPlan::within(&bufs, 40 * MIB);
        assert_eq!(plan, RegistrationPlan { write: 15, read: 8, reply: 16 });
        assert!(plan.registered_bytes(&bufs) <= 40 * MIB);
        for budget in (0..100 * MIB).step_by(MIB / 3) {
            let plan = RegistrationPlan::within(&bufs, budget);
            assert!(plan.registered_bytes(&bufs) <= budget, "budget {budget}: {plan:?}");
            // Nothing of a later kind while an earlier one is left out.
            assert!(plan.read == 0 || plan.reply == 16, "{plan:?}");
            assert!(plan.write == 0 || plan.read == 8, "{plan:?}");
        }
    }

    // Proves: a budget of at least the whole registers everything, and the
    // embedded engine (no reply buffers) starts with its read buffers.
    #[test]
    fn plan_takes_all_when_it_fits_and_engine_starts_with_reads() {
        let bufs = server_core();
        assert!(RegistrationPlan::within(&bufs, bufs.total_bytes()).is_all(&bufs));
        assert!(RegistrationPlan::within(&bufs, usize::MAX).is_all(&bufs));
        assert_eq!(RegistrationPlan::within(&bufs, 0), RegistrationPlan::default());
        let engine = CoreBuffers { reply: BufferKind::default(), ..bufs };
        assert_eq!(RegistrationPlan::within(&engine, 4 * MIB), RegistrationPlan { write: 0, read: 3, reply: 0 });
    }

    // Proves: write buffers are dealt out over the logs evenly and all of them are dealt.
    #[test]
    fn write_buffers_spread_over_logs() {
        let plan = RegistrationPlan { write: 7, read: 0, reply: 0 };
        let per_log: Vec<usize> = (0..3).map(|i| plan.write_for_log(i, 3)).collect();
        assert_eq!(per_log, [3, 2, 2]);
        assert_eq!(per_log.iter().sum::<usize>(), 7);
    }
}
