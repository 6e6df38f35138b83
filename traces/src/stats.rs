//! Whole-trace statistics, computed in one pass in seq order: what `allocscope info` shows.

use std::collections::BTreeMap;

use rustc_hash::{FxHashMap, FxHashSet};

use serde::Serialize;

use crate::event::{Event, Op};

/// An anomaly worth showing the user, with where it happened.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct Anomaly {
    pub seq: u64,
    pub op: Op,
    pub addr: u64,
    pub what: &'static str,
}

/// Counts and live-byte figures for a trace.
#[derive(Clone, Debug, Default, Serialize)]
pub struct TraceStats {
    pub events: u64,
    pub per_op: BTreeMap<Op, u64>,
    /// Events per recorder thread number.
    pub per_thread: BTreeMap<u32, u64>,
    pub failed_calls: u64,
    pub first_ts_ns: Option<u64>,
    pub last_ts_ns: Option<u64>,
    /// Sum of requested bytes over successful allocating calls.
    pub total_requested_bytes: u64,
    /// Largest sum of requested bytes of live objects at any point.
    pub peak_live_requested_bytes: u64,
    pub live_requested_bytes_at_end: u64,
    pub live_objects_at_end: u64,
    /// Frees (and reallocs) of an address that was never allocated in the trace.
    pub unknown_frees: u64,
    /// Frees (and reallocs) of an address already freed.
    pub double_frees: u64,
    /// Allocations returning an address that is still live (a missed free, or a broken trace).
    pub live_address_reused: u64,
    /// The first few anomalies, for the user to look at.
    pub examples: Vec<Anomaly>,
    #[serde(skip)]
    live: FxHashMap<u64, u64>,
    #[serde(skip)]
    freed: FxHashSet<u64>,
    #[serde(skip)]
    live_bytes: u64,
}

const MAX_EXAMPLES: usize = 10;

impl TraceStats {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds the next event (events must come in seq order).
    pub fn add(&mut self, ev: &Event) {
        self.events += 1;
        *self.per_op.entry(ev.op).or_default() += 1;
        *self.per_thread.entry(ev.thread).or_default() += 1;
        if ev.failed {
            self.failed_calls += 1;
        }
        self.first_ts_ns = Some(self.first_ts_ns.map_or(ev.ts_ns, |t| t.min(ev.ts_ns)));
        self.last_ts_ns = Some(self.last_ts_ns.map_or(ev.ts_ns, |t| t.max(ev.ts_ns)));

        if ev.op.takes_address() && ev.old_addr != 0 {
            if let Some(bytes) = self.live.get(&ev.old_addr).copied() {
                if ev.releases() {
                    self.live.remove(&ev.old_addr);
                    self.live_bytes -= bytes;
                    self.freed.insert(ev.old_addr);
                }
            } else if self.freed.contains(&ev.old_addr) {
                self.double_frees += 1;
                self.note(ev, ev.old_addr, "freed an address already freed");
            } else {
                self.unknown_frees += 1;
                self.note(
                    ev,
                    ev.old_addr,
                    "freed an address never allocated in the trace",
                );
            }
        }
        if ev.allocates() {
            let bytes = ev.requested_bytes();
            self.total_requested_bytes += bytes;
            self.freed.remove(&ev.addr);
            if let Some(old) = self.live.insert(ev.addr, bytes) {
                self.live_address_reused += 1;
                self.live_bytes -= old;
                self.note(ev, ev.addr, "returned an address that is still live");
            }
            self.live_bytes += bytes;
            self.peak_live_requested_bytes = self.peak_live_requested_bytes.max(self.live_bytes);
        }
        self.live_requested_bytes_at_end = self.live_bytes;
        self.live_objects_at_end = self.live.len() as u64;
    }

    fn note(&mut self, ev: &Event, addr: u64, what: &'static str) {
        if self.examples.len() < MAX_EXAMPLES {
            self.examples.push(Anomaly {
                seq: ev.seq,
                op: ev.op,
                addr,
                what,
            });
        }
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

    pub fn anomalies(&self) -> u64 {
        self.unknown_frees + self.double_frees + self.live_address_reused
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
        assert_eq!(s.double_frees, 1);
        assert_eq!(s.unknown_frees, 1);
        assert_eq!(s.examples.len(), 2);
        assert_eq!(s.per_op[&Op::Free], 4);
    }
}
