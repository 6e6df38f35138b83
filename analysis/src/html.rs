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
figure{margin:1em 0}svg{max-width:100%;height:auto}\
.cards{display:flex;flex-wrap:wrap;gap:.6em;margin:1em 0}\
.card{border:1px solid #ccc;border-radius:6px;padding:.5em .9em;min-width:8em;background:#fafafa}\
.card b{display:block;font-size:1.3em}.card span{font-size:.8em;color:#555}\
th.sortable{cursor:pointer}th.sortable:hover{background:#e0e0e0}\
th[aria-sort=descending]::after{content:\" \\25BC\"}th[aria-sort=ascending]::after{content:\" \\25B2\"}";

/// Click a table's header to sort by that column (numbers as numbers; again to reverse).
/// `#sort=TABLE:COLUMN` in the page's address sorts a table when it opens (largest first).
const SORT_SCRIPT: &str = r#"
function cellValue(td) {
  var t = td.textContent.trim();
  var n = Number(t.replace(/,/g, ''));
  return (t !== '' && !isNaN(n)) ? n : t.toLowerCase();
}
function sortTable(table, col, descending) {
  var rows = Array.prototype.slice.call(table.tBodies[0].rows, 1);
  rows.sort(function (a, b) {
    var x = cellValue(a.cells[col]), y = cellValue(b.cells[col]);
    var c = (typeof x === typeof y) ? (x < y ? -1 : x > y ? 1 : 0) : (typeof x === 'number' ? -1 : 1);
    return descending ? -c : c;
  });
  rows.forEach(function (r) { table.tBodies[0].appendChild(r); });
  Array.prototype.forEach.call(table.rows[0].cells, function (th, i) {
    if (i === col) th.setAttribute('aria-sort', descending ? 'descending' : 'ascending');
    else th.removeAttribute('aria-sort');
  });
}
document.querySelectorAll('table[data-name]').forEach(function (table) {
  Array.prototype.forEach.call(table.rows[0].cells, function (th, i) {
    th.className = 'sortable';
    th.addEventListener('click', function () {
      sortTable(table, i, th.getAttribute('aria-sort') !== 'descending');
    });
  });
});
var wanted = /sort=([^:&]+):([^&]+)/.exec(decodeURIComponent(location.hash));
if (wanted) {
  var table = document.querySelector('table[data-name="' + wanted[1] + '"]');
  if (table) {
    Array.prototype.forEach.call(table.rows[0].cells, function (th, i) {
      if (th.textContent === wanted[2]) sortTable(table, i, true);
    });
  }
}
"#;

/// A link that opens flame graph `flame` with `function` searched (inferno reads `?s=` as a
/// regular expression: the name is escaped, then percent-encoded).
pub fn flame_search_link(flame: &str, function: &str) -> String {
    let mut re = String::new();
    for c in function.chars() {
        if "\\^$.|?*+()[]{}".contains(c) {
            re.push('\\');
        }
        re.push(c);
    }
    let mut q = String::new();
    for b in re.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            q.push(b as char);
        } else {
            let _ = write!(q, "%{b:02X}");
        }
    }
    format!("{flame}.svg?s={q}")
}

/// `link`: for the first cell of each row, the address it links to.
fn table_html(s: &mut String, t: &Table, max_rows: usize, link: Option<&dyn Fn(&str) -> String>) {
    let _ = writeln!(
        s,
        "<h3 id=\"{}\">{}</h3>\n<table data-name=\"{}\">\n<tr>",
        esc(t.name),
        esc(t.title),
        esc(t.name)
    );
    for h in &t.header {
        let _ = write!(s, "<th>{}</th>", esc(h));
    }
    s.push_str("</tr>\n");
    for row in t.rows.iter().take(max_rows) {
        s.push_str("<tr>");
        for (i, c) in row.iter().enumerate() {
            match link {
                Some(to) if i == 0 => {
                    let _ = write!(
                        s,
                        "<td><a href=\"{}\" title=\"find it in the flame graph\">{}</a></td>",
                        esc(&to(c)),
                        esc(c)
                    );
                }
                _ => {
                    let _ = write!(s, "<td>{}</td>", esc(c));
                }
            }
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

/// A page with a title, key figures (label, value), a summary, charts and tables.
pub fn page(
    title: &str,
    key_figures: &[(String, String)],
    summary: &str,
    charts: &[Chart],
    tables: &[Table],
) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n<title>{}</title>\n<style>{STYLE}</style>\n</head>\n<body>\n<h1>{}</h1>",
        esc(title),
        esc(title)
    );
    if !key_figures.is_empty() {
        s.push_str("<div class=\"cards\">\n");
        for (label, value) in key_figures {
            let _ = writeln!(
                s,
                "<div class=\"card\"><b>{}</b><span>{}</span></div>",
                esc(value),
                esc(label)
            );
        }
        s.push_str("</div>\n");
    }
    let _ = writeln!(s, "<h2>Summary</h2>\n<pre>{}</pre>", esc(summary));
    let (flames, charts): (Vec<&Chart>, Vec<&Chart>) =
        charts.iter().partition(|c| crate::flame::is_flame(c));
    // Each allocating function links to itself in the bytes flame graph.
    let bytes_flame = flames
        .iter()
        .find(|c| c.name == format!("{}bytes", crate::flame::FLAME_PREFIX))
        .map(|c| c.name.clone());
    let to_flame =
        |function: &str| flame_search_link(bytes_flame.as_deref().unwrap_or(""), function);
    if !flames.is_empty() {
        let files = if flames.iter().any(|c| crate::flame::is_diff(c)) {
            ""
        } else {
            " Each is also a file of its own beside this page."
        };
        let _ = writeln!(
            s,
            "<h2>Flame graphs</h2>\n<p>Callers below, allocating functions on top; click a \
             frame to zoom, Search (or Ctrl-F in a graph) to highlight a function.{files}</p>",
        );
        for c in flames {
            // A comparison's graphs live in its page only; a report's are files beside it too.
            let file = if crate::flame::is_diff(c) {
                String::new()
            } else {
                format!(" ({}.svg)", c.name)
            };
            let _ = writeln!(
                s,
                "<figure id=\"{}\">\n<iframe title=\"{}\" style=\"width:100%;height:640px;border:0\" \
                 src=\"data:image/svg+xml;base64,{}\"></iframe>\n<figcaption>{}{}</figcaption>\n</figure>",
                esc(&c.name),
                esc(&c.title),
                base64::engine::general_purpose::STANDARD.encode(c.svg.as_bytes()),
                esc(&c.title),
                esc(&file)
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
            if t.name == "timeline" {
                continue;
            }
            let link: Option<&dyn Fn(&str) -> String> =
                (t.name == "call_sites_functions" && bytes_flame.is_some()).then_some(&to_flame);
            table_html(&mut s, t, 200, link);
        }
    }
    let _ = writeln!(s, "<script>{SORT_SCRIPT}</script>");
    s.push_str("</body>\n</html>\n");
    s
}

/// The figures a reader looks for first.
fn key_figures(r: &Report) -> Vec<(String, String)> {
    use crate::text::{bytes, count, ns};
    let w = &r.workload;
    let mut v = vec![
        ("events".to_string(), count(w.events)),
        ("allocations".into(), count(w.allocs)),
        ("allocated".into(), bytes(w.allocated_bytes)),
        (
            "peak live (requested)".into(),
            bytes(r.frag.peak_live_requested_bytes),
        ),
        (
            "size-class waste".into(),
            format!("{:.1}%", r.waste.waste_pct),
        ),
        (
            match r.trace.window {
                Some(_) => "live at the window's end".into(),
                None => "live at the end".into(),
            },
            count(w.live_objects_at_end),
        ),
    ];
    if r.latency.recorded {
        v.push(("allocator p99".into(), ns(r.latency.all_ns.p99)));
    }
    if let Some(h) = r.replay.as_ref().and_then(|x| x.peak_heap_inuse_bytes) {
        v.push(("replayed peak HeapInuse".into(), bytes(h)));
    }
    if let Some(f) = r
        .call_sites
        .as_ref()
        .and_then(|c| c.functions.iter().max_by_key(|f| f.figures.peak_live_bytes))
        .filter(|f| f.figures.peak_live_bytes > 0)
    {
        v.push((
            format!("holds most at the peak: {}", f.frame.function),
            bytes(f.figures.peak_live_bytes),
        ));
    }
    v
}

/// The report's page (`index.html`), charts already rendered. The caller writes it.
pub fn report_page(r: &Report, charts: &[Chart]) -> String {
    let mut title = format!("allocscope report: {}", r.trace.path);
    if let Some(w) = &r.trace.window {
        let from = w.from.as_deref().unwrap_or("start");
        let to = w.to.as_deref().unwrap_or("end");
        title.push_str(&format!(", window {from} to {to}"));
    }
    page(
        &title,
        &key_figures(r),
        &crate::text::summary(r),
        charts,
        &crate::tables::tables(r),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flame_links_escape_the_name_for_the_search_and_the_address() {
        assert_eq!(
            flame_search_link("flame-bytes", "keep_nodes"),
            "flame-bytes.svg?s=keep_nodes"
        );
        assert_eq!(
            flame_search_link("f", "operator new(unsigned long)"),
            "f.svg?s=operator%20new%5C%28unsigned%20long%5C%29"
        );
        assert_eq!(flame_search_link("f", "a<b>&c"), "f.svg?s=a%3Cb%3E%26c");
    }
}
