//! `allocscope`: record every heap allocation call of a process, replay it through a model of the Go
//! runtime's allocator, and report waste, fragmentation and latency. See ARCHITECTURE.md.
//!
//! `main` only parses, dispatches and turns errors into one line and an exit code.

use clap::{Parser, Subcommand};

mod cmd;

#[derive(Parser)]
#[command(name = "allocscope", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run a command under the allocation recorder and write a trace per process.
    Record(cmd::record::Args),
    /// Describe a trace: metadata, op counts, threads, live bytes, anomalies.
    Info(cmd::info::Args),
    /// Convert a CSV workload into a trace.
    Import(cmd::import::Args),
    /// Write a trace as CSV, or its call stacks as folded stacks or a pprof heap profile.
    Export(cmd::export::Args),
    /// Replay a trace through the Go allocator model (and baselines).
    Replay(cmd::replay::Args),
    /// Report on a trace's workload: sizes, lifetimes, waste, fragmentation, latency.
    Report(cmd::report::Args),
    /// Compare two result files and gate on regressions (exit 1 when a limit is crossed).
    Compare(cmd::compare::Args),
    /// Chart metrics across a history of result files.
    Trend(cmd::trend::Args),
    /// Propose a size-class table that cuts waste for a trace.
    TuneClasses(cmd::tune_classes::Args),
    /// Record, replay and report in one go.
    Profile(cmd::profile::Args),
}

fn main() {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Record(a) => cmd::record::run(a),
        Command::Info(a) => cmd::info::run(a),
        Command::Import(a) => cmd::import::run(a),
        Command::Export(a) => cmd::export::run(a),
        Command::Replay(a) => cmd::replay::run(a),
        Command::Report(a) => cmd::report::run(a),
        Command::Compare(a) => cmd::compare::run(a),
        Command::Trend(a) => cmd::trend::run(a),
        Command::TuneClasses(a) => cmd::tune_classes::run(a),
        Command::Profile(a) => cmd::profile::run(a),
    };
    // What is still buffered for standard output goes out before the exit code is decided.
    let result = result.and_then(|code| {
        use std::io::Write as _;
        std::io::stdout().flush()?;
        Ok(code)
    });
    match result {
        Ok(code) => std::process::exit(code),
        // The reader of our output went away (`| head`): it has what it wanted.
        Err(err) if cmd::is_broken_pipe(&err) => std::process::exit(cmd::exit_code_for(&err)),
        Err(err) => {
            // One line: the error and its causes, no backtrace.
            eprintln!("allocscope: error: {}", cmd::one_line(&err));
            std::process::exit(cmd::exit_code_for(&err));
        }
    }
}
