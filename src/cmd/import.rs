//! `allocscope import WORKLOAD.csv -o T.atrace`: the CSV text form into a trace.

use std::path::PathBuf;

use anyhow::{Context, Result};
use traces::{ClockSource, Header, TraceWriter};

use super::output::Outputs;

#[derive(clap::Args)]
#[command(after_help = super::OVERWRITE_HELP)]
pub struct Args {
    /// CSV workload with a header row; at least the columns op,id,size (see traces/FORMAT.md).
    input: PathBuf,
    /// Trace file to write; replaced if it exists.
    #[arg(short, long)]
    output: PathBuf,
}

pub fn run(args: Args) -> Result<i32> {
    let outputs = Outputs::new().input("the CSV workload", &args.input);
    outputs.check("-o", &args.output)?;
    let input = traces::open_input(&args.input)
        .map_err(|e| anyhow::anyhow!("{}: {e}", args.input.display()))?;
    let header = Header {
        recorder: format!("allocscope-import {}", env!("CARGO_PKG_VERSION")),
        command: vec!["import".into(), args.input.display().to_string()],
        pid: std::process::id(),
        page_size: 4096,
        clock: ClockSource::Synthetic,
        ..Header::default()
    };
    let file = outputs.create("-o", &args.output)?;
    let cannot_write = || format!("cannot write {}", args.output.display());
    let mut writer =
        TraceWriter::new(std::io::BufWriter::new(file), &header).with_context(cannot_write)?;
    // A bad CSV drops the writer and with it the temporary file: no half-written trace.
    let summary =
        traces::csv::import(std::io::BufReader::new(input), &mut writer).map_err(|e| match e {
            traces::TraceError::Write(io) if is_write_side(&io) => {
                anyhow::anyhow!("{}: {io}", cannot_write())
            }
            e => anyhow::anyhow!("{}: {e}", args.input.display()),
        })?;
    let file = writer
        .finish()
        .with_context(cannot_write)?
        .into_inner()
        .map_err(|e| e.into_error())
        .with_context(cannot_write)?;
    file.commit()?;
    eprintln!(
        "imported {} events from {} into {}{}",
        summary.events,
        args.input.display(),
        args.output.display(),
        if summary.has_timestamps {
            ""
        } else {
            " (no ts_ns column: timestamps are synthetic)"
        }
    );
    Ok(0)
}

/// Whether an I/O error met during an import is the trace's (writing) rather than the CSV's
/// (a regular file, read): the kinds only writing gives.
fn is_write_side(e: &std::io::Error) -> bool {
    use std::io::ErrorKind::*;
    matches!(
        e.kind(),
        StorageFull | QuotaExceeded | FileTooLarge | WriteZero | ReadOnlyFilesystem
    )
}
