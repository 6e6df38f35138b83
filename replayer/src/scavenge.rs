//! The scavenger: models mgcscavenge.go (`gcPaceScavenger`, the background scavenger's goal,
//! and the synchronous scavenging `allocSpan` does after growing the heap).
//!
//! Goals, set after each GC cycle: retained heap (in-use + free, not released) should be at most
//! `lastHeapInUse * goal/lastGoal * 1.10` (rounded to a physical page), and with a memory limit
//! mapped memory at most 95 % of the limit. Free pages above the goal are released
//! (`MADV_DONTNEED` on the real arena), highest address first.
//!
//! Deliberate difference: Go's background scavenger releases memory over time at about 1 % of
//! one CPU; the model has no clock, so with the scavenger on it releases down to the goal at the
//! end of each GC cycle (as a program that idles between cycles would see). The after-growth
//! scavenging is synchronous in Go too, and modelled as is.
//!
//! Invariant: released bytes never exceed free pages (checked through mheap's invariants).

use crate::mheap::MHeap;

/// Physical page size assumed for rounding (linux/amd64).
pub const PHYS_PAGE_BYTES: u64 = 4096;
const RETAIN_EXTRA_PERCENT: u64 = 10;
const REDUCE_EXTRA_PERCENT: f64 = 5.0;

#[derive(Clone, Debug)]
pub struct Scavenger {
    /// Background scavenging on (the after-growth scavenging always runs, as in Go).
    pub(crate) enabled: bool,
    /// `scavenge.gcPercentGoal`: retained bytes to aim for; `u64::MAX` = nothing to do.
    pub(crate) gc_percent_goal_bytes: u64,
    /// `scavenge.memoryLimitGoal`.
    pub(crate) memory_limit_goal_bytes: u64,
    /// Bytes released over the run.
    pub(crate) released_total_bytes: u64,
}

impl Default for Scavenger {
    fn default() -> Self {
        Scavenger {
            enabled: true,
            gc_percent_goal_bytes: u64::MAX,
            memory_limit_goal_bytes: u64::MAX,
            released_total_bytes: 0,
        }
    }
}

impl MHeap {
    /// `heapRetained`: in-use plus free-but-not-released bytes.
    pub fn heap_retained_bytes(&self) -> u64 {
        self.stats.heap_inuse_bytes + self.stats.heap_free_bytes
    }

    /// `gcPaceScavenger`.
    pub(crate) fn pace_scavenger(
        &mut self,
        memory_limit_bytes: Option<u64>,
        non_heap_bytes: u64,
        heap_goal_bytes: u64,
        last_heap_goal_bytes: u64,
        last_heap_inuse_bytes: u64,
    ) {
        let mapped_ready = self.heap_retained_bytes() + non_heap_bytes;
        self.scav.memory_limit_goal_bytes = match memory_limit_bytes {
            Some(limit) => {
                let g = (limit as f64 * (1.0 - REDUCE_EXTRA_PERCENT / 100.0)) as u64;
                if mapped_ready <= g {
                    u64::MAX
                } else {
                    g
                }
            }
            None => u64::MAX,
        };
        if last_heap_goal_bytes == 0 {
            self.scav.gc_percent_goal_bytes = u64::MAX;
            return;
        }
        let ratio = heap_goal_bytes as f64 / last_heap_goal_bytes as f64;
        let mut goal = (last_heap_inuse_bytes as f64 * ratio) as u64;
        goal += goal / (100 / RETAIN_EXTRA_PERCENT);
        goal = (goal + PHYS_PAGE_BYTES - 1) & !(PHYS_PAGE_BYTES - 1);
        let retained = self.heap_retained_bytes();
        self.scav.gc_percent_goal_bytes = if retained <= goal || retained - goal < PHYS_PAGE_BYTES {
            u64::MAX
        } else {
            goal
        };
    }

    /// The background scavenger, run to completion (see the module comment).
    pub(crate) fn scavenge_background(&mut self, non_heap_bytes: u64) {
        if !self.scav.enabled {
            return;
        }
        let retained = self.heap_retained_bytes();
        let mut want = 0;
        if self.scav.gc_percent_goal_bytes != u64::MAX && retained > self.scav.gc_percent_goal_bytes
        {
            want = retained - self.scav.gc_percent_goal_bytes;
        }
        let mapped = retained + non_heap_bytes;
        if self.scav.memory_limit_goal_bytes != u64::MAX
            && mapped > self.scav.memory_limit_goal_bytes
        {
            want = want.max(mapped - self.scav.memory_limit_goal_bytes);
        }
        if want > 0 {
            self.scavenge_bytes(want);
        }
    }

    /// Synchronous scavenging after a heap growth (`allocSpan`): keep retained memory within the
    /// GOGC-based goal even though the heap just grew.
    pub(crate) fn scavenge_after_growth(&mut self, growth_bytes: u64) {
        let goal = self.scav.gc_percent_goal_bytes;
        if goal == u64::MAX || growth_bytes == 0 {
            return;
        }
        let retained = self.heap_retained_bytes();
        if retained + growth_bytes > goal {
            let todo = growth_bytes.min(retained + growth_bytes - goal);
            self.scavenge_bytes(todo);
        }
    }

    /// Releases at least `bytes` of free pages (whole pages), highest address first.
    pub(crate) fn scavenge_bytes(&mut self, bytes: u64) -> u64 {
        let pages = bytes.div_ceil(self.page_bytes);
        let base = self.base_addr;
        let page_bytes = self.page_bytes;
        let arena = &self.arena;
        let done = self.pages.scavenge(pages, |page, n| {
            arena.release(base + page * page_bytes, n * page_bytes)
        });
        let released = done * self.page_bytes;
        self.stats.heap_free_bytes -= released;
        self.stats.heap_released_bytes += released;
        self.scav.released_total_bytes += released;
        released
    }
}
