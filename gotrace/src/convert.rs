//! The runtime's alloc/free events as allocator calls.
//!
//! | Go trace | `.atrace` |
//! |---|---|
//! | `HeapObject` (the snapshot: live when tracing began), `HeapObjectAlloc` | `malloc` of the object's slot |
//! | `HeapObjectFree` (the sweeper found it dead) | `free`, at the sweeper's time by default: the object died at or before it (see `out.rs` for `--go-frees cycle-start`) |
//! | the P the writing M held | `thread` (Go's mcache is per P; GOMAXPROCS is in the side file) |
//! | timestamps | ns from the first generation's earliest batch |
//! | the object's Go type | `callsite` = the type's id in the side file's table (0: no type), `kind` from the span class's noscan bit (exact) |
//! | spans, GC cycles, heap figures, GOMAXPROCS | side records ([`crate::side`]) |
//!
//! Size. The trace gives an object's slot (its span's element size, or the pages of a large
//! object) and its type, not the bytes asked for. The request is taken as the most whole elements
//! of the type that fit the slot (less Go's 8-byte malloc header for pointer objects over 512
//! bytes): exact for a single value, and for slices grown by append (Go rounds their capacity up
//! to the slot); an upper bound for `make([]T, n)` whose n leaves room. An object without a type
//! (strings, raw byte buffers) takes its slot. The estimate is always one Go puts in the same
//! size class, so a replay places it where the runtime did.
//!
//! Tiny objects (pointer-free, under 16 bytes) share 16-byte blocks, and their ids lose the low
//! three bits of their address: the conversion gives each object of a block its own address
//! (block + n) and, when the sweeper frees the block, frees every object in it. An allocation
//! into a block that is already live is a tiny allocation that fitted (Go's `tiny_allocs`) when
//! the block is one its P is filling; an untyped tiny object (a short string) is taken as
//! [`UNTYPED_TINY_BYTES`].
//!
//! Clock nudges. An M's timestamps are kept strictly increasing by nudging, so a sweeper freeing
//! hundreds of objects runs ahead of the other Ms' clocks, and another P can be seen allocating in
//! a slot whose free comes "later". Such an allocation frees the slot's object first (counted as
//! `reordered`) and the sweeper's free, when it comes, is dropped: a slot's object cannot be freed
//! twice by one cycle's sweep, so the next free of that slot before the next GC ends is that one.

use rustc_hash::{FxHashMap, FxHashSet};
use traces::{Event, Op, PtrKind};

use crate::generation::HeapInfo;
use crate::merge::RawEvent;
use crate::out::{FreeTime, Out, Sink};
use crate::reader::GenInfo;
use crate::side::{
    Anomalies, Counts, GcOp, GcRecord, GoType, Metric, ProcsRecord, Record, SideHeader, SpanOp,
    SpanRecord, Summary, SCHEMA,
};
use crate::spec::ev;
use crate::GoTraceError;

/// Bytes assumed for a tiny object without a type (a string of 1..15 bytes).
pub const UNTYPED_TINY_BYTES: u64 = 4;
/// Go's tiny allocator: pointer-free objects under this size share blocks of this size.
pub const TINY_BYTES: u64 = 16;
/// The span class of tiny blocks: size class 2 (16 bytes), noscan.
const TINY_SPAN_CLASS: u8 = 2 << 1 | 1;
/// Go's `MallocHeaderSize` and the size above which pointer objects carry it.
const MALLOC_HEADER_BYTES: u64 = 8;
const MIN_SIZE_FOR_MALLOC_HEADER: u64 = 512;
/// Spans of small objects have at most this many pages (Go's largest is 10); every page of one is
/// indexed. Other spans index their first page only (a large object starts there).
const MAX_INDEXED_PAGES: u64 = 16;
/// The most distinct Go types kept, and the most bytes of their names; later ones count as the
/// last type kept.
pub const MAX_TYPES: usize = 1 << 20;
pub const MAX_TYPE_NAME_BYTES: usize = 64 << 20;
/// Ps past this number share its thread (the replayer numbers threads in 16 bits).
pub const MAX_P: u32 = u16::MAX as u32;
/// Assumed when a trace has no info batch (Go's values on every 64-bit platform).
const DEFAULT_INFO: HeapInfo = HeapInfo {
    min_heap_addr: 0x00c0_0000_0000,
    page_bytes: 8192,
    min_heap_align: 8,
    fixed_stack_bytes: 2048,
};

/// What the conversion needs besides the trace.
#[derive(Clone, Debug)]
pub struct Options {
    /// Bytes per object of each size class (index 0: large), Go's table (the CLI passes the
    /// replayer's, the one copy of it).
    pub class_bytes: Vec<u32>,
    pub frees: FreeTime,
    /// The Go trace's path, for the side file's header.
    pub source: String,
}

#[derive(Clone, Copy, Debug)]
struct SpanRef {
    /// First page (pages from `min_heap_addr`).
    base: u64,
    npages: u64,
    span_class: u8,
}

#[derive(Clone, Copy, Debug)]
struct Slot {
    /// Objects in it: 1 for an ordinary object, up to 16 for a tiny block.
    objects: u8,
    tiny: bool,
    /// A tiny block from the snapshot: the first P to fit into it claims it.
    unclaimed: bool,
    /// Push order before its latest allocation (a tiny block's last object): a free moved back by
    /// the cycle-start correction goes after it.
    last_alloc: u64,
}

/// The conversion. Feed it [`GenInfo`]s and [`RawEvent`]s in reader order, then [`finish`].
///
/// [`finish`]: Converter::finish
pub struct Converter<S: Sink> {
    opts: Options,
    out: Out<S>,
    info: Option<HeapInfo>,
    origin: Option<u64>,
    units_per_s: u64,
    gen_types: FxHashMap<u64, u32>,
    types: Vec<GoType>,
    type_ids: FxHashMap<(String, u64, u64), u32>,
    type_name_bytes: usize,
    m_p: FxHashMap<u64, u32>,
    /// Per P, the last two tiny blocks it took (Go fills one, and may keep the older one open).
    p_blocks: FxHashMap<u32, [u64; 2]>,
    /// Per P, Go's tiny allocator run on the sizes written (see [`Converter::tiny_size`]).
    p_tiny: FxHashMap<u32, TinySim>,
    spans: FxHashMap<u64, SpanRef>,
    owed_span_frees: FxHashSet<u64>,
    live: FxHashMap<u64, Slot>,
    owed_frees: FxHashSet<u64>,
    heap_live: u64,
    gc_n: u64,
    /// The marker whose cycle's frees are being swept now.
    sweeping_marker: Option<u32>,
    /// The marker of the cycle being marked (begun, not ended).
    marking_marker: Option<u32>,
    start_marker_placed: bool,
    snapshot_by_class: [u64; 256],
    counts: Counts,
    anomalies: Anomalies,
}

impl<S: Sink> Converter<S> {
    pub fn new(opts: Options, sink: S) -> Converter<S> {
        let mut c = Converter {
            out: Out::new(sink, opts.frees),
            opts,
            info: None,
            origin: None,
            units_per_s: 0,
            gen_types: FxHashMap::default(),
            types: Vec::new(),
            type_ids: FxHashMap::default(),
            type_name_bytes: 0,
            m_p: FxHashMap::default(),
            p_blocks: FxHashMap::default(),
            p_tiny: FxHashMap::default(),
            spans: FxHashMap::default(),
            owed_span_frees: FxHashSet::default(),
            live: FxHashMap::default(),
            owed_frees: FxHashSet::default(),
            heap_live: 0,
            gc_n: 0,
            sweeping_marker: None,
            marking_marker: None,
            start_marker_placed: false,
            snapshot_by_class: [0; 256],
            counts: Counts::default(),
            anomalies: Anomalies::default(),
        };
        c.types.push(GoType {
            id: 0,
            name: "(no type)".into(),
            size: 0,
            ptr_bytes: 0,
        });
        c
    }

    /// A generation starts. The first must carry the alloc/free info batch: without it the
    /// program did not run with the experiment on ([`GoTraceError::NoAllocFree`]).
    pub fn generation(
        &mut self,
        g: &GenInfo,
        format: crate::Format,
    ) -> Result<(), ConvertError<S::Error>> {
        self.counts.generations += 1;
        if self.origin.is_none() {
            if g.info.is_none() && g.types.is_empty() {
                return Err(ConvertError::Trace(GoTraceError::NoAllocFree(format!(
                    "this Go execution trace (format {}, {}) has no allocation events: the \
                     program ran without the alloc/free experiment; {}",
                    format.number(),
                    format.releases(),
                    crate::HOW_TO_TRACE
                ))));
            }
            self.origin = Some(g.min_time);
            self.info = g.info;
            let header = SideHeader {
                schema: SCHEMA,
                format: format.number(),
                go: format.releases().into(),
                source: self.opts.source.clone(),
                heap: g.info,
                frees: match self.opts.frees {
                    FreeTime::Sweep => "sweep".into(),
                    FreeTime::CycleStart => "cycle_start".into(),
                },
            };
            self.out
                .record(Record::Header(header))
                .map_err(ConvertError::Sink)?;
        } else if self.info.is_none() {
            self.info = g.info;
        }
        if g.clock.units_per_s != 0 {
            self.units_per_s = g.clock.units_per_s;
        }
        self.gen_types.clear();
        for t in &g.types {
            let gid = self.intern(&t.name, t.size, t.ptr_bytes);
            self.gen_types.insert(t.id, gid);
        }
        Ok(())
    }

    fn intern(&mut self, name: &str, size: u64, ptr_bytes: u64) -> u32 {
        let key = (name.to_owned(), size, ptr_bytes);
        if let Some(&id) = self.type_ids.get(&key) {
            return id;
        }
        if self.types.len() >= MAX_TYPES || self.type_name_bytes + name.len() > MAX_TYPE_NAME_BYTES
        {
            return (self.types.len() - 1) as u32;
        }
        self.type_name_bytes += name.len();
        let id = self.types.len() as u32;
        self.types.push(GoType {
            id,
            name: key.0.clone(),
            size,
            ptr_bytes,
        });
        self.type_ids.insert(key, id);
        id
    }

    /// Nanoseconds since the trace's start.
    #[inline]
    fn ns(&self, time: u64) -> u64 {
        let units = self.units_per_s.max(1) as u128;
        let since = time.saturating_sub(self.origin.unwrap_or(0)) as u128;
        (since * 1_000_000_000 / units).min(u64::MAX as u128) as u64
    }

    fn heap(&self) -> HeapInfo {
        self.info.unwrap_or(DEFAULT_INFO)
    }

    /// The next event in reader order.
    #[inline]
    pub fn event(&mut self, e: &RawEvent) -> Result<(), ConvertError<S::Error>> {
        self.counts.go_events += 1;
        let r = match e.typ {
            ev::HEAP_OBJECT_ALLOC => {
                self.place_start_marker(e.time)
                    .map_err(ConvertError::Sink)?;
                self.counts.allocs += 1;
                self.alloc(e, false)
            }
            ev::HEAP_OBJECT_FREE => {
                self.place_start_marker(e.time)
                    .map_err(ConvertError::Sink)?;
                self.counts.sweeper_frees += 1;
                self.free(e)
            }
            ev::HEAP_OBJECT => {
                self.counts.snapshot_objects += 1;
                self.alloc(e, true)
            }
            ev::SPAN | ev::SPAN_ALLOC => self.span_alloc(e),
            ev::SPAN_FREE => self.span_free(e),
            ev::GOROUTINE_STACK_ALLOC => {
                self.counts.goroutine_stack_allocs += 1;
                Ok(())
            }
            _ => self.other(e),
        };
        r.map_err(ConvertError::Sink)
    }

    /// Frees of cycles that began before tracing are moved to just after the snapshot.
    fn place_start_marker(&mut self, time: u64) -> Result<(), S::Error> {
        if !self.start_marker_placed {
            self.start_marker_placed = true;
            let ts = self.ns(time);
            self.out.marker(0, ts)?;
            self.sweeping_marker = Some(0);
        }
        Ok(())
    }

    fn thread(&self, m: u64) -> u32 {
        self.m_p.get(&m).copied().unwrap_or(0).min(MAX_P)
    }

    /// Scheduling, GC and heap events: P tracking and side records.
    fn other(&mut self, e: &RawEvent) -> Result<(), S::Error> {
        let ts_ns = self.ns(e.time);
        match e.typ {
            ev::PROC_START => {
                self.m_p.insert(e.m, e.args[0] as u32);
            }
            ev::PROC_STOP => {
                self.m_p.remove(&e.m);
            }
            // Status 1: running on this M.
            ev::PROC_STATUS if e.args[1] == 1 => {
                self.m_p.insert(e.m, e.args[0] as u32);
            }
            ev::PROC_STEAL => {
                let (p, victim) = (e.args[0] as u32, e.args[2]);
                if self.m_p.get(&victim) == Some(&p) {
                    self.m_p.remove(&victim);
                }
            }
            ev::PROCS_CHANGE => {
                let rec = ProcsRecord {
                    event: 0,
                    ts_ns,
                    n: e.args[0],
                };
                self.out.record(Record::Procs(rec))?;
            }
            ev::HEAP_ALLOC => {
                self.heap_live = e.args[0];
                let rec = Metric {
                    event: 0,
                    ts_ns,
                    bytes: e.args[0],
                };
                self.out.record(Record::HeapAlloc(rec))?;
            }
            ev::HEAP_GOAL => {
                let rec = Metric {
                    event: 0,
                    ts_ns,
                    bytes: e.args[0],
                };
                self.out.record(Record::HeapGoal(rec))?;
            }
            ev::GC_BEGIN => return self.gc_begin(ts_ns, GcOp::Begin),
            ev::GC_ACTIVE if self.marking_marker.is_none() && self.gc_n == 0 => {
                return self.gc_begin(ts_ns, GcOp::Active)
            }
            ev::GC_END => return self.gc_end(ts_ns),
            _ => {}
        }
        Ok(())
    }

    fn gc_begin(&mut self, ts_ns: u64, op: GcOp) -> Result<(), S::Error> {
        self.gc_n += 1;
        self.counts.gc_cycles += 1;
        let marker = self.gc_n as u32;
        // A cycle running when tracing began started before the trace: its frees go to the
        // start marker.
        if op == GcOp::Begin {
            self.out.marker(marker, ts_ns)?;
            self.marking_marker = Some(marker);
        } else {
            self.marking_marker = Some(0);
        }
        let rec = GcRecord {
            event: 0,
            ts_ns,
            op,
            n: self.gc_n,
            heap_live: self.heap_live,
        };
        self.out.record(Record::Gc(rec))
    }

    fn gc_end(&mut self, ts_ns: u64) -> Result<(), S::Error> {
        // Every free of the cycle swept until now is known: Go sweeps it all before marking.
        let ended = self.marking_marker.take().unwrap_or(0);
        self.out.release_before(ended)?;
        self.sweeping_marker = Some(ended);
        self.owed_frees.clear();
        self.owed_span_frees.clear();
        // Go drops every P's tiny block when the cycle's sweep starts (mcache.releaseAll).
        self.p_tiny.clear();
        let rec = GcRecord {
            event: 0,
            ts_ns,
            op: GcOp::End,
            n: self.gc_n,
            heap_live: self.heap_live,
        };
        self.out.record(Record::Gc(rec))
    }

    fn span_alloc(&mut self, e: &RawEvent) -> Result<(), S::Error> {
        let (page, npages, kindclass) = (e.args[0], e.args[1], e.args[2]);
        let heap = kindclass & 1 == 0;
        let span_class = (kindclass >> 1) as u8;
        let op = if e.typ == ev::SPAN {
            SpanOp::Exists
        } else {
            self.counts.span_allocs += 1;
            SpanOp::Alloc
        };
        if heap && kindclass >> 1 <= u8::MAX as u64 {
            if self
                .spans
                .get(&page)
                .is_some_and(|s| s.base == page && op == SpanOp::Alloc)
            {
                // The free of the span that was here comes later in time order (clock nudges).
                self.owed_span_frees.insert(page);
            }
            let s = SpanRef {
                base: page,
                npages,
                span_class,
            };
            let indexed = if span_class >> 1 != 0 && npages <= MAX_INDEXED_PAGES {
                npages.max(1)
            } else {
                1
            };
            for p in page..page.saturating_add(indexed) {
                self.spans.insert(p, s);
            }
        }
        let rec = SpanRecord {
            event: 0,
            ts_ns: self.ns(e.time),
            op,
            page,
            npages,
            span_class: if heap { span_class as i32 } else { -1 },
        };
        self.out.record(Record::Span(rec))
    }

    fn span_free(&mut self, e: &RawEvent) -> Result<(), S::Error> {
        let page = e.args[0];
        self.counts.span_frees += 1;
        let mut rec = SpanRecord {
            event: 0,
            ts_ns: self.ns(e.time),
            op: SpanOp::Free,
            page,
            npages: 0,
            span_class: -1,
        };
        if !self.owed_span_frees.remove(&page) {
            if let Some(s) = self.spans.get(&page).copied().filter(|s| s.base == page) {
                rec.npages = s.npages;
                rec.span_class = s.span_class as i32;
                let indexed = s.npages.clamp(1, MAX_INDEXED_PAGES);
                for p in page..page.saturating_add(indexed) {
                    if self.spans.get(&p).is_some_and(|x| x.base == page) {
                        self.spans.remove(&p);
                    }
                }
            }
        }
        self.out.record(Record::Span(rec))
    }

    /// Bytes of one slot of span `s`.
    fn elem_bytes(&self, s: &SpanRef) -> Option<u64> {
        let class = (s.span_class >> 1) as usize;
        if class == 0 {
            return Some(s.npages.saturating_mul(self.heap().page_bytes));
        }
        self.opts
            .class_bytes
            .get(class)
            .map(|&b| b as u64)
            .filter(|&b| b > 0)
    }

    fn alloc(&mut self, e: &RawEvent, snapshot: bool) -> Result<(), S::Error> {
        let info = self.heap();
        let (id, type_id) = (e.args[0], e.args[1]);
        let offset = id.saturating_mul(info.min_heap_align);
        let addr = info.min_heap_addr.saturating_add(offset);
        let gid = match type_id {
            0 => 0,
            t => match self.gen_types.get(&t) {
                Some(&g) => g,
                None => {
                    self.anomalies.unknown_types += 1;
                    0
                }
            },
        };
        let (tsize, ptr_bytes) = {
            let t = &self.types[gid as usize];
            (t.size, t.ptr_bytes)
        };
        let thread = self.thread(e.m);
        let mut ev = Event::new(Op::Malloc);
        ev.thread = thread;
        ev.ts_ns = self.ns(e.time);
        ev.callsite = Some(gid);
        let span = self.spans.get(&(offset / info.page_bytes)).copied();
        let Some((span, elem)) = span.and_then(|s| Some((s, self.elem_bytes(&s)?))) else {
            self.anomalies.outside_spans += 1;
            ev.kind = if ptr_bytes > 0 {
                PtrKind::Scan
            } else {
                PtrKind::Noscan
            };
            ev.size = tsize.max(1);
            return self.place(ev, addr);
        };
        let noscan = span.span_class & 1 == 1;
        if noscan == (ptr_bytes > 0) && gid != 0 {
            self.anomalies.kind_mismatches += 1;
        }
        ev.kind = if noscan {
            PtrKind::Noscan
        } else {
            PtrKind::Scan
        };
        let span_start = info.min_heap_addr + span.base * info.page_bytes;
        let slot = span_start + (addr.saturating_sub(span_start) / elem) * elem;
        if snapshot {
            self.snapshot_by_class[span.span_class as usize] += 1;
        }
        let tiny = span.span_class == TINY_SPAN_CLASS && (gid == 0 || tsize < TINY_BYTES);
        if tiny {
            ev.size = match gid {
                _ if snapshot => TINY_BYTES,
                0 => UNTYPED_TINY_BYTES,
                _ => tsize.max(1),
            };
            return self.tiny(ev, slot, snapshot);
        }
        ev.size = request_bytes(elem, noscan, span.span_class >> 1 == 0, tsize);
        if let Some(prev) = self.prev_class_bytes(&span) {
            let header = if !noscan && ev.size > MIN_SIZE_FOR_MALLOC_HEADER {
                MALLOC_HEADER_BYTES
            } else {
                0
            };
            if ev.size + header <= prev {
                ev.size = if !noscan && elem > MIN_SIZE_FOR_MALLOC_HEADER {
                    elem - MALLOC_HEADER_BYTES
                } else {
                    elem
                };
            }
        }
        self.place(ev, slot)
    }

    /// The size of the class below `s`'s (objects of `s` are larger), for small spans.
    fn prev_class_bytes(&self, s: &SpanRef) -> Option<u64> {
        let class = (s.span_class >> 1) as usize;
        if class == 0 {
            // A large object is above the largest small size.
            let largest = *self.opts.class_bytes.last()? as u64;
            return Some(largest - MALLOC_HEADER_BYTES);
        }
        self.opts.class_bytes.get(class - 1).map(|&b| b as u64)
    }

    /// An ordinary object at `slot`.
    fn place(&mut self, mut ev: Event, slot: u64) -> Result<(), S::Error> {
        if self.live.contains_key(&slot) {
            self.displace(slot, ev.thread, ev.ts_ns)?;
        }
        ev.addr = slot;
        self.live.insert(
            slot,
            Slot {
                objects: 1,
                tiny: false,
                unclaimed: false,
                last_alloc: self.out.pushed,
            },
        );
        self.out.event(ev)
    }

    /// An allocation found the slot still live: its free is still to come in time order.
    fn displace(&mut self, slot: u64, thread: u32, ts_ns: u64) -> Result<(), S::Error> {
        self.anomalies.reordered += 1;
        self.owed_frees.insert(slot);
        if let Some(old) = self.live.remove(&slot) {
            self.emit_frees(slot, old, thread, ts_ns, false)?;
        }
        Ok(())
    }

    fn emit_frees(
        &mut self,
        slot: u64,
        s: Slot,
        thread: u32,
        ts_ns: u64,
        swept: bool,
    ) -> Result<(), S::Error> {
        for i in 0..s.objects as u64 {
            let mut ev = Event::new(Op::Free);
            ev.thread = thread;
            ev.ts_ns = ts_ns;
            ev.old_addr = slot + i;
            self.counts.frees += 1;
            if swept {
                let marker = self.sweeping_marker;
                self.out.free(ev, marker, s.last_alloc)?;
            } else {
                // Implied by the slot's reuse: it stays where it is, like a free not moved.
                if self.out.mode() == FreeTime::CycleStart {
                    self.out.kept += 1;
                }
                self.out.event(ev)?;
            }
        }
        Ok(())
    }

    /// A tiny object in block `block`.
    fn tiny(&mut self, mut ev: Event, block: u64, snapshot: bool) -> Result<(), S::Error> {
        let p = ev.thread;
        let recent = self.p_blocks.get(&p).copied().unwrap_or([0; 2]);
        if let Some(s) = self.live.get(&block).copied() {
            let filling = s.tiny && (recent.contains(&block) || s.unclaimed) && !snapshot;
            if filling && (s.objects as u64) < TINY_BYTES {
                ev.size = self.tiny_size(p, ev.size, true);
                ev.addr = block + s.objects as u64;
                self.live.insert(
                    block,
                    Slot {
                        objects: s.objects + 1,
                        unclaimed: false,
                        last_alloc: self.out.pushed,
                        ..s
                    },
                );
                self.counts.tiny_fits += 1;
                self.claim(p, block);
                return self.out.event(ev);
            }
            self.displace(block, ev.thread, ev.ts_ns)?;
        }
        if !snapshot {
            ev.size = self.tiny_size(p, ev.size, false);
        }
        ev.addr = block;
        self.live.insert(
            block,
            Slot {
                objects: 1,
                tiny: true,
                unclaimed: snapshot,
                last_alloc: self.out.pushed,
            },
        );
        if !snapshot {
            self.claim(p, block);
        }
        self.out.event(ev)
    }

    /// The size to write for a tiny object of estimated size `estimate` that the runtime put into
    /// P's current block (`fits`) or into a new block: the estimate when Go's rule, run on the
    /// sizes written so far, makes the same choice, else the nearest size (1..15) that does. A
    /// replay then packs tiny objects as the runtime did, though the trace does not say their
    /// sizes.
    fn tiny_size(&mut self, p: u32, estimate: u64, fits: bool) -> u64 {
        let sim = self.p_tiny.entry(p).or_default();
        let e = estimate.clamp(1, TINY_BYTES - 1);
        let would_fit = |s: u64| sim.open && tiny_align(sim.off, s) + s <= TINY_BYTES;
        let size = if would_fit(e) == fits {
            e
        } else if fits {
            (1..e).rev().find(|&s| would_fit(s)).unwrap_or(e)
        } else {
            (e + 1..TINY_BYTES).find(|&s| !would_fit(s)).unwrap_or(e)
        };
        // What Go's rule does with the size chosen (the same as the runtime did, unless no size
        // could make it so).
        if would_fit(size) {
            sim.off = tiny_align(sim.off, size) + size;
        } else if !sim.open || size < sim.off {
            *sim = TinySim {
                open: true,
                off: size,
            };
        }
        size
    }

    fn claim(&mut self, p: u32, block: u64) {
        let b = self.p_blocks.entry(p).or_insert([0; 2]);
        if b[0] != block {
            *b = [block, b[0]];
        }
    }

    fn free(&mut self, e: &RawEvent) -> Result<(), S::Error> {
        let info = self.heap();
        let slot = info
            .min_heap_addr
            .saturating_add(e.args[0].saturating_mul(info.min_heap_align));
        if self.owed_frees.remove(&slot) {
            return Ok(());
        }
        let thread = self.thread(e.m);
        let ts = self.ns(e.time);
        match self.live.remove(&slot) {
            Some(s) => self.emit_frees(slot, s, thread, ts, true),
            None => {
                self.anomalies.unknown_frees += 1;
                Ok(())
            }
        }
    }

    /// Writes what is queued and the summary; returns the sink and the summary.
    pub fn finish(mut self) -> Result<(S, Summary), ConvertError<S::Error>> {
        if self.origin.is_none() {
            return Err(ConvertError::Trace(GoTraceError::NoAllocFree(format!(
                "the Go execution trace holds no generation: nothing to import; {}",
                crate::HOW_TO_TRACE
            ))));
        }
        self.counts.frees_moved = self.out.moved;
        self.counts.frees_kept = self.out.kept;
        let summary = Summary {
            types: std::mem::take(&mut self.types),
            counts: self.counts.clone(),
            anomalies: self.anomalies.clone(),
            snapshot_by_class: self
                .snapshot_by_class
                .iter()
                .enumerate()
                .filter(|(_, &n)| n > 0)
                .map(|(c, &n)| (c as u8, n))
                .collect(),
            trace_digest: String::new(),
        };
        let sink = self.out.finish().map_err(ConvertError::Sink)?;
        Ok((sink, summary))
    }

    /// Whether frees are moved to their cycle's start.
    pub fn free_time(&self) -> FreeTime {
        self.out.mode()
    }
}

/// Go's tiny allocator state of one P, as a replay will see it.
#[derive(Clone, Copy, Debug, Default)]
struct TinySim {
    open: bool,
    /// Bytes of the current block in use.
    off: u64,
}

/// Go's tiny alignment (`mallocgcTiny`): 8, 4 or 2 by the size's low bits, else 1.
fn tiny_align(off: u64, size: u64) -> u64 {
    let a = if size & 7 == 0 {
        8
    } else if size & 3 == 0 {
        4
    } else if size & 1 == 0 {
        2
    } else {
        1
    };
    (off + a - 1) & !(a - 1)
}

/// The bytes asked for, estimated from the slot and the type (see the module comment).
fn request_bytes(elem: u64, noscan: bool, large: bool, type_bytes: u64) -> u64 {
    let usable = if !noscan && !large && elem > MIN_SIZE_FOR_MALLOC_HEADER {
        elem - MALLOC_HEADER_BYTES
    } else {
        elem
    };
    match type_bytes {
        0 => usable,
        t if t > usable => usable,
        t => usable / t * t,
    }
}

/// A conversion error: the trace's, or the sink's (writing).
#[derive(Debug)]
pub enum ConvertError<E> {
    Trace(GoTraceError),
    Sink(E),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_estimates() {
        // A 40-byte struct in the 48-byte class.
        assert_eq!(request_bytes(48, false, false, 40), 40);
        // A []int grown by append fills its 64-byte slot.
        assert_eq!(request_bytes(64, true, false, 8), 64);
        // A pointer object over 512 bytes leaves room for the malloc header.
        assert_eq!(request_bytes(1152, false, false, 8), 1144);
        // No type: the slot.
        assert_eq!(request_bytes(2048, true, false, 0), 2048);
        // Large objects have no header.
        assert_eq!(request_bytes(40960, false, true, 8), 40960);
    }
}
