//! The streaming pass: events in seq order in, a [`Report`] out. See the crate comment.
//!
//! Which blocks are live and which events are anomalies is the trace's one rule
//! ([`traces::live`], the same `info` and `replay` apply): the only per-object state is the live
//! set's block plus one [`Obj`] each. A free of an address that is not live is counted there and
//! otherwise ignored; an allocation returning an address still live retires the old object first
//! (a missed free).

use std::collections::BTreeMap;

use replayer::sizeclass::SizeClasses;
use serde::Serialize;
use traces::live::{Anomalies, Block, LiveSet, Passed};
use traces::{Event, Header};

use crate::callsites::CallSitesReport;
use crate::frag::{Frag, FragReport};
use crate::gotypes::{GoTypeName, GoTypes, GoTypesReport};
use crate::latency::{Latency, LatencyReport};
use crate::replay_json::ReplayFigures;
use crate::stacks::{Alloc, SiteAccumulator, StackProfile};
use crate::waste::{Placement, Waste, WasteReport};
use crate::window::{Position, Window, WindowInfo};
use crate::workload::{Workload, WorkloadReport};

/// Rows in the "top wasting request sizes" table.
pub const TOP_SIZES: usize = 20;

/// What the analysis keeps with each live block (the block itself holds its requested bytes).
#[derive(Clone, Copy, Debug)]
struct Obj {
    placement: Placement,
    /// When the object was first allocated (a realloc continues it).
    born_ts_ns: u64,
    /// `Workload::clock_bytes` right after this object's first allocation.
    born_allocated_bytes: u64,
    born_thread: u32,
    reallocs: u32,
    /// Whom the object is counted for: its stack's number in the call-site figures
    /// ([`SiteAccumulator::born`]), or for a trace imported from Go its Go type id (the
    /// call-site field; [`NO_TYPE`] for none). One field, not two: the live set holds one
    /// `Obj` per live object.
    site: u32,
}

/// [`Obj::site`] of an object of a Go trace without a type.
const NO_TYPE: u32 = u32::MAX;

impl Obj {
    /// The object's Go type (a trace imported from Go).
    fn go_type(&self) -> Option<u32> {
        (self.site != NO_TYPE).then_some(self.site)
    }
}

impl Default for Obj {
    fn default() -> Obj {
        Obj {
            placement: Placement::Zero,
            born_ts_ns: 0,
            born_allocated_bytes: 0,
            born_thread: 0,
            reallocs: 0,
            site: 0,
        }
    }
}

pub struct Analyzer {
    live: LiveSet<Obj>,
    workload: Workload,
    waste: Waste,
    frag: Frag,
    latency: Latency,
    /// Per Go type (traces imported from Go, [`Analyzer::with_go_types`]).
    go_types: Option<GoTypes>,
    /// Per call stack (not for a trace imported from Go, whose call-site field holds types).
    sites: Option<SiteAccumulator>,
    /// The live set's anomaly counts when the report window started.
    anomalies_before: Anomalies,
}

impl Analyzer {
    /// An analyzer for a trace of a process that started with an empty heap.
    pub fn new(classes: SizeClasses) -> Analyzer {
        Analyzer {
            live: LiveSet::new(None),
            workload: Workload::default(),
            frag: Frag::new(&classes),
            go_types: None,
            waste: Waste::new(classes),
            latency: Latency::default(),
            sites: Some(SiteAccumulator::default()),
            anomalies_before: Anomalies::default(),
        }
    }

    /// Adds the per-Go-type view: `names` is the import's type table (index = the id the
    /// events' call-site field holds).
    pub fn with_go_types(mut self, names: Vec<GoTypeName>) -> Analyzer {
        let sizes = self.frag.class_sizes();
        self.go_types = Some(GoTypes::new(names, sizes));
        self.sites = None;
        self
    }

    /// An analyzer for the trace with this header (a fork child's counts inherited frees).
    pub fn for_trace(classes: SizeClasses, header: &Header) -> Analyzer {
        Analyzer {
            live: LiveSet::new(header.forked_from),
            ..Analyzer::new(classes)
        }
    }

    /// Adds the next event (seq order).
    pub fn add(&mut self, ev: &Event) {
        self.workload.event(ev.op, ev.thread, ev.ts_ns);
        self.latency.add(ev.op, ev.requested_bytes(), ev.latency_ns);
        let step = self.live.step(ev);
        // The object a moving or in-place realloc continues.
        let mut carried = None;
        if let Passed::Released(old) = step.passed {
            self.frag.died(old.requested_bytes, old.data.placement);
            if let Some(g) = &mut self.go_types {
                g.died(old.data.go_type(), old.requested_bytes);
            }
            if step.born.is_some() {
                carried = Some(old);
                if let Some(s) = &mut self.sites {
                    s.died(old.data.site, old.requested_bytes, false);
                }
            } else {
                let temporary = death(&mut self.workload, ev, &old);
                if let Some(s) = &mut self.sites {
                    s.died(old.data.site, old.requested_bytes, temporary);
                }
            }
        }
        if let Some(old) = step.displaced {
            // A live address returned again: the trace missed a free.
            self.frag.died(old.requested_bytes, old.data.placement);
            if let Some(g) = &mut self.go_types {
                g.died(old.data.go_type(), old.requested_bytes);
            }
            let temporary = death(&mut self.workload, ev, &old);
            if let Some(s) = &mut self.sites {
                s.died(old.data.site, old.requested_bytes, temporary);
            }
        }
        if let Some(born) = step.born {
            let bytes = born.requested_bytes;
            self.workload.alloc(ev.thread, bytes);
            let placement = self.waste.place(bytes, ev.kind, ev.thread);
            self.frag.born(bytes, placement);
            if let Some(g) = &mut self.go_types {
                g.born(ev.callsite, bytes, placement);
            }
            let site = match &mut self.sites {
                Some(s) => s.born(&Alloc {
                    seq: ev.seq,
                    site: ev.callsite,
                    bytes,
                    resized_from: carried.map(|o| (o.requested_bytes, ev.addr != ev.old_addr)),
                    waste_bytes: self.waste.rounding_waste(placement, bytes),
                    latency_ns: ev.latency_ns,
                }),
                None => ev.callsite.unwrap_or(NO_TYPE),
            };
            born.data = match carried {
                Some(o) => {
                    let chain = o.data.reallocs + 1;
                    self.workload.resize(
                        o.requested_bytes,
                        bytes,
                        ev.addr == ev.old_addr,
                        chain as u64,
                    );
                    Obj {
                        placement,
                        reallocs: chain,
                        site,
                        ..o.data
                    }
                }
                None => Obj {
                    placement,
                    born_ts_ns: ev.ts_ns,
                    born_allocated_bytes: self.workload.clock_bytes,
                    born_thread: ev.thread,
                    reallocs: 0,
                    site,
                },
            };
        }
        if let Some(s) = &mut self.sites {
            s.settle(self.live.live_requested_bytes(), ev.seq);
        }
        self.frag.tick(ev.ts_ns);
    }

    /// A report window starts ([`crate::window`]): every count starts from zero, the live heap
    /// and each peak from what is live now. Returns the objects and requested bytes live.
    pub fn start_window(&mut self) -> (u64, u64) {
        let live = self.live.live_requested_bytes();
        self.workload.start_window();
        self.waste.start_window();
        self.frag.start_window();
        self.latency.start_window();
        if let Some(g) = &mut self.go_types {
            g.start_window();
        }
        if let Some(s) = &mut self.sites {
            s.start_window(live);
        }
        self.anomalies_before = *self.live.anomalies();
        (self.live.len() as u64, live)
    }

    /// Objects live now.
    pub fn live_objects(&self) -> usize {
        self.live.len()
    }

    /// The report. `replay` is a replay JSON of the same trace, when the user gave one.
    pub fn finish(self, trace: TraceInfo, replay: Option<&serde_json::Value>) -> Report {
        let frag = self.frag.report();
        let workload = self.workload.report(
            self.live.len() as u64,
            self.live.anomalies().since(&self.anomalies_before),
        );
        let waste = self.waste.report(&self.frag.peak_live_objects, TOP_SIZES);
        let latency = self.latency.report();
        let go_types = self.go_types.as_ref().map(GoTypes::report);
        let live = &self.live;
        let mut stacks = self
            .sites
            .map(|s| s.finish(live.iter().map(|(_, b)| (b.data.site, b.requested_bytes))));
        if let (Some(s), Some(heap)) = (
            &mut stacks,
            replay.and_then(crate::replay_json::go_heap_at_peak),
        ) {
            s.add_go_heap(heap);
        }
        let replay = replay.map(|v| ReplayFigures::from_json(v, frag.peak_live_requested_bytes));
        let mut r = Report {
            schema: 1,
            kind: "report".into(),
            tool: format!("allocscope {}", env!("CARGO_PKG_VERSION")),
            trace,
            workload,
            waste,
            frag,
            latency,
            replay,
            go_types,
            call_sites: None,
            stacks,
            metrics: BTreeMap::new(),
        };
        r.metrics = r.compute_metrics();
        r
    }
}

/// An object died, freed by `ev` (or retired by it: a missed free). Returns whether it was
/// temporary.
fn death(workload: &mut Workload, ev: &Event, o: &Block<Obj>) -> bool {
    workload.death(
        ev.thread,
        o.data.born_thread,
        o.requested_bytes,
        ev.ts_ns.saturating_sub(o.data.born_ts_ns),
        workload.clock_bytes - o.data.born_allocated_bytes,
        o.data.reallocs as u64,
    )
}

/// Which trace a report is about.
#[derive(Clone, Debug, Default, Serialize)]
pub struct TraceInfo {
    pub path: String,
    pub events: u64,
    /// Timestamps were synthesised (no real clock): time-based figures mean little.
    pub synthetic_clock: bool,
    /// The report's window (`report --from/--to`); `None`: the whole trace.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub window: Option<WindowInfo>,
}

/// A whole report (what `--json` writes).
#[derive(Clone, Debug, Serialize)]
pub struct Report {
    pub schema: u32,
    /// "report" (a replay JSON has no kind, or "replay").
    pub kind: String,
    pub tool: String,
    pub trace: TraceInfo,
    pub workload: WorkloadReport,
    pub waste: WasteReport,
    pub frag: FragReport,
    pub latency: LatencyReport,
    pub replay: Option<ReplayFigures>,
    /// Per Go type, for a trace imported from a Go execution trace (rows by waste).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub go_types: Option<GoTypesReport>,
    /// Per call site (a trace recorded with stacks; `None` for one imported from Go), once the
    /// caller has named the stacks ([`Report::set_call_sites`]).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub call_sites: Option<CallSitesReport>,
    /// The per-stack figures of the pass, for [`crate::callsites::build`].
    #[serde(skip)]
    pub stacks: Option<StackProfile>,
    /// Flat name -> number map that `compare` and `trend` read.
    pub metrics: BTreeMap<String, f64>,
}

/// Call sites whose figures go into the flat metrics (`site.FUNCTION.FIGURE`).
pub const SITE_METRICS: usize = 10;

impl Report {
    /// Sets the call-site views (named by the caller) and their metrics: for the top
    /// [`SITE_METRICS`] allocating functions by bytes, `site.<function>.<figure>` (the name with
    /// every character but letters and digits as `_`).
    pub fn set_call_sites(&mut self, c: CallSitesReport) {
        for f in c.functions.iter().take(SITE_METRICS) {
            let name = crate::callsites::metric_name(&f.frame.function);
            let g = &f.figures;
            for (figure, v) in [
                ("allocs", g.allocs),
                ("bytes", g.bytes),
                ("peak_live_bytes", g.peak_live_bytes),
                ("leaked_bytes", g.leaked_bytes),
                ("waste_bytes", g.waste_bytes),
            ] {
                self.metrics
                    .entry(format!("site.{name}.{figure}"))
                    .or_insert(v as f64);
            }
            if let Some(v) = g.go_heap_at_peak_bytes {
                self.metrics
                    .entry(format!("site.{name}.go_heap_at_peak_bytes"))
                    .or_insert(v as f64);
            }
        }
        self.call_sites = Some(c);
    }

    fn compute_metrics(&self) -> BTreeMap<String, f64> {
        let w = &self.workload;
        let f = &self.frag;
        let x = &self.waste;
        let l = &self.latency.all_ns;
        let mut m: BTreeMap<String, f64> = [
            ("events", w.events as f64),
            ("allocs", w.allocs as f64),
            ("frees", w.frees as f64),
            ("allocated_bytes", w.allocated_bytes as f64),
            ("peak_live_requested", f.peak_live_requested_bytes as f64),
            ("peak_live_rounded", f.peak_live_rounded_bytes as f64),
            ("peak_span_heap", f.peak_span_heap_bytes as f64),
            ("jw_frag", f.jw_rounded),
            ("jw_frag_spans", f.jw_spans),
            ("waste_pct", x.waste_pct),
            ("waste_bytes", x.total_waste_bytes as f64),
            (
                "span_tail_waste_at_peak",
                x.span_tail_waste_at_peak_bytes as f64,
            ),
            ("temporary_pct", w.temporary_pct_of_frees),
            ("lifetime_bytes_p50", w.lifetime_bytes.p50 as f64),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
        if !self.trace.synthetic_clock {
            m.insert("duration_ns".into(), w.duration_ns as f64);
            m.insert("alloc_rate_per_s".into(), w.alloc_rate_per_s);
            m.insert("alloc_bytes_per_s".into(), w.alloc_bytes_per_s);
            m.insert("lifetime_ns_p50".into(), w.lifetime_ns.p50 as f64);
        }
        if self.latency.recorded {
            for (k, v) in [
                ("recorded_p50_ns", l.p50),
                ("recorded_p99_ns", l.p99),
                ("recorded_p99_9_ns", l.p99_9),
                ("recorded_max_ns", l.max),
            ] {
                m.insert(k.into(), v as f64);
            }
        }
        if let Some(r) = &self.replay {
            if let Some(h) = r.peak_heap_inuse_bytes {
                m.insert("peak_heap".into(), h as f64);
            }
            if let Some(j) = r.jw_heap_inuse {
                m.insert("jw_frag_replay".into(), j);
            }
            if let Some(p) = r.page_frag {
                m.insert("page_frag".into(), p);
            }
            if let Some(b) = r.free_slot_bytes {
                m.insert("free_slot_bytes".into(), b as f64);
            }
        }
        m
    }
}

/// Analyses a whole trace file in one ordered pass, with a progress bar on a terminal (the reader
/// decodes chunks in parallel a batch ahead of it). Problems in the event stream (a truncated
/// tail, a corrupt chunk) go to `on_problem` and the analysis covers every good event; the caller
/// decides whether a problem fails the command.
pub fn analyze_file(
    path: &std::path::Path,
    classes: SizeClasses,
    replay: Option<&serde_json::Value>,
    on_problem: impl FnMut(traces::TraceError),
) -> crate::Result<Report> {
    analyze_file_with(path, classes, replay, None, &Window::WHOLE, on_problem)
}

/// [`analyze_file`], with the per-Go-type view when `go_types` (the import's type table) is
/// given, over the events of `window` ([`crate::window`]; reading stops at its end).
pub fn analyze_file_with(
    path: &std::path::Path,
    classes: SizeClasses,
    replay: Option<&serde_json::Value>,
    go_types: Option<Vec<GoTypeName>>,
    window: &Window,
    mut on_problem: impl FnMut(traces::TraceError),
) -> crate::Result<Report> {
    let input_err = |msg: String| crate::AnalysisError::Input {
        path: path.display().to_string(),
        msg,
    };
    let reader = traces::TraceReader::open(path).map_err(|e| input_err(e.to_string()))?;
    let synthetic_clock = reader.header().clock == traces::ClockSource::Synthetic;
    if synthetic_clock
        && [window.from, window.to]
            .iter()
            .flatten()
            .any(|b| b.is_time())
    {
        return Err(input_err(format!(
            "has no real clock (its timestamps are made up): give the window {} in events \
             (--from 1000ev)",
            window.describe()
        )));
    }
    let mut an = Analyzer::for_trace(classes, reader.header());
    if let Some(names) = go_types {
        an = an.with_go_types(names);
    }
    let bar = crate::progress_bar(reader.event_count());
    // Events read, the first one's time, and the window's record once it has started.
    let mut read = 0u64;
    let mut first_ts = None;
    let mut last_at = Position {
        event: 0,
        since_start_ns: 0,
    };
    let mut info: Option<WindowInfo> = None;
    for ev in reader.events() {
        match ev {
            Ok(ev) => {
                let first = *first_ts.get_or_insert(ev.ts_ns);
                let at = Position {
                    event: read,
                    since_start_ns: ev.ts_ns.saturating_sub(first),
                };
                if window.ended(at) {
                    break;
                }
                if info.is_none() && window.started(at) {
                    let (objects, bytes) = if read > 0 { an.start_window() } else { (0, 0) };
                    info = Some(WindowInfo {
                        from: window.from.map(|b| b.to_string()),
                        to: window.to.map(|b| b.to_string()),
                        first_event: read,
                        first_ns: at.since_start_ns,
                        live_objects_at_start: objects,
                        live_bytes_at_start: bytes,
                        ..WindowInfo::default()
                    });
                }
                an.add(&ev);
                last_at = at;
                read += 1;
                if read & 0xffff == 0 {
                    bar.set_position(read);
                }
            }
            Err(e) => on_problem(e),
        }
    }
    bar.finish_and_clear();
    let mut info = match info {
        Some(i) => i,
        None if window.is_whole() => WindowInfo::default(),
        None => {
            return Err(input_err(format!(
                "no event falls in the window {} (the trace has {read} events over {} ms)",
                window.describe(),
                last_at.since_start_ns / 1_000_000
            )))
        }
    };
    info.end_event = read;
    info.last_ns = last_at.since_start_ns;
    let trace = TraceInfo {
        path: path.display().to_string(),
        events: read - info.first_event,
        synthetic_clock,
        window: (!window.is_whole()).then_some(info),
    };
    Ok(an.finish(trace, replay))
}
