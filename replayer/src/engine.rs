//! The replay engine: compiles a trace into a compact op stream, then runs the Go model over it.
//!
//! Compilation (as glibc's trace2wl does) maps every address to a slot index up front, resolves
//! the pointer assumption and the thread-to-P mapping, and applies the trace's one live-object
//! rule ([`traces::live`]: what is live, what is an anomaly), so the measured loop touches only
//! the allocator and a slot array. Everything that does not depend on the model's state
//! (requested and rounded bytes per class, live requested bytes) is computed here too.
//!
//! Anomalies never crash a replay: failed calls are skipped, frees of addresses that are not
//! live are skipped and counted, an allocation at a live address first frees the object there;
//! with `strict` the first anomaly is an error naming the event (frees of blocks a fork child
//! inherited are no error: a correct trace holds them).

use std::time::Instant;

use serde::Serialize;
use traces::live::{Anomaly, LiveSet, Passed};
use traces::Event;

use crate::config::Config;
use crate::error::ReplayError;
use crate::malloc::Heap;
use crate::sizeclass::{SizeClass, SizeClasses};

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

/// The anomalies of a replayed trace: the counts of the shared rule ([`traces::live`], the same
/// as `info` and `report` show), and what the Go model cannot honour.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Anomalies {
    /// Failed calls, unknown, double, inherited and missed frees (each skipped; a missed free's
    /// object is freed first).
    #[serde(flatten)]
    pub trace: traces::live::Anomalies,
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
    /// The call-site field of each op's event (a stack's leaf node, or an imported Go trace's
    /// type id; [`NO_SITE`] for none), for [`crate::peak_sites`]; empty when no event has one.
    pub sites: Vec<u32>,
}

/// [`Compiled::sites`] of an op whose event has no call site.
pub const NO_SITE: u32 = u32::MAX;

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

/// Compiles events (in sequence order) for `cfg`. `forked_from` is the trace header's: in a fork
/// child's trace, frees of blocks it never allocated are inherited blocks (counted apart).
pub fn compile(
    events: impl IntoIterator<Item = Result<Event, ReplayError>>,
    forked_from: Option<u32>,
    cfg: &Config,
    classes: &SizeClasses,
    strict: bool,
) -> Result<Compiled, ReplayError> {
    let mut compiler = Compiler {
        cfg,
        classes,
        strict,
        live: LiveSet::new(forked_from),
        slots: SlotPool::default(),
        out: Compiled {
            per_class: vec![ClassRequests::default(); classes.num_classes()],
            ..Default::default()
        },
    };
    for (n, ev) in events.into_iter().enumerate() {
        compiler.add(n as u64, &ev?)?;
    }
    Ok(compiler.finish())
}

/// The compiler between two events.
struct Compiler<'c> {
    cfg: &'c Config,
    classes: &'c SizeClasses,
    strict: bool,
    /// The live blocks, each with its slot.
    live: LiveSet<u32>,
    slots: SlotPool,
    out: Compiled,
}

impl Compiler<'_> {
    /// Compiles event number `n` into zero, one or two ops.
    fn add(&mut self, n: u64, ev: &Event) -> Result<(), ReplayError> {
        self.out.events += 1;
        if ev.op.has_align() {
            self.out.anomalies.aligned_requests += 1;
        }
        let origin = Origin::of(ev, n, self.cfg)?;
        let step = self.live.step(ev);
        if self.strict {
            if let Some(a) = step.anomalies().find(|&a| a != Anomaly::InheritedFree) {
                return Err(ReplayError::Strict {
                    what: a.what(),
                    event: n,
                });
            }
        }
        let released = match step.passed {
            Passed::Released(b) => Some(b.data),
            _ => None,
        };
        if let Some(missed) = step.displaced {
            self.out
                .push(ev.ts_ns, origin.free(missed.data, Call::Free), None);
            self.slots.give(missed.data);
        }
        if let Some(born) = step.born {
            let slot = self.slots.take();
            born.data = slot;
            let size = born.requested_bytes;
            self.out
                .count_request(self.classes, self.cfg, size, origin.noscan);
            self.out
                .push(ev.ts_ns, origin.alloc(slot, released, size), ev.callsite);
            if let Some(old) = released {
                self.slots.give(old);
            }
        } else if let Some(old) = released {
            self.out.push(ev.ts_ns, origin.free(old, origin.call), None);
            self.slots.give(old);
        }
        Ok(())
    }

    fn finish(mut self) -> Compiled {
        let c = &mut self.out;
        c.slots = self.slots.next;
        c.anomalies.trace = *self.live.anomalies();
        c.peak_live_requested_bytes = self.live.peak_live_requested_bytes();
        let runs_gc = self.cfg.free_policy == crate::config::FreePolicy::Gc
            && (self.cfg.gogc >= 0 || self.cfg.gomemlimit.is_some());
        if !runs_gc || c.times_ns.iter().all(|&t| t == 0) {
            c.times_ns = Vec::new();
        }
        self.out
    }
}

impl Compiled {
    fn push(&mut self, ts_ns: u64, op: Op, site: Option<u32>) {
        self.times_ns.push(ts_ns);
        self.ops.push(op);
        match site {
            Some(site) => {
                if self.sites.len() + 1 < self.ops.len() {
                    // The first op with a site: the ones before it had none.
                    self.sites.resize(self.ops.len() - 1, NO_SITE);
                }
                self.sites.push(site);
            }
            None if !self.sites.is_empty() => self.sites.push(NO_SITE),
            None => {}
        }
    }

    /// An allocation of `size` bytes replayed: its class and rounded bytes.
    fn count_request(&mut self, classes: &SizeClasses, cfg: &Config, size: u64, noscan: bool) {
        let (class, r) = rounded(classes, cfg, size, noscan);
        let pc = &mut self.per_class[class.0 as usize];
        pc.requested_bytes += size;
        pc.rounded_bytes += r;
        self.requested_bytes += size;
        self.rounded_bytes += r;
    }
}

/// Slot numbers: a freed slot is taken again first (last in, first out), so the slots in use
/// never exceed the most objects live at once.
#[derive(Default)]
struct SlotPool {
    free: Vec<u32>,
    /// Slots handed out so far (`Compiled::slots`).
    next: u32,
}

impl SlotPool {
    fn take(&mut self) -> u32 {
        self.free.pop().unwrap_or_else(|| {
            self.next += 1;
            self.next - 1
        })
    }

    fn give(&mut self, slot: u32) {
        self.free.push(slot);
    }
}

/// What every op compiled from one event shares: the call, the pointer kind, the alignment
/// asked for, the P and the thread.
#[derive(Clone, Copy)]
struct Origin {
    call: Call,
    noscan: bool,
    align_log2: u8,
    p: u16,
    thread: u16,
}

impl Origin {
    fn of(ev: &Event, n: u64, cfg: &Config) -> Result<Origin, ReplayError> {
        let noscan = cfg.pointers.noscan(ev.kind);
        let thread = u16::try_from(ev.thread).map_err(|_| ReplayError::TooManyThreads {
            event: n,
            thread: ev.thread,
        })?;
        let align_log2 = if ev.op.has_align() && ev.align.is_power_of_two() {
            (ev.align.trailing_zeros() as u8).clamp(DEFAULT_ALIGN_LOG2, 30)
        } else {
            DEFAULT_ALIGN_LOG2
        };
        Ok(Origin {
            call: Call::of(ev.op),
            noscan,
            align_log2,
            p: cfg.p_of_thread(ev.thread) as u16,
            thread,
        })
    }

    /// An allocation of `size_bytes` into `slot`; a realloc when it moves the object in `old`.
    fn alloc(self, slot: u32, old: Option<u32>, size_bytes: u64) -> Op {
        let (kind, aux) = match old {
            Some(o) => (OpKind::Realloc, o),
            None => (OpKind::Alloc, u32::MAX),
        };
        Op {
            size_bytes,
            slot,
            aux,
            kind,
            call: self.call,
            noscan: self.noscan,
            align_log2: self.align_log2,
            p: self.p,
            thread: self.thread,
        }
    }

    /// The free of the object in `slot`, timed as `call` (a missed free is a `free`).
    fn free(self, slot: u32, call: Call) -> Op {
        Op {
            size_bytes: 0,
            slot,
            aux: u32::MAX,
            kind: OpKind::Free,
            call,
            noscan: self.noscan,
            align_log2: DEFAULT_ALIGN_LOG2,
            p: self.p,
            thread: self.thread,
        }
    }
}

/// A slot: the model address of the object and its requested size.
#[derive(Clone, Copy, Debug, Default)]
pub struct Slot {
    pub(crate) addr: u64,
    size_bytes: u64,
}

/// Result of running the model over a compiled trace.
#[derive(Clone, Debug, Default)]
pub struct RunStats {
    pub peak_heap_alloc_bytes: u64,
    /// The op after which HeapInuse first reached its peak (`None`: no op ran, or the run
    /// did not track it).
    pub peak_heap_inuse_op: Option<usize>,
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
        heap.current_event = i as u64;
        match op.kind {
            OpKind::Alloc => {
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
    run_touching(heap, compiled, Touch::Pages)
}

/// [`run`], writing into each new object what `touch` says.
pub fn run_touching(
    heap: &mut Heap,
    compiled: &Compiled,
    touch: Touch,
) -> Result<RunStats, ReplayError> {
    let mut st = Stepper::new(compiled.slots, touch);
    let start = Instant::now();
    let mut peak_inuse = 0;
    let mut peak_heap_inuse_op = None;
    for (i, op) in compiled.ops.iter().enumerate() {
        st.step(heap, i, op, compiled.time_of(i))?;
        let inuse = heap.mheap.stats.heap_inuse_bytes;
        if inuse > peak_inuse {
            peak_inuse = inuse;
            peak_heap_inuse_op = Some(i);
        }
    }
    let elapsed_ns = start.elapsed().as_nanos() as u64;
    #[cfg(feature = "check-invariants")]
    heap.check_invariants();
    Ok(RunStats {
        peak_heap_alloc_bytes: st.peak_heap_alloc_bytes,
        peak_heap_inuse_op,
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
