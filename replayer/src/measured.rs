//! Measured replay (`allocscope replay --allocator ...`): the compiled op stream through the Go
//! model and the baseline allocators (native.rs), with per-call latency, perf counters per phase,
//! RSS and model stats over time, repeats, pinning and a multithreaded mode.
//!
//! Per-call latency: every op is timed with [`CycleClock`] (TSC, calibrated, its own overhead
//! subtracted) into HdrHistograms grouped by C call, by size group and, for the Go model, by the
//! path the allocation took. The path is named without timing inside the model: a few counters
//! the model keeps anyway (GC cycles, mark state, spans swept, `MHeap::refill_count`,
//! `MHeap::span_alloc_count`, large allocations) are read before and after the call, and the
//! costliest path whose counter moved wins: `gc_sweep` > `large` > `page_heap_span` >
//! `mcentral_refill` > `tiny_fast` / `span_fast`. `tiny_fast` includes starting a new tiny
//! block from the cached span. Paths under about 20 ns sit near the clock's resolution (its
//! jitter is a few ns), so the untimed whole-loop time per op is reported too (`--no-timing`
//! gives it without the two clock reads per call).
//!
//! Perf counters: over the whole loop and per phase: `warmup` (the first 10% of ops), `steady`
//! (the rest) and, for the Go model, `gc`: the model's GC work (cycle start with the mark
//! snapshot, mark termination with the sweep and scavenge that follow), accumulated over every
//! cycle through a hook in mgc.rs. Sweeping done lazily inside allocations is in `steady`.
//!
//! Repeats: with `repeat` > 1 one warm-up run (not counted) comes first; times are reported as
//! median, min and max; counters come from the median run; latency histograms merge all counted
//! runs; peak RSS is the largest over all runs, warm-up included (later runs find memory cached
//! by the allocator, so their RSS deltas understate what a fresh process would need).
//!
//! Threads: each recorded thread replays on its own OS thread, ordered by `threaded::Gates`.
//! The Go model is one `Mutex<Heap>` with an mcache per P (ops carry their P): the central
//! structures (and so the whole heap) are locked coarsely, and per-call latency includes the
//! lock wait. Phase counters are `total` and `gc` only there.

use std::collections::BTreeMap;
use std::io::Write as _;
use std::path::Path;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::config::Config;
use crate::engine::{self, Compiled, Op, OpKind, RunStats, Stepper};
use crate::error::ReplayError;
use crate::malloc::Heap;
use crate::measure::affinity::pin_nth;
use crate::measure::clock::CycleClock;
use crate::measure::latency::{write_hlog_sets, LatencySet, Percentiles, CSV_HEADER};
use crate::measure::perf::{Counters, PhaseCounters, Reading};
use crate::native::{self, rss_bytes, size_group, Measure, Native, OP_NAMES, SIZE_NAMES};
use crate::report::ReplayReport;
use crate::sizeclass::Placement;
use crate::threaded::{self, Plan};

/// Go model paths (latency group "path").
pub const PATH_NAMES: [&str; 7] = [
    "tiny_fast",
    "span_fast",
    "mcentral_refill",
    "page_heap_span",
    "large",
    "gc_sweep",
    "free",
];

/// What the JSON says about the timing method.
pub const TIMING_NOTE: &str = "per-call latency from the TSC less the measured clock overhead; \
paths under ~20 ns sit near the clock's resolution: read them with ns_per_op (whole loop / ops; \
run with --no-timing for it without per-call clock reads)";

/// An allocator to measure.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Allocator {
    Go,
    Native(Native),
}

impl Allocator {
    pub fn parse(s: &str) -> Option<Allocator> {
        match s {
            "go" => Some(Allocator::Go),
            other => Native::parse(other).map(Allocator::Native),
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Allocator::Go => "go",
            Allocator::Native(n) => n.name(),
        }
    }
}

/// How to measure.
#[derive(Clone, Debug)]
pub struct Options {
    pub allocators: Vec<Allocator>,
    /// Touch policy, per-call timing, timeline interval, warm-up fraction, pinning.
    pub measure: Measure,
    /// Counted runs per allocator (one more, uncounted, first when > 1).
    pub repeat: usize,
    /// One OS thread per recorded thread.
    pub threads: bool,
}

/// Median and spread.
#[derive(Clone, Copy, Debug, Serialize)]
pub struct Spread {
    pub median: f64,
    pub min: f64,
    pub max: f64,
}

impl Spread {
    fn of(v: &[f64]) -> Spread {
        let mut s = v.to_vec();
        s.sort_by(f64::total_cmp);
        let n = s.len();
        let median = if n == 0 {
            0.0
        } else if n % 2 == 1 {
            s[n / 2]
        } else {
            (s[n / 2 - 1] + s[n / 2]) / 2.0
        };
        Spread {
            median,
            min: s.first().copied().unwrap_or(0.0),
            max: s.last().copied().unwrap_or(0.0),
        }
    }
}

/// One timeline sample: model stats (Go only) and RSS above the start of the loop.
#[derive(Clone, Copy, Debug, Serialize)]
pub struct TimelinePoint {
    pub op: u64,
    pub heap_alloc: Option<u64>,
    pub heap_inuse: Option<u64>,
    pub heap_sys: Option<u64>,
    pub num_gc: Option<u64>,
    pub rss_bytes: u64,
}

type Phases = BTreeMap<String, BTreeMap<String, Reading>>;

/// One run of one allocator.
struct OneRun {
    elapsed_ns: u64,
    peak_rss_bytes: u64,
    /// Allocations that failed (malloc.rs `refuse`, native.rs).
    failed_allocs: u64,
    counters: Phases,
    timeline: Vec<TimelinePoint>,
    sets: Vec<LatencySet>,
}

/// Everything measured for one allocator.
#[derive(Clone, Debug, Serialize)]
pub struct AllocatorResult {
    pub allocator: &'static str,
    pub ops: u64,
    pub runs: usize,
    pub threads: usize,
    /// Wall time of each counted run's op loop, ns.
    pub runs_ns: Vec<u64>,
    pub time_ns: Spread,
    /// Median loop time over ops (includes the clock reads when calls are timed).
    pub ns_per_op: f64,
    pub timed_calls: bool,
    /// Medians over runs of the all-calls p50 / p99 (ns).
    pub p50_ns: f64,
    pub p99_ns: f64,
    /// Group ("op", "size", "path") -> name -> percentiles, all counted runs merged.
    pub latency: BTreeMap<String, BTreeMap<String, Percentiles>>,
    /// Phase -> counter -> count or "not supported: ...", from the median run.
    pub counters: Phases,
    pub peak_rss_bytes: u64,
    /// Allocations that failed as C's malloc fails (NULL), in the median run (malloc.rs,
    /// native.rs).
    pub failed_allocs: u64,
    pub timeline: Vec<TimelinePoint>,
    #[serde(skip)]
    pub sets: Vec<LatencySet>,
}

/// The `measurements` section of the replay JSON.
#[derive(Clone, Debug, Serialize)]
pub struct Measurements {
    pub clock: CycleClock,
    pub clock_overhead_ns: f64,
    pub note: &'static str,
    pub touch: engine::Touch,
    pub repeat: usize,
    pub warmup_run: bool,
    pub threads: bool,
    pub pin: Vec<usize>,
    pub allocators: Vec<AllocatorResult>,
}

/// Compiles the events and measures every allocator of `opts`. The memory results of the
/// report come from the Go model's first counted run (or an untimed model run when `go` is not
/// listed); `measurements` holds the rest.
pub fn measure<E: std::fmt::Display>(
    path: &str,
    events: impl IntoIterator<Item = Result<traces::Event, E>>,
    cfg: &Config,
    strict: bool,
    opts: &Options,
) -> Result<ReplayReport, ReplayError> {
    let heap = Heap::new(cfg)?;
    let events = events
        .into_iter()
        .map(|r| r.map_err(|e| ReplayError::Trace(e.to_string())));
    let compiled = engine::compile(events, cfg, &heap.mheap.classes, strict)?;
    drop(heap);
    let clock = CycleClock::calibrate(Duration::from_millis(20));
    let plan = opts.threads.then(|| {
        let thread_of: Vec<u16> = compiled.ops.iter().map(|o| o.thread).collect();
        threaded::plan(&compiled.ops, &thread_of, compiled.slots)
    });
    let nthreads = plan
        .as_ref()
        .map_or(1, |p| p.threads.iter().filter(|t| !t.is_empty()).count());
    let warmup_run = opts.repeat > 1;
    let mut model: Option<(Heap, RunStats)> = None;
    let mut results = Vec::new();
    for &a in &opts.allocators {
        let mut runs = Vec::new();
        let mut peak_rss = 0u64;
        for r in 0..opts.repeat.max(1) + warmup_run as usize {
            let one = match a {
                Allocator::Go => {
                    let (one, heap, stats) = match &plan {
                        None => go_run(cfg, &compiled, &opts.measure, &clock)?,
                        Some(p) => go_run_threaded(cfg, &compiled, p, &opts.measure, &clock)?,
                    };
                    if model.is_none() && (r > 0 || !warmup_run) {
                        model = Some((heap, stats));
                    }
                    one
                }
                Allocator::Native(n) => native_run(n, &compiled, plan.as_ref(), opts, &clock)?,
            };
            peak_rss = peak_rss.max(one.peak_rss_bytes);
            if r > 0 || !warmup_run {
                runs.push(one);
            }
        }
        results.push(summarise(a, &compiled, runs, peak_rss, opts, nthreads));
    }
    let (heap, stats) = match model {
        Some(m) => m,
        None => {
            let mut heap = Heap::new(cfg)?;
            let stats = engine::run(&mut heap, &compiled)?;
            (heap, stats)
        }
    };
    let mut report = ReplayReport::build(path, cfg, &heap, &compiled, &stats);
    for r in &results {
        let prefix = match r.allocator {
            "go" => String::new(),
            other => format!("{other}_"),
        };
        let mut m = |k: &str, v: f64| {
            report.metrics.insert(format!("{prefix}{k}"), v);
        };
        m("ns_per_op", round2(r.ns_per_op));
        m("replay_ns", r.time_ns.median);
        m("peak_rss", r.peak_rss_bytes as f64);
        if r.timed_calls {
            m("p50_ns", r.p50_ns);
            m("p99_ns", r.p99_ns);
        }
    }
    report.measurements = Some(Measurements {
        clock,
        clock_overhead_ns: round2(clock.overhead_ns()),
        note: TIMING_NOTE,
        touch: opts.measure.touch,
        repeat: opts.repeat.max(1),
        warmup_run,
        threads: opts.threads,
        pin: opts.measure.pin.clone(),
        allocators: results,
    });
    Ok(report)
}

fn summarise(
    a: Allocator,
    compiled: &Compiled,
    mut runs: Vec<OneRun>,
    peak_rss_bytes: u64,
    opts: &Options,
    threads: usize,
) -> AllocatorResult {
    let times: Vec<f64> = runs.iter().map(|r| r.elapsed_ns as f64).collect();
    let time_ns = Spread::of(&times);
    let ops = compiled.ops.len() as u64;
    let timed = opts.measure.time_calls;
    let p = |q: f64| {
        let v: Vec<f64> = runs
            .iter()
            .map(|r| r.sets[0].total().value_at_quantile(q) as f64)
            .collect();
        Spread::of(&v).median
    };
    let (p50_ns, p99_ns) = (p(0.5), p(0.99));
    // The median run (by time) gives counters and timeline.
    let mut order: Vec<usize> = (0..runs.len()).collect();
    order.sort_by_key(|&i| runs[i].elapsed_ns);
    let mid = order[order.len() / 2];
    let counters = std::mem::take(&mut runs[mid].counters);
    let failed_allocs = runs[mid].failed_allocs;
    let timeline = std::mem::take(&mut runs[mid].timeline);
    let mut sets = std::mem::take(&mut runs[0].sets);
    for r in &runs[1..] {
        for (s, o) in sets.iter_mut().zip(&r.sets) {
            s.merge(o);
        }
    }
    let latency = sets
        .iter()
        .map(|s| {
            let m = s.summary().into_iter().map(|(n, p)| (n.to_string(), p));
            (s.group.to_string(), m.collect())
        })
        .filter(|(_, m): &(String, BTreeMap<_, _>)| !m.is_empty())
        .collect();
    AllocatorResult {
        allocator: a.name(),
        ops,
        runs: runs.len(),
        threads,
        runs_ns: runs.iter().map(|r| r.elapsed_ns).collect(),
        time_ns,
        ns_per_op: if ops == 0 {
            0.0
        } else {
            time_ns.median / ops as f64
        },
        timed_calls: timed,
        p50_ns,
        p99_ns,
        latency,
        counters,
        peak_rss_bytes,
        failed_allocs,
        timeline,
        sets,
    }
}

fn native_run(
    n: Native,
    compiled: &Compiled,
    plan: Option<&Plan>,
    opts: &Options,
    clock: &CycleClock,
) -> Result<OneRun, ReplayError> {
    let r = match plan {
        None => {
            pin_nth(&opts.measure.pin, 0).map_err(ReplayError::Config)?;
            native::run(n, compiled, &opts.measure, clock)
        }
        Some(p) => native::run_threaded(n, compiled, p, &opts.measure, clock)
            .map_err(ReplayError::Config)?,
    };
    Ok(OneRun {
        elapsed_ns: r.elapsed_ns,
        peak_rss_bytes: r.peak_rss_bytes,
        failed_allocs: r.failed_allocs,
        counters: r.counters,
        timeline: r
            .rss_timeline
            .iter()
            .map(|p| TimelinePoint {
                op: p.op,
                heap_alloc: None,
                heap_inuse: None,
                heap_sys: None,
                num_gc: None,
                rss_bytes: p.rss_bytes,
            })
            .collect(),
        sets: vec![r.by_op, r.by_size],
    })
}

/// The model counters that name a path (see the module comment).
#[derive(Clone, Copy, PartialEq, Eq)]
struct Probe {
    refused: u64,
    gc: usize,
    marking: bool,
    swept: u64,
    refills: u64,
    span_allocs: u64,
    large: u64,
}

impl Probe {
    #[inline(always)]
    fn read(h: &Heap) -> Probe {
        Probe {
            refused: h.refused_allocs,
            gc: h.gc.cycles.len(),
            marking: h.gc.marking,
            swept: h.mheap.sweep.total_spans_swept,
            refills: h.mheap.refill_count,
            span_allocs: h.mheap.span_alloc_count,
            large: h.mheap.stats.large_alloc_count,
        }
    }

    /// Index into `PATH_NAMES` of the path `op` took between `self` and `after`; None for a
    /// zero-size allocation (`zerobase`, no path) and a failed one (malloc.rs `refuse`).
    #[inline(always)]
    fn path(&self, after: &Probe, op: &Op, heap: &Heap, tiny_block_bytes: u64) -> Option<usize> {
        if op.kind == OpKind::Free {
            return Some(6);
        }
        if self.refused != after.refused {
            return None;
        }
        if self.gc != after.gc || self.marking != after.marking || self.swept != after.swept {
            return Some(5);
        }
        if self.large != after.large {
            return Some(4);
        }
        if self.span_allocs != after.span_allocs {
            return Some(3);
        }
        if self.refills != after.refills {
            return Some(2);
        }
        let classes = &heap.mheap.classes;
        match classes.place(op.size_bytes, op.noscan, tiny_block_bytes) {
            Placement::Zero => None,
            Placement::Tiny => Some(0),
            Placement::Small { .. } | Placement::Large => Some(1),
        }
    }
}

fn go_sets() -> Vec<LatencySet> {
    vec![
        LatencySet::new("op", &OP_NAMES),
        LatencySet::new("size", &SIZE_NAMES),
        LatencySet::new("path", &PATH_NAMES),
    ]
}

fn go_point(op: u64, heap: &Heap, rss0: u64) -> TimelinePoint {
    let st = &heap.mheap.stats;
    TimelinePoint {
        op,
        heap_alloc: Some(st.heap_alloc_bytes),
        heap_inuse: Some(st.heap_inuse_bytes),
        heap_sys: Some(st.heap_sys_bytes),
        num_gc: Some(heap.gc.cycles.len() as u64),
        rss_bytes: rss_bytes().saturating_sub(rss0),
    }
}

/// One single-thread run of the Go model.
fn go_run(
    cfg: &Config,
    compiled: &Compiled,
    m: &Measure,
    clock: &CycleClock,
) -> Result<(OneRun, Heap, RunStats), ReplayError> {
    pin_nth(&m.pin, 0).map_err(ReplayError::Config)?;
    let mut heap = Heap::new(cfg)?;
    heap.set_gc_counters(Some(PhaseCounters::open()));
    let tiny = cfg.tiny_block_bytes();
    let mut st = Stepper::new(compiled.slots, m.touch);
    let mut sets = go_sets();
    let mut timeline = Vec::new();
    let rss0 = crate::native::rss_baseline();
    let mut counters = Counters::open();
    let warmup_end = (compiled.ops.len() as f64 * m.warmup_fraction) as usize;
    let snap_start = counters.snapshot();
    let mut snap_warm = None;
    let start = Instant::now();
    for (i, op) in compiled.ops.iter().enumerate() {
        if i == warmup_end {
            snap_warm = Some(counters.snapshot());
        }
        if m.time_calls {
            let before = Probe::read(&heap);
            let t0 = clock.now();
            st.step(&mut heap, i, op, compiled.time_of(i))?;
            let ns = clock.elapsed_ns(t0, clock.now());
            sets[0].record(op.call.index(), ns);
            sets[1].record(size_group(op.size_bytes), ns);
            if let Some(p) = before.path(&Probe::read(&heap), op, &heap, tiny) {
                sets[2].record(p, ns);
            }
        } else {
            st.step(&mut heap, i, op, compiled.time_of(i))?;
        }
        if m.timeline_every > 0 && (i as u64).is_multiple_of(m.timeline_every) {
            timeline.push(go_point(i as u64, &heap, rss0));
        }
    }
    let elapsed_ns = start.elapsed().as_nanos() as u64;
    let snap_end = counters.snapshot();
    let peak_end = rss_bytes().saturating_sub(rss0);
    let mut phases = Phases::new();
    phases.insert("total".into(), snap_end.since(&snap_start));
    if let Some(w) = &snap_warm {
        phases.insert("warmup".into(), w.since(&snap_start));
        phases.insert("steady".into(), snap_end.since(w));
    }
    if let Some(g) = heap.set_gc_counters(None) {
        phases.insert("gc".into(), g.total());
    }
    let peak_rss_bytes = timeline
        .iter()
        .map(|p| p.rss_bytes)
        .fold(peak_end, u64::max);
    let stats = RunStats {
        peak_heap_alloc_bytes: st.peak_heap_alloc_bytes,
        elapsed_ns,
        ops: compiled.ops.len() as u64,
    };
    let one = OneRun {
        elapsed_ns,
        peak_rss_bytes,
        failed_allocs: heap.refused_allocs,
        counters: phases,
        timeline,
        sets,
    };
    Ok((one, heap, stats))
}

/// One multithreaded run of the Go model (see the module comment for the locking).
fn go_run_threaded(
    cfg: &Config,
    compiled: &Compiled,
    plan: &Plan,
    m: &Measure,
    clock: &CycleClock,
) -> Result<(OneRun, Heap, RunStats), ReplayError> {
    let mut heap = Heap::new(cfg)?;
    heap.set_gc_counters(Some(PhaseCounters::open()));
    let tiny = cfg.tiny_block_bytes();
    let shared = Mutex::new((heap, Stepper::new(compiled.slots, m.touch)));
    let failed: Mutex<Option<ReplayError>> = Mutex::new(None);
    let rss0 = crate::native::rss_baseline();
    let mut counters = Counters::open();
    let snap_start = counters.snapshot();
    let start = Instant::now();
    let per_thread = threaded::run(
        plan,
        &compiled.ops,
        |n| {
            pin_nth(&m.pin, n)
                .map(|()| go_sets())
                .map_err(ReplayError::Config)
        },
        |sets, step, op| {
            let t0 = clock.now();
            let mut g = shared.lock().expect("a replay thread panicked");
            let (heap, st) = &mut *g;
            let before = Probe::read(heap);
            // After a failure the remaining ops only pass their gates, so no thread waits
            // forever.
            let ok = failed.lock().expect("lock").is_none();
            if ok {
                if let Err(e) = st.step(
                    heap,
                    step.op as usize,
                    op,
                    compiled.time_of(step.op as usize),
                ) {
                    failed.lock().expect("lock").get_or_insert(e);
                }
            }
            let path = before.path(&Probe::read(heap), op, heap, tiny);
            drop(g);
            if m.time_calls {
                let ns = clock.elapsed_ns(t0, clock.now());
                sets[0].record(op.call.index(), ns);
                sets[1].record(size_group(op.size_bytes), ns);
                if let Some(p) = path {
                    sets[2].record(p, ns);
                }
            }
        },
    );
    let elapsed_ns = start.elapsed().as_nanos() as u64;
    let snap_end = counters.snapshot();
    let peak_rss_bytes = rss_bytes().saturating_sub(rss0);
    if let Some(e) = failed.into_inner().expect("lock") {
        return Err(e);
    }
    let per_thread = per_thread?;
    let (mut heap, st) = shared.into_inner().expect("lock");
    let mut sets = go_sets();
    for t in &per_thread {
        for (s, o) in sets.iter_mut().zip(t) {
            s.merge(o);
        }
    }
    let mut phases = Phases::new();
    phases.insert("total".into(), snap_end.since(&snap_start));
    if let Some(g) = heap.set_gc_counters(None) {
        phases.insert("gc".into(), g.total());
    }
    let timeline = vec![go_point(compiled.ops.len() as u64, &heap, rss0)];
    let stats = RunStats {
        peak_heap_alloc_bytes: st.peak_heap_alloc_bytes,
        elapsed_ns,
        ops: compiled.ops.len() as u64,
    };
    let one = OneRun {
        elapsed_ns,
        peak_rss_bytes,
        failed_allocs: heap.refused_allocs,
        counters: phases,
        timeline,
        sets,
    };
    Ok((one, heap, stats))
}

fn round2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

fn io_err(path: &Path) -> impl Fn(std::io::Error) -> ReplayError + '_ {
    move |source| ReplayError::Io {
        path: path.display().to_string(),
        source,
    }
}

/// Writes `<dir>/<allocator>.hlog` for every allocator (all its latency groups, one interval
/// per histogram covering the median run's time).
pub fn write_hlogs(m: &Measurements, dir: &Path) -> Result<(), ReplayError> {
    std::fs::create_dir_all(dir).map_err(io_err(dir))?;
    for r in &m.allocators {
        let path = dir.join(format!("{}.hlog", r.allocator));
        let sets: Vec<&LatencySet> = r.sets.iter().collect();
        let d = Duration::from_nanos(r.time_ns.median as u64);
        write_hlog_sets(&path, &sets, d).map_err(io_err(&path))?;
    }
    Ok(())
}

/// Writes the percentile CSV: `allocator,` + `CSV_HEADER`, a row per non-empty histogram.
pub fn write_latency_csv(m: &Measurements, path: &Path) -> Result<(), ReplayError> {
    let mut out = format!("allocator,{CSV_HEADER}\n").into_bytes();
    for r in &m.allocators {
        for s in &r.sets {
            let mut rows = Vec::new();
            s.write_csv_rows(&mut rows).map_err(io_err(path))?;
            for line in String::from_utf8_lossy(&rows).lines() {
                let _ = writeln!(out, "{},{line}", r.allocator);
            }
        }
    }
    std::fs::write(path, out).map_err(io_err(path))
}

/// Writes the timeline CSV: `allocator,op,heap_alloc,heap_inuse,heap_sys,num_gc,rss_bytes`
/// (model columns empty for the baselines).
pub fn write_timeline_csv(m: &Measurements, path: &Path) -> Result<(), ReplayError> {
    let mut out = b"allocator,op,heap_alloc,heap_inuse,heap_sys,num_gc,rss_bytes\n".to_vec();
    let f = |v: Option<u64>| v.map(|x| x.to_string()).unwrap_or_default();
    for r in &m.allocators {
        for p in &r.timeline {
            let _ = writeln!(
                out,
                "{},{},{},{},{},{},{}",
                r.allocator,
                p.op,
                f(p.heap_alloc),
                f(p.heap_inuse),
                f(p.heap_sys),
                f(p.num_gc),
                p.rss_bytes
            );
        }
    }
    std::fs::write(path, out).map_err(io_err(path))
}

/// The side-by-side table `allocscope replay` prints.
pub fn table(m: &Measurements) -> String {
    use std::fmt::Write as _;
    let mut s = String::new();
    let _ = writeln!(
        s,
        "measured: touch={:?} runs={}{} threads={} clock={} (overhead {:.1} ns subtracted)",
        m.touch,
        m.repeat,
        if m.warmup_run { " (+1 warm-up)" } else { "" },
        m.threads,
        m.clock.source,
        m.clock_overhead_ns
    );
    let _ = writeln!(
        s,
        "  {:<9} {:>10} {:>19} {:>8} {:>7} {:>7} {:>8} {:>9} {:>10} {:>11} {:>12}",
        "allocator",
        "median ms",
        "min..max ms",
        "ns/op",
        "p50 ns",
        "p99 ns",
        "p99.9 ns",
        "max ns",
        "peak RSS",
        "page faults",
        "cycles"
    );
    for r in &m.allocators {
        let total = r.sets.first().map(LatencySet::total);
        let q = |x: f64| total.as_ref().map_or(0, |h| h.value_at_quantile(x));
        let c = |name: &str| match r.counters.get("total").and_then(|t| t.get(name)) {
            Some(Reading::Count(n)) => n.to_string(),
            Some(Reading::NotSupported(_)) => "n/s".into(),
            None => "-".into(),
        };
        let _ = writeln!(
            s,
            "  {:<9} {:>10.2} {:>8.2}..{:>9.2} {:>8.1} {:>7} {:>7} {:>8} {:>9} {:>9.1}Mi {:>11} {:>12}",
            r.allocator,
            r.time_ns.median / 1e6,
            r.time_ns.min / 1e6,
            r.time_ns.max / 1e6,
            r.ns_per_op,
            r.p50_ns,
            r.p99_ns,
            q(0.999),
            total.as_ref().map_or(0, |h| h.max()),
            r.peak_rss_bytes as f64 / (1 << 20) as f64,
            c("page_faults"),
            c("cycles")
        );
    }
    let failed: Vec<String> = m
        .allocators
        .iter()
        .filter(|r| r.failed_allocs > 0)
        .map(|r| format!("{} {}", r.allocator, r.failed_allocs))
        .collect();
    if !failed.is_empty() {
        let _ = writeln!(
            s,
            "  failed allocations (no allocator could satisfy them; NULL, nothing allocated): {}",
            failed.join(", ")
        );
    }
    if let Some(go) = m.allocators.iter().find(|r| r.allocator == "go") {
        if let Some(paths) = go.latency.get("path") {
            let _ = writeln!(s, "  go model paths:  count  p50 ns  p99 ns  max ns");
            for (name, p) in paths {
                let _ = writeln!(
                    s,
                    "    {:<16} {:>9} {:>7} {:>7} {:>7}",
                    name, p.count, p.p50_ns, p.p99_ns, p.max_ns
                );
            }
        }
    }
    s
}
