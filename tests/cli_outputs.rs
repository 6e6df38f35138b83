//! Outputs never destroy inputs and are never partial (src/cmd/output.rs): an output naming an
//! input (by path, symlink or hard link) is refused; a symlink at the destination is replaced,
//! not followed; a failed write (a bad input, a full disk, SIGTERM) leaves neither a partial
//! file nor a temporary one; inputs that are FIFOs are refused at once, never waited on.

mod common;

use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{allocscope, ok, stderr};

fn sample(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("traces/samples")
        .join(name)
}

/// A copy of a bundled trace in `dir`.
fn copy_sample(name: &str, dir: &Path) -> PathBuf {
    let p = dir.join(name);
    std::fs::copy(sample(name), &p).unwrap();
    p
}

/// Asserts a failure of exit 2 with exactly one line on stderr containing `what`.
fn one_line_error(o: &std::process::Output, what: &str) -> String {
    let err = stderr(o);
    assert_eq!(o.status.code(), Some(2), "stderr: {err}");
    assert_eq!(err.lines().count(), 1, "one line: {err}");
    assert!(err.contains(what), "want {what:?} in: {err}");
    assert!(!err.contains("panicked"), "{err}");
    err
}

/// Names in `dir` that look like our temporary files or staging directories.
fn leftovers(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with('.') && (n.ends_with(".tmp") || n.starts_with(".allocscope-")))
        .collect()
}

#[test]
fn an_output_naming_an_input_is_refused_and_the_input_kept() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    copy_sample("v1-golden.atrace", d);
    std::fs::copy(sample("v1-golden.csv"), d.join("w.csv")).unwrap();
    ok(&allocscope(
        &["replay", "v1-golden.atrace", "--json", "a.json", "-q"],
        d,
    ));
    ok(&allocscope(
        &["replay", "v1-golden.atrace", "--json", "b.json", "-q"],
        d,
    ));
    std::os::unix::fs::symlink("v1-golden.atrace", d.join("link.atrace")).unwrap();
    std::fs::hard_link(d.join("v1-golden.atrace"), d.join("hard.atrace")).unwrap();
    std::fs::create_dir(d.join("sub")).unwrap();
    let cases: &[&[&str]] = &[
        &["replay", "v1-golden.atrace", "--json", "v1-golden.atrace"],
        &["replay", "v1-golden.atrace", "--timeline", "hard.atrace"],
        &["report", "v1-golden.atrace", "--json", "v1-golden.atrace"],
        &["report", "v1-golden.atrace", "--json", "link.atrace"],
        &["export", "v1-golden.atrace", "-o", "v1-golden.atrace"],
        &["export", "v1-golden.atrace", "-o", "hard.atrace"],
        &[
            "export",
            "v1-golden.atrace",
            "-o",
            "sub/../v1-golden.atrace",
        ],
        &[
            "tune-classes",
            "v1-golden.atrace",
            "-o",
            "link.atrace",
            "--no-replay",
        ],
        &["import", "w.csv", "-o", "w.csv"],
        &["trend", "a.json", "b.json", "-o", "b.json"],
        &["compare", "a.json", "b.json", "--markdown", "a.json"],
    ];
    let before: Vec<Vec<u8>> = ["v1-golden.atrace", "w.csv", "a.json", "b.json"]
        .iter()
        .map(|f| std::fs::read(d.join(f)).unwrap())
        .collect();
    for args in cases {
        let o = allocscope(args, d);
        one_line_error(&o, "would destroy the input");
    }
    for (f, b) in ["v1-golden.atrace", "w.csv", "a.json", "b.json"]
        .iter()
        .zip(before)
    {
        assert_eq!(std::fs::read(d.join(f)).unwrap(), b, "{f} was changed");
    }
    assert!(std::fs::symlink_metadata(d.join("link.atrace"))
        .unwrap()
        .is_symlink());
    assert!(leftovers(d).is_empty(), "{:?}", leftovers(d));
}

#[test]
fn a_symlink_at_the_destination_is_replaced_not_followed() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    copy_sample("v1-golden.atrace", d);
    std::fs::write(d.join("victim.txt"), "keep me").unwrap();
    std::os::unix::fs::symlink("victim.txt", d.join("out.csv")).unwrap();
    ok(&allocscope(
        &["export", "v1-golden.atrace", "-o", "out.csv"],
        d,
    ));
    let m = std::fs::symlink_metadata(d.join("out.csv")).unwrap();
    assert!(m.is_file(), "the link was replaced by the export");
    assert!(std::fs::read_to_string(d.join("out.csv"))
        .unwrap()
        .starts_with("seq,"));
    assert_eq!(
        std::fs::read_to_string(d.join("victim.txt")).unwrap(),
        "keep me"
    );

    // report -o DIR: a link planted at DIR/index.html is replaced too.
    std::fs::create_dir(d.join("rep")).unwrap();
    std::os::unix::fs::symlink("../victim.txt", d.join("rep/index.html")).unwrap();
    std::fs::write(d.join("rep/notes.txt"), "mine").unwrap();
    ok(&allocscope(
        &["report", "v1-golden.atrace", "-o", "rep", "-q"],
        d,
    ));
    assert!(std::fs::symlink_metadata(d.join("rep/index.html"))
        .unwrap()
        .is_file());
    assert_eq!(
        std::fs::read_to_string(d.join("victim.txt")).unwrap(),
        "keep me"
    );
    assert_eq!(
        std::fs::read_to_string(d.join("rep/notes.txt")).unwrap(),
        "mine"
    );
    assert!(leftovers(&d.join("rep")).is_empty());
}

#[test]
fn an_existing_output_is_replaced_whole_keeping_its_mode() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    copy_sample("v1-golden.atrace", d);
    std::fs::write(d.join("r.json"), "old junk").unwrap();
    std::fs::set_permissions(d.join("r.json"), std::fs::Permissions::from_mode(0o640)).unwrap();
    ok(&allocscope(
        &["replay", "v1-golden.atrace", "--json", "r.json", "-q"],
        d,
    ));
    let v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(d.join("r.json")).unwrap()).unwrap();
    assert!(v["trace"]["digest"]
        .as_str()
        .unwrap()
        .starts_with("sha256:"));
    assert_eq!(
        std::fs::metadata(d.join("r.json")).unwrap().mode() & 0o777,
        0o640
    );

    // import follows the same rule as every -o: an existing file is replaced.
    std::fs::copy(sample("v1-golden.csv"), d.join("w.csv")).unwrap();
    std::fs::write(d.join("t.atrace"), "old").unwrap();
    ok(&allocscope(&["import", "w.csv", "-o", "t.atrace"], d));
    let info = ok(&allocscope(&["info", "t.atrace"], d));
    assert!(info.contains("events     21"), "{info}");
    // A stream is written, not replaced by a file.
    ok(&allocscope(
        &["replay", "v1-golden.atrace", "--json", "/dev/null", "-q"],
        d,
    ));
    assert!(std::fs::metadata("/dev/null")
        .unwrap()
        .file_type()
        .is_char_device());
    assert!(leftovers(d).is_empty());
}

#[test]
fn a_failed_write_leaves_no_file_and_no_temporary_file() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    // A bad CSV: no trace, no temporary file, and an existing trace of that name untouched.
    std::fs::write(
        d.join("bad.csv"),
        "op,id,size\nmalloc,a,12\nfrobnicate,b,3\n",
    )
    .unwrap();
    let o = allocscope(&["import", "bad.csv", "-o", "new.atrace"], d);
    one_line_error(&o, "bad.csv");
    assert!(!d.join("new.atrace").exists());
    std::fs::write(d.join("old.atrace"), "precious").unwrap();
    let o = allocscope(&["import", "bad.csv", "-o", "old.atrace"], d);
    one_line_error(&o, "bad.csv");
    assert_eq!(
        std::fs::read_to_string(d.join("old.atrace")).unwrap(),
        "precious"
    );

    // A truncated trace exported without --allow-truncated: no partial CSV.
    let whole = std::fs::read(sample("python-dict.atrace")).unwrap();
    std::fs::write(d.join("cut.atrace"), &whole[..whole.len() * 2 / 3]).unwrap();
    let o = allocscope(&["export", "cut.atrace", "-o", "cut.csv"], d);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains("--allow-truncated"), "{}", stderr(&o));
    assert!(!d.join("cut.csv").exists(), "a partial export was left");
    ok(&allocscope(
        &["export", "cut.atrace", "-o", "cut.csv", "--allow-truncated"],
        d,
    ));
    assert!(d.join("cut.csv").exists());
    assert!(leftovers(d).is_empty(), "{:?}", leftovers(d));
}

/// A small tmpfs mounted for one test, unmounted when dropped.
struct SmallDisk(PathBuf);

impl SmallDisk {
    fn mount(at: &Path) -> SmallDisk {
        std::fs::create_dir_all(at).unwrap();
        let o = Command::new("mount")
            .args(["-t", "tmpfs", "-o", "size=256k", "tmpfs"])
            .arg(at)
            .output()
            .expect("run mount");
        assert!(
            o.status.success(),
            "this test mounts a 256 KiB tmpfs to fill a disk and needs root (it runs as root \
             here and in CI): {}",
            String::from_utf8_lossy(&o.stderr)
        );
        SmallDisk(at.to_path_buf())
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

#[test]
fn a_full_disk_is_one_clear_line_and_leaves_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    copy_sample("python-dict.atrace", d);
    let disk = SmallDisk::mount(&d.join("full"));
    // Leave one page free: enough to start a file, not to finish any of these (the smallest,
    // the latency histograms, is about 7 KB, and its size follows the measured latencies: with
    // two pages free it sometimes fitted).
    std::fs::write(disk.0.join("pad"), vec![0u8; 252 * 1024]).unwrap();
    let cases: &[&[&str]] = &[
        &["report", "python-dict.atrace", "-o", "full/out", "-q"],
        &[
            "report",
            "python-dict.atrace",
            "--json",
            "full/r.json",
            "-q",
        ],
        &[
            "replay",
            "python-dict.atrace",
            "--json",
            "full/r.json",
            "-q",
            "--no-timing",
        ],
        &["replay", "python-dict.atrace", "--hlog", "full/hlog", "-q"],
        &[
            "replay",
            "python-dict.atrace",
            "--timeline",
            "full/tl.csv",
            "--timeline-every",
            "1000",
            "-q",
        ],
        &["export", "python-dict.atrace", "-o", "full/e.csv"],
    ];
    for args in cases {
        let o = allocscope(args, d);
        assert!(!o.status.success(), "{args:?} fitted in the disk");
        let err = one_line_error(&o, "No space left on device");
        assert!(err.contains("cannot write full/"), "{args:?}: {err}");
        assert_eq!(err.matches("No space left").count(), 1, "said once: {err}");
        for bad in ["ImageError", "Custom {", "font", "cannot read", ".tmp"] {
            assert!(!err.contains(bad), "{args:?}: {err}");
        }
    }
    let mut names: Vec<String> = walk(&disk.0);
    names.sort();
    assert_eq!(
        names,
        ["hlog/", "out/", "pad"],
        "no partial or temporary file"
    );
}

/// Every path under `dir`, relative, directories with a trailing slash.
fn walk(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let e = e.unwrap();
        let name = e.file_name().to_string_lossy().into_owned();
        if e.file_type().unwrap().is_dir() {
            out.push(format!("{name}/"));
            out.extend(walk(&e.path()).into_iter().map(|n| format!("{name}/{n}")));
        } else {
            out.push(name);
        }
    }
    out
}

#[test]
fn sigterm_during_a_write_removes_the_temporary_file() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    copy_sample("python-dict.atrace", d);
    let mut child = Command::new(env!("CARGO_BIN_EXE_allocscope"))
        .args(["export", "python-dict.atrace", "-o", "e.csv"])
        .current_dir(d)
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    let temp = loop {
        let found = std::fs::read_dir(d)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .find(|n| n.starts_with(".e.csv.") && n.ends_with(".tmp"));
        if let Some(t) = found {
            break t;
        }
        assert!(
            child.try_wait().unwrap().is_none(),
            "the export ended before its temporary file was seen"
        );
        assert!(Instant::now() < deadline, "no temporary file appeared");
        std::thread::sleep(Duration::from_millis(1));
    };
    let kill = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(kill.success());
    let status = child.wait().unwrap();
    assert!(!status.success());
    assert!(!d.join(&temp).exists(), "{temp} was left behind");
    assert!(!d.join("e.csv").exists(), "a partial export was left");
}

/// Runs allocscope and fails the test if it has not ended within 20 s (it would hang forever).
fn allocscope_within(args: &[&str], dir: &Path) -> std::process::Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_allocscope"))
        .args(args)
        .current_dir(dir)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("allocscope {args:?} hung on a FIFO");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.wait_with_output().unwrap()
}

#[test]
fn fifo_inputs_are_refused_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    copy_sample("v1-golden.atrace", d);
    ok(&allocscope(
        &["replay", "v1-golden.atrace", "--json", "r.json", "-q"],
        d,
    ));
    let made = Command::new("mkfifo").arg(d.join("fifo")).status().unwrap();
    assert!(made.success());
    let cases: &[&[&str]] = &[
        &["compare", "fifo", "r.json"],
        &["compare", "r.json", "fifo"],
        &["trend", "r.json", "fifo", "-o", "t.svg"],
        &["report", "v1-golden.atrace", "--replay", "fifo"],
        &[
            "report",
            "v1-golden.atrace",
            "--replay-timeline",
            "fifo",
            "-o",
            "out",
        ],
        &["report", "v1-golden.atrace", "--classes", "fifo"],
        &["replay", "v1-golden.atrace", "--config", "fifo"],
        &["replay", "v1-golden.atrace", "--size-classes", "fifo"],
        &["import", "fifo", "-o", "t.atrace"],
    ];
    for args in cases {
        let o = allocscope_within(args, d);
        one_line_error(&o, "not a regular file");
    }
}
