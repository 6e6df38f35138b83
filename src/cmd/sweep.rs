//! `allocscope replay --sweep KEY=V1,V2,...`: the same trace replayed under every combination of
//! configuration values, in parallel (rayon), with a side-by-side table and chart.
//!
//! Any key of the replay configuration can be swept (`gogc`, `gomemlimit`, `size_classes`,
//! `page_size`, `tiny`, `tiny_block`, `free_policy`, `pointers`, `procs`, ...): a value is set on
//! the configuration's serialised form and read back through the same validation as a TOML file,
//! so a sweep accepts exactly what `--config` accepts. The memory results are deterministic, so
//! running the configurations in parallel changes nothing but the wall time.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use rayon::prelude::*;
use replayer::Config;
use serde::Serialize;

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
        let values: Vec<String> = values
            .split(',')
            .map(|v| v.trim().to_string())
            .filter(|v| !v.is_empty())
            .collect();
        if key.trim().is_empty() || values.is_empty() {
            return Err(format!("'{s}' needs a key and at least one value"));
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

/// Every combination of the axes' values, with a label like "gogc=50 tiny=off".
fn combinations(base: &Config, axes: &[Axis]) -> Result<Vec<(String, Config)>> {
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

/// Runs the sweep and prints the table; writes JSON and a chart when asked.
pub fn run(
    trace: &Path,
    base: &Config,
    axes: &[Axis],
    strict: bool,
    json: Option<&PathBuf>,
    chart: Option<&PathBuf>,
) -> Result<i32> {
    let runs = combinations(base, axes)?;
    eprintln!(
        "replaying {} under {} configurations",
        trace.display(),
        runs.len()
    );
    // A CSV workload is imported once; a trace file is read by each run.
    let csv_trace = if super::replay::is_csv(trace) {
        Some(super::replay::csv_trace(trace)?)
    } else {
        None
    };
    let name = trace.display().to_string();
    let results: Vec<Result<Row>> = runs
        .par_iter()
        .map(|(label, cfg)| {
            let report = match &csv_trace {
                Some(reader) => replayer::replay(&name, reader.events(), cfg, strict),
                None => replayer::replay_file(trace, cfg, strict),
            }
            .with_context(|| label.clone())?;
            Ok(Row {
                config: label.clone(),
                metrics: report.metrics,
            })
        })
        .collect();
    let rows: Vec<Row> = results.into_iter().collect::<Result<_>>()?;
    print_table(&rows);
    if let Some(p) = json {
        let doc =
            serde_json::json!({ "schema": 1, "trace": trace.display().to_string(), "sweep": rows });
        std::fs::write(p, serde_json::to_string_pretty(&doc)? + "\n")
            .with_context(|| format!("cannot write {}", p.display()))?;
    }
    if let Some(p) = chart {
        let bars: Vec<(String, Vec<f64>)> = rows
            .iter()
            .map(|r| {
                let v = ["peak_heap", "heap_sys"].map(|k| r.metrics.get(k).copied().unwrap_or(0.0));
                (r.config.clone(), v.to_vec())
            })
            .collect();
        analysis::charts::config_comparison(
            p,
            "Replay under each configuration",
            &["peak HeapInuse", "HeapSys"],
            &bars,
        )?;
        eprintln!("wrote {}", p.display());
    }
    Ok(0)
}

fn print_table(rows: &[Row]) {
    let mut head = String::from("| configuration |");
    let mut rule = String::from("|---|");
    for (_, title) in COLUMNS {
        head += &format!(" {title} |");
        rule += "---:|";
    }
    println!("{head}\n{rule}");
    for r in rows {
        let mut line = format!("| {} |", r.config);
        for (key, _) in COLUMNS {
            match r.metrics.get(key) {
                Some(v) if key == "waste_pct" => line += &format!(" {v:.2} |"),
                Some(v) => line += &format!(" {} |", *v as u64),
                None => line += " – |",
            }
        }
        println!("{line}");
    }
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
        let runs = combinations(&Config::default(), &axes).unwrap();
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
        let e = combinations(&Config::default(), &[bad])
            .unwrap_err()
            .to_string();
        assert!(e.contains("unknown configuration key 'colour'"), "{e}");
        let bad: Axis = "gogc=lots".parse().unwrap();
        assert!(combinations(&Config::default(), &[bad]).is_err());
    }
}
