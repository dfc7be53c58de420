//! The PV label (LVM2 `label_header` + `pv_header`): in one of the first four
//! sectors of the PV, CRC-checked; it names the PV's UUID and lists its data
//! areas and metadata areas as (offset, size) pairs from the PV start.

use super::consts::*;
use super::{LvmError, crc, le_u32, le_u64};
use crate::block::ReadAt;

/// One `disk_locn`: `size` bytes at `offset` from the PV start (size 0 in
/// the data area list: up to the end of the device).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Area {
    pub offset: u64,
    pub size: u64,
}

/// A PV label.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Label {
    /// The sector the label was found in.
    pub sector: u64,
    /// The PV UUID: 32 characters, no hyphens.
    pub pv_uuid: String,
    /// The device size the PV was created with, in bytes.
    pub device_size: u64,
    pub data_areas: Vec<Area>,
    pub metadata_areas: Vec<Area>,
}

/// Finds and checks the label in the first four sectors. `Ok(None)`: no
/// label (not a PV); `Err`: a label whose CRC or contents are wrong.
pub fn read_label(pv: &dyn ReadAt) -> Result<Option<Label>, LvmError> {
    let mut buf = vec![0u8; (SECTOR * LABEL_SCAN_SECTORS) as usize];
    let n = crate::block::read_at_most(pv, 0, &mut buf).map_err(|source| LvmError::Io { offset: 0, source })?;
    for sector in 0..LABEL_SCAN_SECTORS {
        let at = (sector * SECTOR) as usize;
        let Some(s) = buf.get(at..at + SECTOR as usize).filter(|_| at + SECTOR as usize <= n) else { break };
        if &s[..8] != LABEL_ID || &s[LABEL_TYPE_AT..LABEL_TYPE_AT + 8] != LABEL_TYPE {
            continue;
        }
        return parse_sector(s, sector).map(Some);
    }
    Ok(None)
}

fn parse_sector(s: &[u8], sector: u64) -> Result<Label, LvmError> {
    let base = sector * SECTOR;
    let stored = le_u32(s, LABEL_CRC_AT);
    let computed = crc(INITIAL_CRC, &s[LABEL_CRC_FROM..]);
    if stored != computed {
        return Err(LvmError::corrupt(base, format!("label CRC {stored:#010x}, computed {computed:#010x}")));
    }
    let claimed = le_u64(s, LABEL_SECTOR_AT);
    if claimed != sector {
        return Err(LvmError::corrupt(base, format!("label in sector {sector} says it is in sector {claimed}")));
    }
    let offset = le_u32(s, LABEL_OFFSET_AT) as usize;
    // The pv_header must hold the UUID, the size and two list terminators.
    let min = ID_LEN + 8 + 2 * DISK_LOCN_LEN;
    if offset < LABEL_TYPE_AT + 8 || offset.checked_add(min).is_none_or(|end| end > s.len()) {
        return Err(LvmError::corrupt(base, format!("pv_header offset {offset} in a {}-byte sector", s.len())));
    }
    let h = &s[offset..];
    let uuid = &h[..ID_LEN];
    if !uuid.iter().all(|b| b.is_ascii_graphic()) {
        return Err(LvmError::corrupt(base + offset as u64, "PV UUID is not printable"));
    }
    let device_size = le_u64(h, ID_LEN);
    let mut at = ID_LEN + 8;
    let data_areas = read_list(h, &mut at, base + offset as u64)?;
    let metadata_areas = read_list(h, &mut at, base + offset as u64)?;
    Ok(Label { sector, pv_uuid: String::from_utf8_lossy(uuid).into_owned(), device_size, data_areas, metadata_areas })
}

/// One zero-terminated `disk_locn` list from `h[*at..]`.
fn read_list(h: &[u8], at: &mut usize, base: u64) -> Result<Vec<Area>, LvmError> {
    let mut out = Vec::new();
    loop {
        let Some(e) = h.get(*at..*at + DISK_LOCN_LEN) else {
            return Err(LvmError::corrupt(base + *at as u64, "area list runs past the label sector"));
        };
        *at += DISK_LOCN_LEN;
        let area = Area { offset: le_u64(e, 0), size: le_u64(e, 8) };
        if area.offset == 0 {
            return Ok(out);
        }
        if out.len() == MAX_AREAS {
            return Err(LvmError::corrupt(base + *at as u64, format!("more than {MAX_AREAS} areas in a list")));
        }
        out.push(area);
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::block::MemImage;

    /// A label sector for `uuid` with one data area and the given metadata areas.
    pub fn label_sector(sector: u64, uuid: &[u8; 32], size: u64, pe_start: u64, mdas: &[Area]) -> Vec<u8> {
        let mut s = vec![0u8; 512];
        s[..8].copy_from_slice(LABEL_ID);
        s[8..16].copy_from_slice(&sector.to_le_bytes());
        s[20..24].copy_from_slice(&32u32.to_le_bytes());
        s[24..32].copy_from_slice(LABEL_TYPE);
        s[32..64].copy_from_slice(uuid);
        s[64..72].copy_from_slice(&size.to_le_bytes());
        s[72..80].copy_from_slice(&pe_start.to_le_bytes());
        let mut at = 104;
        for m in mdas {
            s[at..at + 8].copy_from_slice(&m.offset.to_le_bytes());
            s[at + 8..at + 16].copy_from_slice(&m.size.to_le_bytes());
            at += 16;
        }
        let c = crc(INITIAL_CRC, &s[20..]);
        s[16..20].copy_from_slice(&c.to_le_bytes());
        s
    }

    #[test]
    fn label_found_checked_and_listed() {
        let mut d = vec![0u8; 8192];
        let mda = Area { offset: 4096, size: 1 << 20 };
        d[512..1024].copy_from_slice(&label_sector(1, &[b'A'; 32], 1 << 30, 1 << 20, &[mda]));
        let l = read_label(&MemImage(d.clone())).unwrap().unwrap();
        assert_eq!((l.sector, l.pv_uuid.as_str(), l.device_size), (1, "A".repeat(32).as_str(), 1 << 30));
        assert_eq!(l.data_areas, [Area { offset: 1 << 20, size: 0 }]);
        assert_eq!(l.metadata_areas, [mda]);
        // A flipped byte under the CRC is corruption, not "no label".
        d[600] ^= 1;
        assert!(matches!(read_label(&MemImage(d)), Err(LvmError::Corrupt { .. })));
        assert!(read_label(&MemImage(vec![0u8; 4096])).unwrap().is_none());
        assert!(read_label(&MemImage(vec![0u8; 100])).unwrap().is_none());
    }
}
