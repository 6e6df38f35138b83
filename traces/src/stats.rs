//! Whole-trace statistics, computed in one pass in seq order: what `allocscope info` shows.
//!
//! Which blocks are live and which events are anomalies is decided by [`crate::live`], the rule
//! every tool shares; this module only counts.

use std::collections::BTreeMap;

use serde::{Serialize, Serializer};

use crate::event::{Event, Header, Op};
use crate::live::{Anomalies, Anomaly, LiveSet};

/// An anomaly worth showing the user, with where it happened.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct Example {
    pub seq: u64,
    pub op: Op,
    /// The address it is about (passed in, or returned for a missed free).
    pub addr: u64,
    pub kind: Anomaly,
    pub what: &'static str,
}

/// Counts and live-byte figures for a trace.
#[derive(Clone, Debug, Default, Serialize)]
pub struct TraceStats {
    pub events: u64,
    pub per_op: BTreeMap<Op, u64>,
    /// Events per recorder thread number.
    pub per_thread: BTreeMap<u32, u64>,
    pub first_ts_ns: Option<u64>,
    pub last_ts_ns: Option<u64>,
    /// Sum of requested bytes over successful allocating calls.
    pub total_requested_bytes: u64,
    /// Largest sum of requested bytes of live objects at any point.
    pub peak_live_requested_bytes: u64,
    pub live_requested_bytes_at_end: u64,
    pub live_objects_at_end: u64,
    /// The anomalies (failed calls, unknown, double, inherited and missed frees), counted by the
    /// shared rule: written as the set's counts.
    #[serde(rename = "anomalies", serialize_with = "counts_of")]
    live: LiveSet<()>,
    /// The first few inconsistencies (unknown, double and missed frees), for the user to look at.
    pub examples: Vec<Example>,
    /// Successful allocating calls that carry a stack, and those that do not.
    pub allocations_with_stack: u64,
    pub allocations_without_stack: u64,
    /// The distinct stacks (leaf nodes) allocating calls named.
    #[serde(skip)]
    pub stack_ids: rustc_hash::FxHashSet<u32>,
}

const MAX_EXAMPLES: usize = 10;

fn counts_of<S: Serializer>(live: &LiveSet<()>, s: S) -> Result<S::Ok, S::Error> {
    live.anomalies().serialize(s)
}

impl TraceStats {
    /// Statistics for a trace of a process that started with an empty heap.
    pub fn new() -> Self {
        Self::default()
    }

    /// Statistics for the trace with this header (a fork child's counts inherited frees).
    pub fn for_trace(header: &Header) -> Self {
        TraceStats {
            live: LiveSet::new(header.forked_from),
            ..Self::default()
        }
    }

    /// Adds the next event (events must come in seq order).
    pub fn add(&mut self, ev: &Event) {
        self.events += 1;
        *self.per_op.entry(ev.op).or_default() += 1;
        *self.per_thread.entry(ev.thread).or_default() += 1;
        self.first_ts_ns = Some(self.first_ts_ns.map_or(ev.ts_ns, |t| t.min(ev.ts_ns)));
        self.last_ts_ns = Some(self.last_ts_ns.map_or(ev.ts_ns, |t| t.max(ev.ts_ns)));

        let step = self.live.step(ev);
        if step.born.is_some() {
            self.total_requested_bytes += ev.requested_bytes();
            match ev.callsite {
                Some(id) => {
                    self.allocations_with_stack += 1;
                    self.stack_ids.insert(id);
                }
                None => self.allocations_without_stack += 1,
            }
        }
        for kind in step.anomalies() {
            if kind.is_inconsistency() && self.examples.len() < MAX_EXAMPLES {
                self.examples.push(Example {
                    seq: ev.seq,
                    op: ev.op,
                    addr: kind.address(ev),
                    kind,
                    what: kind.what(),
                });
            }
        }
        self.peak_live_requested_bytes = self.live.peak_live_requested_bytes();
        self.live_requested_bytes_at_end = self.live.live_requested_bytes();
        self.live_objects_at_end = self.live.len() as u64;
    }

    /// Distinct recorder threads.
    pub fn threads(&self) -> usize {
        self.per_thread.len()
    }

    /// Time from the first to the last event, ns.
    pub fn duration_ns(&self) -> u64 {
        match (self.first_ts_ns, self.last_ts_ns) {
            (Some(a), Some(b)) => b - a,
            _ => 0,
        }
    }

    /// The anomalies met so far.
    pub fn anomalies(&self) -> &Anomalies {
        self.live.anomalies()
    }

    /// True for a fork child's trace (frees of unknown addresses are inherited frees).
    pub fn is_fork_child(&self) -> bool {
        self.live.is_fork_child()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(seq: u64, op: Op, addr: u64, old: u64, size: u64) -> Event {
        let mut e = Event::new(op);
        e.seq = seq;
        e.addr = addr;
        e.old_addr = old;
        e.size = size;
        e
    }

    #[test]
    fn live_bytes_peak_and_anomalies() {
        let mut s = TraceStats::new();
        for e in [
            ev(0, Op::Malloc, 0x100, 0, 100),
            ev(1, Op::Malloc, 0x200, 0, 50),
            ev(2, Op::Free, 0, 0x100, 0),
            ev(3, Op::Realloc, 0x300, 0x200, 500),
            ev(4, Op::Free, 0, 0x100, 0),
            ev(5, Op::Free, 0, 0x999, 0),
            ev(6, Op::Free, 0, 0, 0),
        ] {
            s.add(&e);
        }
        assert_eq!(s.total_requested_bytes, 650);
        assert_eq!(s.peak_live_requested_bytes, 500);
        assert_eq!(s.live_requested_bytes_at_end, 500);
        assert_eq!(s.live_objects_at_end, 1);
        assert_eq!(s.anomalies().double_frees, 1);
        assert_eq!(s.anomalies().unknown_frees, 1);
        assert_eq!(s.examples.len(), 2);
        assert_eq!(s.per_op[&Op::Free], 4);
    }
}
