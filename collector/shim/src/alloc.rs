//! The shim's own Rust allocator: straight to the real functions (or the bootstrap arena while they
//! are being resolved), never through the hooks, so shim code is never recorded and never re-enters
//! a hook.

use std::alloc::{GlobalAlloc, Layout};
use std::ffi::c_void;

use crate::real;

/// The shim's own allocator: straight to the real functions (or the arena while resolving), never
/// through the hooks, so shim code is never recorded and never re-enters a hook.
struct RealAlloc;

// SAFETY: every block comes from the real allocator (or the never-reused arena) with at least the
// requested size and alignment, and goes back to the allocator it came from.
unsafe impl GlobalAlloc for RealAlloc {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        if !real::ready() {
            return real::arena_alloc(l.size(), l.align()).cast();
        }
        if l.align() <= 16 {
            match real::malloc() {
                // SAFETY: malloc has no preconditions; it returns 16-byte aligned memory on x86_64.
                Some(f) => unsafe { f(l.size()) }.cast(),
                None => std::ptr::null_mut(),
            }
        } else {
            let mut p: *mut c_void = std::ptr::null_mut();
            match real::posix_memalign() {
                // SAFETY: `p` is a valid out-pointer; Layout alignments are powers of two > 16.
                Some(f) if unsafe { f(&mut p, l.align(), l.size()) } == 0 => p.cast(),
                _ => std::ptr::null_mut(),
            }
        }
    }

    unsafe fn dealloc(&self, p: *mut u8, _l: Layout) {
        if real::in_arena(p.cast()) {
            return;
        }
        if let Some(f) = real::free() {
            // SAFETY: `p` came from `alloc` above, i.e. from the real allocator (GlobalAlloc contract).
            unsafe { f(p.cast()) };
        }
    }

    unsafe fn realloc(&self, p: *mut u8, l: Layout, new_size: usize) -> *mut u8 {
        if l.align() <= 16 && !real::in_arena(p.cast()) && real::ready() {
            if let Some(f) = real::realloc() {
                // SAFETY: `p` came from the real malloc (GlobalAlloc contract, alignment ≤ 16).
                return unsafe { f(p.cast(), new_size) }.cast();
            }
        }
        // SAFETY: `l.align()` is a valid alignment and `new_size` fits it (GlobalAlloc contract).
        let n = unsafe { self.alloc(Layout::from_size_align_unchecked(new_size, l.align())) };
        if !n.is_null() {
            // SAFETY: `p` has `l.size()` readable bytes, `n` has `new_size` writable ones, and they
            // are distinct blocks; `p` is then released to where it came from.
            unsafe {
                std::ptr::copy_nonoverlapping(p, n, l.size().min(new_size));
                self.dealloc(p, l);
            }
        }
        n
    }
}

#[global_allocator]
static ALLOC: RealAlloc = RealAlloc;
