//! Crafted traces through the real binary: CRC-valid lies in indexes and chunk headers, bombs,
//! overlapping chunks, missing chunks, cut files, FIFOs. Every verb that reads a trace gives a
//! clear line and exit 2, never a crash, and stays under 256 MiB of peak memory (the child's
//! `ru_maxrss`) and 10 s. The crafting helpers are shared with `traces/tests/crafted.rs`.

mod common;
#[path = "../traces/tests/craft/mod.rs"]
mod craft;

use std::path::Path;
use std::time::Duration;

use common::{allocscope_measured, Measured};
use craft::*;
use traces::{EndStatus, Ending};

const MAX_RSS_BYTES: u64 = 256 << 20;
const MAX_TIME: Duration = Duration::from_secs(10);

/// Runs the binary with `env` and checks the bounds every run must keep.
fn run_env(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Measured {
    let m = allocscope_measured(args, dir, env, 3 * MAX_TIME);
    eprintln!(
        "TIMING {args:?} {:?} {} MiB",
        m.elapsed,
        m.max_rss_bytes >> 20
    );
    let what = format!(
        "{args:?}: exit {:?}, {} stderr lines, stderr: {}",
        m.code,
        m.stderr_lines,
        m.stderr.chars().take(2000).collect::<String>()
    );
    assert!(m.code.is_some(), "ended by a signal: {what}");
    assert!(
        m.max_rss_bytes < MAX_RSS_BYTES,
        "peak RSS {} MiB: {what}",
        m.max_rss_bytes >> 20
    );
    assert!(m.elapsed < MAX_TIME, "took {:?}: {what}", m.elapsed);
    for bad in ["panicked", "backtrace", "memory allocation"] {
        assert!(!m.stderr.contains(bad), "{what}");
    }
    m
}

fn run(dir: &Path, args: &[&str]) -> Measured {
    run_env(dir, args, &[])
}

/// `file` (written into `dir`) is refused by every verb that reads it: exit 2, at most
/// `max_lines` lines on stderr, each verb naming the problem with `says`.
fn refused_by_every_verb(dir: &Path, name: &str, bytes: &[u8], says: &str, max_lines: u64) {
    std::fs::write(dir.join(name), bytes).unwrap();
    let csv = format!("{name}.csv");
    let verbs: [&[&str]; 4] = [
        &["info", name],
        &["export", name, "-o", &csv],
        &["report", name, "--quiet"],
        &["replay", name, "--quiet", "--no-touch"],
    ];
    for args in verbs {
        let m = run(dir, args);
        assert_eq!(m.code, Some(2), "{args:?}: {}", m.stderr);
        assert!(
            m.stderr.contains(says),
            "{args:?} does not say {says:?}: {}",
            m.stderr
        );
        assert!(
            m.stderr_lines <= max_lines,
            "{args:?}: {} lines: {}",
            m.stderr_lines,
            m.stderr.chars().take(2000).collect::<String>()
        );
    }
}

/// A truncation-class problem: with `--allow-truncated`, `info` describes the `events` read.
fn accepted_when_allowed(dir: &Path, name: &str, events: u64) {
    let m = run(dir, &["info", name, "--allow-truncated", "--json"]);
    assert_eq!(m.code, Some(0), "{}", m.stderr);
    assert!(
        m.stderr.starts_with("allocscope: warning: "),
        "{}",
        m.stderr
    );
    let info: serde_json::Value = serde_json::from_str(&m.stdout).unwrap();
    assert_eq!(info["stats"]["events"].as_u64(), Some(events));
}

fn three_chunks() -> Vec<Vec<u8>> {
    (0..3).map(|i| chunk(&events(i * 100, 100))).collect()
}

fn exited() -> EndStatus {
    EndStatus::new(Ending::Exited)
}

#[test]
fn index_lies_are_found_and_every_event_is_still_read() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    // An entry claiming 4 billion events: an allocation failure (abort) before.
    let mut huge = assemble(&three_chunks(), Some(&exited()));
    // (The largest count an index entry can claim: 24 bits; the top byte names the chunk kind.)
    rewrite_index(&mut huge, |list| list[1].count = (1 << 24) - 8);
    refused_by_every_verb(d, "huge.atrace", &huge, "entry 1 says 16777208 events", 1);
    accepted_when_allowed(d, "huge.atrace", 300);
    // No entries while chunks exist: read as an empty, complete trace before.
    let mut empty = assemble(&three_chunks(), Some(&exited()));
    rewrite_index(&mut empty, Vec::clear);
    refused_by_every_verb(d, "empty.atrace", &empty, "lists no chunks", 1);
    accepted_when_allowed(d, "empty.atrace", 300);
}

#[test]
fn a_missing_middle_chunk_is_reported_not_read_as_complete() {
    let dir = tempfile::tempdir().unwrap();
    let c = three_chunks();
    let bytes = assemble(&[c[0].clone(), c[2].clone()], Some(&exited()));
    refused_by_every_verb(
        dir.path(),
        "gap.atrace",
        &bytes,
        "events 100..199 are missing",
        1,
    );
    accepted_when_allowed(dir.path(), "gap.atrace", 200);
}

#[test]
fn a_cut_recording_is_reported_with_its_last_event() {
    let dir = tempfile::tempdir().unwrap();
    let bytes = assemble(&three_chunks(), None);
    refused_by_every_verb(
        dir.path(),
        "cut.atrace",
        &bytes,
        "the recording was cut: the file has no end record",
        1,
    );
    let m = run(dir.path(), &["info", "cut.atrace"]);
    assert!(
        m.stderr.contains("the last event (seq 299)"),
        "{}",
        m.stderr
    );
    assert!(
        m.stdout.contains("ended      the recording was cut"),
        "{}",
        m.stdout
    );
    accepted_when_allowed(dir.path(), "cut.atrace", 300);
}

#[test]
fn bombs_stay_small_and_say_what_is_wrong_once() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    // A chunk claiming 4 Mi events (320 MiB decoded) in a 5 KB file.
    let count = assemble(&[zero_bomb(4 << 20, 0)], Some(&exited()));
    refused_by_every_verb(d, "count.atrace", &count, "count out of bounds", 2);
    // Eight chunks over the same 2^18 seqs: one line for the 1.8 million repeats, not one per
    // event (export writes the 2^18 events as CSV within the time limit of a debug build).
    let repeats = assemble(&vec![zero_bomb(1 << 18, 0); 8], Some(&exited()));
    refused_by_every_verb(d, "repeats.atrace", &repeats, "appears in two chunks", 1);
    // Eight chunks of 42 MiB decompressed each over the same seqs: the merge stops at its budget.
    let wide = assemble(&vec![wide_bomb(1 << 20, 0); 8], Some(&exited()));
    refused_by_every_verb(d, "wide.atrace", &wide, "would hold more than 128 MiB", 2);
}

#[test]
fn how_a_finished_recording_ended_is_shown_by_info_and_report() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let killed = EndStatus {
        how: Ending::Killed,
        signal: Some(9),
        recovered_events: 12,
        ..EndStatus::default()
    };
    std::fs::write(d.join("k.atrace"), assemble(&three_chunks(), Some(&killed))).unwrap();
    let line = "the process was killed by signal 9 (SIGKILL); 12 events were recovered";
    let m = run(d, &["info", "k.atrace"]);
    assert_eq!(m.code, Some(0), "readable without flags: {}", m.stderr);
    assert!(
        m.stdout.contains(&format!("ended      {line}")),
        "{}",
        m.stdout
    );
    let m = run(d, &["report", "k.atrace", "--json", "r.json"]);
    assert_eq!(m.code, Some(0), "{}", m.stderr);
    assert!(
        m.stdout.contains(&format!("recording ended: {line}")),
        "{}",
        m.stdout
    );
    let r: serde_json::Value =
        serde_json::from_slice(&std::fs::read(d.join("r.json")).unwrap()).unwrap();
    let end = &r["recording_end"];
    assert_eq!(end["how"], "killed");
    assert_eq!(end["signal"], 9);
    assert_eq!(end["recovered_events"], 12);
    assert_eq!(end["finished"], true);
    assert!(end["description"].as_str().unwrap().starts_with(line));
}

#[test]
fn a_fifo_is_refused_at_once_not_waited_on() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let made = std::process::Command::new("mkfifo")
        .arg(d.join("pipe"))
        .status()
        .unwrap();
    assert!(made.success());
    for args in [
        &["info", "pipe"][..],
        &["import", "pipe", "-o", "t.atrace"],
        &["replay", "pipe"],
    ] {
        let m = run(d, args);
        assert_eq!(m.code, Some(2), "{args:?}: {}", m.stderr);
        assert!(
            m.stderr
                .contains("pipe: is a named pipe (FIFO), not a regular file"),
            "{}",
            m.stderr
        );
        assert_eq!(m.stderr_lines, 1, "{}", m.stderr);
    }
    assert!(!d.join("t.atrace").exists());
}

#[test]
fn a_csv_replay_writes_no_temporary_file() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::write(
        d.join("w.csv"),
        "op,id,size\nmalloc,a,100\nmalloc,b,24\nfree,a,\n",
    )
    .unwrap();
    // A temporary directory that does not exist: any temporary file fails the replay.
    let tmp = [("TMPDIR", "/nonexistent/allocscope-tmp")];
    let m = run_env(d, &["replay", "w.csv", "--no-touch"], &tmp);
    assert_eq!(m.code, Some(0), "{}", m.stderr);
    let m = run_env(d, &["replay", "w.csv", "--sweep", "gogc=50,100"], &tmp);
    assert_eq!(m.code, Some(0), "{}", m.stderr);
}

#[test]
fn a_write_failure_says_cannot_write() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::write(
        d.join("t.atrace"),
        assemble(&three_chunks(), Some(&exited())),
    )
    .unwrap();
    let m = run(d, &["export", "t.atrace", "-o", "/dev/full"]);
    assert_eq!(m.code, Some(2), "{}", m.stderr);
    assert!(
        m.stderr.contains("cannot write: No space left on device"),
        "{}",
        m.stderr
    );
    assert!(!m.stderr.contains("cannot read"), "{}", m.stderr);
}
