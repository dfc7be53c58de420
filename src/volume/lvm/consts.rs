//! LVM2 on-disk constants, as LVM2's `lib/label/label.h`,
//! `lib/format_text/layout.h` and `lib/format_text/format-text.c` define
//! them (the "LVM2 label and metadata area" layout; all integers little
//! endian), and the limits this reader puts on what it accepts.

/// Sector size every LVM2 offset in the label is counted in.
pub const SECTOR: u64 = 512;
/// The label sits in one of the first four sectors (LABEL_SCAN_SECTORS).
pub const LABEL_SCAN_SECTORS: u64 = 4;
/// `label_header.id`.
pub const LABEL_ID: &[u8; 8] = b"LABELONE";
/// `label_header.type` of a text-format (LVM2) label.
pub const LABEL_TYPE: &[u8; 8] = b"LVM2 001";
/// `label_header` fields: id (8), sector_xl (u64), crc_xl (u32), offset_xl (u32), type (8).
pub const LABEL_SECTOR_AT: usize = 8;
pub const LABEL_CRC_AT: usize = 16;
pub const LABEL_OFFSET_AT: usize = 20;
pub const LABEL_TYPE_AT: usize = 24;
/// The label CRC covers from `offset_xl` to the end of the label sector.
pub const LABEL_CRC_FROM: usize = LABEL_OFFSET_AT;
/// `pv_header.pv_uuid` length (ID_LEN): 32 characters, no hyphens.
pub const ID_LEN: usize = 32;
/// A `disk_locn` list entry: offset (u64), size (u64); a zero offset ends a list.
pub const DISK_LOCN_LEN: usize = 16;

/// Seed of LVM2's CRC (INITIAL_CRC): the CRC-32 register, reflected
/// polynomial, no final inversion (`lib/misc/crc.c`).
pub const INITIAL_CRC: u32 = 0xf597_a6cf;

/// `mda_header`: checksum_xl (u32), magic (16), version (u32), start (u64),
/// size (u64), then `raw_locn` entries; MDA_HEADER_SIZE bytes in all.
pub const MDA_HEADER_SIZE: u64 = 512;
pub const MDA_MAGIC_AT: usize = 4;
pub const MDA_MAGIC: &[u8; 16] = b" LVM2 x[5A%r0N*>";
pub const MDA_VERSION_AT: usize = 20;
pub const MDA_VERSION: u32 = 1;
pub const MDA_START_AT: usize = 24;
pub const MDA_SIZE_AT: usize = 32;
pub const MDA_RLOCN_AT: usize = 40;
/// `raw_locn`: offset (u64, from the mda start), size (u64), checksum (u32), flags (u32).
pub const RAW_LOCN_LEN: usize = 24;
/// `raw_locn.flags`: this copy is ignored (`pvchange --metadataignore`).
pub const RAW_LOCN_IGNORED: u32 = 1;

/// LVM2 extents and PV offsets in the metadata text are counted in 512-byte sectors.
pub const META_SECTOR: u64 = 512;
/// `contents` of a VG metadata text.
pub const TEXT_CONTENTS: &str = "Text Format Volume Group";
/// The text format version this reader knows.
pub const TEXT_VERSION: i64 = 1;

/// Largest metadata text read (LVM2's own default area is 1 MiB; large
/// VGs use bigger areas, but nothing real comes near this).
pub const MAX_TEXT_LEN: u64 = 32 << 20;
/// Deepest nesting of sections (a VG uses four: VG, logical_volumes, LV, segment).
pub const MAX_DEPTH: usize = 16;
/// Most values and sections in one metadata text: a VG with MAX_LVS
/// LVs of a few segments each needs about a quarter of this, and the
/// parsed tree stays within some tens of MiB.
pub const MAX_ITEMS: usize = 500_000;
/// Longest string or name in the text.
pub const MAX_STRING_LEN: usize = 1 << 20;
/// Most entries in a PV's data or metadata area lists.
pub const MAX_AREAS: usize = 8;
/// Most PVs, LVs, segments per LV and stripes per segment accepted.
pub const MAX_PVS: usize = 4096;
pub const MAX_LVS: usize = 16_384;
pub const MAX_SEGMENTS: usize = 65_536;
/// LVM2's own limit on stripes (MAX_STRIPES).
pub const MAX_STRIPES: usize = 128;
