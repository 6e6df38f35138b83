//! What `record` says: one summary for a recording of many processes (each process only when it
//! had a problem, or with -v), nothing but problems with --quiet, the naming of child traces in
//! --help, and what to do when the trace file exists.

mod common;

use common::{allocscope, stderr};

/// A shell that starts ten short processes.
const LOOP: &[&str] = &[
    "sh",
    "-c",
    "for i in 1 2 3 4 5 6 7 8 9 10; do /bin/true; done",
];

fn record(dir: &std::path::Path, flags: &[&str], out: &str) -> (String, usize) {
    let mut args = vec!["record", "-o", out];
    args.extend_from_slice(flags);
    args.push("--");
    args.extend_from_slice(LOOP);
    let o = allocscope(&args, dir);
    let err = stderr(&o);
    assert!(o.status.success(), "{err}");
    let traces = std::fs::read_dir(dir)
        .unwrap()
        .filter(|e| {
            let n = e.as_ref().unwrap().file_name();
            n.to_string_lossy().starts_with(out)
        })
        .count();
    (err, traces)
}

#[test]
fn many_processes_get_one_summary_line() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (err, traces) = record(d, &[], "t.atrace");
    assert!(traces >= 11, "a trace per process: {traces}");
    assert_eq!(
        err.lines().count(),
        1,
        "one line for {traces} traces: {err}"
    );
    assert!(
        err.contains(&format!("traced {traces} processes")) && err.contains("t.atrace.<pid>"),
        "{err}"
    );

    let (err, traces) = record(d, &["-v"], "v.atrace");
    assert!(
        err.lines().filter(|l| l.contains(" events, ")).count() >= traces,
        "-v lists every process: {err}"
    );

    let (err, _) = record(d, &["--quiet"], "q.atrace");
    assert!(err.is_empty(), "--quiet: {err}");
}

#[test]
fn help_names_child_traces_and_an_existing_trace_is_kept() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let o = allocscope(&["record", "--help"], d);
    let help = String::from_utf8_lossy(&o.stdout);
    assert!(
        help.contains("FILE.<pid>") && help.contains("FILE.<pid>.1"),
        "{help}"
    );
    std::fs::write(d.join("old.atrace"), "earlier trace").unwrap();
    let o = allocscope(&["record", "-o", "old.atrace", "--", "true"], d);
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(
        err.contains("already exists") && err.contains("remove it or choose another name"),
        "{err}"
    );
    assert_eq!(
        std::fs::read_to_string(d.join("old.atrace")).unwrap(),
        "earlier trace"
    );
    // Every verb that writes files says how it treats them.
    for verb in [
        "replay",
        "report",
        "export",
        "import",
        "tune-classes",
        "trend",
        "compare",
        "profile",
    ] {
        let o = allocscope(&[verb, "--help"], d);
        let help = String::from_utf8_lossy(&o.stdout);
        assert!(help.contains("renamed into place"), "{verb} --help: {help}");
    }
}
