//! `allocscope record [-o FILE] [--no-follow] [--flush-ms N] [--paused] [--duration SECS] -- CMD ARGS...`
//!
//! Runs CMD under the embedded preload shim (see `collector`), leaves its stdin/stdout/stderr alone,
//! exits with its exit code (or 128 + the signal that killed it), and prints a summary of what
//! was traced to stderr: one line, plus one line per process that had a problem (every process
//! with `-v`; nothing but problems with `--quiet`).

use std::ffi::OsString;
use std::path::PathBuf;
use std::time::Duration;

use collector::summary::ProcessSummary;

#[derive(clap::Args)]
#[command(
    after_help = "Examples:\n  allocscope record -o ls.atrace -- ls -la\n  \
    allocscope record --paused -- ./server   # then: kill -USR2 <allocscope pid> to start/stop\n\n\
    Trace files: the top process writes FILE. Every other traced process (a forked child, or \
    the top process after an exec) writes FILE.<pid>; when that name is taken (a process that \
    execs again, a reused pid) it writes FILE.<pid>.1, FILE.<pid>.2, and so on. Trace files are \
    never overwritten: when FILE exists, record refuses to start; remove it or choose another \
    name with -o.\n\n\
    Statically linked and setuid programs cannot be traced."
)]
pub struct Args {
    /// Trace file of the top process (others: FILE.<pid>, see below). Default: allocscope.atrace
    /// here (or the first free allocscope-<n>.atrace).
    #[arg(short = 'o', long = "output", value_name = "FILE")]
    output: Option<PathBuf>,
    /// Trace only the top process, not the processes it forks.
    #[arg(long)]
    no_follow: bool,
    /// Write buffered events to the trace at least this often.
    #[arg(long, value_name = "MS", default_value_t = 100, value_parser = clap::value_parser!(u64).range(1..=60_000))]
    flush_ms: u64,
    /// Start with recording paused; each SIGUSR2 sent to allocscope toggles it.
    #[arg(long)]
    paused: bool,
    /// Stop recording this many seconds after it starts (the command keeps running); at most
    /// 30 days.
    #[arg(long, value_name = "SECS", value_parser = parse_duration)]
    duration: Option<Duration>,
    /// After the run, read every event back and check it (slower for big traces; by default the
    /// chunk directory is checked).
    #[arg(long)]
    verify: bool,
    /// Do not time each real allocator call (latencies are recorded as 0): one clock read per
    /// call instead of two, for the lowest overhead.
    #[arg(long)]
    no_latency: bool,
    /// Frames of each allocating call's stack to record (unwound from the DWARF call-frame
    /// information, so code without frame pointers works); 0 records no stacks.
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u32).range(0..=256))]
    stack_depth: u32,
    /// Print one line per traced process, not only for those with a problem.
    #[arg(short, long, conflicts_with = "quiet")]
    verbose: bool,
    /// Print only problems (no summary, no progress lines).
    #[arg(short, long)]
    quiet: bool,
    /// The command to record and its arguments (after `--`).
    #[arg(required = true, trailing_var_arg = true, value_name = "CMD")]
    command: Vec<OsString>,
}

/// The longest `--duration`: a recording window longer than this is a typo.
const MAX_DURATION: Duration = Duration::from_secs(30 * 24 * 3600);

fn parse_duration(s: &str) -> Result<Duration, String> {
    let want = format!(
        "want a number of seconds above 0 and at most {} (30 days)",
        MAX_DURATION.as_secs()
    );
    let secs: f64 = s.trim().parse().map_err(|_| want.clone())?;
    if !(secs > 0.0 && secs <= MAX_DURATION.as_secs_f64()) {
        return Err(want);
    }
    Duration::try_from_secs_f64(secs).map_err(|_| want)
}

pub fn run(args: Args) -> anyhow::Result<i32> {
    let quiet = args.quiet;
    let opts = collector::RecordOptions {
        output: args.output,
        follow: !args.no_follow,
        flush_ms: args.flush_ms,
        paused: args.paused,
        duration: args.duration,
        command: args.command,
        shim: None,
        verify: args.verify,
        latency: !args.no_latency,
        stack_depth: args.stack_depth,
    };
    let progress = |line: &str| {
        if !quiet {
            eprintln!("allocscope: {line}")
        }
    };
    let outcome = match collector::record(&opts, progress) {
        Ok(o) => o,
        Err(collector::RecordError::Spawn { command, source }) => {
            eprintln!("allocscope: error: cannot run '{command}': {source}");
            return Ok(if source.kind() == std::io::ErrorKind::NotFound {
                127
            } else {
                126
            });
        }
        Err(e) => return Err(e.into()),
    };
    for p in &outcome.processes {
        if args.verbose || (!quiet && has_problem(p)) {
            eprintln!("allocscope: {}", p.line());
        }
        if let Some(line) = p.unwind_line().filter(|_| args.verbose) {
            eprintln!("allocscope: {line}");
        }
    }
    for w in &outcome.warnings {
        eprintln!("allocscope: warning: {w}");
    }
    if !quiet {
        if let Some(line) = summary(&outcome, args.verbose) {
            eprintln!("allocscope: {line}");
        }
    }
    Ok(outcome.exit_code)
}

fn has_problem(p: &ProcessSummary) -> bool {
    p.problem.is_some() || p.missing > 0 || p.written.is_some_and(|n| n != p.events)
}

/// One line for the whole recording: processes, events, files, and which process did most.
fn summary(o: &collector::Outcome, verbose: bool) -> Option<String> {
    match o.processes.as_slice() {
        [] => None,
        [one] => Some(one.line()),
        all => {
            let events: u64 = all.iter().map(|p| p.events).sum();
            let bytes: u64 = all.iter().map(|p| p.bytes).sum();
            let top = all.iter().max_by_key(|p| p.events)?;
            let with_problems = all.iter().filter(|p| has_problem(p)).count();
            Some(format!(
                "traced {} processes: {events} events in {} trace files ({bytes} bytes): {} and \
                 {}.<pid>[.N]; the most events: pid {} ({}) with {}{}{}",
                all.len(),
                all.len(),
                o.output.display(),
                o.output.display(),
                top.pid,
                short(&top.command.join(" ")),
                top.events,
                if with_problems > 0 {
                    format!("; {with_problems} with problems (above)")
                } else {
                    String::new()
                },
                if verbose {
                    ""
                } else {
                    "; -v lists every process"
                }
            ))
        }
    }
}

/// A command line cut to 40 characters.
fn short(cmd: &str) -> String {
    if cmd.chars().count() > 40 {
        format!("{}...", cmd.chars().take(37).collect::<String>())
    } else {
        cmd.to_string()
    }
}
