//! Extended attributes (§"Extended Attributes"): the attribute fork in
//! every form XFS gives it. Few small attributes sit in the inode (short
//! form); more go to one leaf block of the fork, then to a da-btree of
//! node and leaf blocks (the fork itself mapped by extents or by a bmap
//! B+tree, as data forks are). A value too large for its leaf lives in
//! blocks of its own ("remote"), which on v5 carry a checked header each.
//!
//! Names come out as Linux shows them: `user.`, `trusted.` (`ATTR_ROOT`)
//! and `security.` (`ATTR_SECURE`). ACLs, which XFS keeps as
//! `trusted.SGI_ACL_FILE` / `SGI_ACL_DEFAULT` in its own big-endian form,
//! come out as `system.posix_acl_access` / `_default` in the kernel's form
//! only: the kernel also lists the raw `trusted.SGI_*` twins to root, but
//! restoring those onto another filesystem would leave junk attributes, and
//! onto XFS they would duplicate the ACL. Parent pointers and attributes
//! caught half-written are not extended attributes and are skipped.

use std::collections::HashSet;

use super::XfsFs;
use super::be::{be16, be32, be64};
use super::bmbt::{self, Run};
use super::consts::*;
use super::crc;
use super::inode::Inode;
use crate::volume::fs::{FsError, MAX_XATTR_LIST, MAX_XATTR_NAME, MAX_XATTR_VALUE, Xattr, acl};

/// Where an attribute's value is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Value {
    Local(Vec<u8>),
    /// `len` bytes from block `blk` of the attribute fork.
    Remote {
        blk: u32,
        len: u32,
    },
}

/// One attribute as stored: its namespace flags, bare name and value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Raw {
    pub flags: u8,
    pub name: Vec<u8>,
    pub value: Value,
}

/// What the checks of a v5 block need: the filesystem's UUID and the inode.
pub struct Owner<'a> {
    pub v5: bool,
    pub ino: u64,
    pub uuid: &'a [u8; 16],
}

/// A da-btree block of the attribute fork.
#[derive(Debug, PartialEq, Eq)]
pub enum DaBlock {
    Leaf(Vec<Raw>),
    /// The fork blocks of the children, in hash order.
    Node(Vec<u32>),
}

/// The short-form attributes in the inode (`xfs_attr_sf_hdr`: total size,
/// count; entries: name length, value length, flags, name, value).
pub fn shortform(b: &[u8], at: u64) -> Result<Vec<Raw>, FsError> {
    let total = usize::from(be16(b, 0));
    if b.len() < 4 || total < 4 || total > b.len() {
        return Err(FsError::corrupt(at, format!("short-form attributes of {total} bytes in a {}-byte fork", b.len())));
    }
    let count = usize::from(b[2]);
    let mut out = Vec::with_capacity(count);
    let mut pos = 4;
    for k in 0..count {
        let (nlen, vlen) = match b.get(pos..pos + 3) {
            Some(h) => (usize::from(h[0]), usize::from(h[1])),
            None => return Err(FsError::corrupt(at, format!("short-form attribute {k} past the fork"))),
        };
        let end = pos + 3 + nlen + vlen;
        if end > total {
            return Err(FsError::corrupt(at, format!("short-form attribute {k} past the fork")));
        }
        let name = b[pos + 3..pos + 3 + nlen].to_vec();
        out.push(Raw { flags: b[pos + 2], name, value: Value::Local(b[pos + 3 + nlen..end].to_vec()) });
        pos = end;
    }
    Ok(out)
}

/// Checks a v5 block's CRC, owner and UUID (`xfs_da3_blkinfo` layout).
fn check_v5(b: &[u8], o: &Owner<'_>, at: u64, what: &str) -> Result<(), FsError> {
    crc::verify(b, DA3_CRC_OFF, at, what)?;
    let owner = be64(b, DA3_OWNER_OFF);
    if owner != o.ino || b[DA3_UUID_OFF..DA3_UUID_OFF + 16] != o.uuid[..] {
        return Err(FsError::corrupt(at, format!("{what}: belongs to inode {owner}")));
    }
    Ok(())
}

/// Parses one leaf or node block of the attribute fork read from byte `at`.
pub fn da_block(b: &[u8], o: &Owner<'_>, at: u64) -> Result<DaBlock, FsError> {
    let magic = be16(b, 8);
    let (leaf, node) = if o.v5 { (ATTR3_LEAF_MAGIC, DA3_NODE_MAGIC) } else { (ATTR_LEAF_MAGIC, DA_NODE_MAGIC) };
    let what = format!("attribute block of inode {}", o.ino);
    if magic != leaf && magic != node {
        return Err(FsError::corrupt(at, format!("{what}: bad magic {magic:#06x}")));
    }
    if o.v5 {
        check_v5(b, o, at, &what)?;
    }
    if magic == node {
        let hdr = if o.v5 { DA3_NODE_HDR } else { DA_NODE_HDR };
        let count = usize::from(be16(b, hdr - if o.v5 { 8 } else { 4 }));
        if count == 0 || hdr + count * DA_NODE_ENTRY > b.len() {
            return Err(FsError::corrupt(at, format!("{what}: node of {count} entries")));
        }
        let kids = (0..count).map(|k| be32(b, hdr + k * DA_NODE_ENTRY + 4)).collect();
        return Ok(DaBlock::Node(kids));
    }
    let hdr = if o.v5 { ATTR3_LEAF_HDR } else { ATTR_LEAF_HDR };
    let count = usize::from(be16(b, if o.v5 { 56 } else { 12 }));
    if hdr + count * ATTR_LEAF_ENTRY > b.len() {
        return Err(FsError::corrupt(at, format!("{what}: leaf of {count} entries")));
    }
    let mut out = Vec::with_capacity(count);
    for k in 0..count {
        let e = hdr + k * ATTR_LEAF_ENTRY;
        let (idx, flags) = (usize::from(be16(b, e + 4)), b[e + 6]);
        out.push(
            leaf_entry(b, idx, flags)
                .ok_or_else(|| FsError::corrupt(at + idx as u64, format!("{what}: entry {k} past the block")))?,
        );
    }
    Ok(DaBlock::Leaf(out))
}

/// The name and value of a leaf entry whose name structure is at `idx`:
/// local (value length, name length, name, value) or remote (value block,
/// value length, name length, name). `None`: it runs past the block.
fn leaf_entry(b: &[u8], idx: usize, flags: u8) -> Option<Raw> {
    if flags & ATTR_LOCAL != 0 {
        let vlen = usize::from(be16(b, idx));
        let nlen = usize::from(*b.get(idx + 2)?);
        let name = b.get(idx + 3..idx + 3 + nlen)?.to_vec();
        let value = b.get(idx + 3 + nlen..idx + 3 + nlen + vlen)?.to_vec();
        Some(Raw { flags, name, value: Value::Local(value) })
    } else {
        let (blk, len) = (be32(b, idx), be32(b, idx + 4));
        let nlen = usize::from(*b.get(idx + 8)?);
        let name = b.get(idx + 9..idx + 9 + nlen)?.to_vec();
        Some(Raw { flags, name, value: Value::Remote { blk, len } })
    }
}

/// The value bytes one remote block holds: on v5 after its checked header,
/// which must say it holds bytes `done..` of the value; on v4 the block.
pub fn remote_bytes<'b>(b: &'b [u8], o: &Owner<'_>, at: u64, done: usize, left: usize) -> Result<&'b [u8], FsError> {
    if !o.v5 {
        return Ok(&b[..left.min(b.len())]);
    }
    let what = format!("remote attribute value of inode {}", o.ino);
    if be32(b, 0) != ATTR3_RMT_MAGIC {
        return Err(FsError::corrupt(at, format!("{what}: bad magic")));
    }
    crc::verify(b, ATTR3_RMT_CRC_OFF, at, &what)?;
    let owner = be64(b, ATTR3_RMT_OWNER_OFF);
    if owner != o.ino || b[ATTR3_RMT_UUID_OFF..ATTR3_RMT_UUID_OFF + 16] != o.uuid[..] {
        return Err(FsError::corrupt(at, format!("{what}: belongs to inode {owner}")));
    }
    let (offset, bytes) = (be32(b, 4) as usize, be32(b, 8) as usize);
    if offset != done || bytes == 0 || bytes > left || ATTR3_RMT_HDR + bytes > b.len() {
        return Err(FsError::corrupt(at, format!("{what}: holds {bytes} bytes at {offset}, expected at {done}")));
    }
    Ok(&b[ATTR3_RMT_HDR..ATTR3_RMT_HDR + bytes])
}

/// The Linux name of an attribute, and whether its value is an XFS ACL;
/// `None` for entries that are not extended attributes.
pub fn linux_name(flags: u8, name: &[u8]) -> Option<(Vec<u8>, bool)> {
    if flags & (ATTR_PARENT | ATTR_INCOMPLETE) != 0 {
        return None;
    }
    let (prefix, acl): (&[u8], bool) = match flags & (ATTR_ROOT | ATTR_SECURE) {
        ATTR_ROOT if name == SGI_ACL_FILE => (b"system.posix_acl_access", true),
        ATTR_ROOT if name == SGI_ACL_DEFAULT => (b"system.posix_acl_default", true),
        ATTR_ROOT => (b"trusted.", false),
        ATTR_SECURE => (b"security.", false),
        0 => (b"user.", false),
        _ => return None,
    };
    let mut full = prefix.to_vec();
    if !acl {
        full.extend_from_slice(name);
    }
    Some((full, acl))
}

/// An XFS ACL (`xfs_acl`, big-endian: count, then tag, id, permissions and
/// padding per entry) in the kernel's xattr form.
pub fn acl_to_xattr(v: &[u8], at: u64) -> Result<Vec<u8>, FsError> {
    let count = be32(v, 0) as usize;
    if v.len() < 4 || v.len() != 4 + count.saturating_mul(XFS_ACL_ENTRY) {
        return Err(FsError::corrupt(at, format!("XFS ACL of {} bytes claims {count} entries", v.len())));
    }
    let entry = |k: usize| {
        let e = 4 + k * XFS_ACL_ENTRY;
        (be32(v, e) as u16, be16(v, e + 8), be32(v, e + 4))
    };
    Ok(acl::to_xattr((0..count).map(entry)))
}

impl XfsFs {
    fn owner<'a>(&'a self, i: &Inode) -> Owner<'a> {
        Owner { v5: self.sb.v5, ino: i.ino, uuid: &self.sb.meta_uuid }
    }

    /// Every extended attribute of inode `i`, values included.
    pub(super) fn read_xattrs(&self, i: &Inode) -> Result<Vec<Xattr>, FsError> {
        let Some(fork) = &i.attr else { return Ok(Vec::new()) };
        let (raws, runs) = match fork.format {
            FMT_LOCAL => (shortform(&fork.bytes, i.at)?, Vec::new()),
            FMT_EXTENTS | FMT_BTREE => {
                let runs = bmbt::load(&self.ctx(), i, fork)?;
                (self.attr_tree(i, &runs)?, runs)
            }
            f => return Err(i.corrupt(format!("attribute fork format {f}"))),
        };
        let mut out = Vec::with_capacity(raws.len());
        let mut listed = 0usize;
        for raw in raws {
            let Some((name, is_acl)) = linux_name(raw.flags, &raw.name) else { continue };
            listed = listed.saturating_add(name.len() + 1);
            if name.len() > MAX_XATTR_NAME || name.contains(&0) || listed > MAX_XATTR_LIST {
                return Err(i.corrupt(format!("attribute name of {} bytes, or names past 64 KiB", name.len())));
            }
            let value = match raw.value {
                Value::Local(v) => v,
                Value::Remote { blk, len } => self.remote_value(i, &runs, blk, len)?,
            };
            if value.len() > MAX_XATTR_VALUE {
                return Err(i.corrupt(format!("attribute value of {} bytes", value.len())));
            }
            let value = if is_acl { acl_to_xattr(&value, i.at)? } else { value };
            out.push(Xattr { name, value });
        }
        Ok(out)
    }

    /// Reads block `blk` of the attribute fork; returns its volume offset.
    fn attr_block(&self, i: &Inode, runs: &[Run], blk: u64, buf: &mut [u8]) -> Result<u64, FsError> {
        let pos = blk.checked_mul(self.bs()).ok_or_else(|| i.corrupt(format!("attribute block {blk}")))?;
        self.read_mapped(i, runs, pos, buf, false)?;
        Ok(self.piece(runs, pos, 1).1.unwrap_or(i.at))
    }

    /// The attributes of the leaf blocks reachable from fork block 0 (a
    /// lone leaf, or the root of a da-btree), in hash order. Each block is
    /// read once, so a loop in corrupt pointers ends.
    fn attr_tree(&self, i: &Inode, runs: &[Run]) -> Result<Vec<Raw>, FsError> {
        if runs.is_empty() {
            return Ok(Vec::new());
        }
        let o = self.owner(i);
        let mut out = Vec::new();
        let mut seen = HashSet::new();
        let mut stack = vec![(0u32, 0usize)];
        let mut b = vec![0u8; self.bs() as usize];
        while let Some((blk, depth)) = stack.pop() {
            if !seen.insert(blk) || depth > DA_NODE_MAXDEPTH {
                return Err(i.corrupt(format!("attribute btree revisits block {blk} or is too deep")));
            }
            let at = self.attr_block(i, runs, u64::from(blk), &mut b)?;
            match da_block(&b, &o, at)? {
                DaBlock::Leaf(raws) => out.extend(raws),
                DaBlock::Node(kids) => stack.extend(kids.into_iter().rev().map(|k| (k, depth + 1))),
            }
            if out.len() > MAX_XATTR_LIST {
                return Err(i.corrupt("more attributes than a listing can hold"));
            }
        }
        Ok(out)
    }

    /// A remote value of `len` bytes from fork block `blk`.
    fn remote_value(&self, i: &Inode, runs: &[Run], blk: u32, len: u32) -> Result<Vec<u8>, FsError> {
        let len = len as usize;
        if len > MAX_XATTR_VALUE {
            return Err(i.corrupt(format!("attribute value of {len} bytes")));
        }
        let o = self.owner(i);
        let mut value = Vec::with_capacity(len);
        let mut b = vec![0u8; self.bs() as usize];
        let mut next = u64::from(blk);
        while value.len() < len {
            let at = self.attr_block(i, runs, next, &mut b)?;
            value.extend_from_slice(remote_bytes(&b, &o, at, value.len(), len - value.len())?);
            next += 1;
        }
        Ok(value)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shortform_entries_and_bounds() {
        let mut f = vec![0u8, 0, 2, 0];
        f.extend_from_slice(&[3, 2, 0]);
        f.extend_from_slice(b"abcxy");
        f.extend_from_slice(&[7, 1, ATTR_SECURE]);
        f.extend_from_slice(b"selinuxz");
        let total = f.len() as u16;
        f[..2].copy_from_slice(&total.to_be_bytes());
        f.extend_from_slice(&[0; 8]);
        let got = shortform(&f, 0).unwrap();
        assert_eq!(got[0], Raw { flags: 0, name: b"abc".to_vec(), value: Value::Local(b"xy".to_vec()) });
        assert_eq!(linux_name(got[1].flags, &got[1].name), Some((b"security.selinux".to_vec(), false)));
        // A count past the total size is corrupt, never read beyond it.
        f[2] = 3;
        assert!(shortform(&f, 0).is_err());
    }

    #[test]
    fn names_and_acls() {
        assert_eq!(linux_name(ATTR_ROOT, b"x"), Some((b"trusted.x".to_vec(), false)));
        assert_eq!(linux_name(ATTR_ROOT, SGI_ACL_DEFAULT), Some((b"system.posix_acl_default".to_vec(), true)));
        assert_eq!(linux_name(ATTR_PARENT, b"p"), None);
        assert_eq!(linux_name(ATTR_LOCAL | ATTR_INCOMPLETE, b"p"), None);
        // user::rw-, user:1000:r--
        let mut v = 2u32.to_be_bytes().to_vec();
        for (tag, id, perm) in [(1u32, 0u32, 6u16), (2, 1000, 4)] {
            v.extend_from_slice(&tag.to_be_bytes());
            v.extend_from_slice(&id.to_be_bytes());
            v.extend_from_slice(&perm.to_be_bytes());
            v.extend_from_slice(&[0, 0]);
        }
        let x = acl_to_xattr(&v, 0).unwrap();
        assert_eq!(x, [2, 0, 0, 0, 1, 0, 6, 0, 255, 255, 255, 255, 2, 0, 4, 0, 0xe8, 3, 0, 0]);
        assert!(acl_to_xattr(&v[..v.len() - 1], 0).is_err());
    }

    #[test]
    fn v4_leaf_with_a_local_and_a_remote_entry() {
        let mut b = vec![0u8; 512];
        b[8..10].copy_from_slice(&ATTR_LEAF_MAGIC.to_be_bytes());
        b[12..14].copy_from_slice(&2u16.to_be_bytes());
        let e = ATTR_LEAF_HDR;
        b[e + 4..e + 6].copy_from_slice(&400u16.to_be_bytes());
        b[e + 6] = ATTR_LOCAL;
        b[e + 12..e + 14].copy_from_slice(&450u16.to_be_bytes());
        b[400..403].copy_from_slice(&[0, 2, 1]);
        b[403..406].copy_from_slice(b"kvv");
        b[450..458].copy_from_slice(&[0, 0, 0, 9, 0, 1, 0, 0]);
        b[458] = 3;
        b[459..462].copy_from_slice(b"big");
        let o = Owner { v5: false, ino: 5, uuid: &[0; 16] };
        let DaBlock::Leaf(got) = da_block(&b, &o, 0).unwrap() else { panic!("not a leaf") };
        assert_eq!(got[0].value, Value::Local(b"vv".to_vec()));
        assert_eq!(got[1], Raw { flags: 0, name: b"big".to_vec(), value: Value::Remote { blk: 9, len: 65536 } });
        // A name index past the block is corrupt.
        b[e + 4..e + 6].copy_from_slice(&510u16.to_be_bytes());
        assert!(da_block(&b, &o, 0).is_err());
    }
}
