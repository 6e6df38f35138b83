//! Record rings: what a hook appends, and the layout of a ring file.
//!
//! Each recording thread of the shim owns a single-producer, single-consumer ring of fixed-size
//! [`Record`]s. With a spool directory ([`crate::env::SPOOL`]) the ring lives in a file there, mapped
//! shared, so that the records survive the process: after a process dies (SIGKILL included),
//! `record` reads the pending records of its ring files and adds them to its trace. A ring file is
//! a [`HEADER_LEN`]-byte header followed by `cap` records of [`RECORD_LEN`] bytes; slot `i` of the
//! ring is record `i & (cap - 1)`.
//!
//! | offset | size | field | written by |
//! |---|---|---|---|
//! | 0 | 8 | magic [`MAGIC`] | creator |
//! | 8 | 4 | pid of the process image | creator |
//! | 12 | 4 | ring number within the image | creator |
//! | 16 | 8 | image id (unique per process image) | creator |
//! | 24 | 8 | cap: records, a power of two | creator |
//! | 32 | 4 | generation (a ring that grew lives in a new file with the next one) | creator |
//! | 40 | 8 | the image's clock origin (the raw stamp of its time 0) | creator |
//! | [`HEAD_AT`] | 8 | head: records appended so far | producer (Release) |
//! | [`INFLIGHT_AT`] | 8 | a lower bound of the seq the producer is taking or holds uncommitted (`u64::MAX`: none) | producer (Release) |
//! | [`TAIL_AT`] | 8 | tail: records written to the trace file so far | writer (Release) |
//!
//! Invariants: `tail <= head <= tail + cap`; records in `[tail, head)` are complete (`head` is
//! stored after the record) and not yet in the trace file; records below `tail` are in it. A
//! process killed between writing a chunk and moving `tail` leaves records that are in both:
//! recovery drops the seqs the trace already holds.

/// First 8 bytes of a ring file.
pub const MAGIC: [u8; 8] = *b"ASRING2\0";
/// Bytes before the first record.
pub const HEADER_LEN: usize = 4096;
/// Bytes per record.
pub const RECORD_LEN: usize = 64;
/// Offset of `head` in the header (its own cache line with the producer's other fields).
pub const HEAD_AT: usize = 64;
/// Offset of the producer's in-flight watermark in the header.
pub const INFLIGHT_AT: usize = 80;
/// Offset of `tail` in the header (its own cache line: the writer's).
pub const TAIL_AT: usize = 128;
/// Largest ring a reader accepts (records): 16 M records, 1 GiB.
pub const MAX_CAP: u64 = 1 << 24;

/// One allocator call as the hook saw it (64 bytes, one cache line).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[repr(C)]
pub struct Record {
    pub seq: u64,
    /// Raw clock stamp before the real call.
    pub start: u64,
    /// Raw clock ticks spent in the real call (saturated).
    pub ticks: u32,
    /// What call it was, packed (build it with [`Record::call`], read it with [`Record::op`],
    /// [`Record::failed`] and [`Record::window`]): the `traces::Op` code in bits 24–30, bit 31 set
    /// for a failed call, and in bits 0–23 the realloc *window*: `seq` minus the value of the
    /// sequence counter when the call began, saturated at [`WINDOW_MAX`], so that
    /// [`crate::order`] knows which other calls ran while it moved the block. (16 bits were too
    /// few: a realloc preempted on a busy machine saw over 100 000 calls of other threads.)
    pub call: u32,
    /// Address returned (0 for none or failure).
    pub addr: u64,
    /// Address passed in (free, realloc, reallocarray).
    pub old_addr: u64,
    /// Requested bytes (element bytes for calloc / reallocarray).
    pub size: u64,
    /// Element count (calloc, reallocarray) or alignment (aligned ops).
    pub extra: u64,
    /// Recorder's thread number.
    pub thread: u32,
    /// The call's stack: a node of the image's stack trie (0: no stack).
    pub stack: u32,
}

const _: () = assert!(std::mem::size_of::<Record>() == RECORD_LEN);

/// The widest realloc window a record holds (24 bits).
pub const WINDOW_MAX: u64 = (1 << 24) - 1;
const FAILED_BIT: u32 = 1 << 31;

impl Record {
    /// The packed [`Record::call`] word: `op` (a `traces::Op` code, below 128), whether the call
    /// failed, and the realloc window (saturated at [`WINDOW_MAX`]; 0 for other calls).
    #[inline(always)]
    pub const fn call(op: u8, failed: bool, window: u64) -> u32 {
        let window = if window > WINDOW_MAX {
            WINDOW_MAX
        } else {
            window
        } as u32;
        ((op as u32 & 0x7f) << 24) | if failed { FAILED_BIT } else { 0 } | window
    }

    /// The `traces::Op` code.
    pub fn op(&self) -> u8 {
        ((self.call >> 24) & 0x7f) as u8
    }

    /// Whether the call failed.
    pub fn failed(&self) -> bool {
        self.call & FAILED_BIT != 0
    }

    /// The realloc window (0 for other calls).
    pub fn window(&self) -> u32 {
        self.call & WINDOW_MAX as u32
    }

    /// Decodes a record from its in-memory bytes (little-endian x86-64 layout of the struct).
    pub fn from_bytes(b: &[u8; RECORD_LEN]) -> Record {
        let u64_at = |i: usize| u64::from_le_bytes(b[i..i + 8].try_into().unwrap());
        let u32_at = |i: usize| u32::from_le_bytes(b[i..i + 4].try_into().unwrap());
        Record {
            seq: u64_at(0),
            start: u64_at(8),
            ticks: u32_at(16),
            call: u32_at(20),
            addr: u64_at(24),
            old_addr: u64_at(32),
            size: u64_at(40),
            extra: u64_at(48),
            thread: u32_at(56),
            stack: u32_at(60),
        }
    }

    /// The record's in-memory bytes (the inverse of [`Record::from_bytes`]).
    pub fn to_bytes(&self) -> [u8; RECORD_LEN] {
        let mut raw = [0u8; RECORD_LEN];
        raw[0..8].copy_from_slice(&self.seq.to_le_bytes());
        raw[8..16].copy_from_slice(&self.start.to_le_bytes());
        raw[16..20].copy_from_slice(&self.ticks.to_le_bytes());
        raw[20..24].copy_from_slice(&self.call.to_le_bytes());
        raw[24..32].copy_from_slice(&self.addr.to_le_bytes());
        raw[32..40].copy_from_slice(&self.old_addr.to_le_bytes());
        raw[40..48].copy_from_slice(&self.size.to_le_bytes());
        raw[48..56].copy_from_slice(&self.extra.to_le_bytes());
        raw[56..60].copy_from_slice(&self.thread.to_le_bytes());
        raw[60..64].copy_from_slice(&self.stack.to_le_bytes());
        raw
    }
}

/// What a ring file says about itself and the records it still holds for the trace.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RingFile {
    pub pid: u32,
    pub ring_no: u32,
    pub image: u64,
    pub generation: u32,
    /// Raw clock stamp of the image's time 0.
    pub origin: u64,
    pub head: u64,
    pub tail: u64,
    /// The producer was inside a hook taking a seq at or above this (None: it was not).
    pub inflight: Option<u64>,
    /// Records `[tail, head)`, oldest first.
    pub pending: Vec<Record>,
}

/// Reads a ring file's bytes. Every field is a claim checked before use.
pub fn read_ring_file(b: &[u8]) -> Result<RingFile, &'static str> {
    if b.len() < HEADER_LEN || b[0..8] != MAGIC {
        return Err("not a ring file");
    }
    let u64_at = |i: usize| u64::from_le_bytes(b[i..i + 8].try_into().unwrap());
    let u32_at = |i: usize| u32::from_le_bytes(b[i..i + 4].try_into().unwrap());
    let cap = u64_at(24);
    if !cap.is_power_of_two() || cap > MAX_CAP {
        return Err("ring capacity out of range");
    }
    if (b.len() as u64) < HEADER_LEN as u64 + cap * RECORD_LEN as u64 {
        return Err("ring file shorter than its capacity");
    }
    let (head, tail) = (u64_at(HEAD_AT), u64_at(TAIL_AT));
    if tail > head || head - tail > cap {
        return Err("ring head and tail out of range");
    }
    let pending = (tail..head)
        .map(|i| {
            let at = HEADER_LEN + (i & (cap - 1)) as usize * RECORD_LEN;
            Record::from_bytes(b[at..at + RECORD_LEN].try_into().unwrap())
        })
        .collect();
    Ok(RingFile {
        pid: u32_at(8),
        ring_no: u32_at(12),
        image: u64_at(16),
        generation: u32_at(32),
        origin: u64_at(40),
        head,
        tail,
        inflight: Some(u64_at(INFLIGHT_AT)).filter(|&w| w != u64::MAX),
        pending,
    })
}

/// The header fields a creator writes, as bytes (the rest of the header page is zero).
pub fn header_bytes(
    pid: u32,
    ring_no: u32,
    image: u64,
    cap: u64,
    generation: u32,
    origin: u64,
) -> [u8; 48] {
    let mut h = [0u8; 48];
    h[0..8].copy_from_slice(&MAGIC);
    h[8..12].copy_from_slice(&pid.to_le_bytes());
    h[12..16].copy_from_slice(&ring_no.to_le_bytes());
    h[16..24].copy_from_slice(&image.to_le_bytes());
    h[24..32].copy_from_slice(&cap.to_le_bytes());
    h[32..36].copy_from_slice(&generation.to_le_bytes());
    h[40..48].copy_from_slice(&origin.to_le_bytes());
    h
}

/// The file name of a ring: `<pid>-<image>-<ring>-<generation>.ring` (decimal).
pub fn file_name(pid: u32, image: u64, ring_no: u32, generation: u32) -> String {
    format!("{pid}-{image}-{ring_no}-{generation}.ring")
}

/// Writes [`file_name`] into `out` without allocating (for the shim's hooks); returns its length,
/// or None when it does not fit.
pub fn write_file_name(
    out: &mut [u8],
    pid: u32,
    image: u64,
    ring_no: u32,
    generation: u32,
) -> Option<usize> {
    let mut n = 0;
    let mut put = |bytes: &[u8]| -> Option<()> {
        out.get_mut(n..n + bytes.len())?.copy_from_slice(bytes);
        n += bytes.len();
        Some(())
    };
    let mut digits = [0u8; 20];
    put(decimal(pid as u64, &mut digits))?;
    put(b"-")?;
    put(decimal(image, &mut digits))?;
    put(b"-")?;
    put(decimal(ring_no as u64, &mut digits))?;
    put(b"-")?;
    put(decimal(generation as u64, &mut digits))?;
    put(b".ring")?;
    Some(n)
}

fn decimal(mut v: u64, buf: &mut [u8; 20]) -> &[u8] {
    let mut i = buf.len();
    loop {
        i -= 1;
        buf[i] = b'0' + (v % 10) as u8;
        v /= 10;
        if v == 0 {
            return &buf[i..];
        }
    }
}

/// The (pid, image) a ring file name belongs to.
pub fn parse_file_name(name: &str) -> Option<(u32, u64)> {
    let stem = name.strip_suffix(".ring")?;
    let mut parts = stem.split('-');
    let pid = parts.next()?.parse().ok()?;
    let image = parts.next()?.parse().ok()?;
    let _ring: u32 = parts.next()?.parse().ok()?;
    let _gen: u32 = parts.next()?.parse().ok()?;
    parts.next().is_none().then_some((pid, image))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ring_bytes(cap: u64, head: u64, tail: u64, records: &[(u64, Record)]) -> Vec<u8> {
        let mut b = vec![0u8; HEADER_LEN + cap as usize * RECORD_LEN];
        b[..48].copy_from_slice(&header_bytes(7, 2, 99, cap, 1, 555));
        b[HEAD_AT..HEAD_AT + 8].copy_from_slice(&head.to_le_bytes());
        b[TAIL_AT..TAIL_AT + 8].copy_from_slice(&tail.to_le_bytes());
        b[INFLIGHT_AT..INFLIGHT_AT + 8].copy_from_slice(&u64::MAX.to_le_bytes());
        for (i, r) in records {
            let at = HEADER_LEN + (i & (cap - 1)) as usize * RECORD_LEN;
            b[at..at + RECORD_LEN].copy_from_slice(&r.to_bytes());
        }
        b
    }

    #[test]
    fn pending_records_are_read_across_the_wrap() {
        let rec = |seq| Record {
            seq,
            addr: 0x1000 + seq,
            size: seq * 2,
            thread: 3,
            call: Record::call(1, false, 1),
            stack: 7,
            ..Record::default()
        };
        // cap 4, tail 6, head 9: slots 2, 3, 0.
        let b = ring_bytes(4, 9, 6, &[(6, rec(60)), (7, rec(70)), (8, rec(80))]);
        let f = read_ring_file(&b).unwrap();
        assert_eq!(
            (f.pid, f.ring_no, f.image, f.generation, f.origin),
            (7, 2, 99, 1, 555)
        );
        assert_eq!(f.pending, vec![rec(60), rec(70), rec(80)]);
    }

    #[test]
    fn lying_headers_are_refused() {
        let mut b = ring_bytes(4, 9, 6, &[]);
        assert!(read_ring_file(&b[..100]).is_err());
        b[HEAD_AT..HEAD_AT + 8].copy_from_slice(&20u64.to_le_bytes());
        assert_eq!(read_ring_file(&b), Err("ring head and tail out of range"));
        let b = ring_bytes(4, 9, 6, &[]);
        let mut big = b.clone();
        big[24..32].copy_from_slice(&(1u64 << 40).to_le_bytes());
        assert_eq!(read_ring_file(&big), Err("ring capacity out of range"));
        assert!(read_ring_file(&b[..HEADER_LEN + 10]).is_err());
    }

    #[test]
    fn file_names_written_without_allocating_match_and_parse() {
        let mut buf = [0u8; 64];
        let n = write_file_name(&mut buf, 4242, u64::MAX, 3, 0).unwrap();
        let name = std::str::from_utf8(&buf[..n]).unwrap();
        assert_eq!(name, file_name(4242, u64::MAX, 3, 0));
        assert_eq!(parse_file_name(name), Some((4242, u64::MAX)));
        assert_eq!(write_file_name(&mut buf[..10], 4242, 1, 1, 1), None);
        assert_eq!(parse_file_name("1-2-3.ring"), None);
    }
}

#[cfg(test)]
mod layout_tests {
    use super::*;
    use std::mem::offset_of;

    #[test]
    fn the_byte_form_is_the_struct_as_it_lies_in_memory() {
        // The shim writes the struct itself into the ring file; recovery reads bytes at these
        // offsets.
        let offsets = [
            (offset_of!(Record, seq), 0),
            (offset_of!(Record, start), 8),
            (offset_of!(Record, ticks), 16),
            (offset_of!(Record, call), 20),
            (offset_of!(Record, addr), 24),
            (offset_of!(Record, old_addr), 32),
            (offset_of!(Record, size), 40),
            (offset_of!(Record, extra), 48),
            (offset_of!(Record, thread), 56),
            (offset_of!(Record, stack), 60),
        ];
        for (got, want) in offsets {
            assert_eq!(got, want);
        }
        let r = Record {
            seq: 1,
            start: 2,
            ticks: 3,
            call: Record::call(5, true, 4),
            addr: 7,
            old_addr: 8,
            size: 9,
            extra: 10,
            thread: 11,
            stack: 12,
        };
        assert_eq!(Record::from_bytes(&r.to_bytes()), r);
        assert_eq!((r.op(), r.failed(), r.window()), (5, true, 4));
    }

    #[test]
    fn the_call_word_keeps_each_part_and_saturates_the_window() {
        for op in [0u8, 1, 13, 127] {
            for failed in [false, true] {
                for (window, want) in [(0, 0), (111_000, 111_000), (u64::MAX, WINDOW_MAX as u32)] {
                    let r = Record {
                        call: Record::call(op, failed, window),
                        ..Record::default()
                    };
                    assert_eq!((r.op(), r.failed(), r.window()), (op, failed, want));
                }
            }
        }
    }
}
