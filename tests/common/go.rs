//! Building and running the Go test programs (`tests/go/allocprog`, `tests/go/spanprog`) with
//! the toolchain CI installs. Go is found via `ALLOCSCOPE_GO`, else `<repo>/.venv-go/bin/go`,
//! else `go` on PATH; without it a test fails when `CI=true` and is skipped loudly otherwise.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn find_go() -> Option<PathBuf> {
    if let Ok(g) = std::env::var("ALLOCSCOPE_GO") {
        return Some(PathBuf::from(g));
    }
    let venv = repo_root().join(".venv-go/bin/go");
    if venv.exists() {
        return Some(venv);
    }
    Command::new("go")
        .arg("version")
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|_| PathBuf::from("go"))
}

/// `allocprog` built once per test process, or `None` (skip) without a Go toolchain.
pub fn allocprog() -> Option<PathBuf> {
    static BIN: OnceLock<Option<PathBuf>> = OnceLock::new();
    BIN.get_or_init(|| build("allocprog")).clone()
}

/// `spanprog` (tests/go_spans.rs) built once per test process, or `None` as [`allocprog`].
pub fn spanprog() -> Option<PathBuf> {
    static BIN: OnceLock<Option<PathBuf>> = OnceLock::new();
    BIN.get_or_init(|| build("spanprog")).clone()
}

/// Builds `tests/go/<name>` into the tests' own directory.
fn build(name: &str) -> Option<PathBuf> {
    let Some(go) = find_go() else {
        if std::env::var("CI").as_deref() == Ok("true") {
            panic!("Go toolchain not found (set ALLOCSCOPE_GO) and CI=true");
        }
        eprintln!("\n*** SKIPPING Go trace tests: no Go toolchain (set ALLOCSCOPE_GO) ***\n");
        return None;
    };
    let out = Path::new(env!("CARGO_TARGET_TMPDIR")).join(name);
    std::fs::create_dir_all(&out).unwrap();
    let bin = out.join(name);
    let mut cmd = Command::new(&go);
    cmd.args(["build", "-o"])
        .arg(&bin)
        .arg(".")
        .current_dir(repo_root().join("tests/go").join(name))
        .env("GOTOOLCHAIN", "local")
        .env("GOFLAGS", "-mod=mod")
        .env("CGO_ENABLED", "0");
    for (var, dir) in [("GOCACHE", "go-cache"), ("GOPATH", "go-path")] {
        if std::env::var_os(var).is_none() && std::env::var_os("HOME").is_none() {
            cmd.env(var, out.join(dir));
        }
    }
    let o = cmd.output().expect("run go build");
    assert!(
        o.status.success(),
        "building {name} failed: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    Some(bin)
}

/// Runs `allocprog MODE N TRACE` (GOMAXPROCS 2, with `env` added); returns what it printed:
/// the runtime's counts for the traced window.
pub fn run(
    bin: &Path,
    mode: &str,
    n: u32,
    trace: &Path,
    env: &[(&str, &str)],
) -> serde_json::Value {
    let o = Command::new(bin)
        .args([mode, &n.to_string()])
        .arg(trace)
        .env("GOMAXPROCS", "2")
        .envs(env.iter().copied())
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "allocprog {mode}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    serde_json::from_slice(&o.stdout).unwrap()
}

/// The environment that turns the runtime's alloc/free events on.
pub const ALLOC_FREE: (&str, &str) = ("GODEBUG", "traceallocfree=1");
