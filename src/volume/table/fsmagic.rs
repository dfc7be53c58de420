//! Filesystem and volume signatures: enough to tell a filesystem that starts
//! at sector 0 from a partition table, and to name what an unbrowsable
//! partition holds.

use crate::block::{ReadAt, read_at_most};

/// Bytes read from the start of a volume; covers every signature below
/// except btrfs (the ext superblock magic is at 1080, swap ends at 4096).
const HEAD_LEN: usize = 4096;

/// NTFS boot sector: OEM id at byte 3 (NTFS $Boot layout).
const NTFS_OEM: &[u8; 8] = b"NTFS    ";
/// BitLocker (Vista and later): OEM id at byte 3.
const BITLOCKER_OEM: &[u8; 8] = b"-FVE-FS-";
/// exFAT boot sector: file system name at byte 3 (exFAT spec 3.1.2).
const EXFAT_OEM: &[u8; 8] = b"EXFAT   ";
/// Boot sector signature at bytes 510..512 (FAT spec, "BS_Sign").
const BOOT_SIGNATURE: [u8; 2] = [0x55, 0xAA];
/// FAT12/16 BS_FilSysType at 54, FAT32 BS_FilSysType at 82 (FAT spec 3.1, 3.2).
const FAT16_TYPE_AT: usize = 54;
const FAT32_TYPE_AT: usize = 82;
/// ext2/3/4: the superblock starts at 1024, s_magic 0xEF53 at superblock offset 56.
const EXT_MAGIC_AT: usize = 1024 + 56;
const EXT_MAGIC: [u8; 2] = [0x53, 0xEF];
/// XFS superblock magic at byte 0.
const XFS_MAGIC: &[u8; 4] = b"XFSB";
/// LUKS header magic at byte 0.
const LUKS_MAGIC: &[u8; 6] = b"LUKS\xBA\xBE";
/// LVM2 physical volume: "LABELONE" in one of the first four sectors, "LVM2 001" 24 bytes later.
const LVM_LABEL: &[u8; 8] = b"LABELONE";
const LVM_TYPE: &[u8; 8] = b"LVM2 001";
/// Linux swap: the signature occupies the last 10 bytes of the first page.
const SWAP_MAGICS: [&[u8; 10]; 2] = [b"SWAPSPACE2", b"SWAP-SPACE"];
const SWAP_PAGE_SIZES: [usize; 1] = [4096];
/// ReFS boot sector: file system name at byte 3 ("ReFS" and four NULs).
const REFS_OEM: &[u8; 8] = b"ReFS\0\0\0\0";
/// ZFS vdev label 0 (ZFS on-disk specification, 1.2-1.3): its uberblock
/// array fills the second 128 KiB of the label, one uberblock per 1 KiB
/// slot (or more, for larger sectors), each starting with ub_magic in the
/// pool's byte order.
const ZFS_UBERBLOCKS_AT: u64 = 128 << 10;
const ZFS_UBERBLOCKS_LEN: usize = 128 << 10;
const ZFS_UBERBLOCK_SLOT: usize = 1 << 10;
const ZFS_UB_MAGIC: u64 = 0x00ba_b10c;
/// btrfs superblock at 64 KiB, magic at superblock offset 0x40.
const BTRFS_MAGIC_AT: u64 = 0x1_0040;
const BTRFS_MAGIC: &[u8; 8] = b"_BHRfS_M";

/// What a volume's first bytes say it holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum FsHint {
    Ntfs,
    Ext,
    Fat,
    Exfat,
    Swap,
    Lvm,
    Bitlocker,
    Luks,
    Xfs,
    Btrfs,
    Refs,
    Zfs,
    Unknown,
}

impl FsHint {
    /// A name for listings ("Linux swap", "LVM physical volume", ...).
    pub fn name(self) -> &'static str {
        match self {
            FsHint::Ntfs => "NTFS",
            FsHint::Ext => "ext2/3/4",
            FsHint::Fat => "FAT",
            FsHint::Exfat => "exFAT",
            FsHint::Swap => "Linux swap",
            FsHint::Lvm => "LVM physical volume",
            FsHint::Bitlocker => "BitLocker",
            FsHint::Luks => "LUKS encrypted volume",
            FsHint::Xfs => "XFS",
            FsHint::Btrfs => "Btrfs",
            FsHint::Refs => "ReFS",
            FsHint::Zfs => "a ZFS pool member",
            FsHint::Unknown => "unknown",
        }
    }

    /// Why a volume of this kind is not browsed, when there is more to say
    /// than its name.
    pub fn reason(self) -> Option<&'static str> {
        match self {
            FsHint::Bitlocker => {
                Some("it is encrypted with BitLocker, and backchain does not decrypt volumes (unlock a restored copy)")
            }
            FsHint::Luks => {
                Some("it is encrypted with LUKS, and backchain does not decrypt volumes (unlock a restored copy)")
            }
            FsHint::Zfs => Some("ZFS pools are not supported"),
            FsHint::Refs => Some("ReFS (Windows Resilient File System) is not supported"),
            FsHint::Exfat => Some("exFAT is not supported yet"),
            FsHint::Swap => Some("swap space holds no files"),
            _ => None,
        }
    }
}

/// Detects a filesystem or volume signature at the start of `window`.
/// Read errors and short windows count as "no signature".
pub fn detect_fs_magic(window: &dyn ReadAt) -> FsHint {
    let mut head = vec![0u8; HEAD_LEN];
    let n = read_at_most(window, 0, &mut head).unwrap_or(0);
    head.truncate(n);
    let mut hint = detect_head(&head);
    if hint == FsHint::Unknown {
        let mut m = [0u8; 8];
        if window.read_exact_at(BTRFS_MAGIC_AT, &mut m).is_ok() && &m == BTRFS_MAGIC {
            hint = FsHint::Btrfs;
        } else if is_zfs(window) {
            hint = FsHint::Zfs;
        }
    }
    hint
}

/// An uberblock magic, in either byte order, in a slot of label 0's array.
fn is_zfs(window: &dyn ReadAt) -> bool {
    let mut ubs = vec![0u8; ZFS_UBERBLOCKS_LEN];
    if window.read_exact_at(ZFS_UBERBLOCKS_AT, &mut ubs).is_err() {
        return false;
    }
    ubs.chunks(ZFS_UBERBLOCK_SLOT).any(|slot| {
        let mut m = [0u8; 8];
        m.copy_from_slice(&slot[..8]);
        u64::from_le_bytes(m) == ZFS_UB_MAGIC || u64::from_be_bytes(m) == ZFS_UB_MAGIC
    })
}

/// Detection over the first bytes of a volume (up to [`HEAD_LEN`]).
pub(super) fn detect_head(head: &[u8]) -> FsHint {
    let at = |off: usize, magic: &[u8]| head.get(off..off + magic.len()) == Some(magic);
    if at(3, NTFS_OEM) {
        FsHint::Ntfs
    } else if at(3, BITLOCKER_OEM) {
        FsHint::Bitlocker
    } else if at(3, REFS_OEM) {
        FsHint::Refs
    } else if at(3, EXFAT_OEM) {
        FsHint::Exfat
    } else if is_fat_boot_sector(head) {
        FsHint::Fat
    } else if at(EXT_MAGIC_AT, &EXT_MAGIC) {
        FsHint::Ext
    } else if at(0, XFS_MAGIC) {
        FsHint::Xfs
    } else if at(0, LUKS_MAGIC) {
        FsHint::Luks
    } else if (0..4).any(|s| at(s * 512, LVM_LABEL) && at(s * 512 + 24, LVM_TYPE)) {
        FsHint::Lvm
    } else if SWAP_PAGE_SIZES.iter().any(|&p| SWAP_MAGICS.iter().any(|m| at(p - 10, &m[..]))) {
        FsHint::Swap
    } else {
        FsHint::Unknown
    }
}

/// A FAT boot sector whose BPB is sane (FAT spec 3.1): a jump instruction,
/// bytes per sector a power of two in 512..=4096, sectors per cluster a power
/// of two, reserved sectors and FAT count non-zero, the 0x55AA signature and
/// a "FAT" file system type string. An MBR's boot code fails these checks.
fn is_fat_boot_sector(s: &[u8]) -> bool {
    if s.len() < 512 || s[510..512] != BOOT_SIGNATURE {
        return false;
    }
    let jump = (s[0] == 0xEB && s[2] == 0x90) || s[0] == 0xE9;
    let bytes_per_sector = u16::from_le_bytes([s[11], s[12]]);
    let sectors_per_cluster = s[13];
    let reserved = u16::from_le_bytes([s[14], s[15]]);
    let fats = s[16];
    let sane = jump
        && bytes_per_sector.is_power_of_two()
        && (512..=4096).contains(&bytes_per_sector)
        && sectors_per_cluster.is_power_of_two()
        && reserved != 0
        && (1..=2).contains(&fats);
    let fat_type = s[FAT16_TYPE_AT..FAT16_TYPE_AT + 3] == *b"FAT" || s[FAT32_TYPE_AT..FAT32_TYPE_AT + 3] == *b"FAT";
    sane && fat_type
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::block::MemImage;

    fn fat_sector() -> Vec<u8> {
        let mut s = vec![0u8; 512];
        s[0..3].copy_from_slice(&[0xEB, 0x3C, 0x90]);
        s[11..13].copy_from_slice(&512u16.to_le_bytes());
        s[13] = 4;
        s[14] = 1;
        s[16] = 2;
        s[54..62].copy_from_slice(b"FAT16   ");
        s[510..512].copy_from_slice(&BOOT_SIGNATURE);
        s
    }

    #[test]
    fn fat_bpb_sanity() {
        assert_eq!(detect_head(&fat_sector()), FsHint::Fat);
        for (off, val) in [(0, 0x33u8), (12, 0x03), (13, 3), (14, 0), (16, 3), (54, b'X'), (510, 0)] {
            let mut s = fat_sector();
            s[off] = val;
            assert_eq!(detect_head(&s), FsHint::Unknown, "byte {off} = {val:#x}");
        }
    }

    #[test]
    fn signatures() {
        let mut v = vec![0u8; 8192];
        assert_eq!(detect_fs_magic(&MemImage(v.clone())), FsHint::Unknown);
        v[1080..1082].copy_from_slice(&EXT_MAGIC);
        assert_eq!(detect_fs_magic(&MemImage(v.clone())), FsHint::Ext);
        let mut v = vec![0u8; 8192];
        v[4086..4096].copy_from_slice(b"SWAPSPACE2");
        assert_eq!(detect_fs_magic(&MemImage(v.clone())), FsHint::Swap);
        let mut v = vec![0u8; 8192];
        v[512..520].copy_from_slice(LVM_LABEL);
        v[536..544].copy_from_slice(LVM_TYPE);
        assert_eq!(detect_fs_magic(&MemImage(v)), FsHint::Lvm);
        let mut v = vec![0u8; 0x2_0000];
        v[0x1_0040..0x1_0048].copy_from_slice(BTRFS_MAGIC);
        assert_eq!(detect_fs_magic(&MemImage(v)), FsHint::Btrfs);
        for (magic, hint) in
            [(&b"NTFS    "[..], FsHint::Ntfs), (b"-FVE-FS-", FsHint::Bitlocker), (b"EXFAT   ", FsHint::Exfat)]
        {
            let mut v = vec![0u8; 512];
            v[3..11].copy_from_slice(magic);
            assert_eq!(detect_fs_magic(&MemImage(v)), hint);
        }
        let mut v = vec![0u8; 512];
        v[3..11].copy_from_slice(REFS_OEM);
        assert_eq!(detect_fs_magic(&MemImage(v)), FsHint::Refs);
        // A big-endian uberblock in the third slot of label 0.
        let mut v = vec![0u8; 512 << 10];
        let at = ZFS_UBERBLOCKS_AT as usize + 2 * ZFS_UBERBLOCK_SLOT;
        v[at..at + 8].copy_from_slice(&ZFS_UB_MAGIC.to_be_bytes());
        assert_eq!(detect_fs_magic(&MemImage(v)), FsHint::Zfs);
        assert_eq!(detect_fs_magic(&MemImage(b"XFSB".to_vec())), FsHint::Xfs);
        assert_eq!(detect_fs_magic(&MemImage(b"LUKS\xBA\xBE\0\x02".to_vec())), FsHint::Luks);
        assert_eq!(detect_fs_magic(&MemImage(Vec::new())), FsHint::Unknown);
    }
}
