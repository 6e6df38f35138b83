//! What each call stack allocated: the weights of the stack exports (folded, pprof) and of the
//! call-site views.
//!
//! One ordered pass over a trace's events through the trace's one live rule
//! ([`traces::live::LiveSet`]: the [`StackProfiler`]'s own, each block carrying its allocating
//! event's [`Birth`], or the report analyzer's), its births and deaths fed to a
//! [`SiteAccumulator`], with these figures per stack (an allocating event's call-site node;
//! `None` for a call recorded without a stack):
//! - `allocs`, `bytes`: allocating calls (every event that returned a block: a realloc too) and
//!   the bytes they asked for, as `info` counts them;
//! - `leaked_bytes`, `leaked_objects`: blocks still live at the end of the trace;
//! - `peak_bytes`: bytes of the blocks live at the moment of the peak of live requested bytes
//!   (the first event after which the live set held its largest total);
//! - reallocs and the bytes they copied, and (the report's pass only) temporary objects,
//!   size-class waste and recorded latency.

use rustc_hash::FxHashMap;
use traces::live::{Birth, LiveSet, Passed};
use traces::{Event, Header};

/// A stack: the leaf node of an allocating event's call stack, or `None` (no stack recorded).
pub type StackId = Option<u32>;

/// What one stack allocated.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
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
    /// Reallocs that returned a block, and the bytes the moving ones copied (the smaller of the
    /// old and new sizes).
    pub reallocs: u64,
    pub realloc_copied_bytes: u64,
    /// The call-site figures only the report's pass gives ([`SiteAccumulator::died`] and
    /// [`SiteAccumulator::born`] with them): objects freed while temporary (the workload's
    /// definition), bytes lost to size-class rounding, and the recorded latency of the calls.
    pub temporary_objects: u64,
    pub temporary_bytes: u64,
    pub waste_bytes: u64,
    pub latency: LatencyBuckets,
    /// The request sizes that wasted bytes, and how much.
    pub waste_sizes: WasteSizes,
    /// Bytes of the Go model's HeapInuse at its peak this stack's objects held (given a
    /// replay, [`StackProfile::add_go_heap`]).
    pub go_heap_bytes: u64,
}

/// The weights of every stack of a trace.
#[derive(Clone, Debug, Default)]
pub struct StackProfile {
    pub stacks: FxHashMap<StackId, StackWeights>,
    /// The peak of live requested bytes, and the seq of the event that reached it first
    /// (`None`: no event did, the peak of a report window is at its start).
    pub peak_live_bytes: u64,
    pub peak_seq: Option<u64>,
    /// The Go model's HeapInuse at its peak, when a replay gave it (each stack's share in
    /// [`StackWeights::go_heap_bytes`]).
    pub go_heap: Option<crate::replay_json::GoHeapAtPeak>,
}

impl StackProfile {
    /// Adds the Go model's HeapInuse at its peak, split by stack (a replay of the same trace).
    pub fn add_go_heap(&mut self, mut heap: crate::replay_json::GoHeapAtPeak) {
        for (site, bytes) in std::mem::take(&mut heap.sites) {
            self.stacks.entry(Some(site)).or_default().go_heap_bytes += bytes;
        }
        self.go_heap = Some(heap);
    }

    /// The stacks sorted by id (`None` first): a stable order for outputs.
    pub fn sorted(&self) -> Vec<(StackId, &StackWeights)> {
        let mut v: Vec<_> = self.stacks.iter().map(|(&k, w)| (k, w)).collect();
        v.sort_unstable_by_key(|&(k, _)| k);
        v
    }

    /// Whether any allocating call was recorded with a stack.
    pub fn has_stacks(&self) -> bool {
        self.stacks.keys().any(Option::is_some)
    }
}

/// An allocation as the call-site figures see it.
#[derive(Clone, Copy, Debug, Default)]
pub struct Alloc {
    pub seq: u64,
    pub site: StackId,
    pub bytes: u64,
    /// For a realloc: the requested bytes of the block it replaced, and whether it moved.
    pub resized_from: Option<(u64, bool)>,
    pub waste_bytes: u64,
    pub latency_ns: u32,
}

/// The per-stack figures of one ordered pass, fed the births and deaths of a live set: the
/// [`StackProfiler`] feeds it from its own, the report's analyzer from the one it keeps anyway.
///
/// Each stack gets a dense number when first seen ([`SiteAccumulator::born`] returns it; a
/// death names it, so the per-event work is array indexing). The peak is found in memory that
/// follows the number of stacks, not the trace's length: beside each stack's live bytes now it
/// keeps its live bytes at the last peak and the list of stacks changed since. When the live
/// total passes the peak ([`SiteAccumulator::settle`]), the changed stacks' figures are copied
/// and the list cleared: the work is the changes', so the pass stays linear (a map drained at
/// every new peak walked its whole capacity each time: most events of a growing heap).
#[derive(Default)]
pub struct SiteAccumulator {
    /// Stack number + 1 by leaf node, for nodes below [`DIRECT_NODES`] (0: not seen).
    by_node: Vec<u32>,
    /// The others: larger node ids (a crafted trace's), and `None`.
    by_id: FxHashMap<StackId, u32>,
    sites: Vec<Site>,
    /// Stacks whose live bytes changed since the last peak, each once (`Site::changed`).
    dirty: Vec<u32>,
    peak_live_bytes: u64,
    peak_seq: Option<u64>,
}

/// Node ids below this are numbered through a table (4 bytes each), not a map: a stack's
/// number is then one load on every allocation.
const DIRECT_NODES: u32 = 1 << 22;

/// One stack's state: what a birth or death touches, together.
struct Site {
    id: StackId,
    weights: StackWeights,
    live_now: u64,
    at_peak: u64,
    changed: bool,
}

impl SiteAccumulator {
    /// A block was allocated (a realloc's new block included). Returns the stack's number, for
    /// its death.
    #[inline]
    pub fn born(&mut self, a: &Alloc) -> u32 {
        let i = match self.number(a.site) {
            Some(i) => i,
            None => self.add_site(a.site, a.seq),
        };
        let site = &mut self.sites[i as usize];
        let w = &mut site.weights;
        w.allocs += 1;
        w.bytes += a.bytes;
        w.waste_bytes += a.waste_bytes;
        if let Some((old, moved)) = a.resized_from {
            w.reallocs += 1;
            if moved {
                w.realloc_copied_bytes += old.min(a.bytes);
            }
        }
        if a.latency_ns > 0 {
            w.latency.add(a.latency_ns);
        }
        if a.waste_bytes > 0 {
            w.waste_sizes.add(a.bytes, 1, a.waste_bytes);
        }
        site.live_now += a.bytes;
        if !site.changed {
            site.changed = true;
            self.dirty.push(i);
        }
        i
    }

    #[cold]
    fn add_site(&mut self, id: StackId, seq: u64) -> u32 {
        let i = self.sites.len() as u32;
        match id {
            Some(node) if node < DIRECT_NODES => {
                let n = node as usize;
                if self.by_node.len() <= n {
                    self.by_node.resize((n + 1).next_power_of_two(), 0);
                }
                self.by_node[n] = i + 1;
            }
            _ => {
                self.by_id.insert(id, i);
            }
        }
        self.sites.push(Site {
            id,
            weights: StackWeights {
                first_seq: seq,
                ..StackWeights::default()
            },
            live_now: 0,
            at_peak: 0,
            changed: false,
        });
        i
    }

    /// The number of stack `id`, if it was born.
    #[inline]
    pub fn number(&self, id: StackId) -> Option<u32> {
        match id {
            Some(node) if node < DIRECT_NODES => match self.by_node.get(node as usize) {
                Some(&n) if n > 0 => Some(n - 1),
                _ => None,
            },
            _ => self.by_id.get(&id).copied(),
        }
    }

    /// A block of stack number `i` was released (freed, moved by a realloc, or its free
    /// missed); it was `temporary` by the workload's definition when the report's pass says so.
    #[inline]
    pub fn died(&mut self, i: u32, bytes: u64, temporary: bool) {
        let site = &mut self.sites[i as usize];
        debug_assert!(
            site.live_now >= bytes,
            "stack {i} releases more than it holds"
        );
        site.live_now = site.live_now.saturating_sub(bytes);
        if !site.changed {
            site.changed = true;
            self.dirty.push(i);
        }
        if temporary {
            site.weights.temporary_objects += 1;
            site.weights.temporary_bytes += bytes;
        }
    }

    /// After each event: `live` requested bytes are live now, after event `seq`.
    #[inline]
    pub fn settle(&mut self, live: u64, seq: u64) {
        if live > self.peak_live_bytes {
            self.peak_live_bytes = live;
            self.peak_seq = Some(seq);
            for i in self.dirty.drain(..) {
                let site = &mut self.sites[i as usize];
                site.at_peak = site.live_now;
                site.changed = false;
            }
        }
    }

    /// A report window starts with `live` requested bytes live: the counts start from zero,
    /// the peak from what each stack holds now (a peak the window never passes is at its
    /// start, `peak_seq` then `None`).
    pub fn start_window(&mut self, live: u64) {
        for site in &mut self.sites {
            site.weights = StackWeights {
                first_seq: site.weights.first_seq,
                ..StackWeights::default()
            };
            site.at_peak = site.live_now;
            site.changed = false;
        }
        self.dirty.clear();
        self.peak_live_bytes = live;
        self.peak_seq = None;
    }

    /// The profile, given the blocks still live at the end (stack number, requested bytes).
    pub fn finish(mut self, live: impl Iterator<Item = (u32, u64)>) -> StackProfile {
        for (i, bytes) in live {
            let w = &mut self.sites[i as usize].weights;
            w.leaked_objects += 1;
            w.leaked_bytes += bytes;
        }
        let stacks = self
            .sites
            .into_iter()
            .map(|mut site| {
                site.weights.peak_bytes = site.at_peak;
                (site.id, site.weights)
            })
            .collect();
        StackProfile {
            stacks,
            peak_live_bytes: self.peak_live_bytes,
            peak_seq: self.peak_seq,
            go_heap: None,
        }
    }
}

/// Builds a [`StackProfile`] from events in seq order, with a live set of its own (the stack
/// exports; the report gets its figures from its analyzer's pass).
pub struct StackProfiler {
    live: LiveSet<Birth>,
    sites: SiteAccumulator,
}

impl StackProfiler {
    /// A profiler for the trace with this header (a fork child's frees of inherited blocks are
    /// not anomalies).
    pub fn new(header: &Header) -> StackProfiler {
        StackProfiler {
            live: LiveSet::new(header.forked_from),
            sites: SiteAccumulator::default(),
        }
    }

    /// Adds the next event.
    pub fn add(&mut self, ev: &Event) {
        let step = self.live.step(ev);
        let mut resized_from = None;
        // Every live block was born through `sites` (a fork child's inherited blocks are never
        // released as blocks), so its stack has a number.
        let mut gone = |b: &traces::live::Block<Birth>| {
            if let Some(i) = self.sites.number(b.data.callsite) {
                self.sites.died(i, b.requested_bytes, false);
            }
        };
        if let Passed::Released(b) = &step.passed {
            gone(b);
            if step.born.is_some() {
                resized_from = Some((b.requested_bytes, ev.addr != ev.old_addr));
            }
        }
        if let Some(b) = &step.displaced {
            gone(b);
        }
        if let Some(born) = step.born {
            born.data = Birth::of(ev);
            self.sites.born(&Alloc {
                seq: ev.seq,
                site: ev.callsite,
                bytes: born.requested_bytes,
                resized_from,
                waste_bytes: 0,
                latency_ns: ev.latency_ns,
            });
        }
        self.sites.settle(self.live.live_requested_bytes(), ev.seq);
    }

    /// The profile: the peak's figures and what is still live.
    pub fn finish(self) -> StackProfile {
        let StackProfiler { live, sites } = self;
        let live: Vec<(u32, u64)> = live
            .iter()
            .filter_map(|(_, b)| Some((sites.number(b.data.callsite)?, b.requested_bytes)))
            .collect();
        sites.finish(live.into_iter())
    }
}

/// The request sizes whose rounding wasted bytes at one call site: the first
/// [`WasteSizes::KEPT`] distinct sizes exactly (a call site asks for a handful), the waste of any
/// other size in `other_bytes`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct WasteSizes {
    /// (request bytes, allocations, waste bytes).
    pub sizes: Vec<(u64, u64, u64)>,
    pub other_bytes: u64,
}

impl WasteSizes {
    pub const KEPT: usize = 8;

    pub fn add(&mut self, size: u64, allocs: u64, waste: u64) {
        if let Some(e) = self.sizes.iter_mut().find(|e| e.0 == size) {
            e.1 += allocs;
            e.2 += waste;
        } else if self.sizes.len() < Self::KEPT {
            self.sizes.push((size, allocs, waste));
        } else {
            self.other_bytes += waste;
        }
    }

    pub fn merge(&mut self, o: &WasteSizes) {
        for &(size, allocs, waste) in &o.sizes {
            self.add(size, allocs, waste);
        }
        self.other_bytes += o.other_bytes;
    }
}

/// Recorded latencies of a stack's calls in a few bytes: counts per bucket of a log scale with
/// four buckets per power of two (values within 19 % of the truth), kept sparse (a call site's
/// calls fall in a handful of buckets).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LatencyBuckets {
    /// (bucket, calls), by bucket.
    counts: Vec<(u8, u32)>,
}

impl LatencyBuckets {
    /// Values below 8 have a bucket each; above, bucket `8 + 4 (log2 - 3) + quarter`.
    fn bucket(ns: u32) -> u8 {
        if ns < 8 {
            return ns as u8;
        }
        let log = 31 - ns.leading_zeros();
        let quarter = (ns >> (log - 2)) & 3;
        (8 + (log - 3) * 4 + quarter) as u8
    }

    /// The largest value of bucket `b`.
    fn upper(b: u8) -> u64 {
        if b < 8 {
            return b as u64;
        }
        let (log, quarter) = (3 + (b as u64 - 8) / 4, (b as u64 - 8) % 4);
        ((4 + quarter + 1) << (log - 2)) - 1
    }

    pub fn add(&mut self, ns: u32) {
        let b = Self::bucket(ns);
        match self.counts.binary_search_by_key(&b, |&(k, _)| k) {
            Ok(i) => self.counts[i].1 = self.counts[i].1.saturating_add(1),
            Err(i) => self.counts.insert(i, (b, 1)),
        }
    }

    pub fn merge(&mut self, other: &LatencyBuckets) {
        for &(b, n) in &other.counts {
            match self.counts.binary_search_by_key(&b, |&(k, _)| k) {
                Ok(i) => self.counts[i].1 = self.counts[i].1.saturating_add(n),
                Err(i) => self.counts.insert(i, (b, n)),
            }
        }
    }

    /// Calls with a recorded latency.
    pub fn count(&self) -> u64 {
        self.counts.iter().map(|&(_, n)| n as u64).sum()
    }

    /// The `q`-quantile (0..=1), as its bucket's largest value; `None` without calls.
    pub fn quantile(&self, q: f64) -> Option<u64> {
        let total = self.count();
        if total == 0 {
            return None;
        }
        let rank = ((q * total as f64).ceil() as u64).clamp(1, total);
        let mut seen = 0;
        for &(b, n) in &self.counts {
            seen += n as u64;
            if seen >= rank {
                return Some(Self::upper(b));
            }
        }
        None
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
        let w = |s| prof.stacks[&s].clone();
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
        assert_eq!(
            (w(Some(3)).reallocs, w(Some(3)).realloc_copied_bytes),
            (1, 50)
        );
        let peak_sum: u64 = prof.stacks.values().map(|w| w.peak_bytes).sum();
        assert_eq!(peak_sum, prof.peak_live_bytes);
    }

    #[test]
    fn latency_buckets_give_quantiles_within_a_bucket() {
        let mut l = LatencyBuckets::default();
        assert_eq!(l.quantile(0.5), None);
        for ns in 1..=1000u32 {
            l.add(ns);
        }
        for (q, want) in [(0.5, 500.0), (0.99, 990.0), (1.0, 1000.0)] {
            let got = l.quantile(q).unwrap() as f64;
            assert!(got >= want && got <= want * 1.25, "q{q}: {got} for {want}");
        }
        // Every value lies in the bucket whose upper bound is the first at or above it.
        for ns in [0u32, 1, 3, 4, 5, 7, 8, 100, 65535, u32::MAX] {
            let b = LatencyBuckets::bucket(ns);
            assert!(LatencyBuckets::upper(b) >= ns as u64, "{ns}");
            assert!(b == 0 || LatencyBuckets::upper(b - 1) < ns as u64, "{ns}");
        }
        let mut m = LatencyBuckets::default();
        m.merge(&l);
        m.merge(&l);
        assert_eq!(m.count(), 2000);
        assert_eq!(m.quantile(0.5), l.quantile(0.5));
    }

    #[test]
    fn waste_sizes_keep_the_first_sizes_and_count_the_rest_as_other() {
        let mut w = WasteSizes::default();
        for size in 1..=10u64 {
            w.add(size, 1, 100);
        }
        w.add(3, 2, 50);
        assert_eq!(w.sizes.len(), WasteSizes::KEPT);
        assert_eq!(w.sizes[2], (3, 3, 150));
        assert_eq!(w.other_bytes, 200);
        let mut m = WasteSizes::default();
        m.merge(&w);
        assert_eq!(m, w);
    }
}
