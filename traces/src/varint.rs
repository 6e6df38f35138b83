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

/// A cursor over one varint stream. Reading past the end or an over-long varint does not panic:
/// it yields 0 and sets a sticky `failed` flag that the caller checks once, after a whole chunk,
/// which keeps error handling out of the decode loop.
pub struct Cursor<'a> {
    buf: &'a [u8],
    pos: usize,
    failed: bool,
}

impl<'a> Cursor<'a> {
    pub fn new(buf: &'a [u8]) -> Self {
        Cursor {
            buf,
            pos: 0,
            failed: false,
        }
    }

    /// The next varint (0 after a failure).
    #[inline(always)]
    pub fn u64(&mut self) -> u64 {
        if let Some(&b) = self.buf.get(self.pos) {
            if b < 0x80 {
                self.pos += 1;
                return b as u64;
            }
        }
        self.u64_slow()
    }

    #[inline(never)]
    fn u64_slow(&mut self) -> u64 {
        let mut v = 0u64;
        for i in 0..10 {
            let Some(&b) = self.buf.get(self.pos + i) else {
                break;
            };
            if i == 9 && b > 1 {
                break; // more than 64 bits
            }
            v |= ((b & 0x7f) as u64) << (7 * i);
            if b < 0x80 {
                self.pos += i + 1;
                return v;
            }
        }
        self.failed = true;
        self.pos = self.buf.len();
        0
    }

    /// The next byte (0 after a failure).
    #[inline(always)]
    pub fn byte(&mut self) -> u8 {
        match self.buf.get(self.pos) {
            Some(&b) => {
                self.pos += 1;
                b
            }
            None => {
                self.failed = true;
                0
            }
        }
    }

    /// Splits off the next `len` bytes as their own slice.
    pub fn take(&mut self, len: usize) -> Option<&'a [u8]> {
        let end = self.pos.checked_add(len)?;
        let s = self.buf.get(self.pos..end)?;
        self.pos = end;
        Some(s)
    }

    /// True once any read ran past the end or met an over-long varint.
    pub fn failed(&self) -> bool {
        self.failed
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
            prop_assert_eq!(c.u64(), v);
            prop_assert!(c.is_empty() && !c.failed());
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
        let read = |bytes: &[u8]| {
            let mut c = Cursor::new(bytes);
            let v = c.u64();
            (!c.failed()).then_some(v)
        };
        assert_eq!(read(&[0x80]), None);
        assert_eq!(read(&[]), None);
        assert_eq!(read(&[0xff; 11]), None);
        assert_eq!(
            read(&[0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x02]),
            None
        );
        assert_eq!(
            read(&[0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01]),
            Some(u64::MAX)
        );
        assert_eq!(read(&[0x96, 0x01]), Some(150));
    }
}
