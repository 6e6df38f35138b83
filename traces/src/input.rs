//! Opening what the tools read: [`open_input`] (regular files only, never a wait on a FIFO) and
//! [`Source`], the bytes of a trace on disk or in memory behind one positioned-read function.

use std::fs::{File, OpenOptions};
use std::os::unix::fs::{FileExt, FileTypeExt, OpenOptionsExt};
use std::path::Path;

use crate::{Result, TraceError};

/// Opens a file a tool reads (a trace, a CSV workload), refusing what is not a regular file.
///
/// The open is non-blocking (`O_NONBLOCK`): opening a FIFO that has no writer would otherwise
/// wait forever. The file type is then checked, and a FIFO, directory, device or socket is
/// refused with [`TraceError::NotAFile`] naming what it is. On a regular file `O_NONBLOCK`
/// changes nothing.
pub fn open_input(path: &Path) -> Result<File> {
    let file = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)
        .map_err(TraceError::Read)?;
    let kind = file.metadata().map_err(TraceError::Read)?.file_type();
    if kind.is_file() {
        return Ok(file);
    }
    let what = if kind.is_fifo() {
        "a named pipe (FIFO)"
    } else if kind.is_dir() {
        "a directory"
    } else if kind.is_char_device() {
        "a character device"
    } else if kind.is_block_device() {
        "a block device"
    } else if kind.is_socket() {
        "a socket"
    } else {
        "not a file"
    };
    Err(TraceError::NotAFile(what))
}

/// The bytes of a trace: a file read with positioned reads (shared by decoder threads), or a
/// buffer in memory.
pub(crate) enum Source {
    File(File),
    Bytes(Vec<u8>),
}

impl Source {
    /// Length in bytes.
    pub(crate) fn len(&self) -> Result<u64> {
        match self {
            Source::File(f) => Ok(f.metadata().map_err(TraceError::Read)?.len()),
            Source::Bytes(b) => Ok(b.len() as u64),
        }
    }

    /// Fills `buf` from byte `offset`. Callers check `offset + buf.len()` against the length
    /// first; a short read is an error.
    pub(crate) fn read_at(&self, buf: &mut [u8], offset: u64) -> Result<()> {
        match self {
            Source::File(f) => f.read_exact_at(buf, offset).map_err(TraceError::Read),
            Source::Bytes(b) => {
                let range = usize::try_from(offset)
                    .ok()
                    .and_then(|start| Some(start..start.checked_add(buf.len())?))
                    .filter(|r| r.end <= b.len());
                match range {
                    Some(r) => {
                        buf.copy_from_slice(&b[r]);
                        Ok(())
                    }
                    None => Err(TraceError::Read(std::io::Error::from(
                        std::io::ErrorKind::UnexpectedEof,
                    ))),
                }
            }
        }
    }
}
