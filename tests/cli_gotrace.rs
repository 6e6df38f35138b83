//! `allocscope import` of Go execution traces through the real binary: real Go programs built
//! with the toolchain CI installs (tests/go/allocprog), then info, report, replay and export of
//! the result; and bad Go traces, each refused with one line and no file left behind.

mod common;

use std::path::Path;

use common::{allocscope, allocscope_measured, go, ok, stderr};

fn json_of(path: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

/// The side file's summary line.
fn side_summary(trace: &Path) -> serde_json::Value {
    let text = std::fs::read_to_string(format!("{}.go.jsonl", trace.display())).unwrap();
    let last = text.lines().last().unwrap();
    let v: serde_json::Value = serde_json::from_str(last).unwrap();
    assert_eq!(v["k"], "summary");
    v
}

/// Files in `dir` other than `keep`.
fn others(dir: &Path, keep: &[&str]) -> Vec<String> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| !keep.contains(&n.as_str()))
        .collect()
}

#[test]
fn a_go_programs_trace_imports_reports_and_replays() {
    let Some(bin) = go::allocprog() else { return };
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("json.out");
    let real = go::run(&bin, "json", 3000, &out, &[go::ALLOC_FREE]);
    let o = allocscope(&["import", "json.out", "-o", "t.atrace"], dir.path());
    ok(&o);
    let said = stderr(&o);
    assert!(
        said.contains("heap objects") && said.contains("died at or before"),
        "{said}"
    );

    // info: a finished trace with as many mallocs as the runtime made objects in the window
    // (the tiny ones included), plus the snapshot and the runtime's own few at the edges.
    let o = allocscope(&["info", "t.atrace", "--json"], dir.path());
    let info: serde_json::Value = serde_json::from_str(&ok(&o)).unwrap();
    assert_eq!(info["recording_end"]["how"], "complete");
    let mallocs = info["stats"]["per_op"]["malloc"].as_u64().unwrap();
    let summary = side_summary(&dir.path().join("t.atrace"));
    let snapshot = summary["counts"]["snapshot_objects"].as_u64().unwrap();
    let runtime = real["allocs"].as_u64().unwrap() + real["tiny"].as_u64().unwrap();
    assert!(
        (mallocs - snapshot).abs_diff(runtime) <= 64,
        "{mallocs} mallocs - {snapshot} snapshot vs {runtime} by the runtime"
    );
    assert_eq!(summary["anomalies"]["unknown_frees"], 0);

    // report: the per-Go-type view names the program's own type.
    let o = allocscope(&["report", "t.atrace", "--json", "r.json"], dir.path());
    let text = ok(&o);
    assert!(text.contains("Go types"), "{text}");
    let r = json_of(&dir.path().join("r.json"));
    let types = r["go_types"]["types"].as_array().unwrap();
    let rec = types
        .iter()
        .find(|t| t["name"] == "main.record")
        .expect("main.record in the per-type view");
    assert!(rec["allocs"].as_u64().unwrap() >= 3000);
    assert!(rec["pointers"].as_bool().unwrap());

    // replay: end to end, with the trace's pointer kinds and GOMAXPROCS by default.
    let o = allocscope(
        &[
            "replay",
            "t.atrace",
            "--no-timing",
            "--json",
            "p.json",
            "-q",
        ],
        dir.path(),
    );
    ok(&o);
    assert!(stderr(&o).is_empty(), "{}", stderr(&o));
    let p = json_of(&dir.path().join("p.json"));
    assert_eq!(p["config"]["procs"], 2);
    assert_eq!(p["go_memstats"]["mallocs"].as_u64().unwrap(), mallocs);
    let o = allocscope(&["replay", "t.atrace", "--no-timing"], dir.path());
    assert!(stderr(&o).contains("imported from Go"), "{}", stderr(&o));

    // export --format spans: the runtime's spans, one row each, from the heap's first page.
    let o = allocscope(
        &["export", "t.atrace", "--format", "spans", "-o", "s.csv"],
        dir.path(),
    );
    ok(&o);
    let csv = std::fs::read_to_string(dir.path().join("s.csv")).unwrap();
    let mut lines = csv.lines();
    assert_eq!(lines.next(), Some("n,event,op,page,npages,span_class"));
    let rows: Vec<Vec<String>> = lines
        .map(|l| l.split(',').map(str::to_owned).collect())
        .collect();
    let allocs = rows.iter().filter(|r| r[2] == "alloc").count() as u64;
    assert_eq!(allocs, summary["counts"]["span_allocs"].as_u64().unwrap());
    assert!(rows.iter().any(|r| r[2] == "exists"));
    assert!(rows.iter().any(|r| r[2] != "free" && r[3] == "0"));
    let events: Vec<u64> = rows.iter().map(|r| r[1].parse().unwrap()).collect();
    assert!(events.windows(2).all(|w| w[0] <= w[1]));
}

#[test]
fn export_spans_needs_a_go_import() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("w.csv"), "op,id,size\nmalloc,a,10\n").unwrap();
    ok(&allocscope(
        &["import", "w.csv", "-o", "t.atrace"],
        dir.path(),
    ));
    let o = allocscope(&["export", "t.atrace", "--format", "spans"], dir.path());
    assert_eq!(o.status.code(), Some(2));
    let e = stderr(&o);
    assert!(
        e.contains("needs a trace imported from a Go execution trace"),
        "{e}"
    );
    assert_eq!(e.lines().count(), 1, "{e}");
}

#[test]
fn frees_can_be_moved_back_before_the_start_of_their_cycle() {
    let Some(bin) = go::allocprog() else { return };
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("maps.out");
    go::run(&bin, "maps", 60000, &out, &[go::ALLOC_FREE]);
    let o = allocscope(
        &[
            "import",
            "maps.out",
            "-o",
            "t.atrace",
            "--go-frees",
            "cycle-start",
        ],
        dir.path(),
    );
    ok(&o);
    let s = side_summary(&dir.path().join("t.atrace"));
    let c = &s["counts"];
    assert!(c["gc_cycles"].as_u64().unwrap() >= 1, "{c}");
    let (moved, kept, frees) = (
        c["frees_moved"].as_u64().unwrap(),
        c["frees_kept"].as_u64().unwrap(),
        c["frees"].as_u64().unwrap(),
    );
    assert_eq!(moved + kept, frees, "{c}");
    assert!(moved > frees * 9 / 10, "{c}");
    // The trace is sound: no anomaly in info.
    let o = allocscope(&["info", "t.atrace", "--json"], dir.path());
    let info: serde_json::Value = serde_json::from_str(&ok(&o)).unwrap();
    // (A free moved before its object's allocation shows as both: a tiny block's later objects
    // were, once.)
    for anomaly in ["unknown_frees", "missed_frees"] {
        assert_eq!(
            info["stats"]["anomalies"][anomaly], 0,
            "{anomaly}: {}",
            info["stats"]
        );
    }
}

#[test]
fn a_trace_without_the_alloc_free_experiment_says_how_to_take_one() {
    let Some(bin) = go::allocprog() else { return };
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("plain.out");
    go::run(&bin, "none", 0, &out, &[]);
    let o = allocscope(&["import", "plain.out", "-o", "t.atrace"], dir.path());
    assert_eq!(o.status.code(), Some(2));
    let e = stderr(&o);
    assert_eq!(e.lines().count(), 1, "{e}");
    for needle in [
        "GODEBUG=traceallocfree=1",
        "runtime/trace",
        "go test -trace",
        "/debug/pprof/trace",
    ] {
        assert!(e.contains(needle), "{needle}: {e}");
    }
    assert_eq!(others(dir.path(), &["plain.out"]), Vec::<String>::new());
}

#[test]
fn a_cut_go_trace_is_refused_or_imported_as_far_as_it_goes() {
    let Some(bin) = go::allocprog() else { return };
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("whole.out");
    go::run(&bin, "tiny", 20000, &out, &[go::ALLOC_FREE]);
    let bytes = std::fs::read(&out).unwrap();
    let cut = bytes.len() * 2 / 3;
    std::fs::write(dir.path().join("cut.out"), &bytes[..cut]).unwrap();
    let o = allocscope(&["import", "cut.out", "-o", "t.atrace"], dir.path());
    assert_eq!(o.status.code(), Some(2));
    let e = stderr(&o);
    assert!(
        e.contains("cut at byte") && e.contains("--allow-truncated"),
        "{e}"
    );
    assert_eq!(
        others(dir.path(), &["whole.out", "cut.out"]),
        Vec::<String>::new()
    );

    let o = allocscope(
        &["import", "cut.out", "-o", "t.atrace", "--allow-truncated"],
        dir.path(),
    );
    ok(&o);
    assert!(stderr(&o).contains("warning"), "{}", stderr(&o));
    let o = allocscope(&["info", "t.atrace", "--json"], dir.path());
    let info: serde_json::Value = serde_json::from_str(&ok(&o)).unwrap();
    assert_eq!(info["recording_end"]["how"], "stopped");
    assert!(info["recording_end"]["note"]
        .as_str()
        .unwrap()
        .contains("cut at byte"));
    assert!(info["stats"]["per_op"]["malloc"].as_u64().unwrap() > 1000);
}

/// A Go trace header followed by `body`.
fn crafted(dir: &Path, name: &str, version: &str, body: &[u8]) {
    let mut b = format!("go 1.{version} trace").into_bytes();
    b.resize(16, 0);
    b.extend_from_slice(body);
    std::fs::write(dir.join(name), b).unwrap();
}

#[test]
fn bad_go_traces_get_one_line_each() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    crafted(d, "old.out", "22", &[]);
    crafted(d, "new.out", "31", &[]);
    // A batch claiming 2 MiB of data.
    crafted(
        d,
        "huge.out",
        "26",
        &[1, 1, 7, 1, 0x80, 0x80, 0x80, 0x01, 0, 0],
    );
    // Byte 99 where a batch must start.
    crafted(d, "corrupt.out", "26", &[99, 1, 2, 3]);
    for (file, needles) in [
        ("old.out", &["Go 1.22", "GODEBUG=traceallocfree=1"][..]),
        ("new.out", &["go 1.31", "upgrade allocscope"][..]),
        (
            "huge.out",
            &["byte 16", "claims 2097152 bytes", "--allow-truncated"][..],
        ),
        ("corrupt.out", &["damaged at byte 16", "byte 99"][..]),
    ] {
        let o = allocscope(&["import", file, "-o", "t.atrace"], d);
        assert_eq!(o.status.code(), Some(2), "{file}");
        let e = stderr(&o);
        assert_eq!(e.lines().count(), 1, "{file}: {e}");
        assert!(
            !e.contains("panicked") && !e.contains("RUST_BACKTRACE"),
            "{e}"
        );
        for n in needles {
            assert!(e.contains(n), "{file}: {n}: {e}");
        }
        assert!(!d.join("t.atrace").exists() && !d.join("t.atrace.go.jsonl").exists());
    }
}

#[test]
fn a_trace_of_claims_stays_small() {
    // Thousands of batches, each claiming the most data a batch may hold, in a file that holds
    // none of it: refused at the first, in little memory and time.
    let dir = tempfile::tempdir().unwrap();
    let mut body = Vec::new();
    for _ in 0..4096 {
        body.extend_from_slice(&[1, 1, 7, 1, 0x80, 0x80, 0x04]);
    }
    crafted(dir.path(), "claims.out", "26", &body);
    let m = allocscope_measured(
        &["import", "claims.out", "-o", "t.atrace"],
        dir.path(),
        &[],
        std::time::Duration::from_secs(20),
    );
    assert_eq!(m.code, Some(2), "{}", m.stderr);
    assert!(m.stderr.contains("cut at byte 16"), "{}", m.stderr);
    assert!(m.max_rss_bytes < 64 << 20, "{} bytes", m.max_rss_bytes);
}
