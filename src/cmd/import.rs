//! `allocscope import WORKLOAD.csv -o T.atrace`: the CSV text form into a trace; a Go execution
//! trace (recognised by its header) goes to [`super::import_go`].

use std::path::PathBuf;

use anyhow::{Context, Result};
use traces::{ClockSource, Header, TraceWriter};

use super::output::Outputs;

#[derive(clap::Args)]
#[command(after_help = super::OVERWRITE_HELP)]
pub struct Args {
    /// CSV workload with a header row; at least the columns op,id,size (see traces/FORMAT.md),
    /// or a Go execution trace taken with GODEBUG=traceallocfree=1 (Go 1.23 to 1.27).
    input: PathBuf,
    /// Trace file to write; replaced if it exists. A Go trace also writes FILE.go.jsonl beside
    /// it (spans, GC cycles, heap figures and the Go type table, for report and export).
    #[arg(short, long)]
    output: PathBuf,
    /// Go traces: when a free happens. `sweep`: when the sweeper found the object dead (the
    /// object died at or before it); `cycle-start`: where the object died as near as the trace can
    /// tell, between the start of the cycle before the one that found it dead and the start of
    /// that one (see README).
    #[arg(long, value_enum, default_value = "sweep")]
    go_frees: GoFrees,
    /// Go traces: import what a cut or damaged trace holds instead of failing.
    #[arg(long)]
    allow_truncated: bool,
}

#[derive(Clone, Copy, clap::ValueEnum)]
pub enum GoFrees {
    Sweep,
    CycleStart,
}

pub fn run(args: Args) -> Result<i32> {
    let outputs = Outputs::new().input("the CSV workload", &args.input);
    outputs.check("-o", &args.output)?;
    let input = traces::open_input(&args.input)
        .map_err(|e| anyhow::anyhow!("{}: {e}", args.input.display()))?;
    if starts_like_go_trace(&input)? {
        let frees = match args.go_frees {
            GoFrees::Sweep => gotrace::FreeTime::Sweep,
            GoFrees::CycleStart => gotrace::FreeTime::CycleStart,
        };
        return super::import_go::run(
            &args.input,
            input,
            &args.output,
            &outputs,
            frees,
            args.allow_truncated,
        );
    }
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

/// Whether the file starts with a Go execution trace's header (read with a positioned read: the
/// CSV reader still starts at byte 0).
fn starts_like_go_trace(file: &std::fs::File) -> Result<bool> {
    use std::os::unix::fs::FileExt;
    let mut head = [0u8; 16];
    let mut n = 0;
    while n < head.len() {
        match file.read_at(&mut head[n..], n as u64) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(gotrace::is_go_trace(&head[..n]))
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
