//! Folder entries as JSON, shared by the HTTP listing and `backchain ls --json`,
//! and the path encoding both use.

use crate::tree::Node;
use crate::util::time::rfc3339;
use crate::volume::fs::NodeKind;
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use serde::Serialize;

/// Bytes kept as they are when a raw path is percent-encoded: RFC 3986
/// unreserved characters and `/`.
const PATH_KEEP: &AsciiSet = &NON_ALPHANUMERIC.remove(b'-').remove(b'.').remove(b'_').remove(b'~').remove(b'/');

#[derive(Debug, Serialize)]
pub struct Entry {
    /// The name; bytes that are not UTF-8 become U+FFFD.
    pub name: String,
    /// The path from the session root, `/`-separated, lossy like `name`.
    pub path: String,
    /// The exact path bytes, percent-encoded: usable as `path=` as it is,
    /// and the only reliable handle for names that are not UTF-8.
    pub path_encoded: String,
    /// file | directory | symlink | chardevice | blockdevice | fifo | socket |
    /// other
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub size: u64,
    /// RFC 3339, UTC.
    pub modified_time: String,
    /// Permission bits as octal text, e.g. "0644".
    pub mode: String,
    pub uid: u32,
    pub gid: u32,
    /// A symlink's target (lossy UTF-8).
    pub target: Option<String>,
    /// Why a folder cannot be browsed (a partition backchain cannot read).
    pub note: Option<String>,
    /// A device node's numbers.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub device: Option<Device>,
    /// The names of the node's extended attributes (values are not sent);
    /// left out when it has none.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub xattrs: Vec<String>,
    /// Whether the node carries a POSIX ACL (access or default) beyond its
    /// mode bits. (An NTFS file's security descriptor is in `xattrs` as
    /// `system.ntfs_acl`.)
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub acl: bool,
}

#[derive(Debug, Serialize)]
pub struct Device {
    pub major: u32,
    pub minor: u32,
}

pub fn kind_name(k: NodeKind) -> &'static str {
    k.name()
}

/// Percent-encodes raw path bytes (all non-unreserved bytes, including
/// invalid UTF-8, become `%XX`).
pub fn encode_path(path: &[u8]) -> String {
    percent_encoding::percent_encode(path, PATH_KEEP).to_string()
}

/// Percent-encodes a UTF-8 string for a URL query value.
pub fn encode_query(s: &str) -> String {
    utf8_percent_encode(s, PATH_KEEP).to_string()
}

/// `dir` joined with `name`, `/`-separated, with a leading `/`.
pub fn join(dir: &[u8], name: &[u8]) -> Vec<u8> {
    let mut p = Vec::with_capacity(dir.len() + name.len() + 1);
    p.extend_from_slice(dir);
    while p.last() == Some(&b'/') {
        p.pop();
    }
    if !p.starts_with(b"/") {
        p.insert(0, b'/');
    }
    if p.len() > 1 {
        p.push(b'/');
    }
    p.extend_from_slice(name);
    p
}

impl Entry {
    /// The entry for `node`, found in folder `dir` (raw path bytes).
    pub fn new(dir: &[u8], node: &Node, target: Option<Vec<u8>>) -> Self {
        let path = join(dir, &node.name);
        Entry {
            name: node.name_lossy(),
            path: String::from_utf8_lossy(&path).into_owned(),
            path_encoded: encode_path(&path),
            kind: kind_name(node.kind),
            size: node.size,
            modified_time: rfc3339(node.mtime.secs, node.mtime.nanos),
            mode: format!("{:04o}", node.perm & 0o7777),
            uid: node.uid,
            gid: node.gid,
            target: target.map(|t| String::from_utf8_lossy(&t).into_owned()),
            note: node.note.clone(),
            device: node.kind.rdev().map(|r| Device { major: r.major, minor: r.minor }),
            xattrs: Vec::new(),
            acl: false,
        }
    }

    /// Adds the names of `xattrs`, and whether one is an ACL.
    pub fn with_xattrs(mut self, xattrs: &[crate::volume::fs::Xattr]) -> Self {
        const ACLS: [&[u8]; 2] = [b"system.posix_acl_access", b"system.posix_acl_default"];
        self.acl = xattrs.iter().any(|x| ACLS.contains(&x.name.as_slice()));
        self.xattrs = xattrs.iter().map(|x| String::from_utf8_lossy(&x.name).into_owned()).collect();
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn join_and_encode() {
        assert_eq!(join(b"/", b"a"), b"/a");
        assert_eq!(join(b"", b"a"), b"/a");
        assert_eq!(join(b"/x/", b"a"), b"/x/a");
        assert_eq!(join(b"x", b"a b"), b"/x/a b");
        assert_eq!(encode_path(b"/d/a b\xff%"), "/d/a%20b%FF%25");
    }
}
