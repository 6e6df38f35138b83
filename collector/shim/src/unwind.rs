//! Capturing the call stack of an allocating call, inside its hook.
//!
//! Programs built without frame pointers (Debian's libc and python3, most distribution binaries)
//! can only be unwound from their DWARF call-frame information (`.eh_frame`). The unwinder is
//! framehop's: pure Rust, with a per-thread cache of unwind rules by address, and a mode that never
//! allocates while unwinding (`MustNotAllocateDuringUnwind`), which is what code running inside a
//! malloc hook needs; it falls back to frame pointers only where the call-frame information says
//! nothing. Writing the narrow part ourselves would mean a second DWARF CFI evaluator.
//!
//! Constraints of a hook, and how they are met:
//! - No allocation through the hooked allocator and no lock while unwinding: the module list is an
//!   immutable unwinder published through an atomic pointer (a new one after dlopen/dlclose; old
//!   ones are never freed, so a hook still using one is safe; their unwind data is shared); the
//!   per-thread cache is allocated once per thread, before its first unwind.
//! - Never fault, whatever the stack holds: every read goes through `read_stack`, which only
//!   reads aligned words between the current stack pointer and the top of the thread's stack (its
//!   bounds from its mapping in /proc/self/maps, taken once per thread: `stack_bounds`). On
//!   another stack (a signal handler on an alternate stack, a coroutine) nothing is read and the
//!   stack is left empty.
//! - Stop cleanly: at an address in no module (JIT code), at a frame without unwind information
//!   that frame pointers do not explain, at a signal frame, or after the configured depth.

use std::sync::atomic::{AtomicPtr, AtomicU32, AtomicU64, Ordering};

use framehop::x86_64::{CacheX86_64, UnwindRegsX86_64, UnwinderX86_64};
use framehop::{
    ExplicitModuleSectionInfo, FrameAddress, Module, MustNotAllocateDuringUnwind, Unwinder,
};

use crate::modules::LoadedModule;

type Unw = UnwinderX86_64<crate::modules::Section, MustNotAllocateDuringUnwind>;

/// An unwinder and the executable ranges of its modules, sorted (to tell an address no module
/// covers: a library loaded since the last scan).
struct Installed {
    unwinder: Unw,
    ranges: Vec<(u64, u64)>,
}

impl Installed {
    fn covers(&self, addr: u64) -> bool {
        self.range_of(addr).is_some()
    }

    /// The executable range holding `addr`, if any.
    fn range_of(&self, addr: u64) -> Option<(u64, u64)> {
        let i = self.ranges.partition_point(|&(start, _)| start <= addr);
        (i > 0 && addr < self.ranges[i - 1].1).then(|| self.ranges[i - 1])
    }
}
pub type Cache = CacheX86_64<MustNotAllocateDuringUnwind>;

/// Frames kept per stack at most (`record --stack-depth`).
pub const MAX_DEPTH: usize = 256;
/// Stack a thread must have left for its unwinding state to be built (threads with less get no
/// stacks rather than a risk of overflowing theirs).
const MIN_STACK_ROOM: u64 = 256 << 10;

/// What unwinding cost over the process's threads: captures, frames unwound, frames taken over
/// from the thread's previous stack, unwind-rule cache hits and lookups. Each thread adds its own
/// every [`PUBLISH_EVERY`] captures and when it exits (the `stats` manifest line reports them).
pub static STATS: [AtomicU64; 5] = [const { AtomicU64::new(0) }; 5];
const PUBLISH_EVERY: u64 = 1 << 16;

impl ThreadUnwind {
    /// Adds what this thread did since its last call to [`STATS`].
    pub fn publish_stats(&mut self) {
        let c = self.cache.stats();
        let now = [
            self.captures,
            self.unwound,
            self.reused,
            c.hits(),
            c.total(),
        ];
        for ((total, n), last) in STATS.iter().zip(now).zip(&mut self.published) {
            total.fetch_add(n - *last, Ordering::Relaxed);
            *last = n;
        }
    }
}

/// Stack a capture must have left below it (framehop's and gimli's frames take a few KiB).
const CAPTURE_ROOM: u64 = 64 << 10;

/// The current unwinder (null: stacks off or not set up yet). Leaked: never freed.
static UNWINDER: AtomicPtr<Installed> = AtomicPtr::new(std::ptr::null_mut());
/// Frames to keep (0: stacks off).
pub static DEPTH: AtomicU32 = AtomicU32::new(0);
/// The shim's own code: its frames (the hook) are skipped.
static SHIM_START: AtomicU64 = AtomicU64::new(0);
static SHIM_END: AtomicU64 = AtomicU64::new(0);

/// Builds an unwinder for `modules` and makes it the current one. Shim code only (allocates).
pub fn install(modules: &[LoadedModule]) {
    let mut u = Unw::new();
    let here = install as *const () as u64;
    for m in modules {
        if (m.span.0..m.span.1).contains(&here) {
            SHIM_START.store(m.span.0, Ordering::Relaxed);
            SHIM_END.store(m.span.1, Ordering::Relaxed);
        }
        let (Some((hdr_at, hdr)), Some((eh_at, eh))) = (&m.eh_frame_hdr, &m.eh_frame) else {
            continue;
        };
        let info = ExplicitModuleSectionInfo {
            base_svma: 0,
            eh_frame_hdr_svma: Some(*hdr_at..*hdr_at + hdr.len() as u64),
            eh_frame_hdr: Some(hdr.clone()),
            eh_frame_svma: Some(*eh_at..*eh_at + eh.len() as u64),
            eh_frame: Some(eh.clone()),
            ..ExplicitModuleSectionInfo::default()
        };
        u.add_module(Module::new(
            m.path.clone(),
            m.span.0..m.span.1,
            m.bias,
            info,
        ));
    }
    let mut ranges: Vec<(u64, u64)> = modules
        .iter()
        .flat_map(|m| m.exec.iter().map(|&(s, e, _)| (s, e)))
        .collect();
    ranges.sort_unstable();
    let installed = Installed {
        unwinder: u,
        ranges,
    };
    UNWINDER.store(Box::into_raw(Box::new(installed)), Ordering::Release);
}

/// What a thread keeps for unwinding: its cache and its stack bounds, and the last stack it
/// interned (consecutive calls share most of their outer frames, whose nodes are reused).
pub struct ThreadUnwind {
    pub cache: Cache,
    pub stack_lo: u64,
    pub stack_hi: u64,
    /// Two stacks: the one being captured (`cur`) and the last one interned (the other, with
    /// `last_len` frames); they swap roles after each intern, so nothing is copied.
    stacks: [Stack; 2],
    cur: usize,
    pub last_len: usize,
    /// Frames unwound, and frames taken over from the previous stack (statistics).
    pub unwound: u64,
    pub reused: u64,
    /// The trie generation `last_nodes` belongs to (a fork child starts a new trie).
    pub trie_generation: u64,
    /// Whether the last interned stack, and the one being captured, reach the end of unwinding
    /// (see `capture`).
    last_complete: bool,
    cur_complete: bool,
    /// Captures made, and what was last added to [`STATS`] (captures, unwound, reused, cache
    /// hits, cache lookups).
    pub captures: u64,
    published: [u64; 5],
    /// The last capture met code no installed module covers (a library loaded since the last
    /// scan, or JIT code).
    pub outside: bool,
}

/// One captured stack, innermost first: return addresses, each frame's CFA, and (once
/// interned) each frame's trie node.
struct Stack {
    frames: [u64; MAX_DEPTH],
    cfas: [u64; MAX_DEPTH],
    nodes: [u32; MAX_DEPTH],
}

impl Stack {
    const EMPTY: Stack = Stack {
        frames: [0; MAX_DEPTH],
        cfas: [0; MAX_DEPTH],
        nodes: [0; MAX_DEPTH],
    };
}

impl ThreadUnwind {
    /// The stack being captured and the last one interned.
    fn pair(&mut self) -> (&mut Stack, &Stack) {
        let [a, b] = &mut self.stacks;
        if self.cur == 0 {
            (a, b)
        } else {
            (b, a)
        }
    }

    /// A new state for the calling thread (its stack bounds read once here), or None when the
    /// thread's stack cannot be found or has too little room. Shim code: it allocates (through
    /// the real allocator, never the hooks).
    ///
    /// The room is checked before the state is built, in a function with a small frame: the
    /// state is over 10 KiB and the compiler may build it on the stack first, which overflowed
    /// threads started with the smallest stacks (PTHREAD_STACK_MIN, 16 KiB).
    #[inline(never)]
    pub fn for_this_thread() -> Option<Box<ThreadUnwind>> {
        let (lo, hi) = stack_bounds()?;
        let here = &lo as *const u64 as u64;
        if here.saturating_sub(lo) < MIN_STACK_ROOM {
            return None;
        }
        Some(Self::build(lo, hi))
    }

    #[inline(never)]
    fn build(lo: u64, hi: u64) -> Box<ThreadUnwind> {
        Box::new(ThreadUnwind {
            cache: Cache::new_in(),
            stack_lo: lo,
            stack_hi: hi,
            stacks: [Stack::EMPTY, Stack::EMPTY],
            cur: 0,
            last_len: 0,
            unwound: 0,
            reused: 0,
            trie_generation: 0,
            last_complete: false,
            cur_complete: false,
            captures: 0,
            published: [0; 5],
            outside: false,
        })
    }
}

/// The calling thread's stack: [lowest, highest) address, from the mapping that holds the
/// current stack pointer in `/proc/self/maps` (read with plain system calls into a buffer on the
/// stack: nothing here allocates or takes a lock a program may hold).
///
/// Not `pthread_getattr_np`: it holds the thread's own lock while it `fopen`s /proc/self/maps
/// (main thread) and `realloc`s a CPU set (every thread), so a program that calls it (cgo's
/// runtime start, Rust's std for its stack guard) makes an allocation that is its thread's first
/// stack capture inside that lock, and asking again from the hook deadlocks.
///
/// The mapping is accepted as this thread's stack when it is the initial thread's (`[stack]`,
/// which may still grow down to the stack limit) or holds the thread's control block (glibc puts
/// it at the top of every stack it allocates or is given); any other stack (a coroutine's, an
/// alternate signal stack) gives None and the thread is left without stacks.
fn stack_bounds() -> Option<(u64, u64)> {
    let probe = 0u64;
    let sp = std::hint::black_box(&probe) as *const u64 as u64;
    let mut tp: u64 = 0;
    // SAFETY: ARCH_GET_FS writes the thread pointer to a valid out-pointer.
    unsafe { libc::syscall(libc::SYS_arch_prctl, ARCH_GET_FS, &mut tp as *mut u64) };
    let found = maps_entry_holding(sp, tp)?;
    if found.initial_stack {
        let mut lim: libc::rlimit = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: a valid out-pointer.
        let limit = if unsafe { libc::getrlimit(libc::RLIMIT_STACK, &mut lim) } == 0 {
            lim.rlim_cur.min(1 << 30)
        } else {
            8 << 20
        };
        Some((found.end.saturating_sub(limit).min(found.start), found.end))
    } else if found.holds_tp {
        Some((found.start, found.end))
    } else {
        None
    }
}

/// arch_prctl's code for reading the thread pointer (asm/prctl.h; not in the libc crate).
const ARCH_GET_FS: libc::c_int = 0x1003;

/// One line of /proc/self/maps: the readable mapping holding an address.
struct MapsEntry {
    start: u64,
    end: u64,
    initial_stack: bool,
    holds_tp: bool,
}

/// The readable mapping holding `addr`, read from /proc/self/maps in 1 KiB pieces.
fn maps_entry_holding(addr: u64, tp: u64) -> Option<MapsEntry> {
    // SAFETY: a NUL-terminated path; the descriptor is closed below.
    let fd = unsafe {
        libc::open(
            c"/proc/self/maps".as_ptr(),
            libc::O_RDONLY | libc::O_CLOEXEC,
        )
    };
    if fd < 0 {
        return None;
    }
    let mut parser = MapsParser::new(addr);
    let mut buf = [0u8; 1024];
    loop {
        // SAFETY: reads into a buffer of buf.len() bytes.
        let n = unsafe { libc::read(fd, buf.as_mut_ptr().cast(), buf.len()) };
        if n < 0 && crate::errno() == libc::EINTR {
            continue;
        }
        if n <= 0 {
            break;
        }
        for &b in &buf[..n as usize] {
            parser.byte(b);
        }
        if parser.found.is_some() {
            break;
        }
    }
    // SAFETY: our own descriptor.
    unsafe { libc::close(fd) };
    let (start, end, initial_stack) = parser.found?;
    Some(MapsEntry {
        start,
        end,
        initial_stack,
        holds_tp: (start..end).contains(&tp),
    })
}

/// A streaming reader of maps lines ("start-end perms offset dev inode name"): keeps the range,
/// whether it is readable and the last bytes of the name.
struct MapsParser {
    addr: u64,
    start: u64,
    end: u64,
    field: u8,
    readable: bool,
    tail: [u8; 8],
    found: Option<(u64, u64, bool)>,
}

impl MapsParser {
    fn new(addr: u64) -> Self {
        MapsParser {
            addr,
            start: 0,
            end: 0,
            field: 0,
            readable: false,
            tail: [0; 8],
            found: None,
        }
    }

    fn byte(&mut self, b: u8) {
        if b == b'\n' {
            if self.readable && (self.start..self.end).contains(&self.addr) && self.found.is_none()
            {
                self.found = Some((self.start, self.end, self.tail.ends_with(b"[stack]")));
            }
            *self = MapsParser {
                found: self.found,
                ..MapsParser::new(self.addr)
            };
            return;
        }
        let hex = (b as char).to_digit(16).map(u64::from);
        match (self.field, b, hex) {
            (0, b'-', _) => self.field = 1,
            (0, _, Some(d)) => self.start = self.start.wrapping_shl(4) | d,
            (1, b' ', _) => self.field = 2,
            (1, _, Some(d)) => self.end = self.end.wrapping_shl(4) | d,
            (2, b'r', _) => {
                self.readable = true;
                self.field = 3;
            }
            (2, _, _) => self.field = 3,
            (3, _, _) => {
                self.tail.copy_within(1.., 0);
                self.tail[7] = b;
            }
            _ => {}
        }
    }
}

/// Unwinds the calling thread's stack into `t.frames` (innermost first): the return addresses of
/// the frames outside the shim, at most `depth`. Returns how many. Allocation-free, never faults.
#[inline(never)]
pub fn capture(t: &mut ThreadUnwind, depth: usize) -> usize {
    // SAFETY: a non-null UNWINDER is a leaked, never freed unwinder.
    let Some(installed) = (unsafe { UNWINDER.load(Ordering::Acquire).as_ref() }) else {
        return 0;
    };
    let (pc, sp, bp): (u64, u64, u64);
    // SAFETY: reads the instruction pointer (an address in this function), the stack pointer and
    // the frame pointer into registers; touches no memory.
    unsafe {
        std::arch::asm!(
            "lea {pc}, [rip]",
            "mov {sp}, rsp",
            "mov {bp}, rbp",
            pc = out(reg) pc,
            sp = out(reg) sp,
            bp = out(reg) bp,
            options(nomem, nostack, preserves_flags)
        );
    }
    let (lo, hi) = (t.stack_lo, t.stack_hi);
    if !(lo..hi).contains(&sp) {
        return 0; // another stack (alternate signal stack, coroutine): nothing is read
    }
    if sp - lo < CAPTURE_ROOM {
        return 0; // a call near the end of its stack: unwinding must not be what overflows it
    }
    let mut read_stack = |addr: u64| -> Result<u64, ()> {
        if addr >= sp && addr.checked_add(8).is_some_and(|end| end <= hi) && addr.is_multiple_of(8)
        {
            // SAFETY: an aligned word between the current stack pointer and the top of this
            // thread's stack, which is mapped and readable.
            Ok(unsafe { (addr as *const u64).read() })
        } else {
            Err(())
        }
    };
    let shim = SHIM_START.load(Ordering::Relaxed)..SHIM_END.load(Ordering::Relaxed);
    let depth = depth.min(MAX_DEPTH);
    let mut regs = UnwindRegsX86_64::new(pc, sp, bp);
    let mut at = FrameAddress::InstructionPointer(pc);
    let (mut n, mut j) = (0usize, 0usize);
    let m = t.last_len;
    let mut stopped_at = 0;
    let (mut unwound, mut reused) = (0, 0);
    let mut outside = false;
    // The range that held the last frame: consecutive frames are mostly in one module (a
    // binary search per frame was a third of this function's time).
    let mut known = (0u64, 0u64);
    let cache = &mut t.cache;
    let [a, b] = &mut t.stacks;
    let (cur, last) = if t.cur == 0 { (a, &*b) } else { (b, &*a) };
    // Whether the stack ends where unwinding ends (the root, or a stop that would recur), not
    // cut at `depth`: only such a stack's outer frames may complete a later one.
    let mut complete = false;
    let last_complete = t.last_complete;
    while n < depth {
        let ra = match installed
            .unwinder
            .unwind_frame(at, &mut regs, cache, &mut read_stack)
        {
            Ok(Some(ra)) => ra,
            Ok(None) => {
                complete = true;
                break;
            }
            Err(_) => {
                stopped_at = at.address();
                complete = installed.covers(stopped_at);
                break;
            }
        };
        let Some(next) = FrameAddress::from_return_address(ra) else {
            complete = true;
            break;
        };
        at = next;
        if n == 0 && shim.contains(&ra) {
            continue; // the hook's own frames
        }
        // The caller's stack pointer when it made this call: the frame's CFA, where `ra` lies
        // at CFA - 8.
        let cfa = regs.sp();
        // The previous stack of this thread, from the frame at this CFA outward, may still be
        // there: then its return addresses are reused instead of unwound again (when that stack
        // was whole, or when this one is cut at `depth` before its end anyway).
        while j < m && last.cfas[j] < cfa {
            j += 1;
        }
        if j < m
            && last.cfas[j] == cfa
            && last.frames[j] == ra
            && (last_complete || n + (m - j) >= depth)
            && outer_intact(last, j, m, sp, hi)
        {
            let k = (m - j).min(depth - n);
            cur.frames[n..n + k].copy_from_slice(&last.frames[j..j + k]);
            cur.cfas[n..n + k].copy_from_slice(&last.cfas[j..j + k]);
            reused = k as u64;
            n += k;
            complete = last_complete && k == m - j;
            break;
        }
        cur.frames[n] = ra;
        cur.cfas[n] = cfa;
        if !(known.0..known.1).contains(&ra) {
            match installed.range_of(ra) {
                Some(r) => known = r,
                None => outside = true,
            }
        }
        unwound += 1;
        n += 1;
    }
    t.cur_complete = complete;
    t.unwound += unwound;
    t.reused += reused;
    t.captures += 1;
    if t.captures.is_multiple_of(PUBLISH_EVERY) {
        t.publish_stats();
    }
    // Stopped in code no module covers: a library loaded since the last scan, or JIT code.
    if stopped_at != 0 && !installed.covers(stopped_at) {
        crate::modules::STALE.store(true, Ordering::Relaxed);
        outside = true;
    }
    t.outside = outside;
    n
}

/// True when every return address of the previous stack from frame `j` to `m` is still in its
/// slot (at its CFA - 8): the calls above that frame are the same ones, so are their addresses.
/// A function that returned and was called again from the same call site at the same depth
/// leaves the same address: the stack it records is the same either way.
fn outer_intact(last: &Stack, j: usize, m: usize, sp: u64, hi: u64) -> bool {
    (j..m).all(|x| {
        let slot = last.cfas[x].wrapping_sub(8);
        slot >= sp
            && slot.checked_add(8).is_some_and(|end| end <= hi)
            && slot.is_multiple_of(8)
            // SAFETY: an aligned word between the current stack pointer and the top of this
            // thread's stack, which is mapped and readable.
            && unsafe { (slot as *const u64).read() } == last.frames[x]
    })
}

/// The trie node of the stack in `t.frames[..n]` (0 when it cannot be interned). The outer frames
/// it shares with the thread's previous stack reuse that stack's nodes, so a typical call interns
/// only its few inner frames.
pub fn intern(t: &mut ThreadUnwind, trie: &crate::trie::Trie, n: usize) -> u32 {
    if t.trie_generation != trie.generation {
        t.trie_generation = trie.generation;
        t.last_len = 0;
    }
    let m = t.last_len;
    let (cur, last) = t.pair();
    let mut shared = 0;
    while shared < n && shared < m && cur.frames[n - 1 - shared] == last.frames[m - 1 - shared] {
        cur.nodes[n - 1 - shared] = last.nodes[m - 1 - shared];
        shared += 1;
    }
    let mut parent = if shared > 0 { cur.nodes[n - shared] } else { 0 };
    for i in (0..n - shared).rev() {
        match trie.intern(parent, cur.frames[i]) {
            Some(id) => {
                parent = id;
                cur.nodes[i] = id;
            }
            None => {
                t.last_len = 0;
                return 0;
            }
        }
    }
    let leaf = if n == 0 { 0 } else { cur.nodes[0] };
    t.last_len = n;
    t.last_complete = t.cur_complete;
    t.cur ^= 1;
    leaf
}
