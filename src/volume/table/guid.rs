//! GUIDs as GPT stores them (UEFI spec 2.10, appendix A: the first three
//! fields little-endian, the last two as bytes).

use std::fmt;

/// A GUID in its on-disk byte order.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Guid(pub [u8; 16]);

impl Guid {
    pub fn is_zero(&self) -> bool {
        self.0 == [0; 16]
    }

    /// Parses the text form `XXXXXXXX-XXXX-XXXX-XXXX-XXXXXXXXXXXX` (any case).
    pub fn parse(s: &str) -> Option<Guid> {
        let b = s.as_bytes();
        if b.len() != 36 || [8, 13, 18, 23].iter().any(|&i| b[i] != b'-') {
            return None;
        }
        let hex: Vec<u8> = s.bytes().filter(|&c| c != b'-').collect();
        if hex.len() != 32 {
            return None;
        }
        let mut text = [0u8; 16];
        for (i, pair) in hex.chunks(2).enumerate() {
            let digits = std::str::from_utf8(pair).ok()?;
            text[i] = u8::from_str_radix(digits, 16).ok()?;
        }
        // Text order to disk order: swap the first three fields.
        let mut d = text;
        d[0..4].reverse();
        d[4..6].reverse();
        d[6..8].reverse();
        Some(Guid(d))
    }
}

impl fmt::Display for Guid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let b = &self.0;
        write!(
            f,
            "{:02X}{:02X}{:02X}{:02X}-{:02X}{:02X}-{:02X}{:02X}-{:02X}{:02X}-",
            b[3], b[2], b[1], b[0], b[5], b[4], b[7], b[6], b[8], b[9]
        )?;
        b[10..].iter().try_for_each(|x| write!(f, "{x:02X}"))
    }
}

impl fmt::Debug for Guid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Guid({self})")
    }
}

impl serde::Serialize for Guid {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mixed_endian_round_trip() {
        // The EFI system partition type as it appears on disk (UEFI spec table 5.8).
        let disk = [0x28, 0x73, 0x2A, 0xC1, 0x1F, 0xF8, 0xD2, 0x11, 0xBA, 0x4B, 0x00, 0xA0, 0xC9, 0x3E, 0xC9, 0x3B];
        let g = Guid(disk);
        assert_eq!(g.to_string(), "C12A7328-F81F-11D2-BA4B-00A0C93EC93B");
        assert_eq!(Guid::parse("c12a7328-f81f-11d2-ba4b-00a0c93ec93b"), Some(g));
        assert_eq!(Guid::parse("C12A7328F81F-11D2-BA4B-00A0C93EC93B0"), None);
        assert_eq!(Guid::parse("C12A7328-F81F-11D2-BA4B-00A0C93EC93G"), None);
        assert_eq!(Guid::parse("é2A7328-F81F-11D2-BA4B-00A0C93EC93B"), None);
        assert!(Guid::default().is_zero());
    }
}
