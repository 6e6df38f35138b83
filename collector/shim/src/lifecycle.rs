//! Process lifecycle: the constructor (configuration, trace file, writer thread), the final flush at
//! exit (`.fini_array`), `_exit`, `abort` and the exec family, and fork (the child starts its own
//! trace). Also the shim's own Rust allocator, which calls the real functions directly so shim code
//! never goes through the hooks.

use std::alloc::{GlobalAlloc, Layout};
use std::ffi::{c_char, c_int, c_void};
use std::fs::File;
use std::os::unix::ffi::OsStrExt;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::OnceLock;

use traces::{ClockSource, Header, TraceWriter};

use crate::sink::GuardedFile;
use crate::writer::{self, Writer, REQ_FINISH, REQ_FLUSH};
use crate::{
    real, ring, Quiet, CONTROL, KEY, MODE, MODE_ACTIVE, MODE_LATE, MODE_OFF, SEQ, THREADS,
};

/// Settings from the environment (see `lib.rs`), read once by the constructor.
pub struct Config {
    /// Trace path of the top process; others add `.<pid>` (and `.<n>` when that exists).
    pub out: String,
    pub manifest: Option<String>,
    pub flush_ms: u64,
    /// pid of `allocscope record`: a process whose parent it is, is the top process.
    pub parent_pid: Option<u32>,
    pub no_follow: bool,
    /// zstd level of the chunks (1: fastest, so the writer keeps up with the program).
    pub zstd_level: i32,
}

static CONFIG: OnceLock<Config> = OnceLock::new();
/// pid of this process image as the shim last saw it (a vfork child differs from it).
static PID: AtomicU32 = AtomicU32::new(0);

fn getpid() -> u32 {
    // SAFETY: getpid has no preconditions.
    unsafe { libc::getpid() as u32 }
}

fn getppid() -> u32 {
    // SAFETY: getppid has no preconditions.
    unsafe { libc::getppid() as u32 }
}

fn env(name: &str) -> Option<String> {
    std::env::var_os(name).map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
}

fn read_config() -> Option<Config> {
    let out = env("ALLOCSCOPE_OUT").filter(|s| !s.is_empty())?;
    Some(Config {
        out,
        manifest: env("ALLOCSCOPE_MANIFEST").filter(|s| !s.is_empty()),
        flush_ms: env("ALLOCSCOPE_FLUSH_MS")
            .and_then(|s| s.parse().ok())
            .filter(|&n| n > 0)
            .unwrap_or(100),
        parent_pid: env("ALLOCSCOPE_PARENT_PID").and_then(|s| s.parse().ok()),
        no_follow: env("ALLOCSCOPE_NO_FOLLOW").is_some_and(|s| s == "1"),
        zstd_level: env("ALLOCSCOPE_ZSTD_LEVEL")
            .and_then(|s| s.parse().ok())
            .unwrap_or(1),
    })
}

/// Appends one line to the manifest (one `write`, O_APPEND: lines of processes never mix).
pub fn manifest_line(cfg: &Config, line: &str) {
    let Some(m) = &cfg.manifest else { return };
    let Ok(f) = std::fs::OpenOptions::new().append(true).open(m) else {
        return;
    };
    let mut b = line.replace('\n', " ").into_bytes();
    b.push(b'\n');
    use std::os::fd::AsRawFd;
    writer::write_fd(f.as_raw_fd(), &b);
}

fn is_top(cfg: &Config) -> bool {
    cfg.parent_pid == Some(getppid())
}

fn header() -> Header {
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
        forked_from: None,
    }
}

/// Creates a trace file: mode 0600, never over an existing file, never through a symlink.
fn create(
    path: &str,
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
        ..traces::WriterOptions::default()
    };
    TraceWriter::with_options(GuardedFile::new(file)?, header, options)
}

/// Creates this process's next trace file (0600, O_EXCL, O_NOFOLLOW) and lists it in the manifest.
pub fn open_trace(
    cfg: &Config,
    continuation: bool,
) -> Result<(TraceWriter<GuardedFile>, String), String> {
    let pid = getpid();
    let header = header();
    let first = if is_top(cfg) && !continuation {
        cfg.out.clone()
    } else {
        format!("{}.{pid}", cfg.out)
    };
    let mut last_err = String::new();
    for n in 0..1000 {
        let path = if n == 0 {
            first.clone()
        } else {
            format!("{}.{pid}.{n}", cfg.out)
        };
        match create(&path, &header, cfg.zstd_level) {
            Ok(w) => {
                manifest_line(cfg, &format!("trace {path}"));
                return Ok((w, path));
            }
            Err(traces::TraceError::Write(e)) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                last_err = format!("{path}: {e}");
            }
            Err(e) => return Err(format!("cannot create {path}: {e}")),
        }
    }
    Err(format!("cannot create a trace file: {last_err}"))
}

/// Opens the trace and starts the writer; on failure the process goes on untraced.
fn start_recording(cfg: &'static Config) {
    let started = open_trace(cfg, false).and_then(|(w, path)| {
        MODE.store(MODE_ACTIVE, Ordering::Release);
        Writer::new(cfg, w, path).spawn()
    });
    if let Err(e) = started {
        manifest_line(cfg, &format!("error - {e}"));
        stop();
    }
}

/// Stops recording for good in this process image and drops what the rings hold.
fn stop() {
    MODE.store(MODE_OFF, Ordering::Release);
    ring::for_each(|r| r.reset(r.state.load(Ordering::Relaxed)));
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
    if let Some(n) = env("ALLOCSCOPE_RING_MAX").and_then(|v| v.parse::<u64>().ok()) {
        ring::MAX_CAP.store(
            n.clamp(ring::INITIAL_CAP, 1 << 24).next_power_of_two(),
            Ordering::Relaxed,
        );
    }
    if env("ALLOCSCOPE_NO_LATENCY").is_some_and(|v| v == "1") {
        crate::clock::disable_latency();
    }
    if let Some(path) = env("ALLOCSCOPE_CONTROL") {
        map_control(&path);
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
    start_recording(cfg);
}

fn map_control(path: &str) {
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
    if mode == MODE_ACTIVE {
        let _q = Quiet::new();
        // No index footer: destructors that run after this one (other libraries', libc's) may still
        // free memory, and those records are appended to this same file one by one (MODE_LATE).
        // Readers find the chunks by a scan, which costs one header read per chunk.
        writer::flush_sync(REQ_FLUSH);
        MODE.store(MODE_LATE, Ordering::Release);
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
    PID.store(getpid(), Ordering::Relaxed);
    writer::reset_after_fork();
    let t = crate::tls();
    let mine = t.ring.get();
    ring::for_each(|r| {
        let state = if std::ptr::eq(r, mine) {
            ring::OWNED
        } else {
            ring::FREE
        };
        r.reset(state);
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
    start_recording(cfg);
}

/// Before the process image goes away (exec) or dies (`_exit`, abort): write everything.
fn flush_before(bits: u32) {
    // A vfork child shares our memory but is not us: it must not flush the parent's trace.
    if MODE.load(Ordering::Acquire) != MODE_ACTIVE || PID.load(Ordering::Relaxed) != getpid() {
        return;
    }
    let _q = Quiet::new();
    writer::flush_sync(bits);
}

/// Before an exec: flush and close the trace, and tell `record` which program comes next, so it
/// can say so when that program does not load the recorder (static, setuid, LD_PRELOAD cleared).
///
/// # Safety
/// `program` is null or a NUL-terminated string (exec's contract for its path argument).
unsafe fn before_exec(program: *const c_char) {
    if MODE.load(Ordering::Acquire) != MODE_ACTIVE || PID.load(Ordering::Relaxed) != getpid() {
        return;
    }
    let saved = crate::errno();
    {
        let _q = Quiet::new();
        writer::flush_sync(REQ_FINISH);
        if let Some(cfg) = CONFIG.get() {
            let name = if program.is_null() {
                String::from("?")
            } else {
                // SAFETY: non-null and NUL-terminated (this function's contract).
                let c = unsafe { std::ffi::CStr::from_ptr(program) };
                String::from_utf8_lossy(c.to_bytes()).into_owned()
            };
            manifest_line(cfg, &format!("exec {} {name}", getpid()));
        }
    }
    crate::set_errno(saved);
}

#[no_mangle]
pub unsafe extern "C" fn execve(
    path: *const c_char,
    argv: *const *const c_char,
    envp: *const *const c_char,
) -> c_int {
    // SAFETY: `path` is exec's path argument (the caller's contract).
    unsafe { before_exec(path) };
    match real::execve() {
        // SAFETY: the real function, with the caller's own arguments (the caller's contract).
        Some(f) => unsafe { f(path, argv, envp) },
        None => enosys(),
    }
}

#[no_mangle]
pub unsafe extern "C" fn execv(path: *const c_char, argv: *const *const c_char) -> c_int {
    // SAFETY: `path` is exec's path argument (the caller's contract).
    unsafe { before_exec(path) };
    match real::execv() {
        // SAFETY: the real function, with the caller's own arguments (the caller's contract).
        Some(f) => unsafe { f(path, argv) },
        None => enosys(),
    }
}

#[no_mangle]
pub unsafe extern "C" fn execvp(file: *const c_char, argv: *const *const c_char) -> c_int {
    // SAFETY: `file` is exec's file argument (the caller's contract).
    unsafe { before_exec(file) };
    match real::execvp() {
        // SAFETY: the real function, with the caller's own arguments (the caller's contract).
        Some(f) => unsafe { f(file, argv) },
        None => enosys(),
    }
}

#[no_mangle]
pub unsafe extern "C" fn execvpe(
    file: *const c_char,
    argv: *const *const c_char,
    envp: *const *const c_char,
) -> c_int {
    // SAFETY: `file` is exec's file argument (the caller's contract).
    unsafe { before_exec(file) };
    match real::execvpe() {
        // SAFETY: the real function, with the caller's own arguments (the caller's contract).
        Some(f) => unsafe { f(file, argv, envp) },
        None => enosys(),
    }
}

#[no_mangle]
pub unsafe extern "C" fn fexecve(
    fd: c_int,
    argv: *const *const c_char,
    envp: *const *const c_char,
) -> c_int {
    // SAFETY: `argv` is null or a NULL-terminated array of strings (the caller's contract), so its
    // first element is readable and is null or a string.
    unsafe {
        before_exec(if argv.is_null() {
            std::ptr::null()
        } else {
            *argv
        })
    };
    match real::fexecve() {
        // SAFETY: the real function, with the caller's own arguments (the caller's contract).
        Some(f) => unsafe { f(fd, argv, envp) },
        None => enosys(),
    }
}

fn enosys() -> c_int {
    crate::set_errno(libc::ENOSYS);
    -1
}

#[no_mangle]
pub unsafe extern "C" fn _exit(code: c_int) -> ! {
    flush_before(REQ_FINISH);
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
    flush_before(REQ_FLUSH);
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

/// The shim's own allocator: straight to the real functions (or the arena while resolving), never
/// through the hooks, so shim code is never recorded and never re-enters a hook.
struct RealAlloc;

// SAFETY: every block comes from the real allocator (or the never-reused arena) with at least the
// requested size and alignment, and goes back to the allocator it came from.
unsafe impl GlobalAlloc for RealAlloc {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        if !real::ready() {
            return real::arena_alloc(l.size(), l.align()).cast();
        }
        if l.align() <= 16 {
            match real::malloc() {
                // SAFETY: malloc has no preconditions; it returns 16-byte aligned memory on x86_64.
                Some(f) => unsafe { f(l.size()) }.cast(),
                None => std::ptr::null_mut(),
            }
        } else {
            let mut p: *mut c_void = std::ptr::null_mut();
            match real::posix_memalign() {
                // SAFETY: `p` is a valid out-pointer; Layout alignments are powers of two > 16.
                Some(f) if unsafe { f(&mut p, l.align(), l.size()) } == 0 => p.cast(),
                _ => std::ptr::null_mut(),
            }
        }
    }

    unsafe fn dealloc(&self, p: *mut u8, _l: Layout) {
        if real::in_arena(p.cast()) {
            return;
        }
        if let Some(f) = real::free() {
            // SAFETY: `p` came from `alloc` above, i.e. from the real allocator (GlobalAlloc contract).
            unsafe { f(p.cast()) };
        }
    }

    unsafe fn realloc(&self, p: *mut u8, l: Layout, new_size: usize) -> *mut u8 {
        if l.align() <= 16 && !real::in_arena(p.cast()) && real::ready() {
            if let Some(f) = real::realloc() {
                // SAFETY: `p` came from the real malloc (GlobalAlloc contract, alignment ≤ 16).
                return unsafe { f(p.cast(), new_size) }.cast();
            }
        }
        // SAFETY: `l.align()` is a valid alignment and `new_size` fits it (GlobalAlloc contract).
        let n = unsafe { self.alloc(Layout::from_size_align_unchecked(new_size, l.align())) };
        if !n.is_null() {
            // SAFETY: `p` has `l.size()` readable bytes, `n` has `new_size` writable ones, and they
            // are distinct blocks; `p` is then released to where it came from.
            unsafe {
                std::ptr::copy_nonoverlapping(p, n, l.size().min(new_size));
                self.dealloc(p, l);
            }
        }
        n
    }
}

#[global_allocator]
static ALLOC: RealAlloc = RealAlloc;

// The variadic exec functions: C wrappers in `execl.c` collect the arguments and call the hooks
// above. Rust cannot define variadic functions on stable, and rustc keeps C symbols of a cdylib
// local, so the exported names are naked jumps: registers and stack (the variadic arguments) reach
// the C function untouched.
#[cfg(target_arch = "x86_64")]
mod variadic_exec {
    extern "C" {
        fn allocscope_execl();
        fn allocscope_execlp();
        fn allocscope_execle();
    }

    /// `int execl(const char *path, const char *arg, ... /*, NULL */)`.
    #[unsafe(naked)]
    #[no_mangle]
    pub unsafe extern "C" fn execl() {
        std::arch::naked_asm!("jmp {0}", sym allocscope_execl)
    }

    /// `int execlp(const char *file, const char *arg, ... /*, NULL */)`.
    #[unsafe(naked)]
    #[no_mangle]
    pub unsafe extern "C" fn execlp() {
        std::arch::naked_asm!("jmp {0}", sym allocscope_execlp)
    }

    /// `int execle(const char *path, const char *arg, ... /*, NULL, char *const envp[] */)`.
    #[unsafe(naked)]
    #[no_mangle]
    pub unsafe extern "C" fn execle() {
        std::arch::naked_asm!("jmp {0}", sym allocscope_execle)
    }
}
