//! The measured replay of the Go model: its runs (one thread, or one OS thread per recorded
//! thread around one locked heap) and the name of the path each call took ([`GoPath`]; see
//! the parent module's comment for how it is found).

use std::sync::Mutex;
use std::time::Instant;

use super::clock::CycleClock;
use super::native::{rss_baseline, rss_bytes, Measure};
use super::perf::{Counters, PhaseCounters};
use super::threaded::{self, Plan};
use super::{affinity::pin_nth, Latencies, OneRun, Phases, TimelinePoint};
use crate::config::Config;
use crate::engine::{Compiled, Op, OpKind, RunStats, Stepper};
use crate::error::ReplayError;
use crate::malloc::Heap;
use crate::sizeclass::Placement;

/// The path a call through the Go model took (latency group "path"), from the cheapest to the
/// costliest.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GoPath {
    /// A tiny object into the current block, or a new block from the cached span.
    TinyFast,
    /// `nextFreeFast` (or `nextFreeIndex`) on the cached span.
    SpanFast,
    /// The cached span was full: `refill` from the mcentral.
    McentralRefill,
    /// The mcentral had none: a span from the page heap.
    PageHeapSpan,
    /// A large object (its own span).
    Large,
    /// GC work: a cycle started or ended, or spans were swept.
    GcSweep,
    /// A free.
    Free,
}

impl GoPath {
    /// Every path, in the order of [`GoPath::NAMES`].
    pub const ALL: [GoPath; 7] = [
        GoPath::TinyFast,
        GoPath::SpanFast,
        GoPath::McentralRefill,
        GoPath::PageHeapSpan,
        GoPath::Large,
        GoPath::GcSweep,
        GoPath::Free,
    ];
    /// The paths' names in reports, indexed by `GoPath as usize`.
    pub const NAMES: [&'static str; 7] = [
        "tiny_fast",
        "span_fast",
        "mcentral_refill",
        "page_heap_span",
        "large",
        "gc_sweep",
        "free",
    ];

    pub fn name(self) -> &'static str {
        Self::NAMES[self as usize]
    }
}

/// The model counters that name a path (see the module comment).
#[derive(Clone, Copy, PartialEq, Eq)]
struct Probe {
    refused: u64,
    gc: usize,
    marking: bool,
    swept: u64,
    refills: u64,
    span_allocs: u64,
    large: u64,
}

impl Probe {
    #[inline(always)]
    fn read(h: &Heap) -> Probe {
        Probe {
            refused: h.refused_allocs,
            gc: h.gc.cycles.len(),
            marking: h.gc.marking,
            swept: h.mheap.sweep.total_spans_swept,
            refills: h.mheap.refill_count,
            span_allocs: h.mheap.span_alloc_count,
            large: h.mheap.stats.large_alloc_count,
        }
    }

    /// The path `op` took between `self` and `after`: the costliest whose counter moved. None
    /// for a zero-size allocation (`zerobase`, no path) and a failed one (malloc.rs `refuse`).
    #[inline(always)]
    fn path(&self, after: &Probe, op: &Op, heap: &Heap, tiny_block_bytes: u64) -> Option<GoPath> {
        if op.kind == OpKind::Free {
            return Some(GoPath::Free);
        }
        if self.refused != after.refused {
            return None;
        }
        if self.gc != after.gc || self.marking != after.marking || self.swept != after.swept {
            return Some(GoPath::GcSweep);
        }
        if self.large != after.large {
            return Some(GoPath::Large);
        }
        if self.span_allocs != after.span_allocs {
            return Some(GoPath::PageHeapSpan);
        }
        if self.refills != after.refills {
            return Some(GoPath::McentralRefill);
        }
        let classes = &heap.mheap.classes;
        match classes.place(op.size_bytes, op.noscan, tiny_block_bytes) {
            Placement::Zero => None,
            Placement::Tiny => Some(GoPath::TinyFast),
            Placement::Small { .. } | Placement::Large => Some(GoPath::SpanFast),
        }
    }
}

fn go_point(op: u64, heap: &Heap, rss0: u64) -> TimelinePoint {
    let st = &heap.mheap.stats;
    TimelinePoint {
        op,
        heap_alloc: Some(st.heap_alloc_bytes),
        heap_inuse: Some(st.heap_inuse_bytes),
        heap_sys: Some(st.heap_sys_bytes),
        num_gc: Some(heap.gc.cycles.len() as u64),
        rss_bytes: rss_bytes().saturating_sub(rss0),
    }
}

/// One single-thread run of the Go model.
pub(super) fn go_run(
    cfg: &Config,
    compiled: &Compiled,
    m: &Measure,
    clock: &CycleClock,
) -> Result<(OneRun, Heap, RunStats), ReplayError> {
    pin_nth(&m.pin, 0).map_err(ReplayError::Config)?;
    let mut heap = Heap::new(cfg)?;
    heap.set_gc_counters(Some(PhaseCounters::open()));
    let tiny = cfg.tiny_block_bytes();
    let mut st = Stepper::new(compiled.slots, m.touch);
    let mut latencies = Latencies::new(true);
    let mut timeline = Vec::new();
    let rss0 = rss_baseline();
    let mut counters = Counters::open();
    let warmup_end = (compiled.ops.len() as f64 * m.warmup_fraction) as usize;
    let snap_start = counters.snapshot();
    let mut snap_warm = None;
    let start = Instant::now();
    for (i, op) in compiled.ops.iter().enumerate() {
        if i == warmup_end {
            snap_warm = Some(counters.snapshot());
        }
        if m.time_calls {
            let before = Probe::read(&heap);
            let t0 = clock.start();
            st.step(&mut heap, i, op, compiled.time_of(i))?;
            let ns = clock.elapsed_ns(t0, clock.stop());
            let path = before.path(&Probe::read(&heap), op, &heap, tiny);
            latencies.record(op.call, op.size_bytes, path, ns);
        } else {
            st.step(&mut heap, i, op, compiled.time_of(i))?;
        }
        if m.timeline_every > 0 && (i as u64).is_multiple_of(m.timeline_every) {
            timeline.push(go_point(i as u64, &heap, rss0));
        }
    }
    let elapsed_ns = start.elapsed().as_nanos() as u64;
    let snap_end = counters.snapshot();
    let peak_end = rss_bytes().saturating_sub(rss0);
    let mut phases = Phases::new();
    phases.insert("total".into(), snap_end.since(&snap_start));
    if let Some(w) = &snap_warm {
        phases.insert("warmup".into(), w.since(&snap_start));
        phases.insert("steady".into(), snap_end.since(w));
    }
    if let Some(g) = heap.set_gc_counters(None) {
        phases.insert("gc".into(), g.total());
    }
    let peak_rss_bytes = timeline
        .iter()
        .map(|p| p.rss_bytes)
        .fold(peak_end, u64::max);
    let stats = RunStats {
        peak_heap_inuse_op: None,
        peak_heap_alloc_bytes: st.peak_heap_alloc_bytes,
        elapsed_ns,
        ops: compiled.ops.len() as u64,
    };
    let one = OneRun {
        elapsed_ns,
        peak_rss_bytes,
        failed_allocs: heap.refused_allocs,
        counters: phases,
        timeline,
        latencies,
    };
    Ok((one, heap, stats))
}

/// One multithreaded run of the Go model (see the module comment for the locking).
pub(super) fn go_run_threaded(
    cfg: &Config,
    compiled: &Compiled,
    plan: &Plan,
    m: &Measure,
    clock: &CycleClock,
) -> Result<(OneRun, Heap, RunStats), ReplayError> {
    let mut heap = Heap::new(cfg)?;
    heap.set_gc_counters(Some(PhaseCounters::open()));
    let tiny = cfg.tiny_block_bytes();
    let shared = Mutex::new((heap, Stepper::new(compiled.slots, m.touch)));
    let failed: Mutex<Option<ReplayError>> = Mutex::new(None);
    let rss0 = rss_baseline();
    let mut counters = Counters::open();
    let snap_start = counters.snapshot();
    let start = Instant::now();
    let per_thread = threaded::run(
        plan,
        &compiled.ops,
        |n| {
            pin_nth(&m.pin, n)
                .map(|()| Latencies::new(true))
                .map_err(ReplayError::Config)
        },
        |latencies, step, op| {
            let t0 = clock.start();
            let mut g = shared.lock().expect("a replay thread panicked");
            let (heap, st) = &mut *g;
            let before = Probe::read(heap);
            // After a failure the remaining ops only pass their gates, so no thread waits
            // forever.
            let ok = failed.lock().expect("lock").is_none();
            if ok {
                if let Err(e) = st.step(
                    heap,
                    step.op as usize,
                    op,
                    compiled.time_of(step.op as usize),
                ) {
                    failed.lock().expect("lock").get_or_insert(e);
                }
            }
            let path = before.path(&Probe::read(heap), op, heap, tiny);
            drop(g);
            if m.time_calls {
                let ns = clock.elapsed_ns(t0, clock.stop());
                latencies.record(op.call, op.size_bytes, path, ns);
            }
        },
    );
    let elapsed_ns = start.elapsed().as_nanos() as u64;
    let snap_end = counters.snapshot();
    let peak_rss_bytes = rss_bytes().saturating_sub(rss0);
    if let Some(e) = failed.into_inner().expect("lock") {
        return Err(e);
    }
    let per_thread = per_thread?;
    let (mut heap, st) = shared.into_inner().expect("lock");
    let mut latencies = Latencies::new(true);
    for t in &per_thread {
        latencies.merge(t);
    }
    let mut phases = Phases::new();
    phases.insert("total".into(), snap_end.since(&snap_start));
    if let Some(g) = heap.set_gc_counters(None) {
        phases.insert("gc".into(), g.total());
    }
    let timeline = vec![go_point(compiled.ops.len() as u64, &heap, rss0)];
    let stats = RunStats {
        peak_heap_inuse_op: None,
        peak_heap_alloc_bytes: st.peak_heap_alloc_bytes,
        elapsed_ns,
        ops: compiled.ops.len() as u64,
    };
    let one = OneRun {
        elapsed_ns,
        peak_rss_bytes,
        failed_allocs: heap.refused_allocs,
        counters: phases,
        timeline,
        latencies,
    };
    Ok((one, heap, stats))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn path_names_follow_the_enum() {
        for (i, p) in GoPath::ALL.iter().enumerate() {
            assert_eq!(*p as usize, i);
        }
        assert_eq!(GoPath::Free.name(), "free");
        assert_eq!(GoPath::McentralRefill.name(), "mcentral_refill");
    }
}
