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
