//! `allocscope tune-classes T.atrace [--classes N] [-o PROPOSAL.csv] [--json F]`: proposes a
//! size-class table fitted to the trace's request sizes (see `analysis::tune` for how and which
//! of Go's constraints it keeps), writes it as CSV that `replay --size-classes` reads, then
//! replays the trace under Go's table and under the proposal and prints both side by side.

use std::path::PathBuf;
use std::sync::Mutex;

use analysis::tune::{self, Measured, SizeHistogram};
use anyhow::Result;
use replayer::config::{Config, Pointers};

use super::output::Outputs;
use super::{Problems, ReplayInput};

#[derive(clap::Args)]
#[command(after_help = concat!(
    "Example:\n  allocscope tune-classes app.atrace --classes 40 -o app-classes.csv\n  \
    allocscope replay app.atrace --size-classes app-classes.csv\n\n",
    super::overwrite_help!()
))]
pub struct Args {
    /// Trace file (.atrace).
    trace: PathBuf,
    /// Most classes the table may have (Go has 67).
    #[arg(long, value_name = "N", default_value_t = tune::GO_CLASSES)]
    classes: usize,
    /// Where to write the proposed table (CSV shaped like Go's sizeclasses); replaced if it
    /// exists.
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
    /// Which objects hold pointers, as for `replay`: trace (per event when the trace says,
    /// else pointer-free), noscan or scan.
    #[arg(long, value_name = "noscan|scan|trace", default_value = "trace")]
    pointers: String,
    /// Only propose and write the table; do not replay.
    #[arg(long)]
    no_replay: bool,
    /// Tune for what a truncated trace holds instead of failing.
    #[arg(long)]
    allow_truncated: bool,
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
    let outputs = Outputs::new().input("the trace", &args.trace);
    outputs.check("-o", &args.output)?;
    if let Some(p) = &args.json {
        outputs.check("--json", p)?;
    }
    let input = ReplayInput::open(&args.trace)?;
    let ReplayInput::Trace(reader) = &input else {
        anyhow::bail!(
            "{}: tune-classes reads a trace (.atrace); import a CSV workload first with \
             `allocscope import`",
            args.trace.display()
        );
    };
    let problems = Mutex::new(Problems::new(&args.trace, args.allow_truncated));
    {
        let mut p = problems.lock().unwrap_or_else(|e| e.into_inner());
        p.note_opened(reader);
        if p.is_fatal() {
            return Ok(p.exit_code());
        }
    }
    let parts = reader
        .par_map_chunks(|evs| {
            let mut h = SizeHistogram::default();
            for ev in evs {
                h.add(ev, pointers);
            }
            h
        })
        .map_err(|e| anyhow::anyhow!("{}: {e}", args.trace.display()))?;
    let mut hist = SizeHistogram::default();
    for p in parts {
        hist.merge(p);
    }
    let rows = tune::propose(&hist, args.classes)?;
    let csv = tune::to_csv(&rows);
    outputs.write("-o", &args.output, csv.as_bytes())?;
    let go_sizes: Vec<u64> = {
        let t = replayer::sizeclass::SizeClasses::go();
        (1..t.num_classes())
            .map(|c| t.size_bytes(replayer::sizeclass::SizeClass(c as u8)) as u64)
            .collect()
    };
    let sizes: Vec<u64> = rows.iter().map(|r| r.bytes_per_obj).collect();
    crate::outln!(
        "{}: {} small allocations over {} distinct sizes ({} tiny, large or empty not tuned)",
        args.trace.display(),
        hist.small_allocs(),
        hist.counts.len(),
        hist.other_allocs
    );
    crate::outln!(
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
    let measure = |table: &str| -> Result<Option<Measured>> {
        let cfg = Config {
            size_classes: table.to_string(),
            pointers,
            ..Config::default()
        };
        let name = args.trace.display().to_string();
        let r = replayer::replay_events(
            &name,
            input.forked_from(),
            input.events(&problems),
            &cfg,
            false,
        );
        if problems.lock().is_ok_and(|p| p.is_fatal()) {
            return Ok(None);
        }
        Ok(Some(Measured::from_replay(table, &r?)))
    };
    let (Some(go), Some(proposed)) = (measure("go")?, measure(&proposal_name)?) else {
        return Ok(2);
    };
    crate::out!("{}", tune::side_by_side(&go, &proposed, rows.len()));
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
        outputs.write("--json", p, &super::report::json_bytes(&doc)?)?;
    }
    Ok(0)
}
