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

use serde::{Deserialize, Serialize};

/// `defaultHeapMinimum` at GOGC=100.
pub const DEFAULT_HEAP_MINIMUM_BYTES: u64 = 4 << 20;
const TRIGGER_RATIO_DEN: u64 = 64;
const MIN_TRIGGER_RATIO_NUM: u64 = 45;
const MAX_TRIGGER_RATIO_NUM: u64 = 61;
const MIN_RUNWAY_BYTES: u64 = 64 << 10;
/// `gcGoalUtilization`: the share of CPU the background mark workers take during a mark.
pub(crate) const GC_GOAL_UTILIZATION: f64 = 0.25;
/// How far past the goal a mark may run before assists have finished it (`maxOvershoot`).
const MAX_OVERSHOOT: f64 = 1.1;

/// What a mark phase costs and how long it lasts: configuration keys (flat in the TOML file,
/// config.rs), kept by the pacer as given. The defaults are what the fidelity tests'
/// calibration measured with Go 1.27 (replayer/FIDELITY.md).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct MarkCosts {
    /// Traces without timestamps only (with them, the mark is timed and cons/mark is measured
    /// as Go measures it; mgc.rs). Go's cons/mark ratio (bytes allocated per byte of scan work
    /// during a mark), fixed: it sets the trigger's runway and how long a mark phase lasts in
    /// allocated bytes (pacer.rs, mgc.rs). With `mark_object_cost_bytes` and
    /// `mark_fixed_bytes` it fits Go 1.27 on churn workloads at about 2 µs per allocation
    /// (replayer/FIDELITY.md).
    pub cons_mark: f64,
    /// Share of CPU that idle Ps spend on marking during a GC (0 when the program keeps every P
    /// busy; 0.5 fits one busy goroutine on two otherwise idle Ps). The timed mark marks with
    /// `procs * (0.25 + idle_mark_utilization)` Ps.
    pub idle_mark_utilization: f64,
    /// Scan-work bytes one marked object costs beyond its scanned bytes (mgc.rs): marking a
    /// pointer-free object costs time that Go's scan-work counter does not see.
    pub mark_object_cost_bytes: u64,
    /// Bytes allocated during every mark phase regardless of scan work (the mark's fixed
    /// costs, phase changes and worker start-up, in allocation terms; mgc.rs).
    pub mark_fixed_bytes: u64,
    /// Timed mark (traces with timestamps): wall time a mark phase takes beyond its CPU work
    /// (stopping and starting the world, waking idle Ps, the ragged barriers). The defaults
    /// here and below are what the fidelity tests' calibration measured with Go 1.27 on a
    /// quiet 2-vCPU VM (median latency 0.35 ms; the same VM under other load: 6 to 7 ms) on
    /// workloads the comparison itself does not use (replayer/FIDELITY.md). Measure your own
    /// machine the same way when its marks matter (`calibrate_this_machine` prints the keys).
    pub mark_latency_ns: u64,
    /// Timed mark: when not empty, each cycle's latency is one of these (measured) values,
    /// drawn in a fixed pseudo-random order (deterministic), instead of `mark_latency_ns`. On a
    /// machine where Go's marks vary, the spread matters: Go's pacer keeps the largest
    /// cons/mark of the last five cycles.
    pub mark_latencies_ns: Vec<u64>,
    /// Timed mark: CPU to mark one object.
    pub mark_ns_per_object: f64,
    /// Timed mark: CPU per byte of pointer-holding heap objects scanned.
    pub mark_ns_per_scan_byte: f64,
    /// Timed mark: CPU per byte of stacks and globals scanned.
    pub mark_ns_per_root_byte: f64,
    /// Timed mark: the share of marking CPU that allocating goroutines do as assists. Go counts
    /// it in the utilization it measures cons/mark with (`observe_mark`).
    pub mark_assist_share: f64,
}

impl Default for MarkCosts {
    fn default() -> Self {
        MarkCosts {
            cons_mark: 0.1,
            idle_mark_utilization: 0.5,
            mark_object_cost_bytes: 64,
            mark_fixed_bytes: 0,
            mark_latency_ns: 350_000,
            mark_latencies_ns: Vec::new(),
            mark_ns_per_object: 8.5,
            mark_ns_per_scan_byte: 0.8,
            mark_ns_per_root_byte: 0.2,
            mark_assist_share: 0.3,
        }
    }
}

impl MarkCosts {
    /// Checks the ranges; the message names the key.
    pub fn validate(&self) -> Result<(), String> {
        if !(self.cons_mark.is_finite() && self.cons_mark >= 0.0) {
            return Err("cons_mark must be a non-negative number".into());
        }
        if !(0.0..=1.0).contains(&self.idle_mark_utilization) {
            return Err("idle_mark_utilization must be between 0 and 1".into());
        }
        if !(0.0..=1.0).contains(&self.mark_assist_share) {
            return Err("mark_assist_share must be between 0 and 1".into());
        }
        for (name, v) in [
            ("mark_ns_per_object", self.mark_ns_per_object),
            ("mark_ns_per_scan_byte", self.mark_ns_per_scan_byte),
            ("mark_ns_per_root_byte", self.mark_ns_per_root_byte),
        ] {
            if !(v.is_finite() && (0.0..=1e6).contains(&v)) {
                return Err(format!("{name} must be a number of nanoseconds, 0..1e6"));
            }
        }
        Ok(())
    }
}

/// `gcControllerState`: the goal and trigger of the next cycle and what they are computed from.
/// Changed only through its methods: `commit` after each mark (and at start), `update` when the
/// heap's sizes move, `start_cycle`, `observe_mark` at a timed mark's end; mgc.rs writes
/// `heap_marked_bytes` and `last_heap_scan_bytes` at mark termination, as Go's
/// `gcMarkTermination` does.
#[derive(Clone, Debug)]
pub struct Pacer {
    /// GOGC; negative = off.
    pub(crate) gogc: i32,
    /// GOMEMLIMIT in bytes, if set.
    pub(crate) memory_limit_bytes: Option<u64>,
    /// Bytes of goroutine stacks the GC scans (a constant input).
    pub(crate) stacks_bytes: u64,
    /// Bytes of globals the GC scans (a constant input).
    pub(crate) globals_bytes: u64,
    /// Mapped memory outside the heap (stacks, runtime structures), for the memory-limit goal.
    pub(crate) non_heap_bytes: u64,
    /// The mark's cost model, as configured.
    pub(crate) costs: MarkCosts,
    /// GOMAXPROCS (the Ps the mark workers' share is taken from).
    pub(crate) procs: usize,
    /// The cons/mark ratio in use: `costs.cons_mark` until a timed mark measures one
    /// (`observe_mark`, at the end of each timed mark).
    pub(crate) cons_mark: f64,
    /// The mark is timed (the trace has timestamps): `cons_mark` is measured. Set by the first
    /// timed mark (mgc.rs).
    pub(crate) timed: bool,
    /// The last four measured cons/mark values (`lastConsMark`).
    cons_mark_history: [f64; 4],
    /// Live heap after the last mark (`heapMarked`), bytes; set at mark termination.
    pub(crate) heap_marked_bytes: u64,
    /// Scan work of the last mark (`lastHeapScan`), bytes; set at mark termination. The timed
    /// mark counts the pointer-holding bytes marked, as Go does; the untimed mark adds its
    /// per-object cost (`costs.mark_object_cost_bytes`), since its length is measured in scan
    /// work.
    pub(crate) last_heap_scan_bytes: u64,
    /// heapLive when the running cycle started (`triggered`); `u64::MAX` when none runs
    /// (before the first, and from each mark termination on: [`Pacer::reset_live`]).
    triggered_bytes: u64,
    sweep_dist_min_trigger_bytes: u64,
    gc_percent_goal_bytes: u64,
    runway_bytes: u64,
    /// heapLive at which the next cycle starts (`u64::MAX`: never), set by `update`.
    trigger_bytes: u64,
    /// The heap goal (NextGC; 0 when GC is off), set by `update`.
    goal_bytes: u64,
}

impl Pacer {
    pub(crate) fn new(
        gogc: i32,
        memory_limit_bytes: Option<u64>,
        stacks_bytes: u64,
        globals_bytes: u64,
        procs: usize,
        costs: MarkCosts,
    ) -> Pacer {
        let mut p = Pacer {
            gogc,
            memory_limit_bytes,
            stacks_bytes,
            globals_bytes,
            non_heap_bytes: stacks_bytes + globals_bytes,
            cons_mark: costs.cons_mark,
            costs,
            procs,
            timed: false,
            cons_mark_history: [0.0; 4],
            heap_marked_bytes: 0,
            last_heap_scan_bytes: 0,
            triggered_bytes: u64::MAX,
            sweep_dist_min_trigger_bytes: 0,
            gc_percent_goal_bytes: u64::MAX,
            runway_bytes: 0,
            trigger_bytes: u64::MAX,
            goal_bytes: 0,
        };
        p.commit(true, 0);
        p
    }

    /// The heapLive at which the next cycle starts (`u64::MAX`: never).
    #[inline]
    pub fn trigger_bytes(&self) -> u64 {
        self.trigger_bytes
    }

    /// The heap goal (NextGC), bytes; 0 when no GC can start.
    pub fn goal_bytes(&self) -> u64 {
        self.goal_bytes
    }

    /// Recomputes the trigger and goal in force from the heap's sizes (after `commit`).
    pub(crate) fn update(&mut self, heap: &HeapSizes) {
        (self.trigger_bytes, self.goal_bytes) = if self.enabled() {
            self.trigger(heap)
        } else {
            (u64::MAX, 0)
        };
        debug_assert!(
            !self.enabled() || self.trigger_bytes <= self.goal_bytes,
            "trigger {} above goal {}",
            self.trigger_bytes,
            self.goal_bytes
        );
    }

    /// The pacer's invariants (Go throws on the first): with GC on, trigger <= goal and the
    /// live heap of the last mark is within the goal; the measured cons/mark is a finite,
    /// non-negative ratio.
    pub fn check_invariants(&self) {
        if self.enabled() {
            assert!(
                self.trigger_bytes <= self.goal_bytes,
                "trigger {} above goal {}",
                self.trigger_bytes,
                self.goal_bytes
            );
            assert!(
                self.heap_marked_bytes <= self.goal_bytes,
                "heapMarked {} above goal {}",
                self.heap_marked_bytes,
                self.goal_bytes
            );
        } else {
            assert_eq!((self.trigger_bytes, self.goal_bytes), (u64::MAX, 0));
        }
        assert!(self.cons_mark.is_finite() && self.cons_mark >= 0.0);
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
    pub(crate) fn commit(&mut self, sweep_done: bool, heap_live_bytes: u64) {
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
        self.runway_bytes = ((self.costs.mark_fixed_bytes as f64
            * (GC_GOAL_UTILIZATION + self.costs.idle_mark_utilization)
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
    pub(crate) fn mark_cpu_ns(&self, objects: u64, heap_scan_bytes: u64) -> f64 {
        let c = &self.costs;
        objects as f64 * c.mark_ns_per_object
            + heap_scan_bytes as f64 * c.mark_ns_per_scan_byte
            + (self.stacks_bytes + self.globals_bytes) as f64 * c.mark_ns_per_root_byte
    }

    /// Ps marking during a mark phase: the dedicated/fractional workers' 25 % of every P plus
    /// the idle Ps' share.
    pub(crate) fn mark_workers(&self) -> f64 {
        self.procs as f64 * (GC_GOAL_UTILIZATION + self.costs.idle_mark_utilization)
    }

    /// Timed mark: how long mark phase number `cycle` with `cpu_ns` of marking work lasts.
    pub(crate) fn mark_wall_ns(&self, cpu_ns: f64, cycle: u64) -> u64 {
        let latencies = &self.costs.mark_latencies_ns;
        let latency = if latencies.is_empty() {
            self.costs.mark_latency_ns
        } else {
            // splitmix64 of the cycle number: a fixed order that does not follow the list's.
            let mut z = cycle.wrapping_add(1).wrapping_mul(0x9E37_79B9_7F4A_7C15);
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^= z >> 31;
            latencies[(z % latencies.len() as u64) as usize]
        };
        latency + (cpu_ns / self.mark_workers().max(1e-9)) as u64
    }

    /// Timed mark, at its end (`endCycle`): measures cons/mark from a mark that lasted
    /// `wall_ns`, used `cpu_ns` of marking work, did `scan_work_bytes` of scan work (heap scan,
    /// stacks, globals) while the program allocated `allocated_bytes`. As in Go, assists
    /// (`mark_assist_share` of the work) add to the utilization, and the idle Ps' part of the
    /// rest is the idle utilization.
    pub(crate) fn observe_mark(
        &mut self,
        allocated_bytes: u64,
        wall_ns: u64,
        cpu_ns: f64,
        scan_work_bytes: u64,
    ) {
        let workers = self.mark_workers().max(1e-9);
        let capacity_ns = self.procs as f64 * wall_ns.max(1) as f64;
        let assist_ns = cpu_ns * self.costs.mark_assist_share;
        let idle_ns =
            (cpu_ns - assist_ns) * (self.costs.idle_mark_utilization * self.procs as f64) / workers;
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

    /// Untimed mark (no timestamps): the bytes the program allocates while a mark of `objects`
    /// marked objects with `heap_scan_bytes` pointer-holding bytes runs, the inverse of how Go
    /// measures cons/mark: `mark_fixed_bytes + cons_mark * (1-u)/(u+idle) * scan work`, where
    /// scan work counts `mark_object_cost_bytes` per object besides the scanned bytes and roots.
    pub(crate) fn untimed_mark_bytes(&self, objects: u64, heap_scan_bytes: u64) -> u64 {
        let c = &self.costs;
        let scan_work = heap_scan_bytes
            + objects * c.mark_object_cost_bytes
            + self.stacks_bytes
            + self.globals_bytes;
        c.mark_fixed_bytes
            + (self.cons_mark * (1.0 - GC_GOAL_UTILIZATION)
                / (GC_GOAL_UTILIZATION + c.idle_mark_utilization)
                * scan_work as f64) as u64
    }

    /// Timed mark: the scan work it does (heap scan, stacks, globals), bytes.
    pub(crate) fn timed_scan_work_bytes(&self, heap_scan_bytes: u64) -> u64 {
        heap_scan_bytes + self.stacks_bytes + self.globals_bytes
    }

    /// Timed mark: the heapLive at which it ends whatever its time (Go's assists finish the
    /// work by then, `maxOvershoot` past the goal), never below `live_bytes`.
    pub(crate) fn overshoot_bytes(&self, live_bytes: u64) -> u64 {
        ((self.goal_bytes as f64 * MAX_OVERSHOOT) as u64).max(live_bytes)
    }

    /// Called when a cycle starts (`startCycle`).
    pub(crate) fn start_cycle(&mut self, heap_live_bytes: u64) {
        self.triggered_bytes = heap_live_bytes;
    }

    /// `resetLive`, at mark termination: the heap the mark found and its scan work are the
    /// next goal's base, and the point this cycle triggered at is forgotten. (Kept, it held
    /// every later goal at least 64 KiB above it: a heap that had grown to 250 MB and shrunk
    /// to 1 MB kept a 330 MB goal and was never collected again.)
    pub(crate) fn reset_live(&mut self, marked_bytes: u64, scan_bytes: u64) {
        self.heap_marked_bytes = marked_bytes;
        self.last_heap_scan_bytes = scan_bytes;
        self.triggered_bytes = u64::MAX;
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
        let p = Pacer::new(100, None, 0, 0, 1, MarkCosts::default());
        let (trigger, goal) = p.trigger(&HeapSizes::default());
        assert_eq!(goal, 4 << 20);
        assert_eq!(trigger, (4 << 20) / 64 * 61);
        let p = Pacer::new(50, None, 0, 0, 1, MarkCosts::default());
        assert_eq!(p.trigger(&HeapSizes::default()).1, 2 << 20);
    }

    #[test]
    fn goal_follows_marked_heap() {
        let mut p = Pacer::new(100, None, 8192, 8192, 1, MarkCosts::default());
        p.heap_marked_bytes = 10 << 20;
        p.commit(true, 10 << 20);
        let (trigger, goal) = p.trigger(&HeapSizes::default());
        assert_eq!(goal, (10 << 20) + (10 << 20) + 16384);
        assert!(trigger > (10 << 20) && trigger < goal);
    }

    #[test]
    fn memory_limit_lowers_the_goal() {
        let mut p = Pacer::new(100, Some(64 << 20), 0, 0, 1, MarkCosts::default());
        p.heap_marked_bytes = 40 << 20;
        p.commit(true, 40 << 20);
        let h = HeapSizes {
            inuse: 50 << 20,
            free: 0,
            alloc: 50 << 20,
        };
        let (_, goal) = p.trigger(&h);
        assert!((40 << 20..64 << 20).contains(&goal), "{goal}");
        let p = Pacer::new(-1, None, 0, 0, 1, MarkCosts::default());
        assert!(!p.enabled());
    }

    #[test]
    fn cpu_limiter_floor_near_the_memory_limit() {
        // Live heap above what the limit allows: the goal collapses to heapMarked, but the
        // limiter keeps a mark's worth of allocation between cycles.
        let mut p = Pacer::new(-1, Some(16 << 20), 0, 1 << 20, 1, MarkCosts::default());
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
        let mut p = Pacer::new(100, None, 0, 1 << 20, 1, MarkCosts::default());
        p.timed = true;
        p.procs = 2;
        p.costs.idle_mark_utilization = 0.0;
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
        let mut p = Pacer::new(100, None, 0, 1 << 20, 1, MarkCosts::default());
        p.timed = true;
        p.procs = 2;
        p.costs.idle_mark_utilization = 0.0;
        p.costs.mark_assist_share = 0.5;
        p.observe_mark(1 << 20, 1_000_000, 1_000_000.0, 1 << 20);
        assert!((p.cons_mark - 1.0).abs() < 1e-9, "{}", p.cons_mark);
    }
}
