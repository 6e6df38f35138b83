//! The trace model: one [`Event`] per allocator call, and the [`Header`] that describes a recording.
//!
//! Every event carries a global sequence number (`seq`): a total order across all threads of a
//! process, unique per trace. Readers yield events in `seq` order. Timestamps and latencies are in
//! nanoseconds. Addresses are the values the real allocator returned or was given (or, for imported
//! CSV workloads, synthetic addresses that are unique among live objects).

use serde::{Deserialize, Serialize};

/// Which allocator entry point was called. The discriminants are the on-disk codes (4 bits).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[repr(u8)]
pub enum Op {
    Malloc = 0,
    Calloc = 1,
    Realloc = 2,
    Reallocarray = 3,
    Free = 4,
    PosixMemalign = 5,
    AlignedAlloc = 6,
    Memalign = 7,
    Valloc = 8,
    Pvalloc = 9,
}

impl Op {
    /// Every op, in code order.
    pub const ALL: [Op; 10] = [
        Op::Malloc,
        Op::Calloc,
        Op::Realloc,
        Op::Reallocarray,
        Op::Free,
        Op::PosixMemalign,
        Op::AlignedAlloc,
        Op::Memalign,
        Op::Valloc,
        Op::Pvalloc,
    ];

    /// The on-disk code.
    pub fn code(self) -> u8 {
        self as u8
    }

    /// The op for an on-disk code, if it is one.
    pub fn from_code(code: u8) -> Option<Op> {
        Op::ALL.get(code as usize).copied()
    }

    /// The C function name, as used in the CSV form.
    pub fn name(self) -> &'static str {
        match self {
            Op::Malloc => "malloc",
            Op::Calloc => "calloc",
            Op::Realloc => "realloc",
            Op::Reallocarray => "reallocarray",
            Op::Free => "free",
            Op::PosixMemalign => "posix_memalign",
            Op::AlignedAlloc => "aligned_alloc",
            Op::Memalign => "memalign",
            Op::Valloc => "valloc",
            Op::Pvalloc => "pvalloc",
        }
    }

    /// Parses a C function name.
    pub fn from_name(name: &str) -> Option<Op> {
        Op::ALL.iter().copied().find(|op| op.name() == name)
    }

    /// True when the call takes an address in (`free`, `realloc`, `reallocarray`).
    pub fn takes_address(self) -> bool {
        matches!(self, Op::Free | Op::Realloc | Op::Reallocarray)
    }

    /// True when the call may return a new object (everything but `free`).
    pub fn returns_object(self) -> bool {
        self != Op::Free
    }

    /// True when the call carries a count of elements (`calloc`, `reallocarray`).
    pub fn has_nmemb(self) -> bool {
        matches!(self, Op::Calloc | Op::Reallocarray)
    }

    /// True when the call carries an explicit alignment.
    pub fn has_align(self) -> bool {
        matches!(self, Op::PosixMemalign | Op::AlignedAlloc | Op::Memalign)
    }
}

impl std::fmt::Display for Op {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Whether the allocated object holds pointers, when the recorder knows. Malloc traces usually do
/// not; the replayer then applies its configured assumption.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[repr(u8)]
pub enum PtrKind {
    #[default]
    Unknown = 0,
    /// Pointer-free ("noscan" in the Go runtime).
    Noscan = 1,
    /// May hold pointers ("scan").
    Scan = 2,
}

impl PtrKind {
    pub fn from_code(code: u8) -> Option<PtrKind> {
        match code {
            0 => Some(PtrKind::Unknown),
            1 => Some(PtrKind::Noscan),
            2 => Some(PtrKind::Scan),
            _ => None,
        }
    }
}

/// One allocator call.
///
/// Field use per op (fields an op does not use are zero):
///
/// | op | `old_addr` | `nmemb` | `size` | `align` | `addr` |
/// |---|---|---|---|---|---|
/// | malloc, valloc, pvalloc | – | 1 | bytes | – | returned |
/// | calloc | – | count | element bytes | – | returned |
/// | realloc | passed in (0 = NULL) | 1 | bytes | – | returned |
/// | reallocarray | passed in | count | element bytes | – | returned |
/// | free | passed in (0 = NULL) | – | – | – | – |
/// | posix_memalign, aligned_alloc, memalign | – | 1 | bytes | alignment | returned |
///
/// A failed call (`failed`) returned NULL (or an error code for posix_memalign); `addr` is 0.
/// `realloc(p, 0)` returning NULL is a free of `p`, not a failure, whatever `failed` says
/// ([`Event::frees_by_realloc`]); what every tool makes of an event is [`crate::live`]'s rule.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Event {
    /// Global sequence number: the exact order of calls across threads in one process.
    pub seq: u64,
    /// Recorder's thread number (small integers, 0 = first thread seen), not an OS tid.
    pub thread: u32,
    /// Nanoseconds since the recording started (the header's clock source).
    pub ts_ns: u64,
    pub op: Op,
    /// Address returned (0 when none or failed).
    pub addr: u64,
    /// Address passed in (`free`, `realloc`, `reallocarray`; 0 for NULL).
    pub old_addr: u64,
    /// Requested bytes, or element bytes for `calloc` / `reallocarray`.
    pub size: u64,
    /// Element count for `calloc` / `reallocarray`; 1 for other allocating ops, 0 for `free`.
    pub nmemb: u64,
    /// Requested alignment in bytes (aligned ops only; may be invalid, e.g. 3, when the call failed).
    pub align: u64,
    /// The call failed (returned NULL / an error).
    pub failed: bool,
    /// Nanoseconds spent in the real allocator for this call.
    pub latency_ns: u32,
    pub kind: PtrKind,
    /// Optional call-site id (meaning defined by the recorder; see the header's `callsites`).
    pub callsite: Option<u32>,
}

impl Event {
    /// A zeroed event of the given op, for building events field by field.
    pub fn new(op: Op) -> Event {
        Event {
            seq: 0,
            thread: 0,
            ts_ns: 0,
            op,
            addr: 0,
            old_addr: 0,
            size: 0,
            nmemb: if op == Op::Free { 0 } else { 1 },
            align: 0,
            failed: false,
            latency_ns: 0,
            kind: PtrKind::Unknown,
            callsite: None,
        }
    }

    /// Bytes requested by the call (`nmemb * size`, saturating; `free` requests 0).
    pub fn requested_bytes(&self) -> u64 {
        match self.op {
            Op::Free => 0,
            op if op.has_nmemb() => self.nmemb.saturating_mul(self.size),
            _ => self.size,
        }
    }

    /// True when the call produced a new live object (`addr != 0` and not failed).
    pub fn allocates(&self) -> bool {
        self.op.returns_object() && !self.failed && self.addr != 0
    }

    /// True when the call released `old_addr` (a free of non-NULL, or a realloc of non-NULL that
    /// did not fail; `realloc(p, 0)` returning NULL is a free, see [`Event::frees_by_realloc`]).
    pub fn releases(&self) -> bool {
        match self.op {
            Op::Free => self.old_addr != 0,
            Op::Realloc | Op::Reallocarray => self.old_addr != 0 && !self.failed_call(),
            _ => false,
        }
    }

    /// True for `realloc(p, 0)` (or `reallocarray(p, 0, n)`) returning NULL: glibc frees `p` and
    /// returns NULL, so the call is a free of `p`. Older recorders marked it failed; whether
    /// `failed` is set does not matter.
    pub fn frees_by_realloc(&self) -> bool {
        matches!(self.op, Op::Realloc | Op::Reallocarray)
            && self.old_addr != 0
            && self.addr == 0
            && self.requested_bytes() == 0
    }

    /// True when the call failed: the allocator returned NULL (or `posix_memalign` an error).
    /// `realloc(p, 0)` returning NULL is a free ([`Event::frees_by_realloc`]), never a failure.
    pub fn failed_call(&self) -> bool {
        self.failed && !self.frees_by_realloc()
    }

    /// True when some allocator could satisfy the request on 64-bit Linux: the requested bytes
    /// plus the requested alignment fit in [`MAX_REQUEST_BYTES`]. A request that does not (a
    /// `malloc(SIZE_MAX)`, a calloc whose product overflows, an alignment of 2^63) can only fail.
    pub fn could_succeed(&self) -> bool {
        let align = if self.op.has_align() && self.align.is_power_of_two() {
            self.align
        } else {
            0
        };
        self.requested_bytes()
            .checked_add(align)
            .is_some_and(|bytes| bytes <= MAX_REQUEST_BYTES)
    }
}

/// The most bytes one request can be given on 64-bit Linux: the whole user address space of its
/// largest common layout (arm64's 48-bit; x86-64 gives 47 bits unless a program asks for more).
/// Every allocator's answer to a larger request is NULL.
pub const MAX_REQUEST_BYTES: u64 = 1 << 48;

/// How timestamps were taken.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ClockSource {
    /// `clock_gettime(CLOCK_MONOTONIC)`.
    #[default]
    Monotonic,
    /// The CPU timestamp counter, calibrated to ns.
    Tsc,
    /// No real clock: timestamps were synthesised (e.g. a CSV import without `ts_ns`).
    Synthetic,
}

/// Metadata about a recording. Never holds environment variables.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Header {
    /// Format version the file was written with (filled in by the writer).
    #[serde(default)]
    pub format_version: u16,
    /// Name and version of the program that wrote the trace, e.g. "allocscope-record 0.1.0".
    #[serde(default)]
    pub recorder: String,
    /// argv of the traced process (or of the import, e.g. ["import", "w.csv"]).
    #[serde(default)]
    pub command: Vec<String>,
    #[serde(default)]
    pub pid: u32,
    #[serde(default)]
    pub ppid: u32,
    /// Wall-clock start of the recording, ns since the Unix epoch.
    #[serde(default)]
    pub start_unix_ns: u64,
    #[serde(default)]
    pub clock: ClockSource,
    /// The system page size, bytes.
    #[serde(default)]
    pub page_size: u32,
    #[serde(default)]
    pub hostname: String,
    /// Set in the trace of a fork child: the pid of the parent whose heap the child inherited.
    /// Frees of blocks allocated before the fork are frees of inherited blocks, not unknown ones.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub forked_from: Option<u32>,
}
