//! `allocscope export T.atrace [--format csv|folded|pprof|spans] [-o FILE]`: a trace as CSV, its
//! call stacks as folded stacks (flamegraph.pl, inferno, speedscope) or a pprof heap profile
//! (`go tool pprof`), or the spans of a trace imported from Go (from its side file). Standard
//! output by default.

use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};

use analysis::folded::Weight;
use analysis::stacks::{StackProfile, StackProfiler};
use anyhow::{bail, Context, Result};

use super::output::Outputs;
use super::stacks::{self, SymbolArgs};
use super::{open_trace, Problems};

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
enum Format {
    /// Every event, one CSV row each (the columns `import` reads).
    Csv,
    /// One line per distinct call stack: frames root first joined by `;`, a space, the weight.
    Folded,
    /// A gzipped profile.proto with Go's heap sample types (alloc_objects, alloc_space,
    /// inuse_objects, inuse_space; inuse = still live at the end).
    Pprof,
    /// For a trace imported from Go, every span the runtime had when tracing began, allocated or
    /// freed: n,event,op,page,npages,span_class (page: pages from the lowest span's first page;
    /// event: trace events before it; span_class: Go's spanclass, -1 for spans of no heap
    /// objects).
    Spans,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
enum WeightArg {
    /// Allocating calls.
    Allocs,
    /// Requested bytes.
    Bytes,
    /// Requested bytes still live at the end of the trace.
    Leaked,
    /// Requested bytes live at the peak of live requested bytes.
    Peak,
}

#[derive(clap::Args)]
#[command(after_help = super::OVERWRITE_HELP)]
pub struct Args {
    /// Trace file.
    trace: PathBuf,
    /// What to write.
    #[arg(long, value_enum, default_value_t = Format::Csv)]
    format: Format,
    /// What a folded line counts (--format folded; default: allocs).
    #[arg(long, value_enum)]
    weight: Option<WeightArg>,
    /// File to write (default: standard output); replaced if it exists.
    #[arg(short, long)]
    output: Option<PathBuf>,
    /// Export what a truncated trace holds instead of failing.
    #[arg(long)]
    allow_truncated: bool,
    #[command(flatten)]
    symbols: SymbolArgs,
}

pub fn run(args: Args) -> Result<i32> {
    if args.weight.is_some() && args.format != Format::Folded {
        bail!("--weight applies to --format folded only");
    }
    if args.format == Format::Pprof && args.output.is_none() && std::io::stdout().is_terminal() {
        bail!("a pprof profile is binary: give -o FILE (e.g. -o heap.pb.gz)");
    }
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
    if args.format == Format::Csv {
        export_csv(&reader, &args, &outputs, &mut problems)?;
        return Ok(problems.exit_code());
    }
    let mut profiler = StackProfiler::new(reader.header());
    let mut span = (u64::MAX, 0);
    for ev in reader.events() {
        match ev {
            Ok(ev) => {
                span = (span.0.min(ev.ts_ns), span.1.max(ev.ts_ns));
                profiler.add(&ev);
            }
            Err(e) => problems.note(&e),
        }
    }
    if problems.is_fatal() {
        return Ok(problems.exit_code());
    }
    let profile = profiler.finish();
    let stacks = stacks::load(&reader, &args.trace);
    let leaves = profile
        .stacks
        .iter()
        .filter_map(|(id, w)| id.map(|leaf| (leaf, w.first_seq)));
    let symbols = stacks::symbolize(&stacks, leaves, &args.symbols);
    let bytes = match args.format {
        Format::Folded => {
            let weight = match args.weight.unwrap_or(WeightArg::Allocs) {
                WeightArg::Allocs => Weight::Allocs,
                WeightArg::Bytes => Weight::Bytes,
                WeightArg::Leaked => Weight::Leaked,
                WeightArg::Peak => Weight::Peak,
            };
            let lines = analysis::folded::lines(&profile, &stacks.table, &symbols, weight);
            let mut out = Vec::new();
            analysis::folded::write(&lines, &mut out)?;
            out
        }
        _ => {
            let duration_ns = span.1.saturating_sub(span.0);
            pprof(
                &reader,
                &args.trace,
                &profile,
                &stacks,
                &symbols,
                duration_ns,
            )?
        }
    };
    match &args.output {
        Some(p) => outputs.write("-o", p, &bytes)?,
        None => {
            let mut out = std::io::stdout().lock();
            out.write_all(&bytes)?;
            out.flush()?;
        }
    }
    Ok(problems.exit_code())
}

/// The gzipped pprof profile of `profile`.
fn pprof(
    reader: &traces::TraceReader,
    path: &Path,
    profile: &StackProfile,
    stacks: &stacks::Stacks,
    symbols: &symbolize::Symbols,
    duration_ns: u64,
) -> Result<Vec<u8>> {
    let info = analysis::pprof::ProfileInfo {
        start_unix_ns: reader.header().start_unix_ns,
        duration_ns,
        comment: format!("allocscope export of {}", path.display()),
    };
    let p = analysis::pprof::build(profile, &stacks.table, symbols, &info);
    let mut out = Vec::new();
    analysis::pprof::write(&p, &mut out)?;
    Ok(out)
}

/// Streams every event of the trace as CSV to `-o` or standard output.
fn export_csv(
    reader: &traces::TraceReader,
    args: &Args,
    outputs: &Outputs,
    problems: &mut Problems,
) -> Result<()> {
    match &args.output {
        Some(p) => {
            let file = outputs.create("-o", p)?;
            let file = export(reader, file, problems)
                .with_context(|| format!("cannot write {}", p.display()))?;
            // A trace that could not be read whole leaves no file behind.
            if !problems.is_fatal() {
                file.commit()?;
            }
        }
        None => {
            let _stdout = export(reader, std::io::stdout().lock(), problems)
                .context("cannot write to standard output")?;
        }
    }
    Ok(())
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
