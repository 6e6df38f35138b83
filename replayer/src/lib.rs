//! The replayer: a model of the Go runtime's heap allocator running on real memory, and the
//! engine that replays allocation traces through it.
//!
//! One module per Go structure, each opening with what it models, its invariants and where it
//! deliberately differs:
//!
//! | module | Go |
//! |---|---|
//! | [`sizeclass`] | sizeclasses.go, msize.go: classes, lookup tables, span classes, malloc header |
//! | [`mspan`] | mspan: alloc bits, alloc cache, freeindex, `nextFreeFast` |
//! | [`mcache`] | mcache.go: per-P span cache, refill, tiny allocator state, large objects |
//! | [`mcentral`] | mcentral.go, mspanset.go: partial/full × swept/unswept span sets |
//! | [`mheap`] | mheap.go: span allocation, page cache use, growth, zeroing decisions |
//! | [`pagealloc`] | mpagealloc.go: first-fit page allocator over 4 MiB chunks |
//! | [`pagecache`] | mpagecache.go: per-P 64-page cache |
//! | [`arena`] | heapArena, sysAlloc/sysMap: the real mmap'd memory (the model's only `unsafe`) |
//! | [`malloc`] | malloc.go `mallocgc`, frees under each policy |
//! | [`mgc`] | mgc.go: GC cycles (start, mark phase, mark termination) |
//! | [`pacer`] | mgcpacer.go: heap goal and trigger |
//! | [`sweep`] | mgcsweep.go: lazy and proportional sweeping, reclaim |
//! | [`scavenge`] | mgcscavenge.go: returning free pages to the OS |
//! | [`mstats`] | mstats.go: MemStats |
//!
//! [`engine`] compiles a trace to an op stream and runs it; [`report`] builds the JSON document
//! and the text summary; [`config`] holds the knobs. [`measured`] runs the op stream through the
//! model and the baselines of [`native`] with latency, perf counters ([`measure`]), repeats and
//! threads ([`threaded`]).
#![deny(unsafe_code)]

pub mod arena;
pub mod config;
pub mod engine;
pub mod error;
pub mod malloc;
pub mod mcache;
pub mod mcentral;
pub mod measure;
pub mod measured;
pub mod mgc;
pub mod mheap;
pub mod mspan;
pub mod mstats;
pub mod native;
pub mod pacer;
pub mod pagealloc;
pub mod pagecache;
pub mod report;
pub mod scavenge;
pub mod sizeclass;
pub mod sweep;
pub mod threaded;

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
/// allocators of `opts` (measured.rs).
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
