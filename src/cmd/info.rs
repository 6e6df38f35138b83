//! `allocscope info T.atrace [--json]`: what a trace holds.

use std::path::PathBuf;

use anyhow::Result;
use serde::Serialize;
use traces::stacks::StackStats;
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
    /// Call stacks: none for a trace recorded without them.
    #[serde(skip_serializing_if = "Option::is_none")]
    stacks: Option<StackInfo>,
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
    let stacks = stack_stats(&reader, &args.trace, &stats, &mut problem_text);
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
        stacks,
        problems: problem_text,
    };
    if args.json {
        crate::outln!("{}", serde_json::to_string_pretty(&info)?);
    } else {
        print_text(&info)?;
    }
    Ok(problems.exit_code())
}

/// What `info` says about a trace's stacks: the trie's figures, and how far unwinding got.
#[derive(Serialize)]
struct StackInfo {
    #[serde(flatten)]
    stats: StackStats,
    /// Trie nodes whose return address lies in no module the trace recorded (code the recorder
    /// could not tie to a file, such as JIT code, or a bad frame): the unwinder could not go on
    /// past them, and they cannot be symbolized.
    frames_outside_modules: u64,
    /// Distinct stacks whose outermost frame is such a node: unwinding stopped in unknown code.
    stacks_ending_outside_modules: u64,
}

/// The stack figures of a trace with stacks (damaged stack or module chunks are a problem line,
/// not a failure: the events are still read).
fn stack_stats(
    reader: &traces::TraceReader,
    path: &std::path::Path,
    stats: &TraceStats,
    problems: &mut Vec<String>,
) -> Option<StackInfo> {
    if reader.aux_chunks().is_empty() && stats.allocations_with_stack == 0 {
        return None;
    }
    // A trace imported from Go: the call-site field is a Go type id, not a stack.
    if super::import_go::is_go_import(reader.header()) {
        return None;
    }
    let stacks = super::stacks::load(reader, path);
    problems.extend(stacks.problems.iter().cloned());
    let map = symbolize::ModuleMap::new(&stacks.modules);
    // Node ids run from 1 without gaps; the outermost frame of a stack is a child of the root.
    let outside: Vec<bool> = (1..=stacks.table.len())
        .map(|id| {
            let (_, addr) = stacks.table.node(id).unwrap_or_default();
            // Any module that ever held the address (`find` falls back to one not loaded then).
            map.find(addr, 0).is_none()
        })
        .collect();
    let stacks_ending_outside_modules = stats
        .stack_ids
        .iter()
        .filter(|&&leaf| {
            let mut root = None;
            let mut id = leaf;
            while let Some((parent, _)) = stacks.table.node(id) {
                root = Some(id);
                id = parent;
            }
            root.is_some_and(|r| outside[r as usize - 1])
        })
        .count() as u64;
    Some(StackInfo {
        stats: StackStats::of(
            &stacks.table,
            stats.stack_ids.iter().copied(),
            stacks.modules.len(),
            stats.allocations_with_stack,
            stats.allocations_without_stack,
        ),
        frames_outside_modules: outside.iter().filter(|&&o| o).count() as u64,
        stacks_ending_outside_modules,
    })
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
    match &i.stacks {
        None if super::import_go::is_go_import(i.header) => crate::outln!(
            "stacks     none: imported from a Go trace, whose allocations carry their Go type \
             instead (`report` shows them)"
        ),
        None => crate::outln!("stacks     none (recorded without stacks: record --stack-depth)"),
        Some(StackInfo {
            stats: st,
            frames_outside_modules,
            stacks_ending_outside_modules,
        }) => {
            crate::outln!(
                "stacks     {} distinct, {} trie nodes, depth mean {:.1} max {}, {} modules",
                st.distinct_stacks,
                st.nodes,
                st.mean_depth,
                st.max_depth,
                st.modules
            );
            crate::outln!(
                "           {} allocating calls with a stack, {} without (not unwound){}",
                st.allocations_with_stack,
                st.allocations_without_stack,
                if st.unknown_stacks > 0 {
                    format!(", {} naming unknown nodes", st.unknown_stacks)
                } else {
                    String::new()
                }
            );
            crate::outln!(
                "           {frames_outside_modules} frames outside any module, {} stacks \
                 stopped there",
                stacks_ending_outside_modules
            );
        }
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
