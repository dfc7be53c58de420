//! Whether the internal log is clean (§"Journaling Log"). The log is a
//! ring of 512-byte blocks written in passes; every block carries the pass
//! ("cycle") number it was written in, so the head is where the cycle
//! number drops. The record just before the head is an unmount record
//! exactly when the filesystem was cleanly unmounted. Replaying a dirty
//! log is not done: the listing says it is dirty instead.

use super::be::be32;
use super::consts::*;
use super::superblock::Superblock;
use crate::block::ReadAt;
use crate::volume::fs::FsError;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogState {
    Clean,
    Dirty,
    External,
}

/// How far back from the head a record header may be: the largest v2
/// record (256 KiB) and its header blocks.
const MAX_RECORD_BLOCKS: u64 = (256 << 10) / BBSIZE + 8;

struct Log<'a> {
    volume: &'a dyn ReadAt,
    start: u64,
    blocks: u64,
}

impl Log<'_> {
    fn read(&self, bb: u64, buf: &mut [u8]) -> Result<(), FsError> {
        Ok(self.volume.read_exact_at(self.start + bb * BBSIZE, buf)?)
    }

    /// The cycle number of block `bb` (a header keeps it at byte 4).
    fn cycle(&self, bb: u64) -> Result<u32, FsError> {
        let mut b = [0u8; 8];
        self.read(bb, &mut b)?;
        let first = be32(&b, 0);
        Ok(if first == LOG_HEADER_MAGIC { be32(&b, 4) } else { first })
    }

    /// The first block written in an older pass than block 0, or the
    /// log's end when every block is in block 0's pass.
    fn head(&self) -> Result<u64, FsError> {
        let first = self.cycle(0)?;
        if self.cycle(self.blocks - 1)? == first {
            return Ok(self.blocks);
        }
        let (mut lo, mut hi) = (0u64, self.blocks - 1);
        while hi - lo > 1 {
            let mid = lo + (hi - lo) / 2;
            if self.cycle(mid)? == first {
                lo = mid;
            } else {
                hi = mid;
            }
        }
        Ok(hi)
    }
}

/// The state of the log of `sb`.
pub fn state(volume: &dyn ReadAt, sb: &Superblock) -> Result<LogState, FsError> {
    if sb.log_start == 0 {
        return Ok(LogState::External);
    }
    let start = sb.fsb_to_byte(sb.log_start).ok_or_else(|| FsError::corrupt(0x30, "log start out of range"))?;
    let blocks = (u64::from(sb.log_blocks) << sb.block_log) / BBSIZE;
    if blocks < 2 || start.checked_add(blocks * BBSIZE).is_none_or(|e| e > volume.size()) {
        return Err(FsError::corrupt(0x30, format!("log of {} blocks", sb.log_blocks)));
    }
    let log = Log { volume, start, blocks };
    let head = log.head()?;
    let mut hdr = [0u8; 512];
    for back in 1..=MAX_RECORD_BLOCKS.min(blocks) {
        let bb = (head + blocks - back) % blocks;
        log.read(bb, &mut hdr)?;
        if be32(&hdr, 0) != LOG_HEADER_MAGIC {
            continue;
        }
        return unmount_record(&log, bb, &hdr);
    }
    // No record at all: a log never written to since mkfs zeroed it.
    if log.cycle(0)? == 0 { Ok(LogState::Clean) } else { Ok(LogState::Dirty) }
}

/// Whether the record whose header is at block `bb` is a lone unmount
/// record (one operation, flagged XLOG_UNMOUNT_TRANS).
fn unmount_record(log: &Log<'_>, bb: u64, hdr: &[u8]) -> Result<LogState, FsError> {
    let (version, num_ops, size) = (be32(hdr, 8), be32(hdr, 40), u64::from(be32(hdr, 320)));
    let header_blocks =
        if version & 2 != 0 && size > LOG_HEADER_CYCLE_SIZE { size.div_ceil(LOG_HEADER_CYCLE_SIZE) } else { 1 };
    if num_ops != 1 {
        return Ok(LogState::Dirty);
    }
    let mut data = [0u8; 512];
    log.read((bb + header_blocks) % log.blocks, &mut data)?;
    // The operation header: tid (4), len (4), clientid (1), flags (1).
    Ok(if data[9] & LOG_UNMOUNT_TRANS != 0 { LogState::Clean } else { LogState::Dirty })
}
