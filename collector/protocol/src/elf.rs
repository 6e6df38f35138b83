//! The few ELF facts the shim reads from loaded modules (no file access: the loader's program
//! headers and mapped segments), kept here so they are unit-tested.

/// Reads an encoded pointer of `.eh_frame_hdr` (only the encodings toolchains emit there:
/// absolute or pc-relative 4 or 8 bytes). `at` is the runtime address of the field.
pub fn read_encoded(enc: u8, bytes: &[u8], at: u64) -> Option<u64> {
    let value: i64 = match enc & 0x0f {
        0x03 => u32::from_le_bytes(bytes.get(..4)?.try_into().ok()?) as i64, // udata4
        0x0b => i32::from_le_bytes(bytes.get(..4)?.try_into().ok()?) as i64, // sdata4
        0x04 | 0x0c => i64::from_le_bytes(bytes.get(..8)?.try_into().ok()?), // (u|s)data8
        _ => return None,
    };
    match enc & 0x70 {
        0x00 => Some(value as u64),
        0x10 => Some(at.wrapping_add(value as u64)), // pcrel
        _ => None,
    }
}

/// The GNU build-id in a PT_NOTE segment's bytes.
pub fn build_id(notes: &[u8]) -> Option<Vec<u8>> {
    let mut at = 0usize;
    while at + 12 <= notes.len() {
        let word = |i: usize| u32::from_le_bytes(notes[i..i + 4].try_into().unwrap()) as usize;
        let (namesz, descsz, kind) = (word(at), word(at + 4), word(at + 8));
        let name_at = at + 12;
        let desc_at = name_at + namesz.next_multiple_of(4);
        let end = desc_at.checked_add(descsz.next_multiple_of(4))?;
        if end > notes.len() {
            return None;
        }
        // NT_GNU_BUILD_ID = 3, name "GNU\0".
        if kind == 3 && namesz == 4 && &notes[name_at..name_at + 4] == b"GNU\0" {
            return Some(notes[desc_at..desc_at + descsz].to_vec());
        }
        at = end;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_a_build_id_note() {
        let mut n = Vec::new();
        n.extend_from_slice(&4u32.to_le_bytes());
        n.extend_from_slice(&3u32.to_le_bytes());
        n.extend_from_slice(&3u32.to_le_bytes());
        n.extend_from_slice(b"GNU\0");
        n.extend_from_slice(&[0xab, 0xcd, 0xef, 0]);
        assert_eq!(build_id(&n), Some(vec![0xab, 0xcd, 0xef]));
        assert_eq!(build_id(&n[..10]), None);
    }

    #[test]
    fn pc_relative_pointers_are_resolved() {
        assert_eq!(
            read_encoded(0x1b, &(-16i32).to_le_bytes(), 0x1000),
            Some(0xff0)
        );
        assert_eq!(
            read_encoded(0x03, &0x40u32.to_le_bytes(), 0x1000),
            Some(0x40)
        );
        assert_eq!(read_encoded(0x31, &[0; 8], 0), None);
    }
}
