//! Owns the counting global allocator of the benches that report memory (`benches/store.rs`'s
//! key index figures, `actors/benches/watch/`'s memory section, which include this file by
//! path): live bytes and allocation calls, in per-thread shards so that counting adds no
//! contention to what the benches time.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicIsize, AtomicUsize, Ordering};

/// `System`, counting live bytes as requested by callers (malloc's own per-chunk overhead is not
/// included) and allocation calls.
///
/// The counters are sharded by thread: one shared counter was a cache line that every
/// allocation on every core wrote to, and that contention alone lengthened the catch-up's
/// delivery bursts enough to show in the writer's put latency (the watch bench's `catchup`
/// section, with counting on and off). A thread keeps to its own shard; the
/// totals are sums over the shards, exact (once the process is quiet, as `settled_live_bytes`
/// waits for) whichever thread frees what another allocated.
struct Counting;

/// Shards of the counters; threads beyond this many share shards (still exact, just contended).
const SHARDS: usize = 64;

/// One shard's counters, on a cache line of their own.
#[repr(align(128))]
struct Shard {
    live_bytes: AtomicIsize,
    allocs: AtomicUsize,
}

static SHARD_TABLE: [Shard; SHARDS] =
    [const { Shard { live_bytes: AtomicIsize::new(0), allocs: AtomicUsize::new(0) } }; SHARDS];
static NEXT_SHARD: AtomicUsize = AtomicUsize::new(0);

thread_local! {
    // `const` with no destructor: usable from inside the allocator without allocating.
    static MY_SHARD: std::cell::Cell<usize> = const { std::cell::Cell::new(usize::MAX) };
}

/// The calling thread's shard (assigned round-robin at its first allocation).
fn shard() -> &'static Shard {
    let i = MY_SHARD
        .try_with(|s| {
            if s.get() == usize::MAX {
                s.set(NEXT_SHARD.fetch_add(1, Ordering::Relaxed) % SHARDS);
            }
            s.get()
        })
        // Unreachable with native thread-locals (Linux, a `const` slot without destructor);
        // should it fail, any shard keeps the sums exact.
        .unwrap_or(0);
    &SHARD_TABLE[i]
}

fn count_alloc(bytes: isize) {
    let s = shard();
    s.live_bytes.fetch_add(bytes, Ordering::Relaxed);
    s.allocs.fetch_add(1, Ordering::Relaxed);
}

/// `n` as a signed byte count.
pub fn isize_of(n: usize) -> isize {
    isize::try_from(n).unwrap_or(isize::MAX)
}

// SAFETY: every call is forwarded unchanged to `System`; the counters only observe.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: forwarded with the caller's guarantees.
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            count_alloc(isize_of(layout.size()));
        }
        p
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: forwarded with the caller's guarantees.
        let p = unsafe { System.alloc_zeroed(layout) };
        if !p.is_null() {
            count_alloc(isize_of(layout.size()));
        }
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: forwarded with the caller's guarantees.
        unsafe { System.dealloc(ptr, layout) };
        shard().live_bytes.fetch_sub(isize_of(layout.size()), Ordering::Relaxed);
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: forwarded with the caller's guarantees.
        let p = unsafe { System.realloc(ptr, layout, new_size) };
        if !p.is_null() {
            count_alloc(isize_of(new_size) - isize_of(layout.size()));
        }
        p
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// Bytes live now, over all threads.
pub fn live_bytes() -> isize {
    SHARD_TABLE.iter().map(|s| s.live_bytes.load(Ordering::SeqCst)).sum()
}

/// Allocation calls so far, over all threads.
pub fn alloc_calls() -> usize {
    SHARD_TABLE.iter().map(|s| s.allocs.load(Ordering::SeqCst)).sum()
}
