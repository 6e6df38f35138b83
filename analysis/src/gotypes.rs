//! Per Go type: for a trace imported from a Go execution trace (`allocscope import trace.out`),
//! each allocation's call-site field is its Go type's id in the import's type table (the side
//! file `T.atrace.go.jsonl`). This accumulator gives, per type, the allocations, the bytes asked
//! for and the bytes their slots took, the waste between the two (which types waste most in their
//! size class), and the type's own peak of live bytes.
//!
//! The bytes asked for are the import's estimate (the most whole values of the type that fit the
//! slot; see `gotrace::convert`), so a type's waste is what its slots hold beyond whole values
//! of it: exact for single values, a lower bound for slices made with room to spare. Tiny objects
//! share 16-byte blocks: their waste is counted per block in the size-class view, not per type.

use serde::Serialize;

use crate::waste::Placement;

/// One entry of the import's type table.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GoTypeName {
    pub name: String,
    /// The type's size, bytes.
    pub size: u64,
    /// Bytes of the type that may hold pointers (0: pointer-free).
    pub ptr_bytes: u64,
}

#[derive(Clone, Copy, Debug, Default)]
struct Acc {
    allocs: u64,
    requested: u64,
    rounded: u64,
    live: u64,
    peak_live: u64,
    live_objects: u64,
    peak_live_objects: u64,
}

/// The per-type accumulator.
pub struct GoTypes {
    names: Vec<GoTypeName>,
    /// Indexed by type id; one more for ids the table does not have.
    acc: Vec<Acc>,
    class_size: Vec<u64>,
}

/// One row of the per-type view.
#[derive(Clone, Debug, Serialize)]
pub struct GoTypeRow {
    pub id: u32,
    pub name: String,
    pub type_size: u64,
    pub pointers: bool,
    pub allocs: u64,
    /// Bytes asked for (estimated, see the module comment).
    pub requested_bytes: u64,
    /// Bytes of the slots (size class, tiny objects as asked, large objects in whole pages).
    pub rounded_bytes: u64,
    pub waste_bytes: u64,
    /// Waste as a share of the slots' bytes.
    pub waste_pct: f64,
    pub peak_live_bytes: u64,
    pub peak_live_objects: u64,
}

/// The per-type view, rows by waste (largest first).
#[derive(Clone, Debug, Serialize)]
pub struct GoTypesReport {
    pub types: Vec<GoTypeRow>,
}

impl GoTypes {
    /// An accumulator for a type table (index = id) and the class sizes of the analysis.
    pub fn new(names: Vec<GoTypeName>, class_size: Vec<u64>) -> GoTypes {
        GoTypes {
            acc: vec![Acc::default(); names.len() + 1],
            names,
            class_size,
        }
    }

    fn slot(&self, id: Option<u32>) -> usize {
        match id {
            Some(i) if (i as usize) < self.names.len() => i as usize,
            _ => self.names.len(),
        }
    }

    fn rounded(&self, requested: u64, placement: Placement) -> u64 {
        match placement {
            Placement::Zero => 0,
            Placement::Tiny { .. } => requested,
            Placement::Small { class } => self
                .class_size
                .get(class as usize)
                .copied()
                .unwrap_or(requested),
            Placement::Large { rounded_bytes } => rounded_bytes,
        }
    }

    /// An object of type `id` became live.
    pub fn born(&mut self, id: Option<u32>, requested: u64, placement: Placement) {
        let rounded = self.rounded(requested, placement);
        let i = self.slot(id);
        let a = &mut self.acc[i];
        a.allocs += 1;
        a.requested += requested;
        a.rounded += rounded.max(requested);
        a.live += requested;
        a.live_objects += 1;
        a.peak_live = a.peak_live.max(a.live);
        a.peak_live_objects = a.peak_live_objects.max(a.live_objects);
    }

    /// An object of type `id` died.
    pub fn died(&mut self, id: Option<u32>, requested: u64) {
        let i = self.slot(id);
        let a = &mut self.acc[i];
        a.live = a.live.saturating_sub(requested);
        a.live_objects = a.live_objects.saturating_sub(1);
    }

    /// A report window starts: counts start from zero, peaks from what is live now.
    pub fn start_window(&mut self) {
        for a in &mut self.acc {
            *a = Acc {
                live: a.live,
                peak_live: a.live,
                live_objects: a.live_objects,
                peak_live_objects: a.live_objects,
                ..Acc::default()
            };
        }
    }

    pub fn report(&self) -> GoTypesReport {
        let mut types: Vec<GoTypeRow> = self
            .acc
            .iter()
            .enumerate()
            .filter(|(_, a)| a.allocs > 0 || a.peak_live > 0)
            .map(|(i, a)| {
                let (name, size, ptr) = match self.names.get(i) {
                    Some(n) => (n.name.clone(), n.size, n.ptr_bytes > 0),
                    None => ("(type id not in the table)".to_string(), 0, false),
                };
                let waste = a.rounded - a.requested;
                GoTypeRow {
                    id: i as u32,
                    name,
                    type_size: size,
                    pointers: ptr,
                    allocs: a.allocs,
                    requested_bytes: a.requested,
                    rounded_bytes: a.rounded,
                    waste_bytes: waste,
                    waste_pct: if a.rounded == 0 {
                        0.0
                    } else {
                        waste as f64 * 100.0 / a.rounded as f64
                    },
                    peak_live_bytes: a.peak_live,
                    peak_live_objects: a.peak_live_objects,
                }
            })
            .collect();
        types.sort_by(|a, b| {
            b.waste_bytes
                .cmp(&a.waste_bytes)
                .then(b.rounded_bytes.cmp(&a.rounded_bytes))
                .then(a.id.cmp(&b.id))
        });
        GoTypesReport { types }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waste_and_peaks_per_type() {
        let names = vec![
            GoTypeName {
                name: "(no type)".into(),
                size: 0,
                ptr_bytes: 0,
            },
            GoTypeName {
                name: "main.T".into(),
                size: 40,
                ptr_bytes: 8,
            },
        ];
        let mut g = GoTypes::new(names, vec![0, 8, 16, 24, 32, 48]);
        g.born(Some(1), 40, Placement::Small { class: 5 });
        g.born(Some(1), 40, Placement::Small { class: 5 });
        g.died(Some(1), 40);
        g.born(Some(1), 40, Placement::Small { class: 5 });
        g.born(
            Some(7),
            100,
            Placement::Large {
                rounded_bytes: 8192,
            },
        );
        let r = g.report();
        assert_eq!(r.types[0].name, "(type id not in the table)");
        assert_eq!(r.types[0].waste_bytes, 8092);
        let t = &r.types[1];
        assert_eq!(
            (t.allocs, t.requested_bytes, t.rounded_bytes, t.waste_bytes),
            (3, 120, 144, 24)
        );
        assert_eq!((t.peak_live_bytes, t.peak_live_objects), (80, 2));
        assert!(t.pointers);
    }
}
