//! `allocscope replay TRACE [--config FILE] [flags] [--json FILE]`: replay a trace through the
//! Go allocator model and print a MemStats-style summary.
//!
//! TRACE is an `.atrace` file, or a `.csv` workload (imported in memory). Flags override the
//! config file, which overrides Go's defaults.

use std::path::PathBuf;

use anyhow::{Context, Result};
use replayer::config::{parse_bytes, Config, FreePolicy, Pointers};

#[derive(clap::Args)]
pub struct Args {
    /// Trace file (.atrace) or CSV workload (.csv).
    trace: PathBuf,
    /// TOML configuration file (see replayer/src/config.rs for the keys).
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Write the result document (JSON, schema 1) here.
    #[arg(long, value_name = "FILE")]
    json: Option<PathBuf>,
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
    /// Pointer assumption for objects: noscan, scan, or trace (per event when the trace says).
    #[arg(long, value_name = "noscan|scan|trace")]
    pointers: Option<String>,
    /// Number of Ps (GOMAXPROCS).
    #[arg(long, value_name = "N")]
    procs: Option<usize>,
    /// P for each trace thread, comma separated (thread n -> the n-th entry; others n % procs).
    #[arg(long, value_name = "P,P,...", value_delimiter = ',')]
    thread_to_p: Option<Vec<usize>>,
    /// GOGC percent, or "off".
    #[arg(long, value_name = "PERCENT|off")]
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
    /// Print nothing (with --json).
    #[arg(long, short)]
    quiet: bool,
}

fn build_config(a: &Args) -> Result<Config> {
    let mut c = match &a.config {
        Some(p) => Config::from_toml_file(p)?,
        None => Config::default(),
    };
    if let Some(s) = &a.size_classes {
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
            g.parse()
                .with_context(|| format!("--gogc {g:?}: want a percent or off"))?
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

pub fn run(args: Args) -> Result<i32> {
    let cfg = build_config(&args)?;
    let is_csv = args
        .trace
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("csv"));
    let report = if is_csv {
        let f = std::fs::File::open(&args.trace)
            .with_context(|| format!("cannot open {}", args.trace.display()))?;
        replayer::replay_csv(
            &args.trace.display().to_string(),
            std::io::BufReader::new(f),
            &cfg,
            args.strict,
        )?
    } else {
        replayer::replay_file(&args.trace, &cfg, args.strict)?
    };
    if let Some(path) = &args.json {
        let text = serde_json::to_string_pretty(&report)?;
        std::fs::write(path, text + "\n")
            .with_context(|| format!("cannot write {}", path.display()))?;
    }
    if !args.quiet {
        print!("{}", report.summary());
    }
    Ok(0)
}
