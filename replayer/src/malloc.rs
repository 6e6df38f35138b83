//! The allocator's entry points: models `mallocgc` (malloc.go), and the free side: what becomes
//! of an object the trace frees, under each free policy.
//!
//! `malloc` takes the path `mallocgc` takes, by the one placement rule (`SizeClasses::place`):
//! size 0 returns `zerobase`; pointer-free objects under the tiny block size take the tiny path;
//! objects up to 32768 - 8 bytes take the small path (pointer objects over 512 bytes get an
//! 8-byte malloc header and their class is chosen for size + 8); everything else is large (whole
//! pages, its own span). The fast path is `nextFreeFast` on the P's cached span; the rest is in
//! `#[cold]` functions.
//!
//! A request that no heap could hold fails as C's malloc fails: one larger than the model's
//! address space (`arena::MAX_HEAP_BYTES`), or one the heap cannot grow for. Nothing
//! is allocated; it is counted in `refused_allocs` and answered with [`ZEROBASE_ADDR`], which
//! the engine treats as holding no memory (it neither writes nor frees it), as a program holds
//! NULL.
//!
//! Frees follow the configured policy (config.rs): `gc` marks the object dead (it is still
//! allocated) and a GC cycle started by the pacer makes the sweeper reclaim it; `immediate`
//! frees the slot at once and runs no GC.
//!
//! GC cycles are in mgc.rs.
//!
//! Invariant walk: [`Heap::check_invariants`] checks every structure (tests call it).

use crate::config::{Config, FreePolicy};
use crate::error::ReplayError;
use crate::mcache::{MCache, EMPTY_SPAN};
use crate::mheap::MHeap;
use crate::mspan::{SpanHome, SpanId};
use crate::mstats::{BySize, GoMemStats, LargeStats};
use crate::pacer::{HeapSizes, Pacer};
use crate::sizeclass::{tiny_align, Placement, SizeClass, SpanClass, MALLOC_HEADER_BYTES};

/// The address `mallocgc(0)` returns (`&zerobase`, outside the heap).
pub const ZEROBASE_ADDR: u64 = 0x0000_0000_0060_0000;
/// What the model writes as a malloc header (stands for a `*_type`).
pub const FAKE_TYPE_PTR: u64 = 0x0000_0000_0050_0000;

use crate::mgc::Gc;
pub use crate::mgc::GcCycle;

/// The Go heap as a program sees it: the page heap and its central structures (`mheap`), one
/// mcache per P, the pacer and the GC. Changed only through its methods (`malloc`, `free`,
/// `advance_clock`, `gc_cycle`); the engine sets `current_event` before each op.
pub struct Heap {
    /// The page heap, spans, mcentrals, sweeper and scavenger state (mheap.rs).
    pub(crate) mheap: MHeap,
    /// One per P (mcache.rs); an allocation on P `p` uses `mcaches[p]`.
    pub(crate) mcaches: Vec<MCache>,
    /// The trigger and goal of the next cycle (pacer.rs).
    pub(crate) pacer: Pacer,
    /// The GC's own state: the running mark phase and the finished cycles (mgc.rs).
    pub(crate) gc: Gc,
    /// What a free does (config.rs).
    pub(crate) policy: FreePolicy,
    /// Tiny block bytes, 0 = tiny allocator off.
    tiny_block_bytes: u64,
    /// The background sweeper runs (config.rs `bg_sweep`; mgc.rs).
    pub(crate) bg_sweep: bool,
    /// Index of the op being replayed (set by the engine before each op; a cycle records the
    /// op that started it, the span log the op that allocated or freed a span).
    pub(crate) current_event: u64,
    /// The trace's clock: ns since the recording started, of the op being replayed (0 when the
    /// trace has no timestamps; set by `advance_clock`).
    pub(crate) now_ns: u64,
    /// Requests of size 0 (`zerobase`, not counted by Go).
    pub(crate) zero_size_allocs: u64,
    /// Requests the model could not satisfy (see the module comment): failed calls.
    pub(crate) refused_allocs: u64,
}

impl Heap {
    pub fn new(cfg: &Config) -> Result<Heap, ReplayError> {
        cfg.validate()?;
        let classes = cfg.load_size_classes()?;
        let nspc = classes.num_span_classes();
        let tiny_spc = if cfg.tiny {
            let c = classes.class_for(cfg.tiny_block);
            if classes.size_bytes(c) as u64 != cfg.tiny_block {
                return Err(ReplayError::Config(format!(
                    "tiny_block {} is not a size class of the table",
                    cfg.tiny_block
                )));
            }
            Some(SpanClass::new(c, true))
        } else {
            None
        };
        let mut mheap = MHeap::new(
            classes,
            cfg.green_tea,
            cfg.procs,
            crate::arena::ARENA_HINT_ADDR,
            cfg.touch_memory,
        );
        mheap.tiny_spc = tiny_spc;
        mheap.scav.enabled = cfg.scavenger;
        let immediate = cfg.free_policy == FreePolicy::Immediate;
        let pacer = Pacer::new(
            if immediate { -1 } else { cfg.gogc },
            if immediate { None } else { cfg.gomemlimit },
            cfg.stacks_bytes,
            cfg.globals_bytes,
            cfg.procs,
            cfg.mark.clone(),
        );
        let mut h = Heap {
            mheap,
            mcaches: (0..cfg.procs).map(|_| MCache::new(nspc)).collect(),
            pacer,
            gc: Gc::default(),
            policy: cfg.free_policy,
            tiny_block_bytes: cfg.tiny_block_bytes(),
            bg_sweep: cfg.bg_sweep,
            current_event: 0,
            now_ns: 0,
            zero_size_allocs: 0,
            refused_allocs: 0,
        };
        h.update_trigger();
        Ok(h)
    }

    /// The page heap (read only: tests and reports look at spans, pages and statistics).
    pub fn mheap(&self) -> &MHeap {
        &self.mheap
    }

    /// The GC cycles run so far.
    pub fn gc_cycles(&self) -> &[GcCycle] {
        &self.gc.cycles
    }

    /// Requests the model could not satisfy (failed calls; see the module comment).
    pub fn refused_allocs(&self) -> u64 {
        self.refused_allocs
    }

    /// Attaches perf counters that accumulate over the model's GC work (a measured replay's
    /// `gc` phase; mgc.rs), or takes them back (`None`).
    pub fn set_gc_counters(
        &mut self,
        counters: Option<crate::measured::perf::PhaseCounters>,
    ) -> Option<crate::measured::perf::PhaseCounters> {
        std::mem::replace(&mut self.gc.counters, counters)
    }

    pub(crate) fn heap_sizes(&self) -> HeapSizes {
        let st = &self.mheap.stats;
        HeapSizes {
            inuse: st.heap_inuse_bytes,
            free: st.heap_free_bytes,
            alloc: st.heap_alloc_bytes,
        }
    }

    /// The pacer's trigger and goal for the heap as it is now (`gcControllerState.trigger`).
    pub(crate) fn update_trigger(&mut self) {
        let sizes = self.heap_sizes();
        self.pacer.update(&sizes);
    }

    /// `mallocgc(size, typ, needzero=true)` on P `p`. Returns the object's address.
    #[inline]
    pub fn malloc(&mut self, size_bytes: u64, noscan: bool, p: usize) -> Result<u64, ReplayError> {
        match self
            .mheap
            .classes
            .place(size_bytes, noscan, self.tiny_block_bytes)
        {
            Placement::Small { class, header } => self.malloc_small(class, noscan, header, p),
            Placement::Tiny => self.malloc_tiny(size_bytes, p),
            Placement::Large => self.malloc_large(size_bytes, noscan, p),
            Placement::Zero => {
                self.zero_size_allocs += 1;
                Ok(ZEROBASE_ADDR)
            }
        }
    }

    /// `mallocgcSmallNoscan` / `mallocgcSmallScanNoHeader` / `mallocgcSmallScanHeader`.
    #[inline]
    fn malloc_small(
        &mut self,
        class: SizeClass,
        noscan: bool,
        header: bool,
        p: usize,
    ) -> Result<u64, ReplayError> {
        let spc = SpanClass::new(class, noscan);
        let id = self.mcaches[p].alloc[spc.index()];
        let (id, i, refilled) = match self.mheap.spans[id.index()].next_free_fast() {
            Some(i) => (id, i, false),
            None => match self.next_free_slow(spc, p)? {
                Some(found) => found,
                None => return Ok(self.refuse()),
            },
        };
        // Spans of the tiny span class (and only they) keep `tiny_refs`.
        let tiny_class = self.mheap.tiny_spc == Some(spc);
        let marking = self.gc.marking;
        let s = &mut self.mheap.spans[id.index()];
        debug_assert!(i < s.nelems && !s.is_live(i), "object {i} handed out twice");
        let addr = s.object_addr(i);
        let elem = s.elem_bytes;
        let needzero = s.needzero;
        s.set_live(i, true);
        if marking {
            s.set_marked(i);
        }
        if tiny_class {
            // A plain 16-byte object in the tiny span class: one reference.
            s.tiny_refs[i as usize] = 1;
        }
        self.mheap.stats.heap_alloc_bytes += elem;
        if needzero {
            self.mheap.arena.zero(addr, elem);
        }
        if header {
            self.mheap.arena.write_u64(addr, FAKE_TYPE_PTR);
        }
        if refilled {
            self.maybe_gc(p);
        }
        Ok(if header {
            addr + MALLOC_HEADER_BYTES
        } else {
            addr
        })
    }

    /// `mcache.nextFree` and its refill; `None` when the heap cannot grow for a new span (a
    /// failed call, see the module comment).
    #[cold]
    #[inline(never)]
    fn next_free_slow(
        &mut self,
        spc: SpanClass,
        p: usize,
    ) -> Result<Option<(SpanId, u32, bool)>, ReplayError> {
        self.stamp_span_log();
        #[cfg(feature = "check-invariants")]
        let old = self.mcaches[p].alloc[spc.index()];
        match self.mheap.next_free(&mut self.mcaches[p], spc, p) {
            Ok(r) => {
                self.mheap.stats.note_heap_peaks();
                expensive_check!(self.check_after_slow_path(&[old, r.0], p));
                Ok(Some(r))
            }
            Err(ReplayError::OutOfMemory { .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// `mallocgcTiny`.
    #[inline]
    fn malloc_tiny(&mut self, size_bytes: u64, p: usize) -> Result<u64, ReplayError> {
        let block = self.tiny_block_bytes;
        let mc = &mut self.mcaches[p];
        let off = tiny_align(mc.tiny_offset, size_bytes);
        debug_assert!(mc.tiny_offset <= block || mc.tiny_addr == 0);
        if off + size_bytes <= block && mc.tiny_addr != 0 {
            let x = mc.tiny_addr + off;
            mc.tiny_offset = off + size_bytes;
            mc.tiny_allocs += 1;
            let (id, i) = (mc.tiny_span, mc.tiny_index);
            let s = &mut self.mheap.spans[id.index()];
            debug_assert_eq!(s.object_index(x), i);
            let refs = &mut s.tiny_refs[i as usize];
            *refs += 1;
            if *refs == 1 {
                // The block was dead (its objects all freed): live again. Otherwise it is
                // already live (`live_bits[i] == (tiny_refs[i] > 0)`).
                s.set_live(i, true);
            }
            if self.gc.marking {
                // The new pointer into the block is shaded by the write barrier.
                s.set_marked(i);
            }
            return Ok(x);
        }
        self.malloc_tiny_new_block(size_bytes, p)
    }

    #[cold]
    #[inline(never)]
    fn malloc_tiny_new_block(&mut self, size_bytes: u64, p: usize) -> Result<u64, ReplayError> {
        let spc = self.mheap.tiny_spc.expect("tiny on");
        let id = self.mcaches[p].alloc[spc.index()];
        let (id, i, refilled) = match self.mheap.spans[id.index()].next_free_fast() {
            Some(i) => (id, i, false),
            None => match self.next_free_slow(spc, p)? {
                Some(found) => found,
                None => return Ok(self.refuse()),
            },
        };
        let block = self.tiny_block_bytes;
        let v = self.mheap.spans[id.index()].object_addr(i);
        self.mheap.arena.zero(v, block);
        self.mheap.stats.heap_alloc_bytes += block;
        let s = &mut self.mheap.spans[id.index()];
        s.tiny_refs[i as usize] = 1;
        s.set_live(i, true);
        if self.gc.marking {
            s.set_marked(i);
        }
        let mc = &mut self.mcaches[p];
        if size_bytes < mc.tiny_offset || mc.tiny_addr == 0 {
            let old = mc.tiny_addr;
            mc.tiny_addr = v;
            mc.tiny_span = id;
            mc.tiny_index = i;
            mc.tiny_offset = size_bytes;
            if old != 0 && self.policy == FreePolicy::Immediate {
                self.free_tiny_block_if_empty(old);
            }
        }
        if refilled {
            self.maybe_gc(p);
        }
        Ok(v)
    }

    /// `mallocgcLarge`.
    #[cold]
    #[inline(never)]
    fn malloc_large(
        &mut self,
        size_bytes: u64,
        noscan: bool,
        p: usize,
    ) -> Result<u64, ReplayError> {
        if size_bytes > crate::arena::MAX_HEAP_BYTES {
            return Ok(self.refuse());
        }
        self.stamp_span_log();
        let id = match self.mheap.alloc_large(size_bytes, noscan, p) {
            Ok(id) => id,
            Err(ReplayError::OutOfMemory { .. }) => return Ok(self.refuse()),
            Err(e) => return Err(e),
        };
        let s = &mut self.mheap.spans[id.index()];
        s.set_live(0, true);
        if self.gc.marking {
            s.set_marked(0);
        }
        let (addr, bytes, needzero) = (s.base_addr, s.elem_bytes, s.needzero);
        self.mheap.stats.note_heap_peaks();
        expensive_check!(self.check_after_slow_path(&[id], p));
        self.maybe_gc(p);
        if needzero {
            self.mheap.arena.zero(addr, bytes);
        }
        Ok(addr)
    }

    /// A failed call (see the module comment): nothing allocated.
    #[cold]
    fn refuse(&mut self) -> u64 {
        self.refused_allocs += 1;
        ZEROBASE_ADDR
    }

    /// Frees an object the trace no longer holds (see the module comment for the policies).
    /// `addr` must be an address `malloc` returned and not yet freed.
    pub fn free(&mut self, addr: u64) {
        if addr == ZEROBASE_ADDR {
            return;
        }
        let id = self
            .mheap
            .span_of(addr)
            .expect("free of an address outside the heap");
        let tiny_spc = self.mheap.tiny_spc;
        let s = &mut self.mheap.spans[id.index()];
        let i = s.object_index(addr);
        // Spans of the tiny span class (and only they) keep `tiny_refs`.
        let tiny_class = tiny_spc == Some(SpanClass(s.spanclass));
        if tiny_class {
            let r = &mut s.tiny_refs[i as usize];
            debug_assert!(*r > 0, "free of a dead tiny object");
            *r -= 1;
            if *r > 0 {
                return;
            }
        }
        debug_assert!(s.is_live(i), "double free reached the model");
        s.set_live(i, false);
        if self.policy == FreePolicy::Immediate {
            let block_addr = s.base_addr + i as u64 * s.elem_bytes;
            if tiny_class {
                if let Some(mc) = self.mcaches.iter_mut().find(|m| m.tiny_addr == block_addr) {
                    // The current tiny block is empty again: the tiny allocator reuses it.
                    mc.tiny_offset = 0;
                    return;
                }
            }
            self.free_now(id, i);
        }
    }

    fn free_tiny_block_if_empty(&mut self, block_addr: u64) {
        let id = self.mheap.span_of(block_addr).expect("tiny block");
        let s = &self.mheap.spans[id.index()];
        let i = s.object_index(block_addr);
        if s.tiny_refs[i as usize] == 0 && s.is_allocated(i) {
            self.free_now(id, i);
        }
    }

    /// The `immediate` policy: object `i` of span `id` is free now.
    fn free_now(&mut self, id: SpanId, i: u32) {
        self.free_now_work(id, i);
        expensive_check!({
            let s = self.mheap.span(id);
            if s.state == crate::mspan::SpanState::InUse {
                s.check_invariants();
            }
            self.mheap.stats.check_invariants();
        });
    }

    fn free_now_work(&mut self, id: SpanId, i: u32) {
        let sg = self.mheap.sweepgen;
        let s = &mut self.mheap.spans[id.index()];
        let elem = s.elem_bytes;
        let class = SpanClass(s.spanclass).size_class();
        self.mheap.stats.heap_alloc_bytes -= elem;
        if class.0 == 0 {
            self.mheap.stats.large_free_count += 1;
            self.mheap.stats.large_free_bytes += elem;
            s.free_now(0);
            self.stamp_span_log();
            self.mheap.unlist_span(id);
            self.mheap.free_span(id);
            return;
        }
        s.free_now(i);
        self.mheap.stats.small_free_count[class.0 as usize] += 1;
        let (home, empty) = (s.home, s.alloc_count == 0);
        match home {
            SpanHome::Cached => {}
            SpanHome::Full(_) | SpanHome::Partial(_) if empty => {
                self.stamp_span_log();
                self.mheap.unlist_span(id);
                self.mheap.free_span(id);
            }
            SpanHome::Full(_) => {
                self.mheap.unlist_span(id);
                self.mheap
                    .push_span(id, SpanHome::Partial(crate::mcentral::swept_index(sg)));
            }
            _ => {}
        }
    }

    /// What `runtime.ReadMemStats` would return now (counts still held by mcaches included, as
    /// `ReadMemStats` flushes them first).
    pub fn memstats(&self) -> GoMemStats {
        let st = &self.mheap.stats;
        let mut small_alloc = st.small_alloc_count.clone();
        let mut tiny = st.tiny_alloc_count;
        for mc in &self.mcaches {
            tiny += mc.tiny_allocs;
            for (spc, &id) in mc.alloc.iter().enumerate() {
                if id != EMPTY_SPAN {
                    let s = self.mheap.span(id);
                    small_alloc[spc >> 1] +=
                        (s.alloc_count as i64 - s.alloc_count_before_cache) as u64;
                }
            }
        }
        let classes = &self.mheap.classes;
        let by_size: Vec<BySize> = (1..classes.num_classes())
            .map(|c| BySize {
                size: classes.size_bytes(SizeClass(c as u8)) as u64,
                mallocs: small_alloc[c],
                frees: st.small_free_count[c],
            })
            .collect();
        let mallocs = small_alloc.iter().sum::<u64>() + st.large_alloc_count + tiny;
        let frees = st.small_free_count.iter().sum::<u64>() + st.large_free_count + tiny;
        GoMemStats {
            heap_alloc: st.heap_alloc_bytes,
            heap_inuse: st.heap_inuse_bytes,
            heap_idle: st.heap_free_bytes + st.heap_released_bytes,
            heap_released: st.heap_released_bytes,
            heap_sys: st.heap_sys_bytes,
            mallocs,
            frees,
            heap_objects: mallocs - frees,
            tiny_allocs: tiny,
            num_gc: self.gc.cycles.len() as u64,
            next_gc: self.pacer.goal_bytes(),
            by_size,
            large: LargeStats {
                mallocs: st.large_alloc_count,
                frees: st.large_free_count,
                bytes: st.large_alloc_bytes,
            },
        }
    }

    /// Tier-3 check after a slow-path operation on P `p` that changed `spans`: those spans,
    /// the P's page cache and mcache, and the page-level statistics.
    #[cfg(feature = "check-invariants")]
    fn check_after_slow_path(&self, spans: &[SpanId], p: usize) {
        for &id in spans {
            let s = self.mheap.span(id);
            if id != EMPTY_SPAN && s.state == crate::mspan::SpanState::InUse {
                s.check_invariants();
            }
        }
        self.mheap.pcache[p].check_invariants();
        self.mheap.stats.check_invariants();
        for (spc, &c) in self.mcaches[p].alloc.iter().enumerate() {
            if c != EMPTY_SPAN {
                assert_eq!(self.mheap.span(c).spanclass as usize, spc);
            }
        }
    }

    /// Walks every structure and panics on a broken invariant.
    pub fn check_invariants(&self) {
        self.mheap.check_invariants();
        self.mheap.check_central_invariants();
        self.mheap.check_sweep_invariants();
        self.pacer.check_invariants();
        let m = self.memstats();
        for b in &m.by_size {
            assert!(
                b.frees <= b.mallocs,
                "{}-byte class: more frees than mallocs",
                b.size
            );
        }
        assert!(
            m.large.frees <= m.large.mallocs,
            "large: more frees than mallocs"
        );
        for mc in &self.mcaches {
            for (spc, &id) in mc.alloc.iter().enumerate() {
                if id != EMPTY_SPAN {
                    let s = self.mheap.span(id);
                    assert_eq!(s.home, SpanHome::Cached);
                    assert_eq!(s.spanclass as usize, spc);
                    assert_eq!(s.sweepgen, self.mheap.sweepgen + 3);
                }
            }
            assert!(mc.tiny_offset <= self.tiny_block_bytes.max(1) || mc.tiny_addr == 0);
        }
        let mut alloc_bytes = 0;
        for id in self.mheap.in_use_spans() {
            let s = self.mheap.span(id);
            alloc_bytes += s.alloc_count as u64 * s.elem_bytes;
        }
        assert_eq!(
            alloc_bytes, self.mheap.stats.heap_alloc_bytes,
            "heap_alloc vs spans"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn heap() -> Heap {
        Heap::new(&Config {
            touch_memory: false,
            ..Config::default()
        })
        .unwrap()
    }

    #[test]
    #[should_panic(expected = "spans left to sweep")]
    fn the_walk_catches_a_miscounted_sweep() {
        let mut h = heap();
        h.malloc(100, true, 0).unwrap();
        h.gc_cycle(0);
        h.check_invariants();
        h.mheap.sweep.remaining_spans += 1;
        h.check_invariants();
    }

    #[test]
    #[should_panic(expected = "above goal")]
    fn the_walk_catches_a_trigger_above_the_goal() {
        let mut h = heap();
        h.pacer.heap_marked_bytes = 64 << 20;
        h.check_invariants();
    }

    #[test]
    #[should_panic(expected = "more frees than mallocs")]
    fn the_walk_catches_more_frees_than_allocations() {
        let mut h = heap();
        h.malloc(100, true, 0).unwrap();
        let class = |size| h.mheap.classes.class_for(size).0 as usize;
        let (c100, c200) = (class(100), class(200));
        h.mheap.stats.small_free_count[c100] += 2;
        h.mheap.stats.small_alloc_count[c200] += 2;
        h.check_invariants();
    }

    /// With the feature on, a slow-path operation walks the spans it changed: an object past
    /// the span's end marked live (which no allocation looks at) is found at the next refill.
    #[cfg(feature = "check-invariants")]
    #[test]
    #[should_panic(expected = "past nelems in use")]
    fn a_refill_walks_the_span_it_gives_back() {
        let mut h = heap();
        let a = h.malloc(1024, true, 0).unwrap();
        let id = h.mheap.span_of(a).unwrap();
        let s = &mut h.mheap.spans[id.index()];
        assert!(s.nelems < 60);
        s.set_live(60, true);
        for _ in 0..64 {
            h.malloc(1024, true, 0).unwrap();
        }
    }
}
