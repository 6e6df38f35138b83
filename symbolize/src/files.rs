//! Finding the files that name a module's addresses.
//!
//! For each module of a trace, in this order:
//! 1. a separate debug file whose build-id is the recording's: `DIR/.build-id/xx/rest.debug`,
//!    `DIR/NAME.debug`, `DIR/NAME` or `DIR/PATH.debug` in each `--debug-dir`, then in the
//!    system's directories ([`SYSTEM_DEBUG_DIRS`], where Debian's -dbgsym packages install);
//! 2. the module's own file at its recorded path, when its build-id is the recording's (a file
//!    rebuilt or upgraded since would give wrong names: it is not used, and a note says so once).
//!    blazesym reads its symbol tables and DWARF, and follows its `.gnu_debuglink` into the same
//!    directories.
//!
//! A module without a build-id in the trace is matched by path alone. Only regular files are
//! opened (a trace naming a FIFO or a device cannot make us block or read it). What was found
//! is stamped (path, length, modification time) so that a cache of names can tell when a file
//! changed or a debug package was installed.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use traces::Module;

/// Where Debian (and most distributions) put separate debug files.
pub const SYSTEM_DEBUG_DIRS: [&str; 2] = ["/usr/lib/debug", "/lib/debug"];

/// A file names were read from, as it was when they were read.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileStamp {
    pub path: String,
    pub len: u64,
    pub mtime_ns: i128,
}

impl FileStamp {
    fn of(path: &Path, meta: &std::fs::Metadata) -> FileStamp {
        let mtime_ns = meta
            .modified()
            .ok()
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
            .map_or(0, |d| d.as_nanos() as i128);
        FileStamp {
            path: path.display().to_string(),
            len: meta.len(),
            mtime_ns,
        }
    }
}

/// The files to ask for a module's names, best first, and what was found on the way.
#[derive(Clone, Debug, Default)]
pub struct Sources {
    pub files: Vec<PathBuf>,
    pub stamps: Vec<FileStamp>,
    /// One line per problem (a file not found, a build-id that differs).
    pub notes: Vec<String>,
    /// The module's own file is among `files`.
    pub own_file: bool,
}

/// Finds the files for `m`, looking for separate debug files in `dirs` (the user's, then the
/// system's).
pub fn find(m: &Module, dirs: &[PathBuf]) -> Sources {
    let mut s = Sources::default();
    let own = Path::new(&m.path);
    let mut expected = m.build_id.clone();
    match regular(own) {
        Some(meta) => match build_id(own) {
            Ok(id) if !m.build_id.is_empty() && id != m.build_id => s.notes.push(format!(
                "{}: its build-id ({}) differs from the recording's ({}): the file changed \
                 since; not used",
                m.path,
                or_none(&id),
                m.build_id
            )),
            Ok(id) => {
                if expected.is_empty() {
                    expected = id;
                }
                s.own_file = true;
                s.stamps.push(FileStamp::of(own, &meta));
            }
            Err(e) => s
                .notes
                .push(format!("{}: not an ELF file we can read: {e}", m.path)),
        },
        None if m.path.is_empty() || m.path.starts_with('[') => {}
        None if own.exists() => s.notes.push(format!("{}: not a regular file", m.path)),
        None => s
            .notes
            .push(format!("{}: not found on this machine", m.path)),
    }
    if let Some((path, meta)) = debug_file(m, &expected, dirs, &mut s.notes) {
        s.stamps.insert(0, FileStamp::of(&path, &meta));
        s.files.push(path);
    }
    if s.own_file {
        s.files.push(own.to_path_buf());
    }
    s
}

/// The first separate debug file for `m` whose build-id is `expected` (any, when empty).
fn debug_file(
    m: &Module,
    expected: &str,
    dirs: &[PathBuf],
    notes: &mut Vec<String>,
) -> Option<(PathBuf, std::fs::Metadata)> {
    let name = Path::new(&m.path)
        .file_name()?
        .to_string_lossy()
        .into_owned();
    for dir in dirs {
        let mut candidates = Vec::new();
        if expected.len() > 2 && expected.is_ascii() {
            let (head, rest) = expected.split_at(2);
            candidates.push(
                dir.join(".build-id")
                    .join(head)
                    .join(format!("{rest}.debug")),
            );
        }
        candidates.push(dir.join(format!("{name}.debug")));
        candidates.push(dir.join(&name));
        candidates.push(dir.join(format!("{}.debug", m.path.trim_start_matches('/'))));
        for c in candidates {
            let Some(meta) = regular(&c) else { continue };
            if c == Path::new(&m.path) {
                continue;
            }
            match build_id(&c) {
                Ok(id) if expected.is_empty() || id == expected => return Some((c, meta)),
                Ok(id) => notes.push(format!(
                    "{}: its build-id ({}) is not the recording's {} ({expected}): not used",
                    c.display(),
                    or_none(&id),
                    m.path
                )),
                Err(_) => {}
            }
        }
    }
    None
}

/// The metadata of `path` when it is a regular file (symlinks followed).
fn regular(path: &Path) -> Option<std::fs::Metadata> {
    std::fs::metadata(path).ok().filter(|m| m.is_file())
}

/// The GNU build-id of an ELF file, lower-case hex ("" when it has none).
pub fn build_id(path: &Path) -> Result<String, blazesym::Error> {
    let id = blazesym::helper::read_elf_build_id(path)?;
    Ok(id.map(|b| hex(&b)).unwrap_or_default())
}

pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn or_none(id: &str) -> &str {
    if id.is_empty() {
        "none"
    } else {
        id
    }
}
