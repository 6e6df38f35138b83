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
use crate::sizeclass::{
    SizeClass, SizeClasses, MALLOC_HEADER_BYTES, MIN_SIZE_FOR_MALLOC_HEADER_BYTES,
};

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

/// One compiled call (24 bytes).
#[derive(Clone, Copy, Debug)]
pub struct Op {
    pub size_bytes: u64,
    pub slot: u32,
    pub aux: u32,
    pub kind: OpKind,
    pub noscan: bool,
    pub p: u16,
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
}

/// The bytes a request occupies in the model: class size, whole pages, or its own size when it
/// is packed by the tiny allocator. Returns (class, bytes).
pub fn rounded(classes: &SizeClasses, cfg: &Config, size: u64, noscan: bool) -> (SizeClass, u64) {
    let max_small = classes.max_small_bytes() as u64 - MALLOC_HEADER_BYTES;
    if size == 0 {
        return (SizeClass(0), 0);
    }
    if size > max_small {
        let page = classes.page_bytes() as u64;
        return (SizeClass(0), size.div_ceil(page) * page);
    }
    if noscan && cfg.tiny && size < cfg.tiny_block {
        return (classes.class_for(cfg.tiny_block), size);
    }
    let with_header = if !noscan && size > MIN_SIZE_FOR_MALLOC_HEADER_BYTES {
        size + MALLOC_HEADER_BYTES
    } else {
        size
    };
    let c = classes.class_for(with_header);
    (c, classes.size_bytes(c) as u64)
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
                c.ops.push(Op {
                    size_bytes: 0,
                    slot,
                    aux: u32::MAX,
                    kind: OpKind::Free,
                    noscan,
                    p,
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
            c.ops.push(Op {
                size_bytes: size,
                slot,
                aux,
                kind,
                noscan,
                p,
            });
            if let Some(o) = old {
                free_slots.push(o);
            }
        } else if let Some(o) = old {
            c.ops.push(Op {
                size_bytes: 0,
                slot: o,
                aux: u32::MAX,
                kind: OpKind::Free,
                noscan,
                p,
            });
            free_slots.push(o);
        }
    }
    Ok(c)
}

/// A slot: the model address of the object and its requested size.
#[derive(Clone, Copy, Debug, Default)]
struct Slot {
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

/// Runs the model over the op stream.
pub fn run(heap: &mut Heap, compiled: &Compiled) -> Result<RunStats, ReplayError> {
    let mut slots = vec![Slot::default(); compiled.slots as usize];
    let mut peak_alloc = 0u64;
    let start = Instant::now();
    for (i, op) in compiled.ops.iter().enumerate() {
        let p = op.p as usize;
        match op.kind {
            OpKind::Alloc => {
                heap.current_event = i as u64;
                let addr = heap.malloc(op.size_bytes, op.noscan, p)?;
                heap.mheap.arena.touch(addr, op.size_bytes, i as u8);
                slots[op.slot as usize] = Slot {
                    addr,
                    size_bytes: op.size_bytes,
                };
                peak_alloc = peak_alloc.max(heap.mheap.stats.heap_alloc_bytes);
            }
            OpKind::Free => {
                let s = slots[op.slot as usize];
                heap.free(s.addr);
            }
            OpKind::Realloc => {
                heap.current_event = i as u64;
                let addr = heap.malloc(op.size_bytes, op.noscan, p)?;
                let old = slots[op.aux as usize];
                let n = old.size_bytes.min(op.size_bytes);
                if addr != crate::malloc::ZEROBASE_ADDR && old.addr != crate::malloc::ZEROBASE_ADDR
                {
                    heap.mheap.arena.copy(addr, old.addr, n);
                }
                heap.mheap.arena.touch(addr, op.size_bytes, i as u8);
                slots[op.slot as usize] = Slot {
                    addr,
                    size_bytes: op.size_bytes,
                };
                peak_alloc = peak_alloc.max(heap.mheap.stats.heap_alloc_bytes);
                heap.free(old.addr);
            }
        }
    }
    let elapsed_ns = start.elapsed().as_nanos() as u64;
    #[cfg(feature = "check-invariants")]
    heap.check_invariants();
    Ok(RunStats {
        peak_heap_alloc_bytes: peak_alloc,
        elapsed_ns,
        ops: compiled.ops.len() as u64,
    })
}
