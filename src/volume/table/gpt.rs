//! GUID Partition Table (UEFI spec 2.10, chapter 5.3): the header at LBA 1
//! (backup at the last LBA), an array of partition entries, both protected by
//! CRC32. Sector size is not recorded anywhere, so 512 and 4096 are tried.

use std::sync::Arc;

use super::crc32::crc32;
use super::guid::Guid;
use super::{PartKind, Partition, Scheme, Table, TableError, read, types};
use crate::block::ReadAt;

/// "EFI PART", the header signature (5.3.2, table 5.5).
const SIGNATURE: &[u8; 8] = b"EFI PART";
/// Logical sector sizes tried, in this order.
pub const SECTOR_SIZES: [u64; 2] = [512, 4096];
/// The smallest header the spec defines (table 5.5: 92 bytes).
const MIN_HEADER_SIZE: u32 = 92;
/// Entry size: 128 * 2^n per the spec (5.3.2); we accept any multiple of 8 in this range.
const MIN_ENTRY_SIZE: u32 = 128;
const MAX_ENTRY_SIZE: u32 = 4096;
/// Resource limit: at most this many entries are read (the usual count is 128).
pub const MAX_ENTRIES: u32 = 1024;
/// Bytes of the UTF-16LE partition name in an entry (table 5.6).
const NAME_LEN: usize = 72;

// Header field offsets (table 5.5).
const H_HEADER_SIZE: usize = 12;
const H_HEADER_CRC: usize = 16;
const H_MY_LBA: usize = 24;
const H_DISK_GUID: usize = 56;
const H_ENTRIES_LBA: usize = 72;
const H_NUM_ENTRIES: usize = 80;
const H_ENTRY_SIZE: usize = 84;
const H_ENTRIES_CRC: usize = 88;
// Entry field offsets (table 5.6).
const E_TYPE: usize = 0;
const E_UNIQUE: usize = 16;
const E_FIRST_LBA: usize = 32;
const E_LAST_LBA: usize = 40;
const E_ATTRIBUTES: usize = 48;
const E_NAME: usize = 56;

fn u32_at(b: &[u8], off: usize) -> u32 {
    // OK to unwrap: callers pass offsets inside a buffer of at least MIN_HEADER_SIZE/MIN_ENTRY_SIZE bytes.
    u32::from_le_bytes(b[off..off + 4].try_into().unwrap())
}
fn u64_at(b: &[u8], off: usize) -> u64 {
    // OK to unwrap: as above.
    u64::from_le_bytes(b[off..off + 8].try_into().unwrap())
}
fn guid_at(b: &[u8], off: usize) -> Guid {
    // OK to unwrap: as above.
    Guid(b[off..off + 16].try_into().unwrap())
}

/// True when the sector at `lba` carries the GPT signature (CRC not checked).
pub fn has_signature(disk: &dyn ReadAt, sector: u64, lba: u64) -> bool {
    let mut sig = [0u8; 8];
    lba.checked_mul(sector).is_some_and(|off| disk.read_exact_at(off, &mut sig).is_ok()) && &sig == SIGNATURE
}

/// A header that passed its CRC and bounds checks.
struct Header {
    disk_guid: Guid,
    entries_lba: u64,
    num_entries: u32,
    entry_size: u32,
    entries_crc: u32,
}

/// Reads and checks the header at `lba`.
fn read_header(disk: &dyn ReadAt, sector: u64, lba: u64) -> Result<Header, TableError> {
    let off = lba.checked_mul(sector).ok_or_else(|| TableError::corrupt(u64::MAX, "header LBA overflows"))?;
    // OK to cast: sector is one of SECTOR_SIZES.
    let mut buf = vec![0u8; sector as usize];
    read(disk, off, &mut buf)?;
    if &buf[..8] != SIGNATURE {
        return Err(TableError::corrupt(off, "no GPT signature"));
    }
    let header_size = u32_at(&buf, H_HEADER_SIZE);
    if header_size < MIN_HEADER_SIZE || u64::from(header_size) > sector {
        return Err(TableError::corrupt(off + H_HEADER_SIZE as u64, format!("header size {header_size}")));
    }
    let stored_crc = u32_at(&buf, H_HEADER_CRC);
    let mut h = buf[..header_size as usize].to_vec();
    h[H_HEADER_CRC..H_HEADER_CRC + 4].fill(0);
    let crc = crc32(&h);
    if crc != stored_crc {
        return Err(TableError::corrupt(
            off + H_HEADER_CRC as u64,
            format!("header CRC {stored_crc:#010x}, computed {crc:#010x}"),
        ));
    }
    let my_lba = u64_at(&buf, H_MY_LBA);
    if my_lba != lba {
        return Err(TableError::corrupt(
            off + H_MY_LBA as u64,
            format!("header says it is at LBA {my_lba}, read at {lba}"),
        ));
    }
    let num_entries = u32_at(&buf, H_NUM_ENTRIES);
    if num_entries > MAX_ENTRIES {
        return Err(TableError::unsupported(
            off + H_NUM_ENTRIES as u64,
            format!("{num_entries} partition entries (limit {MAX_ENTRIES})"),
        ));
    }
    let entry_size = u32_at(&buf, H_ENTRY_SIZE);
    if !(MIN_ENTRY_SIZE..=MAX_ENTRY_SIZE).contains(&entry_size) || !entry_size.is_multiple_of(8) {
        return Err(TableError::corrupt(off + H_ENTRY_SIZE as u64, format!("partition entry size {entry_size}")));
    }
    Ok(Header {
        disk_guid: guid_at(&buf, H_DISK_GUID),
        entries_lba: u64_at(&buf, H_ENTRIES_LBA),
        num_entries,
        entry_size,
        entries_crc: u32_at(&buf, H_ENTRIES_CRC),
    })
}

/// Reads the header at `lba` and its entry array; checks both CRCs.
fn read_at_lba(disk: &dyn ReadAt, sector: u64, lba: u64) -> Result<(Header, Vec<u8>), TableError> {
    let h = read_header(disk, sector, lba)?;
    let len = u64::from(h.num_entries) * u64::from(h.entry_size); // at most 4 MiB: both bounded above
    let off = h
        .entries_lba
        .checked_mul(sector)
        .filter(|off| off.checked_add(len).is_some_and(|end| end <= disk.size()))
        .ok_or_else(|| {
            TableError::corrupt(
                lba * sector + H_ENTRIES_LBA as u64,
                format!("entry array at LBA {} is past the disk end", h.entries_lba),
            )
        })?;
    // OK to cast: len <= MAX_ENTRIES * MAX_ENTRY_SIZE.
    let mut entries = vec![0u8; len as usize];
    read(disk, off, &mut entries)?;
    let crc = crc32(&entries);
    if crc != h.entries_crc {
        return Err(TableError::corrupt(off, format!("entry array CRC {:#010x}, computed {crc:#010x}", h.entries_crc)));
    }
    Ok((h, entries))
}

/// Reads the GPT with the given sector size: the primary header, else the
/// backup at the last LBA (with a warning naming what was wrong with the primary).
pub fn read_gpt(disk: &Arc<dyn ReadAt>, sector: u64) -> Result<Table, TableError> {
    let mut warnings = Vec::new();
    let (h, entries) = match read_at_lba(disk.as_ref(), sector, 1) {
        Ok(x) => x,
        Err(primary) => {
            // The backup header sits in the last LBA (5.3.2); LBA 0 and 1 can never hold it.
            let Some(last) = (disk.size() / sector).checked_sub(1).filter(|&l| l > 1) else {
                return Err(primary);
            };
            match read_at_lba(disk.as_ref(), sector, last) {
                Ok(x) => {
                    warnings.push(format!("primary GPT header unusable ({primary}); using the backup at LBA {last}"));
                    x
                }
                Err(_) => return Err(primary),
            }
        }
    };
    let mut partitions = Vec::new();
    for (i, e) in entries.chunks_exact(h.entry_size as usize).enumerate() {
        let type_guid = guid_at(e, E_TYPE);
        if type_guid.is_zero() {
            continue; // an unused entry
        }
        let number = i as u32 + 1; // OK: i < MAX_ENTRIES
        let (first, last) = (u64_at(e, E_FIRST_LBA), u64_at(e, E_LAST_LBA));
        let start = first.checked_mul(sector);
        let size = last.checked_sub(first).and_then(|n| n.checked_add(1)).and_then(|n| n.checked_mul(sector));
        let (Some(start), Some(mut size)) = (start, size) else {
            warnings.push(format!("partition {number}: invalid LBA range {first}..={last}; skipped"));
            continue;
        };
        if start >= disk.size() {
            warnings.push(format!("partition {number}: starts at byte {start}, past the disk end; skipped"));
            continue;
        }
        if start.saturating_add(size) > disk.size() {
            let clamped = disk.size() - start;
            warnings.push(format!("partition {number}: {size} bytes run past the disk end; clamped to {clamped}"));
            size = clamped;
        }
        let units: Vec<u16> = e[E_NAME..E_NAME + NAME_LEN]
            .chunks_exact(2)
            .map(|c| u16::from_le_bytes([c[0], c[1]]))
            .take_while(|&u| u != 0)
            .collect();
        let name = char::decode_utf16(units).map(|c| c.unwrap_or(char::REPLACEMENT_CHARACTER)).collect();
        partitions.push(Partition {
            number,
            start,
            size,
            type_name: types::gpt_type_name(&type_guid),
            kind: PartKind::Gpt {
                type_guid,
                unique_guid: guid_at(e, E_UNIQUE),
                name,
                attributes: u64_at(e, E_ATTRIBUTES),
            },
        });
    }
    Ok(Table { scheme: Scheme::Gpt { sector_size: sector as u32, disk_guid: h.disk_guid }, partitions, warnings })
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use crate::block::MemImage;

    /// One entry for [`build`]: (type, first LBA, last LBA, name).
    pub type Entry<'a> = (Guid, u64, u64, &'a str);

    /// Writes a GPT (both headers) into `disk` with `n` entry slots.
    pub fn build(disk: &mut [u8], sector: usize, n: u32, parts: &[Entry]) {
        let last = (disk.len() / sector - 1) as u64;
        let entry_sectors = (n as usize * 128).div_ceil(sector) as u64;
        let mut entries = vec![0u8; n as usize * 128];
        for (i, (t, first, end, name)) in parts.iter().enumerate() {
            let e = &mut entries[i * 128..(i + 1) * 128];
            e[0..16].copy_from_slice(&t.0);
            e[16..32].copy_from_slice(&[i as u8 + 1; 16]);
            e[32..40].copy_from_slice(&first.to_le_bytes());
            e[40..48].copy_from_slice(&end.to_le_bytes());
            for (j, u) in name.encode_utf16().enumerate() {
                e[56 + 2 * j..58 + 2 * j].copy_from_slice(&u.to_le_bytes());
            }
        }
        let ecrc = crc32(&entries);
        for (my, alt, elba) in [(1, last, 2), (last, 1, last - entry_sectors)] {
            let eoff = elba as usize * sector;
            disk[eoff..eoff + entries.len()].copy_from_slice(&entries);
            let mut h = vec![0u8; 92];
            h[0..8].copy_from_slice(SIGNATURE);
            h[8..12].copy_from_slice(&0x0001_0000u32.to_le_bytes());
            h[12..16].copy_from_slice(&92u32.to_le_bytes());
            h[24..32].copy_from_slice(&my.to_le_bytes());
            h[32..40].copy_from_slice(&alt.to_le_bytes());
            h[56..72].copy_from_slice(&[0x42; 16]);
            h[72..80].copy_from_slice(&elba.to_le_bytes());
            h[80..84].copy_from_slice(&n.to_le_bytes());
            h[84..88].copy_from_slice(&128u32.to_le_bytes());
            h[88..92].copy_from_slice(&ecrc.to_le_bytes());
            let crc = crc32(&h);
            h[16..20].copy_from_slice(&crc.to_le_bytes());
            let off = my as usize * sector;
            disk[off..off + 92].copy_from_slice(&h);
        }
    }

    fn linux() -> Guid {
        Guid::parse("0FC63DAF-8483-4772-8E79-3D69D8477DE4").unwrap()
    }

    fn disk(sector: usize) -> Vec<u8> {
        let mut d = vec![0u8; sector * 200];
        build(&mut d, sector, 128, &[(linux(), 40, 99, "root"), (Guid([7; 16]), 100, 150, "other")]);
        d
    }

    fn parse(d: Vec<u8>, sector: u64) -> Result<Table, TableError> {
        let disk: Arc<dyn ReadAt> = Arc::new(MemImage(d));
        read_gpt(&disk, sector)
    }

    #[test]
    fn reads_entries_both_sector_sizes() {
        for sector in [512usize, 4096] {
            let t = parse(disk(sector), sector as u64).unwrap();
            assert!(t.warnings.is_empty(), "{:?}", t.warnings);
            assert_eq!(t.partitions.len(), 2);
            let p = &t.partitions[0];
            assert_eq!((p.number, p.start, p.size), (1, 40 * sector as u64, 60 * sector as u64));
            assert_eq!(p.type_name, Some("Linux filesystem"));
            assert!(matches!(&p.kind, PartKind::Gpt { name, .. } if name == "root"));
            assert_eq!(t.partitions[1].type_name, None);
            // The wrong sector size finds no header.
            assert!(parse(disk(sector), if sector == 512 { 4096 } else { 512 }).is_err());
        }
    }

    #[test]
    fn damaged_primary_uses_backup() {
        let mut d = disk(512);
        d[512 + 40] ^= 1; // inside the header: CRC mismatch
        let t = parse(d, 512).unwrap();
        assert_eq!(t.partitions, parse(disk(512), 512).unwrap().partitions);
        assert!(t.warnings[0].contains("backup"), "{:?}", t.warnings);
        let mut d = disk(512);
        d[1024 + 130] ^= 1; // inside the primary entry array
        assert_eq!(parse(d, 512).unwrap().partitions.len(), 2);
        let mut d = disk(512);
        d[512 + 40] ^= 1;
        let n = d.len();
        d[n - 512 + 40] ^= 1; // both headers damaged
        assert!(matches!(parse(d, 512), Err(TableError::Corrupt { .. })));
    }

    /// Re-signs a header after a field changed, so only the field is at fault.
    fn patch(d: &mut [u8], off: usize, field: usize, val: &[u8]) {
        d[off + field..off + field + val.len()].copy_from_slice(val);
        d[off + 16..off + 20].fill(0);
        let crc = crc32(&d[off..off + 92]);
        d[off + 16..off + 20].copy_from_slice(&crc.to_le_bytes());
    }

    #[test]
    fn absurd_headers_are_errors() {
        let last = 199 * 512;
        for (field, val) in [
            (H_NUM_ENTRIES, &u32::MAX.to_le_bytes()[..]),
            (H_NUM_ENTRIES, &(MAX_ENTRIES + 1).to_le_bytes()),
            (H_ENTRY_SIZE, &0u32.to_le_bytes()),
            (H_ENTRY_SIZE, &129u32.to_le_bytes()),
            (H_ENTRY_SIZE, &8192u32.to_le_bytes()),
            (H_ENTRIES_LBA, &u64::MAX.to_le_bytes()),
            (H_ENTRIES_LBA, &199u64.to_le_bytes()),
            (H_HEADER_SIZE, &10_000u32.to_le_bytes()),
            (H_MY_LBA, &5u64.to_le_bytes()),
        ] {
            let mut d = disk(512);
            patch(&mut d, 512, field, val);
            patch(&mut d, last, field, val);
            assert!(parse(d, 512).is_err(), "field {field} = {val:?}");
        }
    }

    #[test]
    fn bad_entries_are_skipped_or_clamped() {
        let mut d = vec![0u8; 512 * 200];
        build(
            &mut d,
            512,
            8,
            &[
                (linux(), 50, 40, "backwards"),
                (linux(), 150, 5000, "too long"),
                (linux(), 9000, 9999, "outside"),
                (linux(), 0, u64::MAX, "huge"),
                (linux(), 20, 30, "fine"),
            ],
        );
        let t = parse(d, 512).unwrap();
        assert_eq!(t.partitions.len(), 2, "{t:?}");
        assert_eq!((t.partitions[0].number, t.partitions[0].size), (2, 50 * 512));
        assert_eq!((t.partitions[1].number, t.partitions[1].start, t.partitions[1].size), (5, 20 * 512, 11 * 512));
        assert_eq!(t.warnings.len(), 4, "{:?}", t.warnings);
    }

    #[test]
    fn truncated_disk() {
        let d = disk(512);
        for len in [0, 100, 600, 1024 + 100, 17_000] {
            assert!(parse(d[..len].to_vec(), 512).is_err(), "len {len}");
        }
        // The primary alone still reads when the backup is cut off.
        assert_eq!(parse(d[..120 * 512].to_vec(), 512).unwrap().partitions.len(), 2);
    }
}
