//! Per-P caches: models `mcache` (mcache.go): one cached span per span class, the tiny
//! allocator's current block, `nextFree`, `refill`, `allocLarge` and `releaseAll`.
//!
//! The tiny allocator (malloc.go `mallocgcTiny`) packs pointer-free objects smaller than the
//! tiny block (16 bytes) into one block taken from the tiny span class (size class 2, noscan).
//! The offset is aligned by size (`sizeclass::tiny_align`). An object that fits (`off + size <= 16` and a block exists) goes in it and
//! counts as a tiny allocation; otherwise a new zeroed block is taken, and it becomes the current
//! block when `size < tinyoffset` or there is none (it keeps more free space).
//!
//! Invariants: `alloc[spc]` is either the empty span (id 0, no free objects) or an in-use span
//! of class `spc` whose home is `Cached`; `tiny_offset <= tiny block size`.
//!
//! Deliberate differences: statistics that Go keeps per mcache for profiling (`nextSample`,
//! `scanAlloc`) are not modelled.

use crate::error::ReplayError;
use crate::mheap::MHeap;
use crate::mspan::{SpanHome, SpanId};
use crate::sizeclass::{SizeClass, SpanClass};

/// Id of the empty span every fresh mcache slot points at (`emptymspan`).
pub const EMPTY_SPAN: SpanId = SpanId(0);

/// Span classes an mcache has room for: size classes are at most 127 (sizeclass.rs), so span
/// classes are below 256.
pub const MAX_SPAN_CLASSES: usize = 256;

#[derive(Clone, Debug)]
pub struct MCache {
    /// Cached span per span class (inline: the allocation fast path indexes it directly).
    /// Classes the table does not have stay `EMPTY_SPAN`.
    pub(crate) alloc: [SpanId; MAX_SPAN_CLASSES],
    /// Address of the current tiny block (0 = none).
    pub(crate) tiny_addr: u64,
    /// Span and object index of the current tiny block (saves a span lookup per tiny object).
    pub(crate) tiny_span: SpanId,
    pub(crate) tiny_index: u32,
    /// Bytes of the tiny block already used.
    pub(crate) tiny_offset: u64,
    /// Tiny objects packed into existing blocks since the last flush (`tinyAllocs`).
    pub(crate) tiny_allocs: u64,
}

impl MCache {
    pub(crate) fn new(num_span_classes: usize) -> MCache {
        assert!(num_span_classes <= MAX_SPAN_CLASSES);
        MCache {
            alloc: [EMPTY_SPAN; MAX_SPAN_CLASSES],
            tiny_addr: 0,
            tiny_span: EMPTY_SPAN,
            tiny_index: 0,
            tiny_offset: 0,
            tiny_allocs: 0,
        }
    }
}

impl MHeap {
    /// `mcache.nextFree`: the slow path when the cached span's alloc cache is exhausted.
    /// Returns the span, the object's index in it, and whether a span was refilled (Go's
    /// `checkGCTrigger`).
    #[cold]
    #[inline(never)]
    pub(crate) fn next_free(
        &mut self,
        mc: &mut MCache,
        spc: SpanClass,
        p: usize,
    ) -> Result<(SpanId, u32, bool), ReplayError> {
        let mut id = mc.alloc[spc.index()];
        let mut refilled = false;
        let mut fi = self.spans[id.index()].next_free_index();
        if fi == self.spans[id.index()].nelems {
            debug_assert_eq!(
                self.spans[id.index()].alloc_count,
                self.spans[id.index()].nelems
            );
            self.refill(mc, spc, p)?;
            refilled = true;
            id = mc.alloc[spc.index()];
            fi = self.spans[id.index()].next_free_index();
        }
        let s = &mut self.spans[id.index()];
        assert!(fi < s.nelems, "freeIndex is not valid");
        s.take_at(fi);
        Ok((id, fi, refilled))
    }

    /// `mcache.refill`: give back the full span, cache one with free objects.
    pub(crate) fn refill(
        &mut self,
        mc: &mut MCache,
        spc: SpanClass,
        p: usize,
    ) -> Result<(), ReplayError> {
        self.refill_count += 1;
        let old = mc.alloc[spc.index()];
        if old != EMPTY_SPAN {
            let s = &mut self.spans[old.index()];
            debug_assert_eq!(
                s.alloc_count, s.nelems,
                "refill of span with free space remaining"
            );
            debug_assert_eq!(s.sweepgen, self.sweepgen + 3, "bad sweepgen in refill");
            let used = (s.alloc_count as i64 - s.alloc_count_before_cache) as u64;
            s.alloc_count_before_cache = 0;
            self.stats.small_alloc_count[spc.size_class().0 as usize] += used;
            if Some(spc) == self.tiny_spc {
                self.stats.tiny_alloc_count += mc.tiny_allocs;
                mc.tiny_allocs = 0;
            }
            self.uncache_span(old);
            // Until a span is found the mcache holds none (a failed refill leaves it so).
            mc.alloc[spc.index()] = EMPTY_SPAN;
        }
        let id = self.cache_span(spc, p)?;
        let sg = self.sweepgen;
        let page_bytes = self.page_bytes;
        let s = &mut self.spans[id.index()];
        s.sweepgen = sg + 3;
        s.home = SpanHome::Cached;
        s.alloc_count_before_cache = s.alloc_count as i64;
        let used_bytes = s.alloc_count as u64 * s.elem_bytes;
        self.sweep.heap_live_bytes += s.npages as u64 * page_bytes - used_bytes;
        mc.alloc[spc.index()] = id;
        Ok(())
    }

    /// `mcache.allocLarge`: a span of whole pages for one object.
    #[cold]
    #[inline(never)]
    pub(crate) fn alloc_large(
        &mut self,
        size_bytes: u64,
        noscan: bool,
        p: usize,
    ) -> Result<SpanId, ReplayError> {
        let npages = size_bytes.div_ceil(self.page_bytes);
        self.deduct_sweep_credit(npages * self.page_bytes, npages);
        let spc = SpanClass::new(SizeClass(0), noscan);
        let id = self.alloc(npages, spc, p)?;
        let bytes = npages * self.page_bytes;
        self.stats.large_alloc_count += 1;
        self.stats.large_alloc_bytes += bytes;
        self.stats.heap_alloc_bytes += bytes;
        self.sweep.heap_live_bytes += bytes;
        let sg = self.sweepgen;
        self.spans[id.index()].init_large();
        self.push_span(id, SpanHome::Full(crate::mcentral::swept_index(sg)));
        Ok(id)
    }

    /// `mcache.releaseAll`: every cached span goes back to its mcentral; the tiny block is
    /// dropped.
    pub(crate) fn release_all(&mut self, mc: &mut MCache) {
        let sg = self.sweepgen;
        for i in 0..mc.alloc.len() {
            let id = mc.alloc[i];
            if id == EMPTY_SPAN {
                continue;
            }
            let s = &mut self.spans[id.index()];
            let used = (s.alloc_count as i64 - s.alloc_count_before_cache) as u64;
            s.alloc_count_before_cache = 0;
            self.stats.small_alloc_count[i >> 1] += used;
            if s.sweepgen != sg + 1 {
                // refill counted the free slots as live; undo that.
                let unused = (s.nelems - s.alloc_count) as u64 * s.elem_bytes;
                self.sweep.heap_live_bytes -= unused;
            }
            self.uncache_span(id);
            mc.alloc[i] = EMPTY_SPAN;
        }
        mc.tiny_addr = 0;
        mc.tiny_offset = 0;
        self.stats.tiny_alloc_count += mc.tiny_allocs;
        mc.tiny_allocs = 0;
    }
}
