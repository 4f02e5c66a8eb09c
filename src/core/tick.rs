//! The tick loop.
use super::Core;
use crate::error::Result;
use crate::io::Io;

impl<I: Io> Core<I> {
    /// One whole tick without a mailbox: plan, submit and wait, then process.
    pub fn tick(&mut self) -> Result<()> {
        self.plan();
        let (block, timeout) = self.wait_hint();
        self.io.wait(usize::from(block && self.io.in_flight() > 0), timeout)?;
        self.process_completions();
        Ok(())
    }
}
