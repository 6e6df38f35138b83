//! The stack trie of this process image: each distinct (parent node, return address) once, so an
//! event carries one node id (`recorder_protocol::stacks` has the layout and the reader).
//!
//! Lock-free, in a mapping of its own (a spool file when recording under `record`, so that a dead
//! process's nodes can be recovered): an open-addressing hash table of node ids over a node array.
//! To add a node, a hook takes an id from `next` (fetch_add), fills the node (address last, with
//! Release: non-zero means complete), then claims an empty slot with a compare-and-swap; if another
//! thread claimed that slot for the same node first, that node is used (the id taken is a complete
//! duplicate nobody refers to). Probing is bounded; a full table gives "no stack".

use std::ffi::CStr;
use std::sync::atomic::{AtomicPtr, AtomicU32, AtomicU64, Ordering};

use recorder_protocol::stacks as layout;

/// Nodes per trie (ids 1 ..= NODES): 4 M nodes, 64 MiB of address space, touched as used.
pub const NODES: u64 = 1 << 22;
/// Hash slots: twice the nodes.
const SLOTS: u64 = NODES * 2;
/// Slots probed before giving up.
const MAX_PROBES: u64 = 64;

/// A trie mapping.
pub struct Trie {
    base: *mut u8,
    /// Distinguishes tries (a fork child makes a new one): per-thread caches of node ids check it.
    pub generation: u64,
    /// Its spool file, if it has one: the directory and the NUL-terminated name.
    file: Option<(&'static crate::sink::GuardedDir, String)>,
}

// SAFETY: the mapping is shared memory accessed only through atomics.
unsafe impl Sync for Trie {}
unsafe impl Send for Trie {}

static TRIE: AtomicPtr<Trie> = AtomicPtr::new(std::ptr::null_mut());
static GENERATION: AtomicU64 = AtomicU64::new(0);
/// Stacks that could not be interned (the table was full).
pub static DROPPED: AtomicU64 = AtomicU64::new(0);

/// The current trie (null: stacks off).
pub fn current() -> Option<&'static Trie> {
    // SAFETY: a non-null TRIE is a leaked Trie whose mapping is never unmapped.
    unsafe { TRIE.load(Ordering::Acquire).as_ref() }
}

/// Makes a new, empty trie the current one: in a file of `dir` named for (pid, image) when given,
/// else in private memory. Shim code only. Returns false when no memory could be had.
pub fn create(dir: Option<&'static crate::sink::GuardedDir>, pid: u32, image: u64) -> bool {
    let len = layout::file_len(NODES, SLOTS);
    let mut base = std::ptr::null_mut();
    let mut file = None;
    if let Some(d) = dir {
        let name = format!("{}\0", layout::file_name(pid, image));
        if let Ok(c) = CStr::from_bytes_with_nul(name.as_bytes()) {
            base = d.create_mapped(c, len).unwrap_or(std::ptr::null_mut());
        }
        if !base.is_null() {
            file = Some((d, name));
        }
    }
    if base.is_null() {
        base = crate::ring::map(len);
    }
    if base.is_null() {
        return false;
    }
    let header = layout::header_bytes(pid, image, NODES, SLOTS);
    // SAFETY: a fresh mapping of `len` ≥ HEADER_LEN bytes that nobody else uses yet.
    unsafe { std::ptr::copy_nonoverlapping(header.as_ptr(), base, header.len()) };
    let t = Trie {
        base,
        generation: GENERATION.fetch_add(1, Ordering::Relaxed) + 1,
        file,
    };
    t.next().store(1, Ordering::Relaxed);
    TRIE.store(Box::into_raw(Box::new(t)), Ordering::Release);
    true
}

/// Forgets the trie (before a new trace makes its own).
pub fn clear() {
    TRIE.store(std::ptr::null_mut(), Ordering::Release);
}

/// In a fork child: forgets the parent's trie and unmaps it, so the child never writes into it
/// (the child is single-threaded here: nobody uses it meanwhile).
pub fn forget_in_child() {
    let t = TRIE.swap(std::ptr::null_mut(), Ordering::AcqRel);
    // SAFETY: a non-null TRIE is a leaked Trie; its mapping is `file_len` bytes, used by nobody
    // in this single-threaded child now that TRIE is null.
    if let Some(t) = unsafe { t.as_ref() } {
        unsafe { libc::munmap(t.base.cast(), layout::file_len(NODES, SLOTS)) };
    }
}

/// Removes the trie's spool file (the trace is finished: nothing left to recover).
pub fn remove_file() {
    if let Some((dir, name)) = current().and_then(|t| t.file.as_ref()) {
        if let Ok(c) = CStr::from_bytes_with_nul(name.as_bytes()) {
            dir.unlink(c);
        }
    }
}

impl Trie {
    fn next(&self) -> &AtomicU64 {
        // SAFETY: NEXT_AT is an aligned u64 inside the header page of the mapping.
        unsafe { &*(self.base.add(layout::NEXT_AT) as *const AtomicU64) }
    }

    fn parent(&self, id: u32) -> &AtomicU32 {
        // SAFETY: `id` ≤ NODES, so the node lies inside the node array.
        unsafe {
            &*(self
                .base
                .add(layout::HEADER_LEN + id as usize * layout::NODE_LEN)
                as *const AtomicU32)
        }
    }

    fn addr(&self, id: u32) -> &AtomicU64 {
        // SAFETY: as above; the address is the node's second word.
        unsafe {
            &*(self
                .base
                .add(layout::HEADER_LEN + id as usize * layout::NODE_LEN + 8)
                as *const AtomicU64)
        }
    }

    fn slot(&self, i: u64) -> &AtomicU32 {
        // SAFETY: `i` < SLOTS, inside the slot array.
        unsafe { &*(self.base.add(layout::slots_at(NODES) + i as usize * 4) as *const AtomicU32) }
    }

    /// Ids handed out so far: nodes `1 .. next` exist or are being filled.
    pub fn next_id(&self) -> u32 {
        self.next().load(Ordering::Acquire).min(NODES + 1) as u32
    }

    /// Node `id` once complete: (parent, return address).
    pub fn node(&self, id: u32) -> Option<(u32, u64)> {
        if id == 0 || id as u64 > NODES {
            return None;
        }
        let addr = self.addr(id).load(Ordering::Acquire);
        (addr != 0).then(|| (self.parent(id).load(Ordering::Relaxed), addr))
    }

    /// The node for (parent, addr), added if new. None when the table is full. Allocation-free,
    /// lock-free: hooks call it.
    pub fn intern(&self, parent: u32, addr: u64) -> Option<u32> {
        let mut mine = 0u32;
        let mut i = layout::hash(parent, addr, SLOTS);
        for _ in 0..MAX_PROBES {
            let s = self.slot(i);
            let mut id = s.load(Ordering::Acquire);
            if id == 0 {
                if mine == 0 {
                    let n = self.next().fetch_add(1, Ordering::Relaxed);
                    if n > NODES {
                        DROPPED.fetch_add(1, Ordering::Relaxed);
                        return None;
                    }
                    mine = n as u32;
                    self.parent(mine).store(parent, Ordering::Relaxed);
                    self.addr(mine).store(addr, Ordering::Release);
                }
                match s.compare_exchange(0, mine, Ordering::AcqRel, Ordering::Acquire) {
                    Ok(_) => return Some(mine),
                    Err(other) => id = other,
                }
            }
            if self.node(id) == Some((parent, addr)) {
                return Some(id);
            }
            i = (i + 1) & (SLOTS - 1);
        }
        DROPPED.fetch_add(1, Ordering::Relaxed);
        None
    }
}
