//! A cheap, calibrated clock for timing single allocator calls.
//!
//! On x86-64 it reads the timestamp counter (`lfence; rdtsc`), which on CPUs with an invariant
//! TSC (`constant_tsc` and `nonstop_tsc` in /proc/cpuinfo) ticks at a fixed rate. Elsewhere it
//! falls back to `CLOCK_MONOTONIC` through `Instant`. [`CycleClock::calibrate`] measures ticks
//! per ns against the monotonic clock, and the cost of a back-to-back pair of reads (the
//! measurement overhead), which [`CycleClock::elapsed_ns`] subtracts from every sample.
//!
//! What it cannot do: time paths shorter than its own jitter (a few ns). The per-call figures of
//! the fastest paths (tiny and span fast paths, about 5-20 ns) are therefore near the floor of
//! what it resolves; the replay also reports whole-run time divided by calls, which has no
//! per-call overhead, and the two should be read together.

use std::time::{Duration, Instant};

/// Raw ticks: TSC cycles, or ns on the fallback.
pub type Ticks = u64;

#[derive(Clone, Copy, Debug, serde::Serialize)]
pub struct CycleClock {
    /// Ticks per nanosecond (1.0 on the fallback clock).
    pub ticks_per_ns: f64,
    /// Median ticks of an empty start/stop pair, subtracted from each sample.
    pub overhead_ticks: u64,
    /// Which counter is read: "tsc" or "monotonic".
    pub source: &'static str,
}

impl CycleClock {
    /// Calibrates over about `window` (20 ms is plenty for 3 significant digits).
    pub fn calibrate(window: Duration) -> CycleClock {
        let source = if cfg!(target_arch = "x86_64") && invariant_tsc() {
            "tsc"
        } else {
            "monotonic"
        };
        let read = if source == "tsc" {
            read_tsc
        } else {
            read_monotonic
        };
        let t0 = Instant::now();
        let c0 = read();
        while t0.elapsed() < window {
            std::hint::spin_loop();
        }
        let c1 = read();
        let ns = t0.elapsed().as_nanos() as f64;
        let ticks_per_ns = if source == "tsc" {
            (c1 - c0) as f64 / ns
        } else {
            1.0
        };
        let mut pairs: Vec<u64> = (0..10_001)
            .map(|_| {
                let a = read();
                let b = read();
                b.saturating_sub(a)
            })
            .collect();
        pairs.sort_unstable();
        CycleClock {
            ticks_per_ns,
            overhead_ticks: pairs[pairs.len() / 2],
            source,
        }
    }

    /// Reads the clock.
    #[inline(always)]
    pub fn now(&self) -> Ticks {
        if self.source == "tsc" {
            read_tsc()
        } else {
            read_monotonic()
        }
    }

    /// Nanoseconds between two readings, less the measurement overhead (never below 0).
    #[inline(always)]
    pub fn elapsed_ns(&self, start: Ticks, end: Ticks) -> u64 {
        let ticks = end
            .saturating_sub(start)
            .saturating_sub(self.overhead_ticks);
        (ticks as f64 / self.ticks_per_ns) as u64
    }

    /// The overhead in ns, for reports.
    pub fn overhead_ns(&self) -> f64 {
        self.overhead_ticks as f64 / self.ticks_per_ns
    }
}

fn invariant_tsc() -> bool {
    std::fs::read_to_string("/proc/cpuinfo")
        .map(|s| s.contains("constant_tsc") && s.contains("nonstop_tsc"))
        .unwrap_or(false)
}

#[cfg(target_arch = "x86_64")]
#[inline(always)]
#[allow(unsafe_code)]
fn read_tsc() -> u64 {
    // SAFETY: lfence and rdtsc exist on every x86-64 CPU, touch no memory and have no
    // preconditions; lfence keeps rdtsc from running ahead of the timed code.
    unsafe {
        core::arch::x86_64::_mm_lfence();
        let t = core::arch::x86_64::_rdtsc();
        core::arch::x86_64::_mm_lfence();
        t
    }
}

#[cfg(not(target_arch = "x86_64"))]
fn read_tsc() -> u64 {
    read_monotonic()
}

fn read_monotonic() -> u64 {
    use std::sync::OnceLock;
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    EPOCH.get_or_init(Instant::now).elapsed().as_nanos() as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn calibrated_clock_agrees_with_the_monotonic_clock() {
        let clock = CycleClock::calibrate(Duration::from_millis(20));
        assert!(
            clock.ticks_per_ns > 0.05 && clock.ticks_per_ns < 20.0,
            "{clock:?}"
        );
        assert!(clock.overhead_ns() < 2_000.0, "{clock:?}");
        let t0 = Instant::now();
        let a = clock.now();
        std::thread::sleep(Duration::from_millis(30));
        let b = clock.now();
        let real = t0.elapsed().as_nanos() as f64;
        let measured = clock.elapsed_ns(a, b) as f64;
        // Loose: the machine is shared and the sleep can overrun; the point is units, not noise.
        assert!(
            (measured / real - 1.0).abs() < 0.2,
            "measured {measured} ns, real {real} ns"
        );
    }
}
