//! Per-thread record rings and the registry of all rings.
//!
//! Each recording thread owns one [`Ring`]: a single-producer (the thread's hooks) single-consumer
//! (the writer thread) queue of fixed-size [`Record`]s in memory from `mmap`, never from the hooked
//! allocator. Rings are linked into a global, append-only list (`REGISTRY`); a ring is never unmapped,
//! and when its thread exits it is marked `ORPHANED`, drained by the writer, its pages returned to
//! the kernel, and then `FREE` for reuse. A ring starts at 256 KiB and doubles when full, up to
//! 4 MiB once the writer runs (without limit before: nothing drains it yet); a thread whose ring is
//! full at its largest waits for the writer.
//!
//! Invariants:
//! - `head` is written only by the owning producer, `tail` only by the consumer; `tail <= head` and
//!   `head - tail <= cap`. Slot `i` lives at `data[i & (cap - 1)]`.
//! - `data` and `cap` change only under `busy` (the writer holds it while draining; a producer holds
//!   it to grow its ring before the writer thread exists).
//! - `inflight` is `u64::MAX` or a value ≤ the seq of the record the producer is about to append
//!   (see `lib.rs`, "watermark").

use std::ptr::null_mut;
use std::sync::atomic::{AtomicPtr, AtomicU32, AtomicU64, Ordering};

/// One allocator call as the hook saw it (64 bytes, one cache line).
#[derive(Clone, Copy, Debug, Default)]
#[repr(C)]
pub struct Record {
    pub seq: u64,
    /// Raw clock stamp before the real call (see `clock`).
    pub start: u64,
    /// Raw clock ticks spent in the real call.
    pub ticks: u64,
    /// Address returned (0 for none or failure).
    pub addr: u64,
    /// Address passed in (free, realloc, reallocarray).
    pub old_addr: u64,
    /// Requested bytes (element bytes for calloc / reallocarray).
    pub size: u64,
    /// Element count (calloc, reallocarray) or alignment (aligned ops).
    pub extra: u64,
    /// Recorder's thread number.
    pub thread: u32,
    /// `traces::Op` code.
    pub op: u8,
    pub failed: u8,
    pub _pad: [u8; 2],
}

const _: () = assert!(std::mem::size_of::<Record>() == 64);

pub const FREE: u32 = 0;
pub const OWNED: u32 = 1;
pub const ORPHANED: u32 = 2;

/// Records per ring at creation (64 B each: 256 KiB), so that many mostly idle threads cost little.
pub const INITIAL_CAP: u64 = 1 << 12;
/// A busy thread's ring grows up to this many records (default 4 MiB; `ALLOCSCOPE_RING_MAX`
/// records, a power of two, for experiments) before its hooks wait for the writer.
pub static MAX_CAP: AtomicU64 = AtomicU64::new(1 << 16);

#[repr(C, align(64))]
pub struct Ring {
    /// Next ring in the registry; set before the ring is published, never changed.
    pub next: AtomicPtr<Ring>,
    /// FREE, OWNED or ORPHANED.
    pub state: AtomicU32,
    /// 1 while the writer drains or a producer grows the ring.
    pub busy: AtomicU32,
    /// Records storage (mmap), `cap` slots.
    pub data: AtomicPtr<Record>,
    /// Capacity in records, a power of two.
    pub cap: AtomicU64,
    /// Lowest seq the producer may still append (u64::MAX when not inside a hook).
    pub inflight: AtomicU64,
    _pad0: [u64; 2],
    /// Records appended so far (producer).
    pub head: AtomicU64,
    /// Producer's cached copy of `tail`.
    pub tail_seen: AtomicU64,
    _pad1: [u64; 6],
    /// Records consumed so far (writer).
    pub tail: AtomicU64,
}

static REGISTRY: AtomicPtr<Ring> = AtomicPtr::new(null_mut());

/// Maps `bytes` of zeroed private memory; null on failure.
pub fn map(bytes: usize) -> *mut u8 {
    // SAFETY: anonymous private mapping with no address hint; the result is checked.
    let p = unsafe {
        libc::mmap(
            null_mut(),
            bytes,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
            -1,
            0,
        )
    };
    if p == libc::MAP_FAILED {
        null_mut()
    } else {
        p.cast()
    }
}

fn unmap(p: *mut u8, bytes: usize) {
    // SAFETY: `p` came from `map(bytes)` and nothing refers to it any more.
    unsafe { libc::munmap(p.cast(), bytes) };
}

/// Iterates the registry.
pub fn for_each(mut f: impl FnMut(&Ring)) {
    let mut p = REGISTRY.load(Ordering::Acquire);
    while !p.is_null() {
        // SAFETY: rings in the registry are never unmapped.
        let r = unsafe { &*p };
        f(r);
        p = r.next.load(Ordering::Relaxed);
    }
}

/// A ring for the calling thread: a FREE one from the registry, else a new one. Null when out of
/// memory (the caller then passes the call through unrecorded).
pub fn acquire() -> *mut Ring {
    let mut found: *mut Ring = null_mut();
    for_each(|r| {
        if found.is_null()
            && r.state.load(Ordering::Relaxed) == FREE
            && r.state
                .compare_exchange(FREE, OWNED, Ordering::Acquire, Ordering::Relaxed)
                .is_ok()
        {
            found = r as *const Ring as *mut Ring;
        }
    });
    if !found.is_null() {
        return found;
    }
    let ring = map(std::mem::size_of::<Ring>()) as *mut Ring;
    if ring.is_null() {
        return null_mut();
    }
    let data = map(INITIAL_CAP as usize * std::mem::size_of::<Record>()) as *mut Record;
    if data.is_null() {
        unmap(ring.cast(), std::mem::size_of::<Ring>());
        return null_mut();
    }
    // SAFETY: `ring` is fresh zeroed memory of the right size and alignment (page aligned); all-zero
    // bytes are a valid `Ring` (atomics and null pointers), and nobody else sees it yet.
    let r = unsafe { &*ring };
    r.state.store(OWNED, Ordering::Relaxed);
    r.data.store(data, Ordering::Relaxed);
    r.cap.store(INITIAL_CAP, Ordering::Relaxed);
    r.inflight.store(u64::MAX, Ordering::Relaxed);
    let mut head = REGISTRY.load(Ordering::Relaxed);
    loop {
        r.next.store(head, Ordering::Relaxed);
        match REGISTRY.compare_exchange_weak(head, ring, Ordering::Release, Ordering::Relaxed) {
            Ok(_) => return ring,
            Err(h) => head = h,
        }
    }
}

impl Ring {
    /// Pending records.
    pub fn len(&self) -> u64 {
        self.head.load(Ordering::Acquire) - self.tail.load(Ordering::Acquire)
    }

    /// True when a record can be appended without waiting (producer only).
    #[inline(always)]
    pub fn has_room(&self) -> bool {
        let head = self.head.load(Ordering::Relaxed);
        let cap = self.cap.load(Ordering::Relaxed);
        if head - self.tail_seen.load(Ordering::Relaxed) < cap {
            return true;
        }
        let tail = self.tail.load(Ordering::Acquire);
        self.tail_seen.store(tail, Ordering::Relaxed);
        head - tail < cap
    }

    /// Appends a record (producer only; `has_room()` must have returned true). Returns true when
    /// the ring just became half full: the caller then wakes the writer, so that a writer that
    /// keeps up on average never makes the producer wait.
    #[inline(always)]
    pub fn push(&self, rec: &Record) -> bool {
        let head = self.head.load(Ordering::Relaxed);
        let cap = self.cap.load(Ordering::Relaxed);
        let data = self.data.load(Ordering::Relaxed);
        // SAFETY: slot `head & (cap-1)` is inside `data` (cap slots) and not visible to the consumer
        // until `head` is advanced below (Release), since `head - tail < cap`.
        unsafe { data.add((head & (cap - 1)) as usize).write(*rec) };
        self.head.store(head + 1, Ordering::Release);
        head + 1 - self.tail_seen.load(Ordering::Relaxed) == cap / 2
    }

    /// Doubles the ring (producer only). False when the writer holds the ring or memory ran out:
    /// the caller then waits for the writer instead.
    #[cold]
    pub fn grow(&self) -> bool {
        if self
            .busy
            .compare_exchange(0, 1, Ordering::Acquire, Ordering::Relaxed)
            .is_err()
        {
            return false;
        }
        let cap = self.cap.load(Ordering::Relaxed);
        let old = self.data.load(Ordering::Relaxed);
        let rec = std::mem::size_of::<Record>();
        let new = map(cap as usize * 2 * rec) as *mut Record;
        if new.is_null() {
            self.busy.store(0, Ordering::Release);
            return false;
        }
        let (head, tail) = (
            self.head.load(Ordering::Relaxed),
            self.tail.load(Ordering::Relaxed),
        );
        for i in tail..head {
            // SAFETY: both indices are inside their buffers (masks); we hold `busy`, so the consumer
            // does not read `old` concurrently.
            unsafe {
                new.add((i & (cap * 2 - 1)) as usize)
                    .write(old.add((i & (cap - 1)) as usize).read())
            };
        }
        self.data.store(new, Ordering::Relaxed);
        self.cap.store(cap * 2, Ordering::Relaxed);
        self.busy.store(0, Ordering::Release);
        unmap(old.cast(), cap as usize * rec);
        true
    }

    /// Hands every pending record to `f` and consumes them (writer only). Waits while the producer
    /// grows the ring (a copy of at most a few MiB): skipping the ring would break the watermark.
    pub fn drain(&self, mut f: impl FnMut(&Record)) {
        while self
            .busy
            .compare_exchange(0, 1, Ordering::Acquire, Ordering::Relaxed)
            .is_err()
        {
            std::thread::yield_now();
        }
        let head = self.head.load(Ordering::Acquire);
        let tail = self.tail.load(Ordering::Relaxed);
        let cap = self.cap.load(Ordering::Relaxed);
        let data = self.data.load(Ordering::Relaxed);
        for i in tail..head {
            // SAFETY: slots in [tail, head) were fully written before `head` was published (we loaded
            // it with Acquire) and the producer does not touch them until `tail` moves past them.
            f(unsafe { &*data.add((i & (cap - 1)) as usize) });
        }
        self.tail.store(head, Ordering::Release);
        self.busy.store(0, Ordering::Release);
    }

    /// Gives the pages of an empty, orphaned ring back to the kernel before it is marked FREE (no
    /// producer writes it meanwhile; the next owner gets zero pages on first touch).
    pub fn release_pages(&self) {
        let bytes = self.cap.load(Ordering::Relaxed) as usize * std::mem::size_of::<Record>();
        // SAFETY: `data` is a private anonymous mapping of `bytes` bytes owned by this ring, and
        // nobody reads or writes it while the ring is ORPHANED and empty.
        unsafe {
            libc::madvise(
                self.data.load(Ordering::Relaxed).cast(),
                bytes,
                libc::MADV_DONTNEED,
            )
        };
    }

    /// Forgets everything (after fork, in the child: the records belong to the parent).
    pub fn reset(&self, state: u32) {
        let head = self.head.load(Ordering::Relaxed);
        self.tail.store(head, Ordering::Relaxed);
        self.tail_seen.store(head, Ordering::Relaxed);
        self.inflight.store(u64::MAX, Ordering::Relaxed);
        self.busy.store(0, Ordering::Relaxed);
        self.state.store(state, Ordering::Relaxed);
    }
}
