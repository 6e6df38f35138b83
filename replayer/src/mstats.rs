//! Statistics: models `memstats` / `heapStatsDelta` (mstats.go) and the `gcController` byte
//! counters that `ReadMemStats` and runtime/metrics report.
//!
//! As in Go, small-object allocation counts are added when an mcache gives a span back
//! (`refill`, `releaseAll`): `alloc_count - alloc_count_before_cache`. Reports read them through
//! [`crate::malloc::Heap::memstats`], which adds the counts still held by cached spans without
//! disturbing the caches (`ReadMemStats` gets the same numbers by flushing the mcaches).
//!
//! Invariants: `heap_inuse + heap_free + heap_released == heap_sys` and `heap_alloc <=
//! heap_inuse` ([`MStats::check_invariants`]); frees never exceed allocations per class
//! (`Heap::check_invariants`).
//!
//! Deliberate difference: `heap_alloc_bytes` is kept exactly at every allocation and sweep
//! (Go derives it from the counters at read time; the values agree), so peaks are exact.

use serde::Serialize;

#[derive(Clone, Debug, Default)]
pub struct MStats {
    /// Bytes in in-use spans (`heapInUse`).
    pub(crate) heap_inuse_bytes: u64,
    /// Bytes in free spans not released to the OS (`heapFree`).
    pub(crate) heap_free_bytes: u64,
    /// Bytes released to the OS, including fresh never-used memory (`heapReleased`).
    pub(crate) heap_released_bytes: u64,
    /// Bytes of heap address space mapped (`HeapSys`).
    pub(crate) heap_sys_bytes: u64,
    /// Bytes of allocated objects, live or dead-but-unswept (`HeapAlloc`).
    pub(crate) heap_alloc_bytes: u64,
    /// Pages in in-use spans (`pagesInUse`).
    pub(crate) pages_in_use: u64,
    /// Objects per size class handed out by spans that have left an mcache (`smallAllocCount`).
    pub(crate) small_alloc_count: Vec<u64>,
    /// Objects per size class freed by sweeping (`smallFreeCount`).
    pub(crate) small_free_count: Vec<u64>,
    pub(crate) large_alloc_count: u64,
    /// Bytes (whole pages) of large objects allocated.
    pub(crate) large_alloc_bytes: u64,
    pub(crate) large_free_count: u64,
    pub(crate) large_free_bytes: u64,
    /// Tiny objects packed into an existing block (`tinyAllocCount`), flushed from mcaches.
    pub(crate) tiny_alloc_count: u64,
    pub(crate) peak_heap_inuse_bytes: u64,
    pub(crate) peak_heap_sys_bytes: u64,
}

impl MStats {
    pub(crate) fn new(nclasses: usize) -> MStats {
        MStats {
            small_alloc_count: vec![0; nclasses],
            small_free_count: vec![0; nclasses],
            ..MStats::default()
        }
    }

    /// The page-level identity: in-use + free + released == HeapSys, and allocated bytes fit
    /// in the in-use spans.
    pub fn check_invariants(&self) {
        assert_eq!(
            self.heap_inuse_bytes + self.heap_free_bytes + self.heap_released_bytes,
            self.heap_sys_bytes,
            "heap_inuse + heap_free + heap_released vs heap_sys"
        );
        assert!(
            self.heap_alloc_bytes <= self.heap_inuse_bytes,
            "heap_alloc {} above heap_inuse {}",
            self.heap_alloc_bytes,
            self.heap_inuse_bytes
        );
    }

    /// Records peaks of the page-level numbers (called where they change).
    #[inline]
    pub(crate) fn note_heap_peaks(&mut self) {
        self.peak_heap_inuse_bytes = self.peak_heap_inuse_bytes.max(self.heap_inuse_bytes);
        self.peak_heap_sys_bytes = self.peak_heap_sys_bytes.max(self.heap_sys_bytes);
    }
}

/// One entry of `MemStats.BySize` (here for every class, not only the first 61).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct BySize {
    pub size: u64,
    pub mallocs: u64,
    pub frees: u64,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct LargeStats {
    pub mallocs: u64,
    pub frees: u64,
    /// Bytes of large objects allocated (whole pages), over the run.
    pub bytes: u64,
}

/// What `runtime.ReadMemStats` would report, in snake case (ARCHITECTURE.md).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct GoMemStats {
    pub heap_alloc: u64,
    pub heap_inuse: u64,
    pub heap_idle: u64,
    pub heap_released: u64,
    pub heap_sys: u64,
    pub mallocs: u64,
    pub frees: u64,
    pub heap_objects: u64,
    pub tiny_allocs: u64,
    pub num_gc: u64,
    pub next_gc: u64,
    pub by_size: Vec<BySize>,
    pub large: LargeStats,
}
