//! ext4 extended attributes (ext4 documentation section 4.8, "Extended
//! Attributes"): the entries kept in the inode after `i_extra_isize` and in
//! the one block `i_file_acl` names, with values inline, in that block, or
//! (the `ea_inode` feature) in an inode of their own. ACLs are stored in
//! ext4's compact form and handed out in the kernel's `posix_acl_xattr`
//! form, as `getxattr(2)` returns them.

use crate::volume::fs::{FsError, MAX_XATTR_LIST, MAX_XATTR_NAME, MAX_XATTR_VALUE, acl};

/// `h_magic` / the in-inode header (section 4.8.1).
pub const MAGIC: u32 = 0xEA02_0000;
/// Size of the header of an attribute block; entries follow it.
const BLOCK_HEADER: usize = 32;
/// Size of the fixed part of an entry (`ext4_xattr_entry`), before its name.
const ENTRY_HEADER: usize = 16;

/// `e_name_index` prefixes (section 4.8.2, "Attribute Name Indices").
fn prefix(index: u8) -> Option<&'static [u8]> {
    Some(match index {
        0 => b"",
        1 => b"user.",
        2 => b"system.posix_acl_access",
        3 => b"system.posix_acl_default",
        4 => b"trusted.",
        6 => b"security.",
        7 => b"system.",
        8 => b"system.richacl",
        _ => return None,
    })
}

/// Where an entry's value is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Value {
    Bytes(Vec<u8>),
    /// In the data of inode `ino` (`ea_inode`), `size` bytes.
    Inode {
        ino: u32,
        size: u32,
    },
}

/// One parsed entry: its full name and where its value is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub name: Vec<u8>,
    pub value: Value,
    /// Whether the value is an ACL in ext4's compact form.
    pub acl: bool,
}

fn u16_at(b: &[u8], off: usize) -> u16 {
    u16::from_le_bytes([b[off], b[off + 1]])
}

fn u32_at(b: &[u8], off: usize) -> u32 {
    u32::from_le_bytes([b[off], b[off + 1], b[off + 2], b[off + 3]])
}

/// The entries of the in-inode area `region` (everything after
/// `128 + i_extra_isize`); empty when it has no header. Values are relative
/// to the first entry. `at`: the area's byte offset, for errors.
pub fn parse_ibody(region: &[u8], at: u64) -> Result<Vec<Entry>, FsError> {
    if region.len() < 4 || u32_at(region, 0) != MAGIC {
        return Ok(Vec::new());
    }
    let body = &region[4..];
    parse_entries(body, 0, body, at + 4)
}

/// The entries of an attribute block. Values are relative to the block.
pub fn parse_block(block: &[u8], at: u64) -> Result<Vec<Entry>, FsError> {
    if block.len() < BLOCK_HEADER || u32_at(block, 0) != MAGIC {
        return Err(FsError::corrupt(at, "extended attribute block without its magic"));
    }
    if u32_at(block, 8) != 1 {
        return Err(FsError::corrupt(at + 8, format!("extended attribute block spans {} blocks", u32_at(block, 8))));
    }
    parse_entries(block, BLOCK_HEADER, block, at)
}

/// Entries from `area[start..]` up to a zero word or the end; values at
/// `e_value_offs` inside `values`.
fn parse_entries(area: &[u8], start: usize, values: &[u8], at: u64) -> Result<Vec<Entry>, FsError> {
    let mut out = Vec::new();
    let mut pos = start;
    let mut listed = 0usize;
    while pos + 4 <= area.len() && u32_at(area, pos) != 0 {
        let here = at + pos as u64;
        if pos + ENTRY_HEADER > area.len() {
            return Err(FsError::corrupt(here, "extended attribute entry cut off"));
        }
        let e = &area[pos..];
        let name_len = usize::from(e[0]);
        let name_end = ENTRY_HEADER + name_len;
        if name_end > e.len() {
            return Err(FsError::corrupt(here, "extended attribute name cut off"));
        }
        let (index, offs, inum, size) = (e[1], usize::from(u16_at(e, 2)), u32_at(e, 4), u32_at(e, 8));
        pos += name_end.div_ceil(4) * 4;
        let Some(pre) = prefix(index) else { continue };
        let mut name = pre.to_vec();
        name.extend_from_slice(&e[ENTRY_HEADER..name_end]);
        if name.len() > MAX_XATTR_NAME || name.contains(&0) {
            return Err(FsError::corrupt(here, format!("extended attribute name of {} bytes", name.len())));
        }
        if size as usize > MAX_XATTR_VALUE {
            return Err(FsError::corrupt(here, format!("extended attribute value of {size} bytes")));
        }
        listed = listed.saturating_add(name.len() + 1);
        if listed > MAX_XATTR_LIST {
            return Err(FsError::corrupt(here, "extended attribute names exceed 64 KiB"));
        }
        let value = if inum != 0 {
            Value::Inode { ino: inum, size }
        } else {
            let end = offs.checked_add(size as usize).filter(|&e| e <= values.len());
            let end = end.ok_or_else(|| FsError::corrupt(here, format!("value of {size} bytes at {offs}")))?;
            Value::Bytes(values[offs..end].to_vec())
        };
        out.push(Entry { name, value, acl: index == 2 || index == 3 });
    }
    Ok(out)
}

/// ext4's ACL version (ext4/acl.h).
const EXT4_ACL_VERSION: u32 = 1;

/// ext4's compact ACL (short entries without an id for the owner, group,
/// mask and other) → the kernel's xattr form (every entry 8 bytes).
pub fn acl_to_xattr(v: &[u8], at: u64) -> Result<Vec<u8>, FsError> {
    if v.len() < 4 || u32_at(v, 0) != EXT4_ACL_VERSION {
        return Err(FsError::corrupt(at, "ACL without ext4's version 1 header"));
    }
    let mut entries = Vec::new();
    let mut pos = 4;
    while pos < v.len() {
        let short = pos + 4 <= v.len();
        let (tag, perm) = if short { (u16_at(v, pos), u16_at(v, pos + 2)) } else { (0, 0) };
        let len = if tag == acl::ACL_USER || tag == acl::ACL_GROUP { 8 } else { 4 };
        if pos + len > v.len() {
            return Err(FsError::corrupt(at, format!("ACL entry cut off at byte {pos}")));
        }
        let id = if len == 8 { u32_at(v, pos + 4) } else { acl::ACL_UNDEFINED_ID };
        entries.push((tag, perm, id));
        pos += len;
    }
    Ok(acl::to_xattr(entries))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(index: u8, name: &[u8], offs: u16, size: u32) -> Vec<u8> {
        let mut e = vec![name.len() as u8, index];
        e.extend_from_slice(&offs.to_le_bytes());
        e.extend_from_slice(&0u32.to_le_bytes());
        e.extend_from_slice(&size.to_le_bytes());
        e.extend_from_slice(&0u32.to_le_bytes());
        e.extend_from_slice(name);
        while e.len() % 4 != 0 {
            e.push(0);
        }
        e
    }

    #[test]
    fn block_entries_with_prefixes_and_bounds() {
        let mut b = vec![0u8; 1024];
        b[..4].copy_from_slice(&MAGIC.to_le_bytes());
        b[8..12].copy_from_slice(&1u32.to_le_bytes());
        let mut es = entry(1, b"comment", 1000, 5);
        es.extend(entry(6, b"selinux", 990, 10));
        b[32..32 + es.len()].copy_from_slice(&es);
        b[1000..1005].copy_from_slice(b"hello");
        b[990..1000].copy_from_slice(b"system_u:x");
        let got = parse_block(&b, 0).unwrap();
        assert_eq!(got[0].name, b"user.comment");
        assert_eq!(got[0].value, Value::Bytes(b"hello".to_vec()));
        assert_eq!(got[1].name, b"security.selinux");
        // A value past the block is corrupt, never read out of bounds.
        let bad = entry(1, b"x", 1020, 8);
        b[32..32 + bad.len()].copy_from_slice(&bad);
        b[32 + bad.len()..36 + bad.len()].fill(0);
        assert!(matches!(parse_block(&b, 0), Err(FsError::Corrupt { .. })));
    }

    #[test]
    fn compact_acl_becomes_the_kernel_form() {
        // user::rw-, user:1000:r--, group::r--, mask::r--, other::---
        let mut v = 1u32.to_le_bytes().to_vec();
        for (tag, perm, id) in
            [(1u16, 6u16, None), (2, 4, Some(1000u32)), (4, 4, None), (0x10, 4, None), (0x20, 0, None)]
        {
            v.extend_from_slice(&tag.to_le_bytes());
            v.extend_from_slice(&perm.to_le_bytes());
            if let Some(id) = id {
                v.extend_from_slice(&id.to_le_bytes());
            }
        }
        let x = acl_to_xattr(&v, 0).unwrap();
        assert_eq!(x.len(), 4 + 5 * 8);
        assert_eq!(u32_at(&x, 0), 2);
        assert_eq!((u16_at(&x, 12), u32_at(&x, 16)), (2, 1000));
        assert_eq!(u32_at(&x, 8), u32::MAX);
        assert!(acl_to_xattr(&v[..v.len() - 2], 0).is_err());
    }
}
