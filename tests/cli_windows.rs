//! `report --from/--to` on a real recording: collector/tests/c/phases.c runs three phases 400 ms
//! apart whose figures are computed by hand in its header. A window over one phase reports that
//! phase's calls, with the heap it started with in its live figures, peaks and call sites; the
//! same window given in event numbers gives the same report; three windows that tile the trace
//! add up to the whole. Bad bounds get one line each.

mod common;

use std::path::Path;

use serde_json::Value;

use common::allocscope_own_cache as run;

fn record(dir: &Path) {
    common::build_c("cc", "phases.c", dir, "phases", &[]);
    common::ok(&run(
        dir,
        &["record", "-q", "-o", "t.atrace", "--", "./phases"],
    ));
}

/// `report t.atrace ARGS --json NAME`, read back.
fn report(dir: &Path, name: &str, args: &[&str]) -> Value {
    let mut all = vec!["report", "t.atrace", "-q", "--json", name];
    all.extend_from_slice(args);
    common::ok(&run(dir, &all));
    serde_json::from_str(&std::fs::read_to_string(dir.join(name)).unwrap()).unwrap()
}

fn u(v: &Value) -> u64 {
    v.as_u64().unwrap_or_else(|| panic!("not a count: {v}"))
}

/// (allocs, bytes, peak, leaked objects, leaked bytes, temporary, waste) of a function.
fn site(doc: &Value, name: &str) -> [u64; 7] {
    let f = doc["call_sites"]["functions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["function"] == name)
        .unwrap_or_else(|| panic!("no function {name} in {}", doc["call_sites"]));
    [
        "allocs",
        "bytes",
        "peak_live_bytes",
        "leaked_objects",
        "leaked_bytes",
        "temporary",
        "waste_bytes",
    ]
    .map(|k| u(&f[k]))
}

#[test]
fn a_window_reports_one_phase_with_the_heap_it_started_with() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    record(d);
    let w = report(d, "w.json", &["--from", "200ms", "--to", "600ms"]);
    let info = &w["trace"]["window"];
    // Before it: the array and 2000 nodes.
    assert_eq!(u(&info["first_event"]), 2001, "{info}");
    assert_eq!(u(&info["live_objects_at_start"]), 2001);
    assert_eq!(u(&info["live_bytes_at_start"]), 16000 + 2000 * 200);
    assert!(u(&info["first_ns"]) >= 200_000_000 && u(&info["last_ns"]) < 600_000_000);
    // Its calls: 1000 frees of old nodes, 3000 temporaries of 40 B, the cache's array and 500
    // blocks of 1000 B.
    let wl = &w["workload"];
    assert_eq!(u(&wl["allocs"]), 3000 + 501, "{wl}");
    assert_eq!(u(&wl["allocated_bytes"]), 120_000 + 4000 + 500_000);
    assert_eq!(u(&wl["frees"]), 1000 + 3000);
    assert_eq!(u(&wl["events"]), 3501 + 4000);
    assert_eq!(u(&wl["temporary_objects"]), 3000);
    assert_eq!(u(&wl["live_objects_at_end"]), 1001 + 501);
    // The peak is the window's end: what was left of the build plus the cache.
    assert_eq!(
        u(&w["frag"]["peak_live_requested_bytes"]),
        216_000 + 504_000
    );
    assert_eq!(
        u(&w["waste"]["total_waste_bytes"]),
        3000 * 8 + 500 * 24 + 96
    );
    // Who: build allocated nothing in the window but holds what is left of its nodes.
    assert_eq!(
        site(&w, "cache"),
        [501, 504_000, 504_000, 501, 504_000, 0, 500 * 24 + 96]
    );
    assert_eq!(site(&w, "churn"), [3000, 120_000, 0, 0, 0, 3000, 3000 * 8]);
    assert_eq!(site(&w, "build"), [0, 0, 216_000, 1001, 216_000, 0, 0]);
    let names: Vec<&str> = w["call_sites"]["functions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["function"].as_str().unwrap())
        .collect();
    assert!(!names.contains(&"late"), "{names:?}");

    // The same window in event numbers is the same report.
    let end = u(&info["end_event"]).to_string() + "ev";
    let e = report(d, "e.json", &["--from", "2001ev", "--to", &end]);
    let strip = |mut v: Value| {
        v["trace"].as_object_mut().unwrap().remove("window");
        v
    };
    assert_eq!(strip(e.clone()), strip(w.clone()));

    // The last phase: its peak is at its start, held by sites that allocate nothing in it.
    let last = report(d, "l.json", &["--from", "600ms"]);
    assert_eq!(
        u(&last["frag"]["peak_live_requested_bytes"]),
        216_000 + 504_000
    );
    assert_eq!(site(&last, "late"), [100, 6400, 0, 0, 0, 100, 0]);
    // Its frees of the cache count the cache's last 66 blocks temporary: fewer than 64 KiB
    // were allocated after each (1000 B x 65 < 65536), whenever they were born.
    assert_eq!(site(&last, "cache"), [0, 0, 504_000, 0, 0, 66, 0]);
    assert_eq!(u(&last["workload"]["frees"]), 1001 + 501 + 100);

    // Windows that tile the trace add up to it.
    let whole = report(d, "all.json", &[]);
    let first = report(d, "f.json", &["--to", "200ms"]);
    for key in [
        "allocs",
        "frees",
        "allocated_bytes",
        "events",
        "temporary_objects",
    ] {
        let sum: u64 = [&first, &w, &last]
            .iter()
            .map(|r| u(&r["workload"][key]))
            .sum();
        assert_eq!(sum, u(&whole["workload"][key]), "{key}");
    }
    let waste: u64 = [&first, &w, &last]
        .iter()
        .map(|r| u(&r["waste"]["total_waste_bytes"]))
        .sum();
    assert_eq!(waste, u(&whole["waste"]["total_waste_bytes"]));
    assert!(whole["trace"].get("window").is_none());

    // The text says what the window holds, and "leaked" is the window's end.
    let text = common::ok(&run(
        d,
        &["report", "t.atrace", "--from", "200ms", "--to", "600ms"],
    ));
    assert!(
        text.contains("window --from 200ms --to 600ms: events 2,001 to"),
        "{text}"
    );
    assert!(text.contains("leaked: live at the window's end"), "{text}");
}

#[test]
fn bad_window_bounds_get_one_line() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    record(d);
    for (args, says) in [
        (&["--from", "250"][..], "250ms"),
        (&["--to", "1.5ev"][..], "120000ev"),
        (
            &["--from", "9ev", "--to", "3ev"][..],
            "is not after --from 9ev",
        ),
        (
            &["--from", "5s"][..],
            "no event falls in the window --from 5s",
        ),
        (
            &["--from", "1ms", "--replay", "t.atrace"][..],
            "cannot be used with",
        ),
    ] {
        let mut all = vec!["report", "t.atrace", "-q"];
        all.extend_from_slice(args);
        let o = run(d, &all);
        let err = common::stderr(&o);
        assert!(!o.status.success(), "{args:?}");
        assert!(err.contains(says), "{args:?}: {err}");
        assert!(!err.contains("panicked"), "{args:?}: {err}");
    }
}
