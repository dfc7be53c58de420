//! `/proc/self/mountinfo`: which mounts sit at a path, and whether they are
//! FUSE mounts. Format: proc(5), "/proc/pid/mountinfo".

use std::ffi::OsString;
use std::os::unix::ffi::OsStringExt;
use std::path::{Path, PathBuf};

pub(crate) const MOUNTINFO: &str = "/proc/self/mountinfo";

/// Separates the optional fields from the filesystem type (proc(5)).
const OPTIONAL_FIELDS_END: &str = "-";

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct MountEntry {
    /// The mounted filesystem's device number (major, minor).
    pub(crate) dev: Option<(u32, u32)>,
    pub(crate) mount_point: PathBuf,
    pub(crate) fstype: String,
    pub(crate) source: String,
    /// Per-superblock options (for FUSE: user_id, allow_other, default_permissions...).
    pub(crate) super_options: String,
}

impl MountEntry {
    /// `fuse` when mounted directly by root, `fuse.SUBTYPE` through
    /// fusermount3, `fuseblk` for block-device FUSE filesystems.
    pub(crate) fn is_fuse(&self) -> bool {
        self.fstype == "fuse" || self.fstype == "fuseblk" || self.fstype.starts_with("fuse.")
    }
}

/// Parses the text of a mountinfo file; malformed lines are skipped.
pub(crate) fn parse(text: &str) -> Vec<MountEntry> {
    text.lines().filter_map(parse_line).collect()
}

fn parse_line(line: &str) -> Option<MountEntry> {
    let fields: Vec<&str> = line.split(' ').collect();
    // id, parent id, major:minor, root, mount point, options, optional fields...
    let mount_point = fields.get(4)?;
    let sep = fields.iter().skip(6).position(|f| *f == OPTIONAL_FIELDS_END)? + 6;
    let fstype = fields.get(sep + 1)?;
    let source = fields.get(sep + 2)?;
    let super_options = fields.get(sep + 3).copied().unwrap_or("");
    let dev = fields.get(2).and_then(|d| d.split_once(':')).and_then(|(a, b)| Some((a.parse().ok()?, b.parse().ok()?)));
    Some(MountEntry {
        dev,
        mount_point: PathBuf::from(OsString::from_vec(unescape(mount_point))),
        fstype: String::from_utf8_lossy(&unescape(fstype)).into_owned(),
        source: String::from_utf8_lossy(&unescape(source)).into_owned(),
        super_options: super_options.to_string(),
    })
}

/// Undoes the kernel's `\ooo` octal escapes (space, tab, newline, backslash).
fn unescape(s: &str) -> Vec<u8> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && let Some(oct) = b.get(i + 1..i + 4)
            && oct.iter().all(|c| (b'0'..=b'7').contains(c))
        {
            let v = oct.iter().fold(0u32, |acc, c| acc * 8 + u32::from(c - b'0'));
            if let Ok(byte) = u8::try_from(v) {
                out.push(byte);
                i += 4;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    out
}

/// The mounts whose mount point is exactly `path` (an absolute path without
/// symlinks), in mount order (the last one is on top).
pub(crate) fn mounts_at(path: &Path) -> std::io::Result<Vec<MountEntry>> {
    let text = std::fs::read_to_string(MOUNTINFO)?;
    Ok(parse(&text).into_iter().filter(|m| m.mount_point == path).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_fuse_and_escaped_entries() {
        let text = "22 1 8:1 / / rw,relatime shared:1 - ext4 /dev/sda1 rw\n\
                    90 22 0:51 / /tmp/a\\040b rw,nosuid,nodev,relatime shared:40 master:2 - fuse.backchain backchain \
                    ro,user_id=1000,group_id=1000,allow_other\n\
                    91 22 0:52 / /mnt/x ro,nosuid,nodev - fuse backchain ro,user_id=0,group_id=0\n\
                    garbage\n";
        let m = parse(text);
        assert_eq!(m.len(), 3);
        assert_eq!(m[0].mount_point, Path::new("/"));
        assert!(!m[0].is_fuse());
        assert_eq!(m[1].mount_point, Path::new("/tmp/a b"));
        assert_eq!(m[1].dev, Some((0, 51)));
        assert_eq!(m[1].fstype, "fuse.backchain");
        assert_eq!(m[1].source, "backchain");
        assert!(m[1].super_options.contains("allow_other"));
        assert!(m[1].is_fuse());
        assert!(m[2].is_fuse());
        assert_eq!(m[2].mount_point, Path::new("/mnt/x"));
    }

    #[test]
    fn unescapes_octal_and_keeps_stray_backslashes() {
        assert_eq!(unescape("a\\011b\\012c\\134d"), b"a\tb\nc\\d");
        assert_eq!(unescape("x\\9y\\"), b"x\\9y\\");
        assert_eq!(unescape("\\777"), b"\\777");
    }

    #[test]
    fn reads_this_process_mounts() {
        let all = parse(&std::fs::read_to_string(MOUNTINFO).unwrap());
        assert!(all.iter().any(|m| m.mount_point == Path::new("/")), "no root mount in {MOUNTINFO}");
    }
}
