//! The volume group a metadata text describes: its PVs (by UUID, with where
//! their extents start), its LVs and their segments. Only what reading
//! needs is kept; every number is checked before it is used for offsets.

use super::consts::{MAX_LVS, MAX_PVS, MAX_SEGMENTS, MAX_STRIPES, META_SECTOR, TEXT_CONTENTS, TEXT_VERSION};
use super::text::{Section, Value};
use super::{LvmError, uuid_key};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VgMeta {
    pub name: String,
    /// The VG UUID without hyphens.
    pub id: String,
    /// Bumped by every metadata change: the highest valid copy is current.
    pub seqno: u64,
    /// Extent size in bytes.
    pub extent_size: u64,
    pub pvs: Vec<PvMeta>,
    pub lvs: Vec<LvMeta>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PvMeta {
    /// The PV's name in this text ("pv0"), which segments refer to.
    pub key: String,
    /// The PV UUID without hyphens.
    pub id: String,
    /// Where the first extent starts, in bytes from the PV start.
    pub pe_start: u64,
    pub pe_count: u64,
    /// Flagged MISSING by LVM2 itself.
    pub missing: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LvMeta {
    pub name: String,
    pub visible: bool,
    pub segments: Vec<SegMeta>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SegMeta {
    pub start_extent: u64,
    pub extent_count: u64,
    pub kind: SegKind,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SegKind {
    /// Linear (one stripe) or striped: `stripes` as (PV key, first extent on it).
    Striped { stripe_size: u64, stripes: Vec<(String, u64)> },
    /// Any other segment type, by its name, with the LVs it names as its
    /// origin, COW store or pool (so a snapshot can be told from its origin).
    Other { type_name: String, origin: Option<String>, cow_store: Option<String>, merging: bool },
}

impl LvMeta {
    /// Size in extents (the segments are contiguous; checked when parsed).
    pub fn extents(&self) -> u64 {
        self.segments.last().map_or(0, |s| s.start_extent + s.extent_count)
    }
}

fn corrupt(what: String) -> LvmError {
    LvmError::corrupt(0, format!("metadata: {what}"))
}

fn uint(s: &Section, key: &str, ctx: &str) -> Result<u64, LvmError> {
    let v = s.int(key).ok_or_else(|| corrupt(format!("{ctx} has no number {key}")))?;
    u64::try_from(v).map_err(|_| corrupt(format!("{ctx}: {key} = {v}")))
}

fn has_flag(s: &Section, key: &str, flag: &str) -> bool {
    s.list(key).is_some_and(|l| l.iter().any(|v| matches!(v, Value::Str(x) if x == flag)))
}

impl VgMeta {
    /// The VG of a parsed metadata text (one top-level section, plus the
    /// `contents` and `version` lines).
    pub fn from_text(root: &Section) -> Result<VgMeta, LvmError> {
        if root.str("contents") != Some(TEXT_CONTENTS) {
            return Err(corrupt(format!("contents is {:?}, not {TEXT_CONTENTS:?}", root.str("contents"))));
        }
        if root.int("version") != Some(TEXT_VERSION) {
            return Err(LvmError::unsupported(0, format!("metadata text version {:?}", root.int("version"))));
        }
        let mut vgs = root.sections();
        let (name, vg) = vgs.next().ok_or_else(|| corrupt("no volume group section".into()))?;
        if vgs.next().is_some() {
            return Err(corrupt("more than one volume group section".into()));
        }
        let ctx = format!("VG {name}");
        let id = uuid_key(vg.str("id").ok_or_else(|| corrupt(format!("{ctx} has no id")))?);
        let seqno = uint(vg, "seqno", &ctx)?;
        let extent_sectors = uint(vg, "extent_size", &ctx)?;
        let extent_size = extent_sectors
            .checked_mul(META_SECTOR)
            .filter(|&e| e > 0)
            .ok_or_else(|| corrupt(format!("{ctx}: extent_size = {extent_sectors}")))?;
        let pvs = match vg.section("physical_volumes") {
            Some(s) => pvs(s, &ctx)?,
            None => Vec::new(),
        };
        let lvs = match vg.section("logical_volumes") {
            Some(s) => lvs(s, &ctx)?,
            None => Vec::new(),
        };
        Ok(VgMeta { name: name.to_string(), id, seqno, extent_size, pvs, lvs })
    }

    pub fn pv(&self, key: &str) -> Option<(usize, &PvMeta)> {
        self.pvs.iter().enumerate().find(|(_, p)| p.key == key)
    }
}

fn pvs(s: &Section, ctx: &str) -> Result<Vec<PvMeta>, LvmError> {
    let mut out = Vec::new();
    for (key, pv) in s.sections() {
        if out.len() == MAX_PVS {
            return Err(LvmError::unsupported(0, format!("{ctx} has more than {MAX_PVS} PVs")));
        }
        let c = format!("{ctx} PV {key}");
        let id = uuid_key(pv.str("id").ok_or_else(|| corrupt(format!("{c} has no id")))?);
        let pe_start = uint(pv, "pe_start", &c)?
            .checked_mul(META_SECTOR)
            .ok_or_else(|| corrupt(format!("{c}: pe_start too large")))?;
        let pe_count = uint(pv, "pe_count", &c)?;
        let missing = has_flag(pv, "flags", "MISSING") || has_flag(pv, "status", "MISSING");
        out.push(PvMeta { key: key.to_string(), id, pe_start, pe_count, missing });
    }
    Ok(out)
}

fn lvs(s: &Section, ctx: &str) -> Result<Vec<LvMeta>, LvmError> {
    let mut out = Vec::new();
    for (name, lv) in s.sections() {
        if out.len() == MAX_LVS {
            return Err(LvmError::unsupported(0, format!("{ctx} has more than {MAX_LVS} LVs")));
        }
        let c = format!("{ctx} LV {name}");
        let mut segments: Vec<SegMeta> = Vec::new();
        for (_, seg) in lv.sections() {
            if segments.len() == MAX_SEGMENTS {
                return Err(LvmError::unsupported(0, format!("{c} has more than {MAX_SEGMENTS} segments")));
            }
            let s = segment(seg, &c)?;
            // Segments must tile the LV from extent 0, in order.
            let next = segments.last().map_or(Some(0), |p| p.start_extent.checked_add(p.extent_count));
            if Some(s.start_extent) != next {
                return Err(corrupt(format!("{c}: a segment starts at extent {} instead of {next:?}", s.start_extent)));
            }
            s.start_extent
                .checked_add(s.extent_count)
                .ok_or_else(|| corrupt(format!("{c}: extent count overflows")))?;
            segments.push(s);
        }
        let visible = has_flag(lv, "status", "VISIBLE");
        out.push(LvMeta { name: name.to_string(), visible, segments });
    }
    Ok(out)
}

fn segment(seg: &Section, ctx: &str) -> Result<SegMeta, LvmError> {
    let start_extent = uint(seg, "start_extent", ctx)?;
    let extent_count = uint(seg, "extent_count", ctx)?;
    let type_name = seg.str("type").ok_or_else(|| corrupt(format!("{ctx}: a segment has no type")))?;
    let kind = if type_name == "striped" {
        let list = seg.list("stripes").ok_or_else(|| corrupt(format!("{ctx}: a striped segment has no stripes")))?;
        let count = uint(seg, "stripe_count", ctx)?;
        if list.len() % 2 != 0 || (list.len() / 2) as u64 != count || count == 0 {
            return Err(corrupt(format!("{ctx}: stripe_count {count} with {} stripe entries", list.len())));
        }
        if list.len() / 2 > MAX_STRIPES {
            return Err(LvmError::unsupported(0, format!("{ctx}: more than {MAX_STRIPES} stripes")));
        }
        let mut stripes = Vec::with_capacity(list.len() / 2);
        for pair in list.chunks(2) {
            match pair {
                [Value::Str(pv), Value::Int(pe)] if *pe >= 0 => stripes.push((pv.clone(), *pe as u64)),
                _ => return Err(corrupt(format!("{ctx}: bad stripe entry {pair:?}"))),
            }
        }
        // One stripe needs no stripe size; several do.
        let stripe_size = if count > 1 { uint(seg, "stripe_size", ctx)? } else { 0 };
        let stripe_size = stripe_size
            .checked_mul(META_SECTOR)
            .ok_or_else(|| corrupt(format!("{ctx}: stripe_size = {stripe_size}")))?;
        SegKind::Striped { stripe_size, stripes }
    } else {
        SegKind::Other {
            type_name: type_name.to_string(),
            origin: seg.str("origin").map(str::to_string),
            // A snapshot being merged back names its store `merging_store`.
            cow_store: seg.str("cow_store").or(seg.str("merging_store")).map(str::to_string),
            merging: seg.str("merging_store").is_some(),
        }
    };
    Ok(SegMeta { start_extent, extent_count, kind })
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::volume::lvm::text::parse;

    /// A two-PV VG: `lin` linear over two segments, `str` striped on both
    /// PVs, `pool` a thin pool.
    pub const SAMPLE: &str = r#"
vg0 {
    id = "AAAAAA-AAAA-AAAA-AAAA-AAAA-AAAA-AAAAAA"
    seqno = 7
    extent_size = 8
    physical_volumes {
        pv0 { id = "PV0PV0-PV0P-V0PV-0PV0-PV0P-V0PV-0PV0PV" pe_start = 8 pe_count = 100 }
        pv1 { id = "PV1PV1-PV1P-V1PV-1PV1-PV1P-V1PV-1PV1PV" pe_start = 16 pe_count = 100 }
    }
    logical_volumes {
        lin {
            status = ["READ", "WRITE", "VISIBLE"]
            segment1 { start_extent = 0 extent_count = 2 type = "striped" stripe_count = 1 stripes = ["pv0", 10] }
            segment2 { start_extent = 2 extent_count = 1 type = "striped" stripe_count = 1 stripes = ["pv1", 0] }
        }
        str {
            status = ["READ", "WRITE", "VISIBLE"]
            segment1 { start_extent = 0 extent_count = 4 type = "striped" stripe_count = 2 stripe_size = 2 stripes = ["pv0", 20, "pv1", 20] }
        }
        pool {
            status = ["READ", "WRITE", "VISIBLE"]
            segment1 { start_extent = 0 extent_count = 4 type = "thin-pool" }
        }
    }
}
contents = "Text Format Volume Group"
version = 1
"#;

    #[test]
    fn sample_vg() {
        let vg = VgMeta::from_text(&parse(SAMPLE.as_bytes()).unwrap()).unwrap();
        assert_eq!((vg.name.as_str(), vg.seqno, vg.extent_size), ("vg0", 7, 4096));
        assert_eq!(vg.id, "A".repeat(32));
        assert_eq!(vg.pvs[1].pe_start, 16 * 512);
        assert_eq!(vg.lvs.len(), 3);
        assert_eq!(vg.lvs[0].extents(), 3);
        let SegKind::Striped { stripe_size, stripes } = &vg.lvs[1].segments[0].kind else { panic!() };
        assert_eq!((*stripe_size, stripes.len()), (1024, 2));
        assert!(matches!(&vg.lvs[2].segments[0].kind, SegKind::Other { type_name, .. } if type_name == "thin-pool"));
    }

    #[test]
    fn gaps_and_bad_stripes_are_corrupt() {
        for (from, to) in [
            ("start_extent = 2 extent_count = 1", "start_extent = 3 extent_count = 1"),
            ("stripe_count = 2 stripe_size", "stripe_count = 3 stripe_size"),
            ("[\"pv0\", 10]", "[\"pv0\", -1]"),
            ("extent_size = 8", "extent_size = 0"),
            ("version = 1", "version = 2"),
        ] {
            let t = SAMPLE.replacen(from, to, 1);
            assert!(VgMeta::from_text(&parse(t.as_bytes()).unwrap()).is_err(), "{to}");
        }
    }
}
