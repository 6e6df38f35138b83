//! Sweeping: models mgcsweep.go (`sweepLocked.sweep`, `sweepone`, `deductSweepCredit`,
//! `gcPaceSweeper`) and `mheap.reclaim` (mheap.go).
//!
//! After a GC cycle's mark phase every in-use span is unswept. A span is swept exactly once per
//! cycle, by whichever comes first:
//! - `mcentral.cacheSpan` when it looks for a span to hand out (`MHeap::cache_span`);
//! - proportional sweeping: before a span or large object is allocated, the allocator sweeps
//!   enough spans that sweeping finishes by the time the heap reaches the next trigger
//!   (`sweepPagesPerByte`, with a 1 MiB margin);
//! - `mheap.reclaim`: before allocating pages, spans with no marked object are swept (in address
//!   order) until as many pages as requested are reclaimed;
//! - an mcache giving back a span cached before the sweep began (`uncache_span`);
//! - the background sweeper, modelled as finishing all sweeping at the end of mark termination
//!   when `bg_sweep` is on (an idle P runs `bgsweep` in a real program), else never;
//! - `gcStart` finishing any sweeping left before a new cycle (`finishsweep_m`).
//!
//! Sweeping a span makes the marked objects the allocated ones; if nothing is left the span goes
//! back to the page heap (large spans always, when dead).
//!
//! `sweepgen` convention (as Go): relative to `mheap.sweepgen` = sg, a span with sg-2 needs
//! sweeping, sg is swept, sg+1 was cached before sweeping began (needs sweeping), sg+3 is swept
//! and cached.
//!
//! Invariant (`MHeap::check_sweep_invariants`): `remaining_spans` counts in-use spans with
//! sweepgen sg-2 or sg+1.

use crate::mcentral::{swept_index, unswept_index};
use crate::mheap::MHeap;
use crate::mspan::{SpanHome, SpanId, SpanState};
use crate::sizeclass::SpanClass;

/// `sweepMinHeapDistance`.
pub const SWEEP_MIN_HEAP_DISTANCE_BYTES: u64 = 1 << 20;

#[derive(Clone, Debug, Default)]
pub struct SweepState {
    /// In-use spans still to sweep this cycle.
    pub(crate) remaining_spans: u64,
    /// `sweep.centralIndex`: next sweep class (span class * 2 + partial) for `sweep_one`.
    central_index: usize,
    /// `mheap.reclaimIndex`, in pages.
    reclaim_page: u64,
    /// `pagesSwept` this cycle.
    pub(crate) pages_swept: u64,
    /// `sweepPagesPerByte` (0 = proportional sweeping off).
    pages_per_byte: f64,
    /// `pagesSweptBasis`.
    pages_swept_basis: u64,
    /// `sweepHeapLiveBasis`.
    heap_live_basis: u64,
    /// Current `gcController.heapLive` (kept here so sweeping can pace against it).
    pub(crate) heap_live_bytes: u64,
    /// Spans swept over the whole run.
    pub(crate) total_spans_swept: u64,
}

impl MHeap {
    pub fn sweep_done(&self) -> bool {
        self.sweep.remaining_spans == 0
    }

    /// `sweepLocked.sweep`. With `preserve` the span is returned to the caller (mcentral) and
    /// not filed or freed. Returns true when the span was freed to the heap.
    pub(crate) fn sweep_span(&mut self, id: SpanId, preserve: bool) -> bool {
        let sg = self.sweepgen;
        let (spc, npages, nfreed, nalloc, nelems, elem) = {
            let s = &mut self.spans[id.index()];
            debug_assert_eq!(s.state, SpanState::InUse);
            debug_assert!(
                s.sweepgen == sg - 2 || s.sweepgen == sg - 1,
                "sweep of a swept span"
            );
            debug_assert_eq!(s.home, SpanHome::None);
            let nfreed = s.sweep_bits();
            s.sweepgen = sg;
            (
                SpanClass(s.spanclass),
                s.npages as u64,
                nfreed,
                s.alloc_count,
                s.nelems,
                s.elem_bytes,
            )
        };
        debug_assert!(
            self.sweep.remaining_spans > 0,
            "more spans swept than were unswept"
        );
        self.sweep.remaining_spans -= 1;
        self.sweep.pages_swept += npages;
        expensive_check!(self.spans[id.index()].check_invariants());
        self.sweep.total_spans_swept += 1;
        let class = spc.size_class();
        if class.0 != 0 {
            if nfreed > 0 {
                self.stats.small_free_count[class.0 as usize] += nfreed as u64;
                self.stats.heap_alloc_bytes -= nfreed as u64 * elem;
            }
            if !preserve {
                if nalloc == 0 {
                    self.free_span(id);
                    return true;
                }
                let home = if nalloc == nelems {
                    SpanHome::Full(swept_index(sg))
                } else {
                    SpanHome::Partial(swept_index(sg))
                };
                self.push_span(id, home);
            }
        } else if !preserve {
            if nfreed != 0 {
                self.stats.large_free_count += 1;
                self.stats.large_free_bytes += elem;
                self.stats.heap_alloc_bytes -= elem;
                self.free_span(id);
                return true;
            }
            self.push_span(id, SpanHome::Full(swept_index(sg)));
        }
        false
    }

    /// `sweepone`: sweeps one unswept span from the mcentral sets, in span-class order (full
    /// before partial). Returns its pages, or `None` when nothing is left to sweep.
    pub(crate) fn sweep_one(&mut self) -> Option<u64> {
        if self.sweep_done() {
            return None;
        }
        let sg = self.sweepgen;
        let nsweep = self.central.len() * 2;
        while self.sweep.central_index < nsweep {
            let sc = self.sweep.central_index;
            let spc = SpanClass((sc / 2) as u8);
            let home = if sc & 1 == 0 {
                SpanHome::Full(unswept_index(sg))
            } else {
                SpanHome::Partial(unswept_index(sg))
            };
            if let Some(id) = self.pop_span(spc, home) {
                let npages = self.spans[id.index()].npages as u64;
                self.sweep_span(id, false);
                return Some(npages);
            }
            self.sweep.central_index += 1;
        }
        // Everything listed is swept; what remains is cached (stale) and is swept when its
        // mcache gives it back.
        None
    }

    /// Sweeps everything that is listed (`finishsweep_m` / the background sweeper).
    pub(crate) fn finish_sweep(&mut self) {
        while self.sweep_one().is_some() {}
    }

    /// `deductSweepCredit`: proportional sweeping before allocating `span_bytes`.
    pub(crate) fn deduct_sweep_credit(&mut self, span_bytes: u64, caller_sweep_pages: u64) {
        if self.sweep.pages_per_byte == 0.0 {
            return;
        }
        let live = self.sweep.heap_live_bytes;
        let mut new_heap_live = span_bytes;
        if self.sweep.heap_live_basis < live {
            new_heap_live += live - self.sweep.heap_live_basis;
        }
        let pages_target =
            (self.sweep.pages_per_byte * new_heap_live as f64) as i64 - caller_sweep_pages as i64;
        while pages_target > (self.sweep.pages_swept - self.sweep.pages_swept_basis) as i64 {
            if self.sweep_one().is_none() {
                self.sweep.pages_per_byte = 0.0;
                break;
            }
        }
    }

    /// `gcPaceSweeper`: sets the sweep rate so sweeping ends before the heap reaches `trigger`.
    pub(crate) fn pace_sweeper(&mut self, trigger_bytes: u64) {
        let live = self.sweep.heap_live_bytes;
        let mut distance =
            trigger_bytes as i64 - live as i64 - SWEEP_MIN_HEAP_DISTANCE_BYTES as i64;
        if distance < self.page_bytes as i64 {
            distance = self.page_bytes as i64;
        }
        let to_sweep = self.stats.pages_in_use as i64 - self.sweep.pages_swept as i64;
        if to_sweep <= 0 {
            self.sweep.pages_per_byte = 0.0;
        } else {
            self.sweep.pages_per_byte = to_sweep as f64 / distance as f64;
            self.sweep.heap_live_basis = live;
            self.sweep.pages_swept_basis = self.sweep.pages_swept;
        }
    }

    /// `mheap.reclaim`: before allocating `npages`, sweep unswept spans that have no marked
    /// object, in address order, until `npages` pages are freed or the heap is walked.
    pub(crate) fn reclaim(&mut self, npages: u64) {
        let sg = self.sweepgen;
        let mut freed = 0;
        let total = self.pages.total_pages();
        while freed < npages && self.sweep.reclaim_page < total {
            let page = self.sweep.reclaim_page;
            let addr = self.page_addr(page);
            let Some(id) = self.span_of(addr) else {
                self.sweep.reclaim_page += 1;
                continue;
            };
            let s = &self.spans[id.index()];
            self.sweep.reclaim_page = self.addr_page(s.base_addr) + s.npages as u64;
            let listed = matches!(s.home, SpanHome::Partial(_) | SpanHome::Full(_));
            if s.sweepgen == sg - 2 && listed && s.count_marked() == 0 {
                let n = s.npages as u64;
                self.unlist_span(id);
                if self.sweep_span(id, false) {
                    freed += n;
                }
            }
        }
    }

    /// `remaining_spans` counts the in-use spans still to sweep (sweepgen sg-2, or sg+1:
    /// cached before the sweep began), and every in-use span is in one of the states of the
    /// module comment.
    pub fn check_sweep_invariants(&self) {
        let sg = self.sweepgen;
        let mut unswept = 0;
        for (i, s) in self.spans.iter().enumerate().skip(1) {
            if s.state != SpanState::InUse {
                continue;
            }
            let g = s.sweepgen;
            assert!(
                g == sg - 2 || g == sg || g == sg + 1 || g == sg + 3,
                "span {i}: sweepgen {g} with mheap sweepgen {sg}"
            );
            unswept += (g == sg - 2 || g == sg + 1) as u64;
        }
        assert_eq!(unswept, self.sweep.remaining_spans, "spans left to sweep");
    }

    /// Start of a cycle's sweep phase: every in-use span becomes unswept (the set roles swap
    /// through `sweepgen`), and the sweep counters reset.
    pub(crate) fn begin_sweep_phase(&mut self) {
        self.sweepgen += 2;
        let mut n = 0;
        for s in &self.spans {
            if s.state == SpanState::InUse {
                n += 1;
            }
        }
        self.sweep.remaining_spans = n;
        self.sweep.central_index = 0;
        self.sweep.reclaim_page = 0;
        self.sweep.pages_swept = 0;
    }
}
