//! Where a trace's bytes come from: a file read with positioned reads, or bytes in memory (tests,
//! the fuzzer). The reader only ever asks for a batch header (a few dozen bytes) or one batch
//! (at most 64 KiB) at a time.

use std::fs::File;
use std::os::unix::fs::FileExt;

/// Random access to a trace's bytes.
pub trait Source {
    /// Length in bytes.
    fn size(&self) -> std::io::Result<u64>;
    /// Fills `buf` from byte `offset`; the caller keeps `offset + buf.len()` within [`size`].
    ///
    /// [`size`]: Source::size
    fn read_at(&self, buf: &mut [u8], offset: u64) -> std::io::Result<()>;
}

impl Source for File {
    fn size(&self) -> std::io::Result<u64> {
        Ok(self.metadata()?.len())
    }
    fn read_at(&self, buf: &mut [u8], offset: u64) -> std::io::Result<()> {
        self.read_exact_at(buf, offset)
    }
}

impl Source for [u8] {
    fn size(&self) -> std::io::Result<u64> {
        Ok(<[u8]>::len(self) as u64)
    }
    fn read_at(&self, buf: &mut [u8], offset: u64) -> std::io::Result<()> {
        let start = usize::try_from(offset).unwrap_or(usize::MAX);
        match start
            .checked_add(buf.len())
            .and_then(|end| self.get(start..end))
        {
            Some(src) => {
                buf.copy_from_slice(src);
                Ok(())
            }
            None => Err(std::io::ErrorKind::UnexpectedEof.into()),
        }
    }
}

impl Source for Vec<u8> {
    fn size(&self) -> std::io::Result<u64> {
        Ok(<[u8]>::len(self) as u64)
    }
    fn read_at(&self, buf: &mut [u8], offset: u64) -> std::io::Result<()> {
        self.as_slice().read_at(buf, offset)
    }
}

impl<S: Source + ?Sized> Source for &S {
    fn size(&self) -> std::io::Result<u64> {
        (**self).size()
    }
    fn read_at(&self, buf: &mut [u8], offset: u64) -> std::io::Result<()> {
        (**self).read_at(buf, offset)
    }
}
