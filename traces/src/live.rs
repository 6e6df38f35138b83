//! The live-address set and the one anomaly rule.
//!
//! Every tool that follows a trace's heap (`info`'s statistics, `replay`'s compiler, `report`'s
//! analysis, `export`'s object ids, the call-site views) feeds the events, in `seq` order, to a
//! [`LiveSet`] and acts on the [`Step`] it returns. The set decides, in one place, which blocks
//! are live after each event and which events are anomalies, so the tools cannot disagree about
//! the same trace.
//!
//! ## The rule, per event
//! 1. A failed call ([`Event::failed_call`]) allocates nothing; a failed `realloc` leaves its
//!    block live. `realloc(p, 0)` returning NULL is a free of `p` (glibc frees and returns
//!    NULL), never a failed call, whether or not the recorder marked it failed.
//! 2. The address a call passes in (`free`, `realloc`, `reallocarray`; NULL aside) must be live.
//!    It is then released ([`Event::releases`]) or kept (a failed realloc). When it is not live
//!    the event is an anomaly and nothing is released: a *double free* when the address was freed
//!    and not allocated again since, an *unknown free* when the trace never allocated it, or, in
//!    the trace of a fork child ([`crate::Header::forked_from`]), an *inherited free* (the block
//!    came from the parent's heap; not an error).
//! 3. An allocation ([`Event::allocates`]) makes its address live. When the address is still
//!    live, the old block's free was not recorded (a *missed free*): the old block is retired
//!    first, as if freed just before.
//!
//! ## Cost
//! One hash lookup per address an event names (two for a realloc), in one map keyed by address
//! whose entries are live blocks (requested bytes and the caller's payload, nothing else) or
//! tombstones (freed addresses, which tell a double free from an unknown one). Tombstones are forgotten all at once when they outnumber both the live blocks and
//! [`TOMBSTONE_FLOOR`], so memory follows the live heap, not the trace's length (a trace of
//! fresh addresses, such as an imported CSV, would otherwise keep one per free). A double free of
//! a forgotten address then counts as an unknown free (inherited in a fork child): the same in
//! every tool, since the rule depends on the events alone.
//!
//! The map is hashed by [`AddrHasher`], which keeps neighbouring addresses in neighbouring
//! slots: an allocator hands out addresses in runs and a program frees what it allocated
//! recently, so most lookups land in table memory a recent one touched (a hash that scatters
//! every address made the lookups of a large live set cache misses, most of `report`'s pass).

use std::collections::hash_map::Entry as MapEntry;
use std::collections::HashMap;
use std::fmt;
use std::hash::{BuildHasherDefault, Hasher};

use serde::Serialize;

use crate::event::Event;

/// Tombstones kept at least (see the module comment): 2^16 freed addresses, a few MiB.
pub const TOMBSTONE_FLOOR: usize = 1 << 16;

/// A live block: the bytes it was asked for, and what the caller keeps with it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Block<T> {
    /// Bytes the allocating call asked for ([`Event::requested_bytes`]).
    pub requested_bytes: u64,
    /// The caller's payload: a replay slot, a placement, the allocating event's [`Birth`] for
    /// an attribution. `T::default()` until the caller fills it through [`Step::born`]. Only what
    /// a tool keeps costs memory in the map every event touches.
    pub data: T,
}

/// What an attribution needs to know of the event that returned a block: a payload for
/// [`Block::data`] (`born.data = Birth::of(ev)`), alone or inside the caller's own.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Birth {
    /// `seq` of the event that returned the block (for a resized block: the realloc).
    pub seq: u64,
    /// Recorder thread of that event.
    pub thread: u32,
    /// Call-site id of that event, when the trace has one.
    pub callsite: Option<u32>,
}

impl Birth {
    pub fn of(ev: &Event) -> Birth {
        Birth {
            seq: ev.seq,
            thread: ev.thread,
            callsite: ev.callsite,
        }
    }
}

/// Hashes a heap address for the live set's map (see the module comment).
///
/// The table's slot is the low bits of the hash and its tag (the byte a probe compares first)
/// the top seven. Addresses in one [`AddrHasher::RUN_BYTES`] run get consecutive slots, one per
/// 16 bytes (malloc's alignment), from a base that is a multiplicative hash of the run's number
/// (so runs, and allocators' aligned regions, spread over the whole table); the tag is a
/// multiplicative hash of the whole address by another constant, so the entries of one run, or
/// of one group of slots, differ in it.
///
/// What it costs (2 M inserts, lookups and removals of a map with 64-byte entries, against
/// FxHash, 2026-12-02, 2 vCPU AMD EPYC vm, shared): addresses 16 or 48 bytes apart 0.55-0.75x
/// the time, random addresses 1.0-1.2x, addresses 1 KiB, 4 KiB or 2 MiB apart (every one in its
/// own run) 1.1-1.2x.
#[derive(Clone, Copy, Debug, Default)]
pub struct AddrHasher(u64);

impl AddrHasher {
    /// Bytes of address space whose addresses get consecutive slots: 64 slots of 16 bytes.
    pub const RUN_BYTES: u64 = 1 << 10;
    /// 2^64 divided by the golden ratio (Knuth's multiplicative hashing), odd.
    const K: u64 = 0x9e37_79b9_7f4a_7c15;
    /// The fractional part of the square root of 2 (SHA-512's first initial word), made odd.
    const TAG_K: u64 = 0x6a09_e667_f3bc_c909;
    /// The bits hashbrown takes the tag from.
    const TAG_BITS: u64 = 0x7f << 57;

    #[inline]
    pub fn addr_hash(addr: u64) -> u64 {
        let run = addr / Self::RUN_BYTES;
        // The product's high bits depend on every bit of the run number: rotate them down to
        // where the slot is taken from.
        let base = run.wrapping_mul(Self::K).rotate_left(26);
        let slot = base.wrapping_add((addr % Self::RUN_BYTES) / 16);
        // Consecutive 16-byte units step the product by TAG_K: its spacing gives the 64 units
        // of a run 64 distinct tags. Not K: for aligned addresses (2 MiB apart) the tag's bits
        // were then bits of the slot, so that every entry of a group had the same tag (3.3x
        // slower than FxHash in a table of 2 M such addresses).
        let tag = (addr / 16).wrapping_mul(Self::TAG_K) & Self::TAG_BITS;
        (slot & !Self::TAG_BITS) | tag
    }
}

impl Hasher for AddrHasher {
    #[inline]
    fn write_u64(&mut self, addr: u64) {
        self.0 = Self::addr_hash(addr);
    }

    /// Only `u64` keys are hashed here; anything else is folded in a byte at a time.
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0.rotate_left(8) ^ b as u64).wrapping_mul(Self::K);
        }
    }

    #[inline]
    fn finish(&self) -> u64 {
        self.0
    }
}

/// The live set's map: address -> entry, hashed by [`AddrHasher`].
type AddrMap<T> = HashMap<u64, T, BuildHasherDefault<AddrHasher>>;

/// One map entry: a live block, or the tombstone of a freed address.
#[derive(Clone, Copy, Debug)]
enum Entry<T> {
    Live(Block<T>),
    Freed,
}

/// One kind of anomaly.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Anomaly {
    /// The call failed (NULL, or an error from `posix_memalign`). Not `realloc(p, 0)`.
    FailedCall,
    /// A free or realloc of an address the trace never allocated.
    UnknownFree,
    /// A free or realloc of an address already freed and not allocated since.
    DoubleFree,
    /// In a fork child's trace, a free or realloc of an address the trace never allocated: a
    /// block inherited from the parent. Expected, not an error.
    InheritedFree,
    /// An allocation returned an address still live: the old block's free was not recorded
    /// (it is retired as if freed just before).
    MissedFree,
}

impl Anomaly {
    /// A short phrase for messages ("double free").
    pub fn what(self) -> &'static str {
        match self {
            Anomaly::FailedCall => "failed call",
            Anomaly::UnknownFree => "free of an address never allocated in the trace",
            Anomaly::DoubleFree => "double free",
            Anomaly::InheritedFree => "free of a block inherited from the parent process",
            Anomaly::MissedFree => "allocation at a live address (its free was not recorded)",
        }
    }

    /// True for what a correct recording of a correct program never holds (unknown, double and
    /// missed frees); false for failed calls and inherited frees.
    pub fn is_inconsistency(self) -> bool {
        matches!(
            self,
            Anomaly::UnknownFree | Anomaly::DoubleFree | Anomaly::MissedFree
        )
    }

    /// The address the anomaly is about: the one passed in, or (missed free) the one returned.
    pub fn address(self, ev: &Event) -> u64 {
        match self {
            Anomaly::MissedFree => ev.addr,
            Anomaly::FailedCall if !ev.op.takes_address() => ev.addr,
            _ => ev.old_addr,
        }
    }
}

impl fmt::Display for Anomaly {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.what())
    }
}

/// Counts of each [`Anomaly`] over a trace: the same numbers in `info`, `replay` and `report`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Anomalies {
    pub failed_calls: u64,
    pub unknown_frees: u64,
    pub double_frees: u64,
    pub inherited_frees: u64,
    pub missed_frees: u64,
}

impl Anomalies {
    fn add(&mut self, kind: Anomaly) {
        *match kind {
            Anomaly::FailedCall => &mut self.failed_calls,
            Anomaly::UnknownFree => &mut self.unknown_frees,
            Anomaly::DoubleFree => &mut self.double_frees,
            Anomaly::InheritedFree => &mut self.inherited_frees,
            Anomaly::MissedFree => &mut self.missed_frees,
        } += 1;
    }

    /// Unknown, double and missed frees: what a correct recording of a correct program never
    /// holds ([`Anomaly::is_inconsistency`]).
    pub fn inconsistencies(&self) -> u64 {
        self.unknown_frees + self.double_frees + self.missed_frees
    }

    /// The anomalies met after `earlier` was taken (counts of the same set at an earlier point).
    pub fn since(&self, earlier: &Anomalies) -> Anomalies {
        Anomalies {
            failed_calls: self.failed_calls.saturating_sub(earlier.failed_calls),
            unknown_frees: self.unknown_frees.saturating_sub(earlier.unknown_frees),
            double_frees: self.double_frees.saturating_sub(earlier.double_frees),
            inherited_frees: self.inherited_frees.saturating_sub(earlier.inherited_frees),
            missed_frees: self.missed_frees.saturating_sub(earlier.missed_frees),
        }
    }
}

/// Lists the kinds that occurred ("2 failed calls, 1 double free"), or says "none".
impl fmt::Display for Anomalies {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kinds = [
            (self.failed_calls, "failed call", "failed calls"),
            (self.unknown_frees, "unknown free", "unknown frees"),
            (self.double_frees, "double free", "double frees"),
            (self.missed_frees, "missed free", "missed frees"),
            (self.inherited_frees, "inherited free", "inherited frees"),
        ];
        let mut first = true;
        for (n, one, many) in kinds {
            if n > 0 {
                let sep = if first { "" } else { ", " };
                write!(f, "{sep}{n} {}", if n == 1 { one } else { many })?;
                first = false;
            }
        }
        if first {
            f.write_str("none")?;
        }
        Ok(())
    }
}

/// What became of the address an event passed in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Passed<T> {
    /// None was passed (NULL, or an op that takes none).
    Nothing,
    /// A live block, which the event released (a free, or the old block of a realloc).
    Released(Block<T>),
    /// A live block that a failed realloc left live.
    Kept(Block<T>),
    /// The address was not live: an unknown, double or inherited free.
    NotLive(Anomaly),
}

/// What one event did to the live set ([`LiveSet::step`]).
#[derive(Debug)]
pub struct Step<'s, T> {
    /// The call failed ([`Event::failed_call`]).
    pub failed: bool,
    pub passed: Passed<T>,
    /// The block that was live at the address the event returned (a missed free): retired.
    pub displaced: Option<Block<T>>,
    /// The block the event allocated, live in the set; its `data` is the caller's to fill.
    pub born: Option<&'s mut Block<T>>,
}

impl<T> Step<'_, T> {
    /// The anomalies of this event, in the order they happened: the failure, then the address
    /// passed in, then the address returned. At most two.
    pub fn anomalies(&self) -> impl Iterator<Item = Anomaly> + 'static {
        let failed = self.failed.then_some(Anomaly::FailedCall);
        let passed = match self.passed {
            Passed::NotLive(a) => Some(a),
            _ => None,
        };
        let missed = self.displaced.is_some().then_some(Anomaly::MissedFree);
        failed.into_iter().chain(passed).chain(missed)
    }
}

/// The blocks live at one point of a trace, and the anomalies met so far.
#[derive(Clone, Debug, Default)]
pub struct LiveSet<T> {
    map: AddrMap<Entry<T>>,
    live: usize,
    tombstones: usize,
    /// The trace is a fork child's: unknown addresses are inherited blocks.
    forked: bool,
    counts: Anomalies,
    live_bytes: u64,
    peak_live_bytes: u64,
}

impl<T: Copy + Default> LiveSet<T> {
    /// An empty set for a trace whose header says `forked_from` (the parent's pid in a fork
    /// child's trace, whose frees of blocks it never allocated are inherited frees).
    pub fn new(forked_from: Option<u32>) -> LiveSet<T> {
        LiveSet {
            map: AddrMap::default(),
            live: 0,
            tombstones: 0,
            forked: forked_from.is_some(),
            counts: Anomalies::default(),
            live_bytes: 0,
            peak_live_bytes: 0,
        }
    }

    /// Applies the next event (events must come in `seq` order) and says what it did.
    #[inline]
    pub fn step(&mut self, ev: &Event) -> Step<'_, T> {
        if self.tombstones > self.live.max(TOMBSTONE_FLOOR) {
            self.forget_tombstones();
        }
        let failed = ev.failed_call();
        if failed {
            self.counts.failed_calls += 1;
        }
        let passed = if ev.op.takes_address() && ev.old_addr != 0 {
            self.pass(ev)
        } else {
            Passed::Nothing
        };
        let (displaced, born) = if ev.allocates() {
            let (displaced, born) = self.allocate(ev);
            (displaced, Some(born))
        } else {
            (None, None)
        };
        Step {
            failed,
            passed,
            displaced,
            born,
        }
    }

    /// The address passed in: release it, keep it, or count why it is not live.
    #[inline]
    fn pass(&mut self, ev: &Event) -> Passed<T> {
        let anomaly = match self.map.get_mut(&ev.old_addr) {
            Some(entry @ Entry::Live(_)) => {
                if !ev.releases() {
                    let Entry::Live(b) = *entry else {
                        unreachable!()
                    };
                    return Passed::Kept(b);
                }
                let Entry::Live(b) = std::mem::replace(entry, Entry::Freed) else {
                    unreachable!()
                };
                self.live -= 1;
                self.tombstones += 1;
                self.live_bytes -= b.requested_bytes;
                return Passed::Released(b);
            }
            Some(Entry::Freed) => Anomaly::DoubleFree,
            None if self.forked => Anomaly::InheritedFree,
            None => Anomaly::UnknownFree,
        };
        self.counts.add(anomaly);
        Passed::NotLive(anomaly)
    }

    /// The address returned: make it live, retiring a block still live there.
    #[inline]
    fn allocate(&mut self, ev: &Event) -> (Option<Block<T>>, &mut Block<T>) {
        let block = Block {
            requested_bytes: ev.requested_bytes(),
            data: T::default(),
        };
        let (displaced, entry) = match self.map.entry(ev.addr) {
            MapEntry::Vacant(v) => (None, v.insert(Entry::Live(block))),
            MapEntry::Occupied(o) => {
                let entry = o.into_mut();
                match std::mem::replace(entry, Entry::Live(block)) {
                    Entry::Freed => {
                        self.tombstones -= 1;
                        (None, entry)
                    }
                    Entry::Live(old) => {
                        self.live -= 1;
                        self.live_bytes -= old.requested_bytes;
                        self.counts.add(Anomaly::MissedFree);
                        (Some(old), entry)
                    }
                }
            }
        };
        self.live += 1;
        self.live_bytes += block.requested_bytes;
        self.peak_live_bytes = self.peak_live_bytes.max(self.live_bytes);
        let Entry::Live(born) = entry else {
            unreachable!("the entry was just made live")
        };
        (displaced, born)
    }

    /// Drops every tombstone (see the module comment): amortised over at least
    /// [`TOMBSTONE_FLOOR`] frees.
    #[cold]
    #[inline(never)]
    fn forget_tombstones(&mut self) {
        self.map.retain(|_, e| matches!(e, Entry::Live(_)));
        self.tombstones = 0;
    }

    /// The live block at `addr`, if any.
    pub fn get(&self, addr: u64) -> Option<&Block<T>> {
        match self.map.get(&addr) {
            Some(Entry::Live(b)) => Some(b),
            _ => None,
        }
    }

    /// Every live block with its address, in no particular order (what leaked at the end).
    pub fn iter(&self) -> impl Iterator<Item = (u64, &Block<T>)> {
        self.map.iter().filter_map(|(&a, e)| match e {
            Entry::Live(b) => Some((a, b)),
            Entry::Freed => None,
        })
    }

    /// Blocks live now.
    pub fn len(&self) -> usize {
        self.live
    }

    pub fn is_empty(&self) -> bool {
        self.live == 0
    }

    /// Requested bytes of the blocks live now.
    pub fn live_requested_bytes(&self) -> u64 {
        self.live_bytes
    }

    /// The largest [`Self::live_requested_bytes`] after any event so far.
    pub fn peak_live_requested_bytes(&self) -> u64 {
        self.peak_live_bytes
    }

    /// The anomalies met so far.
    pub fn anomalies(&self) -> &Anomalies {
        &self.counts
    }

    /// True when the set counts frees of unknown addresses as inherited (a fork child's trace).
    pub fn is_fork_child(&self) -> bool {
        self.forked
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::Op;

    fn ev(seq: u64, op: Op, addr: u64, old_addr: u64, size: u64) -> Event {
        let mut e = Event::new(op);
        e.seq = seq;
        e.addr = addr;
        e.old_addr = old_addr;
        e.size = size;
        e
    }

    fn failed(mut e: Event) -> Event {
        e.failed = true;
        e
    }

    /// What one step says, as (anomalies, released seq, kept seq, displaced seq, born).
    type Seen = (Vec<Anomaly>, Option<u64>, Option<u64>, Option<u64>, bool);

    fn seen(set: &mut LiveSet<Birth>, e: &Event) -> Seen {
        let s = set.step(e);
        let (released, kept) = match s.passed {
            Passed::Released(b) => (Some(b.data.seq), None),
            Passed::Kept(b) => (None, Some(b.data.seq)),
            _ => (None, None),
        };
        let seen = (
            s.anomalies().collect(),
            released,
            kept,
            s.displaced.map(|b| b.data.seq),
            s.born.is_some(),
        );
        if let Some(b) = s.born {
            b.data = Birth::of(e);
        }
        seen
    }

    #[test]
    fn the_rule_event_by_event() {
        use Anomaly::*;
        let mut set = LiveSet::<Birth>::new(None);
        let none: Vec<Anomaly> = vec![];
        let table: Vec<(Event, Seen)> = vec![
            (
                ev(0, Op::Malloc, 0x10, 0, 8),
                (none.clone(), None, None, None, true),
            ),
            (
                ev(1, Op::Free, 0, 0x10, 0),
                (none.clone(), Some(0), None, None, false),
            ),
            (
                ev(2, Op::Free, 0, 0x10, 0),
                (vec![DoubleFree], None, None, None, false),
            ),
            (
                ev(3, Op::Free, 0, 0x99, 0),
                (vec![UnknownFree], None, None, None, false),
            ),
            (
                ev(4, Op::Free, 0, 0, 0),
                (none.clone(), None, None, None, false),
            ),
            (
                failed(ev(5, Op::Malloc, 0, 0, 1 << 40)),
                (vec![FailedCall], None, None, None, false),
            ),
            (
                ev(6, Op::Malloc, 0x20, 0, 8),
                (none.clone(), None, None, None, true),
            ),
            // A failed realloc keeps its block.
            (
                failed(ev(7, Op::Realloc, 0, 0x20, 64)),
                (vec![FailedCall], None, Some(6), None, false),
            ),
            // realloc(p, 0) returning NULL frees p, marked failed (old recorders) or not.
            (
                failed(ev(8, Op::Realloc, 0, 0x20, 0)),
                (none.clone(), Some(6), None, None, false),
            ),
            (
                ev(9, Op::Malloc, 0x30, 0, 8),
                (none.clone(), None, None, None, true),
            ),
            (
                ev(10, Op::Realloc, 0, 0x30, 0),
                (none.clone(), Some(9), None, None, false),
            ),
            // A failed realloc of an unknown address: two anomalies.
            (
                failed(ev(11, Op::Realloc, 0, 0x77, 64)),
                (vec![FailedCall, UnknownFree], None, None, None, false),
            ),
            // A missed free: the address comes back while live.
            (
                ev(12, Op::Malloc, 0x40, 0, 8),
                (none.clone(), None, None, None, true),
            ),
            (
                ev(13, Op::Calloc, 0x40, 0, 8),
                (vec![MissedFree], None, None, Some(12), true),
            ),
            // Realloc in place, and a moving one onto a live address.
            (
                ev(14, Op::Realloc, 0x40, 0x40, 100),
                (none.clone(), Some(13), None, None, true),
            ),
            (
                ev(15, Op::Malloc, 0x50, 0, 8),
                (none.clone(), None, None, None, true),
            ),
            (
                ev(16, Op::Realloc, 0x50, 0x40, 200),
                (vec![MissedFree], Some(14), None, Some(15), true),
            ),
            // realloc(NULL, n) is a malloc; realloc(NULL, 0) that fails is a failed call.
            (
                ev(17, Op::Realloc, 0x60, 0, 8),
                (none.clone(), None, None, None, true),
            ),
            (
                failed(ev(18, Op::Realloc, 0, 0, 0)),
                (vec![FailedCall], None, None, None, false),
            ),
        ];
        for (e, want) in &table {
            assert_eq!(&seen(&mut set, e), want, "event {}", e.seq);
        }
        let counts = set.anomalies();
        assert_eq!(
            *counts,
            Anomalies {
                failed_calls: 4,
                unknown_frees: 2,
                double_frees: 1,
                inherited_frees: 0,
                missed_frees: 2,
            }
        );
        assert_eq!(counts.inconsistencies(), 5);
        assert_eq!(
            counts.to_string(),
            "4 failed calls, 2 unknown frees, 1 double free, 2 missed frees"
        );
        // Live: 0x50 (the realloc, 200 B) and 0x60 (8 B).
        assert_eq!((set.len(), set.live_requested_bytes()), (2, 208));
        assert_eq!(
            set.get(0x50).map(|b| (b.data.seq, b.requested_bytes)),
            Some((16, 200))
        );
        assert!(set.get(0x40).is_none());
        let mut live: Vec<u64> = set.iter().map(|(a, _)| a).collect();
        live.sort();
        assert_eq!(live, [0x50, 0x60]);
    }

    #[test]
    fn a_fork_child_inherits_unknown_blocks() {
        let mut set = LiveSet::<()>::new(Some(41));
        assert!(set.is_fork_child());
        set.step(&ev(0, Op::Free, 0, 0x10, 0));
        set.step(&ev(1, Op::Realloc, 0x20, 0x18, 64));
        set.step(&ev(2, Op::Free, 0, 0x20, 0));
        set.step(&ev(3, Op::Free, 0, 0x20, 0));
        let c = set.anomalies();
        assert_eq!(
            (c.inherited_frees, c.unknown_frees, c.double_frees),
            (2, 0, 1)
        );
        assert_eq!(c.inconsistencies(), 1);
    }

    #[test]
    fn blocks_carry_the_callers_data_such_as_the_birth() {
        let mut set = LiveSet::<Birth>::new(None);
        let mut e = ev(7, Op::Calloc, 0x10, 0, 16);
        e.nmemb = 4;
        e.thread = 3;
        e.callsite = Some(9);
        let step = set.step(&e);
        step.born.unwrap().data = Birth::of(&e);
        let b = *set.get(0x10).unwrap();
        let birth = Birth {
            seq: 7,
            thread: 3,
            callsite: Some(9),
        };
        assert_eq!(
            b,
            Block {
                requested_bytes: 64,
                data: birth
            }
        );
        match set.step(&ev(8, Op::Free, 0, 0x10, 0)).passed {
            Passed::Released(r) => assert_eq!(r, b),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn peak_counts_a_realloc_once() {
        let mut set = LiveSet::<()>::new(None);
        set.step(&ev(0, Op::Malloc, 0x10, 0, 100));
        set.step(&ev(1, Op::Realloc, 0x20, 0x10, 300));
        set.step(&ev(2, Op::Malloc, 0x30, 0, 50));
        set.step(&ev(3, Op::Free, 0, 0x20, 0));
        assert_eq!(set.peak_live_requested_bytes(), 350);
        assert_eq!(set.live_requested_bytes(), 50);
    }

    #[test]
    fn tombstones_stay_bounded_on_fresh_addresses() {
        // An imported CSV never reuses an address: one tombstone per free, unless forgotten.
        let mut set = LiveSet::<()>::new(None);
        let n = 5 * TOMBSTONE_FLOOR as u64;
        for i in 0..n {
            let addr = 0x1000 + 16 * i;
            set.step(&ev(2 * i, Op::Malloc, addr, 0, 8));
            set.step(&ev(2 * i + 1, Op::Free, 0, addr, 0));
            assert!(set.map.len() <= TOMBSTONE_FLOOR + 2, "{}", set.map.len());
        }
        assert_eq!(set.len(), 0);
        // A recent double free is still told apart; a forgotten one is an unknown free.
        set.step(&ev(2 * n, Op::Free, 0, 0x1000 + 16 * (n - 1), 0));
        set.step(&ev(2 * n + 1, Op::Free, 0, 0x1000, 0));
        let c = set.anomalies();
        assert_eq!((c.double_frees, c.unknown_frees), (1, 1));
    }

    #[test]
    fn neighbouring_addresses_get_neighbouring_slots_and_differing_tags() {
        let h = AddrHasher::addr_hash;
        let slot = |a| h(a) & !AddrHasher::TAG_BITS;
        let base = 0x5555_5555_8000u64;
        let tags: std::collections::HashSet<u64> = (0..64)
            .map(|i| {
                assert_eq!(
                    slot(base + 16 * i),
                    slot(base).wrapping_add(i) & !AddrHasher::TAG_BITS
                );
                h(base + 16 * i) >> 57
            })
            .collect();
        assert_eq!(tags.len(), 64);
        // Runs (here 64 KiB-aligned regions, as an allocator's arenas) spread over a table of
        // 2^16 slots: their bases fall in different 64-slot windows.
        let windows: std::collections::HashSet<u64> =
            (0..256u64).map(|r| (slot(r << 16) & 0xffff) >> 6).collect();
        assert!(windows.len() > 200, "{} windows", windows.len());
        // Aligned addresses whose slots share a group of 16 in a table of 2^22 slots still
        // differ in their tags (with K as the tag's multiplier every such pair had the same).
        for stride in [2u64 << 20, 64 << 20] {
            let mut groups: std::collections::HashMap<u64, Vec<u64>> = Default::default();
            for i in 0..1u64 << 16 {
                let a = 0x7f00_0000_0000 + stride * i;
                groups
                    .entry((slot(a) & 0x3f_ffff) >> 4)
                    .or_default()
                    .push(h(a) >> 57);
            }
            let (mut pairs, mut same) = (0, 0);
            for tags in groups.values() {
                for (i, t) in tags.iter().enumerate() {
                    pairs += i;
                    same += tags[..i].iter().filter(|&u| u == t).count();
                }
            }
            assert!(
                pairs > 1000 && same * 20 < pairs,
                "{stride}: {same} of {pairs}"
            );
        }
    }

    #[test]
    fn entries_stay_small() {
        // Each tool pays only for its payload: a replay slot, the analysis' 40 bytes (whose
        // enum gives the tombstone a niche), nothing for `info`.
        assert_eq!(std::mem::size_of::<Entry<u32>>(), 24);
        assert_eq!(std::mem::size_of::<Entry<()>>(), 16);
        assert_eq!(std::mem::size_of::<Entry<Birth>>(), 32);
    }
}
