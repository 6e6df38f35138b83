//! The page allocator: models `pageAlloc` (mpagealloc.go, mpallocbits.go) and the page part of
//! the scavenger's bookkeeping (mgcscavenge.go's `scavenged` bitmap).
//!
//! The heap's pages are numbered from the heap base (page 0 = the first page of the first
//! arena). They come in chunks of 512 pages (`pallocChunkPages`; 4 MiB with 8 KiB pages); each
//! chunk has an allocation bitmap (1 = in use) and a scavenged bitmap (1 = released to the OS),
//! and a summary (free pages at the start, longest free run, free pages at the end).
//!
//! Placement is Go's: `find(n)` returns the lowest page index starting `n` free pages, runs may
//! cross chunk boundaries, and `search_page` (Go's `searchAddr`) is a lower bound below which
//! every page is in use. Go finds that page with a radix tree of summaries (5 levels); we walk
//! the chunk summaries linearly from `search_page`'s chunk. The answer is the same (both are
//! address-ordered first fit); only the cost differs, O(chunks) instead of O(log).
//!
//! Invariants (checked by [`PageAlloc::check_invariants`]):
//! - each chunk's summary matches its bitmap;
//! - every page below `search_page` is in use;
//! - a page is never both in use and scavenged.
//!
//! Deliberate difference: the scavenger releases whole free pages from the highest address down,
//! page by page, where Go works in physical-page units and prefers 64 KiB runs; with 8 KiB pages
//! on 4 KiB physical pages the released totals agree.

/// Pages per chunk (`pallocChunkPages`).
pub const CHUNK_PAGES: u64 = 512;
const WORDS: usize = (CHUNK_PAGES / 64) as usize;

/// Free-run summary of one chunk, in pages.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Summary {
    pub(crate) start: u32,
    pub(crate) max: u32,
    pub(crate) end: u32,
}

#[derive(Clone, Debug)]
struct Chunk {
    /// 1 = page in use (allocated to a span or to a page cache).
    alloc: [u64; WORDS],
    /// 1 = page released to the OS (only free pages).
    scav: [u64; WORDS],
    sum: Summary,
}

impl Chunk {
    fn new_free_scavenged() -> Chunk {
        Chunk {
            alloc: [0; WORDS],
            scav: [!0; WORDS],
            sum: Summary {
                start: CHUNK_PAGES as u32,
                max: CHUNK_PAGES as u32,
                end: CHUNK_PAGES as u32,
            },
        }
    }

    fn in_use(&self, i: u64) -> bool {
        self.alloc[(i / 64) as usize] >> (i % 64) & 1 == 1
    }

    /// Recomputes `sum` from the bitmap, a word (64 pages) at a time.
    fn summarize(&mut self) {
        self.sum = summarize_bits(&self.alloc);
    }

    /// First run of `n` free pages at or after page `from` inside this chunk.
    fn find_in(&self, n: u64, from: u64) -> Option<u64> {
        let mut run = 0;
        let mut i = from;
        while i < CHUNK_PAGES {
            let w = self.alloc[(i / 64) as usize] >> (i % 64);
            if w == 0 && i & 63 == 0 {
                run += 64;
                i += 64;
                if run >= n {
                    return Some(i - run);
                }
                continue;
            }
            if w & 1 == 1 {
                run = 0;
            } else {
                run += 1;
                if run >= n {
                    return Some(i + 1 - run);
                }
            }
            i += 1;
        }
        None
    }

    fn set_range(bits: &mut [u64; WORDS], from: u64, n: u64, value: bool) {
        for_each_word_mask(from, n, |w, mask| {
            if value {
                bits[w] |= mask;
            } else {
                bits[w] &= !mask;
            }
        });
    }

    fn count_range(bits: &[u64; WORDS], from: u64, n: u64) -> u64 {
        let mut count = 0;
        for_each_word_mask(from, n, |w, mask| {
            count += (bits[w] & mask).count_ones() as u64
        });
        count
    }
}

/// Calls `f(word, mask)` for the words holding bits `[from, from+n)` of a chunk bitmap, `mask`
/// selecting the range's bits in that word.
#[inline]
fn for_each_word_mask(from: u64, n: u64, mut f: impl FnMut(usize, u64)) {
    let end = from + n;
    let mut i = from;
    while i < end {
        let b = i % 64;
        let k = (64 - b).min(end - i);
        let mask = if k == 64 { !0 } else { ((1u64 << k) - 1) << b };
        f((i / 64) as usize, mask);
        i += k;
    }
}

/// The free-run summary of a chunk bitmap (1 = in use): free pages at the start, the longest
/// free run, free pages at the end. Works on whole words: a word's free runs are its runs of
/// zero bits, found with trailing-zero counts.
fn summarize_bits(alloc: &[u64; WORDS]) -> Summary {
    // `start` is the run before the first used page; `run` the free run reaching the current
    // position; `max` the longest run closed so far.
    let mut start = None;
    let mut max = 0u32;
    let mut run = 0u32;
    for &w in alloc {
        if w == 0 {
            run += 64;
            continue;
        }
        // The run reaching this word ends at its lowest used bit.
        let low = w.trailing_zeros();
        run += low;
        if start.is_none() {
            start = Some(run);
        }
        max = max.max(run);
        // Free runs strictly inside the word (zero bits between used ones) can only raise `max`
        // when the word has more such free pages than `max`; most words are skipped.
        let high = w.leading_zeros();
        if w.count_zeros() - low - high > max {
            let mut x = w >> low; // bit 0 is a used page
            loop {
                let used = (!x).trailing_zeros();
                if used == 64 {
                    break;
                }
                x >>= used;
                if x == 0 {
                    break; // only the word's top free run is left: `high`
                }
                let free = x.trailing_zeros();
                max = max.max(free);
                x >>= free;
            }
        }
        // The free run reaching the next word.
        run = high;
    }
    max = max.max(run);
    Summary {
        start: start.unwrap_or(run),
        max,
        end: run,
    }
}

/// A block of pages handed to a page cache: 64 pages from `base_page`, `free` = pages that were
/// free (now marked in use here), `scav` = which of those were released.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CacheBlock {
    pub(crate) base_page: u64,
    pub(crate) free: u64,
    pub(crate) scav: u64,
}

#[derive(Clone, Debug, Default)]
pub struct PageAlloc {
    chunks: Vec<Chunk>,
    /// Every page below this one is in use (`searchAddr`).
    search_page: u64,
}

impl PageAlloc {
    /// Pages managed (grown) so far.
    pub fn total_pages(&self) -> u64 {
        self.chunks.len() as u64 * CHUNK_PAGES
    }

    /// `pageAlloc.grow`: adds `nchunks` chunks of free, released pages at the top.
    pub(crate) fn grow(&mut self, nchunks: u64) {
        for _ in 0..nchunks {
            self.chunks.push(Chunk::new_free_scavenged());
        }
    }

    /// `pageAlloc.find`: lowest page starting `n` free pages.
    pub fn find(&self, n: u64) -> Option<u64> {
        debug_assert!(n > 0);
        let first = (self.search_page / CHUNK_PAGES) as usize;
        let mut run_start = 0;
        let mut run_len = 0;
        for ci in first..self.chunks.len() {
            let c = &self.chunks[ci];
            let base = ci as u64 * CHUNK_PAGES;
            let s = c.sum;
            if s.start as u64 == CHUNK_PAGES {
                if run_len == 0 {
                    run_start = base;
                }
                run_len += CHUNK_PAGES;
                if run_len >= n {
                    return Some(run_start);
                }
                continue;
            }
            if run_len > 0 && run_len + s.start as u64 >= n {
                return Some(run_start);
            }
            if s.max as u64 >= n {
                let from = if ci == first {
                    self.search_page % CHUNK_PAGES
                } else {
                    0
                };
                if let Some(i) = c.find_in(n, from) {
                    return Some(base + i);
                }
            }
            run_len = s.end as u64;
            run_start = base + CHUNK_PAGES - run_len;
        }
        None
    }

    /// `pageAlloc.alloc`: first fit; returns the first page and how many of the pages were
    /// released (they become in use and no longer released).
    pub(crate) fn alloc(&mut self, n: u64) -> Option<(u64, u64)> {
        let page = self.find(n)?;
        let scav = self.alloc_range(page, n);
        Some((page, scav))
    }

    /// Marks `[page, page+n)` in use; returns how many of them were released.
    pub(crate) fn alloc_range(&mut self, page: u64, n: u64) -> u64 {
        let mut scav = 0;
        self.for_each_chunk(page, n, |c, from, k| {
            debug_assert!((from..from + k).all(|i| !c.in_use(i)), "double page alloc");
            scav += Chunk::count_range(&c.scav, from, k);
            Chunk::set_range(&mut c.alloc, from, k, true);
            Chunk::set_range(&mut c.scav, from, k, false);
        });
        if page <= self.search_page {
            self.advance_search();
        }
        scav
    }

    /// `pageAlloc.free`: marks `[page, page+n)` free (their released state is kept: not
    /// released, since they were in use).
    pub(crate) fn free(&mut self, page: u64, n: u64) {
        self.for_each_chunk(page, n, |c, from, k| {
            debug_assert!((from..from + k).all(|i| c.in_use(i)), "free of free pages");
            Chunk::set_range(&mut c.alloc, from, k, false);
        });
        self.search_page = self.search_page.min(page);
    }

    /// `allocToCache`: the 64-page aligned block holding the first free page, with all of its
    /// free pages taken. `None` when no page is free.
    pub(crate) fn alloc_to_cache(&mut self) -> Option<CacheBlock> {
        let first = self.find(1)?;
        let base_page = first & !63;
        let block = self.take_block(base_page);
        // Go sets searchAddr to the cache's last page: everything below is in use.
        self.search_page = self.search_page.max(base_page + 63);
        self.advance_search();
        Some(block)
    }

    /// The free pages of the 64-page aligned block at `base_page`, taken for a page cache
    /// (`allocToCache` after its search; spanlog.rs also gives a P the block its cache held
    /// when a trace began).
    pub(crate) fn take_block(&mut self, base_page: u64) -> CacheBlock {
        debug_assert_eq!(base_page % 64, 0);
        let ci = (base_page / CHUNK_PAGES) as usize;
        let w = ((base_page % CHUNK_PAGES) / 64) as usize;
        let c = &mut self.chunks[ci];
        let free = !c.alloc[w];
        let scav = c.scav[w] & free;
        c.alloc[w] = !0;
        c.scav[w] &= !free;
        c.summarize();
        self.advance_search();
        CacheBlock {
            base_page,
            free,
            scav,
        }
    }

    /// `pageCache.flush`: pages a cache did not use go back, with their released state.
    pub(crate) fn flush_cache(&mut self, block: CacheBlock) {
        if block.free == 0 {
            return;
        }
        let ci = (block.base_page / CHUNK_PAGES) as usize;
        let w = ((block.base_page % CHUNK_PAGES) / 64) as usize;
        let c = &mut self.chunks[ci];
        debug_assert_eq!(c.alloc[w] & block.free, block.free);
        c.alloc[w] &= !block.free;
        c.scav[w] |= block.scav;
        c.summarize();
        let lowest = block.base_page + block.free.trailing_zeros() as u64;
        self.search_page = self.search_page.min(lowest);
    }

    /// Releases up to `max_pages` free, unreleased pages, highest address first. Calls
    /// `release(page, n)` for each run released; returns the pages released.
    pub(crate) fn scavenge(&mut self, max_pages: u64, mut release: impl FnMut(u64, u64)) -> u64 {
        let mut done = 0;
        // The run of adjacent pages released so far, `[run_lo, run_lo + run_len)`: one
        // `release` call per run (one madvise), not per page.
        let (mut run_lo, mut run_len) = (0, 0);
        for ci in (0..self.chunks.len()).rev() {
            let c = &mut self.chunks[ci];
            let mut i = CHUNK_PAGES;
            while i > 0 && done < max_pages {
                i -= 1;
                let (w, b) = ((i / 64) as usize, i % 64);
                if c.alloc[w] >> b & 1 == 0 && c.scav[w] >> b & 1 == 0 {
                    c.scav[w] |= 1 << b;
                    let page = ci as u64 * CHUNK_PAGES + i;
                    if run_len > 0 && page + 1 == run_lo {
                        run_lo = page;
                        run_len += 1;
                    } else {
                        if run_len > 0 {
                            release(run_lo, run_len);
                        }
                        (run_lo, run_len) = (page, 1);
                    }
                    done += 1;
                }
            }
            if done >= max_pages {
                break;
            }
        }
        if run_len > 0 {
            release(run_lo, run_len);
        }
        done
    }

    /// Free pages and released pages.
    pub fn free_and_released_pages(&self) -> (u64, u64) {
        let mut free = 0;
        let mut released = 0;
        for c in &self.chunks {
            for w in 0..WORDS {
                free += (!c.alloc[w]).count_ones() as u64;
                released += (c.scav[w] & !c.alloc[w]).count_ones() as u64;
            }
        }
        (free, released)
    }

    /// Longest run of free pages (crossing chunks).
    pub fn largest_free_run(&self) -> u64 {
        let mut best = 0u64;
        let mut run = 0u64;
        for c in &self.chunks {
            if c.sum.start as u64 == CHUNK_PAGES {
                run += CHUNK_PAGES;
            } else {
                best = best.max(run + c.sum.start as u64).max(c.sum.max as u64);
                run = c.sum.end as u64;
            }
            best = best.max(run);
        }
        best
    }

    pub fn in_use(&self, page: u64) -> bool {
        self.chunks[(page / CHUNK_PAGES) as usize].in_use(page % CHUNK_PAGES)
    }

    fn advance_search(&mut self) {
        while self.search_page < self.total_pages() && self.in_use(self.search_page) {
            // Skip whole full chunks quickly.
            let c = &self.chunks[(self.search_page / CHUNK_PAGES) as usize];
            if c.sum.max == 0 {
                self.search_page = (self.search_page / CHUNK_PAGES + 1) * CHUNK_PAGES;
            } else {
                self.search_page += 1;
            }
        }
    }

    fn for_each_chunk(&mut self, page: u64, n: u64, mut f: impl FnMut(&mut Chunk, u64, u64)) {
        let mut p = page;
        while p < page + n {
            let ci = (p / CHUNK_PAGES) as usize;
            let from = p % CHUNK_PAGES;
            let k = (CHUNK_PAGES - from).min(page + n - p);
            let c = &mut self.chunks[ci];
            f(c, from, k);
            c.summarize();
            p += k;
        }
    }

    pub fn check_invariants(&self) {
        for (ci, c) in self.chunks.iter().enumerate() {
            let mut copy = c.clone();
            copy.summarize();
            assert_eq!(copy.sum, c.sum, "chunk {ci} summary");
            for w in 0..WORDS {
                assert_eq!(
                    c.alloc[w] & c.scav[w],
                    0,
                    "chunk {ci}: in-use page marked released"
                );
            }
        }
        for p in 0..self.search_page.min(self.total_pages()) {
            assert!(
                self.in_use(p),
                "page {p} free below search_page {}",
                self.search_page
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_fit_in_address_order_across_chunks() {
        let mut p = PageAlloc::default();
        p.grow(2);
        assert_eq!(p.alloc(10), Some((0, 10)));
        assert_eq!(p.alloc(500), Some((10, 500)));
        // 2 pages left in chunk 0: a 5-page run starts at 510 and crosses into chunk 1.
        assert_eq!(p.alloc(5).map(|x| x.0), Some(510));
        p.free(3, 4);
        // A 4-page hole at 3: first fit takes it; a 5-page request skips it.
        assert_eq!(p.find(5), Some(515));
        assert_eq!(p.alloc(4).map(|x| x.0), Some(3));
        // Freed pages are no longer released.
        p.free(100, 2);
        assert_eq!(p.alloc(2), Some((100, 0)));
        assert_eq!(p.alloc(1024), None);
        p.check_invariants();
    }

    #[test]
    fn cache_takes_the_aligned_block_of_the_first_free_page() {
        let mut p = PageAlloc::default();
        p.grow(1);
        p.alloc(70).unwrap();
        let b = p.alloc_to_cache().unwrap();
        assert_eq!(b.base_page, 64);
        assert_eq!(b.free, !0u64 << 6);
        assert_eq!(p.find(1), Some(128));
        p.flush_cache(b);
        assert_eq!(p.find(1), Some(70));
        p.check_invariants();
    }

    /// The page-by-page summary the word-wise one replaced (the definition it must match).
    fn summarize_page_by_page(c: &Chunk) -> Summary {
        let (mut start, mut max, mut run, mut seen_used) = (0, 0, 0, false);
        for i in 0..CHUNK_PAGES {
            if c.in_use(i) {
                if !seen_used {
                    start = run;
                    seen_used = true;
                }
                max = max.max(run);
                run = 0;
            } else {
                run += 1;
            }
        }
        if !seen_used {
            start = run;
        }
        Summary {
            start,
            max: max.max(run),
            end: run,
        }
    }

    #[test]
    fn word_wise_bitmap_work_matches_page_by_page() {
        let mut x = 0x9E37_79B9_7F4A_7C15u64;
        let mut next = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        let mut c = Chunk::new_free_scavenged();
        for round in 0..4000 {
            // Sparse, dense, runs and whole words, so every shape of word occurs.
            for w in 0..WORDS {
                let r = next();
                c.alloc[w] = match (round + w) % 6 {
                    0 => 0,
                    1 => !0,
                    2 => r & next() & next(),
                    3 => r | next(),
                    4 => (!0u64 << (r % 64)) ^ (!0u64 << (next() % 64)),
                    _ => r,
                };
            }
            c.summarize();
            assert_eq!(c.sum, summarize_page_by_page(&c), "bitmap {:x?}", c.alloc);
            let from = next() % CHUNK_PAGES;
            let n = next() % (CHUNK_PAGES - from) + 1;
            let want_count = (from..from + n).filter(|&i| c.in_use(i)).count() as u64;
            assert_eq!(Chunk::count_range(&c.alloc, from, n), want_count);
            let value = next() & 1 == 1;
            let before = c.clone();
            Chunk::set_range(&mut c.alloc, from, n, value);
            for i in 0..CHUNK_PAGES {
                let want = if (from..from + n).contains(&i) {
                    value
                } else {
                    before.in_use(i)
                };
                assert_eq!(c.in_use(i), want);
            }
        }
    }

    #[test]
    fn scavenge_from_the_top() {
        let mut p = PageAlloc::default();
        p.grow(1);
        p.alloc(512).unwrap();
        p.free(0, 512);
        let mut got = vec![];
        assert_eq!(p.scavenge(3, |pg, n| got.push((pg, n))), 3);
        // Adjacent pages go out as one run.
        assert_eq!(got, vec![(509, 3)]);
        assert_eq!(p.free_and_released_pages(), (512, 3));
        assert_eq!(p.largest_free_run(), 512);
        // An in-use page splits the runs.
        p.alloc_range(100, 1);
        got.clear();
        assert_eq!(p.scavenge(500, |pg, n| got.push((pg, n))), 500);
        assert_eq!(got, vec![(101, 408), (8, 92)]);
        assert_eq!(p.free_and_released_pages(), (511, 503));
        p.check_invariants();
    }
}
