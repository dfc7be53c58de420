//! Where a file's bytes live: the extent tree (ext4 documentation section
//! 4.2 "The Contents of inode.i_block", extents) or the classic direct /
//! indirect block map of ext2/3. Either way it becomes one sorted list of
//! runs, loaded once per file and cached, so that reading a large file is a
//! binary search plus one large positional read per run.

use crate::block::ReadAt;
use crate::volume::fs::FsError;

use super::inode::{FLAG_EXTENTS, I_BLOCK_LEN, Inode};

/// Extent tree node header magic (section 4.2.1).
const EXTENT_MAGIC: u16 = 0xF30A;
const EXTENT_HEADER_LEN: usize = 12;
const EXTENT_ENTRY_LEN: usize = 12;
/// The kernel never builds trees deeper than 5 levels.
const MAX_EXTENT_DEPTH: u16 = 5;
/// ee_len above this marks an unwritten (preallocated, reads as zeros) extent.
const EXTENT_INIT_MAX_LEN: u16 = 32768;
/// i_block slots: 12 direct, then single, double and triple indirect.
const DIRECT_BLOCKS: usize = 12;
/// Upper bound on the runs of one file (24 bytes each: 24 MiB).
pub const MAX_RUNS: usize = 1 << 20;
/// Upper bound on extent tree blocks read for one file: 64 Ki blocks of up
/// to 340 extents each is far more than `MAX_RUNS`; it stops a corrupt tree
/// whose index entries all point at the same block from fanning out forever.
const MAX_TREE_BLOCKS: u32 = 1 << 16;
/// Upper bound on indirect blocks read for one ext2/3 file (4 TiB of data at
/// 4 KiB blocks), for the same reason.
const MAX_INDIRECT_BLOCKS: u64 = 1 << 20;

/// `len` blocks from `logical` (file block) stored at `physical`; `None`:
/// unwritten, reads as zeros. Holes are the gaps between runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Run {
    pub logical: u64,
    pub len: u64,
    pub physical: Option<u64>,
}

#[derive(Debug, Default)]
pub struct BlockMap {
    pub runs: Vec<Run>,
}

pub struct Ctx<'a> {
    pub volume: &'a dyn ReadAt,
    pub block_size: u32,
    pub blocks_count: u64,
}

impl Ctx<'_> {
    fn read_block(&self, block: u64) -> Result<Vec<u8>, FsError> {
        let bs = u64::from(self.block_size);
        if block == 0 || block >= self.blocks_count {
            return Err(FsError::corrupt(block.saturating_mul(bs), format!("block {block} out of range")));
        }
        let mut b = vec![0u8; self.block_size as usize];
        self.volume.read_exact_at(block * bs, &mut b)?;
        Ok(b)
    }

    fn check_physical(&self, start: u64, len: u64) -> Result<(), FsError> {
        match start.checked_add(len) {
            Some(end) if start != 0 && end <= self.blocks_count => Ok(()),
            _ => Err(FsError::corrupt(
                start.saturating_mul(u64::from(self.block_size)),
                format!("extent of {len} blocks at block {start} is outside the volume"),
            )),
        }
    }
}

impl BlockMap {
    pub fn load(ctx: &Ctx<'_>, inode: &Inode) -> Result<BlockMap, FsError> {
        let mut map = BlockMap::default();
        if inode.flags & FLAG_EXTENTS != 0 {
            let mut budget = MAX_TREE_BLOCKS;
            map.extent_node(ctx, &inode.blocks, None, None, &mut budget)?;
        } else {
            map.indirect(ctx, inode)?;
        }
        Ok(map)
    }

    fn push(&mut self, run: Run, at: u64) -> Result<(), FsError> {
        if let Some(last) = self.runs.last_mut() {
            let last_end = last.logical + last.len;
            if run.logical < last_end {
                return Err(FsError::corrupt(at, "overlapping or unsorted extents"));
            }
            // Merge physically contiguous neighbours (block maps give one
            // block at a time).
            if let (Some(lp), Some(rp)) = (last.physical, run.physical)
                && run.logical == last_end
                && lp + last.len == rp
            {
                last.len += run.len;
                return Ok(());
            }
        }
        if self.runs.len() >= MAX_RUNS {
            return Err(FsError::Unsupported(format!("file with more than {MAX_RUNS} extents")));
        }
        self.runs.push(run);
        Ok(())
    }

    /// One extent tree node: the 60-byte root in the inode or a tree block.
    fn extent_node(
        &mut self,
        ctx: &Ctx<'_>,
        node: &[u8],
        at: Option<u64>,
        expect_depth: Option<u16>,
        budget: &mut u32,
    ) -> Result<(), FsError> {
        let off = at.unwrap_or(0);
        let u16_at = |o: usize| u16::from_le_bytes([node[o], node[o + 1]]);
        let u32_at = |o: usize| u32::from_le_bytes([node[o], node[o + 1], node[o + 2], node[o + 3]]);
        if node.len() < EXTENT_HEADER_LEN || u16_at(0) != EXTENT_MAGIC {
            return Err(FsError::corrupt(off, "bad extent header magic"));
        }
        let entries = usize::from(u16_at(2));
        let depth = u16_at(6);
        if EXTENT_HEADER_LEN + entries * EXTENT_ENTRY_LEN > node.len() {
            return Err(FsError::corrupt(off, format!("{entries} extents do not fit their node")));
        }
        if depth > MAX_EXTENT_DEPTH || expect_depth.is_some_and(|d| d != depth) {
            return Err(FsError::corrupt(off, format!("extent tree depth {depth}")));
        }
        for i in 0..entries {
            let e = EXTENT_HEADER_LEN + i * EXTENT_ENTRY_LEN;
            if depth == 0 {
                let logical = u64::from(u32_at(e));
                let raw_len = u16_at(e + 4);
                let start = u64::from(u16_at(e + 6)) << 32 | u64::from(u32_at(e + 8));
                let (len, unwritten) = if raw_len > EXTENT_INIT_MAX_LEN {
                    (raw_len - EXTENT_INIT_MAX_LEN, true)
                } else {
                    (raw_len, false)
                };
                if len == 0 {
                    continue;
                }
                let len = u64::from(len);
                ctx.check_physical(start, len)?;
                let physical = (!unwritten).then_some(start);
                self.push(Run { logical, len, physical }, off)?;
            } else {
                let leaf = u64::from(u16_at(e + 8)) << 32 | u64::from(u32_at(e + 4));
                if *budget == 0 {
                    return Err(FsError::corrupt(off, "extent tree too large"));
                }
                *budget -= 1;
                let child = ctx.read_block(leaf)?;
                // A child's depth is exactly one less: the recursion ends.
                self.extent_node(ctx, &child, Some(leaf * u64::from(ctx.block_size)), Some(depth - 1), budget)?;
            }
        }
        Ok(())
    }

    /// The ext2/3 block map: 12 direct pointers, then single, double and
    /// triple indirect blocks (section 4.2.2). Pointer 0 is a hole.
    fn indirect(&mut self, ctx: &Ctx<'_>, inode: &Inode) -> Result<(), FsError> {
        let bs = u64::from(ctx.block_size);
        let file_blocks = inode.size.div_ceil(bs);
        let ptr =
            |b: &[u8], i: usize| u64::from(u32::from_le_bytes([b[i * 4], b[i * 4 + 1], b[i * 4 + 2], b[i * 4 + 3]]));
        let top: Vec<u64> = (0..I_BLOCK_LEN / 4).map(|i| ptr(&inode.blocks, i)).collect();
        for (i, &p) in top.iter().enumerate().take(DIRECT_BLOCKS) {
            if (i as u64) < file_blocks && p != 0 {
                ctx.check_physical(p, 1)?;
                self.push(Run { logical: i as u64, len: 1, physical: Some(p) }, 0)?;
            }
        }
        let per_block = bs / 4;
        // Budget of indirect blocks read, so a corrupt map that points its
        // indirect blocks at each other cannot make us read forever.
        let mut budget = ctx.blocks_count.min(MAX_INDIRECT_BLOCKS);
        let mut logical = DIRECT_BLOCKS as u64;
        for (level, &p) in top[DIRECT_BLOCKS..].iter().enumerate() {
            let span = per_block.pow(level as u32 + 1);
            if logical >= file_blocks {
                break;
            }
            if p != 0 {
                self.indirect_block(ctx, p, level as u32, logical, file_blocks, &mut budget)?;
            }
            logical += span;
        }
        Ok(())
    }

    fn indirect_block(
        &mut self,
        ctx: &Ctx<'_>,
        block: u64,
        level: u32,
        first: u64,
        file_blocks: u64,
        budget: &mut u64,
    ) -> Result<(), FsError> {
        if *budget == 0 {
            return Err(FsError::corrupt(block * u64::from(ctx.block_size), "indirect block map too large"));
        }
        *budget -= 1;
        let b = ctx.read_block(block)?;
        let per_block = u64::from(ctx.block_size) / 4;
        let span = per_block.pow(level);
        for i in 0..per_block as usize {
            let logical = first + i as u64 * span;
            if logical >= file_blocks {
                break;
            }
            let p = u64::from(u32::from_le_bytes([b[i * 4], b[i * 4 + 1], b[i * 4 + 2], b[i * 4 + 3]]));
            if p == 0 {
                continue;
            }
            if level == 0 {
                ctx.check_physical(p, 1)?;
                self.push(Run { logical, len: 1, physical: Some(p) }, block * u64::from(ctx.block_size))?;
            } else {
                self.indirect_block(ctx, p, level - 1, logical, file_blocks, budget)?;
            }
        }
        Ok(())
    }

    /// The run holding file block `logical`, or the next run after it.
    pub fn find(&self, logical: u64) -> Option<&Run> {
        let i = self.runs.partition_point(|r| r.logical + r.len <= logical);
        self.runs.get(i)
    }
}
