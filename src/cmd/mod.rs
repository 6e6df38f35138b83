//! One module per CLI verb. Each has an `Args` (clap derive) and `run(Args) -> anyhow::Result<i32>`
//! returning the process exit code; errors become one line on stderr in `main`.

pub mod compare;
pub mod digest;
pub mod export;
pub mod import;
pub mod import_go;
pub mod info;
pub mod output;
pub mod profile;
pub mod record;
pub mod replay;
pub mod report;
pub mod stacks;
pub mod sweep;
pub mod trend;
pub mod tune_classes;

use std::path::Path;

/// What every verb that writes files says about them in `--help` (the rules are in
/// [`output`]); a macro so that verbs with their own notes can `concat!` it.
macro_rules! overwrite_help {
    () => {
        "Output files: an existing file named as an output is replaced: the new content is \
         written to a temporary file in the same directory and renamed into place, so the file \
         is either the old one or the whole new one (a symlink there is replaced, not followed; \
         a FIFO or a device such as /dev/stdout is written directly). An output that is one of \
         the inputs (by path, symlink or hard link) is refused. On an error or Ctrl-C no \
         partial or temporary file is left."
    };
}
pub(crate) use overwrite_help;

/// [`overwrite_help!`] as a constant, for verbs with no other notes.
pub const OVERWRITE_HELP: &str = overwrite_help!();

/// Exit code for an error that reached `main`, from its whole chain of causes: 0 when standard
/// output was closed under us (`allocscope info T | head -1`: the reader has what it wanted),
/// else 2 (bad input or usage). A verb that needs another code (compare's 1 for a crossed
/// limit, record's command's own code) returns it as `Ok(code)` instead.
pub fn exit_code_for(err: &anyhow::Error) -> i32 {
    if is_broken_pipe(err) {
        0
    } else {
        2
    }
}

/// Whether any cause in the chain is an EPIPE.
pub fn is_broken_pipe(err: &anyhow::Error) -> bool {
    err.chain().any(|c| {
        c.downcast_ref::<std::io::Error>()
            .is_some_and(|e| e.kind() == std::io::ErrorKind::BrokenPipe)
    })
}

/// The error and its causes on one line. A cause whose text the line already holds (an error
/// that prints its source and also returns it from `source()`) is not repeated.
pub fn one_line(err: &anyhow::Error) -> String {
    let mut line = String::new();
    for cause in err.chain() {
        let text = cause.to_string();
        let text = text.trim();
        if text.is_empty() || line.contains(text) {
            continue;
        }
        if !line.is_empty() {
            line.push_str(": ");
        }
        line.push_str(text);
    }
    line.replace('\n', " ")
}

/// Prints to standard output and passes a write error (a closed pipe) up to `main` instead of
/// panicking as `println!` does.
#[macro_export]
macro_rules! outln {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        writeln!(std::io::stdout().lock(), $($arg)*)?
    }};
}

/// `print!` that returns write errors (see [`outln!`]).
#[macro_export]
macro_rules! out {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        write!(std::io::stdout().lock(), $($arg)*)?
    }};
}

/// Opens a trace, naming the file in any error.
pub fn open_trace(path: &Path) -> anyhow::Result<traces::TraceReader> {
    traces::TraceReader::open(path).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))
}

/// Collects the problems a trace's event stream reports after its good events, prints each as one
/// line, and decides the exit code: a truncated tail is accepted with `--allow-truncated`.
pub struct Problems<'p> {
    path: &'p Path,
    allow_truncated: bool,
    fatal: usize,
    /// Lines already printed: a problem seen twice (when the directory is checked before the
    /// events are read) is said once.
    said: Vec<String>,
    said_cut: bool,
}

impl<'p> Problems<'p> {
    pub fn new(path: &'p Path, allow_truncated: bool) -> Self {
        Problems {
            path,
            allow_truncated,
            fatal: 0,
            said: Vec::new(),
            said_cut: false,
        }
    }

    /// Notes the problems found when the trace was opened (a scanned file's truncated tail),
    /// for verbs that do not read the events in order (which yields them after the last event).
    pub fn note_opened(&mut self, reader: &traces::TraceReader) {
        for e in reader.problems() {
            self.note(e);
        }
    }

    /// Whether a problem that is not accepted was noted.
    pub fn is_fatal(&self) -> bool {
        self.fatal > 0
    }

    pub fn note(&mut self, e: &traces::TraceError) {
        let accepted = e.is_truncation() && self.allow_truncated;
        let level = if accepted { "warning" } else { "error" };
        let hint = if e.is_truncation() && !self.allow_truncated {
            " (pass --allow-truncated to use what was read)"
        } else {
            ""
        };
        let line = format!("allocscope: {level}: {}: {e}{hint}", self.path.display());
        // A cut recording is found when the file is opened and again, with the time of its last
        // event, after the last event: one line.
        let cut = matches!(e, traces::TraceError::Cut { .. });
        if self.said.contains(&line) || (cut && self.said_cut) {
            return;
        }
        self.said_cut |= cut;
        eprintln!("{line}");
        self.said.push(line);
        if !accepted {
            self.fatal += 1;
        }
    }

    pub fn exit_code(&self) -> i32 {
        if self.fatal > 0 {
            2
        } else {
            0
        }
    }
}

/// What a replay reads: a trace file, or a CSV workload imported in memory (by extension).
pub enum ReplayInput {
    Trace(Box<traces::TraceReader>),
    Csv(Vec<traces::Event>),
}

impl ReplayInput {
    /// Opens `path`; errors name the file.
    pub fn open(path: &Path) -> anyhow::Result<ReplayInput> {
        let is_csv = path
            .extension()
            .is_some_and(|e| e.eq_ignore_ascii_case("csv"));
        if !is_csv {
            return Ok(ReplayInput::Trace(Box::new(open_trace(path)?)));
        }
        let file = analysis::replay_json::open_regular(path)?;
        let events = replayer::csv_events(std::io::BufReader::new(file)).map_err(|e| match e {
            // The replayer's "trace: " prefix would hide which file: name it instead.
            replayer::ReplayError::Trace(msg) => anyhow::anyhow!("{}: {msg}", path.display()),
            e => anyhow::anyhow!("{}: {e}", path.display()),
        })?;
        Ok(ReplayInput::Csv(events))
    }

    /// The trace digest (see [`digest`]); none for a CSV workload.
    pub fn digest(&self) -> Option<String> {
        match self {
            ReplayInput::Trace(r) => Some(digest::of(r)),
            ReplayInput::Csv(_) => None,
        }
    }

    /// The parent's pid when the trace is a fork child's (its frees of inherited blocks are not
    /// anomalies).
    pub fn forked_from(&self) -> Option<u32> {
        match self {
            ReplayInput::Csv(_) => None,
            ReplayInput::Trace(r) => r.header().forked_from,
        }
    }

    /// The events in seq order for the replayer. A trace's problems go to `problems` (one line
    /// each, with the path); one that is not accepted ends the events with [`Stopped`], so the
    /// replayer stops and the caller returns `problems.exit_code()`.
    pub fn events<'a, 'p: 'a>(
        &'a self,
        problems: &'a std::sync::Mutex<Problems<'p>>,
    ) -> Box<dyn Iterator<Item = Result<traces::Event, Stopped>> + 'a> {
        match self {
            ReplayInput::Csv(evs) => Box::new(evs.iter().map(|e| Ok(*e))),
            ReplayInput::Trace(r) => {
                let mut inner = r.events();
                let mut stopped = false;
                Box::new(std::iter::from_fn(move || {
                    if stopped {
                        return None;
                    }
                    loop {
                        match inner.next()? {
                            Ok(ev) => return Some(Ok(ev)),
                            Err(e) => {
                                let mut p = problems.lock().unwrap_or_else(|e| e.into_inner());
                                p.note(&e);
                                if p.is_fatal() {
                                    stopped = true;
                                    return Some(Err(Stopped));
                                }
                            }
                        }
                    }
                }))
            }
        }
    }
}

/// The end of a replay's events after a trace problem that was reported already.
#[derive(Debug)]
pub struct Stopped;

impl std::fmt::Display for Stopped {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("the trace could not be read whole (see above)")
    }
}

impl From<Stopped> for replayer::ReplayError {
    fn from(s: Stopped) -> Self {
        replayer::ReplayError::Trace(traces::TraceError::Invalid(s.to_string()))
    }
}
