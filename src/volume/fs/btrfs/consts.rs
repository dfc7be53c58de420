//! btrfs on-disk constants, in one place. Sections refer to the kernel's
//! documentation of the on-disk format (Documentation/dev/On-disk-format.rst
//! in btrfs-progs) and to `include/uapi/linux/btrfs_tree.h`.

/// "Superblock": the primary copy lives 64 KiB into the device.
pub const SUPERBLOCK_OFFSET: u64 = 0x10000;
/// The superblock occupies one 4 KiB block.
pub const SUPERBLOCK_SIZE: usize = 4096;
/// `_BHRfS_M`, at byte 0x40 of the superblock.
pub const MAGIC: &[u8; 8] = b"_BHRfS_M";
/// Bytes of the sys chunk array inside the superblock.
pub const SYS_CHUNK_ARRAY_MAX: usize = 2048;

/// Checksum types ("csum_type"): only crc32c is read.
pub const CSUM_CRC32C: u16 = 0;
/// Every checksum field is 32 bytes wide; crc32c uses the first 4.
pub const CSUM_SIZE: usize = 32;

/// "Header": the fixed part of every tree node.
pub const HEADER_SIZE: usize = 0x65;
/// A leaf's item: key (17) + data offset (4) + data size (4).
pub const ITEM_SIZE: usize = 25;
/// An internal node's pointer: key (17) + block pointer (8) + generation (8).
pub const KEY_PTR_SIZE: usize = 33;
/// A disk key: objectid (8), type (1), offset (8).
pub const KEY_SIZE: usize = 17;
/// Deepest tree the kernel builds (BTRFS_MAX_LEVEL).
pub const MAX_LEVEL: u8 = 8;

/// Node sizes the kernel accepts (4 KiB to 64 KiB, a power of two).
pub const MIN_NODESIZE: u32 = 4096;
pub const MAX_NODESIZE: u32 = 65536;
/// Sector sizes: 4 KiB to 64 KiB, a power of two.
pub const MIN_SECTORSIZE: u32 = 4096;
pub const MAX_SECTORSIZE: u32 = 65536;

// Tree object ids (btrfs_tree.h).
pub const FS_TREE_OBJECTID: u64 = 5;
pub const CSUM_TREE_OBJECTID: u64 = 7;
/// The first subvolume id and the first inode number of every FS tree.
pub const FIRST_FREE_OBJECTID: u64 = 256;
/// The last id a subvolume can have (BTRFS_LAST_FREE_OBJECTID, -256).
pub const LAST_FREE_OBJECTID: u64 = (-256i64) as u64;
/// The object id of every data checksum item (BTRFS_EXTENT_CSUM_OBJECTID, -10).
pub const EXTENT_CSUM_OBJECTID: u64 = (-10i64) as u64;
/// The object id of chunk items in the chunk tree.
pub const FIRST_CHUNK_TREE_OBJECTID: u64 = 256;

// Item types (btrfs_tree.h).
pub const INODE_ITEM_KEY: u8 = 1;
pub const XATTR_ITEM_KEY: u8 = 24;
pub const DIR_INDEX_KEY: u8 = 96;
pub const EXTENT_DATA_KEY: u8 = 108;
pub const EXTENT_CSUM_KEY: u8 = 128;
pub const ROOT_ITEM_KEY: u8 = 132;
pub const ROOT_REF_KEY: u8 = 156;
pub const CHUNK_ITEM_KEY: u8 = 228;

// Chunk ("block group") type and profile bits.
pub const BLOCK_GROUP_RAID0: u64 = 1 << 3;
pub const BLOCK_GROUP_RAID1: u64 = 1 << 4;
pub const BLOCK_GROUP_DUP: u64 = 1 << 5;
pub const BLOCK_GROUP_RAID10: u64 = 1 << 6;
pub const BLOCK_GROUP_RAID5: u64 = 1 << 7;
pub const BLOCK_GROUP_RAID6: u64 = 1 << 8;
pub const BLOCK_GROUP_RAID1C3: u64 = 1 << 9;
pub const BLOCK_GROUP_RAID1C4: u64 = 1 << 10;
/// Every profile bit; none set means "single".
pub const BLOCK_GROUP_PROFILES: u64 = BLOCK_GROUP_RAID0
    | BLOCK_GROUP_RAID1
    | BLOCK_GROUP_DUP
    | BLOCK_GROUP_RAID10
    | BLOCK_GROUP_RAID5
    | BLOCK_GROUP_RAID6
    | BLOCK_GROUP_RAID1C3
    | BLOCK_GROUP_RAID1C4;
/// A chunk item without its stripes, and one stripe.
pub const CHUNK_ITEM_SIZE: usize = 48;
pub const STRIPE_SIZE: usize = 32;

// Incompatible features we cannot read (everything else only adds items we
// do not need, or changes nothing for a reader).
pub const INCOMPAT_METADATA_UUID: u64 = 1 << 10;
pub const INCOMPAT_EXTENT_TREE_V2: u64 = 1 << 13;
pub const INCOMPAT_RAID_STRIPE_TREE: u64 = 1 << 14;
/// Every incompat bit known in Linux 6.8; unknown bits are refused.
pub const INCOMPAT_KNOWN: u64 = 0x1_7FFF;

/// "Inode item": 160 bytes; the root item starts with one.
pub const INODE_ITEM_SIZE: usize = 160;
/// Inode flag: the file's data has no checksums (nodatasum).
pub const INODE_NODATASUM: u64 = 1 << 0;
/// A root item up to and including `level` (the pre-3.x size).
pub const ROOT_ITEM_MIN_SIZE: usize = 239;

/// "Dir item" (also xattr items): location key, transid, data_len,
/// name_len, type, then the name and data.
pub const DIR_ITEM_SIZE: usize = 30;
/// Directory entry types (BTRFS_FT_*).
pub const FT_DIR: u8 = 2;

/// "File extent item": the header up to `type`, and the full regular item.
pub const FILE_EXTENT_INLINE_HEADER: usize = 21;
pub const FILE_EXTENT_REGULAR_SIZE: usize = 53;
pub const EXTENT_INLINE: u8 = 0;
pub const EXTENT_REGULAR: u8 = 1;
pub const EXTENT_PREALLOC: u8 = 2;
pub const COMPRESS_NONE: u8 = 0;
pub const COMPRESS_ZLIB: u8 = 1;
pub const COMPRESS_LZO: u8 = 2;
pub const COMPRESS_ZSTD: u8 = 3;
/// Largest compressed extent, before and after compression
/// (BTRFS_MAX_COMPRESSED, 128 KiB).
pub const MAX_COMPRESSED: u64 = 128 << 10;
/// The kernel's largest file (MAX_LFS_FILESIZE on 64-bit hosts).
pub const MAX_FILE_SIZE: u64 = i64::MAX as u64;

/// LZO: each length field is a 4-byte little-endian word, and never
/// straddles a sector (fs/btrfs/lzo.c).
pub const LZO_LEN: usize = 4;
