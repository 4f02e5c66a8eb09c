//! Memory the kernel reads from and writes into: 4 KiB-aligned buffers.
//!
//! An [`AlignedBuf`] is owned by exactly one party at a time: a pool, a log
//! being filled, or an in-flight io_uring operation (which gives it back in
//! its completion). That single ownership is what makes it sound to hand its
//! pointer to the kernel; see `docs/UNSAFE.md`.
mod aligned;
pub mod lent;
pub mod registration;

pub use aligned::{AlignedBuf, BLOCK_BYTES, align_down, align_up};
