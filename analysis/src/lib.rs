//! allocscope analysis: what a trace's workload looks like and what it costs under a size-class
//! table, plus the CI tooling that reads result files.
//!
//! One streaming pass in seq order ([`analyze::Analyzer`]) feeds four accumulators, each in its own
//! module: [`workload`] (sizes, lifetimes, op mix, threads, reallocs), [`waste`] (size-class
//! rounding, tiny packing, page rounding), [`frag`] (live requested vs rounded over time, the
//! Johnstone & Wilson measures) and [`latency`] (recorded latency per op and size group). Memory is
//! bounded by the live objects (one small record each) plus fixed-size histograms and a timeline
//! that halves its resolution when it fills.
//!
//! Call stacks: [`stacks`] weighs each stack (allocations, bytes, leaked, at the peak) in one
//! pass; [`folded`] and [`pprof`] export them, named by the `symbolize` crate.
//!
//! Output: [`text`] (terminal summary), [`tables`] (CSV), [`charts`] (SVG/PNG with plotters),
//! [`html`] (one self-contained page). [`compare`] and [`trend`] read the flat `metrics` map of any
//! result JSON (report or replay, see ARCHITECTURE.md).
#![forbid(unsafe_code)]

pub mod analyze;
pub mod callsites;
pub mod charts;
pub mod compare;
pub mod flame;
pub mod folded;
pub mod frag;
pub mod gotypes;
pub mod html;
pub mod latency;
pub mod pct;
pub mod pprof;
pub mod replay_json;
pub mod replay_timeline;
pub mod stacks;
pub mod tables;
pub mod text;
pub mod trend;
pub mod tune;
pub mod waste;
pub mod window;
pub mod workload;

pub use analyze::{Analyzer, Report};

/// What can go wrong in analysis. Messages are one line.
#[derive(Debug, thiserror::Error)]
pub enum AnalysisError {
    #[error("{path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("{path}: not valid JSON: {msg}")]
    Json { path: String, msg: String },
    #[error("{path}: {msg}")]
    Input { path: String, msg: String },
    #[error("--fail-if: {0}")]
    Expr(String),
    #[error("chart {name}: {msg} (text needs a system font: install fonts-dejavu-core)")]
    Chart { name: String, msg: String },
    #[error("{0}")]
    Csv(String),
}

pub type Result<T, E = AnalysisError> = std::result::Result<T, E>;

pub(crate) fn io_err(path: &std::path::Path) -> impl FnOnce(std::io::Error) -> AnalysisError + '_ {
    move |source| AnalysisError::Io {
        path: path.display().to_string(),
        source,
    }
}

/// A progress bar on stderr for long passes; hidden when stderr is not a terminal (indicatif
/// checks) or when the work is small.
pub fn progress_bar(total_events: u64) -> indicatif::ProgressBar {
    if total_events < 2_000_000 {
        return indicatif::ProgressBar::hidden();
    }
    let bar = indicatif::ProgressBar::with_draw_target(
        Some(total_events),
        indicatif::ProgressDrawTarget::stderr(),
    );
    if let Ok(style) = indicatif::ProgressStyle::with_template(
        "{spinner} {wide_bar} {human_pos}/{human_len} events {per_sec} eta {eta}",
    ) {
        bar.set_style(style);
    }
    bar
}
