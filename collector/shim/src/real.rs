//! The real allocator functions (found with `dlsym(RTLD_NEXT, ..)`) and the bootstrap arena.
//!
//! `dlsym` itself may allocate (glibc keeps per-thread dlerror state), and the dynamic loader calls
//! `malloc` before any constructor of ours has run. So the first hook call resolves the real functions
//! (state `RESOLVING`), and every allocation made by *that thread* while it resolves is served from a
//! static bump arena. Frees of arena memory are ignored (the arena is never reused); `realloc` of arena
//! memory moves the object to the real heap; `malloc_usable_size` reads the size kept in front of it.
//! Other threads that arrive while one thread resolves spin until the state is `READY`.
//!
//! Invariants: `STATE` goes 0 → 1 → 2 once per process image, and every function pointer is stored
//! before `READY` is published (Release), so a reader that saw `READY` (Acquire) sees them all.

use std::cell::Cell;
use std::ffi::c_void;
use std::sync::atomic::{AtomicPtr, AtomicU8, AtomicUsize, Ordering};

const UNRESOLVED: u8 = 0;
const RESOLVING: u8 = 1;
const READY: u8 = 2;

static STATE: AtomicU8 = AtomicU8::new(UNRESOLVED);

thread_local! {
    /// True on the thread that is resolving the real functions (its allocations go to the arena).
    static IS_RESOLVER: Cell<bool> = const { Cell::new(false) };
}

pub type MallocFn = unsafe extern "C" fn(usize) -> *mut c_void;
pub type FreeFn = unsafe extern "C" fn(*mut c_void);
pub type CallocFn = unsafe extern "C" fn(usize, usize) -> *mut c_void;
pub type ReallocFn = unsafe extern "C" fn(*mut c_void, usize) -> *mut c_void;
pub type ReallocarrayFn = unsafe extern "C" fn(*mut c_void, usize, usize) -> *mut c_void;
pub type PosixMemalignFn = unsafe extern "C" fn(*mut *mut c_void, usize, usize) -> libc::c_int;
pub type AlignFn = unsafe extern "C" fn(usize, usize) -> *mut c_void;
pub type UsableSizeFn = unsafe extern "C" fn(*mut c_void) -> usize;
pub type ExecveFn = unsafe extern "C" fn(
    *const libc::c_char,
    *const *const libc::c_char,
    *const *const libc::c_char,
) -> libc::c_int;
pub type ExecvpeFn = ExecveFn;
pub type ExecvFn =
    unsafe extern "C" fn(*const libc::c_char, *const *const libc::c_char) -> libc::c_int;
pub type FexecveFn = unsafe extern "C" fn(
    libc::c_int,
    *const *const libc::c_char,
    *const *const libc::c_char,
) -> libc::c_int;
pub type ExitFn = unsafe extern "C" fn(libc::c_int) -> !;
pub type AbortFn = unsafe extern "C" fn() -> !;

/// One resolved symbol. Null until resolved.
struct Sym(AtomicPtr<c_void>);

impl Sym {
    const fn new() -> Sym {
        Sym(AtomicPtr::new(std::ptr::null_mut()))
    }
}

static MALLOC: Sym = Sym::new();
static FREE: Sym = Sym::new();
static CALLOC: Sym = Sym::new();
static REALLOC: Sym = Sym::new();
static REALLOCARRAY: Sym = Sym::new();
static POSIX_MEMALIGN: Sym = Sym::new();
static ALIGNED_ALLOC: Sym = Sym::new();
static MEMALIGN: Sym = Sym::new();
static VALLOC: Sym = Sym::new();
static PVALLOC: Sym = Sym::new();
static USABLE_SIZE: Sym = Sym::new();
static EXECVE: Sym = Sym::new();
static EXECV: Sym = Sym::new();
static EXECVP: Sym = Sym::new();
static EXECVPE: Sym = Sym::new();
static FEXECVE: Sym = Sym::new();
static EXIT_: Sym = Sym::new();
static ABORT: Sym = Sym::new();

/// Makes sure the real functions are resolved. Returns false only on the resolving thread while it
/// resolves: the caller must then use the arena.
#[inline(always)]
pub fn ready() -> bool {
    STATE.load(Ordering::Acquire) == READY || resolve_slow()
}

#[cold]
#[inline(never)]
fn resolve_slow() -> bool {
    if IS_RESOLVER.with(|r| r.get()) {
        return false;
    }
    match STATE.compare_exchange(UNRESOLVED, RESOLVING, Ordering::AcqRel, Ordering::Acquire) {
        Ok(_) => {
            IS_RESOLVER.with(|r| r.set(true));
            crate::clock::init();
            let next = libc::RTLD_NEXT;
            let pairs: [(&Sym, &[u8]); 18] = [
                (&MALLOC, b"malloc\0"),
                (&FREE, b"free\0"),
                (&CALLOC, b"calloc\0"),
                (&REALLOC, b"realloc\0"),
                (&REALLOCARRAY, b"reallocarray\0"),
                (&POSIX_MEMALIGN, b"posix_memalign\0"),
                (&ALIGNED_ALLOC, b"aligned_alloc\0"),
                (&MEMALIGN, b"memalign\0"),
                (&VALLOC, b"valloc\0"),
                (&PVALLOC, b"pvalloc\0"),
                (&USABLE_SIZE, b"malloc_usable_size\0"),
                (&EXECVE, b"execve\0"),
                (&EXECV, b"execv\0"),
                (&EXECVP, b"execvp\0"),
                (&EXECVPE, b"execvpe\0"),
                (&FEXECVE, b"fexecve\0"),
                (&EXIT_, b"_exit\0"),
                (&ABORT, b"abort\0"),
            ];
            for (sym, name) in pairs {
                // SAFETY: `name` is NUL-terminated; RTLD_NEXT is a valid pseudo-handle for a
                // shared object. dlsym's own allocations come back here and go to the arena.
                let p = unsafe { libc::dlsym(next, name.as_ptr().cast()) };
                sym.0.store(p, Ordering::Relaxed);
            }
            IS_RESOLVER.with(|r| r.set(false));
            STATE.store(READY, Ordering::Release);
            true
        }
        Err(_) => {
            while STATE.load(Ordering::Acquire) != READY {
                std::hint::spin_loop();
                // SAFETY: sched_yield has no preconditions.
                unsafe { libc::sched_yield() };
            }
            true
        }
    }
}

macro_rules! getter {
    ($name:ident, $sym:ident, $ty:ty) => {
        /// The real function (`ready()` must have returned true). Null means the symbol is missing.
        #[inline(always)]
        pub fn $name() -> Option<$ty> {
            let p = $sym.0.load(Ordering::Relaxed);
            if p.is_null() {
                None
            } else {
                // SAFETY: the pointer came from dlsym for the symbol of this exact C signature.
                Some(unsafe { std::mem::transmute::<*mut c_void, $ty>(p) })
            }
        }
    };
}

getter!(malloc, MALLOC, MallocFn);
getter!(free, FREE, FreeFn);
getter!(calloc, CALLOC, CallocFn);
getter!(realloc, REALLOC, ReallocFn);
getter!(reallocarray, REALLOCARRAY, ReallocarrayFn);
getter!(posix_memalign, POSIX_MEMALIGN, PosixMemalignFn);
getter!(aligned_alloc, ALIGNED_ALLOC, AlignFn);
getter!(memalign, MEMALIGN, AlignFn);
getter!(valloc, VALLOC, MallocFn);
getter!(pvalloc, PVALLOC, MallocFn);
getter!(usable_size, USABLE_SIZE, UsableSizeFn);
getter!(execve, EXECVE, ExecveFn);
getter!(execv, EXECV, ExecvFn);
getter!(execvp, EXECVP, ExecvFn);
getter!(execvpe, EXECVPE, ExecvpeFn);
getter!(fexecve, FEXECVE, FexecveFn);
getter!(exit_, EXIT_, ExitFn);
getter!(abort, ABORT, AbortFn);

// ---- bootstrap arena -------------------------------------------------------------------------

const ARENA_BYTES: usize = 1 << 20;
/// Bytes kept in front of every arena object: its size (so realloc and usable_size work).
const ARENA_HEADER: usize = 16;

#[repr(C, align(4096))]
struct Arena([u8; ARENA_BYTES]);

static mut ARENA: Arena = Arena([0; ARENA_BYTES]);
/// Next free offset in `ARENA`, bytes.
static ARENA_NEXT: AtomicUsize = AtomicUsize::new(0);

fn arena_base() -> usize {
    // Only the address of the static is taken; no reference is created.
    std::ptr::addr_of_mut!(ARENA) as usize
}

/// True when `p` points into the bootstrap arena.
#[inline(always)]
pub fn in_arena(p: *mut c_void) -> bool {
    let a = p as usize;
    let base = arena_base();
    a >= base && a < base + ARENA_BYTES
}

/// Allocates `size` bytes aligned to `align` (a power of two ≥ 16) from the arena. Null when full.
pub fn arena_alloc(size: usize, align: usize) -> *mut c_void {
    let align = align.max(16);
    let base = arena_base();
    let mut cur = ARENA_NEXT.load(Ordering::Relaxed);
    loop {
        let start = (base + cur + ARENA_HEADER).next_multiple_of(align);
        let end = match start.checked_add(size) {
            Some(e) if e <= base + ARENA_BYTES => e,
            _ => return std::ptr::null_mut(),
        };
        match ARENA_NEXT.compare_exchange_weak(
            cur,
            end - base,
            Ordering::Relaxed,
            Ordering::Relaxed,
        ) {
            Ok(_) => {
                // SAFETY: [start - 8, start) lies inside the arena, after `base + cur`, and this
                // range was just reserved for this call alone.
                unsafe { ((start - 8) as *mut usize).write(size) };
                return start as *mut c_void;
            }
            Err(now) => cur = now,
        }
    }
}

/// The size recorded for an arena object.
pub fn arena_size(p: *mut c_void) -> usize {
    // SAFETY: `p` is an arena object (caller checked `in_arena`), so its size word precedes it.
    unsafe { ((p as usize - 8) as *const usize).read() }
}
