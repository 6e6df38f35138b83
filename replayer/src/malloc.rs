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

pub use crate::mgc::GcCycle;

pub struct Heap {
    pub mheap: MHeap,
    pub mcaches: Vec<MCache>,
    pub pacer: Pacer,
    pub policy: FreePolicy,
    /// Tiny block bytes, 0 = tiny allocator off.
    tiny_block_bytes: u64,
    pub(crate) bg_sweep: bool,
    pub gc_cycles: Vec<GcCycle>,
    /// Set by the replay engine: index of the event being replayed.
    pub current_event: u64,
    pub(crate) trigger_bytes: u64,
    pub(crate) goal_bytes: u64,
    /// Requests of size 0 (`zerobase`, not counted by Go).
    pub zero_size_allocs: u64,
    /// Requests the model could not satisfy (see the module comment): failed calls.
    pub refused_allocs: u64,
    /// A mark phase is running (`gcBlackenEnabled`): new objects are allocated black.
    pub(crate) marking: bool,
    /// heapLive at which the running mark phase ends.
    pub(crate) mark_end_bytes: u64,
    /// heapLive when the running cycle started.
    pub(crate) cycle_start_live_bytes: u64,
    pub(crate) cycle_start_event: u64,
    /// The trace's clock: ns since the recording started, of the op being replayed (0 when the
    /// trace has no timestamps; set by the engine, `advance_clock`).
    pub now_ns: u64,
    /// Timed mark (mgc.rs): when the running mark phase ends (`u64::MAX` when none is timed).
    pub(crate) mark_end_ns: u64,
    pub(crate) mark_start_ns: u64,
    /// Timed mark: the running mark's CPU work and scan work (heap scan + stacks + globals).
    pub(crate) mark_cpu_ns: f64,
    pub(crate) mark_scan_work_bytes: u64,
    /// Perf counters accumulated over GC work (measured replays attach them; mgc.rs).
    pub gc_counters: Option<crate::measure::perf::PhaseCounters>,
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
        let gogc = if cfg.free_policy == FreePolicy::Immediate {
            -1
        } else {
            cfg.gogc
        };
        let limit = if cfg.free_policy == FreePolicy::Immediate {
            None
        } else {
            cfg.gomemlimit
        };
        let mut pacer = Pacer::new(gogc, limit, cfg.stacks_bytes, cfg.globals_bytes);
        pacer.cons_mark = cfg.cons_mark;
        pacer.idle_mark_utilization = cfg.idle_mark_utilization;
        pacer.mark_object_cost_bytes = cfg.mark_object_cost_bytes;
        pacer.mark_fixed_bytes = cfg.mark_fixed_bytes;
        pacer.mark_latency_ns = cfg.mark_latency_ns;
        pacer.mark_latencies_ns = cfg.mark_latencies_ns.clone();
        pacer.mark_ns_per_object = cfg.mark_ns_per_object;
        pacer.mark_ns_per_scan_byte = cfg.mark_ns_per_scan_byte;
        pacer.mark_ns_per_root_byte = cfg.mark_ns_per_root_byte;
        pacer.mark_assist_share = cfg.mark_assist_share;
        pacer.procs = cfg.procs;
        pacer.commit(true, 0);
        let mut h = Heap {
            mheap,
            mcaches: (0..cfg.procs).map(|_| MCache::new(nspc)).collect(),
            pacer,
            policy: cfg.free_policy,
            tiny_block_bytes: cfg.tiny_block_bytes(),
            bg_sweep: cfg.bg_sweep,
            gc_cycles: Vec::new(),
            current_event: 0,
            trigger_bytes: u64::MAX,
            goal_bytes: 0,
            zero_size_allocs: 0,
            refused_allocs: 0,
            marking: false,
            mark_end_bytes: 0,
            cycle_start_live_bytes: 0,
            cycle_start_event: 0,
            now_ns: 0,
            mark_end_ns: u64::MAX,
            mark_start_ns: 0,
            mark_cpu_ns: 0.0,
            mark_scan_work_bytes: 0,
            gc_counters: None,
        };
        h.update_trigger();
        Ok(h)
    }

    pub(crate) fn heap_sizes(&self) -> HeapSizes {
        let st = &self.mheap.stats;
        HeapSizes {
            inuse: st.heap_inuse_bytes,
            free: st.heap_free_bytes,
            alloc: st.heap_alloc_bytes,
        }
    }

    pub(crate) fn update_trigger(&mut self) {
        if self.pacer.enabled() {
            let (t, g) = self.pacer.trigger(&self.heap_sizes());
            self.trigger_bytes = t;
            self.goal_bytes = g;
        } else {
            self.trigger_bytes = u64::MAX;
            self.goal_bytes = 0;
        }
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
        let marking = self.marking;
        let s = &mut self.mheap.spans[id.index()];
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
        match self.mheap.next_free(&mut self.mcaches[p], spc, p) {
            Ok(r) => {
                self.mheap.stats.note_heap_peaks();
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
            if self.marking {
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
        if self.marking {
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
        let id = match self.mheap.alloc_large(size_bytes, noscan, p) {
            Ok(id) => id,
            Err(ReplayError::OutOfMemory { .. }) => return Ok(self.refuse()),
            Err(e) => return Err(e),
        };
        let s = &mut self.mheap.spans[id.index()];
        s.set_live(0, true);
        if self.marking {
            s.set_marked(0);
        }
        let (addr, bytes, needzero) = (s.base_addr, s.elem_bytes, s.needzero);
        self.mheap.stats.note_heap_peaks();
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
        let sg = self.mheap.sweepgen;
        let s = &mut self.mheap.spans[id.index()];
        let elem = s.elem_bytes;
        let class = SpanClass(s.spanclass).size_class();
        self.mheap.stats.heap_alloc_bytes -= elem;
        if class.0 == 0 {
            self.mheap.stats.large_free_count += 1;
            self.mheap.stats.large_free_bytes += elem;
            s.free_now(0);
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
            num_gc: self.gc_cycles.len() as u64,
            next_gc: self.goal_bytes,
            by_size,
            large: LargeStats {
                mallocs: st.large_alloc_count,
                frees: st.large_free_count,
                bytes: st.large_alloc_bytes,
            },
        }
    }

    /// Walks every structure and panics on a broken invariant.
    pub fn check_invariants(&self) {
        self.mheap.check_invariants();
        self.mheap.check_central_invariants();
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
