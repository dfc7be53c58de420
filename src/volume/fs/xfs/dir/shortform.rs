//! Short-form folders (§"Short Form Directories"): a header with the entry
//! count and the parent's number, then packed entries, all in the inode.

use super::RawEntry;
use crate::volume::fs::FsError;

/// Parses the inline folder `data` (the first `size` bytes of the fork) of
/// the inode at byte `at`. `ftype`: entries carry a file-type byte.
pub fn parse(data: &[u8], ftype: bool, at: u64) -> Result<Vec<RawEntry>, FsError> {
    let bad = |what: &str| FsError::corrupt(at, format!("short-form folder: {what}"));
    if data.len() < 6 {
        return Err(bad("shorter than its header"));
    }
    let count = usize::from(data[0]);
    let i8count = data[1];
    // Inode numbers are 4 bytes unless any needs 8 (then all do).
    let ino_len = if i8count == 0 { 4 } else { 8 };
    let mut pos = 2 + ino_len;
    let mut out = Vec::with_capacity(count);
    for _ in 0..count {
        // namelen, a 2-byte offset hint, the name, [ftype], the number.
        let namelen = usize::from(*data.get(pos).ok_or_else(|| bad("entry past the end"))?);
        let name_at = pos + 3;
        let ino_at = name_at + namelen + usize::from(ftype);
        let end = ino_at + ino_len;
        if namelen == 0 || end > data.len() {
            return Err(bad("entry past the end"));
        }
        let ino = data[ino_at..end].iter().fold(0u64, |a, &b| a << 8 | u64::from(b));
        out.push(RawEntry { name: data[name_at..name_at + namelen].to_vec(), ino });
        pos = end;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_entries() {
        // 2 entries, 4-byte numbers, parent 128, ftype.
        let mut d = vec![2, 0, 0, 0, 0, 128];
        d.extend([1, 0, 0x30, b'a', 1, 0, 0, 0, 131]);
        d.extend([2, 0, 0x40, b'b', b'c', 2, 0, 0, 1, 0]);
        let e = parse(&d, true, 0).unwrap();
        assert_eq!(e, vec![RawEntry { name: b"a".to_vec(), ino: 131 }, RawEntry { name: b"bc".to_vec(), ino: 256 }]);
        assert!(parse(&d[..d.len() - 1], true, 0).is_err());
    }
}
