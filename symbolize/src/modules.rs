//! Which module an address of a trace belongs to.
//!
//! A trace's module records ([`traces::Module`]) are claims: each executable range is checked
//! before it is used (start below end, at most [`MAX_RANGE_BYTES`] long, a file offset that does
//! not overflow), and a module with a range that fails is left out whole, with a note: its frames
//! stay unsymbolized (`0x...`). Ranges of different modules may overlap when a library was
//! unloaded and another loaded at the same place; the module that was loaded at the time of the
//! event (`loaded_seq <= seq < unloaded_seq`) wins, else the first one found.

use traces::Module;

/// Longest executable range accepted (1 TiB): larger is a corrupt or crafted record.
pub const MAX_RANGE_BYTES: u64 = 1 << 40;

/// The modules of a trace, with their ranges sorted for lookups.
#[derive(Clone, Debug, Default)]
pub struct ModuleMap {
    modules: Vec<Module>,
    /// (start, end, index into `modules`), sorted by start.
    ranges: Vec<(u64, u64, usize)>,
    /// `max_end[i]`: the largest end among `ranges[..=i]` (lets a lookup stop scanning back).
    max_end: Vec<u64>,
    /// Modules left out, one line each.
    rejected: Vec<String>,
}

impl ModuleMap {
    /// The map of `modules`; records with absurd ranges are left out (see [`Self::rejected`]).
    pub fn new(modules: &[Module]) -> ModuleMap {
        let mut map = ModuleMap::default();
        for m in modules {
            if let Some(why) = absurd(m) {
                map.rejected.push(format!(
                    "module {} ({}): {why}: its frames stay unsymbolized",
                    m.id, m.path
                ));
                continue;
            }
            let idx = map.modules.len();
            map.modules.push(m.clone());
            map.ranges
                .extend(m.ranges.iter().map(|&(s, e, _)| (s, e, idx)));
        }
        map.ranges.sort_unstable();
        let mut top = 0;
        map.max_end = map
            .ranges
            .iter()
            .map(|&(_, e, _)| {
                top = top.max(e);
                top
            })
            .collect();
        map
    }

    /// The modules kept, by index (what [`Self::find`] returns).
    pub fn modules(&self) -> &[Module] {
        &self.modules
    }

    /// One line per module record left out, saying why.
    pub fn rejected(&self) -> &[String] {
        &self.rejected
    }

    /// Whether any two ranges overlap (a library unloaded and another loaded in its place):
    /// only then may [`Self::find`] depend on the seq.
    pub fn overlapping(&self) -> bool {
        self.ranges
            .iter()
            .skip(1)
            .zip(&self.max_end)
            .any(|(&(start, _, _), &end)| start < end)
    }

    /// The index of the module holding `addr` at the time of the event `seq`.
    pub fn find(&self, addr: u64, seq: u64) -> Option<usize> {
        let mut i = self.ranges.partition_point(|&(s, _, _)| s <= addr);
        let mut first = None;
        while i > 0 && self.max_end[i - 1] > addr {
            i -= 1;
            let (s, e, idx) = self.ranges[i];
            if !(s..e).contains(&addr) {
                continue;
            }
            let m = &self.modules[idx];
            if m.loaded_seq <= seq && m.unloaded_seq.is_none_or(|u| seq < u) {
                return Some(idx);
            }
            first = first.or(Some(idx));
        }
        first
    }
}

/// Why a module record cannot be used, if it cannot.
fn absurd(m: &Module) -> Option<String> {
    if m.ranges.is_empty() {
        return Some("no executable range".into());
    }
    for &(s, e, off) in &m.ranges {
        if s >= e || e - s > MAX_RANGE_BYTES || off.checked_add(e - s).is_none() {
            return Some(format!(
                "absurd range [{s:#x}, {e:#x}) at file offset {off:#x}"
            ));
        }
    }
    None
}

/// The file offset of `addr` in `m` (from the range holding it), if it is in one.
pub fn file_offset(m: &Module, addr: u64) -> Option<u64> {
    m.ranges
        .iter()
        .find(|&&(s, e, _)| (s..e).contains(&addr))
        .map(|&(s, _, off)| off + (addr - s))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn module(id: u32, ranges: Vec<(u64, u64, u64)>, loaded: u64, unloaded: Option<u64>) -> Module {
        Module {
            id,
            path: format!("/lib/m{id}.so"),
            ranges,
            loaded_seq: loaded,
            unloaded_seq: unloaded,
            ..Module::default()
        }
    }

    #[test]
    fn finds_the_module_loaded_at_the_time() {
        let map = ModuleMap::new(&[
            module(0, vec![(0x1000, 0x2000, 0)], 0, None),
            // A library loaded, unloaded, and another at the same place later.
            module(1, vec![(0x10000, 0x20000, 0x1000)], 5, Some(10)),
            module(2, vec![(0x10000, 0x18000, 0)], 12, None),
            // A huge module spanning others.
            module(3, vec![(0x100, 0x1_0000_0000, 0)], 0, None),
        ]);
        assert_eq!(map.find(0x1800, 0), Some(0));
        assert_eq!(map.find(0x11000, 7), Some(1));
        assert_eq!(map.find(0x11000, 13), Some(2));
        assert_eq!(
            map.find(0x19000, 13),
            Some(3),
            "m1 is gone, m3 still covers it"
        );
        assert_eq!(map.find(0x1000_0000, 0), Some(3));
        assert_eq!(map.find(0x50, 0), None);
        assert_eq!(file_offset(&map.modules()[1], 0x10010), Some(0x1010));
        assert!(map.overlapping());
        // Side by side, each its own: a module per address whatever the time.
        let apart = ModuleMap::new(&[
            module(
                0,
                vec![(0x1000, 0x2000, 0), (0x3000, 0x4000, 0x2000)],
                0,
                None,
            ),
            module(1, vec![(0x2000, 0x3000, 0)], 5, Some(10)),
        ]);
        assert!(!apart.overlapping());
        // A later range inside an earlier one that is not its neighbour.
        let nested = ModuleMap::new(&[
            module(0, vec![(0x1000, 0x9000, 0)], 0, None),
            module(1, vec![(0x2000, 0x3000, 0)], 0, None),
            module(2, vec![(0x4000, 0x5000, 0)], 0, None),
        ]);
        assert!(nested.overlapping());
    }

    #[test]
    fn absurd_ranges_leave_the_module_out() {
        let map = ModuleMap::new(&[
            module(0, vec![(0x2000, 0x1000, 0)], 0, None),
            module(1, vec![(0, u64::MAX, 0)], 0, None),
            module(2, vec![(0x1000, 0x2000, u64::MAX)], 0, None),
            module(3, vec![], 0, None),
            module(4, vec![(0x1000, 0x2000, 0)], 0, None),
        ]);
        assert_eq!(map.rejected().len(), 4, "{:?}", map.rejected());
        assert_eq!(map.find(0x1500, 0).map(|i| map.modules()[i].id), Some(4));
        assert_eq!(map.find(0x100, 0), None);
    }
}
