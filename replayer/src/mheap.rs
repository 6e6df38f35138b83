//! The page heap: models `mheap` (mheap.go): span allocation (`allocSpan` with the per-P page
//! cache, `pageAlloc` first fit, `grow`), `freeSpan`, the page-to-span map (`spans`), the per-arena
//! `zeroedBase` that decides whether new spans need zeroing, and the global allocator state
//! (`central`, `sweepgen`, statistics) that Go keeps in `mheap_` and `memstats`.
//!
//! Invariants (checked by [`MHeap::check_invariants`]):
//! - `heap_inuse + heap_free + heap_released == heap_sys`, and they match the page bitmaps
//!   (page-cache pages count as free or released, as in Go);
//! - every in-use span's pages map to it in `page_span`, and are in use in the page allocator;
//! - `pages_in_use` is the sum of in-use span lengths.
//!
//! Deliberate differences: the heap grows contiguously from the arena hint (Go 1.27's randomized
//! heap base and its random padding pages are not modelled, so addresses are reproducible);
//! there are no manual (stack) spans, so stacks and globals enter only the pacer, as bytes.
//! Except in a `--span-log` replay of a trace imported from Go (spanlog.rs): `seed_span` then
//! puts the runtime's spans, its stacks' and its padding pages' included, where they were when
//! tracing began (the latter two as spans of no object on no list, counted in HeapInuse).

use crate::arena::{Arena, ARENA_BYTES, MAX_HEAP_BYTES};
use crate::error::ReplayError;
use crate::mcentral::MCentral;
use crate::mspan::{MSpan, SpanId, SpanState};
use crate::mstats::MStats;
use crate::pagealloc::{PageAlloc, CHUNK_PAGES};
use crate::pagecache::{PageCache, PAGE_CACHE_PAGES};
use crate::scavenge::Scavenger;
use crate::sizeclass::{SizeClasses, SpanClass};
use crate::spanlog::{SpanLog, SpanOp};
use crate::sweep::SweepState;

/// The global heap state.
pub struct MHeap {
    pub(crate) classes: SizeClasses,
    /// Bytes per page.
    pub(crate) page_bytes: u64,
    /// log2(page_bytes) (`_PageShift`).
    page_shift: u32,
    /// Model Green Tea GC's span layout (Go 1.26+ default).
    pub(crate) green_tea: bool,
    /// Model address of page 0.
    pub(crate) base_addr: u64,
    pub(crate) arena: Arena,
    /// Span table; dead entries are reused through `free_ids`.
    pub(crate) spans: Vec<MSpan>,
    free_ids: Vec<SpanId>,
    /// Span owning each page (`h.spans`), `SpanId::NONE` when free.
    page_span: Vec<SpanId>,
    pub(crate) pages: PageAlloc,
    /// Per-P page caches.
    pub(crate) pcache: Vec<PageCache>,
    /// Per arena: bytes from the arena start that have ever been handed out (`zeroedBase`).
    zeroed_base_bytes: Vec<u64>,
    /// One mcentral per span class.
    pub(crate) central: Vec<MCentral>,
    /// `mheap_.sweepgen`: +2 per GC cycle.
    pub(crate) sweepgen: u64,
    pub(crate) sweep: SweepState,
    pub(crate) stats: MStats,
    /// The tiny allocator's span class, when it is on.
    pub(crate) tiny_spc: Option<SpanClass>,
    pub(crate) scav: Scavenger,
    /// `mcache.refill` calls so far (span fast path exhausted). Bumped on the slow path only;
    /// the measured replay reads it before and after a call to name the path taken.
    pub(crate) refill_count: u64,
    /// Spans allocated from the page heap so far (`allocSpan`); as `refill_count`.
    pub(crate) span_alloc_count: u64,
    /// Every span allocated and freed, when `replay --span-log` asked for it (spanlog.rs);
    /// `None` otherwise: one branch per span, nothing per object.
    pub(crate) span_log: Option<Box<SpanLog>>,
}

impl MHeap {
    pub fn new(
        classes: SizeClasses,
        green_tea: bool,
        procs: usize,
        base_addr: u64,
        touch_memory: bool,
    ) -> MHeap {
        let page_bytes = classes.page_bytes() as u64;
        let nspc = classes.num_span_classes();
        let nclasses = classes.num_classes();
        MHeap {
            classes,
            page_bytes,
            page_shift: page_bytes.trailing_zeros(),
            green_tea,
            base_addr,
            arena: Arena::new(base_addr, touch_memory),
            // Span 0 is `emptymspan`: no objects, never in use.
            spans: vec![MSpan::new_dead()],
            free_ids: Vec::new(),
            page_span: Vec::new(),
            pages: PageAlloc::default(),
            pcache: vec![PageCache::default(); procs.max(1)],
            zeroed_base_bytes: Vec::new(),
            central: (0..nspc).map(|_| MCentral::default()).collect(),
            sweepgen: 4,
            sweep: SweepState::default(),
            stats: MStats::new(nclasses),
            refill_count: 0,
            span_alloc_count: 0,
            tiny_spc: None,
            scav: Scavenger::default(),
            span_log: None,
        }
    }

    #[inline]
    pub fn page_addr(&self, page: u64) -> u64 {
        self.base_addr + page * self.page_bytes
    }

    #[inline]
    pub fn addr_page(&self, addr: u64) -> u64 {
        (addr - self.base_addr) >> self.page_shift
    }

    /// `spanOf`: the span holding `addr`, if any.
    #[inline]
    pub fn span_of(&self, addr: u64) -> Option<SpanId> {
        if addr < self.base_addr {
            return None;
        }
        let id = *self.page_span.get(self.addr_page(addr) as usize)?;
        (id != SpanId::NONE).then_some(id)
    }

    #[inline]
    pub fn span(&self, id: SpanId) -> &MSpan {
        &self.spans[id.index()]
    }

    /// The real memory behind the heap (tests read what the model wrote).
    pub fn arena(&self) -> &Arena {
        &self.arena
    }

    /// `mheap_.sweepgen`: +2 per GC cycle.
    pub fn sweepgen(&self) -> u64 {
        self.sweepgen
    }

    /// The size-class table.
    pub fn classes(&self) -> &SizeClasses {
        &self.classes
    }

    /// `mheap.alloc`: reclaims first when sweeping is unfinished, then `allocSpan`.
    pub(crate) fn alloc(
        &mut self,
        npages: u64,
        spc: SpanClass,
        p: usize,
    ) -> Result<SpanId, ReplayError> {
        if !self.sweep_done() {
            self.reclaim(npages);
        }
        self.alloc_span(npages, spc, p)
    }

    /// `mheap.allocSpan`: finds pages (page cache for small requests, else first fit, growing
    /// the heap when needed) and initialises a span on them.
    #[inline(never)]
    pub(crate) fn alloc_span(
        &mut self,
        npages: u64,
        spc: SpanClass,
        p: usize,
    ) -> Result<SpanId, ReplayError> {
        self.span_alloc_count += 1;
        let mut found = None;
        if npages < PAGE_CACHE_PAGES / 4 {
            if self.pcache[p].is_empty() {
                if let Some(block) = self.pages.alloc_to_cache() {
                    self.pcache[p].block = block;
                }
            }
            found = self.pcache[p].alloc(npages);
        }
        let (page, scav_pages) = match found {
            Some(x) => x,
            None => match self.pages.alloc(npages) {
                Some(x) => x,
                None => {
                    let growth = self.grow(npages)?;
                    let x = self
                        .pages
                        .alloc(npages)
                        .expect("grew heap, but no adequate free space found");
                    self.scavenge_after_growth(growth);
                    x
                }
            },
        };
        let nbytes = npages * self.page_bytes;
        let scav_bytes = scav_pages * self.page_bytes;
        let base_addr = self.page_addr(page);
        if scav_bytes != 0 {
            self.stats.heap_released_bytes -= scav_bytes;
        }
        self.stats.heap_free_bytes -= nbytes - scav_bytes;
        self.stats.heap_inuse_bytes += nbytes;
        self.stats.pages_in_use += npages;
        let need_zero = self.alloc_needs_zero(base_addr, npages);
        let id = self.init_span(base_addr, npages, spc, need_zero && scav_pages != npages);
        for pg in page..page + npages {
            self.page_span[pg as usize] = id;
        }
        self.stats.note_heap_peaks();
        if let Some(log) = self.span_log.as_deref_mut() {
            log.push(SpanOp::Alloc, page, npages, spc.0 as i32);
        }
        Ok(id)
    }

    /// A span the heap already had when the replay began (spanlog.rs `Seed`): `npages` pages
    /// from `page` in use for span class `spc`, on no list, with no object allocated. The heap
    /// grows to hold it first. `logged_class` is what the span log says of it (-1: a span of
    /// no heap objects, e.g. a goroutine stack; `None`: not logged, e.g. Go's padding pages).
    pub(crate) fn seed_span(
        &mut self,
        page: u64,
        npages: u64,
        spc: SpanClass,
        logged_class: Option<i32>,
    ) -> Result<SpanId, ReplayError> {
        while self.pages.total_pages() < page + npages {
            let missing = page + npages - self.pages.total_pages();
            self.grow(missing)?;
        }
        let scav_pages = self.pages.alloc_range(page, npages);
        let nbytes = npages * self.page_bytes;
        self.stats.heap_released_bytes -= scav_pages * self.page_bytes;
        self.stats.heap_free_bytes -= nbytes - scav_pages * self.page_bytes;
        self.stats.heap_inuse_bytes += nbytes;
        self.stats.pages_in_use += npages;
        let base_addr = self.page_addr(page);
        self.alloc_needs_zero(base_addr, npages);
        let id = self.init_span(base_addr, npages, spc, false);
        for pg in page..page + npages {
            self.page_span[pg as usize] = id;
        }
        if let (Some(log), Some(class)) = (self.span_log.as_deref_mut(), logged_class) {
            log.push(SpanOp::Exists, page, npages, class);
        }
        Ok(id)
    }

    fn init_span(&mut self, base_addr: u64, npages: u64, spc: SpanClass, needzero: bool) -> SpanId {
        let id = match self.free_ids.pop() {
            Some(id) => id,
            None => {
                self.spans.push(MSpan::new_dead());
                SpanId(self.spans.len() as u32 - 1)
            }
        };
        let class = spc.size_class();
        let (elem, nelems) = if class.0 == 0 {
            (npages * self.page_bytes, 1)
        } else {
            (
                self.classes.size_bytes(class) as u64,
                self.classes.nelems(spc, self.green_tea),
            )
        };
        let tiny_class = Some(spc) == self.tiny_spc;
        let sweepgen = self.sweepgen;
        let s = &mut self.spans[id.index()];
        s.init(base_addr, npages as u32, spc, needzero, sweepgen);
        s.init_objects(elem, nelems, tiny_class);
        id
    }

    /// `allocNeedsZero`: pages below an arena's `zeroedBase` were used before and may hold
    /// garbage; pages above it are fresh from the OS. Advances `zeroedBase`.
    fn alloc_needs_zero(&mut self, mut addr: u64, mut npages: u64) -> bool {
        let mut need = false;
        while npages > 0 {
            let ai = ((addr - self.base_addr) / ARENA_BYTES) as usize;
            if self.zeroed_base_bytes.len() <= ai {
                self.zeroed_base_bytes.resize(ai + 1, 0);
            }
            let arena_off = (addr - self.base_addr) % ARENA_BYTES;
            let zb = &mut self.zeroed_base_bytes[ai];
            if arena_off < *zb {
                need = true;
            }
            let limit = (arena_off + npages * self.page_bytes).min(ARENA_BYTES);
            if limit > *zb {
                *zb = limit;
            }
            npages -= (limit - arena_off) / self.page_bytes;
            addr += limit - arena_off;
        }
        need
    }

    /// `mheap.grow`: adds whole 4 MiB chunks (fresh memory counts as released) and maps them.
    /// Past the model's address space (`MAX_HEAP_BYTES`) it fails, as Go's `sysReserve` does
    /// (`OutOfMemory`; nothing changed).
    #[cold]
    fn grow(&mut self, npages: u64) -> Result<u64, ReplayError> {
        let nchunks = npages.div_ceil(CHUNK_PAGES);
        let bytes = nchunks.saturating_mul(CHUNK_PAGES * self.page_bytes);
        if bytes > MAX_HEAP_BYTES - self.stats.heap_sys_bytes {
            return Err(ReplayError::OutOfMemory {
                bytes,
                source: std::io::Error::new(
                    std::io::ErrorKind::OutOfMemory,
                    "past the model's heap address space (arena::MAX_HEAP_BYTES)",
                ),
            });
        }
        let addr = self.page_addr(self.pages.total_pages());
        self.arena.map(addr, bytes)?;
        self.pages.grow(nchunks);
        self.page_span
            .resize(self.pages.total_pages() as usize, SpanId::NONE);
        self.stats.heap_released_bytes += bytes;
        self.stats.heap_sys_bytes += bytes;
        Ok(bytes)
    }

    /// `mheap.freeSpan` (`freeSpanLocked`): the span's pages go back to the page allocator.
    pub(crate) fn free_span(&mut self, id: SpanId) {
        let (base, npages) = {
            let s = &mut self.spans[id.index()];
            s.set_dead();
            (s.base_addr, s.npages as u64)
        };
        let page = self.addr_page(base);
        if let Some(log) = self.span_log.as_deref_mut() {
            let class = self.spans[id.index()].spanclass as i32;
            log.push(SpanOp::Free, page, npages, class);
        }
        for pg in page..page + npages {
            self.page_span[pg as usize] = SpanId::NONE;
        }
        self.pages.free(page, npages);
        let nbytes = npages * self.page_bytes;
        self.stats.heap_inuse_bytes -= nbytes;
        self.stats.heap_free_bytes += nbytes;
        self.stats.pages_in_use -= npages;
        self.free_ids.push(id);
    }

    /// Gives a P's page cache back to the page allocator (`pageCache.flush`).
    pub(crate) fn flush_page_cache(&mut self, p: usize) {
        let block = self.pcache[p].take();
        self.pages.flush_cache(block);
    }

    /// Spans in use, in address order (for reports and walks).
    pub fn in_use_spans(&self) -> impl Iterator<Item = SpanId> + '_ {
        let mut last = SpanId::NONE;
        self.page_span.iter().filter_map(move |&id| {
            if id != SpanId::NONE && id != last {
                last = id;
                Some(id)
            } else {
                None
            }
        })
    }

    pub fn check_invariants(&self) {
        let st = &self.stats;
        st.check_invariants();
        assert!(
            st.heap_sys_bytes <= MAX_HEAP_BYTES,
            "heap past its address space"
        );
        let (free_pages, released_pages) = self.pages.free_and_released_pages();
        let cache_free: u64 = self
            .pcache
            .iter()
            .map(|c| c.block.free.count_ones() as u64)
            .sum();
        let cache_scav: u64 = self
            .pcache
            .iter()
            .map(|c| c.block.scav.count_ones() as u64)
            .sum();
        assert_eq!(
            (released_pages + cache_scav) * self.page_bytes,
            st.heap_released_bytes,
            "heap_released vs page bitmaps"
        );
        assert_eq!(
            (free_pages + cache_free) * self.page_bytes,
            st.heap_free_bytes + st.heap_released_bytes,
            "heap_idle vs page bitmaps"
        );
        let mut in_use_pages = 0;
        for id in self.in_use_spans() {
            let s = self.span(id);
            assert_eq!(s.state, SpanState::InUse);
            let page = self.addr_page(s.base_addr);
            for pg in page..page + s.npages as u64 {
                assert_eq!(self.page_span[pg as usize], id);
                assert!(self.pages.in_use(pg));
            }
            in_use_pages += s.npages as u64;
            s.check_invariants();
        }
        assert_eq!(in_use_pages, st.pages_in_use, "pages_in_use");
        assert_eq!(
            in_use_pages * self.page_bytes,
            st.heap_inuse_bytes,
            "heap_inuse"
        );
        for c in &self.pcache {
            c.check_invariants();
        }
        self.pages.check_invariants();
    }
}
