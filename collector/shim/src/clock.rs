//! Timestamps for the hot path.
//!
//! On x86_64 with an invariant TSC (CPUID leaf 0x8000_0007, EDX bit 8) hooks read the
//! TSC (a few ns) and the writer thread converts ticks to ns with a ratio it calibrates against
//! CLOCK_MONOTONIC. Elsewhere hooks read CLOCK_MONOTONIC (vDSO) directly and the ratio is 1.
//! Either way a raw stamp is a `u64` of "ticks"; `Calibration::ns` turns it into ns since the start.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

/// True when hooks read the TSC; set once at init, before any record is taken with it.
static USE_TSC: AtomicBool = AtomicBool::new(false);

/// Nanoseconds of CLOCK_MONOTONIC.
pub fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid out-pointer; CLOCK_MONOTONIC always exists on Linux.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// A raw stamp in ticks (TSC cycles or ns).
#[inline(always)]
pub fn now() -> u64 {
    #[cfg(target_arch = "x86_64")]
    {
        if USE_TSC.load(Ordering::Relaxed) {
            // SAFETY: rdtsc is available on every x86_64 CPU.
            return unsafe { core::arch::x86_64::_rdtsc() };
        }
    }
    monotonic_ns()
}

/// Decides the clock once, from CPUID (no allocation, no I/O: this runs inside the first hook,
/// before any record is taken). Returns true when the TSC is used.
pub fn choose() -> bool {
    #[cfg(target_arch = "x86_64")]
    let tsc = {
        // cpuid is available on every x86_64 CPU; leaf 0x8000_0007 is only read when the maximum
        // extended leaf says it exists.
        let max_ext = core::arch::x86_64::__cpuid(0x8000_0000).eax;
        // Bit 8 of EDX in leaf 0x8000_0007: invariant TSC (constant rate, runs in deep C-states).
        max_ext >= 0x8000_0007 && core::arch::x86_64::__cpuid(0x8000_0007).edx & (1 << 8) != 0
    };
    #[cfg(not(target_arch = "x86_64"))]
    let tsc = false;
    USE_TSC.store(tsc, Ordering::Relaxed);
    tsc
}

/// False when the latency of real calls is not measured (ALLOCSCOPE_NO_LATENCY=1): hooks then read
/// the clock once per call instead of twice, and every latency is 0.
static LATENCY: AtomicBool = AtomicBool::new(true);

/// The raw stamp after a real call that started at `start` (`start` itself without latency).
#[inline(always)]
pub fn end(start: u64) -> u64 {
    if LATENCY.load(Ordering::Relaxed) {
        now()
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
    choose();
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

/// Converts raw stamps to ns since the start of the recording.
#[derive(Clone, Copy, Debug)]
pub struct Calibration {
    /// Raw stamp at the start of the recording.
    pub origin: u64,
    /// Nanoseconds per tick.
    pub ns_per_tick: f64,
}

impl Calibration {
    /// Finishes it after some time has passed since `start()`.
    pub fn finish(origin: (u64, u64)) -> Calibration {
        if !USE_TSC.load(Ordering::Relaxed) {
            return Calibration {
                origin: origin.0,
                ns_per_tick: 1.0,
            };
        }
        let (t1, m1) = (now(), monotonic_ns());
        let dt = t1.wrapping_sub(origin.0).max(1) as f64;
        let dm = m1.saturating_sub(origin.1) as f64;
        Calibration {
            origin: origin.0,
            ns_per_tick: dm / dt,
        }
    }

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
