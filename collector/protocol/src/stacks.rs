//! The stack trie of a process image, as the shim keeps it: one file per image in the spool
//! directory (private memory without one), mapped shared, so that `record` can recover the nodes of
//! a process that died before writing them.
//!
//! A node is (parent node, return address): the stack of a call is the path from its node (the
//! innermost frame, the caller of malloc) up to a node whose parent is 0 (the outermost frame), as
//! in heaptrack's trace tree. Interning each distinct stack once lets an event carry one small id.
//!
//! | offset | size | field |
//! |---|---|---|
//! | 0 | 8 | magic [`MAGIC`] |
//! | 8 | 4 | pid |
//! | 16 | 8 | image id |
//! | 24 | 8 | capacity in nodes (ids 1 ..= capacity) |
//! | 32 | 8 | hash slots, a power of two |
//! | [`NEXT_AT`] | 8 | the next id to hand out (starts at 1) |
//! | [`HEADER_LEN`] | 16 × (capacity + 1) | node `i` at `HEADER_LEN + 16 i`: parent (u32), 0 (u32), address (u64) |
//! | [`slots_at`] | 4 × slots | hash slots: a node id or 0 |
//!
//! A node is complete once its address is non-zero (stored last, with Release). Ids are handed
//! out before the node is filled, so a reader takes nodes in order up to the first incomplete one.

/// First 8 bytes of a stack file.
pub const MAGIC: [u8; 8] = *b"ASSTACK1";
/// Bytes before node 0.
pub const HEADER_LEN: usize = 4096;
/// Offset of the next-id counter.
pub const NEXT_AT: usize = 64;
/// Bytes per node.
pub const NODE_LEN: usize = 16;
/// Largest capacity a reader accepts.
pub const MAX_NODES: u64 = 1 << 26;

/// Offset of the hash slots for a capacity (page aligned).
pub fn slots_at(capacity: u64) -> usize {
    (HEADER_LEN + (capacity as usize + 1) * NODE_LEN).next_multiple_of(4096)
}

/// Total file size for a capacity and a number of slots.
pub fn file_len(capacity: u64, slots: u64) -> usize {
    slots_at(capacity) + slots as usize * 4
}

/// The header fields a creator writes.
pub fn header_bytes(pid: u32, image: u64, capacity: u64, slots: u64) -> [u8; 40] {
    let mut h = [0u8; 40];
    h[0..8].copy_from_slice(&MAGIC);
    h[8..12].copy_from_slice(&pid.to_le_bytes());
    h[16..24].copy_from_slice(&image.to_le_bytes());
    h[24..32].copy_from_slice(&capacity.to_le_bytes());
    h[32..40].copy_from_slice(&slots.to_le_bytes());
    h
}

/// Where a node and its hash slot go: the slot index to start probing at.
#[inline(always)]
pub fn hash(parent: u32, addr: u64, slots: u64) -> u64 {
    let h = (addr ^ (parent as u64).rotate_left(29)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    (h >> 17) & (slots - 1)
}

/// The file name of an image's stack trie: `<pid>-<image>.stacks`.
pub fn file_name(pid: u32, image: u64) -> String {
    format!("{pid}-{image}.stacks")
}

/// The (pid, image) a stack file name belongs to.
pub fn parse_file_name(name: &str) -> Option<(u32, u64)> {
    let (pid, image) = name.strip_suffix(".stacks")?.split_once('-')?;
    Some((pid.parse().ok()?, image.parse().ok()?))
}

/// One node: (id, parent, return address).
pub type Node = (u32, u32, u64);

/// Reads the complete nodes with ids from `from` on, in id order, up to the first incomplete one.
/// Every field is a claim checked before use.
pub fn read_stack_file(b: &[u8], from: u32) -> Result<Vec<Node>, &'static str> {
    if b.len() < HEADER_LEN || b[0..8] != MAGIC {
        return Err("not a stack file");
    }
    let u64_at = |i: usize| u64::from_le_bytes(b[i..i + 8].try_into().unwrap());
    let capacity = u64_at(24);
    if capacity == 0 || capacity > MAX_NODES {
        return Err("stack file capacity out of range");
    }
    if b.len() < HEADER_LEN + (capacity as usize + 1) * NODE_LEN {
        return Err("stack file shorter than its capacity");
    }
    let next = u64_at(NEXT_AT).min(capacity + 1);
    let mut out = Vec::new();
    for id in from.max(1) as u64..next {
        let at = HEADER_LEN + id as usize * NODE_LEN;
        let parent = u32::from_le_bytes(b[at..at + 4].try_into().unwrap());
        let addr = u64_at(at + 8);
        if addr == 0 || parent as u64 >= id {
            break;
        }
        out.push((id as u32, parent, addr));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn complete_nodes_are_read_up_to_the_first_incomplete_one() {
        let capacity = 8;
        let mut b = vec![0u8; file_len(capacity, 16)];
        b[..40].copy_from_slice(&header_bytes(1, 2, capacity, 16));
        b[NEXT_AT..NEXT_AT + 8].copy_from_slice(&5u64.to_le_bytes());
        let mut put = |id: usize, parent: u32, addr: u64| {
            let at = HEADER_LEN + id * NODE_LEN;
            b[at..at + 4].copy_from_slice(&parent.to_le_bytes());
            b[at + 8..at + 16].copy_from_slice(&addr.to_le_bytes());
        };
        put(1, 0, 0x1000);
        put(2, 1, 0x2000);
        put(4, 2, 0x4000); // 3 is still being written
        assert_eq!(
            read_stack_file(&b, 1).unwrap(),
            vec![(1, 0, 0x1000), (2, 1, 0x2000)]
        );
        assert_eq!(read_stack_file(&b, 2).unwrap(), vec![(2, 1, 0x2000)]);
        assert!(read_stack_file(&b[..100], 1).is_err());
        assert_eq!(parse_file_name(&file_name(7, 99)), Some((7, 99)));
    }
}
