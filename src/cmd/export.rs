//! `allocscope export T.atrace [-o FILE.csv]`: a trace as CSV (stdout by default).

use std::io::Write;
use std::path::PathBuf;

use anyhow::{Context, Result};

use super::output::Outputs;
use super::{open_trace, Problems};

#[derive(clap::Args)]
#[command(after_help = super::OVERWRITE_HELP)]
pub struct Args {
    /// Trace file.
    trace: PathBuf,
    /// CSV file to write (default: standard output); replaced if it exists.
    #[arg(short, long)]
    output: Option<PathBuf>,
    /// Export what a truncated trace holds instead of failing.
    #[arg(long)]
    allow_truncated: bool,
}

pub fn run(args: Args) -> Result<i32> {
    let outputs = Outputs::new().input("the trace", &args.trace);
    if let Some(p) = &args.output {
        outputs.check("-o", p)?;
    }
    let reader = open_trace(&args.trace)?;
    let mut problems = Problems::new(&args.trace, args.allow_truncated);
    match &args.output {
        Some(p) => {
            let file = outputs.create("-o", p)?;
            let file = export(&reader, file, &mut problems)
                .with_context(|| format!("cannot write {}", p.display()))?;
            // A trace that could not be read whole leaves no file behind.
            if !problems.is_fatal() {
                file.commit()?;
            }
        }
        None => {
            let _stdout = export(&reader, std::io::stdout().lock(), &mut problems)
                .context("cannot write to standard output")?;
        }
    }
    Ok(problems.exit_code())
}

/// Writes every event of `reader` to `out` as CSV; the trace's problems go to `problems`.
fn export<W: Write>(
    reader: &traces::TraceReader,
    out: W,
    problems: &mut Problems,
) -> Result<W, traces::TraceError> {
    let mut exporter = traces::csv::Exporter::new(std::io::BufWriter::new(out))?;
    for ev in reader.events() {
        match ev {
            Ok(ev) => exporter.write(&ev)?,
            Err(e) => problems.note(&e),
        }
    }
    exporter
        .finish()?
        .into_inner()
        .map_err(|e| traces::TraceError::Write(e.into_error()))
}
