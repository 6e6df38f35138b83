//! The writer thread: reads every ring, orders the records and writes them as trace chunks.
//!
//! The writer state is shared, behind a lock: the writer thread runs a pass every `flush_ms` or when
//! a hook waits for room (`wake`); a thread that needs everything written now (`flush_sync`: exit,
//! `_exit`, exec, abort, late events) runs the pass itself, so a short-lived process never waits
//! for the writer thread to be scheduled. A normal pass writes the records below the watermark (see
//! `lib.rs`) and keeps the rest for the next one; a requested flush writes everything it read, and
//! with `REQ_END` also finishes the trace as it stands (index and end status, replaced by whatever
//! is written next: see `TraceWriter::checkpoint`). A ring's records are marked written (`tail`)
//! only after the chunks holding them were written.
//!
//! Errors (disk full, ...) stop the recording: the process goes on untraced and the manifest gets an
//! `error` line that `allocscope record` reports. The writer never writes to the traced program's
//! stdout or stderr.

use std::path::PathBuf;
use std::sync::atomic::{AtomicI32, AtomicPtr, AtomicU32, AtomicU8, Ordering};
use std::time::Duration;

use recorder_protocol::manifest::{Line, UnwindStats};
use recorder_protocol::order::{order_moving_reallocs, Pending};
use recorder_protocol::{to_event, Timebase};
use traces::{EndStatus, Ending, TraceWriter};

use crate::lifecycle::{self, Config};
use crate::ring::{self, Ring};
use crate::sink::GuardedFile;
use crate::{MODE, MODE_OFF, SEQ};

/// Events per chunk at most.
const MAX_CHUNK: usize = 1 << 20;
/// A thread with at least this many events in a pass gets chunks of its own.
const OWN_CHUNK_MIN: usize = 4096;

/// Write everything read and flush.
pub const REQ_FLUSH: u32 = 1;
/// Then finish the trace as it stands with the end status set by [`set_end`] (a checkpoint: what
/// is written later replaces it).
pub const REQ_END: u32 = 2;
/// An `inflight` unchanged this long is ignored by the watermark (a thread that never came back
/// into its hook).
const STUCK_NS: u64 = 1_000_000_000;

/// Futex word the writer thread sleeps on; hooks set it to 1 to wake it early.
static WAKE: AtomicU32 = AtomicU32::new(0);
/// The writer state (null until recording starts; leaked, never freed). Used only under `LOCK`.
static WRITER: AtomicPtr<Writer> = AtomicPtr::new(std::ptr::null_mut());
/// Futex lock around the writer state: 0 free, 1 held, 2 held with waiters.
static LOCK: AtomicU32 = AtomicU32::new(0);
/// Kernel tid of the thread holding `LOCK` (0: none), so that a thread never waits for itself (a
/// signal handler that exits while its thread is inside a pass).
static OWNER: AtomicU32 = AtomicU32::new(0);
/// The end status the next `REQ_END` writes: an [`Ending`] code and the exit code or signal.
static END_HOW: AtomicU8 = AtomicU8::new(END_EXITED);
static END_CODE: AtomicI32 = AtomicI32::new(i32::MIN);
const END_EXITED: u8 = 0;
const END_EXEC: u8 = 1;
const END_KILLED: u8 = 2;
/// The clock calibration, once known: given by `allocscope record`, or measured by the first writer
/// of a process tree (a fork child inherits it). Null until then; leaked, never freed.
static CLOCK: std::sync::atomic::AtomicPtr<cycle_clock::Calibration> =
    std::sync::atomic::AtomicPtr::new(std::ptr::null_mut());

/// How the recording ends if the next `REQ_END` is the last one.
pub enum End {
    /// Exit path; the exit code when known (`_exit`).
    Exited(Option<i32>),
    Exec,
    /// A fatal signal the process raises itself (abort).
    Signal(i32),
}

/// Sets the end status of the next `REQ_END`.
pub fn set_end(end: End) {
    let (how, code) = match end {
        End::Exited(c) => (END_EXITED, c.unwrap_or(i32::MIN)),
        End::Exec => (END_EXEC, i32::MIN),
        End::Signal(s) => (END_KILLED, s),
    };
    END_CODE.store(code, Ordering::Relaxed);
    END_HOW.store(how, Ordering::Release);
}

fn end_status() -> EndStatus {
    let code = Some(END_CODE.load(Ordering::Relaxed)).filter(|&c| c != i32::MIN);
    match END_HOW.load(Ordering::Acquire) {
        END_EXEC => EndStatus::new(Ending::Exec),
        END_KILLED => EndStatus {
            signal: code,
            ..EndStatus::new(Ending::Killed)
        },
        _ => EndStatus {
            exit_code: code,
            ..EndStatus::new(Ending::Exited)
        },
    }
}

/// Uses the calibration `allocscope record` measured instead of measuring one.
pub fn set_clock(c: cycle_clock::Calibration) {
    CLOCK.store(Box::into_raw(Box::new(c)), Ordering::Release);
}

fn clock() -> Option<cycle_clock::Calibration> {
    // SAFETY: a non-null CLOCK points to a leaked Calibration that is never freed or changed.
    unsafe { CLOCK.load(Ordering::Acquire).as_ref() }.copied()
}

fn futex_wait(word: &AtomicU32, expected: u32, timeout: Duration) {
    let ts = libc::timespec {
        tv_sec: timeout.as_secs() as libc::time_t,
        tv_nsec: timeout.subsec_nanos() as libc::c_long,
    };
    // SAFETY: `word` is a valid aligned u32 for the duration of the call; FUTEX_WAIT_PRIVATE only
    // reads it; `ts` is a valid relative timeout.
    unsafe {
        libc::syscall(
            libc::SYS_futex,
            word.as_ptr(),
            libc::FUTEX_WAIT | libc::FUTEX_PRIVATE_FLAG,
            expected,
            &ts as *const libc::timespec,
        )
    };
}

fn futex_wake(word: &AtomicU32) {
    // SAFETY: `word` is a valid aligned u32; waking has no other effect.
    unsafe {
        libc::syscall(
            libc::SYS_futex,
            word.as_ptr(),
            libc::FUTEX_WAKE | libc::FUTEX_PRIVATE_FLAG,
            i32::MAX,
        )
    };
}

pub fn gettid() -> u32 {
    // SAFETY: gettid has no preconditions.
    unsafe { libc::syscall(libc::SYS_gettid) as u32 }
}

/// Wakes the writer now (a hook is waiting for room). Async-signal-safe, never blocks.
pub fn wake() {
    if WAKE.swap(1, Ordering::AcqRel) == 0 {
        futex_wake(&WAKE);
    }
}

/// Takes `LOCK`, waiting at most until `deadline_ns` (monotonic). False when the deadline passed
/// or this thread already holds it.
fn lock(deadline_ns: u64) -> bool {
    let me = gettid();
    if OWNER.load(Ordering::Relaxed) == me {
        return false;
    }
    if LOCK
        .compare_exchange(0, 1, Ordering::Acquire, Ordering::Relaxed)
        .is_err()
    {
        // Drepper's futex mutex: mark contended, sleep while it stays so.
        while LOCK.swap(2, Ordering::Acquire) != 0 {
            if crate::clock::monotonic_ns() > deadline_ns {
                return false;
            }
            futex_wait(&LOCK, 2, Duration::from_millis(10));
        }
    }
    OWNER.store(me, Ordering::Relaxed);
    true
}

fn unlock() {
    OWNER.store(0, Ordering::Relaxed);
    if LOCK.swap(0, Ordering::Release) == 2 {
        futex_wake(&LOCK);
    }
}

/// Runs one writer pass with `bits` on the calling thread, if the lock can be had before
/// `deadline_ns`. A panic in the pass (a bug) stops recording; the program goes on.
fn pass(bits: u32, deadline_ns: u64) {
    if !lock(deadline_ns) {
        return;
    }
    // SAFETY: a non-null WRITER is a leaked Writer, used only while holding LOCK (we do).
    if let Some(w) = unsafe { WRITER.load(Ordering::Acquire).as_mut() } {
        if std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| w.pass(bits))).is_err() {
            w.fail("internal error in the writer; recording stopped");
        }
    }
    unlock();
}

/// Writes everything recorded so far now, on this thread (and with `REQ_END` finishes the trace as
/// it stands). Waits at most 10 s for a pass in progress: a writer stuck on a full disk must not
/// hang the program. errno is preserved.
pub fn flush_sync(bits: u32) {
    if WRITER.load(Ordering::Acquire).is_null() {
        return;
    }
    let saved = crate::errno();
    pass(bits, crate::clock::monotonic_ns() + 10_000_000_000);
    crate::set_errno(saved);
}

/// Forgets the parent's writer (in a fork child: its thread does not exist here, and its state is
/// the parent's).
pub fn reset_after_fork() {
    WAKE.store(0, Ordering::Relaxed);
    WRITER.store(std::ptr::null_mut(), Ordering::Relaxed);
    LOCK.store(0, Ordering::Relaxed);
    OWNER.store(0, Ordering::Relaxed);
}

/// What the writer thread owns.
pub struct Writer {
    pub cfg: &'static Config,
    /// The open trace (None once recording failed).
    out: Option<TraceWriter<GuardedFile>>,
    path: PathBuf,
    /// Records read but not written yet (seq at or above the last watermark), per ring (indexed by
    /// ring number), oldest first: the same records are still in their ring, above its `tail`.
    held: Vec<(Option<&'static Ring>, Vec<Pending<()>>)>,
    /// This pass's records, seq-ordered across rings, tagged with their ring's place in `held`.
    batch: Vec<Pending<usize>>,
    /// Per ring of `held`: its events of this pass, for chunks of their own.
    own: Vec<Vec<traces::Event>>,
    /// Events of the rings with few this pass, merged into one chunk.
    mixed: Vec<traces::Event>,
    /// The watermark of the last chunk written.
    last_watermark: u64,
    time: Option<Timebase>,
    /// Stack nodes in the trace so far (ids 1 ..= this), and a buffer for the next ones.
    nodes_written: u32,
    nodes: Vec<(u32, u64)>,
}

/// Node `id` of the trie once its hook has finished filling it (a few instructions after it took
/// the id), waiting at most 100 ms.
fn node_when_complete(trie: &crate::trie::Trie, id: u32) -> Option<(u32, u64)> {
    let deadline = crate::clock::monotonic_ns() + 100_000_000;
    loop {
        if let Some(n) = trie.node(id) {
            return Some(n);
        }
        if id >= trie.next_id() || crate::clock::monotonic_ns() > deadline {
            return None;
        }
        std::thread::yield_now();
    }
}

impl Writer {
    pub fn new(cfg: &'static Config, out: TraceWriter<GuardedFile>, path: PathBuf) -> Writer {
        Writer {
            cfg,
            out: Some(out),
            path,
            held: Vec::new(),
            batch: Vec::new(),
            own: Vec::new(),
            mixed: Vec::new(),
            last_watermark: 0,
            time: None,
            nodes_written: 0,
            nodes: Vec::new(),
        }
    }

    /// Publishes the writer and starts its thread (every signal blocked). Err when the thread
    /// cannot be created (recording then stops).
    ///
    /// A raw pthread rather than `std::thread`: std's thread prologue allocates and reads
    /// /proc/self/maps before our code runs, and those calls would be recorded as the program's.
    pub fn spawn(self) -> Result<(), String> {
        let period_ms = self.cfg.flush_ms;
        WRITER.store(Box::into_raw(Box::new(self)), Ordering::Release);
        // SAFETY: sigset_t and pthread types are plain data initialised by the calls below;
        // pthread_sigmask only changes this thread's mask, restored right after the create (the new
        // thread inherits the full mask, so no signal of the program is ever delivered to it).
        let rc = unsafe {
            let mut all: libc::sigset_t = std::mem::zeroed();
            let mut old: libc::sigset_t = std::mem::zeroed();
            libc::sigfillset(&mut all);
            libc::pthread_sigmask(libc::SIG_SETMASK, &all, &mut old);
            let mut attr: libc::pthread_attr_t = std::mem::zeroed();
            libc::pthread_attr_init(&mut attr);
            libc::pthread_attr_setstacksize(&mut attr, 1 << 20);
            libc::pthread_attr_setdetachstate(&mut attr, libc::PTHREAD_CREATE_DETACHED);
            let mut tid: libc::pthread_t = 0;
            let rc = libc::pthread_create(
                &mut tid,
                &attr,
                writer_main,
                period_ms as usize as *mut libc::c_void,
            );
            libc::pthread_attr_destroy(&mut attr);
            libc::pthread_sigmask(libc::SIG_SETMASK, &old, std::ptr::null_mut());
            rc
        };
        if rc != 0 {
            return Err(format!("cannot start the writer thread: error {rc}"));
        }
        Ok(())
    }

    /// One pass and, after a requested flush (exit, exec, late events), a `stats` line: what this
    /// file holds, so `record` can check that the reader gets every event back; threads; ns since
    /// the process image started.
    fn pass(&mut self, bits: u32) {
        if self.out.is_none() {
            return;
        }
        match self.tick(bits) {
            Ok(()) if bits != 0 => {
                // The exiting thread's own figures (other threads add theirs as they go).
                crate::publish_own_unwind_stats();
                let u = |i: usize| crate::unwind::STATS[i].load(Ordering::Relaxed);
                lifecycle::manifest_line(
                    self.cfg,
                    &Line::Stats {
                        path: self.path.clone(),
                        events: self.out.as_ref().map_or(0, |w| w.events_written()),
                        waits: crate::WAITS.load(Ordering::Relaxed),
                        threads: crate::THREADS.load(Ordering::Relaxed) as u64,
                        alive_ns: crate::clock::monotonic_ns()
                            .saturating_sub(crate::clock::origin().1),
                        unwinding: UnwindStats {
                            captures: u(0),
                            frames_unwound: u(1),
                            frames_reused: u(2),
                            cache_hits: u(3),
                            cache_lookups: u(4),
                        },
                    },
                )
            }
            Ok(()) => {}
            Err(e) => self.fail(&e),
        }
    }

    fn fail(&mut self, e: &str) {
        if self.out.is_none() {
            return;
        }
        lifecycle::manifest_line(
            self.cfg,
            &Line::Error {
                path: Some(self.path.clone()),
                message: e.to_string(),
            },
        );
        MODE.store(MODE_OFF, Ordering::Release);
        // Say why the trace ends here, if the file still takes it (a full disk may not).
        if let Some(w) = self.out.as_mut() {
            let stopped = EndStatus {
                note: e.to_string(),
                ..EndStatus::new(Ending::Stopped)
            };
            let _ = w.checkpoint(&stopped);
        }
        // Unblock hooks that wait for room: their records are dropped from now on.
        ring::for_each(|r| r.reset(r.state.load(Ordering::Relaxed)));
        lifecycle::remove_ring_files();
        self.out = None;
    }

    /// How this image's raw stamps become ns (measuring the clock first when nobody gave a
    /// calibration of the session's clock).
    fn timebase(&mut self) -> Timebase {
        if let Some(t) = self.time {
            return t;
        }
        let source = crate::clock::current_source();
        let clock = match clock().filter(|c| c.source == source) {
            Some(c) => c,
            None => {
                // Not started by `record` (which measures once for every process): measure here.
                let c = cycle_clock::Calibration::measure(source, Duration::from_millis(20));
                set_clock(c);
                c
            }
        };
        let t = Timebase {
            origin: crate::clock::origin().0,
            clock,
        };
        self.time = Some(t);
        t
    }

    /// The watermark: every record with a smaller seq has been appended to its ring. A ring whose
    /// `inflight` has not changed for [`STUCK_NS`] is left out (its thread never came back).
    fn watermark() -> u64 {
        let mut w = SEQ.load(Ordering::Acquire);
        let now = crate::clock::monotonic_ns();
        ring::for_each(|r| {
            let v = r.sh().inflight.load(Ordering::Acquire);
            if v == u64::MAX {
                return;
            }
            if r.stuck_value.load(Ordering::Relaxed) != v {
                r.stuck_value.store(v, Ordering::Relaxed);
                r.stuck_since_ns.store(now, Ordering::Relaxed);
            } else if now.saturating_sub(r.stuck_since_ns.load(Ordering::Relaxed)) > STUCK_NS {
                return;
            }
            w = w.min(v);
        });
        w
    }

    /// Reads every ring's new records into `held`.
    fn read_rings(&mut self, time: &Timebase) {
        let held = &mut self.held;
        ring::for_each(|r| {
            let i = r.number() as usize;
            if held.len() <= i {
                held.resize_with(i + 1, || (None, Vec::new()));
            }
            // SAFETY: registry rings are never unmapped: the reference is 'static.
            held[i].0 = Some(unsafe { &*(r as *const Ring) });
            let v = &mut held[i].1;
            r.read_new(|rec| {
                v.push(Pending {
                    event: to_event(rec, time),
                    window: rec.window(),
                    tag: (),
                })
            });
        });
    }

    /// One pass: read, write what the watermark allows (everything when `bits` asks for it), mark
    /// it written in the rings, and with `REQ_END` finish the trace as it stands.
    fn tick(&mut self, bits: u32) -> Result<(), String> {
        let watermark = Self::watermark();
        let time = self.timebase();
        self.read_rings(&time);
        let all = bits & REQ_FLUSH != 0;

        // This pass: per ring, the records below the watermark (all of them on a requested flush),
        // in one seq-ordered batch, where the order rule for moving reallocs applies.
        self.batch.clear();
        for (i, (_, v)) in self.held.iter_mut().enumerate() {
            // One ring's records arrive in order, except a ring borrowed by exiting threads.
            if !v.is_sorted_by_key(|p| p.event.seq) {
                v.sort_unstable_by_key(|p| p.event.seq);
            }
            let n = if all {
                v.len()
            } else {
                v.partition_point(|p| p.event.seq < watermark)
            };
            self.batch.extend(v.drain(..n).map(|p| Pending {
                event: p.event,
                window: p.window,
                tag: i,
            }));
        }
        // What the events of this pass refer to goes first: modules loaded since the last pass
        // (read after the rings, so every module an event read here can name is included) and the
        // stack nodes.
        self.write_stack_context(all)?;
        if !self.batch.is_empty() {
            self.batch.sort_unstable_by_key(|p| p.event.seq);
            order_moving_reallocs(&mut self.batch);
            self.write_batch(watermark)?;
        }
        // Everything of this pass is in the file: the rings may reuse those slots.
        for (r, v) in &self.held {
            let Some(r) = r else { continue };
            r.written(v.len() as u64);
            if r.state.load(Ordering::Acquire) == ring::ORPHANED && r.len() == 0 {
                r.release_pages();
                let _ = r.state.compare_exchange(
                    ring::ORPHANED,
                    ring::FREE,
                    Ordering::AcqRel,
                    Ordering::Relaxed,
                );
            }
        }
        let w = self.out.as_mut().ok_or("the trace is closed")?;
        let path = &self.path;
        if bits & REQ_END != 0 {
            w.checkpoint(&end_status())
                .map_err(|e| format!("{}: {e}", path.display()))?;
        } else if all {
            w.flush().map_err(|e| format!("{}: {e}", path.display()))?;
        }
        Ok(())
    }

    /// Writes the module records and the stack nodes the events of this pass need (all complete
    /// nodes on a requested flush). Nothing when stacks are off.
    fn write_stack_context(&mut self, all: bool) -> Result<(), String> {
        let Some(trie) = crate::trie::current() else {
            return Ok(());
        };
        let w = self.out.as_mut().ok_or("the trace is closed")?;
        let path = &self.path;
        let err = |e: traces::TraceError| format!("{}: {e}", path.display());
        let modules = crate::modules::refresh(false, SEQ.load(Ordering::Acquire));
        if !modules.is_empty() {
            w.write_modules(&modules).map_err(err)?;
        }
        let needed = self
            .batch
            .iter()
            .filter_map(|p| p.event.callsite)
            .max()
            .unwrap_or(0);
        let target = if all {
            trie.next_id().saturating_sub(1).max(needed)
        } else {
            needed
        };
        if target <= self.nodes_written {
            return Ok(());
        }
        self.nodes.clear();
        let first = self.nodes_written + 1;
        for id in first..=target {
            match node_when_complete(trie, id) {
                Some(n) => self.nodes.push(n),
                // Reserved by a thread that never finished it (it died, or this is a final
                // flush racing a hook): the events that name it show an unknown stack.
                None => break,
            }
        }
        if !self.nodes.is_empty() {
            w.write_stacks(first, &self.nodes).map_err(err)?;
            self.nodes_written += self.nodes.len() as u32;
        }
        Ok(())
    }

    /// Writes this pass's batch: a ring with many events gets chunks of its own (deltas of
    /// addresses and times within one thread compress far better than across threads); the others
    /// share one mixed chunk.
    fn write_batch(&mut self, watermark: u64) -> Result<(), String> {
        self.own.resize_with(self.held.len(), Vec::new);
        self.own.iter_mut().for_each(Vec::clear);
        self.mixed.clear();
        for p in &self.batch {
            self.own[p.tag].push(p.event);
        }
        let mut pieces = 0;
        for v in &mut self.own {
            if v.len() < OWN_CHUNK_MIN {
                self.mixed.append(v);
            } else {
                pieces += v.len().div_ceil(MAX_CHUNK);
            }
        }
        if !self.mixed.is_empty() {
            self.mixed.sort_unstable_by_key(|e| e.seq);
            pieces += self.mixed.len().div_ceil(MAX_CHUNK);
        }
        let w = self.out.as_mut().ok_or("the trace is closed")?;
        let path = &self.path;
        // Every chunk of this pass but the last promises only what the previous pass promised: the
        // new watermark holds once all of them are written.
        let last = self.last_watermark;
        let mut left = pieces;
        let mut put = |part: &[traces::Event]| {
            left -= 1;
            let mark = if left == 0 { watermark } else { last };
            w.write_chunk(part, mark)
                .map_err(|e| format!("{}: {e}", path.display()))
        };
        for v in self.own.iter().filter(|v| !v.is_empty()) {
            for part in v.chunks(MAX_CHUNK) {
                put(part)?;
            }
        }
        for part in self.mixed.chunks(MAX_CHUNK) {
            put(part)?;
        }
        self.last_watermark = watermark;
        Ok(())
    }
}

extern "C" fn writer_main(arg: *mut libc::c_void) -> *mut libc::c_void {
    // Everything this thread allocates passes through unrecorded (first thing: before any call).
    let _quiet = crate::Quiet::new();
    let period = Duration::from_millis(arg as usize as u64);
    while MODE.load(Ordering::Relaxed) != MODE_OFF {
        if WAKE.load(Ordering::Acquire) == 0 {
            futex_wait(&WAKE, 0, period);
        }
        WAKE.store(0, Ordering::Release);
        pass(0, u64::MAX);
    }
    std::ptr::null_mut()
}

/// Writes a whole buffer to a raw fd (manifest lines), retrying on EINTR.
pub fn write_fd(fd: i32, mut b: &[u8]) {
    while !b.is_empty() {
        // SAFETY: `b` is a valid readable slice; `fd` is owned by the caller.
        let n = unsafe { libc::write(fd, b.as_ptr().cast(), b.len()) };
        if n < 0 {
            if crate::errno() == libc::EINTR {
                continue;
            }
            return;
        }
        b = &b[n as usize..];
    }
}
