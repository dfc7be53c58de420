//! Volume groups assembled from the PVs found on the disks of one backup.
//!
//! A VG is known by its UUID. Its metadata is the copy with the highest
//! seqno among every valid copy on its PVs (each PV may carry several
//! metadata areas, and a PV without one is still found by its label). Its
//! PVs are matched by PV UUID. When the same PV UUID shows on two disks
//! (disks cloned from one template), each disk holds its own instance of
//! the VG, assembled from that disk alone.

use std::collections::BTreeSet;
use std::sync::Arc;

use super::label::{Label, read_label};
use super::lv::LvReader;
use super::mda::read_metadata;
use super::metadata::{LvMeta, SegKind, VgMeta};
use super::{LvmError, text, uuid_text};
use crate::block::ReadAt;
use crate::volume::table;

/// A PV found on a disk, with the VG metadata its areas hold.
pub struct PvFound {
    /// The disk's index in its backup.
    pub disk: u32,
    /// The partition number (`table::WHOLE_DISK` for a whole-disk PV).
    pub partition: u32,
    pub pv: Arc<dyn ReadAt>,
    pub label: Label,
    /// The metadata of each valid copy.
    pub copies: Vec<VgMeta>,
    /// Why the other copies were not used.
    pub errors: Vec<String>,
}

/// A VG ready to list.
pub struct Vg {
    pub name: String,
    /// The VG UUID without hyphens.
    pub id: String,
    pub seqno: u64,
    /// The disks holding its PVs that were found.
    pub disks: BTreeSet<u32>,
    /// Its visible LVs, in metadata order.
    pub lvs: Vec<Lv>,
}

pub struct Lv {
    pub name: String,
    pub size: u64,
    /// The disks its extents lie on (for an LV that maps no PV directly,
    /// such as a thin volume, the disks of its VG); empty when some of
    /// them lie on PVs that were not found.
    pub disks: BTreeSet<u32>,
    pub data: LvData,
}

pub enum LvData {
    Readable(Arc<LvReader>),
    /// Why it cannot be read, for the listing.
    Unreadable(String),
}

/// Every VG found on the disks, and what went wrong on the way.
pub struct Scan {
    pub vgs: Vec<Vg>,
    pub notes: Vec<String>,
}

/// Reads the label and metadata of a PV. `Ok(None)`: not a PV.
pub fn scan_pv(disk: u32, partition: u32, pv: Arc<dyn ReadAt>) -> Result<Option<PvFound>, LvmError> {
    let Some(label) = read_label(pv.as_ref())? else { return Ok(None) };
    let mut copies = Vec::new();
    let mut errors = Vec::new();
    for copy in read_metadata(pv.as_ref(), &label) {
        let parsed = copy.and_then(|c| c.map(|c| text::parse(&c.text).and_then(|t| VgMeta::from_text(&t))).transpose());
        match parsed {
            Ok(Some(m)) => copies.push(m),
            Ok(None) => {}
            Err(e) => errors.push(e.to_string()),
        }
    }
    Ok(Some(PvFound { disk, partition, pv, label, copies, errors }))
}

/// A sentence for the listing of a partition or disk that is a PV.
pub fn describe_pv(window: Arc<dyn ReadAt>) -> String {
    match scan_pv(0, 0, window) {
        Ok(Some(f)) => match f.copies.iter().max_by_key(|c| c.seqno) {
            Some(m) => format!(
                "This partition holds LVM physical volume {} of volume group {} (UUID {}); \
                 its logical volumes are listed as 'LV {}-…' folders.",
                uuid_text(&f.label.pv_uuid),
                m.name,
                uuid_text(&m.id),
                m.name
            ),
            None if f.errors.is_empty() => format!(
                "This partition holds LVM physical volume {} with no metadata of its own; \
                 its volume group's logical volumes are listed where the group is found.",
                uuid_text(&f.label.pv_uuid)
            ),
            None => format!(
                "This partition holds LVM physical volume {} whose metadata cannot be read: {}.",
                uuid_text(&f.label.pv_uuid),
                f.errors.join("; ")
            ),
        },
        Ok(None) => "This partition holds an LVM physical volume without a readable label.".to_string(),
        Err(e) => format!("This partition holds an LVM physical volume whose label cannot be read: {e}."),
    }
}

/// Finds the PVs on the partitions (or whole disks) of `disks`, given as
/// (disk index, disk), and assembles their VGs.
pub fn scan(disks: &[(u32, Arc<dyn ReadAt>)]) -> Scan {
    let mut found = Vec::new();
    let mut notes = Vec::new();
    for (index, disk) in disks {
        let Ok(t) = table::read_table(disk) else { continue };
        for p in &t.partitions {
            let Ok(w) = p.window(disk) else { continue };
            match scan_pv(*index, p.number, Arc::new(w)) {
                Ok(Some(f)) => {
                    notes.extend(f.errors.iter().map(|e| format!("disk {index} partition {}: {e}", p.number)));
                    found.push(f);
                }
                Ok(None) => {}
                Err(e) => notes.push(format!("disk {index} partition {}: {e}", p.number)),
            }
        }
    }
    Scan { vgs: assemble(&found), notes }
}

fn assemble(found: &[PvFound]) -> Vec<Vg> {
    let mut ids: Vec<&str> = Vec::new();
    for c in found.iter().flat_map(|f| &f.copies) {
        if !ids.contains(&c.id.as_str()) {
            ids.push(&c.id);
        }
    }
    let mut out = Vec::new();
    for id in ids {
        let Some(current) = newest(found.iter(), id) else { continue };
        let members: Vec<&PvFound> =
            found.iter().filter(|f| current.pvs.iter().any(|p| p.id == f.label.pv_uuid)).collect();
        let cloned = members
            .iter()
            .enumerate()
            .any(|(i, a)| members[..i].iter().any(|b| b.label.pv_uuid == a.label.pv_uuid && b.disk != a.disk));
        if !cloned {
            out.push(build(current, &members));
            continue;
        }
        let disks: BTreeSet<u32> = members.iter().map(|f| f.disk).collect();
        for d in disks {
            let on_disk: Vec<&PvFound> = members.iter().copied().filter(|f| f.disk == d).collect();
            let meta = newest(on_disk.iter().copied(), id).unwrap_or(current);
            out.push(build(meta, &on_disk));
        }
    }
    out
}

/// The copy of VG `id` with the highest seqno among `pvs`.
fn newest<'a>(pvs: impl Iterator<Item = &'a PvFound>, id: &str) -> Option<&'a VgMeta> {
    pvs.flat_map(|f| &f.copies).filter(|c| c.id == id).max_by_key(|c| c.seqno)
}

fn build(meta: &VgMeta, members: &[&PvFound]) -> Vg {
    let pvs: Vec<Option<&PvFound>> =
        meta.pvs.iter().map(|p| members.iter().copied().find(|f| f.label.pv_uuid == p.id && !p.missing)).collect();
    let disks: BTreeSet<u32> = members.iter().map(|f| f.disk).collect();
    let lvs = meta
        .lvs
        .iter()
        // A snapshot's COW store is stored hidden; LVM2 shows it under
        // its own name as the snapshot, and so do we.
        .filter(|lv| lv.visible || snapshot_origin(meta, &lv.name).is_some())
        .map(|lv| {
            let mut lv_disks = BTreeSet::new();
            let (why, all_found) = why_unreadable(meta, lv, &pvs, &mut lv_disks);
            // An LV that maps no PV itself (thin, RAID) sits where its VG does.
            if lv_disks.is_empty() && all_found {
                lv_disks = disks.clone();
            }
            let data = match why {
                Some(why) => LvData::Unreadable(why),
                None => {
                    let readers: Vec<Arc<dyn ReadAt>> =
                        pvs.iter().map(|p| p.map_or_else(empty, |f| f.pv.clone())).collect();
                    match LvReader::new(meta, lv, &readers) {
                        Ok(r) => LvData::Readable(Arc::new(r)),
                        Err(e) => LvData::Unreadable(format!("This logical volume cannot be read: {e}.")),
                    }
                }
            };
            Lv { name: lv.name.clone(), size: lv.extents().saturating_mul(meta.extent_size), disks: lv_disks, data }
        })
        .collect();
    Vg { name: meta.name.clone(), id: meta.id.clone(), seqno: meta.seqno, disks, lvs }
}

/// A stand-in for a PV that no segment of a readable LV uses.
fn empty() -> Arc<dyn ReadAt> {
    Arc::new(crate::block::MemImage(Vec::new()))
}

/// Why `lv` cannot be read (`None` when it is linear or striped over PVs
/// that are all present), and whether every PV it maps was found; collects
/// the disks of those found, leaving `disks` empty when one is missing.
fn why_unreadable(
    meta: &VgMeta,
    lv: &LvMeta,
    pvs: &[Option<&PvFound>],
    disks: &mut BTreeSet<u32>,
) -> (Option<String>, bool) {
    let mut missing = Vec::new();
    let mut other = None;
    for seg in &lv.segments {
        match &seg.kind {
            SegKind::Other { type_name, .. } => other = other.or(Some(type_name)),
            SegKind::Striped { stripes, .. } => {
                for (key, _) in stripes {
                    match meta.pv(key).map(|(i, p)| (pvs[i], p)) {
                        Some((Some(f), _)) => {
                            disks.insert(f.disk);
                        }
                        Some((None, p)) => missing.push(format!("{} ({key})", uuid_text(&p.id))),
                        None => missing.push(key.clone()),
                    }
                }
            }
        }
    }
    if !missing.is_empty() {
        disks.clear();
    }
    let why = if merging_into(meta, &lv.name) {
        "A snapshot is being merged back into this logical volume; until the merge ends its contents \
         exist only through device-mapper, so it cannot be read."
            .to_string()
    } else if let Some(origin) = snapshot_origin(meta, &lv.name) {
        format!(
            "This logical volume is a snapshot of LV {origin}: reading a snapshot (its origin seen through \
             the copy-on-write store) is not supported yet. The origin LV itself is listed and readable."
        )
    } else if let Some(t) = other {
        segment_reason(t)
    } else if !missing.is_empty() {
        missing.dedup();
        format!(
            "This logical volume lies partly on LVM physical volume(s) {} that are not among the disks of this \
             backup (or are marked missing), so it cannot be read.",
            missing.join(", ")
        )
    } else {
        return (None, true);
    };
    (Some(why), missing.is_empty())
}

/// Whether a snapshot of LV `name` is being merged into it.
fn merging_into(meta: &VgMeta, name: &str) -> bool {
    meta.lvs.iter().flat_map(|l| &l.segments).any(|s| {
        matches!(&s.kind, SegKind::Other { type_name, origin: Some(o), merging: true, .. }
            if type_name == "snapshot" && o == name)
    })
}

/// The LV whose snapshot `name` is (its COW store), if any.
fn snapshot_origin<'a>(meta: &'a VgMeta, name: &str) -> Option<&'a str> {
    meta.lvs.iter().flat_map(|l| &l.segments).find_map(|s| match &s.kind {
        SegKind::Other { type_name, origin: Some(o), cow_store: Some(c), .. }
            if type_name == "snapshot" && c == name =>
        {
            Some(o.as_str())
        }
        _ => None,
    })
}

/// Why an LV with a segment of `type_name` cannot be read.
fn segment_reason(type_name: &str) -> String {
    let what = match type_name {
        "thin-pool" => "a thin pool: its blocks belong to the thin volumes in it, \
                        and reading thin volumes (the pool's block maps) is not supported yet"
            .to_string(),
        "thin" => "a thin volume: reading thin-provisioned volumes (the pool's block maps) is not supported yet".into(),
        "mirror" => "a mirrored volume (the old 'mirror' type): reading it is not supported yet".into(),
        t if t.starts_with("raid") => format!("a RAID volume ({t}): reading LVM RAID volumes is not supported yet"),
        "cache" | "cache-pool" | "writecache" => {
            format!("a cached volume ({type_name}): its data may be split between the cache and the origin")
        }
        "snapshot" => "a snapshot: reading snapshots is not supported yet".into(),
        "vdo" | "vdo-pool" => format!("a VDO volume ({type_name}): deduplicated and compressed, not supported"),
        t => format!("of segment type {t:?}, which backchain cannot read"),
    };
    format!("This logical volume is {what}.")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::block::MemImage;
    use crate::volume::lvm::label::{Area, tests::label_sector};
    use crate::volume::lvm::mda::tests::put_mda;
    use crate::volume::lvm::metadata::tests::SAMPLE;

    const PV0: &[u8; 32] = b"PV0PV0PV0PV0PV0PV0PV0PV0PV0PV0PV";
    const DISK: usize = 160 << 10;
    const MDA2: u64 = (DISK - 8192) as u64;

    /// A whole-disk PV (pv0 of SAMPLE, with `lin` moved onto pv0 alone) with
    /// two metadata areas: seqno 7 at the start, `second` at the end.
    fn disk(second: &str) -> Vec<u8> {
        let mut d = vec![0u8; DISK];
        let mdas = [Area { offset: 1024, size: 3072 }, Area { offset: MDA2, size: 8192 }];
        d[512..1024].copy_from_slice(&label_sector(1, PV0, DISK as u64, 4096, &mdas));
        put_mda(&mut d, 1024, 3072, 512, SAMPLE.replace("\"pv1\", 0]", "\"pv0\", 30]").as_bytes());
        put_mda(&mut d, MDA2, 8192, 1000, second.as_bytes());
        d[4096 + 30 * 4096] = 0xAB;
        d
    }

    fn one(d: Vec<u8>) -> Vg {
        let s = scan(&[(3, Arc::new(MemImage(d)) as Arc<dyn ReadAt>)]);
        assert_eq!(s.vgs.len(), 1, "{:?}", s.notes);
        s.vgs.into_iter().next().unwrap()
    }

    #[test]
    fn the_newest_valid_copy_wins() {
        let newer = SAMPLE.replace("seqno = 7", "seqno = 8").replace("pool {", "pool2 {");
        let vg = one(disk(&newer));
        assert_eq!((vg.name.as_str(), vg.seqno, vg.disks.iter().copied().collect::<Vec<_>>()), ("vg0", 8, vec![3]));
        assert!(vg.lvs.iter().any(|l| l.name == "pool2"));
        // Damage the newer text: its CRC fails and seqno 7 is used, readable.
        let mut d = disk(&newer);
        d[MDA2 as usize + 1010] ^= 0x20;
        let vg = one(d);
        assert_eq!(vg.seqno, 7);
        let lin = vg.lvs.iter().find(|l| l.name == "lin").unwrap();
        let LvData::Readable(r) = &lin.data else { panic!("lin unreadable") };
        let mut b = [0u8; 1];
        r.read_exact_at(8192, &mut b).unwrap();
        assert_eq!(b[0], 0xAB, "the third extent of lin is extent 30 of pv0");
        assert_eq!(lin.disks.iter().copied().collect::<Vec<_>>(), [3]);
        // str has a stripe on pv1, which is not there; pool is a thin pool.
        let why = |n: &str| match &vg.lvs.iter().find(|l| l.name == n).unwrap().data {
            LvData::Unreadable(w) => w.clone(),
            LvData::Readable(_) => panic!("{n} readable"),
        };
        assert!(why("str").contains("not among the disks"), "{}", why("str"));
        assert!(vg.lvs.iter().find(|l| l.name == "str").unwrap().disks.is_empty());
        assert!(why("pool").contains("thin pool"), "{}", why("pool"));
    }

    #[test]
    fn snapshots_and_merges_say_why() {
        let reasons = |store: &str| {
            let snap = format!(
                "logical_volumes {{\n snapshot0 {{ status = [\"READ\"] segment1 {{ start_extent = 0 extent_count = 4 \
                 type = \"snapshot\" origin = \"lin\" {store} = \"str\" }} }}"
            );
            let text = SAMPLE.replace("logical_volumes {", &snap);
            let meta = VgMeta::from_text(&text::parse(text.as_bytes()).unwrap()).unwrap();
            let vg = build(&meta, &[]);
            let names: Vec<&str> = vg.lvs.iter().map(|l| l.name.as_str()).collect();
            assert_eq!(names, ["lin", "str", "pool"], "the hidden snapshot0 is not listed");
            vg.lvs
                .iter()
                .map(|l| match &l.data {
                    LvData::Unreadable(w) => w.clone(),
                    LvData::Readable(_) => panic!("{} readable", l.name),
                })
                .collect::<Vec<_>>()
        };
        let r = reasons("cow_store");
        assert!(r[0].contains("not among the disks"), "{}", r[0]);
        assert!(r[1].contains("snapshot of LV lin"), "{}", r[1]);
        let r = reasons("merging_store");
        assert!(r[0].contains("being merged"), "{}", r[0]);
        assert!(r[1].contains("snapshot of LV lin"), "{}", r[1]);
    }

    #[test]
    fn mutations_never_panic() {
        let base = disk(&SAMPLE.replace("seqno = 7", "seqno = 8"));
        let text = SAMPLE.as_bytes().to_vec();
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        for _ in 0..3000 {
            let (mut d, mut t) = (base.clone(), text.clone());
            for _ in 0..3 {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                let hot = [512 + 16, 512 + 72, 1024 + 40, 1024 + 512, MDA2 as usize + 1000];
                let pos = hot[(x % 5) as usize] + ((x >> 8) % 600) as usize;
                d[pos % DISK] = (x >> 32) as u8;
                let tp = ((x >> 20) as usize) % t.len();
                t[tp] = (x >> 40) as u8;
            }
            crate::volume::lvm::fuzz_pv(&d);
            crate::volume::lvm::fuzz_metadata(&t);
        }
    }
}
