//! The one clock allocscope times single allocator calls with: the recorder's hooks ("recorded"
//! latency) and the replayer ("replayed" latency) read it the same way, so the two figures that
//! reports show side by side are comparable.
//!
//! On x86-64 with an invariant TSC (CPUID leaf 0x8000_0007, EDX bit 8: constant rate, runs in deep
//! C-states) a timed call is bracketed by [`start`] (`lfence; rdtsc`: earlier instructions finish
//! first) and [`stop`] (`rdtscp; lfence`: the timed code finishes first, later code waits), the
//! pattern Intel recommends for short intervals. Elsewhere both read CLOCK_MONOTONIC (vDSO).
//! A raw stamp is a `u64` of ticks; [`Calibration`] turns ticks into ns and subtracts the cost of
//! an empty start/stop pair ([`Calibration::overhead_ticks`], about 30-40 cycles on current x86),
//! so a latency is the time spent in the call itself.
//!
//! What it cannot do: resolve calls shorter than its own jitter (a few ns).
//!
//! Nothing here allocates, locks or does I/O: the recorder's hooks call [`start`] and [`stop`].

use std::time::Duration;

/// Which counter is read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Source {
    Tsc,
    Monotonic,
}

impl Source {
    pub fn name(self) -> &'static str {
        match self {
            Source::Tsc => "tsc",
            Source::Monotonic => "monotonic",
        }
    }
}

/// The counter this machine should be read with: the TSC when it is invariant. CPUID only: no
/// allocation, no I/O (the recorder calls it in its first hook).
pub fn detect() -> Source {
    #[cfg(target_arch = "x86_64")]
    {
        // cpuid exists on every x86-64 CPU; leaf 0x8000_0007 is read only when the maximum
        // extended leaf says it exists.
        let max_ext = core::arch::x86_64::__cpuid(0x8000_0000).eax;
        if max_ext >= 0x8000_0007 && core::arch::x86_64::__cpuid(0x8000_0007).edx & (1 << 8) != 0 {
            return Source::Tsc;
        }
    }
    Source::Monotonic
}

/// Nanoseconds of CLOCK_MONOTONIC.
#[inline]
pub fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid out-pointer; CLOCK_MONOTONIC always exists on Linux.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// The stamp before a timed call.
#[inline(always)]
pub fn start(source: Source) -> u64 {
    #[cfg(target_arch = "x86_64")]
    if source == Source::Tsc {
        // SAFETY: lfence and rdtsc exist on every x86-64 CPU, touch no memory and have no
        // preconditions.
        return unsafe {
            core::arch::x86_64::_mm_lfence();
            core::arch::x86_64::_rdtsc()
        };
    }
    let _ = source;
    monotonic_ns()
}

/// The stamp after a timed call.
#[inline(always)]
pub fn stop(source: Source) -> u64 {
    #[cfg(target_arch = "x86_64")]
    if source == Source::Tsc {
        let mut aux = 0u32;
        // SAFETY: rdtscp (every x86-64 CPU with an invariant TSC has it) writes only `aux`;
        // lfence has no preconditions.
        return unsafe {
            let t = core::arch::x86_64::__rdtscp(&mut aux);
            core::arch::x86_64::_mm_lfence();
            t
        };
    }
    let _ = source;
    monotonic_ns()
}

/// Ticks to ns, and the cost of an empty start/stop pair.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Calibration {
    pub source: Source,
    /// Nanoseconds per tick (1.0 for the monotonic clock).
    pub ns_per_tick: f64,
    /// Median ticks of an empty start/stop pair, subtracted from every latency.
    pub overhead_ticks: u64,
}

impl Calibration {
    /// Measures `source` against CLOCK_MONOTONIC over `window` (20 ms gives parts per million),
    /// then the median cost of 10,001 empty start/stop pairs.
    pub fn measure(source: Source, window: Duration) -> Calibration {
        let (t0, m0) = (start(source), monotonic_ns());
        let until = m0 + window.as_nanos() as u64;
        while monotonic_ns() < until {
            std::hint::spin_loop();
        }
        let (t1, m1) = (stop(source), monotonic_ns());
        let ns_per_tick = match source {
            Source::Tsc => (m1 - m0) as f64 / t1.wrapping_sub(t0).max(1) as f64,
            Source::Monotonic => 1.0,
        };
        let mut pairs: Vec<u64> = (0..10_001)
            .map(|_| {
                let a = start(source);
                stop(source).saturating_sub(a)
            })
            .collect();
        pairs.sort_unstable();
        Calibration {
            source,
            ns_per_tick,
            overhead_ticks: pairs[pairs.len() / 2],
        }
    }

    /// The latency of a call timed from `start` to `stop`, in ns, less the pair's own cost (never
    /// below 0).
    #[inline(always)]
    pub fn latency_ns(&self, start: u64, stop: u64) -> u64 {
        self.ticks_to_ns(stop.wrapping_sub(start).saturating_sub(self.overhead_ticks))
    }

    /// A duration in ticks, in ns.
    #[inline(always)]
    pub fn ticks_to_ns(&self, ticks: u64) -> u64 {
        (ticks as f64 * self.ns_per_tick) as u64
    }

    /// The overhead of a start/stop pair in ns.
    pub fn overhead_ns(&self) -> f64 {
        self.overhead_ticks as f64 * self.ns_per_tick
    }

    /// The form `allocscope record` passes to traced processes (see `recorder-protocol`):
    /// `tsc <ns per tick> <overhead ticks>` or `monotonic <overhead ns>`.
    pub fn encode(&self) -> String {
        match self.source {
            Source::Tsc => format!("tsc {:e} {}", self.ns_per_tick, self.overhead_ticks),
            Source::Monotonic => format!("monotonic {}", self.overhead_ticks),
        }
    }

    /// Parses [`Calibration::encode`]'s form; None for anything else or an absurd ratio (a TSC
    /// runs between 100 MHz and 10 GHz; a pair costs less than 100 µs).
    pub fn decode(s: &str) -> Option<Calibration> {
        let mut it = s.split(' ');
        let source = match it.next()? {
            "tsc" => Source::Tsc,
            "monotonic" => Source::Monotonic,
            _ => return None,
        };
        let ns_per_tick = match source {
            Source::Tsc => it.next()?.parse().ok()?,
            Source::Monotonic => 1.0,
        };
        let overhead_ticks: u64 = it.next()?.parse().ok()?;
        let sane = (0.1..=10.0).contains(&ns_per_tick)
            && (overhead_ticks as f64 * ns_per_tick) < 100_000.0;
        (it.next().is_none() && sane).then_some(Calibration {
            source,
            ns_per_tick,
            overhead_ticks,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn calibrated_clock_agrees_with_the_monotonic_clock() {
        let c = Calibration::measure(detect(), Duration::from_millis(20));
        assert!(c.ns_per_tick > 0.05 && c.ns_per_tick < 20.0, "{c:?}");
        assert!(c.overhead_ns() < 2_000.0, "{c:?}");
        let (a, m0) = (start(c.source), monotonic_ns());
        std::thread::sleep(Duration::from_millis(30));
        let (b, m1) = (stop(c.source), monotonic_ns());
        let measured = c.latency_ns(a, b) as f64;
        let real = (m1 - m0) as f64;
        // Loose: the machine is shared; the point is units, not noise.
        assert!(
            (measured / real - 1.0).abs() < 0.2,
            "{measured} ns vs {real} ns"
        );
    }

    #[test]
    fn calibrations_round_trip_and_absurd_ones_are_refused() {
        for c in [
            Calibration {
                source: Source::Tsc,
                ns_per_tick: 0.416_666_7,
                overhead_ticks: 38,
            },
            Calibration {
                source: Source::Monotonic,
                ns_per_tick: 1.0,
                overhead_ticks: 21,
            },
        ] {
            assert_eq!(Calibration::decode(&c.encode()), Some(c));
        }
        for bad in [
            "tsc 1e9 30",
            "tsc x 1",
            "rdtsc 1 1",
            "tsc 0.4",
            "tsc 0.4 1 2",
            "tsc 0.4 1e12",
        ] {
            assert_eq!(Calibration::decode(bad), None, "{bad}");
        }
    }
}
