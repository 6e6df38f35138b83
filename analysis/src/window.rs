//! Report windows (`report --from A --to B`): one phase of a long recording.
//!
//! A bound is a time since the trace's first event (`250ms`, `1.5s`, `800us`, `1000ns`) or an
//! event number (`120000ev`, 0-based, in seq order). The window holds the events from the first
//! one at or after `--from` up to, not including, the first one at or after `--to`.
//!
//! What a window restricts, and what it cannot: the events before it still run through the
//! analysis (the heap a window starts with is the one the program had built), then every count
//! starts from zero ([`crate::Analyzer::start_window`]). Allocations, frees, bytes, waste,
//! latency and lifetimes are those of the window's calls (a free in the window of an object
//! allocated before it counts, with its whole lifetime); the live figures and their peaks
//! include what was live when the window started; "leaked" is what is live when the window ends.
//! The events after it are not read.

use std::fmt;
use std::str::FromStr;

use serde::Serialize;

/// Where a window starts or ends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Bound {
    /// Nanoseconds after the trace's first event.
    SinceStartNs(u64),
    /// An event number (0-based, seq order).
    Event(u64),
}

/// Where an event is: its number and its time since the trace's first event.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Position {
    pub event: u64,
    pub since_start_ns: u64,
}

impl Bound {
    /// Whether `at` is at or after this bound.
    pub fn reached(self, at: Position) -> bool {
        match self {
            Bound::SinceStartNs(ns) => at.since_start_ns >= ns,
            Bound::Event(n) => at.event >= n,
        }
    }

    pub fn is_time(self) -> bool {
        matches!(self, Bound::SinceStartNs(_))
    }
}

const UNITS: [(&str, f64); 4] = [("ns", 1.0), ("us", 1e3), ("ms", 1e6), ("s", 1e9)];

/// `250ms`, `1.5s`, `800us`, `1000ns` or `120000ev`.
impl FromStr for Bound {
    type Err = String;

    fn from_str(text: &str) -> Result<Bound, String> {
        let t = text.trim();
        if let Some(n) = t.strip_suffix("ev") {
            return n.trim().parse::<u64>().map(Bound::Event).map_err(|_| {
                format!("{text:?}: an event number is a whole number before `ev` (120000ev)")
            });
        }
        // "ms", "us" and "ns" end in "s" too: the longest unit that matches.
        let unit = UNITS
            .iter()
            .filter(|(u, _)| t.ends_with(u))
            .max_by_key(|(u, _)| u.len());
        let Some(&(unit, scale)) = unit else {
            return Err(format!(
                "{text:?}: say which: a time since the first event with its unit (250ms, 1.5s, \
                 800us, 1000ns) or an event number (120000ev)"
            ));
        };
        let number = t[..t.len() - unit.len()].trim();
        match number.parse::<f64>() {
            Ok(v) if v.is_finite() && v >= 0.0 && v * scale < u64::MAX as f64 => {
                Ok(Bound::SinceStartNs((v * scale).round() as u64))
            }
            _ => Err(format!(
                "{text:?}: a time is a number of at least 0 before its unit (250ms, 1.5s)"
            )),
        }
    }
}

/// As the user would write it (times in the largest unit that keeps them whole).
impl fmt::Display for Bound {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Bound::Event(n) => write!(f, "{n}ev"),
            Bound::SinceStartNs(ns) => {
                let (unit, scale) = UNITS
                    .iter()
                    .rev()
                    .find(|(_, s)| ns % (*s as u64) == 0)
                    .copied()
                    .unwrap_or(UNITS[0]);
                write!(f, "{}{unit}", ns / scale as u64)
            }
        }
    }
}

/// The window of a report; both ends open by default (the whole trace).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Window {
    pub from: Option<Bound>,
    pub to: Option<Bound>,
}

impl Window {
    /// The whole trace.
    pub const WHOLE: Window = Window {
        from: None,
        to: None,
    };

    pub fn is_whole(&self) -> bool {
        self.from.is_none() && self.to.is_none()
    }

    /// A window whose two ends are in the same unit must end after it starts.
    pub fn check(&self) -> Result<(), String> {
        let empty = match (self.from, self.to) {
            (Some(Bound::Event(a)), Some(Bound::Event(b))) => b <= a,
            (Some(Bound::SinceStartNs(a)), Some(Bound::SinceStartNs(b))) => b <= a,
            _ => false,
        };
        if empty {
            return Err(format!(
                "--to {} is not after --from {}: the window would be empty",
                fmt_opt(self.to),
                fmt_opt(self.from)
            ));
        }
        Ok(())
    }

    /// `--from A --to B` as the user gave it.
    pub fn describe(&self) -> String {
        let mut parts = Vec::new();
        if let Some(b) = self.from {
            parts.push(format!("--from {b}"));
        }
        if let Some(b) = self.to {
            parts.push(format!("--to {b}"));
        }
        parts.join(" ")
    }

    /// Whether the window has started at `at`.
    pub fn started(&self, at: Position) -> bool {
        self.from.is_none_or(|b| b.reached(at))
    }

    /// Whether the window has ended before `at`.
    pub fn ended(&self, at: Position) -> bool {
        self.to.is_some_and(|b| b.reached(at))
    }
}

fn fmt_opt(b: Option<Bound>) -> String {
    b.map_or_else(String::new, |b| b.to_string())
}

/// What a report's window held (the report JSON's `trace.window`).
#[derive(Clone, Debug, Default, Serialize, PartialEq, Eq)]
pub struct WindowInfo {
    /// The bounds as given (`None`: the trace's start or end).
    pub from: Option<String>,
    pub to: Option<String>,
    /// The window's first event and the first event after it (0-based event numbers; `end` is
    /// the trace's event count when the window runs to its end).
    pub first_event: u64,
    pub end_event: u64,
    /// Time of its first and last event since the trace's first event.
    pub first_ns: u64,
    pub last_ns: u64,
    /// What was live when it started: counted in live figures and peaks, not as allocations.
    pub live_objects_at_start: u64,
    pub live_bytes_at_start: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounds_parse_with_their_unit_and_print_back() {
        for (text, bound, shown) in [
            ("250ms", Bound::SinceStartNs(250_000_000), "250ms"),
            ("1.5s", Bound::SinceStartNs(1_500_000_000), "1500ms"),
            ("2s", Bound::SinceStartNs(2_000_000_000), "2s"),
            ("800us", Bound::SinceStartNs(800_000), "800us"),
            ("7ns", Bound::SinceStartNs(7), "7ns"),
            (" 0ms ", Bound::SinceStartNs(0), "0s"),
            ("120000ev", Bound::Event(120_000), "120000ev"),
        ] {
            assert_eq!(text.parse::<Bound>(), Ok(bound), "{text}");
            assert_eq!(bound.to_string(), shown);
        }
    }

    #[test]
    fn a_bound_without_unit_or_number_says_what_to_write() {
        for bad in [
            "250",
            "ms",
            "-1ms",
            "1.5ev",
            "nanms",
            "infs",
            "1e30s",
            "12 parsecs",
        ] {
            let e = bad.parse::<Bound>().unwrap_err();
            assert!(e.contains("250ms") || e.contains("120000ev"), "{bad}: {e}");
        }
    }

    #[test]
    fn a_window_ends_before_the_event_that_reaches_its_end() {
        let w = Window {
            from: Some(Bound::Event(10)),
            to: Some(Bound::SinceStartNs(1000)),
        };
        let at = |event, since_start_ns| Position {
            event,
            since_start_ns,
        };
        assert!(!w.started(at(9, 500)));
        assert!(w.started(at(10, 500)) && !w.ended(at(10, 999)));
        assert!(w.ended(at(11, 1000)));
        assert!(Window::WHOLE.started(at(0, 0)) && !Window::WHOLE.ended(at(u64::MAX, u64::MAX)));
    }

    #[test]
    fn a_window_that_ends_where_it_starts_is_refused() {
        let w = |a, b| Window {
            from: Some(a),
            to: Some(b),
        };
        assert!(w(Bound::Event(5), Bound::Event(5)).check().is_err());
        assert!(w(Bound::SinceStartNs(9), Bound::SinceStartNs(3))
            .check()
            .is_err());
        assert!(w(Bound::Event(5), Bound::Event(6)).check().is_ok());
        // Different units cannot be compared before the trace is read.
        assert!(w(Bound::Event(5), Bound::SinceStartNs(0)).check().is_ok());
    }
}
