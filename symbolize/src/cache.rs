//! Names kept between runs, one file per module and set of files.
//!
//! Symbolizing a large library (libpython's DWARF) takes seconds; a second report or export of
//! the same trace should not pay it again. The cache keeps, for one module, the names of every
//! address asked so far, in `DIR/<key>.json`, where the key is a SHA-256 of everything the
//! names depend on: the module's path and build-id, the files names were read from (path,
//! length, modification time: [`FileStamp`]), the debug directories searched and this format's
//! version. A file rebuilt, a debug package installed, another `--debug-dir`: another key, and
//! the old file is simply not read again. Other traces of the same program reuse the file.
//!
//! The file is a claim like any input: read only when it is a regular file under
//! [`MAX_CACHE_BYTES`], and anything that does not parse or does not carry the expected key is
//! a miss (the names are computed again and the file rewritten). Written to a temporary file in
//! the directory and renamed into place: a reader never sees half a file.

use std::io::Write;
use std::path::{Path, PathBuf};

use rustc_hash::FxHashMap;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::files::FileStamp;
use crate::Frame;

/// Version of the cache file's content; part of the key.
const CACHE_VERSION: u32 = 2;

/// Largest cache file read (bigger is not ours, or damaged).
pub const MAX_CACHE_BYTES: u64 = 256 << 20;

/// What a module's names depend on.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Key {
    pub version: u32,
    pub module_path: String,
    pub build_id: String,
    pub files: Vec<FileStamp>,
    pub debug_dirs: Vec<String>,
}

impl Key {
    pub fn new(module_path: &str, build_id: &str, files: &[FileStamp], dirs: &[PathBuf]) -> Key {
        Key {
            version: CACHE_VERSION,
            module_path: module_path.to_string(),
            build_id: build_id.to_string(),
            files: files.to_vec(),
            debug_dirs: dirs.iter().map(|d| d.display().to_string()).collect(),
        }
    }

    /// The cache file of this key in `dir`.
    pub fn path_in(&self, dir: &Path) -> PathBuf {
        let json = serde_json::to_vec(self).unwrap_or_default();
        let digest = Sha256::digest(&json);
        dir.join(format!("{}.json", crate::files::hex(&digest[..16])))
    }
}

/// One cache file: the key it was made for and the names of the addresses asked so far (file
/// addresses, as looked up: a return address minus one, minus the load bias).
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct Entry {
    pub key: Option<Key>,
    pub names: Vec<(u64, Vec<Frame>)>,
}

/// The names cached for `key` in `dir` (empty on a miss).
pub fn load(dir: &Path, key: &Key) -> FxHashMap<u64, Vec<Frame>> {
    let path = key.path_in(dir);
    let fits = std::fs::metadata(&path).is_ok_and(|m| m.is_file() && m.len() <= MAX_CACHE_BYTES);
    if !fits {
        return FxHashMap::default();
    }
    let Ok(bytes) = std::fs::read(&path) else {
        return FxHashMap::default();
    };
    match serde_json::from_slice::<Entry>(&bytes) {
        Ok(e) if e.key.as_ref() == Some(key) => e.names.into_iter().collect(),
        _ => FxHashMap::default(),
    }
}

/// Writes the names for `key` into `dir` (created when missing).
pub fn store(dir: &Path, key: &Key, names: &FxHashMap<u64, Vec<Frame>>) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    let mut sorted: Vec<(u64, Vec<Frame>)> = names.iter().map(|(&a, f)| (a, f.clone())).collect();
    sorted.sort_unstable_by_key(|&(a, _)| a);
    let entry = Entry {
        key: Some(key.clone()),
        names: sorted,
    };
    let mut tmp = tempfile::NamedTempFile::new_in(dir)?;
    serde_json::to_writer(std::io::BufWriter::new(tmp.as_file_mut()), &entry)?;
    tmp.as_file_mut().flush()?;
    tmp.persist(key.path_in(dir)).map_err(|e| e.error)?;
    Ok(())
}

/// The default cache directory: `$XDG_CACHE_HOME/allocscope/symbols`, else
/// `$HOME/.cache/allocscope/symbols`; none when neither is set.
pub fn default_dir() -> Option<PathBuf> {
    let base = std::env::var_os("XDG_CACHE_HOME")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .or_else(|| {
            std::env::var_os("HOME")
                .filter(|v| !v.is_empty())
                .map(|h| PathBuf::from(h).join(".cache"))
        })?;
    Some(base.join("allocscope").join("symbols"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_misses() {
        let dir = tempfile::tempdir().unwrap();
        let key = Key::new("/lib/x.so", "abcd", &[], &[]);
        let mut names = FxHashMap::default();
        names.insert(
            0x10,
            vec![Frame {
                function: "f".into(),
                file: Some("f.c".into()),
                line: Some(3),
                inlined: false,
            }],
        );
        names.insert(0x20, vec![]);
        store(dir.path(), &key, &names).unwrap();
        assert_eq!(load(dir.path(), &key), names);
        // Another key: another file, a miss.
        let other = Key::new("/lib/x.so", "abce", &[], &[]);
        assert!(load(dir.path(), &other).is_empty());
        // A damaged file is a miss, not an error.
        std::fs::write(key.path_in(dir.path()), b"{\"key\": 3").unwrap();
        assert!(load(dir.path(), &key).is_empty());
        // A file of another key under this key's name (a collision, a copy): a miss.
        store(dir.path(), &other, &names).unwrap();
        std::fs::copy(other.path_in(dir.path()), key.path_in(dir.path())).unwrap();
        assert!(load(dir.path(), &key).is_empty());
    }
}
