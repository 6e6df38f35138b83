//! Replay configuration: what the model is set up as (flags and a TOML file).
//!
//! Every field has Go's default. A TOML file names any subset:
//! ```toml
//! size_classes = "go"            # or a path to a CSV shaped like go_sizeclasses.csv
//! page_size = 8192
//! tiny = true
//! tiny_block = 16
//! pointers = "noscan"            # noscan | scan | trace (per event when the trace says)
//! procs = 1
//! thread_to_p = [0, 0, 1]        # trace thread n runs on P thread_to_p[n] (else n % procs)
//! gogc = 100                     # negative = off
//! gomemlimit = "64MiB"           # or bytes; absent = no limit
//! free_policy = "gc"             # gc | immediate
//! scavenger = true
//! bg_sweep = true
//! green_tea = false              # Go 1.26+ span layout (inline mark bits)
//! stacks_bytes = 8192
//! globals_bytes = 0
//! cons_mark = 0.1
//! idle_mark_utilization = 0.5
//! mark_object_cost_bytes = 64
//! mark_fixed_bytes = 0
//! mark_latencies_ns = []            # measured latencies to draw from, cycle by cycle
//! mark_latency_ns = 350000          # the timed mark (traces with timestamps; mgc.rs)
//! mark_ns_per_object = 8.5
//! mark_ns_per_scan_byte = 0.8
//! mark_ns_per_root_byte = 0.2
//! mark_assist_share = 0.3
//! touch_memory = true
//! ```

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::error::ReplayError;
use crate::sizeclass::{SizeClasses, GO_TINY_BLOCK_BYTES};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FreePolicy {
    /// A freed object is dead; its slot returns when a GC cycle has run and its span is swept.
    Gc,
    /// A freed object's slot returns at once (no GC cycles run).
    Immediate,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Pointers {
    /// Every object is pointer-free.
    Noscan,
    /// Every object may hold pointers.
    Scan,
    /// Per event when the trace says; noscan when it does not.
    Trace,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// "go" or a CSV path.
    pub size_classes: String,
    /// Bytes per page.
    pub page_size: u32,
    pub tiny: bool,
    /// Bytes per tiny block (a class size).
    pub tiny_block: u64,
    pub pointers: Pointers,
    pub procs: usize,
    pub thread_to_p: Vec<usize>,
    pub gogc: i32,
    /// Bytes, or a string with a unit as GOMEMLIMIT takes ("64MiB").
    #[serde(deserialize_with = "de_limit", serialize_with = "ser_limit")]
    pub gomemlimit: Option<u64>,
    pub free_policy: FreePolicy,
    pub scavenger: bool,
    pub bg_sweep: bool,
    pub green_tea: bool,
    /// Stack bytes the GC scans (pacer input).
    pub stacks_bytes: u64,
    /// Global bytes the GC scans (pacer input).
    pub globals_bytes: u64,
    /// Traces without timestamps only (with them, the mark is timed and cons/mark is measured
    /// as Go measures it; mgc.rs). Go's cons/mark ratio (bytes allocated per byte of scan work
    /// during a mark), fixed: it sets the trigger's runway and how long a mark phase lasts in
    /// allocated bytes (pacer.rs, mgc.rs). With `mark_object_cost_bytes` and
    /// `mark_fixed_bytes` it fits Go 1.27 on churn workloads at about 2 µs per allocation
    /// (replayer/FIDELITY.md).
    pub cons_mark: f64,
    /// Share of CPU that idle Ps spend on marking during a GC (0 when the program keeps every P
    /// busy; 0.5 fits one busy goroutine on two otherwise idle Ps). The timed mark marks with
    /// `procs * (0.25 + idle_mark_utilization)` Ps.
    pub idle_mark_utilization: f64,
    /// Scan-work bytes one marked object costs beyond its scanned bytes (mgc.rs).
    pub mark_object_cost_bytes: u64,
    /// Bytes allocated during every mark phase regardless of scan work (the mark's fixed
    /// costs in allocation terms; mgc.rs).
    pub mark_fixed_bytes: u64,
    /// Timed mark (traces with timestamps): wall time a mark phase takes beyond its CPU work
    /// (stopping and starting the world, waking idle Ps, the ragged barriers). The defaults
    /// here and below are what the fidelity tests' calibration measured with Go 1.27 on a
    /// quiet 2-vCPU VM (median latency 0.35 ms; the same VM under other load: 6 to 7 ms) on
    /// workloads the comparison itself does not use (replayer/FIDELITY.md). Measure your own
    /// machine the same way when its marks matter (`calibrate_this_machine` prints the keys).
    pub mark_latency_ns: u64,
    /// Timed mark: when not empty, each cycle's latency is one of these (measured) values,
    /// drawn in a fixed pseudo-random order (deterministic), instead of `mark_latency_ns`. On a
    /// machine where Go's marks vary, the spread matters: Go's pacer keeps the largest
    /// cons/mark of the last five cycles.
    pub mark_latencies_ns: Vec<u64>,
    /// Timed mark: CPU to mark one object.
    pub mark_ns_per_object: f64,
    /// Timed mark: CPU per byte of pointer-holding heap objects scanned.
    pub mark_ns_per_scan_byte: f64,
    /// Timed mark: CPU per byte of stacks and globals scanned.
    pub mark_ns_per_root_byte: f64,
    /// Timed mark: the share of marking CPU that allocating goroutines do as assists. Go counts
    /// it in the utilization it measures cons/mark with (pacer.rs `observe_mark`).
    pub mark_assist_share: f64,
    /// Really write object memory (false: addresses only).
    pub touch_memory: bool,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            size_classes: "go".into(),
            page_size: 8192,
            tiny: true,
            tiny_block: GO_TINY_BLOCK_BYTES,
            pointers: Pointers::Noscan,
            procs: 1,
            thread_to_p: Vec::new(),
            gogc: 100,
            gomemlimit: None,
            free_policy: FreePolicy::Gc,
            scavenger: true,
            bg_sweep: true,
            green_tea: false,
            stacks_bytes: 8192,
            globals_bytes: 0,
            cons_mark: 0.1,
            idle_mark_utilization: 0.5,
            mark_object_cost_bytes: 64,
            mark_fixed_bytes: 0,
            mark_latency_ns: 350_000,
            mark_latencies_ns: Vec::new(),
            mark_ns_per_object: 8.5,
            mark_ns_per_scan_byte: 0.8,
            mark_ns_per_root_byte: 0.2,
            mark_assist_share: 0.3,
            touch_memory: true,
        }
    }
}

fn de_limit<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum L {
        N(u64),
        S(String),
    }
    match Option::<L>::deserialize(d)? {
        None => Ok(None),
        Some(L::N(n)) => Ok(Some(n)),
        Some(L::S(s)) => parse_bytes(&s).map(Some).map_err(serde::de::Error::custom),
    }
}

fn ser_limit<S: serde::Serializer>(v: &Option<u64>, s: S) -> Result<S::Ok, S::Error> {
    match v {
        Some(n) => s.serialize_u64(*n),
        None => s.serialize_none(),
    }
}

/// Parses a byte count as GOMEMLIMIT does: a number with an optional B, KiB, MiB, GiB, TiB
/// suffix ("off" = no limit is handled by the caller).
pub fn parse_bytes(s: &str) -> Result<u64, String> {
    let s = s.trim();
    let (num, mul) = [
        ("TiB", 1u64 << 40),
        ("GiB", 1 << 30),
        ("MiB", 1 << 20),
        ("KiB", 1 << 10),
        ("B", 1),
    ]
    .iter()
    .find_map(|(suf, m)| s.strip_suffix(suf).map(|n| (n, *m)))
    .unwrap_or((s, 1));
    let n: u64 = num
        .trim()
        .parse()
        .map_err(|_| format!("bad byte count {s:?} (want e.g. 64MiB)"))?;
    n.checked_mul(mul)
        .ok_or_else(|| format!("byte count {s:?} overflows"))
}

impl Config {
    /// Reads a TOML file.
    pub fn from_toml_file(path: &Path) -> Result<Config, ReplayError> {
        let text = std::fs::read_to_string(path).map_err(|source| ReplayError::Io {
            path: path.display().to_string(),
            source,
        })?;
        Self::from_toml_str(&text).map_err(|e| match e {
            ReplayError::Config(m) => ReplayError::Config(format!("{}: {m}", path.display())),
            other => other,
        })
    }

    pub fn from_toml_str(text: &str) -> Result<Config, ReplayError> {
        let c: Config =
            toml::from_str(text).map_err(|e| ReplayError::Config(e.message().to_string()))?;
        c.validate()?;
        Ok(c)
    }

    pub fn validate(&self) -> Result<(), ReplayError> {
        let bad = |m: String| Err(ReplayError::Config(m));
        if !self.page_size.is_power_of_two() || self.page_size < 4096 {
            return bad(format!(
                "page_size {} must be a power of two >= 4096",
                self.page_size
            ));
        }
        if self.size_classes == "go" && self.page_size != 8192 {
            return bad("Go's size-class table is for 8192-byte pages; give a CSV table for other page sizes".into());
        }
        if self.procs == 0 || self.procs > 1024 {
            return bad(format!("procs {} must be 1..=1024", self.procs));
        }
        if let Some(&p) = self.thread_to_p.iter().find(|&&p| p >= self.procs) {
            return bad(format!(
                "thread_to_p names P {p} but procs is {}",
                self.procs
            ));
        }
        if self.tiny && !(self.tiny_block.is_power_of_two() && (8..=64).contains(&self.tiny_block))
        {
            return bad(format!(
                "tiny_block {} must be 8, 16, 32 or 64",
                self.tiny_block
            ));
        }
        if !(self.cons_mark.is_finite() && self.cons_mark >= 0.0) {
            return bad("cons_mark must be a non-negative number".into());
        }
        if !(0.0..=1.0).contains(&self.idle_mark_utilization) {
            return bad("idle_mark_utilization must be between 0 and 1".into());
        }
        if !(0.0..=1.0).contains(&self.mark_assist_share) {
            return bad("mark_assist_share must be between 0 and 1".into());
        }
        for (name, v) in [
            ("mark_ns_per_object", self.mark_ns_per_object),
            ("mark_ns_per_scan_byte", self.mark_ns_per_scan_byte),
            ("mark_ns_per_root_byte", self.mark_ns_per_root_byte),
        ] {
            if !(v.is_finite() && (0.0..=1e6).contains(&v)) {
                return bad(format!("{name} must be a number of nanoseconds, 0..1e6"));
            }
        }
        Ok(())
    }

    /// Loads the size-class table the config names.
    pub fn load_size_classes(&self) -> Result<SizeClasses, ReplayError> {
        if self.size_classes == "go" {
            return Ok(SizeClasses::go());
        }
        let text =
            std::fs::read_to_string(&self.size_classes).map_err(|source| ReplayError::Io {
                path: self.size_classes.clone(),
                source,
            })?;
        SizeClasses::from_csv_text(&self.size_classes, &text, self.page_size)
    }

    /// The tiny block in bytes, 0 when the tiny allocator is off (`SizeClasses::place`).
    pub fn tiny_block_bytes(&self) -> u64 {
        if self.tiny {
            self.tiny_block
        } else {
            0
        }
    }

    /// The P a trace thread runs on.
    #[inline]
    pub fn p_of_thread(&self, thread: u32) -> usize {
        self.thread_to_p
            .get(thread as usize)
            .copied()
            .unwrap_or(thread as usize % self.procs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn toml_round_trip_and_errors() {
        let c = Config::from_toml_str(
            "gogc = 50\ngomemlimit = \"64MiB\"\nfree_policy = \"immediate\"\nprocs = 2\n",
        )
        .unwrap();
        assert_eq!(c.gogc, 50);
        assert_eq!(c.gomemlimit, Some(64 << 20));
        assert_eq!(c.free_policy, FreePolicy::Immediate);
        assert_eq!(c.p_of_thread(3), 1);
        let e = Config::from_toml_str("gcpercent = 5\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("unknown field"), "{e}");
        assert!(Config::from_toml_str("procs = 0\n").is_err());
        assert!(Config::from_toml_str("page_size = 4096\n").is_err());
        assert_eq!(parse_bytes("1GiB"), Ok(1 << 30));
        assert_eq!(parse_bytes("123"), Ok(123));
        assert!(parse_bytes("12 parsecs").is_err());
    }
}
