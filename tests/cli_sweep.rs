//! `replay --sweep` through the real binary: every combination replayed, results that move the
//! way the knobs say, a chart, and one-line errors.

mod common;
use common::allocscope;

/// A churn workload: 20,000 objects of 1 KiB allocated, each freed 500 allocations later, so the
/// live heap stays near 500 KiB while 20 MiB are allocated in total.
fn churn_csv() -> String {
    let mut s = String::from("op,id,size\n");
    for i in 0..20_000 {
        s += &format!("malloc,o{i},1024\n");
        if i >= 500 {
            s += &format!("free,o{},\n", i - 500);
        }
    }
    s
}

#[test]
fn sweep_replays_every_combination_and_gogc_moves_gc_cycles() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::write(d.join("churn.csv"), churn_csv()).unwrap();
    let o = allocscope(
        &[
            "replay",
            "churn.csv",
            "--sweep",
            "gogc=50,200",
            "--sweep",
            "tiny=on,off",
            "--json",
            "sweep.json",
            "--sweep-chart",
            "sweep.svg",
        ],
        d,
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let table = String::from_utf8(o.stdout).unwrap();
    assert_eq!(
        table.lines().filter(|l| l.starts_with("| gogc=")).count(),
        4,
        "{table}"
    );
    let doc: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(d.join("sweep.json")).unwrap()).unwrap();
    let rows = doc["sweep"].as_array().unwrap();
    assert_eq!(rows.len(), 4);
    let metric = |config: &str, m: &str| {
        rows.iter().find(|r| r["config"] == config).unwrap()["metrics"][m]
            .as_f64()
            .unwrap()
    };
    // A lower GOGC collects more often and holds less.
    assert!(metric("gogc=50 tiny=on", "num_gc") > metric("gogc=200 tiny=on", "num_gc"));
    assert!(metric("gogc=50 tiny=on", "peak_heap") < metric("gogc=200 tiny=on", "peak_heap"));
    let svg = std::fs::read_to_string(d.join("sweep.svg")).unwrap();
    assert!(svg.contains("<svg") && svg.contains("gogc=50 tiny=on"));
}

#[test]
fn bad_sweeps_are_one_line_errors() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::write(d.join("churn.csv"), churn_csv()).unwrap();
    for (axis, says) in [
        ("colour=red", "unknown configuration key"),
        ("gogc=lots", "gogc=lots"),
    ] {
        let o = allocscope(&["replay", "churn.csv", "--sweep", axis], d);
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(2), "{err}");
        assert!(
            err.contains(says) && err.lines().filter(|l| l.contains("error")).count() == 1,
            "{err}"
        );
    }
}
