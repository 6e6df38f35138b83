//! The replay engine: compiles a trace into a compact op stream, then runs the Go model over it.
//!
//! Compilation (as glibc's trace2wl does) maps every address to a slot index up front, resolves
//! the pointer assumption and the thread-to-P mapping, and finds the anomalies (failed calls,
//! frees of unknown or already-freed addresses), so the measured loop touches only the allocator
//! and a slot array. Everything that does not depend on the model's state (requested and
//! rounded bytes per class, live requested bytes) is computed here too.
//!
//! Anomalies never crash a replay: failed calls are skipped, bad frees are skipped and counted;
//! with `strict` the first one is an error naming the event.

use std::collections::{HashMap, HashSet};
use std::hash::{BuildHasherDefault, Hasher};
use std::time::Instant;

use serde::Serialize;
use traces::{Event, PtrKind};

use crate::config::{Config, Pointers};
use crate::error::ReplayError;
use crate::malloc::Heap;
use crate::sizeclass::{SizeClass, SizeClasses};

/// A hasher for addresses (compile-time maps): one multiply, no DoS concern for trace input
/// since a bad distribution only costs time.
#[derive(Default)]
struct AddrHasher(u64);

impl Hasher for AddrHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0.rotate_left(8) ^ b as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        }
    }
    fn write_u64(&mut self, x: u64) {
        self.0 = (x ^ (x >> 29)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        self.0 ^= self.0 >> 32;
    }
}

type AddrMap<V> = HashMap<u64, V, BuildHasherDefault<AddrHasher>>;
type AddrSet = HashSet<u64, BuildHasherDefault<AddrHasher>>;

/// What an op does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum OpKind {
    /// Allocate `size` bytes into `slot`.
    Alloc,
    /// Free the object in `slot`.
    Free,
    /// Allocate into `slot`, copy from `aux`, free `aux` (Go has no realloc).
    Realloc,
}

/// The C call an op came from (the latency groups of `measured::native::OP_NAMES`, by index).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Call {
    Malloc = 0,
    Calloc = 1,
    /// `realloc` and `reallocarray`.
    Realloc = 2,
    Free = 3,
    /// `posix_memalign`, `aligned_alloc`, `memalign`, `valloc`, `pvalloc`.
    Aligned = 4,
}

impl Call {
    pub fn of(op: traces::Op) -> Call {
        use traces::Op as T;
        match op {
            T::Malloc => Call::Malloc,
            T::Calloc => Call::Calloc,
            T::Realloc | T::Reallocarray => Call::Realloc,
            T::Free => Call::Free,
            T::PosixMemalign | T::AlignedAlloc | T::Memalign | T::Valloc | T::Pvalloc => {
                Call::Aligned
            }
        }
    }

    /// Index into `measured::native::OP_NAMES`.
    #[inline]
    pub fn index(self) -> usize {
        self as usize
    }
}

/// log2 of the alignment every op asks for unless the trace says more (16 bytes, malloc's).
pub const DEFAULT_ALIGN_LOG2: u8 = 4;

/// One compiled call (24 bytes, asserted in the tests).
#[derive(Clone, Copy, Debug)]
pub struct Op {
    pub size_bytes: u64,
    pub slot: u32,
    pub aux: u32,
    pub kind: OpKind,
    /// The recorded call (a `Free` op may come from `realloc(p, 0)` or a missed free).
    pub call: Call,
    pub noscan: bool,
    /// log2 of the alignment asked for (aligned calls; `DEFAULT_ALIGN_LOG2` otherwise). The Go
    /// model ignores it; baselines pass it in the `Layout`.
    pub align_log2: u8,
    pub p: u16,
    /// Recorder thread (dense: the trace's own small thread numbers).
    pub thread: u16,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Anomalies {
    /// Calls that failed in the recorded program (skipped).
    pub failed_calls: u64,
    /// Frees (or reallocs) of addresses never returned by the recorded allocator (skipped).
    pub unknown_frees: u64,
    /// Frees of addresses already freed (skipped).
    pub double_frees: u64,
    /// Allocations returning an address still live in the trace: the earlier object's free was
    /// not recorded; it is treated as freed.
    pub missed_frees: u64,
    /// Aligned allocations (Go has no alignment argument; served by size alone).
    pub aligned_requests: u64,
}

/// Per-class numbers that do not depend on the model's state.
#[derive(Clone, Debug, Default)]
pub struct ClassRequests {
    pub requested_bytes: u64,
    pub rounded_bytes: u64,
}

/// A trace compiled for one configuration.
#[derive(Clone, Debug, Default)]
pub struct Compiled {
    pub ops: Vec<Op>,
    /// Slots needed (most objects live at once).
    pub slots: u32,
    pub events: u64,
    pub anomalies: Anomalies,
    /// Per size class (index 0 = large), for allocations replayed.
    pub per_class: Vec<ClassRequests>,
    pub requested_bytes: u64,
    pub rounded_bytes: u64,
    pub peak_live_requested_bytes: u64,
    /// The trace time of each op (ns since the recording started), for the timed GC mark
    /// (mgc.rs); empty when the trace has no timestamps or the configuration runs no GC.
    pub times_ns: Vec<u64>,
}

impl Compiled {
    /// The trace time of op `i` (0 when the trace has none).
    #[inline]
    pub fn time_of(&self, i: usize) -> u64 {
        self.times_ns.get(i).copied().unwrap_or(0)
    }
}

/// The bytes a request occupies in the model: class size, whole pages, or its own size when it
/// is packed by the tiny allocator. Returns (class, bytes). The placement rule is
/// `SizeClasses::place` (sizeclass.rs).
pub fn rounded(classes: &SizeClasses, cfg: &Config, size: u64, noscan: bool) -> (SizeClass, u64) {
    let tiny = cfg.tiny_block_bytes();
    classes.footprint(classes.place(size, noscan, tiny), size, tiny)
}

/// Compiles events (in sequence order) for `cfg`.
pub fn compile(
    events: impl IntoIterator<Item = Result<Event, ReplayError>>,
    cfg: &Config,
    classes: &SizeClasses,
    strict: bool,
) -> Result<Compiled, ReplayError> {
    let mut c = Compiled {
        per_class: vec![ClassRequests::default(); classes.num_classes()],
        ..Default::default()
    };
    let mut live: AddrMap<(u32, u64)> = AddrMap::default();
    let mut freed: AddrSet = AddrSet::default();
    let mut free_slots: Vec<u32> = Vec::new();
    let mut live_requested = 0u64;
    let strict_err = |what, event| Err(ReplayError::Strict { what, event });
    for (n, ev) in events.into_iter().enumerate() {
        let ev = ev?;
        let n = n as u64;
        c.events += 1;
        if ev.failed {
            c.anomalies.failed_calls += 1;
            if strict {
                return strict_err("failed call", n);
            }
        }
        let noscan = match cfg.pointers {
            Pointers::Noscan => true,
            Pointers::Scan => false,
            Pointers::Trace => ev.kind != PtrKind::Scan,
        };
        let p = cfg.p_of_thread(ev.thread) as u16;
        let thread = u16::try_from(ev.thread).map_err(|_| {
            ReplayError::Trace(format!(
                "event {n}: thread number {} above 65535",
                ev.thread
            ))
        })?;
        let call = Call::of(ev.op);
        let align_log2 = if ev.op.has_align() && ev.align.is_power_of_two() {
            (ev.align.trailing_zeros() as u8).clamp(DEFAULT_ALIGN_LOG2, 30)
        } else {
            DEFAULT_ALIGN_LOG2
        };
        // The object released, if the trace says one is and we know it.
        let mut old = None;
        if ev.releases() {
            match live.remove(&ev.old_addr) {
                Some((slot, size)) => {
                    freed.insert(ev.old_addr);
                    live_requested -= size;
                    old = Some(slot);
                }
                None if freed.contains(&ev.old_addr) => {
                    c.anomalies.double_frees += 1;
                    if strict {
                        return strict_err("double free", n);
                    }
                }
                None => {
                    c.anomalies.unknown_frees += 1;
                    if strict {
                        return strict_err("free of an unknown address", n);
                    }
                }
            }
        }
        if ev.op.has_align() {
            c.anomalies.aligned_requests += 1;
        }
        if ev.allocates() {
            if let Some((slot, size)) = live.remove(&ev.addr) {
                c.anomalies.missed_frees += 1;
                if strict {
                    return strict_err("allocation at a live address (a free was not recorded)", n);
                }
                live_requested -= size;
                c.times_ns.push(ev.ts_ns);
                c.ops.push(Op {
                    size_bytes: 0,
                    slot,
                    aux: u32::MAX,
                    kind: OpKind::Free,
                    call: Call::Free,
                    noscan,
                    align_log2: DEFAULT_ALIGN_LOG2,
                    p,
                    thread,
                });
                free_slots.push(slot);
            }
            freed.remove(&ev.addr);
            let size = ev.requested_bytes();
            let slot = free_slots.pop().unwrap_or_else(|| {
                c.slots += 1;
                c.slots - 1
            });
            live.insert(ev.addr, (slot, size));
            live_requested += size;
            c.peak_live_requested_bytes = c.peak_live_requested_bytes.max(live_requested);
            let (class, r) = rounded(classes, cfg, size, noscan);
            let pc = &mut c.per_class[class.0 as usize];
            pc.requested_bytes += size;
            pc.rounded_bytes += r;
            c.requested_bytes += size;
            c.rounded_bytes += r;
            let (kind, aux) = match old {
                Some(o) => (OpKind::Realloc, o),
                None => (OpKind::Alloc, u32::MAX),
            };
            c.times_ns.push(ev.ts_ns);
            c.ops.push(Op {
                size_bytes: size,
                slot,
                aux,
                kind,
                call,
                noscan,
                align_log2,
                p,
                thread,
            });
            if let Some(o) = old {
                free_slots.push(o);
            }
        } else if let Some(o) = old {
            c.times_ns.push(ev.ts_ns);
            c.ops.push(Op {
                size_bytes: 0,
                slot: o,
                aux: u32::MAX,
                kind: OpKind::Free,
                call,
                noscan,
                align_log2: DEFAULT_ALIGN_LOG2,
                p,
                thread,
            });
            free_slots.push(o);
        }
    }
    let runs_gc = cfg.free_policy == crate::config::FreePolicy::Gc
        && (cfg.gogc >= 0 || cfg.gomemlimit.is_some());
    if !runs_gc || c.times_ns.iter().all(|&t| t == 0) {
        c.times_ns = Vec::new();
    }
    Ok(c)
}

/// A slot: the model address of the object and its requested size.
#[derive(Clone, Copy, Debug, Default)]
pub struct Slot {
    addr: u64,
    size_bytes: u64,
}

/// Result of running the model over a compiled trace.
#[derive(Clone, Debug, Default)]
pub struct RunStats {
    pub peak_heap_alloc_bytes: u64,
    /// Wall time of the op loop.
    pub elapsed_ns: u64,
    pub ops: u64,
}

/// What the replay writes into a new object (memory traffic only: the model's results do not
/// depend on it).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Touch {
    /// Nothing.
    None,
    /// Its first byte.
    FirstByte,
    /// One byte per 4 KiB page (faults every page in; what [`run`] does).
    Pages,
    /// Every byte (as glibc's trace_run does).
    Whole,
}

impl Touch {
    pub fn parse(s: &str) -> Option<Touch> {
        match s {
            "none" => Some(Touch::None),
            "first" | "first-byte" => Some(Touch::FirstByte),
            "pages" => Some(Touch::Pages),
            "whole" | "all" => Some(Touch::Whole),
            _ => None,
        }
    }
}

/// The state of a replay between ops: the slot array and the running peak of HeapAlloc. Both
/// the plain loop ([`run`]) and the measured ones (`measured/`) step through it, so they replay
/// exactly the same calls.
pub struct Stepper {
    pub slots: Vec<Slot>,
    pub peak_heap_alloc_bytes: u64,
    pub touch: Touch,
}

impl Stepper {
    pub fn new(slots: u32, touch: Touch) -> Stepper {
        Stepper {
            slots: vec![Slot::default(); slots as usize],
            peak_heap_alloc_bytes: 0,
            touch,
        }
    }

    /// Replays op number `i`, at trace time `now_ns` ([`Compiled::time_of`]).
    #[inline]
    pub fn step(
        &mut self,
        heap: &mut Heap,
        i: usize,
        op: &Op,
        now_ns: u64,
    ) -> Result<(), ReplayError> {
        let p = op.p as usize;
        heap.advance_clock(now_ns, p);
        match op.kind {
            OpKind::Alloc => {
                heap.current_event = i as u64;
                let addr = heap.malloc(op.size_bytes, op.noscan, p)?;
                self.touch(heap, addr, op.size_bytes, i as u8);
                self.slots[op.slot as usize] = Slot {
                    addr,
                    size_bytes: op.size_bytes,
                };
                self.peak_heap_alloc_bytes = self
                    .peak_heap_alloc_bytes
                    .max(heap.mheap.stats.heap_alloc_bytes);
            }
            OpKind::Free => {
                let s = self.slots[op.slot as usize];
                heap.free(s.addr);
            }
            OpKind::Realloc => {
                heap.current_event = i as u64;
                let addr = heap.malloc(op.size_bytes, op.noscan, p)?;
                let old = self.slots[op.aux as usize];
                let n = old.size_bytes.min(op.size_bytes);
                if addr != crate::malloc::ZEROBASE_ADDR && old.addr != crate::malloc::ZEROBASE_ADDR
                {
                    heap.mheap.arena.copy(addr, old.addr, n);
                }
                self.touch(heap, addr, op.size_bytes, i as u8);
                self.slots[op.slot as usize] = Slot {
                    addr,
                    size_bytes: op.size_bytes,
                };
                self.peak_heap_alloc_bytes = self
                    .peak_heap_alloc_bytes
                    .max(heap.mheap.stats.heap_alloc_bytes);
                heap.free(old.addr);
            }
        }
        Ok(())
    }

    #[inline]
    fn touch(&self, heap: &Heap, addr: u64, size_bytes: u64, stamp: u8) {
        if addr == crate::malloc::ZEROBASE_ADDR {
            return;
        }
        let arena = &heap.mheap.arena;
        match self.touch {
            Touch::None => {}
            Touch::FirstByte => arena.touch(addr, size_bytes.min(1), stamp),
            Touch::Pages => arena.touch(addr, size_bytes, stamp),
            Touch::Whole => arena.fill(addr, size_bytes, stamp),
        }
    }
}

/// Runs the model over the op stream (one byte written per page of each new object).
pub fn run(heap: &mut Heap, compiled: &Compiled) -> Result<RunStats, ReplayError> {
    let mut st = Stepper::new(compiled.slots, Touch::Pages);
    let start = Instant::now();
    for (i, op) in compiled.ops.iter().enumerate() {
        st.step(heap, i, op, compiled.time_of(i))?;
    }
    let elapsed_ns = start.elapsed().as_nanos() as u64;
    #[cfg(feature = "check-invariants")]
    heap.check_invariants();
    Ok(RunStats {
        peak_heap_alloc_bytes: st.peak_heap_alloc_bytes,
        elapsed_ns,
        ops: compiled.ops.len() as u64,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn op_stays_24_bytes() {
        assert_eq!(std::mem::size_of::<Op>(), 24);
    }

    #[test]
    fn calls_map_to_the_latency_groups() {
        assert_eq!(Call::of(traces::Op::Reallocarray), Call::Realloc);
        assert_eq!(Call::of(traces::Op::Valloc), Call::Aligned);
        assert_eq!(
            crate::measured::native::OP_NAMES[Call::Calloc.index()],
            "calloc"
        );
        assert_eq!(
            crate::measured::native::OP_NAMES[Call::Free.index()],
            "free"
        );
    }
}
