//! Measured replay (`allocscope replay --allocator ...`): the compiled op stream through the Go
//! model (go.rs) and the baseline allocators (native.rs), with per-call latency, perf counters
//! per phase, RSS and model stats over time, repeats, pinning and a multithreaded mode
//! (threaded.rs). The model itself (the rest of the crate) knows nothing of this folder except
//! the perf-counter hook mgc.rs calls around GC work.
//!
//! The measuring instruments know nothing about the allocators: perf counters ([`perf`]), a
//! calibrated cycle clock for per-call latency ([`clock`]), latency histograms with their
//! outputs ([`latency`]) and CPU pinning ([`affinity`]). output.rs writes what was measured.
//!
//! Per-call latency: every op is timed with [`CycleClock`] (TSC, calibrated, its own overhead
//! subtracted) into HdrHistograms grouped by C call, by size group and, for the Go model, by the
//! path the allocation took ([`GoPath`]). The path is named without timing inside the model: a few counters
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

pub mod affinity;
pub mod clock;
mod go;
pub mod latency;
pub mod native;
mod output;
pub mod perf;
pub mod threaded;

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Serialize;

use crate::config::Config;
use crate::engine::{self, Call, Compiled, RunStats};
use crate::error::ReplayError;
use crate::malloc::Heap;
use crate::report::ReplayReport;
use affinity::pin_nth;
use clock::CycleClock;
pub use go::GoPath;
use latency::{LatencySet, Percentiles};
use native::{size_group, Measure, Native, OP_NAMES, SIZE_NAMES};
pub use output::{table, write_hlogs, write_latency_csv, write_timeline_csv};
use perf::Reading;
use threaded::Plan;

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

/// One run's latency histograms: by C call (`native::OP_NAMES`), by size group
/// (`native::SIZE_NAMES`) and, for the Go model, by the path a call took ([`GoPath`]).
#[derive(Clone, Debug)]
pub struct Latencies {
    pub by_op: LatencySet,
    pub by_size: LatencySet,
    /// The Go model's paths (`None` for the baselines).
    pub by_path: Option<LatencySet>,
}

impl Latencies {
    /// Empty histograms; `paths` for the Go model.
    pub fn new(paths: bool) -> Latencies {
        Latencies {
            by_op: LatencySet::new("op", &OP_NAMES),
            by_size: LatencySet::new("size", &SIZE_NAMES),
            by_path: paths.then(|| LatencySet::new("path", &GoPath::NAMES)),
        }
    }

    /// Records a call of `ns`: its C call, its size's group and, for the Go model, its path.
    #[inline]
    pub fn record(&mut self, call: Call, size_bytes: u64, path: Option<GoPath>, ns: u64) {
        self.by_op.record(call.index(), ns);
        self.by_size.record(size_group(size_bytes), ns);
        if let (Some(set), Some(p)) = (&mut self.by_path, path) {
            set.record(p as usize, ns);
        }
    }

    /// Adds another run's or thread's counts (same shape).
    pub fn merge(&mut self, other: &Latencies) {
        self.by_op.merge(&other.by_op);
        self.by_size.merge(&other.by_size);
        if let (Some(a), Some(b)) = (&mut self.by_path, &other.by_path) {
            a.merge(b);
        }
    }

    /// The histogram sets, in report order.
    pub fn sets(&self) -> impl Iterator<Item = &LatencySet> {
        [&self.by_op, &self.by_size]
            .into_iter()
            .chain(self.by_path.as_ref())
    }
}

/// One run of one allocator.
struct OneRun {
    elapsed_ns: u64,
    peak_rss_bytes: u64,
    /// Allocations that failed (malloc.rs `refuse`, native.rs).
    failed_allocs: u64,
    counters: Phases,
    timeline: Vec<TimelinePoint>,
    latencies: Latencies,
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
    pub latencies: Latencies,
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

/// Compiles the events (of a fork child's trace when `forked_from` is set, see
/// [`engine::compile`]) and measures every allocator of `opts`. The memory results of the
/// report come from the Go model's first counted run (or an untimed model run when `go` is not
/// listed); `measurements` holds the rest.
pub fn measure<E: Into<ReplayError>>(
    path: &str,
    forked_from: Option<u32>,
    events: impl IntoIterator<Item = Result<traces::Event, E>>,
    cfg: &Config,
    strict: bool,
    opts: &Options,
) -> Result<ReplayReport, ReplayError> {
    let heap = Heap::new(cfg)?;
    let events = events.into_iter().map(|r| r.map_err(Into::into));
    let compiled = engine::compile(events, forked_from, cfg, &heap.mheap.classes, strict)?;
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
                        None => go::go_run(cfg, &compiled, &opts.measure, &clock)?,
                        Some(p) => go::go_run_threaded(cfg, &compiled, p, &opts.measure, &clock)?,
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
        add_metrics(&mut report.metrics, r);
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

/// The timing metrics of one allocator (the Go model's unprefixed, a baseline's with its name
/// as prefix: `system_ns_per_op`).
fn add_metrics(metrics: &mut BTreeMap<String, f64>, r: &AllocatorResult) {
    let prefix = match r.allocator {
        "go" => String::new(),
        other => format!("{other}_"),
    };
    let mut m = |k: &str, v: f64| {
        metrics.insert(format!("{prefix}{k}"), v);
    };
    m("ns_per_op", round2(r.ns_per_op));
    m("replay_ns", r.time_ns.median);
    m("peak_rss", r.peak_rss_bytes as f64);
    if r.timed_calls {
        m("p50_ns", r.p50_ns);
        m("p99_ns", r.p99_ns);
    }
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
            .map(|r| r.latencies.by_op.total().value_at_quantile(q) as f64)
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
    let mut latencies = runs[0].latencies.clone();
    for r in &runs[1..] {
        latencies.merge(&r.latencies);
    }
    let latency = latencies
        .sets()
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
        latencies,
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
        latencies: r.latencies,
    })
}

fn round2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}
