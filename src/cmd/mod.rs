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
pub mod trend;
pub mod tune_classes;

/// Exit code for an error that reached `main`: 2 for bad input or usage (the default).
/// A verb that needs another code returns it as `Ok(code)` instead.
pub fn exit_code_for(_err: &anyhow::Error) -> i32 {
    2
}
