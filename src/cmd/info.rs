//! `allocscope info T.atrace [--json]`: what a trace holds.

use std::path::PathBuf;

use anyhow::Result;
use serde::Serialize;
use traces::stats::TraceStats;
use traces::{Header, RecordingEnd};

use super::{open_trace, Problems};

#[derive(clap::Args)]
pub struct Args {
    /// Trace file.
    trace: PathBuf,
    /// Print JSON instead of text.
    #[arg(long)]
    json: bool,
    /// Describe what a truncated trace holds instead of failing.
    #[arg(long)]
    allow_truncated: bool,
}

#[derive(Serialize)]
struct Info<'a> {
    file: String,
    file_bytes: u64,
    chunks: usize,
    indexed: bool,
    header: &'a Header,
    /// How the recording ended (the end status, or why there is none).
    recording_end: RecordingEnd,
    bytes_per_event: f64,
    duration_ns: u64,
    threads: usize,
    stats: &'a TraceStats,
    problems: Vec<String>,
}

pub fn run(args: Args) -> Result<i32> {
    let reader = open_trace(&args.trace)?;
    let mut stats = TraceStats::for_trace(reader.header());
    let mut problems = Problems::new(&args.trace, args.allow_truncated);
    let mut problem_text = Vec::new();
    for ev in reader.events() {
        match ev {
            Ok(ev) => stats.add(&ev),
            Err(e) => {
                problem_text.push(e.to_string());
                problems.note(&e);
            }
        }
    }
    let info = Info {
        file: args.trace.display().to_string(),
        file_bytes: reader.file_len(),
        chunks: reader.chunks().len(),
        indexed: reader.directory() == traces::reader::Directory::Index,
        header: reader.header(),
        recording_end: reader.recording_end(),
        bytes_per_event: if stats.events == 0 {
            0.0
        } else {
            reader.file_len() as f64 / stats.events as f64
        },
        duration_ns: stats.duration_ns(),
        threads: stats.threads(),
        stats: &stats,
        problems: problem_text,
    };
    if args.json {
        crate::outln!("{}", serde_json::to_string_pretty(&info)?);
    } else {
        print_text(&info)?;
    }
    Ok(problems.exit_code())
}

fn print_text(i: &Info) -> std::io::Result<()> {
    let h = i.header;
    let s = i.stats;
    crate::outln!("trace      {}", i.file);
    crate::outln!("recorder   {} (format {})", h.recorder, h.format_version);
    crate::outln!("command    {}", h.command.join(" "));
    crate::outln!(
        "process    pid {} (parent {}) on {}",
        h.pid,
        h.ppid,
        or_dash(&h.hostname)
    );
    if let Some(parent) = h.forked_from {
        crate::outln!("fork       a fork child of pid {parent}: it inherited its parent's heap");
    }
    crate::outln!("clock      {:?}, page size {} B", h.clock, h.page_size);
    crate::outln!(
        "file       {} B in {} chunks ({}), {:.2} B/event",
        i.file_bytes,
        i.chunks,
        if i.indexed {
            "indexed"
        } else {
            "no index: scanned"
        },
        i.bytes_per_event
    );
    crate::outln!("ended      {}", i.recording_end.description);
    crate::outln!(
        "events     {} over {} threads, {}",
        s.events,
        i.threads,
        human_ns(i.duration_ns)
    );
    for (op, n) in &s.per_op {
        crate::outln!("  {:<15} {n}", op.name());
    }
    let a = s.anomalies();
    crate::outln!("failed     {} calls", a.failed_calls);
    crate::outln!("requested  {} B in total", s.total_requested_bytes);
    crate::outln!("live peak  {} B requested", s.peak_live_requested_bytes);
    crate::outln!(
        "live end   {} B in {} objects",
        s.live_requested_bytes_at_end,
        s.live_objects_at_end
    );
    crate::outln!(
        "anomalies  {} (unknown frees {}, double frees {}, live address returned again {})",
        a.inconsistencies(),
        a.unknown_frees,
        a.double_frees,
        a.missed_frees
    );
    if s.is_fork_child() {
        crate::outln!(
            "inherited  {} frees of blocks allocated before the fork (not anomalies)",
            a.inherited_frees
        );
    }
    for e in &s.examples {
        crate::outln!("  seq {}: {} {:#x}: {}", e.seq, e.op, e.addr, e.what);
    }
    Ok(())
}

fn or_dash(s: &str) -> &str {
    if s.is_empty() {
        "-"
    } else {
        s
    }
}

fn human_ns(ns: u64) -> String {
    match ns {
        n if n >= 1_000_000_000 => format!("{:.3} s", n as f64 / 1e9),
        n if n >= 1_000_000 => format!("{:.3} ms", n as f64 / 1e6),
        n if n >= 1_000 => format!("{:.3} µs", n as f64 / 1e3),
        n => format!("{n} ns"),
    }
}
