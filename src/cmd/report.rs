//! `allocscope report T.atrace`: the workload view of a trace, size-class waste under a class
//! table, fragmentation and recorded latency; text on stdout, plus JSON, CSV, charts and HTML on
//! request. See `analysis` for what each figure means.

use std::path::{Path, PathBuf};

use anyhow::Result;
use replayer::sizeclass::SizeClasses;

use super::output::Outputs;
use super::stacks::SymbolArgs;
use super::{digest, Problems};

#[derive(clap::Args)]
#[command(after_help = concat!(
    "Directories (-o DIR, --csv DIR) are created when missing and reused when they exist: the \
     files allocscope writes there are replaced, other files are left alone.\n\n",
    super::overwrite_help!()
))]
pub struct Args {
    /// Trace file (.atrace).
    trace: PathBuf,
    /// Write DIR/index.html (one self-contained page), DIR/report.json, the charts as SVG
    /// and PNG and, for a trace with stacks, the flame graphs as DIR/flame-*.svg into DIR.
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
    /// A replay JSON of the same trace (`replay --json`): adds the replayed heap figures (J&W
    /// on heap_inuse). Its event count and trace digest must match the trace.
    #[arg(long, value_name = "FILE.json")]
    replay: Option<PathBuf>,
    /// A replay timeline of the same trace (`replay --timeline FILE.csv`): charts HeapAlloc,
    /// HeapInuse, HeapSys and RSS over the replay in the HTML report (needs -o).
    #[arg(long, value_name = "FILE.csv", requires = "out")]
    replay_timeline: Option<PathBuf>,
    /// Start the report at this point: a time since the trace's first event (250ms, 1.5s,
    /// 800us) or an event number (120000ev). Every count covers the window; the live figures,
    /// peaks and "leaked" include what was live when it started.
    #[arg(long, value_name = "WHEN", conflicts_with_all = ["replay", "replay_timeline"])]
    from: Option<analysis::window::Bound>,
    /// End the report before this point (same forms as --from); the events after it are not
    /// read.
    #[arg(long, value_name = "WHEN", conflicts_with_all = ["replay", "replay_timeline"])]
    to: Option<analysis::window::Bound>,
    /// Report on what a truncated trace holds instead of failing.
    #[arg(long)]
    allow_truncated: bool,
    /// Print nothing on stdout.
    #[arg(short, long)]
    quiet: bool,
    /// Call sites: list at least the top N stacks by each of bytes, peak, leaked and waste in
    /// the JSON and CSV (every allocating function is listed; the text shows the top 10).
    #[arg(long, value_name = "N", default_value_t = 100,
          value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    top: u32,
    #[command(flatten)]
    symbols: SymbolArgs,
}

pub fn run(args: Args) -> Result<i32> {
    let mut outputs = Outputs::new().input("the trace", &args.trace);
    for (what, p) in [
        ("the size-class table", &args.classes),
        ("the replay JSON", &args.replay),
        ("the replay timeline", &args.replay_timeline),
    ] {
        if let Some(p) = p {
            outputs = outputs.input(what, p);
        }
    }
    if let Some(p) = &args.json {
        outputs.check("--json", p)?;
    }
    for (flag, d) in [("-o", &args.out), ("--csv", &args.csv)] {
        if let Some(d) = d {
            outputs.check_dir(flag, d)?;
        }
    }
    let window = analysis::window::Window {
        from: args.from,
        to: args.to,
    };
    window.check().map_err(anyhow::Error::msg)?;
    let classes = match &args.classes {
        Some(p) => {
            let text = analysis::replay_json::read_regular(p)?;
            SizeClasses::from_csv_text(&p.display().to_string(), &text, 8192)?
        }
        None => SizeClasses::go(),
    };
    let replay = match &args.replay {
        Some(p) => Some(read_replay_of(p, &args.trace)?),
        None => None,
    };
    // Read now: a timeline that is not one is an error before the long pass, never ignored.
    let timeline = match &args.replay_timeline {
        Some(p) => Some(analysis::replay_timeline::read(p)?),
        None => None,
    };
    // How the recording ended: from the trace's end record (cheap: the header and the index).
    let opened = super::open_trace(&args.trace)?;
    let recording_end = opened.recording_end();
    // A trace imported from Go: the per-Go-type view from its side file.
    let go_types = super::import_go::side_summary(&args.trace, &opened)
        .map(|s| super::import_go::go_type_names(&s));
    drop(opened);
    let mut problems = Problems::new(&args.trace, args.allow_truncated);
    let mut report = analysis::analyze::analyze_file_with(
        &args.trace,
        classes,
        replay.as_ref(),
        go_types,
        &window,
        |e| problems.note(&e),
    )?;
    if problems.is_fatal() {
        return Ok(problems.exit_code());
    }
    let reader = super::open_trace(&args.trace)?;
    let flames = super::stacks::add_call_sites(
        &mut report,
        &reader,
        &args.trace,
        &args.symbols,
        args.top as usize,
        args.out.is_some(),
    )?;
    drop(reader);
    if !args.quiet {
        crate::out!("{}", analysis::text::summary(&report));
        if !recording_end.is_clean() {
            crate::outln!("\nrecording ended: {}", recording_end.description);
        }
    }
    // The JSON carries how the recording ended (`recording_end`, see ARCHITECTURE.md); built
    // only for the outputs that hold it (several MB with call sites).
    let doc = if args.out.is_some() || args.json.is_some() {
        with_recording_end(&report, &recording_end)?
    } else {
        serde_json::Value::Null
    };
    if let Some(d) = &args.csv {
        outputs.write_dir_with("--csv", d, |stage| {
            analysis::tables::write_csv(&report, stage).map(|_| ())
        })?;
    }
    if let Some(d) = &args.out {
        let mut charts = flames;
        charts.extend(analysis::charts::report_charts(&report, true)?);
        if let Some(points) = &timeline {
            charts.push(analysis::charts::replay_timeline_chart(points, true)?);
        }
        let page = write_dir(&outputs, "-o", d, &report, &doc, &charts)?;
        if !args.quiet {
            crate::outln!("\nwrote {}", page.display());
        }
    }
    // Last: a --json path may be inside the directory -o has just created.
    if let Some(p) = &args.json {
        outputs.write("--json", p, &json_bytes(&doc)?)?;
    }
    Ok(0)
}

/// A result document as the files hold it: pretty JSON and a final newline.
pub fn json_bytes(doc: &impl serde::Serialize) -> Result<Vec<u8>> {
    let mut bytes = serde_json::to_vec_pretty(doc)?;
    bytes.push(b'\n');
    Ok(bytes)
}

/// The report's JSON document with how the recording ended (`recording_end`).
pub fn with_recording_end(
    report: &analysis::Report,
    end: &traces::RecordingEnd,
) -> Result<serde_json::Value> {
    let mut doc = serde_json::to_value(report)?;
    doc["recording_end"] = serde_json::to_value(end)?;
    Ok(doc)
}

/// Reads a replay JSON and checks that it is the replay of `trace`.
fn read_replay_of(replay: &Path, trace: &Path) -> Result<serde_json::Value> {
    let doc = analysis::replay_json::read_json(replay)?;
    let reader = super::open_trace(trace)?;
    let (rn, tn) = (replay.display().to_string(), trace.display().to_string());
    match digest::check(&doc, &rn, &reader, &tn).map_err(anyhow::Error::msg)? {
        digest::Match::Same => {}
        digest::Match::NoDigest => eprintln!(
            "allocscope: warning: {rn}: has no trace digest (an older replay JSON, or the \
             replay of a CSV workload): only its event count was checked against {tn}"
        ),
    }
    Ok(doc)
}

/// Writes a report directory: the charts as SVG and PNG, `index.html` and `report.json`, as
/// one set (staged, then renamed into place: a failure leaves the directory as it was).
/// Returns the page's path. `profile` writes its directory the same way.
pub fn write_dir(
    outputs: &Outputs,
    flag: &str,
    dir: &Path,
    report: &analysis::Report,
    doc: &serde_json::Value,
    charts: &[analysis::charts::Chart],
) -> Result<PathBuf> {
    let html = analysis::html::report_page(report, charts);
    let json = json_bytes(doc)?;
    outputs.write_dir_with(flag, dir, |stage| -> std::io::Result<()> {
        for c in charts {
            std::fs::write(stage.join(format!("{}.svg", c.name)), &c.svg)?;
            if let Some(png) = &c.png {
                std::fs::write(stage.join(format!("{}.png", c.name)), png)?;
            }
        }
        std::fs::write(stage.join("index.html"), &html)?;
        std::fs::write(stage.join("report.json"), &json)
    })?;
    Ok(dir.join("index.html"))
}
