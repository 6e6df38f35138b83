//! Replay results: the JSON document of ARCHITECTURE.md ("Replay JSON, schema 1") and the text
//! summary `allocscope replay` prints.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::Serialize;

use crate::config::Config;
use crate::engine::{Anomalies, Compiled, RunStats};
use crate::malloc::{GcCycle, Heap};
use crate::mstats::GoMemStats;
use crate::sizeclass::SizeClass;

#[derive(Clone, Debug, Serialize)]
pub struct TraceInfo {
    pub path: String,
    pub events: u64,
}

#[derive(Clone, Debug, Serialize)]
pub struct ConfigOut {
    pub allocator: &'static str,
    #[serde(flatten)]
    pub config: Config,
}

#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct ClassDetail {
    pub class: u32,
    pub size: u64,
    pub spans: u64,
    pub objects_in_use: u64,
    /// Objects in use over object slots in the class's spans (0 when no span).
    pub occupancy: f64,
    pub requested_bytes: u64,
    pub rounded_bytes: u64,
}

#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct Pages {
    pub in_use: u64,
    pub free: u64,
    pub released: u64,
    pub largest_free_run: u64,
}

#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct Peak {
    pub heap_inuse: u64,
    pub heap_alloc: u64,
    pub heap_sys: u64,
    pub live_requested: u64,
}

#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct Model {
    pub classes: Vec<ClassDetail>,
    pub large: ClassDetail,
    pub pages: Pages,
    pub gc_cycles: Vec<GcCycle>,
    pub peak: Peak,
    pub zero_size_allocs: u64,
    /// Allocations the model could not satisfy (malloc.rs `refuse`): failed calls, also
    /// counted in `anomalies.failed_calls`.
    pub refused_allocs: u64,
    pub spans_swept: u64,
    pub released_total_bytes: u64,
    /// HeapInuse at the peak by call site (a trace with call sites; see peak_sites.rs).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub peak_by_site: Option<crate::peak_sites::PeakSites>,
}

/// The whole result document.
#[derive(Clone, Debug, Serialize)]
pub struct ReplayReport {
    pub schema: u32,
    pub tool: String,
    pub trace: TraceInfo,
    pub config: ConfigOut,
    pub go_memstats: GoMemStats,
    pub model: Model,
    /// The trace's anomalies (engine.rs); `failed_calls` also counts the allocations the replay
    /// could not satisfy (`model.refused_allocs`), as C's malloc would have failed them.
    pub anomalies: Anomalies,
    /// Flat name -> number map for compare / trend. Memory metrics are deterministic; `*_ns` and
    /// `*_per_s` are timings.
    pub metrics: BTreeMap<String, f64>,
    /// Timings, latency, counters and RSS per allocator (measured replays; measured/).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub measurements: Option<crate::measured::Measurements>,
}

impl ClassDetail {
    /// Every size class's spans and objects in use now (from the heap) and bytes requested and
    /// rounded over the run (from the compiled trace); then large objects (class 0).
    fn per_class(heap: &Heap, compiled: &Compiled) -> (Vec<ClassDetail>, ClassDetail) {
        let mh = &heap.mheap;
        let classes = &mh.classes;
        let n = classes.num_classes();
        let mut spans = vec![0u64; n];
        let mut objects = vec![0u64; n];
        let mut slots = vec![0u64; n];
        for id in mh.in_use_spans() {
            let s = mh.span(id);
            let c = (s.spanclass >> 1) as usize;
            spans[c] += 1;
            objects[c] += s.alloc_count as u64;
            slots[c] += s.nelems as u64;
        }
        let detail = |c: usize, size: u64| ClassDetail {
            class: c as u32,
            size,
            spans: spans[c],
            objects_in_use: objects[c],
            occupancy: if slots[c] == 0 {
                0.0
            } else {
                round4(objects[c] as f64 / slots[c] as f64)
            },
            requested_bytes: compiled.per_class[c].requested_bytes,
            rounded_bytes: compiled.per_class[c].rounded_bytes,
        };
        let small = (1..n)
            .map(|c| detail(c, classes.size_bytes(SizeClass(c as u8)) as u64))
            .collect();
        (small, detail(0, 0))
    }
}

impl Pages {
    /// The page heap now: pages in use, free and released, counting those the Ps' page caches
    /// hold as free or released (as Go does).
    fn of(heap: &Heap) -> Pages {
        let mh = &heap.mheap;
        let (free_pages, released_pages) = mh.pages.free_and_released_pages();
        let cache_free: u64 = mh
            .pcache
            .iter()
            .map(|c| c.block.free.count_ones() as u64)
            .sum();
        let cache_scav: u64 = mh
            .pcache
            .iter()
            .map(|c| c.block.scav.count_ones() as u64)
            .sum();
        Pages {
            in_use: mh.stats.pages_in_use,
            free: free_pages + cache_free - released_pages - cache_scav,
            released: released_pages + cache_scav,
            largest_free_run: mh.pages.largest_free_run(),
        }
    }
}

/// The flat metrics map `compare` and `trend` read: memory figures (deterministic) and the
/// run's timings.
fn metrics(
    peak: &Peak,
    go: &GoMemStats,
    compiled: &Compiled,
    run: &RunStats,
) -> BTreeMap<String, f64> {
    let waste_pct = if compiled.rounded_bytes == 0 {
        0.0
    } else {
        round4(
            100.0 * (compiled.rounded_bytes - compiled.requested_bytes) as f64
                / compiled.rounded_bytes as f64,
        )
    };
    let mut metrics = BTreeMap::new();
    let mut m = |k: &str, v: f64| {
        metrics.insert(k.to_string(), v);
    };
    m("peak_heap", peak.heap_inuse as f64);
    m("peak_heap_alloc", peak.heap_alloc as f64);
    m("peak_heap_sys", peak.heap_sys as f64);
    m("peak_live_requested", peak.live_requested as f64);
    m("waste_pct", waste_pct);
    m("num_gc", go.num_gc as f64);
    m("heap_sys", go.heap_sys as f64);
    m("heap_inuse", go.heap_inuse as f64);
    m("heap_alloc", go.heap_alloc as f64);
    m("heap_released", go.heap_released as f64);
    m("mallocs", go.mallocs as f64);
    m("frees", go.frees as f64);
    m("tiny_allocs", go.tiny_allocs as f64);
    m("requested_bytes", compiled.requested_bytes as f64);
    m("rounded_bytes", compiled.rounded_bytes as f64);
    m("replay_ns", run.elapsed_ns as f64);
    if run.ops > 0 {
        m("op_ns", round4(run.elapsed_ns as f64 / run.ops as f64));
    }
    if run.elapsed_ns > 0 {
        m(
            "events_per_s",
            (compiled.events as f64 * 1e9 / run.elapsed_ns as f64).round(),
        );
    }
    metrics
}

impl ReplayReport {
    /// The report of a finished replay: the model's state (`heap`), what compiling the trace
    /// found (`compiled`) and the run's own figures (`run`).
    pub fn build(
        path: &str,
        cfg: &Config,
        heap: &Heap,
        compiled: &Compiled,
        run: &RunStats,
    ) -> ReplayReport {
        let mh = &heap.mheap;
        let (classes, large) = ClassDetail::per_class(heap, compiled);
        let st = &mh.stats;
        let peak = Peak {
            heap_inuse: st.peak_heap_inuse_bytes,
            heap_alloc: run.peak_heap_alloc_bytes.max(st.heap_alloc_bytes),
            heap_sys: st.peak_heap_sys_bytes,
            live_requested: compiled.peak_live_requested_bytes,
        };
        let go = heap.memstats();
        ReplayReport {
            schema: 1,
            tool: format!("allocscope {}", env!("CARGO_PKG_VERSION")),
            trace: TraceInfo {
                path: path.to_string(),
                events: compiled.events,
            },
            config: ConfigOut {
                allocator: "go",
                config: cfg.clone(),
            },
            metrics: metrics(&peak, &go, compiled, run),
            go_memstats: go,
            model: Model {
                classes,
                large,
                pages: Pages::of(heap),
                gc_cycles: heap.gc.cycles.clone(),
                peak,
                zero_size_allocs: heap.zero_size_allocs,
                refused_allocs: heap.refused_allocs,
                spans_swept: mh.sweep.total_spans_swept,
                released_total_bytes: mh.scav.released_total_bytes,
                // The model already ran these ops once: a second run cannot fail.
                peak_by_site: crate::peak_sites::attribute(cfg, compiled, run.peak_heap_inuse_op)
                    .ok()
                    .flatten(),
            },
            anomalies: {
                let mut a = compiled.anomalies.clone();
                a.trace.failed_calls += heap.refused_allocs;
                a
            },
            measurements: None,
        }
    }

    /// The summary a Go engineer recognises (MemStats names).
    pub fn summary(&self) -> String {
        let g = &self.go_memstats;
        let mut s = String::new();
        let c = &self.config.config;
        let limit = c
            .gomemlimit
            .map(|l| l.to_string())
            .unwrap_or_else(|| "off".into());
        let _ = writeln!(
            s,
            "replay {} ({} events) through the Go model: GOGC={} GOMEMLIMIT={} free={:?} pointers={:?} procs={}",
            self.trace.path, self.trace.events, c.gogc, limit, c.free_policy, c.pointers, c.procs
        );
        let _ = writeln!(
            s,
            "  HeapAlloc    {:>14}   HeapInuse   {:>14}",
            g.heap_alloc, g.heap_inuse
        );
        let _ = writeln!(
            s,
            "  HeapIdle     {:>14}   HeapReleased{:>14}",
            g.heap_idle, g.heap_released
        );
        let _ = writeln!(
            s,
            "  HeapSys      {:>14}   HeapObjects {:>14}",
            g.heap_sys, g.heap_objects
        );
        let _ = writeln!(
            s,
            "  Mallocs      {:>14}   Frees       {:>14}",
            g.mallocs, g.frees
        );
        let _ = writeln!(
            s,
            "  TinyAllocs   {:>14}   NumGC       {:>14}",
            g.tiny_allocs, g.num_gc
        );
        let _ = writeln!(s, "  NextGC       {:>14}", g.next_gc);
        let p = &self.model.peak;
        let _ = writeln!(
            s,
            "  peak: HeapInuse {}  HeapAlloc {}  HeapSys {}  live requested {}",
            p.heap_inuse, p.heap_alloc, p.heap_sys, p.live_requested
        );
        self.write_gc_marks(&mut s);
        let _ = writeln!(
            s,
            "  size-class waste {:.2}% of allocated bytes",
            self.metrics["waste_pct"]
        );
        self.write_busiest_classes(&mut s);
        self.write_anomalies(&mut s);
        if let Some(m) = &self.measurements {
            s.push_str(&crate::measured::table(m));
        }
        s
    }

    /// How long the GC marks were (a timed mark) or that they were measured in bytes.
    fn write_gc_marks(&self, s: &mut String) {
        let cycles = &self.model.gc_cycles;
        let mut marks: Vec<u64> = cycles.iter().map(|c| c.mark_ns).collect();
        marks.sort_unstable();
        if let Some(&median) = marks.get(marks.len() / 2).filter(|&&m| m > 0) {
            let _ = writeln!(
                s,
                "  GC marks timed on the trace's clock: median {:.2} ms, longest {:.2} ms; \
                 the next cycle starts {:.1} MiB before the goal",
                median as f64 / 1e6,
                marks[marks.len() - 1] as f64 / 1e6,
                cycles
                    .last()
                    .map_or(0.0, |c| c.goal.saturating_sub(c.trigger) as f64 / MIB)
            );
        } else if !cycles.is_empty() {
            let _ = writeln!(
                s,
                "  GC marks measured in bytes allocated (the trace has no timestamps)"
            );
        }
    }

    /// The eight size classes with the most spans, with their occupancy.
    fn write_busiest_classes(&self, s: &mut String) {
        let busiest: Vec<&ClassDetail> = {
            let mut v: Vec<&ClassDetail> =
                self.model.classes.iter().filter(|c| c.spans > 0).collect();
            v.sort_by(|a, b| b.spans.cmp(&a.spans).then(a.class.cmp(&b.class)));
            v.truncate(8);
            v
        };
        if !busiest.is_empty() {
            let _ = writeln!(s, "  class   size  spans  in use  occupancy");
            for c in busiest {
                let _ = writeln!(
                    s,
                    "  {:>5} {:>6} {:>6} {:>7}  {:>8.1}%",
                    c.class,
                    c.size,
                    c.spans,
                    c.objects_in_use,
                    c.occupancy * 100.0
                );
            }
        }
    }

    /// The trace's anomalies and the calls the model failed.
    fn write_anomalies(&self, s: &mut String) {
        let a = &self.anomalies.trace;
        if *a != traces::live::Anomalies::default() {
            let _ = writeln!(s, "  anomalies: {a} (skipped)");
        }
        if self.model.refused_allocs > 0 {
            let _ = writeln!(
                s,
                "  {} of the failed calls are allocations the model's heap could not hold (its \
                 address space is {} GiB): nothing was allocated, as malloc returns NULL",
                self.model.refused_allocs,
                crate::arena::MAX_HEAP_BYTES >> 30
            );
        }
    }
}

const MIB: f64 = (1u64 << 20) as f64;

fn round4(x: f64) -> f64 {
    (x * 10000.0).round() / 10000.0
}
