//! `allocscope export T.atrace [-o FILE.csv]`: a trace as CSV (stdout by default).

use std::io::Write;
use std::path::PathBuf;

use anyhow::{Context, Result};

use super::open_trace;

#[derive(clap::Args)]
pub struct Args {
    /// Trace file.
    trace: PathBuf,
    /// CSV file to write (default: standard output).
    #[arg(short, long)]
    output: Option<PathBuf>,
    /// Export what a truncated trace holds instead of failing.
    #[arg(long)]
    allow_truncated: bool,
}

pub fn run(args: Args) -> Result<i32> {
    let reader = open_trace(&args.trace)?;
    let sink: Box<dyn Write> = match &args.output {
        Some(p) => Box::new(
            std::fs::File::create(p).with_context(|| format!("{}: cannot create", p.display()))?,
        ),
        None => Box::new(std::io::stdout().lock()),
    };
    let mut exporter = traces::csv::Exporter::new(std::io::BufWriter::new(sink))?;
    let mut problems = super::Problems::new(&args.trace, args.allow_truncated);
    for ev in reader.events() {
        match ev {
            Ok(ev) => match exporter.write(&ev) {
                Ok(()) => {}
                // A closed pipe (`| head`) ends the export quietly.
                Err(traces::TraceError::Write(e)) if e.kind() == std::io::ErrorKind::BrokenPipe => {
                    return Ok(0)
                }
                Err(e) => return Err(e.into()),
            },
            Err(e) => problems.note(e),
        }
    }
    match exporter.finish() {
        Ok(_) => {}
        Err(traces::TraceError::Write(e)) if e.kind() == std::io::ErrorKind::BrokenPipe => {}
        Err(e) => return Err(e.into()),
    }
    Ok(problems.exit_code())
}
