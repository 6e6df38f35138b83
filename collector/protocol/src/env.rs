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
/// The clock calibration `record` measured once, so that no traced process has to: the form of
/// `cycle_clock::Calibration::encode`.
pub const CLOCK: &str = "ALLOCSCOPE_CLOCK";
/// Frames kept per call stack (0 or unset: no stacks; `record --stack-depth`, default 64).
pub const STACK_DEPTH: &str = "ALLOCSCOPE_STACK_DEPTH";
