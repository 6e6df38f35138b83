//! `compare`: two results' flat `metrics` maps side by side, gated by `--fail-if` limits.
//!
//! Limit grammar: comma-separated `METRIC OP LIMIT`, OP `>` (fail when it rises past the limit)
//! or `<` (fail when it falls past it). LIMIT is `+N` / `-N` (an absolute change), `+N%` / `-N%`
//! (a change relative to the base), or a bare `N` (the new value itself). Examples:
//! `waste_pct>+1` (more than one point up), `p99_ns>+10%`, `alloc_rate_per_s<-5%`, `num_gc>100`.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::{AnalysisError, Result};

#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub enum Dir {
    Above,
    Below,
}

#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub enum Amount {
    /// new - base, in the metric's unit.
    Change(f64),
    /// (new - base) / |base| * 100.
    Percent(f64),
    /// The new value.
    Value(f64),
}

/// One parsed limit.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Limit {
    pub metric: String,
    pub dir: Dir,
    pub amount: Amount,
    /// As the user wrote it.
    pub text: String,
}

/// Parses a `--fail-if` expression.
pub fn parse_limits(expr: &str) -> Result<Vec<Limit>> {
    let mut out = Vec::new();
    for part in expr.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let bad = |why: &str| {
            AnalysisError::Expr(format!(
                "'{part}': {why} (expected METRIC>+N, METRIC>+N% or METRIC<-N%)"
            ))
        };
        let (i, dir) = match (part.find('>'), part.find('<')) {
            (Some(i), None) => (i, Dir::Above),
            (None, Some(i)) => (i, Dir::Below),
            _ => return Err(bad("needs exactly one of > or <")),
        };
        let metric = part[..i].trim();
        if metric.is_empty()
            || !metric
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '.')
        {
            return Err(bad("bad metric name"));
        }
        let mut lim = part[i + 1..].trim();
        let percent = lim.ends_with('%');
        if percent {
            lim = lim[..lim.len() - 1].trim();
        }
        let signed = lim.starts_with('+') || lim.starts_with('-');
        let n: f64 = lim.parse().map_err(|_| bad("the limit is not a number"))?;
        if !n.is_finite() {
            return Err(bad("the limit is not a finite number"));
        }
        let amount = match (signed, percent) {
            (_, true) => Amount::Percent(n),
            (true, false) => Amount::Change(n),
            (false, false) => Amount::Value(n),
        };
        out.push(Limit {
            metric: metric.to_string(),
            dir,
            amount,
            text: part.to_string(),
        });
    }
    if out.is_empty() {
        return Err(AnalysisError::Expr("empty expression".into()));
    }
    Ok(out)
}

impl Limit {
    /// True when going from `base` to `new` crosses this limit.
    pub fn crossed(&self, base: f64, new: f64) -> bool {
        let (x, lim) = match self.amount {
            Amount::Change(n) => (new - base, n),
            Amount::Value(n) => (new, n),
            Amount::Percent(n) => {
                if base == 0.0 {
                    // Any move away from zero is an infinite relative change.
                    let x = if new == base {
                        0.0
                    } else {
                        f64::INFINITY.copysign(new - base)
                    };
                    (x, n)
                } else {
                    ((new - base) / base.abs() * 100.0, n)
                }
            }
        };
        match self.dir {
            Dir::Above => x > lim,
            Dir::Below => x < lim,
        }
    }
}

/// One row of a comparison.
#[derive(Clone, Debug, Serialize)]
pub struct Row {
    pub metric: String,
    pub base: Option<f64>,
    pub new: Option<f64>,
    pub limits: Vec<String>,
    pub crossed: bool,
}

/// Compares two metric maps. Every limit must name a metric present in both (else an error).
pub fn compare(
    base: &BTreeMap<String, f64>,
    new: &BTreeMap<String, f64>,
    limits: &[Limit],
) -> Result<Vec<Row>> {
    for l in limits {
        if !base.contains_key(&l.metric) || !new.contains_key(&l.metric) {
            let mut known: Vec<&str> = base
                .keys()
                .filter(|k| new.contains_key(*k))
                .map(String::as_str)
                .collect();
            known.truncate(30);
            return Err(AnalysisError::Expr(format!(
                "unknown metric '{}' (in both files: {})",
                l.metric,
                known.join(", ")
            )));
        }
    }
    let mut names: Vec<&String> = base.keys().chain(new.keys()).collect();
    names.sort();
    names.dedup();
    Ok(names
        .into_iter()
        .map(|m| {
            let b = base.get(m).copied();
            let n = new.get(m).copied();
            let mine: Vec<&Limit> = limits.iter().filter(|l| &l.metric == m).collect();
            let crossed = match (b, n) {
                (Some(b), Some(n)) => mine.iter().any(|l| l.crossed(b, n)),
                _ => false,
            };
            Row {
                metric: m.clone(),
                base: b,
                new: n,
                limits: mine.iter().map(|l| l.text.clone()).collect(),
                crossed,
            }
        })
        .collect())
}

/// A number for a table: integers without decimals, others with up to 4 significant decimals.
pub fn num(v: f64) -> String {
    if v.fract() == 0.0 && v.abs() < 1e15 {
        format!("{}", v as i64)
    } else if v.abs() >= 100.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.4}")
            .trim_end_matches('0')
            .trim_end_matches('.')
            .to_string()
    }
}

fn change(b: f64, n: f64) -> String {
    let d = n - b;
    if d == 0.0 {
        return "0".into();
    }
    let abs = if d >= 0.0 {
        format!("+{}", num(d))
    } else {
        num(d)
    };
    if b != 0.0 {
        format!("{abs} ({:+.1}%)", d / b.abs() * 100.0)
    } else {
        abs
    }
}

/// The markdown table (gated rows first, then the others).
pub fn markdown(rows: &[Row], base_name: &str, new_name: &str) -> String {
    let crossed = rows.iter().filter(|r| r.crossed).count();
    let mut s = String::new();
    s.push_str(&format!("### allocscope: `{base_name}` → `{new_name}`\n\n"));
    s.push_str(if crossed > 0 {
        "**Regression:** a limit was crossed.\n\n"
    } else {
        "No limit crossed.\n\n"
    });
    s.push_str(
        "| metric | base | new | change | limit | verdict |\n|---|---:|---:|---:|---|---|\n",
    );
    let mut ordered: Vec<&Row> = rows.iter().filter(|r| !r.limits.is_empty()).collect();
    ordered.extend(rows.iter().filter(|r| r.limits.is_empty()));
    for r in ordered {
        let f = |v: Option<f64>| v.map_or("–".to_string(), num);
        let ch = match (r.base, r.new) {
            (Some(b), Some(n)) => change(b, n),
            _ => "–".into(),
        };
        let verdict = if r.limits.is_empty() {
            ""
        } else if r.crossed {
            "❌ regression"
        } else {
            "✅ ok"
        };
        s.push_str(&format!(
            "| {} | {} | {} | {} | {} | {} |\n",
            r.metric,
            f(r.base),
            f(r.new),
            ch,
            r.limits.join(", "),
            verdict
        ));
    }
    s
}

/// Rows of the call-site section of a comparison, per figure.
pub const SITE_ROWS: usize = 10;

/// One allocating function in two reports.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct SiteRow {
    pub function: String,
    /// (base, new) per figure; 0 where a report does not list the function.
    pub allocs: (u64, u64),
    pub bytes: (u64, u64),
    pub peak_live_bytes: (u64, u64),
    pub waste_bytes: (u64, u64),
}

/// The call sites of two report JSONs, joined by function; or why there are none to compare
/// (one line: a report without `call_sites`, or recorded without stacks).
pub fn site_rows(
    base: &serde_json::Value,
    new: &serde_json::Value,
) -> std::result::Result<Vec<SiteRow>, String> {
    fn functions(v: &serde_json::Value) -> Option<&Vec<serde_json::Value>> {
        let c = v.get("call_sites")?;
        if c.get("recorded")? != true {
            return None;
        }
        c.get("functions")?.as_array()
    }
    let (Some(b), Some(n)) = (functions(base), functions(new)) else {
        let which = match (functions(base).is_some(), functions(new).is_some()) {
            (false, false) => "neither report has",
            (false, true) => "the baseline has no",
            _ => "the new report has no",
        };
        return Err(format!(
            "call sites not compared: {which} call sites (a report of a trace recorded with \
             stacks has them)"
        ));
    };
    let mut rows: BTreeMap<String, SiteRow> = BTreeMap::new();
    for (side, list) in [(0, b), (1, n)] {
        for f in list {
            let Some(name) = f.get("function").and_then(serde_json::Value::as_str) else {
                continue;
            };
            let row = rows.entry(name.to_string()).or_insert_with(|| SiteRow {
                function: name.to_string(),
                allocs: (0, 0),
                bytes: (0, 0),
                peak_live_bytes: (0, 0),
                waste_bytes: (0, 0),
            });
            let get = |k: &str| f.get(k).and_then(serde_json::Value::as_u64).unwrap_or(0);
            for (slot, key) in [
                (&mut row.allocs, "allocs"),
                (&mut row.bytes, "bytes"),
                (&mut row.peak_live_bytes, "peak_live_bytes"),
                (&mut row.waste_bytes, "waste_bytes"),
            ] {
                if side == 0 {
                    slot.0 += get(key);
                } else {
                    slot.1 += get(key);
                }
            }
        }
    }
    Ok(rows.into_values().collect())
}

/// The folded lines of a report JSON's listed call stacks (`call_sites.stacks`: the top stacks
/// by each figure, see [`crate::callsites`]) weighted by `figure` (a key of a stack's figures:
/// `bytes`, `peak_live_bytes`, ...). Empty for a report without call sites.
pub fn report_folded(doc: &serde_json::Value, figure: &str) -> Vec<(String, u64)> {
    let Some(stacks) = doc
        .pointer("/call_sites/stacks")
        .and_then(serde_json::Value::as_array)
    else {
        return Vec::new();
    };
    let mut lines: BTreeMap<String, u64> = BTreeMap::new();
    for s in stacks {
        let n = s
            .get(figure)
            .and_then(serde_json::Value::as_u64)
            .unwrap_or(0);
        let Some(frames) = s.get("frames").and_then(serde_json::Value::as_array) else {
            continue;
        };
        if n == 0 || frames.is_empty() {
            continue;
        }
        let names = frames.iter().map(|f| {
            f.get("function")
                .and_then(serde_json::Value::as_str)
                .unwrap_or("?")
        });
        *lines.entry(crate::folded::join(names)).or_default() += n;
    }
    lines.into_iter().collect()
}

/// Metrics shown as key figures at the top of the comparison page, when both results have them.
const PAGE_FIGURES: [&str; 6] = [
    "allocated_bytes",
    "peak_live_requested",
    "waste_pct",
    "recorded_p99_ns",
    "peak_heap",
    "temporary_pct",
];

/// The comparison as one self-contained HTML page (`compare --html`): the key metrics, the
/// markdown text, and for two reports with call sites differential flame graphs of bytes
/// allocated, bytes at the peak and waste over their listed stacks.
pub fn page(
    rows: &[Row],
    markdown: &str,
    (base_name, base): (&str, &serde_json::Value),
    (new_name, new): (&str, &serde_json::Value),
) -> std::io::Result<String> {
    let mut figures: Vec<(String, String)> = PAGE_FIGURES
        .iter()
        .filter_map(|&m| {
            let r = rows.iter().find(|r| r.metric == m)?;
            let (b, n) = (r.base?, r.new?);
            let change = if b != 0.0 {
                format!(" ({:+.1}%)", 100.0 * (n - b) / b.abs())
            } else {
                String::new()
            };
            Some((m.to_string(), format!("{} → {}{change}", num(b), num(n))))
        })
        .collect();
    let crossed = rows.iter().filter(|r| r.crossed).count();
    if rows.iter().any(|r| !r.limits.is_empty()) {
        figures.push(("limits crossed".into(), crossed.to_string()));
    }
    let mut charts = Vec::new();
    for (figure, name, title) in [
        ("bytes", "bytes", "Bytes allocated"),
        ("peak_live_bytes", "peak", "Bytes live at the peak"),
        ("waste_bytes", "waste", "Size-class waste"),
    ] {
        let caption = format!(
            "{title}, by call stack: frames as wide as in {new_name}, red where they grew and \
             blue where they shrank since {base_name} (over the stacks each report lists)"
        );
        let title = format!("{title}: {base_name} → {new_name}");
        let (b, n) = (report_folded(base, figure), report_folded(new, figure));
        if let Some(c) = crate::flame::diff_flame_graph(&b, &n, name, (&title, &caption), "bytes")?
        {
            charts.push(c);
        }
    }
    Ok(crate::html::page(
        &format!("allocscope compare: {base_name} → {new_name}"),
        &figures,
        markdown,
        &charts,
        &[],
    ))
}

/// The markdown section of the call sites that grew most: per figure (bytes allocated, bytes
/// at the peak, waste), the [`SITE_ROWS`] functions with the largest increase.
pub fn sites_markdown(rows: &std::result::Result<Vec<SiteRow>, String>) -> String {
    let rows = match rows {
        Ok(rows) => rows,
        Err(why) => return format!("\n{why}\n"),
    };
    let mut s = String::new();
    type Figure = fn(&SiteRow) -> (u64, u64);
    let figures: [(&str, Figure); 4] = [
        ("bytes allocated", |r| r.bytes),
        ("bytes live at the peak", |r| r.peak_live_bytes),
        ("size-class waste", |r| r.waste_bytes),
        ("allocating calls", |r| r.allocs),
    ];
    for (what, figure) in figures {
        let mut grew: Vec<(&SiteRow, i128)> = rows
            .iter()
            .map(|r| {
                let (b, n) = figure(r);
                (r, n as i128 - b as i128)
            })
            .filter(|&(_, d)| d > 0)
            .collect();
        grew.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.function.cmp(&b.0.function)));
        s.push_str(&format!("\n#### Call sites whose {what} grew most\n\n"));
        if grew.is_empty() {
            s.push_str("None grew.\n");
            continue;
        }
        s.push_str("| function | base | new | change |\n|---|---:|---:|---:|\n");
        for (r, _) in grew.iter().take(SITE_ROWS) {
            let (b, n) = figure(r);
            s.push_str(&format!(
                "| `{}` | {} | {} | {} |\n",
                r.function.replace('|', "\\|").replace('`', "'"),
                b,
                n,
                change(b as f64, n as f64)
            ));
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_gates() {
        let l =
            parse_limits("waste_pct>+1, p99_ns>+10%,peak_heap>+5%, rate<-5%, num_gc>100").unwrap();
        assert_eq!(l.len(), 5);
        assert_eq!(l[0].amount, Amount::Change(1.0));
        assert!(l[0].crossed(10.0, 11.5));
        assert!(!l[0].crossed(10.0, 11.0));
        assert!(l[1].crossed(100.0, 111.0));
        assert!(!l[1].crossed(100.0, 109.0));
        assert!(l[3].crossed(100.0, 94.0));
        assert!(!l[3].crossed(100.0, 96.0));
        assert!(l[4].crossed(0.0, 101.0));
        assert!(l[1].crossed(0.0, 1.0));
        assert!(!l[1].crossed(0.0, 0.0));
    }

    #[test]
    fn call_sites_that_grew_most_and_reports_without_them() {
        let report = |sites: &str| -> serde_json::Value {
            serde_json::from_str(&format!(
                r#"{{"metrics":{{}},"call_sites":{{"recorded":true,"functions":[{sites}]}}}}"#
            ))
            .unwrap()
        };
        let base = report(
            r#"{"function":"a","allocs":10,"bytes":100,"peak_live_bytes":50,"waste_bytes":5},
               {"function":"gone","allocs":1,"bytes":7,"peak_live_bytes":0,"waste_bytes":0}"#,
        );
        let new = report(
            r#"{"function":"a","allocs":10,"bytes":300,"peak_live_bytes":40,"waste_bytes":5},
               {"function":"b|c","allocs":2,"bytes":20,"peak_live_bytes":20,"waste_bytes":1}"#,
        );
        let rows = site_rows(&base, &new).unwrap();
        assert_eq!(rows.len(), 3);
        let md = sites_markdown(&Ok(rows));
        let bytes = md.split("#### ").nth(1).unwrap();
        assert!(
            bytes.contains("| `a` | 100 | 300 | +200 (+200.0%) |"),
            "{md}"
        );
        assert!(
            bytes.find("`a`").unwrap() < bytes.find("`b\\|c`").unwrap(),
            "{md}"
        );
        let peak = md.split("#### ").nth(2).unwrap();
        assert!(!peak.contains("`a`") && peak.contains("`b\\|c`"), "{md}");
        let without: serde_json::Value = serde_json::from_str(r#"{"metrics":{}}"#).unwrap();
        let why = site_rows(&without, &new).unwrap_err();
        assert!(why.contains("the baseline has no call sites"), "{why}");
        assert_eq!(sites_markdown(&Err(why.clone())).trim(), why);
    }

    #[test]
    fn bad_expressions_are_errors() {
        for e in [
            "",
            "waste_pct",
            "waste_pct>>1",
            "a>b",
            "x>+1%%",
            "a<>1",
            ">1",
        ] {
            assert!(parse_limits(e).is_err(), "{e}");
        }
    }
}
