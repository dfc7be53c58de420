//! Master Boot Record (UEFI spec 2.10, section 5.2.1, table 5.1/5.2): four
//! primary entries at byte 446, signature 0x55AA; extended partitions hold a
//! chain of Extended Boot Records (EBRs), each with the same entry layout.
//! Numbering follows Linux: primaries 1-4 by slot, logicals 5, 6, ... in chain
//! order. MBR LBAs are 512-byte sectors.

use std::collections::HashSet;

use super::{PartKind, Partition, Scheme, Table, TableError, read, types};
use crate::block::ReadAt;

pub const SECTOR: u64 = 512;
/// The partition entry array (table 5.1).
const ENTRIES_AT: usize = 446;
const ENTRY_LEN: usize = 16;
/// Boot signature at bytes 510..512.
pub const SIGNATURE: [u8; 2] = [0x55, 0xAA];
/// Entry fields (table 5.2).
const E_STATUS: usize = 0;
const E_TYPE: usize = 4;
const E_START: usize = 8;
const E_SECTORS: usize = 12;
/// Boot indicator values: 0x80 bootable, 0x00 not.
const BOOTABLE: u8 = 0x80;
/// The protective MBR's partition type: the disk is GPT (5.2.3).
pub const PROTECTIVE: u8 = 0xEE;
/// Types of extended (container) partitions: DOS CHS, DOS LBA, Linux.
const EXTENDED: [u8; 3] = [0x05, 0x0F, 0x85];
/// Resource limit: logical partitions followed per disk (Linux stops at 256 minors too).
pub const MAX_LOGICAL: u32 = 256;
/// The first logical partition number (Linux).
const FIRST_LOGICAL: u32 = 5;

/// One 16-byte entry.
#[derive(Debug, Clone, Copy)]
pub struct Entry {
    pub status: u8,
    pub type_byte: u8,
    pub start: u64,
    pub sectors: u64,
}

/// The four entries of an MBR or EBR sector.
pub fn entries(sector: &[u8; 512]) -> [Entry; 4] {
    std::array::from_fn(|i| {
        let e = &sector[ENTRIES_AT + i * ENTRY_LEN..ENTRIES_AT + (i + 1) * ENTRY_LEN];
        let u32_at = |o: usize| u64::from(u32::from_le_bytes([e[o], e[o + 1], e[o + 2], e[o + 3]]));
        Entry { status: e[E_STATUS], type_byte: e[E_TYPE], start: u32_at(E_START), sectors: u32_at(E_SECTORS) }
    })
}

/// True when the sector looks like an MBR: signature and valid boot indicators.
pub fn looks_like_mbr(sector: &[u8; 512]) -> bool {
    sector[510..512] == SIGNATURE && entries(sector).iter().all(|e| e.status == 0 || e.status == BOOTABLE)
}

/// True when any primary entry is a GPT protective partition.
pub fn is_protective(sector: &[u8; 512]) -> bool {
    entries(sector).iter().any(|e| e.type_byte == PROTECTIVE)
}

/// Parses an MBR (already checked with [`looks_like_mbr`]) and its logical partitions.
pub fn read_mbr(disk: &dyn ReadAt, sector0: &[u8; 512]) -> Result<Table, TableError> {
    let mut t = Table { scheme: Scheme::Mbr, partitions: Vec::new(), warnings: Vec::new() };
    let mut next_logical = FIRST_LOGICAL;
    let mut visited = HashSet::new();
    for (slot, e) in entries(sector0).iter().enumerate() {
        if e.type_byte == 0 || e.sectors == 0 {
            continue;
        }
        if EXTENDED.contains(&e.type_byte) {
            read_chain(disk, e.start, &mut next_logical, &mut visited, &mut t)?;
        } else {
            // OK to cast: slot < 4.
            push(disk, &mut t, slot as u32 + 1, 0, e);
        }
    }
    Ok(t)
}

/// Adds a data partition whose start is relative to `base` (LBA), clamping
/// or skipping (with a warning) what lies past the disk end.
fn push(disk: &dyn ReadAt, t: &mut Table, number: u32, base: u64, e: &Entry) {
    // Both are at most 2^33 sectors; no overflow possible in u64.
    let start = (base + e.start) * SECTOR;
    let mut size = e.sectors * SECTOR;
    if start >= disk.size() {
        t.warnings.push(format!("partition {number}: starts at byte {start}, past the disk end; skipped"));
        return;
    }
    if start + size > disk.size() {
        let clamped = disk.size() - start;
        t.warnings.push(format!("partition {number}: {size} bytes run past the disk end; clamped to {clamped}"));
        size = clamped;
    }
    t.partitions.push(Partition {
        number,
        start,
        size,
        type_name: types::mbr_type_name(e.type_byte),
        kind: PartKind::Mbr { type_byte: e.type_byte, bootable: e.status == BOOTABLE },
    });
}

/// Follows the EBR chain of the extended partition starting at `ext_start`
/// (LBA). Each EBR's data entries are relative to the EBR itself; its link to
/// the next EBR is relative to the extended partition's start.
fn read_chain(
    disk: &dyn ReadAt,
    ext_start: u64,
    next_logical: &mut u32,
    visited: &mut HashSet<u64>,
    t: &mut Table,
) -> Result<(), TableError> {
    let mut ebr = ext_start;
    loop {
        let off = ebr * SECTOR; // at most 2^33 * 512: no overflow
        if !visited.insert(ebr) {
            return Err(TableError::corrupt(off, "the extended partition chain loops"));
        }
        if visited.len() as u32 > MAX_LOGICAL {
            return Err(TableError::unsupported(off, format!("more than {MAX_LOGICAL} extended boot records")));
        }
        let mut s = [0u8; 512];
        read(disk, off, &mut s)?;
        if s[510..512] != SIGNATURE {
            return Err(TableError::corrupt(off + 510, "extended boot record without the 0x55AA signature"));
        }
        let mut link = None;
        for e in entries(&s) {
            if e.type_byte == 0 || e.sectors == 0 {
                continue;
            }
            if EXTENDED.contains(&e.type_byte) {
                link = link.or(Some(e.start));
                continue;
            }
            if *next_logical >= FIRST_LOGICAL + MAX_LOGICAL {
                return Err(TableError::unsupported(off, format!("more than {MAX_LOGICAL} logical partitions")));
            }
            push(disk, t, *next_logical, ebr, &e);
            *next_logical += 1;
        }
        match link {
            Some(rel) => ebr = ext_start + rel,
            None => return Ok(()),
        }
    }
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use crate::block::MemImage;

    /// Writes entry `i` of the MBR/EBR sector at `lba`.
    pub fn put(d: &mut [u8], lba: u64, i: usize, status: u8, ty: u8, start: u32, sectors: u32) {
        let o = lba as usize * 512 + ENTRIES_AT + i * ENTRY_LEN;
        d[o] = status;
        d[o + E_TYPE] = ty;
        d[o + E_START..o + E_START + 4].copy_from_slice(&start.to_le_bytes());
        d[o + E_SECTORS..o + E_SECTORS + 4].copy_from_slice(&sectors.to_le_bytes());
        d[lba as usize * 512 + 510..lba as usize * 512 + 512].copy_from_slice(&SIGNATURE);
    }

    /// 1 primary (slot 1), an extended at 100 (slot 2) with logicals in EBRs at 100, 150, 200.
    pub fn logical_disk() -> Vec<u8> {
        let mut d = vec![0u8; 512 * 300];
        put(&mut d, 0, 0, 0x80, 0x83, 10, 80);
        put(&mut d, 0, 1, 0, 0x0F, 100, 190);
        put(&mut d, 100, 0, 0, 0x06, 5, 40); // logical 5 at 105
        put(&mut d, 100, 1, 0, 0x05, 50, 50);
        put(&mut d, 150, 0, 0, 0x07, 5, 40); // logical 6 at 155
        put(&mut d, 150, 1, 0, 0x05, 100, 90);
        put(&mut d, 200, 0, 0, 0x83, 10, 80); // logical 7 at 210
        d
    }

    fn parse(d: Vec<u8>) -> Result<Table, TableError> {
        let s: [u8; 512] = d[..512].try_into().unwrap();
        assert!(looks_like_mbr(&s));
        read_mbr(&MemImage(d), &s)
    }

    fn summary(t: &Table) -> Vec<(u32, u64, u64, u8)> {
        t.partitions
            .iter()
            .map(|p| match p.kind {
                PartKind::Mbr { type_byte, .. } => (p.number, p.start / 512, p.size / 512, type_byte),
                _ => unreachable!("MBR partitions only"),
            })
            .collect()
    }

    #[test]
    fn logical_chain_numbering() {
        let t = parse(logical_disk()).unwrap();
        assert_eq!(summary(&t), [(1, 10, 80, 0x83), (5, 105, 40, 0x06), (6, 155, 40, 0x07), (7, 210, 80, 0x83)]);
        assert!(matches!(t.partitions[0].kind, PartKind::Mbr { bootable: true, .. }));
        assert_eq!(t.partitions[2].type_name, Some("NTFS/exFAT"));
        assert!(t.warnings.is_empty());
    }

    #[test]
    fn chain_loop_is_an_error() {
        let mut d = logical_disk();
        put(&mut d, 200, 1, 0, 0x05, 0, 10); // back to the first EBR
        assert!(matches!(parse(d), Err(TableError::Corrupt { .. })));
        let mut d = logical_disk();
        put(&mut d, 100, 1, 0, 0x05, 0, 10); // to itself
        assert!(matches!(parse(d), Err(TableError::Corrupt { .. })));
    }

    #[test]
    fn broken_chain_and_truncation() {
        let mut d = logical_disk();
        d[150 * 512 + 510] = 0; // second EBR lost its signature
        assert!(parse(d).is_err());
        let mut d = logical_disk();
        put(&mut d, 150, 1, 0, 0x05, u32::MAX, 1); // link far past the end
        assert!(matches!(parse(d), Err(TableError::Io { .. })));
        // Partitions past the end are clamped or skipped, with warnings.
        let mut d = vec![0u8; 512 * 100];
        put(&mut d, 0, 0, 0, 0x83, 50, 100);
        put(&mut d, 0, 2, 0, 0x83, u32::MAX, u32::MAX);
        let t = parse(d).unwrap();
        assert_eq!(summary(&t), [(1, 50, 50, 0x83)]);
        assert_eq!(t.warnings.len(), 2);
    }

    #[test]
    fn long_chain_is_bounded() {
        // A valid-looking chain of MAX_LOGICAL + 10 EBRs, one sector each.
        let n = MAX_LOGICAL as usize + 10;
        let mut d = vec![0u8; 512 * (n + 2)];
        put(&mut d, 0, 0, 0, 0x05, 1, n as u32);
        for i in 0..n {
            put(&mut d, 1 + i as u64, 1, 0, 0x05, i as u32 + 1, 1);
        }
        assert!(matches!(parse(d), Err(TableError::Unsupported { .. })));
    }

    #[test]
    fn boot_indicator_check() {
        let mut s = [0u8; 512];
        s[510..512].copy_from_slice(&SIGNATURE);
        assert!(looks_like_mbr(&s));
        s[ENTRIES_AT + 16] = 0x12;
        assert!(!looks_like_mbr(&s));
    }
}
