//! Call stacks in a trace (format version 3): the stack trie and the loaded modules.
//!
//! An allocating event's `callsite` is a node of the trace's stack trie: node `id` is (parent,
//! return address), the parent being the calling frame's node (0 for the outermost frame), so a
//! stack is the path from the event's node up to the root, innermost frame first. Each distinct
//! stack is stored once. Nodes are numbered from 1 without gaps and a parent always has a smaller
//! id than its child (it was interned first), which makes cycles impossible and lets a reader check
//! every node as it reads it.
//!
//! [`Module`]s tie addresses to files: path, GNU build-id, load bias and executable ranges, so that
//! symbolization can happen later, on this machine or another with the same files.

use serde::{Deserialize, Serialize};

use crate::varint::{put_u64, unzigzag, zigzag, Cursor};

/// A module (executable or shared library) mapped in the recorded process.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Module {
    /// Number of the module in this trace (from 0, in the order modules were seen).
    pub id: u32,
    /// The file, as the loader named it (the executable's resolved path).
    pub path: String,
    /// GNU build-id, lower-case hex (empty when the module has none).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub build_id: String,
    /// Load bias: runtime address minus the address stated in the file.
    pub bias: u64,
    /// Executable mappings: runtime [start, end) and the file offset of `start`.
    pub ranges: Vec<(u64, u64, u64)>,
    /// The module was loaded before the event with this seq (0: before recording began).
    #[serde(default)]
    pub loaded_seq: u64,
    /// The module was unloaded (dlclose) before the event with this seq.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unloaded_seq: Option<u64>,
}

impl Module {
    /// True when `addr` lies in one of the module's executable ranges.
    pub fn contains(&self, addr: u64) -> bool {
        self.ranges.iter().any(|&(s, e, _)| (s..e).contains(&addr))
    }

    /// The address as stated in the file (what symbolizers look up).
    pub fn file_address(&self, addr: u64) -> u64 {
        addr.wrapping_sub(self.bias)
    }
}

/// Most nodes a trace may claim (64 M: 1 GiB of table); more is a corrupt or crafted file.
pub const MAX_NODES: u32 = 1 << 26;

/// The stack trie of a trace. Node 0 is the root (no frame).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct StackTable {
    parent: Vec<u32>,
    addr: Vec<u64>,
}

impl StackTable {
    pub fn new() -> StackTable {
        StackTable {
            parent: vec![0],
            addr: vec![0],
        }
    }

    /// Nodes in the table (not counting the root).
    pub fn len(&self) -> u32 {
        self.parent.len().saturating_sub(1) as u32
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Adds node `id` = (parent, addr). Refused (false) unless `id` is the next id, the parent is
    /// an earlier node, and the table is under [`MAX_NODES`].
    pub fn push(&mut self, id: u32, parent: u32, addr: u64) -> bool {
        if self.parent.is_empty() {
            *self = StackTable::new();
        }
        let ok = id as usize == self.parent.len() && parent < id && id <= MAX_NODES;
        if ok {
            self.parent.push(parent);
            self.addr.push(addr);
        }
        ok
    }

    /// (parent, return address) of node `id`, if it is in the table.
    pub fn node(&self, id: u32) -> Option<(u32, u64)> {
        (id != 0)
            .then(|| Some((*self.parent.get(id as usize)?, self.addr[id as usize])))
            .flatten()
    }

    /// The return addresses of the stack ending at node `leaf`, innermost first. A node id
    /// outside the table yields nothing.
    pub fn frames(&self, leaf: u32) -> Frames<'_> {
        Frames {
            table: self,
            next: if (leaf as usize) < self.parent.len() {
                leaf
            } else {
                0
            },
        }
    }

    /// Depth of the stack ending at `leaf`.
    pub fn depth(&self, leaf: u32) -> usize {
        self.frames(leaf).count()
    }
}

/// What `info` says about a trace's stacks.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct StackStats {
    /// Nodes in the trie.
    pub nodes: u32,
    /// Distinct stacks allocating calls named.
    pub distinct_stacks: u64,
    /// Mean and largest depth (frames) over the distinct stacks.
    pub mean_depth: f64,
    pub max_depth: usize,
    /// Allocating calls with no stack (it could not be unwound: another stack, no unwind
    /// information, a full trie).
    pub allocations_without_stack: u64,
    pub allocations_with_stack: u64,
    /// Stacks that name a node the table does not hold (damage).
    pub unknown_stacks: u64,
    pub modules: usize,
}

impl StackStats {
    /// The figures for the distinct leaf nodes `ids` of a table.
    pub fn of(
        table: &StackTable,
        ids: impl IntoIterator<Item = u32>,
        modules: usize,
        with: u64,
        without: u64,
    ) -> StackStats {
        let mut s = StackStats {
            nodes: table.len(),
            modules,
            allocations_with_stack: with,
            allocations_without_stack: without,
            ..StackStats::default()
        };
        let mut total = 0usize;
        for id in ids {
            if table.node(id).is_none() {
                s.unknown_stacks += 1;
                continue;
            }
            let d = table.depth(id);
            s.distinct_stacks += 1;
            total += d;
            s.max_depth = s.max_depth.max(d);
        }
        if s.distinct_stacks > 0 {
            s.mean_depth = total as f64 / s.distinct_stacks as f64;
        }
        s
    }
}

/// The frames of one stack, innermost first (see [`StackTable::frames`]).
pub struct Frames<'a> {
    table: &'a StackTable,
    next: u32,
}

impl Iterator for Frames<'_> {
    type Item = u64;

    fn next(&mut self) -> Option<u64> {
        if self.next == 0 {
            return None;
        }
        let id = self.next as usize;
        // Parents are smaller than their children (checked on push): this ends.
        self.next = self.table.parent[id];
        Some(self.table.addr[id])
    }
}

/// Payload of a stack chunk holding nodes `first ..` : two streams, each a varint byte length then
/// its bytes: `id - parent` per node (1 ..= id), then the zigzag delta of each address from the
/// previous one (from 0).
pub fn encode_nodes(first: u32, nodes: &[(u32, u64)], out: &mut Vec<u8>) {
    let mut parents = Vec::with_capacity(nodes.len() * 2);
    let mut addrs = Vec::with_capacity(nodes.len() * 4);
    let mut prev = 0u64;
    for (i, &(parent, addr)) in nodes.iter().enumerate() {
        let id = first + i as u32;
        put_u64(&mut parents, (id - parent) as u64);
        put_u64(&mut addrs, zigzag(addr.wrapping_sub(prev) as i64));
        prev = addr;
    }
    for s in [parents, addrs] {
        put_u64(out, s.len() as u64);
        out.extend_from_slice(&s);
    }
}

/// Decodes `count` nodes from `first` into `table` (which must hold nodes up to `first - 1`).
/// Err says what is wrong; nothing past the first bad node is added.
pub fn decode_nodes(
    raw: &[u8],
    first: u32,
    count: u32,
    table: &mut StackTable,
) -> Result<(), &'static str> {
    let mut c = Cursor::new(raw);
    let mut stream = || {
        let len = c.u64();
        if c.failed() {
            return None;
        }
        c.take(usize::try_from(len).ok()?)
    };
    let (Some(p), Some(a)) = (stream(), stream()) else {
        return Err("stream overruns the payload");
    };
    let (mut parents, mut addrs) = (Cursor::new(p), Cursor::new(a));
    let mut prev = 0u64;
    for i in 0..count {
        let id = first.checked_add(i).ok_or("node id overflows")?;
        let back = parents.u64();
        let addr = prev.wrapping_add(unzigzag(addrs.u64()) as u64);
        prev = addr;
        if back == 0 || back > id as u64 || parents.failed() || addrs.failed() {
            return Err("bad node");
        }
        if !table.push(id, id - back as u32, addr) {
            return Err("node ids not contiguous");
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nodes_round_trip_and_frames_walk_to_the_root() {
        let nodes = [(0, 0x1000), (1, 0x2000), (2, 0x3000), (1, 0x2500)];
        let mut raw = Vec::new();
        encode_nodes(1, &nodes, &mut raw);
        let mut t = StackTable::new();
        decode_nodes(&raw, 1, 4, &mut t).unwrap();
        assert_eq!(t.len(), 4);
        assert_eq!(t.frames(3).collect::<Vec<_>>(), [0x3000, 0x2000, 0x1000]);
        assert_eq!(t.frames(4).collect::<Vec<_>>(), [0x2500, 0x1000]);
        assert_eq!(t.frames(99).count(), 0, "unknown node: no frames");
        // A second chunk continues the numbering.
        let mut raw2 = Vec::new();
        encode_nodes(5, &[(4, 0x9000)], &mut raw2);
        decode_nodes(&raw2, 5, 1, &mut t).unwrap();
        assert_eq!(t.depth(5), 3);
        // Out of order, a parent not earlier, a cut payload: refused.
        assert!(decode_nodes(&raw2, 9, 1, &mut t).is_err());
        let mut bad = Vec::new();
        encode_nodes(6, &[(0, 1)], &mut bad);
        assert!(decode_nodes(&bad[..bad.len() - 1], 6, 1, &mut t).is_err());
        assert!(!t.push(6, 6, 0x1), "a node cannot be its own parent");
    }
}
