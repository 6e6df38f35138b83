//! The terminal summary of a report: a screenful, most important figures first.

use std::fmt::Write;

use crate::analyze::Report;
use crate::pct::Percentiles;

/// Bytes in a human unit (binary prefixes).
pub fn bytes(b: u64) -> String {
    const UNITS: [&str; 6] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
    let mut v = b as f64;
    let mut u = 0;
    while v >= 1024.0 && u < UNITS.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{b} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

/// Nanoseconds in a human unit.
pub fn ns(n: u64) -> String {
    let v = n as f64;
    if n < 1_000 {
        format!("{n} ns")
    } else if n < 1_000_000 {
        format!("{:.1} µs", v / 1e3)
    } else if n < 1_000_000_000 {
        format!("{:.1} ms", v / 1e6)
    } else {
        format!("{:.2} s", v / 1e9)
    }
}

/// A count with thousands separators.
pub fn count(n: u64) -> String {
    let digits = n.to_string().into_bytes();
    let groups: Vec<String> = digits
        .rchunks(3)
        .rev()
        .map(|g| String::from_utf8_lossy(g).into_owned())
        .collect();
    groups.join(",")
}

fn pct_line(name: &str, p: &Percentiles, f: fn(u64) -> String) -> String {
    format!(
        "  {name:<22} p50 {:>9}  p90 {:>9}  p99 {:>9}  p99.9 {:>9}  p99.99 {:>9}  max {:>9}  (n={})\n",
        f(p.p50),
        f(p.p90),
        f(p.p99),
        f(p.p99_9),
        f(p.p99_99),
        f(p.max),
        count(p.count)
    )
}

/// The summary text.
pub fn summary(r: &Report) -> String {
    let mut s = String::new();
    overview(&mut s, r);
    memory(&mut s, r);
    waste(&mut s, r);
    lifetimes(&mut s, r);
    latency(&mut s, r);
    if let Some(g) = &r.go_types {
        go_types(&mut s, g);
    }
    if let Some(c) = &r.call_sites {
        call_sites(&mut s, c, r.trace.window.is_some());
    }
    s
}

/// The trace: events, time, allocations, ops, threads, anomalies.
fn overview(s: &mut String, r: &Report) {
    let w = &r.workload;
    let _ = writeln!(s, "allocscope report: {}", r.trace.path);
    if let Some(line) = window_line(r) {
        let _ = writeln!(s, "  {line}");
    }
    let clock = if r.trace.synthetic_clock {
        " (synthetic clock)"
    } else {
        ""
    };
    let end = if r.trace.window.is_some() {
        "the window's end"
    } else {
        "end"
    };
    let _ = writeln!(
        s,
        "  {} events over {}{clock}; {} allocations ({}), {} frees, {} live at {end}",
        count(w.events),
        ns(w.duration_ns),
        count(w.allocs),
        bytes(w.allocated_bytes),
        count(w.frees),
        count(w.live_objects_at_end)
    );
    if !r.trace.synthetic_clock {
        let _ = writeln!(
            s,
            "  allocation rate {:.0}/s, {}/s",
            w.alloc_rate_per_s,
            bytes(w.alloc_bytes_per_s as u64)
        );
    }
    let ops: Vec<String> = w
        .per_op
        .iter()
        .map(|(k, v)| format!("{k} {}", count(*v)))
        .collect();
    let _ = writeln!(s, "  ops: {}", ops.join(", "));
    let _ = writeln!(
        s,
        "  threads: {}; anomalies: {}",
        w.per_thread.len(),
        w.anomalies
    );
}

/// What a report window covered, in one line (`None` for the whole trace).
pub fn window_line(r: &Report) -> Option<String> {
    let w = r.trace.window.as_ref()?;
    let bounds: Vec<String> = [("from", &w.from), ("to", &w.to)]
        .iter()
        .filter_map(|(flag, b)| Some(format!("--{flag} {}", b.as_deref()?)))
        .collect();
    let time = if r.trace.synthetic_clock {
        String::new()
    } else {
        format!(" ({} to {} after the first)", ns(w.first_ns), ns(w.last_ns))
    };
    Some(format!(
        "window {}: events {} to {}{time}; {} in {} objects live at its start (in the live \
         figures and peaks, not counted as allocations)",
        bounds.join(" "),
        count(w.first_event),
        count(w.end_event.saturating_sub(1)),
        bytes(w.live_bytes_at_start),
        count(w.live_objects_at_start),
    ))
}

/// Who holds the Go model's heap at its peak (given a Go-model replay).
fn go_heap_owners(
    s: &mut String,
    c: &crate::callsites::CallSitesReport,
    heap: &crate::replay_json::GoHeapAtPeak,
) {
    let _ = writeln!(
        s,
        "\nWho holds the Go model's heap at its peak (the replay's HeapInuse {}: objects' slots \
         by allocating function, garbage not yet swept included; {} in free slots and span tails)",
        bytes(heap.heap_inuse_bytes),
        bytes(heap.free_bytes)
    );
    let mut by_heap: Vec<(&str, u64)> = c
        .functions
        .iter()
        .filter_map(|f| Some((f.frame.function.as_str(), f.figures.go_heap_at_peak_bytes?)))
        .filter(|&(_, b)| b > 0)
        .collect();
    by_heap.sort_by_key(|&(_, b)| std::cmp::Reverse(b));
    for (function, b) in by_heap.iter().take(CALL_SITE_ROWS) {
        let _ = writeln!(
            s,
            "  {:<40} {:>10}  {:>5.1}%",
            fit(function, 40),
            bytes(*b),
            100.0 * *b as f64 / heap.heap_inuse_bytes.max(1) as f64
        );
    }
}

/// Peak memory: requested, rounded, span heap, and the replay's heap when there is one.
fn memory(s: &mut String, r: &Report) {
    let f = &r.frag;
    let x = &r.waste;
    let _ = writeln!(s, "\nMemory (class table: {})", x.table);
    let _ = writeln!(
        s,
        "  peak live requested   {:>12}  (at event {})",
        bytes(f.peak_live_requested_bytes),
        f.peak_live_requested_event
    );
    let _ = writeln!(
        s,
        "  peak live rounded     {:>12}  J&W {:.3}",
        bytes(f.peak_live_rounded_bytes),
        f.jw_rounded
    );
    let _ = writeln!(
        s,
        "  peak span heap        {:>12}  J&W {:.3}  (perfectly compacted spans)",
        bytes(f.peak_span_heap_bytes),
        f.jw_spans
    );
    if let Some(rp) = &r.replay {
        if let (Some(h), Some(j)) = (rp.peak_heap_inuse_bytes, rp.jw_heap_inuse) {
            let _ = writeln!(s, "  replay peak heap_inuse{:>12}  J&W {j:.3}", bytes(h));
        }
        if let Some(p) = rp.page_frag {
            let _ = writeln!(
                s,
                "  replay page-heap fragmentation {:.1}% (1 - largest free run / free pages)",
                p * 100.0
            );
        }
        if let (Some(n), Some(b)) = (rp.free_slots_in_use_spans, rp.free_slot_bytes) {
            let _ = writeln!(
                s,
                "  replay free slots in in-use spans {} objects, {} (at the end)",
                count(n),
                bytes(b)
            );
        }
    }
}

/// Size-class waste: totals, tiny and large, the worst classes and request size.
fn waste(s: &mut String, r: &Report) {
    let x = &r.waste;
    let _ = writeln!(s, "\nSize-class waste (all allocations)");
    let _ = writeln!(
        s,
        "  requested {}  rounded {}  waste {} = {:.2}%",
        bytes(x.total_requested_bytes),
        bytes(x.total_rounded_bytes),
        bytes(x.total_waste_bytes),
        x.waste_pct
    );
    let _ = writeln!(
        s,
        "  tiny: {} objects in {} blocks ({:.2}/block), waste {};  large: {} objects, page rounding {}",
        count(x.tiny.allocs),
        count(x.tiny.blocks),
        x.tiny.objects_per_block,
        bytes(x.tiny.waste_bytes),
        count(x.large.allocs),
        bytes(x.large.page_waste_bytes)
    );
    let _ = writeln!(
        s,
        "  span tail waste at peak {}",
        bytes(x.span_tail_waste_at_peak_bytes)
    );
    let mut worst: Vec<_> = x.classes.iter().filter(|c| c.allocs > 0).collect();
    worst.sort_by_key(|c| std::cmp::Reverse(c.waste_bytes));
    for c in worst.iter().take(5) {
        let _ = writeln!(
            s,
            "  class {:>2} ({:>5} B): {:>10} allocs, waste {:>10} = {:5.1}% (table max {:4.1}%)",
            c.class,
            c.size_bytes,
            count(c.allocs),
            bytes(c.waste_bytes),
            c.waste_pct,
            c.theoretical_max_waste_pct
        );
    }
    if let Some(t) = x.top_sizes.first() {
        let _ = writeln!(
            s,
            "  worst request size: {} B -> {} B, {} allocs, waste {}",
            t.request_bytes,
            t.rounded_to_bytes,
            count(t.allocs),
            bytes(t.waste_bytes)
        );
    }
}

/// Lifetimes, temporaries and reallocs.
fn lifetimes(s: &mut String, r: &Report) {
    let w = &r.workload;
    let _ = writeln!(s, "\nLifetimes (objects that died)");
    s.push_str(&pct_line(
        "bytes allocated meanwhile",
        &w.lifetime_bytes,
        bytes,
    ));
    if !r.trace.synthetic_clock {
        s.push_str(&pct_line("time", &w.lifetime_ns, ns));
    }
    let _ = writeln!(
        s,
        "  temporary (freed before {} more were allocated): {} objects = {:.1}% of frees, {}",
        bytes(w.temporary_threshold_bytes),
        count(w.temporary_objects),
        w.temporary_pct_of_frees,
        bytes(w.temporary_bytes)
    );
    let re = &w.realloc;
    if re.resizes > 0 {
        let _ = writeln!(
            s,
            "  reallocs: {} (grow {}, shrink {}, same {}); in place {}, moved {} copying {}; longest chain {}",
            count(re.resizes),
            count(re.grow),
            count(re.shrink),
            count(re.same),
            count(re.in_place),
            count(re.moved),
            bytes(re.moved_bytes),
            re.longest_chain
        );
    }
}

/// Recorded latency, and the replayed one when there is one.
fn latency(s: &mut String, r: &Report) {
    let _ = writeln!(s, "\nRecorded latency (real allocator)");
    if r.latency.recorded {
        s.push_str(&pct_line("all calls", &r.latency.all_ns, ns));
        for (op, p) in &r.latency.per_op_ns {
            s.push_str(&pct_line(op, p, ns));
        }
    } else {
        let _ = writeln!(s, "  not recorded in this trace (no latency_ns)");
    }
    if let Some(rp) = r
        .replay
        .as_ref()
        .filter(|rp| !rp.replayed_latency.is_empty())
    {
        let _ = writeln!(s, "\nReplayed latency (allocscope replay, this machine)");
        for (name, v) in &rp.replayed_latency {
            let _ = writeln!(
                s,
                "  {name:<22} p50 {:>9}  p90 {:>9}  p99 {:>9}  p99.9 {:>9}  p99.99 {:>9}  max {:>9}",
                ns(v[0]),
                ns(v[1]),
                ns(v[2]),
                ns(v[3]),
                ns(v[4]),
                ns(v[5])
            );
        }
    }
}

/// Rows of the per-Go-type view printed in the text summary.
pub const GO_TYPE_ROWS: usize = 15;

/// The per-Go-type view: the types that waste most in their size classes.
fn go_types(s: &mut String, g: &crate::gotypes::GoTypesReport) {
    let _ = writeln!(
        s,
        "\nGo types (from the Go trace's type table; by waste in their size class, {} types)",
        g.types.len()
    );
    let _ = writeln!(
        s,
        "  {:<44} {:>10} {:>11} {:>11} {:>7} {:>11}",
        "type", "allocs", "bytes", "waste", "waste%", "peak live"
    );
    for t in g.types.iter().take(GO_TYPE_ROWS) {
        let mut name = t.name.clone();
        if name.chars().count() > 44 {
            name = name.chars().take(43).collect::<String>() + "…";
        }
        let _ = writeln!(
            s,
            "  {name:<44} {:>10} {:>11} {:>11} {:>6.1}% {:>11}",
            count(t.allocs),
            bytes(t.requested_bytes),
            bytes(t.waste_bytes),
            t.waste_pct,
            bytes(t.peak_live_bytes)
        );
    }
}

/// Rows per call-site table in the text report.
pub const CALL_SITE_ROWS: usize = 10;

/// A name cut to `width` characters (the end kept: a function's own name is at its end).
fn fit(name: &str, width: usize) -> String {
    let n = name.chars().count();
    if n <= width {
        return name.to_string();
    }
    "…".to_string() + &name.chars().skip(n - width + 1).collect::<String>()
}

fn site_row(s: &mut String, name: &str, f: &crate::callsites::SiteFigures) {
    let temporary = if f.allocs > 0 {
        format!("{:.0}%", 100.0 * f.temporary as f64 / f.allocs as f64)
    } else {
        "-".into()
    };
    let p99 = f.p99_ns.map_or("-".to_string(), ns);
    let _ = writeln!(
        s,
        "  {:<40} {:>9} {:>10} {:>10} {:>10} {:>5} {:>10} {:>8}",
        fit(name, 40),
        count(f.allocs),
        bytes(f.bytes),
        bytes(f.peak_live_bytes),
        bytes(f.leaked_bytes),
        temporary,
        bytes(f.waste_bytes),
        p99
    );
}

/// Who allocates, holds the peak, leaks, wastes and waits: by allocating function and by stack.
fn call_sites(s: &mut String, c: &crate::callsites::CallSitesReport, windowed: bool) {
    let end = if windowed { "window's end" } else { "end" };
    if !c.recorded {
        let _ = writeln!(s, "\nCall sites: {}", c.note.as_deref().unwrap_or_default());
        return;
    }
    let header = |s: &mut String, what: &str| {
        let _ = writeln!(
            s,
            "  {:<40} {:>9} {:>10} {:>10} {:>10} {:>5} {:>10} {:>8}",
            what, "allocs", "bytes", "at peak", "leaked", "temp", "waste", "p99"
        );
    };
    let _ = writeln!(
        s,
        "\nCall sites, bottom-up (by allocating function; {} functions, {} distinct stacks; at \
         peak: live at the peak of {}; leaked: live at the {end})",
        c.functions.len(),
        c.distinct_stacks,
        bytes(c.peak_live_bytes)
    );
    header(s, "function");
    for f in c.functions.iter().take(CALL_SITE_ROWS) {
        site_row(s, &f.frame.function, &f.figures);
    }
    let mut by_waste: Vec<&crate::callsites::FunctionSite> = c
        .functions
        .iter()
        .filter(|f| f.figures.waste_bytes > 0)
        .collect();
    by_waste.sort_by_key(|f| std::cmp::Reverse(f.figures.waste_bytes));
    if !by_waste.is_empty() {
        let _ = writeln!(
            s,
            "\nWho wastes (size-class rounding by function, and the request sizes that cause it)"
        );
        for f in by_waste.iter().take(CALL_SITE_ROWS) {
            let sizes: Vec<String> = f
                .figures
                .waste_sizes
                .iter()
                .take(3)
                .map(|w| {
                    format!(
                        "{} x{} in {}",
                        bytes(w.request_bytes),
                        count(w.allocs),
                        bytes(w.slot_bytes)
                    )
                })
                .collect();
            let _ = writeln!(
                s,
                "  {:<40} {:>10}  {}",
                fit(&f.frame.function, 40),
                bytes(f.figures.waste_bytes),
                sizes.join(", ")
            );
        }
    }
    if let Some(heap) = &c.go_heap_at_peak {
        go_heap_owners(s, c, heap);
    }
    let mut by_peak: Vec<&crate::callsites::StackSite> = c.stacks.iter().collect();
    by_peak.sort_by_key(|s| std::cmp::Reverse(s.figures.peak_live_bytes));
    let _ = writeln!(
        s,
        "\nCall stacks, top-down (who holds the peak; caller first, the allocating function last)"
    );
    for st in by_peak
        .iter()
        .take(CALL_SITE_ROWS)
        .filter(|st| st.figures.peak_live_bytes > 0)
    {
        let f = &st.figures;
        let _ = writeln!(
            s,
            "  {} at peak, {} allocated in {} calls, {} leaked:",
            bytes(f.peak_live_bytes),
            bytes(f.bytes),
            count(f.allocs),
            bytes(f.leaked_bytes)
        );
        // What runs before `main` (the C runtime's start-up frames) says nothing here.
        let from = st
            .frames
            .iter()
            .position(|f| f.function == "main")
            .unwrap_or(0);
        if from > 0 {
            let _ = writeln!(s, "      ({from} start-up frames above main)");
        }
        for frame in &st.frames[from..] {
            let at = match (&frame.file, frame.line) {
                (Some(file), Some(line)) => {
                    format!("  ({}:{line})", symbolize::file_name(file))
                }
                _ => String::new(),
            };
            let _ = writeln!(s, "      {}{at}", frame.function);
        }
    }
}
