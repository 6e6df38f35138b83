//! Central span lists: models `mcentral` (mcentral.go) and `spanSet` (mspanset.go).
//!
//! Each span class has two pairs of span sets, partial (has free objects) and full, each in a
//! swept and an unswept role; the roles swap every GC cycle because the set index is
//! `sweepgen/2 % 2` (swept) or its complement (unswept). `cache_span` hands an mcache a span with
//! a free object: partial swept, else sweep partial unswept, else sweep full unswept (a budget of
//! 100 spans shared by both), else grow with fresh pages.
//!
//! Invariants: a span is in at most one set, and `MSpan::home` says which (`check_invariants`).
//!
//! Deliberate difference: Go's span sets are lock-free queues; here a `VecDeque` with the same
//! FIFO order. A span removed other than by `pop` (the `immediate` free policy moving a span
//! from full to partial) leaves a stale entry that `pop` skips, recognised by `list_token`.

use std::collections::VecDeque;

use crate::error::ReplayError;
use crate::mheap::MHeap;
use crate::mspan::{SpanHome, SpanId, SpanState};
use crate::sizeclass::SpanClass;

/// A FIFO of spans; entries carry the span's `list_token` at push time.
#[derive(Clone, Debug, Default)]
pub struct SpanSet {
    q: VecDeque<(SpanId, u32)>,
}

#[derive(Clone, Debug, Default)]
pub struct MCentral {
    /// `partial[sweepgen/2 % 2]` holds swept spans with free objects.
    pub(crate) partial: [SpanSet; 2],
    /// `full[sweepgen/2 % 2]` holds swept spans with no free objects.
    pub(crate) full: [SpanSet; 2],
}

/// Which parity of set is the swept one for a sweepgen.
#[inline]
pub fn swept_index(sweepgen: u64) -> u8 {
    (sweepgen / 2 % 2) as u8
}

#[inline]
pub fn unswept_index(sweepgen: u64) -> u8 {
    1 - swept_index(sweepgen)
}

impl MHeap {
    /// Pushes a span on one of its mcentral's sets.
    pub(crate) fn push_span(&mut self, id: SpanId, home: SpanHome) {
        let s = &mut self.spans[id.index()];
        debug_assert_eq!(s.home, SpanHome::None);
        s.home = home;
        let token = s.list_token;
        let c = &mut self.central[s.spanclass as usize];
        match home {
            SpanHome::Partial(i) => c.partial[i as usize].q.push_back((id, token)),
            SpanHome::Full(i) => c.full[i as usize].q.push_back((id, token)),
            _ => unreachable!("push to no list"),
        }
    }

    /// Pops the oldest valid span from a set.
    pub(crate) fn pop_span(&mut self, spc: SpanClass, home: SpanHome) -> Option<SpanId> {
        loop {
            let c = &mut self.central[spc.index()];
            let (id, token) = match home {
                SpanHome::Partial(i) => c.partial[i as usize].q.pop_front()?,
                SpanHome::Full(i) => c.full[i as usize].q.pop_front()?,
                _ => unreachable!("pop from no list"),
            };
            let s = &mut self.spans[id.index()];
            if s.list_token == token && s.home == home && s.state == SpanState::InUse {
                s.home = SpanHome::None;
                s.list_token = s.list_token.wrapping_add(1);
                return Some(id);
            }
        }
    }

    /// Takes a span off whatever set holds it (its queue entry goes stale).
    pub(crate) fn unlist_span(&mut self, id: SpanId) {
        let s = &mut self.spans[id.index()];
        debug_assert!(matches!(s.home, SpanHome::Partial(_) | SpanHome::Full(_)));
        s.home = SpanHome::None;
        s.list_token = s.list_token.wrapping_add(1);
    }

    /// `mcentral.cacheSpan`: a span of class `spc` with at least one free object, positioned for
    /// allocation.
    #[inline(never)]
    pub(crate) fn cache_span(&mut self, spc: SpanClass, p: usize) -> Result<SpanId, ReplayError> {
        let span_bytes = self.classes.npages(spc.size_class()) as u64 * self.page_bytes;
        self.deduct_sweep_credit(span_bytes, 0);
        let sg = self.sweepgen;
        let mut budget: i32 = 100;
        let found = 'search: {
            if let Some(id) = self.pop_span(spc, SpanHome::Partial(swept_index(sg))) {
                break 'search Some(id);
            }
            // Go loops here with the shared budget, but takes the first span it pops.
            if let Some(id) = self.pop_span(spc, SpanHome::Partial(unswept_index(sg))) {
                self.sweep_span(id, true);
                break 'search Some(id);
            }
            while budget >= 0 {
                let Some(id) = self.pop_span(spc, SpanHome::Full(unswept_index(sg))) else {
                    break;
                };
                self.sweep_span(id, true);
                let fi = self.spans[id.index()].next_free_index();
                if fi != self.spans[id.index()].nelems {
                    // Go keeps the index found; `prime_alloc_cache` below reloads from it.
                    self.spans[id.index()].set_freeindex(fi);
                    break 'search Some(id);
                }
                self.push_span(id, SpanHome::Full(swept_index(sg)));
                budget -= 1;
            }
            None
        };
        let id = match found {
            Some(id) => id,
            None => self.central_grow(spc, p)?,
        };
        let s = &mut self.spans[id.index()];
        debug_assert!(s.alloc_count < s.nelems, "span has no free objects");
        s.prime_alloc_cache();
        Ok(id)
    }

    /// `mcentral.uncacheSpan`: an mcache gives a span back.
    pub(crate) fn uncache_span(&mut self, id: SpanId) {
        let sg = self.sweepgen;
        let s = &mut self.spans[id.index()];
        debug_assert_eq!(s.home, SpanHome::Cached);
        s.home = SpanHome::None;
        let stale = s.sweepgen == sg + 1;
        if stale {
            // Cached before this cycle's sweep began: sweep it now (it files itself).
            s.sweepgen = sg - 1;
            self.sweep_span(id, false);
        } else {
            s.sweepgen = sg;
            let full = s.alloc_count == s.nelems;
            let home = if full {
                SpanHome::Full(swept_index(sg))
            } else {
                SpanHome::Partial(swept_index(sg))
            };
            self.push_span(id, home);
        }
    }

    /// `mcentral.grow`: a fresh span of `class_to_allocnpages` pages.
    #[cold]
    fn central_grow(&mut self, spc: SpanClass, p: usize) -> Result<SpanId, ReplayError> {
        let npages = self.classes.npages(spc.size_class()) as u64;
        self.alloc(npages, spc, p)
    }

    pub fn check_central_invariants(&self) {
        for (spc, c) in self.central.iter().enumerate() {
            let sets = [
                (&c.partial[0], SpanHome::Partial(0)),
                (&c.partial[1], SpanHome::Partial(1)),
                (&c.full[0], SpanHome::Full(0)),
                (&c.full[1], SpanHome::Full(1)),
            ];
            for (set, home) in sets {
                for &(id, token) in &set.q {
                    let s = &self.spans[id.index()];
                    if s.list_token == token && s.state == SpanState::InUse {
                        assert_eq!(
                            s.home, home,
                            "span class {spc}: span listed in the wrong set"
                        );
                        assert_eq!(s.spanclass as usize, spc);
                    }
                }
            }
        }
    }
}
