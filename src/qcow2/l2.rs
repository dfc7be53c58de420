//! L2 entries: what one guest cluster (or subcluster) maps to
//! ("Cluster mapping", "Compressed Clusters Descriptor", "Extended L2 Entries").

use super::consts::*;

/// Where a byte range of one image's guest space comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mapping {
    /// Not allocated here: read the backing file (or zeros without one).
    Unallocated,
    /// Reads as zeros, whatever the backing file holds.
    Zero,
    /// Stored at this host offset (already adjusted to the requested byte).
    Data(u64),
    /// A compressed cluster: the compressed bytes start at `host` and span at
    /// most `len` bytes.
    Compressed { host: u64, len: u64 },
}

/// Decodes a compressed cluster descriptor.
pub fn compressed(entry: u64, cluster_bits: u32) -> (u64, u64) {
    // x = 62 - (cluster_bits - 8): bits 0..x-1 hold the host offset, bits
    // x..61 the count of additional 512-byte sectors.
    let x = 62 - (cluster_bits - 8);
    let desc = entry & !(OFLAG_COPIED | OFLAG_COMPRESSED);
    let host = desc & ((1u64 << x) - 1);
    let sectors = (desc >> x) + 1;
    // The compressed data runs from `host` to the end of its last sector.
    let len = sectors * 512 - (host & 511);
    (host, len)
}

/// Encodes a compressed cluster descriptor for `len` bytes at `host`.
pub fn compressed_entry(host: u64, len: u64, cluster_bits: u32) -> u64 {
    let x = 62 - (cluster_bits - 8);
    let extra = ((host + len - 1) >> 9) - (host >> 9);
    OFLAG_COMPRESSED | (extra << x) | host
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compressed_descriptor_round_trips() {
        for bits in [9u32, 12, 16, 21] {
            // Compressed data is never longer than a cluster.
            let cases = [(0x10000u64, 100u64), (0x10123, 4000), (0x7fff_fe00, 512), (0x1ff, 2)];
            for (host, len) in cases.into_iter().filter(|&(_, l)| l <= 1 << bits) {
                let e = compressed_entry(host, len, bits);
                let (h, l) = compressed(e, bits);
                assert_eq!(h, host);
                assert!(l >= len, "bits {bits} host {host:#x}: {l} < {len}");
                assert!(l < len + 512);
            }
        }
    }
}
