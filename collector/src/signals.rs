//! Signal handling of the `record` process itself (never of the traced program).
//!
//! While the command runs, `record` ignores SIGINT and SIGQUIT (the terminal sends them to the whole
//! process group: the command decides what to do, `record` stays to summarise, as `time` does), and
//! counts SIGUSR2 (each one toggles recording when the session has a control page). SIGTERM and
//! SIGHUP sent to `record` are passed on to the command, so `record` still summarises its traces.

use std::sync::atomic::{AtomicI32, AtomicU32, Ordering};

static USR2: AtomicU32 = AtomicU32::new(0);
/// A SIGTERM or SIGHUP received and not yet passed on (0: none).
static PENDING: AtomicI32 = AtomicI32::new(0);

extern "C" fn on_forwarded(sig: libc::c_int) {
    PENDING.store(sig, Ordering::Relaxed);
}

/// Passes a received SIGTERM/SIGHUP on to `pid` (the command).
pub fn forward_pending(pid: u32) {
    let sig = PENDING.swap(0, Ordering::Relaxed);
    if sig != 0 {
        // SAFETY: kill has no memory-safety preconditions; `pid` is our child, not yet reaped.
        unsafe { libc::kill(pid as libc::pid_t, sig) };
    }
}

extern "C" fn on_usr2(_: libc::c_int) {
    USR2.fetch_add(1, Ordering::Relaxed);
}

/// SIGUSR2s received so far.
pub fn usr2_count() -> u32 {
    USR2.load(Ordering::Relaxed)
}

/// The signals `install` changes, and their dispositions before (restored in the child, so a
/// command started under `nohup` still ignores SIGHUP).
const CHANGED: [libc::c_int; 5] = [
    libc::SIGINT,
    libc::SIGQUIT,
    libc::SIGUSR2,
    libc::SIGTERM,
    libc::SIGHUP,
];
static BEFORE: [std::sync::atomic::AtomicUsize; 5] =
    [const { std::sync::atomic::AtomicUsize::new(libc::SIG_DFL) }; 5];

static INSTALLED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Installs the handlers. The child gets the previous dispositions back (see `restore_in_child`).
pub fn install() {
    // Sessions may start on several threads at once (tests): one at a time, so "before" is right.
    static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _guard = LOCK.lock().unwrap_or_else(|e| e.into_inner());
    let usr2 = on_usr2 as *const () as libc::sighandler_t;
    let fwd = on_forwarded as *const () as libc::sighandler_t;
    let new = [libc::SIG_IGN, libc::SIG_IGN, usr2, fwd, fwd];
    for (i, (&sig, &handler)) in CHANGED.iter().zip(&new).enumerate() {
        // SAFETY: SIG_IGN is always sound; the handlers are async-signal-safe (one atomic operation
        // each) and never unwind.
        let old = unsafe { libc::signal(sig, handler) };
        // Only the first session's "before" is the real one (later ones would see ours).
        if !INSTALLED.load(Ordering::Relaxed) && old != libc::SIG_ERR {
            BEFORE[i].store(old, Ordering::Relaxed);
        }
    }
    INSTALLED.store(true, Ordering::Relaxed);
}

/// Puts back the dispositions `install` replaced. Called between fork and exec (async-signal-safe:
/// atomic loads and signal()).
pub fn restore_in_child() {
    for (i, &sig) in CHANGED.iter().enumerate() {
        // SAFETY: restores a disposition this process had before (SIG_DFL, SIG_IGN, or a handler
        // address, which exec resets to SIG_DFL anyway).
        unsafe { libc::signal(sig, BEFORE[i].load(Ordering::Relaxed)) };
    }
}

/// Registers `restore_in_child` to run in the child of `cmd` before exec.
pub fn reset_in_child(cmd: &mut std::process::Command) {
    use std::os::unix::process::CommandExt;
    // SAFETY: the closure only calls async-signal-safe functions (signal) and does not allocate.
    unsafe {
        cmd.pre_exec(|| {
            restore_in_child();
            Ok(())
        });
    }
}
