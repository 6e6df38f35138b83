//! `allocscope profile`: the bundled sample (no command) and a recorded command.

mod common;
use common::{allocscope, ok};

use std::path::Path;

fn json(p: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap()
}

#[test]
fn no_command_profiles_the_bundled_sample() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let out = ok(&allocscope(&["profile", "-o", "prof"], d));
    let p = d.join("prof");
    // The sample's figures (traces/samples/README.md): 776,751 events, 389,311 allocations.
    assert!(out.contains("776,751 events"), "{out}");
    assert!(out.contains("HeapInuse"), "{out}");
    assert!(out.contains("index.html"), "{out}");
    let html = std::fs::read_to_string(p.join("index.html")).unwrap();
    assert!(html.matches("<svg").count() >= 3, "charts embedded");
    let report = json(&p.join("report.json"));
    let replay = json(&p.join("replay.json"));
    assert_eq!(report["trace"]["events"].as_u64(), Some(776_751));
    assert_eq!(replay["trace"]["events"].as_u64(), Some(776_751));
    assert_eq!(replay["go_memstats"]["mallocs"].as_u64(), Some(389_311));
    // The replay's figures are in the report and on the page.
    let peak = replay["model"]["peak"]["heap_inuse"].as_u64().unwrap();
    assert!(peak > 0);
    assert_eq!(report["metrics"]["peak_heap"].as_f64(), Some(peak as f64));
    assert!(
        html.contains("heap_inuse") || html.contains("HeapInuse"),
        "replay figures"
    );
    let frag = report["metrics"]["page_frag"].as_f64().unwrap();
    assert!((0.0..=1.0).contains(&frag), "{frag}");
}

#[test]
fn a_command_is_recorded_replayed_and_reported() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::write(d.join("in.txt"), "pear\napple\nfig\n").unwrap();
    let o = allocscope(&["profile", "-o", "p", "--", "sort", "in.txt"], d);
    let out = ok(&o);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        out.contains("apple\nfig\npear\n"),
        "sort's output passes through: {out}"
    );
    assert!(err.contains("profiling pid"), "{err}");
    assert!(d.join("p/trace.atrace").exists());
    assert!(d.join("p/index.html").exists());
    let replay = json(&d.join("p/replay.json"));
    assert!(replay["go_memstats"]["mallocs"].as_u64().unwrap() > 0);
    // A second profile into the same directory replaces the old trace.
    ok(&allocscope(
        &["profile", "-o", "p", "--", "sort", "in.txt"],
        d,
    ));
}

#[test]
fn a_missing_command_is_one_line() {
    let dir = tempfile::tempdir().unwrap();
    let o = allocscope(
        &["profile", "-o", "p", "--", "no-such-command-xyz"],
        dir.path(),
    );
    assert_eq!(o.status.code(), Some(127));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("no-such-command-xyz") && !err.contains("panicked"),
        "{err}"
    );
}
