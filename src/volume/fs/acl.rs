//! POSIX ACLs in the form `getxattr(2)` returns them for
//! `system.posix_acl_access` and `system.posix_acl_default`
//! (`posix_acl_xattr`, linux/posix_acl_xattr.h): a little-endian version 2
//! header, then 8 bytes per entry. ext4 and XFS keep ACLs in forms of
//! their own and are converted here, so front ends see one form.

/// Entry tags that carry a user or group id (linux/posix_acl.h).
pub const ACL_USER: u16 = 0x02;
pub const ACL_GROUP: u16 = 0x08;
/// The id the kernel writes for entries that have none.
pub const ACL_UNDEFINED_ID: u32 = u32::MAX;
/// `POSIX_ACL_XATTR_VERSION`.
const XATTR_VERSION: u32 = 2;

/// The xattr form of entries given as (tag, permissions, id); the id is
/// kept only for named users and groups, as the kernel does.
pub fn to_xattr(entries: impl IntoIterator<Item = (u16, u16, u32)>) -> Vec<u8> {
    let mut out = XATTR_VERSION.to_le_bytes().to_vec();
    for (tag, perm, id) in entries {
        let id = if tag == ACL_USER || tag == ACL_GROUP { id } else { ACL_UNDEFINED_ID };
        out.extend_from_slice(&tag.to_le_bytes());
        out.extend_from_slice(&perm.to_le_bytes());
        out.extend_from_slice(&id.to_le_bytes());
    }
    out
}
