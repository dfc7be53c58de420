//! crc32c, btrfs's default checksum of metadata blocks and data sectors.

use crc::{CRC_32_ISCSI, Crc, Table};

/// Slice-by-16 tables: every data byte read is checked, so speed matters
/// (several times the byte-at-a-time table's).
const CRC32C: Crc<u32, Table<16>> = Crc::<u32, Table<16>>::new(&CRC_32_ISCSI);

/// The standard crc32c (Castagnoli) of `data`, as btrfs stores it
/// (little-endian in the first 4 bytes of a checksum field).
pub fn crc32c(data: &[u8]) -> u32 {
    CRC32C.checksum(data)
}

#[cfg(test)]
mod tests {
    #[test]
    fn check_value() {
        // The catalogue's check value for "123456789".
        assert_eq!(super::crc32c(b"123456789"), 0xE306_9283);
    }
}
