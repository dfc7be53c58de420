//! NTFS metadata as extended attributes, under the names ntfs-3g uses, so
//! tools that know ntfs-3g work unchanged: named data streams as
//! `user.<stream>` (ntfs-3g's `streams_interface=xattr`), the security
//! descriptor as `system.ntfs_acl`, the DOS attributes as
//! `system.ntfs_attrib_be` (big-endian u32) and the creation time as
//! `system.ntfs_crtime` (the raw little-endian NT time).

use super::layout::*;
use super::record::{Body, RawAttr};
use super::{NtfsFs, secure};
use crate::volume::fs::{FsError, MAX_XATTR_LIST, MAX_XATTR_NAME, MAX_XATTR_VALUE, NodeId, Xattr};

pub const NAME_ACL: &[u8] = b"system.ntfs_acl";
pub const NAME_ATTRIB_BE: &[u8] = b"system.ntfs_attrib_be";
pub const NAME_CRTIME: &[u8] = b"system.ntfs_crtime";
const STREAM_PREFIX: &str = "user.";

impl NtfsFs {
    pub(super) fn read_xattrs(&self, frn: NodeId) -> Result<Vec<Xattr>, FsError> {
        let (header, attrs) = self.load_attrs(frn)?;
        let si = attrs
            .iter()
            .find_map(|a| match &a.body {
                Body::Resident(v) if a.ty == AT_STANDARD_INFORMATION && v.len() >= SI_MIN_LEN => Some(v.as_slice()),
                _ => None,
            })
            .ok_or_else(|| FsError::corrupt(frn, format!("record {frn} without $STANDARD_INFORMATION")))?;
        let mut out = Vec::new();
        if let Some(sd) = self.security_descriptor(frn, si, &attrs)? {
            out.push(Xattr { name: NAME_ACL.to_vec(), value: sd });
        }
        let mut attrib =
            u32::from_le_bytes(si[SI_FILE_ATTRIBUTES..SI_FILE_ATTRIBUTES + 4].try_into().unwrap_or([0; 4]));
        // $STANDARD_INFORMATION leaves the folder bit out; Windows and
        // ntfs-3g report it from the record's flags.
        if header.flags & REC_FLAG_DIRECTORY != 0 {
            attrib |= FILE_ATTRIBUTE_DIRECTORY;
        }
        out.push(Xattr { name: NAME_ATTRIB_BE.to_vec(), value: attrib.to_be_bytes().to_vec() });
        out.push(Xattr { name: NAME_CRTIME.to_vec(), value: si[SI_CREATION..SI_CREATION + 8].to_vec() });
        self.streams(frn, &attrs, &mut out)?;
        let total: usize = out.iter().map(|x| x.name.len() + 1).sum();
        if total > MAX_XATTR_LIST {
            return Err(FsError::corrupt(frn, format!("{total} bytes of stream names (over {MAX_XATTR_LIST})")));
        }
        Ok(out)
    }

    /// The named $DATA streams, each as `user.<name>`. Streams too large for
    /// an xattr value (Linux's limit) are left out, as ntfs-3g's `getxattr`
    /// cannot return them either.
    fn streams(&self, frn: NodeId, attrs: &[RawAttr], out: &mut Vec<Xattr>) -> Result<(), FsError> {
        let mut seen: Vec<&[u16]> = Vec::new();
        for a in attrs.iter().filter(|a| a.ty == AT_DATA && !a.name.is_empty()) {
            // A stream split over extension records has one attribute per
            // extent; the first (lowest VCN) stands for it.
            if seen.contains(&a.name.as_slice()) {
                continue;
            }
            seen.push(&a.name);
            let name = format!("{STREAM_PREFIX}{}", String::from_utf16_lossy(&a.name));
            if name.len() > MAX_XATTR_NAME {
                return Err(FsError::corrupt(frn, format!("stream name of {} bytes", name.len())));
            }
            let size = match &a.body {
                Body::Resident(v) => v.len() as u64,
                Body::NonResident(nr) => nr.data_size,
            };
            if size > MAX_XATTR_VALUE as u64 {
                continue;
            }
            let extents: Vec<&RawAttr> = attrs.iter().filter(|b| b.ty == AT_DATA && b.name == a.name).collect();
            let value = if extents.len() == 1 {
                self.small_value(a, MAX_XATTR_VALUE as u64, frn)?
            } else {
                self.split_value(&extents, frn)?
            };
            out.push(Xattr { name: name.into_bytes(), value });
        }
        Ok(())
    }

    /// A small stream whose extents sit in several records.
    fn split_value(&self, parts: &[&RawAttr], frn: NodeId) -> Result<Vec<u8>, FsError> {
        let mut extents = Vec::with_capacity(parts.len());
        for a in parts {
            match &a.body {
                Body::NonResident(nr) if a.flags & ATTR_FLAG_COMPRESSION_MASK == 0 => extents.push(nr.clone()),
                Body::NonResident(_) => return Err(FsError::Unsupported("compressed named stream".into())),
                Body::Resident(_) => return Err(FsError::corrupt(frn, "resident and non-resident stream parts")),
            }
        }
        let s = super::data::Stream::from_extents(extents, self.cluster, frn, false)?;
        let len = usize::try_from(s.size).ok().filter(|&l| l <= MAX_XATTR_VALUE);
        let len = len.ok_or_else(|| FsError::corrupt(frn, format!("stream of {} bytes", s.size)))?;
        let mut v = vec![0u8; len];
        s.read(&*self.vol, &self.units, u64::MAX, 0, &mut v)?;
        Ok(v)
    }

    /// The file's security descriptor: its own $SECURITY_DESCRIPTOR
    /// attribute (NTFS 1.x) or, from NTFS 3.0, the entry of $Secure:$SDS
    /// that the security id in $STANDARD_INFORMATION names.
    fn security_descriptor(&self, frn: NodeId, si: &[u8], attrs: &[RawAttr]) -> Result<Option<Vec<u8>>, FsError> {
        if let Some(a) = attrs.iter().find(|a| a.ty == AT_SECURITY_DESCRIPTOR) {
            return Ok(Some(self.small_value(a, secure::MAX_DESCRIPTOR, frn)?));
        }
        let Some(id) = si.get(SI_SECURITY_ID..SI_SECURITY_ID + 4) else { return Ok(None) };
        let id = u32::from_le_bytes(id.try_into().unwrap_or([0; 4]));
        if id == 0 {
            return Ok(None);
        }
        let index = self.secure.get_or_init(|| secure::Index::load(self).map_err(|e| e.to_string()));
        match index {
            Ok(index) => index.descriptor(self, id),
            Err(e) => Err(FsError::corrupt(FRN_SECURE, format!("$Secure: {e}"))),
        }
    }
}
