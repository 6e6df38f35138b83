//! Process lifecycle: the constructor (configuration, trace file, spool, writer thread), the final
//! flush and end record at exit (`.fini_array`, `_exit`), `abort`, and fork (the child starts its
//! own trace). The exec family is in `exec.rs`, the shim's own allocator in `alloc.rs`.

use std::ffi::{c_int, CString, OsString};
use std::fs::File;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::OnceLock;

use recorder_protocol::env;
use recorder_protocol::manifest::{child_trace_path, Line};
use traces::{ClockSource, Header, TraceWriter};

use crate::sink::{GuardedDir, GuardedFile};
use crate::writer::{self, End, Writer, REQ_END, REQ_FLUSH};
use crate::{
    real, ring, Quiet, CONTROL, KEY, MODE, MODE_ACTIVE, MODE_LATE, MODE_OFF, SEQ, THREADS,
};

/// Settings from the environment (`recorder_protocol::env`), read once by the constructor.
pub struct Config {
    /// Trace path of the top process; others use `child_trace_path`.
    pub out: PathBuf,
    pub manifest: Option<PathBuf>,
    pub flush_ms: u64,
    /// pid of `allocscope record`: a process whose parent it is, is the top process.
    pub parent_pid: Option<u32>,
    pub no_follow: bool,
    /// zstd level of the chunks (1: fastest, so the writer keeps up with the program).
    pub zstd_level: i32,
    /// Directory for the shared ring files.
    pub spool: Option<CString>,
    /// Frames kept per call stack (0: no stacks).
    pub stack_depth: u32,
}

pub static CONFIG: OnceLock<Config> = OnceLock::new();
/// pid of this process image as the shim last saw it (a vfork child differs from it).
pub static PID: AtomicU32 = AtomicU32::new(0);

pub fn getpid() -> u32 {
    // SAFETY: getpid has no preconditions.
    unsafe { libc::getpid() as u32 }
}

fn getppid() -> u32 {
    // SAFETY: getppid has no preconditions.
    unsafe { libc::getppid() as u32 }
}

fn var(name: &str) -> Option<OsString> {
    std::env::var_os(name).filter(|v| !v.is_empty())
}

fn var_str(name: &str) -> Option<String> {
    var(name).map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
}

fn read_config() -> Option<Config> {
    Some(Config {
        out: PathBuf::from(var(env::OUT)?),
        manifest: var(env::MANIFEST).map(PathBuf::from),
        flush_ms: var_str(env::FLUSH_MS)
            .and_then(|s| s.parse().ok())
            .filter(|&n| n > 0)
            .unwrap_or(100),
        parent_pid: var_str(env::PARENT_PID).and_then(|s| s.parse().ok()),
        no_follow: var_str(env::NO_FOLLOW).is_some_and(|s| s == "1"),
        zstd_level: var_str(env::ZSTD_LEVEL)
            .and_then(|s| s.parse().ok())
            .unwrap_or(1),
        spool: var(env::SPOOL).and_then(|v| CString::new(v.into_vec()).ok()),
        stack_depth: var_str(env::STACK_DEPTH)
            .and_then(|s| s.parse::<u32>().ok())
            .unwrap_or(0)
            .min(crate::unwind::MAX_DEPTH as u32),
    })
}

/// Appends one line to the manifest (one `write`, O_APPEND: lines of processes never mix).
pub fn manifest_line(cfg: &Config, line: &Line) {
    let Some(m) = &cfg.manifest else { return };
    let Ok(f) = std::fs::OpenOptions::new().append(true).open(m) else {
        return;
    };
    let mut b = line.encode();
    b.push(b'\n');
    use std::os::fd::AsRawFd;
    writer::write_fd(f.as_raw_fd(), &b);
}

fn is_top(cfg: &Config) -> bool {
    cfg.parent_pid == Some(getppid())
}

fn header(forked_from: Option<u32>) -> Header {
    let command = std::fs::read("/proc/self/cmdline")
        .map(|b| {
            b.split(|&c| c == 0)
                .filter(|s| !s.is_empty())
                .map(|s| String::from_utf8_lossy(s).into_owned())
                .collect()
        })
        .unwrap_or_default();
    let origin = crate::clock::origin();
    let now_wall = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    let since_origin = crate::clock::monotonic_ns().saturating_sub(origin.1);
    let hostname = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .unwrap_or_default();
    Header {
        format_version: 0,
        recorder: format!("allocscope-record {}", env!("CARGO_PKG_VERSION")),
        command,
        pid: getpid(),
        ppid: getppid(),
        start_unix_ns: now_wall.saturating_sub(since_origin),
        clock: if crate::clock::uses_tsc() {
            ClockSource::Tsc
        } else {
            ClockSource::Monotonic
        },
        // SAFETY: sysconf has no preconditions.
        page_size: unsafe { libc::sysconf(libc::_SC_PAGESIZE) } as u32,
        hostname,
        forked_from,
    }
}

/// Creates a trace file: mode 0600, never over an existing file, never through a symlink.
fn create(
    path: &Path,
    header: &Header,
    zstd_level: i32,
) -> traces::Result<TraceWriter<GuardedFile>> {
    use std::os::unix::fs::OpenOptionsExt;
    let file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(path)?;
    let options = traces::WriterOptions {
        zstd_level,
        stacks: crate::unwind::DEPTH.load(Ordering::Relaxed) > 0,
        ..traces::WriterOptions::default()
    };
    TraceWriter::with_options(GuardedFile::new(file)?, header, options)
}

/// Creates this process image's trace file (0600, O_EXCL, O_NOFOLLOW): the configured path for the
/// top process, `<out>.<pid>` (or `<out>.<pid>.<n>`, when taken: an earlier image of the same pid)
/// for the others.
fn open_trace(
    cfg: &Config,
    forked_from: Option<u32>,
) -> Result<(TraceWriter<GuardedFile>, PathBuf), String> {
    let pid = getpid();
    let header = header(forked_from);
    let mut last_err = String::new();
    let top = is_top(cfg) && forked_from.is_none();
    for n in 0..1000 {
        let path = match (top, n) {
            (true, 0) => cfg.out.clone(),
            (true, n) => child_trace_path(&cfg.out, pid, n - 1),
            (false, n) => child_trace_path(&cfg.out, pid, n),
        };
        match create(&path, &header, cfg.zstd_level) {
            Ok(w) => return Ok((w, path)),
            Err(traces::TraceError::Write(e)) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                last_err = format!("{}: {e}", path.display());
            }
            Err(e) => return Err(format!("cannot create {}: {e}", path.display())),
        }
    }
    Err(format!("cannot create a trace file: {last_err}"))
}

/// A number that names this process image among the images of its pid (exec keeps the pid).
fn new_image_id() -> u64 {
    (crate::clock::monotonic_ns() << 8) | u64::from(crate::clock::now() as u8)
}

/// Opens the trace, sets up the spool and starts the writer; on failure the process goes on
/// untraced. `forked_from` is the parent's pid in a fork child.
fn start_recording(cfg: &'static Config, forked_from: Option<u32>) {
    crate::unwind::DEPTH.store(cfg.stack_depth, Ordering::Relaxed);
    let started = open_trace(cfg, forked_from).and_then(|(mut w, path)| {
        let image = new_image_id();
        let mut dir = None;
        if let Some(spool) = &cfg.spool {
            match GuardedDir::open(spool) {
                Ok(d) => {
                    let d: &'static GuardedDir = Box::leak(Box::new(d));
                    dir = Some(d);
                    ring::set_spool(Some(ring::Spool {
                        dir: d,
                        pid: getpid(),
                        image,
                    }))
                }
                Err(e) => manifest_line(
                    cfg,
                    &Line::Error {
                        path: Some(path.clone()),
                        message: format!(
                            "cannot use the spool directory ({e}): a killed process loses its \
                             last events"
                        ),
                    },
                ),
            }
        }
        manifest_line(
            cfg,
            &Line::Trace {
                pid: getpid(),
                image,
                forked_from,
                path: path.clone(),
            },
        );
        if cfg.stack_depth > 0 {
            start_stacks(&mut w, dir, image).map_err(|e| format!("{}: {e}", path.display()))?;
        }
        // The calling thread's ring (the main thread's, or the forking thread's) moves to a shared
        // file now; other threads' rings do when they are next taken.
        let mine = crate::tls().ring.get();
        if !mine.is_null() {
            // SAFETY: rings are never unmapped; this thread owns `mine` and is not in a hook.
            let r = unsafe { &*mine };
            r.move_to(r.cap().max(ring::MAX_CAP.load(Ordering::Relaxed)));
        }
        MODE.store(MODE_ACTIVE, Ordering::Release);
        Writer::new(cfg, w, path).spawn()
    });
    if let Err(e) = started {
        manifest_line(
            cfg,
            &Line::Error {
                path: None,
                message: e,
            },
        );
        stop();
    }
}

/// Sets up call stacks for this image: the modules (written to the trace at once, so that a
/// process killed before its first pass still names them), the unwinder and an empty trie.
fn start_stacks(
    w: &mut TraceWriter<GuardedFile>,
    dir: Option<&'static GuardedDir>,
    image: u64,
) -> traces::Result<()> {
    let modules = crate::modules::refresh(true, 0);
    w.write_modules(&modules)?;
    w.flush()?;
    crate::trie::clear();
    if !crate::trie::create(dir, getpid(), image) {
        crate::unwind::DEPTH.store(0, Ordering::Relaxed);
    }
    Ok(())
}

/// Stops recording for good in this process image and drops what the rings hold.
fn stop() {
    MODE.store(MODE_OFF, Ordering::Release);
    ring::for_each(|r| r.reset(r.state.load(Ordering::Relaxed)));
    remove_ring_files();
}

/// Removes this image's ring and stack files: its trace is finished (or recording stopped),
/// nothing is left for `record` to recover.
pub fn remove_ring_files() {
    ring::for_each(|r| r.remove_file());
    crate::trie::remove_file();
}

extern "C" fn on_load() {
    let _q = Quiet::new();
    // The shim's panics (bugs) must not print into the program's stderr nor kill it: each entry
    // point below catches them and stops recording.
    std::panic::set_hook(Box::new(|_| {}));
    if std::panic::catch_unwind(load).is_err() {
        stop();
    }
}

fn load() {
    while !real::ready() {} // resolves now unless the loader already made us do it
    PID.store(getpid(), Ordering::Relaxed);
    let Some(cfg) = read_config() else {
        return stop();
    };
    let cfg: &'static Config = CONFIG.get_or_init(|| cfg);
    if cfg.no_follow && !is_top(cfg) {
        return stop();
    }
    if let Some(n) = var_str(env::RING_MAX).and_then(|v| v.parse::<u64>().ok()) {
        ring::MAX_CAP.store(
            n.clamp(ring::INITIAL_CAP, 1 << 24).next_power_of_two(),
            Ordering::Relaxed,
        );
    }
    if var_str(env::NO_LATENCY).is_some_and(|v| v == "1") {
        crate::clock::disable_latency();
    }
    if let Some(c) = var_str(env::CLOCK)
        .as_deref()
        .and_then(cycle_clock::Calibration::decode)
    {
        writer::set_clock(c);
    }
    if let Some(path) = var(env::CONTROL) {
        map_control(Path::new(&path));
        let ctl = CONTROL.load(Ordering::Relaxed);
        // SAFETY: a non-null CONTROL points into a mapping that is never unmapped.
        if !ctl.is_null() && unsafe { (*ctl).load(Ordering::Relaxed) } == 0 {
            // Started paused: what the loader and constructors did before is not part of the window.
            ring::for_each(|r| r.reset(r.state.load(Ordering::Relaxed)));
            SEQ.store(0, Ordering::Relaxed);
        }
    }
    let mut key: libc::pthread_key_t = 0;
    // SAFETY: `key` is a valid out-pointer; the destructor is an extern "C" fn that never unwinds.
    if unsafe { libc::pthread_key_create(&mut key, Some(crate::on_thread_exit)) } == 0 {
        KEY.store(key, Ordering::Release);
        let ring = crate::tls().ring.get();
        if !ring.is_null() {
            // SAFETY: key just created; the value is this thread's ring.
            unsafe { libc::pthread_setspecific(key, ring.cast()) };
        }
    }
    // SAFETY: the handlers are extern "C" fns that never unwind.
    unsafe { libc::pthread_atfork(None, None, Some(after_fork_child)) };
    start_recording(cfg, None);
}

fn map_control(path: &Path) {
    let Ok(f) = File::open(path) else { return };
    use std::os::fd::AsRawFd;
    // SAFETY: maps one page of an open file read-only and shared; the result is checked. The mapping
    // is never unmapped, so CONTROL stays valid for the life of the process.
    let p = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            4096,
            libc::PROT_READ,
            libc::MAP_SHARED,
            f.as_raw_fd(),
            0,
        )
    };
    if p != libc::MAP_FAILED {
        CONTROL.store(p.cast(), Ordering::Release);
    }
}

extern "C" fn on_unload() {
    let mode = MODE.load(Ordering::Acquire);
    if mode == MODE_ACTIVE && PID.load(Ordering::Relaxed) == getpid() {
        let _q = Quiet::new();
        // Finished now (index and end record), but destructors that run after this one (other
        // libraries', libc's) may still free memory: those records are each written at once and
        // the end record rewritten after them (MODE_LATE).
        writer::set_end(End::Exited(None));
        writer::flush_sync(REQ_FLUSH | REQ_END);
        MODE.store(MODE_LATE, Ordering::Release);
        remove_ring_files();
    }
}

#[used]
#[link_section = ".init_array"]
static INIT: extern "C" fn() = on_load;

#[used]
#[link_section = ".fini_array"]
static FINI: extern "C" fn() = on_unload;

extern "C" fn after_fork_child() {
    let _q = Quiet::new();
    if std::panic::catch_unwind(fork_child).is_err() {
        stop();
    }
}

fn fork_child() {
    let parent = getppid();
    PID.store(getpid(), Ordering::Relaxed);
    writer::reset_after_fork();
    // The parent's rings, stack trie and spool are the parent's: this image gets its own.
    ring::set_spool(None);
    crate::trie::forget_in_child();
    let t = crate::tls();
    let mine = t.ring.get();
    ring::for_each(|r| {
        let state = if std::ptr::eq(r, mine) {
            ring::OWNED
        } else {
            ring::FREE
        };
        r.reset_in_child(state);
    });
    SEQ.store(0, Ordering::Relaxed);
    THREADS.store(1, Ordering::Relaxed);
    t.thread_no.set(if mine.is_null() { 0 } else { 1 });
    if t.thread_no.get() == 0 {
        THREADS.store(0, Ordering::Relaxed);
    }
    let Some(cfg) = CONFIG.get() else {
        return stop();
    };
    if cfg.no_follow || MODE.load(Ordering::Relaxed) == MODE_OFF {
        return stop();
    }
    crate::clock::reset_origin();
    start_recording(cfg, Some(parent));
}

/// Before the process dies (`_exit`, abort): write everything and finish the trace with `end`.
fn flush_before(end: End) {
    // A vfork child shares our memory but is not us: it must not flush the parent's trace.
    if MODE.load(Ordering::Acquire) != MODE_ACTIVE || PID.load(Ordering::Relaxed) != getpid() {
        return;
    }
    let _q = Quiet::new();
    writer::set_end(end);
    writer::flush_sync(REQ_FLUSH | REQ_END);
    remove_ring_files();
}

#[no_mangle]
pub unsafe extern "C" fn _exit(code: c_int) -> ! {
    flush_before(End::Exited(Some(code)));
    match real::exit_() {
        // SAFETY: _exit has no preconditions.
        Some(f) => unsafe { f(code) },
        None => {
            // SAFETY: exit_group has no preconditions.
            unsafe { libc::syscall(libc::SYS_exit_group, code) };
            unreachable_exit()
        }
    }
}

#[no_mangle]
pub unsafe extern "C" fn _Exit(code: c_int) -> ! {
    // SAFETY: _exit has no preconditions.
    unsafe { _exit(code) }
}

#[no_mangle]
pub unsafe extern "C" fn abort() -> ! {
    // The end record says SIGABRT; a program that catches it and goes on replaces it later.
    flush_before(End::Signal(libc::SIGABRT));
    match real::abort() {
        // SAFETY: abort has no preconditions.
        Some(f) => unsafe { f() },
        None => {
            // SAFETY: raise has no preconditions.
            unsafe { libc::raise(libc::SIGKILL) };
            unreachable_exit()
        }
    }
}

fn unreachable_exit() -> ! {
    loop {
        // SAFETY: pause has no preconditions; we only get here if exit_group/raise returned.
        unsafe { libc::pause() };
    }
}
