//! The heap over time as a replay saw it: `allocscope replay --timeline FILE.csv` samples the Go
//! model's heap (heap_alloc, heap_inuse, heap_sys, GC cycles) and the process RSS every N
//! events; `report --replay-timeline FILE.csv` charts it beside the trace's own live bytes.

use std::path::Path;

use serde::Serialize;

use crate::{AnalysisError, Result};

/// One sample of a replay timeline.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct HeapPoint {
    pub allocator: String,
    /// Ops replayed when the sample was taken.
    pub op: u64,
    /// The Go model's figures; empty for baseline allocators, which have no such state.
    pub heap_alloc_bytes: Option<u64>,
    pub heap_inuse_bytes: Option<u64>,
    pub heap_sys_bytes: Option<u64>,
    pub num_gc: Option<u64>,
    /// Resident bytes above the start of the replay loop.
    pub rss_bytes: u64,
}

const COLUMNS: [&str; 7] = [
    "allocator",
    "op",
    "heap_alloc",
    "heap_inuse",
    "heap_sys",
    "num_gc",
    "rss_bytes",
];

/// Reads a timeline CSV written by `replay --timeline`. Errors name the line.
pub fn read(path: &Path) -> Result<Vec<HeapPoint>> {
    let bad = |msg: String| AnalysisError::Input {
        path: path.display().to_string(),
        msg,
    };
    let file = crate::replay_json::open_regular(path)?;
    let mut rdr = csv::Reader::from_reader(std::io::BufReader::new(file));
    let headers = rdr
        .headers()
        .map_err(|e| bad(format!("not a replay timeline CSV: {e}")))?
        .clone();
    let col = |name: &str| {
        headers.iter().position(|h| h == name).ok_or_else(|| {
            bad(format!(
                "no '{name}' column: not a replay timeline (`allocscope replay --timeline` \
                 writes one, with the columns {})",
                COLUMNS.join(",")
            ))
        })
    };
    let idx: Vec<usize> = COLUMNS.iter().map(|c| col(c)).collect::<Result<_>>()?;
    let mut out = Vec::new();
    for rec in rdr.records() {
        let rec = rec.map_err(|e| bad(e.to_string()))?;
        let line = rec.position().map_or(0, |p| p.line());
        let opt = |i: usize| -> Result<Option<u64>> {
            let s = rec.get(idx[i]).unwrap_or("");
            if s.is_empty() {
                return Ok(None);
            }
            s.parse().map(Some).map_err(|_| {
                bad(format!(
                    "line {line}, column '{}': '{s}' is not a whole number",
                    COLUMNS[i]
                ))
            })
        };
        let num = |i: usize| -> Result<u64> {
            opt(i)?.ok_or_else(|| bad(format!("line {line}, column '{}' is empty", COLUMNS[i])))
        };
        out.push(HeapPoint {
            allocator: rec.get(idx[0]).unwrap_or("").to_string(),
            op: num(1)?,
            heap_alloc_bytes: opt(2)?,
            heap_inuse_bytes: opt(3)?,
            heap_sys_bytes: opt(4)?,
            num_gc: opt(5)?,
            rss_bytes: num(6)?,
        });
    }
    if out.is_empty() {
        return Err(bad("the timeline has no samples".into()));
    }
    Ok(out)
}
