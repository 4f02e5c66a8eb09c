//! Blocking file-system calls shared by the io_uring backend and the
//! catalog: rare (start-up, segment rolls, checkpoints, retention), so plain
//! system calls are the simplest correct choice. Each error names its op
//! and path.
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::Path;

use crate::buf::AlignedBuf;
use crate::error::{IoOp, Result, StromError};

/// Opens `path` for O_DIRECT I/O. `create` fails if the file exists.
pub fn open_direct(path: &Path, writable: bool, create: bool) -> Result<File> {
    let op = if create { IoOp::Create } else { IoOp::Open };
    OpenOptions::new()
        .read(true)
        .write(writable || create)
        .create_new(create)
        .mode(0o644)
        .custom_flags(libc::O_DIRECT | libc::O_CLOEXEC)
        .open(path)
        .map_err(|e| StromError::io(op, path, &e))
}

/// Reads up to `len` bytes at `pos` into `buf` (O_DIRECT: both aligned);
/// returns the bytes read, short only at end of file. EINTR is retried.
pub fn read_at(file: &File, path: &Path, pos: u64, len: usize, buf: &mut AlignedBuf) -> Result<usize> {
    assert!(len <= buf.capacity(), "read of {len} bytes into a {} byte buffer", buf.capacity());
    let mut done = 0;
    while done < len {
        match file.read_at(&mut buf.full_mut()[done..len], pos + done as u64) {
            Ok(0) => break,
            Ok(n) => done += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(StromError::io(IoOp::Read, path, &e)),
        }
    }
    buf.set_len(done);
    Ok(done)
}

pub fn remove(path: &Path) -> Result<()> {
    std::fs::remove_file(path).map_err(|e| StromError::io(IoOp::Remove, path, &e))
}

/// Renames `from` to `to` (same file system); durable after [`sync_dir`].
pub fn rename(from: &Path, to: &Path) -> Result<()> {
    std::fs::rename(from, to).map_err(|e| StromError::io(IoOp::Rename, to, &e))
}

/// fsyncs a directory so that creations, removals and renames in it survive
/// a power cut.
pub fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir).and_then(|d| d.sync_all()).map_err(|e| StromError::io(IoOp::SyncDir, dir, &e))
}

pub fn create_dir_all(dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(|e| StromError::io(IoOp::Create, dir, &e))
}

/// Entry names of `dir`, sorted.
pub fn list_dir(dir: &Path) -> Result<Vec<String>> {
    let err = |e: std::io::Error| StromError::io(IoOp::ListDir, dir, &e);
    let mut names = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(err)? {
        names.push(entry.map_err(err)?.file_name().to_string_lossy().into_owned());
    }
    names.sort();
    Ok(names)
}

/// The whole content of a small file, or None when it does not exist.
pub fn read_file(path: &Path) -> Result<Option<Vec<u8>>> {
    match std::fs::read(path) {
        Ok(b) => Ok(Some(b)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(StromError::io(IoOp::Read, path, &e)),
    }
}

/// Replaces `path` with `data` atomically and durably: a crash leaves
/// either the old or the new content, never a mix. Write a temporary file,
/// fsync it, rename it over `path`, fsync the directory.
pub fn write_file_atomic(path: &Path, data: &[u8]) -> Result<()> {
    let tmp = path.with_extension("tmp");
    let dir = path.parent().unwrap_or(Path::new("."));
    let mut f = File::create(&tmp).map_err(|e| StromError::io(IoOp::Create, &tmp, &e))?;
    f.write_all(data).map_err(|e| StromError::io(IoOp::Write, &tmp, &e))?;
    f.sync_all().map_err(|e| StromError::io(IoOp::Fsync, &tmp, &e))?;
    crate::failpoint!("checkpoint_before_rename", path.ends_with(crate::log::checkpoint::FILE_NAME));
    std::fs::rename(&tmp, path).map_err(|e| StromError::io(IoOp::Rename, path, &e))?;
    sync_dir(dir)
}
