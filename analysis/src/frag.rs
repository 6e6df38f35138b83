//! Fragmentation from the trace side: live requested bytes against what the class table makes of
//! them, over time, and the Johnstone & Wilson measures.
//!
//! Three live figures are kept exactly at every event:
//! - `live_requested`: bytes the program asked for and has not freed;
//! - `live_rounded`: the same objects rounded by the table (small: class size; large: whole pages;
//!   tiny: each 16-byte block counts while any object in it is live);
//! - `span_heap`: the pages a perfectly compacting span allocator would hold: per class,
//!   `ceil(live objects / objects per span)` spans, plus large objects' pages. Go never moves
//!   objects, so the replayed heap is at least this.
//!
//! The J&W headline is max heap / max live requested: `jw_rounded` uses `live_rounded`,
//! `jw_spans` uses `span_heap`. A replay's figures (heap_inuse at peak) give the real one.
//!
//! The timeline keeps at most [`MAX_POINTS`] windows; each records the maxima inside it. When it
//! fills, neighbouring windows merge (max of each) and the window length doubles.

use rustc_hash::FxHashMap as HashMap;

use replayer::sizeclass::{SizeClass, SizeClasses, SpanClass};
use serde::Serialize;

use crate::waste::{Placement, TINY_BLOCK_BYTES};

/// Most points a timeline holds.
pub const MAX_POINTS: usize = 1024;

/// One timeline window: the maxima of the live figures over events `[first_seq, ..]`.
#[derive(Clone, Copy, Debug, Default, Serialize, PartialEq)]
pub struct Point {
    /// Index of the first event of the window (0-based event number, not seq).
    pub event: u64,
    /// Timestamp of the first event of the window, ns.
    pub ts_ns: u64,
    pub live_requested_bytes: u64,
    pub live_rounded_bytes: u64,
    pub span_heap_bytes: u64,
}

impl Point {
    fn merge(&mut self, o: &Point) {
        self.live_requested_bytes = self.live_requested_bytes.max(o.live_requested_bytes);
        self.live_rounded_bytes = self.live_rounded_bytes.max(o.live_rounded_bytes);
        self.span_heap_bytes = self.span_heap_bytes.max(o.span_heap_bytes);
    }
}

pub struct Frag {
    class_span_bytes: Vec<u64>,
    class_nelems: Vec<u64>,
    class_size: Vec<u64>,
    live_objects: Vec<u64>,
    pub peak_live_objects: Vec<u64>,
    tiny_refs: HashMap<u64, u32>,
    tiny_class: usize,
    pub live_requested: u64,
    pub live_rounded: u64,
    pub span_heap: u64,
    pub peak_requested: u64,
    pub peak_rounded: u64,
    pub peak_span_heap: u64,
    /// Event number at the peak of live requested bytes.
    pub peak_requested_event: u64,
    points: Vec<Point>,
    window: u64,
    in_window: u64,
    events: u64,
}

impl Frag {
    pub fn new(t: &SizeClasses) -> Frag {
        let n = t.num_classes();
        let page = t.page_bytes() as u64;
        let cls = |c: usize| SizeClass(c as u8);
        Frag {
            class_span_bytes: (0..n).map(|c| t.npages(cls(c)) as u64 * page).collect(),
            class_nelems: (0..n)
                .map(|c| {
                    if c == 0 {
                        1
                    } else {
                        t.nelems(SpanClass::new(cls(c), true), false).max(1) as u64
                    }
                })
                .collect(),
            class_size: (0..n).map(|c| t.size_bytes(cls(c)) as u64).collect(),
            live_objects: vec![0; n],
            peak_live_objects: vec![0; n],
            tiny_refs: HashMap::default(),
            tiny_class: t.class_for(TINY_BLOCK_BYTES).0 as usize,
            live_requested: 0,
            live_rounded: 0,
            span_heap: 0,
            peak_requested: 0,
            peak_rounded: 0,
            peak_span_heap: 0,
            peak_requested_event: 0,
            points: Vec::new(),
            window: 1,
            in_window: 0,
            events: 0,
        }
    }

    fn class_delta(&mut self, c: usize, up: bool) {
        let spans_before = self.live_objects[c].div_ceil(self.class_nelems[c]);
        if up {
            self.live_objects[c] += 1;
            self.peak_live_objects[c] = self.peak_live_objects[c].max(self.live_objects[c]);
        } else {
            self.live_objects[c] -= 1;
        }
        let spans_after = self.live_objects[c].div_ceil(self.class_nelems[c]);
        self.span_heap = self.span_heap + spans_after * self.class_span_bytes[c]
            - spans_before * self.class_span_bytes[c];
    }

    /// Bytes per object of each class of the table (index = class).
    pub fn class_sizes(&self) -> Vec<u64> {
        self.class_size.clone()
    }

    /// An object of `requested` bytes became live at `placement`.
    pub fn born(&mut self, requested: u64, placement: Placement) {
        self.live_requested += requested;
        match placement {
            Placement::Zero => {}
            Placement::Tiny { block } => {
                let r = self.tiny_refs.entry(block).or_insert(0);
                *r += 1;
                if *r == 1 {
                    self.live_rounded += TINY_BLOCK_BYTES;
                    let c = self.tiny_class;
                    self.class_delta(c, true);
                }
            }
            Placement::Small { class } => {
                self.live_rounded += self.class_size[class as usize];
                self.class_delta(class as usize, true);
            }
            Placement::Large { rounded_bytes } => {
                self.live_rounded += rounded_bytes;
                self.span_heap += rounded_bytes;
            }
        }
    }

    /// An object died.
    pub fn died(&mut self, requested: u64, placement: Placement) {
        self.live_requested -= requested;
        match placement {
            Placement::Zero => {}
            Placement::Tiny { block } => {
                if let Some(r) = self.tiny_refs.get_mut(&block) {
                    *r -= 1;
                    if *r == 0 {
                        self.tiny_refs.remove(&block);
                        self.live_rounded -= TINY_BLOCK_BYTES;
                        let c = self.tiny_class;
                        self.class_delta(c, false);
                    }
                }
            }
            Placement::Small { class } => {
                self.live_rounded -= self.class_size[class as usize];
                self.class_delta(class as usize, false);
            }
            Placement::Large { rounded_bytes } => {
                self.live_rounded -= rounded_bytes;
                self.span_heap -= rounded_bytes;
            }
        }
    }

    /// A report window starts: the peaks start from the live figures now, the timeline anew
    /// (its points keep the trace's event numbers).
    pub fn start_window(&mut self) {
        self.peak_live_objects.clone_from(&self.live_objects);
        self.peak_requested = self.live_requested;
        self.peak_rounded = self.live_rounded;
        self.peak_span_heap = self.span_heap;
        self.peak_requested_event = self.events;
        self.points.clear();
        self.window = 1;
        self.in_window = 0;
    }

    /// After each event: peaks and the timeline.
    pub fn tick(&mut self, ts_ns: u64) {
        if self.live_requested > self.peak_requested {
            self.peak_requested = self.live_requested;
            self.peak_requested_event = self.events;
        }
        self.peak_rounded = self.peak_rounded.max(self.live_rounded);
        self.peak_span_heap = self.peak_span_heap.max(self.span_heap);
        let p = Point {
            event: self.events,
            ts_ns,
            live_requested_bytes: self.live_requested,
            live_rounded_bytes: self.live_rounded,
            span_heap_bytes: self.span_heap,
        };
        if self.in_window == 0 {
            self.points.push(p);
        } else if let Some(last) = self.points.last_mut() {
            last.merge(&p);
        }
        self.in_window += 1;
        if self.in_window == self.window {
            self.in_window = 0;
            if self.points.len() >= MAX_POINTS {
                let merged: Vec<Point> = self
                    .points
                    .chunks(2)
                    .map(|w| {
                        let mut a = w[0];
                        if let Some(b) = w.get(1) {
                            a.merge(b);
                        }
                        a
                    })
                    .collect();
                self.points = merged;
                self.window *= 2;
            }
        }
        self.events += 1;
    }

    pub fn report(&self) -> FragReport {
        let ratio = |a: u64| {
            if self.peak_requested == 0 {
                0.0
            } else {
                a as f64 / self.peak_requested as f64
            }
        };
        FragReport {
            peak_live_requested_bytes: self.peak_requested,
            peak_live_requested_event: self.peak_requested_event,
            peak_live_rounded_bytes: self.peak_rounded,
            peak_span_heap_bytes: self.peak_span_heap,
            live_requested_at_end_bytes: self.live_requested,
            live_rounded_at_end_bytes: self.live_rounded,
            jw_rounded: ratio(self.peak_rounded),
            jw_spans: ratio(self.peak_span_heap),
            window_events: self.window,
            timeline: self.points.clone(),
        }
    }
}

/// The fragmentation section of a report (trace side).
#[derive(Clone, Debug, Serialize)]
pub struct FragReport {
    pub peak_live_requested_bytes: u64,
    pub peak_live_requested_event: u64,
    pub peak_live_rounded_bytes: u64,
    /// Peak of the pages a perfectly compacting span heap holds.
    pub peak_span_heap_bytes: u64,
    pub live_requested_at_end_bytes: u64,
    pub live_rounded_at_end_bytes: u64,
    /// J&W: max live rounded / max live requested.
    pub jw_rounded: f64,
    /// J&W: max span heap / max live requested.
    pub jw_spans: f64,
    /// Events per timeline window.
    pub window_events: u64,
    pub timeline: Vec<Point>,
}
