//! The conversion's output stage: numbers events (`seq`) and side records (`event`) in the order
//! they are written, and with [`FreeTime::CycleStart`] moves each free to the start of the GC
//! cycle that found its object dead.
//!
//! The correction, and why it is defensible: the runtime reports a free when the sweeper reaches
//! the object's span, at any time between the end of the mark phase that found it dead and the
//! start of the next cycle. The object was dead by the end of that mark phase, and it was
//! allocated before the cycle began (objects allocated during marking are marked, so they live
//! through it). Its true death lies between its allocation and the end of the mark; the start of
//! the cycle is the earliest point inside that window every replay of the same GOGC agrees with:
//! a model's cycle starting there finds it dead too, as the real one did.
//!
//! How: items are queued from a cycle's start marker until the end of the *next* cycle (when
//! every free of the first cycle has been swept: Go finishes sweeping before it marks again);
//! then the first cycle's frees are written at its marker, followed by what came after. Frees of
//! a cycle that began before tracing go to a marker put just after the snapshot. A free whose
//! object was allocated after its marker, or that arrives once its marker was written (past the
//! queue's budget, [`MAX_QUEUED`]), stays where the sweeper reported it (counted as kept).

use std::collections::VecDeque;

use rustc_hash::FxHashMap;
use traces::Event;

use crate::side::Record;

/// When a converted free happens.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum FreeTime {
    /// When the sweeper reported it (the object died at or before it).
    #[default]
    Sweep,
    /// At the start of the GC cycle that found the object dead.
    CycleStart,
}

/// Where converted events and side records go.
pub trait Sink {
    type Error;
    fn event(&mut self, ev: &Event) -> Result<(), Self::Error>;
    fn record(&mut self, rec: &Record) -> Result<(), Self::Error>;
}

/// The most items queued for [`FreeTime::CycleStart`] (about 100 bytes each): past it the oldest
/// cycle is written with the frees it has.
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
    /// Queued markers: id -> push order.
    markers: FxHashMap<u32, u64>,
    attached: FxHashMap<u32, Vec<Event>>,
    attached_len: usize,
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
            attached: FxHashMap::default(),
            attached_len: 0,
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
        if self.queue.is_empty() {
            return self.write(ev);
        }
        self.enqueue(Item::Ev(ev))
    }

    /// A side record in trace order.
    pub(crate) fn record(&mut self, rec: Record) -> Result<(), S::Error> {
        if self.queue.is_empty() {
            return self.write_record(rec);
        }
        self.enqueue(Item::Rec(rec))
    }

    /// A free found by the sweeper of cycle `marker`, of an object allocated at push order
    /// `born`.
    pub(crate) fn free(
        &mut self,
        ev: Event,
        marker: Option<u32>,
        born: u64,
    ) -> Result<(), S::Error> {
        if self.mode == FreeTime::CycleStart {
            if let Some(order) = marker.and_then(|m| self.markers.get(&m).map(|&o| (m, o))) {
                if born < order.1 {
                    self.moved += 1;
                    self.attached.entry(order.0).or_default().push(ev);
                    self.attached_len += 1;
                    return self.trim();
                }
            }
            self.kept += 1;
        }
        self.event(ev)
    }

    /// A cycle starts (only queued with [`FreeTime::CycleStart`]).
    pub(crate) fn marker(&mut self, id: u32, ts_ns: u64) -> Result<(), S::Error> {
        if self.mode != FreeTime::CycleStart {
            return Ok(());
        }
        self.markers.insert(id, self.pushed);
        self.enqueue(Item::Marker(id, ts_ns))
    }

    /// Every free of the cycles before `marker` is known: write everything queued before it.
    pub(crate) fn release_before(&mut self, marker: u32) -> Result<(), S::Error> {
        if !self.markers.contains_key(&marker) {
            return Ok(());
        }
        while let Some((_, item)) = self.queue.front() {
            if matches!(item, Item::Marker(m, _) if *m == marker) {
                break;
            }
            self.pop_front()?;
        }
        Ok(())
    }

    /// Writes everything and hands the sink back.
    pub(crate) fn finish(mut self) -> Result<S, S::Error> {
        while !self.queue.is_empty() {
            self.pop_front()?;
        }
        Ok(self.sink)
    }

    fn enqueue(&mut self, item: Item) -> Result<(), S::Error> {
        self.queue.push_back((self.pushed, item));
        self.trim()
    }

    /// Keeps the queue within [`MAX_QUEUED`].
    fn trim(&mut self) -> Result<(), S::Error> {
        if self.queue.len() + self.attached_len > MAX_QUEUED {
            // Attached frees belong to queued markers: popping the queue drains them too.
            while self.queue.len() + self.attached_len > MAX_QUEUED / 2 && !self.queue.is_empty() {
                self.pop_front()?;
            }
        }
        Ok(())
    }

    fn pop_front(&mut self) -> Result<(), S::Error> {
        let Some((_, item)) = self.queue.pop_front() else {
            return Ok(());
        };
        match item {
            Item::Ev(ev) => self.write(ev),
            Item::Rec(rec) => self.write_record(rec),
            Item::Marker(id, ts) => {
                self.markers.remove(&id);
                for mut ev in self.attached.remove(&id).unwrap_or_default() {
                    self.attached_len -= 1;
                    ev.ts_ns = ts;
                    self.write(ev)?;
                }
                Ok(())
            }
        }
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
