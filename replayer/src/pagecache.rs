//! The per-P page cache: models `pageCache` (mpagecache.go).
//!
//! A P keeps up to 64 free pages from one 64-page aligned block (`CacheBlock`) and serves span
//! requests of fewer than 16 pages (`pageCachePages/4`) from it without the heap lock: one page
//! is the lowest free bit, more pages the lowest run of enough free bits (`findBitRange64`).
//!
//! Invariant: `scav ⊆ free` (a released page is one the cache still holds).

use crate::pagealloc::CacheBlock;

/// `pageCachePages`.
pub const PAGE_CACHE_PAGES: u64 = 64;

#[derive(Clone, Copy, Debug, Default)]
pub struct PageCache {
    pub(crate) block: CacheBlock,
}

impl PageCache {
    pub fn is_empty(&self) -> bool {
        self.block.free == 0
    }

    /// `pageCache.alloc`: the first page of `npages` free pages and how many of them were
    /// released, or `None` when no such run is in the cache.
    pub(crate) fn alloc(&mut self, npages: u64) -> Option<(u64, u64)> {
        let b = &mut self.block;
        if b.free == 0 {
            return None;
        }
        let i = find_bit_range64(b.free, npages)?;
        let mask = if npages == 64 {
            !0
        } else {
            ((1u64 << npages) - 1) << i
        };
        let scav = (b.scav & mask).count_ones() as u64;
        b.free &= !mask;
        b.scav &= !mask;
        Some((b.base_page + i as u64, scav))
    }

    /// Empties the cache, returning what it held (for `PageAlloc::flush_cache`).
    pub(crate) fn take(&mut self) -> CacheBlock {
        std::mem::take(&mut self.block)
    }

    pub fn check_invariants(&self) {
        assert_eq!(self.block.scav & !self.block.free, 0);
    }
}

/// `findBitRange64`: lowest `i` with bits `[i, i+n)` of `c` all set.
pub fn find_bit_range64(c: u64, n: u64) -> Option<u32> {
    debug_assert!((1..=64).contains(&n));
    let mut p = c;
    // After this loop bit i is set iff bits [i, i+n) were all set.
    let mut k = 1;
    while k < n {
        let s = k.min(n - k);
        p &= p >> s;
        k += s;
    }
    (p != 0).then(|| p.trailing_zeros())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bit_ranges() {
        assert_eq!(find_bit_range64(0b1011_0110, 1), Some(1));
        assert_eq!(find_bit_range64(0b1011_0110, 2), Some(1));
        assert_eq!(find_bit_range64(0b1011_0110, 3), None);
        assert_eq!(find_bit_range64(0b1111_0110, 4), Some(4));
        assert_eq!(find_bit_range64(!0, 64), Some(0));
        assert_eq!(find_bit_range64(!1, 64), None);
    }

    #[test]
    fn alloc_from_cache() {
        let mut c = PageCache {
            block: CacheBlock {
                base_page: 128,
                free: 0b1110_1101,
                scav: 0b1000_0001,
            },
        };
        assert_eq!(c.alloc(1), Some((128, 1)));
        assert_eq!(c.alloc(3), Some((133, 1)));
        assert_eq!(c.alloc(2), Some((130, 0)));
        assert_eq!(c.alloc(1), None);
        assert!(c.is_empty());
        c.check_invariants();
    }
}
