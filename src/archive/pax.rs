//! PAX extended-header records for metadata the ustar/GNU header cannot
//! hold, in the names GNU tar `--xattrs --acls --selinux` reads back:
//! `SCHILY.xattr.NAME` with the raw value, and POSIX ACLs as
//! `SCHILY.acl.access` / `SCHILY.acl.default` in short text form.

#![forbid(unsafe_code)]

use crate::volume::fs::Xattr;

/// The xattr names of POSIX ACLs, in the kernel's binary form.
pub const ACL_ACCESS: &[u8] = b"system.posix_acl_access";
pub const ACL_DEFAULT: &[u8] = b"system.posix_acl_default";

/// Kernel ACL xattr layout (include/uapi/linux/posix_acl_xattr.h): a
/// 4-byte version, then 8-byte entries of tag (u16), perm (u16), id (u32).
const ACL_VERSION: u32 = 2;
const ACL_HEADER: usize = 4;
const ACL_ENTRY: usize = 8;
const TAG_USER_OBJ: u16 = 0x01;
const TAG_USER: u16 = 0x02;
const TAG_GROUP_OBJ: u16 = 0x04;
const TAG_GROUP: u16 = 0x08;
const TAG_MASK: u16 = 0x10;
const TAG_OTHER: u16 = 0x20;

/// The kernel's binary ACL as text (`user::rw-,user:1000:r--,...`), with
/// numeric ids so that it restores the same on any host; `None` when the
/// value is not a well-formed ACL.
pub fn acl_text(value: &[u8]) -> Option<String> {
    let (head, body) = value.split_at_checked(ACL_HEADER)?;
    if u32::from_le_bytes(head.try_into().ok()?) != ACL_VERSION || body.len() % ACL_ENTRY != 0 {
        return None;
    }
    let mut parts = Vec::with_capacity(body.len() / ACL_ENTRY);
    for e in body.chunks_exact(ACL_ENTRY) {
        let tag = u16::from_le_bytes([e[0], e[1]]);
        let perm = u16::from_le_bytes([e[2], e[3]]);
        let id = u32::from_le_bytes([e[4], e[5], e[6], e[7]]);
        let who = match tag {
            TAG_USER_OBJ => "user::".to_string(),
            TAG_USER => format!("user:{id}:"),
            TAG_GROUP_OBJ => "group::".to_string(),
            TAG_GROUP => format!("group:{id}:"),
            TAG_MASK => "mask::".to_string(),
            TAG_OTHER => "other::".to_string(),
            _ => return None,
        };
        let rwx: String =
            [(4, 'r'), (2, 'w'), (1, 'x')].iter().map(|&(bit, c)| if perm & bit != 0 { c } else { '-' }).collect();
        parts.push(who + &rwx);
    }
    Some(parts.join(","))
}

/// The PAX records for one entry's extended attributes. An ACL that does
/// not parse is kept as its raw xattr, so nothing is dropped.
pub fn records(xattrs: &[Xattr]) -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::with_capacity(xattrs.len());
    for x in xattrs {
        let acl = match x.name.as_slice() {
            ACL_ACCESS => Some("SCHILY.acl.access"),
            ACL_DEFAULT => Some("SCHILY.acl.default"),
            _ => None,
        };
        if let Some(key) = acl
            && let Some(text) = acl_text(&x.value)
        {
            out.push((key.to_string(), text.into_bytes()));
            continue;
        }
        // PAX keywords are UTF-8 text; a name that is not stays out (Linux
        // xattr names are in practice ASCII).
        if let Ok(name) = std::str::from_utf8(&x.name)
            && !name.contains(['=', '\n'])
        {
            out.push((format!("SCHILY.xattr.{name}"), x.value.clone()));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn acl(entries: &[(u16, u16, u32)]) -> Vec<u8> {
        let mut v = ACL_VERSION.to_le_bytes().to_vec();
        for &(t, p, id) in entries {
            v.extend_from_slice(&t.to_le_bytes());
            v.extend_from_slice(&p.to_le_bytes());
            v.extend_from_slice(&id.to_le_bytes());
        }
        v
    }

    #[test]
    fn acl_as_text() {
        let a = acl(&[(1, 6, u32::MAX), (2, 4, 1000), (4, 4, u32::MAX), (8, 7, 50), (0x10, 7, 0), (0x20, 0, 0)]);
        assert_eq!(acl_text(&a).unwrap(), "user::rw-,user:1000:r--,group::r--,group:50:rwx,mask::rwx,other::---");
    }

    #[test]
    fn bad_acls_stay_raw() {
        assert_eq!(acl_text(b"\x02\0\0"), None);
        assert_eq!(acl_text(&acl(&[(0x40, 0, 0)])), None);
        let mut short = acl(&[(1, 6, 0)]);
        short.pop();
        assert_eq!(acl_text(&short), None);
        let x = Xattr { name: ACL_ACCESS.to_vec(), value: b"junk".to_vec() };
        assert_eq!(records(&[x]), vec![("SCHILY.xattr.system.posix_acl_access".to_string(), b"junk".to_vec())]);
    }

    #[test]
    fn xattr_records() {
        let xs = [
            Xattr { name: b"user.a".to_vec(), value: b"\0\x01bin".to_vec() },
            Xattr { name: b"security.selinux".to_vec(), value: b"system_u:object_r:bin_t:s0\0".to_vec() },
            Xattr { name: ACL_DEFAULT.to_vec(), value: acl(&[(1, 7, 0), (4, 5, 0), (0x20, 5, 0)]) },
        ];
        let r = records(&xs);
        assert_eq!(r[0], ("SCHILY.xattr.user.a".to_string(), b"\0\x01bin".to_vec()));
        assert_eq!(r[1].0, "SCHILY.xattr.security.selinux");
        assert_eq!(r[2], ("SCHILY.acl.default".to_string(), b"user::rwx,group::r-x,other::r-x".to_vec()));
    }
}
