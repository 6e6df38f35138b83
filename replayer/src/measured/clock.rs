//! The replay's timer for single allocator calls: the recorder's own clock (`cycle_clock`, in
//! `collector/clock/`), read the same way (`lfence; rdtsc` before the call, `rdtscp; lfence`
//! after; CLOCK_MONOTONIC without an invariant TSC) and with the same cost of a start/stop pair
//! subtracted, so that the "replayed" latency a report shows beside the "recorded" one is measured
//! alike. About 30-40 cycles per pair on current x86; calls shorter than the clock's own jitter
//! (a few ns: the tiny and span fast paths) read near the floor, and the replay also reports
//! whole-run time divided by calls, which has no per-call overhead: read the two together.

use std::time::Duration;

use cycle_clock::Calibration;

/// Raw ticks: TSC cycles, or ns on the fallback.
pub type Ticks = u64;

/// A calibrated clock, as the replay JSON describes it (`measurements.clock`).
#[derive(Clone, Copy, Debug, serde::Serialize)]
pub struct CycleClock {
    /// Ticks per nanosecond (1.0 on the fallback clock).
    pub ticks_per_ns: f64,
    /// Median ticks of an empty start/stop pair, subtracted from each sample.
    pub overhead_ticks: u64,
    /// Which counter is read: "tsc" or "monotonic".
    pub source: &'static str,
    #[serde(skip)]
    cal: Calibration,
}

impl CycleClock {
    /// Calibrates over about `window` (20 ms is plenty for 3 significant digits).
    pub fn calibrate(window: Duration) -> CycleClock {
        let cal = Calibration::measure(cycle_clock::detect(), window);
        CycleClock {
            ticks_per_ns: 1.0 / cal.ns_per_tick,
            overhead_ticks: cal.overhead_ticks,
            source: cal.source.name(),
            cal,
        }
    }

    /// The stamp before a timed call.
    #[inline(always)]
    pub fn start(&self) -> Ticks {
        cycle_clock::start(self.cal.source)
    }

    /// The stamp after a timed call.
    #[inline(always)]
    pub fn stop(&self) -> Ticks {
        cycle_clock::stop(self.cal.source)
    }

    /// Nanoseconds between a start and a stop stamp, less the measurement overhead (never below
    /// 0).
    #[inline(always)]
    pub fn elapsed_ns(&self, start: Ticks, stop: Ticks) -> u64 {
        self.cal.latency_ns(start, stop)
    }

    /// The overhead in ns, for reports.
    pub fn overhead_ns(&self) -> f64 {
        self.cal.overhead_ns()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    #[test]
    fn calibrated_clock_agrees_with_the_monotonic_clock() {
        let clock = CycleClock::calibrate(Duration::from_millis(20));
        assert!(
            clock.ticks_per_ns > 0.05 && clock.ticks_per_ns < 20.0,
            "{clock:?}"
        );
        assert!(clock.overhead_ns() < 2_000.0, "{clock:?}");
        let t0 = Instant::now();
        let a = clock.start();
        std::thread::sleep(Duration::from_millis(30));
        let b = clock.stop();
        let real = t0.elapsed().as_nanos() as f64;
        let measured = clock.elapsed_ns(a, b) as f64;
        // Loose: the machine is shared and the sleep can overrun; the point is units, not noise.
        assert!(
            (measured / real - 1.0).abs() < 0.2,
            "measured {measured} ns, real {real} ns"
        );
    }
}
