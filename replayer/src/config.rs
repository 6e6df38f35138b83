//! Replay configuration: what the model is set up as (flags and a TOML file).
//!
//! Every field has Go's default. A TOML file names any subset:
//! ```toml
//! size_classes = "go"            # or a path to a CSV shaped like go_sizeclasses.csv
//! page_size = 8192
//! tiny = true
//! tiny_block = 16
//! pointers = "trace"             # trace: per event when the trace says, else noscan;
//!                                # noscan | scan: every object, whatever the trace says
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

use std::collections::BTreeMap;
use std::path::Path;

use serde::de::IgnoredAny;
use serde::{Deserialize, Serialize};

use crate::error::ReplayError;
use crate::pacer::MarkCosts;
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
    /// Per event when the trace says (a CSV `noscan` column, a Go trace's types); noscan when
    /// it does not. The default (DESIGN.md: pointer-free unless the trace says otherwise).
    Trace,
}

impl Pointers {
    /// Whether an object whose event says `kind` is pointer-free under this policy: the one
    /// rule the model, the span log and `tune-classes` apply.
    #[inline]
    pub fn noscan(self, kind: traces::PtrKind) -> bool {
        match self {
            Pointers::Noscan => true,
            Pointers::Scan => false,
            Pointers::Trace => kind != traces::PtrKind::Scan,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default)]
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
    /// What a mark costs and how long it lasts (pacer.rs; its keys are flat in the file).
    #[serde(flatten)]
    pub mark: MarkCosts,
    /// Really write object memory (false: addresses only).
    pub touch_memory: bool,
    /// Keys of a file that no field takes: `validate` rejects them (serde cannot deny unknown
    /// fields beside a flattened struct). Always empty in a `Config` built in code.
    #[serde(flatten, skip_serializing)]
    pub unknown_keys: UnknownKeys,
}

/// The keys of a configuration file that name no setting (`Config::unknown_keys`).
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
pub struct UnknownKeys(BTreeMap<String, IgnoredAny>);

impl Default for Config {
    fn default() -> Self {
        Config {
            size_classes: "go".into(),
            page_size: 8192,
            tiny: true,
            tiny_block: GO_TINY_BLOCK_BYTES,
            pointers: Pointers::Trace,
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
            mark: MarkCosts::default(),
            touch_memory: true,
            unknown_keys: UnknownKeys::default(),
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

/// A TOML error as one line: where (line and column, from the error's span), which key (the
/// text before `=` on that line), and what.
fn toml_error(text: &str, e: &toml::de::Error) -> String {
    let mut msg = e.message().trim().replace('\n', "; ");
    if msg.contains("too large") {
        msg.push_str(" (TOML whole numbers are at most 2^63-1)");
    }
    let Some(span) = e.span() else {
        return msg;
    };
    let start = span.start.min(text.len());
    let before = &text[..start];
    let line_no = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let column = text[line_start..start].chars().count() + 1;
    let line = text[line_start..].lines().next().unwrap_or("");
    let key = line
        .split_once('=')
        .map(|(k, _)| k.trim().trim_matches('"'))
        .filter(|k| !k.is_empty() && !k.starts_with('['));
    match key {
        Some(k) => format!("line {line_no}, column {column}, key {k}: {msg}"),
        None => format!("line {line_no}, column {column}: {msg}"),
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
        Self::from_toml_named(&path.display().to_string(), &text)
    }

    /// Parses TOML text read from `name` (a path, for messages): errors say
    /// `NAME: line L, column C, key K: what`.
    pub fn from_toml_named(name: &str, text: &str) -> Result<Config, ReplayError> {
        Self::from_toml_str(text).map_err(|e| match e {
            ReplayError::Config(m) => ReplayError::Config(format!("{name}: {m}")),
            other => other,
        })
    }

    pub fn from_toml_str(text: &str) -> Result<Config, ReplayError> {
        let c: Config =
            toml::from_str(text).map_err(|e| ReplayError::Config(toml_error(text, &e)))?;
        c.validate()?;
        Ok(c)
    }

    pub fn validate(&self) -> Result<(), ReplayError> {
        let bad = |m: String| Err(ReplayError::Config(m));
        if let Some(key) = self.unknown_keys.0.keys().next() {
            let known = serde_json::to_value(Config::default()).expect("Config serialises");
            let known: Vec<&str> = known
                .as_object()
                .expect("an object")
                .keys()
                .map(String::as_str)
                .collect();
            return bad(format!(
                "unknown field `{key}`, expected one of {}",
                known.join(", ")
            ));
        }
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
        self.mark.validate().map_err(ReplayError::Config)?;
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
        let e = Config::from_toml_str("gogc = 50\nstacks_bytes = 18446744073709551615\n")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("line 2") && e.contains("key stacks_bytes"),
            "{e}"
        );
        let e = Config::from_toml_named("c.toml", "gogc = 50\nprocs = 1 2\n")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("c.toml: line 2, column") && !e.contains('\n'),
            "{e}"
        );
        assert!(Config::from_toml_str("page_size = 4096\n").is_err());
        // The mark's keys are flat in the file and in the JSON, as every other key.
        let c = Config::from_toml_str("cons_mark = 0.2\nmark_latencies_ns = [1, 2]\n").unwrap();
        assert_eq!(c.mark.cons_mark, 0.2);
        assert_eq!(c.mark.mark_latencies_ns, [1, 2]);
        let v = serde_json::to_value(&c).unwrap();
        assert_eq!(v["cons_mark"], 0.2);
        assert!(v.get("mark").is_none() && v.get("unknown_keys").is_none());
        let back: Config = serde_json::from_value(v).unwrap();
        assert_eq!(back, c);
        let e = Config::from_toml_str("mark_latency = 5\n").unwrap_err();
        assert!(
            e.to_string().contains("unknown field `mark_latency`"),
            "{e}"
        );
        assert!(Config::from_toml_str("mark_assist_share = 2.0\n").is_err());
        assert_eq!(parse_bytes("1GiB"), Ok(1 << 30));
        assert_eq!(parse_bytes("123"), Ok(123));
        assert!(parse_bytes("12 parsecs").is_err());
    }
}
