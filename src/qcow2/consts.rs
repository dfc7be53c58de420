//! QCOW2 on-disk constants, after the QEMU "qcow2.txt" specification
//! (docs/interop/qcow2.txt in the QEMU tree); section names are given per item.

/// "QFI\xfb" — header, offset 0.
pub const MAGIC: u32 = 0x5146_49fb;

/// Size of the version 2 header, and where version 3 fields start.
pub const V2_HEADER_LEN: u32 = 72;
/// Smallest version 3 header (no compression_type byte).
pub const V3_MIN_HEADER_LEN: u32 = 104;
/// Version 3 header with the compression_type byte, padded to 8.
pub const V3_HEADER_LEN: u32 = 112;

/// Cluster sizes: 512 B (9 bits) to 2 MiB (21 bits) — header, cluster_bits.
pub const MIN_CLUSTER_BITS: u32 = 9;
pub const MAX_CLUSTER_BITS: u32 = 21;
pub const DEFAULT_CLUSTER_BITS: u32 = 16;

/// refcount_order 0..=6: refcount widths 1 to 64 bits — header, refcount_order.
pub const MAX_REFCOUNT_ORDER: u32 = 6;

/// Backing file names longer than this are invalid — header, backing_file_size.
pub const MAX_BACKING_NAME: u32 = 1023;

/// Incompatible feature bits — header, incompatible_features.
pub const INCOMPAT_DIRTY: u64 = 1 << 0;
pub const INCOMPAT_CORRUPT: u64 = 1 << 1;
pub const INCOMPAT_DATA_FILE: u64 = 1 << 2;
pub const INCOMPAT_COMPRESSION: u64 = 1 << 3;
pub const INCOMPAT_EXTL2: u64 = 1 << 4;
pub const INCOMPAT_KNOWN: u64 =
    INCOMPAT_DIRTY | INCOMPAT_CORRUPT | INCOMPAT_DATA_FILE | INCOMPAT_COMPRESSION | INCOMPAT_EXTL2;

/// Compatible feature bits — header, compatible_features.
pub const COMPAT_LAZY_REFCOUNTS: u64 = 1 << 0;
/// Autoclear feature bits — header, autoclear_features.
pub const AUTOCLEAR_BITMAPS: u64 = 1 << 0;
pub const AUTOCLEAR_DATA_FILE_RAW: u64 = 1 << 1;

/// compression_type values — header, byte 104.
pub const COMPRESSION_DEFLATE: u8 = 0;
pub const COMPRESSION_ZSTD: u8 = 1;

/// Header extension types — "Header extensions".
pub const EXT_END: u32 = 0;
pub const EXT_BACKING_FORMAT: u32 = 0xe279_2aca;
pub const EXT_FEATURE_TABLE: u32 = 0x6803_f857;
pub const EXT_BITMAPS: u32 = 0x2385_2875;
pub const EXT_ENCRYPTION: u32 = 0x0537_be77;
pub const EXT_DATA_FILE: u32 = 0x4441_5441;

/// L1 and L2 entries — "Cluster mapping".
pub const L1E_OFFSET_MASK: u64 = 0x00ff_ffff_ffff_fe00;
pub const L2E_OFFSET_MASK: u64 = 0x00ff_ffff_ffff_fe00;
pub const OFLAG_COPIED: u64 = 1 << 63;
pub const OFLAG_COMPRESSED: u64 = 1 << 62;
pub const OFLAG_ZERO: u64 = 1 << 0;

/// Extended L2 entries carry 32 subclusters — "Extended L2 Entries".
pub const SUBCLUSTERS: u32 = 32;

/// Refcount table entries: offset of a refcount block — "Host cluster management".
pub const REFT_OFFSET_MASK: u64 = 0xffff_ffff_ffff_fe00;

/// The largest L1 table we accept (same bound as QEMU's QCOW_MAX_L1_SIZE):
/// 32 MiB covers 2 PiB of guest space at 64 KiB clusters.
pub const MAX_L1_BYTES: u64 = 32 << 20;
/// The largest virtual size we accept: 2^56 bytes (64 PiB), beyond which
/// host offsets in L2 entries could not address the data anyway.
pub const MAX_VIRTUAL_SIZE: u64 = 1 << 56;
/// The deepest backing chain we open (loop detection catches cycles earlier).
pub const MAX_CHAIN_DEPTH: usize = 1000;
