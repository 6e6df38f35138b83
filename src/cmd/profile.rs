//! `allocscope profile [-o DIR] [-- CMD ARGS...]`: record, replay and report in one go.
//!
//! Records CMD under the preload shim (as `record`), picks the traced process with the most
//! events, replays its trace through the Go model with Go's defaults, and writes the report with
//! the replayed heap figures: a terminal summary, and DIR/index.html with the charts, plus
//! DIR/trace.atrace (and DIR/trace.atrace.<pid> for children), DIR/replay.json, DIR/report.json.
//!
//! With no command it profiles the sample trace shipped in `traces/samples/python-dict.atrace`
//! (embedded in the binary; see `traces/samples/README.md` for how it was recorded).

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use anyhow::{Context, Result};
use replayer::config::Config;
use replayer::sizeclass::SizeClasses;

use super::output::{write_error, Outputs};
use super::{digest, Problems, ReplayInput};

/// The sample trace profiled when no command is given.
const SAMPLE: &[u8] = include_bytes!("../../traces/samples/python-dict.atrace");
const SAMPLE_NAME: &str = "traces/samples/python-dict.atrace";

#[derive(clap::Args)]
#[command(
    after_help = concat!(
        "Examples:\n  allocscope profile                       # the bundled sample (Python building a dict)\n  \
        allocscope profile -o prof -- python3 -c 'print(sum(range(10**6)))'\n\n\
        Open DIR/index.html in a browser for the charts. DIR is created when missing and reused \
        when it exists: the files profile writes there are replaced (traces of an earlier \
        profile into DIR are removed first), other files are left alone.\n\n",
        super::overwrite_help!()
    )
)]
pub struct Args {
    /// Directory for the trace, the replay JSON and the report (index.html).
    #[arg(
        short = 'o',
        long = "out",
        value_name = "DIR",
        default_value = "allocscope-profile"
    )]
    out: PathBuf,
    /// Trace only the top process, not the processes it forks.
    #[arg(long)]
    no_follow: bool,
    /// The command to profile and its arguments (after `--`); none: the bundled sample trace.
    #[arg(trailing_var_arg = true, value_name = "CMD")]
    command: Vec<OsString>,
}

pub fn run(args: Args) -> Result<i32> {
    let outputs = Outputs::new();
    outputs.check_dir("-o", &args.out)?;
    std::fs::create_dir_all(&args.out).map_err(|e| write_error(&args.out, e))?;
    let mut exit_code = 0;
    let trace = if args.command.is_empty() {
        let p = args.out.join("sample.atrace");
        outputs.write("-o", &p, SAMPLE)?;
        eprintln!("allocscope: no command given: profiling the bundled sample {SAMPLE_NAME} (Python 3.11 building and JSON-serialising a 20,000-entry dict)");
        p
    } else {
        match record(&args)? {
            Ok((p, code)) => {
                exit_code = code;
                p
            }
            Err(code) => return Ok(code),
        }
    };

    // What was recorded is profiled even when the recording was cut (a killed command): the
    // problems are said as warnings.
    let input = ReplayInput::open(&trace)?;
    let problems = Mutex::new(Problems::new(&trace, true));
    let name = trace.display().to_string();
    let replayed = replayer::replay_events(
        &name,
        input.forked_from(),
        input.events(&problems),
        &Config::default(),
        false,
    )?;
    let mut replay_json = serde_json::to_value(&replayed)?;
    if let Some(d) = input.digest() {
        digest::stamp(&mut replay_json, &d);
    }
    let replay_path = args.out.join("replay.json");
    outputs.write(
        "-o",
        &replay_path,
        &super::report::json_bytes(&replay_json)?,
    )?;

    let mut problems = problems.into_inner().unwrap_or_else(|e| e.into_inner());
    let mut report =
        analysis::analyze::analyze_file(&trace, SizeClasses::go(), Some(&replay_json), |e| {
            problems.note(&e)
        })?;
    let reader = super::open_trace(&trace)?;
    let flames = super::stacks::add_call_sites(
        &mut report,
        &reader,
        &trace,
        &super::stacks::SymbolArgs::default(),
        100,
        true,
    )?;
    drop(reader);
    crate::out!("{}", analysis::text::summary(&report));
    crate::outln!();
    crate::out!("{}", replayed.summary());
    let end = super::open_trace(&trace)?.recording_end();
    if !end.is_clean() {
        crate::outln!("\nrecording ended: {}", end.description);
    }
    let doc = super::report::with_recording_end(&report, &end)?;
    let mut charts = flames;
    charts.extend(analysis::charts::report_charts(&report, true)?);
    let page = super::report::write_dir(&outputs, "-o", &args.out, &report, &doc, &charts)?;
    crate::outln!("\nwrote {} (open it in a browser)", page.display());
    Ok(exit_code)
}

/// Records the command into DIR/trace.atrace. Returns the trace of the process with the most
/// events and the command's exit code, or `Err(code)` when the command could not run.
fn record(args: &Args) -> Result<std::result::Result<(PathBuf, i32), i32>> {
    let output = args.out.join("trace.atrace");
    remove_old_traces(&args.out)?;
    let opts = collector::RecordOptions {
        output: Some(output),
        follow: !args.no_follow,
        command: args.command.clone(),
        ..collector::RecordOptions::default()
    };
    let outcome = match collector::record(&opts, |line| eprintln!("allocscope: {line}")) {
        Ok(o) => o,
        Err(collector::RecordError::Spawn { command, source }) => {
            eprintln!("allocscope: error: cannot run '{command}': {source}");
            return Ok(Err(if source.kind() == std::io::ErrorKind::NotFound {
                127
            } else {
                126
            }));
        }
        Err(e) => return Err(e.into()),
    };
    for w in &outcome.warnings {
        eprintln!("allocscope: warning: {w}");
    }
    if outcome.exit_code != 0 {
        eprintln!(
            "allocscope: warning: the command exited with code {}; profiling what it did",
            outcome.exit_code
        );
    }
    let n = outcome.processes.len();
    let Some(top) = outcome
        .processes
        .iter()
        .filter(|p| p.problem.is_none() || p.events > 0)
        .max_by_key(|p| (p.events, std::cmp::Reverse(p.pid)))
    else {
        anyhow::bail!("the command left no trace to profile (see the warnings above)");
    };
    eprintln!(
        "allocscope: profiling pid {} ({}): {} events{}",
        top.pid,
        top.command.join(" "),
        top.events,
        if n > 1 {
            format!(", the most of the {n} traced processes")
        } else {
            String::new()
        }
    );
    Ok(Ok((top.path.clone(), outcome.exit_code)))
}

/// Removes DIR/trace.atrace and DIR/trace.atrace.<pid> left by an earlier profile into DIR (the
/// recorder refuses to overwrite a trace). Nothing else in DIR is touched.
fn remove_old_traces(dir: &Path) -> Result<()> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Ok(());
    };
    for e in entries.flatten() {
        let name = e.file_name();
        let name = name.to_string_lossy();
        let ours = name == "trace.atrace"
            || name
                .strip_prefix("trace.atrace.")
                .is_some_and(|pid| !pid.is_empty() && pid.bytes().all(|b| b.is_ascii_digit()));
        if ours {
            std::fs::remove_file(e.path())
                .with_context(|| format!("cannot remove {}", e.path().display()))?;
        }
    }
    Ok(())
}
