//! The on-disk inode (§"On-disk Inode"): core fields, timestamps (classic
//! and `bigtime`), extent counts (classic and `nrext64`) and the data fork.

use super::be::{be16, be32, be64};
use super::consts::*;
use super::crc;
use super::superblock::Superblock;
use crate::volume::fs::{FsError, NodeKind, Rdev, Timestamp};

#[derive(Debug, Clone)]
pub struct Inode {
    pub ino: u64,
    /// Byte offset of the inode on the volume (for error messages).
    pub at: u64,
    pub mode: u16,
    pub uid: u32,
    pub gid: u32,
    pub nlink: u32,
    pub atime: Timestamp,
    pub mtime: Timestamp,
    pub ctime: Timestamp,
    pub crtime: Option<Timestamp>,
    pub size: u64,
    pub flags: u16,
    /// The data fork: inline data, extent records or a btree root.
    pub data: Fork,
    /// The attribute fork, when the inode has one (`di_forkoff` > 0).
    pub attr: Option<Fork>,
}

/// One fork of an inode: how it is stored (`FMT_*`), how many extents it
/// maps, and its bytes in the inode's literal area.
#[derive(Debug, Clone)]
pub struct Fork {
    pub format: u8,
    pub nextents: u64,
    pub bytes: Vec<u8>,
}

/// A timestamp field: seconds and nanoseconds since 1970 as two signed
/// and unsigned 32-bit halves, or with `bigtime` one count of nanoseconds
/// since 1901-12-13.
fn time(b: &[u8], at: usize, big: bool) -> Timestamp {
    if big {
        let ns = be64(b, at);
        let secs = (ns / 1_000_000_000) as i64 - BIGTIME_EPOCH_OFFSET;
        Timestamp { secs, nanos: (ns % 1_000_000_000) as u32 }
    } else {
        let nanos = be32(b, at + 4);
        Timestamp { secs: i64::from(be32(b, at) as i32), nanos: nanos.min(999_999_999) }
    }
}

impl Inode {
    /// Parses inode `ino` from its `sb.inode_size` bytes read at `at`,
    /// checking its magic and, on v5, its CRC, number and UUID.
    pub fn parse(sb: &Superblock, ino: u64, b: &[u8], at: u64) -> Result<Inode, FsError> {
        let bad = |what: String| FsError::corrupt(at, format!("inode {ino}: {what}"));
        if be16(b, 0) != DINODE_MAGIC {
            return Err(bad("bad magic (not an inode)".into()));
        }
        let version = b[4];
        let v3 = version == 3;
        if v3 != sb.v5 || !(1..=3).contains(&version) {
            return Err(bad(format!("inode version {version}")));
        }
        if v3 {
            crc::verify(b, DINODE_CRC_OFF, at, &format!("inode {ino}"))?;
            if be64(b, 0x98) != ino {
                return Err(bad(format!("records itself as inode {}", be64(b, 0x98))));
            }
            if b[0xA0..0xB0] != sb.meta_uuid {
                return Err(bad("belongs to another filesystem (UUID)".into()));
            }
        }
        let flags2 = if v3 { be64(b, 0x78) } else { 0 };
        let big = flags2 & DIFLAG2_BIGTIME != 0;
        let nrext64 = flags2 & DIFLAG2_NREXT64 != 0;
        // nrext64 moves the data fork's count to a 64-bit field and widens
        // the attribute fork's to the 32 bits the old data count used.
        let (nextents, anextents) = if nrext64 {
            (be64(b, 0x18), u64::from(be32(b, 0x4C)))
        } else {
            (u64::from(be32(b, 0x4C)), u64::from(be16(b, 0x50)))
        };
        let core = if v3 { DINODE_CORE_V3 } else { DINODE_CORE_V2 };
        let forkoff = usize::from(b[0x52]) * 8;
        let literal = b.len() - core;
        let fork_len = if forkoff == 0 { literal } else { forkoff };
        if fork_len > literal {
            return Err(bad(format!("attribute fork offset {forkoff} past the inode")));
        }
        let size = be64(b, 0x38);
        if size > sb.max_file_size() {
            return Err(bad(format!(
                "claims {size} bytes, more than XFS's largest file ({} bytes)",
                sb.max_file_size()
            )));
        }
        let nlink = if version == 1 { u32::from(be16(b, 0x06)) } else { be32(b, 0x10) };
        Ok(Inode {
            ino,
            at,
            mode: be16(b, 0x02),
            uid: be32(b, 0x08),
            gid: be32(b, 0x0C),
            nlink,
            atime: time(b, 0x20, big),
            mtime: time(b, 0x28, big),
            ctime: time(b, 0x30, big),
            crtime: v3.then(|| time(b, 0x90, big)),
            size,
            flags: be16(b, 0x5A),
            data: Fork { format: b[0x05], nextents, bytes: b[core..core + fork_len].to_vec() },
            attr: (forkoff != 0).then(|| Fork {
                format: b[0x53],
                nextents: anextents,
                bytes: b[core + forkoff..].to_vec(),
            }),
        })
    }

    pub fn kind(&self) -> NodeKind {
        NodeKind::from_mode(u32::from(self.mode), self.rdev())
    }

    /// A device inode's number: the data fork holds a big-endian 32-bit
    /// SysV-style dev_t, 14 major bits above 18 minor bits (the kernel's
    /// xfs_to_linux_dev_t keeps 9 of the major bits).
    fn rdev(&self) -> Rdev {
        let dev = self.data.bytes.get(..4).map_or(0, |b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]));
        Rdev { major: (dev >> 18) & 0x1ff, minor: dev & 0x3_ffff }
    }

    pub fn perm(&self) -> u16 {
        self.mode & 0o7777
    }

    pub fn corrupt(&self, what: impl std::fmt::Display) -> FsError {
        FsError::corrupt(self.at, format!("inode {}: {what}", self.ino))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps() {
        let mut b = [0u8; 8];
        b[..4].copy_from_slice(&(-5i32).to_be_bytes());
        b[4..].copy_from_slice(&7u32.to_be_bytes());
        assert_eq!(time(&b, 0, false), Timestamp { secs: -5, nanos: 7 });
        // bigtime: 2^31 s after its epoch is the Unix epoch.
        let ns = (1u64 << 31) * 1_000_000_000 + 42;
        assert_eq!(time(&ns.to_be_bytes(), 0, true), Timestamp { secs: 0, nanos: 42 });
    }
}
