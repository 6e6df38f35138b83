//! Reading result JSON files: the flat `metrics` map (any result) and a replay's heap figures
//! (schema in ARCHITECTURE.md). Missing fields are tolerated: a figure that is absent is `None`.

use std::collections::BTreeMap;
use std::path::Path;

use serde::Serialize;
use serde_json::Value;

use crate::{io_err, AnalysisError, Result};

/// Opens an input file for reading, refusing anything but a regular file: a FIFO or a device
/// given by mistake is an error at once, never a wait for a writer that does not come (the
/// file is opened with O_NONBLOCK, which does nothing to a regular file's reads).
pub fn open_regular(path: &Path) -> Result<std::fs::File> {
    traces::open_input(path).map_err(|e| match e {
        traces::TraceError::NotAFile(what) => AnalysisError::Input {
            path: path.display().to_string(),
            msg: format!("is {what}, not a regular file; give the path of a file"),
        },
        traces::TraceError::Read(io) => io_err(path)(io),
        e => AnalysisError::Input {
            path: path.display().to_string(),
            msg: e.to_string(),
        },
    })
}

/// Reads a whole input file as text (see [`open_regular`]).
pub fn read_regular(path: &Path) -> Result<String> {
    use std::io::Read;
    let mut text = String::new();
    open_regular(path)?
        .read_to_string(&mut text)
        .map_err(|e| match e.kind() {
            std::io::ErrorKind::InvalidData => AnalysisError::Input {
                path: path.display().to_string(),
                msg: "is not text (not UTF-8)".into(),
            },
            _ => io_err(path)(e),
        })?;
    Ok(text)
}

/// Reads and parses a result JSON file (`replay --json`, `report --json`). A trace given
/// instead is named as such.
pub fn read_json(path: &Path) -> Result<Value> {
    use std::io::Read;
    let mut bytes = Vec::new();
    open_regular(path)?
        .read_to_end(&mut bytes)
        .map_err(io_err(path))?;
    serde_json::from_slice(&bytes).map_err(|e| {
        // The trace reader is the one place that knows a trace when it sees one.
        let is_trace = !matches!(
            traces::TraceReader::open(path),
            Err(traces::TraceError::NotATrace)
        );
        if is_trace {
            AnalysisError::Input {
                path: path.display().to_string(),
                msg: "is a trace (.atrace), not a result JSON: give the JSON that \
                      `allocscope replay --json` or `report --json` writes"
                    .into(),
            }
        } else {
            AnalysisError::Json {
                path: path.display().to_string(),
                msg: e.to_string(),
            }
        }
    })
}

/// The flat `metrics` map of a result: every numeric entry (others are skipped).
pub fn metrics(path: &Path, v: &Value) -> Result<BTreeMap<String, f64>> {
    let m = v
        .get("metrics")
        .and_then(Value::as_object)
        .ok_or_else(|| AnalysisError::Input {
            path: path.display().to_string(),
            msg: "no \"metrics\" object (expected a report or replay JSON)".into(),
        })?;
    Ok(m.iter()
        .filter_map(|(k, v)| v.as_f64().map(|x| (k.clone(), x)))
        .collect())
}

/// A replay's heap figures, as far as the file has them.
#[derive(Clone, Debug, Default, Serialize)]
pub struct ReplayFigures {
    pub config: Option<String>,
    pub peak_heap_inuse_bytes: Option<u64>,
    pub peak_heap_alloc_bytes: Option<u64>,
    pub peak_heap_sys_bytes: Option<u64>,
    pub peak_live_requested_bytes: Option<u64>,
    pub heap_inuse_bytes: Option<u64>,
    pub heap_idle_bytes: Option<u64>,
    pub heap_released_bytes: Option<u64>,
    pub heap_sys_bytes: Option<u64>,
    pub num_gc: Option<u64>,
    pub free_pages: Option<u64>,
    pub largest_free_run_pages: Option<u64>,
    /// J&W: peak heap_inuse / peak live requested.
    pub jw_heap_inuse: Option<f64>,
    /// 1 - largest free run / free pages (0: the free pages are one run).
    pub page_frag: Option<f64>,
    /// Per class: objects in use and occupancy of their spans.
    pub classes: Vec<(u64, u64, f64)>,
    /// Free object slots in the spans that are in use (at the end of the replay): slots a
    /// compacting allocator would not hold. Objects and bytes.
    pub free_slots_in_use_spans: Option<u64>,
    pub free_slot_bytes: Option<u64>,
    /// Replayed per-call latency, when the replay measured it: ("allocator op", p50..max ns).
    pub replayed_latency: Vec<(String, [u64; 6])>,
}

/// Percentile keys of a latency summary in a replay JSON, in chart order.
const PCT_KEYS: [&str; 6] = [
    "p50_ns",
    "p90_ns",
    "p99_ns",
    "p99_9_ns",
    "p99_99_ns",
    "max_ns",
];

/// Per-op latency of every allocator a replay measured (`measurements.allocators[].latency.op`).
fn replayed_latency(v: &Value) -> Vec<(String, [u64; 6])> {
    let Some(allocators) = at(v, &["measurements", "allocators"]).and_then(Value::as_array) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for a in allocators {
        let name = a.get("allocator").and_then(Value::as_str).unwrap_or("?");
        let Some(ops) = at(a, &["latency", "op"]).and_then(Value::as_object) else {
            continue;
        };
        for (op, p) in ops {
            let vals = PCT_KEYS.map(|k| p.get(k).and_then(Value::as_u64).unwrap_or(0));
            out.push((format!("{name} {op}"), vals));
        }
    }
    out
}

fn at<'v>(v: &'v Value, path: &[&str]) -> Option<&'v Value> {
    path.iter().try_fold(v, |v, k| v.get(k))
}

impl ReplayFigures {
    pub fn from_json(v: &Value, trace_peak_live: u64) -> ReplayFigures {
        let u = |p: &[&str]| at(v, p).and_then(Value::as_u64);
        let mut f = ReplayFigures {
            config: at(v, &["config"]).map(|c| c.to_string()),
            peak_heap_inuse_bytes: u(&["model", "peak", "heap_inuse"])
                .or(u(&["metrics", "peak_heap"])),
            peak_heap_alloc_bytes: u(&["model", "peak", "heap_alloc"]),
            peak_heap_sys_bytes: u(&["model", "peak", "heap_sys"]),
            peak_live_requested_bytes: u(&["model", "peak", "live_requested"]),
            heap_inuse_bytes: u(&["go_memstats", "heap_inuse"]),
            heap_idle_bytes: u(&["go_memstats", "heap_idle"]),
            heap_released_bytes: u(&["go_memstats", "heap_released"]),
            heap_sys_bytes: u(&["go_memstats", "heap_sys"]),
            num_gc: u(&["go_memstats", "num_gc"]),
            free_pages: u(&["model", "pages", "free"]),
            largest_free_run_pages: u(&["model", "pages", "largest_free_run"]),
            ..Default::default()
        };
        let live = f
            .peak_live_requested_bytes
            .filter(|&l| l > 0)
            .unwrap_or(trace_peak_live);
        if let (Some(h), true) = (f.peak_heap_inuse_bytes, live > 0) {
            f.jw_heap_inuse = Some(h as f64 / live as f64);
        }
        // The largest free run counts released pages too (they are free address space), while
        // `pages.free` counts only the retained ones: set the run against both.
        let released = u(&["model", "pages", "released"]).unwrap_or(0);
        if let (Some(free), Some(run)) = (f.free_pages, f.largest_free_run_pages) {
            let all_free = free + released;
            f.page_frag = Some(if all_free == 0 {
                0.0
            } else {
                (1.0 - run as f64 / all_free as f64).clamp(0.0, 1.0)
            });
        }
        if let Some(cs) = at(v, &["model", "classes"]).and_then(Value::as_array) {
            f.classes = cs
                .iter()
                .filter_map(|c| {
                    Some((
                        c.get("size")?.as_u64()?,
                        c.get("objects_in_use").and_then(Value::as_u64).unwrap_or(0),
                        c.get("occupancy").and_then(Value::as_f64).unwrap_or(0.0),
                    ))
                })
                .collect();
            // occupancy = objects in use / slots of the class's in-use spans.
            let (mut slots, mut bytes) = (0u64, 0u64);
            for &(size, in_use, occupancy) in &f.classes {
                if in_use > 0 && occupancy > 0.0 {
                    let free = (in_use as f64 / occupancy).round() as u64 - in_use;
                    slots += free;
                    bytes += free * size;
                }
            }
            f.free_slots_in_use_spans = Some(slots);
            f.free_slot_bytes = Some(bytes);
        }
        f.replayed_latency = replayed_latency(v);
        f
    }
}

/// The Go model's HeapInuse at its peak split over call sites: a replay JSON's
/// `model.peak_by_site` (replayer's peak_sites.rs), for the report's call-site views.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct GoHeapAtPeak {
    pub heap_inuse_bytes: u64,
    /// In-use span bytes no object occupies (free slots, span tails).
    pub free_bytes: u64,
    /// Bytes of objects allocated without a call site.
    pub no_site_bytes: u64,
    /// (call site, bytes) per site.
    #[serde(skip)]
    pub sites: Vec<(u32, u64)>,
}

/// The replay's [`GoHeapAtPeak`], when it has one (a Go-model replay of a trace with call
/// sites). Entries that are not [site, bytes, objects] with a site that fits a u32 are left out.
pub fn go_heap_at_peak(v: &Value) -> Option<GoHeapAtPeak> {
    let p = at(v, &["model", "peak_by_site"])?;
    let u = |k: &str| p.get(k).and_then(Value::as_u64);
    let sites = p
        .get("sites")?
        .as_array()?
        .iter()
        .filter_map(|e| {
            let site = u32::try_from(e.get(0)?.as_u64()?).ok()?;
            Some((site, e.get(1)?.as_u64()?))
        })
        .collect();
    Some(GoHeapAtPeak {
        heap_inuse_bytes: u("heap_inuse_bytes")?,
        free_bytes: u("free_bytes").unwrap_or(0),
        no_site_bytes: u("no_site_bytes").unwrap_or(0),
        sites,
    })
}
