//! LEB128 varints and zigzag, the integer coding inside chunk payloads (see FORMAT.md).

/// Appends `v` as an unsigned LEB128 varint (1 to 10 bytes).
#[inline]
pub fn put_u64(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// Zigzag maps signed to unsigned so small magnitudes stay short: 0,-1,1,-2 -> 0,1,2,3.
#[inline]
pub fn zigzag(v: i64) -> u64 {
    ((v << 1) ^ (v >> 63)) as u64
}

#[inline]
pub fn unzigzag(v: u64) -> i64 {
    ((v >> 1) as i64) ^ -((v & 1) as i64)
}

/// A cursor over one varint stream. Reading past the end or an over-long varint is an error,
/// never a panic.
pub struct Cursor<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    pub fn new(buf: &'a [u8]) -> Self {
        Cursor { buf, pos: 0 }
    }

    #[inline]
    pub fn u64(&mut self) -> Option<u64> {
        // Fast path: one byte.
        let first = *self.buf.get(self.pos)?;
        self.pos += 1;
        if first < 0x80 {
            return Some(first as u64);
        }
        self.u64_slow(first)
    }

    #[cold]
    fn u64_slow(&mut self, first: u8) -> Option<u64> {
        let mut v = (first & 0x7f) as u64;
        let mut shift = 7u32;
        loop {
            let b = *self.buf.get(self.pos)?;
            self.pos += 1;
            if shift == 63 && b > 1 {
                return None; // more than 64 bits
            }
            v |= ((b & 0x7f) as u64) << shift;
            if b < 0x80 {
                return Some(v);
            }
            shift += 7;
            if shift > 63 {
                return None;
            }
        }
    }

    #[inline]
    pub fn byte(&mut self) -> Option<u8> {
        let b = *self.buf.get(self.pos)?;
        self.pos += 1;
        Some(b)
    }

    /// Splits off the next `len` bytes as their own slice.
    pub fn take(&mut self, len: usize) -> Option<&'a [u8]> {
        let end = self.pos.checked_add(len)?;
        let s = self.buf.get(self.pos..end)?;
        self.pos = end;
        Some(s)
    }

    /// Bytes not yet read.
    pub fn remaining(&self) -> usize {
        self.buf.len().saturating_sub(self.pos)
    }

    pub fn is_empty(&self) -> bool {
        self.pos >= self.buf.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn u64_round_trips(v in any::<u64>()) {
            let mut out = Vec::new();
            put_u64(&mut out, v);
            prop_assert!(out.len() <= 10);
            let mut c = Cursor::new(&out);
            prop_assert_eq!(c.u64(), Some(v));
            prop_assert!(c.is_empty());
        }

        #[test]
        fn zigzag_round_trips(v in any::<i64>()) {
            prop_assert_eq!(unzigzag(zigzag(v)), v);
        }
    }

    #[test]
    fn zigzag_keeps_small_values_small() {
        assert_eq!([0, -1, 1, -2, 2].map(zigzag), [0, 1, 2, 3, 4]);
    }

    #[test]
    fn overlong_and_truncated_varints_are_errors() {
        assert_eq!(Cursor::new(&[0x80]).u64(), None);
        assert_eq!(Cursor::new(&[0xff; 11]).u64(), None);
        assert_eq!(
            Cursor::new(&[0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x02]).u64(),
            None
        );
        assert_eq!(
            Cursor::new(&[0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01]).u64(),
            Some(u64::MAX)
        );
    }
}
