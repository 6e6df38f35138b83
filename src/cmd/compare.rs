//! `allocscope compare BASE.json NEW.json [--fail-if LIMITS]`: a markdown table of the two
//! results' `metrics` (replay or report JSON) and, for two reports with call sites, the
//! functions whose bytes, peak, waste and calls grew most (and with `--html`, differential
//! flame graphs); exit 1 when a limit is crossed, 0
//! otherwise, 2 on bad input. Limit grammar in `analysis::compare`; a function's figures are
//! metrics too (`site.FUNCTION.bytes`, for each report's top functions).

use std::path::PathBuf;

use anyhow::Result;

use super::output::Outputs;

#[derive(clap::Args)]
#[command(after_help = super::OVERWRITE_HELP)]
pub struct Args {
    /// The baseline result: the JSON that `replay --json` or `report --json` writes (it has a
    /// `metrics` map).
    base: PathBuf,
    /// The new result.
    new: PathBuf,
    /// Limits, e.g. 'waste_pct>+1,p99_ns>+10%,peak_heap>+5%': +N is an absolute increase, +N% a
    /// relative one, a bare N the new value; use < with -N / -N% for metrics that must not fall.
    #[arg(long, value_name = "LIMITS", allow_hyphen_values = true)]
    fail_if: Option<String>,
    /// Also write the markdown table to FILE (for a PR comment); replaced if it exists.
    #[arg(long, value_name = "FILE")]
    markdown: Option<PathBuf>,
    /// Also write the comparison as one self-contained HTML page: the table, and for two
    /// reports with call sites differential flame graphs (red: grew, blue: shrank).
    #[arg(long, value_name = "FILE")]
    html: Option<PathBuf>,
}

pub fn run(args: Args) -> Result<i32> {
    use analysis::compare;
    use analysis::replay_json::{metrics, read_json};
    let outputs = Outputs::new()
        .input("the baseline result", &args.base)
        .input("the new result", &args.new);
    for (flag, p) in [("--markdown", &args.markdown), ("--html", &args.html)] {
        if let Some(p) = p {
            outputs.check(flag, p)?;
        }
    }
    let limits = match &args.fail_if {
        Some(e) => compare::parse_limits(e)?,
        None => Vec::new(),
    };
    let (base_doc, new_doc) = (read_json(&args.base)?, read_json(&args.new)?);
    let base = metrics(&args.base, &base_doc)?;
    let new = metrics(&args.new, &new_doc)?;
    let rows = compare::compare(&base, &new, &limits)?;
    let mut md = compare::markdown(
        &rows,
        &args.base.display().to_string(),
        &args.new.display().to_string(),
    );
    // Two reports: their call sites too (a replay JSON has none, and says nothing).
    if base_doc.get("kind").and_then(|k| k.as_str()) == Some("report")
        && new_doc.get("kind").and_then(|k| k.as_str()) == Some("report")
    {
        md.push_str(&compare::sites_markdown(&compare::site_rows(
            &base_doc, &new_doc,
        )));
    }
    if let Some(p) = &args.markdown {
        outputs.write("--markdown", p, md.as_bytes())?;
    }
    if let Some(p) = &args.html {
        let (b, n) = (args.base.display(), args.new.display());
        let page = compare::page(
            &rows,
            &md,
            (&b.to_string(), &base_doc),
            (&n.to_string(), &new_doc),
        )?;
        outputs.write("--html", p, page.as_bytes())?;
    }
    crate::out!("{md}");
    Ok(if rows.iter().any(|r| r.crossed) { 1 } else { 0 })
}
