//! The analysis verbs (`report`, `compare`, `trend`) through the real binary, on small CSV
//! workloads whose figures are computed by hand in the comments.

mod common;
use common::{allocscope, ok};

use std::path::Path;

/// Imports `csv` as `name.atrace` in `dir` and runs `report --json name.json` plus `extra`.
fn report(dir: &Path, name: &str, csv: &str, extra: &[&str]) -> serde_json::Value {
    std::fs::write(dir.join(format!("{name}.csv")), csv).unwrap();
    ok(&allocscope(
        &[
            "import",
            &format!("{name}.csv"),
            "-o",
            &format!("{name}.atrace"),
        ],
        dir,
    ));
    let mut args = vec![
        "report".to_string(),
        format!("{name}.atrace"),
        "--json".into(),
        format!("{name}.json"),
    ];
    args.extend(extra.iter().map(|s| s.to_string()));
    let a: Vec<&str> = args.iter().map(String::as_str).collect();
    ok(&allocscope(&a, dir));
    serde_json::from_str(&std::fs::read_to_string(dir.join(format!("{name}.json"))).unwrap())
        .unwrap()
}

// Known mix under Go's table:
//   a 100 -> 112 (waste 12); b 24 -> 24 (0); c 33 -> 48 (15); d 40000 -> 5 pages 40960 (960);
//   tiny (noscan < 16): e 5 at 0..5, f 3 at 5..8, g 12 aligned 4 at 8 would end at 20: new block.
//   => 2 blocks = 32 B for 20 B requested (12 waste); realloc b -> 48 (class 48, 0 waste).
//   requested 100+24+33+40000+20+48 = 40225, rounded 112+24+48+40960+32+48 = 41224, waste 999.
const MIX: &str =
    "op,id,size\nmalloc,a,100\nmalloc,b,24\nmalloc,c,33\nmalloc,d,40000\nmalloc,e,5\n\
malloc,f,3\nmalloc,g,12\nfree,a,\nrealloc,b,48\nfree,d,\nfree,e,\nfree,f,\n";

#[test]
fn waste_of_a_known_mix() {
    let dir = tempfile::tempdir().unwrap();
    let r = report(dir.path(), "mix", MIX, &["--csv", "csv"]);
    let w = &r["waste"];
    assert_eq!(w["total_requested_bytes"], 40225);
    assert_eq!(w["total_rounded_bytes"], 41224);
    assert_eq!(w["total_waste_bytes"], 999);
    assert_eq!(w["tiny"]["blocks"], 2);
    assert_eq!(w["tiny"]["waste_bytes"], 12);
    assert_eq!(w["large"]["page_waste_bytes"], 960);
    let pct = r["metrics"]["waste_pct"].as_f64().unwrap();
    assert!((pct - 100.0 * 999.0 / 41224.0).abs() < 1e-9, "{pct}");
    let c48 = w["classes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["size_bytes"] == 48)
        .unwrap();
    assert_eq!(c48["allocs"], 2);
    assert_eq!(c48["waste_bytes"], 15);
    // Go's mksizeclasses comment gives 31.52% for the 48-byte class.
    assert!((c48["theoretical_max_waste_pct"].as_f64().unwrap() - 31.52).abs() < 0.01);
    assert_eq!(w["top_sizes"][0]["request_bytes"], 40000);
    // Peak span heap: one 8 KiB span each for classes 16 (tiny), 24, 48, 112, plus 40960.
    assert_eq!(r["metrics"]["peak_span_heap"], 4.0 * 8192.0 + 40960.0);
    let csv = std::fs::read_to_string(dir.path().join("csv/size_classes.csv")).unwrap();
    assert!(csv.starts_with("class,size_bytes,"), "{csv}");
    assert_eq!(csv.lines().count(), 4, "{csv}");
}

#[test]
fn johnstone_wilson_and_lifetimes_of_a_known_pattern() {
    // 20 objects of 97 B (class 112): live requested 1940, rounded 2240 (the rounded peak);
    // all freed; then 2040 B (class 2048): live requested 2040 (the requested peak), rounded 2048.
    // J&W = max rounded / max requested = 2240 / 2040.
    let mut csv = String::from("op,id,size\n");
    for i in 0..20 {
        csv += &format!("malloc,o{i},97\n");
    }
    for i in 0..20 {
        csv += &format!("free,o{i},\n");
    }
    csv += "malloc,big,2040\n";
    let dir = tempfile::tempdir().unwrap();
    let r = report(dir.path(), "jw", &csv, &[]);
    let m = &r["metrics"];
    assert_eq!(m["peak_live_requested"], 2040.0);
    assert_eq!(m["peak_live_rounded"], 2240.0);
    assert!((m["jw_frag"].as_f64().unwrap() - 2240.0 / 2040.0).abs() < 1e-12);
    let w = &r["workload"];
    assert_eq!(w["frees"], 20);
    assert_eq!(w["lifetime_bytes"]["count"], 20);
    // o0 sees 19 * 97 bytes allocated after it before its free; o19 none.
    assert_eq!(w["lifetime_bytes"]["max"], 19 * 97);
    assert_eq!(w["lifetime_bytes"]["p50"].as_u64().unwrap() / 97, 9);
    assert_eq!(w["temporary_objects"], 20);
    assert_eq!(w["live_objects_at_end"], 1);

    // With a replay JSON (fields missing are tolerated, but it must name a trace of as many
    // events; without a digest that is all report can check), its heap figures join the report.
    std::fs::write(
        dir.path().join("replay.json"),
        r#"{"trace":{"events":41},"model":{"peak":{"heap_inuse":16384,"live_requested":2040},"pages":{"free":10,"largest_free_run":4}},"metrics":{"peak_heap":16384}}"#,
    )
    .unwrap();
    let o = allocscope(
        &[
            "report",
            "jw.atrace",
            "--replay",
            "replay.json",
            "--json",
            "jw2.json",
        ],
        dir.path(),
    );
    ok(&o);
    let r2: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join("jw2.json")).unwrap())
            .unwrap();
    assert!((r2["metrics"]["jw_frag_replay"].as_f64().unwrap() - 16384.0 / 2040.0).abs() < 1e-12);
    assert!((r2["metrics"]["page_frag"].as_f64().unwrap() - 0.6).abs() < 1e-12);
}

#[test]
fn charts_and_html_render() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    // Latency recorded, two threads, timestamps: every chart is drawn.
    let mut csv = String::from("op,id,size,thread,ts_ns,latency_ns\n");
    for i in 0..300u64 {
        csv += &format!(
            "malloc,o{i},{},{},{},{}\n",
            8 + (i * 37) % 3000,
            i % 2,
            i * 1000,
            20 + i % 50
        );
        if i >= 10 {
            csv += &format!(
                "free,o{},,{},{},{}\n",
                i - 10,
                i % 2,
                i * 1000 + 500,
                15 + i % 7
            );
        }
    }
    report(d, "c", &csv, &["-o", "out"]);
    for name in ["timeline", "sizes", "waste", "latency"] {
        let svg = std::fs::read_to_string(d.join(format!("out/{name}.svg"))).unwrap();
        assert!(
            svg.contains("<svg") && svg.trim_end().ends_with("</svg>") && svg.len() > 2000,
            "{name}.svg"
        );
        let png = std::fs::read(d.join(format!("out/{name}.png"))).unwrap();
        assert!(
            png.starts_with(b"\x89PNG\r\n\x1a\n") && png.len() > 5000,
            "{name}.png: {} bytes",
            png.len()
        );
    }
    let html = std::fs::read_to_string(d.join("out/index.html")).unwrap();
    assert_eq!(html.matches("<svg").count(), 4);
    assert!(
        !html.contains("src=\"http") && !html.contains("href=\"http"),
        "not self-contained"
    );

    let Some(chrome) = common::chromium() else {
        return;
    };
    let url = format!("file://{}", d.join("out/index.html").display());
    let (dom, console) = common::chromium_load(&chrome, &url);
    assert!(console.is_empty(), "{console:?}");
    assert!(
        dom.contains("allocscope report") && dom.matches("<svg").count() == 4,
        "{dom}"
    );
}

fn write_result(dir: &Path, name: &str, metrics: &str) {
    std::fs::write(
        dir.join(name),
        format!("{{\"schema\":1,\"metrics\":{{{metrics}}}}}"),
    )
    .unwrap();
}

#[test]
fn compare_exit_codes() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    write_result(
        d,
        "base.json",
        r#""waste_pct":10.0,"p99_ns":100,"peak_heap":1000"#,
    );
    write_result(
        d,
        "same.json",
        r#""waste_pct":10.5,"p99_ns":109,"peak_heap":1040"#,
    );
    write_result(
        d,
        "worse.json",
        r#""waste_pct":10.5,"p99_ns":111,"peak_heap":1000"#,
    );
    let gate = "waste_pct>+1,p99_ns>+10%,peak_heap>+5%";
    let o = allocscope(&["compare", "base.json", "same.json", "--fail-if", gate], d);
    assert_eq!(o.status.code(), Some(0));
    let md = String::from_utf8_lossy(&o.stdout);
    assert!(
        md.contains("| metric | base | new | change | limit | verdict |"),
        "{md}"
    );
    let o = allocscope(
        &["compare", "base.json", "worse.json", "--fail-if", gate],
        d,
    );
    assert_eq!(o.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&o.stdout).contains("| p99_ns | 100 | 111 |"));
    for bad in [
        vec!["compare", "base.json", "missing.json"],
        vec!["compare", "base.json", "same.json", "--fail-if", "nope>+1"],
        vec![
            "compare",
            "base.json",
            "same.json",
            "--fail-if",
            "waste_pct>>1",
        ],
    ] {
        let o = allocscope(&bad, d);
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(2), "{bad:?}: {err}");
        assert_eq!(err.lines().count(), 1, "{err}");
    }
    std::fs::write(d.join("junk.json"), "{not json").unwrap();
    assert_eq!(
        allocscope(&["compare", "base.json", "junk.json"], d)
            .status
            .code(),
        Some(2)
    );
}

#[test]
fn trend_over_a_generated_history() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let mut files = Vec::new();
    for (i, heap) in [1000, 1010, 1200, 1190, 1195].iter().enumerate() {
        let name = format!("r{i}.json");
        std::fs::write(
            d.join(&name),
            format!(
                r#"{{"commit":"c{i}","metrics":{{"peak_heap":{heap},"waste_pct":{}}}}}"#,
                10 + i
            ),
        )
        .unwrap();
        files.push(name);
    }
    let mut args = vec!["trend"];
    args.extend(files.iter().map(String::as_str));
    args.extend([
        "-o",
        "trend.svg",
        "--metrics",
        "peak_heap,waste_pct",
        "--fail-if",
        "peak_heap>+5%",
    ]);
    let o = allocscope(&args, d);
    ok(&o);
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(
        out.contains("| peak_heap | 1000 | 1010 | 1200 ❌ | 1190 | 1195 |"),
        "{out}"
    );
    let svg = std::fs::read_to_string(d.join("trend.svg")).unwrap();
    assert!(svg.contains("<svg") && svg.contains("c2") && svg.contains("waste_pct"));
    // The newest result regressing makes the exit 1.
    std::fs::write(
        d.join("r5.json"),
        r#"{"metrics":{"peak_heap":1300,"waste_pct":1}}"#,
    )
    .unwrap();
    let o = allocscope(
        &[
            "trend",
            "r4.json",
            "r5.json",
            "-o",
            "t.png",
            "--fail-if",
            "peak_heap>+5%",
        ],
        d,
    );
    assert_eq!(
        o.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let png = std::fs::read(d.join("t.png")).unwrap();
    assert!(png.starts_with(b"\x89PNG") && png.len() > 5000);
}
