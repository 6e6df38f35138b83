//! The exec family: before the process image is replaced, write everything and finish the trace
//! (end status `exec`), and tell `record` which program comes next. If the exec fails, the image
//! goes on recording into the same trace (the next chunk replaces that end record).

use std::ffi::{c_char, c_int};
use std::sync::atomic::Ordering;

use recorder_protocol::manifest::Line;

use crate::lifecycle::{self, CONFIG, PID};
use crate::writer::{self, End, REQ_END, REQ_FLUSH};
use crate::{real, Quiet, MODE, MODE_ACTIVE};

/// Before an exec: write everything and finish the trace, and tell `record` which program comes
/// next, so it can say so when that program does not load the recorder (static, setuid,
/// LD_PRELOAD cleared).
///
/// # Safety
/// `program` is null or a NUL-terminated string (exec's contract for its path argument).
unsafe fn before_exec(program: *const c_char) {
    if MODE.load(Ordering::Acquire) != MODE_ACTIVE
        || PID.load(Ordering::Relaxed) != lifecycle::getpid()
    {
        return;
    }
    let saved = crate::errno();
    {
        let _q = Quiet::new();
        writer::set_end(End::Exec);
        writer::flush_sync(REQ_FLUSH | REQ_END);
        if let Some(cfg) = CONFIG.get() {
            let name = if program.is_null() {
                std::ffi::OsString::from("?")
            } else {
                // SAFETY: non-null and NUL-terminated (this function's contract).
                let c = unsafe { std::ffi::CStr::from_ptr(program) };
                <std::ffi::OsString as std::os::unix::ffi::OsStringExt>::from_vec(
                    c.to_bytes().to_vec(),
                )
            };
            lifecycle::manifest_line(
                cfg,
                &Line::Exec {
                    pid: lifecycle::getpid(),
                    program: name,
                },
            );
        }
        // The image ends here if the exec succeeds: its trace is finished, nothing to recover.
        lifecycle::remove_ring_files();
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
