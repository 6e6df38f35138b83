//! A recording session: install the shim, run the command with it preloaded, wait, finish the
//! traces of processes that died, summarise.
//!
//! The session directory (private, 0700, removed afterwards) holds the manifest, where each traced
//! process image appends what it does (`recorder_protocol::manifest`), and, for
//! `--paused`/`--duration`, the control page: a 4096-byte file the shim maps shared, whose first
//! byte is 1 while recording. `record` flips it on SIGUSR2 and when the duration ends; the traced
//! program's signals are not touched. The spool directory holds the processes' shared ring files
//! (`recover.rs`).

use std::collections::HashMap;
use std::ffi::OsString;
use std::fs;
use std::os::unix::fs::{DirBuilderExt, FileExt, MetadataExt, OpenOptionsExt};
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use recorder_protocol::env;
use recorder_protocol::manifest::{self, Line};
use traces::Ending;

use crate::recover::{finish_traces, Finished, Image, TopExit};
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
    /// Frames of each allocating call's stack to record (0: no stacks).
    pub stack_depth: u32,
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
            stack_depth: 64,
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

/// The private files of one recording session: the session directory (manifest, control page),
/// and the spool directory of shared ring files (in /dev/shm when it is a usable tmpfs, so ring
/// pages never go to disk). Both are removed when the session ends.
struct Session {
    dir: PathBuf,
    manifest: PathBuf,
    spool: Option<PathBuf>,
    /// The control page file, open for writing (`--paused`, `--duration`).
    control: Option<(PathBuf, fs::File)>,
    /// The clock calibration every traced process uses.
    clock: cycle_clock::Calibration,
}

impl Drop for Session {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.dir);
        if let Some(s) = &self.spool {
            let _ = fs::remove_dir_all(s);
        }
    }
}

fn session_name() -> String {
    format!(
        "session-{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0)
    )
}

/// A private (0700) spool directory for the session's ring files: under /dev/shm when possible,
/// else inside the session directory.
fn make_spool(session_dir: &Path, name: &str) -> Option<PathBuf> {
    let shm = Path::new("/dev/shm");
    if shm.is_dir() {
        let base = shm.join(format!("allocscope-{}", shim::uid()));
        let _ = fs::DirBuilder::new().mode(0o700).create(&base);
        let owned = fs::symlink_metadata(&base)
            .map(|m| m.is_dir() && m.uid() == shim::uid() && m.mode() & 0o077 == 0)
            .unwrap_or(false);
        if owned {
            clean_stale_spools(&base);
            let dir = base.join(name);
            if fs::DirBuilder::new().mode(0o700).create(&dir).is_ok() {
                return Some(dir);
            }
        }
    }
    let dir = session_dir.join("spool");
    fs::DirBuilder::new().mode(0o700).create(&dir).ok()?;
    Some(dir)
}

/// Removes the spools of sessions whose `record` is gone (it was killed before it could clean up).
fn clean_stale_spools(base: &Path) {
    let Ok(entries) = fs::read_dir(base) else {
        return;
    };
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let pid = name
            .strip_prefix("session-")
            .and_then(|r| r.split('-').next())
            .and_then(|p| p.parse::<u32>().ok());
        if let Some(pid) = pid {
            if !Path::new(&format!("/proc/{pid}")).exists() {
                let _ = fs::remove_dir_all(e.path());
            }
        }
    }
}

impl Session {
    fn create(opts: &RecordOptions) -> Result<Session, RecordError> {
        let name = session_name();
        let dir = shim::cache_dir()?.join(&name);
        fs::DirBuilder::new().mode(0o700).create(&dir)?;
        let manifest = dir.join("manifest");
        fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&manifest)?;
        let control = if opts.paused || opts.duration.is_some() {
            let path = dir.join("control");
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
        let spool = make_spool(&dir, &name);
        // Measured once here, so that no traced process spends time on it.
        let clock =
            cycle_clock::Calibration::measure(cycle_clock::detect(), Duration::from_millis(20));
        Ok(Session {
            dir,
            manifest,
            spool,
            control,
            clock,
        })
    }
}

/// The command with the shim preloaded and the session described in its environment.
fn command(opts: &RecordOptions, session: &Session, output: &Path, shim_path: &Path) -> Command {
    let preload = match std::env::var_os("LD_PRELOAD").filter(|v| !v.is_empty()) {
        Some(old) => {
            let mut v = shim_path.as_os_str().to_os_string();
            v.push(":");
            v.push(old);
            v
        }
        None => shim_path.as_os_str().to_os_string(),
    };
    let mut cmd = Command::new(&opts.command[0]);
    cmd.args(&opts.command[1..])
        .env("LD_PRELOAD", preload)
        .env(env::OUT, output)
        .env(env::MANIFEST, &session.manifest)
        .env(env::PARENT_PID, std::process::id().to_string())
        .env(env::FLUSH_MS, opts.flush_ms.max(1).to_string())
        .env(env::CLOCK, session.clock.encode())
        .env(env::STACK_DEPTH, opts.stack_depth.to_string());
    if let Some(spool) = &session.spool {
        cmd.env(env::SPOOL, spool);
    }
    if !opts.follow {
        cmd.env(env::NO_FOLLOW, "1");
    }
    if !opts.latency {
        cmd.env(env::NO_LATENCY, "1");
    }
    if let Some((path, _)) = &session.control {
        cmd.env(env::CONTROL, path);
    }
    cmd
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
    let session = Session::create(opts)?;
    let mut cmd = command(opts, &session, &output, &shim_path);
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
    let status = wait(&mut child, &session, opts, &mut progress)?;
    let top = TopExit {
        pid,
        code: status.code(),
        signal: status.signal(),
    };
    let exit_code = match (top.code, top.signal) {
        (Some(c), _) => c,
        (None, Some(sig)) => 128 + sig,
        _ => 1,
    };
    let (processes, warnings) = collect(opts, &session, top);
    drop(session);
    Ok(Outcome {
        exit_code,
        output,
        processes,
        warnings,
    })
}

/// Waits for the command, forwarding signals and flipping the control page on SIGUSR2 and at the
/// end of `--duration`.
fn wait(
    child: &mut std::process::Child,
    session: &Session,
    opts: &RecordOptions,
    progress: &mut impl FnMut(&str),
) -> Result<std::process::ExitStatus, RecordError> {
    let pid = child.id();
    let mut recording = !opts.paused;
    let mut started = Instant::now();
    let mut toggles = signals::usr2_count();
    loop {
        if let Some(st) = child.try_wait()? {
            return Ok(st);
        }
        signals::forward_pending(pid);
        if let Some((_, f)) = &session.control {
            let now = signals::usr2_count();
            let mut flip = now != toggles && (now - toggles) % 2 == 1;
            toggles = now;
            if recording && opts.duration.is_some_and(|d| started.elapsed() >= d) {
                flip = true;
                progress(&format!(
                    "recording stopped after {:.1} s; pid {pid} keeps running",
                    started.elapsed().as_secs_f64()
                ));
            } else if flip && recording {
                progress(&format!(
                    "recording paused after {:.1} s; send SIGUSR2 again to resume",
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
    }
}

/// After the run: finishes the traces of processes that died, reads every trace back, and lists
/// what the user should know.
fn collect(
    opts: &RecordOptions,
    session: &Session,
    top: TopExit,
) -> (Vec<ProcessSummary>, Vec<String>) {
    let lines = manifest::parse_all(&fs::read(&session.manifest).unwrap_or_default());
    let mut warnings = Vec::new();
    let mut images = Vec::new();
    let mut errors = HashMap::new();
    // `stats`: the last line for a path is final.
    let mut stats = HashMap::new();
    for line in &lines {
        match line {
            Line::Trace {
                pid, image, path, ..
            } => images.push(Image {
                pid: *pid,
                image: *image,
                path: path.clone(),
            }),
            Line::Stats {
                path,
                events,
                waits,
                threads,
                alive_ns,
                unwinding,
            } => {
                stats.insert(
                    path.clone(),
                    (*events, *waits, *threads, *alive_ns, *unwinding),
                );
            }
            Line::Error { path, message } => {
                let shown = path
                    .as_ref()
                    .map_or("-".into(), |p| p.display().to_string());
                warnings.push(format!("recording error: {shown} {message}"));
                if let Some(p) = path {
                    errors.insert(p.clone(), message.clone());
                }
            }
            Line::Exec { .. } => {}
        }
    }
    let finished = finish_traces(
        session.spool.as_deref(),
        &images,
        top,
        &errors,
        session.clock,
    );
    let mut processes = Vec::new();
    for (path, result) in finished {
        match result {
            Ok(Finished::StillRunning) => warnings.push(format!(
                "{}: the process is still running; its trace is finished when it exits",
                path.display()
            )),
            Ok(_) => {}
            Err(e) => warnings.push(e.to_string()),
        }
        let read = if opts.verify {
            verify(&path)
        } else {
            summarize(&path)
        };
        match read {
            Ok(mut s) => {
                if let Some(&(n, w, t, alive, unwinding)) = stats.get(&path) {
                    s.written = Some(n);
                    s.waits = w;
                    s.lifetime_ns = alive;
                    s.unwinding = unwinding;
                    if !opts.verify {
                        s.threads = t;
                    }
                }
                warnings.extend(check(&s));
                processes.push(s);
            }
            Err(e) => warnings.push(e.to_string()),
        }
    }
    if processes.is_empty() && warnings.is_empty() {
        warnings.push(diagnose::no_trace_message(&opts.command[0]));
    } else if !(opts.paused || opts.duration.is_some()) {
        warnings.extend(blind_spots(&lines, &processes));
    }
    (processes, warnings)
}

/// What the user should know about one trace read back.
fn check(s: &ProcessSummary) -> Vec<String> {
    let path = s.path.display();
    let mut out = Vec::new();
    if s.missing > 0 {
        out.push(format!(
            "{path}: {} events are missing (sequence gaps): please report this bug",
            s.missing
        ));
    }
    if let Some(p) = &s.problem {
        out.push(format!("{path}: {p}"));
    } else if s.written.is_some_and(|n| n > s.events) {
        out.push(format!(
            "{path}: the recorder wrote {} events but {} were read back: please report this bug",
            s.written.unwrap_or(0),
            s.events
        ));
    }
    if let Some(end) = &s.ended {
        if matches!(end.how, Ending::Killed | Ending::Died | Ending::Stopped) {
            out.push(format!("pid {} ({path}): {}", s.pid, end.describe()));
        }
    }
    out
}

/// Processes whose last image exec'd a program that never loaded the recorder, or that made no
/// allocation call at all. `listed` is the manifest (in the order processes wrote it).
fn blind_spots(lines: &[Line], processes: &[ProcessSummary]) -> Vec<String> {
    // For each pid, the last thing it did: ran an image that wrote this trace, or exec'd a program.
    let mut last: Vec<(u32, Option<String>, Option<&ProcessSummary>)> = Vec::new();
    for line in lines {
        let item = match line {
            Line::Trace { path, .. } => processes
                .iter()
                .find(|p| &p.path == path)
                .map(|p| (p.pid, None, Some(p))),
            Line::Exec { pid, program } => {
                Some((*pid, Some(program.to_string_lossy().into_owned()), None))
            }
            _ => None,
        };
        if let Some(item) = item {
            last.retain(|(pid, _, _)| *pid != item.0);
            last.push(item);
        }
    }
    let mut out = Vec::new();
    for (pid, exec, summary) in last {
        let go = summary.and_then(|s| {
            let prog = s.command.first()?;
            diagnose::resolve(prog.as_ref())
                .filter(|p| diagnose::is_go_program(p))
                .map(|_| (prog.clone(), s.events))
        });
        if let Some((prog, events)) = go {
            out.push(diagnose::go_program_message(pid, &prog, events));
            continue;
        }
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
