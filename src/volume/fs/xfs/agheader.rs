//! Allocation group headers (§"AG Free Space Management", §"AG Inode
//! Management"). Reading files needs none of them — block and inode numbers
//! carry their AG — so they are only checked at open, and a bad one becomes
//! a note on the listing rather than a refusal.

use super::be::be32;
use super::consts::*;
use super::crc;
use super::superblock::Superblock;
use crate::block::ReadAt;

/// AGs whose headers are checked at open (two sectors each).
const MAX_AGS_CHECKED: u32 = 256;

/// Notes about AG headers that fail their magic, number or CRC.
pub fn check(volume: &dyn ReadAt, sb: &Superblock) -> Vec<String> {
    let sect = usize::from(sb.sect_size);
    let mut bad = Vec::new();
    let mut buf = vec![0u8; sect];
    for agno in 0..sb.ag_count.min(MAX_AGS_CHECKED) {
        let base = (u64::from(agno) * u64::from(sb.ag_blocks)) << sb.block_log;
        for (k, magic, crc_off, name) in [(1u64, AGF_MAGIC, AGF_CRC_OFF, "AGF"), (2, AGI_MAGIC, AGI_CRC_OFF, "AGI")] {
            let at = base + k * sect as u64;
            let ok = volume.read_exact_at(at, &mut buf).is_ok()
                && be32(&buf, 0) == magic
                && be32(&buf, 8) == agno
                && (!sb.v5 || crc::verify(&buf, crc_off, at, name).is_ok());
            if !ok {
                bad.push(format!("{name} {agno}"));
            }
        }
    }
    if bad.is_empty() {
        Vec::new()
    } else {
        vec![format!("Corrupt XFS allocation group headers ({}); files are still read.", bad.join(", "))]
    }
}
