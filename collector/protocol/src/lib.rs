//! The contract between `allocscope record` (the `collector` crate) and the preload shim
//! (`collector/shim`), written once and used by both sides:
//!
//! - [`env`]: the environment variables `record` sets for the traced program.
//! - [`manifest`]: the lines each traced process appends to the session's manifest file.
//! - [`ring`]: the layout of a shared record ring file, which outlives the process so that `record`
//!   can recover what a killed process had not written yet.
//! - [`Calibration`] and [`to_event`]: how a ring record becomes a trace event.
//! - [`order`]: the rule that puts a moving `realloc` before another thread's reuse of its block.
//!
//! Nothing here allocates on a path the shim's hooks take: the hooks only use [`ring::Record`].
#![forbid(unsafe_code)]

pub mod env;
pub mod manifest;
pub mod order;
pub mod ring;

use traces::{Event, Op, PtrKind};

use ring::Record;

/// Converts raw clock stamps (TSC ticks, or ns when the shim reads CLOCK_MONOTONIC) to ns since
/// the start of the recording.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Calibration {
    /// Raw stamp at the start of the recording.
    pub origin: u64,
    /// Nanoseconds per tick.
    pub ns_per_tick: f64,
}

impl Calibration {
    /// ns since the start for a raw stamp (stamps taken just before the origin count as 0).
    pub fn ns(&self, raw: u64) -> u64 {
        (raw.saturating_sub(self.origin) as f64 * self.ns_per_tick) as u64
    }

    /// A duration in ticks as ns, saturated to u32.
    pub fn latency_ns(&self, ticks: u64) -> u32 {
        let ns = ticks as f64 * self.ns_per_tick;
        if ns >= u32::MAX as f64 {
            u32::MAX
        } else {
            ns as u32
        }
    }
}

/// The trace event for a ring record.
pub fn to_event(r: &Record, calib: &Calibration) -> Event {
    let op = Op::from_code(r.op).unwrap_or(Op::Malloc);
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
        ts_ns: calib.ns(r.start),
        op,
        addr: r.addr,
        old_addr: r.old_addr,
        size: r.size,
        nmemb,
        align,
        failed: r.failed != 0,
        latency_ns: calib.latency_ns(r.ticks as u64),
        kind: PtrKind::Unknown,
        callsite: None,
    }
}
