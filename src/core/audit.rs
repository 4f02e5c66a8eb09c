//! Ways to break a core on purpose, so that tests see each invariant audit
//! fire (docs/TESTING.md): an audit that cannot fire proves nothing.
use super::Core;
use crate::buf::BLOCK_BYTES;
use crate::io::Io;

/// Ways to break a core on purpose, for tests that prove each audit fires.
#[doc(hidden)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuditBreak {
    /// The next write of `log` is aimed one block low, over acknowledged bytes.
    OverlapNextWrite { log: u32 },
    /// Reads look past the retired position (up to `written_pos`).
    ServeUnretired,
    /// Two read buffers name the same registered index.
    AliasReadBuffers,
}

impl<I: Io> Core<I> {
    /// Breaks the core on purpose so that a test sees an audit fire. The
    /// next violation is expected: counted, without the debug assertion.
    #[doc(hidden)]
    pub fn break_for_audit(&mut self, what: AuditBreak) {
        self.lent.violation_expected = true;
        match what {
            AuditBreak::OverlapNextWrite { log } => {
                self.journals.get_mut(&log).expect("log").misaim_next_write_for_audit(BLOCK_BYTES as u64)
            }
            AuditBreak::ServeUnretired => self.reads.serve_unretired_for_audit(),
            AuditBreak::AliasReadBuffers => self.reads.alias_read_buffers_for_audit(),
        }
    }
}
