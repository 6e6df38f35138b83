//! What each call stack allocated: the weights of the stack exports (folded, pprof) and of the
//! call-site views.
//!
//! One ordered pass over a trace's events ([`StackProfiler::add`]) through the trace's one live
//! rule ([`traces::live::LiveSet`], each block carrying its allocating event's [`Birth`]), with
//! four figures per stack (an allocating event's call-site node; `None` for a call recorded
//! without a stack):
//! - `allocs`, `bytes`: allocating calls (every event that returned a block: a realloc too) and
//!   the bytes they asked for, as `info` counts them;
//! - `leaked_bytes`, `leaked_objects`: blocks still live at the end of the trace;
//! - `peak_bytes`: bytes of the blocks live at the moment of the peak of live requested bytes
//!   (the first event after which the live set held its largest total).
//!
//! The peak is found in the same pass, in memory that follows the number of stacks, not the
//! trace's length: beside the per-stack live bytes at the last peak (`at_peak`) the profiler
//! keeps the change of each stack's live bytes since then (`since_peak`). When the live total
//! passes the peak, the changes are folded into `at_peak` and forgotten. Each change is folded
//! at most once, so the pass stays linear.

use rustc_hash::FxHashMap;
use traces::live::{Birth, Block, LiveSet, Passed};
use traces::{Event, Header};

/// A stack: the leaf node of an allocating event's call stack, or `None` (no stack recorded).
pub type StackId = Option<u32>;

/// What one stack allocated.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StackWeights {
    /// Allocating calls (events that returned a block).
    pub allocs: u64,
    /// Bytes those calls requested.
    pub bytes: u64,
    /// Blocks, and their requested bytes, still live at the end of the trace.
    pub leaked_objects: u64,
    pub leaked_bytes: u64,
    /// Requested bytes of this stack's blocks live at the peak of live requested bytes.
    pub peak_bytes: u64,
    /// Seq of the first event with this stack (it picks the modules loaded at the time).
    pub first_seq: u64,
}

/// The weights of every stack of a trace.
#[derive(Clone, Debug, Default)]
pub struct StackProfile {
    pub stacks: FxHashMap<StackId, StackWeights>,
    /// The peak of live requested bytes, and the seq of the event that reached it first.
    pub peak_live_bytes: u64,
    pub peak_seq: Option<u64>,
}

impl StackProfile {
    /// The stacks sorted by id (`None` first): a stable order for outputs.
    pub fn sorted(&self) -> Vec<(StackId, StackWeights)> {
        let mut v: Vec<_> = self.stacks.iter().map(|(&k, &w)| (k, w)).collect();
        v.sort_unstable_by_key(|&(k, _)| k);
        v
    }
}

/// Builds a [`StackProfile`] from events in seq order.
pub struct StackProfiler {
    live: LiveSet<Birth>,
    profile: StackProfile,
    /// Live bytes per stack at the last peak, and their change since.
    at_peak: FxHashMap<StackId, u64>,
    since_peak: FxHashMap<StackId, i64>,
}

impl StackProfiler {
    /// A profiler for the trace with this header (a fork child's frees of inherited blocks are
    /// not anomalies).
    pub fn new(header: &Header) -> StackProfiler {
        StackProfiler {
            live: LiveSet::new(header.forked_from),
            profile: StackProfile::default(),
            at_peak: FxHashMap::default(),
            since_peak: FxHashMap::default(),
        }
    }

    /// Adds the next event.
    pub fn add(&mut self, ev: &Event) {
        let step = self.live.step(ev);
        let gone = |b: Block<Birth>, since: &mut FxHashMap<StackId, i64>| {
            *since.entry(b.data.callsite).or_default() -= b.requested_bytes as i64;
        };
        if let Passed::Released(b) = step.passed {
            gone(b, &mut self.since_peak);
        }
        if let Some(b) = step.displaced {
            gone(b, &mut self.since_peak);
        }
        if let Some(born) = step.born {
            born.data = Birth::of(ev);
            let bytes = born.requested_bytes;
            let w = self
                .profile
                .stacks
                .entry(ev.callsite)
                .or_insert(StackWeights {
                    first_seq: ev.seq,
                    ..StackWeights::default()
                });
            w.allocs += 1;
            w.bytes += bytes;
            *self.since_peak.entry(ev.callsite).or_default() += bytes as i64;
        }
        let live = self.live.live_requested_bytes();
        if live > self.profile.peak_live_bytes {
            self.profile.peak_live_bytes = live;
            self.profile.peak_seq = Some(ev.seq);
            self.fold_into_peak();
        }
    }

    /// The live bytes per stack now become the peak's.
    fn fold_into_peak(&mut self) {
        for (site, change) in self.since_peak.drain() {
            let at = self.at_peak.entry(site).or_default();
            let now = *at as i64 + change;
            debug_assert!(now >= 0, "stack {site:?} has {now} live bytes");
            *at = now.max(0) as u64;
        }
    }

    /// The profile: the peak's figures and what is still live.
    pub fn finish(mut self) -> StackProfile {
        for (site, bytes) in self.at_peak {
            if let Some(w) = self.profile.stacks.get_mut(&site) {
                w.peak_bytes = bytes;
            }
        }
        for (_, b) in self.live.iter() {
            if let Some(w) = self.profile.stacks.get_mut(&b.data.callsite) {
                w.leaked_objects += 1;
                w.leaked_bytes += b.requested_bytes;
            }
        }
        self.profile
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use traces::Op;

    fn ev(seq: u64, op: Op, addr: u64, old: u64, size: u64, site: Option<u32>) -> Event {
        let mut e = Event::new(op);
        e.seq = seq;
        e.addr = addr;
        e.old_addr = old;
        e.size = size;
        e.callsite = site;
        e
    }

    #[test]
    fn weights_per_stack_and_the_peak() {
        let evs = [
            ev(0, Op::Malloc, 0x10, 0, 100, Some(1)),
            ev(1, Op::Malloc, 0x20, 0, 50, Some(2)),
            ev(2, Op::Free, 0, 0x10, 0, None),
            ev(3, Op::Malloc, 0x30, 0, 70, Some(1)),
            // Peak: 50 (site 2) + 70 (site 1) + 40 (no stack) = 160 after seq 4.
            ev(4, Op::Malloc, 0x40, 0, 40, None),
            ev(5, Op::Free, 0, 0x30, 0, None),
            // The realloc moves site 2's block to site 3.
            ev(6, Op::Realloc, 0x50, 0x20, 60, Some(3)),
            ev(7, Op::Free, 0, 0x40, 0, None),
        ];
        let mut p = StackProfiler::new(&Header::default());
        for e in &evs {
            p.add(e);
        }
        let prof = p.finish();
        assert_eq!(prof.peak_live_bytes, 160);
        assert_eq!(prof.peak_seq, Some(4));
        let w = |s| prof.stacks[&s];
        assert_eq!((w(Some(1)).allocs, w(Some(1)).bytes), (2, 170));
        assert_eq!(w(Some(1)).peak_bytes, 70);
        assert_eq!(w(Some(2)).peak_bytes, 50);
        assert_eq!(w(None).peak_bytes, 40);
        assert_eq!(w(Some(3)).peak_bytes, 0);
        assert_eq!(
            (w(Some(3)).leaked_objects, w(Some(3)).leaked_bytes),
            (1, 60)
        );
        assert_eq!(w(Some(2)).leaked_bytes, 0);
        assert_eq!(w(Some(2)).first_seq, 1);
        let peak_sum: u64 = prof.stacks.values().map(|w| w.peak_bytes).sum();
        assert_eq!(peak_sum, prof.peak_live_bytes);
    }
}
