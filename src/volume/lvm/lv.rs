//! A linear or striped LV as a [`ReadAt`]: its segments, each mapped onto
//! one area per stripe of its PVs the way the kernel's dm-linear and
//! dm-stripe targets map them (chunk `c` of a segment goes to stripe
//! `c % n`, row `c / n`). Allocation status and zero-copy extents pass
//! through to the PV underneath.

use std::io;
use std::sync::Arc;

use super::LvmError;
use super::metadata::{LvMeta, SegKind, VgMeta};
use crate::block::{Alloc, Extent, ReadAt, Run, check_range, whole_run};

/// One stripe's area: bytes from `offset` of a PV.
struct Stripe {
    pv: Arc<dyn ReadAt>,
    offset: u64,
}

/// `len` bytes of the LV from `start`, striped over `stripes` in `chunk`-byte
/// chunks (a linear segment is one stripe whose chunk is the whole segment).
struct Seg {
    start: u64,
    len: u64,
    chunk: u64,
    stripes: Vec<Stripe>,
}

/// The bytes of one LV.
pub struct LvReader {
    size: u64,
    segs: Vec<Seg>,
}

fn corrupt(lv: &str, what: String) -> LvmError {
    LvmError::corrupt(0, format!("LV {lv}: {what}"))
}

impl LvReader {
    /// Maps `lv`, whose segments must all be striped, onto `pvs` (the PVs of
    /// `vg.pvs` in order, each present). Every area must lie inside its PV's
    /// extents and inside the PV as found.
    pub fn new(vg: &VgMeta, lv: &LvMeta, pvs: &[Arc<dyn ReadAt>]) -> Result<LvReader, LvmError> {
        let mut segs = Vec::with_capacity(lv.segments.len());
        let mut start = 0u64;
        for seg in &lv.segments {
            let SegKind::Striped { stripe_size, stripes } = &seg.kind else {
                return Err(LvmError::unsupported(0, format!("LV {}: segment type", lv.name)));
            };
            let n = stripes.len() as u64;
            if seg.extent_count == 0 || n == 0 || seg.extent_count % n != 0 {
                return Err(corrupt(&lv.name, format!("{} extents over {n} stripes", seg.extent_count)));
            }
            let per = seg.extent_count / n;
            let too_big = || corrupt(&lv.name, "segment size overflows".into());
            let area_len = per.checked_mul(vg.extent_size).ok_or_else(too_big)?;
            let len = seg.extent_count.checked_mul(vg.extent_size).ok_or_else(too_big)?;
            let chunk = if n == 1 { area_len } else { *stripe_size };
            if chunk == 0 || area_len % chunk != 0 {
                return Err(corrupt(&lv.name, format!("stripe size {chunk} for {area_len}-byte stripes")));
            }
            let mut areas = Vec::with_capacity(stripes.len());
            for (key, first) in stripes {
                let (i, pv) = vg.pv(key).ok_or_else(|| corrupt(&lv.name, format!("no PV {key:?} in the VG")))?;
                let disk = pvs.get(i).ok_or_else(|| corrupt(&lv.name, format!("PV {key} not given")))?;
                let end_pe = first.checked_add(per).filter(|&e| e <= pv.pe_count);
                let offset = first.checked_mul(vg.extent_size).and_then(|o| o.checked_add(pv.pe_start));
                let end = offset.and_then(|o| o.checked_add(area_len)).filter(|&e| e <= disk.size());
                let (Some(_), Some(offset), Some(_)) = (end_pe, offset, end) else {
                    return Err(corrupt(
                        &lv.name,
                        format!("extents {first}+{per} of PV {key} ({} extents, {} bytes)", pv.pe_count, disk.size()),
                    ));
                };
                areas.push(Stripe { pv: disk.clone(), offset });
            }
            segs.push(Seg { start, len, chunk, stripes: areas });
            start = start.checked_add(len).ok_or_else(too_big)?;
        }
        Ok(LvReader { size: start, segs })
    }

    /// Where LV byte `offset` lies: its PV, the PV offset, and how many bytes
    /// from there are contiguous on that PV.
    fn map(&self, offset: u64) -> io::Result<(&Arc<dyn ReadAt>, u64, u64)> {
        let i = self.segs.partition_point(|s| s.start + s.len <= offset);
        let Some(s) = self.segs.get(i) else {
            return Err(io::Error::new(io::ErrorKind::UnexpectedEof, format!("offset {offset} past the LV end")));
        };
        // OK: s.start <= offset < s.start + s.len, chunk > 0 and the area
        // checks in `new` keep row * chunk + within inside the stripe area.
        let rel = offset - s.start;
        let (chunk_no, within) = (rel / s.chunk, rel % s.chunk);
        let n = s.stripes.len() as u64;
        let st = &s.stripes[(chunk_no % n) as usize];
        let at = st.offset + (chunk_no / n) * s.chunk + within;
        Ok((&st.pv, at, (s.chunk - within).min(s.len - rel)))
    }
}

impl ReadAt for LvReader {
    fn read_exact_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        check_range(offset, buf.len(), self.size)?;
        let mut done = 0usize;
        while done < buf.len() {
            let pos = offset + done as u64;
            let (pv, at, contig) = self.map(pos)?;
            let n = usize::try_from(contig).map_or(buf.len() - done, |c| c.min(buf.len() - done));
            pv.read_exact_at(at, &mut buf[done..done + n])?;
            done += n;
        }
        Ok(())
    }

    fn size(&self) -> u64 {
        self.size
    }

    fn locate(&self, offset: u64, len: u64) -> Option<Extent> {
        if offset >= self.size || len == 0 {
            return None;
        }
        let (pv, at, contig) = self.map(offset).ok()?;
        pv.locate(at, len.min(contig))
    }

    fn status(&self, offset: u64, len: u64) -> io::Result<Run> {
        let run = whole_run(offset, len, self.size, Alloc::Data)?;
        let (pv, at, contig) = self.map(offset)?;
        let inner = pv.status(at, run.len.min(contig))?;
        Ok(Run { offset, len: inner.len.min(run.len).min(contig), alloc: inner.alloc })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::block::MemImage;
    use crate::volume::lvm::metadata::tests::SAMPLE;
    use crate::volume::lvm::text::parse;

    /// Two PVs whose every 512-byte sector holds (pv, sector) in its first bytes.
    fn pvs() -> Vec<Arc<dyn ReadAt>> {
        (0..2u8)
            .map(|p| {
                let mut d = vec![0u8; 600 * 4096];
                for (i, s) in d.chunks_mut(512).enumerate() {
                    s[0] = p;
                    s[1..5].copy_from_slice(&(i as u32).to_le_bytes());
                }
                Arc::new(MemImage(d)) as Arc<dyn ReadAt>
            })
            .collect()
    }

    fn at(r: &LvReader, off: u64) -> (u8, u32) {
        let mut b = [0u8; 5];
        r.read_exact_at(off, &mut b).unwrap();
        (b[0], u32::from_le_bytes([b[1], b[2], b[3], b[4]]))
    }

    #[test]
    fn linear_and_striped_maps() {
        let vg = VgMeta::from_text(&parse(SAMPLE.as_bytes()).unwrap()).unwrap();
        let pvs = pvs();
        // lin: extents 10-11 of pv0 (pe_start 8 sectors, 8 sectors an extent), then extent 0 of pv1 (pe_start 16).
        let lin = LvReader::new(&vg, &vg.lvs[0], &pvs).unwrap();
        assert_eq!(lin.size(), 3 * 4096);
        assert_eq!(at(&lin, 0), (0, 8 + 80));
        assert_eq!(at(&lin, 8192 - 512), (0, 8 + 80 + 15));
        assert_eq!(at(&lin, 8192), (1, 16));
        // str: 1 KiB chunks alternating pv0 (from extent 20) and pv1 (from extent 20).
        let st = LvReader::new(&vg, &vg.lvs[1], &pvs).unwrap();
        assert_eq!(at(&st, 0), (0, 8 + 160));
        assert_eq!(at(&st, 1024), (1, 16 + 160));
        assert_eq!(at(&st, 2048), (0, 8 + 162));
        assert_eq!(at(&st, 3072 + 512), (1, 16 + 163));
        // One read across chunks equals the pieces.
        let mut whole = vec![0u8; st.size() as usize];
        st.read_exact_at(0, &mut whole).unwrap();
        for off in (0..st.size()).step_by(512) {
            let (p, s) = at(&st, off);
            assert_eq!(whole[off as usize], p);
            assert_eq!(&whole[off as usize + 1..off as usize + 5], &s.to_le_bytes());
        }
        assert!(st.read_exact_at(st.size() - 1, &mut [0u8; 2]).is_err());
        // Status runs stop at chunk ends.
        assert_eq!(st.status(100, 1 << 20).unwrap().len, 924);
        assert!(LvReader::new(&vg, &vg.lvs[2], &pvs).is_err());
    }

    /// A PV whose second half is unallocated.
    struct HalfHoles(MemImage);
    impl ReadAt for HalfHoles {
        fn read_exact_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
            self.0.read_exact_at(offset, buf)
        }
        fn size(&self) -> u64 {
            self.0.size()
        }
        fn status(&self, offset: u64, len: u64) -> io::Result<Run> {
            let half = self.size() / 2;
            let run = whole_run(offset, len, self.size(), Alloc::Data)?;
            Ok(if offset < half {
                Run { len: run.len.min(half - offset), ..run }
            } else {
                Run { alloc: Alloc::Unallocated, ..run }
            })
        }
    }

    #[test]
    fn status_and_locate_pass_through() {
        let vg = VgMeta::from_text(&parse(SAMPLE.replace("\"pv1\", 0]", "\"pv0\", 99]").as_bytes()).unwrap()).unwrap();
        // pv0 of 200 extents + pe_start: extents 10-11 are data, 99 is past the middle.
        let pv: Arc<dyn ReadAt> = Arc::new(HalfHoles(MemImage(vec![7u8; 4096 + 200 * 4096 - 4096 * 2])));
        let lin = LvReader::new(&vg, &vg.lvs[0], &[pv.clone(), pv]).unwrap();
        assert_eq!(lin.status(0, lin.size()).unwrap(), Run { offset: 0, len: 8192, alloc: Alloc::Data });
        assert_eq!(lin.status(8192, 4096).unwrap().alloc, Alloc::Unallocated);
        assert_eq!(lin.status(100, 10).unwrap().len, 10);
        assert!(lin.status(lin.size(), 1).is_err());
        // Zero-copy extents come from the PV's file, clipped to the segment.
        let mut f = tempfile::tempfile().unwrap();
        let data: Vec<u8> = (0..600 * 4096u32).map(|i| (i / 512) as u8).collect();
        std::io::Write::write_all(&mut f, &data).unwrap();
        let raw: Arc<dyn ReadAt> = Arc::new(crate::block::RawFile::from_file(f).unwrap());
        let lin = LvReader::new(&vg, &vg.lvs[0], &[raw.clone(), raw]).unwrap();
        let e = lin.locate(4096, 1 << 20).expect("an extent");
        assert_eq!(e.len(), 4096, "clipped at the end of the first segment");
        let mut b = vec![0u8; 4096];
        lin.read_exact_at(4096, &mut b).unwrap();
        assert_eq!(e.bytes(), &b[..]);
    }

    #[test]
    fn areas_past_the_pv_are_corrupt() {
        let vg = VgMeta::from_text(&parse(SAMPLE.replace("\"pv1\", 0]", "\"pv1\", 99]").as_bytes()).unwrap()).unwrap();
        assert!(LvReader::new(&vg, &vg.lvs[0], &pvs()).is_ok());
        let vg = VgMeta::from_text(&parse(SAMPLE.replace("\"pv1\", 0]", "\"pv1\", 100]").as_bytes()).unwrap()).unwrap();
        assert!(LvReader::new(&vg, &vg.lvs[0], &pvs()).is_err());
        let one: Arc<dyn ReadAt> = Arc::new(MemImage(vec![0; 4096]));
        let small = vec![one.clone(), one];
        let vg = VgMeta::from_text(&parse(SAMPLE.as_bytes()).unwrap()).unwrap();
        assert!(LvReader::new(&vg, &vg.lvs[0], &small).is_err());
    }
}
