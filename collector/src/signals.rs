//! Signal handling of the `record` process itself (never of the traced program).
//!
//! While the command runs, `record` ignores SIGINT and SIGQUIT (the terminal sends them to the whole
//! process group: the command decides what to do, `record` stays to summarise, as `time` does), and
//! counts SIGUSR2 (each one toggles recording when the session has a control page).

use std::sync::atomic::{AtomicU32, Ordering};

static USR2: AtomicU32 = AtomicU32::new(0);

extern "C" fn on_usr2(_: libc::c_int) {
    USR2.fetch_add(1, Ordering::Relaxed);
}

/// SIGUSR2s received so far.
pub fn usr2_count() -> u32 {
    USR2.load(Ordering::Relaxed)
}

/// Installs the handlers. The child gets default dispositions back (see `restore_in_child`).
pub fn install() {
    // SAFETY: installing SIG_IGN is always sound; `on_usr2` is async-signal-safe (one atomic add)
    // and never unwinds.
    unsafe {
        libc::signal(libc::SIGINT, libc::SIG_IGN);
        libc::signal(libc::SIGQUIT, libc::SIG_IGN);
        libc::signal(libc::SIGUSR2, on_usr2 as *const () as libc::sighandler_t);
    }
}

/// Puts back the defaults `install` changed. Called between fork and exec (async-signal-safe).
pub fn restore_in_child() {
    // SAFETY: signal() is async-signal-safe; SIG_DFL is always valid.
    unsafe {
        libc::signal(libc::SIGINT, libc::SIG_DFL);
        libc::signal(libc::SIGQUIT, libc::SIG_DFL);
        libc::signal(libc::SIGUSR2, libc::SIG_DFL);
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
