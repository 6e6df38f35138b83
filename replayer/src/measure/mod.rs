//! Measurement for replays on real hardware: perf counters ([`perf`]), a calibrated cycle clock
//! for per-call latency ([`clock`]), latency histograms with their outputs ([`latency`]) and CPU
//! pinning ([`affinity`]).
//!
//! Nothing here knows about the allocator model; the replay loop calls into it.

pub mod affinity;
pub mod clock;
pub mod latency;
pub mod perf;
