//! The contract between `allocscope record` (the `collector` crate) and the preload shim
//! (`collector/shim`), written once and used by both sides:
//!
//! - [`env`]: the environment variables `record` sets for the traced program.
//! - [`manifest`]: the lines each traced process appends to the session's manifest file.
//! - [`ring`]: the layout of a shared record ring file, which outlives the process so that `record`
//!   can recover what a killed process had not written yet.
//! - [`Timebase`] and [`to_event`]: how a ring record becomes a trace event.
//! - [`order`]: the rule that puts a moving `realloc` before another thread's reuse of its block.
//!
//! Nothing here allocates on a path the shim's hooks take: the hooks only use [`ring::Record`].
#![forbid(unsafe_code)]

pub mod elf;
pub mod env;
pub mod manifest;
pub mod order;
pub mod ring;
pub mod stacks;

use traces::{Event, Op, PtrKind};

use ring::Record;

/// Turns a process image's raw clock stamps into the trace's ns: `origin` is the stamp at the start
/// of the recording (the trace's time 0), `clock` the session's calibration.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Timebase {
    pub origin: u64,
    pub clock: cycle_clock::Calibration,
}

impl Timebase {
    /// ns since the start for a raw stamp (stamps taken just before the origin count as 0).
    pub fn ns(&self, raw: u64) -> u64 {
        self.clock.ticks_to_ns(raw.saturating_sub(self.origin))
    }

    /// The latency of a call that took `ticks` between its start and stop stamps, less the clock's
    /// own cost, saturated to u32 ns.
    pub fn latency_ns(&self, ticks: u32) -> u32 {
        self.clock.latency_ns(0, ticks as u64).min(u32::MAX as u64) as u32
    }
}

/// The trace event for a ring record.
pub fn to_event(r: &Record, time: &Timebase) -> Event {
    let op = Op::from_code(r.op()).unwrap_or(Op::Malloc);
    let (nmemb, align) = if op == Op::Free {
        (0, 0)
    } else if op.has_nmemb() {
        (r.extra, 0)
    } else if op.has_align() {
        (1, r.extra)
    } else {
        (1, 0)
    };
    Event {
        seq: r.seq,
        thread: r.thread,
        ts_ns: time.ns(r.start),
        op,
        addr: r.addr,
        old_addr: r.old_addr,
        size: r.size,
        nmemb,
        align,
        failed: r.failed(),
        latency_ns: time.latency_ns(r.ticks),
        kind: PtrKind::Unknown,
        callsite: (r.stack != 0).then_some(r.stack),
    }
}
