//! CSV tables of a report, one file per table.

use std::path::{Path, PathBuf};

use crate::analyze::Report;
use crate::pct::Percentiles;
use crate::{io_err, AnalysisError, Result};

/// A table: a name (the file stem), a header and rows of cells.
pub struct Table {
    pub name: &'static str,
    pub title: &'static str,
    pub header: Vec<&'static str>,
    pub rows: Vec<Vec<String>>,
}

fn pct_row(name: &str, p: &Percentiles) -> Vec<String> {
    let mut r = vec![name.to_string(), p.count.to_string()];
    r.extend(p.values().iter().map(|v| v.to_string()));
    r
}

const PCT_HEADER: [&str; 8] = [
    "what", "count", "p50", "p90", "p99", "p99.9", "p99.99", "max",
];

/// Every table of a report.
pub fn tables(r: &Report) -> Vec<Table> {
    let mut out = Vec::new();
    request_tables(r, &mut out);
    waste_tables(r, &mut out);
    behaviour_tables(r, &mut out);
    latency_and_time_tables(r, &mut out);
    call_site_tables(r, &mut out);
    metrics_table(r, &mut out);
    out
}

const SITE_HEADER: [&str; 14] = [
    "allocs",
    "bytes",
    "peak_live_bytes",
    "leaked_objects",
    "leaked_bytes",
    "temporary",
    "temporary_bytes",
    "reallocs",
    "realloc_copied_bytes",
    "waste_bytes",
    "p50_ns",
    "p99_ns",
    "go_heap_at_peak_bytes",
    "stacks",
];

fn site_cells(f: &crate::callsites::SiteFigures) -> Vec<String> {
    let opt = |v: Option<u64>| v.map(|v| v.to_string()).unwrap_or_default();
    vec![
        f.allocs.to_string(),
        f.bytes.to_string(),
        f.peak_live_bytes.to_string(),
        f.leaked_objects.to_string(),
        f.leaked_bytes.to_string(),
        f.temporary.to_string(),
        f.temporary_bytes.to_string(),
        f.reallocs.to_string(),
        f.realloc_copied_bytes.to_string(),
        f.waste_bytes.to_string(),
        opt(f.p50_ns),
        opt(f.p99_ns),
        opt(f.go_heap_at_peak_bytes),
    ]
}

/// The request sizes behind a site's waste: `REQUESTxALLOCS->SLOT` joined by spaces.
fn waste_sizes_cell(f: &crate::callsites::SiteFigures) -> String {
    f.waste_sizes
        .iter()
        .map(|w| format!("{}x{}->{}", w.request_bytes, w.allocs, w.slot_bytes))
        .collect::<Vec<_>>()
        .join(" ")
}

/// Per call site: by allocating function and by stack (frames caller first, joined by `;`).
fn call_site_tables(r: &Report, out: &mut Vec<Table>) {
    let Some(c) = r.call_sites.as_ref().filter(|c| c.recorded) else {
        return;
    };
    let mut header = vec!["function", "file", "line", "module"];
    header.extend(SITE_HEADER);
    header.push("waste_sizes");
    out.push(Table {
        name: "call_sites_functions",
        title: "Call sites by allocating function",
        header,
        rows: c
            .functions
            .iter()
            .map(|f| {
                let mut row = vec![
                    f.frame.function.clone(),
                    f.frame.file.clone().unwrap_or_default(),
                    f.frame.line.map(|l| l.to_string()).unwrap_or_default(),
                    f.frame.module.clone().unwrap_or_default(),
                ];
                row.extend(site_cells(&f.figures));
                row.push(f.stacks.to_string());
                row.push(waste_sizes_cell(&f.figures));
                row
            })
            .collect(),
    });
    let mut header = vec!["stack"];
    header.extend(&SITE_HEADER[..SITE_HEADER.len() - 1]);
    out.push(Table {
        name: "call_sites_stacks",
        title: "Call sites by stack (caller first)",
        header,
        rows: c
            .stacks
            .iter()
            .map(|st| {
                let names: Vec<&str> = st.frames.iter().map(|f| f.function.as_str()).collect();
                let mut row = vec![names.join(";")];
                row.extend(site_cells(&st.figures));
                row
            })
            .collect(),
    });
}

/// What was asked for: the op mix and the request sizes.
fn request_tables(r: &Report, out: &mut Vec<Table>) {
    let w = &r.workload;
    out.push(Table {
        name: "ops",
        title: "Op mix",
        header: vec!["op", "calls"],
        rows: w
            .per_op
            .iter()
            .map(|(k, v)| vec![k.clone(), v.to_string()])
            .collect(),
    });
    out.push(Table {
        name: "sizes_log2",
        title: "Request sizes (log2 buckets)",
        header: vec!["from_bytes", "to_bytes", "allocs", "requested_bytes"],
        rows: w
            .size_log2
            .iter()
            .map(|b| {
                vec![
                    b.from_bytes.to_string(),
                    b.to_bytes.to_string(),
                    b.allocs.to_string(),
                    b.requested_bytes.to_string(),
                ]
            })
            .collect(),
    });
}

/// Size-class waste: per class, totals, and the request sizes that waste most.
fn waste_tables(r: &Report, out: &mut Vec<Table>) {
    let w = &r.workload;
    let x = &r.waste;
    out.push(Table {
        name: "size_classes",
        title: "Waste per size class",
        header: vec![
            "class",
            "size_bytes",
            "span_bytes",
            "objects_per_span",
            "allocs",
            "requested_bytes",
            "rounded_bytes",
            "waste_bytes",
            "waste_pct",
            "theoretical_max_waste_pct",
            "peak_live_objects",
            "spans_at_peak",
            "tail_waste_at_peak_bytes",
        ],
        rows: x
            .classes
            .iter()
            .filter(|c| c.allocs > 0)
            .map(|c| {
                vec![
                    c.class.to_string(),
                    c.size_bytes.to_string(),
                    c.span_bytes.to_string(),
                    c.objects_per_span.to_string(),
                    c.allocs.to_string(),
                    c.requested_bytes.to_string(),
                    c.rounded_bytes.to_string(),
                    c.waste_bytes.to_string(),
                    format!("{:.2}", c.waste_pct),
                    format!("{:.2}", c.theoretical_max_waste_pct),
                    c.peak_live_objects.to_string(),
                    c.spans_at_peak.to_string(),
                    c.tail_waste_at_peak_bytes.to_string(),
                ]
            })
            .collect(),
    });
    out.push(Table {
        name: "waste_totals",
        title: "Waste totals",
        header: vec![
            "what",
            "allocs",
            "requested_bytes",
            "rounded_bytes",
            "waste_bytes",
        ],
        rows: vec![
            vec![
                "tiny blocks".into(),
                x.tiny.allocs.to_string(),
                x.tiny.requested_bytes.to_string(),
                x.tiny.block_bytes.to_string(),
                x.tiny.waste_bytes.to_string(),
            ],
            vec![
                "small classes".into(),
                x.classes.iter().map(|c| c.allocs).sum::<u64>().to_string(),
                x.classes
                    .iter()
                    .map(|c| c.requested_bytes)
                    .sum::<u64>()
                    .to_string(),
                x.classes
                    .iter()
                    .map(|c| c.rounded_bytes)
                    .sum::<u64>()
                    .to_string(),
                x.classes
                    .iter()
                    .map(|c| c.waste_bytes)
                    .sum::<u64>()
                    .to_string(),
            ],
            vec![
                "large (pages)".into(),
                x.large.allocs.to_string(),
                x.large.requested_bytes.to_string(),
                x.large.rounded_bytes.to_string(),
                x.large.page_waste_bytes.to_string(),
            ],
            vec![
                "total".into(),
                w.allocs.to_string(),
                x.total_requested_bytes.to_string(),
                x.total_rounded_bytes.to_string(),
                x.total_waste_bytes.to_string(),
            ],
        ],
    });
    out.push(Table {
        name: "top_waste_sizes",
        title: "Request sizes that waste most",
        header: vec!["request_bytes", "rounded_to_bytes", "allocs", "waste_bytes"],
        rows: x
            .top_sizes
            .iter()
            .map(|t| {
                vec![
                    t.request_bytes.to_string(),
                    t.rounded_to_bytes.to_string(),
                    t.allocs.to_string(),
                    t.waste_bytes.to_string(),
                ]
            })
            .collect(),
    });
}

/// How the program uses its blocks: lifetimes, threads, reallocs.
fn behaviour_tables(r: &Report, out: &mut Vec<Table>) {
    let w = &r.workload;
    out.push(Table {
        name: "lifetimes",
        title: "Lifetimes of objects that died",
        header: PCT_HEADER.to_vec(),
        rows: vec![
            pct_row("bytes allocated meanwhile", &w.lifetime_bytes),
            pct_row("ns", &w.lifetime_ns),
        ],
    });
    out.push(Table {
        name: "threads",
        title: "Per thread",
        header: vec![
            "thread",
            "events",
            "allocs",
            "frees",
            "requested_bytes",
            "cross_thread_frees",
        ],
        rows: w
            .per_thread
            .iter()
            .map(|(t, s)| {
                vec![
                    t.to_string(),
                    s.events.to_string(),
                    s.allocs.to_string(),
                    s.frees.to_string(),
                    s.requested_bytes.to_string(),
                    s.cross_thread_frees.to_string(),
                ]
            })
            .collect(),
    });
    let re = &w.realloc;
    let mut rrows = vec![
        vec!["resizes".into(), re.resizes.to_string()],
        vec!["grow".into(), re.grow.to_string()],
        vec!["shrink".into(), re.shrink.to_string()],
        vec!["same".into(), re.same.to_string()],
        vec!["in_place".into(), re.in_place.to_string()],
        vec!["moved".into(), re.moved.to_string()],
        vec!["moved_bytes".into(), re.moved_bytes.to_string()],
        vec!["longest_chain".into(), re.longest_chain.to_string()],
    ];
    for (l, n) in crate::workload::GROWTH_LABELS.iter().zip(re.growth_factor) {
        rrows.push(vec![format!("growth {l}"), n.to_string()]);
    }
    out.push(Table {
        name: "realloc",
        title: "Realloc growth",
        header: vec!["what", "count"],
        rows: rrows,
    });
}

/// Recorded latency and the timeline.
fn latency_and_time_tables(r: &Report, out: &mut Vec<Table>) {
    let mut lat = vec![pct_row("all", &r.latency.all_ns)];
    lat.extend(r.latency.per_op_ns.iter().map(|(k, p)| pct_row(k, p)));
    lat.extend(
        r.latency
            .per_size_group_ns
            .iter()
            .map(|(k, p)| pct_row(k, p)),
    );
    out.push(Table {
        name: "latency",
        title: "Recorded latency, ns",
        header: PCT_HEADER.to_vec(),
        rows: lat,
    });
    out.push(Table {
        name: "timeline",
        title: "Live bytes over time (window maxima)",
        header: vec![
            "event",
            "ts_ns",
            "live_requested_bytes",
            "live_rounded_bytes",
            "span_heap_bytes",
        ],
        rows: r
            .frag
            .timeline
            .iter()
            .map(|p| {
                vec![
                    p.event.to_string(),
                    p.ts_ns.to_string(),
                    p.live_requested_bytes.to_string(),
                    p.live_rounded_bytes.to_string(),
                    p.span_heap_bytes.to_string(),
                ]
            })
            .collect(),
    });
}

/// The flat metrics (what `compare` gates on).
fn metrics_table(r: &Report, out: &mut Vec<Table>) {
    out.push(Table {
        name: "metrics",
        title: "Metrics",
        header: vec!["metric", "value"],
        rows: r
            .metrics
            .iter()
            .map(|(k, v)| vec![k.clone(), format!("{v}")])
            .collect(),
    });
}

/// Writes every table as `DIR/<name>.csv`; returns the files written.
pub fn write_csv(r: &Report, dir: &Path) -> Result<Vec<PathBuf>> {
    std::fs::create_dir_all(dir).map_err(io_err(dir))?;
    let mut files = Vec::new();
    for t in tables(r) {
        let path = dir.join(format!("{}.csv", t.name));
        let mut w = csv::Writer::from_path(&path)
            .map_err(|e| AnalysisError::Csv(format!("{}: {e}", path.display())))?;
        let err = |e: csv::Error| AnalysisError::Csv(format!("{}: {e}", path.display()));
        w.write_record(&t.header).map_err(err)?;
        for row in &t.rows {
            w.write_record(row).map_err(err)?;
        }
        w.flush().map_err(io_err(&path))?;
        files.push(path);
    }
    Ok(files)
}
