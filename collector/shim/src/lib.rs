//! The allocscope preload shim: `LD_PRELOAD=libcollector_shim.so` records every call of the malloc
//! family of a process into a trace file (`traces` format).
//!
//! ## Design
//! - **Hooks** (`hooks.rs`) call the real function, then append one fixed-size `Record` to the
//!   calling thread's ring (`ring.rs`) and return. No lock, no I/O, no allocation through the hooked
//!   allocator, no panic. Calls made while a hook of the same thread is running (the real allocator
//!   calling itself, `dlsym`, the shim's own code) and calls of the writer thread pass straight
//!   through unrecorded (`depth` in [`ThreadState`]).
//! - **Order**: a global `SEQ` counter numbers every recorded call. Calls that release memory (free,
//!   realloc to 0) take their number *before* the real call, calls that return memory *after* it, so
//!   a free always precedes the allocation that reuses its address. A `realloc` that moves its block
//!   releases the old one inside the call: it records how far `SEQ` moved during the call (its
//!   window), and the writer applies `recorder_protocol::order`, which puts it before another
//!   thread's reuse of the old block numbered inside the window.
//! - **Watermark**: before taking a number a hook stores `SEQ`'s current value in its ring's
//!   `inflight` (Release) — a realloc does so when the call begins, so that its whole window is held
//!   back with it —, then `fetch_add`s (AcqRel), appends the record (`head`, Release) and resets
//!   `inflight` to `u64::MAX`. The writer loads `SEQ` (Acquire) = G, then every `inflight`, then
//!   reads the rings; every record with seq < min(G, inflights) has then been read. A pass writes
//!   the records below that watermark (the rest waits for the next pass; the final flushes at exit,
//!   exec and `_exit` write everything). A thread stuck inside a hook (a signal handler that never
//!   returns into it) would hold the watermark forever: an `inflight` unchanged for a second is
//!   ignored. Chunks of one pass (one per busy thread) overlap in seq: readers merge.
//! - **Rings survive the process**: a ring's records and cursors live in a file of the session's
//!   spool directory, mapped shared, and a record leaves the ring only after the chunk holding it
//!   was written (`tail`). After any death, SIGKILL included, `allocscope record` finds what the
//!   process had not written in its ring files and adds it to the trace.
//! - **Writer** (`writer.rs`): one thread with all signals blocked wakes every `ALLOCSCOPE_FLUSH_MS`
//!   (100 ms) or when a hook is waiting for room, reads all rings, and writes each chunk with a single
//!   `write(2)`, so a SIGKILL leaves whole chunks. A full ring makes its hook wait, never drop.
//!   Threads with many events get chunks of their own (better compression); the others share one
//!   chunk per pass.
//! - **Threads**: a pthread key destructor hands an exiting thread's ring to the writer (ORPHANED,
//!   then FREE for reuse). Calls the thread makes after that (other keys' destructors) borrow a ring
//!   for one record each; the thread keeps its recorder thread number.
//! - **Lifecycle** (`lifecycle.rs`): constructor (config, file, writer thread), `.fini_array` flush
//!   and end record, `_exit`/`abort`/exec flush (`exec.rs`), fork (the child starts its own trace
//!   file and writer). A trace is finished (index and end status) at exit and at exec; the few frees
//!   that follow the final flush (other libraries' destructors) are each written and the end record
//!   rewritten after them.
//! - **Failure policy**: the program always goes on. If the trace cannot be written (disk full,
//!   bad path) or the shim hits a bug (a Rust panic, caught at every entry point), recording stops,
//!   the hooks pass everything through, and `allocscope record` reports the error from the manifest.
//! - **Known limits**: a signal handler that allocates while its thread is inside a hook is passed
//!   through unrecorded; the rings of threads that started before the shim's constructor (other than
//!   the main thread) stay in private memory until they are reused.
//!
//! Environment: set by `allocscope record`, named in `recorder_protocol::env`.

#![allow(clippy::missing_safety_doc)] // the exported hooks have the C library's contracts
#![deny(unsafe_op_in_unsafe_fn)]

mod alloc;
mod clock;
mod exec;
mod hooks;
mod lifecycle;
mod modules;
mod real;
mod ring;
mod sink;
mod trie;
mod unwind;
mod writer;

use std::cell::Cell;
use std::ptr::null_mut;
use std::sync::atomic::{AtomicPtr, AtomicU32, AtomicU64, AtomicU8, Ordering};

use ring::{Record, Ring};

/// Recording state of the process image.
static MODE: AtomicU8 = AtomicU8::new(MODE_PENDING);
/// Before the constructor: hooks record into rings (which grow: no writer drains them yet).
const MODE_PENDING: u8 = 0;
/// Writer running.
const MODE_ACTIVE: u8 = 1;
/// Not recording (no output configured, not followed, or setup failed): pass everything through.
const MODE_OFF: u8 = 2;
/// After the final flush at exit: every record is followed by a synchronous flush.
const MODE_LATE: u8 = 3;

/// Next sequence number.
static SEQ: AtomicU64 = AtomicU64::new(0);
/// Times a hook found its ring full and waited for the writer (statistics, cold path only).
static WAITS: AtomicU64 = AtomicU64::new(0);
/// Next recorder thread number.
static THREADS: AtomicU32 = AtomicU32::new(0);
/// First byte of the shared control page (1 = recording), or null when there is none.
static CONTROL: AtomicPtr<AtomicU8> = AtomicPtr::new(null_mut());
/// pthread key whose destructor orphans a thread's ring (u32::MAX until created).
static KEY: AtomicU32 = AtomicU32::new(u32::MAX);

/// Per-thread state. `const` initialised and without `Drop`, so access never allocates or registers
/// a destructor.
struct ThreadState {
    /// This thread's ring (null until its first recorded call, and after thread exit).
    ring: Cell<*mut Ring>,
    /// > 0 while inside a hook or shim code: calls pass through unrecorded.
    depth: Cell<u32>,
    /// Recorder thread number + 1 (0 = not assigned yet).
    thread_no: Cell<u32>,
    /// The pthread key destructor ran: the thread is exiting.
    exiting: Cell<bool>,
    /// This thread's unwinding state (null until its first stack; `NO_UNWIND` when it cannot
    /// have one; freed at thread exit).
    unwind: Cell<*mut unwind::ThreadUnwind>,
}

thread_local! {
    static TLS: ThreadState = const {
        ThreadState {
            ring: Cell::new(null_mut()),
            depth: Cell::new(0),
            thread_no: Cell::new(0),
            exiting: Cell::new(false),
            unwind: Cell::new(null_mut()),
        }
    };
}

fn tls() -> &'static ThreadState {
    // SAFETY: the TLS slot lives as long as the thread, and the reference never leaves the thread
    // (ThreadState is !Sync because of its Cells).
    TLS.with(|t| unsafe { &*(t as *const ThreadState) })
}

/// Marks shim code (not a hook) on this thread: allocations inside pass through unrecorded.
pub(crate) struct Quiet(&'static ThreadState);

impl Quiet {
    pub(crate) fn new() -> Quiet {
        let t = tls();
        t.depth.set(t.depth.get() + 1);
        Quiet(t)
    }
}

impl Drop for Quiet {
    fn drop(&mut self) {
        self.0.depth.set(self.0.depth.get() - 1);
    }
}

/// A hook call being recorded: entered with [`enter`], finished with [`Hook::commit`]. Dropping
/// it (committed or not) leaves the hook: the thread's state is restored however the scope ends.
pub(crate) struct Hook {
    t: &'static ThreadState,
    ring: &'static Ring,
    /// The ring was taken for this one call (thread exiting): orphan it again after the call.
    temporary: bool,
    /// `inflight` was set when the call began ([`Hook::hold`]).
    held: bool,
}

/// Starts recording a call, or None when it must pass through unrecorded.
#[inline(always)]
pub(crate) fn enter() -> Option<Hook> {
    let mode = MODE.load(Ordering::Relaxed);
    if mode == MODE_OFF {
        return None;
    }
    let ctl = CONTROL.load(Ordering::Relaxed);
    // SAFETY: a non-null CONTROL points into a shared mapping that is never unmapped.
    if !ctl.is_null() && unsafe { (*ctl).load(Ordering::Relaxed) } == 0 {
        return None;
    }
    let t = tls();
    if t.depth.get() != 0 {
        return None;
    }
    let ring = t.ring.get();
    if ring.is_null() {
        return enter_slow(t);
    }
    t.depth.set(1);
    // SAFETY: rings are never unmapped.
    Some(Hook {
        t,
        ring: unsafe { &*ring },
        temporary: false,
        held: false,
    })
}

#[cold]
#[inline(never)]
fn enter_slow(t: &'static ThreadState) -> Option<Hook> {
    t.depth.set(1);
    let saved = errno(); // mmap and pthread_setspecific may set it
    let ring = ring::acquire();
    if ring.is_null() {
        set_errno(saved);
        t.depth.set(0);
        return None;
    }
    if t.thread_no.get() == 0 {
        t.thread_no.set(THREADS.fetch_add(1, Ordering::Relaxed) + 1);
    }
    let temporary = t.exiting.get();
    if !temporary {
        t.ring.set(ring);
        let key = KEY.load(Ordering::Acquire);
        if key != u32::MAX {
            // SAFETY: the key was created by pthread_key_create; the value is this thread's ring.
            // Any allocation pthread_setspecific makes comes back with depth 1 and passes through.
            unsafe { libc::pthread_setspecific(key, ring.cast()) };
        }
    }
    set_errno(saved);
    // SAFETY: rings are never unmapped.
    Some(Hook {
        t,
        ring: unsafe { &*ring },
        temporary,
        held: false,
    })
}

impl Hook {
    /// For a call that may move a block (realloc): holds the watermark at the counter's current
    /// value until the call is recorded, and returns that value, the start of the call's window.
    #[inline(always)]
    pub(crate) fn hold(&mut self) -> u64 {
        let v = SEQ.load(Ordering::Relaxed);
        self.ring.sh().inflight.store(v, Ordering::Release);
        self.held = true;
        v
    }

    /// Takes the next sequence number (waiting for room in the ring first).
    #[inline(always)]
    pub(crate) fn seq(&self) -> u64 {
        if !self.ring.has_room() {
            wait_for_room(self.ring);
        }
        if !self.held {
            self.ring
                .sh()
                .inflight
                .store(SEQ.load(Ordering::Relaxed), Ordering::Release);
        }
        SEQ.fetch_add(1, Ordering::AcqRel)
    }

    /// Appends the record (its `seq` from [`Hook::seq`]) and leaves the hook.
    #[inline(always)]
    pub(crate) fn commit(self, mut rec: Record) {
        rec.thread = self.t.thread_no.get() - 1;
        let half_full = self.ring.push(&rec);
        self.ring.sh().inflight.store(u64::MAX, Ordering::Release);
        if half_full || self.temporary || MODE.load(Ordering::Relaxed) == MODE_LATE {
            commit_slow(&self, half_full);
        }
    }
}

impl Hook {
    /// The trie node of the calling program's stack (0: stacks off, or none could be had).
    #[inline(always)]
    pub(crate) fn stack(&self) -> u32 {
        let depth = unwind::DEPTH.load(Ordering::Relaxed);
        if depth == 0 {
            return 0;
        }
        stack_slow(self.t, depth as usize)
    }
}

/// A thread whose stack could not be found: no stacks for it (never a real allocation: aligned
/// dangling).
const NO_UNWIND: *mut unwind::ThreadUnwind = std::ptr::NonNull::dangling().as_ptr();

/// Adds the calling thread's unwinding figures to `unwind::STATS` (before a `stats` line).
pub(crate) fn publish_own_unwind_stats() {
    let u = tls().unwind.get();
    if !u.is_null() && u != NO_UNWIND {
        // SAFETY: the calling thread's own state, used only by it.
        unsafe { (*u).publish_stats() };
    }
}

#[inline(never)]
fn stack_slow(t: &'static ThreadState, depth: usize) -> u32 {
    let Some(trie) = trie::current() else {
        return 0;
    };
    let mut u = t.unwind.get();
    if u == NO_UNWIND {
        return 0;
    }
    if u.is_null() {
        // Once per thread. The state comes from the real allocator (our own allocator never goes
        // through the hooks), after the real call returned: no allocator lock is held here.
        let saved = errno();
        u = unwind::ThreadUnwind::for_this_thread().map_or(null_mut(), Box::into_raw);
        set_errno(saved);
        if u.is_null() {
            t.unwind.set(NO_UNWIND); // not asked again on every call
            return 0;
        }
        t.unwind.set(u);
    }
    // SAFETY: `u` is this thread's own state, used by this thread only, and not freed before the
    // thread exits.
    let u = unsafe { &mut *u };
    let mut n = unwind::capture(u, depth);
    // Code of a library loaded since the last scan (opened, used and maybe closed before the
    // writer's next pass): scan now and unwind again.
    if u.outside && modules::rescan_in_hook(SEQ.load(Ordering::Relaxed)) {
        n = unwind::capture(u, depth);
    }
    unwind::intern(u, trie, n)
}

impl Drop for Hook {
    #[inline(always)]
    fn drop(&mut self) {
        if self.held {
            // Normally already reset by `commit`; a hook left another way must not hold the
            // watermark.
            self.ring.sh().inflight.store(u64::MAX, Ordering::Release);
        }
        self.t.depth.set(0);
    }
}

#[cold]
#[inline(never)]
fn commit_slow(h: &Hook, half_full: bool) {
    if half_full {
        let saved = errno();
        writer::wake();
        set_errno(saved);
    }
    if h.temporary {
        h.ring.state.store(ring::ORPHANED, Ordering::Release);
    }
    if MODE.load(Ordering::Relaxed) == MODE_LATE {
        writer::flush_sync(writer::REQ_FLUSH | writer::REQ_END);
    }
}

/// Waits until the writer made room in `ring` (or grows it while no writer exists yet).
#[cold]
#[inline(never)]
fn wait_for_room(ring: &Ring) {
    let saved = errno();
    let mut spins = 0u32;
    while !ring.has_room() {
        // Before the writer exists a ring grows as needed; afterwards up to MAX_CAP, then waits.
        let limit = if MODE.load(Ordering::Acquire) == MODE_PENDING {
            ring::MAX_CAP_PENDING
        } else {
            ring::MAX_CAP.load(Ordering::Relaxed)
        };
        if ring.cap() < limit && ring.move_to(ring.cap() * 2) {
            continue;
        }
        writer::wake();
        if spins == 0 {
            WAITS.fetch_add(1, Ordering::Relaxed);
        }
        spins += 1;
        let ns = if spins < 10 { 20_000 } else { 200_000 };
        let ts = libc::timespec {
            tv_sec: 0,
            tv_nsec: ns,
        };
        // SAFETY: valid timespec; a null remainder is allowed.
        unsafe { libc::nanosleep(&ts, null_mut()) };
    }
    set_errno(saved);
}

pub(crate) fn errno() -> i32 {
    // SAFETY: __errno_location always returns this thread's errno slot.
    unsafe { *libc::__errno_location() }
}

pub(crate) fn set_errno(v: i32) {
    // SAFETY: as above.
    unsafe { *libc::__errno_location() = v };
}

/// pthread key destructor: the thread is exiting; its ring is handed to the writer to drain.
extern "C" fn on_thread_exit(ring: *mut libc::c_void) {
    let t = tls();
    t.exiting.set(true);
    let u = t.unwind.replace(null_mut());
    if !u.is_null() && u != NO_UNWIND {
        let _q = Quiet::new();
        // SAFETY: the thread's own state, still live.
        unsafe { (*u).publish_stats() };
        // SAFETY: the thread's own state from Box::into_raw, no longer reachable from the thread.
        drop(unsafe { Box::from_raw(u) });
    }
    if !ring.is_null() && t.ring.get() == ring.cast() {
        t.ring.set(null_mut());
        // SAFETY: `ring` is the thread's ring from `ring::acquire`, never unmapped.
        unsafe {
            (*(ring as *const Ring))
                .state
                .store(ring::ORPHANED, Ordering::Release)
        };
    }
}
