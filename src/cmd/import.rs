//! `allocscope import WORKLOAD.csv -o T.atrace`: the CSV text form into a trace.

use std::path::PathBuf;

use anyhow::Result;
use traces::{ClockSource, Header, TraceWriter};

#[derive(clap::Args)]
pub struct Args {
    /// CSV workload with a header row; at least the columns op,id,size (see traces/FORMAT.md).
    input: PathBuf,
    /// Trace file to create (must not exist).
    #[arg(short, long)]
    output: PathBuf,
}

pub fn run(args: Args) -> Result<i32> {
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
    let mut writer = TraceWriter::create(&args.output, &header).map_err(|e| {
        let hint = if args.output.exists() {
            " (it exists: choose another name)"
        } else {
            ""
        };
        anyhow::anyhow!("{}: {e}{hint}", args.output.display())
    })?;
    let summary = match traces::csv::import(std::io::BufReader::new(input), &mut writer) {
        Ok(s) => s,
        Err(e) => {
            // Leave no half-written trace behind for a bad CSV.
            drop(writer);
            let _ = std::fs::remove_file(&args.output);
            return Err(anyhow::anyhow!("{}: {e}", args.input.display()));
        }
    };
    writer
        .finish()
        .map_err(|e| anyhow::anyhow!("{}: {e}", args.output.display()))?;
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
