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
//!   bounds from `pthread_getattr_np`, taken once per thread). On another stack (a signal handler
//!   on an alternate stack, a coroutine) nothing is read and the stack is left empty.
//! - Stop cleanly: at an address in no module (JIT code), at a frame without unwind information
//!   that frame pointers do not explain, at a signal frame, or after the configured depth.

use std::sync::atomic::{AtomicPtr, AtomicU32, AtomicU64, Ordering};

use framehop::x86_64::{CacheX86_64, UnwindRegsX86_64, UnwinderX86_64};
use framehop::{
    ExplicitModuleSectionInfo, FrameAddress, Module, MustNotAllocateDuringUnwind, Unwinder,
};

use crate::modules::LoadedModule;

type Unw = UnwinderX86_64<Vec<u8>, MustNotAllocateDuringUnwind>;

/// An unwinder and the executable ranges of its modules, sorted (to tell an address no module
/// covers: a library loaded since the last scan).
struct Installed {
    unwinder: Unw,
    ranges: Vec<(u64, u64)>,
}

impl Installed {
    fn covers(&self, addr: u64) -> bool {
        let i = self.ranges.partition_point(|&(start, _)| start <= addr);
        i > 0 && addr < self.ranges[i - 1].1
    }
}
pub type Cache = CacheX86_64<MustNotAllocateDuringUnwind>;

/// Frames kept per stack at most (`record --stack-depth`).
pub const MAX_DEPTH: usize = 256;

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
    /// The stack being captured (innermost first).
    pub frames: [u64; MAX_DEPTH],
    /// The last stack interned, innermost first, and the trie node of each of its frames.
    pub last: [u64; MAX_DEPTH],
    pub last_nodes: [u32; MAX_DEPTH],
    pub last_len: usize,
    /// The trie generation `last_nodes` belongs to (a fork child starts a new trie).
    pub trie_generation: u64,
}

impl ThreadUnwind {
    /// A new state for the calling thread (its stack bounds read once here). Shim code: it
    /// allocates (through the real allocator, never the hooks).
    pub fn for_this_thread() -> Option<Box<ThreadUnwind>> {
        let (lo, hi) = stack_bounds()?;
        Some(Box::new(ThreadUnwind {
            cache: Cache::new_in(),
            stack_lo: lo,
            stack_hi: hi,
            frames: [0; MAX_DEPTH],
            last: [0; MAX_DEPTH],
            last_nodes: [0; MAX_DEPTH],
            last_len: 0,
            trie_generation: 0,
        }))
    }
}

/// The calling thread's stack: [lowest, highest) address.
fn stack_bounds() -> Option<(u64, u64)> {
    // SAFETY: attr is initialised by pthread_getattr_np before it is read and destroyed after;
    // the out-pointers are valid.
    unsafe {
        let mut attr: libc::pthread_attr_t = std::mem::zeroed();
        if libc::pthread_getattr_np(libc::pthread_self(), &mut attr) != 0 {
            return None;
        }
        let mut addr: *mut libc::c_void = std::ptr::null_mut();
        let mut size: libc::size_t = 0;
        let rc = libc::pthread_attr_getstack(&attr, &mut addr, &mut size);
        libc::pthread_attr_destroy(&mut attr);
        (rc == 0 && !addr.is_null()).then(|| (addr as u64, addr as u64 + size as u64))
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
    let out = &mut t.frames[..depth.min(MAX_DEPTH)];
    let mut frames = installed.unwinder.iter_frames(
        pc,
        UnwindRegsX86_64::new(pc, sp, bp),
        &mut t.cache,
        &mut read_stack,
    );
    let mut n = 0;
    let mut in_shim = true;
    let mut last = 0;
    while let Ok(Some(frame)) = frames.next() {
        let addr = match frame {
            FrameAddress::InstructionPointer(a) => a,
            FrameAddress::ReturnAddress(a) => a.get(),
        };
        if in_shim && shim.contains(&addr) {
            continue;
        }
        in_shim = false;
        if n == out.len() {
            return n;
        }
        out[n] = addr;
        n += 1;
        last = addr;
    }
    // Stopped in code no module covers: a library loaded since the last scan, or JIT code.
    if last != 0 && !installed.covers(last) {
        crate::modules::STALE.store(true, Ordering::Relaxed);
    }
    n
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
    let mut shared = 0;
    while shared < n && shared < m && t.frames[n - 1 - shared] == t.last[m - 1 - shared] {
        shared += 1;
    }
    let mut nodes = [0u32; MAX_DEPTH];
    for j in 0..shared {
        nodes[n - 1 - j] = t.last_nodes[m - 1 - j];
    }
    let mut parent = if shared > 0 { nodes[n - shared] } else { 0 };
    for i in (0..n - shared).rev() {
        match trie.intern(parent, t.frames[i]) {
            Some(id) => {
                parent = id;
                nodes[i] = id;
            }
            None => {
                t.last_len = 0;
                return 0;
            }
        }
    }
    t.last[..n].copy_from_slice(&t.frames[..n]);
    t.last_nodes[..n].copy_from_slice(&nodes[..n]);
    t.last_len = n;
    if n == 0 {
        0
    } else {
        nodes[0]
    }
}
