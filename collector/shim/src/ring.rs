//! Per-thread record rings and the registry of all rings.
//!
//! Each recording thread owns one [`Ring`]: a single-producer (the thread's hooks) single-consumer
//! (the writer thread) queue of fixed-size [`Record`]s. The records and the cursors live in a
//! mapping laid out as `recorder_protocol::ring` describes (a header page, then the records): a file
//! in the session's spool directory, mapped shared, when recording with `allocscope record`, so that
//! records survive the process and `record` recovers what a killed process had not written yet;
//! private memory otherwise (and for the rings of a process image before its constructor ran).
//! Never memory from the hooked allocator.
//!
//! Rings are linked into a global, append-only list (`REGISTRY`); a [`Ring`] is never unmapped, and
//! when its thread exits it is marked `ORPHANED`, written out by the writer, its pages given back,
//! and then `FREE` for reuse.
//!
//! Cursors (all counts of records since the ring's creation; slot `i` is `i & (cap - 1)`):
//! - `head`: appended by the producer (Release after the record is stored).
//! - `read`: read by the writer (writer only).
//! - `tail`: written to the trace file (writer, Release, after the chunk's `write` returned). The
//!   producer may overwrite a slot only once `tail` is past it, so every record not yet in the
//!   trace file is still in the ring: that is what makes a SIGKILL lose nothing.
//!
//! Invariants: `tail <= read <= head <= tail + cap`. The mapping and `cap` change only under
//! `busy` (the writer holds it while reading; a producer holds it to move its own ring to a larger
//! or a shared mapping). `inflight` is `u64::MAX` or a value ≤ the seq of the record the producer
//! is about to append (see `lib.rs`, "watermark").

use std::ffi::CStr;
use std::ptr::null_mut;
use std::sync::atomic::{AtomicPtr, AtomicU32, AtomicU64, Ordering};

use recorder_protocol::ring as layout;
pub use recorder_protocol::ring::Record;

pub const FREE: u32 = 0;
pub const OWNED: u32 = 1;
pub const ORPHANED: u32 = 2;

/// Records per private ring at creation (64 B each: 256 KiB), so that many idle threads cost little.
pub const INITIAL_CAP: u64 = 1 << 12;
/// A ring holds up to this many records (default 4 MiB; `ALLOCSCOPE_RING_MAX` records, a power of
/// two, for experiments) before its hooks wait for the writer. Shared rings are created at this
/// size: their files are sparse, so an idle thread's ring costs the pages it touched.
pub static MAX_CAP: AtomicU64 = AtomicU64::new(1 << 16);
/// Before the writer exists nothing drains a ring: it grows up to this (the largest ring file a
/// reader accepts) instead.
pub const MAX_CAP_PENDING: u64 = layout::MAX_CAP;

/// The header page of a ring mapping, as `recorder_protocol::ring` lays it out.
#[repr(C, align(4096))]
pub struct Shared {
    /// Magic, pid, ring number, image, cap, generation: written once at creation.
    ident: [u8; 64],
    /// Records appended so far (producer).
    pub head: AtomicU64,
    /// Producer's cached copy of `tail`.
    pub tail_seen: AtomicU64,
    /// Lowest seq the producer may still append (u64::MAX when not inside a hook).
    pub inflight: AtomicU64,
    _pad0: [u64; 5],
    /// Records written to the trace file so far (writer).
    pub tail: AtomicU64,
}

const _: () = {
    assert!(std::mem::size_of::<Shared>() == layout::HEADER_LEN);
    assert!(std::mem::offset_of!(Shared, head) == layout::HEAD_AT);
    assert!(std::mem::offset_of!(Shared, tail) == layout::TAIL_AT);
    assert!(std::mem::offset_of!(Shared, inflight) == layout::INFLIGHT_AT);
    assert!(std::mem::size_of::<Record>() == layout::RECORD_LEN);
};

#[repr(C, align(64))]
pub struct Ring {
    /// Next ring in the registry; set before the ring is published, never changed.
    pub next: AtomicPtr<Ring>,
    /// FREE, OWNED or ORPHANED.
    pub state: AtomicU32,
    /// 1 while the writer reads or a producer moves the ring.
    pub busy: AtomicU32,
    /// The mapping: a [`Shared`] header page followed by `cap` records.
    shared: AtomicPtr<Shared>,
    /// Capacity in records, a power of two.
    cap: AtomicU64,
    /// Number of this ring in the registry (names its file).
    ring_no: u32,
    /// Generation of its file (a ring that moves gets a new file).
    generation: AtomicU32,
    /// The process image whose spool file backs this ring (0: private memory).
    image: AtomicU64,
    /// Records read by the writer (writer only).
    pub read: AtomicU64,
    /// The writer's view of a stuck `inflight`: the value and when it was first seen (writer only).
    pub stuck_value: AtomicU64,
    pub stuck_since_ns: AtomicU64,
}

static REGISTRY: AtomicPtr<Ring> = AtomicPtr::new(null_mut());
static RINGS: AtomicU32 = AtomicU32::new(0);

/// Where shared rings go: a directory descriptor and the image they belong to.
pub struct Spool {
    pub dir: &'static crate::sink::GuardedDir,
    pub pid: u32,
    pub image: u64,
}

/// The spool of the current process image, once the constructor (or a fork child) set it.
static SPOOL: AtomicPtr<Spool> = AtomicPtr::new(null_mut());

/// Sets the spool new rings are created in (null: private memory). The spool is leaked: hooks
/// may read it at any time.
pub fn set_spool(s: Option<Spool>) {
    let p = s.map_or(null_mut(), |s| Box::into_raw(Box::new(s)));
    SPOOL.store(p, Ordering::Release);
}

fn spool() -> Option<&'static Spool> {
    // SAFETY: a non-null SPOOL points to a leaked, never freed Spool.
    unsafe { SPOOL.load(Ordering::Acquire).as_ref() }
}

fn map_bytes(cap: u64) -> usize {
    layout::HEADER_LEN + cap as usize * layout::RECORD_LEN
}

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
    // SAFETY: `p` came from a mapping of `bytes` bytes and nothing refers to it any more.
    unsafe { libc::munmap(p.cast(), bytes) };
}

/// A new mapping for ring `ring_no` of `cap` records: a file in the spool when there is one (its
/// header written), private memory otherwise or when the file cannot be made. Returns the mapping
/// and the image it belongs to (0 for private memory). Allocates nothing; async-signal-safe.
fn new_mapping(ring_no: u32, generation: u32, cap: u64) -> (*mut Shared, u64) {
    let bytes = map_bytes(cap);
    if let Some(s) = spool() {
        let mut name = [0u8; 80];
        if let Some(n) =
            layout::write_file_name(&mut name[..79], s.pid, s.image, ring_no, generation)
        {
            name[n] = 0;
            // SAFETY: `name` is NUL-terminated at `n`.
            let cname = unsafe { CStr::from_bytes_with_nul_unchecked(&name[..=n]) };
            if let Some(p) = s.dir.create_mapped(cname, bytes) {
                let ident = layout::header_bytes(
                    s.pid,
                    ring_no,
                    s.image,
                    cap,
                    generation,
                    crate::clock::origin().0,
                );
                // SAFETY: the mapping is at least HEADER_LEN bytes, fresh, and ours alone.
                unsafe { std::ptr::copy_nonoverlapping(ident.as_ptr(), p, ident.len()) };
                return (p.cast(), s.image);
            }
        }
    }
    let p = map(bytes);
    if !p.is_null() {
        let ident = layout::header_bytes(0, ring_no, 0, cap, generation, 0);
        // SAFETY: as above, private memory.
        unsafe { std::ptr::copy_nonoverlapping(ident.as_ptr(), p, ident.len()) };
    }
    (p.cast(), 0)
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
        // SAFETY: registry rings are never unmapped; we own it now.
        let r = unsafe { &*found };
        // A FREE ring of an earlier image (before the constructor, or the parent's before a fork)
        // moves to a file of this one, so that its records survive this process.
        if let Some(s) = spool() {
            if r.image.load(Ordering::Relaxed) != s.image {
                r.move_to(r.cap().max(MAX_CAP.load(Ordering::Relaxed)));
            }
        }
        return found;
    }
    let ring = map(std::mem::size_of::<Ring>()) as *mut Ring;
    if ring.is_null() {
        return null_mut();
    }
    let ring_no = RINGS.fetch_add(1, Ordering::Relaxed);
    let cap = if spool().is_some() {
        MAX_CAP.load(Ordering::Relaxed)
    } else {
        INITIAL_CAP
    };
    let (shared, image) = new_mapping(ring_no, 0, cap);
    if shared.is_null() {
        unmap(ring.cast(), std::mem::size_of::<Ring>());
        return null_mut();
    }
    // SAFETY: `ring` is fresh zeroed memory of the right size and alignment (page aligned); all-zero
    // bytes are a valid `Ring` (atomics and null pointers), and nobody else sees it yet.
    let r = unsafe { &mut *ring };
    r.ring_no = ring_no;
    r.state.store(OWNED, Ordering::Relaxed);
    r.shared.store(shared, Ordering::Relaxed);
    r.cap.store(cap, Ordering::Relaxed);
    r.image.store(image, Ordering::Relaxed);
    r.sh().inflight.store(u64::MAX, Ordering::Relaxed);
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
    /// The header page (cursors).
    #[inline(always)]
    pub fn sh(&self) -> &Shared {
        // SAFETY: `shared` always points to a live mapping (replaced only under `busy` by the owner
        // of the ring, and old mappings of a ring are unmapped only after the swap, by that owner).
        unsafe { &*self.shared.load(Ordering::Relaxed) }
    }

    /// This ring's number (creation order, from 0).
    pub fn number(&self) -> u32 {
        self.ring_no
    }

    #[inline(always)]
    pub fn cap(&self) -> u64 {
        self.cap.load(Ordering::Relaxed)
    }

    #[inline(always)]
    fn slot(&self, i: u64) -> *mut Record {
        let base = self.shared.load(Ordering::Relaxed) as *mut u8;
        // SAFETY: records start HEADER_LEN bytes into the mapping, and `i & (cap - 1)` < cap.
        unsafe {
            base.add(layout::HEADER_LEN)
                .cast::<Record>()
                .add((i & (self.cap() - 1)) as usize)
        }
    }

    /// Records appended and not yet written to the trace file.
    pub fn len(&self) -> u64 {
        let sh = self.sh();
        sh.head.load(Ordering::Acquire) - sh.tail.load(Ordering::Acquire)
    }

    /// True when a record can be appended without waiting (producer only).
    #[inline(always)]
    pub fn has_room(&self) -> bool {
        let sh = self.sh();
        let head = sh.head.load(Ordering::Relaxed);
        let cap = self.cap();
        if head - sh.tail_seen.load(Ordering::Relaxed) < cap {
            return true;
        }
        let tail = sh.tail.load(Ordering::Acquire);
        sh.tail_seen.store(tail, Ordering::Relaxed);
        head - tail < cap
    }

    /// Appends a record (producer only; `has_room()` must have returned true). Returns true when
    /// the ring just became half full: the caller then wakes the writer, so that a writer that
    /// keeps up on average never makes the producer wait.
    #[inline(always)]
    pub fn push(&self, rec: &Record) -> bool {
        let sh = self.sh();
        let head = sh.head.load(Ordering::Relaxed);
        // SAFETY: the slot is inside the mapping and not visible to the consumer until `head` is
        // advanced below (Release), and `tail` is past its previous content since `head - tail <
        // cap`.
        unsafe { self.slot(head).write(*rec) };
        sh.head.store(head + 1, Ordering::Release);
        head + 1 - sh.tail_seen.load(Ordering::Relaxed) == self.cap() / 2
    }

    /// Moves the ring to a new mapping of `cap` records (a larger one, or a shared file of the
    /// current image), copying the records not yet written (producer only, or the writer of a ring
    /// nobody produces into). False when the writer holds the ring or memory ran out: the caller then
    /// waits for the writer instead.
    #[cold]
    pub fn move_to(&self, cap: u64) -> bool {
        if self
            .busy
            .compare_exchange(0, 1, Ordering::Acquire, Ordering::Relaxed)
            .is_err()
        {
            return false;
        }
        let old_cap = self.cap();
        let generation = self.generation.load(Ordering::Relaxed) + 1;
        let (new, image) = new_mapping(self.ring_no, generation, cap);
        if new.is_null() {
            self.busy.store(0, Ordering::Release);
            return false;
        }
        let old = self.shared.load(Ordering::Relaxed);
        let old_image = self.image.load(Ordering::Relaxed);
        let o = self.sh();
        // SAFETY: `new` is a fresh mapping of `cap` records that only we see.
        let n = unsafe { &*new };
        let (head, tail) = (
            o.head.load(Ordering::Relaxed),
            o.tail.load(Ordering::Relaxed),
        );
        for i in tail..head {
            // SAFETY: both slots are inside their mappings (masks); we hold `busy`, so the consumer
            // reads neither meanwhile.
            unsafe {
                let rec = self.slot(i).read();
                let dst = (new as *mut u8)
                    .add(recorder_protocol::ring::HEADER_LEN)
                    .cast::<Record>()
                    .add((i & (cap - 1)) as usize);
                dst.write(rec);
            }
        }
        n.head.store(head, Ordering::Relaxed);
        n.tail.store(tail, Ordering::Relaxed);
        n.tail_seen.store(tail, Ordering::Relaxed);
        n.inflight
            .store(o.inflight.load(Ordering::Relaxed), Ordering::Relaxed);
        self.shared.store(new, Ordering::Release);
        self.cap.store(cap, Ordering::Relaxed);
        self.generation.store(generation, Ordering::Relaxed);
        self.image.store(image, Ordering::Relaxed);
        self.busy.store(0, Ordering::Release);
        self.forget_file(old_image, generation - 1);
        unmap(old.cast(), map_bytes(old_cap));
        true
    }

    /// Removes the spool file of generation `generation` if this ring had one in image `image`.
    fn forget_file(&self, image: u64, generation: u32) {
        let Some(s) = spool() else { return };
        if image == 0 || image != s.image {
            return;
        }
        let mut name = [0u8; 80];
        if let Some(n) =
            layout::write_file_name(&mut name[..79], s.pid, image, self.ring_no, generation)
        {
            name[n] = 0;
            // SAFETY: NUL-terminated at `n`.
            s.dir
                .unlink(unsafe { CStr::from_bytes_with_nul_unchecked(&name[..=n]) });
        }
    }

    /// Removes this ring's spool file (the image finished its trace: nothing left to recover).
    pub fn remove_file(&self) {
        self.forget_file(
            self.image.load(Ordering::Relaxed),
            self.generation.load(Ordering::Relaxed),
        );
    }

    /// Hands every record not read yet to `f` (writer only). Waits while the producer moves the
    /// ring (a copy of at most a few MiB).
    pub fn read_new(&self, mut f: impl FnMut(&Record)) {
        while self
            .busy
            .compare_exchange(0, 1, Ordering::Acquire, Ordering::Relaxed)
            .is_err()
        {
            std::thread::yield_now();
        }
        let head = self.sh().head.load(Ordering::Acquire);
        let read = self.read.load(Ordering::Relaxed);
        for i in read..head {
            // SAFETY: slots in [read, head) were fully written before `head` was published (we
            // loaded it with Acquire) and the producer does not touch them until `tail` moves past.
            f(unsafe { &*self.slot(i) });
        }
        self.read.store(head, Ordering::Relaxed);
        self.busy.store(0, Ordering::Release);
    }

    /// Marks everything read except the last `held` records as written to the trace file
    /// (writer only, after the chunks holding them were written).
    pub fn written(&self, held: u64) {
        let read = self.read.load(Ordering::Relaxed);
        self.sh().tail.store(read - held, Ordering::Release);
    }

    /// Gives the pages of an empty, orphaned ring back before it is marked FREE (no producer writes
    /// it meanwhile; the next owner gets zero pages on first touch).
    pub fn release_pages(&self) {
        let bytes = map_bytes(self.cap()) - layout::HEADER_LEN;
        let records = self.slot(0).cast::<libc::c_void>();
        // A shared file keeps its pages: MADV_REMOVE punches them out of a tmpfs file (elsewhere it
        // fails and the pages stay in the file until it is removed).
        let advice = if self.image.load(Ordering::Relaxed) != 0 {
            libc::MADV_REMOVE
        } else {
            libc::MADV_DONTNEED
        };
        // SAFETY: `records` starts the record area of this ring's mapping, `bytes` long, and nobody
        // reads or writes it while the ring is ORPHANED and empty.
        unsafe { libc::madvise(records, bytes, advice) };
    }

    /// Forgets everything (after fork, in the child: the records belong to the parent) and leaves
    /// the parent's shared file: the ring gets private memory of the same size, at the same address,
    /// so the child can never write into the parent's records.
    pub fn reset_in_child(&self, state: u32) {
        let shared = self.shared.load(Ordering::Relaxed);
        if self.image.load(Ordering::Relaxed) != 0 {
            // SAFETY: replaces the pages of this ring's mapping (its exact address and length) with
            // fresh private ones; the child is single-threaded here, so nobody uses them meanwhile.
            unsafe {
                libc::mmap(
                    shared.cast(),
                    map_bytes(self.cap()),
                    libc::PROT_READ | libc::PROT_WRITE,
                    libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE | libc::MAP_FIXED,
                    -1,
                    0,
                )
            };
            self.image.store(0, Ordering::Relaxed);
        }
        self.reset(state);
    }

    /// Drops every record (recording stopped): `read` and `tail` jump to `head`.
    pub fn reset(&self, state: u32) {
        let sh = self.sh();
        let head = sh.head.load(Ordering::Relaxed);
        self.read.store(head, Ordering::Relaxed);
        sh.tail.store(head, Ordering::Relaxed);
        sh.tail_seen.store(head, Ordering::Relaxed);
        sh.inflight.store(u64::MAX, Ordering::Relaxed);
        self.busy.store(0, Ordering::Relaxed);
        self.stuck_value.store(u64::MAX, Ordering::Relaxed);
        self.state.store(state, Ordering::Relaxed);
    }
}
