//! What the verbs that show call stacks share: reading a trace's stack table and modules (a
//! damaged chunk is one warning line, never a failure), the symbolization flags, and printing
//! what symbolization noted.

use std::path::{Path, PathBuf};

use symbolize::{Options, Symbols};
use traces::{Module, StackTable, TraceReader};

/// Flags that say where names come from (`export`).
#[derive(clap::Args, Clone, Debug, Default)]
pub struct SymbolArgs {
    /// A directory of separate debug files, searched (by build-id in DIR/.build-id/, by name
    /// and by debug link) before /usr/lib/debug; may be given more than once.
    #[arg(long = "debug-dir", value_name = "DIR")]
    debug_dirs: Vec<PathBuf>,
    /// Do not read or write the symbol cache ($XDG_CACHE_HOME/allocscope/symbols, else
    /// ~/.cache/allocscope/symbols).
    #[arg(long)]
    no_symbol_cache: bool,
}

impl SymbolArgs {
    pub fn options(&self) -> Options {
        Options {
            debug_dirs: self.debug_dirs.clone(),
            cache_dir: if self.no_symbol_cache {
                None
            } else {
                symbolize::cache::default_dir()
            },
        }
    }
}

/// A trace's stack table and modules, and what was wrong with them (one line each).
pub struct Stacks {
    pub table: StackTable,
    pub modules: Vec<Module>,
    pub problems: Vec<String>,
}

/// Reads the stack table and modules of `reader`. A damaged stack or module chunk is printed
/// as one warning (which chunk, at which offset): the stacks it holds show as unknown.
pub fn load(reader: &TraceReader, path: &Path) -> Stacks {
    let (table, problem) = reader.stacks();
    let (modules, mproblem) = reader.modules();
    let mut problems = Vec::new();
    for p in [problem, mproblem].into_iter().flatten() {
        let line = format!("{p} (those stacks show as unknown)");
        eprintln!("allocscope: warning: {}: {line}", path.display());
        problems.push(line);
    }
    Stacks {
        table,
        modules,
        problems,
    }
}

/// Names the stacks ending at `leaves` (leaf node, seq of an event that named it); prints
/// symbolization's notes and one line of figures on standard error.
pub fn symbolize(
    stacks: &Stacks,
    leaves: impl IntoIterator<Item = (u32, u64)>,
    args: &SymbolArgs,
) -> Symbols {
    let symbols = Symbols::for_stacks(&stacks.table, &stacks.modules, leaves, &args.options());
    for note in symbols.notes() {
        eprintln!("allocscope: note: {note}");
    }
    let s = symbols.stats();
    if s.addresses > 0 {
        eprintln!(
            "allocscope: symbolized {} addresses in {} module{} ({} named, {} from the cache) \
             in {:.2} s",
            s.addresses,
            s.modules,
            if s.modules == 1 { "" } else { "s" },
            s.named,
            s.from_cache,
            s.elapsed.as_secs_f64()
        );
    }
    symbols
}

/// Names the stacks of `report`'s pass (when it has them: not a trace imported from Go) and
/// sets its call-site views, listing at least `top` stacks per figure. With `flames`, returns
/// the flame graphs too.
pub fn add_call_sites(
    report: &mut analysis::Report,
    reader: &TraceReader,
    path: &Path,
    args: &SymbolArgs,
    top: usize,
    flames: bool,
) -> std::io::Result<Vec<analysis::charts::Chart>> {
    let Some(profile) = report.stacks.take() else {
        return Ok(Vec::new());
    };
    let stacks = load(reader, path);
    let leaves: Vec<(u32, u64)> = profile
        .stacks
        .iter()
        .filter_map(|(id, w)| id.map(|leaf| (leaf, w.first_seq)))
        .collect();
    let symbols = if leaves.is_empty() {
        Symbols::default()
    } else {
        symbolize(&stacks, leaves, args)
    };
    let sites = analysis::callsites::build(&profile, &stacks.table, &symbols, top);
    let graphs = if flames && sites.recorded {
        analysis::flame::flame_graphs(&profile, &stacks.table, &symbols)?
    } else {
        Vec::new()
    };
    report.set_call_sites(sites);
    Ok(graphs)
}
