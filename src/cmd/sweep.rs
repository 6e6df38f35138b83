//! `allocscope replay --sweep KEY=V1,V2,...`: the same trace replayed under every combination of
//! configuration values, in parallel (rayon), with a side-by-side table and chart.
//!
//! Any key of the replay configuration can be swept (`gogc`, `gomemlimit`, `size_classes`,
//! `page_size`, `tiny`, `tiny_block`, `free_policy`, `pointers`, `procs`, ...): a value is set on
//! the configuration's serialised form and read back through the same validation as a TOML file,
//! so a sweep accepts exactly what `--config` accepts. The memory results are deterministic, so
//! running the configurations in parallel changes nothing but the wall time.
//!
//! Each combination is a whole replay, so their number is capped ([`DEFAULT_LIMIT`], lifted with
//! `--sweep-limit`); the product is checked before any configuration is built.

use std::path::Path;
use std::sync::Mutex;

use analysis::charts::ChartFormat;
use anyhow::{bail, Result};
use rayon::prelude::*;
use replayer::Config;
use serde::Serialize;

use super::output::Outputs;
use super::{Problems, ReplayInput};

/// The most combinations a sweep runs unless `--sweep-limit` says more.
pub const DEFAULT_LIMIT: u64 = 256;
/// The most `--sweep-limit` accepts: beyond it even the list of configurations is a burden.
pub const MAX_LIMIT: u64 = 100_000;

/// One swept key and its values, from `KEY=V1,V2,...`.
#[derive(Clone, Debug)]
pub struct Axis {
    key: String,
    values: Vec<String>,
}

impl std::str::FromStr for Axis {
    type Err = String;

    fn from_str(s: &str) -> Result<Axis, String> {
        let (key, values) = s
            .split_once('=')
            .ok_or_else(|| format!("'{s}' is not KEY=V1,V2,... (e.g. gogc=50,100,200)"))?;
        if key.trim().is_empty() || values.trim().is_empty() {
            return Err(format!("'{s}' needs a key and at least one value"));
        }
        let values: Vec<String> = values.split(',').map(|v| v.trim().to_string()).collect();
        if let Some(n) = values.iter().position(String::is_empty) {
            return Err(format!(
                "'{s}': value {} of {} is empty; remove the extra comma",
                n + 1,
                values.len()
            ));
        }
        Ok(Axis {
            key: key.trim().replace('-', "_"),
            values,
        })
    }
}

/// The metrics shown side by side (all deterministic memory figures).
const COLUMNS: [(&str, &str); 6] = [
    ("peak_heap", "peak HeapInuse"),
    ("heap_sys", "HeapSys"),
    ("peak_heap_alloc", "peak HeapAlloc"),
    ("waste_pct", "waste %"),
    ("num_gc", "GC cycles"),
    ("peak_live_requested", "peak live requested"),
];

#[derive(Serialize)]
struct Row {
    config: String,
    metrics: std::collections::BTreeMap<String, f64>,
}

/// Sets `key` to `value` on `cfg` as a TOML file would.
fn with_value(cfg: &Config, key: &str, value: &str) -> Result<Config> {
    let mut v = serde_json::to_value(cfg)?;
    let obj = v.as_object_mut().expect("Config serialises to an object");
    if !obj.contains_key(key) {
        let mut keys: Vec<&String> = obj.keys().collect();
        keys.sort();
        let keys: Vec<&str> = keys.iter().map(|k| k.as_str()).collect();
        bail!(
            "--sweep: unknown configuration key '{key}' (keys: {})",
            keys.join(", ")
        );
    }
    let parsed = match value {
        "on" | "true" => serde_json::Value::Bool(true),
        "off" | "false" if obj[key].is_boolean() => serde_json::Value::Bool(false),
        // As the --gogc and --gomemlimit flags take it.
        "off" if key == "gogc" => serde_json::Value::from(-1),
        "off" if key == "gomemlimit" => serde_json::Value::Null,
        _ => match value.parse::<serde_json::Number>() {
            Ok(n) if !obj[key].is_string() => serde_json::Value::Number(n),
            _ => serde_json::Value::String(value.to_string()),
        },
    };
    obj.insert(key.to_string(), parsed);
    let cfg: Config =
        serde_json::from_value(v).map_err(|e| anyhow::anyhow!("--sweep: {key}={value}: {e}"))?;
    cfg.validate()
        .map_err(|e| anyhow::anyhow!("--sweep: {key}={value}: {e}"))?;
    Ok(cfg)
}

/// Every combination of the axes' values, with a label like "gogc=50 tiny=off". More than
/// `limit` combinations is an error, found before any is built.
fn combinations(base: &Config, axes: &[Axis], limit: u64) -> Result<Vec<(String, Config)>> {
    let count = axes
        .iter()
        .try_fold(1u64, |n, a| n.checked_mul(a.values.len() as u64));
    if count.is_none_or(|n| n > limit) {
        let sizes: Vec<String> = axes
            .iter()
            .map(|a| format!("{} {}", a.values.len(), a.key))
            .collect();
        let n = count.map_or("more than 2^64".to_string(), |n| n.to_string());
        bail!(
            "--sweep: {n} combinations ({}), each a whole replay: more than the limit of {limit}; \
             sweep fewer values, or pass --sweep-limit N (at most {MAX_LIMIT}) to run them all",
            sizes.join(" x ")
        );
    }
    let mut out = vec![(String::new(), base.clone())];
    for axis in axes {
        let mut next = Vec::with_capacity(out.len() * axis.values.len());
        for (label, cfg) in &out {
            for value in &axis.values {
                let label = format!("{label} {}={value}", axis.key).trim().to_string();
                next.push((label, with_value(cfg, &axis.key, value)?));
            }
        }
        out = next;
    }
    Ok(out)
}

/// What `replay --sweep` was asked to do.
pub struct Sweep<'a> {
    pub trace: &'a Path,
    pub base: &'a Config,
    pub axes: &'a [Axis],
    pub limit: u64,
    pub strict: bool,
    pub allow_truncated: bool,
    pub json: Option<&'a Path>,
    pub chart: Option<&'a Path>,
}

/// Runs the sweep and prints the table; writes JSON and a chart when asked.
pub fn run(s: &Sweep, outputs: &Outputs) -> Result<i32> {
    let chart_format = match s.chart {
        Some(p) => Some(ChartFormat::of_path(p).ok_or_else(|| {
            anyhow::anyhow!(
                "--sweep-chart {}: the extension says the format: use .svg or .png",
                p.display()
            )
        })?),
        None => None,
    };
    let runs = combinations(s.base, s.axes, s.limit)?;
    let input = ReplayInput::open(s.trace)?;
    eprintln!(
        "replaying {} under {} configurations",
        s.trace.display(),
        runs.len()
    );
    let problems = Mutex::new(Problems::new(s.trace, s.allow_truncated));
    let name = s.trace.display().to_string();
    let results: Vec<Result<Row, replayer::ReplayError>> = runs
        .par_iter()
        .map(|(label, cfg)| {
            let report = replayer::replay_events(
                &name,
                input.forked_from(),
                input.events(&problems),
                cfg,
                s.strict,
            )?;
            Ok(Row {
                config: label.clone(),
                metrics: report.metrics,
            })
        })
        .collect();
    let problems = problems.into_inner().unwrap_or_else(|e| e.into_inner());
    if problems.is_fatal() {
        return Ok(problems.exit_code());
    }
    let rows: Vec<Row> = results
        .into_iter()
        .zip(&runs)
        .map(|(r, (label, _))| r.map_err(|e| anyhow::anyhow!("{label}: {e}")))
        .collect::<Result<_>>()?;
    print_table(&rows)?;
    if let Some(p) = s.json {
        let doc = serde_json::json!({
            "schema": 1,
            "trace": s.trace.display().to_string(),
            "sweep": rows,
        });
        outputs.write("--json", p, &super::report::json_bytes(&doc)?)?;
    }
    if let (Some(p), Some(format)) = (s.chart, chart_format) {
        let bars: Vec<(String, Vec<f64>)> = rows
            .iter()
            .map(|r| {
                let v = ["peak_heap", "heap_sys"].map(|k| r.metrics.get(k).copied().unwrap_or(0.0));
                (r.config.clone(), v.to_vec())
            })
            .collect();
        let bytes = analysis::charts::config_comparison(
            format,
            "Replay under each configuration",
            &["peak HeapInuse", "HeapSys"],
            &bars,
        )?;
        outputs.write("--sweep-chart", p, &bytes)?;
        eprintln!("wrote {}", p.display());
    }
    Ok(0)
}

fn print_table(rows: &[Row]) -> std::io::Result<()> {
    let mut head = String::from("| configuration |");
    let mut rule = String::from("|---|");
    for (_, title) in COLUMNS {
        head += &format!(" {title} |");
        rule += "---:|";
    }
    crate::outln!("{head}\n{rule}");
    for r in rows {
        let mut line = format!("| {} |", r.config);
        for (key, _) in COLUMNS {
            match r.metrics.get(key) {
                Some(v) if key == "waste_pct" => line += &format!(" {v:.2} |"),
                Some(v) => line += &format!(" {} |", *v as u64),
                None => line += " – |",
            }
        }
        crate::outln!("{line}");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn axes_parse_and_combine() {
        let axes: Vec<Axis> = [
            "gogc=50,100".parse().unwrap(),
            "tiny=on,off".parse().unwrap(),
        ]
        .to_vec();
        let runs = combinations(&Config::default(), &axes, DEFAULT_LIMIT).unwrap();
        let labels: Vec<&str> = runs.iter().map(|(l, _)| l.as_str()).collect();
        assert_eq!(
            labels,
            [
                "gogc=50 tiny=on",
                "gogc=50 tiny=off",
                "gogc=100 tiny=on",
                "gogc=100 tiny=off"
            ]
        );
        assert_eq!(runs[1].1.gogc, 50);
        assert!(!runs[1].1.tiny);
        assert!(runs[2].1.tiny);
    }

    #[test]
    fn bad_axes_are_one_line_errors() {
        assert!("gogc".parse::<Axis>().is_err());
        assert!("gogc=".parse::<Axis>().is_err());
        let bad: Axis = "colour=red".parse().unwrap();
        let e = combinations(&Config::default(), &[bad], DEFAULT_LIMIT)
            .unwrap_err()
            .to_string();
        assert!(e.contains("unknown configuration key 'colour'"), "{e}");
        let bad: Axis = "gogc=lots".parse().unwrap();
        assert!(combinations(&Config::default(), &[bad], DEFAULT_LIMIT).is_err());
    }

    #[test]
    fn empty_values_are_named_and_big_sweeps_capped() {
        let e = "gogc=50,,100".parse::<Axis>().unwrap_err();
        assert!(e.contains("value 2 of 3 is empty"), "{e}");
        let big: Axis = format!(
            "gogc={}",
            (1..=30)
                .map(|n| n.to_string())
                .collect::<Vec<_>>()
                .join(",")
        )
        .parse()
        .unwrap();
        let axes = vec![big.clone(); 4];
        let e = combinations(&Config::default(), &axes, DEFAULT_LIMIT)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("810000 combinations") && e.contains("--sweep-limit"),
            "{e}"
        );
        assert_eq!(
            combinations(&Config::default(), &axes[..1], 30)
                .unwrap()
                .len(),
            30
        );
    }
}
