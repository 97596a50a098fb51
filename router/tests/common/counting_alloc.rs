//! A global allocator that counts allocations while armed, shared by the zero-allocation tests
//! (each test binary that includes this module installs it as its global allocator).
//!
//! Arming is per thread: a worker runs its pipeline on one thread, and the test harness's own
//! threads (which may allocate at any moment, more so on a loaded machine) must not count.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

/// Counts allocations made by a thread while it is armed with [`arm`].
pub struct CountingAlloc;

/// Allocations (and reallocations) made by armed threads.
pub static ALLOCS: AtomicU64 = AtomicU64::new(0);

thread_local! {
    // Const-initialised and without a destructor: reading it never allocates.
    static ARMED: Cell<bool> = const { Cell::new(false) };
}

/// Arms (`true`) or disarms counting for the calling thread.
pub fn arm(on: bool) {
    ARMED.with(|a| a.set(on));
}

fn count() {
    // `try_with` fails only during thread teardown, when nothing is armed anyway.
    if ARMED.try_with(Cell::get).unwrap_or(false) {
        ALLOCS.fetch_add(1, Ordering::Relaxed);
    }
}

// SAFETY: forwards every call to the system allocator unchanged; only counts.
unsafe impl GlobalAlloc for CountingAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        count();
        // SAFETY: same contract as our caller's.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: same contract as our caller's.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        count();
        // SAFETY: same contract as our caller's.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: CountingAlloc = CountingAlloc;

/// Proves the counter is live (so a zero count means something): one armed allocation counts,
/// and an allocation on another thread does not.
pub fn assert_counter_works() {
    let before = ALLOCS.load(Ordering::Relaxed);
    arm(true);
    let b = std::hint::black_box(Box::new([0u8; 64]));
    arm(false);
    drop(b);
    assert!(
        ALLOCS.load(Ordering::Relaxed) > before,
        "the counting allocator is not installed"
    );
    // Another thread allocates while this one is armed (and does nothing but wait).
    let (go, done) = (AtomicBool::new(false), AtomicBool::new(false));
    let before = ALLOCS.load(Ordering::Relaxed);
    std::thread::scope(|s| {
        s.spawn(|| {
            while !go.load(Ordering::Acquire) {
                std::hint::spin_loop();
            }
            drop(std::hint::black_box(Box::new([0u8; 64])));
            done.store(true, Ordering::Release);
        });
        arm(true);
        go.store(true, Ordering::Release);
        while !done.load(Ordering::Acquire) {
            std::hint::spin_loop();
        }
        arm(false);
    });
    assert_eq!(
        ALLOCS.load(Ordering::Relaxed),
        before,
        "allocations on another thread were counted"
    );
}
