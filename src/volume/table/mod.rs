//! Partition tables: GPT, MBR (with extended/logical partitions), or none.
//!
//! [`read_table`] decides in this order, each step only on sound evidence:
//! 1. a GPT header with valid CRCs at LBA 1 (512- then 4096-byte sectors), or
//!    a valid backup header at the last LBA when the primary is damaged;
//! 2. a filesystem or volume signature at sector 0 (NTFS, FAT with a sane BPB,
//!    ext, exFAT, BitLocker, XFS, LUKS, LVM, swap): no table, [`Scheme::None`];
//! 3. an MBR (0x55AA and valid boot indicators); a protective MBR (0xEE)
//!    without a readable GPT is an error;
//! 4. anything else: no table.
//!
//! With no table the disk is one whole-disk partition numbered 0 (0 is never a
//! real partition number, so the tree can tell "the whole disk" apart).
//! Partitions reaching past the disk end are clamped and ones starting past it
//! skipped, each with a message in [`Table::warnings`]; structural damage
//! (bad CRCs on both GPT copies, an EBR chain that loops) is a [`TableError`].
#![forbid(unsafe_code)]

mod crc32;
mod fsmagic;
mod gpt;
mod guid;
mod mbr;
mod types;

use std::io;
use std::sync::Arc;

use crate::block::{ReadAt, Slice, read_at_most};

pub use crc32::{crc32, crc32_update, reflected_table};
pub use fsmagic::{FsHint, detect_fs_magic};
pub use gpt::{MAX_ENTRIES as GPT_MAX_ENTRIES, SECTOR_SIZES as GPT_SECTOR_SIZES};
pub use guid::Guid;
pub use mbr::MAX_LOGICAL as MBR_MAX_LOGICAL;
pub use types::{gpt_type_name, mbr_type_name, type_reason};

/// The number of the single partition of a disk without a table.
pub const WHOLE_DISK: u32 = 0;

#[derive(Debug, thiserror::Error)]
pub enum TableError {
    #[error("corrupt partition table at byte {offset}: {what}")]
    Corrupt { offset: u64, what: String },
    #[error("unsupported partition table at byte {offset}: {what}")]
    Unsupported { offset: u64, what: String },
    #[error("cannot read the disk at byte {offset}: {source}")]
    Io {
        offset: u64,
        #[source]
        source: io::Error,
    },
}

impl TableError {
    fn corrupt(offset: u64, what: impl Into<String>) -> Self {
        TableError::Corrupt { offset, what: what.into() }
    }
    fn unsupported(offset: u64, what: impl Into<String>) -> Self {
        TableError::Unsupported { offset, what: what.into() }
    }
}

/// Reads exactly `buf.len()` bytes at `offset`, naming the offset on failure.
fn read(disk: &dyn ReadAt, offset: u64, buf: &mut [u8]) -> Result<(), TableError> {
    disk.read_exact_at(offset, buf).map_err(|source| TableError::Io { offset, source })
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Scheme {
    Gpt {
        sector_size: u32,
        disk_guid: Guid,
    },
    Mbr,
    /// No partition table: one whole-disk partition numbered [`WHOLE_DISK`].
    None,
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum PartKind {
    Gpt {
        type_guid: Guid,
        unique_guid: Guid,
        name: String,
        attributes: u64,
    },
    Mbr {
        type_byte: u8,
        bootable: bool,
    },
    /// The whole disk of a disk without a table.
    Whole,
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Partition {
    /// Linux numbering: GPT entry index + 1; MBR primaries 1-4 by slot,
    /// logicals 5, 6, ... in chain order; [`WHOLE_DISK`] without a table.
    pub number: u32,
    /// Offset in bytes from the start of the disk.
    pub start: u64,
    /// Length in bytes (clamped to the disk end).
    pub size: u64,
    pub kind: PartKind,
    /// A name for the partition type, when known ("EFI system partition", "Linux swap", ...).
    pub type_name: Option<&'static str>,
}

impl Partition {
    /// The partition's bytes as a window of `disk`.
    pub fn window(&self, disk: &Arc<dyn ReadAt>) -> io::Result<Slice> {
        Slice::new(disk.clone(), self.start, self.size)
    }

    /// The GPT partition name, if any and not empty.
    pub fn gpt_name(&self) -> Option<&str> {
        match &self.kind {
            PartKind::Gpt { name, .. } if !name.is_empty() => Some(name),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Table {
    pub scheme: Scheme,
    /// Data partitions in number order (MBR extended containers are not listed).
    pub partitions: Vec<Partition>,
    /// Damage that was worked around (backup GPT used, partitions clamped or skipped).
    pub warnings: Vec<String>,
}

/// Reads the partition table of a disk. See the module documentation for
/// the order of the checks.
pub fn read_table(disk: &Arc<dyn ReadAt>) -> Result<Table, TableError> {
    let mut gpt_error = None;
    for sector in GPT_SECTOR_SIZES {
        if gpt::has_signature(disk.as_ref(), sector, 1) {
            match gpt::read_gpt(disk, sector) {
                Ok(t) => return Ok(t),
                Err(e) => gpt_error = gpt_error.or(Some(e)),
            }
        }
    }
    let mut s0 = [0u8; 512];
    let n = read_at_most(disk.as_ref(), 0, &mut s0).map_err(|source| TableError::Io { offset: 0, source })?;
    let mut head = vec![0u8; 4096];
    let head_len = read_at_most(disk.as_ref(), 0, &mut head).map_err(|source| TableError::Io { offset: 0, source })?;
    head.truncate(head_len);
    if n == 512 && fsmagic::detect_head(&head) == FsHint::Unknown && mbr::looks_like_mbr(&s0) {
        if mbr::is_protective(&s0) {
            // A damaged primary header without the signature: the backup may still be there.
            for sector in GPT_SECTOR_SIZES {
                if let Ok(t) = gpt::read_gpt(disk, sector) {
                    return Ok(t);
                }
            }
            return Err(gpt_error.unwrap_or_else(|| TableError::corrupt(512, "protective MBR but no valid GPT header")));
        }
        if let Some(e) = gpt_error {
            return Err(e);
        }
        let t = mbr::read_mbr(disk.as_ref(), &s0)?;
        if t.partitions.is_empty() {
            // Nothing usable: most likely not an MBR at all but a boot
            // sector whose own fields are damaged (a FAT volume with a broken
            // BPB also ends in 0x55AA). Show the disk whole, so its bytes
            // stay reachable and the filesystem's own error is shown.
            let mut whole = whole_disk(disk.size());
            whole.warnings.push(
                "sector 0 ends in the MBR signature, but it lists no usable partition; \
                 the disk is shown as one volume"
                    .to_string(),
            );
            whole.warnings.extend(t.warnings);
            return Ok(whole);
        }
        return Ok(t);
    }
    if let Some(e) = gpt_error {
        return Err(e);
    }
    Ok(whole_disk(disk.size()))
}

/// The note of a volume ("This partition", "This logical volume") that
/// holds nothing backchain browses: what it holds and why, from its
/// signature, else from its partition type.
pub fn unbrowsable_note(what: &str, type_name: Option<&str>, hint: FsHint) -> String {
    let because = |r: Option<&str>| r.map(|r| format!(": {r}")).unwrap_or_default();
    match (hint, type_name) {
        (FsHint::Unknown, Some(t)) => match type_reason(t) {
            Some(r) => format!("{what} ({t}) cannot be browsed: {r}."),
            None => format!("{what} ({t}) holds no filesystem that backchain can read."),
        },
        (FsHint::Unknown, None) => format!("{what} holds no filesystem that backchain can read."),
        (h, _) => format!("{what} holds {}, which backchain cannot browse{}.", h.name(), because(h.reason())),
    }
}

fn whole_disk(size: u64) -> Table {
    let partitions = if size == 0 {
        Vec::new()
    } else {
        vec![Partition { number: WHOLE_DISK, start: 0, size, kind: PartKind::Whole, type_name: None }]
    };
    Table { scheme: Scheme::None, partitions, warnings: Vec::new() }
}

/// Fuzz entry point: parse `data` as a disk; errors are fine, panics are not.
/// Every reported partition must lie inside the disk.
pub fn fuzz_entry(data: &[u8]) {
    let disk: Arc<dyn ReadAt> = Arc::new(crate::block::MemImage(data.to_vec()));
    if let Ok(t) = read_table(&disk) {
        for p in &t.partitions {
            let w = p.window(&disk).expect("partitions lie inside the disk");
            let _ = detect_fs_magic(&w);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::block::MemImage;

    fn table(d: Vec<u8>) -> Result<Table, TableError> {
        read_table(&(Arc::new(MemImage(d)) as Arc<dyn ReadAt>))
    }

    #[test]
    fn whole_disk_filesystems_are_not_mbrs() {
        // A FAT boot sector carries 0x55AA and garbage where MBR entries would be.
        let mut d = vec![0u8; 8192];
        d[0..3].copy_from_slice(&[0xEB, 0x58, 0x90]);
        d[11..13].copy_from_slice(&512u16.to_le_bytes());
        d[13] = 8;
        d[14] = 32;
        d[16] = 2;
        d[82..90].copy_from_slice(b"FAT32   ");
        d[446..462].copy_from_slice(&[0, 0, 0, 0, 0x83, 0, 0, 0, 1, 0, 0, 0, 4, 0, 0, 0]);
        d[510..512].copy_from_slice(&mbr::SIGNATURE);
        let t = table(d).unwrap();
        assert_eq!(t.scheme, Scheme::None);
        assert_eq!(t.partitions.len(), 1);
        assert_eq!((t.partitions[0].number, t.partitions[0].size), (WHOLE_DISK, 8192));
        // Blank and empty disks.
        assert_eq!(table(vec![0u8; 4096]).unwrap().scheme, Scheme::None);
        assert!(table(Vec::new()).unwrap().partitions.is_empty());
        assert_eq!(table(vec![1u8; 100]).unwrap().partitions.len(), 1);
    }

    #[test]
    fn unbrowsable_volumes_say_why() {
        let p = "This partition";
        let ldm = unbrowsable_note(p, mbr_type_name(0x42), FsHint::Unknown);
        assert_eq!(
            ldm,
            "This partition (Windows dynamic disk) cannot be browsed: it is part of a Windows dynamic disk (LDM), \
             whose volumes are not supported."
        );
        for (hint, words) in [
            (FsHint::Bitlocker, "BitLocker"),
            (FsHint::Luks, "LUKS"),
            (FsHint::Zfs, "ZFS pools are not supported"),
            (FsHint::Refs, "ReFS"),
        ] {
            let n = unbrowsable_note(p, Some("Microsoft basic data"), hint);
            assert!(n.contains(words) && n.contains("does not") || n.contains("not supported"), "{n}");
        }
        let zfs_type = gpt_type_name(&Guid::parse("6A898CC3-1DD2-11B2-99A6-080020736631").unwrap());
        assert!(unbrowsable_note(p, zfs_type, FsHint::Unknown).contains("ZFS pools are not supported"));
        assert_eq!(
            unbrowsable_note(p, Some("Linux filesystem"), FsHint::Unknown),
            "This partition (Linux filesystem) holds no filesystem that backchain can read."
        );
    }

    #[test]
    fn mbr_and_gpt_dispatch() {
        assert_eq!(table(mbr::tests::logical_disk()).unwrap().partitions.len(), 4);
        let mut d = vec![0u8; 512 * 200];
        mbr::tests::put(&mut d, 0, 0, 0, mbr::PROTECTIVE, 1, 199);
        let linux = Guid::parse("0FC63DAF-8483-4772-8E79-3D69D8477DE4").unwrap();
        gpt::tests::build(&mut d, 512, 128, &[(linux, 40, 99, "root")]);
        let t = table(d.clone()).unwrap();
        assert!(matches!(t.scheme, Scheme::Gpt { sector_size: 512, .. }));
        // Primary wiped entirely (signature gone): the protective MBR sends us to the backup.
        d[512..1024].fill(0);
        let t2 = table(d.clone()).unwrap();
        assert_eq!(t2.partitions, t.partitions);
        // Both gone: an error, not an MBR with one 0xEE partition.
        let n = d.len();
        d[n - 512..].fill(0);
        assert!(matches!(table(d), Err(TableError::Corrupt { .. })));
    }

    fn unzstd(z: &[u8]) -> Vec<u8> {
        zstd::stream::decode_all(z).unwrap()
    }

    /// fixtures/small/gpt-tiny.img.zst, as fixtures/small/make.sh told sgdisk
    /// to lay it out (start sector, last sector, type code, name, GUIDs).
    #[test]
    fn committed_gpt_image() {
        let d = unzstd(include_bytes!("../../../fixtures/small/gpt-tiny.img.zst"));
        let disk: Arc<dyn ReadAt> = Arc::new(MemImage(d));
        let t = read_table(&disk).unwrap();
        let Scheme::Gpt { sector_size: 512, disk_guid } = t.scheme else { panic!("{:?}", t.scheme) };
        assert_eq!(disk_guid.to_string(), "99999999-8888-4777-8666-555555555555");
        let got: Vec<_> =
            t.partitions.iter().map(|p| (p.number, p.start / 512, p.size / 512, p.type_name, p.gpt_name())).collect();
        assert_eq!(
            got,
            [
                (1, 2048, 512, Some("EFI system partition"), Some("EFI system partition")),
                (2, 2560, 1024, Some("Linux filesystem"), Some("root ünïcode")),
                (4, 3584, 128, Some("Microsoft basic data"), Some("data")),
            ]
        );
        let PartKind::Gpt { unique_guid, attributes, .. } = &t.partitions[1].kind else { panic!() };
        assert_eq!(unique_guid.to_string(), "01010101-0000-4000-8000-000000000002");
        assert_eq!(*attributes, 1 << 2, "sgdisk -A 2:set:2 (legacy BIOS bootable)");
        // Each window starts with the marker make.sh wrote there.
        for (p, marker) in t.partitions.iter().zip([b"PART1", b"PART2", b"PART4"]) {
            let mut b = [0u8; 5];
            p.window(&disk).unwrap().read_exact_at(0, &mut b).unwrap();
            assert_eq!(&b, marker);
        }
    }

    /// fixtures/small/mbr-logical.img.zst, as make.sh told sfdisk to lay it out.
    #[test]
    fn committed_mbr_image() {
        let d = unzstd(include_bytes!("../../../fixtures/small/mbr-logical.img.zst"));
        let t = table(d).unwrap();
        assert_eq!(t.scheme, Scheme::Mbr);
        let got: Vec<_> = t
            .partitions
            .iter()
            .map(|p| match p.kind {
                PartKind::Mbr { type_byte, bootable } => (p.number, p.start / 512, p.size / 512, type_byte, bootable),
                _ => panic!("{p:?}"),
            })
            .collect();
        assert_eq!(
            got,
            [
                (1, 64, 512, 0x83, true),
                (5, 1088, 1024, 6, false),
                (6, 2176, 1024, 0x83, false),
                (7, 3264, 1024, 7, false)
            ]
        );
    }

    /// fixtures/small/fat12.img.zst: a whole-volume FAT12, so no table.
    #[test]
    fn committed_fat12_image() {
        let d = unzstd(include_bytes!("../../../fixtures/small/fat12.img.zst"));
        assert_eq!(detect_fs_magic(&MemImage(d.clone())), FsHint::Fat);
        let t = table(d).unwrap();
        assert_eq!(t.scheme, Scheme::None);
        assert_eq!(t.partitions[0].size, 1440 * 1024);
    }

    #[test]
    fn mutations_never_panic() {
        // Deterministic byte flips over crafted tables; the fixture-based
        // smoke test in tests/partition_tables.rs covers the real disks.
        let mut d = mbr::tests::logical_disk();
        let linux = Guid::parse("0FC63DAF-8483-4772-8E79-3D69D8477DE4").unwrap();
        let mut g = vec![0u8; 512 * 64];
        mbr::tests::put(&mut g, 0, 0, 0, mbr::PROTECTIVE, 1, 63);
        gpt::tests::build(&mut g, 512, 4, &[(linux, 40, 50, "x")]);
        let mut x: u64 = 0x1234_5678_9abc_def1;
        for base in [&mut d, &mut g] {
            let orig = base.clone();
            for _ in 0..2000 {
                base.copy_from_slice(&orig);
                for _ in 0..4 {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    let hot = [0usize, 446, 462, 478, 494, 512, 512 + 80, 1024, 1024 + 32, 100 * 512 + 446];
                    let pos = (hot[(x % 10) as usize] + ((x >> 8) % 64) as usize) % base.len();
                    base[pos] = (x >> 32) as u8;
                }
                fuzz_entry(base);
            }
        }
    }
}
