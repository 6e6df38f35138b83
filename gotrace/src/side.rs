//! The side file: what a Go trace says beyond heap objects, kept beside the imported `.atrace`
//! as `T.atrace.go.jsonl` ([`side_path`]) for the per-type report, `export --format spans` and
//! the fidelity checks. The `.atrace` has no place for it (its events are allocator calls).
//!
//! JSON Lines, one record per line, in trace order; each record has `k` (its kind):
//!
//! | k | fields | from |
//! |---|---|---|
//! | `header` | `schema` (1), `format` (23, 25, 26), `go` (the releases that write it), `source` (the Go trace's path), `heap` (min_heap_addr, page_bytes, min_heap_align, fixed_stack_bytes), `frees` (`sweep` or `cycle_start`) | first line |
//! | `span` | `event` (trace events before it), `ts_ns`, `op` (`exists`: in the snapshot, `alloc`, `free`), `page` (pages from `min_heap_addr`), `npages`, `span_class` (Go's `spanclass`: size class << 1 \| noscan; -1 for a span that holds no heap objects: stacks, work buffers) | Span, SpanAlloc, SpanFree |
//! | `gc` | `event`, `ts_ns`, `op` (`begin`, `end`, `active`: a cycle running when tracing began), `n` (the cycle, counted from 1 in this trace), `heap_live` (bytes, the last HeapAlloc before it) | GCBegin, GCEnd, GCActive |
//! | `heap_alloc`, `heap_goal` | `event`, `ts_ns`, `bytes` | HeapAlloc (`gcController.heapLive`), HeapGoal |
//! | `procs` | `event`, `ts_ns`, `n` | ProcsChange (GOMAXPROCS) |
//! | `summary` | `types` (the type table: `id`, `name`, `size`, `ptr_bytes`; the `.atrace` events' call-site field is this id, 0 for objects with no type), `counts`, `anomalies`, `snapshot_by_class`, `trace_digest` (the `.atrace`'s digest, so a side file is never used with another trace) | last line |
//!
//! Readers skip kinds they do not know.

use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::generation::HeapInfo;

/// The schema written in the header.
pub const SCHEMA: u32 = 1;

/// Where the side file of the trace at `trace` lives.
pub fn side_path(trace: &Path) -> PathBuf {
    let mut s = trace.as_os_str().to_owned();
    s.push(".go.jsonl");
    PathBuf::from(s)
}

/// One line of the side file.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "k", rename_all = "snake_case")]
pub enum Record {
    Header(SideHeader),
    Span(SpanRecord),
    Gc(GcRecord),
    HeapAlloc(Metric),
    HeapGoal(Metric),
    Procs(ProcsRecord),
    Summary(Box<Summary>),
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SideHeader {
    pub schema: u32,
    pub format: u32,
    pub go: String,
    pub source: String,
    pub heap: Option<HeapInfo>,
    pub frees: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SpanOp {
    Exists,
    Alloc,
    Free,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SpanRecord {
    pub event: u64,
    pub ts_ns: u64,
    pub op: SpanOp,
    pub page: u64,
    pub npages: u64,
    pub span_class: i32,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum GcOp {
    Active,
    Begin,
    End,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct GcRecord {
    pub event: u64,
    pub ts_ns: u64,
    pub op: GcOp,
    pub n: u64,
    pub heap_live: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Metric {
    pub event: u64,
    pub ts_ns: u64,
    pub bytes: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProcsRecord {
    pub event: u64,
    pub ts_ns: u64,
    pub n: u64,
}

/// A Go type of the trace, numbered for the whole trace (the Go trace's ids restart every
/// generation).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct GoType {
    pub id: u32,
    pub name: String,
    pub size: u64,
    pub ptr_bytes: u64,
}

/// What the conversion counted.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counts {
    /// Go trace events read.
    pub go_events: u64,
    pub generations: u64,
    /// Heap objects live when tracing began (the snapshot), converted to allocations at its time.
    pub snapshot_objects: u64,
    /// Objects allocated while tracing (HeapObjectAlloc).
    pub allocs: u64,
    /// Of those, tiny allocations placed into a block already in use (Go's tiny_allocs).
    pub tiny_fits: u64,
    /// Frees the sweeper reported (HeapObjectFree), and the `.atrace` frees they became (a
    /// tiny block's free frees every object in it).
    pub sweeper_frees: u64,
    pub frees: u64,
    pub span_allocs: u64,
    pub span_frees: u64,
    pub gc_cycles: u64,
    pub goroutine_stack_allocs: u64,
    /// With `--go-frees cycle-start`: frees moved back before the start of their cycle, and frees left
    /// where they were found (allocated after the cycle began, past the reorder budget, or implied
    /// by the slot's reuse before any sweep): together, every free.
    pub frees_moved: u64,
    pub frees_kept: u64,
}

/// Events the conversion had to interpret: none in a sound trace except `reordered`, which a
/// busy program's clock nudges give (see `convert.rs`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Anomalies {
    /// An allocation at a slot still live: the sweeper's free for it came later in time order
    /// (its M's clock ran ahead); the free was placed before the allocation.
    pub reordered: u64,
    /// A free of an object never seen allocated.
    pub unknown_frees: u64,
    /// An object in no known span (its size is guessed from its type).
    pub outside_spans: u64,
    /// An event naming a type missing from its generation's table.
    pub unknown_types: u64,
    /// A pointer type in a noscan span, or the reverse.
    pub kind_mismatches: u64,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    pub types: Vec<GoType>,
    pub counts: Counts,
    pub anomalies: Anomalies,
    /// Snapshot objects per span class (`[span_class, objects]`).
    pub snapshot_by_class: Vec<(u8, u64)>,
    /// The digest of the `.atrace` this file belongs to (set by the CLI once the trace is done).
    #[serde(default)]
    pub trace_digest: String,
}

/// Writes records, one per line.
pub fn write_record(out: &mut impl Write, rec: &Record) -> std::io::Result<()> {
    serde_json::to_writer(&mut *out, rec)?;
    out.write_all(b"\n")
}

/// Why a side file could not be read.
#[derive(Debug, thiserror::Error)]
pub enum SideError {
    #[error("{path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("{path}: line {line}: {msg}")]
    Bad {
        path: String,
        line: u64,
        msg: String,
    },
}

/// Reads the records of a side file one at a time (kinds this version does not know are
/// skipped); `f` gets each.
pub fn read_records(
    path: &Path,
    input: impl BufRead,
    mut f: impl FnMut(Record),
) -> Result<(), SideError> {
    let name = path.display().to_string();
    for (i, line) in input.lines().enumerate() {
        let line = line.map_err(|source| SideError::Io {
            path: name.clone(),
            source,
        })?;
        if line.trim().is_empty() {
            continue;
        }
        match serde_json::from_str::<Record>(&line) {
            Ok(r) => f(r),
            Err(e) => {
                // An unknown kind is skipped; anything else is damage.
                let known = serde_json::from_str::<serde_json::Value>(&line)
                    .ok()
                    .and_then(|v| v.get("k").and_then(|k| k.as_str()).map(str::to_owned));
                match known.as_deref() {
                    Some(
                        "header" | "span" | "gc" | "heap_alloc" | "heap_goal" | "procs" | "summary",
                    )
                    | None => {
                        return Err(SideError::Bad {
                            path: name,
                            line: i as u64 + 1,
                            msg: e.to_string(),
                        })
                    }
                    Some(_) => {}
                }
            }
        }
    }
    Ok(())
}

impl Record {
    /// Sets the record's `event` (trace events written before it).
    pub fn set_event(&mut self, seq: u64) {
        match self {
            Record::Span(r) => r.event = seq,
            Record::Gc(r) => r.event = seq,
            Record::HeapAlloc(r) | Record::HeapGoal(r) => r.event = seq,
            Record::Procs(r) => r.event = seq,
            Record::Header(_) | Record::Summary(_) => {}
        }
    }
}
