//! Timestamps for the hot path: the session's one clock (`cycle_clock`), chosen once per process
//! image in its first hook (CPUID only), and the image's origin (time 0 of its trace). The writer
//! turns raw stamps into ns with the calibration `allocscope record` measured once for every
//! process (`recorder_protocol::env::CLOCK`), or one it measures itself without `record`.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

pub use cycle_clock::monotonic_ns;
use cycle_clock::Source;

/// True when hooks read the TSC; set once at init, before any record is taken with it.
static USE_TSC: AtomicBool = AtomicBool::new(false);

#[inline(always)]
fn source() -> Source {
    if USE_TSC.load(Ordering::Relaxed) {
        Source::Tsc
    } else {
        Source::Monotonic
    }
}

/// The stamp before a real call.
#[inline(always)]
pub fn now() -> u64 {
    cycle_clock::start(source())
}

/// False when the latency of real calls is not measured (ALLOCSCOPE_NO_LATENCY=1): hooks then read
/// the clock once per call instead of twice, and every latency is 0.
static LATENCY: AtomicBool = AtomicBool::new(true);

/// The stamp after a real call that started at `start` (`start` itself without latency).
#[inline(always)]
pub fn end(start: u64) -> u64 {
    if LATENCY.load(Ordering::Relaxed) {
        cycle_clock::stop(source())
    } else {
        start
    }
}

/// Turns latency measurement off (constructor, from the environment).
pub fn disable_latency() {
    LATENCY.store(false, Ordering::Relaxed);
}

/// Raw and monotonic clocks at the start of the recording.
static ORIGIN_RAW: AtomicU64 = AtomicU64::new(0);
static ORIGIN_MONO: AtomicU64 = AtomicU64::new(0);

/// Chooses the clock (first hook of the process) and sets the origin.
pub fn init() {
    USE_TSC.store(cycle_clock::detect() == Source::Tsc, Ordering::Relaxed);
    reset_origin();
}

/// Sets the origin to now (start of the recording; again in a fork child).
pub fn reset_origin() {
    ORIGIN_RAW.store(now(), Ordering::Relaxed);
    ORIGIN_MONO.store(monotonic_ns(), Ordering::Relaxed);
}

/// (raw, monotonic ns) at the origin.
pub fn origin() -> (u64, u64) {
    (
        ORIGIN_RAW.load(Ordering::Relaxed),
        ORIGIN_MONO.load(Ordering::Relaxed),
    )
}

/// True when hooks read the TSC.
pub fn uses_tsc() -> bool {
    USE_TSC.load(Ordering::Relaxed)
}

/// The source hooks read, for a calibration of the same clock.
pub fn current_source() -> Source {
    source()
}
