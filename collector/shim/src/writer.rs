//! The writer thread: drains every ring, orders the records and writes them as trace chunks.
//!
//! It wakes every `flush_ms`, when a hook waits for room (`wake`), or when some code asks for a
//! synchronous flush (`flush_sync`: exit, `_exit`, exec, abort, late events). A normal tick writes the
//! records below the watermark (see `lib.rs`) and keeps the rest for the next tick; a requested flush
//! writes everything it drained. `REQ_FINISH` also writes the index footer and closes the file; records
//! that arrive after that (a failed exec, frees after the final flush) go to a continuation file.
//!
//! Errors (disk full, ...) stop the recording: the process goes on untraced and the manifest gets a
//! line `error <path> <message>` that `allocscope record` reports. The writer never writes to the
//! traced program's stdout or stderr.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::time::Duration;

use traces::{Event, Op, PtrKind, TraceWriter};

use crate::clock::Calibration;
use crate::lifecycle::{self, Config};
use crate::ring::{self, Record};
use crate::sink::GuardedFile;
use crate::{MODE, MODE_OFF, SEQ};

/// Hashes a recorder thread number with one multiplication: the writer looks one up per event,
/// and SipHash there cost more than the rest of the drain.
#[derive(Default)]
pub struct ThreadHasher(u64);

impl Hasher for ThreadHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0 ^ b as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        }
    }
    fn write_u32(&mut self, n: u32) {
        self.0 = (n as u64 ^ self.0).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    }
}

/// Events per chunk at most.
const MAX_CHUNK: usize = 1 << 20;
/// A thread with at least this many events in a pass gets chunks of its own.
const OWN_CHUNK_MIN: usize = 4096;

/// Write everything drained and flush.
pub const REQ_FLUSH: u32 = 1;
/// Like REQ_FLUSH, then write the index footer and close the file.
pub const REQ_FINISH: u32 = 2;

/// Futex word the writer sleeps on; hooks set it to 1 to wake it early.
static WAKE: AtomicU32 = AtomicU32::new(0);
/// Requests not yet served (REQ_* bits).
static REQ_BITS: AtomicU32 = AtomicU32::new(0);
/// Tickets handed to `flush_sync` callers, and the highest ticket served.
static REQ_TICKET: AtomicU64 = AtomicU64::new(0);
static REQ_DONE: AtomicU32 = AtomicU32::new(0);
/// True while a writer thread exists in this process.
pub static RUNNING: AtomicBool = AtomicBool::new(false);
/// The writer thread's kernel tid (it must never wait for itself).
static WRITER_TID: AtomicU32 = AtomicU32::new(0);

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

/// Asks the writer to write everything recorded so far (and with REQ_FINISH, close the file), and
/// waits until it has (at most 10 s: a writer stuck on a full disk must not hang the program).
/// errno is preserved.
pub fn flush_sync(bits: u32) {
    if !RUNNING.load(Ordering::Acquire) || WRITER_TID.load(Ordering::Relaxed) == gettid() {
        return;
    }
    let saved = crate::errno();
    REQ_BITS.fetch_or(bits, Ordering::AcqRel);
    let ticket = REQ_TICKET.fetch_add(1, Ordering::AcqRel) + 1;
    wake();
    let deadline = crate::clock::monotonic_ns() + 10_000_000_000;
    loop {
        let done = REQ_DONE.load(Ordering::Acquire);
        if done as u64 >= ticket || !RUNNING.load(Ordering::Acquire) {
            break;
        }
        if crate::clock::monotonic_ns() > deadline {
            break;
        }
        futex_wait(&REQ_DONE, done, Duration::from_millis(50));
    }
    crate::set_errno(saved);
}

/// Resets the request state (in a fork child, where no writer exists yet).
pub fn reset_after_fork() {
    WAKE.store(0, Ordering::Relaxed);
    REQ_BITS.store(0, Ordering::Relaxed);
    REQ_TICKET.store(0, Ordering::Relaxed);
    REQ_DONE.store(0, Ordering::Relaxed);
    RUNNING.store(false, Ordering::Relaxed);
    WRITER_TID.store(0, Ordering::Relaxed);
}

/// What the writer thread owns.
pub struct Writer {
    pub cfg: &'static Config,
    /// The open trace (None after REQ_FINISH until more records arrive).
    pub out: Option<(TraceWriter<GuardedFile>, String)>,
    /// Drained events not written yet (seq at or above the last watermark), by recorder thread.
    held: HashMap<u32, Vec<Event>, BuildHasherDefault<ThreadHasher>>,
    /// Events of the threads with few events this pass, merged into one chunk.
    mixed: Vec<Event>,
    /// The watermark of the last chunk written.
    last_watermark: u64,
    calib: Option<Calibration>,
    /// Path and events written of the current (or last) file, for the manifest's `stats` lines.
    written: (String, u64),
}

impl Writer {
    pub fn new(cfg: &'static Config, out: TraceWriter<GuardedFile>, path: String) -> Writer {
        let written = (path.clone(), 0);
        Writer {
            cfg,
            out: Some((out, path)),
            held: HashMap::default(),
            mixed: Vec::new(),
            last_watermark: 0,
            calib: None,
            written,
        }
    }

    /// Starts the writer thread with every signal blocked. Err when the thread cannot be created.
    ///
    /// A raw pthread rather than `std::thread`: std's thread prologue allocates and reads
    /// /proc/self/maps before our code runs, and those calls would be recorded as the program's.
    pub fn spawn(self) -> Result<(), String> {
        RUNNING.store(true, Ordering::Release);
        let boxed = Box::into_raw(Box::new(self));
        // SAFETY: sigset_t and pthread types are plain data initialised by the calls below;
        // pthread_sigmask only changes this thread's mask, restored right after the create (the new
        // thread inherits the full mask, so no signal of the program is ever delivered to it).
        // `boxed` is handed to the new thread, which takes ownership; on failure we take it back.
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
            let rc = libc::pthread_create(&mut tid, &attr, writer_main, boxed.cast());
            libc::pthread_attr_destroy(&mut attr);
            libc::pthread_sigmask(libc::SIG_SETMASK, &old, std::ptr::null_mut());
            rc
        };
        if rc != 0 {
            // SAFETY: the thread was not created, so `boxed` is still ours alone.
            drop(unsafe { Box::from_raw(boxed) });
            RUNNING.store(false, Ordering::Release);
            return Err(format!("cannot start the writer thread: error {rc}"));
        }
        Ok(())
    }

    fn run(mut self) {
        WRITER_TID.store(gettid(), Ordering::Relaxed);
        let period = Duration::from_millis(self.cfg.flush_ms);
        loop {
            if WAKE.load(Ordering::Acquire) == 0 && REQ_BITS.load(Ordering::Acquire) == 0 {
                futex_wait(&WAKE, 0, period);
            }
            WAKE.store(0, Ordering::Release);
            let ticket = REQ_TICKET.load(Ordering::Acquire);
            let bits = REQ_BITS.swap(0, Ordering::AcqRel);
            match self.tick(bits) {
                // After each requested flush (exit, exec, late events): what this file holds, so
                // `record` can check that the reader gets every event back; threads; ns since the
                // process image started.
                Ok(()) if bits != 0 => lifecycle::manifest_line(
                    self.cfg,
                    &format!(
                        "stats {} {} {} {} {}",
                        self.written.0,
                        self.written.1,
                        crate::WAITS.load(Ordering::Relaxed),
                        crate::THREADS.load(Ordering::Relaxed),
                        crate::clock::monotonic_ns().saturating_sub(crate::clock::origin().1)
                    ),
                ),
                Ok(()) => {}
                Err(e) => self.fail(&e),
            }
            if ticket > REQ_DONE.load(Ordering::Relaxed) as u64 {
                REQ_DONE.store(ticket as u32, Ordering::Release);
                futex_wake(&REQ_DONE);
            }
            if MODE.load(Ordering::Relaxed) == MODE_OFF {
                break;
            }
        }
        RUNNING.store(false, Ordering::Release);
        futex_wake(&REQ_DONE);
    }

    fn fail(&mut self, e: &str) {
        let path = self
            .out
            .as_ref()
            .map(|(_, p)| p.clone())
            .unwrap_or_default();
        lifecycle::manifest_line(self.cfg, &format!("error {path} {e}"));
        MODE.store(MODE_OFF, Ordering::Release);
        // Unblock hooks that wait for room: their records are dropped from now on.
        ring::for_each(|r| {
            r.drain(|_| {});
        });
        self.out = None;
    }

    fn calibration(&mut self) -> Calibration {
        if let Some(c) = self.calib {
            return c;
        }
        let origin = crate::clock::origin();
        // At least 20 ms between the two readings keeps the TSC ratio error in the ppm range.
        let elapsed = crate::clock::monotonic_ns().saturating_sub(origin.1);
        if elapsed < 20_000_000 {
            std::thread::sleep(Duration::from_nanos(20_000_000 - elapsed));
        }
        let c = Calibration::finish(origin);
        self.calib = Some(c);
        c
    }

    /// One pass: drain, write what the watermark allows (everything when `bits` asks for it).
    fn tick(&mut self, bits: u32) -> Result<(), String> {
        let g = SEQ.load(Ordering::Acquire);
        let mut watermark = g;
        ring::for_each(|r| watermark = watermark.min(r.inflight.load(Ordering::Acquire)));
        let calib = self.calibration();
        let held = &mut self.held;
        ring::for_each(|r| {
            let orphaned = r.state.load(Ordering::Acquire) == ring::ORPHANED;
            r.drain(|rec| {
                let ev = to_event(rec, &calib);
                held.entry(ev.thread).or_default().push(ev);
            });
            if orphaned && r.len() == 0 {
                r.release_pages();
                let _ = r.state.compare_exchange(
                    ring::ORPHANED,
                    ring::FREE,
                    Ordering::AcqRel,
                    Ordering::Relaxed,
                );
            }
        });
        let all = bits & (REQ_FLUSH | REQ_FINISH) != 0;

        // What goes out now: per thread, the events below the watermark (all of them on a requested
        // flush). A thread with many gets chunks of its own (deltas of addresses and times within
        // one thread compress far better than across threads); the rest share one mixed chunk.
        let mut own: Vec<(u32, usize)> = Vec::new();
        self.mixed.clear();
        for (&thread, evs) in self.held.iter_mut() {
            // One thread's records arrive in order, except after it exited (borrowed rings).
            if !evs.is_sorted_by_key(|e| e.seq) {
                evs.sort_unstable_by_key(|e| e.seq);
            }
            let n = if all {
                evs.len()
            } else {
                evs.partition_point(|e| e.seq < watermark)
            };
            if n >= OWN_CHUNK_MIN {
                own.push((thread, n));
            } else if n > 0 {
                self.mixed.extend(evs.drain(..n));
            }
        }
        self.held.retain(|_, v| !v.is_empty());
        self.mixed.sort_unstable_by_key(|e| e.seq);
        let pieces = own
            .iter()
            .map(|&(_, n)| n.div_ceil(MAX_CHUNK))
            .sum::<usize>()
            + usize::from(!self.mixed.is_empty());
        if pieces == 0 {
            return self.finish_or_flush(bits, all);
        }
        if self.out.is_none() {
            self.out = Some(lifecycle::open_trace(self.cfg, true)?);
        }
        let (w, path) = self.out.as_mut().expect("opened above");
        // Every chunk of this pass but the last promises only what the previous pass promised: the
        // new watermark holds once all of them are written.
        let mut left = pieces;
        let mark = |left: &mut usize| {
            *left -= 1;
            if *left == 0 {
                watermark
            } else {
                self.last_watermark
            }
        };
        for (thread, n) in own {
            let evs = self.held.get_mut(&thread).expect("listed above");
            for part in evs[..n].chunks(MAX_CHUNK) {
                w.write_chunk(part, mark(&mut left))
                    .map_err(|e| format!("{path}: {e}"))?;
            }
            evs.drain(..n);
        }
        for part in self.mixed.chunks(MAX_CHUNK) {
            w.write_chunk(part, mark(&mut left))
                .map_err(|e| format!("{path}: {e}"))?;
        }
        self.last_watermark = watermark;
        self.written = (path.clone(), w.events_written());
        self.finish_or_flush(bits, all)
    }

    fn finish_or_flush(&mut self, bits: u32, all: bool) -> Result<(), String> {
        if bits & REQ_FINISH != 0 {
            if let Some((w, path)) = self.out.take() {
                w.finish().map_err(|e| format!("{path}: {e}"))?;
            }
        } else if all {
            if let Some((w, path)) = self.out.as_mut() {
                w.flush().map_err(|e| format!("{path}: {e}"))?;
            }
        }
        Ok(())
    }
}

extern "C" fn writer_main(arg: *mut libc::c_void) -> *mut libc::c_void {
    // Everything this thread allocates passes through unrecorded (first thing: before any call).
    let _quiet = crate::Quiet::new();
    // SAFETY: `arg` is the Box<Writer> leaked by `spawn` for this thread alone.
    let w = unsafe { Box::from_raw(arg as *mut Writer) };
    let cfg = w.cfg;
    // A bug in the writer must not take the traced program down: recording stops instead.
    if std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| w.run())).is_err() {
        lifecycle::manifest_line(
            cfg,
            "error - internal error in the writer thread; recording stopped",
        );
        MODE.store(MODE_OFF, Ordering::Release);
        ring::for_each(|r| {
            r.drain(|_| {});
        });
        RUNNING.store(false, Ordering::Release);
        futex_wake(&REQ_DONE);
    }
    std::ptr::null_mut()
}

fn to_event(r: &Record, calib: &Calibration) -> Event {
    let op = Op::from_code(r.op).unwrap_or(Op::Malloc);
    let (nmemb, align) = if op == Op::Free {
        (0, 0)
    } else if op.has_nmemb() {
        (r.extra, 0)
    } else if op.has_align() {
        (1, r.extra)
    } else {
        (1, 0)
    };
    Event {
        seq: r.seq,
        thread: r.thread,
        ts_ns: calib.ns(r.start),
        op,
        addr: r.addr,
        old_addr: r.old_addr,
        size: r.size,
        nmemb,
        align,
        failed: r.failed != 0,
        latency_ns: calib.latency_ns(r.ticks),
        kind: PtrKind::Unknown,
        callsite: None,
    }
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
