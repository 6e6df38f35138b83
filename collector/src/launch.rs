//! A recording session: install the shim, run the command with it preloaded, wait, summarise.
//!
//! The session directory (private, 0700, removed afterwards) holds the manifest, where each traced
//! process appends `trace <path>` (or `error <path> <message>`), and, for `--paused`/`--duration`,
//! the control page: a 4096-byte file the shim maps shared, whose first byte is 1 while recording.
//! `record` flips it on SIGUSR2 and when the duration ends; the traced program's signals are not
//! touched.

use std::ffi::OsString;
use std::fs;
use std::os::unix::fs::{DirBuilderExt, FileExt, OpenOptionsExt};
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use crate::summary::{summarize, verify, ProcessSummary};
use crate::{diagnose, shim, signals, RecordError};

/// What `record` was asked to do.
#[derive(Clone, Debug)]
pub struct RecordOptions {
    /// Trace of the top process (others add `.<pid>`). None: `allocscope.atrace` (or the first
    /// free `allocscope-<n>.atrace`) in the current directory.
    pub output: Option<PathBuf>,
    /// Trace forked and exec'd child processes too.
    pub follow: bool,
    /// Writer flush interval, ms.
    pub flush_ms: u64,
    /// Start with recording paused (SIGUSR2 to `record` toggles it).
    pub paused: bool,
    /// Stop recording this long after it (re)starts; the command keeps running.
    pub duration: Option<Duration>,
    pub command: Vec<OsString>,
    /// Use this shim instead of the embedded one (tests).
    pub shim: Option<PathBuf>,
    /// Read every event back after the run (slower); otherwise the chunk directory is checked.
    pub verify: bool,
    /// Measure the latency of every real call (two clock reads per call instead of one).
    pub latency: bool,
}

impl Default for RecordOptions {
    fn default() -> Self {
        RecordOptions {
            output: None,
            follow: true,
            flush_ms: 100,
            paused: false,
            duration: None,
            command: Vec::new(),
            shim: None,
            verify: false,
            latency: true,
        }
    }
}

/// What happened.
#[derive(Debug)]
pub struct Outcome {
    /// The command's exit code, or 128 + the signal that killed it.
    pub exit_code: i32,
    /// The path given to the top process.
    pub output: PathBuf,
    /// One per trace file written, in the order processes created them.
    pub processes: Vec<ProcessSummary>,
    /// Problems to show the user (recording errors, unreadable traces, blind spots).
    pub warnings: Vec<String>,
}

fn absolute(p: &Path) -> Result<PathBuf, RecordError> {
    Ok(if p.is_absolute() {
        p.to_path_buf()
    } else {
        std::env::current_dir()?.join(p)
    })
}

fn choose_output(opt: &Option<PathBuf>) -> Result<PathBuf, RecordError> {
    if let Some(p) = opt {
        let p = absolute(p)?;
        if fs::symlink_metadata(&p).is_ok() {
            return Err(RecordError::Setup(format!(
                "{} already exists; remove it or choose another name with -o",
                p.display()
            )));
        }
        return Ok(p);
    }
    for n in 0..10_000 {
        let name = if n == 0 {
            "allocscope.atrace".to_string()
        } else {
            format!("allocscope-{n}.atrace")
        };
        let p = absolute(Path::new(&name))?;
        if fs::symlink_metadata(&p).is_err() {
            return Ok(p);
        }
    }
    Err(RecordError::Setup(
        "no free allocscope-<n>.atrace name here; pass -o FILE".into(),
    ))
}

struct SessionDir(PathBuf);

impl Drop for SessionDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

/// Runs a recording session. `progress` receives lines meant for the user while the command runs.
pub fn record(
    opts: &RecordOptions,
    mut progress: impl FnMut(&str),
) -> Result<Outcome, RecordError> {
    let Some(program) = opts.command.first() else {
        return Err(RecordError::Setup(
            "no command given; usage: allocscope record [OPTIONS] -- CMD ARGS...".into(),
        ));
    };
    let output = choose_output(&opts.output)?;
    if let Some(dir) = output.parent() {
        if !dir.is_dir() {
            return Err(RecordError::Setup(format!(
                "directory {} does not exist; create it or change -o",
                dir.display()
            )));
        }
    }
    let shim_path = match &opts.shim {
        Some(p) => absolute(p)?,
        None => shim::install()?,
    };
    let session = SessionDir(shim::cache_dir()?.join(format!(
            "session-{}-{}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos())
                .unwrap_or(0)
        )));
    fs::DirBuilder::new().mode(0o700).create(&session.0)?;
    let manifest = session.0.join("manifest");
    fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&manifest)?;
    let control = if opts.paused || opts.duration.is_some() {
        let path = session.0.join("control");
        let f = fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)?;
        let mut page = vec![0u8; 4096];
        page[0] = u8::from(!opts.paused);
        f.write_all_at(&page, 0)?;
        Some((path, f))
    } else {
        None
    };

    let preload = match std::env::var_os("LD_PRELOAD").filter(|v| !v.is_empty()) {
        Some(old) => {
            let mut v = shim_path.clone().into_os_string();
            v.push(":");
            v.push(old);
            v
        }
        None => shim_path.clone().into_os_string(),
    };
    let mut cmd = Command::new(program);
    cmd.args(&opts.command[1..])
        .env("LD_PRELOAD", preload)
        .env("ALLOCSCOPE_OUT", &output)
        .env("ALLOCSCOPE_MANIFEST", &manifest)
        .env("ALLOCSCOPE_PARENT_PID", std::process::id().to_string())
        .env("ALLOCSCOPE_FLUSH_MS", opts.flush_ms.max(1).to_string());
    if !opts.follow {
        cmd.env("ALLOCSCOPE_NO_FOLLOW", "1");
    }
    if !opts.latency {
        cmd.env("ALLOCSCOPE_NO_LATENCY", "1");
    }
    if let Some((path, _)) = &control {
        cmd.env("ALLOCSCOPE_CONTROL", path);
    }
    signals::install();
    signals::reset_in_child(&mut cmd);
    let mut child = cmd.spawn().map_err(|source| RecordError::Spawn {
        command: program.to_string_lossy().into_owned(),
        source,
    })?;
    let pid = child.id();
    if opts.paused {
        progress(&format!(
            "recording is paused; send SIGUSR2 to allocscope (kill -USR2 {}) to start and stop it",
            std::process::id()
        ));
    }

    let mut recording = !opts.paused;
    let mut started = Instant::now();
    let mut toggles = signals::usr2_count();
    let status = loop {
        if let Some(st) = child.try_wait()? {
            break st;
        }
        signals::forward_pending(pid);
        if let Some((_, f)) = &control {
            let now = signals::usr2_count();
            let mut flip = now != toggles && (now - toggles) % 2 == 1;
            toggles = now;
            if recording && opts.duration.is_some_and(|d| started.elapsed() >= d) {
                flip = true;
                progress(&format!(
                    "recording stopped after {:.1} s; pid {pid} keeps running",
                    started.elapsed().as_secs_f64()
                ));
            }
            if flip {
                recording = !recording;
                f.write_all_at(&[u8::from(recording)], 0)?;
                if recording {
                    started = Instant::now();
                    progress("recording started");
                }
            }
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    let exit_code = match (status.code(), status.signal()) {
        (Some(c), _) => c,
        (None, Some(sig)) => 128 + sig,
        _ => 1,
    };

    let mut warnings = Vec::new();
    let mut processes = Vec::new();
    let listed = fs::read_to_string(&manifest).unwrap_or_default();
    // `stats <path> <events written> <waits> <threads> <ns alive>`: the last line for a path is
    // final.
    let mut stats = std::collections::HashMap::new();
    for line in listed.lines() {
        let f: Vec<&str> = line.split(' ').collect();
        if f.len() == 6 && f[0] == "stats" {
            let n: Vec<u64> = f[2..].iter().filter_map(|v| v.parse().ok()).collect();
            if n.len() == 4 {
                stats.insert(f[1].to_string(), (n[0], n[1], n[2], n[3]));
            }
        }
    }
    for line in listed.lines() {
        if let Some(path) = line.strip_prefix("trace ") {
            let read = if opts.verify {
                verify(Path::new(path))
            } else {
                summarize(Path::new(path))
            };
            match read {
                Ok(mut s) => {
                    if let Some(&(n, w, t, alive)) = stats.get(path) {
                        s.written = Some(n);
                        s.waits = w;
                        s.lifetime_ns = alive;
                        if !opts.verify {
                            s.threads = t;
                        }
                    }
                    if s.missing > 0 {
                        warnings.push(format!(
                            "{path}: {} events are missing (sequence gaps): please report this bug",
                            s.missing
                        ));
                    }
                    if let Some(p) = &s.problem {
                        warnings.push(format!("{path}: {p}"));
                    } else if s.written.is_some_and(|n| n != s.events) {
                        warnings.push(format!(
                            "{path}: the recorder wrote {} events but {} were read back: please report this bug",
                            s.written.unwrap_or(0),
                            s.events
                        ));
                    }
                    processes.push(s);
                }
                Err(e) => warnings.push(e.to_string()),
            }
        } else if let Some(rest) = line.strip_prefix("error ") {
            warnings.push(format!("recording error: {rest}"));
        }
    }
    if processes.is_empty() && warnings.is_empty() {
        warnings.push(diagnose::no_trace_message(program));
    } else if !(opts.paused || opts.duration.is_some()) {
        warnings.extend(blind_spots(&listed, &processes));
    }
    drop(control);
    drop(session);
    Ok(Outcome {
        exit_code,
        output,
        processes,
        warnings,
    })
}

/// Processes whose last image exec'd a program that never loaded the recorder, or that made no
/// allocation call at all. `listed` is the manifest (in the order processes wrote it).
fn blind_spots(listed: &str, processes: &[ProcessSummary]) -> Vec<String> {
    // For each pid, the last thing it did: ran an image that wrote this trace, or exec'd a program.
    let mut last: Vec<(u32, Option<String>, Option<&ProcessSummary>)> = Vec::new();
    for line in listed.lines() {
        let item = if let Some(path) = line.strip_prefix("trace ") {
            processes
                .iter()
                .find(|p| p.path == Path::new(path))
                .map(|p| (p.pid, None, Some(p)))
        } else if let Some(rest) = line.strip_prefix("exec ") {
            let (pid, prog) = rest.split_once(' ').unwrap_or((rest, "?"));
            pid.parse()
                .ok()
                .map(|pid| (pid, Some(prog.to_string()), None))
        } else {
            None
        };
        if let Some(item) = item {
            last.retain(|(pid, _, _)| *pid != item.0);
            last.push(item);
        }
    }
    let mut out = Vec::new();
    for (pid, exec, summary) in last {
        match (exec, summary) {
            (Some(prog), _) => out.push(diagnose::exec_untraced_message(pid, &prog)),
            // A short-lived program may well make no call (`true`); one that ran a while and made
            // none allocates some other way.
            (None, Some(s))
                if s.events == 0 && s.problem.is_none() && s.lifetime_ns >= 200_000_000 =>
            {
                out.push(diagnose::few_events_message(pid, s.lifetime_ns))
            }
            _ => {}
        }
    }
    out
}
