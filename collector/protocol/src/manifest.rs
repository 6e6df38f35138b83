//! The session manifest: one line per fact, appended by every traced process image with a single
//! `write` on an `O_APPEND` descriptor (lines of different processes never mix), read by `record`
//! after the run.
//!
//! A line is a keyword and fields separated by single spaces. Every field is escaped so that paths
//! and messages may hold any byte: `%`, bytes up to and including the space, and DEL are written
//! as `%XX` (two upper-case hex digits); nothing else is changed.

use std::ffi::OsString;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Path, PathBuf};

/// One manifest line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Line {
    /// Process image `image` of `pid` writes its trace to `path`; `forked_from` is the parent's
    /// pid when the image began as a fork child.
    Trace {
        pid: u32,
        image: u64,
        forked_from: Option<u32>,
        path: PathBuf,
    },
    /// After a requested flush (exit, exec, late events): what `path` holds so far, so `record`
    /// can check it reads every event back.
    Stats {
        path: PathBuf,
        events: u64,
        /// Times hooks waited for the writer (backpressure).
        waits: u64,
        threads: u64,
        /// ns since the process image started.
        alive_ns: u64,
        unwinding: UnwindStats,
    },
    /// `pid` is about to exec `program`.
    Exec { pid: u32, program: OsString },
    /// Recording failed or stopped; `path` is the trace concerned, if any.
    Error {
        path: Option<PathBuf>,
        message: String,
    },
}

/// What capturing stacks cost in a process image (all zero with stacks off).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct UnwindStats {
    /// Stacks captured.
    pub captures: u64,
    /// Frames found by unwinding, and frames taken over from the thread's previous stack (the
    /// outer frames two consecutive calls share are not unwound again).
    pub frames_unwound: u64,
    pub frames_reused: u64,
    /// Lookups of the unwinder's per-thread rule cache, and how many it answered.
    pub cache_hits: u64,
    pub cache_lookups: u64,
}

impl Line {
    /// The line, without its newline.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        let field = |out: &mut Vec<u8>, b: &[u8]| {
            if !out.is_empty() {
                out.push(b' ');
            }
            escape_into(b, out);
        };
        match self {
            Line::Trace {
                pid,
                image,
                forked_from,
                path,
            } => {
                field(&mut out, b"trace");
                field(&mut out, pid.to_string().as_bytes());
                field(&mut out, image.to_string().as_bytes());
                let parent = forked_from.map_or("-".to_string(), |p| p.to_string());
                field(&mut out, parent.as_bytes());
                field(&mut out, path.as_os_str().as_bytes());
            }
            Line::Stats {
                path,
                events,
                waits,
                threads,
                alive_ns,
                unwinding: u,
            } => {
                field(&mut out, b"stats");
                field(&mut out, path.as_os_str().as_bytes());
                for n in [
                    events,
                    waits,
                    threads,
                    alive_ns,
                    &u.captures,
                    &u.frames_unwound,
                    &u.frames_reused,
                    &u.cache_hits,
                    &u.cache_lookups,
                ] {
                    field(&mut out, n.to_string().as_bytes());
                }
            }
            Line::Exec { pid, program } => {
                field(&mut out, b"exec");
                field(&mut out, pid.to_string().as_bytes());
                field(&mut out, program.as_bytes());
            }
            Line::Error { path, message } => {
                field(&mut out, b"error");
                let p = path
                    .as_deref()
                    .map_or(&b"-"[..], |p| p.as_os_str().as_bytes());
                field(&mut out, p);
                field(&mut out, message.as_bytes());
            }
        }
        out
    }

    /// Parses one line (without its newline); None for anything malformed.
    pub fn parse(line: &[u8]) -> Option<Line> {
        let fields: Vec<Vec<u8>> = line
            .split(|&b| b == b' ')
            .map(unescape)
            .collect::<Option<_>>()?;
        let num =
            |i: usize| -> Option<u64> { std::str::from_utf8(fields.get(i)?).ok()?.parse().ok() };
        let path = |i: usize| -> Option<PathBuf> {
            Some(PathBuf::from(OsString::from_vec(fields.get(i)?.clone())))
        };
        match (fields.first()?.as_slice(), fields.len()) {
            (b"trace", 5) => Some(Line::Trace {
                pid: u32::try_from(num(1)?).ok()?,
                image: num(2)?,
                forked_from: match fields[3].as_slice() {
                    b"-" => None,
                    _ => Some(u32::try_from(num(3)?).ok()?),
                },
                path: path(4)?,
            }),
            (b"stats", 11) => Some(Line::Stats {
                path: path(1)?,
                events: num(2)?,
                waits: num(3)?,
                threads: num(4)?,
                alive_ns: num(5)?,
                unwinding: UnwindStats {
                    captures: num(6)?,
                    frames_unwound: num(7)?,
                    frames_reused: num(8)?,
                    cache_hits: num(9)?,
                    cache_lookups: num(10)?,
                },
            }),
            (b"exec", 3) => Some(Line::Exec {
                pid: u32::try_from(num(1)?).ok()?,
                program: OsString::from_vec(fields[2].clone()),
            }),
            (b"error", 3) => Some(Line::Error {
                path: (fields[1] != b"-").then(|| path(1)).flatten(),
                message: String::from_utf8_lossy(&fields[2]).into_owned(),
            }),
            _ => None,
        }
    }
}

/// Every line of a manifest, skipping malformed ones.
pub fn parse_all(manifest: &[u8]) -> Vec<Line> {
    manifest
        .split(|&b| b == b'\n')
        .filter(|l| !l.is_empty())
        .filter_map(Line::parse)
        .collect()
}

fn needs_escape(b: u8) -> bool {
    b <= b' ' || b == b'%' || b == 0x7f
}

fn escape_into(b: &[u8], out: &mut Vec<u8>) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    for &c in b {
        if needs_escape(c) {
            out.extend_from_slice(&[b'%', HEX[(c >> 4) as usize], HEX[(c & 15) as usize]]);
        } else {
            out.push(c);
        }
    }
}

fn unescape(b: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = std::str::from_utf8(b.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    Some(out)
}

/// The trace path of a process other than the top one: `<out>.<pid>`, or `<out>.<pid>.<n>` for
/// `n` > 0 when that is taken.
pub fn child_trace_path(out: &Path, pid: u32, n: u32) -> PathBuf {
    let mut s = out.as_os_str().to_os_string();
    s.push(format!(".{pid}"));
    if n > 0 {
        s.push(format!(".{n}"));
    }
    PathBuf::from(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_round_trip_with_any_bytes_in_paths_and_messages() {
        let odd = PathBuf::from(OsString::from_vec(
            b"/tmp/my dir/%20 tab\there\nnewline\xff.atrace".to_vec(),
        ));
        let lines = [
            Line::Trace {
                pid: 12,
                image: u64::MAX,
                forked_from: Some(7),
                path: odd.clone(),
            },
            Line::Trace {
                pid: 1,
                image: 0,
                forked_from: None,
                path: "/t".into(),
            },
            Line::Stats {
                path: odd.clone(),
                events: 3,
                waits: 0,
                threads: 2,
                alive_ns: 99,
                unwinding: UnwindStats {
                    captures: 1,
                    frames_unwound: 20,
                    frames_reused: 7,
                    cache_hits: 15,
                    cache_lookups: 20,
                },
            },
            Line::Exec {
                pid: 5,
                program: OsString::from("/usr/bin/my prog"),
            },
            Line::Error {
                path: Some(odd),
                message: "disk full: no space left".into(),
            },
            Line::Error {
                path: None,
                message: String::new(),
            },
        ];
        let mut manifest = Vec::new();
        for l in &lines {
            let enc = l.encode();
            assert!(!enc.contains(&b'\n'), "one line: {enc:?}");
            assert_eq!(Line::parse(&enc).as_ref(), Some(l));
            manifest.extend_from_slice(&enc);
            manifest.push(b'\n');
        }
        manifest.extend_from_slice(b"garbage line\nstats x 1\n");
        assert_eq!(parse_all(&manifest), lines);
    }

    #[test]
    fn child_paths_add_the_pid_and_a_number() {
        assert_eq!(
            child_trace_path(Path::new("/a b/t.atrace"), 42, 0),
            PathBuf::from("/a b/t.atrace.42")
        );
        assert_eq!(
            child_trace_path(Path::new("t"), 42, 3),
            PathBuf::from("t.42.3")
        );
    }
}
