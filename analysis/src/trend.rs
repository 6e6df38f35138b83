//! `trend`: chosen metrics across a history of result files (one per commit, oldest first), one
//! panel per metric, with regressions marked: a point that crosses a `--fail-if` limit against the
//! point before it.

use std::path::PathBuf;

use plotters::coord::Shift;
use plotters::prelude::*;
use serde_json::Value;

use crate::charts::{render_both, Chart, ChartFormat, DrawResult};
use crate::compare::Limit;
use crate::replay_json::{metrics, read_json};
use crate::{AnalysisError, Result};

/// One result in the history.
#[derive(Clone, Debug)]
pub struct Entry {
    pub label: String,
    pub metrics: std::collections::BTreeMap<String, f64>,
}

/// Reads the files in order; the label is the file's `label` or `commit` field, else its stem.
pub fn load(paths: &[PathBuf]) -> Result<Vec<Entry>> {
    paths
        .iter()
        .map(|p| {
            let v = read_json(p)?;
            let label = ["label", "commit"]
                .iter()
                .find_map(|k| v.get(*k).and_then(Value::as_str).map(str::to_string))
                .unwrap_or_else(|| {
                    p.file_stem().map_or_else(
                        || p.display().to_string(),
                        |s| s.to_string_lossy().into_owned(),
                    )
                });
            Ok(Entry {
                label,
                metrics: metrics(p, &v)?,
            })
        })
        .collect()
}

/// One metric's series: values (None where a file lacks it) and regression flags.
#[derive(Clone, Debug)]
pub struct Series {
    pub metric: String,
    pub values: Vec<Option<f64>>,
    pub regressed: Vec<bool>,
}

/// Builds the series for `names` (from `--metrics`), marking regressions under `limits` (from
/// `--fail-if`). A metric no file has is an error that names the flag it came from.
pub fn series(entries: &[Entry], names: &[String], limits: &[Limit]) -> Result<Vec<Series>> {
    let known = |n: &String| entries.iter().any(|e| e.metrics.contains_key(n));
    let have = || {
        let mut all: Vec<&str> = entries
            .iter()
            .flat_map(|e| e.metrics.keys().map(String::as_str))
            .collect();
        all.sort_unstable();
        all.dedup();
        all.join(", ")
    };
    if let Some(l) = limits.iter().find(|l| !known(&l.metric)) {
        return Err(AnalysisError::Expr(format!(
            "unknown metric '{}': no result file has it (they have: {})",
            l.metric,
            have()
        )));
    }
    if let Some(n) = names.iter().find(|n| !known(n)) {
        return Err(AnalysisError::Input {
            path: "--metrics".into(),
            msg: format!(
                "unknown metric '{n}': no result file has it (they have: {})",
                have()
            ),
        });
    }
    Ok(names
        .iter()
        .map(|m| {
            let values: Vec<Option<f64>> =
                entries.iter().map(|e| e.metrics.get(m).copied()).collect();
            let regressed = (0..values.len())
                .map(|i| {
                    i > 0
                        && match (values[i - 1], values[i]) {
                            (Some(b), Some(n)) => limits
                                .iter()
                                .filter(|l| &l.metric == m)
                                .any(|l| l.crossed(b, n)),
                            _ => false,
                        }
                })
                .collect();
            Series {
                metric: m.clone(),
                values,
                regressed,
            }
        })
        .collect())
}

fn draw<DB: DrawingBackend>(
    root: &DrawingArea<DB, Shift>,
    labels: &[String],
    series: &[Series],
) -> DrawResult
where
    DB::ErrorType: 'static,
{
    let panels = root.split_evenly((series.len().max(1), 1));
    let n = labels.len().max(1);
    for (area, s) in panels.iter().zip(series) {
        let vals: Vec<f64> = s.values.iter().flatten().copied().collect();
        let lo = vals.iter().copied().fold(f64::INFINITY, f64::min);
        let hi = vals.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        let (lo, hi) = if vals.is_empty() {
            (0.0, 1.0)
        } else if hi > lo {
            (lo, hi)
        } else {
            (lo - 1.0, hi + 1.0)
        };
        let pad = (hi - lo) * 0.1;
        let mut chart = ChartBuilder::on(area)
            .caption(&s.metric, ("sans-serif", 18))
            .margin(8)
            .x_label_area_size(30)
            .y_label_area_size(80)
            .build_cartesian_2d(-0.3f64..(n as f64 - 0.7), (lo - pad)..(hi + pad))?;
        chart
            .configure_mesh()
            .x_labels(n.min(20))
            .x_label_formatter(&|v| {
                if (v - v.round()).abs() < 1e-9 && *v >= 0.0 {
                    labels.get(v.round() as usize).cloned().unwrap_or_default()
                } else {
                    String::new()
                }
            })
            .y_label_formatter(&|v| crate::compare::num(*v))
            .label_style(("sans-serif", 12))
            .draw()?;
        let pts: Vec<(f64, f64)> = s
            .values
            .iter()
            .enumerate()
            .filter_map(|(i, v)| v.map(|v| (i as f64, v)))
            .collect();
        chart.draw_series(LineSeries::new(
            pts.clone(),
            RGBColor(31, 119, 180).stroke_width(2),
        ))?;
        chart.draw_series(
            pts.iter()
                .map(|&p| Circle::new(p, 4, RGBColor(31, 119, 180).filled())),
        )?;
        chart.draw_series(
            s.values
                .iter()
                .enumerate()
                .filter(|(i, _)| s.regressed[*i])
                .filter_map(|(i, v)| v.map(|v| (i as f64, v)))
                .map(|p| Cross::new(p, 9, RGBColor(214, 39, 40).stroke_width(3))),
        )?;
    }
    Ok(())
}

/// Renders the trend chart as SVG and, for `ChartFormat::Png`, as PNG too.
pub fn chart(labels: &[String], series: &[Series], format: ChartFormat) -> Result<Chart> {
    let h = 60 + 220 * series.len().max(1) as u32;
    let size = (1000, h);
    let png = format == ChartFormat::Png;
    Ok(render_both!(
        "trend", "Trend", size, png, draw, labels, series
    ))
}
