//! `allocscope report T.atrace`: the workload view of a trace, size-class waste under a class
//! table, fragmentation and recorded latency; text on stdout, plus JSON, CSV, charts and HTML on
//! request. See `analysis` for what each figure means.

use std::path::PathBuf;

use anyhow::{Context, Result};
use replayer::sizeclass::SizeClasses;

use super::Problems;

#[derive(clap::Args)]
pub struct Args {
    /// Trace file (.atrace).
    trace: PathBuf,
    /// Write DIR/index.html (one self-contained page) and the charts as SVG and PNG into DIR.
    #[arg(short = 'o', long = "out", value_name = "DIR")]
    out: Option<PathBuf>,
    /// Write the report as JSON (with a flat `metrics` map for compare/trend).
    #[arg(long, value_name = "FILE")]
    json: Option<PathBuf>,
    /// Write every table as DIR/<table>.csv.
    #[arg(long, value_name = "DIR")]
    csv: Option<PathBuf>,
    /// Size-class table as CSV (class,bytes_per_obj,bytes_per_span,...); Go's by default.
    #[arg(long, value_name = "FILE.csv")]
    classes: Option<PathBuf>,
    /// A replay JSON of the same trace: adds the replayed heap figures (J&W on heap_inuse).
    #[arg(long, value_name = "FILE.json")]
    replay: Option<PathBuf>,
    /// A replay timeline of the same trace (`replay --timeline FILE.csv`): charts HeapAlloc,
    /// HeapInuse, HeapSys and RSS over the replay in the HTML report (with -o).
    #[arg(long, value_name = "FILE.csv")]
    replay_timeline: Option<PathBuf>,
    /// Report on what a truncated trace holds instead of failing.
    #[arg(long)]
    allow_truncated: bool,
    /// Print nothing on stdout.
    #[arg(short, long)]
    quiet: bool,
}

pub fn run(args: Args) -> Result<i32> {
    let classes = match &args.classes {
        Some(p) => {
            let text = std::fs::read_to_string(p).with_context(|| p.display().to_string())?;
            SizeClasses::from_csv_text(&p.display().to_string(), &text, 8192)?
        }
        None => SizeClasses::go(),
    };
    let replay = match &args.replay {
        Some(p) => Some(analysis::replay_json::read_json(p)?),
        None => None,
    };
    // How the recording ended: from the trace's end record (cheap: the header and the index).
    let recording_end = super::open_trace(&args.trace)?.recording_end();
    let mut problems = Problems::new(&args.trace, args.allow_truncated);
    let report = analysis::analyze::analyze_file(&args.trace, classes, replay.as_ref(), |e| {
        problems.note(e)
    })
    .map_err(|e| anyhow::anyhow!("{e}"))?;
    if problems.exit_code() != 0 {
        return Ok(problems.exit_code());
    }
    if !args.quiet {
        print!("{}", analysis::text::summary(&report));
        if !recording_end.is_clean() {
            println!("\nrecording ended: {}", recording_end.description);
        }
    }
    // The JSON carries how the recording ended (`recording_end`, see ARCHITECTURE.md).
    let mut doc = serde_json::to_value(&report)?;
    doc["recording_end"] = serde_json::to_value(&recording_end)?;
    if let Some(p) = &args.json {
        let text = serde_json::to_string_pretty(&doc)?;
        std::fs::write(p, text + "\n").with_context(|| p.display().to_string())?;
    }
    if let Some(d) = &args.csv {
        analysis::tables::write_csv(&report, d)?;
    }
    if let Some(d) = &args.out {
        let mut charts = analysis::charts::report_charts(&report, Some(d))?;
        if let Some(p) = &args.replay_timeline {
            let points = analysis::replay_timeline::read(p)?;
            charts.push(analysis::charts::replay_timeline_chart(&points, Some(d))?);
        }
        let page = analysis::html::write_report(&report, &charts, d)?;
        let json = d.join("report.json");
        std::fs::write(&json, serde_json::to_string_pretty(&doc)? + "\n")
            .with_context(|| json.display().to_string())?;
        if !args.quiet {
            println!("\nwrote {}", page.display());
        }
    }
    Ok(0)
}
