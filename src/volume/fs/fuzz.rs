//! The walk behind every filesystem's fuzz entry point (`fuzz_open_walk`):
//! open a filesystem from bytes and visit all of it (extended attributes
//! included), with bounded depth, node count and bytes read, so that any
//! hang or panic the fuzzer finds is in the parser and not in the walk.

use std::sync::Arc;

use crate::block::{MemImage, ReadAt};
use crate::volume::fs::{Filesystem, NodeId, NodeKind};

/// An opener of one filesystem type (`ext4::open` and the like).
pub type Open = fn(&Arc<dyn ReadAt>) -> Result<Option<Arc<dyn Filesystem>>, super::FsError>;

/// Deepest folder nesting the walk descends into.
pub const WALK_MAX_DEPTH: usize = 64;
/// Most nodes the walk visits.
pub const WALK_MAX_NODES: usize = 20_000;
/// Most bytes read from one file.
pub const WALK_MAX_FILE_BYTES: u64 = 4 << 20;

/// Visits every node reachable from the root; errors are expected on
/// corrupt input and only counted.
pub fn walk(fs: &dyn Filesystem) -> usize {
    let _ = (fs.kind(), fs.label(), fs.statfs());
    let mut stack: Vec<(NodeId, usize)> = vec![(fs.root(), 0)];
    let mut visited = 0usize;
    // A corrupt folder can contain itself or an ancestor: list each once.
    let mut listed = std::collections::HashSet::new();
    let mut buf = vec![0u8; 64 << 10];
    while let Some((dir, depth)) = stack.pop() {
        if !listed.insert(dir) {
            continue;
        }
        let Ok(entries) = fs.read_dir(dir) else { continue };
        for e in entries {
            visited += 1;
            if visited > WALK_MAX_NODES {
                return visited;
            }
            let _ = fs.lookup(dir, &e.name);
            let _ = fs.stat(e.attr.node);
            let _ = fs.xattrs(e.attr.node);
            match e.attr.kind {
                NodeKind::Directory if depth < WALK_MAX_DEPTH => stack.push((e.attr.node, depth + 1)),
                NodeKind::File => {
                    let mut off = 0u64;
                    while off < WALK_MAX_FILE_BYTES {
                        // The zero-copy lookup runs the same extent
                        // arithmetic as the read, on the same bytes.
                        let _ = fs.locate(e.attr.node, off, buf.len() as u64);
                        match fs.read(e.attr.node, off, &mut buf) {
                            Ok(n) if n > 0 => off += n as u64,
                            _ => break,
                        }
                    }
                }
                NodeKind::Symlink => {
                    let _ = fs.read_link(e.attr.node);
                }
                _ => {}
            }
        }
    }
    visited
}

/// Opens a filesystem from `data` with `open` and walks it.
pub fn open_walk(data: &[u8], open: Open) {
    let volume: Arc<dyn ReadAt> = Arc::new(MemImage(data.to_vec()));
    if let Ok(Some(fs)) = open(&volume) {
        walk(&*fs);
    }
}
