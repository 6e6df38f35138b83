//! Charts with plotters, each rendered as SVG (kept as a string for the HTML page) and, when
//! asked, as PNG bytes. Rendering happens in memory: the caller writes the files (the CLI's one
//! write path, which never leaves a partial file), so a chart error is a drawing error, never an
//! I/O error. Text uses the system's sans-serif font (plotters' `ttf` feature, through
//! fontconfig); a machine without any font gets an error that says to install one, and only
//! then.

use std::error::Error;
use std::path::Path;

use plotters::coord::Shift;
use plotters::prelude::*;

use crate::analyze::Report;
use crate::pct::QUANTILES;
use crate::{AnalysisError, Result};

/// Pixel size of every chart.
pub const SIZE: (u32, u32) = (960, 480);
const FONT: &str = "sans-serif";
const COLORS: [RGBColor; 8] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
    RGBColor(127, 127, 127),
];

pub type DrawResult = std::result::Result<(), Box<dyn Error>>;

/// A rendered chart.
pub struct Chart {
    pub name: String,
    pub title: String,
    pub svg: String,
    /// The same chart as PNG, when it was asked for.
    pub png: Option<Vec<u8>>,
}

/// The file format of a chart output, which its extension decides.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ChartFormat {
    Svg,
    Png,
}

impl ChartFormat {
    /// The format a path's extension names (`.svg` or `.png`, any case); `None` for any other
    /// name, which a caller must refuse rather than write one format under another's name.
    pub fn of_path(path: &Path) -> Option<ChartFormat> {
        let ext = path.extension()?.to_str()?.to_ascii_lowercase();
        match ext.as_str() {
            "svg" => Some(ChartFormat::Svg),
            "png" => Some(ChartFormat::Png),
            _ => None,
        }
    }

    /// The chart's bytes in this format.
    pub fn bytes(self, chart: &Chart) -> Option<&[u8]> {
        match self {
            ChartFormat::Svg => Some(chart.svg.as_bytes()),
            ChartFormat::Png => chart.png.as_deref(),
        }
    }
}

/// A drawing error as one line. Only a font problem says to install a font.
pub(crate) fn chart_err(name: &str, e: impl std::fmt::Display) -> AnalysisError {
    let msg = e.to_string();
    if msg.to_ascii_lowercase().contains("font") {
        AnalysisError::Chart {
            name: name.to_string(),
            msg,
        }
    } else {
        AnalysisError::Input {
            path: format!("chart {name}"),
            msg: format!("cannot draw it: {msg}"),
        }
    }
}

/// Encodes an RGB buffer of `size` as PNG.
pub(crate) fn encode_png(name: &str, rgb: &[u8], size: (u32, u32)) -> Result<Vec<u8>> {
    use image::ImageEncoder;
    let mut out = Vec::new();
    image::codecs::png::PngEncoder::new(&mut out)
        .write_image(rgb, size.0, size.1, image::ColorType::Rgb8)
        .map_err(|e| AnalysisError::Input {
            path: format!("chart {name}"),
            msg: format!("cannot encode it as PNG: {e}"),
        })?;
    Ok(out)
}

/// Draws with `$f` (generic over the backend) on a white `$size` canvas, into PNG bytes.
macro_rules! render_png {
    ($name:expr, $size:expr, $f:expr, $($arg:expr),*) => {{
        let name: &str = $name;
        let size: (u32, u32) = $size;
        let mut rgb = vec![0u8; size.0 as usize * size.1 as usize * 3];
        {
            let root = BitMapBackend::with_buffer(&mut rgb, size).into_drawing_area();
            root.fill(&WHITE).map_err(|e| $crate::charts::chart_err(name, e))?;
            $f(&root, $($arg),*).map_err(|e| $crate::charts::chart_err(name, e))?;
            root.present().map_err(|e| $crate::charts::chart_err(name, e))?;
        }
        $crate::charts::encode_png(name, &rgb, size)?
    }};
}
#[allow(unused_imports)]
pub(crate) use render_png;

/// Renders a drawing function (generic over the backend) as SVG and, when `$png` is true, also
/// as PNG bytes.
macro_rules! render_both {
    ($name:expr, $title:expr, $size:expr, $png:expr, $f:expr, $($arg:expr),*) => {{
        let name: &str = $name;
        let mut svg = String::new();
        {
            let root = SVGBackend::with_string(&mut svg, $size).into_drawing_area();
            root.fill(&WHITE).map_err(|e| $crate::charts::chart_err(name, e))?;
            $f(&root, $($arg),*).map_err(|e| $crate::charts::chart_err(name, e))?;
            root.present().map_err(|e| $crate::charts::chart_err(name, e))?;
        }
        let png = if $png {
            Some($crate::charts::render_png!(name, $size, $f, $($arg),*))
        } else {
            None
        };
        Chart { name: name.to_string(), title: $title.to_string(), svg, png }
    }};
}
#[allow(unused_imports)]
pub(crate) use render_both;

/// A byte scale for an axis: divisor and unit name.
pub fn byte_unit(max: f64) -> (f64, &'static str) {
    if max >= 1024.0 * 1024.0 * 1024.0 {
        (1024.0 * 1024.0 * 1024.0, "GiB")
    } else if max >= 1024.0 * 1024.0 {
        (1024.0 * 1024.0, "MiB")
    } else if max >= 1024.0 {
        (1024.0, "KiB")
    } else {
        (1.0, "bytes")
    }
}

fn timeline<DB: DrawingBackend>(root: &DrawingArea<DB, Shift>, r: &Report) -> DrawResult
where
    DB::ErrorType: 'static,
{
    let pts = &r.frag.timeline;
    let by_time = !r.trace.synthetic_clock;
    let t0 = pts.first().map_or(0, |p| p.ts_ns);
    let x = |p: &crate::frag::Point| {
        if by_time {
            (p.ts_ns - t0) as f64 / 1e6
        } else {
            p.event as f64
        }
    };
    let xmax = pts.iter().map(x).fold(1e-9, f64::max);
    let ymax = pts
        .iter()
        .map(|p| p.span_heap_bytes.max(p.live_rounded_bytes) as f64)
        .fold(1.0, f64::max);
    let (div, unit) = byte_unit(ymax);
    let mut chart = ChartBuilder::on(root)
        .caption("Live heap over time (window maxima)", (FONT, 22))
        .margin(12)
        .x_label_area_size(45)
        .y_label_area_size(75)
        .build_cartesian_2d(0f64..xmax, 0f64..ymax / div * 1.05)?;
    chart
        .configure_mesh()
        .x_desc(if by_time {
            "time since start (ms)"
        } else {
            "event number"
        })
        .y_desc(format!("live bytes ({unit})"))
        .label_style((FONT, 14))
        .draw()?;
    type Get = fn(&crate::frag::Point) -> u64;
    let series: [(&str, Get); 3] = [
        ("live requested", |p| p.live_requested_bytes),
        ("live rounded (size classes)", |p| p.live_rounded_bytes),
        ("span heap (compacted spans)", |p| p.span_heap_bytes),
    ];
    for (i, (label, get)) in series.iter().enumerate() {
        let c = COLORS[i];
        chart
            .draw_series(LineSeries::new(
                pts.iter().map(|p| (x(p), get(p) as f64 / div)),
                c.stroke_width(2),
            ))?
            .label(*label)
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], c.stroke_width(2)));
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .label_font((FONT, 14))
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .draw()?;
    Ok(())
}

fn sizes<DB: DrawingBackend>(root: &DrawingArea<DB, Shift>, r: &Report) -> DrawResult
where
    DB::ErrorType: 'static,
{
    let b = &r.workload.size_log2;
    let labels: Vec<String> = b
        .iter()
        .map(|b| crate::text::bytes(b.from_bytes).replace(".0", ""))
        .collect();
    let ymax = b.iter().map(|b| b.allocs as f64).fold(1.0, f64::max);
    let n = b.len().max(1);
    let mut chart = ChartBuilder::on(root)
        .caption("Request sizes (log2 buckets)", (FONT, 22))
        .margin(12)
        .x_label_area_size(45)
        .y_label_area_size(75)
        .build_cartesian_2d((0..n).into_segmented(), 0f64..ymax * 1.05)?;
    chart
        .configure_mesh()
        .disable_x_mesh()
        .x_labels(n + 1)
        .x_label_formatter(&|v| match v {
            SegmentValue::CenterOf(i) => {
                labels.get(*i).map(|l| format!("≥{l}")).unwrap_or_default()
            }
            _ => String::new(),
        })
        .x_desc("request size bucket (bytes, from)")
        .y_desc("allocations")
        .label_style((FONT, 13))
        .draw()?;
    chart.draw_series(b.iter().enumerate().map(|(i, b)| {
        let mut r = Rectangle::new(
            [
                (SegmentValue::Exact(i), 0.0),
                (SegmentValue::Exact(i + 1), b.allocs as f64),
            ],
            COLORS[0].filled(),
        );
        r.set_margin(0, 0, 3, 3);
        r
    }))?;
    Ok(())
}

/// The most class labels under the waste chart (every k-th class is named).
const WASTE_LABELS: usize = 20;

fn waste<DB: DrawingBackend>(root: &DrawingArea<DB, Shift>, r: &Report) -> DrawResult
where
    DB::ErrorType: 'static,
{
    let cs: Vec<_> = r.waste.classes.iter().filter(|c| c.allocs > 0).collect();
    let n = cs.len().max(1);
    let ymax = cs
        .iter()
        .map(|c| c.waste_pct.max(c.theoretical_max_waste_pct))
        .fold(1.0, f64::max);
    let labels: Vec<String> = cs.iter().map(|c| c.size_bytes.to_string()).collect();
    // At most WASTE_LABELS class labels: Go's 67 classes side by side overlapped.
    let stride = n.div_ceil(WASTE_LABELS);
    let mut chart = ChartBuilder::on(root)
        .caption(
            format!("Internal waste per size class ({} table)", r.waste.table),
            (FONT, 22),
        )
        .margin(12)
        .x_label_area_size(45)
        .y_label_area_size(60)
        .build_cartesian_2d((0..n).into_segmented(), 0f64..ymax * 1.1)?;
    chart
        .configure_mesh()
        .disable_x_mesh()
        .x_labels(n + 1)
        .x_label_formatter(&|v| match v {
            SegmentValue::CenterOf(i) if i % stride == 0 => {
                labels.get(*i).cloned().unwrap_or_default()
            }
            _ => String::new(),
        })
        .x_desc("size class (bytes per object)")
        .y_desc("waste (% of rounded bytes)")
        .label_style((FONT, 13))
        .draw()?;
    chart
        .draw_series(cs.iter().enumerate().map(|(i, c)| {
            let mut r = Rectangle::new(
                [
                    (SegmentValue::Exact(i), 0.0),
                    (SegmentValue::Exact(i + 1), c.waste_pct),
                ],
                COLORS[1].filled(),
            );
            r.set_margin(0, 0, 3, 3);
            r
        }))?
        .label("waste in this trace")
        .legend(|(x, y)| Rectangle::new([(x, y - 5), (x + 15, y + 5)], COLORS[1].filled()));
    chart
        .draw_series(cs.iter().enumerate().map(|(i, c)| {
            Cross::new(
                (SegmentValue::CenterOf(i), c.theoretical_max_waste_pct),
                6,
                COLORS[3].stroke_width(2),
            )
        }))?
        .label("table's theoretical max")
        .legend(|(x, y)| Cross::new((x + 8, y), 6, COLORS[3].stroke_width(2)));
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperRight)
        .label_font((FONT, 14))
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .draw()?;
    Ok(())
}

/// Latency percentiles on a log scale: one line per series (name, values p50..max in ns).
pub fn latency_chart<DB: DrawingBackend>(
    root: &DrawingArea<DB, Shift>,
    title: &str,
    series: &[(String, [u64; 6])],
) -> DrawResult
where
    DB::ErrorType: 'static,
{
    let ymax = series
        .iter()
        .flat_map(|(_, v)| v.iter())
        .map(|&v| v as f64)
        .fold(10.0, f64::max);
    let labels: Vec<&str> = QUANTILES.iter().map(|q| q.0).chain(["max"]).collect();
    let mut chart = ChartBuilder::on(root)
        .caption(title, (FONT, 22))
        .margin(12)
        .x_label_area_size(45)
        .y_label_area_size(75)
        .build_cartesian_2d(-0.2f64..5.2, (1f64..ymax * 2.0).log_scale())?;
    chart
        .configure_mesh()
        .x_labels(6)
        .x_label_formatter(&|v| {
            if (v - v.round()).abs() < 1e-9 {
                labels
                    .get(v.round() as usize)
                    .map(|s| s.to_string())
                    .unwrap_or_default()
            } else {
                String::new()
            }
        })
        .y_label_formatter(&|v| crate::text::ns(*v as u64))
        .x_desc("percentile")
        .y_desc("latency (log scale)")
        .label_style((FONT, 14))
        .draw()?;
    for (i, (name, vals)) in series.iter().enumerate() {
        let c = COLORS[i % COLORS.len()];
        let pts: Vec<(f64, f64)> = vals
            .iter()
            .enumerate()
            .map(|(i, &v)| (i as f64, (v as f64).max(1.0)))
            .collect();
        chart
            .draw_series(LineSeries::new(pts.clone(), c.stroke_width(2)))?
            .label(name.as_str())
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], c.stroke_width(2)));
        chart.draw_series(pts.into_iter().map(|p| Circle::new(p, 3, c.filled())))?;
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .label_font((FONT, 14))
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .draw()?;
    Ok(())
}

/// Every chart of a report, as SVG and, with `png`, as PNG too.
pub fn report_charts(r: &Report, png: bool) -> Result<Vec<Chart>> {
    let mut out = vec![
        render_both!("timeline", "Live heap over time", SIZE, png, timeline, r),
        render_both!("sizes", "Request sizes", SIZE, png, sizes, r),
        render_both!("waste", "Waste per size class", SIZE, png, waste, r),
    ];
    if r.latency.recorded {
        let series: Vec<(String, [u64; 6])> = r
            .latency
            .per_op_ns
            .iter()
            .map(|(k, p)| (k.clone(), p.values()))
            .collect();
        out.push(render_both!(
            "latency",
            "Recorded latency percentiles",
            SIZE,
            png,
            latency_chart,
            "Recorded latency per op (real allocator)",
            &series
        ));
    }
    if let Some(rp) = r
        .replay
        .as_ref()
        .filter(|rp| !rp.replayed_latency.is_empty())
    {
        // Recorded (the real allocator in production) next to replayed (this machine).
        let mut series: Vec<(String, [u64; 6])> = r
            .latency
            .per_op_ns
            .iter()
            .map(|(k, p)| (format!("recorded {k}"), p.values()))
            .collect();
        // The first allocator replayed (the Go model unless told otherwise): more lines than
        // that stop being readable; the text summary lists every allocator.
        let first = rp.replayed_latency[0]
            .0
            .split(' ')
            .next()
            .unwrap_or_default()
            .to_string();
        series.extend(
            rp.replayed_latency
                .iter()
                .filter(|(n, _)| n.split(' ').next() == Some(first.as_str()))
                .map(|(n, v)| (format!("replayed {n}"), *v)),
        );
        out.push(render_both!(
            "latency_replayed",
            "Recorded and replayed latency",
            SIZE,
            png,
            latency_chart,
            "Latency per op: recorded vs replayed",
            &series
        ));
    }
    Ok(out)
}

/// Grouped bars of byte figures, one group per configuration (`bars`: label and one value per
/// series), for `replay --sweep`, as SVG or PNG bytes.
pub fn config_comparison(
    format: ChartFormat,
    title: &str,
    series: &[&str],
    bars: &[(String, Vec<f64>)],
) -> Result<Vec<u8>> {
    let name = "configurations";
    let height = (120 + 34 * bars.len() as u32 * series.len().max(1) as u32).clamp(320, 4000);
    let size = (SIZE.0, height);
    let png = format == ChartFormat::Png;
    let c = render_both!(name, title, size, png, comparison, title, series, bars);
    Ok(match c.png {
        Some(png) => png,
        None => c.svg.into_bytes(),
    })
}

fn comparison<DB: DrawingBackend>(
    root: &DrawingArea<DB, Shift>,
    title: &str,
    series: &[&str],
    bars: &[(String, Vec<f64>)],
) -> DrawResult
where
    DB::ErrorType: 'static,
{
    let max = bars
        .iter()
        .flat_map(|(_, v)| v.iter().copied())
        .fold(1.0, f64::max);
    let (div, unit) = byte_unit(max);
    let k = series.len().max(1);
    let rows = bars.len() * k;
    let labels: Vec<&str> = bars.iter().map(|(l, _)| l.as_str()).collect();
    let mut chart = ChartBuilder::on(root)
        .caption(title, (FONT, 22))
        .margin(12)
        .x_label_area_size(45)
        .y_label_area_size(220)
        .build_cartesian_2d(0f64..max / div * 1.1, (0..rows).into_segmented())?;
    chart
        .configure_mesh()
        .disable_y_mesh()
        .y_labels(rows + 1)
        .y_label_formatter(&|v| match v {
            SegmentValue::CenterOf(i) if i % k == k / 2 => {
                labels.get(i / k).map(|s| s.to_string()).unwrap_or_default()
            }
            _ => String::new(),
        })
        .x_desc(format!("bytes ({unit})"))
        .label_style((FONT, 13))
        .draw()?;
    for (s, name) in series.iter().enumerate() {
        let color = COLORS[s % COLORS.len()];
        chart
            .draw_series(bars.iter().enumerate().map(|(b, (_, v))| {
                let row = b * k + s;
                let mut r = Rectangle::new(
                    [
                        (0.0, SegmentValue::Exact(row)),
                        (
                            v.get(s).copied().unwrap_or(0.0) / div,
                            SegmentValue::Exact(row + 1),
                        ),
                    ],
                    color.filled(),
                );
                r.set_margin(2, 2, 0, 0);
                r
            }))?
            .label(*name)
            .legend(move |(x, y)| Rectangle::new([(x, y - 5), (x + 15, y + 5)], color.filled()));
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::LowerRight)
        .label_font((FONT, 14))
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .draw()?;
    Ok(())
}

/// The heap over the replay (the first allocator in the timeline): HeapAlloc, HeapInuse, HeapSys
/// and RSS growth against events replayed, with GC cycles marked.
pub fn replay_timeline_chart(
    points: &[crate::replay_timeline::HeapPoint],
    png: bool,
) -> Result<Chart> {
    let first = points
        .first()
        .map(|p| p.allocator.clone())
        .unwrap_or_default();
    let pts: Vec<&crate::replay_timeline::HeapPoint> =
        points.iter().filter(|p| p.allocator == first).collect();
    Ok(render_both!(
        "replay_timeline",
        "Heap over the replay",
        SIZE,
        png,
        heap_timeline,
        &pts,
        &first
    ))
}

fn heap_timeline<DB: DrawingBackend>(
    root: &DrawingArea<DB, Shift>,
    pts: &[&crate::replay_timeline::HeapPoint],
    allocator: &str,
) -> DrawResult
where
    DB::ErrorType: 'static,
{
    let xmax = pts.iter().map(|p| p.op as f64).fold(1.0, f64::max);
    let ymax = pts
        .iter()
        .map(|p| {
            let heap = p
                .heap_sys_bytes
                .unwrap_or(0)
                .max(p.heap_inuse_bytes.unwrap_or(0));
            heap.max(p.rss_bytes) as f64
        })
        .fold(1.0, f64::max);
    let (div, unit) = byte_unit(ymax);
    let mut chart = ChartBuilder::on(root)
        .caption(format!("Heap over the replay ({allocator})"), (FONT, 22))
        .margin(12)
        .x_label_area_size(45)
        .y_label_area_size(70)
        .build_cartesian_2d(0f64..xmax, 0f64..ymax / div * 1.1)?;
    chart
        .configure_mesh()
        .x_desc("events replayed")
        .y_desc(format!("bytes ({unit})"))
        .label_style((FONT, 13))
        .draw()?;
    type Get = fn(&crate::replay_timeline::HeapPoint) -> Option<u64>;
    let lines: [(&str, Get); 4] = [
        ("HeapAlloc", |p| p.heap_alloc_bytes),
        ("HeapInuse", |p| p.heap_inuse_bytes),
        ("HeapSys (held from the OS)", |p| p.heap_sys_bytes),
        ("RSS growth", |p| Some(p.rss_bytes)),
    ];
    for (i, (name, get)) in lines.iter().enumerate() {
        let c = COLORS[i % COLORS.len()];
        if pts.iter().all(|p| get(p).is_none()) {
            continue; // a baseline allocator: no model heap figures
        }
        chart
            .draw_series(LineSeries::new(
                pts.iter()
                    .filter_map(|p| Some((p.op as f64, get(p)? as f64 / div))),
                c.stroke_width(2),
            ))?
            .label(*name)
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 15, y)], c.stroke_width(2)));
    }
    // A GC cycle ended between two samples where num_gc went up.
    let gcs: Vec<f64> = pts
        .windows(2)
        .filter(|w| w[1].num_gc > w[0].num_gc)
        .map(|w| w[1].op as f64)
        .collect();
    let mark = COLORS[3];
    chart
        .draw_series(gcs.iter().map(|&x| {
            PathElement::new(vec![(x, 0.0), (x, ymax / div * 0.04)], mark.stroke_width(2))
        }))?
        .label("GC cycle")
        .legend(move |(x, y)| {
            PathElement::new(vec![(x + 7, y - 5), (x + 7, y + 5)], mark.stroke_width(2))
        });
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .label_font((FONT, 14))
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .draw()?;
    Ok(())
}
