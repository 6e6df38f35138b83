//! Real memory behind the model: models `mheap.sysAlloc` / `sysMap` / `sysUsed` / `sysUnused`
//! (malloc.go, mem_linux.go) and the `heapArena` layout (64 MiB arenas on linux/amd64).
//!
//! The model works in *model addresses*: Go's address space layout, starting at the arena hint
//! `0x00c000000000`. Each 64 MiB arena is an anonymous private `mmap` with `MAP_NORESERVE`,
//! requested at its model address; when the kernel places it elsewhere (the hint is taken, ASLR),
//! the arena table translates. Every operation splits at arena boundaries, so a span that crosses
//! two arenas works whether or not their real mappings are adjacent.
//!
//! This is the only module with `unsafe`. Safety rests on one invariant, checked on every call
//! (not only in debug builds): an operation touches only bytes inside arenas this struct mapped
//! and has not yet unmapped, and the mappings live until `Drop`.
//!
//! Deliberate differences: Go reserves address space and commits with `sysMap`; on Linux both are
//! the same `mmap` with overcommit, so we map once per arena. `release` is `madvise(MADV_DONTNEED)`,
//! Go's Linux default for the scavenger.
#![allow(unsafe_code)]

use crate::error::ReplayError;

/// `heapArenaBytes` on linux/amd64.
pub const ARENA_BYTES: u64 = 64 << 20;
/// Go's first arena hint on linux/amd64 (`0x00c0 << 32`).
pub const ARENA_HINT_ADDR: u64 = 0x00c0 << 32;
/// The model's heap address space: the most heap (HeapSys) it grows to, from the arena hint.
/// 256 GiB: more than a replay on real memory can hold on the machines it runs on, and it bounds
/// what a size read from a trace can make the model allocate for itself (its page map costs 4
/// bytes per 8 KiB page: 128 MiB at the limit). A request that does not fit is a failed call
/// (malloc.rs; the baselines refuse it too, native.rs), as C's malloc answers NULL when it
/// cannot map the memory.
pub const MAX_HEAP_BYTES: u64 = 256 << 30;

/// This machine's RAM plus swap, bytes (`sysinfo`; `u64::MAX` when it cannot be read). A
/// replay on real memory that would map more cannot hold its heap: `Arena::map` refuses, and
/// glibc under Linux's default overcommit refuses a single mapping larger than this.
pub fn machine_memory_bytes() -> u64 {
    static BYTES: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    *BYTES.get_or_init(|| {
        // SAFETY: sysinfo only writes the struct it is given, which lives on this stack frame.
        let mut info: libc::sysinfo = unsafe { std::mem::zeroed() };
        // SAFETY: `info` is a valid, writable `struct sysinfo`.
        if unsafe { libc::sysinfo(&mut info) } != 0 {
            return u64::MAX;
        }
        (info.totalram as u64)
            .saturating_add(info.totalswap as u64)
            .saturating_mul(info.mem_unit.max(1) as u64)
    })
}

/// The arenas mapped so far.
pub struct Arena {
    /// Model address of arena 0.
    base_addr: u64,
    /// Real base of each mapped arena, indexed by arena number; null when not mapped.
    real: Vec<*mut u8>,
    /// Whether object memory is really written (false: the model runs on addresses only, for
    /// tests that want to go fast or huge heaps in CI).
    pub(crate) touch_memory: bool,
    /// Bytes of arenas mapped (`ARENA_BYTES` per non-null entry of `real`).
    mapped_bytes: u64,
}

// SAFETY: the raw pointers are owned mappings, not shared with anything else; moving the
// struct to another thread moves their ownership with it.
unsafe impl Send for Arena {}

impl Arena {
    pub(crate) fn new(base_addr: u64, touch_memory: bool) -> Arena {
        Arena {
            base_addr,
            real: Vec::new(),
            touch_memory,
            mapped_bytes: 0,
        }
    }

    /// Makes sure `[addr, addr+bytes)` is backed by mapped arenas. Refuses (`MachineMemory`)
    /// to map more than the machine has: the replay writes its objects, so it could not hold
    /// them.
    pub(crate) fn map(&mut self, addr: u64, bytes: u64) -> Result<(), ReplayError> {
        if !self.touch_memory || bytes == 0 {
            return Ok(());
        }
        let first = self.arena_index(addr);
        let last = self.arena_index(addr + bytes - 1);
        if self.real.len() <= last {
            self.real.resize(last + 1, std::ptr::null_mut());
        }
        let new_arenas = self.real[first..=last]
            .iter()
            .filter(|p| p.is_null())
            .count();
        let machine_bytes = machine_memory_bytes();
        if self.mapped_bytes + new_arenas as u64 * ARENA_BYTES > machine_bytes {
            return Err(ReplayError::MachineMemory { machine_bytes });
        }
        for i in first..=last {
            if !self.real[i].is_null() {
                continue;
            }
            let hint = self.base_addr + i as u64 * ARENA_BYTES;
            // SAFETY: an anonymous private mapping with a hint (no MAP_FIXED) cannot clobber
            // any existing mapping; the kernel picks another place when the hint is taken.
            let p = unsafe {
                libc::mmap(
                    hint as *mut libc::c_void,
                    ARENA_BYTES as usize,
                    libc::PROT_READ | libc::PROT_WRITE,
                    libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
                    -1,
                    0,
                )
            };
            if p == libc::MAP_FAILED {
                return Err(ReplayError::OutOfMemory {
                    bytes: ARENA_BYTES,
                    source: std::io::Error::last_os_error(),
                });
            }
            self.real[i] = p as *mut u8;
            self.mapped_bytes += ARENA_BYTES;
        }
        Ok(())
    }

    #[inline]
    fn arena_index(&self, addr: u64) -> usize {
        ((addr - self.base_addr) / ARENA_BYTES) as usize
    }

    /// The real address of `[addr, addr+len)` when the whole range lies inside one mapped arena
    /// (every small object, and large ones that do not straddle an arena boundary): the fast
    /// path of the operations below. `None` sends the caller to [`Arena::pieces`], which splits
    /// the range or panics on an unmapped byte, exactly as before.
    #[inline]
    fn contiguous(&self, addr: u64, len: u64) -> Option<*mut u8> {
        let rel = addr.checked_sub(self.base_addr)?;
        let off = rel % ARENA_BYTES;
        if len > ARENA_BYTES - off {
            return None;
        }
        let base = *self.real.get((rel / ARENA_BYTES) as usize)?;
        if base.is_null() {
            return None;
        }
        // SAFETY: `base` is a live mapping of ARENA_BYTES bytes and off < ARENA_BYTES, so the
        // pointer is inside it; with off + len <= ARENA_BYTES (checked above) so is the range.
        Some(unsafe { base.add(off as usize) })
    }

    /// Calls `f(real_ptr, len)` for each piece of `[addr, addr+len)` inside one arena.
    /// Panics when any byte is outside the mapped arenas: that is a model bug, and writing
    /// there would be undefined behaviour.
    #[inline]
    fn pieces(&self, mut addr: u64, mut len: u64, mut f: impl FnMut(*mut u8, usize)) {
        while len > 0 {
            assert!(addr >= self.base_addr, "address {addr:#x} below the heap");
            let i = self.arena_index(addr);
            let off = (addr - self.base_addr) % ARENA_BYTES;
            let n = len.min(ARENA_BYTES - off);
            let base = *self.real.get(i).unwrap_or(&std::ptr::null_mut());
            assert!(
                !base.is_null(),
                "address {addr:#x} is not in a mapped arena"
            );
            // SAFETY: `base` is a live mapping of ARENA_BYTES bytes and off + n <= ARENA_BYTES,
            // so the pointer stays inside the mapping.
            f(unsafe { base.add(off as usize) }, n as usize);
            addr += n;
            len -= n;
        }
    }

    /// `memclrNoHeapPointers`: zeroes `[addr, addr+len)`.
    pub(crate) fn zero(&self, addr: u64, len: u64) {
        if !self.touch_memory {
            return;
        }
        if let Some(p) = self.contiguous(addr, len) {
            // SAFETY: `contiguous` returned a pointer to `len` mapped, writable bytes.
            unsafe { std::ptr::write_bytes(p, 0, len as usize) };
            return;
        }
        // SAFETY: `pieces` hands out pointers to `n` mapped, writable bytes.
        self.pieces(addr, len, |p, n| unsafe { std::ptr::write_bytes(p, 0, n) });
    }

    /// Writes `stamp` into every byte of `[addr, addr+len)` (the `whole` touch policy: as
    /// glibc's trace_run, the program writes its whole object).
    pub(crate) fn fill(&self, addr: u64, len: u64, stamp: u8) {
        if !self.touch_memory {
            return;
        }
        if let Some(p) = self.contiguous(addr, len) {
            // SAFETY: `contiguous` returned a pointer to `len` mapped, writable bytes.
            unsafe { std::ptr::write_bytes(p, stamp, len as usize) };
            return;
        }
        // SAFETY: `pieces` hands out pointers to `n` mapped, writable bytes.
        self.pieces(addr, len, |p, n| unsafe {
            std::ptr::write_bytes(p, stamp, n)
        });
    }

    /// Writes a 64-bit word (a malloc header, a tiny block's first word).
    pub(crate) fn write_u64(&self, addr: u64, value: u64) {
        if !self.touch_memory {
            return;
        }
        debug_assert_eq!(addr % 8, 0);
        if let Some(p) = self.contiguous(addr, 8) {
            // SAFETY: `contiguous` returned a pointer to 8 mapped, writable bytes (no alignment
            // is assumed).
            unsafe { (p as *mut u64).write_unaligned(value) };
            return;
        }
        let bytes = value.to_ne_bytes();
        let mut at = 0;
        // SAFETY: `pieces` hands out pointers to `n` mapped, writable bytes; `at + n <= 8`.
        self.pieces(addr, 8, |p, n| unsafe {
            std::ptr::copy_nonoverlapping(bytes.as_ptr().add(at), p, n);
            at += n;
        });
    }

    /// Reads a 64-bit word (tests use it to check what the model wrote).
    pub fn read_u64(&self, addr: u64) -> u64 {
        if !self.touch_memory {
            return 0;
        }
        let mut bytes = [0u8; 8];
        let mut at = 0;
        // SAFETY: `pieces` hands out pointers to `n` mapped, readable bytes; `at + n <= 8`.
        self.pieces(addr, 8, |p, n| unsafe {
            std::ptr::copy_nonoverlapping(p, bytes.as_mut_ptr().add(at), n);
            at += n;
        });
        u64::from_ne_bytes(bytes)
    }

    /// What a program does with a fresh object: writes its first byte and one byte in each
    /// later 4 KiB page, so page faults and TLB misses happen where they would.
    pub(crate) fn touch(&self, addr: u64, len: u64, stamp: u8) {
        if !self.touch_memory || len == 0 {
            return;
        }
        if let Some(p) = self.contiguous(addr, len) {
            // The same bytes as the loop below: the first, then the first of each later page.
            let mut off = 0;
            while off < len {
                // SAFETY: `contiguous` returned a pointer to `len` mapped, writable bytes and
                // off < len.
                unsafe { p.add(off as usize).write_volatile(stamp) };
                off = ((addr + off) & !4095) + 4096 - addr;
            }
            return;
        }
        let mut a = addr;
        while a < addr + len {
            // SAFETY: `pieces` hands out a pointer to at least one mapped, writable byte.
            self.pieces(a, 1, |p, _| unsafe { p.write_volatile(stamp) });
            a = (a & !4095) + 4096;
        }
    }

    /// Copies `len` bytes between objects (what `append`/`copy` does when a slice grows).
    pub(crate) fn copy(&self, dst: u64, src: u64, len: u64) {
        if !self.touch_memory || len == 0 {
            return;
        }
        let mut done = 0;
        while done < len {
            let mut dptr = std::ptr::null_mut();
            let mut dn = 0;
            self.pieces(dst + done, 1, |p, _| dptr = p);
            self.pieces(dst + done, len - done, |_, n| {
                if dn == 0 {
                    dn = n
                }
            });
            let mut sptr = std::ptr::null_mut();
            let mut sn = 0;
            self.pieces(src + done, 1, |p, _| sptr = p);
            self.pieces(src + done, len - done, |_, n| {
                if sn == 0 {
                    sn = n
                }
            });
            let n = dn.min(sn);
            // SAFETY: both pointers address at least `n` mapped bytes (the first piece of each
            // range), and distinct live objects never overlap.
            unsafe { std::ptr::copy(sptr as *const u8, dptr, n) };
            done += n as u64;
        }
    }

    /// `sysUnused`: gives `[addr, addr+len)` back to the OS (MADV_DONTNEED); the bytes read as
    /// zero afterwards.
    pub(crate) fn release(&self, addr: u64, len: u64) {
        if !self.touch_memory {
            return;
        }
        self.pieces(addr, len, |p, n| {
            // SAFETY: the range is inside our own anonymous mapping; MADV_DONTNEED on it only
            // drops its pages, which no Rust reference points into.
            unsafe { libc::madvise(p as *mut libc::c_void, n, libc::MADV_DONTNEED) };
        });
    }
}

impl Drop for Arena {
    fn drop(&mut self) {
        for &p in &self.real {
            if !p.is_null() {
                // SAFETY: `p` is a mapping of ARENA_BYTES this struct made and nothing else
                // refers to it once the arena is dropped.
                unsafe { libc::munmap(p as *mut libc::c_void, ARENA_BYTES as usize) };
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn write_read_zero_across_arenas() {
        let mut a = Arena::new(ARENA_HINT_ADDR, true);
        let end0 = ARENA_HINT_ADDR + ARENA_BYTES;
        a.map(end0 - 8, 16).unwrap();
        a.write_u64(end0 - 8, 0x0102030405060708);
        a.write_u64(end0, 0x1112131415161718);
        assert_eq!(a.read_u64(end0 - 8), 0x0102030405060708);
        // Copy 8 bytes that straddle the arena boundary, then zero across it.
        a.copy(end0 - 32, end0 - 4, 8);
        assert_eq!(a.read_u64(end0 - 32), 0x1516171801020304);
        a.zero(end0 - 4, 8);
        assert_eq!(a.read_u64(end0 - 8), 0x0000000005060708);
        assert_eq!(a.read_u64(end0), 0x1112131400000000);
        a.touch(end0 - 1, 2, 7);
        a.release(end0 - 8192, 16384);
        assert_eq!(a.read_u64(end0), 0);
    }

    #[test]
    fn never_maps_more_than_the_machine_has() {
        let machine = machine_memory_bytes();
        assert!(machine > 0);
        if machine > MAX_HEAP_BYTES {
            return; // a machine this large never meets the limit below the heap's own
        }
        let mut a = Arena::new(ARENA_HINT_ADDR, true);
        let e = a.map(ARENA_HINT_ADDR, machine + ARENA_BYTES).unwrap_err();
        assert!(
            matches!(e, ReplayError::MachineMemory { machine_bytes } if machine_bytes == machine),
            "{e}"
        );
        assert!(e.to_string().contains("--no-touch"), "{e}");
        assert!(a.real.iter().all(|p| p.is_null()), "nothing mapped");
        // Addresses only: nothing is mapped, so nothing is refused.
        let mut a = Arena::new(ARENA_HINT_ADDR, false);
        a.map(ARENA_HINT_ADDR, machine + ARENA_BYTES).unwrap();
    }

    #[test]
    fn one_arena_fast_paths_write_the_same_bytes() {
        let mut a = Arena::new(ARENA_HINT_ADDR, true);
        let base = ARENA_HINT_ADDR + (1 << 20);
        a.map(base, 64 << 10).unwrap();
        a.fill(base, 3 * 4096, 0xee);
        a.zero(base + 8, 16);
        assert_eq!(a.read_u64(base), 0xeeee_eeee_eeee_eeee);
        assert_eq!(a.read_u64(base + 8), 0);
        assert_eq!(a.read_u64(base + 16), 0);
        a.write_u64(base + 24, 0x0102_0304_0506_0708);
        assert_eq!(a.read_u64(base + 24), 0x0102_0304_0506_0708);
        // touch writes the first byte, then the first byte of every later 4 KiB page.
        a.zero(base, 3 * 4096);
        a.touch(base + 4000, 4200, 0x5a);
        for (off, want) in [
            (4000, 0x5a),
            (4001, 0),
            (4096, 0x5a),
            (8191, 0),
            (8192, 0x5a),
        ] {
            assert_eq!(a.read_u64(base + off) & 0xff, want, "byte at {off}");
        }
    }
}
