//! The trace verbs (`import`, `export`, `info`) through the real binary: round trips, and one
//! clear line with a non-zero exit for bad input.

mod common;
use common::{allocscope, stderr};

use std::path::Path;
use std::process::Output;

/// Bad input: a non-zero exit, one line on stderr naming the problem, no panic.
fn assert_one_line_error(o: &Output, must_mention: &str) {
    let err = stderr(o);
    assert_eq!(o.status.code(), Some(2), "stderr: {err}");
    assert_eq!(err.lines().count(), 1, "not one line: {err}");
    assert!(
        err.contains(must_mention),
        "{err:?} does not mention {must_mention:?}"
    );
    assert!(
        !err.contains("panicked") && !err.contains("backtrace"),
        "{err}"
    );
}

#[test]
fn hand_written_csv_imports_and_exports_back_to_the_same_events() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::write(
        d.join("w.csv"),
        "op,id,size\nmalloc,a,100\nmalloc,b,24\nfree,a,\ncalloc,c,40\nrealloc,b,300\nfree,b,\n",
    )
    .unwrap();
    let o = allocscope(&["import", "w.csv", "-o", "w.atrace"], d);
    assert!(o.status.success(), "{}", stderr(&o));

    let o = allocscope(&["info", "w.atrace", "--json"], d);
    assert!(o.status.success(), "{}", stderr(&o));
    let info: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(info["stats"]["events"], 6);
    assert_eq!(info["stats"]["per_op"]["free"], 2);
    assert_eq!(info["stats"]["total_requested_bytes"], 464);
    // a(100) + b(24) live, then a freed, c(40), b grows to 300: peak 340.
    assert_eq!(info["stats"]["peak_live_requested_bytes"], 340);
    assert_eq!(info["stats"]["live_objects_at_end"], 1);

    // Export, import the export, export again: identical text, so identical events.
    let o = allocscope(&["export", "w.atrace", "-o", "e1.csv"], d);
    assert!(o.status.success(), "{}", stderr(&o));
    let o = allocscope(&["import", "e1.csv", "-o", "e1.atrace"], d);
    assert!(o.status.success(), "{}", stderr(&o));
    let o = allocscope(&["export", "e1.atrace"], d);
    assert!(o.status.success());
    assert_eq!(
        String::from_utf8(o.stdout).unwrap(),
        std::fs::read_to_string(d.join("e1.csv")).unwrap()
    );
}

#[test]
fn golden_sample_exports_and_reimports_identically() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let golden = Path::new(env!("CARGO_MANIFEST_DIR")).join("traces/samples/v1-golden.atrace");
    let g = golden.to_str().unwrap();
    let o = allocscope(&["export", g, "-o", "g.csv"], d);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(allocscope(&["import", "g.csv", "-o", "g.atrace"], d)
        .status
        .success());
    let again = allocscope(&["export", "g.atrace"], d);
    assert_eq!(
        String::from_utf8(again.stdout).unwrap(),
        std::fs::read_to_string(d.join("g.csv")).unwrap()
    );
    let info = allocscope(&["info", g], d);
    let text = String::from_utf8(info.stdout).unwrap();
    assert!(text.contains("events     21 over 3 threads"), "{text}");
    assert!(text.contains("failed     2 calls"), "{text}");
}

#[test]
fn bad_csv_input_names_line_and_column() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let cases = [
        ("op,id\nmalloc,a\n", "column 'size'"),
        ("op,id,size,colour\nmalloc,a,1,red\n", "column 'colour'"),
        ("op,id,size\nmalloc,a,10\nfree,zz,\n", "line 3, column 'id'"),
        ("op,id,size\nmalloc,a,1x0\n", "line 2, column 'size'"),
        ("op,id,size\nmallocc,a,10\n", "unknown op 'mallocc'"),
        ("op,id,size\nmalloc,a,10,5\n", "line 2"),
        ("op,id,size\nposix_memalign,a,10\n", "column 'align'"),
    ];
    for (i, (csv, mention)) in cases.iter().enumerate() {
        let name = format!("bad{i}.csv");
        std::fs::write(d.join(&name), csv).unwrap();
        let out = format!("bad{i}.atrace");
        let o = allocscope(&["import", &name, "-o", &out], d);
        assert_one_line_error(&o, mention);
        assert!(
            !d.join(&out).exists(),
            "a half-written trace was left behind"
        );
    }
}

#[test]
fn bad_trace_files_give_one_line_and_a_non_zero_exit() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let golden = Path::new(env!("CARGO_MANIFEST_DIR")).join("traces/samples/v1-golden.atrace");
    let bytes = std::fs::read(golden).unwrap();

    std::fs::write(d.join("text.atrace"), "op,id,size\n").unwrap();
    assert_one_line_error(
        &allocscope(&["info", "text.atrace"], d),
        "not an allocscope trace",
    );

    let mut future = bytes.clone();
    future[10] = 7;
    std::fs::write(d.join("future.atrace"), &future).unwrap();
    assert_one_line_error(
        &allocscope(&["info", "future.atrace"], d),
        "upgrade allocscope",
    );

    assert_one_line_error(
        &allocscope(&["info", "missing.atrace"], d),
        "missing.atrace",
    );

    // A chunk length pointing past the end of the file: the last chunk's header says 1 MiB.
    std::fs::write(d.join("cut.atrace"), &bytes[..bytes.len() - 300]).unwrap();
    let o = allocscope(&["info", "cut.atrace"], d);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("truncated at byte"), "{}", stderr(&o));
    assert!(stderr(&o).contains("--allow-truncated"));
    // ...and with --allow-truncated the complete chunks are described, exit 0.
    let o = allocscope(&["info", "cut.atrace", "--allow-truncated", "--json"], d);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let info: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let n = info["stats"]["events"].as_u64().unwrap();
    assert!(n > 0 && n < 21, "{n} events recovered");
}
