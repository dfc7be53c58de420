//! ext2/3/4 inodes (ext4 documentation section 4.6 Index Nodes).

use crate::volume::fs::{NodeKind, Rdev, Timestamp};

// i_flags (section 4.6, "i_flags").
pub const FLAG_EXTENTS: u32 = 0x8_0000;
pub const FLAG_INLINE_DATA: u32 = 0x1000_0000;
/// i_block: 60 bytes holding block pointers, the extent root or a fast
/// symlink target.
pub const I_BLOCK_OFFSET: usize = 0x28;
pub const I_BLOCK_LEN: usize = 60;
/// The root folder is always inode 2 (section 4.6, "special inodes").
pub const ROOT_INODE: u32 = 2;

#[derive(Debug, Clone)]
pub struct Inode {
    pub mode: u16,
    pub uid: u32,
    pub gid: u32,
    pub size: u64,
    pub links: u16,
    pub flags: u32,
    pub blocks: [u8; I_BLOCK_LEN],
    pub atime: Timestamp,
    pub ctime: Timestamp,
    pub mtime: Timestamp,
    pub crtime: Option<Timestamp>,
}

fn u16_at(b: &[u8], off: usize) -> u16 {
    u16::from_le_bytes([b[off], b[off + 1]])
}

fn u32_at(b: &[u8], off: usize) -> u32 {
    u32::from_le_bytes([b[off], b[off + 1], b[off + 2], b[off + 3]])
}

/// A timestamp from the 32-bit seconds field and, when the inode is large
/// enough, the `_extra` field: 2 epoch bits extending the seconds and 30 bits
/// of nanoseconds (section 4.6.1).
fn timestamp(raw: &[u8], secs_at: usize, extra_at: Option<usize>) -> Timestamp {
    let mut secs = i64::from(u32_at(raw, secs_at) as i32);
    let mut nanos = 0;
    if let Some(e) = extra_at.filter(|&e| e + 4 <= raw.len()) {
        let extra = u32_at(raw, e);
        secs += i64::from(extra & 3) << 32;
        nanos = (extra >> 2).min(999_999_999);
    }
    Timestamp { secs, nanos }
}

impl Inode {
    /// Parses one on-disk inode of `raw.len()` bytes (the inode size).
    pub fn parse(raw: &[u8]) -> Inode {
        let extra_isize = if raw.len() > 128 { usize::from(u16_at(raw, 0x80)) } else { 0 };
        // Only fields inside 128 + i_extra_isize exist.
        let extra_end = (128 + extra_isize).min(raw.len());
        let extra = &raw[..extra_end];
        let field = |off: usize| (off + 4 <= extra.len()).then_some(off);
        let mut blocks = [0u8; I_BLOCK_LEN];
        blocks.copy_from_slice(&raw[I_BLOCK_OFFSET..I_BLOCK_OFFSET + I_BLOCK_LEN]);
        let size = u64::from(u32_at(raw, 0x4)) | u64::from(u32_at(raw, 0x6C)) << 32;
        Inode {
            mode: u16_at(raw, 0x0),
            uid: u32::from(u16_at(raw, 0x2)) | u32::from(u16_at(raw, 0x78)) << 16,
            gid: u32::from(u16_at(raw, 0x18)) | u32::from(u16_at(raw, 0x7A)) << 16,
            size,
            links: u16_at(raw, 0x1A),
            flags: u32_at(raw, 0x20),
            blocks,
            atime: timestamp(extra, 0x8, field(0x8C)),
            ctime: timestamp(extra, 0xC, field(0x84)),
            mtime: timestamp(extra, 0x10, field(0x88)),
            crtime: field(0x90).map(|c| timestamp(extra, c, field(0x94))),
        }
    }

    pub fn kind(&self) -> NodeKind {
        NodeKind::from_mode(u32::from(self.mode), self.rdev())
    }

    /// A device node's number: the kernel writes the 16-bit old encoding in
    /// the first i_block word when it fits, else zero there and the 32-bit
    /// new encoding in the second (fs/ext4/inode.c, ext4_inode_set_dev).
    fn rdev(&self) -> Rdev {
        let first = u32_at(&self.blocks, 0);
        if first != 0 { Rdev::from_old(first as u16) } else { Rdev::from_new(u32_at(&self.blocks, 4)) }
    }

    pub fn perm(&self) -> u16 {
        self.mode & 0o7777
    }

    /// The largest size this inode can have on a filesystem of `block_size`
    /// bytes per block: logical block numbers are 32 bits in an extent tree
    /// (section 4.2, "Extent Tree"), and the direct, indirect, double and
    /// triple indirect blocks of a block map reach 12 + n + n² + n³ blocks of
    /// n = block_size / 4 entries (section 4.1, "Direct/Indirect Block
    /// Addressing"). A larger size is corruption, never a file to stream.
    pub fn max_size(&self, block_size: u32) -> u64 {
        let bs = u64::from(block_size);
        let blocks = if self.flags & FLAG_EXTENTS != 0 {
            1u64 << 32
        } else {
            let n = bs / 4;
            (12 + n + n * n + n * n * n).min(1 << 32)
        };
        blocks * bs
    }

    /// A fast symlink keeps its target in i_block (no extents, < 60 bytes).
    pub fn is_fast_symlink(&self) -> bool {
        self.kind() == NodeKind::Symlink
            && self.flags & (FLAG_EXTENTS | FLAG_INLINE_DATA) == 0
            && self.size < I_BLOCK_LEN as u64
    }
}
