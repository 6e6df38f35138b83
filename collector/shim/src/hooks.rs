//! The exported malloc-family hooks. Each: resolve the real functions if needed (the bootstrap arena
//! serves the resolving thread), call the real function, record, return its result unchanged (errno
//! included: nothing between the real call and the return touches errno, and the cold paths that may
//! restore it). See `lib.rs` for the ordering rules.
//!
//! Every `unsafe` block that calls `f` calls the real C function of the same name and signature
//! (from `dlsym`) with the caller's own arguments: its preconditions are exactly the caller's.

use std::ffi::c_void;
use std::ptr::null_mut;

use traces::Op;

use crate::ring::Record;
use crate::{clock, enter, real};

/// Records a call that returned memory: its seq is taken after the real call.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn record_after(
    h: crate::Hook,
    op: Op,
    start: u64,
    end: u64,
    addr: u64,
    old: u64,
    size: u64,
    extra: u64,
    failed: bool,
) {
    let stack = if failed { 0 } else { h.stack() };
    let seq = h.seq();
    h.commit(Record {
        seq,
        start,
        ticks: ticks(start, end),
        call: Record::call(op.code(), failed, 0),
        addr,
        old_addr: old,
        size,
        extra,
        thread: 0,
        stack,
    });
}

/// Raw ticks between two stamps, saturated to the record's 32 bits.
#[inline(always)]
fn ticks(start: u64, end: u64) -> u32 {
    end.wrapping_sub(start).min(u32::MAX as u64) as u32
}

fn enomem<T>(v: T) -> T {
    crate::set_errno(libc::ENOMEM);
    v
}

#[no_mangle]
pub unsafe extern "C" fn malloc(size: usize) -> *mut c_void {
    if !real::ready() {
        let p = real::arena_alloc(size, 16);
        return if p.is_null() { enomem(p) } else { p };
    }
    let Some(f) = real::malloc() else {
        return enomem(null_mut());
    };
    let Some(h) = enter() else {
        // SAFETY: the real function, with the caller's own arguments (the caller's contract).
        return unsafe { f(size) };
    };
    let t0 = clock::now();
    // SAFETY: the real function, with the caller's own arguments (the caller's contract).
    let p = unsafe { f(size) };
    let t1 = clock::end(t0);
    record_after(
        h,
        Op::Malloc,
        t0,
        t1,
        p as u64,
        0,
        size as u64,
        1,
        p.is_null(),
    );
    p
}

#[no_mangle]
pub unsafe extern "C" fn calloc(nmemb: usize, size: usize) -> *mut c_void {
    if !real::ready() {
        // Arena memory is static, zeroed and never reused, so it is already cleared.
        let p = match nmemb.checked_mul(size) {
            Some(n) => real::arena_alloc(n, 16),
            None => null_mut(),
        };
        return if p.is_null() { enomem(p) } else { p };
    }
    let Some(f) = real::calloc() else {
        return enomem(null_mut());
    };
    let Some(h) = enter() else {
        // SAFETY: the real function, with the caller's own arguments (the caller's contract).
        return unsafe { f(nmemb, size) };
    };
    let t0 = clock::now();
    // SAFETY: the real function, with the caller's own arguments (the caller's contract).
    let p = unsafe { f(nmemb, size) };
    let t1 = clock::end(t0);
    record_after(
        h,
        Op::Calloc,
        t0,
        t1,
        p as u64,
        0,
        size as u64,
        nmemb as u64,
        p.is_null(),
    );
    p
}

#[no_mangle]
pub unsafe extern "C" fn free(p: *mut c_void) {
    if real::in_arena(p) || !real::ready() {
        return; // arena memory is never reused; before resolution only arena memory exists
    }
    let Some(f) = real::free() else { return };
    let Some(h) = enter() else {
        // SAFETY: the real function, with the caller's own arguments (the caller's contract).
        return unsafe { f(p) };
    };
    let seq = h.seq(); // before the call: the address may be reused as soon as it is released
    let t0 = clock::now();
    // SAFETY: the real function, with the caller's own arguments (the caller's contract).
    unsafe { f(p) };
    let t1 = clock::end(t0);
    h.commit(Record {
        seq,
        start: t0,
        ticks: ticks(t0, t1),
        old_addr: p as u64,
        call: Record::call(Op::Free.code(), false, 0),
        ..Record::default()
    });
}

/// Moves an arena object to the real heap (realloc of memory handed out during bootstrap).
///
/// # Safety
/// `p` is an object of the bootstrap arena (`real::in_arena(p)`).
#[cold]
unsafe fn realloc_from_arena(p: *mut c_void, size: usize) -> *mut c_void {
    let n = if real::ready() {
        // SAFETY: malloc has no preconditions.
        unsafe { malloc(size) }
    } else {
        real::arena_alloc(size, 16)
    };
    if !n.is_null() {
        // SAFETY: `p` has `arena_size(p)` readable bytes (it is an arena object), `n` has `size`
        // writable bytes, and they do not overlap (`n` is a fresh object).
        unsafe {
            std::ptr::copy_nonoverlapping(
                p as *const u8,
                n as *mut u8,
                size.min(real::arena_size(p)),
            )
        };
    }
    n
}

#[no_mangle]
pub unsafe extern "C" fn realloc(p: *mut c_void, size: usize) -> *mut c_void {
    if real::in_arena(p) || !real::ready() {
        if p.is_null() {
            // SAFETY: malloc has no preconditions.
            return unsafe { malloc(size) };
        }
        // SAFETY: before resolution every object is an arena object; otherwise in_arena(p) holds.
        return unsafe { realloc_from_arena(p, size) };
    }
    let Some(f) = real::realloc() else {
        return enomem(null_mut());
    };
    let Some(h) = enter() else {
        // SAFETY: the real function, with the caller's own arguments (the caller's contract).
        return unsafe { f(p, size) };
    };
    if size == 0 && !p.is_null() {
        // Acts as a free in glibc (NULL back, the block released): take the number first. A NULL
        // result is the free succeeding, not a failed call.
        let seq = h.seq();
        let t0 = clock::now();
        // SAFETY: the real function, with the caller's own arguments (the caller's contract).
        let n = unsafe { f(p, size) };
        let t1 = clock::end(t0);
        h.commit(Record {
            seq,
            start: t0,
            ticks: ticks(t0, t1),
            addr: n as u64,
            old_addr: p as u64,
            size: 0,
            extra: 1,
            call: Record::call(Op::Realloc.code(), false, 0),
            ..Record::default()
        });
        return n;
    }
    let mut h = h;
    // The stack first: the window (held watermark) should span the real call only.
    let stack = h.stack();
    let window_start = h.hold();
    let t0 = clock::now();
    // SAFETY: the real function, with the caller's own arguments (the caller's contract).
    let n = unsafe { f(p, size) };
    let t1 = clock::end(t0);
    record_moving(
        h,
        Op::Realloc,
        (t0, t1),
        n,
        p,
        size,
        1,
        (window_start, stack),
    );
    n
}

/// Records a realloc-family call that may have moved its block (see `recorder_protocol::order`):
/// its number is taken after the call, with the window since `window_start`. Its stack was
/// captured before the window opened: unwinding inside it (the thread's first capture reads
/// /proc/self/maps) widened windows past their 16 bits (now 24) on busy machines, and a window that
/// saturates cannot order the release.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn record_moving(
    h: crate::Hook,
    op: Op,
    (start, end): (u64, u64),
    n: *mut c_void,
    p: *mut c_void,
    size: usize,
    extra: usize,
    (window_start, stack): (u64, u32),
) {
    let stack = if n.is_null() { 0 } else { stack };
    let seq = h.seq();
    h.commit(Record {
        seq,
        start,
        ticks: ticks(start, end),
        call: Record::call(op.code(), n.is_null(), seq.saturating_sub(window_start)),
        addr: n as u64,
        old_addr: p as u64,
        size: size as u64,
        extra: extra as u64,
        thread: 0,
        stack,
    });
}

#[no_mangle]
pub unsafe extern "C" fn reallocarray(p: *mut c_void, nmemb: usize, size: usize) -> *mut c_void {
    if real::in_arena(p) || !real::ready() {
        return match nmemb.checked_mul(size) {
            // SAFETY: the caller's object, passed on.
            Some(n) => unsafe { realloc(p, n) },
            None => enomem(null_mut()),
        };
    }
    let Some(f) = real::reallocarray() else {
        return enomem(null_mut());
    };
    let Some(mut h) = enter() else {
        // SAFETY: the real function, with the caller's own arguments (the caller's contract).
        return unsafe { f(p, nmemb, size) };
    };
    let stack = h.stack();
    let window_start = h.hold();
    let t0 = clock::now();
    // SAFETY: the real function, with the caller's own arguments (the caller's contract).
    let n = unsafe { f(p, nmemb, size) };
    let t1 = clock::end(t0);
    record_moving(
        h,
        Op::Reallocarray,
        (t0, t1),
        n,
        p,
        size,
        nmemb,
        (window_start, stack),
    );
    n
}

#[no_mangle]
pub unsafe extern "C" fn posix_memalign(
    out: *mut *mut c_void,
    align: usize,
    size: usize,
) -> libc::c_int {
    if !real::ready() {
        if !align.is_power_of_two() || !align.is_multiple_of(std::mem::size_of::<usize>()) {
            return libc::EINVAL;
        }
        let p = real::arena_alloc(size, align);
        if p.is_null() {
            return libc::ENOMEM;
        }
        // SAFETY: the caller passes a valid `out` (posix_memalign's contract).
        unsafe { *out = p };
        return 0;
    }
    let Some(f) = real::posix_memalign() else {
        return libc::ENOMEM;
    };
    let Some(h) = enter() else {
        // SAFETY: the real function, with the caller's own arguments (the caller's contract).
        return unsafe { f(out, align, size) };
    };
    let t0 = clock::now();
    // SAFETY: the real function, with the caller's own arguments (the caller's contract).
    let rc = unsafe { f(out, align, size) };
    let t1 = clock::end(t0);
    // On failure `*out` is unspecified (glibc leaves it alone): record 0.
    // SAFETY: on success the real function wrote `*out`, a valid pointer (the caller's contract).
    let addr = if rc == 0 { unsafe { *out as u64 } } else { 0 };
    record_after(
        h,
        Op::PosixMemalign,
        t0,
        t1,
        addr,
        0,
        size as u64,
        align as u64,
        rc != 0,
    );
    rc
}

macro_rules! aligned_hook {
    ($name:ident, $get:ident, $op:expr) => {
        #[no_mangle]
        pub unsafe extern "C" fn $name(align: usize, size: usize) -> *mut c_void {
            if !real::ready() {
                if !align.is_power_of_two() {
                    crate::set_errno(libc::EINVAL);
                    return null_mut();
                }
                let p = real::arena_alloc(size, align);
                return if p.is_null() { enomem(p) } else { p };
            }
            let Some(f) = real::$get() else {
                return enomem(null_mut());
            };
            let Some(h) = enter() else {
                // SAFETY: the real function, with the caller's own arguments (the caller's contract).
                return unsafe { f(align, size) };
            };
            let t0 = clock::now();
            // SAFETY: the real function, with the caller's own arguments (the caller's contract).
            let p = unsafe { f(align, size) };
            let t1 = clock::end(t0);
            record_after(
                h,
                $op,
                t0,
                t1,
                p as u64,
                0,
                size as u64,
                align as u64,
                p.is_null(),
            );
            p
        }
    };
}

aligned_hook!(aligned_alloc, aligned_alloc, Op::AlignedAlloc);
aligned_hook!(memalign, memalign, Op::Memalign);

macro_rules! page_hook {
    ($name:ident, $get:ident, $op:expr) => {
        #[no_mangle]
        pub unsafe extern "C" fn $name(size: usize) -> *mut c_void {
            if !real::ready() {
                let p = real::arena_alloc(size, 4096);
                return if p.is_null() { enomem(p) } else { p };
            }
            let Some(f) = real::$get() else {
                return enomem(null_mut());
            };
            let Some(h) = enter() else {
                // SAFETY: the real function, with the caller's own arguments (the caller's contract).
                return unsafe { f(size) };
            };
            let t0 = clock::now();
            // SAFETY: the real function, with the caller's own arguments (the caller's contract).
            let p = unsafe { f(size) };
            let t1 = clock::end(t0);
            record_after(h, $op, t0, t1, p as u64, 0, size as u64, 1, p.is_null());
            p
        }
    };
}

page_hook!(valloc, valloc, Op::Valloc);
page_hook!(pvalloc, pvalloc, Op::Pvalloc);

#[no_mangle]
pub unsafe extern "C" fn malloc_usable_size(p: *mut c_void) -> usize {
    if real::in_arena(p) {
        return real::arena_size(p);
    }
    if !real::ready() {
        return 0;
    }
    match real::usable_size() {
        // SAFETY: the real function, with the caller's own arguments (the caller's contract).
        Some(f) => unsafe { f(p) },
        None => 0,
    }
}

/// The hooks' signatures are the C library's own declarations (as heaptrack takes them with
/// `decltype(&::malloc)`): each pair must have one fn-pointer type, or this does not compile.
#[allow(dead_code)]
fn signatures_match_libc() {
    use libc::{c_int, size_t};
    let _: [unsafe extern "C" fn(size_t) -> *mut c_void; 3] =
        [libc::malloc, malloc, crate::real::malloc().unwrap()];
    let _: [unsafe extern "C" fn(size_t, size_t) -> *mut c_void; 2] = [libc::calloc, calloc];
    let _: [unsafe extern "C" fn(*mut c_void, size_t) -> *mut c_void; 2] = [libc::realloc, realloc];
    let _: [unsafe extern "C" fn(*mut c_void, size_t, size_t) -> *mut c_void; 2] =
        [libc::reallocarray, reallocarray];
    let _: [unsafe extern "C" fn(*mut c_void); 2] = [libc::free, free];
    let _: [unsafe extern "C" fn(*mut *mut c_void, size_t, size_t) -> c_int; 2] =
        [libc::posix_memalign, posix_memalign];
    let _: [unsafe extern "C" fn(size_t, size_t) -> *mut c_void; 3] =
        [libc::aligned_alloc, aligned_alloc, libc::memalign];
    let _: [unsafe extern "C" fn(size_t, size_t) -> *mut c_void; 1] = [memalign];
    let _: [unsafe extern "C" fn(*mut c_void) -> size_t; 2] =
        [libc::malloc_usable_size, malloc_usable_size];
    let _: [unsafe extern "C" fn(c_int) -> !; 2] = [libc::_exit, crate::lifecycle::_exit];
    let _: [unsafe extern "C" fn() -> !; 2] = [libc::abort, crate::lifecycle::abort];
    let _: [unsafe extern "C" fn(
        *const libc::c_char,
        *const *const libc::c_char,
        *const *const libc::c_char,
    ) -> c_int; 3] = [libc::execve, crate::exec::execve, libc::execvpe];
    let _: [unsafe extern "C" fn(*const libc::c_char, *const *const libc::c_char) -> c_int; 4] = [
        libc::execv,
        crate::exec::execv,
        libc::execvp,
        crate::exec::execvp,
    ];
}
