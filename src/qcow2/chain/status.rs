//! Allocation status of a chain ([`crate::block::ReadAt::status`]): which guest runs are
//! data, zero clusters, or unallocated in every layer.

use super::{Chain, REGION_CLUSTERS, Resolved};
use crate::block::{Alloc, Run, whole_run};
use crate::qcow2::consts::L1E_OFFSET_MASK;
use crate::qcow2::error::{Error, Result};
use crate::qcow2::l2::Mapping;
use std::sync::Arc;

impl Chain {
    /// See [`crate::block::ReadAt::status`]: the run of one allocation state from `off`.
    /// A cluster no layer maps is `Unallocated`, a zero cluster `Zero`,
    /// data and compressed clusters `Data`. Whole L1 ranges that no layer
    /// maps are skipped at once, so an empty petabyte is not walked
    /// cluster by cluster.
    pub(super) fn status_run(&self, off: u64, len: u64) -> Result<Run> {
        let run = whole_run(off, len, self.size, Alloc::Data).map_err(Error::io(off))?;
        let (end, cb, cs) = (run.end(), self.cluster.bits(), self.cluster.bytes());
        let region_bytes = REGION_CLUSTERS * cs;
        let mut regions = Lookup { chain: self, cached: None };
        let mut pos = off;
        let mut kind = None;
        while pos < end {
            if (pos == off || pos.is_multiple_of(region_bytes))
                && kind != Some(Alloc::Data)
                && let Some(until) = self.unmapped_until(pos)
            {
                let until = (until & !(cs - 1)).min(end);
                if until > pos {
                    if kind.is_some_and(|k| k != Alloc::Unallocated) {
                        break;
                    }
                    kind = Some(Alloc::Unallocated);
                    pos = until;
                    continue;
                }
            }
            let c = pos >> cb;
            let to_cluster_end = ((c + 1) << cb).min(end) - pos;
            let (alloc, n) = match regions.get(c)? {
                Resolved::Zero => (Alloc::Zero, to_cluster_end),
                Resolved::Unallocated => (Alloc::Unallocated, to_cluster_end),
                Resolved::Data { .. } | Resolved::Compressed { .. } => (Alloc::Data, to_cluster_end),
                Resolved::Mixed => self.walk_status(pos, to_cluster_end)?,
            };
            match kind {
                None => kind = Some(alloc),
                Some(k) if k != alloc => break,
                _ => {}
            }
            pos += n;
        }
        Ok(Run { offset: off, len: pos - off, alloc: kind.unwrap_or(Alloc::Unallocated) })
    }

    /// The allocation state at `off` by walking the layers (subclusters, a
    /// backing file of another cluster size or ending mid-cluster), and for
    /// how many bytes (1 to `max`) it holds.
    fn walk_status(&self, off: u64, max: u64) -> Result<(Alloc, u64)> {
        let mut n = max;
        for layer in &self.layers {
            let lsize = layer.virtual_size();
            if off >= lsize {
                break;
            }
            n = n.min(lsize - off);
            let (m, len) = layer.map(off)?;
            n = n.min(len);
            match m {
                Mapping::Unallocated => continue,
                Mapping::Zero => return Ok((Alloc::Zero, n)),
                Mapping::Data(_) | Mapping::Compressed { .. } => return Ok((Alloc::Data, n)),
            }
        }
        Ok((Alloc::Unallocated, n))
    }
}

/// Resolved clusters by index, with the last region used at hand (one
/// lock of the region cache per region, not per cluster).
pub(super) struct Lookup<'a> {
    pub(super) chain: &'a Chain,
    pub(super) cached: Option<(u64, Arc<[Resolved]>)>,
}

impl Lookup<'_> {
    pub(super) fn get(&mut self, c: u64) -> Result<Resolved> {
        let region = c / REGION_CLUSTERS;
        let r = match &self.cached {
            Some((i, r)) if *i == region => r.clone(),
            _ => {
                let r = self.chain.region(region)?;
                self.cached = Some((region, r.clone()));
                r
            }
        };
        Ok(r[(c % REGION_CLUSTERS) as usize])
    }
}

impl Chain {
    /// When every layer that `pos` reaches has an empty L1 entry for it (or
    /// ends before it), the guest bytes read as zeros up to the returned
    /// offset: the nearest end of those layers' L1 ranges.
    pub(super) fn unmapped_until(&self, pos: u64) -> Option<u64> {
        let mut until = self.size;
        for layer in &self.layers {
            if pos >= layer.virtual_size() {
                return Some(until);
            }
            let img = layer.image()?;
            let h = &img.header;
            let span = h.l2_entries() << h.cluster.bits();
            let idx = pos / span;
            let entry = *img.l1().get(usize::try_from(idx).ok()?)?;
            if entry & L1E_OFFSET_MASK != 0 {
                return None;
            }
            until = until.min((idx + 1).saturating_mul(span));
        }
        Some(until)
    }
}
