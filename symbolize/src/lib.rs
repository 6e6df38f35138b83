//! Names for the return addresses of an allocscope trace's call stacks.
//!
//! A trace holds stacks as return addresses (`traces::StackTable`) and the modules they fall in
//! (`traces::Module`: path, build-id, load bias, executable ranges). Symbolization happens here,
//! at analysis time, never in the traced process:
//!
//! 1. [`modules::ModuleMap`] ties each address to a module (checking every range the trace
//!    claims); an address in no module stays a bare address.
//! 2. [`files::find`] finds the files that can name a module's addresses: a separate debug file
//!    with the recording's build-id (`--debug-dir` directories, then `/usr/lib/debug`, where
//!    Debian's -dbgsym packages go), then the module's own file if its build-id is the
//!    recording's.
//! 3. blazesym reads them ([`resolve`]): function names (C++ and Rust demangled), source file and
//!    line, inlined frames.
//! 4. [`cache`] keeps the names per module file on disk, so the second run over a trace (or
//!    another trace of the same program) reads them back instead of parsing DWARF again.
//!
//! Each address is looked up at `address - 1`: a return address is the instruction after the
//! call, which may belong to the next line or, after a call that never returns, to the next
//! function. A frame that cannot be named shows as `NAME+0xADDR` ([`Place::label`]): the
//! module's file name and the file address looked up (what `addr2line -e FILE` takes).
//! Problems (a file not found, a build-id that differs, no debug information) are notes, one
//! line each, never failures.
#![forbid(unsafe_code)]

pub mod cache;
pub mod files;
pub mod modules;
mod resolve;

use std::borrow::Cow;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use rayon::prelude::*;
use rustc_hash::{FxHashMap, FxHashSet};
use serde::{Deserialize, Serialize};
use traces::{Module, StackTable};

pub use modules::ModuleMap;

/// One function a return address is in: a real frame, or a call inlined into it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Frame {
    /// The function's name, demangled.
    pub function: String,
    /// Source file and line of the address within this function (for an inlined call's caller:
    /// the line of the call), when debug information says.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub line: Option<u32>,
    /// This function was inlined into the next frame (the next one out).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub inlined: bool,
}

/// What symbolization reads and where it keeps results.
#[derive(Clone, Debug, Default)]
pub struct Options {
    /// Directories of separate debug files, searched before the system's
    /// ([`files::SYSTEM_DEBUG_DIRS`]).
    pub debug_dirs: Vec<PathBuf>,
    /// Where names are kept between runs ([`cache::default_dir`]); none: no cache.
    pub cache_dir: Option<PathBuf>,
}

impl Options {
    /// The directories searched for debug files: the user's, then the system's.
    pub fn search_dirs(&self) -> Vec<PathBuf> {
        let mut dirs = self.debug_dirs.clone();
        dirs.extend(files::SYSTEM_DEBUG_DIRS.iter().map(PathBuf::from));
        dirs
    }
}

/// Figures about one symbolization.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct SymbolStats {
    /// Distinct addresses looked up in a module, and how many got a name.
    pub addresses: u64,
    pub named: u64,
    /// Addresses whose names came from the cache.
    pub from_cache: u64,
    /// Distinct addresses in no module the trace knows.
    pub outside_modules: u64,
    /// Modules with addresses to name, and how many of them had source lines.
    pub modules: usize,
    pub modules_with_lines: usize,
    pub elapsed: Duration,
}

/// Where one return address is.
#[derive(Clone, Copy, Debug)]
pub enum Place<'a> {
    /// In a module: `file_addr` is the address looked up as the module's file states it;
    /// `frames` its names, innermost first (empty: it could not be named).
    Module {
        module: &'a Module,
        file_addr: u64,
        frames: &'a [Frame],
    },
    /// In no module the trace knows (code generated at run time, a module record left out).
    Unknown { addr: u64 },
}

impl<'a> Place<'a> {
    /// The names of this place, innermost first: the function names, or one label.
    pub fn names(&self) -> Vec<Cow<'a, str>> {
        match self {
            Place::Module { frames, .. } if !frames.is_empty() => frames
                .iter()
                .map(|f| Cow::Borrowed(f.function.as_str()))
                .collect(),
            _ => vec![Cow::Owned(self.label())],
        }
    }

    /// `NAME+0xADDR` (module file name and file address), or `0xADDR` outside any module.
    pub fn label(&self) -> String {
        match self {
            Place::Module {
                module, file_addr, ..
            } => format!("{}+{file_addr:#x}", file_name(&module.path)),
            Place::Unknown { addr } => format!("{addr:#x}"),
        }
    }
}

/// The last component of a module's path (the whole path when it has none).
pub fn file_name(path: &str) -> &str {
    path.rsplit('/').find(|s| !s.is_empty()).unwrap_or(path)
}

/// The names of a set of a trace's return addresses.
#[derive(Debug, Default)]
pub struct Symbols {
    map: ModuleMap,
    /// Per module (index in `map`): names by file address looked up.
    names: Vec<FxHashMap<u64, Vec<Frame>>>,
    notes: Vec<String>,
    stats: SymbolStats,
}

impl Symbols {
    /// Names every return address of the stacks ending at `leaves` (leaf node, and the seq of
    /// an event that named it: it picks the module loaded at that time).
    ///
    /// When no two modules' ranges overlap, an address has one module whatever the seq: each
    /// node of the trie is then visited once (stacks share most of their frames: the python
    /// recording's 14 600 stacks of 51 frames have 81 000 nodes). Otherwise every stack is
    /// walked with its own seq.
    pub fn for_stacks(
        table: &StackTable,
        modules: &[Module],
        leaves: impl IntoIterator<Item = (u32, u64)>,
        opts: &Options,
    ) -> Symbols {
        let start = Instant::now();
        let map = ModuleMap::new(modules);
        let mut addrs = Vec::new();
        if map.overlapping() {
            let mut seen = FxHashSet::default();
            for (leaf, seq) in leaves {
                addrs.extend(
                    table
                        .frames(leaf)
                        .filter(|&a| seen.insert((a, seq)))
                        .map(|a| (a, seq)),
                );
            }
        } else {
            // Nodes already walked: a stack's walk stops at the first one (its callers were
            // walked with it).
            let mut walked = vec![false; table.len() as usize + 1];
            for (leaf, seq) in leaves {
                let mut id = leaf;
                while let Some((parent, addr)) = table.node(id) {
                    if std::mem::replace(&mut walked[id as usize], true) {
                        break;
                    }
                    addrs.push((addr, seq));
                    id = parent;
                }
            }
        }
        Symbols::resolve_in(map, addrs, opts, start)
    }

    /// Names the return addresses `addrs` (each with the seq of an event it was seen in).
    pub fn resolve(
        modules: &[Module],
        addrs: impl IntoIterator<Item = (u64, u64)>,
        opts: &Options,
    ) -> Symbols {
        Symbols::resolve_in(ModuleMap::new(modules), addrs, opts, Instant::now())
    }

    /// [`Symbols::resolve`] with the module map made, the time counted from `start`.
    fn resolve_in(
        map: ModuleMap,
        addrs: impl IntoIterator<Item = (u64, u64)>,
        opts: &Options,
        start: Instant,
    ) -> Symbols {
        let mut wanted: Vec<FxHashSet<u64>> = vec![FxHashSet::default(); map.modules().len()];
        let mut outside = FxHashSet::default();
        for (addr, seq) in addrs {
            match map.find(addr, seq) {
                Some(i) => {
                    let m = &map.modules()[i];
                    wanted[i].insert(lookup(addr).wrapping_sub(m.bias));
                }
                None => {
                    outside.insert(addr);
                }
            }
        }
        let dirs = opts.search_dirs();
        let done: Vec<Named> = map
            .modules()
            .par_iter()
            .zip(wanted)
            .map(|(m, want)| name_module(m, want, &dirs, opts))
            .collect();
        let mut s = Symbols {
            notes: map.rejected().to_vec(),
            stats: SymbolStats {
                outside_modules: outside.len() as u64,
                ..SymbolStats::default()
            },
            ..Symbols::default()
        };
        for n in done {
            s.notes.extend(n.notes);
            if !n.names.is_empty() {
                s.stats.modules += 1;
                s.stats.modules_with_lines += n.has_lines as usize;
            }
            s.stats.addresses += n.names.len() as u64;
            s.stats.named += n.names.values().filter(|f| !f.is_empty()).count() as u64;
            s.stats.from_cache += n.from_cache;
            s.names.push(n.names);
        }
        let mut said = FxHashSet::default();
        s.notes.retain(|n| said.insert(n.clone()));
        s.map = map;
        s.stats.elapsed = start.elapsed();
        s
    }

    /// Where the return address `addr` of an event with seq `seq` is.
    pub fn place(&self, addr: u64, seq: u64) -> Place<'_> {
        let Some(i) = self.map.find(addr, seq) else {
            return Place::Unknown { addr };
        };
        let module = &self.map.modules()[i];
        let file_addr = lookup(addr).wrapping_sub(module.bias);
        let frames = self.names[i].get(&file_addr).map_or(&[][..], Vec::as_slice);
        Place::Module {
            module,
            file_addr,
            frames,
        }
    }

    /// Whether [`Symbols::place`] gives the same place for an address whatever the seq (no two
    /// modules' ranges overlap): a caller may then name each trie node once.
    pub fn seq_independent(&self) -> bool {
        !self.map.overlapping()
    }

    /// The places of the stack ending at `leaf`, innermost first (none for a node the table
    /// does not hold).
    pub fn stack<'s>(&'s self, table: &StackTable, leaf: u32, seq: u64) -> Vec<Place<'s>> {
        table.frames(leaf).map(|a| self.place(a, seq)).collect()
    }

    /// The modules addresses were tied to (records with absurd ranges left out).
    pub fn modules(&self) -> &ModuleMap {
        &self.map
    }

    /// What could not be found or read, one line each (for the user; not failures).
    pub fn notes(&self) -> &[String] {
        &self.notes
    }

    pub fn stats(&self) -> &SymbolStats {
        &self.stats
    }
}

/// The address looked up for a return address: the call instruction's last byte.
fn lookup(ret: u64) -> u64 {
    ret.saturating_sub(1)
}

/// One module's names and what was found on the way.
struct Named {
    names: FxHashMap<u64, Vec<Frame>>,
    notes: Vec<String>,
    has_lines: bool,
    from_cache: u64,
}

/// Names the file addresses `want` of module `m`: from the cache, then from its files.
fn name_module(m: &Module, want: FxHashSet<u64>, dirs: &[PathBuf], opts: &Options) -> Named {
    let mut named = Named {
        names: FxHashMap::default(),
        notes: Vec::new(),
        has_lines: false,
        from_cache: 0,
    };
    if want.is_empty() {
        return named;
    }
    let sources = files::find(m, dirs);
    named.notes = sources.notes;
    if sources.files.is_empty() {
        named.notes.push(format!(
            "{}: no file to read its names from: its frames show as {}+0xADDR (give its files \
             with --debug-dir DIR)",
            m.path,
            file_name(&m.path)
        ));
        named.names = want.into_iter().map(|a| (a, Vec::new())).collect();
        return named;
    }
    let key = cache::Key::new(&m.path, &m.build_id, &sources.stamps, dirs);
    let cached = match &opts.cache_dir {
        Some(dir) => cache::load(dir, &key),
        None => FxHashMap::default(),
    };
    let mut left: Vec<u64> = want
        .iter()
        .copied()
        .filter(|a| !cached.contains_key(a))
        .collect();
    left.sort_unstable();
    named.from_cache = (want.len() - left.len()) as u64;
    let mut all = cached;
    if !left.is_empty() {
        all.extend(resolve::names(
            &sources.files,
            &left,
            dirs,
            &mut named.notes,
        ));
        if let Some(dir) = &opts.cache_dir {
            if let Err(e) = cache::store(dir, &key, &all) {
                named.notes.push(format!(
                    "cannot keep names in {}: {e} (the next run symbolizes again)",
                    dir.display()
                ));
            }
        }
    }
    named.names = want
        .into_iter()
        .map(|a| (a, all.get(&a).cloned().unwrap_or_default()))
        .collect();
    named.has_lines = named.names.values().flatten().any(|f| f.line.is_some());
    // One function without lines is no sign (an executable whose only frame here is `_start`,
    // built from assembly); several are.
    let functions: FxHashSet<&str> = named
        .names
        .values()
        .flatten()
        .map(|f| f.function.as_str())
        .collect();
    let unnamed = named.names.values().filter(|f| f.is_empty()).count();
    if unnamed > 0 {
        named.notes.push(format!(
            "{}: {unnamed} of {} addresses have no symbol: they show as {}+0xADDR (a stripped \
             file? install its -dbgsym package or pass --debug-dir DIR)",
            m.path,
            named.names.len(),
            file_name(&m.path)
        ));
    } else if functions.len() > 1 && !named.has_lines {
        named.notes.push(format!(
            "{}: no debug information found (names from its symbol table: no files, lines or \
             inlined frames; install its -dbgsym package or pass --debug-dir DIR)",
            m.path
        ));
    }
    named
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every stack walked with its own seq: what `for_stacks` gives when modules overlap.
    fn per_stack(table: &StackTable, leaves: &[(u32, u64)]) -> Vec<(u64, u64)> {
        leaves
            .iter()
            .flat_map(|&(leaf, seq)| table.frames(leaf).map(move |a| (a, seq)))
            .collect()
    }

    #[test]
    fn walking_each_node_once_names_what_walking_each_stack_names() {
        // main (0x1100) calls f (0x1200) and g (0x1300); f calls g; 0x9000 is in no module.
        let mut table = StackTable::new();
        for (id, parent, addr) in [
            (1, 0, 0x1100),
            (2, 1, 0x1200),
            (3, 1, 0x1300),
            (4, 2, 0x1300),
            (5, 4, 0x9000),
        ] {
            assert!(table.push(id, parent, addr));
        }
        let modules = [Module {
            id: 0,
            path: "/nonexistent/allocscope-test.so".into(),
            bias: 0x1000,
            ranges: vec![(0x1000, 0x2000, 0)],
            ..Module::default()
        }];
        let leaves = [(2, 3), (3, 7), (5, 9), (4, 11), (77, 1)];
        let opts = Options::default();
        let once = Symbols::for_stacks(&table, &modules, leaves, &opts);
        let all = Symbols::resolve(&modules, per_stack(&table, &leaves), &opts);
        let figures = |s: &Symbols| (s.stats.addresses, s.stats.outside_modules, s.notes.clone());
        assert_eq!(figures(&once), figures(&all));
        assert_eq!((once.stats.addresses, once.stats.outside_modules), (3, 1));
        for (leaf, seq) in leaves {
            let labels = |s: &Symbols| -> Vec<String> {
                s.stack(&table, leaf, seq)
                    .iter()
                    .map(Place::label)
                    .collect()
            };
            assert_eq!(labels(&once), labels(&all));
        }
    }
}
