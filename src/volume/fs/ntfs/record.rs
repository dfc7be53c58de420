//! MFT file records: update-sequence fixups, attribute headers and the
//! mapping pairs (run lists) of non-resident attributes.
#![forbid(unsafe_code)]

use super::layout::*;
use crate::volume::fs::FsError;

/// One contiguous piece of a non-resident attribute: `len` clusters starting
/// at virtual cluster `vcn`, stored at logical cluster `lcn` (`None`: sparse).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Run {
    pub vcn: u64,
    pub len: u64,
    pub lcn: Option<u64>,
}

#[derive(Debug, Clone)]
pub struct NonResident {
    pub lowest_vcn: u64,
    pub compression_unit: u8,
    pub data_size: u64,
    pub init_size: u64,
    pub runs: Vec<Run>,
}

#[derive(Debug, Clone)]
pub enum Body {
    Resident(Vec<u8>),
    NonResident(NonResident),
}

/// One attribute of a file record, copied out of the record.
#[derive(Debug, Clone)]
pub struct RawAttr {
    pub ty: u32,
    pub name: Vec<u16>,
    pub flags: u16,
    pub body: Body,
}

fn u16_at(b: &[u8], off: usize) -> Option<u16> {
    b.get(off..off.checked_add(2)?).map(|s| u16::from_le_bytes([s[0], s[1]]))
}

fn u32_at(b: &[u8], off: usize) -> Option<u32> {
    b.get(off..off.checked_add(4)?).map(|s| u32::from_le_bytes([s[0], s[1], s[2], s[3]]))
}

fn u64_at(b: &[u8], off: usize) -> Option<u64> {
    let s = b.get(off..off.checked_add(8)?)?;
    let mut a = [0u8; 8];
    a.copy_from_slice(s);
    Some(u64::from_le_bytes(a))
}

/// Little-endian readers that turn a short buffer into a `Corrupt` error at
/// `base + off` (`base`: the buffer's byte position on the volume).
pub struct Le<'a> {
    pub buf: &'a [u8],
    pub base: u64,
}

impl Le<'_> {
    fn bad(&self, off: usize, what: &str) -> FsError {
        FsError::corrupt(self.base.saturating_add(off as u64), what.to_string())
    }
    pub fn u8(&self, off: usize, what: &str) -> Result<u8, FsError> {
        self.buf.get(off).copied().ok_or_else(|| self.bad(off, what))
    }
    pub fn u16(&self, off: usize, what: &str) -> Result<u16, FsError> {
        u16_at(self.buf, off).ok_or_else(|| self.bad(off, what))
    }
    pub fn u32(&self, off: usize, what: &str) -> Result<u32, FsError> {
        u32_at(self.buf, off).ok_or_else(|| self.bad(off, what))
    }
    pub fn u64(&self, off: usize, what: &str) -> Result<u64, FsError> {
        u64_at(self.buf, off).ok_or_else(|| self.bad(off, what))
    }
    pub fn slice(&self, off: usize, len: usize, what: &str) -> Result<&[u8], FsError> {
        off.checked_add(len).and_then(|end| self.buf.get(off..end)).ok_or_else(|| self.bad(off, what))
    }
}

/// Checks the magic and undoes the update sequence array of a multi-sector
/// record ("FILE" or "INDX") in place. `pos`: the record's volume offset.
pub fn apply_fixups(buf: &mut [u8], magic: &[u8; 4], pos: u64) -> Result<(), FsError> {
    if buf.get(..4) != Some(&magic[..]) {
        return Err(FsError::corrupt(pos, format!("missing {} record magic", String::from_utf8_lossy(magic))));
    }
    let le = Le { buf, base: pos };
    let usa_off = usize::from(le.u16(REC_USA_OFFSET, "update sequence offset")?);
    let usa_count = usize::from(le.u16(REC_USA_COUNT, "update sequence count")?);
    let strides = buf.len() / USA_STRIDE;
    if usa_count == 0 || usa_count - 1 != strides || usa_off % 2 != 0 {
        return Err(FsError::corrupt(
            pos,
            format!("update sequence count {usa_count} for a {} byte record", buf.len()),
        ));
    }
    let usa_end = usa_off + 2 * usa_count;
    if usa_end > buf.len() || usa_end > USA_STRIDE - 2 {
        return Err(FsError::corrupt(pos, "update sequence array out of the record"));
    }
    let usn = [buf[usa_off], buf[usa_off + 1]];
    for i in 0..strides {
        let end = (i + 1) * USA_STRIDE - 2;
        if buf[end..end + 2] != usn {
            return Err(FsError::corrupt(pos + end as u64, "update sequence mismatch (torn write)"));
        }
        let fix = usa_off + 2 * (i + 1);
        let (a, b) = (buf[fix], buf[fix + 1]);
        buf[end] = a;
        buf[end + 1] = b;
    }
    Ok(())
}

/// The parsed header of a file record.
#[derive(Debug, Clone)]
pub struct RecordHeader {
    pub flags: u16,
    pub link_count: u16,
    pub base_frn: u64,
}

/// Parses a fixed-up file record: its header and every attribute in it.
pub fn parse_record(buf: &[u8], pos: u64) -> Result<(RecordHeader, Vec<RawAttr>), FsError> {
    let le = Le { buf, base: pos };
    let header = RecordHeader {
        flags: le.u16(REC_FLAGS, "record flags")?,
        link_count: le.u16(REC_LINK_COUNT, "link count")?,
        base_frn: le.u64(REC_BASE_REFERENCE, "base record reference")? & FRN_MASK,
    };
    let in_use = le.u32(REC_BYTES_IN_USE, "bytes in use")? as usize;
    let end = in_use.min(buf.len());
    let mut off = usize::from(le.u16(REC_ATTRS_OFFSET, "first attribute offset")?);
    let mut attrs = Vec::new();
    // Every attribute is at least 16 bytes long, so this loop ends.
    while off + 4 <= end {
        let ty = le.u32(off + ATTR_TYPE, "attribute type")?;
        if ty == ATTR_END {
            break;
        }
        let len = le.u32(off + ATTR_LENGTH, "attribute length")? as usize;
        if len < 0x10 || off + len > end {
            return Err(le.bad(off, &format!("attribute length {len}")));
        }
        let a = Le { buf: &buf[off..off + len], base: pos + off as u64 };
        attrs.push(parse_attr(&a, ty)?);
        off += len;
    }
    Ok((header, attrs))
}

fn parse_attr(a: &Le<'_>, ty: u32) -> Result<RawAttr, FsError> {
    let non_resident = a.u8(ATTR_NON_RESIDENT, "non-resident flag")? != 0;
    let name_len = usize::from(a.u8(ATTR_NAME_LENGTH, "name length")?);
    let name_off = usize::from(a.u16(ATTR_NAME_OFFSET, "name offset")?);
    let flags = a.u16(ATTR_FLAGS, "attribute flags")?;
    let name = a
        .slice(name_off, name_len * 2, "attribute name")?
        .chunks_exact(2)
        .map(|c| u16::from_le_bytes([c[0], c[1]]))
        .collect();
    let body = if !non_resident {
        let vlen = a.u32(ATTR_RES_VALUE_LENGTH, "value length")? as usize;
        let voff = usize::from(a.u16(ATTR_RES_VALUE_OFFSET, "value offset")?);
        Body::Resident(a.slice(voff, vlen, "resident value")?.to_vec())
    } else {
        if a.buf.len() < ATTR_NR_HEADER_MIN {
            return Err(a.bad(0, "short non-resident attribute"));
        }
        let lowest_vcn = a.u64(ATTR_NR_LOWEST_VCN, "lowest VCN")?;
        let highest_vcn = a.u64(ATTR_NR_HIGHEST_VCN, "highest VCN")?;
        let runs_off = usize::from(a.u16(ATTR_NR_RUNS_OFFSET, "run list offset")?);
        let compression_unit = a.u8(ATTR_NR_COMPRESSION_UNIT, "compression unit")?;
        let data_size = a.u64(ATTR_NR_DATA_SIZE, "data size")?;
        let init_size = a.u64(ATTR_NR_INIT_SIZE, "initialized size")?;
        if runs_off > a.buf.len() {
            return Err(a.bad(ATTR_NR_RUNS_OFFSET, "run list offset"));
        }
        let runs = decode_runs(&a.buf[runs_off..], lowest_vcn, a.base + runs_off as u64)?;
        let end_vcn = runs.last().map_or(lowest_vcn, |r| r.vcn + r.len);
        // An empty attribute has highest VCN -1 (all ones) and no runs.
        if !runs.is_empty() && highest_vcn.checked_add(1) != Some(end_vcn) {
            return Err(a.bad(ATTR_NR_HIGHEST_VCN, "run list does not end at the highest VCN"));
        }
        Body::NonResident(NonResident { lowest_vcn, compression_unit, data_size, init_size, runs })
    };
    Ok(RawAttr { ty, name, flags, body })
}

/// Decodes mapping pairs: a header byte (low nibble: size of the run
/// length, high nibble: size of the signed LCN delta, 0 for a sparse run),
/// then the two little-endian numbers. A zero header ends the list.
pub fn decode_runs(b: &[u8], first_vcn: u64, pos: u64) -> Result<Vec<Run>, FsError> {
    let bad = |off: usize, what: &str| FsError::corrupt(pos + off as u64, format!("run list: {what}"));
    let mut runs = Vec::new();
    let mut vcn = first_vcn;
    let mut lcn: i64 = 0;
    let mut i = 0usize;
    loop {
        let Some(&h) = b.get(i) else {
            return Err(bad(i, "missing end marker"));
        };
        if h == 0 {
            break;
        }
        let (len_size, off_size) = (usize::from(h & 0x0f), usize::from(h >> 4));
        if len_size == 0 || len_size > 8 || off_size > 8 {
            return Err(bad(i, "bad run header"));
        }
        let field = |start: usize, n: usize, signed: bool| -> Option<i64> {
            let s = b.get(start..start + n)?;
            let mut v: u64 = 0;
            for (k, &byte) in s.iter().enumerate() {
                v |= u64::from(byte) << (8 * k);
            }
            if signed && n < 8 && s[n - 1] & 0x80 != 0 {
                v |= !0u64 << (8 * n);
            }
            Some(v as i64)
        };
        let len = field(i + 1, len_size, false).ok_or_else(|| bad(i, "truncated run"))? as u64;
        if len == 0 || len > i64::MAX as u64 {
            return Err(bad(i, "bad run length"));
        }
        let target = if off_size == 0 {
            None
        } else {
            let delta = field(i + 1 + len_size, off_size, true).ok_or_else(|| bad(i, "truncated run"))?;
            lcn = lcn.checked_add(delta).filter(|l| *l >= 0).ok_or_else(|| bad(i, "negative cluster number"))?;
            Some(lcn as u64)
        };
        runs.push(Run { vcn, len, lcn: target });
        vcn = vcn.checked_add(len).ok_or_else(|| bad(i, "VCN overflow"))?;
        i += 1 + len_size + off_size;
    }
    Ok(runs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runs_with_sparse_and_negative_delta() {
        // 0x10 clusters at 0x1000; 8 sparse; 4 clusters at 0x1000 - 0x10.
        let b = [0x21, 0x10, 0x00, 0x10, 0x01, 0x08, 0x11, 0x04, 0xf0, 0x00];
        let runs = decode_runs(&b, 0, 0).unwrap();
        assert_eq!(
            runs,
            vec![
                Run { vcn: 0, len: 0x10, lcn: Some(0x1000) },
                Run { vcn: 0x10, len: 8, lcn: None },
                Run { vcn: 0x18, len: 4, lcn: Some(0xff0) },
            ]
        );
        assert!(decode_runs(&[0x21, 0x10], 0, 0).is_err());
        assert!(decode_runs(&[0x11, 0x01, 0x80, 0x00], 0, 0).is_err());
    }

    #[test]
    fn fixups_restore_stride_ends() {
        let mut rec = vec![0u8; 1024];
        rec[..4].copy_from_slice(b"FILE");
        rec[4..6].copy_from_slice(&0x30u16.to_le_bytes());
        rec[6..8].copy_from_slice(&3u16.to_le_bytes());
        rec[0x30..0x36].copy_from_slice(&[7, 0, 0xaa, 0xbb, 0xcc, 0xdd]);
        rec[510..512].copy_from_slice(&[7, 0]);
        rec[1022..1024].copy_from_slice(&[7, 0]);
        let mut good = rec.clone();
        apply_fixups(&mut good, FILE_MAGIC, 0).unwrap();
        assert_eq!(&good[510..512], &[0xaa, 0xbb]);
        assert_eq!(&good[1022..1024], &[0xcc, 0xdd]);
        rec[1022] = 8;
        assert!(apply_fixups(&mut rec, FILE_MAGIC, 0).is_err());
    }
}
