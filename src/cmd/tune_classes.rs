//! `allocscope tune-classes T.atrace [--classes N] [-o PROPOSAL.csv] [--json F]`: proposes a
//! size-class table fitted to the trace's request sizes (see `analysis::tune` for how and which
//! of Go's constraints it keeps), writes it as CSV that `replay --size-classes` reads, then
//! replays the trace under Go's table and under the proposal and prints both side by side.

use std::path::PathBuf;

use analysis::tune::{self, Measured, SizeHistogram};
use anyhow::{Context, Result};
use replayer::config::{Config, Pointers};

#[derive(clap::Args)]
#[command(
    after_help = "Example:\n  allocscope tune-classes app.atrace --classes 40 -o app-classes.csv\n  \
    allocscope replay app.atrace --size-classes app-classes.csv"
)]
pub struct Args {
    /// Trace file (.atrace).
    trace: PathBuf,
    /// Most classes the table may have (Go has 67).
    #[arg(long, value_name = "N", default_value_t = tune::GO_CLASSES)]
    classes: usize,
    /// Where to write the proposed table (CSV shaped like Go's sizeclasses).
    #[arg(
        short = 'o',
        long = "output",
        value_name = "PROPOSAL.csv",
        default_value = "proposal-classes.csv"
    )]
    output: PathBuf,
    /// Also write the proposal and both measurements as JSON.
    #[arg(long, value_name = "FILE")]
    json: Option<PathBuf>,
    /// Pointer assumption, as for `replay`: noscan, scan, or trace.
    #[arg(long, value_name = "noscan|scan|trace", default_value = "noscan")]
    pointers: String,
    /// Only propose and write the table; do not replay.
    #[arg(long)]
    no_replay: bool,
}

pub fn run(args: Args) -> Result<i32> {
    let pointers = match args.pointers.as_str() {
        "noscan" => Pointers::Noscan,
        "scan" => Pointers::Scan,
        "trace" => Pointers::Trace,
        other => anyhow::bail!("--pointers {other:?}: want noscan, scan or trace"),
    };
    if !(2..=tune::MAX_CLASSES).contains(&args.classes) {
        anyhow::bail!(
            "--classes {}: want 2..={} (16 and 32768 are always classes)",
            args.classes,
            tune::MAX_CLASSES
        );
    }
    let reader = super::open_trace(&args.trace)?;
    let parts = reader
        .par_map_chunks(|evs| {
            let mut h = SizeHistogram::default();
            for ev in evs {
                h.add(ev, pointers);
            }
            h
        })
        .map_err(|e| anyhow::anyhow!("{}: {e}", args.trace.display()))?;
    // The chunks are read in no order, so only what the reader found on opening is known here
    // (no end record, a damaged index or chunk); the replay below reads in order.
    for p in reader.problems() {
        eprintln!("allocscope: warning: {}: {p}", args.trace.display());
    }
    let mut hist = SizeHistogram::default();
    for p in parts {
        hist.merge(p);
    }
    let rows = tune::propose(&hist, args.classes)?;
    let csv = tune::to_csv(&rows);
    std::fs::write(&args.output, &csv)
        .with_context(|| format!("cannot write {}", args.output.display()))?;
    let go_sizes: Vec<u64> = {
        let t = replayer::sizeclass::SizeClasses::go();
        (1..t.num_classes())
            .map(|c| t.size_bytes(replayer::sizeclass::SizeClass(c as u8)) as u64)
            .collect()
    };
    let sizes: Vec<u64> = rows.iter().map(|r| r.bytes_per_obj).collect();
    println!(
        "{}: {} small allocations over {} distinct sizes ({} tiny, large or empty not tuned)",
        args.trace.display(),
        hist.small_allocs(),
        hist.counts.len(),
        hist.other_allocs
    );
    println!(
        "proposal: {} classes -> {} (round-up waste {} B with Go's table, {} B proposed)",
        rows.len(),
        args.output.display(),
        tune::roundup_waste_bytes(&hist, &go_sizes),
        tune::roundup_waste_bytes(&hist, &sizes)
    );
    if args.no_replay {
        return Ok(0);
    }
    let proposal_name = args.output.display().to_string();
    let measure = |table: &str| -> Result<Measured> {
        let cfg = Config {
            size_classes: table.to_string(),
            pointers,
            ..Config::default()
        };
        let r = replayer::replay_file(&args.trace, &cfg, false)?;
        Ok(Measured::from_replay(table, &r))
    };
    let go = measure("go")?;
    let proposed = measure(&proposal_name)?;
    print!("{}", tune::side_by_side(&go, &proposed, rows.len()));
    if let Some(p) = &args.json {
        let doc = serde_json::json!({
            "schema": 1,
            "kind": "tune-classes",
            "trace": args.trace.display().to_string(),
            "proposal": { "path": proposal_name, "classes": rows },
            "go": go,
            "proposed": proposed,
            "metrics": {
                "waste_pct_go": go.waste_pct,
                "waste_pct": proposed.waste_pct,
                "peak_heap_go": go.peak_heap_inuse_bytes,
                "peak_heap": proposed.peak_heap_inuse_bytes,
            },
        });
        std::fs::write(p, serde_json::to_string_pretty(&doc)? + "\n")
            .with_context(|| format!("cannot write {}", p.display()))?;
    }
    Ok(0)
}
