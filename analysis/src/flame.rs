//! The report's flame graphs: one per figure of the call-site views (bytes allocated,
//! allocating calls, bytes live at the peak, leaked bytes, size-class waste), drawn by inferno
//! from the folded lines `export --format folded` writes, as interactive SVG (click to zoom,
//! Ctrl-F or the Search button; `FILE.svg?s=NAME` opens with NAME searched).

use symbolize::Symbols;
use traces::StackTable;

use crate::charts::Chart;
use crate::folded::{self, Weight};
use crate::stacks::StackProfile;

/// The start of every flame graph's [`Chart::name`]: the page shows these in frames of their
/// own ([`crate::html`]).
pub const FLAME_PREFIX: &str = "flame-";

/// Whether `chart` is a flame graph.
pub fn is_flame(chart: &Chart) -> bool {
    chart.name.starts_with(FLAME_PREFIX)
}

/// The start of a differential flame graph's name (the comparison page's, a file of its own
/// nowhere).
pub const DIFF_PREFIX: &str = "flame-diff-";

/// Whether `chart` is a differential flame graph.
pub fn is_diff(chart: &Chart) -> bool {
    chart.name.starts_with(DIFF_PREFIX)
}

/// A differential flame graph of two reports' folded lines (`base`, `new`), named
/// `flame-diff-<name>`, `title` in the graph and `caption` under it: frames as wide as in
/// `new`, red where they grew, blue where they shrank (inferno's differential mode). `None`
/// when neither has a line.
pub fn diff_flame_graph(
    base: &[(String, u64)],
    new: &[(String, u64)],
    name: &str,
    (title, caption): (&str, &str),
    unit: &str,
) -> std::io::Result<Option<Chart>> {
    if base.is_empty() && new.is_empty() {
        return Ok(None);
    }
    let text = |lines: &[(String, u64)]| -> Vec<u8> {
        lines
            .iter()
            .flat_map(|(f, n)| format!("{f} {n}\n").into_bytes())
            .collect()
    };
    let mut joined = Vec::new();
    inferno::differential::from_readers(
        inferno::differential::Options::default(),
        text(base).as_slice(),
        text(new).as_slice(),
        &mut joined,
    )?;
    let mut opts = options(title, unit);
    // Red and blue come from the difference, not from the palette.
    opts.colors = inferno::flamegraph::Palette::default();
    let mut svg = Vec::new();
    inferno::flamegraph::from_reader(&mut opts, joined.as_slice(), &mut svg)?;
    Ok(Some(Chart {
        name: format!("{DIFF_PREFIX}{name}"),
        title: caption.to_string(),
        svg: String::from_utf8_lossy(&svg).into_owned(),
        png: None,
    }))
}

/// inferno's options for one of our graphs.
fn options(title: &str, unit: &str) -> inferno::flamegraph::Options<'static> {
    let mut opts = inferno::flamegraph::Options::default();
    opts.title = title.to_string();
    opts.count_name = unit.to_string();
    opts.colors =
        inferno::flamegraph::Palette::Basic(inferno::flamegraph::color::BasicPalette::Mem);
    // Colours from the names, not at random: the same trace gives the same file.
    opts.hash = true;
    opts
}

/// The flame graphs of `profile` with something to show (a trace without leaks has no leak
/// graph), named `flame-<figure>`.
pub fn flame_graphs(
    profile: &StackProfile,
    table: &StackTable,
    symbols: &Symbols,
) -> std::io::Result<Vec<Chart>> {
    let graphs = [
        (
            Weight::Bytes,
            "bytes",
            "Bytes allocated, by call stack",
            "bytes",
        ),
        (
            Weight::Allocs,
            "allocs",
            "Allocating calls, by call stack",
            "calls",
        ),
        (
            Weight::Peak,
            "peak",
            "Bytes live at the peak of live bytes, by call stack",
            "bytes",
        ),
        (
            Weight::Leaked,
            "leaked",
            "Bytes still live at the end (leaked, or live when the process was stopped)",
            "bytes",
        ),
        (
            Weight::Waste,
            "waste",
            "Bytes lost to size-class rounding, by call stack",
            "bytes",
        ),
        (
            Weight::GoHeap,
            "go-heap",
            "The Go model's HeapInuse at its peak (a replay), by call stack",
            "bytes",
        ),
    ];
    let mut out = Vec::new();
    for (weight, name, title, unit) in graphs {
        let lines = folded::lines(profile, table, symbols, weight);
        if lines.is_empty() {
            continue;
        }
        let text: Vec<String> = lines.iter().map(|(f, n)| format!("{f} {n}")).collect();
        let mut opts = options(title, unit);
        let mut svg = Vec::new();
        inferno::flamegraph::from_lines(&mut opts, text.iter().map(String::as_str), &mut svg)?;
        out.push(Chart {
            name: format!("{FLAME_PREFIX}{name}"),
            title: title.to_string(),
            svg: String::from_utf8_lossy(&svg).into_owned(),
            png: None,
        });
    }
    Ok(out)
}
