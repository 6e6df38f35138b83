//! Size-class waste computed from the trace under a class table (Go's by default).
//!
//! Every successful allocation is placed where Go's `mallocgc` would place it, by the replayer's
//! one placement rule (`replayer::sizeclass::SizeClasses::place`, the rule the model allocates
//! by):
//! - size 0: no memory (Go returns `zerobase`);
//! - tiny: pointer-free (noscan, the default for malloc traces) and under Go's 16-byte tiny
//!   block: packed into blocks, aligned by size as `mallocgcTiny` does (`sizeclass::tiny_align`),
//!   one open block per thread (Go has one per P). The waste is the block bytes not holding an
//!   object;
//! - small: up to the largest class less the 8-byte malloc header, rounded up to its class;
//!   pointer objects over 512 B carry Go's malloc header, counted as waste;
//! - large: everything larger, rounded up to whole pages.
//!
//! Totals are over all allocations made (cumulative). Span tail waste (the bytes at the end of a
//! span that no object fits in) is counted for the spans the peak number of live objects of each
//! class needs. Each class's waste is set against the table's theoretical maximum, computed as
//! `mksizeclasses.go` does: `((size - prev_size - 1) * objects + tail) / span_bytes`.

use rustc_hash::FxHashMap as HashMap;

use replayer::sizeclass::{
    self, tiny_align, SizeClass, SizeClasses, SpanClass, GO_TINY_BLOCK_BYTES, MALLOC_HEADER_BYTES,
};
use serde::Serialize;
use traces::PtrKind;

/// The tiny block, bytes (Go's; re-exported under the names frag.rs and latency.rs use).
pub use replayer::sizeclass::GO_TINY_BLOCK_BYTES as TINY_BLOCK_BYTES;
/// Noscan objects smaller than this use the tiny allocator: the tiny block.
pub use replayer::sizeclass::GO_TINY_BLOCK_BYTES as TINY_MAX_BYTES;
/// Distinct request sizes tracked for the "top wasting sizes" table; sizes past this count only
/// in the totals (bounded memory).
pub const MAX_TRACKED_SIZES: usize = 1 << 16;

/// Where an allocation went.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Placement {
    Zero,
    /// In tiny block number `block`.
    Tiny {
        block: u64,
    },
    Small {
        class: u8,
    },
    Large {
        rounded_bytes: u64,
    },
}

#[derive(Clone, Copy, Debug, Default)]
struct ClassAcc {
    allocs: u64,
    requested_bytes: u64,
}

#[derive(Clone, Copy, Debug, Default)]
struct TinyBlock {
    id: u64,
    used_bytes: u64,
}

/// Accumulates waste; also places objects for [`crate::frag`].
pub struct Waste {
    pub classes: SizeClasses,
    per_class: Vec<ClassAcc>,
    tiny_allocs: u64,
    tiny_requested_bytes: u64,
    /// Tiny blocks opened (within the window: opened in it, or open when it started).
    tiny_blocks: u64,
    /// The last tiny block's number (blocks are numbered from 1).
    last_tiny_block: u64,
    open_block: HashMap<u32, TinyBlock>,
    large_allocs: u64,
    large_requested_bytes: u64,
    large_rounded_bytes: u64,
    zero_allocs: u64,
    header_bytes: u64,
    by_size: HashMap<u64, (u64, u64)>,
}

impl Waste {
    pub fn new(classes: SizeClasses) -> Waste {
        let n = classes.num_classes();
        Waste {
            classes,
            per_class: vec![ClassAcc::default(); n],
            tiny_allocs: 0,
            tiny_requested_bytes: 0,
            tiny_blocks: 0,
            last_tiny_block: 0,
            open_block: HashMap::default(),
            large_allocs: 0,
            large_requested_bytes: 0,
            large_rounded_bytes: 0,
            zero_allocs: 0,
            header_bytes: 0,
            by_size: HashMap::default(),
        }
    }

    /// Places an allocation of `size` bytes and counts its waste. Returns where it went and the
    /// bytes it occupies (for tiny objects, 0: their block is counted once by the caller).
    pub fn place(&mut self, size: u64, kind: PtrKind, thread: u32) -> Placement {
        let noscan = kind != PtrKind::Scan;
        let (placement, waste) = match self.classes.place(size, noscan, GO_TINY_BLOCK_BYTES) {
            sizeclass::Placement::Zero => {
                self.zero_allocs += 1;
                return Placement::Zero;
            }
            sizeclass::Placement::Tiny => {
                self.tiny_allocs += 1;
                self.tiny_requested_bytes += size;
                let (count, last) = (&mut self.tiny_blocks, &mut self.last_tiny_block);
                let b = self.open_block.entry(thread).or_insert(TinyBlock {
                    id: 0,
                    used_bytes: GO_TINY_BLOCK_BYTES,
                });
                let off = tiny_align(b.used_bytes, size);
                if b.id != 0 && off + size <= GO_TINY_BLOCK_BYTES {
                    b.used_bytes = off + size;
                } else {
                    *count += 1;
                    *last += 1;
                    *b = TinyBlock {
                        id: *last,
                        used_bytes: size,
                    };
                }
                // Waste of tiny objects is attributed per block at the end (blocks * 16 - bytes).
                (Placement::Tiny { block: b.id }, 0)
            }
            sizeclass::Placement::Small { class, header } => {
                if header {
                    self.header_bytes += MALLOC_HEADER_BYTES;
                }
                let acc = &mut self.per_class[class.0 as usize];
                acc.allocs += 1;
                acc.requested_bytes += size;
                (
                    Placement::Small { class: class.0 },
                    self.classes.size_bytes(class) as u64 - size,
                )
            }
            p @ sizeclass::Placement::Large => {
                let (_, rounded) = self.classes.footprint(p, size, GO_TINY_BLOCK_BYTES);
                self.large_allocs += 1;
                self.large_requested_bytes += size;
                self.large_rounded_bytes += rounded;
                (
                    Placement::Large {
                        rounded_bytes: rounded,
                    },
                    rounded - size,
                )
            }
        };
        if let Some(e) = self.by_size.get_mut(&size) {
            e.0 += 1;
            e.1 += waste;
        } else if self.by_size.len() < MAX_TRACKED_SIZES {
            self.by_size.insert(size, (1, waste));
        }
        placement
    }

    /// Forgets what was counted so far and keeps the open tiny blocks (a report window starts):
    /// a block open now counts as one of the window's, the objects it already holds as its
    /// waste.
    pub fn start_window(&mut self) {
        *self = Waste {
            classes: self.classes.clone(),
            tiny_blocks: self.open_block.values().filter(|b| b.id != 0).count() as u64,
            last_tiny_block: self.last_tiny_block,
            open_block: std::mem::take(&mut self.open_block),
            ..Waste::new(self.classes.clone())
        };
    }

    /// The bytes an allocation of `size` placed at `p` loses to rounding (tiny objects: 0, their
    /// blocks' waste is counted per block).
    pub fn rounding_waste(&self, p: Placement, size: u64) -> u64 {
        match p {
            Placement::Zero | Placement::Tiny { .. } => 0,
            Placement::Small { class } => {
                (self.classes.size_bytes(sizeclass::SizeClass(class)) as u64).saturating_sub(size)
            }
            Placement::Large { rounded_bytes } => rounded_bytes.saturating_sub(size),
        }
    }

    /// The report, given the peak live objects per class (for span tail waste).
    pub fn report(&self, peak_live_objects: &[u64], top: usize) -> WasteReport {
        let t = &self.classes;
        let page = t.page_bytes() as u64;
        let mut classes = Vec::new();
        let mut small_requested = 0;
        let mut small_rounded = 0;
        let mut tail_total = 0;
        for c in 1..t.num_classes() {
            let sc = SizeClass(c as u8);
            let size = t.size_bytes(sc) as u64;
            let prev = t.size_bytes(SizeClass(c as u8 - 1)) as u64;
            let span = t.npages(sc) as u64 * page;
            let objects = span / size;
            let theoretical_tail = span - objects * size;
            let max_waste_pct =
                100.0 * ((size - prev - 1) * objects + theoretical_tail) as f64 / span as f64;
            let nelems = t.nelems(SpanClass::new(sc, true), false) as u64;
            let tail_per_span = span - nelems * size;
            let peak = peak_live_objects.get(c).copied().unwrap_or(0);
            let spans_at_peak = peak.div_ceil(nelems.max(1));
            let acc = self.per_class[c];
            let rounded = acc.allocs * size;
            small_requested += acc.requested_bytes;
            small_rounded += rounded;
            tail_total += spans_at_peak * tail_per_span;
            classes.push(ClassWaste {
                class: c as u8,
                size_bytes: size,
                span_bytes: span,
                objects_per_span: nelems,
                allocs: acc.allocs,
                requested_bytes: acc.requested_bytes,
                rounded_bytes: rounded,
                waste_bytes: rounded - acc.requested_bytes,
                waste_pct: pct(rounded - acc.requested_bytes, rounded),
                tail_bytes_per_span: tail_per_span,
                peak_live_objects: peak,
                spans_at_peak,
                tail_waste_at_peak_bytes: spans_at_peak * tail_per_span,
                theoretical_max_waste_pct: max_waste_pct,
            });
        }
        let tiny_rounded = self.tiny_blocks * GO_TINY_BLOCK_BYTES;
        let requested = small_requested + self.tiny_requested_bytes + self.large_requested_bytes;
        let rounded = small_rounded + tiny_rounded + self.large_rounded_bytes;
        let mut sizes: Vec<SizeWaste> = self
            .by_size
            .iter()
            .filter(|(_, (_, w))| *w > 0)
            .map(|(&size, &(allocs, waste))| SizeWaste {
                request_bytes: size,
                allocs,
                waste_bytes: waste,
                // As a pointer-free object outside the tiny allocator (sizes are tracked alone).
                rounded_to_bytes: t.footprint(t.place(size, true, 0), size, 0).1,
            })
            .collect();
        sizes.sort_by(|a, b| {
            b.waste_bytes
                .cmp(&a.waste_bytes)
                .then(a.request_bytes.cmp(&b.request_bytes))
        });
        sizes.truncate(top);
        WasteReport {
            table: t.name.clone(),
            page_bytes: page,
            classes,
            tiny: TinyWaste {
                allocs: self.tiny_allocs,
                requested_bytes: self.tiny_requested_bytes,
                blocks: self.tiny_blocks,
                block_bytes: tiny_rounded,
                waste_bytes: tiny_rounded - self.tiny_requested_bytes,
                objects_per_block: if self.tiny_blocks == 0 {
                    0.0
                } else {
                    self.tiny_allocs as f64 / self.tiny_blocks as f64
                },
            },
            large: LargeWaste {
                allocs: self.large_allocs,
                requested_bytes: self.large_requested_bytes,
                rounded_bytes: self.large_rounded_bytes,
                page_waste_bytes: self.large_rounded_bytes - self.large_requested_bytes,
            },
            zero_size_allocs: self.zero_allocs,
            malloc_header_bytes: self.header_bytes,
            total_requested_bytes: requested,
            total_rounded_bytes: rounded,
            total_waste_bytes: rounded - requested,
            waste_pct: pct(rounded - requested, rounded),
            span_tail_waste_at_peak_bytes: tail_total,
            top_sizes: sizes,
        }
    }
}

pub(crate) fn pct(part: u64, whole: u64) -> f64 {
    if whole == 0 {
        0.0
    } else {
        100.0 * part as f64 / whole as f64
    }
}

/// One size class.
#[derive(Clone, Debug, Serialize)]
pub struct ClassWaste {
    pub class: u8,
    pub size_bytes: u64,
    pub span_bytes: u64,
    /// Objects per span (noscan).
    pub objects_per_span: u64,
    pub allocs: u64,
    pub requested_bytes: u64,
    /// `allocs * size_bytes`.
    pub rounded_bytes: u64,
    /// Internal waste: rounded - requested (a malloc header counts here).
    pub waste_bytes: u64,
    /// waste / rounded, %.
    pub waste_pct: f64,
    pub tail_bytes_per_span: u64,
    pub peak_live_objects: u64,
    pub spans_at_peak: u64,
    pub tail_waste_at_peak_bytes: u64,
    /// The table's worst case for this class (objects one byte over the previous class), %.
    pub theoretical_max_waste_pct: f64,
}

#[derive(Clone, Debug, Serialize)]
pub struct TinyWaste {
    pub allocs: u64,
    pub requested_bytes: u64,
    /// 16-byte blocks opened.
    pub blocks: u64,
    pub block_bytes: u64,
    pub waste_bytes: u64,
    pub objects_per_block: f64,
}

#[derive(Clone, Debug, Serialize)]
pub struct LargeWaste {
    pub allocs: u64,
    pub requested_bytes: u64,
    /// Rounded up to whole pages.
    pub rounded_bytes: u64,
    pub page_waste_bytes: u64,
}

/// A request size and the waste it caused.
#[derive(Clone, Debug, Serialize)]
pub struct SizeWaste {
    pub request_bytes: u64,
    pub rounded_to_bytes: u64,
    pub allocs: u64,
    pub waste_bytes: u64,
}

/// The waste section of a report.
#[derive(Clone, Debug, Serialize)]
pub struct WasteReport {
    pub table: String,
    pub page_bytes: u64,
    pub classes: Vec<ClassWaste>,
    pub tiny: TinyWaste,
    pub large: LargeWaste,
    pub zero_size_allocs: u64,
    pub malloc_header_bytes: u64,
    pub total_requested_bytes: u64,
    pub total_rounded_bytes: u64,
    pub total_waste_bytes: u64,
    /// total waste / total rounded, %.
    pub waste_pct: f64,
    pub span_tail_waste_at_peak_bytes: u64,
    pub top_sizes: Vec<SizeWaste>,
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The waste places every request where the model allocates it (one rule: the replayer's
    /// `SizeClasses::place`): the same per-class and large counts for the same requests. Before
    /// the rule was shared, pointer-free requests of 32761..=32768 bytes were small here and
    /// large in the model (and in Go).
    #[test]
    fn placement_is_the_models() {
        let cfg = replayer::Config {
            touch_memory: false,
            gogc: -1,
            ..replayer::Config::default()
        };
        let mut heap = replayer::Heap::new(&cfg).unwrap();
        let mut waste = Waste::new(SizeClasses::go());
        let mut sizes: Vec<u64> = (16..=40_000).step_by(7).collect();
        sizes.extend([512, 513, 1024, 32760, 32761, 32767, 32768, 32769, 1 << 20]);
        for &size in &sizes {
            for kind in [PtrKind::Noscan, PtrKind::Scan] {
                heap.malloc(size, kind != PtrKind::Scan, 0).unwrap();
                waste.place(size, kind, 0);
            }
        }
        let m = heap.memstats();
        for (c, by_size) in m.by_size.iter().enumerate() {
            assert_eq!(
                waste.per_class[c + 1].allocs,
                by_size.mallocs,
                "{}-byte class",
                by_size.size
            );
        }
        assert_eq!(waste.large_allocs, m.large.mallocs);
        assert_eq!(waste.large_rounded_bytes, m.large.bytes);
        // Four whole pages, as Go's mallocgcLarge (not the 32768-byte class).
        assert_eq!(
            waste.place(32761, PtrKind::Noscan, 0),
            Placement::Large {
                rounded_bytes: 32768
            }
        );
    }

    #[test]
    fn tiny_objects_pack_by_alignment_and_headers_count_as_waste() {
        let mut w = Waste::new(SizeClasses::go());
        // 1 at 0, 2 at 2, 4 at 4, 8 at 8: one block; 12 does not fit: a second block.
        let blocks: Vec<Placement> = [1, 2, 4, 8, 12]
            .iter()
            .map(|&s| w.place(s, PtrKind::Noscan, 0))
            .collect();
        assert_eq!(blocks[..4], [Placement::Tiny { block: 1 }; 4]);
        assert_eq!(blocks[4], Placement::Tiny { block: 2 });
        // Another thread opens its own block.
        assert_eq!(w.place(1, PtrKind::Noscan, 1), Placement::Tiny { block: 3 });
        // A pointer object over 512 bytes takes the class of size + 8.
        let c = w.classes.class_for(521);
        assert_eq!(
            w.place(513, PtrKind::Scan, 0),
            Placement::Small { class: c.0 }
        );
        let r = w.report(&[], 10);
        assert_eq!(r.malloc_header_bytes, MALLOC_HEADER_BYTES);
        assert_eq!(r.tiny.blocks, 3);
        assert_eq!(r.tiny.block_bytes, 3 * TINY_BLOCK_BYTES);
    }
}
