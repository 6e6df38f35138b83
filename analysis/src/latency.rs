//! Latency of the real allocator as the collector recorded it (`latency_ns` per event), per op
//! and per size group. A trace imported from CSV without `latency_ns` has none: every value is 0,
//! and the report says "not recorded" instead of printing zeros.

use std::collections::BTreeMap;

use serde::Serialize;
use traces::Op;

use crate::pct::{Hist, Percentiles};
use crate::waste::TINY_MAX_BYTES;

/// Size groups for latency (requested bytes).
pub const SIZE_GROUPS: [&str; 4] = [
    "tiny (<16 B)",
    "small (<=1 KiB)",
    "medium (<=32 KiB)",
    "large (>32 KiB)",
];

pub fn size_group(bytes: u64) -> usize {
    if bytes < TINY_MAX_BYTES {
        0
    } else if bytes <= 1024 {
        1
    } else if bytes <= 32768 {
        2
    } else {
        3
    }
}

#[derive(Default)]
pub struct Latency {
    all: Hist,
    per_op: BTreeMap<Op, Hist>,
    per_group: [Hist; 4],
    nonzero: u64,
}

impl Latency {
    pub fn add(&mut self, op: Op, requested_bytes: u64, latency_ns: u32) {
        let v = latency_ns as u64;
        if v != 0 {
            self.nonzero += 1;
        }
        self.all.record(v);
        self.per_op.entry(op).or_default().record(v);
        if op != Op::Free {
            self.per_group[size_group(requested_bytes)].record(v);
        }
    }

    /// A report window starts: the calls before it are forgotten.
    pub fn start_window(&mut self) {
        *self = Latency::default();
    }

    pub fn report(&self) -> LatencyReport {
        LatencyReport {
            recorded: self.nonzero > 0,
            all_ns: self.all.summary(),
            per_op_ns: self
                .per_op
                .iter()
                .map(|(op, h)| (op.name().to_string(), h.summary()))
                .collect(),
            per_size_group_ns: SIZE_GROUPS
                .iter()
                .zip(&self.per_group)
                .filter(|(_, h)| h.count() > 0)
                .map(|(g, h)| (g.to_string(), h.summary()))
                .collect(),
        }
    }
}

/// The latency section of a report: recorded latency percentiles, ns.
#[derive(Clone, Debug, Serialize)]
pub struct LatencyReport {
    /// False when no event carries a latency (e.g. a CSV import).
    pub recorded: bool,
    pub all_ns: Percentiles,
    pub per_op_ns: BTreeMap<String, Percentiles>,
    pub per_size_group_ns: Vec<(String, Percentiles)>,
}
