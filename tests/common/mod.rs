//! Helpers shared by the integration tests that run the real `allocscope` binary.
// Each test file compiles this module on its own and uses part of it.
#![allow(dead_code)]

pub mod go;

use std::path::Path;
use std::process::{Command, Output};

/// Runs `allocscope ARGS` in `dir`.
pub fn allocscope(args: &[&str], dir: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_allocscope"))
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap()
}

/// Asserts the command succeeded (showing its output when not) and returns its stdout.
pub fn ok(o: &Output) -> String {
    assert!(
        o.status.success(),
        "exit {:?}\nstdout: {}\nstderr: {}",
        o.status.code(),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// What a measured run of the binary did.
pub struct Measured {
    /// Exit code (None when a signal ended it).
    pub code: Option<i32>,
    /// The first MiB of stdout, and its line count.
    pub stdout: String,
    pub stdout_lines: u64,
    /// The first 64 KiB of stderr, and its line count.
    pub stderr: String,
    pub stderr_lines: u64,
    /// Peak resident memory of the process (rusage `ru_maxrss`).
    pub max_rss_bytes: u64,
    pub elapsed: std::time::Duration,
}

/// Runs `allocscope ARGS` in `dir` with `env` added, measuring its peak memory (from `wait4`'s
/// rusage) and time; kills it after `kill_after`. Output is drained as it comes (a runaway
/// process may print millions of lines) and kept in part.
// The child is reaped by `wait4` below, not by std's `wait`, which does not give the rusage.
#[allow(clippy::zombie_processes)]
pub fn allocscope_measured(
    args: &[&str],
    dir: &Path,
    env: &[(&str, &str)],
    kill_after: std::time::Duration,
) -> Measured {
    use std::io::Read;
    use std::process::Stdio;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;
    let start = std::time::Instant::now();
    let mut child = Command::new(env!("CARGO_BIN_EXE_allocscope"))
        .args(args)
        .current_dir(dir)
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id() as libc::pid_t;
    let drain = |mut from: Box<dyn Read + Send>, keep: usize| {
        std::thread::spawn(move || {
            let (mut kept, mut lines, mut buf) = (Vec::new(), 0u64, vec![0u8; 1 << 16]);
            while let Ok(n) = from.read(&mut buf) {
                if n == 0 {
                    break;
                }
                lines += buf[..n].iter().filter(|&&b| b == b'\n').count() as u64;
                let room = keep.saturating_sub(kept.len()).min(n);
                kept.extend_from_slice(&buf[..room]);
            }
            (String::from_utf8_lossy(&kept).into_owned(), lines)
        })
    };
    let out = drain(Box::new(child.stdout.take().unwrap()), 1 << 20);
    let err = drain(Box::new(child.stderr.take().unwrap()), 64 << 10);
    let done = Arc::new(AtomicBool::new(false));
    let watchdog = {
        let done = Arc::clone(&done);
        std::thread::spawn(move || {
            while start.elapsed() < kill_after {
                if done.load(Ordering::Acquire) {
                    return;
                }
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
            if !done.load(Ordering::Acquire) {
                // SAFETY: kill(2) on the child's pid, which is not reaped yet (`done` is set
                // right after wait4 returns).
                unsafe { libc::kill(pid, libc::SIGKILL) };
            }
        })
    };
    let mut status = 0;
    // SAFETY: rusage is plain data that wait4 fills in.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: waits for our own child, writing into the two locals above.
    let reaped = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
    done.store(true, Ordering::Release);
    let elapsed = start.elapsed();
    assert_eq!(reaped, pid, "wait4 failed");
    watchdog.join().unwrap();
    let (stdout, stdout_lines) = out.join().unwrap();
    let (stderr, stderr_lines) = err.join().unwrap();
    Measured {
        code: libc::WIFEXITED(status).then(|| libc::WEXITSTATUS(status)),
        stdout,
        stdout_lines,
        stderr,
        stderr_lines,
        // ru_maxrss is in KiB on Linux.
        max_rss_bytes: usage.ru_maxrss as u64 * 1024,
        elapsed,
    }
}

/// Headless Chromium, when installed (`.ci/setup` installs it; CI must have it).
pub fn chromium() -> Option<std::path::PathBuf> {
    let found = ["/usr/bin/chromium", "/usr/bin/chromium-browser"]
        .iter()
        .map(std::path::PathBuf::from)
        .find(|p| p.exists());
    if found.is_none() {
        if std::env::var("CI").as_deref() == Ok("true") {
            panic!("chromium is missing on CI (apt-get install -y chromium)");
        }
        eprintln!("\n!!! SKIPPED: headless Chromium checks (install the chromium package) !!!\n");
    }
    found
}

/// Loads `url` in headless Chromium; returns the DOM after load and what the page's scripts
/// logged to the console (one line each; errors show as "Uncaught ...").
pub fn chromium_load(chrome: &Path, url: &str) -> (String, Vec<String>) {
    let out = std::process::Command::new(chrome)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-background-networking",
            "--enable-logging=stderr",
            "--v=0",
            "--dump-dom",
            url,
        ])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "chromium failed: {err}");
    let console = err
        .lines()
        .filter(|l| l.contains(":CONSOLE"))
        .map(str::to_string)
        .collect();
    (String::from_utf8_lossy(&out.stdout).into_owned(), console)
}

/// The Go toolchain: $ALLOCSCOPE_GO (what CI installs), else `go` on PATH.
pub fn go_tool() -> std::path::PathBuf {
    std::env::var_os("ALLOCSCOPE_GO")
        .map(Into::into)
        .unwrap_or_else(|| "go".into())
}

/// `go tool pprof -top` of `profile` for `sample`: flat value per function (`(inline)` marks
/// dropped), in exact units.
pub fn pprof_top(
    dir: &Path,
    profile: &str,
    sample: &str,
) -> std::collections::BTreeMap<String, u64> {
    let o = std::process::Command::new(go_tool())
        .args(["tool", "pprof", "-top", "-nodefraction=0", "-unit=B"])
        .arg(format!("-sample_index={sample}"))
        .arg(profile)
        .current_dir(dir)
        .output()
        .unwrap_or_else(|e| {
            panic!("this test needs Go: run `bash .ci/setup` or set ALLOCSCOPE_GO ({e})")
        });
    let text = ok(&o);
    let mut flat = std::collections::BTreeMap::new();
    let mut table = false;
    for line in text.lines() {
        if line.trim_start().starts_with("flat") {
            table = true;
            continue;
        }
        if !table {
            continue;
        }
        // flat flat% sum% cum cum% name...
        let cols: Vec<&str> = line.split_whitespace().collect();
        assert!(cols.len() >= 6, "{line:?} in {text}");
        let n: u64 = cols[0]
            .trim_end_matches('B')
            .parse()
            .unwrap_or_else(|_| panic!("{line:?}"));
        let name = cols[5..].join(" ");
        let name = name.trim_end_matches(" (inline)").to_string();
        if n > 0 {
            *flat.entry(name).or_default() += n;
        }
    }
    flat
}

/// Runs `allocscope ARGS` in `dir` with the symbol cache under `dir/cache`: a test never reads
/// or writes the user's cache.
pub fn allocscope_own_cache(dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_allocscope"))
        .args(args)
        .current_dir(dir)
        .env("XDG_CACHE_HOME", dir.join("cache"))
        .env_remove("HOME")
        .output()
        .unwrap()
}

/// Builds `collector/tests/c/<src>` with `compiler` into `dir/<out>` at -O2 without frame
/// pointers, with debug information (only the call-frame information can unwind it).
pub fn build_c(
    compiler: &str,
    src: &str,
    dir: &Path,
    out: &str,
    extra: &[&str],
) -> std::path::PathBuf {
    let src = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("collector/tests/c")
        .join(src);
    let exe = dir.join(out);
    let o = Command::new(compiler)
        .args(["-O2", "-fomit-frame-pointer", "-g", "-o"])
        .arg(&exe)
        .arg(&src)
        .args(extra)
        .output()
        .unwrap_or_else(|e| panic!("{compiler}: {e} (run `bash .ci/setup`)"));
    assert!(
        o.status.success(),
        "{compiler} {}: {}",
        src.display(),
        String::from_utf8_lossy(&o.stderr)
    );
    exe
}
