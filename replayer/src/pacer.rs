//! GC pacing: models `gcControllerState` (mgcpacer.go): the heap goal from GOGC and
//! GOMEMLIMIT, and the trigger.
//!
//! - GOGC goal = heapMarked + (heapMarked + stacks + globals) * GOGC / 100, at least
//!   `heapMinimum` = 4 MiB * GOGC / 100 (`commit`).
//! - GOMEMLIMIT goal = limit - (non-heap memory + overage), minus headroom max(3 %, 1 MiB), at
//!   least heapMarked (`memoryLimitHeapGoal`); the smaller goal wins.
//! - The goal is raised to `sweepDistMinTrigger` (heapLive + 1 MiB when the cycle's sweep is not
//!   done at commit) and to `triggered + 64 KiB` (`minRunway`).
//! - Trigger = goal - runway, clamped to [heapMarked + 45/64 (goal - heapMarked),
//!   heapMarked + 61/64 (goal - heapMarked)], with the upper bound raised to goal - 4 MiB for big
//!   heaps (`trigger`).
//!
//! - With a memory limit, the GC CPU limiter is modelled as a floor: a cycle is not triggered
//!   before heapMarked + max(64 KiB, cons_mark * scan work) (no death spiral near the limit).
//!
//! The runway (`commit`) is Go's: cons_mark * (1 - 0.25) / 0.25 * (last heap scan + stacks +
//! globals), where cons/mark is the ratio of bytes allocated to scan work during a mark. Where it
//! comes from depends on the trace:
//! - with timestamps (a recorded trace, or a CSV with `ts_ns`), the mark phase lasts a time
//!   (mgc.rs) and cons/mark is measured at its end as Go's `endCycle` measures it: bytes
//!   allocated during the mark * (0.25 + idle utilization) / (scan work * 0.75), and the value
//!   used is the largest of this cycle's and the last four (`observe_mark`);
//! - without (all times zero), the ratio is the configured `cons_mark` (documented choice: no
//!   clock, no measurement), which also sets the mark's length in bytes (mgc.rs).

/// `defaultHeapMinimum` at GOGC=100.
pub const DEFAULT_HEAP_MINIMUM_BYTES: u64 = 4 << 20;
const TRIGGER_RATIO_DEN: u64 = 64;
const MIN_TRIGGER_RATIO_NUM: u64 = 45;
const MAX_TRIGGER_RATIO_NUM: u64 = 61;
const MIN_RUNWAY_BYTES: u64 = 64 << 10;
/// `gcGoalUtilization`: the share of CPU the background mark workers take during a mark.
pub(crate) const GC_GOAL_UTILIZATION: f64 = 0.25;

#[derive(Clone, Debug)]
pub struct Pacer {
    /// GOGC; negative = off.
    pub gogc: i32,
    /// GOMEMLIMIT in bytes, if set.
    pub memory_limit_bytes: Option<u64>,
    /// Bytes of goroutine stacks the GC scans (a constant input).
    pub stacks_bytes: u64,
    /// Bytes of globals the GC scans (a constant input).
    pub globals_bytes: u64,
    /// Mapped memory outside the heap (stacks, runtime structures), for the memory-limit goal.
    pub non_heap_bytes: u64,
    /// Fixed cons/mark ratio (see the module comment).
    pub cons_mark: f64,
    /// Share of CPU idle Ps give to marking (mgc.rs; 0 with no idle P).
    pub idle_mark_utilization: f64,
    /// Scan-work bytes a marked object costs besides its scanned bytes (mgc.rs).
    pub mark_object_cost_bytes: u64,
    /// Bytes the program allocates during any mark phase besides the scan-work share: the
    /// mark's fixed costs (phase changes, worker start-up) in allocation terms (mgc.rs).
    pub mark_fixed_bytes: u64,
    /// The mark is timed (the trace has timestamps): `cons_mark` is measured (`observe_mark`).
    pub timed: bool,
    /// Timed mark: the cost model (config.rs).
    pub mark_latency_ns: u64,
    pub mark_latencies_ns: Vec<u64>,
    pub mark_ns_per_object: f64,
    pub mark_ns_per_scan_byte: f64,
    pub mark_ns_per_root_byte: f64,
    /// Share of the marking CPU done by assists (config.rs).
    pub mark_assist_share: f64,
    /// GOMAXPROCS (the Ps the mark workers' share is taken from).
    pub procs: usize,
    /// The last four measured cons/mark values (`lastConsMark`).
    cons_mark_history: [f64; 4],
    /// Live heap after the last mark (`heapMarked`).
    pub heap_marked_bytes: u64,
    /// Scan work of the last mark (`lastHeapScan`; the untimed mark adds its per-object cost).
    pub last_heap_scan_bytes: u64,
    /// heapLive when the last cycle started (`triggered`), `u64::MAX` before the first.
    triggered_bytes: u64,
    sweep_dist_min_trigger_bytes: u64,
    gc_percent_goal_bytes: u64,
    runway_bytes: u64,
}

impl Pacer {
    pub fn new(
        gogc: i32,
        memory_limit_bytes: Option<u64>,
        stacks_bytes: u64,
        globals_bytes: u64,
    ) -> Pacer {
        let mut p = Pacer {
            gogc,
            memory_limit_bytes,
            stacks_bytes,
            globals_bytes,
            non_heap_bytes: stacks_bytes + globals_bytes,
            cons_mark: 0.1,
            idle_mark_utilization: 0.5,
            mark_object_cost_bytes: 64,
            mark_fixed_bytes: 0,
            timed: false,
            mark_latency_ns: 0,
            mark_latencies_ns: Vec::new(),
            mark_ns_per_object: 0.0,
            mark_ns_per_scan_byte: 0.0,
            mark_ns_per_root_byte: 0.0,
            mark_assist_share: 0.0,
            procs: 1,
            cons_mark_history: [0.0; 4],
            heap_marked_bytes: 0,
            last_heap_scan_bytes: 0,
            triggered_bytes: u64::MAX,
            sweep_dist_min_trigger_bytes: 0,
            gc_percent_goal_bytes: u64::MAX,
            runway_bytes: 0,
        };
        p.commit(true, 0);
        p
    }

    /// True when a GC can ever start.
    pub fn enabled(&self) -> bool {
        self.gogc >= 0 || self.memory_limit_bytes.is_some()
    }

    /// `heapMinimum`.
    pub fn heap_minimum_bytes(&self) -> u64 {
        if self.gogc < 0 {
            0
        } else {
            DEFAULT_HEAP_MINIMUM_BYTES * self.gogc as u64 / 100
        }
    }

    /// `commit`: recomputes the GOGC goal and the runway after a mark (or at start).
    pub fn commit(&mut self, sweep_done: bool, heap_live_bytes: u64) {
        self.sweep_dist_min_trigger_bytes = if sweep_done {
            0
        } else {
            heap_live_bytes + crate::sweep::SWEEP_MIN_HEAP_DISTANCE_BYTES
        };
        self.gc_percent_goal_bytes = if self.gogc >= 0 {
            let g = self.heap_marked_bytes
                + (self.heap_marked_bytes + self.stacks_bytes + self.globals_bytes)
                    * self.gogc as u64
                    / 100;
            g.max(self.heap_minimum_bytes())
        } else {
            u64::MAX
        };
        let scan = self.last_heap_scan_bytes + self.stacks_bytes + self.globals_bytes;
        if self.timed {
            self.runway_bytes = (self.cons_mark * (1.0 - GC_GOAL_UTILIZATION) / GC_GOAL_UTILIZATION
                * scan as f64) as u64;
            return;
        }
        // Go's runway is its estimate of allocation during the next mark phase at 25 %
        // utilization; the mark phase itself (mgc.rs) also gets the idle Ps' share.
        self.runway_bytes = ((self.mark_fixed_bytes as f64
            * (GC_GOAL_UTILIZATION + self.idle_mark_utilization)
            / GC_GOAL_UTILIZATION)
            + self.cons_mark * (1.0 - GC_GOAL_UTILIZATION) / GC_GOAL_UTILIZATION * scan as f64)
            as u64;
    }

    /// `heapGoalInternal`: the goal and the minimum trigger. `heap_free`, `heap_alloc` and
    /// `heap_inuse` feed the memory-limit goal.
    pub fn heap_goal(&self, heap: &HeapSizes) -> (u64, u64) {
        let mut goal = self.gc_percent_goal_bytes;
        let mut min_trigger = 0;
        let limit_goal = self.memory_limit_goal(heap);
        if limit_goal < goal {
            goal = limit_goal;
        } else {
            let sweep_dist = self.sweep_dist_min_trigger_bytes;
            if sweep_dist > goal {
                goal = sweep_dist;
            }
            min_trigger = sweep_dist;
            if self.triggered_bytes != u64::MAX && goal < self.triggered_bytes + MIN_RUNWAY_BYTES {
                goal = self.triggered_bytes + MIN_RUNWAY_BYTES;
            }
        }
        (goal, min_trigger)
    }

    fn memory_limit_goal(&self, heap: &HeapSizes) -> u64 {
        let Some(limit) = self.memory_limit_bytes else {
            return u64::MAX;
        };
        let mapped_ready = heap.inuse + heap.free + self.non_heap_bytes;
        let non_heap = mapped_ready.saturating_sub(heap.free + heap.alloc);
        let overage = mapped_ready.saturating_sub(limit);
        if non_heap + overage >= limit {
            return self.heap_marked_bytes;
        }
        let mut goal = limit - (non_heap + overage);
        let headroom = (goal / 100 * 3).max(1 << 20);
        goal = if goal < headroom || goal - headroom < headroom {
            headroom
        } else {
            goal - headroom
        };
        goal.max(self.heap_marked_bytes)
    }

    /// `trigger`: the heapLive at which the next cycle starts, and the goal.
    pub fn trigger(&self, heap: &HeapSizes) -> (u64, u64) {
        let (goal, min_trigger) = self.heap_goal(heap);
        let marked = self.heap_marked_bytes;
        if self.memory_limit_bytes.is_some() {
            // The GC CPU limiter (mgclimit.go) caps GC at half the CPU: near the limit the heap
            // grows past the goal rather than collecting after every span. In allocated bytes:
            // at least one mark's worth of mutator allocation between cycles.
            let scan = self.last_heap_scan_bytes + self.stacks_bytes + self.globals_bytes;
            let floor = marked + MIN_RUNWAY_BYTES.max((self.cons_mark * scan as f64) as u64);
            if goal < floor {
                return (floor, floor);
            }
        }
        if marked >= goal {
            return (goal, goal);
        }
        let mut min_trigger = min_trigger.max(marked);
        let lower = (goal - marked) / TRIGGER_RATIO_DEN * MIN_TRIGGER_RATIO_NUM + marked;
        min_trigger = min_trigger.max(lower);
        let mut max_trigger = (goal - marked) / TRIGGER_RATIO_DEN * MAX_TRIGGER_RATIO_NUM + marked;
        if goal > DEFAULT_HEAP_MINIMUM_BYTES && goal - DEFAULT_HEAP_MINIMUM_BYTES > max_trigger {
            max_trigger = goal - DEFAULT_HEAP_MINIMUM_BYTES;
        }
        max_trigger = max_trigger.max(min_trigger);
        let trigger = if self.runway_bytes > goal {
            min_trigger
        } else {
            goal - self.runway_bytes
        };
        (trigger.clamp(min_trigger, max_trigger), goal)
    }

    /// Timed mark: the CPU time marking takes, for `objects` marked objects of which
    /// `heap_scan_bytes` are pointer-holding bytes to scan, plus stacks and globals.
    pub fn mark_cpu_ns(&self, objects: u64, heap_scan_bytes: u64) -> f64 {
        objects as f64 * self.mark_ns_per_object
            + heap_scan_bytes as f64 * self.mark_ns_per_scan_byte
            + (self.stacks_bytes + self.globals_bytes) as f64 * self.mark_ns_per_root_byte
    }

    /// Ps marking during a mark phase: the dedicated/fractional workers' 25 % of every P plus
    /// the idle Ps' share.
    pub fn mark_workers(&self) -> f64 {
        self.procs as f64 * (GC_GOAL_UTILIZATION + self.idle_mark_utilization)
    }

    /// Timed mark: how long mark phase number `cycle` with `cpu_ns` of marking work lasts.
    pub fn mark_wall_ns(&self, cpu_ns: f64, cycle: u64) -> u64 {
        let latency = if self.mark_latencies_ns.is_empty() {
            self.mark_latency_ns
        } else {
            // splitmix64 of the cycle number: a fixed order that does not follow the list's.
            let mut z = cycle.wrapping_add(1).wrapping_mul(0x9E37_79B9_7F4A_7C15);
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^= z >> 31;
            self.mark_latencies_ns[(z % self.mark_latencies_ns.len() as u64) as usize]
        };
        latency + (cpu_ns / self.mark_workers().max(1e-9)) as u64
    }

    /// Timed mark, at its end (`endCycle`): measures cons/mark from a mark that lasted
    /// `wall_ns`, used `cpu_ns` of marking work, did `scan_work_bytes` of scan work (heap scan,
    /// stacks, globals) while the program allocated `allocated_bytes`. As in Go, assists
    /// (`mark_assist_share` of the work) add to the utilization, and the idle Ps' part of the
    /// rest is the idle utilization.
    pub fn observe_mark(
        &mut self,
        allocated_bytes: u64,
        wall_ns: u64,
        cpu_ns: f64,
        scan_work_bytes: u64,
    ) {
        let workers = self.mark_workers().max(1e-9);
        let capacity_ns = self.procs as f64 * wall_ns.max(1) as f64;
        let assist_ns = cpu_ns * self.mark_assist_share;
        let idle_ns =
            (cpu_ns - assist_ns) * (self.idle_mark_utilization * self.procs as f64) / workers;
        let utilization = (GC_GOAL_UTILIZATION + assist_ns / capacity_ns).min(0.95);
        let idle_utilization = idle_ns / capacity_ns;
        let current = allocated_bytes as f64 * (utilization + idle_utilization)
            / (scan_work_bytes.max(1) as f64 * (1.0 - utilization));
        self.cons_mark = self
            .cons_mark_history
            .iter()
            .copied()
            .fold(current, f64::max);
        self.cons_mark_history.rotate_left(1);
        self.cons_mark_history[3] = current;
    }

    /// Called when a cycle starts (`startCycle`).
    pub fn start_cycle(&mut self, heap_live_bytes: u64) {
        self.triggered_bytes = heap_live_bytes;
    }
}

/// Heap sizes the memory-limit goal needs.
#[derive(Clone, Copy, Debug, Default)]
pub struct HeapSizes {
    pub inuse: u64,
    pub free: u64,
    pub alloc: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_goal_is_the_heap_minimum() {
        let p = Pacer::new(100, None, 0, 0);
        let (trigger, goal) = p.trigger(&HeapSizes::default());
        assert_eq!(goal, 4 << 20);
        assert_eq!(trigger, (4 << 20) / 64 * 61);
        let p = Pacer::new(50, None, 0, 0);
        assert_eq!(p.trigger(&HeapSizes::default()).1, 2 << 20);
    }

    #[test]
    fn goal_follows_marked_heap() {
        let mut p = Pacer::new(100, None, 8192, 8192);
        p.heap_marked_bytes = 10 << 20;
        p.commit(true, 10 << 20);
        let (trigger, goal) = p.trigger(&HeapSizes::default());
        assert_eq!(goal, (10 << 20) + (10 << 20) + 16384);
        assert!(trigger > (10 << 20) && trigger < goal);
    }

    #[test]
    fn memory_limit_lowers_the_goal() {
        let mut p = Pacer::new(100, Some(64 << 20), 0, 0);
        p.heap_marked_bytes = 40 << 20;
        p.commit(true, 40 << 20);
        let h = HeapSizes {
            inuse: 50 << 20,
            free: 0,
            alloc: 50 << 20,
        };
        let (_, goal) = p.trigger(&h);
        assert!((40 << 20..64 << 20).contains(&goal), "{goal}");
        let p = Pacer::new(-1, None, 0, 0);
        assert!(!p.enabled());
    }

    #[test]
    fn cpu_limiter_floor_near_the_memory_limit() {
        // Live heap above what the limit allows: the goal collapses to heapMarked, but the
        // limiter keeps a mark's worth of allocation between cycles.
        let mut p = Pacer::new(-1, Some(16 << 20), 0, 1 << 20);
        p.heap_marked_bytes = 20 << 20;
        p.last_heap_scan_bytes = 20 << 20;
        p.commit(true, 20 << 20);
        let h = HeapSizes {
            inuse: 22 << 20,
            free: 0,
            alloc: 21 << 20,
        };
        let (trigger, goal) = p.trigger(&h);
        assert_eq!(trigger, goal);
        assert_eq!(trigger, (20 << 20) + (0.1 * (21u64 << 20) as f64) as u64);
    }

    #[test]
    fn measured_cons_mark_is_the_largest_of_the_last_five() {
        let mut p = Pacer::new(100, None, 0, 1 << 20);
        p.timed = true;
        p.procs = 2;
        p.idle_mark_utilization = 0.0;
        // 1 MiB allocated during a mark with 1 MiB of scan work: 0.25 / 0.75.
        p.observe_mark(1 << 20, 1_000_000, 0.0, 1 << 20);
        assert!((p.cons_mark - 1.0 / 3.0).abs() < 1e-9);
        // A mark four times longer raises it; four short ones later it is still kept, the
        // fifth lets it go.
        p.observe_mark(4 << 20, 4_000_000, 0.0, 1 << 20);
        assert!((p.cons_mark - 4.0 / 3.0).abs() < 1e-9);
        for _ in 0..4 {
            p.observe_mark(1 << 20, 1_000_000, 0.0, 1 << 20);
            assert!((p.cons_mark - 4.0 / 3.0).abs() < 1e-9);
        }
        p.observe_mark(1 << 20, 1_000_000, 0.0, 1 << 20);
        assert!((p.cons_mark - 1.0 / 3.0).abs() < 1e-9);
        // Runway = cons/mark * 3 * (heap scan + stacks + globals).
        p.commit(true, 0);
        let (trigger, goal) = p.trigger(&HeapSizes::default());
        assert_eq!(goal, 4 << 20);
        assert!(trigger < goal);
    }

    #[test]
    fn assists_raise_the_measured_cons_mark_as_in_go() {
        // 1 ms of marking CPU in a 1 ms mark on 2 Ps; half of it assists: utilization
        // 0.25 + 0.5 / 2 = 0.5, so cons/mark = allocated * 0.5 / (scan * 0.5).
        let mut p = Pacer::new(100, None, 0, 1 << 20);
        p.timed = true;
        p.procs = 2;
        p.idle_mark_utilization = 0.0;
        p.mark_assist_share = 0.5;
        p.observe_mark(1 << 20, 1_000_000, 1_000_000.0, 1 << 20);
        assert!((p.cons_mark - 1.0).abs() < 1e-9, "{}", p.cons_mark);
    }
}
