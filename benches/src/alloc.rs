//! A counting global allocator: forwards to the system allocator and counts
//! allocations, so a measurement can report allocations per message.
//!
//! A binary opts in with
//! `#[global_allocator] static A: udsipc_benches::alloc::Counting = Counting;`
//! (the criterion benches do); without it [`allocations`] stays at zero.
//! A binary that measures only sometimes (the `udsipc` command: only its
//! `bench`) installs [`CountingWhenStarted`] instead, which counts nothing
//! until [`start_counting`] (called by [`crate::run::run`]): its other
//! commands pay one relaxed load of a flag nobody writes per allocation,
//! not an atomic add on a counter every thread shares.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

static ALLOCATIONS: AtomicU64 = AtomicU64::new(0);

static STARTED: AtomicBool = AtomicBool::new(false);

/// Makes [`CountingWhenStarted`] count from now on (the process is going
/// to measure).
pub fn start_counting() {
    STARTED.store(true, Ordering::Relaxed);
}

fn count_if_started() {
    if STARTED.load(Ordering::Relaxed) {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
    }
}

/// The counting allocator, off until [`start_counting`].
#[derive(Debug, Clone, Copy, Default)]
pub struct CountingWhenStarted;

// SAFETY: every method forwards its arguments unchanged to the system
// allocator, which upholds `GlobalAlloc`'s contract; counting touches no
// memory the allocator hands out.
#[allow(unsafe_code)]
unsafe impl GlobalAlloc for CountingWhenStarted {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        count_if_started();
        // SAFETY: the caller upholds `alloc`'s contract, which we pass on.
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        count_if_started();
        // SAFETY: the caller upholds `alloc_zeroed`'s contract, which we pass on.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: the caller upholds `dealloc`'s contract, which we pass on.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        count_if_started();
        // SAFETY: the caller upholds `realloc`'s contract, which we pass on.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

/// The counting allocator.
#[derive(Debug, Clone, Copy, Default)]
pub struct Counting;

// SAFETY: every method forwards its arguments unchanged to the system
// allocator, which upholds `GlobalAlloc`'s contract; counting touches no
// memory the allocator hands out.
#[allow(unsafe_code)]
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: the caller upholds `alloc`'s contract, which we pass on.
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: the caller upholds `alloc_zeroed`'s contract, which we pass on.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: the caller upholds `dealloc`'s contract, which we pass on.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: the caller upholds `realloc`'s contract, which we pass on.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

/// Allocations (including reallocations) so far in this process.
pub fn allocations() -> u64 {
    ALLOCATIONS.load(Ordering::Relaxed)
}
