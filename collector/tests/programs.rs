//! Real programs that ship with the machine: recording does not change their output or exit code,
//! every trace reads back complete, child processes are followed (or not, with --no-follow), and a
//! static binary gets the plain "nothing was recorded" message.

mod common;

use std::path::Path;
use std::process::Command;

use collector::Outcome;

fn have(program: &str) -> bool {
    collector::diagnose::resolve(program.as_ref()).is_some()
}

/// Runs `script` with `sh -c`, stdout/stderr to files in `dir`; returns (exit code, stdout, stderr).
fn untraced(dir: &Path, script: &str) -> (i32, Vec<u8>, Vec<u8>) {
    let (out, err) = (dir.join("plain.out"), dir.join("plain.err"));
    let st = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "{{ {script}; }} > '{}' 2> '{}'",
            out.display(),
            err.display()
        ))
        .status()
        .unwrap();
    (
        st.code().unwrap_or(-1),
        std::fs::read(out).unwrap(),
        std::fs::read(err).unwrap(),
    )
}

fn traced(dir: &Path, script: &str, follow: bool) -> (Outcome, Vec<u8>, Vec<u8>) {
    let (out, err) = (dir.join("rec.out"), dir.join("rec.err"));
    let cmd = common::os(&[
        "sh",
        "-c",
        &format!(
            "{{ {script}; }} > '{}' 2> '{}'",
            out.display(),
            err.display()
        ),
    ]);
    let outcome = common::record(dir, &cmd, |o| o.follow = follow);
    (
        outcome,
        std::fs::read(out).unwrap(),
        std::fs::read(err).unwrap(),
    )
}

/// The checks every real program gets. Returns the outcome for more specific ones.
fn same_under_record(name: &str, script: &str, min_events: u64) -> Option<Outcome> {
    if !have(name) {
        eprintln!("skipping {name}: not installed");
        return None;
    }
    let dir = tempfile::tempdir().unwrap();
    let (code, out, err) = untraced(dir.path(), script);
    let (outcome, rout, rerr) = traced(dir.path(), script, true);
    assert_eq!(outcome.exit_code, code, "{name}: exit code");
    assert_eq!(
        String::from_utf8_lossy(&rout),
        String::from_utf8_lossy(&out),
        "{name}: stdout"
    );
    assert_eq!(
        String::from_utf8_lossy(&rerr),
        String::from_utf8_lossy(&err),
        "{name}: stderr"
    );
    assert!(
        outcome.warnings.is_empty(),
        "{name}: {:?}",
        outcome.warnings
    );
    assert!(!outcome.processes.is_empty());
    for p in &outcome.processes {
        assert_eq!(p.missing, 0, "{name}: {}: lost events", p.path.display());
        assert!(p.problem.is_none(), "{name}: {:?}", p.problem);
        assert_eq!(
            p.written,
            Some(p.events),
            "{name}: {}: written = read back",
            p.path.display()
        );
        assert_eq!(common::events(&p.path).len() as u64, p.events);
    }
    let most = outcome.processes.iter().map(|p| p.events).max().unwrap();
    assert!(most >= min_events, "{name}: only {most} events");
    Some(outcome)
}

#[test]
fn python_builds_and_serialises_a_dict() {
    let script = "PYTHONMALLOC=malloc exec python3 -c 'import json, hashlib\n\
        d = {str(i): [i, str(i) * 3] for i in range(50000)}\n\
        s = json.dumps(d)\n\
        print(len(d), len(s), hashlib.sha256(s.encode()).hexdigest())'";
    same_under_record("python3", script, 100_000);
}

#[test]
fn sqlite3_inserts_and_aggregates() {
    let script = "exec sqlite3 :memory: 'create table t(a, b); \
        with recursive c(x) as (select 1 union all select x + 1 from c where x < 20000) \
        insert into t select x, hex(randomblob(16)) from c; \
        create index ib on t(b); select count(*), sum(length(b)) from t;'";
    same_under_record("sqlite3", script, 10_000);
}

#[test]
fn perl_fills_a_hash() {
    let script = "exec perl -e 'my %h; $h{$_} = \"x\" x ($_ % 100) for 1..50000; print scalar(keys %h), \"\\n\"'";
    same_under_record("perl", script, 10_000);
}

#[test]
fn git_hashes_an_object() {
    same_under_record(
        "git",
        "git --version && echo hello | git hash-object --stdin",
        50,
    );
}

#[test]
fn a_pipeline_is_followed_into_every_process() {
    // tail, not head: head would exit early and SIGPIPE would kill sort before its first flush.
    let script = "seq 1 50000 | sort -r | tail -n 3; exit 7";
    let Some(outcome) = same_under_record("sort", script, 100) else {
        return;
    };
    assert_eq!(outcome.exit_code, 7);
    // sh, seq, sort, head at least (each its own file, children named FILE.<pid>).
    assert!(outcome.processes.len() >= 4, "{:?}", outcome.processes);
    let top = outcome.output.display().to_string();
    assert_eq!(outcome.processes[0].path.display().to_string(), top);
    for p in &outcome.processes[1..] {
        assert!(
            p.path
                .display()
                .to_string()
                .starts_with(&format!("{top}.{}", p.pid)),
            "{}",
            p.path.display()
        );
    }

    let dir = tempfile::tempdir().unwrap();
    let (outcome, out, _) = traced(dir.path(), script, false);
    assert_eq!(outcome.exit_code, 7);
    assert_eq!(String::from_utf8_lossy(&out), "100\n10\n1\n");
    assert_eq!(
        outcome.processes.len(),
        1,
        "--no-follow traces the top process only: {:?}",
        outcome.processes
    );
}

#[test]
fn static_binary_gets_a_plain_message() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("s.c");
    std::fs::write(
        &src,
        "#include <stdlib.h>\nint main(void) { free(malloc(10)); return 3; }\n",
    )
    .unwrap();
    let exe = dir.path().join("static");
    let ok = Command::new("cc")
        .args(["-static", "-o"])
        .arg(&exe)
        .arg(&src)
        .status()
        .is_ok_and(|s| s.success());
    if !ok {
        eprintln!("skipping: cc -static is not available (install libc6-dev)");
        return;
    }
    let outcome = common::record(dir.path(), &[exe.into_os_string()], |_| {});
    assert_eq!(outcome.exit_code, 3);
    assert!(outcome.processes.is_empty());
    assert_eq!(outcome.warnings.len(), 1, "{:?}", outcome.warnings);
    assert!(
        outcome.warnings[0].contains("statically linked"),
        "{}",
        outcome.warnings[0]
    );
    assert!(
        !dir.path().join("trace.atrace").exists(),
        "no silent empty trace"
    );
}

#[test]
fn exit_code_and_signal_are_passed_on() {
    let dir = tempfile::tempdir().unwrap();
    assert_eq!(
        common::record(dir.path(), &common::os(&["sh", "-c", "exit 42"]), |_| {}).exit_code,
        42
    );
    let dir = tempfile::tempdir().unwrap();
    assert_eq!(
        common::record(
            dir.path(),
            &common::os(&["sh", "-c", "kill -TERM $$"]),
            |_| {}
        )
        .exit_code,
        128 + 15
    );
}

#[test]
fn trace_files_are_private_and_never_overwritten() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    // The environment of the traced program never reaches the trace (argv of `env` does, so the
    // check is on the file of the program it execs).
    let cmd = common::os(&[
        "env",
        "ALLOCSCOPE_TEST_SECRET=xyzzy-4711",
        "sh",
        "-c",
        "true",
    ]);
    let o = common::record(dir.path(), &cmd, |_| {});
    assert_eq!(o.exit_code, 0);
    for p in &o.processes {
        let mode = std::fs::metadata(&p.path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "{}", p.path.display());
    }
    let sh = o
        .processes
        .iter()
        .find(|p| p.command.first().is_some_and(|c| c == "sh"))
        .expect("sh's trace");
    let bytes = std::fs::read(&sh.path).unwrap();
    assert!(
        !bytes.windows(10).any(|w| w == b"xyzzy-4711"),
        "environment leaked into {}",
        sh.path.display()
    );

    // An existing output is never overwritten.
    let opts = collector::RecordOptions {
        output: Some(sh.path.clone()),
        command: common::os(&["true"]),
        ..Default::default()
    };
    let err = collector::record(&opts, |_| {}).unwrap_err().to_string();
    assert!(err.contains("already exists"), "{err}");

    // The shim never writes through a symlink put where its file would go: it picks the next name.
    let victim = dir.path().join("victim");
    std::fs::write(&victim, b"keep me").unwrap();
    let link = dir.path().join("linked.atrace");
    std::os::unix::fs::symlink(&victim, &link).unwrap();
    let st = Command::new("true")
        .env("LD_PRELOAD", collector::shim::install().unwrap())
        .env("ALLOCSCOPE_OUT", &link)
        .env("ALLOCSCOPE_PARENT_PID", std::process::id().to_string())
        .status()
        .unwrap();
    assert!(st.success());
    assert_eq!(std::fs::read(&victim).unwrap(), b"keep me");
    let others: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("linked.atrace."))
        .collect();
    assert_eq!(others.len(), 1, "{others:?}");
}

#[test]
fn every_way_out_flushes_the_trace() {
    let dir = tempfile::tempdir().unwrap();
    let exe = common::compile("exits", dir.path());
    for (how, code) in [
        ("return", 5),
        ("exit", 3),
        ("_exit", 4),
        ("abort", 128 + 6),
        ("busy-exit", 6),
    ] {
        let d = tempfile::tempdir().unwrap();
        // A long flush interval: only the exit paths can have written the events.
        let o = common::record(d.path(), &[exe.clone().into_os_string(), how.into()], |o| {
            o.flush_ms = 60_000
        });
        assert_eq!(o.exit_code, code, "{how}");
        let p = &o.processes[0];
        assert_eq!(p.missing, 0, "{how}");
        let evs = common::events(&p.path);
        let ours = evs
            .iter()
            .filter(|e| e.op == traces::Op::Malloc && (100..1100).contains(&e.size))
            .count();
        assert!(
            ours >= 1000,
            "{how}: {ours} of the 1000 mallocs in the trace"
        );
        assert_eq!(common::order_violations(&evs), 0, "{how}");
    }
}

#[test]
fn a_program_that_reuses_the_trace_descriptor_is_left_alone() {
    let dir = tempfile::tempdir().unwrap();
    let exe = common::compile("closefds", dir.path());
    let out = dir.path().join("program-output");
    let o = common::record(
        dir.path(),
        &[exe.into_os_string(), out.into_os_string()],
        |o| o.flush_ms = 20,
    );
    assert_eq!(o.exit_code, 0, "the recorder wrote into the program's file");
    assert!(
        o.warnings
            .iter()
            .any(|w| w.contains("closed or replaced the trace file")),
        "the user is told why the trace stops early: {:?}",
        o.warnings
    );
}

#[test]
fn a_process_without_malloc_calls_is_named_only_when_it_ran_a_while() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("quiet.c");
    std::fs::write(
        &src,
        "#include <unistd.h>\nint main(void) { usleep(400000); return 0; }\n",
    )
    .unwrap();
    let exe = dir.path().join("quiet");
    assert!(Command::new("cc")
        .arg("-o")
        .arg(&exe)
        .arg(&src)
        .status()
        .unwrap()
        .success());
    let o = common::record(dir.path(), &[exe.into_os_string()], |_| {});
    assert_eq!(o.exit_code, 0);
    assert_eq!(o.processes.len(), 1);
    if o.processes[0].events == 0 {
        assert_eq!(o.warnings.len(), 1, "{:?}", o.warnings);
        assert!(
            o.warnings[0].contains("without one call to malloc"),
            "{}",
            o.warnings[0]
        );
    }
    // `true` exits at once, maybe without a single malloc: nothing to warn about.
    let d = tempfile::tempdir().unwrap();
    let o = common::record(d.path(), &common::os(&["true"]), |_| {});
    assert!(o.warnings.is_empty(), "{:?}", o.warnings);
}
