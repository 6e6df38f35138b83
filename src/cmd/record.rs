//! `allocscope record`: not built yet (see the open issues).

#[derive(clap::Args)]
pub struct Args {
    /// Arguments (not yet interpreted).
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    rest: Vec<String>,
}

pub fn run(_args: Args) -> anyhow::Result<i32> {
    anyhow::bail!("'record' is not implemented yet")
}
