//! How a recording ended: the [`EndStatus`] a finished trace carries in its index chunk (format
//! version 2, see FORMAT.md).
//!
//! A trace with an index and trailer was finished by someone who knew how the recording ended: the
//! recorder at exit or exec, `allocscope record` after the process died (from the process's shared
//! buffers), an import or a replay tool. A trace without them was cut off (the process died and
//! nobody finished the file): readers say so and treat it like a truncated file.

use serde::{Deserialize, Serialize};

/// How the recorded process image stopped being recorded.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Ending {
    /// The file was written whole by a tool (import, a converter): nothing was running.
    #[default]
    Complete,
    /// The process exited through its normal exit path (`exit`, return from `main`, `_exit`).
    Exited,
    /// The process image was replaced by `exec`; the new program has its own trace.
    Exec,
    /// The process was killed by a signal (`signal` says which); `allocscope record` finished the
    /// trace from the process's shared buffers.
    Killed,
    /// The process ended without finishing its trace and the cause is not known (a signal that
    /// killed a process `record` did not start itself, a crash); `record` finished it from the
    /// process's shared buffers.
    Died,
    /// Recording stopped early (an error such as a full disk); `note` says why. Events after the
    /// stop are not in the trace.
    Stopped,
}

/// The end record of a finished trace.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct EndStatus {
    pub how: Ending,
    /// The signal that ended the process, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signal: Option<i32>,
    /// The exit code, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i32>,
    /// Events that `allocscope record` took from the dead process's shared buffers (they had not
    /// been written by the process itself).
    #[serde(default)]
    pub recovered_events: u64,
    /// Detail for the user (why recording stopped, ...). One line.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub note: String,
    /// Sequence numbers taken by calls that had not returned when the process died (at most one
    /// per thread): no event holds them, and readers do not count them as missing.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub in_flight: Vec<u64>,
}

impl EndStatus {
    /// A trace written whole by a tool.
    pub fn complete() -> EndStatus {
        EndStatus::default()
    }

    /// A recording that ended with `how`.
    pub fn new(how: Ending) -> EndStatus {
        EndStatus {
            how,
            ..EndStatus::default()
        }
    }

    /// True when the events of the process are all there (the recording was not stopped early).
    pub fn is_whole(&self) -> bool {
        self.how != Ending::Stopped
    }

    /// One line for the user, e.g. "the process was killed by signal 9 (SIGKILL); 1200 events
    /// were recovered from its buffers".
    pub fn describe(&self) -> String {
        let mut s = match self.how {
            Ending::Complete => "complete".to_string(),
            Ending::Exited => match self.exit_code {
                Some(c) => format!("the process exited with code {c}"),
                None => "the process exited".to_string(),
            },
            Ending::Exec => "the process image was replaced by exec".to_string(),
            Ending::Killed => match self.signal {
                Some(sig) => format!(
                    "the process was killed by signal {sig} ({})",
                    signal_name(sig)
                ),
                None => "the process was killed".to_string(),
            },
            Ending::Died => "the process ended without finishing its trace (killed by a signal \
                             or crashed)"
                .to_string(),
            Ending::Stopped => "recording stopped early".to_string(),
        };
        if !self.in_flight.is_empty() {
            s.push_str(&format!(
                "; {} call{} had not returned",
                self.in_flight.len(),
                if self.in_flight.len() == 1 { "" } else { "s" }
            ));
        }
        if self.recovered_events > 0 {
            s.push_str(&format!(
                "; {} events were recovered from its buffers",
                self.recovered_events
            ));
        }
        if !self.note.is_empty() {
            s.push_str(": ");
            s.push_str(&self.note);
        }
        s
    }
}

/// The conventional name of a Linux signal number ("SIG?" when unknown).
pub fn signal_name(sig: i32) -> &'static str {
    match sig {
        1 => "SIGHUP",
        2 => "SIGINT",
        3 => "SIGQUIT",
        4 => "SIGILL",
        5 => "SIGTRAP",
        6 => "SIGABRT",
        7 => "SIGBUS",
        8 => "SIGFPE",
        9 => "SIGKILL",
        10 => "SIGUSR1",
        11 => "SIGSEGV",
        12 => "SIGUSR2",
        13 => "SIGPIPE",
        14 => "SIGALRM",
        15 => "SIGTERM",
        24 => "SIGXCPU",
        25 => "SIGXFSZ",
        _ => "SIG?",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn describes_a_kill_with_recovered_events() {
        let s = EndStatus {
            how: Ending::Killed,
            signal: Some(9),
            recovered_events: 12,
            ..EndStatus::default()
        };
        assert_eq!(
            s.describe(),
            "the process was killed by signal 9 (SIGKILL); 12 events were recovered from its buffers"
        );
    }

    #[test]
    fn round_trips_through_json_and_omits_empty_fields() {
        let s = EndStatus::new(Ending::Exec);
        let json = serde_json::to_string(&s).unwrap();
        assert_eq!(json, r#"{"how":"exec","recovered_events":0}"#);
        assert_eq!(serde_json::from_str::<EndStatus>(&json).unwrap(), s);
    }
}
