//! The call-site views of a report: who allocates, who holds the peak, who leaks, who wastes and
//! who is slow, per allocating function (bottom-up) and per whole call stack (top-down).
//!
//! The figures are the report pass's per-stack weights ([`crate::stacks::StackWeights`]), named
//! here with the trace's stack table and the symbols the caller resolved. A *function* row sums
//! every stack whose innermost frame (the function that called the allocator; an inlined call is
//! a frame of its own) has that name; a *stack* row is one distinct sequence of frame names
//! (stacks that differ only in return addresses within the same functions are one row).
//!
//! Which stacks are listed: every function; the stacks that are among the top
//! [`CallSitesReport::listed_per_figure`] by any of bytes, peak, leaked and waste (a recording
//! of a large program has tens of thousands; the rest only count in the function rows).

use std::borrow::Cow;

use rustc_hash::FxHashMap;
use serde::Serialize;
use symbolize::{Place, Symbols};
use traces::StackTable;

use crate::folded::{NO_STACK, UNKNOWN_STACK};
use crate::stacks::{LatencyBuckets, StackProfile, StackWeights, WasteSizes};

/// What the call-site sections say about a trace recorded without stacks.
pub const NO_STACKS_NOTE: &str = "recorded without stacks (record --stack-depth N, N > 0)";

/// One frame of a call site.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct SiteFrame {
    /// The function's name (demangled), or `MODULE+0xOFFSET` where it cannot be named.
    pub function: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub file: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub line: Option<u32>,
    /// The module's path (none for code outside every module).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub module: Option<String>,
}

/// The figures of one call site (a function or a stack).
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct SiteFigures {
    /// Allocating calls (a realloc that returned a block is one) and the bytes they asked for.
    pub allocs: u64,
    pub bytes: u64,
    /// Requested bytes of its blocks live at the peak of live requested bytes.
    pub peak_live_bytes: u64,
    /// Blocks and requested bytes still live when the trace ends (for a process that was killed
    /// or stopped early: its live heap, not necessarily leaks).
    pub leaked_objects: u64,
    pub leaked_bytes: u64,
    /// Objects freed while temporary (before 64 KiB more were allocated), and their bytes.
    pub temporary: u64,
    pub temporary_bytes: u64,
    /// Reallocs that returned a block, and the bytes the moving ones copied.
    pub reallocs: u64,
    pub realloc_copied_bytes: u64,
    /// Bytes lost to rounding up to the size class (or pages) under the report's class table.
    pub waste_bytes: u64,
    /// The real allocator's recorded latency of these calls (nanoseconds; within 19 %): absent
    /// when the trace has none.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub p50_ns: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub p99_ns: Option<u64>,
    /// Bytes of the Go model's HeapInuse at its peak its objects held (slots, whole spans for
    /// large objects): given a Go-model replay of the trace (`report --replay`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub go_heap_at_peak_bytes: Option<u64>,
    /// The request sizes that cause the waste, most waste first (at most
    /// [`WASTE_SIZES`]): request bytes, allocations, and the slot each took.
    pub waste_sizes: Vec<WasteSize>,
    #[serde(skip)]
    latency: LatencyBuckets,
    #[serde(skip)]
    sizes: WasteSizes,
}

/// Request sizes listed per call site.
pub const WASTE_SIZES: usize = 5;

/// A request size that wastes bytes at a call site.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct WasteSize {
    pub request_bytes: u64,
    pub allocs: u64,
    /// The class slot (or pages) each took: request + waste per allocation.
    pub slot_bytes: u64,
    pub waste_bytes: u64,
}

impl From<&StackWeights> for SiteFigures {
    fn from(w: &StackWeights) -> SiteFigures {
        SiteFigures {
            allocs: w.allocs,
            bytes: w.bytes,
            peak_live_bytes: w.peak_bytes,
            leaked_objects: w.leaked_objects,
            leaked_bytes: w.leaked_bytes,
            temporary: w.temporary_objects,
            temporary_bytes: w.temporary_bytes,
            reallocs: w.reallocs,
            realloc_copied_bytes: w.realloc_copied_bytes,
            waste_bytes: w.waste_bytes,
            latency: w.latency.clone(),
            sizes: w.waste_sizes.clone(),
            ..SiteFigures::default()
        }
    }
}

impl SiteFigures {
    fn merge(&mut self, o: &SiteFigures) {
        self.allocs += o.allocs;
        self.bytes += o.bytes;
        self.peak_live_bytes += o.peak_live_bytes;
        self.leaked_objects += o.leaked_objects;
        self.leaked_bytes += o.leaked_bytes;
        self.temporary += o.temporary;
        self.temporary_bytes += o.temporary_bytes;
        self.reallocs += o.reallocs;
        self.realloc_copied_bytes += o.realloc_copied_bytes;
        self.waste_bytes += o.waste_bytes;
        if let Some(b) = o.go_heap_at_peak_bytes {
            *self.go_heap_at_peak_bytes.get_or_insert(0) += b;
        }
        self.latency.merge(&o.latency);
        self.sizes.merge(&o.sizes);
    }

    fn settle(&mut self) {
        self.p50_ns = self.latency.quantile(0.50);
        self.p99_ns = self.latency.quantile(0.99);
        let mut sizes = self.sizes.sizes.clone();
        sizes.sort_by(|a, b| b.2.cmp(&a.2).then(a.0.cmp(&b.0)));
        self.waste_sizes = sizes
            .into_iter()
            .take(WASTE_SIZES)
            .map(|(request_bytes, allocs, waste_bytes)| WasteSize {
                request_bytes,
                allocs,
                slot_bytes: request_bytes + waste_bytes / allocs.max(1),
                waste_bytes,
            })
            .collect();
    }
}

/// A row of the bottom-up table: an allocating function.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct FunctionSite {
    #[serde(flatten)]
    pub frame: SiteFrame,
    /// Distinct stacks that end in it.
    pub stacks: u64,
    #[serde(flatten)]
    pub figures: SiteFigures,
}

/// A row of the top-down table: one call stack.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct StackSite {
    /// Its frames, caller first: the last one is the allocating function.
    pub frames: Vec<SiteFrame>,
    #[serde(flatten)]
    pub figures: SiteFigures,
}

/// The call-site views of a report.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct CallSitesReport {
    /// Whether the trace has stacks; without, `note` says so and the lists are empty.
    pub recorded: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
    /// The peak of live requested bytes the `peak_live_bytes` figures are taken at.
    pub peak_live_bytes: u64,
    /// The Go model's HeapInuse at its peak that the `go_heap_at_peak_bytes` figures split
    /// (given a Go-model replay).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub go_heap_at_peak: Option<crate::replay_json::GoHeapAtPeak>,
    /// Distinct stacks in the trace, and how many `stacks` lists.
    pub distinct_stacks: u64,
    pub listed_per_figure: usize,
    /// Every allocating function, by bytes allocated (largest first).
    pub functions: Vec<FunctionSite>,
    /// The top stacks (see the module comment), by bytes allocated.
    pub stacks: Vec<StackSite>,
}

/// A frame as symbolization gives it, borrowed (a label is the one owned part).
#[derive(Clone, PartialEq, Eq, Hash)]
struct FrameKey<'s> {
    function: Cow<'s, str>,
    file: Option<&'s str>,
    line: Option<u32>,
    module: Option<&'s str>,
}

impl FrameKey<'_> {
    fn to_frame(&self) -> SiteFrame {
        SiteFrame {
            function: self.function.to_string(),
            file: self.file.map(str::to_string),
            line: self.line,
            module: self.module.map(str::to_string),
        }
    }
}

/// Distinct frames and function names, numbered: a stack is a list of numbers, and only the
/// rows listed own strings (a python recording has 15 000 stacks of 50 frames). Each return
/// address is named once (`by_place`): stacks share most of their frames.
#[derive(Default)]
struct Interner<'s> {
    frames: FxHashMap<FrameKey<'s>, u32>,
    frame_list: Vec<FrameKey<'s>>,
    names: FxHashMap<Cow<'s, str>, u32>,
    /// (module id or `u32::MAX`, address in it) -> its (frame, name) pairs in `arena`.
    by_place: FxHashMap<(u32, u64), (u32, u32)>,
    arena: Vec<(u32, u32)>,
    /// By trie node, when a place does not depend on the seq: its pairs in `arena` (start,
    /// length; length 0: not named yet). Stacks share most of their nodes.
    by_node: Vec<(u32, u32)>,
}

impl<'s> Interner<'s> {
    /// The frame's number and its function name's.
    fn add(&mut self, f: FrameKey<'s>) -> (u32, u32) {
        let n = self.names.len() as u32;
        let name = *self.names.entry(f.function.clone()).or_insert(n);
        let n = self.frame_list.len() as u32;
        let id = *self.frames.entry(f.clone()).or_insert(n);
        if id == n {
            self.frame_list.push(f);
        }
        (id, name)
    }

    /// The (frame, name) pairs of one place, innermost first, named on first sight.
    fn place(&mut self, place: Place<'s>) -> std::ops::Range<usize> {
        let key = match place {
            Place::Module {
                module, file_addr, ..
            } => (module.id, file_addr),
            Place::Unknown { addr } => (u32::MAX, addr),
        };
        if let Some(&(start, len)) = self.by_place.get(&key) {
            return start as usize..(start + len) as usize;
        }
        let mut keys = Vec::new();
        match place {
            Place::Module { module, frames, .. } if !frames.is_empty() => {
                keys.extend(frames.iter().map(|f| FrameKey {
                    function: Cow::Borrowed(f.function.as_str()),
                    file: f.file.as_deref(),
                    line: f.line,
                    module: Some(module.path.as_str()),
                }))
            }
            Place::Module { module, .. } => keys.push(FrameKey {
                function: Cow::Owned(place.label()),
                file: None,
                line: None,
                module: Some(module.path.as_str()),
            }),
            Place::Unknown { .. } => keys.push(FrameKey {
                function: Cow::Owned(place.label()),
                file: None,
                line: None,
                module: None,
            }),
        }
        let start = self.arena.len();
        for k in keys {
            let pair = self.add(k);
            self.arena.push(pair);
        }
        self.by_place
            .insert(key, (start as u32, (self.arena.len() - start) as u32));
        start..self.arena.len()
    }

    /// The frames and names of stack `id`, innermost first.
    fn stack(
        &mut self,
        id: Option<u32>,
        first_seq: u64,
        table: &StackTable,
        symbols: &'s Symbols,
    ) -> (Vec<u32>, Vec<u32>) {
        let named = |function: &'static str| FrameKey {
            function: Cow::Borrowed(function),
            file: None,
            line: None,
            module: None,
        };
        let mut pairs = Vec::new();
        match id {
            None => pairs.push(self.add(named(NO_STACK))),
            Some(leaf) if table.node(leaf).is_none() => pairs.push(self.add(named(UNKNOWN_STACK))),
            Some(leaf) if symbols.seq_independent() => {
                if self.by_node.is_empty() {
                    self.by_node = vec![(0, 0); table.len() as usize + 1];
                }
                let mut id = leaf;
                while let Some((parent, addr)) = table.node(id) {
                    let (start, len) = match self.by_node[id as usize] {
                        (_, 0) => {
                            let r = self.place(symbols.place(addr, first_seq));
                            let at = (r.start as u32, r.len() as u32);
                            self.by_node[id as usize] = at;
                            at
                        }
                        at => at,
                    };
                    pairs.extend_from_slice(&self.arena[start as usize..(start + len) as usize]);
                    id = parent;
                }
            }
            Some(leaf) => {
                for addr in table.frames(leaf) {
                    let range = self.place(symbols.place(addr, first_seq));
                    pairs.extend_from_slice(&self.arena[range]);
                }
            }
        }
        if pairs.is_empty() {
            pairs.push(self.add(named(UNKNOWN_STACK)));
        }
        pairs.into_iter().unzip()
    }
}

/// The call-site views of `profile`, its stacks named from `table` and `symbols`; at least
/// `top` stacks per figure are listed (100 or more).
pub fn build(
    profile: &StackProfile,
    table: &StackTable,
    symbols: &Symbols,
    top: usize,
) -> CallSitesReport {
    if !profile.has_stacks() {
        return without_stacks(profile);
    }
    // Stacks by their names (innermost first; file and line are not part of the key, so two
    // call lines in one function are one row), each with the frames of its first stack; then
    // functions by the innermost name.
    let mut interner = Interner::default();
    let mut by_names: FxHashMap<Vec<u32>, (Vec<u32>, SiteFigures)> = FxHashMap::default();
    for (id, w) in profile.sorted() {
        // A stack with no allocation still holds bytes when a report window starts after it.
        if w.allocs == 0 && w.peak_bytes == 0 && w.leaked_objects == 0 && w.go_heap_bytes == 0 {
            continue;
        }
        let (frames, names) = interner.stack(id, w.first_seq, table, symbols);
        let row = by_names
            .entry(names)
            .or_insert_with(|| (frames, SiteFigures::default()));
        let mut figures = SiteFigures::from(w);
        if profile.go_heap.is_some() {
            figures.go_heap_at_peak_bytes = Some(w.go_heap_bytes);
        }
        row.1.merge(&figures);
    }
    let mut functions: FxHashMap<u32, FunctionSite> = FxHashMap::default();
    for (frames, figures) in by_names.values() {
        let leaf = &interner.frame_list[frames[0] as usize];
        let f = functions
            .entry(interner.names[&leaf.function])
            .or_insert_with(|| FunctionSite {
                frame: leaf.to_frame(),
                stacks: 0,
                figures: SiteFigures::default(),
            });
        f.stacks += 1;
        f.figures.merge(figures);
    }
    let mut functions: Vec<FunctionSite> = functions.into_values().collect();
    for f in &mut functions {
        f.figures.settle();
    }
    functions.sort_by(|a, b| {
        (b.figures.bytes, &a.frame.function).cmp(&(a.figures.bytes, &b.frame.function))
    });

    let distinct = by_names.len();
    let listed = top.max(100);
    let mut rows: Vec<(Vec<u32>, SiteFigures)> = by_names.into_values().collect();
    let mut keep = vec![false; rows.len()];
    let figures: [fn(&SiteFigures) -> u64; 5] = [
        |f| f.bytes,
        |f| f.peak_live_bytes,
        |f| f.leaked_bytes,
        |f| f.waste_bytes,
        |f| f.go_heap_at_peak_bytes.unwrap_or(0),
    ];
    for figure in figures {
        let mut order: Vec<usize> = (0..rows.len()).collect();
        order.sort_by_key(|&i| std::cmp::Reverse(figure(&rows[i].1)));
        for &i in order.iter().take(listed) {
            keep[i] |= figure(&rows[i].1) > 0;
        }
    }
    let mut i = 0;
    rows.retain(|_| {
        i += 1;
        keep[i - 1]
    });
    let mut stacks: Vec<StackSite> = rows
        .into_iter()
        .map(|(frames, mut figures)| {
            figures.settle();
            StackSite {
                frames: frames
                    .iter()
                    .rev()
                    .map(|&f| interner.frame_list[f as usize].to_frame())
                    .collect(),
                figures,
            }
        })
        .collect();
    // By bytes, then by frames: the same trace always lists them in the same order.
    stacks.sort_by(|a, b| (b.figures.bytes, &a.frames).cmp(&(a.figures.bytes, &b.frames)));
    CallSitesReport {
        recorded: true,
        note: None,
        peak_live_bytes: profile.peak_live_bytes,
        go_heap_at_peak: profile.go_heap.clone(),
        distinct_stacks: distinct as u64,
        listed_per_figure: listed,
        functions,
        stacks,
    }
}

fn without_stacks(profile: &StackProfile) -> CallSitesReport {
    CallSitesReport {
        recorded: false,
        note: Some(NO_STACKS_NOTE.to_string()),
        peak_live_bytes: profile.peak_live_bytes,
        ..CallSitesReport::default()
    }
}

/// A function's name as a metric name (`compare --fail-if` takes letters, digits, `_` and `.`).
pub fn metric_name(function: &str) -> String {
    function
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn weights(allocs: u64, bytes: u64, peak: u64, leaked: u64) -> StackWeights {
        StackWeights {
            allocs,
            bytes,
            peak_bytes: peak,
            leaked_bytes: leaked,
            leaked_objects: (leaked > 0) as u64,
            ..StackWeights::default()
        }
    }

    #[test]
    fn functions_sum_their_stacks_and_stacks_read_caller_first() {
        // 0x1000 (main) calls 0x2000 and 0x3000 (both unnamed without symbols: labels).
        let mut table = StackTable::new();
        assert!(table.push(1, 0, 0x1000));
        assert!(table.push(2, 1, 0x2000));
        assert!(table.push(3, 1, 0x3000));
        assert!(table.push(4, 3, 0x2000));
        let mut profile = StackProfile::default();
        profile.stacks.insert(Some(2), weights(2, 200, 100, 0));
        profile.stacks.insert(Some(4), weights(1, 50, 50, 50));
        profile.stacks.insert(Some(3), weights(1, 10, 0, 0));
        let r = build(&profile, &table, &Symbols::default(), 10);
        assert!(r.recorded);
        assert_eq!(r.distinct_stacks, 3);
        let f: Vec<(&str, u64, u64, u64, u64)> = r
            .functions
            .iter()
            .map(|f| {
                let g = &f.figures;
                (
                    f.frame.function.as_str(),
                    f.stacks,
                    g.allocs,
                    g.bytes,
                    g.leaked_bytes,
                )
            })
            .collect();
        assert_eq!(f, [("0x2000", 2, 3, 250, 50), ("0x3000", 1, 1, 10, 0)]);
        let s: Vec<Vec<&str>> = r
            .stacks
            .iter()
            .map(|s| s.frames.iter().map(|f| f.function.as_str()).collect())
            .collect();
        assert_eq!(
            s,
            [
                vec!["0x1000", "0x2000"],
                vec!["0x1000", "0x3000", "0x2000"],
                vec!["0x1000", "0x3000"]
            ]
        );
        assert_eq!(metric_name("std::vec<int>::push"), "std__vec_int___push");
    }

    #[test]
    fn a_trace_without_stacks_says_so() {
        let mut profile = StackProfile::default();
        profile.stacks.insert(None, weights(5, 500, 100, 0));
        let r = build(&profile, &StackTable::new(), &Symbols::default(), 10);
        assert!(!r.recorded);
        assert_eq!(r.note.as_deref(), Some(NO_STACKS_NOTE));
        assert!(r.functions.is_empty() && r.stacks.is_empty());
    }
}
