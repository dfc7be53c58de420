//! 32-byte directory entries and VFAT long names (FAT specification
//! section 6 "Directory Structure" and section 7 "Long File Name
//! Implementation").

use crate::util::time::days_from_civil;
use crate::volume::fs::Timestamp;

pub const ENTRY_LEN: usize = 32;
// DIR_Attr bits (section 6).
pub const ATTR_READ_ONLY: u8 = 0x01;
pub const ATTR_VOLUME_ID: u8 = 0x08;
pub const ATTR_DIRECTORY: u8 = 0x10;
/// READ_ONLY | HIDDEN | SYSTEM | VOLUME_ID marks a long-name entry.
const ATTR_LONG_NAME: u8 = 0x0F;
const ATTR_LONG_NAME_MASK: u8 = 0x3F;
/// DIR_Name[0]: free from here on / deleted / real first byte 0xE5 (KANJI).
const END_OF_DIR: u8 = 0x00;
pub const DELETED: u8 = 0xE5;
const KANJI_E5: u8 = 0x05;
/// DIR_NTRes flags (Windows NT): base name / extension stored lower case.
const NT_LOWER_BASE: u8 = 0x08;
const NT_LOWER_EXT: u8 = 0x10;
/// LDIR_Ord: the last (first stored) long entry has this bit set.
const LAST_LONG_ENTRY: u8 = 0x40;
/// A long name has at most 255 characters: 20 entries of 13.
const MAX_LONG_ENTRIES: u8 = 20;
const CHARS_PER_LONG_ENTRY: usize = 13;
/// Offsets of the 13 UTF-16 units inside a long entry (section 7).
const LFN_CHAR_OFFSETS: [usize; 13] = [1, 3, 5, 7, 9, 14, 16, 18, 20, 22, 24, 28, 30];

/// A short (8.3) directory entry: the one that carries the file's data.
#[derive(Debug, Clone)]
pub struct ShortEntry {
    pub name: [u8; 11],
    pub attr: u8,
    pub nt_flags: u8,
    pub crt_tenth: u8,
    pub crt_time: u16,
    pub crt_date: u16,
    pub acc_date: u16,
    pub wrt_time: u16,
    pub wrt_date: u16,
    pub first_cluster: u32,
    pub size: u32,
}

fn u16_at(b: &[u8], off: usize) -> u16 {
    u16::from_le_bytes([b[off], b[off + 1]])
}

impl ShortEntry {
    pub fn parse(b: &[u8]) -> ShortEntry {
        let mut name = [0u8; 11];
        name.copy_from_slice(&b[..11]);
        ShortEntry {
            name,
            attr: b[11],
            nt_flags: b[12],
            crt_tenth: b[13],
            crt_time: u16_at(b, 14),
            crt_date: u16_at(b, 16),
            acc_date: u16_at(b, 18),
            wrt_time: u16_at(b, 22),
            wrt_date: u16_at(b, 24),
            first_cluster: u32::from(u16_at(b, 20)) << 16 | u32::from(u16_at(b, 26)),
            size: u32::from_le_bytes([b[28], b[29], b[30], b[31]]),
        }
    }

    /// A live entry for a file or folder (not free, deleted, a long-name
    /// part or a volume label).
    pub fn is_live(&self) -> bool {
        self.name[0] != END_OF_DIR
            && self.name[0] != DELETED
            && self.attr & ATTR_LONG_NAME_MASK != ATTR_LONG_NAME
            && self.attr & ATTR_VOLUME_ID == 0
    }

    pub fn is_dir(&self) -> bool {
        self.attr & ATTR_DIRECTORY != 0
    }

    fn is_dot(&self) -> bool {
        &self.name == b".          " || &self.name == b"..         "
    }

    /// The 8.3 name as `BASE.EXT`, lower-cased where the NT flags say so.
    /// Bytes above 0x7F (an OEM code page) are read as Latin-1.
    pub fn short_name(&self) -> String {
        let mut raw = self.name;
        if raw[0] == KANJI_E5 {
            raw[0] = DELETED;
        }
        let part = |bytes: &[u8], lower: bool| -> String {
            let end = bytes.iter().rposition(|&c| c != b' ').map_or(0, |p| p + 1);
            bytes[..end].iter().map(|&c| char::from(if lower { c.to_ascii_lowercase() } else { c })).collect()
        };
        let base = part(&raw[..8], self.nt_flags & NT_LOWER_BASE != 0);
        let ext = part(&raw[8..], self.nt_flags & NT_LOWER_EXT != 0);
        if ext.is_empty() { base } else { format!("{base}.{ext}") }
    }

    pub fn mtime(&self) -> Timestamp {
        fat_time(self.wrt_date, self.wrt_time, 0)
    }

    pub fn crtime(&self) -> Timestamp {
        fat_time(self.crt_date, self.crt_time, self.crt_tenth)
    }

    pub fn atime(&self) -> Timestamp {
        fat_time(self.acc_date, 0, 0)
    }
}

/// The checksum of an 8.3 name that its long-name entries carry (section 7.2).
pub fn short_name_checksum(name: &[u8; 11]) -> u8 {
    name.iter().fold(0u8, |sum, &c| sum.rotate_right(1).wrapping_add(c))
}

/// A FAT date and time (section 6.1): local time of an unknown zone, read
/// as UTC; 2-second resolution plus 10 ms units for creation times. A zero
/// or invalid date is "not set" (the epoch).
pub fn fat_time(date: u16, time: u16, tenths: u8) -> Timestamp {
    let (year, month, day) = (1980 + i64::from(date >> 9), i64::from((date >> 5) & 0xF), i64::from(date & 0x1F));
    if date == 0 || !(1..=12).contains(&month) || day == 0 {
        return Timestamp::default();
    }
    let (h, min, s2) = (i64::from(time >> 11), i64::from((time >> 5) & 0x3F), i64::from(time & 0x1F));
    let tenths = i64::from(tenths.min(199));
    let secs = days_from_civil(year, month, day) * 86_400 + h * 3600 + min * 60 + s2 * 2 + tenths / 100;
    Timestamp { secs, nanos: ((tenths % 100) * 10_000_000) as u32 }
}

/// One live entry of a folder, with its display name and the byte offset
/// of its short entry in the volume (its node id).
#[derive(Debug, Clone)]
pub struct Entry {
    pub offset: u64,
    pub name: String,
    pub short: ShortEntry,
}

/// Long-name parts seen so far, waiting for their short entry.
struct Pending {
    checksum: u8,
    next_ord: u8,
    units: Vec<u16>,
}

/// Parses folder bytes chunk by chunk (each chunk contiguous in the volume,
/// at `offset`), keeping long-name state across chunks.
#[derive(Default)]
pub struct Parser {
    pending: Option<Pending>,
    ended: bool,
    pub entries: Vec<Entry>,
    pub label: Option<[u8; 11]>,
}

impl Parser {
    pub fn ended(&self) -> bool {
        self.ended
    }

    pub fn feed(&mut self, offset: u64, chunk: &[u8]) {
        for (i, b) in chunk.chunks_exact(ENTRY_LEN).enumerate() {
            if self.ended {
                return;
            }
            self.entry(offset + (i * ENTRY_LEN) as u64, b);
        }
    }

    fn entry(&mut self, offset: u64, b: &[u8]) {
        if b[0] == END_OF_DIR {
            self.ended = true;
            return;
        }
        if b[0] == DELETED {
            self.pending = None;
            return;
        }
        if b[11] & ATTR_LONG_NAME_MASK == ATTR_LONG_NAME {
            self.long_part(b);
            return;
        }
        let short = ShortEntry::parse(b);
        let pending = self.pending.take();
        if short.attr & ATTR_VOLUME_ID != 0 {
            self.label.get_or_insert(short.name);
            return;
        }
        if short.is_dot() {
            return;
        }
        let long =
            pending.filter(|p| p.next_ord == 0 && p.checksum == short_name_checksum(&short.name)).and_then(|p| {
                let end = p.units.iter().position(|&u| u == 0).unwrap_or(p.units.len());
                let name = String::from_utf16_lossy(&p.units[..end]);
                (!name.is_empty()).then_some(name)
            });
        let name = long.unwrap_or_else(|| short.short_name());
        if !name.is_empty() {
            self.entries.push(Entry { offset, name, short });
        }
    }

    fn long_part(&mut self, b: &[u8]) {
        let ord = b[0];
        let seq = ord & 0x1F;
        let checksum = b[13];
        if ord & LAST_LONG_ENTRY != 0 {
            self.pending = (1..=MAX_LONG_ENTRIES).contains(&seq).then(|| Pending {
                checksum,
                next_ord: seq,
                units: vec![0xFFFF; usize::from(seq) * CHARS_PER_LONG_ENTRY],
            });
        }
        let Some(p) = self.pending.as_mut() else { return };
        if seq == 0 || seq != p.next_ord || checksum != p.checksum {
            self.pending = None;
            return;
        }
        let base = usize::from(seq - 1) * CHARS_PER_LONG_ENTRY;
        for (k, &o) in LFN_CHAR_OFFSETS.iter().enumerate() {
            p.units[base + k] = u16_at(b, o);
        }
        p.next_ord = seq - 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Long-name entries for `name` in on-disk order (last part first),
    /// built from the specification's layout with std's UTF-16 encoder.
    fn long_entries(name: &str, short: &[u8; 11]) -> Vec<[u8; 32]> {
        let mut units: Vec<u16> = name.encode_utf16().collect();
        // A name that does not fill its last part ends in 0x0000, then 0xFFFF.
        let padded = units.len().div_ceil(13) * 13;
        if padded != units.len() {
            units.push(0);
            units.resize(padded, 0xFFFF);
        }
        // Checksum per section 7.2, written out as the spec does.
        let mut sum: u8 = 0;
        for &c in short {
            sum = (if sum & 1 != 0 { 0x80u8 } else { 0 }).wrapping_add(sum >> 1).wrapping_add(c);
        }
        let parts = units.len() / 13;
        (0..parts)
            .rev()
            .map(|k| {
                let mut e = [0u8; 32];
                e[0] = (k as u8 + 1) | if k + 1 == parts { 0x40 } else { 0 };
                e[11] = 0x0F;
                e[13] = sum;
                for (i, &o) in LFN_CHAR_OFFSETS.iter().enumerate() {
                    e[o..o + 2].copy_from_slice(&units[k * 13 + i].to_le_bytes());
                }
                e
            })
            .collect()
    }

    fn short_entry(name: &[u8; 11], nt: u8) -> [u8; 32] {
        let mut e = [0u8; 32];
        e[..11].copy_from_slice(name);
        e[11] = 0x20;
        e[12] = nt;
        e
    }

    fn parse(entries: &[[u8; 32]]) -> Vec<String> {
        let mut p = Parser::default();
        p.feed(0, &entries.concat());
        p.entries.into_iter().map(|e| e.name).collect()
    }

    #[test]
    fn long_names_beyond_the_basic_plane_and_fallbacks() {
        let name = "Folder 📁 with a long name — ok.txt";
        let short = *b"FOLDER~1TXT";
        let mut entries = long_entries(name, &short);
        entries.push(short_entry(&short, 0));
        // NT lower-case flags on a plain 8.3 entry.
        entries.push(short_entry(b"README  MD ", 0x08 | 0x10));
        entries.push(short_entry(b"MAKEFILE   ", 0x08));
        // A deleted entry and its orphaned long parts.
        let mut gone = long_entries("deleted file name", b"DELETE~1TXT");
        gone.push(short_entry(b"DELETE~1TXT", 0));
        gone.last_mut().unwrap()[0] = DELETED;
        entries.extend(gone);
        // Long parts out of sequence: the short name is used.
        let mut broken = long_entries("a name spanning two entries", b"ANAMES~1   ");
        broken.swap(0, 1);
        broken.push(short_entry(b"ANAMES~1   ", 0));
        entries.extend(broken);
        entries.push([0u8; 32]);
        entries.push(short_entry(b"AFTEREND   ", 0));
        assert_eq!(parse(&entries), vec![name, "readme.md", "makefile", "ANAMES~1"]);
    }

    #[test]
    fn dates_match_the_calendar() {
        // 2024-02-29 13:45:58, 1.5 s of creation tenths.
        let date = ((2024 - 1980) << 9) | (2 << 5) | 29;
        let time = (13 << 11) | (45 << 5) | 29;
        let t = fat_time(date, time, 150);
        // 2024-02-29T13:45:58Z is 1709214358 (`date -u -d ... +%s`).
        assert_eq!((t.secs, t.nanos), (1_709_214_358 + 1, 500_000_000));
        assert_eq!(fat_time(0, 0, 0), Timestamp::default());
    }
}
