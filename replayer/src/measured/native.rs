//! Baselines: the compiled op stream through the allocators people would pick instead of Go's:
//! the system allocator (glibc malloc), jemalloc and mimalloc, in the same kind of loop as the Go
//! model, on the same slots, with the same touch policy and the same measurements (per-call
//! latency, perf counters per phase, RSS over time).
//!
//! Each allocator is used through `GlobalAlloc` (not installed as the global allocator), so all
//! three live side by side in one binary. RSS figures are deltas from the RSS just before the op
//! loop starts, which leaves out the compiled op stream itself and what earlier runs in the same
//! process kept cached.
//!
//! A request no allocator could satisfy fails as C's malloc fails (NULL), without calling the
//! allocator: a size no `Layout` can describe, or one larger than the model's heap address space
//! (`arena::MAX_HEAP_BYTES`) or than this machine's RAM and swap (glibc's answer under Linux's
//! default overcommit; mimalloc would reserve it, then the replay would write it). An allocator
//! that returns NULL fails the call too. Failed calls are counted (`failed_allocs`); a realloc
//! that fails still releases the old object, which the trace says was released.
//!
//! This is the one place outside the arena that calls allocators directly, hence `unsafe`: every
//! pointer handed back to an allocator came from that allocator with the layout stored beside it.
#![allow(unsafe_code)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::collections::BTreeMap;
use std::time::Instant;

use serde::Serialize;

use std::sync::atomic::{AtomicPtr, AtomicU64, Ordering};

use super::clock::CycleClock;
use super::perf::{Counters, Reading};
use super::threaded::Plan;
use super::Latencies;
use crate::engine::{Call, Compiled, Op, OpKind};
use crate::sizeclass::{GO_MAX_SMALL_SIZE_BYTES, GO_TINY_BLOCK_BYTES};

/// A baseline allocator.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Native {
    /// The C library's malloc (glibc ptmalloc2 on Debian).
    System,
    Jemalloc,
    Mimalloc,
}

impl Native {
    pub fn name(self) -> &'static str {
        match self {
            Native::System => "system",
            Native::Jemalloc => "jemalloc",
            Native::Mimalloc => "mimalloc",
        }
    }

    pub fn parse(s: &str) -> Option<Native> {
        match s {
            "system" | "glibc" => Some(Native::System),
            "jemalloc" => Some(Native::Jemalloc),
            "mimalloc" => Some(Native::Mimalloc),
            _ => None,
        }
    }
}

pub use crate::engine::Touch;

/// What to measure besides wall time.
#[derive(Clone, Debug)]
pub struct Measure {
    pub touch: Touch,
    /// Time every call with the cycle clock (adds about 2 clock reads per call).
    pub time_calls: bool,
    /// Sample RSS every this many ops for the timeline (0: never).
    pub timeline_every: u64,
    /// Fraction of ops counted as warm-up for the per-phase counters.
    pub warmup_fraction: f64,
    /// CPUs to pin replay threads to (thread n on `pin[n % len]`; empty: no pinning).
    pub pin: Vec<usize>,
}

impl Default for Measure {
    fn default() -> Self {
        Measure {
            touch: Touch::Whole,
            time_calls: true,
            timeline_every: 0,
            warmup_fraction: 0.1,
            pin: Vec::new(),
        }
    }
}

/// Latency groups, shared with the Go model's report.
pub const OP_NAMES: [&str; 5] = ["malloc", "calloc", "realloc", "free", "aligned"];
pub const SIZE_NAMES: [&str; 3] = ["tiny", "small", "large"];

/// Size group index: tiny (under Go's 16-byte tiny block), small (up to Go's largest class,
/// 32 KiB), large. Groups by size alone, so every allocator's calls fall in the same groups.
#[inline]
pub fn size_group(size_bytes: u64) -> usize {
    if size_bytes < GO_TINY_BLOCK_BYTES {
        0
    } else if size_bytes <= GO_MAX_SMALL_SIZE_BYTES as u64 {
        1
    } else {
        2
    }
}

/// One RSS sample.
#[derive(Clone, Copy, Debug, Serialize)]
pub struct RssPoint {
    /// Ops done when sampled.
    pub op: u64,
    /// Resident bytes above the RSS at the start of the loop.
    pub rss_bytes: u64,
}

/// Result of one baseline run.
#[derive(Clone, Debug, Serialize)]
pub struct NativeRun {
    pub allocator: Native,
    pub ops: u64,
    pub elapsed_ns: u64,
    /// Resident bytes above the start of the loop, largest sample (timeline and end).
    pub peak_rss_bytes: u64,
    pub rss_timeline: Vec<RssPoint>,
    /// Counters over the whole loop and per phase ("warmup", "steady").
    pub counters: BTreeMap<String, BTreeMap<String, Reading>>,
    /// Allocations that failed (see the module comment).
    pub failed_allocs: u64,
    #[serde(skip)]
    pub latencies: Latencies,
}

/// Replays `compiled` through `which`.
pub fn run(which: Native, compiled: &Compiled, m: &Measure, clock: &CycleClock) -> NativeRun {
    match which {
        Native::System => run_with(which, &System, compiled, m, clock),
        Native::Jemalloc => run_with(which, &tikv_jemallocator::Jemalloc, compiled, m, clock),
        Native::Mimalloc => run_with(which, &mimalloc::MiMalloc, compiled, m, clock),
    }
}

/// A live object: where it is and the layout it was allocated with.
#[derive(Clone, Copy)]
struct Slot {
    ptr: *mut u8,
    layout: Layout,
}

const EMPTY: Slot = Slot {
    ptr: std::ptr::null_mut(),
    layout: Layout::new::<u8>(),
};

/// The layout of a request, `None` for one that fails (see the module comment).
fn layout_for(size_bytes: u64, align_log2: u8) -> Option<Layout> {
    let limit = crate::arena::MAX_HEAP_BYTES.min(crate::arena::machine_memory_bytes());
    if size_bytes > limit {
        return None;
    }
    // Zero-size requests get one byte: GlobalAlloc does not take zero sizes (malloc(0) returns a
    // unique pointer in C, so the allocator does the same work).
    Layout::from_size_align(size_bytes.max(1) as usize, 1usize << align_log2).ok()
}

/// What one op did: what `op.slot` holds afterwards, the bytes for the size group, and whether
/// an allocation failed.
struct Applied {
    slot: Slot,
    bytes: u64,
    failed: bool,
}

/// Does one op. `cur` is what the op releases (the object for a free, the old one for a
/// realloc; `EMPTY` for an allocation).
#[inline]
fn apply<A: GlobalAlloc>(a: &A, op: &Op, cur: Slot, touch_policy: Touch, stamp: u8) -> Applied {
    let done = |slot: Slot, failed: bool| Applied {
        slot,
        bytes: op.size_bytes,
        failed,
    };
    match op.kind {
        OpKind::Alloc => {
            let Some(layout) = layout_for(op.size_bytes, op.align_log2) else {
                return done(EMPTY, true);
            };
            let ptr = if op.call == Call::Calloc {
                // SAFETY: the layout has a non-zero size and a valid alignment.
                unsafe { a.alloc_zeroed(layout) }
            } else {
                // SAFETY: as above.
                unsafe { a.alloc(layout) }
            };
            touch(ptr, op.size_bytes, touch_policy, stamp);
            done(Slot { ptr, layout }, ptr.is_null())
        }
        OpKind::Free => {
            release(a, cur);
            Applied {
                slot: EMPTY,
                bytes: cur.layout.size() as u64,
                failed: false,
            }
        }
        OpKind::Realloc => {
            let align_log2 = cur.layout.align().trailing_zeros() as u8;
            let Some(layout) = layout_for(op.size_bytes, align_log2) else {
                release(a, cur);
                return done(EMPTY, true);
            };
            let ptr = if cur.ptr.is_null() {
                // SAFETY: as for Alloc.
                unsafe { a.alloc(layout) }
            } else {
                // SAFETY: `cur.ptr` came from `a` with `cur.layout`; the new size is non-zero,
                // and a valid `Layout` with the same alignment (so it does not overflow isize
                // when rounded up to the alignment).
                unsafe { a.realloc(cur.ptr, cur.layout, layout.size()) }
            };
            if ptr.is_null() {
                // realloc failed and left the old object where it was.
                release(a, cur);
                return done(EMPTY, true);
            }
            let grown = op.size_bytes.saturating_sub(cur.layout.size() as u64);
            if grown > 0 {
                // Only the new tail is fresh; the rest was copied.
                // SAFETY: ptr spans op.size_bytes bytes; the tail starts inside it.
                let tail = unsafe { ptr.add(cur.layout.size().min(op.size_bytes as usize)) };
                touch(tail, grown, touch_policy, stamp);
            }
            done(Slot { ptr, layout }, false)
        }
    }
}

/// Frees what a slot held (nothing for an empty slot).
#[inline]
fn release<A: GlobalAlloc>(a: &A, cur: Slot) {
    if !cur.ptr.is_null() {
        // SAFETY: `cur.ptr` came from `a` with `cur.layout` and was not freed since (a slot is
        // emptied on every free, and the caller took it out of its slot).
        unsafe { a.dealloc(cur.ptr, cur.layout) };
    }
}

fn run_with<A: GlobalAlloc>(
    which: Native,
    a: &A,
    compiled: &Compiled,
    m: &Measure,
    clock: &CycleClock,
) -> NativeRun {
    let mut slots = vec![EMPTY; compiled.slots as usize];
    let mut latencies = Latencies::new(false);
    let mut timeline = Vec::new();
    let mut failed_allocs = 0;
    let rss0 = rss_baseline();
    let mut counters = Counters::open();
    let warmup_end = (compiled.ops.len() as f64 * m.warmup_fraction) as usize;
    let snap_start = counters.snapshot();
    let mut snap_warm = None;
    let start = Instant::now();
    for (i, op) in compiled.ops.iter().enumerate() {
        if i == warmup_end {
            snap_warm = Some(counters.snapshot());
        }
        let cur = match op.kind {
            OpKind::Alloc => EMPTY,
            OpKind::Free => std::mem::replace(&mut slots[op.slot as usize], EMPTY),
            OpKind::Realloc => std::mem::replace(&mut slots[op.aux as usize], EMPTY),
        };
        let t0 = if m.time_calls { clock.start() } else { 0 };
        let done = apply(a, op, cur, m.touch, i as u8);
        if m.time_calls {
            let ns = clock.elapsed_ns(t0, clock.stop());
            latencies.record(op.call, done.bytes, None, ns);
        }
        failed_allocs += done.failed as u64;
        if op.kind != OpKind::Free {
            slots[op.slot as usize] = done.slot;
        }
        if m.timeline_every > 0 && (i as u64).is_multiple_of(m.timeline_every) {
            timeline.push(RssPoint {
                op: i as u64,
                rss_bytes: rss_bytes().saturating_sub(rss0),
            });
        }
    }
    let elapsed_ns = start.elapsed().as_nanos() as u64;
    let snap_end = counters.snapshot();
    let peak_end = rss_bytes().saturating_sub(rss0);
    // Free what the trace left live, so the next run starts clean.
    for s in slots.iter().filter(|s| !s.ptr.is_null()) {
        // SAFETY: every non-null slot holds a live pointer from `a` with its layout.
        unsafe { a.dealloc(s.ptr, s.layout) };
    }
    let mut phases = BTreeMap::new();
    phases.insert("total".to_string(), snap_end.since(&snap_start));
    if let Some(w) = &snap_warm {
        phases.insert("warmup".to_string(), w.since(&snap_start));
        phases.insert("steady".to_string(), snap_end.since(w));
    }
    let peak_rss_bytes = timeline
        .iter()
        .map(|p| p.rss_bytes)
        .max()
        .unwrap_or(0)
        .max(peak_end);
    NativeRun {
        allocator: which,
        ops: compiled.ops.len() as u64,
        elapsed_ns,
        peak_rss_bytes,
        rss_timeline: timeline,
        counters: phases,
        failed_allocs,
        latencies,
    }
}

/// Replays `compiled` through `which` with each recorded thread on its own OS thread
/// (`plan` from `threaded::plan`). Counters cover the whole replay only ("total": warm-up and
/// steady state are not defined across threads); RSS is sampled at the end.
pub fn run_threaded(
    which: Native,
    compiled: &Compiled,
    plan: &Plan,
    m: &Measure,
    clock: &CycleClock,
) -> Result<NativeRun, String> {
    match which {
        Native::System => run_threaded_with(which, &System, compiled, plan, m, clock),
        Native::Jemalloc => run_threaded_with(
            which,
            &tikv_jemallocator::Jemalloc,
            compiled,
            plan,
            m,
            clock,
        ),
        Native::Mimalloc => run_threaded_with(which, &mimalloc::MiMalloc, compiled, plan, m, clock),
    }
}

/// A slot shared between threads. The gates order every access (a Release when an op is done,
/// an Acquire before the next op on the slot runs), so Relaxed loads and stores suffice.
struct SharedSlot {
    ptr: AtomicPtr<u8>,
    /// `size << 8 | align_log2` of the layout.
    layout: AtomicU64,
}

impl SharedSlot {
    fn take(&self) -> Slot {
        let ptr = self.ptr.swap(std::ptr::null_mut(), Ordering::Relaxed);
        if ptr.is_null() {
            return EMPTY;
        }
        let l = self.layout.load(Ordering::Relaxed);
        Slot {
            ptr,
            layout: Layout::from_size_align((l >> 8) as usize, 1 << (l as u8))
                .expect("the layout a live object was allocated with"),
        }
    }

    fn put(&self, s: Slot) {
        let l = (s.layout.size() as u64) << 8 | s.layout.align().trailing_zeros() as u64;
        self.layout.store(l, Ordering::Relaxed);
        self.ptr.store(s.ptr, Ordering::Relaxed);
    }
}

fn run_threaded_with<A: GlobalAlloc + Sync>(
    which: Native,
    a: &A,
    compiled: &Compiled,
    plan: &Plan,
    m: &Measure,
    clock: &CycleClock,
) -> Result<NativeRun, String> {
    let slots: Vec<SharedSlot> = (0..compiled.slots)
        .map(|_| SharedSlot {
            ptr: AtomicPtr::new(std::ptr::null_mut()),
            layout: AtomicU64::new(0),
        })
        .collect();
    let rss0 = rss_baseline();
    let mut counters = Counters::open();
    let snap_start = counters.snapshot();
    let start = Instant::now();
    let results: Result<Vec<(Latencies, u64)>, String> = super::threaded::run(
        plan,
        &compiled.ops,
        |n| {
            super::affinity::pin_nth(&m.pin, n)?;
            Ok((Latencies::new(false), 0))
        },
        |(latencies, failed), step, op| {
            let cur = match op.kind {
                OpKind::Alloc => EMPTY,
                OpKind::Free => slots[op.slot as usize].take(),
                OpKind::Realloc => slots[op.aux as usize].take(),
            };
            let t0 = if m.time_calls { clock.start() } else { 0 };
            let done = apply(a, op, cur, m.touch, step.op as u8);
            if m.time_calls {
                let ns = clock.elapsed_ns(t0, clock.stop());
                latencies.record(op.call, done.bytes, None, ns);
            }
            *failed += done.failed as u64;
            if op.kind != OpKind::Free {
                slots[op.slot as usize].put(done.slot);
            }
        },
    );
    let elapsed_ns = start.elapsed().as_nanos() as u64;
    let snap_end = counters.snapshot();
    let peak_rss_bytes = rss_bytes().saturating_sub(rss0);
    for s in &slots {
        let s = s.take();
        if !s.ptr.is_null() {
            // SAFETY: every non-null slot holds a live pointer from `a` with its layout; all
            // replay threads have finished.
            unsafe { a.dealloc(s.ptr, s.layout) };
        }
    }
    let mut latencies = Latencies::new(false);
    let mut failed_allocs = 0;
    for (l, failed) in results? {
        latencies.merge(&l);
        failed_allocs += failed;
    }
    let mut phases = BTreeMap::new();
    phases.insert("total".to_string(), snap_end.since(&snap_start));
    Ok(NativeRun {
        allocator: which,
        ops: compiled.ops.len() as u64,
        elapsed_ns,
        peak_rss_bytes,
        rss_timeline: Vec::new(),
        counters: phases,
        failed_allocs,
        latencies,
    })
}

/// Writes the object as the touch policy says. Null (a failed allocation) is left alone.
#[inline]
fn touch(ptr: *mut u8, size_bytes: u64, t: Touch, value: u8) {
    if ptr.is_null() || size_bytes == 0 {
        return;
    }
    match t {
        Touch::None => {}
        // SAFETY: ptr points to at least size_bytes (> 0) writable bytes just allocated.
        Touch::FirstByte => unsafe { ptr.write_volatile(value) },
        Touch::Pages => {
            for off in (0..size_bytes as usize).step_by(4096) {
                // SAFETY: off < size_bytes, inside the object.
                unsafe { ptr.add(off).write_volatile(value) };
            }
        }
        // SAFETY: as above, for the whole object.
        Touch::Whole => unsafe { std::ptr::write_bytes(ptr, value, size_bytes as usize) },
    }
}

/// The RSS a run's growth is measured from. glibc first hands back to the OS the free memory it
/// holds (left over from compiling the trace, or from an earlier run): otherwise a run on glibc
/// grows into pages that are already resident, and its peak looks smaller than it is.
pub fn rss_baseline() -> u64 {
    #[cfg(target_env = "gnu")]
    // SAFETY: malloc_trim only releases free memory of the C allocator; it takes no pointers.
    unsafe {
        libc::malloc_trim(0);
    }
    rss_bytes()
}

/// This process's resident set, bytes (from /proc/self/statm; 0 if unreadable).
pub fn rss_bytes() -> u64 {
    let page = 4096u64;
    std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| s.split_whitespace().nth(1)?.parse::<u64>().ok())
        .map_or(0, |pages| pages * page)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::Op;

    /// 4096 objects of 4 KiB allocated, then all freed.
    fn alloc_then_free(n: u32, size: u64) -> Compiled {
        let mut ops = Vec::new();
        for i in 0..n {
            ops.push(Op {
                size_bytes: size,
                slot: i,
                aux: 0,
                kind: OpKind::Alloc,
                call: Call::Malloc,
                noscan: true,
                align_log2: 4,
                p: 0,
                thread: 0,
            });
        }
        for i in 0..n {
            ops.push(Op {
                size_bytes: 0,
                slot: i,
                aux: 0,
                kind: OpKind::Free,
                call: Call::Free,
                noscan: true,
                align_log2: 4,
                p: 0,
                thread: 0,
            });
        }
        Compiled {
            ops,
            slots: n,
            events: 2 * n as u64,
            ..Default::default()
        }
    }

    fn op(kind: OpKind, size_bytes: u64, slot: u32, aux: u32) -> Op {
        Op {
            size_bytes,
            slot,
            aux,
            kind,
            call: Call::Malloc,
            noscan: true,
            align_log2: 4,
            p: 0,
            thread: 0,
        }
    }

    /// Sizes no allocator could satisfy fail as malloc fails (issue 17): no panic on the
    /// `Layout`, nothing allocated, counted; a realloc to such a size releases the old object.
    #[test]
    fn requests_no_allocator_could_satisfy_are_failed_calls() {
        let clock = CycleClock::calibrate(std::time::Duration::from_millis(5));
        let ops = vec![
            op(OpKind::Alloc, u64::MAX, 0, 0),
            op(OpKind::Alloc, isize::MAX as u64, 1, 0),
            op(OpKind::Alloc, crate::arena::MAX_HEAP_BYTES + 1, 2, 0),
            op(OpKind::Alloc, 100, 3, 0),
            op(OpKind::Realloc, u64::MAX - 4095, 4, 3),
            op(OpKind::Free, 0, 0, 0),
            op(OpKind::Free, 0, 4, 0),
            op(OpKind::Alloc, 64, 0, 0),
            op(OpKind::Free, 0, 0, 0),
        ];
        let compiled = Compiled {
            ops,
            slots: 5,
            events: 9,
            ..Default::default()
        };
        let m = Measure {
            touch: Touch::Whole,
            ..Measure::default()
        };
        for which in [Native::System, Native::Jemalloc, Native::Mimalloc] {
            let r = run(which, &compiled, &m, &clock);
            assert_eq!(r.failed_allocs, 4, "{}", which.name());
            assert!(r.peak_rss_bytes < 64 << 20, "{}", which.name());
        }
        let plan = crate::measured::threaded::plan(&compiled.ops, &[0; 9], compiled.slots);
        let r = run_threaded(Native::System, &compiled, &plan, &m, &clock).unwrap();
        assert_eq!(r.failed_allocs, 4);
    }

    #[test]
    fn every_baseline_replays_and_measures() {
        let clock = CycleClock::calibrate(std::time::Duration::from_millis(5));
        let compiled = alloc_then_free(4096, 4096);
        let m = Measure {
            timeline_every: 512,
            ..Measure::default()
        };
        for which in [Native::System, Native::Jemalloc, Native::Mimalloc] {
            let r = run(which, &compiled, &m, &clock);
            assert_eq!(r.ops, 8192);
            let ops = r.latencies.by_op.summary();
            assert_eq!(
                ops.iter().find(|(n, _)| *n == "malloc").unwrap().1.count,
                4096
            );
            assert_eq!(
                ops.iter().find(|(n, _)| *n == "free").unwrap().1.count,
                4096
            );
            // 16 MiB touched whole: resident memory grows by most of it at the peak.
            assert!(
                r.peak_rss_bytes > 8 << 20,
                "{}: peak RSS {}",
                which.name(),
                r.peak_rss_bytes
            );
            match &r.counters["total"]["page_faults"] {
                Reading::Count(n) => assert!(*n > 0),
                Reading::NotSupported(why) => panic!("page faults not counted: {why}"),
            }
        }
    }
}
