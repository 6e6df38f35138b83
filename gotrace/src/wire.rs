//! The trace's integer coding: unsigned LEB128 varints (Go's `binary.Uvarint`), at most 10 bytes,
//! read from a byte slice with every bound checked.

/// The most bytes a varint of a 64-bit value takes.
pub const MAX_VARINT_BYTES: usize = 10;

/// Why a varint could not be read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VarintError {
    /// The bytes ended inside the varint.
    Short,
    /// More than 10 bytes, or a value past 2^64.
    Overflow,
}

impl std::fmt::Display for VarintError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            VarintError::Short => "a number runs past the end of its batch",
            VarintError::Overflow => "a number is longer than 10 bytes",
        })
    }
}

/// Reads one varint at `*pos`, moving `*pos` past it.
#[inline]
pub fn uvarint(bytes: &[u8], pos: &mut usize) -> Result<u64, VarintError> {
    // Fast path: one byte (most deltas and small ids).
    if let Some(&b) = bytes.get(*pos) {
        if b < 0x80 {
            *pos += 1;
            return Ok(b as u64);
        }
    }
    uvarint_slow(bytes, pos)
}

#[cold]
#[inline(never)]
fn uvarint_slow(bytes: &[u8], pos: &mut usize) -> Result<u64, VarintError> {
    let mut value = 0u64;
    for i in 0..MAX_VARINT_BYTES {
        let Some(&b) = bytes.get(*pos + i) else {
            return Err(VarintError::Short);
        };
        if i == MAX_VARINT_BYTES - 1 && b > 1 {
            return Err(VarintError::Overflow);
        }
        value |= ((b & 0x7f) as u64) << (7 * i);
        if b < 0x80 {
            *pos += i + 1;
            return Ok(value);
        }
    }
    Err(VarintError::Overflow)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn encode(mut v: u64) -> Vec<u8> {
        let mut out = Vec::new();
        while v >= 0x80 {
            out.push((v as u8) | 0x80);
            v >>= 7;
        }
        out.push(v as u8);
        out
    }

    #[test]
    fn round_trips_edges() {
        for v in [0, 1, 127, 128, 300, 1 << 35, u64::MAX - 1, u64::MAX] {
            let b = encode(v);
            let mut pos = 0;
            assert_eq!(uvarint(&b, &mut pos), Ok(v));
            assert_eq!(pos, b.len());
        }
    }

    #[test]
    fn refuses_short_and_long() {
        let mut pos = 0;
        assert_eq!(uvarint(&[0x80, 0x80], &mut pos), Err(VarintError::Short));
        assert_eq!(pos, 0);
        let long = [0xff; 11];
        assert_eq!(uvarint(&long, &mut pos), Err(VarintError::Overflow));
        // 10th byte above 1: past 2^64.
        let mut over = vec![0xff; 9];
        over.push(0x02);
        assert_eq!(uvarint(&over, &mut pos), Err(VarintError::Overflow));
    }
}
