//! `allocscope export T.atrace [-o FILE.csv]`: a trace as CSV (stdout by default);
//! `--format spans`: the spans of a trace imported from Go (from its side file).

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
    /// csv: the events; spans: for a trace imported from Go, every span the runtime had when
    /// tracing began, allocated or freed: n,event,op,page,npages,span_class (page: pages from
    /// the lowest span's first page; event: trace events before it; span_class: Go's spanclass,
    /// -1 for spans of no heap objects).
    #[arg(long, value_enum, default_value = "csv")]
    format: Format,
}

#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Csv,
    Spans,
}

pub fn run(args: Args) -> Result<i32> {
    let outputs = Outputs::new().input("the trace", &args.trace);
    if let Some(p) = &args.output {
        outputs.check("-o", p)?;
    }
    let reader = open_trace(&args.trace)?;
    if args.format == Format::Spans {
        let rows = spans_csv(&args.trace, &reader)?;
        match &args.output {
            Some(p) => outputs.write("-o", p, rows.as_bytes())?,
            None => crate::out!("{rows}"),
        }
        return Ok(0);
    }
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

/// The span rows of an imported Go trace, as CSV (the side file is read twice: the heap's first
/// page, then the rows; memory is the rows' text).
fn spans_csv(trace: &std::path::Path, reader: &traces::TraceReader) -> Result<String> {
    use gotrace::side::{self, Record, SpanOp};
    if !super::import_go::is_go_import(reader.header()) {
        anyhow::bail!(
            "{}: --format spans needs a trace imported from a Go execution trace (allocscope \
             import trace.out -o T.atrace); this one was recorded by {}",
            trace.display(),
            reader.header().recorder
        );
    }
    if super::import_go::side_summary(trace, reader).is_none() {
        anyhow::bail!("{}: no usable side file (see above)", trace.display());
    }
    let path = side::side_path(trace);
    let read = |f: &mut dyn FnMut(Record)| -> Result<()> {
        let file =
            traces::open_input(&path).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
        side::read_records(&path, std::io::BufReader::new(file), f)?;
        Ok(())
    };
    let mut first = u64::MAX;
    read(&mut |r| {
        if let Record::Span(s) = r {
            if s.op != SpanOp::Free {
                first = first.min(s.page);
            }
        }
    })?;
    let mut out = String::from("n,event,op,page,npages,span_class\n");
    let mut n = 0u64;
    read(&mut |r| {
        if let Record::Span(s) = r {
            let op = match s.op {
                SpanOp::Exists => "exists",
                SpanOp::Alloc => "alloc",
                SpanOp::Free => "free",
            };
            let page = s.page.wrapping_sub(first) as i64;
            out.push_str(&format!(
                "{n},{},{op},{page},{},{}\n",
                s.event, s.npages, s.span_class
            ));
            n += 1;
        }
    })?;
    Ok(out)
}
