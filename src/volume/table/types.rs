//! Human names for partition types: GPT type GUIDs (UEFI spec 2.10 table 5.8
//! for the UEFI-defined ones; the others as the OS vendors register them) and
//! MBR type bytes (the de-facto registry every partitioning tool follows).

use super::guid::Guid;

/// GPT partition type GUIDs, text form, with their names.
const GPT_TYPES: &[(&str, &str)] = &[
    ("C12A7328-F81F-11D2-BA4B-00A0C93EC93B", "EFI system partition"),
    ("024DEE41-33E7-11D3-9D69-0008C781F39F", "MBR partition scheme"),
    ("21686148-6449-6E6F-744E-656564454649", "BIOS boot"),
    ("E3C9E316-0B5C-4DB8-817D-F92DF00215AE", "Microsoft reserved"),
    ("EBD0A0A2-B9E5-4433-87C0-68B6B72699C7", "Microsoft basic data"),
    ("DE94BBA4-06D1-4D40-A16A-BFD50179D6AC", "Windows recovery"),
    ("5808C8AA-7E8F-42E0-85D2-E1E90434CFB3", "Windows LDM metadata"),
    ("AF9B60A0-1431-4F62-BC68-3311714A69AD", "Windows LDM data"),
    ("E75CAF8F-F680-4CEE-AFA3-B001E56EFC2D", "Windows Storage Spaces"),
    ("0FC63DAF-8483-4772-8E79-3D69D8477DE4", "Linux filesystem"),
    ("0657FD6D-A4AB-43C4-84E5-0933C84B4F4F", "Linux swap"),
    ("E6D6D379-F507-44C2-A23C-238F2A3DF928", "Linux LVM"),
    ("A19D880F-05FC-4D3B-A006-743F0F84911E", "Linux RAID"),
    ("44479540-F297-41B2-9AF7-D131D5F0458A", "Linux root (x86)"),
    ("4F68BCE3-E8CD-4DB1-96E7-FBCAF984B709", "Linux root (x86-64)"),
    ("B921B045-1DF0-41C3-AF44-4C6F280D3FAE", "Linux root (ARM64)"),
    ("933AC7E1-2EB4-4F13-B844-0E14E2AEF915", "Linux home"),
    ("3B8F8425-20E0-4F3B-907F-1A25A76F98E8", "Linux server data"),
    ("BC13C2FF-59E6-4262-A352-B275FD6F7172", "Linux extended boot"),
    ("CA7D7CCB-63ED-4C53-861C-1742536059CC", "Linux LUKS"),
    ("8DA63339-0007-60C0-C436-083AC8230908", "Linux reserved"),
    ("516E7CB6-6ECF-11D6-8FF8-00022D09712B", "FreeBSD UFS"),
    ("516E7CB5-6ECF-11D6-8FF8-00022D09712B", "FreeBSD swap"),
    ("516E7CBA-6ECF-11D6-8FF8-00022D09712B", "FreeBSD ZFS"),
    ("6A898CC3-1DD2-11B2-99A6-080020736631", "ZFS"),
    ("48465300-0000-11AA-AA11-00306543ECAC", "Apple HFS+"),
    ("7C3457EF-0000-11AA-AA11-00306543ECAC", "Apple APFS"),
    ("AA31E02A-400F-11DB-9590-000C2911D1B8", "VMware VMFS"),
    ("9D275380-40AD-11DB-BF97-000C2911D1B8", "VMware diagnostic"),
];

/// MBR partition type bytes with their names.
const MBR_TYPES: &[(u8, &str)] = &[
    (0x01, "FAT12"),
    (0x04, "FAT16 (small)"),
    (0x05, "Extended"),
    (0x06, "FAT16"),
    (0x07, "NTFS/exFAT"),
    (0x0B, "FAT32"),
    (0x0C, "FAT32 (LBA)"),
    (0x0E, "FAT16 (LBA)"),
    (0x0F, "Extended (LBA)"),
    (0x11, "Hidden FAT12"),
    (0x12, "Vendor diagnostics"),
    (0x14, "Hidden FAT16 (small)"),
    (0x16, "Hidden FAT16"),
    (0x17, "Hidden NTFS"),
    (0x1B, "Hidden FAT32"),
    (0x1C, "Hidden FAT32 (LBA)"),
    (0x1E, "Hidden FAT16 (LBA)"),
    (0x27, "Windows recovery"),
    (0x42, "Windows dynamic disk"),
    (0x82, "Linux swap"),
    (0x83, "Linux"),
    (0x85, "Linux extended"),
    (0x8E, "Linux LVM"),
    (0xA5, "FreeBSD"),
    (0xA6, "OpenBSD"),
    (0xA9, "NetBSD"),
    (0xAF, "Apple HFS+"),
    (0xDE, "Dell utility"),
    (0xEE, "GPT protective"),
    (0xEF, "EFI system partition"),
    (0xFB, "VMware VMFS"),
    (0xFC, "VMware swap"),
    (0xFD, "Linux RAID"),
];

/// Why a partition of a type (by its name above) is not browsed when no
/// filesystem is found in it: the types whose contents need a volume
/// manager backchain does not have.
pub fn type_reason(type_name: &str) -> Option<&'static str> {
    match type_name {
        "Windows dynamic disk" | "Windows LDM metadata" | "Windows LDM data" => {
            Some("it is part of a Windows dynamic disk (LDM), whose volumes are not supported")
        }
        "Windows Storage Spaces" => Some("Windows Storage Spaces are not supported"),
        "ZFS" | "FreeBSD ZFS" => Some("ZFS pools are not supported"),
        "Linux RAID" => Some("Linux software RAID (md) is not supported"),
        "Linux LUKS" => Some("it is encrypted with LUKS, and backchain does not decrypt volumes"),
        _ => None,
    }
}

pub fn gpt_type_name(g: &Guid) -> Option<&'static str> {
    let text = g.to_string();
    GPT_TYPES.iter().find(|(t, _)| t.eq_ignore_ascii_case(&text)).map(|&(_, n)| n)
}

pub fn mbr_type_name(t: u8) -> Option<&'static str> {
    MBR_TYPES.iter().find(|&&(b, _)| b == t).map(|&(_, n)| n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_are_well_formed() {
        for (t, _) in GPT_TYPES {
            let g = Guid::parse(t).unwrap_or_else(|| panic!("bad GUID {t}"));
            assert_eq!(&g.to_string(), t, "GUIDs are kept in upper case");
        }
        let mut bytes: Vec<u8> = MBR_TYPES.iter().map(|&(b, _)| b).collect();
        bytes.dedup();
        assert_eq!(bytes.len(), MBR_TYPES.len(), "MBR types sorted and unique");
        assert_eq!(mbr_type_name(0x83), Some("Linux"));
        assert_eq!(mbr_type_name(0x00), None);
        assert_eq!(gpt_type_name(&Guid::default()), None);
        // Every type with a reason is a type name of one of the tables.
        let names: Vec<&str> = GPT_TYPES.iter().map(|t| t.1).chain(MBR_TYPES.iter().map(|t| t.1)).collect();
        let with_reason: Vec<&&str> = names.iter().filter(|n| type_reason(n).is_some()).collect();
        assert_eq!(with_reason.len(), 9, "{with_reason:?}");
    }
}
