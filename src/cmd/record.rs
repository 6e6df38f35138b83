//! `allocscope record [-o FILE] [--no-follow] [--flush-ms N] [--paused] [--duration SECS] -- CMD ARGS...`
//!
//! Runs CMD under the embedded preload shim (see `collector`), leaves its stdin/stdout/stderr alone,
//! exits with its exit code (or 128 + the signal that killed it), and prints one summary line per
//! traced process to stderr.

use std::ffi::OsString;
use std::path::PathBuf;
use std::time::Duration;

#[derive(clap::Args)]
#[command(
    after_help = "Examples:\n  allocscope record -o ls.atrace -- ls -la\n  \
    allocscope record --paused -- ./server   # then: kill -USR2 <allocscope pid> to start/stop\n\n\
    Child processes are traced to FILE.<pid>. Statically linked and setuid programs cannot be traced."
)]
pub struct Args {
    /// Trace file of the top process (children: FILE.<pid>). Default: allocscope.atrace here.
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
    /// Stop recording this many seconds after it starts (the command keeps running).
    #[arg(long, value_name = "SECS")]
    duration: Option<f64>,
    /// After the run, read every event back and check it (slower for big traces; by default the
    /// chunk directory is checked).
    #[arg(long)]
    verify: bool,
    /// Do not time each real allocator call (latencies are recorded as 0): one clock read per
    /// call instead of two, for the lowest overhead.
    #[arg(long)]
    no_latency: bool,
    /// The command to record and its arguments (after `--`).
    #[arg(
        required = true,
        trailing_var_arg = true,
        allow_hyphen_values = true,
        value_name = "CMD"
    )]
    command: Vec<OsString>,
}

pub fn run(args: Args) -> anyhow::Result<i32> {
    let duration = match args.duration {
        Some(s) if !(s > 0.0 && s.is_finite()) => {
            anyhow::bail!("--duration must be a positive number of seconds")
        }
        Some(s) => Some(Duration::from_secs_f64(s)),
        None => None,
    };
    let opts = collector::RecordOptions {
        output: args.output,
        follow: !args.no_follow,
        flush_ms: args.flush_ms,
        paused: args.paused,
        duration,
        command: args.command,
        shim: None,
        verify: args.verify,
        latency: !args.no_latency,
    };
    let outcome = match collector::record(&opts, |line| eprintln!("allocscope: {line}")) {
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
        eprintln!("allocscope: {}", p.line());
    }
    for w in &outcome.warnings {
        eprintln!("allocscope: warning: {w}");
    }
    Ok(outcome.exit_code)
}
