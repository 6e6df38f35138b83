//! The replayer: a model of the Go runtime's heap allocator running on real memory, and the
//! engine that replays allocation traces through it.
//!
//! # The story of an allocation
//!
//! The engine (`engine.rs`) compiles a trace into ops on slots and replays each allocation as
//! [`Heap::malloc`] (`malloc.rs`, Go's `mallocgc`) on the P the recorded thread maps to. One
//! rule, [`sizeclass::SizeClasses::place`], decides where the request goes:
//!
//! - **size 0** gets the address of `zerobase`; nothing is allocated.
//! - **tiny** (pointer-free, under the 16-byte tiny block): packed into the P's current tiny
//!   block (`MCache::tiny_*`, `mcache.rs`) at an offset aligned by size. When it does not fit,
//!   a new block is taken as a small object of the tiny span class.
//! - **small** (up to 32 KiB less the malloc header): the P's mcache holds one span per span
//!   class (`MCache::alloc`); `MSpan::next_free_fast` (`mspan.rs`) takes the next free slot
//!   from the span's 64-bit alloc cache. That is the fast path. When the cache word is spent,
//!   `MHeap::next_free` (`mcache.rs`) scans the span's alloc bits; when the span is full,
//!   `refill` gives it back to its mcentral and asks for another (`MHeap::cache_span`,
//!   `mcentral.rs`): a swept span with free slots, else an unswept one it sweeps now
//!   (`sweep.rs`), else a fresh span from the page heap (`MHeap::alloc`, `mheap.rs`). The page
//!   heap sweeps to reclaim pages first while a sweep is unfinished, then takes pages from the
//!   P's page cache (`pagecache.rs`) or by first fit from the page allocator (`pagealloc.rs`),
//!   and grows by 4 MiB chunks of real, mmap'd memory (`arena.rs`) when nothing fits.
//! - **large**: a span of whole pages of its own (`MHeap::alloc_large`, `mcache.rs`).
//!
//! Allocation counts and byte totals are kept in `MStats` (`mstats.rs`) as Go keeps them;
//! [`Heap::memstats`] reads them as `runtime.ReadMemStats` would. A refill or a large
//! allocation raises heapLive (`SweepState::heap_live_bytes`) and checks the GC trigger. A
//! request no heap could hold (past `arena::MAX_HEAP_BYTES`) fails as C's malloc fails.
//!
//! A free in the trace ([`Heap::free`]) only makes the object dead (`MSpan::live_bits`) under
//! the default `gc` free policy: its slot comes back when a GC cycle has run and its span is
//! swept. The `immediate` policy returns the slot at once and runs no GC.
//!
//! # The story of a GC cycle
//!
//! When heapLive reaches the pacer's trigger (`Pacer::trigger_bytes`, `pacer.rs`), `gc_start`
//! (`mgc.rs`) finishes the previous sweep, takes the mark snapshot (each span's live bits
//! become its mark bits: what Go's mark would find) and opens a mark phase (`Gc`, `mgc.rs`):
//! new objects are allocated marked. The mark lasts a time on the trace's clock when the trace
//! has timestamps (`Heap::advance_clock` ends it), else an amount of allocation. At its end
//! `gc_mark_termination` records heapMarked in the pacer, advances `sweepgen` so every span is
//! unswept, gives back every mcache's spans, and the pacer commits the next goal and trigger
//! (`Pacer::commit`, `Pacer::update`); the sweeper and the scavenger are paced (`sweep.rs`,
//! `scavenge.rs`), and the background sweeper and scavenger run. Spans not swept by then are
//! swept when allocation needs them: proportionally before each span allocation
//! (`deduct_sweep_credit`), by an mcentral looking for a span, by the page heap's reclaim.
//!
//! # Who owns what
//!
//! State lives in the structure that owns it in Go; fields are `pub(crate)` at most and each
//! says who changes it.
//!
//! | struct (file) | holds | changed by |
//! |---|---|---|
//! | [`Heap`] (`malloc.rs`) | the parts below, the trace's clock, failed and zero-size counts | its methods |
//! | `MHeap` (`mheap.rs`) | spans, the page map, page allocator and caches, mcentrals, `sweepgen`, stats | mheap, mcentral, mcache, sweep, scavenge |
//! | `MSpan` (`mspan.rs`) | alloc/mark/live bits, `freeindex`, the list it is on | its methods; `home`, `sweepgen` by whoever moves it |
//! | `MCache` (`mcache.rs`) | a P's cached spans, its tiny block | malloc.rs (tiny path), `refill`, `release_all` |
//! | `Pacer` (`pacer.rs`) | goal, trigger, cons/mark, heapMarked | `commit`, `update`, `observe_mark`; mark termination |
//! | `Gc` (`mgc.rs`) | the running mark phase, finished cycles | `gc_start`, `gc_mark_termination` |
//! | `SweepState` (`sweep.rs`) | heapLive, what is left to sweep, sweep pacing | sweep.rs, `refill`, `release_all`, mark termination |
//!
//! # Checks, in three tiers
//!
//! As the Go runtime and mimalloc check theirs, the model checks its invariants at three costs:
//! - `assert!`, in every build: what would corrupt memory or silently give wrong figures if it
//!   broke (an object index past the span, an arena address not mapped, a sweep that raises an
//!   allocation count), Go's `throw`;
//! - `debug_assert!` on hot and slow paths: cheap local facts (an object handed out is not
//!   live, a span pushed on a list is on none, the pacer's trigger is at most its goal);
//! - the `check-invariants` feature (`cargo test -p replayer --features check-invariants`,
//!   which `./test` runs): after each slow-path operation (an mcache refill, a large
//!   allocation, an immediate free, a sweep) the structures it changed are walked, and after
//!   each GC phase change (cycle start, mark termination) and at the end of a run the whole
//!   heap is ([`Heap::check_invariants`]: spans, page map and page allocator, page caches,
//!   mcentral lists, mcaches, sweep counts, statistics, pacer).
//!
//! # Modules
//!
//! One module per Go structure, each opening with what it models, its invariants and where it
//! deliberately differs:
//!
//! | module | Go |
//! |---|---|
//! | [`sizeclass`] | sizeclasses.go, msize.go: classes, lookup tables, span classes, where a request goes |
//! | [`mspan`] | mspan: alloc bits, alloc cache, freeindex, `nextFreeFast` |
//! | [`mcache`] | mcache.go: per-P span cache, refill, tiny allocator state, large objects |
//! | [`mcentral`] | mcentral.go, mspanset.go: partial/full × swept/unswept span sets |
//! | [`mheap`] | mheap.go: span allocation, page cache use, growth, zeroing decisions |
//! | [`pagealloc`] | mpagealloc.go: first-fit page allocator over 4 MiB chunks |
//! | [`pagecache`] | mpagecache.go: per-P 64-page cache |
//! | [`arena`] | heapArena, sysAlloc/sysMap: the real mmap'd memory (the model's only `unsafe`) |
//! | [`malloc`] | malloc.go `mallocgc`, frees under each policy |
//! | [`mgc`] | mgc.go: GC cycles (start, mark phase, mark termination) |
//! | [`pacer`] | mgcpacer.go: heap goal and trigger, the mark's cost model |
//! | [`sweep`] | mgcsweep.go: lazy and proportional sweeping, reclaim |
//! | [`scavenge`] | mgcscavenge.go: returning free pages to the OS |
//! | [`mstats`] | mstats.go: MemStats |
//!
//! [`engine`] compiles a trace to an op stream and runs it; [`report`] builds the JSON document
//! and the text summary; [`config`] holds the knobs. The measured replay is apart, in one
//! folder: [`measured`] runs the op stream through the model and the baselines
//! ([`measured::native`]: glibc, jemalloc, mimalloc) with per-call latency by path
//! ([`measured::GoPath`]), perf counters, repeats and threads ([`measured::threaded`]).
#![deny(unsafe_code)]

/// Tier-3 check (see "Checks, in three tiers"): evaluates the expression only when the
/// `check-invariants` feature is on.
macro_rules! expensive_check {
    ($e:expr) => {
        #[cfg(feature = "check-invariants")]
        {
            $e;
        }
    };
}

pub mod arena;
pub mod config;
pub mod engine;
pub mod error;
pub mod malloc;
pub mod mcache;
pub mod mcentral;
pub mod measured;
pub mod mgc;
pub mod mheap;
pub mod mspan;
pub mod mstats;
pub mod pacer;
pub mod pagealloc;
pub mod pagecache;
pub mod peak_sites;
pub mod report;
pub mod scavenge;
pub mod sizeclass;
pub mod spanlog;
pub mod sweep;

pub use config::{Config, FreePolicy, Pointers};
pub use error::ReplayError;
pub use malloc::Heap;
pub use report::ReplayReport;

/// Replays `events` (in sequence order) of a process that started with an empty heap through a
/// Go model set up by `cfg`. `path` names the trace in the report.
pub fn replay<E: Into<ReplayError>>(
    path: &str,
    events: impl IntoIterator<Item = Result<traces::Event, E>>,
    cfg: &Config,
    strict: bool,
) -> Result<ReplayReport, ReplayError> {
    replay_events(path, None, events, cfg, strict)
}

/// [`replay`] for a trace whose header says `forked_from` (see [`engine::compile`]).
pub fn replay_events<E: Into<ReplayError>>(
    path: &str,
    forked_from: Option<u32>,
    events: impl IntoIterator<Item = Result<traces::Event, E>>,
    cfg: &Config,
    strict: bool,
) -> Result<ReplayReport, ReplayError> {
    let mut heap = Heap::new(cfg)?;
    let events = events.into_iter().map(|r| r.map_err(Into::into));
    let compiled = engine::compile(events, forked_from, cfg, &heap.mheap.classes, strict)?;
    let run = engine::run(&mut heap, &compiled)?;
    Ok(ReplayReport::build(path, cfg, &heap, &compiled, &run))
}

/// Measured replay of an `.atrace` file or a `.csv` workload (by extension) through the
/// allocators of `opts` (measured/).
pub fn measure_path(
    path: &std::path::Path,
    cfg: &Config,
    strict: bool,
    opts: &measured::Options,
) -> Result<ReplayReport, ReplayError> {
    let name = path.display().to_string();
    if path
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("csv"))
    {
        let f = std::fs::File::open(path).map_err(|source| ReplayError::Io {
            path: name.clone(),
            source,
        })?;
        let events = csv_events(std::io::BufReader::new(f)).map_err(|e| e.in_file(&name))?;
        return measured::measure(
            &name,
            None,
            events.into_iter().map(Ok::<_, ReplayError>),
            cfg,
            strict,
            opts,
        );
    }
    let reader = traces::TraceReader::open(path).map_err(in_file(&name))?;
    let forked_from = reader.header().forked_from;
    let events = reader.events().map(|r| r.map_err(in_file(&name)));
    measured::measure(&name, forked_from, events, cfg, strict, opts)
}

/// Replays an `.atrace` file.
pub fn replay_file(
    path: &std::path::Path,
    cfg: &Config,
    strict: bool,
) -> Result<ReplayReport, ReplayError> {
    let name = path.display().to_string();
    let reader = traces::TraceReader::open(path).map_err(in_file(&name))?;
    let forked_from = reader.header().forked_from;
    let events = reader.events().map(|r| r.map_err(in_file(&name)));
    replay_events(&name, forked_from, events, cfg, strict)
}

/// Turns a trace error into one that names the file `path`.
fn in_file(path: &str) -> impl Fn(traces::TraceError) -> ReplayError + '_ {
    move |e| ReplayError::from(e).in_file(path)
}

/// Replays a CSV workload (the text form of a trace, see `traces::csv`) without writing a
/// trace file: the CSV is imported into memory first.
pub fn replay_csv(
    name: &str,
    csv: impl std::io::Read,
    cfg: &Config,
    strict: bool,
) -> Result<ReplayReport, ReplayError> {
    let events = csv_events(csv)?;
    replay(
        name,
        events.into_iter().map(Ok::<_, ReplayError>),
        cfg,
        strict,
    )
}

/// Imports a CSV workload into events (through the `.atrace` writer and reader, in memory).
pub fn csv_events(csv: impl std::io::Read) -> Result<Vec<traces::Event>, ReplayError> {
    let mut w = traces::TraceWriter::new(Vec::new(), &traces::Header::default())?;
    traces::csv::import(csv, &mut w)?;
    let r = traces::TraceReader::from_bytes(w.finish()?)?;
    Ok(r.events().collect::<Result<Vec<_>, _>>()?)
}
