//! The workload view: sizes, op mix, threads, lifetimes, temporary objects and realloc growth.
//!
//! Lifetimes are measured two ways when an object dies: in nanoseconds, and in bytes allocated
//! (by anyone) between its allocation and its free. The second is what matters to a GC'd heap such
//! as Go's, whose cycles are paced by allocation volume, and it does not depend on the clock (an
//! imported CSV workload has synthetic timestamps).
//!
//! "Temporary" (short-lived) objects: freed before [`TEMPORARY_BYTES`] more bytes were allocated
//! after them. A realloc continues the object it resizes: its lifetime runs from the first
//! allocation to the final free.

use std::collections::BTreeMap;

use serde::Serialize;
use traces::live::Anomalies;
use traces::Op;

use crate::pct::{Hist, Percentiles};

/// An object is "temporary" when it is freed before this many more bytes were allocated (64 KiB:
/// well inside one GC cycle of even the smallest Go heap, whose minimum goal is 4 MiB).
pub const TEMPORARY_BYTES: u64 = 64 * 1024;
/// Number of log2 size buckets: bucket k holds sizes in [2^k, 2^(k+1)); bucket 0 also holds 0.
pub const LOG2_BUCKETS: usize = 64;

/// Counts per log2 size bucket.
#[derive(Clone, Debug, Default, Serialize)]
pub struct SizeBucket {
    /// Smallest size in the bucket, bytes.
    pub from_bytes: u64,
    /// Largest size in the bucket, bytes.
    pub to_bytes: u64,
    pub allocs: u64,
    pub requested_bytes: u64,
}

/// Per recorder thread.
#[derive(Clone, Debug, Default, Serialize)]
pub struct ThreadStats {
    pub events: u64,
    pub allocs: u64,
    pub frees: u64,
    pub requested_bytes: u64,
    /// Frees by this thread of objects another thread allocated.
    pub cross_thread_frees: u64,
}

/// Realloc growth patterns.
#[derive(Clone, Debug, Default, Serialize)]
pub struct ReallocStats {
    /// Reallocs of a live object (realloc(NULL, n) is counted as an allocation).
    pub resizes: u64,
    pub grow: u64,
    pub shrink: u64,
    pub same: u64,
    /// The object stayed at the same address.
    pub in_place: u64,
    pub moved: u64,
    /// Bytes a moving realloc copies (min of old and new size), summed.
    pub moved_bytes: u64,
    /// Growth factor new/old of growing reallocs: (1,1.25], (1.25,1.5], (1.5,2], (2,4], >4.
    pub growth_factor: [u64; 5],
    /// Largest number of reallocs one object went through.
    pub longest_chain: u64,
}

pub const GROWTH_LABELS: [&str; 5] = ["<=1.25x", "<=1.5x", "<=2x", "<=4x", ">4x"];

/// What the workload pass accumulates.
#[derive(Clone, Debug)]
pub struct Workload {
    pub events: u64,
    pub per_op: BTreeMap<Op, u64>,
    pub per_thread: BTreeMap<u32, ThreadStats>,
    pub log2: Vec<SizeBucket>,
    /// Successful allocating calls (realloc of a live object included).
    pub allocs: u64,
    pub frees: u64,
    /// Requested bytes over all allocating calls.
    pub allocated_bytes: u64,
    pub lifetime_ns: Hist,
    pub lifetime_bytes: Hist,
    pub temporary_objects: u64,
    pub temporary_bytes: u64,
    pub realloc: ReallocStats,
    pub first_ts_ns: Option<u64>,
    pub last_ts_ns: u64,
    /// Requested bytes of every allocating call since the trace began: the clock lifetimes in
    /// bytes are measured on (a report window restarts the counts, not this).
    pub clock_bytes: u64,
}

impl Default for Workload {
    fn default() -> Self {
        Workload {
            events: 0,
            per_op: BTreeMap::new(),
            per_thread: BTreeMap::new(),
            log2: (0..LOG2_BUCKETS)
                .map(|k| SizeBucket {
                    from_bytes: if k == 0 { 0 } else { 1u64 << k },
                    to_bytes: (1u64 << k).wrapping_mul(2).wrapping_sub(1),
                    ..Default::default()
                })
                .collect(),
            allocs: 0,
            frees: 0,
            allocated_bytes: 0,
            lifetime_ns: Hist::default(),
            lifetime_bytes: Hist::default(),
            temporary_objects: 0,
            temporary_bytes: 0,
            realloc: ReallocStats::default(),
            first_ts_ns: None,
            last_ts_ns: 0,
            clock_bytes: 0,
        }
    }
}

/// Log2 bucket of a size.
pub fn log2_bucket(size: u64) -> usize {
    if size == 0 {
        0
    } else {
        63 - size.leading_zeros() as usize
    }
}

impl Workload {
    /// Every event, before the allocation / free bookkeeping.
    pub fn event(&mut self, op: Op, thread: u32, ts_ns: u64) {
        self.events += 1;
        *self.per_op.entry(op).or_default() += 1;
        self.per_thread.entry(thread).or_default().events += 1;
        self.first_ts_ns.get_or_insert(ts_ns);
        self.last_ts_ns = self.last_ts_ns.max(ts_ns);
    }

    /// A successful allocating call of `bytes` (including the new size of a realloc).
    pub fn alloc(&mut self, thread: u32, bytes: u64) {
        self.allocs += 1;
        self.allocated_bytes += bytes;
        self.clock_bytes += bytes;
        let b = &mut self.log2[log2_bucket(bytes)];
        b.allocs += 1;
        b.requested_bytes += bytes;
        let t = self.per_thread.entry(thread).or_default();
        t.allocs += 1;
        t.requested_bytes += bytes;
    }

    /// A report window starts: every count from zero; the byte clock runs on.
    pub fn start_window(&mut self) {
        *self = Workload {
            clock_bytes: self.clock_bytes,
            ..Workload::default()
        };
    }

    /// An object died: `age_ns` after its allocation, with `allocated_meanwhile` bytes allocated
    /// since; `reallocs` is how many times it was resized. Returns whether it was temporary.
    pub fn death(
        &mut self,
        thread: u32,
        born_thread: u32,
        bytes: u64,
        age_ns: u64,
        allocated_meanwhile: u64,
        reallocs: u64,
    ) -> bool {
        self.frees += 1;
        self.lifetime_ns.record(age_ns);
        self.lifetime_bytes.record(allocated_meanwhile);
        let temporary = allocated_meanwhile < TEMPORARY_BYTES;
        if temporary {
            self.temporary_objects += 1;
            self.temporary_bytes += bytes;
        }
        self.realloc.longest_chain = self.realloc.longest_chain.max(reallocs);
        let t = self.per_thread.entry(thread).or_default();
        t.frees += 1;
        if thread != born_thread {
            t.cross_thread_frees += 1;
        }
        temporary
    }

    /// A realloc of a live object from `old` to `new` bytes.
    pub fn resize(&mut self, old: u64, new: u64, in_place: bool, chain: u64) {
        let r = &mut self.realloc;
        r.resizes += 1;
        match new.cmp(&old) {
            std::cmp::Ordering::Greater => {
                r.grow += 1;
                let f = if old == 0 {
                    f64::INFINITY
                } else {
                    new as f64 / old as f64
                };
                let i = [1.25, 1.5, 2.0, 4.0]
                    .iter()
                    .position(|&l| f <= l)
                    .unwrap_or(4);
                r.growth_factor[i] += 1;
            }
            std::cmp::Ordering::Less => r.shrink += 1,
            std::cmp::Ordering::Equal => r.same += 1,
        }
        if in_place {
            r.in_place += 1;
        } else {
            r.moved += 1;
            r.moved_bytes += old.min(new);
        }
        r.longest_chain = r.longest_chain.max(chain);
    }

    pub fn duration_ns(&self) -> u64 {
        self.first_ts_ns.map_or(0, |f| self.last_ts_ns - f)
    }

    /// The workload section; `anomalies` are the live set's counts (`traces::live`).
    pub fn report(&self, live_objects_at_end: u64, anomalies: Anomalies) -> WorkloadReport {
        let secs = self.duration_ns() as f64 / 1e9;
        let rate = |n: u64| if secs > 0.0 { n as f64 / secs } else { 0.0 };
        let frees_pct = |n: u64| {
            if self.frees == 0 {
                0.0
            } else {
                100.0 * n as f64 / self.frees as f64
            }
        };
        WorkloadReport {
            events: self.events,
            duration_ns: self.duration_ns(),
            per_op: self
                .per_op
                .iter()
                .map(|(k, v)| (k.name().to_string(), *v))
                .collect(),
            anomalies,
            allocs: self.allocs,
            frees: self.frees,
            live_objects_at_end,
            allocated_bytes: self.allocated_bytes,
            alloc_rate_per_s: rate(self.allocs),
            alloc_bytes_per_s: rate(self.allocated_bytes),
            mean_request_bytes: if self.allocs == 0 {
                0.0
            } else {
                self.allocated_bytes as f64 / self.allocs as f64
            },
            size_log2: self.log2.iter().filter(|b| b.allocs > 0).cloned().collect(),
            per_thread: self.per_thread.clone(),
            lifetime_ns: self.lifetime_ns.summary(),
            lifetime_bytes: self.lifetime_bytes.summary(),
            temporary_threshold_bytes: TEMPORARY_BYTES,
            temporary_objects: self.temporary_objects,
            temporary_bytes: self.temporary_bytes,
            temporary_pct_of_frees: frees_pct(self.temporary_objects),
            realloc: self.realloc.clone(),
        }
    }
}

/// The workload section of a report.
#[derive(Clone, Debug, Serialize)]
pub struct WorkloadReport {
    pub events: u64,
    pub duration_ns: u64,
    pub per_op: BTreeMap<String, u64>,
    /// Failed calls, unknown, double, inherited and missed frees, by the rule `info` and
    /// `replay` share.
    pub anomalies: Anomalies,
    pub allocs: u64,
    /// Objects that died (free, realloc to 0, or a missed free).
    pub frees: u64,
    pub live_objects_at_end: u64,
    pub allocated_bytes: u64,
    pub alloc_rate_per_s: f64,
    pub alloc_bytes_per_s: f64,
    pub mean_request_bytes: f64,
    /// Non-empty log2 buckets.
    pub size_log2: Vec<SizeBucket>,
    pub per_thread: BTreeMap<u32, ThreadStats>,
    /// Lifetimes of objects that died, ns.
    pub lifetime_ns: Percentiles,
    /// Lifetimes of objects that died, bytes allocated meanwhile.
    pub lifetime_bytes: Percentiles,
    pub temporary_threshold_bytes: u64,
    pub temporary_objects: u64,
    /// Requested bytes of temporary objects.
    pub temporary_bytes: u64,
    pub temporary_pct_of_frees: f64,
    pub realloc: ReallocStats,
}
