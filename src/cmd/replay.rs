//! `allocscope replay TRACE [--config FILE] [flags] [--json FILE]`: replay a trace through the
//! Go allocator model (and, with `--allocator`, the baseline allocators), print a MemStats-style
//! summary and a side-by-side measurement table (replayer/src/measured.rs).
//!
//! TRACE is an `.atrace` file, or a `.csv` workload (imported in memory). Flags override the
//! config file, which overrides Go's defaults.

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use anyhow::{Context, Result};
use replayer::config::{parse_bytes, Config, FreePolicy, Pointers};
use replayer::measured::native::{Measure, Touch};
use replayer::measured::{self, Allocator, Options};

use super::output::Outputs;
use super::{digest, Problems, ReplayInput};

#[derive(clap::Args)]
#[command(after_help = concat!(
    "--hlog DIR is created when missing and reused when it exists: the files allocscope writes \
     there are replaced, other files are left alone.\n\n",
    super::overwrite_help!()
))]
pub struct Args {
    /// Trace file (.atrace) or CSV workload (.csv).
    trace: PathBuf,
    /// Replay under every combination of configuration values, in parallel, and compare them
    /// side by side: KEY=V1,V2,... (repeatable; any configuration key, e.g. gogc=50,100,200,
    /// size_classes=go,mine.csv, page_size=8192,16384, tiny=on,off). Memory results only.
    #[arg(long, value_name = "KEY=V1,V2,...")]
    sweep: Vec<super::sweep::Axis>,
    /// With --sweep: the most configurations a sweep may run (every one is a whole replay).
    #[arg(long, value_name = "N", requires = "sweep",
          default_value_t = super::sweep::DEFAULT_LIMIT,
          value_parser = clap::value_parser!(u64).range(1..=super::sweep::MAX_LIMIT))]
    sweep_limit: u64,
    /// With --sweep: write a chart of the configurations side by side; the extension says the
    /// format: .svg or .png.
    #[arg(long, value_name = "FILE", requires = "sweep")]
    sweep_chart: Option<PathBuf>,
    /// TOML configuration file (see replayer/src/config.rs for the keys).
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Write the result document (JSON, schema 1) here; replaced if it exists.
    #[arg(long, value_name = "FILE")]
    json: Option<PathBuf>,
    /// Go model only: write every span the model allocates or frees as CSV, in the columns of
    /// `export --format spans` (n,event,op,page,npages,span_class; page counted from the lowest
    /// span's first page, event = the op being replayed). For a trace imported from Go the
    /// spans' replay starts from the runtime's heap when tracing began (its spans, their
    /// objects and its padding pages, from the side file; replayer/src/spanlog.rs), so the two
    /// logs can be compared. One more replay of the trace, untimed.
    #[arg(long, value_name = "FILE.csv")]
    span_log: Option<PathBuf>,
    /// Size-class table: "go" or a CSV path shaped like go_sizeclasses.csv.
    #[arg(long, value_name = "go|FILE")]
    size_classes: Option<String>,
    /// Page size in bytes.
    #[arg(long, value_name = "BYTES")]
    page_size: Option<u32>,
    /// Turn the tiny allocator off.
    #[arg(long)]
    no_tiny: bool,
    /// Tiny block size in bytes.
    #[arg(long, value_name = "BYTES")]
    tiny_block: Option<u64>,
    /// Which objects hold pointers: trace (the default: per event when the trace says, as a
    /// CSV `noscan` column or a Go trace's types do, else pointer-free), or noscan / scan for
    /// every object whatever the trace says.
    #[arg(long, value_name = "noscan|scan|trace")]
    pointers: Option<String>,
    /// Number of Ps (GOMAXPROCS).
    #[arg(long, value_name = "N")]
    procs: Option<usize>,
    /// P for each trace thread, comma separated (thread n -> the n-th entry; others n % procs).
    #[arg(long, value_name = "P,P,...", value_delimiter = ',')]
    thread_to_p: Option<Vec<usize>>,
    /// GOGC percent, or "off". As in Go, a negative percent also turns the GC off.
    #[arg(long, value_name = "PERCENT|off", allow_negative_numbers = true)]
    gogc: Option<String>,
    /// GOMEMLIMIT (bytes with an optional KiB/MiB/GiB suffix), or "off".
    #[arg(long, value_name = "BYTES|off")]
    gomemlimit: Option<String>,
    /// What a free does: gc (dead until a GC cycle sweeps it) or immediate.
    #[arg(long, value_name = "gc|immediate")]
    free_policy: Option<String>,
    /// Turn the background scavenger off.
    #[arg(long)]
    no_scavenger: bool,
    /// Turn the background sweeper off (sweeping is then only lazy and proportional).
    #[arg(long)]
    no_bg_sweep: bool,
    /// Model Go 1.26+ Green Tea GC span layout (inline mark bits in small spans).
    #[arg(long)]
    green_tea: bool,
    /// Model addresses only: do not write object memory.
    #[arg(long)]
    no_touch: bool,
    /// Make failed calls, unknown frees and double frees errors.
    #[arg(long)]
    strict: bool,
    /// Replay what a truncated trace holds instead of failing.
    #[arg(long)]
    allow_truncated: bool,
    #[command(flatten)]
    out: Box<Measurement>,
    /// Print nothing (with --json).
    #[arg(long, short)]
    quiet: bool,
}

/// Measurement flags (boxed: inline they would make `Args` the largest command by far).
#[derive(clap::Args)]
struct Measurement {
    /// Allocators to measure on the same compiled trace, side by side: go (the model),
    /// system (glibc malloc), jemalloc, mimalloc. The memory results are the Go model's.
    #[arg(long, value_name = "LIST", value_delimiter = ',', default_value = "go")]
    allocator: Vec<String>,
    /// What the replay writes into each new object: none, first (its first byte), pages (one
    /// byte per 4 KiB page) or whole (every byte, like glibc's trace_run).
    #[arg(long, value_name = "none|first|pages|whole", default_value = "whole")]
    touch: String,
    /// Counted runs per allocator; with N > 1 one uncounted warm-up run comes first. Times are
    /// reported as median and min..max.
    #[arg(long, value_name = "N", default_value_t = 1,
          value_parser = clap::value_parser!(u64).range(1..=MAX_REPEAT))]
    repeat: u64,
    /// Pin the replay to these CPUs (thread n on the n-th, cycling), via sched_setaffinity.
    #[arg(long, value_name = "CPU[,CPU...]", value_delimiter = ',')]
    pin: Vec<usize>,
    /// Replay each recorded thread on its own OS thread (a free never runs before its
    /// allocation). The Go model then locks its central structures coarsely (one Mutex) with
    /// one mcache per P. Default: one thread, which gives the deterministic memory results.
    #[arg(long)]
    threads: bool,
    /// Do not time single calls: only whole-loop time per op (no clock reads in the loop).
    /// Per-call latency of paths under ~20 ns sits near the clock's resolution; read it with
    /// the untimed ns/op.
    #[arg(long)]
    no_timing: bool,
    /// Write one HdrHistogram interval log per allocator here (<DIR>/<allocator>.hlog).
    #[arg(long, value_name = "DIR")]
    hlog: Option<PathBuf>,
    /// Write latency percentiles per allocator, op, size group and Go path as CSV.
    #[arg(long, value_name = "FILE")]
    latency_csv: Option<PathBuf>,
    /// Write a timeline CSV (Go model heap_alloc, heap_inuse, heap_sys, num_gc; RSS for all).
    #[arg(long, value_name = "FILE.csv")]
    timeline: Option<PathBuf>,
    /// Timeline sampling interval, in events.
    #[arg(long, value_name = "N", default_value_t = 10_000,
          value_parser = clap::value_parser!(u64).range(1..))]
    timeline_every: u64,
}

/// The most counted runs `--repeat` takes: each is a whole replay per allocator.
const MAX_REPEAT: u64 = 1000;

fn build_options(a: &Args) -> Result<Options> {
    let mut allocators = Vec::new();
    for name in &a.out.allocator {
        let al = Allocator::parse(name.trim()).ok_or_else(|| {
            anyhow::anyhow!("--allocator {name:?}: want go, system, jemalloc or mimalloc")
        })?;
        if !allocators.contains(&al) {
            allocators.push(al);
        }
    }
    let touch = Touch::parse(&a.out.touch).ok_or_else(|| {
        anyhow::anyhow!(
            "--touch {:?}: want none, first, pages or whole",
            a.out.touch
        )
    })?;
    let ncpu = std::thread::available_parallelism().map_or(1, |n| n.get());
    if let Some(c) = a.out.pin.iter().find(|&&c| c >= ncpu) {
        anyhow::bail!("--pin {c}: this machine has CPUs 0..{}", ncpu - 1);
    }
    let timeline_every = if a.out.timeline.is_some() {
        a.out.timeline_every
    } else {
        0
    };
    Ok(Options {
        allocators,
        measure: Measure {
            touch,
            time_calls: !a.out.no_timing,
            timeline_every,
            warmup_fraction: 0.1,
            pin: a.out.pin.clone(),
        },
        repeat: a.out.repeat as usize,
        threads: a.out.threads,
    })
}

fn build_config(a: &Args) -> Result<Config> {
    let mut c = match &a.config {
        Some(p) => Config::from_toml_named(
            &p.display().to_string(),
            &analysis::replay_json::read_regular(p)?,
        )?,
        None => match super::import_go::replay_defaults(&a.trace) {
            Some((c, note)) => {
                if !a.quiet {
                    eprintln!("allocscope: {note}");
                }
                c
            }
            None => Config::default(),
        },
    };
    if let Some(s) = &a.size_classes {
        if s != "go" {
            // Refuses a FIFO or device before the replayer reads it.
            analysis::replay_json::open_regular(Path::new(s))?;
        }
        c.size_classes = s.clone();
    }
    if let Some(p) = a.page_size {
        c.page_size = p;
    }
    if a.no_tiny {
        c.tiny = false;
    }
    if let Some(b) = a.tiny_block {
        c.tiny_block = b;
    }
    if let Some(p) = &a.pointers {
        c.pointers = match p.as_str() {
            "noscan" => Pointers::Noscan,
            "scan" => Pointers::Scan,
            "trace" => Pointers::Trace,
            other => anyhow::bail!("--pointers {other:?}: want noscan, scan or trace"),
        };
    }
    if let Some(n) = a.procs {
        c.procs = n;
    }
    if let Some(m) = &a.thread_to_p {
        c.thread_to_p = m.clone();
    }
    if let Some(g) = &a.gogc {
        c.gogc = if g == "off" {
            -1
        } else {
            g.parse().ok().with_context(|| {
                format!("--gogc {g:?}: want a whole percent (a negative one turns the GC off, as in Go) or off")
            })?
        };
    }
    if let Some(l) = &a.gomemlimit {
        c.gomemlimit = if l == "off" {
            None
        } else {
            Some(parse_bytes(l).map_err(|e| anyhow::anyhow!("--gomemlimit: {e}"))?)
        };
    }
    if let Some(f) = &a.free_policy {
        c.free_policy = match f.as_str() {
            "gc" => FreePolicy::Gc,
            "immediate" => FreePolicy::Immediate,
            other => anyhow::bail!("--free-policy {other:?}: want gc or immediate"),
        };
    }
    if a.no_scavenger {
        c.scavenger = false;
    }
    if a.no_bg_sweep {
        c.bg_sweep = false;
    }
    if a.green_tea {
        c.green_tea = true;
    }
    if a.no_touch {
        c.touch_memory = false;
    }
    c.validate()?;
    Ok(c)
}

/// The inputs of a replay (the trace, the configuration file, a size-class table) and the
/// checked outputs.
fn outputs(a: &Args) -> Result<Outputs> {
    let mut o = Outputs::new().input("the trace", &a.trace);
    if let Some(p) = &a.config {
        o = o.input("the configuration file", p);
    }
    if let Some(t) = a.size_classes.as_deref().filter(|t| *t != "go") {
        o = o.input("the size-class table", Path::new(t));
    }
    for (flag, p) in [
        ("--json", &a.json),
        ("--latency-csv", &a.out.latency_csv),
        ("--timeline", &a.out.timeline),
        ("--sweep-chart", &a.sweep_chart),
        ("--span-log", &a.span_log),
    ] {
        if let Some(p) = p {
            o.check(flag, p)?;
        }
    }
    if let Some(d) = &a.out.hlog {
        o.check_dir("--hlog", d)?;
    }
    Ok(o)
}

pub fn run(args: Args) -> Result<i32> {
    let outputs = outputs(&args)?;
    if args.span_log.is_some() {
        if !args.sweep.is_empty() {
            anyhow::bail!("--span-log logs one replay's spans: not with --sweep");
        }
        if let Some(other) = args.out.allocator.iter().find(|a| a.trim() != "go") {
            anyhow::bail!(
                "--span-log logs the Go model's spans; --allocator {other} has none (use \
                 --allocator go)"
            );
        }
    }
    let cfg = build_config(&args)?;
    if !args.sweep.is_empty() {
        return super::sweep::run(
            &super::sweep::Sweep {
                trace: &args.trace,
                base: &cfg,
                axes: &args.sweep,
                limit: args.sweep_limit,
                strict: args.strict,
                allow_truncated: args.allow_truncated,
                json: args.json.as_deref(),
                chart: args.sweep_chart.as_deref(),
            },
            &outputs,
        );
    }
    let opts = build_options(&args)?;
    let input = ReplayInput::open(&args.trace)?;
    let problems = Mutex::new(Problems::new(&args.trace, args.allow_truncated));
    let name = args.trace.display().to_string();
    let replayed = measured::measure(
        &name,
        input.forked_from(),
        input.events(&problems),
        &cfg,
        args.strict,
        &opts,
    );
    if let (Some(path), Ok(_)) = (&args.span_log, &replayed) {
        let fatal = problems.lock().map_or(true, |p| p.is_fatal());
        if !fatal {
            write_span_log(&args, &cfg, &input, &problems, &outputs, path)?;
        }
    }
    let problems = problems.into_inner().unwrap_or_else(|e| e.into_inner());
    if problems.is_fatal() {
        return Ok(problems.exit_code());
    }
    let report = replayed.map_err(|e| match e {
        // Errors about the events: name the trace they are in.
        replayer::ReplayError::Strict { .. }
        | replayer::ReplayError::Trace(_)
        | replayer::ReplayError::OutOfMemory { .. } => {
            anyhow::Error::new(e).context(args.trace.display().to_string())
        }
        e => e.into(),
    })?;
    if let Some(path) = &args.json {
        let mut doc = serde_json::to_value(&report)?;
        if let Some(d) = input.digest() {
            digest::stamp(&mut doc, &d);
        }
        outputs.write("--json", path, &super::report::json_bytes(&doc)?)?;
    }
    if let Some(m) = &report.measurements {
        if let Some(dir) = &args.out.hlog {
            outputs.write_dir_with("--hlog", dir, |stage| measured::write_hlogs(m, stage))?;
        }
        if let Some(p) = &args.out.latency_csv {
            outputs.write_with("--latency-csv", p, |tmp| {
                measured::write_latency_csv(m, tmp)
            })?;
        }
        if let Some(p) = &args.out.timeline {
            outputs.write_with("--timeline", p, |tmp| measured::write_timeline_csv(m, tmp))?;
        }
    }
    if !args.quiet {
        crate::out!("{}", report.summary());
    }
    Ok(0)
}

/// `--span-log`: replays the trace once more through the Go model with its span log on (from
/// the runtime's heap when tracing began, for a trace imported from Go) and writes the log.
fn write_span_log(
    args: &Args,
    cfg: &Config,
    input: &ReplayInput,
    problems: &Mutex<Problems>,
    outputs: &Outputs,
    path: &Path,
) -> Result<()> {
    let seed = go_seed(&args.trace);
    let log = replayer::spanlog::replay(
        input.forked_from(),
        input.events(problems),
        cfg,
        args.strict,
        seed.as_ref(),
    )
    .map_err(|e| anyhow::Error::new(e).context(format!("--span-log {}", path.display())))?;
    outputs.write_with("--span-log", path, |tmp| {
        log.write_csv(std::io::BufWriter::new(std::fs::File::create(tmp)?))
    })
}

/// The runtime's heap when tracing began, from the side file of a trace imported from Go
/// (`None` for other traces, or when the side file does not say).
fn go_seed(trace: &Path) -> Option<replayer::spanlog::Seed> {
    use gotrace::side::{self, Record, SpanOp};
    let reader = traces::TraceReader::open(trace).ok()?;
    let summary = super::import_go::side_summary(trace, &reader)?;
    let path = side::side_path(trace);
    let file = traces::open_input(&path).ok()?;
    let mut seed = replayer::spanlog::Seed {
        objects: summary.counts.snapshot_objects,
        ..Default::default()
    };
    let mut window = false;
    side::read_records(&path, std::io::BufReader::new(file), |r| match r {
        Record::Header(h) => {
            if let Some(heap) = h.heap {
                seed.page_bytes = heap.page_bytes;
                seed.heap_base_addr = heap.min_heap_addr;
            }
        }
        // The first generation's snapshot (a later generation's repeats spans already seen).
        Record::Span(s) if s.op == SpanOp::Exists && !window => {
            seed.spans.push(replayer::spanlog::SeedSpan {
                page: s.page,
                npages: s.npages,
                span_class: s.span_class,
            })
        }
        Record::Span(s) => {
            window = true;
            if s.op == SpanOp::Alloc {
                seed.allocs.push(replayer::spanlog::SeedAlloc {
                    event: s.event,
                    page: s.page,
                    npages: s.npages,
                });
            }
        }
        _ => {}
    })
    .ok()?;
    (seed.page_bytes != 0).then_some(seed)
}
