//! The conversion's output stage: numbers events (`seq`) and side records (`event`) in the order
//! they are written, and with [`FreeTime::CycleStart`] moves each free back to where its object
//! died, as near as the trace can tell.
//!
//! The correction, and why it is defensible: the runtime reports a free when the sweeper reaches
//! the object's span, at any time between the end of the mark phase that found it dead and the
//! start of the next cycle. Go's hybrid write barrier marks every object reachable when a cycle
//! starts, so an object found dead by cycle N was unreachable when N started; it was reachable
//! when cycle N-1 started, or allocated after that (otherwise N-1 would have found it dead).
//! Its death lies in `(max(allocation, start of N-1), start of N)`, and nothing in the trace says
//! where. Each moved free is put at a point of that interval drawn from a hash of its address
//! (deterministic, spread evenly over the interval's events). Why not at one end: a model cycle
//! that starts a few bytes before the trace's cycle N would otherwise find *every* object of N
//! alive (all frees at N's start) and one a few bytes after would find them all dead: the
//! replay's marked heap, its next goal and its cycle count jumped with the model's trigger by a
//! whole cycle's garbage (a JSON encoder replayed 6 cycles of 9). Spread, a model cycle that
//! starts early finds alive only the share of the garbage that dies after it.
//!
//! How: items are queued from a cycle's start marker until every free of the *next* cycle is
//! known (the end of the cycle after it: Go finishes sweeping before it marks again); each moved
//! free waits in [`Out::placed`] for the item after its point. Frees of a cycle that began
//! before tracing go to a marker put just after the snapshot. A free whose object was allocated
//! after its marker, or that arrives once its marker was written (past the queue's budget,
//! [`MAX_QUEUED`]), stays where the sweeper reported it (counted as kept).

use std::collections::{BTreeMap, VecDeque};

use rustc_hash::FxHashMap;
use traces::Event;

use crate::side::Record;

/// When a converted free happens.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum FreeTime {
    /// When the sweeper reported it (the object died at or before it).
    #[default]
    Sweep,
    /// Between the start of the GC cycle before the one that found the object dead (or its
    /// allocation, if later) and the start of that cycle (see the module's header).
    CycleStart,
}

/// Where converted events and side records go.
pub trait Sink {
    type Error;
    fn event(&mut self, ev: &Event) -> Result<(), Self::Error>;
    fn record(&mut self, rec: &Record) -> Result<(), Self::Error>;
}

/// The most items queued and placed for [`FreeTime::CycleStart`] (about 100 bytes each): past it
/// the oldest cycle is written with the frees it has.
pub const MAX_QUEUED: usize = 4 << 20;

enum Item {
    Ev(Event),
    Rec(Record),
    /// A cycle's start: id and timestamp.
    Marker(u32, u64),
}

pub(crate) struct Out<S: Sink> {
    sink: S,
    mode: FreeTime,
    seq: u64,
    last_ts: u64,
    /// Items pushed so far (queued or written): an object's allocation order.
    pub(crate) pushed: u64,
    queue: VecDeque<(u64, Item)>,
    /// Queued markers: id -> (push order, the push order of the marker before it).
    markers: FxHashMap<u32, (u64, Option<u64>)>,
    /// The push order of the last marker queued.
    last_marker: Option<u64>,
    /// Moved frees by (point, arrival): written just before the first queued item pushed after
    /// the point (a marker's own frees, at its point, with it).
    placed: BTreeMap<(u64, u64), Event>,
    pub(crate) moved: u64,
    pub(crate) kept: u64,
}

impl<S: Sink> Out<S> {
    pub(crate) fn new(sink: S, mode: FreeTime) -> Out<S> {
        Out {
            sink,
            mode,
            seq: 0,
            last_ts: 0,
            pushed: 0,
            queue: VecDeque::new(),
            markers: FxHashMap::default(),
            last_marker: None,
            placed: BTreeMap::new(),
            moved: 0,
            kept: 0,
        }
    }

    pub(crate) fn mode(&self) -> FreeTime {
        self.mode
    }

    /// An event in trace order.
    #[inline]
    pub(crate) fn event(&mut self, ev: Event) -> Result<(), S::Error> {
        self.pushed += 1;
        if self.queue.is_empty() && self.placed.is_empty() {
            return self.write(ev);
        }
        self.enqueue(Item::Ev(ev))
    }

    /// A side record in trace order.
    pub(crate) fn record(&mut self, rec: Record) -> Result<(), S::Error> {
        if self.queue.is_empty() && self.placed.is_empty() {
            return self.write_record(rec);
        }
        self.enqueue(Item::Rec(rec))
    }

    /// A free found by the sweeper of cycle `marker`, of an object allocated at push order
    /// `born` (its allocation is item `born + 1`; a tiny block's: the last object's).
    pub(crate) fn free(
        &mut self,
        ev: Event,
        marker: Option<u32>,
        born: u64,
    ) -> Result<(), S::Error> {
        if self.mode == FreeTime::CycleStart {
            if let Some(&(at, before)) = marker.and_then(|m| self.markers.get(&m)) {
                if born < at {
                    let point = self.death_point(&ev, born, at, before);
                    self.moved += 1;
                    self.placed.insert((point, self.moved), ev);
                    return self.trim();
                }
            }
            self.kept += 1;
        }
        self.event(ev)
    }

    /// Where a free moved to the marker pushed at `at` goes: a push order in
    /// `[max(born + 1, before + 1, oldest queued), at - 1]`, drawn from a hash of the address
    /// and the free's arrival; `at` (the marker itself) when that is empty or there is no marker
    /// before.
    fn death_point(&self, ev: &Event, born: u64, at: u64, before: Option<u64>) -> u64 {
        let Some(before) = before else { return at };
        let oldest = self.queue.front().map_or(at, |&(order, _)| order);
        let lo = (born + 1).max(before + 1).max(oldest);
        if lo >= at {
            return at;
        }
        lo + mix(ev.old_addr ^ self.moved.rotate_left(40)) % (at - lo)
    }

    /// A cycle starts (only queued with [`FreeTime::CycleStart`]).
    pub(crate) fn marker(&mut self, id: u32, ts_ns: u64) -> Result<(), S::Error> {
        if self.mode != FreeTime::CycleStart {
            return Ok(());
        }
        self.markers.insert(id, (self.pushed, self.last_marker));
        self.last_marker = Some(self.pushed);
        self.enqueue(Item::Marker(id, ts_ns))
    }

    /// Cycle `marker` ended: every free of the cycle before it is known, and none still to come
    /// goes before that cycle's marker (the marker before `marker`): write everything queued up
    /// to it.
    pub(crate) fn release_before(&mut self, marker: u32) -> Result<(), S::Error> {
        let Some(&(_, Some(before))) = self.markers.get(&marker) else {
            return Ok(());
        };
        while self
            .queue
            .front()
            .is_some_and(|&(order, _)| order <= before)
        {
            self.pop_front()?;
        }
        Ok(())
    }

    /// Writes everything and hands the sink back.
    pub(crate) fn finish(mut self) -> Result<S, S::Error> {
        while !self.queue.is_empty() {
            self.pop_front()?;
        }
        self.write_placed(u64::MAX, None)?;
        Ok(self.sink)
    }

    fn enqueue(&mut self, item: Item) -> Result<(), S::Error> {
        self.queue.push_back((self.pushed, item));
        self.trim()
    }

    /// Keeps the queue within [`MAX_QUEUED`].
    fn trim(&mut self) -> Result<(), S::Error> {
        if self.queue.len() + self.placed.len() > MAX_QUEUED {
            // Placed frees point before queued items: popping the queue drains them too.
            while self.queue.len() + self.placed.len() > MAX_QUEUED / 2 && !self.queue.is_empty() {
                self.pop_front()?;
            }
        }
        Ok(())
    }

    fn pop_front(&mut self) -> Result<(), S::Error> {
        let Some((order, item)) = self.queue.pop_front() else {
            return Ok(());
        };
        match item {
            Item::Ev(ev) => {
                self.write_placed(order, None)?;
                self.write(ev)
            }
            Item::Rec(rec) => {
                self.write_placed(order, None)?;
                self.write_record(rec)
            }
            Item::Marker(id, ts) => {
                self.markers.remove(&id);
                // With the marker: frees placed before it, and its own.
                self.write_placed(order + 1, Some(ts))
            }
        }
    }

    /// Writes the placed frees whose point is below `limit`, at the time of what was written
    /// last (`ts`: at least that).
    fn write_placed(&mut self, limit: u64, ts: Option<u64>) -> Result<(), S::Error> {
        while let Some(entry) = self.placed.first_entry() {
            if entry.key().0 >= limit {
                break;
            }
            let mut ev = entry.remove();
            ev.ts_ns = ts.unwrap_or(0);
            self.write(ev)?;
        }
        Ok(())
    }

    #[inline]
    fn write(&mut self, mut ev: Event) -> Result<(), S::Error> {
        ev.seq = self.seq;
        self.seq += 1;
        ev.ts_ns = ev.ts_ns.max(self.last_ts);
        self.last_ts = ev.ts_ns;
        self.sink.event(&ev)
    }

    fn write_record(&mut self, mut rec: Record) -> Result<(), S::Error> {
        rec.set_event(self.seq);
        self.sink.record(&rec)
    }
}

/// A 64-bit mixer (SplitMix64's finalizer): spreads nearby addresses over the whole range.
fn mix(mut x: u64) -> u64 {
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;
    use traces::Op;

    #[derive(Default)]
    struct Written(Vec<Event>);

    impl Sink for Written {
        type Error = ();
        fn event(&mut self, ev: &Event) -> Result<(), ()> {
            self.0.push(*ev);
            Ok(())
        }
        fn record(&mut self, _: &Record) -> Result<(), ()> {
            Ok(())
        }
    }

    fn malloc(addr: u64, ts_ns: u64) -> Event {
        let mut e = Event::new(Op::Malloc);
        e.addr = addr;
        e.size = 16;
        e.ts_ns = ts_ns;
        e
    }

    fn free(addr: u64, ts_ns: u64) -> Event {
        let mut e = Event::new(Op::Free);
        e.old_addr = addr;
        e.ts_ns = ts_ns;
        e
    }

    /// Cycle 1 starts after 1000 old objects; 1000 more are allocated before cycle 2 starts;
    /// cycle 2's sweeper then finds 500 old and 500 new objects dead.
    fn two_cycles() -> Vec<Event> {
        let mut out = Out::new(Written::default(), FreeTime::CycleStart);
        let mut born = Vec::new();
        for i in 0..1000 {
            born.push(out.pushed);
            out.event(malloc(0x1000 + i * 16, i)).unwrap();
        }
        out.marker(1, 1000).unwrap();
        for i in 1000..2000 {
            born.push(out.pushed);
            out.event(malloc(0x1000 + i * 16, i)).unwrap();
        }
        out.release_before(1).unwrap();
        out.marker(2, 2000).unwrap();
        for i in 0..2000 {
            out.event(malloc(0x100000 + i * 16, 2000 + i)).unwrap();
        }
        out.release_before(2).unwrap();
        for i in (0..2000).step_by(2) {
            out.free(free(0x1000 + i * 16, 9000), Some(2), born[i as usize])
                .unwrap();
        }
        assert_eq!((out.moved, out.kept), (1000, 0));
        out.finish().unwrap().0
    }

    #[test]
    fn a_cycle_s_frees_spread_between_its_start_and_the_previous_one_after_their_allocation() {
        let written = two_cycles();
        assert_eq!(written.len(), 5000);
        let mut at = std::collections::HashMap::new();
        for (i, e) in written.iter().enumerate() {
            assert_eq!(e.seq, i as u64);
            match e.op {
                Op::Malloc => {
                    at.insert(e.addr, i);
                }
                _ => {
                    let alloc = at[&e.old_addr];
                    assert!(i > alloc, "a free after its allocation");
                    // After cycle 1's start (item 1000), before cycle 2's (the 2000th malloc).
                    let mallocs_before = written[..i].iter().filter(|e| e.op == Op::Malloc).count();
                    assert!((1000..=2000).contains(&mallocs_before), "{mallocs_before}");
                }
            }
        }
        assert!(written.windows(2).all(|w| w[0].ts_ns <= w[1].ts_ns));
        // Spread, not piled at one point: each quarter of cycle 1 holds some of the old
        // objects' frees (their interval is the whole cycle).
        let mut quarters = [0; 4];
        let mut mallocs = 0;
        for e in &written {
            if e.op == Op::Malloc {
                mallocs += 1;
            } else if e.old_addr < 0x1000 + 1000 * 16 {
                quarters[(mallocs - 1000).min(999) / 250] += 1;
            }
        }
        assert!(quarters.iter().all(|&q| q > 60), "{quarters:?}");
        // Deterministic.
        assert_eq!(two_cycles(), written);
    }
}
