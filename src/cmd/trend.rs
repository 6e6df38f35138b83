//! `allocscope trend RESULTS... -o trend.svg [--metrics a,b] [--fail-if LIMITS]`: charts metrics
//! across result files given oldest first (one per commit) and marks regressions: a point that
//! crosses a limit against the one before it. Exit 1 when the newest result regressed.

use std::path::PathBuf;

use analysis::charts::ChartFormat;
use anyhow::Result;

use super::output::Outputs;

#[derive(clap::Args)]
#[command(after_help = super::OVERWRITE_HELP)]
pub struct Args {
    /// Result JSON files, oldest first.
    #[arg(required = true)]
    results: Vec<PathBuf>,
    /// Chart file; the extension says the format: .svg or .png. Replaced if it exists.
    #[arg(
        short = 'o',
        long = "out",
        value_name = "FILE",
        default_value = "trend.svg"
    )]
    out: PathBuf,
    /// Metrics to chart (comma-separated); default: those in --fail-if, else a few headline ones.
    #[arg(long, value_delimiter = ',')]
    metrics: Vec<String>,
    /// Limits as for `compare`, applied between consecutive results.
    #[arg(long, value_name = "LIMITS", allow_hyphen_values = true)]
    fail_if: Option<String>,
}

const DEFAULT: [&str; 6] = [
    "peak_heap",
    "waste_pct",
    "p99_ns",
    "peak_live_requested",
    "jw_frag",
    "recorded_p99_ns",
];

pub fn run(args: Args) -> Result<i32> {
    use analysis::{compare, trend};
    let outputs = args
        .results
        .iter()
        .fold(Outputs::new(), |o, p| o.input("one of the results", p));
    outputs.check("-o", &args.out)?;
    let format = ChartFormat::of_path(&args.out).ok_or_else(|| {
        anyhow::anyhow!(
            "-o {}: the extension says the format: use .svg or .png",
            args.out.display()
        )
    })?;
    let limits = match &args.fail_if {
        Some(e) => compare::parse_limits(e)?,
        None => Vec::new(),
    };
    let entries = trend::load(&args.results)?;
    let mut names = args.metrics.clone();
    if names.is_empty() {
        names = limits.iter().map(|l| l.metric.clone()).collect();
        names.dedup();
    }
    if names.is_empty() {
        names = DEFAULT
            .iter()
            .filter(|m| entries.iter().any(|e| e.metrics.contains_key(**m)))
            .map(|m| m.to_string())
            .collect();
    }
    if names.is_empty() {
        anyhow::bail!("no metric to chart: pass --metrics");
    }
    let series = trend::series(&entries, &names, &limits)?;
    let labels: Vec<String> = entries.iter().map(|e| e.label.clone()).collect();
    let chart = trend::chart(&labels, &series, format)?;
    let bytes = format.bytes(&chart).unwrap_or_default();
    outputs.write("-o", &args.out, bytes)?;
    crate::outln!("| metric | {} |", labels.join(" | "));
    crate::outln!("|---|{}", "---:|".repeat(labels.len()));
    for s in &series {
        let cells: Vec<String> = s
            .values
            .iter()
            .zip(&s.regressed)
            .map(|(v, r)| {
                format!(
                    "{}{}",
                    v.map_or("–".into(), compare::num),
                    if *r { " ❌" } else { "" }
                )
            })
            .collect();
        crate::outln!("| {} | {} |", s.metric, cells.join(" | "));
    }
    crate::outln!("\nwrote {}", args.out.display());
    let last_regressed = series
        .iter()
        .any(|s| s.regressed.last().copied().unwrap_or(false));
    Ok(if last_regressed { 1 } else { 0 })
}
