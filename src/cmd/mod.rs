//! One module per CLI verb. Each has an `Args` (clap derive) and `run(Args) -> anyhow::Result<i32>`
//! returning the process exit code; errors become one line on stderr in `main`.

pub mod compare;
pub mod export;
pub mod import;
pub mod info;
pub mod profile;
pub mod record;
pub mod replay;
pub mod report;
pub mod sweep;
pub mod trend;
pub mod tune_classes;

use std::path::Path;

/// Exit code for an error that reached `main`: 2 for bad input or usage (the default).
/// A verb that needs another code returns it as `Ok(code)` instead.
pub fn exit_code_for(_err: &anyhow::Error) -> i32 {
    2
}

/// Opens a trace, naming the file in any error.
pub fn open_trace(path: &Path) -> anyhow::Result<traces::TraceReader> {
    traces::TraceReader::open(path).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))
}

/// Collects the problems a trace's event stream reports after its good events, prints each as one
/// line, and decides the exit code: a truncated tail is accepted with `--allow-truncated`.
pub struct Problems<'p> {
    path: &'p Path,
    allow_truncated: bool,
    fatal: usize,
}

impl<'p> Problems<'p> {
    pub fn new(path: &'p Path, allow_truncated: bool) -> Self {
        Problems {
            path,
            allow_truncated,
            fatal: 0,
        }
    }

    pub fn note(&mut self, e: traces::TraceError) {
        let accepted = e.is_truncation() && self.allow_truncated;
        let level = if accepted { "warning" } else { "error" };
        let hint = if e.is_truncation() && !self.allow_truncated {
            " (pass --allow-truncated to use what was read)"
        } else {
            ""
        };
        eprintln!("allocscope: {level}: {}: {e}{hint}", self.path.display());
        if !accepted {
            self.fatal += 1;
        }
    }

    pub fn exit_code(&self) -> i32 {
        if self.fatal > 0 {
            2
        } else {
            0
        }
    }
}
