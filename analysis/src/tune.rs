//! `tune-classes`: a size-class table fitted to one workload, under Go's constraints.
//!
//! Input is the histogram of request sizes that take Go's small path ([`SizeHistogram`]: class
//! size needed per allocation, malloc header included for pointer objects over 512 bytes; tiny
//! and large requests are left out, they do not depend on the class boundaries). The table is
//! chosen by dynamic programming over candidate class sizes, minimising
//!
//! `sum over sizes s of count(s) * (class(s) - s)`  (round-up waste)
//! `+ sum over classes c of tail(c) / span(c) * bytes rounded into c`  (span tail waste, pro rata)
//!
//! with at most N classes. A small log-uniform prior ([`PRIOR_SHARE`] of the workload's bytes,
//! spread as `1/s^2` per size) keeps sizes the trace never asked for served by a sane class, so the
//! table stays usable when the workload drifts.
//!
//! Go's constraints the proposal keeps (see `/work/shared/go-runtime-facts.md`):
//! - sizes are multiples of 8, of 16 from 32 upward, and of 128 above 1024 (Go's lookup table for
//!   sizes above 1024 has 128-byte granularity, so a class between two multiples of 128 would
//!   never be chosen);
//! - 16 is a class (the tiny allocator's block) and 32768 is the largest (the small/large
//!   boundary stays where Go has it);
//! - each span is whole pages, grown a page at a time until its tail waste is at most 1/8 of the
//!   span, as `mksizeclasses.go` does, and holds at most 1024 objects.
//!
//! Deliberate difference from `mksizeclasses.go`: sizes are not raised afterwards to
//! `(span / objects) &^ 127`; the DP already placed every boundary where it costs least.

use std::collections::HashMap;
use std::fmt::Write;

use replayer::config::Pointers;
use replayer::sizeclass::{
    Placement, SizeClasses, GO_MAX_SMALL_SIZE_BYTES, GO_TINY_BLOCK_BYTES, MALLOC_HEADER_BYTES,
    MAX_OBJS_PER_SPAN,
};
use serde::Serialize;
use traces::Event;

use crate::{AnalysisError, Result};

/// Page size the proposal is made for, bytes (Go's `_PageSize`).
pub const PAGE_BYTES: u64 = 8192;
/// The tiny allocator's block, which must stay a class, bytes.
pub const TINY_BLOCK_BYTES: u64 = GO_TINY_BLOCK_BYTES;

/// Go's table, for where the model puts a request (the proposal keeps Go's limits).
fn go_classes() -> &'static SizeClasses {
    static GO: std::sync::OnceLock<SizeClasses> = std::sync::OnceLock::new();
    GO.get_or_init(SizeClasses::go)
}
/// Share of the workload's small bytes given to the log-uniform prior over all sizes.
pub const PRIOR_SHARE: f64 = 0.02;
/// Largest table `replay` accepts: 127 classes plus class 0.
pub const MAX_CLASSES: usize = 127;
/// Go's number of small classes (`_NumSizeClasses - 1`).
pub const GO_CLASSES: usize = 67;

/// Allocations per class size needed (bytes, 1..=32768), over the small path only.
#[derive(Clone, Debug, Default)]
pub struct SizeHistogram {
    /// Needed bytes (request plus any malloc header) -> allocations.
    pub counts: HashMap<u64, u64>,
    /// Allocations that went to the tiny allocator, large path, or were of size 0 (not tuned).
    pub other_allocs: u64,
}

impl SizeHistogram {
    /// Adds one event as the replayer's model with `pointers` would see it.
    pub fn add(&mut self, ev: &Event, pointers: Pointers) {
        if !ev.allocates() {
            return;
        }
        let size = ev.requested_bytes();
        let noscan = pointers.noscan(ev.kind);
        // The model's one placement rule: only small objects are tuned (with their header).
        match go_classes().place(size, noscan, TINY_BLOCK_BYTES) {
            Placement::Small { header, .. } => {
                let need = size + if header { MALLOC_HEADER_BYTES } else { 0 };
                *self.counts.entry(need).or_default() += 1;
            }
            Placement::Zero | Placement::Tiny | Placement::Large => self.other_allocs += 1,
        }
    }

    /// Adds another histogram (chunks are counted in parallel, in any order).
    pub fn merge(&mut self, other: SizeHistogram) {
        self.other_allocs += other.other_allocs;
        for (s, n) in other.counts {
            *self.counts.entry(s).or_default() += n;
        }
    }

    /// Small-path allocations counted.
    pub fn small_allocs(&self) -> u64 {
        self.counts.values().sum()
    }
}

/// One class of a proposed table (one row of the CSV).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ClassRow {
    pub class: usize,
    pub bytes_per_obj: u64,
    pub bytes_per_span: u64,
    pub objects: u64,
    pub tail_waste_bytes: u64,
    /// Go's "max waste" of the class: ((size - prev - 1) * objects + tail) / span, percent.
    pub max_waste_pct: f64,
}

/// Span for a class size as `mksizeclasses.go` picks it: a page at a time until the tail waste is
/// at most 1/8 of the span. Returns (span bytes, objects).
pub fn span_for(size_bytes: u64) -> (u64, u64) {
    let mut span = PAGE_BYTES;
    while span % size_bytes > span / 8 {
        span += PAGE_BYTES;
    }
    (span, span / size_bytes)
}

/// Candidate class sizes, increasing: 8, 16, 24, then multiples of 16 up to 1024, then multiples
/// of 128 up to 32768.
pub fn candidates() -> Vec<u64> {
    let mut v = vec![8, 16, 24];
    v.extend((32..=1024).step_by(16));
    v.extend((1152..=GO_MAX_SMALL_SIZE_BYTES as u64).step_by(128));
    v
}

/// Proposes a table of at most `max_classes` classes for `hist`.
pub fn propose(hist: &SizeHistogram, max_classes: usize) -> Result<Vec<ClassRow>> {
    if !(2..=MAX_CLASSES).contains(&max_classes) {
        return Err(AnalysisError::Input {
            path: "--classes".into(),
            msg: format!("{max_classes} classes: want 2..={MAX_CLASSES} (16 and 32768 are fixed)"),
        });
    }
    let cand = candidates();
    let top = GO_MAX_SMALL_SIZE_BYTES as usize;
    // Weight per needed size, then prefix sums of weight and weight * size.
    let mut w = vec![0f64; top + 1];
    let mut total_bytes = 0f64;
    for (&s, &n) in &hist.counts {
        if (1..=top as u64).contains(&s) {
            w[s as usize] += n as f64;
            total_bytes += (s * n) as f64;
        }
    }
    let harmonic: f64 = (TINY_BLOCK_BYTES as usize..=top)
        .map(|s| 1.0 / s as f64)
        .sum();
    let alpha = PRIOR_SHARE * total_bytes.max(1e6) / harmonic;
    for (s, ws) in w.iter_mut().enumerate().skip(TINY_BLOCK_BYTES as usize) {
        *ws += alpha / (s * s) as f64;
    }
    let mut pw = vec![0f64; top + 2];
    let mut ps = vec![0f64; top + 2];
    for s in 0..=top {
        pw[s + 1] = pw[s] + w[s];
        ps[s + 1] = ps[s] + w[s] * s as f64;
    }
    // Cost of class `hi` serving sizes (lo, hi].
    let tail_frac: Vec<f64> = cand
        .iter()
        .map(|&c| {
            let (span, _) = span_for(c);
            (span % c) as f64 / span as f64
        })
        .collect();
    let cost = |lo: u64, j: usize| -> f64 {
        let hi = cand[j];
        let (a, b) = (lo as usize + 1, hi as usize + 1);
        let n = pw[b] - pw[a];
        let bytes = ps[b] - ps[a];
        (hi as f64 * n - bytes) + tail_frac[j] * hi as f64 * n
    };
    let m = cand.len();
    let forced = cand
        .iter()
        .position(|&c| c == TINY_BLOCK_BYTES)
        .expect("16 is a candidate");
    // f[k][j]: least cost of serving sizes 1..=cand[j] with k+1 classes, the largest cand[j].
    let inf = f64::INFINITY;
    let mut f = vec![vec![inf; m]; max_classes];
    let mut from = vec![vec![usize::MAX; m]; max_classes];
    for (j, fj) in f[0].iter_mut().enumerate().take(forced + 1) {
        *fj = cost(0, j);
    }
    for k in 1..max_classes {
        for j in 1..m {
            // A previous class below 16 must not skip 16.
            let lo_i = if j > forced { forced } else { 0 };
            let mut best = (inf, usize::MAX);
            for i in lo_i..j {
                let prev = f[k - 1][i];
                if prev < inf {
                    let c = prev + cost(cand[i], j);
                    if c < best.0 {
                        best = (c, i);
                    }
                }
            }
            f[k][j] = best.0;
            from[k][j] = best.1;
        }
    }
    let last = m - 1;
    let k_best = (0..max_classes)
        .min_by(|&a, &b| f[a][last].total_cmp(&f[b][last]).then(a.cmp(&b)))
        .expect("at least two class counts");
    let mut sizes = Vec::with_capacity(k_best + 1);
    let (mut k, mut j) = (k_best, last);
    loop {
        sizes.push(cand[j]);
        if k == 0 {
            break;
        }
        j = from[k][j];
        k -= 1;
    }
    sizes.reverse();
    Ok(rows(&sizes))
}

/// Rows (spans, objects, tails, max waste) for increasing class sizes.
pub fn rows(sizes: &[u64]) -> Vec<ClassRow> {
    let mut prev = 0;
    sizes
        .iter()
        .enumerate()
        .map(|(i, &size)| {
            let (span, objects) = span_for(size);
            debug_assert!(objects as u32 <= MAX_OBJS_PER_SPAN && objects >= 1);
            let tail = span - objects * size;
            let max_waste = 100.0 * ((size - prev - 1) * objects + tail) as f64 / span as f64;
            prev = size;
            ClassRow {
                class: i + 1,
                bytes_per_obj: size,
                bytes_per_span: span,
                objects,
                tail_waste_bytes: tail,
                max_waste_pct: (max_waste * 100.0).round() / 100.0,
            }
        })
        .collect()
}

/// The table as CSV in the shape of `go_sizeclasses.csv` (what `replay --size-classes` reads).
pub fn to_csv(rows: &[ClassRow]) -> String {
    let mut s =
        String::from("class,bytes_per_obj,bytes_per_span,objects,tail_waste,max_waste_pct\n");
    for r in rows {
        let _ = writeln!(
            s,
            "{},{},{},{},{},{:.2}",
            r.class,
            r.bytes_per_obj,
            r.bytes_per_span,
            r.objects,
            r.tail_waste_bytes,
            r.max_waste_pct
        );
    }
    s
}

/// Round-up waste of `hist` under increasing class sizes `sizes`, bytes (no prior): what the
/// proposal is expected to save, before replay measures it.
pub fn roundup_waste_bytes(hist: &SizeHistogram, sizes: &[u64]) -> u64 {
    hist.counts
        .iter()
        .map(|(&s, &n)| {
            let c = sizes.iter().find(|&&c| c >= s).copied().unwrap_or(s);
            (c - s) * n
        })
        .sum()
}

/// What replay measured under one table (side-by-side figures of `tune-classes`).
#[derive(Clone, Debug, Serialize)]
pub struct Measured {
    /// "go" or the proposal's CSV path.
    pub table: String,
    pub waste_pct: f64,
    pub peak_heap_inuse_bytes: u64,
    pub peak_heap_alloc_bytes: u64,
    pub heap_alloc_bytes: u64,
    pub heap_inuse_bytes: u64,
    pub num_gc: u64,
    /// Classes with spans in use at the end of the replay: (class, size, spans, objects in use).
    pub spans: Vec<(u32, u64, u64, u64)>,
    /// Classes that served any allocation: (size, mallocs).
    pub mallocs_by_size: Vec<(u64, u64)>,
}

impl Measured {
    pub fn from_replay(table: &str, r: &replayer::ReplayReport) -> Measured {
        let g = &r.go_memstats;
        Measured {
            table: table.to_string(),
            waste_pct: r.metrics.get("waste_pct").copied().unwrap_or(0.0),
            peak_heap_inuse_bytes: r.model.peak.heap_inuse,
            peak_heap_alloc_bytes: r.model.peak.heap_alloc,
            heap_alloc_bytes: g.heap_alloc,
            heap_inuse_bytes: g.heap_inuse,
            num_gc: g.num_gc,
            spans: r
                .model
                .classes
                .iter()
                .filter(|c| c.spans > 0)
                .map(|c| (c.class, c.size, c.spans, c.objects_in_use))
                .collect(),
            mallocs_by_size: g
                .by_size
                .iter()
                .filter(|b| b.mallocs > 0)
                .map(|b| (b.size, b.mallocs))
                .collect(),
        }
    }
}

/// The side-by-side text `tune-classes` prints.
pub fn side_by_side(go: &Measured, proposal: &Measured, classes: usize) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "measured by replay (Go model, same configuration):");
    let _ = writeln!(
        s,
        "  {:<24} {:>16} {:>16} {:>9}",
        "",
        "go (67 classes)",
        format!("proposal ({classes})"),
        "change"
    );
    let pct = |a: f64, b: f64| {
        if a == 0.0 {
            "-".to_string()
        } else {
            format!("{:+.1}%", 100.0 * (b - a) / a)
        }
    };
    let _ = writeln!(
        s,
        "  {:<24} {:>15.2}% {:>15.2}% {:>9}",
        "size-class waste",
        go.waste_pct,
        proposal.waste_pct,
        format!("{:+.2}pt", proposal.waste_pct - go.waste_pct)
    );
    for (name, a, b) in [
        (
            "peak HeapInuse (bytes)",
            go.peak_heap_inuse_bytes,
            proposal.peak_heap_inuse_bytes,
        ),
        (
            "peak HeapAlloc (bytes)",
            go.peak_heap_alloc_bytes,
            proposal.peak_heap_alloc_bytes,
        ),
        (
            "HeapAlloc at end (bytes)",
            go.heap_alloc_bytes,
            proposal.heap_alloc_bytes,
        ),
        (
            "HeapInuse at end (bytes)",
            go.heap_inuse_bytes,
            proposal.heap_inuse_bytes,
        ),
        ("GC cycles", go.num_gc, proposal.num_gc),
    ] {
        let _ = writeln!(
            s,
            "  {:<24} {:>16} {:>16} {:>9}",
            name,
            a,
            b,
            pct(a as f64, b as f64)
        );
    }
    for m in [go, proposal] {
        let _ = writeln!(s, "spans in use at the end, {}:", m.table);
        if m.spans.is_empty() {
            let _ = writeln!(s, "  (none)");
        }
        for (class, size, spans, objects) in &m.spans {
            let _ = writeln!(
                s,
                "  class {class:>3} {size:>6} B: {spans:>6} spans, {objects:>8} objects"
            );
        }
    }
    s
}
