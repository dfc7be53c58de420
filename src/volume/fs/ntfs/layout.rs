//! NTFS on-disk constants (structure layouts as documented by the Linux-NTFS
//! project's "NTFS Documentation" and Microsoft's [MS-FSCC]).

/// MFT record header ("FILE" record), NTFS docs "File Record".
pub const FILE_MAGIC: &[u8; 4] = b"FILE";
pub const REC_USA_OFFSET: usize = 0x04;
pub const REC_USA_COUNT: usize = 0x06;
pub const REC_LINK_COUNT: usize = 0x12;
pub const REC_ATTRS_OFFSET: usize = 0x14;
pub const REC_FLAGS: usize = 0x16;
pub const REC_BYTES_IN_USE: usize = 0x18;
pub const REC_BASE_REFERENCE: usize = 0x20;
pub const REC_FLAG_IN_USE: u16 = 0x0001;
pub const REC_FLAG_DIRECTORY: u16 = 0x0002;

/// Index record ("INDX"), NTFS docs "$INDEX_ALLOCATION".
pub const INDX_MAGIC: &[u8; 4] = b"INDX";
pub const INDX_VCN: usize = 0x10;
pub const INDX_HEADER: usize = 0x18;

/// Update sequence arrays protect the last two bytes of every 512-byte stride.
pub const USA_STRIDE: usize = 512;

/// Attribute header, NTFS docs "Attribute - header".
pub const ATTR_TYPE: usize = 0x00;
pub const ATTR_LENGTH: usize = 0x04;
pub const ATTR_NON_RESIDENT: usize = 0x08;
pub const ATTR_NAME_LENGTH: usize = 0x09;
pub const ATTR_NAME_OFFSET: usize = 0x0a;
pub const ATTR_FLAGS: usize = 0x0c;
pub const ATTR_RES_VALUE_LENGTH: usize = 0x10;
pub const ATTR_RES_VALUE_OFFSET: usize = 0x14;
pub const ATTR_NR_LOWEST_VCN: usize = 0x10;
pub const ATTR_NR_HIGHEST_VCN: usize = 0x18;
pub const ATTR_NR_RUNS_OFFSET: usize = 0x20;
pub const ATTR_NR_COMPRESSION_UNIT: usize = 0x22;
pub const ATTR_NR_DATA_SIZE: usize = 0x30;
pub const ATTR_NR_INIT_SIZE: usize = 0x38;
/// Smallest non-resident header (through the initialized size).
pub const ATTR_NR_HEADER_MIN: usize = 0x40;
pub const ATTR_END: u32 = 0xffff_ffff;

/// Attribute flags.
pub const ATTR_FLAG_COMPRESSION_MASK: u16 = 0x00ff;
pub const ATTR_FLAG_ENCRYPTED: u16 = 0x4000;

/// Attribute type codes.
pub const AT_STANDARD_INFORMATION: u32 = 0x10;
pub const AT_ATTRIBUTE_LIST: u32 = 0x20;
pub const AT_FILE_NAME: u32 = 0x30;
pub const AT_DATA: u32 = 0x80;
pub const AT_INDEX_ROOT: u32 = 0x90;
pub const AT_INDEX_ALLOCATION: u32 = 0xa0;
pub const AT_SECURITY_DESCRIPTOR: u32 = 0x50;
pub const AT_REPARSE_POINT: u32 = 0xc0;

/// $STANDARD_INFORMATION value: times (NT 100 ns units since 1601) and
/// DOS-style file attributes.
pub const SI_CREATION: usize = 0x00;
pub const SI_MODIFICATION: usize = 0x08;
pub const SI_MFT_CHANGE: usize = 0x10;
pub const SI_ACCESS: usize = 0x18;
pub const SI_FILE_ATTRIBUTES: usize = 0x20;
pub const SI_MIN_LEN: usize = 0x24;
/// NTFS 3.0 and later: the file's id in $Secure (a 72-byte value).
pub const SI_SECURITY_ID: usize = 0x34;

/// File attribute bits ([MS-FSCC] 2.6).
pub const FILE_ATTRIBUTE_READONLY: u32 = 0x0001;
pub const FILE_ATTRIBUTE_SYSTEM: u32 = 0x0004;
pub const FILE_ATTRIBUTE_DIRECTORY: u32 = 0x0010;
pub const FILE_ATTRIBUTE_ENCRYPTED: u32 = 0x4000;

/// $FILE_NAME value (also the key of $I30 index entries).
pub const FN_NAME_LENGTH: usize = 0x40;
pub const FN_NAMESPACE: usize = 0x41;
pub const FN_NAME: usize = 0x42;
/// Namespace of a DOS 8.3 alias that duplicates a long name.
pub const FN_NAMESPACE_DOS: u8 = 2;

/// $INDEX_ROOT value: a 16-byte root header, then an index node header.
pub const IR_BLOCK_SIZE: usize = 0x08;
pub const IR_NODE_HEADER: usize = 0x10;
/// Index node header (relative to its start).
pub const NH_ENTRIES_OFFSET: usize = 0x00;
pub const NH_ENTRIES_SIZE: usize = 0x04;
pub const NH_LEN: usize = 0x10;
/// Index entry.
pub const IE_FILE_REFERENCE: usize = 0x00;
pub const IE_LENGTH: usize = 0x08;
pub const IE_KEY_LENGTH: usize = 0x0a;
pub const IE_FLAGS: usize = 0x0c;
pub const IE_KEY: usize = 0x10;
pub const IE_FLAG_SUBNODE: u16 = 0x01;
pub const IE_FLAG_LAST: u16 = 0x02;

/// $ATTRIBUTE_LIST entry.
pub const AL_TYPE: usize = 0x00;
pub const AL_LENGTH: usize = 0x04;
pub const AL_REFERENCE: usize = 0x10;
pub const AL_MIN_LEN: usize = 0x1a;

/// File reference: 48-bit record number and 16-bit sequence number.
pub const FRN_MASK: u64 = 0x0000_ffff_ffff_ffff;

/// Well-known file record numbers.
pub const FRN_MFT: u64 = 0;
pub const FRN_ROOT: u64 = 5;
pub const FRN_SECURE: u64 = 9;
/// Records below this are filesystem metadata ($MFT, $Bitmap, $Extend, ...).
pub const FRN_FIRST_USER: u64 = 16;

/// Reparse tags ([MS-FSCC] 2.1.2.1).
pub const IO_REPARSE_TAG_MOUNT_POINT: u32 = 0xa000_0003;
pub const IO_REPARSE_TAG_SYMLINK: u32 = 0xa000_000c;
pub const IO_REPARSE_TAG_DEDUP: u32 = 0x8000_0013;
pub const IO_REPARSE_TAG_WOF: u32 = 0x8000_0017;
/// Symlink reparse flag: the substitute name is relative.
pub const SYMLINK_FLAG_RELATIVE: u32 = 0x1;

/// Interix special files, as ntfs-3g writes a symlink made with `ln -s`: a
/// SYSTEM file whose data starts with this magic, then the UTF-16LE target.
pub const INTX_SYMLINK_MAGIC: &[u8; 8] = b"IntxLNK\x01";
pub const INTX_CHAR_MAGIC: &[u8; 8] = b"IntxCHR\0";
pub const INTX_BLOCK_MAGIC: &[u8; 8] = b"IntxBLK\0";

/// NT time (100 ns since 1601-01-01) of the Unix epoch.
pub const NT_TICKS_PER_SEC: u64 = 10_000_000;
pub const NT_UNIX_EPOCH_SECS: i64 = 11_644_473_600;

/// Largest compression unit handled: 16 clusters of at most 4 KiB (NTFS only
/// compresses volumes with clusters up to 4 KiB).
pub const MAX_COMPRESSION_UNIT: u64 = 64 * 1024;
