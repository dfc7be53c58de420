//! A metadata area (LVM2 `mda_header` + circular text buffer): the header
//! (CRC-checked) points at the current copy of the VG metadata text with a
//! `raw_locn`; the text may wrap from the end of the area back to just after
//! the header, and its CRC covers the text as one run.

use super::consts::*;
use super::label::{Area, Label};
use super::{LvmError, crc, le_u32, le_u64, read};
use crate::block::ReadAt;

/// The current metadata text of one metadata area.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MetadataCopy {
    /// Where the area's header lies, from the PV start.
    pub area_offset: u64,
    /// The text, without the NUL that ends it on disk.
    pub text: Vec<u8>,
}

/// The current metadata text of every metadata area of the PV: `Ok(None)`
/// for an area that holds none (a PV in no VG) or whose copy is flagged
/// as ignored; `Err` for an area that is damaged.
pub fn read_metadata(pv: &dyn ReadAt, label: &Label) -> Vec<Result<Option<MetadataCopy>, LvmError>> {
    label.metadata_areas.iter().map(|a| read_area(pv, *a)).collect()
}

fn read_area(pv: &dyn ReadAt, area: Area) -> Result<Option<MetadataCopy>, LvmError> {
    let o = area.offset;
    let mut h = [0u8; MDA_HEADER_SIZE as usize];
    read(pv, o, &mut h)?;
    let stored = le_u32(&h, 0);
    let computed = crc(INITIAL_CRC, &h[MDA_MAGIC_AT..]);
    if stored != computed {
        return Err(LvmError::corrupt(
            o,
            format!("metadata area header CRC {stored:#010x}, computed {computed:#010x}"),
        ));
    }
    if &h[MDA_MAGIC_AT..MDA_MAGIC_AT + 16] != MDA_MAGIC {
        return Err(LvmError::corrupt(o, "metadata area header magic"));
    }
    let version = le_u32(&h, MDA_VERSION_AT);
    if version != MDA_VERSION {
        return Err(LvmError::unsupported(o, format!("metadata area version {version}")));
    }
    let (start, size) = (le_u64(&h, MDA_START_AT), le_u64(&h, MDA_SIZE_AT));
    if start != o || size <= MDA_HEADER_SIZE || size > area.size {
        return Err(LvmError::corrupt(o, format!("metadata area header says {size} bytes at {start}")));
    }
    let r = &h[MDA_RLOCN_AT..MDA_RLOCN_AT + RAW_LOCN_LEN];
    let (offset, len, checksum, flags) = (le_u64(r, 0), le_u64(r, 8), le_u32(r, 16), le_u32(r, 20));
    if offset == 0 || flags & RAW_LOCN_IGNORED != 0 {
        return Ok(None);
    }
    if len > MAX_TEXT_LEN {
        return Err(LvmError::unsupported(o, format!("metadata text of {len} bytes (limit {MAX_TEXT_LEN})")));
    }
    if offset < MDA_HEADER_SIZE || offset >= size || len > size - MDA_HEADER_SIZE {
        return Err(LvmError::corrupt(o, format!("metadata text of {len} bytes at {offset} in a {size}-byte area")));
    }
    // OK: offset < size, len <= MAX_TEXT_LEN, so nothing below overflows.
    let first = len.min(size - offset);
    let mut text = vec![0u8; len as usize];
    read(pv, o + offset, &mut text[..first as usize])?;
    // The rest wraps round to just after the header.
    read(pv, o + MDA_HEADER_SIZE, &mut text[first as usize..])?;
    let computed = crc(INITIAL_CRC, &text);
    if computed != checksum {
        return Err(LvmError::corrupt(
            o + offset,
            format!("metadata text CRC {checksum:#010x}, computed {computed:#010x}"),
        ));
    }
    while text.last() == Some(&0) {
        text.pop();
    }
    Ok(Some(MetadataCopy { area_offset: o, text }))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::block::MemImage;

    /// Writes an mda of `size` bytes at `at` in `d` holding `text` at
    /// `text_at` (relative to the area; it wraps when it runs past the end).
    pub fn put_mda(d: &mut [u8], at: u64, size: u64, text_at: u64, text: &[u8]) {
        let mut t = text.to_vec();
        t.push(0);
        let base = at as usize;
        for (i, b) in t.iter().enumerate() {
            let mut rel = text_at + i as u64;
            if rel >= size {
                rel = rel - size + MDA_HEADER_SIZE;
            }
            d[base + rel as usize] = *b;
        }
        let h = &mut d[base..base + 512];
        h.fill(0);
        h[4..20].copy_from_slice(MDA_MAGIC);
        h[20..24].copy_from_slice(&MDA_VERSION.to_le_bytes());
        h[24..32].copy_from_slice(&at.to_le_bytes());
        h[32..40].copy_from_slice(&size.to_le_bytes());
        h[40..48].copy_from_slice(&text_at.to_le_bytes());
        h[48..56].copy_from_slice(&(t.len() as u64).to_le_bytes());
        h[56..60].copy_from_slice(&crc(INITIAL_CRC, &t).to_le_bytes());
        let c = crc(INITIAL_CRC, &h[4..]);
        h[0..4].copy_from_slice(&c.to_le_bytes());
    }

    fn label(at: u64, size: u64) -> Label {
        Label {
            sector: 1,
            pv_uuid: String::new(),
            device_size: 0,
            data_areas: vec![],
            metadata_areas: vec![Area { offset: at, size }],
        }
    }

    #[test]
    fn plain_and_wrapped_text() {
        let mut d = vec![0u8; 16384];
        put_mda(&mut d, 4096, 8192, 512, b"hello");
        let got = read_metadata(&MemImage(d.clone()), &label(4096, 8192));
        assert_eq!(got[0].as_ref().unwrap().as_ref().unwrap().text, b"hello");
        // Starting 3 bytes before the end: "hel" at the end, "lo\0" after the header.
        put_mda(&mut d, 4096, 8192, 8192 - 3, b"hello");
        let got = read_metadata(&MemImage(d.clone()), &label(4096, 8192));
        assert_eq!(got[0].as_ref().unwrap().as_ref().unwrap().text, b"hello");
        // Damage to the text shows as a CRC error.
        d[4096 + 512] ^= 1;
        let got = read_metadata(&MemImage(d.clone()), &label(4096, 8192));
        assert!(matches!(got[0], Err(LvmError::Corrupt { .. })), "{got:?}");
        // A header that points elsewhere is refused.
        assert!(read_metadata(&MemImage(d), &label(0, 8192))[0].is_err());
    }
}
