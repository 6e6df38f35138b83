//! `allocscope tune-classes` through the real binary on a workload whose ideal table is known.

mod common;
use common::{allocscope, ok};

use std::path::Path;

// 1000 objects of 592 B and 1000 of 1664 B, none freed (pointer-free, no GC runs: 2.4 MB < 4 MiB).
// Go's table: 592 -> 640 (12 per one-page span: 84 spans), 1664 -> 1792 (9 per two-page span:
// 112 spans); waste (48 + 128) / (640 + 1792) = 7.2368 %; HeapInuse 84 * 8192 + 112 * 16384 =
// 2523136. The ideal table has both sizes as classes: waste 0; 592 fits 13 per page (77 spans),
// 1664 fits 9 per two pages (112 spans): HeapInuse 77 * 8192 + 112 * 16384 = 2465792.
fn workload(dir: &Path) {
    let mut csv = String::from("op,id,size\n");
    for i in 0..1000 {
        csv += &format!("malloc,a{i},592\nmalloc,b{i},1664\n");
    }
    std::fs::write(dir.join("w.csv"), csv).unwrap();
    ok(&allocscope(&["import", "w.csv", "-o", "w.atrace"], dir));
}

#[test]
fn proposal_removes_known_waste_and_replay_accepts_it() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    workload(d);
    let out = ok(&allocscope(
        &[
            "tune-classes",
            "w.atrace",
            "-o",
            "p.csv",
            "--json",
            "t.json",
        ],
        d,
    ));
    assert!(out.contains("size-class waste"), "{out}");
    let csv = std::fs::read_to_string(d.join("p.csv")).unwrap();
    let mut lines = csv.lines();
    assert_eq!(
        lines.next().unwrap(),
        "class,bytes_per_obj,bytes_per_span,objects,tail_waste,max_waste_pct"
    );
    let rows: Vec<Vec<u64>> = lines
        .map(|l| l.split(',').take(5).map(|f| f.parse().unwrap()).collect())
        .collect();
    assert!(rows.len() <= 67);
    assert!(rows
        .iter()
        .any(|r| r[1] == 592 && r[2] == 8192 && r[3] == 13));
    assert!(rows
        .iter()
        .any(|r| r[1] == 1664 && r[2] == 16384 && r[3] == 9));
    assert_eq!(rows.last().unwrap()[1], 32768);

    let t: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(d.join("t.json")).unwrap()).unwrap();
    assert!(
        (t["go"]["waste_pct"].as_f64().unwrap() - 7.2368).abs() < 1e-3,
        "{t}"
    );
    assert_eq!(t["proposed"]["waste_pct"].as_f64(), Some(0.0));
    assert_eq!(t["go"]["peak_heap_inuse_bytes"].as_u64(), Some(2523136));
    assert_eq!(
        t["proposed"]["peak_heap_inuse_bytes"].as_u64(),
        Some(2465792)
    );
    assert_eq!(
        t["go"]["heap_alloc_bytes"].as_u64(),
        Some(1000 * (640 + 1792))
    );
    assert_eq!(
        t["proposed"]["heap_alloc_bytes"].as_u64(),
        Some(1000 * (592 + 1664))
    );

    // `replay` takes the proposal as it is.
    ok(&allocscope(
        &[
            "replay",
            "w.atrace",
            "--size-classes",
            "p.csv",
            "--json",
            "r.json",
            "-q",
        ],
        d,
    ));
    let r: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(d.join("r.json")).unwrap()).unwrap();
    assert_eq!(r["metrics"]["waste_pct"].as_f64(), Some(0.0));
    assert_eq!(r["model"]["peak"]["heap_inuse"].as_u64(), Some(2465792));
}

#[test]
fn bad_input_is_one_line_and_exit_2() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    workload(d);
    for args in [
        &["tune-classes", "missing.atrace"][..],
        &["tune-classes", "w.atrace", "--classes", "1"],
        &["tune-classes", "w.atrace", "--classes", "lots"],
        &["tune-classes", "w.atrace", "--pointers", "some"],
        &["tune-classes", "w.csv"],
    ] {
        let o = allocscope(args, d);
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {err}");
        assert!(!err.contains("panicked"), "{args:?}: {err}");
        assert!(err.trim().lines().count() <= 3, "{args:?}: {err}");
    }
}
