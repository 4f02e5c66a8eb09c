//! The ring's file-system side that is not an op: the read-only guard a
//! follower's cores run under, and the small buffered hint files (a log's
//! durable mark) written with a plain pwrite.
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::Path;

use super::UringIo;
use crate::error::{IoOp, Result, StromError};
use crate::io::FileId;

impl UringIo {
    /// From now on this ring changes no file or directory: creating,
    /// writing, removing, renaming and opening for writing are refused
    /// (a write op pushed is a bug, and panics). A read-only follower's
    /// cores run on such rings, so that no path they take, including one
    /// overlooked, can write into the directory another process owns.
    pub fn forbid_writes(&mut self) {
        self.read_only = true;
    }

    pub(super) fn refuse_write(&self, op: IoOp, path: &Path) -> Result<()> {
        if self.read_only {
            return Err(StromError::ReadOnly(format!("{op:?} of {}", path.display())));
        }
        Ok(())
    }

    pub(super) fn hint_open(&mut self, path: &Path) -> Result<FileId> {
        self.refuse_write(IoOp::Open, path)?;
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o644)
            .custom_flags(libc::O_CLOEXEC)
            .open(path)
            .map_err(|e| StromError::io(IoOp::Open, path, &e))?;
        Ok(self.add_file(file, path))
    }

    pub(super) fn hint_write(&mut self, file: FileId, data: &[u8]) -> Result<()> {
        let f = &self.files[file.0 as usize];
        self.refuse_write(IoOp::Write, &f.path)?;
        f.file.write_all_at(data, 0).map_err(|e| StromError::io(IoOp::Write, &f.path, &e))
    }
}
