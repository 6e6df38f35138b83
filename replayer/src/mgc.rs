//! GC cycles: models mgc.go (`gcStart`, the concurrent mark phase, `gcMarkTermination`,
//! `gcSweep`) as far as the heap can see them.
//!
//! A cycle starts when heapLive reaches the pacer's trigger (checked, as in Go, after an mcache
//! refill and after a large allocation):
//! 1. `gcStart`: finish the previous cycle's sweep (`finishsweep_m`);
//! 2. mark: the marked set is what the trace still holds at the start (a snapshot, as Go's
//!    deletion barrier keeps everything reachable at the start), plus every object allocated
//!    while marking runs (allocate-black);
//! 3. the mark phase lasts a time when the trace has timestamps (the timed mark), else an
//!    amount of allocation:
//!    - timed: `mark_latency_ns + cpu / workers`, where cpu = `mark_ns_per_object` per marked
//!      object + `mark_ns_per_scan_byte` per pointer-holding byte + `mark_ns_per_root_byte` per
//!      byte of stacks and globals, and workers = procs * (0.25 + `idle_mark_utilization`).
//!      It ends at the first op at or after that time (`advance_clock`), or when heapLive
//!      reaches 1.1 x the goal (Go's assists finish the work by then: `maxOvershoot`). At its
//!      end cons/mark is measured as Go measures it (pacer.rs `observe_mark`), and it sets the
//!      next trigger's runway: how long marks take and how fast the program allocates decide
//!      how early the next cycle starts, as in Go;
//!    - untimed: while the program allocates `cons_mark * (1-u)/(u+idle) * scanWork` bytes
//!      (u = 0.25; idle = `idle_mark_utilization`; scanWork = scannable marked bytes + stacks +
//!      globals + `mark_object_cost_bytes` per marked object, since marking a pointer-free object
//!      costs time that Go's scan-work counter does not see): the inverse of how Go measures
//!      cons/mark at the end of a cycle. It ends no later than the heap goal;
//! 4. `gcMarkTermination`: heapMarked = marked bytes, heapLive := heapMarked, sweepgen += 2
//!    (every span becomes unswept), every mcache is released (`prepareForSweep`; spans cached
//!    across the cycle are swept then), idle Ps' page caches are flushed, the pacer commits the
//!    next goal and trigger, sweeping and scavenging are paced; the background sweeper and
//!    scavenger then run (when on; see sweep.rs and scavenge.rs).
//!
//! Deliberate differences: the timed mark's length is a cost model, not Go's scheduler (its
//! constants are measured on a real runtime: replayer/FIDELITY.md); without timestamps mark time
//! is measured in bytes allocated, and with `cons_mark = 0` the mark is instantaneous.

use serde::Serialize;

use crate::malloc::Heap;
use crate::mcache::MCache;
use crate::measured::perf::PhaseCounters;
use crate::mspan::SpanState;

/// The GC's own state (Go's `work` and `gcBlackenEnabled`, mgc.go): the mark phase that is
/// running, if any, and the cycles finished. Written only here: `gc_start` opens a mark phase,
/// `gc_mark_termination` closes it and records the cycle.
pub struct Gc {
    /// A mark phase is running (`gcBlackenEnabled`): new objects are allocated black. Read on
    /// every allocation (malloc.rs).
    pub(crate) marking: bool,
    /// heapLive at which the running mark phase ends, bytes.
    mark_end_bytes: u64,
    /// heapLive when the running cycle started, bytes.
    cycle_start_live_bytes: u64,
    /// The op whose allocation started the running cycle.
    cycle_start_event: u64,
    /// Timed mark: when the running mark phase ends on the trace's clock (`u64::MAX` when none
    /// is timed).
    mark_end_ns: u64,
    /// Timed mark: when it started.
    mark_start_ns: u64,
    /// Timed mark: its CPU work, ns, and its scan work (heap scan + stacks + globals), bytes.
    mark_cpu_ns: f64,
    mark_scan_work_bytes: u64,
    /// The cycles finished, in order.
    pub(crate) cycles: Vec<GcCycle>,
    /// Perf counters accumulated over GC work (a measured replay attaches them,
    /// `Heap::set_gc_counters`).
    pub(crate) counters: Option<PhaseCounters>,
}

impl Default for Gc {
    fn default() -> Gc {
        Gc {
            marking: false,
            mark_end_bytes: 0,
            cycle_start_live_bytes: 0,
            cycle_start_event: 0,
            mark_end_ns: u64::MAX,
            mark_start_ns: 0,
            mark_cpu_ns: 0.0,
            mark_scan_work_bytes: 0,
            cycles: Vec::new(),
            counters: None,
        }
    }
}

/// One GC cycle, for reports.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct GcCycle {
    pub n: u64,
    /// Index of the op whose allocation started the cycle.
    pub event: u64,
    /// heapLive when the cycle started (the trigger was reached).
    pub heap_live_before: u64,
    /// heapLive when the mark phase ended.
    pub heap_live_at_mark_end: u64,
    /// How long the mark lasted on the trace's clock (0 for an untimed mark).
    pub mark_ns: u64,
    /// The cons/mark ratio the next trigger is computed with.
    pub cons_mark: f64,
    pub heap_marked: u64,
    /// Heap goal set at the end of the cycle (NextGC).
    pub goal: u64,
    /// The trigger for the next cycle.
    pub trigger: u64,
}

impl Heap {
    /// Moves the model's clock to the trace time of the op about to be replayed (ns since the
    /// recording started) and ends a timed mark phase whose time is up.
    #[inline]
    pub fn advance_clock(&mut self, now_ns: u64, p: usize) {
        self.now_ns = now_ns;
        if now_ns >= self.gc.mark_end_ns {
            self.gc_mark_termination(p);
        }
    }

    /// `gcTrigger{kind: gcTriggerHeap}.test()`, and the end of a running mark phase.
    #[inline]
    pub(crate) fn maybe_gc(&mut self, p: usize) {
        let live = self.mheap.sweep.heap_live_bytes;
        if self.gc.marking {
            if live >= self.gc.mark_end_bytes {
                self.gc_mark_termination(p);
            }
        } else if live >= self.pacer.trigger_bytes() {
            self.gc_start(p);
        }
    }

    /// Runs one whole GC cycle now, with an instantaneous mark (`runtime.GC()` as a test sees
    /// it). A running mark phase is finished first.
    pub fn gc_cycle(&mut self, p: usize) {
        if !self.gc.marking {
            self.gc_start(p);
        }
        if self.gc.marking {
            // A forced cycle does not measure cons/mark (as Go's endCycle for userForced).
            self.gc.mark_end_ns = u64::MAX;
            self.gc_mark_termination(p);
        }
    }

    /// `gcStart` and the mark snapshot.
    #[cold]
    #[inline(never)]
    fn gc_start(&mut self, p: usize) {
        self.stamp_span_log();
        self.gc_counters_enter();
        self.gc_start_work(p);
        self.gc_counters_leave();
        expensive_check!(self.check_invariants());
    }

    fn gc_start_work(&mut self, p: usize) {
        self.mheap.finish_sweep();
        let live = self.mheap.sweep.heap_live_bytes;
        self.pacer.start_cycle(live);
        self.gc.cycle_start_live_bytes = live;
        self.gc.cycle_start_event = self.current_event;
        let mut scan_bytes = 0u64;
        let mut objects = 0u64;
        for s in self.mheap.spans.iter_mut().skip(1) {
            if s.state != SpanState::InUse {
                continue;
            }
            s.mark();
            let n = s.count_marked() as u64;
            objects += n;
            if !s.noscan() {
                scan_bytes += n * s.elem_bytes;
            }
        }
        let gc = &mut self.gc;
        gc.marking = true;
        if self.now_ns > 0 {
            // The timed mark.
            self.pacer.timed = true;
            let cpu = self.pacer.mark_cpu_ns(objects, scan_bytes);
            gc.mark_cpu_ns = cpu;
            gc.mark_scan_work_bytes = self.pacer.timed_scan_work_bytes(scan_bytes);
            gc.mark_start_ns = self.now_ns;
            let cycle = gc.cycles.len() as u64;
            gc.mark_end_ns = self
                .now_ns
                .saturating_add(self.pacer.mark_wall_ns(cpu, cycle));
            gc.mark_end_bytes = self.pacer.overshoot_bytes(live);
            return;
        }
        let window = self.pacer.untimed_mark_bytes(objects, scan_bytes);
        gc.mark_end_bytes = (live + window).min(self.pacer.goal_bytes().max(live));
        if window == 0 || gc.mark_end_bytes <= live {
            self.gc_mark_termination(p);
        }
    }

    /// `gcMarkTermination` and the start of the sweep phase.
    #[cold]
    #[inline(never)]
    fn gc_mark_termination(&mut self, p: usize) {
        self.stamp_span_log();
        self.gc_counters_enter();
        self.gc_mark_termination_work(p);
        self.gc_counters_leave();
    }

    /// The perf-counter hook of a measured replay: the GC phase's counters are accumulated
    /// over the model's GC work (cycle start with its mark snapshot, mark termination with the
    /// sweep, scavenge and pacing that follow). Nothing happens when no counters are attached.
    fn gc_counters_enter(&mut self) {
        if let Some(c) = &mut self.gc.counters {
            c.enter();
        }
    }

    fn gc_counters_leave(&mut self) {
        if let Some(c) = &mut self.gc.counters {
            c.leave();
        }
    }

    fn gc_mark_termination_work(&mut self, p: usize) {
        self.gc.marking = false;
        let timed = self.pacer.timed;
        let live_at_end = self.mheap.sweep.heap_live_bytes;
        let mut mark_ns = 0;
        if self.gc.mark_end_ns != u64::MAX {
            // (Threads' clocks may disagree by a little: never a negative time.)
            mark_ns = self.now_ns.saturating_sub(self.gc.mark_start_ns);
            self.pacer.observe_mark(
                live_at_end.saturating_sub(self.gc.cycle_start_live_bytes),
                mark_ns,
                self.gc.mark_cpu_ns,
                self.gc.mark_scan_work_bytes,
            );
            self.gc.mark_end_ns = u64::MAX;
        }
        // Go's lastHeapScan is the scannable bytes marked; the untimed mark adds its per-object
        // cost.
        let object_cost = if timed {
            0
        } else {
            self.pacer.costs.mark_object_cost_bytes
        };
        let mut marked = 0u64;
        let mut scan = 0u64;
        for s in self.mheap.spans.iter().skip(1) {
            if s.state != SpanState::InUse {
                continue;
            }
            let n = s.count_marked() as u64;
            marked += n * s.elem_bytes;
            scan += n * object_cost;
            if !s.noscan() {
                scan += n * s.elem_bytes;
            }
        }
        let last_goal = self.pacer.goal_bytes();
        self.pacer.reset_live(marked, scan);
        self.mheap.sweep.heap_live_bytes = marked;
        let last_heap_inuse = self.mheap.stats.heap_inuse_bytes;
        self.mheap.begin_sweep_phase();
        for q in 0..self.mcaches.len() {
            let mut mc = std::mem::replace(&mut self.mcaches[q], MCache::new(0));
            self.mheap.release_all(&mut mc);
            self.mcaches[q] = mc;
            if q != p {
                self.mheap.flush_page_cache(q);
            }
        }
        self.pacer.commit(false, self.mheap.sweep.heap_live_bytes);
        self.update_trigger();
        self.mheap.pace_sweeper(self.pacer.trigger_bytes());
        self.mheap.pace_scavenger(
            self.pacer.memory_limit_bytes,
            self.pacer.non_heap_bytes,
            self.pacer.goal_bytes(),
            last_goal,
            last_heap_inuse,
        );
        if self.bg_sweep {
            self.mheap.finish_sweep();
        }
        self.mheap.scavenge_background(self.pacer.non_heap_bytes);
        expensive_check!(self.check_invariants());
        let gc = &mut self.gc;
        gc.cycles.push(GcCycle {
            n: gc.cycles.len() as u64 + 1,
            event: gc.cycle_start_event,
            heap_live_before: gc.cycle_start_live_bytes,
            heap_live_at_mark_end: live_at_end,
            mark_ns,
            cons_mark: self.pacer.cons_mark,
            heap_marked: marked,
            goal: self.pacer.goal_bytes(),
            trigger: self.pacer.trigger_bytes(),
        });
    }
}
