//! The one-page HTML report: charts inline as SVG, tables as HTML, no outside resources (no
//! fonts or links), so the file can be mailed or attached to a CI run as it is. Flame graphs
//! carry inferno's script (search, zoom), which expects a document of its own: each is a frame
//! whose source is the SVG itself as a data: URI.

use std::fmt::Write;

use base64::Engine;

use crate::analyze::Report;
use crate::charts::Chart;
use crate::tables::Table;

/// Escapes text for HTML.
pub fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

const STYLE: &str = "body{font-family:sans-serif;margin:2em;color:#222;max-width:1100px}\
h1{font-size:1.5em}h2{font-size:1.2em;margin-top:2em;border-bottom:1px solid #ccc}\
table{border-collapse:collapse;margin:.5em 0;font-size:.85em}\
td,th{border:1px solid #ccc;padding:2px 8px;text-align:right}th{background:#f0f0f0}\
td:first-child,th:first-child{text-align:left}pre{background:#f7f7f7;padding:1em;overflow-x:auto}\
figure{margin:1em 0}svg{max-width:100%;height:auto}";

fn table_html(s: &mut String, t: &Table, max_rows: usize) {
    let _ = writeln!(s, "<h3>{}</h3>\n<table>\n<tr>", esc(t.title));
    for h in &t.header {
        let _ = write!(s, "<th>{}</th>", esc(h));
    }
    s.push_str("</tr>\n");
    for row in t.rows.iter().take(max_rows) {
        s.push_str("<tr>");
        for c in row {
            let _ = write!(s, "<td>{}</td>", esc(c));
        }
        s.push_str("</tr>\n");
    }
    s.push_str("</table>\n");
    if t.rows.len() > max_rows {
        let _ = writeln!(
            s,
            "<p>{} more rows in {}.csv</p>",
            t.rows.len() - max_rows,
            t.name
        );
    }
}

/// A page with a title, a summary, charts and tables.
pub fn page(title: &str, summary: &str, charts: &[Chart], tables: &[Table]) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n<title>{}</title>\n<style>{STYLE}</style>\n</head>\n<body>\n<h1>{}</h1>",
        esc(title),
        esc(title)
    );
    let _ = writeln!(s, "<h2>Summary</h2>\n<pre>{}</pre>", esc(summary));
    let (flames, charts): (Vec<&Chart>, Vec<&Chart>) =
        charts.iter().partition(|c| crate::flame::is_flame(c));
    if !flames.is_empty() {
        s.push_str(
            "<h2>Flame graphs</h2>\n<p>Callers below, allocating functions on top; click a \
             frame to zoom, Search (or Ctrl-F in a graph) to highlight a function. Each is also \
             a file of its own beside this page.</p>\n",
        );
        for c in flames {
            let _ = writeln!(
                s,
                "<figure id=\"{}\">\n<iframe title=\"{}\" style=\"width:100%;height:640px;border:0\" \
                 src=\"data:image/svg+xml;base64,{}\"></iframe>\n<figcaption>{} ({}.svg)</figcaption>\n</figure>",
                esc(&c.name),
                esc(&c.title),
                base64::engine::general_purpose::STANDARD.encode(c.svg.as_bytes()),
                esc(&c.title),
                esc(&c.name)
            );
        }
    }
    if !charts.is_empty() {
        s.push_str("<h2>Charts</h2>\n");
        for c in charts {
            let _ = writeln!(
                s,
                "<figure id=\"{}\">\n{}\n<figcaption>{}</figcaption>\n</figure>",
                esc(&c.name),
                c.svg,
                esc(&c.title)
            );
        }
    }
    if !tables.is_empty() {
        s.push_str("<h2>Tables</h2>\n");
        for t in tables {
            if t.name != "timeline" {
                table_html(&mut s, t, 200);
            }
        }
    }
    s.push_str("</body>\n</html>\n");
    s
}

/// The report's page (`index.html`), charts already rendered. The caller writes it.
pub fn report_page(r: &Report, charts: &[Chart]) -> String {
    let title = format!("allocscope report: {}", r.trace.path);
    page(
        &title,
        &crate::text::summary(r),
        charts,
        &crate::tables::tables(r),
    )
}
