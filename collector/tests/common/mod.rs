//! Helpers shared by the collector's integration tests: compiling C test programs with the system's
//! `cc`, recording a command with the embedded shim, reading traces back.
#![allow(dead_code)]

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::Command;

use collector::{Outcome, RecordOptions};
use traces::{Event, TraceReader};

/// Compiles `collector/tests/c/<name>.c` into `dir` and returns the executable.
pub fn compile(name: &str, dir: &Path) -> PathBuf {
    let src = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/c")
        .join(format!("{name}.c"));
    let exe = dir.join(name);
    let out = Command::new("cc")
        .args(["-O1", "-g", "-fno-builtin", "-pthread", "-o"])
        .arg(&exe)
        .arg(&src)
        .output()
        .expect("the tests need a C compiler: install one (apt-get install gcc)");
    assert!(
        out.status.success(),
        "cc {}: {}",
        src.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    exe
}

/// Records `command` with the embedded shim; the top trace goes to `dir/trace.atrace`.
pub fn record(dir: &Path, command: &[OsString], tweak: impl FnOnce(&mut RecordOptions)) -> Outcome {
    let mut opts = RecordOptions {
        output: Some(dir.join("trace.atrace")),
        command: command.to_vec(),
        verify: true,
        ..RecordOptions::default()
    };
    tweak(&mut opts);
    collector::record(&opts, |line| eprintln!("record: {line}")).expect("record runs")
}

/// Every event of a trace, in seq order; panics on any read error.
pub fn events(path: &Path) -> Vec<Event> {
    let r = TraceReader::open(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    r.events()
        .map(|e| e.unwrap_or_else(|e| panic!("{}: {e}", path.display())))
        .collect()
}

pub fn os(args: &[&str]) -> Vec<OsString> {
    args.iter().map(OsString::from).collect()
}

/// Checks global order on a whole trace: no allocation returns a live address, every non-NULL free
/// or realloc releases a live one. Returns the number of violations (with the first few printed).
pub fn order_violations(evs: &[Event]) -> usize {
    let mut live = std::collections::HashSet::new();
    let mut bad = 0;
    for e in evs {
        if e.releases() && !live.remove(&e.old_addr) {
            if bad < 5 {
                eprintln!("release of a non-live address: {e:?}");
            }
            bad += 1;
        }
        if e.allocates() && !live.insert(e.addr) {
            if bad < 5 {
                eprintln!("allocation of a live address: {e:?}");
            }
            bad += 1;
        }
    }
    bad
}
