//! Reparse points ($REPARSE_POINT, [MS-FSCC] 2.1.2) and Interix symlinks.
//!
//! Symbolic links and junctions (mount points) become symlinks. Their target
//! is the *print name* when the link has one (what Windows shows the user),
//! else the *substitute name* without its `\??\` NT-namespace prefix. A
//! relative symlink's backslashes become slashes so it resolves inside the
//! restored tree; absolute targets (`C:\Users\x`, `\\server\share`) stay as
//! Windows wrote them, since they point outside the volume anyway.
#![forbid(unsafe_code)]

use super::layout::*;
use super::record::Le;
use crate::volume::fs::FsError;
use crate::volume::fs::{NodeKind, Rdev};

/// Largest symlink target accepted (bytes of UTF-16).
pub const MAX_LINK_TARGET: usize = 64 * 1024;

/// What a reparse point makes of its file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reparse {
    Link(Vec<u8>),
    /// Another kind: the file is listed but its data cannot be read.
    Other(u32),
}

/// Header: tag (4), data length (2), reserved (2); then the tag's buffer:
/// substitute-name offset and length, print-name offset and length (2 each),
/// then a flags word for symlinks only, then the path buffer.
const RP_TAG: usize = 0;
const RP_DATA: usize = 8;
const RP_PATH_BUFFER_SYMLINK: usize = RP_DATA + 12;
const RP_PATH_BUFFER_MOUNT_POINT: usize = RP_DATA + 8;

pub fn parse(value: &[u8], pos: u64) -> Result<Reparse, FsError> {
    let le = Le { buf: value, base: pos };
    let tag = le.u32(RP_TAG, "reparse tag")?;
    let path_buffer = match tag {
        IO_REPARSE_TAG_SYMLINK => RP_PATH_BUFFER_SYMLINK,
        IO_REPARSE_TAG_MOUNT_POINT => RP_PATH_BUFFER_MOUNT_POINT,
        other => return Ok(Reparse::Other(other)),
    };
    let name = |off_field: usize, len_field: usize| -> Result<String, FsError> {
        let off = usize::from(le.u16(RP_DATA + off_field, "reparse name offset")?);
        let len = usize::from(le.u16(RP_DATA + len_field, "reparse name length")?);
        let bytes = le.slice(path_buffer + off, len, "reparse name")?;
        Ok(utf16_to_string(bytes))
    };
    let substitute = name(0, 2)?;
    let print = name(4, 6)?;
    let relative = tag == IO_REPARSE_TAG_SYMLINK && le.u32(RP_DATA + 8, "symlink flags")? & SYMLINK_FLAG_RELATIVE != 0;
    let mut target =
        if !print.is_empty() { print } else { substitute.strip_prefix("\\??\\").unwrap_or(&substitute).to_string() };
    if relative {
        target = target.replace('\\', "/");
    }
    if target.is_empty() {
        return Err(FsError::corrupt(pos, "symbolic link with an empty target"));
    }
    Ok(Reparse::Link(target.into_bytes()))
}

/// A name for the reparse tags users meet, for error messages.
pub fn tag_name(tag: u32) -> &'static str {
    match tag {
        IO_REPARSE_TAG_WOF => "WOF/CompactOS compressed file",
        IO_REPARSE_TAG_DEDUP => "Data Deduplication file",
        _ => "reparse point",
    }
}

/// UTF-16LE bytes to a string; unpaired surrogates become U+FFFD.
pub fn utf16_to_string(bytes: &[u8]) -> String {
    let units = bytes.chunks_exact(2).map(|c| u16::from_le_bytes([c[0], c[1]]));
    char::decode_utf16(units).map(|r| r.unwrap_or(char::REPLACEMENT_CHARACTER)).collect()
}

/// The target of an Interix symlink (ntfs-3g's `ln -s`), if `data` is one.
pub fn interix_target(data: &[u8]) -> Option<Vec<u8>> {
    let rest = data.strip_prefix(&INTX_SYMLINK_MAGIC[..])?;
    Some(utf16_to_string(rest).into_bytes())
}

/// The device of an Interix device file (ntfs-3g's `mknod`): the magic,
/// then the major and minor numbers as little-endian u64s.
pub fn interix_device(data: &[u8]) -> Option<NodeKind> {
    let (rest, block) = match data.strip_prefix(&INTX_CHAR_MAGIC[..]) {
        Some(r) => (r, false),
        None => (data.strip_prefix(&INTX_BLOCK_MAGIC[..])?, true),
    };
    let num = |at: usize| rest.get(at..at + 8).map(|b| u64::from_le_bytes(b.try_into().unwrap_or_default()));
    // Linux device numbers are 32-bit major and minor.
    let rdev = Rdev { major: u32::try_from(num(0)?).ok()?, minor: u32::try_from(num(8)?).ok()? };
    Some(if block { NodeKind::BlockDevice(rdev) } else { NodeKind::CharDevice(rdev) })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn utf16(s: &str) -> Vec<u8> {
        s.encode_utf16().flat_map(|u| u.to_le_bytes()).collect()
    }

    fn buffer(tag: u32, sub: &str, print: &str, flags: Option<u32>) -> Vec<u8> {
        let (s, p) = (utf16(sub), utf16(print));
        let mut d = Vec::new();
        d.extend_from_slice(&0u16.to_le_bytes());
        d.extend_from_slice(&(s.len() as u16).to_le_bytes());
        d.extend_from_slice(&(s.len() as u16).to_le_bytes());
        d.extend_from_slice(&(p.len() as u16).to_le_bytes());
        if let Some(f) = flags {
            d.extend_from_slice(&f.to_le_bytes());
        }
        d.extend_from_slice(&s);
        d.extend_from_slice(&p);
        let mut v = tag.to_le_bytes().to_vec();
        v.extend_from_slice(&(d.len() as u16).to_le_bytes());
        v.extend_from_slice(&[0, 0]);
        v.extend_from_slice(&d);
        v
    }

    #[test]
    fn symlink_and_junction_targets() {
        let rel = buffer(IO_REPARSE_TAG_SYMLINK, "dir\\file", "dir\\file", Some(1));
        assert_eq!(parse(&rel, 0).unwrap(), Reparse::Link(b"dir/file".to_vec()));
        let junction = buffer(IO_REPARSE_TAG_MOUNT_POINT, "\\??\\C:\\Data", "", None);
        assert_eq!(parse(&junction, 0).unwrap(), Reparse::Link(b"C:\\Data".to_vec()));
        let wof = buffer(IO_REPARSE_TAG_WOF, "", "", None);
        assert_eq!(parse(&wof, 0).unwrap(), Reparse::Other(IO_REPARSE_TAG_WOF));
        assert!(parse(&rel[..rel.len() - 2], 0).is_err());
    }
}
