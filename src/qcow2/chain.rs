//! A QCOW2 image with its whole backing chain, read as one disk.
//!
//! Lookups do not get slower with depth: the first read of a region resolves
//! each of its guest clusters through the layers once, to "zeros" or "these
//! bytes of layer i at host offset h", and caches that answer; every later
//! read of the region is one cache hit and one `pread`, at any depth.

use super::consts::*;
use super::error::{Error, Result};
use super::header::ClusterSize;
use super::image::Image;
use super::l2::Mapping;
use crate::block::{Extent, Lru, ReadAt, Run, check_range};
use std::collections::HashSet;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

/// Guest clusters resolved together and cached as one unit.
const REGION_CLUSTERS: u64 = 512;
/// Resolved regions kept: 1024 regions of 512 clusters cover 32 GiB of guest
/// space at 64 KiB clusters in about 12 MiB.
const REGION_CACHE: usize = 1024;
/// L2 cache bytes shared by all layers of a chain (each keeps at least two
/// tables).
const CHAIN_L2_BUDGET: u64 = 32 << 20;
mod status;

use status::Lookup;

/// Decompressed clusters kept, by bytes, so small reads inside one compressed
/// cluster do not decompress it again and again.
const DECOMPRESSED_CACHE_BYTES: u64 = 16 << 20;

/// How to open a chain.
#[derive(Debug, Clone)]
pub struct OpenOptions {
    /// When set, every image of the chain must resolve (symlinks followed)
    /// to a path inside this folder.
    pub confine_to: Option<PathBuf>,
    /// The deepest chain accepted.
    pub max_depth: usize,
}

impl Default for OpenOptions {
    fn default() -> Self {
        Self { confine_to: None, max_depth: MAX_CHAIN_DEPTH }
    }
}

/// Image formats in a chain.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    Qcow2,
    Raw,
}

impl Format {
    pub fn name(self) -> &'static str {
        match self {
            Format::Qcow2 => "qcow2",
            Format::Raw => "raw",
        }
    }
}

enum LayerData {
    Qcow2(Box<Image>),
    Raw(Arc<dyn ReadAt>),
}

/// One image of a chain.
pub struct Layer {
    pub path: Option<PathBuf>,
    data: LayerData,
}

impl Layer {
    pub fn format(&self) -> Format {
        match self.data {
            LayerData::Qcow2(_) => Format::Qcow2,
            LayerData::Raw(_) => Format::Raw,
        }
    }

    /// The QCOW2 image of this layer, unless it is raw.
    pub fn image(&self) -> Option<&Image> {
        match &self.data {
            LayerData::Qcow2(i) => Some(i),
            LayerData::Raw(_) => None,
        }
    }

    /// The file the layer's bytes live in.
    pub fn file(&self) -> &Arc<dyn ReadAt> {
        match &self.data {
            LayerData::Qcow2(i) => i.file(),
            LayerData::Raw(f) => f,
        }
    }

    pub fn virtual_size(&self) -> u64 {
        match &self.data {
            LayerData::Qcow2(i) => i.header.size,
            LayerData::Raw(f) => f.size(),
        }
    }

    fn map(&self, off: u64) -> Result<(Mapping, u64)> {
        match &self.data {
            LayerData::Qcow2(i) => i.map(off),
            LayerData::Raw(f) => Ok((Mapping::Data(off), f.size() - off)),
        }
    }
}

/// What one cluster of the top image's grid resolves to through the chain.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Resolved {
    /// A zero cluster in the first layer that maps it.
    Zero,
    /// No layer maps it (or the layer that would ends before it): zeros,
    /// stored nowhere.
    Unallocated,
    /// `host` is where this guest cluster's first byte is in layer `layer`.
    Data {
        layer: u32,
        host: u64,
    },
    Compressed {
        layer: u32,
        host: u64,
        len: u64,
    },
    /// Not uniform across the cluster (subclusters, a smaller backing
    /// cluster size, a backing file ending inside it): walk the layers.
    Mixed,
}

/// Where the bytes of one run come from, as the layer walk finds them.
enum Origin {
    Zero,
    Data { layer: usize, host: u64 },
    Compressed { layer: usize, host: u64, len: u64, skip: u64 },
}

/// (layer index, host offset) of a compressed cluster.
type DecompressedKey = (usize, u64);

/// Opens retried when a backing file vanished during the open (a merge).
const OPEN_RETRIES: u32 = 3;

pub struct Chain {
    layers: Vec<Layer>,
    size: u64,
    cluster: ClusterSize,
    resolved: Mutex<Lru<u64, Arc<[Resolved]>>>,
    decompressed: Mutex<Lru<DecompressedKey, Arc<[u8]>>>,
}

fn zero_fill_read(file: &dyn ReadAt, host: u64, buf: &mut [u8]) -> io::Result<()> {
    // The last data cluster of an image may be cut short by the end of the
    // file; like QEMU, read the part that exists and zeros for the rest.
    let n = crate::block::read_at_most(file, host, buf)?;
    buf[n..].fill(0);
    Ok(())
}

impl Chain {
    /// Opens the QCOW2 image at `path` and its backing chain.
    pub fn open(path: &Path, opts: &OpenOptions) -> Result<Self> {
        // A merge (qcow2::merge) may change a chain while we open it: point
        // an image at a new backing file and remove the old one between our
        // reading the header and opening the backing file, or grow an image
        // and link new tables into its L1 between our taking its size and
        // reading the L1. Opening again sees the new state.
        let mut tries = 0;
        loop {
            match Self::open_once(path, opts) {
                Err(Error::BackingNotFound { .. }) | Ok(None) if tries < OPEN_RETRIES => tries += 1,
                Err(Error::Open { source, .. }) if source.kind() == io::ErrorKind::NotFound && tries < OPEN_RETRIES => {
                    tries += 1
                }
                Ok(None) => {
                    return Err(Error::Unsupported(format!("{} kept changing while it was opened", path.display())));
                }
                Ok(Some(c)) => return Ok(c),
                Err(e) => return Err(e),
            }
        }
    }

    /// The chain, or `None` when an image grew while it was being opened.
    fn open_once(path: &Path, opts: &OpenOptions) -> Result<Option<Self>> {
        let root = match &opts.confine_to {
            Some(r) => Some(r.canonicalize().map_err(|source| Error::Open { path: r.clone(), source })?),
            None => None,
        };
        let top = path.canonicalize().map_err(|source| Error::Open { path: path.to_path_buf(), source })?;
        if let Some(root) = &root
            && !top.starts_with(root)
        {
            return Err(Error::ImageOutsideRoot(top, root.clone()));
        }
        let mut layers = Vec::new();
        let mut seen = HashSet::new();
        // Backing names are resolved, as QEMU does, against the folder of the
        // image as it was named (a symlink's own folder, not its target's);
        // the canonical path is what is opened, confined and loop-checked.
        let named = std::path::absolute(path).map_err(|source| Error::Open { path: path.to_path_buf(), source })?;
        let mut next = Some((named, top, Some(Format::Qcow2)));
        while let Some((named, path, format)) = next.take() {
            if layers.len() >= opts.max_depth {
                return Err(Error::ChainTooDeep(opts.max_depth));
            }
            if !seen.insert(path.clone()) {
                return Err(Error::BackingLoop(path));
            }
            let file: Arc<dyn ReadAt> = Arc::new(super::open_file(&path)?);
            let format = match format {
                Some(f) => f,
                None => super::probe(&*file)?,
            };
            let data = match format {
                Format::Raw => LayerData::Raw(file),
                Format::Qcow2 => {
                    let image = Image::open(file).map_err(|e| match e {
                        Error::NotQcow2 if !layers.is_empty() => Error::Unsupported(format!(
                            "backing file {} is not QCOW2 as its parent says",
                            path.display()
                        )),
                        e => e,
                    })?;
                    if std::fs::metadata(&path).is_ok_and(|m| m.is_file() && m.len() != image.file().size()) {
                        return Ok(None);
                    }
                    if let Some(name) = &image.header.backing_file {
                        let (bnamed, bpath) = resolve_backing(&named, name, root.as_deref())?;
                        let bformat = match image.header.backing_format.as_deref() {
                            Some("qcow2") => Some(Format::Qcow2),
                            Some("raw") => Some(Format::Raw),
                            None => None,
                            Some(other) => {
                                return Err(Error::Unsupported(format!(
                                    "backing format {other:?} of {}",
                                    path.display()
                                )));
                            }
                        };
                        next = Some((bnamed, bpath, bformat));
                    }
                    LayerData::Qcow2(Box::new(image))
                }
            };
            layers.push(Layer { path: Some(path), data });
        }
        Self::from_layers(layers).map(Some)
    }

    /// A chain of one QCOW2 image held by any reader (fuzzing, tests). An
    /// image that names a backing file is refused: there is no folder to
    /// resolve it in.
    pub fn from_reader(file: Arc<dyn ReadAt>) -> Result<Self> {
        let image = Image::open(file)?;
        if let Some(name) = &image.header.backing_file {
            return Err(Error::Unsupported(format!("backing file {name:?} cannot be opened from memory")));
        }
        Self::from_layers(vec![Layer { path: None, data: LayerData::Qcow2(Box::new(image)) }])
    }

    fn from_layers(layers: Vec<Layer>) -> Result<Self> {
        // Lower layers' L2 tables are only read while a region is resolved,
        // so the layers share one budget: a 1000-deep chain stays bounded.
        let per_layer = CHAIN_L2_BUDGET / layers.len() as u64;
        for l in &layers {
            if let Some(img) = l.image() {
                img.limit_l2_cache(per_layer);
            }
        }
        // OK to unwrap/index: the top layer is always QCOW2.
        let top = layers[0].image().unwrap();
        let cluster = top.header.cluster;
        let size = top.header.size;
        let dc = (DECOMPRESSED_CACHE_BYTES / cluster.bytes()).max(2) as usize;
        Ok(Self {
            layers,
            size,
            cluster,
            resolved: Mutex::new(Lru::new(REGION_CACHE)),
            decompressed: Mutex::new(Lru::new(dc)),
        })
    }

    pub fn layers(&self) -> &[Layer] {
        &self.layers
    }

    pub fn virtual_size(&self) -> u64 {
        self.size
    }

    pub fn cluster_size(&self) -> ClusterSize {
        self.cluster
    }

    fn region(&self, region: u64) -> Result<Arc<[Resolved]>> {
        if let Some(r) = crate::util::lock(&self.resolved).get(&region) {
            return Ok(r);
        }
        let first = region * REGION_CLUSTERS;
        let clusters = self.size.div_ceil(self.cluster.bytes());
        let last = (first + REGION_CLUSTERS).min(clusters);
        // A cluster that does not resolve (corrupt entry, table past the end
        // of the file) becomes Mixed: reads that touch it walk the layers and
        // report its error, while its neighbours stay readable.
        let r: Arc<[Resolved]> = (first..last).map(|c| self.resolve(c).unwrap_or(Resolved::Mixed)).collect();
        crate::util::lock(&self.resolved).insert(region, r.clone());
        Ok(r)
    }

    fn resolve(&self, cluster: u64) -> Result<Resolved> {
        let off = cluster << self.cluster.bits();
        let want = self.cluster.bytes().min(self.size - off);
        for (i, layer) in self.layers.iter().enumerate() {
            let lsize = layer.virtual_size();
            if off >= lsize {
                return Ok(Resolved::Unallocated);
            }
            if off + want > lsize {
                return Ok(Resolved::Mixed);
            }
            let (m, len) = layer.map(off)?;
            if len < want {
                return Ok(Resolved::Mixed);
            }
            let layer_idx = i as u32;
            return Ok(match m {
                Mapping::Unallocated => continue,
                Mapping::Zero => Resolved::Zero,
                Mapping::Data(host) => Resolved::Data { layer: layer_idx, host },
                Mapping::Compressed { host, len } => match layer.image() {
                    Some(img) if img.header.cluster == self.cluster => {
                        Resolved::Compressed { layer: layer_idx, host, len }
                    }
                    _ => Resolved::Mixed,
                },
            });
        }
        Ok(Resolved::Unallocated)
    }

    /// Walks the layers for the bytes at `off`; returns the source and how
    /// many bytes (at most `max`) it covers.
    fn walk(&self, off: u64, max: u64) -> Result<(Origin, u64)> {
        let mut n = max;
        for (i, layer) in self.layers.iter().enumerate() {
            let lsize = layer.virtual_size();
            if off >= lsize {
                return Ok((Origin::Zero, n));
            }
            n = n.min(lsize - off);
            let (m, len) = layer.map(off)?;
            n = n.min(len);
            return Ok(match m {
                Mapping::Unallocated => continue,
                Mapping::Zero => (Origin::Zero, n),
                Mapping::Data(host) => (Origin::Data { layer: i, host }, n),
                Mapping::Compressed { host, len } => {
                    // OK to unwrap: only QCOW2 layers map to compressed data.
                    let mask = layer.image().unwrap().header.cluster.mask();
                    (Origin::Compressed { layer: i, host, len, skip: off & mask }, n)
                }
            });
        }
        Ok((Origin::Zero, n))
    }

    fn read_walk(&self, off: u64, buf: &mut [u8]) -> Result<()> {
        let mut pos = 0usize;
        while pos < buf.len() {
            let g = off + pos as u64;
            let (src, n) = self.walk(g, (buf.len() - pos) as u64)?;
            let n = n as usize;
            let out = &mut buf[pos..pos + n];
            match src {
                Origin::Zero => out.fill(0),
                Origin::Data { layer, host } => {
                    zero_fill_read(&**self.layers[layer].file(), host, out).map_err(Error::io(host))?
                }
                Origin::Compressed { layer, host, len, skip } => {
                    let c = self.decompressed(layer, host, len)?;
                    let skip = skip as usize;
                    out.copy_from_slice(&c[skip..skip + n]);
                }
            }
            pos += n;
        }
        Ok(())
    }

    fn decompressed(&self, layer: usize, host: u64, len: u64) -> Result<Arc<[u8]>> {
        let key = (layer, host);
        if let Some(c) = crate::util::lock(&self.decompressed).get(&key) {
            return Ok(c);
        }
        // OK to unwrap: only QCOW2 layers map to compressed data.
        let img = self.layers[layer].image().unwrap();
        let file = img.file();
        if host >= file.size() {
            return Err(Error::corrupt(host, "compressed cluster lies past the end of the file"));
        }
        // The descriptor's sector count may reach past the end of the file
        // for the last cluster; what is missing is not part of the stream.
        let len = len.min(file.size() - host);
        let mut src = vec![0u8; len as usize];
        file.read_exact_at(host, &mut src).map_err(Error::io(host))?;
        let mut out = vec![0u8; img.header.cluster.usize()];
        super::compress::decompress(img.header.compression, &src, &mut out)
            .map_err(|e| Error::corrupt(host, format!("compressed cluster: {e}")))?;
        let out: Arc<[u8]> = out.into();
        crate::util::lock(&self.decompressed).insert(key, out.clone());
        Ok(out)
    }

    fn read(&self, off: u64, buf: &mut [u8]) -> Result<()> {
        let cb = self.cluster.bits();
        let cs = self.cluster.bytes();
        let mut regions = Lookup { chain: self, cached: None };
        let mut lookup = |c: u64| regions.get(c);
        let mut pos = 0usize;
        while pos < buf.len() {
            let g = off + pos as u64;
            let c = g >> cb;
            let in_c = g & (cs - 1);
            let left = (buf.len() - pos) as u64;
            let n = (cs - in_c).min(left) as usize;
            match lookup(c)? {
                Resolved::Zero | Resolved::Unallocated => {
                    buf[pos..pos + n].fill(0);
                    pos += n;
                }
                Resolved::Data { layer, host } => {
                    // Merge the following clusters while they are contiguous
                    // in the same file, for one large pread.
                    let mut total = n as u64;
                    let mut next = c + 1;
                    while total < left && lookup(next)? == (Resolved::Data { layer, host: host + (next - c) * cs }) {
                        total += cs.min(left - total);
                        next += 1;
                    }
                    let total = total as usize;
                    let file = self.layers[layer as usize].file();
                    zero_fill_read(&**file, host + in_c, &mut buf[pos..pos + total]).map_err(Error::io(host))?;
                    pos += total;
                }
                Resolved::Compressed { layer, host, len } => {
                    let data = self.decompressed(layer as usize, host, len)?;
                    let s = in_c as usize;
                    buf[pos..pos + n].copy_from_slice(&data[s..s + n]);
                    pos += n;
                }
                Resolved::Mixed => {
                    self.read_walk(g, &mut buf[pos..pos + n])?;
                    pos += n;
                }
            }
        }
        Ok(())
    }

    /// See [`ReadAt::locate`]: the bytes from `off` when they lie in a run
    /// of data clusters that is contiguous in one layer's file (the run
    /// stops at the end of the resolution region, callers ask again).
    fn locate_run(&self, off: u64, len: u64) -> Option<Extent> {
        let len = len.min(self.size.checked_sub(off)?);
        let cb = self.cluster.bits();
        let cs = self.cluster.bytes();
        let c = off >> cb;
        let in_c = off & (cs - 1);
        let region = self.region(c / REGION_CLUSTERS).ok()?;
        let at = |cluster: u64| region.get((cluster - c / REGION_CLUSTERS * REGION_CLUSTERS) as usize).copied();
        let Some(Resolved::Data { layer, host }) = at(c) else { return None };
        let mut total = (cs - in_c).min(len);
        let mut next = c + 1;
        while total < len {
            let want = host.checked_add((next - c) << cb).map(|host| Resolved::Data { layer, host });
            if want.is_none() || at(next) != want {
                break;
            }
            total += cs.min(len - total);
            next += 1;
        }
        self.layers.get(layer as usize)?.file().locate(host.checked_add(in_c)?, total)
    }
}

impl ReadAt for Chain {
    fn read_exact_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        check_range(offset, buf.len(), self.size)?;
        self.read(offset, buf).map_err(io::Error::from)
    }
    fn size(&self) -> u64 {
        self.size
    }
    fn locate(&self, offset: u64, len: u64) -> Option<Extent> {
        self.locate_run(offset, len)
    }
    fn status(&self, offset: u64, len: u64) -> io::Result<Run> {
        self.status_run(offset, len).map_err(io::Error::from)
    }
}

/// Resolves a backing file name the way QEMU does for plain file names
/// (relative to the folder of the image that names it), then applies the
/// confinement rule.
/// Returns the path as named (joined to the folder) and as resolved.
fn resolve_backing(image: &Path, name: &str, root: Option<&Path>) -> Result<(PathBuf, PathBuf)> {
    let refuse = |why| Error::BackingNameRefused { name: name.to_string(), image: image.to_path_buf(), why };
    if name.starts_with("json:") {
        return Err(refuse("a json: pseudo-protocol name"));
    }
    if name.contains("://")
        || ["nbd:", "http:", "https:", "ftp:", "ssh:", "rbd:", "iscsi:", "gluster:", "sheepdog:"]
            .iter()
            .any(|p| name.starts_with(p))
    {
        return Err(refuse("a network protocol name"));
    }
    let name_path = Path::new(name);
    let dir = image.parent().unwrap_or(Path::new("/"));
    let joined = if name_path.is_absolute() { name_path.to_path_buf() } else { dir.join(name_path) };
    let resolved = joined.canonicalize().map_err(|source| Error::BackingNotFound {
        name: name.to_string(),
        image: image.to_path_buf(),
        source,
    })?;
    if let Some(root) = root
        && !resolved.starts_with(root)
    {
        return Err(Error::BackingOutsideRoot {
            name: name.to_string(),
            image: image.to_path_buf(),
            resolved,
            root: root.to_path_buf(),
        });
    }
    Ok((joined, resolved))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn data_clusters_are_located_in_the_image_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.qcow2");
        let opts = super::super::WriterOptions {
            cluster: ClusterSize::from_bits(16).unwrap(),
            compression: None,
            backing: None,
        };
        let mut w = super::super::Writer::create(&path, 4 << 20, opts).unwrap();
        let data: Vec<u8> = (0..(1u32 << 20)).map(|i| (i % 251) as u8 + 1).collect();
        w.write_clusters(0, &data).unwrap();
        w.finish().unwrap();
        let chain = Chain::open(&path, &OpenOptions::default()).unwrap();
        let e = chain.locate(100, 1 << 20).expect("located");
        assert_eq!(e.bytes(), &data[100..100 + e.len() as usize]);
        assert!(chain.locate(2 << 20, 10).is_none(), "unallocated clusters read as zeros");
    }
}
