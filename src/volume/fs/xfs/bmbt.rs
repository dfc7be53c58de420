//! Data fork mappings (§"Data Extents", §"B+tree Extent List"): extent
//! records held in the inode, or the leaves of a B+tree whose root sits in
//! the inode. Either way the result is the file's sorted run list. Shared
//! (reflinked) extents are plain extents of both files; the refcount btree
//! only matters to writers.

use super::be::{be16, be32, be64};
use super::consts::*;
use super::crc;
use super::inode::{Fork, Inode};
use super::superblock::Superblock;
use crate::block::ReadAt;
use crate::volume::fs::FsError;

/// Most extents one file may have here (24 bytes each in memory).
pub const MAX_EXTENTS: u64 = 1 << 20;
/// Deepest bmap btree (XFS's own limit for 64-bit extent counts is 9-10).
const MAX_LEVELS: u16 = 12;

/// One extent: `len` blocks of the file from block `logical` stored from
/// filesystem block `fsb` (AG-relative encoding). `unwritten`: reads as zeros.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Run {
    pub logical: u64,
    pub fsb: u64,
    pub len: u64,
    pub unwritten: bool,
}

impl Run {
    pub fn end(&self) -> u64 {
        self.logical + self.len
    }
}

/// Decodes one packed 128-bit record: flag (1 bit), startoff (54),
/// startblock (52), blockcount (21).
pub fn decode(rec: &[u8]) -> Run {
    let (hi, lo) = (be64(rec, 0), be64(rec, 8));
    Run {
        unwritten: hi >> 63 != 0,
        logical: (hi >> 9) & MAX_FILEOFF,
        fsb: ((hi & 0x1FF) << 43) | (lo >> 21),
        len: lo & 0x1F_FFFF,
    }
}

/// Where to read blocks from, and the geometry to check them with.
pub struct Ctx<'a> {
    pub volume: &'a dyn ReadAt,
    pub sb: &'a Superblock,
}

impl Ctx<'_> {
    /// Reads filesystem block `fsb` whole.
    pub fn block(&self, fsb: u64, at: u64) -> Result<(Vec<u8>, u64), FsError> {
        let off = self.sb.fsb_to_byte(fsb).ok_or_else(|| FsError::corrupt(at, format!("block {fsb} out of range")))?;
        let mut b = vec![0u8; self.sb.block_size as usize];
        self.volume.read_exact_at(off, &mut b)?;
        Ok((b, off))
    }
}

/// The run list of fork `f` of inode `i` in extents or btree format,
/// sorted and checked for overlaps. The data and the attribute fork map
/// their blocks the same way, and a btree block names the inode as its
/// owner either way.
pub fn load(ctx: &Ctx<'_>, i: &Inode, f: &Fork) -> Result<Vec<Run>, FsError> {
    if f.nextents > MAX_EXTENTS {
        return Err(FsError::Unsupported(format!("inode {} has {} extents (limit {MAX_EXTENTS})", i.ino, f.nextents)));
    }
    let mut runs = Vec::new();
    match f.format {
        FMT_EXTENTS => {
            let n = f.nextents as usize;
            if n * BMBT_REC_SIZE > f.bytes.len() {
                return Err(i.corrupt(format!("{n} extents do not fit its fork")));
            }
            runs.extend(f.bytes.chunks_exact(BMBT_REC_SIZE).take(n).map(decode));
        }
        FMT_BTREE => load_btree(ctx, i, f, &mut runs)?,
        FMT_LOCAL => return Err(i.corrupt("inline data where extents were expected")),
        fmt => return Err(i.corrupt(format!("fork format {fmt}"))),
    }
    check(i, ctx.sb, &runs)?;
    Ok(runs)
}

fn check(i: &Inode, sb: &Superblock, runs: &[Run]) -> Result<(), FsError> {
    let mut end = 0u64;
    for r in runs {
        let last = r.fsb.checked_add(r.len.saturating_sub(1));
        let fits = r.len > 0
            && r.logical >= end
            && r.logical.checked_add(r.len).is_some_and(|e| e <= MAX_FILEOFF + 1)
            && sb.fsb_to_byte(r.fsb).is_some()
            && last.and_then(|l| sb.fsb_to_byte(l)).is_some()
            && last.is_some_and(|l| l >> sb.ag_blk_log == r.fsb >> sb.ag_blk_log);
        if !fits {
            return Err(
                i.corrupt(format!("bad extent: {} blocks at file block {} from block {}", r.len, r.logical, r.fsb))
            );
        }
        end = r.end();
    }
    Ok(())
}

/// The in-inode root (§"B+tree Extent List": `xfs_bmdr_block`): level,
/// record count, then keys and pointers, the pointers after as many keys as
/// the fork could hold.
fn load_btree(ctx: &Ctx<'_>, i: &Inode, fork: &Fork, runs: &mut Vec<Run>) -> Result<(), FsError> {
    let f = &fork.bytes;
    if f.len() < 4 + 16 {
        return Err(i.corrupt("btree root too small"));
    }
    let level = be16(f, 0);
    let numrecs = usize::from(be16(f, 2));
    let maxrecs = (f.len() - 4) / 16;
    if level == 0 || level > MAX_LEVELS || numrecs == 0 || numrecs > maxrecs {
        return Err(i.corrupt(format!("btree root: level {level}, {numrecs} records")));
    }
    let ptrs = 4 + maxrecs * 8;
    // Leaves hold at least one record each and nodes at least two
    // pointers, so a sound tree has fewer blocks than twice its records.
    let mut budget = fork.nextents.saturating_mul(2).saturating_add(64);
    for k in 0..numrecs {
        let p = be64(f, ptrs + k * 8);
        walk(ctx, i, p, level - 1, runs, &mut budget)?;
    }
    Ok(())
}

/// Visits the subtree at block `fsb`, expected at `level`, appending leaf
/// records. `budget` bounds the blocks visited (a loop in corrupt pointers).
fn walk(ctx: &Ctx<'_>, i: &Inode, fsb: u64, level: u16, runs: &mut Vec<Run>, budget: &mut u64) -> Result<(), FsError> {
    if *budget == 0 {
        return Err(i.corrupt("btree has more blocks than extents (a loop?)"));
    }
    *budget -= 1;
    let (b, at) = ctx.block(fsb, i.at)?;
    let sb = ctx.sb;
    let (magic, hdr) = if sb.v5 { (BMAP_CRC_MAGIC, BTREE_LBLOCK_CRC_LEN) } else { (BMAP_MAGIC, BTREE_LBLOCK_LEN) };
    let what = format!("btree block {fsb} of inode {}", i.ino);
    if be32(&b, 0) != magic {
        return Err(FsError::corrupt(at, format!("{what}: bad magic")));
    }
    if sb.v5 {
        crc::verify(&b, BTREE_LBLOCK_CRC_OFF, at, &what)?;
        let owner = be64(&b, 56);
        if owner != i.ino || b[40..56] != sb.meta_uuid {
            return Err(FsError::corrupt(at, format!("{what}: belongs to inode {owner}")));
        }
    }
    let blevel = be16(&b, 4);
    let numrecs = usize::from(be16(&b, 6));
    if blevel != level {
        return Err(FsError::corrupt(at, format!("{what}: level {blevel}, expected {level}")));
    }
    let space = b.len() - hdr;
    if level == 0 {
        if numrecs * BMBT_REC_SIZE > space || runs.len() + numrecs > MAX_EXTENTS as usize {
            return Err(FsError::corrupt(at, format!("{what}: {numrecs} records")));
        }
        runs.extend(b[hdr..].chunks_exact(BMBT_REC_SIZE).take(numrecs).map(decode));
        return Ok(());
    }
    let maxrecs = space / 16;
    if numrecs == 0 || numrecs > maxrecs {
        return Err(FsError::corrupt(at, format!("{what}: {numrecs} keys")));
    }
    let ptrs = hdr + maxrecs * 8;
    for k in 0..numrecs {
        let p = be64(&b, ptrs + k * 8);
        walk(ctx, i, p, level - 1, runs, budget)?;
    }
    Ok(())
}

/// The run holding file block `blk`, or else the next run after it.
pub fn find(runs: &[Run], blk: u64) -> Option<&Run> {
    let k = runs.partition_point(|r| r.end() <= blk);
    runs.get(k)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_packed_records() {
        // flag=1, startoff=0x123456, startblock=0xABCDE12345, blockcount=0x1FFFF
        let (off, blk, cnt) = (0x12_3456u64, 0xAB_CDE1_2345u64, 0x1_FFFFu64);
        let hi = (1u64 << 63) | (off << 9) | (blk >> 43);
        let lo = (blk << 21) | cnt;
        let mut rec = [0u8; 16];
        rec[..8].copy_from_slice(&hi.to_be_bytes());
        rec[8..].copy_from_slice(&lo.to_be_bytes());
        assert_eq!(decode(&rec), Run { logical: off, fsb: blk, len: cnt, unwritten: true });
        let runs = [Run { logical: 2, fsb: 9, len: 3, unwritten: false }];
        assert_eq!(find(&runs, 0).map(|r| r.logical), Some(2));
        assert_eq!(find(&runs, 4).map(|r| r.logical), Some(2));
        assert!(find(&runs, 5).is_none());
    }
}
