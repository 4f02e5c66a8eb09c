//! A heap buffer aligned to [`BLOCK_BYTES`], usable for O_DIRECT and for
//! io_uring registered (fixed) buffers.
//!
//! Contract (see docs/UNSAFE.md): the allocation is made with
//! `Layout::from_size_align(capacity, BLOCK_BYTES)`, is zeroed at creation so
//! every byte is initialised, is never reallocated, and is freed only by
//! `Drop`. While an operation is in flight the buffer is owned by that
//! operation's slot in the op table, so nothing can free or touch it before
//! the final completion.
#![allow(unsafe_code)]

use std::alloc::{Layout, alloc_zeroed, dealloc};
use std::ptr::NonNull;

/// The alignment and size granule of every O_DIRECT transfer Strom makes.
/// ext4's block size; also a multiple of the 512-byte logical sector.
pub const BLOCK_BYTES: usize = 4096;

/// Rounds `n` up to a multiple of [`BLOCK_BYTES`].
pub const fn align_up(n: u64) -> u64 {
    n.div_ceil(BLOCK_BYTES as u64) * BLOCK_BYTES as u64
}

/// Rounds `n` down to a multiple of [`BLOCK_BYTES`].
pub const fn align_down(n: u64) -> u64 {
    n / BLOCK_BYTES as u64 * BLOCK_BYTES as u64
}

/// An owned, zero-initialised, block-aligned byte buffer with a fill length.
pub struct AlignedBuf {
    ptr: NonNull<u8>,
    capacity_bytes: usize,
    len_bytes: usize,
    /// Index in the ring's registered-buffer table, if registered.
    fixed_index: Option<u16>,
}

// SAFETY: AlignedBuf uniquely owns its allocation (no aliasing handles exist),
// like a Vec<u8>, so moving it to another thread is sound.
unsafe impl Send for AlignedBuf {}

impl AlignedBuf {
    /// Allocates `capacity_bytes` (a non-zero multiple of BLOCK_BYTES), zeroed.
    pub fn new(capacity_bytes: usize) -> AlignedBuf {
        assert!(capacity_bytes > 0 && capacity_bytes.is_multiple_of(BLOCK_BYTES));
        let layout = Layout::from_size_align(capacity_bytes, BLOCK_BYTES).expect("layout");
        // SAFETY: layout has non-zero size (asserted above).
        let raw = unsafe { alloc_zeroed(layout) };
        let ptr = NonNull::new(raw).unwrap_or_else(|| std::alloc::handle_alloc_error(layout));
        AlignedBuf { ptr, capacity_bytes, len_bytes: 0, fixed_index: None }
    }

    pub fn capacity(&self) -> usize {
        self.capacity_bytes
    }

    /// Bytes filled so far (what a write sends, or what a read returned).
    pub fn len(&self) -> usize {
        self.len_bytes
    }

    pub fn is_empty(&self) -> bool {
        self.len_bytes == 0
    }

    /// Sets the fill length. Bytes up to capacity are always initialised.
    pub fn set_len(&mut self, len_bytes: usize) {
        assert!(len_bytes <= self.capacity_bytes);
        self.len_bytes = len_bytes;
    }

    /// Space left after the filled part.
    pub fn remaining(&self) -> usize {
        self.capacity_bytes - self.len_bytes
    }

    /// Appends `data` after the filled part. Panics if it does not fit.
    pub fn extend_from_slice(&mut self, data: &[u8]) {
        let start = self.len_bytes;
        let end = start + data.len();
        self.full_mut()[start..end].copy_from_slice(data);
        self.len_bytes = end;
    }

    /// The filled part.
    pub fn as_slice(&self) -> &[u8] {
        &self.full()[..self.len_bytes]
    }

    /// The filled part, writable.
    pub fn as_mut_slice(&mut self) -> &mut [u8] {
        let len = self.len_bytes;
        &mut self.full_mut()[..len]
    }

    /// The whole capacity (always initialised).
    pub fn full(&self) -> &[u8] {
        // SAFETY: ptr is a live allocation of capacity_bytes, zero-initialised
        // at creation, uniquely owned by self.
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), self.capacity_bytes) }
    }

    /// The whole capacity, writable.
    pub fn full_mut(&mut self) -> &mut [u8] {
        // SAFETY: as in `full`, and &mut self guarantees exclusive access.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.as_ptr(), self.capacity_bytes) }
    }

    /// Raw pointer for handing to the kernel. The caller (the io backend)
    /// must keep `self` alive and untouched until the operation completes.
    pub fn as_mut_ptr(&mut self) -> *mut u8 {
        self.ptr.as_ptr()
    }

    pub fn fixed_index(&self) -> Option<u16> {
        self.fixed_index
    }

    /// Marks this buffer as registered at `index` in a ring's buffer table.
    pub fn set_fixed_index(&mut self, index: Option<u16>) {
        self.fixed_index = index;
    }
}

impl Drop for AlignedBuf {
    fn drop(&mut self) {
        let layout = Layout::from_size_align(self.capacity_bytes, BLOCK_BYTES).expect("layout");
        // SAFETY: allocated in `new` with exactly this layout, freed once.
        unsafe { dealloc(self.ptr.as_ptr(), layout) }
    }
}

impl std::fmt::Debug for AlignedBuf {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AlignedBuf")
            .field("capacity_bytes", &self.capacity_bytes)
            .field("len_bytes", &self.len_bytes)
            .field("fixed_index", &self.fixed_index)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Proves the buffer is block-aligned, zeroed, and tracks its fill length.
    #[test]
    fn aligned_zeroed_and_fills() {
        let mut b = AlignedBuf::new(2 * BLOCK_BYTES);
        assert_eq!(b.as_mut_ptr() as usize % BLOCK_BYTES, 0);
        assert!(b.full().iter().all(|&x| x == 0));
        b.extend_from_slice(b"abc");
        assert_eq!(b.as_slice(), b"abc");
        assert_eq!(b.remaining(), 2 * BLOCK_BYTES - 3);
        assert_eq!(align_up(1), 4096);
        assert_eq!(align_up(4096), 4096);
        assert_eq!(align_down(4097), 4096);
    }
}
