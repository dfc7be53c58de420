//! Inode items ("Inode item"): size, links, owner, mode, flags and times.

use crate::volume::fs::{Attr, FsError, NodeId, NodeKind, Rdev, Timestamp};

use super::consts::*;
use super::le::{u32_at, u64_at};

#[derive(Debug, Clone)]
pub struct Inode {
    pub size: u64,
    pub nlink: u32,
    pub uid: u32,
    pub gid: u32,
    pub mode: u32,
    /// The kernel's internal dev_t (major << 20 | minor), for devices.
    pub rdev: u64,
    pub flags: u64,
    pub atime: Timestamp,
    pub ctime: Timestamp,
    pub mtime: Timestamp,
    pub otime: Timestamp,
}

fn timestamp(b: &[u8], off: usize) -> Timestamp {
    // A nanosecond count past one second is clamped rather than refused:
    // it changes no byte of any file.
    Timestamp { secs: u64_at(b, off) as i64, nanos: u32_at(b, off + 8).min(999_999_999) }
}

impl Inode {
    pub fn parse(b: &[u8], at: u64) -> Result<Inode, FsError> {
        if b.len() < INODE_ITEM_SIZE {
            return Err(FsError::corrupt(at, format!("inode item of {} bytes", b.len())));
        }
        let size = u64_at(b, 16);
        if size > MAX_FILE_SIZE {
            return Err(FsError::corrupt(at, format!("inode claims {size} bytes, more than btrfs's largest file")));
        }
        Ok(Inode {
            size,
            nlink: u32_at(b, 40),
            uid: u32_at(b, 44),
            gid: u32_at(b, 48),
            mode: u32_at(b, 52),
            rdev: u64_at(b, 56),
            flags: u64_at(b, 64),
            atime: timestamp(b, 112),
            ctime: timestamp(b, 124),
            mtime: timestamp(b, 136),
            otime: timestamp(b, 148),
        })
    }

    pub fn kind(&self) -> NodeKind {
        let rdev = Rdev { major: ((self.rdev >> 20) & 0xfff) as u32, minor: (self.rdev & 0xf_ffff) as u32 };
        NodeKind::from_mode(self.mode, rdev)
    }

    pub fn attr(&self, node: NodeId) -> Attr {
        Attr {
            node,
            kind: self.kind(),
            size: self.size,
            perm: (self.mode & 0o7777) as u16,
            uid: self.uid,
            gid: self.gid,
            nlink: self.nlink,
            mtime: self.mtime,
            atime: self.atime,
            ctime: self.ctime,
            crtime: Some(self.otime),
        }
    }
}
