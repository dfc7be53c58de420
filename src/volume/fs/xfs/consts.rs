//! XFS on-disk constants, in one place. Section names refer to the "XFS
//! Algorithms & Data Structures" book (3rd edition, kernel.org
//! `xfs-documentation`), which mirrors `libxfs/xfs_format.h`,
//! `xfs_da_format.h` and `xfs_log_format.h`. All fields are big-endian
//! except the CRCs, which are stored little-endian.

/// §"Superblocks": "XFSB" at byte 0 of every allocation group.
pub const SB_MAGIC: u32 = 0x5846_5342;
/// §"Superblocks": the CRC of a v5 superblock (over one sector).
pub const SB_CRC_OFF: usize = 0xE0;
/// The low nibble of `sb_versionnum`.
pub const SB_VERSION_4: u16 = 4;
pub const SB_VERSION_5: u16 = 5;
pub const SB_VERSION_NUMBITS: u16 = 0x000F;
/// v4 `sb_versionnum` bits we look at.
pub const SB_VERSION_DIRV2BIT: u16 = 0x2000;
pub const SB_VERSION_BORGBIT: u16 = 0x4000;
pub const SB_VERSION_MOREBITSBIT: u16 = 0x8000;
/// v4 `sb_features2`: the file type in folder entries.
pub const SB_FEATURES2_FTYPE: u32 = 0x0200;
/// v5 `sb_features_incompat` bits (§"Superblocks", "sb_features_incompat").
pub const INCOMPAT_FTYPE: u32 = 0x01;
pub const INCOMPAT_SPINODES: u32 = 0x02;
pub const INCOMPAT_META_UUID: u32 = 0x04;
pub const INCOMPAT_BIGTIME: u32 = 0x08;
pub const INCOMPAT_NEEDSREPAIR: u32 = 0x10;
pub const INCOMPAT_NREXT64: u32 = 0x20;
pub const INCOMPAT_EXCHRANGE: u32 = 0x40;
pub const INCOMPAT_PARENT: u32 = 0x80;
/// Every incompat bit this reader understands (the rest are refused).
pub const INCOMPAT_KNOWN: u32 = INCOMPAT_FTYPE
    | INCOMPAT_SPINODES
    | INCOMPAT_META_UUID
    | INCOMPAT_BIGTIME
    | INCOMPAT_NEEDSREPAIR
    | INCOMPAT_NREXT64
    | INCOMPAT_EXCHRANGE
    | INCOMPAT_PARENT;

/// §"AG Free Space Management" / §"AG Inode Management": headers in the
/// second and third sector of every AG.
pub const AGF_MAGIC: u32 = 0x5841_4746; // "XAGF"
pub const AGI_MAGIC: u32 = 0x5841_4749; // "XAGI"
/// CRC offsets in the v5 AGF and AGI.
pub const AGF_CRC_OFF: usize = 0xD8;
pub const AGI_CRC_OFF: usize = 0x138;

/// §"On-disk Inode": "IN".
pub const DINODE_MAGIC: u16 = 0x494E;
/// Size of the inode core before the data fork: v1/v2 and v3 inodes.
pub const DINODE_CORE_V2: usize = 100;
pub const DINODE_CORE_V3: usize = 176;
/// The CRC of a v3 inode (over the whole inode).
pub const DINODE_CRC_OFF: usize = 0x64;
/// `di_format`: how a fork is stored.
pub const FMT_LOCAL: u8 = 1;
pub const FMT_EXTENTS: u8 = 2;
pub const FMT_BTREE: u8 = 3;
/// `di_flags`: the data lives on the realtime device.
pub const DIFLAG_REALTIME: u16 = 0x0001;
/// `di_flags2` (v3 inodes).
pub const DIFLAG2_BIGTIME: u64 = 0x08;
pub const DIFLAG2_NREXT64: u64 = 0x10;
/// §"Timestamps": bigtime counts nanoseconds from 1901-12-13 (-2^31 s).
pub const BIGTIME_EPOCH_OFFSET: i64 = 1 << 31;

/// §"Data Extents": a 128-bit extent record.
pub const BMBT_REC_SIZE: usize = 16;
/// The largest file offset in blocks a record can hold (54 bits).
pub const MAX_FILEOFF: u64 = (1 << 54) - 1;
/// §"B+tree Extent List": long-format btree block magics.
pub const BMAP_MAGIC: u32 = 0x424D_4150; // "BMAP"
pub const BMAP_CRC_MAGIC: u32 = 0x424D_4133; // "BMA3"
/// Long-format btree block header sizes (v4, v5) and the v5 CRC offset.
pub const BTREE_LBLOCK_LEN: usize = 24;
pub const BTREE_LBLOCK_CRC_LEN: usize = 72;
pub const BTREE_LBLOCK_CRC_OFF: usize = 64;

/// §"Directories": data blocks live below 32 GiB of the folder's
/// address space, the leaf and free-index blocks above it.
pub const DIR2_LEAF_OFFSET: u64 = 32 << 30;
/// Data block magics: single-block folders and data blocks, v4 and v5.
pub const DIR2_BLOCK_MAGIC: u32 = 0x5844_3242; // "XD2B"
pub const DIR2_DATA_MAGIC: u32 = 0x5844_3244; // "XD2D"
pub const DIR3_BLOCK_MAGIC: u32 = 0x5844_4233; // "XDB3"
pub const DIR3_DATA_MAGIC: u32 = 0x5844_4433; // "XDD3"
/// Data block header sizes (v4, v5) and the v5 CRC offset.
pub const DIR2_DATA_HDR: usize = 16;
pub const DIR3_DATA_HDR: usize = 64;
pub const DIR3_CRC_OFF: usize = 4;
/// An unused region of a data block starts with this tag.
pub const DIR2_DATA_FREE_TAG: u16 = 0xFFFF;
/// Entries and free regions are 8-byte aligned.
pub const DIR2_DATA_ALIGN: usize = 8;
/// A block-format folder ends with its tail (count, stale) ...
pub const DIR2_BLOCK_TAIL: usize = 8;
/// ... after `count` leaf entries (hash, address) of this size.
pub const DIR2_LEAF_ENTRY: usize = 8;

/// §"Symbolic Links": remote symlink blocks carry this header on v5.
pub const SYMLINK_MAGIC: u32 = 0x5853_4C4D; // "XSLM"
pub const SYMLINK_HDR: usize = 56;
pub const SYMLINK_CRC_OFF: usize = 12;
/// The longest symlink target (MAXPATHLEN).
pub const SYMLINK_MAXLEN: u64 = 1024;

/// §"Journaling Log": a log record header starts with this magic; every
/// other 512-byte log block starts with its cycle number.
pub const LOG_HEADER_MAGIC: u32 = 0xFEED_BABE;
/// Log operation flag of the record a clean unmount writes.
pub const LOG_UNMOUNT_TRANS: u8 = 0x20;
/// Basic block: the log's unit.
pub const BBSIZE: u64 = 512;
/// A v2 log record header spans one basic block per 32 KiB of record.
pub const LOG_HEADER_CYCLE_SIZE: u64 = 32 << 10;

/// §"Extended Attributes": the attribute fork's da-btree blocks (leaf and
/// node, v4 and v5 magics at byte 8, in the block info header).
pub const ATTR_LEAF_MAGIC: u16 = 0xFBEE;
pub const ATTR3_LEAF_MAGIC: u16 = 0x3BEE;
pub const DA_NODE_MAGIC: u16 = 0xFEBE;
pub const DA3_NODE_MAGIC: u16 = 0x3EBE;
/// Header sizes: `xfs_attr_leaf_hdr` / `xfs_attr3_leaf_hdr`,
/// `xfs_da_node_hdr` / `xfs_da3_node_hdr`.
pub const ATTR_LEAF_HDR: usize = 32;
pub const ATTR3_LEAF_HDR: usize = 80;
pub const DA_NODE_HDR: usize = 16;
pub const DA3_NODE_HDR: usize = 64;
/// `xfs_da3_blkinfo`: CRC, UUID and owner offsets.
pub const DA3_CRC_OFF: usize = 12;
pub const DA3_UUID_OFF: usize = 32;
pub const DA3_OWNER_OFF: usize = 48;
/// A leaf entry (hash, name index, flags, pad) and a node entry (hash,
/// child block).
pub const ATTR_LEAF_ENTRY: usize = 8;
pub const DA_NODE_ENTRY: usize = 8;
/// The deepest da-btree XFS builds (`XFS_DA_NODE_MAXDEPTH`).
pub const DA_NODE_MAXDEPTH: usize = 5;
/// §"Remote Values": v5 remote value blocks start with `xfs_attr3_rmt_hdr`
/// ("XARM"): offset in the value, bytes here, CRC, UUID, owner.
pub const ATTR3_RMT_MAGIC: u32 = 0x5841_524D;
pub const ATTR3_RMT_HDR: usize = 56;
pub const ATTR3_RMT_CRC_OFF: usize = 12;
pub const ATTR3_RMT_UUID_OFF: usize = 16;
pub const ATTR3_RMT_OWNER_OFF: usize = 32;
/// Attribute entry flags: the value is in the leaf; the namespace (none:
/// `user.`); a parent pointer (not an xattr); being written.
pub const ATTR_LOCAL: u8 = 0x01;
pub const ATTR_ROOT: u8 = 0x02;
pub const ATTR_SECURE: u8 = 0x04;
pub const ATTR_PARENT: u8 = 0x08;
pub const ATTR_INCOMPLETE: u8 = 0x80;
/// POSIX ACLs are `trusted.` attributes under these names, in XFS's own
/// big-endian form (`xfs_acl`: count, then tag, id, perm, pad per entry).
pub const SGI_ACL_FILE: &[u8] = b"SGI_ACL_FILE";
pub const SGI_ACL_DEFAULT: &[u8] = b"SGI_ACL_DEFAULT";
pub const XFS_ACL_ENTRY: usize = 12;
