//! A counting global allocator for the stable fuzz tests, which include this
//! file by path and install it with `#[global_allocator]`. It lets a test
//! bound the memory a check takes against the size of its input: a decoder
//! that sized an allocation from a declared length (2^31, say) instead of
//! from the bytes present would show up at once. libFuzzer runs use
//! `-malloc_limit_mb` for the same purpose.
//!
//! Counts are per thread, so tests running in parallel do not mix; a block
//! freed on another thread than it was allocated on skews both threads'
//! counts, which these single-threaded checks never do.
#![allow(unsafe_code)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

/// The system allocator, counting this thread's live bytes and their peak.
pub struct Counting;

thread_local! {
    // `const` thread-locals of `Cell` need no lazy initialisation and no
    // destructor, so touching them never allocates (no recursion here).
    static LIVE_BYTES: Cell<isize> = const { Cell::new(0) };
    static PEAK_BYTES: Cell<isize> = const { Cell::new(0) };
}

fn count(delta_bytes: isize) {
    // `try_with`: during thread teardown the cells may be gone; skip counting then.
    let _ = LIVE_BYTES.try_with(|live| {
        let now = live.get() + delta_bytes;
        live.set(now);
        let _ = PEAK_BYTES.try_with(|peak| peak.set(peak.get().max(now)));
    });
}

// SAFETY: every method forwards its arguments unchanged to `System`, which
// upholds the `GlobalAlloc` contract; the only addition is arithmetic on
// thread-local counters, which neither allocates nor unwinds.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: forwarded unchanged; the caller upholds alloc's contract.
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            count(layout.size() as isize);
        }
        p
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: forwarded unchanged; the caller upholds alloc_zeroed's contract.
        let p = unsafe { System.alloc_zeroed(layout) };
        if !p.is_null() {
            count(layout.size() as isize);
        }
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: forwarded unchanged; `ptr` came from this allocator, i.e. from `System`.
        unsafe { System.dealloc(ptr, layout) };
        count(-(layout.size() as isize));
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: forwarded unchanged; `ptr` came from `System` with `layout`.
        let p = unsafe { System.realloc(ptr, layout, new_size) };
        if !p.is_null() {
            count(new_size as isize - layout.size() as isize);
        }
        p
    }
}

/// Runs `f` and returns its result with the most bytes this thread held at
/// once while it ran, beyond what it held before.
pub fn peak_bytes_during<R>(f: impl FnOnce() -> R) -> (R, usize) {
    let base = LIVE_BYTES.with(Cell::get);
    PEAK_BYTES.with(|p| p.set(base));
    let result = f();
    let peak = PEAK_BYTES.with(Cell::get);
    (result, usize::try_from(peak - base).unwrap_or(0))
}

/// The most a check may hold at once for an input of `input_bytes`: a small
/// multiple of the input (decoded values are a few times larger than their
/// encoding, and checks copy inputs to reseal them) plus a fixed amount for
/// the simulated disk and recovery's read buffer.
pub fn alloc_bound_bytes(input_bytes: usize) -> usize {
    ALLOC_BYTES_PER_INPUT_BYTE * input_bytes + ALLOC_BYTES_FIXED
}

pub const ALLOC_BYTES_PER_INPUT_BYTE: usize = 32;
pub const ALLOC_BYTES_FIXED: usize = 256 << 10;
