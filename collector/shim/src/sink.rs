//! The trace file as the writer sees it: a `File` that checks, before every write, that its
//! descriptor still refers to the file it created.
//!
//! Programs close descriptors they did not open (daemons `closefrom(3)` after fork) and reuse the
//! numbers; writing trace chunks into whatever the program opened next would corrupt its data. So
//! each write first compares the descriptor's device and inode with the ones saved at creation, and
//! fails (recording stops, the program goes on) when they differ. The descriptor is also moved to a
//! high number, out of the way of programs that assume the low ones are theirs. A descriptor found
//! replaced is never closed (the number is the program's now).

use std::fs::File;
use std::io::{self, Write};
use std::mem::ManuallyDrop;
use std::os::fd::{AsRawFd, FromRawFd};
use std::os::unix::fs::MetadataExt;

/// Lowest descriptor number the trace file is moved to.
const HIGH_FD: libc::c_int = 600;

pub struct GuardedFile {
    /// Closed on drop unless `replaced`: then the number belongs to the program now.
    file: ManuallyDrop<File>,
    dev: u64,
    ino: u64,
    replaced: bool,
}

impl Drop for GuardedFile {
    fn drop(&mut self) {
        if !self.replaced {
            // SAFETY: dropped once, here; `file` is not used after.
            unsafe { ManuallyDrop::drop(&mut self.file) };
        }
    }
}

impl GuardedFile {
    pub fn new(file: File) -> io::Result<GuardedFile> {
        // SAFETY: F_DUPFD_CLOEXEC on a descriptor we own returns a new descriptor (or -1), which we
        // then own alone; the original is closed when `file` is dropped.
        let high = unsafe { libc::fcntl(file.as_raw_fd(), libc::F_DUPFD_CLOEXEC, HIGH_FD) };
        let file = if high >= 0 {
            // SAFETY: `high` is a fresh descriptor owned by nobody else.
            unsafe { File::from_raw_fd(high) }
        } else {
            file
        };
        let meta = file.metadata()?;
        Ok(GuardedFile {
            dev: meta.dev(),
            ino: meta.ino(),
            file: ManuallyDrop::new(file),
            replaced: false,
        })
    }

    fn check(&mut self) -> io::Result<()> {
        let mut st: libc::stat = unsafe_zeroed_stat();
        // SAFETY: `st` is a valid out-pointer for fstat.
        let rc = unsafe { libc::fstat(self.file.as_raw_fd(), &mut st) };
        if rc != 0 || st.st_dev != self.dev || st.st_ino != self.ino {
            self.replaced = true;
            return Err(io::Error::other(
                "the program closed or replaced the trace file's descriptor; recording stopped",
            ));
        }
        Ok(())
    }
}

fn unsafe_zeroed_stat() -> libc::stat {
    // SAFETY: `stat` is plain data for which all-zero bytes are a valid value.
    unsafe { std::mem::zeroed() }
}

impl Write for GuardedFile {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if self.replaced {
            return Err(io::Error::other("trace descriptor lost"));
        }
        self.check()?;
        self.file.write(buf)
    }

    fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
        if self.replaced {
            return Err(io::Error::other("trace descriptor lost"));
        }
        self.check()?;
        self.file.write_all(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        if self.replaced {
            return Ok(());
        }
        self.file.flush()
    }
}
