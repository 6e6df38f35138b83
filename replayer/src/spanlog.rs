//! The span log of `allocscope replay --span-log`: every span the Go model allocates or frees
//! (mheap.rs `alloc_span`, `free_span`), in the columns `export --format spans` gives the
//! runtime's own spans of an imported Go trace, so that the two can be compared row by row
//! (tests/go_spans.rs; replayer/FIDELITY.md "Span placement").
//!
//! Cost: the log is `MHeap::span_log`, an `Option` looked at once per span allocated or freed
//! and on the allocation slow paths (to stamp the event); the per-object fast paths do not see
//! it. A replay without `--span-log` has `None` there.
//!
//! `event` of a row is the op being replayed when the span came or went (`Heap::current_event`,
//! stamped on the slow paths that can allocate or free a span: `mcache.nextFree`, large
//! allocations, the `immediate` policy's frees, a GC cycle's start and end). Ops are the
//! trace's events one for one unless the replay skipped or split some (its anomalies: failed
//! calls, unknown frees, missed frees). A mark that ends on the clock ends before its op is
//! numbered: the spans its sweep frees carry the op before.
//!
//! The runtime's heap when tracing began ([`Seed`]): a Go execution trace starts with a
//! snapshot of the spans and objects the runtime already had. Replayed as allocations, those
//! objects would be packed into the model's own fresh spans, and every later span would land
//! elsewhere. With a seed the log's replay starts from the runtime's heap instead: model page 0
//! is the start of the runtime's 4 MiB chunk holding its lowest span (so chunk and 64-page
//! page-cache alignment are the runtime's), the pages below that span are in use (Go 1.27's
//! random padding pages, `markRandomPaddingPages`), every snapshot span is in use at its page
//! (spans of no heap objects, such as goroutine stacks, hold their pages and are never freed),
//! and the snapshot's objects (the trace's first `objects` events) sit at their own addresses
//! in them. Heap spans with free objects go to their mcentral's partial set, so they are used
//! before the heap grows, as the runtime's are. Not known from the trace, so not seeded: which
//! spans each P's mcache held and what its page cache held (the model's P caches start empty;
//! the first small span then takes the 64-page block of the lowest free page, as the
//! runtime's does when its cache is empty), the current tiny block, and spans the runtime
//! allocates during the window for no heap object (stacks), which the model never allocates.

use std::io::Write;

use crate::config::Config;
use crate::engine::{self, Compiled, OpKind, Stepper, Touch};
use crate::error::ReplayError;
use crate::malloc::Heap;
use crate::mspan::{SpanHome, SpanId};
use crate::pagealloc::CHUNK_PAGES;
use crate::sizeclass::{SizeClass, SpanClass};

/// What happened to a span (the `op` column).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SpanOp {
    /// The span was there when the replay began ([`Seed`]).
    Exists,
    Alloc,
    Free,
}

impl SpanOp {
    pub fn name(self) -> &'static str {
        match self {
            SpanOp::Exists => "exists",
            SpanOp::Alloc => "alloc",
            SpanOp::Free => "free",
        }
    }
}

/// One span allocated or freed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SpanRow {
    /// The op being replayed (see the module comment).
    pub event: u64,
    pub op: SpanOp,
    /// First page, from the model's heap base (page 0).
    pub page: u64,
    pub npages: u64,
    /// Go's `spanclass` (size class << 1 | noscan); -1 for a seeded span of no heap objects.
    pub span_class: i32,
}

/// The rows so far, and the op the next ones belong to.
#[derive(Clone, Debug, Default)]
pub struct SpanLog {
    /// Stamped from `Heap::current_event` on the slow paths (see the module comment).
    pub(crate) event: u64,
    rows: Vec<SpanRow>,
}

impl SpanLog {
    pub(crate) fn push(&mut self, op: SpanOp, page: u64, npages: u64, span_class: i32) {
        self.rows.push(SpanRow {
            event: self.event,
            op,
            page,
            npages,
            span_class,
        });
    }

    pub fn rows(&self) -> &[SpanRow] {
        &self.rows
    }

    /// The log as `export --format spans` writes the runtime's spans:
    /// `n,event,op,page,npages,span_class`, `page` counted from the lowest page of a span
    /// that exists or is allocated.
    pub fn write_csv(&self, mut out: impl Write) -> std::io::Result<()> {
        let first = self
            .rows
            .iter()
            .filter(|r| r.op != SpanOp::Free)
            .map(|r| r.page)
            .min()
            .unwrap_or(0);
        writeln!(out, "n,event,op,page,npages,span_class")?;
        for (n, r) in self.rows.iter().enumerate() {
            writeln!(
                out,
                "{n},{},{},{},{},{}",
                r.event,
                r.op.name(),
                r.page as i64 - first as i64,
                r.npages,
                r.span_class
            )?;
        }
        out.flush()
    }
}

/// The runtime's heap when tracing began, from an imported Go trace's side file (see the
/// module comment).
#[derive(Clone, Debug, Default)]
pub struct Seed {
    /// The runtime's page size (must be the model's).
    pub page_bytes: u64,
    /// The runtime address of page 0 of `spans` (the trace's minimum heap address).
    pub heap_base_addr: u64,
    /// The snapshot's spans, in the trace's order.
    pub spans: Vec<SeedSpan>,
    /// The trace's first `objects` events are the snapshot's objects, at their runtime
    /// addresses (`Event::addr`).
    pub objects: u64,
    /// The runtime's span allocations after the snapshot (only to learn which P's page cache
    /// held a block with free pages when tracing began: the P of the first small span placed
    /// in it).
    pub allocs: Vec<SeedAlloc>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SeedAlloc {
    /// The trace event it came with (events before it).
    pub event: u64,
    pub page: u64,
    pub npages: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SeedSpan {
    pub page: u64,
    pub npages: u64,
    /// Go's `spanclass`, -1 for a span of no heap objects.
    pub span_class: i32,
}

impl Heap {
    /// Gives the span log the op being replayed (a slow path is about to allocate or free
    /// spans). Nothing without a log.
    #[inline]
    pub(crate) fn stamp_span_log(&mut self) {
        if let Some(log) = self.mheap.span_log.as_deref_mut() {
            log.event = self.current_event;
        }
    }
}

/// Replays `events` through the Go model set up by `cfg`, from the runtime's heap when
/// `seed` is given, and returns every span the model allocated or freed. The memory results
/// are the plain replay's except for what the seed adds (the runtime's spans and pages).
pub fn replay<E: Into<ReplayError>>(
    forked_from: Option<u32>,
    events: impl IntoIterator<Item = Result<traces::Event, E>>,
    cfg: &Config,
    strict: bool,
    seed: Option<&Seed>,
) -> Result<SpanLog, ReplayError> {
    let mut heap = replay_heap(forked_from, events, cfg, strict, seed)?;
    Ok(*heap.mheap.span_log.take().expect("span log on"))
}

/// [`replay`], returning the heap with its log.
fn replay_heap<E: Into<ReplayError>>(
    forked_from: Option<u32>,
    events: impl IntoIterator<Item = Result<traces::Event, E>>,
    cfg: &Config,
    strict: bool,
    seed: Option<&Seed>,
) -> Result<Heap, ReplayError> {
    let mut heap = Heap::new(cfg)?;
    heap.mheap.span_log = Some(Box::default());
    let mut claims = seed.map(|s| Claims::new(s, cfg));
    let events = events.into_iter().enumerate().map(|(n, r)| {
        let r = r.map_err(Into::into);
        if let (Ok(ev), Some(c)) = (&r, claims.as_mut()) {
            c.see(n as u64, ev, &heap.mheap.classes);
        }
        r
    });
    let compiled = engine::compile(events, forked_from, cfg, &heap.mheap.classes, strict)?;
    let mut st = Stepper::new(compiled.slots, Touch::None);
    let first = match (seed, &claims) {
        (Some(seed), Some(claims)) => seed_heap(&mut heap, seed, claims, &compiled, &mut st)?,
        _ => 0,
    };
    for (i, op) in compiled.ops.iter().enumerate().skip(first) {
        st.step(&mut heap, i, op, compiled.time_of(i))?;
    }
    Ok(heap)
}

/// What the trace's events say of the runtime's state when tracing began that the snapshot
/// does not: the snapshot objects' addresses, which P had each span with free objects in its
/// mcache (the thread of the first later object placed in it), and each P's tiny block (the
/// first tiny object of each thread, when it went into a block of the snapshot). Memory: one
/// address per snapshot object and one entry per snapshot span and thread.
struct Claims<'c> {
    cfg: &'c Config,
    snapshot: u64,
    /// Runtime address of the seed's page 0, and its page bytes.
    heap_base_addr: u64,
    page_bytes: u64,
    /// The snapshot objects' runtime addresses, in event order.
    addrs: Vec<u64>,
    /// The seed's spans, and their indexes sorted by first page (to look an address up).
    spans: Vec<SeedSpan>,
    by_page: Vec<usize>,
    /// Per seed span: the thread and event of the first later object placed in it.
    first_use: Vec<Option<(u32, u64)>>,
    /// Per thread: the runtime address of its first tiny object after the snapshot.
    first_tiny: std::collections::BTreeMap<u32, u64>,
    /// 64-page blocks with free pages that a P's page cache may have held (see
    /// [`cache_blocks`]).
    cache_blocks: Vec<CacheClaim>,
}

impl<'c> Claims<'c> {
    fn new(seed: &Seed, cfg: &'c Config) -> Claims<'c> {
        let mut by_page: Vec<usize> = (0..seed.spans.len()).collect();
        by_page.sort_by_key(|&i| seed.spans[i].page);
        Claims {
            cfg,
            snapshot: seed.objects,
            heap_base_addr: seed.heap_base_addr,
            page_bytes: seed.page_bytes.max(1),
            addrs: Vec::new(),
            spans: seed.spans.clone(),
            by_page,
            first_use: vec![None; seed.spans.len()],
            first_tiny: Default::default(),
            cache_blocks: cache_blocks(seed, cfg.procs),
        }
    }

    fn p_of_thread(&self, thread: u32) -> usize {
        self.cfg.p_of_thread(thread)
    }

    fn see(&mut self, n: u64, ev: &traces::Event, classes: &crate::sizeclass::SizeClasses) {
        if n < self.snapshot {
            self.addrs.push(ev.addr);
            return;
        }

        if !ev.allocates() || ev.addr < self.heap_base_addr {
            return;
        }
        let noscan = self.cfg.pointers.noscan(ev.kind);
        let tiny = matches!(
            classes.place(ev.size, noscan, self.cfg.tiny_block_bytes()),
            crate::sizeclass::Placement::Tiny
        );
        if tiny {
            self.first_tiny.entry(ev.thread).or_insert(ev.addr);
        }
        let page = (ev.addr - self.heap_base_addr) / self.page_bytes;
        for b in &mut self.cache_blocks {
            if b.user.is_none()
                && b.first_span
                    .is_some_and(|(p, n)| (p..p + n).contains(&page))
            {
                b.user = Some((n, ev.thread));
            }
        }
        // The last seed span starting at or below `page`, if `page` is inside it.
        let k = self
            .by_page
            .partition_point(|&i| self.spans[i].page <= page);
        let Some(&i) = k.checked_sub(1).and_then(|k| self.by_page.get(k)) else {
            return;
        };
        let sp = self.spans[i];
        if page < sp.page + sp.npages && self.first_use[i].is_none() {
            self.first_use[i] = Some((ev.thread, n));
        }
    }
}

/// A 64-page block with free pages when tracing began.
struct CacheClaim {
    /// Its first page, counted as the seed's pages are.
    page: u64,
    /// Inside the snapshot's pages (a free block there was held by some P's cache).
    inside: bool,
    /// The first small span the runtime placed in it (page, pages).
    first_span: Option<(u64, u64)>,
    /// The event and thread of the first object placed in that span: its P held the block.
    user: Option<(u64, u32)>,
}

/// The 64-page blocks (absolute alignment) with free pages from the snapshot's lowest page to
/// `procs` blocks past its highest (each P's cache may hold one there), with the first small
/// span the runtime placed in each. Its first object's thread, not the span record's event,
/// names the P: events of different Ps are ordered by time, and a span can come a few events
/// before the object it was allocated for.
fn cache_blocks(seed: &Seed, procs: usize) -> Vec<CacheClaim> {
    let pb = seed.page_bytes.max(1);
    let abs0 = seed.heap_base_addr / pb;
    let (Some(lo), Some(hi)) = (
        seed.spans.iter().map(|s| s.page).min(),
        seed.spans.iter().map(|s| s.page + s.npages).max(),
    ) else {
        return Vec::new();
    };
    let end = (abs0 + hi).div_ceil(64) * 64 + 64 * procs as u64 - abs0;
    let mut used = vec![false; (end - lo) as usize];
    for s in &seed.spans {
        used[(s.page - lo) as usize..(s.page + s.npages - lo) as usize].fill(true);
    }
    let mut blocks: Vec<CacheClaim> = Vec::new();
    for (i, _) in used.iter().enumerate().filter(|(_, &u)| !u) {
        let block = (abs0 + lo + i as u64) / 64 * 64;
        let Some(page) = block.checked_sub(abs0) else {
            continue;
        };
        if blocks.last().map(|b| b.page) != Some(page) {
            let first_span = seed
                .allocs
                .iter()
                .find(|a| a.npages < 16 && (abs0 + a.page) / 64 * 64 == block)
                .map(|a| (a.page, a.npages));
            blocks.push(CacheClaim {
                page,
                inside: lo + (i as u64) < hi,
                first_span,
                user: None,
            });
        }
    }
    blocks
}

/// Installs `seed` in `heap` (see the module comment). Returns the ops it replayed: the
/// snapshot's allocations.
fn seed_heap(
    heap: &mut Heap,
    seed: &Seed,
    claims: &Claims,
    compiled: &Compiled,
    st: &mut Stepper,
) -> Result<usize, ReplayError> {
    let pb = heap.mheap.page_bytes;
    if seed.page_bytes != pb {
        return Err(ReplayError::Config(format!(
            "the trace's pages are {} bytes, the model's {pb}: the runtime's spans cannot be \
             placed",
            seed.page_bytes
        )));
    }
    let Some(lo) = seed.spans.iter().map(|s| s.page).min() else {
        return Ok(0);
    };
    let abs0 = seed.heap_base_addr / pb;
    // Model page 0 is the runtime's page `chunk0` (counted from `heap_base_addr`): the start of
    // the chunk holding the lowest span, or the heap base itself when that is not aligned.
    let chunk0 = ((abs0 + lo) / CHUNK_PAGES * CHUNK_PAGES).max(abs0) - abs0;
    let real_base = seed.heap_base_addr + chunk0 * pb;
    let model_base = heap.mheap.base_addr;
    let model_addr = |addr: u64| addr.checked_sub(real_base).map(|off| model_base + off);
    let large_noscan = SpanClass::new(SizeClass(0), true);
    let mh = &mut heap.mheap;
    if lo > chunk0 {
        // Go's random padding pages below the first span.
        mh.seed_span(0, lo - chunk0, large_noscan, None)?;
    }
    let nspc = mh.classes.num_span_classes();
    // Per seed span: the model's span, for heap spans.
    let mut ids = vec![None; seed.spans.len()];
    for (i, s) in seed.spans.iter().enumerate() {
        let page = s.page - chunk0;
        if s.span_class < 0 {
            mh.seed_span(page, s.npages, large_noscan, Some(-1))?;
            continue;
        }
        if s.span_class as usize >= nspc {
            return Err(ReplayError::Config(format!(
                "the trace has span class {}, past the model's size-class table",
                s.span_class
            )));
        }
        let spc = SpanClass(s.span_class as u8);
        ids[i] = Some(mh.seed_span(page, s.npages, spc, Some(s.span_class))?);
    }
    let n = claims.addrs.len().min(compiled.ops.len());
    let mut seeded = n;
    for (i, (op, &addr)) in compiled.ops[..n].iter().zip(&claims.addrs).enumerate() {
        let at = model_addr(addr)
            .and_then(|a| heap.mheap.span_of(a).map(|id| (a, id)))
            .filter(|(_, id)| ids.contains(&Some(*id)));
        let placed = match at {
            Some((a, id)) if op.kind == OpKind::Alloc && seed_object(heap, id, a) => Some(a),
            _ => None,
        };
        let Some(a) = placed else {
            // Not one op per snapshot object: the rest are replayed as allocations.
            seeded = i;
            break;
        };
        st.slots[op.slot as usize].addr = a;
    }
    // Spans with free objects: in the mcache of the P whose thread used them first, in that
    // order (a second span of a class for one P goes to the mcentral); spans no later object
    // went into stay on no list (an idle P's, or one no P needed).
    let sg = heap.mheap.sweepgen;
    let swept = crate::mcentral::swept_index(sg);
    let mut users: Vec<(u64, u32, SpanId)> = Vec::new();
    for (i, id) in ids.iter().enumerate() {
        let Some(id) = *id else { continue };
        let s = &heap.mheap.spans[id.index()];
        let has_free = !s.is_large() && s.alloc_count < s.nelems;
        let empty_large = s.is_large() && s.alloc_count == 0;
        match claims.first_use[i] {
            Some((thread, n)) if has_free => users.push((n, thread, id)),
            _ if has_free || empty_large => {}
            _ => heap.mheap.push_span(id, SpanHome::Full(swept)),
        }
    }
    users.sort_unstable();
    for (_, thread, id) in users {
        let p = claims.p_of_thread(thread);
        let spc = heap.mheap.spans[id.index()].spanclass as usize;
        if heap.mcaches[p].alloc[spc] == crate::mcache::EMPTY_SPAN {
            cache_seeded_span(heap, p, id);
        } else {
            heap.mheap.push_span(id, SpanHome::Partial(swept));
        }
    }
    // Blocks with free pages: the page cache of the P that used one first, in order of first
    // use; a block inside the snapshot's pages that no span went into was an idle P's, and
    // stays out of reach (its pages in use).
    let mut blocks: Vec<&CacheClaim> = claims.cache_blocks.iter().collect();
    blocks.sort_by_key(|b| b.user.map_or(u64::MAX, |u| u.0));
    for b in blocks {
        let Some(page) = b.page.checked_sub(chunk0) else {
            continue;
        };
        match b.user.map(|(_, t)| claims.p_of_thread(t)) {
            Some(p) if heap.mheap.pcache[p].is_empty() => {
                heap.mheap.pcache[p].block = heap.mheap.pages.take_block(page);
            }
            None if b.inside => {
                heap.mheap.pages.take_block(page);
            }
            _ => {}
        }
    }
    for (&thread, &addr) in &claims.first_tiny {
        let p = claims.p_of_thread(thread);
        if let Some(a) = model_addr(addr) {
            seed_tiny_block(heap, p, a);
        }
    }
    heap.update_trigger();
    Ok(seeded)
}

/// A snapshot object at model address `addr` in seeded span `id`: allocated there (a tiny
/// block counts one more reference). False when that slot is taken already.
fn seed_object(heap: &mut Heap, id: SpanId, addr: u64) -> bool {
    let mh = &mut heap.mheap;
    let tiny = mh.tiny_spc == Some(SpanClass(mh.spans[id.index()].spanclass));
    let s = &mut mh.spans[id.index()];
    let k = s.object_index(addr);
    if tiny && s.tiny_refs[k as usize] > 0 {
        s.tiny_refs[k as usize] = s.tiny_refs[k as usize].saturating_add(1);
        return true;
    }
    if s.is_allocated(k) {
        return false;
    }
    if s.is_large() {
        s.init_large();
    } else {
        s.take_at(k);
    }
    s.set_live(k, true);
    if tiny {
        s.tiny_refs[k as usize] = 1;
    }
    let elem = s.elem_bytes;
    mh.stats.heap_alloc_bytes += elem;
    mh.sweep.heap_live_bytes += elem;
    true
}

/// A seeded span with free objects becomes P `p`'s cached span of its class (as
/// `mcache.refill` and `mcentral.cacheSpan` leave one).
fn cache_seeded_span(heap: &mut Heap, p: usize, id: SpanId) {
    let sg = heap.mheap.sweepgen;
    let pb = heap.mheap.page_bytes;
    let s = &mut heap.mheap.spans[id.index()];
    s.sweepgen = sg + 3;
    s.home = SpanHome::Cached;
    s.alloc_count_before_cache = s.alloc_count as i64;
    s.prime_alloc_cache();
    let unused = s.npages as u64 * pb - s.alloc_count as u64 * s.elem_bytes;
    let spc = s.spanclass as usize;
    heap.mheap.sweep.heap_live_bytes += unused;
    heap.mcaches[p].alloc[spc] = id;
}

/// P `p`'s current tiny block is the snapshot block holding model address `addr` (its
/// thread's first tiny object after the snapshot), filled up to `addr`; nothing when `addr` is
/// in no such block.
fn seed_tiny_block(heap: &mut Heap, p: usize, addr: u64) {
    let Some(id) = heap.mheap.span_of(addr) else {
        return;
    };
    let s = &heap.mheap.spans[id.index()];
    if heap.mheap.tiny_spc != Some(SpanClass(s.spanclass)) {
        return;
    }
    let k = s.object_index(addr);
    if s.tiny_refs[k as usize] == 0 {
        return;
    }
    let block = s.object_addr(k);
    let mc = &mut heap.mcaches[p];
    mc.tiny_addr = block;
    mc.tiny_span = id;
    mc.tiny_index = k;
    mc.tiny_offset = addr - block;
}

#[cfg(test)]
mod tests {
    use super::*;
    use traces::{Event, Op, PtrKind};

    /// The runtime's heap base in the tests (4 MiB aligned, as Go's chunks are).
    const H: u64 = 0x1000_0000_0000;
    const PAGE: u64 = 8192;

    fn malloc(size: u64, addr: u64, scan: bool) -> Event {
        let mut ev = Event::new(Op::Malloc);
        ev.size = size;
        ev.nmemb = 1;
        ev.addr = addr;
        ev.kind = if scan { PtrKind::Scan } else { PtrKind::Noscan };
        ev
    }

    fn rows(log: &SpanLog, op: SpanOp) -> Vec<(u64, u64, i32)> {
        log.rows()
            .iter()
            .filter(|r| r.op == op)
            .map(|r| (r.page, r.npages, r.span_class))
            .collect()
    }

    /// A snapshot (a 64-byte pointer span half used at page 15, another untouched at page 40,
    /// a stack at 11, a large object at 16), then 64-byte objects until a new span is needed:
    /// the cached span's free slots go first, then the P's page cache (the block its first
    /// span went into, at page 21), never the span no later object used.
    #[test]
    fn a_seeded_heap_is_the_runtimes_and_keeps_its_invariants() {
        let cfg = Config {
            pointers: crate::config::Pointers::Trace,
            gogc: -1,
            ..Config::default()
        };
        let seed = Seed {
            page_bytes: PAGE,
            heap_base_addr: H,
            spans: vec![
                SeedSpan {
                    page: 15,
                    npages: 1,
                    span_class: 12,
                },
                SeedSpan {
                    page: 11,
                    npages: 4,
                    span_class: -1,
                },
                SeedSpan {
                    page: 16,
                    npages: 5,
                    span_class: 1,
                },
                SeedSpan {
                    page: 40,
                    npages: 1,
                    span_class: 12,
                },
            ],
            objects: 3,
            allocs: vec![SeedAlloc {
                event: 200,
                page: 21,
                npages: 1,
            }],
        };
        let mut events = vec![
            malloc(64, H + 15 * PAGE, true),
            malloc(64, H + 15 * PAGE + 64, true),
            malloc(40000, H + 16 * PAGE, false),
        ];
        // The first later object goes into the cached span at page 15, the one that needed a
        // new span into page 21; the others' addresses do not matter.
        events.push(malloc(64, H + 15 * PAGE + 128, true));
        events.push(malloc(64, H + 21 * PAGE, true));
        for k in 1..200 {
            events.push(malloc(64, 2 * H + 64 * k, true));
        }
        let heap = replay_heap(
            None,
            events.into_iter().map(Ok::<_, ReplayError>),
            &cfg,
            true,
            Some(&seed),
        )
        .unwrap();
        heap.check_invariants();
        let log = heap.mheap.span_log.as_deref().unwrap();
        // Model page 0 is the runtime's chunk: the same page numbers.
        assert_eq!(
            rows(log, SpanOp::Exists),
            vec![(15, 1, 12), (11, 4, -1), (16, 5, 1), (40, 1, 12)]
        );
        let nelems = heap.mheap.classes.nelems(SpanClass(12), cfg.green_tea) as u64;
        // 201 objects: the seeded span's free slots, then one new span per nelems.
        let new_spans = (201 - (nelems - 2)).div_ceil(nelems);
        let want: Vec<_> = (0..new_spans).map(|k| (21 + k, 1, 12)).collect();
        assert_eq!(rows(log, SpanOp::Alloc), want);
        // The span at page 40 was no P's to use: still empty.
        let s40 = heap.mheap.span_of(heap.mheap.page_addr(40)).unwrap();
        assert_eq!(heap.mheap.span(s40).alloc_count, 0);
    }

    #[test]
    fn the_csv_counts_pages_from_the_lowest_span() {
        let mut log = SpanLog::default();
        log.push(SpanOp::Alloc, 7, 1, 5);
        log.event = 3;
        log.push(SpanOp::Alloc, 9, 2, -1);
        log.push(SpanOp::Free, 7, 1, 5);
        let mut out = Vec::new();
        log.write_csv(&mut out).unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "n,event,op,page,npages,span_class\n0,0,alloc,0,1,5\n1,3,alloc,2,2,-1\n2,3,free,0,1,5\n"
        );
    }
}
