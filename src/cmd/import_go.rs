//! `allocscope import trace.out -o T.atrace` for a Go execution trace (recognised by its
//! header): the runtime's alloc/free events into an `.atrace`, and the side file
//! `T.atrace.go.jsonl` (spans, GC cycles, heap figures, the Go type table; `gotrace::side`).
//!
//! A cut or damaged Go trace is handled like a cut `.atrace`: each problem is one line, and
//! without `--allow-truncated` nothing is written (exit 2); with it, everything read before the
//! damage is imported and the trace's end record says where the Go trace stopped.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::Path;

use anyhow::{anyhow, Context, Result};
use gotrace::side::{self, Record};
use gotrace::{ConvertError, Converter, FreeTime, GoTraceReader, Item};
use replayer::sizeclass::{SizeClass, SizeClasses};
use traces::{ClockSource, EndStatus, Ending, Event, Header, TraceWriter};

use super::output::{Outputs, Staged};

/// The `recorder` of an imported Go trace's header: tools that find it know the events'
/// call-site field is a Go type id of the side file, not a stack.
pub const GO_IMPORT_RECORDER: &str = "allocscope-import-go";

/// Whether a trace's header says it was imported from a Go execution trace.
pub fn is_go_import(header: &Header) -> bool {
    header.recorder.starts_with(GO_IMPORT_RECORDER)
}

/// Writes converted events into the trace and side records into the side file.
struct CliSink {
    trace: TraceWriter<BufWriter<Staged>>,
    side: BufWriter<Staged>,
}

enum SinkError {
    Trace(traces::TraceError),
    Side(std::io::Error),
}

impl gotrace::Sink for CliSink {
    type Error = SinkError;
    fn event(&mut self, ev: &Event) -> Result<(), SinkError> {
        self.trace.push(ev).map_err(SinkError::Trace)
    }
    fn record(&mut self, rec: &Record) -> Result<(), SinkError> {
        side::write_record(&mut self.side, rec).map_err(SinkError::Side)
    }
}

/// One line per problem of the Go trace.
fn report_problems(name: &str, problems: &[gotrace::GoTraceError], allow_truncated: bool) {
    for p in problems {
        let (level, hint) = if allow_truncated {
            ("warning", "")
        } else {
            ("error", " (pass --allow-truncated to import what was read)")
        };
        eprintln!("allocscope: {level}: {name}: {p}{hint}");
    }
}

/// Go's class sizes, from the replayer's table (the one copy of it).
fn class_bytes() -> Vec<u32> {
    let classes = SizeClasses::go();
    (0..classes.num_classes())
        .map(|c| classes.size_bytes(SizeClass(c as u8)))
        .collect()
}

/// Imports the Go trace at `input` (open as `file`) into `output`.
pub fn run(
    input: &Path,
    file: File,
    output: &Path,
    outputs: &Outputs,
    frees: FreeTime,
    allow_truncated: bool,
) -> Result<i32> {
    let name = input.display().to_string();
    let mut reader = GoTraceReader::open(file).map_err(|e| anyhow!("{name}: {e}"))?;
    let side_path = side::side_path(output);
    outputs.check("-o", output)?;
    outputs.check("-o (side file)", &side_path)?;
    let header = Header {
        recorder: format!("{GO_IMPORT_RECORDER} {}", env!("CARGO_PKG_VERSION")),
        command: vec!["import".into(), name.clone()],
        clock: ClockSource::Monotonic,
        page_size: 4096,
        ..Header::default()
    };
    let cannot_write = |p: &Path| format!("cannot write {}", p.display());
    let trace_file = outputs.create("-o", output)?;
    let side_file = outputs.create("-o", &side_path)?;
    let sink = CliSink {
        trace: TraceWriter::new(BufWriter::new(trace_file), &header)
            .with_context(|| cannot_write(output))?,
        side: BufWriter::new(side_file),
    };
    let opts = gotrace::Options {
        class_bytes: class_bytes(),
        frees,
        source: name.clone(),
    };
    let mut conv = Converter::new(opts, sink);
    let sink_err = |e: ConvertError<SinkError>| match e {
        ConvertError::Trace(e) => anyhow!("{name}: {e}"),
        ConvertError::Sink(SinkError::Trace(e)) => anyhow!("{}: {e}", cannot_write(output)),
        ConvertError::Sink(SinkError::Side(e)) => anyhow!("{}: {e}", cannot_write(&side_path)),
    };
    let mut warned_experiment = false;
    while let Some(item) = reader.next_item().map_err(|e| anyhow!("{name}: {e}"))? {
        match item {
            Item::Generation(g) => {
                if let (Some((exp, at)), false) = (g.unknown_experiment, warned_experiment) {
                    warned_experiment = true;
                    eprintln!(
                        "allocscope: warning: {name}: experiment {exp} (batch at byte {at}) is \
                         unknown to this allocscope and was skipped; only the alloc/free \
                         experiment (1) is read"
                    );
                }
                if let Err(e) = conv.generation(&g, reader.format()) {
                    // A damaged first generation is reported as the damage it is.
                    if matches!(e, ConvertError::Trace(_)) && !reader.problems().is_empty() {
                        report_problems(&name, reader.problems(), false);
                        return Ok(2);
                    }
                    return Err(sink_err(e));
                }
            }
            Item::Event(e) => conv.event(&e).map_err(sink_err)?,
        }
    }
    let problems = reader.problems();
    report_problems(&name, problems, allow_truncated);
    if !problems.is_empty() && !allow_truncated {
        // Dropping the staged files removes them: no partial output.
        return Ok(2);
    }
    let (sink, mut summary) = conv.finish().map_err(sink_err)?;
    let end = match problems.first() {
        None => EndStatus::complete(),
        Some(p) => EndStatus {
            note: format!("imported from a Go trace that was not read whole: {p}"),
            ..EndStatus::new(Ending::Stopped)
        },
    };
    let trace_file = sink
        .trace
        .finish_with(&end)
        .with_context(|| cannot_write(output))?
        .into_inner()
        .map_err(|e| e.into_error())
        .with_context(|| cannot_write(output))?;
    trace_file.commit()?;
    // The side file names the trace it belongs to.
    summary.trace_digest = super::digest::of(&super::open_trace(output)?);
    let mut side_out = sink.side;
    let c = summary.counts.clone();
    let a = summary.anomalies.clone();
    side::write_record(&mut side_out, &Record::Summary(Box::new(summary)))
        .and_then(|_| side_out.flush())
        .with_context(|| cannot_write(&side_path))?;
    side_out
        .into_inner()
        .map_err(|e| e.into_error())
        .with_context(|| cannot_write(&side_path))?
        .commit()?;
    eprintln!(
        "imported {} heap objects ({} live at the start, {} tiny that fitted a block in use), \
         {} frees ({} reported by the sweeper{}), {} GC cycles, {} spans from {} ({}) into {} \
         and {}",
        c.snapshot_objects + c.allocs,
        c.snapshot_objects,
        c.tiny_fits,
        c.frees,
        c.sweeper_frees,
        match frees {
            FreeTime::Sweep => ": each object died at or before its free".to_string(),
            FreeTime::CycleStart => format!(
                "; {} moved back before the start of the GC cycle that found them dead, {} left in place",
                c.frees_moved, c.frees_kept
            ),
        },
        c.gc_cycles,
        c.span_allocs,
        name,
        reader.format().releases(),
        output.display(),
        side_path.display()
    );
    if a.unknown_frees + a.outside_spans + a.unknown_types + a.kind_mismatches > 0 {
        eprintln!(
            "allocscope: warning: {name}: {} frees of objects never allocated, {} objects in no \
             known span, {} unknown type ids, {} pointer kinds that disagree with their span",
            a.unknown_frees, a.outside_spans, a.unknown_types, a.kind_mismatches
        );
    }
    Ok(0)
}

/// The summary line of the side file of `trace`, when `trace` was imported from a Go trace and
/// its side file is there and belongs to it. Otherwise `None`, with a warning for an imported
/// trace whose side file is missing, damaged or another trace's.
pub fn side_summary(trace: &Path, reader: &traces::TraceReader) -> Option<side::Summary> {
    if !is_go_import(reader.header()) {
        return None;
    }
    let path = side::side_path(trace);
    let warn = |why: String| {
        eprintln!(
            "allocscope: warning: {}: {why}; the per-Go-type figures are left out (import the Go \
             trace again to write it)",
            path.display()
        );
        None
    };
    let file = match traces::open_input(&path) {
        Ok(f) => f,
        Err(e) => return warn(format!("{e} (import writes it beside the trace)")),
    };
    let mut summary = None;
    if let Err(e) = side::read_records(&path, std::io::BufReader::new(file), |r| {
        if let Record::Summary(s) = r {
            summary = Some(*s);
        }
    }) {
        return warn(e.to_string());
    }
    let Some(summary) = summary else {
        return warn("has no summary line (cut short?)".into());
    };
    if summary.trace_digest != super::digest::of(reader) {
        return warn(format!("belongs to another trace than {}", trace.display()));
    }
    Some(summary)
}

/// The Go type table of an imported trace, for the per-type report.
pub fn go_type_names(summary: &side::Summary) -> Vec<analysis::gotypes::GoTypeName> {
    let mut names = vec![
        analysis::gotypes::GoTypeName {
            name: "(no type)".into(),
            size: 0,
            ptr_bytes: 0,
        };
        summary.types.len()
    ];
    for t in &summary.types {
        if let Some(n) = names.get_mut(t.id as usize) {
            *n = analysis::gotypes::GoTypeName {
                name: t.name.clone(),
                size: t.size,
                ptr_bytes: t.ptr_bytes,
            };
        }
    }
    names
}

/// What a replay of an imported Go trace starts from (before `--config` and flags): the
/// pointer kinds the trace gives, GOMAXPROCS Ps, and Go 1.26+'s span layout for traces of
/// format 26. `None` for other traces.
pub fn replay_defaults(trace: &Path) -> Option<(replayer::Config, String)> {
    let reader = traces::TraceReader::open(trace).ok()?;
    if !is_go_import(reader.header()) {
        return None;
    }
    let path = side::side_path(trace);
    let file = traces::open_input(&path).ok();
    let (mut format, mut procs) = (0, None);
    if let Some(file) = file {
        let _ = side::read_records(&path, std::io::BufReader::new(file), |r| match r {
            Record::Header(h) => format = h.format,
            Record::Procs(p) => procs = Some(p.n as usize),
            _ => {}
        });
    }
    let mut c = replayer::Config {
        pointers: replayer::Pointers::Trace,
        green_tea: format >= 26,
        ..replayer::Config::default()
    };
    if let Some(n) = procs.filter(|&n| (1..=1024).contains(&n)) {
        c.procs = n;
    }
    let note = format!(
        "a trace imported from Go: replayed with the trace's pointer kinds, {} P(s) (its \
         GOMAXPROCS){} unless --config or flags say otherwise",
        c.procs,
        if c.green_tea {
            " and Go 1.26+'s span layout (Green Tea GC)"
        } else {
            ""
        }
    );
    Some((c, note))
}
