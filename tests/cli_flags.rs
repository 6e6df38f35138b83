//! Flags and messages: numeric flags are range-checked, negative GOGC works as in Go, sweeps
//! are parsed strictly and capped, chart outputs need an extension that names their format,
//! a closed pipe exits 0 in every verb, and errors are one line that names the file.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use common::{allocscope, ok, stderr};

fn sample(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("traces/samples")
        .join(name)
}

fn copy_sample(name: &str, dir: &Path) -> PathBuf {
    let p = dir.join(name);
    std::fs::copy(sample(name), &p).unwrap();
    p
}

/// Asserts exit 2, no panic, and every string of `want` on stderr; returns stderr.
fn fails_with(o: &std::process::Output, want: &[&str]) -> String {
    let err = stderr(o);
    assert_eq!(o.status.code(), Some(2), "stderr: {err}");
    assert!(
        !err.contains("panicked") && !err.contains("RUST_BACKTRACE"),
        "{err}"
    );
    for w in want {
        assert!(err.contains(w), "want {w:?} in: {err}");
    }
    err
}

fn json(p: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap()
}

#[test]
fn absurd_numbers_are_refused_with_their_range() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    copy_sample("v1-golden.atrace", d);
    let cases: &[(&[&str], &str)] = &[
        (&["record", "--duration", "1e300", "--", "true"], "30 days"),
        (&["record", "--duration", "0", "--", "true"], "above 0"),
        (&["record", "--duration=-1", "--", "true"], "above 0"),
        (&["record", "--duration", "nan", "--", "true"], "--duration"),
        (&["record", "--flush-ms", "0", "--", "true"], "--flush-ms"),
        (&["replay", "v1-golden.atrace", "--repeat", "0"], "--repeat"),
        (
            &["replay", "v1-golden.atrace", "--repeat", "99999999"],
            "1..=1000",
        ),
        (
            &[
                "replay",
                "v1-golden.atrace",
                "--timeline",
                "t.csv",
                "--timeline-every",
                "0",
            ],
            "--timeline-every",
        ),
        (
            &["replay", "v1-golden.atrace", "--procs", "0"],
            "procs 0 must be 1..=1024",
        ),
        (
            &[
                "replay",
                "v1-golden.atrace",
                "--procs",
                "99999999999999999999999",
            ],
            "--procs",
        ),
        (
            &["replay", "v1-golden.atrace", "--page-size", "3"],
            "page_size 3",
        ),
        (
            &["replay", "v1-golden.atrace", "--gogc", "99999999999"],
            "--gogc",
        ),
        (
            &["replay", "v1-golden.atrace", "--gomemlimit", "99999999TiB"],
            "overflows",
        ),
        (
            &[
                "replay",
                "v1-golden.atrace",
                "--sweep",
                "gogc=50",
                "--sweep-limit",
                "0",
            ],
            "--sweep-limit",
        ),
        (
            &["tune-classes", "v1-golden.atrace", "--classes", "1"],
            "--classes 1",
        ),
    ];
    for (args, want) in cases {
        let o = allocscope(args, d);
        fails_with(&o, &[want]);
    }
    // Nothing was recorded by the refused commands.
    assert!(!d.join("allocscope.atrace").exists());
}

#[test]
fn a_negative_gogc_turns_the_gc_off_as_in_go() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    copy_sample("python-dict.atrace", d);
    let t = "python-dict.atrace";
    ok(&allocscope(
        &[
            "replay",
            t,
            "--gogc",
            "-5",
            "--json",
            "neg.json",
            "-q",
            "--no-timing",
        ],
        d,
    ));
    ok(&allocscope(
        &[
            "replay",
            t,
            "--gogc=-1",
            "--json",
            "neg1.json",
            "-q",
            "--no-timing",
        ],
        d,
    ));
    ok(&allocscope(
        &[
            "replay",
            t,
            "--gogc",
            "off",
            "--json",
            "off.json",
            "-q",
            "--no-timing",
        ],
        d,
    ));
    ok(&allocscope(
        &["replay", t, "--json", "on.json", "-q", "--no-timing"],
        d,
    ));
    let memory = |p: &str| {
        let v = json(&d.join(p));
        (
            v["go_memstats"]["num_gc"].clone(),
            v["metrics"]["peak_heap"].clone(),
        )
    };
    assert_eq!(memory("neg.json"), memory("off.json"));
    assert_eq!(memory("neg1.json"), memory("off.json"));
    assert_eq!(memory("off.json").0, 0);
    assert_ne!(
        memory("on.json").0,
        0,
        "the sample runs GC cycles with GOGC=100"
    );
    // The same in a sweep, which reads values as a configuration file does.
    let out = ok(&allocscope(&["replay", t, "--sweep", "gogc=-5,off"], d));
    assert!(out.contains("gogc=-5") && out.contains("gogc=off"), "{out}");
    let o = allocscope(&["replay", t, "--gogc", "lots"], d);
    fails_with(&o, &["--gogc \"lots\"", "off"]);
}

#[test]
fn record_refuses_an_unknown_flag_before_the_command() {
    let dir = tempfile::tempdir().unwrap();
    let o = allocscope(&["record", "--bogus"], dir.path());
    let err = fails_with(&o, &["unexpected argument '--bogus'"]);
    assert!(!err.contains("cannot run"), "{err}");
    let o = allocscope(&["profile", "--bogus"], dir.path());
    fails_with(&o, &["unexpected argument '--bogus'"]);
    // Flags after the command are the command's.
    let o = allocscope(&["record", "-q", "-o", "t.atrace", "ls", "-la"], dir.path());
    assert!(o.status.success(), "{}", stderr(&o));
}

#[test]
fn sweeps_are_parsed_strictly_capped_and_chart_names_say_their_format() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    copy_sample("v1-golden.atrace", d);
    let t = "v1-golden.atrace";
    let o = allocscope(&["replay", t, "--sweep", "gogc=50,,100"], d);
    fails_with(&o, &["gogc=50,,100", "value 2 of 3 is empty"]);
    let o = allocscope(&["replay", t, "--sweep", "gogc=50,100,"], d);
    fails_with(&o, &["value 3 of 3 is empty"]);

    let thirty: String = (1..=30)
        .map(|n| n.to_string())
        .collect::<Vec<_>>()
        .join(",");
    let axis = format!("gogc={thirty}");
    let start = std::time::Instant::now();
    let o = allocscope(
        &[
            "replay", t, "--sweep", &axis, "--sweep", &axis, "--sweep", &axis, "--sweep", &axis,
        ],
        d,
    );
    fails_with(&o, &["810000 combinations", "--sweep-limit"]);
    assert!(
        start.elapsed().as_secs() < 10,
        "refused before building the configurations"
    );
    let o = allocscope(
        &[
            "replay",
            t,
            "--sweep",
            "gogc=50,100,200",
            "--sweep-limit",
            "2",
        ],
        d,
    );
    fails_with(&o, &["3 combinations", "limit of 2"]);
    let out = ok(&allocscope(
        &[
            "replay",
            t,
            "--sweep",
            "gogc=50,100,200",
            "--sweep-limit",
            "3",
        ],
        d,
    ));
    assert_eq!(
        out.lines().filter(|l| l.starts_with("| gogc=")).count(),
        3,
        "{out}"
    );

    for name in ["x.txt", "x", "x.svg.bak"] {
        let o = allocscope(
            &["replay", t, "--sweep", "gogc=50,100", "--sweep-chart", name],
            d,
        );
        fails_with(&o, &[name, "use .svg or .png"]);
        assert!(!d.join(name).exists(), "{name} was written");
    }
    ok(&allocscope(
        &[
            "replay",
            t,
            "--sweep",
            "gogc=50,100",
            "--sweep-chart",
            "c.SVG",
        ],
        d,
    ));
    assert!(std::fs::read_to_string(d.join("c.SVG"))
        .unwrap()
        .starts_with("<svg"));
    ok(&allocscope(
        &[
            "replay",
            t,
            "--sweep",
            "gogc=50,100",
            "--sweep-chart",
            "c.png",
        ],
        d,
    ));
    assert!(std::fs::read(d.join("c.png"))
        .unwrap()
        .starts_with(b"\x89PNG"));

    ok(&allocscope(&["replay", t, "--json", "r.json", "-q"], d));
    let o = allocscope(&["trend", "r.json", "r.json", "-o", "trend.txt"], d);
    fails_with(&o, &["trend.txt", "use .svg or .png"]);
    assert!(!d.join("trend.txt").exists());
    ok(&allocscope(
        &["trend", "r.json", "r.json", "-o", "trend.png"],
        d,
    ));
    assert!(std::fs::read(d.join("trend.png"))
        .unwrap()
        .starts_with(b"\x89PNG"));
}

/// Runs allocscope with its standard output a pipe whose reading end is closed at once, as
/// `| head -c0` would: its first write meets EPIPE.
fn into_closed_pipe(args: &[&str], dir: &Path) -> std::process::Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_allocscope"))
        .args(args)
        .current_dir(dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take());
    child.wait_with_output().unwrap()
}

#[test]
fn a_closed_pipe_exits_zero_in_every_verb() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    copy_sample("python-dict.atrace", d);
    let t = "python-dict.atrace";
    ok(&allocscope(
        &["replay", t, "--json", "r.json", "-q", "--no-timing"],
        d,
    ));
    let cases: &[&[&str]] = &[
        &["info", t],
        &["info", t, "--json"],
        &["export", t],
        &["replay", t, "--no-timing"],
        &["replay", t, "--sweep", "gogc=50,100"],
        &["report", t],
        &["compare", "r.json", "r.json"],
        &["trend", "r.json", "r.json", "-o", "t.svg"],
        &["tune-classes", t, "--no-replay", "-o", "p.csv"],
    ];
    for args in cases {
        let o = into_closed_pipe(args, d);
        let err = stderr(&o);
        assert_eq!(o.status.code(), Some(0), "{args:?}: {err}");
        assert!(
            !err.contains("panicked") && !err.contains("Broken pipe"),
            "{args:?}: {err}"
        );
    }
}

#[test]
fn messages_name_the_file_and_what_to_do() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    copy_sample("v1-golden.atrace", d);
    ok(&allocscope(
        &["replay", "v1-golden.atrace", "--json", "r.json", "-q"],
        d,
    ));

    let o = allocscope(&["compare", "v1-golden.atrace", "r.json"], d);
    fails_with(
        &o,
        &[
            "v1-golden.atrace: is a trace (.atrace), not a result JSON",
            "--json",
        ],
    );
    let o = allocscope(&["trend", "r.json", "--metrics", "nosuch"], d);
    let err = fails_with(&o, &["--metrics: unknown metric 'nosuch'", "peak_heap"]);
    assert!(!err.contains("--fail-if"), "{err}");
    let o = allocscope(&["trend", "r.json", "--fail-if", "nosuch>+1"], d);
    fails_with(&o, &["--fail-if: unknown metric 'nosuch'"]);

    std::fs::write(d.join("syntax.toml"), "gogc = 50\nprocs = [1\n").unwrap();
    let o = allocscope(
        &["replay", "v1-golden.atrace", "--config", "syntax.toml"],
        d,
    );
    let err = fails_with(&o, &["syntax.toml: line 3, column 1", "expected `]`"]);
    assert_eq!(err.lines().count(), 1, "{err}");
    std::fs::write(
        d.join("big.toml"),
        "gogc = 50\nstacks_bytes = 18446744073709551615\n",
    )
    .unwrap();
    let o = allocscope(&["replay", "v1-golden.atrace", "--config", "big.toml"], d);
    fails_with(&o, &["big.toml: line 2", "key stacks_bytes", "2^63"]);

    // A missing output directory is a write error, not a read error.
    let o = allocscope(
        &[
            "replay",
            "v1-golden.atrace",
            "--json",
            "no/such/r.json",
            "-q",
        ],
        d,
    );
    let err = fails_with(&o, &["cannot write no/such/r.json", "does not exist"]);
    assert!(!err.contains("cannot read"), "{err}");
}

#[test]
fn replay_and_tune_classes_name_a_truncated_trace_and_take_allow_truncated() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let whole = std::fs::read(sample("python-dict.atrace")).unwrap();
    std::fs::write(d.join("cut.atrace"), &whole[..whole.len() * 2 / 3]).unwrap();
    for verb in [
        &["replay", "cut.atrace", "-q", "--no-timing"][..],
        &["replay", "cut.atrace", "--sweep", "gogc=50,100"][..],
        &["tune-classes", "cut.atrace", "-o", "p.csv"][..],
    ] {
        let o = allocscope(verb, d);
        let err = fails_with(&o, &["cut.atrace: truncated", "--allow-truncated"]);
        assert!(!err.contains("error: trace:"), "{err}");
        let mut allowed = verb.to_vec();
        allowed.push("--allow-truncated");
        let o = allocscope(&allowed, d);
        let err = stderr(&o);
        assert!(o.status.success(), "{allowed:?}: {err}");
        assert!(err.contains("warning: cut.atrace: truncated"), "{err}");
        assert_eq!(err.matches("truncated at").count(), 1, "said once: {err}");
    }
    let o = allocscope(&["replay", "missing.atrace"], d);
    let err = fails_with(&o, &["missing.atrace: ", "No such file"]);
    assert!(!err.contains("error: trace:"), "{err}");
}

#[test]
fn report_checks_that_the_replay_is_of_the_same_trace() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    copy_sample("v1-golden.atrace", d);
    copy_sample("python-dict.atrace", d);
    std::fs::copy(sample("v1-golden.csv"), d.join("w.csv")).unwrap();
    ok(&allocscope(
        &["replay", "v1-golden.atrace", "--json", "golden.json", "-q"],
        d,
    ));
    let o = allocscope(
        &[
            "report",
            "python-dict.atrace",
            "--replay",
            "golden.json",
            "-q",
        ],
        d,
    );
    fails_with(
        &o,
        &[
            "golden.json: is the replay of another trace",
            "allocscope replay",
        ],
    );

    // Two traces with the same events: only the digest tells them apart.
    ok(&allocscope(&["import", "w.csv", "-o", "a.atrace"], d));
    ok(&allocscope(&["import", "w.csv", "-o", "b.atrace"], d));
    ok(&allocscope(
        &["replay", "a.atrace", "--json", "a.json", "-q"],
        d,
    ));
    let o = allocscope(&["report", "b.atrace", "--replay", "a.json", "-q"], d);
    fails_with(&o, &["a.json: is the replay of another trace", "digest"]);
    ok(&allocscope(
        &["report", "a.atrace", "--replay", "a.json", "-q"],
        d,
    ));

    // An older replay JSON has no digest: its event count is checked, and the user told.
    let mut old = json(&d.join("a.json"));
    old["trace"].as_object_mut().unwrap().remove("digest");
    std::fs::write(d.join("old.json"), old.to_string()).unwrap();
    let o = allocscope(&["report", "b.atrace", "--replay", "old.json", "-q"], d);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("old.json: has no trace digest"),
        "{}",
        stderr(&o)
    );

    // A replay timeline that is not one is an error, with or without -o.
    std::fs::write(d.join("junk.csv"), "hello,world\n1,2\n").unwrap();
    let o = allocscope(
        &[
            "report",
            "a.atrace",
            "--replay-timeline",
            "junk.csv",
            "-o",
            "out",
            "-q",
        ],
        d,
    );
    fails_with(&o, &["junk.csv", "not a replay timeline"]);
    assert!(!d.join("out/index.html").exists());
    let o = allocscope(
        &["report", "a.atrace", "--replay-timeline", "junk.csv", "-q"],
        d,
    );
    fails_with(&o, &["--out"]);
}
