//! The measured replay's outputs: HdrHistogram interval logs, the percentile and timeline
//! CSVs, and the side-by-side table `allocscope replay` prints.

use std::io::Write as _;
use std::path::Path;
use std::time::Duration;

use super::latency::{write_hlog_sets, LatencySet, CSV_HEADER};
use super::perf::Reading;
use super::Measurements;
use crate::error::ReplayError;

fn io_err(path: &Path) -> impl Fn(std::io::Error) -> ReplayError + '_ {
    move |source| ReplayError::Io {
        path: path.display().to_string(),
        source,
    }
}

/// Writes `<dir>/<allocator>.hlog` for every allocator (all its latency groups, one interval
/// per histogram covering the median run's time).
pub fn write_hlogs(m: &Measurements, dir: &Path) -> Result<(), ReplayError> {
    std::fs::create_dir_all(dir).map_err(io_err(dir))?;
    for r in &m.allocators {
        let path = dir.join(format!("{}.hlog", r.allocator));
        let sets: Vec<&LatencySet> = r.latencies.sets().collect();
        let d = Duration::from_nanos(r.time_ns.median as u64);
        write_hlog_sets(&path, &sets, d).map_err(io_err(&path))?;
    }
    Ok(())
}

/// Writes the percentile CSV: `allocator,` + `CSV_HEADER`, a row per non-empty histogram.
pub fn write_latency_csv(m: &Measurements, path: &Path) -> Result<(), ReplayError> {
    let mut out = format!("allocator,{CSV_HEADER}\n").into_bytes();
    for r in &m.allocators {
        for s in r.latencies.sets() {
            let mut rows = Vec::new();
            s.write_csv_rows(&mut rows).map_err(io_err(path))?;
            for line in String::from_utf8_lossy(&rows).lines() {
                let _ = writeln!(out, "{},{line}", r.allocator);
            }
        }
    }
    std::fs::write(path, out).map_err(io_err(path))
}

/// Writes the timeline CSV: `allocator,op,heap_alloc,heap_inuse,heap_sys,num_gc,rss_bytes`
/// (model columns empty for the baselines).
pub fn write_timeline_csv(m: &Measurements, path: &Path) -> Result<(), ReplayError> {
    let mut out = b"allocator,op,heap_alloc,heap_inuse,heap_sys,num_gc,rss_bytes\n".to_vec();
    let f = |v: Option<u64>| v.map(|x| x.to_string()).unwrap_or_default();
    for r in &m.allocators {
        for p in &r.timeline {
            let _ = writeln!(
                out,
                "{},{},{},{},{},{},{}",
                r.allocator,
                p.op,
                f(p.heap_alloc),
                f(p.heap_inuse),
                f(p.heap_sys),
                f(p.num_gc),
                p.rss_bytes
            );
        }
    }
    std::fs::write(path, out).map_err(io_err(path))
}

/// The side-by-side table `allocscope replay` prints.
pub fn table(m: &Measurements) -> String {
    use std::fmt::Write as _;
    let mut s = String::new();
    let _ = writeln!(
        s,
        "measured: touch={:?} runs={}{} threads={} clock={} (overhead {:.1} ns subtracted)",
        m.touch,
        m.repeat,
        if m.warmup_run { " (+1 warm-up)" } else { "" },
        m.threads,
        m.clock.source,
        m.clock_overhead_ns
    );
    let _ = writeln!(
        s,
        "  {:<9} {:>10} {:>19} {:>8} {:>7} {:>7} {:>8} {:>9} {:>10} {:>11} {:>12}",
        "allocator",
        "median ms",
        "min..max ms",
        "ns/op",
        "p50 ns",
        "p99 ns",
        "p99.9 ns",
        "max ns",
        "peak RSS",
        "page faults",
        "cycles"
    );
    for r in &m.allocators {
        let total = r.latencies.by_op.total();
        let q = |x: f64| total.value_at_quantile(x);
        let c = |name: &str| match r.counters.get("total").and_then(|t| t.get(name)) {
            Some(Reading::Count(n)) => n.to_string(),
            Some(Reading::NotSupported(_)) => "n/s".into(),
            None => "-".into(),
        };
        let _ = writeln!(
            s,
            "  {:<9} {:>10.2} {:>8.2}..{:>9.2} {:>8.1} {:>7} {:>7} {:>8} {:>9} {:>9.1}Mi {:>11} {:>12}",
            r.allocator,
            r.time_ns.median / 1e6,
            r.time_ns.min / 1e6,
            r.time_ns.max / 1e6,
            r.ns_per_op,
            r.p50_ns,
            r.p99_ns,
            q(0.999),
            total.max(),
            r.peak_rss_bytes as f64 / (1 << 20) as f64,
            c("page_faults"),
            c("cycles")
        );
    }
    let failed: Vec<String> = m
        .allocators
        .iter()
        .filter(|r| r.failed_allocs > 0)
        .map(|r| format!("{} {}", r.allocator, r.failed_allocs))
        .collect();
    if !failed.is_empty() {
        let _ = writeln!(
            s,
            "  failed allocations (no allocator could satisfy them; NULL, nothing allocated): {}",
            failed.join(", ")
        );
    }
    if let Some(go) = m.allocators.iter().find(|r| r.allocator == "go") {
        if let Some(paths) = go.latency.get("path") {
            let _ = writeln!(s, "  go model paths:  count  p50 ns  p99 ns  max ns");
            for (name, p) in paths {
                let _ = writeln!(
                    s,
                    "    {:<16} {:>9} {:>7} {:>7} {:>7}",
                    name, p.count, p.p50_ns, p.p99_ns, p.max_ns
                );
            }
        }
    }
    s
}
