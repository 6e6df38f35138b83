//! Environment variables `allocscope record` sets for the traced program. Without [`OUT`] the shim
//! passes every call through unrecorded.

/// Trace path of the top process; other processes add `.<pid>` (and `.<pid>.<n>` when taken).
pub const OUT: &str = "ALLOCSCOPE_OUT";
/// The session's manifest file (see [`crate::manifest`]).
pub const MANIFEST: &str = "ALLOCSCOPE_MANIFEST";
/// pid of `allocscope record`: the process whose parent it is, is the top process.
pub const PARENT_PID: &str = "ALLOCSCOPE_PARENT_PID";
/// `1`: record the top process only, not its children.
pub const NO_FOLLOW: &str = "ALLOCSCOPE_NO_FOLLOW";
/// Writer wake-up period, ms (default 100).
pub const FLUSH_MS: &str = "ALLOCSCOPE_FLUSH_MS";
/// A 4096-byte file mapped shared: its first byte is 1 while recording (`--paused`, `--duration`).
pub const CONTROL: &str = "ALLOCSCOPE_CONTROL";
/// `1`: one clock read per call, latencies 0.
pub const NO_LATENCY: &str = "ALLOCSCOPE_NO_LATENCY";
/// zstd level of the chunks (default 1).
pub const ZSTD_LEVEL: &str = "ALLOCSCOPE_ZSTD_LEVEL";
/// Records per ring at most, a power of two (experiments).
pub const RING_MAX: &str = "ALLOCSCOPE_RING_MAX";
/// Directory for the shared ring files (see [`crate::ring`]); without it rings are private memory
/// and a killed process loses what its writer had not written.
pub const SPOOL: &str = "ALLOCSCOPE_SPOOL";
/// The clock calibration `record` measured once, so that no traced process has to: `tsc <ns per
/// tick>` (a float) or `monotonic`. See [`parse_clock`].
pub const CLOCK: &str = "ALLOCSCOPE_CLOCK";

/// The clock every process of a session uses.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum ClockSetting {
    /// Read the TSC; this many ns per tick.
    Tsc { ns_per_tick: f64 },
    /// Read CLOCK_MONOTONIC.
    Monotonic,
}

/// The value of [`CLOCK`] for a setting.
pub fn format_clock(c: ClockSetting) -> String {
    match c {
        ClockSetting::Tsc { ns_per_tick } => format!("tsc {ns_per_tick:e}"),
        ClockSetting::Monotonic => "monotonic".to_string(),
    }
}

/// Parses a value of [`CLOCK`]; None for anything else (the shim then calibrates itself).
pub fn parse_clock(v: &str) -> Option<ClockSetting> {
    if v == "monotonic" {
        return Some(ClockSetting::Monotonic);
    }
    let r: f64 = v.strip_prefix("tsc ")?.parse().ok()?;
    // A TSC runs between 100 MHz and 10 GHz.
    (0.1..=10.0)
        .contains(&r)
        .then_some(ClockSetting::Tsc { ns_per_tick: r })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clock_settings_round_trip_and_absurd_ratios_are_refused() {
        for c in [
            ClockSetting::Tsc {
                ns_per_tick: 0.416_666_7,
            },
            ClockSetting::Monotonic,
        ] {
            assert_eq!(parse_clock(&format_clock(c)), Some(c));
        }
        assert_eq!(parse_clock("tsc 1e9"), None);
        assert_eq!(parse_clock("tsc x"), None);
        assert_eq!(parse_clock("rdtsc"), None);
    }
}
