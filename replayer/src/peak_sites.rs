//! Who holds the Go model's heap at its peak: the model's HeapInuse at the op where it peaked,
//! split over the call sites (a recorded stack's leaf node, or an imported Go trace's type id)
//! whose objects occupy it.
//!
//! HeapInuse is whole spans. Each span in use at the peak is divided into
//! - the slots of objects the model still holds (the trace's live objects, and those the trace
//!   freed but the model has not yet swept: garbage a GC'd heap carries), each counted for the
//!   call site of the allocation that put it there: its slot's bytes (class size; for a large
//!   object its whole span). A tiny block (16 bytes holding several tiny objects) counts for
//!   the site of its first object, the one at its start;
//! - the rest: free slots and the tail no object fits in ([`PeakSites::free_bytes`]).
//!
//! How: the model is deterministic, so a second run of the same ops stops at the peak's op
//! with a map from each object's address to its site (an address reused after a sweep holds its
//! newest object), then walks the spans in use. One extra run to the peak, plus one to find it
//! when the run that was reported did not track it.

use rustc_hash::FxHashMap;
use serde::Serialize;

use crate::config::Config;
use crate::engine::{Compiled, OpKind, Stepper, Touch, NO_SITE};
use crate::error::ReplayError;
use crate::malloc::Heap;
use crate::mspan::SpanState;

/// The model's HeapInuse at its peak, by call site.
#[derive(Clone, Debug, Default, Serialize, PartialEq, Eq)]
pub struct PeakSites {
    /// HeapInuse after the peak's op (the model's peak is reached at an op's end, or inside
    /// one: `model.peak.heap_inuse` may be a span larger).
    pub heap_inuse_bytes: u64,
    /// The op (0-based, in the compiled stream) after which it was reached first.
    pub op: u64,
    /// Bytes of in-use spans no object occupies (free slots, span tails).
    pub free_bytes: u64,
    /// Bytes of objects whose allocation had no call site.
    pub no_site_bytes: u64,
    /// Per call site with bytes, largest first: [site, bytes, objects].
    pub sites: Vec<[u64; 3]>,
}

/// Splits the model's peak HeapInuse over call sites; `None` when the compiled trace has none.
/// `peak_op` is the run's [`crate::engine::RunStats::peak_heap_inuse_op`] when it tracked it.
pub fn attribute(
    cfg: &Config,
    compiled: &Compiled,
    peak_op: Option<usize>,
) -> Result<Option<PeakSites>, ReplayError> {
    if compiled.sites.len() != compiled.ops.len() || compiled.ops.is_empty() {
        return Ok(None);
    }
    let peak_op = match peak_op {
        Some(op) => op,
        None => {
            let mut heap = Heap::new(cfg)?;
            let run = crate::engine::run_touching(&mut heap, compiled, Touch::None)?;
            run.peak_heap_inuse_op.unwrap_or(0)
        }
    };
    let mut heap = Heap::new(cfg)?;
    let mut st = Stepper::new(compiled.slots, Touch::None);
    let mut site_of: FxHashMap<u64, u32> = FxHashMap::default();
    for (i, op) in compiled.ops.iter().enumerate().take(peak_op + 1) {
        st.step(&mut heap, i, op, compiled.time_of(i))?;
        if op.kind != OpKind::Free {
            site_of.insert(st.slots[op.slot as usize].addr, compiled.sites[i]);
        }
    }
    Ok(Some(walk(&heap, &site_of, peak_op)))
}

/// Divides the spans in use now among the objects in them.
fn walk(heap: &Heap, site_of: &FxHashMap<u64, u32>, op: usize) -> PeakSites {
    let mh = &heap.mheap;
    let mut by_site: FxHashMap<u32, (u64, u64)> = FxHashMap::default();
    let mut out = PeakSites {
        heap_inuse_bytes: mh.stats.heap_inuse_bytes,
        op: op as u64,
        ..PeakSites::default()
    };
    for id in mh.in_use_spans() {
        let s = mh.span(id);
        if s.state != SpanState::InUse {
            continue;
        }
        let span_bytes = s.npages as u64 * mh.page_bytes;
        let mut held = 0;
        for i in 0..s.nelems {
            if !s.is_allocated(i) {
                continue;
            }
            let bytes = if s.is_large() {
                span_bytes
            } else {
                s.elem_bytes()
            };
            held += bytes;
            match site_of.get(&s.object_addr(i)) {
                Some(&site) if site != NO_SITE => {
                    let e = by_site.entry(site).or_default();
                    e.0 += bytes;
                    e.1 += 1;
                }
                _ => out.no_site_bytes += bytes,
            }
        }
        out.free_bytes += span_bytes - held.min(span_bytes);
    }
    let mut sites: Vec<[u64; 3]> = by_site
        .into_iter()
        .map(|(site, (bytes, objects))| [site as u64, bytes, objects])
        .collect();
    sites.sort_unstable_by(|a, b| b[1].cmp(&a[1]).then(a[0].cmp(&b[0])));
    out.sites = sites;
    out
}
