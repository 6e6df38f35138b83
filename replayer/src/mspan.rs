//! Spans: models `mspan` (mheap.go) with its allocation state from mbitmap.go and malloc.go
//! (`nextFreeFast`, `nextFreeIndex`, `refillAllocCache`, `countAlloc`).
//!
//! A span is a run of pages holding either `nelems` objects of one size class or one large
//! object. Allocation walks `freeindex` upward: `alloc_cache` holds the complement of
//! `alloc_bits` for the 64 objects from `freeindex & !63`, shifted so bit 0 is `freeindex`;
//! `next_free_fast` is a count-trailing-zeros on it. Objects below `freeindex` are allocated.
//!
//! Invariants (checked by [`MSpan::check_invariants`]):
//! - `alloc_count` == number of allocated objects (`i < freeindex || alloc_bits[i]`);
//! - `alloc_count <= nelems`, `freeindex <= nelems`;
//! - `live_bits ⊆ allocated` and, for tiny-class spans, `live_bits[i] == (tiny_refs[i] > 0)`.
//!
//! Deliberate differences:
//! - `alloc_bits` is also set when an object is handed out (Go leaves it to the next sweep).
//!   Allocation order is unchanged (bits below `freeindex` are never read by `nextFreeIndex`),
//!   and it lets the `immediate` free policy lower `freeindex` safely.
//! - Reachability is not traced: `live_bits` holds the objects the trace has not freed, and a GC
//!   copies it to `mark_bits` (what Go's mark phase would have found).
//! - Tiny blocks (16 bytes holding several tiny objects) keep a count of live sub-objects in
//!   `tiny_refs`, standing in for "some pointer into the block is live".

/// Index of a span in the heap's span table.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SpanId(pub(crate) u32);

impl SpanId {
    pub const NONE: SpanId = SpanId(u32::MAX);
    pub fn index(self) -> usize {
        self.0 as usize
    }
}

/// `mSpanState`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SpanState {
    Dead,
    InUse,
}

/// Where a span sits (Go keeps this implicitly in which set holds it).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SpanHome {
    /// Not on any list (dead, or being handed around).
    None,
    /// In an mcache (`cached_by` says which P).
    Cached,
    /// In its mcentral's partial or full set of the given parity.
    Partial(u8),
    Full(u8),
}

/// Field order is the fast paths': what every allocation and free reads comes first, in two
/// cache lines (`repr(C)` keeps the order, the alignment the line boundaries; a test checks the
/// offsets).
#[derive(Clone, Debug)]
#[repr(C, align(64))]
pub struct MSpan {
    // First line: allocation (`nextFreeFast`) and object addresses.
    /// Complement of `alloc_bits` from `freeindex` (see the module comment).
    pub(crate) alloc_cache: u64,
    /// Model address of the first byte. Set by `init` (mheap.rs `init_span`).
    pub(crate) base_addr: u64,
    /// Bytes per object (the whole span for a large object).
    pub(crate) elem_bytes: u64,
    /// `divMul`: `u32::MAX / elem_bytes + 1`, so `(offset * div_mul) >> 32` is the object index
    /// for any offset inside the span (0 for large spans: their only object is index 0).
    pub(crate) div_mul: u64,
    /// Allocated objects (1 = in use).
    pub(crate) alloc_bits: Vec<u64>,
    /// Next object index to examine for allocation. Moved by allocation here, by
    /// `set_freeindex` (mcentral.rs `cacheSpan`) and `init_large` (mcache.rs).
    pub(crate) freeindex: u32,
    /// Objects that fit (1 for a large object).
    pub(crate) nelems: u32,
    // Second line: the rest of the allocation and free paths.
    /// Objects the trace still holds.
    pub(crate) live_bits: Vec<u64>,
    /// Objects allocated (as of the last sweep plus those handed out since).
    pub(crate) alloc_count: u32,
    /// `spanclass`: size class << 1 | noscan (0/1 for large objects).
    pub(crate) spanclass: u8,
    /// The span's memory may hold garbage and must be zeroed before use.
    pub(crate) needzero: bool,
    /// Set by `init` and `set_dead` (mheap.rs).
    pub(crate) state: SpanState,
    /// Which list holds the span: written by whoever moves it (mcentral.rs `push_span`,
    /// `pop_span`, `unlist_span`, `uncache_span`; mcache.rs `refill`), as Go's span sets do.
    pub(crate) home: SpanHome,
    /// Length in pages.
    pub(crate) npages: u32,
    /// Live sub-objects per 16-byte block, for spans of the tiny span class (empty otherwise).
    pub(crate) tiny_refs: Vec<u8>,
    // Colder: marking, sweeping, mcentral lists, statistics.
    /// What the last GC found live (copied from `live_bits` at mark time).
    pub(crate) mark_bits: Vec<u64>,
    /// `sweepgen` relative to `mheap.sweepgen` (see sweep.rs). Written by the sweeper
    /// (sweep.rs `sweep_span`) and when an mcache takes or gives back the span (mcache.rs
    /// `refill`, mcentral.rs `uncache_span`), as in Go.
    pub(crate) sweepgen: u64,
    /// `allocCountBeforeCache`: `alloc_count` when an mcache took the span, lowered by one for
    /// each `immediate` free while cached, so `alloc_count - this` counts allocations. Written
    /// by mcache.rs (`refill`, `release_all`) and `free_now`.
    pub(crate) alloc_count_before_cache: i64,
    /// Bumped whenever the span leaves a span set, so stale queue entries are skipped
    /// (mcentral.rs, `set_dead`).
    pub(crate) list_token: u32,
}

impl MSpan {
    pub(crate) fn new_dead() -> MSpan {
        MSpan {
            base_addr: 0,
            npages: 0,
            state: SpanState::Dead,
            spanclass: 0,
            elem_bytes: 0,
            div_mul: 0,
            nelems: 0,
            freeindex: 0,
            alloc_count: 0,
            alloc_cache: 0,
            alloc_bits: Vec::new(),
            mark_bits: Vec::new(),
            live_bits: Vec::new(),
            tiny_refs: Vec::new(),
            needzero: false,
            sweepgen: 0,
            alloc_count_before_cache: 0,
            home: SpanHome::None,
            list_token: 0,
        }
    }

    /// `initSpan` (mheap.go): the span holds `npages` pages from `base_addr` for span class
    /// `spc`, in use, on no list, swept as of `sweepgen`; `init_objects` then lays out its
    /// objects. Only `MHeap::init_span` calls it.
    pub(crate) fn init(
        &mut self,
        base_addr: u64,
        npages: u32,
        spc: crate::sizeclass::SpanClass,
        needzero: bool,
        sweepgen: u64,
    ) {
        self.base_addr = base_addr;
        self.npages = npages;
        self.state = SpanState::InUse;
        self.spanclass = spc.0;
        self.needzero = needzero;
        self.sweepgen = sweepgen;
        self.home = SpanHome::None;
    }

    /// `freeSpanLocked`: the span is dead; entries of it still queued in span sets go stale.
    pub(crate) fn set_dead(&mut self) {
        debug_assert_eq!(self.state, SpanState::InUse);
        debug_assert_eq!(self.home, SpanHome::None);
        self.state = SpanState::Dead;
        self.list_token = self.list_token.wrapping_add(1);
    }

    /// `mcache.allocLarge`: a large span's one object is allocated.
    pub(crate) fn init_large(&mut self) {
        debug_assert!(self.is_large() && self.nelems == 1 && self.alloc_count == 0);
        self.freeindex = 1;
        self.alloc_count = 1;
        self.alloc_bits[0] = 1;
    }

    /// `mcentral.cacheSpan` keeps the index `nextFreeIndex` found: object `i` is free and every
    /// object below it is allocated.
    pub(crate) fn set_freeindex(&mut self, i: u32) {
        debug_assert!(i < self.nelems && !self.is_allocated(i));
        self.freeindex = i;
    }

    /// `initSpan`'s allocation-state part: every object free, bitmaps cleared.
    pub(crate) fn init_objects(&mut self, elem_bytes: u64, nelems: u32, tiny_class: bool) {
        let words = (nelems as usize).div_ceil(64);
        self.elem_bytes = elem_bytes;
        self.div_mul = if nelems > 1 {
            u32::MAX as u64 / elem_bytes + 1
        } else {
            0
        };
        self.nelems = nelems;
        self.freeindex = 0;
        self.alloc_count = 0;
        self.alloc_cache = !0;
        for v in [
            &mut self.alloc_bits,
            &mut self.mark_bits,
            &mut self.live_bits,
        ] {
            v.clear();
            v.resize(words, 0);
        }
        self.tiny_refs.clear();
        if tiny_class {
            self.tiny_refs.resize(nelems as usize, 0);
        }
        self.alloc_count_before_cache = 0;
    }

    /// Bytes per object (the whole span for a large object).
    pub fn elem_bytes(&self) -> u64 {
        self.elem_bytes
    }

    /// Model address of the first byte.
    pub fn base_addr(&self) -> u64 {
        self.base_addr
    }

    /// `sweepgen` relative to `mheap.sweepgen` (see sweep.rs).
    pub fn sweepgen(&self) -> u64 {
        self.sweepgen
    }

    /// Which list holds the span.
    pub fn home(&self) -> SpanHome {
        self.home
    }

    pub fn is_large(&self) -> bool {
        self.spanclass >> 1 == 0
    }

    pub fn noscan(&self) -> bool {
        self.spanclass & 1 == 1
    }

    /// `nextFreeFast`: the index of the next free object from the alloc cache (now taken), or
    /// `None` when the cache word is exhausted (the caller falls back to the slow path).
    #[inline]
    pub(crate) fn next_free_fast(&mut self) -> Option<u32> {
        let tz = self.alloc_cache.trailing_zeros();
        if tz < 64 {
            let result = self.freeindex + tz;
            if result < self.nelems {
                let fi = result + 1;
                if fi & 63 == 0 && fi != self.nelems {
                    return None;
                }
                self.alloc_cache = self.alloc_cache.checked_shr(tz + 1).unwrap_or(0);
                self.freeindex = fi;
                self.take(result);
                return Some(result);
            }
        }
        None
    }

    /// Model address of object `i`.
    #[inline]
    pub fn object_addr(&self, i: u32) -> u64 {
        self.base_addr + i as u64 * self.elem_bytes
    }

    /// Marks object `i` allocated (counts and the bitmap; see the module comment).
    #[inline]
    fn take(&mut self, i: u32) {
        self.alloc_bits[(i / 64) as usize] |= 1 << (i % 64);
        self.alloc_count += 1;
    }

    /// `refillAllocCache`: loads the complement of 64 alloc bits starting at object `64*word`.
    pub(crate) fn refill_alloc_cache(&mut self, word: u32) {
        self.alloc_cache = !self.alloc_bits.get(word as usize).copied().unwrap_or(!0);
    }

    /// `nextFreeIndex`: the index of the next free object at or after `freeindex`, refilling
    /// the cache as needed; `nelems` when the span is full.
    pub(crate) fn next_free_index(&mut self) -> u32 {
        let mut sfreeindex = self.freeindex;
        let snelems = self.nelems;
        if sfreeindex == snelems {
            return sfreeindex;
        }
        let mut a_cache = self.alloc_cache;
        let mut bit_index = a_cache.trailing_zeros();
        while bit_index == 64 {
            // Move to the next 64-object word.
            sfreeindex = (sfreeindex + 64) & !63;
            if sfreeindex >= snelems {
                self.freeindex = snelems;
                return snelems;
            }
            self.refill_alloc_cache(sfreeindex / 64);
            a_cache = self.alloc_cache;
            bit_index = a_cache.trailing_zeros();
        }
        let result = sfreeindex + bit_index;
        if result >= snelems {
            self.freeindex = snelems;
            return snelems;
        }
        // Go's shift by 64 gives 0; Rust's would overflow.
        self.alloc_cache = self.alloc_cache.checked_shr(bit_index + 1).unwrap_or(0);
        sfreeindex = result + 1;
        if sfreeindex & 63 == 0 && sfreeindex != snelems {
            self.refill_alloc_cache(sfreeindex / 64);
        }
        self.freeindex = sfreeindex;
        result
    }

    /// `mcache.nextFree`'s use of a span: takes the object `next_free_index` found.
    pub(crate) fn take_at(&mut self, i: u32) -> u64 {
        self.take(i);
        self.base_addr + i as u64 * self.elem_bytes
    }

    /// Positions `freeindex` and the alloc cache as `mcentral.cacheSpan` does before handing a
    /// span to an mcache.
    pub(crate) fn prime_alloc_cache(&mut self) {
        let fi = self.freeindex;
        self.refill_alloc_cache(fi / 64);
        self.alloc_cache >>= fi % 64;
    }

    /// Object index of an address inside the span.
    #[inline]
    pub fn object_index(&self, addr: u64) -> u32 {
        let i = (((addr - self.base_addr) * self.div_mul) >> 32) as u32;
        debug_assert_eq!(i as u64, (addr - self.base_addr) / self.elem_bytes);
        i
    }

    #[inline]
    pub fn is_allocated(&self, i: u32) -> bool {
        self.alloc_bits[(i / 64) as usize] >> (i % 64) & 1 == 1
    }

    #[inline]
    pub(crate) fn set_live(&mut self, i: u32, live: bool) {
        let w = &mut self.live_bits[(i / 64) as usize];
        if live {
            *w |= 1 << (i % 64);
        } else {
            *w &= !(1 << (i % 64));
        }
    }

    #[inline]
    pub fn is_live(&self, i: u32) -> bool {
        self.live_bits[(i / 64) as usize] >> (i % 64) & 1 == 1
    }

    /// The mark phase for this span: what is live now is what the GC would find.
    pub(crate) fn mark(&mut self) {
        self.mark_bits.copy_from_slice(&self.live_bits);
    }

    /// Allocate-black: an object allocated during a mark phase survives it.
    #[inline]
    pub(crate) fn set_marked(&mut self, i: u32) {
        self.mark_bits[(i / 64) as usize] |= 1 << (i % 64);
    }

    /// `countAlloc` on the mark bits.
    pub fn count_marked(&self) -> u32 {
        self.mark_bits.iter().map(|w| w.count_ones()).sum()
    }

    /// The bitmap part of `sweep`: marked objects become the allocated ones, `freeindex` goes
    /// back to 0. Returns the number of objects freed.
    pub(crate) fn sweep_bits(&mut self) -> u32 {
        let nalloc = self.count_marked();
        assert!(
            nalloc <= self.alloc_count,
            "sweep increased allocation count"
        );
        let nfreed = self.alloc_count - nalloc;
        self.alloc_count = nalloc;
        self.freeindex = 0;
        self.alloc_bits.copy_from_slice(&self.mark_bits);
        self.mark_bits.iter_mut().for_each(|w| *w = 0);
        self.refill_alloc_cache(0);
        if nfreed > 0 {
            self.needzero = true;
        }
        nfreed
    }

    /// The `immediate` policy's free: object `i` is free now; `freeindex` drops to it so the
    /// next allocation from this span can reuse it.
    pub(crate) fn free_now(&mut self, i: u32) {
        debug_assert!(self.is_allocated(i));
        self.alloc_bits[(i / 64) as usize] &= !(1 << (i % 64));
        self.alloc_count -= 1;
        if self.home == SpanHome::Cached {
            self.alloc_count_before_cache -= 1;
        }
        self.needzero = true;
        if i < self.freeindex {
            self.freeindex = i;
        }
        // The alloc cache may hold this object's old bit.
        self.prime_alloc_cache();
    }

    /// Walks the span's allocation state and panics on a broken invariant.
    pub fn check_invariants(&self) {
        if self.state == SpanState::Dead {
            return;
        }
        assert!(self.freeindex <= self.nelems);
        assert!(self.alloc_count <= self.nelems);
        let mut allocated = 0;
        for i in 0..self.nelems {
            let a = self.is_allocated(i);
            allocated += a as u32;
            if self.is_live(i) {
                assert!(
                    a,
                    "span {:#x}: live object {i} not allocated",
                    self.base_addr
                );
            }
            if !self.tiny_refs.is_empty() {
                assert_eq!(self.is_live(i), self.tiny_refs[i as usize] > 0);
            }
        }
        assert_eq!(
            allocated, self.alloc_count,
            "span {:#x}: alloc_count",
            self.base_addr
        );
        for i in self.nelems..(self.alloc_bits.len() as u32 * 64) {
            assert!(
                !self.is_allocated(i) && !self.is_live(i),
                "span {:#x}: object {i} past nelems in use",
                self.base_addr
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn span(nelems: u32) -> MSpan {
        let mut s = MSpan::new_dead();
        s.state = SpanState::InUse;
        s.base_addr = 0x1000_0000;
        s.npages = 1;
        s.init_objects(16, nelems, false);
        s
    }

    #[test]
    fn fast_path_fields_share_two_cache_lines() {
        let s = MSpan::new_dead();
        let base = &s as *const MSpan as usize;
        // (field, offset, size) -> the line the whole field lies in.
        let line = |name: &str, p: usize, size: usize| {
            let o = p - base;
            assert_eq!(o / 64, (o + size - 1) / 64, "{name} straddles a line");
            o / 64
        };
        assert_eq!(
            line("alloc_cache", &s.alloc_cache as *const _ as usize, 8),
            0
        );
        assert_eq!(line("base_addr", &s.base_addr as *const _ as usize, 8), 0);
        assert_eq!(line("elem_bytes", &s.elem_bytes as *const _ as usize, 8), 0);
        assert_eq!(line("div_mul", &s.div_mul as *const _ as usize, 8), 0);
        assert_eq!(
            line("alloc_bits", &s.alloc_bits as *const _ as usize, 24),
            0
        );
        assert_eq!(line("freeindex", &s.freeindex as *const _ as usize, 4), 0);
        assert_eq!(line("nelems", &s.nelems as *const _ as usize, 4), 0);
        assert_eq!(line("live_bits", &s.live_bits as *const _ as usize, 24), 1);
        assert_eq!(
            line("alloc_count", &s.alloc_count as *const _ as usize, 4),
            1
        );
        assert_eq!(line("spanclass", &s.spanclass as *const _ as usize, 1), 1);
        assert_eq!(line("needzero", &s.needzero as *const _ as usize, 1), 1);
        assert_eq!(line("tiny_refs", &s.tiny_refs as *const _ as usize, 24), 1);
        assert_eq!(std::mem::align_of::<MSpan>(), 64);
    }

    #[test]
    fn fast_path_walks_in_address_order_and_stops_at_word_end() {
        let mut s = span(100);
        for i in 0..63 {
            assert_eq!(
                s.next_free_fast().map(|i| s.object_addr(i)),
                Some(0x1000_0000 + i * 16)
            );
        }
        // Object 63 would move freeindex to 64: the fast path declines, the slow path refills.
        assert_eq!(s.next_free_fast(), None);
        let i = s.next_free_index();
        assert_eq!(i, 63);
        s.take_at(i);
        assert_eq!(s.next_free_fast(), Some(64));
        s.check_invariants();
    }

    #[test]
    fn sweep_keeps_marked_and_reuses_the_rest_lowest_first() {
        let mut s = span(8);
        for _ in 0..8 {
            let i = s.next_free_index();
            s.take_at(i);
            s.set_live(i, true);
        }
        assert_eq!(s.next_free_index(), 8);
        s.set_live(2, false);
        s.set_live(5, false);
        s.mark();
        assert_eq!(s.sweep_bits(), 2);
        assert!(s.needzero);
        assert_eq!(s.alloc_count, 6);
        assert_eq!(s.next_free_index(), 2);
        s.take_at(2);
        assert_eq!(s.next_free_index(), 5);
        s.take_at(5);
        assert_eq!(s.next_free_index(), 8);
        s.check_invariants();
    }

    #[test]
    fn immediate_free_lowers_freeindex() {
        let mut s = span(8);
        for _ in 0..4 {
            let i = s.next_free_index();
            s.take_at(i);
        }
        s.free_now(1);
        assert_eq!(s.next_free_fast(), Some(1));
        assert_eq!(s.next_free_fast(), Some(4));
        s.check_invariants();
    }
}
